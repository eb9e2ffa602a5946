// Models of LM Studio's native REST API v1 (`/api/v1/*`).

/// `GET /api/v1/models`: the models the server has.
public struct ModelList: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The models.
    public var models: [ModelInfo] { value("models") ?? [] }
}

/// One model of ``ModelList``.
public struct ModelInfo: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The identifier to use in requests, such as `qwen/qwen3-vl-4b`.
    public var key: String { value("key") ?? value("id") ?? "" }
    /// `llm` or `embedding`.
    public var type: String? { value("type") }
    /// The name to show people.
    public var displayName: String? { value("display_name") }
    /// The publisher, such as `qwen`.
    public var publisher: String? { value("publisher") }
    /// The largest context the model supports.
    public var maxContextLength: Int? { value("max_context_length") }
    /// The size on disk.
    public var sizeBytes: Int? { value("size_bytes") }
    /// The instances loaded in memory now.
    public var loadedInstances: [JSONValue] { value("loaded_instances") ?? [] }
    /// Whether any instance is loaded.
    public var isLoaded: Bool { !loadedInstances.isEmpty || value("state", as: String.self) == "loaded" }
    /// Whether the model accepts images.
    public var supportsVision: Bool { object["capabilities"]?["vision"]?.boolValue ?? false }
}

/// `POST /api/v1/models/load` and `/unload`: what the server says it did.
public struct ModelOperationResult: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The loaded instance, for a load.
    public var instanceID: String? { value("instance_id") }
    /// `loaded`, `unloaded`, …
    public var status: String? { value("status") }
    /// Seconds the load took.
    public var loadTimeSeconds: Double? { value("load_time_seconds") }
}

/// `POST /api/v1/models/download` and `GET /api/v1/models/download/status/{job_id}`.
public struct DownloadStatus: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The job to poll.
    public var jobID: String? { value("job_id") }
    /// `downloading`, `paused`, `completed`, `failed`, or `already_downloaded`.
    public var status: String { value("status") ?? "unknown" }
    /// Bytes downloaded so far.
    public var downloadedBytes: Int? { value("downloaded_bytes") }
    /// The total size, when known.
    public var totalSizeBytes: Int? { value("total_size_bytes") }
    /// The current speed.
    public var bytesPerSecond: Double? { value("bytes_per_second") }
    /// Whether the job has ended, well or badly.
    public var isFinished: Bool { ["completed", "failed", "already_downloaded"].contains(status) }
    /// The fraction done, 0…1, when the total is known.
    public var fraction: Double? {
        if status == "completed" || status == "already_downloaded" { return 1 }
        guard let total = totalSizeBytes, total > 0, let done = downloadedBytes else { return nil }
        return min(1, max(0, Double(done) / Double(total)))
    }
}

/// The `input` of a chat request: text, or a list of items (text and images).
public enum ChatInput: Sendable, Hashable, Codable {
    /// A plain text message.
    case text(String)
    /// Items: text messages and images as data URLs.
    case items([ChatInputItem])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .text(text)
        } else {
            self = .items(try container.decode([ChatInputItem].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .items(let items): try container.encode(items)
        }
    }

    /// The text parts joined with newlines.
    public var text: String {
        switch self {
        case .text(let text): return text
        case .items(let items): return items.compactMap(\.content).joined(separator: "\n")
        }
    }

    /// The images' data URLs.
    public var imageDataURLs: [String] {
        if case .items(let items) = self { return items.compactMap(\.dataURL) }
        return []
    }
}

extension ChatInput: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
}

/// One item of ``ChatInput/items(_:)``.
public struct ChatInputItem: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// A text item (`{"type": "message", "content": …}`).
    public static func message(_ content: String) -> ChatInputItem {
        ChatInputItem(object: ["type": "message", "content": .string(content)])
    }

    /// An image item (`{"type": "image", "data_url": …}`).
    public static func image(_ dataURL: DataURL) -> ChatInputItem {
        ChatInputItem(object: ["type": "image", "data_url": .string(dataURL.string)])
    }

    /// `message` (or `text`) or `image`.
    public var type: String? { value("type") }
    /// The text, for a text item.
    public var content: String? { type == "image" ? nil : value("content") ?? value("text") }
    /// The data URL, for an image item.
    public var dataURL: String? { value("data_url") }
}

/// `POST /api/v1/chat`: every parameter of LM Studio's chat request.
public struct ChatRequest: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Creates a request; parameters left `nil` are not sent. `store` is sent as the Python client does.
    public init(
        model: String,
        input: ChatInput,
        systemPrompt: String? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        minP: Double? = nil,
        repeatPenalty: Double? = nil,
        maxOutputTokens: Int? = nil,
        reasoning: String? = nil,
        contextLength: Int? = nil,
        store: Bool = true,
        previousResponseID: String? = nil,
        ttl: Int? = nil,
        integrations: [JSONValue]? = nil,
        stream: Bool? = nil
    ) {
        self.init(object: [:])
        self.model = model
        self.input = input
        self.systemPrompt = systemPrompt
        setValue(temperature, for: "temperature")
        setValue(topP, for: "top_p")
        setValue(topK, for: "top_k")
        setValue(minP, for: "min_p")
        setValue(repeatPenalty, for: "repeat_penalty")
        self.maxOutputTokens = maxOutputTokens
        setValue(reasoning, for: "reasoning")
        setValue(contextLength, for: "context_length")
        self.store = store
        self.previousResponseID = previousResponseID
        setValue(ttl, for: "ttl")
        setValue(integrations, for: "integrations")
        self.stream = stream
    }

    /// The model.
    public var model: String {
        get { value("model") ?? "" }
        set { setValue(newValue, for: "model") }
    }
    /// The input.
    public var input: ChatInput? {
        get { value("input") }
        set { setValue(newValue, for: "input") }
    }
    /// The system prompt.
    public var systemPrompt: String? {
        get { value("system_prompt") }
        set { setValue(newValue, for: "system_prompt") }
    }
    /// The output limit.
    public var maxOutputTokens: Int? {
        get { value("max_output_tokens") }
        set { setValue(newValue, for: "max_output_tokens") }
    }
    /// Whether the server stores the chat and answers with a `response_id`.
    public var store: Bool? {
        get { value("store") }
        set { setValue(newValue, for: "store") }
    }
    /// The response this one continues.
    public var previousResponseID: String? {
        get { value("previous_response_id") }
        set { setValue(newValue, for: "previous_response_id") }
    }
    /// Whether the answer is streamed.
    public var stream: Bool? {
        get { value("stream") }
        set { setValue(newValue, for: "stream") }
    }
}

/// `POST /api/v1/chat`'s answer, and the `result` of a stream's `chat.end`.
public struct ChatResponse: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The loaded instance that answered.
    public var modelInstanceID: String? { value("model_instance_id") }
    /// The output items in order.
    public var output: [ChatOutputItem] { value("output") ?? [] }
    /// Token counts and speed.
    public var stats: ChatStats? { value("stats") }
    /// The id to continue from, when `store` was true.
    public var responseID: String? { value("response_id") }
    /// The text of the `message` items, joined.
    public var text: String {
        output.filter { $0.type == "message" }.compactMap(\.content).joined()
    }
}

/// One output item: `message`, `reasoning`, `tool_call` or `invalid_tool_call`.
public struct ChatOutputItem: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The item's type.
    public var type: String { value("type") ?? "" }
    /// The text of a message or reasoning item.
    public var content: String? { value("content") }
    /// The tool a tool call used.
    public var tool: String? { value("tool") }
    /// The arguments of a tool call.
    public var arguments: JSONValue? { object["arguments"] }
    /// The output of a tool call.
    public var toolOutput: String? { value("output") }
    /// Why a tool call was invalid.
    public var reason: String? { value("reason") }
}

/// Token usage and speed of one chat response.
public struct ChatStats: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// Input tokens, including prior messages.
    public var inputTokens: Int? { value("input_tokens") }
    /// Output tokens generated.
    public var totalOutputTokens: Int? { value("total_output_tokens") }
    /// Output tokens spent on reasoning.
    public var reasoningOutputTokens: Int? { value("reasoning_output_tokens") }
    /// Generation speed.
    public var tokensPerSecond: Double? { value("tokens_per_second") }
    /// Seconds to the first token.
    public var timeToFirstTokenSeconds: Double? { value("time_to_first_token_seconds") }
    /// Seconds spent loading the model, when it was not loaded.
    public var modelLoadTimeSeconds: Double? { value("model_load_time_seconds") }
}

/// One event of a streamed `/api/v1/chat`: `chat.start`, `model_load.*`, `prompt_processing.*`,
/// `reasoning.*`, `tool_call.*`, `message.*`, `error`, `chat.end`.
public struct ChatEvent: JSONObject {
    public var object: [String: JSONValue]
    public init(object: [String: JSONValue]) { self.object = object }

    /// The event type, such as `message.delta`.
    public var type: String { value("type") ?? "" }
    /// The text a `message.delta` or `reasoning.delta` adds.
    public var delta: String? {
        type == "message.delta" ? value("content") : nil
    }
    /// The reasoning text a `reasoning.delta` adds.
    public var reasoningDelta: String? {
        type == "reasoning.delta" ? value("content") : nil
    }
    /// The progress (0…1) of a `*.progress` event.
    public var progress: Double? { value("progress") }
    /// The full response, on `chat.end`.
    public var result: ChatResponse? { value("result") }
    /// The server's error, on `error`.
    public var error: ServerError? {
        guard type == "error" else { return nil }
        return ServerError(json: json)
    }
}
