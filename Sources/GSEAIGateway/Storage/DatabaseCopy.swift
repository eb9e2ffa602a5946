import Foundation
import SQLKit

/// Copies every row of one gateway database into another, empty one, on the same schema version: how a
/// department's SQLite database moves to PostgreSQL (`gseai db copy --to postgres://…`).
///
/// The copy is one transaction on the target: it is there whole or not at all. Tables go in the order of
/// their foreign keys; each user's active class, which points the other way, is set once the classes are in.
public enum DatabaseCopy {
    /// The tables in an order that satisfies every foreign key, with their columns.
    static let tables: [(name: String, columns: [String])] = [
        ("users", ["id", "username", "password_hash", "role", "disabled", "created_at", "last_login_at"]),
        ("classes", ["id", "instructor_id", "name", "join_code", "is_open", "starts_at", "ends_at", "policy", "created_at"]),
        ("login_sessions", ["id", "user_id", "csrf_token", "created_at", "expires_at", "last_seen_at", "user_agent", "remote_address"]),
        ("api_keys", ["id", "user_id", "prefix", "hash", "label", "created_at", "last_used_at", "revoked_at"]),
        ("response_owners", ["response_id", "user_id", "created_at", "upstream"]),
        ("usage_daily", ["user_id", "day", "class_id", "model", "requests", "input_tokens", "output_tokens"]),
        ("conversations", ["id", "user_id", "title", "model", "system_prompt", "last_response_id", "created_at", "updated_at", "class_id"]),
        ("messages", ["id", "conversation_id", "sequence", "role", "text", "image_hashes", "reasoning", "output_items", "stats",
                      "response_id", "status", "error", "model", "created_at", "updated_at", "replica"]),
        ("images", ["hash", "mime_type", "data", "width", "height", "created_at"]),
        ("image_owners", ["user_id", "hash", "created_at"]),
        ("class_members", ["class_id", "user_id", "joined_at"]),
        ("class_invitations", ["class_id", "user_id", "created_at"]),
        ("audit_log", ["id", "actor_id", "action", "target", "detail", "at"]),
        ("setup_tokens", ["token_hash", "user_id", "expires_at", "used_at"]),
    ]

    /// The columns' types, for reading them from any engine.
    private static let booleans: Set<String> = ["disabled", "is_open"]
    private static let integers: Set<String> = ["requests", "input_tokens", "output_tokens", "sequence", "width", "height"]
    private static let doubles: Set<String> = [
        "created_at", "last_login_at", "starts_at", "ends_at", "expires_at", "last_seen_at", "last_used_at", "revoked_at",
        "updated_at", "joined_at", "at", "used_at",
    ]

    public enum CopyError: Error, CustomStringConvertible {
        case targetNotEmpty([String: Int])
        case schemaMismatch(source: Int, target: Int)
        case noDatabase

        public var description: String {
            switch self {
            case .targetNotEmpty(let counts):
                "the target database is not empty (" + counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
                    + "); copy only into an empty database"
            case .schemaMismatch(let source, let target):
                "the source has schema version \(source) and the target \(target): run this gateway on the source first"
            case .noDatabase:
                "the storage gives no access to its database"
            }
        }
    }

    /// Copies `source` into `target` (both migrated); `progress` hears each table's name and row count as
    /// it is done. Returns the counts per table.
    @discardableResult
    public static func copy(from source: Storage, to target: Storage,
                            progress: @escaping @Sendable (String, Int) -> Void = { _, _ in }) async throws -> [(table: String, rows: Int)] {
        guard let from = source.database, let to = target.database else { throw CopyError.noDatabase }
        let sourceVersion = try await version(from), targetVersion = try await version(to)
        guard sourceVersion == targetVersion else { throw CopyError.schemaMismatch(source: sourceVersion, target: targetVersion) }
        var occupied: [String: Int] = [:]
        for table in tables {
            let count = try await count(table.name, in: to)
            if count > 0 { occupied[table.name] = count }
        }
        guard occupied.isEmpty else { throw CopyError.targetNotEmpty(occupied) }

        return try await to.transaction { session in
            var counts: [(table: String, rows: Int)] = []
            for table in tables {
                let rows = try await from.select().columns(table.columns.map { SQLIdentifier($0) }).from(table.name).all()
                // A few hundred rows per statement: well under PostgreSQL's 65,535 parameters.
                for batch in stride(from: 0, to: rows.count, by: 200) {
                    var insert = session.insert(into: table.name).columns(table.columns)
                    for row in rows[batch..<min(batch + 200, rows.count)] {
                        insert = insert.values(try values(of: row, columns: table.columns, table: table.name))
                    }
                    try await insert.run()
                }
                if table.name == "classes" {
                    // Now that the classes are in: each user's active class.
                    let actives = try await from.raw("SELECT id, active_class_id FROM users WHERE active_class_id IS NOT NULL").all()
                    for active in actives {
                        try await session.update("users")
                            .set("active_class_id", to: try active.decode(column: "active_class_id", as: String.self))
                            .where("id", .equal, try active.decode(column: "id", as: String.self))
                            .run()
                    }
                }
                counts.append((table.name, rows.count))
                progress(table.name, rows.count)
            }
            return counts
        }
    }

    private static func version(_ database: any SQLDatabase) async throws -> Int {
        try await database.raw("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS version FROM schema_migrations")
            .first(decodingColumn: "version", as: Int.self) ?? 0
    }

    private static func count(_ table: String, in database: any SQLDatabase) async throws -> Int {
        try await database.raw("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM \(ident: table)").first(decodingColumn: "n", as: Int.self) ?? 0
    }

    private static func values(of row: any SQLRow, columns: [String], table: String) throws -> [any SQLExpression] {
        try columns.map { column -> any SQLExpression in
            if try row.decodeNil(column: column) { return SQLLiteral.null }
            if booleans.contains(column) { return SQLBind(try row.decode(column: column, as: Bool.self)) }
            if integers.contains(column) { return SQLBind(try row.decode(column: column, as: Int.self)) }
            if doubles.contains(column) { return SQLBind(try row.decode(column: column, as: Double.self)) }
            if table == "images" && column == "data" { return SQLBind(try row.decode(column: column, as: Data.self)) }
            return SQLBind(try row.decode(column: column, as: String.self))
        }
    }
}
