import Foundation
import GSEAI
import Hummingbird
import NIOCore

/// The faults a prompt can ask the stub to act out.
struct Scenario {
    var error = false
    var cut = false
    var drop = false
    var slow = false
    var hang = false
    var hangHead = false
    /// `[[late-head]]`: the answer's head comes after a second (a model being loaded), then it goes on.
    var lateHead = false
    /// `[[flood]]`: after a stream's first event, 256 MiB of comment lines (which clients skip), as fast as the
    /// connection takes them: more than any socket buffers hold, for a caller who stops reading.
    var flood = false

    init(_ text: String) {
        error = text.contains("[[error]]")
        cut = text.contains("[[cut]]")
        drop = text.contains("[[drop]]")
        slow = text.contains("[[slow]]")
        hang = text.contains("[[hang]]")
        hangHead = text.contains("[[hang-head]]")
        lateHead = text.contains("[[late-head]]")
        flood = text.contains("[[flood]]")
    }
}

/// The stub's models: one that sees, one that doesn't, one that embeds.
public enum StubModels {
    public static let vision = "stub/echo-vl"
    public static let text = "stub/echo-text"
    public static let embedding = "stub/embed"
    public static let all = [vision, text, embedding]
}

struct StubRoutes: Sendable {
    let token: String
    let state: StubState
    /// Like a GPU server: generation runs at most `slots` at a time, each taking the service time.
    let load: StubLoad?
    /// The models it lists and answers (by default all of ``StubModels``): stubs of a pool can differ.
    let served: [String]

    /// The routes that generate (and so take one of the stub's slots when it has a limit).
    static let generating: Set<String> = [
        "/api/v1/chat", "/v1/chat/completions", "/api/v0/chat/completions", "/v1/completions", "/api/v0/completions",
        "/v1/embeddings", "/api/v0/embeddings", "/v1/responses", "/v1/messages",
        "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking", "/v1/rerank",
        "/v1/reranking", "/v1/internal/logits",
    ]

    func register(on router: Router<StubRequestContext>) {
        router.get("/api/v1/models") { request, context in try await handle(request) { _ in try await listModelsV1() } }
        router.post("/api/v1/models/load") { request, _ in try await handle(request, load) }
        router.post("/api/v1/models/unload") { request, _ in try await handle(request, unload) }
        router.post("/api/v1/models/download") { request, _ in try await handle(request, download) }
        router.get("/api/v1/models/download/status/:job") { request, context in
            let job = context.parameters.get("job") ?? ""
            return try await handle(request) { _ in try await downloadStatus(job) }
        }
        router.post("/api/v1/chat") { request, _ in try await handle(request, chatV1) }
        router.get("/api/v0/models") { request, _ in try await handle(request) { _ in try await listModelsV0() } }
        router.get("/api/v0/models/**") { request, context in
            let raw = context.parameters.getCatchAll().joined(separator: "/")
            let model = raw.removingPercentEncoding ?? raw
            return try await handle(request) { _ in try await modelV0(model) }
        }
        for prefix in ["/v1", "/api/v0"] {
            let v0 = prefix == "/api/v0"
            router.post("\(prefix)/chat/completions") { request, _ in
                try await handle(request) { try await chatCompletions($0, v0: v0) }
            }
            router.post("\(prefix)/completions") { request, _ in
                try await handle(request) { try await completions($0, v0: v0) }
            }
            router.post("\(prefix)/embeddings") { request, _ in try await handle(request, embeddings) }
        }
        router.get("/v1/models") { request, _ in try await handle(request) { _ in try listModelsOpenAI() } }
        router.post("/v1/responses") { request, _ in try await handle(request, responses) }
        router.post("/v1/messages") { request, _ in try await handle(request, messages) }
        registerLlamaCpp(on: router)
        registerTextGenerationWebUI(on: router)
    }

    // MARK: Plumbing

    /// `[[hang-head]]`: no answer for a minute, unless the caller leaves first, which is counted in
    /// ``StubState/abandonedHeads``.
    func hangHead() async throws {
        if try await Self.silence(for: .seconds(60), watching: StubConnection.channel) {
            await state.headAbandoned()
            throw CancellationError()
        }
    }

    /// Records the request, checks the token, parses the JSON body, and turns thrown
    /// ``StubHTTPError``s into JSON error responses.
    func handle(_ request: Request, format: StubErrorFormat = .openAI,
                _ body: @Sendable (JSONValue) async throws -> Response) async throws -> Response {
        let failure = { (status: HTTPResponse.Status, message: String) in
            switch format {
            case .openAI: Self.error(status, message)
            case .llamacpp: Self.llamaError(status, message)
            case .fastAPI: Self.json(["detail": .string(message)], status: status)
            }
        }
        let buffer = try await request.body.collect(upTo: 32 << 20)
        let json = buffer.readableBytes > 0 ? try? JSONValue(parsing: buffer.readableBytesView) : nil
        let authorization = request.headers[.authorization]
        await state.record(.init(route: "\(request.method) \(request.uri.path)", authorization: authorization, body: json))
        guard authorization == "Bearer \(token)" else {
            return failure(.unauthorized, "invalid or missing API token")
        }
        if buffer.readableBytes > 0, json == nil {
            return failure(.badRequest, "request body is not valid JSON")
        }
        if String(buffer: buffer).contains("[[busy]]") { return Self.busy }
        if let model = json?["model"]?.stringValue, StubModels.all.contains(model), !served.contains(model) {
            return failure(.notFound, "model '\(model)' not found")
        }
        guard let load, request.method == .post, Self.generating.contains(request.uri.path) else {
            do {
                return try await body(json ?? .object([:]))
            } catch let error as StubHTTPError {
                return failure(error.status, error.message)
            }
        }
        // A slot first, held until the answer is written; a whole answer comes after the service time, a
        // stream's events spread over it (see `stream`).
        await load.enter()
        var response: Response
        do {
            response = try await body(json ?? .object([:]))
        } catch let error as StubHTTPError {
            await load.leave()
            return failure(error.status, error.message)
        } catch {
            await load.leave()
            throw error
        }
        if response.headers[.contentType] == "text/event-stream" {
            let original = response.body
            response.body = ResponseBody { writer in
                defer { Task { await load.leave() } }
                try await original.write(writer)
            }
        } else {
            try? await Task.sleep(for: load.serviceTime)
            await load.leave()
        }
        return response
    }

    /// `[[busy]]`: 429 with `Retry-After`, the body written by hand (spacing and a field of its own) so that a
    /// test can tell it passed through as it was.
    static var busy: Response {
        Response(
            status: .tooManyRequests,
            headers: [.contentType: "application/json", .retryAfter: "7"],
            body: .init(byteBuffer: ByteBuffer(string: busyBody))
        )
    }
    static let busyBody = #"{"error": {"message": "the stub is busy", "type": "rate_limit_error", "code": "busy"}, "stub_detail": 1}"#

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(["error": ["message": .string(message), "type": "invalid_request_error"]], status: status)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(data: value.jsonData))
        )
    }

    /// Writes Server-Sent Events, acting out the scenario's stream faults.
    func stream(_ events: [ServerSentEvent], scenario: Scenario) -> Response {
        let state = self.state
        // With a service time, the events spread over it, the first at once.
        let spacing = load.map { $0.serviceTime / max(events.count - 1, 1) } ?? .zero
        // Known here, in the handler's scope (a task-local), not in the body's writer.
        let connection = StubConnection.channel
        let body = ResponseBody { writer in
            let stopAt = (scenario.cut || scenario.drop) ? max(1, events.count / 2) : events.count
            do {
                for (index, event) in events.prefix(stopAt).enumerated() {
                    if index > 0, spacing > .zero { try await Task.sleep(for: spacing) }
                    try await writer.write(ByteBuffer(string: event.encoded))
                    if scenario.hang && index == 0, try await Self.silence(for: .seconds(60), watching: connection) {
                        throw CancellationError()
                    }
                    if scenario.flood && index == 0 {
                        let comment = ByteBuffer(string: ": " + String(repeating: "x", count: 64 << 10) + "\n\n")
                        for _ in 0..<4096 {
                            try await writer.write(comment)
                            // Hummingbird's writer takes a piece while the connection was writable when last told,
                            // and hands it to the event loop later: on a busy machine this task can put the whole
                            // flood in the connection's buffers before the loop sends any, and "complete" a stream
                            // no one read. Like a real server with a slow reader, the flood waits for the connection.
                            if let connection, try await !Self.waitUntilWritable(connection) { throw CancellationError() }
                        }
                    }
                    if scenario.slow { try await Task.sleep(for: .milliseconds(200)) }
                }
                if scenario.drop { throw StubHTTPError(.internalServerError, "connection dropped on purpose") }
                try await writer.finish(nil)
                await state.streamCompleted()
            } catch let error as StubHTTPError {
                throw error
            } catch {
                await state.streamAbandoned()
                throw error
            }
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: body
        )
    }

    /// Waits until `connection` takes more (what was written before has reached it: the look runs on its loop,
    /// after the writes handed over): `true`, or `false` when it closed.
    static func waitUntilWritable(_ connection: any Channel) async throws -> Bool {
        while true {
            let (active, writable) = try await connection.eventLoop.submit { (connection.isActive, connection.isWritable) }.get()
            if !active { return false }
            if writable { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Says nothing for `duration`, or until the connection closes: whether it closed. A silent server notices
    /// a caller who leaves, as a real one does at its next write (Hummingbird does not cancel a handler whose
    /// connection closed, so the connection is looked at).
    static func silence(for duration: Duration, watching connection: (any Channel)?) async throws -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if let connection, !connection.isActive { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    static func requireModel(_ body: JSONValue, kinds: [String] = StubModels.all) throws -> String {
        guard let model = body["model"]?.stringValue, !model.isEmpty else {
            throw StubHTTPError(.badRequest, "'model' is required")
        }
        guard kinds.contains(model) else { throw StubHTTPError(.notFound, "model '\(model)' not found") }
        return model
    }

    /// The reply to `text`, split into the deltas a stream sends.
    static func reply(to text: String, images: Int, turn: Int) -> [String] {
        var reply = "Echo: \(text)"
        if images > 0 { reply += " [images: \(images)]" }
        if turn > 1 { reply += " (turn \(turn))" }
        var pieces: [String] = []
        var current = ""
        for character in reply {
            current.append(character)
            if character == " " {
                pieces.append(current)
                current = ""
            }
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }

    static func words(_ text: String) -> Int { text.split(whereSeparator: \.isWhitespace).count }
}

/// How the stub writes an error: OpenAI's `{"error": {"message", "type"}}`, llama.cpp's
/// `{"error": {"code", "message", "type"}}`, or FastAPI's `{"detail"}` (text-generation-webui's own endpoints).
enum StubErrorFormat: Sendable {
    case openAI
    case llamacpp
    case fastAPI
}

/// An error the stub answers as JSON with a status.
struct StubHTTPError: Error {
    var status: HTTPResponse.Status
    var message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// The stub's GPU, when a test asks for one: at most `slots` generations at once, first come first served,
/// each lasting `serviceTime`; it remembers the most it ever ran at once.
public actor StubLoad {
    public let slots: Int
    public nonisolated let serviceTime: Duration
    private var running = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []
    /// The most generations that ran at once.
    public private(set) var mostRunning = 0
    /// Generations finished.
    public private(set) var served = 0

    public init(slots: Int, serviceTime: Duration) {
        self.slots = max(1, slots)
        self.serviceTime = serviceTime
    }

    func enter() async {
        if running < slots {
            running += 1
            mostRunning = max(mostRunning, running)
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func leave() {
        served += 1
        if waiting.isEmpty {
            running -= 1
        } else {
            // The slot passes to the next in line; the count of running generations stays.
            waiting.removeFirst().resume()
        }
    }
}
