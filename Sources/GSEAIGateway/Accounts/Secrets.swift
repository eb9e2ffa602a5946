import Crypto
import Foundation

/// Random tokens and their digests: passwords, session cookies, CSRF tokens, API keys.
public enum Secrets {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

    /// `count` random base-62 characters from the system's secure generator.
    public static func random(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }

    /// The SHA-256 of `text`, as lowercase hex. Used for high-entropy secrets (cookies, API keys), where a
    /// slow hash adds nothing and a fast lookup matters; passwords use bcrypt.
    public static func sha256(_ text: String) -> String {
        keyDigest(text).hex
    }

    /// The SHA-256 of an API key, as the key cache looks it up (``KeyDigest``); its hex (``sha256(_:)``'s) only when
    /// the key is read from the database.
    static func keyDigest(_ key: String) -> KeyDigest {
        // Every API request hashes its key: its bytes hashed where they are, without a `Data` made of them.
        var key = key
        return key.withUTF8 { KeyDigest(SHA256.hash(data: UnsafeRawBufferPointer($0))) }
    }

    /// A SHA-256 digest as four words: hashed for a dictionary by them (a 64-digit hex text cost about 400 instructions
    /// to hash, and about 1,000 to make, on every request with an API key; bench/README.md, "Bytes written into room
    /// counted once").
    struct KeyDigest: Hashable, Sendable {
        /// The digest's 32 bytes, as they are in memory.
        private let words: (UInt64, UInt64, UInt64, UInt64)

        fileprivate init(_ digest: SHA256.Digest) {
            words = digest.withUnsafeBytes { bytes in
                (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                 bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
            }
        }

        /// The digest as ``Secrets/sha256(_:)`` writes it (made when asked: only a key not in the cache needs it).
        var hex: String { withUnsafeBytes(of: words) { Secrets.hex($0) } }

        static func == (a: KeyDigest, b: KeyDigest) -> Bool {
            a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
            hasher.combine(words.2)
            hasher.combine(words.3)
        }
    }

    /// The SHA-256 of bytes, as lowercase hex (images are stored by it).
    public static func sha256(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The digest's bytes as lowercase hex: digits by table into the string's own storage, not a
    /// `String(format:)` per byte nor a byte at a time through the digest's iterator.
    private static func hex(_ digest: SHA256.Digest) -> String {
        digest.withUnsafeBytes { hex($0) }
    }

    private static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (index, byte) in bytes.enumerated() {
                out[2 * index] = hexDigits[Int(byte >> 4)]
                out[2 * index + 1] = hexDigits[Int(byte & 0x0f)]
            }
            return bytes.count * 2
        }
    }

    /// Compares two strings in time that does not depend on where they differ.
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    /// A new API key: `gsk_` + 8 characters of public prefix + `_` + 40 secret characters.
    public static func newAPIKey() -> (key: String, prefix: String) {
        let prefix = "gsk_" + random(8)
        return (prefix + "_" + random(40), prefix)
    }

    /// The prefix of something that looks like one of our API keys.
    public static func apiKeyPrefix(_ key: String) -> String? {
        guard key.hasPrefix("gsk_"), key.utf8.count == 53 else { return nil }
        // Twelve bytes, not characters (a key is ASCII; one that is not matches no record either way).
        return String(decoding: key.utf8.prefix(12), as: UTF8.self)
    }
}
