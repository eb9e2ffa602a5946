import HummingbirdBcrypt
import NIOPosix

/// Hashes and checks passwords with bcrypt on a thread pool, never on an event loop.
public struct PasswordHasher: Sendable {
    /// The bcrypt cost; 12 in production, lower in tests.
    public var cost: UInt8
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
        let target = hash ?? Self.dummyHash
        let matches = (try? await threadPool.runIfActive { Bcrypt.verify(password, hash: target) }) ?? false
        return hash != nil && matches
    }

    private static let dummyHash = Bcrypt.hash("not a real password", cost: 10)
}
