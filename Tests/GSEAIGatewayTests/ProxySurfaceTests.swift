import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import Testing

/// Every surface forwarded, seen through the client core pointed at the gateway with a personal key.
@Suite("Gateway: API surfaces")
struct ProxySurfaceTests {
    @Test func nativeChatRecordsResponseIDsAndUsageAndInjectsTheToken() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                let first = try await client.chat(ChatRequest(model: "stub/echo-text", input: "hello there friend"))
                #expect(first.text == "Echo: hello there friend")
                let id = try #require(first.responseID)
                #expect(try await gateway.storage.responses.owner(of: id) == alice.id)
                let second = try await client.chat(ChatRequest(model: "stub/echo-text", input: "again", previousResponseID: id))
                #expect(second.text == "Echo: again (turn 2)")
            }
            let seen = await gateway.stub.state.requests(to: "POST /api/v1/chat")
            #expect(seen.map(\.authorization) == ["Bearer stub-token", "Bearer stub-token"])
            let usage = try await gateway.usage(of: alice.id)
            #expect(usage.count == 1)
            #expect(usage.first?.model == "stub/echo-text")
            #expect(usage.first?.requests == 2)
            // 3 input words, then 1 plus the 3 of the history; 4 output pieces each time.
            #expect(usage.first?.inputTokens == 3 + 4)
            #expect(usage.first?.outputTokens == 4 + 4)
        }
    }

    /// A body far larger than a connection's first read (512 bytes, growing as reads fill it), and above the
    /// size that is parsed off the event loop, reaches the model server whole, and so does its echo back.
    @Test func aLargeRequestAndItsLargeAnswerCrossWhole() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let text = (0..<40_000).map { "w\($0)" }.joined(separator: " ")
            #expect(text.utf8.count > 256 << 10)  // ProxyController.largeBody
            let answer = try await gateway.post("/v1/chat/completions", key: key,
                                                json: ["model": "stub/echo-text", "messages": [["role": "user", "content": .string(text)]]])
            #expect(answer.status == 200)
            #expect(answer.json?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue == "Echo: " + text)
            let sent = await gateway.stub.state.requests(to: "POST /v1/chat/completions").first?.body
            #expect(sent?["messages"]?.arrayValue?.first?["content"]?.stringValue == text)
        }
    }

    @Test func nativeStreamRelaysEventsAndRecordsTheStreamedResponseID() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                let events = try await collectAll(try await client.chatStream(ChatRequest(model: "stub/echo-vl", input: "stream it")))
                #expect(events.first?.type == "chat.start")
                #expect(events.compactMap(\.delta).joined() == "Echo: stream it")
                let id = try #require(events.last?.result?.responseID)
                #expect(try await gateway.storage.responses.owner(of: id) == alice.id)
            }
            #expect(try await gateway.usage(of: alice.id).first?.outputTokens == 3)
        }
    }

    @Test func modelListsAndV0() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                #expect(try await client.listModels().models.map(\.key) == ["stub/echo-vl", "stub/echo-text", "stub/embed"])
                #expect(try await client.listModelsOpenAI().data.count == 3)
                #expect(try await client.listModelsV0().data.map(\.type) == ["vlm", "llm", "embeddings"])
                #expect(try await client.modelV0("stub/embed").type == "embeddings")
                let v0 = try await client.chatCompletionsV0(ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "zero")]))
                #expect(v0.message?.text == "Echo: zero")
                #expect(v0["runtime"]?["name"] == "stub-runtime")
                #expect(try await client.completionsV0(CompletionRequest(model: "stub/echo-text", prompt: "p")).text == "Echo: p")
                #expect(try await client.embeddingsV0(EmbeddingsRequest(model: "stub/embed", input: "x")).embeddings.first?.count == 8)
            }
        }
    }

    @Test func openAISurfaceWithAnImageAndUnknownFieldsPassThrough() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                var request = ChatCompletionRequest(
                    model: "stub/echo-vl",
                    messages: [.user("see", images: [try DataURL(imageBytes: Data(base64Encoded: tinyPNGBase64)!)])]
                )
                request["x_future_option"] = ["nested": true]
                let completion = try await client.chatCompletions(request)
                #expect(completion.message?.text == "Echo: see [images: 1]")
                let chunks = try await collectAll(try await client.chatCompletionsStream(
                    ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "streamed")])
                ))
                #expect(chunks.compactMap(\.delta).joined() == "Echo: streamed")
                #expect(try await client.completions(CompletionRequest(model: "stub/echo-text", prompt: "c")).text == "Echo: c")
                let completionChunks = try await collectAll(try await client.completionsStream(CompletionRequest(model: "stub/echo-text", prompt: "s")))
                #expect(completionChunks.compactMap(\.delta).joined() == "Echo: s")
                #expect(try await client.embeddings(EmbeddingsRequest(model: "stub/embed", input: ["a", "b"])).embeddings.count == 2)
            }
            let sent = await gateway.stub.state.requests(to: "POST /v1/chat/completions").first?.body
            #expect(sent?["x_future_option"] == ["nested": true])
        }
    }

    @Test func responsesAreStatefulAndOwned() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                let first = try await client.responses(ResponsesRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "one")]))
                let id = try #require(first.id)
                #expect(try await gateway.storage.responses.owner(of: id) == alice.id)
                let second = try await client.responses(ResponsesRequest(
                    model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "two")], extra: ["previous_response_id": .string(id)]
                ))
                #expect(second.outputText == "Echo: two (turn 2)")
            }
        }
    }

    @Test func anthropicMessagesWithXAPIKey() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            let body: JSONValue = ["model": "stub/echo-text", "max_tokens": 20, "messages": [["role": "user", "content": "salut"]]]
            let whole = try await gateway.post("/v1/messages", key: nil, json: body, headers: [("x-api-key", key), ("anthropic-version", "2023-06-01")])
            #expect(whole.status == 200)
            #expect(whole.json?["content"]?.arrayValue?.first?["text"] == "Echo: salut")
            var streamBody = body
            streamBody = .object(streamBody.objectValue!.merging(["stream": true]) { $1 })
            let streamed = try await gateway.post("/v1/messages", key: nil, json: streamBody, headers: [("x-api-key", key)])
            #expect(streamed.headers["content-type"].first == "text/event-stream")
            #expect(streamed.events.map(\.event).last == "message_stop")
            let text = streamed.events.compactMap { try? JSONValue(parsing: Array($0.data.utf8))["delta"]?["text"]?.stringValue }.joined()
            #expect(text == "Echo: salut")
            let usage = try await gateway.usage(of: alice.id)
            #expect(usage.first?.requests == 2)
            #expect(usage.first?.outputTokens == 4)
        }
    }

    @Test func openAIKindServesOnlyTheOpenAISurface() async throws {
        try await GatewayHarness.with(kind: .openai) { gateway in
            let (_, key) = try await gateway.user("alice")
            let chat = try await gateway.post("/v1/chat/completions", key: key, json: ["model": "stub/echo-text", "messages": [["role": "user", "content": "ok"]]])
            #expect(chat.status == 200)
            let native = try await gateway.post("/api/v1/chat", key: key, json: ["model": "stub/echo-text", "input": "x"])
            #expect(native.status == 501)
            #expect(native.errorMessage?.contains("/api/v1/chat is not available") == true)
            let messages = try await gateway.post("/v1/messages", key: key, json: ["model": "m", "max_tokens": 1, "messages": []])
            #expect(messages.status == 501)
            #expect(messages.json?["type"] == "error")
            #expect(messages.json?["error"]?["type"] == "invalid_request_error")
            let models = try await gateway.request(.GET, "/api/v0/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(models.status == 501)
            #expect(await gateway.stub.state.requests(to: "POST /api/v1/chat").isEmpty)
        }
    }
}

/// Collects a stream's elements.
func collectAll<S: AsyncSequence>(_ stream: S) async throws -> [S.Element] {
    var all: [S.Element] = []
    for try await element in stream { all.append(element) }
    return all
}
