import Foundation
import SQLKit

/// A place in a list ordered newest first, then by id (descending): a page starts after it. The conversation
/// list and the audit log page this way, so that rows of the same instant are neither skipped nor repeated.
public struct PageCursor: Sendable, Hashable {
    public var at: Date
    /// With an id, the rows of the same instant whose id is smaller come after it too (the cursor of a page's
    /// last row); without, only rows older than `at`.
    public var id: String?

    public init(at: Date, id: String? = nil) {
        self.at = at
        self.id = id
    }

    /// As the API hands it out: `<seconds>_<id>` (a Double's description reads back as the same Double).
    public var text: String {
        "\(at.timeIntervalSince1970)_\(id ?? "")"
    }

    /// A cursor from its ``text``, or `nil` for any other text.
    public init?(text: String) {
        guard let separator = text.firstIndex(of: "_"), let seconds = Double(text[..<separator]), seconds.isFinite else {
            return nil
        }
        let id = String(text[text.index(after: separator)...])
        self.init(at: Date(timeIntervalSince1970: seconds), id: id.isEmpty ? nil : id)
    }
}

extension SQLSelectBuilder {
    /// Keeps the rows that come after `cursor` in the order `column` descending, then `id` descending.
    func after(_ cursor: PageCursor?, column: String) -> Self {
        guard let cursor else { return self }
        let at = cursor.at.unixSeconds
        guard let id = cursor.id else { return self.where(SQLIdentifier(column), .lessThan, SQLBind(at)) }
        return self.where(group: { group in
            group.where(SQLIdentifier(column), .lessThan, SQLBind(at)).orWhere(group: { tie in
                tie.where(SQLIdentifier(column), .equal, SQLBind(at)).where("id", .lessThan, id)
            })
        })
    }
}
