import Hummingbird
import HummingbirdCore
import Logging
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

/// HTTP/1 connections whose handling (and every child task of it) prefers the connection's event loop.
struct EventLoopPreferringHTTP1: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // A channel keeps its last read's buffer for the next: reads start at 512 bytes instead of 2 KiB
        // (a request's head and a short body fit; the size doubles as reads fill it), which a stream's
        // connection keeps while it is open.
        try? channel.syncOptions?.setOption(.recvAllocator, value: Self.reads)
        return inner.setup(channel: channel, logger: logger)
    }

    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 1 << 16)

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor.of(value.channel.eventLoop)) {
            await inner.handle(value: value, logger: logger)
        }
    }
}
