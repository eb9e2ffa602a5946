import Foundation
import SQLKit

/// Owners of upstream response ids in the `response_owners` table.
struct SQLResponseOwnershipRepository: ResponseOwnershipRepository {
    let database: any SQLDatabase

    func record(responseID: String, userID: String, upstream: String?, at date: Date) async throws {
        // The first owner stays: recording again is harmless, and nobody can take over someone else's id.
        try await self.database.insert(into: "response_owners")
            .columns("response_id", "user_id", "upstream", "created_at")
            .values(SQLBind(responseID), SQLBind(userID), SQLBind(upstream), SQLBind(date.unixSeconds))
            .ignoringConflicts(with: "response_id")
            .run()
    }

    func upstream(of responseID: String) async throws -> String? {
        try await self.database.select()
            .column("upstream")
            .from("response_owners")
            .where("response_id", .equal, responseID)
            .first(decodingColumn: "upstream", as: String?.self) ?? nil
    }

    func owner(of responseID: String) async throws -> String? {
        try await self.database.select()
            .column("user_id")
            .from("response_owners")
            .where("response_id", .equal, responseID)
            .first(decodingColumn: "user_id", as: String.self)
    }
}
