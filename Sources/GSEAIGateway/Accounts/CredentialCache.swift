import Foundation
import Synchronization

/// Recently checked API keys with their users, so that a script's burst of requests does not read the
/// database for each one. Entries live a few seconds; every change made through this process (a key
/// revoked, a user disabled or given another role) drops the user's entries at once. Changes made by the
/// `gseai` command on the same database take effect when the entries expire.
final class CredentialCache: Sendable {
    private struct Entry {
        var key: APIKey
        var user: User
        var expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let lifetime: Duration
    private let capacity: Int

    init(lifetime: Duration = .seconds(2), capacity: Int = 10_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// The key and user cached for a key's digest, if still fresh.
    func lookup(digest: String) -> (APIKey, User)? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[digest] else { return nil }
            guard entry.expires > now else {
                entries[digest] = nil
                return nil
            }
            return (entry.key, entry.user)
        }
    }

    func store(digest: String, key: APIKey, user: User) {
        let expires = ContinuousClock.now + lifetime
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[digest] = Entry(key: key, user: user, expires: expires)
        }
    }

    /// Forgets every key of a user.
    func invalidate(userID: String) {
        entries.withLock { entries in entries = entries.filter { $0.value.user.id != userID } }
    }
}
