import GSEAI
import NIOCore
import Synchronization

/// Relays a stream's body from the upstream connection to the caller's as it arrives, with no task woken per
/// piece: the NIO transport pushes each piece (``ResponseBodyStream/push(to:)``), and on the caller's event
/// loop it is watched (``ResponseObserver``), written and, once per read from the upstream, flushed
/// (through the caller's ``CallerDepartureHandler``). The relay's task (``StreamRelay``) waits only for the two
/// moments that need it: the final event has come and the usage must be recorded before the caller sees it
/// (the pump holds that piece and what follows until ``recorded()``), and the end.
///
/// Backpressure: while the caller's connection takes no more, or a piece is held, or more than
/// ``highWater`` bytes are on their way from the upstream's event loop to the caller's (when the two differ),
/// the upstream connection reads nothing (and its idle limit does not run); the connection's writability change
/// (or the bytes on their way falling to ``lowWater``) starts it again. A caller whose connection takes nothing
/// for the stall limit has it closed by ``CallerDepartureHandler``, and the relay's watch of the caller's
/// departure then cancels the upstream request (else a client that never reads would hold a generation slot
/// for ever).
final class CallerPump: ResponseBodyConsumer, @unchecked Sendable {
    // Unchecked: every variable is used on `loop` only, except `observer`, which the relay's task reads while
    // the pump leaves it alone (a piece held for recording, or the end signalled), and `paused`, an atomic the
    // upstream connection reads on its own loop.

    /// What the relay's task is woken for.
    enum Signal: Sendable {
        /// The final event has come and waits: record the usage, then call ``recorded()``.
        case record
        /// The body ended, every piece written: complete, or failed as the body failed.
        case ended(Result<Void, any Error>)
    }

    private let loop: any EventLoop
    private let body: ResponseBodyStream
    private let caller: CallerDepartureHandler
    private(set) var observer: ResponseObserver
    /// The usage is still to be recorded before the final event goes out.
    private var recordNeeded = true
    /// Pieces kept from the caller while the usage is recorded (the first holds the final event).
    private var holding = false
    private var held: [ByteBuffer] = []
    /// The body's end, when it came while pieces were held.
    private var heldEnding: Result<Void, any Error>?
    private var pending: Signal?
    private var waiter: CheckedContinuation<Signal, Never>?
    private var done = false
    private let paused = Atomic<Bool>(false)
    /// Bytes handed over by the upstream's loop and not yet taken on the caller's.
    private let inFlight = Atomic<Int>(0)

    /// More than this many bytes on their way between the two loops stop the upstream's reads.
    static let highWater = 256 << 10
    /// Reads start again when the bytes on their way are down to this.
    static let lowWater = 64 << 10
    private init(loop: any EventLoop, body: ResponseBodyStream, caller: CallerDepartureHandler, endpoint: ProxyEndpoint) {
        self.loop = loop
        self.body = body
        self.caller = caller
        self.observer = ResponseObserver(endpoint: endpoint)
    }

    /// A pump of `body` to the caller of `channel`, started; `nil` when there can be none (a body of
    /// AsyncHTTPClient's, or a connection that is not the gateway server's), for the relay's own loop instead.
    static func start(_ body: ResponseBodyStream, to channel: any Channel, endpoint: ProxyEndpoint) async -> CallerPump? {
        guard body.cancelsFromOutside else { return nil }
        let attach: @Sendable () -> CallerPump? = {
            guard let caller = try? channel.pipeline.syncOperations.handler(type: CallerDepartureHandler.self) else { return nil }
            let pump = CallerPump(loop: channel.eventLoop, body: body, caller: caller, endpoint: endpoint)
            caller.tellWritable(ObjectIdentifier(pump)) { [weak pump] in pump?.writable() }
            return body.push(to: pump) ? pump : nil
        }
        let loop = channel.eventLoop
        if loop.inEventLoop { return attach() }
        return try? await loop.submit(attach).get()
    }

    // MARK: From the upstream connection (its loop)

    func received(_ piece: ByteBuffer) {
        if loop.inEventLoop { return take(piece) }
        inFlight.add(piece.readableBytes, ordering: .relaxed)
        loop.execute {
            let before = self.inFlight.subtract(piece.readableBytes, ordering: .relaxed).oldValue
            self.take(piece)
            // Down to the low-water mark from above it: the upstream's reads may have stopped for the bytes on
            // their way (resuming is a no-op if they did not).
            if before > Self.lowWater && before - piece.readableBytes <= Self.lowWater && !self.done && !self.holding
                && !self.paused.load(ordering: .relaxed) {
                self.body.resumeReads()
            }
        }
    }

    func readComplete() {
        loop.executeHere {
            if !self.holding && !self.done { self.caller.flush() }
        }
    }

    func ended(_ ending: Result<Void, any Error>) {
        loop.executeHere {
            guard !self.done else { return }
            if self.holding {
                self.heldEnding = ending
            } else {
                self.finish(ending)
            }
        }
    }

    /// The bytes on their way from the upstream's loop to the caller's (for the tests).
    var bytesOnTheirWay: Int {
        inFlight.load(ordering: .relaxed)
    }

    var wantsMore: Bool {
        !paused.load(ordering: .relaxed) && inFlight.load(ordering: .relaxed) <= Self.highWater
    }

    // MARK: From the relay's task

    /// Waits for the next moment the task is needed.
    func next() async -> Signal {
        await withCheckedContinuation { (waiter: CheckedContinuation<Signal, Never>) in
            loop.executeHere {
                if let pending = self.pending {
                    self.pending = nil
                    waiter.resume(returning: pending)
                } else {
                    self.waiter = waiter
                }
            }
        }
    }

    /// The usage is recorded: the held pieces go to the caller, and the relay goes on (or ends, if the body
    /// ended meanwhile).
    func recorded() {
        loop.executeHere {
            guard !self.done else { return }
            self.recordNeeded = false
            self.holding = false
            let pieces = self.held
            self.held = []
            for (index, piece) in pieces.enumerated() {
                // The first was watched when it came; the rest came while it was held.
                if index > 0 { self.observer.observe(streamPiece: piece) }
                self.caller.write(piece)
            }
            if let ending = self.heldEnding {
                self.finish(ending)
                return
            }
            self.caller.flush()
            self.setPaused(!self.caller.isWritable)
        }
    }

    /// The task is done with the pump (also when it failed): nothing more is written.
    func stop() {
        loop.executeHere {
            self.done = true
            self.held = []
            self.caller.stopTellingWritable(ObjectIdentifier(self))
        }
    }

    // MARK: On the caller's loop

    private func take(_ piece: ByteBuffer) {
        guard !done else { return }
        if holding {
            held.append(piece)
            return
        }
        observer.observe(streamPiece: piece)
        if recordNeeded && observer.sawFinalEvent {
            // Written before the caller sees the final event, which carries the response id and ends the stream
            // for the clients: an acknowledged id is never lost, and a caller who continues from it at once
            // finds it recorded.
            holding = true
            held.append(piece)
            paused.store(true, ordering: .relaxed)
            caller.flush()
            signal(.record)
            return
        }
        caller.write(piece)
        if !caller.isWritable { paused.store(true, ordering: .relaxed) }
    }

    /// The caller's connection can take more.
    private func writable() {
        guard !done, !holding else { return }
        setPaused(false)
    }

    private func setPaused(_ value: Bool) {
        paused.store(value, ordering: .relaxed)
        if !value { body.resumeReads() }
    }

    private func finish(_ ending: Result<Void, any Error>) {
        // Done first: a flush that finds the connection gone closes it at once, and tells the exchange again.
        done = true
        caller.flush()
        caller.stopTellingWritable(ObjectIdentifier(self))
        signal(.ended(ending))
    }

    private func signal(_ signal: Signal) {
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: signal)
        } else {
            pending = signal
        }
    }
}
