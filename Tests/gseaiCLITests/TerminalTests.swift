import Foundation
import GSEAI
import Testing

@testable import gseai

/// The CLI's progress line, fed what a broken or hostile server could send.
@Suite("gseai terminal output")
struct TerminalTests {
    @Test func theProgressBarTakesAnyNumbersTheServerSends() throws {
        #expect(Terminal.progressBar(fraction: 0.5, done: 2_000_000, total: 4_000_000, speed: 1_000_000, width: 10)
                == "[#####-----]  50%  2.0 MB/4.0 MB  1.0 MB/s")
        // A negative fraction (downloaded_bytes -1), one above 1, infinity, NaN, an absurd speed: no trap.
        #expect(Terminal.progressBar(fraction: -0.1, done: -1, total: 10, speed: nil, width: 4).hasPrefix("[----]   0%"))
        #expect(Terminal.progressBar(fraction: 7, done: nil, total: nil, speed: 1e19, width: 4) == "[####] 100%")
        #expect(Terminal.progressBar(fraction: .infinity, done: nil, total: nil, speed: .infinity, width: 3) == "[???]")
        #expect(Terminal.progressBar(fraction: .nan, done: nil, total: nil, speed: .nan, width: 3) == "[???]")
        let status = try JSONValue(parsing: Array(#"{"status":"downloading","job_id":"j","downloaded_bytes":-1,"total_size_bytes":10}"#.utf8))
            .decode(as: DownloadStatus.self)
        #expect(status.fraction == 0)
    }
}
