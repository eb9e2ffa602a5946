import ArgumentParser
import Foundation
import GSEAIGateway
import Logging

/// `gseai db …`: the database as a whole.
struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "The gateway's database as a whole.",
        subcommands: [Copy.self]
    )

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the configured database (--database, e.g. the SQLite file) into an empty PostgreSQL one.",
            discussion: """
                Stop the gateway first, so that nothing is written meanwhile. The target is brought to the same \
                schema, refused if it holds anything, and filled in one transaction: whole or not at all. Then run \
                the gateway with --database set to the target.
                """
        )
        @OptionGroup var options: GatewayOptions
        @Option(help: "The empty target database: postgres://user@host:port/database.") var to: String

        func run() async throws {
            guard PostgresStorage.handles(to) else { throw CLIError("--to must be a postgres:// URL") }
            let logger = Logger(label: "gseai.db", factory: { _ in SwiftLogNoOpLogHandler() })
            let configuration = try await options.load()
            let source = try await options.openStorage(configuration, logger: logger)
            let target: Storage
            do {
                target = try await PostgresStorage.open(url: to, replicaURL: nil, logger: logger)
            } catch let error as StorageSetupError {
                try? await source.close()
                throw CLIError(error.description)
            } catch {
                try? await source.close()
                throw error
            }
            do {
                Terminal.out("copying \(configuration.databasePath) into \(PostgresStorage.redacted(to))\n")
                let counts = try await DatabaseCopy.copy(from: source, to: target) { table, rows in
                    Terminal.out("  \(table.padding(toLength: 18, withPad: " ", startingAt: 0)) \(rows) rows\n")
                }
                let total = counts.reduce(0) { $0 + $1.rows }
                Terminal.out("copied \(total) rows in \(counts.count) tables\n")
                try await source.close()
                try await target.close()
            } catch let error as DatabaseCopy.CopyError {
                try? await source.close()
                try? await target.close()
                throw CLIError(error.description)
            } catch {
                try? await source.close()
                try? await target.close()
                throw error
            }
        }
    }
}
