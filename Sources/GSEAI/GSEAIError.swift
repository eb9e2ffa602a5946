import NIOHTTP1

/// An error reported by the server in its JSON body.
///
/// LM Studio, OpenAI, Anthropic, llama.cpp and FastAPI (text-generation-webui) shapes are all understood:
/// `{"error": {"message", "type", "code"}}`, `{"error": "text"}`, `{"type": "error", "error": {"type", "message"}}`
/// and `{"detail": "text"}`.
public struct ServerError: Sendable, Hashable, CustomStringConvertible {
    /// The human-readable message.
    public var message: String
    /// The error's type or category, when the server gave one.
    public var type: String?
    /// The error's code, when the server gave one.
    public var code: String?
    /// The whole JSON body, when it was JSON.
    public var body: JSONValue?

    /// Creates an error from its parts.
    public init(message: String, type: String? = nil, code: String? = nil, body: JSONValue? = nil) {
        self.message = message
        self.type = type
        self.code = code
        self.body = body
    }

    /// Reads a server's error body; falls back to the body text.
    public init(body bytes: some Collection<UInt8>) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let json = try? JSONValue(parsing: Array(bytes)) else {
            self.init(message: text.isEmpty ? "no error message" : String(text.prefix(500)))
            return
        }
        self.init(json: json)
    }

    /// Reads an error from a JSON value in any of the supported shapes.
    public init(json: JSONValue) {
        let error = json["error"] ?? json
        if let text = error.stringValue {
            self.init(message: text, body: json)
            return
        }
        let message = error["message"]?.stringValue ?? json["message"]?.stringValue ?? json["detail"]?.stringValue ?? json.jsonString
        let code = error["code"].flatMap { $0.stringValue ?? $0.intValue.map(String.init) }
        self.init(message: message, type: error["type"]?.stringValue, code: code, body: json)
    }

    public var description: String { message }
}

/// Which time limit a request ran into.
public enum TimeoutPhase: String, Sendable, Hashable {
    /// Establishing the connection.
    case connect
    /// Waiting for the response head after sending the request.
    case firstByte = "first byte"
    /// Waiting for the next piece of a response body.
    case idle
}

/// Everything that can go wrong talking to a GSE AI server.
public enum GSEAIError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server answered with a non-success status.
    case http(status: Int, error: ServerError)
    /// The server reported an error inside a stream.
    case stream(ServerError)
    /// A time limit ran out.
    case timeout(TimeoutPhase)
    /// The server could not be reached, or the connection broke.
    case connection(String)
    /// The response ended early: the connection broke, or a stream ended before its final event.
    case streamInterrupted
    /// The response could not be understood.
    case invalidResponse(String)
    /// The response body exceeded the client's limit.
    case responseTooLarge(limit: Int)
    /// An argument was rejected before anything was sent.
    case invalidArgument(String)

    /// The HTTP status, when the server answered with one.
    public var status: Int? {
        if case .http(let status, _) = self { return status }
        return nil
    }

    /// The server's error, when it sent one.
    public var serverError: ServerError? {
        switch self {
        case .http(_, let error), .stream(let error): return error
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .http(let status, let error):
            let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
            return "HTTP \(status) \(reason): \(error.message)"
        case .stream(let error): return "server error during the stream: \(error.message)"
        case .timeout(let phase): return "timed out (\(phase.rawValue))"
        case .connection(let detail): return "connection to the server failed: \(detail)"
        case .streamInterrupted: return "the response ended before it was complete"
        case .invalidResponse(let detail): return "invalid response from the server: \(detail)"
        case .responseTooLarge(let limit): return "the response exceeded \(limit) bytes"
        case .invalidArgument(let detail): return detail
        }
    }
}
