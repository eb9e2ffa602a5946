import Foundation
import Synchronization

/// A ``ClassRepository`` that remembers, for a few seconds, each user's classes and active class: the two
/// reads the class policy makes on every request a student sends (two database reads per proxied request
/// cost the gateway two thirds of its throughput, see `bench/README.md`).
///
/// Every change made through this repository (a class created, edited, closed or deleted, a member added
/// or removed, an active class chosen) drops everything remembered before it returns, so a closed class
/// refuses the very next request. A class's dates are checked against the clock on each request, so an end
/// date needs no change at all. Changes made to the database by another process (another gateway on the
/// same PostgreSQL database, say) take effect when the entries expire.
final class CachedClassRepository: ClassRepository {
    private struct Entry {
        var classes: [ClassSession]?
        var active: String??
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// Bumped by every write, so that a read that started before a write does not store what it read.
        var generation = 0
    }

    private let base: any ClassRepository
    private let state = Mutex(State())
    private let lifetime: Duration
    private let capacity: Int

    init(_ base: any ClassRepository, lifetime: Duration = .seconds(2), capacity: Int = 10_000) {
        self.base = base
        self.lifetime = lifetime
        self.capacity = capacity
    }

    // MARK: Remembered reads

    func classes(ofMember userID: String) async throws -> [ClassSession] {
        if let cached = fresh(userID)?.classes { return cached }
        let generation = currentGeneration
        let classes = try await base.classes(ofMember: userID)
        remember(userID, since: generation) { $0.classes = classes }
        return classes
    }

    func activeClass(userID: String) async throws -> String? {
        if let cached = fresh(userID)?.active { return cached }
        let generation = currentGeneration
        let active = try await base.activeClass(userID: userID)
        remember(userID, since: generation) { $0.active = .some(active) }
        return active
    }

    private var currentGeneration: Int { state.withLock { $0.generation } }

    private func fresh(_ userID: String) -> Entry? {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard let entry = state.entries[userID] else { return nil }
            guard entry.expires > now else {
                state.entries[userID] = nil
                return nil
            }
            return entry
        }
    }

    private func remember(_ userID: String, since generation: Int, _ update: (inout Entry) -> Void) {
        let expires = ContinuousClock.now + lifetime
        state.withLock { state in
            guard state.generation == generation else { return }
            if state.entries.count >= capacity, state.entries[userID] == nil { state.entries.removeAll(keepingCapacity: true) }
            var entry = state.entries[userID].flatMap { $0.expires > .now ? $0 : nil } ?? Entry(expires: expires)
            update(&entry)
            state.entries[userID] = entry
        }
    }

    /// Forgets everything: classes change rarely, and a change may concern any number of students.
    private func forgetAll() {
        state.withLock { state in
            state.entries.removeAll(keepingCapacity: true)
            state.generation += 1
        }
    }

    /// Runs a write, forgetting everything both before it (a read racing with it stores nothing) and after.
    private func writing<R>(_ write: () async throws -> R) async throws -> R {
        forgetAll()
        defer { forgetAll() }
        return try await write()
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

    // MARK: Other reads, always from the database

    func find(id: String) async throws -> ClassSession? { try await base.find(id: id) }
    func find(joinCode: String) async throws -> ClassSession? { try await base.find(joinCode: joinCode) }
    func list(instructorID: String?) async throws -> [ClassSession] { try await base.list(instructorID: instructorID) }
    func members(classID: String) async throws -> [ClassMember] { try await base.members(classID: classID) }
    func isMember(classID: String, userID: String) async throws -> Bool { try await base.isMember(classID: classID, userID: userID) }
    func memberUsage(classID: String, since day: String) async throws -> [UsageRecord] {
        try await base.memberUsage(classID: classID, since: day)
    }
}
