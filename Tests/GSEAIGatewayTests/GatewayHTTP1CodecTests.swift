@testable import GSEAIGateway
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization
import Testing
import Foundation
import GSEAITestSupport
import GSEAI

/// The gateway's HTTP/1 codec against the pair it replaces (SwiftNIO's server pipeline with its response
/// encoder, and swift-nio-extras' `HTTP1ToHTTPServerCodec`): the same requests read, the same bytes written.
@Suite("The gateway's HTTP/1 codec")
struct GatewayHTTP1CodecTests {
    /// SwiftNIO's pipeline, as the gateway's server set it up before.
    static func theirs() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        return channel
    }

    /// The gateway's, as its server sets it up, but for the fields it writes into every final answer (the security
    /// headers, which SwiftNIO's pair knows nothing of: `theCodecsOwnFieldsAreInEveryFinalAnswerOnce` checks them).
    static func ours(fixedFields: GatewayHTTP1Codec.FixedFields = .empty) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try GatewayHTTP1Codec.addHandlers(to: channel.pipeline.syncOperations, limits: NIOHTTPDecoderLimitConfiguration(),
                                          fixedFields: fixedFields)
        return channel
    }

    /// Fields given for the next answer (the forwarding lane's `Date` and `Server`) go into that final answer only, in
    /// place of its own under their names, before the codec's own; not into the next answer. Fields given before a 1xx
    /// are taken by it and written nowhere (never into another answer).
    @Test func fieldsForTheNextAnswerGoIntoThatAnswerOnly() throws {
        let channel = try Self.ours(fixedFields: GatewayHTTP1Codec.FixedFields([HTTPField(name: .xContentTypeOptions, value: "nosniff")]))
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
        let codec = try channel.pipeline.syncOperations.handler(type: GatewayHTTP1Codec.self)
        codec.nextAnswerFields = GatewayHTTP1Codec.FixedFields([HTTPField(name: .server, value: "stale")])
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .continue)), promise: nil)
        #expect(codec.nextAnswerFields == nil)
        codec.nextAnswerFields = GatewayHTTP1Codec.FixedFields([HTTPField(name: .server, value: "lane"), HTTPField(name: .date, value: "today")])
        var fields: HTTPFields = [.contentLength: "0"]
        fields.append(HTTPField(name: HTTPField.Name("SERVER")!, value: "handler"))
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: fields)), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: fields)), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        var written = ""
        while let buffer = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let bytes) = buffer { written += String(buffer: bytes) }
        }
        #expect(written == "HTTP/1.1 100 Continue\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: lane\r\nDate: today\r\nX-Content-Type-Options: nosniff\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSERVER: handler\r\nX-Content-Type-Options: nosniff\r\n\r\n")
        _ = try? channel.finish()
    }

    /// The security headers, written by the codec into every final answer after its own fields, in place of any the
    /// handler set under their names (in any case), and into no 1xx: otherwise the bytes SwiftNIO writes. A head with
    /// long values (more than the room the codec tries first) too.
    @Test func theCodecsOwnFieldsAreInEveryFinalAnswerOnce() throws {
        let security = SecurityHeaders.fields.map { "\($0.name.rawName): \($0.value)\r\n" }.joined()
        let long = String(repeating: "l", count: 2_000)
        let requests = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nHEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"
            + "GET /d HTTP/1.1\r\nHost: x\r\n\r\nGET /e HTTP/1.1\r\nHost: x\r\n\r\n"
        var handlers = HTTPFields()
        handlers[.contentType] = "text/plain"
        handlers.append(HTTPField(name: HTTPField.Name("x-frame-options")!, value: "SAMEORIGIN"))
        handlers[.contentSecurityPolicy] = "default-src *"
        handlers[.contentLength] = "2"
        handlers.append(HTTPField(name: HTTPField.Name("Referrer-POLICY")!, value: "origin"))
        var plain = handlers
        plain.removeAll { ["x-frame-options", "content-security-policy", "referrer-policy"].contains($0.name.canonicalName) }
        var longFields = plain
        longFields[.cacheControl] = long
        let answers: [[HTTPResponsePart]] = [
            [.head(HTTPResponse(status: .continue)), .head(HTTPResponse(status: .ok, headerFields: handlers)), .body(ByteBuffer(string: "ok")), .end(nil)],
            [.head(HTTPResponse(status: .ok, headerFields: longFields)), .body(ByteBuffer(string: "ok")), .end(nil)],
            [.head(HTTPResponse(status: .notFound, headerFields: plain)), .end(nil)],
            // Answers without a body: their framing fields dropped as before, the codec's own written.
            [.head(HTTPResponse(status: .noContent, headerFields: handlers)), .end(nil)],
            [.head(HTTPResponse(status: .notModified, headerFields: plain)), .end(nil)],
        ]
        let ours = try Self.run(Self.ours(fixedFields: .security), requests: requests, answers: answers)
        let without = try Self.run(Self.ours(), requests: requests, answers: answers.map { parts in
            parts.map { part in
                guard case .head(var head) = part else { return part }
                if head.headerFields == handlers { head.headerFields = plain }
                return .head(head)
            }
        })
        let text = String(decoding: ours.written, as: UTF8.self)
        #expect(text == "HTTP/1.1 100 Continue\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\(security)\r\nok"
            + "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nCache-Control: \(long)\r\n\(security)\r\nok"
            + "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\(security)\r\n"
            + "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\(security)\r\n"
            + "HTTP/1.1 304 Not Modified\r\nContent-Type: text/plain\r\n\(security)\r\n", "\(text.prefix(600))")
        // The rest is as without them: the same requests read, the same bytes less the fields.
        #expect(ours.read == without.read)
        #expect(text.replacingOccurrences(of: security, with: "") == String(decoding: without.written, as: UTF8.self))
    }

    /// An exchange on a channel: requests in, the answers' parts out; what was read (and any error reading), what
    /// was written, and the writes that failed, with why, in the order they were told.
    struct Outcome: Equatable {
        var read: [String] = []
        var written: [UInt8] = []
        var failedWrites: [String] = []
    }

    static func run(_ channel: EmbeddedChannel, requests: String, answers: [[HTTPResponsePart]], headPromises: Bool = true) throws -> Outcome {
        try run(channel, steps: [(requests, answers)], headPromises: headPromises)
    }

    /// Each step's requests arrive, then its answers are written. `headPromises`: the heads are written with a promise
    /// (else without one, as the lane writes them, which the codec holds until what follows).
    static func run(_ channel: EmbeddedChannel, steps: [(requests: String, answers: [[HTTPResponsePart]])], headPromises: Bool = true) throws -> Outcome {
        var outcome = Outcome()
        let failed = Mutex<[String]>([])
        var index = 0
        for step in steps {
            do {
                try channel.writeInbound(ByteBuffer(string: step.requests))
            } catch {
                outcome.read.append("error \(error)")
            }
            while let part = try channel.readInbound(as: HTTPRequestPart.self) {
                switch part {
                case .head(let head):
                    outcome.read.append("head \(head.method) \(head.scheme ?? "") \(head.authority ?? "") \(head.path ?? "") \(head.headerFields)")
                case .body(let body): outcome.read.append("body \(String(buffer: body))")
                case .end(let trailers): outcome.read.append("end \(trailers.map { "\($0)" } ?? "-")")
                }
            }
            for answer in step.answers {
                for part in answer {
                    if !headPromises, case .head = part {
                        channel.write(part, promise: nil)
                        index += 1
                        continue
                    }
                    let promise = channel.eventLoop.makePromise(of: Void.self)
                    let number = index
                    promise.futureResult.whenFailure { error in failed.withLock { $0.append("\(number): \(error)") } }
                    channel.write(part, promise: promise)
                    index += 1
                }
            }
            channel.flush()
            channel.embeddedEventLoop.run()
        }
        outcome.failedWrites = failed.withLock { $0 }
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { continue }
            outcome.written.append(contentsOf: buffer.readableBytesView)
        }
        return outcome
    }

    @Test func aWholeAnswerAndAChunkedOneAreTheBytesSwiftNIOWrites() throws {
        var whole = HTTPResponse(status: .ok)
        whole.headerFields = [.contentType: "application/json", .contentLength: "2", .transferEncoding: "gzip"]
        let streamed = HTTPResponse(status: .ok, headerFields: [.contentType: "text/event-stream"])
        let answers: [[HTTPResponsePart]] = [
            [.head(whole), .body(ByteBuffer(string: "{}")), .end(nil)],
            [.head(streamed), .body(ByteBuffer(string: "data: a\n\n")), .body(ByteBuffer()), .body(ByteBuffer(string: "data: b\n\n")), .end(nil)],
        ]
        let requests = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        let ours = try Self.run(Self.ours(), requests: requests, answers: answers)
        #expect(ours == (try Self.run(Self.theirs(), requests: requests, answers: answers)))
        #expect(String(decoding: ours.written, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            + "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n")
        #expect(ours.read.count == 5)
    }

    /// A `HEAD`'s answer keeps its framing and writes no body (its body's write fails); a `CONNECT`'s has no
    /// framing; a 204 and a 304 lose theirs; a 100 before an answer does not take the request's turn.
    @Test func answersWithoutABodyAreWrittenAsSwiftNIOWritesThem() throws {
        // The CONNECT last: SwiftNIO's decoder reads nothing after one (the connection becomes a tunnel).
        let requests = "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
            + "HEAD /d HTTP/1.1\r\nHost: x\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        let answers: [[HTTPResponsePart]] = [
            [.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "5"])), .body(ByteBuffer(string: "hello")), .end(nil)],
            [.head(HTTPResponse(status: .noContent, headerFields: [.contentLength: "0", .server: "x"])), .end(nil)],
            [.head(HTTPResponse(status: .continue)), .head(HTTPResponse(status: .notModified, headerFields: [.transferEncoding: "chunked"])), .end(nil)],
            [.head(HTTPResponse(status: .ok)), .body(ByteBuffer(string: "x")), .end(nil)],
            [.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "5", .transferEncoding: "chunked"])), .end(nil)],
        ]
        let ours = try Self.run(Self.ours(), requests: requests, answers: answers)
        let theirs = try Self.run(Self.theirs(), requests: requests, answers: answers)
        #expect(ours == theirs)
        #expect(ours.read.count == 10)
        #expect(ours.failedWrites.map { $0.prefix(3) } == ["1: ", "9: "])
        #expect(String(decoding: ours.written, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            + "HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n" + "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"
            + "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + "HTTP/1.1 200 OK\r\n\r\n")
    }

    /// What the pair did together or on its own, kept: a request that cannot be read (before it, one that was read
    /// and answered, and the 400 written after it), a 1xx before a `HEAD`'s answer, a request asking for an upgrade
    /// (no upgrader: SwiftNIO's decoder reads nothing after it), requests that come after answers were written,
    /// targets in absolute form and odd ones in origin form (the codec takes those as their own path).
    @Test func malformedRequestsUpgradesAndLaterRequestsAreAsWithSwiftNIO() throws {
        let ok: [HTTPResponsePart] = [.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "2"])), .body(ByteBuffer(string: "ok")), .end(nil)]
        let badRequest: [HTTPResponsePart] = [.head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close"])), .end(nil)]
        let scenarios: [[(requests: String, answers: [[HTTPResponsePart]])]] = [
            [("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost x\r\n\r\n", [ok, badRequest])],
            [("NOT HTTP AT ALL\r\n\r\n", [badRequest])],
            [("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", [[.head(HTTPResponse(status: .continue))] + ok])],
            [("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", [ok, ok])],
            [("HEAD /1 HTTP/1.1\r\nHost: x\r\n\r\n", [ok]), ("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n", [ok]),
             ("HEAD /3 HTTP/1.1\r\nHost: x\r\n\r\nGET /4 HTTP/1.1\r\nHost: y\r\n\r\n", [ok, ok])],
            [("GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: z\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\nGET http://e.com HTTP/1.1\r\nHost: z\r\nHost: w\r\n\r\n", [ok, ok, ok])],
            [("GET //e.com/x?y HTTP/1.1\r\nhost: h\r\nHOST: i\r\n\r\nGET /%7e/%zz?a=%20#f HTTP/1.1\r\n\r\nGET /a|b{c}^`\\ HTTP/1.1\r\nHost: \r\n\r\n", [ok, ok, ok])],
            // Fields before and after the first `Host` in any case, a second one kept, names in odd cases, and trailers.
            [("GET /h HTTP/1.1\r\nX-A: 1\r\nhOsT: h\r\nHost: j\r\nx-b: 2\r\nHosts: k\r\nHos: l\r\nCookie: a=1; b=2\r\n\r\n", [ok]),
             ("POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\nhost: t\r\nHOST: u\r\n\r\n", [ok])],
            // Names the codec knows (``KnownFieldNames``), in their spellings and in others, each kept as spelled.
            [("POST /k HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\ncontent-length: 0\r\nAUTHORIZATION: b\r\naccept: c\r\n"
              + "User-Agent: d\r\nContent-type: e\r\nx-api-key: f\r\n\r\n", [ok])],
        ]
        for (number, steps) in scenarios.enumerated() {
            let ours = try Self.run(Self.ours(), steps: steps)
            let theirs = try Self.run(Self.theirs(), steps: steps)
            #expect(ours == theirs, "scenario \(number): \(ours) against \(theirs)")
        }
        // What they show: the unreadable request is an error (told as the bytes are written), the first one's head
        // and end read; nothing is read
        // after the upgrade's request; and the bytes of two of them, spelled out.
        let malformed = try Self.run(Self.ours(), steps: scenarios[0])
        #expect(malformed.read.count == 3 && malformed.read[0].hasPrefix("error") && malformed.read[1].hasPrefix("head GET http x /a"),
                "\(malformed.read)")
        #expect(try Self.run(Self.ours(), steps: scenarios[3]).read.count == 2)
        let later = try Self.run(Self.ours(), steps: scenarios[4])
        #expect(String(decoding: later.written, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        #expect(later.failedWrites.count == 2)
        let absolute = try Self.run(Self.ours(), steps: scenarios[5])
        #expect(absolute.read.first?.hasPrefix("head GET http z /p?q=1 ") == true, "\(absolute.read)")
        let odd = try Self.run(Self.ours(), steps: scenarios[6]).read.filter { $0.hasPrefix("head") }
        #expect(odd == ["head GET http h //e.com/x?y [HOST: i]", "head GET http  /%7e/%zz?a=%20#f []", "head GET http  /a|b{c}^`\\ []"])
        let fields = try Self.run(Self.ours(), steps: scenarios[7]).read.filter { !$0.hasPrefix("body") }
        #expect(fields == ["head GET http h /h [X-A: 1, Host: j, x-b: 2, Hosts: k, Hos: l, Cookie: a=1; b=2]", "end -",
                           "head POST http h /t [Transfer-Encoding: chunked]", "end [X-T: 1, HOST: u]"], "\(fields)")
    }

    /// Bytes written into a buffer of their own: in one pass when they fit the room tried, else written again into room
    /// for all of them; the same bytes either way, and what fits leaves the rest of the room tried for what follows.
    @Test func bytesWrittenIntoABufferAreWholeWhetherOrNotTheyFitTheRoomTried() {
        for usual in [0, 1, 8, 512] {
            for count in [0, 1, 7, 8, 9, 600] {
                let text = String((0..<count).map { Character(UnicodeScalar(UInt8(ascii: "a") + UInt8($0 % 26))) })
                var passes = 0
                let buffer = ByteBuffer.written(trying: usual) { writer in
                    passes += 1
                    writer.write(text)
                }
                #expect(String(buffer: buffer) == text, "usual \(usual), count \(count)")
                #expect(passes == (count > usual ? 2 : 1))
                if count <= usual { #expect(buffer.capacity >= usual) }
            }
        }
        let text = "HTTP/1.1 200 OK\r\n" + String(repeating: "v", count: 300)
        #expect(String(buffer: ByteBuffer.written(trying: 512) { $0.write(text) }) == text)
        #expect(String(buffer: ByteBuffer.written(trying: 8) { $0.write(text) }) == text)
        #expect(String(buffer: ByteBuffer.written(trying: 0) { $0.write(text); $0.write(UInt8(ascii: "!")) }) == text + "!")
    }

    /// A field name spelled as a known one is that name (the same raw and canonical names as made from the spelling);
    /// another spelling, or another name, is made from its text; a text that is not a token is no name.
    @Test func aKnownFieldNameIsTheNameItsSpellingMakes() {
        for spelling in KnownFieldNames.spellings {
            let made = HTTPField.Name(spelling)
            #expect(KnownFieldNames.known(spelling)?.rawName == spelling, "\(spelling)")
            #expect(KnownFieldNames.name(spelling)?.rawName == made?.rawName && KnownFieldNames.name(spelling)?.canonicalName == made?.canonicalName)
        }
        for other in ["CONTENT-TYPE", "Content-type", "X-Unknown", "content-typf", "Accepts"] {
            #expect(KnownFieldNames.known(other) == nil, "\(other)")
            #expect(KnownFieldNames.name(other)?.rawName == other && KnownFieldNames.name(other)?.canonicalName == other.lowercased())
        }
        for notAName in ["Bad Name", "", "Content-Type:", "Acc\u{E9}pt"] { #expect(KnownFieldNames.name(notAName) == nil) }
    }

    /// A chunk's framing: its size in hexadecimal, the piece, a line end; one buffer (the piece copied) up to the
    /// copying limit, three (the piece itself in the middle) above it; the last one marked.
    @Test func aPieceIsFramedInOneBufferUpToTheLimitAndInThreeAbove() {
        for size in [1, 9, 10, 15, 16, 255, 256, 4095, 4096, ChunkedBody.copiedUpTo, ChunkedBody.copiedUpTo + 1, 70_000] {
            let piece = ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            var buffers: [ByteBuffer] = []
            var lasts: [Bool] = []
            ChunkedBody.frame(piece) { buffer, last in
                buffers.append(buffer)
                lasts.append(last)
            }
            let expected = Array((String(size, radix: 16) + "\r\n").utf8) + Array(piece.readableBytesView) + Array("\r\n".utf8)
            #expect(buffers.flatMap { Array($0.readableBytesView) } == expected, "size \(size)")
            let count = size <= ChunkedBody.copiedUpTo ? 1 : 3
            #expect(lasts == Array(repeating: false, count: count - 1) + [true], "size \(size)")
            if count == 3 { #expect(buffers[1] == piece) }
        }
    }

    /// A final answer's head written without a promise (as the lane writes it) is held until what follows: a whole
    /// answer's small body goes in the same buffer (one write), a large one in a buffer of its own after the head's,
    /// not copied; a chunked body's first piece goes with the head; a flush, an end or a bodiless answer sends the
    /// head alone. A head written with a promise, and a 1xx, are written at once.
    @Test func aHeadIsWrittenWithWhatFollowsItInOneBuffer() throws {
        let channel = try Self.ours()
        try channel.writeInbound(ByteBuffer(string: String(repeating: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", count: 5) + "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"))
        while try channel.readInbound(as: HTTPRequestPart.self) != nil {}
        func writes() throws -> [String] {
            var buffers: [String] = []
            while case .byteBuffer(let buffer)? = try channel.readOutbound(as: IOData.self) { buffers.append(String(buffer: buffer)) }
            return buffers
        }
        let small = ByteBuffer(string: "{}")
        let large = ByteBuffer(repeating: UInt8(ascii: "x"), count: ChunkedBody.copiedUpTo + 1)
        let whole = { (length: Int) in HTTPResponse(status: .ok, headerFields: [.contentLength: "\(length)"]) }
        channel.write(HTTPResponsePart.head(whole(2)), promise: nil)
        #expect(try writes() == [])
        channel.write(HTTPResponsePart.body(small), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])

        channel.write(HTTPResponsePart.head(whole(large.readableBytes)), promise: nil)
        channel.write(HTTPResponsePart.body(large), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["HTTP/1.1 200 OK\r\nContent-Length: \(large.readableBytes)\r\n\r\n", String(buffer: large)])

        // A stream's head is flushed before its first piece comes; a later one's goes with its first piece.
        channel.writeAndFlush(HTTPResponsePart.head(HTTPResponse(status: .ok)), promise: nil)
        #expect(try writes() == ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"])
        channel.writeAndFlush(HTTPResponsePart.body(small), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["2\r\n{}\r\n", "0\r\n\r\n"])
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok)), promise: nil)
        channel.write(HTTPResponsePart.body(small), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n", "0\r\n\r\n"])

        // A 1xx, and a final head with a promise: each written at once, in a buffer of its own.
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .continue)), promise: nil)
        channel.write(HTTPResponsePart.head(whole(2)), promise: written)
        channel.write(HTTPResponsePart.body(small), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "{}"])
        try written.futureResult.wait()

        // A `HEAD`'s answer: no body, the head sent at its end.
        channel.write(HTTPResponsePart.head(whole(5)), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"])
        _ = try? channel.finish()
    }

    /// A held head before a chunked piece larger than the copying limit goes in front of the piece's size line (the piece
    /// itself not copied); before an empty piece it goes alone; a codec taken out of the pipeline sends the head it holds.
    @Test func aHeldHeadGoesBeforeALargeChunkAnEmptyOneAndOnRemoval() throws {
        let channel = try Self.ours()
        try channel.writeInbound(ByteBuffer(string: String(repeating: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", count: 3)))
        while try channel.readInbound(as: HTTPRequestPart.self) != nil {}
        func writes() throws -> [String] {
            var buffers: [String] = []
            while case .byteBuffer(let buffer)? = try channel.readOutbound(as: IOData.self) { buffers.append(String(buffer: buffer)) }
            return buffers
        }
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        let large = ByteBuffer(repeating: UInt8(ascii: "y"), count: ChunkedBody.copiedUpTo + 1)
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok)), promise: nil)
        channel.write(HTTPResponsePart.body(large), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == [head + String(ChunkedBody.copiedUpTo + 1, radix: 16) + "\r\n", String(buffer: large), "\r\n", "0\r\n\r\n"])

        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok)), promise: nil)
        channel.write(HTTPResponsePart.body(ByteBuffer()), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try writes() == [head, "0\r\n\r\n"])

        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "0"])), promise: nil)
        let codec = try channel.pipeline.syncOperations.handler(type: GatewayHTTP1Codec.self)
        try channel.pipeline.syncOperations.removeHandler(codec).wait()
        channel.flush()
        #expect(try writes() == ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        _ = try? channel.finish()
    }

    /// 500 answers made at random (a fixed seed): statuses known and not, any framing fields in any case, values short
    /// and long (heads that fit the room the codec tries first, and heads that do not), bodies
    /// in pieces (some empty), trailers, to requests of every method: the same bytes and the same failed writes
    /// as SwiftNIO's pair.
    @Test func randomAnswersAreTheBytesSwiftNIOWrites() throws {
        var random = SeededGenerator(seed: 15)
        let methods = ["GET", "POST", "HEAD", "DELETE", "CONNECT", "OPTIONS"]
        let codes = [100, 101, 103, 200, 201, 204, 206, 299, 301, 304, 400, 404, 418, 429, 499, 500, 502, 599, 600, 999]
        let names = ["Content-Length", "content-length", "Transfer-Encoding", "transfer-encoding", "Content-Type", "X-Request-Id",
                     "Set-Cookie", "Cache-Control", "Connection"]
        for round in 0..<500 {
            var requests = ""
            var answers: [[HTTPResponsePart]] = []
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let method = methods.randomElement(using: &random)!
                requests += method == "CONNECT" ? "CONNECT h:1 HTTP/1.1\r\nHost: x\r\n\r\n" : "\(method) /p?q=\(round) HTTP/1.1\r\nHost: x\r\n\r\n"
                var fields = HTTPFields()
                for _ in 0..<Int.random(in: 0...4, using: &random) {
                    let name = HTTPField.Name(names.randomElement(using: &random)!)!
                    // Now and then a long value: a head longer than the room the codec tries first, written again.
                    let long = Int.random(in: 0..<8, using: &random) == 0
                    let value = name == .contentLength ? "\(Int.random(in: 0...20, using: &random))"
                        : long ? String(repeating: "w", count: Int.random(in: 100...900, using: &random))
                        : Bool.random(using: &random) ? "chunked" : "v\(round)"
                    fields.append(HTTPField(name: name, value: value))
                }
                let code = codes.randomElement(using: &random)!
                let status = HTTPResponse.Status(code: code, reasonPhrase: Bool.random(using: &random) ? "" : "Phrase \(code)")
                var parts: [HTTPResponsePart] = [.head(HTTPResponse(status: status, headerFields: fields))]
                for _ in 0..<Int.random(in: 0...3, using: &random) {
                    parts.append(.body(ByteBuffer(string: String(repeating: "b", count: Int.random(in: 0...20, using: &random)))))
                }
                parts.append(.end(Bool.random(using: &random) ? nil : [HTTPField.Name("X-Trailer")!: "t\(round)"]))
                answers.append(parts)
            }
            // Heads written with a promise and without one (held by the codec until what follows): the same bytes.
            let headPromises = round % 2 == 0
            let ours = try Self.run(Self.ours(), requests: requests, answers: answers, headPromises: headPromises)
            let theirs = try Self.run(Self.theirs(), requests: requests, answers: answers, headPromises: headPromises)
            #expect(ours == theirs, "round \(round): \(String(decoding: ours.written, as: UTF8.self)) against \(String(decoding: theirs.written, as: UTF8.self))")
            if ours != theirs { return }
        }
    }
}

/// The codec in the whole gateway, over a real connection.
@Suite("The gateway's HTTP/1 codec, end to end")
struct GatewayHTTP1CodecGatewayTests {
    /// A `HEAD` gets the head a `GET` gets (its length) and no body, and the request after it on the same
    /// connection, sent in the same write, is answered whole: the codec, not SwiftNIO's encoder, now keeps the
    /// methods that decide it. The page's files write no body for a `HEAD`; a route's JSON (here the 404 of a route
    /// with no `HEAD`) is written, and the codec drops it.
    @Test func aHeadRequestGetsAHeadOnlyAndTheConnectionGoesOn() async throws {
        try await GatewayHarness.with { gateway in
            let port = try #require(URLComponents(string: gateway.baseURL)?.port)
            let page = try await gateway.request(.GET, "/")
            let missing = try await gateway.request(.GET, "/v1/no-such-route")
            #expect(page.status == 200 && missing.status == 404)
            let client = try await RawHTTPClient.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port))
            try await client.send("HEAD / HTTP/1.1\r\nHost: gateway\r\n\r\nHEAD /v1/no-such-route HTTP/1.1\r\nHost: gateway\r\n\r\n"
                + "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            let deadline = ContinuousClock.now + .seconds(5)
            while !client.received(endingWith: #"{"status":"ok"}"#), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let text = client.text
            // Two heads, then at once the GET's head and body: nothing of the page or the error between them.
            let parts = text.components(separatedBy: "\r\n\r\n")
            #expect(parts.count == 4, "\(text)")
            guard parts.count == 4 else { return }
            #expect(parts[0].hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(parts[0].lowercased().components(separatedBy: "\r\n").contains("content-length: \(page.text.utf8.count)"), "\(parts[0])")
            #expect(parts[1].hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            #expect(parts[1].lowercased().components(separatedBy: "\r\n").contains("content-length: \(missing.text.utf8.count)"), "\(parts[1])")
            #expect(parts[2].hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(parts[3] == #"{"status":"ok"}"#)
            await client.close()
        }
    }
}
