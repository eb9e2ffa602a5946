import AsyncHTTPClient
import Foundation
import GSEAI
import NIOCore
@testable import GSEAIGateway
import GSEAITestSupport
import Logging
import Testing

@Suite("Shutting down")
struct ShutdownTests {
    /// A gateway on a database file (or a PostgreSQL schema) that outlives it, in front of a stub, its usage
    /// meter writing only at shutdown. `body` gets the gateway, its running application, a student's id and
    /// API key, and a way to open the database again once the gateway has stopped.
    func withGateway(_ body: (Gateway, RunningApplication, _ userID: String, _ key: String,
                              _ reopen: () async throws -> Storage) async throws -> Void) async throws {
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
            let (user, _) = try await gateway.accounts.createUser(username: "sam", password: "password-sam", role: .student)
            let (key, _) = try await gateway.accounts.createKey(for: user, label: "test")
            try await body(gateway, app, user.id, key, open)
            await app.stop()
            await gateway.finishAfterStop()
        }
    }

    /// The usage meter writes every second; what it counted in the last second is written by its final flush at
    /// shutdown, which needs the database still open: the storage's service must stop after the meter's. The
    /// meter's interval is an hour here, so that only the final write can have written the count (with the
    /// storage closed first, as it once was, this fails every time).
    @Test func theLastSecondsUsageIsWrittenAtShutdown() async throws {
        try await withGateway { _, app, userID, key, reopen in
            let client = try GSEAIClient(apiToken: key, baseURL: app.baseURL)
            let answer = try await client.chat(ChatRequest(model: "stub/echo-text", input: .text("count me")))
            #expect(answer.text == "Echo: count me")
            try await client.shutdown()
            // At once, well within the meter's second.
            await app.stop()

            let reopened = try await reopen()
            let usage = try await reopened.usage.list(userID: userID)
            try await reopened.close()
            #expect(usage.map(\.requests) == [1])
        }
    }

    /// An answer of the chat page still being generated when the gateway stops (nobody follows it) is stopped,
    /// written `stopped` with what it had, and its request counted: the answers go first, then the pool, the
    /// meter's final write and the storage (without the answers' turn, it stays `streaming` and uncounted).
    @Test func anAnswerBeingGeneratedIsStoppedAndWrittenAtShutdown() async throws {
        try await withGateway { _, app, userID, key, reopen in
            func post(_ path: String, _ json: JSONValue) async throws -> JSONValue {
                var request = HTTPClientRequest(url: app.baseURL + path)
                request.method = .POST
                request.headers.add(name: "Authorization", value: "Bearer \(key)")
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: json.jsonString))
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                let body = try await response.body.collect(upTo: 1 << 20)
                return try JSONValue(parsing: Array(body.readableBytesView))
            }
            let conversation = try #require(try await post("/api/conversations", ["model": "stub/echo-text"])["id"]?.stringValue)
            let words = (1...40).map { "w\($0)" }.joined(separator: " ")
            let sent = try await post("/api/conversations/\(conversation)/messages", ["text": .string("[[slow]] \(words)")])
            let message = try #require(sent["assistant_message"]?["id"]?.stringValue)
            // Some of its forty pieces (200 ms apart, after the events that open the answer) are in.
            try await Task.sleep(for: .milliseconds(2500))
            await app.stop()

            let reopened = try await reopen()
            let stored = try await reopened.messages.find(id: message)
            let usage = try await reopened.usage.list(userID: userID)
            try await reopened.close()
            #expect(stored?.status == .stopped)
            #expect(stored?.text.isEmpty == false && stored?.text.contains("w40") == false, "\(stored?.text ?? "")")
            #expect(usage.map(\.requests) == [1])
        }
    }
}
