import ArgumentParser

/// The `gseai` command: a client for a GSE AI server and, with `serve`, the gateway in front of it (started by
/// main.swift).
struct GSEAICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gseai",
        abstract: "Talk to a GSE AI (LM Studio) server from the terminal, or run the gateway in front of it.",
        discussion: "The API token comes from --token or the GSEAI_API_TOKEN environment variable.",
        subcommands: [
            ModelsCommand.self, ChatCommand.self, TokenizeCommand.self, LoadCommand.self, UnloadCommand.self, DownloadCommand.self,
            ServeCommand.self, UserCommand.self, KeyCommand.self, DatabaseCommand.self,
        ]
    )
}
