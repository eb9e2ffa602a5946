import Foundation
import GSEAI
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// Forwards every API surface of the upstream through the client core, with the caller's key swapped for
/// the server's token. Answers stream through event by event; requests are checked (size, JSON, images,
/// ownership of response ids) before anything goes upstream; ids and token usage are recorded per user.
public struct ProxyController: Sendable {
    let upstream: GSEAIClient
    let kind: UpstreamKind
    let storage: Storage
    let metrics: GatewayMetrics
    let usageMeter: UsageMeter
    let maxBodyBytes: Int
    /// The checks every image in a request must pass.
    let images: ImageInspector
    /// Class policies (issue 5).
    let policies: PolicyEnforcer

    public init(upstream: GSEAIClient, kind: UpstreamKind, storage: Storage, metrics: GatewayMetrics, usageMeter: UsageMeter,
                maxBodyBytes: Int, imageLimits: ImageLimits, policies: PolicyEnforcer) {
        self.policies = policies
        self.usageMeter = usageMeter
        self.upstream = upstream
        self.kind = kind
        self.storage = storage
        self.metrics = metrics
        self.maxBodyBytes = maxBodyBytes
        self.images = ImageInspector(imageLimits)
    }

    public func register(on router: Router<GatewayRequestContext>) {
        for endpoint in ProxyEndpoint.all {
            router.on(RouterPath(endpoint.path), method: endpoint.method) { request, context in
                try await forward(request, context: context, endpoint: endpoint)
            }
        }
    }

    /// Headers worth passing upstream; everything else (cookies, the caller's key) stays here.
    static let forwardedRequestHeaders: [HTTPField.Name] = [
        .contentType, .accept, HTTPField.Name("anthropic-version")!, HTTPField.Name("anthropic-beta")!,
    ]
    /// Headers worth passing back; hop-by-hop and length headers are the server's own business. The SDKs
    /// wait as long as `Retry-After` says before they try again.
    static let forwardedResponseHeaders: [HTTPField.Name] = [.contentType, .cacheControl, .retryAfter]

    func forward(_ request: Request, context: GatewayRequestContext, endpoint: ProxyEndpoint) async throws -> Response {
        let identity = try context.require(endpoint.minimumRole)
        guard endpoint.kinds.contains(kind) else {
            throw GatewayError(.notImplemented, type: .notImplemented,
                               "\(endpoint.path) is not available: this gateway's model server speaks only the OpenAI-compatible API")
        }
        var request = request
        var inspection: RequestInspection?
        var body: ByteBuffer?
        // Class policy (issue 5): model lists are shortened to the class's models, one model is refused.
        var listingClass: ClassSession?
        /// The class whose policy applied, for usage.
        var appliedClassID: String?
        if endpoint.method == .get, PolicyEnforcer.modelPaths.contains(endpoint.path) {
            listingClass = try await policies.resolver.applicableClass(for: identity.user)
            if let listingClass, let model = Self.modelInPath(context) { try PolicyEnforcer.checkModel(model, in: listingClass) }
        }
        if endpoint.method == .post {
            var bytes = try await RequestBodies.collect(&request, upTo: maxBodyBytes)
            let (json, checked) = try await Self.inspect(bytes, images: images)
            if endpoint.isStateful, let previous = checked.previousResponseID {
                // Another user's id is answered exactly like an unknown one.
                guard try await storage.responses.owner(of: previous) == identity.user.id else {
                    throw GatewayError.notFound("response '\(previous)' not found")
                }
            }
            // Class policy (issue 5): may refuse the request, or rewrite it (output tokens, system prompt).
            if let applied = try await policies.admit(user: identity.user, model: checked.model, imageCount: checked.imageCount,
                                                      path: endpoint.path) {
                appliedClassID = applied.id
                if let rewritten = PolicyEnforcer.rewrite(json, path: endpoint.path, in: applied) {
                    bytes = ByteBuffer(data: rewritten.jsonData)
                }
            }
            inspection = checked
            body = bytes
        }

        var outgoing = RawRequest(method: HTTPMethod(rawValue: endpoint.method.rawValue), path: request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        for name in Self.forwardedRequestHeaders {
            if let value = request.headers[name] { outgoing.headers.add(name: name.rawName, value: value) }
        }
        if let body { outgoing.body = .bytes(body) }
        outgoing.expectsStream = inspection?.stream == true

        let recorder = UsageRecorder(storage: storage, metrics: metrics, meter: usageMeter, userID: identity.user.id,
                                     classID: appliedClassID, model: inspection?.model ?? "unknown",
                                     counted: endpoint.method == .post)
        let surface = endpoint.surface.rawValue
        let upstream = self.upstream
        let metrics = self.metrics

        guard inspection?.stream == true else {
            // The whole exchange is cancelled if the caller leaves: a long answer is not generated for no one.
            let collected = try await upstreamCall {
                try await context.cancellingIfCallerLeaves { [outgoing] in
                    let started = ContinuousClock.now
                    let response = try await upstream.send(outgoing)
                    metrics.recordTimeToFirstByte(surface: surface, ContinuousClock.now - started)
                    return CollectedResponse(status: response.status, headers: response.headers,
                                             body: try await response.body.collect(upTo: upstream.maxResponseBytes))
                }
            }
            return try await answer(collected, endpoint: endpoint, recorder: recorder, listingClass: listingClass)
        }

        // A stream's head comes at once; the relay below stops when the caller leaves.
        let started = ContinuousClock.now
        let upstreamResponse = try await upstreamCall { try await upstream.send(outgoing) }
        metrics.recordTimeToFirstByte(surface: surface, ContinuousClock.now - started)
        var headers = Self.responseHeaders(upstreamResponse.headers)
        guard (200..<300).contains(upstreamResponse.status),
            headers[.contentType]?.lowercased().hasPrefix("text/event-stream") == true
        else {
            let body = try await upstreamCall { try await upstreamResponse.body.collect(upTo: upstream.maxResponseBytes) }
            return try await answer(CollectedResponse(status: upstreamResponse.status, headers: upstreamResponse.headers, body: body),
                                    endpoint: endpoint, recorder: recorder)
        }

        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        let responseBody = ResponseBody { writer in
            metrics.streamStarted()
            defer { metrics.streamEnded() }
            let relay = StreamRelay(writer: writer, endpoint: endpoint, recorder: recorder, metrics: metrics)
            // Leaving the relay (the caller has gone) cancels the upstream request.
            try await context.cancellingIfCallerLeaves { try await relay.run(upstreamResponse.body) }
        }
        return Response(status: .init(code: upstreamResponse.status), headers: headers, body: responseBody)
    }

    /// The model a path names after its route's `**` (`/api/v0/models/qwen/qwen3-4b`, or with the slash
    /// escaped as `%2F`), or `nil` when the route names none.
    static func modelInPath(_ context: GatewayRequestContext) -> String? {
        let parts = context.parameters.getCatchAll()
        guard !parts.isEmpty else { return nil }
        let raw = parts.joined(separator: "/")
        return raw.removingPercentEncoding ?? raw
    }

    /// Parses a request body and checks it (images included). A large body (images) is parsed on Swift's
    /// global pool rather than on the connection's event loop, which would keep the loop's other connections
    /// waiting meanwhile; a small one, the usual request, is parsed where it is.
    static func inspect(_ bytes: ByteBuffer, images: ImageInspector) async throws -> (JSONValue, RequestInspection) {
        @Sendable func parse() throws -> (JSONValue, RequestInspection) {
            let json: JSONValue
            do {
                json = try JSONValue(parsing: bytes.readableBytesView)
            } catch {
                throw GatewayError.badRequest("the request body is not valid JSON")
            }
            guard case .object = json else { throw GatewayError.badRequest("the request body must be a JSON object") }
            return (json, try RequestInspection(json, images: images))
        }
        guard bytes.readableBytes > largeBody else { return try parse() }
        return try await withTaskExecutorPreference(globalConcurrentExecutor) { try parse() }
    }

    /// From this size on, a request body is parsed off the event loop (about a millisecond of parsing).
    static let largeBody = 256 << 10

    /// A whole upstream answer.
    struct CollectedResponse: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// Answers with a whole upstream answer, after recording what it issued.
    func answer(_ collected: CollectedResponse, endpoint: ProxyEndpoint, recorder: UsageRecorder,
                listingClass: ClassSession? = nil) async throws -> Response {
        var collected = collected
        let json = try? JSONValue(parsing: collected.body.readableBytesView)
        // Class policy (issue 5): a student sees only the models of their class.
        if (200..<300).contains(collected.status), let listingClass, let json,
            let filtered = PolicyEnforcer.filterModels(json, path: endpoint.path, policy: listingClass.policy)
        {
            collected.body = ByteBuffer(data: filtered.jsonData)
        }
        guard (200..<300).contains(collected.status) else {
            return try upstreamFailure(collected, json: json)
        }
        var observer = ResponseObserver(endpoint: endpoint)
        if let json { observer.observe(json: json) }
        // Written before answering: an acknowledged response id is never lost.
        try await recorder.record(observer)
        return Response(status: .init(code: collected.status), headers: Self.responseHeaders(collected.headers),
                        body: .init(byteBuffer: collected.body))
    }

    /// Runs an exchange with the upstream, turning its failures into the caller's error.
    func upstreamCall<T>(_ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            metrics.recordUpstreamError(kind: Self.errorKind(error))
            throw GatewayError.upstream(error)
        }
    }

    static func responseHeaders(_ upstream: HTTPHeaders) -> HTTPFields {
        var headers = HTTPFields()
        for name in forwardedResponseHeaders {
            if let value = upstream.first(name: name.rawName) { headers[name] = value }
        }
        return headers
    }


    /// An upstream's non-success answer: a client error in JSON passes through as the upstream said it (it
    /// speaks the caller's API), with its `Retry-After`; a server error, or an answer that is not JSON,
    /// becomes a 502 in the caller's format.
    func upstreamFailure(_ collected: CollectedResponse, json: JSONValue?) throws -> Response {
        let status = collected.status
        if (400..<500).contains(status), json != nil {
            var headers = Self.responseHeaders(collected.headers)
            headers[.contentType] = "application/json"
            return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: collected.body))
        }
        metrics.recordUpstreamError(kind: "status_\(status)")
        let detail = json.map { ServerError(json: $0).message } ?? "HTTP \(status)"
        throw GatewayError(.badGateway, type: .upstream, "the model server failed: \(detail)")
    }

    static func errorKind(_ error: any Error) -> String {
        switch error {
        case GSEAIError.timeout(let phase): "timeout_\(phase)"
        case GSEAIError.connection: "connection"
        case GSEAIError.streamInterrupted: "interrupted"
        default: "other"
        }
    }
}

/// Relays a stream piece by piece as it arrives, watching it go by; when the upstream fails or stops
/// early, ends the caller's stream with an error event in their API's form.
final class StreamRelay: @unchecked Sendable {
    // Unchecked: the writer is used by one task at a time (the relay's), never concurrently.
    private var writer: any ResponseBodyWriter
    private var observer: ResponseObserver
    private let endpoint: ProxyEndpoint
    private let recorder: UsageRecorder
    private let metrics: GatewayMetrics

    init(writer: any ResponseBodyWriter, endpoint: ProxyEndpoint, recorder: UsageRecorder, metrics: GatewayMetrics) {
        self.writer = writer
        self.observer = ResponseObserver(endpoint: endpoint)
        self.endpoint = endpoint
        self.recorder = recorder
        self.metrics = metrics
    }

    func run(_ body: ResponseBodyStream) async throws {
        var failure: GSEAIError?
        var recorded = false
        do {
            for try await piece in body {
                observer.observe(streamPiece: piece)
                if observer.sawFinalEvent && !recorded {
                    // Written before the caller sees the final event, which carries the response id and
                    // ends the stream for the clients: an acknowledged id is never lost, and a caller who
                    // continues from it at once finds it recorded.
                    try await recorder.record(observer)
                    recorded = true
                }
                try await writer.write(piece)
            }
            observer.finishStream()
            if !observer.sawFinalEvent { failure = .streamInterrupted }
        } catch let error as GSEAIError {
            failure = error
        } catch {
            // The caller left or could not be written to: record what was spent, then stop.
            if !recorded { try? await recorder.record(observer) }
            throw error
        }
        if let failure {
            metrics.recordUpstreamError(kind: ProxyController.errorKind(failure))
            let error = GatewayError.upstream(failure)
            try await writer.write(ByteBuffer(string: StreamErrorEvents.render(error, endpoint: endpoint)))
        }
        // Written before the stream's end: an acknowledged response id is never lost.
        if !recorded { try await recorder.record(observer) }
        try await writer.finish(nil)
    }
}

/// Writes what a stream's caller needs when the upstream fails mid-way, in their API's own form.
enum StreamErrorEvents {
    static func render(_ error: GatewayError, endpoint: ProxyEndpoint) -> String {
        switch endpoint.surface {
        case .lmstudio:
            // LM Studio always ends a stream with chat.end, also after an error.
            let event: JSONValue = ["type": "error", "error": ["type": .string(error.kind.rawValue), "message": .string(error.message)]]
            let end: JSONValue = ["type": "chat.end", "result": ["output": [], "error": ["message": .string(error.message)]]]
            return ServerSentEvent(event: "error", data: event.jsonString).encoded
                + ServerSentEvent(event: "chat.end", data: end.jsonString).encoded
        case .anthropic:
            return ServerSentEvent(event: "error", data: endpoint.surface.errorBody(error.kind, error.message).jsonString).encoded
        case .openAI where endpoint.isResponsesAPI:
            let event: JSONValue = ["type": "error", "code": .string(error.kind.rawValue), "message": .string(error.message), "param": nil]
            return ServerSentEvent(event: "error", data: event.jsonString).encoded
        default:
            return ServerSentEvent(data: endpoint.surface.errorBody(error.kind, error.message).jsonString).encoded
        }
    }
}

/// Records, once per request, the response ids issued to the user and the tokens spent.
struct UsageRecorder: Sendable {
    let storage: Storage
    let metrics: GatewayMetrics
    let meter: UsageMeter
    let userID: String
    /// The class whose policy applied to the request, if any.
    let classID: String?
    let model: String
    /// Model listings and the like are not usage.
    let counted: Bool

    func record(_ observer: ResponseObserver) async throws {
        try await record(responseIDs: observer.responseIDs, inputTokens: observer.inputTokens, outputTokens: observer.outputTokens)
    }

    func record(responseIDs: [String], inputTokens: Int, outputTokens: Int) async throws {
        let now = Date()
        // The counts come from the model server: a negative one would give budget back, a huge one overflow
        // the totals.
        let inputTokens = Self.plausible(inputTokens), outputTokens = Self.plausible(outputTokens)
        if counted {
            meter.record(userID: userID, classID: classID, model: model, day: Self.day(now), inputTokens: inputTokens,
                         outputTokens: outputTokens)
            metrics.recordTokens(model: model, input: inputTokens, output: outputTokens)
        }
        for id in responseIDs {
            try await storage.responses.record(responseID: id, userID: userID, at: now)
        }
    }

    /// A token count as it is counted: at least 0, at most 2^40 (no answer has more; totals cannot overflow).
    static func plausible(_ count: Int) -> Int {
        min(max(0, count), 1 << 40)
    }

    /// `YYYY-MM-DD` in UTC, by arithmetic: a formatter per request costs more than the rest of the accounting.
    static func day(_ date: Date) -> String {
        // Howard Hinnant's days-to-civil algorithm.
        let days = Int((date.timeIntervalSince1970 / 86_400).rounded(.down))
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)-\(two(month))-\(two(day))"
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
