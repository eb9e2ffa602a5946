import Foundation

/// Built with libFuzzer (scripts/fuzz, `-DGSEAI_LIBFUZZER`): `GSEAI_FUZZ_TARGET=TARGET gseai-fuzz …`, every
/// argument libFuzzer's (corpus folders, `-max_total_time=…`); the target is in the environment because
/// libFuzzer runs the program again with its own arguments (to merge corpora, say).
///
/// Built plainly: `gseai-fuzz TARGET FILE_OR_FOLDER…` runs every file through the target once, so that a
/// corpus replays as a regression test in any build.
@main
struct FuzzMain {
    static func main() throws {
        let usage = "{\(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|"))}"
        #if GSEAI_LIBFUZZER
        guard let target = ProcessInfo.processInfo.environment["GSEAI_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:)) else {
            print("set GSEAI_FUZZ_TARGET to one of \(usage)")
            exit(2)
        }
        selected = target
        var argv = (0..<Int(CommandLine.argc)).map { CommandLine.unsafeArgv[$0] } + [nil]
        var argc = CommandLine.argc
        let status = argv.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var base = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &base) { data, size in
                selected?.run(UnsafeBufferPointer(start: data, count: size))
                return 0
            }
        }
        exit(status)
        #else
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: gseai-fuzz \(usage) FILE_OR_FOLDER…")
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() where !path.hasPrefix("-") {
            for file in try files(at: path) {
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                bytes.withUnsafeBufferPointer { target.run($0) }
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs replayed")
        #endif
    }

    static func files(at path: String) throws -> [String] {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else { return [] }
        guard isFolder.boolValue else { return [path] }
        return try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { "\(path)/\($0)" }
    }
}

#if GSEAI_LIBFUZZER
/// The target libFuzzer's callback runs (a C callback captures nothing).
nonisolated(unsafe) private var selected: FuzzTarget?

/// libFuzzer's entry for programs that have their own `main`.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif
