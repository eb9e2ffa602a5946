import ArgumentParser
import Foundation
import GSEAI

/// Where the server is and how to authenticate; shared by every client subcommand.
struct ClientOptions: ParsableArguments {
    @Option(help: "The API token (default: the GSEAI_API_TOKEN environment variable).")
    var token: String?

    @Option(help: "The server's host name.")
    var host = "gseai.gse.buffalo.edu"

    @Option(help: "The server's port.")
    var port = 11434

    @Flag(help: "Use HTTPS instead of HTTP.")
    var https = false

    @Option(help: "The server's base URL, such as https://example.edu:8443 (overrides --host, --port, --https).")
    var baseURL: String?

    @Flag(help: "Print the server's JSON instead of text.")
    var json = false

    /// A client for these options; fails with a one-line message when there is no token.
    func makeClient() throws -> GSEAIClient {
        guard let token = token ?? ProcessInfo.processInfo.environment["GSEAI_API_TOKEN"], !token.isEmpty else {
            throw CLIError("no API token: set GSEAI_API_TOKEN or pass --token")
        }
        if let baseURL {
            return try GSEAIClient(apiToken: token, baseURL: baseURL)
        }
        // Through the checked initialiser: a host that makes no URL (a space in it, say) is an error, not a trap.
        let hostPart = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return try GSEAIClient(apiToken: token, baseURL: "\(https ? "https" : "http")://\(hostPart):\(port)")
    }
}

/// Which of the server's APIs a subcommand uses.
enum APIChoice: String, ExpressibleByArgument, CaseIterable {
    /// LM Studio's native `/api/v1`.
    case native
    /// The OpenAI-compatible `/v1` (llama.cpp, LocalAI, vLLM, …).
    case openai
    /// llama.cpp's own API (`/completion`, `/tokenize`, …), at the base URL: a llama.cpp server's address,
    /// or the gateway's `…/llamacpp`.
    case llamacpp
    /// text-generation-webui's internal API (`/v1/internal/*`), and its `/v1` for chat.
    case tgw
}

/// A failure explained in one line.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension GSEAIClient {
    /// Runs `body` with this client and shuts it down afterwards, also on failure.
    func run<T>(_ body: (GSEAIClient) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            try await shutdown()
            return result
        } catch {
            try? await shutdown()
            throw error
        }
    }
}
