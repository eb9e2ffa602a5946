import Foundation

/// text-generation-webui's internal API (`/v1/internal/*`, beside its OpenAI-compatible `/v1/*`).
extension GSEAIClient {
    /// `GET /v1/internal/model/info`: the loaded model, its LoRAs and loader.
    public func modelInfo() async throws -> TGWModelInfo {
        try await json(.GET, "/v1/internal/model/info")
    }

    /// `GET /v1/internal/model/list`: the models it can load.
    public func modelList() async throws -> [String] {
        let answer: JSONValue = try await json(.GET, "/v1/internal/model/list")
        return (answer["model_names"]?.arrayValue ?? []).compactMap(\.stringValue)
    }

    /// `POST /v1/internal/model/load`: loads `name` with loader `args` (`ctx_size`, `flash_attn`, …) and
    /// `settings` (`instruction_template`, …).
    public func loadModel(named name: String, args: [String: JSONValue]? = nil, settings: [String: JSONValue]? = nil) async throws {
        var body: [String: JSONValue] = ["model_name": .string(name)]
        if let args { body["args"] = .object(args) }
        if let settings { body["settings"] = .object(settings) }
        let _: JSONValue = try await json(.POST, "/v1/internal/model/load", body: body)
    }

    /// `POST /v1/internal/model/unload`: unloads the loaded model.
    public func unloadModel() async throws {
        let _: JSONValue = try await json(.POST, "/v1/internal/model/unload")
    }

    /// `POST /v1/internal/token-count`: how many tokens `text` is.
    public func tokenCount(_ text: String) async throws -> Int {
        let answer: JSONValue = try await json(.POST, "/v1/internal/token-count", body: ["text": text])
        return answer["length"]?.intValue ?? 0
    }

    /// `POST /v1/internal/encode`: the tokens of `text`.
    public func encode(_ text: String) async throws -> TGWTokens {
        try await json(.POST, "/v1/internal/encode", body: ["text": text])
    }

    /// `POST /v1/internal/decode`: the text of `tokens`.
    public func decode(_ tokens: [Int]) async throws -> String {
        let answer: JSONValue = try await json(.POST, "/v1/internal/decode", body: ["tokens": tokens])
        return answer["text"]?.stringValue ?? ""
    }

    /// `POST /v1/internal/stop-generation`: stops every generation the server is running.
    public func stopGeneration() async throws {
        let _: JSONValue = try await json(.POST, "/v1/internal/stop-generation")
    }

    /// `POST /v1/internal/logits`: the next token's most likely candidates, token → probability.
    public func logits(_ request: TGWLogitsRequest) async throws -> [String: Double] {
        try await json(.POST, "/v1/internal/logits", body: request)
    }

    /// `GET /v1/internal/lora/list`: the LoRAs it can apply.
    public func loraList() async throws -> [String] {
        let answer: JSONValue = try await json(.GET, "/v1/internal/lora/list")
        return (answer["lora_names"]?.arrayValue ?? []).compactMap(\.stringValue)
    }

    /// `POST /v1/internal/lora/load`: applies these LoRAs (replacing those applied).
    public func loadLoras(_ names: [String]) async throws {
        let _: JSONValue = try await json(.POST, "/v1/internal/lora/load", body: ["lora_names": names])
    }

    /// `POST /v1/internal/lora/unload`: removes every LoRA.
    public func unloadLoras() async throws {
        let _: JSONValue = try await json(.POST, "/v1/internal/lora/unload")
    }
}
