import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child process run to completion: exit status, output, wall time and peak resident memory
/// (VmHWM of the child's own address space, read while it runs: `wait4`'s `ru_maxrss` is no use
/// here, since Linux counts in it the memory of this bench, whose address space a
/// `posix_spawn`ed child shares until its `exec`).
struct ChildRun {
    var status: Int32
    var out: String
    var err: String
    var seconds: Double
    var peakRSSMB: Double
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

enum Child {
    /// The release binaries beside this one (`swift build -c release` builds all three together).
    static func binary(_ name: String) throws -> String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let path = dir.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchFailure("\(path) is missing: build every product first (bench/run.sh does)")
        }
        return path
    }

    static func spawn(_ exe: String, _ args: [String], env: [String: String] = [:], out: String, err: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let environment = ProcessInfo.processInfo.environment.merging(env) { $1 }.map { "\($0.key)=\($0.value)" }
        let argv = ([exe] + args).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, exe, &actions, nil, argv, envp)
        guard rc == 0 else { throw BenchFailure("cannot start \(exe): errno \(rc)") }
        return pid
    }

    /// Runs to completion; throws on a non-zero exit unless `allowFailure`.
    static func run(_ exe: String, _ args: [String], env: [String: String] = [:], allowFailure: Bool = false) throws -> ChildRun {
        let base = NSTemporaryDirectory() + "fsbench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: base + ".out"); try? FileManager.default.removeItem(atPath: base + ".err") }
        let start = ContinuousClock.now
        let pid = try spawn(exe, args, env: env, out: base + ".out", err: base + ".err")
        var status: Int32 = 0
        var peak = 0.0
        // Every 2 ms: the peak of the last 2 ms before exit can be missed; the time is exact to 2 ms.
        // The poll shares the 2 cores with what it measures, so it reads the file raw (a String
        // parse every 2 ms took about a tenth of a core from B1's laptop).
        let statusFile = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
        defer { if statusFile >= 0 { close(statusFile) } }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { break }
            if let now = highWaterKB(statusFile, &buffer) { peak = max(peak, Double(now) / 1024) }
            usleep(2_000)
        }
        let seconds = (ContinuousClock.now - start).seconds
        let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        if code != 0 && !allowFailure {
            throw BenchFailure("\(URL(fileURLWithPath: exe).lastPathComponent) \(args.joined(separator: " ")) exited \(code): \(err.prefix(400))")
        }
        return ChildRun(status: code, out: out, err: err, seconds: seconds, peakRSSMB: peak)
    }

    /// Peak resident memory of a running process (VmHWM), in MB.
    static func peakRSSMB(_ pid: pid_t) -> Double {
        let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .nan }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        return highWaterKB(fd, &buffer).map { Double($0) / 1024 } ?? .nan
    }

    /// VmHWM in kB from an open `/proc/PID/status`, read from its start into `buffer`.
    static func highWaterKB(_ fd: Int32, _ buffer: inout [UInt8]) -> Int? {
        guard fd >= 0 else { return nil }
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let key = Array("VmHWM:".utf8)
        return buffer.withUnsafeBufferPointer { b -> Int? in
            var i = 0
            while i + key.count <= count {
                if (i == 0 || b[i - 1] == UInt8(ascii: "\n")) && b[i..<count].starts(with: key) {
                    var j = i + key.count, kb = 0, digits = 0
                    while j < count, b[j] == UInt8(ascii: " ") || b[j] == UInt8(ascii: "\t") { j += 1 }
                    while j < count, b[j] >= UInt8(ascii: "0"), b[j] <= UInt8(ascii: "9") { kb = kb * 10 + Int(b[j] - UInt8(ascii: "0")); j += 1; digits += 1 }
                    return digits > 0 ? kb : nil
                }
                i += 1
            }
            return nil
        }
    }
}

/// Real `fieldsync-server serve` processes on loopback: one on the embedded SQLite store, or
/// `processes` on one PostgreSQL database (a schema of its own under `postgres`).
final class ServerProcess: Sendable {
    let dir: String
    let pids: [pid_t]
    let ports: [Int]
    let caPEM: String
    let pin: String
    let logBase: String
    /// The PostgreSQL URL the processes serve from, nil for SQLite.
    let postgres: String?

    /// `init` (keys, CA, database), then `prepare` on the closed SQLite database, then (with
    /// `postgres`) `migrate` into a new schema there, then `serve`.
    /// `FIELDSYNC_BENCH_PG_CONNECTIONS`: each process's `--postgres-connections` (the server's default when unset).
    static let connections = ProcessInfo.processInfo.environment["FIELDSYNC_BENCH_PG_CONNECTIONS"].map { ["--postgres-connections", $0] } ?? []

    init(postgres base: String? = nil, processes: Int = 1, prepare: (String) throws -> Void) throws {
        let server = try Child.binary("fieldsync-server")
        dir = NSTemporaryDirectory() + "fsbench-server-\(UUID().uuidString)"
        let initRun = try Child.run(server, ["init", "--data", dir, "--hostname", "127.0.0.1"])
        guard let line = initRun.out.split(separator: "\n").first(where: { $0.hasPrefix("CA pin: ") }) else { throw BenchFailure("no CA pin from init") }
        pin = String(line.dropFirst("CA pin: ".count))
        caPEM = try String(contentsOfFile: dir + "/ca.pem", encoding: .utf8)
        try prepare(dir + "/server.sqlite")
        if let base {
            let schema = "fsb_" + UUID().uuidString.prefix(8).lowercased()
            _ = try Child.run("/usr/bin/psql", ["-qAt", base, "-c", "CREATE SCHEMA \(schema)"])
            let url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
            _ = try Child.run(server, ["migrate", "--from", dir, "--postgres", url])
            postgres = url
        } else {
            postgres = nil
        }
        logBase = dir + "/serve"
        var pids: [pid_t] = [], ports: [Int] = []
        for i in 0..<max(1, processes) {
            // A bench drives one device far harder than a laptop would: lift the per-device rate limit.
            let pid = try Child.spawn(server, ["serve", "--data", dir, "--port", "0", "--rate-limit", "10000000"] + (postgres.map { ["--postgres", $0, "--processes", "\(processes)"] + Self.connections } ?? []),
                                      out: logBase + "\(i).out", err: logBase + "\(i).err")
            pids.append(pid)
            var found: Int?
            for _ in 0..<300 {
                if let text = try? String(contentsOfFile: logBase + "\(i).out", encoding: .utf8), let first = text.split(separator: "\n").first,
                   let p = Int(first.split(separator: ":").last ?? "") { found = p; break }
                usleep(20_000)
            }
            guard let found else { throw BenchFailure("the server did not start: \((try? String(contentsOfFile: logBase + "\(i).err", encoding: .utf8)) ?? "")") }
            ports.append(found)
        }
        self.pids = pids
        self.ports = ports
    }

    var url: String { urls[0] }
    var urls: [String] { ports.map { "https://127.0.0.1:\($0)" } }

    func invite(role: String, name: String) throws -> String {
        try Child.run(try Child.binary("fieldsync-server"), ["invite", "--data", dir, "--role", role, "--name", name] + (postgres.map { ["--postgres", $0] } ?? []))
            .out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The largest peak of the processes.
    var peakRSSMB: Double { pids.map { Child.peakRSSMB($0) }.max() ?? 0 }

    func stop() {
        for pid in pids {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var millis: Double { seconds * 1000 }
}
