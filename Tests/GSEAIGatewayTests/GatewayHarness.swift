import AsyncHTTPClient
import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// A gateway in front of stub upstreams (one, or a pool), on ports of their own, with an in-memory database.
struct GatewayHarness: Sendable {
    /// The stubs, in the order of the pool (one when there is no pool).
    let stubs: [StubUpstream]
    let gateway: Gateway
    let app: RunningApplication

    /// The first (or only) stub.
    var stub: StubUpstream { stubs[0] }
    var baseURL: String { app.baseURL }
    var storage: Storage { gateway.storage }

    /// A stub upstream of a harness: its kind, and (like a GPU server) how many generations it runs at once
    /// and how long each takes.
    struct StubSpec: Sendable {
        var kind: UpstreamKind = .lmstudio
        var slots: Int?
        var serviceTime: Duration = .zero
        var models: [String] = StubModels.all
    }

    /// Runs `body` with a fresh gateway in front of one stub; `configure` adjusts the configuration first.
    static func with<T: Sendable>(
        kind: UpstreamKind = .lmstudio,
        stubSlots: Int? = nil,
        serviceTime: Duration = .zero,
        configure: @Sendable (inout GatewayConfiguration) -> Void = { _ in },
        clock: @escaping @Sendable () -> Date = Date.init,
        logHandler: (@Sendable (String) -> any LogHandler)? = nil,
        _ body: (GatewayHarness) async throws -> T
    ) async throws -> T {
        try await with(stubs: [StubSpec(kind: kind, slots: stubSlots, serviceTime: serviceTime)], configure: configure, clock: clock,
                       logHandler: logHandler, body)
    }

    /// Runs `body` with a fresh gateway in front of a pool of stubs named `up1`, `up2`… (one stub: the plain
    /// one-upstream configuration); the upstreams' slots are the stubs' (4 when a stub has no limit).
    /// `postgresSchema`: the gateway is a replica on that schema of the PostgreSQL test database (open two
    /// harnesses on one schema for two replicas). `logHandler`: the gateway's log handler, for a test that reads its
    /// log (else none, or standard error's with `GSEAI_TEST_LOG=1`).
    static func with<T: Sendable>(
        stubs specs: [StubSpec],
        postgresSchema: String? = nil,
        configure: @Sendable (inout GatewayConfiguration) -> Void = { _ in },
        clock: @escaping @Sendable () -> Date = Date.init,
        logHandler: (@Sendable (String) -> any LogHandler)? = nil,
        _ body: (GatewayHarness) async throws -> T
    ) async throws -> T {
        var stubs: [StubUpstream] = []
        let outcome: Result<T, any Error>
        do {
            for spec in specs { stubs.append(try await StubUpstream.start(slots: spec.slots, serviceTime: spec.serviceTime, models: spec.models)) }
            outcome = .success(try await run(stubs: stubs, specs: specs, postgresSchema: postgresSchema, configure: configure, clock: clock,
                                                 logHandler: logHandler, body))
        } catch {
            outcome = .failure(error)
        }
        for stub in stubs { await stub.stop() }
        return try outcome.get()
    }

    private static func run<T: Sendable>(
        stubs: [StubUpstream], specs: [StubSpec], postgresSchema: String?, configure: @Sendable (inout GatewayConfiguration) -> Void,
        clock: @escaping @Sendable () -> Date, logHandler: (@Sendable (String) -> any LogHandler)?,
        _ body: (GatewayHarness) async throws -> T
    ) async throws -> T {
        let stub = stubs[0]
        do {
            var configuration = GatewayConfiguration()
            configuration.upstreamURL = stub.baseURL
            configuration.upstreamToken = stub.token
            configuration.upstreamKind = specs[0].kind
            configuration.upstreamSlots = specs[0].slots ?? 4
            if specs.count > 1 {
                configuration.pool = zip(specs, stubs).enumerated().map { index, pair in
                    UpstreamSettings(name: "up\(index + 1)", url: pair.1.baseURL, kind: pair.0.kind, token: pair.1.token,
                                     slots: pair.0.slots ?? 4)
                }
            }
            configuration.port = 0
            configure(&configuration)
            // GSEAI_TEST_LOG=1 prints the gateway's log (debug and up, the service group's included) to stderr.
            let logs = ProcessInfo.processInfo.environment["GSEAI_TEST_LOG"] != nil
            var logger = Logger(label: "gateway-test", factory: { label in
                if let logHandler { return logHandler(label) }
                return logs ? StreamLogHandler.standardError(label: label) : SwiftLogNoOpLogHandler() as any LogHandler
            })
            if logs && logHandler == nil {
                logger.logLevel = .debug
                // Which gateway a line is from, when several run at once.
                logger[metadataKey: "test.gateway"] = .string(String(UUID().uuidString.prefix(8)))
            }
            let storage: Storage
            if let postgresSchema {
                // The other replicas reach this one at its own address: its port is chosen first.
                configuration.port = try await FreePort.find()
                storage = try await TestDatabase.openPostgres(schema: postgresSchema, replicaURL: configuration.effectiveReplicaURL, logger: logger)
            } else {
                storage = try await TestDatabase.open(logger: logger, replicaURL: "http://127.0.0.1:9")
            }
            let gateway: Gateway
            let app: RunningApplication
            do {
                gateway = try Gateway(configuration: configuration, storage: storage, passwordCost: 4, clock: clock, logger: logger)
                app = try await RunningApplication.start(logger: logger) { onServerRunning in
                    try gateway.buildApplication(onServerRunning: onServerRunning, logger: logger)
                }
            } catch {
                try? await storage.close()
                throw error
            }
            let harness = GatewayHarness(stubs: stubs, gateway: gateway, app: app)
            do {
                let result = try await body(harness)
                logger.info("test body ended; stopping")
                await app.stop()
                logger.info("stopped")
                // As `gseai serve` ends: the last usage and the close, done already by a graceful stop.
                await gateway.finishAfterStop()
                return result
            } catch {
                await app.stop()
                await gateway.finishAfterStop()
                throw error
            }
        }
    }

    /// A user's usage rows, after writing what the meter holds.
    func usage(of userID: String) async throws -> [UsageRecord] {
        await gateway.usageMeter.flush()
        return try await storage.usage.list(userID: userID)
    }

    /// A user with a password (`password-<name>`) and an API key.
    func user(_ name: String, role: Role = .student) async throws -> (user: User, key: String) {
        let (user, _) = try await gateway.accounts.createUser(username: name, password: "password-\(name)", role: role)
        let (key, _) = try await gateway.accounts.createKey(for: user, label: "test")
        return (user, key)
    }

    /// The client core pointed at the gateway with `key`, as a script would use it; `basePath` is where an API
    /// is mounted on the gateway (`/llamacpp`).
    func client(key: String, basePath: String = "", timeouts: GSEAIClient.Timeouts = .init()) throws -> GSEAIClient {
        try GSEAIClient(apiToken: key, baseURL: baseURL + basePath, timeouts: timeouts)
    }

    /// Runs `body` with a client for `key`, shutting it down afterwards.
    func withClient<T: Sendable>(key: String, basePath: String = "", timeouts: GSEAIClient.Timeouts = .init(),
                                 _ body: (GSEAIClient) async throws -> T) async throws -> T {
        let client = try client(key: key, basePath: basePath, timeouts: timeouts)
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// The tests' HTTP client: as many connections to a gateway as a test opens requests at once (the shared
    /// client's eight would queue a ninth request in the test itself, out of the gateway's sight).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// A plain HTTP request to the gateway.
    func request(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: String? = nil) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.body = .bytes(ByteBuffer(string: body))
            if !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
                request.headers.add(name: "Content-Type", value: "application/json")
            }
        }
        let response = try await Self.client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return HTTPResult(status: Int(response.status.code), headers: response.headers, text: String(buffer: bytes))
    }

    /// A JSON request with an API key.
    func post(_ path: String, key: String?, json: JSONValue, headers: [(String, String)] = []) async throws -> HTTPResult {
        var all = headers
        if let key { all.append(("Authorization", "Bearer \(key)")) }
        return try await request(.POST, path, headers: all, body: json.jsonString)
    }
}

/// A response read whole.
struct HTTPResult: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var text: String
    var json: JSONValue? { try? JSONValue(parsing: Array(text.utf8)) }
    /// The OpenAI/LM Studio error message, or Anthropic's.
    var errorMessage: String? { json?["error"]?["message"]?.stringValue }
    /// The Server-Sent Events of a streamed body.
    var events: [ServerSentEvent] {
        var parser = ServerSentEventParser()
        return parser.feed(Array(text.utf8)) + parser.finish()
    }
}

/// A real 1×1 PNG, base64.
let tinyPNGBase64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

/// A free TCP port on 127.0.0.1, found by binding port 0.
enum FreePort {
    static func find() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}
