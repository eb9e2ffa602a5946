import Foundation
import Logging
import NIOCore
import SQLKit
import SQLiteKit

/// The gateway's storage in an embedded SQLite database.
public enum SQLiteStorage {
    /// Opens (creating if needed) and migrates the database at `path`, or a fresh in-memory one for `nil`.
    ///
    /// One connection serves the process: SQLite allows one writer at a time anyway, and sqlite-nio runs each
    /// statement on its thread pool, off the event loops. Call ``Storage/close`` when done: sqlite-nio asserts,
    /// in debug builds, that a connection is closed before it is released. Closing twice is harmless (the second
    /// does nothing).
    public static func open(path: String?, logger: Logger) async throws -> Storage {
        let connection = try await self.connect(path: path, logger: logger)
        do {
            // No query log: sqlite-kit logs every bound value with it (password hashes, token digests, images).
            let database = SerialSQLDatabase(connection.sql(queryLogLevel: nil))
            try await self.configure(database, isFile: path != nil, logger: logger)
            try await Migrations.run(on: database, logger: logger)
            return SQLStorage.make(database: database) {
                // Through the gate, so that a statement still running is not cut off by the close.
                try await database.withSession { _ in try await self.close(connection) }
            }
        } catch {
            try? await self.close(connection)
            throw error
        }
    }

    /// Closes even from a cancelled task (a service shutting down): sqlite-nio's async `close` drops its work
    /// then, and a connection released unclosed trips an assertion in sqlite-nio.
    private static func close(_ connection: SQLiteConnection) async throws {
        let closed: EventLoopFuture<Void> = connection.close()
        try await closed.get()
    }

    private static func connect(path: String?, logger: Logger) async throws -> SQLiteConnection {
        guard let path else {
            return try await SQLiteConnection.open(storage: .memory, logger: logger)
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
    }

    // SQLite only: these settings belong to the connection, not the schema, so they are set on every open.
    private static func configure(_ database: any SQLDatabase, isFile: Bool, logger: Logger) async throws {
        // Readers no longer wait for the writer, and a commit is one append to the log instead of two syncs.
        let mode = try await database.raw("PRAGMA journal_mode=WAL")
            .first(decodingColumn: "journal_mode", as: String.self)
        if isFile, mode?.lowercased() != "wal" {
            // Some file systems (network mounts) cannot share the WAL index; SQLite then keeps its old mode.
            logger.warning("SQLite did not switch to WAL mode", metadata: ["journal_mode": "\(mode ?? "none")"])
        }
        // SQLite leaves foreign keys unenforced unless asked, on each connection.
        try await database.raw("PRAGMA foreign_keys=ON").run()
        // Replaces sqlite-nio's busy handler, which retries forever, when another process holds the lock.
        try await database.raw("PRAGMA busy_timeout=5000").run()
        // In WAL mode a commit survives a crash of the process; only a power loss may take the last commits.
        try await database.raw("PRAGMA synchronous=NORMAL").run()
    }
}
