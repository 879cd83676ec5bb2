import Foundation

/// One input through the selected target (libFuzzer's callback; also its `LLVMFuzzerTestOneInput`,
/// which libFuzzer's archive references).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let target = FuzzTargets.selected else { return 0 }
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data!, count: size))
    target.run(bytes)
    return 0
}

/// The ordinary build's commands.
enum FuzzCommand {
    static let usage = """
        usage: fieldsync-fuzz list
               fieldsync-fuzz replay [TARGET...]          every file of Fuzz/corpus/TARGET (all targets by default)
               fieldsync-fuzz run TARGET FILE...          the given inputs through one target
               fieldsync-fuzz write-seeds [CORPUS_DIR]    the generated seeds (Fuzz/corpus by default)
        """

    static func run(_ args: [String]) -> Int32 {
        switch args.first {
        case "list":
            for t in FuzzTargets.all { print(t.name.padding(toLength: 14, withPad: " ", startingAt: 0), t.summary) }
            return 0
        case "replay":
            let names = args.count > 1 ? Array(args.dropFirst()) : FuzzTargets.names
            var total = 0
            for name in names {
                guard let t = FuzzTargets.named(name) else { print("no target \(name)"); return 2 }
                FuzzTargets.prepare(t)
                let files = FuzzCorpus.files(of: name)
                for f in files { t.run(f.bytes) }
                print("\(name): \(files.count) inputs, no crash")
                total += files.count
            }
            print("replayed \(total) inputs")
            return 0
        case "run":
            guard args.count >= 3, let t = FuzzTargets.named(args[1]) else { print(usage); return 2 }
            FuzzTargets.prepare(t)
            for path in args.dropFirst(2) {
                guard let d = FileManager.default.contents(atPath: path) else { print("cannot read \(path)"); return 2 }
                t.run(Array(d))
                print("\(path): no crash")
            }
            return 0
        case "write-seeds":
            let dir = args.count > 1 ? args[1] : FuzzCorpus.directory
            do {
                let n = try FuzzSeeds.write(to: dir)
                print("wrote \(n) seeds under \(dir)")
                return 0
            } catch {
                print("write-seeds: \(error)")
                return 1
            }
        default:
            print(usage)
            return args.isEmpty ? 0 : 2
        }
    }
}

/// The seed corpora in the repository.
enum FuzzCorpus {
    static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("corpus").path
    }

    static func files(of target: String, in dir: String = directory) -> [(name: String, bytes: [UInt8])] {
        let folder = dir + "/" + target
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        return names.compactMap { n in FileManager.default.contents(atPath: folder + "/" + n).map { (n, Array($0)) } }
    }
}
