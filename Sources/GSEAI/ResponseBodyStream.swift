import AsyncHTTPClient
import NIOCore

/// A response body as it arrives, piece by piece, with a limit on the silence between pieces.
///
/// AsyncHTTPClient's request deadline ends at the response head; a stream can then go quiet forever.
/// Each `next()` here fails with ``GSEAIError/timeout(_:)`` (`.idle`) when nothing arrives in time, and
/// abandoning the iteration (or cancelling the task) cancels the upstream request.
public struct ResponseBodyStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    private let body: HTTPClientResponse.Body
    private let idleTimeout: Duration

    init(body: HTTPClientResponse.Body, idleTimeout: Duration) {
        self.body = body
        self.idleTimeout = idleTimeout
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(upstream: body.makeAsyncIterator(), idleTimeout: idleTimeout)
    }

    /// Reads the whole body, failing when it exceeds `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        for try await var piece in self {
            guard collected.readableBytes + piece.readableBytes <= limit else {
                throw GSEAIError.responseTooLarge(limit: limit)
            }
            collected.writeBuffer(&piece)
        }
        return collected
    }

    /// The iterator; one task at a time may use it.
    public struct AsyncIterator: AsyncIteratorProtocol {
        private let box: Box
        private let idleTimeout: Duration

        fileprivate init(upstream: HTTPClientResponse.Body.AsyncIterator, idleTimeout: Duration) {
            self.box = Box(upstream)
            self.idleTimeout = idleTimeout
        }

        public mutating func next() async throws -> ByteBuffer? {
            let box = self.box
            do {
                return try await withTimeout(idleTimeout, phase: .idle) {
                    try await box.next()
                }
            } catch let error as GSEAIError {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // The connection broke after the head: the body is incomplete.
                throw GSEAIError.streamInterrupted
            }
        }
    }

    /// Holds the upstream iterator so that the racing child task can advance it. Only one `next()`
    /// runs at a time (the caller awaits it), which is what makes the unchecked conformance sound.
    private final class Box: @unchecked Sendable {
        var iterator: HTTPClientResponse.Body.AsyncIterator
        init(_ iterator: HTTPClientResponse.Body.AsyncIterator) { self.iterator = iterator }
        func next() async throws -> ByteBuffer? { try await iterator.next() }
    }
}

/// Runs `operation`, failing with ``GSEAIError/timeout(_:)`` if it takes longer than `limit`; the
/// operation is cancelled when the time runs out.
func withTimeout<T: Sendable>(
    _ limit: Duration,
    phase: TimeoutPhase,
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw GSEAIError.timeout(phase)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw CancellationError() }
        return first
    }
}
