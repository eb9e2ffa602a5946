import Foundation
import GSEAI
import GSEAITestSupport
import Testing

@Suite("LM Studio native API v1")
struct NativeAPITests {
    @Test func listModelsAndTheTokenIsSent() async throws {
        try await withClient { client, stub in
            let list = try await client.listModels()
            #expect(list.models.map(\.key) == ["stub/echo-vl", "stub/echo-text", "stub/embed"])
            #expect(list.models.first?.supportsVision == true)
            #expect(list.models.first?.maxContextLength == 8192)
            #expect(list.models.contains { $0.isLoaded } == false)
            let seen = await stub.state.requests(to: "GET /api/v1/models")
            #expect(seen.map(\.authorization) == ["Bearer stub-token"])
        }
    }

    @Test func loadWithTTLShowsAsLoadedThenUnload() async throws {
        try await withClient { client, stub in
            let loaded = try await client.loadModel("stub/echo-text", ttl: 600)
            #expect(loaded.instanceID == "stub/echo-text")
            #expect(loaded.status == "loaded")
            #expect(await stub.state.requests(to: "POST /api/v1/models/load").last?.body == ["model": "stub/echo-text", "ttl": 600])
            #expect(try await client.listModels().models.first { $0.key == "stub/echo-text" }?.isLoaded == true)
            let unloaded = try await client.unloadModel("stub/echo-text")
            #expect(unloaded.status == "unloaded")
            #expect(try await client.listModels().models.contains { $0.isLoaded } == false)
        }
    }

    @Test func downloadAndPollUntilCompleted() async throws {
        try await withClient { client, _ in
            let started = try await client.downloadModel("new/model")
            let job = try #require(started.jobID)
            #expect(started.status == "downloading")
            var fractions: [Double] = []
            var status = started
            while !status.isFinished {
                status = try await client.downloadStatus(jobID: job)
                fractions.append(try #require(status.fraction))
            }
            #expect(status.status == "completed")
            #expect(fractions == [0.25, 0.5, 0.75, 1])
            #expect(try await client.downloadModel("stub/echo-vl").status == "already_downloaded")
        }
    }

    @Test func unknownDownloadJobIsAnHTTPErrorWithTheServersMessage() async throws {
        try await withClient { client, _ in
            let error = await #expect(throws: GSEAIError.self) { try await client.downloadStatus(jobID: "job_nope") }
            #expect(error?.status == 404)
            #expect(error?.serverError?.message == "no download job 'job_nope'")
        }
    }

    @Test func chatWithEveryParameterSentAsGiven() async throws {
        try await withClient { client, stub in
            let request = ChatRequest(
                model: "stub/echo-text", input: "hello world", systemPrompt: "be brief", temperature: 0.2, topP: 0.9,
                topK: 40, minP: 0.05, repeatPenalty: 1.1, maxOutputTokens: 64, reasoning: "off", contextLength: 4096,
                store: true, ttl: 300, integrations: [["type": "plugin", "id": "mcp/x"]]
            )
            let response = try await client.chat(request)
            #expect(response.text == "Echo: hello world")
            #expect(response.modelInstanceID == "stub/echo-text")
            #expect(response.stats?.inputTokens == 2)
            #expect(response.stats?.totalOutputTokens == 3)
            #expect(response.responseID?.hasPrefix("resp_") == true)
            let sent = try #require(await stub.state.requests(to: "POST /api/v1/chat").last?.body)
            #expect(sent == [
                "model": "stub/echo-text", "input": "hello world", "system_prompt": "be brief", "temperature": 0.2,
                "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "max_output_tokens": 64,
                "reasoning": "off", "context_length": 4096, "store": true, "ttl": 300,
                "integrations": [["type": "plugin", "id": "mcp/x"]],
            ])
        }
    }

    @Test func chatWithAnImageSendsItsDataURL() async throws {
        try await withClient { client, stub in
            let image = try DataURL(imageBytes: tinyPNG)
            let response = try await client.chat(
                ChatRequest(model: "stub/echo-vl", input: .items([.message("what is this"), .image(image)]))
            )
            #expect(response.text == "Echo: what is this [images: 1]")
            let sent = await stub.state.requests(to: "POST /api/v1/chat").last?.body
            #expect(sent?["input"]?.arrayValue?.last?["data_url"]?.stringValue == image.string)
        }
    }

    @Test func continuingByResponseIDAndAnUnknownID() async throws {
        try await withClient { client, _ in
            let first = try await client.chat(ChatRequest(model: "stub/echo-text", input: "one"))
            let second = try await client.chat(
                ChatRequest(model: "stub/echo-text", input: "two", previousResponseID: first.responseID)
            )
            #expect(second.text == "Echo: two (turn 2)")
            #expect(second.responseID != first.responseID)
            let error = await #expect(throws: GSEAIError.self) {
                try await client.chat(ChatRequest(model: "stub/echo-text", input: "x", previousResponseID: "resp_unknown"))
            }
            #expect(error?.status == 404)
        }
    }

    @Test func streamDeliversLMStudioEventsInOrder() async throws {
        try await withClient { client, stub in
            let events = try await collect(try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "stream me")))
            #expect(events.first?.type == "chat.start")
            #expect(events.last?.type == "chat.end")
            #expect(events.map(\.type).contains("prompt_processing.progress"))
            #expect(events.compactMap(\.delta).joined() == "Echo: stream me")
            #expect(events.last?.result?.text == "Echo: stream me")
            #expect(events.last?.result?.responseID?.hasPrefix("resp_") == true)
            #expect(await stub.state.requests(to: "POST /api/v1/chat").last?.body?["stream"] == true)
        }
    }

    @Test func streamErrorEventIsDeliveredThenChatEnd() async throws {
        try await withClient { client, _ in
            let events = try await collect(try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "[[error]]")))
            #expect(events.map(\.type) == [
                "chat.start", "prompt_processing.start", "prompt_processing.progress", "prompt_processing.end", "error", "chat.end",
            ])
            #expect(events[4].error?.message == "stub failure mid-stream")
        }
    }

    @Test(arguments: ["[[cut]]", "[[drop]]"])
    func streamCutMidwayFailsAsInterrupted(_ fault: String) async throws {
        try await withClient { client, _ in
            var deltas = ""
            await #expect(throws: GSEAIError.streamInterrupted) {
                for try await event in try await client.chatStream(
                    ChatRequest(model: "stub/echo-text", input: .text("a b c d e f g h \(fault)"))
                ) {
                    deltas += event.delta ?? ""
                }
            }
            #expect(deltas.hasPrefix("Echo: ") || deltas.isEmpty)
            #expect(!deltas.contains("h "))
        }
    }

    @Test func nonStreamServerErrorCarriesStatusAndMessage() async throws {
        try await withClient { client, _ in
            let error = await #expect(throws: GSEAIError.self) {
                try await client.chat(ChatRequest(model: "stub/echo-text", input: "[[error]]"))
            }
            #expect(error?.status == 500)
            #expect(error?.serverError?.message == "stub failure on request")
            #expect(error?.description == "HTTP 500 Internal Server Error: stub failure on request")
        }
    }

    @Test func wrongTokenIs401() async throws {
        try await withClient(token: "wrong") { client, _ in
            let error = await #expect(throws: GSEAIError.self) { try await client.listModels() }
            #expect(error?.status == 401)
            #expect(error?.serverError?.message == "invalid or missing API token")
        }
    }
}
