import Foundation
import GSEAIGateway
import Logging
import Testing

/// The database a test runs on: an in-memory SQLite one, or, when `GSEAI_TEST_POSTGRES_URL` is set (as
/// `scripts/test` does in its second pass), a fresh schema of that PostgreSQL database, so that every
/// storage and gateway test runs on both engines.
enum TestDatabase {
    static var postgresURL: String? {
        ProcessInfo.processInfo.environment["GSEAI_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `sqlite` or `postgresql`: what the tests run on.
    static var engine: String { postgresURL == nil ? "sqlite" : "postgresql" }

    /// A new, empty, migrated database. `replicaURL`: registers it as a gateway replica (PostgreSQL).
    static func open(logger: Logger, replicaURL: String? = nil) async throws -> Storage {
        guard postgresURL != nil else { return try await SQLiteStorage.open(path: nil, logger: logger) }
        return try await openPostgres(schema: newSchema(), replicaURL: replicaURL, logger: logger)
    }

    /// A fresh schema name.
    static func newSchema() -> String {
        "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
    }

    /// Storage on `schema` of the PostgreSQL test database: open it twice for two replicas on one database.
    static func openPostgres(schema: String, replicaURL: String? = nil, logger: Logger) async throws -> Storage {
        let base = try #require(postgresURL)
        let separator = base.contains("?") ? "&" : "?"
        return try await PostgresStorage.open(url: base + separator + "search_path=\(schema)&pool=4", replicaURL: replicaURL, logger: logger)
    }
}
