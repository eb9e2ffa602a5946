import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import Synchronization
import Testing

@testable import GSEAIGateway

/// The model servers' slots shared fairly, through the gateway: stubs that run a limited number of
/// generations at once, each taking a fixed service time, behind one gateway or a pool.
@Suite("Gateway: upstream pool and fair queue")
struct FairQueueTests {
    static func chat(_ text: String, model: String = "stub/echo-text", stream: Bool = false) -> JSONValue {
        ["model": .string(model), "stream": .bool(stream), "messages": [["role": "user", "content": .string(text)]]]
    }

    /// The texts of the chat requests the stub received, in the order it received them.
    static func served(_ stub: StubUpstream) async -> [String] {
        await stub.state.requests(to: "POST /v1/chat/completions").compactMap {
            $0.body?["messages"]?.arrayValue?.last?["content"]?.stringValue
        }
    }

    @Test func aFloodDoesNotPushAnotherStudentsRequestBehindIt() async throws {
        // Behind the flood first-come-first-served, the polite request would wait four service times (4 s).
        try await GatewayHarness.with(stubSlots: 2, serviceTime: .milliseconds(1000)) { gateway in
            let (_, flood) = try await gateway.user("flood")
            let (_, polite) = try await gateway.user("polite")
            let scheduler = gateway.gateway.pool.scheduler
            let floods = (0..<8).map { index in
                Task { try await gateway.post("/v1/chat/completions", key: flood, json: Self.chat("flood \(index)")) }
            }
            // Two run (the flooder's cap), six wait.
            try await eventually { scheduler.waitingCounts().total == 6 }
            let started = ContinuousClock.now
            let answer = try await gateway.post("/v1/chat/completions", key: polite, json: Self.chat("polite"))
            let took = ContinuousClock.now - started
            #expect(answer.status == 200)
            #expect(answer.json?["choices"]?.at(0)?["message"]?["content"] == "Echo: polite")
            // The first slot that freed was the polite student's: it reached the model server third (or fourth, when
            // the two flood requests ahead ended at the same moment and the flooder's next was quicker to arrive).
            let served = await Self.served(gateway.stub)
            #expect(served.prefix(4).contains("polite"), "\(served)")
            // So it waited at most one service time (with room for a busy machine).
            // (Room for a busy machine, and still well under the four service times of a first-come line.)
            #expect(took < .milliseconds(1000 + 2000), "\(took)")
            let waited = try #require(answer.headers.first(name: "X-Queue-Wait-Ms").flatMap { Int($0) })
            #expect(waited > 0 && waited < 3000)
            for flood in floods { #expect(try await flood.value.status == 200) }
            // The model server never ran more than its slots.
            #expect(await gateway.stub.load?.mostRunning == 2)
        }
    }

    /// An upstream with many slots gets as many answers at once: each holds a connection of its own while it
    /// runs. (The client's pool used to stop at 64 connections per server: the 65th request waited for one until
    /// the connect limit, then failed with 502.)
    @Test func anUpstreamWithManySlotsRunsThatManyAnswersAtOnce() async throws {
        // Each answer takes 5 s, so that all 90 overlap even when a busy machine is slow to send them; a request
        // waiting for a connection would fail after 2 s.
        try await GatewayHarness.with(stubSlots: 100, serviceTime: .seconds(5), configure: {
            $0.concurrencyPerUser = 200
            $0.connectTimeout = .seconds(2)
        }) { gateway in
            let (_, key) = try await gateway.user("many")
            let answers = try await withThrowingTaskGroup(of: (Int, HTTPResult).self) { group in
                for index in 0..<90 {
                    group.addTask { (index, try await gateway.post("/v1/chat/completions", key: key, json: Self.chat("many \(index)"))) }
                }
                return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            for (index, answer) in answers.sorted(by: { $0.key < $1.key }) {
                #expect(answer.status == 200, "\(index): \(answer.status) \(answer.text.prefix(200))")
                #expect(answer.json?["choices"]?.at(0)?["message"]?["content"]?.stringValue == "Echo: many \(index)")
            }
            #expect(answers.count == 90)
            // More than the old 64 ran at once on the model server (all 90, unless the machine was too slow to
            // send them within one answer's time).
            let most = await gateway.stub.load?.mostRunning ?? 0
            #expect(most > 64 && most <= 90, "\(most) at once")
        }
    }

    @Test func firstComeFirstServedIsThereForComparison() async throws {
        try await GatewayHarness.with(stubSlots: 2, serviceTime: .milliseconds(300), configure: { $0.queueDiscipline = .fifo }) { gateway in
            let (_, flood) = try await gateway.user("flood")
            let (_, polite) = try await gateway.user("polite")
            let floods = (0..<6).map { index in
                Task { try await gateway.post("/v1/chat/completions", key: flood, json: Self.chat("flood \(index)")) }
            }
            try await eventually { gateway.gateway.pool.scheduler.waitingCounts().total == 4 }
            #expect(try await gateway.post("/v1/chat/completions", key: polite, json: Self.chat("polite")).status == 200)
            // Behind the whole flood.
            #expect(await Self.served(gateway.stub).last == "polite")
            for flood in floods { _ = try await flood.value }
        }
    }

    @Test func aClassCapsItsStudentsRequestsInFlight() async throws {
        // The second request waits for the first's service time, less the time between their starts: 1.5 s leaves a
        // busy machine 1.3 s for that before the wait checked below (> 0.2 s) could come out shorter (with 0.5 s, it
        // once came out 0.176 s in a full run on two loaded cores).
        try await GatewayHarness.with(stubSlots: 4, serviceTime: .milliseconds(1500)) { gateway in
            let (_, teacher) = try await gateway.user("ines", role: .instructor)
            let (_, student) = try await gateway.user("sam")
            let created = try await gateway.post("/api/classes", key: teacher, json: ["name": "Bio", "policy": ["max_concurrent_requests": 1]])
            #expect(created.json?["policy"]?["max_concurrent_requests"] == 1)
            let code = try #require(created.json?["join_code"]?.stringValue)
            #expect(try await gateway.post("/api/classes/join", key: student, json: ["code": .string(code)]).status == 200)
            let scheduler = gateway.gateway.pool.scheduler
            let first = Task { try await gateway.post("/v1/chat/completions", key: student, json: Self.chat("one")) }
            try await eventually { scheduler.usage()["default"]?.busy == 1 }
            let second = Task { try await gateway.post("/v1/chat/completions", key: student, json: Self.chat("two")) }
            // Three slots are free, but the class allows one at a time: it waits.
            try await eventually { scheduler.waitingCounts().total == 1 }
            #expect(scheduler.usage()["default"]?.busy == 1)
            // The instructor is in no class: their request takes a free slot at once.
            #expect(try await gateway.post("/v1/chat/completions", key: teacher, json: Self.chat("staff")).status == 200)
            #expect(try await first.value.status == 200)
            #expect(try await second.value.status == 200)
            let queue = try await gateway.request(.GET, "/api/classes/\(try #require(created.json?["id"]?.stringValue))/queue",
                                                  headers: [("Authorization", "Bearer \(teacher)")])
            #expect(queue.status == 200)
            #expect(queue.json?["recent_waits"] == 2)
            #expect((queue.json?["wait_p95_seconds"]?.doubleValue ?? 0) > 0.2)
        }
    }

    @Test func queueLimitsAnswer429And503WithRetryAfterOnEverySurface() async throws {
        // Long enough a wait that the second request comes while the first waits, even on a busy machine.
        let limits = FairScheduler.Limits(maxWaiting: 100, maxWaitingPerUser: 1, maxWait: .milliseconds(2000))
        try await GatewayHarness.with(stubSlots: 1, serviceTime: .seconds(30), configure: { $0.queueLimits = limits; $0.upstreamSlots = 1 }) { gateway in
            let (_, holder) = try await gateway.user("holder")
            let (_, waiter) = try await gateway.user("waiter")
            let scheduler = gateway.gateway.pool.scheduler
            // One request holds the only slot for the whole test.
            let holding = Task { try? await gateway.post("/v1/chat/completions", key: holder, json: Self.chat("hold")) }
            try await eventually { scheduler.usage()["default"]?.busy == 1 }
            let bodies: [(String, JSONValue)] = [
                ("/v1/chat/completions", Self.chat("x")),
                ("/api/v1/chat", ["model": "stub/echo-text", "input": "x"]),
                ("/v1/responses", ["model": "stub/echo-text", "input": "x"]),
                ("/v1/messages", ["model": "stub/echo-text", "max_tokens": 5, "messages": [["role": "user", "content": "x"]]]),
            ]
            for (path, body) in bodies {
                // The first waits; a second of the same user is one too many.
                let first = Task { try await gateway.post(path, key: waiter, json: body) }
                try await eventually { scheduler.waitingCounts().total == 1 }
                for stream in [false, true] {
                    var second = body
                    if case .object(var members) = body { members["stream"] = .bool(stream); second = .object(members) }
                    let refused = try await gateway.post(path, key: waiter, json: second)
                    #expect(refused.status == 429, "\(path) stream \(stream)")
                    #expect(refused.headers.first(name: "Retry-After") == "10")
                    let message = "you have 1 requests waiting for the model already (at most 1); wait for them to be answered"
                    if path == "/v1/messages" {
                        #expect(refused.json == ["type": "error", "error": ["type": "rate_limit_error", "message": .string(message)]])
                    } else {
                        #expect(refused.json?["error"]?["message"] == .string(message))
                        #expect(refused.json?["error"]?["type"] == "rate_limit_error")
                    }
                }
                // The first waits the longest allowed, then is told to come back.
                let waited = try await first.value
                #expect(waited.status == 503, "\(path)")
                #expect(waited.headers.first(name: "Retry-After") == "60")
                #expect(waited.errorMessage?.hasPrefix("no model server was free for") == true || waited.json?["error"]?["message"]?.stringValue?.hasPrefix("no model server was free") == true)
            }
            holding.cancel()
        }
    }

    @Test func aWaitingStreamHearsItsPlaceInLineAndAWholeAnswerHowLongItWaited() async throws {
        // The holder's answer takes long enough that the waiter's request comes while it runs, even on a busy
        // machine (700 ms was once too short in the whole suite).
        try await GatewayHarness.with(stubSlots: 1, serviceTime: .milliseconds(2000), configure: { $0.upstreamSlots = 1 }) { gateway in
            let (_, holder) = try await gateway.user("holder")
            let (_, waiter) = try await gateway.user("waiter")
            let holding = Task { try await gateway.post("/v1/chat/completions", key: holder, json: Self.chat("hold")) }
            try await eventually { gateway.gateway.pool.scheduler.usage()["default"]?.busy == 1 }
            let streamed = try await gateway.post("/v1/chat/completions", key: waiter, json: Self.chat("in line", stream: true))
            #expect(streamed.status == 200)
            #expect(streamed.headers.first(name: "Content-Type") == "text/event-stream")
            // The place in line first, as a comment every SSE client skips; then the answer.
            #expect(streamed.text.hasPrefix(": queued 0\n\n"), "\(streamed.text.prefix(80))")
            #expect(streamed.events.compactMap { try? JSONValue(parsing: Array($0.data.utf8))["choices"]?.at(0)?["delta"]?["content"]?.stringValue }
                .joined() == "Echo: in line")
            #expect(streamed.events.last?.data == "[DONE]")
            #expect(try await holding.value.headers.first(name: "X-Queue-Wait-Ms") == "0")
            // The client core ignores the comment.
            let holding2 = Task { try await gateway.post("/v1/chat/completions", key: holder, json: Self.chat("hold")) }
            try await eventually { gateway.gateway.pool.scheduler.usage()["default"]?.busy == 1 }
            let text = try await gateway.withClient(key: waiter) { client in
                var text = ""
                for try await chunk in try await client.chatCompletionsStream(ChatCompletionRequest(model: "stub/echo-text",
                                                                                                    messages: [ChatMessage(role: "user", content: "again")])) {
                    text += chunk.delta ?? ""
                }
                return text
            }
            #expect(text == "Echo: again")
            _ = try await holding2.value
        }
    }

    @Test func theChatPagesAnswerWaitsInTheSameLineAndSaysSo() async throws {
        // The holder's answer takes long enough that the student's comes while it runs, even on a busy machine.
        try await GatewayHarness.with(stubSlots: 1, serviceTime: .milliseconds(2500), configure: { $0.upstreamSlots = 1 }) { gateway in
            let (_, holder) = try await gateway.user("holder")
            let (_, student) = try await gateway.user("sam")
            let holding = Task { try await gateway.post("/v1/chat/completions", key: holder, json: Self.chat("hold")) }
            try await eventually { gateway.gateway.pool.scheduler.usage()["default"]?.busy == 1 }
            let conversation = try #require(try await gateway.post("/api/conversations", key: student, json: ["model": "stub/echo-text"])
                .json?["id"]?.stringValue)
            let sent = try await gateway.post("/api/conversations/\(conversation)/messages", key: student, json: ["text": "hello"])
            let message = try #require(sent.json?["assistant_message"]?["id"]?.stringValue)
            let events = try await gateway.request(.GET, "/api/conversations/\(conversation)/messages/\(message)/events",
                                                   headers: [("Authorization", "Bearer \(student)")]).events
            #expect(events.first?.event == "queued")
            #expect(events.first?.data == #"{"ahead":0}"#)
            // Its turn came: said before the first piece of the answer.
            let started = try #require(events.firstIndex { $0.event == "started" })
            #expect(started < (events.firstIndex { $0.event == "delta" } ?? 0))
            #expect(events.last?.event == "end")
            #expect(events.filter { $0.event == "delta" }.compactMap { try? JSONValue(parsing: Array($0.data.utf8))["text"]?.stringValue }
                .joined() == "Echo: hello")
            _ = try await holding.value
        }
    }

    @Test func theChatPageIsRefusedWithAStatusWhenItsUserWaitsTooMuch() async throws {
        let limits = FairScheduler.Limits(maxWaiting: 100, maxWaitingPerUser: 1, maxWait: .seconds(30))
        // The holder's answer lasts long enough for both messages to come while it runs, even on a busy machine.
        try await GatewayHarness.with(stubSlots: 1, serviceTime: .seconds(5), configure: { $0.queueLimits = limits; $0.upstreamSlots = 1 }) { gateway in
            let (_, holder) = try await gateway.user("holder")
            let (_, student) = try await gateway.user("sam")
            let holding = Task { try await gateway.post("/v1/chat/completions", key: holder, json: Self.chat("hold")) }
            try await eventually { gateway.gateway.pool.scheduler.usage()["default"]?.busy == 1 }
            var conversations: [String] = []
            for _ in 0..<2 {
                conversations.append(try #require(try await gateway.post("/api/conversations", key: student, json: ["model": "stub/echo-text"])
                    .json?["id"]?.stringValue))
            }
            #expect(try await gateway.post("/api/conversations/\(conversations[0])/messages", key: student, json: ["text": "one"]).status == 202)
            try await eventually { gateway.gateway.pool.scheduler.waitingCounts().total == 1 }
            let refused = try await gateway.post("/api/conversations/\(conversations[1])/messages", key: student, json: ["text": "two"])
            #expect(refused.status == 429)
            #expect(refused.headers.first(name: "Retry-After") == "10")
            #expect(refused.errorMessage == "you have 1 requests waiting for the model already (at most 1); wait for them to be answered")
            // Nothing was stored for the refused message.
            let detail = try await gateway.request(.GET, "/api/conversations/\(conversations[1])", headers: [("Authorization", "Bearer \(student)")])
            #expect(detail.json?["messages"] == [])
            _ = try await holding.value
        }
    }

    // MARK: A pool

    @Test func aModelOnlyOneUpstreamServesGoesThereAndListsAreTheUnion() async throws {
        try await GatewayHarness.with(stubs: [.init(models: [StubModels.text]), .init(models: [StubModels.vision, StubModels.text])]) { gateway in
            await gateway.gateway.pool.refreshAll()
            let (_, key) = try await gateway.user("alice")
            for _ in 0..<3 {
                let answer = try await gateway.post("/v1/chat/completions", key: key, json: Self.chat("look", model: StubModels.vision))
                #expect(answer.status == 200, "\(answer.text)")
            }
            #expect(await gateway.stubs[0].state.requests(to: "POST /v1/chat/completions").isEmpty)
            #expect(await gateway.stubs[1].state.requests(to: "POST /v1/chat/completions").count == 3)
            // The model lists of every surface are the union, each model once.
            let openAI = try await gateway.request(.GET, "/v1/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(openAI.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue }.sorted() == [StubModels.vision, StubModels.text].sorted())
            let native = try await gateway.request(.GET, "/api/v1/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(native.json?["models"]?.arrayValue?.compactMap { $0["key"]?.stringValue }.sorted() == [StubModels.vision, StubModels.text].sorted())
            let page = try await gateway.request(.GET, "/api/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(page.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue }.sorted() == [StubModels.vision, StubModels.text].sorted())
            // Administrators see each upstream, never its token.
            let (_, admin) = try await gateway.user("ada", role: .admin)
            let upstreams = try await gateway.request(.GET, "/api/admin/upstreams", headers: [("Authorization", "Bearer \(admin)")])
            #expect(upstreams.json?["data"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["up1", "up2"])
            #expect(upstreams.json?["data"]?.at(0)?["models"] == [.string(StubModels.text)])
            #expect(upstreams.json?["data"]?.at(1)?["slots"] == 4)
            #expect(upstreams.text.contains(gateway.stub.token) == false)
            #expect(try await gateway.request(.GET, "/api/admin/upstreams", headers: [("Authorization", "Bearer \(key)")]).status == 403)
        }
    }

    @Test func anUpstreamThatStopsLosesNoRequestThatHadNotStarted() async throws {
        // Long enough answers that all six are seen in flight, even on a busy machine.
        let stubs: [GatewayHarness.StubSpec] = [.init(slots: 1, serviceTime: .milliseconds(1500)), .init(slots: 1, serviceTime: .milliseconds(1500))]
        try await GatewayHarness.with(stubs: stubs) { gateway in
            await gateway.gateway.pool.refreshAll()
            let keys = try await (0..<6).asyncMap { try await gateway.user("user\($0)").key }
            let answers = keys.enumerated().map { index, key in
                Task { try await gateway.post("/v1/chat/completions", key: key, json: Self.chat("request \(index)")) }
            }
            try await eventually { gateway.gateway.pool.scheduler.waitingCounts().total == 4 }
            // The first model server stops taking requests; what it runs now it finishes.
            await gateway.stubs[0].stop()
            for answer in answers {
                let result = try await answer.value
                #expect(result.status == 200, "\(result.text)")
                #expect(result.json?["choices"]?.at(0)?["message"]?["content"]?.stringValue?.hasPrefix("Echo: request") == true)
            }
            let status = gateway.gateway.pool.upstreams[0].status
            #expect(status.up == false)
            #expect(await gateway.stubs[1].state.requests(to: "POST /v1/chat/completions").count >= 4)
        }
    }

    @Test func aStreamThatStartedGetsTheInStreamErrorAndNothingIsRetried() async throws {
        try await GatewayHarness.with(stubs: [.init(), .init()]) { gateway in
            let (_, key) = try await gateway.user("alice")
            let result = try await gateway.post("/v1/chat/completions", key: key, json: Self.chat("broken [[drop]]", stream: true))
            #expect(result.status == 200)
            #expect(result.events.last?.data.contains("the model server's answer broke off") == true)
            let total = await gateway.stubs[0].state.requests(to: "POST /v1/chat/completions").count
                + gateway.stubs[1].state.requests(to: "POST /v1/chat/completions").count
            #expect(total == 1)
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var values: [T] = []
        for element in self { values.append(try await transform(element)) }
        return values
    }
}

extension JSONValue {
    /// The item at `index` of an array, or `nil`.
    func at(_ index: Int) -> JSONValue? {
        guard let items = arrayValue, items.indices.contains(index) else { return nil }
        return items[index]
    }
}
