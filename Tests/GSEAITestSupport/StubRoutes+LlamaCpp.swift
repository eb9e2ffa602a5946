import Foundation
import GSEAI
import Hummingbird
import NIOCore

/// llama.cpp's own API (`llama-server`), as the stub speaks it, field by field as the server writes them:
/// health, properties, Prometheus metrics, the native completion (whole, or a stream of `data:` chunks
/// whose last has `"stop": true` and no `[DONE]` after it), infill, tokenizer, chat template, embeddings,
/// reranking, slots and LoRA adapters. Errors are llama.cpp's: `{"error": {"code", "message", "type"}}`.
///
/// Its tokenizer gives each Unicode scalar its code point as a token id (so `detokenize` inverts
/// `tokenize`); generation echoes the prompt a word per token, and `n_predict` cuts it (`stop_type`
/// `limit`); the prompt's fault markers apply.
extension StubRoutes {
    /// The model llama.cpp names in its answers: the first the stub serves.
    var llamaModel: String { served.first ?? StubModels.text }

    func registerLlamaCpp(on router: Router<StubRequestContext>) {
        func post(_ path: String, _ body: @escaping @Sendable (JSONValue, Request) async throws -> Response) {
            router.post(RouterPath(path)) { request, _ in try await handle(request, format: .llamacpp) { try await body($0, request) } }
        }
        router.get("/health") { request, _ in try await handle(request, format: .llamacpp) { _ in Self.json(["status": "ok"]) } }
        router.get("/props") { request, _ in try await handle(request, format: .llamacpp) { _ in await props() } }
        post("/props") { _, _ in Self.json(["success": true]) }
        router.get("/metrics") { request, _ in try await handle(request, format: .llamacpp) { _ in await metrics() } }
        for path in ["/completion", "/completions"] {
            post(path) { body, _ in try await nativeCompletion(body) }
        }
        post("/infill") { body, _ in try await infill(body) }
        post("/tokenize") { body, _ in try tokenize(body) }
        post("/detokenize") { body, _ in try detokenize(body) }
        post("/apply-template") { body, _ in try applyTemplate(body) }
        for path in ["/embedding", "/embeddings"] {
            post(path) { body, _ in try nativeEmbeddings(body) }
        }
        for path in ["/rerank", "/reranking", "/v1/rerank", "/v1/reranking"] {
            post(path) { body, _ in try rerank(body) }
        }
        router.get("/slots") { request, _ in try await handle(request, format: .llamacpp) { _ in await slots(request) } }
        post("/slots/:id") { body, request in try await slotAction(body, request) }
        router.get("/lora-adapters") { request, _ in try await handle(request, format: .llamacpp) { _ in await loraAdapters() } }
        post("/lora-adapters") { body, _ in try await setLoraAdapters(body) }
    }

    /// llama.cpp's error body.
    static func llamaError(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let type: String = switch status.code {
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 501: "not_supported_error"
        case 503: "unavailable_error"
        case 500...: "server_error"
        default: "invalid_request_error"
        }
        return json(["error": ["code": .number(Double(status.code)), "message": .string(message), "type": .string(type)]], status: status)
    }

    func props() async -> Response {
        let lora = await state.loraScales
        return Self.json([
            "default_generation_settings": [
                "id": 0, "id_task": -1, "n_ctx": 4096, "speculative": false, "is_processing": false,
                "params": ["n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": -1,
                           "lora": .array(lora.enumerated().map { ["id": .number(Double($0.offset)), "scale": .number($0.element)] })],
            ],
            "total_slots": 1,
            "model_alias": .string(llamaModel),
            "model_path": .string("/models/\(llamaModel.replacingOccurrences(of: "/", with: "-")).gguf"),
            "modalities": ["vision": false, "audio": false],
            "endpoint_slots": true, "endpoint_props": true, "endpoint_metrics": true,
            "chat_template": "{% for message in messages %}<start_of_turn>{{ message.role }}\n{{ message.content }}<end_of_turn>\n{% endfor %}",
            "bos_token": "<bos>", "eos_token": "<eos>",
            "build_info": "b0-stub",
            "is_sleeping": false,
        ])
    }

    func metrics() async -> Response {
        let (prompt, predicted, requests) = await state.llamaCounters
        let text = """
            # HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
            # TYPE llamacpp:prompt_tokens_total counter
            llamacpp:prompt_tokens_total \(prompt)
            # HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
            # TYPE llamacpp:tokens_predicted_total counter
            llamacpp:tokens_predicted_total \(predicted)
            # HELP llamacpp:n_decode_total Total number of llama_decode() calls
            # TYPE llamacpp:n_decode_total counter
            llamacpp:n_decode_total \(requests)
            # HELP llamacpp:requests_processing Number of requests processing.
            # TYPE llamacpp:requests_processing gauge
            llamacpp:requests_processing 0

            """
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The prompt as text: a string, or a list of strings and token ids (ids decode as the tokenizer's).
    static func promptText(_ value: JSONValue?) -> String? {
        switch value {
        case .string(let text)?: return text
        case .array(let items)?:
            return items.map { item in item.stringValue ?? item.intValue.map { Self.detokenized([$0]) } ?? "" }.joined()
        default: return nil
        }
    }

    func nativeCompletion(_ body: JSONValue) async throws -> Response {
        guard let prompt = Self.promptText(body["prompt"]) else { throw StubHTTPError(.badRequest, "\"prompt\" must be provided") }
        return try await generate(prompt: prompt, reply: prompt, body: body)
    }

    func infill(_ body: JSONValue) async throws -> Response {
        guard let prefix = body["input_prefix"]?.stringValue, let suffix = body["input_suffix"]?.stringValue else {
            throw StubHTTPError(.badRequest, "\"input_prefix\" and \"input_suffix\" must be provided")
        }
        let extra = (body["input_extra"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined()
        let middle = body["prompt"]?.stringValue ?? ""
        return try await generate(prompt: extra + prefix + suffix + middle, reply: "\(prefix)<FILL>\(suffix)", body: body)
    }

    /// A native completion of `reply` echoed word by word, whole or streamed, in llama.cpp's fields.
    func generate(prompt: String, reply: String, body: JSONValue) async throws -> Response {
        let scenario = Scenario(prompt)
        let streamed = body["stream"]?.boolValue == true
        if scenario.hangHead { try await hangHead() }
        if scenario.error && !streamed { throw StubHTTPError(.internalServerError, "stub failure on request") }
        var pieces = Self.reply(to: reply, images: 0, turn: 1)
        let nPredict = body["n_predict"]?.intValue ?? body["max_tokens"]?.intValue ?? -1
        let limited = nPredict >= 0 && pieces.count > nPredict
        if limited { pieces = Array(pieces.prefix(nPredict)) }
        let evaluated = Self.tokenized(prompt).count
        let slot = body["id_slot"]?.intValue.map { max(0, $0) } ?? 0
        await state.llamaGenerated(prompt: prompt, evaluated: evaluated, predicted: pieces.count)
        let settings: JSONValue = [
            "n_predict": .number(Double(nPredict)), "temperature": .number(body["temperature"]?.doubleValue ?? 0.8),
            "seed": .number(Double(body["seed"]?.intValue ?? -1)),
        ]
        let timings: JSONValue = [
            "cache_n": 0, "prompt_n": .number(Double(evaluated)), "prompt_ms": 1.5, "prompt_per_token_ms": 0.1,
            "prompt_per_second": 10000.0, "predicted_n": .number(Double(pieces.count)), "predicted_ms": 4.0,
            "predicted_per_token_ms": 1.0, "predicted_per_second": 1000.0,
        ]
        let final: JSONValue = [
            "index": 0, "content": .string(streamed ? "" : pieces.joined()), "tokens": [], "id_slot": .number(Double(slot)),
            "stop": true, "model": .string(llamaModel), "tokens_predicted": .number(Double(pieces.count)),
            "tokens_evaluated": .number(Double(evaluated)), "generation_settings": settings, "prompt": .string(prompt),
            "has_new_line": false, "truncated": false, "stop_type": limited ? "limit" : "eos", "stopping_word": "",
            "tokens_cached": .number(Double(evaluated + pieces.count)), "timings": timings,
        ]
        guard streamed else { return Self.json(final) }
        var events = pieces.enumerated().map { index, piece in
            let chunk: JSONValue = [
                "index": 0, "content": .string(piece), "tokens": [], "stop": false, "id_slot": .number(Double(slot)),
                "tokens_predicted": .number(Double(index + 1)), "tokens_evaluated": .number(Double(evaluated)),
            ]
            return ServerSentEvent(data: chunk.jsonString)
        }
        if scenario.error {
            let error: JSONValue = ["error": Self.llamaErrorBody(500, "stub failure mid-stream")]
            events.append(ServerSentEvent(data: error.jsonString))
            return stream(events, scenario: scenario)
        }
        events.append(ServerSentEvent(data: final.jsonString))
        return stream(events, scenario: scenario)
    }

    static func llamaErrorBody(_ code: Int, _ message: String) -> JSONValue {
        ["code": .number(Double(code)), "message": .string(message), "type": code >= 500 ? "server_error" : "invalid_request_error"]
    }

    /// The stub's tokenizer: a token per Unicode scalar, its code point.
    static func tokenized(_ text: String) -> [Int] { text.unicodeScalars.map { Int($0.value) } }

    /// The inverse of ``tokenized(_:)``; ids below 32 (the stub's special tokens, such as BOS 2) are left out.
    static func detokenized(_ tokens: [Int]) -> String {
        String(String.UnicodeScalarView(tokens.compactMap { $0 >= 32 ? Unicode.Scalar(UInt32(clamping: $0)) : nil }))
    }

    func tokenize(_ body: JSONValue) throws -> Response {
        guard let content = body["content"] else { return Self.json(["tokens": []]) }
        var tokens = Self.tokenized(Self.promptText(content) ?? "")
        if body["add_special"]?.boolValue == true { tokens.insert(2, at: 0) }
        guard body["with_pieces"]?.boolValue == true else { return Self.json(["tokens": .array(tokens.map { .number(Double($0)) })]) }
        return Self.json(["tokens": .array(tokens.map { id in
            ["id": .number(Double(id)), "piece": .string(id == 2 ? "<bos>" : Self.detokenized([id]))]
        })])
    }

    func detokenize(_ body: JSONValue) throws -> Response {
        let tokens = (body["tokens"]?.arrayValue ?? []).compactMap(\.intValue)
        return Self.json(["content": .string(Self.detokenized(tokens))])
    }

    /// Gemma's chat template, as `llama-server` applies it.
    func applyTemplate(_ body: JSONValue) throws -> Response {
        guard let messages = body["messages"]?.arrayValue else { throw StubHTTPError(.badRequest, "'messages' is required") }
        var prompt = ""
        for message in messages {
            let role = message["role"]?.stringValue == "assistant" ? "model" : (message["role"]?.stringValue ?? "user")
            let text = (try? Self.contentParts(message["content"]).text) ?? ""
            prompt += "<start_of_turn>\(role)\n\(text)<end_of_turn>\n"
        }
        return Self.json(["prompt": .string(prompt + "<start_of_turn>model\n")])
    }

    /// `/embedding`: one entry per input, `embedding` a list of vectors (one, pooled).
    func nativeEmbeddings(_ body: JSONValue) throws -> Response {
        let inputs: [String]
        switch body["content"] ?? body["input"] {
        case .string(let text)?: inputs = [text]
        case .array(let items)?: inputs = items.compactMap(\.stringValue)
        default: throw StubHTTPError(.badRequest, "\"input\" or \"content\" must be provided")
        }
        return Self.json(.array(inputs.enumerated().map { index, text in
            ["index": .number(Double(index)), "embedding": [.array(Self.vector(text).map { .number(Double($0)) })]]
        }))
    }

    /// Scores each document by the share of the query's words it contains; best first, `top_n` of them.
    func rerank(_ body: JSONValue) throws -> Response {
        guard let query = body["query"]?.stringValue else { throw StubHTTPError(.badRequest, "\"query\" must be provided") }
        guard let documents = body["documents"]?.arrayValue?.compactMap(\.stringValue) else {
            throw StubHTTPError(.badRequest, "\"documents\" must be provided")
        }
        let words = Set(query.lowercased().split(whereSeparator: { !$0.isLetter }).map(String.init))
        var results = documents.enumerated().map { index, document -> (Int, Double) in
            let own = Set(document.lowercased().split(whereSeparator: { !$0.isLetter }).map(String.init))
            return (index, words.isEmpty ? 0 : Double(words.intersection(own).count) / Double(words.count))
        }
        results.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        if let top = body["top_n"]?.intValue { results = Array(results.prefix(max(0, top))) }
        let tokens = documents.reduce(Self.tokenized(query).count) { $0 + Self.tokenized($1).count }
        return Self.json([
            "model": .string(body["model"]?.stringValue ?? llamaModel), "object": "list",
            "usage": ["prompt_tokens": .number(Double(tokens)), "total_tokens": .number(Double(tokens))],
            "results": .array(results.map { ["index": .number(Double($0.0)), "relevance_score": .number($0.1)] }),
        ])
    }

    func slots(_ request: Request) async -> Response {
        let prompt = await state.lastLlamaPrompt
        let slot: JSONValue = [
            "id": 0, "id_task": -1, "n_ctx": 4096, "speculative": false, "is_processing": false,
            "params": ["n_predict": -1, "temperature": 0.8, "seed": -1],
            "prompt": .string(prompt),
            "next_token": ["has_next_token": false, "has_new_line": false, "n_remain": -1, "n_decoded": 0, "stopping_word": ""],
        ]
        return Self.json([slot])
    }

    func slotAction(_ body: JSONValue, _ request: Request) async throws -> Response {
        let path = request.uri.path
        guard let id = Int(path.split(separator: "/").last ?? "") else { throw StubHTTPError(.badRequest, "Invalid slot ID") }
        guard id == 0 else { throw StubHTTPError(.badRequest, "Invalid slot ID") }
        let action = request.uri.queryParameters.get("action")
        switch action {
        case "save", "restore":
            guard let filename = body["filename"]?.stringValue, !filename.isEmpty,
                !filename.contains("/"), !filename.contains("..")
            else { throw StubHTTPError(.badRequest, "Invalid filename") }
            if action == "save" {
                let tokens = await state.saveSlot(filename)
                return Self.json(["id_slot": .number(Double(id)), "filename": .string(filename), "n_saved": .number(Double(tokens)),
                                  "n_written": .number(Double(tokens * 64)), "timings": ["save_ms": 0.5]])
            }
            guard let tokens = await state.restoreSlot(filename) else {
                throw StubHTTPError(.badRequest, "Unable to restore slot, no available space in KV cache or invalid slot save file")
            }
            return Self.json(["id_slot": .number(Double(id)), "filename": .string(filename), "n_restored": .number(Double(tokens)),
                              "n_read": .number(Double(tokens * 64)), "timings": ["restore_ms": 0.5]])
        case "erase":
            let tokens = await state.eraseSlot()
            return Self.json(["id_slot": .number(Double(id)), "n_erased": .number(Double(tokens))])
        default:
            throw StubHTTPError(.badRequest, "Invalid action")
        }
    }

    func loraAdapters() async -> Response {
        let scales = await state.loraScales
        return Self.json(.array(scales.enumerated().map { index, scale in
            ["id": .number(Double(index)), "path": .string("loras/stub-lora-\(index).gguf"), "scale": .number(scale)]
        }))
    }

    func setLoraAdapters(_ body: JSONValue) async throws -> Response {
        guard let entries = body.arrayValue else { throw StubHTTPError(.badRequest, "Request body must be an array") }
        var changes: [Int: Double] = [:]
        for entry in entries {
            guard let id = entry["id"]?.intValue, let scale = entry["scale"]?.doubleValue else {
                throw StubHTTPError(.badRequest, "each adapter needs an \"id\" and a \"scale\"")
            }
            changes[id] = scale
        }
        guard await state.setLoraScales(changes) else { throw StubHTTPError(.badRequest, "invalid adapter id") }
        return Self.json(["success": true])
    }
}

extension StubState {
    /// What the stub's llama.cpp server counted: prompt tokens, predicted tokens, generations.
    var llamaCounters: (Int, Int, Int) { (llama.promptTokens, llama.predictedTokens, llama.generations) }
    /// The last native prompt, which `/slots` shows (as `llama-server` shows every user's).
    var lastLlamaPrompt: String { llama.lastPrompt }
    /// Its two LoRA adapters' scales.
    public var loraScales: [Double] { llama.loraScales }

    func llamaGenerated(prompt: String, evaluated: Int, predicted: Int) {
        llama.promptTokens += evaluated
        llama.predictedTokens += predicted
        llama.generations += 1
        llama.lastPrompt = prompt
        llama.slotTokens = evaluated + predicted
    }

    func saveSlot(_ filename: String) -> Int {
        llama.savedSlots[filename] = llama.slotTokens
        return llama.slotTokens
    }

    func restoreSlot(_ filename: String) -> Int? {
        guard let tokens = llama.savedSlots[filename] else { return nil }
        llama.slotTokens = tokens
        return tokens
    }

    func eraseSlot() -> Int {
        defer { llama.slotTokens = 0 }
        return llama.slotTokens
    }

    func setLoraScales(_ changes: [Int: Double]) -> Bool {
        guard changes.keys.allSatisfy({ llama.loraScales.indices.contains($0) }) else { return false }
        for (id, scale) in changes { llama.loraScales[id] = scale }
        return true
    }
}

/// What the stub's llama.cpp server remembers.
struct StubLlamaState: Sendable {
    var promptTokens = 0
    var predictedTokens = 0
    var generations = 0
    var lastPrompt = ""
    /// Tokens in the slot's KV cache.
    var slotTokens = 0
    var savedSlots: [String: Int] = [:]
    var loraScales: [Double] = [0.0, 0.0]
}
