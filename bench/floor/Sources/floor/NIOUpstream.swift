// A minimal purpose-built HTTP/1.1 upstream client on SwiftNIO, and a pure SwiftNIO proxy on it.
//
// One pool of keep-alive connections to the one upstream per event loop; a request takes an idle connection of
// its own event loop's pool (or connects a new one on that loop), sends the head with Content-Length and the
// whole body, and hands every part of the answer to a receiver as it arrives. A receiver can pause reading
// from the upstream connection (backpressure). After the answer's end a keep-alive connection returns to the
// idle list of its pool.
//
// Every object here belongs to one event loop and is only used on it (hops go through `eventLoop.execute`);
// `@unchecked Sendable` says so to the compiler.

import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix

/// Where to send requests: the upstream's address and what every forwarded request carries.
struct UpstreamTarget: Sendable {
    let host: String
    let port: Int
    let authorization: String

    /// `url` is `http://HOST:PORT` (no path).
    init(url: String, token: String) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") { rest = rest.dropFirst("http://".count) }
        let parts = rest.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let port = Int(parts[1]) else { fail("the upstream must be http://HOST:PORT, got \(url)") }
        host = String(parts[0])
        self.port = port
        authorization = "Bearer \(token)"
    }

    /// The head sent upstream: the caller's method and path, Content-Type and Accept, the fixed token.
    func requestHead(method: HTTPMethod, uri: String, contentType: String?, accept: String?, length: Int) -> HTTPRequestHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(5)
        headers.add(name: "Host", value: "\(host):\(port)")
        if let contentType { headers.add(name: "Content-Type", value: contentType) }
        if let accept { headers.add(name: "Accept", value: accept) }
        headers.add(name: "Authorization", value: authorization)
        headers.add(name: "Content-Length", value: String(length))
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
    }
}

/// What one exchange on an upstream connection reports to, on the connection's event loop.
protocol UpstreamReceiver: AnyObject {
    func upstreamHead(_ head: HTTPResponseHead)
    func upstreamBody(_ piece: ByteBuffer)
    /// The end of one socket read: a good moment to flush what was forwarded.
    func upstreamReadComplete()
    func upstreamEnd()
    func upstreamFailed(_ error: any Error)
}

struct UpstreamClosed: Error {}

/// One keep-alive connection to the upstream: the last handler of its pipeline (after NIO's HTTP/1 client codec).
final class UpstreamConnection: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    /// The exchange in progress, if any.
    private(set) var receiver: (any UpstreamReceiver)?
    private var keepAlive = true
    private var paused = false
    private var readPending = false

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }

    /// Sends one request; the answer goes to `receiver`.
    func send(_ head: HTTPRequestHead, body: ByteBuffer, to receiver: any UpstreamReceiver) {
        guard let context, context.channel.isActive else { return receiver.upstreamFailed(UpstreamClosed()) }
        self.receiver = receiver
        keepAlive = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Stops reading from the upstream until `resume()` (the caller's side cannot take more now).
    func pause() {
        paused = true
    }

    func resume() {
        paused = false
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    /// The exchange is given up (the caller left): the connection is closed, never reused.
    func abandon() {
        receiver = nil
        context?.close(promise: nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let receiver else { return context.close(promise: nil) }  // an answer nobody asked for
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
            receiver.upstreamHead(head)
        case .body(let piece):
            receiver.upstreamBody(piece)
        case .end:
            // Free before telling the receiver, so that its next request can take this connection.
            self.receiver = nil
            resume()
            if keepAlive { pool.release(self) } else { context.close(promise: nil) }
            receiver.upstreamEnd()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if paused { readPending = true } else { context.read() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let receiver {
            self.receiver = nil
            receiver.upstreamFailed(UpstreamClosed())
        }
        context.fireChannelInactive()
    }
}

/// The idle keep-alive connections of one event loop.
final class UpstreamPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    let target: UpstreamTarget
    private var idle: [UpstreamConnection] = []
    static let maximumIdle = 64

    init(eventLoop: any EventLoop, target: UpstreamTarget) {
        self.eventLoop = eventLoop
        self.target = target
    }

    /// An idle connection, or a new one connected on this pool's event loop. Call on that loop.
    func acquire() -> EventLoopFuture<UpstreamConnection> {
        eventLoop.assertInEventLoop()
        while let connection = idle.popLast() {
            if connection.isActive { return eventLoop.makeSucceededFuture(connection) }
        }
        let connection = UpstreamConnection(pool: self)
        return ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: target.host, port: target.port)
            .map { _ in connection }
    }

    func release(_ connection: UpstreamConnection) {
        if idle.count < Self.maximumIdle { idle.append(connection) } else { connection.abandon() }
    }
}

/// One pool per event loop of the group.
struct UpstreamPools: Sendable {
    private let pools: [ObjectIdentifier: UpstreamPool]

    init(group: MultiThreadedEventLoopGroup, target: UpstreamTarget) {
        var pools: [ObjectIdentifier: UpstreamPool] = [:]
        for loop in group.makeIterator() { pools[ObjectIdentifier(loop)] = UpstreamPool(eventLoop: loop, target: target) }
        self.pools = pools
    }

    func pool(for eventLoop: any EventLoop) -> UpstreamPool {
        guard let pool = pools[ObjectIdentifier(eventLoop)] else { fail("an event loop outside the group") }
        return pool
    }
}

// MARK: - The lean client for async callers (Hummingbird)

/// An upstream answer for async code: its head, and its body as an async sequence with backpressure.
struct UpstreamAnswer: Sendable {
    typealias Body = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, UpstreamStream
    >
    let head: HTTPResponseHead
    let body: Body
}

/// Bridges one exchange into an `UpstreamAnswer`: reading from the upstream pauses while the consumer is
/// `highWatermark` pieces behind.
final class UpstreamStream: UpstreamReceiver, NIOAsyncSequenceProducerDelegate, @unchecked Sendable {
    private let connection: UpstreamConnection
    private let answer: EventLoopPromise<UpstreamAnswer>
    private var source: UpstreamAnswer.Body.Source?
    private var body: UpstreamAnswer.Body?

    init(connection: UpstreamConnection, answer: EventLoopPromise<UpstreamAnswer>) {
        self.connection = connection
        self.answer = answer
    }

    /// Sends the request on `connection`; `answer` succeeds with the head.
    static func start(on connection: UpstreamConnection, head: HTTPRequestHead, body: ByteBuffer,
                      answer: EventLoopPromise<UpstreamAnswer>) {
        let stream = UpstreamStream(connection: connection, answer: answer)
        let made = UpstreamAnswer.Body.makeSequence(
            backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8), finishOnDeinit: false, delegate: stream)
        stream.source = made.source
        stream.body = made.sequence
        connection.send(head, body: body, to: stream)
    }

    func upstreamHead(_ head: HTTPResponseHead) {
        guard let body else { return }
        self.body = nil  // the consumer owns it now
        answer.succeed(UpstreamAnswer(head: head, body: body))
    }

    func upstreamBody(_ piece: ByteBuffer) {
        if source?.yield(piece) == .stopProducing { connection.pause() }
    }

    func upstreamReadComplete() {}

    func upstreamEnd() {
        source?.finish()
        source = nil
    }

    func upstreamFailed(_ error: any Error) {
        answer.fail(error)  // ignored when the head has come
        source?.finish(error)
        source = nil
        body = nil
    }

    // Called by the consumer's side, on any thread.
    func produceMore() {
        connection.pool.eventLoop.execute {
            if self.connection.receiver === self { self.connection.resume() }
        }
    }

    func didTerminate() {
        connection.pool.eventLoop.execute {
            if self.connection.receiver === self { self.connection.abandon() }
        }
    }
}

extension UpstreamPools {
    /// Sends one request upstream on a connection of `eventLoop`'s pool.
    func send(_ head: HTTPRequestHead, body: ByteBuffer, on eventLoop: any EventLoop) async throws -> UpstreamAnswer {
        let pool = pool(for: eventLoop)
        let answer = eventLoop.makePromise(of: UpstreamAnswer.self)
        eventLoop.execute {
            pool.acquire().whenComplete { result in
                switch result {
                case .success(let connection): UpstreamStream.start(on: connection, head: head, body: body, answer: answer)
                case .failure(let error): answer.fail(error)
                }
            }
        }
        return try await answer.futureResult.get()
    }
}

/// A Hummingbird request context that knows the event loop of the request's connection.
struct FloorContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let eventLoop: any EventLoop

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
    }
}

// MARK: - The pure SwiftNIO proxy

/// One caller's connection: collects each request, forwards it on a pooled connection of the same event loop,
/// and writes the answer back part by part, flushed at the end of every upstream read.
final class ProxyHandler: ChannelInboundHandler, UpstreamReceiver, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var request: HTTPRequestHead?
    private var body: ByteBuffer?
    private var upstream: UpstreamConnection?
    private var answered = false

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            body = nil
        case .body(var piece):
            if body == nil { body = piece } else { body!.writeBuffer(&piece) }
        case .end:
            guard let request else { return }
            let forwarded = body ?? ByteBuffer()
            let head = pool.target.requestHead(
                method: request.method, uri: request.uri, contentType: request.headers.first(name: "content-type"),
                accept: request.headers.first(name: "accept"), length: forwarded.readableBytes)
            answered = false
            pool.acquire().whenComplete { result in
                switch result {
                case .success(let connection):
                    self.upstream = connection
                    connection.send(head, body: forwarded, to: self)
                case .failure(let error):
                    self.upstreamFailed(error)
                }
            }
        }
    }

    func upstreamHead(_ head: HTTPResponseHead) {
        guard let context, let request else { return }
        var headers = HTTPHeaders()
        if let type = head.headers.first(name: "content-type") { headers.add(name: "Content-Type", value: type) }
        // Without Content-Length, NIO's encoder frames the body with chunked encoding.
        if let length = head.headers.first(name: "content-length") { headers.add(name: "Content-Length", value: length) }
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        answered = true
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: head.status, headers: headers))),
                      promise: nil)
    }

    func upstreamBody(_ piece: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(.body(.byteBuffer(piece))), promise: nil)
        if !context.channel.isWritable { upstream?.pause() }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamEnd() {
        upstream = nil
        finish()
    }

    func upstreamFailed(_ error: any Error) {
        upstream = nil
        guard let context else { return }
        if answered { return context.close(promise: nil) }
        answered = true
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request?.version ?? .http1_1, status: .badGateway,
                                                             headers: ["Content-Length": "0"]))), promise: nil)
        finish()
    }

    private func finish() {
        guard let context else { return }
        let close = request?.isKeepAlive == false
        request = nil
        body = nil
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close { written.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.resume() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.abandon()
        upstream = nil
        self.context = nil
        context.fireChannelInactive()
    }
}

/// Serves the pure SwiftNIO proxy until the process is stopped. Prints the listening line like the others.
func runNIOProxy(group: MultiThreadedEventLoopGroup, port: Int, pools: UpstreamPools) -> Never {
    do {
        let server = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(pool: pools.pool(for: channel.eventLoop)))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .wait()
        FileHandle.standardOutput.write(Data("floor listening on http://127.0.0.1:\(server.localAddress?.port ?? 0)\n".utf8))
        try server.closeFuture.wait()
    } catch {
        fail("\(error)")
    }
    exit(0)
}
