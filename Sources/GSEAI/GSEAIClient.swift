import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// A client for a GSE AI server (LM Studio, or any server with the OpenAI-compatible API).
///
/// Method-for-method the Swift counterpart of the Python client `gseai.GSEAIServer`: the LM Studio
/// native API (`/api/v1/*`, `/api/v0/*`), the OpenAI-compatible API (`/v1/*`) and the
/// Anthropic-compatible `/v1/messages`, typed and streaming, plus ``send(_:)`` for raw forwarding.
///
/// ```swift
/// let client = GSEAIClient(apiToken: token)
/// defer { Task { try await client.shutdown() } }
/// for try await event in try await client.chatStream(ChatRequest(model: "qwen/qwen3-8b", input: "Hi")) {
///     if let text = event.delta { print(text, terminator: "") }
/// }
/// ```
public final class GSEAIClient: Sendable {
    /// Time limits, applied to every request.
    public struct Timeouts: Sendable, Hashable {
        /// Establishing a connection.
        public var connect: Duration
        /// From sending a request to the response head.
        public var firstByte: Duration
        /// Between two pieces of a response body (two stream events, typically).
        public var idle: Duration

        /// Creates time limits; the defaults suit a shared GPU server that may load a model first.
        public init(connect: Duration = .seconds(10), firstByte: Duration = .seconds(300), idle: Duration = .seconds(120)) {
            self.connect = connect
            self.firstByte = firstByte
            self.idle = idle
        }
    }

    /// How the client talks HTTP.
    public enum Engine: String, Sendable, Hashable, CaseIterable {
        /// The client's own transport on SwiftNIO (``NIOTransport``): `http://` servers only; their default.
        case nio
        /// AsyncHTTPClient: any server; the default for `https://` ones (TLS), the one thing it still does here
        /// that the SwiftNIO transport does not.
        case asyncHTTPClient = "async-http-client"

        /// The engine used when none is chosen: SwiftNIO for `http://` servers (a quarter fewer instructions per
        /// request, `bench/README.md`), AsyncHTTPClient for `https://` ones.
        public static func automatic(for baseURL: String) -> Engine {
            baseURL.lowercased().hasPrefix("https:") ? .asyncHTTPClient : .nio
        }

        /// Whether this engine can reach `baseURL` (SwiftNIO speaks plain HTTP only).
        public func reaches(_ baseURL: String) -> Bool {
            self == .asyncHTTPClient || !baseURL.lowercased().hasPrefix("https:")
        }
    }

    private enum Transport: Sendable {
        case nio(NIOTransport)
        case asyncHTTPClient(HTTPClient)
    }

    /// The server's base URL, such as `http://gseai.gse.buffalo.edu:11434`.
    public let baseURL: String
    /// The time limits.
    public let timeouts: Timeouts
    /// The largest non-streamed response body the typed methods read.
    public let maxResponseBytes: Int
    private let authorization: String
    /// The engine in use.
    public let engine: Engine
    /// One transport for every call. AsyncHTTPClient's connections' read timeout is long enough for a response
    /// head to take the first-byte limit, and a body's idle limit is checked by ``ResponseBodyStream``.
    private let transport: Transport
    private let logger: Logger

    /// Creates a client for `scheme://host:port`, with the Python client's defaults.
    public convenience init(
        apiToken: String,
        host: String = "gseai.gse.buffalo.edu",
        port: Int = 11434,
        scheme: String = "http",
        timeouts: Timeouts = Timeouts(),
        maxResponseBytes: Int = 64 << 20,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "gseai.client")
    ) {
        let hostPart = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        try! self.init(
            apiToken: apiToken,
            baseURL: "\(scheme)://\(hostPart):\(port)",
            timeouts: timeouts,
            maxResponseBytes: maxResponseBytes,
            eventLoopGroup: eventLoopGroup,
            logger: logger
        )
    }

    /// Creates a client for a base URL such as `https://gseai.example.edu` or `http://127.0.0.1:1234/prefix`.
    ///
    /// - Parameters:
    ///   - connections: how many connections to the server may be open at once; a request beyond them waits
    ///     for one (up to the connect limit). Each answer being streamed holds one, so a gateway sets this to
    ///     at least the requests it lets run at once.
    ///   - engine: how to talk HTTP; by default ``Engine/automatic(for:)`` (SwiftNIO for `http://`, AsyncHTTPClient for `https://`). SwiftNIO cannot
    ///     reach an `https://` server.
    ///   - eventLoopGroup: the event loops to run on (by default NIO's shared ones).
    public init(
        apiToken: String,
        baseURL: String,
        timeouts: Timeouts = Timeouts(),
        maxResponseBytes: Int = 64 << 20,
        connections: Int = 64,
        engine: Engine? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "gseai.client")
    ) throws {
        self.baseURL = try Self.normalizedBaseURL(baseURL)
        self.timeouts = timeouts
        self.maxResponseBytes = maxResponseBytes
        self.authorization = "Bearer \(apiToken)"
        self.logger = logger
        let group = eventLoopGroup ?? HTTPClient.defaultEventLoopGroup
        let engine = engine ?? .automatic(for: self.baseURL)
        self.engine = engine
        switch engine {
        case .nio:
            guard engine.reaches(self.baseURL) else {
                throw GSEAIError.invalidArgument("the SwiftNIO engine speaks plain HTTP only: \(baseURL)")
            }
            transport = .nio(try NIOTransport(baseURL: self.baseURL, timeouts: timeouts, connections: connections, group: group))
        case .asyncHTTPClient:
            transport = .asyncHTTPClient(
                HTTPClient(eventLoopGroup: group, configuration: Self.httpConfiguration(timeouts: timeouts, connections: connections)))
        }
    }

    /// Checks that `baseURL` is an http(s) URL with a host, and drops trailing slashes.
    public static func normalizedBaseURL(_ baseURL: String) throws -> String {
        guard let url = URL(string: baseURL), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
            url.host != nil
        else {
            throw GSEAIError.invalidArgument("not an http(s) base URL: \(baseURL)")
        }
        var normalized = baseURL
        while normalized.hasSuffix("/") { normalized.removeLast() }
        return normalized
    }

    /// The AsyncHTTPClient configuration these time limits call for. Its read timeout runs while the response
    /// head is awaited too, so it is the first-byte limit plus the idle limit (the request's deadline ends the
    /// wait for the head at the first-byte limit); the body's own idle limit is checked per piece.
    static func httpConfiguration(timeouts: Timeouts, connections: Int) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(timeouts.connect), read: .init(timeouts.firstByte + timeouts.idle))
        )
        configuration.httpVersion = .automatic
        // A shared server behind the gateway serves many people at once: keep more than the default 8
        // connections open to it (a 65th stream used to wait for a connection until the connect limit, then fail).
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, connections))
        // A refused connection fails at once instead of being tried again until the connect limit: a gateway
        // then sends the request to another server (a connection that does not answer still waits that limit).
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    /// Shuts down the HTTP clients.
    public func shutdown() async throws {
        switch transport {
        case .nio(let transport): await transport.shutdown()
        case .asyncHTTPClient(let httpClient): try await httpClient.shutdown()
        }
    }

    // MARK: Raw calls

    /// Sends a request as it is, adding only the server's bearer token, and returns the response head
    /// with a body that streams as it arrives. Non-success statuses are returned, not thrown.
    nonisolated(nonsending) public func send(_ request: RawRequest) async throws -> RawResponse {
        try await send(request, streaming: request.expectsStream)
    }

    nonisolated(nonsending) func send(_ request: RawRequest, streaming: Bool) async throws -> RawResponse {
        switch transport {
        case .nio(let transport):
            return try await transport.send(request, authorization: authorization, streaming: streaming)
        case .asyncHTTPClient(let httpClient):
            return try await send(request, streaming: streaming, on: httpClient)
        }
    }

    private func send(_ request: RawRequest, streaming: Bool, on httpClient: HTTPClient) async throws -> RawResponse {
        var outgoing = HTTPClientRequest(url: baseURL + request.path)
        outgoing.method = request.method
        outgoing.headers = request.headers
        outgoing.headers.replaceOrAdd(name: "Authorization", value: authorization)
        outgoing.body = request.body?.asyncHTTPClientBody
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(
                outgoing,
                deadline: .now() + .init(timeouts.firstByte),
                logger: logger
            )
        } catch let error as HTTPClientError {
            throw Self.translate(error)
        } catch let error as GSEAIError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw GSEAIError.connection(String(describing: error))
        }
        return RawResponse(
            status: Int(response.status.code),
            headers: response.headers,
            // A stream's pieces come at most the idle limit apart; a whole answer's body may also come only
            // when the answer is ready.
            body: ResponseBodyStream(body: response.body, idle: streaming ? timeouts.idle : timeouts.firstByte + timeouts.idle,
                                     eventLoop: httpClient.eventLoopGroup.any(), executor: request.bodyExecutor)
        )
    }

    static func translate(_ error: HTTPClientError) -> GSEAIError {
        switch error {
        case .connectTimeout: return .timeout(.connect)
        case .deadlineExceeded: return .timeout(.firstByte)
        // Thrown before the response head: the answer never started.
        case .readTimeout: return .timeout(.firstByte)
        default: return .connection(String(describing: error))
        }
    }

    // MARK: JSON calls used by the typed methods

    /// Sends a JSON request and decodes a JSON response of type `Response`; a non-success status
    /// throws ``GSEAIError/http(status:error:)`` with the server's error.
    public func json<Response: Decodable & Sendable>(
        _ method: HTTPMethod,
        _ path: String,
        body: (some Encodable & Sendable)? = JSONValue?.none,
        as type: Response.Type = Response.self
    ) async throws -> Response {
        let response = try await send(try RawRequest(method: method, path: path, json: body))
        let bytes = try await response.body.collect(upTo: maxResponseBytes)
        try Self.checkStatus(response.status, bytes)
        do {
            return try JSONCoding.decode(Response.self, from: bytes.readableBytesView)
        } catch {
            throw GSEAIError.invalidResponse("expected JSON from \(path): \(String(buffer: bytes).prefix(200))")
        }
    }

    /// Sends a JSON request whose answer is a Server-Sent Event stream, and decodes it with `decode`.
    public func eventStream<Event: Sendable>(
        _ path: String,
        body: some Encodable & Sendable,
        decode: @escaping @Sendable (ServerSentEvent) throws -> EventStep<Event>
    ) async throws -> EventStream<Event> {
        var request = try RawRequest(method: .POST, path: path, json: body)
        request.headers.replaceOrAdd(name: "Accept", value: "text/event-stream")
        request.expectsStream = true
        let response = try await send(request)
        if !(200..<300).contains(response.status) {
            let bytes = try await response.body.collect(upTo: maxResponseBytes)
            try Self.checkStatus(response.status, bytes)
        }
        return EventStream(body: response.body, decode: decode)
    }

    static func checkStatus(_ status: Int, _ bytes: ByteBuffer) throws {
        guard (200..<300).contains(status) else {
            throw GSEAIError.http(status: status, error: ServerError(body: bytes.readableBytesView))
        }
    }
}

/// A request for ``GSEAIClient/send(_:)``.
public struct RawRequest: Sendable {
    /// The HTTP method.
    public var method: HTTPMethod
    /// The path after the base URL, with its query, such as `/v1/models`.
    public var path: String
    /// The headers to send; `Authorization` is always replaced by the server token.
    public var headers: HTTPHeaders
    /// The body, if any.
    public var body: RawBody?
    /// Whether the answer is expected to stream: its pieces may then be at most the idle limit apart,
    /// while a whole answer may take up to the first-byte limit to come.
    public var expectsStream = false
    /// Where the answer's body is read (see ``ResponseBodyStream``): a server gives the event loop of the
    /// caller's connection, so that no piece hops to Swift's global pool and back; `nil` for the global pool.
    public var bodyExecutor: (any TaskExecutor)?
    /// The event loop the caller runs on (a server's caller connection): the NIO transport then uses a
    /// connection of that loop, so the answer is read and relayed on one thread; `nil` for any.
    public var eventLoop: (any EventLoop)?

    /// Creates a request.
    public init(method: HTTPMethod, path: String, headers: HTTPHeaders = [:], body: RawBody? = nil) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }

    /// Creates a request with a JSON body (or none, for `nil`).
    public init(method: HTTPMethod, path: String, json: (some Encodable & Sendable)?) throws {
        self.init(method: method, path: path)
        if let json {
            let data = try JSONCoding.encoder.encode(json)
            headers.add(name: "Content-Type", value: "application/json")
            body = .bytes(ByteBuffer(bytes: data))
        }
    }
}

/// A request body for ``RawRequest``: bytes in hand, or a stream forwarded as it arrives.
public struct RawBody: Sendable {
    enum Content: Sendable {
        case bytes(ByteBuffer)
        /// Its length when known, and a function that hands each piece to a writer.
        case stream(length: Int?, @Sendable (_ write: (ByteBuffer) async throws -> Void) async throws -> Void)
    }

    let content: Content
    /// The same for AsyncHTTPClient.
    let asyncHTTPClientBody: HTTPClientRequest.Body

    /// Whether it can be sent again (a second try on a new connection).
    var isReplayable: Bool {
        if case .bytes = content { return true }
        return false
    }

    /// A body from bytes in hand.
    public static func bytes(_ buffer: ByteBuffer) -> RawBody {
        RawBody(content: .bytes(buffer), asyncHTTPClientBody: .bytes(buffer))
    }

    /// A body streamed from `sequence`; `length` is sent as `Content-Length` when known.
    public static func stream<S: AsyncSequence & Sendable>(_ sequence: S, length: Int?) -> RawBody
    where S.Element == ByteBuffer {
        RawBody(
            content: .stream(length: length) { write in
                for try await piece in sequence { try await write(piece) }
            },
            asyncHTTPClientBody: .stream(sequence, length: length.map { .known(Int64($0)) } ?? .unknown)
        )
    }
}

/// The answer to a ``RawRequest``: the head at once, the body as it arrives.
public struct RawResponse: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The response headers.
    public var headers: HTTPHeaders
    /// The body, streamed with the client's idle limit.
    public var body: ResponseBodyStream
}
