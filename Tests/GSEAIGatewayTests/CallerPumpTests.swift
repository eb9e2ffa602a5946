import Foundation
import GSEAI
@testable import GSEAIGateway
import GSEAITestSupport
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Synchronization
import Testing

/// The relay that writes a stream's pieces from the upstream connection straight to the caller's
/// (``CallerPump``), on real sockets: a caller who reads nothing stops the upstream reads, and then gets every
/// byte, the final event held until the usage is recorded.
@Suite("The caller pump")
struct CallerPumpTests {
    @Test(.timeLimit(.minutes(1)))
    func aCallerWhoReadsNothingStopsTheUpstreamReadsThenGetsEveryByteAfterTheRecord() async throws {
        let events = 256, size = 64 << 10
        try await RawHTTPServer.with(answer: { _ in .events(count: events, size: size) }) { upstream in
            let client = try GSEAIClient(apiToken: "t", baseURL: upstream.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            try await SlowCaller.with { caller, served in
                let response = try await client.send(RawRequest(method: .POST, path: "/v1/chat/completions"))
                // With its length, so that the body is the events' bytes alone (no chunk framing).
                let length = events * ("data: \n\n".utf8.count + size) + "data: [DONE]\n\n".utf8.count
                try await served.writeAndFlush(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: [.contentLength: String(length)])))
                let endpoint = try #require(ProxyEndpoint.all.first { $0.path == "/v1/chat/completions" })
                let pump = try #require(await CallerPump.start(response.body, to: served, endpoint: endpoint))
                defer { pump.stop() }

                // The caller reads nothing: the pump stops the upstream's reads, and the final event never comes.
                let signalled = Flag()
                let first = Task {
                    let signal = await Self.describe(pump.next())
                    signalled.value.store(true, ordering: .relaxed)
                    return signal
                }
                try await Task.sleep(for: .milliseconds(700))
                let signalledEarly = signalled.value.load(ordering: .relaxed)
                #expect(!signalledEarly)

                // The caller reads: the final event comes, and is held from the caller until the record.
                caller.startReading()
                #expect(await first.value == "record")
                #expect(pump.observer.sawFinalEvent)
                try await Task.sleep(for: .milliseconds(200))
                #expect(!caller.client.received(endingWith: "data: [DONE]\n\n"))
                pump.recorded()
                #expect(await Self.describe(pump.next()) == "ended: ok")
                // Every event, whole and in order.
                let deadline = ContinuousClock.now + .seconds(30)
                while !caller.client.received(endingWith: "data: [DONE]\n\n"), ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let text = caller.received
                let body = try #require(text.range(of: "\r\n\r\n").map { text[$0.upperBound...] })
                let event = "data: " + String(repeating: "a", count: size) + "\n\n"
                #expect(body == String(repeating: event, count: events) + "data: [DONE]\n\n")
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aCallerWhoTakesNothingForTheStallLimitIsTakenToHaveLeft() async throws {
        try await RawHTTPServer.with(answer: { _ in .events(count: 256, size: 64 << 10) }) { upstream in
            let client = try GSEAIClient(apiToken: "t", baseURL: upstream.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            try await SlowCaller.with(stallLimit: .milliseconds(500)) { _, served in
                let response = try await client.send(RawRequest(method: .POST, path: "/v1/chat/completions"))
                try await served.writeAndFlush(HTTPResponsePart.head(HTTPResponse(status: .ok)))
                let endpoint = try #require(ProxyEndpoint.all.first { $0.path == "/v1/chat/completions" })
                let started = ContinuousClock.now
                let pump = try #require(await CallerPump.start(response.body, to: served, endpoint: endpoint))
                defer { pump.stop() }
                // The caller never reads: after the stall limit its connection is closed (the departure handler),
                // and the upstream request cancelled (the relay's watch of the caller, as `StreamRelay` runs it).
                let signal = try await GatewayRequestContext.stoppingIfCallerLeaves(served, stop: { response.body.cancel() }) {
                    await pump.next()
                }
                #expect(Self.describe(signal) == "ended: CancellationError()")
                #expect(ContinuousClock.now - started >= .milliseconds(500))
                try await served.closeFuture.get()
                #expect(!served.isActive)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aBusyCallerLoopStopsTheUpstreamReadsAtTheHighWaterMark() async throws {
        // The caller's connection on a loop of its own, never the upstream connection's: what the upstream reads
        // waits in that loop's queue, and only up to the high-water mark (plus one read cycle).
        let callerLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { callerLoops.shutdownGracefully { _ in } }
        let events = 256, size = 64 << 10
        try await RawHTTPServer.with(answer: { _ in .events(count: events, size: size) }) { upstream in
            let client = try GSEAIClient(apiToken: "t", baseURL: upstream.baseURL, engine: .nio)
            defer { Task { try await client.shutdown() } }
            // With room for the whole answer in the caller connection's buffer: its writability never stops the
            // upstream here (it would be told on the busy loop), only the bytes on their way do.
            try await SlowCaller.with(group: callerLoops, highWater: 64 << 20) { caller, served in
                let response = try await client.send(RawRequest(method: .POST, path: "/v1/chat/completions"))
                try await served.writeAndFlush(HTTPResponsePart.head(HTTPResponse(status: .ok)))
                let endpoint = try #require(ProxyEndpoint.all.first { $0.path == "/v1/chat/completions" })
                // The caller reads (its connection never stops the upstream), but its loop is kept busy from the
                // moment the pump is attached: nothing it is handed is taken meanwhile. (Attached on the caller's
                // loop, in the job that then blocks it: blocked any later, the whole answer could have gone by.)
                caller.startReading()
                let busy = DispatchSemaphore(value: 0)
                let body = response.body
                let attached = await Task(executorPreference: EventLoopTaskExecutor.of(served.eventLoop)) {
                    let pump = await CallerPump.start(body, to: served, endpoint: endpoint)
                    if pump != nil { served.eventLoop.execute { busy.wait() } }
                    return pump
                }.value
                let pump = try #require(attached)
                defer { pump.stop() }
                let deadline = ContinuousClock.now + .seconds(20)
                while pump.bytesOnTheirWay == 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                // Time for the upstream to send all it would if nothing stopped its reads.
                try await Task.sleep(for: .seconds(1))
                let waiting = pump.bytesOnTheirWay
                busy.signal()
                #expect(waiting > 0)
                // The high-water mark and at most one read cycle (four reads of 64 KiB).
                #expect(waiting <= CallerPump.highWater + (256 << 10))
                // Then everything comes.
                #expect(Self.describe(await pump.next()) == "record")
                pump.recorded()
                #expect(Self.describe(await pump.next()) == "ended: ok")
                #expect(pump.bytesOnTheirWay == 0)
            }
        }
    }

    static func describe(_ signal: CallerPump.Signal) -> String {
        switch signal {
        case .record: "record"
        case .ended(.success): "ended: ok"
        case .ended(.failure(let error)): "ended: \(error)"
        }
    }
}

final class Flag: Sendable {
    let value = Atomic(false)
}

/// A caller's connection as the gateway's server sets it up (HTTP/1 codec, HTTP types, the departure handler),
/// with small buffers, and a client at its other end that reads nothing until told.
final class SlowCaller: Sendable {
    let client: RawHTTPClient

    private init(client: RawHTTPClient) {
        self.client = client
    }

    /// What the caller has received.
    var received: String { client.text }

    func startReading() {
        client.startReading()
    }

    static func with(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, highWater: Int = 64 << 10,
                     stallLimit: TimeAmount = CallerDepartureHandler.defaultStallLimit,
                     _ body: (SlowCaller, any Channel) async throws -> Void) async throws {
        let accepted = group.any().makePromise(of: (any Channel).self)
        let server = try await ServerBootstrap(group: group)
            .childChannelOption(.socketOption(.so_sndbuf), value: 16 << 10)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: min(16 << 10, highWater / 2), high: highWater))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false)
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try channel.pipeline.syncOperations.addHandler(CallerDepartureHandler(stallLimit: stallLimit))
                    accepted.succeed(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await RawHTTPClient.connect(to: try #require(server.localAddress), group: group, receiveBuffer: 16 << 10,
                                                     reading: false)
        let caller = SlowCaller(client: client)
        let served = try await accepted.futureResult.get()
        do {
            try await body(caller, served)
        } catch {
            await client.close()
            try? await server.close()
            throw error
        }
        await client.close()
        try await server.close()
    }
}
