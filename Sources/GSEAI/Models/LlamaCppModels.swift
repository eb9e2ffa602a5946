// Models of llama.cpp's own API (`llama-server`: `/completion`, `/tokenize`, `/slots`, …).

/// `GET /health`: `ok` once the model is loaded (503 while loading).
public struct LlamaHealth: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// `ok`, or `loading` (older servers say more, such as `no slot available`).
    public var status: String { value("status") ?? "" }
    /// Idle slots, when the server says.
    public var slotsIdle: Int? { value("slots_idle") }
    /// Busy slots, when the server says.
    public var slotsProcessing: Int? { value("slots_processing") }
}

/// `GET /props`: the server's global properties.
public struct LlamaProps: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The settings a completion starts from (`n_ctx`, `params`).
    public var defaultGenerationSettings: JSONValue? { object["default_generation_settings"] }
    /// How many requests it runs at once (`--parallel`).
    public var totalSlots: Int? { value("total_slots") }
    /// The model file.
    public var modelPath: String? { value("model_path") }
    /// The Jinja chat template.
    public var chatTemplate: String? { value("chat_template") }
    /// `vision`, `audio`: what the model takes besides text.
    public var modalities: [String: Bool]? { value("modalities") }
    /// Whether the server has put its model to sleep.
    public var isSleeping: Bool? { value("is_sleeping") }
}

/// `POST /completion` (and `/infill`): a raw prompt and any of llama.cpp's sampling parameters.
public struct LlamaCompletionRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// A request for `prompt` (text; token ids and mixed lists go through ``object``); `nil`s are not sent.
    public init(prompt: String, nPredict: Int? = nil, temperature: Double? = nil, topK: Int? = nil, topP: Double? = nil,
                minP: Double? = nil, repeatPenalty: Double? = nil, stop: [String]? = nil, seed: Int? = nil, grammar: String? = nil,
                jsonSchema: JSONValue? = nil, nProbs: Int? = nil, cachePrompt: Bool? = nil, idSlot: Int? = nil) {
        self.init(object: ["prompt": .string(prompt)])
        setValue(nPredict, for: "n_predict")
        setValue(temperature, for: "temperature")
        setValue(topK, for: "top_k")
        setValue(topP, for: "top_p")
        setValue(minP, for: "min_p")
        setValue(repeatPenalty, for: "repeat_penalty")
        setValue(stop, for: "stop")
        setValue(seed, for: "seed")
        setValue(grammar, for: "grammar")
        setValue(jsonSchema, for: "json_schema")
        setValue(nProbs, for: "n_probs")
        setValue(cachePrompt, for: "cache_prompt")
        setValue(idSlot, for: "id_slot")
    }

    /// A fill-in-the-middle request: the code before and after the cursor, other files as `input_extra`
    /// (`{"filename", "text"}`), and text to put after the middle token.
    public static func infill(prefix: String, suffix: String, extra: [JSONValue]? = nil, prompt: String? = nil,
                              nPredict: Int? = nil) -> LlamaCompletionRequest {
        var request = LlamaCompletionRequest(object: ["input_prefix": .string(prefix), "input_suffix": .string(suffix)])
        request.setValue(extra, for: "input_extra")
        request.setValue(prompt, for: "prompt")
        request.setValue(nPredict, for: "n_predict")
        return request
    }

    /// Tokens to generate at most (-1: until the end of the text or the context).
    public var nPredict: Int? {
        get { value("n_predict") }
        set { setValue(newValue, for: "n_predict") }
    }
    /// Whether the answer streams; set by the client's methods.
    public var stream: Bool? {
        get { value("stream") }
        set { setValue(newValue, for: "stream") }
    }
}

/// A native completion, or one chunk of its stream (the last has `stop: true` and the totals).
public struct LlamaCompletion: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The generated text (of this chunk, when streamed).
    public var content: String { value("content") ?? "" }
    /// Whether this is the end: the whole answer, or a stream's last chunk.
    public var stop: Bool { value("stop") ?? false }
    /// Why it stopped: `eos`, `limit` (`n_predict`), `word` (a stop string) or `none`.
    public var stopType: String? { value("stop_type") }
    /// Tokens generated.
    public var tokensPredicted: Int? { value("tokens_predicted") }
    /// Prompt tokens read.
    public var tokensEvaluated: Int? { value("tokens_evaluated") }
    /// The model that answered.
    public var model: String? { value("model") }
    /// Speeds and counts (`prompt_n`, `predicted_n`, `predicted_per_second`, …).
    public var timings: JSONValue? { object["timings"] }
    /// The slot that ran it.
    public var idSlot: Int? { value("id_slot") }
}

/// `POST /tokenize`: token ids, or `{"id", "piece"}` entries when the pieces were asked for.
public struct LlamaTokens: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The token ids (also when each came with its piece).
    public var ids: [Int] { (object["tokens"]?.arrayValue ?? []).compactMap { $0.intValue ?? $0["id"]?.intValue } }
    /// Each token's text, when asked for with `withPieces` (a piece that is not UTF-8 is a list of bytes).
    public var pieces: [JSONValue]? {
        guard let tokens = object["tokens"]?.arrayValue, tokens.first?["piece"] != nil else { return nil }
        return tokens.compactMap { $0["piece"] }
    }
}

/// One input's embedding from the native `/embedding`: one vector when pooled, one per token otherwise.
public struct LlamaEmbedding: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Which input it is.
    public var index: Int { value("index") ?? 0 }
    /// The vectors.
    public var embedding: [[Double]] { value("embedding") ?? [] }
}

/// `POST /rerank`: the documents by relevance, best first.
public struct RerankResponse: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// One ranked document.
    public struct Result: Sendable, Hashable {
        /// The document's place in the request.
        public var index: Int
        public var relevanceScore: Double
    }

    public var model: String? { value("model") }
    /// Best first.
    public var results: [Result] {
        (object["results"]?.arrayValue ?? []).map {
            Result(index: $0["index"]?.intValue ?? 0, relevanceScore: $0["relevance_score"]?.doubleValue ?? 0)
        }
    }
    public var usage: Usage? { value("usage") }
}

/// One slot of `GET /slots`.
public struct LlamaSlot: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    public var id: Int { value("id") ?? 0 }
    public var isProcessing: Bool { value("is_processing") ?? false }
    /// Its context size.
    public var nCtx: Int? { value("n_ctx") }
    /// Its sampling parameters.
    public var params: JSONValue? { object["params"] }
    /// The prompt it holds.
    public var prompt: String? { value("prompt") }
}

/// The answer of a slot action (`save`: `n_saved`, `restore`: `n_restored`, `erase`: `n_erased`).
public struct LlamaSlotResult: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    public var idSlot: Int? { value("id_slot") }
    public var filename: String? { value("filename") }
    /// Tokens saved, restored or erased.
    public var tokens: Int? { value("n_saved") ?? value("n_restored") ?? value("n_erased") }
}

/// One LoRA adapter of `GET /lora-adapters`.
public struct LoraAdapter: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// An adapter's new scale, for ``GSEAIClient/setLoraAdapters(_:)``.
    public init(id: Int, scale: Double) {
        self.init(object: ["id": .number(Double(id)), "scale": .number(scale)])
    }

    public var id: Int { value("id") ?? 0 }
    public var path: String? { value("path") }
    /// 0 turns it off.
    public var scale: Double { value("scale") ?? 0 }
}
