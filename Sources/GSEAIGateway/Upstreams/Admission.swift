import Foundation
import GSEAI
import HTTPTypes

/// The one admission step of every request that reaches a model server, on every API surface and for the
/// chat page's answers alike: the class's policy (which may refuse), the route (the upstreams that may
/// serve it), and a slot in the fair queue (which may wait). The data path reads: route → authenticate →
/// policy → admit → upstream → relay → usage.
public struct Admission: Sendable {
    let policies: PolicyEnforcer
    let pool: UpstreamPool
    let metrics: GatewayMetrics
    /// The slots a user holds at most when no class sets it.
    let defaultCap: Int

    /// What the admission decided for one request before it gets a slot.
    struct Ticket: Sendable {
        /// The class whose policy applied, if one did.
        var applied: ClassSession?
        /// What the request holds back of its class's daily budget until its usage is recorded.
        var reservation: BudgetReservation?
        var key: FairnessKey
        /// The most slots the user holds at once.
        var cap: Int
        var kinds: Set<UpstreamKind>
        var model: String?
        /// Whether the request waits for a slot (generation, embeddings) or goes straight on (lists, management).
        var usesSlot: Bool
        /// The upstream to try first: the one that issued the response a stateful request continues.
        var preferred: String?
    }

    /// A place on an upstream: with a slot of the fair queue for requests that use one.
    final class Slot: Sendable {
        let upstream: Upstream
        let lease: FairScheduler.Lease?

        init(upstream: Upstream, lease: FairScheduler.Lease?) {
            self.upstream = upstream
            self.lease = lease
        }

        /// How long the request waited for its slot.
        var waited: Duration { lease?.waited ?? .zero }

        func release() { lease?.release() }
    }

    /// Applies the policy and finds the route; refuses (in the words of ``GatewayError``) what may not go on.
    /// `shape` is the request body's shape for the policy (forwarded requests), `.none` for the chat page.
    func ticket(user: User, model: String?, imageCount: Int, shape: ProxyEndpoint.PolicyShape, kinds: Set<UpstreamKind>,
                usesSlot: Bool, preferredClassID: String? = nil, preferredUpstream: String? = nil, path: String) async throws -> Ticket {
        guard pool.serves(kinds) else { throw Self.wrongKind(path, needs: kinds, present: pool.kinds) }
        // Counted towards the rate limit only once everything else has passed.
        let admitted = usesSlot
            ? try await policies.admit(user: user, model: model, imageCount: imageCount, shape: shape, preferredClassID: preferredClassID)
            : nil
        let applied = admitted?.applied
        return Ticket(applied: applied, reservation: admitted?.reservation, key: FairnessKey(classID: applied?.id, userID: user.id),
                      cap: applied?.policy.maxConcurrentRequests ?? defaultCap, kinds: kinds, model: model, usesSlot: usesSlot,
                      preferred: preferredUpstream)
    }

    /// The upstreams that may serve the ticket now, preferred first, without those in `excluding`.
    func candidates(_ ticket: Ticket, excluding: Set<String> = []) -> [Upstream] {
        guard case .candidates(var upstreams) = pool.route(kinds: ticket.kinds, model: ticket.model, excluding: excluding) else { return [] }
        if let preferred = ticket.preferred, let index = upstreams.firstIndex(where: { $0.name == preferred }) {
            upstreams.insert(upstreams.remove(at: index), at: 0)
        }
        return upstreams
    }

    /// Throws the refusal the fair queue would give the ticket if it waited now.
    func checkMayWait(_ ticket: Ticket) throws {
        guard ticket.usesSlot else { return }
        if let refusal = pool.scheduler.refusal(for: request(ticket, candidates(ticket), first: false)) {
            throw Self.refusal(refusal, model: ticket.model)
        }
    }

    /// A slot at once, or `nil` when the request must wait for one.
    func tryAcquire(_ ticket: Ticket, excluding: Set<String> = []) throws -> Slot? {
        let upstreams = candidates(ticket, excluding: excluding)
        guard let first = upstreams.first else { throw Self.refusal(.noUpstream, model: ticket.model) }
        guard ticket.usesSlot else { return Slot(upstream: first, lease: nil) }
        guard let lease = pool.scheduler.tryAcquire(request(ticket, upstreams, first: false)) else { return nil }
        return slot(for: lease, ticket: ticket, upstreams)
    }

    /// A slot, waiting in the fair queue for it when none is free; `onPosition` hears how many requests are
    /// ahead while it waits. `first`: the request lost its upstream before it sent anything, and keeps its
    /// place at the head of the user's line.
    func acquire(_ ticket: Ticket, excluding: Set<String> = [], first: Bool = false,
                 onPosition: (@Sendable (Int) -> Void)? = nil) async throws -> Slot {
        let upstreams = candidates(ticket, excluding: excluding)
        guard let preferred = upstreams.first else { throw Self.refusal(.noUpstream, model: ticket.model) }
        guard ticket.usesSlot else { return Slot(upstream: preferred, lease: nil) }
        do {
            let lease = try await pool.scheduler.acquire(request(ticket, upstreams, first: first), onPosition: onPosition)
            return slot(for: lease, ticket: ticket, upstreams)
        } catch let refusal as FairScheduler.Refusal {
            throw Self.refusal(refusal, model: ticket.model)
        }
    }

    /// Notes that `slot`'s upstream failed before it answered (refused, no head in time, 5xx); returns the
    /// next slot to try, on another upstream that may serve the request, keeping its place in line, or
    /// `nil` when none is left.
    func failOver(_ ticket: Ticket, from slot: Slot, reason: String, tried: inout Set<String>,
                  onPosition: (@Sendable (Int) -> Void)? = nil) async throws -> Slot? {
        slot.upstream.markFailed(reason)
        metrics.recordUpstreamError(kind: "failover")
        tried.insert(slot.upstream.name)
        slot.release()
        guard !candidates(ticket, excluding: tried).isEmpty else { return nil }
        return try await acquire(ticket, excluding: tried, first: true, onPosition: onPosition)
    }

    private func request(_ ticket: Ticket, _ upstreams: [Upstream], first: Bool) -> FairScheduler.Request {
        FairScheduler.Request(key: ticket.key, cap: ticket.cap, candidates: upstreams.map(\.name), first: first)
    }

    private func slot(for lease: FairScheduler.Lease, ticket: Ticket, _ upstreams: [Upstream]) -> Slot {
        metrics.recordQueueWait(upstream: lease.upstream, classID: ticket.applied?.id, lease.waited)
        let upstream = upstreams.first { $0.name == lease.upstream } ?? pool.upstream(named: lease.upstream) ?? upstreams[0]
        return Slot(upstream: upstream, lease: lease)
    }

    // MARK: Refusals

    /// The 501 for an API that no model server of the gateway speaks: which kind would, and what is there.
    static func wrongKind(_ path: String, needs: Set<UpstreamKind>, present: Set<UpstreamKind>) -> GatewayError {
        let needed = needs.count == UpstreamKind.allCases.count ? "any" : needs.map(\.rawValue).sorted().joined(separator: " or ")
        let speaks = present.contains(.lmstudio) ? "" : present.count == 1 && present.first == .openai
            ? "; each speaks only the OpenAI-compatible API"
            : "; each speaks the OpenAI-compatible API and its own (\(present.map(\.rawValue).sorted().joined(separator: ", ")))"
        return GatewayError(.notImplemented, type: .notImplemented,
                            "\(path) is not available: no model server of this gateway speaks this API (it needs an upstream of kind \(needed))\(speaks)")
    }

    /// A refusal of the fair queue in words for the caller, with `Retry-After`.
    static func refusal(_ refusal: FairScheduler.Refusal, model: String?) -> GatewayError {
        switch refusal {
        case .queueFull(let waiting):
            return GatewayError(.serviceUnavailable, type: .rateLimit,
                                "the model servers are busy: \(waiting) requests are waiting for them; try again in a minute",
                                headers: [.retryAfter: "60"])
        case .tooManyWaiting(let count, let limit):
            return GatewayError(.tooManyRequests, type: .rateLimit,
                                "you have \(count) requests waiting for the model already (at most \(limit)); wait for them to be answered",
                                headers: [.retryAfter: "10"])
        case .waitedTooLong(let waited):
            return GatewayError(.serviceUnavailable, type: .rateLimit,
                                "no model server was free for \(Int(waited.seconds.rounded())) seconds; try again in a minute",
                                headers: [.retryAfter: "60"])
        case .noUpstream:
            let what = model.map { "the model '\($0)'" } ?? "this request"
            return GatewayError(.serviceUnavailable, type: .upstream, "no model server that serves \(what) is up now; try again shortly",
                                headers: [.retryAfter: "10"])
        }
    }
}
