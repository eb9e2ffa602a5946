import ArgumentParser
import Foundation
import GSEAIGateway
import Hummingbird
import Logging

/// `gseai serve`: runs the gateway.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway: the web application and API in front of the GSE AI server.",
        discussion: """
            Every setting can also come from the environment or a .env file: \
            \(GatewayConfiguration.documentation.map { "\($0.variable) (\($0.meaning))" }.joined(separator: "; ")).
            """
    )

    @OptionGroup var options: GatewayOptions

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "gseai")
        let configuration = try await options.load()
        if configuration.upstreamToken.isEmpty {
            logger.warning("GSEAI_API_TOKEN is not set: the upstream will refuse requests that need its token")
        }
        let storage = try await options.openStorage(configuration, logger: logger)
        let gateway = try Gateway(configuration: configuration, storage: storage, logger: logger)
        let interrupted = try await gateway.recoverInterruptedAnswers()
        if interrupted > 0 { logger.notice("answers cut short by the last stop are marked interrupted", metadata: ["count": "\(interrupted)"]) }
        if let lines = try await gateway.firstRunSetup() {
            Terminal.out(lines.joined(separator: "\n") + "\n")
        }
        let app = try gateway.buildApplication(onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            var url = configuration.effectivePublicURL
            if configuration.port == 0, configuration.publicURL.isEmpty { url = url.replacingOccurrences(of: ":0", with: ":\(port)") }
            // The end-to-end suite reads this line to learn the port.
            Terminal.out("gseai gateway listening on \(configuration.usesTLS ? "https" : "http")://\(configuration.host):\(port) (public URL \(url)), upstream \(configuration.upstreamKind.rawValue) at \(configuration.upstreamURL)\n")
        }, logger: logger)
        try await app.runService()
    }
}
