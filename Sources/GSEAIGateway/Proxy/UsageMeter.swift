import Foundation
import GSEAI
import Logging
import ServiceLifecycle
import Synchronization

/// Token usage on its way to the database: counted in memory as requests finish, and written once a
/// second (and at shutdown) as one upsert per user, class, model and day. One write per request would make
/// the database the gateway's bottleneck; the cost is that a crash loses at most the last second of counts.
///
/// It also keeps each budgeted student's running total for the day in their class
/// (``total(userID:classID:day:)``), so that a budget check reads the database once per student, class and
/// day instead of on every request. That total is this process's view: another gateway process writing the
/// same database (PostgreSQL, several machines) is not seen until the next day.
public final class UsageMeter: Service, Sendable {
    struct Key: Hashable {
        var userID: String
        var classID: String?
        var model: String
        var day: String
    }

    /// A student's usage in a class on a day, every model together.
    struct DayKey: Hashable {
        var userID: String
        var classID: String
        var day: String
    }

    struct Counts {
        var requests = 0
        var input = 0
        var output = 0

        /// Adds without overflowing: counts come from the model server.
        mutating func add(_ other: Counts) {
            requests = requests.addingSaturated(other.requests)
            input = input.addingSaturated(other.input)
            output = output.addingSaturated(other.output)
        }

        var tokens: Int { input.addingSaturated(output) }
    }

    struct State {
        /// Counted, not written yet.
        var counts: [Key: Counts] = [:]
        /// What a flush is writing now: still counted until written.
        var writing: [Key: Counts] = [:]
        /// Tokens in the database per student, class and day, for the days a budget check asked about; kept
        /// up to date as flushes write.
        var written: [DayKey: Int] = [:]
        /// Bumped by every flush, so that a total read from the database while one wrote is not kept (it may
        /// or may not include that flush).
        var flushes = 0
    }

    private let state = Mutex(State())
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
        state.withLock { state in
            state.counts[key, default: Counts()].add(Counts(requests: 1, input: inputTokens, output: outputTokens))
        }
    }

    /// The tokens a student used in a class on a day (every model): what is written, read from the database
    /// the first time and then kept, plus what is counted and not written yet.
    public func total(userID: String, classID: String, day: String) async throws -> Int {
        let dayKey = DayKey(userID: userID, classID: classID, day: day)
        for _ in 0..<3 {
            let (known, flushes) = state.withLock { state in
                (state.written[dayKey].map { $0.addingSaturated(Self.pending(dayKey, state)) }, state.flushes)
            }
            if let known { return known }
            let read = try await repository.total(userID: userID, classID: classID, day: day)
            let total: Int? = state.withLock { state in
                // A flush in between may have written something the read did or did not see: read again.
                guard state.flushes == flushes else { return nil }
                state.written[dayKey] = read
                return read.addingSaturated(Self.pending(dayKey, state))
            }
            if let total { return total }
        }
        // Flushes kept coming (a database slower than a second per write): answer without keeping it.
        let read = try await repository.total(userID: userID, classID: classID, day: day)
        return read.addingSaturated(state.withLock { Self.pending(dayKey, $0) })
    }

    /// Tokens counted for a student in a class on a day but not written yet.
    private static func pending(_ dayKey: DayKey, _ state: State) -> Int {
        func sum(_ counts: [Key: Counts]) -> Int {
            counts.reduce(0) { total, entry in
                let key = entry.key
                guard key.userID == dayKey.userID, key.classID == dayKey.classID, key.day == dayKey.day else { return total }
                return total.addingSaturated(entry.value.tokens)
            }
        }
        return sum(state.counts).addingSaturated(sum(state.writing))
    }

    /// The flush running now, if any: flushes run one after another, so that one that returns has written
    /// everything counted before it was called (a flush running meanwhile included).
    private let lastFlush = Mutex<Task<Void, Never>?>(nil)

    /// Writes what is counted so far, after any flush already running.
    public func flush() async {
        let task: Task<Void, Never> = lastFlush.withLock { last in
            let previous = last
            let next = Task {
                await previous?.value
                await self.writeCounted()
            }
            last = next
            return next
        }
        await task.value
    }

    private func writeCounted() async {
        let batch = state.withLock { state in
            state.flushes += 1
            state.writing = state.counts
            state.counts.removeAll(keepingCapacity: true)
            return state.writing
        }
        var failed: [Key: Counts] = [:]
        for (key, value) in batch {
            do {
                try await repository.add(userID: key.userID, classID: key.classID, model: key.model, day: key.day,
                                         requests: value.requests, inputTokens: value.input, outputTokens: value.output)
            } catch {
                logger.error("could not write usage", metadata: ["error": "\(error)"])
                failed[key] = value
            }
        }
        state.withLock { state in
            state.flushes += 1
            for (key, value) in batch where failed[key] == nil {
                guard let classID = key.classID else { continue }
                let dayKey = DayKey(userID: key.userID, classID: classID, day: key.day)
                if let written = state.written[dayKey] { state.written[dayKey] = written.addingSaturated(value.tokens) }
            }
            // Kept for the next attempt.
            for (key, value) in failed {
                state.counts[key, default: Counts()].add(value)
            }
            state.writing.removeAll()
            // Budgets are per day: yesterday's totals are not asked for again (a day's grace for clocks).
            let yesterday = UsageRecorder.day(Date().addingTimeInterval(-86_400))
            if state.written.keys.contains(where: { $0.day < yesterday }) {
                state.written = state.written.filter { $0.key.day >= yesterday }
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
