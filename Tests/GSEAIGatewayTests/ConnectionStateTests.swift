@testable import GSEAIGateway
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import Testing
import Foundation
import Synchronization

/// The connection's state kept by the gateway's codec (``ConnectionState``): its idle limit and a graceful stop, on
/// SwiftNIO's embedded channel, whose loop's time moves only when a test moves it. (`ForwardingLaneTests` checks the
/// same on real connections of both lanes.)
@Suite("A connection's idle limit and graceful stop")
struct ConnectionStateTests {
    static let limit = TimeAmount.seconds(10)

    /// The codec with a limit of ``limit`` and a handler after it that notes what passes it; the channel open.
    static func connection() throws -> (EmbeddedChannel, Recorder) {
        let channel = EmbeddedChannel()
        try GatewayHTTP1Codec.addHandlers(to: channel.pipeline.syncOperations, limits: NIOHTTPDecoderLimitConfiguration(),
                                          idleTimeout: limit)
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
        return (channel, recorder)
    }

    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPRequestPart
        var parts: [String] = []
        var events: [String] = []
        var inactive = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): parts.append("head \(head.path ?? "")")
            case .body(let body): parts.append("body \(String(buffer: body))")
            case .end: parts.append("end")
            }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            events.append("\(type(of: event))")
        }

        func channelInactive(context: ChannelHandlerContext) {
            inactive = true
        }
    }

    static func answer(_ channel: EmbeddedChannel, _ text: String = "ok") throws {
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "\(text.utf8.count)"])), promise: nil)
        channel.write(HTTPResponsePart.body(ByteBuffer(string: text)), promise: nil)
        try channel.writeAndFlush(HTTPResponsePart.end(nil)).wait()
    }

    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { text += String(buffer: buffer) }
        }
        return text
    }

    @Test func anIdleConnectionIsClosedOnceItHasBeenIdleForTheLimit() throws {
        let (channel, recorder) = try Self.connection()
        // Idle from the start: closed at the limit, not before.
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
        try Self.answer(channel)
        // The limit counts again from the answer's end: 9 s after it, open; 11 s after it, closed.
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(recorder.parts == ["head /a", "end"])
        // The close is told to the handlers after the codec (the caller's departure is watched there).
        #expect(recorder.inactive)
        #expect(try Self.written(channel).hasSuffix("\r\n\r\nok"))
    }

    @Test func anAnswerInProgressHoldsTheConnectionOpenHoweverLongItTakes() throws {
        let (channel, _) = try Self.connection()
        try channel.writeInbound(ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(35))
        #expect(channel.isActive)
        try Self.answer(channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func aRequestBeingReadMustKeepSendingWithinTheLimit() throws {
        let (channel, recorder) = try Self.connection()
        try channel.writeInbound(ByteBuffer(string: "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab"))
        // Each part within the limit of the last: 24 s in all, open.
        for piece in ["cd", "ef"] {
            channel.embeddedEventLoop.advanceTime(by: .seconds(8))
            #expect(channel.isActive)
            if piece == "ef" {
                // Its last part does not come: closed at the limit after the one before.
                channel.embeddedEventLoop.advanceTime(by: .seconds(3))
                #expect(!channel.isActive)
                break
            }
            try channel.writeInbound(ByteBuffer(string: piece))
        }
        #expect(recorder.parts == ["head /upload", "body ab", "body cd"])
    }

    @Test func aGracefulStopClosesAnIdleConnectionAtOnceAndABusyOneAfterItsAnswer() throws {
        let (idle, idleRecorder) = try Self.connection()
        idle.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!idle.isActive)
        // The stop is the codec's to take: not passed on, unlike any other event.
        #expect(idleRecorder.events.isEmpty)

        let (busy, busyRecorder) = try Self.connection()
        try busy.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
        busy.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        busy.pipeline.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
        #expect(busyRecorder.events == ["ChannelEvent"])
        #expect(busy.isActive)
        // Both requests answered, then closed: the first answer's end leaves the second in progress.
        try Self.answer(busy, "first")
        #expect(busy.isActive)
        try Self.answer(busy, "second")
        #expect(!busy.isActive)
        let written = try Self.written(busy)
        #expect(written.hasSuffix("\r\n\r\nsecond") && written.contains("\r\n\r\nfirst"))
    }

    /// An answer being made holds the connection while the next request, sent behind it, is still being read (its
    /// body not all come); once the answer has ended, that request's parts must come within the limit.
    @Test func anAnswerHoldsTheConnectionWhileTheNextRequestIsStillBeingRead() throws {
        let (channel, recorder) = try Self.connection()
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(35))
        #expect(channel.isActive)
        try Self.answer(channel, "first")
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(recorder.parts == ["head /a", "end", "head /b", "body abc"])
    }

    /// Holds the writes that reach it (and their promises) until ``release()``: a socket that has not taken them yet.
    final class WriteHolder: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        private var held: [(NIOAny, EventLoopPromise<Void>?)] = []
        private var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) { held.append((data, promise)) }
        func flush(context: ChannelHandlerContext) {}

        func release() {
            guard let context else { return }
            let writes = held
            held = []
            for (data, promise) in writes { context.write(data, promise: promise) }
            context.flush()
        }
    }

    /// A graceful stop closes a busy connection only once its last answer has been sent: a close drops what still
    /// waits for the socket (a slow reader's last pieces, the body's end).
    @Test func aGracefulStopClosesOnlyOnceTheLastAnswerHasBeenSent() throws {
        let channel = EmbeddedChannel()
        let holder = WriteHolder()
        try channel.pipeline.syncOperations.addHandler(holder)
        try GatewayHTTP1Codec.addHandlers(to: channel.pipeline.syncOperations, limits: NIOHTTPDecoderLimitConfiguration(),
                                          idleTimeout: Self.limit)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        let ended = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: [.contentType: "text/event-stream"])), promise: nil)
        channel.write(HTTPResponsePart.body(ByteBuffer(string: "data: last\n\n")), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: ended)
        // Written, not sent: the connection stays, and the end's promise waits.
        #expect(channel.isActive)
        holder.release()
        #expect(!channel.isActive)
        #expect(throws: Never.self) { try ended.futureResult.wait() }
        let written = try Self.written(channel)
        #expect(written.hasSuffix("c\r\ndata: last\n\n\r\n0\r\n\r\n"), "\(written)")
    }

    @Test func theStateCountsRequestsAndNeverGoesBelowNone() {
        var state = ConnectionState(idleTimeout: .seconds(1))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let first = state.becameActive(now: start)
        #expect(first == start + .seconds(1))
        // An answer's end with no request read (a handler's own write) counts nothing.
        let stray = state.answerEnded(now: start)
        #expect(stray == .lookAgain(start + .seconds(1)))
        #expect(state.inProgress == 0)
        state.read(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")), now: start)
        state.read(.end(nil), now: start)
        #expect(state.idleCheck(now: start + .seconds(5)) == .nothing)
        let answered = state.answerEnded(now: start + .seconds(5))
        #expect(answered == .lookAgain(start + .seconds(6)))
        #expect(state.idleCheck(now: start + .milliseconds(5500)) == .lookAgain(start + .seconds(6)))
        #expect(state.idleCheck(now: start + .seconds(6)) == .close)
        // Without a limit, nothing is ever closed for idleness.
        var unlimited = ConnectionState(idleTimeout: nil)
        let none = unlimited.becameActive(now: start)
        #expect(none == nil)
        #expect(unlimited.idleCheck(now: start + .hours(1)) == .nothing)
        let closesAtOnce = unlimited.shouldQuiesce()
        #expect(closesAtOnce)
    }
}

/// Room made at once for a task's frames (``TaskMemory``): inside a task, frames laid out in it afterwards work as
/// ever, however deep; outside any task, nothing is asked of the runtime. (That the frames then need fewer slabs is
/// not visible from Swift: callgrind counts it, bench/README.md, "Fewer hops, the connection's state in the codec".)
@Suite("Room for a task's frames")
struct TaskMemoryTests {
    /// Sums 1…`depth` through as many asynchronous frames, each holding a buffer across a suspension point.
    static func deep(_ depth: Int) async -> Int {
        guard depth > 0 else { return 0 }
        let local = [depth, depth]
        await Task.yield()
        return local[0] + (await deep(depth - 1))
    }

    @Test func framesAfterTheRoomWasMadeWorkAsEver() async {
        TaskMemory.reserve(TaskMemory.forwardedRequest)
        #expect(await Self.deep(500) == 500 * 501 / 2)
        // Again, larger than the room: the runtime makes more, as without it.
        TaskMemory.reserve(1 << 20)
        #expect(await Self.deep(2_000) == 2_000 * 2_001 / 2)
        let inner = await Task {
            TaskMemory.reserve(TaskMemory.forwardedRequest)
            return await Self.deep(100)
        }.value
        #expect(inner == 5_050)
    }

    /// Only inside a task is the runtime asked (its fallback allocator outside one is not for concurrent use).
    @Test func outsideATaskNothingIsAsked() async {
        #expect(TaskMemory.reserve(TaskMemory.forwardedRequest))
        #expect(!TaskMemory.reserve(0))
        let asked = Mutex<Bool?>(nil)
        let thread = Thread {
            let result = TaskMemory.reserve(TaskMemory.forwardedRequest)
            asked.withLock { $0 = result }
        }
        thread.start()
        while asked.withLock({ $0 }) == nil { try? await Task.sleep(for: .milliseconds(5)) }
        #expect(asked.withLock { $0 } == false)
    }
}
