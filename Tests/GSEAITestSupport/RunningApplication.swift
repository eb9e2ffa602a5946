import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// A Hummingbird application running in the background on a port of its own, for tests.
public final class RunningApplication: Sendable {
    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let task: Task<Void, any Error>

    private init(port: Int, task: Task<Void, any Error>) {
        self.port = port
        self.task = task
    }

    /// The base URL, such as `http://127.0.0.1:50123`.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Builds the application with `build` (which must pass `onServerRunning` on to it), runs it, and
    /// returns once it accepts connections.
    public static func start<App: ApplicationProtocol>(
        logger: Logger = Logger(label: "test-app", factory: { _ in SwiftLogNoOpLogHandler() }),
        _ build: (@escaping @Sendable (any Channel) async -> Void) throws -> App
    ) async throws -> RunningApplication {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = try build { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
            continuation.finish()
        }
        let task = Task {
            let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
            try await withTaskCancellationHandler {
                try await group.run()
            } onCancel: {
                Task { await group.triggerGracefulShutdown() }
            }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw DidNotStart()
        }
        return RunningApplication(port: port, task: task)
    }

    /// Stops the application and waits for it to finish.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }

    struct DidNotStart: Error {}
}
