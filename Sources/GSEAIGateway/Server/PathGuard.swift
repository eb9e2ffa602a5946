import Hummingbird

/// Refuses a request whose path, once its `%` escapes are decoded, holds a NUL or another control
/// character (400). The file system ends a name at a NUL, so `/index.html%00.js` would otherwise serve
/// `index.html` with the type of a `.js` file; no route of the gateway takes such a character either.
/// (Checked by ``GatewayMiddleware`` before anything else reads the path.)
enum PathGuard {
    /// Throws the 400 for a path that ``isAcceptable(_:)`` refuses.
    static func check(_ path: String) throws {
        guard isAcceptable(path) else { throw GatewayError.badRequest("the request path holds a control character") }
    }

    /// Whether `path` (as sent, with `%` escapes) holds no control character, raw or escaped. Escapes are
    /// read byte by byte, so that one malformed escape elsewhere cannot hide a `%00`.
    static func isAcceptable(_ path: String) -> Bool {
        let bytes = Array(path.utf8)
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var index = 0
        while index < bytes.count {
            var byte = bytes[index]
            if byte == UInt8(ascii: "%"), index + 2 < bytes.count, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                byte = high << 4 | low
                index += 2
            }
            if byte < 0x20 || byte == 0x7F { return false }
            index += 1
        }
        return true
    }
}
