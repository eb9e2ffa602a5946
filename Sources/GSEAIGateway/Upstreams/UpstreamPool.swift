import Foundation
import GSEAI
import Logging
import ServiceLifecycle

/// The model servers, which of them serves a request, and the fair queue for their slots.
///
/// Routing by model: the upstreams of the kinds the endpoint needs that serve the model (as their model
/// lists say; one whose list is not read yet may), those that are up first, then those that have the model
/// loaded (LM Studio says), then the least busy for their size. When none is known to serve the model, every
/// upstream of the right kind is a candidate, and the first answers for itself (its own "not found").
public final class UpstreamPool: Service, Sendable {
    public let upstreams: [Upstream]
    public let scheduler: FairScheduler
    private let refreshInterval: Duration
    private let metrics: GatewayMetrics
    private let logger: Logger

    public init(settings: [UpstreamSettings], timeouts: GSEAIClient.Timeouts, scheduler: FairScheduler,
                refreshInterval: Duration = .seconds(30), metrics: GatewayMetrics, logger: Logger) throws {
        self.upstreams = try settings.map { try Upstream(settings: $0, timeouts: timeouts, logger: logger) }
        self.scheduler = scheduler
        self.refreshInterval = refreshInterval
        self.metrics = metrics
        self.logger = logger
        for upstream in upstreams { scheduler.setSlots(upstream.settings.slots, for: upstream.name) }
    }

    public func upstream(named name: String) -> Upstream? {
        upstreams.first { $0.name == name }
    }

    /// Whether an upstream speaks one of `kinds` (else ``route(kinds:model:excluding:)`` is `.wrongKind`, whatever
    /// the model and exclusions): without making the route's lists.
    func serves(_ kinds: Set<UpstreamKind>) -> Bool {
        upstreams.contains { kinds.contains($0.kind) }
    }

    /// The kinds of its upstreams.
    public var kinds: Set<UpstreamKind> { Set(upstreams.map(\.kind)) }

    /// The model an upstream of `kinds` serves when a request names none (llama.cpp and text-generation-webui
    /// serve one at a time): the first its list names, read now if it never was; `nil` when none answers.
    func servedModel(kinds: Set<UpstreamKind>) async -> String? {
        guard case .candidates(let upstreams) = route(kinds: kinds, model: nil) else { return nil }
        for upstream in upstreams {
            if upstream.status.refreshedAt == nil { await upstream.refresh() }
            if let model = upstream.status.firstModel { return model }
        }
        return nil
    }

    /// Where a request can go.
    enum Route {
        /// No upstream of the kinds the endpoint needs.
        case wrongKind
        /// These, preferred first.
        case candidates([Upstream])
    }

    /// The upstreams that may serve `model` (any model, for `nil`) on an endpoint served by `kinds`,
    /// preferred first; `excluding` those that failed this request already.
    func route(kinds: Set<UpstreamKind>, model: String?, excluding: Set<String> = []) -> Route {
        let ofKind = upstreams.filter { kinds.contains($0.kind) }
        guard !ofKind.isEmpty else { return .wrongKind }
        let remaining = excluding.isEmpty ? ofKind : ofKind.filter { !excluding.contains($0.name) }
        var serving = remaining
        if let model {
            let known = remaining.filter { $0.knowsServing(model) }
            serving = known.isEmpty ? remaining.filter { $0.mayServe(model) } : known
            if serving.isEmpty { serving = remaining }
        }
        // One (a department's one model server) or none: nothing to order. The route is asked several times
        // per request.
        guard serving.count > 1 else { return .candidates(serving) }
        let usage = scheduler.usage()
        let now = Date()
        let ordered = serving.map { upstream in
            let (busy, slots) = usage[upstream.name] ?? (0, upstream.settings.slots)
            return (upstream, upstream.isAvailable(at: now), model.map(upstream.hasLoaded) ?? false, Double(busy) / Double(max(slots, 1)))
        }
        .sorted { a, b in
            if a.1 != b.1 { return a.1 }
            if a.2 != b.2 { return a.2 }
            return a.3 < b.3
        }
        // Upstreams left aside after failures are tried only when no other can serve.
        let available = ordered.filter(\.1)
        return .candidates((available.isEmpty ? ordered : available).map(\.0))
    }

    /// Succeeds when at least one upstream answers its model list (for `/readyz`); throws the first failure
    /// otherwise.
    public func anyAnswers() async throws {
        var failure: (any Error)?
        for upstream in upstreams {
            do {
                _ = try await upstream.client.listModelsOpenAI()
                upstream.markSucceeded()
                return
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
    }

    /// Sets the queue's gauges for every upstream.
    func publishMetrics() {
        let usage = scheduler.usage()
        let waiting = scheduler.waitingPerUpstream()
        for upstream in upstreams {
            let (busy, slots) = usage[upstream.name] ?? (0, upstream.settings.slots)
            metrics.recordQueue(upstream: upstream.name, busy: busy, slots: slots, waiting: waiting[upstream.name, default: 0],
                                up: upstream.isAvailable())
        }
    }

    /// Reads every upstream's models (and health) now.
    public func refreshAll() async {
        await withTaskGroup(of: Void.self) { group in
            for upstream in upstreams { group.addTask { await upstream.refresh() } }
        }
    }

    /// Refreshes the upstreams every so often (with one upstream there is nothing to choose, and it is read
    /// only when the console asks), and tells waiting requests their place in line a few times a second.
    public func run() async throws {
        let refreshes = upstreams.count > 1
        await cancelWhenGracefulShutdown {
            if refreshes { await self.refreshAll() }
            var lastRefresh = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                self.scheduler.publishPositions()
                self.publishMetrics()
                if refreshes, ContinuousClock.now - lastRefresh >= self.refreshInterval {
                    lastRefresh = .now
                    await self.refreshAll()
                }
            }
        }
        for upstream in upstreams { try? await upstream.client.shutdown() }
    }
}
