import Foundation

/// Limits failed logins per username and address, so that passwords cannot be guessed at speed.
public actor LoginThrottle {
    private let limit: Int
    private let window: Duration
    private var failures: [String: [ContinuousClock.Instant]] = [:]

    public init(limit: Int, window: Duration) {
        self.limit = limit
        self.window = window
    }

    private func key(_ username: String, _ address: String?) -> String { username.lowercased() + "|" + (address ?? "") }

    /// `nil` when an attempt may be made now, else how long to wait.
    public func retryAfter(username: String, address: String?) -> Duration? {
        let now = ContinuousClock.now
        let recent = (failures[key(username, address)] ?? []).filter { now - $0 < window }
        failures[key(username, address)] = recent.isEmpty ? nil : recent
        guard recent.count >= limit, let oldest = recent.first else { return nil }
        return window - (now - oldest)
    }

    public func recordFailure(username: String, address: String?) {
        failures[key(username, address), default: []].append(.now)
    }

    public func recordSuccess(username: String, address: String?) {
        failures[key(username, address)] = nil
    }
}
