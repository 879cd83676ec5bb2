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
        let spare = try laptop(server, role: "field", name: "spare-laptop")
        var everyone = [a, b, co]
        defer { for l in everyone + [spare] { l.cleanUp() } }
        let backup = server.dir + ".backup"
        defer { try? FileManager.default.removeItem(atPath: backup) }

        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-1")
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-1")
        for l in everyone { _ = try l.ok("sync", "--quiet") }

        // The backup, taken while the server serves: a file of its own, the owner's alone.
        let made = try admin("backup", "--data", server.dir, "--out", backup)
        #expect(made.status == 0 && made.out.contains("4 devices"), "\(made)")
        var st = stat()
        #expect(stat(backup, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let again = try admin("backup", "--data", server.dir, "--out", backup)
        #expect(again.status == 1 && again.err.split(separator: "\n").count == 1, "never over an existing file: \(again)")

        // After the backup: more work from every laptop, and a laptop enrolled since.
        let token = try server.invite("field", "late-laptop")
        let c = CLI()
        _ = try c.ok("init", "--name", "late-laptop")
        _ = try c.ok("enroll", server.url, "--token", token, "--pin", server.pin)
        everyone.append(c)
        // The spare laptop is lost: revoked after the backup.
        _ = try LiveServer.admin(["devices", "revoke", "spare-laptop", "--data", server.dir])
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
        #expect(restored.status == 0 && restored.out.contains("2 enrolments and revocations"), "\(restored)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: server.dir).filter { $0.hasPrefix("server.sqlite.before-restore-") }
        #expect(kept.count == 1)
        try server.start()

        // What happened after the backup stays done: the lost laptop stays revoked, and the
        // invite used since does not enrol a second laptop.
        #expect(try spare.run("sync", "--quiet").status == 4)
        let again2 = CLI()
        defer { again2.cleanUp() }
        _ = try again2.ok("init", "--name", "intruder")
        #expect(try again2.run("enroll", server.url, "--token", token, "--pin", server.pin).status != 0, "a used invite enrols once")
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

    /// A laptop lost after its work was acknowledged, then the server restored from a backup
    /// made before that work: only the laptops that pulled it still hold it. The first of them to
    /// sync relays it (its author's signatures hold, and it was revoked only after that work);
    /// then a new laptop gets it from the server alone.
    @Test func aLostLaptopsWorkComesBackFromTheLaptopsThatHoldIt() throws {
        let server = try LiveServer()
        try server.start()
        let lost = try laptop(server, role: "field", name: "mt3-laptop")
        let hq = try laptop(server, role: "coordinator", name: "hq")
        var everyone = [lost, hq]
        defer { for l in everyone { l.cleanUp() } }
        let backup = server.dir + ".backup"
        defer { try? FileManager.default.removeItem(atPath: backup) }
        for l in everyone { _ = try l.ok("sync", "--quiet") }
        #expect(try admin("backup", "--data", server.dir, "--out", backup).status == 0)

        _ = try lost.ok("note", "add", "--kind", "survey", "--set", "ref=L-1")
        _ = try lost.ok("note", "add", "--kind", "survey", "--set", "ref=L-2")
        _ = try lost.ok("sync", "--quiet")
        let clean = try JSONValue.parse(try hq.ok("sync", "--json"))
        #expect(clean["pulled"] == .int(2) && clean["server_lacks"] == .array([]), "\(clean)")
        // The laptop is lost: revoked, never seen again. Then the server's disk goes.
        _ = try LiveServer.admin(["devices", "revoke", "mt3-laptop", "--data", server.dir])
        server.kill(SIGTERM)
        #expect(try admin("restore", "--data", server.dir, backup).status == 0)
        try server.start()

        let told = try JSONValue.parse(try hq.ok("sync", "--json"))
        #expect(told["exit"] == .int(0) && told["relayed"] == .int(2) && told["server_lacks"] == .array([]), "\(told)")
        let again = try JSONValue.parse(try hq.ok("sync", "--json"))
        #expect(again["relayed"] == .int(0) && again["rounds"] == .int(1), "nothing is relayed twice: \(again)")
        let fresh = try laptop(server, role: "coordinator", name: "hq-2")
        everyone.append(fresh)
        _ = try fresh.ok("sync", "--quiet")
        #expect(try notes(fresh) == ["L-1", "L-2"])
        server.kill(SIGTERM)
    }

    func deviceID(_ cli: CLI) throws -> String {
        try #require(JSONValue.parse(try cli.ok("status", "--json"))["device"]?.stringValue)
    }
}

/// Issue 25, item 2: a laptop restored from a copy of its folder, or two copies of one replica,
/// never fork: the server's chain is taken back and what only this copy wrote is signed again.
@Suite(.serialized) struct RestoredLaptopTests {
    func refs(_ cli: CLI) throws -> Set<String> {
        Set(try JSONValue.parse(try cli.ok("note", "list", "--json")).arrayValue?.compactMap { $0["fields"]?["ref"]?.stringValue } ?? [])
    }

    /// `cp -a` of a replica folder, as a backup tool would keep it.
    func copyFolder(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        let r = try runProcess("/bin/cp", ["-a", from, to])
        #expect(r.status == 0, "\(r.err)")
    }

    @Test func aLaptopRestoredFromAnOldCopyWritesAndSyncsWithNothingLost() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        let saved = a.home + ".saved"
        defer { a.cleanUp(); co.cleanUp(); try? FileManager.default.removeItem(atPath: saved) }

        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-1")
        _ = try a.ok("sync", "--quiet")
        // The backup: two syncs before the disk is lost. A-2 is written but not yet synced.
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-2")
        try copyFolder(a.home, saved)
        _ = try a.ok("sync", "--quiet")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-3")
        let id3 = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-4").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try a.ok("sync", "--quiet")
        _ = try co.ok("sync", "--quiet")
        _ = try co.ok("note", "edit", id3, "--set", "narrative=checked by hq")
        _ = try co.ok("sync", "--quiet")

        // The disk is lost; the laptop comes back from the copy and is used before any sync.
        try copyFolder(saved, a.home)
        let r5 = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-5").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try a.ok("note", "edit", r5, "--set", "narrative=after the restore")
        let synced = try a.run("sync", "--json")
        #expect(synced.status == 0, "\(synced.out) \(synced.err)")
        let summary = try JSONValue.parse(synced.out)
        #expect(summary["resigned"] == .int(2) && summary["taken_back"] == .int(2), "\(summary)")
        #expect(try JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"] == .int(0))
        _ = try co.ok("sync", "--quiet")
        let all: Set = ["A-1", "A-2", "A-3", "A-4", "A-5"]
        #expect(try refs(a) == all && refs(co) == all)
        #expect(try a.ok("note", "list", "--json") == co.ok("note", "list", "--json"), "the two replicas agree")
        let note5 = try JSONValue.parse(try co.ok("note", "show", r5, "--json"))
        #expect(note5["fields"]?["narrative"] == "after the restore", "an edit of a change signed again follows it")
        // And the next sync is an ordinary one.
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-6")
        #expect(try a.run("sync", "--quiet").status == 0)
        server.kill(SIGTERM)
    }

    @Test func twoCopiesOfOneReplicaBothWriteOfflineAndBothSync() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=BASE")
        _ = try a.ok("sync", "--quiet")
        let twin = CLI()
        try copyFolder(a.home, twin.home)
        defer { a.cleanUp(); co.cleanUp(); twin.cleanUp() }

        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=ONE-1")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=ONE-2")
        _ = try twin.ok("note", "add", "--kind", "survey", "--set", "ref=TWO-1")
        for l in [a, twin, a, twin, co] {
            let r = try l.run("sync", "--quiet")
            #expect(r.status == 0, "\(r.err)")
        }
        let all: Set = ["BASE", "ONE-1", "ONE-2", "TWO-1"]
        for l in [a, twin, co] { #expect(try refs(l) == all) }
        #expect(try JSONValue.parse(try twin.ok("status", "--json"))["changes_waiting"] == .int(0))
        server.kill(SIGTERM)
    }

    /// A fork that has spread: a copy of a laptop and the laptop itself both wrote as one
    /// device, and both versions left (one by bundle to another laptop, one to the server). The
    /// server keeps its version; the laptop whose version is refused is told (exit 5); the
    /// server and every replica list the fork; the laptop holding the refused version gives it
    /// up for the server's; `rekey` moves the forked laptop to a new key, and once everyone
    /// syncs nothing is lost.
    @Test func aForkThatSpreadIsListedAndMendedByRekey() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let c = try laptop(server, role: "field", name: "nts2-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=BASE")
        _ = try a.ok("sync", "--quiet")
        let twin = CLI()
        try copyFolder(a.home, twin.home)
        let usb = NSTemporaryDirectory() + "fieldsync-usb-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: usb, withIntermediateDirectories: true)
        defer { for l in [a, c, co, twin] { l.cleanUp() }; try? FileManager.default.removeItem(atPath: usb) }

        // a's seq 2 and 3 leave by bundle for c; the twin's seq 2 reaches the server first.
        let x = try a.ok("note", "add", "--kind", "survey", "--set", "ref=FROM-A").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try a.ok("note", "edit", x, "--set", "narrative=written on a")
        _ = try a.ok("bundle", "create", "--out", usb + "/a.fsb")
        #expect(try c.run("bundle", "apply", usb + "/a.fsb").status == 0)
        _ = try twin.ok("note", "add", "--kind", "survey", "--set", "ref=FROM-TWIN")
        #expect(try twin.run("sync", "--quiet").status == 0)

        // a: what it bundled cannot be taken back and signed again, for c holds it.
        let refused = try a.run("sync", "--json")
        #expect(refused.status == 5, "\(refused)")
        #expect(try JSONValue.parse(refused.out)["error"]?["message"]?.stringValue?.contains("fieldsync rekey") == true, "\(refused.out)")
        let mine = try JSONValue.parse(try a.ok("status", "--json"))["forks"]?.arrayValue ?? []
        #expect(mine.count == 1 && mine.first?["seq"] == .int(2) && mine.first?["this_device"] == .bool(true), "\(mine)")
        #expect(try a.ok("status").contains("fork        THIS DEVICE at seq 2"))
        #expect(try refs(a) == ["BASE", "FROM-A"], "nothing of a's is lost meanwhile")
        let listed = try runProcess(LiveServer.binary, ["devices", "list", "--data", server.dir])
        #expect(listed.status == 0 && listed.out.contains("FORKED at seq 2"), "\(listed)")
        let listedJSON = try JSONValue.parse(try runProcess(LiveServer.binary, ["devices", "list", "--data", server.dir, "--json"]).out)
        #expect(listedJSON.arrayValue?.first { $0["name"] == "mt3-laptop" }?["forks"]?.arrayValue?.count == 1, "\(listedJSON)")

        // c held a's refused version: it takes the server's chain instead, and lists the fork.
        let cs = try c.run("sync", "--json")
        #expect(cs.status == 0, "\(cs)")
        #expect(try JSONValue.parse(cs.out)["fork_dropped"] == .int(2), "\(cs.out)")
        #expect(try refs(c) == ["BASE", "FROM-TWIN"])
        let cForks = try JSONValue.parse(try c.ok("status", "--json"))["forks"]?.arrayValue ?? []
        #expect(cForks.count == 2 && cForks.allSatisfy { $0["name"] == "mt3-laptop" && $0["this_device"] == .bool(false) }, "\(cForks)")

        // The administrator sends an invite; a moves to a new key and signs its work again.
        let token = try server.invite("field", "mt3-laptop-2")
        let rekeyed = try a.run("rekey", "--token", token, "--json")
        #expect(rekeyed.status == 0, "\(rekeyed)")
        let r = try JSONValue.parse(rekeyed.out)
        #expect(r["resigned"] == .int(2) && r["taken"] == .int(1) && r["name"] == "mt3-laptop-2", "\(r)")
        #expect(!FileManager.default.fileExists(atPath: a.home + "/device.key.rekey"))
        #expect(try a.run("rekey", "--token", token).status != 0, "a spent invite moves nothing")
        #expect(try a.run("sync", "--quiet").status == 0)
        for l in [c, co, twin, a] { #expect(try l.run("sync", "--quiet").status == 0) }
        let all: Set = ["BASE", "FROM-A", "FROM-TWIN"]
        for l in [a, c, co, twin] { #expect(try refs(l) == all) }
        #expect(try a.ok("note", "list", "--json") == co.ok("note", "list", "--json"), "the replicas agree")
        #expect(try c.ok("note", "list", "--json") == co.ok("note", "list", "--json"))
        let fromA = try JSONValue.parse(try co.ok("note", "show", "FROM-A", "--json"))
        #expect(fromA["fields"]?["narrative"] == "written on a", "the edit signed again follows its note")
        let st = try JSONValue.parse(try a.ok("status", "--json"))
        #expect(st["name"] == "mt3-laptop-2" && st["changes_waiting"] == .int(0) && st["rekeyed_from"] != .null, "\(st)")
        // The twin goes on as the old device, a as the new one.
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=AFTER")
        _ = try twin.ok("note", "add", "--kind", "survey", "--set", "ref=TWIN-AFTER")
        for l in [a, twin, co] { #expect(try l.run("sync", "--quiet").status == 0) }
        #expect(try refs(co) == all.union(["AFTER", "TWIN-AFTER"]))
        server.kill(SIGTERM)
    }
}
