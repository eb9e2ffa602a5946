import Foundation
import GSEAI
import Testing

@Suite("Data URLs")
struct DataURLTests {
    static let png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13])
    static let jpeg = Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16])
    static let gif = Data("GIF89a\u{1}\u{0}".utf8)
    static let webp = Data("RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 ".utf8)

    @Test(arguments: [
        (png, DataURL.ImageType.png), (jpeg, .jpeg), (gif, .gif), (webp, .webp),
    ])
    func detectsTypeFromBytesAndRoundTrips(_ bytes: Data, _ type: DataURL.ImageType) throws {
        let url = try DataURL(imageBytes: bytes)
        #expect(url.type == type)
        #expect(url.string == "data:\(type.rawValue);base64,\(bytes.base64EncodedString())")
        let parsed = try DataURL(parsing: url.string)
        #expect(parsed == url)
    }

    @Test func acceptsTheSeedsRedSquare() throws {
        let url = try DataURL(
            parsing: "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKCAYAAACNMs+9AAAAFUlEQVR42mP8z8BQz0AEYBxVSF+FABJADveWkH6oAAAAAElFTkSuQmCC"
        )
        #expect(url.type == .png)
        #expect(url.data.count == 78)
    }

    @Test func rejectsWhatIsNotAnImageDataURL() {
        #expect(throws: DataURL.ParseError.notADataURL) { try DataURL(parsing: "https://example.com/cat.png") }
        #expect(throws: DataURL.ParseError.notBase64) { try DataURL(parsing: "data:image/png,plain") }
        #expect(throws: DataURL.ParseError.invalidBase64) { try DataURL(parsing: "data:image/png;base64,@@@") }
        #expect(throws: DataURL.ParseError.notAnImage) {
            try DataURL(parsing: "data:image/png;base64," + Data("just text".utf8).base64EncodedString())
        }
        #expect(throws: DataURL.ParseError.empty) { try DataURL(imageBytes: Data()) }
    }

    @Test func rejectsADeclaredTypeTheBytesContradict() {
        #expect(throws: DataURL.ParseError.mismatchedType(declared: "image/jpeg", actual: "image/png")) {
            try DataURL(parsing: "data:image/jpeg;base64," + Self.png.base64EncodedString())
        }
    }

    @Test func enforcesTheSizeLimit() {
        let big = Self.png + Data(count: 5000)
        #expect(throws: DataURL.ParseError.tooLarge(bytes: big.count, limit: 1000)) {
            try DataURL(imageBytes: big, maxBytes: 1000)
        }
        #expect(throws: DataURL.ParseError.self) {
            try DataURL(parsing: "data:image/png;base64," + big.base64EncodedString(), maxBytes: 1000)
        }
    }
}
