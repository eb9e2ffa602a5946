import Foundation
import GSEAI
import GSEAIGateway
import GSEAITestSupport
import Testing

@Suite("Gateway: permissions")
struct PermissionTests {
    @Test func noKeyIs401InTheCallersFormat() async throws {
        try await GatewayHarness.with { gateway in
            let openAI = try await gateway.post("/v1/chat/completions", key: nil, json: ["model": "stub/echo-text", "messages": []])
            #expect(openAI.status == 401)
            #expect(openAI.json?["error"]?["type"] == "authentication_error")
            let anthropic = try await gateway.post("/v1/messages", key: nil, json: ["model": "stub/echo-text", "max_tokens": 1, "messages": []])
            #expect(anthropic.status == 401)
            #expect(anthropic.json?["type"] == "error")
            #expect(anthropic.json?["error"]?["type"] == "authentication_error")
            let wrong = try await gateway.post("/api/v1/chat", key: "gsk_notarealkey", json: ["model": "stub/echo-text", "input": "x"])
            #expect(wrong.status == 401)
            #expect(await gateway.stub.state.requests.isEmpty)
        }
    }

    @Test func revokedKeyAndDisabledUserAre401() async throws {
        try await GatewayHarness.with { gateway in
            let (alice, key) = try await gateway.user("alice")
            let ok = try await gateway.request(.GET, "/v1/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(ok.status == 200)
            let record = try #require(try await gateway.storage.apiKeys.list(userID: alice.id).first)
            try await gateway.gateway.accounts.revokeKey(id: record.id, of: alice)
            let revoked = try await gateway.request(.GET, "/v1/models", headers: [("Authorization", "Bearer \(key)")])
            #expect(revoked.status == 401)
            #expect(revoked.errorMessage == "invalid or revoked API key")

            let (_, bobKey) = try await gateway.user("bob")
            _ = try await gateway.gateway.accounts.setDisabled(true, for: "bob")
            let disabled = try await gateway.request(.GET, "/v1/models", headers: [("x-api-key", bobKey)])
            #expect(disabled.status == 401)
        }
    }

    @Test func anotherUsersResponseIDIsNotFoundLikeAnUnknownOne() async throws {
        try await GatewayHarness.with { gateway in
            let (_, aliceKey) = try await gateway.user("alice")
            let (_, bobKey) = try await gateway.user("bob")
            let first = try await gateway.post("/api/v1/chat", key: aliceKey, json: ["model": "stub/echo-text", "input": "secret"])
            let id = try #require(first.json?["response_id"]?.stringValue)
            let stolen = try await gateway.post("/api/v1/chat", key: bobKey, json: ["model": "stub/echo-text", "input": "x", "previous_response_id": .string(id)])
            let unknown = try await gateway.post("/api/v1/chat", key: bobKey, json: ["model": "stub/echo-text", "input": "x", "previous_response_id": "resp_doesnotexist"])
            #expect(stolen.status == 404)
            #expect(unknown.status == 404)
            #expect(stolen.errorMessage == "response '\(id)' not found")
            #expect(unknown.errorMessage == "response 'resp_doesnotexist' not found")
            let responses = try await gateway.post("/v1/responses", key: bobKey, json: [
                "model": "stub/echo-text", "input": "x", "previous_response_id": .string(id),
            ])
            #expect(responses.status == 404)
            // Only Alice's own request reached the upstream.
            #expect(await gateway.stub.state.requests.count == 1)
            let own = try await gateway.post("/api/v1/chat", key: aliceKey, json: ["model": "stub/echo-text", "input": "mine", "previous_response_id": .string(id)])
            #expect(own.status == 200)
        }
    }

    @Test func modelManagementIsForInstructorsAndAdmins() async throws {
        try await GatewayHarness.with { gateway in
            let (_, student) = try await gateway.user("sam", role: .student)
            let (_, instructor) = try await gateway.user("ines", role: .instructor)
            let (_, admin) = try await gateway.user("ada", role: .admin)
            for path in ["/api/v1/models/load", "/api/v1/models/unload", "/api/v1/models/download"] {
                let refused = try await gateway.post(path, key: student, json: ["model": "stub/echo-text"])
                #expect(refused.status == 403)
                #expect(refused.errorMessage == "this needs the instructor role")
            }
            let status = try await gateway.request(.GET, "/api/v1/models/download/status/job_1", headers: [("Authorization", "Bearer \(student)")])
            #expect(status.status == 403)
            try await gateway.withClient(key: instructor) { (client: GSEAIClient) async throws -> Void in
                #expect(try await client.loadModel("stub/echo-text", ttl: 60).status == "loaded")
                #expect(try await client.unloadModel("stub/echo-text").status == "unloaded")
            }
            try await gateway.withClient(key: admin) { (client: GSEAIClient) async throws -> Void in
                let job = try #require(try await client.downloadModel("org/new").jobID)
                #expect(try await client.downloadStatus(jobID: job).fraction == 0.25)
            }
            // Students may still list models.
            let models = try await gateway.request(.GET, "/api/v1/models", headers: [("Authorization", "Bearer \(student)")])
            #expect(models.status == 200)
        }
    }
}
