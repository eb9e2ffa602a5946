import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Token usage on its way to the database: counted in memory as requests finish, and written once a
/// second (and at shutdown) as one upsert per user, class, model and day. One write per request would make the
/// database the gateway's bottleneck; the cost is that a crash loses at most the last second of counts.
/// ``pending(userID:classID:day:)`` lets budget checks see what is not written yet.
public final class UsageMeter: Service, Sendable {
    struct Key: Hashable {
        var userID: String
        var classID: String?
        var model: String
        var day: String
    }

    struct Counts {
        var requests = 0
        var input = 0
        var output = 0
    }

    private let counts = Mutex<[Key: Counts]>([:])
    /// What a flush is writing now: still counted by ``pending(userID:classID:day:)`` until written, so that a
    /// budget check in between sees it.
    private let writing = Mutex<[Key: Counts]>([:])
    private let repository: any UsageRepository
    private let interval: Duration
    private let logger: Logger

    public init(repository: any UsageRepository, interval: Duration = .seconds(1), logger: Logger) {
        self.repository = repository
        self.interval = interval
        self.logger = logger
    }

    /// Counts one request, in the class whose policy applied to it (`nil`: outside any).
    public func record(userID: String, classID: String?, model: String, day: String, inputTokens: Int, outputTokens: Int) {
        let key = Key(userID: userID, classID: classID, model: model, day: day)
        counts.withLock { counts in
            counts[key, default: Counts()].requests += 1
            counts[key]!.input += inputTokens
            counts[key]!.output += outputTokens
        }
    }

    /// Tokens counted for a user in a class on a day but not written yet.
    public func pending(userID: String, classID: String, day: String) -> Int {
        func sum(_ counts: [Key: Counts]) -> Int {
            counts.reduce(0) { total, entry in
                let key = entry.key
                guard key.userID == userID, key.classID == classID, key.day == day else { return total }
                return total + entry.value.input + entry.value.output
            }
        }
        // Read in the order a flush moves them (counts, then writing) so that nothing is missed; counting
        // something twice for an instant errs on the safe side for budgets.
        let waiting = counts.withLock { sum($0) }
        return waiting + writing.withLock { sum($0) }
    }

    /// Writes what is counted so far.
    public func flush() async {
        let batch = writing.withLock { writing in
            counts.withLock { counts in
                defer { counts.removeAll(keepingCapacity: true) }
                writing = counts
                return counts
            }
        }
        defer { writing.withLock { $0.removeAll() } }
        for (key, value) in batch {
            do {
                try await repository.add(userID: key.userID, classID: key.classID, model: key.model, day: key.day,
                                         requests: value.requests,
                                         inputTokens: value.input, outputTokens: value.output)
            } catch {
                logger.error("could not write usage", metadata: ["error": "\(error)"])
                // Keep it for the next attempt.
                counts.withLock { counts in
                    counts[key, default: Counts()].requests += value.requests
                    counts[key]!.input += value.input
                    counts[key]!.output += value.output
                }
            }
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.interval)
                await self.flush()
            }
        }
        await flush()
    }
}
