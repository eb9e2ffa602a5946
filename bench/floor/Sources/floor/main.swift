// The floor of the gateway's stack, for bench/bench.py --floor.
//
//   floor hello [--port N] --json FILE --sse FILE [--executor pool|eventloop|takeover]
//       Hummingbird alone: POST /v1/chat/completions reads the body and answers fixed bytes (the SSE bytes for
//       `Accept: text/event-stream` or `"stream":true`, else the JSON).
//   floor proxy [--port N] --upstream URL [--token T] [--executor pool|eventloop|takeover]
//       Hummingbird and one shared AsyncHTTPClient: forwards method, path, Content-Type, Accept and the body,
//       with `Authorization: Bearer T`, and streams the upstream's answer back. No authentication, no parsing.
//       --client nio: the upstream call made with the lean SwiftNIO client of NIOUpstream.swift instead (a
//       keep-alive pool per event loop, the request's own loop's pool), the answer streamed with backpressure.
//   floor nio-proxy [--port N] --upstream URL [--token T]
//       The same forwarding in pure SwiftNIO (NIOUpstream.swift): NIO's HTTP/1 server codec, the lean client's
//       pools, every part of the answer written back as it comes; no Swift concurrency.
//
// --executor: where request handlers run.
//   pool       Swift concurrency's global pool (Hummingbird's default; the gateway's setup).
//   eventloop  each connection's handler prefers a task executor that is the connection's own NIO event loop
//              (`withTaskExecutorPreference`), so reading, answering and the AsyncHTTPClient call
//              (whose `eventLoopGroup.any()` is then that loop) stay on one thread.
//   takeover   NIO's event loops become Swift concurrency's global executor
//              (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`).
//
// Prints "floor listening on http://127.0.0.1:PORT" once it listens.

import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

struct Options {
    var mode = ""
    var port = 0
    var upstream = ""
    var token = "stub-token"
    var jsonFile = ""
    var sseFile = ""
    var executor = "pool"
    var client = "ahc"

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments.makeIterator()
        func value(_ name: String) -> String {
            guard let value = rest.next() else { fail("\(name) needs a value") }
            return value
        }
        while let argument = rest.next() {
            switch argument {
            case "--port": options.port = Int(value(argument)) ?? 0
            case "--upstream": options.upstream = value(argument)
            case "--token": options.token = value(argument)
            case "--json": options.jsonFile = value(argument)
            case "--sse": options.sseFile = value(argument)
            case "--executor": options.executor = value(argument)
            case "--client": options.client = value(argument)
            case "hello", "proxy", "nio-proxy": options.mode = argument
            default: fail("unknown argument \(argument)")
            }
        }
        guard ["hello", "proxy", "nio-proxy"].contains(options.mode) else { fail("the mode is hello, proxy or nio-proxy") }
        guard ["ahc", "nio"].contains(options.client) else { fail("--client is ahc or nio") }
        guard ["pool", "eventloop", "takeover"].contains(options.executor) else { fail("--executor is pool, eventloop or takeover") }
        if options.mode == "hello", options.jsonFile.isEmpty || options.sseFile.isEmpty { fail("hello needs --json and --sse") }
        if options.mode != "hello", options.upstream.isEmpty { fail("\(options.mode) needs --upstream") }
        while options.upstream.hasSuffix("/") { options.upstream.removeLast() }
        return options
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("floor: \(message)\n".utf8))
    exit(2)
}

/// A task executor that runs jobs on one NIO event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// HTTP/1 connections whose handler (and every child task of it) prefers the connection's event loop.
struct EventLoopPreferringHTTP1: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    /// One executor per event loop of the group.
    let executors: [ObjectIdentifier: EventLoopTaskExecutor]

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        let loop = value.channel.eventLoop
        let executor = executors[ObjectIdentifier(loop)] ?? EventLoopTaskExecutor(loop)
        await withTaskExecutorPreference(executor) {
            await inner.handle(value: value, logger: logger)
        }
    }
}

extension ByteBufferView {
    /// Whether `needle` occurs in these bytes.
    func contains(_ needle: [UInt8]) -> Bool {
        guard let first = needle.first, count >= needle.count else { return false }
        var index = startIndex
        let last = endIndex - needle.count
        while index <= last {
            if self[index] == first, self[index..<index + needle.count].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if options.executor == "takeover" {
    guard NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() else {
        fail("could not install NIO's event loops as the global executor")
    }
}

let group = MultiThreadedEventLoopGroup.singleton
if options.mode == "nio-proxy" {
    runNIOProxy(group: group, port: options.port,
                pools: UpstreamPools(group: group, target: UpstreamTarget(url: options.upstream, token: options.token)))
}
var logger = Logger(label: "floor")
logger.logLevel = .warning
let route = RouterPath("/v1/chat/completions")
let router = Router(context: FloorContext.self)
var client: HTTPClient?

switch options.mode {
case "hello":
    guard let json = FileManager.default.contents(atPath: options.jsonFile),
        let sse = FileManager.default.contents(atPath: options.sseFile)
    else { fail("cannot read \(options.jsonFile) or \(options.sseFile)") }
    let jsonBytes = ByteBuffer(bytes: json)
    let sseBytes = ByteBuffer(bytes: sse)
    let streamTrue = Array(#""stream":true"#.utf8)
    router.on(route, method: .post) { request, _ -> Response in
        let body = try await request.body.collect(upTo: 1 << 20)
        if request.headers[.accept]?.contains("event-stream") == true || body.readableBytesView.contains(streamTrue) {
            return Response(status: .ok, headers: [.contentType: "text/event-stream"], body: .init(byteBuffer: sseBytes))
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: jsonBytes))
    }

case _ where options.client == "nio":
    let pools = UpstreamPools(group: group, target: UpstreamTarget(url: options.upstream, token: options.token))
    router.on(route, method: .post) { request, context -> Response in
        let body = try await request.body.collect(upTo: 1 << 20)
        let head = pools.pool(for: context.eventLoop).target.requestHead(
            method: HTTPMethod(rawValue: request.method.rawValue), uri: request.uri.description,
            contentType: request.headers[.contentType], accept: request.headers[.accept], length: body.readableBytes)
        let answer = try await pools.send(head, body: body, on: context.eventLoop)
        var headers = HTTPFields()
        if let type = answer.head.headers.first(name: "content-type") { headers[.contentType] = type }
        let length = answer.head.headers.first(name: "content-length").flatMap { Int($0) }
        return Response(status: .init(code: Int(answer.head.status.code)), headers: headers,
                        body: ResponseBody(contentLength: length) { writer in
                            for try await piece in answer.body { try await writer.write(piece) }
                            try await writer.finish(nil)
                        })
    }

default:
    var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10), read: .seconds(60)))
    // As the gateway: up to 64 connections to the upstream.
    configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
    let shared = HTTPClient(eventLoopGroup: group, configuration: configuration)
    client = shared
    let upstream = options.upstream
    let authorization = "Bearer \(options.token)"
    router.on(route, method: .post) { request, _ -> Response in
        var outgoing = HTTPClientRequest(url: upstream + request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for name in [HTTPField.Name.contentType, .accept] {
            if let value = request.headers[name] { outgoing.headers.add(name: name.rawName, value: value) }
        }
        outgoing.headers.add(name: "Authorization", value: authorization)
        outgoing.body = .bytes(try await request.body.collect(upTo: 1 << 20))
        let response = try await shared.execute(outgoing, deadline: .now() + .seconds(60))
        var headers = HTTPFields()
        if let type = response.headers.first(name: "content-type") { headers[.contentType] = type }
        let length = response.headers.first(name: "content-length").flatMap { Int($0) }
        let body = response.body
        return Response(status: .init(code: Int(response.status.code)), headers: headers,
                        body: ResponseBody(contentLength: length) { writer in
                            for try await piece in body { try await writer.write(piece) }
                            try await writer.finish(nil)
                        })
    }
}

let server: HTTPServerBuilder
if options.executor == "eventloop" {
    var executors: [ObjectIdentifier: EventLoopTaskExecutor] = [:]
    for loop in group.makeIterator() { executors[ObjectIdentifier(loop)] = EventLoopTaskExecutor(loop) }
    let table = executors
    server = HTTPServerBuilder { responder in
        EventLoopPreferringHTTP1(inner: HTTP1Channel(responder: responder), executors: table)
    }
} else {
    server = .http1()
}

let app = Application(
    router: router,
    server: server,
    configuration: .init(address: .hostname("127.0.0.1", port: options.port), serverName: "floor"),
    onServerRunning: { channel in
        FileHandle.standardOutput.write(Data("floor listening on http://127.0.0.1:\(channel.localAddress?.port ?? 0)\n".utf8))
    },
    eventLoopGroupProvider: .shared(group),
    logger: logger
)
do {
    try await app.runService()
} catch {
    fail("\(error)")
}
// Reached after a signal stopped the server.
if let client {
    try? await client.shutdown().get()
}
