import FieldSyncClient
import FieldSyncCore
import Foundation
import Testing

/// The real `fieldsync-server`: init, invites, and a serving process on a loopback port.
final class LiveServer: @unchecked Sendable {
    static let binary = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().appendingPathComponent("fieldsync-server").path
    let dir = NSTemporaryDirectory() + "fieldsync-live-" + UUID().uuidString
    var process: Process?
    var port = 0
    let pin: String

    init() throws {
        // The CA key kept (in the data folder, for the tests that issue certificates with it).
        let out = try Self.admin(["init", "--data", dir, "--hostname", "127.0.0.1", "--ca-key-out", dir + "/ca.key"])
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("CA pin: ") }) else { throw CLIError("no pin in: \(out)") }
        pin = String(line.dropFirst("CA pin: ".count))
    }

    static func admin(_ args: [String]) throws -> String {
        let r = try runProcess(binary, args)
        guard r.status == 0 else { throw CLIError("fieldsync-server \(args.joined(separator: " ")): \(r.err)") }
        return r.out
    }

    func invite(_ role: String, _ name: String) throws -> String {
        try Self.admin(["invite", "--data", dir, "--role", role, "--name", name]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts serving (on the same port as before, after a restart); its log goes to `log` if given.
    func start(_ extra: [String] = [], log: String? = nil) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "--data", dir, "--port", String(port)] + extra
        let out = Pipe()
        p.standardOutput = out
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            p.standardError = FileHandle(forWritingAtPath: log)
        } else {
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        let text = try firstLine(of: out, from: "fieldsync-server serve")
        port = Int(text.split(separator: ":").last!)!
        process = p
    }

    func kill(_ signal: Int32) {
        guard let p = process else { return }
        Foundation.kill(p.processIdentifier, signal)
        p.waitUntilExit()
        process = nil
    }

    var url: String { "https://127.0.0.1:\(port)" }

    deinit {
        kill(SIGKILL)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The first line a child process writes to `pipe` (its port, say), read as it comes: its
/// standard output is a pipe, so nothing waits for its exit. Throws if it ends first.
func firstLine(of pipe: Pipe, from what: String) throws -> String {
    var line = Data()
    while !line.contains(UInt8(ascii: "\n")) {
        let chunk = pipe.fileHandleForReading.availableData
        guard !chunk.isEmpty else { throw CLIError("\(what) ended before writing a line") }
        line.append(chunk)
    }
    return String(decoding: line.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
}

/// A laptop: a replica enrolled with the live server.
func laptop(_ server: LiveServer, role: String, name: String) throws -> CLI {
    let cli = CLI()
    _ = try cli.ok("init", "--name", name, "--role", role)
    _ = try cli.ok("enroll", server.url, "--token", try server.invite(role, name), "--pin", server.pin)
    return cli
}

/// One `note add --json-file` of `count` survey notes of about 370 bytes each, refs `REF-n`.
/// `count` survey notes of about 350 bytes each, imported in one change. Their narratives are
/// random letters, which gzip cannot shrink much (to about three quarters): tests of a link's
/// byte limits need bytes on the wire, not a phrase repeated.
func importSurveys(_ cli: CLI, _ count: Int, ref: String) throws {
    let file = cli.home + "/notes.jsonl"
    let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,")
    var rng = SystemRandomNumberGenerator()
    func text() -> String { String((0..<330).map { _ in letters.randomElement(using: &rng)! }) }
    try (0..<count).map { #"{"kind":"survey","ref":"\#(ref)-\#($0)","narrative":"\#(text())\#($0)"}"# }
        .joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
    _ = try cli.ok("note", "add", "--json-file", file)
}

@Suite(.serialized) struct SyncEndToEndTests {
    /// Three laptops work offline, edit the same field and delete what another edits, sync twice
    /// each, and end byte-identical with the same conflicts; the coordinator settles them.
    @Test func threeLaptopsConvergeAndTheCoordinatorSettles() throws {
        let server = try LiveServer()
        try server.start()
        let f1 = try laptop(server, role: "field", name: "mt3-laptop")
        let f2 = try laptop(server, role: "field", name: "nts2-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        defer { for l in [f1, f2, co] { l.cleanUp() } }

        let n = try f1.ok("note", "add", "--kind", "clearance_day", "--set", "ref=UA-KHA-CLR-0042", "--set", "team=MT-3").trimmingCharacters(in: .whitespacesAndNewlines)
        let m = try f1.ok("note", "add", "--kind", "eod_spot", "--set", "ref=UA-KHA-EOD-0310").trimmingCharacters(in: .whitespacesAndNewlines)
        for l in [f1, f2, co] { _ = try l.ok("sync", "--quiet") }

        // Offline: the same field two ways, and a delete concurrent with an edit.
        _ = try f1.ok("note", "edit", n, "--set", "area_cleared_m2=1150")
        _ = try f2.ok("note", "edit", n, "--set", "area_cleared_m2=1200")
        _ = try f2.ok("note", "delete", m)
        _ = try co.ok("note", "edit", m, "--set", "narrative=Item moved to the demolition site.")
        _ = try co.ok("contact", "import", CLI.samples + "/contacts.vcf")
        _ = try f2.ok("note", "add", "--json-file", CLI.samples + "/notes.jsonl")

        for _ in 0..<2 { for l in [f1, f2, co] { _ = try l.ok("sync", "--quiet") } }
        let notes = try [f1, f2, co].map { try $0.ok("note", "list", "--json") }
        let contacts = try [f1, f2, co].map { try $0.ok("contact", "list", "--json") }
        let conflicts = try [f1, f2, co].map { try $0.ok("conflicts", "--json") }
        #expect(Set(notes).count == 1 && Set(contacts).count == 1 && Set(conflicts).count == 1, "replicas differ")
        #expect(try JSONValue.parse(notes[0]).arrayValue?.count == 7)
        let open = try JSONValue.parse(conflicts[0]).arrayValue ?? []
        #expect(Set(open.compactMap { $0["field"]?.stringValue }) == ["area_cleared_m2", "(deleted)"])
        let values = open.first { $0["field"] == "area_cleared_m2" }?["values"]?.arrayValue?.compactMap { $0["value"]?.intValue }
        #expect(Set(values ?? []) == [1150, 1200])
        // A delete/edit conflict lists both ways out, numbered as --keep counts them: the
        // deletion, and the edit it did not see (who wrote what).
        let deleted = open.first { $0["field"] == "(deleted)" }?["values"]?.arrayValue ?? []
        #expect(deleted.map { $0["choice"]?.stringValue } == ["delete", "keep"])
        #expect(deleted.first?["device_name"] == "nts2-laptop")
        let unseen = deleted.last?["edits"]?.arrayValue?.first
        #expect(unseen?["field"] == "narrative" && unseen?["device_name"] == "hq" && unseen?["value"] == "Item moved to the demolition site.")
        let text = try co.ok("conflicts")
        #expect(text.contains("[1] delete it  by nts2-laptop") && text.contains("[2] keep it, with the edits the deletion did not see:"))
        #expect(text.contains("narrative = Item moved to the demolition site.  by hq"))
        #expect(try co.run("resolve", m, "deleted", "--keep", "2").err.contains("spelled (deleted)"))

        // A field laptop may not approve: refused locally, nothing written.
        let attempt = try f1.run("review", n, "--approve")
        #expect(attempt.status == 1 && attempt.err.contains("only a coordinator"))
        // A draft is not reviewed; its author submits it first (offline), and it syncs later.
        let early = try co.run("review", n, "--approve")
        #expect(early.status == 1 && early.err.contains("is a draft"))
        _ = try f1.ok("submit", n, "--comment", "day 3 done")
        #expect(try f1.run("submit", n).status == 1, "submitting twice is refused")
        for l in [f1, co] { _ = try l.ok("sync", "--quiet") }
        // The coordinator's queue: the submitted note, and nothing else.
        let queue = try co.ok("review", "--queue")
        #expect(queue.contains(n) && queue.split(separator: "\n").count == 2 && queue.hasPrefix("ID "), "\(queue)")
        #expect(try JSONValue.parse(try co.ok("note", "list", "--review", "submitted", "--json")).arrayValue?.count == 1)
        #expect(try JSONValue.parse(try co.ok("note", "list", "--review", "draft", "--json")).arrayValue?.count == 6)
        #expect(try co.run("note", "list", "--review", "waiting").status == 2)

        _ = try co.ok("resolve", n, "area_cleared_m2", "--value", "1200")
        _ = try co.ok("resolve", m, "(deleted)", "--keep", "2")
        _ = try co.ok("review", n, "--approve", "--comment", "checked against the sketch")
        #expect(try co.ok("review", "--queue") == "no notes\n")
        for _ in 0..<2 { for l in [co, f1, f2] { _ = try l.ok("sync", "--quiet") } }
        for l in [f1, f2, co] {
            #expect(try l.ok("conflicts", "--json") == "[]\n")
            let note = try JSONValue.parse(try l.ok("note", "show", n, "--json"))
            #expect(note["fields"]?["area_cleared_m2"] == .int(1200))
            #expect(note["fields"]?["review"]?["state"] == "approved")
        }
        #expect(Set(try [f1, f2, co].map { try $0.ok("note", "list", "--json") }).count == 1)
        // An approved report changed afterwards is a draft again, everywhere, until reviewed anew.
        _ = try f1.ok("note", "edit", n, "--set", "depth_cm=20")
        for l in [f1, co] { _ = try l.ok("sync", "--quiet") }
        for l in [f1, co] {
            let review = try JSONValue.parse(try l.ok("note", "show", n, "--json"))["fields"]?["review"]
            #expect(review?["state"] == "draft" && review?["changed_since"] == "approved", "\(String(describing: review))")
        }
        _ = try f1.ok("submit", n)
        _ = try f1.ok("sync", "--quiet")
        _ = try co.ok("sync", "--quiet")
        _ = try co.ok("review", n, "--approve")
        #expect(try JSONValue.parse(try co.ok("note", "show", n, "--json"))["fields"]?["review"]?["state"] == "approved")

        // A revoked laptop is refused (exit 4) and keeps its data.
        _ = try LiveServer.admin(["devices", "revoke", "nts2-laptop", "--data", server.dir])
        _ = try f2.ok("note", "add", "--kind", "observation", "--set", "ref=AFTER-REVOKE")
        let refused = try f2.run("sync")
        #expect(refused.status == 4, "\(refused.err)")
        #expect(try JSONValue.parse(try f2.ok("note", "list", "--json")).arrayValue?.count == 8)
        server.kill(SIGTERM)
    }

    /// What a cron line sees: a sync that moved nothing prints nothing to a pipe; one that moved
    /// something says so; with --json every exit prints its object, a failure's code and
    /// message included; a missing replica is an exit that needs a person (2), not a retry.
    @Test func cronSeesOneLineWhenSomethingMovedAndJSONOnEveryExit() throws {
        let server = try LiveServer()
        try server.start()
        let f = try laptop(server, role: "field", name: "cron-laptop")
        defer { f.cleanUp() }
        _ = try f.ok("sync")
        let idle = try f.run("sync")
        #expect(idle.status == 0 && idle.out.isEmpty, "a sync that moved nothing printed \(idle.out)")
        _ = try f.ok("note", "add", "--kind", "observation", "--set", "ref=CRON-1")
        #expect(try f.ok("sync").hasPrefix("sent 1, received 0"))
        let ok = try JSONValue.parse(try f.ok("sync", "--json"))
        #expect(ok["exit"] == .int(0) && ok["pushed"] == .int(0))

        server.kill(SIGTERM)
        let down = try f.run("sync", "--json", "--timeout", "2")
        #expect(down.status == 3, "\(down.err)")
        let failure = try JSONValue.parse(down.out)
        #expect(failure["exit"] == .int(3) && failure["error"]?["code"] == "unreachable", "\(down.out)")
        #expect(failure["error"]?["message"]?.stringValue?.isEmpty == false)
        #expect(down.err.hasPrefix("fieldsync: "))

        let nowhere = CLI()
        let missing = try nowhere.run("sync", "--json")
        #expect(missing.status == 2, "\(missing.err)")
        #expect(try JSONValue.parse(missing.out)["error"]?["code"] == "not_initialised")
    }

    /// The server logs a line per request (route, status, duration, device, problem code), as
    /// JSON objects with --log-format json, and its start and stop.
    @Test func theServerLogsEachRequestAsJSON() throws {
        let server = try LiveServer()
        let log = server.dir + "/serve.log"
        try server.start(["--log-format", "json"], log: log)
        let f = try laptop(server, role: "field", name: "logged-laptop")
        defer { f.cleanUp() }
        _ = try f.ok("sync")
        // An unsigned request, refused with its problem code.
        _ = try? runProcess("/usr/bin/env", ["python3", "-c", """
            import ssl, urllib.request
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            try: urllib.request.urlopen(urllib.request.Request("\(server.url)/v1/sync", data=b"x", method="POST"), context=ctx)
            except Exception: pass
            """])
        server.kill(SIGTERM)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(lines.contains { $0["message"] == "listening" } && lines.last?["message"] == "stopped")
        let requests = lines.filter { $0["message"] == "request" }
        #expect(requests.contains { $0["route"] == "/v1/sync" && $0["status"] == .int(200) && $0["device"] == "logged-laptop" && $0["ms"]?.intValue != nil })
        #expect(requests.contains { $0["route"] == "/v1/enroll" && $0["status"] == .int(200) })
        #expect(requests.contains { $0["route"] == "/v1/sync" && $0["status"] == .int(415) && $0["problem"] == "unsupported-media-type" && $0["device"] == nil },
                "\(requests)")
    }

    /// `fieldsync sync --watch` as a process. A note added here reaches the server within seconds
    /// though the periodic sync is an hour away; a second sync of the replica is refused (6);
    /// each sync that moved something prints a JSON line as it happens; SIGTERM stops it with
    /// exit 0 and frees the replica. With a short period, what another laptop sent arrives
    /// without a command, a note made while the server is away goes up once it is back, and a
    /// revocation stops the watch with exit 4.
    @Test func aResidentSyncFollowsBothWaysAndStopsOnSignal() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "resident")
        let b = try laptop(server, role: "field", name: "other")
        defer { for l in [a, b] { l.cleanUp() } }
        func startWatch(every: Int, idleMax: Int? = nil) throws -> (Process, out: Pipe, err: Pipe) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["sync", "--watch", "--every", String(every), "--json"] + (idleMax.map { ["--idle-max", String($0)] } ?? [])
            var env = ProcessInfo.processInfo.environment
            env["FIELDSYNC_HOME"] = a.home
            p.environment = env
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            return (p, out, err)
        }
        /// Waits up to `seconds` for `done`, checking twice a second.
        func eventually(_ seconds: Double, _ done: () throws -> Bool) throws -> Bool {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if try done() { return true }
                Thread.sleep(forTimeInterval: 0.5)
            }
            return try done()
        }
        func holds(_ l: CLI, _ ref: String, syncFirst: Bool) throws -> Bool {
            if syncFirst { _ = try l.ok("sync", "--quiet") }
            return try l.ok("note", "list", "--json").contains(ref)
        }
        func text(_ pipe: Pipe) -> String { String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }

        // Triggered by the change itself: the periodic sync is an hour away.
        var (watch, out, err) = try startWatch(every: 3600)
        defer { if watch.isRunning { watch.terminate() } }
        Thread.sleep(forTimeInterval: 1)   // its first sync (nothing to move) is done
        _ = try a.ok("note", "add", "--kind", "observation", "--set", "ref=RESIDENT-1")
        #expect(try eventually(10) { try holds(b, "RESIDENT-1", syncFirst: true) }, "the note did not reach the server")
        // Its line comes while it runs, not at exit.
        #expect((try? JSONValue.parse(try firstLine(of: out, from: "fieldsync sync --watch")))?["pushed"] == .int(1))
        #expect(try a.run("sync").status == 6, "a second sync of the same replica waits its turn")
        watch.terminate()   // SIGTERM
        watch.waitUntilExit()
        #expect(watch.terminationStatus == 0, "\(text(err))")
        #expect(try a.run("sync", "--quiet").status == 0, "the replica is free again")

        // A short period (kept short while idle): what others send arrives; an outage is ridden
        // out; revocation ends it.
        (watch, out, err) = try startWatch(every: 1, idleMax: 2)
        _ = try b.ok("note", "add", "--kind", "observation", "--set", "ref=FROM-B")
        _ = try b.ok("sync", "--quiet")
        #expect(try eventually(10) { try holds(a, "FROM-B", syncFirst: false) }, "what another laptop sent did not arrive")
        server.kill(SIGKILL)
        _ = try a.ok("note", "add", "--kind", "observation", "--set", "ref=RESIDENT-2")
        Thread.sleep(forTimeInterval: 1.5)
        try server.start()
        #expect(try eventually(25) { try holds(b, "RESIDENT-2", syncFirst: true) }, "the watch did not catch up after the outage")
        _ = try LiveServer.admin(["devices", "revoke", "resident", "--data", server.dir])
        #expect(try eventually(10) { !watch.isRunning }, "a revoked laptop's watch keeps running")
        watch.waitUntilExit()
        #expect(watch.terminationStatus == 4, "\(text(err))")
        #expect(try a.run("sync", "--watch", "--every", "60", "--idle-max", "30").status == 2, "a cap below the period")
        #expect(try a.run("sync", "--idle-max", "30").status == 2, "--idle-max without --watch")
        let lines = text(out).split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { (try? JSONValue.parse(String($0)))?["pushed"] != nil })
        server.kill(SIGTERM)
    }

    /// The server dies (SIGKILL) in the middle of a large sync; after a restart the next sync
    /// completes, and another laptop receives every note exactly once.
    @Test func serverKilledMidSyncLosesAndDuplicatesNothing() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        let b = try laptop(server, role: "field", name: "b")
        defer { a.cleanUp(); b.cleanUp() }
        let file = a.home + "/many.jsonl"
        let lines = (0..<3000).map { #"{"kind":"survey","ref":"S-\#($0)","team":"T","narrative":"routine survey line \#($0)"}"# }
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        _ = try a.ok("note", "add", "--json-file", file)

        let sync = Process()
        sync.executableURL = URL(fileURLWithPath: CLI.binary)
        sync.arguments = ["sync", "--quiet", "--timeout", "2"]
        sync.environment = ProcessInfo.processInfo.environment.merging(["FIELDSYNC_HOME": a.home]) { $1 }
        try sync.run()
        Thread.sleep(forTimeInterval: 0.4)
        server.kill(SIGKILL)
        sync.waitUntilExit()
        try server.start()
        let done = try a.run("sync", "--json")
        #expect(done.status == 0, "\(done.err)")
        #expect(try JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"] == .int(0))
        _ = try b.ok("sync", "--quiet")
        let got = try JSONValue.parse(try b.ok("note", "list", "--json")).arrayValue ?? []
        #expect(got.count == 3000)
        #expect(Set(got.compactMap { $0["id"]?.stringValue }).count == 3000)
        server.kill(SIGTERM)
    }

    @Test func wrongLaptopClockAndScriptedUse() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        let b = try laptop(server, role: "field", name: "b")
        defer { a.cleanUp(); b.cleanUp() }
        // Three days behind and three days ahead: both sync normally.
        _ = try a.run(["note", "add", "--kind", "survey", "--set", "ref=BEHIND"], wrapper: ["FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "-3d"])
        let behind = try a.run(["sync", "--json"], wrapper: ["FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "-3d"])
        #expect(behind.status == 0, "\(behind.err)")
        let ahead = try b.run(["sync", "--json"], wrapper: ["FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "+3d"])
        #expect(ahead.status == 0, "\(ahead.err)")
        let summary = try JSONValue.parse(ahead.out)
        #expect(summary["pulled"] == .int(1) && summary["exit"] == .int(0))

        // Another sync of the same replica is running: exit 6.
        let fd = open(a.home + "/sync.lock", O_CREAT | O_RDWR, 0o600)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let busy = try a.run("sync")
        #expect(busy.status == 6)
        flock(fd, LOCK_UN); close(fd)

        // Not enrolled: a usage error. Server gone: exit 3 after the timeout.
        let lone = CLI()
        defer { lone.cleanUp() }
        _ = try lone.ok("init", "--name", "lone")
        #expect(try lone.run("sync").status == 2)
        server.kill(SIGKILL)
        let gone = try a.run("sync", "--timeout", "1")
        #expect(gone.status == 3, "\(gone.err)")
        #expect(gone.err.hasPrefix("fieldsync: cannot reach"))
    }
}

/// Changes the server refuses outright, as an older or altered client could make them: one
/// with a value its schema refuses, one it cannot even decode (a value over 1 MB). Both are
/// the laptop's: the sync exits 5 and names them, and `status` lists them with their reasons.
/// (The CLI validates what it writes, so they are written here through the store.)
@Suite(.serialized) struct RefusedChangeTests {
    @Test func changesTheServerRefusesAreNamedAndListed() throws {
        let server = try LiveServer()
        try server.start()
        // One laptop each: a change refused outright holds the laptop's later ones back.
        for (name, narrative) in [("long", String(repeating: "n", count: 25_000)), ("huge", String(repeating: "u", count: 1_100_000))] {
            let a = try laptop(server, role: "field", name: name)
            defer { a.cleanUp() }
            let replica = try ClientHome(environment: ["FIELDSYNC_HOME": a.home]).open()
            // One op, so one change: with its create, the 1 MB write would go in a change of its own.
            let made = try replica.store.commitLocal(key: replica.key) { _ in
                var d = ChangeDraft()
                d.set("narrative", to: .string(narrative), onNew: RecordID.make(.note, by: replica.key.deviceID), type: .note)
                return d
            }
            let id = try #require(made.first).id.hex
            #expect(made.count == 1)
            let sync = try a.run("sync", "--json")
            #expect(sync.status == 5, "\(name): \(sync.err)")
            let refused = try JSONValue.parse(sync.out)["refused"]?.arrayValue ?? []
            #expect(refused.compactMap { $0["id"]?.stringValue } == [id], "\(name): \(sync.out)")
            let status = try JSONValue.parse(try a.ok("status", "--json"))
            let listed = status["refusals"]?.arrayValue ?? []
            #expect(listed.compactMap { $0["id"]?.stringValue } == [id], "\(name)")
            #expect(listed.allSatisfy { !($0["reason"]?.stringValue ?? "").isEmpty && !($0["code"]?.stringValue ?? "").isEmpty })
            #expect(status["changes_waiting"] == .int(1))
            let text = try a.ok("status")
            #expect(text.contains("refused     \(id.prefix(12)) ("), "\(name): \(text)")
        }
        server.kill(SIGTERM)
    }
}

@Suite(.serialized) struct CutConnectionTests {
    /// A link that dies in the middle of the server's answer leaves the replica consistent, and
    /// the next sync finishes the job.
    /// A large import travels in requests of at most `maxUploadBytes` of changes and answers of
    /// at most `maxAnswerBytes`, so that each exchange ends on a slow link; nothing is left behind.
    @Test func aLargeImportTravelsInBoundedRequestsAndAnswers() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a"), b = try laptop(server, role: "field", name: "b")
        defer { a.cleanUp(); b.cleanUp() }
        try importSurveys(a, 3000, ref: "L")
        func rounds(_ json: String) throws -> Int64 { try #require(JSONValue.parse(json)["rounds"]?.intValue) }
        let up = try a.ok("sync", "--json")
        // About 1.1 MB of changes: at least three requests up, at least two answers down.
        #expect(try rounds(up) >= 3, "\(up)")
        #expect(try JSONValue.parse(up)["pushed"]?.intValue == JSONValue.parse(try a.ok("status", "--json"))["changes"]?.intValue)
        let down = try b.ok("sync", "--json")
        #expect(try rounds(down) >= 2, "\(down)")
        #expect(try JSONValue.parse(try b.ok("note", "list", "--json")).arrayValue?.count == 3000)
        #expect(try a.ok("note", "list", "--json") == b.ok("note", "list", "--json"))
        server.kill(SIGTERM)
    }

    /// An upload the link cut off goes again in half the bytes (`UploadWindow`), within the same
    /// sync: a link that cannot carry a day's import at once still carries it in parts.
    @Test func anUploadTheLinkCutOffGoesAgainInHalves() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        try importSurveys(a, 1000, ref: "H")
        // About 370 kB of changes: one request, under `maxUploadBytes`, unless the link cuts it.
        let proxy = try LoopbackProxy.cutting(upstream: server.port, cut: 100_000, connections: 1, direction: "up")
        defer { proxy.process.terminate() }
        try a.pointAt(port: proxy.port)
        let up = try a.run("sync", "--json", "--timeout", "30")
        #expect(up.status == 0, "\(up.err)")
        let summary = try JSONValue.parse(up.out)
        let status = try JSONValue.parse(try a.ok("status", "--json"))
        #expect(summary["pushed"]?.intValue == status["changes"]?.intValue && status["changes_waiting"] == .int(0))
        // Whole, it would have gone again in one request.
        #expect((summary["rounds"]?.intValue ?? 0) >= 2, "\(up.out)")
        server.kill(SIGTERM)
    }

    /// What a sync learned of the link outlives its process. On a link that cuts off every
    /// connection past 100 kB, a nightly `fieldsync sync` starting from the whole 512 kB would
    /// spend each night's attempts halving again; starting from what the last one learned, its
    /// first upload gets through.
    @Test func theUploadSizeALinkAllowsIsKeptForTheNextSync() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        // Twenty imports of 100 notes: twenty changes of about 37 kB, about 740 kB in all (about
        // 560 kB gzip-compressed, as uploads go once the server has said it takes them).
        for day in 0..<20 { try importSurveys(a, 100, ref: "K\(day)") }
        let proxy = try LoopbackProxy.cutting(upstream: server.port, cut: 100_000, connections: 10_000, direction: "up")
        defer { proxy.process.terminate() }
        try a.pointAt(port: proxy.port)
        func waiting() throws -> Int64 { try #require(JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"]?.intValue) }
        // The first night halves its upload after each cut (512, then 256 kB) until the timeout
        // (attempts at about 0, 0.5, 1.5 and 3.5 s); at most one upload under the cut gets
        // through on each new connection, so it cannot finish.
        let first = try a.run("sync", "--timeout", "5")
        #expect(first.status == 3, "\(first.err)")
        let learned = try #require(Int(try ClientHome(environment: ["FIELDSYNC_HOME": a.home]).open().store.meta("upload_bytes") ?? ""))
        #expect(learned < 100_000)
        let before = try waiting()
        #expect(before > 0)
        // The second night has time for two attempts only: from 512 kB again, both would be cut.
        let second = try a.run("sync", "--timeout", "1")
        // It gets through (and may finish: its uploads go compressed after the first answer).
        #expect(second.status == 3 || second.status == 0, "\(second.err)")
        #expect(try waiting() < before, "the second sync started from a size the link had already cut off")
        // A sync that says it is done has nothing left: one change over the remembered size
        // must not look like the whole outbox.
        if second.status == 0 { #expect(try waiting() == 0) }
        try a.pointAt(port: server.port)   // a good link again
        #expect(try a.run("sync", "--timeout", "60").status == 0)
        #expect(try waiting() == 0, "a sync that ended with exit 0 left changes waiting")
        server.kill(SIGTERM)
    }

    /// On a link of a few kB/s an upload keeps the laptop's send buffer full and the far end's
    /// window mostly shut for minutes. Linux counts a shut window toward TCP_USER_TIMEOUT: with
    /// it set (60 s), the kernel ended every upload that took longer ("connection timed out"),
    /// and the upload went again in halves until each part took less. About 190 kB at 2.5 kB/s
    /// (over a minute) now go up in one request.
    @Test func aSlowLinkCarriesAnUploadLongerThanAMinuteInOneRequest() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        try importSurveys(a, 470, ref: "G")
        let proxy = try LoopbackProxy.slow(upstream: server.port, rate: 2500)
        defer { proxy.process.terminate() }
        try a.pointAt(port: proxy.port)
        let up = try a.run("sync", "--json", "--timeout", "400")
        #expect(up.status == 0, "\(up.err)")
        let summary = try JSONValue.parse(up.out)
        let changes = try JSONValue.parse(try a.ok("status", "--json"))["changes"]?.intValue
        #expect(summary["rounds"] == .int(1) && summary["pushed"]?.intValue == changes, "\(up.out)")
        server.kill(SIGTERM)
    }

    @Test func connectionCutMidResponse() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        let file = a.home + "/notes.jsonl"
        // Random narratives: the answer stays above the cut once gzip-compressed.
        try (0..<400).map { #"{"kind":"survey","ref":"C-\#($0)","narrative":"line \#($0): \#(UUID().uuidString) \#(UUID().uuidString)"}"# }
            .joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        _ = try a.ok("note", "add", "--json-file", file)
        _ = try a.ok("sync", "--quiet")
        // Laptop b pulls through a proxy that cuts its first two connections 20 kB into the answer.
        let proxy = try LoopbackProxy.cutting(upstream: server.port, cut: 20_000, connections: 2, direction: "down")
        defer { proxy.process.terminate() }
        let b = CLI()
        defer { b.cleanUp() }
        _ = try b.ok("init", "--name", "b")
        _ = try b.ok("enroll", server.url, "--token", try server.invite("field", "b"), "--pin", server.pin)
        try b.pointAt(port: proxy.port)
        let first = try b.run("sync", "--timeout", "1")
        #expect(first.status == 3, "the cut link is reported as unreachable: \(first.err)")
        #expect(try JSONValue.parse(try b.ok("note", "list", "--json")).arrayValue?.count == 0, "nothing half-applied")
        let second = try b.run("sync", "--json", "--timeout", "30")
        #expect(second.status == 0, "\(second.err)")
        let notes = try JSONValue.parse(try b.ok("note", "list", "--json")).arrayValue ?? []
        #expect(notes.count == 400)
        #expect(try a.ok("note", "list", "--json") == b.ok("note", "list", "--json"))
        server.kill(SIGTERM)
    }
}

/// `Fixtures/cutting_proxy.py`: a loopback proxy that cuts its first connections after so many
/// bytes one way.
/// One of our loopback proxies (a Python script), its port read from the first line it prints.
struct LoopbackProxy {
    let process = Process()
    let port: Int

    init(_ script: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(script).standardized.path] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        port = Int(try firstLine(of: out, from: script))!
    }

    /// `Fixtures/cutting_proxy.py`: drops the first `connections` connections after `cut` bytes
    /// one way ("up" from the laptop, "down" to it).
    static func cutting(upstream: Int, cut: Int, connections: Int, direction: String) throws -> LoopbackProxy {
        try LoopbackProxy("Fixtures/cutting_proxy.py", [String(upstream), String(cut), String(connections), direction])
    }

    /// `bench/slow_proxy.py`: the laptop's bytes reach the server at `rate` bytes/s.
    static func slow(upstream: Int, rate: Int) throws -> LoopbackProxy {
        try LoopbackProxy("../../bench/slow_proxy.py", [String(upstream), String(rate)])
    }
}

extension CLI {
    /// Points this enrolled laptop at another port of loopback (a proxy): the certificate names
    /// 127.0.0.1, whatever the port.
    func pointAt(port: Int) throws {
        let sql = Process()
        sql.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        sql.arguments = ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE meta SET value=? WHERE key='server_url'\", (sys.argv[2],)); c.commit()",
                         home + "/replica.sqlite", "https://127.0.0.1:\(port)"]
        try sql.run()
        sql.waitUntilExit()
    }
}

@Suite(.serialized) struct EraseEndToEndTests {
    /// After an erase and a sync, no replica's files (the server's included) hold the erased phone
    /// number or e-mail, and every change still verifies.
    @Test func erasedPersonalDataLeavesEveryReplica() throws {
        let server = try LiveServer()
        try server.start()
        let press = try laptop(server, role: "press", name: "press-office")
        let co = try laptop(server, role: "coordinator", name: "hq")
        let field = try laptop(server, role: "field", name: "mt3")
        defer { for l in [press, co, field] { l.cleanUp() } }
        _ = try press.ok("contact", "import", CLI.samples + "/contacts.vcf")
        for l in [press, co, field] { _ = try l.ok("sync", "--quiet") }
        let contacts = try JSONValue.parse(try co.ok("contact", "list", "--json")).arrayValue ?? []
        let melnyk = try #require(contacts.first { $0["fields"]?["fn"] == "Олена Мельник" }?["id"]?.stringValue)
        let secrets = ["o.melnyk@umac.example", "+380440000001", "Мельник"]

        func filesHolding(_ needle: String) -> [String] {
            var hits: [String] = []
            for dir in [press.home, co.home, field.home, server.dir] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                    if let d = FileManager.default.contents(atPath: dir + "/" + name), d.range(of: Data(needle.utf8)) != nil { hits.append(dir + "/" + name) }
                }
            }
            return hits
        }
        #expect(!filesHolding(secrets[0]).isEmpty, "the scan must see the value before the erase")

        // Only a coordinator may erase.
        #expect(try press.run("contact", "erase", melnyk).status == 1)
        _ = try co.ok("contact", "erase", melnyk)
        for l in [co, press, field, co] { _ = try l.ok("sync", "--quiet") }
        for s in secrets { #expect(filesHolding(s).isEmpty, "\(s) still in \(filesHolding(s))") }
        let shown = try press.ok("contact", "show", melnyk)
        #expect(shown.contains("ERASED") && shown.contains("hq"))
        // The exported vCards and the log hold nothing of it either.
        #expect(!(try press.ok("export", "--format", "vcard")).contains("melnyk"))
        #expect(!(try press.ok("log")).contains("melnyk"))
        // History still verifies: a fresh laptop receives every change, signatures checked.
        let late = try laptop(server, role: "field", name: "late")
        defer { late.cleanUp() }
        #expect(try late.run("sync").status == 0)
        #expect(try late.ok("contact", "list", "--json") == co.ok("contact", "list", "--json"))
        // Review filters of the log.
        _ = try field.ok("note", "add", "--kind", "survey", "--set", "ref=S-9", "--set", "team=NTS-2")
        #expect(try field.ok("log", "--team", "NTS-2").contains("S-9"))
        #expect(try field.ok("log", "--kind", "clearance_day") == "")
        server.kill(SIGTERM)
    }
}
