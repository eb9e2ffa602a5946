import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import GSEAIGateway

/// `cancellingIfCallerLeaves` and `stoppingIfCallerLeaves` over a real loopback connection whose server side
/// carries the gateway's `CallerDepartureHandler`: the work of a caller who leaves is cancelled (or stopped),
/// whether they leave while it runs or before it is watched, and a request that ends leaves nothing watching
/// on its keep-alive connection.
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
}
