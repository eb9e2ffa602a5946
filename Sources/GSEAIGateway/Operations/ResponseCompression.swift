import CompressNIO
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Compresses text-like responses with gzip for clients that accept it (``GatewayMiddleware``, on every
/// response).
///
/// The body is compressed as it is written, through a wrapped `ResponseBodyWriter`, so no response is
/// held in memory whole. Server-Sent Events (`text/event-stream`) are never touched: an event must
/// reach the browser the moment it is written, and a compressor holds bytes back. Bodies of unknown
/// length are otherwise streams too, so each of their writes is flushed through the compressor at
/// once (a sync flush: a little less compression, no added latency); bodies of known length are
/// compressed in one go for the best ratio.
public struct ResponseCompression: Sendable {
    /// Bodies of known length below this many bytes are sent as they are: gzip's header and trailer
    /// alone are 18 bytes and small JSON answers barely shrink.
    public let minimumLength: Int
    let configuration: ZlibConfiguration

    /// - Parameters:
    ///   - minimumLength: the smallest known body length worth compressing.
    ///   - compressionLevel: zlib's level; 6 (the default) is the usual balance of speed and size.
    public init(minimumLength: Int = 1024, compressionLevel: ZlibConfiguration.CompressionLevel = .defaultCompressionLevel) {
        self.minimumLength = minimumLength
        self.configuration = ZlibConfiguration(compressionLevel: compressionLevel)
    }

    /// Compresses `response` to `request` when it is worth it and the client accepts it.
    func compress(_ response: inout Response, for request: Request) {
        guard request.method != .head, isCompressible(response) else { return }
        // The answer depends on Accept-Encoding whether or not this client gets gzip, so caches must know.
        Self.addVaryAcceptEncoding(to: &response.headers)
        guard Self.acceptsGzip(request.headers[values: .acceptEncoding]) else { return }

        let body = response.body
        let flushEachWrite = body.contentLength == nil
        let configuration = configuration
        response.headers[.contentEncoding] = "gzip"
        // A strong ETag names these exact bytes; the compressed ones are different bytes.
        if let etag = response.headers.value(.eTag), !etag.hasPrefix("W/") {
            response.headers[.eTag] = "W/" + etag
        }
        // Setting a body of unknown length also drops Content-Length, so the response goes out chunked.
        response.body = ResponseBody { writer in
            let gzipWriter = try CompressingWriter(parent: writer, configuration: configuration, flushEachWrite: flushEachWrite)
            try await body.write(gzipWriter)
        }
    }

    /// Whether the response is worth compressing and safe to compress.
    func isCompressible(_ response: Response) -> Bool {
        switch response.status.code {
        case 200..<300 where response.status != .noContent && response.status != .partialContent: break
        default: return false
        }
        // The body's length first: a small answer (most of the API's) is refused without a look through its fields.
        if let length = response.body.contentLength, length < minimumLength { return false }
        guard !response.headers.contains(.contentEncoding), !response.headers.contains(.contentRange) else { return false }
        if let cacheControl = response.headers.value(.cacheControl), ASCII.contains(ASCII.lowercased(cacheControl.utf8), noTransform) {
            return false
        }
        guard let contentType = response.headers.value(.contentType) else { return false }
        return Self.isCompressible(contentType: contentType)
    }

    /// Whether a `Content-Type` names text-like content; `text/event-stream` never counts.
    static func isCompressible(contentType: String) -> Bool {
        var contentType = contentType
        return contentType.withUTF8 { bytes in
            // The media type: before any parameter, without spaces, compared in lower case (read on every answer:
            // in place, no string made).
            let mediaType = ASCII.trimmed(bytes[..<(bytes.firstIndex(of: UInt8(ascii: ";")) ?? bytes.count)])
            if ASCII.equals(lowercasing: mediaType, "text/event-stream") { return false }
            if ASCII.hasPrefix(lowercasing: mediaType, "text/") { return true }
            return compressibleTypes.contains { ASCII.equals(lowercasing: mediaType, $0) }
        }
    }

    /// The media types besides `text/*` worth compressing.
    private static let compressibleTypes: [StaticString] = ["application/json", "application/javascript", "image/svg+xml",
                                                            "application/manifest+json"]

    /// Whether `Accept-Encoding` allows gzip: listed (or covered by `*`) with a quality above zero.
    static func acceptsGzip(_ fieldValues: [String]) -> Bool {
        var gzipQuality: Double?
        var wildcardQuality: Double?
        for value in fieldValues {
            for element in value.split(separator: ",") {
                let parts = element.split(separator: ";")
                guard let coding = parts.first?.trimmingCharacters(in: .whitespaces).lowercased() else { continue }
                var quality = 1.0
                for parameter in parts.dropFirst() {
                    let pair = parameter.split(separator: "=", maxSplits: 1)
                    if pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == "q" {
                        quality = Double(pair[1].trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                }
                switch coding {
                case "gzip", "x-gzip": gzipQuality = quality
                case "*": wildcardQuality = quality
                default: break
                }
            }
        }
        return (gzipQuality ?? wildcardQuality ?? 0) > 0
    }

    static func addVaryAcceptEncoding(to headers: inout HTTPFields) {
        let existing = headers[values: .vary].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard !existing.contains("accept-encoding"), !existing.contains("*") else { return }
        headers.append(HTTPField(name: .vary, value: "Accept-Encoding"))
    }
}

extension ResponseCompression {
    /// Passes everything written through a gzip compressor to the real writer.
    struct CompressingWriter: ResponseBodyWriter {
        private var parent: any ResponseBodyWriter
        private let compressor: ZlibCompressor
        private let flushEachWrite: Bool
        /// Output is handed on in pieces of this size, so memory stays bounded however large the body.
        private static var chunkSize: Int { 16 * 1024 }

        init(parent: any ResponseBodyWriter, configuration: ZlibConfiguration, flushEachWrite: Bool) throws {
            self.parent = parent
            self.compressor = try ZlibCompressor(algorithm: .gzip, configuration: configuration)
            self.flushEachWrite = flushEachWrite
        }

        @concurrent mutating func write(_ buffer: ByteBuffer) async throws {
            // zlib needs mutable access to its input, which copies a shared buffer; feeding slices keeps
            // each copy small instead of duplicating a large body.
            var remaining = buffer
            while let slice = remaining.readSlice(length: min(remaining.readableBytes, Self.chunkSize * 4)), slice.readableBytes > 0 {
                var input = slice
                let isLast = remaining.readableBytes == 0
                try await deflate(&input, flush: isLast && flushEachWrite ? .sync : .no)
            }
        }

        @concurrent consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
            var empty = ByteBuffer()
            try await deflate(&empty, flush: .finish)
            try await parent.finish(trailingHeaders)
        }

        /// Runs zlib until it has taken all of `input` and, for a flush, given back everything it held.
        @concurrent private mutating func deflate(_ input: inout ByteBuffer, flush: CompressNIOFlush) async throws {
            while true {
                let inputBefore = input.readableBytes
                var output = ByteBuffer()
                output.reserveCapacity(Self.chunkSize)
                var needsMoreRoom = false
                do {
                    try compressor.deflate(from: &input, to: &output, flush: flush)
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    // For `.finish`: the stream has not ended yet. Otherwise: zlib could make no progress.
                    needsMoreRoom = true
                }
                if output.readableBytes > 0 {
                    try await parent.write(output)
                }
                if output.writableBytes == 0 { needsMoreRoom = true }
                if input.readableBytes == 0, !needsMoreRoom { return }
                if output.readableBytes == 0, input.readableBytes == inputBefore {
                    // Nothing moved: zlib holds nothing more for this flush, unless it was to end the stream.
                    guard flush != .finish, input.readableBytes == 0 else { throw CompressNIOError.internalError }
                    return
                }
            }
        }
    }
}

/// The `Cache-Control` directive that forbids compressing an answer (searched in its lower-cased value).
private let noTransform: ASCII.Pattern = "no-transform"
