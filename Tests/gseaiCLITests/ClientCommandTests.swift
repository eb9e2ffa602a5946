import Foundation
import GSEAI
import GSEAITestSupport
import Testing

@Suite("gseai client commands", .serialized)
struct ClientCommandTests {
    /// Runs `gseai` against a fresh stub with its token in the environment.
    func gseai(_ arguments: [String], stub: StubUpstream) async throws -> CLIResult {
        try await CLIRunner.run(arguments + ["--base-url", stub.baseURL], environment: ["GSEAI_API_TOKEN": stub.token])
    }

    @Test func modelsTable() async throws {
        try await StubUpstream.with { stub in
            let result = try await gseai(["models"], stub: stub)
            #expect(result.status == 0)
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("MODEL") == true)
            #expect(lines.dropFirst().map { $0.split(separator: " ").first.map(String.init) } == ["stub/echo-vl", "stub/echo-text", "stub/embed"])
            #expect(lines[1].contains("yes"))
        }
    }

    @Test func chatStreamsThenContinues() async throws {
        try await StubUpstream.with { stub in
            let first = try await gseai(["chat", "stub/echo-text", "hello there", "--system", "be nice"], stub: stub)
            #expect(first.status == 0)
            #expect(first.stdout == "Echo: hello there\n")
            #expect(first.stderr.contains("2 tokens in · 3 out"))
            let id = try #require(first.stderr.split(separator: "\n").first { $0.hasPrefix("response id: ") }?.dropFirst(13))
            let sent = await stub.state.requests(to: "POST /api/v1/chat").last?.body
            #expect(sent?["system_prompt"] == "be nice")
            #expect(sent?["stream"] == true)

            let second = try await gseai(["chat", "stub/echo-text", "again", "--continue", String(id), "--no-stream"], stub: stub)
            #expect(second.status == 0)
            #expect(second.stdout == "Echo: again (turn 2)\n")
        }
    }

    @Test func chatWithAnImageFile() async throws {
        try await StubUpstream.with { stub in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-\(UUID()).png")
            try Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")!.write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let result = try await gseai(["chat", "stub/echo-vl", "what is it", "--image", file.path], stub: stub)
            #expect(result.stdout == "Echo: what is it [images: 1]\n")
            let input = await stub.state.requests(to: "POST /api/v1/chat").last?.body?["input"]
            #expect(input?.arrayValue?.last?["data_url"]?.stringValue?.hasPrefix("data:image/png;base64,iVBOR") == true)
        }
    }

    @Test func badInputGetsOneLineAndAFailureStatus() async throws {
        try await StubUpstream.with { stub in
            let missing = try await gseai(["chat", "stub/echo-vl", "x", "--image", "/nonexistent/cat.png"], stub: stub)
            #expect(missing.status != 0)
            #expect(missing.stderr == "Error: cannot read image file '/nonexistent/cat.png'\n")

            let text = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-\(UUID()).png")
            try Data("not an image".utf8).write(to: text)
            defer { try? FileManager.default.removeItem(at: text) }
            let notImage = try await gseai(["chat", "stub/echo-vl", "x", "--image", text.path], stub: stub)
            #expect(notImage.status != 0)
            #expect(notImage.stderr == "Error: '\(text.path)': the file is not a PNG, JPEG, GIF or WebP image\n")

            let noToken = try await CLIRunner.run(["models", "--base-url", stub.baseURL])
            #expect(noToken.status != 0)
            #expect(noToken.stderr == "Error: no API token: set GSEAI_API_TOKEN or pass --token\n")
            #expect(await stub.state.requests.isEmpty)
        }
    }

    @Test func serverErrorsAreReported() async throws {
        try await StubUpstream.with { stub in
            let streamed = try await gseai(["chat", "stub/echo-text", "[[error]]"], stub: stub)
            #expect(streamed.status != 0)
            #expect(streamed.stderr.contains("Error: the server failed: stub failure mid-stream"))
            let whole = try await gseai(["chat", "stub/echo-text", "[[error]]", "--no-stream"], stub: stub)
            #expect(whole.stderr == "Error: HTTP 500 Internal Server Error: stub failure on request\n")
            let cut = try await gseai(["chat", "stub/echo-text", "a b c d [[cut]]"], stub: stub)
            #expect(cut.status != 0)
            #expect(cut.stderr.hasSuffix("Error: the response ended before it was complete\n"))
            #expect(cut.stdout == "Echo: \n")
        }
    }

    @Test func loadUnloadAndDownloadWithProgress() async throws {
        try await StubUpstream.with { stub in
            let load = try await gseai(["load", "stub/echo-text", "--ttl", "120"], stub: stub)
            #expect(load.stdout == "loaded stub/echo-text in 0.25 s\n")
            #expect(await stub.state.loaded == ["stub/echo-text"])
            let unload = try await gseai(["unload", "stub/echo-text"], stub: stub)
            #expect(unload.stdout == "unloaded stub/echo-text\n")
            #expect(await stub.state.loaded.isEmpty)

            let download = try await gseai(["download", "org/new-model", "--interval", "0.05"], stub: stub)
            #expect(download.status == 0)
            #expect(download.stdout == "org/new-model: download completed\n")
            let bars = download.stderr.split(separator: "\n")
            #expect(bars.count == 4)
            #expect(bars.last?.contains("100%  4.0 MB/4.0 MB") == true)
            #expect(bars.first?.contains(" 25%") == true)

            let already = try await gseai(["download", "stub/echo-vl"], stub: stub)
            #expect(already.stdout == "stub/echo-vl is already downloaded\n")
        }
    }

    @Test func jsonOutputIsTheServersJSON() async throws {
        try await StubUpstream.with { stub in
            let result = try await gseai(["models", "--json"], stub: stub)
            let json = try JSONValue(parsing: Array(result.stdout.utf8))
            #expect(json["models"]?.arrayValue?.count == 3)
            let stream = try await gseai(["chat", "stub/echo-text", "hi", "--json"], stub: stub)
            let types = try stream.stdout.split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8))["type"] }
            #expect(types.first == "chat.start")
            #expect(types.last == "chat.end")
        }
    }

    @Test func openAIAPIForOpenAICompatibleServers() async throws {
        try await StubUpstream.with { stub in
            let models = try await gseai(["models", "--api", "openai"], stub: stub)
            #expect(models.stdout == "MODEL\nstub/echo-vl\nstub/echo-text\nstub/embed\n")
            let chat = try await gseai(["chat", "stub/echo-text", "hey", "--api", "openai", "--max-tokens", "5"], stub: stub)
            #expect(chat.stdout == "Echo: hey\n")
            #expect(await stub.state.requests(to: "POST /v1/chat/completions").last?.body?["max_tokens"] == 5)
            let refused = try await gseai(["chat", "stub/echo-text", "x", "--api", "openai", "--continue", "resp_1"], stub: stub)
            #expect(refused.status != 0)
            #expect(refused.stderr == "Error: --continue needs the native API (LM Studio's stateful chat)\n")
        }
    }
}
