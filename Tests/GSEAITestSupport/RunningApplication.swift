import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// A Hummingbird application running in the background on a port of its own, for tests.
public final class RunningApplication: Sendable {
    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let task: Task<Void, any Error>
    private let group: ServiceGroup

    private init(port: Int, task: Task<Void, any Error>, group: ServiceGroup) {
        self.port = port
        self.task = task
        self.group = group
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
        var configuration = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [], logger: logger)
        // As `gseai serve` does, with shorter limits: a graceful stop that does not end becomes a cancellation,
        // and a cancellation that does not end a crash that names itself, instead of a test run that hangs.
        configuration.maximumGracefulShutdownDuration = Self.gracefulStopLimit
        configuration.maximumCancellationDuration = .seconds(15)
        let group = ServiceGroup(configuration: configuration)
        let task = Task {
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
        return RunningApplication(port: port, task: task, group: group)
    }

    /// Stops the application as a SIGTERM stops the gateway, and waits for it to finish: a graceful shutdown,
    /// which stops its services one after another in the order the application gives (cancelling the task
    /// instead would stop them all at once, in no order).
    public func stop() async {
        let started = ContinuousClock.now
        await group.triggerGracefulShutdown()
        _ = await task.result
        if ContinuousClock.now - started >= Self.gracefulStopLimit {
            // Not a failure of the test that stopped it (it may be any), but never silent.
            FileHandle.standardError.write(Data("RunningApplication: the graceful stop did not end in \(Self.gracefulStopLimit); its services were cancelled\n".utf8))
        }
    }

    /// How long a graceful stop may take before the services are cancelled.
    static let gracefulStopLimit = Duration.seconds(20)

    /// Stops the application at once, as a crash would, cancelling what it is doing (a fake server's answers
    /// that hang on purpose), and waits for it to finish.
    public func kill() async {
        task.cancel()
        _ = await task.result
    }

    struct DidNotStart: Error {}
}
