import Foundation
import SQLKit

/// Why a storage operation was refused.
public enum StorageError: Error, Sendable, Equatable {
    /// A unique value (a username, say) is already taken.
    case conflict(String)
    /// The record does not exist.
    case notFound
}

/// Accounts.
public protocol UserRepository: Sendable {
    /// Stores a new user; throws ``StorageError/conflict(_:)`` when the username is taken.
    func create(_ user: User) async throws
    func find(id: String) async throws -> User?
    /// Finds by username, case-insensitively.
    func find(username: String) async throws -> User?
    /// Every user, by username.
    func list() async throws -> [User]
    func count() async throws -> Int
    // Each change below writes only its own column, so that two changes made at once (an administrator's role
    // change during a password change, say) cannot undo each other; and what belongs with it is written in
    // the same transaction. Each throws ``StorageError/notFound`` for an unknown user.

    /// Sets the role and deletes the user's set-up links not used yet (a link made for a student must not
    /// open an account that is staff now); returns the user as stored.
    func setRole(userID: String, to role: Role) async throws -> User
    /// Sets the password hash, ends every login session of the user and deletes their other unused set-up
    /// links. With `spendingSetupToken`, only if that set-up link (its hash) is the user's and still unused,
    /// marking it used at `date`; returns `nil` then without changing anything.
    func setPassword(userID: String, hash: String, spendingSetupToken tokenHash: String?, at date: Date) async throws -> User?
    /// Disables or enables the user; disabling ends their login sessions and revokes their API keys at `date`.
    func setDisabled(userID: String, _ disabled: Bool, at date: Date) async throws -> User
    /// Notes that the user signed in at `date`. At the first sign-in, deletes their set-up links not used
    /// yet: a link made while nobody used the account must not reopen it once it is in use.
    func recordLogin(userID: String, at date: Date) async throws
}

/// Browser login sessions.
public protocol LoginSessionRepository: Sendable {
    func create(_ session: LoginSession) async throws
    /// The session with this id, expired or not.
    func find(id: String) async throws -> LoginSession?
    /// A user's sessions, newest first.
    func list(userID: String) async throws -> [LoginSession]
    func touch(id: String, at date: Date) async throws
    func delete(id: String) async throws
    func deleteExpired(before date: Date) async throws
}

/// API keys.
public protocol APIKeyRepository: Sendable {
    /// Stores a key; throws ``StorageError/conflict(_:)`` when the prefix is taken.
    func create(_ key: APIKey) async throws
    func find(prefix: String) async throws -> APIKey?
    func find(id: String) async throws -> APIKey?
    /// A user's keys, revoked ones too, newest first.
    func list(userID: String) async throws -> [APIKey]
    func revoke(id: String, at date: Date) async throws
    func touch(id: String, at date: Date) async throws
}

/// Which user each upstream response id (`resp_…`) belongs to.
public protocol ResponseOwnershipRepository: Sendable {
    /// Records an id for a user, with the upstream that issued it (which alone can continue it); recording
    /// the same id again is harmless and keeps the first.
    func record(responseID: String, userID: String, upstream: String?, at date: Date) async throws
    /// The owner of an id, or `nil` when the gateway never issued it.
    func owner(of responseID: String) async throws -> String?
    /// The upstream that issued an id, if it was recorded.
    func upstream(of responseID: String) async throws -> String?
}

extension ResponseOwnershipRepository {
    /// Records an id for a user, its upstream unknown.
    public func record(responseID: String, userID: String, at date: Date) async throws {
        try await record(responseID: responseID, userID: userID, upstream: nil, at: date)
    }
}

/// Token usage per user, class, model and day.
public protocol UsageRepository: Sendable {
    /// Adds requests and their tokens to the user's row for the class (`nil`: outside any), model and day.
    func add(userID: String, classID: String?, model: String, day: String, requests: Int, inputTokens: Int,
             outputTokens: Int) async throws
    /// Rows of one user (or everyone, for `nil`), newest day first; only those of one class when `classID`
    /// is given.
    func list(userID: String?, classID: String?) async throws -> [UsageRecord]
    /// The tokens (input and output, every model) a user used in a class on a day (`YYYY-MM-DD`, UTC), for
    /// the class's budget.
    func total(userID: String, classID: String, day: String) async throws -> Int
}

extension UsageRepository {
    /// Adds one request and its tokens to the user's row for the class, model and day.
    public func add(userID: String, classID: String? = nil, model: String, day: String, inputTokens: Int,
                    outputTokens: Int) async throws {
        try await add(userID: userID, classID: classID, model: model, day: day, requests: 1, inputTokens: inputTokens,
                      outputTokens: outputTokens)
    }

    /// Every row of one user (or everyone, for `nil`), newest day first.
    public func list(userID: String?) async throws -> [UsageRecord] {
        try await list(userID: userID, classID: nil)
    }
}

/// Everything the gateway stores, behind protocols so that PostgreSQL can follow SQLite.
public final class Storage: Sendable {
    public let users: any UserRepository
    public let sessions: any LoginSessionRepository
    public let apiKeys: any APIKeyRepository
    public let responses: any ResponseOwnershipRepository
    public let usage: any UsageRepository
    public let conversations: any ConversationRepository
    public let messages: any MessageRepository
    public let images: any ImageRepository
    public let classes: any ClassRepository
    public let audit: any AuditRepository
    public let setupTokens: any SetupTokenRepository
    /// The state every replica must share (rate windows, budget reservations, cache invalidation,
    /// replicas): in this process for SQLite, in the database for PostgreSQL.
    public let shared: SharedState
    /// The database itself, for what goes beyond the repositories (copying a database whole).
    let database: (any SQLDatabase)?
    /// Checks that the database answers (for `/readyz`).
    public let ping: @Sendable () async throws -> Void
    /// Closes the database.
    public let close: @Sendable () async throws -> Void

    public init(users: any UserRepository, sessions: any LoginSessionRepository, apiKeys: any APIKeyRepository,
                responses: any ResponseOwnershipRepository, usage: any UsageRepository,
                conversations: any ConversationRepository, messages: any MessageRepository, images: any ImageRepository,
                classes: any ClassRepository, audit: any AuditRepository, setupTokens: any SetupTokenRepository,
                shared: SharedState? = nil, database: (any SQLDatabase)? = nil,
                ping: @escaping @Sendable () async throws -> Void, close: @escaping @Sendable () async throws -> Void) {
        self.shared = shared ?? .inProcess(usage: usage)
        self.database = database
        self.users = users
        self.sessions = sessions
        self.apiKeys = apiKeys
        self.responses = responses
        self.usage = usage
        self.conversations = conversations
        self.messages = messages
        self.images = images
        self.classes = classes
        self.audit = audit
        self.setupTokens = setupTokens
        self.ping = ping
        self.close = close
    }
}
