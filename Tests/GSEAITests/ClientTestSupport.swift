import Foundation
import GSEAI
import GSEAITestSupport

/// Runs `body` with a started stub and a client for it; both are shut down afterwards.
@discardableResult
func withClient<T: Sendable>(
    engine: GSEAIClient.Engine? = nil,
    timeouts: GSEAIClient.Timeouts = .init(),
    token: String = "stub-token",
    _ body: (GSEAIClient, StubUpstream) async throws -> T
) async throws -> T {
    try await StubUpstream.with { stub in
        let client = try GSEAIClient(apiToken: token, baseURL: stub.baseURL, timeouts: timeouts, engine: engine)
        do {
            let result = try await body(client, stub)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}

/// Collects a stream's events.
func collect<S: AsyncSequence>(_ stream: S) async throws -> [S.Element] {
    var events: [S.Element] = []
    for try await event in stream { events.append(event) }
    return events
}

/// A real 1×1 PNG.
let tinyPNG = Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")!
