import FieldSyncCore
import Foundation
import Testing
@testable import FieldSyncStore

/// A fresh folder under the system temp dir, removed when the test ends.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "fieldsync-store-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct StoreTests {
    let field = DeviceKey(), coord = DeviceKey(), press = DeviceKey()
    var entries: [RosterEntry] {
        [RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
         RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0),
         RosterEntry(publicKey: press.publicKey, name: "press", role: .press, enrolledAtMillis: 0)]
    }

    func newStore(_ dir: TempDir, _ name: String = "r.sqlite", server: Bool = false) throws -> ReplicaStore {
        let s = try ReplicaStore.open(path: dir.path + "/" + name, create: true, server: server)
        try s.upsertRoster(entries)
        return s
    }

    @Test func openingRefusesMissingForeignAndGarbageFiles() throws {
        let dir = TempDir()
        #expect(throws: StoreError(.notInitialised, "")) { _ = try ReplicaStore.open(path: dir.path + "/none.sqlite") }
        // A SQLite file of another program.
        let foreign = dir.path + "/foreign.sqlite"
        let other = try ReplicaStore.open(path: foreign, create: true)
        try other.write { db in try db.execute(sql: "DELETE FROM meta") }
        #expect(throws: StoreError(.notAReplica, "")) { _ = try ReplicaStore.open(path: foreign) }
        // Not SQLite at all.
        let garbage = dir.path + "/garbage.sqlite"
        _ = FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x41, count: 4096))
        #expect(throws: StoreError(.notAReplica, "")) { _ = try ReplicaStore.open(path: garbage) }
        // An existing replica is never re-created.
        _ = try newStore(dir, "x.sqlite")
        #expect(throws: StoreError(.alreadyInitialised, "")) { _ = try ReplicaStore.open(path: dir.path + "/x.sqlite", create: true) }
    }

    @Test func readOnlyReplicaIsRefusedClearly() throws {
        guard getuid() != 0 else { return }  // root writes through file modes
        let dir = TempDir()
        _ = try newStore(dir)
        chmod(dir.path + "/r.sqlite", 0o444)
        #expect(throws: StoreError(.readOnly, "")) { _ = try ReplicaStore.open(path: dir.path + "/r.sqlite") }
    }

    /// The SQLite replica runs the same `Replicator` as the in-memory reference: fed the same
    /// changes in another order, it shows the same records.
    @Test func sqliteAgreesWithTheInMemoryReference() throws {
        let dir = TempDir()
        var a = MemoryReplica(roster: Roster(entries)), b = MemoryReplica(roster: Roster(entries))
        let id = RecordID.make(.note, by: field.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "clearance_day")
        d.set("team", to: "MT-3", onNew: id, type: .note)
        d.add("tags", "x", record: id, type: .note)
        let c1 = try a.commit(d, key: field, wallMillis: 1_000)
        _ = try Replicator.receive(c1, into: &b, wallMillis: 1_000)
        var e1 = ChangeDraft(); e1.set("team", to: "MT-4", on: a.records[id]!, type: .note); e1.remove("tags", "x", on: a.records[id]!, type: .note)
        var e2 = ChangeDraft(); e2.set("team", to: "MT-5", on: b.records[id]!, type: .note); e2.add("tags", "x", record: id, type: .note)
        e2.review("approved", comment: nil, on: b.records[id]!)
        let c2 = try a.commit(e1, key: field, wallMillis: 2_000)
        let c3 = try b.commit(e2, key: coord, wallMillis: 2_000)
        _ = try Replicator.receive(c3, into: &a, wallMillis: 3_000)

        let store = try newStore(dir)
        // Out of order: c2 waits for c1.
        let results = try store.receive([c3, c2, c1, c2], wallMillis: 3_000)
        #expect(results.values.allSatisfy { (try? $0.get()) != nil })
        let got = try #require(try store.view(id))
        #expect(got == a.record(id))
        #expect(got.fields["team"]?.inConflict == true)
        #expect(try store.conflicts().map(\.id) == [id])
        #expect(try store.vector() == a.vector)
        // Reopened from disk, the same.
        let again = try ReplicaStore.open(path: dir.path + "/r.sqlite")
        #expect(try again.view(id) == a.record(id))
        #expect(try again.listing(type: .note) == [a.record(id)!.listingJSON.canonicalString])
    }

    @Test func aFailedLocalCommandWritesNothing() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try store.commitLocal(key: field) { _ in
                var d = ChangeDraft(); d.create(RecordID.make(.note, by: field.deviceID), type: .note, kind: "survey")
                _ = d
                throw Boom()
            }
        }
        // A change the role forbids is refused locally and not kept.
        #expect(throws: CoreError(.forbidden, "")) {
            try store.commitLocal(key: field) { _ in var d = ChangeDraft(); d.create(RecordID.make(.contact, by: field.deviceID), type: .contact, kind: nil); return d }
        }
        #expect(try store.status(device: field.deviceID).changes == 0)
        #expect(try store.listing(type: .note).isEmpty)
    }

    @Test func tamperedChangesAreRefusedAndTheRestOfTheBatchKept() throws {
        let dir = TempDir()
        let author = try newStore(dir, "a.sqlite")
        let made = try author.commitLocal(key: field) { _ in
            var d = ChangeDraft(); let id = RecordID.make(.note, by: field.deviceID)
            d.create(id, type: .note, kind: "survey"); d.set("ref", to: "A-1", onNew: id, type: .note); return d
        }
        let good = made[0]
        var bytes = good.bytes
        bytes[50] ^= 1
        let forged = try SignedChange(bytes: bytes, signature: good.signature, values: good.values)
        let other = try newStore(dir, "b.sqlite")
        let r = try other.receive([forged, good])
        #expect(throws: CoreError(.badSignature, "")) { try r[forged.id]!.get() }
        #expect((try? r[good.id]!.get()) != nil)
        #expect(try other.listing(type: .note).count == 1)
    }

    /// After an erase, the erased e-mail is in no byte of the database or its WAL: on a laptop,
    /// and on the server, which also keeps each change's envelope to send.
    @Test(arguments: [false, true]) func eraseLeavesNoTraceInTheFiles(server: Bool) throws {
        let dir = TempDir()
        let store = try newStore(dir, server: server)
        let secret = "o.melnyk@umac.example"
        var id = RecordID.make(.contact, by: press.deviceID)
        let made = try store.commitLocal(key: press) { _ in
            var d = ChangeDraft(); id = RecordID.make(.contact, by: press.deviceID)
            d.create(id, type: .contact, kind: nil)
            d.set("fn", to: "Олена Мельник", onNew: id, type: .contact)
            d.add("email", .string(secret), record: id, type: .contact)
            d.set("source", to: "press release", onNew: id, type: .contact)
            return d
        }
        func filesContain(_ needle: String) -> Bool {
            let n = Data(needle.utf8)
            return ["", "-wal", "-shm"].contains { suffix in
                FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix)?.range(of: n) != nil
            }
        }
        #expect(filesContain(secret), "the test must be able to see the value before the erase")
        try store.commitLocal(key: coord) { _ in var d = ChangeDraft(); d.erase(id); return d }
        try store.checkpoint()
        #expect(!filesContain(secret))
        #expect(!filesContain("Мельник"))
        let v = try #require(try store.view(id))
        #expect(v.erasedBy?.author == coord.deviceID)
        #expect(v.values["source"] == "press release")
        for c in try store.missing(for: VersionVector()) {
            try c.verify(publicKey: entries.first { $0.device == c.change.device }!.publicKey)
            // The salt seed of the change that held the erased values is gone with them.
            if c.id == made[0].id { #expect(c.seed == nil) } else { #expect(c.seed != nil) }
        }
        #expect(made[0].seed != nil)
        // What the server sends from now on is the envelope without the value, still verifying.
        let sent = try store.read { db in try ReplicaStore.lacking(db, known: VersionVector(), limit: 100, load: ReplicaStore.loadEnvelope).changes }
        #expect(sent.count == 2)
        for e in sent {
            #expect(Data(e).range(of: Data(secret.utf8)) == nil)
            let c = try SignedChange(envelope: e)
            try c.verify(publicKey: entries.first { $0.device == c.change.device }!.publicKey)
        }
    }

    /// An erase that arrives before the record's create keeps every later personal value out all
    /// the same: one in a change refused by policy, one in an applied change, on a laptop and on
    /// the server. The store shows what the in-memory reference shows.
    @Test(arguments: [false, true]) func anEraseBeforeTheCreateStillKeepsValuesOut(server: Bool) throws {
        let roster = Roster(entries)
        var pressSide = MemoryReplica(roster: roster), coordSide = MemoryReplica(roster: roster)
        let id = RecordID.make(.contact, by: press.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .contact, kind: nil)
        d.set("source", to: "press release", onNew: id, type: .contact)
        let made = try pressSide.commit(d, key: press, wallMillis: 1_000)
        _ = try Replicator.receive(made, into: &coordSide, wallMillis: 1_000)
        d = ChangeDraft(); d.erase(id)
        let erase = try coordSide.commit(d, key: coord, wallMillis: 2_000)
        d = ChangeDraft(); d.add("email", "late.press@example.org", record: id, type: .contact)
        let late = try pressSide.commit(d, key: press, wallMillis: 3_000)
        d = ChangeDraft(); d.add("email", "leak.from.field@example.org", record: id, type: .contact)
        let refused = SignedChange.author(Change(device: field.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: 3_000, counter: 0),
                                                 wallMillis: 3_000, ops: d.ops), values: d.values, key: field)
        var reference = MemoryReplica(roster: roster)
        for c in [made, erase, late, refused] { _ = try Replicator.receive(c, into: &reference, wallMillis: 4_000) }

        let dir = TempDir()
        let store = try newStore(dir, server: server)
        func keeps(_ secret: String) -> Bool {
            ["", "-wal", "-shm"].contains { suffix in
                (FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix) ?? Data()).range(of: Data(secret.utf8)) != nil
            }
        }
        // The erase first, then the refused change, then the create (no personal value in it).
        for c in [erase, refused, made] { _ = try store.receive([c], wallMillis: 4_000) }
        try store.checkpoint()
        #expect(try store.value(of: OpRef(change: refused.id, index: 0)) == nil)
        #expect(!keeps("leak.from.field@example.org"))
        // Then the press officer's edit, made before they heard of the erase.
        _ = try store.receive([late], wallMillis: 4_000)
        try store.checkpoint()
        #expect(try store.value(of: OpRef(change: late.id, index: 0)) == nil)
        #expect(!keeps("late.press@example.org"))
        #expect(try store.view(id) == reference.allRecords.first { $0.id == id })
        #expect(try store.view(id)?.erasedBy != nil && store.view(id)?.values["source"] == "press release")
    }

    /// A change refused by policy is kept (its author's chain stays whole) but applied nowhere.
    /// When the record it wrote to is erased, its values go too, on laptops and on the server.
    @Test(arguments: [false, true]) func eraseReachesValuesInRefusedChanges(server: Bool) throws {
        let dir = TempDir()
        let store = try newStore(dir, server: server)
        let secret = "leaked.by.a.field.laptop@example.org"
        var id = RecordID.make(.contact, by: press.deviceID)
        try store.commitLocal(key: press) { _ in
            var d = ChangeDraft(); id = RecordID.make(.contact, by: press.deviceID)
            d.create(id, type: .contact, kind: nil)
            d.set("fn", to: "Olena Melnyk", onNew: id, type: .contact)
            return d
        }
        // A field device may not write press contacts: its change arrives, is kept, applies nowhere.
        var d = ChangeDraft()
        d.add("email", .string(secret), record: id, type: .contact)
        let change = Change(device: field.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: Timestamps.nowMillis, counter: 0),
                            wallMillis: Timestamps.nowMillis, ops: d.ops)
        let refused = SignedChange.author(change, values: d.values, key: field)
        _ = try store.receive([refused])
        #expect(try store.logChanges(since: nil, device: field.deviceID, record: nil, limit: 5).first?.refusal != nil)
        #expect(try store.value(of: OpRef(change: refused.id, index: 0)) == .string(secret))

        try store.commitLocal(key: coord) { _ in var d = ChangeDraft(); d.erase(id); return d }
        try store.checkpoint()
        #expect(try store.value(of: OpRef(change: refused.id, index: 0)) == nil)
        for suffix in ["", "-wal", "-shm"] {
            let bytes = FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix) ?? Data()
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "r.sqlite\(suffix)")
        }
        // The refused change still travels, without the value, and still verifies.
        let kept = try #require(try store.missing(for: VersionVector()).first { $0.id == refused.id })
        #expect(kept.values.isEmpty && kept.seed == nil)
        try kept.verify(publicKey: field.publicKey)

        // One refused after the erase keeps nothing either.
        let later = "second.leak@example.org"
        var d2 = ChangeDraft()
        d2.add("email", .string(later), record: id, type: .contact)
        let change2 = Change(device: field.deviceID, seq: 2, prev: refused.id, hlc: HLC(millis: Timestamps.nowMillis, counter: 1),
                             wallMillis: Timestamps.nowMillis, ops: d2.ops)
        let refused2 = SignedChange.author(change2, values: d2.values, key: field)
        #expect(try store.receive([refused2])[refused2.id].map { if case .success = $0 { true } else { false } } == true)
        try store.checkpoint()
        #expect(try store.value(of: OpRef(change: refused2.id, index: 0)) == nil)
        for suffix in ["", "-wal", "-shm"] {
            let bytes = FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix) ?? Data()
            #expect(bytes.range(of: Data(later.utf8)) == nil, "r.sqlite\(suffix)")
        }
    }

    /// A store learns in one lookup which records of a batch have nothing stored (`expect`), and
    /// then skips loading them. A batch in which records are created, edited again, written by a
    /// refused change before their create, and erased in the batch that created them must store
    /// what the same changes store one at a time, and show what the in-memory reference shows.
    @Test(arguments: [false, true]) func aBatchOfNewRecordsStoresWhatOneAtATimeStores(server: Bool) async throws {
        let dir = TempDir()
        var ref = MemoryReplica(roster: Roster(entries))
        let note = RecordID.make(.note, by: field.deviceID), early = RecordID.make(.note, by: coord.deviceID), contact = RecordID.make(.contact, by: coord.deviceID)
        var changes: [SignedChange] = []
        var d = ChangeDraft()
        d.create(note, type: .note, kind: "clearance_day")
        d.set("team", to: "MT-3", onNew: note, type: .note)
        changes.append(try ref.commit(d, key: field, wallMillis: 1_000))
        d = ChangeDraft()
        d.set("team", to: "MT-4", on: ref.records[note]!, type: .note)
        d.add("tags", "x", record: note, type: .note)
        changes.append(try ref.commit(d, key: field, wallMillis: 2_000))
        // A press device writing a note nobody has created yet: kept, applied nowhere.
        d = ChangeDraft()
        d.add("tags", "press", record: early, type: .note)
        let refused = SignedChange.author(Change(device: press.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: 2_500, counter: 0),
                                                 wallMillis: 2_500, ops: d.ops), values: d.values, key: press)
        _ = try Replicator.receive(refused, into: &ref, wallMillis: 2_500)
        changes.append(refused)
        d = ChangeDraft()
        d.create(early, type: .note, kind: "survey")
        d.set("team", to: "MT-9", onNew: early, type: .note)
        d.create(contact, type: .contact, kind: nil)
        d.set("fn", to: "Olena Melnyk", onNew: contact, type: .contact)
        changes.append(try ref.commit(d, key: coord, wallMillis: 3_000))
        d = ChangeDraft()
        d.erase(contact)
        changes.append(try ref.commit(d, key: coord, wallMillis: 4_000))

        let batch = try newStore(dir, "batch.sqlite", server: server)
        let single = try newStore(dir, "single.sqlite", server: server)
        if server {
            // As uploads: each device's changes in one server transaction, `expect` first.
            for device in [field.deviceID, press.deviceID, coord.deviceID] {
                let upload = changes.filter { $0.change.device == device }
                let taken = try await batch.serverWrite(inline: false, durable: true, wallMillis: 5_000) { t in
                    try t.expect(upload)
                    return try upload.map { try t.receive($0, verified: false) }.filter { $0 != .pending }.count
                }
                #expect(taken == upload.count)
            }
        } else {
            #expect(try batch.receive(changes, wallMillis: 5_000).values.allSatisfy { (try? $0.get()) != nil })
        }
        for c in changes { _ = try single.receive([c], wallMillis: 5_000) }
        for id in [note, early, contact] {
            let view = try batch.view(id)
            #expect(view != nil && view == ref.record(id))
            #expect(view == (try single.view(id)))
        }
        #expect(try batch.listing(type: .note) == single.listing(type: .note))
        #expect(try batch.listing(type: .contact) == single.listing(type: .contact))
        #expect(try batch.value(of: OpRef(change: refused.id, index: 0)) == .string("press"))
        #expect(try batch.value(of: OpRef(change: changes[3].id, index: 3)) == nil)  // erased in the same batch
    }

    /// `expect` asks in batches of 1, 16 or 250 ids, the last padded: whatever the count, the
    /// records it calls unstored are exactly those with nothing stored.
    @Test func expectFindsExactlyTheUnstoredRecordsInEveryBatchSize() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        let stored = (0..<40).map { _ in RecordID.make(.note, by: field.deviceID) }
        try store.commitLocal(key: field) { _ in
            var d = ChangeDraft()
            for id in stored { d.create(id, type: .note, kind: "survey") }
            return d
        }
        for count in [1, 2, 16, 17, 250, 251, 300] {
            let fresh = (0..<count).map { _ in RecordID.make(.note, by: coord.deviceID) }
            // Stored and new ids interleaved, so stored ones fall in every batch, padding included.
            var ids: [RecordID] = []
            for (i, id) in fresh.enumerated() { ids.append(id); if i % 7 == 0 { ids.append(stored[i % stored.count]) } }
            var d = ChangeDraft()
            for id in ids { d.create(id, type: .note, kind: "survey") }
            let change = SignedChange.author(Change(device: coord.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: 1, counter: 0),
                                                    wallMillis: 1, ops: d.ops), values: d.values, key: coord)
            let unstored = try store.read { db in
                var s = try store.storage(db, wallMillis: 0)
                try s.expect([change])
                return s.unstored
            }
            #expect(unstored == Set(fresh), "\(ids.count) ids")
        }
    }

    /// An answer stops at its byte budget (the server's `maxAnswerBytes`), says there is more, and
    /// carries at least one change however large; devices after the budget wait too.
    @Test func anAnswerStopsAtItsByteBudgetButCarriesOne() throws {
        let dir = TempDir()
        let store = try newStore(dir, server: true)
        for key in [field, field, field, field, coord, coord] {
            try store.commitLocal(key: key) { _ in
                var d = ChangeDraft(); let id = RecordID.make(.note, by: key.deviceID)
                d.create(id, type: .note, kind: "survey")
                d.set("narrative", to: .string(String(repeating: "seen ", count: 40)), onNew: id, type: .note)
                return d
            }
        }
        func answer(_ budget: Int) throws -> (sizes: [Int], more: Bool) {
            let r = try store.read { db in
                try ReplicaStore.lacking(db, known: VersionVector(), limit: 500, maxBytes: budget, size: \.count, load: ReplicaStore.loadEnvelope)
            }
            return (r.changes.map(\.count), r.more)
        }
        let all = try answer(.max)
        #expect(all.sizes.count == 6 && !all.more)
        let three = all.sizes.prefix(3).reduce(0, +)
        #expect(try answer(three).sizes == Array(all.sizes.prefix(3)) && answer(three).more)
        #expect(try answer(three + 1).sizes.count == 3, "a fourth change does not fit in one byte")
        #expect(try answer(1).sizes == [all.sizes[0]] && answer(1).more, "one change always goes")
        #expect(try answer(all.sizes.reduce(0, +)).sizes.count == 6 && !answer(all.sizes.reduce(0, +)).more)
        #expect(SyncProtocol.fitting([], budget: 10) == 0)
        #expect(SyncProtocol.fitting([30, 30], budget: 10) == 1)
        #expect(SyncProtocol.fitting([3, 3, 3, 3], budget: 9) == 3)
        #expect(SyncProtocol.fitting([3, 3, 3], budget: 9) == 3)
    }

    /// The listing form parses back however deeply a value nests: a set element sits three
    /// levels into the listing, below the depth a value itself may have.
    @Test func aDeeplyNestedValueStillLists() throws {
        var replica = MemoryReplica(roster: Roster(entries))
        var deep = JSONValue.string("bottom")
        for _ in 0..<63 { deep = .array([deep]) }
        _ = try JSONValue.parseCanonical(deep.canonicalBytes)  // as deep as a value may be
        let id = RecordID.make(.note, by: field.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "observation")
        d.add("tags", deep, record: id, type: .note)
        _ = try replica.commit(d, key: field, wallMillis: 1_000)
        let view = try #require(replica.record(id))
        #expect(view.listingJSON["fields"]?["tags"] == .array([deep]))
    }

    /// `sync` counts open conflicts as `conflicts` lists them: per field, not per record.
    @Test func conflictsAreCountedAsTheyAreListed() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        var a = MemoryReplica(roster: Roster(entries)), b = MemoryReplica(roster: Roster(entries))
        let id = RecordID.make(.note, by: field.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "clearance_day")
        d.set("team", to: "MT-3", onNew: id, type: .note)
        d.set("depth_cm", to: .int(10), onNew: id, type: .note)
        let made = try a.commit(d, key: field, wallMillis: 1_000)
        _ = try Replicator.receive(made, into: &b, wallMillis: 1_000)
        var mine = ChangeDraft(), theirs = ChangeDraft()
        for (f, v, w) in [("team", JSONValue.string("MT-4"), JSONValue.string("MT-5")), ("depth_cm", .int(20), .int(30))] {
            mine.set(f, to: v, on: a.records[id]!, type: .note)
            theirs.set(f, to: w, on: b.records[id]!, type: .note)
        }
        let changes = [made, try a.commit(mine, key: field, wallMillis: 2_000), try b.commit(theirs, key: coord, wallMillis: 2_000)]
        _ = try store.receive(changes, wallMillis: 3_000)
        #expect(try store.view(id)?.conflictedFields == ["depth_cm", "team"])
        #expect(try store.conflictCount() == 2)
    }

    @Test func idPrefixesResolveOrSayWhy() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        let ids = (0..<2).map { _ in RecordID.make(.note, by: field.deviceID, unixMillis: 1_780_000_000_000) }
        try store.commitLocal(key: field) { _ in
            var d = ChangeDraft()
            for (i, id) in ids.enumerated() {
                d.create(id, type: .note, kind: "survey")
                d.set("ref", to: .string("UA-KHA-SUR-00\(i)"), onNew: id, type: .note)
            }
            return d
        }
        #expect(try store.resolveID(ids[0].description) == ids[0])
        // The same day's ids share their start: an ambiguous prefix names the candidates.
        do {
            _ = try store.resolveID(String(ids[0].description.prefix(8)))
            Issue.record("an ambiguous prefix resolved")
        } catch let e as StoreError {
            #expect(e.code == .ambiguous && e.message.contains(ids[1].description) && e.message.contains("UA-KHA-SUR-001, survey"))
        }
        // Their ends differ: the last digits, or a note's ref, name one.
        #expect(try store.resolveID(String(ids[1].description.suffix(6))) == ids[1])
        #expect(try store.resolveID("ua-kha-sur-000") == ids[0])
        #expect(throws: StoreError(.notFound, "")) { _ = try store.resolveID("UA-KHA-SUR-999") }
        #expect(throws: StoreError(.notFound, "")) { _ = try store.resolveID(ids[0].description, type: .contact) }
    }

    /// The roster is cached per store handle, keyed by a stamp every roster change renews: a
    /// revocation made through another handle (`fieldsync-server revoke` beside the running
    /// server) counts at once, and a roster change rolled back leaves nothing behind.
    @Test func theCachedRosterFollowsChangesFromElsewhereAndRollbacks() throws {
        let dir = TempDir()
        let server = try newStore(dir, server: true)
        #expect(try server.roster()[field.deviceID]?.revokedAfterSeq == nil)  // now cached
        let admin = try ReplicaStore.open(path: dir.path + "/r.sqlite", server: true)
        _ = try admin.revoke(field.deviceID)
        #expect(try server.roster()[field.deviceID]?.revokedAfterSeq == 0)
        // A change by the revoked device is refused through the cached roster too.
        var m = MemoryReplica(roster: Roster(entries))
        var d = ChangeDraft(); d.create(RecordID.make(.note, by: field.deviceID), type: .note, kind: "survey")
        let late = try m.commit(d, key: field, wallMillis: 1_000)
        guard case .failure(let refusal)? = try server.receive([late])[late.id] else {
            Issue.record("a change from a revoked device was taken")
            return
        }
        #expect(refusal.code == .revoked)

        let stranger = DeviceKey()
        struct Abandon: Error {}
        #expect(throws: Abandon.self) {
            try server.write { db in
                try RosterRow.upsert(RosterEntry(publicKey: stranger.publicKey, name: "x", role: .coordinator, enrolledAtMillis: 0), db)
                #expect(try server.storage(db, wallMillis: 0).rosterEntry(stranger.deviceID) != nil)
                throw Abandon()
            }
        }
        #expect(try server.roster()[stranger.deviceID] == nil)
    }

    /// A transaction that may skip waiting for the disk leaves the connection durable again,
    /// whether it commits or fails.
    @Test func aLightCommitLeavesTheWriterDurable() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        func mode() throws -> Int { try store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous")! } }
        #expect(try mode() == 2)
        let seen = try store.write(durable: false) { db in try Int.fetchOne(db, sql: "PRAGMA synchronous")! }
        #expect(seen == 1)
        #expect(try mode() == 2)
        struct Abandon: Error {}
        #expect(throws: Abandon.self) { try store.write(durable: false) { db in try Meta.set("x", "1", db); throw Abandon() } }
        #expect(try mode() == 2)
        #expect(try store.meta("x") == nil)
        // An answer that only acknowledges is such a transaction; one that brings changes is not.
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(meta: ["last_sync": "now"]))
        #expect(try mode() == 2 && store.meta("last_sync") == "now")
    }

    /// The clock is read back from the stored changes: a replica reopened still stamps its next
    /// change above every change it holds, a far-future one included (its HLC's top bit set, so
    /// SQLite holds it as a negative integer), and above a reading an older version kept in `meta`.
    @Test func theClockResumesAboveEveryStoredChange() throws {
        let dir = TempDir()
        var store = try newStore(dir)
        func note() throws -> HLC {
            let made = try store.commitLocal(key: field) { _ in
                var d = ChangeDraft(); let id = RecordID.make(.note, by: field.deviceID)
                d.create(id, type: .note, kind: "observation")
                d.set("narrative", to: "edge cleared", onNew: id, type: .note)
                return d
            }
            return try #require(made.first).change.hlc
        }
        let first = try note()
        store = try ReplicaStore.open(path: store.path)
        #expect(try note() > first)
        // A coordinator's laptop with its clock set absurdly far ahead.
        let future = HLC(millis: 1 << 47 | 5, counter: 3)
        #expect(Int64(bitPattern: future.raw) < 0)
        var d = ChangeDraft(); let id = RecordID.make(.note, by: coord.deviceID)
        d.create(id, type: .note, kind: "observation")
        let skewed = SignedChange.author(Change(device: coord.deviceID, seq: 1, prev: .zero, hlc: future, wallMillis: Timestamps.nowMillis, ops: d.ops),
                                         values: d.values, key: coord)
        _ = try store.receive([skewed])
        store = try ReplicaStore.open(path: store.path)
        // It is kept, but lifts the clock no further than a week ahead of the wall clock.
        let after = try note()
        #expect(after > first && after.millis <= Timestamps.nowMillis + HybridClock.maxLeadMillis)
        // The reading an older version wrote to `meta` is a floor.
        let kept = HLC(raw: after.raw + 1_000)
        try store.setMeta("hlc", String(kept.raw))
        store = try ReplicaStore.open(path: store.path)
        #expect(try note() > kept)
    }

    /// The outbox is found from a mark below which everything is acknowledged: acknowledgements
    /// move it up, a change the server refused outright holds it (and stays in the outbox), and
    /// changes of other devices never count, acknowledged or not.
    @Test func theOutboxIsWhatTheServerHasNotAcknowledged() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        func note() throws -> SignedChange {
            try #require(try store.commitLocal(key: field) { _ in
                var d = ChangeDraft(); let id = RecordID.make(.note, by: field.deviceID)
                d.create(id, type: .note, kind: "observation")
                d.set("narrative", to: "edge cleared", onNew: id, type: .note)
                return d
            }.first)
        }
        let made = try (0..<5).map { _ in try note() }
        var d = ChangeDraft(); d.create(RecordID.make(.note, by: coord.deviceID), type: .note, kind: "survey")
        _ = try store.receive([SignedChange.author(Change(device: coord.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: Timestamps.nowMillis, counter: 0),
                                                          wallMillis: Timestamps.nowMillis, ops: d.ops), values: d.values, key: coord)])
        func outbox() throws -> [UInt64] { try store.outbox(device: field.deviceID).map(\.seq) }
        func waiting() throws -> Int { try store.status(device: field.deviceID).waiting }
        #expect(try outbox() == [1, 2, 3, 4, 5] && waiting() == 5)
        // A byte budget stops the building: past it by one change, never by only the first (one
        // change always goes; the second says that more wait).
        let size = made[0].envelope.count
        #expect(try store.outbox(device: field.deviceID, bytes: 1).map(\.seq) == [1, 2])
        #expect(try store.outbox(device: field.deviceID, bytes: 2 * size + 1).map(\.seq) == [1, 2, 3])
        // Read ahead of an answer: only what follows the request in flight.
        #expect(try store.outbox(device: field.deviceID, after: 2, limit: 2).map(\.seq) == [3, 4])
        #expect(try store.outbox(device: field.deviceID, after: 5).isEmpty && store.outbox(device: field.deviceID, after: .max).isEmpty)
        // Each goes up as the envelope its author made, byte for byte, with its id.
        let sent = try store.outbox(device: field.deviceID)
        #expect(sent.map(\.envelope) == made.map(\.envelope) && sent.map(\.id) == made.map(\.id))
        // 1 and 2 taken; 3 refused outright (not acknowledged); 4 taken, though refused by policy.
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: [made[0].id, made[1].id, made[3].id],
                                                          refusals: [(made[2].id, "invalid_value", "too long"), (made[3].id, "forbidden", "not yours")]))
        #expect(try outbox() == [3, 5] && waiting() == 2)
        #expect(try Set(store.refusals().map(\.id)) == [made[2].id, made[3].id])
        #expect(try store.meta("outbox_from.\(field.deviceID)") == "3")
        #expect(try store.outbox(device: field.deviceID, limit: 1).map(\.seq) == [3])
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: [made[2].id, made[4].id]))
        #expect(try outbox() == [] && waiting() == 0)
        // 3 taken after all (the server's schema allows it now): no longer listed as refused.
        #expect(try store.refusals().map(\.id) == [made[3].id])
        #expect(try store.meta("outbox_from.\(field.deviceID)") == "6")
        // A new change after everything was acknowledged is found.
        let sixth = try note()
        #expect(try outbox() == [sixth.change.seq] && sixth.change.seq == 6)
        #expect(try store.outbox(device: coord.deviceID).map(\.seq) == [1], "another device's changes are its own outbox, if any")
    }
}
