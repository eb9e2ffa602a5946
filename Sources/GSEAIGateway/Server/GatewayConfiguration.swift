import Configuration
import Foundation
import GSEAI

/// The kind of server behind the gateway, which decides the API surfaces it forwards.
public enum UpstreamKind: String, Sendable, CaseIterable {
    /// LM Studio (GSE AI): every surface.
    case lmstudio
    /// An OpenAI-compatible server (llama.cpp, LocalAI, text-generation-webui, vLLM): `/v1/models`,
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    case openai
}

/// Everything the gateway is configured with, read once at start.
///
/// Each setting has a key such as `gseai.upstream.url`; the environment variable is the key in upper case
/// with underscores (`GSEAI_UPSTREAM_URL`). Sources, first match wins: command-line flags, the environment,
/// a `.env` file in the working directory, the defaults here.
public struct GatewayConfiguration: Sendable {
    /// The upstream's base URL.
    public var upstreamURL = "http://gseai.gse.buffalo.edu:11434"
    /// The upstream's kind.
    public var upstreamKind = UpstreamKind.lmstudio
    /// The upstream's bearer token (`GSEAI_API_TOKEN`); never logged or returned.
    public var upstreamToken = ""
    /// The SQLite database file; `:memory:` keeps everything in memory (tests).
    public var databasePath = "data/gseai.sqlite"
    /// The address to listen on.
    public var host = "127.0.0.1"
    /// The port to listen on; 0 picks a free one.
    public var port = 8080
    /// The URL people use to reach the gateway, for links and the CSRF origin check; derived from
    /// host and port when empty.
    public var publicURL = ""
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
    /// How long a login session lasts.
    public var sessionLifetime = Duration.seconds(7 * 24 * 3600)
    /// Failed logins allowed per username and address in ``loginWindow``.
    public var loginAttempts = 5
    public var loginWindow = Duration.seconds(300)
    /// The most tokens one answer on the chat page may have (a class may set less).
    public var chatMaxOutputTokens = 4096
    /// The folder of the web page; empty for the page built into the gateway (a SwiftPM resource).
    public var publicDirectory = ""

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

    /// The limits every image must keep, uploaded or inside a request.
    public var imageLimits: ImageLimits { ImageLimits(maxBytes: maxImageBytes, maxPixels: maxImagePixels) }

    /// The upstream time limits for the client core.
    public var timeouts: GSEAIClient.Timeouts {
        .init(connect: connectTimeout, firstByte: firstByteTimeout, idle: idleTimeout)
    }

    /// Reads the configuration from `overrides` (the command-line flags), the environment, an optional
    /// `.env` file and the defaults.
    public static func load(overrides: [String: String] = [:], environmentFile: String? = ".env") async throws -> GatewayConfiguration {
        var providers: [any ConfigProvider] = [
            InMemoryProvider(values: overrides.reduce(into: [:]) { $0[AbsoluteConfigKey(stringLiteral: $1.key)] = ConfigValue(.string($1.value), isSecret: false) }),
            EnvironmentVariablesProvider(),
        ]
        if let environmentFile {
            providers.append(try await EnvironmentVariablesProvider(environmentFilePath: .init(environmentFile), allowMissing: true))
        }
        return try GatewayConfiguration(reader: ConfigReader(providers: providers))
    }

    /// Reads every setting from `reader`, checking values as it goes.
    public init(reader: ConfigReader) throws {
        let defaults = GatewayConfiguration()
        upstreamURL = reader.string(forKey: "gseai.upstream.url", default: defaults.upstreamURL)
        let kind = reader.string(forKey: "gseai.upstream.kind", default: defaults.upstreamKind.rawValue)
        guard let upstreamKind = UpstreamKind(rawValue: kind) else {
            throw ConfigurationError("gseai.upstream.kind must be lmstudio or openai, not '\(kind)'")
        }
        self.upstreamKind = upstreamKind
        upstreamToken = reader.string(forKey: "gseai.api.token", isSecret: true, default: "")
        databasePath = reader.string(forKey: "gseai.database", default: defaults.databasePath)
        host = reader.string(forKey: "gseai.host", default: defaults.host)
        port = try Self.int(reader, "gseai.port", defaults.port, range: 0...65535)
        publicURL = reader.string(forKey: "gseai.public.url", default: "")
        tlsCertificatePath = reader.string(forKey: "gseai.tls.certificate")
        tlsKeyPath = reader.string(forKey: "gseai.tls.key")
        if (tlsCertificatePath == nil) != (tlsKeyPath == nil) {
            throw ConfigurationError("HTTPS needs both gseai.tls.certificate and gseai.tls.key")
        }
        maxBodyBytes = try Self.int(reader, "gseai.limits.body.bytes", defaults.maxBodyBytes, range: 1024...(1 << 30))
        maxImageBytes = try Self.int(reader, "gseai.limits.image.bytes", defaults.maxImageBytes, range: 1024...(1 << 30))
        maxImagePixels = try Self.int(reader, "gseai.limits.image.pixels", defaults.maxImagePixels, range: 1...(1 << 32))
        connectTimeout = .seconds(try Self.int(reader, "gseai.timeout.connect.seconds", 10, range: 1...600))
        firstByteTimeout = .seconds(try Self.int(reader, "gseai.timeout.first.byte.seconds", 300, range: 1...3600))
        idleTimeout = .seconds(try Self.int(reader, "gseai.timeout.idle.seconds", 120, range: 1...3600))
        sessionLifetime = .seconds(3600 * (try Self.int(reader, "gseai.session.hours", 168, range: 1...8760)))
        loginAttempts = try Self.int(reader, "gseai.login.attempts", defaults.loginAttempts, range: 1...1000)
        publicDirectory = reader.string(forKey: "gseai.public.dir", default: defaults.publicDirectory)
        chatMaxOutputTokens = try Self.int(reader, "gseai.chat.max.output.tokens", defaults.chatMaxOutputTokens, range: 16...1_000_000)
        guard (try? GSEAIClient.normalizedBaseURL(upstreamURL)) != nil else {
            throw ConfigurationError("gseai.upstream.url is not an http(s) URL: \(upstreamURL)")
        }
    }

    private static func int(_ reader: ConfigReader, _ key: String, _ fallback: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = reader.string(forKey: ConfigKey(key)) else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError("\(key) must be a whole number in \(range.lowerBound)…\(range.upperBound), not '\(text)'")
        }
        return value
    }

    /// The settings with their environment variables, for `--help` and the README.
    public static let documentation: [(key: String, variable: String, meaning: String)] = [
        ("gseai.upstream.url", "GSEAI_UPSTREAM_URL", "upstream base URL (default http://gseai.gse.buffalo.edu:11434)"),
        ("gseai.upstream.kind", "GSEAI_UPSTREAM_KIND", "lmstudio (every surface) or openai (the /v1 OpenAI surface)"),
        ("gseai.api.token", "GSEAI_API_TOKEN", "upstream bearer token, kept on the server"),
        ("gseai.database", "GSEAI_DATABASE", "SQLite file (default data/gseai.sqlite; :memory: for none)"),
        ("gseai.host", "GSEAI_HOST", "listen address (default 127.0.0.1)"),
        ("gseai.port", "GSEAI_PORT", "listen port (default 8080)"),
        ("gseai.public.url", "GSEAI_PUBLIC_URL", "URL people use to reach the gateway (links, CSRF origin check)"),
        ("gseai.tls.certificate", "GSEAI_TLS_CERTIFICATE", "PEM certificate chain: serve HTTPS directly"),
        ("gseai.tls.key", "GSEAI_TLS_KEY", "PEM private key for the certificate"),
        ("gseai.limits.body.bytes", "GSEAI_LIMITS_BODY_BYTES", "largest request body (default 33554432)"),
        ("gseai.limits.image.bytes", "GSEAI_LIMITS_IMAGE_BYTES", "largest image, decoded (default 10485760)"),
        ("gseai.limits.image.pixels", "GSEAI_LIMITS_IMAGE_PIXELS", "most pixels (width × height) an image may declare (default 40000000)"),
        ("gseai.timeout.connect.seconds", "GSEAI_TIMEOUT_CONNECT_SECONDS", "upstream connect limit (default 10)"),
        ("gseai.timeout.first.byte.seconds", "GSEAI_TIMEOUT_FIRST_BYTE_SECONDS", "upstream response-head limit (default 300)"),
        ("gseai.timeout.idle.seconds", "GSEAI_TIMEOUT_IDLE_SECONDS", "upstream silence limit between chunks (default 120)"),
        ("gseai.session.hours", "GSEAI_SESSION_HOURS", "login session lifetime (default 168)"),
        ("gseai.login.attempts", "GSEAI_LOGIN_ATTEMPTS", "failed logins per user and address per 5 minutes (default 5)"),
        ("gseai.public.dir", "GSEAI_PUBLIC_DIR", "folder of the web page (default: the page built into the gateway)"),
        ("gseai.chat.max.output.tokens", "GSEAI_CHAT_MAX_OUTPUT_TOKENS", "most tokens in one chat-page answer (default 4096)"),
    ]
}

/// A configuration value that cannot be used.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
