import Foundation
import SQLKit

/// Accounts in the `users` table.
struct SQLUserRepository: UserRepository {
    let database: any SQLDatabase

    func create(_ user: User) async throws {
        let inserted = try await self.database.insert(into: "users")
            .columns("id", "username", "password_hash", "role", "disabled", "created_at")
            .values(
                SQLBind(user.id), SQLBind(user.username.lowercased()), SQLBind(user.passwordHash),
                SQLBind(user.role.rawValue), SQLBind(user.disabled), SQLBind(user.createdAt.unixSeconds)
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

    func update(_ user: User) async throws {
        let updated = try await self.database.update("users")
            .set("password_hash", to: user.passwordHash)
            .set("role", to: user.role.rawValue)
            .set("disabled", to: user.disabled)
            .where("id", .equal, user.id)
            .returning("id")
            .first()
        guard updated != nil else { throw StorageError.notFound }
    }

    private func select() -> SQLSelectBuilder {
        self.database.select()
            .columns("id", "username", "password_hash", "role", "disabled", "created_at")
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
            createdAt: try row.decodeDate(column: "created_at")
        )
    }
}
