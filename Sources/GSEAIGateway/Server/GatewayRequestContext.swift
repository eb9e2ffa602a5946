import Hummingbird
import NIOCore
import Synchronization

/// Who is making a request, and how they proved it.
public struct Identity: Sendable {
    /// How the caller authenticated.
    public enum Credential: Sendable {
        /// A browser session cookie (unsafe requests also need the CSRF token).
        case session(LoginSession)
        /// A personal API key.
        case apiKey(APIKey)
    }

    /// The user.
    public var user: User
    /// The credential used.
    public var credential: Credential
}

/// The per-request facts: the caller's identity and address. Nothing else lives here.
public struct GatewayRequestContext: RequestContext, RemoteAddressProviding {
    public var coreContext: CoreRequestContextStorage
    /// Set by ``AuthenticationMiddleware`` when the request carries a valid credential.
    public var identity: Identity? {
        get { identityStorage?.identity }
        set { identityStorage = newValue.map(IdentityStorage.init) }
    }
    /// The identity behind one reference: every middleware and handler frame holds a copy of the context, and
    /// the identity inline (the user's and the credential's strings, a dozen references) made each copy retain
    /// and release them all (bench/README.md, "The request context").
    private var identityStorage: IdentityStorage?
    /// The peer's address (no port).
    public let remoteAddress: String?
    /// The connection, to notice a caller who leaves while the upstream works.
    let channel: (any Channel)?
    /// The request's body as the forwarding lane read it, whole (``ForwardingLane``): taken by
    /// ``RequestBodies/collect(_:context:upTo:)`` as it is, without reading the request's body sequence again
    /// (which, through Hummingbird's asynchronous sequence, cost about 5,000 instructions a request). `nil` on
    /// Hummingbird's lane.
    var readBody: ByteBuffer?

    /// The connection's event loop as a task executor: what the request's own tasks prefer (its answer's body is
    /// read and written there).
    let executor: EventLoopTaskExecutor
    /// The task that answers the request and nothing else, when the forwarding lane made one for it: what
    /// ``cancellingRequestIfCallerLeaves(_:)`` cancels. `nil` on Hummingbird's lane.
    var requestTask: RequestTask?

    public init(source: ApplicationRequestContextSource) {
        self.init(source: source, remoteAddress: source.channel.remoteAddress?.ipAddress,
                  executor: EventLoopTaskExecutor.of(source.channel.eventLoop))
    }

    /// With the caller's address and the executor of the connection's loop already known (the forwarding lane's,
    /// found once per connection: the address's text alone costs about 3,000 instructions).
    init(source: ApplicationRequestContextSource, remoteAddress: String?, executor: EventLoopTaskExecutor) {
        coreContext = .init(source: source)
        self.remoteAddress = remoteAddress
        channel = source.channel
        self.executor = executor
    }

    /// Runs `operation`, cancelling it when the caller's connection closes (told by the connection's
    /// ``CallerDepartureHandler``): upstream work is not done for someone who has gone.
    public func cancellingIfCallerLeaves<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Self.cancellingIfCallerLeaves(channel, executor: executor, operation)
    }

    /// ``cancellingIfCallerLeaves(_:)`` for the caller of `channel`: for a closure that keeps the connection,
    /// not the whole context (a stream's body keeps its closure's frame while it is open).
    static func cancellingIfCallerLeaves<T: Sendable>(_ channel: (any Channel)?, executor: EventLoopTaskExecutor? = nil,
                                                      _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        guard let channel else { return try await operation() }
        // On the connection's event loop, as the handler (an unstructured task does not inherit that).
        let task = Task(executorPreference: executor ?? EventLoopTaskExecutor.of(channel.eventLoop)) { try await operation() }
        let watching = Self.watchDeparture(of: channel) { task.cancel() }
        defer { Self.unwatch(watching, on: channel) }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }

    /// ``cancellingIfCallerLeaves(_:)`` for work that the request's own task does (``requestTask``; called from that
    /// task only): the task itself is cancelled if the caller leaves while `operation` runs, without a task made for
    /// `operation` (its creation, its start and its end cost about 6,000 instructions; `bench/README.md`,
    /// "Futures, strings hashed and layers"). A cancellation that comes as `operation` ends leaves the task
    /// cancelled: what follows must not depend on it (``ProxyController`` records an answer's usage in a task of its
    /// own then). Without a request task, as ``cancellingIfCallerLeaves(_:)``.
    func cancellingRequestIfCallerLeaves<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        guard let requestTask, let channel else { return try await cancellingIfCallerLeaves(operation) }
        let watching = Self.watchDeparture(of: channel) { requestTask.cancel() }
        defer { Self.unwatch(watching, on: channel) }
        return try await operation()
    }

    /// Runs `operation` in this task, calling `stop` when the caller's connection closes: for work that
    /// `stop` ends from outside (an upstream body closed makes its reader throw), without the task of its own
    /// that ``cancellingIfCallerLeaves(_:)`` needs to cancel; a stream keeps that task's memory while it is open.
    public func stoppingIfCallerLeaves<T>(stop: @escaping @Sendable () -> Void, _ operation: () async throws -> T) async throws -> T {
        try await Self.stoppingIfCallerLeaves(channel, stop: stop, operation)
    }

    /// ``stoppingIfCallerLeaves(stop:_:)`` for the caller of `channel`.
    static func stoppingIfCallerLeaves<T>(_ channel: (any Channel)?, stop: @escaping @Sendable () -> Void,
                                          _ operation: () async throws -> T) async throws -> T {
        guard let channel else { return try await operation() }
        let watching = Self.watchDeparture(of: channel, then: stop)
        defer { Self.unwatch(watching, on: channel) }
        return try await operation()
    }

    /// A request's watch of its caller's departure: registered with the connection's ``CallerDepartureHandler``
    /// (by its number there), still to be registered (made off the connection's loop), or none.
    private enum DepartureWatch: Sendable {
        case none
        case registered(Int, NIOLoopBound<CallerDepartureHandler>)
        case pending(EventLoopFuture<(Int, NIOLoopBound<CallerDepartureHandler>)?>)
    }

    /// Has the connection's ``CallerDepartureHandler`` call `leave` when the caller leaves (at once when it
    /// has); on the connection's loop, at once when this runs there (the usual case: no future made), else by a hop.
    private static func watchDeparture(of channel: any Channel, then leave: @escaping @Sendable () -> Void) -> DepartureWatch {
        let register: @Sendable () -> (Int, NIOLoopBound<CallerDepartureHandler>)? = {
            // A caller gone before this runs (its connection closed, its pipeline taken down) is not told again.
            guard channel.isActive else {
                leave()
                return nil
            }
            // Not a connection of the gateway's server (tests): nothing tells, nothing is stopped.
            guard let handler = try? channel.pipeline.syncOperations.handler(type: CallerDepartureHandler.self),
                let id = handler.watch(leave)
            else { return nil }
            return (id, NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }
        let loop = channel.eventLoop
        guard loop.inEventLoop else { return .pending(loop.submit(register)) }
        guard let (id, handler) = register() else { return .none }
        return .registered(id, handler)
    }

    /// Ends the watch (with the handler it was registered with: no second search of the pipeline).
    private static func unwatch(_ watching: DepartureWatch, on channel: any Channel) {
        switch watching {
        case .none:
            break
        case .registered(let id, let handler):
            let loop = handler.eventLoop
            if loop.inEventLoop { handler.value.unwatch(id) } else { loop.execute { handler.value.unwatch(id) } }
        case .pending(let future):
            future.whenSuccess { registered in
                guard let (id, handler) = registered else { return }
                handler.value.unwatch(id)
            }
        }
    }

    /// The identity, or a 401 in the caller's API format.
    public func requireIdentity() throws -> Identity {
        guard let identity else { throw GatewayError.unauthenticated }
        return identity
    }

    /// The identity of a user with at least `role`, or 401/403.
    public func require(_ role: Role) throws -> Identity {
        let identity = try requireIdentity()
        guard identity.user.role >= role else {
            throw GatewayError(.forbidden, type: .permission, "this needs the \(role.rawValue) role")
        }
        return identity
    }
}

/// An identity, once set never changed (setting another makes another).
private final class IdentityStorage: Sendable {
    let identity: Identity

    init(_ identity: Identity) {
        self.identity = identity
    }
}

/// The task that answers one request of the forwarding lane, once it has been made: a handle its context holds, to
/// cancel it when the caller leaves (``GatewayRequestContext/cancellingRequestIfCallerLeaves(_:)``).
final class RequestTask: Sendable {
    private let task = Mutex<Task<Void, Never>?>(nil)

    init() {}

    /// Set by whoever made the task, right after.
    func set(_ task: Task<Void, Never>) {
        self.task.withLock { $0 = task }
    }

    func cancel() {
        task.withLock { $0 }?.cancel()
    }

    /// Lets the task go, once nothing is to cancel it any more.
    func clear() {
        task.withLock { $0 = nil }
    }
}
