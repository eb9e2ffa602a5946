import Foundation
import SQLKit

/// Browser login sessions in the `login_sessions` table.
struct SQLLoginSessionRepository: LoginSessionRepository {
    let database: any SQLDatabase

    func create(_ session: LoginSession) async throws {
        let inserted = try await self.database.insert(into: "login_sessions")
            .columns(
                "id", "user_id", "csrf_token", "created_at", "expires_at", "last_seen_at", "user_agent",
                "remote_address"
            )
            .values(
                SQLBind(session.id), SQLBind(session.userID), SQLBind(session.csrfToken),
                SQLBind(session.createdAt.unixSeconds), SQLBind(session.expiresAt.unixSeconds),
                SQLBind(session.lastSeenAt.unixSeconds), SQLBind(session.userAgent), SQLBind(session.remoteAddress)
            )
            .ignoringConflicts(with: "id")
            .returning("id")
            .first()
        guard inserted != nil else { throw StorageError.conflict("The session id is taken.") }
    }

    func find(id: String) async throws -> LoginSession? {
        try await self.select().where("id", .equal, id).first().map(LoginSession.init(row:))
    }

    func list(userID: String) async throws -> [LoginSession] {
        try await self.select()
            .where("user_id", .equal, userID)
            .orderBy("created_at", .descending)
            .orderBy("id", .descending)
            .all()
            .map(LoginSession.init(row:))
    }

    func touch(id: String, at date: Date) async throws {
        try await self.database.update("login_sessions")
            .set("last_seen_at", to: date.unixSeconds)
            .where("id", .equal, id)
            .run()
    }

    func delete(id: String) async throws {
        try await self.database.delete(from: "login_sessions").where("id", .equal, id).run()
    }

    func deleteExpired(before date: Date) async throws {
        try await self.database.delete(from: "login_sessions").where("expires_at", .lessThan, date.unixSeconds).run()
    }

    private func select() -> SQLSelectBuilder {
        self.database.select()
            .columns(
                "id", "user_id", "csrf_token", "created_at", "expires_at", "last_seen_at", "user_agent",
                "remote_address"
            )
            .from("login_sessions")
    }
}

extension LoginSession {
    fileprivate init(row: any SQLRow) throws {
        self.init(
            id: try row.decode(column: "id", as: String.self),
            userID: try row.decode(column: "user_id", as: String.self),
            csrfToken: try row.decode(column: "csrf_token", as: String.self),
            createdAt: try row.decodeDate(column: "created_at"),
            expiresAt: try row.decodeDate(column: "expires_at"),
            lastSeenAt: try row.decodeDate(column: "last_seen_at"),
            userAgent: try row.decode(column: "user_agent", as: String?.self),
            remoteAddress: try row.decode(column: "remote_address", as: String?.self)
        )
    }
}
