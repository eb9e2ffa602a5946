import ArgumentParser
import Foundation
import GSEAI

/// `gseai load`: loads a model into memory.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "load", abstract: "Load a model into memory.")

    @OptionGroup var options: ClientOptions

    @Argument(help: "The model to load.")
    var model: String

    @Option(help: "Seconds of idleness after which the server unloads it.")
    var ttl: Int?

    @Option(help: "The API: native (LM Studio /api/v1/models/load) or tgw (/v1/internal/model/load).")
    var api = APIChoice.native

    func run() async throws {
        guard api == .native || api == .tgw else { throw CLIError("load needs --api native or tgw (llama.cpp loads its model when it starts)") }
        try await options.makeClient().run { client in
            if api == .tgw {
                try await client.loadModel(named: model)
                if options.json { return try Terminal.printJSON(try await client.modelInfo()) }
                return Terminal.out("loaded \(model)\n")
            }
            let result = try await client.loadModel(model, ttl: ttl)
            if options.json { return try Terminal.printJSON(result) }
            let time = result.loadTimeSeconds.map { String(format: " in %.2f s", $0) } ?? ""
            Terminal.out("loaded \(result.instanceID ?? model)\(time)\n")
        }
    }
}

/// `gseai unload`: unloads a model.
struct UnloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unload", abstract: "Unload a model from memory.")

    @OptionGroup var options: ClientOptions

    @Argument(help: "The model (or loaded instance) to unload.")
    var model: String

    @Option(help: "The API: native (LM Studio /api/v1/models/unload) or tgw (/v1/internal/model/unload, when MODEL is the loaded one).")
    var api = APIChoice.native

    func run() async throws {
        guard api == .native || api == .tgw else { throw CLIError("unload needs --api native or tgw") }
        try await options.makeClient().run { client in
            if api == .tgw {
                // text-generation-webui unloads whatever is loaded: only when it is the model meant.
                let loaded = try await client.modelInfo().modelName
                guard loaded == model else { throw CLIError("\(model) is not loaded (the loaded model is \(loaded))") }
                try await client.unloadModel()
                return options.json ? try Terminal.printJSON(["unloaded": model]) : Terminal.out("unloaded \(model)\n")
            }
            let result = try await client.unloadModel(model)
            if options.json { return try Terminal.printJSON(result) }
            Terminal.out("unloaded \(result.instanceID ?? model)\n")
        }
    }
}

/// `gseai download`: downloads a model, with a progress bar until it is done.
struct DownloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download a model to the server, showing progress until it is done."
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The model to download, such as qwen/qwen3-8b.")
    var model: String

    @Option(help: "Seconds between progress checks.")
    var interval = 1.0

    func run() async throws {
        try await options.makeClient().run { client in
            var status = try await client.downloadModel(model)
            if options.json { try Terminal.printJSON(status, pretty: false) }
            let tty = Terminal.stderrIsTTY
            var lastPercent = -1
            while !status.isFinished {
                guard let job = status.jobID else { throw CLIError("the server gave no download job id") }
                try await Task.sleep(for: .seconds(interval))
                status = try await client.downloadStatus(jobID: job)
                if options.json {
                    try Terminal.printJSON(status, pretty: false)
                    continue
                }
                let bar = Terminal.progressBar(
                    fraction: status.fraction, done: status.downloadedBytes, total: status.totalSizeBytes,
                    speed: status.bytesPerSecond
                )
                let percent = Int(((status.fraction ?? 0) * 100).rounded(.down))
                if tty {
                    Terminal.err("\r\u{1B}[K" + bar)
                } else if percent != lastPercent {
                    Terminal.err(bar + "\n")
                }
                lastPercent = percent
            }
            if tty && lastPercent >= 0 { Terminal.err("\n") }
            switch status.status {
            case "failed": throw CLIError("the download of \(model) failed")
            case "already_downloaded": if !options.json { Terminal.out("\(model) is already downloaded\n") }
            default: if !options.json { Terminal.out("\(model): download completed\n") }
            }
        }
    }
}
