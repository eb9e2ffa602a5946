import ArgumentParser
import Foundation
import GSEAIGateway
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

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
            var handler = GatewayLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "gseai")
        var loaded = try await options.load()
        if loaded.port == 0 {
            // Pick the free port now, so that every link the gateway makes (the first-run login, set-up
            // links, the CSRF origin) names the port it really listens on.
            loaded.port = try await FreePort.find(host: loaded.host)
        }
        let configuration = loaded
        if configuration.upstreamToken.isEmpty {
            logger.warning("GSEAI_API_TOKEN is not set: the upstream will refuse requests that need its token")
        }
        let storage = try await options.openStorage(configuration, asReplica: true, logger: logger)
        let gateway = try Gateway(configuration: configuration, storage: storage, logger: logger)
        let interrupted = try await gateway.recoverInterruptedAnswers()
        if interrupted > 0 { logger.notice("answers cut short by the last stop are marked interrupted", metadata: ["count": "\(interrupted)"]) }
        if let lines = try await gateway.firstRunSetup() {
            Terminal.out(lines.joined(separator: "\n") + "\n")
        }
        let app = try gateway.buildApplication(onServerRunning: { [configuration] channel in
            let port = channel.localAddress?.port ?? configuration.port
            let url = configuration.effectivePublicURL
            // The end-to-end suite reads this line to learn the port.
            let upstreams = configuration.upstreams.map { "\($0.name) (\($0.kind.rawValue), \($0.slots) slots) at \($0.url)" }.joined(separator: ", ")
            Terminal.out("gseai gateway listening on \(configuration.usesTLS ? "https" : "http")://\(configuration.host):\(port) (public URL \(url)), upstreams \(upstreams)\n")
        }, logger: logger)
        // A stop lets the requests in progress end, then stops the rest in order (Gateway.buildApplication); a
        // request still running after the grace (a long stream) is cut, and the rest stops at once.
        var group = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = configuration.shutdownGrace
        group.maximumCancellationDuration = .seconds(10)
        var failure: (any Error)?
        do { try await ServiceGroup(configuration: group).run() } catch { failure = error }
        // After a stop that had to cancel (the services then stop at once, in no order), the last usage and the
        // close, in order; after a graceful one, nothing is left to do.
        await gateway.finishAfterStop()
        if let failure { throw failure }
    }
}

/// A free TCP port on a host, found by binding port 0 and reading what the system chose.
enum FreePort {
    static func find(host: String) async throws -> Int {
        // Not `wait()`: Swift's tasks may run on the event loops (main.swift), where waiting is forbidden.
        let socket = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: host, port: 0).get()
        let port = socket.localAddress?.port
        try? await socket.close().get()
        guard let port else { throw CLIError("cannot find a free port on \(host)") }
        return port
    }
}
