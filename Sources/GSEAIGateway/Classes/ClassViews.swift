import Foundation
import GSEAI
import Hummingbird

/// A class's policy as the JSON API shows and takes it.
struct PolicyView: Codable, Sendable {
    var allowed_models: [String]
    var system_prompt: String?
    var system_prompt_locked: Bool
    var max_output_tokens: Int?
    var daily_token_budget: Int?
    var requests_per_minute: Int?
    var images_allowed: Bool
    var transcript_visibility: TranscriptVisibility
    var max_concurrent_requests: Int?

    init(_ policy: ClassPolicy) {
        max_concurrent_requests = policy.maxConcurrentRequests
        allowed_models = policy.allowedModels
        system_prompt = policy.systemPrompt
        system_prompt_locked = policy.systemPromptLocked
        max_output_tokens = policy.maxOutputTokens
        daily_token_budget = policy.dailyTokenBudget
        requests_per_minute = policy.requestsPerMinute
        images_allowed = policy.imagesAllowed
        transcript_visibility = policy.transcriptVisibility
    }
}

/// A class as its instructor (or an administrator) sees it.
struct ClassView: ResponseEncodable {
    var id: String
    var name: String
    var instructor_id: String
    var join_code: String
    var is_open: Bool
    var starts_at: Date?
    var ends_at: Date?
    /// Open, started and not ended: whether its students can work through it now.
    var is_active: Bool
    var policy: PolicyView
    var created_at: Date

    init(_ classSession: ClassSession, now: Date) {
        id = classSession.id
        name = classSession.name
        instructor_id = classSession.instructorID
        join_code = classSession.joinCode
        is_open = classSession.isOpen
        starts_at = classSession.startsAt
        ends_at = classSession.endsAt
        is_active = classSession.isActive(at: now)
        policy = PolicyView(classSession.policy)
        created_at = classSession.createdAt
    }
}

/// A class as its student sees it: no join code, but the policy, so that they know its rules (and how much
/// of their chats their instructor sees).
struct StudentClassView: ResponseEncodable {
    var id: String
    var name: String
    var starts_at: Date?
    var ends_at: Date?
    var is_active: Bool
    /// Whether this is the class whose policy applies to the student now.
    var applies: Bool
    var policy: PolicyView

    init(_ classSession: ClassSession, now: Date, applies: Bool) {
        id = classSession.id
        name = classSession.name
        starts_at = classSession.startsAt
        ends_at = classSession.endsAt
        is_active = classSession.isActive(at: now)
        self.applies = applies
        policy = PolicyView(classSession.policy)
    }
}

/// A member of a class with their usage (when the class shares usage).
struct MemberView: ResponseEncodable {
    var user_id: String
    var username: String
    var disabled: Bool
    var joined_at: Date
    /// Requests and tokens since `since`, or `nil` when the class's transcript visibility is `off`.
    var requests: Int?
    var input_tokens: Int?
    var output_tokens: Int?
    var tokens: Int?
    /// The last day (UTC) with usage.
    var last_active_day: String?
    /// When the student last used the gateway (a login session seen, or a key used); absent when their
    /// account's activity is not the caller's to see (``MemberAccess/sessionsAndKeys``).
    var last_seen_at: Date?
    /// Whether anyone uses the account: signed in, or holds an API key (a roster import's new accounts do
    /// not, until the student uses their set-up link).
    var has_signed_in: Bool
    /// What the caller may do to the member's account.
    var account: MemberAccess
}

/// A student invited to a class who has not answered yet.
struct InvitedView: Codable, Sendable {
    var user_id: String
    var username: String
    var invited_at: Date
}

/// A student's usage of one day.
struct DayUsageView: Codable, Sendable {
    var day: String
    var requests: Int
    var input_tokens: Int
    var output_tokens: Int

    /// Usage rows summed per day (every model, every user among them), newest day first.
    static func days(_ rows: some Sequence<UsageRecord>) -> [DayUsageView] {
        var days: [String: DayUsageView] = [:]
        for row in rows {
            var day = days[row.day] ?? DayUsageView(day: row.day, requests: 0, input_tokens: 0, output_tokens: 0)
            day.requests = day.requests.addingSaturated(row.requests)
            day.input_tokens = day.input_tokens.addingSaturated(row.inputTokens)
            day.output_tokens = day.output_tokens.addingSaturated(row.outputTokens)
            days[row.day] = day
        }
        return days.values.sorted { $0.day > $1.day }
    }
}

struct MembersView: ResponseEncodable {
    var since: String
    var data: [MemberView]
    /// Existing accounts invited by a roster import, until they accept or decline.
    var invited: [InvitedView]
    /// The class's usage per day, all members together, for its chart; absent when the class does not share usage.
    var daily: [DayUsageView]?
}
struct MemberUsageView: ResponseEncodable { var user_id: String; var username: String; var since: String; var data: [DayUsageView] }
struct MyClassesView: ResponseEncodable { var data: [StudentClassView]; var applied_class_id: String? }
struct SignUpView: ResponseEncodable {
    var user: AccountController.UserView
    var csrf_token: String
    var `class`: StudentClassView
}
