import NIOCore
import NIOHTTP1
import Synchronization

/// Takes a body as it arrives, on the upstream connection's event loop, instead of a reader asking for each
/// piece (``ResponseBodyStream/push(to:)``): no task wakes per piece. It decides the pace: while ``wantsMore``
/// is false the connection reads nothing more (and the idle limit does not run), until
/// ``ResponseBodyStream/resumeReads()``.
public protocol ResponseBodyConsumer: AnyObject, Sendable {
    /// The next piece of the body.
    func received(_ piece: ByteBuffer)
    /// The pieces of one read from the socket have been handed over: the moment to flush what they made.
    func readComplete()
    /// The body ended: complete, or failed (``GSEAIError``, or `CancellationError` when it was cancelled).
    /// Called once. After every piece when the body completes or fails; a cancel from another thread can come
    /// before a piece the connection was handing over at that moment (drop what comes after the end).
    func ended(_ ending: Result<Void, any Error>)
    /// Whether to read more from the socket now; read on the upstream connection's event loop.
    var wantsMore: Bool { get }
}

/// The pieces of an answer's body that wait for its reader, in order: the first in a place of its own, the others in a
/// circular buffer made when a second one waits. A whole answer's body usually comes in the read that brings its head,
/// before its reader asks: one piece waits, and a circular buffer made for it (room for 16, its type looked up by the
/// runtime) cost about 800 instructions an exchange (bench/README.md, "Stack room for the log line, promises and
/// conversions left out").
struct PieceQueue {
    /// The first piece; `nil` only when none waits (``rest`` is then empty).
    private var first: ByteBuffer?
    private var rest: CircularBuffer<ByteBuffer>?

    var isEmpty: Bool { first == nil }

    mutating func append(_ piece: ByteBuffer) {
        guard first != nil else {
            first = piece
            return
        }
        if rest == nil { rest = CircularBuffer() }
        rest!.append(piece)
    }

    mutating func popFirst() -> ByteBuffer? {
        guard let piece = first.take() else { return nil }
        first = rest?.popFirst()
        return piece
    }
}

/// One request and its answer on one connection of the NIO transport.
///
/// The connection's handler tells it what arrives (on the connection's event loop); the sender awaits the
/// head, and the reader takes the body piece by piece, or whole (``collect(upTo:)``: gathered on the event
/// loop, one hand-over at the end). Reading from the socket stops while more than ``highWater`` bytes wait
/// for the reader, and starts again when they are taken (backpressure). It keeps the time limits: the head
/// within the first-byte limit, then no silence of the server longer than the idle limit while the reader
/// wants more. Cancelling it closes the connection, which stops the server's work.
final class UpstreamExchange: Sendable {
    /// More than this many bytes waiting for the reader stop the reads from the socket.
    static let highWater = 256 << 10
    /// Reads start again when the bytes waiting for the reader are down to this.
    static let lowWater = 64 << 10

    /// Why an exchange failed before its answer began, for the transport to decide on a second try.
    enum Failure: Error {
        /// The server closed the connection before any byte of its answer (a kept-alive connection it had just
        /// closed, typically: the request can go again on a new one).
        case closedBeforeAnswer
    }

    private struct Gathering {
        var limit: Int
        var buffer: ByteBuffer
        var continuation: CheckedContinuation<ByteBuffer, any Error>
    }

    private struct State {
        var gotHead = false
        /// The answer's head, or why there is none, once known (the first word stands).
        var headOutcome: Result<HTTPResponseHead, any Error>?
        /// Who waits for the head (``answerHead()``).
        var headWaiter: CheckedContinuation<HTTPResponseHead, any Error>?
        var pieces = PieceQueue()
        var waitingBytes = 0
        /// The reader waiting for the next piece.
        var reader: CheckedContinuation<ByteBuffer?, any Error>?
        var gathering: Gathering?
        /// How the body ended (`nil` while it goes on).
        var ending: Result<Void, any Error>?
        /// Whether reads from the socket stopped for a slow reader.
        var paused = false
        /// When the server last sent something, or the reader last asked after a pause.
        var lastActivity = NIODeadline.now()
        var timer: NIOScheduledCallback?
        /// The reader is done though the body is not: what still comes is dropped, and the connection kept.
        var discarding = false
        /// Who waits for the body's end while it is discarded.
        var endWaiter: CheckedContinuation<Void, Never>?
        /// Who takes the body as it arrives, instead of a reader.
        var consumer: (any ResponseBodyConsumer)?
        /// The body has come whole (its end read), though the reader may not have heard yet: a cancel no longer
        /// closes the connection, which may be back in the pool already.
        var complete = false
    }

    let channel: any Channel
    private let firstByte: TimeAmount
    private let idle: TimeAmount
    private let state = Mutex(State())

    init(channel: any Channel, firstByte: TimeAmount, idle: TimeAmount) {
        self.channel = channel
        self.firstByte = firstByte
        self.idle = idle
    }

    // MARK: From the connection (on its event loop)

    /// The request is on its way: the wait for the head begins.
    func started() {
        let timer = try? channel.eventLoop.scheduleCallback(in: firstByte, handler: Timer(exchange: self, kind: .firstByte))
        // Ended meanwhile (cancelled from another thread): the timer, which holds the exchange, goes at once.
        let ended: Bool = state.withLock { state in
            guard state.ending == nil else { return true }
            state.timer = timer
            return false
        }
        if ended { timer?.cancel() }
    }

    func received(_ head: HTTPResponseHead) {
        let timer: NIOScheduledCallback? = state.withLock { state in
            state.gotHead = true
            state.lastActivity = .now()
            let old = state.timer
            // The silence limit's timer is set when the read that brought the head ends with the answer still to
            // come (`readComplete()`): a whole answer read at once (the usual one) never needs it.
            state.timer = nil
            return old
        }
        timer?.cancel()
        settleHead(.success(head))
    }

    /// The answer's head, once it has come; throws why there is none (a continuation, not a promise: SwiftNIO's
    /// future, its callback and their generic metadata cost about 2,000 instructions a request).
    nonisolated(nonsending) func answerHead() async throws -> HTTPResponseHead {
        try await withCheckedThrowingContinuation { continuation in
            let known: Result<HTTPResponseHead, any Error>? = state.withLock { state in
                if let outcome = state.headOutcome { return outcome }
                state.headWaiter = continuation
                return nil
            }
            if let known { continuation.resume(with: known) }
        }
    }

    /// The head's outcome, once known (for tests).
    var settledHead: Result<HTTPResponseHead, any Error>? { state.withLock { $0.headOutcome } }

    /// Settles the head's outcome (only the first time) and tells who waits for it.
    private func settleHead(_ outcome: Result<HTTPResponseHead, any Error>) {
        let waiter: CheckedContinuation<HTTPResponseHead, any Error>? = state.withLock { state in
            guard state.headOutcome == nil else { return nil }
            state.headOutcome = outcome
            return state.headWaiter.take()
        }
        waiter?.resume(with: outcome)
    }

    func received(_ piece: ByteBuffer) {
        var tooLarge: (CheckedContinuation<ByteBuffer, any Error>, Int)?
        var consumer: (any ResponseBodyConsumer)?
        let reader: CheckedContinuation<ByteBuffer?, any Error>? = state.withLock { state in
            state.lastActivity = .now()
            if state.discarding { return nil }
            if let pushed = state.consumer {
                consumer = pushed
                return nil
            }
            if state.gathering != nil {
                // Moved out of the state while it grows: a buffer held twice would be copied whole at each piece (and
                // a copy of the optional and a nil put back cost a few hundred instructions a piece).
                var gathering = state.gathering.take()!
                guard gathering.buffer.readableBytes <= gathering.limit - piece.readableBytes else {
                    state.ending = .failure(GSEAIError.responseTooLarge(limit: gathering.limit))
                    tooLarge = (gathering.continuation, gathering.limit)
                    return nil
                }
                var piece = piece
                if gathering.buffer.readableBytes == 0 { gathering.buffer = piece } else { gathering.buffer.writeBuffer(&piece) }
                state.gathering = gathering
                return nil
            }
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            state.pieces.append(piece)
            state.waitingBytes += piece.readableBytes
            return nil
        }
        if let (continuation, limit) = tooLarge {
            channel.close(promise: nil)
            continuation.resume(throwing: GSEAIError.responseTooLarge(limit: limit))
        }
        consumer?.received(piece)
        reader?.resume(returning: piece)
    }

    /// One read from the socket is done: a consumer flushes what it made of it.
    func readComplete() {
        let consumer: (any ResponseBodyConsumer)? = state.withLock { state in
            if state.gotHead, state.ending == nil, state.timer == nil {
                state.timer = try? channel.eventLoop.scheduleCallback(at: state.lastActivity + idle, handler: Timer(exchange: self, kind: .silence))
            }
            return state.consumer
        }
        consumer?.readComplete()
    }

    /// The body's end has been read: from now on the connection is not the exchange's to close (told before the
    /// connection goes back to the pool, and before ``ended()``).
    func completing() {
        state.withLock { $0.complete = true }
    }

    /// The body is complete.
    func ended() {
        finish(.success(()))
    }

    /// The connection broke or failed.
    func failed(_ error: any Error) {
        let gotHead = state.withLock { $0.gotHead }
        if !gotHead { settleHead(.failure(error)) }
        finish(.failure(gotHead ? GSEAIError.streamInterrupted : error))
    }

    /// Whether to read more from the socket now; `false` pauses the reads until the reader catches up.
    func wantsMore() -> Bool {
        state.withLock { state in
            guard state.ending == nil else { return false }
            if let consumer = state.consumer {
                if consumer.wantsMore { return true }
                state.paused = true
                return false
            }
            if !state.gotHead || state.gathering != nil || state.waitingBytes <= Self.highWater { return true }
            state.paused = true
            return false
        }
    }

    private func finish(_ ending: Result<Void, any Error>) {
        guard let waiting = state.withLock({ Self.end(&$0, with: ending, evenIfDiscarding: true) }) else { return }
        waiting.timer?.cancel()
        waiting.endWaiter?.resume()
        waiting.reader?.resume(with: ending.map { nil })
        if let gathering = waiting.gathering { gathering.continuation.resume(with: ending.map { gathering.buffer }) }
        waiting.consumer?.ended(ending)
    }

    /// Who waits on an exchange as it ends.
    private struct Waiting {
        var reader: CheckedContinuation<ByteBuffer?, any Error>?
        var gathering: Gathering?
        var timer: NIOScheduledCallback?
        var endWaiter: CheckedContinuation<Void, Never>?
        var consumer: (any ResponseBodyConsumer)?
    }

    /// Ends the exchange with `ending` and takes who waits, to be told outside the lock; `nil` when it had
    /// ended already (or is discarding and `evenIfDiscarding` is not set). A reader with pieces still to take
    /// is not waiting: it finds the ending after them.
    private static func end(_ state: inout State, with ending: Result<Void, any Error>, evenIfDiscarding: Bool) -> Waiting? {
        guard state.ending == nil, evenIfDiscarding || !state.discarding else { return nil }
        state.ending = ending
        // Moved out, each left `nil` (copied and then cleared, they cost a few hundred instructions an exchange).
        let reader = state.reader.take()
        return Waiting(reader: state.pieces.isEmpty ? reader : nil, gathering: state.gathering.take(), timer: state.timer.take(),
                       endWaiter: state.endWaiter.take(), consumer: state.consumer.take())
    }

    /// The exchange's one timer at a time: the wait for the head, then the silence limit. A scheduled callback, not a
    /// scheduled task: SwiftNIO makes no promise and future for it (about 2,000 instructions a request, their generic
    /// metadata looked up as they are made and freed). It holds the exchange until it fires or is cancelled, which every
    /// end of the exchange does.
    private struct Timer: NIOScheduledCallbackHandler, Sendable {
        enum Kind { case firstByte, silence }
        let exchange: UpstreamExchange
        let kind: Kind

        func handleScheduledCallback(eventLoop: some EventLoop) {
            switch kind {
            case .firstByte: exchange.headTookTooLong()
            case .silence: exchange.checkSilence()
            }
        }
    }

    private func headTookTooLong() {
        guard !state.withLock({ $0.gotHead || $0.ending != nil }) else { return }
        failed(GSEAIError.timeout(.firstByte))
        channel.close(promise: nil)
    }

    /// Fails the answer when the server has been silent longer than the idle limit while the reader wanted
    /// more; otherwise looks again when the limit could next be reached.
    private func checkSilence() {
        let now = NIODeadline.now()
        let silent: Bool = state.withLock { state in
            guard state.ending == nil else { return false }
            if state.paused {
                state.timer = try? channel.eventLoop.scheduleCallback(in: idle, handler: Timer(exchange: self, kind: .silence))
                return false
            }
            let due = state.lastActivity + idle
            guard now < due else { return true }
            state.timer = try? channel.eventLoop.scheduleCallback(at: due, handler: Timer(exchange: self, kind: .silence))
            return false
        }
        guard silent else { return }
        finish(.failure(GSEAIError.timeout(.idle)))
        channel.close(promise: nil)
    }

    /// The bytes that have come and wait for the reader.
    var waitingBytes: Int { state.withLock { $0.waitingBytes } }

    // MARK: From the reader

    /// The next piece of the body, `nil` at its end.
    nonisolated(nonsending) func next() async throws -> ByteBuffer? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
                var resume = false
                let answer: Result<ByteBuffer?, any Error>? = state.withLock { state in
                    if let piece = state.pieces.popFirst() {
                        state.waitingBytes -= piece.readableBytes
                        resume = Self.unpause(&state)
                        return .success(piece)
                    }
                    if let ending = state.ending { return ending.map { nil } }
                    state.reader = continuation
                    resume = Self.unpause(&state)
                    return nil
                }
                if resume { readMore() }
                if let answer { continuation.resume(with: answer) }
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// The whole body, failing when it exceeds `limit` bytes.
    nonisolated(nonsending) func collect(upTo limit: Int) async throws -> ByteBuffer {
        // The usual case for a whole answer: its body and its end came with its head, or before the reader asked.
        // Taken at once, with no continuation or cancellation handler (a cancellation now would find the exchange
        // ended and change nothing).
        let ended: (answer: Result<ByteBuffer, any Error>, complete: Bool)? = state.withLock { state in
            guard let ending = state.ending else { return nil }
            return (Self.take(upTo: limit, &state).flatMap { buffer in ending.map { buffer } }, state.complete)
        }
        if let ended {
            // A connection whose answer came whole may be back in the pool, another request's already: never closed
            // here (an answer too large for its reader fails without it).
            if case .failure = ended.answer, !ended.complete { channel.close(promise: nil) }
            return try ended.answer.get()
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer, any Error>) in
                var resume = false
                var complete = false
                let answer: Result<ByteBuffer, any Error>? = state.withLock { state in
                    complete = state.complete
                    let buffer: ByteBuffer
                    switch Self.take(upTo: limit, &state) {
                    case .failure(let error): return .failure(error)
                    case .success(let taken): buffer = taken
                    }
                    if let ending = state.ending { return ending.map { buffer } }
                    state.gathering = Gathering(limit: limit, buffer: buffer, continuation: continuation)
                    resume = Self.unpause(&state)
                    return nil
                }
                if case .failure = answer, !complete { channel.close(promise: nil) }
                if resume { readMore() }
                if let answer { continuation.resume(with: answer) }
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// The pieces that wait, in one buffer; past `limit` bytes, the exchange ends as too large. A body that came in
    /// one read is that read's slice, not a copy: it keeps the read's memory (at most 64 KiB) as long as it lives,
    /// which for a whole answer is until it has been written.
    private static func take(upTo limit: Int, _ state: inout State) -> Result<ByteBuffer, any Error> {
        var buffer = ByteBuffer()
        while var piece = state.pieces.popFirst() {
            guard buffer.readableBytes <= limit - piece.readableBytes else {
                state.ending = .failure(GSEAIError.responseTooLarge(limit: limit))
                return .failure(GSEAIError.responseTooLarge(limit: limit))
            }
            // The first piece as it came (an answer in one read is not copied), the others after it.
            if buffer.readableBytes == 0 { buffer = piece } else { buffer.writeBuffer(&piece) }
        }
        state.waitingBytes = 0
        return .success(buffer)
    }

    /// Hands the body to `consumer` as it arrives from now on, on the connection's event loop: first what has
    /// come already, then each piece as it is read, then the end. Instead of ``next()``, never with it.
    func push(to consumer: any ResponseBodyConsumer) {
        channel.eventLoop.executeHere { [self] in
            let (pieces, ending): (PieceQueue, Result<Void, any Error>?) = state.withLock { state in
                let pieces = state.pieces
                state.pieces = PieceQueue()
                state.waitingBytes = 0
                if state.ending == nil { state.consumer = consumer }
                return (pieces, state.ending)
            }
            if !pieces.isEmpty {
                var pieces = pieces
                while let piece = pieces.popFirst() { consumer.received(piece) }
                consumer.readComplete()
            }
            if let ending {
                consumer.ended(ending)
            } else {
                // Reads that stopped while the pieces waited start again, if the consumer wants more.
                resumeReads()
            }
        }
    }

    /// A consumer that wanted no more (``ResponseBodyConsumer/wantsMore``) wants more again: reads start again
    /// if they had stopped for it.
    func resumeReads() {
        channel.eventLoop.executeHere { [self] in
            let resume: Bool = state.withLock { state in
                guard state.paused, state.ending == nil, state.consumer?.wantsMore == true else { return false }
                state.paused = false
                state.lastActivity = .now()
                return true
            }
            if resume { channel.read() }
        }
    }

    /// The reader has all it needs (a stream's final event came) though the body may not have ended: what
    /// still comes is read and dropped, and this returns at the body's end, the connection then back in the
    /// pool for the reader's next request; or after `grace`, the connection closed.
    func discardRest(within grace: TimeAmount) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let (ended, resume): (Bool, Bool) = state.withLock { state in
                guard state.ending == nil, !state.discarding else { return (true, false) }
                state.discarding = true
                state.endWaiter = waiter
                state.pieces = PieceQueue()
                state.waitingBytes = 0
                return (false, Self.unpause(&state))
            }
            if ended { return waiter.resume() }
            if resume { readMore() }
            channel.eventLoop.scheduleTask(in: grace) { [weak self] () -> Void in self?.cancel(evenIfDiscarding: true) }
        }
    }

    /// The reader gave up: the connection is closed (the server stops), and whoever waits is told.
    func cancel() {
        cancel(evenIfDiscarding: false)
    }

    private func cancel(evenIfDiscarding: Bool) {
        // Every body let go cancels its exchange, most of them complete: the error is made only when it ends one.
        let ended: (ending: Result<Void, any Error>, waiting: Waiting)? = state.withLock { state in
            guard !state.complete, state.ending == nil, evenIfDiscarding || !state.discarding else { return nil }
            let ending = Result<Void, any Error>.failure(CancellationError())
            return Self.end(&state, with: ending, evenIfDiscarding: evenIfDiscarding).map { (ending, $0) }
        }
        guard let (ending, waiting) = ended else { return }
        waiting.timer?.cancel()
        waiting.endWaiter?.resume()
        settleHead(.failure(CancellationError()))
        channel.close(promise: nil)
        waiting.reader?.resume(throwing: CancellationError())
        waiting.gathering?.continuation.resume(throwing: CancellationError())
        waiting.consumer?.ended(ending)
    }

    /// Sending the request's body failed. A connection that closed has told the exchange already (and an answer
    /// the server sent before closing still counts); otherwise the body's own source failed, and so does the
    /// exchange, with `error`.
    func sendingFailed(_ error: any Error) {
        guard channel.isActive else { return }
        if !state.withLock({ $0.gotHead }) { settleHead(.failure(error)) }
        cancel()
    }

    private static func unpause(_ state: inout State) -> Bool {
        guard state.paused, state.waitingBytes <= lowWater else { return false }
        state.paused = false
        state.lastActivity = .now()
        return true
    }

    private func readMore() {
        channel.eventLoop.executeHere { [channel] in channel.read() }
    }
}

/// The handler at the end of an upstream connection's pipeline: writes each request as made
/// (``UpstreamRequestHead``, then the body, framed in chunks when it has no length), hands what arrives to the
/// exchange under way, reads only as fast as its reader takes (the channel does not read by itself), and gives
/// the connection back to the pool once an answer is complete and the server keeps it open.
final class UpstreamConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = ByteBuffer

    /// The connection's response decoder, told each request's method (`nil`: the test hands parsed answers).
    private let decoder: HTTPResponseDecoder?
    /// Whether the request being sent has its body in chunks.
    private var chunked = false
    /// The bytes of a streamed body of declared length still to come (`nil`: chunked, or in hand).
    private var unsent: Int?

    private var exchange: UpstreamExchange?
    private var keepAlive = true
    private var requestWritten = false
    private var responseEnded = false
    private var answered = false
    /// Closes the connection once it has been idle in the pool for `idleTimeout`. It is not cancelled when the
    /// connection is taken again: when it fires it looks at `idleSince` and sets itself again for the new time,
    /// so that a connection taken and given back on every request schedules no timer per request.
    private var idleTimer: Scheduled<Void>?
    /// Since when the connection has been idle in the pool (`nil` while it carries an exchange).
    private var idleSince: NIODeadline?
    private var idleTimeout = TimeAmount.zero
    private var context: ChannelHandlerContext?
    /// Called when an exchange has ended and the connection may carry another.
    var onIdle: (() -> Void)?

    init(decoder: HTTPResponseDecoder? = nil) {
        self.decoder = decoder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Sends a request for `exchange`: when `complete`, the head and `body` (a body in hand, or none: the head's
    /// framing is a length or none) in one flush; else the head, the body to follow through ``send(_:)`` and
    /// ``endRequest()``.
    func begin(_ exchange: UpstreamExchange, head: UpstreamRequestHead, body: ByteBuffer?, complete: Bool) {
        idleSince = nil
        guard let context, context.channel.isActive else {
            exchange.failed(UpstreamExchange.Failure.closedBeforeAnswer)
            return
        }
        self.exchange = exchange
        // The transport sends no `Connection` header: every request asks to keep the connection.
        keepAlive = true
        requestWritten = false
        responseEnded = false
        answered = false
        chunked = head.chunked
        unsent = complete ? nil : head.length
        decoder?.write(data: .head(head.decoderHead))
        exchange.started()
        if complete {
            if let body, body.readableBytes > ChunkedBody.copiedUpTo {
                // A large body after the head, itself not copied; its write tells when the whole request has been sent
                // (a promise's cost is small beside such a body's).
                context.write(wrapOutboundOut(head.bytes), promise: nil)
                context.write(wrapOutboundOut(body), promise: whenSent())
            } else {
                // Head and body in one buffer: one write through the pipeline, not two (a write costs SwiftNIO about
                // 1,000 instructions, more than copying such a body; bench/README.md, "JSON objects, writes and turns").
                // Without a promise: the request is in the channel's hands, which writes a connection's buffers in
                // order, so the connection may carry the next request once the answer has ended (should a server
                // answer before reading it all, the next request follows what is left of it). A write that fails
                // closes the connection, which fails the exchange as one closed before its answer (sent again on a
                // new connection when this one had been kept alive: a request not sent whole was not served). The
                // promise, its future, callback and closure cost about 3,000 instructions a request (bench/README.md,
                // "Stack room for the log line, promises and conversions left out").
                requestWritten = true
                if let body {
                    var buffer = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + body.readableBytes)
                    buffer.writeImmutableBuffer(head.bytes)
                    buffer.writeImmutableBuffer(body)
                    context.write(wrapOutboundOut(buffer), promise: nil)
                } else {
                    context.write(wrapOutboundOut(head.bytes), promise: nil)
                }
            }
        } else {
            context.write(wrapOutboundOut(head.bytes), promise: nil)
        }
        context.flush()
        context.read()
    }

    /// Sends a piece of the request's body (in a chunk of its own when the body has no length); completed when
    /// it has been written; `nil` when the connection has closed.
    func send(_ piece: ByteBuffer) -> EventLoopFuture<Void>? {
        guard let context else { return nil }
        if let unsent {
            // More than the head declared would be read by the server as the start of another request.
            guard piece.readableBytes <= unsent else {
                let error = GSEAIError.invalidArgument("the request body is longer than its declared length")
                refuseBody(error)
                return context.eventLoop.makeFailedFuture(error)
            }
            self.unsent = unsent - piece.readableBytes
        }
        // An empty chunk would end the body.
        if chunked && piece.readableBytes == 0 { return context.eventLoop.makeSucceededVoidFuture() }
        let written = context.eventLoop.makePromise(of: Void.self)
        if chunked {
            ChunkedBody.frame(piece) { buffer, last in
                if last {
                    context.writeAndFlush(wrapOutboundOut(buffer), promise: written)
                } else {
                    context.write(wrapOutboundOut(buffer), promise: nil)
                }
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(piece), promise: written)
        }
        return written.futureResult
    }

    /// Ends the request whose body was streamed.
    func endRequest() {
        guard let context else { return }
        if let unsent, unsent > 0 {
            // The server would wait for the rest.
            refuseBody(GSEAIError.invalidArgument("the request body ended \(unsent) bytes short of its declared length"))
            return
        }
        // The last chunk, or nothing (an empty write, for the moment it has all been sent).
        context.writeAndFlush(wrapOutboundOut(chunked ? ChunkedBody.last : ByteBuffer()), promise: whenSent())
    }

    /// A body that does not match its head: the exchange fails with `error`, and the connection, whose framing is
    /// lost, closes.
    private func refuseBody(_ error: GSEAIError) {
        let exchange = self.exchange
        self.exchange = nil
        exchange?.failed(error)
        context?.close(promise: nil)
    }

    /// What a request's last write completes, for a streamed body or a large one (a request in one buffer is taken as sent
    /// once written to the channel: ``begin(_:head:body:complete:)``): once it has been sent, the connection may go back
    /// to the pool when the answer has ended too; if it could not be sent, the exchange fails and the connection closes.
    private func whenSent() -> EventLoopPromise<Void>? {
        guard let context else { return nil }
        let exchange = self.exchange
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { [weak self] result in
            guard let self, self.exchange === exchange else { return }
            switch result {
            case .success:
                self.requestWritten = true
                self.finishIfDone()
            case .failure(let error):
                self.exchange = nil
                exchange?.failed(GSEAIError.connection(String(describing: error)))
                self.context?.close(promise: nil)
            }
        }
        return promise
    }

    /// Closes the connection when it has been idle for `timeout`.
    func closeWhenIdle(for timeout: TimeAmount) {
        guard let context else { return }
        let now = context.eventLoop.now
        idleSince = now
        idleTimeout = timeout
        // A timer still set from an earlier idle time looks again when it fires.
        guard idleTimer == nil else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: now + timeout) { [weak self] in self?.checkIdle() }
    }

    /// Closes the connection if it has been idle for its limit, else looks again when it could have been.
    private func checkIdle() {
        idleTimer = nil
        guard let context, exchange == nil, let idleSince else { return }
        let due = idleSince + idleTimeout
        guard context.eventLoop.now < due else {
            context.close(promise: nil)
            return
        }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [weak self] in self?.checkIdle() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // An interim answer (100 Continue) is not the answer.
            guard head.status.code >= 200 || head.status == .switchingProtocols else { return }
            answered = true
            keepAlive = keepAlive && head.isKeepAlive
            exchange?.received(head)
        case .body(let piece):
            exchange?.received(piece)
        case .end:
            responseEnded = true
            // The connection is given back before the reader hears of the end, so that the reader's next
            // request finds it.
            let exchange = self.exchange
            exchange?.completing()
            finishIfDone()
            exchange?.ended()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.readComplete()
        if exchange?.wantsMore() == true { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        if let exchange {
            self.exchange = nil
            exchange.failed(answered ? GSEAIError.streamInterrupted : UpstreamExchange.Failure.closedBeforeAnswer)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let exchange {
            self.exchange = nil
            exchange.failed(answered ? GSEAIError.streamInterrupted : GSEAIError.connection(String(describing: error)))
        }
        context.close(promise: nil)
    }

    /// After an answer is complete and the request sent (or, in one buffer, handed whole to the channel): the connection
    /// goes back to the pool if the server keeps it open, and is closed otherwise.
    private func finishIfDone() {
        guard requestWritten, responseEnded, exchange != nil else { return }
        exchange = nil
        if keepAlive, let onIdle {
            // A read stays pending while it is idle, so that the server closing it is seen at once.
            context?.read()
            onIdle()
        } else {
            context?.close(promise: nil)
        }
    }
}
