import Synchronization

/// Gathers the work of concurrent callers into batches, one batch running at a time: while one is in the
/// database, the next gathers. Each caller waits for its own answer.
///
/// One round trip then serves every request that arrived meanwhile (a group commit): under load, the
/// database's and this process's cost per request fall with the batch's size; alone, a caller waits for one
/// round trip, as without it. A batch runs in a task of its own, so a caller that leaves cannot cut a write
/// in the middle.
final class StatementBatcher<Item: Sendable, Answer: Sendable>: Sendable {
    private struct Waiting: Sendable {
        var item: Item
        var continuation: CheckedContinuation<Answer, any Error>
    }

    private struct State: Sendable {
        var waiting: [Waiting] = []
        var running = false
    }

    private let state = Mutex(State())
    private let largest: Int
    private let run: @Sendable ([Item]) async throws -> [Answer]

    /// `run` answers a batch of at most `largest` items, one answer per item in their order.
    init(largest: Int = 256, run: @escaping @Sendable ([Item]) async throws -> [Answer]) {
        precondition(largest > 0)
        self.largest = largest
        self.run = run
    }

    func submit(_ item: Item) async throws -> Answer {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { state in
                state.waiting.append(Waiting(item: item, continuation: continuation))
                defer { state.running = true }
                return !state.running
            }
            if start { Task { await drain() } }
        }
    }

    /// Runs batches until nothing waits.
    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Waiting] in
                guard !state.waiting.isEmpty else {
                    state.running = false
                    return []
                }
                let count = min(largest, state.waiting.count)
                defer { state.waiting.removeFirst(count) }
                return Array(state.waiting.prefix(count))
            }
            guard !batch.isEmpty else { return }
            do {
                let answers = try await run(batch.map(\.item))
                guard answers.count == batch.count else { throw BatchAnswerMismatch(expected: batch.count, got: answers.count) }
                for (waiting, answer) in zip(batch, answers) { waiting.continuation.resume(returning: answer) }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
            }
        }
    }
}

/// A batch answered with another number of answers than it had items (a fault of the statement).
struct BatchAnswerMismatch: Error, CustomStringConvertible {
    var expected: Int
    var got: Int
    var description: String { "a batch of \(expected) got \(got) answers" }
}
