import Foundation

/// Finds the web page that SwiftPM copies beside the executable (`<executable's folder>/gseai_GSEAIGateway.resources/Public`),
/// so that the gateway serves it whatever its working directory: an installed binary, a service unit, a
/// container. SwiftPM's own `Bundle.module` is not used, because it stops the process when the folder is
/// missing.
enum PageFolder {
    static let bundleName = "gseai_GSEAIGateway.resources"

    /// The page's folder, or `nil` when none is found.
    static func bundled(executable: URL? = Bundle.main.executableURL) -> String? {
        var candidates: [URL] = []
        if let folder = executable?.resolvingSymlinksInPath().deletingLastPathComponent() {
            candidates.append(folder.appendingPathComponent(bundleName).appendingPathComponent("Public"))
            // An install layout: bin/gseai and share/gseai/Public.
            candidates.append(folder.deletingLastPathComponent().appendingPathComponent("share/gseai/Public"))
        }
        // The test runner is not the gateway's executable; its build folder holds the same copy.
        candidates.append(Bundle.main.bundleURL.appendingPathComponent(bundleName).appendingPathComponent("Public"))
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("index.html").path) }?.path
    }
}
