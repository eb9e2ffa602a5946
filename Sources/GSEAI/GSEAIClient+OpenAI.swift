import Foundation
/// The OpenAI-compatible API (`/v1/*`), as in `gseai.GSEAIServer`.
extension GSEAIClient {
    /// `GET /v1/models`: lists models in OpenAI's format.
    public func listModelsOpenAI() async throws -> OpenAIModelList {
        try await json(.GET, "/v1/models")
    }

    /// `POST /v1/chat/completions`: a whole chat completion. `stream` in the request is ignored.
    public func chatCompletions(_ request: ChatCompletionRequest) async throws -> ChatCompletion {
        try await chatCompletions(request, prefix: "/v1")
    }

    /// `POST /v1/chat/completions` with `stream: true`: chunks until `[DONE]`.
    public func chatCompletionsStream(_ request: ChatCompletionRequest) async throws -> EventStream<ChatCompletionChunk> {
        try await chatCompletionsStream(request, prefix: "/v1")
    }

    /// `POST /v1/completions`: a whole text completion. `stream` in the request is ignored.
    public func completions(_ request: CompletionRequest) async throws -> Completion {
        try await completions(request, prefix: "/v1")
    }

    /// `POST /v1/completions` with `stream: true`: chunks until `[DONE]`.
    public func completionsStream(_ request: CompletionRequest) async throws -> EventStream<ChatCompletionChunk> {
        try await completionsStream(request, prefix: "/v1")
    }

    /// `POST /v1/embeddings`: embeds text.
    public func embeddings(_ request: EmbeddingsRequest) async throws -> EmbeddingsResponse {
        try await json(.POST, "/v1/embeddings", body: request)
    }

    /// `POST /v1/responses`: a stateful response (continue with `previous_response_id` in `extra`).
    public func responses(_ request: ResponsesRequest) async throws -> ResponseObject {
        try await json(.POST, "/v1/responses", body: request)
    }

    // Shared by `/v1` and LM Studio's `/api/v0`, which speak the same protocol.

    func chatCompletions(_ request: ChatCompletionRequest, prefix: String) async throws -> ChatCompletion {
        var request = request
        request.stream = nil
        return try await json(.POST, prefix + "/chat/completions", body: request)
    }

    func chatCompletionsStream(_ request: ChatCompletionRequest, prefix: String) async throws -> EventStream<ChatCompletionChunk> {
        var request = request
        request.stream = true
        return try await eventStream(prefix + "/chat/completions", body: request, decode: Self.decodeOpenAIChunk)
    }

    func completions(_ request: CompletionRequest, prefix: String) async throws -> Completion {
        var request = request
        request.stream = nil
        return try await json(.POST, prefix + "/completions", body: request)
    }

    func completionsStream(_ request: CompletionRequest, prefix: String) async throws -> EventStream<ChatCompletionChunk> {
        var request = request
        request.stream = true
        return try await eventStream(prefix + "/completions", body: request, decode: Self.decodeOpenAIChunk)
    }

    /// Reads one OpenAI stream event: `[DONE]` ends the stream, an `error` member fails it.
    @Sendable static func decodeOpenAIChunk(_ sse: ServerSentEvent) throws -> EventStep<ChatCompletionChunk> {
        if sse.data.trimmingCharacters(in: .whitespaces) == "[DONE]" { return .finish(nil) }
        let chunk = try sse.decodeData(as: ChatCompletionChunk.self)
        if let error = chunk.object["error"] { throw GSEAIError.stream(ServerError(json: ["error": error])) }
        return .event(chunk)
    }
}

/// LM Studio's REST API v0 (`/api/v0/*`): OpenAI's shapes with extra `stats`, `model_info` and `runtime`.
extension GSEAIClient {
    /// `GET /api/v0/models`: all models with their state, type and context length.
    public func listModelsV0() async throws -> OpenAIModelList {
        try await json(.GET, "/api/v0/models")
    }

    /// `GET /api/v0/models/{model}`: one model.
    public func modelV0(_ model: String) async throws -> OpenAIModel {
        try await json(.GET, "/api/v0/models/\(try Self.pathSegment(model))")
    }

    /// `POST /api/v0/chat/completions`.
    public func chatCompletionsV0(_ request: ChatCompletionRequest) async throws -> ChatCompletion {
        try await chatCompletions(request, prefix: "/api/v0")
    }

    /// `POST /api/v0/chat/completions` with `stream: true`.
    public func chatCompletionsStreamV0(_ request: ChatCompletionRequest) async throws -> EventStream<ChatCompletionChunk> {
        try await chatCompletionsStream(request, prefix: "/api/v0")
    }

    /// `POST /api/v0/completions`.
    public func completionsV0(_ request: CompletionRequest) async throws -> Completion {
        try await completions(request, prefix: "/api/v0")
    }

    /// `POST /api/v0/embeddings`.
    public func embeddingsV0(_ request: EmbeddingsRequest) async throws -> EmbeddingsResponse {
        try await json(.POST, "/api/v0/embeddings", body: request)
    }
}

/// The Anthropic-compatible API (`/v1/messages`), as in `gseai.GSEAIServer`.
extension GSEAIClient {
    /// `POST /v1/messages`: a whole message. `stream` in the request is ignored.
    public func messages(_ request: MessagesRequest) async throws -> MessagesResponse {
        var request = request
        request.stream = nil
        return try await json(.POST, "/v1/messages", body: request)
    }

    /// `POST /v1/messages` with `stream: true`: events until `message_stop`; an `error` event fails.
    public func messagesStream(_ request: MessagesRequest) async throws -> EventStream<MessagesEvent> {
        var request = request
        request.stream = true
        return try await eventStream("/v1/messages", body: request, decode: Self.decodeMessagesEvent)
    }

    @Sendable static func decodeMessagesEvent(_ sse: ServerSentEvent) throws -> EventStep<MessagesEvent> {
        var event = try sse.decodeData(as: MessagesEvent.self)
        if event.object["type"] == nil, let name = sse.event { event.object["type"] = .string(name) }
        switch event.type {
        case "error": throw GSEAIError.stream(ServerError(json: event.json))
        case "message_stop": return .finish(event)
        default: return .event(event)
        }
    }
}
