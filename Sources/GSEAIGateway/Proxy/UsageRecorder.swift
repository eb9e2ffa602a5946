import GSEAIFormats
import Foundation

/// Records, once per request, the response ids issued to the user (with the upstream that issued them) and
/// the tokens spent (through the ``UsageMeter``, which writes them once a second).
struct UsageRecorder: Sendable {
    let storage: Storage
    let metrics: GatewayMetrics
    let meter: UsageMeter
    let userID: String
    /// The class whose policy applied to the request, if any.
    let classID: String?
    let model: String
    /// Model listings and the like are not usage.
    let counted: Bool
    /// The upstream that answered, once known: stored response ids continue only there.
    var upstream: String?
    /// What the request reserved of its class's daily budget: settled with the usage (written at once,
    /// so that every replica's next check sees it).
    var reservation: BudgetReservation?

    func record(_ observer: ResponseObserver) async throws {
        try await record(responseIDs: observer.responseIDs, inputTokens: observer.inputTokens, outputTokens: observer.outputTokens)
    }

    func record(responseIDs: [String], inputTokens: Int, outputTokens: Int) async throws {
        let now = Date()
        // The counts come from the model server: a negative one would give budget back, a huge one overflow
        // the totals.
        let inputTokens = Self.plausible(inputTokens), outputTokens = Self.plausible(outputTokens)
        if counted {
            if let reservation {
                try await reservation.settle(model: model, inputTokens: inputTokens, outputTokens: outputTokens)
            } else {
                meter.record(userID: userID, classID: classID, model: model, day: Self.day(now), inputTokens: inputTokens,
                             outputTokens: outputTokens)
            }
            metrics.recordTokens(model: model, input: inputTokens, output: outputTokens)
        }
        for id in responseIDs {
            try await storage.responses.record(responseID: id, userID: userID, upstream: upstream, at: now)
        }
    }

    /// A token count as it is counted: at least 0, at most 2^40 (no answer has more; totals cannot overflow).
    static func plausible(_ count: Int) -> Int {
        min(max(0, count), 1 << 40)
    }

    /// `YYYY-MM-DD` in UTC, by arithmetic: a formatter per request costs more than the rest of the accounting.
    static func day(_ date: Date) -> String {
        // Howard Hinnant's days-to-civil algorithm.
        let days = Int((date.timeIntervalSince1970 / 86_400).rounded(.down))
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // Written digit by digit: the interpolation cost about 1,700 instructions a request.
        return ByteWriter.string(capacity: ByteWriter.decimalCount(year) + 6) { text in
            text.write(decimal: year)
            text.write(UInt8(ascii: "-"))
            text.write(twoDigits: month)
            text.write(UInt8(ascii: "-"))
            text.write(twoDigits: day)
        }
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
