import HTTPTypes
import Hummingbird
import Logging

/// A request context that knows the peer's address, which ``RequestLogMiddleware`` then logs.
public protocol RemoteAddressProviding {
    /// The peer's address, without the port; `nil` when unknown.
    var remoteAddress: String? { get }
}

/// Logs one line per request and answers its id in `X-Request-Id`, so a user's report can be matched
/// to the log.
///
/// The line holds the request id, method, route pattern, status, duration and, when the context is
/// ``RemoteAddressProviding``, the peer's address. It deliberately holds nothing else: headers,
/// cookies and query strings carry credentials, bodies carry people's conversations, and even raw
/// paths carry ids, so the route pattern stands in for the path.
public struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The response header carrying the request id.
    public static var requestIDHeader: HTTPField.Name { HTTPField.Name("X-Request-Id")! }

    let level: Logger.Level

    /// Creates the middleware.
    /// - Parameter level: the level of the per-request line.
    public init(level: Logger.Level = .info) {
        self.level = level
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let requestID: String
        if let id = context.logger[metadataKey: "hb.request.id"] {
            requestID = id.description
        } else {
            // Contexts built outside `Application` may lack the id; give one so every line can be joined.
            let id = RequestID()
            context.logger[metadataKey: "hb.request.id"] = .stringConvertible(id)
            requestID = id.description
        }

        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            // Answer it here, as the router would, so 404s and 413s carry the id as well.
            response = try error.response(from: request, context: context)
        } catch {
            log(request, context, status: .internalServerError, since: start)
            throw error
        }
        response.headers[Self.requestIDHeader] = requestID
        // Duration to the response head: a stream's own length is logged by whoever relays it.
        log(request, context, status: response.status, since: start)
        return response
    }

    private func log(_ request: Request, _ context: Context, status: HTTPResponse.Status, since start: ContinuousClock.Instant) {
        var metadata: Logger.Metadata = [
            "http.method": .string(request.method.rawValue),
            "http.route": .string(GatewayMetrics.routeLabel(endpointPath: context.endpointPath)),
            "http.status": .stringConvertible(status.code),
            "duration_ms": .stringConvertible(Self.milliseconds(ContinuousClock.now - start)),
        ]
        if let remoteAddress = (context as? any RemoteAddressProviding)?.remoteAddress {
            metadata["client.address"] = .string(remoteAddress)
        }
        context.logger.log(level: level, "request", metadata: metadata)
    }

    /// Milliseconds to two decimals: finer digits are noise in a log line.
    static func milliseconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        let milliseconds = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        return (milliseconds * 100).rounded() / 100
    }
}
