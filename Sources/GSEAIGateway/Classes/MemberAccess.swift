import Foundation

/// How far the caller may reach into one class member's account. An instructor's power over a student
/// follows from the class: it never reaches what the student does elsewhere, and it never lets the
/// instructor become the student (a password they chose would open every conversation the student has).
///
/// | power | administrator | the class's instructor |
/// | --- | --- | --- |
/// | sessions and keys (list, sign out, revoke) and "last seen" | always | when the class shares usage (visibility `usage` or `full`) and the student is in no other instructor's class |
/// | disable / enable | always | when the student is in no other instructor's class |
/// | password set-up link | always | when the account has never been signed in to and is in no other instructor's class |
struct MemberAccess: Sendable, Hashable, Encodable {
    /// Listing and ending the member's login sessions and API keys, and seeing when they were last used.
    var sessionsAndKeys: Bool
    /// Disabling and enabling the account.
    var disable: Bool
    /// Issuing a password set-up link.
    var setupLink: Bool

    /// Why each withheld power is withheld, in words for the instructor (the console shows them).
    private(set) var reasons: [Power: String] = [:]

    enum Power: String, Sendable, Hashable, Encodable, CodingKeyRepresentable {
        case sessionsAndKeys = "sessions_and_keys"
        case disable
        case setupLink = "setup_link"
    }

    /// `memberIsStudent`: an instructor manages only students' accounts; a member who has since become staff
    /// is the administrators' to manage.
    init(callerIsAdmin: Bool, username: String, className: String, visibility: TranscriptVisibility,
         inAnotherInstructorsClass shared: Bool, hasSignedIn: Bool, memberIsStudent: Bool) {
        let sharedReason = "'\(username)' is also in another instructor's class: only an administrator manages their account"
        let staffReason = memberIsStudent ? nil : "only an administrator manages the account of '\(username)'"
        func decide(_ power: Power, _ refusal: String?) -> Bool {
            guard !callerIsAdmin, let refusal = staffReason ?? refusal else { return true }
            reasons[power] = refusal
            return false
        }
        sessionsAndKeys = false
        disable = false
        setupLink = false
        sessionsAndKeys = decide(.sessionsAndKeys, shared ? sharedReason : visibility == .off
            ? "the class '\(className)' does not share its students' activity (its transcript visibility is off)" : nil)
        disable = decide(.disable, shared ? sharedReason : nil)
        setupLink = decide(.setupLink, shared ? sharedReason : hasSignedIn
            ? "'\(username)' has signed in already: only an administrator can reset their password (they can change it themselves)" : nil)
    }

    /// Throws 403 with the reason when `power` is withheld.
    func require(_ power: Power) throws {
        guard let reason = reasons[power] else { return }
        throw GatewayError(.forbidden, type: .permission, reason)
    }

    enum CodingKeys: String, CodingKey {
        case sessionsAndKeys = "sessions_and_keys"
        case disable
        case setupLink = "setup_link"
        case reasons
    }
}
