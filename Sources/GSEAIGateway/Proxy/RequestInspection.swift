import GSEAI

/// What the gateway needs to know of a JSON request before it goes upstream, and the checks that must
/// pass first: images are data URLs of real images within the byte and pixel limits, on every surface.
struct RequestInspection: Sendable {
    /// The requested model, for usage accounting.
    var model: String?
    /// Whether the caller asked for a stream.
    var stream: Bool
    /// The stored response this request continues (`/api/v1/chat`, `/v1/responses`).
    var previousResponseID: String?
    /// How many images the request carries.
    var imageCount = 0

    init(_ json: JSONValue, images: ImageInspector) throws {
        model = json["model"]?.stringValue
        stream = json["stream"]?.boolValue ?? false
        previousResponseID = json["previous_response_id"]?.stringValue
        for reference in RequestImages.find(in: json) {
            switch reference {
            case .link:
                throw GatewayError.badRequest("images must be sent inline as data URLs (data:image/…;base64,…), not links")
            case .dataURL(let url):
                try images.check(dataURL: url)
                imageCount += 1
            }
        }
    }
}
