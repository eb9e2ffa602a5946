import Foundation
import Logging
import NIOCore
import SQLKit
import Synchronization

/// The repositories over any ``SQLDatabase``, so that a PostgreSQL database can later use the same code.
///
/// The queries keep to SQL that SQLite and PostgreSQL both accept: `ON CONFLICT … DO NOTHING/UPDATE` for
/// uniqueness and upserts, `RETURNING` to learn whether a row was written, and no engine-specific functions.
/// Dates are stored as Unix seconds in `DOUBLE PRECISION` columns: sortable, exact to the microsecond, and the
/// same type in both engines. Every repository method is a single statement, so each is atomic on its own,
/// or a ``SQLDatabase/transaction(_:)`` where it needs more; either way it is durable (committed) when it returns.
enum SQLStorage {
    /// The storage over `database`, which must already be migrated; `close` ends the connection.
    /// Once closed, every statement throws ``StorageClosedError`` at once: a service still writing after the
    /// storage closed (a shutdown in the wrong order) fails visibly instead of racing the close (SQLite) or
    /// waiting on a pool that no longer runs (PostgreSQL).
    static func make(database base: any SQLDatabase, shared: SharedState? = nil, close: @escaping @Sendable () async throws -> Void) -> Storage {
        let database = ClosableSQLDatabase(base: base)
        let usage = SQLUsageRepository(database: database)
        let shared = shared ?? .inProcess(usage: usage)
        return Storage(
            users: SQLUserRepository(database: database),
            sessions: SQLLoginSessionRepository(database: database),
            apiKeys: SQLAPIKeyRepository(database: database),
            responses: SQLResponseOwnershipRepository(database: database),
            usage: usage,
            conversations: SQLConversationRepository(database: database),
            messages: SQLMessageRepository(database: database),
            images: SQLImageRepository(database: database),
            classes: CachedClassRepository(SQLClassRepository(database: database), changes: shared.changes),
            audit: SQLAuditRepository(database: database),
            setupTokens: SQLSetupTokenRepository(database: database),
            shared: shared,
            database: database,
            ping: { try await database.raw("SELECT 1").run() },
            close: {
                // Once: a graceful stop closes it in its turn and `gseai serve` once more after the stop (for a
                // stop that had to cancel); sqlite-nio's second close dereferences the freed handle.
                guard database.closed.close() else { return }
                try await close()
            }
        )
    }
}

/// What a statement on a closed storage throws.
public struct StorageClosedError: Error, CustomStringConvertible, Sendable {
    public var description: String { "the storage is closed" }
}

/// Forwards to a database until it is closed.
private struct ClosableSQLDatabase: SQLDatabase {
    let base: any SQLDatabase
    let closed = SharedFlag()

    final class SharedFlag: Sendable {
        private let value = Atomic<Bool>(false)
        /// Marks it closed; `true` for the first call only.
        func close() -> Bool { value.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged }
        func load() -> Bool { value.load(ordering: .acquiring) }
    }

    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { base.version }
    var dialect: any SQLDialect { base.dialect }
    var queryLogLevel: Logger.Level? { base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        guard !closed.load() else { return eventLoop.makeFailedFuture(StorageClosedError()) }
        return base.execute(sql: query, onRow)
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        guard !closed.load() else { throw StorageClosedError() }
        try await base.execute(sql: query, onRow)
    }

    func withSession<R>(_ closure: @escaping @Sendable @concurrent (any SQLDatabase) async throws -> R) async throws -> R {
        guard !closed.load() else { throw StorageClosedError() }
        return try await base.withSession(closure)
    }
}

extension SQLDatabase {
    /// Runs `body` in a transaction on one session, committing when it returns and rolling back when it throws.
    ///
    /// On a ``SerialSQLDatabase`` nothing else runs on the connection meanwhile; `body` must use only the
    /// database it is given.
    func transaction<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await self.withSession { session in
            try await session.raw("BEGIN").run()
            do {
                let result = try await body(session)
                try await session.raw("COMMIT").run()
                return result
            } catch {
                // Also after a failed COMMIT: SQLite then keeps the transaction open, and the connection is shared.
                do {
                    try await session.raw("ROLLBACK").run()
                } catch let rollbackError {
                    session.logger.warning("Rolling back a transaction failed", metadata: ["error": "\(rollbackError)"])
                }
                throw error
            }
        }
    }
}

extension Date {
    /// The stored form of a date: Unix seconds with a fraction.
    var unixSeconds: Double { self.timeIntervalSince1970 }

    init(unixSeconds: Double) {
        self.init(timeIntervalSince1970: unixSeconds)
    }
}

extension SQLRow {
    /// Reads a date stored by ``Foundation/Date/unixSeconds``.
    func decodeDate(column: String) throws -> Date {
        Date(unixSeconds: try self.decode(column: column, as: Double.self))
    }

    /// Reads an optional date stored by ``Foundation/Date/unixSeconds``.
    func decodeOptionalDate(column: String) throws -> Date? {
        try self.decode(column: column, as: Double?.self).map(Date.init(unixSeconds:))
    }
}
