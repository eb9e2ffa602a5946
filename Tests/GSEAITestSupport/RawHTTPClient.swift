import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// An HTTP/1.1 client of raw bytes, for tests that need what a library client hides: requests pipelined in one
/// write, a body sent in pieces, bytes that are not HTTP, a caller that reads nothing until told. It keeps what
/// arrives and reads answers out of it (by `Content-Length` or chunks).
public final class RawHTTPClient: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer

    private let bytes = Mutex<[UInt8]>([])
    private let closed = Mutex(false)
    private let channel = Mutex<(any Channel)?>(nil)

    private init() {}

    /// A connection to `address`. `receiveBuffer` sets the socket's receive buffer (small, for backpressure);
    /// `reading: false` reads nothing until ``startReading()``.
    public static func connect(to address: SocketAddress, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                               receiveBuffer: Int? = nil, reading: Bool = true) async throws -> RawHTTPClient {
        let client = RawHTTPClient()
        var bootstrap = ClientBootstrap(group: group).channelOption(.autoRead, value: reading)
        if let receiveBuffer { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer)) }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(client) }
            }
            .connect(to: address).get()
        client.channel.withLock { $0 = channel }
        return client
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closed.withLock { $0 = true }
        context.fireChannelInactive()
    }

    /// What has arrived, as text.
    public var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }

    /// Whether what has arrived ends with `suffix` (without decoding all of it).
    public func received(endingWith suffix: String) -> Bool {
        bytes.withLock { $0.suffix(suffix.utf8.count).elementsEqual(suffix.utf8) }
    }

    /// Whether the server closed the connection (or the client did).
    public var isClosed: Bool { closed.withLock { $0 } }

    /// The connection's own address (the server's side sees it as the remote one).
    public var localAddress: SocketAddress? { channel.withLock { $0 }?.localAddress }

    public func send(_ text: String) async throws {
        try await channel.withLock { $0 }!.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// Starts reading, for a client connected with `reading: false`.
    public func startReading() {
        guard let channel = channel.withLock({ $0 }) else { return }
        channel.setOption(.autoRead, value: true).whenSuccess { channel.read() }
    }

    public func close() async {
        try? await channel.withLock { $0 }?.close()
    }

    /// Waits up to `limit` for the connection to close; whether it did.
    public func waitUntilClosed(within limit: Duration = .seconds(5)) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while !isClosed, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return isClosed
    }

    public struct Answer: Sendable {
        public var status: Int
        /// By lower-cased name.
        public var headers: [String: String]
        public var body: String
    }

    /// Waits up to `limit` for `count` whole answers; those that came (fewer when they did not).
    public func answers(_ count: Int, within limit: Duration = .seconds(5)) async throws -> [Answer] {
        let deadline = ContinuousClock.now + limit
        var answers = Self.parse(bytes.withLock { $0 })
        while answers.count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            answers = Self.parse(bytes.withLock { $0 })
        }
        return answers
    }

    /// The whole answers in `bytes`, in order.
    public static func parse(_ bytes: [UInt8]) -> [Answer] {
        var answers: [Answer] = []
        var rest = bytes[...]
        while let headEnd = rest.firstRange(of: Array("\r\n\r\n".utf8)) {
            let lines = String(decoding: rest[..<headEnd.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            let statusLine = lines[0].split(separator: " ")
            let status = statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            var body: [UInt8] = []
            var after = rest[headEnd.upperBound...]
            if let length = headers["content-length"].flatMap({ Int($0) }) {
                guard after.count >= length else { break }
                body = Array(after.prefix(length))
                after = after.dropFirst(length)
            } else if headers["transfer-encoding"] == "chunked" {
                var complete = false
                while let lineEnd = after.firstRange(of: Array("\r\n".utf8)),
                    let size = Int(String(decoding: after[..<lineEnd.lowerBound], as: UTF8.self), radix: 16)
                {
                    let start = lineEnd.upperBound
                    guard after.distance(from: start, to: after.endIndex) >= size + 2 else { break }
                    body += after[start..<after.index(start, offsetBy: size)]
                    after = after[after.index(start, offsetBy: size + 2)...]
                    if size == 0 {
                        complete = true
                        break
                    }
                }
                guard complete else { break }
            }
            answers.append(Answer(status: status, headers: headers, body: String(decoding: body, as: UTF8.self)))
            rest = after
        }
        return answers
    }
}
