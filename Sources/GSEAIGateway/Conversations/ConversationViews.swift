import Foundation
import GSEAI
import Hummingbird

/// A conversation as the JSON API shows it.
struct ConversationView: ResponseEncodable {
    var id: String
    var title: String
    var model: String
    var system_prompt: String?
    /// The class the conversation was started in (its policy applies to it), if any.
    var class_id: String?
    var created_at: Date
    var updated_at: Date

    init(_ conversation: Conversation) {
        id = conversation.id
        title = conversation.title
        model = conversation.model
        system_prompt = conversation.systemPrompt
        class_id = conversation.classID
        created_at = conversation.createdAt
        updated_at = conversation.updatedAt
    }
}

/// A message as the JSON API shows it; images are links that only their owner can open.
struct MessageView: ResponseEncodable {
    struct Image: Codable, Sendable {
        var id: String
        var url: String
    }

    var id: String
    var role: String
    var text: String
    var images: [Image]
    var reasoning: String?
    var output_items: JSONValue?
    var stats: JSONValue?
    var status: MessageStatus
    var error: String?
    var model: String?
    var created_at: Date

    init(_ message: StoredMessage) {
        id = message.id
        role = message.role
        text = message.text
        images = message.imageHashes.map { Image(id: $0, url: "/api/images/\($0)") }
        reasoning = message.reasoning
        output_items = message.outputItems
        stats = message.stats
        status = message.status
        error = message.error
        model = message.model
        created_at = message.createdAt
    }
}

extension JSONValue {
    /// Encodes a value whose encoding cannot fail (plain structs of strings, numbers and dates).
    /// Dates are ISO 8601, as in every other answer of the API.
    init(view: some Encodable) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        self = (try? encoder.encode(view)).flatMap { try? JSONValue(parsing: $0) } ?? .null
    }
}
