// Models of the OpenAI-compatible API (`/v1/*`), also used by LM Studio's `/api/v0/*`.

/// `GET /v1/models` (and `/api/v0/models`): a list of models.
public struct OpenAIModelList: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The models.
    public var data: [OpenAIModel] { value("data") ?? [] }
}

/// One model of ``OpenAIModelList``; LM Studio v0 adds `state`, `type`, `max_context_length`, …
public struct OpenAIModel: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The model's identifier.
    public var id: String { value("id") ?? "" }
    /// `loaded` or `not-loaded` (LM Studio v0).
    public var state: String? { value("state") }
    /// `llm`, `vlm` or `embeddings` (LM Studio v0).
    public var type: String? { value("type") }
    /// The largest context (LM Studio v0).
    public var maxContextLength: Int? { value("max_context_length") }
}

/// A chat message: `role` and `content` (text, or parts with `image_url` data URLs).
public struct ChatMessage: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// A message with text content.
    public init(role: String, content: String) {
        self.init(object: ["role": .string(role), "content": .string(content)])
    }

    /// A user message with text and images, as OpenAI `image_url` parts.
    public static func user(_ text: String, images: [DataURL]) -> ChatMessage {
        var parts: [JSONValue] = [["type": "text", "text": .string(text)]]
        for image in images {
            parts.append(["type": "image_url", "image_url": ["url": .string(image.string)]])
        }
        return ChatMessage(object: ["role": "user", "content": .array(parts)])
    }

    /// The role: `system`, `user`, `assistant` or `tool`.
    public var role: String { value("role") ?? "" }
    /// The text of the content (all text parts, joined).
    public var text: String? {
        if let text: String = value("content") { return text }
        guard let parts = object["content"]?.arrayValue else { return nil }
        return parts.compactMap { $0["text"]?.stringValue }.joined()
    }
    /// The tool calls an assistant message makes.
    public var toolCalls: [JSONValue]? { value("tool_calls") }
}

/// `POST /v1/chat/completions`.
public struct ChatCompletionRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request with the Python client's parameters; `nil` ones are not sent.
    public init(
        model: String,
        messages: [ChatMessage],
        temperature: Double? = nil,
        maxTokens: Int? = nil,
        stream: Bool? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        stop: [String]? = nil,
        presencePenalty: Double? = nil,
        frequencyPenalty: Double? = nil,
        repeatPenalty: Double? = nil,
        logitBias: [String: Double]? = nil,
        seed: Int? = nil,
        responseFormat: JSONValue? = nil,
        tools: [JSONValue]? = nil,
        toolChoice: String? = nil,
        ttl: Int? = nil
    ) {
        self.init(object: [:])
        setValue(model, for: "model")
        setValue(messages, for: "messages")
        setValue(temperature, for: "temperature")
        setValue(maxTokens, for: "max_tokens")
        setValue(topP, for: "top_p")
        setValue(topK, for: "top_k")
        setValue(stop, for: "stop")
        setValue(presencePenalty, for: "presence_penalty")
        setValue(frequencyPenalty, for: "frequency_penalty")
        setValue(repeatPenalty, for: "repeat_penalty")
        setValue(logitBias, for: "logit_bias")
        setValue(seed, for: "seed")
        setValue(responseFormat, for: "response_format")
        setValue(tools, for: "tools")
        setValue(toolChoice, for: "tool_choice")
        setValue(ttl, for: "ttl")
        setValue(stream, for: "stream")
    }

    /// The model.
    public var model: String { value("model") ?? "" }
    /// The messages.
    public var messages: [ChatMessage] { value("messages") ?? [] }
    /// Whether the answer is streamed.
    public var stream: Bool? {
        get { value("stream") }
        set { setValue(newValue, for: "stream") }
    }
}

/// `POST /v1/chat/completions`'s answer.
public struct ChatCompletion: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The completion's id.
    public var id: String? { value("id") }
    /// The model that answered.
    public var model: String? { value("model") }
    /// The choices.
    public var choices: [JSONValue] { value("choices") ?? [] }
    /// The first choice's message.
    public var message: ChatMessage? { choices.first?["message"].flatMap { try? $0.decode() } }
    /// Token usage.
    public var usage: Usage? { value("usage") }
}

/// One chunk of a streamed chat completion or completion.
public struct ChatCompletionChunk: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The completion's id.
    public var id: String? { value("id") }
    /// The text this chunk adds (chat `delta.content`, or completion `text`).
    public var delta: String? {
        let choice = object["choices"]?.arrayValue?.first
        return choice?["delta"]?["content"]?.stringValue ?? choice?["text"]?.stringValue
    }
    /// Why generation stopped, on the last chunk.
    public var finishReason: String? {
        object["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue
    }
    /// Token usage, when the server sends it.
    public var usage: Usage? { value("usage") }
}

/// OpenAI token usage.
public struct Usage: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Prompt tokens.
    public var promptTokens: Int? { value("prompt_tokens") ?? value("input_tokens") }
    /// Generated tokens.
    public var completionTokens: Int? { value("completion_tokens") ?? value("output_tokens") }
    /// Both.
    public var totalTokens: Int? { value("total_tokens") }
}

/// `POST /v1/completions`.
public struct CompletionRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request with the Python client's parameters; `prompt` is text or a list of texts.
    public init(
        model: String,
        prompt: JSONValue,
        maxTokens: Int? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        stop: [String]? = nil,
        frequencyPenalty: Double? = nil,
        presencePenalty: Double? = nil,
        stream: Bool? = nil,
        seed: Int? = nil,
        ttl: Int? = nil
    ) {
        self.init(object: ["model": .string(model), "prompt": prompt])
        setValue(maxTokens, for: "max_tokens")
        setValue(temperature, for: "temperature")
        setValue(topP, for: "top_p")
        setValue(topK, for: "top_k")
        setValue(stop, for: "stop")
        setValue(frequencyPenalty, for: "frequency_penalty")
        setValue(presencePenalty, for: "presence_penalty")
        setValue(seed, for: "seed")
        setValue(ttl, for: "ttl")
        setValue(stream, for: "stream")
    }

    /// Whether the answer is streamed.
    public var stream: Bool? {
        get { value("stream") }
        set { setValue(newValue, for: "stream") }
    }
}

/// `POST /v1/completions`'s answer.
public struct Completion: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The first choice's text.
    public var text: String? { object["choices"]?.arrayValue?.first?["text"]?.stringValue }
    /// Token usage.
    public var usage: Usage? { value("usage") }
}

/// `POST /v1/embeddings`.
public struct EmbeddingsRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request; `input` is text or a list of texts.
    public init(model: String, input: JSONValue, encodingFormat: String? = nil, dimensions: Int? = nil) {
        self.init(object: ["model": .string(model), "input": input])
        setValue(encodingFormat, for: "encoding_format")
        setValue(dimensions, for: "dimensions")
    }
}

/// `POST /v1/embeddings`'s answer.
public struct EmbeddingsResponse: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The vectors, in input order (float encoding).
    public var embeddings: [[Double]] {
        (object["data"]?.arrayValue ?? []).map { item in
            (item["embedding"]?.arrayValue ?? []).compactMap(\.doubleValue)
        }
    }
    /// Token usage.
    public var usage: Usage? { value("usage") }
}

/// `POST /v1/responses`: the Python client sends `model`, `messages` and any other parameters.
public struct ResponsesRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request as the Python client does: `model`, `messages`, then `extra` as given.
    public init(model: String, messages: [ChatMessage], extra: [String: JSONValue] = [:]) {
        self.init(object: extra)
        setValue(model, for: "model")
        setValue(messages, for: "messages")
    }
}

/// `POST /v1/responses`'s answer.
public struct ResponseObject: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The response id, to pass as `previous_response_id`.
    public var id: String? { value("id") }
    /// The output items.
    public var output: [JSONValue] { value("output") ?? [] }
    /// The text of the output messages, joined.
    public var outputText: String {
        if let text: String = value("output_text") { return text }
        return output.flatMap { $0["content"]?.arrayValue ?? [] }.compactMap { $0["text"]?.stringValue }.joined()
    }
    /// Token usage.
    public var usage: Usage? { value("usage") }
}
