import Foundation
import Hummingbird

/// `POST /api/setup`: a set-up link's page sends its token with the new password. No login is needed: the
/// token is the credential.
public struct SetupLinkController: Sendable {
    let links: SetupLinks
    let publicOrigin: String

    public init(links: SetupLinks, publicOrigin: String) {
        self.links = links
        self.publicOrigin = publicOrigin
    }

    /// Each path, defined once.
    enum Paths {
        static let setup: RouterPath = "/api/setup"
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.post(Paths.setup, use: setPassword)
    }

    struct SetupBody: Decodable { var token: String; var password: String }

    @Sendable func setPassword(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        // Like login: a foreign page must not set a password of its choosing with a link it has seen.
        try AuthenticationMiddleware(accounts: links.accounts, publicOrigin: publicOrigin).checkOrigin(request)
        let body = try await RequestBodies.decode(SetupBody.self, from: request, limit: 16 * 1024)
        let user = try await links.redeem(token: body.token.trimmingCharacters(in: .whitespacesAndNewlines), password: body.password)
        try await links.accounts.storage.audit.record(user, "account.setup-link.use", user.id)
        return Response(status: .noContent)
    }
}
