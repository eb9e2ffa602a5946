import Configuration
import Foundation
import GSEAI

/// The kind of model server, which decides the API surfaces it serves.
public enum UpstreamKind: String, Sendable, CaseIterable {
    /// LM Studio (GSE AI): LM Studio's, OpenAI's and Anthropic's surfaces.
    case lmstudio
    /// An OpenAI-compatible server (LocalAI, vLLM): `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
    /// `/v1/embeddings`.
    case openai
    /// A llama.cpp server (`llama-server`, or llama-cpp-python's): the OpenAI-compatible surface, and
    /// llama.cpp's own under `/llamacpp` (which llama-cpp-python's server does not speak).
    case llamacpp
    /// text-generation-webui: the OpenAI-compatible surface and its internal endpoints, `/v1/internal/*`.
    case tgw
}

/// One model server of the pool, as configured.
public struct UpstreamSettings: Sendable, Hashable {
    /// A short name for logs, metrics and the console (`gpu1`).
    public var name: String
    /// Its base URL.
    public var url: String
    public var kind: UpstreamKind
    /// Its bearer token; never logged or returned.
    public var token: String
    /// How many requests it runs at once (LM Studio's "max concurrent predictions", llama.cpp's `--parallel`).
    public var slots: Int
    /// How the gateway talks HTTP to it (`nil`: the client's default, SwiftNIO for `http://`, AsyncHTTPClient for `https://`).
    public var engine: GSEAIClient.Engine?

    public init(name: String, url: String, kind: UpstreamKind, token: String, slots: Int, engine: GSEAIClient.Engine? = nil) {
        self.name = name
        self.url = url
        self.kind = kind
        self.token = token
        self.slots = slots
        self.engine = engine
    }
}

/// Everything the gateway is configured with, read once at start.
///
/// Each setting has a key such as `gseai.upstream.url`, declared once in ``Setting`` with its help; the
/// environment variable is the key in upper case with underscores (`GSEAI_UPSTREAM_URL`). Sources, first
/// match wins: command-line flags, the environment, a `.env` file in the working directory, a JSON
/// configuration file (`gseai.config.file`), the defaults here.
public struct GatewayConfiguration: Sendable {
    /// The one upstream's base URL (when no pool is configured).
    public var upstreamURL = "http://gseai.gse.buffalo.edu:11434"
    /// The one upstream's kind.
    public var upstreamKind = UpstreamKind.lmstudio
    /// The one upstream's bearer token (`GSEAI_API_TOKEN`); never logged or returned.
    public var upstreamToken = ""
    /// The one upstream's slots.
    public var upstreamSlots = 4
    /// The model servers, when several are configured (`gseai.pool`); empty for the one upstream above.
    public var pool: [UpstreamSettings] = []
    /// How often each upstream's models and health are read again.
    public var upstreamRefresh = Duration.seconds(30)
    /// The SQLite database file; `:memory:` keeps everything in memory (tests).
    public var databasePath = "data/gseai.sqlite"
    /// The address to listen on.
    public var host = "127.0.0.1"
    /// The port to listen on; 0 picks a free one.
    public var port = 8080
    /// The URL people use to reach the gateway, for links and the CSRF origin check; derived from
    /// host and port when empty.
    public var publicURL = ""
    /// Where the other replicas reach this one (to follow and stop its answers); empty: from host and port.
    public var replicaURL = ""
    /// A PEM certificate chain and private key, to serve HTTPS directly.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// The largest request body accepted, in bytes (images travel as base64 inside JSON).
    public var maxBodyBytes = 32 << 20
    /// The largest image, in decoded bytes.
    public var maxImageBytes = 10 << 20
    /// The most pixels an image may declare (width × height), on every surface.
    public var maxImagePixels = 40_000_000
    /// Upstream time limits.
    public var connectTimeout = Duration.seconds(10)
    public var firstByteTimeout = Duration.seconds(300)
    public var idleTimeout = Duration.seconds(120)
    /// How long a caller's connection may take nothing of an answer (its outbound buffer full) before it is
    /// closed, and the work for it cancelled.
    public var callerStallTimeout = Duration.seconds(120)
    /// How the gateway talks HTTP to every upstream (`nil`: the client's default, SwiftNIO for `http://`, AsyncHTTPClient for `https://`).
    public var upstreamEngine: GSEAIClient.Engine?
    /// How long a login session lasts.
    public var sessionLifetime = Duration.seconds(7 * 24 * 3600)
    /// Failed logins allowed per username and address in ``loginWindow``.
    public var loginAttempts = 5
    public var loginWindow = Duration.seconds(300)
    /// The most tokens one answer on the chat page may have (a class may set less).
    public var chatMaxOutputTokens = 4096
    /// The folder of the web page; empty for the page built into the gateway (a SwiftPM resource).
    public var publicDirectory = ""
    /// The fair queue: its order, its limits, and the slots a user holds at most when no class says.
    public var queueDiscipline = FairScheduler.Discipline.fair
    public var queueLimits = FairScheduler.Limits()
    public var concurrencyPerUser = 2
    /// How often the counted token usage is written (and once more at shutdown). Not a setting of the
    /// environment: a crash loses at most this much of the counts; tests lengthen it to see the final write.
    public var usageFlushInterval = Duration.seconds(1)
    /// How long a stop (`SIGTERM`, `SIGINT`) lets the requests in progress end before it cancels what is left.
    public var shutdownGrace = Duration.seconds(30)

    public init() {}

    /// Whether HTTPS is served directly.
    public var usesTLS: Bool { tlsCertificatePath != nil && tlsKeyPath != nil }

    /// Whether cookies are `Secure`: when HTTPS is served directly, and when people reach the gateway over
    /// HTTPS through a proxy that terminates TLS (the public URL says so).
    public var secureCookies: Bool { usesTLS || effectivePublicURL.lowercased().hasPrefix("https://") }

    /// The public URL, explicit or derived.
    public var effectivePublicURL: String {
        if !publicURL.isEmpty { return publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL }
        let displayHost = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        return "\(usesTLS ? "https" : "http")://\(displayHost):\(port)"
    }

    /// Where the other replicas reach this one: explicit, or this process's own address.
    public var effectiveReplicaURL: String {
        if !replicaURL.isEmpty { return replicaURL.hasSuffix("/") ? String(replicaURL.dropLast()) : replicaURL }
        let displayHost = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        return "\(usesTLS ? "https" : "http")://\(displayHost):\(port)"
    }

    /// Whether the database is PostgreSQL (several replicas may share it) rather than a SQLite file.
    public var usesPostgres: Bool { PostgresStorage.handles(databasePath) }

    /// The limits every image must keep, uploaded or inside a request.
    public var imageLimits: ImageLimits { ImageLimits(maxBytes: maxImageBytes, maxPixels: maxImagePixels) }

    /// The upstream time limits for the client core.
    public var timeouts: GSEAIClient.Timeouts {
        .init(connect: connectTimeout, firstByte: firstByteTimeout, idle: idleTimeout)
    }

    /// The model servers: the pool, or the one upstream (named `default`).
    public var upstreams: [UpstreamSettings] {
        let upstreams = pool.isEmpty
            ? [UpstreamSettings(name: "default", url: upstreamURL, kind: upstreamKind, token: upstreamToken, slots: upstreamSlots)]
            : pool
        return upstreams.map { upstream in
            var upstream = upstream
            upstream.engine = upstream.engine ?? upstreamEngine
            return upstream
        }
    }

    /// One setting: its key (the environment variable follows from it) and what it means, for `--help` and
    /// the README. Each key is written here once.
    public struct Setting: Sendable {
        public let key: String
        public let help: String

        /// `GSEAI_UPSTREAM_URL` for `gseai.upstream.url`.
        public var variable: String { key.uppercased().replacingOccurrences(of: ".", with: "_") }

        init(_ key: String, _ help: String) {
            self.key = key
            self.help = help
        }

        static let configFile = Setting("gseai.config.file", "a JSON configuration file, keys nested by their dots (none by default)")
        static let upstreamURL = Setting("gseai.upstream.url", "upstream base URL (default http://gseai.gse.buffalo.edu:11434)")
        static let upstreamKind = Setting("gseai.upstream.kind", "lmstudio (LM Studio's, OpenAI's and Anthropic's surfaces), openai (the /v1 OpenAI surface), llamacpp (/v1 and llama.cpp's own at /llamacpp) or tgw (/v1 and /v1/internal/*)")
        static let upstreamSlots = Setting("gseai.upstream.slots", "requests the upstream runs at once (default 4)")
        static let apiToken = Setting("gseai.api.token", "upstream bearer token, kept on the server")
        static let pool = Setting("gseai.pool", "names of several upstreams, each with gseai.upstream.NAME.url, .kind, .slots, .token (replaces the one upstream)")
        static let upstreamEngine = Setting("gseai.upstream.engine", "nio (the gateway's own HTTP/1.1 client on SwiftNIO, http:// only; the default for http://) or async-http-client (also https://; the default for https://)")
        static let upstreamRefresh = Setting("gseai.upstream.refresh.seconds", "how often upstreams' models and health are read (default 30)")
        static let database = Setting("gseai.database", "SQLite file (default data/gseai.sqlite; :memory: for none), or postgres://user@host:port/db for several replicas")
        static let replicaURL = Setting("gseai.replica.url", "address at which the other replicas reach this one (PostgreSQL; default http://HOST:PORT)")
        static let host = Setting("gseai.host", "listen address (default 127.0.0.1)")
        static let port = Setting("gseai.port", "listen port (default 8080)")
        static let publicURL = Setting("gseai.public.url", "URL people use to reach the gateway (links, CSRF origin check; https makes cookies Secure)")
        static let tlsCertificate = Setting("gseai.tls.certificate", "PEM certificate chain: serve HTTPS directly")
        static let tlsKey = Setting("gseai.tls.key", "PEM private key for the certificate")
        static let bodyBytes = Setting("gseai.limits.body.bytes", "largest request body (default 33554432)")
        static let imageBytes = Setting("gseai.limits.image.bytes", "largest image, decoded (default 10485760)")
        static let imagePixels = Setting("gseai.limits.image.pixels", "most pixels (width × height) an image may declare (default 40000000)")
        static let connectTimeout = Setting("gseai.timeout.connect.seconds", "upstream connect limit (default 10)")
        static let firstByteTimeout = Setting("gseai.timeout.first.byte.seconds", "upstream response-head limit (default 300)")
        static let idleTimeout = Setting("gseai.timeout.idle.seconds", "upstream silence limit between chunks (default 120)")
        static let callerStallTimeout = Setting("gseai.timeout.caller.stall.seconds",
                                                "how long a caller may take nothing of an answer before its connection is closed (default 120)")
        static let sessionHours = Setting("gseai.session.hours", "login session lifetime (default 168)")
        static let loginAttempts = Setting("gseai.login.attempts", "failed logins per user and address per 5 minutes (default 5)")
        static let publicDirectory = Setting("gseai.public.dir", "folder of the web page (default: the page built into the gateway)")
        static let chatMaxOutputTokens = Setting("gseai.chat.max.output.tokens", "most tokens in one chat-page answer (default 4096)")
        static let queueDiscipline = Setting("gseai.queue.discipline", "fair (classes, then students, take turns) or fifo (default fair)")
        static let queueMaxWaiting = Setting("gseai.queue.max.waiting", "requests waiting for a slot in all before 503 (default 1000)")
        static let queueMaxWaitingPerUser = Setting("gseai.queue.max.waiting.per.user", "requests one user may have waiting before 429 (default 20)")
        static let queueMaxWait = Setting("gseai.queue.max.wait.seconds", "longest wait for a slot before 503 (default 180)")
        static let queueAnticipation = Setting("gseai.queue.anticipation.ms", "how long a freed slot is kept for a student who asks again at once (default 50)")
        static let shutdownGrace = Setting("gseai.shutdown.grace.seconds", "how long a stop (SIGTERM) lets requests in progress end before it cuts them (default 30)")
        static let concurrencyPerUser = Setting("gseai.queue.concurrency.per.user", "slots a user holds at most when no class sets it (default 2)")

        /// Every setting, in the order `--help` lists them.
        public static let all: [Setting] = [
            configFile, upstreamURL, upstreamKind, upstreamSlots, apiToken, pool, upstreamEngine, upstreamRefresh, database, replicaURL, host, port, publicURL,
            tlsCertificate, tlsKey, bodyBytes, imageBytes, imagePixels, connectTimeout, firstByteTimeout, idleTimeout,
            callerStallTimeout,
            sessionHours, loginAttempts, publicDirectory, chatMaxOutputTokens, queueDiscipline, queueMaxWaiting,
            queueMaxWaitingPerUser, queueMaxWait, queueAnticipation, concurrencyPerUser, shutdownGrace,
        ]
    }

    /// Reads the configuration from `overrides` (the command-line flags), the environment, an optional
    /// `.env` file, the JSON configuration file it names, and the defaults.
    public static func load(overrides: [String: String] = [:], environmentFile: String? = ".env") async throws -> GatewayConfiguration {
        var providers: [any ConfigProvider] = [
            InMemoryProvider(values: overrides.reduce(into: [:]) { $0[AbsoluteConfigKey(stringLiteral: $1.key)] = ConfigValue(.string($1.value), isSecret: false) }),
            EnvironmentVariablesProvider(),
        ]
        if let environmentFile {
            providers.append(try await EnvironmentVariablesProvider(environmentFilePath: .init(environmentFile), allowMissing: true))
        }
        if let file = ConfigReader(providers: providers).string(forKey: ConfigKey(Setting.configFile.key)) {
            do {
                providers.append(try await FileProvider<JSONSnapshot>(filePath: .init(file)))
            } catch {
                throw ConfigurationError("cannot read the configuration file \(file): \(error)")
            }
        }
        return try GatewayConfiguration(reader: ConfigReader(providers: providers))
    }

    /// Reads every setting from `reader`, checking values as it goes.
    public init(reader: ConfigReader) throws {
        let defaults = GatewayConfiguration()
        func string(_ setting: Setting, isSecret: Bool = false) -> String? {
            reader.string(forKey: ConfigKey(setting.key), isSecret: isSecret)
        }
        func int(_ setting: Setting, _ fallback: Int, range: ClosedRange<Int>) throws -> Int {
            try Self.int(reader, setting.key, fallback, range: range)
        }
        upstreamURL = string(.upstreamURL) ?? defaults.upstreamURL
        upstreamKind = try Self.kind(string(.upstreamKind) ?? defaults.upstreamKind.rawValue, key: Setting.upstreamKind.key)
        upstreamToken = string(.apiToken, isSecret: true) ?? ""
        upstreamSlots = try int(.upstreamSlots, defaults.upstreamSlots, range: 1...1024)
        upstreamRefresh = .seconds(try int(.upstreamRefresh, 30, range: 1...3600))
        if let engine = string(.upstreamEngine) {
            guard let parsed = GSEAIClient.Engine(rawValue: engine) else {
                throw ConfigurationError("\(Setting.upstreamEngine.key) must be nio or async-http-client, not '\(engine)'")
            }
            upstreamEngine = parsed
        }
        databasePath = string(.database) ?? defaults.databasePath
        host = string(.host) ?? defaults.host
        port = try int(.port, defaults.port, range: 0...65535)
        publicURL = string(.publicURL) ?? ""
        replicaURL = string(.replicaURL) ?? ""
        tlsCertificatePath = string(.tlsCertificate)
        tlsKeyPath = string(.tlsKey)
        if (tlsCertificatePath == nil) != (tlsKeyPath == nil) {
            throw ConfigurationError("HTTPS needs both gseai.tls.certificate and gseai.tls.key")
        }
        maxBodyBytes = try int(.bodyBytes, defaults.maxBodyBytes, range: 1024...(1 << 30))
        maxImageBytes = try int(.imageBytes, defaults.maxImageBytes, range: 1024...(1 << 30))
        maxImagePixels = try int(.imagePixels, defaults.maxImagePixels, range: 1...(1 << 32))
        connectTimeout = .seconds(try int(.connectTimeout, 10, range: 1...600))
        firstByteTimeout = .seconds(try int(.firstByteTimeout, 300, range: 1...3600))
        idleTimeout = .seconds(try int(.idleTimeout, 120, range: 1...3600))
        callerStallTimeout = .seconds(try int(.callerStallTimeout, 120, range: 1...3600))
        shutdownGrace = .seconds(try int(.shutdownGrace, 30, range: 1...3600))
        sessionLifetime = .seconds(3600 * (try int(.sessionHours, 168, range: 1...8760)))
        loginAttempts = try int(.loginAttempts, defaults.loginAttempts, range: 1...1000)
        publicDirectory = string(.publicDirectory) ?? defaults.publicDirectory
        chatMaxOutputTokens = try int(.chatMaxOutputTokens, defaults.chatMaxOutputTokens, range: 16...1_000_000)
        let discipline = string(.queueDiscipline) ?? defaults.queueDiscipline.rawValue
        guard let queueDiscipline = FairScheduler.Discipline(rawValue: discipline) else {
            throw ConfigurationError("\(Setting.queueDiscipline.key) must be fair or fifo, not '\(discipline)'")
        }
        self.queueDiscipline = queueDiscipline
        queueLimits = FairScheduler.Limits(
            maxWaiting: try int(.queueMaxWaiting, defaults.queueLimits.maxWaiting, range: 0...1_000_000),
            maxWaitingPerUser: try int(.queueMaxWaitingPerUser, defaults.queueLimits.maxWaitingPerUser, range: 0...100_000),
            maxWait: .seconds(try int(.queueMaxWait, 180, range: 1...3600)),
            anticipation: .milliseconds(try int(.queueAnticipation, 50, range: 0...10_000))
        )
        concurrencyPerUser = try int(.concurrencyPerUser, defaults.concurrencyPerUser, range: 1...1024)
        guard (try? GSEAIClient.normalizedBaseURL(upstreamURL)) != nil else {
            throw ConfigurationError("gseai.upstream.url is not an http(s) URL: \(upstreamURL)")
        }
        pool = try Self.pool(reader)
        if let engine = upstreamEngine, let tls = upstreams.first(where: { !engine.reaches($0.url) }) {
            throw ConfigurationError("\(Setting.upstreamEngine.key) nio speaks plain HTTP only, and upstream \(tls.name) is \(tls.url)")
        }
    }

    /// The upstreams named by `gseai.pool`, each from `gseai.upstream.NAME.*`.
    private static func pool(_ reader: ConfigReader) throws -> [UpstreamSettings] {
        let names = reader.stringArray(forKey: ConfigKey(Setting.pool.key))
            ?? reader.string(forKey: ConfigKey(Setting.pool.key)).map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            ?? []
        var seen: Set<String> = []
        return try names.filter { !$0.isEmpty }.map { name in
            guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }), !["url", "kind", "slots", "refresh"].contains(name) else {
                throw ConfigurationError("an upstream's name has letters, digits and dashes (and is not url, kind, slots or refresh): '\(name)'")
            }
            guard seen.insert(name.lowercased()).inserted else { throw ConfigurationError("the upstream '\(name)' is named twice in gseai.pool") }
            let prefix = "gseai.upstream.\(name.lowercased())"
            guard let url = reader.string(forKey: ConfigKey("\(prefix).url")), (try? GSEAIClient.normalizedBaseURL(url)) != nil else {
                throw ConfigurationError("\(prefix).url must be the http(s) URL of the upstream '\(name)'")
            }
            return UpstreamSettings(
                name: name,
                url: url,
                kind: try kind(reader.string(forKey: ConfigKey("\(prefix).kind")) ?? "lmstudio", key: "\(prefix).kind"),
                token: reader.string(forKey: ConfigKey("\(prefix).token"), isSecret: true) ?? "",
                slots: try int(reader, "\(prefix).slots", 4, range: 1...1024)
            )
        }
    }

    private static func kind(_ text: String, key: String) throws -> UpstreamKind {
        guard let kind = UpstreamKind(rawValue: text) else {
            throw ConfigurationError("\(key) must be \(UpstreamKind.allCases.map(\.rawValue).joined(separator: ", ")), not '\(text)'")
        }
        return kind
    }

    private static func int(_ reader: ConfigReader, _ key: String, _ fallback: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = reader.string(forKey: ConfigKey(key)) ?? reader.int(forKey: ConfigKey(key)).map(String.init) else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError("\(key) must be a whole number in \(range.lowerBound)…\(range.upperBound), not '\(text)'")
        }
        return value
    }

    /// The settings with their environment variables, for `--help` and the README.
    public static var documentation: [(key: String, variable: String, meaning: String)] {
        Setting.all.map { ($0.key, $0.variable, $0.help) }
    }
}

/// A configuration value that cannot be used.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
