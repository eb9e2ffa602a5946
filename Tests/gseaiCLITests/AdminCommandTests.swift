import Foundation
import Testing

@Suite("gseai user and key commands", .serialized)
struct AdminCommandTests {
    /// Runs `gseai` on a database file of its own.
    func gseai(_ arguments: [String], database: String, stdin: String? = nil) async throws -> CLIResult {
        try await CLIRunner.run(arguments + ["--database", database, "--env-file", "none"], stdin: stdin)
    }

    func withDatabase(_ body: (String) async throws -> Void) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-cli-\(UUID())")
        defer { try? FileManager.default.removeItem(at: folder) }
        try await body(folder.appendingPathComponent("gseai.sqlite").path)
    }

    @Test func usersFromCreationToDisabled() async throws {
        try await withDatabase { database in
            let added = try await gseai(["user", "add", "Ines", "--role", "instructor"], database: database)
            #expect(added.status == 0)
            let lines = added.stdout.split(separator: "\n")
            #expect(lines.first == "created instructor 'ines'")
            let password = try #require(lines.last?.split(separator: " ").last)
            #expect(password.count == 16)

            let given = try await gseai(["user", "add", "sam", "--password-stdin"], database: database, stdin: "a fine password\n")
            #expect(given.stdout == "created student 'sam'\n")

            let duplicate = try await gseai(["user", "add", "INES"], database: database)
            #expect(duplicate.status != 0)
            #expect(duplicate.stderr == "Error: the username 'ines' is taken\n")

            let promoted = try await gseai(["user", "set-role", "sam", "admin"], database: database)
            #expect(promoted.stdout == "'sam' is now admin\n")

            let reset = try await gseai(["user", "reset-password", "sam"], database: database)
            #expect(reset.stdout.hasPrefix("password of 'sam' changed; their sessions are ended\npassword: "))

            let disabled = try await gseai(["user", "disable", "ines"], database: database)
            #expect(disabled.stdout == "'ines' is disabled; their sessions are ended and keys revoked\n")

            let list = try await gseai(["user", "list"], database: database)
            let rows = list.stdout.split(separator: "\n").map { $0.split(separator: "\t").prefix(3).joined(separator: " ") }
            #expect(rows == ["USERNAME ROLE STATUS", "ines instructor disabled", "sam admin active"])

            let missing = try await gseai(["user", "disable", "nobody"], database: database)
            #expect(missing.stderr == "Error: no user 'nobody'\n")
            let badRole = try await gseai(["user", "add", "x", "--role", "king"], database: database)
            #expect(badRole.status != 0)
        }
    }

    @Test func keyCreatePrintsOnlyTheKey() async throws {
        try await withDatabase { database in
            _ = try await gseai(["user", "add", "alice"], database: database)
            let key = try await gseai(["key", "create", "alice", "--name", "notebook"], database: database)
            #expect(key.status == 0)
            #expect(key.stdout.hasPrefix("gsk_"))
            #expect(key.stdout.count == 54)
            let unknown = try await gseai(["key", "create", "bob"], database: database)
            #expect(unknown.stderr == "Error: no user 'bob'\n")
        }
    }
}
