import Foundation
import SQLKit

/// Password set-up links in the `setup_tokens` table.
struct SQLSetupTokenRepository: SetupTokenRepository {
    let database: any SQLDatabase

    func create(_ token: SetupToken) async throws {
        let inserted = try await self.database.insert(into: "setup_tokens")
            .columns("token_hash", "user_id", "expires_at", "used_at")
            .values(
                SQLBind(token.tokenHash), SQLBind(token.userID), SQLBind(token.expiresAt.unixSeconds),
                SQLBind(token.usedAt?.unixSeconds)
            )
            .ignoringConflicts(with: "token_hash")
            .returning("token_hash")
            .first()
        guard inserted != nil else { throw StorageError.conflict("The set-up token is taken.") }
    }

    func find(tokenHash: String) async throws -> SetupToken? {
        try await self.database.select()
            .columns("token_hash", "user_id", "expires_at", "used_at")
            .from("setup_tokens")
            .where("token_hash", .equal, tokenHash)
            .first()
            .map { row in
                SetupToken(
                    tokenHash: try row.decode(column: "token_hash", as: String.self),
                    userID: try row.decode(column: "user_id", as: String.self),
                    expiresAt: try row.decodeDate(column: "expires_at"),
                    usedAt: try row.decodeOptionalDate(column: "used_at")
                )
            }
    }
}
