import Foundation
import GSEAI
import Logging
import Synchronization

/// One model server of the pool: its client, its models as last read, and whether it is up.
///
/// An upstream that refuses connections, does not answer its head in time, or answers 5xx is marked down
/// for a while that doubles with each failure in a row (1 s, 2 s, 4 s … at most a minute); requests then go
/// to the others serving the model, and one that has sent nothing to its caller yet is tried again on
/// another. The background refresh reads its models every so often, which also tells when it is back.
public final class Upstream: Sendable {
    public let settings: UpstreamSettings
    public let client: GSEAIClient

    /// What the gateway knows of it now.
    public struct Status: Sendable, Hashable {
        /// Whether it answered its last request (or model list) well.
        public var up = true
        /// Until when it is left aside, after failures.
        public var downUntil: Date?
        /// Failures in a row.
        public var failures = 0
        /// Why it was last marked down.
        public var lastError: String?
        /// Its models, by id, once read (`nil` until then: it may serve any).
        public var models: Set<String>?
        /// The first model of its list: the one a llama.cpp server serves, text-generation-webui's loaded one.
        public var firstModel: String?
        /// The models it has in memory now (LM Studio says; others: unknown, empty).
        public var loaded: Set<String> = []
        /// When its models were last read.
        public var refreshedAt: Date?
        /// Its chat models as the chat page lists them, from the same read.
        public var chatModels: [ChatModel] = []
    }

    /// A chat model as the chat page shows it.
    public struct ChatModel: Sendable, Hashable {
        public var id: String
        public var displayName: String
        public var vision: Bool
        public var loaded: Bool
    }

    private let state = Mutex(Status())

    public init(settings: UpstreamSettings, timeouts: GSEAIClient.Timeouts, logger: Logger) throws {
        self.settings = settings
        // Every admitted request may hold a connection for as long as its answer streams, and listings and
        // the like are not admitted: room for the slots and some more.
        self.client = try GSEAIClient(apiToken: settings.token, baseURL: settings.url, timeouts: timeouts,
                                      connections: settings.slots.addingSaturated(64), engine: settings.engine,
                                      logger: logger)
    }

    public var name: String { settings.name }
    public var kind: UpstreamKind { settings.kind }
    public var status: Status { state.withLock { $0 } }

    /// Whether it is to be tried now: up, or its time aside is over.
    func isAvailable(at now: Date = Date()) -> Bool {
        state.withLock { $0.up || ($0.downUntil.map { $0 <= now } ?? true) }
    }

    /// Whether it serves `model`, as far as the gateway knows (an upstream whose models are not read yet may).
    func mayServe(_ model: String) -> Bool {
        state.withLock { $0.models.map { $0.contains(model) } ?? true }
    }

    func knowsServing(_ model: String) -> Bool {
        state.withLock { $0.models?.contains(model) ?? false }
    }

    func hasLoaded(_ model: String) -> Bool {
        state.withLock { $0.loaded.contains(model) }
    }

    /// Notes a failure talking to it: down, for a while that doubles with each failure in a row.
    func markFailed(_ reason: String, at now: Date = Date()) {
        state.withLock { status in
            status.failures = min(status.failures + 1, 30)
            status.up = false
            status.lastError = reason
            status.downUntil = now.addingTimeInterval(min(60, pow(2, Double(status.failures - 1))))
        }
    }

    /// Notes that it answered well.
    func markSucceeded() {
        state.withLock { status in
            guard !status.up || status.failures > 0 else { return }
            status.up = true
            status.failures = 0
            status.downUntil = nil
        }
    }

    /// Its chat models for the chat page, without waiting on the model server (busy generating, a llama.cpp
    /// server answers a listing only between two answers) once they were read: as last read; when that was
    /// more than `maxAge` ago, one read starts in the background for the next page. Read now only the first
    /// time.
    func chatModels(maxAge: TimeInterval = 30, now: Date = Date()) async throws -> [ChatModel] {
        let (known, stale) = state.withLock { status -> ([ChatModel]?, Bool) in
            guard let at = status.refreshedAt else { return (nil, false) }
            return (status.chatModels, now.timeIntervalSince(at) > maxAge)
        }
        guard let known else {
            try await read()
            return status.chatModels
        }
        if stale, backgroundRead.withLock({ running in defer { running = true }; return !running }) {
            Task {
                await self.refresh()
                self.backgroundRead.withLock { $0 = false }
            }
        }
        return known
    }

    /// Whether a background read of the models runs now (one at a time).
    private let backgroundRead = Mutex(false)

    /// Reads its models (and, from LM Studio, which are loaded); a failure marks it down.
    func refresh() async {
        try? await read()
    }

    /// ``refresh()``, throwing what failed.
    private func read() async throws {
        do {
            var models: Set<String> = []
            var loaded: Set<String> = []
            var first: String?
            var chatModels: [ChatModel] = []
            if kind == .lmstudio {
                for model in try await client.listModels().models {
                    models.insert(model.key)
                    if model.isLoaded { loaded.insert(model.key) }
                    if model.type != "embedding" && model.type != "embeddings" {
                        chatModels.append(ChatModel(id: model.key, displayName: model.displayName ?? model.key, vision: model.supportsVision,
                                                    loaded: model.isLoaded))
                    }
                }
            } else {
                let listed = try await client.listModelsOpenAI().data
                for model in listed {
                    models.insert(model.id)
                    chatModels.append(ChatModel(id: model.id, displayName: model.id, vision: false, loaded: true))
                }
                first = listed.first?.id
            }
            state.withLock { status in
                status.models = models
                status.loaded = loaded
                status.firstModel = first
                status.refreshedAt = Date()
                status.chatModels = chatModels
            }
            markSucceeded()
        } catch {
            // A caller that left (a page closed mid-listing) says nothing of the model server.
            if !(error is CancellationError || Task.isCancelled) { markFailed(GatewayError.upstream(error).message) }
            throw error
        }
    }

    /// Whether a failure of a call means the upstream itself is unwell (rather than the request being bad).
    static func isUpstreamFault(_ error: any Error) -> Bool {
        switch error {
        case GSEAIError.connection, GSEAIError.timeout(.connect), GSEAIError.timeout(.firstByte): true
        default: false
        }
    }
}
