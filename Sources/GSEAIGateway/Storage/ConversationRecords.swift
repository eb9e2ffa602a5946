import Foundation
import GSEAI

/// A chat of one user on the chat page: a title, a model and the messages stored with it.
public struct Conversation: Codable, Sendable, Hashable {
    /// A random identifier (UUID text, lowercased).
    public var id: String
    /// The user it belongs to.
    public var userID: String
    /// The title shown in the list of conversations.
    public var title: String
    /// The model the next answer comes from.
    public var model: String
    /// The instructions sent before the messages, if any.
    public var systemPrompt: String?
    /// The upstream response (`resp_…`) the next turn continues from, if the last answer left one.
    public var lastResponseID: String?
    /// The class it was started in, whose policy applies to it and whose instructors may see it; `nil` for a
    /// personal conversation. Set when it is created; ``ConversationRepository/update(_:)`` leaves it.
    public var classID: String?
    /// When it was created.
    public var createdAt: Date
    /// When it last changed; the list of conversations is newest first by this.
    public var updatedAt: Date

    /// A conversation; `updatedAt` defaults to `createdAt`.
    public init(id: String = UUID().uuidString.lowercased(), userID: String, title: String, model: String,
                systemPrompt: String? = nil, lastResponseID: String? = nil, classID: String? = nil,
                createdAt: Date = Date(), updatedAt: Date? = nil) {
        self.id = id
        self.userID = userID
        self.title = title
        self.model = model
        self.systemPrompt = systemPrompt
        self.lastResponseID = lastResponseID
        self.classID = classID
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// Where a stored message stands.
public enum MessageStatus: String, Codable, Sendable {
    /// Written in full: a user's message, or an answer that ended normally.
    case complete
    /// An answer still arriving from the upstream.
    case streaming
    /// An answer the user stopped; the text so far is kept.
    case stopped
    /// An answer cut off because the gateway stopped while it streamed.
    case interrupted
    /// An answer that failed; ``StoredMessage/error`` says why.
    case failed
}

/// One message of a ``Conversation``, as the chat page shows it again later.
public struct StoredMessage: Codable, Sendable, Hashable {
    /// A random identifier (UUID text, lowercased).
    public var id: String
    /// The conversation it belongs to.
    public var conversationID: String
    /// Its place in the conversation: 1, 2, 3 …, assigned by ``MessageRepository/append(_:)``.
    public var sequence: Int
    /// `user` or `assistant`.
    public var role: String
    /// The visible text.
    public var text: String
    /// The attached images, as ``StoredImage/hash`` values, in order.
    public var imageHashes: [String]
    /// The model's reasoning, when it shows any.
    public var reasoning: String?
    /// The answer's output items as the upstream sent them (`message`, `reasoning`, `tool_call`,
    /// `invalid_tool_call`), kept whole so that nothing the upstream adds is lost.
    public var outputItems: JSONValue?
    /// The answer's statistics (tokens, speed), as the upstream sent them.
    public var stats: JSONValue?
    /// The upstream response (`resp_…`) that produced the answer.
    public var responseID: String?
    /// Where it stands.
    public var status: MessageStatus
    /// Why the answer failed, for ``MessageStatus/failed``.
    public var error: String?
    /// The model that answered.
    public var model: String?
    /// When it was created.
    public var createdAt: Date
    /// When it last changed.
    public var updatedAt: Date
    /// The gateway replica generating it, while it is `streaming` (several replicas on one database).
    public var replica: String? = nil

    /// A message; `sequence` is assigned when it is appended, and `updatedAt` defaults to `createdAt`.
    public init(id: String = UUID().uuidString.lowercased(), conversationID: String, sequence: Int = 0,
                role: String, text: String, imageHashes: [String] = [], reasoning: String? = nil,
                outputItems: JSONValue? = nil, stats: JSONValue? = nil, responseID: String? = nil,
                status: MessageStatus = .complete, error: String? = nil, model: String? = nil,
                createdAt: Date = Date(), updatedAt: Date? = nil) {
        self.id = id
        self.conversationID = conversationID
        self.sequence = sequence
        self.role = role
        self.text = text
        self.imageHashes = imageHashes
        self.reasoning = reasoning
        self.outputItems = outputItems
        self.stats = stats
        self.responseID = responseID
        self.status = status
        self.error = error
        self.model = model
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// An image attached to a message, stored once however many people upload it.
public struct StoredImage: Sendable, Hashable {
    /// The SHA-256 (lowercase hex) of ``data``.
    public var hash: String
    /// The media type, such as `image/png`.
    public var mimeType: String
    /// The bytes.
    public var data: Data
    /// The width in pixels.
    public var width: Int
    /// The height in pixels.
    public var height: Int
    /// When it was first stored.
    public var createdAt: Date

    /// An image; `hash` must be the SHA-256 of `data`.
    public init(hash: String, mimeType: String, data: Data, width: Int, height: Int, createdAt: Date = Date()) {
        self.hash = hash
        self.mimeType = mimeType
        self.data = data
        self.width = width
        self.height = height
        self.createdAt = createdAt
    }
}
