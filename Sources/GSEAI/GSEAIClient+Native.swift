import Foundation
import NIOHTTP1

/// LM Studio's native REST API v1 (`/api/v1/*`), as in `gseai.GSEAIServer`.
extension GSEAIClient {
    /// `GET /api/v1/models`: lists the available models.
    public func listModels() async throws -> ModelList {
        try await json(.GET, "/api/v1/models")
    }

    /// `POST /api/v1/models/load`: loads a model, evicted after `ttl` idle seconds if given.
    public func loadModel(_ model: String, ttl: Int? = nil) async throws -> ModelOperationResult {
        var body: [String: JSONValue] = ["model": .string(model)]
        if let ttl { body["ttl"] = .number(Double(ttl)) }
        return try await json(.POST, "/api/v1/models/load", body: body)
    }

    /// `POST /api/v1/models/unload`: unloads a model.
    public func unloadModel(_ model: String) async throws -> ModelOperationResult {
        try await json(.POST, "/api/v1/models/unload", body: ["model": JSONValue.string(model)])
    }

    /// `POST /api/v1/models/download`: starts downloading a model; poll ``downloadStatus(jobID:)``.
    public func downloadModel(_ model: String) async throws -> DownloadStatus {
        try await json(.POST, "/api/v1/models/download", body: ["model": JSONValue.string(model)])
    }

    /// `GET /api/v1/models/download/status/{job_id}`: a download's progress.
    public func downloadStatus(jobID: String) async throws -> DownloadStatus {
        try await json(.GET, "/api/v1/models/download/status/\(try Self.pathSegment(jobID))")
    }

    /// `POST /api/v1/chat`: a whole chat response. `stream` in the request is ignored.
    public func chat(_ request: ChatRequest) async throws -> ChatResponse {
        var request = request
        request.stream = nil
        return try await json(.POST, "/api/v1/chat", body: request)
    }

    /// `POST /api/v1/chat` with `stream: true`: the events from `chat.start` to `chat.end`.
    ///
    /// An `error` event is delivered like any other (the server follows it with `chat.end`); a body
    /// that ends before `chat.end` fails with ``GSEAIError/streamInterrupted``.
    public func chatStream(_ request: ChatRequest) async throws -> EventStream<ChatEvent> {
        var request = request
        request.stream = true
        return try await eventStream("/api/v1/chat", body: request, decode: Self.decodeChatEvent)
    }

    /// Reads one LM Studio v1 stream event; the `event:` name stands in for a missing `type`.
    @Sendable static func decodeChatEvent(_ sse: ServerSentEvent) throws -> EventStep<ChatEvent> {
        var event = try sse.decodeData(as: ChatEvent.self)
        if event.object["type"] == nil, let name = sse.event { event.object["type"] = .string(name) }
        return event.type == "chat.end" ? .finish(event) : .event(event)
    }

    /// Percent-encodes one path segment, refusing ones that would change the path.
    static func pathSegment(_ value: String) throws -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove("/")
        guard !value.isEmpty, value != ".", value != "..",
            let encoded = value.addingPercentEncoding(withAllowedCharacters: allowed)
        else {
            throw GSEAIError.invalidArgument("invalid path segment: \(value)")
        }
        return encoded
    }
}
