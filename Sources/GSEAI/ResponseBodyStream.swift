import AsyncHTTPClient
import NIOCore
import Synchronization

/// A response body as it arrives, piece by piece, with a limit on the silence between two pieces.
///
/// AsyncHTTPClient has one read timeout per connection, which would also bound the wait for the response
/// head; the client's is long enough for the first-byte limit, and the idle limit is checked here instead:
/// the body is read by a task of its own, and a timer of the event loop (a few checks per idle period, no
/// task or timer per piece) cancels that read when the silence has lasted too long, which shows as
/// ``GSEAIError/timeout(_:)`` (`.idle`). Abandoning the iteration, or cancelling the task that iterates,
/// cancels the upstream request.
public struct ResponseBodyStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    private enum Source: Sendable {
        case asyncHTTPClient(body: HTTPClientResponse.Body, idle: Duration, eventLoop: any EventLoop, executor: (any TaskExecutor)?)
        case exchange(ExchangeHandle)
    }

    private let source: Source

    init(body: HTTPClientResponse.Body, idle: Duration, eventLoop: any EventLoop, executor: (any TaskExecutor)? = nil) {
        source = .asyncHTTPClient(body: body, idle: idle, eventLoop: eventLoop, executor: executor)
    }

    /// The body of an exchange of the NIO transport (which keeps the time limits itself).
    init(exchange: UpstreamExchange) {
        source = .exchange(ExchangeHandle(exchange))
    }

    /// The NIO transport's exchange behind it, if that is where it comes from.
    var exchange: UpstreamExchange? {
        if case .exchange(let handle) = source { return handle.exchange }
        return nil
    }

    /// The reader needs no more of it (a stream's final event came): what still comes is dropped until the
    /// body ends (at most a second), so that the connection carries the reader's next request. (With
    /// AsyncHTTPClient, the body is let go as before.)
    func discardRest() async {
        await exchange?.discardRest(within: .seconds(1))
    }

    /// Whether ``cancel()`` can stop this body from outside the task that reads it (the NIO transport's can;
    /// AsyncHTTPClient's is stopped by cancelling that task).
    public var cancelsFromOutside: Bool { exchange != nil }

    /// Stops the body from any thread, as a reader who leaves does: the upstream connection is closed and the
    /// reader's ``AsyncIterator/next()`` throws `CancellationError`. Does nothing when ``cancelsFromOutside``
    /// is false.
    public func cancel() {
        exchange?.cancel()
    }

    /// Hands the body to `consumer` as it arrives (on the upstream connection's event loop), instead of
    /// iterating: a relay that writes each piece where it goes, with no task woken per piece. Only the NIO
    /// transport's bodies can (`false` for AsyncHTTPClient's, which are then iterated). Not with an iterator.
    public func push(to consumer: any ResponseBodyConsumer) -> Bool {
        guard let exchange else { return false }
        exchange.push(to: consumer)
        return true
    }

    /// Reads start again for a consumer that wanted no more for a while (``ResponseBodyConsumer/wantsMore``).
    public func resumeReads() {
        exchange?.resumeReads()
    }

    public func makeAsyncIterator() -> AsyncIterator {
        switch source {
        case .asyncHTTPClient(let body, let idle, let eventLoop, let executor):
            AsyncIterator(reader: .asyncHTTPClient(ReaderHandle(BodyReader(body: body, idle: idle, eventLoop: eventLoop, executor: executor))))
        case .exchange(let handle):
            AsyncIterator(reader: .exchange(handle))
        }
    }

    /// Reads the whole body, failing when it exceeds `limit` bytes.
    nonisolated(nonsending) public func collect(upTo limit: Int) async throws -> ByteBuffer {
        // An exchange gathers it where it arrives, and hands it over once.
        if case .exchange(let handle) = source { return try await handle.exchange.collect(upTo: limit) }
        var collected = ByteBuffer()
        for try await var piece in self {
            guard collected.readableBytes + piece.readableBytes <= limit else {
                throw GSEAIError.responseTooLarge(limit: limit)
            }
            collected.writeBuffer(&piece)
        }
        return collected
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        fileprivate enum Reader {
            case asyncHTTPClient(ReaderHandle)
            case exchange(ExchangeHandle)
        }

        fileprivate let reader: Reader

        public mutating func next() async throws -> ByteBuffer? {
            switch reader {
            case .asyncHTTPClient(let handle): try await handle.reader.next()
            case .exchange(let handle): try await handle.exchange.next()
            }
        }
    }
}

/// The hold of a body (and its iterators) on an exchange: a body let go before its end stops the exchange
/// and closes its connection (a no-op once the answer is complete).
private final class ExchangeHandle: Sendable {
    let exchange: UpstreamExchange

    init(_ exchange: UpstreamExchange) {
        self.exchange = exchange
    }

    deinit {
        exchange.cancel()
    }
}

/// The consumer's hold on a reader: when the iterator is let go (a `break` out of the loop), the read and
/// the upstream request stop. (The reading task holds the reader itself, so the reader's own lifetime
/// cannot tell.)
private final class ReaderHandle: Sendable {
    let reader: BodyReader

    init(_ reader: BodyReader) {
        self.reader = reader
    }

    deinit {
        reader.stop()
    }
}

/// Reads one body in a task of its own, one piece per request of the consumer (so the upstream's pace is
/// the consumer's, as before), and stops it when a piece is awaited longer than the idle limit.
private final class BodyReader: Sendable {
    private enum Phase {
        /// Not started: the reading task starts with the first request.
        case idle
        /// The task waits for the consumer to ask for a piece.
        case waitingForDemand(CheckedContinuation<Bool, Never>?)
        /// A piece is being read since `since`, for the consumer's continuation.
        case reading(since: NIODeadline)
        case finished
    }

    private struct State {
        var phase = Phase.idle
        /// The consumer waiting for the piece being read.
        var consumer: CheckedContinuation<ByteBuffer?, any Error>?
        /// Whether the consumer asked before the task was ready to read.
        var demanded = false
        /// Set by the timer when it stopped a read for silence.
        var timedOut = false
        /// How the body ended, for the consumer's later requests.
        var ending: Result<ByteBuffer?, any Error>?
        var task: Task<Void, Never>?
        var timer: RepeatedTask?
    }

    private let body: HTTPClientResponse.Body
    private let idle: Duration
    private let eventLoop: any EventLoop
    private let executor: (any TaskExecutor)?
    private let state = Mutex(State())

    init(body: HTTPClientResponse.Body, idle: Duration, eventLoop: any EventLoop, executor: (any TaskExecutor)?) {
        self.body = body
        self.idle = idle
        self.eventLoop = eventLoop
        self.executor = executor
    }

    func next() async throws -> ByteBuffer? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (consumer: CheckedContinuation<ByteBuffer?, any Error>) in
                var start = false
                var resumeReader: CheckedContinuation<Bool, Never>?
                let ended: Result<ByteBuffer?, any Error>? = state.withLock { state in
                    if let ending = state.ending { return ending }
                    state.consumer = consumer
                    switch state.phase {
                    case .idle:
                        start = true
                        state.phase = .reading(since: .now())
                    case .waitingForDemand(let waiting?):
                        resumeReader = waiting
                        state.phase = .reading(since: .now())
                    case .waitingForDemand(nil), .reading:
                        state.demanded = true
                    case .finished:
                        break
                    }
                    return nil
                }
                if let ended { return consumer.resume(with: ended) }
                if start { self.start() }
                resumeReader?.resume(returning: true)
            }
        } onCancel: {
            self.stop()
        }
    }

    /// Starts the reading task and the idle timer.
    private func start() {
        let period = TimeAmount(max(idle / 4, .milliseconds(10)))
        let limit = TimeAmount(idle)
        let timer = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [weak self] _ in
            self?.checkSilence(limit: limit)
        }
        let task = Task(executorPreference: executor) { [body] in
            var iterator = body.makeAsyncIterator()
            while true {
                let piece: Result<ByteBuffer?, any Error>
                do {
                    piece = .success(try await iterator.next())
                } catch {
                    piece = .failure(error)
                }
                guard await self.deliver(piece) else { return }
            }
        }
        state.withLock { state in
            state.task = task
            state.timer = timer
            // Stopped before it started (cancelled at once).
            if case .finished = state.phase { task.cancel(); timer.cancel() }
        }
    }

    /// Hands a piece to the consumer, then waits for their next request; `false` when reading is over.
    private func deliver(_ piece: Result<ByteBuffer?, any Error>) async -> Bool {
        let translated = piece.mapError { error in self.translate(error) }
        let (consumer, more): (CheckedContinuation<ByteBuffer?, any Error>?, Bool) = state.withLock { state in
            let consumer = state.consumer
            state.consumer = nil
            switch translated {
            case .success(.some):
                state.phase = .waitingForDemand(nil)
                return (consumer, true)
            default:
                state.ending = translated
                state.phase = .finished
                state.timer?.cancel()
                return (consumer, false)
            }
        }
        consumer?.resume(with: translated)
        guard more else { return false }
        return await withCheckedContinuation { (waiting: CheckedContinuation<Bool, Never>) in
            let go: Bool? = state.withLock { state in
                if case .finished = state.phase { return false }
                if state.demanded {
                    state.demanded = false
                    state.phase = .reading(since: .now())
                    return true
                }
                state.phase = .waitingForDemand(waiting)
                return nil
            }
            if let go { waiting.resume(returning: go) }
        }
    }

    /// Called by the timer: stops a read that has waited longer than the idle limit.
    private func checkSilence(limit: TimeAmount) {
        let task: Task<Void, Never>? = state.withLock { state in
            guard case .reading(let since) = state.phase, NIODeadline.now() - since > limit else { return nil }
            state.timedOut = true
            return state.task
        }
        task?.cancel()
    }

    /// The consumer gave up: the read stops, and so does the upstream request.
    func stop() {
        let (consumer, reader, task): (CheckedContinuation<ByteBuffer?, any Error>?, CheckedContinuation<Bool, Never>?, Task<Void, Never>?) =
            state.withLock { state in
                let consumer = state.consumer
                state.consumer = nil
                var reader: CheckedContinuation<Bool, Never>?
                if case .waitingForDemand(let waiting) = state.phase { reader = waiting }
                if state.ending == nil { state.ending = .failure(CancellationError()) }
                state.phase = .finished
                state.timer?.cancel()
                return (consumer, reader, state.task)
            }
        task?.cancel()
        reader?.resume(returning: false)
        consumer?.resume(throwing: CancellationError())
    }

    private func translate(_ error: any Error) -> any Error {
        if state.withLock({ $0.timedOut }) { return GSEAIError.timeout(.idle) }
        switch error {
        case let error as HTTPClientError where error == .readTimeout: return GSEAIError.timeout(.idle)
        case is CancellationError: return CancellationError()
        // The connection broke after the head: the body is incomplete.
        default: return GSEAIError.streamInterrupted
        }
    }
}
