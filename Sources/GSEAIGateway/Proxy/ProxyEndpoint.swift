import HTTPTypes
import Hummingbird

/// One forwarded endpoint, and everything the gateway knows of it as data: who may call it, which upstream
/// kinds have it, where its model is named, how a class's policy applies to its body, whether it lists
/// models, whether it holds a slot of the model server while it runs, and how its streams end.
struct ProxyEndpoint: Sendable {
    var method: HTTPRequest.Method
    /// The route pattern, such as `/api/v0/models/**` (`**`: the rest of the path, slashes included, as a
    /// model key such as `qwen/qwen3-4b`).
    var path: String
    var surface: APISurface
    var minimumRole: Role = .student
    /// The upstream kinds that serve it; others answer 501.
    var kinds: Set<UpstreamKind> = [.lmstudio]
    /// Where the request names its model.
    var model = ModelSource.none
    /// How a class's policy applies to the request's body.
    var policy = PolicyShape.none
    /// Where a model list keeps its models and their ids, for endpoints that list them.
    var modelList: ModelList?
    /// Whether it runs on the model server's GPU while it is answered (generation, embeddings): it then
    /// waits for a slot in the fair queue. Lists and model management do not.
    var usesSlot = false
    /// Whether it issues and continues stored responses (`response_id`, `previous_response_id`).
    var isStateful = false
    /// The event names (or `type`s) that end its streams.
    var finalEvents: Set<String> = []

    /// Where a request names its model.
    enum ModelSource: Sendable {
        case none
        /// The body's `model` field.
        case body
        /// The route's `**`.
        case path
    }

    /// The shape of a request body, as a class's policy rewrites it.
    enum PolicyShape: Sendable {
        case none
        /// LM Studio's `/api/v1/chat`: `max_output_tokens`, `system_prompt`.
        case lmstudioChat
        /// OpenAI chat completions: `max_tokens` / `max_completion_tokens`, system messages.
        case openAIChat
        /// A raw prompt (`max_tokens`): it has no place for a system prompt, so a locked one refuses it.
        case completion
        /// OpenAI Responses: `max_output_tokens`, `instructions`, system items of `input`.
        case responses
        /// Anthropic messages: `max_tokens`, `system`.
        case anthropicMessages
    }

    /// Where a model list keeps its models (`listKey`) and each model's id (`idKey`).
    struct ModelList: Sendable, Hashable {
        var listKey: String
        var idKey: String

        /// LM Studio's native list: `{"models": [{"key": …}]}`.
        static let native = ModelList(listKey: "models", idKey: "key")
        /// OpenAI's (and LM Studio v0's): `{"data": [{"id": …}]}`.
        static let openAI = ModelList(listKey: "data", idKey: "id")
    }

    /// Every kind that speaks the OpenAI-compatible API.
    static let openAICompatible: Set<UpstreamKind> = Set(UpstreamKind.allCases)

    static let all: [ProxyEndpoint] = [
        // LM Studio native v1
        .init(method: .get, path: "/api/v1/models", surface: .lmstudio, modelList: .native),
        .init(method: .post, path: "/api/v1/chat", surface: .lmstudio, model: .body, policy: .lmstudioChat, usesSlot: true,
              isStateful: true, finalEvents: ["chat.end"]),
        .init(method: .post, path: "/api/v1/models/load", surface: .lmstudio, minimumRole: .instructor, model: .body),
        .init(method: .post, path: "/api/v1/models/unload", surface: .lmstudio, minimumRole: .instructor, model: .body),
        .init(method: .post, path: "/api/v1/models/download", surface: .lmstudio, minimumRole: .instructor, model: .body),
        .init(method: .get, path: "/api/v1/models/download/status/:job", surface: .lmstudio, minimumRole: .instructor),
        // LM Studio v0
        .init(method: .get, path: "/api/v0/models", surface: .lmstudioV0, modelList: .openAI),
        .init(method: .get, path: "/api/v0/models/**", surface: .lmstudioV0, model: .path),
        .init(method: .post, path: "/api/v0/chat/completions", surface: .lmstudioV0, model: .body, policy: .openAIChat, usesSlot: true),
        .init(method: .post, path: "/api/v0/completions", surface: .lmstudioV0, model: .body, policy: .completion, usesSlot: true),
        .init(method: .post, path: "/api/v0/embeddings", surface: .lmstudioV0, model: .body, usesSlot: true),
        // OpenAI-compatible
        .init(method: .get, path: "/v1/models", surface: .openAI, kinds: openAICompatible, modelList: .openAI),
        .init(method: .post, path: "/v1/chat/completions", surface: .openAI, kinds: openAICompatible, model: .body,
              policy: .openAIChat, usesSlot: true),
        .init(method: .post, path: "/v1/completions", surface: .openAI, kinds: openAICompatible, model: .body,
              policy: .completion, usesSlot: true),
        .init(method: .post, path: "/v1/embeddings", surface: .openAI, kinds: openAICompatible, model: .body, usesSlot: true),
        .init(method: .post, path: "/v1/responses", surface: .openAI, model: .body, policy: .responses, usesSlot: true,
              isStateful: true, finalEvents: ["response.completed", "response.failed", "response.incomplete"]),
        // Anthropic-compatible
        .init(method: .post, path: "/v1/messages", surface: .anthropic, model: .body, policy: .anthropicMessages, usesSlot: true,
              finalEvents: ["message_stop"]),
    ]

    var isResponsesAPI: Bool { policy == .responses }
}
