import HTTPTypes
import Hummingbird

/// One forwarded endpoint, and everything the gateway knows of it as data: who may call it, which upstream
/// kinds have it, where its model is named, how a class's policy applies to its body, whether it lists
/// models, whether it holds a slot of the model server while it runs, and how its streams end.
///
/// A class of constants, not a struct: a request hands its endpoint to its controller, admission, observer, relay
/// and closures, and a struct of these strings and sets was copied (each of its references retained) at every hand;
/// now one reference is.
final class ProxyEndpoint: Sendable {
    let method: HTTPRequest.Method
    /// The route pattern, such as `/api/v0/models/**` (`**`: the rest of the path, slashes included, as a
    /// model key such as `qwen/qwen3-4b`).
    let path: String
    let surface: APISurface
    let minimumRole: Role
    /// The upstream kinds that serve it; others answer 501.
    let kinds: Set<UpstreamKind>
    /// Where the request names its model.
    let model: ModelSource
    /// How a class's policy applies to the request's body.
    let policy: PolicyShape
    /// Where a model list keeps its models and their ids, for endpoints that list them.
    let modelList: ModelList?
    /// Whether it runs on the model server's GPU while it is answered (generation, embeddings): it then
    /// waits for a slot in the fair queue. Lists and model management do not.
    let usesSlot: Bool
    /// Whether it issues and continues stored responses (`response_id`, `previous_response_id`).
    let isStateful: Bool
    /// The event names (or `type`s) that end its streams.
    let finalEvents: Set<String>
    /// A field whose `true` marks a stream's last event, for streams that end without a named event or
    /// `[DONE]` (llama.cpp's `/completion`: `"stop": true`).
    let finalFlag: String?
    /// What its body may be.
    let body: BodyRule
    /// The gateway's prefix before the upstream's own path (`/llamacpp`), left out when forwarding.
    let mountPoint: String

    init(method: HTTPRequest.Method, path: String, surface: APISurface, minimumRole: Role = .student,
         kinds: Set<UpstreamKind> = [.lmstudio], model: ModelSource = .none, policy: PolicyShape = .none,
         modelList: ModelList? = nil, usesSlot: Bool = false, isStateful: Bool = false, finalEvents: Set<String> = [],
         finalFlag: String? = nil, body: BodyRule = .jsonObject, mountPoint: String = "") {
        self.method = method
        self.path = path
        self.surface = surface
        self.minimumRole = minimumRole
        self.kinds = kinds
        self.model = model
        self.policy = policy
        self.modelList = modelList
        self.usesSlot = usesSlot
        self.isStateful = isStateful
        self.finalEvents = finalEvents
        self.finalFlag = finalFlag
        self.body = body
        self.mountPoint = mountPoint
    }

    /// Where a request names its model.
    enum ModelSource: Sendable {
        case none
        /// The body's `model` field.
        case body
        /// The route's `**`.
        case path
        /// The body's `model` when it names one, else the model its upstream serves (llama.cpp and
        /// text-generation-webui serve one model at a time and need not be told).
        case bodyOrServed
    }

    /// What a request body may be.
    enum BodyRule: Sendable {
        /// A JSON object.
        case jsonObject
        /// Nothing, or any JSON value (llama.cpp's `/lora-adapters` takes an array; slot erase, model
        /// unload and stop-generation take nothing).
        case optionalJSON
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
        /// llama.cpp's raw prompt (`/completion`, `/infill`): `n_predict` (or its alias `max_tokens`), where
        /// -1 means no limit; a locked system prompt refuses it.
        case llamaCompletion
        /// A raw prompt that generates nothing to count (text-generation-webui's logits): a locked system
        /// prompt refuses it.
        case rawPrompt
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
    ] + llamaCpp + textGenerationWebUI

    /// llama.cpp's own API (`llama-server`), under ``APISurface/llamaCppBase``, with its OpenAI-compatible
    /// endpoints there too, so that a client given that base URL finds everything it calls. Reading is for
    /// everyone; what changes the server (its properties, slots, LoRA scales) is for staff, and
    /// so is the list of slots, which shows every user's prompt.
    static let llamaCpp: [ProxyEndpoint] = {
        func endpoint(_ method: HTTPRequest.Method, _ path: String, role: Role = .student, model: ModelSource = .none,
                      policy: PolicyShape = .none, modelList: ModelList? = nil, usesSlot: Bool = false, finalFlag: String? = nil,
                      body: BodyRule = .jsonObject) -> ProxyEndpoint {
            ProxyEndpoint(method: method, path: APISurface.llamaCppBase + path, surface: .llamacpp, minimumRole: role, kinds: [.llamacpp],
                          model: model, policy: policy, modelList: modelList, usesSlot: usesSlot, finalFlag: finalFlag, body: body,
                          mountPoint: APISurface.llamaCppBase)
        }
        var endpoints = [
            endpoint(.get, "/health"),
            endpoint(.get, "/props"),
            endpoint(.post, "/props", role: .instructor, body: .optionalJSON),
            endpoint(.get, "/metrics"),
            endpoint(.post, "/tokenize"),
            endpoint(.post, "/detokenize"),
            endpoint(.post, "/apply-template"),
            endpoint(.get, "/slots", role: .instructor),
            endpoint(.post, "/slots/:id", role: .instructor, body: .optionalJSON),
            endpoint(.get, "/lora-adapters"),
            endpoint(.post, "/lora-adapters", role: .instructor, body: .optionalJSON),
            endpoint(.get, "/v1/models", modelList: .openAI),
            endpoint(.post, "/v1/chat/completions", model: .bodyOrServed, policy: .openAIChat, usesSlot: true),
            endpoint(.post, "/v1/completions", model: .bodyOrServed, policy: .completion, usesSlot: true),
            endpoint(.post, "/v1/embeddings", model: .bodyOrServed, usesSlot: true),
        ]
        for path in ["/completion", "/completions", "/infill"] {
            endpoints.append(endpoint(.post, path, model: .bodyOrServed, policy: .llamaCompletion, usesSlot: true, finalFlag: "stop"))
        }
        for path in ["/embedding", "/embeddings", "/rerank", "/reranking", "/v1/rerank", "/v1/reranking"] {
            endpoints.append(endpoint(.post, path, model: .bodyOrServed, usesSlot: true))
        }
        return endpoints
    }()

    /// text-generation-webui's internal endpoints (`/v1/internal/*`, beside its OpenAI-compatible `/v1/*`).
    /// Loading and unloading models and LoRAs is for staff, and so is stop-generation, which stops every
    /// generation the server is running, everyone's.
    static let textGenerationWebUI: [ProxyEndpoint] = {
        func endpoint(_ method: HTTPRequest.Method, _ path: String, role: Role = .student, model: ModelSource = .none,
                      policy: PolicyShape = .none, usesSlot: Bool = false, body: BodyRule = .jsonObject) -> ProxyEndpoint {
            ProxyEndpoint(method: method, path: "/v1/internal" + path, surface: .textGenerationWebUI, minimumRole: role, kinds: [.tgw],
                          model: model, policy: policy, usesSlot: usesSlot, body: body)
        }
        return [
            endpoint(.get, "/model/info"),
            endpoint(.get, "/model/list"),
            endpoint(.post, "/model/load", role: .instructor, body: .optionalJSON),
            endpoint(.post, "/model/unload", role: .instructor, body: .optionalJSON),
            endpoint(.post, "/encode"),
            endpoint(.post, "/decode"),
            endpoint(.post, "/token-count"),
            endpoint(.post, "/logits", model: .bodyOrServed, policy: .rawPrompt, usesSlot: true),
            endpoint(.post, "/stop-generation", role: .instructor, body: .optionalJSON),
            endpoint(.get, "/lora/list"),
            endpoint(.post, "/lora/load", role: .instructor, body: .optionalJSON),
            endpoint(.post, "/lora/unload", role: .instructor, body: .optionalJSON),
        ]
    }()

    var isResponsesAPI: Bool { policy == .responses }

    /// The path to ask of the upstream for `path` (the caller's): without the gateway's mount point.
    func upstreamPath(_ path: String) -> String {
        guard !mountPoint.isEmpty, path.hasPrefix(mountPoint) else { return path }
        let rest = path.dropFirst(mountPoint.count)
        return rest.isEmpty ? "/" : String(rest)
    }
}

extension ProxyEndpoint.PolicyShape {
    /// Whether the request is a raw prompt, with no place for a system prompt: a locked one refuses it.
    var isRawPrompt: Bool {
        switch self {
        case .completion, .llamaCompletion, .rawPrompt: true
        default: false
        }
    }
}
