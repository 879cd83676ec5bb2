import FieldSyncCore
import Foundation
import GRDB
import Synchronization

/// `ReplicaStorage` over one open SQLite transaction: how `Replicator` (the same code the
/// in-memory reference runs) reads and writes a replica on disk.
struct SQLiteStorage: ReplicaStorage {
    let db: Database
    let schema: RecordSchema
    let wallMillis: UInt64
    /// Store each change's envelope beside it (the server's store: see `loadEnvelope`).
    let keepsEnvelopes: Bool
    var roster: [DeviceID: RosterEntry]
    var clock: HybridClock
    /// The local number (`changes.n`) of the change appended last: its ops are saved next.
    var appended: (id: ChangeID, n: Int64)?
    /// The record last loaded, when it had no ops stored: nothing can have ended its ops yet,
    /// so saving it skips looking them up in `ended` (a first sync's every record).
    var loadedEmpty: RecordID?

    init(db: Database, schema: RecordSchema, wallMillis: UInt64, keepsEnvelopes: Bool, roster: Roster) throws {
        self.db = db
        self.schema = schema
        self.wallMillis = wallMillis
        self.keepsEnvelopes = keepsEnvelopes
        self.roster = roster.entries
        clock = HybridClock(last: HLC(raw: UInt64(try Meta.get("hlc", db).flatMap { UInt64($0) } ?? 0)))
    }

    /// Saves the clock; called once at the end of the transaction.
    func finish() throws { try Meta.set("hlc", String(clock.last.raw), db) }

    func rosterEntry(_ device: DeviceID) -> RosterEntry? { roster[device] }

    func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)? {
        // Cached statements throughout: compiling SQL (and GRDB's authorizer) per call was a
        // tenth of a local write.
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT seq, id FROM changes WHERE device = ? ORDER BY seq DESC LIMIT 1"),
                                         arguments: [device.description]) else { return nil }
        return (UInt64(row["seq"] as Int64), ChangeID(bytes: row.bytes("id"))!)
    }

    func position(of id: ChangeID) throws -> (device: DeviceID, seq: UInt64)? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT device, seq FROM changes WHERE id = ?"), arguments: [Data(id.bytes)]) else { return nil }
        return (DeviceID(row["device"] as String)!, UInt64(row["seq"] as Int64))
    }

    func pending(device: DeviceID, seq: UInt64) throws -> SignedChange? {
        guard let env = try Data.fetchOne(db.cachedStatement(sql: "SELECT envelope FROM pending WHERE device = ? AND seq = ?"),
                                          arguments: [device.description, Int64(seq)]) else { return nil }
        return try SignedChange(envelope: [UInt8](env))
    }

    func addPending(_ c: SignedChange) throws {
        try db.execute(sql: "INSERT INTO pending (device, seq, id, envelope) VALUES (?, ?, ?, ?)",
                       arguments: [c.change.device.description, Int64(c.change.seq), Data(c.id.bytes), Data(c.envelope)])
    }

    func removePending(device: DeviceID, seq: UInt64) throws {
        try db.execute(sql: "DELETE FROM pending WHERE device = ? AND seq = ?", arguments: [device.description, Int64(seq)])
    }

    mutating func appendToChain(_ c: SignedChange, refusal: CoreError?, clockSkewed: Bool) throws {
        try db.cachedStatement(sql: """
            INSERT INTO changes (id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, seed, envelope)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [Data(c.id.bytes), c.change.device.description, Int64(c.change.seq), Int64(bitPattern: c.change.hlc.raw),
                             Int64(bitPattern: c.change.wallMillis), Int64(wallMillis), Data(c.bytes), Data(c.signature),
                             refusal?.code.description, refusal?.message, clockSkewed, c.seed.map { Data($0) },
                             keepsEnvelopes ? Data(c.envelope) : nil])
        let n = db.lastInsertedRowID
        appended = (c.id, n)
        let insert = try db.cachedStatement(sql: "INSERT INTO op_values (change, idx, salt, value) VALUES (?, ?, ?, ?)")
        for (i, v) in c.values {
            try insert.execute(arguments: [n, Int64(i), Data(v.salt), Data(v.value.canonicalBytes)])
        }
    }

    /// The local number of a stored change.
    func number(of id: ChangeID) throws -> Int64 {
        if let a = appended, a.id == id { return a.n }
        guard let n = try Int64.fetchOne(db.cachedStatement(sql: "SELECT n FROM changes WHERE id = ?"), arguments: [Data(id.bytes)]) else {
            throw StoreError(.notFound, "change \(id.hex.prefix(12)) is not stored")
        }
        return n
    }

    /// The ops of a record that can still show. A record already shown has its last-changed
    /// time stored with it, so the ops that no longer count (`ops.live = 0`) need not be read;
    /// one not shown yet (its create has not arrived) is read whole, which is rare and small.
    mutating func recordOps(_ id: RecordID) throws -> RecordOps {
        let (ops, empty) = try load(id)
        // None loaded means none stored: a shown record always loads its create (never ended),
        // and one not shown yet is loaded whole.
        loadedEmpty = empty ? id : nil
        return ops
    }

    /// A record's ops for reading (drafting, showing), and whether it had none stored.
    func load(_ id: RecordID) throws -> (ops: RecordOps, empty: Bool) {
        var ops = RecordOps(id: id)
        let lastChanged = try Int64.fetchOne(db.cachedStatement(sql: "SELECT last_changed FROM records WHERE id = ?"),
                                             arguments: [id.description])
        var personal: Set<String>?
        let stored = try appliedOps(id, onlyCounting: lastChanged != nil)
        for e in stored {
            if personal == nil { personal = schema.personalFields(of: e.op.recordType) }
            ops.insert(e, personalFields: personal!)
        }
        if let lastChanged { ops.changed(at: HLC(raw: UInt64(bitPattern: lastChanged))) }
        return (ops, stored.isEmpty)
    }

    func appliedOps(_ id: RecordID, onlyCounting: Bool) throws -> [AppliedOp] {
        let rows = try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT changes.id, ops.idx, changes.device, changes.hlc, changes.wall, ops.op, op_values.value
            FROM ops JOIN changes ON changes.n = ops.change
            LEFT JOIN op_values ON op_values.change = ops.change AND op_values.idx = ops.idx
            WHERE ops.record = ? AND ops.live >= ?
            """), arguments: [Data(id.bytes), onlyCounting ? 1 : 0])
        var out: [AppliedOp] = []
        // Most ops of a record come from a few devices: parse each device id once.
        var devices: [String: DeviceID] = [:]
        while let row = try rows.next() {
            let text: String = row["device"]
            guard let author = devices[text] ?? DeviceID(text) else { throw StoreError(.notAReplica, "a stored change names a malformed device \(text)") }
            devices[text] = author
            out.append(AppliedOp(ref: OpRef(change: ChangeID(bytes: row.bytes("id"))!, index: UInt16(row["idx"] as Int64)),
                                 op: try ChangeCodec.decodeOp(row.bytes("op")), hlc: HLC(raw: UInt64(bitPattern: row["hlc"])), author: author,
                                 wallMillis: UInt64(bitPattern: row["wall"]),
                                 value: try (row.optionalBytes("value")).map { try JSONValue.parseCanonical($0) }))
        }
        return out
    }

    func saveRecord(_ ops: RecordOps, added: [AppliedOp]) throws {
        var ops = ops
        let record = Data(ops.id.bytes)
        // Ended before it arrived, by an op that may itself no longer count (and so not be loaded).
        let wasEnded = try db.cachedStatement(sql: "SELECT 1 FROM ended WHERE record = ? AND change = ? AND idx = ? AND how = ?")
        for e in added where loadedEmpty != ops.id {
            guard let how = e.op.endedBy,
                  try Bool.fetchOne(wasEnded, arguments: [record, Data(e.ref.change.bytes), Int64(e.ref.index), Int64(how.rawValue)]) != nil
            else { continue }
            ops.ended(e.ref, by: how)
        }
        let insert = try db.cachedStatement(sql: "INSERT INTO ops (change, idx, record, op, live) VALUES (?, ?, ?, ?, ?)")
        for e in added {
            try insert.execute(arguments: [try number(of: e.ref.change), Int64(e.ref.index), record, Data(ChangeCodec.encodeOp(e.op)),
                                           ops.mustLoad(e)])
        }
        try noteEndings(of: added, in: ops)
        guard let view = ops.materialize(schema: schema) else { return }  // its create has not arrived yet
        try RecordRow(view).save(db)
    }

    /// Lists what `ops` ended, and marks the stored ops among them that no longer count.
    func noteEndings(of ops: [AppliedOp], in record: RecordOps) throws {
        let key = Data(record.id.bytes)
        let note = try db.cachedStatement(sql: "INSERT OR IGNORE INTO ended (record, change, idx, how) VALUES (?, ?, ?, ?)")
        let mark = try db.cachedStatement(sql: "UPDATE ops SET live = 0 WHERE change = ? AND idx = ? AND live = 1")
        for e in ops {
            guard let how = e.op.ending else { continue }
            for ref in e.op.refs {
                try note.execute(arguments: [key, Data(ref.change.bytes), Int64(ref.index), Int64(how.rawValue)])
                if let victim = record.applied(ref), !record.stillCounts(victim) {
                    try mark.execute(arguments: [try number(of: ref.change), Int64(ref.index)])
                }
            }
        }
    }

    /// Migration 0006 on a replica that already holds ops: what each op ended, and which ops no
    /// longer count, worked out record by record from the whole history. Its SQL is its own
    /// (the 0006 layout), not the store's, which later migrations may change.
    static func markEndedOps(_ db: Database) throws {
        var byRecord: [Data: [(n: Int64, op: AppliedOp)]] = [:]
        let rows = try Row.fetchCursor(db, sql: """
            SELECT ops.change, changes.id, ops.idx, ops.record, ops.op, changes.hlc
            FROM ops JOIN changes ON changes.n = ops.change
            """)
        let nobody = DeviceID(bytes: [UInt8](repeating: 0, count: 16))!
        while let row = try rows.next() {
            guard let change = ChangeID(bytes: row.bytes("id")) else { throw StoreError(.notAReplica, "a stored change has a malformed id") }
            // Only refs, actions and fields matter to what ends what.
            let op = AppliedOp(ref: OpRef(change: change, index: UInt16(row["idx"] as Int64)), op: try ChangeCodec.decodeOp(row.bytes("op")),
                               hlc: HLC(raw: UInt64(bitPattern: row["hlc"])), author: nobody, wallMillis: 0, value: nil)
            byRecord[row["record"], default: []].append((row["change"], op))
        }
        let note = try db.makeStatement(sql: "INSERT OR IGNORE INTO ended (record, change, idx, how) VALUES (?, ?, ?, ?)")
        let mark = try db.makeStatement(sql: "UPDATE ops SET live = 0 WHERE change = ? AND idx = ?")
        for (key, stored) in byRecord {
            guard let id = RecordID(bytes: [UInt8](key)) else { throw StoreError(.notAReplica, "a stored op names a malformed record") }
            var ops = RecordOps(id: id)
            for s in stored { ops.insert(s.op, personalFields: []) }
            for s in stored {
                if !ops.mustLoad(s.op) { try mark.execute(arguments: [s.n, Int64(s.op.ref.index)]) }
                guard let how = s.op.op.ending else { continue }
                for ref in s.op.op.refs { try note.execute(arguments: [key, Data(ref.change.bytes), Int64(ref.index), Int64(how.rawValue)]) }
            }
        }
    }

    func isErased(_ id: RecordID) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT erased FROM records WHERE id = ?"), arguments: [id.description]) ?? false
    }

    func eraseValues(record: RecordID, fields: Set<String>) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT change, idx, op FROM ops WHERE record = ?", arguments: [Data(record.bytes)])
        for row in rows {
            let op = try ChangeCodec.decodeOp(row.bytes("op"))
            guard fields.contains(op.field) else { continue }
            try dropValue(change: row["change"], index: row["idx"])
        }
        // A change refused by policy is kept but applied nowhere, so it has no `ops` rows: its
        // ops on this record are found in its signed bytes. Its values go the same way.
        for row in try Row.fetchAll(db, sql: "SELECT n, signed FROM changes WHERE refusal_code IS NOT NULL") {
            let change = try ChangeCodec.decode(row.bytes("signed"))
            for (i, op) in change.ops.enumerated() where op.record == record && fields.contains(op.field) {
                try dropValue(change: row["n"], index: Int64(i))
            }
        }
        // Values waiting in `pending` for this record are erased when they are applied.
    }

    /// Deletes one op's value, with the change's salt seed (from which the erased value's salt
    /// could be derived again) and the server's kept envelope (which holds the value itself).
    func dropValue(change n: Int64, index: Int64) throws {
        try db.execute(sql: "DELETE FROM op_values WHERE change = ? AND idx = ?", arguments: [n, index])
        try db.execute(sql: "UPDATE changes SET seed = NULL, envelope = NULL WHERE n = ?", arguments: [n])
    }
}

enum Meta {
    static func get(_ key: String, _ db: Database) throws -> String? {
        try String.fetchOne(db.cachedStatement(sql: "SELECT value FROM meta WHERE key = ?"), arguments: [key])
    }

    static func set(_ key: String, _ value: String, _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .execute(arguments: [key, value])
    }
}

/// The roster as last read, keyed by the stamp in `meta.roster_version` that every roster change
/// renews (migration 0007): checking the stamp reads one row, reading the roster reads every row
/// and hashes every key. A sync exchange on the server needs the roster four times.
final class RosterCache: Sendable {
    private let last = Mutex<(stamp: String, roster: Roster)?>(nil)

    func roster(_ db: Database) throws -> Roster {
        guard let stamp = try Meta.get("roster_version", db) else { return Roster(try RosterRow.all(db)) }
        if let hit = last.withLock({ $0 }), hit.stamp == stamp { return hit.roster }
        let roster = Roster(try RosterRow.all(db))
        last.withLock { $0 = (stamp, roster) }
        return roster
    }
}

enum RosterRow {
    static func all(_ db: Database) throws -> [RosterEntry] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM roster ORDER BY device")).compactMap { row in
            guard let role = Role(rawValue: row["role"]) else { return nil }
            var e = RosterEntry(publicKey: row.bytes("public_key"), name: row["name"], role: role, enrolledAtMillis: UInt64(row["enrolled_at"] as Int64))
            e.revokedAfterSeq = (row["revoked_after_seq"] as Int64?).map { UInt64($0) }
            return e
        }
    }

    static func upsert(_ e: RosterEntry, _ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO roster (device, public_key, name, role, enrolled_at, revoked_after_seq) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (device) DO UPDATE SET public_key = excluded.public_key, name = excluded.name, role = excluded.role,
              enrolled_at = excluded.enrolled_at, revoked_after_seq = excluded.revoked_after_seq
            """, arguments: [e.device.description, Data(e.publicKey), e.name, e.role.rawValue, Int64(e.enrolledAtMillis),
                             e.revokedAfterSeq.map { Int64($0) }])
    }
}

/// A materialised record as stored for fast listing.
struct RecordRow {
    let view: RecordView
    init(_ view: RecordView) { self.view = view }

    func save(_ db: Database) throws {
        let v = view.values
        try db.cachedStatement(sql: """
            INSERT INTO records (id, type, kind, deleted, conflicted, erased, last_changed, ref, status, team, review, json)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET type = excluded.type, kind = excluded.kind, deleted = excluded.deleted,
              conflicted = excluded.conflicted, erased = excluded.erased, last_changed = excluded.last_changed,
              ref = excluded.ref, status = excluded.status, team = excluded.team, review = excluded.review, json = excluded.json
            """).execute(arguments: [view.id.description, view.type.description, view.kind, view.deleted, view.hasConflict,
                             view.erasedBy != nil, Int64(bitPattern: view.lastChanged.raw), v["ref"]?.stringValue,
                             v["status"]?.stringValue, v["team"]?.stringValue, v["review"]?["state"]?.stringValue,
                             view.listingJSON.canonicalString])
    }
}

extension Row {
    func bytes(_ column: String) -> [UInt8] { [UInt8](self[column] as Data) }
    func optionalBytes(_ column: String) -> [UInt8]? { (self[column] as Data?).map { [UInt8]($0) } }
}
