import HummingbirdBcrypt
import NIOPosix
import Synchronization

/// Hashes and checks passwords with bcrypt on a thread pool, never on an event loop.
public struct PasswordHasher: Sendable {
    /// The bcrypt cost; 12 in production, lower in tests.
    public let cost: UInt8
    private let threadPool: NIOThreadPool

    public init(cost: UInt8 = 12, threadPool: NIOThreadPool = .singleton) {
        self.cost = cost
        self.threadPool = threadPool
    }

    /// The bcrypt hash of a password.
    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await threadPool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    /// Whether `password` matches `hash`. Without a hash, a dummy check still spends the same time, so
    /// that response times do not reveal which usernames exist.
    public func verify(_ password: String, hash: String?) async -> Bool {
        var target = hash
        if target == nil { target = await dummyHash() }
        guard let target else { return false }
        let matches = (try? await threadPool.runIfActive { Bcrypt.verify(password, hash: target) }) ?? false
        return hash != nil && matches
    }

    /// A hash of this hasher's cost, so that checking it takes as long as checking a real one.
    private func dummyHash() async -> String? {
        let cost = self.cost
        if let known = Self.dummyHashes.withLock({ $0[cost] }) { return known }
        guard let made = try? await threadPool.runIfActive({ Bcrypt.hash("not a real password", cost: cost) }) else { return nil }
        Self.dummyHashes.withLock { $0[cost] = made }
        return made
    }

    private static let dummyHashes = Mutex<[UInt8: String]>([:])
}
