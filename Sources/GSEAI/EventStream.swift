import Foundation
import NIOCore

/// The Server-Sent Events of a response body, parsed as they arrive.
public struct ServerSentEventStream<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable
where Base.Element == ByteBuffer {
    public typealias Element = ServerSentEvent

    private let base: Base

    /// Parses the events of a stream of body pieces.
    public init(_ base: Base) { self.base = base }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator())
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        var parser = ServerSentEventParser()
        var pending: [ServerSentEvent] = []
        var pendingIndex = 0
        var finished = false

        public mutating func next() async throws -> ServerSentEvent? {
            while true {
                if pendingIndex < pending.count {
                    defer { pendingIndex += 1 }
                    return pending[pendingIndex]
                }
                if finished { return nil }
                pending.removeAll(keepingCapacity: true)
                pendingIndex = 0
                if let piece = try await base.next() {
                    pending = parser.feed(piece.readableBytesView)
                    if parser.overflowed { throw GSEAIError.responseTooLarge(limit: parser.maxEventBytes) }
                } else {
                    finished = true
                    pending = parser.finish()
                }
            }
        }
    }
}

/// What a protocol makes of one Server-Sent Event.
public enum EventStep<Event: Sendable>: Sendable {
    /// Deliver this event and go on.
    case event(Event)
    /// Ignore this one (a keep-alive, say) and go on.
    case skip
    /// The stream is complete; deliver this last event, if any.
    case finish(Event?)
}

/// A typed event stream: a protocol's decoding of Server-Sent Events, which ends at the protocol's
/// final event and fails with ``GSEAIError/streamInterrupted`` when the body ends before it.
public struct EventStream<Event: Sendable>: AsyncSequence, Sendable {
    public typealias Element = Event

    private let body: ResponseBodyStream
    private let events: ServerSentEventStream<ResponseBodyStream>
    private let decode: @Sendable (ServerSentEvent) throws -> EventStep<Event>

    init(
        body: ResponseBodyStream,
        decode: @escaping @Sendable (ServerSentEvent) throws -> EventStep<Event>
    ) {
        self.body = body
        self.events = ServerSentEventStream(body)
        self.decode = decode
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(body: body, events: events.makeAsyncIterator(), decode: decode)
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let body: ResponseBodyStream
        var events: ServerSentEventStream<ResponseBodyStream>.AsyncIterator
        let decode: @Sendable (ServerSentEvent) throws -> EventStep<Event>
        var done = false

        public mutating func next() async throws -> Event? {
            if done {
                // After the final event, what may follow it (the body's end) is awaited, so that the connection
                // carries the next request.
                await body.discardRest()
                return nil
            }
            while !done {
                guard let event = try await events.next() else {
                    throw GSEAIError.streamInterrupted
                }
                switch try decode(event) {
                case .event(let value): return value
                case .skip: continue
                case .finish(let value):
                    done = true
                    if let value { return value }
                    await body.discardRest()
                }
            }
            return nil
        }
    }
}

extension ServerSentEvent {
    /// The `data` parsed as a JSON object of type `T`.
    func decodeData<T: JSONObject>(as type: T.Type) throws -> T {
        do {
            return try JSONCoding.decode(T.self, from: data.utf8)
        } catch {
            throw GSEAIError.invalidResponse("event data is not a JSON object: \(data.prefix(200))")
        }
    }
}
