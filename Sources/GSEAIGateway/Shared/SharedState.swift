import Foundation
import Synchronization

// The state that must be one for every replica of the gateway: rate windows (requests per minute, password
// attempts), budget reservations, cache invalidation and the replicas themselves. Each is a protocol with
// two implementations: in this process (one gateway on SQLite) and in PostgreSQL (several replicas on one
// database, `PostgresSharedState`).

/// A sliding window of admitted events per key: a student's requests per minute, the password attempts on a
/// username from an address.
public protocol RateWindow: Sendable {
    /// Admits and counts one event of `key` at `now` when fewer than `limit` were admitted in the `window`
    /// seconds before; otherwise returns the refusal (nothing is counted).
    func admit(key: String, limit: Int, window: Double, now: Date) async throws -> RateRefusal?
    /// Forgets the key's events (a password that was right).
    func reset(key: String) async throws
}

/// Why a window refused an event: how many it holds, and the seconds until the oldest that matters ages out.
public struct RateRefusal: Sendable, Equatable {
    public var sent: Int
    public var retryAfter: Double
}

/// The tokens a student used and has reserved today in a class, against the class's daily budget.
///
/// A request is admitted only while what is used and reserved is below the budget; it reserves its largest
/// possible answer (the class's `max_output_tokens`) first, and settles with what it really used after.
/// Requests spread over any number of replicas then never exceed the budget by more than the reservation of
/// the last request admitted.
public protocol BudgetLedger: Sendable {
    /// Reserves `tokens` for `key` when its used and reserved tokens are below `budget`; returns the
    /// reservation, or the refusal with what is used and reserved. A reservation not settled by `expires`
    /// (its replica died) no longer counts.
    func reserve(_ key: BudgetKey, tokens: Int, budget: Int, now: Date, expires: Date) async throws -> BudgetDecision
    /// Adds the request's usage (to the same totals as every request) and ends its reservation.
    func settle(_ reservation: String, key: BudgetKey, model: String, inputTokens: Int, outputTokens: Int) async throws
    /// Ends a reservation whose request used nothing (refused, failed, left before it started).
    func release(_ reservation: String) async throws
}

/// A request's class limits decided together: its daily budget (reserving its largest answer) and its
/// requests per minute. A request refused for either counts and reserves nothing.
///
/// In PostgreSQL both are one statement, and the admissions of concurrent requests are decided together
/// in one round trip (``PostgresRequestLimiter``); in this process, one after the other.
public protocol RequestLimiter: Sendable {
    func admit(_ ask: LimitAsk, now: Date) async throws -> LimitDecision
}

/// What one request asks of its class's limits.
public struct LimitAsk: Sendable, Equatable {
    /// Its rate window: one more event of `key` when fewer than `limit` came in the last `window` seconds.
    public var rate: Rate?
    /// Its reservation in a daily budget: `tokens` when `key`'s used and reserved tokens are below `budget`.
    public var budget: Budget?

    public struct Rate: Sendable, Equatable {
        public var key: String
        public var limit: Int
        public var window: Double
    }

    public struct Budget: Sendable, Equatable {
        public var key: BudgetKey
        public var tokens: Int
        public var budget: Int
        /// When the reservation stops counting if it is never settled (its replica died).
        public var expires: Date
    }
}

public enum LimitDecision: Sendable, Equatable {
    /// Admitted, counted in the rate window, with the budget's reservation (when a budget was asked).
    case admitted(reservation: String?)
    /// Refused by the budget: the tokens used and reserved.
    case overBudget(used: Int)
    /// Refused by the rate window.
    case rateLimited(RateRefusal)
}

/// The limits over a rate window and a budget ledger, asked one after the other: the budget first, its
/// reservation released when the window refuses.
public struct SequentialLimiter: RequestLimiter {
    public let rates: any RateWindow
    public let budgets: any BudgetLedger

    public func admit(_ ask: LimitAsk, now: Date) async throws -> LimitDecision {
        var reservation: String?
        if let budget = ask.budget {
            switch try await budgets.reserve(budget.key, tokens: budget.tokens, budget: budget.budget, now: now, expires: budget.expires) {
            case .spent(let used): return .overBudget(used: used)
            case .reserved(let id): reservation = id
            }
        }
        if let rate = ask.rate {
            let refusal: RateRefusal?
            do {
                refusal = try await rates.admit(key: rate.key, limit: rate.limit, window: rate.window, now: now)
            } catch {
                if let reservation { try? await budgets.release(reservation) }
                throw error
            }
            if let refusal {
                if let reservation { try? await budgets.release(reservation) }
                return .rateLimited(refusal)
            }
        }
        return .admitted(reservation: reservation)
    }
}

/// A student's budget in one class on one day (`YYYY-MM-DD`, UTC).
public struct BudgetKey: Sendable, Hashable {
    public var userID: String
    public var classID: String
    public var day: String
}

public enum BudgetDecision: Sendable, Equatable {
    case reserved(id: String)
    /// Refused: the tokens used and reserved.
    case spent(used: Int)
}

/// What may change under a cache, announced to every replica so that each forgets what it kept.
public enum ChangeTopic: String, Sendable, CaseIterable {
    /// Users, their roles and passwords, API keys.
    case accounts
    /// Classes, their policies, members and invitations.
    case classes
}

/// Tells every replica (this one too) that something changed.
public protocol ChangeFeed: Sendable {
    func publish(_ topic: ChangeTopic) async
    /// Calls `handler` for every change published from now on, by any replica; and for every topic when
    /// changes may have been missed (a lost connection to the database).
    func subscribe(_ handler: @escaping @Sendable (ChangeTopic) -> Void)
}

/// The gateway processes sharing the database, and which of them owns each answer being generated.
public protocol ReplicaRegistry: Sendable {
    /// This process's id.
    var id: String { get }
    /// The address at which the other replicas reach this one (`nil`: alone).
    var url: String? { get }
    /// The live replica with this id (its address), or `nil` when it is not alive.
    func liveReplica(_ id: String) async throws -> ReplicaInfo?
    /// The ids of every live replica; `nil` for a process alone.
    func liveReplicaIDs() async throws -> [String]?
}

public struct ReplicaInfo: Sendable, Equatable {
    public var id: String
    public var url: String?
}

/// Every piece of shared state together.
public struct SharedState: Sendable {
    public var rates: any RateWindow
    public var budgets: any BudgetLedger
    /// A request's rate window and budget together (over `rates` and `budgets`).
    public var limits: any RequestLimiter
    public var changes: any ChangeFeed
    public var replicas: any ReplicaRegistry

    /// The state of one process alone, over its usage totals (`usage`, written once a second).
    public static func inProcess(usage: any UsageRepository) -> SharedState {
        let rates = LocalRateWindow(), budgets = LocalBudgetLedger(repository: usage)
        return SharedState(rates: rates, budgets: budgets, limits: SequentialLimiter(rates: rates, budgets: budgets),
                           changes: LocalChangeFeed(), replicas: LocalReplicaRegistry())
    }
}

// MARK: In this process

/// Windows kept in memory, as counts per whole second (at most `window` entries per key, whatever the
/// limit): an event of second b counts while now - b < window, as in PostgreSQL.
public final class LocalRateWindow: RateWindow {
    private struct Bucket {
        var second: Int
        var count: Int
    }

    private let windows = Mutex<[String: [Bucket]]>([:])
    /// Above this many keys, keys with nothing in their window are dropped, so that many usernames tried
    /// do not grow the table for ever.
    private let pruneAbove = 10_000

    public init() {}

    public func admit(key: String, limit: Int, window: Double, now: Date) -> RateRefusal? {
        let now = now.timeIntervalSince1970
        // Whole seconds, within any date a request can carry (the clock is the server's).
        let second = Int(now.rounded(.down).clamped(to: -1e15...1e15))
        return windows.withLock { windows in
            if windows.count > pruneAbove {
                windows = windows.filter { entry in entry.value.last.map { now - Double($0.second) < window } ?? false }
            }
            var buckets = windows[key, default: []]
            buckets.removeAll { now - Double($0.second) >= window }
            defer { windows[key] = buckets.isEmpty ? nil : buckets }
            let sent = buckets.reduce(0) { $0.addingSaturated($1.count) }
            guard sent >= limit else {
                if buckets.last?.second == second { buckets[buckets.count - 1].count += 1 } else { buckets.append(Bucket(second: second, count: 1)) }
                return nil
            }
            // The second whose events must age out to make room for one more.
            var running = 0
            for bucket in buckets {
                running = running.addingSaturated(bucket.count)
                if running >= sent - limit + 1 {
                    return RateRefusal(sent: sent, retryAfter: Double(bucket.second) + window - now)
                }
            }
            return RateRefusal(sent: sent, retryAfter: window)
        }
    }

    public func reset(key: String) {
        _ = windows.withLock { $0.removeValue(forKey: key) }
    }
}

/// Reservations kept in memory, over the usage meter's totals (which include what is not written yet).
public final class LocalBudgetLedger: BudgetLedger {
    private struct Reservation {
        var key: BudgetKey
        var tokens: Int
        var expires: Date
    }

    private let reservations = Mutex<[String: Reservation]>([:])
    /// The last reservation's number: a reservation's id needs only be this process's own (a UUID's text cost
    /// about 6,000 instructions a request, through `snprintf`).
    private let lastReservation = Atomic<Int>(0)
    /// Set by the gateway when it wires its parts: totals and recording go through the meter.
    let meter = Mutex<UsageMeter?>(nil)
    private let repository: any UsageRepository

    init(repository: any UsageRepository) {
        self.repository = repository
    }

    public func reserve(_ key: BudgetKey, tokens: Int, budget: Int, now: Date, expires: Date) async throws -> BudgetDecision {
        let used: Int
        if let meter = meter.withLock({ $0 }) {
            used = try await meter.total(userID: key.userID, classID: key.classID, day: key.day)
        } else {
            used = try await repository.total(userID: key.userID, classID: key.classID, day: key.day)
        }
        return reservations.withLock { reservations in
            // Expired ones dropped (a new dictionary made only when there are).
            if reservations.values.contains(where: { $0.expires <= now }) {
                reservations = reservations.filter { $0.value.expires > now }
            }
            let reserved = reservations.values.reduce(0) { $1.key == key ? $0.addingSaturated($1.tokens) : $0 }
            let total = used.addingSaturated(reserved)
            guard total < budget else { return .spent(used: total) }
            let id = "local-\(lastReservation.add(1, ordering: .relaxed).newValue)"
            reservations[id] = Reservation(key: key, tokens: max(0, tokens), expires: expires)
            return .reserved(id: id)
        }
    }

    public func settle(_ reservation: String, key: BudgetKey, model: String, inputTokens: Int, outputTokens: Int) async throws {
        // Counted before the reservation goes, so that a check in between sees one or the other.
        if let meter = meter.withLock({ $0 }) {
            meter.record(userID: key.userID, classID: key.classID, model: model, day: key.day, inputTokens: inputTokens,
                         outputTokens: outputTokens)
        } else {
            try await repository.add(userID: key.userID, classID: key.classID, model: model, day: key.day, inputTokens: inputTokens,
                                     outputTokens: outputTokens)
        }
        _ = reservations.withLock { $0.removeValue(forKey: reservation) }
    }

    public func release(_ reservation: String) {
        _ = reservations.withLock { $0.removeValue(forKey: reservation) }
    }
}

/// Changes told to this process's own caches, at once.
public final class LocalChangeFeed: ChangeFeed {
    private let handlers = Mutex<[@Sendable (ChangeTopic) -> Void]>([])

    public init() {}

    public func publish(_ topic: ChangeTopic) {
        for handler in handlers.withLock({ $0 }) { handler(topic) }
    }

    public func subscribe(_ handler: @escaping @Sendable (ChangeTopic) -> Void) {
        handlers.withLock { $0.append(handler) }
    }
}

/// One process alone: it owns every answer.
public struct LocalReplicaRegistry: ReplicaRegistry {
    public let id = "local"
    public var url: String? { nil }

    public init() {}

    public func liveReplica(_ id: String) -> ReplicaInfo? {
        id == self.id ? ReplicaInfo(id: id, url: nil) : nil
    }

    public func liveReplicaIDs() -> [String]? { nil }
}

/// The tokens one admitted request holds back in its class's daily budget, until it settles them with what
/// it really used, or releases them (refused, failed, its caller gone). Dropped unsettled, it releases them.
public final class BudgetReservation: Sendable {
    let ledger: any BudgetLedger
    let id: String
    let key: BudgetKey
    private let ended = Atomic<Bool>(false)

    init(ledger: any BudgetLedger, id: String, key: BudgetKey) {
        self.ledger = ledger
        self.id = id
        self.key = key
    }

    /// Records the request's usage and ends the reservation; only the first call counts.
    func settle(model: String, inputTokens: Int, outputTokens: Int) async throws {
        guard ended.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        try await ledger.settle(id, key: key, model: model, inputTokens: inputTokens, outputTokens: outputTokens)
    }

    /// Ends the reservation with nothing used.
    func release() async {
        guard ended.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        try? await ledger.release(id)
    }

    deinit {
        guard !ended.load(ordering: .relaxed) else { return }
        let ledger = self.ledger, id = self.id
        Task { try? await ledger.release(id) }
    }
}
