import Synchronization

/// Values kept a few seconds, so that what every request needs (its API key, its user's classes) is not
/// read from the database each time. Forgetting bumps a generation: a value read from the database before
/// a change, but stored after it, is not kept (``remember(_:since:_:)``), so a change made through this
/// process takes effect on the very next request. Changes made by another process are seen when the
/// entries expire.
final class ExpiringCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entry {
        var value: Value
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var generation = 0
    }

    private let state = Mutex(State())
    private let lifetime: Duration
    private let capacity: Int

    init(lifetime: Duration, capacity: Int = 10_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// The generation to pass to ``remember(_:since:_:)`` for a value about to be read.
    var generation: Int { state.withLock { $0.generation } }

    /// The value kept for `key`, if still fresh.
    func value(for key: Key) -> Value? {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard let entry = state.entries[key] else { return nil }
            guard entry.expires > now else {
                state.entries[key] = nil
                return nil
            }
            return entry.value
        }
    }

    /// Keeps a value read since `generation` unless something was forgotten meanwhile; `update` gets the
    /// fresh value kept now, if any.
    func remember(_ key: Key, since generation: Int, _ update: (Value?) -> Value) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard state.generation == generation else { return }
            if state.entries.count >= capacity, state.entries[key] == nil { state.entries.removeAll(keepingCapacity: true) }
            let current = state.entries[key].flatMap { $0.expires > now ? $0.value : nil }
            state.entries[key] = Entry(value: update(current), expires: now + lifetime)
        }
    }

    /// Forgets the values that `shouldForget` picks (every value by default).
    func forget(where shouldForget: (Value) -> Bool = { _ in true }) {
        state.withLock { state in
            state.entries = state.entries.filter { !shouldForget($0.value.value) }
            state.generation += 1
        }
    }
}
