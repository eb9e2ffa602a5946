import Hummingbird

/// How the forwarding lane answers a request of a forwarded route: the gateway's middleware, the authentication and
/// the proxy's handler, called directly, in the order and with the context Hummingbird's middleware stack and router
/// would give them; the route's parameters and name come with the request (``ForwardedRoutes/Match``).
///
/// Left out, as it does nothing on these routes: the page's `FileMiddleware`, which serves a file only for a `GET` or
/// `HEAD` that the routes behind it refuse with Hummingbird's own `404` error, never the proxy's (its errors are the
/// gateway's, answered by ``GatewayMiddleware``). What this saves is the stack's and the router's frames, closures and
/// executor checks, and the router's search: about 20,000 instructions of a forwarded request's
/// (`bench/README.md`, "Futures, strings hashed and layers", 2026-12-07).
///
/// `ForwardingLaneTests` and every gateway test of a forwarded route go through here;
/// `ForwardingLaneTests.eachForwardedRoutesMatchGivesItsHandlerWhatTheRouterGives` checks that each forwarded route's
/// match gives its handler what the router gives it.
struct ForwardedResponder: Sendable {
    let middleware: GatewayMiddleware<GatewayRequestContext>
    let authentication: AuthenticationMiddleware
    let proxy: ProxyController

    func respond(to request: Request, context: consuming GatewayRequestContext, _ match: ForwardedRoutes.Match) async throws -> Response {
        let authentication = self.authentication
        let proxy = self.proxy
        // As the router sets them, before the route's middleware runs: a request refused there (no valid key, a path
        // that is not allowed) is counted and logged under its route too. Errors are the middleware's to answer, as
        // on the router's routes (`GatewayMiddleware` answers every error in the caller's format).
        context.coreContext.parameters = match.parameters
        context.coreContext.endpointPath.value = match.route.label
        return try await middleware.run(request, context: context) { request, context in
            try await authentication.run(request, context: context) { request, context in
                try await proxy.forward(request, context: context, endpoint: match.route.endpoint)
            }
        }
    }
}
