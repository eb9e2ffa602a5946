import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import Testing

/// How far an instructor reaches into a student's account, with two instructors and a student in both
/// classes: an existing account joins a class only by its owner's action, an instructor never sets the
/// password of an account someone has signed in to, and never manages the account of a student who is also
/// in another instructor's class.
@Suite("Classes: a student of two instructors")
struct MemberAccessTests {
    /// Ines runs Biology (transcripts shared), Otto runs Chemistry; Sam is in Chemistry, signed in, with a
    /// conversation there. Ada is an administrator.
    struct Fixture {
        let gateway: GatewayHarness
        let ines: (user: User, key: String)
        let otto: (user: User, key: String)
        let sam: (user: User, key: String)
        let ada: (user: User, key: String)
        let biology: String
        let chemistry: String
        /// Sam's conversation in Chemistry.
        let chemistryChat: String

        func call(_ method: HTTPMethod, _ path: String, as caller: (user: User, key: String), _ body: JSONValue? = nil) async throws -> HTTPResult {
            try await gateway.request(method, path, headers: [("Authorization", "Bearer \(caller.key)")], body: body?.jsonString)
        }

        func roster(_ classID: String, _ csv: String, as caller: (user: User, key: String)) async throws -> HTTPResult {
            try await gateway.request(.POST, "/api/classes/\(classID)/roster",
                                      headers: [("Content-Type", "text/csv"), ("Authorization", "Bearer \(caller.key)")], body: csv)
        }

        func member(_ classID: String, _ student: User, _ rest: String = "") -> String {
            "/api/classes/\(classID)/members/\(student.id)\(rest)"
        }

        /// The roster entry of `student` in `classID` as `caller` sees it.
        func rosterEntry(_ classID: String, _ student: User, as caller: (user: User, key: String)) async throws -> JSONValue? {
            try await call(.GET, "/api/classes/\(classID)/members", as: caller).json?["data"]?.arrayValue?
                .first { $0["user_id"]?.stringValue == student.id }
        }
    }

    static func with(_ body: (Fixture) async throws -> Void) async throws {
        try await GatewayHarness.with { gateway in
            let ines = try await gateway.user("ines", role: .instructor)
            let otto = try await gateway.user("otto", role: .instructor)
            let sam = try await gateway.user("sam")
            let ada = try await gateway.user("ada", role: .admin)
            func create(_ name: String, by owner: (user: User, key: String)) async throws -> (id: String, code: String) {
                let created = try await gateway.post("/api/classes", key: owner.key,
                                                     json: ["name": .string(name), "policy": ["transcript_visibility": "full"]])
                return (try #require(created.json?["id"]?.stringValue), try #require(created.json?["join_code"]?.stringValue))
            }
            let biology = try await create("Biology", by: ines)
            let chemistry = try await create("Chemistry", by: otto)
            #expect(try await gateway.post("/api/classes/join", key: sam.key, json: ["code": .string(chemistry.code)]).status == 200)
            #expect(try await ClassAdminTests.login(gateway, "sam").cookie != nil)
            let chat = try await gateway.post("/api/conversations", key: sam.key, json: ["model": "stub/echo-text", "title": "Titration notes"])
            let chatID = try #require(chat.json?["id"]?.stringValue)
            try await body(Fixture(gateway: gateway, ines: ines, otto: otto, sam: sam, ada: ada, biology: biology.id,
                                   chemistry: chemistry.id, chemistryChat: chatID))
        }
    }

    @Test func theTakeoverThroughARosterImportEndsAtItsFirstStep() async throws {
        try await Self.with { f in
            // Ines names Otto's student in her roster: Sam is invited, not added.
            let imported = try await f.roster(f.biology, "sam\n", as: f.ines)
            #expect(imported.status == 200, "\(imported.text)")
            #expect(imported.json?["invited"] == ["sam"])
            #expect(imported.json?["created"] == [])
            #expect(try await !f.gateway.storage.classes.isMember(classID: f.biology, userID: f.sam.user.id))

            // So nothing of Sam's account is within her reach: not a member of her class.
            for (method, rest) in [(HTTPMethod.POST, "/reset-link"), (.GET, "/sessions"), (.GET, "/keys"), (.POST, "/disable"),
                                   (.GET, "/conversations"), (.GET, "/conversations/\(f.chemistryChat)"), (.GET, "/usage")] {
                let refused = try await f.call(method, f.member(f.biology, f.sam.user, rest), as: f.ines)
                #expect(refused.status == 404, "\(method) \(rest): \(refused.text)")
                #expect(refused.errorMessage == "no such member")
            }
            #expect(try await ClassAdminTests.login(f.gateway, "sam").result.status == 200)
            #expect(try await ClassAdminTests.actions(f.gateway).contains("class.member.reset-link") == false)
        }
    }

    @Test func aStudentInTwoInstructorsClassesIsManagedOnlyByAdministrators() async throws {
        try await Self.with { f in
            _ = try await f.roster(f.biology, "sam\n", as: f.ines)
            let accepted = try await f.call(.POST, "/api/classes/invitations/\(f.biology)/accept", as: f.sam)
            #expect(accepted.status == 200, "\(accepted.text)")
            #expect(accepted.json?["name"] == "Biology")
            #expect(accepted.json?["applies"] == true)

            let shared = "'sam' is also in another instructor's class: only an administrator manages their account"
            for (instructor, classID) in [(f.ines, f.biology), (f.otto, f.chemistry)] {
                for (method, rest) in [(HTTPMethod.GET, "/sessions"), (.GET, "/keys"), (.POST, "/disable"), (.POST, "/enable"),
                                       (.POST, "/reset-link")] {
                    let refused = try await f.call(method, f.member(classID, f.sam.user, rest), as: instructor)
                    #expect(refused.status == 403, "\(instructor.user.username) \(method) \(rest): \(refused.text)")
                    #expect(refused.errorMessage == shared)
                }
                let entry = try #require(try await f.rosterEntry(classID, f.sam.user, as: instructor))
                #expect(entry["account"] == ["sessions_and_keys": false, "disable": false, "setup_link": false,
                                             "reasons": ["sessions_and_keys": .string(shared), "disable": .string(shared), "setup_link": .string(shared)]])
                #expect(entry["last_seen_at"] == nil)
                #expect(entry["has_signed_in"] == true)
            }
            // The class's own business stays the instructor's: Biology's transcripts hold none of Chemistry's.
            let transcripts = try await f.call(.GET, f.member(f.biology, f.sam.user, "/conversations"), as: f.ines)
            #expect(transcripts.status == 200)
            #expect(transcripts.json?["data"] == [])
            #expect(try await f.call(.GET, f.member(f.biology, f.sam.user, "/conversations/\(f.chemistryChat)"), as: f.ines).status == 404)
            #expect(try await f.call(.GET, f.member(f.chemistry, f.sam.user, "/conversations/\(f.chemistryChat)"), as: f.otto).status == 200)

            // Administrators manage any account.
            let entry = try #require(try await f.rosterEntry(f.biology, f.sam.user, as: f.ada))
            #expect(entry["account"] == ["sessions_and_keys": true, "disable": true, "setup_link": true, "reasons": [:]])
            #expect(entry["last_seen_at"]?.stringValue != nil)
            #expect(try await f.call(.GET, f.member(f.biology, f.sam.user, "/sessions"), as: f.ada).json?["data"]?.arrayValue?.count == 1)
            #expect(try await f.call(.POST, f.member(f.biology, f.sam.user, "/reset-link"), as: f.ada).status == 201)

            // Leaving Otto's class gives Ines the account's management back (it has signed in: still no password).
            #expect(try await f.call(.DELETE, f.member(f.chemistry, f.sam.user), as: f.otto).status == 204)
            #expect(try await f.call(.GET, f.member(f.biology, f.sam.user, "/sessions"), as: f.ines).status == 200)
            let password = try await f.call(.POST, f.member(f.biology, f.sam.user, "/reset-link"), as: f.ines)
            #expect(password.status == 403)
            #expect(password.errorMessage == "'sam' has signed in already: only an administrator can reset their password (they can change it themselves)")
        }
    }

    @Test func anInstructorSetsUpOnlyAccountsNobodyHasSignedInTo() async throws {
        try await Self.with { f in
            let imported = try await f.roster(f.biology, "newbie\n", as: f.ines)
            let firstLink = try #require(imported.json?["created"]?.arrayValue?.first?["setup_url"]?.stringValue)
            let newbie = try #require(try await f.gateway.storage.users.find(username: "newbie"))
            #expect(try await f.rosterEntry(f.biology, newbie, as: f.ines)?["has_signed_in"] == false)
            #expect(try await f.rosterEntry(f.biology, newbie, as: f.ines)?["account"]?["setup_link"] == true)
            // A lost link can be replaced while nobody has used the account.
            let again = try await f.call(.POST, f.member(f.biology, newbie, "/reset-link"), as: f.ines)
            #expect(again.status == 201, "\(again.text)")

            #expect(try await ClassAdminTests.setup(f.gateway, token: try ClassAdminTests.token(of: firstLink), password: "newbie's own").status == 204)
            #expect(try await ClassAdminTests.login(f.gateway, "newbie", password: "newbie's own").result.status == 200)
            let refused = try await f.call(.POST, f.member(f.biology, newbie, "/reset-link"), as: f.ines)
            #expect(refused.status == 403)
            #expect(try await f.rosterEntry(f.biology, newbie, as: f.ines)?["account"]?["setup_link"] == false)
            // The second link, made while nobody had used the account, no longer opens it: setting the password
            // and signing in spent every other link.
            let second = try ClassAdminTests.token(of: again.json?["url"]?.stringValue)
            let late = try await ClassAdminTests.setup(f.gateway, token: second, password: "the instructor's")
            #expect(late.status == 400)
            #expect(try await ClassAdminTests.login(f.gateway, "newbie", password: "the instructor's").result.status == 401)
            #expect(try await f.call(.POST, "/api/admin/users/\(newbie.id)/reset-link", as: f.ada).status == 201)
            #expect(try await f.call(.POST, "/api/admin/users/\(newbie.id)/reset-link", as: f.ines).status == 403)
        }
    }

    @Test func visibilityOffHidesAStudentsAccountActivity() async throws {
        try await Self.with { f in
            _ = try await f.call(.PATCH, "/api/classes/\(f.chemistry)", as: f.otto, ["policy": ["transcript_visibility": "off"]])
            for rest in ["/sessions", "/keys"] {
                let refused = try await f.call(.GET, f.member(f.chemistry, f.sam.user, rest), as: f.otto)
                #expect(refused.status == 403)
                #expect(refused.errorMessage == "the class 'Chemistry' does not share its students' activity (its transcript visibility is off)")
            }
            let entry = try #require(try await f.rosterEntry(f.chemistry, f.sam.user, as: f.otto))
            #expect(entry["last_seen_at"] == nil)
            #expect(entry["account"]?["sessions_and_keys"] == false)
            #expect(entry["account"]?["disable"] == true)
            #expect(entry["account"]?["setup_link"] == false)
            #expect(entry["account"]?["reasons"]?["sessions_and_keys"]
                    == "the class 'Chemistry' does not share its students' activity (its transcript visibility is off)")
            #expect(entry["account"]?["reasons"]?["setup_link"]
                    == "'sam' has signed in already: only an administrator can reset their password (they can change it themselves)")
            // Disabling reveals nothing of the account and stays the instructor's.
            #expect(try await f.call(.POST, f.member(f.chemistry, f.sam.user, "/disable"), as: f.otto).status == 200)
            #expect(try await f.call(.POST, f.member(f.chemistry, f.sam.user, "/enable"), as: f.otto).status == 200)
        }
    }

    @Test func aStudentAcceptsOrDeclinesTheirOwnInvitationsOnly() async throws {
        try await Self.with { f in
            let pat = try await f.gateway.user("pat")
            _ = try await f.roster(f.biology, "sam\npat\n", as: f.ines)
            let mine = try await f.call(.GET, "/api/classes/invitations", as: f.sam)
            #expect(mine.status == 200)
            let invitation = try #require(mine.json?["data"]?.arrayValue?.first)
            #expect(mine.json?["data"]?.arrayValue?.count == 1)
            #expect(invitation["class"]?["name"] == "Biology")
            // The student sees the rules before accepting, above all what the instructor sees.
            #expect(invitation["class"]?["policy"]?["transcript_visibility"] == "full")
            #expect(invitation["class"]?["join_code"] == nil)

            // Someone else's invitation, or none, is not found.
            #expect(try await f.call(.POST, "/api/classes/invitations/\(f.chemistry)/accept", as: f.sam).status == 404)
            #expect(try await f.call(.POST, "/api/classes/invitations/\(f.biology)/accept", as: f.ines).status == 404)
            #expect(try await f.call(.POST, "/api/classes/invitations/\(f.biology)/decline", as: f.sam).status == 204)
            #expect(try await f.call(.GET, "/api/classes/invitations", as: f.sam).json?["data"] == [])
            #expect(try await f.call(.POST, "/api/classes/invitations/\(f.biology)/accept", as: f.sam).status == 404)
            #expect(try await !f.gateway.storage.classes.isMember(classID: f.biology, userID: f.sam.user.id))

            // A closed class cannot be joined by accepting; the invitation waits.
            #expect(try await f.call(.POST, "/api/classes/\(f.biology)/close", as: f.ines).status == 200)
            let closed = try await f.call(.POST, "/api/classes/invitations/\(f.biology)/accept", as: pat)
            #expect(closed.status == 403)
            #expect(closed.errorMessage == "the class 'Biology' is closed")
            #expect(try await f.call(.GET, "/api/classes/\(f.biology)/members", as: f.ines).json?["invited"]?.arrayValue?
                .compactMap { $0["username"]?.stringValue } == ["pat"])
            // The instructor withdraws it.
            #expect(try await f.call(.DELETE, "/api/classes/\(f.biology)/invitations/\(pat.user.id)", as: f.otto).status == 404)
            #expect(try await f.call(.DELETE, "/api/classes/\(f.biology)/invitations/\(pat.user.id)", as: f.ines).status == 204)
            #expect(try await f.call(.GET, "/api/classes/invitations", as: pat).json?["data"] == [])
            let actions = try await ClassAdminTests.actions(f.gateway)
            #expect(actions.contains("class.invitation.decline"))
            #expect(actions.contains("class.invitation.withdraw"))
        }
    }
}
