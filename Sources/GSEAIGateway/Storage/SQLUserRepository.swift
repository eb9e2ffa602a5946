import Foundation
import SQLKit

/// Accounts in the `users` table.
struct SQLUserRepository: UserRepository {
    let database: any SQLDatabase

    func create(_ user: User) async throws {
        let inserted = try await self.database.insert(into: "users")
            .columns("id", "username", "password_hash", "role", "disabled", "created_at", "last_login_at")
            .values(
                SQLBind(user.id), SQLBind(user.username.lowercased()), SQLBind(user.passwordHash),
                SQLBind(user.role.rawValue), SQLBind(user.disabled), SQLBind(user.createdAt.unixSeconds),
                SQLBind(user.lastLoginAt?.unixSeconds)
            )
            // Only the username: a clash of ids is a bug and should fail loudly, not read as "name taken".
            .ignoringConflicts(with: "username")
            .returning("id")
            .first()
        guard inserted != nil else {
            throw StorageError.conflict("The username \(user.username.lowercased()) is taken.")
        }
    }

    func find(id: String) async throws -> User? {
        try await self.select().where("id", .equal, id).first().map(User.init(row:))
    }

    func find(username: String) async throws -> User? {
        try await self.select().where("username", .equal, username.lowercased()).first().map(User.init(row:))
    }

    func list() async throws -> [User] {
        try await self.select().orderBy("username").all().map(User.init(row:))
    }

    func count() async throws -> Int {
        try await self.database.select()
            .column(SQLFunction("COUNT", args: SQLLiteral.all), as: "count")
            .from("users")
            .first(decodingColumn: "count", as: Int.self) ?? 0
    }

    func setRole(userID: String, to role: Role) async throws -> User {
        try await self.database.transaction { session in
            try await Self.set("role", to: role.rawValue, userID: userID, on: session)
            try await Self.deleteUnusedSetupTokens(userID: userID, on: session)
            return try await Self.find(userID, on: session)
        }
    }

    func setPassword(userID: String, hash: String, spendingSetupToken tokenHash: String?, at date: Date) async throws -> User? {
        do {
            return try await self.setPasswordOrThrow(userID: userID, hash: hash, spendingSetupToken: tokenHash, at: date)
        } catch is SetupTokenSpent {
            return nil
        }
    }

    /// Thrown inside the transaction to roll the password back when the set-up link is spent.
    private struct SetupTokenSpent: Error {}

    private func setPasswordOrThrow(userID: String, hash: String, spendingSetupToken tokenHash: String?, at date: Date) async throws -> User {
        try await self.database.transaction { session in
            // The user's row first: SQLite's write lock (PostgreSQL's row lock) is taken before anything is read.
            try await Self.set("password_hash", to: hash, userID: userID, on: session)
            if let tokenHash {
                // Of two uses of one link at once, only one finds `used_at` still empty.
                let spent = try await session.update("setup_tokens")
                    .set("used_at", to: date.unixSeconds)
                    .where("token_hash", .equal, tokenHash)
                    .where("user_id", .equal, userID)
                    .where("used_at", .is, SQLLiteral.null)
                    .returning("token_hash")
                    .first()
                guard spent != nil else { throw SetupTokenSpent() }
            }
            try await Self.deleteUnusedSetupTokens(userID: userID, on: session)
            try await session.delete(from: "login_sessions").where("user_id", .equal, userID).run()
            return try await Self.find(userID, on: session)
        }
    }

    func setDisabled(userID: String, _ disabled: Bool, at date: Date) async throws -> User {
        try await self.database.transaction { session in
            try await Self.set("disabled", to: disabled, userID: userID, on: session)
            if disabled {
                try await session.delete(from: "login_sessions").where("user_id", .equal, userID).run()
                try await session.update("api_keys")
                    .set("revoked_at", to: date.unixSeconds)
                    .where("user_id", .equal, userID)
                    .where("revoked_at", .is, SQLLiteral.null)
                    .run()
            }
            return try await Self.find(userID, on: session)
        }
    }

    func recordLogin(userID: String, at date: Date) async throws {
        try await self.database.transaction { session in
            // Written first, so the row is locked before it is read; `returning` gives the value before only
            // in PostgreSQL, so the first sign-in is told by a conditional update instead.
            let first = try await session.update("users")
                .set("last_login_at", to: date.unixSeconds)
                .where("id", .equal, userID)
                .where("last_login_at", .is, SQLLiteral.null)
                .returning("id")
                .first() != nil
            if first {
                try await Self.deleteUnusedSetupTokens(userID: userID, on: session)
            } else {
                try await Self.set("last_login_at", to: date.unixSeconds, userID: userID, on: session)
            }
        }
    }

    private static func deleteUnusedSetupTokens(userID: String, on database: any SQLDatabase) async throws {
        try await database.delete(from: "setup_tokens")
            .where("user_id", .equal, userID)
            .where("used_at", .is, SQLLiteral.null)
            .run()
    }

    /// Writes one column of a user's row; ``StorageError/notFound`` when there is no such user.
    private static func set(_ column: String, to value: some Encodable & Sendable, userID: String, on database: any SQLDatabase)
        async throws
    {
        let updated = try await database.update("users")
            .set(SQLIdentifier(column), to: SQLBind(value))
            .where("id", .equal, userID)
            .returning("id")
            .first()
        guard updated != nil else { throw StorageError.notFound }
    }

    private static func find(_ userID: String, on database: any SQLDatabase) async throws -> User {
        guard let user = try await SQLUserRepository(database: database).find(id: userID) else { throw StorageError.notFound }
        return user
    }

    private func select() -> SQLSelectBuilder {
        self.database.select()
            .columns("id", "username", "password_hash", "role", "disabled", "created_at", "last_login_at")
            .from("users")
    }
}

extension User {
    fileprivate init(row: any SQLRow) throws {
        let roleName = try row.decode(column: "role", as: String.self)
        guard let role = Role(rawValue: roleName) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "Unknown role \(roleName)"))
        }
        self.init(
            id: try row.decode(column: "id", as: String.self),
            username: try row.decode(column: "username", as: String.self),
            passwordHash: try row.decode(column: "password_hash", as: String?.self),
            role: role,
            disabled: try row.decode(column: "disabled", as: Bool.self),
            createdAt: try row.decodeDate(column: "created_at"),
            lastLoginAt: try row.decodeOptionalDate(column: "last_login_at")
        )
    }
}
