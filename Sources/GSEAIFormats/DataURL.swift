import Foundation

/// An image as a `data:` URL, the form in which images travel to the server.
///
/// Parsing checks what a server would otherwise choke on: the `data:` syntax, base64 that decodes,
/// and bytes that really are a PNG, JPEG, GIF or WebP image of the declared type.
public struct DataURL: Sendable, Hashable, CustomStringConvertible {
    /// The image formats accepted, detected by their first bytes.
    public enum ImageType: String, Sendable, CaseIterable {
        case png = "image/png"
        case jpeg = "image/jpeg"
        case gif = "image/gif"
        case webp = "image/webp"

        /// The type the bytes start like, if any.
        public init?(sniffing bytes: some Collection<UInt8>) {
            let head = Array(bytes.prefix(12))
            if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
                self = .png
            } else if head.starts(with: [0xFF, 0xD8, 0xFF]) {
                self = .jpeg
            } else if head.starts(with: Array("GIF87a".utf8)) || head.starts(with: Array("GIF89a".utf8)) {
                self = .gif
            } else if head.count == 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) {
                self = .webp
            } else {
                return nil
            }
        }
    }

    /// What is wrong with a data URL.
    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case notADataURL
        case notBase64
        case invalidBase64
        case empty
        case notAnImage
        case mismatchedType(declared: String, actual: String)
        case tooLarge(bytes: Int, limit: Int)

        public var description: String {
            switch self {
            case .notADataURL: return "the image is not a data URL (data:image/…;base64,…)"
            case .notBase64: return "the image data URL is not base64-encoded"
            case .invalidBase64: return "the image data URL holds invalid base64"
            case .empty: return "the image is empty"
            case .notAnImage: return "the file is not a PNG, JPEG, GIF or WebP image"
            case .mismatchedType(let declared, let actual):
                return "the image is declared as \(declared) but its bytes are \(actual)"
            case .tooLarge(let bytes, let limit): return "the image is \(bytes) bytes; the limit is \(limit)"
            }
        }
    }

    /// The detected image type.
    public let type: ImageType
    /// The image bytes.
    public let data: Data

    /// Checks image bytes and wraps them; the type is detected from the bytes.
    public init(imageBytes data: Data, maxBytes: Int? = nil) throws(ParseError) {
        guard !data.isEmpty else { throw .empty }
        if let maxBytes, data.count > maxBytes { throw .tooLarge(bytes: data.count, limit: maxBytes) }
        guard let type = ImageType(sniffing: data) else { throw .notAnImage }
        self.type = type
        self.data = data
    }

    /// Parses and checks a `data:` URL.
    public init(parsing string: String, maxBytes: Int? = nil) throws(ParseError) {
        guard string.count > 5, string.prefix(5).lowercased() == "data:", let comma = string.firstIndex(of: ",") else {
            throw .notADataURL
        }
        let header = string[string.index(string.startIndex, offsetBy: 5)..<comma]
        let parameters = header.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard parameters.last == "base64" else { throw .notBase64 }
        let declared = parameters.first ?? ""
        let payload = string[string.index(after: comma)...]
        // Refuse an oversized image before decoding it: the decoded size follows from the text's length.
        let padding = payload.utf8.reversed().prefix(2).filter { $0 == UInt8(ascii: "=") }.count
        let decodedSize = payload.utf8.count / 4 * 3 - padding
        if let maxBytes, decodedSize > maxBytes {
            throw .tooLarge(bytes: decodedSize, limit: maxBytes)
        }
        guard let data = Data(base64Encoded: String(payload)) else { throw .invalidBase64 }
        try self.init(imageBytes: data, maxBytes: maxBytes)
        guard declared == type.rawValue || (declared == "image/jpg" && type == .jpeg) else {
            throw .mismatchedType(declared: declared.isEmpty ? "no type" : declared, actual: type.rawValue)
        }
    }

    /// The MIME type, such as `image/png`.
    public var mimeType: String { type.rawValue }

    /// The URL text: `data:image/png;base64,…`.
    public var string: String { "data:\(type.rawValue);base64,\(data.base64EncodedString())" }

    public var description: String { "DataURL(\(type.rawValue), \(data.count) bytes)" }
}
