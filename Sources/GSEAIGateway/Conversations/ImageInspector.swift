import Foundation
import GSEAI

/// Checks an uploaded image: a real PNG, JPEG, GIF or WebP (by its bytes), within the byte and pixel limits.
struct ImageInspector: Sendable {
    var maxBytes: Int
    var maxPixels: Int

    struct Checked: Sendable {
        var type: DataURL.ImageType
        var width: Int
        var height: Int
    }

    func check(_ data: Data) throws -> Checked {
        let url: DataURL
        do {
            url = try DataURL(imageBytes: data, maxBytes: maxBytes)
        } catch .tooLarge(let bytes, let limit) {
            throw GatewayError(.contentTooLarge, type: .requestTooLarge, "the image is \(bytes) bytes; the limit is \(limit)")
        } catch {
            throw GatewayError.badRequest("\(error)")
        }
        guard let (width, height) = Self.dimensions(of: [UInt8](data), type: url.type), width > 0, height > 0 else {
            throw GatewayError.badRequest("the image's dimensions cannot be read; it may be damaged")
        }
        guard width * height <= maxPixels else {
            throw GatewayError(.contentTooLarge, type: .requestTooLarge,
                               "the image is \(width)×\(height) pixels; the limit is \(maxPixels / 1_000_000) megapixels")
        }
        return Checked(type: url.type, width: width, height: height)
    }

    /// Width and height from the image's header.
    static func dimensions(of bytes: [UInt8], type: DataURL.ImageType) -> (Int, Int)? {
        func be16(_ i: Int) -> Int { Int(bytes[i]) << 8 | Int(bytes[i + 1]) }
        func be32(_ i: Int) -> Int { be16(i) << 16 | be16(i + 2) }
        func le16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        func le24(_ i: Int) -> Int { le16(i) | Int(bytes[i + 2]) << 16 }
        switch type {
        case .png:
            guard bytes.count >= 24 else { return nil }
            return (be32(16), be32(20))
        case .gif:
            guard bytes.count >= 10 else { return nil }
            return (le16(6), le16(8))
        case .webp:
            guard bytes.count >= 30 else { return nil }
            switch String(decoding: bytes[12..<16], as: UTF8.self) {
            case "VP8 ": return (le16(26) & 0x3FFF, le16(28) & 0x3FFF)
            case "VP8L":
                let bits = Int(bytes[21]) | Int(bytes[22]) << 8 | Int(bytes[23]) << 16 | Int(bytes[24]) << 24
                return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            case "VP8X": return (le24(24) + 1, le24(27) + 1)
            default: return nil
            }
        case .jpeg:
            // Walk the segments to the first start-of-frame marker.
            var index = 2
            while index + 9 < bytes.count {
                guard bytes[index] == 0xFF else { return nil }
                let marker = bytes[index + 1]
                if marker == 0xFF { index += 1; continue }
                let length = be16(index + 2)
                if (0xC0...0xCF).contains(marker), ![0xC4, 0xC8, 0xCC].contains(marker) {
                    return (be16(index + 7), be16(index + 5))
                }
                index += 2 + length
            }
            return nil
        }
    }
}
