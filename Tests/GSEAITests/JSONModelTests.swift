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
