import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import Foundation
import Logging
import ServiceLifecycle

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

struct Unenroll: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Leave the server this replica is enrolled with (one enrolled by mistake); its notes and contacts stay here.",
        discussion: "Refused while changes made here wait to be sent, unless --force: they would then reach no server. Ask the server's administrator to revoke the device too (fieldsync-server devices revoke).")
    @Flag(help: "Leave even though changes made here have not reached the server.") var force = false

    func run() throws {
        let replica = try openReplica()
        let store = replica.store
        guard let server = try store.meta("server_url") else { throw ClientError("this replica is not enrolled with any server") }
        // Not while a sync runs: it would go on with what this removes.
        let lock = try SyncLock(path: replica.home.path + "/sync.lock")
        defer { lock.release() }
        let waiting = try store.status(device: replica.device).waiting
        if waiting > 0 && !force {
            throw ClientError("\(waiting) changes made here have not reached \(server) yet: sync first, or give --force to leave them unsent")
        }
        try store.forgetServer()
        print("left \(server)" + (waiting > 0 ? " with \(waiting) changes unsent" : "") + "; this replica can enrol again (fieldsync enroll); ask the server's administrator to revoke \(replica.device)")
    }
}

struct Rekey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "After a fork, move this laptop to a new device key; its changes the server lacks are signed again under it.",
        discussion: """
            A fork: a copy of this replica (a restored disk, a cloned laptop) wrote as this device, and both versions left \
            their laptops, so the server keeps one and refuses the other for good (`fieldsync status` lists it, `sync` exits 5). \
            Ask the server's administrator for an invite (`fieldsync-server invite --name NAME --role ROLE`), then run this \
            with its token. The laptop enrols a new key, takes the old device's chain as the server holds it, and signs again \
            under the new key every change of its own the server lacks (records it created get new ids, and its links to them follow); the old key is \
            deleted. Then run `fieldsync sync`. A rekey that stops half-way is finished by running it again with the same token.
            """)
    @Option(help: "The one-time invite token from `fieldsync-server invite`.") var token: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let replica = try openReplica()
        // Not while a sync runs: it would go on signing with the old key.
        let lock = try SyncLock(path: replica.home.path + "/sync.lock")
        defer { lock.release() }
        let old = replica.device
        let (key, new) = try replica.home.rekeyKey()
        let rekeyed: (entry: RosterEntry, result: ReplicaStoreTakeBack)
        do {
            rekeyed = try await SyncEngine(replica: replica).rekey(token: token, key: key, retry: !new)
        } catch let f as SyncFailure where new && f.problem == .inviteRefused {
            replica.home.abandonRekey()
            if let before = try replica.store.meta("rekeyed_from") {
                // A rekey stopped after its commit was finished when the replica was opened.
                throw SyncFailure(.failure, "\(f.message); this laptop already moved from \(before) to \(old) in an earlier rekey: run `fieldsync sync` (a new fork needs a new invite)")
            }
            throw f
        }
        try replica.home.finishRekey()
        let (entry, result) = rekeyed
        if output.json {
            printJSON(.object(["device": .string(entry.device.description), "name": .string(entry.name), "old_device": .string(old.description),
                               "resigned": .int(Int64(result.resigned)), "taken": .int(Int64(result.taken))]))
        } else {
            print("this laptop is now \(entry.name) (\(entry.device)), no longer \(old); \(result.resigned) changes the server lacked signed again under the new key, \(result.taken) taken from the server; run `fieldsync sync`. Once no copy of this laptop writes as the old device, the administrator may revoke it (fieldsync-server devices revoke \(old))")
        }
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send this replica's changes and fetch what it lacks, until both sides are done.",
        discussion: "Exit codes: 0 all exchanged; 1 other failure; 2 usage; 3 server unreachable or timed out (retry later); 4 authentication refused; 5 some local changes refused by policy, or this device's chain forked (kept locally; see fieldsync rekey); 6 another sync of this replica is running.")
    @Flag(help: "Print nothing but errors.") var quiet = false
    @Option(help: "Give up retrying after this many seconds (with --watch it never gives up).") var timeout: Int = 120
    @Flag(help: "Stay running over one kept connection: sync within a second of each change made here, and every --every seconds for what others sent. A bad link is retried until it comes back. Stops on SIGTERM or SIGINT.")
    var watch = false
    @Option(help: "With --watch: seconds between syncs while nothing changes here (default 60).") var every: Int?
    @Option(name: .customLong("idle-max"), help: "With --watch: while syncs move nothing, the wait between them doubles from --every up to this many seconds (default 7200: an idle day then costs about 90 kB), to spare a costly link; anything moved brings it back to --every.")
    var idleMax: Int?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        // With --json, every exit prints its object, failures included: a cron line's `>> sync.log`
        // records why a night's sync failed, not only that it did.
        do { try await exchange() } catch let error where output.json && !watch {
            if let f = Failure(error) { printJSON(f.json) }  // (an ExitCode was reported already)
            throw error
        }
    }

    func exchange() async throws {
        guard timeout > 0 else { throw ClientError.usage("--timeout must be positive") }
        guard watch || every == nil else { throw ClientError.usage("--every goes with --watch") }
        guard (every ?? 60) > 0 else { throw ClientError.usage("--every must be positive") }
        guard watch || idleMax == nil else { throw ClientError.usage("--idle-max goes with --watch") }
        let idleCap = idleMax ?? max(7200, every ?? 60)
        guard idleCap >= (every ?? 60) else { throw ClientError.usage("--idle-max must be at least --every") }
        let replica = try openReplica()
        let lock = try SyncLock(path: replica.home.path + "/sync.lock")
        defer { lock.release() }
        if watch {
            try await SyncWatch(replica: replica, every: .seconds(every ?? 60), idleMax: .seconds(idleCap), quiet: quiet, json: output.json)
                .runUntilSignalled()
            return
        }
        let start = ContinuousClock.now
        let terminal = isatty(STDERR_FILENO) == 1 && !quiet && !output.json
        let summary = try await SyncEngine(replica: replica).sync(deadline: start + .seconds(timeout)) { s in
            guard terminal else { return }
            FileHandle.standardError.write(Data("\rsync: round \(s.rounds), \(s.pushed) sent, \(s.pulled) received   ".utf8))
        }
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
        let duration = (ContinuousClock.now - start).wholeMillis
        if output.json {
            var o = summary.jsonObject(durationMillis: duration)
            o["exit"] = .int(summary.refused.isEmpty ? 0 : 5)
            printJSON(.object(o))
        } else if !quiet && (isatty(STDOUT_FILENO) == 1 || summary.moved || !summary.serverLacks.isEmpty) {
            // To a pipe or a file (cron), a sync that moved nothing says nothing, unless the
            // server lacks what this laptop holds and would not take it: someone has to look.
            for line in summary.lines(durationMillis: duration) { print(line) }
        }
        if !summary.refused.isEmpty {
            throw ExitCode(5)  // reported above, refusal by refusal
        }
    }
}

/// `fieldsync sync --watch`: a resident sync of one replica, as a service that stops gracefully
/// on SIGTERM or SIGINT. It syncs as soon as this replica has a change it has not sent (checked
/// four times a second: one read of the `heads` table), and every `every` otherwise, over one
/// kept connection (`SyncSession`). Each sync that moves nothing doubles that wait, up to
/// `idleMax`: an idle laptop on a metered link spends a few kilobytes an hour, not a minute's
/// worth each minute; a sync that moves anything brings it back to `every`. A bad link is retried until it comes back; it says so once
/// per outage, even with --quiet. It prints a line (or a JSON object) per sync that moved
/// something, each refusal once. It exits on
/// what retrying cannot mend: authentication refused (4), any other failure (1).
struct SyncWatch: Service {
    let replica: Replica
    let every: Duration
    let idleMax: Duration
    let quiet: Bool
    let json: Bool

    func runUntilSignalled() async throws {
        var logger = Logger(label: "fieldsync.sync")
        logger.logLevel = .critical
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: self, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    func run() async throws {
        let session = SyncSession(engine: SyncEngine(replica: replica), idleTimeout: .seconds(300))
        do {
            try await cancelWhenGracefulShutdown { try await loop(session) }
        } catch is CancellationError {
            // Stopped by a signal, mid-sync or between syncs: nothing acknowledged is lost.
        } catch {
            await session.close()
            throw error
        }
        await session.close()
    }

    func loop(_ session: SyncSession) async throws {
        var sentUpTo: UInt64?     // this device's seq when the last good sync started
        var nextPull = ContinuousClock.now
        var wait = every
        var failures = 0           // in a row: the link is down, or the server
        var retryAt = ContinuousClock.now
        var refusalsShown: Set<String> = []
        var lacksShown: Set<String> = []
        while true {
            try Task.checkCancellation()
            let head = try replica.store.vector()[replica.device]
            let now = ContinuousClock.now
            if (head != sentUpTo || now >= nextPull) && now >= retryAt {
                do {
                    // No retrying inside: this loop retries, and says so once per outage.
                    let summary = try await session.sync(deadline: now)
                    sentUpTo = head
                    // Refusals do not count: a change refused for good goes again each time.
                    let progressed = summary.pushed + summary.pulled + summary.relayed + summary.resent + summary.takenBack + summary.resigned > 0
                    wait = progressed ? every : min(idleMax, wait * 2)
                    nextPull = ContinuousClock.now + wait
                    if failures > 0 { FileHandle.standardError.write(Data("sync: \(summary.server) answers again\n".utf8)) }
                    failures = 0
                    report(summary, since: now, refusalsShown: &refusalsShown, lacksShown: &lacksShown)
                } catch let f as SyncFailure where f.exit == .unreachable {
                    if failures == 0 { FileHandle.standardError.write(Data("sync: \(f.message); retrying until it answers\n".utf8)) }
                    failures += 1
                    retryAt = ContinuousClock.now + .milliseconds(min(8_000, 250 << min(failures, 5)))
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    func report(_ s: SyncEngine.Summary, since start: ContinuousClock.Instant, refusalsShown: inout Set<String>, lacksShown: inout Set<String>) {
        // A change refused outright stays in the outbox and is sent again each time, and what the
        // server lacks stays lacking until carried: each said once.
        var s = s
        s.refused = s.refused.filter { refusalsShown.insert($0.id).inserted }
        let lacks = Set(s.serverLacks.map { "\($0.device) \($0.changes)" })
        let newLack = !lacks.isSubset(of: lacksShown)
        lacksShown = lacks  // one mended and back later is said again
        if quiet {
            // Nothing but errors; with no exit code to carry them, refusals are errors here.
            for r in s.refused { FileHandle.standardError.write(Data("refused \(r.id.prefix(12)): \(r.reason)\n".utf8)) }
            return
        }
        guard s.pushed + s.pulled + s.relayed > 0 || !s.refused.isEmpty || newLack else { return }
        let ms = (ContinuousClock.now - start).wholeMillis
        let at = Timestamps.iso(Timestamps.nowMillis)
        if json {
            var o = s.jsonObject(durationMillis: ms)
            o["at"] = .string(at)
            printJSON(.object(o))
        } else {
            // The time goes before the summary line, not before the refusals under it.
            for (i, line) in s.lines(durationMillis: ms).enumerated() { print(i == 0 ? "\(at) \(line)" : line) }
        }
        fflush(nil)  // a pipe or a log file sees each line as it comes
    }
}

extension SyncEngine.Summary {
    /// What a person reads after a sync: one line, then one per change refused.
    /// Whether the sync changed anything here or there, or has something to report.
    var moved: Bool { pushed > 0 || pulled > 0 || relayed > 0 || !refused.isEmpty || conflictsAfter > conflictsBefore || resent > 0 || takenBack + resigned + forkDropped > 0 }

    func lines(durationMillis ms: Int64) -> [String] {
        ["sent \(pushed), received \(pulled), \(conflictsAfter) conflicts open (\(max(0, conflictsAfter - conflictsBefore)) new), \(ms) ms"]
            + (resent > 0 ? ["the server had lost \(resent) of this laptop's changes (restored from a backup?): sent again"] : [])
            + (forkDropped > 0 ? ["another device's chain forked: \(forkDropped) of its changes held here were given up for the server's (fieldsync status lists the fork)"] : [])
            + (takenBack + resigned > 0 ? ["the server held this device's changes that this replica lacked (restored or copied?): taken back, \(resigned) of ours signed again after them"] : [])
            + (relayed > 0 ? ["relayed \(relayed) changes of other devices that the server lacked"] : [])
            + serverLacks.map { lack in
                let what = "the server lacks \(lack.changes) of \(TerminalText.escaped(lack.name))'s changes that this laptop holds"
                guard let refusal = lack.refusal else { return what + ": they go up once this laptop's own changes are all taken" }
                return what + " and would not take them from it: \(TerminalText.escaped(refusal))"
            }
            + refused.map { "refused \($0.id.prefix(12)): \($0.reason)" }
    }

    /// The summary object scripts read, with how long the sync took.
    func jsonObject(durationMillis ms: Int64) -> [String: JSONValue] {
        var o = json.objectValue!
        o["duration_ms"] = .int(ms)
        return o
    }
}

extension Duration {
    var wholeMillis: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
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
