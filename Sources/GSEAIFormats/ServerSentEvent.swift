#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
///
/// An event is held in memory until its blank line, so a server that never sends one could make it grow
/// without end: past ``maxEventBytes`` the event is dropped and ``overflowed`` is set.
public struct ServerSentEventParser: Sendable {
    /// The most bytes one event may hold, its lines together.
    public let maxEventBytes: Int
    /// Whether an event was dropped for being larger than ``maxEventBytes``.
    public private(set) var overflowed = false
    /// Bytes held for the event being read (its lines so far, and the line being read).
    private var eventBytes = 0
    /// Set when the event being read is too large: its remaining lines are skipped up to its end.
    private var discarding = false
    /// Whether the line being read had bytes that were skipped (so it is not a blank line when it ends).
    private var lineSkipped = false
    private var line: [UInt8] = []
    private var sawCR = false
    private var atStart = true
    private var eventType: String?
    /// The event's data so far: its `data` lines' bytes, joined by `\n` (a string is made of them only for an
    /// event that is kept, once).
    private var data: [UInt8] = []
    private var hasData = false
    private var retry: Int?
    /// The last event id seen, which persists across events as the standard says.
    public private(set) var lastEventID: String?

    /// Creates a parser at the start of a stream.
    public init(maxEventBytes: Int = 16 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Keeps `count` more bytes of the current line, unless the event would grow past the limit.
    private mutating func hold(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        guard !discarding else {
            lineSkipped = true
            return false
        }
        guard count <= maxEventBytes - eventBytes else {
            discarding = true
            lineSkipped = true
            overflowed = true
            line.removeAll()
            data.removeAll()
            hasData = false
            return false
        }
        eventBytes += count
        return true
    }

    /// Which completed events to make: given each one's type (`nil`: the default) and data (its bytes, the
    /// lines joined by `\n`), whether to make it. An event not made costs no string and no copy; the stream's
    /// state (the last event id) goes on as if it had been.
    public typealias Keep = (_ event: String?, _ data: UnsafeRawBufferPointer) -> Bool

    /// Parses the next piece of the stream and returns the events it completes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        feed(bytes, keeping: nil)
    }

    /// Parses the next piece of the stream and returns the events it completes that `keep` keeps.
    public mutating func feed(_ bytes: some Sequence<UInt8>, keeping keep: Keep?) -> [ServerSentEvent] {
        // Pieces in contiguous memory (a ByteBuffer's view, an array) are scanned line by line; going through
        // the generic sequence byte by byte costs more than relaying the stream (a witness call per byte).
        if let events = bytes.withContiguousStorageIfAvailable({ feed(contiguous: $0, keep) }) { return events }
        var events: [ServerSentEvent] = []
        for byte in bytes {
            if sawCR {
                sawCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            switch byte {
            case UInt8(ascii: "\r"):
                sawCR = true
                endLine(into: &events, keep)
            case UInt8(ascii: "\n"):
                endLine(into: &events, keep)
            default:
                if hold(1) { line.append(byte) }
            }
        }
        return events
    }

    private mutating func feed(contiguous bytes: UnsafeBufferPointer<UInt8>, _ keep: Keep?) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        var index = 0
        // The next `\n` at or after `index` (`bytes.count`: none), looked for again only once passed: a stream whose
        // lines end with `\r` alone would else look for it to the piece's end at every line.
        var newline = -1
        while index < bytes.count {
            if sawCR {
                sawCR = false
                if bytes[index] == UInt8(ascii: "\n") {
                    index += 1
                    continue
                }
            }
            if newline < index { newline = Self.first(UInt8(ascii: "\n"), in: bytes, from: index, before: bytes.count) }
            let end = Self.first(UInt8(ascii: "\r"), in: bytes, from: index, before: newline)
            let held = hold(end - index)
            if end < bytes.count, held, line.isEmpty {
                // A whole line in this piece, none begun before it: read where it is, not copied.
                sawCR = bytes[end] == UInt8(ascii: "\r")
                endLine(UnsafeBufferPointer(rebasing: bytes[index..<end]), into: &events, keep)
                index = end + 1
                continue
            }
            if held { line.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index..<end])) }
            guard end < bytes.count else { break }
            sawCR = bytes[end] == UInt8(ascii: "\r")
            endLine(into: &events, keep)
            index = end + 1
        }
        return events
    }

    /// The index of the first `byte` in `bytes[start..<end]`, or `end` when there is none, found by the C library's
    /// `memchr` (many bytes at a time). A line's end is the first `\r` before the next `\n`: each searched once per
    /// line at most. (Eight bytes at a time in Swift, the scan cost 5,400 instructions of a 2 KB stream's; a byte at
    /// a time, it was most of a relayed stream's parsing.)
    static func first(_ byte: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from start: Int, before end: Int) -> Int {
        guard let base = bytes.baseAddress, start < end else { return end }
        let from = UnsafeRawPointer(base + start)
        guard let found = memchr(from, Int32(byte), end - start) else { return end }
        return start + from.distance(to: UnsafeRawPointer(found))
    }

    /// Ends the stream: a last line without a newline and a last event without the blank line are
    /// still delivered, because servers that close right after `data: [DONE]` are common.
    public mutating func finish() -> [ServerSentEvent] {
        finish(keeping: nil)
    }

    /// Ends the stream (as ``finish()``), returning the last events that `keep` keeps.
    public mutating func finish(keeping keep: Keep?) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        if !line.isEmpty { endLine(into: &events, keep) }
        dispatch(into: &events, keep)
        return events
    }

    /// Ends the line held in ``line`` (begun in an earlier piece, or fed a byte at a time).
    private mutating func endLine(into events: inout [ServerSentEvent], _ keep: Keep?) {
        // Out of `self` while it is read, so that the reading may change the rest of `self`; its room kept.
        var held: [UInt8] = []
        swap(&held, &line)
        held.withUnsafeBufferPointer { endLine($0, into: &events, keep) }
        held.removeAll(keepingCapacity: true)
        swap(&held, &line)
    }

    /// Ends the line whose bytes (without its line end) are `whole`.
    private mutating func endLine(_ whole: UnsafeBufferPointer<UInt8>, into events: inout [ServerSentEvent], _ keep: Keep?) {
        if lineSkipped {
            lineSkipped = false
            return
        }
        var bytes = whole
        if atStart {
            atStart = false
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = UnsafeBufferPointer(rebasing: bytes[3...]) }
        }
        if bytes.isEmpty {
            if discarding {
                // The blank line ends the event that was too large; the next one starts afresh.
                discarding = false
                eventBytes = 0
                eventType = nil
                retry = nil
                return
            }
            dispatch(into: &events, keep)
            return
        }
        // Only `data` lines stay with the event until it ends; a comment (a keep-alive, say) or another field
        // no longer counts once read.
        if bytes[0] == UInt8(ascii: ":") {
            eventBytes -= bytes.count
            return
        }
        // The field's name is compared as bytes (no string made of it); only the value of a field that is kept
        // becomes a string.
        let colon = bytes.firstIndex(of: UInt8(ascii: ":")) ?? bytes.count
        let name = UnsafeBufferPointer(rebasing: bytes[..<colon])
        // One space after the colon is dropped: the byte, not the first character, which a combining mark after
        // the space would make a different one.
        var start = colon + 1
        if start < bytes.count, bytes[start] == UInt8(ascii: " ") { start += 1 }
        let value = UnsafeBufferPointer(rebasing: bytes[min(start, bytes.count)...])
        if Self.isName(name, "data") {
            if hasData { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: value)
            hasData = true
            return
        }
        eventBytes -= bytes.count
        if Self.isName(name, "event") {
            eventType = String(decoding: value, as: UTF8.self)
        } else if Self.isName(name, "id") {
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        } else if Self.isName(name, "retry") {
            if !value.isEmpty, value.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let number = Int(String(decoding: value, as: UTF8.self))
            {
                retry = number
            }
        }
    }

    /// Whether a field's name is `expected` (ASCII), byte for byte: its length first, then its bytes (the generic
    /// comparison of a slice with a string's bytes cost more than the rest of the line's reading).
    private static func isName(_ name: UnsafeBufferPointer<UInt8>, _ expected: StaticString) -> Bool {
        guard name.count == expected.utf8CodeUnitCount else { return false }
        let bytes = expected.utf8Start
        var offset = 0
        for byte in name {
            guard byte == bytes[offset] else { return false }
            offset += 1
        }
        return true
    }

    private mutating func dispatch(into events: inout [ServerSentEvent], _ keep: Keep?) {
        defer {
            eventBytes = 0
            eventType = nil
            // Its room kept for the next event, unless a large event made it large (a stream may stay open long).
            if data.capacity > 4096 { data = [] } else { data.removeAll(keepingCapacity: true) }
            hasData = false
            retry = nil
        }
        guard hasData else { return }
        if let keep, !data.withUnsafeBytes({ keep(eventType, $0) }) { return }
        events.append(ServerSentEvent(event: eventType, data: String(decoding: data, as: UTF8.self), id: lastEventID, retry: retry))
    }
}
