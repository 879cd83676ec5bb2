import FieldSyncCore
import Foundation
import Testing

/// A laptop killed (SIGKILL: no handler, no cleanup) while it applies a large pull: each pulled
/// answer is one SQLite transaction, so the replica it leaves is consistent, reads, and the
/// next sync completes with nothing lost or doubled (issue 23).
@Suite(.serialized) struct KilledPullTests {
    @Test func aLaptopKilledWhileItAppliesAPullResumes() throws {
        let server = try LiveServer()
        try server.start()
        let a = try laptop(server, role: "field", name: "a"), b = try laptop(server, role: "field", name: "b")
        defer { a.cleanUp(); b.cleanUp() }
        try importSurveys(a, 4000, ref: "K")
        _ = try a.ok("sync", "--quiet")
        let expected = try a.ok("note", "list", "--json")

        // Each kill is timed from the pull's first write to the replica (its WAL file changes),
        // not from the process's start: on a fast hour the whole pull took under 0.25 s.
        let wal = b.home + "/replica.sqlite-wal"
        func walSize() -> Int { (try? FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? -1 }
        var held: [Int] = []
        for delay in [0.0, 0.03, 0.1, 0.3] {
            let sync = Process()
            sync.executableURL = URL(fileURLWithPath: CLI.binary)
            sync.arguments = ["sync", "--quiet"]
            sync.environment = ProcessInfo.processInfo.environment.merging(["FIELDSYNC_HOME": b.home]) { $1 }
            sync.standardError = FileHandle.nullDevice
            let before = walSize()
            try sync.run()
            let started = Date()
            while walSize() == before && sync.isRunning && Date().timeIntervalSince(started) < 20 { usleep(500) }
            Thread.sleep(forTimeInterval: delay)
            kill(sync.processIdentifier, SIGKILL)
            sync.waitUntilExit()
            // Whatever it had pulled, the replica opens and reads, and lists whole notes only.
            let status = try b.run("status", "--json")
            #expect(status.status == 0, "status after SIGKILL \(delay) s into the pull: \(status.err)")
            let list = try b.run("note", "list", "--json")
            #expect(list.status == 0, "note list after SIGKILL \(delay) s into the pull: \(list.err)")
            let notes = try JSONValue.parse(list.out).arrayValue ?? []
            #expect(notes.allSatisfy { $0["fields"]?["narrative"]?.stringValue != nil || $0["narrative"]?.stringValue != nil })
            held.append(notes.count)
        }
        // The kills fell at different points of the pull (not all before it or after it).
        #expect(held.contains { $0 < 4000 }, "every kill came after the pull ended: \(held)")
        let done = try b.run("sync", "--json")
        #expect(done.status == 0, "\(done.err)")
        #expect(try b.ok("note", "list", "--json") == expected)
        server.kill(SIGTERM)
    }
}
