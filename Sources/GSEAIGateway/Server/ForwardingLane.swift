import DequeModule
import Foundation
import GSEAIFormats
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Serves the requests of the forwarded routes (``ProxyEndpoint/all``) from a channel handler, ahead of
/// Hummingbird's connection task: the request's head and body are read here, the answer is made by the same
/// middleware and handler as on Hummingbird's lane (``ForwardedResponder``: ``GatewayMiddleware``,
/// ``AuthenticationMiddleware``, ``ProxyController``; the same behaviour, without the router), in a task of the
/// request's own, and written here, straight to the connection.
///
/// Why: Hummingbird answers a connection's requests in one task per connection, reading them from and writing
/// the answers to a `NIOAsyncChannel` (an async sequence and an async writer, each part a hop between the task and
/// the event loop); a stream's connection kept that task's frames and the async channel's buffers while it was
/// open (`bench/README.md`, "Memory per stream"). A connection that carries only forwarded requests (a script's,
/// an SDK's) now has no `NIOAsyncChannel` at all, and its connection task waits, with a frame or two, for the
/// connection to close. The first request of another route makes the async channel and hands the connection
/// to Hummingbird for that request, and for every later one that is not forwarded.
///
/// Requests on one connection are answered one at a time, in order, whichever lane takes them: parts that come
/// while an answer of the other lane is being written wait here (and the connection reads no more once some do).
/// The connection's state (kept by ``GatewayHTTP1Codec``, before this one) sees every request's head and end,
/// ours included: its idle limit and a graceful stop (close once the answer in progress has ended) hold for both
/// lanes.
final class ForwardingLane: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What every connection's lane shares: which routes it takes and how it answers them.
    struct Service: Sendable {
        let routes: ForwardedRoutes
        /// Answers a request of a forwarded route (``ForwardedResponder``, the gateway's own handling of them).
        let respond: @Sendable (Request, consuming GatewayRequestContext, ForwardedRoutes.Match) async throws -> Response
        let logger: Logger
        /// The largest body the lane reads itself (``ForwardingLane/largestBody``, or the gateway's body limit
        /// if smaller). A request that declares a larger one, or sends it in chunks of no declared length, is
        /// handed to Hummingbird's handling, which reads a body as the handler asks for it: a caller without a
        /// valid key is refused before the upload ends, and a body over the limit is refused (413) once its
        /// first bytes over it come, both as before.
        let bodyLimit: Int
        /// Every answer's `Date` and `Server`, as the codec writes them (made once a second).
        let answerFields: AnswerFields

        init(routes: ForwardedRoutes, respond: @escaping @Sendable (Request, consuming GatewayRequestContext, ForwardedRoutes.Match) async throws -> Response,
             logger: Logger, serverName: String?, bodyLimit: Int) {
            self.routes = routes
            self.respond = respond
            self.logger = logger
            self.bodyLimit = bodyLimit
            answerFields = AnswerFields(server: serverName.map { HTTPField(name: .server, value: $0) })
        }
    }

    /// The `Date` and `Server` fields of the lane's answers, for the codec to write after an answer's own (in place of
    /// any the handler set): set on the answer's fields, each a look for its name and an append to swift-http-types'
    /// fields, they cost about 2,000 instructions a request (bench/README.md, "Bytes written into room counted once").
    final class AnswerFields: Sendable {
        private let server: HTTPField?
        private let cache = Mutex<(second: Int, fields: GatewayHTTP1Codec.FixedFields?)>((-1, nil))

        init(server: HTTPField?) {
            self.server = server
        }

        /// This second's.
        func now() -> GatewayHTTP1Codec.FixedFields {
            let second = time(nil)
            if let fields = cache.withLock({ $0.second == Int(second) ? $0.fields : nil }) { return fields }
            let fields = GatewayHTTP1Codec.FixedFields([HTTPDate.field(at: second)] + (server.map { [$0] } ?? []))
            cache.withLock { $0 = (Int(second), fields) }
            return fields
        }
    }

    /// Bodies up to this size are read by the lane (a chat request with text, or a small image); larger ones go to
    /// Hummingbird's handling.
    static let largestBody = 256 << 10

    private enum State {
        case idle
        /// Our request, its body (``body``) being read, with the length it declared and its route.
        case reading(HTTPRequest, length: Int, ForwardedRoutes.Match)
        /// Our request, read whole, being answered.
        case answering
        /// A request of Hummingbird's handling: whether it has been read to its end, and whether its answer has
        /// been written (either may come first).
        case passing(inboundEnded: Bool, answered: Bool)
        /// A request could not be read: the connection is closing, and nothing more is read.
        case closing
    }

    private let service: Service
    private let hummingbird: EventLoopPromise<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>
    private var asyncChannel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?
    private var state = State.idle
    /// The body of the request being read.
    private var body: ByteBuffer?
    /// Parts of the next requests, while the one before is being answered.
    private var waiting = Deque<Inbound>()  // no storage while empty, as it nearly always is

    /// What came in: a request's part, or the decoder's error (what followed could not be read).
    private enum Inbound {
        case part(HTTPRequestPart)
        case unreadable(any Error)
    }
    private var readHeld = false
    private var flushScheduled = false
    private var context: ChannelHandlerContext?
    /// The connection's event loop (kept after the handler is removed).
    private var loop: (any EventLoop)?
    /// Its executor, for the tasks of the answers (found once per connection, not once per request).
    private var executor: EventLoopTaskExecutor?
    /// The connection's codec, which writes our answers' `Date` and `Server` (``AnswerFields``): the lane is always
    /// added after it (``GatewayHTTP1``).
    private var codec: GatewayHTTP1Codec?
    /// The caller's address as the request's line gives it (no port), found at the connection's first request: its
    /// text is made by `inet_ntop`, about 3,000 instructions, the same for every request of the connection.
    private var callerAddress: String??
    /// The number of the answer being written by this lane: the calls of an answer's task that has ended
    /// its answer (or of an earlier one) change nothing.
    private var current = 0
    /// The numbers of this lane's answers whose tasks have not ended (one, or none, nearly always): a number
    /// rather than a promise each (a promise and its future per request cost about 2,000 instructions).
    private var running: [Int] = []
    /// Who waits for the answers in progress to end (``settled(on:)``, when the connection has closed).
    private var settling: [EventLoopPromise<Void>] = []
    /// Whether `hummingbird` has been completed.
    private var toldHummingbird = false

    /// `hummingbird` is completed with the async channel when a request needs Hummingbird's handling, or with
    /// `nil` when the connection closes without one.
    init(service: Service, hummingbird: EventLoopPromise<NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>?>) {
        self.service = service
        self.hummingbird = hummingbird
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loop = context.eventLoop
        executor = EventLoopTaskExecutor.of(context.eventLoop)
        codec = try? context.pipeline.syncOperations.handler(type: GatewayHTTP1Codec.self)
    }

    /// When the connection closes (its handlers are removed then, after `channelInactive`).
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        tellHummingbird()
    }

    /// Tells the connection's task whether Hummingbird's handling is needed (once).
    private func tellHummingbird() {
        guard !toldHummingbird else { return }
        toldHummingbird = true
        hummingbird.succeed(asyncChannel)
    }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !waiting.isEmpty || isBlocked {
            waiting.append(.part(part))
            return
        }
        take(part, context: context)
    }

    /// Whether a request's parts must wait: the one before has been read, and its answer is still being written.
    /// (A closing connection drops them instead.)
    private var isBlocked: Bool {
        switch state {
        case .answering, .passing(inboundEnded: true, answered: false): true
        default: false
        }
    }

    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            if let match = service.routes.match(head.method, path: head.path ?? ""), let length = Self.declaredLength(head),
                length <= service.bodyLimit
            {
                state = .reading(head, length: length, match)
            } else {
                state = .passing(inboundEnded: false, answered: false)
                pass(part, context: context)
            }
        case (.idle, _):
            // A body with no head: Hummingbird's handling refuses it as it would have.
            pass(part, context: context)
        case (.reading(_, let length, _), .body(var piece)):
            // The decoder cuts the body at its declared length, which the lane took only when within its limit.
            if body == nil {
                // Most bodies come whole: kept as read, without a copy.
                body = piece
            } else {
                // In place (the body is this handler's alone): room for the whole body once, then no copy.
                body!.reserveCapacity(minimumWritableBytes: max(0, length - body!.readableBytes))
                body!.writeBuffer(&piece)
            }
        case (.reading(let head, _, let match), .end):
            let read = body ?? ByteBuffer()
            body = nil
            start(head, body: read, match: match, context: context)
        case (.reading, .head):
            // The decoder gives a head only after an end; should it not, the connection is in no state to go on.
            body = nil
            state = .closing
            context.close(promise: nil)
        case (.closing, _):
            break
        case (.passing(inboundEnded: false, let answered), _):
            pass(part, context: context)
            if case .end = part { state = answered ? .idle : .passing(inboundEnded: true, answered: false) }
        case (.answering, _), (.passing(inboundEnded: true, _), _):
            // Blocked: `channelRead` kept it.
            waiting.append(.part(part))
        }
    }

    /// Hands a part to Hummingbird's handling, making it (the async channel) with the first.
    private func pass(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        if asyncChannel == nil {
            do {
                let made = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                    wrappingChannelSynchronously: context.channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                asyncChannel = made
                tellHummingbird()
            } catch {
                context.close(promise: nil)
                return
            }
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Goes on with the parts that waited, once an answer has ended; then reads again if a read was held.
    private func resume(context: ChannelHandlerContext) {
        guard !waiting.isEmpty else { return }
        while !isBlocked, let next = waiting.popFirst() {
            switch next {
            case .part(let part): take(part, context: context)
            case .unreadable(let error): refuse(error, context: context)
            }
        }
        // Its storage goes once it is empty again (pipelined requests are rare).
        if waiting.isEmpty { waiting = Deque() }
        // Outside a read: the async channel hands its reads on at the read's completion.
        if asyncChannel != nil { context.fireChannelReadComplete() }
        if waiting.isEmpty, readHeld {
            readHeld = false
            context.read()
        }
    }

    /// Reads go on while an answer is being written (an end of input is how a caller's departure shows), until
    /// parts of a next request wait here.
    func read(context: ChannelHandlerContext) {
        if !waiting.isEmpty {
            readHeld = true
        } else {
            context.read()
        }
    }

    /// A request that cannot be read (the HTTP/1 decoder's error): answered as Hummingbird answers it, 400 and
    /// the connection closed, when no answer has begun; else the connection is closed. While Hummingbird's
    /// handling has the connection, the error is its.
    /// It comes in its turn, after the answers to the requests read before it.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !waiting.isEmpty || isBlocked {
            waiting.append(.unreadable(error))
            return
        }
        refuse(error, context: context)
    }

    private func refuse(_ error: any Error, context: ChannelHandlerContext) {
        switch state {
        case .idle where asyncChannel == nil, .reading:
            state = .closing
            body = nil
            let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in Self.closeAfterAnswer(channel) }
        case .answering:
            state = .closing
            context.close(promise: nil)
        case .closing:
            break
        default:
            context.fireErrorCaught(error)
        }
    }

    // MARK: Answers out

    /// Hummingbird's answers pass here: the end of one lets the next request in.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard case .end = unwrapOutboundIn(data), case .passing(let inboundEnded, answered: false) = state else { return }
        if inboundEnded {
            state = .idle
            resume(context: context)
        } else {
            state = .passing(inboundEnded: false, answered: true)
        }
    }

    /// Starts answering our request (read to its end) in a task of its own.
    private func start(_ head: HTTPRequest, body: ByteBuffer, match: ForwardedRoutes.Match, context: ChannelHandlerContext) {
        state = .answering
        let request = Request(head: head, body: RequestBody(buffer: body))
        current &+= 1
        let executor = self.executor ?? EventLoopTaskExecutor.of(context.eventLoop)
        let requestTask = RequestTask()
        let lane = Handle(lane: NIOLoopBound(self, eventLoop: context.eventLoop), executor: executor, requestTask: requestTask,
                          answer: current)
        running.append(current)
        let service = self.service
        let channel = context.channel
        if callerAddress == nil { callerAddress = .some(channel.remoteAddress?.ipAddress) }
        let address = callerAddress ?? nil
        requestTask.set(Task(executorPreference: executor) {
            TaskMemory.reserve(TaskMemory.forwardedRequest)
            await service.answer(request, body: body, match: match, on: channel, from: address, through: lane)
        })
    }

    /// The head of our answer. A streamed answer's is flushed soon (with whatever follows it in the same turn of
    /// the loop); a whole answer's goes with its end, written in the same turn.
    fileprivate func writeHead(_ head: HTTPResponse, fields: GatewayHTTP1Codec.FixedFields, streamed: Bool, answer: Int) {
        guard isAnswering(answer), let context else { return }
        // Taken by the codec as it writes this head, in this call.
        codec?.nextAnswerFields = fields
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if streamed { scheduleFlush() }
    }

    /// A piece of our answer's body: `nil` when the connection took it and could take more, else what completes
    /// when it has been written (the writer waits for that: the connection's backpressure).
    fileprivate func writeBody(_ piece: ByteBuffer, streamed: Bool, answer: Int) -> EventLoopFuture<Void>? {
        guard let context, isAnswering(answer) else {
            // The connection closed (or this answer is over): the writer stops, as on a closed channel.
            return loop?.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        guard context.channel.isWritable else {
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.body(piece)), promise: written)
            return written.futureResult
        }
        context.write(wrapOutboundOut(.body(piece)), promise: nil)
        if streamed { scheduleFlush() }
        return nil
    }

    /// The end of our answer; the connection closed after it when the caller asked (`Connection: close`).
    fileprivate func writeEnd(_ trailers: HTTPFields?, close: Bool, answer: Int) {
        guard let context, isAnswering(answer) else { return }
        if close {
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: written)
            let channel = context.channel
            written.futureResult.whenComplete { _ in Self.closeAfterAnswer(channel) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
        state = .idle
        resume(context: context)
    }

    /// Whether `answer` is the one this lane is writing now.
    private func isAnswering(_ answer: Int) -> Bool {
        guard answer == current, case .answering = state else { return false }
        return true
    }

    /// Our answer could not be written whole: the connection is closed, as Hummingbird closes it.
    fileprivate func abort(answer: Int) {
        guard isAnswering(answer) else { return }
        state = .closing
        context?.close(promise: nil)
    }

    /// After an answer that closes the connection: its output is closed, as Hummingbird closes it (the caller
    /// reads the answer to its end, then the connection's end; a connection that cannot close one way, TLS,
    /// is closed).
    private static func closeAfterAnswer(_ channel: any Channel) {
        channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
    }

    fileprivate func taskEnded(_ answer: Int) {
        // An answer whose body never ended cannot be followed by another on this connection.
        abort(answer: answer)
        running.removeAll { $0 == answer }
        if running.isEmpty, !settling.isEmpty {
            let waiting = settling
            settling = []
            for promise in waiting { promise.succeed() }
        }
    }

    /// Whether a request of this connection needed Hummingbird's handling (and its async channel was made).
    var madeHummingbirdsChannel: Bool { asyncChannel != nil }

    /// The body length a head declares: 0 when none; `nil` when it is sent in chunks (no length declared).
    private static func declaredLength(_ head: HTTPRequest) -> Int? {
        // One look through the fields, each name's length compared first (two searches by name cost about 400
        // instructions a request).
        var declared: String?
        for field in head.headerFields {
            switch field.name.canonicalName.utf8.count {
            case 17 where field.name == .transferEncoding: return nil
            case 14 where field.name == .contentLength:
                // Two are no length (their values joined, as the fields' getter joins them, are no number).
                guard declared == nil else { return nil }
                declared = field.value
            default: break
            }
        }
        guard let declared else { return 0 }
        return Int(declared)
    }

    /// Completed when the request being answered by this lane, if any, has ended.
    fileprivate func settled(on loop: any EventLoop) -> EventLoopFuture<Void> {
        guard !running.isEmpty else { return loop.makeSucceededVoidFuture() }
        let promise = loop.makePromise(of: Void.self)
        settling.append(promise)
        return promise.futureResult
    }

    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.context?.flush()
        }
    }

    /// The lane, for the request's task: every call runs on the connection's event loop (at once when the task
    /// runs there, the usual case; else by a hop, in order).
    struct Handle: Sendable {
        let lane: NIOLoopBound<ForwardingLane>
        /// The executor of the connection's loop.
        let executor: EventLoopTaskExecutor
        /// The task answering the request (`nil` for the connection's own handle).
        let requestTask: RequestTask?
        /// The answer's number (``ForwardingLane/current`` when it started).
        var answer = 0

        var eventLoop: any EventLoop { lane.eventLoop }

        func run(_ body: @escaping @Sendable (ForwardingLane) -> Void) {
            let lane = self.lane
            lane.eventLoop.executeHere { body(lane.value) }
        }

        /// Completed when the lane's request in progress, if any, has ended.
        func settled() -> EventLoopFuture<Void> {
            let lane = self.lane
            return lane.eventLoop.flatSubmit { lane.value.settled(on: lane.eventLoop) }
        }
    }
}

extension ForwardingLane.Service {
    /// Answers one request, as Hummingbird's `Application` does: its own logger with a request id, the
    /// responder (an error it did not turn into an answer is a 500), the `Date` and `Server` headers; then tells
    /// the lane that the answer's task has ended.
    ///
    /// An answer of known length (a whole answer) is written by this task. A streamed one (no length) is
    /// written by a task of its own, and this one ends: a Swift task keeps the memory of its deepest frames
    /// until it ends, and those of the handling (the middleware, the checks, the admission) are not needed while
    /// the stream is open. (Hummingbird's handling gets the same from ``SeparateTaskResponder``, at the cost of a
    /// child task per request; here only a stream pays for a second task.)
    func answer(_ request: Request, body read: ByteBuffer, match: ForwardedRoutes.Match, on channel: any Channel,
                from address: String?, through lane: ForwardingLane.Handle) async {
        let closes = request.headers.value(.connection) == "close"
        let (head, body) = await respond(to: request, body: read, match: match, on: channel, from: address, executor: lane.executor,
                                         task: lane.requestTask)
        // The upstream work is done (a stream's goes on in the body's writer): nothing cancels this task any more, and
        // its handle is let go, which would else keep the task, and the memory of its deepest frames, while a stream
        // is open (24 KiB a stream, measured).
        lane.requestTask?.clear()
        let streamed = body.contentLength == nil
        let fields = answerFields.now()
        lane.run { $0.writeHead(head, fields: fields, streamed: streamed, answer: lane.answer) }
        guard streamed else {
            await Self.write(body, through: lane, streamed: false, closes: closes)
            return
        }
        Task(executorPreference: lane.executor) {
            await Self.write(body, through: lane, streamed: true, closes: closes)
        }
    }

    /// The answer's head and body.
    @inline(never)
    private func respond(to request: Request, body read: ByteBuffer, match: ForwardedRoutes.Match,
                         on channel: any Channel, from address: String?, executor: EventLoopTaskExecutor, task: RequestTask?) async -> (HTTPResponse, ResponseBody) {
        var logger = self.logger
        // Its text made once, for the `X-Request-Id` header and every log line of the request.
        logger[metadataKey: RequestIDs.key] = .string(RequestIDs.next())
        let response: Response
        do {
            // The context made where it is handed on, which takes it (`consuming`): not a copy kept here until the end.
            response = try await respond(request, Self.context(channel: channel, logger: logger, address: address, executor: executor,
                                                               body: read, task: task), match)
        } catch {
            logger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
            response = Response(status: .internalServerError, body: .init())
        }
        // Its `Date` and `Server` are written by the codec (``AnswerFields``, ``writeHead(_:fields:streamed:answer:)``).
        return (response.head, response.body)
    }

    private static func context(channel: any Channel, logger: Logger, address: String?, executor: EventLoopTaskExecutor,
                                body: ByteBuffer, task: RequestTask?) -> GatewayRequestContext {
        var context = GatewayRequestContext(source: .init(channel: channel, logger: logger), remoteAddress: address, executor: executor)
        context.readBody = body
        context.requestTask = task
        return context
    }

    /// Writes the body (closing the connection when that fails), then tells the lane the answer's task ended.
    @inline(never)
    private static func write(_ body: ResponseBody, through lane: ForwardingLane.Handle, streamed: Bool, closes: Bool) async {
        do {
            try await body.write(ForwardingLane.BodyWriter(lane: lane, streamed: streamed, closes: closes))
        } catch {
            lane.run { $0.abort(answer: lane.answer) }
        }
        lane.run { $0.taskEnded(lane.answer) }
    }
}

extension ForwardingLane {
    /// Writes an answer's body to the connection; waits only while the connection takes no more.
    struct BodyWriter: ResponseBodyWriter {
        let lane: Handle
        /// Whether the answer has no length (its pieces are flushed as they come; a whole answer's with its end).
        let streamed: Bool
        let closes: Bool

        mutating func write(_ buffer: ByteBuffer) async throws {
            let lane = self.lane
            let streamed = self.streamed
            if lane.eventLoop.inEventLoop {
                try await lane.lane.value.writeBody(buffer, streamed: streamed, answer: lane.answer)?.get()
            } else {
                try await lane.eventLoop.flatSubmit {
                    lane.lane.value.writeBody(buffer, streamed: streamed, answer: lane.answer) ?? lane.eventLoop.makeSucceededVoidFuture()
                }.get()
            }
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
            let closes = self.closes
            let lane = self.lane
            lane.run { $0.writeEnd(trailingHeaders, close: closes, answer: lane.answer) }
        }
    }
}

/// Which requests the lane takes: the forwarded routes, by method and path (`:name` one segment, `**` the rest),
/// each with what Hummingbird's router would give its handler (the parameters, the route's name). A request it
/// does not take is answered by Hummingbird's handling with the same handler, so the two lanes answer alike.
struct ForwardedRoutes: Sendable {
    /// A forwarded route: its endpoint, and its pattern as Hummingbird's router names it (the route of the metrics
    /// and of the log line: `/api/v1/models/download/status/{job}`).
    /// A class, not a struct: a request's match is copied into several frames, each copy one reference.
    final class Route: Sendable {
        let endpoint: ProxyEndpoint
        let label: String
        fileprivate let segments: [String]

        init(endpoint: ProxyEndpoint, label: String, segments: [String]) {
            self.endpoint = endpoint
            self.label = label
            self.segments = segments
        }
    }

    /// A request's route, with the parameters its path gives, as the router sets them.
    struct Match: Sendable {
        let route: Route
        let parameters: Parameters
    }

    private var exact: [String: [Route]] = [:]
    private var patterns: [Route] = []

    init(_ endpoints: [ProxyEndpoint]) {
        for endpoint in endpoints {
            let segments = endpoint.path.split(separator: "/").map(String.init)
            let route = Route(endpoint: endpoint, label: RouterPath(endpoint.path).description, segments: segments)
            if segments.contains(where: { $0.hasPrefix(":") || $0 == "**" || $0 == "*" }) {
                patterns.append(route)
            } else {
                exact["/" + segments.joined(separator: "/"), default: []].append(route)
            }
        }
    }

    /// The forwarded route of a request of `method` for `target` (a path, perhaps with a query), if any.
    func match(_ method: HTTPRequest.Method, path target: String) -> Match? {
        // The query's `?` looked for in the text's bytes at once (through its `utf8` view, about 600 instructions).
        var bytes = target
        let query = bytes.withUTF8 { $0.firstIndex(of: UInt8(ascii: "?")) }
        let path = query.map { String(decoding: target.utf8.prefix($0), as: UTF8.self) } ?? target
        if let routes = exact[path] {
            return routes.first { $0.endpoint.method == method }.map { Match(route: $0, parameters: Parameters()) }
        }
        let segments = path.split(separator: "/")
        for route in patterns where route.endpoint.method == method {
            if let parameters = Self.parameters(segments, of: path, route.segments) { return Match(route: route, parameters: parameters) }
        }
        return nil
    }

    /// The parameters of a path (its segments) that matches a pattern, as the router's: `:name` by its name, `**`
    /// the rest of the path; `nil` when it does not match.
    private static func parameters(_ path: [Substring], of whole: String, _ pattern: [String]) -> Parameters? {
        var parameters = Parameters()
        for (index, expected) in pattern.enumerated() {
            if expected == "**" {
                guard path.count > index else { return nil }
                parameters.setCatchAll(whole[path[index].startIndex...])
                return parameters
            }
            guard index < path.count else { return nil }
            if expected.hasPrefix(":") {
                parameters[Substring(expected.dropFirst())] = path[index]
            } else if expected != "*" {
                guard path[index] == expected else { return nil }
            }
        }
        return path.count == pattern.count ? parameters : nil
    }
}

/// The `Date` header's value (RFC 9110's IMF-fixdate), made at most once a second.
enum HTTPDate {
    /// The `Date` field of the second `at` (seconds since 1970); kept for the second by its caller
    /// (``ForwardingLane/AnswerFields``).
    static func field(at second: time_t) -> HTTPField {
        var seconds = second
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let year = Int(parts.tm_year) + 1900
        let text = ByteWriter.string(capacity: ByteWriter.decimalCount(year) + 25) { text in
            text.write(days[Int(parts.tm_wday) % 7])
            text.write(", " as StaticString)
            text.write(twoDigits: Int(parts.tm_mday))
            text.write(UInt8(ascii: " "))
            text.write(months[Int(parts.tm_mon) % 12])
            text.write(UInt8(ascii: " "))
            text.write(decimal: year)
            text.write(UInt8(ascii: " "))
            text.write(twoDigits: Int(parts.tm_hour))
            text.write(UInt8(ascii: ":"))
            text.write(twoDigits: Int(parts.tm_min))
            text.write(UInt8(ascii: ":"))
            text.write(twoDigits: Int(parts.tm_sec))
            text.write(" GMT" as StaticString)
        }
        return HTTPField(name: .date, value: text)
    }
}
