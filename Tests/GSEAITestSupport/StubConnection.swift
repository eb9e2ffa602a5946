import Hummingbird
import NIOCore
import Synchronization

/// The stub's request context: the connection too, so that a handler can notice its caller leaving.
public struct StubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The connection of the request being handled, for handlers that do not see the context.
enum StubConnection {
    @TaskLocal static var channel: (any Channel)?
}

/// Makes each request's connection known to its handler through ``StubConnection/channel``.
struct StubConnectionMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: StubRequestContext,
                next: (Request, StubRequestContext) async throws -> Response) async throws -> Response {
        try await StubConnection.$channel.withValue(context.channel) { try await next(request, context) }
    }
}

/// Closes a connection whose client stopped sending: Hummingbird keeps half-closed connections open, and a
/// held request (`[[hang-head]]`) must see its client leave.
final class StubHangUpHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Counts the connections a stub accepts.
final class StubConnectionCounter: Sendable {
    private let accepted = Atomic(0)

    var count: Int { accepted.load(ordering: .relaxed) }

    /// Counts its connection when it is added to the connection's pipeline.
    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let counter: StubConnectionCounter

        init(_ counter: StubConnectionCounter) {
            self.counter = counter
        }

        func handlerAdded(context: ChannelHandlerContext) {
            counter.accepted.add(1, ordering: .relaxed)
        }
    }
}
