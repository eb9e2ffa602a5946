import Foundation

/// One event of an answer's stream to the page: `delta`, `reasoning`, `item` or `end`, numbered so that a
/// page that reconnects (SSE `Last-Event-ID`) resumes where it left off.
public struct AnswerEvent: Sendable, Hashable {
    public var id: Int
    public var name: String
    public var data: String
}

/// The answers being generated now. Generation runs on the server, independent of any page: pages
/// subscribe and unsubscribe as they come and go; the events stay here while the answer is generated and
/// a little after, for pages that reconnect.
public actor GenerationHub {
    private struct Live {
        var events: [AnswerEvent] = []
        var finished = false
        var subscribers: [UUID: AsyncStream<AnswerEvent>.Continuation] = [:]
        var task: Task<Void, Never>?
    }

    private var live: [String: Live] = [:]
    private let retention: Duration

    public init(retention: Duration = .seconds(60)) {
        self.retention = retention
    }

    /// Starts generating `messageID` with `work`, which reports through ``append(_:name:data:)`` and
    /// ``finish(_:)``.
    func start(_ messageID: String, _ work: @escaping @Sendable () async -> Void) {
        live[messageID] = Live()
        live[messageID]?.task = Task { await work() }
    }

    /// Adds an event and passes it to the subscribers.
    func append(_ messageID: String, name: String, data: String) {
        guard var generation = live[messageID], !generation.finished else { return }
        let event = AnswerEvent(id: generation.events.count + 1, name: name, data: data)
        generation.events.append(event)
        for subscriber in generation.subscribers.values { subscriber.yield(event) }
        live[messageID] = generation
    }

    /// Marks the answer finished (its `end` event is the last), and forgets it after the retention time.
    func finish(_ messageID: String) {
        guard var generation = live[messageID] else { return }
        generation.finished = true
        for subscriber in generation.subscribers.values { subscriber.finish() }
        generation.subscribers = [:]
        generation.task = nil
        live[messageID] = generation
        let retention = self.retention
        Task { [weak self] in
            try? await Task.sleep(for: retention)
            await self?.forget(messageID)
        }
    }

    private func forget(_ messageID: String) { live[messageID] = nil }

    /// Whether the answer is being generated now.
    func isGenerating(_ messageID: String) -> Bool { live[messageID].map { !$0.finished } ?? false }

    /// Stops a generation: its task is cancelled and finishes as `stopped`.
    func stop(_ messageID: String) -> Bool {
        guard let generation = live[messageID], !generation.finished, let task = generation.task else { return false }
        task.cancel()
        return true
    }

    /// The events after `lastEventID`, then the live ones until the end; `nil` when the hub no longer
    /// knows the answer (the page then reads it whole from the database).
    func subscribe(_ messageID: String, after lastEventID: Int) -> AsyncStream<AnswerEvent>? {
        guard var generation = live[messageID] else { return nil }
        let (stream, continuation) = AsyncStream.makeStream(of: AnswerEvent.self, bufferingPolicy: .unbounded)
        for event in generation.events where event.id > lastEventID { continuation.yield(event) }
        if generation.finished {
            continuation.finish()
            return stream
        }
        let token = UUID()
        generation.subscribers[token] = continuation
        live[messageID] = generation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(messageID, token) }
        }
        return stream
    }

    private func unsubscribe(_ messageID: String, _ token: UUID) {
        live[messageID]?.subscribers[token] = nil
    }

    /// Waits for every generation to end (for tests and shutdown).
    func waitForAll() async {
        let tasks = live.values.compactMap(\.task)
        for task in tasks { await task.value }
    }
}
