// Models of the Anthropic-compatible `POST /v1/messages`.

/// `POST /v1/messages`.
public struct MessagesRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request with the Python client's parameters; `nil` ones are not sent.
    public init(
        model: String,
        messages: [ChatMessage],
        maxTokens: Int,
        system: String? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        stream: Bool? = nil
    ) {
        self.init(object: [:])
        setValue(model, for: "model")
        setValue(messages, for: "messages")
        setValue(maxTokens, for: "max_tokens")
        setValue(system, for: "system")
        setValue(temperature, for: "temperature")
        setValue(topP, for: "top_p")
        setValue(topK, for: "top_k")
        setValue(stream, for: "stream")
    }

    /// Whether the answer is streamed.
    public var stream: Bool? {
        get { value("stream") }
        set { setValue(newValue, for: "stream") }
    }
}

/// `POST /v1/messages`'s answer.
public struct MessagesResponse: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The message id.
    public var id: String? { value("id") }
    /// The content blocks.
    public var content: [JSONValue] { value("content") ?? [] }
    /// The text blocks, joined.
    public var text: String { content.compactMap { $0["text"]?.stringValue }.joined() }
    /// Why generation stopped.
    public var stopReason: String? { value("stop_reason") }
    /// Token usage (`input_tokens`, `output_tokens`).
    public var usage: Usage? { value("usage") }
}

/// One event of a streamed `/v1/messages`: `message_start`, `content_block_start`,
/// `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`, `error`.
public struct MessagesEvent: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The event type.
    public var type: String { value("type") ?? "" }
    /// The text a `content_block_delta` adds.
    public var delta: String? {
        type == "content_block_delta" ? object["delta"]?["text"]?.stringValue : nil
    }
}
