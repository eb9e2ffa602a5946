import NIOCore

/// Tells the requests of a connection that their caller left: the connection closed, or the caller stopped
/// sending (end of input), which closes it.
///
/// Hummingbird accepts half-closed connections, so a caller who leaves while a whole (not streamed) answer
/// is being generated would leave the connection "active", and the upstream would go on working for no one.
/// As with nginx, a caller that half-closes its side while waiting for an answer is taken to have left.
/// ``GatewayRequestContext/cancellingIfCallerLeaves(_:)`` registers here what to cancel: one call when the
/// connection goes, instead of a timer per request that looks four times a second (for 10,000 open streams,
/// 40,000 wake-ups a second for nothing).
final class CallerDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
    /// Request parts pass through untouched; only the end of input and of the connection matter here.
    typealias InboundIn = NIOAny

    private var watchers: [Int: @Sendable () -> Void] = [:]
    private var nextID = 0
    private var gone = false

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
