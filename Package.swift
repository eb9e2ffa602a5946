// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "gseai",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "GSEAI", targets: ["GSEAI"]),
        .library(name: "GSEAIGateway", targets: ["GSEAIGateway"]),
        .executable(name: "gseai", targets: ["gseai"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // The client core: knows nothing of the server.
        .target(
            name: "GSEAI",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The web application in front of the upstream (see issue 3).
        .target(
            name: "GSEAIGateway",
            dependencies: [
                "GSEAI",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // The thin command-line entry point.
        .executableTarget(
            name: "gseai",
            dependencies: [
                "GSEAI",
                "GSEAIGateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // A stub GSE AI upstream shared by the tests of every target.
        .target(
            name: "GSEAITestSupport",
            dependencies: [
                "GSEAI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/GSEAITestSupport"
        ),
        // The stub upstream as a process, for the end-to-end suite and the benchmarks.
        .executableTarget(
            name: "gseai-stub",
            dependencies: [
                "GSEAITestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/StubServer"
        ),
        .testTarget(
            name: "GSEAITests",
            dependencies: [
                "GSEAI",
                "GSEAITestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "gseaiCLITests",
            dependencies: ["GSEAI", "GSEAITestSupport", "gseai"]
        ),
    ]
)
