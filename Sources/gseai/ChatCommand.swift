import ArgumentParser
import Foundation
import GSEAI

/// `gseai chat`: one chat turn, streamed to the terminal.
struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Send a prompt and print the answer as it is generated.",
        discussion: """
            The answer goes to standard output; statistics and the response id go to standard error. \
            Continue a conversation by passing that id to --continue.
            """
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The model, such as qwen/qwen3-vl-4b.")
    var model: String

    @Argument(help: "The prompt.")
    var prompt: String

    @Option(name: .customLong("image"), help: "An image (PNG, JPEG, GIF or WebP) to send; repeatable.")
    var images: [String] = []

    @Option(help: "A system prompt.")
    var system: String?

    @Option(name: .customLong("continue"), help: "The response id to continue from.")
    var previousResponseID: String?

    @Flag(help: "Wait for the whole answer instead of streaming it.")
    var noStream = false

    @Option(help: """
        The API to use: native (LM Studio /api/v1/chat), openai or tgw (/v1/chat/completions), llamacpp (the model's \
        chat template, then llama.cpp's /completion; the base URL is the llama.cpp server's or the gateway's …/llamacpp).
        """)
    var api = APIChoice.native

    @Option(help: "The sampling temperature.")
    var temperature: Double?

    @Option(help: "The most tokens to generate.")
    var maxTokens: Int?

    func run() async throws {
        let dataURLs = try images.map(Self.readImage)
        if api != .native, previousResponseID != nil {
            throw CLIError("--continue needs the native API (LM Studio's stateful chat)")
        }
        if api == .llamacpp, !dataURLs.isEmpty {
            throw CLIError("--image needs the native, openai or tgw API (llama.cpp's /completion takes text)")
        }
        try await options.makeClient().run { client in
            switch api {
            case .native: try await chatNative(client, images: dataURLs)
            case .openai, .tgw: try await chatOpenAI(client, images: dataURLs)
            case .llamacpp: try await chatLlamaCpp(client)
            }
        }
    }

    /// Reads and checks an image file, with a one-line error for a missing or non-image file.
    static func readImage(_ path: String) throws -> DataURL {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIError("cannot read image file '\(path)'")
        }
        do {
            return try DataURL(imageBytes: data)
        } catch {
            throw CLIError("'\(path)': \(error)")
        }
    }

    func chatNative(_ client: GSEAIClient, images: [DataURL]) async throws {
        let input: ChatInput = images.isEmpty ? .text(prompt) : .items([.message(prompt)] + images.map(ChatInputItem.image))
        let request = ChatRequest(
            model: model, input: input, systemPrompt: system, temperature: temperature,
            maxOutputTokens: maxTokens, previousResponseID: previousResponseID
        )
        let response: ChatResponse
        if noStream {
            response = try await client.chat(request)
            if options.json { return try Terminal.printJSON(response) }
            for item in response.output where item.type == "reasoning" { Terminal.err((item.content ?? "") + "\n") }
            Terminal.out(response.text + "\n")
        } else {
            var result: ChatResponse?
            var failure: ServerError?
            // The answer so far stays on screen, ended by a newline, whatever happens.
            defer { if !options.json { Terminal.out("\n") } }
            for try await event in try await client.chatStream(request) {
                if options.json { try Terminal.printJSON(event, pretty: false) }
                if let error = event.error { failure = error }
                if event.type == "chat.end" { result = event.result }
                guard !options.json else { continue }
                if let text = event.delta { Terminal.out(text) }
                if let text = event.reasoningDelta { Terminal.err(text) }
            }
            if let failure { throw CLIError("the server failed: \(failure.message)") }
            guard let result else { throw GSEAIError.streamInterrupted }
            response = result
            if options.json { return }
        }
        if let stats = response.stats { Terminal.err(Self.describe(stats) + "\n") }
        if let id = response.responseID { Terminal.err("response id: \(id)\n") }
    }

    func chatOpenAI(_ client: GSEAIClient, images: [DataURL]) async throws {
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(images.isEmpty ? ChatMessage(role: "user", content: prompt) : .user(prompt, images: images))
        let request = ChatCompletionRequest(model: model, messages: messages, temperature: temperature, maxTokens: maxTokens)
        if noStream {
            let completion = try await client.chatCompletions(request)
            if options.json { return try Terminal.printJSON(completion) }
            Terminal.out((completion.message?.text ?? "") + "\n")
            if let usage = completion.usage {
                Terminal.err("\(usage.promptTokens ?? 0) tokens in · \(usage.completionTokens ?? 0) out\n")
            }
            return
        }
        defer { if !options.json { Terminal.out("\n") } }
        for try await chunk in try await client.chatCompletionsStream(request) {
            if options.json {
                try Terminal.printJSON(chunk, pretty: false)
            } else if let text = chunk.delta {
                Terminal.out(text)
            }
        }
    }

    /// The prompt through the model's chat template (`/apply-template`), then a native completion.
    func chatLlamaCpp(_ client: GSEAIClient) async throws {
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: prompt))
        var request = LlamaCompletionRequest(prompt: try await client.applyTemplate(messages), nPredict: maxTokens, temperature: temperature)
        request["model"] = .string(model)
        let result: LlamaCompletion
        if noStream {
            result = try await client.completion(request)
            if options.json { return try Terminal.printJSON(result) }
            Terminal.out(result.content + "\n")
        } else {
            var last: LlamaCompletion?
            defer { if !options.json { Terminal.out("\n") } }
            for try await chunk in try await client.completionStream(request) {
                if options.json { try Terminal.printJSON(chunk, pretty: false) } else { Terminal.out(chunk.content) }
                last = chunk
            }
            guard let last, !options.json else { return }
            result = last
        }
        var parts = ["\(result.tokensEvaluated ?? 0) tokens in", "\(result.tokensPredicted ?? 0) out"]
        if let speed = result.timings?["predicted_per_second"]?.doubleValue { parts.append(String(format: "%.1f tok/s", speed)) }
        Terminal.err(parts.joined(separator: " · ") + "\n")
    }

    /// `12 tokens in · 30 out · 42.5 tok/s · first token 0.31 s`
    static func describe(_ stats: ChatStats) -> String {
        var parts = ["\(stats.inputTokens ?? 0) tokens in", "\(stats.totalOutputTokens ?? 0) out"]
        if let speed = stats.tokensPerSecond { parts.append(String(format: "%.1f tok/s", speed)) }
        if let first = stats.timeToFirstTokenSeconds { parts.append(String(format: "first token %.2f s", first)) }
        return parts.joined(separator: " · ")
    }
}
