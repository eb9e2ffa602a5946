import Dispatch
import Foundation
import GSEAIGateway
import Logging
import NIOCore
import NIOPosix

// `gseai serve` on SQLite from a synchronous `main` (see Package.swift): the configuration comes from the
// `GSEAI_*` environment as for `gseai serve --env-file none`; the first line printed is the address.
LoggingSystem.bootstrap { label in
    var handler = GatewayLogHandler.standardError(label: label)
    handler.logLevel = Logger.Level(rawValue: ProcessInfo.processInfo.environment["GSEAI_PROFILE_LOG_LEVEL"] ?? "info") ?? .info
    return handler
}
// As in `gseai serve` (Sources/gseai/main.swift): tasks run on the event loops.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
let done = DispatchSemaphore(value: 0)
let failure = LockedBox()
// Detached: top-level code is on the main actor, whose queue the waiting main thread never runs.
Task.detached {
    do {
        let logger = Logger(label: "gseai")
        let configuration = try await GatewayConfiguration.load(environmentFile: nil)
        let storage = try await SQLiteStorage.open(path: configuration.databasePath, logger: logger)
        let gateway = try Gateway(configuration: configuration, storage: storage, logger: logger)
        let app = try gateway.buildApplication(onServerRunning: { channel in
            FileHandle.standardOutput.write(Data("gseai-profile listening on http://\(configuration.host):\(channel.localAddress?.port ?? configuration.port)\n".utf8))
        }, logger: logger)
        try await app.runService()
    } catch {
        failure.set("\(error)")
    }
    done.signal()
}
done.wait()
if let message = failure.get() {
    FileHandle.standardError.write(Data("gseai-profile: \(message)\n".utf8))
    exit(1)
}

final class LockedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?
    func set(_ value: String) { lock.withLock { self.value = value } }
    func get() -> String? { lock.withLock { value } }
}
