import Foundation
import GSEAI
import HTTPTypes
import Hummingbird

/// The JSON API of classes: instructors run theirs (administrators all of them), students join and choose
/// the one whose policy applies. An instructor asking about another instructor's class, or about a student
/// who is not in their class, is answered "not found", exactly like a missing one. Every view of usage or
/// transcripts is written to the audit log.
public struct ClassController: Sendable {
    let accounts: AccountService
    let policies: PolicyEnforcer
    let secureCookies: Bool
    let publicOrigin: String
    /// Password set-up links, for students' resets and the accounts a roster import creates.
    let setupLinks: SetupLinks
    /// The fair queue, for a class's view of its line.
    let scheduler: FairScheduler

    public init(accounts: AccountService, policies: PolicyEnforcer, secureCookies: Bool, publicOrigin: String, setupLinks: SetupLinks,
                scheduler: FairScheduler) {
        self.scheduler = scheduler
        self.accounts = accounts
        self.policies = policies
        self.secureCookies = secureCookies
        self.publicOrigin = publicOrigin
        self.setupLinks = setupLinks
    }

    var storage: Storage { accounts.storage }
    var now: Date { policies.clock() }

    /// Each path, defined once.
    enum Paths {
        static let classes: RouterPath = "/api/classes"
        static let mine: RouterPath = "/api/classes/mine"
        static let active: RouterPath = "/api/classes/active"
        static let join: RouterPath = "/api/classes/join"
        static let signUp: RouterPath = "/api/join"
        static let oneClass: RouterPath = "/api/classes/:id"
        static let code: RouterPath = "/api/classes/:id/code"
        static let open: RouterPath = "/api/classes/:id/open"
        static let close: RouterPath = "/api/classes/:id/close"
        static let members: RouterPath = "/api/classes/:id/members"
        static let member: RouterPath = "/api/classes/:id/members/:user"
        static let memberUsage: RouterPath = "/api/classes/:id/members/:user/usage"
        static let transcripts: RouterPath = "/api/classes/:id/members/:user/conversations"
        static let transcript: RouterPath = "/api/classes/:id/members/:user/conversations/:conversation"
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.get(Paths.classes, use: list)
        router.post(Paths.classes, use: create)
        router.get(Paths.mine, use: mine)
        router.post(Paths.active, use: setActive)
        router.post(Paths.join, use: join)
        router.post(Paths.signUp, use: signUp)
        router.get(Paths.oneClass, use: show)
        router.patch(Paths.oneClass, use: update)
        router.delete(Paths.oneClass, use: delete)
        router.post(Paths.code, use: regenerateCode)
        router.post(Paths.open, use: open)
        router.post(Paths.close, use: close)
        router.get(Paths.members, use: members)
        router.delete(Paths.member, use: removeMember)
        router.get(Paths.memberUsage, use: memberUsage)
        router.get(Paths.transcripts, use: transcripts)
        router.get(Paths.transcript, use: transcript)
        registerMemberAccounts(on: router)
        registerRoster(on: router)
        registerInvitations(on: router)
        registerQueue(on: router)
    }

    // MARK: Instructors

    @Sendable func list(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<ClassView> {
        let user = try context.require(.instructor).user
        let classes = try await storage.classes.list(instructorID: user.role == .admin ? nil : user.id)
        let now = self.now
        return AccountController.ListView(data: classes.map { ClassView($0, now: now) })
    }

    @Sendable func create(_ request: Request, context: GatewayRequestContext) async throws -> EditedResponse<ClassView> {
        let user = try context.require(.instructor).user
        let body = try await Self.object(from: request)
        var classSession = ClassSession(instructorID: user.id, name: "", joinCode: "", createdAt: now)
        try Self.apply(body, to: &classSession)
        guard !classSession.name.isEmpty else { throw GatewayError.badRequest("missing field 'name'") }
        try await Self.withNewJoinCode(&classSession) { try await storage.classes.create($0) }
        try await storage.audit.record(user, "class.create", classSession.id, detail: classSession.name)
        return EditedResponse(status: .created, response: ClassView(classSession, now: now))
    }

    @Sendable func show(_ request: Request, context: GatewayRequestContext) async throws -> ClassView {
        let (_, classSession) = try await ownedClass(context)
        return ClassView(classSession, now: now)
    }

    @Sendable func update(_ request: Request, context: GatewayRequestContext) async throws -> ClassView {
        var (user, classSession) = try await ownedClass(context)
        try Self.apply(try await Self.object(from: request), to: &classSession)
        try await storage.classes.update(classSession)
        try await storage.audit.record(user, "class.update", classSession.id)
        return ClassView(classSession, now: now)
    }

    @Sendable func delete(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession) = try await ownedClass(context)
        try await storage.classes.delete(id: classSession.id)
        try await storage.audit.record(user, "class.delete", classSession.id, detail: classSession.name)
        return Response(status: .noContent)
    }

    @Sendable func regenerateCode(_ request: Request, context: GatewayRequestContext) async throws -> ClassView {
        var (user, classSession) = try await ownedClass(context)
        try await Self.withNewJoinCode(&classSession) { try await storage.classes.update($0) }
        try await storage.audit.record(user, "class.regenerate-code", classSession.id)
        return ClassView(classSession, now: now)
    }

    @Sendable func open(_ request: Request, context: GatewayRequestContext) async throws -> ClassView {
        try await setOpen(true, context: context)
    }

    @Sendable func close(_ request: Request, context: GatewayRequestContext) async throws -> ClassView {
        try await setOpen(false, context: context)
    }

    func setOpen(_ isOpen: Bool, context: GatewayRequestContext) async throws -> ClassView {
        var (user, classSession) = try await ownedClass(context)
        classSession.isOpen = isOpen
        try await storage.classes.update(classSession)
        try await storage.audit.record(user, isOpen ? "class.open" : "class.close", classSession.id)
        return ClassView(classSession, now: now)
    }

    /// The roster with each member's usage since `?since=YYYY-MM-DD` (default: the last 30 days), what the
    /// caller may do to each member's account, and the invitations not yet answered. Three queries,
    /// whatever the size of the class.
    @Sendable func members(_ request: Request, context: GatewayRequestContext) async throws -> MembersView {
        let (user, classSession) = try await ownedClass(context)
        let since = try since(request)
        let showsUsage = classSession.policy.transcriptVisibility != .off
        let rows = showsUsage ? try await storage.classes.memberUsage(classID: classSession.id, since: since) : []
        let usageByUser = Dictionary(grouping: rows, by: \.userID)
        let views = try await storage.classes.roster(classID: classSession.id).map { entry in
            let own = usageByUser[entry.userID] ?? []
            let access = MemberAccess(callerIsAdmin: user.role == .admin, username: entry.username, className: classSession.name,
                                      visibility: classSession.policy.transcriptVisibility,
                                      inAnotherInstructorsClass: entry.inAnotherInstructorsClass, hasSignedIn: entry.isInUse,
                                      memberIsStudent: entry.role == .student)
            let input = own.reduce(0) { $0.addingSaturated($1.inputTokens) }
            let output = own.reduce(0) { $0.addingSaturated($1.outputTokens) }
            return MemberView(
                user_id: entry.userID, username: entry.username, disabled: entry.disabled, joined_at: entry.joinedAt,
                requests: showsUsage ? own.reduce(0) { $0.addingSaturated($1.requests) } : nil,
                input_tokens: showsUsage ? input : nil,
                output_tokens: showsUsage ? output : nil,
                tokens: showsUsage ? input.addingSaturated(output) : nil,
                last_active_day: showsUsage ? own.filter { $0.requests > 0 }.map(\.day).max() : nil,
                // When they were last active anywhere: their account's activity, shown only as far as it is the
                // instructor's to see.
                last_seen_at: access.sessionsAndKeys ? entry.lastSeenAt : nil,
                has_signed_in: entry.isInUse,
                account: access
            )
        }
        let invited = try await storage.classes.invitations(classID: classSession.id, userID: nil)
            .map { InvitedView(user_id: $0.userID, username: $0.username, invited_at: $0.invitedAt) }
        if showsUsage { try await storage.audit.record(user, "class.usage.view", classSession.id, detail: "since \(since)") }
        return MembersView(since: since, data: views, invited: invited, daily: showsUsage ? DayUsageView.days(rows) : nil)
    }

    @Sendable func removeMember(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let (user, classSession) = try await ownedClass(context)
        let student = try await member(of: classSession, context: context)
        try await storage.classes.removeMember(classID: classSession.id, userID: student.id)
        try await storage.audit.record(user, "class.member.remove", student.id, detail: "class \(classSession.id)")
        return Response(status: .noContent)
    }

    /// One member's usage per day (every model), for charts.
    @Sendable func memberUsage(_ request: Request, context: GatewayRequestContext) async throws -> MemberUsageView {
        let (user, classSession) = try await ownedClass(context)
        let student = try await member(of: classSession, context: context)
        guard classSession.policy.transcriptVisibility != .off else {
            throw GatewayError(.forbidden, type: .permission, "the class '\(classSession.name)' does not share its students' usage")
        }
        let since = try since(request)
        let rows = try await storage.usage.list(userID: student.id, classID: classSession.id).filter { $0.day >= since }
        try await storage.audit.record(user, "class.member.usage.view", student.id, detail: "class \(classSession.id), since \(since)")
        return MemberUsageView(user_id: student.id, username: student.username, since: since, data: DayUsageView.days(rows))
    }

    /// The member's conversations held in the class, when the class shares transcripts.
    @Sendable func transcripts(_ request: Request, context: GatewayRequestContext) async throws -> AccountController.ListView<ConversationView> {
        let (user, classSession) = try await ownedClass(context)
        let student = try await member(of: classSession, context: context)
        try Self.requireTranscripts(classSession)
        let conversations = try await storage.conversations.list(userID: student.id, search: nil, before: nil, limit: 500)
            .filter { $0.classID == classSession.id }
        try await storage.audit.record(user, "class.transcript.list", student.id, detail: "class \(classSession.id)")
        return AccountController.ListView(data: conversations.map(ConversationView.init))
    }

    /// One transcript, read-only.
    @Sendable func transcript(_ request: Request, context: GatewayRequestContext) async throws -> ConversationController.DetailView {
        let (user, classSession) = try await ownedClass(context)
        let student = try await member(of: classSession, context: context)
        try Self.requireTranscripts(classSession)
        guard let conversation = try await storage.conversations.find(id: try context.parameters.require("conversation"), userID: student.id),
            conversation.classID == classSession.id
        else { throw GatewayError.notFound("no such conversation") }
        let messages = try await storage.messages.list(conversationID: conversation.id)
        try await storage.audit.record(user, "class.transcript.view", conversation.id, detail: "class \(classSession.id), student \(student.id)")
        return ConversationController.DetailView(conversation: ConversationView(conversation), messages: messages.map(MessageView.init))
    }

    static func requireTranscripts(_ classSession: ClassSession) throws {
        guard classSession.policy.transcriptVisibility == .full else {
            throw GatewayError(.forbidden, type: .permission, "the class '\(classSession.name)' does not share its students' transcripts")
        }
    }

    // MARK: Students

    @Sendable func mine(_ request: Request, context: GatewayRequestContext) async throws -> MyClassesView {
        let user = try context.requireIdentity().user
        let classes = try await storage.classes.classes(ofMember: user.id)
        // A closed class still applies (and refuses); the list says which one so that the page can explain.
        let appliedID = try await policies.resolver.chosenClass(for: user)?.id
        let now = self.now
        return MyClassesView(data: classes.map { StudentClassView($0, now: now, applies: $0.id == appliedID) }, applied_class_id: appliedID)
    }

    struct ActiveBody: Decodable { var class_id: String? }

    @Sendable func setActive(_ request: Request, context: GatewayRequestContext) async throws -> MyClassesView {
        let user = try context.requireIdentity().user
        let body = try await RequestBodies.decode(ActiveBody.self, from: request)
        if let classID = body.class_id {
            guard try await storage.classes.isMember(classID: classID, userID: user.id) else { throw GatewayError.notFound("no such class") }
        }
        try await storage.classes.setActiveClass(userID: user.id, classID: body.class_id)
        return try await mine(request, context: context)
    }

    struct JoinBody: Decodable { var code: String }

    @Sendable func join(_ request: Request, context: GatewayRequestContext) async throws -> StudentClassView {
        let user = try context.requireIdentity().user
        guard user.role == .student else {
            throw GatewayError(.forbidden, type: .permission, "only students join classes")
        }
        let body = try await RequestBodies.decode(JoinBody.self, from: request)
        let classSession = try await joinable(code: body.code)
        try await storage.classes.addMember(classID: classSession.id, userID: user.id, at: now)
        // Joining with the code answers an invitation to the same class.
        try await storage.classes.removeInvitation(classID: classSession.id, userID: user.id)
        // The class just joined is the one the student means to work in.
        try await storage.classes.setActiveClass(userID: user.id, classID: classSession.id)
        return StudentClassView(classSession, now: now, applies: true)
    }

    struct SignUpBody: Decodable { var code: String; var username: String; var password: String }

    /// Self sign-up with a join code: creates a student account in the class and logs it in.
    @Sendable func signUp(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        // Like login: a foreign page must not create and log in an account of its choosing.
        try AuthenticationMiddleware(accounts: accounts, publicOrigin: publicOrigin).checkOrigin(request)
        let body = try await RequestBodies.decode(SignUpBody.self, from: request)
        let classSession = try await joinable(code: body.code)
        let user: User
        do {
            user = try await accounts.createUser(username: body.username, password: body.password, role: .student).user
        } catch let error as AccountService.AccountError {
            if case .usernameTaken = error { throw GatewayError(.conflict, type: .invalidRequest, error.description) }
            throw GatewayError.badRequest(error.description)
        }
        try await storage.classes.addMember(classID: classSession.id, userID: user.id, at: now)
        try await storage.classes.setActiveClass(userID: user.id, classID: classSession.id)
        let (token, session) = try await accounts.startSession(for: user, userAgent: request.headers[.userAgent],
                                                               remoteAddress: context.remoteAddress)
        var response = try EditedResponse(status: .created, response: SignUpView(
            user: AccountController.UserView(user), csrf_token: session.csrfToken,
            class: StudentClassView(classSession, now: now, applies: true)
        )).response(from: request, context: context)
        response.setCookie(AuthenticationMiddleware.sessionCookie(token: token, expires: session.expiresAt, secure: secureCookies))
        return response
    }

    /// The class with this join code, if students can join it now.
    func joinable(code: String) async throws -> ClassSession {
        let trimmed = code.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, let classSession = try await storage.classes.find(joinCode: trimmed) else {
            throw GatewayError.notFound("no class has the join code '\(trimmed)'")
        }
        guard classSession.isActive(at: now) else {
            throw GatewayError(.forbidden, type: .permission, "the class '\(classSession.name)' is closed")
        }
        return classSession
    }

    // MARK: Ownership

    /// The class of the path, if the caller runs it (administrators run every class).
    func ownedClass(_ context: GatewayRequestContext) async throws -> (User, ClassSession) {
        let user = try context.require(.instructor).user
        guard let classSession = try await storage.classes.find(id: try context.parameters.require("id")),
            user.role == .admin || classSession.instructorID == user.id
        else { throw GatewayError.notFound("no such class") }
        return (user, classSession)
    }

    /// The member of the path, if they belong to the class.
    func member(of classSession: ClassSession, context: GatewayRequestContext) async throws -> User {
        let userID = try context.parameters.require("user")
        guard try await storage.classes.isMember(classID: classSession.id, userID: userID),
            let student = try await storage.users.find(id: userID)
        else { throw GatewayError.notFound("no such member") }
        return student
    }


    func since(_ request: Request) throws -> String {
        if let given = request.form.get("since") {
            guard given.count == 10, given.allSatisfy({ $0.isNumber || $0 == "-" }) else {
                throw GatewayError.badRequest("since must be a day, YYYY-MM-DD")
            }
            return String(given)
        }
        return UsageRecorder.day(now.addingTimeInterval(-29 * 86_400))
    }

    // MARK: Bodies

    static func object(from request: Request) async throws -> [String: JSONValue] {
        guard case .object(let body) = try await RequestBodies.decode(JSONValue.self, from: request) else {
            throw GatewayError.badRequest("the body must be a JSON object")
        }
        return body
    }

    /// Applies the fields present in a create or update body: `name`, `is_open`, `starts_at`, `ends_at`
    /// (ISO 8601, or `null` to remove) and `policy` (only the fields given change; `null` removes a limit).
    static func apply(_ body: [String: JSONValue], to classSession: inout ClassSession) throws {
        if let value = body["name"] {
            guard let name = value.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), (1...200).contains(name.count) else {
                throw GatewayError.badRequest("a class name has 1 to 200 characters")
            }
            classSession.name = name
        }
        if let value = body["is_open"] {
            guard let isOpen = value.boolValue else { throw GatewayError.badRequest("wrong type for 'is_open'") }
            classSession.isOpen = isOpen
        }
        if let value = body["starts_at"] { classSession.startsAt = try date(value, "starts_at") }
        if let value = body["ends_at"] { classSession.endsAt = try date(value, "ends_at") }
        if let starts = classSession.startsAt, let ends = classSession.endsAt, ends <= starts {
            throw GatewayError.badRequest("a class must end after it starts")
        }
        if let value = body["policy"] {
            guard case .object(let policy) = value else { throw GatewayError.badRequest("wrong type for 'policy'") }
            try apply(policy, to: &classSession.policy)
        }
    }

    static func apply(_ body: [String: JSONValue], to policy: inout ClassPolicy) throws {
        func wrong(_ key: String) -> GatewayError { .badRequest("wrong type for 'policy.\(key)'") }
        func limit(_ key: String) throws -> Int?? {
            guard let value = body[key] else { return .none }
            if value == .null { return .some(nil) }
            guard let number = value.intValue, number > 0 else { throw GatewayError.badRequest("'policy.\(key)' must be a positive whole number or null") }
            return .some(number)
        }
        for key in body.keys where !["allowed_models", "system_prompt", "system_prompt_locked", "max_output_tokens",
                                      "daily_token_budget", "requests_per_minute", "images_allowed", "transcript_visibility",
                                      "max_concurrent_requests"].contains(key) {
            throw GatewayError.badRequest("unknown policy field '\(key)'")
        }
        if let value = body["allowed_models"] {
            guard let items = value.arrayValue else { throw wrong("allowed_models") }
            policy.allowedModels = try items.map { item in
                guard let model = item.stringValue, !model.isEmpty else { throw wrong("allowed_models") }
                return model
            }
        }
        if let value = body["system_prompt"] {
            guard value == .null || value.stringValue != nil else { throw wrong("system_prompt") }
            policy.systemPrompt = value.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        }
        if let value = body["system_prompt_locked"] {
            guard let locked = value.boolValue else { throw wrong("system_prompt_locked") }
            policy.systemPromptLocked = locked
        }
        if let value = try limit("max_output_tokens") { policy.maxOutputTokens = value }
        if let value = try limit("daily_token_budget") { policy.dailyTokenBudget = value }
        if let value = try limit("requests_per_minute") { policy.requestsPerMinute = value }
        if let value = try limit("max_concurrent_requests") { policy.maxConcurrentRequests = value }
        if let value = body["images_allowed"] {
            guard let allowed = value.boolValue else { throw wrong("images_allowed") }
            policy.imagesAllowed = allowed
        }
        if let value = body["transcript_visibility"] {
            guard let visibility = value.stringValue.flatMap(TranscriptVisibility.init(rawValue:)) else {
                throw GatewayError.badRequest("'policy.transcript_visibility' is off, usage or full")
            }
            policy.transcriptVisibility = visibility
        }
    }

    static func date(_ value: JSONValue, _ key: String) throws -> Date? {
        if value == .null { return nil }
        guard let text = value.stringValue else { throw GatewayError.badRequest("wrong type for '\(key)'") }
        let plain = ISO8601DateFormatter()
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        guard let date = plain.date(from: text) ?? fractional.date(from: text) else {
            throw GatewayError.badRequest("'\(key)' must be an ISO 8601 date and time, such as 2026-09-01T08:00:00Z")
        }
        return date
    }

    /// Gives the class a new join code and saves it with `save`, drawing again if the code is taken.
    static func withNewJoinCode(_ classSession: inout ClassSession, save: (ClassSession) async throws -> Void) async throws {
        for attempt in 1...5 {
            classSession.joinCode = newJoinCode()
            do {
                return try await save(classSession)
            } catch StorageError.conflict where attempt < 5 {
                continue
            }
        }
    }

    /// Eight characters without look-alikes (no 0/O, 1/I/L).
    static func newJoinCode() -> String {
        let alphabet = Array("ABCDEFGHJKMNPQRSTUVWXYZ23456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<8).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }
}
