// Models of text-generation-webui's internal API (`/v1/internal/*`).

/// `GET /v1/internal/model/info`: the loaded model.
public struct TGWModelInfo: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The loaded model (`None` when there is none).
    public var modelName: String { value("model_name") ?? "" }
    /// The LoRAs applied to it.
    public var loraNames: [String] { value("lora_names") ?? [] }
    /// The loader, such as `llama.cpp` or `ExLlamav3`.
    public var loader: String? { value("loader") }
}

/// `POST /v1/internal/encode`: the token ids of a text.
public struct TGWTokens: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    public var tokens: [Int] { value("tokens") ?? [] }
    public var length: Int { value("length") ?? tokens.count }
}

/// `POST /v1/internal/logits`: the request, with the prompt and whether the sampling parameters apply.
public struct TGWLogitsRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// A request for the next token's candidates after `prompt`; sampling parameters (`top_k`, …) go in
    /// ``object`` and apply with `useSamplers`.
    public init(prompt: String, useSamplers: Bool = false, topLogits: Int? = nil) {
        self.init(object: ["prompt": .string(prompt), "use_samplers": .bool(useSamplers)])
        setValue(topLogits, for: "top_logits")
    }
}
