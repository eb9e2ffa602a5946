import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The client's HTTP/1.1 transport on SwiftNIO, for `http://` servers.
///
/// Kept-alive connections are pooled per event loop: a request that names its event loop
/// (``RawRequest/eventLoop``, a server's caller connection) gets a connection of that loop, so the answer is
/// read, handed over and written on one thread. The request body is sent as it is given (in hand, or
/// streamed with each piece's write awaited); the answer comes back with backpressure (``UpstreamExchange``);
/// every time limit of ``GSEAIClient/Timeouts`` holds; a reader that leaves closes the connection.
final class NIOTransport: Sendable {
    let group: any EventLoopGroup
    let host: String
    let port: Int
    /// The base URL's path, without a trailing slash (`""` for none).
    let basePath: String
    /// The `Host` header: the base URL's host and port as written.
    let authority: String
    let timeouts: GSEAIClient.Timeouts
    /// The limits each exchange keeps, as SwiftNIO's time amounts made once: a `Duration`'s conversion (its components,
    /// in 128-bit arithmetic) and sum cost about 200 instructions each, three a request (bench/README.md, "Stack room
    /// for the log line, promises and conversions left out").
    private let firstByte: TimeAmount
    /// The wait for a connection (a new one's, or one given back's).
    private let connectLimit: TimeAmount
    /// The silence limit between two pieces of a stream.
    private let streamIdle: TimeAmount
    /// The silence limit of a whole answer, whose body may also come only once the answer is ready: both limits.
    private let wholeIdle: TimeAmount
    let pool: ConnectionPool

    init(baseURL: String, timeouts: GSEAIClient.Timeouts, connections: Int, group: any EventLoopGroup) throws {
        guard let components = URLComponents(string: baseURL), var host = components.host, !host.isEmpty else {
            throw GSEAIError.invalidArgument("not an http(s) base URL: \(baseURL)")
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.group = group
        self.host = host
        self.port = components.port ?? 80
        self.basePath = components.percentEncodedPath
        let written = components.percentEncodedHost ?? host
        self.authority = components.port.map { "\(written):\($0)" } ?? written
        self.timeouts = timeouts
        connectLimit = TimeAmount(timeouts.connect)
        firstByte = TimeAmount(timeouts.firstByte)
        streamIdle = TimeAmount(timeouts.idle)
        wholeIdle = TimeAmount(timeouts.firstByte + timeouts.idle)
        self.pool = ConnectionPool(limit: max(1, connections), idleTimeout: .seconds(60))
    }

    func shutdown() async {
        for connection in pool.shutDown() {
            try? await connection.channel.close()
        }
    }

    nonisolated(nonsending) func send(_ request: RawRequest, authorization: String, streaming: Bool) async throws -> RawResponse {
        let framing: UpstreamRequestHead.Framing
        switch request.body?.content {
        case .bytes(let bytes): framing = .length(bytes.readableBytes)
        case .stream(let length?, _): framing = .length(length)
        case .stream(nil, _): framing = .chunked
        case nil: framing = [.POST, .PUT, .PATCH].contains(request.method) ? .length(0) : .none
        }
        // The caller's hop-by-hop and framing headers are left out: this transport frames the request itself.
        let head = try UpstreamRequestHead(method: request.method, target: basePath + request.path, headers: request.headers,
                                           host: authority, authorization: authorization, framing: framing)
        // A stream's pieces come at most the idle limit apart; a whole answer's body may also come only when
        // the answer is ready.
        let idle = streaming ? streamIdle : wholeIdle
        var mayTryAgain = true
        while true {
            let (connection, reused) = try await connection(preferring: request.eventLoop)
            let exchange = UpstreamExchange(channel: connection.channel, firstByte: firstByte, idle: idle)
            do {
                let answer = try await withTaskCancellationHandler {
                    try await Self.run(exchange, on: connection, head: head, body: request.body)
                } onCancel: {
                    exchange.cancel()
                }
                return RawResponse(status: Int(answer.status.code), headers: answer.headers, body: ResponseBodyStream(exchange: exchange))
            } catch UpstreamExchange.Failure.closedBeforeAnswer {
                // A kept-alive connection the server had just closed: once more on a new one, if the body can
                // be sent again.
                if reused, mayTryAgain, request.body?.isReplayable ?? true {
                    mayTryAgain = false
                    continue
                }
                throw GSEAIError.connection("the server closed the connection before answering")
            } catch is CancellationError {
                throw CancellationError()
            }
        }
    }

    /// Sends the request on `connection` and waits for the answer's head.
    nonisolated(nonsending) private static func run(_ exchange: UpstreamExchange, on connection: UpstreamConnection, head: UpstreamRequestHead,
                            body: RawBody?) async throws -> HTTPResponseHead {
        switch body?.content {
        case .stream(_, let pieces):
            connection.onLoop { $0.begin(exchange, head: head, body: nil, complete: false) }
            do {
                try await pieces { piece in
                    let loop = connection.channel.eventLoop
                    try await loop.flatSubmit {
                        connection.handler.value.send(piece) ?? loop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                    }.get()
                }
                connection.onLoop { $0.endRequest() }
            } catch {
                exchange.sendingFailed(error)
            }
        case .bytes(let bytes):
            connection.onLoop { $0.begin(exchange, head: head, body: bytes, complete: true) }
        case nil:
            connection.onLoop { $0.begin(exchange, head: head, body: nil, complete: true) }
        }
        return try await exchange.answerHead()
    }

    /// A connection for a request: one of the caller's event loop when it names one (see
    /// ``ConnectionPool/lease(preferring:strictly:wait:)``), waiting at most the connect limit.
    nonisolated(nonsending) private func connection(preferring preferred: (any EventLoop)?) async throws -> (UpstreamConnection, reused: Bool) {
        let loop = preferred ?? group.any()
        switch try await pool.lease(preferring: loop, strictly: preferred != nil, wait: connectLimit) {
        case .idle(let connection):
            return (connection, true)
        case .open:
            do {
                return (try await connect(on: loop), false)
            } catch {
                pool.closedUnknown()
                throw Self.connectError(error)
            }
        }
    }

    private func connect(on loop: any EventLoop) async throws -> UpstreamConnection {
        let bootstrap = (ClientBootstrap(validatingGroup: loop) ?? ClientBootstrap(group: group))
            .connectTimeout(connectLimit)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            // Reads start at 512 bytes instead of 2 KiB (a stream's pieces are small; the size doubles as
            // reads fill it): a connection keeps its last read's buffer for the next while a stream is open.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 1 << 16))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // SwiftNIO's response decoder, without its request encoder: the head is written as made
                    // (`UpstreamRequestHead`), and the decoder told each request's method by the handler.
                    let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(UpstreamResponseDecoder(decoder)))
                    try channel.pipeline.syncOperations.addHandler(UpstreamConnectionHandler(decoder: decoder))
                }
            }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        let pool = self.pool
        let idleTimeout = pool.idleTimeout
        return try await channel.eventLoop.submit {
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamConnectionHandler.self)
            let connection = UpstreamConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
            handler.onIdle = { [weak connection] in
                guard let connection, pool.returned(connection) else { return }
                connection.handler.value.closeWhenIdle(for: idleTimeout)
            }
            pool.opened(connection)
            channel.closeFuture.whenComplete { [weak connection] _ in
                if let connection { pool.closed(connection) } else { pool.closedUnknown() }
            }
            return connection
        }.get()
    }

    private static func connectError(_ error: any Error) -> any Error {
        switch error {
        case let error as GSEAIError: return error
        case is CancellationError: return CancellationError()
        case ChannelError.connectTimeout: return GSEAIError.timeout(.connect)
        default: return GSEAIError.connection(String(describing: error))
        }
    }
}

/// An open connection: its channel and its handler (used on the channel's event loop only).
final class UpstreamConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<UpstreamConnectionHandler>

    init(channel: any Channel, handler: NIOLoopBound<UpstreamConnectionHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Runs `body` with the handler on the connection's event loop: at once when already there.
    func onLoop(_ body: @escaping @Sendable (UpstreamConnectionHandler) -> Void) {
        channel.eventLoop.executeHere { body(self.handler.value) }
    }
}

/// The open connections to one server, at most `limit`: the idle ones by event loop, and the requests
/// waiting for one when all are busy.
final class ConnectionPool: Sendable {
    /// What a request gets: an idle connection, or the right to open a new one.
    enum Lease {
        case idle(UpstreamConnection)
        case open
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Lease, any Error>
    }

    private struct State {
        /// The idle connections of each event loop (a loop's list, once made, stays when it empties).
        var idle: [ObjectIdentifier: [UpstreamConnection]] = [:]
        /// How many connections the lists hold.
        var idleCount = 0
        /// Open or being opened.
        var open = 0
        var all: [ObjectIdentifier: UpstreamConnection] = [:]
        var waiters: [Waiter] = []
        /// Waiters that gave up before they were queued.
        var abandoned: Set<UInt64> = []
        var nextWaiter: UInt64 = 0
        var shutDown = false
    }

    let limit: Int
    let idleTimeout: TimeAmount
    private let state = Mutex(State())

    init(limit: Int, idleTimeout: TimeAmount) {
        self.limit = limit
        self.idleTimeout = idleTimeout
    }

    /// A connection for a request on `loop`: an idle one of that loop; else (unless `strictly`) an idle one of
    /// another; else a new one, while fewer than the limit are open; else an idle one of another loop; else the
    /// first given back, waiting at most `wait`.
    nonisolated(nonsending) func lease(preferring loop: any EventLoop, strictly: Bool, wait: TimeAmount) async throws -> Lease {
        // The usual case: a connection (or the right to open one) at once, with no continuation, cancellation
        // handler or timer; a task already cancelled gets what the waiting path would give it.
        let now: Result<Lease, any Error>? = state.withLock { state in
            if state.shutDown { return .failure(GSEAIError.connection("the client is shut down")) }
            if Task.isCancelled { return .failure(CancellationError()) }
            return Self.grant(on: ObjectIdentifier(loop), strictly: strictly, limit: limit, &state)
        }
        if let now { return try now.get() }
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                let now: Result<Lease, any Error>? = state.withLock { state in
                    if state.shutDown { return .failure(GSEAIError.connection("the client is shut down")) }
                    if state.abandoned.remove(id) != nil { return .failure(CancellationError()) }
                    // Given back or closed since the first look: taken now, as on the usual path.
                    if let now = Self.grant(on: ObjectIdentifier(loop), strictly: strictly, limit: limit, &state) { return now }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let now { return continuation.resume(with: now) }
                loop.scheduleTask(in: wait) { [weak self] () -> Void in self?.abandon(id, GSEAIError.timeout(.connect)) }
            }
        } onCancel: {
            self.abandon(id, CancellationError())
        }
    }

    /// How many requests wait for a connection (for the tests).
    var waitingCount: Int { state.withLock { $0.waiters.count } }

    /// What a request gets now, in the order ``lease(preferring:strictly:wait:)`` names; `nil` when it must wait.
    private static func grant(on loop: ObjectIdentifier, strictly: Bool, limit: Int, _ state: inout State) -> Result<Lease, any Error>? {
        if let connection = takeIdle(on: loop, &state) { return .success(.idle(connection)) }
        if !strictly, let connection = takeIdleOfAnyLoop(&state) { return .success(.idle(connection)) }
        if state.open < limit {
            state.open += 1
            return .success(.open)
        }
        if let connection = takeIdleOfAnyLoop(&state) { return .success(.idle(connection)) }
        return nil
    }

    /// An idle connection of `loop`. A loop's list stays in the pool when it empties, so that a connection taken
    /// and given back, request after request, neither makes a list nor an entry again.
    private static func takeIdle(on loop: ObjectIdentifier, _ state: inout State) -> UpstreamConnection? {
        guard let index = state.idle.index(forKey: loop), let connection = state.idle.values[index].popLast() else { return nil }
        state.idleCount -= 1
        return connection
    }

    /// An idle connection of any loop.
    private static func takeIdleOfAnyLoop(_ state: inout State) -> UpstreamConnection? {
        guard state.idleCount > 0, let index = state.idle.values.firstIndex(where: { !$0.isEmpty }),
            let connection = state.idle.values[index].popLast()
        else { return nil }
        state.idleCount -= 1
        return connection
    }

    private func abandon(_ id: UInt64, _ error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                if error is CancellationError, state.nextWaiter >= id { state.abandoned.insert(id) }
                return nil
            }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: error)
    }

    func opened(_ connection: UpstreamConnection) {
        state.withLock { $0.all[ObjectIdentifier(connection)] = connection }
    }

    /// A connection may carry another request: to a waiter, or kept idle (`true`: then it closes after the
    /// idle timeout).
    func returned(_ connection: UpstreamConnection) -> Bool {
        let (waiter, close): (Waiter?, Bool) = state.withLock { state in
            if state.shutDown { return (nil, true) }
            if !state.waiters.isEmpty { return (state.waiters.removeFirst(), false) }
            state.idle[ObjectIdentifier(connection.channel.eventLoop), default: []].append(connection)
            state.idleCount += 1
            return (nil, false)
        }
        if close { connection.channel.close(promise: nil) }
        if let waiter {
            waiter.continuation.resume(returning: .idle(connection))
            return false
        }
        return !close
    }

    /// A connection closed: its place goes to the first waiter.
    func closed(_ connection: UpstreamConnection) {
        let waiter: Waiter? = state.withLock { state in
            state.all[ObjectIdentifier(connection)] = nil
            let loop = ObjectIdentifier(connection.channel.eventLoop)
            if let list = state.idle.index(forKey: loop), let index = state.idle.values[list].firstIndex(where: { $0 === connection }) {
                state.idle.values[list].remove(at: index)
                state.idleCount -= 1
            }
            return Self.placeFreed(&state)
        }
        waiter?.continuation.resume(returning: .open)
    }

    /// A connection closed that was never handed out, or failed to open: its place goes to the first waiter.
    func closedUnknown() {
        let waiter = state.withLock { Self.placeFreed(&$0) }
        waiter?.continuation.resume(returning: .open)
    }

    private static func placeFreed(_ state: inout State) -> Waiter? {
        state.open -= 1
        guard !state.waiters.isEmpty, !state.shutDown else { return nil }
        state.open += 1
        return state.waiters.removeFirst()
    }

    /// Refuses new requests and fails the waiting ones; returns every open connection, to close.
    func shutDown() -> [UpstreamConnection] {
        let (waiters, connections): ([Waiter], [UpstreamConnection]) = state.withLock { state in
            state.shutDown = true
            let waiters = state.waiters
            state.waiters = []
            return (waiters, Array(state.all.values))
        }
        for waiter in waiters { waiter.continuation.resume(throwing: GSEAIError.connection("the client is shut down")) }
        return connections
    }
}
