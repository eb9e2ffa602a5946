import GSEAIFormats
import NIOCore
import NIOHTTP1

/// A request's head as the NIO transport sends it: its HTTP/1.1 bytes, made and checked once, in the sender's
/// task, before a connection is taken.
///
/// Why not SwiftNIO's `HTTPRequestEncoder`: each request then passed three outbound handlers (the headers'
/// validator, the response decoder that notes each request's method, the encoder), each a pipeline step with its
/// casts, and the encoder wrote the head one field at a time, with the framing headers worked out again
/// (`bench/README.md`, "The upstream request's head"). The transport frames its requests itself (it sets
/// `Content-Length` or `Transfer-Encoding: chunked`, and removes what a caller gave of either), so the head is
/// written here and goes to the socket as it is; the response decoder is told the method directly
/// (``UpstreamConnectionHandler``).
struct UpstreamRequestHead: Sendable {
    /// How the body is framed: its length (0 for a method that has a body, given none), in chunks (no length
    /// known beforehand), or no body at all.
    enum Framing: Sendable {
        case length(Int)
        case chunked
        case none
    }

    /// The request line, the fields and the blank line.
    let bytes: ByteBuffer
    /// The method, which the response decoder needs (the answer to a `HEAD` has no body).
    let method: HTTPMethod
    /// How the head frames the body.
    let framing: Framing

    /// Whether the body goes in chunks.
    var chunked: Bool {
        if case .chunked = framing { true } else { false }
    }

    /// The body's length as the head declares it (`nil`: in chunks, or no body).
    var length: Int? {
        if case .length(let length) = framing { length } else { nil }
    }

    /// The head of a `method` request for `target` (a path with its query) with the caller's `headers` (less the
    /// hop-by-hop and framing ones, which are the transport's: ``isTransportsOwn(_:)``), then `Host`,
    /// `Authorization` and the framing. Throws ``GSEAIError/invalidArgument(_:)`` for a method, target or field
    /// that cannot be sent as it is: a line break in a value would end the field there, and what follows would
    /// be read as another field or request (refused, as SwiftNIO's validator refused it).
    init(method: HTTPMethod, target: String, headers: HTTPHeaders, host: String, authorization: String, framing: Framing) throws {
        let name = method.rawValue
        guard !name.isEmpty else { throw GSEAIError.invalidArgument("the method '' cannot be sent") }
        // The framing's field value, and a negative length refused where it is written (after the fields, as before).
        var length: (count: Int, text: String)?
        if case .length(let count) = framing { length = (count, String(count)) }
        // Its size counted first (at most: the caller's fields the transport leaves out counted too, not looked at
        // twice), then each piece checked and copied into room made once (bench/README.md, "Bytes written into room
        // counted once"). Lengths of texts in memory: their sum cannot overflow.
        var size = name.utf8.count + 1 + target.utf8.count + 11 + 6 + host.utf8.count + 2 + 15 + authorization.utf8.count + 2 + 2
        for (field, value) in headers { size += field.utf8.count + 2 + value.utf8.count + 2 }
        if let length { size += 18 + length.text.utf8.count }
        if case .chunked = framing { size += Self.chunkedField.utf8CodeUnitCount }
        var bytes = ByteBufferAllocator().buffer(capacity: size)
        try bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { room in
            try ByteWriter.write(into: UnsafeMutableRawBufferPointer(rebasing: room[..<size])) { bytes in
                try Self.write(name, to: &bytes, allowing: Self.isTokenByte, else: "the method '\(name)' cannot be sent")
                bytes.write(UInt8(ascii: " "))
                guard !target.isEmpty else { throw GSEAIError.invalidArgument("the request target is empty") }
                try Self.write(target, to: &bytes, allowing: Self.isTargetByte,
                               else: "the request target holds a space, a control character or a byte above ASCII (percent-encode it)")
                bytes.write(" HTTP/1.1\r\n" as StaticString)
                for (field, value) in headers where !Self.isTransportsOwn(field) {
                    try Self.field(field, value, to: &bytes)
                }
                try Self.field("Host", host, to: &bytes)
                try Self.field("Authorization", authorization, to: &bytes)
                if let length {
                    guard length.count >= 0 else { throw GSEAIError.invalidArgument("the request body's length is negative (\(length.count))") }
                    try Self.field("Content-Length", length.text, to: &bytes)
                }
                if case .chunked = framing { bytes.write(Self.chunkedField) }
                bytes.write("\r\n" as StaticString)
                // Never sent cut: the upstream would read what follows as more fields (a miscount is a bug; a debug
                // build stops at it).
                if bytes.wasCut { throw GSEAIError.invalidArgument("the request's head could not be written whole") }
            }
        }
        self.bytes = bytes
        self.method = method
        self.framing = framing
    }

    private static let chunkedField: StaticString = "Transfer-Encoding: chunked\r\n"

    /// What the response decoder is told of the request: its method (the rest it does not read).
    var decoderHead: HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: "/")
    }

    /// The hop-by-hop and framing fields, lowercased: the transport's own, never a caller's.
    private static let transportsOwn: [[UInt8]] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                                                   "upgrade", "content-length", "host", "authorization"].map { Array($0.utf8) }

    /// Whether a caller's field is one the transport sets itself (or must not pass on), in any case.
    static func isTransportsOwn(_ field: String) -> Bool {
        let count = field.utf8.count
        return transportsOwn.contains { own in
            own.count == count && zip(field.utf8, own).allSatisfy { byte, lower in
                (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == lower
            }
        }
    }

    private static func field(_ name: String, _ value: String, to bytes: inout ByteWriter) throws {
        guard !name.isEmpty else { throw GSEAIError.invalidArgument("the header name '' cannot be sent") }
        try write(name, to: &bytes, allowing: isTokenByte, else: "the header name '\(name)' cannot be sent")
        bytes.write(": " as StaticString)
        try write(value, to: &bytes, allowing: isValueByte,
                  else: "the value of the header '\(name)' holds a line break or a control character")
        bytes.write("\r\n" as StaticString)
    }

    /// Writes `text`'s bytes, each of which `allowed` must accept (checked before any is written).
    private static func write(_ text: String, to bytes: inout ByteWriter, allowing allowed: (UInt8) -> Bool,
                              else message: @autoclosure () -> String) throws {
        // Read at once, also a string of up to 15 bytes (kept inside the `String`, whose `utf8` view was read byte by
        // byte; bench/README.md, "JSON objects, writes and turns").
        var text = text
        try text.withUTF8 { utf8 in
            for byte in utf8 where !allowed(byte) { throw GSEAIError.invalidArgument(message()) }
            bytes.write(utf8)
        }
    }

    /// RFC 9110's `tchar`: the bytes of a method or a field's name.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// A field value's bytes: visible characters, spaces and tabs, and bytes above ASCII (RFC 9110's
    /// `field-content` with `obs-text`); never a line break, NUL or another control character.
    static func isValueByte(_ byte: UInt8) -> Bool {
        byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
    }

    /// A request target's bytes: visible ASCII only. A space or a control character would end the request line
    /// or make it something else, and a byte above ASCII must be percent-encoded (RFC 9112; SwiftNIO's parser, and
    /// so a model server on it, refuses the request otherwise).
    static func isTargetByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F
    }
}

/// SwiftNIO's response decoder without its watch of the requests written (``UpstreamConnectionHandler`` writes
/// bytes, not request parts, and tells the decoder each request's method itself): the same decoder, as an
/// inbound handler only.
struct UpstreamResponseDecoder: ByteToMessageDecoder {
    typealias InboundOut = HTTPClientResponsePart

    let decoder: HTTPResponseDecoder

    init(_ decoder: HTTPResponseDecoder) {
        self.decoder = decoder
    }

    func decoderAdded(context: ChannelHandlerContext) {
        decoder.decoderAdded(context: context)
    }

    func decoderRemoved(context: ChannelHandlerContext) {
        decoder.decoderRemoved(context: context)
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        try decoder.decode(context: context, buffer: &buffer)
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }

    func shouldReclaimBytes(buffer: ByteBuffer) -> Bool {
        decoder.shouldReclaimBytes(buffer: buffer)
    }
}

/// HTTP/1.1's chunked framing of a body: the transport's request bodies and the gateway's answers
/// (`GatewayHTTP1Codec`) write it alike.
package enum ChunkedBody {
    /// A piece of a chunked body, framed (its size in hexadecimal, the piece, a line end), as the buffers to write
    /// in order, `write` told which is the last (the one to carry a promise). A piece of up to ``copiedUpTo``
    /// bytes is copied into one buffer between its size and its line end: one write through the channel's pipeline
    /// instead of three (each write costs SwiftNIO about 1,000 instructions, more than copying such a piece;
    /// bench/README.md, "Fewer hops, the connection's state in the codec"). A larger one goes as three buffers,
    /// itself not copied. An empty piece would end the body: the caller sends none. `before`: bytes to send first
    /// (an answer's head), in the first buffer: written after them, in their own room when it is large enough.
    package static func frame(_ piece: ByteBuffer, after before: consuming ByteBuffer? = nil,
                              _ write: (_ buffer: ByteBuffer, _ last: Bool) -> Void) {
        let size = piece.readableBytes
        // The size's digits, most significant first, without leading zeros (at most 16 for an `Int`).
        let digits = size == 0 ? 1 : (Int.bitWidth - size.leadingZeroBitCount + 3) / 4
        if size <= copiedUpTo {
            var buffer = Self.room(after: before, for: digits + size + 4)
            writeSize(size, digits: digits, to: &buffer)
            buffer.writeImmutableBuffer(piece)
            buffer.writeStaticString("\r\n")
            write(buffer, true)
        } else {
            var prefix = Self.room(after: before, for: digits + 2)
            writeSize(size, digits: digits, to: &prefix)
            write(prefix, false)
            write(piece, false)
            write(lineEnd, true)
        }
    }

    /// `before` (or a new buffer) with room for `count` more bytes.
    private static func room(after before: consuming ByteBuffer?, for count: Int) -> ByteBuffer {
        // Taken (a buffer held twice would be copied as it is written to).
        guard var buffer = before.take() else { return ByteBufferAllocator().buffer(capacity: count) }
        buffer.reserveCapacity(minimumWritableBytes: count)
        return buffer
    }

    /// Pieces up to this size are framed in one buffer (``frame(_:_:)``).
    package static let copiedUpTo = 16 << 10

    /// `size` in `digits` lower-case hexadecimal digits, then a line end.
    private static func writeSize(_ size: Int, digits: Int, to buffer: inout ByteBuffer) {
        for index in stride(from: digits - 1, through: 0, by: -1) {
            let digit = UInt8(truncatingIfNeeded: (size >> (4 * index)) & 0xF)
            buffer.writeInteger(digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10)
        }
        buffer.writeStaticString("\r\n")
    }

    /// The line end after a chunk's bytes (and after the last chunk's trailers).
    package static let lineEnd = ByteBuffer(staticString: "\r\n")

    /// The last chunk of a chunked body, without trailers.
    package static let last = ByteBuffer(staticString: "0\r\n\r\n")
}
