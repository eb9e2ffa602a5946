import Foundation

/// Accounts, login sessions and API keys: the rules, shared by the HTTP API and the `gseai` command.
public struct AccountService: Sendable {
    public let storage: Storage
    public let hasher: PasswordHasher
    public let sessionLifetime: Duration
    /// Recently checked API keys with their users, by the key's digest; forgotten whenever an account
    /// changes, here or on another replica (``ChangeFeed``).
    private let keyCache: ExpiringCache<Secrets.KeyDigest, (key: APIKey, user: User)>

    public init(storage: Storage, hasher: PasswordHasher, sessionLifetime: Duration = .seconds(7 * 24 * 3600)) {
        self.storage = storage
        self.hasher = hasher
        self.sessionLifetime = sessionLifetime
        let keyCache = ExpiringCache<Secrets.KeyDigest, (key: APIKey, user: User)>(lifetime: .seconds(2))
        self.keyCache = keyCache
        storage.shared.changes.subscribe { topic in
            if topic == .accounts { keyCache.forget() }
        }
    }

    /// Forgets what every replica knows of accounts: a revoked key, a disabled user, a new role are
    /// refused everywhere on the next request.
    func accountsChanged() async {
        keyCache.forget()
        await storage.shared.changes.publish(.accounts)
    }

    /// What went wrong, in words for the person at the other end.
    public enum AccountError: Error, Equatable, CustomStringConvertible {
        case invalidUsername
        case weakPassword
        case usernameTaken(String)
        case noSuchUser(String)

        public var description: String {
            switch self {
            case .invalidUsername: "a username is 1–64 letters, digits, dots, dashes, underscores or @"
            case .weakPassword: "a password needs at least 8 characters"
            case .usernameTaken(let name): "the username '\(name)' is taken"
            case .noSuchUser(let name): "no user '\(name)'"
            }
        }
    }

    // MARK: Users

    /// Creates a user; without a password, one is generated and returned so it can be shown once.
    public func createUser(username: String, password: String?, role: Role) async throws -> (user: User, generatedPassword: String?) {
        let name = username.lowercased()
        guard Self.isValidUsername(name) else { throw AccountError.invalidUsername }
        let generated = password == nil ? Secrets.random(16) : nil
        let secret = password ?? generated!
        guard secret.count >= 8 else { throw AccountError.weakPassword }
        let user = User(username: name, passwordHash: try await hasher.hash(secret), role: role)
        do {
            try await storage.users.create(user)
        } catch StorageError.conflict {
            throw AccountError.usernameTaken(name)
        }
        return (user, generated)
    }

    static func isValidUsername(_ name: String) -> Bool {
        (1...64).contains(name.count) && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-@".contains($0)) }
    }

    public func user(named username: String) async throws -> User {
        guard let user = try await storage.users.find(username: username.lowercased()) else { throw AccountError.noSuchUser(username) }
        return user
    }

    /// Sets the role; the user's unused set-up links are deleted with it (a link an instructor made for a
    /// student must not open an account that is staff now).
    public func setRole(_ role: Role, for username: String) async throws -> User {
        let user = try await storage.users.setRole(userID: try await user(named: username).id, to: role)
        await accountsChanged()
        return user
    }

    /// Sets a new password (generated when `nil`) and ends the user's sessions, in one transaction.
    public func resetPassword(for username: String, to password: String?) async throws -> (user: User, generatedPassword: String?) {
        let user = try await user(named: username)
        let generated = password == nil ? Secrets.random(16) : nil
        let secret = password ?? generated!
        guard let updated = try await setPassword(secret, for: user, spendingSetupToken: nil) else { throw AccountError.noSuchUser(username) }
        return (updated, generated)
    }

    /// Sets a password and ends the user's sessions, in one transaction; with `spendingSetupToken` (a set-up
    /// link's hash), only if that link is the user's and unused, spending it: `nil` when it was not.
    func setPassword(_ password: String, for user: User, spendingSetupToken tokenHash: String?) async throws -> User? {
        guard password.count >= 8 else { throw AccountError.weakPassword }
        // Hashed first: bcrypt takes a while, and no transaction waits for it.
        let hash = try await hasher.hash(password)
        return try await storage.users.setPassword(userID: user.id, hash: hash, spendingSetupToken: tokenHash, at: Date())
    }

    /// Disables (or re-enables) a user; disabling ends their sessions and revokes their keys at once, in the
    /// same transaction.
    public func setDisabled(_ disabled: Bool, for username: String) async throws -> User {
        let user = try await storage.users.setDisabled(userID: try await user(named: username).id, disabled, at: Date())
        await accountsChanged()
        return user
    }

    /// The user whose password this is, or `nil` (also for disabled users).
    public func authenticate(username: String, password: String) async throws -> User? {
        let user = try await storage.users.find(username: username.lowercased())
        guard await hasher.verify(password, hash: user?.passwordHash), let user, !user.disabled else { return nil }
        return user
    }

    // MARK: Login sessions

    /// Starts a login session; the token goes in the cookie and is not stored. The account is marked as
    /// signed in first: a crash in between leaves it marked, which only narrows what its instructor may do.
    public func startSession(for user: User, userAgent: String?, remoteAddress: String?) async throws -> (token: String, session: LoginSession) {
        let token = Secrets.random(43)
        let now = Date()
        try await storage.users.recordLogin(userID: user.id, at: now)
        let session = LoginSession(
            id: Secrets.sha256(token), userID: user.id, csrfToken: Secrets.random(32), createdAt: now,
            expiresAt: now.addingTimeInterval(TimeInterval(sessionLifetime.components.seconds)), lastSeenAt: now,
            userAgent: userAgent.map { String($0.prefix(200)) }, remoteAddress: remoteAddress
        )
        try await storage.sessions.create(session)
        return (token, session)
    }

    /// The live session and its user for a cookie token.
    public func resolveSession(token: String) async throws -> (LoginSession, User)? {
        guard (20...100).contains(token.count), let session = try await storage.sessions.find(id: Secrets.sha256(token)) else {
            return nil
        }
        let now = Date()
        guard session.expiresAt > now, let user = try await storage.users.find(id: session.userID), !user.disabled else {
            return nil
        }
        // Once a minute is precise enough for "last seen" and spares a write per request.
        if now.timeIntervalSince(session.lastSeenAt) > 60 { try await storage.sessions.touch(id: session.id, at: now) }
        return (session, user)
    }

    // MARK: API keys

    /// Creates a key; the key itself is returned once and only its hash is kept.
    public func createKey(for user: User, label: String) async throws -> (key: String, record: APIKey) {
        let (key, prefix) = Secrets.newAPIKey()
        let record = APIKey(userID: user.id, prefix: prefix, hash: Secrets.sha256(key), label: String(label.prefix(100)))
        try await storage.apiKeys.create(record)
        return (key, record)
    }

    /// The live key and its user for a presented key.
    public func resolveKey(_ key: String) async throws -> (APIKey, User)? {
        guard let prefix = Secrets.apiKeyPrefix(key) else { return nil }
        let digest = Secrets.keyDigest(key)
        if let cached = keyCache.value(for: digest) { return cached }
        let generation = keyCache.generation
        guard let record = try await storage.apiKeys.find(prefix: prefix), record.revokedAt == nil,
            Secrets.constantTimeEquals(record.hash, digest.hex),
            let user = try await storage.users.find(id: record.userID), !user.disabled
        else { return nil }
        let now = Date()
        // Once a minute is precise enough for "last used"; the cache spares the rest of the lookups.
        if now.timeIntervalSince(record.lastUsedAt ?? .distantPast) > 60 { try await storage.apiKeys.touch(id: record.id, at: now) }
        // A key in use is the account in use, as much as a login: its first use spends the set-up links made
        // while nobody used it, and its instructor may no longer set its password.
        if user.lastLoginAt == nil { try await storage.users.recordLogin(userID: user.id, at: now) }
        keyCache.remember(digest, since: generation) { _ in (record, user) }
        return (record, user)
    }

    /// The user's login sessions that have not expired, newest first.
    public func liveSessions(of user: User) async throws -> [LoginSession] {
        let now = Date()
        return try await storage.sessions.list(userID: user.id).filter { $0.expiresAt > now }
    }

    /// Ends a login session of `user` (someone else's is "not found", like a missing one).
    public func endSession(id: String, of user: User) async throws {
        guard let session = try await storage.sessions.find(id: id), session.userID == user.id else {
            throw GatewayError.notFound("no such session")
        }
        try await storage.sessions.delete(id: session.id)
    }

    /// Revokes a key of `user` (someone else's is "not found", like a missing one); it is refused at once.
    public func revokeKey(id: String, of user: User) async throws {
        guard let key = try await storage.apiKeys.find(id: id), key.userID == user.id else {
            throw GatewayError.notFound("no such API key")
        }
        try await storage.apiKeys.revoke(id: key.id, at: Date())
        await accountsChanged()
    }
}
