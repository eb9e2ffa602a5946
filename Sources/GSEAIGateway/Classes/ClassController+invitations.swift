import Foundation
import Hummingbird

/// Invitations: a roster import invites existing accounts, and each student accepts or declines on their
/// page, seeing the class's rules first (above all, what its instructor sees). Instructors see the
/// invitations of their classes with the roster and may withdraw one.
extension ClassController.Paths {
    static let invitations: RouterPath = "/api/classes/invitations"
    static let acceptInvitation: RouterPath = "/api/classes/invitations/:id/accept"
    static let declineInvitation: RouterPath = "/api/classes/invitations/:id/decline"
    static let classInvitation: RouterPath = "/api/classes/:id/invitations/:user"
}

extension ClassController {
    func registerInvitations(on router: Router<GatewayRequestContext>) {
        router.get(Paths.invitations, use: myInvitations)
        router.post(Paths.acceptInvitation, use: acceptInvitation)
        router.post(Paths.declineInvitation, use: declineInvitation)
        router.delete(Paths.classInvitation, use: withdrawInvitation)
    }

    /// An invitation as its student sees it: the class with its rules.
    struct InvitationView: Encodable, Sendable {
        var `class`: StudentClassView
        var invited_at: Date
    }

    /// The caller's invitations, oldest first.
    @Sendable func myInvitations(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<InvitationView> {
        let user = try context.requireIdentity().user
        var views: [InvitationView] = []
        for invitation in try await storage.classes.invitations(classID: nil, userID: user.id) {
            guard let classSession = try await storage.classes.find(id: invitation.classID) else { continue }
            views.append(InvitationView(class: StudentClassView(classSession, now: now, applies: false), invited_at: invitation.invitedAt))
        }
        return AccountController.ListView(data: views)
    }

    /// Accepts an invitation: the student joins the class, which becomes the one that applies to them.
    @Sendable func acceptInvitation(_ request: Request, context: GatewayRequestContext) async throws -> StudentClassView {
        let user = try context.requireIdentity().user
        let classSession = try await invitedClass(context, user: user)
        guard classSession.isActive(at: now) else {
            throw GatewayError(.forbidden, type: .permission, "the class '\(classSession.name)' is closed")
        }
        guard try await storage.classes.acceptInvitation(classID: classSession.id, userID: user.id, at: now) else {
            throw GatewayError.notFound("no such invitation")
        }
        try await storage.audit.record(user, "class.invitation.accept", classSession.id)
        return StudentClassView(classSession, now: now, applies: true)
    }

    /// Declines an invitation; the class's instructor sees it gone from their roster's invitations.
    @Sendable func declineInvitation(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        let classSession = try await invitedClass(context, user: user)
        try await storage.classes.removeInvitation(classID: classSession.id, userID: user.id)
        try await storage.audit.record(user, "class.invitation.decline", classSession.id)
        return Response(status: .noContent)
    }

    /// Withdraws an invitation of the instructor's class.
    @Sendable func withdrawInvitation(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession) = try await ownedClass(context)
        let userID = try context.parameters.require("user")
        guard try await storage.classes.removeInvitation(classID: classSession.id, userID: userID) else {
            throw GatewayError.notFound("no such invitation")
        }
        try await storage.audit.record(user, "class.invitation.withdraw", userID, detail: "class \(classSession.id)")
        return Response(status: .noContent)
    }

    /// The class of the path, if the caller is invited to it; "not found" otherwise, like a missing class.
    func invitedClass(_ context: GatewayRequestContext, user: User) async throws -> ClassSession {
        let classID = try context.parameters.require("id")
        guard user.role == .student,
            try await storage.classes.invitations(classID: classID, userID: user.id).isEmpty == false,
            let classSession = try await storage.classes.find(id: classID)
        else { throw GatewayError.notFound("no such invitation") }
        return classSession
    }
}
