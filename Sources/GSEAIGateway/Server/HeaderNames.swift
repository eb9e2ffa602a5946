import HTTPTypes

/// The gateway's names of fields that HTTPTypes does not name, made once rather than at every use (a
/// name is checked when it is made).
extension HTTPField.Name {
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let xAccelBuffering = HTTPField.Name("X-Accel-Buffering")!
    static let xRequestID = HTTPField.Name("X-Request-Id")!
    static let xAPIKey = HTTPField.Name("x-api-key")!
    static let xCSRFToken = HTTPField.Name("X-CSRF-Token")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let anthropicVersion = HTTPField.Name("anthropic-version")!
    static let anthropicBeta = HTTPField.Name("anthropic-beta")!
}

extension HTTPFields {
    /// The value of the field `name`, as `self[name]` gives it (several fields of that name joined with commas),
    /// without the cost of that getter when there is one field, which is nearly always: the getter joins a lazy
    /// sequence in generic code that is not specialized, a few thousand instructions for each field read on every
    /// request (bench/README.md, "Header values and JSON objects").
    func value(_ name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            // Two or more: joined as the getter joins them (commas, or semicolons for cookies).
            if found != nil { return self[name] }
            found = field.value
        }
        return found
    }
}

/// The names of fields that most requests carry, in the spellings clients send them in (each kept as it is spelled):
/// a request's name spelled so is taken from here rather than made, which checks its bytes and makes its lowercased
/// text (swift-http-types' `HTTPField.Name(_:)`, about 400 instructions a name; bench/README.md, "Stack room for the log
/// line, promises and conversions left out"). Any other name is made as before; a name found here is the one its spelling
/// makes, the same raw and canonical names (`GatewayHTTP1CodecTests.aKnownFieldNameIsTheNameItsSpellingMakes`).
enum KnownFieldNames {
    /// The spellings looked for: as most clients send them (curl, wrk, `requests`, browsers), and lowercased (HTTP/2
    /// clients, `httpx`, Node.js).
    static let spellings = [
        "Host", "Content-Type", "Content-Length", "Authorization", "Accept", "User-Agent", "Accept-Encoding", "Connection",
        "Cookie", "Origin", "Referer", "Accept-Language", "Cache-Control", "X-Api-Key", "X-CSRF-Token",
        "Anthropic-Version", "Transfer-Encoding", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-Dest",
    ].flatMap { [$0, $0.lowercased()] }

    /// The names by their spelling's length in bytes: a usual name is found after one or two comparisons of texts of
    /// its length (a short text's bytes compared at once, without a hash).
    private static let byLength: [[HTTPField.Name]] = {
        var table = [[HTTPField.Name]](repeating: [], count: (spellings.map(\.utf8.count).max() ?? 0) + 1)
        for spelling in spellings where !table[spelling.utf8.count].contains(where: { $0.rawName == spelling }) {
            table[spelling.utf8.count].append(HTTPField.Name(spelling)!)
        }
        return table
    }()

    /// The field name spelled `text`: a known one, else made (`nil` when `text` is not a token).
    static func name(_ text: String) -> HTTPField.Name? {
        known(text) ?? HTTPField.Name(text)
    }

    /// The known name spelled exactly `text`, if any.
    static func known(_ text: String) -> HTTPField.Name? {
        let length = text.utf8.count
        guard length < byLength.count else { return nil }
        for known in byLength[length] where known.rawName == text { return known }
        return nil
    }
}
