import GSEAI
import Testing

/// The writer behind the log line and the HTTP heads: what it writes is what `Array.append` and the standard
/// library's printing would have made.
@Suite("Bytes written into room counted once")
struct ByteWriterTests {
    @Test(arguments: [0, 1, 9, 10, 99, 100, 12_345, -1, -10, -9_999, Int.max, Int.min, Int.max - 1, Int.min + 1, 1_000_000_000_000_000_000])
    func decimalsAreWrittenAsTheStandardLibraryPrintsThem(_ value: Int) {
        let text = String(value)
        #expect(ByteWriter.decimalCount(value) == text.utf8.count)
        let bytes = ByteWriter.bytes(capacity: ByteWriter.decimalCount(value)) { $0.write(decimal: value) }
        #expect(bytes == Array(text.utf8))
    }

    @Test func piecesOfEveryKindAreWrittenInOrder() {
        // A small string (kept inside the `String`), a large one not ASCII, a static string, a byte, bytes.
        let large = "é ü — more than fifteen bytes, 😀"
        var expected: [UInt8] = []
        expected.append(contentsOf: "short".utf8)
        expected.append(contentsOf: large.utf8)
        expected.append(contentsOf: ": ".utf8)
        expected.append(UInt8(ascii: "\n"))
        expected.append(contentsOf: [0, 255, 7])
        let written = ByteWriter.bytes(capacity: expected.count) { writer in
            writer.write("short")
            writer.write(large)
            writer.write(": " as StaticString)
            writer.write(UInt8(ascii: "\n"))
            [UInt8]([0, 255, 7]).withUnsafeBufferPointer { writer.write($0) }
            #expect(writer.room == 0)
            #expect(writer.count == expected.count)
        }
        #expect(written == expected)
        let text = ByteWriter.string(capacity: 5 + large.utf8.count) { writer in
            writer.write("short")
            writer.write(large)
        }
        #expect(text == "short" + large)
    }

    @Test func nothingToWriteMakesNoBytes() {
        #expect(ByteWriter.bytes(capacity: 0) { _ in }.isEmpty)
        #expect(ByteWriter.string(capacity: 0) { $0.write("") } == "")
        // No room at all (no storage): the body still runs, so that what it checks is checked.
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            _ = try ByteWriter.write(into: UnsafeMutableRawBufferPointer(start: nil, count: 0)) { _ in throw Refused() }
        }
    }

    @Test func aBufferIsWrittenUpToWhatWasWrittenAndNoFurther() {
        var storage = [UInt8](repeating: 0xAA, count: 16)
        let count = storage.withUnsafeMutableBytes { room in
            ByteWriter.write(into: UnsafeMutableRawBufferPointer(rebasing: room[..<8])) { writer in
                writer.write("HTTP")
                writer.write(decimal: 200)
            }
        }
        #expect(count == 7)
        #expect(storage[..<7] == ArraySlice("HTTP200".utf8))
        #expect(storage[7...].allSatisfy { $0 == 0xAA })
    }

    /// A writer that tries room that may be too small: what does not fit is cut, and it says so.
    @Test func aWriterTryingRoomSaysWhenItCut() {
        var cut = false
        let bytes = ByteWriter.bytes(capacity: 6) { writer in
            writer.cutsSilently = true
            writer.write("HTTP/1.1")
            writer.write(UInt8(ascii: " "))
            cut = writer.wasCut
        }
        #expect(cut)
        #expect(bytes == Array("HTTP/1".utf8))
        var fitted = false
        _ = ByteWriter.bytes(capacity: 8) { writer in
            writer.cutsSilently = true
            writer.write("HTTP/1.1")
            fitted = !writer.wasCut
        }
        #expect(fitted)
    }

    /// Room tried first: what fits is written once, what does not is written again into room for all of it; `needed`
    /// counts what was asked, cut or not.
    /// A writer whose room was only tried counts what it was asked to write, cut or not: the room to write it again in
    /// (the gateway's `ByteBuffer.written(trying:_:)`, tested with the codec).
    @Test func aWriterCountsWhatItWasAskedToWriteWhenCut() {
        var needed = 0
        _ = ByteWriter.bytes(capacity: 4) { writer in
            writer.cutsSilently = true
            writer.write("abcdef")
            writer.write(UInt8(ascii: "g"))
            needed = writer.needed
        }
        #expect(needed == 7)
    }

    @Test(arguments: [(0, "00"), (7, "07"), (10, "10"), (59, "59"), (99, "99")])
    func twoDigitsHaveALeadingZero(_ value: Int, _ expected: String) {
        #expect(ByteWriter.string(capacity: 2) { $0.write(twoDigits: value) } == expected)
    }
}
