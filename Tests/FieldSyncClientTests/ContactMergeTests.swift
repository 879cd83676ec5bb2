import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation
import Testing

/// Two press laptops, offline, each merging duplicates its own way, then exchanging changes
/// directly (as a bundle or the server would carry them).
@Suite struct ContactMergeTests {
    struct Laptops {
        let a: Replica, b: Replica
        let dirs: [String]

        init() throws {
            dirs = (0..<2).map { _ in NSTemporaryDirectory() + "fieldsync-merge-" + UUID().uuidString }
            a = try ClientHome(environment: ["FIELDSYNC_HOME": dirs[0]]).initialise(name: "press-a", role: .press)
            b = try ClientHome(environment: ["FIELDSYNC_HOME": dirs[1]]).initialise(name: "press-b", role: .press)
            try a.store.upsertRoster([RosterEntry(publicKey: b.key.publicKey, name: "press-b", role: .press, enrolledAtMillis: 0)])
            try b.store.upsertRoster([RosterEntry(publicKey: a.key.publicKey, name: "press-a", role: .press, enrolledAtMillis: 0)])
        }

        func exchange() throws {
            _ = try b.store.receive(try a.store.missing(for: VersionVector()))
            _ = try a.store.receive(try b.store.missing(for: VersionVector()))
        }

        func cleanUp() { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
    }

    /// Sigrun twice: from a vCard (UID, org with languages) and typed by hand with another phone.
    static func twoSigruns(_ r: Replica) throws -> (RecordID, RecordID) {
        var first = RecordInput()
        first.registers = [("fn", .string("Sigrun Ødegård Ås")), ("title", .string("Press officer"))]
        first.elements = [("email", .string("sigrun.as@npaid.example")), ("tel", .object(["raw": "+4790000000", "e164": "+4790000000"]))]
        var second = RecordInput()
        second.registers = [("fn", .string("Sigrun Ås")), ("source", .string("Minerydding gjenopptatt i Kharkiv"))]
        second.elements = [("email", .string("Sigrun.As@npaid.example")), ("tel", .object(["raw": "955 55 555", "e164": "+4795555555"]))]
        let ids = try r.add([first, second], type: .contact)
        return (ids[0], ids[1])
    }

    @Test func duplicatesAreFoundAndMergedInOneChange() throws {
        let l = try Laptops()
        defer { l.cleanUp() }
        let (x, y) = try Self.twoSigruns(l.a)
        let groups = try ContactDuplicates.find(l.a)
        try #require(groups.count == 1)
        #expect(groups[0].ids == [x, y])
        #expect(groups[0].shared == ["e-mail sigrun.as@npaid.example"])

        let before = try l.a.store.status(device: l.a.device).changes
        let gained = try l.a.mergeContacts(keep: x, other: y)
        #expect(try l.a.store.status(device: l.a.device).changes == before + 1, "one signed change")
        #expect(gained == ["source", "tel"])
        let kept = try #require(try l.a.store.view(x)).values
        #expect(kept["fn"] == "Sigrun Ødegård Ås", "the kept contact's own values stay")
        #expect(kept["source"] == "Minerydding gjenopptatt i Kharkiv")
        #expect(kept["email"] == .array(["sigrun.as@npaid.example"]), "the same address in another case is not added")
        #expect(Set(kept["tel"]?.arrayValue ?? []).count == 2)
        #expect(try l.a.store.view(y)?.deleted == true)
        #expect(try ContactDuplicates.find(l.a).isEmpty)
    }

    @Test func twoLaptopsMergingDifferentlyOfflineConverge() throws {
        let l = try Laptops()
        defer { l.cleanUp() }
        let (x, y) = try Self.twoSigruns(l.a)
        try l.exchange()
        // Offline: A keeps x, B keeps y.
        try l.a.mergeContacts(keep: x, other: y)
        try l.b.mergeContacts(keep: y, other: x)
        try l.exchange()
        let listA = try l.a.store.listing(type: .contact, includeDeleted: true)
        let listB = try l.b.store.listing(type: .contact, includeDeleted: true)
        #expect(listA == listB, "the same changes, the same records, byte for byte")
        // Each record was edited by one laptop and deleted by the other: both stay, each with a
        // delete/edit conflict for a coordinator, and no value is lost.
        let conflictsA = try l.a.store.conflicts().map(\.id), conflictsB = try l.b.store.conflicts().map(\.id)
        #expect(Set(conflictsA) == [x, y] && conflictsA == conflictsB)
        for id in [x, y] {
            let v = try #require(try l.a.store.view(id))
            #expect(v.deleteConflict != nil)
            #expect(Set(v.values["tel"]?.arrayValue ?? []).count == 2, "\(id) holds both numbers")
        }
    }

    @Test func twoLaptopsMergingAlikeOfflineConverge() throws {
        let l = try Laptops()
        defer { l.cleanUp() }
        let (x, y) = try Self.twoSigruns(l.a)
        try l.exchange()
        try l.a.mergeContacts(keep: x, other: y)
        try l.b.mergeContacts(keep: x, other: y)
        try l.exchange()
        #expect(try l.a.store.listing(type: .contact) == l.b.store.listing(type: .contact))
        #expect(try l.a.store.listing(type: .contact).count == 1)
        // Both wrote the same source concurrently: the register lists both writes (as any
        // concurrent write does), with one value between them.
        let conflicts = try l.a.store.conflicts()
        #expect(conflicts.map(\.id) == (try l.b.store.conflicts().map(\.id)))
        for v in conflicts {
            #expect(v.deleteConflict == nil)
            for f in v.conflictedFields { #expect(Set(v.fields[f]?.survivors.map(\.value) ?? []).count == 1, "\(f)") }
        }
        #expect(Set(try #require(try l.a.store.view(x)).values["tel"]?.arrayValue ?? []).count == 2)
    }
}
