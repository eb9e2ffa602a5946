import Foundation
import SQLKit

/// The audit log in the `audit_log` table.
struct SQLAuditRepository: AuditRepository {
    let database: any SQLDatabase

    func append(_ entry: AuditEntry) async throws {
        try await self.database.insert(into: "audit_log")
            .columns("id", "actor_id", "action", "target", "detail", "at")
            .values(
                SQLBind(entry.id), SQLBind(entry.actorID), SQLBind(entry.action), SQLBind(entry.target),
                SQLBind(entry.detail), SQLBind(entry.at.unixSeconds)
            )
            .run()
    }

    func list(limit: Int, before: PageCursor?) async throws -> [AuditEntry] {
        guard limit > 0 else { return [] }
        let query = self.database.select()
            .columns("id", "actor_id", "action", "target", "detail", "at")
            .from("audit_log")
            .after(before, column: "at")
        return try await query
            .orderBy("at", .descending)
            .orderBy("id", .descending)
            .limit(limit)
            .all()
            .map { row in
                AuditEntry(
                    id: try row.decode(column: "id", as: String.self),
                    actorID: try row.decode(column: "actor_id", as: String.self),
                    action: try row.decode(column: "action", as: String.self),
                    target: try row.decode(column: "target", as: String.self),
                    detail: try row.decode(column: "detail", as: String?.self),
                    at: try row.decodeDate(column: "at")
                )
            }
    }
}
