import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import Testing

/// text-generation-webui's internal endpoints (`/v1/internal/*`) through the gateway to a stub that speaks
/// them, with the client core pointed at the gateway.
@Suite("Gateway: text-generation-webui's internal API")
struct TextGenerationWebUISurfaceTests {
    static func with(kind: UpstreamKind = .tgw, policy: JSONValue? = nil,
                     _ body: (GatewayHarness, _ instructor: String, _ student: String) async throws -> Void) async throws {
        try await GatewayHarness.with(kind: kind) { gateway in
            let instructor = try await gateway.user("ines", role: .instructor)
            let student = try await gateway.user("sam")
            if let policy {
                let created = try await gateway.post("/api/classes", key: instructor.key, json: ["name": "Webui 101", "policy": policy])
                let code = try #require(created.json?["join_code"]?.stringValue)
                let joined = try await gateway.post("/api/classes/join", key: student.key, json: ["code": .string(code)])
                #expect(joined.status == 200, "\(joined.text)")
            }
            try await body(gateway, instructor.key, student.key)
        }
    }

    @Test func everyoneReadsModelsTokensAndLogits() async throws {
        try await Self.with { gateway, _, student in
            try await gateway.withClient(key: student) { client in
                let info = try await client.modelInfo()
                #expect(info.modelName == StubModels.text && info.loader == "llama.cpp" && info.loraNames.isEmpty)
                #expect(try await client.modelList() == StubModels.all)
                let encoded = try await client.encode("Hey")
                #expect(encoded.tokens == [72, 101, 121] && encoded.length == 3)
                #expect(try await client.decode(encoded.tokens) == "Hey")
                #expect(try await client.tokenCount("four") == 4)
                let logits = try await client.logits(TGWLogitsRequest(prompt: "Who is best, Asuka or Rei? Answer:", topLogits: 3))
                #expect(logits == ["Echo:": 0.5, "Who": 0.25, "is": 0.125])
                #expect(try await client.loraList() == ["stub-lora-a", "stub-lora-b"])
                // Its OpenAI-compatible API, as before.
                let chat = try await client.chatCompletions(ChatCompletionRequest(model: "stub/echo-text", messages: [.init(role: "user", content: "hi")]))
                #expect(chat.message?.text == "Echo: hi")
            }
            let encode = await gateway.stub.state.requests(to: "POST /v1/internal/encode")
            #expect(encode.first?.authorization == "Bearer \(gateway.stub.token)")
            #expect(encode.first?.body == ["text": "Hey"])
        }
    }

    @Test func loadingModelsAndLorasAndStoppingGenerationAreForStaff() async throws {
        try await Self.with { gateway, instructor, student in
            for (path, body) in [
                ("/v1/internal/model/load", ["model_name": "stub/echo-vl"]), ("/v1/internal/model/unload", nil),
                ("/v1/internal/lora/load", ["lora_names": ["stub-lora-a"]]), ("/v1/internal/lora/unload", nil),
                ("/v1/internal/stop-generation", nil),
            ] as [(String, JSONValue?)] {
                let refused = try await gateway.request(.POST, path, headers: [("Authorization", "Bearer \(student)")], body: body?.jsonString)
                #expect(refused.status == 403, "\(path)")
                #expect(refused.json?["error"]?["type"] == "permission_error")
                #expect(refused.errorMessage == "this needs the instructor role")
            }
            #expect(await gateway.stub.state.stopGenerationCount == 0)
            try await gateway.withClient(key: instructor) { client in
                try await client.loadModel(named: "stub/echo-vl", args: ["ctx_size": 4096])
                try await client.loadLoras(["stub-lora-b"])
                let info = try await client.modelInfo()
                #expect(info.modelName == "stub/echo-vl" && info.loraNames == ["stub-lora-b"])
                try await client.unloadLoras()
                #expect(try await client.modelInfo().loraNames.isEmpty)
                try await client.stopGeneration()
                try await client.unloadModel()
                #expect(try await client.modelInfo().modelName == "None")
                // text-generation-webui's own refusal (FastAPI's `detail`) passes through.
                do {
                    try await client.loadModel(named: "nope")
                    Issue.record("loading an unknown model succeeded")
                } catch GSEAIError.http(let status, let error) {
                    #expect(status == 400)
                    #expect(error.message == "Failed to load the model.")
                }
            }
            #expect(await gateway.stub.state.stopGenerationCount == 1)
            let load = await gateway.stub.state.requests(to: "POST /v1/internal/model/load").first?.body
            #expect(load?["args"]?["ctx_size"] == 4096)
        }
    }

    @Test func logitsFollowTheClassPolicyAndOtherKindsAnswer501() async throws {
        try await Self.with(policy: ["system_prompt": "Stay on topic.", "system_prompt_locked": true]) { gateway, _, student in
            let refused = try await gateway.post("/v1/internal/logits", key: student, json: ["prompt": "Hi"])
            #expect(refused.status == 403)
            #expect(refused.errorMessage?.contains("its system prompt is fixed") == true)
            // Reading the tokenizer is not generating: it stays open.
            let count = try await gateway.post("/v1/internal/token-count", key: student, json: ["text": "Hi"])
            #expect(count.json?["length"] == 2)
        }
        try await Self.with(policy: ["allowed_models": ["stub/echo-vl"]]) { gateway, _, student in
            // The stub's webui lists stub/echo-vl first (its loaded one, as text-generation-webui does).
            let allowed = try await gateway.post("/v1/internal/logits", key: student, json: ["prompt": "Hi"])
            #expect(allowed.status == 200)
            #expect(allowed.json?["Echo:"] == 0.5)
        }
        try await Self.with(kind: .llamacpp) { gateway, _, student in
            let answer = try await gateway.request(.GET, "/v1/internal/model/info", headers: [("Authorization", "Bearer \(student)")])
            #expect(answer.status == 501)
            #expect(answer.json?["error"]?["type"] == "not_implemented_error")
            #expect(answer.errorMessage?.contains("kind tgw") == true)
        }
    }
}
