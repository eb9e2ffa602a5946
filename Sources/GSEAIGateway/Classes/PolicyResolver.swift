import Foundation

/// Finds the class whose policy applies to a user, reading the class fresh each time: closing a class or
/// passing its end date takes effect on the very next request.
public struct PolicyResolver: Sendable {
    let classes: any ClassRepository
    let clock: @Sendable () -> Date

    public init(classes: any ClassRepository, clock: @escaping @Sendable () -> Date = Date.init) {
        self.classes = classes
        self.clock = clock
    }

    /// The class whose policy applies to `user`, or `nil` when none does (staff, and students in no class,
    /// are unrestricted). A student's class is the one they chose if they still belong to it, else their
    /// only (or newest) one; `preferredClassID` (a conversation's class) comes first when they belong to it.
    ///
    /// - Throws: 403 when that class is not in progress (closed, not started, or ended).
    public func applicableClass(for user: User, preferredClassID: String? = nil) async throws -> ClassSession? {
        guard let chosen = try await chosenClass(for: user, preferredClassID: preferredClassID) else { return nil }
        guard chosen.isActive(at: clock()) else {
            throw GatewayError(.forbidden, type: .permission, "your class '\(chosen.name)' is closed")
        }
        return chosen
    }

    /// The class whose policy applies to `user`, whether it is in progress or not.
    public func chosenClass(for user: User, preferredClassID: String? = nil) async throws -> ClassSession? {
        guard user.role == .student else { return nil }
        let memberships = try await classes.classes(ofMember: user.id)
        // In no class: no active class to ask for.
        guard !memberships.isEmpty else { return nil }
        if let preferredClassID, let preferred = memberships.first(where: { $0.id == preferredClassID }) { return preferred }
        if let active = try await classes.activeClass(userID: user.id), let selected = memberships.first(where: { $0.id == active }) {
            return selected
        }
        return memberships.first
    }
}
