import HTTPTypes
import Hummingbird
import Logging

/// The gateway's own handling around every request (both lanes, every route), in one asynchronous frame.
///
/// In order, from the outside in:
/// 1. the request's id, in its logger and, on the way out, in `X-Request-Id` (``RequestLog``);
/// 2. the path guard: a control character in the path is a 400 (``PathGuard``);
/// 3. the handling (the page's files, authentication, the router);
/// 4. any error of 2 or 3 answered as JSON in the format of the caller's API (``ErrorFormat``): nothing is thrown
///    past this point;
/// 5. gzip, for a client that accepts it (``ResponseCompression``);
/// 6. the metrics: the request counted and timed, by method, route and status (``GatewayMetrics``);
/// 7. the request's line in the log.
///
/// The security headers (``SecurityHeaders``) are not set here but written into every final answer's head by the
/// connection's codec (``GatewayHTTP1Codec/FixedFields``), also into the answers no middleware makes.
///
/// The time ends when the response head is ready, not when the body has been sent: for a streamed answer that
/// is the time to the first event, which is what a user waits for; how long the stream then runs is the
/// model's business, not the gateway's latency (a stream's own length is logged by whoever relays it).
///
/// These were six middlewares, one after the other, each an asynchronous frame, a closure and a call of its
/// own: about 50,000 of a forwarded request's 480,000 instructions (`bench/README.md`, "One middleware").
public struct GatewayMiddleware<Context: RequestContext>: RouterMiddleware {
    let log: RequestLog<Context>
    let metrics: GatewayMetrics
    let compression: ResponseCompression

    /// - Parameters:
    ///   - metrics: where requests are counted.
    ///   - logLevel: the level of the per-request line.
    public init(metrics: GatewayMetrics, logLevel: Logger.Level = .info, compression: ResponseCompression = .init()) {
        self.init(log: RequestLog(level: logLevel), metrics: metrics, compression: compression)
    }

    /// For a context that knows the peer's address, which the request's line then holds (the overload of
    /// ``RequestLog``'s initializer that reads it is chosen here, by the `where` clause).
    public init(metrics: GatewayMetrics, logLevel: Logger.Level = .info, compression: ResponseCompression = .init())
    where Context: RemoteAddressProviding {
        self.init(log: RequestLog(level: logLevel), metrics: metrics, compression: compression)
    }

    private init(log: RequestLog<Context>, metrics: GatewayMetrics, compression: ResponseCompression) {
        self.log = log
        self.metrics = metrics
        self.compression = compression
    }

    public func handle(_ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response) async throws -> Response {
        try await run(request, context: context, next: next)
    }

    /// The handling itself, on its caller's executor, as is its `next`: what the forwarding lane calls
    /// (``ForwardedResponder``), without the executor checks of Hummingbird's `@concurrent` closure.
    /// The context is taken (`consuming`), not copied (as ``AuthenticationMiddleware``'s `run`).
    func run(_ request: Request, context: consuming Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let requestID = RequestLog.identify(&context)
        var response: Response
        do {
            try PathGuard.check(request.uri.path)
            response = try await next(request, context)
        } catch {
            response = ErrorFormat.response(for: error, to: request, logger: context.logger)
        }
        compression.compress(&response, for: request)
        // Read after the handling: the router fills in the endpoint path (or `NotFound`) on its way in.
        let route = GatewayMetrics.routeLabel(endpointPath: context.endpointPath)
        let duration = ContinuousClock.now - start
        metrics.recordRequest(method: request.method, route: route, status: response.status, duration: duration)
        response.headers[.xRequestID] = requestID
        log.log(request, context, route: route, status: response.status, duration: duration)
        return response
    }
}
