import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresKit
import PostgresNIO
import SQLKit

/// The gateway's storage in PostgreSQL, for several replicas on one database.
///
/// One `PostgresClient` (PostgresNIO's connection pool) serves the process; it runs in a task of its own
/// from ``open(url:logger:)`` until ``Storage/close``. The repositories are the same as SQLite's
/// (``SQLStorage``); the shared state (rate windows, budget reservations, login attempts, cache
/// invalidation, replicas) lives in the database too (``PostgresSharedState``), so that every replica sees
/// the same limits.
public enum PostgresStorage {
    /// Whether `location` (the `--database` setting) names a PostgreSQL database rather than a SQLite file.
    public static func handles(_ location: String) -> Bool {
        location.hasPrefix("postgres://") || location.hasPrefix("postgresql://")
    }

    /// Connects to the database at `url`, brings its schema up to date (once, under an advisory lock, when
    /// several replicas start together) and returns the storage.
    ///
    /// `url`: `postgres://user[:password]@host[:port]/database`, with optional query items `host=/socket/dir`
    /// (a Unix socket, as libpq's), `search_path=schema` (created if missing) and `pool=N` (connections).
    /// `replicaURL`: where the other replicas reach this one; `nil` for a process that serves nothing (an
    /// administrative command), which is not registered as a replica.
    public static func open(url: String, replica: String = UUID().uuidString.lowercased(), replicaURL: String?,
                            logger: Logger) async throws -> Storage {
        let settings = try Settings(url: url)
        let client = PostgresClient(configuration: settings.clientConfiguration, backgroundLogger: logger)
        let running = Task { await client.run() }
        do {
            let database = PostgresClientDatabase(client: client, logger: logger)
            if let schema = settings.schema {
                try await database.raw("CREATE SCHEMA IF NOT EXISTS \(ident: schema)").run()
            }
            try await migrate(database, logger: logger)
            let shared = try await PostgresSharedState.start(client: client, database: database, replica: replica, replicaURL: replicaURL,
                                                             channel: "gseai_changes_" + (settings.schema ?? "public"), logger: logger)
            return SQLStorage.make(database: database, shared: shared.state) {
                await shared.stop()
                running.cancel()
                await running.value(within: .seconds(5))
            }
        } catch {
            running.cancel()
            await running.value(within: .seconds(5))
            throw error
        }
    }

    /// The migrations, run by one replica at a time: the others wait on the lock and then find nothing to do.
    static func migrate(_ database: any SQLDatabase, logger: Logger) async throws {
        try await database.withSession { session in
            try await session.raw("SELECT pg_advisory_lock(\(literal: migrationLock))").run()
            do {
                try await Migrations.run(on: session, logger: logger)
                for statement in PostgresSharedState.schema {
                    try await session.raw(statement).run()
                }
            } catch {
                try? await session.raw("SELECT pg_advisory_unlock(\(literal: migrationLock))").run()
                throw error
            }
            try await session.raw("SELECT pg_advisory_unlock(\(literal: migrationLock))").run()
        }
    }

    /// The advisory lock key of the migrations (any constant; "gseai" in ASCII).
    static let migrationLock = 0x67_73_65_61_69

    /// What a database URL says.
    struct Settings: Sendable {
        var host: String?
        var port: Int
        var socketPath: String?
        var username: String
        var password: String?
        var database: String?
        var schema: String?
        var connections: Int
        var tls: Bool

        init(url: String) throws {
            guard PostgresStorage.handles(url), let components = URLComponents(string: url) else {
                throw StorageSetupError("not a PostgreSQL URL (postgres://user@host:port/database): \(PostgresStorage.redacted(url))")
            }
            let items = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
            username = components.user.flatMap { $0.removingPercentEncoding } ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
            password = components.password.flatMap { $0.removingPercentEncoding }
            let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
            database = path.isEmpty ? nil : path.removingPercentEncoding
            port = components.port ?? 5432
            if let socketDirectory = items["host"], socketDirectory.hasPrefix("/") {
                // libpq's convention: the socket is `.s.PGSQL.<port>` in that folder.
                socketPath = socketDirectory + "/.s.PGSQL.\(port)"
            } else {
                host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
            }
            if let schema = items["search_path"] ?? items["schema"], !schema.isEmpty {
                guard schema.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                    throw StorageSetupError("the schema name may hold only letters, digits and '_': \(schema)")
                }
                self.schema = schema
            }
            connections = Int(items["pool"] ?? "") ?? 20
            guard (1...1000).contains(connections) else { throw StorageSetupError("pool must be 1…1000 connections") }
            tls = items["sslmode"].map { ["require", "verify-ca", "verify-full"].contains($0) } ?? false
        }

        var clientConfiguration: PostgresClient.Configuration {
            var configuration: PostgresClient.Configuration
            if let socketPath {
                configuration = .init(unixSocketPath: socketPath, username: username, password: password, database: database)
            } else {
                configuration = .init(host: host ?? "127.0.0.1", port: port, username: username, password: password, database: database,
                                      tls: tls ? .require(.makeClientConfiguration()) : .disable)
            }
            configuration.options.maximumConnections = connections
            configuration.options.minimumConnections = 1
            if let schema { configuration.options.additionalStartupParameters = [("search_path", schema)] }
            return configuration
        }
    }

    /// The URL without its password, for messages.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "…"
        return components.string ?? "postgres://…"
    }
}

/// Why the database could not be opened, in words for the terminal.
public struct StorageSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// An ``SQLDatabase`` over PostgresNIO's pool: each statement leases a connection, a session keeps one.
///
/// Statements run in a task of their own, so that a caller that is cancelled (a client that left) cannot
/// drop a write half-way, nor leave a pooled connection inside a transaction.
struct PostgresClientDatabase: SQLDatabase {
    let client: PostgresClient
    let logger: Logger

    var eventLoop: any EventLoop { MultiThreadedEventLoopGroup.singleton.any() }
    var version: (any SQLDatabaseReportedVersion)? { nil }
    var dialect: any SQLDialect { PostgresDialect() }
    // No query log: it would print every bound value (password hashes, token digests, images).
    var queryLogLevel: Logger.Level? { nil }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try await Task {
            try await client.withConnection { connection in
                try await connection.sql(queryLogLevel: nil).execute(sql: query, onRow)
            }
        }.value
    }

    func withSession<R: Sendable>(_ closure: @escaping @Sendable @concurrent (any SQLDatabase) async throws -> R) async throws -> R {
        try await Task {
            try await client.withConnection { connection in
                try await closure(connection.sql(queryLogLevel: nil))
            }
        }.value
    }
}
