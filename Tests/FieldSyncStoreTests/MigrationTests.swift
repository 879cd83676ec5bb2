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
        let field = DeviceKey(), coord = DeviceKey()
        let roster = [RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
                      RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0)]
        // The reference: the changes in a replica made by this build.
        let now = try ReplicaStore.open(path: dir.path + "/now.sqlite", create: true)
        try now.upsertRoster(roster)
        var ids: [RecordID] = []
        for n in 0..<3 {
            try now.commitLocal(key: field) { _ in
                var d = ChangeDraft(); let id = RecordID.make(); ids.append(id)
                d.create(id, type: .note, kind: "survey")
                d.set("ref", to: .string("UA-\(n)"), onNew: id, type: .note)
                d.set("narrative", to: .string("Ряд \(n): two PMN-2 found"), onNew: id, type: .note)
                return d
            }
        }
        try now.commitLocal(key: coord) { r in var d = ChangeDraft(); d.set("status", to: "suspected", on: try r.ops(ids[0]), type: .note); return d }

        // The same rows in the layout of migrations 0001–0004.
        let oldPath = dir.path + "/old.sqlite"
        try oldLayoutReplica(at: oldPath, upTo: "sqlite/0004_server_envelopes.sql", from: now) { src, db in
            func copy(_ select: String, into table: String) throws { try copyRows(src, select, into: table, of: db) }
            for table in ["meta", "roster", "records"] { try copy("SELECT * FROM \(table)", into: table) }
            try copy("""
                SELECT id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, acked, seed
                FROM changes ORDER BY n DESC
                """, into: "changes")
            try copy("SELECT c.id AS change_id, v.idx, v.salt, v.value FROM op_values v JOIN changes c ON c.n = v.change", into: "op_values")
            try copy("""
                SELECT c.id AS change_id, o.idx, o.record, c.device AS author, c.hlc, c.wall, o.op
                FROM ops o JOIN changes c ON c.n = o.change
                """, into: "ops")
        }

        let migrated = try ReplicaStore.open(path: oldPath)
        #expect(try migrated.missing(for: VersionVector()).map(\.envelope).sorted { $0.lexicographicallyPrecedes($1) }
                == now.missing(for: VersionVector()).map(\.envelope).sorted { $0.lexicographicallyPrecedes($1) })
        #expect(try migrated.missing(for: VersionVector()).count == 4)
        for id in ids { #expect(try migrated.view(id) == now.view(id)) }
        #expect(try migrated.view(ids[0])?.values["status"] == "suspected")
        #expect(try migrated.logChanges(since: nil, device: nil, record: ids[0], limit: 10).count == 2)
        #expect(try migrated.vector() == now.vector())
        // And it goes on working: a new change lands after the migrated ones.
        try migrated.commitLocal(key: coord) { r in var d = ChangeDraft(); d.set("status", to: "confirmed", on: try r.ops(ids[1]), type: .note); return d }
        #expect(try migrated.view(ids[1])?.values["status"] == "confirmed")
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
/// replica in an older layout for a migration test).
func copyRows(_ src: Database, _ select: String, into table: String, of db: Database) throws {
    for row in try Row.fetchAll(src, sql: select) {
        let cols = row.columnNames.joined(separator: ", "), marks = row.columnNames.map { _ in "?" }.joined(separator: ", ")
        try db.execute(sql: "INSERT INTO \(table) (\(cols)) VALUES (\(marks))", arguments: StatementArguments(Array(row.databaseValues)))
    }
}
