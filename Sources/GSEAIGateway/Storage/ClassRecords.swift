import Foundation

/// How much of their students' chats instructors of a class may see.
public enum TranscriptVisibility: String, Codable, Sendable, CaseIterable {
    /// Nothing: neither usage nor transcripts.
    case off
    /// Token usage per student, but no transcripts.
    case usage
    /// Usage and the transcripts of the conversations held in the class.
    case full
}

/// The rules a class sets for its students.
public struct ClassPolicy: Codable, Sendable, Hashable {
    /// The models students may use; empty means every model.
    public var allowedModels: [String]
    /// Instructions sent before every conversation of the class, if any.
    public var systemPrompt: String?
    /// Whether students may replace ``systemPrompt`` with their own.
    public var systemPromptLocked: Bool
    /// The most tokens an answer may have, if limited.
    public var maxOutputTokens: Int?
    /// The most tokens (input and output) a student may use per UTC day, if limited.
    public var dailyTokenBudget: Int?
    /// The most requests a student may make per minute, if limited.
    public var requestsPerMinute: Int?
    /// Whether students may attach images.
    public var imagesAllowed: Bool
    /// How much of the students' chats instructors may see.
    public var transcriptVisibility: TranscriptVisibility
    /// The most requests a student has running on the model servers at once (the gateway's default, 2,
    /// when `nil`); more wait in the fair queue.
    public var maxConcurrentRequests: Int?

    /// A policy; the defaults leave students unrestricted, with usage visible to instructors.
    public init(allowedModels: [String] = [], systemPrompt: String? = nil, systemPromptLocked: Bool = false,
                maxOutputTokens: Int? = nil, dailyTokenBudget: Int? = nil, requestsPerMinute: Int? = nil,
                imagesAllowed: Bool = true, transcriptVisibility: TranscriptVisibility = .usage, maxConcurrentRequests: Int? = nil) {
        self.maxConcurrentRequests = maxConcurrentRequests
        self.allowedModels = allowedModels
        self.systemPrompt = systemPrompt
        self.systemPromptLocked = systemPromptLocked
        self.maxOutputTokens = maxOutputTokens
        self.dailyTokenBudget = dailyTokenBudget
        self.requestsPerMinute = requestsPerMinute
        self.imagesAllowed = imagesAllowed
        self.transcriptVisibility = transcriptVisibility
    }

    private enum CodingKeys: String, CodingKey {
        case allowedModels, systemPrompt, systemPromptLocked, maxOutputTokens, dailyTokenBudget, requestsPerMinute
        case imagesAllowed, transcriptVisibility, maxConcurrentRequests
    }

    /// Decodes a policy; a missing field takes its default, so that policies stored before a field existed
    /// still read.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = ClassPolicy()
        self.init(
            allowedModels: try container.decodeIfPresent([String].self, forKey: .allowedModels)
                ?? defaults.allowedModels,
            systemPrompt: try container.decodeIfPresent(String.self, forKey: .systemPrompt),
            systemPromptLocked: try container.decodeIfPresent(Bool.self, forKey: .systemPromptLocked)
                ?? defaults.systemPromptLocked,
            maxOutputTokens: try container.decodeIfPresent(Int.self, forKey: .maxOutputTokens),
            dailyTokenBudget: try container.decodeIfPresent(Int.self, forKey: .dailyTokenBudget),
            requestsPerMinute: try container.decodeIfPresent(Int.self, forKey: .requestsPerMinute),
            imagesAllowed: try container.decodeIfPresent(Bool.self, forKey: .imagesAllowed) ?? defaults.imagesAllowed,
            transcriptVisibility: try container.decodeIfPresent(TranscriptVisibility.self, forKey: .transcriptVisibility)
                ?? defaults.transcriptVisibility,
            // A value that is not a positive count (written by hand in the database) counts as none.
            maxConcurrentRequests: (try? container.decodeIfPresent(Int.self, forKey: .maxConcurrentRequests)).flatMap { $0.flatMap { $0 > 0 ? $0 : nil } }
        )
    }
}

/// A class an instructor runs: students join it with its code and chat under its policy.
///
/// Called a class, not a session, in code, to keep it apart from ``LoginSession``.
public struct ClassSession: Codable, Sendable, Hashable {
    /// A random identifier (UUID text, lowercased).
    public var id: String
    /// The instructor who runs it.
    public var instructorID: String
    /// The name students see.
    public var name: String
    /// The code students join with, unique, compared case-insensitively (stored uppercased).
    public var joinCode: String
    /// Whether the instructor has it open; see ``isActive(at:)``.
    public var isOpen: Bool
    /// When it starts, if it has a start.
    public var startsAt: Date?
    /// When it ends, if it has an end.
    public var endsAt: Date?
    /// The rules for its students.
    public var policy: ClassPolicy
    /// When it was created.
    public var createdAt: Date

    /// A class, open, without dates and with the default policy unless told otherwise.
    public init(id: String = UUID().uuidString.lowercased(), instructorID: String, name: String, joinCode: String,
                isOpen: Bool = true, startsAt: Date? = nil, endsAt: Date? = nil, policy: ClassPolicy = ClassPolicy(),
                createdAt: Date = Date()) {
        self.id = id
        self.instructorID = instructorID
        self.name = name
        self.joinCode = joinCode
        self.isOpen = isOpen
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.policy = policy
        self.createdAt = createdAt
    }

    /// Whether the class is in progress at `date`: open, not before its start and before its end.
    public func isActive(at date: Date) -> Bool {
        guard self.isOpen else { return false }
        if let startsAt, date < startsAt { return false }
        if let endsAt, date >= endsAt { return false }
        return true
    }
}

/// A student's membership of a class.
public struct ClassMember: Codable, Sendable, Hashable {
    /// The class.
    public var classID: String
    /// The member.
    public var userID: String
    /// When they joined.
    public var joinedAt: Date

    public init(classID: String, userID: String, joinedAt: Date) {
        self.classID = classID
        self.userID = userID
        self.joinedAt = joinedAt
    }
}

/// One line of the audit log: who did what to what.
public struct AuditEntry: Codable, Sendable, Hashable {
    /// A random identifier (UUID text, lowercased).
    public var id: String
    /// The user who acted; kept as it was when that user is deleted.
    public var actorID: String
    /// What they did, such as `class.create` or `user.set-role`.
    public var action: String
    /// What they did it to, such as a class or user id.
    public var target: String
    /// Anything more worth keeping, if any.
    public var detail: String?
    /// When it happened.
    public var at: Date

    public init(id: String = UUID().uuidString.lowercased(), actorID: String, action: String, target: String,
                detail: String? = nil, at: Date = Date()) {
        self.id = id
        self.actorID = actorID
        self.action = action
        self.target = target
        self.detail = detail
        self.at = at
    }
}

/// A link that lets a user set their password once. The link holds a random token; only its SHA-256 is stored.
public struct SetupToken: Sendable, Hashable {
    /// The SHA-256 (lowercase hex) of the token.
    public var tokenHash: String
    /// The user whose password it sets.
    public var userID: String
    /// When it stops working.
    public var expiresAt: Date
    /// When it was used, if it was; a token works once.
    public var usedAt: Date?

    public init(tokenHash: String, userID: String, expiresAt: Date, usedAt: Date? = nil) {
        self.tokenHash = tokenHash
        self.userID = userID
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }
}

/// A member of a class with what their instructor's roster shows of their account, read in one query.
public struct RosterEntry: Sendable, Hashable {
    public var userID: String
    public var username: String
    public var role: Role
    public var disabled: Bool
    /// When they last signed in, or `nil` if they never have.
    public var lastLoginAt: Date?
    /// Whether they hold an API key that is not revoked.
    public var hasLiveKey: Bool
    /// When they joined the class.
    public var joinedAt: Date
    /// The latest use of any of their login sessions or API keys, if any.
    public var lastSeenAt: Date?
    /// Whether they are also in a class of another instructor than this class's: then only administrators
    /// manage their account.
    public var inAnotherInstructorsClass: Bool

    /// Whether anyone uses the account: a sign-in, or an API key that could be in use.
    public var isInUse: Bool { lastLoginAt != nil || hasLiveKey }

    public init(userID: String, username: String, role: Role, disabled: Bool, lastLoginAt: Date?, hasLiveKey: Bool = false,
                joinedAt: Date, lastSeenAt: Date?, inAnotherInstructorsClass: Bool) {
        self.hasLiveKey = hasLiveKey
        self.userID = userID
        self.username = username
        self.role = role
        self.disabled = disabled
        self.lastLoginAt = lastLoginAt
        self.joinedAt = joinedAt
        self.lastSeenAt = lastSeenAt
        self.inAnotherInstructorsClass = inAnotherInstructorsClass
    }
}

/// An invitation to a class, waiting for its student to accept or decline it.
public struct ClassInvitation: Sendable, Hashable {
    public var classID: String
    public var userID: String
    /// The invited student's username.
    public var username: String
    public var invitedAt: Date

    public init(classID: String, userID: String, username: String, invitedAt: Date) {
        self.classID = classID
        self.userID = userID
        self.username = username
        self.invitedAt = invitedAt
    }
}
