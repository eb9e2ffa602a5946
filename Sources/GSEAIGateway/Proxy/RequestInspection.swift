import GSEAI

/// What the gateway needs to know of a JSON request before it goes upstream, and the checks that must
/// pass first: images are well-formed data URLs of real images within the size limit.
struct RequestInspection: Sendable {
    /// The requested model, for usage accounting.
    var model: String?
    /// Whether the caller asked for a stream.
    var stream: Bool
    /// The stored response this request continues (`/api/v1/chat`, `/v1/responses`).
    var previousResponseID: String?
    /// How many images the request carries.
    var imageCount = 0

    init(_ json: JSONValue, maxImageBytes: Int) throws {
        model = json["model"]?.stringValue
        stream = json["stream"]?.boolValue ?? false
        previousResponseID = json["previous_response_id"]?.stringValue
        try walk(json, key: nil, maxImageBytes: maxImageBytes)
    }

    /// Finds images wherever the four APIs put them: `data_url` (LM Studio), `image_url` / `image_url.url`
    /// (OpenAI chat and Responses), and `source: {type: base64, media_type, data}` (Anthropic).
    private mutating func walk(_ value: JSONValue, key: String?, maxImageBytes: Int) throws {
        switch value {
        case .object(let members):
            if members["type"]?.stringValue == "base64", let data = members["data"]?.stringValue,
                let mediaType = members["media_type"]?.stringValue
            {
                try check("data:\(mediaType);base64,\(data)", maxImageBytes: maxImageBytes)
                return
            }
            if key == "image_url", let url = members["url"]?.stringValue {
                try checkImageURL(url, maxImageBytes: maxImageBytes)
                return
            }
            if members["type"]?.stringValue == "url", key == "source" {
                throw GatewayError.badRequest("images must be sent inline (base64), not as URLs")
            }
            for (name, member) in members { try walk(member, key: name, maxImageBytes: maxImageBytes) }
        case .array(let items):
            for item in items { try walk(item, key: key, maxImageBytes: maxImageBytes) }
        case .string(let text):
            switch key {
            case "data_url": try check(text, maxImageBytes: maxImageBytes)
            case "image_url": try checkImageURL(text, maxImageBytes: maxImageBytes)
            default: break
            }
        default:
            break
        }
    }

    private mutating func checkImageURL(_ url: String, maxImageBytes: Int) throws {
        guard url.hasPrefix("data:") else {
            throw GatewayError.badRequest("images must be sent as data URLs (data:image/…;base64,…), not links")
        }
        try check(url, maxImageBytes: maxImageBytes)
    }

    private mutating func check(_ dataURL: String, maxImageBytes: Int) throws {
        do {
            _ = try DataURL(parsing: dataURL, maxBytes: maxImageBytes)
            imageCount += 1
        } catch .tooLarge(let bytes, let limit) {
            throw GatewayError(.contentTooLarge, type: .requestTooLarge, "an image is \(bytes) bytes; the limit is \(limit)")
        } catch {
            throw GatewayError.badRequest("invalid image: \(error)")
        }
    }
}
