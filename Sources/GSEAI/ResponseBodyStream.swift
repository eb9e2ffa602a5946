import AsyncHTTPClient
import NIOCore

/// A response body as it arrives, piece by piece.
///
/// AsyncHTTPClient's request deadline ends at the response head; the client's connection read timeout
/// then limits the silence between pieces, and shows here as ``GSEAIError/timeout(_:)`` (`.idle`).
/// Abandoning the iteration (or cancelling the task) cancels the upstream request.
public struct ResponseBodyStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    private let body: HTTPClientResponse.Body

    init(body: HTTPClientResponse.Body) {
        self.body = body
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(upstream: body.makeAsyncIterator())
    }

    /// Reads the whole body, failing when it exceeds `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        for try await var piece in self {
            guard collected.readableBytes + piece.readableBytes <= limit else {
                throw GSEAIError.responseTooLarge(limit: limit)
            }
            collected.writeBuffer(&piece)
        }
        return collected
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        private var upstream: HTTPClientResponse.Body.AsyncIterator

        fileprivate init(upstream: HTTPClientResponse.Body.AsyncIterator) {
            self.upstream = upstream
        }

        public mutating func next() async throws -> ByteBuffer? {
            do {
                return try await upstream.next()
            } catch let error as HTTPClientError where error == .readTimeout {
                throw GSEAIError.timeout(.idle)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // The connection broke after the head: the body is incomplete.
                throw GSEAIError.streamInterrupted
            }
        }
    }
}
