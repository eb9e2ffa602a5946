import Foundation
import GSEAI
import HTTPTypes
import Hummingbird

/// Rosters in and usage out, as CSV: an instructor imports the students of a class (creating accounts with
/// set-up links for the new ones, inviting the existing ones) and exports the class's usage for a spreadsheet.
extension ClassController.Paths {
    static let roster: RouterPath = "/api/classes/:id/roster"
    static let usageCSV: RouterPath = "/api/classes/:id/usage.csv"
}

extension ClassController {
    /// The most students one import takes.
    static let rosterLimit = 1000

    func registerRoster(on router: Router<GatewayRequestContext>) {
        router.post(Paths.roster, use: importRoster)
        router.get(Paths.usageCSV, use: usageCSV)
    }

    struct CreatedStudentView: Codable, Sendable {
        var username: String
        var setup_url: String
    }

    struct RosterLineError: Codable, Sendable {
        var line: Int
        var message: String
    }

    struct RosterImportView: ResponseEncodable {
        /// New accounts, in the class, each with its set-up link.
        var created: [CreatedStudentView]
        /// Existing students invited: they join when they accept on their page.
        var invited: [String]
        /// Existing students already in the class.
        var already_members: [String]
        var errors: [RosterLineError]
    }

    /// Imports a `text/csv` roster (``RosterCSV``). New usernames become student accounts in the class, with
    /// no usable password and a set-up link each. Existing students are invited, never added: an account
    /// joins a class only by its owner's action, since the class's instructor then sees into it. Every line
    /// that is neither is reported with its line number, and the others still go through.
    @Sendable func importRoster(_ request: Request, context: GatewayRequestContext) async throws -> RosterImportView {
        let (user, classSession) = try await ownedClass(context)
        let mediaType = request.headers[.contentType].flatMap(MediaType.init(from:))
        guard let mediaType, mediaType.isType(.textCsv) || mediaType.isType(.textPlain) else {
            throw GatewayError(.unsupportedMediaType, type: .invalidRequest, "send the roster as text/csv, one username per line")
        }
        var request = request
        let body = try await RequestBodies.collect(&request, upTo: 256 * 1024)
        let lines = try Self.rosterLines(String(buffer: body))

        var result = RosterImportView(created: [], invited: [], already_members: [], errors: [])
        var seen: [String: Int] = [:]
        for (number, username) in lines {
            guard AccountService.isValidUsername(username) else {
                result.errors.append(.init(line: number, message: "'\(username)': \(AccountService.AccountError.invalidUsername.description)"))
                continue
            }
            if let first = seen[username] {
                result.errors.append(.init(line: number, message: "'\(username)' is already on line \(first)"))
                continue
            }
            seen[username] = number
            if let existing = try await storage.users.find(username: username) {
                guard existing.role == .student else {
                    result.errors.append(.init(line: number, message: "'\(username)' is an \(existing.role.rawValue) account, not a student's"))
                    continue
                }
                if try await storage.classes.isMember(classID: classSession.id, userID: existing.id) {
                    result.already_members.append(username)
                } else {
                    try await storage.classes.invite(classID: classSession.id, userID: existing.id, at: now)
                    result.invited.append(username)
                }
                continue
            }
            let student: User
            do {
                // The generated password is never shown: the student sets their own with the link.
                student = try await accounts.createUser(username: username, password: nil, role: .student).user
            } catch let error as AccountService.AccountError {
                result.errors.append(.init(line: number, message: error.description))
                continue
            }
            try await storage.classes.addMember(classID: classSession.id, userID: student.id, at: now)
            let link = try await setupLinks.issue(for: student)
            result.created.append(.init(username: username, setup_url: link.url))
        }
        try await storage.audit.record(user, "class.roster.import", classSession.id,
                        detail: "created \(result.created.count), invited \(result.invited.count), errors \(result.errors.count)")
        return result
    }

    /// The roster's usernames with their line numbers; 400 when there are more than ``rosterLimit``.
    static func rosterLines(_ text: String) throws -> [(line: Int, username: String)] {
        do {
            return try RosterCSV.usernames(text, limit: rosterLimit)
        } catch {
            throw GatewayError.badRequest(error.description)
        }
    }

    /// The class's usage since `?since=YYYY-MM-DD` (default: the last 30 days) as CSV, a row per day, member
    /// and model: `day,username,model,requests,input_tokens,output_tokens`. Refused when the class does not
    /// share its students' usage.
    @Sendable func usageCSV(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession) = try await ownedClass(context)
        guard classSession.policy.transcriptVisibility != .off else {
            throw GatewayError(.forbidden, type: .permission, "the class '\(classSession.name)' does not share its students' usage")
        }
        let since = try since(request)
        let usernames = Dictionary(try await storage.classes.roster(classID: classSession.id).map { ($0.userID, $0.username) },
                                   uniquingKeysWith: { first, _ in first })
        let rows = try await storage.classes.memberUsage(classID: classSession.id, since: since)
            .compactMap { row in usernames[row.userID].map { (row, $0) } }
            .sorted { ($0.0.day, $0.1, $0.0.model) < ($1.0.day, $1.1, $1.0.model) }
        var csv = "day,username,model,requests,input_tokens,output_tokens\r\n"
        for (row, username) in rows {
            csv += [row.day, username, row.model, String(row.requests), String(row.inputTokens), String(row.outputTokens)]
                .map(Self.csvField).joined(separator: ",") + "\r\n"
        }
        try await storage.audit.record(user, "class.usage.export", classSession.id, detail: "since \(since)")
        let fileName = ConversationExport.fileName(classSession.name) + "-usage-since-\(since).csv"
        return Response(status: .ok, headers: [
            .contentType: "text/csv; charset=utf-8",
            .contentDisposition: "attachment; filename=\"\(fileName)\"",
            .cacheControl: "no-store",
        ], body: .init(byteBuffer: ByteBuffer(string: csv)))
    }

    /// A CSV field, quoted when it holds a separator or quote; a leading `=`, `+`, `-` or `@` is defused so
    /// that a spreadsheet does not run it as a formula.
    static func csvField(_ value: String) -> String {
        var value = value
        if let first = value.first, "=+-@".contains(first), Int(value) == nil { value = "'" + value }
        guard value.contains(where: { ",\"\r\n".contains($0) }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
