import Foundation
import GSEAI
import HTTPTypes

/// Applies a class's policy to every request of its students, on every surface: the chat page's API and
/// the forwarded APIs alike. It refuses what the policy forbids (a model, images, too many requests, a
/// spent budget) with a message a student can act on, and rewrites what it governs (output tokens,
/// system prompt) in the caller's own API shape.
public final class PolicyEnforcer: Sendable {
    /// Finds the class that applies.
    public let resolver: PolicyResolver
    /// The requests of the last minute and the tokens used and reserved today, per student and class, in
    /// every replica: asked together, in one round trip on PostgreSQL.
    let limits: any RequestLimiter
    /// Where reservations are settled.
    let budgets: any BudgetLedger
    let clock: @Sendable () -> Date

    /// What a request reserves of a daily budget when its class sets no `max_output_tokens`.
    static let defaultReservation = 1_024
    /// How long a reservation counts when its request never settles it (its replica died).
    static let reservationLifetime: TimeInterval = 600

    /// `clock` decides "now" for class dates, the rate window and the budget's day; tests move it.
    public init(classes: any ClassRepository, limits: any RequestLimiter, budgets: any BudgetLedger,
                clock: @escaping @Sendable () -> Date = Date.init) {
        self.resolver = PolicyResolver(classes: classes, clock: clock)
        self.limits = limits
        self.budgets = budgets
        self.clock = clock
    }

    /// What the policy decided for an admitted request: its class, and what it reserved of the class's budget.
    struct Admitted: Sendable {
        var applied: ClassSession
        var reservation: BudgetReservation?
    }

    /// Checks a request of `user` (to a forwarded endpoint whose body has `shape`, if it is one) against their
    /// class's policy, reserves its largest answer in the class's daily budget and counts it towards the rate
    /// limit; a request refused for any reason reserves and counts nothing. Returns the class that applies,
    /// or `nil` when none does.
    func admit(user: User, model: String?, imageCount: Int, shape: ProxyEndpoint.PolicyShape = .none,
               preferredClassID: String? = nil) async throws -> Admitted? {
        guard let applied = try await resolver.applicableClass(for: user, preferredClassID: preferredClassID) else { return nil }
        try Self.checkModel(model, in: applied)
        if imageCount > 0 && !applied.policy.imagesAllowed {
            throw GatewayError.badRequest("images are not allowed in your class '\(applied.name)'")
        }
        try Self.checkShape(shape, in: applied)
        let reservation = try await checkLimits(user: user, in: applied)
        return Admitted(applied: applied, reservation: reservation)
    }

    /// Refuses an endpoint the policy cannot be applied to: a raw prompt has no place for a system prompt,
    /// so a locked one could be sidestepped with plain completions.
    static func checkShape(_ shape: ProxyEndpoint.PolicyShape, in applied: ClassSession) throws {
        guard shape.isRawPrompt, applied.policy.lockedSystemPrompt != nil else { return }
        throw GatewayError(.forbidden, type: .permission,
                           "plain completions are not available in your class '\(applied.name)': its system prompt is fixed; use chat")
    }

    /// Refuses a model the class does not allow.
    static func checkModel(_ model: String?, in applied: ClassSession) throws {
        guard !applied.policy.allows(model: model ?? "") else { return }
        throw GatewayError(.forbidden, type: .permission, "the model '\(model ?? "")' is not available in your class '\(applied.name)'")
    }

    /// Reserves the request's largest answer in the class's daily budget and counts it in the student's
    /// requests per minute, or refuses it (counting and reserving nothing) with the wait in words.
    private func checkLimits(user: User, in applied: ClassSession) async throws -> BudgetReservation? {
        let now = clock()
        var ask = LimitAsk()
        // What the student used in this class: each class's budget is its own.
        let budgetKey = BudgetKey(userID: user.id, classID: applied.id, day: UsageRecorder.day(now))
        let budget = applied.policy.dailyTokenBudget
        if let budget {
            ask.budget = LimitAsk.Budget(key: budgetKey, tokens: applied.policy.maxOutputTokens ?? Self.defaultReservation, budget: budget,
                                         expires: now.addingTimeInterval(Self.reservationLifetime))
        }
        // A policy is checked when written (a positive number); a zero or less read back from the database
        // would index before the window.
        let limit = applied.policy.requestsPerMinute.flatMap { $0 > 0 ? $0 : nil }
        if let limit {
            ask.rate = LimitAsk.Rate(key: "rate:" + user.id, limit: limit, window: 60)
        }
        guard ask.budget != nil || ask.rate != nil else { return nil }
        switch try await limits.admit(ask, now: now) {
        case .admitted(let reservation):
            return reservation.map { BudgetReservation(ledger: budgets, id: $0, key: budgetKey) }
        case .overBudget(let used):
            let midnight = (now.timeIntervalSince1970 / 86_400).rounded(.down) * 86_400 + 86_400
            let seconds = max(1, Int((midnight - now.timeIntervalSince1970).rounded(.up)))
            throw GatewayError(
                .tooManyRequests, type: .rateLimit,
                "you have used \(used) tokens today; the daily budget of your class '\(applied.name)' is \(budget ?? 0) tokens — "
                    + "it resets at midnight UTC, in \(Self.describe(seconds: seconds))",
                headers: [.retryAfter: String(seconds)]
            )
        case .rateLimited(let refusal):
            let wait = max(1, Int(refusal.retryAfter.clamped(to: 0...60).rounded(.up)))
            throw GatewayError(
                .tooManyRequests, type: .rateLimit,
                "you have sent \(refusal.sent) requests in the last minute; the limit for your class '\(applied.name)' is \(limit ?? 0) — "
                    + "try again in \(wait) seconds",
                headers: [.retryAfter: String(wait)]
            )
        }
    }

    static func describe(seconds: Int) -> String {
        let hours = seconds / 3600, minutes = (seconds % 3600 + 59) / 60
        if hours == 0 { return minutes <= 1 ? "less than a minute" : "\(minutes) minutes" }
        return "\(hours) h \(minutes) min"
    }

    // MARK: The conversation API

    /// The system prompt an answer is generated with: the class's when locked, else the conversation's own,
    /// else the class's.
    static func systemPrompt(_ policy: ClassPolicy?, requested: String?) -> String? {
        guard let policy, let classPrompt = policy.systemPrompt, !classPrompt.isEmpty else { return requested }
        if policy.systemPromptLocked { return classPrompt }
        if let requested, !requested.isEmpty { return requested }
        return classPrompt
    }

    // MARK: The forwarded APIs

    /// The request body as the policy wants it for a body of `shape`, or `nil` when it stays as sent.
    /// (Plain completions under a locked system prompt are refused before, by ``checkShape(_:in:)``.)
    static func rewrite(_ json: JSONValue, shape: ProxyEndpoint.PolicyShape, in applied: ClassSession) -> JSONValue? {
        guard case .object(var body) = json else { return nil }
        let original = body
        let policy = applied.policy
        switch shape {
        case .lmstudioChat:
            clamp(&body, keys: ["max_output_tokens"], to: policy.maxOutputTokens)
            supplyField(&body, "system_prompt", policy)
        case .openAIChat:
            clamp(&body, keys: ["max_tokens", "max_completion_tokens"], to: policy.maxOutputTokens)
            supplyMessages(&body, policy)
        case .completion:
            clamp(&body, keys: ["max_tokens"], to: policy.maxOutputTokens)
        case .llamaCompletion:
            clamp(&body, keys: ["n_predict", "max_tokens"], to: policy.maxOutputTokens)
        case .responses:
            clamp(&body, keys: ["max_output_tokens"], to: policy.maxOutputTokens)
            supplyField(&body, "instructions", policy)
            if policy.lockedSystemPrompt != nil, case .array(let items)? = body["input"] {
                body["input"] = .array(items.filter { !isSystemEntry($0) })
            }
        case .anthropicMessages:
            clamp(&body, keys: ["max_tokens"], to: policy.maxOutputTokens)
            supplyField(&body, "system", policy)
        case .rawPrompt, .none:
            break
        }
        return body == original ? nil : .object(body)
    }

    /// Sets the first of `keys` when none is there, and lowers any that is higher than the limit; a negative
    /// count (llama.cpp's -1, "no limit") is higher than any.
    private static func clamp(_ body: inout [String: JSONValue], keys: [String], to limit: Int?) {
        guard let limit, let first = keys.first else { return }
        var present = false
        for key in keys {
            guard let value = body[key], value != .null else { continue }
            present = true
            if let number = value.doubleValue, number >= 0, number <= Double(limit) { continue }
            body[key] = .number(Double(limit))
        }
        if !present { body[first] = .number(Double(limit)) }
    }

    /// A system prompt kept in one field (a string, or Anthropic's list of blocks): replaced when locked,
    /// supplied when missing.
    private static func supplyField(_ body: inout [String: JSONValue], _ key: String, _ policy: ClassPolicy) {
        guard let prompt = policy.systemPrompt, !prompt.isEmpty else { return }
        if policy.systemPromptLocked || isEmpty(body[key]) { body[key] = .string(prompt) }
    }

    /// A system prompt kept as `system` (or `developer`) messages: when locked, the caller's go and the
    /// class's comes first; otherwise the class's is added when the caller sent none.
    private static func supplyMessages(_ body: inout [String: JSONValue], _ policy: ClassPolicy) {
        guard let prompt = policy.systemPrompt, !prompt.isEmpty else { return }
        let messages = body["messages"]?.arrayValue ?? []
        let hasOwn = messages.contains(where: isSystemEntry)
        guard policy.systemPromptLocked || !hasOwn else { return }
        let system: JSONValue = ["role": "system", "content": .string(prompt)]
        body["messages"] = .array([system] + messages.filter { !isSystemEntry($0) })
    }

    private static func isSystemEntry(_ item: JSONValue) -> Bool {
        let role = item["role"]?.stringValue
        return role == "system" || role == "developer"
    }

    private static func isEmpty(_ value: JSONValue?) -> Bool {
        switch value {
        case nil, .null?: true
        case .string(let text)?: text.isEmpty
        case .array(let items)?: items.isEmpty
        default: false
        }
    }

    /// A model list with only the class's models, or `nil` when it stays as it is.
    static func filterModels(_ json: JSONValue, list: ProxyEndpoint.ModelList, policy: ClassPolicy) -> JSONValue? {
        guard !policy.allowedModels.isEmpty, case .object(var body) = json else { return nil }
        guard let items = body[list.listKey]?.arrayValue else { return nil }
        body[list.listKey] = .array(items.filter { policy.allows(model: $0[list.idKey]?.stringValue ?? "") })
        return .object(body)
    }
}

extension ClassPolicy {
    /// The system prompt when it is locked and not empty.
    var lockedSystemPrompt: String? {
        systemPromptLocked ? systemPrompt.flatMap { $0.isEmpty ? nil : $0 } : nil
    }

    /// Whether students of the class may use `model` (every model, when the list is empty).
    public func allows(model: String) -> Bool {
        allowedModels.isEmpty || allowedModels.contains(model)
    }
}
