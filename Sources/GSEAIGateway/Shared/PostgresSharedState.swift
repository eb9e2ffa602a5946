import Foundation
import GSEAIFormats
import Logging
import PostgresNIO
import SQLKit
import Synchronization

/// The shared state of several replicas, in their PostgreSQL database: the limits' decisions are one
/// function that takes the advisory locks of its keys for the transaction, so that replicas deciding at the
/// same moment decide one after the other, and the decisions of concurrent requests go in one statement;
/// changes are announced with `NOTIFY`.
final class PostgresSharedState: Sendable {
    /// Tables and functions of the shared state, PostgreSQL only, made idempotently at every start (under
    /// the migrations' lock). They hold nothing that must survive a restart of every replica.
    ///
    /// The rate windows and the budget reservations are `UNLOGGED`: written by every request, they skip the
    /// write-ahead log and its flush at every commit (measured in bench/README.md). A crash of the database
    /// server (not of a replica) empties them: the rate windows start again, and the answers admitted before
    /// it are no longer reserved (their settlements still write their real usage), so a budget can then be
    /// passed by at most what those answers were allowed, the bound the limits keep anyway.
    static let schema: [SQLQueryString] = [
        "DROP FUNCTION IF EXISTS gseai_rate_admit(TEXT, INTEGER, DOUBLE PRECISION, DOUBLE PRECISION)",
        "DROP TABLE IF EXISTS gseai_rate_events",
        // (`gseai_rate_admit(TEXT, BIGINT, …)`, `gseai_budget_reserve` and `gseai_admit`, which earlier versions
        // called, are left in place for replicas of an earlier version during a rolling upgrade: they take the
        // same locks. `gseai_admit_v2` has a name of its own because it reads a lease's terms, which
        // `gseai_admit` ignores: a replica of the earlier version that starts again rewrites only its own.)
        // A window counts admitted events per whole second (at most `window` rows per key, whatever the limit).
        """
        CREATE UNLOGGED TABLE IF NOT EXISTS gseai_rate_buckets (
            key TEXT NOT NULL,
            second BIGINT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (key, second)
        )
        """,
        """
        CREATE UNLOGGED TABLE IF NOT EXISTS gseai_budget_reservations (
            id TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL,
            class_id TEXT NOT NULL,
            day TEXT NOT NULL,
            tokens BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS gseai_budget_reservations_key ON gseai_budget_reservations (user_id, class_id, day)",
        // Made by an earlier version as ordinary tables: altered once (a rewrite of a few rows), not at every start.
        """
        DO $$
        DECLARE t TEXT;
        BEGIN
            FOREACH t IN ARRAY ARRAY['gseai_rate_buckets', 'gseai_budget_reservations'] LOOP
                IF (SELECT relpersistence FROM pg_class WHERE oid = to_regclass(t)) = 'p' THEN
                    EXECUTE format('ALTER TABLE %I SET UNLOGGED', t);
                END IF;
            END LOOP;
        END $$
        """,
        // The advisory locks of rate windows (their keys) and budgets (`user|class|day`) for the transaction, in
        // one order (of their hashes, as `gseai_admit` of an earlier version takes them): every statement that
        // touches the limits takes its keys' locks through this first, before any row, so that two never wait
        // for each other in a circle.
        """
        CREATE OR REPLACE FUNCTION gseai_lock_keys(p_rate TEXT[], p_budget TEXT[]) RETURNS VOID LANGUAGE plpgsql AS $$
        DECLARE h INTEGER;
        BEGIN
            FOR h IN
                SELECT DISTINCT k.h FROM (
                    SELECT hashtext('gseai_rate:' || u.k) AS h FROM unnest(p_rate) AS u(k)
                    UNION ALL
                    SELECT hashtext('gseai_budget:' || u.k) FROM unnest(p_budget) AS u(k)
                ) k ORDER BY k.h
            LOOP
                PERFORM pg_advisory_xact_lock(h);
            END LOOP;
        END $$
        """,
        // The asks of a batch (a JSON array, see `PostgresRequestLimiter`), decided in their order; one row per
        // ask, in the same order. Every key's advisory lock is taken first (`gseai_lock_keys`). A budget is
        // checked first (what is used and reserved, below the budget), then the rate window (an event of second
        // b counts while now - b < window); refused by either, nothing is counted or reserved. A lease
        // (`PostgresLeases`) asks for more: `count` events at the second `at` (later than now, so that each
        // counts a full window after its request) when `room` more still fit, and `tokens` reserved when `need`
        // more still fit in the budget.
        """
        CREATE OR REPLACE FUNCTION gseai_admit_v2(p_asks JSONB)
        RETURNS TABLE (outcome TEXT, sent BIGINT, oldest DOUBLE PRECISION, used BIGINT) LANGUAGE plpgsql AS $$
        DECLARE a JSONB; p_now DOUBLE PRECISION; n BIGINT; o BIGINT; total BIGINT;
        BEGIN
            PERFORM gseai_lock_keys(
                ARRAY(SELECT x->>'rate_key' FROM jsonb_array_elements(p_asks) x WHERE x ? 'rate_key'),
                ARRAY(SELECT (x->>'user') || '|' || (x->>'class') || '|' || (x->>'day') FROM jsonb_array_elements(p_asks) x WHERE x ? 'user'));
            FOR a IN SELECT e.value FROM jsonb_array_elements(p_asks) WITH ORDINALITY e ORDER BY e.ordinality LOOP
                p_now := (a->>'now')::DOUBLE PRECISION;
                IF a ? 'user' THEN
                    DELETE FROM gseai_budget_reservations r
                        WHERE r.user_id = a->>'user' AND r.class_id = a->>'class' AND r.day = a->>'day' AND r.expires_at <= p_now;
                    SELECT COALESCE((SELECT SUM(u.input_tokens + u.output_tokens) FROM usage_daily u
                                        WHERE u.user_id = a->>'user' AND u.class_id = a->>'class' AND u.day = a->>'day'), 0)
                         + COALESCE((SELECT SUM(r.tokens) FROM gseai_budget_reservations r
                                        WHERE r.user_id = a->>'user' AND r.class_id = a->>'class' AND r.day = a->>'day'), 0)
                        INTO total;
                    IF total >= (a->>'budget')::BIGINT OR (a ? 'need' AND total + (a->>'need')::BIGINT > (a->>'budget')::BIGINT) THEN
                        RETURN QUERY SELECT 'budget'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION, total;
                        CONTINUE;
                    END IF;
                END IF;
                IF a ? 'rate_key' THEN
                    DELETE FROM gseai_rate_buckets b
                        WHERE b.key = a->>'rate_key' AND b.second <= p_now - (a->>'window')::DOUBLE PRECISION;
                    SELECT COALESCE(SUM(b.count), 0) INTO n FROM gseai_rate_buckets b WHERE b.key = a->>'rate_key';
                    IF n >= (a->>'limit')::BIGINT OR (a ? 'room' AND n + (a->>'room')::BIGINT > (a->>'limit')::BIGINT) THEN
                        -- The second whose events must age out to make room for one more.
                        SELECT t.second INTO o FROM (
                            SELECT b.second, SUM(b.count) OVER (ORDER BY b.second) AS running
                                FROM gseai_rate_buckets b WHERE b.key = a->>'rate_key'
                        ) t WHERE t.running >= n - (a->>'limit')::BIGINT + 1 ORDER BY t.second LIMIT 1;
                        RETURN QUERY SELECT 'rate'::TEXT, n, o::DOUBLE PRECISION, NULL::BIGINT;
                        CONTINUE;
                    END IF;
                    INSERT INTO gseai_rate_buckets AS b (key, second, count)
                        VALUES (a->>'rate_key', COALESCE((a->>'at')::BIGINT, floor(p_now)::BIGINT), COALESCE((a->>'count')::BIGINT, 1))
                        ON CONFLICT (key, second) DO UPDATE SET count = b.count + EXCLUDED.count;
                END IF;
                IF a ? 'user' THEN
                    INSERT INTO gseai_budget_reservations VALUES (a->>'id', a->>'user', a->>'class', a->>'day', (a->>'tokens')::BIGINT,
                                                                  (a->>'expires')::DOUBLE PRECISION);
                END IF;
                RETURN QUERY SELECT 'admitted'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION, NULL::BIGINT;
            END LOOP;
        END $$
        """,
        // What leases give back (a JSON array, see `PostgresLeases`): the usage of the answers they admitted
        // (`model` …), each with its tokens taken off its lease's reservation (`lease`, `tokens`, and the
        // budget's `user_id`, `class_id`, `day`), and the events a lease did not spend (`rate_key`, `at`,
        // `slots`). A lease's reservation goes when nothing of it is left. Every key's advisory lock is taken
        // first (`gseai_lock_keys`), before any row: an admission holds its keys' locks while it deletes expired
        // reservations, a lease's row among them.
        // The usage of a user deleted meanwhile is dropped (it went with the user), not retried for ever.
        // Each flush has an id, recorded in its own transaction: a flush retried after an answer that never
        // came (it may have been written) is not written twice. Ids are kept an hour.
        """
        CREATE TABLE IF NOT EXISTS gseai_lease_flushes (
            id TEXT NOT NULL PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS gseai_lease_flushes_at ON gseai_lease_flushes (at)",
        """
        CREATE OR REPLACE FUNCTION gseai_lease_settle(p JSONB, p_id TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
        DECLARE r RECORD;
        BEGIN
            INSERT INTO gseai_lease_flushes (id, at) VALUES (p_id, extract(epoch FROM now())) ON CONFLICT (id) DO NOTHING;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            DELETE FROM gseai_lease_flushes WHERE at < extract(epoch FROM now()) - 3600;
            PERFORM gseai_lock_keys(
                ARRAY(SELECT x->>'rate_key' FROM jsonb_array_elements(p) x WHERE x ? 'slots'),
                ARRAY(SELECT (x->>'user_id') || '|' || (x->>'class_id') || '|' || (x->>'day') FROM jsonb_array_elements(p) x WHERE x ? 'lease'));
            INSERT INTO usage_daily (user_id, day, class_id, model, requests, input_tokens, output_tokens)
            SELECT x->>'user_id', x->>'day', x->>'class_id', x->>'model', COUNT(*), SUM((x->>'input')::BIGINT), SUM((x->>'output')::BIGINT)
                FROM jsonb_array_elements(p) x WHERE x ? 'model' AND EXISTS (SELECT 1 FROM users u WHERE u.id = x->>'user_id')
                GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (user_id, day, class_id, model) DO UPDATE SET
                requests = usage_daily.requests + excluded.requests,
                input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                output_tokens = usage_daily.output_tokens + excluded.output_tokens;
            FOR r IN SELECT x->>'lease' AS id, SUM((x->>'tokens')::BIGINT) AS tokens
                        FROM jsonb_array_elements(p) x WHERE x ? 'lease' GROUP BY 1 ORDER BY 1 LOOP
                UPDATE gseai_budget_reservations SET tokens = tokens - r.tokens WHERE id = r.id;
                DELETE FROM gseai_budget_reservations WHERE id = r.id AND tokens <= 0;
            END LOOP;
            FOR r IN SELECT x->>'rate_key' AS key, (x->>'at')::BIGINT AS second, SUM((x->>'slots')::BIGINT) AS slots
                        FROM jsonb_array_elements(p) x WHERE x ? 'slots' GROUP BY 1, 2 ORDER BY 1, 2 LOOP
                UPDATE gseai_rate_buckets SET count = count - r.slots WHERE key = r.key AND second = r.second;
                DELETE FROM gseai_rate_buckets WHERE key = r.key AND second = r.second AND count <= 0;
            END LOOP;
        END $$
        """,
        """
        CREATE TABLE IF NOT EXISTS gseai_replicas (
            id TEXT NOT NULL PRIMARY KEY,
            url TEXT,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL
        )
        """,
    ]

    /// A replica whose heartbeat is older than this is dead: its answers are interrupted.
    static let replicaLifetime: Double = 15
    /// How often a replica says it is alive.
    static let heartbeatInterval: Duration = .seconds(3)

    let state: SharedState
    private let leases: PostgresLeases
    private let tasks: Mutex<[Task<Void, Never>]>
    private let database: any SQLDatabase
    /// This replica's id, when it is registered.
    private let replica: String?

    private init(state: SharedState, leases: PostgresLeases, tasks: [Task<Void, Never>], database: any SQLDatabase, replica: String?) {
        self.state = state
        self.leases = leases
        self.tasks = Mutex(tasks)
        self.database = database
        self.replica = replica
    }

    /// Registers this replica, and starts its heartbeat and its listener for changes.
    static func start(client: PostgresClient, database: any SQLDatabase, replica: String, replicaURL: String?, channel: String,
                      logger: Logger) async throws -> PostgresSharedState {
        let registry = PostgresReplicaRegistry(database: database, id: replica, url: replicaURL)
        let feed = PostgresChangeFeed(database: database, channel: channel)
        var tasks = [Task { await feed.listen(client: client, logger: logger) }]
        if replicaURL != nil {
            try await registry.beat()
            tasks.append(Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: heartbeatInterval)
                    do { try await registry.beat() } catch { logger.warning("replica heartbeat failed", metadata: ["error": "\(error)"]) }
                }
            })
        }
        let limiter = PostgresRequestLimiter(client: client, logger: logger)
        let leases = PostgresLeases(limiter: limiter, ledger: PostgresBudgetLedger(limiter: limiter, client: client, database: database, logger: logger),
                                    client: client, logger: logger)
        tasks.append(Task { await leases.run() })
        let state = SharedState(rates: PostgresRateWindow(limiter: limiter, database: database), budgets: leases, limits: leases,
                                changes: feed, replicas: registry)
        return PostgresSharedState(state: state, leases: leases, tasks: tasks, database: database, replica: replicaURL == nil ? nil : replica)
    }

    /// Stops the heartbeat and the listener, and says this replica is gone (its answers have ended).
    func stop() async {
        let tasks = self.tasks.withLock { tasks in defer { tasks = [] }; return tasks }
        for task in tasks { task.cancel() }
        // A listener in the middle of leasing or reading its connection may not notice at once: the close
        // does not wait for it for ever.
        for task in tasks { await task.value(within: .seconds(3)) }
        // The usage of leased requests not written yet, and what the leases did not spend.
        let leases = self.leases
        await Task { await leases.flush(endingEveryLease: true) }.value(within: .seconds(3))
        // Bounded too: with no connection to be had from the pool (one still held by a listener that did not
        // stop in time), this waited for ever and the shutdown with it. The row is then left for the other
        // replicas' sweep, as after a crash.
        if let replica {
            let database = self.database
            await Task { try? await database.raw("DELETE FROM gseai_replicas WHERE id = \(bind: replica)").run() }.value(within: .seconds(3))
        }
    }
}

/// The rate windows and budgets of every replica, decided in the database: the asks of concurrent requests
/// go together in one statement (``StatementBatcher``), one round trip for all of them.
final class PostgresRequestLimiter: RequestLimiter {
    private let batcher: StatementBatcher<Ask, LimitDecision>

    /// One ask as the statement reads it, with the reservation's id made here.
    struct Ask: Sendable {
        var ask: LimitAsk
        var now: Date
        var reservation: String?
        /// A lease's ask instead of one request's (`PostgresLeases`).
        var lease: LeaseTerms?
    }

    /// What a lease takes when the limits allow it: `slots` events counted at the second `at`, when
    /// `room` events still fit in the window; the budget ask's tokens reserved, when `need` tokens still fit.
    struct LeaseTerms: Sendable, Equatable {
        var slots: Int
        var at: Int64
        var room: Int
        var need: Int
    }

    init(client: PostgresClient, logger: Logger) {
        batcher = StatementBatcher { asks in
            let json = JSONValue.array(asks.map(Self.json)).jsonString
            var decisions: [LimitDecision] = []
            decisions.reserveCapacity(asks.count)
            for try await (outcome, sent, oldest, used) in try await client.execute(AdmitStatement(json: json), logger: logger) {
                let ask = asks[min(decisions.count, asks.count - 1)]
                switch outcome {
                case "budget":
                    decisions.append(.overBudget(used: Int(used ?? 0)))
                case "rate":
                    let window = ask.ask.rate?.window ?? 0
                    let wait = oldest.map { window - (ask.now.unixSeconds - $0) } ?? window
                    decisions.append(.rateLimited(RateRefusal(sent: Int(sent ?? 0), retryAfter: wait)))
                default:
                    decisions.append(.admitted(reservation: ask.reservation))
                }
            }
            return decisions
        }
    }

    /// The asks of a batch (a JSON array), one row of decision each in their order. Prepared once per
    /// connection: parsing and planning it each time cost more than running it.
    struct AdmitStatement: JSONBatchStatement {
        static let name = "gseai_admit_v2"
        static let sql = "SELECT outcome, sent, oldest, used FROM gseai_admit_v2($1::jsonb)"
        typealias Row = (String, Int64?, Double?, Int64?)
        var json: String

        func decodeRow(_ row: PostgresRow) throws -> Row {
            try row.decode(Row.self)
        }
    }

    func admit(_ ask: LimitAsk, now: Date) async throws -> LimitDecision {
        try await batcher.submit(Ask(ask: ask, now: now, reservation: ask.budget == nil ? nil : UUID().uuidString))
    }

    /// A lease on the limits of `ask`: refused (and nothing taken) unless its terms fit with room to spare.
    func lease(_ ask: LimitAsk, terms: LeaseTerms, now: Date) async throws -> LimitDecision {
        try await batcher.submit(Ask(ask: ask, now: now, reservation: ask.budget == nil ? nil : UUID().uuidString, lease: terms))
    }

    /// Integers as strings: a budget may be beyond a double's exact integers.
    private static func json(_ ask: Ask) -> JSONValue {
        var object: [String: JSONValue] = ["now": .number(ask.now.unixSeconds)]
        if let rate = ask.ask.rate {
            object["rate_key"] = .string(rate.key)
            object["limit"] = .string(String(rate.limit))
            object["window"] = .number(rate.window)
            if let lease = ask.lease {
                object["count"] = .string(String(lease.slots))
                object["at"] = .string(String(lease.at))
                object["room"] = .string(String(lease.room))
            }
        }
        if let budget = ask.ask.budget, let reservation = ask.reservation {
            object["id"] = .string(reservation)
            object["user"] = .string(budget.key.userID)
            object["class"] = .string(budget.key.classID)
            object["day"] = .string(budget.key.day)
            object["tokens"] = .string(String(max(0, budget.tokens)))
            object["budget"] = .string(String(budget.budget))
            object["expires"] = .number(budget.expires.unixSeconds)
            if let lease = ask.lease { object["need"] = .string(String(lease.need)) }
        }
        return .object(object)
    }
}

/// A prepared statement whose one parameter is a batch as a JSON array (`$1::jsonb`). Each names itself
/// (`name`): PostgresNIO's default name reflects the type's full name at every execution.
protocol JSONBatchStatement: PostgresPreparedStatement {
    var json: String { get }
}

extension JSONBatchStatement {
    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(json)
        return bindings
    }
}

/// The password attempts of every replica: one window of the same statement as a request's limits.
struct PostgresRateWindow: RateWindow {
    let limiter: PostgresRequestLimiter
    let database: any SQLDatabase

    func admit(key: String, limit: Int, window: Double, now: Date) async throws -> RateRefusal? {
        let decision = try await limiter.admit(LimitAsk(rate: LimitAsk.Rate(key: key, limit: limit, window: window)), now: now)
        guard case .rateLimited(let refusal) = decision else { return nil }
        return refusal
    }

    func reset(key: String) async throws {
        try await database.raw("DELETE FROM gseai_rate_buckets WHERE key = \(bind: key)").run()
    }
}

struct PostgresBudgetLedger: BudgetLedger {
    let limiter: PostgresRequestLimiter
    let database: any SQLDatabase
    /// The settlements of concurrent requests, written together.
    let settlements: StatementBatcher<Settlement, Void>

    struct Settlement: Sendable {
        var reservation: String
        var key: BudgetKey
        var model: String
        var inputTokens: Int
        var outputTokens: Int
    }

    init(limiter: PostgresRequestLimiter, client: PostgresClient, database: any SQLDatabase, logger: Logger) {
        self.limiter = limiter
        self.database = database
        settlements = StatementBatcher { batch in
            let json = JSONValue.array(batch.map { settlement in
                .object(["id": .string(settlement.reservation), "user_id": .string(settlement.key.userID), "class_id": .string(settlement.key.classID),
                         "day": .string(settlement.key.day), "model": .string(settlement.model),
                         "input": .string(String(settlement.inputTokens)), "output": .string(String(settlement.outputTokens))])
            }).jsonString
            for try await _ in try await client.execute(SettleStatement(json: json), logger: logger) {}
            return Array(repeating: (), count: batch.count)
        }
    }

    /// The settlements of a batch (a JSON array): one statement, the reservations' delete and the usage's
    /// upsert together (a transaction of several round trips would hold the student's usage row, the same
    /// for every request of the day), its rows in one order so that two replicas' batches never wait for
    /// each other in a circle. Prepared once per connection.
    struct SettleStatement: JSONBatchStatement {
        static let name = "gseai_settle"
        static let sql = """
            WITH settled AS (
                SELECT * FROM jsonb_to_recordset($1::jsonb)
                    AS s(id TEXT, user_id TEXT, class_id TEXT, day TEXT, model TEXT, input BIGINT, output BIGINT)
            ), ended AS (
                DELETE FROM gseai_budget_reservations WHERE id IN (SELECT id FROM settled)
            )
            INSERT INTO usage_daily (user_id, day, class_id, model, requests, input_tokens, output_tokens)
            SELECT user_id, day, class_id, model, COUNT(*), SUM(input), SUM(output) FROM settled
                GROUP BY user_id, day, class_id, model ORDER BY user_id, day, class_id, model
            ON CONFLICT (user_id, day, class_id, model) DO UPDATE SET
                requests = usage_daily.requests + excluded.requests,
                input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                output_tokens = usage_daily.output_tokens + excluded.output_tokens
            """
        typealias Row = Void
        var json: String

        func decodeRow(_ row: PostgresRow) throws {}
    }

    func reserve(_ key: BudgetKey, tokens: Int, budget: Int, now: Date, expires: Date) async throws -> BudgetDecision {
        let ask = LimitAsk(budget: LimitAsk.Budget(key: key, tokens: tokens, budget: budget, expires: expires))
        switch try await limiter.admit(ask, now: now) {
        case .admitted(let reservation?): return .reserved(id: reservation)
        case .overBudget(let used): return .spent(used: used)
        case .admitted(nil), .rateLimited: throw StorageError.notFound
        }
    }

    /// The usage is written now, not once a second: the other replicas' next check must see it.
    func settle(_ reservation: String, key: BudgetKey, model: String, inputTokens: Int, outputTokens: Int) async throws {
        try await settlements.submit(Settlement(reservation: reservation, key: key, model: model, inputTokens: inputTokens,
                                                outputTokens: outputTokens))
    }

    func release(_ reservation: String) async throws {
        try await database.raw("DELETE FROM gseai_budget_reservations WHERE id = \(bind: reservation)").run()
    }
}

/// `NOTIFY` to announce, one listening connection per replica to hear.
final class PostgresChangeFeed: ChangeFeed {
    private let database: any SQLDatabase
    private let channel: String
    private let handlers = Mutex<[@Sendable (ChangeTopic) -> Void]>([])

    init(database: any SQLDatabase, channel: String) {
        self.database = database
        self.channel = channel
    }

    func publish(_ topic: ChangeTopic) async {
        // Told here at once, whatever the database does: this replica's next request must see the change.
        deliver(topic)
        do {
            try await database.raw("SELECT pg_notify(\(bind: channel), \(bind: topic.rawValue))").run()
        } catch {
            database.logger.warning("could not announce a change to the other replicas", metadata: ["error": "\(error)"])
        }
    }

    func subscribe(_ handler: @escaping @Sendable (ChangeTopic) -> Void) {
        handlers.withLock { $0.append(handler) }
    }

    private func deliver(_ topic: ChangeTopic) {
        for handler in handlers.withLock({ $0 }) { handler(topic) }
    }

    /// Listens until cancelled, reconnecting after a failure; after each (re)connection every cache is
    /// forgotten, since changes may have come meanwhile.
    func listen(client: PostgresClient, logger: Logger) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: channel) { notifications in
                        for topic in ChangeTopic.allCases { deliver(topic) }
                        for try await notification in notifications {
                            if let topic = ChangeTopic(rawValue: notification.payload) { deliver(topic) }
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("listening for changes failed; caches expire on their own until it is back", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// Replicas say they are alive every few seconds; one whose word is older than ``PostgresSharedState/replicaLifetime``
/// is dead.
struct PostgresReplicaRegistry: ReplicaRegistry {
    let database: any SQLDatabase
    let id: String
    let url: String?

    func beat() async throws {
        let now = Date().unixSeconds
        try await database.raw("""
            INSERT INTO gseai_replicas (id, url, started_at, heartbeat_at) VALUES (\(bind: id), \(bind: url), \(bind: now), \(bind: now))
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, url = EXCLUDED.url
            """).run()
    }

    func liveReplica(_ id: String) async throws -> ReplicaInfo? {
        let since = Date().unixSeconds - PostgresSharedState.replicaLifetime
        guard let row = try await database.raw("""
            SELECT id, url FROM gseai_replicas WHERE id = \(bind: id) AND heartbeat_at > \(bind: since)
            """).first() else { return nil }
        return ReplicaInfo(id: try row.decode(column: "id", as: String.self), url: try row.decode(column: "url", as: String?.self))
    }

    func liveReplicaIDs() async throws -> [String]? {
        let since = Date().unixSeconds - PostgresSharedState.replicaLifetime
        return try await database.raw("SELECT id FROM gseai_replicas WHERE heartbeat_at > \(bind: since)").all(decodingColumn: "id", as: String.self)
    }
}
