import FieldSyncCore
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// A replica in the layout before the schema was squashed into one baseline is refused with a
/// way forward, not migrated (no such replica exists outside this repository).
@Suite struct BaselineTests {
    @Test func aReplicaOfTheEarlierLayoutIsRefusedWithAWayForward() throws {
        let dir = TempDir()
        let (store, _, _) = try fieldLaptop(dir)
        try store.setMeta("format", "fieldsync-replica-1")
        #expect(throws: StoreError(.notAReplica, "")) { _ = try ReplicaStore.open(path: store.path) }
        do { _ = try ReplicaStore.open(path: store.path) } catch let e as StoreError { #expect(e.message.contains("make a new one with init")) }
    }

    /// The built code holds every schema file as it is in Schema/. SwiftPM does not always run
    /// the embedding plugin again for a file added since the last build (a release build once
    /// lacked a new PostgreSQL migration and failed only when it ran): this says so, by name.
    @Test func everySchemaFileIsEmbeddedAsWritten() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Schema")
        var onDisk: [String: String] = ["records.json": try String(contentsOf: root.appendingPathComponent("records.json"), encoding: .utf8)]
        for folder in ["sqlite", "sqlite-server", "postgres"] {
            let dir = root.appendingPathComponent(folder)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where name.hasSuffix(".sql") {
                onDisk["\(folder)/\(name)"] = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
            }
        }
        #expect(onDisk.count > 4)
        for (name, text) in onDisk.sorted(by: { $0.key < $1.key }) {
            #expect(EmbeddedSchema.files[name] == text, "Schema/\(name) is not in the build as written: touch Package.swift and build again")
        }
        #expect(Set(EmbeddedSchema.files.keys) == Set(onDisk.keys))
    }

    /// The baseline and the migrations after it are SQL only: a replica made from them has
    /// every table, index and trigger, and the server's baseline adds its own.
    @Test func theBaselineMakesEveryTable() throws {
        let dir = TempDir()
        let laptop = try ReplicaStore.open(path: dir.path + "/l.sqlite", create: true)
        let server = try ReplicaStore.open(path: dir.path + "/s.sqlite", create: true, server: true)
        let names = { (s: ReplicaStore) throws -> Set<String> in
            Set(try s.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%'") })
        }
        let replicaTables: Set = ["meta", "roster", "pending", "records", "refusals", "changes", "heads", "edits", "ended",
                                  "records_conflicted", "edits_by_record", "changes_by_hlc", "roster_stamp_insert", "roster_stamp_update",
                                  "roster_stamp_delete", "received_changes_move_heads", "forks"]
        #expect(try names(laptop) == replicaTables)
        #expect(try names(server) == replicaTables.union(["invites", "nonces", "nonces_expiry", "device_activity"]))
        #expect(try laptop.meta("roster_version")?.count == 32)
    }
}

/// A laptop's own changes are stored `local` and left out of `changes_by_hlc` (0014): the log's
/// order and the clock's reading must be what they were when every change was in it.
@Suite struct LocalChangesTests {
    /// Coordinator change `seq` (after `prev`), stamped `hlc`: one new survey note.
    static func coordNote(_ coord: DeviceKey, seq: UInt64, prev: ChangeID, hlc: HLC) -> SignedChange {
        var d = ChangeDraft(); let id = RecordID.make(.note, by: coord.deviceID)
        d.create(id, type: .note, kind: "survey")
        d.set("ref", to: .string("UA-C\(seq)"), onNew: id, type: .note)
        return SignedChange.author(Change(device: coord.deviceID, seq: seq, prev: prev, hlc: hlc, wallMillis: hlc.millis, ops: d.ops),
                                   values: d.values, key: coord)
    }

    /// A laptop holding its own notes and a coordinator's, some stamped before its own, one after.
    static func mixedLaptop(_ dir: TempDir) throws -> (store: ReplicaStore, field: DeviceKey, coord: DeviceKey) {
        let (store, field, coord) = try fieldLaptop(dir)
        let now = Timestamps.nowMillis
        var prev = ChangeID.zero
        func receive(_ seq: UInt64, _ millis: UInt64) throws {
            let c = coordNote(coord, seq: seq, prev: prev, hlc: HLC(millis: millis, counter: 0))
            _ = try store.receive([c])
            prev = c.id
        }
        try receive(1, now - 86_400_000)  // a day behind
        for _ in 0..<3 { try addSurveyNote(store, field) }
        try receive(2, now + 3_600_000)   // an hour ahead: the own notes after it come later still
        for _ in 0..<2 { try addSurveyNote(store, field) }
        try receive(3, now + 1_800_000)   // between the own notes
        return (store, field, coord)
    }

    /// The log as one sort of every change read it before 0014: by (hlc, device), newest first.
    static func expectedLog(_ store: ReplicaStore, since: UInt64?, device: DeviceID?, record: RecordID?, limit: Int) throws -> [ChangeID] {
        try store.read { db in
            var touching: Set<Int64>?
            if let record { touching = Set(try Int64.fetchAll(db, sql: "SELECT id >> 16 FROM edits WHERE record = ?", arguments: [Data(record.bytes)])) }
            let rows = try Row.fetchAll(db, sql: "SELECT id, hlc, device, n FROM changes").filter { r in
                (since.map { (r["hlc"] as Int64) >= Int64($0 << 16) } ?? true) && (device.map { (r["device"] as String) == $0.description } ?? true)
                    && (touching?.contains(r["n"]) ?? true)
            }
            return rows.sorted { a, b in
                (a["hlc"] as Int64, a["device"] as String) > (b["hlc"] as Int64, b["device"] as String)
            }.prefix(limit).map { ChangeID(bytes: $0.bytes("id"))! }
        }
    }

    static func expectLogAsBefore(_ store: ReplicaStore, _ field: DeviceKey, _ coord: DeviceKey) throws {
        let record = try #require(try store.listing(type: .note).first.flatMap { try JSONValue.parse(Array($0.utf8))["id"]?.stringValue }.flatMap(RecordID.init))
        let asks: [(since: UInt64?, device: DeviceID?, record: RecordID?, limit: Int)] = [
            (nil, nil, nil, 100), (nil, nil, nil, 3), (Timestamps.nowMillis + 600_000, nil, nil, 100), (nil, field.deviceID, nil, 100),
            (nil, field.deviceID, nil, 2), (nil, coord.deviceID, nil, 2), (nil, nil, record, 10), (Timestamps.nowMillis - 600_000, field.deviceID, nil, 100),
        ]
        for a in asks {
            let got = try store.logChanges(since: a.since, device: a.device, record: a.record, limit: a.limit).map(\.change.id)
            #expect(got == (try expectedLog(store, since: a.since, device: a.device, record: a.record, limit: a.limit)), "asked \(a)")
            #expect(!got.isEmpty)
        }
    }

    /// Every stored HLC below the newest change's (the one just made here), but those further
    /// ahead than the clock may follow (`HybridClock.maxLeadMillis`), which it must not reach.
    static func expectNewestAboveEveryOther(_ store: ReplicaStore) throws {
        let (newest, others) = try store.read { db in
            (try Int64.fetchOne(db, sql: "SELECT hlc FROM changes ORDER BY n DESC LIMIT 1")!,
             try Int64.fetchAll(db, sql: "SELECT hlc FROM changes WHERE n < (SELECT MAX(n) FROM changes)"))
        }
        let ceiling = HybridClock.ceiling(wallMillis: Timestamps.nowMillis).raw
        #expect(others.allSatisfy { UInt64(bitPattern: $0) < UInt64(bitPattern: newest) || UInt64(bitPattern: $0) > ceiling })
        #expect(UInt64(bitPattern: newest) <= ceiling)
    }

    @Test func theLogAndTheClockReadAsBeforeWithOwnChangesOutOfTheHLCIndex() throws {
        let dir = TempDir()
        let (laptop, field, coord) = try Self.mixedLaptop(dir)
        var store = laptop
        let marks = try store.read { try Row.fetchAll($0, sql: "SELECT device, local FROM changes") }
        #expect(marks.count == 8)
        #expect(marks.allSatisfy { ($0["local"] as Int) == (($0["device"] as String) == field.deviceID.description ? 1 : 0) })
        try Self.expectLogAsBefore(store, field, coord)
        // The clock, read afresh: above the coordinator's change an hour ahead, and above its own notes.
        store = try ReplicaStore.open(path: store.path)
        try addSurveyNote(store, field)
        try Self.expectNewestAboveEveryOther(store)
        try Self.expectLogAsBefore(store, field, coord)
    }

    @Test func theReceivedReadingRisesInUnsignedOrderOnly() throws {
        let dir = TempDir()
        let (store, field, coord) = try fieldLaptop(dir)
        // A coordinator's clock absurdly far ahead: its HLC reads as negative in SQLite.
        let future = HLC(millis: 1 << 47 | 5, counter: 3)
        let first = Self.coordNote(coord, seq: 1, prev: .zero, hlc: future)
        _ = try store.receive([first])
        _ = try store.receive([Self.coordNote(coord, seq: 2, prev: first.id, hlc: HLC(millis: Timestamps.nowMillis, counter: 0))])
        #expect(try store.meta("hlc_received") == String(Int64(bitPattern: future.raw)))
        try addSurveyNote(try ReplicaStore.open(path: store.path), field)
        try Self.expectNewestAboveEveryOther(store)
    }

}

/// A field laptop's replica in this build's layout (`now.sqlite` in `dir`): its own device and a
/// coordinator on the roster, its own device in `meta`.
func fieldLaptop(_ dir: TempDir) throws -> (store: ReplicaStore, field: DeviceKey, coord: DeviceKey) {
    let field = DeviceKey(), coord = DeviceKey()
    let store = try ReplicaStore.open(path: dir.path + "/now.sqlite", create: true)
    try store.upsertRoster([RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
                            RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0)])
    try store.setMeta("device", field.deviceID.description)
    return (store, field, coord)
}

/// One new survey note, as one change by `key`.
func addSurveyNote(_ store: ReplicaStore, _ key: DeviceKey) throws {
    try store.commitLocal(key: key) { _ in
        var d = ChangeDraft(); let id = RecordID.make(.note, by: key.deviceID)
        d.create(id, type: .note, kind: "survey")
        d.set("ref", to: "UA-1", onNew: id, type: .note)
        return d
    }
}

