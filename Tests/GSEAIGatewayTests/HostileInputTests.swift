import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import NIOHTTP1
import NIOCore
import Testing

/// Input made to break the gateway, as an attacker would send it: every answer is a clear error in the
/// caller's format, nothing reaches the model server, and the process goes on serving.
@Suite("Gateway: hostile input")
struct HostileInputTests {
    @Test func anUploadDeclaringAnOverflowingPixelCountIsRefusedAndTheGatewayServesOn() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let (status, json) = try await Self.upload(TestImages.overflowingPNG, key: key, to: gateway)
            #expect(status == 413)
            #expect(json?["error"]?["message"] == "the image is 3221225472×3221225472 pixels; the limit is 40 megapixels")
            let health = try await gateway.request(.GET, "/healthz")
            #expect(health.status == 200)
        }
    }

    /// Uploads raw image bytes to `/api/images`; the status and the JSON answer.
    static func upload(_ bytes: Data, key: String, to gateway: GatewayHarness) async throws -> (Int, JSONValue?) {
        try await gateway.withClient(key: key) { client in
            var request = RawRequest(method: .POST, path: "/api/images", body: .bytes(ByteBuffer(data: bytes)))
            request.headers.add(name: "Content-Type", value: "image/png")
            let response = try await client.send(request)
            let body = try await response.body.collect(upTo: 1 << 16)
            return (response.status, try? JSONValue(parsing: body.readableBytesView))
        }
    }

    @Test func aPixelBombIsRefusedOnEverySurfaceInItsOwnFormat() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            let bomb = "data:image/png;base64," + TestImages.png(width: 100_000, height: 100_000).base64EncodedString()
            let message = "the image is 100000×100000 pixels; the limit is 40 megapixels"
            let bodies: [(String, JSONValue)] = [
                ("/v1/chat/completions", ["model": "stub/echo-vl", "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": .string(bomb)]]]]]]),
                ("/api/v0/chat/completions", ["model": "stub/echo-vl", "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": .string(bomb)]]]]]]),
                ("/api/v1/chat", ["model": "stub/echo-vl", "input": [["type": "image", "data_url": .string(bomb)]]]),
                ("/v1/responses", ["model": "stub/echo-vl", "input": [["role": "user", "content": [["type": "input_image", "image_url": .string(bomb)]]]]]),
            ]
            for (path, body) in bodies {
                for stream in [false, true] {
                    var body = body
                    if case .object(var members) = body { members["stream"] = .bool(stream); body = .object(members) }
                    let refused = try await gateway.post(path, key: key, json: body)
                    #expect(refused.status == 413, "\(path)")
                    #expect(refused.json?["error"]?["message"] == .string(message), "\(path): \(refused.text)")
                    #expect(refused.json?["error"]?["type"] == "request_too_large")
                }
            }
            let anthropic = try await gateway.post("/v1/messages", key: key, json: [
                "model": "stub/echo-vl", "max_tokens": 5,
                "messages": [["role": "user", "content": [["type": "image", "source": [
                    "type": "base64", "media_type": "image/png", "data": .string(String(bomb.dropFirst("data:image/png;base64,".count))),
                ]]]]],
            ])
            #expect(anthropic.status == 413)
            #expect(anthropic.json == ["type": "error", "error": ["type": "request_too_large", "message": .string(message)]])
            // The upload endpoint gives the same answer.
            let (status, json) = try await Self.upload(TestImages.png(width: 100_000, height: 100_000), key: key, to: gateway)
            #expect(status == 413)
            #expect(json?["error"]?["message"] == .string(message))
            #expect(await gateway.stub.state.requests.isEmpty)
        }
    }

    @Test func aControlCharacterInAPathIsRefusedNotCutShort() async throws {
        try await GatewayHarness.with { gateway in
            for path in ["/index.html%00.js", "/js/api.js%00.png", "/js/api.js%0a", "/api/conversations/x%00y", "/v1/models%00"] {
                let refused = try await gateway.request(.GET, path)
                #expect(refused.status == 400, "\(path)")
                #expect(refused.errorMessage == "the request path holds a control character", "\(path)")
                #expect(refused.headers.first(name: "Content-Type") == "application/json")
            }
            // An escaped percent sign is not a NUL; a page that exists is served as itself.
            #expect(try await gateway.request(.GET, "/index.html%2500.js").status == 404)
            let page = try await gateway.request(.GET, "/js/api.js")
            #expect(page.status == 200)
            #expect(page.headers.first(name: "Content-Type")?.hasPrefix("text/javascript") == true)
        }
    }

    @Test func aModelKeyWithASlashIsTheRestOfThePath() async throws {
        try await GatewayHarness.with { gateway in
            let (_, key) = try await gateway.user("alice")
            for path in ["/api/v0/models/stub/echo-text", "/api/v0/models/stub%2Fecho-text"] {
                let model = try await gateway.request(.GET, path, headers: [("Authorization", "Bearer \(key)")])
                #expect(model.status == 200, "\(path): \(model.text)")
                #expect(model.json?["id"] == "stub/echo-text", "\(path)")
            }
            let missing = try await gateway.request(.GET, "/api/v0/models/stub/nothing", headers: [("Authorization", "Bearer \(key)")])
            #expect(missing.status == 404)
            #expect(missing.errorMessage == "model 'stub/nothing' not found")
        }
    }

    @Test func theSessionCookieIsSecureWhenPeopleUseHTTPS() async throws {
        try await GatewayHarness.with(configure: { $0.publicURL = "https://gseai.example.edu" }) { gateway in
            _ = try await gateway.user("alice")
            let login = try await gateway.request(.POST, "/auth/login", headers: [("Origin", "https://gseai.example.edu")],
                                                  body: #"{"username":"alice","password":"password-alice"}"#)
            #expect(login.status == 200, "\(login.text)")
            let cookie = try #require(login.headers["set-cookie"].first)
            #expect(cookie.contains("Secure"))
            #expect(cookie.contains("HttpOnly"))
        }
        try await GatewayHarness.with { gateway in
            _ = try await gateway.user("alice")
            let login = try await gateway.request(.POST, "/auth/login", body: #"{"username":"alice","password":"password-alice"}"#)
            #expect(login.headers["set-cookie"].first?.contains("Secure") == false)
        }
    }

    @Test func thePageIsServedFromTheCopyBuiltIntoTheGateway() async throws {
        try await GatewayHarness.with(configure: { $0.publicDirectory = "" }) { gateway in
            let page = try await gateway.request(.GET, "/")
            #expect(page.status == 200)
            #expect(page.text.contains("<script type=\"module\" src=\"/js/main.js\"></script>"))
        }
    }
}
