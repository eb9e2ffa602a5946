import Foundation

/// A ``ClassRepository`` that remembers, for a few seconds, each user's classes and active class: the two
/// reads the class policy makes on every request a student sends (two database reads per proxied request
/// cost the gateway two thirds of its throughput, see `bench/README.md`).
///
/// Every change made through this repository (a class created, edited, closed or deleted, a member added
/// or removed, an active class chosen) drops everything remembered before it returns, so a closed class
/// refuses the very next request. A class's dates are checked against the clock on each request, so an end
/// date needs no change at all. Each write is announced on the ``ChangeFeed``: the other replicas on the same
/// PostgreSQL database forget what they remember as soon as they hear it (`NOTIFY`), and the entries expire
/// anyway should a notification be lost.
final class CachedClassRepository: ClassRepository {
    /// What is known of one user; each part is read when first needed.
    private struct Entry: Sendable {
        var classes: [ClassSession]?
        var active: String??
    }

    private let base: any ClassRepository
    private let cache: ExpiringCache<String, Entry>
    private let changes: any ChangeFeed

    init(_ base: any ClassRepository, changes: any ChangeFeed = LocalChangeFeed(), lifetime: Duration = .seconds(2)) {
        self.base = base
        let cache = ExpiringCache<String, Entry>(lifetime: lifetime)
        self.cache = cache
        self.changes = changes
        // An account's change (disabled, deleted) may change its classes too.
        changes.subscribe { _ in cache.forget() }
    }

    // MARK: Remembered reads

    func classes(ofMember userID: String) async throws -> [ClassSession] {
        if let cached = cache.value(for: userID)?.classes { return cached }
        let generation = cache.generation
        let classes = try await base.classes(ofMember: userID)
        cache.remember(userID, since: generation) { entry in
            var entry = entry ?? Entry()
            entry.classes = classes
            return entry
        }
        return classes
    }

    func activeClass(userID: String) async throws -> String? {
        if let cached = cache.value(for: userID)?.active { return cached }
        let generation = cache.generation
        let active = try await base.activeClass(userID: userID)
        cache.remember(userID, since: generation) { entry in
            var entry = entry ?? Entry()
            entry.active = .some(active)
            return entry
        }
        return active
    }

    /// Runs a write, forgetting everything both before it (a read racing with it keeps nothing) and after:
    /// classes change rarely, and a change may concern any number of students.
    private func writing<R>(_ write: () async throws -> R) async throws -> R {
        cache.forget()
        do {
            let result = try await write()
            await changes.publish(.classes)
            return result
        } catch {
            // A write that failed half-way may still have changed something.
            await changes.publish(.classes)
            throw error
        }
    }

    // MARK: Writes

    func create(_ classSession: ClassSession) async throws { try await writing { try await base.create(classSession) } }
    func update(_ classSession: ClassSession) async throws { try await writing { try await base.update(classSession) } }
    func delete(id: String) async throws -> Bool { try await writing { try await base.delete(id: id) } }

    func addMember(classID: String, userID: String, at date: Date) async throws -> Bool {
        try await writing { try await base.addMember(classID: classID, userID: userID, at: date) }
    }

    func removeMember(classID: String, userID: String) async throws -> Bool {
        try await writing { try await base.removeMember(classID: classID, userID: userID) }
    }

    func setActiveClass(userID: String, classID: String?) async throws {
        try await writing { try await base.setActiveClass(userID: userID, classID: classID) }
    }

    func acceptInvitation(classID: String, userID: String, at date: Date) async throws -> Bool {
        try await writing { try await base.acceptInvitation(classID: classID, userID: userID, at: date) }
    }

    // MARK: Other reads, always from the database

    func find(id: String) async throws -> ClassSession? { try await base.find(id: id) }
    func find(joinCode: String) async throws -> ClassSession? { try await base.find(joinCode: joinCode) }
    func list(instructorID: String?) async throws -> [ClassSession] { try await base.list(instructorID: instructorID) }
    func members(classID: String) async throws -> [ClassMember] { try await base.members(classID: classID) }
    func roster(classID: String) async throws -> [RosterEntry] { try await base.roster(classID: classID) }
    // Invitations change no one's classes until accepted.
    func invite(classID: String, userID: String, at date: Date) async throws -> Bool {
        try await base.invite(classID: classID, userID: userID, at: date)
    }
    func invitations(classID: String?, userID: String?) async throws -> [ClassInvitation] {
        try await base.invitations(classID: classID, userID: userID)
    }
    func removeInvitation(classID: String, userID: String) async throws -> Bool {
        try await base.removeInvitation(classID: classID, userID: userID)
    }
    func isMember(classID: String, userID: String) async throws -> Bool { try await base.isMember(classID: classID, userID: userID) }
    func memberUsage(classID: String, since day: String) async throws -> [UsageRecord] {
        try await base.memberUsage(classID: classID, since: day)
    }
}
