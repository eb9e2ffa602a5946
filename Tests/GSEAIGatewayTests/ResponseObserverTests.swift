import GSEAI
import NIOCore
import Testing

@testable import GSEAIGateway

/// What the proxy notices in an answer going by.
@Suite struct ResponseObserverTests {
    func endpoint(_ path: String) throws -> ProxyEndpoint {
        try #require(ProxyEndpoint.all.first { $0.path == path && $0.method == .post })
    }

    @Test func theByteSearchFindsANeedleAnywhereAndOnlyWhereItIs() {
        #expect(ASCII.contains("\"usage\":{}", "\"usage\""))
        #expect(ASCII.contains("{\"a\":1,\"usage\"", "\"usage\""))
        #expect(ASCII.contains("xx\"usa\"usage\"", "\"usage\""))
        #expect(!ASCII.contains("\"usag", "\"usage\""))
        #expect(!ASCII.contains("", "\"usage\""))
        #expect(!ASCII.contains("\"Usage\" \"usage \"", "\"usage\""))
        #expect(ASCII.contains("é\"type\"", "\"type\""))
        #expect(ASCII.contains("{\"done\":true}", ASCII.Pattern(Array("\"done\":true".utf8))))
        #expect(!ASCII.contains("{\"done\":false}", ASCII.Pattern(Array("\"done\":true".utf8))))
        // An empty pattern is found nowhere (and making it does not trap).
        #expect(!ASCII.contains("abc", ""))
        // The search starts from the rarest byte, chosen when the pattern is made: the g of "usage".
        #expect(ASCII.Pattern("\"usage\"").anchor == 4)
    }

    /// The search starts from the pattern's rarest byte, wherever it is in the pattern: it must agree with a
    /// plain search for patterns anchored at their start, middle and end, near both ends of the text.
    @Test func theByteSearchAgreesWithAPlainSearch() {
        func plain(_ text: [UInt8], _ pattern: [UInt8]) -> Bool {
            guard text.count >= pattern.count else { return false }
            return (0...(text.count - pattern.count)).contains { Array(text[$0..<($0 + pattern.count)]) == pattern }
        }
        var generator = SeededGenerator(seed: 15)
        let alphabet = Array("\"usagetypz:1 ".utf8)
        let patterns = ["\"usage\"", "\"type\"", "z", "\"done\":true", "zu", "uz", "a\"z"].map { Array($0.utf8) }
        for _ in 0..<4000 {
            let length = Int(generator.next() % 24)
            let text = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            for pattern in patterns {
                let string = String(decoding: text, as: UTF8.self)
                #expect(ASCII.contains(string, ASCII.Pattern(pattern)) == plain(text, pattern), "\(string) \(String(decoding: pattern, as: UTF8.self))")
            }
        }
    }

    @Test func aFinalEventWithoutItsBlankLineStillEndsTheStream() throws {
        for (path, last) in [("/v1/chat/completions", "data: [DONE]\n"),
                             ("/v1/messages", "event: message_stop\ndata: {\"type\":\"message_stop\"}\n"),
                             ("/api/v1/chat", "event: chat.end\ndata: {\"type\":\"chat.end\",\"result\":{\"stats\":{\"input_tokens\":3,\"total_output_tokens\":4}}}")] {
            var observer = ResponseObserver(endpoint: try endpoint(path))
            observer.observe(streamPiece: ByteBuffer(string: "data: {\"choices\":[]}\n\n"))
            observer.observe(streamPiece: ByteBuffer(string: last))
            #expect(!observer.sawFinalEvent, "\(path): the last event is not complete yet")
            observer.finishStream()
            #expect(observer.sawFinalEvent, "\(path)")
            if path == "/api/v1/chat" {
                #expect(observer.inputTokens == 3 && observer.outputTokens == 4)
            }
        }
    }

    /// A successful whole answer is parsed for the members the observer reads only
    /// (`ResponseObserver.wholeAnswerMembers`): it must see there what it sees in the whole answer, on every shape.
    @Test(arguments: [
        ("/api/v1/chat", #"{"model_instance_id":"m","output":[{"type":"message","content":"Hi"}],"stats":{"input_tokens":3,"total_output_tokens":9},"response_id":"resp_lm1"}"#),
        ("/v1/chat/completions", #"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\""}}],"usage":{"prompt_tokens":7,"completion_tokens":8,"total_tokens":15}}"#),
        ("/v1/responses", #"{"id":"resp_9","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":4,"output_tokens":2}}"#),
        ("/v1/messages", #"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":5,"output_tokens":6}}"#),
        ("/llamacpp/completion", #"{"content":"Hi","tokens_predicted":11,"tokens_evaluated":12,"stop":true}"#),
        ("/v1/responses", #"{"response":{"object":"response","id":"resp_10","usage":{"input_tokens":1,"output_tokens":1}},"result":{"response_id":"resp_11","stats":{"input_tokens":2}}}"#),
        ("/v1/chat/completions", #"{"usage":null,"choices":[]}"#),
    ])
    func aWholeAnswerReadForItsUsageOnlyIsSeenAsAWholeParse(_ path: String, _ text: String) throws {
        let endpoint = try endpoint(path)
        var whole = ResponseObserver(endpoint: endpoint), kept = ResponseObserver(endpoint: endpoint)
        whole.observe(json: try JSONValue(parsing: Array(text.utf8)))
        kept.observe(json: try JSONValue(parsing: Array(text.utf8), keeping: ResponseObserver.wholeAnswerMembers))
        #expect(kept.responseIDs == whole.responseIDs)
        #expect(kept.inputTokens == whole.inputTokens && kept.outputTokens == whole.outputTokens)
        #expect(whole.inputTokens + whole.outputTokens > 0 || whole.responseIDs.isEmpty == false || text.contains("null"))
    }

    /// Where an answer holds usage in several shapes at once, the later in this order wins: a nested `result`,
    /// `stats`, `tokens_predicted` and `tokens_evaluated`, then `usage` (`prompt_tokens`/`completion_tokens`,
    /// else `input_tokens`/`output_tokens`); ids in the order found, each once.
    @Test(arguments: [
        (#"{"result":{"stats":{"input_tokens":1,"total_output_tokens":2},"response_id":"resp_a"},"stats":{"input_tokens":3},"tokens_predicted":5,"tokens_evaluated":6,"usage":{"prompt_tokens":7,"output_tokens":8},"response_id":"resp_b"}"#,
         7, 8, ["resp_a", "resp_b"]),
        (#"{"usage":{"completion_tokens":9,"input_tokens":4,"prompt_tokens":"x"},"stats":{"input_tokens":1,"total_output_tokens":2}}"#, 4, 9, []),
        (#"{"stats":{"input_tokens":3,"total_output_tokens":4.5},"response_id":"resp_c","result":{"response_id":"resp_c"}}"#, 3, 0, ["resp_c"]),
        (#"{"response":{"object":"response","id":"resp_d","usage":{"input_tokens":2,"output_tokens":3}},"usage":null,"tokens_predicted":4}"#,
         2, 4, ["resp_d"]),
        (#"["usage",{"prompt_tokens":1}]"#, 0, 0, []),
    ])
    func usageFoundInSeveralShapesTakesTheLastInItsOrder(_ text: String, _ input: Int, _ output: Int, _ ids: [String]) throws {
        var observer = ResponseObserver(endpoint: try endpoint("/v1/responses"))
        observer.observe(json: try JSONValue(parsing: Array(text.utf8)))
        #expect(observer.inputTokens == input)
        #expect(observer.outputTokens == output)
        #expect(observer.responseIDs == ids)
    }

    /// A stream's events are made only when the observer may learn something from them (the parser's filter, on their
    /// bytes): over random streams of every surface, with names, markers and usage where they count and where they do
    /// not, the observer sees exactly what it sees when every event is made and read.
    @Test func theEventsLeftUnmadeAreThoseTheObserverIgnores() throws {
        var generator = SeededGenerator(seed: 7)
        let names = [nil, nil, nil, "message_start", "message_delta", "message_stop", "chat.end", "response.created",
                     "response.completed", "note", "error"]
        let datas = [#"{"choices":[{"delta":{"content":"hi"}}]}"#, #"{"usage":{"prompt_tokens":4,"completion_tokens":5}}"#,
                     #"{"type":"message_delta","usage":{"output_tokens":6}}"#, #"{"type":"message_start","message":{"type":"message","usage":{"input_tokens":3}}}"#,
                     #"{"stop":true,"tokens_predicted":8,"tokens_evaluated":9}"#, #"{"stop":false,"content":"x"}"#,
                     #"{"type":"response.created","response":{"object":"response","id":"resp_r1"}}"#,
                     #"{"type":"chat.end","result":{"response_id":"resp_c1","stats":{"input_tokens":1,"total_output_tokens":2}}}"#,
                     "[DONE]", "[DONE] ", #"{"content":"the "usage" of words"}"#, "plain text"]
        let paths = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/api/v1/chat", "/llamacpp/completion", "/v1/completions"]
        for round in 0..<600 {
            let path = paths[round % paths.count]
            var text = ""
            for _ in 0..<(1 + Int(generator.next() % 6)) {
                if let name = names[Int(generator.next() % UInt64(names.count))] { text += "event: \(name)\n" }
                let data = datas[Int(generator.next() % UInt64(datas.count))]
                // Sometimes on two data lines (joined by a newline), sometimes with an id.
                if generator.next() % 4 == 0, data.count > 2 {
                    text += "data: \(data.prefix(2))\ndata: \(data.dropFirst(2))\n"
                } else {
                    text += "data: \(data)\n"
                }
                if generator.next() % 5 == 0 { text += "id: \(round)\n" }
                text += "\n"
            }
            let endpoint = try endpoint(path)
            var filtered = ResponseObserver(endpoint: endpoint), reference = ResponseObserver(endpoint: endpoint)
            // In pieces cut anywhere.
            let bytes = Array(text.utf8)
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + 1 + Int(generator.next() % 40))
                filtered.observe(streamPiece: ByteBuffer(bytes: bytes[start..<end]))
                start = end
            }
            filtered.finishStream()
            var parser = ServerSentEventParser()
            for event in parser.feed(bytes) + parser.finish() { reference.observe(event) }
            #expect(filtered.responseIDs == reference.responseIDs, "\(path) \(text)")
            #expect(filtered.inputTokens == reference.inputTokens && filtered.outputTokens == reference.outputTokens, "\(path) \(text)")
            #expect(filtered.sawFinalEvent == reference.sawFinalEvent, "\(path) \(text)")
        }
    }

    @Test func aStreamCutMidEventHasNoFinalEvent() throws {
        var observer = ResponseObserver(endpoint: try endpoint("/v1/chat/completions"))
        observer.observe(streamPiece: ByteBuffer(string: "data: {\"choices\":[{\"delta\":{\"content\":\"Hel"))
        observer.finishStream()
        #expect(!observer.sawFinalEvent)
    }
}

/// A repeatable generator for tests (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
