import DequeModule
import Foundation
import Synchronization

/// Who a request is for, as the fair queue sees it: the class whose policy applied (`nil`: outside any
/// class, one group for everyone outside) and the user.
public struct FairnessKey: Hashable, Sendable {
    public var classID: String?
    public var userID: String

    public init(classID: String?, userID: String) {
        self.classID = classID
        self.userID = userID
    }

    /// The key of its class in the queue's counts and turns: `""` for everyone outside a class.
    var group: String { classID ?? "" }
}

/// Shares the upstreams' slots (how many requests each runs at once) among the requests that want them.
///
/// A request takes a slot at once when one is free on an upstream that serves it and nobody waits; else it
/// waits. When a slot frees, the next request is chosen fairly: first the class whose members hold the
/// fewest slots now, then in it the student who holds the fewest, each student's requests in the order they
/// came; among equals, classes and students take turns. A student holds at most `cap` slots at once (the
/// class's policy), so a script with twenty requests in flight waits behind everyone else's first one. It
/// is work conserving: a slot never stays free while a request that may take it waits, so a student alone
/// gets every slot up to their cap.
///
/// A request names the upstreams that may serve it, in the order it prefers them; it gets a slot of the first
/// of them that is free when its turn comes.
///
/// A slot freed by a student with nothing else waiting is kept for them for a moment (``Limits/anticipation``,
/// 50 ms) while others wait: a script, an agent or a student who asks again at once keeps their turn instead
/// of losing the slot to whoever waited and then waiting a whole answer for the next one. A scheduler that
/// never idles penalises exactly these synchronous callers ("deceptive idleness", the reason for anticipatory
/// disk scheduling); the slot stays idle at most that moment.
public final class FairScheduler: Sendable {
    /// How long and how many may wait.
    public struct Limits: Sendable, Hashable {
        /// Requests waiting in all; past it, 503.
        public var maxWaiting: Int
        /// Requests one user may have waiting; past it, 429.
        public var maxWaitingPerUser: Int
        /// The longest a request waits for a slot; past it, 503.
        public var maxWait: Duration
        /// How long a freed slot is kept for a student who has nothing else waiting (fair discipline only).
        public var anticipation: Duration

        public init(maxWaiting: Int = 1000, maxWaitingPerUser: Int = 20, maxWait: Duration = .seconds(180),
                    anticipation: Duration = .milliseconds(50)) {
            self.maxWaiting = maxWaiting
            self.maxWaitingPerUser = maxWaitingPerUser
            self.maxWait = maxWait
            self.anticipation = anticipation
        }
    }

    /// The order in which waiting requests get slots.
    public enum Discipline: String, Sendable, CaseIterable {
        /// Classes, then students, take turns (the default).
        case fair
        /// First come, first served, with no cap per student: what the gateway did before, for comparison.
        case fifo
    }

    /// Why a request gets no slot.
    public enum Refusal: Error, Sendable, Hashable {
        /// Too many requests wait already, in all.
        case queueFull(waiting: Int)
        /// The user has too many requests waiting.
        case tooManyWaiting(count: Int, limit: Int)
        /// The request waited the longest it may.
        case waitedTooLong(Duration)
        /// No upstream that could serve it has any slot (all down, or none serves the model).
        case noUpstream
    }

    /// A request for a slot.
    public struct Request: Sendable {
        public var key: FairnessKey
        /// The most slots the user may hold at once.
        public var cap: Int
        /// The upstreams that may serve it, preferred first.
        public var candidates: [String]
        /// Whether it goes first among the user's own waiting requests (a request that lost its upstream
        /// before anything was sent keeps its place).
        public var first = false

        public init(key: FairnessKey, cap: Int, candidates: [String], first: Bool = false) {
            self.key = key
            self.cap = cap
            self.candidates = candidates
            self.first = first
        }
    }

    private final class Waiter: @unchecked Sendable {
        // Unchecked: every field is touched under the scheduler's lock only.
        let id: Int
        let request: Request
        let since: ContinuousClock.Instant
        var continuation: CheckedContinuation<Lease, any Error>?
        let onPosition: (@Sendable (Int) -> Void)?
        var lastPosition = -1

        init(id: Int, request: Request, since: ContinuousClock.Instant, onPosition: (@Sendable (Int) -> Void)?) {
            self.id = id
            self.request = request
            self.since = since
            self.onPosition = onPosition
        }
    }

    /// The students of one class with requests waiting, taking turns.
    private struct Group {
        var students: [String: Deque<Waiter>] = [:]
        /// Turn order of the students with requests waiting.
        var ring: [String] = []
        var next = 0
    }

    /// An upstream's slots: how many in all, how many in use. One entry, one look-up for both.
    private struct UpstreamSlots {
        var slots = 0
        var busy = 0
    }

    /// What one class's members hold now (`""`: everyone outside a class), in one entry: a request's slot is
    /// counted with one look-up of its class (and one of its user there), not one per count.
    private struct ClassCounts {
        /// Slots the class's members hold.
        var holding = 0
        /// Slots each member holds through the class (a member holding none has no entry: everyone outside a class
        /// shares one, and would else be kept for ever).
        var byUser: [String: Int] = [:]
        /// The last waits of the class's requests, immediate ones included.
        var recentWaits = Deque<Duration>()

        /// A slot taken, after `waited`.
        mutating func take(_ userID: String, waited: Duration) {
            holding += 1
            byUser[userID, default: 0] += 1
            if recentWaits.count >= FairScheduler.recentWaitCount { recentWaits.removeFirst() }
            recentWaits.append(waited)
        }

        /// A slot given back.
        mutating func giveBack(_ userID: String) {
            holding = max(0, holding - 1)
            FairScheduler.decrement(&byUser, userID)
        }
    }

    private struct State {
        /// Each upstream's slots, by name.
        var upstreams: [String: UpstreamSlots] = [:]
        /// Slots each user holds now, over every upstream.
        var holding: [String: Int] = [:]
        /// Each class's counts (`""`: outside any class).
        var classes: [String: ClassCounts] = [:]
        /// Turn order of the classes with requests waiting (`""`: outside any class).
        var groups: [String: Group] = [:]
        var ring: [String] = []
        var next = 0
        /// Arrival order, for the FIFO discipline and the waiting count.
        var waiting: [Int: Waiter] = [:]
        var nextID = 0
        var waitingPerUser: [String: Int] = [:]
        /// Slots kept for a moment for the student who freed them.
        var reservations: [Reservation] = []
        var nextReservation = 0
    }

    /// A freed slot kept for the student who freed it, until `id` expires or they take it.
    struct Reservation {
        let id: Int
        let upstream: String
        let userID: String
    }

    /// How many of the last waits each class keeps, for its instructor's view.
    static let recentWaitCount = 200

    private let state = Mutex(State())
    public let limits: Limits
    public let discipline: Discipline
    private let clock = ContinuousClock()

    public init(limits: Limits = Limits(), discipline: Discipline = .fair) {
        self.limits = limits
        self.discipline = discipline
    }

    // MARK: Upstreams

    /// Sets how many requests `upstream` runs at once (0 while it is down); waiting requests get the new
    /// slots at once.
    public func setSlots(_ slots: Int, for upstream: String) {
        var stranded: [Waiter] = []
        let granted = state.withLock { state in
            state.upstreams[upstream, default: UpstreamSlots()].slots = max(0, slots)
            // Requests that only this upstream could serve, now down, are not kept waiting for nothing.
            for waiter in state.waiting.values where !waiter.request.candidates.contains(where: { state.upstreams[$0]?.slots ?? 0 > 0 }) {
                stranded.append(waiter)
            }
            for waiter in stranded { remove(waiter, &state) }
            return dispatch(&state)
        }
        for waiter in stranded {
            waiter.continuation?.resume(throwing: Refusal.noUpstream)
            waiter.continuation = nil
        }
        resume(granted)
    }

    /// Slots in use and in all, per upstream.
    public func usage() -> [String: (busy: Int, slots: Int)] {
        state.withLock { state in
            state.upstreams.mapValues { ($0.busy, $0.slots) }
        }
    }

    // MARK: Slots

    /// A slot held: released once, when the request is done (or abandoned).
    public final class Lease: Sendable {
        /// The upstream whose slot it is.
        public let upstream: String
        /// How long the request waited for it.
        public let waited: Duration
        fileprivate let key: FairnessKey
        private let scheduler: FairScheduler
        private let released = Atomic(false)

        fileprivate init(upstream: String, waited: Duration, key: FairnessKey, scheduler: FairScheduler) {
            self.upstream = upstream
            self.waited = waited
            self.key = key
            self.scheduler = scheduler
        }

        /// Gives the slot back; the next waiting request takes it. Releasing twice is harmless.
        public func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            scheduler.giveBack(upstream: upstream, key: key)
        }

        deinit {
            release()
        }
    }

    /// Waits for a slot; `onPosition` hears the number of requests ahead whenever it changes (at most every
    /// ``publishPositions()`` call). Throws a ``Refusal``, or `CancellationError` when the task is cancelled.
    public func acquire(_ request: Request, onPosition: (@Sendable (Int) -> Void)? = nil) async throws -> Lease {
        guard !request.candidates.isEmpty else { throw Refusal.noUpstream }
        let started = clock.now
        // The usual case: a slot is free and nobody waits for it.
        let immediate: Result<Lease, Refusal>? = state.withLock { state in
            if state.waiting.isEmpty || hasReservation(request.key.userID, on: request.candidates, state),
                let upstream = freeUpstream(request, state)
            {
                take(upstream, request.key, waited: .zero, &state)
                return .success(Lease(upstream: upstream, waited: .zero, key: request.key, scheduler: self))
            }
            return refusal(request, state).map { .failure($0) }
        }
        if let immediate { return try immediate.get() }

        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                let waiter = Waiter(id: id, request: request, since: started, onPosition: onPosition)
                waiter.continuation = continuation
                let (granted, cancelled): ([(Waiter, Lease)], Bool) = state.withLock { state in
                    // Cancelled before it was queued: the cancellation handler found nothing to withdraw.
                    if Task.isCancelled { return ([], true) }
                    enqueue(waiter, &state)
                    return (dispatch(&state), false)
                }
                if cancelled { return continuation.resume(throwing: CancellationError()) }
                resume(granted)
                // Still waiting: it hears its place in line at once, not at the next round.
                if onPosition != nil, !granted.contains(where: { $0.0 === waiter }) { publishPositions() }
            }
        } onCancel: {
            self.withdraw(id, because: CancellationError())
        }
    }

    /// Ends the waits that have lasted longer than the limit, and tells each waiting request its place
    /// in line when it changed. Called a few times a second by the gateway.
    public func publishPositions() {
        let now = clock.now
        var expired: [Waiter] = []
        var moved: [(Waiter, Int)] = []
        state.withLock { state in
            for waiter in state.waiting.values where now - waiter.since > limits.maxWait {
                expired.append(waiter)
            }
            for waiter in expired { remove(waiter, &state) }
            for (position, waiter) in order(state).enumerated() where waiter.lastPosition != position {
                waiter.lastPosition = position
                if waiter.onPosition != nil { moved.append((waiter, position)) }
            }
        }
        for waiter in expired {
            waiter.continuation?.resume(throwing: Refusal.waitedTooLong(now - waiter.since))
            waiter.continuation = nil
        }
        for (waiter, position) in moved { waiter.onPosition?(position) }
    }

    /// Why `request` could not wait for a slot now, if it could not: a caller that must commit to waiting
    /// (a stream whose head goes before the slot) asks first, so that the refusal is still an HTTP status.
    public func refusal(for request: Request) -> Refusal? {
        state.withLock { refusal(request, $0) }
    }

    private func refusal(_ request: Request, _ state: State) -> Refusal? {
        guard request.candidates.contains(where: { state.upstreams[$0]?.slots ?? 0 > 0 }) else { return .noUpstream }
        if state.waiting.count >= limits.maxWaiting { return .queueFull(waiting: state.waiting.count) }
        let mine = state.waitingPerUser[request.key.userID, default: 0]
        if mine >= limits.maxWaitingPerUser { return .tooManyWaiting(count: mine, limit: limits.maxWaitingPerUser) }
        return nil
    }

    /// A slot at once, or `nil` when the request would have to wait (or may not take one: see
    /// ``acquire(_:onPosition:)`` for the refusals).
    public func tryAcquire(_ request: Request) -> Lease? {
        state.withLock { state in
            guard state.waiting.isEmpty || hasReservation(request.key.userID, on: request.candidates, state),
                let upstream = freeUpstream(request, state)
            else { return nil }
            take(upstream, request.key, waited: .zero, &state)
            return Lease(upstream: upstream, waited: .zero, key: request.key, scheduler: self)
        }
    }

    /// One class's queue (`nil`: outside any class), for its instructor: each user's requests waiting and
    /// slots held, and the class's last waits.
    public func classQueue(_ classID: String?) -> (waiting: [String: Int], holding: [String: Int], recentWaits: [Duration]) {
        state.withLock { state in
            let key = classID ?? ""
            let waiting = state.groups[key]?.students.mapValues(\.count) ?? [:]
            var holding: [String: Int] = [:]
            let counts = state.classes[key]
            for userID in Set(waiting.keys).union(counts?.byUser.keys ?? [:].keys) {
                holding[userID] = counts?.byUser[userID]
            }
            return (waiting, holding.compactMapValues { $0 }, Array(counts?.recentWaits ?? []))
        }
    }

    /// Requests waiting per upstream they prefer (their first candidate).
    public func waitingPerUpstream() -> [String: Int] {
        state.withLock { state in
            state.waiting.values.reduce(into: [:]) { counts, waiter in
                if let first = waiter.request.candidates.first { counts[first, default: 0] += 1 }
            }
        }
    }

    /// How many requests wait now, and per class (`""` outside any class).
    public func waitingCounts() -> (total: Int, perClass: [String: Int]) {
        state.withLock { state in
            (state.waiting.count, state.groups.mapValues { $0.students.values.reduce(0) { $0 + $1.count } })
        }
    }

    // MARK: The queue (under the lock)

    private func freeUpstream(_ request: Request, _ state: State) -> String? {
        if discipline == .fair, state.holding[request.key.userID, default: 0] >= request.cap { return nil }
        return request.candidates.first { upstream in
            let keptForOthers = state.reservations.reduce(0) { $0 + ($1.upstream == upstream && $1.userID != request.key.userID ? 1 : 0) }
            guard let counts = state.upstreams[upstream] else { return false }
            return counts.busy + keptForOthers < counts.slots
        }
    }

    /// Whether `userID` has a slot kept for them on one of `upstreams`.
    private func hasReservation(_ userID: String, on upstreams: [String], _ state: State) -> Bool {
        state.reservations.contains { $0.userID == userID && upstreams.contains($0.upstream) }
    }

    /// Counts a slot of `upstream` taken by `key`'s request after `waited`. In place, one look-up for each count's
    /// entry: a copy taken out and put back would copy the class's last waits at every request.
    private func take(_ upstream: String, _ key: FairnessKey, waited: Duration, _ state: inout State) {
        // A slot kept for the user is theirs now.
        if !state.reservations.isEmpty,
            let index = state.reservations.firstIndex(where: { $0.userID == key.userID && $0.upstream == upstream })
        {
            state.reservations.remove(at: index)
        }
        state.upstreams[upstream, default: UpstreamSlots()].busy += 1
        state.holding[key.userID, default: 0] += 1
        state.classes[key.group, default: ClassCounts()].take(key.userID, waited: waited)
    }

    private func enqueue(_ waiter: Waiter, _ state: inout State) {
        state.waiting[waiter.id] = waiter
        state.waitingPerUser[waiter.request.key.userID, default: 0] += 1
        let groupKey = waiter.request.key.group
        let userID = waiter.request.key.userID
        if state.groups[groupKey] == nil {
            state.groups[groupKey] = Group()
            state.ring.append(groupKey)
        }
        if state.groups[groupKey]!.students[userID] == nil {
            state.groups[groupKey]!.students[userID] = Deque()
            state.groups[groupKey]!.ring.append(userID)
        }
        if waiter.request.first {
            state.groups[groupKey]!.students[userID]!.prepend(waiter)
        } else {
            state.groups[groupKey]!.students[userID]!.append(waiter)
        }
    }

    /// Takes a waiting request out of the queue (without resuming it). In place: a class's students and a student's
    /// requests taken out of the state, changed and put back were copied whole at every request given a slot.
    private func remove(_ waiter: Waiter, _ state: inout State) {
        guard state.waiting.removeValue(forKey: waiter.id) != nil else { return }
        let userID = waiter.request.key.userID
        Self.decrement(&state.waitingPerUser, userID)
        let groupKey = waiter.request.key.group
        guard let groupIndex = state.groups.index(forKey: groupKey),
            Self.remove(waiter, of: userID, from: &state.groups.values[groupIndex])
        else { return }
        // The class has nobody waiting any more.
        state.groups.remove(at: groupIndex)
        Self.leave(groupKey, ring: &state.ring, next: &state.next)
    }

    /// Takes `waiter` out of its student's requests in `group`, and the student out of the turns when none is left;
    /// whether the group has nobody waiting any more.
    private static func remove(_ waiter: Waiter, of userID: String, from group: inout Group) -> Bool {
        guard let studentIndex = group.students.index(forKey: userID) else { return false }
        group.students.values[studentIndex].removeAll { $0.id == waiter.id }
        if group.students.values[studentIndex].isEmpty {
            group.students.remove(at: studentIndex)
            leave(userID, ring: &group.ring, next: &group.next)
        }
        return group.students.isEmpty
    }

    /// Takes `key` out of a turn order, the next turn staying with whoever had it.
    private static func leave(_ key: String, ring: inout [String], next: inout Int) {
        guard let index = ring.firstIndex(of: key) else { return }
        ring.remove(at: index)
        if index < next { next -= 1 }
        if next >= ring.count { next = 0 }
    }

    /// Gives free slots to waiting requests, in turn; returns those granted, to resume outside the lock.
    private func dispatch(_ state: inout State) -> [(Waiter, Lease)] {
        var granted: [(Waiter, Lease)] = []
        let now = clock.now
        while let (waiter, upstream) = nextEligible(state) {
            remove(waiter, &state)
            advanceTurns(past: waiter, &state)
            take(upstream, waiter.request.key, waited: now - waiter.since, &state)
            granted.append((waiter, Lease(upstream: upstream, waited: now - waiter.since, key: waiter.request.key, scheduler: self)))
        }
        return granted
    }

    /// The request whose turn it is among those that may take a free slot now, with its slot.
    private func nextEligible(_ state: State) -> (Waiter, String)? {
        guard state.upstreams.values.contains(where: { $0.busy < $0.slots }) else { return nil }
        if discipline == .fifo {
            for waiter in state.waiting.values.sorted(by: { $0.id < $1.id }) {
                if let upstream = freeUpstream(waiter.request, state) { return (waiter, upstream) }
            }
            return nil
        }
        // The eligible class whose members hold the fewest slots, then its eligible student holding the
        // fewest; the first in turn order among equals.
        var best: (held: Int, waiter: Waiter, upstream: String)?
        for offset in 0..<state.ring.count {
            let groupKey = state.ring[(state.next + offset) % state.ring.count]
            let held = state.classes[groupKey]?.holding ?? 0
            if let best, best.held <= held { continue }
            guard let group = state.groups[groupKey], let (waiter, upstream) = nextEligible(in: group, state) else { continue }
            best = (held, waiter, upstream)
        }
        return best.map { ($0.waiter, $0.upstream) }
    }

    private func nextEligible(in group: Group, _ state: State) -> (Waiter, String)? {
        var best: (held: Int, waiter: Waiter, upstream: String)?
        for offset in 0..<group.ring.count {
            let userID = group.ring[(group.next + offset) % group.ring.count]
            let held = state.holding[userID, default: 0]
            if let best, best.held <= held { continue }
            guard let waiter = group.students[userID]?.first, let upstream = freeUpstream(waiter.request, state) else { continue }
            best = (held, waiter, upstream)
        }
        return best.map { ($0.waiter, $0.upstream) }
    }

    /// After `waiter` got a slot, the next turn goes to the class after its class and, in its class, to the
    /// student after it.
    private func advanceTurns(past waiter: Waiter, _ state: inout State) {
        let groupKey = waiter.request.key.group
        if let index = state.ring.firstIndex(of: groupKey) {
            state.next = state.ring.isEmpty ? 0 : (index + 1) % state.ring.count
            if var group = state.groups[groupKey], let student = group.ring.firstIndex(of: waiter.request.key.userID) {
                group.next = (student + 1) % group.ring.count
                state.groups[groupKey] = group
            }
        } else if !state.ring.isEmpty {
            // Its class has nobody waiting any more: the class that came after it is next.
            state.next %= state.ring.count
        }
    }

    /// Every waiting request in the order the turns would reach them if nothing changed (slots, caps and
    /// upstreams aside): what "N ahead of you" counts.
    private func order(_ state: State) -> [Waiter] {
        if discipline == .fifo { return state.waiting.values.sorted { $0.id < $1.id } }
        var groups = state.ring.indices.map { offset -> (ring: [String], next: Int, queues: [String: Deque<Waiter>]) in
            let key = state.ring[(state.next + offset) % state.ring.count]
            let group = state.groups[key] ?? Group()
            return (group.ring, group.next, group.students)
        }
        var ordered: [Waiter] = []
        ordered.reserveCapacity(state.waiting.count)
        while ordered.count < state.waiting.count {
            var progressed = false
            for index in groups.indices {
                var group = groups[index]
                for step in 0..<group.ring.count {
                    let slot = (group.next + step) % group.ring.count
                    let userID = group.ring[slot]
                    guard let waiter = group.queues[userID]?.popFirst() else { continue }
                    ordered.append(waiter)
                    group.next = (slot + 1) % group.ring.count
                    progressed = true
                    break
                }
                groups[index] = group
            }
            if !progressed { break }
        }
        return ordered
    }

    // MARK: Outside the lock

    private func resume(_ granted: [(Waiter, Lease)]) {
        for (waiter, lease) in granted {
            waiter.continuation?.resume(returning: lease)
            waiter.continuation = nil
        }
    }

    fileprivate func giveBack(upstream: String, key: FairnessKey) {
        var kept: Int?
        let granted = state.withLock { state in
            // In place, one look-up each (a copy changed and put back would copy a class's counts at every request);
            // a class's counts are kept, one entry per class that ever held a slot, so its next request makes none.
            if let index = state.upstreams.index(forKey: upstream), state.upstreams.values[index].busy > 0 {
                state.upstreams.values[index].busy -= 1
            }
            Self.decrement(&state.holding, key.userID)
            if let index = state.classes.index(forKey: key.group) { state.classes.values[index].giveBack(key.userID) }
            // Others wait and this student does not: the slot is kept for them a moment (see the type's notes).
            if discipline == .fair, limits.anticipation > .zero, !state.waiting.isEmpty, state.waitingPerUser[key.userID] == nil {
                let id = state.nextReservation
                state.nextReservation += 1
                state.reservations.append(Reservation(id: id, upstream: upstream, userID: key.userID))
                kept = id
            }
            return dispatch(&state)
        }
        resume(granted)
        if let kept {
            let anticipation = limits.anticipation
            Task { [weak self] in
                try? await Task.sleep(for: anticipation)
                self?.expireReservation(kept)
            }
        }
    }

    /// The moment is over: a slot still kept goes to whoever waits.
    private func expireReservation(_ id: Int) {
        let granted: [(Waiter, Lease)] = state.withLock { state in
            guard let index = state.reservations.firstIndex(where: { $0.id == id }) else { return [] }
            state.reservations.remove(at: index)
            return dispatch(&state)
        }
        resume(granted)
    }

    fileprivate static func decrement(_ counts: inout [String: Int], _ key: String) {
        // One look-up: the count lowered where it is, or taken out at its last one.
        guard let index = counts.index(forKey: key) else { return }
        if counts.values[index] > 1 {
            counts.values[index] -= 1
        } else {
            counts.remove(at: index)
        }
    }

    private func withdraw(_ id: Int, because error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard let waiter = state.waiting[id] else { return nil }
            remove(waiter, &state)
            return waiter
        }
        waiter?.continuation?.resume(throwing: error)
        waiter?.continuation = nil
    }
}
