import FieldSyncCore
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// The SQLite store against what a hostile device signs (issue 23), beside the in-memory reference.
@Suite struct HostileStoreTests {
    let field = DeviceKey(), coord = DeviceKey(), press = DeviceKey()
    var entries: [RosterEntry] {
        [RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
         RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0),
         RosterEntry(publicKey: press.publicKey, name: "press", role: .press, enrolledAtMillis: 0)]
    }
    let wall: UInt64 = 1_780_000_000_000

    func newStore(_ dir: TempDir, _ name: String = "r.sqlite", server: Bool = false) throws -> ReplicaStore {
        let s = try ReplicaStore.open(path: dir.path + "/" + name, create: true, server: server)
        try s.upsertRoster(entries)
        return s
    }

    func signed(_ ops: [Op], values: [UInt16: OpValue] = [:], key: DeviceKey, seq: UInt64, prev: ChangeID) -> SignedChange {
        SignedChange.author(Change(device: key.deviceID, seq: seq, prev: prev, hlc: HLC(millis: wall + seq, counter: 0), wallMillis: wall, ops: ops),
                            values: values, key: key)
    }

    /// A `set` on `title` naming the `fn` value arrives before the `fn` write itself (so the store
    /// meets it in `ended`, not among loaded ops): the `fn` value must still show.
    @Test func anEndingFromAnotherFieldStoredFirstEndsNothing() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        var reference = MemoryReplica(roster: Roster(entries))
        let id = RecordID.make(.contact, by: press.deviceID)
        let name = OpValue(salt: [], value: "Olena Melnyk")
        let create = signed([Op(action: .create, recordType: .contact, record: id),
                             Op(action: .set, recordType: .contact, record: id, field: "fn", commitment: name.commitment)],
                            values: [1: name], key: press, seq: 1, prev: .zero)
        // The coordinator's hostile write names the press device's `fn` op from `title`.
        let title = OpValue(salt: [], value: "Editor")
        let evil = signed([Op(action: .set, recordType: .contact, record: id, field: "title", commitment: title.commitment,
                              refs: [OpRef(change: create.id, index: 1)])], values: [0: title], key: coord, seq: 1, prev: .zero)
        for c in [evil, create] {
            _ = try store.receive([c], wallMillis: wall)
            _ = try Replicator.receive(c, into: &reference, wallMillis: wall)
        }
        let view = try #require(try store.view(id))
        #expect(view.fields["fn"]?.value == "Olena Melnyk")
        #expect(view.fields["title"]?.value == "Editor")
        #expect(view == reference.record(id))
        // And it stays so once the record is loaded again from what is stored as live.
        let again = signed([Op(action: .add, recordType: .contact, record: id, field: "beats", commitment: title.commitment)],
                           values: [0: title], key: press, seq: 2, prev: create.id)
        _ = try store.receive([again], wallMillis: wall)
        #expect(try store.view(id)?.fields["fn"]?.value == "Olena Melnyk")
    }

    /// An erase reaches the values of changes still held back for a gap: they are not on disk
    /// until the gap fills (it may never).
    @Test func eraseDropsValuesOfHeldChanges() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        let id = RecordID.make(.contact, by: press.deviceID)
        let secret = "held.secret@example.org"
        let create = signed([Op(action: .create, recordType: .contact, record: id)], key: press, seq: 1, prev: .zero)
        let gap = signed([Op(action: .create, recordType: .contact, record: RecordID.make(.contact, by: press.deviceID))], key: press, seq: 2, prev: create.id)
        let mail = OpValue(salt: [], value: .string(secret))
        let held = signed([Op(action: .add, recordType: .contact, record: id, field: "email", commitment: mail.commitment)],
                          values: [0: mail], key: press, seq: 3, prev: gap.id)
        _ = try store.receive([create, held], wallMillis: wall)
        let erase = signed([Op(action: .erase, recordType: .contact, record: id)], key: coord, seq: 1, prev: .zero)
        _ = try store.receive([erase], wallMillis: wall)
        for suffix in ["", "-wal"] {
            let bytes = FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix) ?? Data()
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "r.sqlite\(suffix) still holds the erased value")
        }
        // The held change still applies once its gap fills, its value gone.
        _ = try store.receive([gap], wallMillis: wall)
        let view = try #require(try store.view(id))
        #expect(view.erasedBy != nil)
        #expect(view.fields["email"]?.elements.allSatisfy { $0.value == nil } ?? true)
    }

    /// A change held for a gap that arrives after the erasure keeps no personal value either:
    /// its gap may never fill, and it must not sit on disk meanwhile (nor in the model).
    @Test func aHeldChangeArrivingAfterAnErasureKeepsNoValue() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        var reference = MemoryReplica(roster: Roster(entries))
        let id = RecordID.make(.contact, by: press.deviceID)
        let secret = "late.secret@example.org"
        let create = signed([Op(action: .create, recordType: .contact, record: id)], key: press, seq: 1, prev: .zero)
        let erase = signed([Op(action: .erase, recordType: .contact, record: id)], key: coord, seq: 1, prev: .zero)
        let gap = signed([Op(action: .create, recordType: .contact, record: RecordID.make(.contact, by: press.deviceID))], key: press, seq: 2, prev: create.id)
        let mail = OpValue(salt: [], value: .string(secret))
        let late = signed([Op(action: .add, recordType: .contact, record: id, field: "email", commitment: mail.commitment)],
                          values: [0: mail], key: press, seq: 3, prev: gap.id)
        for c in [create, erase, late] {
            _ = try store.receive([c], wallMillis: wall)
            _ = try Replicator.receive(c, into: &reference, wallMillis: wall)
        }
        for suffix in ["", "-wal"] {
            let bytes = FileManager.default.contents(atPath: dir.path + "/r.sqlite" + suffix) ?? Data()
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "r.sqlite\(suffix) holds the value of a change held after the erasure")
        }
        #expect(reference.pending(device: press.deviceID, seq: 3)?.values.isEmpty == true, "the model holds it without its value")
        _ = try store.receive([gap], wallMillis: wall)
        #expect(try store.view(id)?.fields["email"]?.elements.allSatisfy { $0.value == nil } ?? true)
    }

    /// A reader holding an old snapshot keeps the checkpoint after an erase from finishing: the
    /// store says so, and folds the log in at its next write once the reader has gone.
    @Test func aCheckpointThatCannotFinishIsReportedAndRetried() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        let id = RecordID.make(.contact, by: press.deviceID)
        let secret = "wal.secret@example.org"
        let mail = OpValue(salt: [], value: .string(secret))
        let create = signed([Op(action: .create, recordType: .contact, record: id),
                             Op(action: .add, recordType: .contact, record: id, field: "email", commitment: mail.commitment)],
                            values: [1: mail], key: press, seq: 1, prev: .zero)
        _ = try store.receive([create], wallMillis: wall)
        let reader = try DatabaseQueue(path: dir.path + "/r.sqlite")
        try reader.read { db in
            _ = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes")  // holds the snapshot
            let erase = signed([Op(action: .erase, recordType: .contact, record: id)], key: coord, seq: 1, prev: .zero)
            #expect(throws: StoreError(.busy, "")) { _ = try store.receive([erase], wallMillis: wall) }
        }
        try reader.close()
        let later = signed([Op(action: .create, recordType: .contact, record: RecordID.make(.contact, by: press.deviceID))], key: press, seq: 2, prev: create.id)
        _ = try store.receive([later], wallMillis: wall)
        let wal = FileManager.default.contents(atPath: dir.path + "/r.sqlite-wal") ?? Data()
        #expect(wal.range(of: Data(secret.utf8)) == nil)
        let main = FileManager.default.contents(atPath: dir.path + "/r.sqlite") ?? Data()
        #expect(main.range(of: Data(secret.utf8)) == nil)
    }

    @Test func aFarFutureHLCStoredEarlierDoesNotLiftTheClock() throws {
        let dir = TempDir()
        let store = try newStore(dir)
        let evil = SignedChange.author(Change(device: field.deviceID, seq: 1, prev: .zero, hlc: HLC(raw: .max), wallMillis: wall,
                                              ops: [Op(action: .create, recordType: .note, record: RecordID.make(.note, by: field.deviceID), kind: "survey")]),
                                       values: [:], key: field)
        _ = try store.receive([evil], wallMillis: wall)
        let clock = try store.read { db in try store.storage(db, wallMillis: wall).clock }
        #expect(clock.last.millis <= wall + HybridClock.maxLeadMillis)
    }
}
