import Foundation
import GSEAI
@testable import GSEAIGateway
import GSEAITestSupport
import Logging
import Testing

@Suite("Gateway: accounts, sessions, keys")
struct AccountTests {
    /// Logs in and returns the cookie header value and the CSRF token.
    func login(_ gateway: GatewayHarness, _ name: String, password: String? = nil) async throws -> (cookie: String, csrf: String, result: HTTPResult) {
        let body: JSONValue = ["username": .string(name), "password": .string(password ?? "password-\(name)")]
        let result = try await gateway.request(.POST, "/auth/login", body: body.jsonString)
        let setCookie = result.headers["set-cookie"].first ?? ""
        let cookie = String(setCookie.split(separator: ";").first ?? "")
        return (cookie, result.json?["csrf_token"]?.stringValue ?? "", result)
    }

    @Test func digestsAreLowercaseHexSHA256() {
        #expect(Secrets.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Secrets.sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // FIPS 180-2's two-block example: the text's bytes are hashed in place, the digest written by table.
        #expect(Secrets.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // A text and its UTF-8 bytes hash alike (the key path and the image path), whatever the characters.
        for text in ["gsk_abcdefgh_" + String(repeating: "x", count: 40), "é👩‍🎓\u{0}", String(repeating: "ü", count: 100)] {
            #expect(Secrets.sha256(text) == Secrets.sha256(Data(text.utf8)))
            // The key cache's digest: the same hex (what the database holds), equal for equal texts only.
            #expect(Secrets.keyDigest(text).hex == Secrets.sha256(text))
            #expect(Secrets.keyDigest(text) == Secrets.keyDigest(text))
            #expect(Secrets.keyDigest(text).hashValue == Secrets.keyDigest(text).hashValue)
            #expect(Secrets.keyDigest(text) != Secrets.keyDigest(text + "x"))
        }
        #expect(Secrets.keyDigest("abc").hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // Digests that differ in one word only are different keys.
        let keys = (0..<1_000).map { Secrets.keyDigest("gsk_\($0)") }
        #expect(Set(keys).count == 1_000)
    }

    /// The key cache (by the key's digest) keeps each key with its own user: two users' keys, each read again from the
    /// cache, a key that differs from one by its last character refused, a revoked key refused at once.
    @Test func theKeyCacheKeepsEachKeyWithItsOwnUser() async throws {
        let storage = try await TestDatabase.open(logger: Logger(label: "key-cache-test"))
        let accounts = AccountService(storage: storage, hasher: PasswordHasher(cost: 4))
        let (alice, _) = try await accounts.createUser(username: "alice", password: "correct horse battery", role: Role.student)
        let (bob, _) = try await accounts.createUser(username: "bob", password: "correct horse battery", role: Role.student)
        let (aliceKey, _) = try await accounts.createKey(for: alice, label: "a")
        let (bobKey, bobRecord) = try await accounts.createKey(for: bob, label: "b")
        for _ in 0..<3 {
            #expect(try await accounts.resolveKey(aliceKey)?.1.id == alice.id)
            #expect(try await accounts.resolveKey(bobKey)?.1.id == bob.id)
        }
        let last = bobKey.last == "x" ? "y" : "x"
        #expect(try await accounts.resolveKey(String(bobKey.dropLast()) + last) == nil)
        try await accounts.revokeKey(id: bobRecord.id, of: bob)
        #expect(try await accounts.resolveKey(bobKey) == nil)
        #expect(try await accounts.resolveKey(aliceKey)?.1.id == alice.id)
        try await storage.close()
    }

    @Test func anAPIKeysPrefixIsItsFirstTwelveBytes() {
        let (key, prefix) = Secrets.newAPIKey()
        #expect(Secrets.apiKeyPrefix(key) == prefix)
        #expect(prefix.count == 12 && key.hasPrefix(prefix + "_"))
        #expect(Secrets.apiKeyPrefix(String(key.dropLast())) == nil)
        #expect(Secrets.apiKeyPrefix("gsx_" + key.dropFirst(4)) == nil)
        // 53 bytes that are not ASCII: a prefix that matches no key (cut inside a character), and no trap.
        let hostile = "gsk_x" + String(repeating: "é", count: 24)
        #expect(hostile.utf8.count == 53)
        #expect(Secrets.apiKeyPrefix(hostile) == "gsk_xééé\u{FFFD}")
    }

    @Test func loginSetsASecureSessionCookieAndMeAnswers() async throws {
        try await GatewayHarness.with { gateway in
            _ = try await gateway.user("alice")
            let (cookie, csrf, result) = try await login(gateway, "Alice", password: "password-alice")
            #expect(result.status == 200)
            #expect(result.json?["user"]?["username"] == "alice")
            #expect(result.json?["user"]?["role"] == "student")
            let setCookie = try #require(result.headers["set-cookie"].first)
            #expect(setCookie.contains("HttpOnly"))
            #expect(setCookie.contains("SameSite=Lax"))
            #expect(!setCookie.contains("Secure"))
            #expect(cookie.hasPrefix("gseai_session="))
            #expect(csrf.count == 32)
            let me = try await gateway.request(.GET, "/auth/me", headers: [("Cookie", cookie)])
            #expect(me.json?["user"]?["username"] == "alice")
            #expect(me.json?["authenticated_with"] == "session")
            #expect(me.json?["csrf_token"]?.stringValue == csrf)
            // The session token is not what the database keeps.
            let stored = try await gateway.storage.sessions.list(userID: try #require(me.json?["user"]?["id"]?.stringValue))
            #expect(stored.count == 1)
            #expect(!cookie.contains(stored[0].id))
        }
    }

    @Test func wrongPasswordsAreThrottled() async throws {
        try await GatewayHarness.with(configure: { $0.loginAttempts = 3 }) { gateway in
            _ = try await gateway.user("alice")
            for _ in 0..<3 {
                let wrong = try await login(gateway, "alice", password: "nope-nope").result
                #expect(wrong.status == 401)
                #expect(wrong.errorMessage == "wrong username or password")
            }
            let throttled = try await login(gateway, "alice").result
            #expect(throttled.status == 429)
            #expect(Int(throttled.headers["retry-after"].first ?? "") ?? 0 > 0)
            #expect(throttled.errorMessage?.hasPrefix("too many failed logins") == true)
            // Another account from the same address is not affected.
            _ = try await gateway.user("bob")
            #expect(try await login(gateway, "bob").result.status == 200)
        }
    }

    @Test func unsafeCookieRequestsNeedTheCSRFTokenAndOurOrigin() async throws {
        try await GatewayHarness.with { gateway in
            _ = try await gateway.user("alice")
            let (cookie, csrf, _) = try await login(gateway, "alice")
            let noToken = try await gateway.request(.POST, "/auth/keys", headers: [("Cookie", cookie)], body: "{\"label\":\"x\"}")
            #expect(noToken.status == 403)
            #expect(noToken.errorMessage == "missing or wrong X-CSRF-Token header")
            let foreign = try await gateway.request(.POST, "/auth/keys", headers: [("Cookie", cookie), ("X-CSRF-Token", csrf), ("Origin", "https://evil.example")], body: "{}")
            #expect(foreign.status == 403)
            #expect(foreign.errorMessage == "cross-site request refused")
            let created = try await gateway.request(.POST, "/auth/keys", headers: [("Cookie", cookie), ("X-CSRF-Token", csrf), ("Origin", gateway.baseURL)], body: "{\"label\":\"notebook\"}")
            #expect(created.status == 201)
            let key = try #require(created.json?["key"]?.stringValue)
            #expect(key.hasPrefix("gsk_"))
            #expect(created.json?["api_key"]?["label"] == "notebook")
            // The key works as a bearer token, and its listing never shows it again.
            let models = try await gateway.request(.GET, "/v1/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(models.status == 200)
            let keys = try await gateway.request(.GET, "/auth/keys", headers: [("Cookie", cookie)])
            // The harness's own key and this one.
            #expect(keys.json?["data"]?.arrayValue?.map { $0["label"] } == ["notebook", "test"])
            #expect(!keys.text.contains(key))
            #expect(keys.text.contains(String(key.prefix(12))))
            // Revoke it.
            let id = try #require(created.json?["api_key"]?["id"]?.stringValue)
            let revoked = try await gateway.request(.DELETE, "/auth/keys/\(id)", headers: [("Cookie", cookie), ("X-CSRF-Token", csrf)])
            #expect(revoked.status == 204)
            #expect(try await gateway.request(.GET, "/v1/models", headers: [("Authorization", "Bearer \(key)")]).status == 401)
            // Login from a foreign page is refused too.
            let foreignLogin = try await gateway.request(.POST, "/auth/login", headers: [("Origin", "https://evil.example")], body: "{\"username\":\"alice\",\"password\":\"password-alice\"}")
            #expect(foreignLogin.status == 403)
        }
    }

    @Test func usersSeeAndRevokeOnlyTheirOwnSessionsAndKeys() async throws {
        try await GatewayHarness.with { gateway in
            let (_, bobKey) = try await gateway.user("bob")
            _ = try await gateway.user("alice")
            let (first, csrf, _) = try await login(gateway, "alice")
            let (second, _, _) = try await login(gateway, "alice")
            let sessions = try await gateway.request(.GET, "/auth/sessions", headers: [("Cookie", first)])
            let list = try #require(sessions.json?["data"]?.arrayValue)
            #expect(list.count == 2)
            #expect(list.filter { $0["current"] == true }.count == 1)
            let other = try #require(list.first { $0["current"] == false }?["id"]?.stringValue)
            // Bob cannot end Alice's session: it does not exist for him.
            let bobTry = try await gateway.request(.DELETE, "/auth/sessions/\(other)", headers: [("Authorization", "Bearer \(bobKey)")])
            #expect(bobTry.status == 404)
            let revoked = try await gateway.request(.DELETE, "/auth/sessions/\(other)", headers: [("Cookie", first), ("X-CSRF-Token", csrf)])
            #expect(revoked.status == 204)
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", second)]).status == 401)
            // Logging out ends the current one.
            let out = try await gateway.request(.POST, "/auth/logout", headers: [("Cookie", first), ("X-CSRF-Token", csrf)])
            #expect(out.status == 204)
            #expect(try await gateway.request(.GET, "/auth/me", headers: [("Cookie", first)]).status == 401)
        }
    }

    @Test func changingThePassword() async throws {
        try await GatewayHarness.with { gateway in
            _ = try await gateway.user("alice")
            let (cookie, csrf, _) = try await login(gateway, "alice")
            let weak = try await gateway.request(.POST, "/auth/password", headers: [("Cookie", cookie), ("X-CSRF-Token", csrf)],
                                                 body: "{\"current_password\":\"password-alice\",\"new_password\":\"short\"}")
            #expect(weak.status == 400)
            let changed = try await gateway.request(.POST, "/auth/password", headers: [("Cookie", cookie), ("X-CSRF-Token", csrf)],
                                                    body: "{\"current_password\":\"password-alice\",\"new_password\":\"a much better one\"}")
            #expect(changed.status == 204)
            #expect(try await login(gateway, "alice", password: "a much better one").result.status == 200)
            #expect(try await login(gateway, "alice").result.status == 401)
        }
    }

    @Test func parallelGuessesAndPasswordChangesAreThrottledToo() async throws {
        try await GatewayHarness.with(configure: { $0.loginAttempts = 3 }) { gateway in
            _ = try await gateway.user("alice")
            // Eight guesses at once, all waiting on the same slow hash: only the limit's worth are tried.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 { group.addTask { try await login(gateway, "alice", password: "guess-guess").result.status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.sorted() == [401, 401, 401, 429, 429, 429, 429, 429])

            // Changing the password checks the current one under the same limit.
            _ = try await gateway.user("bob")
            let (cookie, csrf, _) = try await login(gateway, "bob")
            let headers = [("Cookie", cookie), ("X-CSRF-Token", csrf)]
            let guess = "{\"current_password\":\"guess-guess\",\"new_password\":\"a much better one\"}"
            for _ in 0..<3 {
                let wrong = try await gateway.request(.POST, "/auth/password", headers: headers, body: guess)
                #expect(wrong.status == 403)
                #expect(wrong.errorMessage == "the current password is wrong")
            }
            let throttled = try await gateway.request(.POST, "/auth/password", headers: headers, body: guess)
            #expect(throttled.status == 429)
            #expect(throttled.errorMessage?.hasPrefix("too many wrong passwords; try again in") == true)
            #expect(Int(throttled.headers["retry-after"].first ?? "") ?? 0 > 0)
        }
    }

    @Test func firstRunCreatesAnAdminOnce() async throws {
        try await GatewayHarness.with { gateway in
            let lines = try #require(try await gateway.gateway.firstRunSetup())
            let password = try #require(lines[1].split(separator: " ").last.map(String.init))
            #expect(lines[1].contains("as 'admin'"))
            let admin = try await gateway.gateway.accounts.authenticate(username: "admin", password: password)
            #expect(admin?.role == .admin)
            #expect(try await gateway.gateway.firstRunSetup() == nil)
        }
    }

    @Test func operationsEndpoints() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            #expect(try await gateway.request(.GET, "/healthz").json?["status"] == "ok")
            let ready = try await gateway.request(.GET, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.json?["checks"]?["database"] == "ok")
            #expect(ready.json?["checks"]?["upstream"] == "ok")
            _ = try await gateway.post("/v1/chat/completions", key: key, json: ["model": "stub/echo-text", "messages": [["role": "user", "content": "count me"]]])
            let metrics = try await gateway.request(.GET, "/metrics")
            #expect(metrics.text.contains("gseai_http_requests_total"))
            #expect(metrics.text.contains("/v1/chat/completions"))
            #expect(metrics.text.contains("gseai_tokens_total"))
            #expect(!metrics.text.contains(key))
        }
    }
}
