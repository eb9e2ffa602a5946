import ArgumentParser
import Foundation
import GSEAI

/// `gseai tokenize`: a text's tokens, from llama.cpp's `/tokenize` or text-generation-webui's `encode`.
struct TokenizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print a text's token ids (llama.cpp or text-generation-webui).",
        discussion: "With --api llamacpp the base URL is the llama.cpp server's, or the gateway's …/llamacpp."
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The text.")
    var text: String

    @Option(help: "The API: llamacpp (/tokenize) or tgw (/v1/internal/encode).")
    var api = APIChoice.llamacpp

    func run() async throws {
        guard api == .llamacpp || api == .tgw else { throw CLIError("tokenize needs --api llamacpp or tgw") }
        try await options.makeClient().run { client in
            let ids: [Int]
            if api == .tgw {
                let tokens = try await client.encode(text)
                if options.json { return try Terminal.printJSON(tokens) }
                ids = tokens.tokens
            } else {
                let tokens = try await client.tokenize(text)
                if options.json { return try Terminal.printJSON(tokens) }
                ids = tokens.ids
            }
            Terminal.out(ids.map(String.init).joined(separator: " ") + "\n")
            Terminal.err("\(ids.count) tokens\n")
        }
    }
}
