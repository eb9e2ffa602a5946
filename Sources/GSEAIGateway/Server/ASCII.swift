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

    /// `bytes` without the spaces and tabs at either end.
    static func trimmed(_ bytes: Substring.UTF8View) -> Substring.UTF8View {
        func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var bytes = bytes
        while let first = bytes.first, isSpace(first) { bytes = bytes.dropFirst() }
        while let last = bytes.last, isSpace(last) { bytes = bytes.dropLast() }
        return bytes
    }

    /// Whether `text` contains `needle`, byte for byte.
    static func contains(_ text: String, _ needle: StaticString) -> Bool {
        contains(text, UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount))
    }

    static func contains(_ text: String, _ needle: [UInt8]) -> Bool {
        needle.withUnsafeBufferPointer { contains(text, $0) }
    }

    private static func contains(_ text: String, _ pattern: UnsafeBufferPointer<UInt8>) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            guard bytes.count >= pattern.count, let base = bytes.baseAddress, let needle = pattern.baseAddress, !pattern.isEmpty else {
                return false
            }
            // The C library's vectorized memchr finds the pattern's rarest byte, and the rest is compared (a
            // search for the first byte of `"usage"`, a quote, would stop at every key and string of an event).
            var anchor = 0
            for index in 1..<pattern.count where commonness[Int(needle[index])] < commonness[Int(needle[anchor])] {
                anchor = index
            }
            let byte = Int32(needle[anchor])
            var start = base + anchor
            let last = base + (bytes.count - pattern.count + anchor)
            while start <= last {
                guard let found = memchr(start, byte, last - start + 1) else { return false }
                let candidate = UnsafePointer(found.assumingMemoryBound(to: UInt8.self))
                if memcmp(candidate - anchor, needle, pattern.count) == 0 { return true }
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
