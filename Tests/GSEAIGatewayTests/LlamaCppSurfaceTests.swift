import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import Testing

/// llama.cpp's own API under `/llamacpp`, through the gateway to a stub that speaks it: the client core
/// given the gateway's `…/llamacpp` as base URL, who may call what, and a class's policy on raw prompts.
@Suite("Gateway: llama.cpp's native API")
struct LlamaCppSurfaceTests {
    /// A gateway in front of a llama.cpp stub, an instructor, and a student in the instructor's class (made
    /// with `policy`, when one is given).
    struct Fixture {
        let gateway: GatewayHarness
        let instructor: (user: User, key: String)
        let student: (user: User, key: String)

        /// The client core at the gateway's llama.cpp base.
        func withClient<T: Sendable>(key: String, _ body: (GSEAIClient) async throws -> T) async throws -> T {
            try await gateway.withClient(key: key, basePath: "/llamacpp", body)
        }

        func call(_ method: HTTPMethod, _ path: String, key: String, _ body: JSONValue? = nil) async throws -> HTTPResult {
            try await gateway.request(method, path, headers: [("Authorization", "Bearer \(key)")], body: body?.jsonString)
        }

        /// What the stub received on `route` (its own path, such as `POST /completion`).
        func received(_ route: String) async -> [StubState.Recorded] {
            await gateway.stub.state.requests(to: route)
        }
    }

    static func with(kind: UpstreamKind = .llamacpp, policy: JSONValue? = nil, _ body: (Fixture) async throws -> Void) async throws {
        try await GatewayHarness.with(kind: kind) { gateway in
            let instructor = try await gateway.user("ines", role: .instructor)
            let student = try await gateway.user("sam")
            if let policy {
                let created = try await gateway.post("/api/classes", key: instructor.key, json: ["name": "Llamas 101", "policy": policy])
                #expect(created.status == 201, "\(created.text)")
                let code = try #require(created.json?["join_code"]?.stringValue)
                let joined = try await gateway.post("/api/classes/join", key: student.key, json: ["code": .string(code)])
                #expect(joined.status == 200, "\(joined.text)")
            }
            try await body(Fixture(gateway: gateway, instructor: instructor, student: student))
        }
    }

    @Test func everyReadingEndpointAnswersAStudentThroughTheClientCore() async throws {
        try await Self.with { fixture in
            try await fixture.withClient(key: fixture.student.key) { client in
                #expect(try await client.health().status == "ok")
                let props = try await client.props()
                #expect(props.totalSlots == 1)
                #expect(props.chatTemplate?.contains("<start_of_turn>") == true)
                #expect(try await client.metrics().contains("llamacpp:prompt_tokens_total 0"))

                let tokens = try await client.tokenize("Hi!", addSpecial: true)
                #expect(tokens.ids == [2, 72, 105, 33])
                #expect(try await client.detokenize(tokens.ids) == "Hi!")
                #expect(try await client.tokenize("ab", withPieces: true).pieces == ["a", "b"])
                let prompt = try await client.applyTemplate([ChatMessage(role: "user", content: "Hello")])
                #expect(prompt == "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n")

                let whole = try await client.completion(LlamaCompletionRequest(prompt: "The capital of France", nPredict: 3))
                #expect(whole.content == "Echo: The capital ")
                #expect(whole.stop && whole.stopType == "limit")
                #expect(whole.tokensPredicted == 3 && whole.tokensEvaluated == 21)
                #expect(whole.model == StubModels.vision)

                let chunks = try await collectAll(try await client.completionStream(LlamaCompletionRequest(prompt: "one two")))
                #expect(chunks.map(\.content).joined() == "Echo: one two")
                #expect(chunks.last?.stop == true && chunks.last?.tokensPredicted == 3)

                let infill = try await client.infill(.infill(prefix: "def f():\n    ", suffix: "\n    return x"))
                #expect(infill.content == "Echo: def f():\n    <FILL>\n    return x")

                let embedded = try await client.embedding(["a", "bb"])
                #expect(embedded.map(\.index) == [0, 1])
                #expect(embedded.first?.embedding.first?.count == 8)

                let ranked = try await client.rerank(query: "What is a panda?", documents: ["hello world", "a panda is a bear", "pandas eat"],
                                                     topN: 2)
                #expect(ranked.results.map(\.index) == [1, 0])

                let adapters = try await client.loraAdapters()
                #expect(adapters.map(\.id) == [0, 1] && adapters.allSatisfy { $0.scale == 0 })
                // The OpenAI-compatible endpoints are at the same base.
                #expect(try await client.listModelsOpenAI().data.map(\.id) == StubModels.all)
                let chat = try await client.chatCompletions(ChatCompletionRequest(model: "stub/echo-text", messages: [.init(role: "user", content: "hey")]))
                #expect(chat.message?.text == "Echo: hey")
            }
            // Forwarded to the upstream's own paths, with the upstream's token.
            let completions = await fixture.received("POST /completion")
            #expect(completions.count == 2)
            #expect(completions.allSatisfy { $0.authorization == "Bearer \(fixture.gateway.stub.token)" })
            #expect(await fixture.received("GET /health").count == 1)
            #expect(await fixture.received("POST /v1/rerank").first?.body?["top_n"] == 2)
            // Tokens counted from llama.cpp's own fields, the stream's last chunk too.
            let usage = try await fixture.gateway.usage(of: fixture.student.user.id)
            #expect(usage.reduce(0) { $0 + $1.outputTokens } >= 6)
            #expect(usage.contains { $0.model == StubModels.vision && $0.inputTokens >= 21 + 7 })
        }
    }

    @Test func aStreamIsRelayedAsLlamaCppWritesItAndABrokenOneEndsWithItsError() async throws {
        try await Self.with { fixture in
            let streamed = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key,
                                                  ["prompt": "a b c", "stream": true])
            #expect(streamed.status == 200)
            #expect(streamed.headers["content-type"].first == "text/event-stream")
            let data = streamed.events.map(\.data)
            // No `[DONE]` and no error added: the chunk with "stop": true ends it.
            #expect(data.count == 5)
            #expect(data.last?.contains("\"stop\":true") == true)
            #expect(!streamed.text.contains("error"))

            let cut = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key,
                                             ["prompt": "one two three four [[cut]]", "stream": true])
            let last = try #require(cut.events.last.flatMap { try? JSONValue(parsing: Array($0.data.utf8)) })
            #expect(last["error"]?["code"] == 502)
            #expect(last["error"]?["type"] == "server_error")
            #expect(last["error"]?["message"] == "the model server's answer broke off")
        }
    }

    @Test func studentsMayNotTouchSlotsLoraScalesOrPropertiesAndStaffMay() async throws {
        try await Self.with { fixture in
            let student = fixture.student.key
            for (method, path, body) in [
                (HTTPMethod.GET, "/llamacpp/slots", nil), (.POST, "/llamacpp/slots/0?action=save", ["filename": "s.bin"]),
                (.POST, "/llamacpp/slots/0?action=erase", nil), (.POST, "/llamacpp/lora-adapters", [["id": 0, "scale": 0.5]]),
                (.POST, "/llamacpp/props", [:]),
            ] as [(HTTPMethod, String, JSONValue?)] {
                let refused = try await fixture.call(method, path, key: student, body)
                #expect(refused.status == 403, "\(path)")
                #expect(refused.json?["error"]?["code"] == 403)
                #expect(refused.json?["error"]?["type"] == "permission_error")
                #expect(refused.errorMessage == "this needs the instructor role")
            }
            #expect(await fixture.gateway.stub.state.requests.filter { $0.route.contains("/slots") || $0.route.contains("lora") }.isEmpty)

            try await fixture.withClient(key: fixture.student.key) { client in
                _ = try await client.completion(LlamaCompletionRequest(prompt: "my private essay", nPredict: 2))
            }
            try await fixture.withClient(key: fixture.instructor.key) { client in
                let slots = try await client.slots()
                #expect(slots.first?.prompt == "my private essay")
                let saved = try await client.saveSlot(0, filename: "essay.bin")
                #expect(saved.filename == "essay.bin" && saved.tokens == 18)
                #expect(try await client.eraseSlot(0).tokens == 18)
                #expect(try await client.restoreSlot(0, filename: "essay.bin").tokens == 18)
                try await client.setLoraAdapters([LoraAdapter(id: 1, scale: 0.75)])
                #expect(try await client.loraAdapters().map(\.scale) == [0, 0.75])
                #expect(try await client.setProps([:])["success"] == true)
                // llama.cpp's own refusals pass through as it wrote them.
                await #expect(throws: GSEAIError.self) { try await client.saveSlot(3, filename: "x.bin") }
            }
            #expect(await fixture.received("POST /slots/0").count == 3)
            let bad = try await fixture.call(.POST, "/llamacpp/slots/0?action=explode", key: fixture.instructor.key, [:])
            #expect(bad.status == 400)
            #expect(bad.json?["error"]?["message"] == "Invalid action")
            #expect(bad.json?["error"]?["code"] == 400)
        }
    }

    @Test func aClassPolicyClampsNPredictCountsTheBudgetAndChecksTheServedModel() async throws {
        try await Self.with(policy: ["max_output_tokens": 2, "daily_token_budget": 40]) { fixture in
            let unlimited = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key,
                                                   ["prompt": "alpha beta gamma", "n_predict": -1])
            #expect(unlimited.status == 200)
            #expect(unlimited.json?["tokens_predicted"] == 2)
            #expect(unlimited.json?["stop_type"] == "limit")
            #expect(await fixture.received("POST /completion").last?.body?["n_predict"] == 2)
            let fewer = try await fixture.call(.POST, "/llamacpp/infill", key: fixture.student.key,
                                               ["input_prefix": "x", "input_suffix": "y", "max_tokens": 1])
            #expect(fewer.json?["tokens_predicted"] == 1)
            // A lower limit of its own, under llama.cpp's other name, stays.
            #expect(await fixture.received("POST /infill").last?.body?["n_predict"] == nil)
            #expect(await fixture.received("POST /infill").last?.body?["max_tokens"] == 1)
            // 16 + 2 tokens, then 2 + 1, then a stream of 20 + 2: the budget of 40 is spent.
            let streamed = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key,
                                                  ["prompt": "a long enough prompt", "stream": true])
            #expect(streamed.events.last?.data.contains("\"tokens_predicted\":2") == true)
            let spent = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key, ["prompt": "more"])
            #expect(spent.status == 429)
            #expect(spent.json?["error"]?["code"] == 429)
            #expect(spent.errorMessage?.contains("daily budget") == true)
            // Staff are outside the class's policy.
            let staff = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.instructor.key, ["prompt": "a b c d"])
            #expect(staff.json?["tokens_predicted"] == 5)
        }
        try await Self.with(policy: ["allowed_models": ["stub/echo-text"]]) { fixture in
            // The stub's llama.cpp serves stub/echo-vl (its first model): a request naming none is of that one.
            let refused = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key, ["prompt": "hi"])
            #expect(refused.status == 403)
            #expect(refused.errorMessage?.contains("'stub/echo-vl' is not available") == true)
            let named = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key, ["prompt": "hi", "model": "stub/echo-text"])
            #expect(named.status == 200)
            let models = try await fixture.call(.GET, "/llamacpp/v1/models", key: fixture.student.key)
            #expect(models.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["stub/echo-text"])
        }
    }

    @Test func aLockedSystemPromptRefusesRawPromptsAndReplacesTheCallersInChat() async throws {
        try await Self.with(policy: ["system_prompt": "Answer in French.", "system_prompt_locked": true]) { fixture in
            for (path, body) in [("/llamacpp/completion", ["prompt": "hi"]), ("/llamacpp/infill", ["input_prefix": "a", "input_suffix": "b"])]
                as [(String, JSONValue)]
            {
                let refused = try await fixture.call(.POST, path, key: fixture.student.key, body)
                #expect(refused.status == 403)
                #expect(refused.json?["error"]?["type"] == "permission_error")
                #expect(refused.errorMessage?.contains("its system prompt is fixed") == true)
            }
            #expect(await fixture.received("POST /completion").isEmpty)
            let chat = try await fixture.call(.POST, "/llamacpp/v1/chat/completions", key: fixture.student.key,
                                              ["model": "stub/echo-text", "messages": [["role": "system", "content": "Be rude."],
                                                                                      ["role": "user", "content": "hi"]]])
            #expect(chat.status == 200)
            let sent = await fixture.received("POST /v1/chat/completions").last?.body?["messages"]?.arrayValue
            #expect(sent?.first?["content"] == "Answer in French.")
            #expect(sent?.count == 2)
        }
    }

    @Test func withoutALlamaCppServerTheSurfaceAnswers501InItsOwnFormat() async throws {
        try await Self.with(kind: .lmstudio) { fixture in
            let answer = try await fixture.call(.POST, "/llamacpp/completion", key: fixture.student.key, ["prompt": "hi"])
            #expect(answer.status == 501)
            #expect(answer.json?["error"]?["code"] == 501)
            #expect(answer.json?["error"]?["type"] == "not_supported_error")
            #expect(answer.errorMessage?.contains("/llamacpp/completion is not available") == true)
            #expect(answer.errorMessage?.contains("kind llamacpp") == true)
            let health = try await fixture.call(.GET, "/llamacpp/health", key: fixture.student.key)
            #expect(health.status == 501)
            // An unknown path under the base is a 404 in llama.cpp's form.
            let unknown = try await fixture.call(.GET, "/llamacpp/nothing", key: fixture.student.key)
            #expect(unknown.status == 404)
            #expect(unknown.json?["error"]?["type"] == "not_found_error")
            #expect(await fixture.received("POST /completion").isEmpty)
        }
    }
}
