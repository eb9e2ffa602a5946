import Foundation
import Hummingbird

/// Administrators' API: every user with their role and state, changing them, and the audit log. Everyone
/// else gets 403. (Every class is already theirs through `GET /api/classes`.)
public struct AdminController: Sendable {
    let accounts: AccountService
    /// Password set-up links: an administrator may issue one for any account.
    let setupLinks: SetupLinks

    public init(accounts: AccountService, setupLinks: SetupLinks) {
        self.accounts = accounts
        self.setupLinks = setupLinks
    }

    var storage: Storage { accounts.storage }

    /// Each path, defined once.
    enum Paths {
        static let users: RouterPath = "/api/admin/users"
        static let user: RouterPath = "/api/admin/users/:id"
        static let resetLink: RouterPath = "/api/admin/users/:id/reset-link"
        static let audit: RouterPath = "/api/admin/audit"
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.get(Paths.users, use: users)
        router.patch(Paths.user, use: updateUser)
        router.post(Paths.resetLink, use: resetLink)
        router.get(Paths.audit, use: audit)
    }

    /// Every user, by username.
    @Sendable func users(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<AccountView> {
        _ = try context.require(.admin)
        let users = try await storage.users.list().sorted { $0.username < $1.username }
        return AccountController.ListView(data: users.map(AccountView.init))
    }

    /// A one-time link for the user to set a new password (72 hours); their password and sessions stay until
    /// it is used. Once a student has signed in, only an administrator may do this.
    @Sendable func resetLink(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<SetupLinks.LinkView> {
        let admin = try context.require(.admin).user
        guard let user = try await storage.users.find(id: try context.parameters.require("id")) else {
            throw GatewayError.notFound("no such user")
        }
        let link = try await setupLinks.issue(for: user)
        try await storage.audit.record(admin, "user.reset-link", user.id)
        return EditedResponse(status: .created, response: link)
    }

    struct UpdateBody: Decodable { var role: Role?; var disabled: Bool? }

    /// Changes a user's role and/or disabled state, through the account rules (so that cached keys drop at
    /// once, and disabling ends sessions and revokes keys). An administrator cannot demote or disable
    /// themselves, so that the gateway always keeps one who can act.
    @Sendable func updateUser(_ request: Request, context: GatewayRequestContext) async throws -> AccountView {
        let admin = try context.require(.admin).user
        let body: UpdateBody
        do {
            body = try await RequestBodies.decode(UpdateBody.self, from: request, limit: 16 * 1024)
        } catch let error as GatewayError where error.param == "role" {
            throw GatewayError.badRequest("role is student, instructor or admin", param: "role")
        } catch let error as GatewayError where error.param == "disabled" {
            throw GatewayError.badRequest("disabled is true or false", param: "disabled")
        }
        guard body.role != nil || body.disabled != nil else { throw GatewayError.badRequest("send 'role', 'disabled' or both") }
        guard var user = try await storage.users.find(id: try context.parameters.require("id")) else {
            throw GatewayError.notFound("no such user")
        }
        if user.id == admin.id, (body.role.map { $0 != .admin } ?? false) || body.disabled == true {
            throw GatewayError(.forbidden, type: .permission, "you cannot demote or disable your own account")
        }
        if let role = body.role, role != user.role {
            let from = user.role
            user = try await accounts.setRole(role, for: user.username)
            try await storage.audit.record(admin, "user.set-role", user.id, detail: "\(from.rawValue) → \(role.rawValue)")
        }
        if let disabled = body.disabled, disabled != user.disabled {
            user = try await accounts.setDisabled(disabled, for: user.username)
            try await storage.audit.record(admin, disabled ? "user.disable" : "user.enable", user.id)
        }
        return AccountView(user)
    }

    struct AuditView: Codable, Sendable {
        var id: String
        var actor_id: String
        /// The actor's username now, if the account still exists.
        var actor_username: String?
        var action: String
        var target: String
        var detail: String?
        var at: Date
    }

    struct AuditPageView: ResponseEncodable {
        var data: [AuditView]
        /// Pass as `before` for the next (older) page; `nil` on the last page. The last entry's time (Unix
        /// seconds with every digit kept) and id, so that no entry is skipped or shown twice, even among
        /// entries of the same instant.
        var next_before: String?
    }

    /// The audit log, newest first: `?limit=` (1–500, default 100), `?before=` (the `next_before` of the previous
    /// page, or an ISO 8601 date and time: the entries older than it).
    @Sendable func audit(_ request: Request, context: GatewayRequestContext) async throws -> AuditPageView {
        _ = try context.require(.admin)
        let query = request.form
        var limit = 100
        if let given = query.get("limit") {
            guard let number = Int(given), (1...500).contains(number) else { throw GatewayError.badRequest("limit is a whole number from 1 to 500") }
            limit = number
        }
        var before: PageCursor?
        if let given = query.get("before") {
            if let cursor = PageCursor(text: given) {
                before = cursor
            } else if let date = try? ClassController.date(.string(given), "before") {
                before = PageCursor(at: date)
            } else {
                throw GatewayError.badRequest("'before' must be an ISO 8601 date and time, such as 2026-09-01T08:00:00Z")
            }
        }
        let entries = try await storage.audit.list(limit: limit, before: before)
        var usernames: [String: String?] = [:]
        var views: [AuditView] = []
        for entry in entries {
            if usernames[entry.actorID] == nil { usernames[entry.actorID] = .some(try await storage.users.find(id: entry.actorID)?.username) }
            views.append(AuditView(id: entry.id, actor_id: entry.actorID, actor_username: usernames[entry.actorID] ?? nil,
                                   action: entry.action, target: entry.target, detail: entry.detail, at: entry.at))
        }
        let next = entries.count == limit ? entries.last.map { PageCursor(after: $0).text } : nil
        return AuditPageView(data: views, next_before: next)
    }
}
