import Foundation
import GSEAI
import SQLiteKit
import Testing

@testable import GSEAIGateway

/// The chat page's storage: conversations, their messages and images, against a real SQLite database.
@Suite struct ConversationStorageTests {
    /// A fixed instant whose fraction survives the trip through Unix seconds exactly.
    let t0 = Date(timeIntervalSince1970: 1_700_000_000.25)

    // MARK: Conversations

    @Test func aConversationIsFoundOnlyByItsOwner() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let conversation = Conversation(
                userID: alice.id, title: "Cells", model: "qwen/qwen3-8b", systemPrompt: "Be brief.",
                lastResponseID: "resp_1", createdAt: t0, updatedAt: t0 + 5
            )
            try await storage.conversations.create(conversation)

            #expect(try await storage.conversations.find(id: conversation.id, userID: alice.id) == conversation)
            #expect(try await storage.conversations.find(id: conversation.id, userID: bob.id) == nil)
            #expect(try await storage.conversations.find(id: conversation.id) == conversation)
            #expect(try await storage.conversations.find(id: "missing", userID: alice.id) == nil)
            #expect(try await storage.conversations.find(id: "missing") == nil)

            let bare = Conversation(userID: bob.id, title: "New chat", model: "gemma", createdAt: t0)
            try await storage.conversations.create(bare)
            let found = try await storage.conversations.find(id: bare.id, userID: bob.id)
            #expect(found?.systemPrompt == nil)
            #expect(found?.lastResponseID == nil)
            #expect(found?.updatedAt == t0)
            #expect(bare.id == bare.id.lowercased())

            await #expect(throws: (any Error).self) {  // the owner must exist
                try await storage.conversations.create(Conversation(userID: "nobody", title: "x", model: "m"))
            }
        }
    }

    @Test func conversationsAreListedNewestFirstAndPagedByKeyset() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            // c2 and c3 were updated at the same instant: the id breaks the tie, so no page skips or repeats one.
            let updates: [(String, TimeInterval)] = [("c1", 0), ("c2", 1), ("c3", 1), ("c4", 2), ("c5", 3)]
            for (id, offset) in updates.shuffled() {
                try await storage.conversations.create(
                    Conversation(id: id, userID: alice.id, title: id, model: "m", createdAt: t0, updatedAt: t0 + offset)
                )
            }
            try await storage.conversations.create(
                Conversation(id: "b1", userID: bob.id, title: "b1", model: "m", createdAt: t0, updatedAt: t0 + 10)
            )

            let all = try await list(storage, alice, limit: 10)
            #expect(all.map(\.id) == ["c5", "c4", "c3", "c2", "c1"])

            var pages: [[String]] = []
            var cursor: PageCursor? = nil
            while true {
                let page = try await storage.conversations.list(userID: alice.id, search: nil, before: cursor, limit: 2)
                if page.isEmpty { break }
                pages.append(page.map(\.id))
                cursor = page.last.map { PageCursor(at: $0.updatedAt, id: $0.id) }
            }
            #expect(pages == [["c5", "c4"], ["c3", "c2"], ["c1"]])

            #expect(try await list(storage, bob, limit: 10).map(\.id) == ["b1"])
            #expect(try await list(storage, alice, limit: 0).isEmpty)
        }
    }

    @Test func searchMatchesTitlesAndMessageTextLiterally() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let photosynthesis = try await makeConversation("Photosynthesis notes", for: alice, updatedAt: t0 + 4, in: storage)
            let effort = try await makeConversation("Essay on 100% effort", for: alice, updatedAt: t0 + 3, in: storage)
            let snake = try await makeConversation("snake_case names", for: alice, updatedAt: t0 + 2, in: storage)
            let cells = try await makeConversation("Untitled", for: alice, updatedAt: t0 + 1, in: storage)
            let plain = try await makeConversation("Nothing here", for: alice, updatedAt: t0, in: storage)
            _ = try await makeConversation("Photosynthesis too", for: bob, updatedAt: t0 + 9, in: storage)
            try await storage.messages.append(message(in: cells, "user", "Tell me about MITOCHONDRIA"))
            try await storage.messages.append(message(in: cells, "assistant", "They make energy."))
            try await storage.messages.append(message(in: plain, "user", "snake case is not the same"))

            func search(_ text: String?) async throws -> [String] {
                try await storage.conversations.list(userID: alice.id, search: text, before: nil, limit: 10).map(\.id)
            }
            #expect(try await search("PHOTO") == [photosynthesis.id])  // not bob's
            #expect(try await search("mitochondria") == [cells.id])
            #expect(try await search("ENERGY") == [cells.id])
            #expect(try await search("%") == [effort.id])
            #expect(try await search("100%") == [effort.id])
            #expect(try await search("_") == [snake.id])
            #expect(try await search("e_c") == [snake.id])  // "snake case" would match an unescaped `_`
            #expect(try await search("\\") == [])
            #expect(try await search("no such words") == [])
            #expect(try await search(nil).count == 5)
            #expect(try await search("").count == 5)

            // Search and paging together.
            let page = try await storage.conversations.list(
                userID: alice.id, search: "e", before: PageCursor(at: effort.updatedAt, id: effort.id), limit: 2
            )
            #expect(page.map(\.id) == [snake.id, cells.id])
        }
    }

    @Test func updateChangesTheEditableFieldsOfTheOwnersConversation() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let original = try await makeConversation("Draft", for: alice, updatedAt: t0, in: storage)

            var changed = original
            changed.title = "Final"
            changed.model = "gemma"
            changed.systemPrompt = "Answer in French."
            changed.lastResponseID = "resp_9"
            changed.updatedAt = t0 + 30
            changed.createdAt = t0 + 99  // not part of an update
            try await storage.conversations.update(changed)
            var expected = changed
            expected.createdAt = original.createdAt
            #expect(try await storage.conversations.find(id: original.id) == expected)

            var stolen = changed
            stolen.userID = bob.id
            stolen.title = "Mine now"
            await #expect(throws: StorageError.notFound) { try await storage.conversations.update(stolen) }
            let ghost = Conversation(userID: alice.id, title: "ghost", model: "m")
            await #expect(throws: StorageError.notFound) { try await storage.conversations.update(ghost) }
            #expect(try await storage.conversations.find(id: original.id)?.title == "Final")

            changed.systemPrompt = nil
            changed.lastResponseID = nil
            try await storage.conversations.update(changed)
            #expect(try await storage.conversations.find(id: original.id)?.systemPrompt == nil)
            #expect(try await storage.conversations.find(id: original.id)?.lastResponseID == nil)
        }
    }

    @Test func deletingAConversationTakesItsMessages() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let doomed = try await makeConversation("Doomed", for: alice, updatedAt: t0, in: storage)
            let kept = try await makeConversation("Kept", for: alice, updatedAt: t0, in: storage)
            let question = try await storage.messages.append(message(in: doomed, "user", "Hi"))
            try await storage.messages.append(message(in: doomed, "assistant", "Hello"))
            let other = try await storage.messages.append(message(in: kept, "user", "Still here"))

            #expect(try await storage.conversations.delete(id: doomed.id, userID: bob.id) == false)
            #expect(try await storage.messages.list(conversationID: doomed.id).count == 2)

            #expect(try await storage.conversations.delete(id: doomed.id, userID: alice.id) == true)
            #expect(try await storage.conversations.find(id: doomed.id) == nil)
            #expect(try await storage.messages.list(conversationID: doomed.id).isEmpty)
            #expect(try await storage.messages.find(id: question.id) == nil)
            #expect(try await storage.messages.list(conversationID: kept.id) == [other])
            #expect(try await storage.conversations.delete(id: doomed.id, userID: alice.id) == false)
        }
    }

    // MARK: Messages

    @Test func appendNumbersMessagesOneTwoThree() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let first = try await makeConversation("First", for: alice, updatedAt: t0, in: storage)
            let second = try await makeConversation("Second", for: alice, updatedAt: t0, in: storage)

            let question = try await storage.messages.append(
                message(in: first, "user", "What is in this picture?", imageHashes: ["aa11", "bb22"], sequence: 42)
            )
            let answer = try await storage.messages.append(message(in: first, "assistant", "A cat.", model: "qwen"))
            let followUp = try await storage.messages.append(message(in: first, "user", "Which breed?"))
            let elsewhere = try await storage.messages.append(message(in: second, "user", "Hi"))
            #expect([question, answer, followUp].map(\.sequence) == [1, 2, 3])  // the caller's 42 is ignored
            #expect(elsewhere.sequence == 1)

            #expect(try await storage.messages.list(conversationID: first.id) == [question, answer, followUp])
            #expect(try await storage.messages.find(id: question.id) == question)
            #expect(try await storage.messages.find(id: question.id)?.imageHashes == ["aa11", "bb22"])
            #expect(try await storage.messages.find(id: answer.id)?.model == "qwen")
            #expect(try await storage.messages.find(id: "missing") == nil)
            // Appending leaves the conversation's `updatedAt` to the caller.
            #expect(try await storage.conversations.find(id: first.id)?.updatedAt == t0)

            try await storage.messages.delete(id: followUp.id)
            #expect(try await storage.messages.list(conversationID: first.id) == [question, answer])

            await #expect(throws: StorageError.notFound) {
                try await storage.messages.append(StoredMessage(conversationID: "missing", role: "user", text: "?"))
            }
        }
    }

    @Test func concurrentAppendsGetDistinctSequenceNumbers() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let conversation = try await makeConversation("Busy", for: alice, updatedAt: t0, in: storage)
            let appended = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<40 {
                    group.addTask {
                        try await storage.messages.append(message(in: conversation, "user", "message \(index)")).sequence
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(appended.sorted() == Array(1...40))
            let stored = try await storage.messages.list(conversationID: conversation.id)
            #expect(stored.map(\.sequence) == Array(1...40))
            #expect(Set(stored.map(\.text)).count == 40)
        }
    }

    @Test func updateChangesTheAnswerFieldsOnly() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let conversation = try await makeConversation("Chat", for: alice, updatedAt: t0, in: storage)
            let streaming = try await storage.messages.append(
                message(in: conversation, "assistant", "", status: .streaming, model: "qwen")
            )

            var failed = streaming
            failed.text = "Partial"
            failed.reasoning = "Thinking…"
            failed.outputItems = ["partial"]
            failed.stats = ["tokens": 3]
            failed.responseID = "resp_x"
            failed.status = .failed
            failed.error = "The upstream closed the connection."
            failed.updatedAt = t0 + 7
            failed.role = "user"  // not part of an update
            failed.model = "other"  // nor this
            failed.imageHashes = ["cc33"]  // nor this
            try await storage.messages.update(failed)

            var expected = failed
            expected.role = "assistant"
            expected.model = "qwen"
            expected.imageHashes = []
            #expect(try await storage.messages.find(id: streaming.id) == expected)

            let ghost = StoredMessage(conversationID: conversation.id, role: "assistant", text: "")
            await #expect(throws: StorageError.notFound) { try await storage.messages.update(ghost) }
        }
    }

    @Test func finishingAnAnswerUpdatesTheMessageAndTheConversationTogether() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let conversation = try await makeConversation("Chat", for: alice, updatedAt: t0, in: storage)
            let other = try await makeConversation("Other", for: alice, updatedAt: t0, in: storage)
            let streaming = try await storage.messages.append(
                message(in: conversation, "assistant", "", status: .streaming)
            )
            // Renamed in another request while the answer streamed: finishing must not undo it.
            var renamed = conversation
            renamed.title = "Renamed"
            try await storage.conversations.update(renamed)

            var done = streaming
            done.text = "The answer."
            done.status = .complete
            done.responseID = "resp_done"
            done.stats = ["tokens_per_second": 41.5, "output_tokens": 12]
            done.updatedAt = t0 + 20
            var finished = conversation
            finished.lastResponseID = "resp_done"
            finished.updatedAt = t0 + 20

            // A failure in either half writes nothing.
            var foreign = finished
            foreign.userID = bob.id
            await #expect(throws: StorageError.notFound) { try await storage.messages.finish(done, conversation: foreign) }
            await #expect(throws: StorageError.notFound) { try await storage.messages.finish(done, conversation: other) }
            #expect(try await storage.messages.find(id: streaming.id) == streaming)
            #expect(try await storage.conversations.find(id: conversation.id) == renamed)

            try await storage.messages.finish(done, conversation: finished)
            #expect(try await storage.messages.find(id: streaming.id) == done)
            var expected = renamed
            expected.lastResponseID = "resp_done"
            expected.updatedAt = t0 + 20
            #expect(try await storage.conversations.find(id: conversation.id) == expected)
            #expect(try await list(storage, alice, limit: 10).map(\.id) == [conversation.id, other.id])
        }
    }

    @Test func streamingMessagesAreMarkedInterruptedAtStart() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let first = try await makeConversation("One", for: alice, updatedAt: t0, in: storage)
            let second = try await makeConversation("Two", for: alice, updatedAt: t0, in: storage)
            let question = try await storage.messages.append(message(in: first, "user", "Q"))
            let cutOff = try await storage.messages.append(message(in: first, "assistant", "Half an", status: .streaming))
            let alsoCutOff = try await storage.messages.append(message(in: second, "assistant", "", status: .streaming))
            let stopped = try await storage.messages.append(message(in: second, "assistant", "Stop", status: .stopped))

            #expect(try await storage.messages.markStreamingAsInterrupted() == 2)
            #expect(try await storage.messages.find(id: question.id)?.status == .complete)
            #expect(try await storage.messages.find(id: stopped.id)?.status == .stopped)
            var expected = cutOff
            expected.status = .interrupted
            #expect(try await storage.messages.find(id: cutOff.id) == expected)  // the text so far is kept
            #expect(try await storage.messages.find(id: alsoCutOff.id)?.status == .interrupted)
            #expect(try await storage.messages.markStreamingAsInterrupted() == 0)
        }
    }

    @Test func jsonColumnsRoundTrip() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let conversation = try await makeConversation("JSON", for: alice, updatedAt: t0, in: storage)
            let outputItems: JSONValue = [
                ["type": "reasoning", "content": "First, \"quotes\" and ünïcödé ✓ and a\nnewline."],
                ["type": "message", "content": "Hello"],
                [
                    "type": "tool_call", "tool": "search", "arguments": ["query": "cats", "limit": 3, "exact": false],
                    "output": nil,
                ],
                ["type": "invalid_tool_call", "reason": "bad JSON", "metadata": ["raw": "{oops"]],
            ]
            let stats: JSONValue = [
                "input_tokens": 12, "total_output_tokens": 345, "tokens_per_second": 27.125,
                "time_to_first_token_seconds": 0.5, "model_load_time_seconds": nil,
            ]
            let answer = try await storage.messages.append(
                message(in: conversation, "assistant", "Hello", outputItems: outputItems, stats: stats)
            )
            let stored = try await storage.messages.find(id: answer.id)
            #expect(stored?.outputItems == outputItems)
            #expect(stored?.stats == stats)
            #expect(stored == answer)

            // SQL NULL and the JSON `null` stay apart.
            let nullJSON = try await storage.messages.append(message(in: conversation, "assistant", "", outputItems: .null))
            let noJSON = try await storage.messages.append(message(in: conversation, "assistant", ""))
            #expect(try await storage.messages.find(id: nullJSON.id)?.outputItems == .some(.null))
            #expect(try await storage.messages.find(id: noJSON.id)?.outputItems == nil)
            #expect(try await storage.messages.find(id: noJSON.id)?.stats == nil)
        }
    }

    // MARK: Images

    @Test func anImageIsStoredOnceAndOwnedByEachUploader() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-images-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appending(path: "gateway.sqlite").path
        let bytes = Data((0...255).map { UInt8($0) } + [0, 0, 255])  // every byte value, and NULs
        let image = StoredImage(
            hash: String(repeating: "ab", count: 32), mimeType: "image/png", data: bytes, width: 640, height: 480,
            createdAt: t0
        )

        try await withStorage(path: path) { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let carol = try await makeUser("carol", in: storage)
            #expect(try await storage.images.find(hash: image.hash) == nil)

            try await storage.images.store(image, ownerID: alice.id)
            var again = image
            again.mimeType = "image/jpeg"  // the first upload's row stays
            again.createdAt = t0 + 60
            try await storage.images.store(again, ownerID: bob.id)
            try await storage.images.store(again, ownerID: alice.id)

            #expect(try await storage.images.find(hash: image.hash) == image)
            #expect(try await storage.images.isOwned(hash: image.hash, by: alice.id))
            #expect(try await storage.images.isOwned(hash: image.hash, by: bob.id))
            #expect(try await storage.images.isOwned(hash: image.hash, by: carol.id) == false)
            #expect(try await storage.images.isOwned(hash: "cd", by: alice.id) == false)

            // An upload that cannot be owned leaves no bytes behind either.
            let orphan = StoredImage(hash: "ef", mimeType: "image/gif", data: Data([1, 2, 3]), width: 1, height: 1)
            await #expect(throws: (any Error).self) { try await storage.images.store(orphan, ownerID: "nobody") }
            #expect(try await storage.images.find(hash: "ef") == nil)
        }

        try await withRawDatabase(path: path) { database in
            let images = try await database.raw("SELECT COUNT(*) AS n FROM images").first(decodingColumn: "n", as: Int.self)
            #expect(images == 1)
            let owners = try await database.raw("SELECT COUNT(*) AS n FROM image_owners")
                .first(decodingColumn: "n", as: Int.self)
            #expect(owners == 2)
        }
    }

    // MARK: Helpers

    /// The storage helpers (`withStorage`, `withRawDatabase`, `makeUser`) are the ones of the other storage tests.
    let storageTests = StorageTests()

    func withStorage(path: String? = nil, _ body: (Storage) async throws -> Void) async throws {
        try await self.storageTests.withStorage(path: path, body)
    }

    func withRawDatabase(path: String, _ body: (any SQLDatabase) async throws -> Void) async throws {
        try await self.storageTests.withRawDatabase(path: path, body)
    }

    func makeUser(_ username: String, in storage: Storage) async throws -> User {
        try await self.storageTests.makeUser(username, in: storage)
    }

    func makeConversation(_ title: String, for user: User, updatedAt: Date, in storage: Storage) async throws
        -> Conversation
    {
        let conversation = Conversation(userID: user.id, title: title, model: "m", createdAt: t0, updatedAt: updatedAt)
        try await storage.conversations.create(conversation)
        return conversation
    }

    func message(
        in conversation: Conversation, _ role: String, _ text: String, imageHashes: [String] = [], sequence: Int = 0,
        outputItems: JSONValue? = nil, stats: JSONValue? = nil, status: MessageStatus = .complete, model: String? = nil
    ) -> StoredMessage {
        StoredMessage(
            conversationID: conversation.id, sequence: sequence, role: role, text: text, imageHashes: imageHashes,
            outputItems: outputItems, stats: stats, status: status, model: model, createdAt: t0
        )
    }

    func list(_ storage: Storage, _ user: User, limit: Int) async throws -> [Conversation] {
        try await storage.conversations.list(userID: user.id, search: nil, before: nil, limit: limit)
    }
}
