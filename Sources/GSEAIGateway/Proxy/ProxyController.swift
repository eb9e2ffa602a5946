import Foundation
import GSEAI
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Forwards every API surface of the model servers through the client core, with the caller's key swapped
/// for the server's token. Requests are checked (size, JSON, images, ownership of response ids) before
/// anything goes upstream; each then passes the one admission step (policy, route, a slot in the fair
/// queue), goes to an upstream that serves its model (another one, if that fails before answering), and
/// streams back event by event; ids and token usage are recorded per user.
public struct ProxyController: Sendable {
    let admission: Admission
    let storage: Storage
    let metrics: GatewayMetrics
    let usageMeter: UsageMeter
    let maxBodyBytes: Int
    /// The checks every image in a request must pass.
    let images: ImageInspector
    /// Which download job runs on which upstream (a job id is an upstream's own).
    let downloads = DownloadJobs()

    var pool: UpstreamPool { admission.pool }
    var policies: PolicyEnforcer { admission.policies }

    public init(admission: Admission, storage: Storage, metrics: GatewayMetrics, usageMeter: UsageMeter, maxBodyBytes: Int,
                imageLimits: ImageLimits) {
        self.admission = admission
        self.storage = storage
        self.metrics = metrics
        self.usageMeter = usageMeter
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
        .contentType, .accept, .anthropicVersion, .anthropicBeta,
    ]
    /// Headers worth passing back; hop-by-hop and length headers are the server's own business. The SDKs
    /// wait as long as `Retry-After` says before they try again.
    static let forwardedResponseHeaders: [HTTPField.Name] = [.contentType, .cacheControl, .retryAfter]
    /// How long a non-streamed answer waited for a slot, in milliseconds.
    static let queueWaitHeader = HTTPField.Name("X-Queue-Wait-Ms")!

    /// A request on its way: checked, rewritten by the policy, and admitted. A class, not a struct: it goes into
    /// every closure and frame of the exchange, and a copy of the struct (the endpoint's, the request's, the
    /// ticket's and the recorder's fields) retained and released some forty references each time (bench/README.md,
    /// "The request context").
    final class Prepared: Sendable {
        let endpoint: ProxyEndpoint
        let ticket: Admission.Ticket
        let outgoing: RawRequest
        let stream: Bool
        let recorder: UsageRecorder
        /// The class whose model list the answer is cut to, for model lists and a model's page.
        let listingClass: ClassSession?

        init(endpoint: ProxyEndpoint, ticket: Admission.Ticket, outgoing: RawRequest, stream: Bool, recorder: UsageRecorder,
             listingClass: ClassSession?) {
            self.endpoint = endpoint
            self.ticket = ticket
            self.outgoing = outgoing
            self.stream = stream
            self.recorder = recorder
            self.listingClass = listingClass
        }
    }

    func forward(_ request: Request, context: GatewayRequestContext, endpoint: ProxyEndpoint) async throws -> Response {
        let prepared = try await prepare(request, context: context, endpoint: endpoint)
        if let list = endpoint.modelList, admission.candidates(prepared.ticket).count > 1 {
            return try await mergedModelList(prepared, list: list, context: context)
        }
        guard prepared.stream else { return try await whole(prepared, context: context) }
        // A stream that gets a slot at once goes on as before; one that must wait answers its head now and
        // says its place in line until it is its turn.
        if let slot = try admission.tryAcquire(prepared.ticket) {
            return try await streamed(prepared, slot: slot, context: context)
        }
        // A refusal of the queue is still an HTTP status now; once the head is sent, it could only be an event.
        try admission.checkMayWait(prepared.ticket)
        return queuedStream(prepared, context: context)
    }

    /// The request checked, its body inspected, the policy applied and a ticket for the queue: everything
    /// before the upstream is asked. A function of its own (not inlined) so that its frame, the largest of the
    /// exchange (the request, the identity, the class, the ticket and the outgoing request, about 10 KB), is
    /// given back before the answer is awaited, rather than held, with a slab of memory of its own, until the
    /// answer has been written (bench/README.md, "Look-ups and copies, the key's digest, a request's largest frame").
    @inline(never)
    private func prepare(_ request: Request, context: GatewayRequestContext, endpoint: ProxyEndpoint) async throws -> Prepared {
        let identity = try context.require(endpoint.minimumRole)
        guard pool.serves(endpoint.kinds) else { throw Admission.wrongKind(endpoint.path, needs: endpoint.kinds, present: pool.kinds) }
        var request = request
        var inspection: RequestInspection?
        var body: ByteBuffer?
        var json: JSONValue?
        var listingClass: ClassSession?
        var preferredUpstream: String?
        var model: String?
        if endpoint.modelList != nil || endpoint.model == .path {
            // A student sees only the models of their class, and a model of another is refused.
            listingClass = try await policies.resolver.applicableClass(for: identity.user)
            if endpoint.model == .path, let named = Self.modelInPath(context) {
                model = named
                if let listingClass { try PolicyEnforcer.checkModel(named, in: listingClass) }
            }
        }
        if endpoint.method == .post {
            let bytes = try await RequestBodies.collect(&request, context: context, upTo: maxBodyBytes)
            if endpoint.body == .optionalJSON, let other = try Self.nonObjectBody(bytes) {
                // Nothing, or JSON that is not an object (llama.cpp's LoRA scales): it names no model.
                body = other.bytes
                json = other.json
            } else {
                let (parsed, checked) = try await Self.inspect(bytes, images: images)
                if endpoint.isStateful, let previous = checked.previousResponseID {
                    // Another user's id is answered exactly like an unknown one.
                    guard try await storage.responses.owner(of: previous) == identity.user.id else {
                        throw GatewayError.notFound("response '\(previous)' not found")
                    }
                    // Only the upstream that issued it knows it.
                    preferredUpstream = try await storage.responses.upstream(of: previous)
                }
                model = checked.model
                inspection = checked
                body = bytes
                json = parsed
            }
        }
        if endpoint.model == .bodyOrServed, model == nil {
            // The class's allowed models and the usage apply to the model the server serves.
            model = await pool.servedModel(kinds: endpoint.kinds)
        }
        if endpoint.path == "/api/v1/models/download/status/:job", let job = context.parameters.get("job") {
            preferredUpstream = downloads.upstream(of: job)
        }
        var ticket = try await admission.ticket(user: identity.user, model: model, imageCount: inspection?.imageCount ?? 0,
                                                shape: endpoint.policy, kinds: endpoint.kinds, usesSlot: endpoint.usesSlot,
                                                preferredUpstream: preferredUpstream, path: endpoint.path)
        if let json, let applied = ticket.applied, let rewritten = PolicyEnforcer.rewrite(json, shape: endpoint.policy, in: applied) {
            body = ByteBuffer(data: rewritten.jsonData)
        }
        // Model management names its upstream when several could do it (`upstream`, the gateway's own field).
        if endpoint.minimumRole > .student, let json, let named = json["upstream"]?.stringValue {
            guard let upstream = pool.upstream(named: named), endpoint.kinds.contains(upstream.kind) else {
                throw GatewayError.notFound("no model server named '\(named)' that speaks this API")
            }
            ticket.preferred = named
            if case .object(var members) = json {
                members["upstream"] = nil
                body = ByteBuffer(data: JSONValue.object(members).jsonData)
            }
        }

        var outgoing = RawRequest(method: HTTPMethod(rawValue: endpoint.method.rawValue),
                                  path: endpoint.upstreamPath(request.uri.path) + (request.uri.query.map { "?" + $0 } ?? ""))
        // Gathered, then made SwiftNIO's fields at once: `add` checks each name's bytes for ASCII (ours are) and grows
        // the fields one at a time (about 800 instructions a request; bench/README.md, "Stack room for the log line,
        // promises and conversions left out").
        var forwarded: [(String, String)] = []
        forwarded.reserveCapacity(Self.forwardedRequestHeaders.count)
        for name in Self.forwardedRequestHeaders {
            if let value = request.headers.value(name) { forwarded.append((name.rawName, value)) }
        }
        outgoing.headers = HTTPHeaders(forwarded)
        if let body { outgoing.body = .bytes(body) }
        let stream = inspection?.stream == true
        outgoing.expectsStream = stream
        outgoing.bodyExecutor = context.executor
        outgoing.eventLoop = context.channel?.eventLoop
        let recorder = UsageRecorder(storage: storage, metrics: metrics, meter: usageMeter, userID: identity.user.id,
                                     classID: ticket.applied?.id, model: model ?? "unknown",
                                     counted: endpoint.method == .post, reservation: ticket.reservation)
        return Prepared(endpoint: endpoint, ticket: ticket, outgoing: outgoing, stream: stream, recorder: recorder,
                        listingClass: listingClass)
    }

    // MARK: Whole answers

    /// Waits for a slot (the caller hears nothing until the answer), then answers with the whole upstream
    /// answer and how long it waited (`X-Queue-Wait-Ms`). The whole exchange is cancelled if the caller
    /// leaves: a long answer is not generated for no one.
    func whole(_ prepared: Prepared, context: GatewayRequestContext) async throws -> Response {
        let admission = self.admission
        let metrics = self.metrics
        let surface = prepared.endpoint.surface.rawValue
        let (collected, waited, upstream) = try await upstreamCall {
            try await context.cancellingRequestIfCallerLeaves {
                var (response, slot) = try await Self.send(prepared, admission: admission, slot: nil, metrics: metrics, surface: surface)
                var tried: Set<String> = []
                let waited = slot.waited
                while true {
                    do {
                        let body = try await response.body.collect(upTo: slot.upstream.client.maxResponseBytes)
                        slot.release()
                        return (CollectedResponse(status: response.status, headers: response.headers, body: body), waited, slot.upstream.name)
                    } catch where Self.brokeOff(error) && prepared.endpoint.usesSlot {
                        // The answer broke off, and the caller has had nothing yet: another upstream answers.
                        guard let next = try await admission.failOver(prepared.ticket, from: slot, reason: GatewayError.upstream(error).message,
                                                                      tried: &tried) else { throw error }
                        (response, slot) = try await Self.send(prepared, admission: admission, slot: next, metrics: metrics, surface: surface)
                    } catch {
                        slot.release()
                        throw error
                    }
                }
            }
        }
        var recorder = prepared.recorder
        recorder.upstream = upstream
        var response = try await answer(collected, endpoint: prepared.endpoint, recorder: recorder, listingClass: prepared.listingClass)
        if prepared.endpoint.usesSlot {
            // Appended, not set: none of the fields passed on from the upstream has its name (a set looks for it first,
            // about 400 instructions more).
            response.headers.append(HTTPField(name: Self.queueWaitHeader, value: String(Int((waited.seconds * 1000).rounded()))))
        }
        return response
    }

    /// Sends the request on `slot` (or on one it waits for), going on to the next upstream that may serve it
    /// when one fails before answering (refused, no head in time, 5xx while another may serve); returns
    /// the answer's head with the slot it holds, to release when the answer has been read.
    static func send(_ prepared: Prepared, admission: Admission, slot initial: Admission.Slot?, metrics: GatewayMetrics,
                     surface: String, onPosition: (@Sendable (Int) -> Void)? = nil) async throws -> (RawResponse, Admission.Slot) {
        var slot: Admission.Slot
        if let initial { slot = initial } else { slot = try await admission.acquire(prepared.ticket, onPosition: onPosition) }
        var tried: Set<String> = []
        while true {
            let started = ContinuousClock.now
            do {
                let response = try await slot.upstream.client.send(prepared.outgoing)
                metrics.recordTimeToFirstByte(surface: surface, ContinuousClock.now - started)
                // Whether another upstream may serve it is asked only of a failure (a route made, and a set).
                if response.status >= 500, !isCallersError(response.status), prepared.endpoint.usesSlot,
                    !admission.candidates(prepared.ticket, excluding: tried.union([slot.upstream.name])).isEmpty
                {
                    // Its body is not read: leaving it cancels the request.
                    guard let next = try await admission.failOver(prepared.ticket, from: slot, reason: "HTTP \(response.status)",
                                                                  tried: &tried, onPosition: onPosition) else { return (response, slot) }
                    slot = next
                    continue
                }
                if response.status < 500 || isCallersError(response.status) { slot.upstream.markSucceeded() }
                return (response, slot)
            } catch where Upstream.isUpstreamFault(error) && prepared.endpoint.usesSlot {
                guard let next = try await admission.failOver(prepared.ticket, from: slot, reason: GatewayError.upstream(error).message,
                                                              tried: &tried, onPosition: onPosition) else { throw error }
                slot = next
            } catch {
                if Upstream.isUpstreamFault(error) { slot.upstream.markFailed(GatewayError.upstream(error).message) }
                slot.release()
                throw error
            }
        }
    }

    // MARK: Streams

    /// A stream with its slot in hand: the upstream's head becomes the caller's (an error answer included),
    /// and its events are relayed as they come.
    func streamed(_ prepared: Prepared, slot first: Admission.Slot, context: GatewayRequestContext) async throws -> Response {
        let metrics = self.metrics
        let (upstreamResponse, slot) = try await upstreamCall {
            try await Self.send(prepared, admission: admission, slot: first, metrics: metrics, surface: prepared.endpoint.surface.rawValue)
        }
        let recorder = { var recorder = prepared.recorder; recorder.upstream = slot.upstream.name; return recorder }()
        var headers = Self.responseHeaders(upstreamResponse.headers)
        guard (200..<300).contains(upstreamResponse.status),
            headers.value(.contentType)?.lowercased().hasPrefix("text/event-stream") == true
        else {
            defer { slot.release() }
            let body = try await upstreamCall { try await upstreamResponse.body.collect(upTo: slot.upstream.client.maxResponseBytes) }
            return try await answer(CollectedResponse(status: upstreamResponse.status, headers: upstreamResponse.headers, body: body),
                                    endpoint: prepared.endpoint, recorder: recorder)
        }
        headers[.cacheControl] = "no-cache"
        headers[.xAccelBuffering] = "no"
        let endpoint = prepared.endpoint
        // The body's closure keeps the caller's connection, not the whole request context: its frame lives as
        // long as the stream.
        let caller = context.channel
        let responseBody = ResponseBody { writer in
            metrics.streamStarted()
            defer {
                metrics.streamEnded()
                slot.release()
            }
            let relay = StreamRelay(writer: writer, endpoint: endpoint, recorder: recorder, metrics: metrics, caller: caller)
            // The caller gone, the upstream request is cancelled: the NIO transport's body is closed from outside
            // (the relay, in this task, then ends as its next read throws); AsyncHTTPClient's needs the relay in
            // a task of its own, cancelled.
            let body = upstreamResponse.body
            if body.cancelsFromOutside {
                try await Self.relay(body, by: relay, stoppedIfCallerOf: caller)
            } else {
                try await Self.relay(body, by: relay, cancelledIfCallerOf: caller)
            }
        }
        return Response(status: .init(code: upstreamResponse.status), headers: headers, body: responseBody)
    }

    // The two ways of relaying a stream, each in a function of its own: the body's closure then keeps only the
    // frame of the way it takes while the stream is open.

    @inline(never)
    static func relay(_ body: ResponseBodyStream, by relay: StreamRelay, stoppedIfCallerOf caller: (any Channel)?) async throws {
        try await GatewayRequestContext.stoppingIfCallerLeaves(caller, stop: { body.cancel() }) { try await relay.run(body) }
    }

    @inline(never)
    static func relay(_ body: ResponseBodyStream, by relay: StreamRelay, cancelledIfCallerOf caller: (any Channel)?) async throws {
        try await GatewayRequestContext.cancellingIfCallerLeaves(caller) { try await relay.run(body) }
    }

    /// A stream that waits for a slot: its head (200, an event stream) goes at once, then a comment line with
    /// the place in line whenever it changes (`: queued 3`, which every SSE client skips), then the answer's
    /// events; an answer that fails, now that the status is sent, fails as an error event in the caller's
    /// API's form.
    func queuedStream(_ prepared: Prepared, context: GatewayRequestContext) -> Response {
        let admission = self.admission
        let metrics = self.metrics
        let endpoint = prepared.endpoint
        let responseBody = ResponseBody { writer in
            metrics.streamStarted()
            defer { metrics.streamEnded() }
            let writer = StreamWriter(writer)
            try await context.cancellingIfCallerLeaves {
                let (events, continuation) = AsyncStream.makeStream(of: QueueEvent.self)
                let waiting = Task {
                    do {
                        let (response, slot) = try await Self.send(prepared, admission: admission, slot: nil, metrics: metrics,
                                                                   surface: endpoint.surface.rawValue) { continuation.yield(.position($0)) }
                        continuation.yield(.answered(response, slot))
                    } catch {
                        continuation.yield(.failed(error))
                    }
                    continuation.finish()
                }
                try await withTaskCancellationHandler {
                    for await event in events {
                        switch event {
                        case .position(let ahead):
                            try await writer.write(ByteBuffer(string: ": queued \(ahead)\n\n"))
                        case .answered(let response, let slot):
                            defer { slot.release() }
                            var recorder = prepared.recorder
                            recorder.upstream = slot.upstream.name
                            try await Self.relayAfterWaiting(response, endpoint: endpoint, recorder: recorder, writer: writer, metrics: metrics,
                                                             caller: context.channel)
                            return
                        case .failed(let error):
                            let gatewayError = (error as? GatewayError) ?? GatewayError.upstream(error)
                            if !(error is GatewayError) { metrics.recordUpstreamError(kind: Self.errorKind(error)) }
                            try await writer.write(ByteBuffer(string: StreamErrorEvents.render(gatewayError, endpoint: endpoint)))
                            try await writer.finish()
                            return
                        }
                    }
                } onCancel: {
                    waiting.cancel()
                }
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[.xAccelBuffering] = "no"
        return Response(status: .ok, headers: headers, body: responseBody)
    }

    /// What a waiting stream hears: its place in line, then the answer's head, or why there is none.
    enum QueueEvent: Sendable {
        case position(Int)
        case answered(RawResponse, Admission.Slot)
        case failed(any Error)
    }

    /// Relays the answer of a stream that waited: its events as they come, or, for an answer that is not an
    /// event stream (an error of the upstream), its message as an error event.
    static func relayAfterWaiting(_ response: RawResponse, endpoint: ProxyEndpoint, recorder: UsageRecorder, writer: StreamWriter,
                                  metrics: GatewayMetrics, caller: (any Channel)?) async throws {
        let isStream = response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") == true
        guard (200..<300).contains(response.status), isStream else {
            let body = try? await response.body.collect(upTo: 1 << 20)
            let json = body.flatMap { try? JSONValue(parsing: $0.readableBytesView) }
            let message = json.map { ServerError(json: $0).message } ?? "HTTP \(response.status)"
            metrics.recordUpstreamError(kind: "status_\(response.status)")
            let error = (400..<500).contains(response.status)
                ? GatewayError(.init(code: response.status), type: .invalidRequest, message)
                : GatewayError(.badGateway, type: .upstream, "the model server failed: \(message)")
            try await writer.write(ByteBuffer(string: StreamErrorEvents.render(error, endpoint: endpoint)))
            try await writer.finish()
            return
        }
        let relay = StreamRelay(writer: writer.writer, endpoint: endpoint, recorder: recorder, metrics: metrics, caller: caller)
        try await relay.run(response.body)
    }

    // MARK: Model lists

    /// A model list from every upstream that may answer it, merged (the first to name a model keeps it), then
    /// cut to the caller's class.
    func mergedModelList(_ prepared: Prepared, list: ProxyEndpoint.ModelList, context: GatewayRequestContext) async throws -> Response {
        let upstreams = admission.candidates(prepared.ticket)
        let outgoing = prepared.outgoing
        let answers = await withTaskGroup(of: (Int, JSONValue?).self) { group in
            for (index, upstream) in upstreams.enumerated() {
                group.addTask {
                    guard let response = try? await upstream.client.send(outgoing), (200..<300).contains(response.status),
                        let body = try? await response.body.collect(upTo: upstream.client.maxResponseBytes),
                        let json = try? JSONValue(parsing: body.readableBytesView)
                    else {
                        upstream.markFailed("its model list could not be read")
                        return (index, nil)
                    }
                    upstream.markSucceeded()
                    return (index, json)
                }
            }
            var answers: [(Int, JSONValue?)] = []
            for await answer in group { answers.append(answer) }
            return answers.sorted { $0.0 < $1.0 }.compactMap(\.1)
        }
        guard case .object(var merged)? = answers.first else {
            throw GatewayError(.badGateway, type: .upstream, "no model server answered with its models")
        }
        var seen: Set<String> = []
        var items: [JSONValue] = []
        for answer in answers {
            for item in answer[list.listKey]?.arrayValue ?? [] {
                let id = item[list.idKey]?.stringValue ?? ""
                if seen.insert(id).inserted { items.append(item) }
            }
        }
        merged[list.listKey] = .array(items)
        var body = JSONValue.object(merged)
        if let listingClass = prepared.listingClass, let filtered = PolicyEnforcer.filterModels(body, list: list, policy: listingClass.policy) {
            body = filtered
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: body.jsonData)))
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

    /// A body that is empty, or JSON but not an object, with its JSON (`nil` when empty); `nil` for an object,
    /// which ``inspect(_:images:)`` checks.
    static func nonObjectBody(_ bytes: ByteBuffer) throws -> (bytes: ByteBuffer?, json: JSONValue?)? {
        guard bytes.readableBytes > 0 else { return (nil, nil) }
        guard let json = try? JSONValue(parsing: bytes.readableBytesView) else {
            throw GatewayError.badRequest("the request body is not valid JSON")
        }
        if case .object = json { return nil }
        return (bytes, json)
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
        // A successful answer is read for its ids and usage (and a download's job), not its content, unless its
        // model list is to be cut to the class; a failure for its message.
        let readWhole = !(200..<300).contains(collected.status) || (listingClass != nil && endpoint.modelList != nil)
        let json = readWhole
            ? try? JSONValue(parsing: collected.body.readableBytesView)
            : try? JSONValue(parsing: collected.body.readableBytesView, keeping: ResponseObserver.wholeAnswerMembers)
        // Class policy (issue 5): a student sees only the models of their class.
        if (200..<300).contains(collected.status), let listingClass, let json, let list = endpoint.modelList,
            let filtered = PolicyEnforcer.filterModels(json, list: list, policy: listingClass.policy)
        {
            collected.body = ByteBuffer(data: filtered.jsonData)
        }
        guard (200..<300).contains(collected.status) else {
            return try upstreamFailure(collected, json: json)
        }
        var observer = ResponseObserver(endpoint: endpoint)
        if let json { observer.observe(json: json) }
        if endpoint.path == "/api/v1/models/download", let job = json?["job_id"]?.stringValue, let upstream = recorder.upstream {
            downloads.remember(job, on: upstream)
        }
        // Written before answering: an acknowledged response id is never lost. The request's task cancelled as the
        // answer came (its caller left then: `cancellingRequestIfCallerLeaves`), the upstream's work is still counted,
        // in a task that is not.
        if Task.isCancelled {
            let observed = observer
            try await Task { try await recorder.record(observed) }.value
        } else {
            try await recorder.record(observer)
        }
        // The body's length appended here, where it is known absent (none of the fields passed on is it): Hummingbird's
        // `Response` sets it otherwise, a look for the name, a set and `String(describing:)`, about 600 instructions more
        // (bench/README.md, "Stack room for the log line, promises and conversions left out").
        var headers = Self.responseHeaders(collected.headers)
        headers.append(HTTPField(name: .contentLength, value: String(collected.body.readableBytes)))
        return Response(status: .init(code: collected.status), headers: headers, body: .init(byteBuffer: collected.body))
    }

    /// Runs an exchange with the upstream, turning its failures into the caller's error.
    func upstreamCall<T>(_ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as GatewayError {
            // Already the caller's (a refusal of the queue, say).
            throw error
        } catch {
            metrics.recordUpstreamError(kind: Self.errorKind(error))
            throw GatewayError.upstream(error)
        }
    }

    static func responseHeaders(_ upstream: HTTPHeaders) -> HTTPFields {
        // Appended (the names differ) into room made once, also for the fields the answer adds after these.
        var headers = HTTPFields()
        headers.reserveCapacity(6)
        for name in forwardedResponseHeaders {
            if let value = upstream.first(name: name.rawName) { headers.append(HTTPField(name: name, value: value)) }
        }
        return headers
    }


    /// An upstream's non-success answer: a client error in JSON passes through as the upstream said it (it
    /// speaks the caller's API), with its `Retry-After`; a server error, or an answer that is not JSON,
    /// becomes a 502 in the caller's format.
    func upstreamFailure(_ collected: CollectedResponse, json: JSONValue?) throws -> Response {
        let status = collected.status
        if Self.isCallersError(status), json != nil {
            var headers = Self.responseHeaders(collected.headers)
            headers[.contentType] = "application/json"
            return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: collected.body))
        }
        metrics.recordUpstreamError(kind: "status_\(status)")
        let detail = json.map { ServerError(json: $0).message } ?? "HTTP \(status)"
        throw GatewayError(.badGateway, type: .upstream, "the model server failed: \(detail)")
    }

    /// Whether an upstream's status speaks of the request rather than of the upstream's health: a client
    /// error, or 501 (llama.cpp's "this server does not support …", a feature it was not started with).
    static func isCallersError(_ status: Int) -> Bool {
        (400..<500).contains(status) || status == 501
    }

    /// Whether a body failed because its upstream went away or fell silent (not because it was too large).
    static func brokeOff(_ error: any Error) -> Bool {
        switch error {
        case GSEAIError.streamInterrupted, GSEAIError.timeout(.idle), GSEAIError.connection: true
        default: false
        }
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


/// Which upstream runs each download job the gateway started, so that its status is asked of that one.
final class DownloadJobs: Sendable {
    private let jobs = Mutex<[String: String]>([:])

    func remember(_ job: String, on upstream: String) {
        jobs.withLock { jobs in
            // A bounded memory: the oldest jobs are long done when a thousand more have started.
            if jobs.count >= 1000 { jobs.removeAll() }
            jobs[job] = upstream
        }
    }

    func upstream(of job: String) -> String? {
        jobs.withLock { $0[job] }
    }
}

/// A response body's writer, for the one task that writes to it at a time (the stream's).
final class StreamWriter: @unchecked Sendable {
    // Unchecked: written by one task at a time, never concurrently.
    private(set) var writer: any ResponseBodyWriter

    init(_ writer: any ResponseBodyWriter) {
        self.writer = writer
    }

    func write(_ buffer: ByteBuffer) async throws {
        try await writer.write(buffer)
    }

    func finish() async throws {
        try await writer.finish(nil)
    }
}
