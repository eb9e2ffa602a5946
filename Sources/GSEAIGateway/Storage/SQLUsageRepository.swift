import Foundation
import SQLKit

/// Daily token usage in the `usage_daily` table, one row per user, day, class and model. A request outside
/// any class has the class `''` there, `nil` in a ``UsageRecord``.
struct SQLUsageRepository: UsageRepository {
    let database: any SQLDatabase

    func add(userID: String, classID: String?, model: String, day: String, requests: Int, inputTokens: Int,
             outputTokens: Int) async throws {
        // One statement, so concurrent requests of one user add up instead of overwriting each other.
        try await self.database.raw("""
            INSERT INTO usage_daily (user_id, day, class_id, model, requests, input_tokens, output_tokens)
            VALUES (\(bind: userID), \(bind: day), \(bind: classID ?? ""), \(bind: model), \(bind: requests),
                \(bind: inputTokens), \(bind: outputTokens))
            ON CONFLICT (user_id, day, class_id, model) DO UPDATE SET
                requests = usage_daily.requests + excluded.requests,
                input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                output_tokens = usage_daily.output_tokens + excluded.output_tokens
            """).run()
    }

    func list(userID: String?, classID: String?) async throws -> [UsageRecord] {
        var query = self.database.select()
            .columns(UsageRecord.columns)
            .from("usage_daily")
        if let userID {
            query = query.where("user_id", .equal, userID)
        }
        if let classID {
            query = query.where("class_id", .equal, classID)
        }
        return try await query
            .orderBy("day", .descending)
            .orderBy("user_id")
            .orderBy("class_id")
            .orderBy("model")
            .all()
            .map(UsageRecord.init(row:))
    }

    func total(userID: String, classID: String, day: String) async throws -> Int {
        // The cast: PostgreSQL sums BIGINT as NUMERIC. The primary key, led by user_id and day, finds the rows.
        try await self.database.raw("""
            SELECT CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) AS total FROM usage_daily
            WHERE user_id = \(bind: userID) AND day = \(bind: day) AND class_id = \(bind: classID)
            """).first(decodingColumn: "total", as: Int.self) ?? 0
    }
}

extension UsageRecord {
    /// The columns ``init(row:)`` reads, as named in `usage_daily`.
    static let columns = ["user_id", "class_id", "model", "day", "requests", "input_tokens", "output_tokens"]

    /// Reads a row with the columns of `usage_daily`.
    init(row: any SQLRow) throws {
        let classID = try row.decode(column: "class_id", as: String.self)
        self.init(
            userID: try row.decode(column: "user_id", as: String.self),
            classID: classID.isEmpty ? nil : classID,
            model: try row.decode(column: "model", as: String.self),
            day: try row.decode(column: "day", as: String.self),
            requests: try row.decode(column: "requests", as: Int.self),
            inputTokens: try row.decode(column: "input_tokens", as: Int.self),
            outputTokens: try row.decode(column: "output_tokens", as: Int.self)
        )
    }
}
