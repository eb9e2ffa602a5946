#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import GSEAIFormats
import Logging
import Synchronization

/// The gateway's log lines on standard error, in swift-log's `StreamLogHandler` format
/// (`<time> <level> <label>: <key=value …> [<source>] <message>`, the keys sorted), written for a line per
/// request: the time's text is made once a second (UTC) rather than per line, the metadata is formatted
/// into one string without merging dictionaries, and the line goes out in one `write(2)` (whole, not
/// interleaved with another thread's; nothing buffered to lose in a crash).
public struct GatewayLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    /// The handler's metadata (``requestID`` included).
    public var metadata: Logger.Metadata {
        get {
            guard let requestID else { return others }
            var metadata = others
            metadata[RequestIDs.key] = requestID
            return metadata
        }
        set {
            var others = newValue
            requestID = others.removeValue(forKey: RequestIDs.key)
            self.others = others
        }
    }
    /// The request's id (`hb.request.id`), kept apart from the rest: set on every request's logger, where a
    /// dictionary made and a key hashed for it cost about 1,500 instructions (bench/README.md, "Fewer hops, the
    /// connection's state in the codec").
    private var requestID: Logger.Metadata.Value?
    private var others: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let descriptor: Int32

    /// A handler writing to standard error.
    public static func standardError(label: String) -> GatewayLogHandler {
        GatewayLogHandler(label: label, descriptor: 2)
    }

    init(label: String, descriptor: Int32, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.descriptor = descriptor
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { key == RequestIDs.key ? requestID : others[key] }
        set {
            if key == RequestIDs.key { requestID = newValue } else { others[key] = newValue }
        }
    }

    public func log(event: LogEvent) {
        let explicit = event.metadata.map { Array($0) } ?? []
        Self.withLine(time: Self.clock.now(), level: event.level, label: label,
                      metadata: Self.texts(effectiveMetadata(explicit, error: event.error)), source: event.source,
                      message: event.message.description, emit)
    }

    /// Writes a line whose own metadata comes as pairs of a key and its value's text (distinct keys) rather than a
    /// dictionary, if `level` is logged: the same line as a `Logger`'s call with that metadata (each value a string
    /// or printed as one), without making, merging and looking up a dictionary (the request's line, ``RequestLog``:
    /// about 3,000 instructions a request), nor copying each value through swift-log's enum of kinds (about 150
    /// instructions a pair; bench/README.md, "JSON objects, writes and turns").
    func log(level: Logger.Level, message: String, pairs: consuming [(String, String)], source: String) {
        guard level >= logLevel else { return }
        let metadata: [(String, String)]
        if others.isEmpty, metadataProvider == nil {
            // The usual request line: its own pairs, taken as they are, and its id.
            if let requestID, !pairs.contains(where: { $0.0 == RequestIDs.key }) { pairs.append((RequestIDs.key, requestID.description)) }
            pairs.sort { $0.0 < $1.0 }
            metadata = pairs
        } else {
            metadata = Self.texts(effectiveMetadata(pairs.map { ($0.0, .string($0.1)) }, error: nil))
        }
        Self.withLine(time: Self.clock.now(), level: level, label: label, metadata: metadata, source: source, message: message, emit)
    }

    /// Each value's text in a line (a string as it is, anything else printed: swift-log's `description`).
    private static func texts(_ pairs: [(String, Logger.Metadata.Value)]) -> [(String, String)] {
        pairs.map { ($0.0, $0.1.description) }
    }

    /// Writes the line in one `write(2)` (repeated only for what a short write left).
    private func emit(_ line: UnsafeRawBufferPointer) {
        var rest = line
        while !rest.isEmpty {
            let written = write(descriptor, rest.baseAddress, rest.count)
            if written > 0 {
                rest = UnsafeRawBufferPointer(rebasing: rest[written...])
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return  // Nowhere to log that logging failed.
            }
        }
    }

    /// The handler's metadata, the provider's and the line's (each overriding the one before), and the
    /// error's, as sorted pairs.
    private func effectiveMetadata(_ explicit: [(String, Logger.Metadata.Value)], error: (any Error)?) -> [(String, Logger.Metadata.Value)] {
        let provided = metadataProvider?.get() ?? [:]
        func isExplicit(_ key: String) -> Bool { explicit.contains { $0.0 == key } }
        var pairs: [(String, Logger.Metadata.Value)] = []
        pairs.reserveCapacity(others.count + provided.count + explicit.count + 3)
        if let requestID, provided[RequestIDs.key] == nil, !isExplicit(RequestIDs.key) { pairs.append((RequestIDs.key, requestID)) }
        for (key, value) in others where provided[key] == nil && !isExplicit(key) { pairs.append((key, value)) }
        for (key, value) in provided where !isExplicit(key) { pairs.append((key, value)) }
        pairs.append(contentsOf: explicit)
        if let error {
            pairs.removeAll { $0.0 == "error.message" || $0.0 == "error.type" }
            pairs.append(("error.message", .string("\(error)")))
            pairs.append(("error.type", .string(String(reflecting: type(of: error)))))
        }
        pairs.sort { $0.0 < $1.0 }
        return pairs
    }

    /// One line, ending in a newline, as UTF-8, handed to `body`: its size counted, then the pieces copied into room
    /// made once (as a `String`, each append cost a few hundred instructions, a tenth of a plain request's own work;
    /// appended to an array, about 90 more a piece than copied into room counted beforehand; bench/README.md, "Header
    /// values and JSON objects", "Bytes written into room counted once"). The room is the stack's for a usual line (an
    /// array's, about 900 instructions with its type's look-up and the allocation; "Stack room for the log line,
    /// promises and conversions left out"), the heap's for a very long one.
    static func withLine<R>(time: String, level: Logger.Level, label: String, metadata: [(String, String)],
                            source: String, message: String, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let level = level.rawValue
        // Lengths of texts in memory: their sum cannot overflow.
        var size = time.utf8.count + 1 + level.utf8.count + 1 + source.utf8.count + 4 + message.utf8.count + 1
        if !label.isEmpty { size += 1 + label.utf8.count }
        for (key, value) in metadata { size += 2 + key.utf8.count + value.utf8.count }
        return try withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { room in
            let count = ByteWriter.write(into: room) { line in
                line.write(time)
                line.write(UInt8(ascii: " "))
                line.write(level)
                if !label.isEmpty {
                    line.write(UInt8(ascii: " "))
                    line.write(label)
                }
                line.write(UInt8(ascii: ":"))
                for (key, value) in metadata {
                    line.write(UInt8(ascii: " "))
                    line.write(key)
                    line.write(UInt8(ascii: "="))
                    line.write(value)
                }
                line.write(" [" as StaticString)
                line.write(source)
                line.write("] " as StaticString)
                line.write(message)
                line.write(UInt8(ascii: "\n"))
            }
            return try body(UnsafeRawBufferPointer(rebasing: room[..<count]))
        }
    }

    /// The time's text, remade when the second changes.
    static let clock = SecondClock()

    final class SecondClock: Sendable {
        private let cached = Mutex<(second: Int, text: String)>((-1, ""))

        func now() -> String {
            var spec = timespec()
            clock_gettime(CLOCK_REALTIME, &spec)
            let second = Int(spec.tv_sec)
            if let text = cached.withLock({ $0.second == second ? $0.text : nil }) { return text }
            let text = Self.format(second)
            cached.withLock { $0 = (second, text) }
            return text
        }

        /// `YYYY-MM-DDTHH:MM:SS+0000`: `StreamLogHandler`'s form, in UTC.
        static func format(_ second: Int) -> String {
            var time = time_t(second)
            var parts = tm()
            guard gmtime_r(&time, &parts) != nil else { return "<unknown>" }
            let year = Int(parts.tm_year) + 1900
            return ByteWriter.string(capacity: ByteWriter.decimalCount(year) + 20) { text in
                text.write(decimal: year)
                for (separator, part) in [(UInt8(ascii: "-"), parts.tm_mon + 1), (UInt8(ascii: "-"), parts.tm_mday),
                                          (UInt8(ascii: "T"), parts.tm_hour), (UInt8(ascii: ":"), parts.tm_min),
                                          (UInt8(ascii: ":"), parts.tm_sec)] {
                    text.write(separator)
                    text.write(twoDigits: Int(part))
                }
                text.write("+0000" as StaticString)
            }
        }
    }
}
