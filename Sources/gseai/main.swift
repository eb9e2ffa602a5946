import ArgumentParser
import NIOCore
import NIOPosix

// Swift's tasks run on SwiftNIO's event loops (`MultiThreadedEventLoopGroup.singleton`, one thread per core)
// instead of a pool of their own: a request's handler, its database statements and its upstream call then
// hand over to each other on the same threads, without waking another thread at each step (bench/README.md,
// "One pool of threads"). It must come first, before any task is made. Blocking work stays off these
// threads: password hashing runs on NIO's thread pool, nothing here calls `wait()`.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
// From top-level code, `GSEAICommand.main()` resolves to ParsableCommand's synchronous `main()`, which prints
// the help of an asynchronous command instead of running it; inside an async function it is the async one.
func start() async { await GSEAICommand.main() }
await start()
