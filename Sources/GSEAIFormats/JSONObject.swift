/// A typed view over a JSON object that keeps every member, known or not.
///
/// Request and response models conform to this: their typed properties read and write members of
/// ``object``, so a field the client does not know yet is neither dropped when decoding nor when
/// encoding again.
public protocol JSONObject: Codable, Sendable, Hashable {
    /// Every member of the object, including those this type has no property for.
    var object: [String: JSONValue] { get set }
    /// Wraps a JSON object.
    init(object: [String: JSONValue])
}

extension JSONObject {
    /// Decodes a JSON object.
    public init(from decoder: any Decoder) throws {
        self.init(object: try [String: JSONValue](from: decoder))
    }

    /// Encodes every member.
    public func encode(to encoder: any Encoder) throws {
        try object.encode(to: encoder)
    }

    /// Creates an empty object.
    public init() { self.init(object: [:]) }

    /// Reads a member as `T`; `nil` when absent, `null` or of another type.
    public func value<T: Decodable>(_ key: String, as type: T.Type = T.self) -> T? {
        guard let raw = object[key], raw != .null else { return nil }
        return try? raw.decode(as: T.self)
    }

    /// Writes a member; `nil` removes it.
    public mutating func setValue<T: Encodable>(_ value: T?, for key: String) {
        object[key] = value.flatMap { try? JSONValue(encoding: $0) }
    }

    /// Reads or writes a raw member.
    public subscript(key: String) -> JSONValue? {
        get { object[key] }
        set { object[key] = newValue }
    }

    /// The object as a JSON value.
    public var json: JSONValue { .object(object) }
}
