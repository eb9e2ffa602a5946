import CompressNIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GSEAI
import GSEAITestSupport
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import GSEAIGateway

/// A JSON body well over the compression threshold, with enough repetition to shrink.
private let largeJSON: String = {
    let items = (0..<400).map { #"{"id":\#($0),"name":"item \#($0)","tags":["alpha","beta","gamma"]}"# }
    return #"{"data":[\#(items.joined(separator: ","))]}"#
}()

/// 600 KB of letters from a fixed pseudo-random sequence: it barely compresses, so the compressor's
/// output fills its buffers many times over.
private let noisyText: String = {
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(600_000)
    for _ in 0..<600_000 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes.append(letters[Int((state >> 33) % UInt64(letters.count))])
    }
    return String(decoding: bytes, as: UTF8.self)
}()

/// Keeps every log line, to check what the request log reveals.
private struct RecordingLogHandler: LogHandler {
    final class Lines: Sendable {
        let lines = Mutex<[(message: String, metadata: Logger.Metadata)]>([])
    }
    let recorded: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        recorded.lines.withLock { $0.append((event.message.description, merged)) }
    }
}

/// A request context that knows a peer's address, as the gateway's does.
private struct AddressedContext: RequestContext, RemoteAddressProviding {
    var coreContext: CoreRequestContextStorage
    var remoteAddress: String? { "192.0.2.7" }

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// A router with the gateway's middleware and a few routes shaped like the gateway's.
private func operationsRouter(metrics: GatewayMetrics) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: GatewayMiddleware(metrics: metrics))
    router.get("/large") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: largeJSON)))
    }
    router.get("/tiny") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"ok":true}"#)))
    }
    router.get("/events") { _, _ in
        // Chunks written one by one, as a relayed stream is: the middleware must pass them through untouched.
        Response(
            status: .ok,
            headers: [.contentType: "text/event-stream"],
            body: ResponseBody { writer in
                for index in 0..<100 {
                    try await writer.write(ByteBuffer(string: "data: {\"index\":\(index),\"padding\":\"\(String(repeating: "x", count: 40))\"}\n\n"))
                }
                try await writer.finish(nil)
            }
        )
    }
    router.get("/streamed-json") { _, _ in
        Response(
            status: .ok,
            headers: [.contentType: "application/json"],
            body: ResponseBody { writer in
                var remaining = ByteBuffer(string: largeJSON)
                while let chunk = remaining.readSlice(length: min(700, remaining.readableBytes)), chunk.readableBytes > 0 {
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            }
        )
    }
    router.get("/noise") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: noisyText)))
    }
    router.get("/streamed-noise") { _, _ in
        Response(
            status: .ok,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody { writer in
                var remaining = ByteBuffer(string: noisyText)
                while let chunk = remaining.readSlice(length: min(50_000, remaining.readableBytes)), chunk.readableBytes > 0 {
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            }
        )
    }
    router.get("/auth/keys/{id}") { _, context in
        try context.parameters.require("id")
    }
    return router
}

private func gunzip(_ buffer: ByteBuffer) throws -> String {
    var buffer = buffer
    return String(buffer: try buffer.decompress(with: .gzip()))
}

@Suite("Operations")
struct OperationsTests {
    @Test func gzipCompressesALargeJSONBody() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/large", method: .get, headers: [.acceptEncoding: "br;q=1.0, gzip;q=0.8"]) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentEncoding] == "gzip")
                #expect(response.headers[.vary] == "Accept-Encoding")
                #expect(response.headers[.contentLength] == nil)
                #expect(response.body.readableBytes < largeJSON.utf8.count / 4)
                let decompressed = try gunzip(response.body)
                #expect(decompressed == largeJSON)
            }
        }
    }

    @Test func gzipCompressesAStreamedJSONBody() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/streamed-json", method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == "gzip")
                let decompressed = try gunzip(response.body)
                #expect(decompressed == largeJSON)
            }
        }
    }

    @Test(arguments: ["/noise", "/streamed-noise"])
    func gzipHandlesBodiesLargerThanItsBuffers(path: String) async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: path, method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == "gzip")
                let decompressed = try gunzip(response.body)
                #expect(decompressed == noisyText)
            }
        }
    }

    @Test func gzipOverARealConnection() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.live) { client in
            try await client.execute(uri: "/large", method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == "gzip")
                #expect(response.headers[.contentLength] == nil)
                let decompressed = try gunzip(response.body)
                #expect(decompressed == largeJSON)
            }
        }
    }

    @Test func gzipIsNotAppliedWithoutAcceptEncoding() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/large", method: .get) { response in
                #expect(response.headers[.contentEncoding] == nil)
                #expect(response.headers[.vary] == "Accept-Encoding")
                #expect(String(buffer: response.body) == largeJSON)
            }
            try await client.execute(uri: "/large", method: .get, headers: [.acceptEncoding: "gzip;q=0, identity"]) { response in
                #expect(response.headers[.contentEncoding] == nil)
                #expect(String(buffer: response.body) == largeJSON)
            }
        }
    }

    @Test func gzipLeavesEventStreamsAlone() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/events", method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == nil)
                #expect(response.headers[.vary] == nil)
                let body = String(buffer: response.body)
                #expect(body.hasPrefix("data: {\"index\":0,"))
                #expect(body.contains("data: {\"index\":99,"))
            }
        }
    }

    @Test func gzipSkipsTinyBodies() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/tiny", method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == nil)
                #expect(response.headers[.contentLength] == "11")
                #expect(String(buffer: response.body) == #"{"ok":true}"#)
            }
        }
    }

    @Test func acceptEncodingParsing() {
        #expect(ResponseCompression.acceptsGzip(["gzip, deflate, br"]))
        #expect(ResponseCompression.acceptsGzip(["deflate", "GZIP;q=0.5"]))
        #expect(ResponseCompression.acceptsGzip(["*"]))
        #expect(!ResponseCompression.acceptsGzip(["gzip;q=0"]))
        #expect(!ResponseCompression.acceptsGzip(["*;q=0.5, gzip;q=0"]))
        #expect(!ResponseCompression.acceptsGzip(["br, identity"]))
        #expect(!ResponseCompression.acceptsGzip([]))
    }

    @Test func aBearerTokenIsReadWhateverTheSchemesCaseAndTheSpacesAround() {
        #expect(AuthenticationMiddleware.bearerToken("Bearer gse_abc") == "gse_abc")
        #expect(AuthenticationMiddleware.bearerToken("bEARER  gse_abc \t") == "gse_abc")
        #expect(AuthenticationMiddleware.bearerToken("Bearer a b") == "a b")
        #expect(AuthenticationMiddleware.bearerToken("Bearer é") == "é")
        for refused in ["", "Bearer", "Bearer ", "Bearer  \t ", "Bearergse_abc", "Basic Z3NlOmFiYw==", "Béarer x", " Bearer x"] {
            #expect(AuthenticationMiddleware.bearerToken(refused) == nil, "\(refused)")
        }
    }

    /// The four security headers are on every answer of the gateway's server, once each, with the gateway's values:
    /// the page's, a forwarded route's 401 (no key), a 404 of Hummingbird's router, a path the middleware refuses (a
    /// control character in it), and a request that cannot be read, refused before any handler or middleware runs. The
    /// codec writes them (`GatewayHTTP1CodecTests.theCodecsOwnFieldsAreInEveryFinalAnswerOnce`: in place of a handler's
    /// own).
    @Test func theSecurityHeadersAreOnEveryAnswerOnce() async throws {
        try await GatewayHarness.with { gateway in
            let answers = [
                try await gateway.request(.GET, "/"),
                try await gateway.request(.POST, "/v1/chat/completions", body: #"{"model":"m","messages":[]}"#),
                try await gateway.request(.GET, "/v1/no-such-route"),
                try await gateway.request(.GET, "/a%00b"),
            ]
            #expect(answers.map(\.status) == [200, 401, 404, 400])
            for answer in answers {
                #expect(answer.headers["x-frame-options"] == ["DENY"])
                #expect(answer.headers["content-security-policy"] == [SecurityHeaders.contentSecurityPolicy])
                #expect(answer.headers["x-content-type-options"] == ["nosniff"])
                #expect(answer.headers["referrer-policy"] == ["no-referrer"])
            }
            // A request line that cannot be read (a field without its colon).
            let port = try #require(URLComponents(string: gateway.baseURL)?.port)
            let client = try await RawHTTPClient.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port))
            try await client.send("GET / HTTP/1.1\r\nHost gateway\r\n\r\n")
            let deadline = ContinuousClock.now + .seconds(5)
            while !client.text.contains("\r\n\r\n"), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            let head = client.text.components(separatedBy: "\r\n\r\n").first ?? ""
            #expect(head.hasPrefix("HTTP/1.1 400"), "\(head)")
            for line in ["X-Frame-Options: DENY", "Content-Security-Policy: \(SecurityHeaders.contentSecurityPolicy)",
                         "X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer"] {
                #expect(head.components(separatedBy: "\r\n").filter { $0 == line }.count == 1, "\(head)")
            }
        }
    }

    @Test func contentTypesAndCacheControlAreReadWhateverTheirCaseAndSpaces() {
        typealias Gzip = ResponseCompression
        #expect(Gzip.isCompressible(contentType: "Application/JSON; charset=utf-8"))
        #expect(Gzip.isCompressible(contentType: " TEXT/html ;q=1"))
        #expect(Gzip.isCompressible(contentType: "image/svg+xml"))
        #expect(!Gzip.isCompressible(contentType: "Text/Event-Stream; charset=utf-8"))
        #expect(!Gzip.isCompressible(contentType: "image/png"))
        #expect(!Gzip.isCompressible(contentType: ""))
        #expect(!Gzip.isCompressible(contentType: "application/jsonx"))
        #expect(!Gzip.isCompressible(contentType: "application/jso"))
        #expect(!Gzip.isCompressible(contentType: "text"))
        #expect(Gzip.isCompressible(contentType: "TEXT/"))
        #expect(Gzip.isCompressible(contentType: "Application/Manifest+JSON"))
        #expect(Gzip.isCompressible(contentType: "text/event-streams"))
        func transformable(_ cacheControl: String) -> Bool {
            Gzip().isCompressible(Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: cacheControl],
                                           body: .init(byteBuffer: ByteBuffer(repeating: 0x20, count: 4096))))
        }
        #expect(!transformable("public, No-Transform"))
        #expect(!transformable("no-transform"))
        #expect(transformable("no-cache, no-store"))
        #expect(transformable("no-transfor"))
    }

    @Test func metricsLabelRequestsByRoutePattern() async throws {
        let metrics = GatewayMetrics()
        let app = Application(router: operationsRouter(metrics: metrics))
        try await app.test(.router) { client in
            for id in ["k1", "k2", "k3"] {
                try await client.execute(uri: "/auth/keys/\(id)", method: .get) { response in
                    #expect(String(buffer: response.body) == id)
                }
            }
            try await client.execute(uri: "/no/such/page/12345", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
        let exposition = String(buffer: metrics.exposition())
        #expect(exposition.contains(#"gseai_http_requests_total{method="GET",route="/auth/keys/{id}",status="200"} 3"#))
        #expect(exposition.contains(#"gseai_http_requests_total{method="GET",route="unmatched",status="404"} 1"#))
        #expect(exposition.contains(#"gseai_http_request_duration_seconds_count{method="GET",route="/auth/keys/{id}"} 3"#))
        #expect(!exposition.contains("k1"))
        #expect(!exposition.contains("12345"))
    }

    @Test func metricsRecordGatewayEvents() {
        let metrics = GatewayMetrics(modelLabelLimit: 2)
        metrics.streamStarted()
        metrics.streamStarted()
        metrics.streamEnded()
        metrics.recordTokens(model: "qwen/qwen3-8b", input: 12, output: 30)
        metrics.recordTokens(model: "qwen/qwen3-8b", input: 3, output: 0)
        metrics.recordTokens(model: "gemma-3", input: 1, output: 1)
        metrics.recordTokens(model: "invented-1", input: 5, output: 5)
        metrics.recordTokens(model: "invented-2", input: 5, output: 5)
        metrics.recordUpstreamError(kind: "timeout")
        metrics.recordTimeToFirstByte(surface: "openAI", .milliseconds(300))

        let exposition = String(buffer: metrics.exposition())
        #expect(exposition.contains("gseai_active_streams 1"))
        #expect(exposition.contains(#"gseai_tokens_total{direction="input",model="qwen/qwen3-8b"} 15"#))
        #expect(exposition.contains(#"gseai_tokens_total{direction="output",model="qwen/qwen3-8b"} 30"#))
        #expect(exposition.contains(#"gseai_tokens_total{direction="input",model="other"} 10"#))
        #expect(!exposition.contains("invented"))
        #expect(exposition.contains(#"gseai_upstream_errors_total{kind="timeout"} 1"#))
        #expect(exposition.contains(#"gseai_upstream_time_to_first_byte_seconds_bucket{surface="openAI",le="0.5"} 1"#))
        #expect(exposition.contains(#"gseai_upstream_time_to_first_byte_seconds_bucket{surface="openAI",le="0.25"} 0"#))
    }

    @Test func eachRouteCountsEachStatusAndEachModelOnlyTheDirectionsItHad() {
        let metrics = GatewayMetrics(modelLabelLimit: 1)
        for status in [HTTPResponse.Status.ok, .ok, .tooManyRequests, .ok] {
            metrics.recordRequest(method: .post, route: "/v1/chat/completions", status: status, duration: .milliseconds(2))
        }
        metrics.recordRequest(method: .init("PURGE")!, route: "/v1/chat/completions", status: .ok, duration: .milliseconds(2))
        metrics.recordRequest(method: .get, route: "/v1/models", status: .ok, duration: .milliseconds(2))
        metrics.recordTokens(model: "gemma-3", input: 0, output: 7)
        metrics.recordTokens(model: "gemma-3", input: 0, output: 2)
        metrics.recordTokens(model: "qwen", input: 4, output: 0)
        metrics.recordTokens(model: "qwen", input: 0, output: 0)

        let exposition = String(buffer: metrics.exposition())
        #expect(exposition.contains(#"gseai_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 3"#))
        #expect(exposition.contains(#"gseai_http_requests_total{method="POST",route="/v1/chat/completions",status="429"} 1"#))
        #expect(exposition.contains(#"gseai_http_requests_total{method="other",route="/v1/chat/completions",status="200"} 1"#))
        #expect(exposition.contains(#"gseai_http_requests_total{method="GET",route="/v1/models",status="200"} 1"#))
        #expect(exposition.contains(#"gseai_http_request_duration_seconds_count{method="POST",route="/v1/chat/completions"} 4"#))
        #expect(!exposition.contains("PURGE"))
        #expect(exposition.contains(#"gseai_tokens_total{direction="output",model="gemma-3"} 9"#))
        #expect(!exposition.contains(#"gseai_tokens_total{direction="input",model="gemma-3"}"#))
        // Past the limit of one model name: `other`, and only the direction it had.
        #expect(exposition.contains(#"gseai_tokens_total{direction="input",model="other"} 4"#))
        #expect(!exposition.contains(#"gseai_tokens_total{direction="output",model="other"}"#))
        #expect(!exposition.contains("qwen"))
    }

    @Test func requestIDHeaderIsSet() async throws {
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()))
        try await app.test(.router) { client in
            let first = try await client.execute(uri: "/tiny", method: .get) { $0.headers[HTTPField.Name.xRequestID] }
            let second = try await client.execute(uri: "/nowhere", method: .get) { response in
                #expect(response.status == .notFound)
                return response.headers[HTTPField.Name.xRequestID]
            }
            #expect(first?.isEmpty == false)
            #expect(second?.isEmpty == false)
            #expect(first != second)
        }
    }

    /// The gateway's request ids: 32 lower-case hexadecimal digits, the first 16 the process's, the last 16 counted.
    @Test func requestIDsAreThirtyTwoHexDigitsCountedUp() throws {
        let ids = (0..<3).map { _ in RequestIDs.next() }
        for id in ids {
            #expect(id.utf8.count == 32 && id.allSatisfy { "0123456789abcdef".contains($0) }, "\(id)")
            #expect(id.prefix(16) == ids[0].prefix(16))
        }
        let counts = try ids.map { try #require(UInt64($0.suffix(16), radix: 16)) }
        // Other tests running alongside take ids too: later ids are larger (or have wrapped round), never equal.
        #expect(counts[1] != counts[0] && counts[2] != counts[1])
        #expect(counts[1] &- counts[0] < 1 << 20 && counts[2] &- counts[1] < 1 << 20)
    }

    /// The log handler keeps the request's id apart from its other metadata, and shows both as one.
    @Test func theLogHandlersRequestIDIsMetadataLikeAnyOther() {
        var handler = GatewayLogHandler(label: "gseai", descriptor: -1, metadataProvider: nil)
        handler.metadata = ["hb.request.id": "r1", "other": "x"]
        #expect(handler[metadataKey: "hb.request.id"] == "r1")
        #expect(handler[metadataKey: "other"] == "x")
        handler[metadataKey: "hb.request.id"] = "r2"
        handler[metadataKey: "more"] = "y"
        #expect(handler.metadata == ["hb.request.id": "r2", "other": "x", "more": "y"])
        handler[metadataKey: "hb.request.id"] = nil
        #expect(handler.metadata == ["other": "x", "more": "y"])
        #expect(handler[metadataKey: "hb.request.id"] == nil)
    }

    @Test func requestLogShowsTheRouteAndNoSecrets() async throws {
        let recorded = RecordingLogHandler.Lines()
        let logger = Logger(label: "test") { _ in RecordingLogHandler(recorded: recorded) }
        let app = Application(router: operationsRouter(metrics: GatewayMetrics()), logger: logger)
        try await app.test(.router) { client in
            try await client.execute(
                uri: "/auth/keys/key_secret123?token=abc",
                method: .get,
                headers: [.authorization: "Bearer sk-very-secret", .cookie: "session=s3cr3t"]
            ) { response in
                #expect(response.status == .ok)
            }
        }
        let lines = recorded.lines.withLock { $0 }.filter { $0.message == "request" }
        #expect(lines.count == 1)
        let metadata = try #require(lines.first?.metadata)
        #expect(metadata["http.route"] == "/auth/keys/{id}")
        #expect(metadata["http.method"] == "GET")
        #expect(metadata["http.status"]?.description == "200")
        // Numbers as numbers, for a handler that writes them as such (a JSON one, say).
        if case .stringConvertible(let status)? = metadata["http.status"] { #expect(status is Int) } else { Issue.record("\(metadata)") }
        #expect(metadata["duration_ms"] != nil)
        #expect(metadata["hb.request.id"] != nil)
        let everything = metadata.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        for secret in ["key_secret123", "token=abc", "sk-very-secret", "s3cr3t"] {
            #expect(!everything.contains(secret))
        }
    }

    /// For a context that knows the peer's address (the gateway's own does), the line holds it; for one that does
    /// not, the line has no such key (the two initializers of ``GatewayMiddleware``).
    @Test func requestLogHoldsThePeersAddressWhenTheContextKnowsIt() async throws {
        let recorded = RecordingLogHandler.Lines()
        let logger = Logger(label: "test") { _ in RecordingLogHandler(recorded: recorded) }
        let addressed = Router(context: AddressedContext.self)
        addressed.add(middleware: GatewayMiddleware(metrics: GatewayMetrics()))
        addressed.get("/tiny") { _, _ in "ok" }
        try await Application(router: addressed, logger: logger).test(.router) { client in
            try await client.execute(uri: "/tiny", method: .get) { #expect($0.status == .ok) }
        }
        try await Application(router: operationsRouter(metrics: GatewayMetrics()), logger: logger).test(.router) { client in
            try await client.execute(uri: "/tiny", method: .get) { #expect($0.status == .ok) }
        }
        let lines = recorded.lines.withLock { $0 }.filter { $0.message == "request" }
        #expect(lines.count == 2)
        #expect(lines.first?.metadata["client.address"] == "192.0.2.7")
        #expect(lines.last.map { $0.metadata["client.address"] == nil } == true)
    }

    /// What a gateway log handler with `metadata`, at `info`, writes while `body` logs through it (a pipe read whole).
    static func logged(metadata: Logger.Metadata, _ body: (Logger) async throws -> Void) async throws -> String {
        var pipe: [Int32] = [0, 0]
        #expect(Glibc.pipe(&pipe) == 0)
        defer { close(pipe[0]) }
        var handler = GatewayLogHandler(label: "gseai", descriptor: pipe[1], metadataProvider: nil)
        handler.metadata = metadata
        var logger = Logger(label: "gseai") { _ in handler }
        logger.logLevel = .info
        try await body(logger)
        close(pipe[1])
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while case let count = read(pipe[0], &buffer, buffer.count), count > 0 { bytes += buffer[..<count] }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func theLogLineIsStreamLogHandlersWithSortedKeysAndAWholeWrite() async throws {
        let line = try await Self.logged(metadata: ["hb.request.id": "r1", "shadowed": "handler"]) { logger in
            logger.debug("not written")
            logger.info("request", metadata: ["http.status": .stringConvertible(200), "shadowed": "line", "a": ["x", "y"]])
        }
        let time = try #require(line.split(separator: " ").first)
        #expect(time.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000/) != nil, "\(line)")
        #expect(line.dropFirst(time.count) == #" info gseai: a=["x", "y"] hb.request.id=r1 http.status=200 shadowed=line [GSEAIGatewayTests] request"# + "\n")
        #expect(GatewayLogHandler.SecondClock.format(951_868_799) == "2000-02-29T23:59:59+0000")
        #expect(GatewayLogHandler.SecondClock.format(0) == "1970-01-01T00:00:00+0000")
    }

    /// A long line (30 KB: more room than a short line's on the stack, which may then be the heap's) comes whole, as a
    /// short one does, each in its own write.
    @Test func aLongLogLineIsWrittenWholeAsAShortOne() async throws {
        let message = String(repeating: "é0123456789", count: 2_500)
        let text = try await Self.logged(metadata: ["hb.request.id": "r1"]) { logger in
            logger.info("\(message)", metadata: ["k": "v"])
            logger.info("short")
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 3 && lines[2].isEmpty)
        #expect(lines[0].hasSuffix(" info gseai: hb.request.id=r1 k=v [GSEAIGatewayTests] \(message)"))
        #expect(lines[1].hasSuffix(" info gseai: hb.request.id=r1 [GSEAIGatewayTests] short"))
    }

    /// The request's line is written from pairs when the handler is the gateway's: the same text as swift-log's API
    /// makes of the same metadata (the module as its source), at the request log's level only.
    @Test func theRequestLineFromPairsIsTheLineOfTheLoggersAPI() async throws {
        let router = Router(context: AddressedContext.self)
        router.add(middleware: GatewayMiddleware(metrics: GatewayMetrics()))
        router.get("/tiny") { _, _ in "ok" }
        let quiet = Router(context: AddressedContext.self)
        quiet.add(middleware: GatewayMiddleware(metrics: GatewayMetrics(), logLevel: .debug))
        quiet.get("/tiny") { _, _ in "ok" }
        let text = try await Self.logged(metadata: ["hb.request.id": "r1", "http.route": "shadowed by the line's"]) { logger in
            try await Application(router: router, logger: logger).test(.router) { client in
                try await client.execute(uri: "/tiny", method: .get) { #expect($0.status == .ok) }
            }
            // At `debug`, under the handler's `info`: no line.
            try await Application(router: quiet, logger: logger).test(.router) { client in
                try await client.execute(uri: "/tiny", method: .get) { #expect($0.status == .ok) }
            }
            logger.info("request", metadata: ["client.address": "192.0.2.7", "http.status": .stringConvertible(200), "http.method": "GET",
                                              "http.route": "/tiny", "duration_ms": "0.00"], source: "GSEAIGateway")
        }
        // Each without its time; the measured duration and the request's id (Hummingbird's, in the request's
        // logger) made the API call's.
        let lines = text.split(separator: "\n").map {
            $0.drop { $0 != " " }.replacing(/duration_ms=\d+\.\d\d/, with: "duration_ms=0.00")
                .replacing(/hb\.request\.id=[0-9a-f]+/, with: "hb.request.id=r1")
        }
        #expect(lines.count == 2, "\(lines)")
        #expect(lines.first == #" info gseai: client.address=192.0.2.7 duration_ms=0.00 hb.request.id=r1 http.method=GET http.route=/tiny http.status=200 [GSEAIGateway] request"#)
        #expect(lines.first == lines.last)
        // A handler with no metadata of its own (as `gseai serve` logs): the request's pairs taken as they are, with the
        // request's id, in the same order.
        let bare = try await Self.logged(metadata: [:]) { logger in
            try await Application(router: router, logger: logger).test(.router) { client in
                try await client.execute(uri: "/tiny", method: .get) { #expect($0.status == .ok) }
            }
        }
        let bareLine = bare.drop { $0 != " " }.replacing(/duration_ms=\d+\.\d\d/, with: "duration_ms=0.00")
            .replacing(#/hb\.request\.id=[0-9a-f]{32} /#, with: "hb.request.id=r1 ")
        #expect(bareLine == (lines.first ?? "") + "\n", "\(bare)")
        // A pair named as the request's id is the line's own: it stands for the handler's.
        let own = try await Self.logged(metadata: ["hb.request.id": "r1"]) { logger in
            (logger.handler as? GatewayLogHandler)?.log(level: .info, message: "request", pairs: [("hb.request.id", "mine"), ("a", "é ü, more than fifteen bytes")],
                                                        source: "GSEAIGateway")
        }
        #expect(own.drop { $0 != " " } == " info gseai: a=é ü, more than fifteen bytes hb.request.id=mine [GSEAIGateway] request\n", "\(own)")
    }

    @Test(arguments: [
        (Duration.zero, "0.00"), (.microseconds(4), "0.00"), (.microseconds(5), "0.01"), (.milliseconds(12), "12.00"),
        (.microseconds(1_234_567), "1234.57"), (.seconds(-3), "0.00"), (.seconds(Int64.max), "92233720368547758.07"),
    ])
    func durationsAreLoggedInMillisecondsToTwoDecimals(_ duration: Duration, _ expected: String) {
        #expect(Milliseconds(duration).description == expected)
    }

    @Test func evenTraceLogsShowNoStoredSecrets() async throws {
        let recorded = RecordingLogHandler.Lines()
        let logger = Logger(label: "test") { _ in
            var handler = RecordingLogHandler(recorded: recorded)
            handler.logLevel = .trace
            return handler
        }
        let storage = try await TestDatabase.open(logger: logger)
        let accounts = AccountService(storage: storage, hasher: PasswordHasher(cost: 4))
        let (user, _) = try await accounts.createUser(username: "alice", password: "correct horse battery", role: .student)
        let (key, _) = try await accounts.createKey(for: user, label: "laptop")
        #expect(try await accounts.resolveKey(key)?.1.id == user.id)
        let stored = try #require(try await storage.users.find(id: user.id)?.passwordHash)
        try await storage.close()
        let everything = recorded.lines.withLock { $0 }
            .map { "\($0.message) \($0.metadata.map { "\($0.key)=\($0.value)" }.joined(separator: " "))" }
            .joined(separator: "\n")
        #expect(!everything.isEmpty)
        for secret in [stored, Secrets.sha256(key), key, "correct horse battery"] {
            #expect(!everything.contains(secret))
        }
    }

    @Test func healthzAnswersOK() async throws {
        let router = Router(context: BasicRequestContext.self)
        HealthController(checks: [], metrics: GatewayMetrics()).register(on: router)
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
                let body = try JSONValue(parsing: Data(buffer: response.body))
                #expect(body == ["status": "ok"])
            }
        }
    }

    @Test func readyzIsReadyWhenEveryCheckPasses() async throws {
        let router = Router(context: BasicRequestContext.self)
        HealthController(
            checks: [("database", {}), ("upstream", { try await Task.sleep(for: .milliseconds(10)) })],
            metrics: GatewayMetrics()
        ).register(on: router)
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)
                let body = try JSONValue(parsing: Data(buffer: response.body))
                #expect(body == ["status": "ready", "checks": ["database": "ok", "upstream": "ok"]])
            }
        }
    }

    /// The hanging check never ends by itself: an answer that waited for it would run into the time limit,
    /// whatever else the machine does meanwhile (a bound in seconds on the wall clock failed on a busy CI).
    @Test(.timeLimit(.minutes(1))) func readyzIsUnreadyWhenACheckFailsOrHangs() async throws {
        struct SecretBearingError: Error, CustomStringConvertible {
            var description: String { "connect to postgres://admin:hunter2@db failed" }
        }
        let router = Router(context: BasicRequestContext.self)
        HealthController(
            checks: [
                ("database", { throw SecretBearingError() }),
                ("upstream", { throw GSEAIError.connection("refused") }),
                ("cache", {}),
                ("slow", { try await Task.sleep(for: .seconds(24 * 3600)) }),
            ],
            metrics: GatewayMetrics(),
            timeout: .milliseconds(200)
        ).register(on: router)
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try JSONValue(parsing: Data(buffer: response.body))
                #expect(body["status"] == "unready")
                #expect(body["checks"]?["database"] == "failed (SecretBearingError)")
                #expect(body["checks"]?["upstream"] == "the model server cannot be reached")
                #expect(body["checks"]?["cache"] == "ok")
                #expect(body["checks"]?["slow"]?.stringValue?.hasPrefix("timed out") == true)
                #expect(!String(buffer: response.body).contains("hunter2"))
            }
        }
    }

    @Test func metricsEndpointServesTheExposition() async throws {
        let metrics = GatewayMetrics()
        metrics.recordUpstreamError(kind: "connection")
        let router = Router(context: BasicRequestContext.self)
        HealthController(checks: [], metrics: metrics).register(on: router)
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; version=0.0.4")
                #expect(String(buffer: response.body).contains(#"gseai_upstream_errors_total{kind="connection"} 1"#))
            }
        }
    }
}

@Suite("Event loop executors")
struct EventLoopExecutorTests {
    @Test func aTaskPreferringAnEventLoopRunsOnItAndSoDoItsChildren() async {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let executor = EventLoopTaskExecutor.of(loop)
        #expect(EventLoopTaskExecutor.of(loop) === executor)  // one per loop
        let (own, child, unstructured): (Bool, Bool, Bool) = await withTaskExecutorPreference(executor) {
            await Task.yield()
            async let child = { loop.inEventLoop }()
            let unstructured = await Task(executorPreference: executor) { loop.inEventLoop }.value
            return (loop.inEventLoop, await child, unstructured)
        }
        #expect(own && child && unstructured)
        #expect(!loop.inEventLoop)  // and back on the global pool after
    }
}

@Suite("Request bodies")
struct RequestBodyInspectionTests {
    /// The same inspection for a small body (parsed where it is) and a large one (parsed on the global
    /// pool), from a task on an event loop as a connection's handler runs; and the same errors.
    @Test func smallAndLargeBodiesAreInspectedAlike() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let padding = String(repeating: "x", count: ProxyController.largeBody)
        func body(_ text: String) -> ByteBuffer {
            ByteBuffer(string: #"{"model":"m","stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"\#(text)"},"#
                + #"{"type":"image_url","image_url":{"url":"data:image/png;base64,\#(tinyPNGBase64)"}}]}]}"#)
        }
        try await withTaskExecutorPreference(EventLoopTaskExecutor.of(loop)) {
            for text in ["short", padding] {
                let bytes = body(text)
                #expect((bytes.readableBytes > ProxyController.largeBody) == (text == padding))
                let (json, checked) = try await ProxyController.inspect(bytes, images: ImageInspector(ImageLimits(maxBytes: 1 << 20, maxPixels: 40_000_000)))
                #expect(json["model"] == "m")
                #expect(checked.model == "m" && checked.stream && checked.imageCount == 1)
                #expect(loop.inEventLoop)  // back on the loop after
            }
            var broken = body(padding)
            broken.moveWriterIndex(to: broken.writerIndex - 1)
            await #expect(throws: GatewayError.self) { try await ProxyController.inspect(broken, images: ImageInspector(ImageLimits(maxBytes: 1 << 20, maxPixels: 40_000_000))) }
        }
    }
}

@Suite("Answering in a task of its own")
struct SeparateTaskResponderTests {
    /// The task a piece of code runs in, as a number to compare.
    static func currentTask() -> Int { withUnsafeCurrentTask { $0?.hashValue ?? 0 } }

    /// Which task handled a request and which wrote its body, through `responder`.
    static func tasks<R: HTTPResponder>(through responder: (Router<BasicRequestContext>) -> R) async throws -> (handler: Int, body: Int)
    where R.Context == BasicRequestContext {
        let seen = Mutex<[String: Int]>([:])
        let router = Router(context: BasicRequestContext.self)
        router.get("/") { _, _ in
            seen.withLock { $0["handler"] = currentTask() }
            return Response(status: .ok, body: ResponseBody { writer in
                seen.withLock { $0["body"] = currentTask() }
                try await writer.write(ByteBuffer(string: "written"))
                try await writer.finish(nil)
            })
        }
        // The router test framework answers and then writes the body in one task, as a connection's task does.
        try await Application(responder: responder(router)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { response in
                #expect(String(buffer: response.body) == "written")
            }
        }
        return seen.withLock { (handler: $0["handler"] ?? -1, body: $0["body"] ?? -2) }
    }

    /// The handling (middleware, router, handler) runs in a child task, which has ended when the body is
    /// written by the caller's task: what the handling needed is not kept while a stream is open.
    @Test func theHandlingRunsInAChildTaskNotInTheOneThatWritesTheBody() async throws {
        let separate = try await Self.tasks { SeparateTaskResponder($0.buildResponder()) }
        #expect(separate.handler != separate.body)
        // Without it, both in the one task (the comparison shows that the test can tell).
        let direct = try await Self.tasks { $0.buildResponder() }
        #expect(direct.handler == direct.body)
    }
}
