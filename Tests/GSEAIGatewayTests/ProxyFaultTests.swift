import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import HTTPTypes
import NIOCore
import Testing

/// Streams, disconnects, upstream faults and bad input.
@Suite("Gateway: streaming, faults, bad input")
struct ProxyFaultTests {
    /// What a caller is told when the client core fails in the middle of an upstream answer: an answer too large for
    /// the gateway's limit, one that broke off, a silence past a time limit, a server gone; each with its status,
    /// kind and message (a whole answer's collect and a stream's relay both end this way).
    @Test func anUpstreamFailureMidAnswerIsToldAsTheGatewaysError() {
        let cases: [(GSEAIError, HTTPResponse.Status, GatewayError.Kind, String)] = [
            (.responseTooLarge(limit: 1024), .badGateway, .upstream, "the model server's answer exceeded 1024 bytes"),
            (.streamInterrupted, .badGateway, .upstream, "the model server's answer broke off"),
            (.timeout(.idle), .gatewayTimeout, .timeout, "the model server did not answer in time (idle)"),
            (.connection("refused"), .badGateway, .upstream, "the model server cannot be reached"),
        ]
        for (failure, status, kind, message) in cases {
            let error = GatewayError.upstream(failure)
            #expect(error.status == status, "\(failure)")
            #expect(error.kind == kind, "\(failure)")
            #expect(error.message == message, "\(failure)")
        }
    }

    @Test func firstEventReachesTheCallerBeforeTheUpstreamFinishes() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                var events = try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "a b c d e f [[slow]]")).makeAsyncIterator()
                let first = try await events.next()
                #expect(first?.type == "chat.start")
                // The stub writes 15 events 200 ms apart: none has completed yet.
                #expect(await gateway.stub.state.completedStreams == 0)
                var count = 1
                while try await events.next() != nil { count += 1 }
                #expect(count == 15)
            }
        }
    }

    // Both engines: the NIO transport's body is closed from outside when the caller leaves, AsyncHTTPClient's
    // relay runs in a task that is cancelled.
    @Test(arguments: GSEAIClient.Engine.allCases)
    func aCallerWhoLeavesCancelsTheUpstreamRequest(engine: GSEAIClient.Engine) async throws {
        // The stub notices at its next write, 200 ms later at most.
        try await Self.leaveAStream(input: "a b c d e f g h i j k l [[slow]]", after: "message.start", engine: engine)
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func aCallerWhoLeavesWhileTheStreamIsSilentCancelsTheUpstreamRequestAtOnce(engine: GSEAIClient.Engine) async throws {
        // The stub sends the first event and then nothing for a minute: no write of the relay's finds the caller
        // gone, only the caller's connection closing tells the gateway.
        try await Self.leaveAStream(input: "a b [[hang]]", after: "chat.start", engine: engine)
    }

    /// A caller reads a stream up to the event `after`, then leaves: within 5 s the stub has seen its stream
    /// abandoned (and none completed), and the request still counts.
    static func leaveAStream(input: ChatInput, after eventType: String, engine: GSEAIClient.Engine,
                             sourceLocation: SourceLocation = #_sourceLocation) async throws {
        try await GatewayHarness.with(configure: { $0.upstreamEngine = engine }) { gateway in
            let (alice, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                let task = Task {
                    for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: input))
                    where event.type == eventType {
                        return
                    }
                }
                try await task.value
            }
            var abandoned = 0
            for _ in 0..<50 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await gateway.stub.state.abandonedStreams
            }
            #expect(abandoned == 1, sourceLocation: sourceLocation)
            #expect(await gateway.stub.state.completedStreams == 0, sourceLocation: sourceLocation)
            // The relay records the request once its upstream read has ended, which may come just after the
            // stub saw the connection close.
            var requests: Int?
            for _ in 0..<50 where requests == nil {
                requests = try await gateway.usage(of: alice.id).first?.requests
                if requests == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(requests == 1, sourceLocation: sourceLocation)
        }
    }

    /// A student whose client stops reading a stream cannot hold the class's one generation slot: once the
    /// connection is full and takes nothing for the stall limit, the gateway closes it, the upstream request is
    /// cancelled, and another student's request gets the slot. (The stub floods the stream, so that the socket
    /// buffers fill; without the limit the stream would wait for its reader for ever, and the slot with it.)
    @Test(.timeLimit(.minutes(1)), arguments: GSEAIClient.Engine.allCases)
    func aCallerWhoStopsReadingAStreamIsLetGoAndTheSlotFreed(engine: GSEAIClient.Engine) async throws {
        try await GatewayHarness.with(stubSlots: 1, configure: {
            $0.upstreamEngine = engine
            $0.callerStallTimeout = .seconds(1)
        }) { gateway in
            let (_, aliceKey) = try await gateway.user("alice")
            let (_, bobKey) = try await gateway.user("bob")
            let port = try #require(URLComponents(string: gateway.baseURL)?.port)
            let alice = try await RawHTTPClient.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port), receiveBuffer: 16 << 10,
                                                        reading: false)
            let body = #"{"model":"stub/echo-text","stream":true,"messages":[{"role":"user","content":"a b [[flood]]"}]}"#
            try await alice.send("POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer \(aliceKey)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            // The stub sees its stream abandoned: the gateway let the caller go and cancelled the upstream request.
            var abandoned = 0
            for _ in 0..<200 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await gateway.stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
            #expect(await gateway.stub.state.completedStreams == 0)
            // The one slot is free again: another student is answered.
            try await gateway.withClient(key: bobKey) { client in
                let answer = try await client.chat(ChatRequest(model: "stub/echo-text", input: .text("after")))
                #expect(answer.text == "Echo: after")
            }
            // What the stalled caller then reads: the stream's start, cut off (no final event), and the end.
            alice.startReading()
            #expect(try await alice.waitUntilClosed())
            #expect(alice.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(!alice.text.contains("[DONE]"))
        }
    }

    @Test func aCallerWhoLeavesBeforeAWholeAnswerCancelsTheUpstreamRequest() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                // The stub holds the answer back for a minute; the caller gives up once the stub has the request.
                let task = Task {
                    try await client.chatCompletions(ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "wait [[hang-head]]")]))
                }
                for _ in 0..<100 where await gateway.stub.state.requests(to: "POST /v1/chat/completions").isEmpty {
                    try await Task.sleep(for: .milliseconds(20))
                }
                task.cancel()
                _ = await task.result
            }
            // The gateway notices within a quarter of a second and drops the upstream request; the stub sees its
            // connection close long before its minute is up.
            var abandoned = 0
            for _ in 0..<50 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await gateway.stub.state.abandonedHeads
            }
            #expect(abandoned == 1)
            // Counted as the caller's leaving (nginx's 499), not as a failure of the gateway.
            var metrics = ""
            for _ in 0..<20 where !metrics.contains("status=\"499\"") {
                try await Task.sleep(for: .milliseconds(50))
                metrics = try await gateway.request(.GET, "/metrics").text
            }
            #expect(metrics.contains("route=\"/v1/chat/completions\",status=\"499\""), "\(metrics)")
            #expect(!metrics.contains("status=\"500\""))
        }
    }

    @Test func upstreamStreamCutMidwayBecomesAnErrorEventInEachFormat() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let native = try await gateway.post("/api/v1/chat", key: key, json: ["model": "stub/echo-text", "input": "a b c d [[cut]]", "stream": true])
            #expect(native.status == 200)
            #expect(native.events.suffix(2).map(\.event) == ["error", "chat.end"])
            #expect(native.events.dropLast().last.flatMap { try? JSONValue(parsing: Array($0.data.utf8))["error"]?["message"] }
                == "the model server's answer broke off")

            let openAI = try await gateway.post("/v1/chat/completions", key: key, json: [
                "model": "stub/echo-text", "stream": true, "messages": [["role": "user", "content": "a b c d [[drop]]"]],
            ])
            let last = try JSONValue(parsing: Array(try #require(openAI.events.last).data.utf8))
            #expect(last["error"]?["type"] == "upstream_error")
            #expect(!openAI.text.contains("[DONE]"))

            let anthropic = try await gateway.post("/v1/messages", key: key, json: [
                "model": "stub/echo-text", "stream": true, "max_tokens": 5, "messages": [["role": "user", "content": "a b [[cut]]"]],
            ])
            #expect(anthropic.events.last?.event == "error")
            #expect(try JSONValue(parsing: Array(anthropic.events.last!.data.utf8))["error"]?["type"] == "api_error")
        }
    }

    @Test func upstreamErrorEventsPassThroughUnchanged() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            try await gateway.withClient(key: key) { client in
                let events = try await collectAll(try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "[[error]]")))
                #expect(events.suffix(2).map(\.type) == ["error", "chat.end"])
                #expect(events.suffix(2).first?.error?.message == "stub failure mid-stream")
            }
        }
    }

    @Test func upstreamServerErrorIsA502InTheCallersFormat() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let openAI = try await gateway.post("/v1/chat/completions", key: key, json: ["model": "stub/echo-text", "messages": [["role": "user", "content": "[[error]]"]]])
            #expect(openAI.status == 502)
            #expect(openAI.errorMessage == "the model server failed: stub failure on request")
            let anthropic = try await gateway.post("/v1/messages", key: key, json: ["model": "stub/echo-text", "max_tokens": 3, "messages": [["role": "user", "content": "[[error]]"]]])
            #expect(anthropic.status == 502)
            #expect(anthropic.json?["type"] == "error")
            #expect(anthropic.json?["error"]?["message"] == "the model server failed: stub failure on request")
            // A client error from the upstream passes through as it was.
            let missing = try await gateway.post("/v1/chat/completions", key: key, json: ["model": "no/such", "messages": [["role": "user", "content": "x"]]])
            #expect(missing.status == 404)
            #expect(missing.errorMessage == "model 'no/such' not found")
        }
    }

    @Test func anUpstreamRefusalPassesThroughAsItWasWithItsRetryAfter() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let requests: [(String, JSONValue)] = [
                ("/v1/chat/completions", ["model": "stub/echo-text", "messages": [["role": "user", "content": "[[busy]]"]]]),
                ("/v1/chat/completions", ["model": "stub/echo-text", "stream": true, "messages": [["role": "user", "content": "[[busy]]"]]]),
                ("/v1/messages", ["model": "stub/echo-text", "max_tokens": 3, "stream": true, "messages": [["role": "user", "content": "[[busy]]"]]]),
                ("/api/v1/chat", ["model": "stub/echo-text", "input": "[[busy]]"]),
            ]
            for (path, body) in requests {
                let refused = try await gateway.post(path, key: key, json: body)
                #expect(refused.status == 429, "\(path)")
                #expect(refused.headers.first(name: "Retry-After") == "7", "\(path)")
                #expect(refused.headers.first(name: "Content-Type") == "application/json", "\(path)")
                #expect(refused.text == StubUpstream.busyBody, "\(path)")
            }
        }
    }

    @Test func upstreamTimeLimits() async throws {
        try await GatewayHarness.with(configure: { $0.idleTimeout = .seconds(1); $0.firstByteTimeout = .seconds(2) }) { gateway in
            let (_, key) = try await gateway.user("alice")
            let silent = try await gateway.post("/api/v1/chat", key: key, json: ["model": "stub/echo-text", "input": "[[hang]]", "stream": true])
            #expect(silent.events.map(\.event) == ["chat.start", "error", "chat.end"])
            #expect(silent.text.contains("did not answer in time (idle)"))
            let headless = try await gateway.post("/api/v1/chat", key: key, json: ["model": "stub/echo-text", "input": "[[hang-head]]"])
            #expect(headless.status == 504)
            #expect(headless.errorMessage == "the model server did not answer in time (first byte)")
        }
    }

    @Test func unreachableUpstreamIsA502() async throws {
        try await GatewayHarness.with(configure: { $0.upstreamURL = "http://127.0.0.1:1" }) { gateway in
            let (_, key) = try await gateway.user("alice")
            let result = try await gateway.post("/api/v1/chat", key: key, json: ["model": "stub/echo-text", "input": "x"])
            #expect(result.status == 502)
            #expect(result.errorMessage == "the model server cannot be reached")
            let ready = try await gateway.request(.GET, "/readyz")
            #expect(ready.status == 503)
        }
    }

    @Test func badInputIsRefusedBeforeAnythingGoesUpstream() async throws {
        try await GatewayHarness.with(configure: { $0.maxBodyBytes = 4096; $0.maxImageBytes = 1024 }) { gateway in
            let (_, key) = try await gateway.user("alice")
            let auth = [("Authorization", "Bearer \(key)")]
            let huge = try await gateway.request(.POST, "/v1/chat/completions", headers: auth, body: "{\"model\":\"" + String(repeating: "x", count: 8000) + "\"}")
            #expect(huge.status == 413)
            #expect(huge.errorMessage == "the request body is too large (the limit is 4096 bytes)")
            let malformed = try await gateway.request(.POST, "/v1/chat/completions", headers: auth, body: "{\"model\": ")
            #expect(malformed.status == 400)
            #expect(malformed.errorMessage == "the request body is not valid JSON")
            let notImage = try await gateway.post("/api/v1/chat", key: key, json: [
                "model": "stub/echo-vl", "input": [["type": "image", "data_url": .string("data:image/png;base64," + Data("text".utf8).base64EncodedString())]],
            ])
            #expect(notImage.status == 400)
            #expect(notImage.errorMessage == "invalid image: the file is not a PNG, JPEG, GIF or WebP image")
            let badBase64 = try await gateway.post("/v1/chat/completions", key: key, json: [
                "model": "stub/echo-vl", "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "data:image/png;base64,!!!"]]]]],
            ])
            #expect(badBase64.errorMessage == "invalid image: the image data URL holds invalid base64")
            let link = try await gateway.post("/v1/chat/completions", key: key, json: [
                "model": "stub/echo-vl", "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "http://169.254.169.254/x.png"]]]]],
            ])
            #expect(link.status == 400)
            let bigImage = Data(base64Encoded: tinyPNGBase64)! + Data(count: 2000)
            let tooBig = try await gateway.post("/v1/messages", key: key, json: [
                "model": "stub/echo-vl", "max_tokens": 5,
                "messages": [["role": "user", "content": [["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": .string(bigImage.base64EncodedString())]]]]],
            ])
            #expect(tooBig.status == 413)
            #expect(tooBig.json?["error"]?["message"] == "the image is 2070 bytes; the limit is 1024")
            let unknown = try await gateway.request(.GET, "/v1/nothing-here", headers: auth)
            #expect(unknown.status == 404)
            #expect(unknown.errorMessage == "no such endpoint")
            #expect(await gateway.stub.state.requests.isEmpty)
        }
    }
}

@Suite("Gateway on either upstream transport")
struct NIOEngineGatewayTests {
    /// `gseai.upstream.engine`: whole answers and streams through the gateway, on kept-alive connections to
    /// the model server, and a caller who leaves still cancels the upstream request, on the SwiftNIO transport
    /// (the default for `http://`) and on AsyncHTTPClient (the one for `https://`, here chosen).
    @Test(arguments: GSEAIClient.Engine.allCases)
    func answersStreamsAndLeavingCallersWorkOnEitherEngine(engine: GSEAIClient.Engine) async throws {
        try await GatewayHarness.with(configure: { $0.upstreamEngine = engine }) { gateway in
            #expect(gateway.gateway.pool.upstreams.map(\.client.engine) == [engine])
            let (_, key) = try await gateway.user("alice")
            for round in 1...3 {
                let whole = try await gateway.post("/v1/chat/completions", key: key, json: [
                    "model": "stub/echo-text", "messages": [["role": "user", "content": .string("round \(round)")]],
                ])
                #expect(whole.json?["choices"]?.arrayValue?.first?["message"]?["content"] == .string("Echo: round \(round)"))
            }
            try await gateway.withClient(key: key) { client in
                var text = ""
                for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "streamed")) {
                    text += event.delta ?? ""
                }
                #expect(text == "Echo: streamed")
                for try await event in try await client.chatStream(
                    ChatRequest(model: "stub/echo-text", input: "a b c d e f g h [[slow]]")
                ) where event.type == "message.start" {
                    break
                }
            }
            var abandoned = 0
            for _ in 0..<40 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await gateway.stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
            // Five requests one after another: at most one kept-alive connection per event loop of the gateway
            // (NIO's shared group: one per core), not one per request.
            if engine == .nio { #expect(gateway.stub.connectionsAccepted <= min(5, System.coreCount)) }
        }
    }
}
