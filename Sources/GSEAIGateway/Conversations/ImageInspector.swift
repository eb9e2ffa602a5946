import Foundation
import GSEAI

/// The image limits as the gateway answers them: 413 for an image too large (in bytes or pixels), 400 for
/// one that is not a real PNG, JPEG, GIF or WebP. The same checks apply to an upload and to an image inside
/// a request on any API surface.
struct ImageInspector: Sendable {
    var limits: ImageLimits

    init(_ limits: ImageLimits) {
        self.limits = limits
    }

    var maxBytes: Int { limits.maxBytes }

    /// Checks uploaded image bytes.
    func check(_ data: Data) throws -> ImageHeader {
        do {
            return try limits.check(imageBytes: data)
        } catch {
            throw Self.gatewayError(error, prefix: "")
        }
    }

    /// Checks an image sent inside a request as a `data:` URL.
    func check(dataURL: String) throws {
        do {
            try limits.check(dataURL: dataURL)
        } catch {
            throw Self.gatewayError(error, prefix: "invalid image: ")
        }
    }

    static func gatewayError(_ violation: ImageLimits.Violation, prefix: String) -> GatewayError {
        if violation.isTooLarge {
            return GatewayError(.contentTooLarge, type: .requestTooLarge, violation.description)
        }
        return GatewayError.badRequest(prefix + violation.description)
    }
}
