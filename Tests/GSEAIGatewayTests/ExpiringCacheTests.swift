import Testing

@testable import GSEAIGateway

/// The short-lived cache behind API keys and class memberships.
@Suite struct ExpiringCacheTests {
    @Test func aValueReadBeforeAChangeIsNotKeptAfterIt() {
        let cache = ExpiringCache<String, String>(lifetime: .seconds(3600))
        let generation = cache.generation
        // A key is revoked while its record is being read from the database ...
        cache.forget()
        // ... so what was read is not kept.
        cache.remember("key", since: generation) { _ in "stale" }
        #expect(cache.value(for: "key") == nil)
        cache.remember("key", since: cache.generation) { _ in "fresh" }
        #expect(cache.value(for: "key") == "fresh")
    }

    @Test func forgettingPicksValuesAndEntriesExpire() {
        let cache = ExpiringCache<String, (user: String, n: Int)>(lifetime: .seconds(3600))
        for (key, user) in [("a", "alice"), ("b", "alice"), ("c", "bob")] {
            cache.remember(key, since: cache.generation) { _ in (user, 1) }
        }
        cache.forget { $0.user == "alice" }
        #expect(cache.value(for: "a") == nil && cache.value(for: "b") == nil)
        #expect(cache.value(for: "c")?.user == "bob")
        cache.remember("c", since: cache.generation) { old in (old!.user, old!.n + 1) }
        #expect(cache.value(for: "c")?.n == 2)

        let expired = ExpiringCache<String, Int>(lifetime: .zero)
        expired.remember("x", since: expired.generation) { _ in 1 }
        #expect(expired.value(for: "x") == nil)
    }
}
