// swift-tools-version: 6.2
import PackageDescription

// How `gseai` is linked on Linux (bench/README.md, "How `gseai` is linked", has the measurements): Swift's
// runtime and Foundation linked in (`-static-stdlib`, with the libraries Foundation's static archives need), so
// the loader binds no symbols in six shared libraries at start; lld, for relative relocations packed into a
// table (`DT_RELR`, glibc 2.36 and later); and the code `gseai serve` runs to start and to answer placed first
// (link-order.txt, written by `bench/run --link-order`), so an idle gateway touches few pages of code; no
// symbol exported but those the shared C libraries need (`-static-stdlib` exports them all, for `dladdr` in
// crash reports: 1.3 MB of symbol table the loader searches at start). Release
// builds only: the test bundle links this target's code too (gseaiCLITests), and XCTest and Swift Testing
// have no static archives. scripts/test runs the end-to-end suite against the release build.
let gseaiLinkerFlags = [
    "-static-stdlib",
    "-lFoundationInternationalization", "-l_FoundationICU", "-lCoreFoundation", "-l_FoundationCShims",
    "-l_FoundationCollections", "-lswiftSynchronization",
    "-use-ld=lld",
    "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
    "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/gseai/link-order.txt",
    "-Xlinker", "--no-warn-symbol-ordering",
    "-Xlinker", "--no-export-dynamic",
]

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
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/vapor/sql-kit", from: "3.36.0"),
        .package(url: "https://github.com/vapor/sqlite-kit", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-kit", from: "2.17.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    ],
    targets: [
        // The wire formats read from outside (JSON, Server-Sent Events, data URLs, image headers, form queries,
        // CSV rosters): no dependencies, so that the fuzzer builds them alone in a minute.
        .target(name: "GSEAIFormats"),
        // The client core: knows nothing of the server.
        .target(
            name: "GSEAI",
            dependencies: [
                "GSEAIFormats",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The web application in front of the upstream (see issue 3).
        // The Swift runtime's task allocator, called from C (`TaskMemory` in GSEAIGateway).
        .target(name: "CGSEAIRuntime"),
        .target(
            name: "GSEAIGateway",
            dependencies: [
                "GSEAI",
                "CGSEAIRuntime",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            // The web page, copied beside the executable so that it is found from any working directory
            // (the repository's `Public` is a link to this folder).
            resources: [.copy("Public")],
            swiftSettings: [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        // The thin command-line entry point.
        .executableTarget(
            name: "gseai",
            dependencies: [
                "GSEAI",
                "GSEAIGateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["link-order.txt"],
            linkerSettings: [.unsafeFlags(gseaiLinkerFlags, .when(platforms: [.linux], configuration: .release))]
        ),
        // A stub GSE AI upstream shared by the tests of every target.
        .target(
            name: "GSEAITestSupport",
            dependencies: [
                "GSEAI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
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
        // libFuzzer targets for every parser in GSEAIFormats (scripts/fuzz); built plainly, it replays a corpus.
        .executableTarget(
            name: "gseai-fuzz",
            dependencies: ["GSEAIFormats"],
            path: "Tests/Fuzz",
            exclude: ["corpus"]
        ),
        .testTarget(
            name: "GSEAITests",
            dependencies: [
                "GSEAI",
                "GSEAITestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "GSEAIGatewayTests",
            dependencies: [
                "GSEAI",
                "GSEAIGateway",
                "GSEAITestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ]
        ),
        .testTarget(
            name: "gseaiCLITests",
            dependencies: ["GSEAI", "GSEAITestSupport", "gseai"]
        ),
    ]
)

