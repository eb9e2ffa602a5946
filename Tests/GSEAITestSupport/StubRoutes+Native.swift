import Foundation
import GSEAI
import Hummingbird

/// LM Studio's native API v1 and v0, as the stub speaks it.
extension StubRoutes {
    func listModelsV1() async throws -> Response {
        let loaded = await state.loaded
        let models: [JSONValue] = served.map { key in
            let isEmbedding = key == StubModels.embedding
            let instances: [JSONValue] = loaded.contains(key) ? [["id": .string(key), "config": ["context_length": 4096]]] : []
            return [
                "type": isEmbedding ? "embedding" : "llm",
                "publisher": "stub",
                "key": .string(key),
                "display_name": .string(key.replacingOccurrences(of: "stub/", with: "Stub ")),
                "architecture": "echo",
                "quantization": ["name": "Q4_K_M", "bits_per_weight": 4],
                "size_bytes": 1_000_000,
                "params_string": "1M",
                "loaded_instances": .array(instances),
                "max_context_length": 8192,
                "format": "gguf",
                "capabilities": ["vision": .bool(key == StubModels.vision), "trained_for_tool_use": false],
            ]
        }
        return Self.json(["models": .array(models)])
    }

    func load(_ body: JSONValue) async throws -> Response {
        let model = try Self.requireModel(body)
        await state.load(model)
        var result: JSONValue = ["type": "llm", "instance_id": .string(model), "load_time_seconds": 0.25, "status": "loaded"]
        if let ttl = body["ttl"] { result = .object(result.objectValue!.merging(["ttl": ttl]) { $1 }) }
        return Self.json(result)
    }

    func unload(_ body: JSONValue) async throws -> Response {
        guard let model = body["instance_id"]?.stringValue ?? body["model"]?.stringValue else {
            throw StubHTTPError(.badRequest, "'instance_id' is required")
        }
        guard await state.unload(model) else { throw StubHTTPError(.notFound, "no loaded instance '\(model)'") }
        return Self.json(["instance_id": .string(model), "status": "unloaded"])
    }

    func download(_ body: JSONValue) async throws -> Response {
        guard let model = body["model"]?.stringValue, !model.isEmpty else {
            throw StubHTTPError(.badRequest, "'model' is required")
        }
        if StubModels.all.contains(model) { return Self.json(["status": "already_downloaded"]) }
        let job = await state.startDownload()
        return Self.json([
            "job_id": .string(job), "status": "downloading", "total_size_bytes": 4_000_000, "downloaded_bytes": 0,
        ])
    }

    func downloadStatus(_ job: String) async throws -> Response {
        guard let polls = await state.pollDownload(job) else { throw StubHTTPError(.notFound, "no download job '\(job)'") }
        let done = min(4, polls)
        return Self.json([
            "job_id": .string(job),
            "status": done >= 4 ? "completed" : "downloading",
            "downloaded_bytes": .number(Double(done * 1_000_000)),
            "total_size_bytes": 4_000_000,
            "bytes_per_second": 1_000_000,
        ])
    }

    /// `POST /api/v1/chat`: echoes, keeps stateful ids, streams LM Studio's events.
    func chatV1(_ body: JSONValue) async throws -> Response {
        let model = try Self.requireModel(body, kinds: [StubModels.vision, StubModels.text])
        let text: String
        var images = 0
        switch body["input"] {
        case .string(let value)?: text = value
        case .array(let items)?:
            text = items.compactMap { $0["type"]?.stringValue == "image" ? nil : $0["content"]?.stringValue }
                .joined(separator: "\n")
            for item in items where item["type"]?.stringValue == "image" {
                guard let url = item["data_url"]?.stringValue, (try? DataURL(parsing: url)) != nil else {
                    throw StubHTTPError(.badRequest, "invalid image data_url")
                }
                images += 1
            }
        default: throw StubHTTPError(.badRequest, "'input' is required")
        }
        if images > 0 && model != StubModels.vision {
            throw StubHTTPError(.badRequest, "model '\(model)' does not support images")
        }
        let scenario = Scenario(text)
        if scenario.hangHead { try await hangHead() }
        if scenario.lateHead { try await Task.sleep(for: .seconds(1)) }
        let previous = body["previous_response_id"]?.stringValue
        guard let history = await state.history(for: previous) else {
            throw StubHTTPError(.notFound, "response '\(previous ?? "")' not found")
        }
        let deltas = Self.reply(to: text, images: images, turn: history.count + 1)
        let store = body["store"]?.boolValue ?? true
        let responseID = store ? await state.store(history: history, text: text) : nil
        var result: [String: JSONValue] = [
            "model_instance_id": .string(model),
            "output": [["type": "message", "content": .string(deltas.joined())]],
            "stats": [
                "input_tokens": .number(Double(Self.words(text) + history.reduce(0) { $0 + Self.words($1) })),
                "total_output_tokens": .number(Double(deltas.count)),
                "reasoning_output_tokens": 0,
                "tokens_per_second": 42.5,
                "time_to_first_token_seconds": 0.01,
            ],
        ]
        if let responseID { result["response_id"] = .string(responseID) }
        guard body["stream"]?.boolValue == true else {
            if scenario.error { throw StubHTTPError(.internalServerError, "stub failure on request") }
            return Self.json(.object(result))
        }
        func event(_ type: String, _ fields: [String: JSONValue] = [:]) -> ServerSentEvent {
            ServerSentEvent(event: type, data: JSONValue.object(fields.merging(["type": .string(type)]) { $1 }).jsonString)
        }
        var events = [
            event("chat.start", ["model_instance_id": .string(model)]),
            event("prompt_processing.start"),
            event("prompt_processing.progress", ["progress": 1]),
            event("prompt_processing.end"),
        ]
        if scenario.error {
            events.append(event("error", ["error": ["type": "server_error", "message": "stub failure mid-stream"]]))
            events.append(event("chat.end", ["result": ["model_instance_id": .string(model), "output": []]]))
            return stream(events, scenario: scenario)
        }
        events.append(event("message.start"))
        events += deltas.map { event("message.delta", ["content": .string($0)]) }
        events.append(event("message.end"))
        events.append(event("chat.end", ["result": .object(result)]))
        return stream(events, scenario: scenario)
    }

    func v0Model(_ key: String, loaded: Set<String>) -> JSONValue {
        [
            "id": .string(key), "object": "model",
            "type": key == StubModels.embedding ? "embeddings" : (key == StubModels.vision ? "vlm" : "llm"),
            "publisher": "stub", "arch": "echo", "compatibility_type": "gguf", "quantization": "Q4_K_M",
            "state": loaded.contains(key) ? "loaded" : "not-loaded", "max_context_length": 8192,
        ]
    }

    func listModelsV0() async throws -> Response {
        let loaded = await state.loaded
        return Self.json(["object": "list", "data": .array(served.map { v0Model($0, loaded: loaded) })])
    }

    func modelV0(_ model: String) async throws -> Response {
        let key = model.removingPercentEncoding ?? model
        guard served.contains(key) else { throw StubHTTPError(.notFound, "model '\(key)' not found") }
        return Self.json(v0Model(key, loaded: await state.loaded))
    }
}
