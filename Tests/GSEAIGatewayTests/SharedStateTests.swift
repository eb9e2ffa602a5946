import Foundation
import GSEAI
import Logging
import Synchronization
import Testing

@testable import GSEAIGateway

/// The state replicas share: exact across two storages on one PostgreSQL database (two replicas), and the
/// same rules in one process. The PostgreSQL cases run when `GSEAI_TEST_POSTGRES_URL` is set (`scripts/test`).
@Suite("Shared state: rate windows, budget reservations, change feed, replicas")
struct SharedStateTests {
    let logger = Logger(label: "SharedStateTests", factory: { _ in SwiftLogNoOpLogHandler() })
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    /// Two replicas' storages on one fresh schema.
    func withReplicas(_ body: (Storage, Storage) async throws -> Void) async throws {
        let schema = TestDatabase.newSchema()
        let a = try await TestDatabase.openPostgres(schema: schema, replicaURL: "http://127.0.0.1:1", logger: logger)
        let b: Storage
        do {
            b = try await TestDatabase.openPostgres(schema: schema, replicaURL: "http://127.0.0.1:2", logger: logger)
        } catch {
            try await a.close()
            throw error
        }
        do {
            try await body(a, b)
        } catch {
            try? await a.close()
            try? await b.close()
            throw error
        }
        try await a.close()
        try await b.close()
    }

    // MARK: Rate windows

    /// 30 requests at once, half through each replica, under a limit of 10: exactly 10 pass.
    func admitsExactly(_ windows: [any RateWindow]) async throws {
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<30 {
                let window = windows[index % windows.count]
                group.addTask { try await window.admit(key: "rate:u1", limit: 10, window: 60, now: now) == nil }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 10)
        let refusal = try #require(try await windows[0].admit(key: "rate:u1", limit: 10, window: 60, now: now.addingTimeInterval(20)))
        #expect(refusal.sent == 10)
        #expect(refusal.retryAfter == 40)
        // A minute later the window is empty again; another key was never touched.
        #expect(try await windows.last!.admit(key: "rate:u1", limit: 10, window: 60, now: now.addingTimeInterval(60)) == nil)
        #expect(try await windows.last!.admit(key: "rate:u2", limit: 1, window: 60, now: now) == nil)
        try await windows[0].reset(key: "rate:u2")
        #expect(try await windows.last!.admit(key: "rate:u2", limit: 1, window: 60, now: now) == nil)
    }

    @Test func aRateWindowInOneProcessAdmitsExactlyItsLimit() async throws {
        try await admitsExactly([LocalRateWindow()])
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aRateWindowAcrossTwoReplicasAdmitsExactlyItsLimit() async throws {
        try await withReplicas { a, b in try await admitsExactly([a.shared.rates, b.shared.rates]) }
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func passwordAttemptsAreCountedAcrossBothReplicas() async throws {
        try await withReplicas { a, b in
            let onA = LoginThrottle(limit: 2, window: .seconds(300), attempts: a.shared.rates)
            let onB = LoginThrottle(limit: 2, window: .seconds(300), attempts: b.shared.rates)
            #expect(try await onA.admit(username: "Alice", address: "10.0.0.1") == nil)
            #expect(try await onB.admit(username: "alice", address: "10.0.0.1") == nil)
            // The third guess, on either replica, waits.
            let wait = try #require(try await onA.admit(username: "alice", address: "10.0.0.1"))
            #expect(wait > .seconds(290) && wait <= .seconds(300))
            // Another address is its own count; a right password on one replica starts the count again on both.
            #expect(try await onB.admit(username: "alice", address: "10.0.0.2") == nil)
            try await onB.succeeded(username: "alice", address: "10.0.0.1")
            #expect(try await onA.admit(username: "alice", address: "10.0.0.1") == nil)
        }
    }

    // MARK: Budgets

    /// A budget of 100 tokens, each request reserving 30: four are admitted at once across both replicas
    /// (0, 30, 60, 90 are below 100), whatever the order; settling with less frees room again.
    func reservesExactly(_ ledgers: [any BudgetLedger], usage: any UsageRepository, user: String) async throws {
        let key = BudgetKey(userID: user, classID: "c1", day: "2027-01-15")
        let expires = now.addingTimeInterval(600)
        let decisions = try await withThrowingTaskGroup(of: BudgetDecision.self) { group in
            for index in 0..<12 {
                let ledger = ledgers[index % ledgers.count]
                group.addTask { try await ledger.reserve(key, tokens: 30, budget: 100, now: now, expires: expires) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let reserved = decisions.compactMap { if case .reserved(let id) = $0 { id } else { nil } }
        #expect(reserved.count == 4)
        #expect(decisions.contains(.spent(used: 120)))
        // Each used 10 tokens: 40 used, nothing reserved.
        for (index, id) in reserved.enumerated() {
            try await ledgers[index % ledgers.count].settle(id, key: key, model: "m", inputTokens: 4, outputTokens: 6)
        }
        #expect(try await usage.total(userID: user, classID: "c1", day: "2027-01-15") == 40)
        // Two more fit (40 + 30 = 70 < 100, then 70 + 30 = 100 is not below): a released one gives its room back.
        guard case .reserved(let one) = try await ledgers[0].reserve(key, tokens: 30, budget: 100, now: now, expires: expires),
              case .reserved = try await ledgers.last!.reserve(key, tokens: 30, budget: 100, now: now, expires: expires)
        else { Issue.record("two more reservations were refused"); return }
        #expect(try await ledgers[0].reserve(key, tokens: 30, budget: 100, now: now, expires: expires) == .spent(used: 100))
        try await ledgers.last!.release(one)
        guard case .reserved = try await ledgers[0].reserve(key, tokens: 30, budget: 100, now: now, expires: expires) else {
            Issue.record("a released reservation did not give its room back"); return
        }
        // Reservations of a replica that died expire.
        #expect(try await ledgers[0].reserve(key, tokens: 30, budget: 100, now: expires, expires: expires + 600) != .spent(used: 100))
    }

    @Test func aBudgetInOneProcessReservesExactly() async throws {
        try await StorageTests().withStorage { storage in
            let user = try await StorageTests().makeUser("budgeted", in: storage)
            try await reservesExactly([LocalBudgetLedger(repository: storage.usage)], usage: storage.usage, user: user.id)
        }
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aBudgetAcrossTwoReplicasReservesExactly() async throws {
        try await withReplicas { a, b in
            let user = try await StorageTests().makeUser("budgeted", in: a)
            try await reservesExactly([a.shared.budgets, b.shared.budgets], usage: b.usage, user: user.id)
        }
    }

    // MARK: Changes and replicas

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aChangeOnOneReplicaIsHeardOnTheOtherWithin100Milliseconds() async throws {
        try await withReplicas { a, b in
            let heard = Mutex<[(topic: ChangeTopic, at: ContinuousClock.Instant)]>([])
            b.shared.changes.subscribe { topic in heard.withLock { $0.append((topic, .now)) } }
            // B's listener connects in the background: once it hears A, it listens.
            for _ in 0..<100 where !heard.withLock({ $0.contains { $0.topic == .classes } }) {
                await a.shared.changes.publish(.classes)
                try await Task.sleep(for: .milliseconds(100))
            }
            heard.withLock { $0.removeAll() }
            let sent = ContinuousClock.now
            await a.shared.changes.publish(.accounts)
            try await eventually { heard.withLock { $0.contains { $0.topic == .accounts } } }
            let at = try #require(heard.withLock { $0.first { $0.topic == .accounts }?.at })
            #expect(at - sent < .milliseconds(100), "\(at - sent)")
        }
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aStartingReplicaSparesTheAnswersOfLiveOnesAndInterruptsTheDeads() async throws {
        try await withReplicas { a, b in
            let user = try await StorageTests().makeUser("writer", in: a)
            let conversation = Conversation(userID: user.id, title: "t", model: "m")
            try await a.conversations.create(conversation)
            var live = StoredMessage(conversationID: conversation.id, role: "assistant", text: "", status: .streaming)
            live.replica = a.shared.replicas.id
            live = try await a.messages.append(live)
            var orphan = StoredMessage(conversationID: conversation.id, role: "assistant", text: "", status: .streaming)
            orphan.replica = "a-replica-that-died"
            orphan = try await a.messages.append(orphan)
            let ids = try #require(try await b.shared.replicas.liveReplicaIDs())
            #expect(Set(ids) == [a.shared.replicas.id, b.shared.replicas.id])
            #expect(try await b.shared.replicas.liveReplica(a.shared.replicas.id)?.url == "http://127.0.0.1:1")
            #expect(try await b.messages.markStreamingAsInterrupted(sparing: ids) == 1)
            #expect(try await b.messages.find(id: orphan.id)?.status == .interrupted)
            #expect(try await b.messages.find(id: live.id)?.status == .streaming)
            #expect(try await b.messages.find(id: live.id)?.replica == a.shared.replicas.id)
            // A replica that stops says so: its answers are no longer spared.
            try await a.close()
            #expect(try await b.shared.replicas.liveReplica(a.shared.replicas.id) == nil)
        }
    }
}
