import Foundation

/// The result of running the `gseai` executable.
struct CLIResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs the built `gseai` executable as a user would, with a time limit.
enum CLIRunner {
    /// The folder holding the built products (the test bundle sits beside them).
    static var productsDirectory: URL {
        #if os(Linux)
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        #else
        Bundle.allBundles.first { $0.bundlePath.hasSuffix(".xctest") }!.bundleURL.deletingLastPathComponent()
        #endif
    }

    static func run(
        _ arguments: [String],
        environment: [String: String] = [:],
        stdin: String? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> CLIResult {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("gseai")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["GSEAI_API_TOKEN"] = nil
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        // Read both pipes while the process runs so that a full pipe cannot block it. The reads block,
        // so they run on Dispatch threads: blocking the two-thread cooperative pool would starve the stub.
        async let stdoutData = readToEnd(out.fileHandleForReading)
        async let stderrData = readToEnd(err.fileHandleForReading)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.terminate()
                throw TimedOut(arguments: arguments)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return CLIResult(
            status: process.terminationStatus,
            stdout: String(decoding: await stdoutData, as: UTF8.self),
            stderr: String(decoding: await stderrData, as: UTF8.self)
        )
    }

    static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: handle.readDataToEndOfFile()) }
        }
    }

    struct TimedOut: Error { var arguments: [String] }
}
