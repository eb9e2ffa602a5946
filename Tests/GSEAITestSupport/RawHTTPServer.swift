import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A bare HTTP/1.1 server on NIO whose answers a test decides per request, by its number on its connection.
public final class RawHTTPServer: Sendable {
    public enum Answer: Sendable {
        /// A text body (the connection kept alive).
        case text(String)
        /// `n` bytes of a repeated pattern, written as fast as the connection takes them.
        case large(Int)
        /// No answer: the connection is closed.
        case close
        /// A text body without a length, ended by closing the connection (HTTP/1.0 style).
        case untilClosed(String)
        /// An event stream: `count` events of `size` bytes of `a` each (`data: aaa…`), then `data: [DONE]`.
        case events(count: Int, size: Int)
    }

    private let channel: any Channel
    private let accepted: Counter

    public var baseURL: String { "http://127.0.0.1:\(channel.localAddress?.port ?? 0)" }
    public var connectionsAccepted: Int { accepted.value.load(ordering: .relaxed) }

    final class Counter: Sendable {
        let value = Atomic(0)
    }

    private init(channel: any Channel, accepted: Counter) {
        self.channel = channel
        self.accepted = accepted
    }

    public static func with<T: Sendable>(answer: @escaping @Sendable (Int) -> Answer, _ body: (RawHTTPServer) async throws -> T) async throws -> T {
        let accepted = Counter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.value.add(1, ordering: .relaxed)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = RawHTTPServer(channel: channel, accepted: accepted)
        do {
            let result = try await body(server)
            try await channel.close()
            return result
        } catch {
            try? await channel.close()
            throw error
        }
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        private let answer: @Sendable (Int) -> Answer
        private var requests = 0

        init(answer: @escaping @Sendable (Int) -> Answer) {
            self.answer = answer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            requests += 1
            switch answer(requests) {
            case .close:
                context.close(promise: nil)
            case .text(let text):
                write(context, length: text.utf8.count, pieces: [ByteBuffer(string: text)])
            case .untilClosed(let text):
                // HTTP/1.0: no chunked framing is added; the body ends with the connection.
                let head = HTTPResponseHead(version: .http1_0, status: .ok)
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
            case .events(let count, let size):
                let event = ByteBuffer(string: "data: " + String(repeating: "a", count: size) + "\n\n")
                let done = ByteBuffer(string: "data: [DONE]\n\n")
                var head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Type": "text/event-stream"])
                head.headers.add(name: "Content-Length", value: String(event.readableBytes * count + done.readableBytes))
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                for _ in 0..<count { context.write(wrapOutboundOut(.body(.byteBuffer(event))), promise: nil) }
                context.write(wrapOutboundOut(.body(.byteBuffer(done))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .large(let size):
                let piece = ByteBuffer(repeating: 0x61, count: 64 << 10)
                write(context, length: size, pieces: Array(repeating: piece, count: size / piece.readableBytes))
            }
        }

        private func write(_ context: ChannelHandlerContext, length: Int, pieces: [ByteBuffer]) {
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": String(length)])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            for piece in pieces { context.write(wrapOutboundOut(.body(.byteBuffer(piece))), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
