import GSEAIFormats
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// A request context that knows the peer's address, which ``RequestLog`` then logs.
public protocol RemoteAddressProviding {
    /// The peer's address, without the port; `nil` when unknown.
    var remoteAddress: String? { get }
}

/// One line per request in the log, and its id in `X-Request-Id` (``GatewayMiddleware``), so a user's report
/// can be matched to the log.
///
/// The line holds the request id, method, route pattern, status, duration and, when the context is
/// ``RemoteAddressProviding``, the peer's address. It deliberately holds nothing else: headers,
/// cookies and query strings carry credentials, bodies carry people's conversations, and even raw
/// paths carry ids, so the route pattern stands in for the path.
struct RequestLog<Context: RequestContext>: Sendable {
    let level: Logger.Level
    /// The peer's address, when the context knows it (decided once here, not by a cast per request).
    let remoteAddress: @Sendable (Context) -> String?

    init(level: Logger.Level) {
        self.level = level
        self.remoteAddress = { _ in nil }
    }

    /// For a context that knows the peer's address, which the line then holds.
    init(level: Logger.Level) where Context: RemoteAddressProviding {
        self.level = level
        self.remoteAddress = { $0.remoteAddress }
    }

    /// The request's id, put in its logger's metadata if it has none yet (Hummingbird's contexts have it; a
    /// context made elsewhere may not), so that every line of the request is joined to it.
    static func identify(_ context: inout Context) -> String {
        if case .string(let id)? = context.logger[metadataKey: RequestIDs.key] { return id }
        // None yet, or Hummingbird's own (a `RequestID`, on its lane): one of the gateway's in its place, so that every
        // id has the same shape (Hummingbird's drops its first half's leading zeros), made once for the header and
        // every line.
        let text = RequestIDs.next()
        context.logger[metadataKey: RequestIDs.key] = .string(text)
        return text
    }

    /// The request's line: written by the gateway's own handler from pairs (no dictionary made), else through the
    /// logger's API with the same metadata.
    func log(_ request: Request, _ context: Context, route: String, status: HTTPResponse.Status, duration: Duration) {
        let remoteAddress = remoteAddress(context)
        guard let handler = context.logger.handler as? GatewayLogHandler else {
            var metadata: Logger.Metadata = [
                "http.method": .string(request.method.rawValue), "http.route": .string(route),
                "http.status": .stringConvertible(status.code), "duration_ms": .stringConvertible(Milliseconds(duration)),
            ]
            if let remoteAddress { metadata["client.address"] = .string(remoteAddress) }
            context.logger.log(level: level, "request", metadata: metadata)
            return
        }
        // In the line's order (its keys sorted), so that the handler's sort has little to do; each value as its text.
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(6)
        if let remoteAddress { pairs.append(("client.address", remoteAddress)) }
        pairs.append(("duration_ms", Milliseconds(duration).description))
        pairs.append(("http.method", request.method.rawValue))
        pairs.append(("http.route", route))
        pairs.append(("http.status", String(status.code)))
        handler.log(level: level, message: "request", pairs: pairs, source: Self.source)
    }

    /// The line's source, as swift-log names it for a call from here: the module.
    static var source: String { "GSEAIGateway" }
}

/// A duration in milliseconds to two decimals (finer digits are noise in a log line), written by integer
/// arithmetic: `Double`'s shortest-digits printing cost more than the rest of the line.
struct Milliseconds: CustomStringConvertible, Sendable {
    /// Hundredths of a millisecond, rounded; at least 0.
    let hundredths: Int

    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        // 10 µs are 10^13 attoseconds; a duration of more than about 2.9 million years is clamped.
        let (whole, overflow) = Int(max(0, seconds)).multipliedReportingOverflow(by: 100_000)
        hundredths = overflow ? .max : whole.addingSaturated(Int((max(0, attoseconds) + 5_000_000_000_000) / 10_000_000_000_000))
    }

    var description: String {
        // Written digit by digit: an interpolation of three parts cost about 900 instructions a request.
        let whole = hundredths / 100
        let fraction = hundredths % 100
        return ByteWriter.string(capacity: ByteWriter.decimalCount(whole) + 3) { text in
            text.write(decimal: whole)
            text.write(UInt8(ascii: "."))
            text.write(twoDigits: fraction)
        }
    }
}

/// The requests' ids (``RequestLog/identify(_:)``, ``ForwardingLane``).
enum RequestIDs {
    /// The request id's key in the logger's metadata (Hummingbird's name for it).
    static let key = "hb.request.id"

    /// A new request id: 32 lower-case hexadecimal digits, 16 random for the process and 16 counted from a random
    /// start, like Hummingbird's `RequestID` (whose text, made with `String(_:radix:)` and padding, cost about 2,000
    /// instructions a request; this one about 200).
    static func next() -> String {
        let low = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return String(unsafeUninitializedCapacity: 32) { buffer in
            for index in 0..<16 {
                buffer[index] = idPrefix[index]
                buffer[16 + index] = hexDigit(low, index)
            }
            return 32
        }
    }

    /// The `index`th of `value`'s 16 hexadecimal digits, most significant first.
    private static func hexDigit(_ value: UInt64, _ index: Int) -> UInt8 {
        hexDigits[Int(truncatingIfNeeded: (value >> UInt64(60 - 4 * index)) & 0xF)]
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
    private static let idPrefix: [UInt8] = {
        let high = UInt64.random(in: .min ... .max)
        return (0..<16).map { hexDigit(high, $0) }
    }()
    private static let nextID = Atomic<UInt64>(UInt64.random(in: .min ... .max))
}
