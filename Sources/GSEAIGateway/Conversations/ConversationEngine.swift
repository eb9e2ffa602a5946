import Foundation
import GSEAI
import Logging

/// The rules of conversations: what a message sends upstream, how an answer is generated, kept and
/// stopped. Generation runs on the server, independent of the page that asked for it, and goes through the
/// same admission step as the API surfaces: the class's policy, then a slot in the fair queue (the page
/// hears its place in line meanwhile).
///
/// Continuing uses the upstream's stateful chat (`previous_response_id`) on the LM Studio upstream that
/// issued the last answer. When the upstream no longer knows the id (it restarted), when the answer goes to
/// another upstream, or when it has no stateful chat (an OpenAI-compatible upstream), the stored transcript
/// is replayed instead, images included, through the OpenAI-compatible chat endpoint.
public struct ConversationEngine: Sendable {
    let storage: Storage
    let admission: Admission
    let hub: GenerationHub
    let metrics: GatewayMetrics
    let usageMeter: UsageMeter
    let logger: Logger
    /// The most tokens any answer of the chat page may have.
    public var maxOutputTokens = 4096

    public init(storage: Storage, admission: Admission, hub: GenerationHub, metrics: GatewayMetrics, usageMeter: UsageMeter,
                logger: Logger) {
        self.storage = storage
        self.admission = admission
        self.hub = hub
        self.metrics = metrics
        self.usageMeter = usageMeter
        self.logger = logger
    }

    /// Class policies.
    var policies: PolicyEnforcer { admission.policies }

    /// The chat page's answers use the native chat on LM Studio and the OpenAI-compatible chat elsewhere:
    /// every kind can answer.
    static let kinds = Set(UpstreamKind.allCases)

    /// The admission of an answer in `conversation` (its class's policy, a route, room in the fair queue),
    /// before anything is stored: a refusal is the request's status (429, 503), not a failed answer. The slot
    /// is taken when the answer starts.
    func ticket(user: User, conversation: Conversation, imageCount: Int, previousResponseID: String?) async throws -> Admission.Ticket {
        var issuer: String?
        if let previousResponseID { issuer = try await storage.responses.upstream(of: previousResponseID) }
        let ticket = try await admission.ticket(user: user, model: conversation.model, imageCount: imageCount, shape: .none,
                                                kinds: Self.kinds, usesSlot: true, preferredClassID: conversation.classID,
                                                preferredUpstream: issuer, path: "/api/conversations")
        try admission.checkMayWait(ticket)
        return ticket
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
        if let last = history.last, last.status == .streaming, await isGenerating(last) {
            throw GatewayError(.conflict, type: .invalidRequest, "an answer is still being generated; stop it or wait")
        }
        // The class's policy: checked before anything is stored.
        let ticket = try await ticket(user: user, conversation: conversation, imageCount: imageHashes.count,
                                      previousResponseID: conversation.lastResponseID)
        let now = Date()
        let userMessage = try await storage.messages.append(StoredMessage(
            conversationID: conversation.id, role: "user", text: text, imageHashes: imageHashes, status: .complete, model: conversation.model
        ))
        if conversation.title.isEmpty { conversation.title = Self.title(from: trimmed) }
        conversation.updatedAt = now
        try await storage.conversations.update(conversation)
        let assistant = try await startAnswer(conversation: conversation, history: history, userMessage: userMessage,
                                              previousResponseID: conversation.lastResponseID, user: user, ticket: ticket)
        return (userMessage, assistant)
    }

    /// Replaces the last answer with a new one.
    public func regenerate(user: User, conversationID: String) async throws -> StoredMessage {
        let conversation = try await conversation(conversationID, of: user)
        var messages = try await storage.messages.list(conversationID: conversation.id)
        let lastAnswer = messages.last.flatMap { $0.role == "assistant" ? $0 : nil }
        if let lastAnswer, await isGenerating(lastAnswer) {
            throw GatewayError(.conflict, type: .invalidRequest, "an answer is still being generated; stop it first")
        }
        guard let userMessage = messages.dropLast(lastAnswer == nil ? 0 : 1).last, userMessage.role == "user" else {
            throw GatewayError.badRequest("there is no message to answer")
        }
        let history = Array(messages.dropLast(lastAnswer == nil ? 1 : 2))
        // Continue from the answer before the last question, if it was stored upstream.
        let previous = history.last(where: { $0.role == "assistant" }).flatMap { $0.status == .complete ? $0.responseID : nil }
        // The class's policy: checked (and counted) only for a request that can be answered, before the last
        // answer is replaced.
        let ticket = try await ticket(user: user, conversation: conversation, imageCount: userMessage.imageHashes.count,
                                      previousResponseID: previous)
        if let lastAnswer {
            try await storage.messages.delete(id: lastAnswer.id)
            messages.removeLast()
        }
        return try await startAnswer(conversation: conversation, history: history, userMessage: userMessage,
                                     previousResponseID: previous, user: user, ticket: ticket)
    }

    /// Stops an answer being generated here; its partial text is kept, marked stopped. Returns the message
    /// when this replica does not generate it (another replica may: the caller passes the stop on).
    @discardableResult
    public func stop(user: User, conversationID: String, messageID: String) async throws -> StoredMessage? {
        let conversation = try await conversation(conversationID, of: user)
        guard let message = try await storage.messages.find(id: messageID), message.conversationID == conversation.id else {
            throw GatewayError.notFound("no such message")
        }
        return await hub.stop(message.id) == nil ? message : nil
    }

    /// Whether an answer is being generated, here or by another live replica.
    func isGenerating(_ message: StoredMessage) async -> Bool {
        if await hub.isGenerating(message.id) { return true }
        guard message.status == .streaming, let replica = message.replica, replica != storage.shared.replicas.id else { return false }
        return (try? await storage.shared.replicas.liveReplica(replica)) != nil
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
                             previousResponseID: String?, user: User, ticket: Admission.Ticket) async throws -> StoredMessage {
        var streaming = StoredMessage(
            conversationID: conversation.id, role: "assistant", text: "", imageHashes: [], status: .streaming, model: conversation.model
        )
        // Owned by this replica: the others follow and stop it through this one while it lives.
        streaming.replica = storage.shared.replicas.id
        let assistant = try await storage.messages.append(streaming)
        let generation = Generation(engine: self, conversation: conversation, history: history, userMessage: userMessage,
                                    message: assistant, previousResponseID: previousResponseID, userID: user.id, ticket: ticket)
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
    /// The admission: the class whose policy applies, if one does (usage is counted in it), and the route.
    private let ticket: Admission.Ticket
    private var applied: ClassSession? { ticket.applied }
    private var policy: ClassPolicy? { applied?.policy }
    /// The upstream that answers, once it has a slot.
    private var upstreamName: String?

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
         message: StoredMessage, previousResponseID: String?, userID: String, ticket: Admission.Ticket) {
        self.ticket = ticket
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
        var started = ContinuousClock.now
        var firstToken: Duration?
        var slot: Admission.Slot?
        defer { slot?.release() }
        do {
            slot = try await waitForSlot()
            // The time to the first token counts from the slot: the wait in line is the queue's, not the model's.
            started = .now
            var tried: Set<String> = []
            while let current = slot {
                upstreamName = current.upstream.name
                do {
                    try await answer(on: current.upstream, started: started, firstToken: &firstToken)
                    current.upstream.markSucceeded()
                    break
                } catch where pieces == 0 && Self.isUpstreamFault(error) {
                    // Nothing reached the page yet: another upstream that serves the model answers instead.
                    slot = try await engine.admission.failOver(ticket, from: current, reason: Self.describe(error), tried: &tried)
                    if slot == nil { throw error }
                }
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

    /// Waits for a slot, telling the page its place in line (a `queued` event with `ahead`) as it changes, and
    /// that its turn came (`started`) when it had to wait.
    private func waitForSlot() async throws -> Admission.Slot {
        let (positions, continuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .bufferingNewest(1))
        let hub = self.hub, messageID = message.id
        async let told: Bool = {
            var told = false
            for await ahead in positions {
                let data: JSONValue = ["ahead": .number(Double(ahead))]
                await hub.append(messageID, name: "queued", data: data.jsonString)
                told = true
            }
            return told
        }()
        defer { continuation.finish() }
        let slot = try await engine.admission.acquire(ticket) { continuation.yield($0) }
        continuation.finish()
        if await told { await hub.append(messageID, name: "started", data: "{}") }
        return slot
    }

    /// Streams the answer from `upstream`: LM Studio's stateful chat when it can continue there (a new
    /// conversation, or one whose last answer it issued), else the replayed transcript.
    private func answer(on upstream: Upstream, started: ContinuousClock.Instant, firstToken: inout Duration?) async throws {
        let continuesHere = previousResponseID != nil && (ticket.preferred == nil || ticket.preferred == upstream.name)
        let stateful = upstream.kind == .lmstudio && (history.isEmpty || continuesHere)
        guard stateful else { return try await streamReplay(on: upstream, started: started, firstToken: &firstToken) }
        do {
            try await streamNative(on: upstream, started: started, firstToken: &firstToken)
        } catch GSEAIError.http(let status, _) where (status == 404 || status == 400) && previousResponseID != nil && pieces == 0 {
            // The upstream forgot the conversation (it restarted): replay the transcript instead.
            engine.logger.info("upstream no longer knows the response id; replaying the transcript")
            try await streamReplay(on: upstream, started: started, firstToken: &firstToken)
        }
    }

    /// Whether a failure means the upstream is unwell (refused, no head in time, 5xx), so that another may answer.
    static func isUpstreamFault(_ error: any Error) -> Bool {
        if case GSEAIError.http(let status, _) = error, status >= 500 { return true }
        return Upstream.isUpstreamFault(error)
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as GatewayError:
            // A refusal of the queue (waited too long, no model server up): its own words.
            return error.message
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
    private func streamNative(on upstream: Upstream, started: ContinuousClock.Instant, firstToken: inout Duration?) async throws {
        let images = try await images(userMessage.imageHashes)
        let input: ChatInput = images.isEmpty ? .text(userMessage.text) : .items([.message(userMessage.text)] + images.map(ChatInputItem.image))
        let request = ChatRequest(model: conversation.model, input: input,
                                  systemPrompt: PolicyEnforcer.systemPrompt(policy, requested: conversation.systemPrompt),
                                  maxOutputTokens: outputLimit, store: true, previousResponseID: previousResponseID)
        for try await event in try await upstream.client.chatStream(request) {
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
    private func streamReplay(on upstream: Upstream, started: ContinuousClock.Instant, firstToken: inout Duration?) async throws {
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
        for try await chunk in try await upstream.client.chatCompletionsStream(request) {
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
                                     userID: userID, classID: applied?.id, model: conversation.model, counted: true,
                                     upstream: upstreamName, reservation: ticket.reservation)
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
