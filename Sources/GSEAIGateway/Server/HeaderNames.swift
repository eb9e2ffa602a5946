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
