import Foundation
import GSEAI
@testable import GSEAIGateway
import GSEAITestSupport
import Logging
import Testing

@Suite("Shutting down")
struct ShutdownTests {
    /// The usage meter writes every second; what it counted in the last second is written by its final flush at
    /// shutdown, which needs the database still open: the storage's service must stop after the meter's. The
    /// meter's interval is an hour here, so that only the final write can have written the count (with the
    /// storage closed first, as it once was, this fails every time).
    @Test func theLastSecondsUsageIsWrittenAtShutdown() async throws {
        let logger = Logger(label: "shutdown-test", factory: { _ in SwiftLogNoOpLogHandler() })
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-shutdown-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("gateway.sqlite").path
        let schema = TestDatabase.newSchema()
        func open() async throws -> Storage {
            TestDatabase.postgresURL == nil
                ? try await SQLiteStorage.open(path: path, logger: logger)
                : try await TestDatabase.openPostgres(schema: schema, logger: logger)
        }
        try await StubUpstream.with { stub in
            var configuration = GatewayConfiguration()
            configuration.upstreamURL = stub.baseURL
            configuration.upstreamToken = stub.token
            configuration.port = 0
            configuration.usageFlushInterval = .seconds(3600)
            let gateway = try Gateway(configuration: configuration, storage: try await open(), passwordCost: 4, logger: logger)
            let app = try await RunningApplication.start(logger: logger) { onServerRunning in
                try gateway.buildApplication(onServerRunning: onServerRunning, logger: logger)
            }
            let (user, _) = try await gateway.accounts.createUser(username: "alice", password: "password-alice", role: .student)
            let (key, _) = try await gateway.accounts.createKey(for: user, label: "test")
            let client = try GSEAIClient(apiToken: key, baseURL: app.baseURL)
            let answer = try await client.chat(ChatRequest(model: "stub/echo-text", input: .text("count me")))
            #expect(answer.text == "Echo: count me")
            try await client.shutdown()
            // At once, well within the meter's second.
            await app.stop()

            let reopened = try await open()
            let usage = try await reopened.usage.list(userID: user.id)
            try await reopened.close()
            #expect(usage.map(\.requests) == [1])
        }
    }
}
