import Foundation
import Logging
import SQLiteKit
import Synchronization
import Testing

@testable import GSEAIGateway

/// The SQLite storage: every repository against a real database, and the migrations against real files.
@Suite struct StorageTests {
    /// A fixed instant whose fraction survives the trip through Unix seconds exactly.
    let t0 = Date(timeIntervalSince1970: 1_700_000_000.25)

    // MARK: Users

    @Test func usersAreCreatedFoundListedAndUpdated() async throws {
        try await withStorage { storage in
            let alice = User(username: "Alice", passwordHash: "hash-a", role: .student, createdAt: t0)
            let bob = User(username: "bob", passwordHash: nil, role: .admin, disabled: true, createdAt: t0 + 60)
            try await storage.users.create(bob)
            try await storage.users.create(alice)

            var storedAlice = alice
            storedAlice.username = "alice"
            #expect(try await storage.users.find(id: alice.id) == storedAlice)
            #expect(try await storage.users.find(username: "ALICE") == storedAlice)
            #expect(try await storage.users.find(username: "bob") == bob)
            #expect(try await storage.users.find(username: "carol") == nil)
            #expect(try await storage.users.find(id: "no-such-id") == nil)
            #expect(try await storage.users.list() == [storedAlice, bob])
            #expect(try await storage.users.count() == 2)

            // Each change writes its own column only, so changes made one after another from the same
            // (stale) read all stick; each returns the user as stored.
            var expected = storedAlice
            expected.role = .instructor
            #expect(try await storage.users.setRole(userID: alice.id, to: .instructor) == expected)
            expected.passwordHash = "new-hash"
            #expect(try await storage.users.setPassword(userID: alice.id, hash: "new-hash", spendingSetupToken: nil, at: t0) == expected)
            expected.disabled = true
            #expect(try await storage.users.setDisabled(userID: alice.id, true, at: t0) == expected)
            #expect(try await storage.users.find(id: alice.id) == expected)
            #expect(try await storage.users.find(id: bob.id) == bob)

            await #expect(throws: StorageError.notFound) { try await storage.users.setRole(userID: "ghost", to: .admin) }
            await #expect(throws: StorageError.notFound) {
                try await storage.users.setPassword(userID: "ghost", hash: "h", spendingSetupToken: nil, at: t0)
            }
            await #expect(throws: StorageError.notFound) { try await storage.users.setDisabled(userID: "ghost", true, at: t0) }
        }
    }

    @Test func accountChangesTakeWhatBelongsWithThemInOneTransaction() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            for (id, user) in [("a1", alice), ("a2", alice), ("b1", bob)] {
                try await storage.sessions.create(session(id, for: user, createdAt: t0, lifetime: 3600))
            }
            let key = APIKey(userID: alice.id, prefix: "gsk_alice001", hash: "h1", label: "one", createdAt: t0)
            let bobsKey = APIKey(userID: bob.id, prefix: "gsk_bob00001", hash: "h2", label: "one", createdAt: t0)
            try await storage.apiKeys.create(key)
            try await storage.apiKeys.create(bobsKey)

            // A new password ends the user's sessions, not anyone else's; keys stay.
            _ = try await storage.users.setPassword(userID: alice.id, hash: "x", spendingSetupToken: nil, at: t0)
            #expect(try await storage.sessions.list(userID: alice.id).isEmpty)
            #expect(try await storage.sessions.list(userID: bob.id).map(\.id) == ["b1"])
            #expect(try await storage.apiKeys.find(id: key.id)?.revokedAt == nil)

            // Disabling ends sessions and revokes keys; an earlier revocation stands; enabling revives nothing.
            try await storage.sessions.create(session("a3", for: alice, createdAt: t0, lifetime: 3600))
            let older = APIKey(userID: alice.id, prefix: "gsk_alice002", hash: "h3", label: "old", createdAt: t0, revokedAt: t0 + 1)
            try await storage.apiKeys.create(older)
            _ = try await storage.users.setDisabled(userID: alice.id, true, at: t0 + 20)
            #expect(try await storage.sessions.list(userID: alice.id).isEmpty)
            #expect(try await storage.apiKeys.find(id: key.id)?.revokedAt == t0 + 20)
            #expect(try await storage.apiKeys.find(id: older.id)?.revokedAt == t0 + 1)
            #expect(try await storage.apiKeys.find(id: bobsKey.id)?.revokedAt == nil)
            #expect(try await storage.sessions.list(userID: bob.id).map(\.id) == ["b1"])
            _ = try await storage.users.setDisabled(userID: alice.id, false, at: t0 + 30)
            #expect(try await storage.apiKeys.find(id: key.id)?.revokedAt == t0 + 20)
        }
    }

    @Test func aTakenUsernameIsAConflictWhateverItsCase() async throws {
        try await withStorage { storage in
            try await storage.users.create(User(username: "alice", passwordHash: nil, role: .student))
            let error = await #expect(throws: StorageError.self) {
                try await storage.users.create(User(username: "ALICE", passwordHash: nil, role: .admin))
            }
            #expect(error.map(isConflict) == true)
            #expect(try await storage.users.count() == 1)
            #expect(try await storage.users.find(username: "alice")?.role == .student)
        }
    }

    // MARK: Login sessions

    @Test func sessionsAreListedNewestFirstTouchedAndDeleted() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let older = session("s-old", for: alice, createdAt: t0, lifetime: 100)
            let newer = LoginSession(
                id: "s-new", userID: alice.id, csrfToken: "csrf-new", createdAt: t0 + 10, expiresAt: t0 + 1000,
                lastSeenAt: t0 + 10, userAgent: nil, remoteAddress: nil
            )
            let bobs = session("s-bob", for: bob, createdAt: t0, lifetime: 100)
            for item in [older, newer, bobs] { try await storage.sessions.create(item) }

            #expect(try await storage.sessions.find(id: "s-old") == older)
            #expect(try await storage.sessions.find(id: "s-new") == newer)
            #expect(try await storage.sessions.find(id: "s-none") == nil)
            #expect(try await storage.sessions.list(userID: alice.id) == [newer, older])

            try await storage.sessions.touch(id: "s-old", at: t0 + 50)
            #expect(try await storage.sessions.find(id: "s-old")?.lastSeenAt == t0 + 50)
            #expect(try await storage.sessions.find(id: "s-old")?.createdAt == t0)

            try await storage.sessions.delete(id: "s-new")
            #expect(try await storage.sessions.find(id: "s-new") == nil)
            #expect(try await storage.sessions.list(userID: alice.id).map(\.id) == ["s-old"])

            try await storage.sessions.delete(id: "s-old")
            #expect(try await storage.sessions.list(userID: alice.id).isEmpty)
            #expect(try await storage.sessions.list(userID: bob.id) == [bobs])
        }
    }

    @Test func expiredSessionsAreDeletedAndLiveOnesKept() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            try await storage.sessions.create(session("expired", for: alice, createdAt: t0, lifetime: 10))
            try await storage.sessions.create(session("boundary", for: alice, createdAt: t0, lifetime: 20))
            try await storage.sessions.create(session("live", for: alice, createdAt: t0, lifetime: 30))

            try await storage.sessions.deleteExpired(before: t0 + 20)
            #expect(Set(try await storage.sessions.list(userID: alice.id).map(\.id)) == ["boundary", "live"])
        }
    }

    @Test func foreignKeysAreEnforced() async throws {
        try await withStorage { storage in
            let nobody = User(username: "nobody", passwordHash: nil, role: .student)  // never stored
            await #expect(throws: (any Error).self) {
                try await storage.sessions.create(session("orphan", for: nobody, createdAt: t0, lifetime: 10))
            }
            await #expect(throws: (any Error).self) {
                try await storage.apiKeys.create(APIKey(userID: nobody.id, prefix: "gsk_aaaaaaaa", hash: "h", label: "l"))
            }
            await #expect(throws: (any Error).self) {
                try await add(to: storage, nobody, "m", "2025-01-01", 1, 1)
            }
            await #expect(throws: (any Error).self) {
                try await storage.responses.record(responseID: "resp_1", userID: nobody.id, at: t0)
            }
            let owner = try await storage.responses.owner(of: "resp_1")
            #expect(owner == nil)
        }
    }

    // MARK: API keys

    @Test func apiKeysAreFoundListedTouchedAndRevoked() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let first = APIKey(userID: alice.id, prefix: "gsk_first111", hash: "hash-1", label: "laptop", createdAt: t0)
            let second = APIKey(userID: alice.id, prefix: "gsk_second22", hash: "hash-2", label: "cluster", createdAt: t0 + 5)
            let bobs = APIKey(userID: bob.id, prefix: "gsk_bobbbbbb", hash: "hash-b", label: "bob", createdAt: t0)
            for key in [first, second, bobs] { try await storage.apiKeys.create(key) }

            #expect(try await storage.apiKeys.find(prefix: "gsk_first111") == first)
            #expect(try await storage.apiKeys.find(id: second.id) == second)
            #expect(try await storage.apiKeys.find(prefix: "gsk_missing0") == nil)
            #expect(try await storage.apiKeys.find(id: "missing") == nil)
            #expect(try await storage.apiKeys.list(userID: alice.id) == [second, first])

            try await storage.apiKeys.touch(id: first.id, at: t0 + 7)
            #expect(try await storage.apiKeys.find(id: first.id)?.lastUsedAt == t0 + 7)

            try await storage.apiKeys.revoke(id: first.id, at: t0 + 8)
            try await storage.apiKeys.revoke(id: first.id, at: t0 + 9)  // the first revocation stands
            #expect(try await storage.apiKeys.find(id: first.id)?.revokedAt == t0 + 8)
            #expect(try await storage.apiKeys.find(id: second.id)?.revokedAt == nil)

            try await storage.apiKeys.revoke(id: second.id, at: t0 + 20)
            let keys = try await storage.apiKeys.list(userID: alice.id)
            #expect(keys.map(\.revokedAt) == [t0 + 20, t0 + 8])
            #expect(keys.count == 2)  // revoked keys are still listed
            #expect(try await storage.apiKeys.find(id: bobs.id)?.revokedAt == nil)
        }
    }

    @Test func aTakenKeyPrefixIsAConflict() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let original = APIKey(userID: alice.id, prefix: "gsk_samesame", hash: "hash-1", label: "one", createdAt: t0)
            try await storage.apiKeys.create(original)
            let error = await #expect(throws: StorageError.self) {
                try await storage.apiKeys.create(APIKey(userID: alice.id, prefix: "gsk_samesame", hash: "hash-2", label: "two"))
            }
            #expect(error.map(isConflict) == true)
            #expect(try await storage.apiKeys.list(userID: alice.id) == [original])
        }
    }

    // MARK: Response ownership

    @Test func responseOwnersAreRecordedOnceAndKept() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let mallory = try await makeUser("mallory", in: storage)
            #expect(try await storage.responses.owner(of: "resp_abc") == nil)

            try await storage.responses.record(responseID: "resp_abc", userID: alice.id, at: t0)
            try await storage.responses.record(responseID: "resp_abc", userID: alice.id, at: t0 + 1)
            #expect(try await storage.responses.owner(of: "resp_abc") == alice.id)

            try await storage.responses.record(responseID: "resp_abc", userID: mallory.id, at: t0 + 2)
            #expect(try await storage.responses.owner(of: "resp_abc") == alice.id)
            #expect(try await storage.responses.owner(of: "resp_other") == nil)
        }
    }

    // MARK: Usage

    @Test func usageAccumulatesPerUserModelAndDay() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            try await add(to: storage, alice, "qwen", "2025-03-01", 10, 100)
            try await add(to: storage, alice, "qwen", "2025-03-01", 5, 50)
            try await add(to: storage, alice, "qwen", "2025-03-02", 1, 2)
            try await add(to: storage, alice, "gemma", "2025-03-01", 3, 4)
            try await add(to: storage, bob, "qwen", "2025-02-28", 7, 8)

            let alices = [
                row(alice, "qwen", "2025-03-02", requests: 1, input: 1, output: 2),
                row(alice, "gemma", "2025-03-01", requests: 1, input: 3, output: 4),
                row(alice, "qwen", "2025-03-01", requests: 2, input: 15, output: 150),
            ]
            #expect(try await storage.usage.list(userID: alice.id) == alices)
            let bobs = [row(bob, "qwen", "2025-02-28", requests: 1, input: 7, output: 8)]
            #expect(try await storage.usage.list(userID: bob.id) == bobs)
            #expect(try await storage.usage.list(userID: nil) == alices + bobs)
            #expect(try await storage.usage.list(userID: "nobody").isEmpty)
        }
    }

    @Test func usageIsKeptPerClass() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            // The class ids need no class: usage outlives a deleted class.
            try await add(to: storage, alice, "qwen", "2025-03-01", 1, 2)
            try await add(to: storage, alice, "qwen", "2025-03-01", 10, 20, in: "biology")
            try await add(to: storage, alice, "qwen", "2025-03-01", 10, 20, in: "biology")
            try await add(to: storage, alice, "qwen", "2025-03-01", 100, 200, in: "chemistry")

            let outside = row(alice, "qwen", "2025-03-01", requests: 1, input: 1, output: 2)
            let biology = row(alice, "qwen", "2025-03-01", requests: 2, input: 20, output: 40, in: "biology")
            let chemistry = row(alice, "qwen", "2025-03-01", requests: 1, input: 100, output: 200, in: "chemistry")
            #expect(try await storage.usage.list(userID: alice.id) == [outside, biology, chemistry])
            #expect(try await storage.usage.list(userID: alice.id, classID: "biology") == [biology])
            #expect(try await storage.usage.list(userID: nil, classID: "chemistry") == [chemistry])
            #expect(try await storage.usage.total(userID: alice.id, classID: "biology", day: "2025-03-01") == 60)
            #expect(try await storage.usage.total(userID: alice.id, classID: "chemistry", day: "2025-03-01") == 300)
            #expect(try await storage.usage.total(userID: alice.id, classID: "physics", day: "2025-03-01") == 0)
        }
    }

    @Test func usageFromBeforeClassesIsKeptOutsideAnyClass() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-usage-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appending(path: "gateway.sqlite").path
        // A database of the version before usage was kept per class, with usage in it.
        try await withRawDatabase(path: path) { database in
            _ = try await Migrations.run(on: database, migrations: Array(Migrations.all.prefix(3)), logger: Logger(label: "test"))
            try await database.raw("""
                INSERT INTO users (id, username, password_hash, role, disabled, created_at)
                VALUES ('u1', 'alice', 'x', 'student', FALSE, 0)
                """).run()
            try await database.raw("""
                INSERT INTO usage_daily (user_id, model, day, requests, input_tokens, output_tokens)
                VALUES ('u1', 'qwen', '2025-03-01', 3, 30, 60)
                """).run()
        }
        try await withStorage(path: path) { storage in
            #expect(try await storage.usage.list(userID: "u1") == [
                UsageRecord(userID: "u1", classID: nil, model: "qwen", day: "2025-03-01", requests: 3, inputTokens: 30, outputTokens: 60)
            ])
            // And new usage adds to the same row.
            try await storage.usage.add(userID: "u1", model: "qwen", day: "2025-03-01", inputTokens: 1, outputTokens: 1)
            #expect(try await storage.usage.list(userID: "u1").map(\.requests) == [4])
        }
    }

    @Test func concurrentUsageAddsAreNotLost() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        try await add(to: storage, alice, "m", "2025-03-01", 2, 3)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await storage.usage.list(userID: alice.id) == [
                row(alice, "m", "2025-03-01", requests: 50, input: 100, output: 150)
            ])
        }
    }

    // MARK: The database itself

    @Test func aFileDatabaseIsInWALModeAndMigratesOnlyOnce() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-storage-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appending(path: "nested/dir/gateway.sqlite").path

        let alice = User(username: "alice", passwordHash: "h", role: .admin, createdAt: t0)
        try await withStorage(path: path) { storage in
            try await storage.ping()
            try await storage.users.create(alice)
        }
        try await withStorage(path: path) { storage in
            try await storage.ping()
            #expect(try await storage.users.list() == [alice])
        }

        try await withRawDatabase(path: path) { database in
            let mode = try await database.raw("PRAGMA journal_mode").first(decodingColumn: "journal_mode", as: String.self)
            #expect(mode == "wal")
            let versions = try await database.raw("SELECT version FROM schema_migrations ORDER BY version")
                .all(decodingColumn: "version", as: Int.self)
            #expect(versions == Migrations.all.map(\.version))
            #expect(try await Migrations.run(on: database, logger: logger).isEmpty)
        }
    }

    @Test func aDatabaseFromANewerBuildIsRefused() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-storage-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appending(path: "gateway.sqlite").path
        try await withStorage(path: path) { _ in }
        try await withRawDatabase(path: path) { database in
            try await database.raw("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
                .run()
        }
        let refusal = MigrationError.databaseIsNewer(databaseVersion: 999, knownVersion: Migrations.all.count)
        await #expect(throws: refusal) {
            let storage = try await SQLiteStorage.open(path: path, logger: logger)
            try await storage.close()
        }
    }

    @Test func aFailingMigrationLeavesNothingBehind() async throws {
        try await withRawDatabase(path: nil) { database in
            let good = Migration(version: 1, name: "good", statements: ["CREATE TABLE a (x TEXT)"])
            let bad = Migration(version: 2, name: "bad", statements: ["CREATE TABLE b (x TEXT)", "NOT SQL AT ALL"])
            await #expect(throws: (any Error).self) {
                try await Migrations.run(on: database, migrations: [good, bad], logger: logger)
            }
            let versions = try await database.raw("SELECT version FROM schema_migrations")
                .all(decodingColumn: "version", as: Int.self)
            #expect(versions == [1])
            let tables = try await database.raw("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('a', 'b')")
                .all(decodingColumn: "name", as: String.self)
            #expect(tables == ["a"])
        }
    }

    @Test func aMalformedMigrationListIsRejected() {
        let gap = [
            Migration(version: 1, name: "one", statements: ["SELECT 1"]),
            Migration(version: 3, name: "three", statements: ["SELECT 1"]),
        ]
        #expect(throws: MigrationError.self) { try Migrations.validate(gap) }
        #expect(throws: Never.self) { try Migrations.validate(Migrations.all) }
    }

    @Test func aTransactionDoesNotTakeInOtherTasksStatements() async throws {
        try await withRawDatabase(path: nil) { raw in
            let database = SerialSQLDatabase(raw)
            try await Migrations.run(on: database, logger: logger)
            let users = SQLUserRepository(database: database)
            let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)

            let transaction = Task {
                try await database.transaction { session in
                    try await SQLUserRepository(database: session)
                        .create(User(username: "doomed", passwordHash: nil, role: .student))
                    startedContinuation.yield()
                    // Long enough for the other task's insert to reach the connection if the gate let it.
                    try await Task.sleep(for: .milliseconds(100))
                    throw CancellationError()
                }
            }
            for await _ in started { break }
            try await users.create(User(username: "survivor", passwordHash: nil, role: .student))
            await #expect(throws: CancellationError.self) { try await transaction.value }

            #expect(try await users.list().map(\.username) == ["survivor"])
        }
    }

    /// Each of the gateway's databases is the witness of SQLKit's `withSession`: the gateway's target takes Swift's
    /// `NonisolatedNonsendingByDefault`, under which a closure type that differs from SQLKit's makes the method no
    /// witness at all and SQLKit's default (which hands the closure the database itself) runs instead, silently
    /// (README, "Layout"). Through the storage's wrapper and the engine's own database, the session handed out
    /// is the engine's session, not either of them.
    @Test func everyDatabaseOfTheGatewayHandsOutItsOwnSession() async throws {
        let storage = try await TestDatabase.open(logger: logger)
        let database = try #require(storage.database)
        let session = try await database.withSession { session in String(describing: type(of: session)) }
        #expect(!["ClosableSQLDatabase", "SerialSQLDatabase", "PostgresClientDatabase"].contains(session))
        if TestDatabase.engine == "sqlite" {
            #expect(session == "UncancellableSQLDatabase")
        } else {
            #expect(session.hasPrefix("PostgresConnectionSQLDatabase"))
        }
        try await storage.close()
    }

    @Test func aStatementFromACancelledTaskStillRuns() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            // Like the usage of a request whose client left before the stream ended.
            let request = Task {
                try? await Task.sleep(for: .seconds(60))
                try await add(to: storage, alice, "m", "2025-03-01", 1, 1)
            }
            request.cancel()
            try await request.value
            #expect(try await storage.usage.list(userID: alice.id).map(\.requests) == [1])
        }
    }

    @Test func closingFromACancelledTaskClosesTheConnection() async throws {
        let storage = try await SQLiteStorage.open(path: nil, logger: logger)
        // Like a service shutting down in a cancelled task group; a connection left open would trip
        // sqlite-nio's assertion when released.
        let shutdown = Task {
            try? await Task.sleep(for: .seconds(60))
            try await storage.close()
        }
        shutdown.cancel()
        try await shutdown.value
        await #expect(throws: (any Error).self) { try await storage.ping() }
        try await storage.close()  // a second close is harmless
    }

    /// A graceful stop closes the storage in its turn and `gseai serve` closes it again after the stop: the
    /// second close did the first's work again, and sqlite-nio's second close dereferences the freed connection
    /// (every `gseai serve` on SQLite, a release build, ended with signal 11 at SIGTERM; a debug build's SQLite
    /// checks its arguments and hid it, so the count is what is checked here).
    @Test func aStorageIsClosedOnceWhateverTheCalls() async throws {
        let connection = try await SQLiteConnection.open(storage: .memory, logger: logger)
        let closes = Mutex(0)
        let storage = SQLStorage.make(database: connection.sql()) {
            closes.withLock { $0 += 1 }
            try await connection.close()
        }
        try await storage.ping()
        try await storage.close()
        try await storage.close()
        async let third: Void = storage.close()
        async let fourth: Void = storage.close()
        _ = try await (third, fourth)
        #expect(closes.withLock { $0 } == 1)
        await #expect(throws: StorageClosedError.self) { try await storage.ping() }
    }

    /// The same on the engine the tests run on (SQLite, or PostgreSQL and its client's pool): closed as a
    /// stop closes it, twice and at once, then refusing statements.
    @Test func theStorageClosesTwiceAndAtOnceHarmlessly() async throws {
        let storage = try await TestDatabase.open(logger: logger)
        try await storage.ping()
        async let first: Void = storage.close()
        async let second: Void = storage.close()
        _ = try await (first, second)
        try await storage.close()
        await #expect(throws: StorageClosedError.self) { try await storage.ping() }
    }

    // MARK: Helpers

    /// Silent: the migrations log each step at `info`, once per test.
    let logger = Logger(label: "StorageTests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs `body` with storage that is closed afterwards, as a connection left open is a bug.
    /// Without a path, on the engine the tests run on (``TestDatabase``); with one, a SQLite file.
    func withStorage(path: String? = nil, _ body: (Storage) async throws -> Void) async throws {
        let storage = if let path { try await SQLiteStorage.open(path: path, logger: logger) } else { try await TestDatabase.open(logger: logger) }
        do {
            try await body(storage)
        } catch {
            try await storage.close()
            throw error
        }
        try await storage.close()
    }

    /// Runs `body` on a plain connection, to look at the database the way the storage cannot.
    func withRawDatabase(path: String?, _ body: (any SQLDatabase) async throws -> Void) async throws {
        let connection = try await SQLiteConnection.open(storage: path.map { .file(path: $0) } ?? .memory, logger: logger)
        do {
            try await body(connection.sql())
        } catch {
            try await connection.close()
            throw error
        }
        try await connection.close()
    }

    func makeUser(_ username: String, in storage: Storage) async throws -> User {
        let user = User(username: username, passwordHash: nil, role: .student, createdAt: t0)
        try await storage.users.create(user)
        return user
    }

    func session(_ id: String, for user: User, createdAt: Date, lifetime: TimeInterval) -> LoginSession {
        LoginSession(
            id: id, userID: user.id, csrfToken: "csrf-\(id)", createdAt: createdAt,
            expiresAt: createdAt + lifetime, lastSeenAt: createdAt, userAgent: "Mozilla/5.0", remoteAddress: "10.0.0.1"
        )
    }

    func add(to storage: Storage, _ user: User, _ model: String, _ day: String, _ input: Int, _ output: Int,
             in classID: String? = nil) async throws {
        try await storage.usage.add(userID: user.id, classID: classID, model: model, day: day, inputTokens: input,
                                    outputTokens: output)
    }

    func row(_ user: User, _ model: String, _ day: String, requests: Int, input: Int, output: Int, in classID: String? = nil)
        -> UsageRecord
    {
        UsageRecord(
            userID: user.id, classID: classID, model: model, day: day, requests: requests, inputTokens: input,
            outputTokens: output
        )
    }

    func isConflict(_ error: StorageError) -> Bool {
        if case .conflict = error { return true }
        return false
    }
}
