import Foundation
import Hummingbird

/// One-time links that let a user set their password: sent by an instructor to a student who forgot theirs,
/// and made for every account a roster import creates. The link holds a random token; only its SHA-256 is
/// stored, and it works once, until it expires.
public struct SetupLinks: Sendable {
    let accounts: AccountService
    /// The URL people use (no trailing slash); links point at its `setup.html`.
    let publicURL: String
    /// How long a link works.
    let lifetime: TimeInterval
    let clock: @Sendable () -> Date

    /// `clock` is "now" for issuing and checking expiry; tests move it.
    public init(accounts: AccountService, publicURL: String, lifetime: TimeInterval = 72 * 3600,
                clock: @escaping @Sendable () -> Date = Date.init) {
        self.accounts = accounts
        self.publicURL = publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL
        self.lifetime = lifetime
        self.clock = clock
    }

    /// A link as the API answers it.
    struct LinkView: ResponseEncodable {
        /// `<public URL>/setup.html#token=…`: the token is in the fragment, so it never reaches a server log.
        var url: String
        var expires_at: Date
    }

    /// A new link for `user`. Links issued before stay valid until used or expired.
    func issue(for user: User) async throws -> LinkView {
        let expiresAt = clock().addingTimeInterval(lifetime)
        for attempt in 1...3 {
            let token = Secrets.random(43)
            do {
                try await accounts.storage.setupTokens.create(SetupToken(tokenHash: Secrets.sha256(token), userID: user.id, expiresAt: expiresAt))
                return LinkView(url: "\(publicURL)/setup.html#token=\(token)", expires_at: expiresAt)
            } catch StorageError.conflict where attempt < 3 {
                continue
            }
        }
        throw GatewayError(.internalServerError, type: .server, "could not make a set-up link")
    }

    /// Sets the password of the link's user and ends their sessions; the link is spent.
    ///
    /// - Throws: 400 for a token that is not a link's (or a password too short: the link is then not spent),
    ///   410 for a link used already or expired, 403 for a disabled account.
    func redeem(token: String, password: String) async throws -> User {
        let invalid = GatewayError.badRequest("this set-up link is not valid; check that it was copied whole")
        guard (20...100).contains(token.count), let stored = try await accounts.storage.setupTokens.find(tokenHash: Secrets.sha256(token)) else {
            throw invalid
        }
        guard stored.usedAt == nil else { throw Self.used }
        guard stored.expiresAt > clock() else {
            throw GatewayError(.gone, type: .invalidRequest, "this set-up link has expired; ask your instructor or an administrator for a new one")
        }
        guard password.count >= 8 else { throw GatewayError.badRequest(AccountService.AccountError.weakPassword.description) }
        guard let user = try await accounts.storage.users.find(id: stored.userID) else { throw invalid }
        guard !user.disabled else { throw GatewayError(.forbidden, type: .permission, "this account is disabled") }
        // The link is spent and the password set in one transaction: of two uses at once, only one sets it,
        // and a crash in between cannot leave a spent link without its password.
        guard let updated = try await accounts.setPassword(password, for: user, spendingSetupToken: stored.tokenHash) else { throw Self.used }
        return updated
    }

    static let used = GatewayError(.gone, type: .invalidRequest, "this set-up link has been used already; ask your instructor or an administrator for a new one")
}
