import Foundation
import HTTPTypes
import Hummingbird

/// The JSON API for accounts: log in and out, who am I, my sessions, my API keys, my password.
public struct AccountController: Sendable {
    let accounts: AccountService
    let throttle: LoginThrottle
    let secureCookies: Bool
    let publicOrigin: String

    public init(accounts: AccountService, throttle: LoginThrottle, secureCookies: Bool, publicOrigin: String) {
        self.accounts = accounts
        self.throttle = throttle
        self.secureCookies = secureCookies
        self.publicOrigin = publicOrigin
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.post(Paths.login, use: login)
        router.post(Paths.logout, use: logout)
        router.get(Paths.me, use: me)
        router.get(Paths.sessions, use: listSessions)
        router.delete(Paths.session, use: revokeSession)
        router.get(Paths.keys, use: listKeys)
        router.post(Paths.keys, use: createKey)
        router.delete(Paths.key, use: revokeKey)
        router.post(Paths.password, use: changePassword)
    }

    /// Each path, defined once.
    public enum Paths {
        public static let login: RouterPath = "/auth/login"
        public static let logout: RouterPath = "/auth/logout"
        public static let me: RouterPath = "/auth/me"
        public static let sessions: RouterPath = "/auth/sessions"
        public static let session: RouterPath = "/auth/sessions/:id"
        public static let keys: RouterPath = "/auth/keys"
        public static let key: RouterPath = "/auth/keys/:id"
        public static let password: RouterPath = "/auth/password"
    }

    // MARK: Bodies

    struct LoginBody: Decodable { var username: String; var password: String }
    struct KeyBody: Decodable { var label: String? }
    struct PasswordBody: Decodable {
        var current_password: String
        var new_password: String
    }

    struct UserView: ResponseEncodable {
        var id: String
        var username: String
        var role: Role
        init(_ user: User) {
            id = user.id
            username = user.username
            role = user.role
        }
    }

    struct MeView: ResponseEncodable {
        var user: UserView
        /// For pages: send it back in `X-CSRF-Token` on unsafe requests.
        var csrf_token: String?
        var authenticated_with: String
    }

    struct SessionView: ResponseEncodable {
        var id: String
        var created_at: Date
        var expires_at: Date
        var last_seen_at: Date
        var user_agent: String?
        var remote_address: String?
        var current: Bool

        init(_ session: LoginSession, current: Bool) {
            id = session.id
            created_at = session.createdAt
            expires_at = session.expiresAt
            last_seen_at = session.lastSeenAt
            user_agent = session.userAgent
            remote_address = session.remoteAddress
            self.current = current
        }
    }

    struct KeyView: ResponseEncodable {
        var id: String
        var prefix: String
        var label: String
        var created_at: Date
        var last_used_at: Date?
        var revoked_at: Date?
        init(_ key: APIKey) {
            id = key.id
            prefix = key.prefix
            label = key.label
            created_at = key.createdAt
            last_used_at = key.lastUsedAt
            revoked_at = key.revokedAt
        }
    }

    struct NewKeyView: ResponseEncodable {
        /// Shown once: only its hash is kept.
        var key: String
        var api_key: KeyView
    }

    struct ListView<Item: Encodable & Sendable>: ResponseEncodable { var data: [Item] }

    // MARK: Handlers

    @Sendable func login(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        // Login CSRF: a foreign page must not log a visitor into an account of its choosing.
        try AuthenticationMiddleware(accounts: accounts, publicOrigin: publicOrigin).checkOrigin(request)
        let body = try await RequestBodies.decode(LoginBody.self, from: request, limit: 64 * 1024)
        try await admitPasswordAttempt(username: body.username, context: context)
        guard let user = try await accounts.authenticate(username: body.username, password: body.password) else {
            throw GatewayError(.unauthorized, type: .authentication, "wrong username or password")
        }
        try await throttle.succeeded(username: body.username, address: context.remoteAddress)
        let (token, session) = try await accounts.startSession(
            for: user, userAgent: request.headers[.userAgent], remoteAddress: context.remoteAddress
        )
        var response = try MeView(user: UserView(user), csrf_token: session.csrfToken, authenticated_with: "session")
            .response(from: request, context: context)
        response.setCookie(AuthenticationMiddleware.sessionCookie(token: token, expires: session.expiresAt, secure: secureCookies))
        return response
    }

    /// Counts a password attempt, or refuses it with 429 and `Retry-After` when there were too many.
    func admitPasswordAttempt(username: String, context: GatewayRequestContext, what: String = "failed logins") async throws {
        guard let wait = try await throttle.admit(username: username, address: context.remoteAddress) else { return }
        let seconds = max(1, Int(wait.components.seconds))
        throw GatewayError(.tooManyRequests, type: .rateLimit, "too many \(what); try again in \(seconds) seconds",
                           headers: [.retryAfter: String(seconds)])
    }

    @Sendable func logout(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        if case .session(let session)? = context.identity?.credential {
            try await accounts.storage.sessions.delete(id: session.id)
        }
        var response = Response(status: .noContent)
        response.setCookie(AuthenticationMiddleware.expiredSessionCookie(secure: secureCookies))
        return response
    }

    @Sendable func me(_ request: Request, context: GatewayRequestContext) async throws -> MeView {
        let identity = try context.requireIdentity()
        switch identity.credential {
        case .session(let session):
            return MeView(user: UserView(identity.user), csrf_token: session.csrfToken, authenticated_with: "session")
        case .apiKey:
            return MeView(user: UserView(identity.user), csrf_token: nil, authenticated_with: "api_key")
        }
    }

    @Sendable func listSessions(_ request: Request, context: GatewayRequestContext) async throws -> ListView<SessionView> {
        let identity = try context.requireIdentity()
        var currentID: String?
        if case .session(let session) = identity.credential { currentID = session.id }
        return ListView(data: try await accounts.liveSessions(of: identity.user).map { SessionView($0, current: $0.id == currentID) })
    }

    @Sendable func revokeSession(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        try await accounts.endSession(id: try context.parameters.require("id"), of: identity.user)
        return Response(status: .noContent)
    }

    @Sendable func listKeys(_ request: Request, context: GatewayRequestContext) async throws -> ListView<KeyView> {
        let identity = try context.requireIdentity()
        return ListView(data: try await accounts.storage.apiKeys.list(userID: identity.user.id).map(KeyView.init))
    }

    @Sendable func createKey(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<NewKeyView> {
        let identity = try context.requireIdentity()
        let body = try await RequestBodies.decodeIfPresent(KeyBody.self, from: request, limit: 64 * 1024) ?? KeyBody(label: nil)
        let (key, record) = try await accounts.createKey(for: identity.user, label: body.label ?? "")
        return EditedResponse(status: .created, response: NewKeyView(key: key, api_key: KeyView(record)))
    }

    @Sendable func revokeKey(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let id = try context.parameters.require("id")
        try await accounts.revokeKey(id: id, of: identity.user)
        return Response(status: .noContent)
    }

    @Sendable func changePassword(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let body = try await RequestBodies.decode(PasswordBody.self, from: request, limit: 64 * 1024)
        // A stolen session must not be a way to guess the password at speed.
        try await admitPasswordAttempt(username: identity.user.username, context: context, what: "wrong passwords")
        guard try await accounts.authenticate(username: identity.user.username, password: body.current_password) != nil else {
            throw GatewayError(.forbidden, type: .permission, "the current password is wrong")
        }
        try await throttle.succeeded(username: identity.user.username, address: context.remoteAddress)
        do {
            _ = try await accounts.resetPassword(for: identity.user.username, to: body.new_password)
        } catch let error as AccountService.AccountError {
            throw GatewayError.badRequest(error.description)
        }
        return Response(status: .noContent)
    }
}
