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
            throw tooLarge(limit)
        }
    }

    /// The request body, or 413 when it is over the limit: the one the forwarding lane read, when it did (no
    /// middleware changes a request's body), else read now.
    static func collect(_ request: inout Request, context: GatewayRequestContext, upTo limit: Int) async throws -> ByteBuffer {
        guard let read = context.readBody else { return try await collect(&request, upTo: limit) }
        guard read.readableBytes <= limit else { throw tooLarge(limit) }
        return read
    }

    private static func tooLarge(_ limit: Int) -> GatewayError {
        GatewayError(.contentTooLarge, type: .requestTooLarge, "the request body is too large (the limit is \(limit) bytes)")
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
        } catch let DecodingError.keyNotFound(key, context) {
            let field = Self.field(context.codingPath + [key])
            throw GatewayError.badRequest("missing field '\(field)'", param: field)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let field = Self.field(context.codingPath)
            throw GatewayError.badRequest("wrong type for '\(field)'", param: field)
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            // A value of the right type that is not one of the allowed ones, such as an unknown role.
            let field = Self.field(context.codingPath)
            throw GatewayError.badRequest("invalid value for '\(field)'", param: field)
        } catch {
            throw GatewayError.badRequest("the body is not valid JSON")
        }
    }

    /// `policy.allowed_models.0`: a field's path in the body.
    private static func field(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }
}
