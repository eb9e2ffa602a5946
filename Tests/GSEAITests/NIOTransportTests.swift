@testable import GSEAI
import GSEAITestSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// What only the SwiftNIO engine has to show: kept-alive connections, a limit on them, backpressure, and a
/// second try when a kept-alive connection turns out closed. (The promises both engines keep are in
/// ``TransportTests``.)
@Suite("The SwiftNIO transport")
struct NIOTransportTests {
    @Test func keptAliveConnectionsCarryOneRequestAfterAnother() async throws {
        try await withClient(engine: .nio) { client, stub in
            for round in 1...4 {
                let answer = try await client.chat(ChatRequest(model: "stub/echo-text", input: .text("round \(round)")))
                #expect(answer.text == "Echo: round \(round)")
                var text = ""
                for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: .text("stream \(round)"))) {
                    text += event.delta ?? ""
                }
                #expect(text == "Echo: stream \(round)")
            }
            #expect(stub.connectionsAccepted == 1)
        }
    }

    @Test func anAbandonedAnswerClosesItsConnectionAndTheNextOpensAnother() async throws {
        try await withClient(engine: .nio) { client, stub in
            for try await _ in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "a b c d e f [[slow]]")) {
                break
            }
            let answer = try await client.chat(ChatRequest(model: "stub/echo-text", input: .text("after")))
            #expect(answer.text == "Echo: after")
            #expect(stub.connectionsAccepted == 2)
        }
    }

    @Test func requestsBeyondTheConnectionLimitWaitForAConnection() async throws {
        try await StubUpstream.with { stub in
            let client = try GSEAIClient(apiToken: "stub-token", baseURL: stub.baseURL, connections: 1, engine: .nio)
            defer { Task { try await client.shutdown() } }
            async let first = client.chat(ChatRequest(model: "stub/echo-text", input: "one two [[slow]]"))
            async let second = client.chat(ChatRequest(model: "stub/echo-text", input: "three four [[slow]]"))
            let answers = try await [first.text, second.text]
            #expect(answers == ["Echo: one two [[slow]]", "Echo: three four [[slow]]"])
            #expect(stub.connectionsAccepted == 1)
        }
    }

    @Test func aRequestWaitingForAConnectionLongerThanTheConnectLimitTimesOut() async throws {
        try await StubUpstream.with { stub in
            let client = try GSEAIClient(apiToken: "stub-token", baseURL: stub.baseURL,
                                         timeouts: .init(connect: .milliseconds(300)), connections: 1, engine: .nio)
            defer { Task { try await client.shutdown() } }
            let busy = try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "a b c d e f g h [[slow]]"))
            await #expect(throws: GSEAIError.timeout(.connect)) {
                try await client.chat(ChatRequest(model: "stub/echo-text", input: "waits"))
            }
            var text = ""
            for try await event in busy { text += event.delta ?? "" }
            #expect(text == "Echo: a b c d e f g h [[slow]]")
        }
    }

    @Test func aStreamedRequestBodyIsSentPieceByPiece() async throws {
        try await withClient(engine: .nio) { client, stub in
            let json = #"{"model":"stub/echo-text","messages":[{"role":"user","content":"in pieces"}]}"#
            let pieces = stride(from: 0, to: json.utf8.count, by: 7).map { start in
                ByteBuffer(bytes: Array(json.utf8)[start..<min(start + 7, json.utf8.count)])
            }
            var request = RawRequest(method: .POST, path: "/v1/chat/completions", body: .stream(pieces.async, length: nil))
            request.headers.add(name: "Content-Type", value: "application/json")
            let response = try await client.send(request)
            #expect(response.status == 200)
            let body = try JSONValue(parsing: try await response.body.collect(upTo: 1 << 20).readableBytesView)
            #expect(body["choices"]?.arrayValue?.first?["message"]?["content"] == "Echo: in pieces")
            #expect(await stub.state.requests.last?.authorization == "Bearer stub-token")
        }
    }

    @Test func aSlowReaderStopsTheReadsAndGetsEveryByte() async throws {
        let size = 16 << 20
        try await RawHTTPServer.with(answer: { _ in .large(size) }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            let response = try await client.send(RawRequest(method: .GET, path: "/large"))
            var iterator = response.body.makeAsyncIterator()
            var received = try #require(try await iterator.next()).readableBytes
            // The reader rests; the transport reads on only up to its high-water mark (plus one read).
            try await Task.sleep(for: .milliseconds(500))
            let waiting = try #require(response.body.exchange).waitingBytes
            #expect(waiting <= UpstreamExchange.highWater + (1 << 20))
            #expect(waiting > 0)
            var otherBytes = 0
            while let piece = try await iterator.next() {
                received += piece.readableBytes
                if piece.readableBytesView.first != 0x61 || piece.readableBytesView.last != 0x61 { otherBytes += 1 }
            }
            #expect(received == size)
            #expect(otherBytes == 0)
        }
    }

    @Test func aKeptAliveConnectionTheServerHadClosedIsReplacedUnseen() async throws {
        // The server answers the first request of each connection and closes at the second, as a server whose
        // keep-alive time ran out the moment the request came.
        try await RawHTTPServer.with(answer: { index in index == 1 ? .text("fine") : .close }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            for _ in 1...3 {
                let response = try await client.send(RawRequest(method: .GET, path: "/"))
                #expect(String(buffer: try await response.body.collect(upTo: 100)) == "fine")
            }
            #expect(server.connectionsAccepted == 3)
        }
    }

    @Test func aBodyEndedByTheServerClosingIsWholeAndTheNextRequestTakesANewConnection() async throws {
        try await RawHTTPServer.with(answer: { _ in .untilClosed("no length, then the end") }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            for _ in 1...2 {
                let response = try await client.send(RawRequest(method: .GET, path: "/"))
                #expect(response.headers["Content-Length"].isEmpty)
                #expect(String(buffer: try await response.body.collect(upTo: 100)) == "no length, then the end")
            }
            #expect(server.connectionsAccepted == 2)
        }
    }

    @Test func aStreamedBodyIsNotSentTwice() async throws {
        try await RawHTTPServer.with(answer: { index in index == 1 ? .text("fine") : .close }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            _ = try await client.send(RawRequest(method: .GET, path: "/")).body.collect(upTo: 100)
            let once = [ByteBuffer(string: "only once")].async
            await #expect(throws: GSEAIError.connection("the server closed the connection before answering")) {
                try await client.send(RawRequest(method: .POST, path: "/", body: .stream(once, length: nil)))
            }
            #expect(server.connectionsAccepted == 1)
        }
    }
}

/// A sequence of pieces, for streamed request bodies.
extension Array where Element: Sendable {
    var async: AsyncStream<Element> {
        AsyncStream { continuation in
            for element in self { continuation.yield(element) }
            continuation.finish()
        }
    }
}

/// A bare HTTP/1.1 server on NIO whose answers a test decides per request, by its number on its connection.
final class RawHTTPServer: Sendable {
    enum Answer: Sendable {
        /// A text body (the connection kept alive).
        case text(String)
        /// `n` bytes of a repeated pattern, written as fast as the connection takes them.
        case large(Int)
        /// No answer: the connection is closed.
        case close
        /// A text body without a length, ended by closing the connection (HTTP/1.0 style).
        case untilClosed(String)
    }

    private let channel: any Channel
    private let accepted: Counter

    var baseURL: String { "http://127.0.0.1:\(channel.localAddress?.port ?? 0)" }
    var connectionsAccepted: Int { accepted.value.load(ordering: .relaxed) }

    final class Counter: Sendable {
        let value = Atomic(0)
    }

    private init(channel: any Channel, accepted: Counter) {
        self.channel = channel
        self.accepted = accepted
    }

    static func with<T: Sendable>(answer: @escaping @Sendable (Int) -> Answer, _ body: (RawHTTPServer) async throws -> T) async throws -> T {
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
