/// Bytes written into room of a size counted beforehand: a log line, an HTTP head. Each piece is copied into the room
/// at once, without the checks `Array.append(contentsOf:)` makes at every call (that the array is not shared, that it
/// has room, then the copy through its generic path): about 90 instructions a piece less, and a head or a log line
/// has 30 to 60 pieces (bench/README.md, "Bytes written into room counted once").
///
/// The room is never overrun: a piece that does not fit is cut where the room ends, and ``wasCut`` says so. A wrong
/// count is a bug, which a debug build stops at (the tests compare every writer's bytes with another implementation's);
/// a release build does not stop, and the upstream request's head refuses what was cut rather than send it. A writer
/// that cannot count its room beforehand tries room for a usual size (``cutsSilently``) and, when that was too small,
/// writes again into room for what it asked to write (``needed``; the gateway's `ByteBuffer.written(trying:_:)`).
public struct ByteWriter: ~Copyable {
    @usableFromInline let base: UnsafeMutablePointer<UInt8>
    @usableFromInline let capacity: Int
    @usableFromInline var written = 0
    @usableFromInline var asked = 0
    /// The bytes asked to be written so far, cut or not.
    @inlinable public var needed: Int { asked }
    /// Whether a piece was cut for want of room.
    public var wasCut: Bool { needed > written }
    /// Whether a piece that does not fit is cut without a debug build stopping (the room was not counted, only hoped).
    public var cutsSilently = false
    /// The bytes written so far.
    @inlinable public var count: Int { written }

    @usableFromInline
    init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    /// The bytes `body` writes into room for `capacity` bytes (what it writes beyond that is cut).
    @inlinable
    public static func bytes(capacity: Int, _ body: (inout ByteWriter) throws -> Void) rethrows -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { buffer, count in
            // `max(_, 1)`: an array of no capacity may have no storage to point to.
            var writer = ByteWriter(base: buffer.baseAddress!, capacity: max(capacity, 0))
            try body(&writer)
            count = writer.count
        }
    }

    /// Writes into `room` (a `ByteBuffer`'s writable bytes, say) what `body` writes; returns how many bytes it wrote.
    @inlinable
    public static func write(into room: UnsafeMutableRawBufferPointer, _ body: (inout ByteWriter) throws -> Void) rethrows -> Int {
        guard let base = room.baseAddress else {
            // No room at all: `body` still runs (it may check what it would write), and writes nothing.
            return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { none in
                var writer = ByteWriter(base: none.baseAddress!, capacity: 0)
                try body(&writer)
                return 0
            }
        }
        var writer = ByteWriter(base: base.bindMemory(to: UInt8.self, capacity: room.count), capacity: room.count)
        try body(&writer)
        return writer.count
    }

    /// The text `body` writes (UTF-8) into room for `capacity` bytes (what it writes beyond that is cut).
    @inlinable
    public static func string(capacity: Int, _ body: (inout ByteWriter) -> Void) -> String {
        String(unsafeUninitializedCapacity: max(capacity, 1)) { buffer in
            var writer = ByteWriter(base: buffer.baseAddress!, capacity: max(capacity, 0))
            body(&writer)
            return writer.count
        }
    }

    /// The room left.
    @inlinable
    public var room: Int { capacity &- count }

    @inlinable
    public mutating func write(_ bytes: UnsafeRawBufferPointer) {
        write(bytes.assumingMemoryBound(to: UInt8.self))
    }

    @inlinable
    public mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        asked &+= bytes.count
        if bytes.count > room { cut() }
        let taken = min(bytes.count, room)
        guard taken > 0, let source = bytes.baseAddress else { return }
        (base + count).initialize(from: source, count: taken)
        written &+= taken
    }

    /// A text's UTF-8 bytes (a string of up to 15 bytes, kept inside the `String` itself, is copied from the stack).
    /// Read where it is: `withUTF8` needs a copy it may change, a retain and a release of the text's storage at each
    /// piece (about 26 a request; bench/README.md, "Stack room for the log line, promises and conversions left out");
    /// only a text not stored as UTF-8 (bridged) is copied.
    @inlinable
    public mutating func write(_ text: String) {
        if text.utf8.withContiguousStorageIfAvailable({ write($0) }) != nil { return }
        var text = text
        text.withUTF8 { write($0) }
    }

    @inlinable
    public mutating func write(_ text: StaticString) {
        text.withUTF8Buffer { write($0) }
    }

    @inlinable
    public mutating func write(_ byte: UInt8) {
        asked &+= 1
        guard count < capacity else { return cut() }
        (base + count).initialize(to: byte)
        written &+= 1
    }

    @usableFromInline
    func cut() {
        assert(cutsSilently, "a ByteWriter's room was counted short")
    }

    /// `value` in decimal (a minus sign first when negative).
    @inlinable
    public mutating func write(decimal value: Int) {
        if value < 0 { write(UInt8(ascii: "-")) }
        // The magnitude as unsigned: `Int.min`'s has no `Int`.
        let magnitude = value.magnitude
        var scale: UInt = 1
        while magnitude / scale >= 10 { scale &*= 10 }
        var rest = magnitude
        while scale > 0 {
            write(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest / scale))
            rest %= scale
            scale /= 10
        }
    }

    /// `value` (0 to 99) in two digits, a leading zero below 10 (a date's or a time's parts, hundredths).
    @inlinable
    public mutating func write(twoDigits value: Int) {
        write(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value / 10 % 10))
        write(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value % 10))
    }

    /// How many bytes ``write(decimal:)`` writes for `value`.
    @inlinable
    public static func decimalCount(_ value: Int) -> Int {
        var digits = value < 0 ? 2 : 1
        var rest = value.magnitude
        while rest >= 10 {
            rest /= 10
            digits &+= 1
        }
        return digits
    }
}
