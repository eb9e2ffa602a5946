import Foundation
import GSEAI
import GSEAITestSupport
import Testing

/// `--api llamacpp` and `--api tgw`, against the stub speaking llama.cpp's and text-generation-webui's APIs.
@Suite("gseai commands for llama.cpp and text-generation-webui", .serialized)
struct LlamaCppAndTGWCommandTests {
    func gseai(_ arguments: [String], stub: StubUpstream) async throws -> CLIResult {
        try await CLIRunner.run(arguments + ["--base-url", stub.baseURL], environment: ["GSEAI_API_TOKEN": stub.token])
    }

    @Test func chatThroughTheChatTemplateAndTheNativeCompletion() async throws {
        try await StubUpstream.with { stub in
            let streamed = try await gseai(["chat", "stub/echo-text", "hello there", "--api", "llamacpp", "--system", "Be brief."], stub: stub)
            #expect(streamed.status == 0, "\(streamed.stderr)")
            let prompt = "<start_of_turn>system\nBe brief.<end_of_turn>\n<start_of_turn>user\nhello there<end_of_turn>\n<start_of_turn>model\n"
            #expect(streamed.stdout == "Echo: \(prompt)\n")
            #expect(streamed.stderr.contains("\(prompt.unicodeScalars.count) tokens in"))
            let sent = await stub.state.requests(to: "POST /completion").last?.body
            #expect(sent?["prompt"] == .string(prompt))
            #expect(sent?["stream"] == true)
            #expect(sent?["model"] == "stub/echo-text")

            let whole = try await gseai(["chat", "stub/echo-text", "a b c", "--api", "llamacpp", "--no-stream", "--max-tokens", "2"], stub: stub)
            #expect(whole.stdout == "Echo: <start_of_turn>user\na \n")
            #expect(whole.stderr.contains(" 2 out"))
            #expect(await stub.state.requests(to: "POST /completion").last?.body?["n_predict"] == 2)
        }
    }

    @Test func tokenizeWithEitherServer() async throws {
        try await StubUpstream.with { stub in
            let llama = try await gseai(["tokenize", "Hi!"], stub: stub)
            #expect(llama.stdout == "72 105 33\n")
            #expect(llama.stderr == "3 tokens\n")
            let tgw = try await gseai(["tokenize", "Hi", "--api", "tgw"], stub: stub)
            #expect(tgw.stdout == "72 105\n")
            let wrong = try await gseai(["tokenize", "Hi", "--api", "native"], stub: stub)
            #expect(wrong.status != 0)
            #expect(wrong.stderr == "Error: tokenize needs --api llamacpp or tgw\n")
        }
    }

    @Test func textGenerationWebUIModelsLoadAndUnload() async throws {
        try await StubUpstream.with { stub in
            let models = try await gseai(["models", "--api", "tgw"], stub: stub)
            let lines = models.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines == [["MODEL", "LOADED"], ["stub/echo-vl", "no"], ["stub/echo-text", "yes"], ["stub/embed", "no"]])
            let loaded = try await gseai(["load", "stub/echo-vl", "--api", "tgw"], stub: stub)
            #expect(loaded.stdout == "loaded stub/echo-vl\n")
            #expect(await stub.state.requests(to: "POST /v1/internal/model/load").last?.body == ["model_name": "stub/echo-vl"])
            let other = try await gseai(["unload", "stub/echo-text", "--api", "tgw"], stub: stub)
            #expect(other.status != 0)
            #expect(other.stderr == "Error: stub/echo-text is not loaded (the loaded model is stub/echo-vl)\n")
            #expect(await stub.state.requests(to: "POST /v1/internal/model/unload").isEmpty)
            let unloaded = try await gseai(["unload", "stub/echo-vl", "--api", "tgw"], stub: stub)
            #expect(unloaded.stdout == "unloaded stub/echo-vl\n")
            let llama = try await gseai(["load", "x", "--api", "llamacpp"], stub: stub)
            #expect(llama.stderr == "Error: load needs --api native or tgw (llama.cpp loads its model when it starts)\n")
        }
    }
}
