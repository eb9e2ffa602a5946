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
/// (Hummingbird's connection state, which looks only at heads and ends, and the async channel's writer, which
/// has written the head before the relay starts and writes the end after it). It tells the relay when the
/// connection can take more again.
final class CallerDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
    /// Request parts pass through untouched; only the end of input and of the connection matter here.
    typealias InboundIn = NIOAny

    private var watchers: [Int: @Sendable () -> Void] = [:]
    private var nextID = 0
    private var gone = false
    private var context: ChannelHandlerContext?
    /// The relay waiting for the connection to take more, with its id.
    private var onWritable: (id: ObjectIdentifier, call: () -> Void)?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes a piece of the answer's body (not flushed). On the connection's event loop only, as all below.
    func write(_ piece: ByteBuffer) {
        context?.write(NIOAny(HTTPResponsePart.body(piece)), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    /// Closes the connection (a caller that took nothing for too long).
    func close() {
        context?.close(promise: nil)
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
        if context.channel.isWritable { onWritable?.call() }
        context.fireChannelWritabilityChanged()
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
        let leaving = watchers.values
        watchers = [:]
        for leave in leaving { leave() }
        context.fireChannelInactive()
    }
}
