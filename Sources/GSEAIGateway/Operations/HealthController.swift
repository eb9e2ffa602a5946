import Foundation
import GSEAI
import Hummingbird

/// The endpoints an operator or orchestrator polls: liveness, readiness and Prometheus metrics.
///
/// - `GET /healthz`: 200 `{"status":"ok"}` whenever the process answers at all.
/// - `GET /readyz`: runs every check at once, each within its time limit; 200 `{"status":"ready",…}`
///   when all pass, else 503 `{"status":"unready",…}`. Each check's entry is `ok` or a short reason
///   that is safe to show anyone (these endpoints carry no authentication).
/// - `GET /metrics`: ``GatewayMetrics/exposition()`` as `text/plain; version=0.0.4`.
public struct HealthController<Context: RequestContext>: Sendable {
    /// A named readiness check: it passes by returning and fails by throwing.
    public typealias Check = (name: String, check: @Sendable () async throws -> Void)

    let checks: [Check]
    let metrics: GatewayMetrics
    let timeout: Duration

    /// Creates the controller.
    /// - Parameters:
    ///   - checks: the readiness checks, such as `database` and `upstream`.
    ///   - metrics: the metrics `/metrics` exposes.
    ///   - timeout: how long each check may take before it counts as failed.
    public init(checks: [Check], metrics: GatewayMetrics, timeout: Duration = .seconds(2)) {
        self.checks = checks
        self.metrics = metrics
        self.timeout = timeout
    }

    /// Adds `/healthz`, `/readyz` and `/metrics` to `router`.
    public func register(on router: Router<Context>) {
        router.get("/healthz") { _, _ in
            Self.json(.ok, ["status": "ok"])
        }
        router.get("/readyz") { _, context in
            try await readiness(context: context)
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4", .cacheControl: "no-store"],
                body: .init(byteBuffer: metrics.exposition())
            )
        }
    }

    func readiness(context: Context) async throws -> Response {
        let results = await withTaskGroup(of: (String, String?).self) { group in
            for (name, check) in checks {
                group.addTask { (name, await Self.run(check, timeout: timeout)) }
            }
            var results: [(String, String?)] = []
            for await result in group { results.append(result) }
            return results
        }
        try Task.checkCancellation()
        var report: [String: JSONValue] = [:]
        for (name, failure) in results {
            report[name] = .string(failure ?? "ok")
            if let failure {
                context.logger.warning("readiness check failed", metadata: ["check": .string(name), "reason": .string(failure)])
            }
        }
        let ready = results.allSatisfy { $0.1 == nil }
        return Self.json(
            ready ? .ok : .serviceUnavailable,
            ["status": ready ? "ready" : "unready", "checks": .object(report)]
        )
    }

    /// Runs one check, giving up after `timeout`: `nil` when it passed, else why not.
    ///
    /// The check runs in a task of its own so that one ignoring cancellation still cannot hold the
    /// answer past its limit.
    static func run(_ check: @escaping @Sendable () async throws -> Void, timeout: Duration) async -> String? {
        let (outcomes, continuation) = AsyncStream.makeStream(of: String?.self)
        let work = Task {
            do {
                try await check()
                continuation.yield(nil)
            } catch {
                continuation.yield(reason(error))
            }
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            continuation.yield("timed out after \(timeout)")
        }
        defer {
            work.cancel()
            timer.cancel()
            continuation.finish()
        }
        var iterator = outcomes.makeAsyncIterator()
        switch await iterator.next() {
        case .some(let outcome): return outcome
        case .none: return "cancelled"
        }
    }

    /// A short reason for a failed check that reveals nothing private: messages written for callers
    /// are shown, anything else only by its type, since its description may hold addresses or tokens.
    static func reason(_ error: any Error) -> String {
        switch error {
        case let error as GatewayError:
            return error.message
        case GSEAIError.http(let status, _):
            return "the model server answered \(status)"
        case let error as GSEAIError:
            return GatewayError.upstream(error).message
        case is CancellationError:
            return "cancelled"
        default:
            return "failed (\(type(of: error)))"
        }
    }

    static func json(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(data: body.jsonData))
        )
    }
}
