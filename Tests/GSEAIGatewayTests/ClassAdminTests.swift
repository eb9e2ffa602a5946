import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import Testing

/// Instructors managing their students' accounts, set-up links, roster import, usage export, and the
/// administrators' API.
@Suite("Classes: student accounts, rosters, usage export, administration")
struct ClassAdminTests {
    typealias Fixture = ClassPolicyTests.Fixture

    /// Logs `name` in with their harness password (or `password`).
    static func login(_ gateway: GatewayHarness, _ name: String, password: String? = nil) async throws -> (cookie: String?, result: HTTPResult) {
        let body: JSONValue = ["username": .string(name), "password": .string(password ?? "password-\(name)")]
        let result = try await gateway.request(.POST, "/auth/login", body: body.jsonString)
        let cookie = result.headers["set-cookie"].first.flatMap { $0.split(separator: ";").first.map(String.init) }
        return (result.status == 200 ? cookie : nil, result)
    }

    /// Posts a CSV roster with `key`.
    static func roster(_ fixture: Fixture, _ csv: String, key: String? = nil, contentType: String = "text/csv") async throws -> HTTPResult {
        let headers = [("Content-Type", contentType), ("Authorization", "Bearer \(key ?? fixture.instructor.key)")]
        return try await fixture.gateway.request(.POST, "/api/classes/\(fixture.classID)/roster", headers: headers, body: csv)
    }

    /// The token in a set-up link's fragment.
    static func token(of url: String?) throws -> String {
        let url = try #require(url)
        let parts = url.components(separatedBy: "/setup.html#token=")
        try #require(parts.count == 2, "\(url)")
        return parts[1]
    }

    static func setup(_ gateway: GatewayHarness, token: String, password: String, headers: [(String, String)] = []) async throws -> HTTPResult {
        try await gateway.request(.POST, "/api/setup", headers: headers,
                                  body: JSONValue.object(["token": .string(token), "password": .string(password)]).jsonString)
    }

    static func actions(_ gateway: GatewayHarness) async throws -> [String] {
        try await gateway.storage.audit.list(limit: 500, before: nil).map(\.action)
    }

    // MARK: Sessions and keys

    @Test func anInstructorListsAndEndsAStudentsSessions() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            let (cookie, _) = try await Self.login(gateway, "sam")
            let studentCookie = try #require(cookie)
            let path = "/api/classes/\(fixture.classID)/members/\(fixture.student.user.id)/sessions"

            let listed = try await fixture.call(.GET, path, key: fixture.instructor.key)
            #expect(listed.status == 200, "\(listed.text)")
            let sessions = try #require(listed.json?["data"]?.arrayValue)
            #expect(sessions.count == 1)
            #expect(sessions.first?["current"] == false)
            #expect(sessions.first?["expires_at"]?.stringValue != nil)
            let sessionID = try #require(sessions.first?["id"]?.stringValue)

            // Someone else's session is not found, even with the right class and member.
            let instructorCookie = try #require(try await Self.login(gateway, "ines").cookie)
            let instructorSession = try #require(try await gateway.storage.sessions.list(userID: fixture.instructor.user.id).first?.id)
            let foreign = try await fixture.call(.DELETE, "\(path)/\(instructorSession)", key: fixture.instructor.key)
            #expect(foreign.status == 404)
            #expect(foreign.errorMessage == "no such session")
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", instructorCookie)]).status == 200)

            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", studentCookie)]).status == 200)
            #expect(try await fixture.call(.DELETE, "\(path)/\(sessionID)", key: fixture.instructor.key).status == 204)
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", studentCookie)]).status == 401)
            #expect(try await fixture.call(.GET, path, key: fixture.instructor.key).json?["data"] == [])
            let actions = try await Self.actions(gateway)
            #expect(actions.contains("class.member.sessions.list"))
            #expect(actions.contains("class.member.session.revoke"))
        }
    }

    @Test func revokingAStudentsKeyRefusesTheirNextCallAtOnce() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let path = "/api/classes/\(fixture.classID)/members/\(fixture.student.user.id)/keys"
            // A call first, so that the key is in the credential cache.
            #expect(try await fixture.chat().status == 200)

            let listed = try await fixture.call(.GET, path, key: fixture.instructor.key)
            #expect(listed.status == 200, "\(listed.text)")
            let keys = try #require(listed.json?["data"]?.arrayValue)
            #expect(keys.count == 1)
            #expect(keys.first?["label"] == "test")
            #expect(keys.first?["prefix"]?.stringValue.map { fixture.student.key.hasPrefix($0) } == true)
            #expect(keys.first?["revoked_at"] == nil)
            #expect(keys.first?["key"] == nil)
            let keyID = try #require(keys.first?["id"]?.stringValue)

            // The instructor's own key, through the student's path, is not found.
            let ownKey = try #require(try await fixture.gateway.storage.apiKeys.list(userID: fixture.instructor.user.id).first?.id)
            #expect(try await fixture.call(.DELETE, "\(path)/\(ownKey)", key: fixture.instructor.key).status == 404)

            #expect(try await fixture.call(.DELETE, "\(path)/\(keyID)", key: fixture.instructor.key).status == 204)
            let refused = try await fixture.chat()
            #expect(refused.status == 401)
            #expect(refused.errorMessage == "invalid or revoked API key")
            #expect(try await fixture.call(.GET, path, key: fixture.instructor.key).json?["data"]?.arrayValue?.first?["revoked_at"]?.stringValue != nil)
            let entry = try #require(try await fixture.gateway.storage.audit.list(limit: 50, before: nil).first { $0.action == "class.member.key.revoke" })
            #expect(entry.actorID == fixture.instructor.user.id)
            #expect(entry.target == fixture.student.user.id)
        }
    }

    @Test func disablingAStudentBlocksLoginAndKeysUntilEnabled() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            let member = "/api/classes/\(fixture.classID)/members/\(fixture.student.user.id)"
            let cookie = try #require(try await Self.login(gateway, "sam").cookie)

            let disabled = try await fixture.call(.POST, "\(member)/disable", key: fixture.instructor.key)
            #expect(disabled.status == 200, "\(disabled.text)")
            #expect(disabled.json?["username"] == "sam")
            #expect(disabled.json?["disabled"] == true)
            #expect(try await Self.login(gateway, "sam").result.status == 401)
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", cookie)]).status == 401)
            #expect(try await fixture.chat().status == 401)
            let roster = try await fixture.call(.GET, "/api/classes/\(fixture.classID)/members", key: fixture.instructor.key)
            #expect(roster.json?["data"]?.arrayValue?.first?["disabled"] == true)

            let enabled = try await fixture.call(.POST, "\(member)/enable", key: fixture.instructor.key)
            #expect(enabled.json?["disabled"] == false)
            #expect(try await Self.login(gateway, "sam").result.status == 200)
            // Disabling revoked the keys for good: the student makes a new one.
            #expect(try await fixture.chat().status == 401)
            let actions = try await Self.actions(gateway)
            #expect(actions.contains("class.member.disable"))
            #expect(actions.contains("class.member.enable"))
        }
    }

    // MARK: Set-up links

    @Test func aResetLinkWorksOnceAndNotAfterItExpires() async throws {
        let clock = TestClock()
        try await ClassPolicyTests.withClass(clock: clock) { fixture in
            let gateway = fixture.gateway
            // Once a student has signed in, only an administrator resets their password.
            let admin = try await gateway.user("ada", role: .admin)
            let path = "/api/admin/users/\(fixture.student.user.id)/reset-link"
            let cookie = try #require(try await Self.login(gateway, "sam").cookie)
            let instructors = try await fixture.call(.POST, "/api/classes/\(fixture.classID)/members/\(fixture.student.user.id)/reset-link",
                                                     key: fixture.instructor.key)
            #expect(instructors.status == 403)
            #expect(instructors.errorMessage == "'sam' has signed in already: only an administrator can reset their password (they can change it themselves)")

            let issued = try await fixture.call(.POST, path, key: admin.key)
            #expect(issued.status == 201, "\(issued.text)")
            let url = try #require(issued.json?["url"]?.stringValue)
            #expect(url.hasPrefix(gateway.gateway.configuration.effectivePublicURL + "/setup.html#token="))
            let expires = try #require(issued.json?["expires_at"]?.stringValue.flatMap { try? Date($0, strategy: .iso8601) })
            #expect(abs(expires.timeIntervalSince(clock.now) - 72 * 3600) < 2)
            let token = try Self.token(of: url)
            // Only the hash is stored.
            #expect(try await gateway.storage.setupTokens.find(tokenHash: token) == nil)
            // The old password still works until the link is used.
            #expect(try await Self.login(gateway, "sam").result.status == 200)

            // A foreign page cannot use it; a short password does not spend it.
            let foreign = try await Self.setup(gateway, token: token, password: "a new password", headers: [("Origin", "https://evil.example")])
            #expect(foreign.status == 403)
            let weak = try await Self.setup(gateway, token: token, password: "short")
            #expect(weak.status == 400)
            #expect(weak.errorMessage == "a password needs at least 8 characters")

            let used = try await Self.setup(gateway, token: token, password: "a new password")
            #expect(used.status == 204, "\(used.text)")
            #expect(try await Self.login(gateway, "sam", password: "a new password").result.status == 200)
            #expect(try await Self.login(gateway, "sam").result.status == 401)
            // Setting the password ended the sessions from before.
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", cookie)]).status == 401)

            let again = try await Self.setup(gateway, token: token, password: "another password")
            #expect(again.status == 410)
            #expect(again.errorMessage == "this set-up link has been used already; ask your instructor or an administrator for a new one")
            #expect(try await Self.login(gateway, "sam", password: "another password").result.status == 401)

            let later = try Self.token(of: try await fixture.call(.POST, path, key: admin.key).json?["url"]?.stringValue)
            clock.advance(seconds: 72 * 3600 + 1)
            let expired = try await Self.setup(gateway, token: later, password: "another password")
            #expect(expired.status == 410)
            #expect(expired.errorMessage == "this set-up link has expired; ask your instructor or an administrator for a new one")

            let bogus = try await Self.setup(gateway, token: String(repeating: "x", count: 43), password: "another password")
            #expect(bogus.status == 400)
            #expect(bogus.errorMessage == "this set-up link is not valid; check that it was copied whole")
            #expect(try await gateway.request(.POST, "/api/setup", body: "{\"token\":\"abc\"}").status == 400)

            let actions = try await Self.actions(gateway)
            #expect(actions.filter { $0 == "user.reset-link" }.count == 2)
            #expect(actions.filter { $0 == "account.setup-link.use" }.count == 1)
            #expect(try await fixture.call(.POST, "/api/admin/users/nobody/reset-link", key: admin.key).status == 404)
        }
    }

    @Test func aResetLinkDoesNotOutliveARoleChange() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            // Sam's account is in use (it holds a key): its instructor may not set it up, an administrator may.
            let path = "/api/classes/\(fixture.classID)/members/\(fixture.student.user.id)/reset-link"
            let refusedToInstructor = try await fixture.call(.POST, path, key: fixture.instructor.key)
            #expect(refusedToInstructor.status == 403)
            let admin = try await gateway.user("ada", role: .admin)
            let token = try Self.token(of: try await fixture.call(.POST, "/api/admin/users/\(fixture.student.user.id)/reset-link", key: admin.key)
                .json?["url"]?.stringValue)
            // The student becomes an instructor: the link made for the student no longer opens the account.
            _ = try await gateway.gateway.accounts.setRole(.instructor, for: "sam")
            let refused = try await Self.setup(gateway, token: token, password: "taken over")
            #expect(refused.status == 400)
            #expect(refused.errorMessage == "this set-up link is not valid; check that it was copied whole")
            #expect(try await Self.login(gateway, "sam").result.status == 200)
            #expect(try await Self.login(gateway, "sam", password: "taken over").result.status == 401)
        }
    }

    // MARK: Roster import

    @Test func aRosterImportCreatesInvitesAndReportsEachLine() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            _ = try await gateway.user("pat")
            let csv = """
                username,email
                Nora,nora@example.edu
                sam
                pat,pat@example.edu

                ines
                bad name!
                nora
                "quinn"\r
                """
            let imported = try await Self.roster(fixture, csv)
            #expect(imported.status == 200, "\(imported.text)")
            let created = try #require(imported.json?["created"]?.arrayValue)
            #expect(created.compactMap { $0["username"]?.stringValue } == ["nora", "quinn"])
            // Existing accounts are never added: pat is invited, sam is in the class already.
            #expect(imported.json?["invited"] == ["pat"])
            #expect(imported.json?["already_members"] == ["sam"])
            #expect(imported.json?["errors"] == [
                ["line": 6, "message": "'ines' is an instructor account, not a student's"],
                ["line": 7, "message": "'bad name!': a username is 1–64 letters, digits, dots, dashes, underscores or @"],
                ["line": 8, "message": "'nora' is already on line 2"],
            ])

            for name in ["nora", "quinn", "sam", "pat"] {
                let user = try #require(try await gateway.storage.users.find(username: name))
                #expect(user.role == .student)
                #expect(try await gateway.storage.classes.isMember(classID: fixture.classID, userID: user.id) == (name != "pat"), "\(name)")
            }
            let pat = try #require(try await gateway.storage.users.find(username: "pat"))
            #expect(try await gateway.storage.classes.invitations(classID: fixture.classID, userID: nil).map(\.username) == ["pat"])
            let roster = try await fixture.call(.GET, "/api/classes/\(fixture.classID)/members", key: fixture.instructor.key)
            #expect(roster.json?["invited"]?.arrayValue?.compactMap { $0["user_id"]?.stringValue } == [pat.id])
            #expect(try await gateway.storage.users.find(username: "bad name!") == nil)

            // A new student has no password anyone knows; the link sets one, then they log in in the class.
            let nora = try #require(created.first)
            #expect(try await Self.login(gateway, "nora").result.status == 401)
            let token = try Self.token(of: nora["setup_url"]?.stringValue)
            #expect(try await Self.setup(gateway, token: token, password: "nora's password").status == 204)
            #expect(try await Self.login(gateway, "nora", password: "nora's password").result.status == 200)

            // Importing again creates nobody.
            let again = try await Self.roster(fixture, "nora\nquinn\npat\n")
            #expect(again.json?["created"] == [])
            #expect(again.json?["already_members"] == ["nora", "quinn"])
            #expect(again.json?["invited"] == ["pat"])

            let wrongType = try await Self.roster(fixture, "{\"username\":\"x\"}", contentType: "application/json")
            #expect(wrongType.status == 415)
            let tooMany = try await Self.roster(fixture, (1...1001).map { "student\($0)" }.joined(separator: "\n"))
            #expect(tooMany.status == 400)
            #expect(tooMany.errorMessage == "a roster has at most 1000 students; this one has 1001")
            #expect(try await gateway.storage.users.find(username: "student1") == nil)

            let entry = try #require(try await gateway.storage.audit.list(limit: 50, before: nil).first { $0.action == "class.roster.import" })
            #expect(entry.actorID == fixture.instructor.user.id)
            #expect(entry.target == fixture.classID)
        }
    }

    // MARK: Usage export

    @Test func theUsageExportIsCSVOfTheMembersUsage() async throws {
        try await ClassPolicyTests.withClass(name: "Biology 101") { fixture in
            let gateway = fixture.gateway
            #expect(try await fixture.chat("one").status == 200)
            #expect(try await fixture.chat("two").status == 200)
            // The instructor's own usage is not the class's.
            #expect(try await fixture.post("/v1/chat/completions", ["model": "stub/echo-text", "messages": [["role": "user", "content": "x"]]],
                                           key: fixture.instructor.key).status == 200)
            let rows = try await gateway.usage(of: fixture.student.user.id)
            let row = try #require(rows.first)
            #expect(rows.count == 1)

            let path = "/api/classes/\(fixture.classID)/usage.csv"
            let export = try await fixture.call(.GET, path, key: fixture.instructor.key)
            #expect(export.status == 200, "\(export.text)")
            #expect(export.headers.first(name: "Content-Type") == "text/csv; charset=utf-8")
            let since = try #require(export.headers.first(name: "Content-Disposition")?.components(separatedBy: "since-").last?.prefix(10))
            #expect(export.headers.first(name: "Content-Disposition") == "attachment; filename=\"Biology-101-usage-since-\(since).csv\"")
            #expect(export.text == """
                day,username,model,requests,input_tokens,output_tokens\r
                \(row.day),sam,stub/echo-text,2,\(row.inputTokens),\(row.outputTokens)\r

                """)
            #expect(row.requests == 2 && row.inputTokens > 0 && row.outputTokens > 0)

            let future = try await fixture.call(.GET, "\(path)?since=2999-01-01", key: fixture.instructor.key)
            #expect(future.text == "day,username,model,requests,input_tokens,output_tokens\r\n")
            #expect(try await fixture.call(.GET, "\(path)?since=yesterday", key: fixture.instructor.key).status == 400)
            #expect(try await Self.actions(gateway).filter { $0 == "class.usage.export" }.count == 2)

            _ = try await fixture.call(.PATCH, "/api/classes/\(fixture.classID)", key: fixture.instructor.key, ["policy": ["transcript_visibility": "off"]])
            let off = try await fixture.call(.GET, path, key: fixture.instructor.key)
            #expect(off.status == 403)
            #expect(off.errorMessage == "the class 'Biology 101' does not share its students' usage")
            #expect(try await Self.actions(gateway).filter { $0 == "class.usage.export" }.count == 2)
        }
    }

    // MARK: Administration

    @Test func administratorsListAndChangeUsersAndReadTheAudit() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            let admin = try await gateway.user("ada", role: .admin)
            let users = try await fixture.call(.GET, "/api/admin/users", key: admin.key)
            #expect(users.status == 200, "\(users.text)")
            let list = try #require(users.json?["data"]?.arrayValue)
            #expect(list.compactMap { $0["username"]?.stringValue } == ["ada", "ines", "sam"])
            #expect(list.first?["role"] == "admin")
            #expect(list.first?["disabled"] == false)
            #expect(list.first?["created_at"]?.stringValue != nil)
            #expect(list.first?["password_hash"] == nil)

            let user = "/api/admin/users/\(fixture.student.user.id)"
            #expect(try await fixture.chat().status == 200)
            let promoted = try await fixture.call(.PATCH, user, key: admin.key, ["role": "instructor"])
            #expect(promoted.status == 200, "\(promoted.text)")
            #expect(promoted.json?["role"] == "instructor")
            // The cached key drops at once: the next call is as an instructor, no longer bound by the class.
            #expect(try await fixture.call(.GET, "/api/classes", key: fixture.student.key).status == 200)

            let disabled = try await fixture.call(.PATCH, user, key: admin.key, ["disabled": true])
            #expect(disabled.json?["disabled"] == true)
            #expect(try await fixture.chat().status == 401)
            #expect(try await Self.login(gateway, "sam").result.status == 401)
            #expect(try await fixture.call(.PATCH, user, key: admin.key, ["disabled": false, "role": "student"]).json == [
                "id": .string(fixture.student.user.id), "username": "sam", "role": "student", "disabled": false,
                "created_at": try #require(promoted.json?["created_at"]),
            ])

            let king = try await fixture.call(.PATCH, user, key: admin.key, ["role": "king"])
            #expect(king.status == 400)
            #expect(king.errorMessage == "role is student, instructor or admin")
            #expect(king.json?["error"]?["param"] == "role")
            let numeric = try await fixture.call(.PATCH, user, key: admin.key, ["role": 3])
            #expect(numeric.errorMessage == "role is student, instructor or admin")
            let yes = try await fixture.call(.PATCH, user, key: admin.key, ["disabled": "yes"])
            #expect(yes.status == 400)
            #expect(yes.errorMessage == "disabled is true or false")
            #expect(yes.json?["error"]?["param"] == "disabled")
            let broken = try await fixture.gateway.request(.PATCH, user, headers: [("Authorization", "Bearer \(admin.key)")], body: "{")
            #expect(broken.errorMessage == "the body is not valid JSON")
            #expect(broken.json?["error"]?["param"] == nil)
            #expect(try await fixture.call(.PATCH, user, key: admin.key, [:]).status == 400)
            #expect(try await fixture.call(.PATCH, "/api/admin/users/nobody", key: admin.key, ["disabled": true]).status == 404)
            let selfDemote = try await fixture.call(.PATCH, "/api/admin/users/\(admin.user.id)", key: admin.key, ["role": "student"])
            #expect(selfDemote.status == 403)
            #expect(selfDemote.errorMessage == "you cannot demote or disable your own account")

            // The audit log, newest first, in pages.
            let audit = try await fixture.call(.GET, "/api/admin/audit", key: admin.key)
            #expect(audit.status == 200)
            let entries = try #require(audit.json?["data"]?.arrayValue)
            #expect(entries.prefix(4).compactMap { $0["action"]?.stringValue } == ["user.enable", "user.set-role", "user.disable", "user.set-role"])
            #expect(entries.first?["actor_username"] == "ada")
            #expect(entries.first?["target"] == .string(fixture.student.user.id))
            #expect(entries[1]["detail"] == "instructor → student")
            #expect(entries[3]["detail"] == "student → instructor")
            #expect(entries.last?["action"] == "class.create")
            #expect(audit.json?["next_before"] == nil)
            let page = try await fixture.call(.GET, "/api/admin/audit?limit=2", key: admin.key)
            #expect(page.json?["data"]?.arrayValue?.count == 2)
            let next = try #require(page.json?["next_before"]?.stringValue)
            #expect(next.hasSuffix("_" + (entries[1]["id"]?.stringValue ?? "?")))
            let nextPage = try await fixture.call(.GET, "/api/admin/audit?limit=2&before=\(next)", key: admin.key)
            #expect(nextPage.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == entries[2..<4].compactMap { $0["id"]?.stringValue })
            let old = try await fixture.call(.GET, "/api/admin/audit?before=2000-01-01T00:00:00Z", key: admin.key)
            #expect(old.json?["data"] == [])
            #expect(try await fixture.call(.GET, "/api/admin/audit?limit=0", key: admin.key).status == 400)
            #expect(try await fixture.call(.GET, "/api/admin/audit?before=soon", key: admin.key).status == 400)
        }
    }

    @Test func theAuditLogPagesThroughEntriesOfOneInstant() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let admin = try await fixture.gateway.user("ada", role: .admin)
            let instant = Date(timeIntervalSince1970: 1_700_000_000.25)
            for index in 0..<5 {
                try await fixture.gateway.storage.audit.append(
                    AuditEntry(actorID: admin.user.id, action: "user.set-role", target: "user-\(index)", at: instant))
            }
            var targets: [String] = []
            var path = "/api/admin/audit?limit=2&before=2100-01-01T00:00:00Z"
            while true {
                let page = try await fixture.call(.GET, path, key: admin.key)
                #expect(page.status == 200, "\(page.text)")
                targets += page.json?["data"]?.arrayValue?.compactMap { $0["target"]?.stringValue } ?? []
                guard let next = page.json?["next_before"]?.stringValue else { break }
                path = "/api/admin/audit?limit=2&before=\(next)"
            }
            #expect(targets.filter { $0.hasPrefix("user-") }.sorted() == (0..<5).map { "user-\($0)" })
            #expect(targets.count == Set(targets).count)
        }
    }

    // MARK: Permissions

    @Test func permissionMatrixOfTheNewEndpoints() async throws {
        try await ClassPolicyTests.withClass { fixture in
            let gateway = fixture.gateway
            let matrix = try await PermissionMatrix(fixture)
            let (other, admin, student) = (matrix.otherInstructor, matrix.admin, fixture.student)
            // The other instructor's own class, with a student of theirs: the owner of ours cannot reach them.
            let otherClass = try #require(try await gateway.post("/api/classes", key: other.key, json: ["name": "Chemistry"]).json?["id"]?.stringValue)

            let refused: [PermissionMatrix.Caller: Int] = [.student: 403, .otherInstructor: 404, .anonymous: 401]
            let ownerAndAdmin = refused.merging([.owner: 200, .admin: 200]) { $1 }
            let c = "/api/classes/\(fixture.classID)"
            let member = "\(c)/members/\(student.user.id)"

            // Administration: administrators only.
            let adminOnly: [PermissionMatrix.Caller: Int] = [.student: 403, .owner: 403, .otherInstructor: 403, .admin: 200, .anonymous: 401]
            try await matrix.check(.GET, "/api/admin/users", nil, adminOnly, forbidden: "this needs the admin role")
            try await matrix.check(.GET, "/api/admin/audit", nil, adminOnly, forbidden: "this needs the admin role")
            try await matrix.check(.PATCH, "/api/admin/users/\(other.user.id)", ["role": "instructor"], adminOnly, forbidden: "this needs the admin role")
            _ = try #require(try await Self.login(gateway, "sam").cookie)
            try await matrix.check(.GET, "\(member)/sessions", nil, ownerAndAdmin)
            try await matrix.check(.GET, "\(member)/keys", nil, ownerAndAdmin)
            // Sam has signed in: the instructor may no longer set their password, an administrator may.
            try await matrix.check(.POST, "\(member)/reset-link", nil, refused.merging([.admin: 201]) { $1 })
            try await matrix.check(.POST, "\(member)/reset-link", nil, [.owner: 403],
                                   forbidden: "'sam' has signed in already: only an administrator can reset their password (they can change it themselves)")
            try await matrix.check(.GET, "\(c)/usage.csv", nil, ownerAndAdmin)
            try await matrix.check(.POST, "\(c)/roster", csv: "sam\n", ownerAndAdmin)
            // Another instructor's class is "not found" for the owner of ours, with its member paths.
            let otherMember = "/api/classes/\(otherClass)/members/\(student.user.id)/keys"
            try await matrix.check(.GET, otherMember, nil, [.owner: 404])
            try await matrix.check(.GET, otherMember, nil, [.otherInstructor: 404, .admin: 404], notFound: "no such member")
            try await matrix.check(.GET, "/api/classes/\(otherClass)/usage.csv", nil, [.owner: 404, .otherInstructor: 200, .admin: 200])

            let session = try #require(try await gateway.storage.sessions.list(userID: student.user.id).first?.id)
            try await matrix.check(.DELETE, "\(member)/sessions/\(session)", nil, refused.merging([.owner: 204]) { $1 })
            let keyID = try #require(try await gateway.storage.apiKeys.list(userID: student.user.id).first?.id)
            // The student's own key must stay valid while they are checked; their refusal is checked with a second key.
            let (spare, _) = try await gateway.gateway.accounts.createKey(for: student.user, label: "spare")
            for who in [PermissionMatrix.Caller.otherInstructor, .anonymous] {
                #expect(try await gateway.request(.DELETE, "\(member)/keys/\(keyID)", headers: matrix.headers(who)).status
                        == (who == .anonymous ? 401 : 404))
            }
            #expect(try await gateway.request(.DELETE, "\(member)/keys/\(keyID)", headers: [("Authorization", "Bearer \(spare)")]).status == 403)
            #expect(try await gateway.request(.DELETE, "\(member)/keys/\(keyID)", headers: [("Authorization", "Bearer \(admin.key)")]).status == 204)
            try await matrix.check(.POST, "\(member)/enable", nil, [.otherInstructor: 404, .anonymous: 401, .owner: 200, .admin: 200])
            try await matrix.check(.POST, "\(member)/disable", nil, [.otherInstructor: 404, .anonymous: 401, .owner: 200, .admin: 200])

            // An instructor manages students' accounts only; a member who became staff is the administrators'.
            _ = try await gateway.gateway.accounts.setRole(.instructor, for: "sam")
            let staff = try await fixture.call(.POST, "\(member)/reset-link", key: fixture.instructor.key)
            #expect(staff.status == 403)
            #expect(staff.errorMessage == "only an administrator manages the account of 'sam'")
            #expect(try await fixture.call(.POST, "\(member)/reset-link", key: admin.key).status == 201)

            // Set-up links need no login.
            #expect(try await Self.setup(gateway, token: String(repeating: "y", count: 43), password: "long enough").status == 400)
        }
    }
}
