import GSEAI
import Foundation
@testable import GSEAIGateway
import Testing

@Suite("Gateway configuration")
struct ConfigurationTests {
    func envFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-\(UUID()).env").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func flagsOverTheEnvFileOverTheDefaults() async throws {
        let path = try envFile("GSEAI_PORT=9999\nGSEAI_UPSTREAM_KIND=openai\nGSEAI_API_TOKEN=from-file\nGSEAI_UPSTREAM_URL=http://127.0.0.1:1234/\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let configuration = try await GatewayConfiguration.load(overrides: ["gseai.port": "1234"], environmentFile: path)
        #expect(configuration.port == 1234)
        #expect(configuration.upstreamKind == .openai)
        #expect(configuration.upstreamToken == "from-file")
        #expect(configuration.upstreamURL == "http://127.0.0.1:1234/")
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.databasePath == "data/gseai.sqlite")
        #expect(configuration.effectivePublicURL == "http://127.0.0.1:1234")
    }

    @Test func badValuesAreExplained() async throws {
        await #expect(throws: ConfigurationError.self) {
            try await GatewayConfiguration.load(overrides: ["gseai.upstream.kind": "ollama"], environmentFile: nil)
        }
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.port": "http"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.port must be a whole number in 0…65535, not 'http'")
        }
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.tls.certificate": "/x.pem"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "HTTPS needs both gseai.tls.certificate and gseai.tls.key")
        }
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.upstream.url": "ftp://x"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.upstream.url is not an http(s) URL: ftp://x")
        }
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.shutdown.grace.seconds": "0"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.shutdown.grace.seconds must be a whole number in 1…3600, not '0'")
        }
        #expect(try await GatewayConfiguration.load(overrides: [:], environmentFile: nil).shutdownGrace == .seconds(30))
        #expect(try await GatewayConfiguration.load(overrides: ["gseai.shutdown.grace.seconds": "5"], environmentFile: nil).shutdownGrace == .seconds(5))
        // The caller's stall limit: 120 s unless set, within 1…3600.
        #expect(try await GatewayConfiguration.load(overrides: [:], environmentFile: nil).callerStallTimeout == .seconds(120))
        #expect(try await GatewayConfiguration.load(overrides: ["gseai.timeout.caller.stall.seconds": "30"], environmentFile: nil)
            .callerStallTimeout == .seconds(30))
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.timeout.caller.stall.seconds": "-1"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.timeout.caller.stall.seconds must be a whole number in 1…3600, not '-1'")
        }
        do {
            _ = try await GatewayConfiguration.load(overrides: ["gseai.upstream.engine": "curl"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.upstream.engine must be nio or async-http-client, not 'curl'")
        }
        do {
            _ = try await GatewayConfiguration.load(
                overrides: ["gseai.upstream.engine": "nio", "gseai.upstream.url": "https://gpu.example.edu"], environmentFile: nil)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.description == "gseai.upstream.engine nio speaks plain HTTP only, and upstream default is https://gpu.example.edu")
        }
    }

    @Test func theUpstreamEngineFollowsTheSchemeUnlessSet() async throws {
        let automatic = try await GatewayConfiguration.load(overrides: ["gseai.upstream.url": "http://127.0.0.1:1"], environmentFile: nil)
        #expect(automatic.upstreams.map(\.engine) == [nil])
        let upstream = try Upstream(settings: automatic.upstreams[0], timeouts: .init(), logger: .init(label: "test"))
        #expect(upstream.client.engine == .nio)
        try await upstream.client.shutdown()
        let secure = try await GatewayConfiguration.load(overrides: ["gseai.upstream.url": "https://127.0.0.1:1"], environmentFile: nil)
        let tls = try Upstream(settings: secure.upstreams[0], timeouts: .init(), logger: .init(label: "test"))
        #expect(tls.client.engine == .asyncHTTPClient)
        try await tls.client.shutdown()
        let chosen = try await GatewayConfiguration.load(
            overrides: ["gseai.upstream.url": "http://127.0.0.1:1", "gseai.upstream.engine": "async-http-client"], environmentFile: nil)
        let set = try Upstream(settings: chosen.upstreams[0], timeouts: .init(), logger: .init(label: "test"))
        #expect(set.client.engine == .asyncHTTPClient)
        try await set.client.shutdown()
    }
}

@Suite("Usage days")
struct UsageDayTests {
    @Test(arguments: [
        (0.0, "1970-01-01"), (951_782_400.0, "2000-02-29"), (1_798_761_599.0, "2026-12-31"), (1_798_761_600.0, "2027-01-01"),
        (-86_400.0, "1969-12-31"),
    ])
    func dayInUTC(_ seconds: Double, _ expected: String) {
        #expect(UsageRecorder.day(Date(timeIntervalSince1970: seconds)) == expected)
    }
}

@Suite("Query strings")
struct FormQueryTests {
    @Test func aQueryIsReadAsAFormWritesIt() {
        let query = FormQuery("q=cell+wall%2Bmembrane&limit=20&empty=&flag&q=second&bad=%E0%A4%A&caf%C3%A9=%C3%A9t%C3%A9")
        #expect(query.get("q") == "cell wall+membrane")  // the first of two
        #expect(query.int("limit") == 20)
        #expect(query.get("empty") == "")
        #expect(query.get("flag") == "")
        #expect(query.get("missing") == nil)
        #expect(query.int("q") == nil)
        #expect(query.get("bad") == "%E0%A4%A")  // a broken escape is kept as written
        #expect(query.get("café") == "été")
        #expect(FormQuery(nil).get("q") == nil)
        #expect(FormQuery("").get("q") == nil)
    }
}

@Suite("Page cursors")
struct PageCursorTests {
    @Test func aCursorReadsBackAsItWasHandedOut() {
        let cursor = PageCursor(at: Date(timeIntervalSince1970: 1_700_000_000.123456), id: "a_b-c")
        #expect(PageCursor(text: cursor.text) == cursor)  // the id may hold '_' itself
        #expect(PageCursor(text: PageCursor(at: Date(timeIntervalSince1970: 5)).text) == PageCursor(at: Date(timeIntervalSince1970: 5)))
        for text in ["", "soon", "_abc", "nan_x", "inf_x", "12"] { #expect(PageCursor(text: text) == nil, "\(text)") }
    }
}
