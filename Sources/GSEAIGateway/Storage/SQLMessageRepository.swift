import Foundation
import GSEAI
import SQLKit

/// Messages in the `messages` table; the JSON fields are stored as JSON text.
struct SQLMessageRepository: MessageRepository {
    let database: any SQLDatabase

    func append(_ message: StoredMessage) async throws -> StoredMessage {
        try await self.database.transaction { session in
            // Writing to the conversation first takes the write lock (SQLite) or the conversation's row lock
            // (PostgreSQL) before the last number is read, so two appends cannot both read the same one; and a
            // write-first transaction cannot fail to upgrade its read lock when another process wrote meanwhile.
            let conversation = try await session.raw("""
                UPDATE conversations SET updated_at = updated_at WHERE id = \(bind: message.conversationID)
                RETURNING id
                """).first()
            guard conversation != nil else { throw StorageError.notFound }
            let last = try await session.raw("""
                SELECT COALESCE(MAX(sequence), 0) AS last FROM messages
                WHERE conversation_id = \(bind: message.conversationID)
                """).first(decodingColumn: "last", as: Int.self) ?? 0
            var stored = message
            stored.sequence = last + 1
            try await session.insert(into: "messages")
                .columns(Self.columns)
                .values(try Self.values(of: stored))
                .run()
            return stored
        }
    }

    func list(conversationID: String) async throws -> [StoredMessage] {
        try await self.select()
            .where("conversation_id", .equal, conversationID)
            .orderBy("sequence")
            .all()
            .map(StoredMessage.init(row:))
    }

    func find(id: String) async throws -> StoredMessage? {
        try await self.select().where("id", .equal, id).first().map(StoredMessage.init(row:))
    }

    func update(_ message: StoredMessage) async throws {
        let updated = try await self.database.update("messages")
            .set("text", to: message.text)
            .set("reasoning", to: message.reasoning)
            .set("output_items", to: message.outputItems?.jsonString)
            .set("stats", to: message.stats?.jsonString)
            .set("response_id", to: message.responseID)
            .set("status", to: message.status.rawValue)
            .set("error", to: message.error)
            .set("updated_at", to: message.updatedAt.unixSeconds)
            .where("id", .equal, message.id)
            .returning("id")
            .first()
        guard updated != nil else { throw StorageError.notFound }
    }

    func delete(id: String) async throws {
        try await self.database.delete(from: "messages").where("id", .equal, id).run()
    }

    func markStreamingAsInterrupted(sparing liveReplicas: [String]?) async throws -> Int {
        // The status as literals, not binds, so that the partial index `messages_streaming` serves the query.
        // `updated_at` stays: it is when the last of the answer was saved, the moment it was cut off.
        guard let liveReplicas, !liveReplicas.isEmpty else {
            return try await self.database.raw("""
                UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' RETURNING id
                """).all().count
        }
        return try await self.database.raw("""
            UPDATE messages SET status = 'interrupted'
            WHERE status = 'streaming' AND (replica IS NULL OR replica NOT IN (\(binds: liveReplicas)))
            RETURNING id
            """).all().count
    }

    func classIDs(showing imageHash: String, sentBy userID: String) async throws -> [String] {
        // `image_hashes` is a JSON array of hex strings, so the quoted hash can only match itself.
        try await self.database.raw("""
            SELECT DISTINCT conversations.class_id AS class_id FROM messages
            JOIN conversations ON conversations.id = messages.conversation_id
            WHERE conversations.user_id = \(bind: userID) AND conversations.class_id IS NOT NULL
              AND messages.role = 'user' AND messages.image_hashes LIKE \(bind: "%\"\(imageHash)\"%")
            """).all(decodingColumn: "class_id", as: String.self)
    }

    func finish(_ message: StoredMessage, conversation: Conversation) async throws {
        guard message.conversationID == conversation.id else { throw StorageError.notFound }
        try await self.database.transaction { session in
            try await SQLMessageRepository(database: session).update(message)
            try await SQLConversationRepository(database: session).updateLastResponse(of: conversation)
        }
    }

    // MARK: Rows

    private static let columns = [
        "id", "conversation_id", "sequence", "role", "text", "image_hashes", "reasoning", "output_items", "stats",
        "response_id", "status", "error", "model", "created_at", "updated_at", "replica",
    ]

    private static func values(of message: StoredMessage) throws -> [any SQLExpression] {
        let imageHashes = String(decoding: try JSONEncoder().encode(message.imageHashes), as: UTF8.self)
        return [
            SQLBind(message.id), SQLBind(message.conversationID), SQLBind(message.sequence), SQLBind(message.role),
            SQLBind(message.text), SQLBind(imageHashes), SQLBind(message.reasoning),
            SQLBind(message.outputItems?.jsonString), SQLBind(message.stats?.jsonString), SQLBind(message.responseID),
            SQLBind(message.status.rawValue), SQLBind(message.error), SQLBind(message.model),
            SQLBind(message.createdAt.unixSeconds), SQLBind(message.updatedAt.unixSeconds), SQLBind(message.replica),
        ]
    }

    private func select() -> SQLSelectBuilder {
        self.database.select().columns(Self.columns).from("messages")
    }
}

extension StoredMessage {
    fileprivate init(row: any SQLRow) throws {
        let statusName = try row.decode(column: "status", as: String.self)
        guard let status = MessageStatus(rawValue: statusName) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: [], debugDescription: "Unknown message status \(statusName)")
            )
        }
        let imageHashes = try row.decode(column: "image_hashes", as: String.self)
        self.init(
            id: try row.decode(column: "id", as: String.self),
            conversationID: try row.decode(column: "conversation_id", as: String.self),
            sequence: try row.decode(column: "sequence", as: Int.self),
            role: try row.decode(column: "role", as: String.self),
            text: try row.decode(column: "text", as: String.self),
            imageHashes: try JSONDecoder().decode([String].self, from: Data(imageHashes.utf8)),
            reasoning: try row.decode(column: "reasoning", as: String?.self),
            outputItems: try row.decodeJSON(column: "output_items"),
            stats: try row.decodeJSON(column: "stats"),
            responseID: try row.decode(column: "response_id", as: String?.self),
            status: status,
            error: try row.decode(column: "error", as: String?.self),
            model: try row.decode(column: "model", as: String?.self),
            createdAt: try row.decodeDate(column: "created_at"),
            updatedAt: try row.decodeDate(column: "updated_at")
        )
        self.replica = try row.decode(column: "replica", as: String?.self)
    }
}

extension SQLRow {
    /// Reads JSON stored as text; SQL `NULL` is `nil` (and the JSON `null` is ``JSONValue/null``).
    fileprivate func decodeJSON(column: String) throws -> JSONValue? {
        try self.decode(column: column, as: String?.self).map { try JSONValue(parsing: Data($0.utf8)) }
    }
}
