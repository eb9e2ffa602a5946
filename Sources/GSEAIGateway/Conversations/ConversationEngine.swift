import Foundation
import GSEAI
import Logging

/// The rules of conversations: what a message sends upstream, how an answer is generated, kept and
/// stopped. Generation runs on the server, independent of the page that asked for it.
///
/// Continuing uses the upstream's stateful chat (`previous_response_id`) on an LM Studio upstream. When
/// the upstream no longer knows the id (it restarted), or has no stateful chat (an `openai` upstream), the
/// stored transcript is replayed instead, images included, through the OpenAI-compatible chat endpoint.
public struct ConversationEngine: Sendable {
    let storage: Storage
    let upstream: GSEAIClient
    let kind: UpstreamKind
    let hub: GenerationHub
    let metrics: GatewayMetrics
    let usageMeter: UsageMeter
    /// Class policies (issue 5).
    let policies: PolicyEnforcer
    let logger: Logger
    /// The most tokens any answer of the chat page may have.
    public var maxOutputTokens = 4096

    public init(storage: Storage, upstream: GSEAIClient, kind: UpstreamKind, hub: GenerationHub, metrics: GatewayMetrics,
                usageMeter: UsageMeter, policies: PolicyEnforcer, logger: Logger) {
        self.policies = policies
        self.usageMeter = usageMeter
        self.storage = storage
        self.upstream = upstream
        self.kind = kind
        self.hub = hub
        self.metrics = metrics
        self.logger = logger
    }

    /// The conversation, if it is the user's; another user's is "not found" like a missing one.
    func conversation(_ id: String, of user: User) async throws -> Conversation {
        guard let conversation = try await storage.conversations.find(id: id, userID: user.id) else {
            throw GatewayError.notFound("no such conversation")
        }
        return conversation
    }

    /// Stores the user's message (before anything goes upstream), then starts the answer.
    public func send(user: User, conversationID: String, text: String, imageHashes: [String]) async throws -> (user: StoredMessage, assistant: StoredMessage) {
        var conversation = try await conversation(conversationID, of: user)
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty || !imageHashes.isEmpty else { throw GatewayError.badRequest("the message is empty") }
        guard imageHashes.count <= 8 else { throw GatewayError.badRequest("a message can carry at most 8 images") }
        for hash in imageHashes {
            guard try await storage.images.isOwned(hash: hash, by: user.id) else { throw GatewayError.notFound("no such image: \(hash)") }
        }
        let history = try await storage.messages.list(conversationID: conversation.id)
        if let last = history.last, last.status == .streaming, await hub.isGenerating(last.id) {
            throw GatewayError(.conflict, type: .invalidRequest, "an answer is still being generated; stop it or wait")
        }
        // Class policy (issue 5): checked before anything is stored.
        let applied = try await policies.admit(user: user, model: conversation.model, imageCount: imageHashes.count,
                                               preferredClassID: conversation.classID)
        let now = Date()
        let userMessage = try await storage.messages.append(StoredMessage(
            conversationID: conversation.id, role: "user", text: text, imageHashes: imageHashes, status: .complete, model: conversation.model
        ))
        if conversation.title.isEmpty { conversation.title = Self.title(from: trimmed) }
        conversation.updatedAt = now
        try await storage.conversations.update(conversation)
        let assistant = try await startAnswer(conversation: conversation, history: history, userMessage: userMessage,
                                              previousResponseID: conversation.lastResponseID, user: user, applied: applied)
        return (userMessage, assistant)
    }

    /// Replaces the last answer with a new one.
    public func regenerate(user: User, conversationID: String) async throws -> StoredMessage {
        let conversation = try await conversation(conversationID, of: user)
        var messages = try await storage.messages.list(conversationID: conversation.id)
        let lastAnswer = messages.last.flatMap { $0.role == "assistant" ? $0 : nil }
        if let lastAnswer, await hub.isGenerating(lastAnswer.id) {
            throw GatewayError(.conflict, type: .invalidRequest, "an answer is still being generated; stop it first")
        }
        guard let userMessage = messages.dropLast(lastAnswer == nil ? 0 : 1).last, userMessage.role == "user" else {
            throw GatewayError.badRequest("there is no message to answer")
        }
        // Class policy (issue 5): checked (and counted) only for a request that can be answered, before the
        // last answer is replaced.
        let applied = try await policies.admit(user: user, model: conversation.model, imageCount: userMessage.imageHashes.count,
                                               preferredClassID: conversation.classID)
        if let lastAnswer {
            try await storage.messages.delete(id: lastAnswer.id)
            messages.removeLast()
        }
        let history = Array(messages.dropLast())
        // Continue from the answer before the last question, if it was stored upstream.
        let previous = history.last(where: { $0.role == "assistant" }).flatMap { $0.status == .complete ? $0.responseID : nil }
        return try await startAnswer(conversation: conversation, history: history, userMessage: userMessage,
                                     previousResponseID: previous, user: user, applied: applied)
    }

    /// Stops an answer being generated; its partial text is kept, marked stopped.
    public func stop(user: User, conversationID: String, messageID: String) async throws {
        let conversation = try await conversation(conversationID, of: user)
        guard let message = try await storage.messages.find(id: messageID), message.conversationID == conversation.id else {
            throw GatewayError.notFound("no such message")
        }
        await hub.stop(message.id)
    }

    /// Deletes a conversation; an answer still being generated is stopped and written first, so that its
    /// usage counts and nothing writes into a conversation that is gone.
    public func delete(user: User, conversationID: String) async throws {
        let conversation = try await conversation(conversationID, of: user)
        // Only the last message can be generating.
        if let last = try await storage.messages.list(conversationID: conversation.id).last {
            await hub.stop(last.id)?.value
        }
        guard try await storage.conversations.delete(id: conversation.id, userID: user.id) else {
            throw GatewayError.notFound("no such conversation")
        }
    }

    static func title(from text: String) -> String {
        let firstLine = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard !firstLine.isEmpty else { return "Image" }
        return firstLine.count > 60 ? String(firstLine.prefix(57)) + "…" : firstLine
    }

    private func startAnswer(conversation: Conversation, history: [StoredMessage], userMessage: StoredMessage,
                             previousResponseID: String?, user: User, applied: ClassSession?) async throws -> StoredMessage {
        let assistant = try await storage.messages.append(StoredMessage(
            conversationID: conversation.id, role: "assistant", text: "", imageHashes: [], status: .streaming, model: conversation.model
        ))
        let generation = Generation(engine: self, conversation: conversation, history: history, userMessage: userMessage,
                                    message: assistant, previousResponseID: previousResponseID, userID: user.id, applied: applied)
        await hub.start(assistant.id) { await generation.run() }
        return assistant
    }
}

/// One answer being generated: streams it from the upstream, passes it to the hub as events, keeps it in
/// the database (now and then while it grows, and whole at the end).
final class Generation: @unchecked Sendable {
    // Unchecked: every mutable field is touched only by the generation's own task.
    private let engine: ConversationEngine
    private var conversation: Conversation
    private let history: [StoredMessage]
    private let userMessage: StoredMessage
    private var message: StoredMessage
    private let previousResponseID: String?
    private let userID: String
    /// The class whose policy applies, if one does (issue 5); usage is counted in it.
    private let applied: ClassSession?
    private var policy: ClassPolicy? { applied?.policy }

    /// The most tokens an answer may have: the class's limit, or the gateway's, so that a model that never
    /// ends its turn cannot run until its context is full.
    private var outputLimit: Int {
        min(policy?.maxOutputTokens ?? engine.maxOutputTokens, engine.maxOutputTokens)
    }
    private var lastSaved = ContinuousClock.now
    private var outputTokens: Int?
    private var inputTokens: Int?
    /// Pieces of text or reasoning received: about one token each, the count used when an answer that
    /// was stopped or failed brought no usage of its own.
    private var pieces = 0

    init(engine: ConversationEngine, conversation: Conversation, history: [StoredMessage], userMessage: StoredMessage,
         message: StoredMessage, previousResponseID: String?, userID: String, applied: ClassSession? = nil) {
        self.applied = applied
        self.engine = engine
        self.conversation = conversation
        self.history = history
        self.userMessage = userMessage
        self.message = message
        self.previousResponseID = previousResponseID
        self.userID = userID
    }

    var hub: GenerationHub { engine.hub }

    func run() async {
        let started = ContinuousClock.now
        var firstToken: Duration?
        do {
            let stateful = engine.kind == .lmstudio && (history.isEmpty || previousResponseID != nil)
            if stateful {
                do {
                    try await streamNative(started: started, firstToken: &firstToken)
                } catch GSEAIError.http(let status, _) where (status == 404 || status == 400) && previousResponseID != nil && pieces == 0 {
                    // The upstream forgot the conversation (it restarted): replay the transcript instead.
                    engine.logger.info("upstream no longer knows the response id; replaying the transcript")
                    try await streamReplay(started: started, firstToken: &firstToken)
                }
            } else {
                try await streamReplay(started: started, firstToken: &firstToken)
            }
            message.status = .complete
        } catch is CancellationError {
            message.status = .stopped
        } catch {
            message.status = .failed
            message.error = Self.describe(error)
        }
        await finish(elapsed: ContinuousClock.now - started, firstToken: firstToken)
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as GSEAIError:
            if let server = error.serverError { return "the model server failed: \(server.message)" }
            return GatewayError.upstream(error).message
        default:
            return "the answer could not be generated"
        }
    }

    // MARK: Upstream

    private func images(_ hashes: [String]) async throws -> [DataURL] {
        var urls: [DataURL] = []
        for hash in hashes {
            guard let image = try await engine.storage.images.find(hash: hash) else { continue }
            urls.append(try DataURL(imageBytes: image.data))
        }
        return urls
    }

    /// LM Studio's stateful chat: only the new message goes up, with the previous response's id.
    private func streamNative(started: ContinuousClock.Instant, firstToken: inout Duration?) async throws {
        let images = try await images(userMessage.imageHashes)
        let input: ChatInput = images.isEmpty ? .text(userMessage.text) : .items([.message(userMessage.text)] + images.map(ChatInputItem.image))
        let request = ChatRequest(model: conversation.model, input: input,
                                  systemPrompt: PolicyEnforcer.systemPrompt(policy, requested: conversation.systemPrompt),
                                  maxOutputTokens: outputLimit, store: true, previousResponseID: previousResponseID)
        for try await event in try await engine.upstream.chatStream(request) {
            try Task.checkCancellation()
            switch event.type {
            case "message.delta":
                if firstToken == nil { firstToken = ContinuousClock.now - started }
                await add(text: event.delta ?? "")
            case "reasoning.delta":
                if firstToken == nil { firstToken = ContinuousClock.now - started }
                await add(reasoning: event.reasoningDelta ?? "")
            case "error":
                throw GSEAIError.stream(event.error ?? ServerError(message: "unknown error"))
            case "chat.end":
                guard let result = event.result else { continue }
                message.responseID = result.responseID
                message.outputItems = result["output"]
                if let stats = result.stats {
                    inputTokens = stats.inputTokens
                    outputTokens = stats.totalOutputTokens
                    message.stats = Self.stats(input: stats.inputTokens, output: stats.totalOutputTokens,
                                               speed: stats.tokensPerSecond, firstToken: stats.timeToFirstTokenSeconds)
                }
                for item in result.output where item.type == "tool_call" || item.type == "invalid_tool_call" {
                    await hub.append(message.id, name: "item", data: item.json.jsonString)
                }
                if message.text.isEmpty { message.text = result.text }
            default:
                break
            }
        }
    }

    /// The whole transcript through the OpenAI-compatible chat: for upstreams without stateful chat, and
    /// when the stateful chain is broken.
    private func streamReplay(started: ContinuousClock.Instant, firstToken: inout Duration?) async throws {
        var messages: [ChatMessage] = []
        if let system = PolicyEnforcer.systemPrompt(policy, requested: conversation.systemPrompt), !system.isEmpty {
            messages.append(ChatMessage(role: "system", content: system))
        }
        for turn in history + [userMessage] {
            switch turn.role {
            case "user":
                let images = try await images(turn.imageHashes)
                messages.append(images.isEmpty ? ChatMessage(role: "user", content: turn.text) : .user(turn.text, images: images))
            case "assistant" where !turn.text.isEmpty && turn.status != .failed:
                messages.append(ChatMessage(role: "assistant", content: turn.text))
            default:
                break
            }
        }
        var request = ChatCompletionRequest(model: conversation.model, messages: messages)
        request["stream_options"] = ["include_usage": true]
        request["max_tokens"] = .number(Double(outputLimit))
        for try await chunk in try await engine.upstream.chatCompletionsStream(request) {
            try Task.checkCancellation()
            let delta = chunk.object["choices"]?.arrayValue?.first?["delta"]
            if let reasoning = delta?["reasoning_content"]?.stringValue ?? delta?["reasoning"]?.stringValue, !reasoning.isEmpty {
                if firstToken == nil { firstToken = ContinuousClock.now - started }
                await add(reasoning: reasoning)
            }
            if let text = chunk.delta, !text.isEmpty {
                if firstToken == nil { firstToken = ContinuousClock.now - started }
                await add(text: text)
            }
            if let usage = chunk.usage {
                inputTokens = usage.promptTokens
                outputTokens = usage.completionTokens
            }
        }
        // Replayed answers have no upstream id to continue from: the next turn replays again.
        message.responseID = nil
    }

    // MARK: Progress

    private func add(text: String) async {
        pieces += 1
        message.text += text
        let data: JSONValue = ["text": .string(text)]
        await hub.append(message.id, name: "delta", data: data.jsonString)
        await saveNowAndThen()
    }

    private func add(reasoning: String) async {
        pieces += 1
        message.reasoning = (message.reasoning ?? "") + reasoning
        let data: JSONValue = ["text": .string(reasoning)]
        await hub.append(message.id, name: "reasoning", data: data.jsonString)
        await saveNowAndThen()
    }

    /// Saves the growing answer once a second, so that a crash loses at most that.
    private func saveNowAndThen() async {
        guard ContinuousClock.now - lastSaved > .seconds(1) else { return }
        lastSaved = .now
        message.updatedAt = Date()
        try? await engine.storage.messages.update(message)
    }

    static func stats(input: Int?, output: Int?, speed: Double?, firstToken: Double?) -> JSONValue {
        [
            "input_tokens": input.map { .number(Double($0)) } ?? nil,
            "output_tokens": output.map { .number(Double($0)) } ?? nil,
            "tokens_per_second": speed.map { .number(($0 * 10).rounded() / 10) } ?? nil,
            "time_to_first_token_seconds": firstToken.map { .number(($0 * 100).rounded() / 100) } ?? nil,
        ]
    }

    private func finish(elapsed: Duration, firstToken: Duration?) async {
        let now = Date()
        message.updatedAt = now
        if message.stats == nil, inputTokens != nil || outputTokens != nil || firstToken != nil {
            var speed: Double?
            if let output = outputTokens, let firstToken, elapsed > firstToken {
                speed = Double(output) / (elapsed - firstToken).seconds
            }
            message.stats = Self.stats(input: inputTokens, output: outputTokens, speed: speed, firstToken: firstToken?.seconds)
        }
        conversation.lastResponseID = message.status == .complete ? message.responseID : nil
        conversation.updatedAt = now
        do {
            try await engine.storage.messages.finish(message, conversation: conversation)
        } catch {
            engine.logger.error("could not save an answer", metadata: ["error": "\(error)"])
        }
        // Counted even when the answer could not be saved (its conversation deleted meanwhile, say).
        let recorder = UsageRecorder(storage: engine.storage, metrics: engine.metrics, meter: engine.usageMeter,
                                     userID: userID, classID: applied?.id, model: conversation.model, counted: true)
        do {
            try await recorder.record(responseIDs: message.responseID.map { [$0] } ?? [],
                                      inputTokens: inputTokens ?? 0, outputTokens: outputTokens ?? pieces)
        } catch {
            engine.logger.error("could not record an answer's response id", metadata: ["error": "\(error)"])
        }
        let view = MessageView(message)
        await hub.append(message.id, name: "end", data: JSONValue(view: view).jsonString)
        await hub.finish(message.id)
    }
}
