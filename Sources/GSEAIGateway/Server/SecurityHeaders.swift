import HTTPTypes

/// The headers that keep the page safe, on every final answer of the gateway's server: a strict
/// Content-Security-Policy (no inline script or style, nothing from elsewhere), no MIME sniffing, no framing, no
/// referrer. Written by the connection's codec (``GatewayHTTP1Codec/FixedFields``) in place of whatever a handler set
/// under their names, so also on the answers no middleware makes (a request refused before any handler runs).
enum SecurityHeaders {
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
