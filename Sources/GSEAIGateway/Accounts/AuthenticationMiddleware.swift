import Foundation
import HTTPTypes
import Hummingbird

/// Finds who is calling: an API key (`Authorization: Bearer gsk_…` or `x-api-key`, as the Anthropic SDK
/// sends it) or a session cookie. Cookie-authenticated unsafe requests must also pass the CSRF check: an
/// `Origin` (when sent) of this site, and the session's token in `X-CSRF-Token`.
///
/// A request without valid credentials goes on without an identity; the endpoints that need one answer 401.
public struct AuthenticationMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext

    /// The session cookie's name.
    public static let cookieName = "gseai_session"
    let accounts: AccountService
    let publicOrigin: String

    public init(accounts: AccountService, publicOrigin: String) {
        self.accounts = accounts
        self.publicOrigin = publicOrigin
    }

    public func handle(_ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response) async throws -> Response {
        try await run(request, context: context, next: next)
    }

    /// The handling itself, on its caller's executor, as is its `next` (this module's default): the forwarding lane
    /// calls it directly (``ForwardedResponder``), where Hummingbird's `@concurrent` closure would check at each call
    /// and at each return which executor to run on (bench/README.md, "Fewer hops, the connection's state in the codec").
    /// The context is taken (`consuming`), not copied: a copy of the request's context and its destruction cost about
    /// 800 instructions (bench/README.md, "Bytes written into room counted once").
    func run(_ request: Request, context: consuming Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let key = Self.presentedKey(request) {
            if let (record, user) = try await accounts.resolveKey(key) {
                context.identity = Identity(user: user, credential: .apiKey(record))
            } else {
                // A key was presented and is wrong (revoked, say): say so rather than treat the caller as anonymous.
                throw GatewayError(.unauthorized, type: .authentication, "invalid or revoked API key")
            }
        } else if let token = request.cookies[Self.cookieName]?.value,
            let (session, user) = try await accounts.resolveSession(token: token)
        {
            if Self.isUnsafe(request.method) {
                try checkCSRF(request, session: session)
            }
            context.identity = Identity(user: user, credential: .session(session))
        }
        return try await next(request, context)
    }

    /// The cookie that carries a login session: HttpOnly, SameSite=Lax, Secure under TLS.
    static func sessionCookie(token: String, expires: Date, secure: Bool) -> Cookie {
        Cookie(name: cookieName, value: token, expires: expires, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }

    /// The cookie that ends a login session in the browser.
    static func expiredSessionCookie(secure: Bool) -> Cookie {
        Cookie(name: cookieName, value: "", maxAge: 0, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }

    static func presentedKey(_ request: Request) -> String? {
        if let authorization = request.headers.value(.authorization), let key = bearerToken(authorization) { return key }
        if let key = request.headers.value(.xAPIKey), !key.isEmpty { return key }
        return nil
    }

    /// The token of `Bearer <token>` (the scheme in any case, spaces and tabs around the token dropped), or
    /// `nil`; by bytes, as it is read on every request.
    static func bearerToken(_ authorization: String) -> String? {
        let scheme: StaticString = "bearer "
        guard ASCII.hasPrefix(lowercasing: authorization, scheme) else { return nil }
        let token = ASCII.trimmed(authorization.utf8.dropFirst(scheme.utf8CodeUnitCount))
        return token.isEmpty ? nil : String(Substring(token))
    }

    static func isUnsafe(_ method: HTTPRequest.Method) -> Bool {
        ![.get, .head, .options].contains(method)
    }

    /// Unsafe cookie requests must come from this site's pages.
    func checkCSRF(_ request: Request, session: LoginSession) throws {
        try checkOrigin(request)
        guard let token = request.headers.value(.xCSRFToken), Secrets.constantTimeEquals(token, session.csrfToken) else {
            throw GatewayError(.forbidden, type: .permission, "missing or wrong X-CSRF-Token header")
        }
    }

    /// A browser sends `Origin` on cross-site requests; it must be this site (the public URL, or the
    /// `Host` the request was sent to).
    func checkOrigin(_ request: Request) throws {
        guard let origin = request.headers.value(.origin) else { return }
        let host = request.head.authority ?? ""
        let sameHost = origin == "http://\(host)" || origin == "https://\(host)"
        guard origin == publicOrigin || sameHost else {
            throw GatewayError(.forbidden, type: .permission, "cross-site request refused")
        }
    }
}
