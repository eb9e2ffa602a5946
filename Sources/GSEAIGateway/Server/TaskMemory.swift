import CGSEAIRuntime

/// Room made at once for a task's frames.
///
/// Swift's runtime gives each task's asynchronous frames memory from slabs: the first inside the task, each later one
/// `malloc`'d when a frame does not fit the slab in use, at least 984 bytes, and kept for the task's later frames until
/// it ends. A forwarded request's task has frames of a few kilobytes each (the middleware, the checks, the
/// admission, the upstream exchange): measured with callgrind, about ten slabs per request, eighteen `malloc`s and as
/// many `free`s with the slabs made again larger, about 8,000 instructions of a request's 309,000
/// (bench/README.md, "Fewer hops, the connection's state in the codec").
///
/// ``reserve(_:)`` asks the task's allocator for `bytes` at once and gives them back: the slab made for them stays
/// with the task, empty, and the frames that follow are laid out in it, one after the other, as on a stack: one
/// `malloc` and one `free` per task. It calls the runtime's own entry points (`swift_task_alloc`,
/// `swift_task_dealloc`, what compiled asynchronous code calls for its frames), from C (`CGSEAIRuntime`: Swift code
/// may not name the runtime's symbols), in a last-in, first-out pair as they require, and only inside a task (outside
/// one, the runtime's fallback allocator is not for concurrent use).
enum TaskMemory {
    /// A forwarded request's task: 12 KiB was measured too little (ten slabs a request still), 32 KiB enough (one).
    /// The room is held while the task lives: a whole answer's request holds it while its upstream works (about 12 KiB
    /// more than its frames took in slabs); a stream's does not (its task ends when the stream starts).
    static let forwardedRequest = 32 << 10

    /// Makes room for `bytes` of the current task's frames; whether it asked the runtime (not outside a task).
    @discardableResult
    static func reserve(_ bytes: Int) -> Bool {
        guard bytes > 0, withUnsafeCurrentTask(body: { $0 != nil }) else { return false }
        gseai_task_reserve(bytes)
        return true
    }
}
