import Foundation

/// What a user may do.
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    /// Chats, with their own keys and conversations.
    case student
    /// Also manages models and (later) class sessions.
    case instructor
    /// Everything.
    case admin

    private var rank: Int {
        switch self {
        case .student: 0
        case .instructor: 1
        case .admin: 2
        }
    }

    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.rank < rhs.rank }
}

/// A person with an account.
public struct User: Codable, Sendable, Hashable {
    /// A random identifier (UUID text), stable for the account's life.
    public var id: String
    /// The login name, unique, compared case-insensitively (stored lowercased).
    public var username: String
    /// The bcrypt hash of the password; `nil` until one is set.
    public var passwordHash: String?
    /// The role.
    public var role: Role
    /// Whether the account is disabled (no login, no keys, sessions ended).
    public var disabled: Bool
    /// When the account was created.
    public var createdAt: Date
    /// When its owner last signed in (a login or a sign-up), or `nil` if they never have: only an account
    /// nobody has used yet may be given a password by its instructor's set-up link.
    public var lastLoginAt: Date?

    public init(id: String = UUID().uuidString.lowercased(), username: String, passwordHash: String?, role: Role,
                disabled: Bool = false, createdAt: Date = Date(), lastLoginAt: Date? = nil) {
        self.id = id
        self.username = username
        self.passwordHash = passwordHash
        self.role = role
        self.disabled = disabled
        self.createdAt = createdAt
        self.lastLoginAt = lastLoginAt
    }
}

/// A browser login session. The cookie holds a random token; only its SHA-256 is stored.
public struct LoginSession: Codable, Sendable, Hashable {
    /// The SHA-256 (hex) of the cookie token.
    public var id: String
    /// The user it belongs to.
    public var userID: String
    /// The token a page must echo in `X-CSRF-Token` on unsafe requests.
    public var csrfToken: String
    /// When it was created.
    public var createdAt: Date
    /// When it ends.
    public var expiresAt: Date
    /// When it was last used.
    public var lastSeenAt: Date
    /// The browser's User-Agent, to help people recognise their sessions.
    public var userAgent: String?
    /// The address it was created from.
    public var remoteAddress: String?

    public init(id: String, userID: String, csrfToken: String, createdAt: Date, expiresAt: Date, lastSeenAt: Date,
                userAgent: String?, remoteAddress: String?) {
        self.id = id
        self.userID = userID
        self.csrfToken = csrfToken
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.lastSeenAt = lastSeenAt
        self.userAgent = userAgent
        self.remoteAddress = remoteAddress
    }
}

/// A personal API key. The key is shown once; only its prefix and SHA-256 are stored.
public struct APIKey: Codable, Sendable, Hashable {
    /// A random identifier (UUID text).
    public var id: String
    /// The user it belongs to.
    public var userID: String
    /// The public start of the key (`gsk_` and 8 characters), unique, used to find it.
    public var prefix: String
    /// The SHA-256 (hex) of the whole key.
    public var hash: String
    /// The owner's label for it.
    public var label: String
    /// When it was created.
    public var createdAt: Date
    /// When it was last used, if ever.
    public var lastUsedAt: Date?
    /// When it was revoked, if it was.
    public var revokedAt: Date?

    public init(id: String = UUID().uuidString.lowercased(), userID: String, prefix: String, hash: String, label: String,
                createdAt: Date = Date(), lastUsedAt: Date? = nil, revokedAt: Date? = nil) {
        self.id = id
        self.userID = userID
        self.prefix = prefix
        self.hash = hash
        self.label = label
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

/// Token usage of one user for one model on one day (UTC), in one class or outside any.
public struct UsageRecord: Codable, Sendable, Hashable {
    public var userID: String
    /// The class whose policy applied to the requests, or `nil` for requests outside any class (and for
    /// usage recorded before usage was kept per class).
    public var classID: String?
    public var model: String
    /// `YYYY-MM-DD`, UTC.
    public var day: String
    public var requests: Int
    public var inputTokens: Int
    public var outputTokens: Int

    public init(userID: String, classID: String? = nil, model: String, day: String, requests: Int, inputTokens: Int,
                outputTokens: Int) {
        self.userID = userID
        self.classID = classID
        self.model = model
        self.day = day
        self.requests = requests
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }
}
