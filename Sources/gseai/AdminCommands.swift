import ArgumentParser
import Foundation
import GSEAIGateway
import Logging

/// Opens the gateway's database and account rules for an administrative command.
struct AdminContext {
    let storage: Storage
    let accounts: AccountService

    static func open(_ options: GatewayOptions) async throws -> AdminContext {
        let logger = Logger(label: "gseai.admin", factory: { _ in SwiftLogNoOpLogHandler() })
        let configuration = try await options.load()
        let storage = try await options.openStorage(configuration, logger: logger)
        return AdminContext(storage: storage, accounts: AccountService(storage: storage, hasher: PasswordHasher()))
    }

    /// Runs `body`, closes the database, and turns account errors into one-line messages.
    static func run(_ options: GatewayOptions, _ body: (AdminContext) async throws -> Void) async throws {
        let context = try await open(options)
        do {
            try await body(context)
            try await context.storage.close()
        } catch let error as AccountService.AccountError {
            try? await context.storage.close()
            throw CLIError(error.description)
        } catch {
            try? await context.storage.close()
            throw error
        }
    }
}

/// Reads a password from the first line of standard input.
func readPasswordFromStdin() throws -> String {
    guard let line = readLine(strippingNewline: true), !line.isEmpty else {
        throw CLIError("no password on standard input")
    }
    return line
}

extension Role: ExpressibleByArgument {}

/// `gseai user …`: accounts.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage the gateway's accounts (works on the database directly, also while the gateway runs).",
        subcommands: [Add.self, List.self, SetRole.self, ResetPassword.self, Disable.self, Enable.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account; the password is generated and printed unless --password-stdin.")
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var name: String
        @Option(help: "student, instructor or admin.") var role = Role.student
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let password = passwordStdin ? try readPasswordFromStdin() : nil
            try await AdminContext.run(options) { admin in
                let (user, generated) = try await admin.accounts.createUser(username: name, password: password, role: role)
                Terminal.out("created \(user.role.rawValue) '\(user.username)'\n")
                if let generated { Terminal.out("password: \(generated)\n") }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the accounts.")
        @OptionGroup var options: GatewayOptions

        func run() async throws {
            try await AdminContext.run(options) { admin in
                let users = try await admin.storage.users.list()
                let formatter = ISO8601DateFormatter()
                var lines = ["USERNAME\tROLE\tSTATUS\tCREATED"]
                lines += users.map { "\($0.username)\t\($0.role.rawValue)\t\($0.disabled ? "disabled" : "active")\t\(formatter.string(from: $0.createdAt))" }
                Terminal.out(lines.joined(separator: "\n") + "\n")
            }
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Change an account's role.")
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var name: String
        @Argument(help: "student, instructor or admin.") var role: Role

        func run() async throws {
            try await AdminContext.run(options) { admin in
                let user = try await admin.accounts.setRole(role, for: name)
                Terminal.out("'\(user.username)' is now \(user.role.rawValue)\n")
            }
        }
    }

    struct ResetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-password",
            abstract: "Set a new password (generated and printed unless --password-stdin) and end the account's sessions."
        )
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var name: String
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let password = passwordStdin ? try readPasswordFromStdin() : nil
            try await AdminContext.run(options) { admin in
                let (user, generated) = try await admin.accounts.resetPassword(for: name, to: password)
                Terminal.out("password of '\(user.username)' changed; their sessions are ended\n")
                if let generated { Terminal.out("password: \(generated)\n") }
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable an account: no login, sessions ended, keys revoked.")
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var name: String

        func run() async throws {
            try await AdminContext.run(options) { admin in
                let user = try await admin.accounts.setDisabled(true, for: name)
                Terminal.out("'\(user.username)' is disabled; their sessions are ended and keys revoked\n")
            }
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled account again (its old keys stay revoked).")
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var name: String

        func run() async throws {
            try await AdminContext.run(options) { admin in
                let user = try await admin.accounts.setDisabled(false, for: name)
                Terminal.out("'\(user.username)' is enabled\n")
            }
        }
    }
}

/// `gseai key …`: API keys.
struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "key", abstract: "Manage API keys.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key for a user and print it (it is shown only this once).")
        @OptionGroup var options: GatewayOptions
        @Argument(help: "The username.") var user: String
        @Option(help: "A label, such as the script's name.") var name = "cli"

        func run() async throws {
            try await AdminContext.run(options) { admin in
                let owner = try await admin.accounts.user(named: user)
                let (key, _) = try await admin.accounts.createKey(for: owner, label: name)
                Terminal.out(key + "\n")
            }
        }
    }
}
