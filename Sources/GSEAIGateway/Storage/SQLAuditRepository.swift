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

    func list(limit: Int, before: AuditCursor?) async throws -> [AuditEntry] {
        guard limit > 0 else { return [] }
        var query = self.database.select()
            .columns("id", "actor_id", "action", "target", "detail", "at")
            .from("audit_log")
        if let before {
            // Keyset pagination: the id breaks ties between entries of the same instant.
            let at = before.at.unixSeconds
            if let id = before.id {
                query = query.where(group: { group in
                    group.where("at", .lessThan, at).orWhere(group: { tie in
                        tie.where("at", .equal, at).where("id", .lessThan, id)
                    })
                })
            } else {
                query = query.where("at", .lessThan, at)
            }
        }
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
