import Foundation
import Hummingbird

/// An instructor's hand on their students' accounts (administrators': anyone's in any class): login
/// sessions and API keys to list and revoke, disabling, and password set-up links, each as far as
/// ``MemberAccess`` allows. Each action is audited.
extension ClassController.Paths {
    static let memberSessions: RouterPath = "/api/classes/:id/members/:user/sessions"
    static let memberSession: RouterPath = "/api/classes/:id/members/:user/sessions/:session"
    static let memberKeys: RouterPath = "/api/classes/:id/members/:user/keys"
    static let memberKey: RouterPath = "/api/classes/:id/members/:user/keys/:key"
    static let memberDisable: RouterPath = "/api/classes/:id/members/:user/disable"
    static let memberEnable: RouterPath = "/api/classes/:id/members/:user/enable"
    static let memberResetLink: RouterPath = "/api/classes/:id/members/:user/reset-link"
}

extension ClassController {
    func registerMemberAccounts(on router: Router<GatewayRequestContext>) {
        router.get(Paths.memberSessions, use: memberSessions)
        router.delete(Paths.memberSession, use: revokeMemberSession)
        router.get(Paths.memberKeys, use: memberKeys)
        router.delete(Paths.memberKey, use: revokeMemberKey)
        router.post(Paths.memberDisable, use: disableMember)
        router.post(Paths.memberEnable, use: enableMember)
        router.post(Paths.memberResetLink, use: memberResetLink)
    }

    /// The member's unexpired login sessions.
    @Sendable func memberSessions(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<AccountController.SessionView> {
        let (user, classSession, student) = try await managedMember(context, for: .sessionsAndKeys)
        let sessions = try await accounts.liveSessions(of: student)
        try await storage.audit.record(user, "class.member.sessions.list", student.id, detail: "class \(classSession.id)")
        return AccountController.ListView(data: sessions.map { AccountController.SessionView($0, current: false) })
    }

    /// Ends one of the member's login sessions (someone else's is "not found").
    @Sendable func revokeMemberSession(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession, student) = try await managedMember(context, for: .sessionsAndKeys)
        try await accounts.endSession(id: try context.parameters.require("session"), of: student)
        try await storage.audit.record(user, "class.member.session.revoke", student.id, detail: "class \(classSession.id)")
        return Response(status: .noContent)
    }

    /// The member's API keys, revoked ones included.
    @Sendable func memberKeys(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<AccountController.KeyView> {
        let (user, classSession, student) = try await managedMember(context, for: .sessionsAndKeys)
        let keys = try await storage.apiKeys.list(userID: student.id)
        try await storage.audit.record(user, "class.member.keys.list", student.id, detail: "class \(classSession.id)")
        return AccountController.ListView(data: keys.map(AccountController.KeyView.init))
    }

    /// Revokes one of the member's keys; their next call with it is refused at once.
    @Sendable func revokeMemberKey(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession, student) = try await managedMember(context, for: .sessionsAndKeys)
        let keyID = try context.parameters.require("key")
        try await accounts.revokeKey(id: keyID, of: student)
        try await storage.audit.record(user, "class.member.key.revoke", student.id, detail: "class \(classSession.id), key \(keyID)")
        return Response(status: .noContent)
    }

    @Sendable func disableMember(_ request: Request, context: GatewayRequestContext) async throws -> AccountView {
        try await setMemberDisabled(true, context: context)
    }

    @Sendable func enableMember(_ request: Request, context: GatewayRequestContext) async throws -> AccountView {
        try await setMemberDisabled(false, context: context)
    }

    /// Disabling ends the member's sessions and revokes their keys; enabling lets them log in again (their
    /// keys stay revoked).
    func setMemberDisabled(_ disabled: Bool, context: GatewayRequestContext) async throws -> AccountView {
        let (user, classSession, student) = try await managedMember(context, for: .disable)
        let changed = try await accounts.setDisabled(disabled, for: student.username)
        try await storage.audit.record(user, disabled ? "class.member.disable" : "class.member.enable", student.id, detail: "class \(classSession.id)")
        return AccountView(changed)
    }

    /// A one-time link for the member to set a password (72 hours): for an account nobody has signed in to
    /// yet (a roster import's), or any account for an administrator. Their password and sessions are
    /// untouched until the link is used.
    @Sendable func memberResetLink(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<SetupLinks.LinkView> {
        let (user, classSession, student) = try await managedMember(context, for: .setupLink)
        let link = try await setupLinks.issue(for: student)
        try await storage.audit.record(user, "class.member.reset-link", student.id, detail: "class \(classSession.id)")
        return EditedResponse(status: .created, response: link)
    }

    /// The caller, the class of the path (theirs) and its member of the path, when the caller may use
    /// `power` on the member's account (403 with the reason otherwise). An instructor manages only students'
    /// accounts: a member who has since become staff is the administrators' to manage.
    func managedMember(_ context: GatewayRequestContext, for power: MemberAccess.Power) async throws -> (User, ClassSession, User) {
        let (user, classSession) = try await ownedClass(context)
        let student = try await member(of: classSession, context: context)
        guard user.role == .admin || student.role == .student else {
            throw GatewayError(.forbidden, type: .permission, "only an administrator manages the account of '\(student.username)'")
        }
        try await access(of: user, to: student, in: classSession).require(power)
        return (user, classSession, student)
    }

    /// What `caller` may do to the account of `student`, a member of `classSession`.
    func access(of caller: User, to student: User, in classSession: ClassSession) async throws -> MemberAccess {
        let shared = try await storage.classes.classes(ofMember: student.id).contains { $0.instructorID != classSession.instructorID }
        // In use: signed in, or holding a key that could be (made with the `gseai` command, say).
        let hasLiveKey = try await storage.apiKeys.list(userID: student.id).contains { $0.revokedAt == nil }
        let inUse = student.lastLoginAt != nil || hasLiveKey
        return MemberAccess(callerIsAdmin: caller.role == .admin, username: student.username, className: classSession.name,
                            visibility: classSession.policy.transcriptVisibility, inAnotherInstructorsClass: shared,
                            hasSignedIn: inUse, memberIsStudent: student.role == .student)
    }
}

/// An account as administrators (and, for their students, instructors) see it.
struct AccountView: ResponseEncodable {
    var id: String
    var username: String
    var role: Role
    var disabled: Bool
    var created_at: Date

    init(_ user: User) {
        id = user.id
        username = user.username
        role = user.role
        disabled = user.disabled
        created_at = user.createdAt
    }
}
