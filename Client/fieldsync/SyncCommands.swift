import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import Foundation

struct Enroll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Register this device with a sync server, trusting only its CA or pin.")
    @Argument(help: "The server, e.g. https://sync.example.org:8443") var url: String
    @Option(help: "The one-time invite token from `fieldsync-server invite`.") var token: String
    @Option(help: "The server's CA certificate (PEM).") var ca: String?
    @Option(help: "The CA pin `fieldsync-server init` printed: sha256:HEX.") var pin: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let replica = try openReplica()
        let entry = try await SyncEngine(replica: replica).enroll(url: url, token: token, caFile: ca, pin: pin)
        if output.json {
            printJSON(.object(["device": .string(entry.device.description), "name": .string(entry.name), "role": .string(entry.role.rawValue), "server": .string(url)]))
        } else {
            print("enrolled \(entry.name) as \(entry.role.rawValue) with \(url)")
        }
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send this replica's changes and fetch what it lacks, until both sides are done.",
        discussion: "Exit codes: 0 all exchanged; 1 other failure; 2 usage; 3 server unreachable or timed out (retry later); 4 authentication refused; 5 some local changes refused by policy (kept locally); 6 another sync of this replica is running.")
    @Flag(help: "Print nothing but errors.") var quiet = false
    @Option(help: "Give up retrying after this many seconds.") var timeout: Int = 120
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard timeout > 0 else { throw ClientError.usage("--timeout must be positive") }
        let replica = try openReplica()
        let lock = try SyncLock(path: replica.home.path + "/sync.lock")
        defer { lock.release() }
        let start = ContinuousClock.now
        let terminal = isatty(STDERR_FILENO) == 1 && !quiet && !output.json
        let summary = try await SyncEngine(replica: replica).sync(deadline: start + .seconds(timeout)) { s in
            guard terminal else { return }
            FileHandle.standardError.write(Data("\rsync: round \(s.rounds), \(s.pushed) sent, \(s.pulled) received   ".utf8))
        }
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
        let ms = (ContinuousClock.now - start).components
        let duration = ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000
        if output.json {
            var o = summary.json.objectValue!
            o["duration_ms"] = .int(duration)
            o["exit"] = .int(summary.refused.isEmpty ? 0 : 5)
            printJSON(.object(o))
        } else if !quiet {
            print("sent \(summary.pushed), received \(summary.pulled), \(summary.conflictsAfter) conflicts open (\(max(0, summary.conflictsAfter - summary.conflictsBefore)) new), \(duration) ms")
            for r in summary.refused { print("refused \(r.id.prefix(12)): \(r.reason)") }
        }
        if !summary.refused.isEmpty {
            throw ExitCode(5)
        }
    }
}

/// One sync per replica at a time: an advisory lock on a file in the replica folder, released
/// by the kernel if the process dies.
final class SyncLock {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_CREAT | O_RDWR, 0o600)
        guard fd >= 0 else { throw ClientError("cannot open \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw SyncFailure(.busy, "another sync of this replica is running")
        }
    }

    func release() { flock(fd, LOCK_UN); close(fd) }
}
