import NIOCore

/// Closes a connection as soon as the caller stops sending (end of input).
///
/// Hummingbird accepts half-closed connections, so a caller who leaves while a whole (not streamed) answer
/// is being generated would leave the connection "active", and the upstream would go on working for no one:
/// ``GatewayRequestContext/cancellingIfCallerLeaves(_:)`` watches for the closed connection this makes. As
/// with nginx, a caller that half-closes its side while waiting for an answer is taken to have left.
final class CallerDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
    /// Request parts pass through untouched; only the end-of-input event matters here.
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
