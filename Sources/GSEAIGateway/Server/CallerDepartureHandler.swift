import NIOCore
import NIOHTTPTypes

/// Tells the requests of a connection that their caller left: the connection closed, or the caller stopped
/// sending (end of input), which closes it.
///
/// Hummingbird accepts half-closed connections, so a caller who leaves while a whole (not streamed) answer
/// is being generated would leave the connection "active", and the upstream would go on working for no one.
/// As with nginx, a caller that half-closes its side while waiting for an answer is taken to have left.
/// ``GatewayRequestContext/cancellingIfCallerLeaves(_:)`` registers here what to cancel: one call when the
/// connection goes, instead of a timer per request that looks four times a second (for 10,000 open streams,
/// 40,000 wake-ups a second for nothing).
///
/// It is also where a stream's relay (``CallerPump``) writes the pieces of the answer's body, as they come from
/// the upstream, without a task between: they go from here towards the socket, past the handlers after it
/// (the lanes' writers, which have written the head before the relay starts and write the end after it). It tells the relay when the
/// connection can take more again.
///
/// And it is where a caller who takes nothing is let go: a connection that takes no more (its outbound buffer
/// above the high-water mark) and then takes not one byte of what waits for ``stallLimit`` is closed,
/// whichever lane or handler is writing (a whole answer, a stream, a page), and its requests' work is cancelled
/// as for any departure. Else a client that never reads would hold its connection, the answer's memory and,
/// for a stream, a generation slot for ever. A slow reader is not one: each look that finds the caller took some
/// (fewer bytes waiting than at the last look, with the body bytes written since counted in) gives it another
/// ``stallLimit``.
final class CallerDepartureHandler: ChannelDuplexHandler, RemovableChannelHandler {
    /// Request parts pass through untouched; only the end of input and of the connection matter here.
    typealias InboundIn = NIOAny
    /// Answers' parts pass through untouched; their bodies' bytes are counted while the connection is full.
    typealias OutboundIn = HTTPResponsePart

    /// How long a caller's connection may take nothing before it is closed
    /// (`gseai.timeout.caller.stall.seconds`).
    static let defaultStallLimit = TimeAmount.seconds(120)

    private let stallLimit: TimeAmount
    /// Fires ``stallLimit`` after the connection stopped taking more, or after the last look found it had
    /// taken some.
    private var stallTimer: Scheduled<Void>?
    /// The bytes waiting to be sent at the last look.
    private var waitingAtLastLook = 0
    /// The body bytes written since the last look (the relay's and the lanes'): what waits now is the last look's
    /// and these, less what the caller took.
    private var addedSinceLastLook = 0
    private var watchers: [Int: @Sendable () -> Void] = [:]
    private var nextID = 0
    private var gone = false
    private var context: ChannelHandlerContext?
    /// The relay waiting for the connection to take more, with its id.
    private var onWritable: (id: ObjectIdentifier, call: () -> Void)?

    init(stallLimit: TimeAmount = CallerDepartureHandler.defaultStallLimit) {
        self.stallLimit = stallLimit
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        stopWatchingForStall()
    }

    /// Writes a piece of the answer's body (not flushed). On the connection's event loop only, as all below.
    func write(_ piece: ByteBuffer) {
        noteWritten(piece)
        context?.write(NIOAny(HTTPResponsePart.body(piece)), promise: nil)
    }

    /// The answers written by the lanes (Hummingbird's and the forwarded routes').
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if stallTimer != nil, case .body(let piece) = unwrapOutboundIn(data) { noteWritten(piece) }
        context.write(data, promise: promise)
    }

    /// A piece of a body written (by the relay or a lane): counted while the connection is full.
    private func noteWritten(_ piece: ByteBuffer) {
        if stallTimer != nil { addedSinceLastLook = addedSinceLastLook.addingSaturated(piece.readableBytes) }
    }

    func flush() {
        context?.flush()
    }

    /// Whether the connection takes more now (its outbound buffer below the high-water mark).
    var isWritable: Bool {
        context?.channel.isWritable ?? false
    }

    /// Has `call` called whenever the connection can take more again, until ``stopTellingWritable(_:)``.
    func tellWritable(_ id: ObjectIdentifier, _ call: @escaping () -> Void) {
        onWritable = (id, call)
    }

    func stopTellingWritable(_ id: ObjectIdentifier) {
        if onWritable?.id == id { onWritable = nil }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stopWatchingForStall()
            onWritable?.call()
        } else {
            watchForStall(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    /// The connection takes no more: if it takes nothing of what waits for ``stallLimit``, it is closed.
    private func watchForStall(context: ChannelHandlerContext) {
        guard stallTimer == nil else { return }
        lookAgain(after: context)
    }

    /// Notes the bytes waiting now, and looks again after ``stallLimit``.
    private func lookAgain(after context: ChannelHandlerContext) {
        waitingAtLastLook = Self.waitingBytes(context.channel)
        addedSinceLastLook = 0
        stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: stallLimit) { self.lookForStall() }
    }

    private func lookForStall() {
        stallTimer = nil
        guard let context, !context.channel.isWritable else { return }
        if Self.waitingBytes(context.channel) < waitingAtLastLook.addingSaturated(addedSinceLastLook) {
            // It took some: another limit from now.
            lookAgain(after: context)
        } else {
            context.close(promise: nil)
        }
    }

    /// The bytes written to the connection and not yet sent (`Int.max` when the channel cannot tell: then no
    /// look finds progress, and the limit counts from when it stopped taking more).
    private static func waitingBytes(_ channel: any Channel) -> Int {
        (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? .max
    }

    private func stopWatchingForStall() {
        stallTimer?.cancel()
        stallTimer = nil
    }

    /// Calls `leave` when the caller leaves (at once if it has); returns what ``unwatch(_:)`` takes. On the
    /// connection's event loop only.
    func watch(_ leave: @escaping @Sendable () -> Void) -> Int? {
        guard !gone else {
            leave()
            return nil
        }
        nextID &+= 1
        watchers[nextID] = leave
        return nextID
    }

    func unwatch(_ id: Int) {
        watchers[id] = nil
    }

    /// How many requests are watching now (none once they have ended).
    var watching: Int { watchers.count }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        gone = true
        stopWatchingForStall()
        let leaving = watchers.values
        watchers = [:]
        for leave in leaving { leave() }
        context.fireChannelInactive()
    }
}
