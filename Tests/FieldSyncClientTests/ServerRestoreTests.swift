import FieldSyncClient
import FieldSyncCore
import Foundation
import Testing

/// Issue 25, item 5: a server backed up while it serves, then restored from that backup after
/// it took more work, loses nothing: its laptops send again what it lost.
@Suite(.serialized) struct ServerRestoreTests {
    func notes(_ cli: CLI) throws -> Set<String> {
        Set(try JSONValue.parse(try cli.ok("note", "list", "--json")).arrayValue?.compactMap { $0["fields"]?["ref"]?.stringValue } ?? [])
    }

    func admin(_ args: String...) throws -> CLI.Result { try runProcess(LiveServer.binary, args) }

    @Test func aServerRestoredFromABackupLosesNothingOnceItsLaptopsSync() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let b = try laptop(server, role: "field", name: "nts2-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        var everyone = [a, b, co]
        defer { for l in everyone { l.cleanUp() } }
        let backup = server.dir + ".backup"
        defer { try? FileManager.default.removeItem(atPath: backup) }

        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-1")
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-1")
        for l in everyone { _ = try l.ok("sync", "--quiet") }

        // The backup, taken while the server serves: a file of its own, the owner's alone.
        let made = try admin("backup", "--data", server.dir, "--out", backup)
        #expect(made.status == 0 && made.out.contains("3 devices"), "\(made)")
        var st = stat()
        #expect(stat(backup, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let again = try admin("backup", "--data", server.dir, "--out", backup)
        #expect(again.status == 1 && again.err.split(separator: "\n").count == 1, "never over an existing file: \(again)")

        // After the backup: more work from every laptop, and a laptop enrolled since.
        let c = try laptop(server, role: "field", name: "late-laptop")
        everyone.append(c)
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-2")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-3")
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-2")
        _ = try c.ok("note", "add", "--kind", "survey", "--set", "ref=C-1")
        for l in everyone { _ = try l.ok("sync", "--quiet") }
        #expect(try JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"] == .int(0), "acknowledged before the restore")

        // Restore: refused while the server serves; then put in place, the old database kept.
        let busy = try admin("restore", "--data", server.dir, backup)
        #expect(busy.status == 1 && busy.err.contains("stop it first"), "\(busy)")
        server.kill(SIGTERM)
        let restored = try admin("restore", "--data", server.dir, backup)
        #expect(restored.status == 0 && restored.out.contains("1 enrolments and revocations"), "\(restored)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: server.dir).filter { $0.hasPrefix("server.sqlite.before-restore-") }
        #expect(kept.count == 1)
        try server.start()

        // Each laptop sends again what the server lost; everyone converges on everything.
        let sent = try JSONValue.parse(try a.ok("sync", "--json"))
        #expect(sent["resent"] == .int(2) && sent["exit"] == .int(0), "\(sent)")
        for _ in 0..<2 { for l in everyone { #expect(try l.run("sync", "--quiet").status == 0) } }
        let all: Set = ["A-1", "A-2", "A-3", "B-1", "B-2", "C-1"]
        for l in everyone { #expect(try notes(l) == all) }
        // A new laptop sees it all from the server alone.
        let fresh = try laptop(server, role: "coordinator", name: "hq-2")
        everyone.append(fresh)
        _ = try fresh.ok("sync", "--quiet")
        #expect(try notes(fresh) == all)
        server.kill(SIGTERM)

        // Into an empty folder, the backup alone is a whole server: same keys, same pin.
        let elsewhere = server.dir + "-rebuilt"
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        let rebuilt = try admin("restore", "--data", elsewhere, backup)
        #expect(rebuilt.status == 0 && rebuilt.out.contains("revoke again"), "\(rebuilt)")
        #expect(FileManager.default.contents(atPath: elsewhere + "/server.key") == FileManager.default.contents(atPath: server.dir + "/server.key"))
        let list = try admin("devices", "list", "--data", elsewhere)
        #expect(list.status == 0 && list.out.contains("mt3-laptop") && !list.out.contains("late-laptop"), "\(list)")
        // Another server's backup is refused, and a file that is not a backup.
        let other = try LiveServer()
        let foreign = try admin("restore", "--data", other.dir, backup)
        #expect(foreign.status == 1 && foreign.err.contains("another server"), "\(foreign)")
        let junk = server.dir + ".junk"
        try Data("not a backup".utf8).write(to: URL(fileURLWithPath: junk))
        defer { try? FileManager.default.removeItem(atPath: junk) }
        let refused = try admin("restore", "--data", elsewhere + "-2", junk)
        #expect(refused.status == 1 && refused.err.split(separator: "\n").count == 1, "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: elsewhere + "-2/server.key"), "nothing written for a bad backup")
        try? FileManager.default.removeItem(atPath: elsewhere + "-2")
    }
}
