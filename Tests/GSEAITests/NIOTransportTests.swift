@testable import GSEAI
import GSEAITestSupport
import NIOCore
import NIOEmbedded
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

    /// A connection idle in the pool is closed after the pool's limit; one taken again within it, or carrying an
    /// exchange when the limit's timer fires, is not. (The timer is not reset on every request: when it fires, it
    /// looks at when the connection last went idle.) On an embedded loop, whose clock the test moves.
    @Test func aConnectionIdleInThePoolIsClosedAfterItsLimitButNotOneInUse() async throws {
        let (channel, handler) = try Self.embeddedConnection(keptForTheNext: false)
        let loop = channel.embeddedEventLoop
        handler.onIdle = { handler.closeWhenIdle(for: .milliseconds(400)) }
        func exchange(answeredAfter delay: TimeAmount = .zero) throws {
            let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(5), idle: .seconds(5))
            let head = try UpstreamRequestHead(method: .GET, target: "/", headers: [:], host: "h", authorization: "a", framing: .none)
            handler.begin(exchange, head: head, body: nil, complete: true)
            loop.advanceTime(by: delay)
            try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            try channel.writeInbound(HTTPClientResponsePart.end(nil))
        }
        // t = 0: idle; t = 300: taken and given back. At 400 the first timer finds it idle for 100 ms only.
        try exchange()
        loop.advanceTime(by: .milliseconds(300))
        try exchange()
        loop.advanceTime(by: .milliseconds(399))
        #expect(channel.isActive)
        // t = 699: taken for an exchange that lasts until 1,200, past the timer set for 700.
        try exchange(answeredAfter: .milliseconds(501))
        #expect(channel.isActive)
        // Idle since 1,200: open at 1,599, closed at 1,600.
        loop.advanceTime(by: .milliseconds(399))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive)
        _ = try? channel.finish()
    }

    /// The head as the transport writes it: the request line, the caller's fields in their order (less those that
    /// are the transport's own, in any case), `Host`, `Authorization`, the framing, the blank line.
    @Test func aRequestHeadIsWrittenAsMade() throws {
        var headers: HTTPHeaders = ["Content-Type": "application/json", "Connection": "close", "X-Other": "1"]
        headers.add(name: "content-LENGTH", value: "99")
        headers.add(name: "Host", value: "elsewhere")
        headers.add(name: "TE", value: "trailers")
        let head = try UpstreamRequestHead(method: .POST, target: "/base/v1/chat/completions?x=1", headers: headers, host: "gpu:1234",
                                           authorization: "Bearer t", framing: .length(2))
        #expect(String(buffer: head.bytes) == "POST /base/v1/chat/completions?x=1 HTTP/1.1\r\nContent-Type: application/json\r\n"
            + "X-Other: 1\r\nHost: gpu:1234\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n")
        #expect(!head.chunked)
        #expect(head.decoderHead.method == .POST)
        let chunked = try UpstreamRequestHead(method: .PUT, target: "/", headers: ["Accept": "ü", "Transfer-Encoding": "gzip"], host: "h",
                                              authorization: "a", framing: .chunked)
        #expect(String(buffer: chunked.bytes) == "PUT / HTTP/1.1\r\nAccept: ü\r\nHost: h\r\nAuthorization: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(chunked.chunked)
        let get = try UpstreamRequestHead(method: .GET, target: "/v1/models", headers: [:], host: "h", authorization: "a", framing: .none)
        #expect(String(buffer: get.bytes) == "GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\n\r\n")
        #expect(get.decoderHead.method == .GET)
    }

    /// A line break in a value would end the field there, and what follows would be read as another field (or
    /// another request): refused before anything is sent, as a name, method or target that cannot be sent is.
    @Test(arguments: [
        ("GET", "/", "X-Note", "a\r\nX-Admin: yes", "a", "the value of the header 'X-Note' holds a line break or a control character"),
        ("GET", "/", "X-Note", "a\nb", "a", "the value of the header 'X-Note' holds a line break or a control character"),
        ("GET", "/", "X-Note", "a\u{0}b", "a", "the value of the header 'X-Note' holds a line break or a control character"),
        ("GET", "/", "X-Note", "a", "Bearer t\r\nX-Admin: yes", "the value of the header 'Authorization' holds a line break or a control character"),
        ("GET", "/", "X Note", "a", "a", "the header name 'X Note' cannot be sent"),
        ("GET", "/", "X-Note:", "a", "a", "the header name 'X-Note:' cannot be sent"),
        ("GET", "/", "", "a", "a", "the header name '' cannot be sent"),
        ("GET", "/a b", "X-Note", "a", "a", "the request target holds a space, a control character or a byte above ASCII (percent-encode it)"),
        ("GET", "/mod\u{E8}le", "X-Note", "a", "a", "the request target holds a space, a control character or a byte above ASCII (percent-encode it)"),
        ("GET", "/a\r\nb", "X-Note", "a", "a", "the request target holds a space, a control character or a byte above ASCII (percent-encode it)"),
        ("GET", "", "X-Note", "a", "a", "the request target is empty"),
        ("", "/", "X-Note", "a", "a", "the method '' cannot be sent"),
        ("GE T", "/", "X-Note", "a", "a", "the method 'GE T' cannot be sent"),
    ])
    func aHeadThatCannotBeSentIsRefused(method: String, target: String, name: String, value: String, authorization: String,
                                        message: String) {
        #expect(throws: GSEAIError.invalidArgument(message)) {
            try UpstreamRequestHead(method: HTTPMethod(rawValue: method), target: target, headers: [name: value], host: "h",
                                    authorization: authorization, framing: .none)
        }
    }

    @Test func aRequestWithAHeaderThatCannotBeSentIsRefusedAndNothingSent() async throws {
        try await RawHTTPServer.with(answer: { _ in .text("fine") }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            var request = RawRequest(method: .GET, path: "/")
            request.headers.add(name: "X-Note", value: "a\r\nX-Admin: yes")
            await #expect(throws: GSEAIError.invalidArgument("the value of the header 'X-Note' holds a line break or a control character")) {
                try await client.send(request)
            }
            #expect(server.connectionsAccepted == 0)
        }
    }

    /// An upstream connection's handler on an embedded channel, connected; `keptForTheNext`: the connection is kept for
    /// the next request after each answer (as the pool keeps it).
    static func embeddedConnection(keptForTheNext: Bool = true) throws -> (EmbeddedChannel, UpstreamConnectionHandler) {
        let channel = EmbeddedChannel()
        let handler = UpstreamConnectionHandler()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        if keptForTheNext { handler.onIdle = {} }
        return (channel, handler)
    }

    /// What goes on the connection, on an embedded channel: the head and the body in hand in one flush; a body
    /// without a length in chunks (an empty piece sends nothing: it would end the body), then the last chunk; a
    /// body of known length as it is, then nothing more.
    @Test func theRequestsBytesAreTheHeadThenTheBodyFramedByItsLength() throws {
        let (channel, handler) = try Self.embeddedConnection()
        func sent() throws -> String {
            var text = ""
            while let piece = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: piece) }
            return text
        }
        func answer() throws {
            try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            try channel.writeInbound(HTTPClientResponsePart.end(nil))
        }
        let exchange = { UpstreamExchange(channel: channel, firstByte: .seconds(5), idle: .seconds(5)) }
        func head(_ target: String, _ framing: UpstreamRequestHead.Framing) throws -> UpstreamRequestHead {
            try UpstreamRequestHead(method: .POST, target: target, headers: [:], host: "h", authorization: "a", framing: framing)
        }
        handler.begin(exchange(), head: try head("/w", .length(5)), body: ByteBuffer(string: "hello"), complete: true)
        #expect(try sent() == "POST /w HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nContent-Length: 5\r\n\r\nhello")
        try answer()

        handler.begin(exchange(), head: try head("/c", .chunked), body: nil, complete: false)
        for piece in ["hello, ", "", "world and more"] { _ = handler.send(ByteBuffer(string: piece)) }
        handler.endRequest()
        #expect(try sent() == "POST /c HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhello, \r\ne\r\nworld and more\r\n0\r\n\r\n")
        try answer()

        handler.begin(exchange(), head: try head("/k", .length(4)), body: nil, complete: false)
        for piece in ["ab", "cd"] { _ = handler.send(ByteBuffer(string: piece)) }
        handler.endRequest()
        #expect(try sent() == "POST /k HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nContent-Length: 4\r\n\r\nabcd")
        try answer()
        _ = try? channel.finish()
    }

    /// A request in one buffer is taken as sent once written to the channel (no promise): its connection is given back
    /// as its answer ends. A write that fails closes the connection, and the exchange fails as one whose connection
    /// closed before its answer (which the transport sends again on a new connection when this one had been kept
    /// alive). A large body's write still tells when it has been sent: the connection waits for it.
    @Test func aRequestInOneBufferIsSentWhenWrittenAndALargeBodyIsWaitedFor() throws {
        final class Writes: ChannelOutboundHandler, @unchecked Sendable {
            typealias OutboundIn = ByteBuffer
            let failing: Bool
            var held: [EventLoopPromise<Void>] = []
            init(failing: Bool) { self.failing = failing }
            func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
                if failing {
                    promise?.fail(ChannelError.ioOnClosedChannel)
                    context.close(promise: nil)
                } else if let promise {
                    held.append(promise)  // Written, not yet sent.
                }
            }
            func flush(context: ChannelHandlerContext) {}
        }
        func connection(_ writes: Writes) throws -> (EmbeddedChannel, UpstreamConnectionHandler, () -> Int) {
            let (channel, handler) = try Self.embeddedConnection()
            try channel.pipeline.syncOperations.addHandler(writes, position: .first)
            var idled = 0
            handler.onIdle = { idled += 1 }
            return (channel, handler, { idled })
        }
        func answer(_ channel: EmbeddedChannel) throws {
            try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            try channel.writeInbound(HTTPClientResponsePart.end(nil))
        }
        func begin(_ handler: UpstreamConnectionHandler, on channel: EmbeddedChannel, size: Int) throws -> UpstreamExchange {
            let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(5), idle: .seconds(5))
            let head = try UpstreamRequestHead(method: .POST, target: "/w", headers: [:], host: "h", authorization: "a", framing: .length(size))
            handler.begin(exchange, head: head, body: ByteBuffer(repeating: 0x78, count: size), complete: true)
            return exchange
        }

        // In one buffer: given back at the answer's end, with no write completed.
        let small = Writes(failing: false)
        var (channel, handler, idled) = try connection(small)
        _ = try begin(handler, on: channel, size: ChunkedBody.copiedUpTo)
        try answer(channel)
        #expect(idled() == 1 && small.held.isEmpty)
        _ = try? channel.finish()

        // A large body: given back only once its write has completed.
        let large = Writes(failing: false)
        (channel, handler, idled) = try connection(large)
        _ = try begin(handler, on: channel, size: ChunkedBody.copiedUpTo + 1)
        try answer(channel)
        #expect(idled() == 0 && large.held.count == 1)
        large.held.first?.succeed()
        #expect(idled() == 1)
        _ = try? channel.finish()

        // A write that fails: the connection closes, the exchange fails as closed before its answer.
        (channel, handler, idled) = try connection(Writes(failing: true))
        let failed = try begin(handler, on: channel, size: 5)
        #expect(!channel.isActive && idled() == 0)
        guard case .failure(let error)? = failed.settledHead else {
            Issue.record("the exchange did not fail")
            return
        }
        #expect((error as? UpstreamExchange.Failure) == .closedBeforeAnswer)
    }

    /// The pieces that wait for a reader come out in the order they came, however many wait and however they are taken.
    @Test func waitingPiecesComeOutInOrder() {
        var queue = PieceQueue()
        #expect(queue.isEmpty && queue.popFirst() == nil)
        var next = 0
        var taken: [String] = []
        for round in [1, 2, 5, 1, 3] {
            for _ in 0..<round {
                queue.append(ByteBuffer(string: "\(next)"))
                next += 1
            }
            #expect(!queue.isEmpty)
            // Half of them taken now (at least one), the rest with the next round's.
            for _ in 0..<max(1, round / 2) { if let piece = queue.popFirst() { taken.append(String(buffer: piece)) } }
        }
        while let piece = queue.popFirst() { taken.append(String(buffer: piece)) }
        #expect(queue.isEmpty)
        #expect(taken == (0..<next).map { "\($0)" })
    }

    /// A body in hand of up to `ChunkedBody.copiedUpTo` bytes goes in one buffer with the head (one write through
    /// the pipeline); a larger one as a write of its own after the head's, itself not copied.
    @Test func aSmallBodyInHandIsWrittenWithItsHeadAndALargeOneAfterIt() throws {
        let (channel, handler) = try Self.embeddedConnection()
        func writes() throws -> [ByteBuffer] {
            var buffers: [ByteBuffer] = []
            while let piece = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(piece) }
            return buffers
        }
        let head = "POST /w HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nContent-Length: "
        for size in [ChunkedBody.copiedUpTo, ChunkedBody.copiedUpTo + 1] {
            let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
            let requestHead = try UpstreamRequestHead(method: .POST, target: "/w", headers: [:], host: "h", authorization: "a",
                                                      framing: .length(size))
            handler.begin(UpstreamExchange(channel: channel, firstByte: .seconds(5), idle: .seconds(5)), head: requestHead, body: body,
                          complete: true)
            let written = try writes()
            #expect(written.map { String(buffer: $0) }.joined() == head + "\(size)\r\n\r\n" + String(buffer: body))
            #expect(written.count == (size <= ChunkedBody.copiedUpTo ? 1 : 2))
            // The large body is the caller's own buffer, not a copy.
            if written.count == 2 {
                #expect(written[1].withUnsafeReadableBytes { $0.baseAddress } == body.withUnsafeReadableBytes { $0.baseAddress })
            }
            try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            try channel.writeInbound(HTTPClientResponsePart.end(nil))
        }
        _ = try? channel.finish()
    }

    /// A streamed body must be as long as its head says: more would be read by the server as the start of another
    /// request, less would keep it waiting. Either fails the request with why, and closes the connection, whose
    /// framing is lost; nothing past the declared length is sent.
    @Test func aStreamedBodyThatIsNotItsDeclaredLengthFailsTheRequestAndClosesTheConnection() throws {
        for (pieces, message) in [(["abc", "de"], "the request body is longer than its declared length"),
                                  (["ab"], "the request body ended 2 bytes short of its declared length")] {
            let (channel, handler) = try Self.embeddedConnection(keptForTheNext: false)
            let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(5), idle: .seconds(5))
            let head = try UpstreamRequestHead(method: .POST, target: "/k", headers: [:], host: "h", authorization: "a", framing: .length(4))
            handler.begin(exchange, head: head, body: nil, complete: false)
            var failures: [String] = []
            for piece in pieces {
                handler.send(ByteBuffer(string: piece))?.whenFailure { failures.append("\($0)") }
            }
            if pieces.count == 1 { handler.endRequest() }
            var headFailure = ""
            if case .failure(let error) = exchange.settledHead { headFailure = "\(error)" }
            var sent = ""
            while let piece = try channel.readOutbound(as: ByteBuffer.self) { sent += String(buffer: piece) }
            #expect(headFailure == "\(GSEAIError.invalidArgument(message))")
            #expect(!channel.isActive)
            #expect(sent == "POST /k HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nContent-Length: 4\r\n\r\n" + (pieces.count == 2 ? "abc" : "ab"))
            #expect(failures == (pieces.count == 2 ? ["\(GSEAIError.invalidArgument(message))"] : []))
        }
    }

    @Test func aStreamedBodyLongerThanDeclaredIsRefusedToTheCaller() async throws {
        try await RawHTTPServer.with(answer: { _ in .text("fine") }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            let pieces = [ByteBuffer(string: "abcdef")].async
            await #expect(throws: GSEAIError.invalidArgument("the request body is longer than its declared length")) {
                try await client.send(RawRequest(method: .POST, path: "/", body: .stream(pieces, length: 3)))
            }
            await #expect(throws: GSEAIError.invalidArgument("the request body's length is negative (-1)")) {
                try await client.send(RawRequest(method: .POST, path: "/", body: .stream([ByteBuffer(string: "a")].async, length: -1)))
            }
            // The next request is answered (on a new connection).
            #expect(String(buffer: try await client.send(RawRequest(method: .GET, path: "/")).body.collect(upTo: 100)) == "fine")
        }
    }

    /// The answer to a `HEAD` has a length but no body: the decoder, told the method, reads it as ended, and the
    /// next request on the kept-alive connection gets its own answer.
    @Test func theAnswerToAHeadRequestHasNoBodyAndTheConnectionCarriesOn() async throws {
        try await RawHTTPServer.with(answer: { index in .text("answer \(index)") }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, connections: 1, engine: .nio)
            defer { Task { try await client.shutdown() } }
            let head = try await client.send(RawRequest(method: .HEAD, path: "/"))
            #expect(head.status == 200)
            #expect(head.headers.first(name: "content-length") == "8")
            #expect(try await head.body.collect(upTo: 100).readableBytes == 0)
            let get = try await client.send(RawRequest(method: .GET, path: "/"))
            #expect(String(buffer: try await get.body.collect(upTo: 100)) == "answer 2")
            #expect(server.connectionsAccepted == 1)
        }
    }

    /// The pool's choices, in order: an idle connection of the request's loop; else, unless the request keeps to its
    /// loop, one of another; else a new one under the limit; else, at the limit, one of another loop; else a wait.
    /// A list of a loop emptied and filled again, and a connection closed while idle, are counted right.
    @Test func thePoolGivesTheLoopsOwnConnectionThenAnothersThenANewOne() async throws {
        // The testing loops and channels that may be used from any thread (the pool's waiting path schedules its
        // timer on the request's loop from the request's task).
        let first = NIOAsyncTestingEventLoop(), second = NIOAsyncTestingEventLoop()
        func connection(on loop: NIOAsyncTestingEventLoop) async throws -> UpstreamConnection {
            let channel = NIOAsyncTestingChannel(loop: loop)
            return try await loop.executeInContext {
                UpstreamConnection(channel: channel, handler: NIOLoopBound(UpstreamConnectionHandler(), eventLoop: loop))
            }
        }
        func isIdle(_ lease: ConnectionPool.Lease, _ expected: UpstreamConnection) -> Bool {
            if case .idle(let connection) = lease { return connection === expected }
            return false
        }
        func isOpen(_ lease: ConnectionPool.Lease) -> Bool {
            if case .open = lease { return true }
            return false
        }
        let pool = ConnectionPool(limit: 2, idleTimeout: .seconds(60))
        #expect(isOpen(try await pool.lease(preferring: first, strictly: true, wait: .seconds(1))))
        let a = try await connection(on: first)
        pool.opened(a)
        #expect(pool.returned(a))
        // Its own loop's, three times over: given back, taken again from the same list.
        for _ in 1...3 {
            #expect(isIdle(try await pool.lease(preferring: first, strictly: true, wait: .seconds(1)), a))
            #expect(pool.returned(a))
        }
        // Another loop's request that keeps to its loop opens a new one (under the limit); one that does not
        // takes the idle one.
        #expect(isOpen(try await pool.lease(preferring: second, strictly: true, wait: .seconds(1))))
        let b = try await connection(on: second)
        pool.opened(b)
        #expect(isIdle(try await pool.lease(preferring: second, strictly: false, wait: .seconds(1)), a))
        #expect(pool.returned(b))
        // At the limit, even a request that keeps to its loop takes another loop's idle connection.
        #expect(isIdle(try await pool.lease(preferring: first, strictly: true, wait: .seconds(1)), b))
        // None idle, none to open: it waits, and gets the first given back.
        async let waited = pool.lease(preferring: first, strictly: true, wait: .seconds(5))
        let deadline = ContinuousClock.now + .seconds(10)
        while pool.waitingCount == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(pool.waitingCount == 1)
        #expect(!pool.returned(a))
        #expect(isIdle(try await waited, a))
        // A connection closed while idle leaves the pool: its place is opened again.
        #expect(pool.returned(b))
        pool.closed(b)
        #expect(isOpen(try await pool.lease(preferring: second, strictly: true, wait: .seconds(1))))
        // A task already cancelled gets no connection.
        pool.closedUnknown()
        let cancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await pool.lease(preferring: first, strictly: true, wait: .seconds(1))
        }
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        // A pool shut down refuses every lease, a cancelled task's too.
        _ = pool.shutDown()
        await #expect(throws: GSEAIError.connection("the client is shut down")) {
            try await pool.lease(preferring: first, strictly: false, wait: .seconds(1))
        }
        let cancelledAfter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await pool.lease(preferring: first, strictly: true, wait: .seconds(1))
        }
        await #expect(throws: GSEAIError.connection("the client is shut down")) { try await cancelledAfter.value }
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

    /// The answer of a server that sends `size` bytes of `a` as fast as the connection takes them.
    static func withLargeAnswer(_ size: Int, _ body: (RawResponse) async throws -> Void) async throws {
        try await RawHTTPServer.with(answer: { _ in .large(size) }) { server in
            let client = try GSEAIClient(apiToken: "t", baseURL: server.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            try await body(try await client.send(RawRequest(method: .GET, path: "/large")))
        }
    }

    /// A whole answer gathered as it comes (the reader asks before most of it has come): every byte, in order; and
    /// one byte over the limit fails as too large, whichever read brings it.
    @Test func aLargeWholeAnswerIsGatheredWholeAndOneByteOverTheLimitFails() async throws {
        // 4 MiB: many reads, each well past the first; compared whole (a byte at a time in a debug build, the check
        // alone held a thread of the suite for seconds).
        let size = 4 << 20
        try await Self.withLargeAnswer(size) { response in
            let body = try await response.body.collect(upTo: size)
            #expect(body == ByteBuffer(repeating: 0x61, count: size))
        }
        try await Self.withLargeAnswer(size) { response in
            await #expect(throws: GSEAIError.responseTooLarge(limit: size - 1)) {
                try await response.body.collect(upTo: size - 1)
            }
        }
    }

    @Test func aSlowReaderStopsTheReadsAndGetsEveryByte() async throws {
        let size = 16 << 20
        try await Self.withLargeAnswer(size) { response in
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

    @Test func aPushedBodyStopsTheReadsWhileItsConsumerWantsNoMoreAndGetsEveryByte() async throws {
        let size = 16 << 20
        try await Self.withLargeAnswer(size) { response in
            let consumer = TestConsumer()
            consumer.paused.store(true, ordering: .relaxed)
            #expect(response.body.push(to: consumer))
            // The consumer wants no more: the connection reads on only what one read brings.
            try await Task.sleep(for: .milliseconds(500))
            let whilePaused = consumer.bytes.load(ordering: .relaxed)
            #expect(whilePaused <= 2 << 20)
            #expect(consumer.ending.withLock { $0 } == nil)
            consumer.paused.store(false, ordering: .relaxed)
            response.body.resumeReads()
            let ending = try await consumer.end()
            #expect(ending == "ok")
            #expect(consumer.bytes.load(ordering: .relaxed) == size)
            #expect(consumer.otherBytes.load(ordering: .relaxed) == 0)
            #expect(consumer.readsCompleted.load(ordering: .relaxed) > 0)
        }
    }

    @Test func aPushedBodyThatIsCancelledEndsItsConsumerWithCancellation() async throws {
        try await Self.withLargeAnswer(16 << 20) { response in
            let consumer = TestConsumer()
            consumer.paused.store(true, ordering: .relaxed)
            #expect(response.body.push(to: consumer))
            response.body.cancel()
            let ending = try await consumer.end()
            #expect(ending == "CancellationError")
            #expect(consumer.bytes.load(ordering: .relaxed) < 16 << 20)
        }
    }

    @Test func aCancelAfterTheBodysEndWasReadLeavesTheConnectionToThePool() async throws {
        // Between the end read (the connection back in the pool) and the reader told, a reader who leaves must
        // not close the connection, which another request may have taken.
        let channel = EmbeddedChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(1), idle: .seconds(1))
        exchange.received(HTTPResponseHead(version: .http1_1, status: .ok))
        exchange.completing()
        exchange.cancel()
        #expect(channel.isActive)
        exchange.ended()
        #expect(try await exchange.collect(upTo: 1 << 10).readableBytes == 0)
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    /// An answer whose body and end came before its reader asked is taken at once: its pieces in order, up to its
    /// limit exactly; one byte over fails as too large without closing the connection, which went back to the pool
    /// when the end was read (another request may have it).
    @Test func anAnswerThatCameWholeIsCollectedAtOnceAndTooLargeLeavesItsConnection() async throws {
        func exchange(on channel: EmbeddedChannel) -> UpstreamExchange {
            let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(1), idle: .seconds(1))
            exchange.received(HTTPResponseHead(version: .http1_1, status: .ok))
            exchange.received(ByteBuffer(string: "abc"))
            exchange.received(ByteBuffer(string: "def"))
            exchange.completing()
            exchange.ended()
            return exchange
        }
        let channel = EmbeddedChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        #expect(String(buffer: try await exchange(on: channel).collect(upTo: 6)) == "abcdef")
        await #expect(throws: GSEAIError.responseTooLarge(limit: 5)) { try await exchange(on: channel).collect(upTo: 5) }
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    /// An answer whose connection failed after its head, before its reader asked, gives its error at once (an
    /// interrupted answer), and its connection is closed.
    @Test func anAnswerThatFailedBeforeItsReaderAskedGivesItsError() async throws {
        let channel = EmbeddedChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        let exchange = UpstreamExchange(channel: channel, firstByte: .seconds(1), idle: .seconds(1))
        exchange.received(HTTPResponseHead(version: .http1_1, status: .ok))
        exchange.received(ByteBuffer(string: "half"))
        exchange.failed(ChannelError.eof)
        await #expect(throws: GSEAIError.streamInterrupted) { try await exchange.collect(upTo: 100) }
        #expect(!channel.isActive)
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

/// A consumer of a pushed body that counts what it gets, wants more only while not `paused`, and keeps how the
/// body ended ("ok", or the error's type).
final class TestConsumer: ResponseBodyConsumer {
    let bytes = Atomic(0)
    let otherBytes = Atomic(0)
    let readsCompleted = Atomic(0)
    let paused = Atomic(false)
    let ending = Mutex<String?>(nil)
    private let ended = Mutex<CheckedContinuation<String, Never>?>(nil)

    func received(_ piece: ByteBuffer) {
        bytes.add(piece.readableBytes, ordering: .relaxed)
        if piece.readableBytesView.first != 0x61 || piece.readableBytesView.last != 0x61 { otherBytes.add(1, ordering: .relaxed) }
    }

    func readComplete() {
        readsCompleted.add(1, ordering: .relaxed)
    }

    func ended(_ result: Result<Void, any Error>) {
        let text: String
        switch result {
        case .success: text = "ok"
        case .failure(let error): text = String(describing: type(of: error))
        }
        ending.withLock { $0 = text }
        ended.withLock { $0 }?.resume(returning: text)
    }

    var wantsMore: Bool { !paused.load(ordering: .relaxed) }

    /// How the body ended, once it has (within 30 s).
    func end() async throws -> String {
        try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let done: String? = self.ending.withLock { ending in
                        if ending == nil { self.ended.withLock { $0 = continuation } }
                        return ending
                    }
                    if let done { continuation.resume(returning: done) }
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                return "no end within 30 s"
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
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

/// `UpstreamRequestHead` against SwiftNIO's own request parser, on heads made at random (a fixed seed, so a failure
/// repeats): a head is refused exactly when one of its parts holds a byte that cannot be sent, and one that is not
/// refused parses back to the same method, target and fields (the transport's own left out, `Host`,
/// `Authorization` and the framing added), one request and nothing more.
@Suite("The upstream request's head, made at random")
struct UpstreamRequestHeadRoundTripTests {
    /// xorshift64*: a small generator with a seed.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
    }

    @Test func randomHeadsAreRefusedOrParseBackAsMade() throws {
        var random = Seeded(state: 0x9E37_79B9_7F4A_7C15)
        // Mostly well-formed pieces, sometimes a byte that cannot be sent.
        let nameBytes = Array("abcXYZ019-_!#$%&'*+.^`|~".utf8), bad = [" ", "\r", "\n", "\r\n", "\u{0}", ":", "\u{7F}", "\t"]
        func piece(from alphabet: [UInt8], length: ClosedRange<Int>, extra: [String]) -> String {
            var text = String(decoding: (0..<Int.random(in: length, using: &random)).map { _ in alphabet.randomElement(using: &random)! },
                              as: UTF8.self)
            if Int.random(in: 0..<8, using: &random) == 0 {
                let at = text.index(text.startIndex, offsetBy: Int.random(in: 0...text.count, using: &random))
                text.insert(contentsOf: extra.randomElement(using: &random)!, at: at)
            }
            return text
        }
        let valueBytes = Array("abc XYZ 0-9 ,;=/\"()".utf8)
        var refused = 0, parsed = 0
        for _ in 0..<400 {
            // Methods the parser knows (llhttp refuses any other), sometimes broken.
            var method = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"].randomElement(using: &random)!
            if Int.random(in: 0..<8, using: &random) == 0 { method.insert(contentsOf: bad.randomElement(using: &random)!, at: method.startIndex) }
            let target = "/" + piece(from: Array("abc/?=&%09-._~".utf8), length: 0...20, extra: bad + ["ü"])
            var headers = HTTPHeaders()
            for _ in 0..<Int.random(in: 0...5, using: &random) {
                let name = Int.random(in: 0..<10, using: &random) == 0
                    ? ["Host", "content-length", "Connection", "TE"].randomElement(using: &random)!
                    : piece(from: nameBytes, length: 1...12, extra: bad)
                headers.add(name: name, value: piece(from: valueBytes, length: 0...20, extra: bad + ["ü"]))
            }
            let framing = [UpstreamRequestHead.Framing.length(0), .length(12), .chunked, .none].randomElement(using: &random)!
            let sendable = method.utf8.allSatisfy(UpstreamRequestHead.isTokenByte)
                && target.utf8.allSatisfy(UpstreamRequestHead.isTargetByte)
                && headers.allSatisfy { name, value in
                    UpstreamRequestHead.isTransportsOwn(name)
                        || (!name.isEmpty && name.utf8.allSatisfy(UpstreamRequestHead.isTokenByte) && value.utf8.allSatisfy(UpstreamRequestHead.isValueByte))
                }
            guard let head = try? UpstreamRequestHead(method: HTTPMethod(rawValue: method), target: target, headers: headers, host: "gpu:1",
                                                      authorization: "Bearer t", framing: framing)
            else {
                #expect(!sendable, "refused: \(method) \(target) \(headers)")
                refused += 1
                continue
            }
            #expect(sendable, "sent: \(method) \(target) \(headers)")
            var expected = headers.filter { !UpstreamRequestHead.isTransportsOwn($0.name) }.map { ($0.name, Self.trimmed($0.value)) }
            expected += [("Host", "gpu:1"), ("Authorization", "Bearer t")]
            switch framing {
            case .length(let length): expected.append(("Content-Length", String(length)))
            case .chunked: expected.append(("Transfer-Encoding", "chunked"))
            case .none: break
            }
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
            do {
                try channel.writeInbound(head.bytes)
            } catch {
                Issue.record("\(error) parsing \(String(buffer: head.bytes))")
                continue
            }
            let first = try channel.readInbound(as: HTTPServerRequestPart.self)
            guard case .head(let read)? = first else {
                Issue.record("no head parsed from \(String(buffer: head.bytes))")
                continue
            }
            #expect(read.method.rawValue == method)
            #expect(read.uri == target)
            #expect(read.headers.map { "\($0.name): \($0.value)" } == expected.map { "\($0.0): \($0.1)" })
            parsed += 1
            _ = try? channel.finish()
        }
        // Both kinds were made, in numbers.
        #expect(refused > 50)
        #expect(parsed > 50)
    }

    /// What SwiftNIO's parser reads of a value: without the spaces and tabs before it (it keeps those after it).
    static func trimmed(_ value: String) -> String {
        String(decoding: value.utf8.drop { $0 == 0x20 || $0 == 0x09 }, as: UTF8.self)
    }
}
