import HTTPTypes
import Hummingbird

/// One forwarded endpoint: where it is, who may call it, which upstreams have it, how its streams end.
struct ProxyEndpoint: Sendable {
    var method: HTTPRequest.Method
    /// The route pattern, such as `/api/v0/models/**` (`**`: the rest of the path, slashes included, as a
    /// model key such as `qwen/qwen3-4b`).
    var path: String
    var surface: APISurface
    var minimumRole: Role = .student
    /// The upstream kinds that serve it; others answer 501.
    var kinds: Set<UpstreamKind> = [.lmstudio]
    /// Whether it issues and continues stored responses (`response_id`, `previous_response_id`).
    var isStateful = false
    /// The event names (or `type`s) that end its streams.
    var finalEvents: Set<String> = []

    static let all: [ProxyEndpoint] = [
        // LM Studio native v1
        .init(method: .get, path: "/api/v1/models", surface: .lmstudio),
        .init(method: .post, path: "/api/v1/chat", surface: .lmstudio, isStateful: true, finalEvents: ["chat.end"]),
        .init(method: .post, path: "/api/v1/models/load", surface: .lmstudio, minimumRole: .instructor),
        .init(method: .post, path: "/api/v1/models/unload", surface: .lmstudio, minimumRole: .instructor),
        .init(method: .post, path: "/api/v1/models/download", surface: .lmstudio, minimumRole: .instructor),
        .init(method: .get, path: "/api/v1/models/download/status/:job", surface: .lmstudio, minimumRole: .instructor),
        // LM Studio v0
        .init(method: .get, path: "/api/v0/models", surface: .lmstudioV0),
        .init(method: .get, path: "/api/v0/models/**", surface: .lmstudioV0),
        .init(method: .post, path: "/api/v0/chat/completions", surface: .lmstudioV0),
        .init(method: .post, path: "/api/v0/completions", surface: .lmstudioV0),
        .init(method: .post, path: "/api/v0/embeddings", surface: .lmstudioV0),
        // OpenAI-compatible
        .init(method: .get, path: "/v1/models", surface: .openAI, kinds: [.lmstudio, .openai]),
        .init(method: .post, path: "/v1/chat/completions", surface: .openAI, kinds: [.lmstudio, .openai]),
        .init(method: .post, path: "/v1/completions", surface: .openAI, kinds: [.lmstudio, .openai]),
        .init(method: .post, path: "/v1/embeddings", surface: .openAI, kinds: [.lmstudio, .openai]),
        .init(method: .post, path: "/v1/responses", surface: .openAI, isStateful: true,
              finalEvents: ["response.completed", "response.failed", "response.incomplete"]),
        // Anthropic-compatible
        .init(method: .post, path: "/v1/messages", surface: .anthropic, finalEvents: ["message_stop"]),
    ]

    /// The upstream path for a request: the route's path with the caller's own path and query.
    var isResponsesAPI: Bool { path == "/v1/responses" }
}
