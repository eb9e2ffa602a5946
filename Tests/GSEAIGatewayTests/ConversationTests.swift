import NIOCore
import Logging
import NIOPosix
import NIOHTTP1
import Foundation
import GSEAI
@testable import GSEAIGateway
import GSEAITestSupport
import Testing

/// The conversation engine through its JSON API, as the page and scripts use it.
@Suite("Conversations")
struct ConversationTests {
    /// The chat page's model list does not wait on the model server once read: as last read while fresh;
    /// when stale, still the last read at once, and one read in the background for the next page.
    @Test func theModelListIsServedAsLastReadAndReadAgainInTheBackground() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("sam")
            let upstream = gateway.gateway.pool.upstreams[0]
            await upstream.refresh()
            let read = await gateway.stub.state.requests(to: "GET /api/v1/models").count
            let page = try await gateway.request(.GET, "/api/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(page.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue }.contains("stub/echo-text") == true, "\(page.text)")
            #expect(await gateway.stub.state.requests(to: "GET /api/v1/models").count == read)
            let stale = try await upstream.chatModels(maxAge: 0)
            #expect(stale == upstream.status.chatModels && !stale.isEmpty)
            var again = read
            for _ in 0..<200 where again == read {
                try await Task.sleep(for: .milliseconds(10))
                again = await gateway.stub.state.requests(to: "GET /api/v1/models").count
            }
            #expect(again == read + 1)
        }
    }

    /// A page that leaves while the model list is being read (a model server that accepts and says nothing)
    /// says nothing of that server: it stays up. A listing that fails (nothing listens) marks it down.
    @Test(.timeLimit(.minutes(1))) func aModelListingThePageLeftDoesNotMarkTheServerDown() async throws {
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let nothing = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let closedPort = try #require(nothing.localAddress?.port)
        try await nothing.close()
        func upstream(_ port: Int) throws -> Upstream {
            try Upstream(settings: UpstreamSettings(name: "gpu", url: "http://127.0.0.1:\(port)", kind: .lmstudio, token: "t", slots: 1),
                         timeouts: .init(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        }

        let waited = try upstream(try #require(silent.localAddress?.port))
        let page = Task { try await waited.chatModels() }
        try await Task.sleep(for: .milliseconds(300))
        page.cancel()
        await #expect(throws: (any Error).self) { try await page.value }
        #expect(waited.status.up && waited.status.lastError == nil, "\(waited.status)")
        try await silent.close()

        let refused = try upstream(closedPort)
        await #expect(throws: (any Error).self) { try await refused.chatModels() }
        #expect(!refused.status.up && refused.status.lastError != nil, "\(refused.status)")
    }

    struct Chat {
        let gateway: GatewayHarness
        let client: GSEAIClient

        func json(_ method: NIOHTTP1.HTTPMethod, _ path: String, _ body: JSONValue? = nil) async throws -> (Int, JSONValue?) {
            let response = try await client.send(try RawRequest(method: method, path: path, json: body))
            let bytes = try await response.body.collect(upTo: 16 << 20)
            return (response.status, try? JSONValue(parsing: bytes.readableBytesView))
        }

        func create(model: String = "stub/echo-vl", systemPrompt: String? = nil) async throws -> String {
            var body: [String: JSONValue] = ["model": .string(model)]
            if let systemPrompt { body["system_prompt"] = .string(systemPrompt) }
            let (status, json) = try await self.json(.POST, "/api/conversations", .object(body))
            #expect(status == 201)
            return try #require(json?["id"]?.stringValue)
        }

        /// Sends a message and returns the assistant message's id.
        func send(_ conversation: String, _ text: String, images: [String] = []) async throws -> String {
            let (status, json) = try await self.json(.POST, "/api/conversations/\(conversation)/messages",
                                                     ["text": .string(text), "image_ids": .array(images.map(JSONValue.string))])
            #expect(status == 202, "\(String(describing: json))")
            #expect(json?["user_message"]?["text"]?.stringValue == text)
            #expect(json?["assistant_message"]?["status"] == "streaming")
            return try #require(json?["assistant_message"]?["id"]?.stringValue)
        }

        /// Reads the answer's events: all of them up to `end`, or only the first `count`.
        func events(_ conversation: String, _ message: String, after lastEventID: Int? = nil, count: Int? = nil) async throws -> [ServerSentEvent] {
            var request = RawRequest(method: .GET, path: "/api/conversations/\(conversation)/messages/\(message)/events")
            if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
            let response = try await client.send(request)
            #expect(response.status == 200)
            var events: [ServerSentEvent] = []
            for try await event in ServerSentEventStream(response.body) {
                events.append(event)
                if event.event == "end" || events.count == count { break }
            }
            return events
        }

        /// The answer's text from delta events.
        static func text(_ events: [ServerSentEvent]) -> String {
            events.filter { $0.event == "delta" }.compactMap { try? JSONValue(parsing: Array($0.data.utf8))["text"]?.stringValue }.joined()
        }

        static func end(_ events: [ServerSentEvent]) -> JSONValue? {
            events.last { $0.event == "end" }.flatMap { try? JSONValue(parsing: Array($0.data.utf8)) }
        }

        func messages(_ conversation: String) async throws -> [JSONValue] {
            try #require(try await json(.GET, "/api/conversations/\(conversation)").1?["messages"]?.arrayValue)
        }

        func uploadPNG() async throws -> String {
            var request = RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(data: Data(base64Encoded: tinyPNGBase64)!)))
            request.headers.add(name: "Content-Type", value: "image/png")
            let response = try await client.send(request)
            let json = try JSONValue(parsing: try await response.body.collect(upTo: 1 << 20).readableBytesView)
            #expect(response.status == 201)
            #expect(json["width"] == 1)
            return try #require(json["id"]?.stringValue)
        }
    }

    func withChat(kind: UpstreamKind = .lmstudio, _ body: (Chat) async throws -> Void) async throws {
        try await GatewayHarness.with(kind: kind) { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                try await body(Chat(gateway: gateway, client: client))
            }
        }
    }

    @Test func sendStreamsTheAnswerAndContinuesByResponseID() async throws {
        try await withChat { chat in
            let id = try await chat.create(systemPrompt: "be brief")
            let first = try await chat.send(id, "hello there")
            let events = try await chat.events(id, first)
            #expect(Chat.text(events) == "Echo: hello there")
            #expect(events.map(\.id).prefix(3) == ["1", "2", "3"])
            let end = try #require(Chat.end(events))
            #expect(end["status"] == "complete")
            #expect(end["text"] == "Echo: hello there")
            #expect(end["stats"]?["output_tokens"] == 3)
            #expect(end["created_at"]?.stringValue?.hasSuffix("Z") == true)
            let native = await chat.gateway.stub.state.requests(to: "POST /api/v1/chat")
            #expect(native.first?.body?["system_prompt"] == "be brief")
            #expect(native.first?.body?["previous_response_id"] == nil)

            let second = try await chat.send(id, "and more")
            #expect(Chat.text(try await chat.events(id, second)) == "Echo: and more (turn 2)")
            let continued = await chat.gateway.stub.state.requests(to: "POST /api/v1/chat").last?.body
            #expect(continued?["previous_response_id"]?.stringValue?.hasPrefix("resp_") == true)
            #expect(continued?["input"] == "and more")

            let (_, detail) = try await chat.json(.GET, "/api/conversations/\(id)")
            #expect(detail?["conversation"]?["title"] == "hello there")
            #expect(detail?["messages"]?.arrayValue?.map { $0["role"] } == ["user", "assistant", "user", "assistant"])
        }
    }

    @Test func replaysTheTranscriptWhenTheUpstreamForgotIt() async throws {
        try await withChat { chat in
            let id = try await chat.create()
            let image = try await chat.uploadPNG()
            _ = try await chat.events(id, try await chat.send(id, "look at this", images: [image]))
            _ = try await chat.events(id, try await chat.send(id, "second"))
            await chat.gateway.stub.state.forgetResponses()
            let third = try await chat.send(id, "third")
            let events = try await chat.events(id, third)
            #expect(Chat.text(events) == "Echo: third (turn 3)")
            #expect(Chat.end(events)?["status"] == "complete")
            let replay = try #require(await chat.gateway.stub.state.requests(to: "POST /v1/chat/completions").last?.body)
            let messages = try #require(replay["messages"]?.arrayValue)
            #expect(messages.map { $0["role"] } == ["user", "assistant", "user", "assistant", "user"])
            #expect(messages[1]["content"] == "Echo: look at this [images: 1]")
            let parts = messages[0]["content"]?.arrayValue
            #expect(parts?.last?["image_url"]?["url"]?.stringValue == "data:image/png;base64,\(tinyPNGBase64)")
            // After a replay there is no upstream id to continue from, so the next turn replays too.
            _ = try await chat.events(id, try await chat.send(id, "fourth"))
            #expect(await chat.gateway.stub.state.requests(to: "POST /v1/chat/completions").count == 2)
        }
    }

    @Test func openAIUpstreamsAlwaysReplay() async throws {
        try await withChat(kind: .openai) { chat in
            let id = try await chat.create(model: "stub/echo-text", systemPrompt: "sys")
            _ = try await chat.events(id, try await chat.send(id, "one"))
            let second = try await chat.events(id, try await chat.send(id, "two"))
            #expect(Chat.text(second) == "Echo: two (turn 2)")
            #expect(Chat.end(second)?["stats"]?["output_tokens"] == 4)
            let sent = await chat.gateway.stub.state.requests(to: "POST /v1/chat/completions").last?.body
            #expect(sent?["messages"]?.arrayValue?.first?["content"] == "sys")
            #expect(await chat.gateway.stub.state.requests(to: "POST /api/v1/chat").isEmpty)
        }
    }

    @Test func theAnswerSurvivesThePageLeavingAndResumesAfterTheLastEvent() async throws {
        try await withChat { chat in
            let id = try await chat.create()
            let message = try await chat.send(id, "a b c d e f g h [[slow]]")
            let firstPart = try await chat.events(id, message, count: 7)
            #expect(firstPart.last?.id == "7")
            // The page is gone; the answer goes on. Reconnect after event 7.
            let rest = try await chat.events(id, message, after: 7)
            #expect(rest.first?.id == "8")
            #expect(Chat.text(firstPart + rest) == "Echo: a b c d e f g h [[slow]]")
            #expect(Chat.end(rest)?["status"] == "complete")
            // And a page that comes back later reads it whole.
            let later = try await chat.events(id, message)
            #expect(Chat.end(later)?["text"] == "Echo: a b c d e f g h [[slow]]")
            #expect(try await chat.messages(id).last?["text"] == "Echo: a b c d e f g h [[slow]]")
        }
    }

    @Test func stopKeepsThePartialAnswer() async throws {
        try await withChat { chat in
            let id = try await chat.create()
            let message = try await chat.send(id, "one two three four five six seven eight nine [[slow]]")
            let start = try await chat.events(id, message, count: 3)
            #expect(start.count == 3)
            let (status, _) = try await chat.json(.POST, "/api/conversations/\(id)/messages/\(message)/stop")
            #expect(status == 202)
            let rest = try await chat.events(id, message, after: 3)
            let end = try #require(Chat.end(rest))
            #expect(end["status"] == "stopped")
            let text = try #require(end["text"]?.stringValue)
            #expect("Echo: one two three four five six seven eight nine [[slow]]".hasPrefix(text))
            #expect(text.count < 40)
            #expect(try await chat.messages(id).last?["status"] == "stopped")
            // A stopped answer brings no usage from the model server: its pieces are counted instead, so that
            // stopping answers is no way around a token budget.
            let pieces = (start + rest).filter { $0.event == "delta" }.count
            #expect(pieces > 0)
            let alice = try #require(try await chat.gateway.storage.users.find(username: "alice"))
            let usage = try #require(try await chat.gateway.usage(of: alice.id).first)
            #expect(usage.requests == 1)
            #expect(usage.outputTokens == pieces)
            // The upstream request was cancelled.
            var abandoned = 0
            for _ in 0..<30 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await chat.gateway.stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
        }
    }

    @Test func deletingAConversationMidAnswerStopsTheAnswerAndCountsIt() async throws {
        try await withChat { chat in
            let id = try await chat.create()
            let message = try await chat.send(id, "one two three four five six seven eight nine [[slow]]")
            #expect(try await chat.events(id, message, count: 2).count == 2)
            #expect(try await chat.json(.DELETE, "/api/conversations/\(id)").0 == 204)
            #expect(try await chat.json(.GET, "/api/conversations/\(id)").0 == 404)
            // The upstream request was cancelled, and the stopped answer still counts as a request.
            var abandoned = 0
            for _ in 0..<30 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await chat.gateway.stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
            let alice = try #require(try await chat.gateway.storage.users.find(username: "alice"))
            #expect(try await chat.gateway.usage(of: alice.id).first?.requests == 1)
        }
    }

    @Test func aFailureKeepsThePartialAnswerAndRegenerateReplacesIt() async throws {
        try await withChat { chat in
            let id = try await chat.create()
            let failed = try await chat.send(id, "a b c d [[cut]]")
            let end = try #require(Chat.end(try await chat.events(id, failed)))
            #expect(end["status"] == "failed")
            #expect(end["error"] == "the model server's answer broke off")
            #expect(end["text"] == "Echo: ")
            let (status, json) = try await chat.json(.POST, "/api/conversations/\(id)/regenerate")
            #expect(status == 202)
            let again = try #require(json?["assistant_message"]?["id"]?.stringValue)
            #expect(again != failed)
            _ = try await chat.events(id, again)
            let messages = try await chat.messages(id)
            #expect(messages.count == 2)
            #expect(messages.last?["id"]?.stringValue == again)
        }
    }

    @Test func anotherUsersConversationsAndImagesAreNotFound() async throws {
        try await GatewayHarness.with { gateway in
            let (_, aliceKey) = try await gateway.user("alice")
            let (_, bobKey) = try await gateway.user("bob")
            try await gateway.withClient(key: aliceKey) { aliceClient in
                try await gateway.withClient(key: bobKey) { bobClient in
                    let alice = Chat(gateway: gateway, client: aliceClient)
                    let bob = Chat(gateway: gateway, client: bobClient)
                    let id = try await alice.create()
                    let image = try await alice.uploadPNG()
                    let message = try await alice.send(id, "private", images: [image])
                    _ = try await alice.events(id, message)
                    #expect(try await bob.json(.GET, "/api/conversations/\(id)").0 == 404)
                    #expect(try await bob.json(.POST, "/api/conversations/\(id)/messages", ["text": "hi"]).0 == 404)
                    #expect(try await bob.json(.GET, "/api/conversations/\(id)/export?format=json").0 == 404)
                    #expect(try await bob.json(.POST, "/api/conversations/\(id)/messages/\(message)/stop").0 == 404)
                    #expect(try await bob.json(.DELETE, "/api/conversations/\(id)").0 == 404)
                    let events = try await bob.client.send(RawRequest(method: .GET, path: "/api/conversations/\(id)/messages/\(message)/events"))
                    #expect(events.status == 404)
                    #expect(try await bob.json(.GET, "/api/images/\(image)").0 == 404)
                    let own = try await bob.create()
                    #expect(try await bob.json(.POST, "/api/conversations/\(own)/messages", ["text": "x", "image_ids": [.string(image)]]).0 == 404)
                    let (_, list) = try await bob.json(.GET, "/api/conversations")
                    #expect(list?["data"]?.arrayValue?.map { $0["id"]?.stringValue } == [own])
                    #expect(try await alice.json(.GET, "/api/images/\(image)").0 == 200)
                }
            }
        }
    }

    @Test func listSearchRenamePaginateDeleteAndExport() async throws {
        try await withChat { chat in
            var ids: [String] = []
            for topic in ["apples", "bananas", "cherries"] {
                let id = try await chat.create()
                _ = try await chat.events(id, try await chat.send(id, "tell me about \(topic)"))
                ids.append(id)
            }
            let (_, page) = try await chat.json(.GET, "/api/conversations?limit=2")
            #expect(page?["data"]?.arrayValue?.map { $0["id"]?.stringValue } == [ids[2], ids[1]])
            let cursor = try #require(page?["next_cursor"]?.stringValue)
            let (_, next) = try await chat.json(.GET, "/api/conversations?limit=2&cursor=\(cursor)")
            #expect(next?["data"]?.arrayValue?.map { $0["id"]?.stringValue } == [ids[0]])
            #expect(next?["next_cursor"] == nil)
            // Search finds answers' text too.
            let (_, found) = try await chat.json(.GET, "/api/conversations?q=BANANA")
            #expect(found?["data"]?.arrayValue?.map { $0["id"]?.stringValue } == [ids[1]])
            // As the page's URLSearchParams writes a query: '+' is a space, '%2B' a plus.
            let (_, spaced) = try await chat.json(.GET, "/api/conversations?q=about+CHERRIES")
            #expect(spaced?["data"]?.arrayValue?.map { $0["id"]?.stringValue } == [ids[2]])
            let (_, plus) = try await chat.json(.GET, "/api/conversations?q=about%2Bcherries")
            #expect(plus?["data"]?.arrayValue == [])
            let (_, renamed) = try await chat.json(.PATCH, "/api/conversations/\(ids[0])", ["title": "Fruit"])
            #expect(renamed?["title"] == "Fruit")
            let markdown = try await chat.client.send(RawRequest(method: .GET, path: "/api/conversations/\(ids[0])/export?format=markdown"))
            #expect(markdown.headers["content-disposition"].first == "attachment; filename=\"Fruit.md\"")
            let text = String(buffer: try await markdown.body.collect(upTo: 1 << 20))
            #expect(text.hasPrefix("# Fruit\n"))
            #expect(text.contains("## You\n\ntell me about apples\n"))
            #expect(text.contains("## Assistant\n\nEcho: tell me about apples\n"))
            let (_, json) = try await chat.json(.GET, "/api/conversations/\(ids[0])/export?format=json")
            #expect(json?["messages"]?.arrayValue?.count == 2)
            #expect(try await chat.json(.DELETE, "/api/conversations/\(ids[0])").0 == 204)
            #expect(try await chat.json(.GET, "/api/conversations/\(ids[0])").0 == 404)
        }
    }

    @Test func imagesAreCheckedOnUpload() async throws {
        try await withChat { chat in
            var notImage = RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(string: "hello")))
            notImage.headers.add(name: "Content-Type", value: "image/png")
            let refused = try await chat.client.send(notImage)
            #expect(refused.status == 400)
            #expect(String(buffer: try await refused.body.collect(upTo: 4096)).contains("the file is not a PNG, JPEG, GIF or WebP image"))
            // A PNG header claiming 100000 × 100000 pixels.
            var huge = [UInt8](Data(base64Encoded: tinyPNGBase64)!)
            huge.replaceSubrange(16..<24, with: [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0])
            let big = try await chat.client.send(RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(bytes: huge))))
            #expect(big.status == 413)
            #expect(String(buffer: try await big.body.collect(upTo: 4096)).contains("100000×100000 pixels"))
            let first = try await chat.uploadPNG()
            #expect(try await chat.uploadPNG() == first)
            #expect(first == Secrets.sha256(Data(base64Encoded: tinyPNGBase64)!))
        }
    }

    @Test func answersCutByARestartAreMarkedInterrupted() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            let conversation = Conversation(userID: alice.id, title: "t", model: "stub/echo-text")
            try await gateway.storage.conversations.create(conversation)
            let stuck = try await gateway.storage.messages.append(StoredMessage(
                conversationID: conversation.id, role: "assistant", text: "half an ans", imageHashes: [], status: .streaming, model: "stub/echo-text"
            ))
            #expect(try await gateway.gateway.recoverInterruptedAnswers() == 1)
            try await gateway.withClient(key: key) { client in
                let events = try await Chat(gateway: gateway, client: client).events(conversation.id, stuck.id)
                #expect(events.map(\.event) == ["end"])
                #expect(Chat.end(events)?["status"] == "interrupted")
                #expect(Chat.end(events)?["text"] == "half an ans")
            }
        }
    }

    @Test func thePageIsServedWithAStrictPolicy() async throws {
        let publicFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Public").path
        try await GatewayHarness.with(configure: { $0.publicDirectory = publicFolder }) { gateway in
            let page = try await gateway.request(.GET, "/", headers: [("Accept-Encoding", "gzip")])
            #expect(page.status == 200)
            #expect(page.headers["content-type"].first?.hasPrefix("text/html") == true)
            let policy = try #require(page.headers["content-security-policy"].first)
            #expect(policy.contains("script-src 'self'"))
            #expect(!policy.contains("unsafe-inline"))
            #expect(page.headers["x-content-type-options"].first == "nosniff")
            #expect(page.headers["etag"].first != nil)
            #expect(page.headers["cache-control"].first == "no-cache")
        }
    }
}
