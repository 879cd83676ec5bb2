import FieldSyncCore
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// A replica written before migration 0005 (ops and values keyed by the 32-byte change id) opens
/// with every change, op and value intact.
@Suite struct MigrationTests {
    @Test func integerChangeKeysKeepEveryChangeOpAndValue() throws {
        let dir = TempDir()
        let field = DeviceKey(), coord = DeviceKey(), press = DeviceKey()
        let roster = [RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
                      RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0),
                      RosterEntry(publicKey: press.publicKey, name: "press", role: .press, enrolledAtMillis: 0)]
        // The reference: the changes in a replica made by this build.
        let now = try ReplicaStore.open(path: dir.path + "/now.sqlite", create: true)
        try now.upsertRoster(roster)
        var ids: [RecordID] = []
        for n in 0..<3 {
            try now.commitLocal(key: field) { _ in
                var d = ChangeDraft(); let id = RecordID.make(.note, by: field.deviceID); ids.append(id)
                d.create(id, type: .note, kind: "survey")
                d.set("ref", to: .string("UA-\(n)"), onNew: id, type: .note)
                d.set("narrative", to: .string("Ряд \(n): two PMN-2 found"), onNew: id, type: .note)
                return d
            }
        }
        try now.commitLocal(key: coord) { r in var d = ChangeDraft(); d.set("status", to: "suspected", on: try r.ops(ids[0]), type: .note); return d }
        // A change refused by policy (a field laptop may not review) is kept with its values.
        var review = ChangeDraft()
        review.review("approved", comment: "looks fine to me", on: try now.read { db in try now.storage(db, wallMillis: 0).load(ids[2]).ops })
        let head = try #require(try now.read { db in var s = try now.storage(db, wallMillis: 0); return try s.head(of: field.deviceID) })
        let refused = SignedChange.author(Change(device: field.deviceID, seq: head.seq + 1, prev: head.id, hlc: HLC(millis: Timestamps.nowMillis, counter: 9),
                                                 wallMillis: Timestamps.nowMillis, ops: review.ops), values: review.values, key: field)
        _ = try now.receive([refused])
        // An erased contact: its values and its change's seed must stay gone.
        let contact = RecordID.make(.contact, by: press.deviceID)
        try now.commitLocal(key: press) { _ in
            var d = ChangeDraft()
            d.create(contact, type: .contact, kind: nil)
            d.set("fn", to: "Olena Melnyk", onNew: contact, type: .contact)
            d.add("email", "o.melnyk@example.org", record: contact, type: .contact)
            d.set("source", to: "press release", onNew: contact, type: .contact)
            return d
        }
        try now.commitLocal(key: coord) { _ in var d = ChangeDraft(); d.erase(contact); return d }
        #expect(try now.logChanges(since: nil, device: field.deviceID, record: nil, limit: 1).first?.refusal != nil)

        // The same rows in the layout of migrations 0001–0004.
        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0004_server_envelopes.sql", from: now) { src, db in
            func copy(_ select: String, into table: String) throws { try copyRows(src, select, into: table, of: db) }
            for table in ["meta", "roster", "records"] { try copy("SELECT * FROM \(table)", into: table) }
            try copy("""
                SELECT id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, acked, seed
                FROM changes ORDER BY n DESC
                """, into: "changes")
            for o in try legacyOps(src) {
                let c = try #require(try Row.fetchOne(src, sql: "SELECT id, device, hlc, wall FROM changes WHERE n = ?", arguments: [o.change]))
                let id: Data = c["id"], device: String = c["device"], hlc: Int64 = c["hlc"], wall: Int64 = c["wall"]
                if let v = o.value {
                    try db.execute(sql: "INSERT INTO op_values (change_id, idx, salt, value) VALUES (?, ?, ?, ?)", arguments: [id, o.idx, v.salt, v.value])
                }
                if o.applied {
                    try db.execute(sql: "INSERT INTO ops (change_id, idx, record, author, hlc, wall, op) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   arguments: [id, o.idx, o.record, device, hlc, wall, o.op])
                }
            }
        }

        let migrated = try ReplicaStore.open(path: oldPath)
        #expect(try migrated.missing(for: VersionVector()).map(\.envelope).sorted { $0.lexicographicallyPrecedes($1) }
                == now.missing(for: VersionVector()).map(\.envelope).sorted { $0.lexicographicallyPrecedes($1) })
        // Envelopes equal: the same values, salts and seeds (the erased contact's included).
        #expect(try migrated.missing(for: VersionVector()).count == 7)
        #expect(try migrated.view(contact) == now.view(contact))
        #expect(try migrated.view(contact)?.erasedBy != nil && migrated.view(contact)?.values["source"] == "press release")
        #expect(try migrated.value(of: OpRef(change: refused.id, index: 0)) == now.value(of: OpRef(change: refused.id, index: 0)))
        #expect(try migrated.value(of: OpRef(change: refused.id, index: 0)) != nil)
        #expect(try migrated.logChanges(since: nil, device: field.deviceID, record: nil, limit: 1).first?.refusal != nil)
        for id in ids { #expect(try migrated.view(id) == now.view(id)) }
        #expect(try migrated.view(ids[0])?.values["status"] == "suspected")
        #expect(try migrated.logChanges(since: nil, device: nil, record: ids[0], limit: 10).count == 2)
        #expect(try migrated.vector() == now.vector())
        // And it goes on working: a new change lands after the migrated ones.
        try migrated.commitLocal(key: coord) { r in var d = ChangeDraft(); d.set("status", to: "confirmed", on: try r.ops(ids[1]), type: .note); return d }
        #expect(try migrated.view(ids[1])?.values["status"] == "confirmed")
    }
}

/// A laptop replica from before migration 0012 (its outbox found by an index) opens with its
/// outbox mark at its first unacknowledged change, and the same outbox.
@Suite struct OutboxMarkMigrationTests {
    @Test func theMarkStartsAtTheFirstUnacknowledgedChange() throws {
        let dir = TempDir()
        let (now, field, coord) = try fieldLaptop(dir)
        for key in [field, field, coord, field, field] { try addSurveyNote(now, key) }
        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0011_edits_rowid.sql", from: now) { src, db in
            try copyRows(src, "SELECT * FROM meta WHERE key NOT IN ('roster_version') AND key NOT LIKE 'outbox_from.%'", into: "meta", of: db)
            for table in ["roster", "changes", "edits", "records"] { try copyRows(src, "SELECT * FROM \(table)", into: table, of: db) }
            // The server took this laptop's first two changes, and another device's.
            try db.execute(sql: "UPDATE changes SET acked = 1 WHERE seq <= 2 OR device = ?", arguments: [coord.deviceID.description])
        }
        let migrated = try ReplicaStore.open(path: oldPath)
        #expect(try migrated.meta("outbox_from.\(field.deviceID)") == "3")
        #expect(try migrated.meta("outbox_from.\(coord.deviceID)") == nil, "only this laptop's own device has a mark")
        #expect(try migrated.outbox(device: field.deviceID).map(\.seq) == [3, 4])
        #expect(try migrated.status(device: field.deviceID).waiting == 2)
    }
}

/// A laptop replica from before migration 0013 (its own head kept in `heads` as well) opens with
/// the same version vector, its own head now read from `changes`, and both keep moving.
@Suite struct OwnHeadMigrationTests {
    @Test func theOwnHeadLeavesHeadsAndTheVectorStaysTheSame() throws {
        let dir = TempDir()
        let (now, field, coord) = try fieldLaptop(dir)
        for key in [field, coord, field, field] { try addSurveyNote(now, key) }
        let heads = "SELECT device FROM heads ORDER BY device"
        #expect(try now.read { try String.fetchAll($0, sql: heads) } == [coord.deviceID.description], "no own row is kept")
        #expect(try now.vector().seqs == [field.deviceID: 3, coord.deviceID: 1])

        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0012_outbox_mark.sql", from: now) { src, db in
            try copyRows(src, "SELECT * FROM meta WHERE key NOT IN ('roster_version')", into: "meta", of: db)
            for table in ["roster", "changes", "edits", "records"] { try copyRows(src, "SELECT * FROM \(table)", into: table, of: db) }
            #expect(try String.fetchAll(db, sql: heads).count == 2, "before 0013 the trigger kept the own head too")
        }
        let migrated = try ReplicaStore.open(path: oldPath)
        #expect(try migrated.read { try String.fetchAll($0, sql: heads) } == [coord.deviceID.description])
        #expect(try migrated.vector() == now.vector())
        try addSurveyNote(migrated, field)
        try addSurveyNote(migrated, coord)
        #expect(try migrated.vector().seqs == [field.deviceID: 4, coord.deviceID: 2])
        #expect(try migrated.listing(type: .note).count == 6)
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

    @Test func theMigrationTakesTheHighestHLCInUnsignedOrder() throws {
        let dir = TempDir()
        let (now, field, coord) = try fieldLaptop(dir)
        try addSurveyNote(now, field)
        // A coordinator's clock absurdly far ahead (negative in SQLite), then one in the present.
        let future = HLC(millis: 1 << 47 | 5, counter: 3)
        let first = Self.coordNote(coord, seq: 1, prev: .zero, hlc: future)
        _ = try now.receive([first, Self.coordNote(coord, seq: 2, prev: first.id, hlc: HLC(millis: Timestamps.nowMillis, counter: 0))])
        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0013_fewer_pages_per_commit.sql", from: now) { src, db in
            try copyRows(src, "SELECT * FROM meta WHERE key NOT IN ('roster_version', 'hlc_received')", into: "meta", of: db)
            for table in ["roster", "changes", "edits", "records"] { try copyRows(src, "SELECT * FROM \(table)", into: table, of: db) }
        }
        let migrated = try ReplicaStore.open(path: oldPath)
        #expect(try migrated.meta("hlc_received") == String(Int64(bitPattern: future.raw)))
        try addSurveyNote(migrated, field)
        try Self.expectNewestAboveEveryOther(migrated)
    }

    @Test func aReplicaFromBeforeKeepsItsClockAndLog() throws {
        let dir = TempDir()
        let (now, field, coord) = try Self.mixedLaptop(dir)
        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0013_fewer_pages_per_commit.sql", from: now) { src, db in
            try copyRows(src, "SELECT * FROM meta WHERE key NOT IN ('roster_version', 'hlc_received')", into: "meta", of: db)
            for table in ["roster", "changes", "edits", "records"] { try copyRows(src, "SELECT * FROM \(table)", into: table, of: db) }
        }
        let migrated = try ReplicaStore.open(path: oldPath)
        let highest = try migrated.read { try Int64.fetchOne($0, sql: "SELECT MAX(hlc) FROM changes")! }
        #expect(try migrated.meta("hlc_received") == String(highest))
        #expect(try migrated.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM changes WHERE local = 1") } == 0)
        try Self.expectLogAsBefore(migrated, field, coord)
        try addSurveyNote(migrated, field)
        #expect(try migrated.read { try Int.fetchOne($0, sql: "SELECT local FROM changes ORDER BY n DESC LIMIT 1") } == 1)
        try Self.expectNewestAboveEveryOther(migrated)
        try Self.expectLogAsBefore(migrated, field, coord)
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

/// A replica file at `path` in the layout of the migrations up to `upTo`, its rows filled by
/// `fill` from those of `source` (read as `src`, written as `db`).
func oldLayoutReplica(at path: String, upTo: String, from source: ReplicaStore, _ fill: (_ src: Database, _ db: Database) throws -> Void) throws {
    let old = try DatabaseQueue(path: path)
    try ReplicaStore.migrator(server: false).migrate(old, upTo: upTo)
    try source.read { src in try old.write { db in try fill(src, db) } }
}

/// Copies the rows `select` reads from `src` into `table` of `db`, column by column (building a
/// replica in an older layout for a migration test): the columns the older table does not have
/// yet are left out.
func copyRows(_ src: Database, _ select: String, into table: String, of db: Database) throws {
    let known = Set(try db.columns(in: table).map(\.name))
    for row in try Row.fetchAll(src, sql: select) {
        let names = row.columnNames.filter(known.contains)
        let values = zip(row.columnNames, row.databaseValues).filter { known.contains($0.0) }.map(\.1)
        let cols = names.joined(separator: ", "), marks = names.map { _ in "?" }.joined(separator: ", ")
        try db.execute(sql: "INSERT INTO \(table) (\(cols)) VALUES (\(marks))", arguments: StatementArguments(values))
    }
}

/// One op of a replica in this build's layout, as the rows the layouts before migration 0009 kept
/// for it: an `ops` row if its change was applied, an `op_values` row if it has a value.
struct LegacyOp {
    let change: Int64, idx: Int64, record: Data, op: Data
    let value: (salt: Data, value: Data)?
    let applied: Bool
}

func legacyOps(_ src: Database) throws -> [LegacyOp] {
    try Row.fetchAll(src, sql: "SELECT change, record, body, live FROM edits ORDER BY change").flatMap { row in
        let record = try #require(RecordID(bytes: row.bytes("record")))
        return try EditBody.decode(row.bytes("body"), record: record).entries.map { e in
            LegacyOp(change: row["change"], idx: Int64(e.index), record: row["record"], op: Data(ChangeCodec.encodeOp(e.op)),
                     value: e.value.map { (Data($0.salt), Data($0.canonical)) }, applied: (row["live"] as Int64) >= 0)
        }
    }
}
