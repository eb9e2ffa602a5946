import Foundation
import GSEAI
import Testing

@Suite("JSON models")
struct JSONModelTests {
    @Test func unknownFieldsSurviveARoundTrip() throws {
        let text = #"{"model_instance_id":"m","output":[{"type":"message","content":"Hi","future_field":{"a":[1,2.5,null]}}],"stats":{"input_tokens":3,"new_stat":true},"response_id":"resp_1","brand_new":"kept"}"#
        let response = try JSONDecoder().decode(ChatResponse.self, from: Data(text.utf8))
        #expect(response.text == "Hi")
        #expect(response.stats?.inputTokens == 3)
        #expect(response.responseID == "resp_1")
        let again = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(response))
        let original = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(again == original)
        #expect(again["output"]?.arrayValue?.first?["future_field"]?["a"] == [1, 2.5, nil])
    }

    @Test func chatRequestSendsOnlyWhatWasGivenLikeThePythonClient() throws {
        let request = ChatRequest(model: "m", input: "hello", temperature: 0.5, previousResponseID: "resp_9")
        let json = try JSONValue(encoding: request)
        #expect(json == ["model": "m", "input": "hello", "temperature": 0.5, "store": true, "previous_response_id": "resp_9"])
    }

    @Test func chatInputItemsWithImages() throws {
        let image = try DataURL(imageBytes: DataURLTests.png)
        let input = ChatInput.items([.message("describe"), .image(image)])
        #expect(input.text == "describe")
        #expect(input.imageDataURLs == [image.string])
        let json = try JSONValue(encoding: input)
        #expect(json == [["type": "message", "content": "describe"], ["type": "image", "data_url": .string(image.string)]])
        #expect(try json.decode(as: ChatInput.self) == input)
    }

    @Test func serverErrorShapes() {
        #expect(ServerError(body: Array(#"{"error":{"message":"bad","type":"invalid","code":404}}"#.utf8)) ==
            ServerError(message: "bad", type: "invalid", code: "404",
                        body: ["error": ["message": "bad", "type": "invalid", "code": 404]]))
        #expect(ServerError(body: Array(#"{"error":"plain"}"#.utf8)).message == "plain")
        #expect(ServerError(body: Array("<html>oops</html>".utf8)).message == "<html>oops</html>")
        let anthropic = ServerError(json: ["type": "error", "error": ["type": "overloaded_error", "message": "busy"]])
        #expect(anthropic.message == "busy")
        #expect(anthropic.type == "overloaded_error")
    }

    @Test func wholeNumbersEncodeWithoutAFraction() throws {
        #expect(JSONValue.number(3).jsonString == "3")
        #expect(JSONValue.number(2.5).jsonString == "2.5")
        let object: JSONValue = ["b": 1, "a": [true, nil, "x"]]
        #expect(object.jsonString == #"{"a":[true,null,"x"],"b":1}"#)
    }
}

@Suite("JSON writer: strings")
struct JSONStringWritingTests {
    /// A string is written with exactly the bytes that need it escaped (quote, backslash, the control characters),
    /// the short escapes where JSON has them, everything else as it is; the text parses back to the string.
    @Test func stringsAreEscapedExactlyWhereTheyMustBe() throws {
        func expected(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{8}": out += "\\b"
                case "\u{C}": out += "\\f"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        var generator = SystemRandomNumberGenerator()
        let pieces = ["a", "plain text ", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1F}", "\u{8}", "\u{C}", "\u{7F}", "é", "😀", "\u{2028}", "/"]
        var samples = ["", "\"", "\\\\", "no escapes at all, a longer run of plain bytes", "\u{0}\u{1}\u{2}"]
        for _ in 0..<300 {
            samples.append((0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined())
        }
        for text in samples {
            let written = String(decoding: JSONValue.string(text).jsonData, as: UTF8.self)
            #expect(written == expected(text), "\(text.debugDescription)")
            #expect(try JSONValue(parsing: Array(written.utf8)) == .string(text))
        }
    }
}

@Suite("JSON parser")
struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let text = #"{"s":"a\"b\\c\/d\n\u00e9\ud83d\ude00","n":[0,-1.5,2e3,1E-2],"t":true,"f":false,"z":null,"o":{"x":[]},"e":{}}"#
        let value = try JSONValue(parsing: Array(text.utf8))
        #expect(value == [
            "s": "a\"b\\c/d\né😀", "n": [0, -1.5, 2000, 0.01], "t": true, "f": false, "z": nil, "o": ["x": []], "e": [:],
        ])
        #expect(try JSONValue(parsing: Array(" [ 1 , \"x\" ] ".utf8)) == [1, "x"])
        #expect(try JSONValue(parsing: Array("\"ünïcødé\"".utf8)) == "ünïcødé")
        // A lone surrogate stands for U+FFFD; a high one followed by another escape than its low one is refused.
        #expect(try JSONValue(parsing: Array(#""a\ud800b""#.utf8)) == "a\u{FFFD}b")
        #expect(throws: (any Error).self) { try JSONValue(parsing: Array(#""\ud800\u0041""#.utf8)) }
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "tru", "01x", "\"unterminated", "{\"a\":1}x", "-", "1.", "\"\u{1}\"", "[1 2]"])
    func refusesInvalidJSON(_ text: String) {
        #expect(throws: (any Error).self) { try JSONValue(parsing: Array(text.utf8)) }
    }

    @Test func refusesDeepNesting() {
        let deep = String(repeating: "[", count: 1000) + String(repeating: "]", count: 1000)
        #expect(throws: (any Error).self) { try JSONValue(parsing: Array(deep.utf8)) }
    }

    @Test func aNameGivenTwiceKeepsItsLastValue() throws {
        #expect(try JSONValue(parsing: Array(#"{"a":1,"b":2,"a":3}"#.utf8)) == ["a": 3, "b": 2])
        #expect(try JSONValue(parsing: Array(#"{"a":1,"a":2,"b":{"c":1,"c":[2]},"a":3,"d":4}"#.utf8))
            == ["a": 3, "b": ["c": [2]], "d": 4])
        // Two spellings of one name (é precomposed, then e and a combining accent): the last value, the first spelling.
        let spelled = try JSONValue(parsing: Array("{\"\u{E9}\":1,\"e\u{301}\":2}".utf8))
        #expect(Array(spelled.jsonString.utf8) == Array("{\"".utf8) + [0xC3, 0xA9] + Array("\":2}".utf8))
    }

    /// Whole numbers of up to 15 characters are read without making their text: the same `Double` as the text.
    @Test(arguments: ["0", "-0", "7", "-42", "000123", "1700000000", "999999999999999", "-99999999999999", "1234567890123456",
                      "12345678901234567890", "1.5", "1e3", "-2E-2", "9007199254740993"])
    func wholeNumbersReadAsTheirText(_ text: String) throws {
        let value = try JSONValue(parsing: Array(text.utf8))
        guard case .number(let number) = value, let expected = Double(text) else {
            Issue.record("\(text) read as \(value)")
            return
        }
        #expect(number == expected && number.sign == expected.sign, "\(text)")
    }

    static let memberNames = JSONValue.MemberNames(["usage", "id", "ünï", "q\"t"])

    /// A parse that keeps some members: their values as a whole parse makes them, the rest left out.
    @Test func keepsOnlyTheNamedMembers() throws {
        let text = #"{"id":"x1","choices":[{"message":{"content":"a\n\"b\" \ud83d\ude00","role":"assistant"},"n":1.5e2}],"usage":{"prompt_tokens":7},"\u00fcn\u00ef":[true,null],"q\"t":-3,"id":"x2"}"#
        let whole = try JSONValue(parsing: Array(text.utf8))
        let kept = try JSONValue(parsing: Array(text.utf8), keeping: Self.memberNames)
        #expect(kept == ["id": "x2", "usage": ["prompt_tokens": 7], "ünï": [true, nil], "q\"t": -3])
        for name in ["id", "usage", "ünï", "q\"t"] { #expect(kept[name] == whole[name]) }
        #expect(kept["choices"] == nil)
        // Not an object: parsed whole.
        #expect(try JSONValue(parsing: Array(#" [1,{"a":2}] "#.utf8), keeping: Self.memberNames) == [1, ["a": 2]])
        #expect(try JSONValue(parsing: Array("{}".utf8), keeping: Self.memberNames) == [:])
    }

    /// What a whole parse refuses, a parse that keeps some members refuses, even where the fault is in a member it
    /// skips; and what it takes, it takes.
    @Test(arguments: [
        "", "{", "{\"a\":[1,]}", "{\"a\" 1}", "{\"a\":tru}", "{\"a\":01x}", "{\"a\":\"unterminated}", "{\"a\":1}x", "{\"a\":-}",
        "{\"a\":1.}", "{\"a\":\"\u{1}\"}", "{\"a\":[1 2]}", "{\"a\":\"\\q\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":1e999}", "{\"a\":{\"b\":}}", "{\"a\":{\"b\" 1}}", "{\"a\":{1:2}}", "{\"a\":[}", "{\"a\":1,}", "{\"a\u{1}\":1}", "{\"\\x\":1}",
        String(repeating: "{\"a\":", count: 600) + "1" + String(repeating: "}", count: 600),
        String(repeating: "{\"a\":", count: 300) + "1" + String(repeating: "}", count: 300),
        "{\"a\":\"\\ud800\"}", "{\"a\":[[],{},\"\",0,-0.5e-3,true,false,null]}", " {\"usage\" : {\"x\":[1]} } ",
    ])
    func keepingRefusesWhatAWholeParseRefuses(_ text: String) {
        let whole = try? JSONValue(parsing: Array(text.utf8))
        let kept = try? JSONValue(parsing: Array(text.utf8), keeping: Self.memberNames)
        #expect((whole == nil) == (kept == nil), "\(text.prefix(80)): whole \(whole == nil ? "refused" : "taken"), kept \(kept == nil ? "refused" : "taken")")
        if let whole, let kept { #expect(kept["usage"] == whole["usage"]) }
    }

    @Test func agreesWithTheCodableDecoder() throws {
        let text = #"{"model_instance_id":"m","output":[{"type":"message","content":"Hi"}],"stats":{"input_tokens":3,"tokens_per_second":29.75}}"#
        let fast = try JSONValue(parsing: Array(text.utf8))
        let slow = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(fast == slow)
    }
}

@Suite("JSON writer")
struct JSONWriterTests {
    /// What `JSONEncoder` writes with the same settings: the writer must agree byte for byte.
    func encoded(_ value: JSONValue) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test(arguments: [
        JSONValue.null, true, false, 0, -1, 42, 9_007_199_254_740_000, 0.5, -0.25, 1e-7, 3.141592653589793, 1e300, 1e16,
        "", "plain", "quote \" and backslash \\ and slash /", "lines\n\r\t and \u{8}\u{c} and \u{1}\u{1f}\u{7f}",
        "unicode é 漢字 🙂 \u{2028}", [], [1, "two", nil, [3]], [:],
        ["z": 1, "a": ["nested": [true, false]], "m": "x", "": nil, "é": 2.5, "A": 0],
    ] as [JSONValue])
    func writesWhatJSONEncoderWrites(value: JSONValue) throws {
        #expect(value.jsonString == (try encoded(value)))
        #expect(try JSONValue(parsing: value.jsonBytes) == value)
    }

    @Test func aNumberJSONCannotHoldIsNull() {
        #expect(JSONValue.array([.number(.nan), .number(.infinity), 1]).jsonString == "[null,null,1]")
    }
}
