import GSEAI
import NIOCore
import Testing

@Suite("Server-Sent Event parser")
struct ServerSentEventParserTests {
    /// Feeds `text` one byte at a time, then ends the stream.
    func parseByteByByte(_ text: String) -> [ServerSentEvent] {
        var parser = ServerSentEventParser()
        var events: [ServerSentEvent] = []
        for byte in text.utf8 { events += parser.feed([byte]) }
        return events + parser.finish()
    }

    func parseWhole(_ text: String) -> [ServerSentEvent] {
        var parser = ServerSentEventParser()
        return parser.feed(Array(text.utf8)) + parser.finish()
    }

    @Test func lmStudioEventsWithEventNames() {
        let text = "event: chat.start\ndata: {\"type\":\"chat.start\"}\n\nevent: message.delta\ndata: {\"content\":\"Hi\"}\n\n"
        let expected = [
            ServerSentEvent(event: "chat.start", data: "{\"type\":\"chat.start\"}"),
            ServerSentEvent(event: "message.delta", data: "{\"content\":\"Hi\"}"),
        ]
        #expect(parseByteByByte(text) == expected)
        #expect(parseWhole(text) == expected)
    }

    @Test(arguments: ["\n", "\r\n", "\r"])
    func everyLineEnding(_ newline: String) {
        let text = ["event: a", "data: one", "", "data: two", "", ""].joined(separator: newline)
        let expected = [ServerSentEvent(event: "a", data: "one"), ServerSentEvent(data: "two")]
        #expect(parseByteByByte(text) == expected)
        #expect(parseWhole(text) == expected)
    }

    @Test func crAndLFInDifferentReadsMakeOneLineEnd() {
        var parser = ServerSentEventParser()
        var events = parser.feed(Array("data: x\r".utf8))
        events += parser.feed(Array("\n\r".utf8))
        events += parser.feed(Array("\ndata: y\r\n\r\n".utf8))
        #expect(events == [ServerSentEvent(data: "x"), ServerSentEvent(data: "y")])
    }

    @Test func multiLineDataIsJoinedWithNewlines() {
        #expect(parseByteByByte("data: first\ndata:second\ndata:  third\n\n") == [
            ServerSentEvent(data: "first\nsecond\n third")
        ])
    }

    @Test func commentsAndUnknownFieldsAreIgnored() {
        let text = ": keep-alive\n\nfoo: bar\ndata: kept\n: inside\n\n"
        #expect(parseByteByByte(text) == [ServerSentEvent(data: "kept")])
    }

    @Test func idPersistsAndRetryIsReadPerEvent() {
        let text = "id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
        #expect(parseByteByByte(text) == [
            ServerSentEvent(data: "a", id: "7", retry: 1500),
            ServerSentEvent(data: "b", id: "7"),
            ServerSentEvent(data: "c", id: ""),
        ])
    }

    @Test func aRetryOfAnythingButASCIIDigitsIsIgnored() {
        // The standard: "if the field value consists of only ASCII digits"; a sign, a space, another script's
        // digits or a number past `Int` leave the event without one.
        for value in ["-5", "+5", " 5", "5 ", "١٥", "", "99999999999999999999", "5x"] {
            #expect(parseByteByByte("retry: \(value)\ndata: a\n\n") == [ServerSentEvent(data: "a")], "retry: \(value)")
        }
        #expect(parseByteByByte("retry:0\ndata: a\n\n") == [ServerSentEvent(data: "a", retry: 0)])
    }

    @Test func aFieldNameIsItsExactBytes() {
        // Names are compared byte for byte: another case, a trailing space or a look-alike is an unknown field.
        let text = "Data: x\ndata : y\nevent: e\nEVENT: f\nid\u{0}: z\ndata: kept\n\n"
        #expect(parseByteByByte(text) == [ServerSentEvent(event: "e", data: "kept")])
    }

    @Test func fieldWithoutColonAndEmptyData() {
        #expect(parseByteByByte("data\n\ndata:\ndata\n\n") == [
            ServerSentEvent(data: ""), ServerSentEvent(data: "\n"),
        ])
    }

    @Test func eventWithoutDataIsNotDispatchedAndTypeResets() {
        #expect(parseByteByByte("event: lonely\n\ndata: x\n\n") == [ServerSentEvent(data: "x")])
    }

    @Test func byteOrderMarkAtStartIsSkipped() {
        #expect(parseByteByByte("\u{FEFF}data: x\n\n") == [ServerSentEvent(data: "x")])
    }

    @Test func lastEventWithoutBlankLineIsDeliveredAtEnd() {
        #expect(parseByteByByte("data: a\n\ndata: [DONE]") == [ServerSentEvent(data: "a"), ServerSentEvent(data: "[DONE]")])
        #expect(parseByteByByte("data: [DONE]\n") == [ServerSentEvent(data: "[DONE]")])
    }

    @Test func multiByteCharactersSplitAcrossReads() {
        let text = "data: {\"content\":\"héllo 👋\"}\n\n"
        #expect(parseByteByByte(text) == [ServerSentEvent(data: "{\"content\":\"héllo 👋\"}")])
    }

    @Test func encodedEventParsesBack() {
        let event = ServerSentEvent(event: "message.delta", data: "line one\nline two", id: "42", retry: 10)
        #expect(parseByteByByte(event.encoded) == [event])
    }

    @Test func asyncStreamOfSingleBytes() async throws {
        let text = "event: e\r\ndata: 1\r\n\r\n: c\r\ndata: 2\r\n\r\n"
        let pieces = text.utf8.map { ByteBuffer(bytes: [$0]) }
        let stream = ServerSentEventStream(AsyncStream { continuation in
            for piece in pieces { continuation.yield(piece) }
            continuation.finish()
        })
        var events: [ServerSentEvent] = []
        for try await event in stream { events.append(event) }
        #expect(events == [ServerSentEvent(event: "e", data: "1"), ServerSentEvent(data: "2")])
    }

    /// The contiguous path finds a line's end with `memchr`, which reads many bytes at a time: a `\n`, `\r` or `\r\n`
    /// at every place in and across its blocks (lines of 0 to 79 characters, up to about a hundred bytes, after 0 to 15
    /// bytes of another line; some characters whose UTF-8 holds bytes 0x8A and 0x8D, which must not be taken for line
    /// ends) gives the same events as bytes fed one by one.
    /// Lines ended by `\r` alone (no `\n` in the whole piece), and by `\r` with a `\n` only at the piece's end, many
    /// in one piece: each line is found (the `\n` is looked for once, not again from every line).
    @Test func manyLinesEndedByACarriageReturnInOnePiece() {
        let count = 8192
        let alone = String(repeating: "data: x\r\r", count: count)
        #expect(parseWhole(alone) == Array(repeating: ServerSentEvent(data: "x"), count: count))
        let newlineAtTheEnd = String(repeating: "data: y\r\r", count: count) + "data: z\n\n"
        let events = parseWhole(newlineAtTheEnd)
        #expect(events.count == count + 1)
        #expect(events.last == ServerSentEvent(data: "z"))
        #expect(events.dropLast().allSatisfy { $0 == ServerSentEvent(data: "y") })
    }

    @Test(arguments: ["\n", "\r", "\r\n"])
    func aLineEndIsFoundAtEveryPlaceOfABlock(ending: String) {
        for lead in 0..<16 {
            for length in 0..<80 {
                // "Ċ" and "č" are C4 8A and C4 8D in UTF-8: bytes that are not line ends.
                var filler = ""
                for index in 0..<length {
                    switch index % 7 {
                    case 3: filler += "Ċ"
                    case 5: filler += "č"
                    default: filler.unicodeScalars.append(UnicodeScalar(UInt8(97 + index % 26)))
                    }
                }
                let lines = ["data: " + String(repeating: "a", count: lead), "data: " + filler, "", ": " + filler, "event: e", "data: z", ""]
                let text = lines.map { $0 + ending }.joined()
                let events = parseWhole(text)
                #expect(events == parseByteByByte(text), "lead \(lead), length \(length)")
                #expect(events.map { $0.data } == [String(repeating: "a", count: lead) + "\n" + filler, "z"], "lead \(lead), length \(length)")
            }
        }
    }
}

/// What the fuzzer found, and the limit on an event's size.
@Suite("Server-Sent Event parser: a filter")
struct ServerSentEventFilterTests {
    /// An event the filter leaves out is not made, and the stream goes on as if it had been: the next events keep its
    /// id; the filter sees an event's data lines joined by a newline, invalid bytes as they came.
    @Test func anEventLeftOutIsNotMadeAndTheStreamGoesOn() {
        var parser = ServerSentEventParser()
        var shown: [(String?, [UInt8])] = []
        let keep: ServerSentEventParser.Keep = { name, data in
            shown.append((name, Array(data)))
            return name != "skip"
        }
        // With an invalid byte, as a server might send it.
        let bytes = Array("event: skip\nid: 7\ndata: a\ndata: b\n\ndata: c".utf8) + [0xFF] + Array("\n\nevent: keep\ndata: d\r\n\r\n".utf8)
        let events = parser.feed(bytes, keeping: keep) + parser.finish(keeping: keep)
        #expect(events == [ServerSentEvent(data: "c\u{FFFD}", id: "7"), ServerSentEvent(event: "keep", data: "d", id: "7")])
        #expect(shown.map(\.0) == ["skip", nil, "keep"])
        #expect(shown.map(\.1) == [Array("a\nb".utf8), [UInt8(ascii: "c"), 0xFF], Array("d".utf8)])
        #expect(parser.lastEventID == "7")
        // Without a filter, the same events and the one left out.
        var all = ServerSentEventParser()
        #expect(all.feed(bytes) + all.finish() == [ServerSentEvent(event: "skip", data: "a\nb", id: "7")] + events)
    }
}

@Suite("Server-Sent Events: hostile streams")
struct ServerSentEventLimitTests {
    @Test func theSpaceAfterTheColonIsDroppedEvenBeforeACombiningMark() {
        var parser = ServerSentEventParser()
        // "data: " then U+059E (a combining mark), which joins the space in one Character.
        let events = parser.feed(Array("data: \u{059E}x\n\n".utf8))
        #expect(events.map { $0.data } == ["\u{059E}x"])
        var again = ServerSentEventParser()
        #expect(again.feed(Array(events[0].encoded.utf8)) == events)
    }

    @Test func anEventLargerThanTheLimitIsDroppedAndTheNextOneRead() {
        var parser = ServerSentEventParser(maxEventBytes: 32)
        let long = "data: " + String(repeating: "x", count: 100) + "\ndata: more\n\n"
        var events = parser.feed(Array((long + "data: ok\n\n").utf8))
        #expect(events.map { $0.data } == ["ok"])
        #expect(parser.overflowed)
        // Comments and other fields do not add up towards the limit.
        var keepAlive = ServerSentEventParser(maxEventBytes: 32)
        events = keepAlive.feed(Array((String(repeating: ": ping\n", count: 100) + "event: e\ndata: fine\n\n").utf8))
        #expect(events == [ServerSentEvent(event: "e", data: "fine")])
        #expect(!keepAlive.overflowed)
        // A line that never ends holds no more than the limit, fed in pieces or byte by byte.
        var endless = ServerSentEventParser(maxEventBytes: 32)
        for _ in 0..<1000 { _ = endless.feed(Array(repeating: UInt8(ascii: "y"), count: 1000)) }
        _ = endless.feed(Array(repeating: UInt8(ascii: "z"), count: 10).lazy.map { $0 })
        #expect(endless.overflowed)
        #expect(endless.finish() == [])
    }
}
