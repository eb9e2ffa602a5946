import Foundation
import GSEAI
import Logging
import Testing

@testable import GSEAIGateway

/// `gseai db copy`: a SQLite database, every table filled, copied into an empty PostgreSQL one; a second
/// copy into the now filled one is refused. Runs when `GSEAI_TEST_POSTGRES_URL` is set (`scripts/test`).
@Suite("Copying a SQLite database into PostgreSQL", .enabled(if: TestDatabase.postgresURL != nil))
struct DatabaseCopyTests {
    let logger = Logger(label: "DatabaseCopyTests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs `body` with a new SQLite source and an empty PostgreSQL target, and closes both whatever happens.
    func withSourceAndTarget(_ body: (Storage, Storage) async throws -> Void) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("copy-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let source = try await SQLiteStorage.open(path: file, logger: logger)
        let target = try await TestDatabase.openPostgres(schema: TestDatabase.newSchema(), logger: logger)
        do {
            try await body(source, target)
        } catch {
            try? await source.close()
            try? await target.close()
            throw error
        }
        try await source.close()
        try await target.close()
    }

    @Test func everyRowArrivesAndASecondCopyIsRefused() async throws {
        try await withSourceAndTarget { source, target in
            let now = Date(timeIntervalSince1970: 1_800_000_000.25)
            let teacher = User(username: "teacher", passwordHash: "$2b$hash", role: .instructor, createdAt: now)
            let student = User(username: "sam", passwordHash: nil, role: .student, createdAt: now)
            try await source.users.create(teacher)
            try await source.users.create(student)
            let course = ClassSession(instructorID: teacher.id, name: "Course", joinCode: "COPY01",
                                      policy: ClassPolicy(dailyTokenBudget: 500, requestsPerMinute: 4), createdAt: now)
            try await source.classes.create(course)
            _ = try await source.classes.addMember(classID: course.id, userID: student.id, at: now)
            try await source.classes.setActiveClass(userID: student.id, classID: course.id)
            try await source.apiKeys.create(APIKey(userID: student.id, prefix: "gsk_abcdefgh", hash: "digest", label: "laptop", createdAt: now))
            let conversation = Conversation(userID: student.id, title: "Émile — ünïcode", model: "m", createdAt: now, updatedAt: now)
            try await source.conversations.create(conversation)
            _ = try await source.messages.append(StoredMessage(conversationID: conversation.id, role: "user", text: "hello", createdAt: now))
            let image = StoredImage(hash: "ab12", mimeType: "image/png", data: Data([0x89, 0x50, 0x4E, 0x47, 0, 255]), width: 1, height: 1, createdAt: now)
            try await source.images.store(image, ownerID: student.id)
            try await source.usage.add(userID: student.id, classID: course.id, model: "m", day: "2027-01-15", inputTokens: 7, outputTokens: 11)
            try await source.responses.record(responseID: "resp_1", userID: student.id, upstream: "gpu1", at: now)

            let counts = try await DatabaseCopy.copy(from: source, to: target)
            let byTable = Dictionary(uniqueKeysWithValues: counts.map { ($0.table, $0.rows) })
            #expect(byTable["users"] == 2)
            #expect(byTable["classes"] == 1)
            #expect(byTable["messages"] == 1)
            #expect(byTable["images"] == 1)
            #expect(byTable["usage_daily"] == 1)
            #expect(counts.map(\.table) == DatabaseCopy.tables.map(\.name))

            // Read back through the target's own repositories.
            #expect(try await target.users.find(username: "teacher")?.passwordHash == "$2b$hash")
            #expect(try await target.classes.activeClass(userID: student.id) == course.id)
            #expect(try await target.classes.find(id: course.id)?.policy.dailyTokenBudget == 500)
            #expect(try await target.conversations.find(id: conversation.id)?.title == "Émile — ünïcode")
            #expect(try await target.images.find(hash: "ab12")?.data == Data([0x89, 0x50, 0x4E, 0x47, 0, 255]))
            #expect(try await target.usage.total(userID: student.id, classID: course.id, day: "2027-01-15") == 18)
            #expect(try await target.responses.upstream(of: "resp_1") == "gpu1")
            #expect(try await target.apiKeys.find(prefix: "gsk_abcdefgh")?.createdAt == now)

            await #expect(throws: DatabaseCopy.CopyError.self) { try await DatabaseCopy.copy(from: source, to: target) }
        }
    }

    /// A source that an older gateway left on an earlier schema is refused before anything is written, with
    /// both versions named and what to do.
    @Test func aSourceOnAnotherSchemaVersionIsRefusedAndNothingIsWritten() async throws {
        try await withSourceAndTarget { source, target in
            try await source.users.create(User(username: "old", passwordHash: nil, role: .student, createdAt: Date()))
            let database = try #require(source.database)
            let latest = try #require(try await database.raw("SELECT MAX(version) AS version FROM schema_migrations")
                .first(decodingColumn: "version", as: Int.self))
            try await database.raw("DELETE FROM schema_migrations WHERE version = \(bind: latest)").run()

            let error = await #expect(throws: DatabaseCopy.CopyError.self) { try await DatabaseCopy.copy(from: source, to: target) }
            if case .schemaMismatch(let from, let to)? = error {
                #expect(from == latest - 1 && to == latest)
            } else {
                Issue.record("expected a schema mismatch, got \(String(describing: error))")
            }
            #expect(error?.description == "the source has schema version \(latest - 1) and the target \(latest): run this gateway on the source first")
            #expect(try await target.users.find(username: "old") == nil)
        }
    }
}
