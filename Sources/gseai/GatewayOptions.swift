import ArgumentParser
import Foundation
import GSEAIGateway
import Logging

/// The gateway's settings as flags; each overrides its environment variable and `.env`.
struct GatewayOptions: ParsableArguments {
    @Option(help: "Upstream base URL (GSEAI_UPSTREAM_URL; default http://gseai.gse.buffalo.edu:11434).")
    var upstreamURL: String?

    @Option(help: "Upstream kind: lmstudio, openai, llamacpp or tgw (GSEAI_UPSTREAM_KIND; default lmstudio).")
    var upstreamKind: String?

    @Option(help: "Requests the upstream runs at once (GSEAI_UPSTREAM_SLOTS; default 4).")
    var upstreamSlots: Int?

    @Option(help: "A JSON configuration file, for several upstreams among others (GSEAI_CONFIG_FILE).")
    var configFile: String?

    @Option(help: "Order of the queue for slots: fair or fifo (GSEAI_QUEUE_DISCIPLINE; default fair).")
    var queueDiscipline: String?

    @Option(help: "SQLite database file, :memory:, or postgres://user@host:port/db for several replicas (GSEAI_DATABASE; default data/gseai.sqlite).")
    var database: String?

    @Option(help: "The address at which the other replicas reach this one, with PostgreSQL (GSEAI_REPLICA_URL; default http://HOST:PORT).")
    var replicaURL: String?

    @Option(help: "Listen address (GSEAI_HOST; default 127.0.0.1).")
    var host: String?

    @Option(help: "Listen port, 0 for any free one (GSEAI_PORT; default 8080).")
    var port: Int?

    @Option(help: "The URL people use to reach the gateway (GSEAI_PUBLIC_URL).")
    var publicURL: String?

    @Option(help: "PEM certificate chain, to serve HTTPS directly (GSEAI_TLS_CERTIFICATE).")
    var tlsCertificate: String?

    @Option(help: "PEM private key for --tls-certificate (GSEAI_TLS_KEY).")
    var tlsKey: String?

    @Option(help: "Largest request body in bytes (GSEAI_LIMITS_BODY_BYTES; default 33554432).")
    var maxBodyBytes: Int?

    @Option(help: "Upstream silence limit between chunks, seconds (GSEAI_TIMEOUT_IDLE_SECONDS; default 120).")
    var idleTimeout: Int?

    @Option(help: "Upstream response-head limit, seconds (GSEAI_TIMEOUT_FIRST_BYTE_SECONDS; default 300).")
    var firstByteTimeout: Int?

    @Option(help: "How long a caller may take nothing of an answer before its connection is closed, seconds (GSEAI_TIMEOUT_CALLER_STALL_SECONDS; default 120).")
    var callerStallTimeout: Int?

    @Option(help: "Where to read further settings (default .env in the working directory; 'none' for none).")
    var envFile = ".env"

    /// The configuration: these flags over the environment over `.env` over the defaults.
    func load() async throws -> GatewayConfiguration {
        var overrides: [String: String] = [:]
        overrides["gseai.upstream.url"] = upstreamURL
        overrides["gseai.upstream.kind"] = upstreamKind
        overrides["gseai.upstream.slots"] = upstreamSlots.map(String.init)
        overrides["gseai.config.file"] = configFile
        overrides["gseai.queue.discipline"] = queueDiscipline
        overrides["gseai.database"] = database
        overrides["gseai.replica.url"] = replicaURL
        overrides["gseai.host"] = host
        overrides["gseai.port"] = port.map(String.init)
        overrides["gseai.public.url"] = publicURL
        overrides["gseai.tls.certificate"] = tlsCertificate
        overrides["gseai.tls.key"] = tlsKey
        overrides["gseai.limits.body.bytes"] = maxBodyBytes.map(String.init)
        overrides["gseai.timeout.idle.seconds"] = idleTimeout.map(String.init)
        overrides["gseai.timeout.first.byte.seconds"] = firstByteTimeout.map(String.init)
        overrides["gseai.timeout.caller.stall.seconds"] = callerStallTimeout.map(String.init)
        do {
            return try await GatewayConfiguration.load(overrides: overrides, environmentFile: envFile == "none" ? nil : envFile)
        } catch let error as ConfigurationError {
            throw CLIError(error.description)
        }
    }

    /// Opens the configured database (running its migrations).
    /// `asReplica`: the gateway itself, which registers as a replica (PostgreSQL) so that the others reach
    /// its answers; an administrative command does not.
    func openStorage(_ configuration: GatewayConfiguration, asReplica: Bool = false, logger: Logger) async throws -> Storage {
        if configuration.usesPostgres {
            do {
                return try await PostgresStorage.open(url: configuration.databasePath,
                                                      replicaURL: asReplica ? configuration.effectiveReplicaURL : nil, logger: logger)
            } catch let error as StorageSetupError {
                throw CLIError(error.description)
            }
        }
        let path = configuration.databasePath == ":memory:" ? nil : configuration.databasePath
        return try await SQLiteStorage.open(path: path, logger: logger)
    }
}
