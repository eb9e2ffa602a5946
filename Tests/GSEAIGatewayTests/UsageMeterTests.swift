import Foundation
import Logging
import Synchronization
import Testing

@testable import GSEAIGateway

/// Usage on its way to the database, and the running day totals budgets read.
@Suite("Usage meter")
struct UsageMeterTests {
    /// Usage in memory, counting the totals read; `total` can be held until the test lets it go on.
    final class Repository: UsageRepository, Sendable {
        struct State {
            var rows: [UsageMeter.Key: (requests: Int, tokens: Int)] = [:]
            var totalReads = 0
            var failing = false
            var holdTotals = false
            var held: [CheckedContinuation<Void, Never>] = []
        }
        let state = Mutex(State())

        func add(userID: String, classID: String?, model: String, day: String, requests: Int, inputTokens: Int,
                 outputTokens: Int) async throws {
            struct Failure: Error {}
            try state.withLock { state in
                if state.failing { throw Failure() }
                let key = UsageMeter.Key(userID: userID, classID: classID, model: model, day: day)
                let row = state.rows[key] ?? (0, 0)
                state.rows[key] = (row.requests + requests, row.tokens + inputTokens + outputTokens)
            }
        }

        func list(userID: String?, classID: String?) async throws -> [UsageRecord] { [] }

        func total(userID: String, classID: String, day: String) async throws -> Int {
            // Read first, then (maybe) wait: like a query whose answer arrives late.
            let (total, hold) = state.withLock { state in
                state.totalReads += 1
                let total = state.rows.filter { $0.key.userID == userID && $0.key.classID == classID && $0.key.day == day }
                    .reduce(0) { $0 + $1.value.tokens }
                return (total, state.holdTotals)
            }
            if hold { await withCheckedContinuation { continuation in state.withLock { $0.held.append(continuation) } } }
            return total
        }

        var reads: Int { state.withLock { $0.totalReads } }

        func release() {
            let held = state.withLock { state in
                state.holdTotals = false
                defer { state.held.removeAll() }
                return state.held
            }
            held.forEach { $0.resume() }
        }
    }

    /// Today: the meter forgets days before yesterday as it flushes.
    let day = UsageRecorder.day(Date())

    func meter(_ repository: Repository) -> UsageMeter {
        UsageMeter(repository: repository, logger: Logger(label: "test"))
    }

    @Test func theDayTotalIsReadOnceAndThenKeptAsUsageComesAndIsWritten() async throws {
        let repository = Repository()
        try await repository.add(userID: "sam", classID: "bio", model: "m", day: day, requests: 1, inputTokens: 10, outputTokens: 5)
        let meter = meter(repository)
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 15)
        meter.record(userID: "sam", classID: "bio", model: "m", day: day, inputTokens: 3, outputTokens: 4)
        meter.record(userID: "sam", classID: "bio", model: "other", day: day, inputTokens: 1, outputTokens: 1)
        // Not this class, not this day, not this student, not in a class: none of them count.
        meter.record(userID: "sam", classID: "chem", model: "m", day: day, inputTokens: 100, outputTokens: 100)
        meter.record(userID: "sam", classID: "bio", model: "m", day: "2026-11-21", inputTokens: 100, outputTokens: 100)
        meter.record(userID: "ada", classID: "bio", model: "m", day: day, inputTokens: 100, outputTokens: 100)
        meter.record(userID: "sam", classID: nil, model: "m", day: day, inputTokens: 100, outputTokens: 100)
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 24)
        await meter.flush()
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 24)
        meter.record(userID: "sam", classID: "bio", model: "m", day: day, inputTokens: 1, outputTokens: 0)
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 25)
        await meter.flush()
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 25)
        #expect(repository.reads == 1)
        // And the database has it all.
        #expect(try await repository.total(userID: "sam", classID: "bio", day: day) == 25)
        #expect(try await repository.total(userID: "sam", classID: "chem", day: day) == 200)
    }

    @Test func usageThatCouldNotBeWrittenStillCountsAndIsWrittenLater() async throws {
        let repository = Repository()
        let meter = meter(repository)
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 0)
        repository.state.withLock { $0.failing = true }
        meter.record(userID: "sam", classID: "bio", model: "m", day: day, inputTokens: 2, outputTokens: 3)
        await meter.flush()
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 5)
        repository.state.withLock { $0.failing = false }
        await meter.flush()
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 5)
        #expect(try await repository.total(userID: "sam", classID: "bio", day: day) == 5)
    }

    @Test func aTotalReadWhileAFlushWritesIsNotKept() async throws {
        let repository = Repository()
        let meter = meter(repository)
        meter.record(userID: "sam", classID: "bio", model: "m", day: day, inputTokens: 2, outputTokens: 3)
        // The read starts before the flush and answers after it: it saw nothing of the 5 tokens, which are
        // neither pending nor in its answer by then.
        repository.state.withLock { $0.holdTotals = true }
        async let first = meter.total(userID: "sam", classID: "bio", day: day)
        while repository.state.withLock({ $0.held.isEmpty }) { await Task.yield() }
        await meter.flush()
        repository.release()
        #expect(try await first == 5)
        #expect(repository.reads == 2)  // the stale answer was read again, not kept
        #expect(try await meter.total(userID: "sam", classID: "bio", day: day) == 5)
        #expect(repository.reads == 2)
    }
}
