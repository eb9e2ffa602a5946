import Foundation

/// The conversations of the chat page.
public protocol ConversationRepository: Sendable {
    /// Stores a new conversation.
    func create(_ conversation: Conversation) async throws
    /// The conversation with this id if `userID` owns it; another user's conversation is `nil`.
    func find(id: String, userID: String) async throws -> Conversation?
    /// The conversation with this id, whoever owns it (for instructors and administrators).
    func find(id: String) async throws -> Conversation?
    /// A page of a user's conversations, most recently updated first.
    ///
    /// - Parameters:
    ///   - search: when not `nil` or empty, only conversations whose title or any message's text contains it,
    ///     case-insensitively and literally (`%` and `_` are not wildcards).
    ///   - before: the last conversation of the previous page (its `updatedAt` and `id`); the page starts after it.
    ///   - limit: the most conversations to return.
    func list(userID: String, search: String?, before: PageCursor?, limit: Int) async throws -> [Conversation]
    /// Replaces title, model, system prompt, last response id and `updatedAt` of the conversation with this id
    /// and owner; throws ``StorageError/notFound``.
    func update(_ conversation: Conversation) async throws
    /// Deletes the conversation with its messages if `userID` owns it; returns whether there was one.
    @discardableResult
    func delete(id: String, userID: String) async throws -> Bool
}

/// The messages of conversations.
public protocol MessageRepository: Sendable {
    /// Stores a message as the last of its conversation and returns it with its ``StoredMessage/sequence``;
    /// throws ``StorageError/notFound`` when the conversation does not exist. The conversation's `updatedAt`
    /// is left as it is.
    @discardableResult
    func append(_ message: StoredMessage) async throws -> StoredMessage
    /// The messages of a conversation, by sequence.
    func list(conversationID: String) async throws -> [StoredMessage]
    func find(id: String) async throws -> StoredMessage?
    /// Replaces text, reasoning, output items, stats, response id, status, error and `updatedAt`;
    /// throws ``StorageError/notFound``.
    func update(_ message: StoredMessage) async throws
    func delete(id: String) async throws
    /// Marks every message still ``MessageStatus/streaming`` as ``MessageStatus/interrupted``, for the start of
    /// the gateway: no answer streams before it. Returns how many there were.
    @discardableResult
    func markStreamingAsInterrupted() async throws -> Int
    /// Saves a finished answer: ``update(_:)`` of `message`, and the `lastResponseID` and `updatedAt` of
    /// `conversation`, its conversation, in one transaction. Throws ``StorageError/notFound`` when either is
    /// missing or the message is not in that conversation; nothing is written then.
    func finish(_ message: StoredMessage, conversation: Conversation) async throws
    /// The classes of `userID`'s conversations in which they sent the image `imageHash`: where an instructor
    /// may come across it in a transcript.
    func classIDs(showing imageHash: String, sentBy userID: String) async throws -> [String]
}

/// The images attached to messages.
public protocol ImageRepository: Sendable {
    /// Stores the image, once per hash, and records that `ownerID` uploaded it.
    func store(_ image: StoredImage, ownerID: String) async throws
    func find(hash: String) async throws -> StoredImage?
    /// Whether `userID` has uploaded the image with this hash.
    func isOwned(hash: String, by userID: String) async throws -> Bool
    /// The users who uploaded an image.
    func owners(hash: String) async throws -> [String]
}
