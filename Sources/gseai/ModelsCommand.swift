import Foundation
import ArgumentParser
import GSEAI

/// `gseai models`: the server's models.
struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "models", abstract: "List the server's models.")

    @OptionGroup var options: ClientOptions

    @Option(help: "The API to ask: native (LM Studio /api/v1), openai or llamacpp (/v1/models), tgw (/v1/internal/model/*).")
    var api = APIChoice.native

    func run() async throws {
        try await options.makeClient().run { client in
            switch api {
            case .native:
                let list = try await client.listModels()
                if options.json { return try Terminal.printJSON(list) }
                var rows = [["MODEL", "TYPE", "LOADED", "VISION", "CONTEXT"]]
                for model in list.models {
                    rows.append([
                        model.key, model.type ?? "", model.isLoaded ? "yes" : "no", model.supportsVision ? "yes" : "no",
                        model.maxContextLength.map(String.init) ?? "",
                    ])
                }
                Terminal.out(table(rows))
            case .openai, .llamacpp:
                let list = try await client.listModelsOpenAI()
                if options.json { return try Terminal.printJSON(list) }
                Terminal.out(table([["MODEL"]] + list.data.map { [$0.id] }))
            case .tgw:
                async let names = client.modelList()
                async let info = client.modelInfo()
                let (models, loaded) = try await (names, info)
                if options.json {
                    return try Terminal.printJSON(["model_names": JSONValue.array(models.map(JSONValue.string)), "loaded": loaded.json])
                }
                Terminal.out(table([["MODEL", "LOADED"]] + models.map { [$0, $0 == loaded.modelName ? "yes" : "no"] }))
            }
        }
    }

    func table(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }
}
