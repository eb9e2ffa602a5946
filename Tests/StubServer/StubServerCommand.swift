import ArgumentParser
import Foundation
import GSEAITestSupport

/// Runs the stub upstream as a process for the end-to-end suite and the benchmarks.
@main
struct StubServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gseai-stub",
        abstract: "A stand-in GSE AI server (LM Studio v1/v0, OpenAI and Anthropic APIs) for tests."
    )

    @Option(help: "The port on 127.0.0.1; 0 picks a free one.")
    var port = 0

    @Option(help: "The bearer token the stub accepts.")
    var token = "stub-token"

    @Option(help: "Generations run at once, like a GPU server's slots; the others wait (default: no limit).")
    var slots: Int?

    @Option(help: "How long each generation takes, in milliseconds, when --slots is given.")
    var serviceMs = 0

    func run() async throws {
        let stub = try await StubUpstream.start(token: token, port: port, slots: slots, serviceTime: .milliseconds(serviceMs))
        // The end-to-end suite reads this line to learn the port.
        FileHandle.standardOutput.write(Data("listening on \(stub.baseURL)\n".utf8))
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}

