import FieldSyncCore
import Foundation
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
    @Test(.timeLimit(.minutes(10))) func severalProcessesOneDatabase() throws {
        guard let base = PostgresServers.baseURL else { return }
        let servers = try PostgresServers(base: base)
        for i in 0..<3 { try servers.start(i) }
        try servers.startBalancer()
        let f1 = try servers.laptop(role: "field", name: "mt3"), f2 = try servers.laptop(role: "field", name: "nts2")
        let co = try servers.laptop(role: "coordinator", name: "hq"), press = try servers.laptop(role: "press", name: "press")
        defer { for l in [f1, f2, co, press] { l.cleanUp() } }
        let everyone = [f1, f2, co, press]

        try importSurveys(f1, 40, ref: "MT3")
        try importSurveys(f2, 40, ref: "NTS2")
        _ = try press.ok("contact", "add", "--set", "fn=Olena Press", "--set", "org=Kharkiv Daily")
        for l in everyone { _ = try l.ok("sync", "--quiet") }
        // Both field laptops and the coordinator edit one note offline; then all sync while
        // process 1 is killed half-way and started again.
        let shared = try f1.ok("note", "list", "--json")
        let id = try #require(try JSONValue.parse(Array(shared.utf8)).arrayValue?.first?["id"]?.stringValue)
        _ = try f1.ok("sync", "--quiet"); _ = try f2.ok("sync", "--quiet")
        _ = try f1.ok("note", "edit", id, "--set", "narrative=checked by MT-3")
        _ = try f2.ok("note", "edit", id, "--set", "narrative=checked by NTS-2")
        _ = try co.ok("note", "edit", id, "--add", "tags=reviewed")
        try importSurveys(f2, 25, ref: "NTS2-B")
        _ = try f1.ok("sync", "--quiet")
        servers.kill(1)
        _ = try f2.ok("sync", "--quiet")
        try servers.start(1)
        for _ in 0..<2 { for l in everyone { _ = try l.ok("sync", "--quiet") } }

        // Every laptop holds the same records, conflicts included; nothing waits to be sent.
        let listings = try everyone.map { try $0.ok("note", "list", "--json") }
        #expect(Set(listings).count == 1, "every laptop lists the same notes")
        #expect(try JSONValue.parse(Array(listings[0].utf8)).arrayValue?.count == 105)
        #expect(Set(try everyone.map { try $0.ok("conflicts", "--json") }).count == 1)
        #expect(try co.ok("contact", "list").contains("Olena Press"))
        for l in everyone {
            let s = try JSONValue.parse(Array(try l.ok("sync", "--json").utf8))
            #expect(s["pushed"]?.intValue == 0 && s["pulled"]?.intValue == 0, "\(s)")
        }
        // The database: each change once, none held, each chain whole.
        #expect(try servers.query("SELECT count(*) = count(DISTINCT id) FROM changes") == "t")
        #expect(try servers.query("SELECT count(*) FROM pending") == "0")
        #expect(try servers.query("SELECT bool_and(h.seq = (SELECT count(*) FROM changes c WHERE c.device = h.device)) FROM heads h") == "t")
        #expect(try servers.query("SELECT count(*) FROM records WHERE type = 'note'") == "105")

        // A revocation made by the administrator holds on every process.
        _ = try servers.admin("devices", "revoke", "nts2")
        _ = try f2.ok("note", "edit", id, "--set", "narrative=after the laptop was lost")
        for _ in 0..<3 {
            let r = try f2.run("sync", "--json")
            #expect(r.status == 5 || r.status == 4, "a revoked laptop's change is refused: \(r.out) \(r.err)")
        }
        let list = try servers.admin("devices", "list", "--json")
        #expect(list.contains("\"revoked\":true"))
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
