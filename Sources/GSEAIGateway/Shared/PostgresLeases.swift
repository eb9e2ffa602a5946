import Foundation
import GSEAIFormats
import Logging
import PostgresNIO
import Synchronization

/// A student's limits spent in this replica's memory while they are far from reached: the database is asked
/// once per lease, not once per request.
///
/// A lease is one admission in the database (``PostgresRequestLimiter/lease(_:terms:now:)``) that takes a
/// share of a rate window and of a budget for ``lifetime``: `slots` events counted at a second after the
/// lease ends (so each event spent from it still counts a full window after its request), and the tokens of
/// `slots` reservations in one reservation row. It is granted only while that share fits ``headroom`` times
/// more; nearer the limits every request is decided in the database, one by one, exactly as without leases.
/// So the limits never let more through than without leases: a window never holds more than its limit, a
/// budget is never passed by more than one request's reservation. The price: what a lease has not spent is
/// refused to the other replicas until it is given back, at most ``lifetime`` plus one flush later.
///
/// The requests a lease admitted settle here too: their usage goes to the database with the next flush
/// (every ``flushInterval``), in the statement that takes their reservation off the lease's row, so that
/// no replica sees the usage and the reservation both, or neither. A crash of the replica loses that
/// flush's usage, as on SQLite (once a second); the lease's row still reserves it until it expires.
///
/// Small limits never lease: a share must be ``smallestLease`` requests or more (a limit of 10 per minute
/// is decided request by request, on every replica).
final class PostgresLeases: RequestLimiter, BudgetLedger {
    /// How long a lease admits requests.
    static let lifetime: Duration = .seconds(1)
    /// How often usage is written and leases that ended are given back.
    static let flushInterval: Duration = .milliseconds(250)
    /// The fewest requests worth a lease, and the most one takes.
    static let smallestLease = 4
    static let largestLease = 256
    /// A lease is granted only when this many more of its size still fit (the other replicas' leases).
    static let headroom = 4

    private let limiter: PostgresRequestLimiter
    private let ledger: PostgresBudgetLedger
    private let client: PostgresClient
    private let logger: Logger
    private let book = Book()

    /// The leases' state, shared with the flushes' batcher.
    final class Book: Sendable {
        let state = Mutex(State())
    }

    /// The limits a lease is for: another policy (a changed limit) is another lease.
    struct Key: Hashable {
        var rate: String?
        var limit: Int
        var window: Double
        var budget: BudgetKey?
        var budgetLimit: Int
        var tokens: Int
    }

    struct Lease {
        /// The reservation row of its tokens (`nil` without a budget).
        var row: String?
        var budget: BudgetKey?
        var rateKey: String?
        /// The second its events are counted at.
        var second: Int64
        /// The request time it was taken at, and until when (monotonic) it admits.
        var taken: Double
        var ends: ContinuousClock.Instant
        var slots: Int
        /// Tokens of the row not reserved by a request (given back when it ends).
        var tokens: Int
        /// What its requests may still take: the row's tokens less the usage of those settled (their input
        /// too) and the reservations of those running, as the budget itself would count them.
        var allowance: Int
    }

    /// A request a lease admitted: its reservation, by id.
    struct Part {
        var key: Key
        var row: String
        var tokens: Int
    }

    struct State {
        var leases: [Key: Lease] = [:]
        /// Keys whose lease is being asked for, with the requests waiting for it.
        var asking: [Key: [CheckedContinuation<Void, Never>]] = [:]
        /// Keys refused a lease (too near a limit), until when: their requests go to the database one by one.
        var refused: [Key: ContinuousClock.Instant] = [:]
        var parts: [String: Part] = [:]
        /// What the next flush writes.
        var outbox: [JSONValue] = []
        /// Flushes whose answer never came (written or not), sent again with their ids.
        var retries: [Flush] = []
        var closed = false
    }

    /// Flushes, one at a time: a flush asked for while one runs waits for the next, which takes everything
    /// settled before it was asked for.
    private let flushes: StatementBatcher<Bool, Void>

    init(limiter: PostgresRequestLimiter, ledger: PostgresBudgetLedger, client: PostgresClient, logger: Logger) {
        self.limiter = limiter
        self.ledger = ledger
        self.client = client
        self.logger = logger
        let book = self.book
        flushes = StatementBatcher { asks in
            try await Self.write(book: book, endingEveryLease: asks.contains(true), client: client, logger: logger)
            return Array(repeating: (), count: asks.count)
        }
    }

    // MARK: Admission

    func admit(_ ask: LimitAsk, now: Date) async throws -> LimitDecision {
        let size = Self.size(of: ask)
        guard size > 0 else { return try await limiter.admit(ask, now: now) }
        let key = Key(rate: ask.rate?.key, limit: ask.rate?.limit ?? 0, window: ask.rate?.window ?? 0, budget: ask.budget?.key,
                      budgetLimit: ask.budget?.budget ?? 0, tokens: max(0, ask.budget?.tokens ?? 0))
        enum Step { case admitted(String?), ask, wait, alone }
        let step = book.state.withLock { state -> Step in
            if let part = Self.spend(key, &state, now: now.unixSeconds) { return .admitted(part.reservation) }
            if state.closed { return .alone }
            if let until = state.refused[key], ContinuousClock.now < until { return .alone }
            if state.asking[key] != nil { return .wait }
            state.asking[key] = []
            return .ask
        }
        switch step {
        case .admitted(let id):
            return .admitted(reservation: id)
        case .alone:
            return try await limiter.admit(ask, now: now)
        case .wait:
            // The lease being asked for serves this request too, when it is granted and not spent by then.
            await withCheckedContinuation { continuation in
                let asked = book.state.withLock { state in
                    guard state.asking[key] != nil else { return false }
                    state.asking[key]?.append(continuation)
                    return true
                }
                if !asked { continuation.resume() }
            }
            if let part = book.state.withLock({ Self.spend(key, &$0, now: now.unixSeconds) }) { return .admitted(reservation: part.reservation) }
            return try await limiter.admit(ask, now: now)
        case .ask:
            let part: Spent?, waiting: [CheckedContinuation<Void, Never>]
            do {
                try await takeLease(for: ask, key: key, size: size, now: now)
                // Its own part first, then the waiting requests try theirs.
                (part, waiting) = book.state.withLock { state in (Self.spend(key, &state, now: now.unixSeconds), state.asking.removeValue(forKey: key) ?? []) }
            } catch {
                for waiting in book.state.withLock({ $0.asking.removeValue(forKey: key) ?? [] }) { waiting.resume() }
                throw error
            }
            for continuation in waiting { continuation.resume() }
            if let part { return .admitted(reservation: part.reservation) }
            // Too near a limit for a lease: this request is decided alone.
            return try await limiter.admit(ask, now: now)
        }
    }

    /// Asks the database for a lease of `size` requests on `ask`'s limits, and keeps it when granted.
    private func takeLease(for ask: LimitAsk, key: Key, size: Int, now: Date) async throws {
        let total = key.tokens.multipliedReportingOverflow(by: size)
        let need = total.partialValue.multipliedReportingOverflow(by: Self.headroom + 1)
        guard !total.overflow, !need.overflow else { return }
        var leaseAsk = ask
        leaseAsk.budget?.tokens = total.partialValue
        let second = Int64((now.unixSeconds + Double(Self.lifetime.components.seconds) + 1).rounded(.down).clamped(to: -1e15...1e15))
        let terms = PostgresRequestLimiter.LeaseTerms(slots: size, at: second, room: size * (Self.headroom + 1), need: need.partialValue)
        let taken = ContinuousClock.now
        guard case .admitted(let row) = try await limiter.lease(leaseAsk, terms: terms, now: now) else {
            // Refused: the key's requests are decided one by one for as long as a lease would have lasted.
            book.state.withLock { $0.refused[key] = taken + Self.lifetime }
            return
        }
        // Its requests' own times (`now < taken + lifetime`) keep each event before the second it is counted at;
        // the monotonic end, from the grant, bounds how long it is kept when those times stand still.
        let lease = Lease(row: row, budget: ask.budget?.key, rateKey: ask.rate?.key, second: second, taken: now.unixSeconds,
                          ends: ContinuousClock.now + Self.lifetime, slots: ask.rate == nil ? Int.max : size, tokens: total.partialValue,
                          allowance: total.partialValue)
        let afterTheLastFlush = book.state.withLock { state -> Bool in
            // Shut down meanwhile: not used, and given back at once.
            guard !state.closed else {
                state.outbox += Self.giveBack(lease)
                return true
            }
            // A lease left from before for the key ends now.
            if let previous = state.leases.updateValue(lease, forKey: key) { state.outbox += Self.giveBack(previous) }
            return false
        }
        if afterTheLastFlush { await flush(endingEveryLease: true) }
    }

    /// How many requests a lease for `ask` takes; 0 when its limits are too small for one.
    static func size(of ask: LimitAsk) -> Int {
        var size = largestLease
        let share = (headroom + 1) * 8
        if let rate = ask.rate { size = min(size, rate.limit / share) }
        if let budget = ask.budget {
            // A request that reserves nothing is only ever admitted below the budget, one by one.
            guard budget.tokens > 0 else { return 0 }
            size = min(size, budget.budget / budget.tokens / share)
        }
        return size >= smallestLease ? size : 0
    }

    /// A request admitted by a lease, with its reservation when the lease has a budget.
    struct Spent {
        var reservation: String?
    }

    /// One request's part of the key's running lease, or `nil` when there is none or it is spent.
    private static func spend(_ key: Key, _ state: inout State, now: Double) -> Spent? {
        guard var lease = state.leases[key], ContinuousClock.now < lease.ends, now >= lease.taken,
              now < lease.taken + Double(lifetime.components.seconds), lease.slots > 0, lease.tokens >= key.tokens,
              lease.allowance >= key.tokens else { return nil }
        lease.slots = lease.slots == Int.max ? lease.slots : lease.slots - 1
        lease.tokens -= key.tokens
        lease.allowance -= key.tokens
        state.leases[key] = lease
        guard let row = lease.row else { return Spent(reservation: nil) }
        let id = UUID().uuidString
        state.parts[id] = Part(key: key, row: row, tokens: key.tokens)
        return Spent(reservation: id)
    }

    /// What the database is given back when a lease ends: its events and tokens not spent.
    private static func giveBack(_ lease: Lease) -> [JSONValue] {
        var entries: [JSONValue] = []
        if let rateKey = lease.rateKey, lease.slots > 0, lease.slots != Int.max {
            entries.append(.object(["rate_key": .string(rateKey), "at": .string(String(lease.second)), "slots": .string(String(lease.slots))]))
        }
        if let row = lease.row, let budget = lease.budget, lease.tokens > 0 {
            entries.append(tokensBack(row: row, tokens: lease.tokens, budget: budget))
        }
        return entries
    }

    /// Tokens taken off a lease's row, with its budget's key (whose lock the statement takes).
    private static func tokensBack(row: String, tokens: Int, budget: BudgetKey) -> JSONValue {
        .object(["lease": .string(row), "tokens": .string(String(tokens)), "user_id": .string(budget.userID),
                 "class_id": .string(budget.classID), "day": .string(budget.day)])
    }

    // MARK: Settlement

    func reserve(_ key: BudgetKey, tokens: Int, budget: Int, now: Date, expires: Date) async throws -> BudgetDecision {
        try await ledger.reserve(key, tokens: tokens, budget: budget, now: now, expires: expires)
    }

    /// A lease's request: its usage and the end of its reservation go with the next flush. Another: now.
    func settle(_ reservation: String, key: BudgetKey, model: String, inputTokens: Int, outputTokens: Int) async throws {
        let settled = book.state.withLock { state -> Settled in
            guard let part = state.parts.removeValue(forKey: reservation) else { return .notLeased }
            if var lease = state.leases[part.key], lease.row == part.row {
                // Its reservation is free again, its usage taken: as the budget counts it.
                let used = UsageRecorder.plausible(inputTokens) + UsageRecorder.plausible(outputTokens)
                lease.allowance = lease.allowance.addingSaturated(part.tokens).addingSaturated(-used)
                state.leases[part.key] = lease
            }
            state.outbox.append(.object([
                "lease": .string(part.row), "tokens": .string(String(part.tokens)),
                "user_id": .string(key.userID), "class_id": .string(key.classID), "day": .string(key.day), "model": .string(model),
                "input": .string(String(max(0, inputTokens))), "output": .string(String(max(0, outputTokens))),
            ]))
            return state.closed ? .afterTheLastFlush : .queued
        }
        switch settled {
        case .notLeased: try await ledger.settle(reservation, key: key, model: model, inputTokens: inputTokens, outputTokens: outputTokens)
        case .afterTheLastFlush: await flush(endingEveryLease: true)
        case .queued: break
        }
    }

    /// Where a settlement went: the next flush, or none will come (shut down: written now).
    private enum Settled { case notLeased, queued, afterTheLastFlush }

    /// A lease's request that used nothing: its tokens go back to the lease while it runs, else to the database.
    func release(_ reservation: String) async throws {
        let released = book.state.withLock { state -> Settled in
            guard let part = state.parts.removeValue(forKey: reservation) else { return .notLeased }
            if var lease = state.leases[part.key], lease.row == part.row {
                lease.tokens += part.tokens
                lease.allowance = lease.allowance.addingSaturated(part.tokens)
                state.leases[part.key] = lease
                return .queued
            }
            guard let budget = part.key.budget else { return .queued }
            state.outbox.append(Self.tokensBack(row: part.row, tokens: part.tokens, budget: budget))
            return state.closed ? .afterTheLastFlush : .queued
        }
        switch released {
        case .notLeased: try await ledger.release(reservation)
        case .afterTheLastFlush: await flush(endingEveryLease: true)
        case .queued: break
        }
    }

    // MARK: Flushing

    /// Writes the usage settled and gives back the leases that ended, every ``flushInterval`` until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.flushInterval)
            await flush(endingEveryLease: false)
        }
    }

    /// One flush, after any running; `endingEveryLease` at shutdown (then nothing is leased any more).
    func flush(endingEveryLease: Bool) async {
        if endingEveryLease { book.state.withLock { $0.closed = true } }
        do {
            try await flushes.submit(endingEveryLease)
        } catch {
            logger.warning("could not write the usage of leased requests; it is kept for the next try", metadata: ["error": "\(error)"])
        }
    }

    /// A flush's entries, under the id that makes it written once.
    struct Flush: Sendable {
        var id = UUID().uuidString
        var entries: [JSONValue]
    }

    /// Writes what is settled and gives back the leases that ended, and the flushes to send again. A flush
    /// the database refused (an error of the statement: nothing of it was written) is tried entry by entry,
    /// and an entry refused alone is dropped, so that it cannot stop every later flush; a flush whose answer
    /// did not come (the connection, a deadlock, the server's resources) is kept, with its id, for the next.
    private static func write(book: Book, endingEveryLease: Bool, client: PostgresClient, logger: Logger) async throws {
        let instant = ContinuousClock.now
        let flushes = book.state.withLock { state -> [Flush] in
            // (`closed` was set by `flush(endingEveryLease:)` before it asked for this.)
            for (key, lease) in state.leases where endingEveryLease || instant >= lease.ends {
                state.outbox += giveBack(lease)
                state.leases[key] = nil
            }
            state.refused = state.refused.filter { instant < $0.value }
            defer { state.outbox = []; state.retries = [] }
            return state.retries + (state.outbox.isEmpty ? [] : [Flush(entries: state.outbox)])
        }
        func run(_ flush: Flush) async throws {
            let statement = LeaseSettleStatement(json: JSONValue.array(flush.entries).jsonString, id: flush.id)
            for try await _ in try await client.execute(statement, logger: logger) {}
        }
        var kept: [Flush] = [], dropped: [JSONValue] = [], lastError: (any Error)?
        for flush in flushes {
            do {
                try await run(flush)
            } catch where refused(error) {
                lastError = error
                guard flush.entries.count > 1 else { dropped += flush.entries; continue }
                for entry in flush.entries {
                    let alone = Flush(entries: [entry])
                    do { try await run(alone) } catch where refused(error) { dropped.append(entry) } catch { kept.append(alone) }
                }
            } catch {
                lastError = error
                kept.append(flush)
            }
        }
        if !dropped.isEmpty, let lastError {
            logger.error("dropped settlements of leased requests that the database refuses",
                         metadata: ["count": "\(dropped.count)", "error": "\(String(reflecting: lastError))",
                                    "entries": "\(JSONValue.array(dropped).jsonString)"])
        }
        if !kept.isEmpty, let lastError {
            book.state.withLock { $0.retries.insert(contentsOf: kept, at: 0) }
            throw lastError
        }
    }

    /// Whether the database refused the statement itself (it was not written, and would be refused again),
    /// rather than failing to answer or to run it now: the connection, a deadlock or a serialization failure
    /// (SQLSTATE class 40), resources (53), the operator (57), the connection (08).
    static func refused(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, error.code == .server, let state = error.serverInfo?[.sqlState] else { return false }
        return !["40", "53", "57", "08"].contains(String(state.prefix(2)))
    }

    struct LeaseSettleStatement: PostgresPreparedStatement {
        static let name = "gseai_lease_settle"
        static let sql = "SELECT gseai_lease_settle($1::jsonb, $2)"
        typealias Row = Void
        var json: String
        var id: String

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings()
            bindings.append(json)
            bindings.append(id)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws {}
    }
}
