import Foundation

/// A request's query string read as HTML forms and `URLSearchParams` write it
/// (`application/x-www-form-urlencoded`): `+` is a space and `%2B` a plus. Hummingbird's `queryParameters`
/// decodes `%` escapes but keeps `+`, so a search for "cell wall" sent by the page would look for
/// "cell+wall".
public struct FormQuery: Sendable {
    private let pairs: [(name: String, value: String)]

    /// Reads a query string (without its `?`); `nil` is an empty one.
    public init(_ query: String?) {
        pairs = (query ?? "").split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (Self.decode(parts[0]), parts.count > 1 ? Self.decode(parts[1]) : "")
        }
    }

    /// The first value given for `name`, decoded.
    public func get(_ name: String) -> String? {
        pairs.first { $0.name == name }?.value
    }

    /// The first value given for `name` as an integer, or `nil` when there is none or it is not one.
    public func int(_ name: String) -> Int? {
        get(name).flatMap { Int($0) }
    }

    private static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        // A malformed escape is kept as written rather than dropping the value.
        return spaced.removingPercentEncoding ?? spaced
    }
}

