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
    public static var requestIDHeader: HTTPField.Name { .xRequestID }

    let level: Logger.Level
    /// The peer's address, when the context knows it (decided once here, not by a cast per request).
    let remoteAddress: @Sendable (Context) -> String?

    /// Creates the middleware.
    /// - Parameter level: the level of the per-request line.
    public init(level: Logger.Level = .info) {
        self.level = level
        self.remoteAddress = { _ in nil }
    }

    /// Creates the middleware for a context that knows the peer's address, which the line then holds.
    public init(level: Logger.Level = .info) where Context: RemoteAddressProviding {
        self.level = level
        self.remoteAddress = { $0.remoteAddress }
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
            "duration_ms": .stringConvertible(Milliseconds(ContinuousClock.now - start)),
        ]
        if let remoteAddress = remoteAddress(context) {
            metadata["client.address"] = .string(remoteAddress)
        }
        context.logger.log(level: level, "request", metadata: metadata)
    }

}

/// A duration in milliseconds to two decimals (finer digits are noise in a log line), written by integer
/// arithmetic: `Double`'s shortest-digits printing cost more than the rest of the line.
struct Milliseconds: CustomStringConvertible, Sendable {
    /// Hundredths of a millisecond, rounded; at least 0.
    let hundredths: Int

    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        // 10 µs are 10^13 attoseconds; a duration of more than about 2.9 million years is clamped.
        let (whole, overflow) = Int(max(0, seconds)).multipliedReportingOverflow(by: 100_000)
        hundredths = overflow ? .max : whole.addingSaturated(Int((max(0, attoseconds) + 5_000_000_000_000) / 10_000_000_000_000))
    }

    var description: String {
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
