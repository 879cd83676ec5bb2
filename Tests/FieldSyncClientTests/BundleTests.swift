import FieldSyncClient
import FieldSyncCore
import Foundation
import Testing

/// Issue 25, item 1: a day's work carried by bundle with no network, through the binaries.
@Suite(.serialized) struct BundleTests {
    func refs(_ cli: CLI) throws -> Set<String> {
        Set(try JSONValue.parse(try cli.ok("note", "list", "--json")).arrayValue?.compactMap { $0["fields"]?["ref"]?.stringValue } ?? [])
    }

    func admin(_ args: [String]) throws -> CLI.Result { try runProcess(LiveServer.binary, args) }

    /// Two laptops exchange a day's work by bundle with the server stopped; a bundle applied
    /// twice changes nothing; a new laptop reads one through Python's standard library; when the
    /// server is back all three converge, and the server's bundle acknowledges a laptop's work.
    @Test func aDayOffTheNetworkTravelsByBundle() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let b = try laptop(server, role: "field", name: "nts2-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        let dir = NSTemporaryDirectory() + "fieldsync-usb-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { for l in [a, b, co] { l.cleanUp() }; try? FileManager.default.removeItem(atPath: dir) }
        for l in [a, b, co] { _ = try l.ok("sync", "--quiet") }
        server.kill(SIGTERM)

        // Day 4 with no link: a's work goes to b by USB stick, b's back to a.
        let n1 = try a.ok("note", "add", "--kind", "clearance_day", "--set", "ref=A-1").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-2")
        let made = try a.run("bundle", "create", "--out", dir + "/a.fsb")
        #expect(made.status == 0 && made.out.contains("wrote 2 changes (2 of this laptop's)"), "\(made)")
        var st = stat()
        #expect(stat(dir + "/a.fsb", &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try a.run("bundle", "create", "--out", dir + "/a.fsb").status == 1, "never over an existing file")
        let took = try b.run("bundle", "apply", dir + "/a.fsb")
        #expect(took.status == 0 && took.out.contains("took 2 new changes"), "\(took)")
        let twice = try b.run("bundle", "apply", dir + "/a.fsb")
        #expect(twice.status == 0 && twice.out.contains("took 0 new changes (2 already here"), "\(twice)")
        _ = try b.ok("note", "edit", n1, "--set", "narrative=checked by nts2")
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-1")
        _ = try b.ok("bundle", "create", "--out", dir + "/b.fsb")
        #expect(try a.run("bundle", "apply", dir + "/b.fsb").status == 0)
        #expect(try refs(a) == ["A-1", "A-2", "B-1"] && refs(b) == ["A-1", "A-2", "B-1"])
        #expect(try a.ok("note", "list", "--json") == b.ok("note", "list", "--json"), "the two laptops agree")

        // The file, read with Python's standard library alone.
        let py = try runProcess("/usr/bin/python3", [CLI.repository + "/scripts/bundle-read.py", dir + "/b.fsb"])
        #expect(py.status == 0, "\(py.err)")
        let read = try JSONValue.parse(py.out)
        #expect(read["changes"] == .int(4) && read["envelope_versions"] == .array([.int(2)]), "b's two and the two it got from a: \(read)")
        #expect(read["devices"]?.arrayValue?.contains("nts2-laptop") == true)

        // The server takes a's bundle while its laptops are away; then everyone syncs.
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-3")
        _ = try a.ok("bundle", "create", "--out", dir + "/a2.fsb")
        let taken = try admin(["bundle", "apply", "--data", server.dir, dir + "/a2.fsb"])
        #expect(taken.status == 0 && taken.out.contains("refused") && taken.out.contains("; 0 refused"), "\(taken)")
        // The server's bundle for a: everything, and its receipt for a's changes.
        _ = try admin(["bundle", "create", "--data", server.dir, "--for", "mt3-laptop", "--out", dir + "/for-a.fsb"])
        let receipt = try JSONValue.parse(try a.ok("bundle", "apply", dir + "/for-a.fsb", "--json"))
        #expect(receipt["acknowledged"] == .int(3) && receipt["exit"] == .int(0), "\(receipt)")
        #expect(try JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"] == .int(0), "acknowledged by the server's receipt")
        try server.start()
        for _ in 0..<2 { for l in [a, b, co] { #expect(try l.run("sync", "--quiet").status == 0) } }
        let all: Set = ["A-1", "A-2", "A-3", "B-1"]
        for l in [a, b, co] { #expect(try refs(l) == all) }
        server.kill(SIGTERM)
    }

    /// Work carried by bundle reaches the server with the first laptop that syncs: b relays a's
    /// changes while a is still in the field, and a, back later, finds them taken. A revoked
    /// laptop's changes are refused however they come: b's sync says so once, exits 0 (b's own
    /// work is all sent), and does not send them again until the server's chain of them moves.
    @Test func aLaptopCarriesAnotherLaptopsWorkToTheServer() throws {
        let server = try LiveServer()
        let log = server.dir + "/serve.log"
        try server.start(["--log-format", "json"], log: log)
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let b = try laptop(server, role: "field", name: "nts2-laptop")
        let co = try laptop(server, role: "coordinator", name: "hq")
        let lost = try laptop(server, role: "field", name: "spare-laptop")
        let dir = NSTemporaryDirectory() + "fieldsync-usb-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { for l in [a, b, co, lost] { l.cleanUp() }; try? FileManager.default.removeItem(atPath: dir) }
        for l in [a, b, co, lost] { _ = try l.ok("sync", "--quiet") }

        _ = try a.ok("note", "add", "--kind", "clearance_day", "--set", "ref=A-1")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-2")
        _ = try a.ok("bundle", "create", "--out", dir + "/a.fsb")
        _ = try lost.ok("note", "add", "--kind", "survey", "--set", "ref=LOST-1")
        _ = try lost.ok("bundle", "create", "--out", dir + "/lost.fsb")
        for f in ["a.fsb", "lost.fsb"] { #expect(try b.run("bundle", "apply", dir + "/" + f).status == 0) }
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-1")
        // The spare laptop is stolen before it ever syncs again.
        _ = try LiveServer.admin(["devices", "revoke", "spare-laptop", "--data", server.dir])

        let sync = try JSONValue.parse(try b.ok("sync", "--json"))
        #expect(sync["exit"] == .int(0) && sync["pushed"] == .int(1) && sync["relayed"] == .int(2), "\(sync)")
        let lack = try #require(sync["server_lacks"]?.arrayValue?.first, "\(sync)")
        #expect(sync["server_lacks"]?.arrayValue?.count == 1 && lack["name"] == .string("spare-laptop") && lack["changes"] == .int(1))
        #expect(lack["reason"]?.stringValue?.contains("revoked") == true, "\(lack)")
        let line = try b.run("sync")
        #expect(line.status == 0 && line.out.contains("the server lacks 1 of spare-laptop's changes that this laptop holds and would not take them"),
                "\(line)")
        let quiet = try JSONValue.parse(try b.ok("sync", "--json"))
        #expect(quiet["rounds"] == .int(1) && quiet["relayed"] == .int(0), "a refused relay is not sent again: \(quiet)")

        _ = try co.ok("sync", "--quiet")
        #expect(try refs(co) == ["A-1", "A-2", "B-1"], "a's work reached the server before a did; the stolen laptop's did not")
        let back = try JSONValue.parse(try a.ok("sync", "--json"))
        #expect(back["exit"] == .int(0) && back["pushed"] == .int(2), "\(back)")
        #expect(try JSONValue.parse(try a.ok("status", "--json"))["changes_waiting"] == .int(0))
        #expect(try refs(a) == ["A-1", "A-2", "B-1"])
        server.kill(SIGTERM)
        // The server's log says which laptop brought whose work.
        let relays = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
            .filter { $0["relayed_for"] != nil }
        let aID = try #require(JSONValue.parse(try a.ok("status", "--json"))["device"])
        #expect(relays.contains { $0["device"] == "nts2-laptop" && $0["relayed_for"] == aID && $0["relayed_for_name"] == "mt3-laptop"
                                  && $0["relayed"] == .int(2) }, "\(relays)")
        #expect(relays.contains { $0["relayed_for_name"] == "spare-laptop" && $0["relayed"] == .int(0) })
    }

    /// Two copies of one laptop each wrote a change at the same seq, and both reached b by
    /// bundle: the second is refused, and b lists the fork as a sync would (`status`), with no
    /// server in the loop.
    @Test func aForkThatArrivesByBundleIsListed() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let b = try laptop(server, role: "field", name: "nts2-laptop")
        let copy = CLI()
        let dir = NSTemporaryDirectory() + "fieldsync-usb-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { for l in [a, b, copy] { l.cleanUp() }; try? FileManager.default.removeItem(atPath: dir) }
        for l in [a, b] { _ = try l.ok("sync", "--quiet") }
        server.kill(SIGTERM)
        #expect(try runProcess("/bin/cp", ["-a", a.home, copy.home]).status == 0)

        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=ORIGINAL")
        _ = try copy.ok("note", "add", "--kind", "survey", "--set", "ref=COPY")
        _ = try a.ok("bundle", "create", "--out", dir + "/a.fsb")
        _ = try copy.ok("bundle", "create", "--out", dir + "/copy.fsb")
        #expect(try b.run("bundle", "apply", dir + "/a.fsb").status == 0)
        let second = try b.run("bundle", "apply", dir + "/copy.fsb")
        #expect(second.status == 5 && second.out.contains("1 forks"), "\(second)")
        let status = try JSONValue.parse(try b.ok("status", "--json"))
        let fork = try #require(status["forks"]?.arrayValue?.first, "\(status)")
        #expect(fork["name"] == .string("mt3-laptop") && fork["seq"] == .int(1) && fork["this_device"] == .bool(false), "\(fork)")
        #expect(try refs(b) == ["ORIGINAL"])
        #expect(try b.ok("status").contains("fork        mt3-laptop at seq 1"))
    }

    /// A changed byte refuses that change and what follows it from its author, never the other
    /// author's; a revoked device's bundle is refused; a bundle of another server is refused.
    @Test func aTamperedOrRevokedBundleIsRefusedChangeByChange() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "mt3-laptop")
        let b = try laptop(server, role: "field", name: "nts2-laptop")
        let c = try laptop(server, role: "field", name: "eod-laptop")
        let dir = NSTemporaryDirectory() + "fieldsync-usb-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { for l in [a, b, c] { l.cleanUp() }; try? FileManager.default.removeItem(atPath: dir) }
        for l in [a, b, c] { _ = try l.ok("sync", "--quiet") }
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=TAMPERED-HERE")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=A-AFTER")
        _ = try a.ok("bundle", "create", "--out", dir + "/a.fsb")
        _ = try b.ok("bundle", "apply", dir + "/a.fsb")
        _ = try b.ok("note", "add", "--kind", "survey", "--set", "ref=B-OWN")
        _ = try b.ok("bundle", "create", "--out", dir + "/ab.fsb", "--all")
        // One byte of a's first note changed on the way.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/ab.fsb")))
        let needle = Array("TAMPERED-HERE".utf8)
        let at = try #require((0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) })
        bytes[at] = UInt8(ascii: "X")
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/bad.fsb"))
        let r = try c.run("bundle", "apply", dir + "/bad.fsb")
        #expect(r.status == 5 && r.out.contains("refused") && r.out.contains("mt3-laptop"), "\(r)")
        #expect(try refs(c) == ["B-OWN"], "b's note taken; a's tampered note and the one after it not")

        // a is revoked; c learns it at its sync; a's new bundle is refused there.
        _ = try LiveServer.admin(["devices", "revoke", "mt3-laptop", "--data", server.dir])
        _ = try c.ok("sync", "--quiet")
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=AFTER-REVOKE")
        _ = try a.ok("bundle", "create", "--out", dir + "/revoked.fsb")
        let refused = try c.run("bundle", "apply", dir + "/revoked.fsb")
        #expect(refused.status == 5 && refused.out.contains("revoked"), "\(refused)")
        #expect(try !refs(c).contains("AFTER-REVOKE"))

        // Another server's laptop cannot read it.
        let other = try LiveServer()
        try other.start()
        let stranger = try laptop(other, role: "field", name: "x")
        defer { stranger.cleanUp() }
        let foreign = try stranger.run("bundle", "apply", dir + "/ab.fsb")
        #expect(foreign.status == 1 && foreign.err.contains("another server"), "\(foreign)")
        let junk = try stranger.run("bundle", "apply", CLI.samples + "/contacts.vcf")
        #expect(junk.status == 1 && junk.err.split(separator: "\n").count == 1, "\(junk)")
        server.kill(SIGTERM)
        other.kill(SIGTERM)
    }
}

extension CLI {
    /// The repository's root, for its scripts.
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path
}
