import Foundation
import Logging
import PostgresNIO
import SQLKit
import Synchronization

/// The shared state of several replicas, in their PostgreSQL database: each decision is one statement (a
/// function that takes an advisory lock on its key for the transaction), so that replicas deciding at the
/// same moment decide one after the other; changes are announced with `NOTIFY`.
final class PostgresSharedState: Sendable {
    /// Tables and functions of the shared state, PostgreSQL only, made idempotently at every start (under
    /// the migrations' lock). They hold nothing that must survive a restart of every replica.
    static let schema: [SQLQueryString] = [
        // A window counts admitted events per whole second (at most `window` rows per key, whatever the limit):
        // an event of second b counts while now - b < window.
        "DROP FUNCTION IF EXISTS gseai_rate_admit(TEXT, INTEGER, DOUBLE PRECISION, DOUBLE PRECISION)",
        "DROP TABLE IF EXISTS gseai_rate_events",
        """
        CREATE TABLE IF NOT EXISTS gseai_rate_buckets (
            key TEXT NOT NULL,
            second BIGINT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (key, second)
        )
        """,
        """
        CREATE OR REPLACE FUNCTION gseai_rate_admit(p_key TEXT, p_limit BIGINT, p_window DOUBLE PRECISION, p_now DOUBLE PRECISION)
        RETURNS TABLE (sent BIGINT, oldest DOUBLE PRECISION) LANGUAGE plpgsql AS $$
        DECLARE n BIGINT; o BIGINT;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('gseai_rate:' || p_key));
            DELETE FROM gseai_rate_buckets b WHERE b.key = p_key AND b.second <= p_now - p_window;
            SELECT COALESCE(SUM(b.count), 0) INTO n FROM gseai_rate_buckets b WHERE b.key = p_key;
            IF n >= p_limit THEN
                -- The second whose events must age out to make room for one more.
                SELECT t.second INTO o FROM (
                    SELECT b.second, SUM(b.count) OVER (ORDER BY b.second) AS running FROM gseai_rate_buckets b WHERE b.key = p_key
                ) t WHERE t.running >= n - p_limit + 1 ORDER BY t.second LIMIT 1;
                RETURN QUERY SELECT n, o::DOUBLE PRECISION;
            ELSE
                INSERT INTO gseai_rate_buckets AS b (key, second, count) VALUES (p_key, floor(p_now)::BIGINT, 1)
                    ON CONFLICT (key, second) DO UPDATE SET count = b.count + 1;
                RETURN QUERY SELECT n, NULL::DOUBLE PRECISION;
            END IF;
        END $$
        """,
        """
        CREATE TABLE IF NOT EXISTS gseai_budget_reservations (
            id TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL,
            class_id TEXT NOT NULL,
            day TEXT NOT NULL,
            tokens BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS gseai_budget_reservations_key ON gseai_budget_reservations (user_id, class_id, day)",
        """
        CREATE OR REPLACE FUNCTION gseai_budget_reserve(p_id TEXT, p_user TEXT, p_class TEXT, p_day TEXT, p_tokens BIGINT,
                                                        p_budget BIGINT, p_now DOUBLE PRECISION, p_expires DOUBLE PRECISION)
        RETURNS TABLE (admitted BOOLEAN, used BIGINT) LANGUAGE plpgsql AS $$
        DECLARE total BIGINT;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('gseai_budget:' || p_user || '|' || p_class || '|' || p_day));
            DELETE FROM gseai_budget_reservations
                WHERE user_id = p_user AND class_id = p_class AND day = p_day AND expires_at <= p_now;
            SELECT COALESCE((SELECT SUM(u.input_tokens + u.output_tokens) FROM usage_daily u
                                WHERE u.user_id = p_user AND u.class_id = p_class AND u.day = p_day), 0)
                 + COALESCE((SELECT SUM(r.tokens) FROM gseai_budget_reservations r
                                WHERE r.user_id = p_user AND r.class_id = p_class AND r.day = p_day), 0)
                INTO total;
            IF total >= p_budget THEN
                RETURN QUERY SELECT FALSE, total;
            ELSE
                INSERT INTO gseai_budget_reservations VALUES (p_id, p_user, p_class, p_day, p_tokens, p_expires);
                RETURN QUERY SELECT TRUE, total;
            END IF;
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
    private let tasks: Mutex<[Task<Void, Never>]>
    private let database: any SQLDatabase
    /// This replica's id, when it is registered.
    private let replica: String?

    private init(state: SharedState, tasks: [Task<Void, Never>], database: any SQLDatabase, replica: String?) {
        self.state = state
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
        let state = SharedState(rates: PostgresRateWindow(database: database), budgets: PostgresBudgetLedger(database: database),
                                changes: feed, replicas: registry)
        return PostgresSharedState(state: state, tasks: tasks, database: database, replica: replicaURL == nil ? nil : replica)
    }

    /// Stops the heartbeat and the listener, and says this replica is gone (its answers have ended).
    func stop() async {
        let tasks = self.tasks.withLock { tasks in defer { tasks = [] }; return tasks }
        for task in tasks { task.cancel() }
        // A listener in the middle of leasing or reading its connection may not notice at once: the close
        // does not wait for it for ever.
        for task in tasks { await task.value(within: .seconds(3)) }
        if let replica { try? await database.raw("DELETE FROM gseai_replicas WHERE id = \(bind: replica)").run() }
    }
}

struct PostgresRateWindow: RateWindow {
    let database: any SQLDatabase

    func admit(key: String, limit: Int, window: Double, now: Date) async throws -> RateRefusal? {
        let row = try await database.raw("""
            SELECT sent, oldest FROM gseai_rate_admit(\(bind: key), \(bind: Int64(limit)), \(bind: window), \(bind: now.unixSeconds))
            """).first()
        guard let row, let oldest = try row.decode(column: "oldest", as: Double?.self) else { return nil }
        return RateRefusal(sent: try row.decode(column: "sent", as: Int.self), retryAfter: window - (now.unixSeconds - oldest))
    }

    func reset(key: String) async throws {
        try await database.raw("DELETE FROM gseai_rate_buckets WHERE key = \(bind: key)").run()
    }
}

struct PostgresBudgetLedger: BudgetLedger {
    let database: any SQLDatabase

    func reserve(_ key: BudgetKey, tokens: Int, budget: Int, now: Date, expires: Date) async throws -> BudgetDecision {
        let id = UUID().uuidString
        let row = try await database.raw("""
            SELECT admitted, used FROM gseai_budget_reserve(\(bind: id), \(bind: key.userID), \(bind: key.classID), \(bind: key.day),
                \(bind: Int64(max(0, tokens))), \(bind: Int64(budget)), \(bind: now.unixSeconds), \(bind: expires.unixSeconds))
            """).first()
        guard let row else { throw StorageError.notFound }
        return try row.decode(column: "admitted", as: Bool.self) ? .reserved(id: id) : .spent(used: try row.decode(column: "used", as: Int.self))
    }

    /// The usage is written now, not once a second: the other replicas' next check must see it. One
    /// statement (the reservation's delete and the usage's upsert together): a student's usage row is the same
    /// for every request of the day, and a transaction of several round trips would hold its lock, one
    /// request after the other, for all of them.
    func settle(_ reservation: String, key: BudgetKey, model: String, inputTokens: Int, outputTokens: Int) async throws {
        try await database.raw("""
            WITH ended AS (DELETE FROM gseai_budget_reservations WHERE id = \(bind: reservation))
            INSERT INTO usage_daily (user_id, day, class_id, model, requests, input_tokens, output_tokens)
            VALUES (\(bind: key.userID), \(bind: key.day), \(bind: key.classID), \(bind: model), 1, \(bind: inputTokens), \(bind: outputTokens))
            ON CONFLICT (user_id, day, class_id, model) DO UPDATE SET
                requests = usage_daily.requests + excluded.requests,
                input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                output_tokens = usage_daily.output_tokens + excluded.output_tokens
            """).run()
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

extension Task where Success == Void, Failure == Never {
    /// Waits for the task to end, but at most `limit`.
    func value(within limit: Duration) async {
        let resumed = Mutex(false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resume: @Sendable () -> Void = {
                if resumed.withLock({ done in defer { done = true }; return !done }) { continuation.resume() }
            }
            Task<Void, Never> {
                await self.value
                resume()
            }
            Task<Void, Never> {
                try? await Task<Never, Never>.sleep(for: limit)
                resume()
            }
        }
    }
}
