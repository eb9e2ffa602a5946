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
