import DequeModule
import GSEAI
import GSEAIFormats
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The gateway's HTTP/1 server codec, after SwiftNIO's request decoder: requests become swift-http-types'
/// parts as with swift-nio-extras' `HTTP1ToHTTPServerCodec` (``request(_:secure:)``), and answers are written straight to bytes, where
/// that codec turned each into SwiftNIO's parts for SwiftNIO's `HTTPResponseEncoder` (a second copy of every
/// head's fields, then one string write per name and value: about 25,000 instructions of a forwarded request's
/// 460,000, `bench/README.md`, "The caller's answer written as bytes").
///
/// The bytes are those SwiftNIO's encoder writes, byte for byte (a test compares the two over random heads):
/// - the status line `HTTP/1.1 <code> <reason>`, the reason SwiftNIO's for a code it knows;
/// - the fields in their order, by their names as given, with the framing set as SwiftNIO's encoder sets it:
///   an answer that cannot have a body (1xx, 204, 304, or a `CONNECT`'s) loses `Content-Length` and
///   `Transfer-Encoding`; one with `Content-Length` loses `Transfer-Encoding`; any other gets
///   `transfer-encoding: chunked` in place of its own, at the end, and its body in chunks;
/// - the answer to a `HEAD` request keeps its head's framing (what a `GET` would have had), and neither it nor a
///   `CONNECT`'s writes a body: a body's write fails with SwiftNIO's `responseBodyNotAllowed`. The requests' methods
///   are kept in order as they are read (SwiftNIO's decoder told its encoder; here the codec sees them itself), a
///   non-final 1xx answer not taking a request's turn;
/// - but for its own fields (``FixedFields``, the security headers), which it writes into every final answer after the
///   answer's own, and the fields given for one answer (``nextAnswerFields``: the forwarding lane's `Date` and
///   `Server`), a field of the answer under one of their names left out (the tests that compare its bytes with
///   SwiftNIO's encoder build it without its own, `.empty`, and give none).
///
/// It also keeps the connection's state, as Hummingbird's `HTTPConnectionStateHandler` kept it in a handler of its
/// own after this one (``ConnectionState``): a connection idle for ``idleTimeout`` (no request being read or
/// answered) is closed, and a graceful stop (`ChannelShouldQuiesceEvent`) closes it at once when idle, else once the
/// answers in progress have been written. One handler less that every request's parts pass through, both ways, each
/// pass a dynamic cast of the part (bench/README.md, "Fewer hops, the connection's state in the codec").
final class GatewayHTTP1Codec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = IOData

    private let secure: Bool
    /// The fields every final answer gets, whatever its handler set under their names (``SecurityHeaders``).
    private let fixedFields: FixedFields
    /// Fields for the next answer only, as ``fixedFields`` (a field of the answer under one of their names left out),
    /// given by a handler after the codec just before it writes that answer's head, through handlers that pass writes on
    /// in the same call (``CallerDepartureHandler``): the forwarding lane's `Date` and `Server` (bench/README.md, "Bytes
    /// written into room counted once"). Taken by the next head written, and written only if it is a final one.
    var nextAnswerFields: FixedFields?
    /// For each request read and not yet answered: whether it was a `HEAD` or a `CONNECT`, and which.
    private var pending = Deque<BodylessMethod?>()
    /// The answer being written goes in chunks.
    private var chunked = false
    /// The answer being written has no body (a `HEAD`'s or a `CONNECT`'s).
    private var noBody = false
    /// A final answer's head written without a promise, held until what follows it: its body's first piece (sent in
    /// one buffer with it when small), its end, a flush or another head. One write through the rest of the pipeline
    /// for a whole answer's head and body, not two (bench/README.md, "JSON objects, writes and turns").
    private var heldHead: ByteBuffer?

    /// Whether the connection is idle, and since when (``ConnectionState``).
    private var state: ConnectionState
    /// Fires when the connection may have been idle for its limit.
    private var idleTimer: Scheduled<Void>?

    enum BodylessMethod {
        case head, connect
    }

    /// - Parameter idleTimeout: how long a connection may be idle (no request being read or answered) before it is
    ///   closed; `nil`: no limit.
    init(secure: Bool, idleTimeout: TimeAmount? = nil, fixedFields: FixedFields = .security) {
        self.secure = secure
        self.fixedFields = fixedFields
        self.state = ConnectionState(idleTimeout: idleTimeout)
    }

    // MARK: The connection's state

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { becameActive(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        writeHeldHead(context)
        stopIdleCheck()
    }

    func channelActive(context: ChannelHandlerContext) {
        becameActive(context)
        context.fireChannelActive()
    }

    private func becameActive(_ context: ChannelHandlerContext) {
        if let deadline = state.becameActive(now: context.eventLoop.now) { scheduleIdleCheck(context, at: deadline) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.becameInactive()
        stopIdleCheck()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // A graceful stop: taken here, not passed on.
        if state.shouldQuiesce() { context.close(promise: nil) }
    }

    private func scheduleIdleCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        guard idleTimer == nil else { return }
        idleTimer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(deadline: deadline) { [self] in
            idleTimer = nil
            switch state.idleCheck(now: context.eventLoop.now) {
            case .close: context.close(promise: nil)
            case .lookAgain(let deadline): scheduleIdleCheck(context, at: deadline)
            case .nothing: break
            }
        }
    }

    private func stopIdleCheck() {
        idleTimer?.cancel()
        idleTimer = nil
    }

    /// Adds SwiftNIO's request decoder (as `configureHTTPServerPipeline` adds it: no pipelining assistance, error
    /// handling or header validation; not wired to an encoder, since this codec keeps the requests' methods itself)
    /// and the codec, for the gateway's connections and the tests.
    static func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, limits: NIOHTTPDecoderLimitConfiguration,
                            idleTimeout: TimeAmount? = nil, fixedFields: FixedFields = .security) throws {
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)))
        try pipeline.addHandler(GatewayHTTP1Codec(secure: false, idleTimeout: idleTimeout, fixedFields: fixedFields))
    }

    /// Fields written into every final answer's head (not a non-final 1xx's) after its own, from bytes made once; a
    /// field of the answer under one of their names is left out (so each is there once, with this value).
    ///
    /// The security headers (``SecurityHeaders``) were set by the gateway's middleware on every answer it made, each
    /// a look for the name and an append to swift-http-types' fields (about 1,100 instructions a field), then written
    /// by this codec a field at a time: about 6,000 instructions a request (bench/README.md, "Bytes written into room
    /// counted once"). Here they also reach the answers no middleware makes (a request the lane or Hummingbird refuses
    /// before any handler runs).
    struct FixedFields: Sendable {
        /// The fields' lines, `name: value` and a line end each.
        let bytes: ByteBuffer
        /// Their names, lowercase.
        let names: [String]
        /// The lengths of their names, a bit each (bit 63 for 63 bytes and more): a name of another length is none of
        /// theirs at one look, without a look at each (an answer's usual fields are of other lengths: about 400
        /// instructions a request; bench/README.md, "Stack room for the log line, promises and conversions left out").
        private let lengths: UInt64

        init(_ fields: [HTTPField]) {
            bytes = ByteBuffer.written(trying: fields.count * usualField) { bytes in
                for field in fields { writeLine(field.name.rawName, field.value, to: &bytes) }
            }
            names = fields.map(\.name.canonicalName)
            lengths = names.reduce(0) { $0 | Self.bit($1.utf8.count) }
        }

        private static func bit(_ length: Int) -> UInt64 {
            1 << UInt64(min(length, 63))
        }

        /// No fields (the codec's tests against SwiftNIO's encoder, an answer given none).
        static let empty = FixedFields([])
        static let security = FixedFields(SecurityHeaders.fields)

        /// Whether `name` (lowercase, `length` bytes) is one of these fields' (its length looked at first: a comparison
        /// of names costs more).
        func contains(_ name: String, length: Int) -> Bool {
            lengths & Self.bit(length) != 0 && names.contains { $0.utf8.count == length && $0 == name }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        state.read(part, now: context.eventLoop.now)
        switch part {
        case .head(let head):
            pending.append(head.method == .HEAD ? .head : head.method == .CONNECT ? .connect : nil)
            do {
                context.fireChannelRead(wrapInboundOut(.head(try Self.request(head, secure: secure))))
            } catch {
                context.fireErrorCaught(error)
            }
        case .body(let body):
            context.fireChannelRead(wrapInboundOut(.body(body)))
        case .end(let trailers):
            context.fireChannelRead(wrapInboundOut(.end(trailers.map { HTTPFields($0, splitCookie: false) })))
        }
    }

    /// swift-nio-extras' conversion of a request's head, but a target in origin form (`/…`, nearly every one) is
    /// taken as its own path: that conversion reads every target with Foundation's `URLComponents` to find the path
    /// of an absolute one (`http://host/path`), 3,500 instructions a request, and a target that begins with `/` has
    /// no scheme, so it gave the target back unchanged.
    static func request(_ head: HTTPRequestHead, secure: Bool) throws -> HTTPRequest {
        guard head.uri.utf8.first == UInt8(ascii: "/") else { return try HTTPRequest(head, secure: secure, splitCookie: false) }
        return HTTPRequest(method: try HTTPRequest.Method(head.method), scheme: secure ? "https" : "http",
                           authority: head.headers.first(name: "Host"), path: head.uri,
                           headerFields: fields(head.headers))
    }

    /// swift-nio-extras' `HTTPFields(_:splitCookie: false)`: the fields in order, the first `Host` (any case) left
    /// out (it is the request's authority), a name that is not a token dropped. The `Host` is found by its bytes:
    /// that conversion lowercased every name up to it (a string made for each, about 190 instructions).
    static func fields(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = HTTPFields()
        fields.reserveCapacity(headers.count)
        var firstHost = true
        for (name, value) in headers {
            if firstHost && ASCII.equals(lowercasing: name, "host") {
                firstHost = false
                continue
            }
            if let name = KnownFieldNames.name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        return fields
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            writeHeldHead(context)
            // Read once: swift-http-types makes the status from its pseudo-field's text at each read.
            let status = response.status
            let code = status.code
            // A non-final informational answer is followed by the request's answer.
            let final = !((100..<200).contains(code) && code != 101)
            var method: BodylessMethod?
            if final, let first = pending.popFirst() {
                method = first
                // As SwiftNIO's encoder: set when a request's turn is taken, cleared at the answer's end.
                noBody = first != nil
            }
            // Taken at any head, so that fields given for an answer never reach another; written only into a final one.
            let given = nextAnswerFields.take()
            let own = final ? given : nil
            let head = Self.head(response, status: status, answering: method, fixed: final ? fixedFields : .empty,
                                 own: own ?? .empty)
            chunked = head.chunked && !noBody
            if final && promise == nil {
                heldHead = head.bytes
            } else {
                context.write(wrapOutboundOut(.byteBuffer(head.bytes)), promise: promise)
            }
        case .body(let piece):
            if noBody {
                promise?.fail(NIOHTTPResponseEncoderError.responseBodyNotAllowed)
            } else if chunked && piece.readableBytes > 0 {
                // Taken, so that the framing writes into the head's own room (a buffer held twice is copied).
                ChunkedBody.frame(piece, after: heldHead.take()) { buffer, last in
                    // The last write's promise: a write fails only when the connection does, and then every later one.
                    context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: last ? promise : nil)
                }
            } else if heldHead != nil, piece.readableBytes <= ChunkedBody.copiedUpTo {
                // Written into the head's room, which a usual head leaves for a small body.
                var buffer = heldHead.take()!
                buffer.writeImmutableBuffer(piece)
                context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
            } else {
                writeHeldHead(context)
                context.write(wrapOutboundOut(.byteBuffer(piece)), promise: promise)
            }
        case .end(let trailers):
            writeHeldHead(context)
            noBody = false
            let action = state.answerEnded(now: context.eventLoop.now)
            guard action != .close else {
                // A graceful stop waited for this answer: closed once all of it has been sent (a close drops the
                // writes still waiting for the socket: a slow reader's last pieces and the body's end). A caller
                // that takes nothing more is let go by its stall limit (`CallerDepartureHandler`), and the server's
                // stop has its own time limit.
                let sent = context.eventLoop.makePromise(of: Void.self)
                writeEnd(trailers, context: context, promise: sent)
                context.flush()
                sent.futureResult.assumeIsolatedUnsafeUnchecked().whenComplete { result in
                    promise?.completeWith(result)
                    context.close(promise: nil)
                }
                return
            }
            if case .lookAgain(let deadline) = action { scheduleIdleCheck(context, at: deadline) }
            writeEnd(trailers, context: context, promise: promise)
        }
    }

    func flush(context: ChannelHandlerContext) {
        writeHeldHead(context)
        context.flush()
    }

    /// Writes the head held (``heldHead``), if any.
    private func writeHeldHead(_ context: ChannelHandlerContext) {
        guard let head = heldHead.take() else { return }
        context.write(wrapOutboundOut(.byteBuffer(head)), promise: nil)
    }

    /// The answer's end: the last chunk (with any trailers) of a chunked body, else nothing.
    private func writeEnd(_ trailers: HTTPFields?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        if chunked, let trailers {
            let bytes = ByteBuffer.written(trying: Self.usualHead + trailers.count * Self.usualField) { bytes in
                bytes.write("0\r\n" as StaticString)
                for field in trailers { Self.writeLine(field.name.rawName, field.value, to: &bytes) }
                bytes.write("\r\n" as StaticString)
            }
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        } else if chunked {
            context.write(wrapOutboundOut(.byteBuffer(ChunkedBody.last)), promise: promise)
        } else if let promise {
            // Nothing to send; the promise is kept for the moment all before it has been.
            context.write(wrapOutboundOut(.byteBuffer(ByteBuffer())), promise: promise)
        }
    }

    /// The head's bytes (`given`: the answer's status, read once), and whether its body goes in chunks (before a `HEAD`'s
    /// suppression).
    static func head(_ response: HTTPResponse, status given: HTTPResponse.Status, answering method: BodylessMethod?,
                     fixed: FixedFields, own: FixedFields = .empty) -> (bytes: ByteBuffer, chunked: Bool)
    {
        let code = given.code
        // SwiftNIO's reason for a code it knows, the answer's own for another.
        let status = HTTPResponseStatus(statusCode: code, reasonPhrase: given.reasonPhrase)
        let hasBody = method != .connect && status.mayHaveResponseBody
        // The fields as they are, less those the framing replaces (no copy of them to edit).
        let fields = response.headerFields
        let chunked = hasBody && !fields.contains(.contentLength)
        // Written in one pass into room for a usual head (bench/README.md, "Bytes written into room counted once"); a
        // head that does not fit (long values) is written again into room for all of it. The buffer is the one sent.
        let reason = status.reasonPhrase
        let bytes = ByteBuffer.written(trying: usualHead + fields.count * usualField) { bytes in
            bytes.write("HTTP/1.1 " as StaticString)
            bytes.write(decimal: code)
            bytes.write(UInt8(ascii: " "))
            bytes.write(reason)
            bytes.write("\r\n" as StaticString)
            for field in fields where isWritten(field, hasBody: hasBody, fixed: fixed, own: own) {
                writeLine(field.name.rawName, field.value, to: &bytes)
            }
            own.bytes.withUnsafeReadableBytes { bytes.write($0) }
            fixed.bytes.withUnsafeReadableBytes { bytes.write($0) }
            if chunked { bytes.write(chunkedField) }
            bytes.write("\r\n" as StaticString)
        }
        return (bytes, chunked)
    }

    /// The room a head is first written into: for its status line, the blank line and the codec's own fields (about
    /// 300 bytes, nearly all the security policy's), and for each field.
    private static let usualHead = 512
    private static let usualField = 64

    /// Whether a field of the answer is written as it is: not one the framing replaces (its name's length looked at
    /// first: a comparison of names costs more), nor one of the codec's own or of those given for this answer.
    private static func isWritten(_ field: HTTPField, hasBody: Bool, fixed: FixedFields, own: FixedFields) -> Bool {
        let name = field.name.canonicalName
        let length = name.utf8.count
        switch length {
        case 17: if field.name == .transferEncoding { return false }
        case 14: if !hasBody && field.name == .contentLength { return false }
        default: break
        }
        return !fixed.contains(name, length: length) && !own.contains(name, length: length)
    }

    private static let chunkedField: StaticString = "transfer-encoding: chunked\r\n"

    /// A field's line: `name: value` and a line end.
    private static func writeLine(_ name: String, _ value: String, to bytes: inout ByteWriter) {
        bytes.write(name)
        bytes.write(": " as StaticString)
        bytes.write(value)
        bytes.write("\r\n" as StaticString)
    }
}

extension ByteBuffer {
    /// The bytes `body` writes, in a buffer of their own: into room for `usual` bytes, and if they did not fit, written
    /// again into room for all of them (`body` must write the same bytes each time, asked for with ``ByteWriter/needed``).
    /// For what is not worth counting beforehand: nearly always one pass. Into the buffer that is sent: an array, then a
    /// copy, cost its allocation and its type's look-up (about 900 instructions; bench/README.md, "Stack room for the
    /// log line, promises and conversions left out"). What follows them in the same buffer has the room `usual` leaves.
    static func written(trying usual: Int, _ body: (inout ByteWriter) -> Void) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: usual)
        var needed = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: usual) { room in
            ByteWriter.write(into: UnsafeMutableRawBufferPointer(rebasing: room[..<usual])) { writer in
                writer.cutsSilently = true
                body(&writer)
                needed = writer.needed
            }
        }
        guard needed > usual else { return buffer }
        buffer.clear()
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: needed) { room in
            ByteWriter.write(into: UnsafeMutableRawBufferPointer(rebasing: room[..<needed]), body)
        }
        return buffer
    }
}

/// A connection's state, for its idle limit and a graceful stop: as Hummingbird's `HTTPConnectionStateHandler` keeps
/// it (the same rules), in ``GatewayHTTP1Codec``, which sees every request's parts and every answer's end.
///
/// - A connection is idle when no request is being read and every request read has been answered. The idle limit
///   counts from the last part read or the last answer's end; a request being read (a slow upload) is not idle, but its
///   parts must keep coming within the limit; an answer being made (however long an upstream takes) holds the
///   connection open, also while the next request, sent behind it, is still being read (Hummingbird's handler closed
///   such a connection in the middle of the answer).
/// - A graceful stop closes an idle connection at once, and one with answers in progress once they have ended and been
///   sent (Hummingbird's closed it as the last answer's end was written, dropping what still waited for the socket).
struct ConnectionState {
    let idleTimeout: TimeAmount?
    /// Requests read (their heads) and not yet answered (their answers' ends).
    private(set) var inProgress = 0
    private var readingRequest = false
    private var lastActive = NIODeadline.uptimeNanoseconds(0)
    private var active = false
    private var closeAfterAnswers = false

    init(idleTimeout: TimeAmount?) {
        self.idleTimeout = idleTimeout
    }

    /// What to do after an event.
    enum Action: Equatable {
        case nothing
        /// Look whether the connection has been idle for its limit at this time (a look already scheduled stands).
        case lookAgain(NIODeadline)
        case close
    }

    /// The connection is open: when to look first, if it has a limit.
    mutating func becameActive(now: NIODeadline) -> NIODeadline? {
        active = true
        lastActive = now
        return idleTimeout.map { now + $0 }
    }

    mutating func becameInactive() {
        active = false
    }

    /// A part of a request read. (The time is not read at a request's end while its answer is still to come: that
    /// answer's end sets it.)
    mutating func read(_ part: HTTPServerRequestPart, now: @autoclosure () -> NIODeadline) {
        switch part {
        case .head:
            lastActive = now()
            readingRequest = true
            inProgress &+= 1
        case .body:
            lastActive = now()
        case .end:
            readingRequest = false
            if inProgress == 0 { lastActive = now() }
        }
    }

    /// An answer's end has been written.
    mutating func answerEnded(now: NIODeadline) -> Action {
        // Never below zero, whatever a handler writes.
        inProgress = max(0, inProgress &- 1)
        if inProgress == 0 && closeAfterAnswers { return .close }
        // Idle now, or reading only the next request (sent behind this one, its body not all come): the limit counts
        // from here. Else the next request's answer is being made, and its end looks.
        guard !answering, let idleTimeout, active else { return .nothing }
        lastActive = now
        return .lookAgain(now + idleTimeout)
    }

    /// Whether an answer is being made: a request has been read whole and not yet answered. (The request being read,
    /// if any, is the last one counted; one answered early, before its body's end, is no longer counted.)
    private var answering: Bool {
        inProgress > (readingRequest ? 1 : 0)
    }

    /// The scheduled look: close if idle for the limit, look again when the limit may next be reached, or nothing
    /// while an answer is being made (its end schedules the next look).
    func idleCheck(now: NIODeadline) -> Action {
        guard let idleTimeout, active else { return .nothing }
        if answering { return .nothing }
        let deadline = lastActive + idleTimeout
        return now >= deadline ? .close : .lookAgain(deadline)
    }

    /// A graceful stop: whether to close now (nothing in progress); else the connection closes after its answers.
    mutating func shouldQuiesce() -> Bool {
        guard inProgress > 0 else { return true }
        closeAfterAnswers = true
        return false
    }
}
