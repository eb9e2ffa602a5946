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
        // Each used 10 tokens: 40 used, nothing reserved (settled at once: on PostgreSQL in one statement,
        // whose rows for the same student add up).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, id) in reserved.enumerated() {
                let ledger = ledgers[index % ledgers.count]
                group.addTask { try await ledger.settle(id, key: key, model: "m", inputTokens: 4, outputTokens: 6) }
            }
            try await group.waitForAll()
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

    // MARK: A request's limits together

    /// 12 requests at once, each asking a reservation of 30 of a budget of 100 and a place in a window of
    /// 3: the window admits 3, and a request it refuses reserves nothing, so 90 stay reserved (one more
    /// reservation fits) and the window holds exactly 3.
    func limitsTogetherCountOnlyWhatTheyAdmit(_ limiters: [any RequestLimiter], ledger: any BudgetLedger, rates: any RateWindow,
                                              user: String) async throws {
        let key = BudgetKey(userID: user, classID: "c1", day: "2027-01-15")
        let ask = LimitAsk(rate: LimitAsk.Rate(key: "rate:" + user, limit: 3, window: 60),
                           budget: LimitAsk.Budget(key: key, tokens: 30, budget: 100, expires: now.addingTimeInterval(600)))
        let decisions = try await withThrowingTaskGroup(of: LimitDecision.self) { group in
            for index in 0..<12 {
                let limiter = limiters[index % limiters.count]
                group.addTask { try await limiter.admit(ask, now: now) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let admitted = decisions.compactMap { if case .admitted(let id) = $0 { id } else { nil } }
        #expect(admitted.count == 3)
        #expect(Set(admitted).count == 3)
        for decision in decisions {
            if case .rateLimited(let refusal) = decision { #expect(refusal.sent == 3 && refusal.retryAfter == 60) }
        }
        #expect(decisions.contains { if case .rateLimited = $0 { true } else { false } })
        // 90 reserved: one more reservation of 10 fits, then the budget is spent; the window is full.
        let budgetOnly = LimitAsk(budget: LimitAsk.Budget(key: key, tokens: 10, budget: 100, expires: now.addingTimeInterval(600)))
        guard case .admitted(let more?) = try await limiters[0].admit(budgetOnly, now: now) else {
            Issue.record("a refused request kept a reservation"); return
        }
        #expect(try await limiters.last!.admit(budgetOnly, now: now) == .overBudget(used: 100))
        #expect(try await rates.admit(key: "rate:" + user, limit: 3, window: 60, now: now.addingTimeInterval(1))?.sent == 3)
        try await ledger.release(more)
    }

    @Test func aRequestsLimitsInOneProcessCountOnlyWhatTheyAdmit() async throws {
        try await StorageTests().withStorage { storage in
            let user = try await StorageTests().makeUser("limited", in: storage)
            let rates = LocalRateWindow(), ledger = LocalBudgetLedger(repository: storage.usage)
            try await limitsTogetherCountOnlyWhatTheyAdmit([SequentialLimiter(rates: rates, budgets: ledger)], ledger: ledger, rates: rates,
                                                           user: user.id)
        }
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aRequestsLimitsAcrossTwoReplicasCountOnlyWhatTheyAdmit() async throws {
        try await withReplicas { a, b in
            let user = try await StorageTests().makeUser("limited", in: a)
            try await limitsTogetherCountOnlyWhatTheyAdmit([a.shared.limits, b.shared.limits], ledger: b.shared.budgets, rates: a.shared.rates,
                                                           user: user.id)
        }
    }

    /// The tables every request writes skip the write-ahead log: made so, and altered so when an earlier
    /// version made them as ordinary tables, keeping what they hold.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func theLimitsTablesAreUnloggedAlsoInADatabaseOfAnEarlierVersion() async throws {
        let schema = TestDatabase.newSchema()
        func persistence(_ storage: Storage) async throws -> [String: String] {
            let database = try #require(storage.database)
            let rows = try await database.raw("""
                SELECT relname, relpersistence::TEXT AS persistence FROM pg_class
                WHERE oid IN (to_regclass('gseai_rate_buckets'), to_regclass('gseai_budget_reservations'))
                """).all()
            return try Dictionary(uniqueKeysWithValues: rows.map {
                (try $0.decode(column: "relname", as: String.self), try $0.decode(column: "persistence", as: String.self))
            })
        }
        let first = try await TestDatabase.openPostgres(schema: schema, logger: logger)
        do {
            #expect(try await persistence(first) == ["gseai_rate_buckets": "u", "gseai_budget_reservations": "u"])
            // As an earlier version left them: ordinary tables, a window with one request in it.
            #expect(try await first.shared.rates.admit(key: "rate:old", limit: 1, window: 60, now: now) == nil)
            let database = try #require(first.database)
            try await database.raw("ALTER TABLE gseai_rate_buckets SET LOGGED").run()
            try await database.raw("ALTER TABLE gseai_budget_reservations SET LOGGED").run()
            #expect(try await persistence(first) == ["gseai_rate_buckets": "p", "gseai_budget_reservations": "p"])
        } catch {
            try? await first.close()
            throw error
        }
        try await first.close()
        let second = try await TestDatabase.openPostgres(schema: schema, logger: logger)
        do {
            #expect(try await persistence(second) == ["gseai_rate_buckets": "u", "gseai_budget_reservations": "u"])
            // The window kept its request: the next one waits.
            let refusal = try await second.shared.rates.admit(key: "rate:old", limit: 1, window: 60, now: now.addingTimeInterval(1))
            #expect(refusal?.sent == 1)
        } catch {
            try? await second.close()
            throw error
        }
        try await second.close()
    }

    /// What the README promises for a crash of the database server, which empties the unlogged reservations:
    /// an answer admitted before it still writes its real usage when it ends, and the next check counts it.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func anAnswerWhoseReservationADatabaseCrashLostStillCountsItsUsage() async throws {
        try await withReplicas { a, b in
            let user = try await StorageTests().makeUser("crashed", in: a)
            let key = BudgetKey(userID: user.id, classID: "c1", day: "2027-01-15")
            guard case .reserved(let id) = try await a.shared.budgets.reserve(key, tokens: 30, budget: 100, now: now,
                                                                               expires: now.addingTimeInterval(600))
            else { Issue.record("the reservation was refused"); return }
            // What crash recovery does to an unlogged table.
            try await #require(a.database).raw("TRUNCATE gseai_budget_reservations").run()
            try await a.shared.budgets.settle(id, key: key, model: "m", inputTokens: 40, outputTokens: 50)
            #expect(try await b.usage.total(userID: user.id, classID: "c1", day: "2027-01-15") == 90)
            #expect(try await b.shared.budgets.reserve(key, tokens: 30, budget: 90, now: now, expires: now.addingTimeInterval(600))
                    == .spent(used: 90))
        }
    }

    // MARK: Leases (PostgreSQL): far from the limits, the database is asked once per lease

    func leases(_ storage: Storage) throws -> PostgresLeases {
        try #require(storage.shared.limits as? PostgresLeases)
    }

    /// A request in a class whose limits are far away: a rate of a million a minute, a budget of a billion.
    func generousAsk(_ userID: String) -> LimitAsk {
        LimitAsk(rate: LimitAsk.Rate(key: "rate:" + userID, limit: 1_000_000, window: 60),
                 budget: LimitAsk.Budget(key: BudgetKey(userID: userID, classID: "c1", day: "2027-01-15"), tokens: 64,
                                         budget: 1_000_000_000, expires: now.addingTimeInterval(600)))
    }

    /// A request reserving 10 tokens of a budget of 20,000 (leases of 50).
    func budgetAsk(_ userID: String) -> LimitAsk {
        LimitAsk(budget: LimitAsk.Budget(key: BudgetKey(userID: userID, classID: "c1", day: "2027-01-15"), tokens: 10, budget: 20_000,
                                         expires: now.addingTimeInterval(600)))
    }

    /// The tokens of a user's reservation rows, and the counts of a rate key's seconds.
    func reserved(_ storage: Storage, _ userID: String) async throws -> [Int] {
        try await #require(storage.database).raw("SELECT tokens FROM gseai_budget_reservations WHERE user_id = \(bind: userID)")
            .all(decodingColumn: "tokens", as: Int.self)
    }

    func counted(_ storage: Storage, _ rateKey: String) async throws -> [Int] {
        try await #require(storage.database).raw("SELECT count FROM gseai_rate_buckets WHERE key = \(bind: rateKey)")
            .all(decodingColumn: "count", as: Int.self)
    }

    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func farFromItsLimitsAStudentsRequestsTakeOneLeaseAndSettleInFlushes() async throws {
        try await withReplicas { a, _ in
            let user = try await StorageTests().makeUser("busy", in: a)
            let ask = generousAsk(user.id)
            let key = try #require(ask.budget).key
            #expect(PostgresLeases.size(of: ask) == 256)
            var reservations: [String] = []
            for _ in 0..<40 {
                guard case .admitted(let id?) = try await a.shared.limits.admit(ask, now: now) else {
                    Issue.record("a request far from its limits was refused"); return
                }
                reservations.append(id)
            }
            #expect(Set(reservations).count == 40)
            // In the database: one lease, 256 requests' events at a second after it ends and their tokens in one row.
            let database = try #require(a.database)
            let rows = try await reserved(a, user.id)
            #expect(rows == [256 * 64])
            let bucketSecond = Int(now.timeIntervalSince1970) + 2
            let buckets = try await database.raw("SELECT second, count FROM gseai_rate_buckets WHERE key = \(bind: "rate:" + user.id)").all()
                .map { try ($0.decode(column: "second", as: Int.self), $0.decode(column: "count", as: Int.self)) }
            #expect(buckets.map(\.0) == [bucketSecond] && buckets.map(\.1) == [256])
            // 38 settle (10 tokens each), one used nothing, one is still running: the flush writes the usage and
            // gives back what the lease did not spend, the running one's reservation stays.
            for id in reservations.prefix(38) {
                try await a.shared.budgets.settle(id, key: key, model: "m", inputTokens: 4, outputTokens: 6)
            }
            try await a.shared.budgets.release(reservations[38])
            try await leases(a).flush(endingEveryLease: true)
            #expect(try await a.usage.total(userID: user.id, classID: "c1", day: "2027-01-15") == 380)
            let held = try await reserved(a, user.id)
            #expect(held == [64])
            // The last flush is over: the running one's settlement is written at once.
            try await a.shared.budgets.settle(reservations[39], key: key, model: "m", inputTokens: 4, outputTokens: 6)
            #expect(try await a.usage.total(userID: user.id, classID: "c1", day: "2027-01-15") == 390)
            let requests = try await database.raw("SELECT requests FROM usage_daily WHERE user_id = \(bind: user.id)")
                .all(decodingColumn: "requests", as: Int.self)
            #expect(requests == [39])
            #expect(try await database.raw("SELECT id FROM gseai_budget_reservations WHERE user_id = \(bind: user.id)").all().isEmpty)
            let window = try await counted(a, "rate:" + user.id)
            #expect(window == [40])
            // Shut down, it decides in the database again, one request at a time.
            guard case .admitted(let alone?) = try await a.shared.limits.admit(ask, now: now) else {
                Issue.record("refused after the flush"); return
            }
            let aloneTokens = try await database.raw("SELECT tokens FROM gseai_budget_reservations WHERE id = \(bind: alone)")
                .all(decodingColumn: "tokens", as: Int.self)
            #expect(aloneTokens == [64])
        }
    }

    /// A lease's requests may take only what the budget would let them: the usage of those settled counts,
    /// input tokens too, not only their reservations. One request reserving 10 that used 410 (a long prompt)
    /// leaves room in a lease of 500 for 9 more; the next needs another lease.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aLeaseCountsTheUsageOfItsSettledRequestsNotOnlyTheirReservations() async throws {
        try await withReplicas { a, _ in
            let user = try await StorageTests().makeUser("wordy", in: a)
            let ask = budgetAsk(user.id)
            let key = try #require(ask.budget).key
            #expect(PostgresLeases.size(of: ask) == 50)
            let database = try #require(a.database)
            func rows() async throws -> Int {
                try await database.raw("SELECT id FROM gseai_budget_reservations WHERE user_id = \(bind: user.id)").all().count
            }
            guard case .admitted(let first?) = try await a.shared.limits.admit(ask, now: now) else { Issue.record("refused"); return }
            try await a.shared.budgets.settle(first, key: key, model: "m", inputTokens: 400, outputTokens: 10)
            for _ in 0..<9 {
                guard case .admitted(_?) = try await a.shared.limits.admit(ask, now: now) else { Issue.record("refused"); return }
            }
            #expect(try await rows() == 1)
            guard case .admitted(_?) = try await a.shared.limits.admit(ask, now: now) else { Issue.record("refused"); return }
            #expect(try await rows() == 2)
        }
    }

    /// A user deleted between a leased request and the flush: its usage went with the user, and the flushes
    /// go on for everyone else.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aUserDeletedBeforeTheFlushStopsNoFlush() async throws {
        try await withReplicas { a, _ in
            var users: [User] = []
            for name in ["gone", "staying"] { users.append(try await StorageTests().makeUser(name, in: a)) }
            func request(_ user: User) async throws {
                let ask = budgetAsk(user.id)
                let key = try #require(ask.budget).key
                guard case .admitted(let id?) = try await a.shared.limits.admit(ask, now: now) else { Issue.record("refused"); return }
                try await a.shared.budgets.settle(id, key: key, model: "m", inputTokens: 4, outputTokens: 6)
            }
            try await request(users[0])
            try await request(users[1])
            try await #require(a.database).raw("DELETE FROM users WHERE id = \(bind: users[0].id)").run()
            try await leases(a).flush(endingEveryLease: false)
            #expect(try await a.usage.total(userID: users[1].id, classID: "c1", day: "2027-01-15") == 10)
            try await request(users[1])
            try await leases(a).flush(endingEveryLease: true)
            #expect(try await a.usage.total(userID: users[1].id, classID: "c1", day: "2027-01-15") == 20)
        }
    }

    /// A flush sent again after an answer that never came (the connection broke after the commit) is not
    /// written twice: the second finds its id.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aFlushSentTwiceIsWrittenOnce() async throws {
        try await withReplicas { a, _ in
            let user = try await StorageTests().makeUser("twice", in: a)
            let database = try #require(a.database)
            let entries = JSONValue.array([.object([
                "user_id": .string(user.id), "class_id": .string("c1"), "day": .string("2027-01-15"), "model": .string("m"),
                "input": .string("4"), "output": .string("6"), "lease": .string("no-such-row"), "tokens": .string("10"),
            ])]).jsonString
            for id in ["flush-1", "flush-1", "flush-2"] {
                try await database.raw("SELECT gseai_lease_settle(\(bind: entries)::jsonb, \(bind: id))").run()
            }
            #expect(try await a.usage.total(userID: user.id, classID: "c1", day: "2027-01-15") == 20)
        }
    }

    /// Which failures of a flush mean "never written, and never will be" (tried entry by entry, the refused
    /// dropped) and which "maybe written, try again later" (kept with its id): real errors of the server.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func aFlushsFailureIsARefusalOnlyWhenTheStatementItselfWasRefused() async throws {
        try await withReplicas { a, _ in
            let database = try #require(a.database)
            do {
                try await database.raw("SELECT 1 / 0").run()
                Issue.record("a division by zero passed")
            } catch {
                #expect(PostgresLeases.refused(error), "\(String(reflecting: error))")
            }
            do {
                try await database.raw("SELECT pg_terminate_backend(pg_backend_pid())").run()
                Issue.record("the connection's end passed")
            } catch {
                #expect(!PostgresLeases.refused(error), "\(String(reflecting: error))")
            }
            #expect(!PostgresLeases.refused(CancellationError()))
        }
    }

    /// 100 requests at once: the first asks for a lease, the others wait for it rather than each going to the
    /// database; one lease serves all of them.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func requestsThatComeWhileALeaseIsAskedForWaitForIt() async throws {
        try await withReplicas { a, _ in
            let user = try await StorageTests().makeUser("crowd", in: a)
            let ask = generousAsk(user.id)
            let limits = a.shared.limits
            let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<100 {
                    group.addTask { if case .admitted(_?) = try await limits.admit(ask, now: now) { true } else { false } }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(admitted == 100)
            let rows = try await reserved(a, user.id)
            #expect(rows == [256 * 64])
            let window = try await counted(a, "rate:" + user.id)
            #expect(window == [256])
        }
    }

    /// 600 requests at once under a limit of 400 on two replicas, leases of 10: never more than 400, at most
    /// the two leases' 20 left unspent; once the leases are given back, the rest of the window is admitted
    /// exactly (too near the limit for a lease).
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func leasesOnTwoReplicasNeverPassARateLimitAndGiveBackWhatTheyDidNotSpend() async throws {
        try await withReplicas { a, b in
            let ask = LimitAsk(rate: LimitAsk.Rate(key: "rate:leased", limit: 400, window: 60))
            #expect(PostgresLeases.size(of: ask) == 10)
            let limiters = [a.shared.limits, b.shared.limits]
            func burst(_ count: Int) async throws -> Int {
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    for index in 0..<count {
                        let limiter = limiters[index % 2]
                        group.addTask { if case .admitted = try await limiter.admit(ask, now: now) { true } else { false } }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
            }
            let first = try await burst(600)
            #expect(first <= 400 && first >= 380, "\(first)")
            try await Task.sleep(for: PostgresLeases.lifetime + .milliseconds(100))
            try await leases(a).flush(endingEveryLease: false)
            try await leases(b).flush(endingEveryLease: false)
            let counted = try await #require(a.database).raw("SELECT COALESCE(SUM(count), 0)::BIGINT AS n FROM gseai_rate_buckets WHERE key = 'rate:leased'")
                .all(decodingColumn: "n", as: Int.self)
            #expect(counted == [first])
            let second = try await burst(400)
            #expect(first + second == 400, "\(first) + \(second)")
        }
    }

    /// A budget of 20,000 tokens, 10 reserved per request, leases of 50 requests: 3,000 requests at once on
    /// two replicas never reserve past the budget, and every admitted one's usage is written.
    @Test(.enabled(if: TestDatabase.postgresURL != nil))
    func leasesOnTwoReplicasNeverPassABudgetAndLoseNoUsage() async throws {
        try await withReplicas { a, b in
            let user = try await StorageTests().makeUser("leased", in: a)
            let ask = budgetAsk(user.id)
            let key = try #require(ask.budget).key
            #expect(PostgresLeases.size(of: ask) == 50)
            let replicas = [a, b]
            let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<3_000 {
                    let storage = replicas[index % 2]
                    group.addTask {
                        guard case .admitted(let id?) = try await storage.shared.limits.admit(ask, now: now) else { return 0 }
                        try await storage.shared.budgets.settle(id, key: key, model: "m", inputTokens: 4, outputTokens: 6)
                        return 1
                    }
                }
                return try await group.reduce(0, +)
            }
            // Admitted only while used and reserved were below 20,000, 10 at a time.
            #expect(admitted <= 2_000 && admitted >= 2_000 - 2 * 50, "\(admitted)")
            try await leases(a).flush(endingEveryLease: true)
            try await leases(b).flush(endingEveryLease: true)
            #expect(try await b.usage.total(userID: user.id, classID: "c1", day: "2027-01-15") == admitted * 10)
            #expect(try await #require(a.database).raw("SELECT id FROM gseai_budget_reservations").all().isEmpty)
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

/// The batches of concurrent callers.
@Suite("Statement batcher")
struct StatementBatcherTests {
    @Test func concurrentCallersShareBatchesAndEachGetsItsOwnAnswer() async throws {
        let sizes = Mutex<[Int]>([])
        let batcher = StatementBatcher<Int, Int>(largest: 8) { items in
            sizes.withLock { $0.append(items.count) }
            try await Task.sleep(for: .milliseconds(20))
            return items.map { $0 * 2 }
        }
        let answers = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for item in 0..<40 {
                group.addTask { (item, try await batcher.submit(item)) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(answers.count == 40)
        #expect(answers.allSatisfy { $0.value == $0.key * 2 })
        let batches = sizes.withLock { $0 }
        #expect(batches.reduce(0, +) == 40)
        #expect(batches.allSatisfy { $0 <= 8 })
        // While the first batch runs, the others gather: far fewer batches than callers.
        #expect(batches.count < 20, "\(batches)")
        // Alone, a caller is served at once in a batch of its own.
        #expect(try await batcher.submit(21) == 42)
        #expect(sizes.withLock { $0.last } == 1)
    }

    @Test func aFailedBatchFailsItsCallersOnlyAndTheNextRuns() async throws {
        struct Refused: Error {}
        let batcher = StatementBatcher<Int, Int> { items in
            if items.contains(13) { throw Refused() }
            return items
        }
        await #expect(throws: Refused.self) { try await batcher.submit(13) }
        #expect(try await batcher.submit(7) == 7)
        let wrong = StatementBatcher<Int, Int> { _ in [] }
        await #expect(throws: BatchAnswerMismatch.self) { try await wrong.submit(1) }
    }
}
