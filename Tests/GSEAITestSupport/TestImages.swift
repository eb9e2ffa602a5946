import Foundation

/// Image headers that declare any size, for the checks that must refuse them: a few dozen bytes can
/// declare billions of pixels.
public enum TestImages {
    /// A PNG signature and IHDR chunk declaring `width` × `height` (the CRC is not checked by the gateway),
    /// then an empty IEND chunk: 45 bytes.
    public static func png(width: UInt32, height: UInt32) -> Data {
        var bytes: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        bytes += be32(13) + Array("IHDR".utf8) + be32(width) + be32(height) + [8, 2, 0, 0, 0] + be32(0)
        bytes += be32(0) + Array("IEND".utf8) + be32(0)
        return Data(bytes)
    }

    /// The upload from the hardening issue: 66 bytes declaring 3221225472 × 3221225472 pixels, whose pixel
    /// count overflows a 64-bit integer.
    public static let overflowingPNG: Data = png(width: 3_221_225_472, height: 3_221_225_472) + Data(count: 21)

    /// A baseline JPEG whose start-of-frame declares `width` × `height`, after a JFIF segment and a restart
    /// marker (a marker without a length).
    public static func jpeg(width: UInt16, height: UInt16) -> Data {
        var bytes: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10] + Array("JFIF".utf8) + [0, 1, 1, 0, 0, 1, 0, 1, 0, 0]
        bytes += [0xFF, 0xD0]
        bytes += [0xFF, 0xC0, 0x00, 0x0B, 8] + be16(height) + be16(width) + [1, 1, 0x11, 0]
        bytes += [0xFF, 0xD9]
        return Data(bytes)
    }

    /// A GIF header declaring `width` × `height`.
    public static func gif(width: UInt16, height: UInt16) -> Data {
        Data(Array("GIF89a".utf8) + le16(width) + le16(height) + [0, 0, 0, 0x3B])
    }

    /// A lossless WebP header declaring `width` × `height` (each 1…16384).
    public static func webpLossless(width: Int, height: Int) -> Data {
        let bits = UInt32(width - 1) | UInt32(height - 1) << 14
        return Data(Array("RIFF".utf8) + le32(20) + Array("WEBPVP8L".utf8) + le32(5) + [0x2F] + le32(bits) + [0, 0, 0, 0])
    }

    /// An extended WebP header declaring `width` × `height` (each 1…2^24).
    public static func webpExtended(width: Int, height: Int) -> Data {
        func le24(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF)] }
        return Data(Array("RIFF".utf8) + le32(22) + Array("WEBPVP8X".utf8) + le32(10) + [0, 0, 0, 0] + le24(width - 1) + le24(height - 1))
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }
    static func le32(_ value: UInt32) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)] }
}
