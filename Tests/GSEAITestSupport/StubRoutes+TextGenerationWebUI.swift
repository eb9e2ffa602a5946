import Foundation
import GSEAI
import Hummingbird

/// text-generation-webui's internal endpoints (`/v1/internal/*`), as the stub speaks them, field by field as
/// its API writes them: the loaded model (`model_name`, `lora_names`, `loader`), the model and LoRA lists,
/// loading and unloading (answered `"OK"`, a JSON string), the tokenizer (`encode`, `decode`,
/// `token-count`: a token per Unicode scalar, as the stub's llama.cpp), logits (a flat object of token →
/// probability) and stop-generation. Errors are FastAPI's `{"detail": …}`.
extension StubRoutes {
    func registerTextGenerationWebUI(on router: Router<StubRequestContext>) {
        func get(_ path: String, _ body: @escaping @Sendable () async throws -> Response) {
            router.get(RouterPath("/v1/internal" + path)) { request, _ in try await handle(request, format: .fastAPI) { _ in try await body() } }
        }
        func post(_ path: String, _ body: @escaping @Sendable (JSONValue) async throws -> Response) {
            router.post(RouterPath("/v1/internal" + path)) { request, _ in try await handle(request, format: .fastAPI, body) }
        }
        get("/model/info") { await modelInfo() }
        get("/model/list") { Self.json(["model_names": .array(served.map(JSONValue.string))]) }
        post("/model/load") { body in try await loadModelTGW(body) }
        post("/model/unload") { _ in
            await state.setTGWModel(nil)
            return Self.json("OK")
        }
        post("/encode") { body in
            let tokens = Self.tokenized(try Self.requireText(body))
            return Self.json(["tokens": .array(tokens.map { .number(Double($0)) }), "length": .number(Double(tokens.count))])
        }
        post("/decode") { body in
            guard let tokens = body["tokens"]?.arrayValue?.compactMap(\.intValue) else { throw StubHTTPError(.unprocessableContent, "field required: tokens") }
            return Self.json(["text": .string(Self.detokenized(tokens))])
        }
        post("/token-count") { body in Self.json(["length": .number(Double(Self.tokenized(try Self.requireText(body)).count))]) }
        post("/logits") { body in try logits(body) }
        post("/stop-generation") { _ in
            await state.stoppedGeneration()
            return Self.json("OK")
        }
        get("/lora/list") { Self.json(["lora_names": ["stub-lora-a", "stub-lora-b"]]) }
        post("/lora/load") { body in
            guard let names = body["lora_names"]?.arrayValue?.compactMap(\.stringValue) else {
                throw StubHTTPError(.unprocessableContent, "field required: lora_names")
            }
            guard names.allSatisfy({ ["stub-lora-a", "stub-lora-b"].contains($0) }) else {
                throw StubHTTPError(.badRequest, "Failed to apply the LoRA(s).")
            }
            await state.setTGWLoras(names)
            return Self.json("OK")
        }
        post("/lora/unload") { _ in
            await state.setTGWLoras([])
            return Self.json("OK")
        }
    }

    static func requireText(_ body: JSONValue) throws -> String {
        guard let text = body["text"]?.stringValue else { throw StubHTTPError(.unprocessableContent, "field required: text") }
        return text
    }

    func modelInfo() async -> Response {
        let (model, loras) = await state.tgwLoaded
        return Self.json([
            "model_name": .string(model ?? "None"), "lora_names": .array(loras.map(JSONValue.string)), "loader": model == nil ? nil : "llama.cpp",
        ])
    }

    func loadModelTGW(_ body: JSONValue) async throws -> Response {
        guard let name = body["model_name"]?.stringValue else { throw StubHTTPError(.unprocessableContent, "field required: model_name") }
        guard served.contains(name) else { throw StubHTTPError(.badRequest, "Failed to load the model.") }
        await state.setTGWModel(name)
        return Self.json("OK")
    }

    /// The next token's candidates for the prompt: the words of the prompt's echo, most likely first, as many
    /// as `top_logits` asks (50 by default), with probabilities that sum to at most one.
    func logits(_ body: JSONValue) throws -> Response {
        guard let prompt = body["prompt"]?.stringValue else { throw StubHTTPError(.unprocessableContent, "field required: prompt") }
        let words = Self.reply(to: prompt, images: 0, turn: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        var seen: Set<String> = []
        let candidates = words.filter { seen.insert($0).inserted }.prefix(max(0, body["top_logits"]?.intValue ?? 50))
        var result: [String: JSONValue] = [:]
        for (rank, word) in candidates.enumerated() { result[word] = .number(1 / Double(1 << (rank + 1))) }
        return Self.json(.object(result))
    }
}

extension StubState {
    /// text-generation-webui's loaded model (`nil`: none) and LoRAs.
    var tgwLoaded: (String?, [String]) { (textGenerationWebUI.model, textGenerationWebUI.loras) }
    /// How many times stop-generation was asked.
    public var stopGenerationCount: Int { textGenerationWebUI.stops }

    func setTGWModel(_ model: String?) {
        textGenerationWebUI.model = model
        if model == nil { textGenerationWebUI.loras = [] }
    }

    func setTGWLoras(_ names: [String]) { textGenerationWebUI.loras = names }
    func stoppedGeneration() { textGenerationWebUI.stops += 1 }
}

/// What the stub's text-generation-webui remembers.
struct StubTextGenerationWebUIState: Sendable {
    var model: String? = StubModels.text
    var loras: [String] = []
    var stops = 0
}
