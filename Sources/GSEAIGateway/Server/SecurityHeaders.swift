import HTTPTypes

/// The headers that keep the page safe, on every response (``GatewayMiddleware``): a strict
/// Content-Security-Policy (no inline script or style, nothing from elsewhere), no MIME sniffing, no framing, no
/// referrer.
enum SecurityHeaders {
    /// Sets the four headers, replacing whatever a handler set under their names.
    static func apply(to headers: inout HTTPFields) {
        // Fields made once: a field's name and value are checked when it is made, the policy's 200 bytes too.
        for field in fields { headers.set(field) }
    }

    static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        + "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

    static let fields: [HTTPField] = [
        HTTPField(name: .contentSecurityPolicy, value: contentSecurityPolicy),
        HTTPField(name: .xContentTypeOptions, value: "nosniff"),
        HTTPField(name: .xFrameOptions, value: "DENY"),
        HTTPField(name: .referrerPolicy, value: "no-referrer"),
    ]
}
