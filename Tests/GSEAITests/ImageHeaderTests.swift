import Foundation
import GSEAI
import GSEAITestSupport
import Testing

/// Image headers read without decoding, and the limits every image must keep: no header, however hostile,
/// may stop the process.
@Suite("Image headers and limits")
struct ImageHeaderTests {
    let limits = ImageLimits(maxBytes: 1 << 20, maxPixels: 40_000_000)

    @Test func eachFormatsDimensionsAreRead() throws {
        #expect(ImageHeader(bytes: TestImages.png(width: 640, height: 480)) == ImageHeader(type: .png, width: 640, height: 480))
        #expect(ImageHeader(bytes: TestImages.jpeg(width: 1024, height: 768)) == ImageHeader(type: .jpeg, width: 1024, height: 768))
        #expect(ImageHeader(bytes: TestImages.gif(width: 5, height: 4)) == ImageHeader(type: .gif, width: 5, height: 4))
        #expect(ImageHeader(bytes: TestImages.webpLossless(width: 16, height: 9)) == ImageHeader(type: .webp, width: 16, height: 9))
        #expect(ImageHeader(bytes: TestImages.webpExtended(width: 300, height: 200)) == ImageHeader(type: .webp, width: 300, height: 200))
        let real = try #require(Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="))
        #expect(ImageHeader(bytes: real) == ImageHeader(type: .png, width: 1, height: 1))
    }

    @Test func aPixelCountThatOverflowsIsRefusedNotTrapped() throws {
        let bomb = TestImages.overflowingPNG
        #expect(bomb.count == 66)
        let header = try #require(ImageHeader(bytes: bomb))
        #expect(header.width == 3_221_225_472 && header.height == 3_221_225_472)
        #expect(header.pixelCount == nil)
        #expect(throws: ImageLimits.Violation.tooManyPixels(width: 3_221_225_472, height: 3_221_225_472, limit: 40_000_000)) {
            try limits.check(imageBytes: bomb)
        }
        let large = TestImages.png(width: 100_000, height: 100_000)
        #expect(throws: ImageLimits.Violation.tooManyPixels(width: 100_000, height: 100_000, limit: 40_000_000)) {
            try limits.check(dataURL: "data:image/png;base64," + large.base64EncodedString())
        }
        #expect(ImageLimits.Violation.tooManyPixels(width: 100_000, height: 100_000, limit: 40_000_000).description
                == "the image is 100000×100000 pixels; the limit is 40 megapixels")
        #expect(ImageLimits.Violation.tooManyPixels(width: 1, height: 1, limit: 40_000_000).isTooLarge)
    }

    @Test func damagedAndTruncatedHeadersAreUnreadableNotTrapped() {
        let png = TestImages.png(width: 2, height: 2)
        for length in 0..<24 { #expect(ImageHeader(bytes: png.prefix(length)) == nil, "PNG cut at \(length)") }
        let jpeg = TestImages.jpeg(width: 3, height: 2)
        // Its start-of-frame's width ends at byte 31: cut anywhere before, it cannot be read.
        for length in 0..<31 { #expect(ImageHeader(bytes: jpeg.prefix(length)) == nil, "JPEG cut at \(length)") }
        #expect(ImageHeader(bytes: jpeg.prefix(31))?.width == 3)
        // A segment length that points past the end, or below its own header.
        #expect(ImageHeader(bytes: Data([0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0])) == nil)
        #expect(ImageHeader(bytes: Data([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00, 0, 0, 0, 0, 0, 0])) == nil)
        #expect(ImageHeader(bytes: TestImages.gif(width: 0, height: 4)) == nil)
        #expect(ImageHeader(bytes: TestImages.webpLossless(width: 16, height: 9).prefix(24)) == nil)
        // A PNG whose first chunk is not IHDR.
        var notIHDR = [UInt8](png)
        notIHDR[12] = UInt8(ascii: "X")
        #expect(ImageHeader(bytes: notIHDR) == nil)
        #expect(throws: ImageLimits.Violation.unreadableDimensions) { try limits.check(imageBytes: Data(notIHDR)) }
    }

    @Test func bytesAndSyntaxComeBeforePixels() {
        let small = ImageLimits(maxBytes: 10, maxPixels: 40_000_000)
        #expect(throws: ImageLimits.Violation.dataURL(.tooLarge(bytes: 45, limit: 10))) { try small.check(imageBytes: TestImages.png(width: 1, height: 1)) }
        #expect(throws: ImageLimits.Violation.dataURL(.notAnImage)) { try limits.check(imageBytes: Data("hello".utf8)) }
        #expect(throws: ImageLimits.Violation.dataURL(.notADataURL)) { try limits.check(dataURL: "https://example.com/a.png") }
        #expect(ImageLimits.Violation.dataURL(.tooLarge(bytes: 45, limit: 10)).isTooLarge)
        #expect(!ImageLimits.Violation.unreadableDimensions.isTooLarge)
    }

    @Test func requestImagesAreFoundInEveryAPIsShape() throws {
        let body = try JSONValue(parsing: Array(#"""
            {"input":[{"type":"image","data_url":"data:image/png;base64,AA"}],
             "messages":[{"content":[{"type":"image_url","image_url":{"url":"data:image/gif;base64,BB"}},
                                      {"type":"input_image","image_url":"https://x/y.png"},
                                      {"type":"image","source":{"type":"base64","media_type":"image/webp","data":"CC"}},
                                      {"type":"image","source":{"type":"url","url":"https://x/z.png"}}]}]}
            """#.utf8))
        let found = Set(RequestImages.find(in: body))
        #expect(found == [.dataURL("data:image/png;base64,AA"), .dataURL("data:image/gif;base64,BB"), .link("https://x/y.png"),
                          .dataURL("data:image/webp;base64,CC"), .link("https://x/z.png")])
    }
}
