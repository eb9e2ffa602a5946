// swift-tools-version: 6.2
// `gseai serve` with a synchronous entry point, for `bench/callgrind`: valgrind 3.19 (Debian 12's) crashes on a
// Swift program whose `main` is async (the main thread parks in `sigsuspend` under `dispatchMain()`), so the
// gateway is run here from a plain `main` that waits on a semaphore. Same library, same configuration (the
// `GSEAI_*` environment), SQLite only. Not part of the product.
import PackageDescription

let package = Package(
    name: "gseai-profile",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The gateway itself: bench/callgrind links `.build-root/gseai` to the repository (a path dependency is
        // named after its folder, and a clone may have any name).
        .package(path: ".build-root/gseai"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "gseai-profile",
            dependencies: [
                .product(name: "GSEAIGateway", package: "gseai"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
