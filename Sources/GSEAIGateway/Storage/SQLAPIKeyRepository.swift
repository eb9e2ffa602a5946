import Foundation
import SQLKit

/// Personal API keys in the `api_keys` table.
struct SQLAPIKeyRepository: APIKeyRepository {
    let database: any SQLDatabase

    func create(_ key: APIKey) async throws {
        let inserted = try await self.database.insert(into: "api_keys")
            .columns("id", "user_id", "prefix", "hash", "label", "created_at", "last_used_at", "revoked_at")
            .values(
                SQLBind(key.id), SQLBind(key.userID), SQLBind(key.prefix), SQLBind(key.hash), SQLBind(key.label),
                SQLBind(key.createdAt.unixSeconds), SQLBind(key.lastUsedAt?.unixSeconds),
                SQLBind(key.revokedAt?.unixSeconds)
            )
            // Only the prefix: the caller draws a new key when the prefix is taken.
            .ignoringConflicts(with: "prefix")
            .returning("id")
            .first()
        guard inserted != nil else { throw StorageError.conflict("The key prefix \(key.prefix) is taken.") }
    }

    func find(prefix: String) async throws -> APIKey? {
        try await self.select().where("prefix", .equal, prefix).first().map(APIKey.init(row:))
    }

    func find(id: String) async throws -> APIKey? {
        try await self.select().where("id", .equal, id).first().map(APIKey.init(row:))
    }

    func list(userID: String) async throws -> [APIKey] {
        try await self.select()
            .where("user_id", .equal, userID)
            .orderBy("created_at", .descending)
            .orderBy("id", .descending)
            .all()
            .map(APIKey.init(row:))
    }

    func revoke(id: String, at date: Date) async throws {
        // A key keeps the time it was first revoked.
        try await self.database.update("api_keys")
            .set("revoked_at", to: date.unixSeconds)
            .where("id", .equal, id)
            .where("revoked_at", .is, SQLLiteral.null)
            .run()
    }

    func touch(id: String, at date: Date) async throws {
        try await self.database.update("api_keys")
            .set("last_used_at", to: date.unixSeconds)
            .where("id", .equal, id)
            .run()
    }

    private func select() -> SQLSelectBuilder {
        self.database.select()
            .columns("id", "user_id", "prefix", "hash", "label", "created_at", "last_used_at", "revoked_at")
            .from("api_keys")
    }
}

extension APIKey {
    fileprivate init(row: any SQLRow) throws {
        self.init(
            id: try row.decode(column: "id", as: String.self),
            userID: try row.decode(column: "user_id", as: String.self),
            prefix: try row.decode(column: "prefix", as: String.self),
            hash: try row.decode(column: "hash", as: String.self),
            label: try row.decode(column: "label", as: String.self),
            createdAt: try row.decodeDate(column: "created_at"),
            lastUsedAt: try row.decodeOptionalDate(column: "last_used_at"),
            revokedAt: try row.decodeOptionalDate(column: "revoked_at")
        )
    }
}
