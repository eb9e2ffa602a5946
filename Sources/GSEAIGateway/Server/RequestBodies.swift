import Foundation
import Hummingbird
import NIOCore

/// Reading request bodies: within a limit (413 beyond it), and as JSON with messages a person can act on.
enum RequestBodies {
    /// The request body, or 413 when it is over the limit.
    static func collect(_ request: inout Request, upTo limit: Int) async throws -> ByteBuffer {
        do {
            return try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw GatewayError(.contentTooLarge, type: .requestTooLarge, "the request body is too large (the limit is \(limit) bytes)")
        }
    }

    /// The body decoded as `T`.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 256 * 1024) async throws -> T {
        guard let value = try await decodeIfPresent(type, from: request, limit: limit, allowEmpty: false) else {
            throw GatewayError.badRequest("a JSON body is required")
        }
        return value
    }

    /// The body decoded as `T`, or `nil` when it is empty.
    static func decodeIfPresent<T: Decodable>(_ type: T.Type, from request: Request, limit: Int = 256 * 1024,
                                              allowEmpty: Bool = true) async throws -> T? {
        var request = request
        let body = try await collect(&request, upTo: limit)
        if body.readableBytes == 0 && allowEmpty { return nil }
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch let DecodingError.keyNotFound(key, _) {
            throw GatewayError.badRequest("missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context) {
            throw GatewayError.badRequest("wrong type for '\(context.codingPath.map(\.stringValue).joined(separator: "."))'")
        } catch {
            throw GatewayError.badRequest("the body is not valid JSON")
        }
    }
}
