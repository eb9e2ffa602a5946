import Foundation
import GSEAI
import NIOCore

/// Watches an upstream answer as it passes through, without changing it: the response ids it issues, the
/// tokens it reports, and whether a stream reached its final event.
struct ResponseObserver: Sendable {
    let endpoint: ProxyEndpoint
    private var parser = ServerSentEventParser()
    /// Response ids issued (`resp_…`), to record with their owner.
    private(set) var responseIDs: [String] = []
    private(set) var inputTokens = 0
    private(set) var outputTokens = 0
    /// Whether a stream's final event went by (`chat.end`, `[DONE]`, `response.completed`, `message_stop`).
    private(set) var sawFinalEvent = false

    /// The bytes of `"<finalFlag>":true`, which mark the last event of a stream that ends on a field.
    private let finalMarker: ASCII.Pattern?
    /// What an unnamed event that may carry usage or its type holds (searched in every such event).
    private static let usageKey: ASCII.Pattern = "\"usage\""
    private static let typeKey: ASCII.Pattern = "\"type\""

    init(endpoint: ProxyEndpoint) {
        self.endpoint = endpoint
        self.finalMarker = endpoint.finalFlag.map { ASCII.Pattern(Array("\"\($0)\":true".utf8)) }
    }

    /// The members of a whole answer that ``observe(json:)`` reads (those `absorb` looks at): a successful answer
    /// is parsed for them only (`JSONValue(parsing:keeping:)`), not for its content. A member read there must be
    /// named here; `ResponseObserverTests` checks that the observer sees the same in both.
    static let wholeAnswerMembers = JSONValue.MemberNames([
        "result", "response", "message", "response_id", "object", "id", "stats", "tokens_predicted", "tokens_evaluated",
        "usage", "job_id",
    ])

    /// Reads a whole JSON answer.
    mutating func observe(json: JSONValue) {
        absorb(json)
    }

    /// Reads the next piece of a stream.
    mutating func observe(streamPiece: ByteBuffer) {
        let keep = keep
        for event in parser.feed(streamPiece.readableBytesView, keeping: keep) { observe(event) }
    }

    /// Reads what is left when the stream ends: a last event need not be followed by its blank line.
    mutating func finishStream() {
        let keep = keep
        for event in parser.finish(keeping: keep) { observe(event) }
    }

    /// Which events the parser makes: those ``observe(_:)`` may learn something from, judged on their bytes (an
    /// event left out costs no string and no copy; nearly every event of a stream is a token, left out).
    /// Exactly those for which ``observe(_:)`` does anything: `ResponseObserverTests` checks both see the same.
    private var keep: ServerSentEventParser.Keep {
        let endpoint = endpoint
        let finalMarker = finalMarker
        return { name, data in
            // Its length first: nearly every event is longer (`elementsEqual` went through two iterators, about 120
            // instructions an event).
            if data.count == 6, data.elementsEqual("[DONE]".utf8) { return true }
            if endpoint.finalFlag != nil, let finalMarker, ASCII.contains(data, finalMarker) { return true }
            if let name {
                return endpoint.finalEvents.contains(name) || name == "message_start" || name == "message_delta" || name == "response.created"
            }
            return ASCII.contains(data, Self.usageKey) || ASCII.contains(data, Self.typeKey)
        }
    }

    /// Reads one event of a stream (internal for the tests, which compare it with the parser's filter).
    mutating func observe(_ event: ServerSentEvent) {
        if event.data == "[DONE]" {
            sawFinalEvent = true
            return
        }
        // Parsing every token's JSON would cost more than relaying it: only events that can carry ids,
        // usage or the end are parsed.
        let name = event.event
        if let name, endpoint.finalEvents.contains(name) { sawFinalEvent = true }
        if let flag = endpoint.finalFlag, let finalMarker, ASCII.contains(event.data, finalMarker) {
            guard let json = try? JSONValue(parsing: Array(event.data.utf8)) else { return }
            if json[flag]?.boolValue == true { sawFinalEvent = true }
            absorb(json)
            return
        }
        let interesting = name.map { endpoint.finalEvents.contains($0) || $0 == "message_start" || $0 == "message_delta" || $0 == "response.created" }
            ?? (ASCII.contains(event.data, Self.usageKey) || ASCII.contains(event.data, Self.typeKey))
        guard interesting, let json = try? JSONValue(parsing: Array(event.data.utf8)) else { return }
        if let type = json["type"]?.stringValue, endpoint.finalEvents.contains(type) { sawFinalEvent = true }
        absorb(json)
    }

    /// Finds ids and usage in LM Studio (`stats`, `response_id`, `result`), OpenAI (`usage`), Responses
    /// (`response`, `id`), Anthropic (`message`, `usage`) and llama.cpp (`tokens_evaluated`,
    /// `tokens_predicted`) shapes. The object's members are walked once, each name compared, rather than each of
    /// the dozen names looked up (a string hashed for each: about 3,000 instructions an answer); the later
    /// findings still override the earlier ones in the order below.
    private mutating func absorb(_ json: JSONValue) {
        guard case .object(let members) = json else { return }
        var result, response, message, responseID, object, id, stats, predicted, evaluated, usage: JSONValue?
        for (name, value) in members {
            switch name {
            case "result": result = value
            case "response": response = value
            case "message": message = value
            case "response_id": responseID = value
            case "object": object = value
            case "id": id = value
            case "stats": stats = value
            case "tokens_predicted": predicted = value
            case "tokens_evaluated": evaluated = value
            case "usage": usage = value
            default: break
            }
        }
        if let result { absorb(result) }
        if let response, response["object"]?.stringValue == "response" { absorb(response) }
        if let message, message["type"]?.stringValue == "message" { absorb(message) }
        if let id = responseID?.stringValue { note(id) }
        if endpoint.isStateful, object?.stringValue == "response", let id = id?.stringValue { note(id) }
        if let stats {
            let (input, output) = Self.counts(stats, input: "input_tokens", output: "total_output_tokens")
            inputTokens = input ?? inputTokens
            outputTokens = output ?? outputTokens
        }
        if let predicted = predicted?.intValue { outputTokens = predicted }
        if let evaluated = evaluated?.intValue { inputTokens = evaluated }
        if let usage, usage != .null {
            let (prompt, completion) = Self.counts(usage, input: "prompt_tokens", output: "completion_tokens")
            let (input, output) = (prompt == nil || completion == nil)
                ? Self.counts(usage, input: "input_tokens", output: "output_tokens") : (nil, nil)
            inputTokens = prompt ?? input ?? inputTokens
            outputTokens = completion ?? output ?? outputTokens
        }
    }

    /// The integers an object holds under two names (`nil` for one it lacks or that is not an integer), in one
    /// walk of its members.
    private static func counts(_ json: JSONValue, input: String, output: String) -> (input: Int?, output: Int?) {
        guard case .object(let members) = json else { return (nil, nil) }
        var found: (input: Int?, output: Int?) = (nil, nil)
        for (name, value) in members {
            if name == input { found.input = value.intValue } else if name == output { found.output = value.intValue }
        }
        return found
    }

    private mutating func note(_ id: String) {
        if !responseIDs.contains(id) { responseIDs.append(id) }
    }
}
