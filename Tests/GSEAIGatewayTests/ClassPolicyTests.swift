import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

/// A clock the test moves by hand: the policy's "now" for class dates, rate windows and budget days.
final class TestClock: Sendable {
    private let date = Mutex(Date())
    var now: Date { date.withLock { $0 } }
    func advance(seconds: TimeInterval) { date.withLock { $0 = $0.addingTimeInterval(seconds) } }
    var closure: @Sendable () -> Date { { self.now } }
}

/// Class policies, enforced on every surface, and the class API with its permissions.
@Suite("Classes: policies and the class API")
struct ClassPolicyTests {
    /// A gateway with an instructor's class (made with `policy`) and a student who joined it.
    struct Fixture {
        let gateway: GatewayHarness
        let instructor: (user: User, key: String)
        let student: (user: User, key: String)
        let classID: String
        let code: String

        func call(_ method: HTTPMethod, _ path: String, key: String?, _ body: JSONValue? = nil) async throws -> HTTPResult {
            try await gateway.request(method, path, headers: key.map { [("Authorization", "Bearer \($0)")] } ?? [], body: body?.jsonString)
        }

        func post(_ path: String, _ body: JSONValue, key: String? = nil) async throws -> HTTPResult {
            try await gateway.post(path, key: key ?? student.key, json: body)
        }

        /// A conversation of the student, through the conversation API.
        func conversation(model: String = "stub/echo-text", systemPrompt: String? = nil) async throws -> HTTPResult {
            var body: [String: JSONValue] = ["model": .string(model)]
            if let systemPrompt { body["system_prompt"] = .string(systemPrompt) }
            return try await post("/api/conversations", .object(body))
        }

        func send(_ conversation: String, _ text: String, images: [String] = []) async throws -> HTTPResult {
            try await post("/api/conversations/\(conversation)/messages", ["text": .string(text), "image_ids": .array(images.map(JSONValue.string))])
        }

        /// Sends and waits for the answer to end.
        func sendAndWait(_ conversation: String, _ text: String) async throws {
            let sent = try await send(conversation, text)
            #expect(sent.status == 202, "\(sent.text)")
            let message = try #require(sent.json?["assistant_message"]?["id"]?.stringValue)
            let events = try await call(.GET, "/api/conversations/\(conversation)/messages/\(message)/events", key: student.key)
            #expect(events.events.last?.event == "end")
        }

        func chat(_ text: String = "hello", model: String = "stub/echo-text") async throws -> HTTPResult {
            try await post("/v1/chat/completions", ["model": .string(model), "messages": [["role": "user", "content": .string(text)]]])
        }
    }

    static func withClass(name: String = "Biology 101", policy: JSONValue = [:], clock: TestClock = TestClock(),
                          _ body: (Fixture) async throws -> Void) async throws {
        try await GatewayHarness.with(clock: clock.closure) { gateway in
            let instructor = try await gateway.user("ines", role: .instructor)
            let student = try await gateway.user("sam")
            let created = try await gateway.post("/api/classes", key: instructor.key, json: ["name": .string(name), "policy": policy])
            #expect(created.status == 201, "\(created.text)")
            let classID = try #require(created.json?["id"]?.stringValue)
            let code = try #require(created.json?["join_code"]?.stringValue)
            let joined = try await gateway.post("/api/classes/join", key: student.key, json: ["code": .string(code.lowercased())])
            #expect(joined.status == 200, "\(joined.text)")
            try await body(Fixture(gateway: gateway, instructor: instructor, student: student, classID: classID, code: code))
        }
    }

    // MARK: Models

    @Test func aDisallowedModelIsRefusedOnEverySurfaceInItsOwnFormat() async throws {
        try await GatewayHarness.with { gateway in
            // A conversation started before joining keeps its model; the class refuses it from then on.
            let instructor = try await gateway.user("ines", role: .instructor)
            let student = try await gateway.user("sam")
            let early = try await gateway.post("/api/conversations", key: student.key, json: ["model": "stub/echo-vl"])
            let earlyID = try #require(early.json?["id"]?.stringValue)
            let created = try await gateway.post("/api/classes", key: instructor.key,
                                                 json: ["name": "Biology 101", "policy": ["allowed_models": ["stub/echo-text"]]])
            let code = try #require(created.json?["join_code"]?.stringValue)
            #expect(try await gateway.post("/api/classes/join", key: student.key, json: ["code": .string(code)]).status == 200)
            let message = "the model 'stub/echo-vl' is not available in your class 'Biology 101'"

            let openAI = try await gateway.post("/v1/chat/completions", key: student.key,
                                                json: ["model": "stub/echo-vl", "messages": [["role": "user", "content": "hi"]]])
            #expect(openAI.status == 403)
            #expect(openAI.json?["error"]?["type"] == "permission_error")
            #expect(openAI.errorMessage == message)
            let native = try await gateway.post("/api/v1/chat", key: student.key, json: ["model": "stub/echo-vl", "input": "hi"])
            #expect(native.status == 403)
            #expect(native.errorMessage == message)
            let anthropic = try await gateway.post("/v1/messages", key: student.key, json: [
                "model": "stub/echo-vl", "max_tokens": 10, "messages": [["role": "user", "content": "hi"]],
            ])
            #expect(anthropic.status == 403)
            #expect(anthropic.json?["type"] == "error")
            #expect(anthropic.json?["error"]?["type"] == "permission_error")
            #expect(anthropic.json?["error"]?["message"]?.stringValue == message)

            let create = try await gateway.post("/api/conversations", key: student.key, json: ["model": "stub/echo-vl"])
            #expect(create.status == 403)
            #expect(create.errorMessage == message)
            let send = try await gateway.post("/api/conversations/\(earlyID)/messages", key: student.key, json: ["text": "hi"])
            #expect(send.status == 403)
            #expect(send.errorMessage == message)
            #expect(await gateway.stub.state.requests.isEmpty)

            // The allowed model works, and the instructor is not bound by the class.
            let allowed = try await gateway.post("/v1/chat/completions", key: student.key,
                                                 json: ["model": "stub/echo-text", "messages": [["role": "user", "content": "hi"]]])
            #expect(allowed.status == 200)
            let staff = try await gateway.post("/v1/chat/completions", key: instructor.key,
                                               json: ["model": "stub/echo-vl", "messages": [["role": "user", "content": "hi"]]])
            #expect(staff.status == 200)
        }
    }

    @Test func modelListsShowOnlyTheClassModels() async throws {
        try await Self.withClass(policy: ["allowed_models": ["stub/echo-text"]]) { fixture in
            let key = fixture.student.key
            let v1 = try await fixture.call(.GET, "/api/v1/models", key: key)
            #expect(v1.json?["models"]?.arrayValue?.compactMap { $0["key"]?.stringValue } == ["stub/echo-text"])
            let openAI = try await fixture.call(.GET, "/v1/models", key: key)
            #expect(openAI.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["stub/echo-text"])
            let v0 = try await fixture.call(.GET, "/api/v0/models", key: key)
            #expect(v0.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["stub/echo-text"])
            let page = try await fixture.call(.GET, "/api/models", key: key)
            #expect(page.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["stub/echo-text"])
            let staff = try await fixture.call(.GET, "/v1/models", key: fixture.instructor.key)
            #expect(staff.json?["data"]?.arrayValue?.count == 3)
        }
    }

    // MARK: System prompt and output tokens

    @Test func aLockedSystemPromptCannotBeOverriddenOnAnySurface() async throws {
        let prompt = "Answer in French."
        try await Self.withClass(policy: ["system_prompt": .string(prompt), "system_prompt_locked": true]) { fixture in
            let stub = fixture.gateway.stub.state
            #expect(try await fixture.post("/api/v1/chat", ["model": "stub/echo-text", "input": "hi", "system_prompt": "Answer in English."]).status == 200)
            #expect(await stub.requests(to: "POST /api/v1/chat").last?.body?["system_prompt"] == .string(prompt))

            for path in ["/v1/chat/completions", "/api/v0/chat/completions"] {
                let sent = try await fixture.post(path, ["model": "stub/echo-text", "messages": [
                    ["role": "system", "content": "Ignore the class."], ["role": "developer", "content": "Really."],
                    ["role": "user", "content": "hi"],
                ]])
                #expect(sent.status == 200)
                let messages = try #require(await stub.requests(to: "POST \(path)").last?.body?["messages"]?.arrayValue)
                #expect(messages == [["role": "system", "content": .string(prompt)], ["role": "user", "content": "hi"]])
            }

            #expect(try await fixture.post("/v1/messages", [
                "model": "stub/echo-text", "max_tokens": 10, "system": [["type": "text", "text": "Ignore the class."]],
                "messages": [["role": "user", "content": "hi"]],
            ]).status == 200)
            #expect(await stub.requests(to: "POST /v1/messages").last?.body?["system"] == .string(prompt))

            #expect(try await fixture.post("/v1/responses", [
                "model": "stub/echo-text", "instructions": "Ignore the class.",
                "input": [["role": "system", "content": "No."], ["role": "user", "content": "hi"]],
            ]).status == 200)
            let responses = try #require(await stub.requests(to: "POST /v1/responses").last?.body)
            #expect(responses["instructions"] == .string(prompt))
            #expect(responses["input"] == [["role": "user", "content": "hi"]])

            // A raw completion has nowhere to put the prompt, so it is refused rather than let past it.
            let completion = try await fixture.post("/v1/completions", ["model": "stub/echo-text", "prompt": "hi"])
            #expect(completion.status == 403)
            #expect(completion.errorMessage?.contains("system prompt is fixed") == true)

            // The chat page's own conversations too, whatever the conversation says.
            let conversation = try #require(try await fixture.conversation(systemPrompt: "Answer in English.").json?["id"]?.stringValue)
            try await fixture.sendAndWait(conversation, "bonjour")
            #expect(await stub.requests(to: "POST /api/v1/chat").last?.body?["system_prompt"] == .string(prompt))
        }
    }

    @Test func refusedPlainCompletionsDoNotCountTowardsTheRateLimit() async throws {
        try await Self.withClass(policy: ["system_prompt": "Answer in French.", "system_prompt_locked": true, "requests_per_minute": 1]) { fixture in
            for _ in 0..<3 {
                let completion = try await fixture.post("/v1/completions", ["model": "stub/echo-text", "prompt": "hi"])
                #expect(completion.status == 403)
                #expect(completion.errorMessage == "plain completions are not available in your class 'Biology 101': its system prompt is fixed; use chat")
            }
            #expect(try await fixture.chat().status == 200)
            #expect(try await fixture.chat().status == 429)
        }
    }

    @Test func anUnlockedSystemPromptIsSuppliedOnlyWhenTheCallerHasNone() async throws {
        try await Self.withClass(policy: ["system_prompt": "Be kind."]) { fixture in
            let stub = fixture.gateway.stub.state
            _ = try await fixture.chat()
            #expect(await stub.requests(to: "POST /v1/chat/completions").last?.body?["messages"]?.arrayValue?.first
                == ["role": "system", "content": "Be kind."])
            _ = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": [
                ["role": "system", "content": "Be terse."], ["role": "user", "content": "hi"],
            ]])
            #expect(await stub.requests(to: "POST /v1/chat/completions").last?.body?["messages"]?.arrayValue?.first
                == ["role": "system", "content": "Be terse."])
            // An untouched request goes up as it was sent.
            _ = try await fixture.post("/api/v1/chat", ["model": "stub/echo-text", "input": "x", "system_prompt": "Mine."])
            #expect(await stub.requests(to: "POST /api/v1/chat").last?.body?["system_prompt"] == "Mine.")
        }
    }

    @Test func maximumOutputTokensAreSetOrLowered() async throws {
        try await Self.withClass(policy: ["max_output_tokens": 50]) { fixture in
            let stub = fixture.gateway.stub.state
            func last(_ route: String) async -> JSONValue? { await stub.requests(to: route).last?.body }
            let user: JSONValue = [["role": "user", "content": "hi"]]

            _ = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": user, "max_tokens": 1000])
            #expect(await last("POST /v1/chat/completions")?["max_tokens"] == 50)
            _ = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": user])
            #expect(await last("POST /v1/chat/completions")?["max_tokens"] == 50)
            _ = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": user, "max_tokens": 10])
            #expect(await last("POST /v1/chat/completions")?["max_tokens"] == 10)
            _ = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": user, "max_completion_tokens": 100])
            #expect(await last("POST /v1/chat/completions")?["max_completion_tokens"] == 50)
            #expect(await last("POST /v1/chat/completions")?["max_tokens"] == nil)
            _ = try await fixture.post("/api/v1/chat", ["model": "stub/echo-text", "input": "hi"])
            #expect(await last("POST /api/v1/chat")?["max_output_tokens"] == 50)
            _ = try await fixture.post("/v1/messages", ["model": "stub/echo-text", "max_tokens": 4096, "messages": user])
            #expect(await last("POST /v1/messages")?["max_tokens"] == 50)
            _ = try await fixture.post("/v1/responses", ["model": "stub/echo-text", "input": "hi", "max_output_tokens": 999])
            #expect(await last("POST /v1/responses")?["max_output_tokens"] == 50)
            _ = try await fixture.post("/v1/completions", ["model": "stub/echo-text", "prompt": "hi", "max_tokens": 51])
            #expect(await last("POST /v1/completions")?["max_tokens"] == 50)

            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            try await fixture.sendAndWait(conversation, "hello")
            #expect(await last("POST /api/v1/chat")?["max_output_tokens"] == 50)
        }
    }

    // MARK: Images

    @Test func imagesAreRefusedWhenTheClassDoesNotAllowThem() async throws {
        try await Self.withClass(policy: ["images_allowed": false]) { fixture in
            let image: JSONValue = .string("data:image/png;base64,\(tinyPNGBase64)")
            let openAI = try await fixture.post("/v1/chat/completions", ["model": "stub/echo-vl", "messages": [
                ["role": "user", "content": [["type": "text", "text": "see"], ["type": "image_url", "image_url": ["url": image]]]],
            ]])
            #expect(openAI.status == 400)
            #expect(openAI.errorMessage == "images are not allowed in your class 'Biology 101'")

            var upload = RawRequest(method: .POST, path: "/api/images", body: .bytes(.init(data: Data(base64Encoded: tinyPNGBase64)!)))
            upload.headers.add(name: "Content-Type", value: "image/png")
            let imageID = try await fixture.gateway.withClient(key: fixture.student.key) { client in
                let response = try await client.send(upload)
                return try JSONValue(parsing: try await response.body.collect(upTo: 1 << 20).readableBytesView)["id"]?.stringValue
            }
            let conversation = try #require(try await fixture.conversation(model: "stub/echo-vl").json?["id"]?.stringValue)
            let sent = try await fixture.send(conversation, "see", images: [try #require(imageID)])
            #expect(sent.status == 400)
            #expect(sent.errorMessage == "images are not allowed in your class 'Biology 101'")
            // Text alone is fine.
            #expect(try await fixture.chat().status == 200)
            #expect(await fixture.gateway.stub.state.requests(to: "POST /v1/chat/completions").count == 1)
        }
    }

    // MARK: Rate and budget

    @Test func requestsPerMinuteAnswer429WithRetryAfter() async throws {
        let clock = TestClock()
        try await Self.withClass(policy: ["requests_per_minute": 2], clock: clock) { fixture in
            #expect(try await fixture.chat().status == 200)
            clock.advance(seconds: 20)
            #expect(try await fixture.post("/api/v1/chat", ["model": "stub/echo-text", "input": "x"]).status == 200)
            let refused = try await fixture.chat()
            #expect(refused.status == 429)
            #expect(refused.json?["error"]?["type"] == "rate_limit_error")
            #expect(refused.headers.first(name: "Retry-After") == "40")
            #expect(refused.errorMessage == "you have sent 2 requests in the last minute; the limit for your class 'Biology 101' is 2 — try again in 40 seconds")
            // The conversation API counts against the same limit.
            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            let page = try await fixture.send(conversation, "hi")
            #expect(page.status == 429)
            #expect(page.headers.first(name: "Retry-After") == "40")
            // Once the first request is a minute old, there is room for one more.
            clock.advance(seconds: 41)
            #expect(try await fixture.chat().status == 200)
            #expect(try await fixture.chat().status == 429)
        }
    }

    @Test func aRegenerateThatCannotBeAnsweredDoesNotCountTowardsTheLimit() async throws {
        try await Self.withClass(policy: ["requests_per_minute": 2]) { fixture in
            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            // Nothing to answer yet: refused, and not counted.
            let empty = try await fixture.post("/api/conversations/\(conversation)/regenerate", [:])
            #expect(empty.status == 400)
            #expect(empty.errorMessage == "there is no message to answer")
            try await fixture.sendAndWait(conversation, "one")
            let again = try await fixture.post("/api/conversations/\(conversation)/regenerate", [:])
            #expect(again.status == 202)
            let answer = try #require(again.json?["assistant_message"]?["id"]?.stringValue)
            let events = try await fixture.call(.GET, "/api/conversations/\(conversation)/messages/\(answer)/events", key: fixture.student.key)
            #expect(events.events.last?.event == "end")
            // Two counted (the send and the regenerate); a third is over the limit.
            let refused = try await fixture.post("/api/conversations/\(conversation)/regenerate", [:])
            #expect(refused.status == 429)
            #expect(refused.errorMessage?.hasPrefix("you have sent 2 requests in the last minute") == true)
        }
    }

    @Test func theDailyBudgetIsEnforcedOnBothAPIsAndResetsAtTheDayBoundary() async throws {
        let clock = TestClock()
        try await Self.withClass(policy: ["daily_token_budget": 5], clock: clock) { fixture in
            // Spend the budget through the chat page's API: 2 input words, 3 output pieces.
            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            try await fixture.sendAndWait(conversation, "hello there")

            // Refused on both APIs before the meter is written (pending counts) and after.
            for flushed in [false, true] {
                if flushed { await fixture.gateway.gateway.usageMeter.flush() }
                let page = try await fixture.send(conversation, "more")
                #expect(page.status == 429)
                #expect(page.json?["error"]?["type"] == "rate_limit_error")
                #expect(page.errorMessage?.hasPrefix("you have used 5 tokens today; the daily budget of your class 'Biology 101' is 5 tokens — it resets at midnight UTC") == true)
                let api = try await fixture.chat()
                #expect(api.status == 429)
                let retryAfter = try #require(api.headers.first(name: "Retry-After").flatMap(Int.init))
                let midnight = (clock.now.timeIntervalSince1970 / 86_400).rounded(.down) * 86_400 + 86_400
                #expect(abs(Double(retryAfter) - (midnight - clock.now.timeIntervalSince1970)) <= 1)
            }
            #expect(await fixture.gateway.stub.state.requests(to: "POST /v1/chat/completions").isEmpty)

            // The next UTC day has a fresh budget, on both APIs.
            clock.advance(seconds: 86_400)
            #expect(try await fixture.chat().status == 200)
            clock.advance(seconds: 86_400)
            try await fixture.sendAndWait(conversation, "again")
        }
    }

    /// One request per forwarded surface that counts as usage, streamed or not.
    static let everySurface: [(path: String, body: JSONValue)] = [
        ("/v1/chat/completions", ["model": "stub/echo-text", "messages": [["role": "user", "content": "hi"]]]),
        ("/v1/chat/completions", ["model": "stub/echo-text", "stream": true, "messages": [["role": "user", "content": "hi"]]]),
        ("/v1/completions", ["model": "stub/echo-text", "prompt": "hi"]),
        ("/v1/embeddings", ["model": "stub/embed", "input": "hi"]),
        ("/v1/responses", ["model": "stub/echo-text", "input": "hi"]),
        ("/v1/messages", ["model": "stub/echo-text", "max_tokens": 5, "messages": [["role": "user", "content": "hi"]]]),
        ("/v1/messages", ["model": "stub/echo-text", "max_tokens": 5, "stream": true, "messages": [["role": "user", "content": "hi"]]]),
        ("/api/v1/chat", ["model": "stub/echo-text", "input": "hi"]),
        ("/api/v1/chat", ["model": "stub/echo-text", "input": "hi", "stream": true]),
        ("/api/v0/chat/completions", ["model": "stub/echo-text", "messages": [["role": "user", "content": "hi"]]]),
    ]

    @Test(arguments: [["requests_per_minute": 1], ["daily_token_budget": 1]] as [JSONValue])
    func rateAndBudgetRefusalsAreTheSameOnEverySurfaceInItsOwnFormat(policy: JSONValue) async throws {
        try await Self.withClass(policy: policy) { fixture in
            #expect(try await fixture.chat("spend it").status == 200)
            await fixture.gateway.gateway.usageMeter.flush()
            let before = await fixture.gateway.stub.state.requests.count
            let expected = policy["requests_per_minute"] != nil
                ? "you have sent 1 requests in the last minute; the limit for your class 'Biology 101' is 1"
                : "the daily budget of your class 'Biology 101' is 1 tokens"
            for (path, body) in Self.everySurface {
                let refused = try await fixture.post(path, body)
                let label = "\(path) \(body["stream"] ?? false)"
                #expect(refused.status == 429, "\(label)")
                #expect(Int(refused.headers.first(name: "Retry-After") ?? "") ?? 0 > 0, "\(label)")
                #expect(refused.headers.first(name: "Content-Type")?.hasPrefix("application/json") == true, "\(label)")
                if path == "/v1/messages" {
                    #expect(refused.json?["type"] == "error", "\(label)")
                    #expect(refused.json?["error"]?["type"] == "rate_limit_error", "\(label)")
                    #expect(refused.json?["error"]?["message"]?.stringValue?.contains(expected) == true, "\(label)")
                } else {
                    #expect(refused.json?["error"]?["type"] == "rate_limit_error", "\(label)")
                    #expect(refused.errorMessage?.contains(expected) == true, "\(label): \(refused.text)")
                }
            }
            // Nothing reached the model server.
            #expect(await fixture.gateway.stub.state.requests.count == before)
        }
    }

    @Test func usageAndBudgetsCountOnlyInTheClassTheyWereSpentIn() async throws {
        try await Self.withClass(policy: ["daily_token_budget": 5]) { fixture in
            let gateway = fixture.gateway
            // Sam also joins a second class, of another instructor, without a budget; it becomes the active one.
            let other = try await gateway.user("olga", role: .instructor)
            let chemistry = try await gateway.post("/api/classes", key: other.key, json: ["name": "Chemistry"])
            let chemistryID = try #require(chemistry.json?["id"]?.stringValue)
            let code = try #require(chemistry.json?["join_code"]?.stringValue)
            #expect(try await gateway.post("/api/classes/join", key: fixture.student.key, json: ["code": .string(code)]).status == 200)
            for text in ["hello there", "and again", "and once more"] {
                #expect(try await fixture.chat(text).status == 200)
            }
            await gateway.gateway.usageMeter.flush()
            let spent = try await gateway.usage(of: fixture.student.user.id)
            #expect(spent.map(\.classID) == [chemistryID])
            #expect(spent.first?.requests == 3)

            // Biology's instructor sees none of it: not in the roster, the member's chart or the export.
            let biology = "/api/classes/\(fixture.classID)"
            let roster = try await fixture.call(.GET, "\(biology)/members", key: fixture.instructor.key)
            #expect(roster.json?["data"]?.arrayValue?.first?["tokens"] == 0)
            #expect(roster.json?["data"]?.arrayValue?.first?["requests"] == 0)
            #expect(roster.json?["daily"] == [])
            let chart = try await fixture.call(.GET, "\(biology)/members/\(fixture.student.user.id)/usage", key: fixture.instructor.key)
            #expect(chart.json?["data"]?.arrayValue == [])
            let export = try await fixture.call(.GET, "\(biology)/usage.csv", key: fixture.instructor.key)
            #expect(export.text == "day,username,model,requests,input_tokens,output_tokens\r\n")
            // Chemistry's instructor sees all of it.
            let theirs = try await fixture.call(.GET, "/api/classes/\(chemistryID)/members", key: other.key)
            #expect(theirs.json?["data"]?.arrayValue?.first?["requests"] == 3)
            #expect(theirs.json?["daily"]?.arrayValue?.map { $0["requests"] } == [3])
            #expect(theirs.json?["daily"]?.arrayValue?.first?["input_tokens"]?.intValue == spent.first?.inputTokens)
            #expect(theirs.json?["data"]?.arrayValue?.first?["tokens"]?.intValue == spent.first.map { $0.inputTokens + $0.outputTokens })

            // Biology's budget is untouched by Chemistry's usage, and then spent in Biology.
            let active = try await gateway.post("/api/classes/active", key: fixture.student.key, json: ["class_id": .string(fixture.classID)])
            #expect(active.status == 200, "\(active.text)")
            #expect(try await fixture.chat("hello there").status == 200)
            let refused = try await fixture.chat("hello there")
            #expect(refused.status == 429)
            #expect(refused.errorMessage?.hasPrefix("you have used 5 tokens today; the daily budget of your class 'Biology 101'") == true)
            await gateway.gateway.usageMeter.flush()
            let chartAfter = try await fixture.call(.GET, "\(biology)/members/\(fixture.student.user.id)/usage", key: fixture.instructor.key)
            #expect(chartAfter.json?["data"]?.arrayValue?.first?["input_tokens"] == 2)
            #expect(chartAfter.json?["data"]?.arrayValue?.first?["output_tokens"] == 3)
        }
    }

    // MARK: Class state

    @Test func closingAClassOrPassingItsEndStopsItsStudentsAtOnce() async throws {
        let clock = TestClock()
        try await Self.withClass(clock: clock) { fixture in
            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            #expect(try await fixture.chat().status == 200)
            let closed = try await fixture.post("/api/classes/\(fixture.classID)/close", [:], key: fixture.instructor.key)
            #expect(closed.status == 200)
            #expect(closed.json?["is_active"] == false)

            let api = try await fixture.chat()
            #expect(api.status == 403)
            #expect(api.errorMessage == "your class 'Biology 101' is closed")
            let page = try await fixture.send(conversation, "hi")
            #expect(page.status == 403)
            #expect(page.errorMessage == "your class 'Biology 101' is closed")
            let mine = try await fixture.call(.GET, "/api/classes/mine", key: fixture.student.key)
            #expect(mine.json?["applied_class_id"] == .string(fixture.classID))
            #expect(mine.json?["data"]?.arrayValue?.first?["is_active"] == false)

            #expect(try await fixture.post("/api/classes/\(fixture.classID)/open", [:], key: fixture.instructor.key).status == 200)
            #expect(try await fixture.chat().status == 200)

            let ends = ISO8601DateFormatter().string(from: clock.now.addingTimeInterval(60))
            let patched = try await fixture.call(.PATCH, "/api/classes/\(fixture.classID)", key: fixture.instructor.key, ["ends_at": .string(ends)])
            #expect(patched.status == 200, "\(patched.text)")
            #expect(try await fixture.chat().status == 200)
            clock.advance(seconds: 61)
            #expect(try await fixture.chat().status == 403)
        }
    }

    // MARK: The class API

    @Test func permissionMatrixOfTheClassEndpoints() async throws {
        try await Self.withClass(policy: ["transcript_visibility": "full"]) { fixture in
            let gateway = fixture.gateway
            let matrix = try await PermissionMatrix(fixture)
            let (other, admin, student) = (matrix.otherInstructor, matrix.admin, fixture.student)
            let conversation = try #require(try await fixture.conversation().json?["id"]?.stringValue)
            try await fixture.sendAndWait(conversation, "my homework")

            let ownerOnly: [PermissionMatrix.Caller: Int] = [.student: 403, .owner: 200, .otherInstructor: 404, .admin: 200, .anonymous: 401]
            let c = "/api/classes/\(fixture.classID)"
            let member = "\(c)/members/\(student.user.id)"

            try await matrix.check(.GET, "/api/classes", nil, [.student: 403, .owner: 200, .otherInstructor: 200, .admin: 200, .anonymous: 401])
            #expect(try await fixture.call(.GET, "/api/classes", key: other.key).json?["data"] == [])
            #expect(try await fixture.call(.GET, "/api/classes", key: admin.key).json?["data"]?.arrayValue?.count == 1)
            try await matrix.check(.POST, "/api/classes", ["name": "Another"], [.student: 403, .owner: 201, .otherInstructor: 201, .admin: 201, .anonymous: 401])
            try await matrix.check(.GET, c, nil, ownerOnly)
            try await matrix.check(.PATCH, c, ["name": "Biology 101"], ownerOnly)
            try await matrix.check(.POST, "\(c)/code", nil, ownerOnly)
            try await matrix.check(.POST, "\(c)/close", nil, ownerOnly)
            try await matrix.check(.POST, "\(c)/open", nil, ownerOnly)
            try await matrix.check(.GET, "\(c)/members", nil, ownerOnly)
            try await matrix.check(.GET, "\(member)/usage", nil, ownerOnly)
            try await matrix.check(.GET, "\(member)/conversations", nil, ownerOnly)
            try await matrix.check(.GET, "\(member)/conversations/\(conversation)", nil, ownerOnly)

            // What the owner sees (usage as written: the meter writes once a second).
            await gateway.gateway.usageMeter.flush()
            let roster = try await fixture.call(.GET, "\(c)/members", key: fixture.instructor.key)
            let row = try #require(roster.json?["data"]?.arrayValue?.first)
            #expect(row["username"] == "sam")
            #expect(row["requests"] == 1)
            #expect(row["tokens"]?.intValue == 2 + 3)
            #expect(row["last_active_day"]?.stringValue?.count == 10)
            let transcript = try await fixture.call(.GET, "\(member)/conversations/\(conversation)", key: fixture.instructor.key)
            #expect(transcript.json?["messages"]?.arrayValue?.first?["text"] == "my homework")
            // Someone who is not a member is not found, even for the owner.
            let stranger = try await fixture.call(.GET, "\(c)/members/\(other.user.id)/usage", key: fixture.instructor.key)
            #expect(stranger.status == 404)
            #expect(stranger.errorMessage == "no such member")

            // Every usage and transcript view is in the audit log, with who looked.
            let audit = try await gateway.storage.audit.list(limit: 100, before: nil)
            for action in ["class.usage.view", "class.member.usage.view", "class.transcript.list", "class.transcript.view"] {
                #expect(Set(audit.filter { $0.action == action }.map(\.actorID)) == [fixture.instructor.user.id, admin.user.id], "\(action)")
            }

            // Students' own endpoints.
            let mine = try await fixture.call(.GET, "/api/classes/mine", key: student.key)
            #expect(mine.status == 200)
            #expect(mine.json?["data"]?.arrayValue?.first?["name"] == "Biology 101")
            #expect(mine.json?["data"]?.arrayValue?.first?["join_code"] == nil)
            #expect(mine.json?["data"]?.arrayValue?.first?["policy"]?["transcript_visibility"] == "full")
            #expect(try await fixture.call(.GET, "/api/classes/mine", key: nil).status == 401)
            let code = try #require(try await fixture.call(.GET, c, key: fixture.instructor.key).json?["join_code"]?.stringValue)
            #expect(try await fixture.call(.POST, "/api/classes/join", key: student.key, ["code": .string(code)]).status == 200)
            let staffJoin = try await fixture.call(.POST, "/api/classes/join", key: other.key, ["code": .string(code)])
            #expect(staffJoin.status == 403)
            #expect(staffJoin.errorMessage == "only students join classes")
            #expect(try await fixture.call(.POST, "/api/classes/join", key: nil, ["code": .string(code)]).status == 401)
            let wrongCode = try await fixture.call(.POST, "/api/classes/join", key: student.key, ["code": "NOPE"])
            #expect(wrongCode.status == 404)
            #expect(wrongCode.errorMessage == "no class has the join code 'NOPE'")
            #expect(try await fixture.call(.POST, "/api/classes/active", key: student.key, ["class_id": .string(fixture.classID)]).status == 200)
            let otherClass = try #require(try await fixture.call(.GET, "/api/classes", key: other.key).json?["data"]?.arrayValue?.first?["id"])
            let notMine = try await fixture.call(.POST, "/api/classes/active", key: student.key, ["class_id": otherClass])
            #expect(notMine.status == 404)
            #expect(try await fixture.call(.POST, "/api/classes/active", key: nil, ["class_id": otherClass]).status == 401)

            // Self sign-up with the code: a student account, logged in, in the class.
            let signUp = try await fixture.call(.POST, "/api/join", key: nil, ["code": .string(code), "username": "nina", "password": "a long password"])
            #expect(signUp.status == 201, "\(signUp.text)")
            #expect(signUp.json?["user"]?["role"] == "student")
            #expect(signUp.json?["class"]?["name"] == "Biology 101")
            #expect(signUp.headers.first(name: "Set-Cookie")?.hasPrefix("gseai_session=") == true)
            let nina = try #require(try await gateway.storage.users.find(username: "nina"))
            #expect(try await gateway.storage.classes.isMember(classID: fixture.classID, userID: nina.id))
            let taken = try await fixture.call(.POST, "/api/join", key: nil, ["code": .string(code), "username": "nina", "password": "a long password"])
            #expect(taken.status == 409)

            // Removing a member, then deleting the class: owner (or admin) only.
            try await matrix.check(.DELETE, member, nil, [.student: 403, .otherInstructor: 404, .anonymous: 401, .owner: 204])
            #expect(try await gateway.storage.classes.isMember(classID: fixture.classID, userID: student.user.id) == false)
            try await matrix.check(.DELETE, c, nil, [.student: 403, .otherInstructor: 404, .anonymous: 401, .admin: 204])
            #expect(try await gateway.storage.classes.find(id: fixture.classID) == nil)
            // A closed class takes no sign-ups.
        }
    }

    @Test func transcriptsAndUsageFollowTheClassVisibility() async throws {
        try await Self.withClass(policy: ["transcript_visibility": "usage"]) { fixture in
            let c = "/api/classes/\(fixture.classID)"
            let member = "\(c)/members/\(fixture.student.user.id)"
            let transcripts = try await fixture.call(.GET, "\(member)/conversations", key: fixture.instructor.key)
            #expect(transcripts.status == 403)
            #expect(transcripts.errorMessage == "the class 'Biology 101' does not share its students' transcripts")
            #expect(try await fixture.call(.GET, "\(member)/usage", key: fixture.instructor.key).status == 200)

            let off = try await fixture.call(.PATCH, c, key: fixture.instructor.key, ["policy": ["transcript_visibility": "off"]])
            #expect(off.json?["policy"]?["transcript_visibility"] == "off")
            #expect(try await fixture.call(.GET, "\(member)/usage", key: fixture.instructor.key).status == 403)
            let roster = try await fixture.call(.GET, "\(c)/members", key: fixture.instructor.key)
            #expect(roster.json?["data"]?.arrayValue?.first?["username"] == "sam")
            #expect(roster.json?["data"]?.arrayValue?.first?["tokens"] == nil)
            #expect(roster.json?["daily"] == nil)
            let audit = try await fixture.gateway.storage.audit.list(limit: 100, before: nil)
            #expect(audit.filter { $0.action == "class.usage.view" }.isEmpty)
        }
    }

    @Test func classUpdatesAreValidatedAndClosedClassesTakeNoNewStudents() async throws {
        try await Self.withClass { fixture in
            let c = "/api/classes/\(fixture.classID)"
            let key = fixture.instructor.key
            let patched = try await fixture.call(.PATCH, c, key: key, ["policy": ["max_output_tokens": 100, "allowed_models": ["stub/echo-text"]]])
            #expect(patched.json?["policy"]?["max_output_tokens"] == 100)
            let cleared = try await fixture.call(.PATCH, c, key: key, ["policy": ["max_output_tokens": nil]])
            #expect(cleared.json?["policy"]?["max_output_tokens"] == nil)
            #expect(cleared.json?["policy"]?["allowed_models"] == ["stub/echo-text"])
            let bad = try await fixture.call(.PATCH, c, key: key, ["policy": ["requests_per_minute": 0]])
            #expect(bad.status == 400)
            #expect(try await fixture.call(.PATCH, c, key: key, ["policy": ["colour": "red"]]).status == 400)
            let visibility = try await fixture.call(.PATCH, c, key: key, ["policy": ["transcript_visibility": "public"]])
            #expect(visibility.status == 400)
            #expect(visibility.errorMessage?.contains("transcript_visibility") == true, "\(visibility.text)")
            let backwards = try await fixture.call(.PATCH, c, key: key, ["starts_at": "2026-09-02T00:00:00Z", "ends_at": "2026-09-01T00:00:00Z"])
            #expect(backwards.status == 400)
            #expect(backwards.errorMessage == "a class must end after it starts")

            let old = fixture.code
            let regenerated = try await fixture.call(.POST, "\(c)/code", key: key)
            #expect(regenerated.json?["join_code"]?.stringValue != old)
            #expect(try await fixture.call(.POST, "/api/join", key: nil, ["code": .string(old), "username": "late", "password": "a long password"]).status == 404)
            let code = try #require(regenerated.json?["join_code"]?.stringValue)
            _ = try await fixture.call(.POST, "\(c)/close", key: key)
            let closed = try await fixture.call(.POST, "/api/join", key: nil, ["code": .string(code), "username": "late", "password": "a long password"])
            #expect(closed.status == 403)
            #expect(closed.errorMessage == "the class 'Biology 101' is closed")
            #expect(try await fixture.gateway.storage.users.find(username: "late") == nil)
        }
    }
}

@Suite("Classes: transcript images")
struct TranscriptImageTests {
    @Test(arguments: [("full", 200), ("usage", 404), ("off", 404)])
    func theInstructorSeesAStudentsImagesOnlyWhenTranscriptsAreVisible(_ visibility: String, _ expected: Int) async throws {
        try await ClassPolicyTests.withClass(policy: ["transcript_visibility": .string(visibility)]) { fixture in
            let gateway = fixture.gateway
            // The PNG's bytes are not valid UTF-8 text, so upload them raw through the client core.
            let client = try gateway.client(key: fixture.student.key)
            var request = RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(data: Data(base64Encoded: tinyPNGBase64)!)))
            request.headers.add(name: "Content-Type", value: "image/png")
            let response = try await client.send(request)
            let image = try #require(try JSONValue(parsing: try await response.body.collect(upTo: 1 << 20).readableBytesView)["id"]?.stringValue)
            try await client.shutdown()
            // Uploaded but not sent: in no transcript, so no instructor sees it.
            #expect(try await fixture.call(.GET, "/api/images/\(image)", key: fixture.instructor.key).status == 404)
            // Sent in a conversation of the class: its transcript shows it.
            let conversation = try #require(try await fixture.conversation(model: "stub/echo-vl").json?["id"]?.stringValue)
            #expect(try await fixture.send(conversation, "look", images: [image]).status == 202)

            let seen = try await fixture.call(.GET, "/api/images/\(image)", key: fixture.instructor.key)
            #expect(seen.status == expected)
            let audited = try await gateway.storage.audit.list(limit: 50, before: nil).filter { $0.action == "class.member.image.view" }
            #expect(audited.count == (expected == 200 ? 1 : 0))
            // Another instructor, and another student, never.
            let other = try await gateway.user("olga", role: .instructor)
            #expect(try await fixture.call(.GET, "/api/images/\(image)", key: other.key).status == 404)
            let peer = try await gateway.user("pat")
            #expect(try await fixture.call(.GET, "/api/images/\(image)", key: peer.key).status == 404)
            // An admin may, when the class shows transcripts.
            let admin = try await gateway.user("ada", role: .admin)
            #expect(try await fixture.call(.GET, "/api/images/\(image)", key: admin.key).status == expected)
        }
    }

    @Test func anImageSentOutsideTheClassStaysPrivate() async throws {
        try await ClassPolicyTests.withClass(policy: ["transcript_visibility": "full"]) { fixture in
            let gateway = fixture.gateway
            // A conversation the student started before joining belongs to no class.
            let pat = try await gateway.user("pat")
            let personal = try #require(try await fixture.post("/api/conversations", ["model": "stub/echo-vl"], key: pat.key).json?["id"]?.stringValue)
            let client = try gateway.client(key: pat.key)
            var request = RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(data: Data(base64Encoded: tinyPNGBase64)!)))
            request.headers.add(name: "Content-Type", value: "image/png")
            let response = try await client.send(request)
            let image = try #require(try JSONValue(parsing: try await response.body.collect(upTo: 1 << 20).readableBytesView)["id"]?.stringValue)
            try await client.shutdown()
            #expect(try await fixture.send(personal, "private", images: [image]).status == 404)  // not the fixture student's
            #expect(try await fixture.post("/api/conversations/\(personal)/messages",
                                           ["text": "private", "image_ids": [.string(image)]], key: pat.key).status == 202)
            // Pat then joins the class: the image is still in no conversation of it.
            #expect(try await fixture.post("/api/classes/join", ["code": .string(fixture.code)], key: pat.key).status == 200)
            let refused = try await fixture.call(.GET, "/api/images/\(image)", key: fixture.instructor.key)
            #expect(refused.status == 404)
            #expect(refused.errorMessage == "no such image")
            #expect(try await gateway.storage.audit.list(limit: 50, before: nil).filter { $0.action == "class.member.image.view" }.isEmpty)
        }
    }
}
