import FieldSyncCore
import Foundation
import Synchronization
import Testing

/// Several `fieldsync-server serve` processes on one PostgreSQL database, behind a TCP load
/// balancer (scripts/tcp-balancer.py), with real laptops (`fieldsync` processes) syncing through
/// it while one process is killed and started again (issue 24).
final class PostgresServers: @unchecked Sendable {
    static let baseURL = ProcessInfo.processInfo.environment["FIELDSYNC_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    let dir = NSTemporaryDirectory() + "fieldsync-pg-" + UUID().uuidString
    let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
    let url: String
    let pin: String
    var processes: [Process?] = []
    var ports: [Int] = []
    var balancer: Process?
    var balancerPort = 0

    init(base: String) throws {
        url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        try Self.psql(base, "CREATE SCHEMA \(schema)")
        let out = try LiveServer.admin(["init", "--data", dir, "--hostname", "127.0.0.1", "--postgres", url])
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("CA pin: ") }) else { throw CLIError("no pin in: \(out)") }
        pin = String(line.dropFirst("CA pin: ".count))
    }

    static func psql(_ base: String, _ sql: String) throws {
        let r = try runProcess("/usr/bin/env", ["psql", "-v", "ON_ERROR_STOP=1", "-qAt", base, "-c", sql])
        guard r.status == 0 else { throw CLIError("psql \(sql): \(r.err)") }
    }

    func query(_ sql: String) throws -> String {
        let r = try runProcess("/usr/bin/env", ["psql", "-v", "ON_ERROR_STOP=1", "-qAt", Self.baseURL!, "-c", "SET search_path TO \(schema); \(sql)"])
        guard r.status == 0 else { throw CLIError("psql \(sql): \(r.err)") }
        return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func admin(_ args: String...) throws -> String { try LiveServer.admin(args + ["--data", dir, "--postgres", url]) }

    /// Starts process `i` (on its old port after a restart).
    func start(_ i: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: LiveServer.binary)
        p.arguments = ["serve", "--data", dir, "--postgres", url, "--port", String(i < ports.count ? ports[i] : 0), "--postgres-connections", "4"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let port = Int(try firstLine(of: out, from: "fieldsync-server serve").split(separator: ":").last!)!
        if i < ports.count { ports[i] = port; processes[i] = p } else { ports.append(port); processes.append(p) }
    }

    func kill(_ i: Int, _ signal: Int32 = SIGKILL) {
        guard let p = processes[i] else { return }
        Foundation.kill(p.processIdentifier, signal)
        p.waitUntilExit()
        processes[i] = nil
    }

    func startBalancer() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../scripts/tcp-balancer.py").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script] + ports.map(String.init)
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        balancerPort = Int(try firstLine(of: out, from: "tcp-balancer").split(separator: " ").last!)!
        balancer = p
    }

    var balancedURL: String { "https://127.0.0.1:\(balancerPort)" }

    func laptop(role: String, name: String) throws -> CLI {
        let cli = CLI()
        _ = try cli.ok("init", "--name", name, "--role", role)
        let token = try admin("invite", "--role", role, "--name", name).trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try cli.ok("enroll", balancedURL, "--token", token, "--pin", pin)
        return cli
    }

    deinit {
        for i in processes.indices { kill(i) }
        if let b = balancer { Foundation.kill(b.processIdentifier, SIGKILL); b.waitUntilExit() }
        if let base = Self.baseURL { try? Self.psql(base, "DROP SCHEMA \(schema) CASCADE") }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

@Suite(.serialized) struct PostgresEndToEndTests {
    /// Thirty laptops sync at once through three processes (the balancer picks one per
    /// connection); one process is killed with SIGKILL while they do and started again. Every
    /// acknowledged change is stored once, nothing waits, and every laptop converges.
    @Test(.timeLimit(.minutes(10))) func severalProcessesOneDatabase() throws {
        guard let base = PostgresServers.baseURL else { return }
        let servers = try PostgresServers(base: base)
        for i in 0..<3 { try servers.start(i) }
        try servers.startBalancer()
        var laptops: [CLI] = []
        defer { for l in laptops { l.cleanUp() } }
        for i in 0..<30 {
            let role = i < 26 ? "field" : i < 28 ? "coordinator" : "press"
            laptops.append(try servers.laptop(role: role, name: "laptop-\(i)"))
        }
        let field = Array(laptops[0..<26]), coordinators = Array(laptops[26..<28]), press = Array(laptops[28..<30])
        for (i, l) in field.enumerated() { try importSurveys(l, 3, ref: "L\(i)") }
        for (i, l) in press.enumerated() { _ = try l.ok("contact", "add", "--set", "fn=Press contact \(i)") }
        // Round one, all at once; process 1 is killed half-way through and started again.
        let failures = Self.syncAll(laptops) {
            Thread.sleep(forTimeInterval: 0.4)
            servers.kill(1)
        }
        try servers.start(1)
        #expect(failures.isEmpty, "\(failures)")
        // Everyone edits one shared note, then two more rounds.
        _ = try coordinators[0].ok("sync", "--quiet")
        let notes = try JSONValue.parse(Array(try coordinators[0].ok("note", "list", "--json").utf8)).arrayValue ?? []
        let shared = try #require(notes.first?["id"]?.stringValue)
        for (i, l) in (field.prefix(4) + coordinators).enumerated() {
            _ = try l.ok("sync", "--quiet")
            _ = try l.ok("note", "edit", shared, "--add", "tags=seen-\(i)")
        }
        for _ in 0..<2 { #expect(Self.syncAll(laptops).isEmpty) }

        let listings = try laptops.map { try $0.ok("note", "list", "--json") }
        #expect(Set(listings).count == 1, "every laptop lists the same notes")
        #expect(try JSONValue.parse(Array(listings[0].utf8)).arrayValue?.count == 26 * 3)
        #expect(Set(try laptops.map { try $0.ok("contact", "list", "--json") }).count == 1)
        #expect(Set(try laptops.map { try $0.ok("conflicts", "--json") }).count == 1)
        for l in laptops {
            let s = try JSONValue.parse(Array(try l.ok("sync", "--json").utf8))
            #expect(s["pushed"]?.intValue == 0 && s["pulled"]?.intValue == 0, "\(s)")
        }
        // The database: each change once, none held, each chain whole.
        #expect(try servers.query("SELECT count(*) = count(DISTINCT id) FROM changes") == "t")
        #expect(try servers.query("SELECT count(*) FROM pending") == "0")
        #expect(try servers.query("SELECT bool_and(h.seq = (SELECT count(*) FROM changes c WHERE c.device = h.device)) FROM heads h") == "t")
        #expect(try servers.query("SELECT count(*) FROM records WHERE type = 'note'") == "78")

        // A revocation made by the administrator holds on every process.
        _ = try servers.admin("devices", "revoke", "laptop-1")
        _ = try field[1].ok("note", "edit", shared, "--set", "narrative=after the laptop was lost")
        for _ in 0..<3 {
            let r = try field[1].run("sync", "--json")
            #expect(r.status == 5 || r.status == 4, "a revoked laptop's change is refused: \(r.out) \(r.err)")
        }
        #expect(try servers.admin("devices", "list", "--json").contains("\"revoked\":true"))
    }

    /// Syncs every laptop, eight at a time, each until it exits 0 (a sync cut off by a killed
    /// process exits 3, and goes again), while `meanwhile` runs; returns what never got through.
    static func syncAll(_ laptops: [CLI], meanwhile: (@Sendable () -> Void)? = nil) -> [String] {
        let failures = Mutex<[String]>([])
        let slots = DispatchSemaphore(value: 8)
        let group = DispatchGroup()
        if let meanwhile { DispatchQueue.global().async(group: group) { meanwhile() } }
        for l in laptops {
            slots.wait()
            DispatchQueue.global().async(group: group) {
                defer { slots.signal() }
                var last = ""
                for _ in 0..<5 {
                    guard let r = try? l.run("sync", "--quiet", "--timeout", "60") else { continue }
                    if r.status == 0 { return }
                    last = "exit \(r.status): \(r.err)"
                    guard r.status == 3 else { break }
                }
                failures.withLock { $0.append(last) }
            }
        }
        group.wait()
        return failures.withLock { $0 }
    }

    /// A server that ran on SQLite, with laptops, an erasure and a revoked laptop, moves to
    /// PostgreSQL; its laptops sync on as if nothing happened, and a new laptop gets everything.
    @Test(.timeLimit(.minutes(10))) func aSQLiteServerMovesToPostgres() throws {
        guard let base = PostgresServers.baseURL else { return }
        let schema = "mig_" + UUID().uuidString.prefix(8).lowercased()
        try PostgresServers.psql(base, "CREATE SCHEMA \(schema)")
        defer { try? PostgresServers.psql(base, "DROP SCHEMA \(schema) CASCADE") }
        let url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        let server = try LiveServer()
        try server.start()
        let f = try laptop(server, role: "field", name: "mt3"), co = try laptop(server, role: "coordinator", name: "hq")
        let press = try laptop(server, role: "press", name: "press"), lost = try laptop(server, role: "field", name: "lost")
        defer { for l in [f, co, press, lost] { l.cleanUp() } }
        try importSurveys(f, 30, ref: "MT3")
        let note = try #require(try JSONValue.parse(Array(try f.ok("note", "list", "--json").utf8)).arrayValue?.first?["id"]?.stringValue)
        _ = try f.ok("sync", "--quiet")
        _ = try co.ok("sync", "--quiet")
        _ = try co.ok("note", "edit", note, "--add", "tags=checked")
        _ = try f.ok("note", "edit", note, "--set", "narrative=walked again")
        let olena = try press.ok("contact", "add", "--set", "fn=Olena Verbytska", "--set", "email=olena@private.example")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try press.ok("contact", "add", "--set", "fn=Kari Lunde")
        _ = try press.ok("sync", "--quiet")
        _ = try co.ok("sync", "--quiet")
        _ = try co.ok("contact", "erase", olena)
        _ = try lost.ok("note", "add", "--kind", "survey", "--set", "ref=LOST-1")
        for _ in 0..<2 { for l in [f, co, press, lost] { _ = try l.ok("sync", "--quiet") } }
        _ = try LiveServer.admin(["devices", "revoke", "lost", "--data", server.dir])
        let before = try f.ok("note", "list", "--json")
        // Not while it serves (what laptops sent meanwhile would stay behind).
        let busy = try runProcess(LiveServer.binary, ["migrate", "--from", server.dir, "--postgres", url])
        #expect(busy.status == 1 && busy.err.contains("stop it first") && busy.err.split(separator: "\n").count == 1, "\(busy)")
        server.kill(SIGTERM)

        let moved = try LiveServer.admin(["migrate", "--from", server.dir, "--postgres", url])
        #expect(moved.contains("moved 4 devices"), "\(moved)")
        // The old file is no longer served on its own.
        let again = try runProcess(LiveServer.binary, ["serve", "--data", server.dir, "--port", "0"])
        #expect(again.status == 1 && again.err.contains("belongs to a server on PostgreSQL"), "\(again.err)")
        try server.start(["--postgres", url])

        for l in [f, co, press] {
            let s = try JSONValue.parse(Array(try l.ok("sync", "--json").utf8))
            #expect(s["exit"]?.intValue == 0 && s["pulled"]?.intValue == 0, "a laptop finds nothing new after the move: \(s)")
        }
        _ = try f.ok("note", "edit", note, "--set", "team=MT-3")
        _ = try f.ok("sync", "--quiet")
        _ = try co.ok("sync", "--quiet")
        let fresh = CLI()
        defer { fresh.cleanUp() }
        _ = try fresh.ok("init", "--name", "new", "--role", "coordinator")
        let token = try LiveServer.admin(["invite", "--data", server.dir, "--postgres", url, "--role", "coordinator", "--name", "new"])
        _ = try fresh.ok("enroll", server.url, "--token", token.trimmingCharacters(in: .whitespacesAndNewlines), "--pin", server.pin)
        _ = try fresh.ok("sync", "--quiet")
        #expect(try fresh.ok("note", "list", "--json") == (try co.ok("note", "list", "--json")))
        #expect(try fresh.ok("note", "list", "--json") != before, "the edit made after the move arrived")
        #expect(try fresh.ok("contact", "list", "--json") == (try press.ok("contact", "list", "--json")))
        // The erased person's values did not come back through the move, and the revoked laptop stays cut off.
        let stored = try runProcess("/usr/bin/env", ["psql", "-qAt", base, "-c",
                                                     "SELECT count(*) FROM \(schema).changes WHERE position('olena@private.example'::bytea IN envelope) > 0"])
        #expect(stored.out.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(stored.out) \(stored.err)")
        _ = try lost.ok("note", "add", "--kind", "survey", "--set", "ref=LOST-2")
        #expect(try lost.run("sync").status != 0)
        #expect(try LiveServer.admin(["devices", "list", "--data", server.dir, "--postgres", url, "--json"]).contains("\"revoked\":true"))
    }
}
