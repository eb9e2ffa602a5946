import AsyncHTTPClient
import Foundation
import GSEAI
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing

@testable import GSEAIGateway

/// `gseai serve` over HTTPS (`tls_certificate`, `tls_key`): both of the gateway's lanes (Hummingbird's handling
/// and the forwarded routes' `ForwardingLane`) answer through TLS, a whole answer and a stream.
@Suite("HTTPS")
struct TLSTests {
    /// A self-signed certificate for 127.0.0.1 and its key (P-256), made for this test only, valid until 2126.
    static let certificate = """
-----BEGIN CERTIFICATE-----
MIIBjzCCATagAwIBAgIUbf3UfCSl+uuabJuxaU1m3dYCzyYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwNjIzNTUzN1oYDzIxMjYxMTEy
MjM1NTM3WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQFNbw6hdugAgSzHHELJ/YYHyr0JsnFp00Hreh5EdHmcJjnVI+OH0PG
6OTdlAA3y4Vry1W8lhsUerY8AIr2uFtJo2QwYjAdBgNVHQ4EFgQUTLnHSAPevJTB
5fERYolDfAFd7TwwHwYDVR0jBBgwFoAUTLnHSAPevJTB5fERYolDfAFd7TwwDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0cAMEQC
IBWo1/dXPTRbLgOpazTl3IBFauYIJO5Lzw7JNhBUCD+sAiAQ/o2M+jGC1aXlTPFF
1JFDSlvtKLRj3WOyEHKrJIgZ6A==
-----END CERTIFICATE-----
"""
    static let key = """
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgE9vlh60IPUOBBwsV
wH6i9fThbd4b2rvDg9Nke00MmwqhRANCAAQFNbw6hdugAgSzHHELJ/YYHyr0JsnF
p00Hreh5EdHmcJjnVI+OH0PG6OTdlAA3y4Vry1W8lhsUerY8AIr2uFtJ
-----END PRIVATE KEY-----
"""

    @Test func bothLanesAnswerOverTLS() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gseai-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let certificatePath = folder.appendingPathComponent("certificate.pem").path
        let keyPath = folder.appendingPathComponent("key.pem").path
        try Self.certificate.write(toFile: certificatePath, atomically: true, encoding: .utf8)
        try Self.key.write(toFile: keyPath, atomically: true, encoding: .utf8)

        try await GatewayHarness.with(configure: {
            $0.tlsCertificatePath = certificatePath
            $0.tlsKeyPath = keyPath
        }) { gateway in
            let (_, key) = try await gateway.user("alice")
            var configuration = HTTPClient.Configuration()
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            configuration.tlsConfiguration = tls
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            let base = gateway.baseURL.replacingOccurrences(of: "http://", with: "https://")

            func send(_ method: HTTPMethod, _ path: String, body: String? = nil, closing: Bool = false) async throws -> (Int, String, HTTPHeaders) {
                var request = HTTPClientRequest(url: base + path)
                request.method = method
                if closing { request.headers.add(name: "Connection", value: "close") }
                request.headers.add(name: "Authorization", value: "Bearer \(key)")
                if let body {
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(string: body))
                }
                let response = try await client.execute(request, timeout: .seconds(30))
                let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                return (Int(response.status.code), text, response.headers)
            }

            do {
                // Hummingbird's handling: the health check.
                let (healthStatus, health, _) = try await send(.GET, "/healthz")
                #expect(healthStatus == 200)
                #expect(health.contains("ok"), "\(health)")
                // The lane: a whole answer, then a stream.
                let (status, whole, headers) = try await send(.POST, "/v1/chat/completions",
                                                              body: #"{"model":"stub/echo-text","messages":[{"role":"user","content":"over tls"}]}"#)
                #expect(status == 200)
                #expect(whole.contains("over tls"), "\(whole)")
                #expect(headers.first(name: "server") == "gseai")
                let (streamStatus, stream, streamHeaders) = try await send(.POST, "/v1/chat/completions",
                                                               body: #"{"model":"stub/echo-text","stream":true,"messages":[{"role":"user","content":"streamed over tls"}]}"#)
                #expect(streamStatus == 200)
                #expect(stream.contains("data: "), "\(stream)")
                #expect(stream.contains("[DONE]"), "\(stream)")
                // The connection's codec writes the security headers and the lane's `Date` and `Server` over TLS too, once
                // each, on a whole answer and a stream (its head sent before its first event).
                for answer in [headers, streamHeaders] {
                    #expect(answer["server"] == ["gseai"])
                    #expect(answer["date"].count == 1 && answer["date"].first?.hasSuffix(" GMT") == true)
                    #expect(answer["content-security-policy"] == [SecurityHeaders.contentSecurityPolicy])
                    #expect(answer["x-frame-options"] == ["DENY"])
                    #expect(answer["x-content-type-options"] == ["nosniff"])
                    #expect(answer["referrer-policy"] == ["no-referrer"])
                }
                // An answer that closes its connection (TLS cannot close only the output: the lane closes it all,
                // after the answer).
                let (closedStatus, closed, _) = try await send(.POST, "/v1/chat/completions",
                                                               body: #"{"model":"stub/echo-text","messages":[{"role":"user","content":"and close"}]}"#,
                                                               closing: true)
                #expect(closedStatus == 200)
                #expect(closed.contains("and close"), "\(closed)")
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()
        }
    }
}
