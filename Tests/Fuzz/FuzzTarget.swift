import Foundation
import GSEAIFormats

/// One parser of bytes from outside, driven by the fuzzer. Each run must return, whatever the bytes: a
/// trap (overflow, index out of range, force unwrap) or a broken property stops the process, and the
/// fuzzer keeps the input that did it.
enum FuzzTarget: String, CaseIterable {
    /// Image headers (PNG, JPEG, GIF, WebP) and the byte and pixel limits.
    case image
    /// `data:` URLs.
    case dataurl
    /// The Server-Sent Events parser, fed in pieces of varying size; what it parses survives a round trip.
    case sse
    /// The JSON parser; what it parses is written and parsed back to the same value.
    case json
    /// A request body as the gateway inspects it: JSON, then every image in it, on every API's shape.
    case inspection
    /// Query strings read as forms.
    case form
    /// CSV rosters.
    case roster

    static let limits = ImageLimits(maxBytes: 1 << 20, maxPixels: 40_000_000)
    /// Members a parse keeps (one-letter names, which the fuzzer finds, and the gateway's usage).
    static let keptNames: Set<String> = ["a", "b", "usage", "é"]
    static let keptMembers = JSONValue.MemberNames(Array(keptNames))

    func run(_ bytes: UnsafeBufferPointer<UInt8>) {
        switch self {
        case .image:
            let data = Data(bytes)
            if let header = ImageHeader(bytes: data) {
                require(header.width > 0 && header.height > 0, "a header with no pixels was accepted")
                _ = header.pixelCount
            }
            _ = try? Self.limits.check(imageBytes: data)
        case .dataurl:
            let text = String(decoding: bytes, as: UTF8.self)
            if let url = try? Self.limits.check(dataURL: text) {
                // What passed the check passes it again in the form the gateway sends upstream.
                require((try? Self.limits.check(dataURL: url.string)) != nil, "a data URL did not survive re-encoding")
            }
        case .sse:
            sse(bytes)
        case .json:
            guard let value = try? JSONValue(parsing: bytes) else {
                require((try? JSONValue(parsing: bytes, keeping: Self.keptMembers)) == nil,
                        "a parse that keeps some members took what a whole parse refused")
                return
            }
            let written = value.jsonData
            guard let again = try? JSONValue(parsing: written) else {
                fatalError("written JSON does not parse: \(String(decoding: written, as: UTF8.self))")
            }
            require(again == value || value.containsNaN, "JSON changed in a round trip")
            // A parse that keeps some members takes the same texts, with those members as a whole parse makes them.
            let kept = try? JSONValue(parsing: bytes, keeping: Self.keptMembers)
            require(kept != nil, "a parse that keeps some members refused what a whole parse took")
            if case .object(let members) = value {
                require(kept == .object(members.filter { Self.keptNames.contains($0.key) }), "kept members differ from a whole parse's")
            } else {
                require(kept == value || value.containsNaN, "a value that is not an object was not parsed whole")
            }
        case .inspection:
            guard let value = try? JSONValue(parsing: bytes) else { return }
            for case .dataURL(let url) in RequestImages.find(in: value) {
                _ = try? Self.limits.check(dataURL: url)
            }
        case .form:
            let query = FormQuery(String(decoding: bytes, as: UTF8.self))
            _ = query.get("q")
            _ = query.int("limit")
        case .roster:
            if let lines = try? RosterCSV.usernames(String(decoding: bytes, as: UTF8.self), limit: 1000) {
                require(lines.count <= 1000, "a roster over the limit was taken")
                require(lines.allSatisfy { !$0.username.isEmpty && $0.line > 0 }, "an empty username or a line 0")
            }
        }
    }

    /// Parses in pieces whose sizes come from the input's first byte, through the contiguous and the
    /// byte-by-byte paths (which must agree), and with a small event limit (which no event may pass); then
    /// checks that every event parsed is parsed back the same from its own encoding.
    private func sse(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let first = bytes.first else { return }
        let step = Int(first % 17) + 1
        var contiguous = ServerSentEventParser()
        var byteByByte = ServerSentEventParser()
        var small = ServerSentEventParser(maxEventBytes: 64)
        // Keeping the events whose type's name has an even length: exactly those of the others; the filter is shown
        // every event, with the bytes the event's data is made of.
        var filtering = ServerSentEventParser()
        var shown: [String] = []
        let keep: ServerSentEventParser.Keep = { name, data in
            shown.append(String(decoding: data, as: UTF8.self))
            return (name?.utf8.count ?? 0) % 2 == 0
        }
        var events: [ServerSentEvent] = [], slow: [ServerSentEvent] = [], bounded: [ServerSentEvent] = [], kept: [ServerSentEvent] = []
        var index = 1
        while index < bytes.count {
            let end = min(index + step, bytes.count)
            let piece = UnsafeBufferPointer(rebasing: bytes[index..<end])
            events += contiguous.feed(piece)
            slow += byteByByte.feed(piece.lazy.map { $0 })
            bounded += small.feed(piece)
            kept += filtering.feed(piece, keeping: keep)
            index = end
        }
        events += contiguous.finish()
        slow += byteByByte.finish()
        bounded += small.finish()
        kept += filtering.finish(keeping: keep)
        require(events == slow, "the two feeding paths disagree")
        require(kept == events.filter { ($0.event?.utf8.count ?? 0) % 2 == 0 }, "the filter kept other events than its own")
        require(shown == events.map(\.data), "the filter was not shown each event's data")
        require(filtering.lastEventID == contiguous.lastEventID, "a filtered stream lost its last event id")
        // The limit is on the bytes read; an invalid byte reads as U+FFFD, three bytes of UTF-8.
        require(bounded.allSatisfy { $0.data.utf8.count <= 3 * 64 }, "an event over the limit was delivered")
        for event in events {
            var again = ServerSentEventParser()
            let parsed = again.feed(Array(event.encoded.utf8)) + again.finish()
            require(parsed == [event], "an event changed in a round trip: \(event)")
        }
    }
}

/// Stops the process (the fuzzer's signal of a finding) when a property does not hold.
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}

extension JSONValue {
    /// Whether a number in it is not a number (never parsed from JSON text, so never expected here).
    var containsNaN: Bool {
        switch self {
        case .number(let value): value.isNaN
        case .array(let items): items.contains(where: \.containsNaN)
        case .object(let members): members.values.contains(where: \.containsNaN)
        default: false
        }
    }
}
