/// One Server-Sent Event, as defined by the HTML standard's `text/event-stream` format.
public struct ServerSentEvent: Sendable, Hashable {
    /// The `event:` field; `nil` means the default type, `message`.
    public var event: String?
    /// The `data:` lines joined with newlines.
    public var data: String
    /// The last `id:` seen in the stream up to this event.
    public var id: String?
    /// The `retry:` field in milliseconds, if this event carried one.
    public var retry: Int?

    /// Creates an event.
    public init(event: String? = nil, data: String, id: String? = nil, retry: Int? = nil) {
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry
    }

    /// The event in wire format, ending with the blank line that dispatches it.
    public var encoded: String {
        var text = ""
        if let event { text += "event: \(event)\n" }
        if let id { text += "id: \(id)\n" }
        if let retry { text += "retry: \(retry)\n" }
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) {
            text += "data: \(line)\n"
        }
        return text + "\n"
    }
}

/// An incremental parser for `text/event-stream` bodies.
///
/// Feed it bytes as they arrive, in pieces of any size: lines may end in LF, CRLF or CR (also when
/// the CR and LF arrive in different pieces), `data:` may span several lines, comments are skipped,
/// and a leading byte-order mark is ignored.
public struct ServerSentEventParser: Sendable {
    private var line: [UInt8] = []
    private var sawCR = false
    private var atStart = true
    private var eventType: String?
    private var dataLines: [String] = []
    private var hasData = false
    private var retry: Int?
    /// The last event id seen, which persists across events as the standard says.
    public private(set) var lastEventID: String?

    /// Creates a parser at the start of a stream.
    public init() {}

    /// Parses the next piece of the stream and returns the events it completes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        // Pieces in contiguous memory (a ByteBuffer's view, an array) are scanned line by line; going through
        // the generic sequence byte by byte costs more than relaying the stream (a witness call per byte).
        if let events = bytes.withContiguousStorageIfAvailable({ feed(contiguous: $0) }) { return events }
        var events: [ServerSentEvent] = []
        for byte in bytes {
            if sawCR {
                sawCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            switch byte {
            case UInt8(ascii: "\r"):
                sawCR = true
                endLine(into: &events)
            case UInt8(ascii: "\n"):
                endLine(into: &events)
            default:
                line.append(byte)
            }
        }
        return events
    }

    private mutating func feed(contiguous bytes: UnsafeBufferPointer<UInt8>) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        var index = 0
        while index < bytes.count {
            if sawCR {
                sawCR = false
                if bytes[index] == UInt8(ascii: "\n") {
                    index += 1
                    continue
                }
            }
            var end = index
            while end < bytes.count, bytes[end] != UInt8(ascii: "\n"), bytes[end] != UInt8(ascii: "\r") { end += 1 }
            line.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index..<end]))
            guard end < bytes.count else { break }
            sawCR = bytes[end] == UInt8(ascii: "\r")
            endLine(into: &events)
            index = end + 1
        }
        return events
    }

    /// Ends the stream: a last line without a newline and a last event without the blank line are
    /// still delivered, because servers that close right after `data: [DONE]` are common.
    public mutating func finish() -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        if !line.isEmpty { endLine(into: &events) }
        dispatch(into: &events)
        return events
    }

    private mutating func endLine(into events: inout [ServerSentEvent]) {
        defer { line.removeAll(keepingCapacity: true) }
        if atStart {
            atStart = false
            if line.starts(with: [0xEF, 0xBB, 0xBF]) { line.removeFirst(3) }
        }
        if line.isEmpty {
            dispatch(into: &events)
            return
        }
        if line[0] == UInt8(ascii: ":") { return }
        let field: String
        var value: Substring
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = String(decoding: line[..<colon], as: UTF8.self)
            let text = String(decoding: line[(colon + 1)...], as: UTF8.self)
            value = text[...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = String(decoding: line, as: UTF8.self)
            value = ""
        }
        switch field {
        case "event": eventType = String(value)
        case "data":
            dataLines.append(String(value))
            hasData = true
        case "id":
            if !value.contains("\0") { lastEventID = String(value) }
        case "retry":
            if let number = Int(value), value.allSatisfy(\.isASCII) { retry = number }
        default: break
        }
    }

    private mutating func dispatch(into events: inout [ServerSentEvent]) {
        defer {
            eventType = nil
            dataLines.removeAll(keepingCapacity: true)
            hasData = false
            retry = nil
        }
        guard hasData else { return }
        events.append(
            ServerSentEvent(event: eventType, data: dataLines.joined(separator: "\n"), id: lastEventID, retry: retry)
        )
    }
}
