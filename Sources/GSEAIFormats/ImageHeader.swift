import Foundation

/// The pixel size an image declares in its header, read without decoding the image.
///
/// A header can claim any size: a 66-byte PNG may declare 3 billion × 3 billion pixels. Every number read
/// here is bounded by its field's width (at most 32 bits), and the pixel count is computed with an overflow
/// check, so that no header, however hostile, can stop the process.
public struct ImageHeader: Sendable, Hashable {
    /// The image format, detected from the bytes.
    public var type: DataURL.ImageType
    /// Width and height in pixels, as declared.
    public var width: Int
    public var height: Int

    /// A header with the given values.
    public init(type: DataURL.ImageType, width: Int, height: Int) {
        self.type = type
        self.width = width
        self.height = height
    }

    /// `width × height`, or `nil` when that does not fit in an `Int`.
    public var pixelCount: Int? {
        let (product, overflow) = width.multipliedReportingOverflow(by: height)
        return overflow ? nil : product
    }

    /// Reads the header of a PNG, JPEG, GIF or WebP image; `nil` when the bytes are not one of these or
    /// the size cannot be read (a truncated or damaged header, a zero width or height).
    public init?(bytes: some Collection<UInt8>) {
        let bytes = Array(bytes.prefix(Self.maxHeaderScan))
        guard let type = DataURL.ImageType(sniffing: bytes), let (width, height) = Self.dimensions(of: bytes, type: type),
            width > 0, height > 0
        else { return nil }
        self.type = type
        self.width = width
        self.height = height
    }

    /// How far into a file a JPEG's start-of-frame is looked for (EXIF and colour profiles come first).
    static let maxHeaderScan = 1 << 20

    /// Width and height from the header of an image of `type`. Every read is bounds-checked.
    static func dimensions(of bytes: [UInt8], type: DataURL.ImageType) -> (Int, Int)? {
        func byte(_ i: Int) -> Int? { i >= 0 && i < bytes.count ? Int(bytes[i]) : nil }
        func be16(_ i: Int) -> Int? { guard let a = byte(i), let b = byte(i + 1) else { return nil }; return a << 8 | b }
        func be32(_ i: Int) -> Int? { guard let a = be16(i), let b = be16(i + 2) else { return nil }; return a << 16 | b }
        func le16(_ i: Int) -> Int? { guard let a = byte(i), let b = byte(i + 1) else { return nil }; return a | b << 8 }
        func le24(_ i: Int) -> Int? { guard let a = le16(i), let b = byte(i + 2) else { return nil }; return a | b << 16 }
        func tag(_ i: Int) -> String? { i + 4 <= bytes.count ? String(decoding: bytes[i..<(i + 4)], as: UTF8.self) : nil }

        switch type {
        case .png:
            // The first chunk is IHDR: width and height are 4-byte big-endian numbers.
            guard tag(12) == "IHDR", let width = be32(16), let height = be32(20) else { return nil }
            return (width, height)
        case .gif:
            guard let width = le16(6), let height = le16(8) else { return nil }
            return (width, height)
        case .webp:
            switch tag(12) {
            case "VP8 ":
                guard let width = le16(26), let height = le16(28) else { return nil }
                return (width & 0x3FFF, height & 0x3FFF)
            case "VP8L":
                guard let b0 = byte(21), let b1 = byte(22), let b2 = byte(23), let b3 = byte(24) else { return nil }
                let bits = b0 | b1 << 8 | b2 << 16 | b3 << 24
                return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            case "VP8X":
                guard let width = le24(24), let height = le24(27) else { return nil }
                return (width + 1, height + 1)
            default:
                return nil
            }
        case .jpeg:
            // Walk the segments to the first start-of-frame marker.
            var index = 2
            while let marker0 = byte(index), let marker = byte(index + 1) {
                guard marker0 == 0xFF else { return nil }
                if marker == 0xFF { index += 1; continue }
                // Markers without a length: RSTn, SOI, TEM.
                if (0xD0...0xD8).contains(marker) || marker == 0x01 { index += 2; continue }
                if marker == 0xD9 || marker == 0xDA { return nil }  // the image data or its end, and no frame yet
                guard let length = be16(index + 2), length >= 2 else { return nil }
                if (0xC0...0xCF).contains(marker), ![0xC4, 0xC8, 0xCC].contains(marker) {
                    guard let height = be16(index + 5), let width = be16(index + 7) else { return nil }
                    return (width, height)
                }
                index += 2 + length
            }
            return nil
        }
    }
}

/// The limits an image must keep to be accepted anywhere: the upload endpoint and every API surface.
public struct ImageLimits: Sendable, Hashable {
    /// The largest image, in decoded bytes.
    public var maxBytes: Int
    /// The most pixels (width × height) an image may declare: a small file can declare a huge image, which
    /// a model server would try to decode into memory.
    public var maxPixels: Int

    public init(maxBytes: Int, maxPixels: Int) {
        self.maxBytes = maxBytes
        self.maxPixels = maxPixels
    }

    /// Why an image is refused.
    public enum Violation: Error, Sendable, Hashable, CustomStringConvertible {
        /// Not a well-formed data URL of a real PNG, JPEG, GIF or WebP image, or over the byte limit.
        case dataURL(DataURL.ParseError)
        /// The header's width and height cannot be read: damaged or truncated.
        case unreadableDimensions
        /// The header declares more pixels than allowed.
        case tooManyPixels(width: Int, height: Int, limit: Int)

        /// Whether the caller sent too much (413) rather than something malformed (400).
        public var isTooLarge: Bool {
            switch self {
            case .dataURL(.tooLarge), .tooManyPixels: true
            default: false
            }
        }

        public var description: String {
            switch self {
            case .dataURL(let error): error.description
            case .unreadableDimensions: "the image's dimensions cannot be read; it may be damaged"
            case .tooManyPixels(let width, let height, let limit):
                "the image is \(width)×\(height) pixels; the limit is \(Self.megapixels(limit)) megapixels"
            }
        }

        static func megapixels(_ pixels: Int) -> String {
            pixels % 1_000_000 == 0 ? "\(pixels / 1_000_000)" : String(Double(pixels) / 1_000_000)
        }
    }

    /// Checks image bytes: a real image within the byte and pixel limits.
    public func check(imageBytes data: Data) throws(Violation) -> ImageHeader {
        do {
            _ = try DataURL(imageBytes: data, maxBytes: maxBytes)
        } catch {
            throw .dataURL(error)
        }
        return try checkHeader(data)
    }

    /// Checks a `data:` URL: its syntax, its bytes, and the byte and pixel limits.
    @discardableResult
    public func check(dataURL: String) throws(Violation) -> DataURL {
        let url: DataURL
        do {
            url = try DataURL(parsing: dataURL, maxBytes: maxBytes)
        } catch {
            throw .dataURL(error)
        }
        _ = try checkHeader(url.data)
        return url
    }

    private func checkHeader(_ bytes: some Collection<UInt8>) throws(Violation) -> ImageHeader {
        guard let header = ImageHeader(bytes: bytes) else { throw .unreadableDimensions }
        guard let pixels = header.pixelCount, pixels <= maxPixels else {
            throw .tooManyPixels(width: header.width, height: header.height, limit: maxPixels)
        }
        return header
    }
}
