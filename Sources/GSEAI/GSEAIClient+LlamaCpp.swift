import Foundation
import NIOCore

/// llama.cpp's own API (`llama-server`), as the Python `LlamaCppClient` calls it. Paths are the server's own:
/// give the client the gateway's `…/llamacpp` as its base URL, or the llama.cpp server's address. Its
/// OpenAI-compatible endpoints there are the ``listModelsOpenAI()``, ``chatCompletions(_:)`` and
/// ``embeddings(_:)`` of the same client.
extension GSEAIClient {
    /// `GET /health`: whether the server is ready.
    public func health() async throws -> LlamaHealth {
        try await json(.GET, "/health")
    }

    /// `GET /props`: the server's global properties.
    public func props() async throws -> LlamaProps {
        try await json(.GET, "/props")
    }

    /// `POST /props`: changes global properties (a server started with `--props`).
    public func setProps(_ properties: [String: JSONValue]) async throws -> JSONValue {
        try await json(.POST, "/props", body: properties)
    }

    /// `GET /metrics`: Prometheus metrics as text (a server started with `--metrics`).
    public func metrics() async throws -> String {
        let response = try await send(RawRequest(method: .GET, path: "/metrics"))
        let bytes = try await response.body.collect(upTo: maxResponseBytes)
        try Self.checkStatus(response.status, bytes)
        return String(buffer: bytes)
    }

    /// `POST /completion`: a whole native completion. `stream` in the request is ignored.
    public func completion(_ request: LlamaCompletionRequest) async throws -> LlamaCompletion {
        var request = request
        request.stream = nil
        return try await json(.POST, "/completion", body: request)
    }

    /// `POST /completion` with `stream: true`: chunks of text until the one with `stop: true`, which carries
    /// the totals; an `error` member fails the stream.
    public func completionStream(_ request: LlamaCompletionRequest) async throws -> EventStream<LlamaCompletion> {
        var request = request
        request.stream = true
        return try await eventStream("/completion", body: request, decode: Self.decodeLlamaChunk)
    }

    /// `POST /infill`: fill in the middle (``LlamaCompletionRequest/infill(prefix:suffix:extra:prompt:nPredict:)``).
    public func infill(_ request: LlamaCompletionRequest) async throws -> LlamaCompletion {
        var request = request
        request.stream = nil
        return try await json(.POST, "/infill", body: request)
    }

    /// `POST /infill` with `stream: true`.
    public func infillStream(_ request: LlamaCompletionRequest) async throws -> EventStream<LlamaCompletion> {
        var request = request
        request.stream = true
        return try await eventStream("/infill", body: request, decode: Self.decodeLlamaChunk)
    }

    /// `POST /tokenize`: the tokens of `content`, with each token's text when `withPieces`.
    public func tokenize(_ content: String, addSpecial: Bool = false, parseSpecial: Bool = true,
                         withPieces: Bool = false) async throws -> LlamaTokens {
        try await json(.POST, "/tokenize", body: [
            "content": JSONValue.string(content), "add_special": .bool(addSpecial), "parse_special": .bool(parseSpecial),
            "with_pieces": .bool(withPieces),
        ])
    }

    /// `POST /detokenize`: the text of token ids.
    public func detokenize(_ tokens: [Int]) async throws -> String {
        let answer: JSONValue = try await json(.POST, "/detokenize", body: ["tokens": tokens])
        return answer["content"]?.stringValue ?? ""
    }

    /// `POST /apply-template`: the prompt the model's chat template makes of `messages`, without generating.
    public func applyTemplate(_ messages: [ChatMessage]) async throws -> String {
        let answer: JSONValue = try await json(.POST, "/apply-template", body: ["messages": messages])
        return answer["prompt"]?.stringValue ?? ""
    }

    /// `POST /embedding`: native embeddings (a server started with `--embeddings`); `normalize`: -1 none,
    /// 0 max absolute, 1 taxicab, 2 Euclidean.
    public func embedding(_ content: [String], normalize: Int = 2) async throws -> [LlamaEmbedding] {
        try await json(.POST, "/embedding", body: ["content": JSONValue.array(content.map(JSONValue.string)), "embd_normalize": .number(Double(normalize))])
    }

    /// `POST /v1/rerank`: `documents` by relevance to `query` (a reranker started with `--reranking`).
    public func rerank(query: String, documents: [String], topN: Int? = nil) async throws -> RerankResponse {
        var body: [String: JSONValue] = ["query": .string(query), "documents": .array(documents.map(JSONValue.string))]
        if let topN { body["top_n"] = .number(Double(topN)) }
        return try await json(.POST, "/v1/rerank", body: body)
    }

    /// `GET /slots`: each slot's state.
    public func slots() async throws -> [LlamaSlot] {
        try await json(.GET, "/slots")
    }

    /// `POST /slots/{id}?action=save`: writes a slot's KV cache to `filename` (a server with `--slot-save-path`).
    public func saveSlot(_ id: Int, filename: String) async throws -> LlamaSlotResult {
        try await json(.POST, "/slots/\(id)?action=save", body: ["filename": filename])
    }

    /// `POST /slots/{id}?action=restore`: reads a slot's KV cache back from `filename`.
    public func restoreSlot(_ id: Int, filename: String) async throws -> LlamaSlotResult {
        try await json(.POST, "/slots/\(id)?action=restore", body: ["filename": filename])
    }

    /// `POST /slots/{id}?action=erase`: empties a slot's KV cache.
    public func eraseSlot(_ id: Int) async throws -> LlamaSlotResult {
        try await json(.POST, "/slots/\(id)?action=erase")
    }

    /// `GET /lora-adapters`: the LoRA adapters and their scales.
    public func loraAdapters() async throws -> [LoraAdapter] {
        try await json(.GET, "/lora-adapters")
    }

    /// `POST /lora-adapters`: sets adapters' scales (``LoraAdapter/init(id:scale:)``).
    public func setLoraAdapters(_ adapters: [LoraAdapter]) async throws {
        let _: JSONValue = try await json(.POST, "/lora-adapters", body: adapters)
    }

    /// Reads one chunk of a native stream: `stop: true` ends it, an `error` member fails it.
    @Sendable static func decodeLlamaChunk(_ sse: ServerSentEvent) throws -> EventStep<LlamaCompletion> {
        let chunk = try sse.decodeData(as: LlamaCompletion.self)
        if let error = chunk.object["error"] { throw GSEAIError.stream(ServerError(json: ["error": error])) }
        return chunk.stop ? .finish(chunk) : .event(chunk)
    }
}
