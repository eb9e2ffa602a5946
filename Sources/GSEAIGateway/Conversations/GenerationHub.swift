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
        /// Each page following it, with the last event it already has (`Last-Event-ID`).
        var subscribers: [UUID: (after: Int, continuation: AsyncStream<AnswerEvent>.Continuation)] = [:]
        /// The generation's task; `nil` once the answer is finished.
        var task: Task<Void, Never>?
        var finished: Bool { task == nil }
    }

    private var live: [String: Live] = [:]
    private let retention: Duration

    public init(retention: Duration = .seconds(60)) {
        self.retention = retention
    }

    /// Starts generating `messageID` with `work`, which reports through ``append(_:name:data:)`` and
    /// ``finish(_:)``. The work runs off this actor (`@concurrent`): the generations of many students at once,
    /// not one after another on the hub.
    func start(_ messageID: String, _ work: @escaping @Sendable @concurrent () async -> Void) {
        live[messageID] = Live()
        live[messageID]?.task = Task { await work() }
    }

    /// Adds an event and passes it to the subscribers.
    func append(_ messageID: String, name: String, data: String) {
        // In place: a copy of the entry would copy every event so far, for each new one.
        guard live[messageID]?.finished == false else { return }
        let event = AnswerEvent(id: live[messageID]!.events.count + 1, name: name, data: data)
        live[messageID]!.events.append(event)
        // A page that resumed after an id not reached yet (it followed another replica, say) gets what follows it.
        for subscriber in live[messageID]!.subscribers.values where event.id > subscriber.after { subscriber.continuation.yield(event) }
    }

    /// Marks the answer finished (its `end` event is the last), and forgets it after the retention time.
    func finish(_ messageID: String) {
        guard live[messageID] != nil else { return }
        for subscriber in live[messageID]!.subscribers.values { subscriber.continuation.finish() }
        live[messageID]!.subscribers = [:]
        live[messageID]!.task = nil
        let retention = self.retention
        Task { [weak self] in
            try? await Task.sleep(for: retention)
            await self?.forget(messageID)
        }
    }

    private func forget(_ messageID: String) { live[messageID] = nil }

    /// Whether the answer is being generated now.
    func isGenerating(_ messageID: String) -> Bool { live[messageID].map { !$0.finished } ?? false }

    /// Stops a generation, if it runs: its task is cancelled and finishes as `stopped`. Returns the task, so
    /// that a caller can wait for the answer to be written.
    @discardableResult
    func stop(_ messageID: String) -> Task<Void, Never>? {
        let task = live[messageID]?.task
        task?.cancel()
        return task
    }

    /// At shutdown: stops every generation still running (each is written `stopped`, its partial answer and
    /// usage kept) and waits for them to be written, at most `limit` in all.
    func stopAll(within limit: Duration) async {
        let tasks = live.values.compactMap(\.task)
        for task in tasks { task.cancel() }
        let deadline = ContinuousClock.now + limit
        for task in tasks { await task.value(within: max(.zero, deadline - .now)) }
    }

    /// The events after `lastEventID`, then the live ones until the end; `nil` when the hub no longer
    /// knows the answer (the page then reads it whole from the database).
    func subscribe(_ messageID: String, after lastEventID: Int) -> AsyncStream<AnswerEvent>? {
        guard let generation = live[messageID] else { return nil }
        let (stream, continuation) = AsyncStream.makeStream(of: AnswerEvent.self, bufferingPolicy: .unbounded)
        for event in generation.events where event.id > lastEventID { continuation.yield(event) }
        if generation.finished {
            continuation.finish()
            return stream
        }
        let token = UUID()
        live[messageID]!.subscribers[token] = (lastEventID, continuation)
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(messageID, token) }
        }
        return stream
    }

    private func unsubscribe(_ messageID: String, _ token: UUID) {
        live[messageID]?.subscribers[token] = nil
    }
}
