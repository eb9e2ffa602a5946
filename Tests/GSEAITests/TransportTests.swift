import Foundation
import GSEAI
import GSEAITestSupport
import NIOCore
import Testing

/// Both engines keep the same promises: every test here runs on SwiftNIO and on AsyncHTTPClient.
@Suite("Transport: raw calls, time limits, cancellation")
struct TransportTests {
    @Test(arguments: GSEAIClient.Engine.allCases)
    func rawCallStreamsTheBodyAndReturnsErrorsAsIs(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine) { client, stub in
            var request = try RawRequest(
                method: .POST, path: "/v1/chat/completions",
                json: ["model": "stub/echo-text", "stream": true, "messages": [["role": "user", "content": "raw"]]] as JSONValue
            )
            request.headers.add(name: "Authorization", value: "Bearer caller-key-must-not-pass")
            let response = try await client.send(request)
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == ["text/event-stream"])
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            #expect(text.hasSuffix("data: [DONE]\n\n"))
            #expect(text.contains("\"content\":\"raw\""))
            #expect(await stub.state.requests.last?.authorization == "Bearer stub-token")

            let missing = try await client.send(RawRequest(method: .GET, path: "/api/v0/models/none"))
            #expect(missing.status == 404)
            let body = try JSONValue(parsing: try await missing.body.collect(upTo: 1 << 20).readableBytesView)
            #expect(body["error"]?["message"] == "model 'none' not found")
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func firstEventArrivesBeforeTheUpstreamFinishes(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine) { client, stub in
            var iterator = try await client.chatStream(
                ChatRequest(model: "stub/echo-text", input: .text("one two three four five six [[slow]]"))
            ).makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first?.type == "chat.start")
            // 15 events 200 ms apart: the stub is still writing when the first one has arrived.
            #expect(await stub.state.completedStreams == 0)
            var rest = 0
            while try await iterator.next() != nil { rest += 1 }
            #expect(rest == 14)
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func idleTimeBetweenEventsIsLimited(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine, timeouts: .init(idle: .seconds(1))) { client, _ in
            var types: [String] = []
            await #expect(throws: GSEAIError.timeout(.idle)) {
                for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "[[hang]]")) {
                    types.append(event.type)
                }
            }
            // Without the limit the stream would go on after 60 s with the other events.
            #expect(types == ["chat.start"])
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func timeToFirstByteIsLimited(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine, timeouts: .init(firstByte: .milliseconds(300))) { client, _ in
            await #expect(throws: GSEAIError.timeout(.firstByte)) {
                try await client.chat(ChatRequest(model: "stub/echo-text", input: "[[hang-head]]"))
            }
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func aStreamWhoseHeadNeverComesIsAFirstByteTimeout(engine: GSEAIClient.Engine) async throws {
        // Every other limit is far from the first-byte one: the idle limit shorter, the connect limit and the
        // stub's silence (a minute) much longer.
        let timeouts = GSEAIClient.Timeouts(connect: .seconds(30), firstByte: .milliseconds(600), idle: .milliseconds(300))
        try await withClient(engine: engine, timeouts: timeouts) { client, _ in
            let started = ContinuousClock.now
            await #expect(throws: GSEAIError.timeout(.firstByte)) {
                for try await _ in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "[[hang-head]]")) {}
            }
            // The first-byte limit, not the (shorter) idle limit, nor a longer one: the connect limit or the end
            // of the stub's silence. (The time includes making the connection, which took seconds when the
            // whole suite starts on two cores: the bound is between the limits, not near the first-byte one.)
            let waited = ContinuousClock.now - started
            #expect(waited >= .milliseconds(550) && waited < .seconds(15), "\(waited)")
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func aStreamsHeadMayTakeTheFirstByteLimitAndItsPiecesTheIdleLimit(engine: GSEAIClient.Engine) async throws {
        // The head comes after a second, three idle limits: a model being loaded is not a silence. (The first-byte
        // limit far above that second: with the whole suite starting on two cores, a connection has taken seconds.)
        try await withClient(engine: engine, timeouts: .init(firstByte: .seconds(20), idle: .milliseconds(300))) { client, _ in
            var deltas: [String] = []
            for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "slow start [[late-head]]")) {
                if let delta = event.delta { deltas.append(delta) }
            }
            #expect(deltas.joined().hasPrefix("Echo: slow start"))
            // And OpenAI's stream, the same.
            var text = ""
            for try await chunk in try await client.chatCompletionsStream(
                ChatCompletionRequest(model: "stub/echo-text", messages: [ChatMessage(role: "user", content: "late [[late-head]]")])
            ) {
                text += chunk.delta ?? ""
            }
            #expect(text.hasPrefix("Echo: late"))
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func leavingAStreamMidWayCancelsItsReadAndTheUpstreamRequest(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine) { client, stub in
            var seen = 0
            for try await event in try await client.chatStream(ChatRequest(model: "stub/echo-text", input: "a b c d e f g h [[slow]]")) {
                if event.delta != nil { seen += 1 }
                if seen == 2 { break }
            }
            var abandoned = 0
            for _ in 0..<30 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
            #expect(await stub.state.completedStreams == 0)
        }
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func refusedConnectionIsAConnectionError(engine: GSEAIClient.Engine) async throws {
        // Port 1 on loopback has no listener.
        let client = try GSEAIClient(apiToken: "t", baseURL: "http://127.0.0.1:1", engine: engine)
        let error = await #expect(throws: GSEAIError.self) { try await client.listModels() }
        if case .connection = error {} else { Issue.record("expected a connection error, got \(String(describing: error))") }
        try await client.shutdown()
    }

    @Test(arguments: GSEAIClient.Engine.allCases)
    func abandoningAStreamCancelsTheUpstreamRequest(engine: GSEAIClient.Engine) async throws {
        try await withClient(engine: engine) { client, stub in
            // Cancelled once its first event has come, so that the stub is surely writing (a fixed wait could
            // cancel a request not yet sent on a busy machine: nothing to abandon then).
            let (started, startedSignal) = AsyncStream<Void>.makeStream()
            let task = Task {
                defer { startedSignal.finish() }
                var seen = 0
                for try await _ in try await client.chatStream(
                    ChatRequest(model: "stub/echo-text", input: "a b c d e f g h i j [[slow]]")
                ) {
                    seen += 1
                    if seen == 1 { startedSignal.yield() }
                }
                return seen
            }
            for await _ in started { break }
            task.cancel()
            _ = await task.result
            // The stub notices at its next write, 200 ms later at most (given 10 s: a machine busy with the
            // other suites may be slow to run it).
            var abandoned = 0
            for _ in 0..<100 where abandoned == 0 {
                try await Task.sleep(for: .milliseconds(100))
                abandoned = await stub.state.abandonedStreams
            }
            #expect(abandoned == 1)
            #expect(await stub.state.completedStreams == 0)
        }
    }

    @Test func baseURLsAreValidated() throws {
        #expect(throws: GSEAIError.invalidArgument("not an http(s) base URL: ftp://x")) {
            try GSEAIClient(apiToken: "t", baseURL: "ftp://x")
        }
        let client = GSEAIClient(apiToken: "t")
        #expect(client.baseURL == "http://gseai.gse.buffalo.edu:11434")
        let https = GSEAIClient(apiToken: "t", host: "example.edu", port: 443, scheme: "https")
        #expect(https.baseURL == "https://example.edu:443")
        // SwiftNIO for http://, AsyncHTTPClient for https:// unless chosen; SwiftNIO cannot be asked to speak TLS.
        #expect(client.engine == .nio)
        #expect(https.engine == .asyncHTTPClient)
        let nio = try GSEAIClient(apiToken: "t", baseURL: "http://example.edu", engine: .nio)
        #expect(nio.engine == .nio)
        let chosen = try GSEAIClient(apiToken: "t", baseURL: "http://example.edu", engine: .asyncHTTPClient)
        #expect(chosen.engine == .asyncHTTPClient)
        #expect(throws: GSEAIError.invalidArgument("the SwiftNIO engine speaks plain HTTP only: https://example.edu")) {
            try GSEAIClient(apiToken: "t", baseURL: "https://example.edu", engine: .nio)
        }
        Task { try await client.shutdown(); try await https.shutdown(); try await nio.shutdown(); try await chosen.shutdown() }
    }
}
