import Foundation
import SQLKit

/// Conversations in the `conversations` table.
struct SQLConversationRepository: ConversationRepository {
    let database: any SQLDatabase

    func create(_ conversation: Conversation) async throws {
        try await self.database.insert(into: "conversations")
            .columns(Self.columns)
            .values(
                SQLBind(conversation.id), SQLBind(conversation.userID), SQLBind(conversation.title),
                SQLBind(conversation.model), SQLBind(conversation.systemPrompt), SQLBind(conversation.lastResponseID),
                SQLBind(conversation.classID), SQLBind(conversation.createdAt.unixSeconds),
                SQLBind(conversation.updatedAt.unixSeconds)
            )
            .run()
    }

    func find(id: String, userID: String) async throws -> Conversation? {
        try await self.select()
            .where("id", .equal, id)
            .where("user_id", .equal, userID)
            .first()
            .map(Conversation.init(row:))
    }

    func find(id: String) async throws -> Conversation? {
        try await self.select().where("id", .equal, id).first().map(Conversation.init(row:))
    }

    func list(userID: String, search: String?, before: PageCursor?, limit: Int) async throws -> [Conversation] {
        guard limit > 0 else { return [] }
        var query = self.select().where("user_id", .equal, userID).after(before, column: "updated_at")
        if let search, !search.isEmpty {
            let pattern = "%" + Self.escapedForLike(search) + "%"
            // LOWER on both sides: PostgreSQL's LIKE is case-sensitive, SQLite's only for non-ASCII letters.
            query = query.where(
                """
                (LOWER(title) LIKE LOWER(\(bind: pattern)) ESCAPE '\\'
                OR EXISTS (
                    SELECT 1 FROM messages
                    WHERE messages.conversation_id = conversations.id
                    AND LOWER(messages.text) LIKE LOWER(\(bind: pattern)) ESCAPE '\\'
                ))
                """ as SQLQueryString
            )
        }
        return try await query
            .orderBy("updated_at", .descending)
            .orderBy("id", .descending)
            .limit(limit)
            .all()
            .map(Conversation.init(row:))
    }

    func update(_ conversation: Conversation) async throws {
        try await self.update(conversation) { update in
            update
                .set("title", to: conversation.title)
                .set("model", to: conversation.model)
                .set("system_prompt", to: conversation.systemPrompt)
        }
    }

    /// Records the answer that just finished: only `lastResponseID` and `updatedAt`, so that a title changed
    /// meanwhile in another request is kept. Throws ``StorageError/notFound``.
    func updateLastResponse(of conversation: Conversation) async throws {
        try await self.update(conversation) { $0 }
    }

    /// Sets `last_response_id`, `updated_at` and whatever `setting` adds on the conversation with this id and
    /// owner; throws ``StorageError/notFound``.
    private func update(
        _ conversation: Conversation, setting: (SQLUpdateBuilder) -> SQLUpdateBuilder
    ) async throws {
        let updated = try await setting(self.database.update("conversations"))
            .set("last_response_id", to: conversation.lastResponseID)
            .set("updated_at", to: conversation.updatedAt.unixSeconds)
            .where("id", .equal, conversation.id)
            .where("user_id", .equal, conversation.userID)
            .returning("id")
            .first()
        guard updated != nil else { throw StorageError.notFound }
    }

    func delete(id: String, userID: String) async throws -> Bool {
        // The messages go with it (ON DELETE CASCADE); the images stay, as other messages may show them.
        try await self.database.delete(from: "conversations")
            .where("id", .equal, id)
            .where("user_id", .equal, userID)
            .returning("id")
            .first() != nil
    }

    /// `text` with the `LIKE` wildcards and the escape character itself escaped by `\`.
    static func escapedForLike(_ text: String) -> String {
        var escaped = ""
        for character in text {
            if character == "\\" || character == "%" || character == "_" { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }

    private static let columns = [
        "id", "user_id", "title", "model", "system_prompt", "last_response_id", "class_id", "created_at", "updated_at",
    ]

    private func select() -> SQLSelectBuilder {
        self.database.select().columns(Self.columns).from("conversations")
    }
}

extension Conversation {
    fileprivate init(row: any SQLRow) throws {
        self.init(
            id: try row.decode(column: "id", as: String.self),
            userID: try row.decode(column: "user_id", as: String.self),
            title: try row.decode(column: "title", as: String.self),
            model: try row.decode(column: "model", as: String.self),
            systemPrompt: try row.decode(column: "system_prompt", as: String?.self),
            lastResponseID: try row.decode(column: "last_response_id", as: String?.self),
            classID: try row.decode(column: "class_id", as: String?.self),
            createdAt: try row.decodeDate(column: "created_at"),
            updatedAt: try row.decodeDate(column: "updated_at")
        )
    }
}
