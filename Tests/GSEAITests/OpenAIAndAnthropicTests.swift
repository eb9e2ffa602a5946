import Foundation
import GSEAI
import GSEAITestSupport
import Testing

@Suite("OpenAI-compatible, Anthropic-compatible and LM Studio v0 APIs")
struct OpenAIAndAnthropicTests {
    @Test func listModelsOpenAI() async throws {
        try await withClient { client, _ in
            let ids = try await client.listModelsOpenAI().data.map(\.id)
            #expect(ids == ["stub/echo-vl", "stub/echo-text", "stub/embed"])
        }
    }

    @Test func chatCompletionsWithAnImageAndEveryParameter() async throws {
        try await withClient { client, stub in
            let image = try DataURL(imageBytes: tinyPNG)
            let request = ChatCompletionRequest(
                model: "stub/echo-vl", messages: [ChatMessage(role: "system", content: "sys"), .user("see", images: [image])],
                temperature: 0.1, maxTokens: 10, topP: 0.5, topK: 5, stop: ["\n"], presencePenalty: 0.1,
                frequencyPenalty: 0.2, repeatPenalty: 1.2, logitBias: ["42": -1], seed: 7,
                responseFormat: ["type": "text"], tools: [], toolChoice: "none", ttl: 60
            )
            let completion = try await client.chatCompletions(request)
            #expect(completion.message?.text == "Echo: see [images: 1]")
            #expect(completion.message?.role == "assistant")
            #expect(completion.usage?.completionTokens == 4)
            let sent = try #require(await stub.state.requests(to: "POST /v1/chat/completions").last?.body)
            #expect(sent["seed"] == 7)
            #expect(sent["logit_bias"] == ["42": -1])
            #expect(sent["stream"] == nil)
            #expect(sent["messages"]?.arrayValue?.last?["content"]?.arrayValue?.last?["image_url"]?["url"]?.stringValue == image.string)
        }
    }

    @Test func chatCompletionsStreamEndsAtDone() async throws {
        try await withClient { client, _ in
            let chunks = try await collect(try await client.chatCompletionsStream(
                ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "hi there")])
            ))
            #expect(chunks.compactMap(\.delta).joined() == "Echo: hi there")
            #expect(chunks.last?.finishReason == "stop")
        }
    }

    @Test func chatCompletionsStreamErrorChunkThrows() async throws {
        try await withClient { client, _ in
            await #expect(throws: GSEAIError.stream(ServerError(json: ["error": ["message": "stub failure mid-stream", "type": "server_error"]]))) {
                _ = try await collect(try await client.chatCompletionsStream(
                    ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "[[error]]")])
                ))
            }
        }
    }

    @Test func completionsStreamAndNot() async throws {
        try await withClient { client, _ in
            let completion = try await client.completions(CompletionRequest(model: "stub/echo-text", prompt: "once upon", maxTokens: 5))
            #expect(completion.text == "Echo: once upon")
            let chunks = try await collect(try await client.completionsStream(CompletionRequest(model: "stub/echo-text", prompt: "a time")))
            #expect(chunks.compactMap(\.delta).joined() == "Echo: a time")
        }
    }

    @Test func embeddingsAreDeterministicUnitVectors() async throws {
        try await withClient { client, stub in
            let response = try await client.embeddings(
                EmbeddingsRequest(model: "stub/embed", input: ["alpha", "beta"], encodingFormat: "float", dimensions: 8)
            )
            #expect(response.embeddings.count == 2)
            #expect(response.embeddings.allSatisfy { $0.count == 8 })
            let norm = response.embeddings[0].reduce(0) { $0 + $1 * $1 }
            #expect(abs(norm - 1) < 1e-4)
            #expect(response.embeddings[0] != response.embeddings[1])
            #expect(await stub.state.requests(to: "POST /v1/embeddings").last?.body?["dimensions"] == 8)
        }
    }

    @Test func responsesAreStateful() async throws {
        try await withClient { client, _ in
            let first = try await client.responses(
                ResponsesRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "first")])
            )
            #expect(first.outputText == "Echo: first")
            let second = try await client.responses(ResponsesRequest(
                model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "second")],
                extra: ["previous_response_id": .string(try #require(first.id))]
            ))
            #expect(second.outputText == "Echo: second (turn 2)")
        }
    }

    @Test func messagesStreamAndNot() async throws {
        try await withClient { client, stub in
            let request = MessagesRequest(
                model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "bonjour")], maxTokens: 32,
                system: "be kind", temperature: 0.3, topP: 0.8, topK: 3
            )
            let response = try await client.messages(request)
            #expect(response.text == "Echo: bonjour")
            #expect(response.stopReason == "end_turn")
            let sent = await stub.state.requests(to: "POST /v1/messages").last?.body
            #expect(sent == ["model": "stub/echo-text", "messages": [["role": "user", "content": "bonjour"]],
                             "max_tokens": 32, "system": "be kind", "temperature": 0.3, "top_p": 0.8, "top_k": 3])
            let events = try await collect(try await client.messagesStream(request))
            #expect(events.first?.type == "message_start")
            #expect(events.last?.type == "message_stop")
            #expect(events.compactMap(\.delta).joined() == "Echo: bonjour")
        }
    }

    @Test func messagesStreamErrorEventThrows() async throws {
        try await withClient { client, _ in
            let error = await #expect(throws: GSEAIError.self) {
                _ = try await collect(try await client.messagesStream(MessagesRequest(
                    model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "[[error]]")], maxTokens: 5
                )))
            }
            #expect(error?.serverError?.message == "stub failure mid-stream")
            #expect(error?.serverError?.type == "api_error")
        }
    }

    @Test func lmStudioV0Endpoints() async throws {
        try await withClient { client, _ in
            let models = try await client.listModelsV0()
            #expect(models.data.map(\.type) == ["vlm", "llm", "embeddings"])
            #expect(models.data.allSatisfy { $0.state == "not-loaded" })
            let one = try await client.modelV0("stub/echo-text")
            #expect(one.id == "stub/echo-text")
            #expect(one.maxContextLength == 8192)
            let chat = try await client.chatCompletionsV0(
                ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "v zero")])
            )
            #expect(chat.message?.text == "Echo: v zero")
            #expect(chat["stats"]?["stop_reason"] == "stop")
            #expect(chat["model_info"]?["quant"] == "Q4_K_M")
            let chunks = try await collect(try await client.chatCompletionsStreamV0(
                ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "v0 stream")])
            ))
            #expect(chunks.compactMap(\.delta).joined() == "Echo: v0 stream")
            #expect(try await client.completionsV0(CompletionRequest(model: "stub/echo-text", prompt: "p")).text == "Echo: p")
            #expect(try await client.embeddingsV0(EmbeddingsRequest(model: "stub/embed", input: "x")).embeddings.first?.count == 8)
            let error = await #expect(throws: GSEAIError.self) { try await client.modelV0("no/such") }
            #expect(error?.status == 404)
        }
    }
}
