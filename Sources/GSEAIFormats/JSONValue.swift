import Foundation

/// Any JSON value.
///
/// The client keeps every response and request as JSON so that fields a newer server adds survive a
/// round trip unchanged; the typed models are views over these values.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue: Codable {
    /// Decodes any JSON value.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Encodes the value; whole numbers are written without a fraction.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 9.0e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue {
    /// The string, if this is a string.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The number, if this is a number.
    public var doubleValue: Double? {
        if case .number(let value) = self { return value }
        return nil
    }

    /// The number as an integer, if this is a whole number.
    public var intValue: Int? {
        if case .number(let value) = self, value.rounded() == value, abs(value) < 9.0e15 { return Int(value) }
        return nil
    }

    /// The boolean, if this is a boolean.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The elements, if this is an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The members, if this is an object.
    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The member named `key`, if this is an object that has it.
    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }

    /// Parses JSON text.
    public init(parsing bytes: some Sequence<UInt8>) throws {
        let parsed = try bytes.withContiguousStorageIfAvailable { try JSONParser.parse($0) }
        self = try parsed ?? Array(bytes).withUnsafeBufferPointer { try JSONParser.parse($0) }
    }

    /// Parses JSON text, but of an object keeps only the members named in `keeping`: the text must be as valid
    /// as for ``init(parsing:)`` (what it refuses, this refuses), the other members are checked without being
    /// made. For a whole answer of which a few members are read (usage, ids), not its content. A value that is
    /// not an object is parsed whole.
    public init(parsing bytes: some Sequence<UInt8>, keeping names: MemberNames) throws {
        let names = names.utf8
        let parsed = try bytes.withContiguousStorageIfAvailable { try JSONParser.parse($0, keeping: names) }
        self = try parsed ?? Array(bytes).withUnsafeBufferPointer { try JSONParser.parse($0, keeping: names) }
    }

    /// The names of the members ``init(parsing:keeping:)`` keeps, made once.
    public struct MemberNames: Sendable {
        let utf8: [[UInt8]]

        public init(_ names: [String]) {
            self.utf8 = names.map { Array($0.utf8) }
        }
    }

    /// The value as compact JSON text (keys sorted).
    public var jsonData: Data { Data(jsonBytes) }

    /// The value as compact JSON text (keys sorted).
    public var jsonString: String { String(decoding: jsonBytes, as: UTF8.self) }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

/// Shared coders: sorted keys make request bodies reproducible, which the tests rely on.
package enum JSONCoding {
    /// Decodes JSON bytes; JSON objects and values take the fast parser instead of `JSONDecoder`.
    package static func decode<T: Decodable>(_ type: T.Type, from bytes: some Sequence<UInt8>) throws -> T {
        if T.self == JSONValue.self { return try JSONValue(parsing: bytes) as! T }
        if let objectType = T.self as? any JSONObject.Type {
            guard case .object(let members) = try JSONValue(parsing: bytes) else {
                throw DecodingError.typeMismatch(T.self, .init(codingPath: [], debugDescription: "expected a JSON object"))
            }
            return objectType.init(object: members) as! T
        }
        return try decoder.decode(T.self, from: Data(bytes))
    }

    package static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
    package static let decoder = JSONDecoder()
}

extension JSONValue {
    /// Converts any `Encodable` value to JSON.
    public init(encoding value: some Encodable) throws {
        switch value {
        case let value as JSONValue: self = value
        case let value as String: self = .string(value)
        case let value as Bool: self = .bool(value)
        case let value as Int: self = .number(Double(value))
        case let value as Double: self = .number(value)
        default:
            self = try JSONCoding.decoder.decode(JSONValue.self, from: JSONCoding.encoder.encode(value))
        }
    }

    /// Converts this JSON to a `Decodable` type.
    public func decode<T: Decodable>(as type: T.Type = T.self) throws -> T {
        if let objectType = T.self as? any JSONObject.Type, case .object(let members) = self {
            return objectType.init(object: members) as! T
        }
        switch type {
        case is JSONValue.Type: return self as! T
        case is String.Type: if let value = stringValue { return value as! T }
        case is Bool.Type: if let value = boolValue { return value as! T }
        case is Int.Type: if let value = intValue { return value as! T }
        case is Double.Type: if let value = doubleValue { return value as! T }
        default: break
        }
        return try JSONCoding.decoder.decode(T.self, from: jsonData)
    }
}
