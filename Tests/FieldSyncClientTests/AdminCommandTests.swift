import FieldSyncClient
import FieldSyncCore
import Foundation
import Testing

/// Issue 27: what an administrator and a user run, through the binaries.
@Suite(.serialized) struct AdminCommandTests {
    func admin(_ args: [String]) throws -> CLI.Result { try runProcess(LiveServer.binary, args) }

    /// `invite list` shows the open invites (none of their tokens), `invite cancel` withdraws one
    /// by its ID or name, and the withdrawn token enrols nothing.
    @Test func invitesAreListedAndCancelled() throws {
        let server = try LiveServer()
        try server.start()
        #expect(try admin(["invite", "list", "--data", server.dir]).out == "(none open)\n")
        let kept = try server.invite("field", "mt3-laptop")
        let dropped = try server.invite("press", "press-2")
        let list = try admin(["invite", "list", "--data", server.dir]).out.split(separator: "\n")
        #expect(list.count == 3 && list[0].hasPrefix("ID") && list.contains { $0.contains("press-2") && $0.contains("open") })
        #expect(!list.joined().contains(kept) && !list.joined().contains(dropped), "a listing never shows a token")
        let cancelled = try admin(["invite", "cancel", "press-2", "--data", server.dir])
        #expect(cancelled.status == 0 && cancelled.out.contains("cancelled invite") && cancelled.out.contains("press-2"), "\(cancelled)")
        #expect(try admin(["invite", "cancel", "press-2", "--data", server.dir]).status == 1, "nothing left to cancel")
        // The withdrawn token enrols nothing; the other still does, once, and then shows as used.
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "p")
        let refused = try cli.run("enroll", server.url, "--token", dropped, "--pin", server.pin)
        #expect(refused.status != 0)
        _ = try cli.ok("enroll", server.url, "--token", kept, "--pin", server.pin)
        let all = try JSONValue.parse(try admin(["invite", "list", "--all", "--json", "--data", server.dir]).out).arrayValue ?? []
        #expect(all.count == 1 && all[0]["state"] == "used" && all[0]["name"] == "mt3-laptop", "\(all)")
        server.kill(SIGTERM)
    }

    /// On a terminal `devices revoke` asks first and does nothing unless told yes; a script is
    /// never asked; `--yes` skips the question.
    @Test func revokeAsksAPersonFirst() throws {
        let server = try LiveServer()
        let a = CLI(), b = CLI()
        defer { a.cleanUp(); b.cleanUp() }
        try server.start()
        _ = try a.ok("init", "--name", "a")
        _ = try a.ok("enroll", server.url, "--token", try server.invite("field", "mt3-laptop"), "--pin", server.pin)
        // `script` gives the command a terminal; "n" is the person's answer.
        let command = "\(LiveServer.binary) devices revoke mt3-laptop --data \(server.dir)"
        let no = try runProcess("/bin/sh", ["-c", "printf 'n\\n' | script -qec '\(command)' /dev/null"])
        #expect(no.out.contains("[y/N]") && no.out.contains("not revoked"), "\(no)")
        #expect(try a.run("sync", "--quiet").status == 0, "still enrolled")
        let yes = try runProcess("/bin/sh", ["-c", "printf 'y\\n' | script -qec '\(command)' /dev/null"])
        #expect(yes.out.contains("revoked mt3-laptop"), "\(yes)")
        #expect(try a.run("sync", "--quiet").status == 4)
        // A script (no terminal) is not asked.
        _ = try b.ok("init", "--name", "b")
        _ = try b.ok("enroll", server.url, "--token", try server.invite("field", "b-laptop"), "--pin", server.pin)
        let scripted = try admin(["devices", "revoke", "b-laptop", "--data", server.dir])
        #expect(scripted.status == 0 && !scripted.err.contains("[y/N]"), "\(scripted)")
        server.kill(SIGTERM)
    }

    /// `cert renew` issues a new certificate from the CA key for the names asked; laptops that
    /// pinned the CA sync on without noticing.
    @Test func theCertificateIsRenewedFromTheCAKey() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        let before = try String(contentsOfFile: server.dir + "/tls.pem", encoding: .utf8)
        let shown = try admin(["cert", "show", "--data", server.dir]).out
        #expect(shown.contains("127.0.0.1") && shown.contains(server.pin), "\(shown)")
        let wrong = try admin(["cert", "renew", "--data", server.dir, "--ca-key", server.dir + "/tls.key"])
        #expect(wrong.status == 1 && wrong.err.contains("not this server's CA"), "\(wrong)")
        let renewed = try admin(["cert", "renew", "--data", server.dir, "--ca-key", server.dir + "/ca.key", "--hostname", "127.0.0.1", "--hostname", "sync.example.org"])
        #expect(renewed.status == 0 && renewed.out.contains("sync.example.org"), "\(renewed)")
        #expect(try String(contentsOfFile: server.dir + "/tls.pem", encoding: .utf8) != before)
        var st = stat()
        #expect(stat(server.dir + "/tls.key", &st) == 0 && st.st_mode & 0o777 == 0o600)
        server.kill(SIGTERM)
        try server.start()
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=AFTER-RENEW")
        #expect(try a.run("sync", "--quiet").status == 0)
        server.kill(SIGTERM)
    }

    /// `unenroll` refuses while changes wait to be sent, leaves with --force or once they are
    /// sent, keeps the notes, and the replica can enrol again.
    @Test func aLaptopEnrolledByMistakeLeaves() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        defer { a.cleanUp() }
        _ = try a.ok("note", "add", "--kind", "survey", "--set", "ref=KEPT")
        let refused = try a.run("unenroll")
        #expect(refused.status == 1 && refused.err.contains("1 changes made here have not reached"), "\(refused)")
        _ = try a.ok("sync", "--quiet")
        let left = try a.run("unenroll")
        #expect(left.status == 0 && left.out.contains("left \(server.url)"), "\(left)")
        #expect(try a.run("sync").status == 2, "no server to sync with")
        #expect(try a.ok("note", "list").contains("KEPT"))
        // The server it was meant for: its notes go there.
        let right = try LiveServer()
        try right.start()
        _ = try a.ok("enroll", right.url, "--token", try right.invite("field", "a"), "--pin", right.pin)
        #expect(try a.run("sync", "--quiet").status == 0)
        let hq = try laptop(right, role: "coordinator", name: "hq")
        defer { hq.cleanUp() }
        _ = try hq.ok("sync", "--quiet")
        #expect(try hq.ok("note", "list").contains("KEPT"), "the changes the first server acknowledged go to the second")
        server.kill(SIGTERM)
        right.kill(SIGTERM)
    }

    /// `schema KIND` gives an example of each field a person types; the log shows an edit of a
    /// long text where it differs; a file import says how many it added.
    @Test func examplesDiffsAndCounts() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "x")
        let schema = try cli.ok("schema", "clearance_day")
        #expect(schema.contains("e.g. --set location=49.1987,37.2611") && schema.contains("e.g. --set info_date=2026-12-07"), "\(schema)")
        let json = try JSONValue.parse(try cli.ok("schema", "eod_spot", "--json"))
        #expect(json["devices"]?["example"]?.stringValue?.hasPrefix("AP:PMN-2:2") == true, "\(json)")
        let opening = String(repeating: "Strip 4 walked again, fence posts and markers checked. ", count: 2)
        let id = try cli.ok("note", "add", "--kind", "survey", "--set", "narrative=\(opening)Nothing found.").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try cli.ok("note", "edit", id, "--set", "narrative=\(opening)Two PMN-2 found.")
        let log = try cli.ok("log")
        #expect(log.contains("…") && log.contains("Nothing found.") && log.contains("Two PMN-2 found."), "\(log)")
        let imported = try cli.run("note", "add", "--json-file", CLI.samples + "/notes.jsonl")
        #expect(imported.status == 0 && imported.err.contains("added ") && imported.err.contains(" notes from "), "\(imported.err)")
    }

    /// `--unset` clears a value field on every replica (the server takes the null); a set field,
    /// an empty field and the review are refused with the reason.
    @Test func aFieldIsClearedEverywhere() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a")
        let co = try laptop(server, role: "coordinator", name: "hq")
        defer { a.cleanUp(); co.cleanUp() }
        let id = try a.ok("note", "add", "--kind", "clearance_day", "--set", "ref=UA-1", "--set", "depth_cm=20",
                          "--set", "narrative=wrong strip").trimmingCharacters(in: .whitespacesAndNewlines)
        let done = try a.run("note", "edit", id, "--unset", "narrative")
        #expect(done.status == 0 && done.out.contains("narrative"), "\(done)")
        #expect(try a.run("note", "edit", id, "--unset", "narrative").err.contains("holds no value"))
        #expect(try a.run("note", "edit", id, "--unset", "tags").status == 2)
        #expect(try a.run("note", "edit", id, "--unset", "review").status == 2)
        #expect(try a.run("note", "edit", id, "--unset", "narative").err.contains("did you mean 'narrative'"))
        for l in [a, co] { #expect(try l.run("sync", "--quiet").status == 0) }
        for l in [a, co] {
            let fields = try JSONValue.parse(try l.ok("note", "show", id, "--json"))["fields"]
            #expect(fields?["narrative"] == nil && fields?["depth_cm"] == .int(20), "\(String(describing: fields))")
        }
        server.kill(SIGTERM)
    }
}
