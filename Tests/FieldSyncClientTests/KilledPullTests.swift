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

        var held: [Int] = []
        for delay in [0.25, 0.5, 0.8, 1.2] {
            let sync = Process()
            sync.executableURL = URL(fileURLWithPath: CLI.binary)
            sync.arguments = ["sync", "--quiet"]
            sync.environment = ProcessInfo.processInfo.environment.merging(["FIELDSYNC_HOME": b.home]) { $1 }
            sync.standardError = FileHandle.nullDevice
            try sync.run()
            Thread.sleep(forTimeInterval: delay)
            kill(sync.processIdentifier, SIGKILL)
            sync.waitUntilExit()
            // Whatever it had pulled, the replica opens and reads, and lists whole notes only.
            let status = try b.run("status", "--json")
            #expect(status.status == 0, "status after SIGKILL at \(delay) s: \(status.err)")
            let list = try b.run("note", "list", "--json")
            #expect(list.status == 0, "note list after SIGKILL at \(delay) s: \(list.err)")
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
