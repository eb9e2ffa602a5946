/// The images a request body carries, wherever the four APIs put them: `data_url` (LM Studio), `image_url`
/// or `image_url.url` (OpenAI chat and Responses), and `source: {type: base64, media_type, data}` or
/// `source: {type: url}` (Anthropic).
public enum RequestImages {
    /// One image in a request.
    public enum Reference: Sendable, Hashable {
        /// An inline image, as a `data:` URL (Anthropic's base64 blocks are turned into one).
        case dataURL(String)
        /// An image given by a link (`http…`), which the gateway does not fetch.
        case link(String)
    }

    /// Every image in `json`, in document order for arrays (object members in no particular order).
    public static func find(in json: JSONValue) -> [Reference] {
        var found: [Reference] = []
        walk(json, key: nil, into: &found)
        return found
    }

    private static func walk(_ value: JSONValue, key: String?, into found: inout [Reference]) {
        switch value {
        case .object(let members):
            if members["type"]?.stringValue == "base64", let data = members["data"]?.stringValue,
                let mediaType = members["media_type"]?.stringValue
            {
                found.append(.dataURL("data:\(mediaType);base64,\(data)"))
                return
            }
            if key == "image_url", let url = members["url"]?.stringValue {
                found.append(reference(url))
                return
            }
            if key == "source", members["type"]?.stringValue == "url" {
                found.append(.link(members["url"]?.stringValue ?? ""))
                return
            }
            for (name, member) in members { walk(member, key: name, into: &found) }
        case .array(let items):
            for item in items { walk(item, key: key, into: &found) }
        case .string(let text):
            switch key {
            case "data_url": found.append(.dataURL(text))
            case "image_url": found.append(reference(text))
            default: break
            }
        default:
            break
        }
    }

    private static func reference(_ url: String) -> Reference {
        url.utf8.starts(with: "data:".utf8) ? .dataURL(url) : .link(url)
    }
}
