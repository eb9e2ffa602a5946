import Logging
import NIOCore
import SQLKit
import Synchronization

/// An ``SQLDatabase`` over one connection that lets one statement, or one session, run at a time, and
/// runs every statement it starts to the end.
///
/// A single SQLite connection has a single transaction state: a `BEGIN` issued by one task would silently
/// take in the statements of every other task until its `COMMIT`. Funnelling everything through one gate,
/// and holding the gate for the whole of ``withSession(_:)``, keeps a transaction to the statements of the
/// task that opened it. Single statements pay only an uncontended lock; SQLite serialises them anyway.
///
/// Task cancellation does not stop a statement. sqlite-nio's async API drops work queued by a cancelled
/// task, which would lose the usage of a request whose client has just left, and, worse, could skip the
/// `COMMIT` or `ROLLBACK` of a transaction and leave the shared connection inside it. Statements are short,
/// so they go through the `EventLoopFuture` API, which always runs them.
///
/// Inside ``withSession(_:)`` use only the database passed to the closure: going through this one again
/// would wait for the gate the session already holds.
struct SerialSQLDatabase: SQLDatabase {
    /// The connection, without the gate.
    private let session: UncancellableSQLDatabase
    private let gate = AsyncGate()

    init(_ base: any SQLDatabase) {
        self.session = UncancellableSQLDatabase(base: base)
    }

    var logger: Logger { self.session.logger }
    var eventLoop: any EventLoop { self.session.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { self.session.version }
    var dialect: any SQLDialect { self.session.dialect }
    var queryLogLevel: Logger.Level? { self.session.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void)
        -> EventLoopFuture<Void>
    {
        self.eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try await self.gate.withLock { try await self.session.execute(sql: query, onRow) }
    }

    func withSession<R>(_ closure: @escaping @Sendable @concurrent (any SQLDatabase) async throws -> R) async throws -> R {
        try await self.gate.withLock { try await closure(self.session) }
    }
}

/// Forwards to a database, running each statement through its `EventLoopFuture` API so that the calling
/// task's cancellation cannot drop it.
private struct UncancellableSQLDatabase: SQLDatabase {
    let base: any SQLDatabase

    var logger: Logger { self.base.logger }
    var eventLoop: any EventLoop { self.base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { self.base.version }
    var dialect: any SQLDialect { self.base.dialect }
    var queryLogLevel: Logger.Level? { self.base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void)
        -> EventLoopFuture<Void>
    {
        self.base.execute(sql: query, onRow)
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        let done: EventLoopFuture<Void> = self.base.execute(sql: query, onRow)
        try await done.get()
    }
}

/// A first-come, first-served lock that suspends waiters instead of blocking their threads.
final class AsyncGate: Sendable {
    private struct State {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Runs `body` while holding the gate; the gate is released however `body` ends.
    func withLock<R>(_ body: () async throws -> R) async rethrows -> R {
        await self.acquire()
        defer { self.release() }
        return try await body()
    }

    private func acquire() async {
        let free = self.state.withLock { state in
            if state.held { return false }
            state.held = true
            return true
        }
        if free { return }
        await withCheckedContinuation { continuation in
            // The holder may have left between the two checks; re-check under the same lock as the enqueue.
            let resumeNow = self.state.withLock { state in
                if state.held {
                    state.waiters.append(continuation)
                    return false
                }
                state.held = true
                return true
            }
            if resumeNow { continuation.resume() }
        }
    }

    private func release() {
        // Ownership passes straight to the next waiter, so `held` stays true and nobody can barge in.
        let next: CheckedContinuation<Void, Never>? = self.state.withLock { state in
            if state.waiters.isEmpty {
                state.held = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
