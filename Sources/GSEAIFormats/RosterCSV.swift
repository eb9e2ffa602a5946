import Foundation

/// A class roster as instructors export it from a spreadsheet: a username per line in the first column.
/// A `username` header line is optional; other columns are ignored; blank lines are skipped; a field in
/// double quotes loses them; a leading byte-order mark is dropped.
public enum RosterCSV {
    /// A roster that cannot be taken whole.
    public enum Failure: Error, Sendable, Hashable, CustomStringConvertible {
        /// More lines than `limit`.
        case tooManyLines(count: Int, limit: Int)

        public var description: String {
            switch self {
            case .tooManyLines(let count, let limit): "a roster has at most \(limit) students; this one has \(count)"
            }
        }
    }

    /// The roster's usernames (lowercased) with their line numbers, from 1.
    public static func usernames(_ text: String, limit: Int) throws(Failure) -> [(line: Int, username: String)] {
        var lines: [(line: Int, username: String)] = []
        let all = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (index, raw) in all.enumerated() {
            var field = String(raw.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            field = field.trimmingCharacters(in: .whitespacesAndNewlines.union(CharacterSet(charactersIn: "\u{FEFF}")))
            if field.count >= 2, field.hasPrefix("\""), field.hasSuffix("\"") { field = String(field.dropFirst().dropLast()) }
            guard !field.isEmpty else { continue }
            if lines.isEmpty, field.lowercased() == "username" { continue }
            lines.append((index + 1, field.lowercased()))
        }
        guard lines.count <= limit else { throw .tooManyLines(count: lines.count, limit: limit) }
        return lines
    }
}
