import Hummingbird

/// Counts every request and records its duration in ``GatewayMetrics``, labelled by method, route
/// pattern and status.
///
/// The duration ends when the response head is ready, not when the body has been sent: for a streamed
/// answer that is the time to the first event, which is what a user waits for; how long the stream
/// then runs is the model's business, not the gateway's latency.
public struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: GatewayMetrics

    /// Creates the middleware.
    /// - Parameter metrics: where to record.
    public init(metrics: GatewayMetrics) {
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            record(request, context, response.status, since: start)
            return response
        } catch {
            // Errors that know their status (404 from the router, 413 from the body limit) keep it;
            // anything else is what Hummingbird will answer: a 500.
            let status = (error as? any HTTPResponseError)?.status ?? .internalServerError
            record(request, context, status, since: start)
            throw error
        }
    }

    private func record(_ request: Request, _ context: Context, _ status: HTTPResponse.Status, since start: ContinuousClock.Instant) {
        // Read after `next`: the router fills in the endpoint path (or `NotFound`) on its way in.
        metrics.recordRequest(
            method: request.method,
            route: GatewayMetrics.routeLabel(endpointPath: context.endpointPath),
            status: status,
            duration: ContinuousClock.now - start
        )
    }
}
