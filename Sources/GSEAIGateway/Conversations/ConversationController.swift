import Foundation
import GSEAI
import HTTPTypes
import Hummingbird
import NIOCore

/// The JSON API of the chat page (and of scripts): conversations, messages with streamed answers that
/// survive the page, images, exports, and the models a user may choose.
public struct ConversationController: Sendable {
    let engine: ConversationEngine
    let images: ImageInspector

    public init(engine: ConversationEngine, imageLimits: ImageLimits) {
        self.engine = engine
        self.images = ImageInspector(imageLimits)
    }

    var storage: Storage { engine.storage }

    /// Each path, defined once.
    enum Paths {
        static let models: RouterPath = "/api/models"
        static let conversations: RouterPath = "/api/conversations"
        static let conversation: RouterPath = "/api/conversations/:id"
        static let export: RouterPath = "/api/conversations/:id/export"
        static let messages: RouterPath = "/api/conversations/:id/messages"
        static let events: RouterPath = "/api/conversations/:id/messages/:message/events"
        static let stop: RouterPath = "/api/conversations/:id/messages/:message/stop"
        static let regenerate: RouterPath = "/api/conversations/:id/regenerate"
        static let images: RouterPath = "/api/images"
        static let image: RouterPath = "/api/images/:hash"
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.get(Paths.models, use: models)
        router.get(Paths.conversations, use: list)
        router.post(Paths.conversations, use: create)
        router.get(Paths.conversation, use: show)
        router.patch(Paths.conversation, use: update)
        router.delete(Paths.conversation, use: delete)
        router.get(Paths.export, use: export)
        router.post(Paths.messages, use: send)
        router.get(Paths.events, use: events)
        router.post(Paths.stop, use: stop)
        router.post(Paths.regenerate, use: regenerate)
        router.post(Paths.images, use: upload)
        router.get(Paths.image, use: image)
    }

    // MARK: Bodies

    struct CreateBody: Decodable { var model: String; var system_prompt: String?; var title: String? }
    struct UpdateBody: Decodable { var model: String?; var system_prompt: String?; var title: String? }
    struct SendBody: Decodable { var text: String?; var image_ids: [String]? }

    struct ModelView: Codable, Sendable { var id: String; var display_name: String; var vision: Bool; var loaded: Bool }
    struct ModelsView: ResponseEncodable { var data: [ModelView] }
    struct ListView: ResponseEncodable { var data: [ConversationView]; var next_cursor: String? }
    struct DetailView: ResponseEncodable { var conversation: ConversationView; var messages: [MessageView] }
    struct SentView: ResponseEncodable { var user_message: MessageView?; var assistant_message: MessageView }
    struct ImageView: ResponseEncodable { var id: String; var url: String; var width: Int; var height: Int }

    // MARK: Models

    @Sendable func models(_ request: Request, context: GatewayRequestContext) async throws -> ModelsView {
        let user = try context.requireIdentity().user
        // Class policy (issue 5): only the class's models.
        let policy = try await engine.policies.resolver.applicableClass(for: user)?.policy ?? ClassPolicy()
        // Every model server's models, the first to name a model keeping it; a server that does not answer
        // is left out, unless none answers.
        var models: [ModelView] = []
        var seen: Set<String> = []
        var failure: (any Error)?
        for upstream in engine.admission.pool.upstreams {
            do {
                for model in try await Self.models(of: upstream) where policy.allows(model: model.id) && seen.insert(model.id).inserted {
                    models.append(model)
                }
            } catch {
                failure = failure ?? error
            }
        }
        if models.isEmpty, let failure { throw GatewayError.upstream(failure) }
        return ModelsView(data: models)
    }

    /// The chat models of one upstream, as the page shows them.
    static func models(of upstream: Upstream) async throws -> [ModelView] {
        switch upstream.kind {
        case .lmstudio:
            let list = try await upstream.client.listModels()
            return list.models.filter { $0.type != "embedding" && $0.type != "embeddings" }.map {
                ModelView(id: $0.key, display_name: $0.displayName ?? $0.key, vision: $0.supportsVision, loaded: $0.isLoaded)
            }
        case .openai, .llamacpp, .tgw:
            return try await upstream.client.listModelsOpenAI().data.map {
                ModelView(id: $0.id, display_name: $0.id, vision: false, loaded: true)
            }
        }
    }

    // MARK: Conversations

    @Sendable func list(_ request: Request, context: GatewayRequestContext) async throws -> ListView {
        let user = try context.requireIdentity().user
        let query = request.form
        let limit = min(100, max(1, query.int("limit") ?? 30))
        let search = query.get("q").flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
        let cursor = query.get("cursor").flatMap(PageCursor.init(text:))
        let page = try await storage.conversations.list(userID: user.id, search: search, before: cursor, limit: limit + 1)
        let shown = Array(page.prefix(limit))
        let next = page.count > limit ? shown.last.map { PageCursor(at: $0.updatedAt, id: $0.id).text } : nil
        return ListView(data: shown.map(ConversationView.init), next_cursor: next)
    }

    @Sendable func create(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<ConversationView> {
        let user = try context.requireIdentity().user
        let body = try await RequestBodies.decode(CreateBody.self, from: request)
        guard !body.model.isEmpty else { throw GatewayError.badRequest("choose a model") }
        // Class policy (issue 5): the conversation belongs to the class that applies now, and uses its models.
        let applied = try await engine.policies.resolver.applicableClass(for: user)
        if let applied { try PolicyEnforcer.checkModel(body.model, in: applied) }
        let conversation = Conversation(userID: user.id, title: body.title ?? "", model: body.model, systemPrompt: body.system_prompt,
                                        classID: applied?.id)
        try await storage.conversations.create(conversation)
        return EditedResponse(status: .created, response: ConversationView(conversation))
    }

    @Sendable func show(_ request: Request, context: GatewayRequestContext) async throws -> DetailView {
        let user = try context.requireIdentity().user
        let conversation = try await engine.conversation(try context.parameters.require("id"), of: user)
        let messages = try await storage.messages.list(conversationID: conversation.id)
        return DetailView(conversation: ConversationView(conversation), messages: messages.map(MessageView.init))
    }

    @Sendable func update(_ request: Request, context: GatewayRequestContext) async throws -> ConversationView {
        let user = try context.requireIdentity().user
        var conversation = try await engine.conversation(try context.parameters.require("id"), of: user)
        let body = try await RequestBodies.decode(UpdateBody.self, from: request)
        if let title = body.title {
            let trimmed = title.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, trimmed.count <= 200 else { throw GatewayError.badRequest("a title has 1 to 200 characters") }
            conversation.title = trimmed
        }
        if let model = body.model, !model.isEmpty {
            // Class policy (issue 5).
            if let applied = try await engine.policies.resolver.applicableClass(for: user, preferredClassID: conversation.classID) {
                try PolicyEnforcer.checkModel(model, in: applied)
            }
            conversation.model = model
        }
        if let prompt = body.system_prompt { conversation.systemPrompt = prompt.isEmpty ? nil : prompt }
        conversation.updatedAt = Date()
        try await storage.conversations.update(conversation)
        return ConversationView(conversation)
    }

    @Sendable func delete(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        try await engine.delete(user: user, conversationID: try context.parameters.require("id"))
        return Response(status: .noContent)
    }

    // MARK: Messages

    @Sendable func send(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<SentView> {
        let user = try context.requireIdentity().user
        let body = try await RequestBodies.decode(SendBody.self, from: request)
        let (userMessage, assistant) = try await engine.send(
            user: user, conversationID: try context.parameters.require("id"), text: body.text ?? "", imageHashes: body.image_ids ?? []
        )
        return EditedResponse(status: .accepted, response: SentView(user_message: MessageView(userMessage), assistant_message: MessageView(assistant)))
    }

    @Sendable func regenerate(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<SentView> {
        let user = try context.requireIdentity().user
        let assistant = try await engine.regenerate(user: user, conversationID: try context.parameters.require("id"))
        return EditedResponse(status: .accepted, response: SentView(user_message: nil, assistant_message: MessageView(assistant)))
    }

    @Sendable func stop(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        try await engine.stop(user: user, conversationID: try context.parameters.require("id"), messageID: try context.parameters.require("message"))
        return Response(status: .accepted)
    }

    /// The answer's events from the one after `Last-Event-ID`; a finished answer no longer in memory is
    /// sent whole as a single `end` event.
    @Sendable func events(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        let conversation = try await engine.conversation(try context.parameters.require("id"), of: user)
        guard let message = try await storage.messages.find(id: try context.parameters.require("message")),
            message.conversationID == conversation.id, message.role == "assistant"
        else { throw GatewayError.notFound("no such message") }
        let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!].flatMap { Int($0) } ?? 0
        let live = await engine.hub.subscribe(message.id, after: lastEventID)
        let storage = self.storage
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
            if let live {
                for await event in live {
                    try await writer.write(ByteBuffer(string: ServerSentEvent(event: event.name, data: event.data, id: String(event.id)).encoded))
                }
            } else if let stored = try await storage.messages.find(id: message.id) {
                // The whole answer as it was kept (also after a restart: "interrupted").
                let data = JSONValue(view: MessageView(stored)).jsonString
                try await writer.write(ByteBuffer(string: ServerSentEvent(event: "end", data: data, id: "\(Int.max)").encoded))
            }
            try await writer.finish(nil)
        })
    }

    // MARK: Export

    @Sendable func export(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        let conversation = try await engine.conversation(try context.parameters.require("id"), of: user)
        let messages = try await storage.messages.list(conversationID: conversation.id)
        let format = request.form.get("format") ?? "json"
        let name = ConversationExport.fileName(conversation.title)
        switch format {
        case "markdown", "md":
            return Response(status: .ok, headers: [
                .contentType: "text/markdown; charset=utf-8",
                .contentDisposition: "attachment; filename=\"\(name).md\"",
            ], body: .init(byteBuffer: ByteBuffer(string: ConversationExport.markdown(conversation, messages))))
        case "json":
            let view = DetailView(conversation: ConversationView(conversation), messages: messages.map(MessageView.init))
            return Response(status: .ok, headers: [
                .contentType: "application/json",
                .contentDisposition: "attachment; filename=\"\(name).json\"",
            ], body: .init(byteBuffer: ByteBuffer(data: JSONValue(view: view).jsonData)))
        default:
            throw GatewayError.badRequest("format must be json or markdown")
        }
    }

    // MARK: Images

    @Sendable func upload(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<ImageView> {
        let user = try context.requireIdentity().user
        var request = request
        let bytes = try await RequestBodies.collect(&request, upTo: images.maxBytes + 1)
        let data = Data(bytes.readableBytesView)
        let checked = try images.check(data)
        let hash = Secrets.sha256(data)
        try await storage.images.store(StoredImage(hash: hash, mimeType: checked.type.rawValue, data: data,
                                                   width: checked.width, height: checked.height, createdAt: Date()), ownerID: user.id)
        return EditedResponse(status: .created, response: ImageView(id: hash, url: "/api/images/\(hash)", width: checked.width, height: checked.height))
    }

    @Sendable func image(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let user = try context.requireIdentity().user
        let hash = try context.parameters.require("hash")
        // Someone else's image is "not found", like one that does not exist, unless it is in a transcript the
        // user may read.
        guard try await mayView(image: hash, user: user), let image = try await storage.images.find(hash: hash) else {
            throw GatewayError.notFound("no such image")
        }
        return Response(status: .ok, headers: [
            .contentType: image.mimeType, .cacheControl: "private, max-age=31536000, immutable", .eTag: "\"\(hash)\"",
        ], body: .init(byteBuffer: ByteBuffer(data: image.data)))
    }
}

extension ConversationController {
    /// Whether `user` may see an image: its owner may, and so may the instructor (or an admin) of a class
    /// whose transcripts are visible in full, when an owner who is a member sent it in a conversation of that
    /// class (where the transcript shows it). Such views are audited.
    func mayView(image hash: String, user: User) async throws -> Bool {
        if try await storage.images.isOwned(hash: hash, by: user.id) { return true }
        guard user.role >= .instructor else { return false }
        for owner in try await storage.images.owners(hash: hash) {
            for classID in try await storage.messages.classIDs(showing: hash, sentBy: owner) {
                guard let course = try await storage.classes.find(id: classID),
                    course.policy.transcriptVisibility == .full, course.instructorID == user.id || user.role == .admin,
                    try await storage.classes.isMember(classID: classID, userID: owner)
                else { continue }
                try await storage.audit.record(user, "class.member.image.view", owner, detail: "class \(course.id), image \(hash)")
                return true
            }
        }
        return false
    }
}
