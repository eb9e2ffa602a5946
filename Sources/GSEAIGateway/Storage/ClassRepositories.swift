import Foundation

/// Instructors' classes, their members, and which class applies to each student.
public protocol ClassRepository: Sendable {
    /// Stores a new class with its join code uppercased; throws ``StorageError/conflict(_:)`` when the code is
    /// taken.
    func create(_ classSession: ClassSession) async throws
    func find(id: String) async throws -> ClassSession?
    /// Finds by join code, case-insensitively.
    func find(joinCode: String) async throws -> ClassSession?
    /// The classes of one instructor (or every class, for `nil`), newest first.
    func list(instructorID: String?) async throws -> [ClassSession]
    /// Replaces name, join code (uppercased), open flag, dates and policy; throws ``StorageError/notFound``, or
    /// ``StorageError/conflict(_:)`` when another class has the join code.
    func update(_ classSession: ClassSession) async throws
    /// Deletes the class with its memberships; conversations held in it lose their class, and students whose
    /// active class it was have none. Returns whether there was one.
    @discardableResult
    func delete(id: String) async throws -> Bool

    /// Makes `userID` a member; adding a member again keeps the first `joinedAt`. Returns whether they were
    /// added now.
    @discardableResult
    func addMember(classID: String, userID: String, at date: Date) async throws -> Bool
    /// Ends a membership, and clears the user's active class if it was this one. Returns whether there was one.
    @discardableResult
    func removeMember(classID: String, userID: String) async throws -> Bool
    /// The members of a class, first to join first.
    func members(classID: String) async throws -> [ClassMember]
    /// The members of a class with their account facts, first to join first, in one query.
    func roster(classID: String) async throws -> [RosterEntry]
    /// The classes a user is a member of, newest first.
    func classes(ofMember userID: String) async throws -> [ClassSession]
    func isMember(classID: String, userID: String) async throws -> Bool

    /// Invites an existing account to a class; inviting again keeps the first date, and a member is not
    /// invited. Returns whether the invitation is new.
    @discardableResult
    func invite(classID: String, userID: String, at date: Date) async throws -> Bool
    /// The invitations waiting in one class (`classID`) or for one user (`userID`), oldest first.
    func invitations(classID: String?, userID: String?) async throws -> [ClassInvitation]
    /// Accepts an invitation, in one transaction: it goes, the user becomes a member, and the class becomes
    /// their active one. Returns whether there was an invitation.
    func acceptInvitation(classID: String, userID: String, at date: Date) async throws -> Bool
    /// Deletes an invitation (declined by its student, or withdrawn). Returns whether there was one.
    @discardableResult
    func removeInvitation(classID: String, userID: String) async throws -> Bool

    /// Sets (or, for `nil`, clears) the class whose policy applies to a student who belongs to several; throws
    /// ``StorageError/notFound`` when the user or the class does not exist. Membership is the caller's to check.
    func setActiveClass(userID: String, classID: String?) async throws
    /// The user's active class, if one is set.
    func activeClass(userID: String) async throws -> String?

    /// The usage rows (every model) of the class's current members in the class from `day` (`YYYY-MM-DD`,
    /// UTC) on, newest day first: what a member used outside the class (or in another) is not theirs to see.
    func memberUsage(classID: String, since day: String) async throws -> [UsageRecord]
}

/// The audit log: what administrators and instructors did.
public protocol AuditRepository: Sendable {
    func append(_ entry: AuditEntry) async throws
    /// Up to `limit` entries, newest first (the newest of one instant by id, descending); with `before`, only
    /// the entries that come after it in that order.
    func list(limit: Int, before: PageCursor?) async throws -> [AuditEntry]
}

extension PageCursor {
    /// The cursor just after `entry`.
    public init(after entry: AuditEntry) {
        self.init(at: entry.at, id: entry.id)
    }
}

extension AuditRepository {
    /// Writes that `actor` did `action` to `target` (a user, class or conversation id), now.
    func record(_ actor: User, _ action: String, _ target: String, detail: String? = nil) async throws {
        try await append(AuditEntry(actorID: actor.id, action: action, target: target, detail: detail, at: Date()))
    }
}

/// Password set-up links.
public protocol SetupTokenRepository: Sendable {
    /// Stores a token; throws ``StorageError/conflict(_:)`` when its hash is taken.
    func create(_ token: SetupToken) async throws
    /// The token with this hash, used or expired or not.
    func find(tokenHash: String) async throws -> SetupToken?
    // A token is spent, and unused ones deleted, with the user's password and role:
    // ``UserRepository/setPassword(userID:hash:spendingSetupToken:at:)`` and ``UserRepository/setRole(userID:to:)``.
}
