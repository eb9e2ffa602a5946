import Foundation
import GSEAI
import HTTPTypes
import Hummingbird
import Logging

/// An error answered to the caller, rendered in the format of the API they used (see ``APISurface``).
public struct GatewayError: Error, Sendable {
    /// The category, named as OpenAI and Anthropic name theirs.
    public enum Kind: String, Sendable {
        case invalidRequest = "invalid_request_error"
        case authentication = "authentication_error"
        case permission = "permission_error"
        case notFound = "not_found_error"
        case requestTooLarge = "request_too_large"
        case rateLimit = "rate_limit_error"
        case notImplemented = "not_implemented_error"
        case upstream = "upstream_error"
        case timeout = "timeout_error"
        case server = "api_error"
    }

    public var status: HTTPResponse.Status
    public var kind: Kind
    public var message: String
    /// Extra headers, such as `Retry-After`.
    public var headers: HTTPFields
    /// The request body's field at fault (`policy.transcript_visibility`), when one is: OpenAI's `param`.
    public var param: String?

    public init(_ status: HTTPResponse.Status, type kind: Kind, _ message: String, headers: HTTPFields = [:],
                param: String? = nil) {
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers
        self.param = param
    }

    public static let unauthenticated = GatewayError(
        .unauthorized, type: .authentication,
        "missing or invalid credentials: send an API key as 'Authorization: Bearer …' or 'x-api-key', or log in"
    )

    public static func badRequest(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError(.badRequest, type: .invalidRequest, message, param: param)
    }

    public static func notFound(_ message: String) -> GatewayError {
        GatewayError(.notFound, type: .notFound, message)
    }

    /// Maps a client-core failure talking to the upstream to what the caller sees.
    public static func upstream(_ error: any Error) -> GatewayError {
        switch error {
        case GSEAIError.timeout(let phase):
            return GatewayError(.gatewayTimeout, type: .timeout, "the model server did not answer in time (\(phase.rawValue))")
        case GSEAIError.connection:
            return GatewayError(.badGateway, type: .upstream, "the model server cannot be reached")
        case GSEAIError.streamInterrupted:
            return GatewayError(.badGateway, type: .upstream, "the model server's answer broke off")
        case GSEAIError.responseTooLarge(let limit):
            return GatewayError(.badGateway, type: .upstream, "the model server's answer exceeded \(limit) bytes")
        case let error as GSEAIError:
            return GatewayError(.badGateway, type: .upstream, "the model server failed: \(error)")
        default:
            return GatewayError(.badGateway, type: .upstream, "the model server failed")
        }
    }
}

/// The API family a path belongs to, which decides how errors look.
public enum APISurface: String, Sendable {
    /// LM Studio native `/api/v1/*`.
    case lmstudio
    /// LM Studio `/api/v0/*` (OpenAI shapes).
    case lmstudioV0
    /// OpenAI-compatible `/v1/*`.
    case openAI
    /// Anthropic-compatible `/v1/messages`.
    case anthropic
    /// llama.cpp's own API under `/llamacpp/*` (its OpenAI-compatible endpoints there too): errors as
    /// `llama-server` writes them, with the status as `code`.
    case llamacpp
    /// text-generation-webui's internal endpoints `/v1/internal/*` (OpenAI error shapes).
    case textGenerationWebUI = "tgw"
    /// The gateway's own JSON API (accounts, health).
    case gateway

    /// Where llama.cpp's API is mounted on the gateway, so that its `/health` and `/metrics` do not meet
    /// the gateway's own.
    public static let llamaCppBase = "/llamacpp"

    /// The surface of a request path.
    public init(path: String) {
        if path == "/v1/messages" || path.hasPrefix("/v1/messages/") {
            self = .anthropic
        } else if path.hasPrefix("/v1/internal/") {
            self = .textGenerationWebUI
        } else if path.hasPrefix("/v1/") || path == "/v1" {
            self = .openAI
        } else if path.hasPrefix("/api/v1/") {
            self = .lmstudio
        } else if path.hasPrefix("/api/v0/") {
            self = .lmstudioV0
        } else if path == Self.llamaCppBase || path.hasPrefix(Self.llamaCppBase + "/") {
            self = .llamacpp
        } else {
            self = .gateway
        }
    }

    /// The error body: Anthropic's `{"type":"error","error":{…}}`, llama.cpp's `{"error":{"code":<status>,…}}`,
    /// everyone else's `{"error":{…}}`.
    public func errorBody(_ kind: GatewayError.Kind, _ message: String, param: String? = nil,
                          status: HTTPResponse.Status = .badRequest) -> JSONValue {
        switch self {
        case .anthropic:
            return ["type": "error", "error": ["type": .string(kind.anthropicType), "message": .string(message)]]
        case .llamacpp:
            return ["error": ["code": .number(Double(status.code)), "message": .string(message), "type": .string(kind.llamaCppType)]]
        default:
            var error: [String: JSONValue] = ["message": .string(message), "type": .string(kind.rawValue), "code": nil]
            if let param { error["param"] = .string(param) }
            return ["error": .object(error)]
        }
    }
}

extension GatewayError.Kind {
    /// Anthropic's names for the same categories.
    var anthropicType: String {
        switch self {
        case .invalidRequest, .notImplemented: "invalid_request_error"
        case .authentication: "authentication_error"
        case .permission: "permission_error"
        case .notFound: "not_found_error"
        case .requestTooLarge: "request_too_large"
        case .rateLimit: "rate_limit_error"
        case .upstream, .server: "api_error"
        case .timeout: "timeout_error"
        }
    }

    /// llama.cpp's names (`llama-server`'s `error_type`), ours where it has none.
    var llamaCppType: String {
        switch self {
        case .invalidRequest, .requestTooLarge: "invalid_request_error"
        case .authentication: "authentication_error"
        case .permission: "permission_error"
        case .notFound: "not_found_error"
        case .notImplemented: "not_supported_error"
        case .rateLimit: "unavailable_error"
        case .upstream, .server, .timeout: "server_error"
        }
    }
}

/// Renders every error as JSON in the format of the API the caller used: ours, Hummingbird's (404 for an
/// unknown path, 413 for a body over the limit) and any other (a 500 that reveals nothing). Every error of a
/// request's handling ends here (``GatewayMiddleware``).
enum ErrorFormat {
    /// The answer for an error of `request`'s handling.
    static func response(for error: any Error, to request: Request, logger: Logger) -> Response {
        response(gatewayError(for: error, logger: logger), surface: APISurface(path: request.uri.path))
    }

    static func gatewayError(for error: any Error, logger: Logger) -> GatewayError {
        switch error {
        case let error as GatewayError:
            return error
        case let error as HTTPError:
            switch error.status {
            case .notFound: return .notFound("no such endpoint")
            case .contentTooLarge: return GatewayError(.contentTooLarge, type: .requestTooLarge, "the request body is too large")
            case .methodNotAllowed: return GatewayError(.methodNotAllowed, type: .invalidRequest, "method not allowed")
            default: return GatewayError(error.status, type: .invalidRequest, error.body ?? error.status.reasonPhrase)
            }
        case is CancellationError:
            // The caller left (the upstream work was cancelled for them): nginx's 499, not a server error.
            return GatewayError(HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), type: .invalidRequest,
                                "the caller closed the connection")
        default:
            logger.error("unhandled error", metadata: ["error.type": "\(type(of: error))"])
            return GatewayError(.internalServerError, type: .server, "internal error")
        }
    }

    /// The JSON response for an error on a surface.
    static func response(_ error: GatewayError, surface: APISurface) -> Response {
        var headers = error.headers
        headers[.contentType] = "application/json"
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: surface.errorBody(error.kind, error.message, param: error.param, status: error.status).jsonData)))
    }
}
