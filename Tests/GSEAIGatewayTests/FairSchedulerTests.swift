import Foundation
import Synchronization
import Testing

@testable import GSEAIGateway

/// The fair queue alone: who gets the next slot, and what the others are told.
@Suite("Fair scheduler")
struct FairSchedulerTests {
    func request(_ user: String, in classID: String? = "bio", cap: Int = 2, on upstreams: [String] = ["gpu"], first: Bool = false)
        -> FairScheduler.Request
    {
        FairScheduler.Request(key: FairnessKey(classID: classID, userID: user), cap: cap, candidates: upstreams, first: first)
    }

    /// Starts `count` waits for `user` in order, each in its own task (so that they queue in that order).
    func queue(_ scheduler: FairScheduler, _ request: FairScheduler.Request, count: Int = 1,
               into leases: Grants) async throws -> [Task<Void, any Error>] {
        var tasks: [Task<Void, any Error>] = []
        for _ in 0..<count {
            let before = scheduler.waitingCounts().total
            tasks.append(Task {
                let lease = try await scheduler.acquire(request)
                leases.add(request.key.userID, lease)
            })
            // Wait until it is queued (or granted), so that the order is the order of the calls.
            try await eventually { scheduler.waitingCounts().total > before || leases.count(of: request.key.userID) > 0 }
        }
        return tasks
    }

    /// Leases granted so far, in order, by user.
    final class Grants: Sendable {
        private let state = Mutex<[(String, FairScheduler.Lease)]>([])
        func add(_ user: String, _ lease: FairScheduler.Lease) { state.withLock { $0.append((user, lease)) } }
        var order: [String] { state.withLock { $0.map(\.0) } }
        func count(of user: String) -> Int { state.withLock { $0.filter { $0.0 == user }.count } }
        /// Releases the oldest lease still held.
        func releaseOldest() { state.withLock { $0.first { !$0.1.upstream.isEmpty } }?.1.release() }
        func release(at index: Int) { state.withLock { $0[index].1 }.release() }
    }

    /// Places in line heard, by user.
    final class Heard: Sendable {
        private let state = Mutex<[String: [Int]]>([:])
        func add(_ user: String, _ position: Int) { state.withLock { $0[user, default: []].append(position) } }
        var all: [String: [Int]] { state.withLock { $0 } }
    }

    @Test func aFreeSlotIsTakenAtOnceUpToTheUsersCap() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(4, for: "gpu")
        let first = try await scheduler.acquire(request("ada"))
        let second = try await scheduler.acquire(request("ada"))
        #expect(first.upstream == "gpu" && first.waited == .zero)
        #expect(scheduler.usage()["gpu"]?.busy == 2)
        // A third waits although two slots are free: the cap is 2.
        let grants = Grants()
        _ = try await queue(scheduler, request("ada"), into: grants)
        #expect(scheduler.waitingCounts().total == 1)
        // Someone else takes a free slot at once.
        let other = try await scheduler.acquire(request("bob"))
        #expect(other.upstream == "gpu")
        second.release()
        try await eventually { grants.count(of: "ada") == 1 }
        #expect(scheduler.usage()["gpu"]?.busy == 3)
        second.release()  // a second release changes nothing
        #expect(scheduler.usage()["gpu"]?.busy == 3)
        _ = first
    }

    /// What an instructor's queue view reads: each student's slots held and requests waiting, counted up and down
    /// as requests start and end (a student holding nothing is not listed), and the class's last 200 waits.
    @Test func aClassQueueCountsWhatEachStudentHoldsAndKeepsTheLastWaits() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(1, for: "gpu")
        let first = try await scheduler.acquire(request("ada"))
        let grants = Grants()
        _ = try await queue(scheduler, request("bob"), into: grants)
        var view = scheduler.classQueue("bio")
        #expect(view.holding == ["ada": 1] && view.waiting == ["bob": 1])
        first.release()
        try await eventually { grants.count(of: "bob") == 1 }
        view = scheduler.classQueue("bio")
        #expect(view.holding == ["bob": 1] && view.waiting.isEmpty)
        grants.release(at: 0)
        view = scheduler.classQueue("bio")
        #expect(view.holding.isEmpty && view.waiting.isEmpty)
        #expect(view.recentWaits.count == 2 && view.recentWaits[0] == .zero && view.recentWaits[1] > .zero)
        // 205 more, none waiting: the class keeps its last 200 waits, Bob's (the oldest but one) gone.
        for _ in 0..<205 { try await scheduler.acquire(request("ada")).release() }
        view = scheduler.classQueue("bio")
        #expect(view.holding.isEmpty)
        #expect(view.recentWaits.count == 200 && view.recentWaits.allSatisfy { $0 == .zero })
        // The class holds again after it held nothing; another class and those outside any see none of it.
        let again = try await scheduler.acquire(request("cy"))
        #expect(scheduler.classQueue("bio").holding == ["cy": 1])
        #expect(scheduler.classQueue("chem").holding.isEmpty && scheduler.classQueue("chem").recentWaits.isEmpty)
        #expect(scheduler.classQueue(nil).holding.isEmpty)
        again.release()
        #expect(scheduler.classQueue("bio").holding.isEmpty)
    }

    @Test func aFloodWaitsBehindEveryoneElsesFirstRequest() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(2, for: "gpu")
        let grants = Grants()
        // Two slots busy with the flooder's first two; eight more of theirs wait; then the polite student asks.
        _ = try await queue(scheduler, request("flood"), count: 10, into: grants)
        _ = try await queue(scheduler, request("polite"), into: grants)
        #expect(grants.order == ["flood", "flood"])
        grants.release(at: 0)
        // The flooder holds one slot and waits with eight; the polite student is next.
        try await eventually { grants.order.count == 3 }
        #expect(grants.order.last == "polite")
    }

    @Test func classesTakeTurnsThenTheirStudents() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(1, for: "gpu")
        let grants = Grants()
        let holder = try await scheduler.acquire(request("holder", in: "x"))
        // Biology has three students waiting, chemistry one.
        for user in ["b1", "b2", "b3"] { _ = try await queue(scheduler, request(user, in: "bio", cap: 5), count: 2, into: grants) }
        _ = try await queue(scheduler, request("c1", in: "chem", cap: 5), count: 2, into: grants)
        holder.release()
        for count in 1...8 {
            try await eventually { grants.order.count == count }
            grants.release(at: count - 1)
        }
        // Classes alternate (bio, chem, bio, chem, …), and bio's students rotate.
        #expect(grants.order == ["b1", "c1", "b2", "c1", "b3", "b1", "b2", "b3"])
    }

    @Test func aSlotIsKeptAMomentForTheStudentWhoFreedItAndAsksAgain() async throws {
        let scheduler = FairScheduler(limits: .init(anticipation: .milliseconds(300)))
        scheduler.setSlots(1, for: "gpu")
        let polite = try await scheduler.acquire(request("polite"))
        let grants = Grants()
        _ = try await queue(scheduler, request("flood"), count: 2, into: grants)
        polite.release()
        // Kept for the polite student, who asks again at once: theirs, although the flood waited.
        let again = try await scheduler.acquire(request("polite"))
        #expect(again.waited == .zero)
        #expect(grants.order.isEmpty)
        again.release()
        // This time they do not ask again: after the moment, the flood gets the slot.
        try await eventually { grants.order == ["flood"] }
        // A student with requests of their own still waiting keeps nothing: the next goes to the line.
        let fifo = FairScheduler(limits: .init(anticipation: .milliseconds(300)), discipline: .fifo)
        fifo.setSlots(1, for: "gpu")
        let held = try await fifo.acquire(request("polite"))
        let fifoGrants = Grants()
        _ = try await queue(fifo, request("flood"), into: fifoGrants)
        held.release()
        try await eventually { fifoGrants.order == ["flood"] }
    }

    @Test func firstInFirstOutIsThereForComparison() async throws {
        let scheduler = FairScheduler(discipline: .fifo)
        scheduler.setSlots(1, for: "gpu")
        let grants = Grants()
        let holder = try await scheduler.acquire(request("holder"))
        _ = try await queue(scheduler, request("flood"), count: 3, into: grants)
        _ = try await queue(scheduler, request("polite"), into: grants)
        holder.release()
        for count in 1...4 {
            try await eventually { grants.order.count == count }
            grants.release(at: count - 1)
        }
        #expect(grants.order == ["flood", "flood", "flood", "polite"])
    }

    @Test func eachWaitingRequestHearsItsPlaceInLine() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(1, for: "gpu")
        let holder = try await scheduler.acquire(request("holder"))
        let heard = Heard()
        var tasks: [Task<FairScheduler.Lease, any Error>] = []
        for user in ["a", "b", "c"] {
            let before = scheduler.waitingCounts().total
            tasks.append(Task {
                try await scheduler.acquire(request(user)) { position in heard.add(user, position) }
            })
            try await eventually { scheduler.waitingCounts().total > before }
        }
        scheduler.publishPositions()
        #expect(heard.all == ["a": [0], "b": [1], "c": [2]])
        scheduler.publishPositions()  // nothing changed: nothing said again
        #expect(heard.all["c"] == [2])
        holder.release()
        let a = try await tasks[0].value
        scheduler.publishPositions()
        #expect(heard.all == ["a": [0], "b": [1, 0], "c": [2, 1]])
        a.release()
        _ = try await tasks[1].value
    }

    @Test func limitsRefuseWithAReason() async throws {
        let scheduler = FairScheduler(limits: .init(maxWaiting: 3, maxWaitingPerUser: 2, maxWait: .milliseconds(200)))
        scheduler.setSlots(1, for: "gpu")
        let holder = try await scheduler.acquire(request("holder"))
        let grants = Grants()
        let waits = try await queue(scheduler, request("ada"), count: 2, into: grants)
        await #expect(throws: FairScheduler.Refusal.tooManyWaiting(count: 2, limit: 2)) { try await scheduler.acquire(request("ada")) }
        _ = try await queue(scheduler, request("bob"), into: grants)
        await #expect(throws: FairScheduler.Refusal.queueFull(waiting: 3)) { try await scheduler.acquire(request("cy")) }
        await #expect(throws: FairScheduler.Refusal.noUpstream) { try await scheduler.acquire(request("cy", on: ["elsewhere"])) }
        try await Task.sleep(for: .milliseconds(250))
        scheduler.publishPositions()
        for wait in waits {
            let result = await wait.result
            guard case .failure(FairScheduler.Refusal.waitedTooLong(let waited)) = result else {
                Issue.record("expected a refusal for waiting too long, got \(result)")
                continue
            }
            #expect(waited >= .milliseconds(200))
        }
        #expect(scheduler.waitingCounts().total == 0)
        _ = holder
    }

    @Test func aCancelledWaitLeavesTheLineAndAFailedOverRequestGoesFirst() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(1, for: "gpu")
        let holder = try await scheduler.acquire(request("holder"))
        let grants = Grants()
        let tasks = try await queue(scheduler, request("ada", cap: 5), into: grants)
        _ = try await queue(scheduler, request("ada", cap: 5, first: true), into: grants)
        tasks[0].cancel()
        await #expect(throws: CancellationError.self) { try await tasks[0].value }
        #expect(scheduler.waitingCounts().total == 1)
        holder.release()
        try await eventually { grants.order == ["ada"] }
    }

    @Test func aRequestTakesTheFirstFreeUpstreamItMayUseAndAnUpstreamDownStrandsNobody() async throws {
        let scheduler = FairScheduler()
        scheduler.setSlots(1, for: "a")
        scheduler.setSlots(1, for: "b")
        let onA = try await scheduler.acquire(request("x", on: ["a", "b"]))
        #expect(onA.upstream == "a")
        let onB = try await scheduler.acquire(request("y", on: ["a", "b"]))
        #expect(onB.upstream == "b")
        // Only "a" serves this one: it waits for "a", and fails when "a" goes down.
        let grants = Grants()
        let waiting = try await queue(scheduler, request("z", on: ["a"]), into: grants)
        scheduler.setSlots(0, for: "a")
        await #expect(throws: FairScheduler.Refusal.noUpstream) { try await waiting[0].value }
        _ = (onA, onB)
    }
}

/// Waits until `condition` holds, at most ten seconds (the whole suite runs at once on two cores).
func eventually(_ condition: @Sendable () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    for _ in 0..<2000 {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("the condition did not hold within 10 s", sourceLocation: sourceLocation)
}
