import Foundation
import GSEAI

/// Unbuffered output, so that streamed tokens appear as they arrive.
enum Terminal {
    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func err(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Whether standard error is a terminal (progress bars redraw in place only there).
    static var stderrIsTTY: Bool { isatty(FileHandle.standardError.fileDescriptor) != 0 }

    /// Prints a JSON value, pretty when `pretty`.
    static func printJSON(_ value: some Encodable, pretty: Bool = true) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        out(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
    }

    /// A progress bar such as `[##########----------]  50%  2.0/4.0 MB  1.0 MB/s`.
    static func progressBar(fraction: Double?, done: Int?, total: Int?, speed: Double?, width: Int = 30) -> String {
        var line = ""
        // The numbers come from the server: a fraction out of 0…1 or a speed beyond Int must not stop the CLI.
        if let fraction, fraction.isFinite {
            let fraction = min(1, max(0, fraction))
            let filled = Int((fraction * Double(width)).rounded(.down))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
            line += String(format: " %3d%%", Int((fraction * 100).rounded(.down)))
        } else {
            line += "[" + String(repeating: "?", count: width) + "]"
        }
        if let done {
            line += "  " + bytes(done) + (total.map { "/" + bytes($0) } ?? "")
        }
        if let speed, speed > 0, speed < 1e18 { line += "  " + bytes(Int(speed)) + "/s" }
        return line
    }

    /// A byte count for people: `1.5 GB`.
    static func bytes(_ count: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = Double(count)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }
}
