import Hummingbird
import HummingbirdCore
import Logging
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOCore
import Synchronization

/// A task executor that runs jobs on one NIO event loop (swift-nio 2.101 has none of its own).
///
/// A connection's handler that prefers its own event loop reads the request, calls the upstream client
/// (whose connection is on an event loop too) and writes the answer without a hop to Swift's global pool
/// and back at each step: one connection's answer comes 0.1–0.2 ms sooner (`bench/README.md`, `hb-proxy-el`).
/// Blocking work stays off the loops: bcrypt and SQLite run on NIO's thread pool.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// One executor per event loop, made on first use and kept.
    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// The executor of `eventLoop`.
    static func of(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let known = executors[ObjectIdentifier(eventLoop)] { return known }
            let made = EventLoopTaskExecutor(eventLoop)
            executors[ObjectIdentifier(eventLoop)] = made
            return made
        }
    }
}

/// The gateway's HTTP/1 connections: as Hummingbird's pipeline (HTTP/1 codec, connection state), but with the gateway's
/// own codec (``GatewayHTTP1Codec``, which keeps the connection's state too), the gateway's handlers after it
/// (``CallerDepartureHandler``, ``ForwardingLane``), and Hummingbird's handling (its
/// `NIOAsyncChannel`, made by the lane) only for a connection whose requests need it. Every handling, and every
/// child task of it, prefers the connection's event loop.
struct GatewayHTTP1: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// Hummingbird's async channel once a request needed it; `nil` when the connection closed without one.
        let hummingbird: EventLoopFuture<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>
        let lane: ForwardingLane.Handle
    }

    /// Hummingbird's HTTP/1 handling (its responder and configuration), for the requests it handles.
    let inner: HTTP1Channel
    let lane: ForwardingLane.Service
    /// How long a connection may take nothing of an answer before it is closed (``CallerDepartureHandler``).
    var stallLimit = CallerDepartureHandler.defaultStallLimit

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // A channel keeps its last read's buffer for the next: reads start at 512 bytes instead of 2 KiB
        // (a request's head and a short body fit; the size doubles as reads fill it), which a stream's
        // connection keeps while it is open.
        try? channel.syncOptions?.setOption(.recvAllocator, value: Self.reads)
        return channel.eventLoop.makeCompletedFuture {
            // As `HTTP1Channel.setup`, but for the async channel, which the lane makes when it is needed.
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = inner.configuration.httpDecoder.maxHeaderFieldSize
            limits.maxHeaderListSize = inner.configuration.httpDecoder.maxHeaderListSize
            limits.maxHeaderFieldCount = inner.configuration.httpDecoder.maxHeaderFieldCount
            let pipeline = channel.pipeline.syncOperations
            // SwiftNIO's request decoder and the gateway's codec, in place of SwiftNIO's response encoder and
            // swift-nio-extras' `HTTP1ToHTTPServerCodec` (the same bytes, written at once; the codec, not the
            // decoder, keeps the requests' methods for the answers to a HEAD or CONNECT).
            // The codec keeps the connection's state (idle limit, graceful stop) too.
            try GatewayHTTP1Codec.addHandlers(to: pipeline, limits: limits, idleTimeout: inner.configuration.idleTimeout)
            try pipeline.addHandler(CallerDepartureHandler(stallLimit: stallLimit))
            let hummingbird = channel.eventLoop.makePromise(of: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?.self)
            let forwarding = ForwardingLane(service: lane, hummingbird: hummingbird)
            try pipeline.addHandler(forwarding)
            return Value(channel: channel, hummingbird: hummingbird.futureResult,
                         lane: .init(lane: NIOLoopBound(forwarding, eventLoop: channel.eventLoop),
                                     executor: EventLoopTaskExecutor.of(channel.eventLoop), requestTask: nil))
        }
    }

    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 1 << 16)

    func handle(value: Value, logger: Logger) async {
        let channel = value.channel
        // A connection of forwarded requests only waits here, with as few frames as may be, until it closes.
        let hummingbird = await withTaskCancellationHandler {
            try? await value.hummingbird.get()
        } onCancel: {
            // The server's stop, out of time, closes the connection (its answers in progress end as their caller's
            // departure ends them).
            channel.close(promise: nil)
        }
        if let hummingbird {
            await withTaskExecutorPreference(EventLoopTaskExecutor.of(channel.eventLoop)) {
                await inner.handle(value: hummingbird, logger: logger)
            }
        }
        // The lane's answers still being written or recorded (a usage record after the caller left, say): a
        // graceful stop, which waits for this task, waits for them too.
        try? await value.lane.settled().get()
    }
}
