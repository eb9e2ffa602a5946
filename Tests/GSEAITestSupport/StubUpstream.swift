import Foundation
import GSEAI
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// A stand-in GSE AI server for tests: it speaks LM Studio's `/api/v1/*` and `/api/v0/*`, the
/// OpenAI-compatible `/v1/*` and the Anthropic-compatible `/v1/messages`, on a port of its own.
///
/// It answers by echoing (`Echo: <text>`), counts images, keeps stateful response ids, and acts out
/// faults named in the prompt text so that any client, through any gateway, can ask for them:
/// `[[error]]` (a server error), `[[cut]]` (the stream ends before its final event), `[[drop]]` (the
/// connection drops mid-stream), `[[slow]]` (200 ms between events), `[[hang]]` (the stream goes
/// silent), `[[hang-head]]` (no response head for a minute, or until the client leaves, which
/// ``StubState/abandonedHeads`` counts), `[[flood]]` (256 MiB of comment lines after a stream's first event) and
/// `[[busy]]` (429 with `Retry-After: 7`, on every route).
public final class StubUpstream: Sendable {
    /// The body the stub answers `[[busy]]` with, exactly.
    public static let busyBody = StubRoutes.busyBody
    /// The bearer token the stub accepts.
    public let token: String
    /// What it has seen.
    public let state: StubState
    /// Its slots and service time, when it has a limit.
    public let load: StubLoad?
    private let running: RunningApplication
    private let counter: StubConnectionCounter

    /// How many connections it has accepted (a client that keeps its connections alive opens few).
    public var connectionsAccepted: Int { counter.count }

    /// The port it listens on (127.0.0.1).
    public var port: Int { running.port }
    /// The base URL, such as `http://127.0.0.1:50123`.
    public var baseURL: String { running.baseURL }

    private init(token: String, state: StubState, load: StubLoad?, running: RunningApplication, counter: StubConnectionCounter) {
        self.token = token
        self.state = state
        self.load = load
        self.running = running
        self.counter = counter
    }

    /// Starts a stub on `port` (0 picks a free one) and returns once it accepts connections. With `slots`,
    /// it runs at most that many generations at once (the others wait, first come first served), each
    /// lasting `serviceTime`.
    public static func start(
        token: String = "stub-token",
        port: Int = 0,
        slots: Int? = nil,
        serviceTime: Duration = .zero,
        models: [String] = StubModels.all,
        logger: Logger = Logger(label: "stub-upstream", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> StubUpstream {
        let state = StubState()
        let load = slots.map { StubLoad(slots: $0, serviceTime: serviceTime) }
        let router = Router(context: StubRequestContext.self)
        router.add(middleware: StubConnectionMiddleware())
        let routes = StubRoutes(token: token, state: state, load: load, served: models)
        routes.register(on: router)
        let counter = StubConnectionCounter()
        let running = try await RunningApplication.start(logger: logger) { onServerRunning in
            Application(
                router: router,
                server: .http1(configuration: .init(additionalChannelHandlers: [StubHangUpHandler(), StubConnectionCounter.Handler(counter)])),
                configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "stub-upstream"),
                onServerRunning: onServerRunning,
                logger: logger
            )
        }
        return StubUpstream(token: token, state: state, load: load, running: running, counter: counter)
    }

    /// Stops the stub.
    public func stop() async {
        await running.kill()
    }

    /// Runs `body` with a started stub and stops it afterwards.
    public static func with<T: Sendable>(
        token: String = "stub-token",
        slots: Int? = nil,
        serviceTime: Duration = .zero,
        _ body: (StubUpstream) async throws -> T
    ) async throws -> T {
        let stub = try await start(token: token, slots: slots, serviceTime: serviceTime)
        do {
            let result = try await body(stub)
            await stub.stop()
            return result
        } catch {
            await stub.stop()
            throw error
        }
    }
}

/// What the stub has received and remembers.
public actor StubState {
    /// One request as received.
    public struct Recorded: Sendable {
        /// The method and path, such as `POST /api/v1/chat`.
        public var route: String
        /// The `Authorization` header.
        public var authorization: String?
        /// The JSON body, when there was one.
        public var body: JSONValue?
    }

    /// Every request, in order.
    public private(set) var requests: [Recorded] = []
    /// Streams the client abandoned before the stub finished writing them.
    public private(set) var abandonedStreams = 0
    /// Requests held by `[[hang-head]]` whose caller left before the stub answered.
    public private(set) var abandonedHeads = 0
    /// Streams the stub wrote to the end.
    public private(set) var completedStreams = 0
    /// Stored conversations: response id → the user texts so far.
    private var conversations: [String: [String]] = [:]
    private var nextID = 1
    /// Loaded models.
    public private(set) var loaded: Set<String> = []
    /// Download jobs: id → polls so far.
    private var downloads: [String: Int] = [:]
    /// Its llama.cpp server's counters, slot and LoRA adapters.
    var llama = StubLlamaState()
    /// Its text-generation-webui's loaded model and LoRAs.
    var textGenerationWebUI = StubTextGenerationWebUIState()

    func record(_ request: Recorded) { requests.append(request) }
    func streamAbandoned() { abandonedStreams += 1 }
    func streamCompleted() { completedStreams += 1 }
    func headAbandoned() { abandonedHeads += 1 }

    /// The requests to a route, such as `POST /api/v1/chat`.
    public func requests(to route: String) -> [Recorded] { requests.filter { $0.route == route } }

    func makeID(_ prefix: String) -> String {
        defer { nextID += 1 }
        return prefix + String(format: "%016x", nextID * 7_919)
    }

    /// The texts before this turn; `nil` when the previous id is unknown.
    func history(for previous: String?) -> [String]? {
        guard let previous else { return [] }
        return conversations[previous]
    }

    /// Remembers a turn and returns its new id.
    func store(history: [String], text: String) -> String {
        let id = makeID("resp_")
        conversations[id] = history + [text]
        return id
    }

    /// Forgets every stored response, as an upstream restart would.
    public func forgetResponses() { conversations.removeAll() }

    func load(_ model: String) { loaded.insert(model) }
    func unload(_ model: String) -> Bool { loaded.remove(model) != nil }

    func startDownload() -> String {
        let id = makeID("job_")
        downloads[id] = 0
        return id
    }

    /// Polls a download: each poll advances it by a quarter. `nil` for an unknown job.
    func pollDownload(_ id: String) -> Int? {
        guard let polls = downloads[id] else { return nil }
        downloads[id] = polls + 1
        return polls + 1
    }
}
