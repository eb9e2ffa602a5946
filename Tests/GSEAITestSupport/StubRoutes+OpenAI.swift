import Foundation
import GSEAI
import Hummingbird

/// The OpenAI-compatible and Anthropic-compatible APIs, as the stub speaks them.
extension StubRoutes {
    /// The text and image count of a message's content, in OpenAI, Responses or Anthropic form.
    static func contentParts(_ content: JSONValue?) throws -> (text: String, images: Int) {
        switch content {
        case .string(let text)?: return (text, 0)
        case .array(let parts)?:
            var texts: [String] = []
            var images = 0
            for part in parts {
                if let text = part["text"]?.stringValue { texts.append(text) }
                let url = part["image_url"]?["url"]?.stringValue ?? part["image_url"]?.stringValue
                if let url {
                    guard (try? DataURL(parsing: url)) != nil else { throw StubHTTPError(.badRequest, "invalid image_url") }
                    images += 1
                }
                if part["type"]?.stringValue == "image", let data = part["source"]?["data"]?.stringValue {
                    guard let bytes = Data(base64Encoded: data), DataURL.ImageType(sniffing: bytes) != nil else {
                        throw StubHTTPError(.badRequest, "invalid image source")
                    }
                    images += 1
                }
            }
            return (texts.joined(separator: "\n"), images)
        default: return ("", 0)
        }
    }

    /// The last user message's text and images, and how many user turns there were.
    static func lastUserTurn(_ messages: [JSONValue]) throws -> (text: String, images: Int, turn: Int) {
        let users = messages.filter { $0["role"]?.stringValue == "user" }
        guard let last = users.last else { throw StubHTTPError(.badRequest, "no user message") }
        let (text, images) = try contentParts(last["content"])
        return (text, images, users.count)
    }

    static func usage(prompt: Int, completion: Int) -> JSONValue {
        ["prompt_tokens": .number(Double(prompt)), "completion_tokens": .number(Double(completion)),
         "total_tokens": .number(Double(prompt + completion))]
    }

    static var created: JSONValue { .number(Double(Int(Date().timeIntervalSince1970))) }

    static func v0Extras(_ model: String, outputTokens: Int) -> [String: JSONValue] {
        [
            "stats": ["tokens_per_second": 42.5, "time_to_first_token": 0.01, "generation_time": 0.1, "stop_reason": "stop"],
            "model_info": ["arch": "echo", "quant": "Q4_K_M", "format": "gguf", "context_length": 8192],
            "runtime": ["name": "stub-runtime", "version": "1.0.0", "supported_formats": ["gguf"]],
        ]
    }

    func listModelsOpenAI() throws -> Response {
        Self.json([
            "object": "list",
            "data": .array(served.map { ["id": .string($0), "object": "model", "created": 1_700_000_000, "owned_by": "stub"] }),
        ])
    }

    func chatCompletions(_ body: JSONValue, v0: Bool) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.vision, StubModels.text])
        guard let messages = body["messages"]?.arrayValue else { throw StubHTTPError(.badRequest, "'messages' is required") }
        let (text, images, turn) = try Self.lastUserTurn(messages)
        let scenario = Scenario(text)
        if scenario.hangHead { try await hangHead() }
        if scenario.lateHead { try await Task.sleep(for: .seconds(1)) }
        if scenario.error && body["stream"]?.boolValue != true {
            throw StubHTTPError(.internalServerError, "stub failure on request")
        }
        let deltas = Self.reply(to: text, images: images, turn: turn)
        let id = await state.makeID("chatcmpl-")
        let prompt = messages.reduce(0) { $0 + Self.words((try? Self.contentParts($1["content"]).text) ?? "") }
        guard body["stream"]?.boolValue == true else {
            var result: [String: JSONValue] = [
                "id": .string(id), "object": "chat.completion", "created": Self.created, "model": .string(model),
                "choices": [["index": 0, "logprobs": nil, "finish_reason": "stop",
                             "message": ["role": "assistant", "content": .string(deltas.joined())]]],
                "usage": Self.usage(prompt: prompt, completion: deltas.count),
            ]
            if v0 { result.merge(Self.v0Extras(model, outputTokens: deltas.count)) { $1 } }
            return Self.json(.object(result))
        }
        func chunk(_ delta: JSONValue, finish: JSONValue = nil) -> ServerSentEvent {
            let value: JSONValue = [
                "id": .string(id), "object": "chat.completion.chunk", "created": Self.created, "model": .string(model),
                "choices": [["index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish]],
            ]
            return ServerSentEvent(data: value.jsonString)
        }
        var events = [chunk(["role": "assistant", "content": ""])]
        if scenario.error {
            let error: JSONValue = ["error": ["message": "stub failure mid-stream", "type": "server_error"]]
            events.append(ServerSentEvent(data: error.jsonString))
            return stream(events, scenario: scenario)
        }
        events += deltas.map { chunk(["content": .string($0)]) }
        events.append(chunk([:], finish: "stop"))
        if body["stream_options"]?["include_usage"]?.boolValue == true {
            let value: JSONValue = [
                "id": .string(id), "object": "chat.completion.chunk", "created": Self.created, "model": .string(model),
                "choices": [], "usage": Self.usage(prompt: prompt, completion: deltas.count),
            ]
            events.append(ServerSentEvent(data: value.jsonString))
        }
        events.append(ServerSentEvent(data: "[DONE]"))
        return stream(events, scenario: scenario)
    }

    func completions(_ body: JSONValue, v0: Bool) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.vision, StubModels.text])
        let prompt = body["prompt"]?.stringValue ?? body["prompt"]?.arrayValue?.compactMap(\.stringValue).joined(separator: "\n")
        guard let prompt else { throw StubHTTPError(.badRequest, "'prompt' is required") }
        let scenario = Scenario(prompt)
        if scenario.error && body["stream"]?.boolValue != true {
            throw StubHTTPError(.internalServerError, "stub failure on request")
        }
        let deltas = Self.reply(to: prompt, images: 0, turn: 1)
        let id = await state.makeID("cmpl-")
        guard body["stream"]?.boolValue == true else {
            var result: [String: JSONValue] = [
                "id": .string(id), "object": "text_completion", "created": Self.created, "model": .string(model),
                "choices": [["index": 0, "text": .string(deltas.joined()), "logprobs": nil, "finish_reason": "stop"]],
                "usage": Self.usage(prompt: Self.words(prompt), completion: deltas.count),
            ]
            if v0 { result.merge(Self.v0Extras(model, outputTokens: deltas.count)) { $1 } }
            return Self.json(.object(result))
        }
        func chunk(_ text: String, finish: JSONValue = nil) -> ServerSentEvent {
            let value: JSONValue = [
                "id": .string(id), "object": "text_completion", "created": Self.created, "model": .string(model),
                "choices": [["index": 0, "text": .string(text), "logprobs": nil, "finish_reason": finish]],
            ]
            return ServerSentEvent(data: value.jsonString)
        }
        var events = deltas.map { chunk($0) }
        events.append(chunk("", finish: "stop"))
        events.append(ServerSentEvent(data: "[DONE]"))
        return stream(events, scenario: scenario)
    }

    /// A deterministic 8-dimensional vector for `text`.
    static func vector(_ text: String) -> [Float] {
        var sums = [Float](repeating: 0, count: 8)
        for (index, scalar) in text.unicodeScalars.enumerated() { sums[index % 8] += Float(scalar.value) }
        let norm = max(1, sums.reduce(0) { $0 + $1 * $1 }.squareRoot())
        return sums.map { $0 / norm }
    }

    func embeddings(_ body: JSONValue) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.embedding])
        let inputs: [String]
        switch body["input"] {
        case .string(let text)?: inputs = [text]
        case .array(let items)?: inputs = items.compactMap(\.stringValue)
        default: throw StubHTTPError(.badRequest, "'input' is required")
        }
        let base64 = body["encoding_format"]?.stringValue == "base64"
        let data: [JSONValue] = inputs.enumerated().map { index, text in
            let vector = Self.vector(text)
            let embedding: JSONValue
            if base64 {
                let bytes = vector.withUnsafeBufferPointer { Data(buffer: $0) }
                embedding = .string(bytes.base64EncodedString())
            } else {
                embedding = .array(vector.map { .number(Double($0)) })
            }
            return ["object": "embedding", "embedding": embedding, "index": .number(Double(index))]
        }
        let tokens = inputs.reduce(0) { $0 + Self.words($1) }
        return Self.json([
            "object": "list", "data": .array(data), "model": .string(model),
            "usage": ["prompt_tokens": .number(Double(tokens)), "total_tokens": .number(Double(tokens))],
        ])
    }

    /// `POST /v1/responses`: `input` (text or items) or the Python client's `messages`; stateful.
    func responses(_ body: JSONValue) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.vision, StubModels.text])
        var text = ""
        var images = 0
        if let input = body["input"]?.stringValue {
            text = input
        } else if let items = body["input"]?.arrayValue ?? body["messages"]?.arrayValue {
            let turn = try Self.lastUserTurn(items)
            text = turn.text
            images = turn.images
        } else {
            throw StubHTTPError(.badRequest, "'input' is required")
        }
        let scenario = Scenario(text)
        if scenario.error && body["stream"]?.boolValue != true {
            throw StubHTTPError(.internalServerError, "stub failure on request")
        }
        let previous = body["previous_response_id"]?.stringValue
        guard let history = await state.history(for: previous) else {
            throw StubHTTPError(.notFound, "response '\(previous ?? "")' not found")
        }
        let deltas = Self.reply(to: text, images: images, turn: history.count + 1)
        let id = await state.store(history: history, text: text)
        let messageID = "msg_" + id.dropFirst(5)
        func response(status: String, output: [JSONValue]) -> JSONValue {
            [
                "id": .string(id), "object": "response", "created_at": Self.created, "status": .string(status),
                "model": .string(model), "output": .array(output), "previous_response_id": previous.map(JSONValue.string) ?? nil,
                "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "temperature": 1, "top_p": 1,
                "usage": ["input_tokens": .number(Double(Self.words(text))), "output_tokens": .number(Double(deltas.count)),
                          "total_tokens": .number(Double(Self.words(text) + deltas.count)),
                          "input_tokens_details": ["cached_tokens": 0], "output_tokens_details": ["reasoning_tokens": 0]],
            ]
        }
        let part: JSONValue = ["type": "output_text", "text": .string(deltas.joined()), "annotations": []]
        let item: JSONValue = ["type": "message", "id": .string(messageID), "status": "completed", "role": "assistant", "content": [part]]
        guard body["stream"]?.boolValue == true else {
            return Self.json(response(status: "completed", output: [item]))
        }
        var sequence = 0
        func event(_ type: String, _ fields: [String: JSONValue]) -> ServerSentEvent {
            defer { sequence += 1 }
            var object = fields
            object["type"] = .string(type)
            object["sequence_number"] = .number(Double(sequence))
            return ServerSentEvent(event: type, data: JSONValue.object(object).jsonString)
        }
        let emptyItem: JSONValue = ["type": "message", "id": .string(messageID), "status": "in_progress", "role": "assistant", "content": []]
        var events = [
            event("response.created", ["response": response(status: "in_progress", output: [])]),
            event("response.output_item.added", ["output_index": 0, "item": emptyItem]),
            event("response.content_part.added", ["item_id": .string(messageID), "output_index": 0, "content_index": 0,
                                                  "part": ["type": "output_text", "text": "", "annotations": []]]),
        ]
        events += deltas.map {
            event("response.output_text.delta", ["item_id": .string(messageID), "output_index": 0, "content_index": 0, "delta": .string($0)])
        }
        events += [
            event("response.output_text.done", ["item_id": .string(messageID), "output_index": 0, "content_index": 0, "text": .string(deltas.joined())]),
            event("response.content_part.done", ["item_id": .string(messageID), "output_index": 0, "content_index": 0, "part": part]),
            event("response.output_item.done", ["output_index": 0, "item": item]),
            event("response.completed", ["response": response(status: "completed", output: [item])]),
        ]
        return stream(events, scenario: scenario)
    }

    /// `POST /v1/messages`, Anthropic's shape.
    func messages(_ body: JSONValue) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.vision, StubModels.text])
        guard body["max_tokens"]?.intValue != nil else { throw StubHTTPError(.badRequest, "'max_tokens' is required") }
        guard let messages = body["messages"]?.arrayValue else { throw StubHTTPError(.badRequest, "'messages' is required") }
        let (text, images, turn) = try Self.lastUserTurn(messages)
        let scenario = Scenario(text)
        if scenario.error && body["stream"]?.boolValue != true {
            throw StubHTTPError(.internalServerError, "stub failure on request")
        }
        let deltas = Self.reply(to: text, images: images, turn: turn)
        let id = await state.makeID("msg_")
        let inputTokens = Self.words(text) + Self.words(body["system"]?.stringValue ?? "")
        guard body["stream"]?.boolValue == true else {
            return Self.json([
                "id": .string(id), "type": "message", "role": "assistant", "model": .string(model),
                "content": [["type": "text", "text": .string(deltas.joined())]],
                "stop_reason": "end_turn", "stop_sequence": nil,
                "usage": ["input_tokens": .number(Double(inputTokens)), "output_tokens": .number(Double(deltas.count))],
            ])
        }
        func event(_ type: String, _ fields: [String: JSONValue]) -> ServerSentEvent {
            ServerSentEvent(event: type, data: JSONValue.object(fields.merging(["type": .string(type)]) { $1 }).jsonString)
        }
        var events = [
            event("message_start", ["message": [
                "id": .string(id), "type": "message", "role": "assistant", "model": .string(model), "content": [],
                "stop_reason": nil, "stop_sequence": nil,
                "usage": ["input_tokens": .number(Double(inputTokens)), "output_tokens": 1],
            ]]),
            event("content_block_start", ["index": 0, "content_block": ["type": "text", "text": ""]]),
            event("ping", [:]),
        ]
        if scenario.error {
            events.append(event("error", ["error": ["type": "api_error", "message": "stub failure mid-stream"]]))
            return stream(events, scenario: scenario)
        }
        events += deltas.map { event("content_block_delta", ["index": 0, "delta": ["type": "text_delta", "text": .string($0)]]) }
        events += [
            event("content_block_stop", ["index": 0]),
            event("message_delta", ["delta": ["stop_reason": "end_turn", "stop_sequence": nil],
                                    "usage": ["output_tokens": .number(Double(deltas.count))]]),
            event("message_stop", [:]),
        ]
        return stream(events, scenario: scenario)
    }
}
