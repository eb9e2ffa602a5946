#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A JSON parser that builds ``JSONValue`` straight from UTF-8 bytes.
///
/// The gateway parses every request it forwards and every answer it accounts for; going through
/// `JSONDecoder` and a try-each-type `Decodable` conformance costs several times more.
struct JSONParser {
    enum Failure: Error, CustomStringConvertible {
        case invalid(String, at: Int)
        var description: String {
            switch self {
            case .invalid(let what, let offset): "invalid JSON at byte \(offset): \(what)"
            }
        }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    private static let maxDepth = 512
    /// The members of the objects being read, innermost last: one buffer for the whole text, so that each
    /// object's dictionary is made once at its size (grown a member at a time, it was made again at every
    /// doubling, each key hashed again).
    private var members: [(String, JSONValue)] = []

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        try parser.end()
        return value
    }

    /// Parses a text as ``parse(_:)`` does (the same text is valid or invalid), but of an object at the top only
    /// keeps the members named in `keeping`: the others are checked and skipped, none of their strings, numbers,
    /// arrays or objects made. A value at the top that is not an object is parsed whole.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, keeping names: [[UInt8]]) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        guard parser.index < bytes.count, bytes[parser.index] == UInt8(ascii: "{") else {
            let value = try parser.parseValue()
            try parser.end()
            return value
        }
        var kept: [String: JSONValue] = [:]
        try parser.nested { parser in
            try parser.readMembers { parser, key in
                if names.contains(where: { key.isNamed($0) }) {
                    kept[key.string] = try parser.parseValue()
                } else {
                    try parser.skipValue()
                }
            }
        }
        try parser.end()
        return .object(kept)
    }

    private mutating func end() throws {
        skipWhitespace()
        guard index == bytes.count else { throw Failure.invalid("unexpected data after the value", at: index) }
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private func fail(_ what: String) -> Failure { .invalid(what, at: index) }

    private mutating func parseValue() throws -> JSONValue {
        guard index < bytes.count else { throw fail("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        default: return .number(try parseNumber())
        }
    }

    private mutating func expect(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw fail("unexpected end") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw fail("unexpected character")
        }
        index += count
    }

    /// Steps into the object or array whose opening bracket is here, counting the depth, and runs `body` there.
    private mutating func nested<T>(_ body: (inout JSONParser) throws -> T) throws -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw fail("nested too deeply") }
        index += 1
        return try body(&self)
    }

    private mutating func parseObject() throws -> JSONValue {
        try nested { parser in
            let start = parser.members.count
            // Room for the members of a usual request or answer at once: grown from empty, the buffer was made
            // again at 1, 2, 4, 8 and 16 members.
            if parser.members.capacity == 0 { parser.members.reserveCapacity(16) }
            // A failure ends the whole parse (nothing catches it inside the parser, which is dropped): the members of
            // the objects it was in are not taken back.
            try parser.readMembers { parser, name in
                parser.members.append((name.string, try parser.parseValue()))
            }
            // The members moved out from the last: `removeSubrange` destroyed them through the runtime's generic code,
            // a look-up of the tuple's type and of each part's (about 1,000 instructions a request; bench/README.md,
            // "JSON objects, writes and turns").
            var object = [String: JSONValue](minimumCapacity: parser.members.count - start)
            while parser.members.count > start {
                let (name, value) = parser.members.removeLast()
                // A name given twice keeps its last value (met first from the end) under its first spelling: two
                // spellings of one text (a precomposed letter and a combined one) are one key to a dictionary, which
                // keeps the key it holds.
                if let later = object.updateValue(value, forKey: name) {
                    object.removeValue(forKey: name)
                    object[name] = later
                }
            }
            return .object(object)
        }
    }

    /// A member's name: its bytes in the text when it has no escape, else the string it stands for.
    private enum Name {
        case bytes(UnsafeBufferPointer<UInt8>)
        case text(String)

        var string: String {
            switch self {
            case .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
            case .text(let text): text
            }
        }

        func isNamed(_ name: [UInt8]) -> Bool {
            switch self {
            // Compared at once (`elementsEqual` went a byte at a time through two iterators).
            case .bytes(let bytes): bytes.count == name.count && name.withUnsafeBufferPointer { name in
                bytes.isEmpty || memcmp(bytes.baseAddress!, name.baseAddress!, bytes.count) == 0
            }
            case .text(let text): text.utf8.count == name.count && text.utf8.elementsEqual(name)
            }
        }
    }

    /// Reads an object's members after its `{`, up to and with its `}`, handing each one's name to `member`,
    /// which reads (or skips) the value.
    private mutating func readMembers(_ member: (inout JSONParser, Name) throws -> Void) throws {
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let name = try readName()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            index += 1
            skipWhitespace()
            try member(&self, name)
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return
            } else {
                throw fail("expected ',' or '}'")
            }
        }
    }

    /// A member's name, from its opening quote: its bytes in place when it has no escape (nor a character that
    /// makes it invalid), else read as any string.
    private mutating func readName() throws -> Name {
        let start = index + 1
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
        guard end < bytes.count, bytes[end] == UInt8(ascii: "\"") else { return .text(try parseString()) }
        index = end + 1
        return .bytes(UnsafeBufferPointer(rebasing: bytes[start..<end]))
    }

    /// Checks the value that starts here and steps over it, as ``parseValue()`` would read it (the same text
    /// fails the same way) but without making it.
    private mutating func skipValue() throws {
        guard index < bytes.count else { throw fail("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): try nested { parser in try parser.readMembers { parser, _ in try parser.skipValue() } }
        case UInt8(ascii: "["): try nested { parser in try parser.readElements { parser in try parser.skipValue() } }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try expect("true")
        case UInt8(ascii: "f"): try expect("false")
        case UInt8(ascii: "n"): try expect("null")
        default: _ = try parseNumber()
        }
    }

    /// Steps over a string, checking its escapes as ``parseString()`` does.
    private mutating func skipString() throws {
        index += 1
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""): return
            case UInt8(ascii: "\\"): _ = try readEscape()
            default: if byte < 0x20 { throw fail("control character in a string") }
            }
        }
        throw fail("unterminated string")
    }

    /// An escape after its backslash: the character it stands for (a `\u` pair of surrogates makes one; a lone
    /// surrogate stands for U+FFFD).
    private mutating func readEscape() throws -> Unicode.Scalar {
        guard index < bytes.count else { throw fail("unexpected end") }
        let escaped = bytes[index]
        index += 1
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return Unicode.Scalar(escaped)
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            var code = try parseHex4()
            if (0xD800...0xDBFF).contains(code), index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                bytes[index + 1] == UInt8(ascii: "u")
            {
                index += 2
                let low = try parseHex4()
                guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid surrogate pair") }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            }
            return Unicode.Scalar(code) ?? "\u{FFFD}"
        default:
            throw fail("invalid escape")
        }
    }

    /// Reads an array's elements after its `[`, up to and with its `]`, `element` reading (or skipping) each.
    private mutating func readElements(_ element: (inout JSONParser) throws -> Void) throws {
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            try element(&self)
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return
            } else {
                throw fail("expected ',' or ']'")
            }
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        try nested { parser in
            var elements: [JSONValue] = []
            try parser.readElements { parser in elements.append(try parser.parseValue()) }
            return .array(elements)
        }
    }

    private mutating func parseString() throws -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw fail("control character in a string") }
            index += 1
        }
        var scalars = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: scalars, as: UTF8.self)
            case UInt8(ascii: "\\"):
                index += 1
                UTF8.encode(try readEscape()) { scalars.append($0) }
            default:
                if byte < 0x20 { throw fail("control character in a string") }
                scalars.append(byte)
                index += 1
            }
        }
        throw fail("unterminated string")
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("unexpected end") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    private mutating func parseNumber() throws -> Double {
        let start = index
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        var digits = 0
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
            index += 1
            digits += 1
        }
        guard digits > 0 else { throw fail("unexpected character") }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var fraction = 0
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                index += 1
                fraction += 1
            }
            guard fraction > 0 else { throw fail("invalid number") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            var exponent = 0
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                index += 1
                exponent += 1
            }
            guard exponent > 0 else { throw fail("invalid number") }
        }
        if index - start <= 15, !bytes[start..<index].contains(where: { $0 == UInt8(ascii: ".") || $0 | 0x20 == UInt8(ascii: "e") }) {
            // A whole number of at most 15 digits (token counts, ids, times): exact in a Double, and what
            // `Double(text)` gives, without making the text.
            var whole = 0
            for byte in bytes[start..<index] where byte != UInt8(ascii: "-") { whole = whole * 10 + Int(byte - UInt8(ascii: "0")) }
            return bytes[start] == UInt8(ascii: "-") ? -Double(whole) : Double(whole)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text) else { throw fail("invalid number") }
        // 1e999 reads as infinity, which JSON cannot write back: the value would change on its way upstream.
        guard value.isFinite else { throw fail("number out of range") }
        return value
    }
}
