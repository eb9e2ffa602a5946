import Hummingbird

/// Answers each request (the middleware, the router, the handler) in a child task of the connection's, which
/// ends when the answer's head is ready; the answer's body is then written by the connection's task.
///
/// Why: a task keeps the memory of its deepest stack of asynchronous frames until it ends (Swift's task
/// allocator frees its slabs only with the task). A connection's task lives as long as the connection, and
/// a stream's connection lives as long as the stream; with the handling done in the connection's own task,
/// every open stream kept about 40 KiB of frames that only the handling had needed (the middleware, the
/// checks, the admission). In a child task those are freed as soon as the head is ready, and the stream
/// keeps only the frames of writing its body. The cost is one child task per request (`bench/README.md`).
struct SeparateTaskResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context: Sendable {
    typealias Context = Inner.Context
    let inner: Inner

    init(_ inner: Inner) {
        self.inner = inner
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        async let response = inner.respond(to: request, context: context)
        return try await response
    }
}
