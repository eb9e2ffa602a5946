import NIOCore

package extension EventLoop {
    /// Runs `work` on this event loop: at once when already on it, else queued (in order with what else is
    /// queued from elsewhere). For the transport's connections and the gateway's handlers, whose state lives on
    /// their loop.
    func executeHere(_ work: @escaping @Sendable () -> Void) {
        if inEventLoop {
            work()
        } else {
            execute(work)
        }
    }
}
