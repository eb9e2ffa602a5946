import Foundation

/// Limits password attempts per username and address, so that passwords cannot be guessed at speed; the
/// attempts are counted in the shared ``RateWindow``, so that several replicas limit them together.
///
/// An attempt counts from the moment it is admitted until it succeeds: guesses sent in parallel, all
/// waiting on the same slow hash, cannot slip through before the first of them fails.
public struct LoginThrottle: Sendable {
    private let limit: Int
    private let window: Duration
    private let attempts: any RateWindow

    public init(limit: Int, window: Duration, attempts: any RateWindow = LocalRateWindow()) {
        self.limit = limit
        self.window = window
        self.attempts = attempts
    }

    private func key(_ username: String, _ address: String?) -> String {
        "login:" + username.lowercased() + "|" + (address ?? "")
    }

    /// Admits an attempt and counts it (`nil`), or says how long to wait first.
    public func admit(username: String, address: String?) async throws -> Duration? {
        let refusal = try await attempts.admit(key: key(username, address), limit: limit, window: window.seconds, now: Date())
        return refusal.map { .milliseconds(Int(($0.retryAfter * 1000).rounded(.up).clamped(to: 1...86_400_000))) }
    }

    /// The attempt succeeded: the count starts again.
    public func succeeded(username: String, address: String?) async throws {
        try await attempts.reset(key: key(username, address))
    }
}

extension Double {
    /// The number within `range` (its nearest bound when outside, the lower one for NaN).
    func clamped(to range: ClosedRange<Double>) -> Double {
        guard !isNaN else { return range.lowerBound }
        return Swift.min(Swift.max(self, range.lowerBound), range.upperBound)
    }
}
