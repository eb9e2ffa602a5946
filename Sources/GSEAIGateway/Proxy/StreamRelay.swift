import GSEAI
import Hummingbird
import NIOCore

/// Relays a stream piece by piece as it arrives, watching it go by; when the upstream fails or stops
/// early, ends the caller's stream with an error event in their API's form.
final class StreamRelay: @unchecked Sendable {
    // Unchecked: the writer is used by one task at a time (the relay's), never concurrently.
    private var writer: any ResponseBodyWriter
    private var observer: ResponseObserver
    private let endpoint: ProxyEndpoint
    private let recorder: UsageRecorder
    private let metrics: GatewayMetrics
    /// The caller's connection, where a ``CallerPump`` writes the pieces when the body can be pushed.
    private let caller: (any Channel)?

    init(writer: any ResponseBodyWriter, endpoint: ProxyEndpoint, recorder: UsageRecorder, metrics: GatewayMetrics,
         caller: (any Channel)?) {
        self.writer = writer
        self.observer = ResponseObserver(endpoint: endpoint)
        self.endpoint = endpoint
        self.recorder = recorder
        self.metrics = metrics
        self.caller = caller
    }

    /// Relays `body`: pushed piece by piece to the caller's connection by a ``CallerPump`` (the NIO
    /// transport's bodies, on the gateway's own connections), else read here piece after piece.
    func run(_ body: ResponseBodyStream) async throws {
        if let caller, let pump = await CallerPump.start(body, to: caller, endpoint: endpoint) {
            try await relay(pushedBy: pump, body)
        } else {
            try await relay(reading: body)
        }
    }

    /// Every stream keeps this function's asynchronous frame while it is open, so what is seldom needed (the
    /// usage written, an error event) sits in functions of its own, whose frames exist only while they run.
    @inline(never)
    private func relay(pushedBy pump: CallerPump, _ body: ResponseBodyStream) async throws {
        defer {
            pump.stop()
            // Ends the upstream request if the relay stops before the body's end (nothing when it has ended).
            body.cancel()
        }
        var recorded = false
        do {
            signals: while true {
                let signal = await withTaskCancellationHandler {
                    await pump.next()
                } onCancel: {
                    body.cancel()
                }
                observer = pump.observer
                switch signal {
                case .record:
                    try await record()
                    recorded = true
                    pump.recorded()
                case .ended(let ending):
                    try ending.get()
                    break signals
                }
            }
        } catch {
            return try await end(after: error, recorded: recorded)
        }
        try await end(after: nil, recorded: recorded)
    }

    @inline(never)
    private func relay(reading body: ResponseBodyStream) async throws {
        var recorded = false
        do {
            for try await piece in body {
                observer.observe(streamPiece: piece)
                if observer.sawFinalEvent && !recorded {
                    // Written before the caller sees the final event, which carries the response id and
                    // ends the stream for the clients: an acknowledged id is never lost, and a caller who
                    // continues from it at once finds it recorded.
                    try await record()
                    recorded = true
                }
                try await writer.write(piece)
            }
        } catch {
            return try await end(after: error, recorded: recorded)
        }
        try await end(after: nil, recorded: recorded)
    }

    /// Ends the caller's stream once the body has ended (`error` nil) or failed: an error event in the caller's
    /// API's form when the upstream failed or stopped before its final event, the usage recorded if it was not
    /// yet, then the end. A caller who left (or could not be written to) gets nothing more: what was spent is
    /// recorded, and the error goes on.
    @inline(never)
    private func end(after error: (any Error)?, recorded: Bool) async throws {
        var failure: GSEAIError?
        switch error {
        case nil:
            observer.finishStream()
            if !observer.sawFinalEvent { failure = .streamInterrupted }
        case let error as GSEAIError:
            failure = error
        case let error?:
            if !recorded { try? await record() }
            throw error
        }
        if let failure { try await fail(failure) }
        // Written before the stream's end: an acknowledged response id is never lost.
        if !recorded { try await record() }
        try await writer.finish(nil)
    }

    @inline(never)
    private func record() async throws {
        try await recorder.record(observer)
    }

    /// Ends the caller's stream with an error event in their API's form.
    @inline(never)
    private func fail(_ failure: GSEAIError) async throws {
        metrics.recordUpstreamError(kind: ProxyController.errorKind(failure))
        let error = GatewayError.upstream(failure)
        try await writer.write(ByteBuffer(string: StreamErrorEvents.render(error, endpoint: endpoint)))
    }
}

/// Writes what a stream's caller needs when the upstream fails mid-way, in their API's own form.
enum StreamErrorEvents {
    static func render(_ error: GatewayError, endpoint: ProxyEndpoint) -> String {
        switch endpoint.surface {
        case .lmstudio:
            // LM Studio always ends a stream with chat.end, also after an error.
            let event: JSONValue = ["type": "error", "error": ["type": .string(error.kind.rawValue), "message": .string(error.message)]]
            let end: JSONValue = ["type": "chat.end", "result": ["output": [], "error": ["message": .string(error.message)]]]
            return ServerSentEvent(event: "error", data: event.jsonString).encoded
                + ServerSentEvent(event: "chat.end", data: end.jsonString).encoded
        case .anthropic:
            return ServerSentEvent(event: "error", data: endpoint.surface.errorBody(error.kind, error.message, status: error.status).jsonString).encoded
        case .openAI where endpoint.isResponsesAPI:
            let event: JSONValue = ["type": "error", "code": .string(error.kind.rawValue), "message": .string(error.message), "param": nil]
            return ServerSentEvent(event: "error", data: event.jsonString).encoded
        default:
            return ServerSentEvent(data: endpoint.surface.errorBody(error.kind, error.message, status: error.status).jsonString).encoded
        }
    }
}
