import Foundation

/// Reading header values and event text by bytes, on paths every request or stream piece takes, where
/// Foundation's string work (lower-casing, trimming, `contains`) costs more than the rest of the step.
/// Letters are ASCII's; spaces are space and tab (what HTTP allows around a value).
enum ASCII {
    /// `byte` with an upper-case ASCII letter made lower-case.
    static func lowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
    }

    /// `bytes` with their ASCII letters in lower case.
    static func lowercased(_ bytes: some Sequence<UInt8>) -> String {
        String(decoding: bytes.map(lowercased), as: UTF8.self)
    }

    /// Whether `bytes`, their ASCII letters in lower case, are `lowercase`'s.
    static func equals(lowercasing bytes: some Collection<UInt8>, _ lowercase: StaticString) -> Bool {
        bytes.count == lowercase.utf8CodeUnitCount && hasPrefix(lowercasing: bytes, lowercase)
    }

    /// Whether `bytes`, their ASCII letters in lower case, begin with `lowercase`'s.
    static func hasPrefix(lowercasing bytes: some Collection<UInt8>, _ lowercase: StaticString) -> Bool {
        bytes.starts(with: UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)) { lowercased($0) == $1 }
    }

    /// Whether `text`'s bytes, their ASCII letters in lower case, are `lowercase`'s: read at once (through the text's
    /// `utf8` view, a byte at a time, about 40 instructions a byte).
    static func equals(lowercasing text: String, _ lowercase: StaticString) -> Bool {
        var text = text
        return text.withUTF8 { equals(lowercasing: $0, lowercase) }
    }

    /// Whether `text`'s bytes, their ASCII letters in lower case, begin with `lowercase`'s (read at once).
    static func hasPrefix(lowercasing text: String, _ lowercase: StaticString) -> Bool {
        var text = text
        return text.withUTF8 { hasPrefix(lowercasing: $0, lowercase) }
    }

    /// `bytes` without the spaces and tabs at either end.
    static func trimmed<Bytes: BidirectionalCollection<UInt8>>(_ bytes: Bytes) -> Bytes.SubSequence {
        func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var start = bytes.startIndex, end = bytes.endIndex
        while start < end, isSpace(bytes[start]) { start = bytes.index(after: start) }
        while end > start, isSpace(bytes[bytes.index(before: end)]) { end = bytes.index(before: end) }
        return bytes[start..<end]
    }

    /// Bytes to search for, with the byte the search starts from: the pattern's rarest (by ``commonness``),
    /// chosen once when the pattern is made rather than at every search. A search for the first byte of
    /// `"usage"`, a quote, would stop at every key and string of an event.
    struct Pattern: Sendable, ExpressibleByStringLiteral {
        let bytes: [UInt8]
        /// The index in `bytes` of the byte the C library's `memchr` looks for.
        let anchor: Int

        init(_ bytes: [UInt8]) {
            self.bytes = bytes
            var anchor = 0
            for index in bytes.indices.dropFirst() where commonness[Int(bytes[index])] < commonness[Int(bytes[anchor])] {
                anchor = index
            }
            self.anchor = anchor
        }

        init(stringLiteral text: String) {
            self.init(Array(text.utf8))
        }
    }

    /// Whether `text` contains `pattern`, byte for byte.
    static func contains(_ text: String, _ pattern: Pattern) -> Bool {
        var text = text
        return text.withUTF8 { contains(UnsafeRawBufferPointer($0), pattern) }
    }

    /// Whether `bytes` contain `pattern`.
    static func contains(_ raw: UnsafeRawBufferPointer, _ pattern: Pattern) -> Bool {
        let bytes = raw.assumingMemoryBound(to: UInt8.self)
        return pattern.bytes.withUnsafeBufferPointer { needle in
            guard bytes.count >= needle.count, let base = bytes.baseAddress, let first = needle.baseAddress, !needle.isEmpty else {
                return false
            }
            // The anchor byte is found by the vectorized memchr, and the rest compared.
            let anchor = pattern.anchor
            let byte = Int32(needle[anchor])
            var start = base + anchor
            let last = base + (bytes.count - needle.count + anchor)
            while start <= last {
                guard let found = memchr(start, byte, last - start + 1) else { return false }
                let candidate = UnsafePointer(found.assumingMemoryBound(to: UInt8.self))
                if memcmp(candidate - anchor, first, needle.count) == 0 { return true }
                start = candidate + 1
            }
            return false
        }
    }

    /// How common each byte is in JSON and header text, higher for more common: the quote, JSON's other
    /// punctuation and the space, digits, then letters in the order of their frequency in English text
    /// (capitals below), everything else lowest.
    private static let commonness: [UInt8] = {
        var table = [UInt8](repeating: 10, count: 256)
        table[Int(UInt8(ascii: "\""))] = 100
        for byte in ":,{}[] ".utf8 { table[Int(byte)] = 90 }
        for byte in "0123456789".utf8 { table[Int(byte)] = 85 }
        for (rank, byte) in "etaoinsrhldcumfpgwybvkxjqz".utf8.enumerated() {
            table[Int(byte)] = UInt8(80 - rank)
            table[Int(byte) - 32] = UInt8(40 - rank)
        }
        return table
    }()
}
