import Foundation

/// Limits password attempts per username and address, so that passwords cannot be guessed at speed.
///
/// An attempt counts from the moment it is admitted until it succeeds: guesses sent in parallel, all
/// waiting on the same slow hash, cannot slip through before the first of them fails.
public actor LoginThrottle {
    private let limit: Int
    private let window: Duration
    /// Attempts not (yet) known to have succeeded, per username and address, oldest first.
    private var attempts: [String: [ContinuousClock.Instant]] = [:]
    /// Above this many keys, keys with no attempt in the window are dropped, so that trying many usernames
    /// does not grow the table for ever.
    private let pruneAbove = 1_000

    public init(limit: Int, window: Duration) {
        self.limit = limit
        self.window = window
    }

    private func key(_ username: String, _ address: String?) -> String { username.lowercased() + "|" + (address ?? "") }

    /// Admits an attempt and counts it (`nil`), or says how long to wait first.
    public func admit(username: String, address: String?) -> Duration? {
        let now = ContinuousClock.now
        if attempts.count > pruneAbove {
            attempts = attempts.filter { now - ($0.value.last ?? now) < window }
        }
        let key = key(username, address)
        var recent = (attempts[key] ?? []).filter { now - $0 < window }
        if recent.count >= limit, let oldest = recent.first {
            attempts[key] = recent
            return window - (now - oldest)
        }
        recent.append(now)
        attempts[key] = recent
        return nil
    }

    /// The attempt succeeded: the count starts again.
    public func succeeded(username: String, address: String?) {
        attempts[key(username, address)] = nil
    }
}
