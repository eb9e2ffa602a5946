import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import NIOPosix
import Testing

@testable import GSEAIGateway

/// `cancellingIfCallerLeaves` and `stoppingIfCallerLeaves` over a real loopback connection whose server side
/// carries the gateway's `CallerDepartureHandler`: the work of a caller who leaves is cancelled (or stopped),
/// whether they leave while it runs or before it is watched, and a request that ends leaves nothing watching
/// on its keep-alive connection. A caller who takes nothing of an answer for the stall limit has its connection
/// closed, which is a departure like any other.
@Suite("Caller departure")
struct CallerDepartureTests {
    struct Connection {
        var server: any Channel
        var client: any Channel
        var listener: any Channel

        func close() async {
            try? await client.close()
            try? await listener.close()
        }
    }

    /// A connected pair on loopback: the server's side has the handler, as in the gateway's pipeline.
    static func connect() async throws -> Connection {
        let group = MultiThreadedEventLoopGroup.singleton
        let accepted = group.any().makePromise(of: (any Channel).self)
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CallerDepartureHandler())
                    accepted.succeed(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group).connect(to: listener.localAddress!).get()
        // The initializer runs before the accepted channel is active: wait until it is, as a request finds it.
        let server = try await accepted.futureResult.get()
        for _ in 0..<500 where !server.isActive { try await Task.sleep(for: .milliseconds(10)) }
        #expect(server.isActive)
        return Connection(server: server, client: client, listener: listener)
    }

    static func context(on channel: any Channel) -> GatewayRequestContext {
        GatewayRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: Logger(label: "test")))
    }

    /// Waits (up to 5 s) until `count` requests watch the connection; records an issue otherwise.
    static func waitUntilWatching(_ count: Int, on channel: any Channel, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        var watching = -1
        for _ in 0..<500 {
            watching = try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.handler(type: CallerDepartureHandler.self).watching
            }.get()
            if watching == count { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("\(watching) watching, not \(count)", sourceLocation: sourceLocation)
    }

    @Test func aCallerWhoLeavesWhileTheWorkRunsCancelsIt() async throws {
        let connection = try await Self.connect()
        let context = Self.context(on: connection.server)
        let work = Task { try await context.cancellingIfCallerLeaves { try await Task.sleep(for: .seconds(30)); return "done" } }
        // Watched once it runs; then the caller goes.
        try await Self.waitUntilWatching(1, on: connection.server)
        let left = ContinuousClock.now
        try await connection.client.close()
        await #expect(throws: CancellationError.self) { try await work.value }
        #expect(ContinuousClock.now - left < .seconds(5), "\(ContinuousClock.now - left)")
        await connection.close()
    }

    @Test func aCallerGoneBeforeTheWorkIsWatchedCancelsItAtOnce() async throws {
        let connection = try await Self.connect()
        try await connection.client.close()
        try await connection.server.closeFuture.get()
        let context = Self.context(on: connection.server)
        let started = ContinuousClock.now
        await #expect(throws: CancellationError.self) {
            try await context.cancellingIfCallerLeaves { try await Task.sleep(for: .seconds(30)); return "done" }
        }
        #expect(ContinuousClock.now - started < .seconds(5), "\(ContinuousClock.now - started)")
        await connection.close()
    }

    /// Work that `stop` ends from outside, as an upstream body closed ends its reader.
    final class StoppableWork: Sendable {
        let (ended, stopper) = AsyncStream.makeStream(of: Never.self)
        @Sendable func stop() { stopper.finish() }
        /// Waits until stopped (or 30 s): "stopped", or "not stopped".
        func run() async -> String {
            let stopper = self.stopper
            let timeout = Task { try? await Task.sleep(for: .seconds(30)); stopper.finish() }
            defer { timeout.cancel() }
            let started = ContinuousClock.now
            for await _ in ended {}
            return ContinuousClock.now - started < .seconds(29) ? "stopped" : "not stopped"
        }
    }

    @Test func aCallerWhoLeavesWhileTheWorkRunsStopsIt() async throws {
        let connection = try await Self.connect()
        let context = Self.context(on: connection.server)
        let work = StoppableWork()
        let running = Task { try await context.stoppingIfCallerLeaves(stop: work.stop) { await work.run() } }
        try await Self.waitUntilWatching(1, on: connection.server)
        let left = ContinuousClock.now
        try await connection.client.close()
        #expect(try await running.value == "stopped")
        #expect(ContinuousClock.now - left < .seconds(5), "\(ContinuousClock.now - left)")
        await connection.close()
    }

    @Test func aCallerGoneBeforeTheWorkIsWatchedStopsItAtOnce() async throws {
        let connection = try await Self.connect()
        try await connection.client.close()
        try await connection.server.closeFuture.get()
        let context = Self.context(on: connection.server)
        let work = StoppableWork()
        #expect(try await context.stoppingIfCallerLeaves(stop: work.stop) { await work.run() } == "stopped")
        await connection.close()
    }

    @Test func workThatEndsLeavesNothingWatchingOnTheConnection() async throws {
        let connection = try await Self.connect()
        let context = Self.context(on: connection.server)
        for index in 0..<3 {
            #expect(try await context.cancellingIfCallerLeaves { "answer \(index)" } == "answer \(index)")
            #expect(try await context.stoppingIfCallerLeaves(stop: {}) { "stopped \(index)" } == "stopped \(index)")
        }
        // Each request's watch is taken back when it ends: a keep-alive connection does not gather them.
        try await Self.waitUntilWatching(0, on: connection.server)
        #expect(connection.server.isActive)
        await connection.close()
    }

    /// On an embedded loop, whose clock the test moves: the limit runs only while the connection takes no more
    /// (its outbound buffer above the high-water mark), starts again when it takes more, and closes the connection
    /// exactly when it is reached; the requests watching it are told.
    @Test func aConnectionThatTakesNothingForTheStallLimitIsClosedAndItsRequestsTold() throws {
        let (loop, channel, handler) = try Self.embedded(stallLimit: .seconds(5))
        let left = Flag()
        #expect(handler.watch { left.value.store(true, ordering: .relaxed) } != nil)
        // An answer waits to be sent (written, not flushed: the embedded channel's bytes not yet sent).
        channel.write(HTTPResponsePart.body(ByteBuffer(repeating: 0x61, count: 100)), promise: nil)
        // Full for 4 s, then it takes more; full again at 4.5 s, and nothing taken: closed at 9.5 s (the first
        // limit, at 5 s, no longer runs), not before.
        Self.writable(false, channel)
        loop.advanceTime(by: .seconds(4))
        Self.writable(true, channel)
        loop.advanceTime(by: .milliseconds(500))
        Self.writable(false, channel)
        loop.advanceTime(by: .milliseconds(4_999))
        let toldEarly = left.value.load(ordering: .relaxed)
        #expect(channel.isActive)
        #expect(!toldEarly)
        loop.advanceTime(by: .milliseconds(1))
        let told = left.value.load(ordering: .relaxed)
        #expect(!channel.isActive)
        #expect(told)
    }

    /// A slow reader is not a stalled one: a look that finds fewer bytes waiting than the last gives another
    /// limit; the first that finds none taken closes the connection.
    @Test func aConnectionThatTakesSomeOfWhatWaitsGetsAnotherStallLimit() throws {
        let (loop, channel, handler) = try Self.embedded(stallLimit: .seconds(5))
        channel.write(HTTPResponsePart.body(ByteBuffer(repeating: 0x61, count: 100)), promise: nil)
        Self.writable(false, channel)
        loop.advanceTime(by: .seconds(4))
        // The 100 bytes go, and 150 more come while the connection is still full (from the relay, as a stream's
        // pieces on their way do): 150 wait, more than at the first look, but the caller took 100.
        channel.flush()
        handler.write(ByteBuffer(repeating: 0x62, count: 150))
        loop.advanceTime(by: .seconds(1))
        #expect(channel.isActive)
        // Nothing more taken: closed one limit after that look (at 10 s), not before.
        loop.advanceTime(by: .milliseconds(4_999))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive)
    }

    /// A connection that keeps taking is never closed by the limit, however long its answer lasts.
    @Test func aConnectionThatKeepsTakingIsNotClosed() throws {
        let (loop, channel, _) = try Self.embedded(stallLimit: .seconds(5))
        for _ in 0..<20 {
            Self.writable(false, channel)
            loop.advanceTime(by: .seconds(3))
            Self.writable(true, channel)
        }
        loop.advanceTime(by: .seconds(60))
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    /// The handler on an embedded channel, behind a stand-in for the HTTP/1 encoder that writes a body's bytes (the
    /// embedded channel counts the bytes waiting in its buffers).
    static func embedded(stallLimit: TimeAmount) throws -> (EmbeddedEventLoop, EmbeddedChannel, CallerDepartureHandler) {
        let loop = EmbeddedEventLoop()
        let handler = CallerDepartureHandler(stallLimit: stallLimit)
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([BodyBytes(), handler])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (loop, channel, handler)
    }

    static func writable(_ value: Bool, _ channel: EmbeddedChannel) {
        channel.isWritable = value
        channel.pipeline.fireChannelWritabilityChanged()
    }

    /// Writes an answer's body as its bytes (and nothing for its head and end).
    final class BodyBytes: ChannelOutboundHandler, RemovableChannelHandler {
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = ByteBuffer

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .body(let piece) = unwrapOutboundIn(data) {
                context.write(wrapOutboundOut(piece), promise: promise)
            } else {
                promise?.succeed()
            }
        }
    }
}
