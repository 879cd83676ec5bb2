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
    /// The replica's own device (`meta.device`; none on the server): its changes are stored
    /// `local` (0014).
    let localDevice: DeviceID?
    /// The change appended last, its local number (`changes.n`) and its values: its ops are
    /// saved next, record by record (`saveRecord`).
    var appended: (id: ChangeID, n: Int64, values: [UInt16: OpValue])?
    /// The record last loaded, when it had no ops stored: nothing can have ended its ops yet,
    /// so saving it skips looking them up in `ended` (a first sync's every record).
    var loadedEmpty: RecordID?
    /// Records known to have nothing stored (no edit, so no record row and no `ended` row either:
    /// both are written only after an edit of the record), learnt in bulk by `expect` before a
    /// batch of changes is applied: loading one then needs no lookup. A first sync brings
    /// thousands of new records, and two empty lookups each were an eighth of the one writer's
    /// work. A record leaves the set with its first edit (`insertEdit`).
    var unstored: Set<RecordID> = []
    /// Heads learnt in this transaction (looked up, or moved by `appendToChain`, the only writer
    /// of `changes` while it lasts): a local change asked for its device's head twice, and a
    /// pulled batch once per change.
    var heads: [DeviceID: (seq: UInt64, id: ChangeID)] = [:]
    /// Whether `pending` is known to be empty, as it nearly always is: then no change needs a
    /// lookup there (each change asked twice).
    var pendingEmpty: Bool?
    /// The policy refusal of the change appended last, if it was refused.

    init(db: Database, schema: RecordSchema, wallMillis: UInt64, keepsEnvelopes: Bool, roster: Roster) throws {
        self.db = db
        self.schema = schema
        self.wallMillis = wallMillis
        self.keepsEnvelopes = keepsEnvelopes
        self.roster = roster.entries
        (clock, localDevice) = try Self.clockReading(db, wallMillis: wallMillis)
    }

    /// The clock's last reading, kept by the changes themselves: the clock ticks only for a change
    /// it stores and observes every change it stores, in the same transaction, so its reading is
    /// the highest stored HLC. That is the higher of two (0014): the own device's head, whose
    /// changes this clock stamped in seq order (they are `local` and not in `changes_by_hlc`), and
    /// `hlc_received`, which a trigger raises for every other change. Not a `meta` row rewritten
    /// by every commit: that was one more B-tree in each durable `note add`. A replica made before
    /// 0013 still has its reading in `meta.hlc`, as a floor. Also returns the own device.
    /// The received part is bounded as `HybridClock.observe` bounds it (a far-future HLC stored
    /// before that bound existed, or while the wall clock was ahead, lifts it no further).
    static func clockReading(_ db: Database, wallMillis: UInt64) throws -> (HybridClock, DeviceID?) {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT (SELECT value FROM meta WHERE key = 'device'), (SELECT value FROM meta WHERE key = 'hlc_received'),
                   (SELECT hlc FROM changes WHERE device = (SELECT value FROM meta WHERE key = 'device') ORDER BY seq DESC LIMIT 1),
                   (SELECT value FROM meta WHERE key = 'hlc')
            """)) else { return (HybridClock(last: .zero), nil) }
        let received = min((row[1] as String?).flatMap { Int64($0) }.map { UInt64(bitPattern: $0) } ?? 0,
                           HybridClock.ceiling(wallMillis: wallMillis).raw)
        let ownHead = (row[2] as Int64?).map { UInt64(bitPattern: $0) } ?? 0
        let kept = (row[3] as String?).flatMap { UInt64($0) } ?? 0
        return (HybridClock(last: HLC(raw: max(received, ownHead, kept))), (row[0] as String?).flatMap(DeviceID.init))
    }

    func rosterEntry(_ device: DeviceID) -> RosterEntry? { roster[device] }

    mutating func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)? {
        if let known = heads[device] { return known }
        // Cached statements throughout: compiling SQL (and GRDB's authorizer) per call was a
        // tenth of a local write.
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT seq, id FROM changes WHERE device = ? ORDER BY seq DESC LIMIT 1"),
                                         arguments: [device.description]) else { return nil }
        let head = (seq: UInt64(row["seq"] as Int64), id: ChangeID(bytes: row.bytes("id"))!)
        heads[device] = head
        return head
    }

    func position(of id: ChangeID) throws -> (device: DeviceID, seq: UInt64)? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT device, seq FROM changes WHERE id = ?"), arguments: [Data(id.bytes)]) else { return nil }
        return (DeviceID(row["device"] as String)!, UInt64(row["seq"] as Int64))
    }

    mutating func pending(device: DeviceID, seq: UInt64) throws -> SignedChange? {
        if pendingEmpty == nil { pendingEmpty = try !Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM pending)"))! }
        if pendingEmpty == true { return nil }
        guard let env = try Data.fetchOne(db.cachedStatement(sql: "SELECT envelope FROM pending WHERE device = ? AND seq = ?"),
                                          arguments: [device.description, Int64(seq)]) else { return nil }
        return try SignedChange(envelope: [UInt8](env))
    }

    mutating func addPending(_ c: SignedChange) throws {
        pendingEmpty = false
        try db.execute(sql: "INSERT INTO pending (device, seq, id, envelope) VALUES (?, ?, ?, ?)",
                       arguments: [c.change.device.description, Int64(c.change.seq), Data(c.id.bytes), Data(c.envelope)])
    }

    func removePending(device: DeviceID, seq: UInt64) throws {
        try db.execute(sql: "DELETE FROM pending WHERE device = ? AND seq = ?", arguments: [device.description, Int64(seq)])
    }

    mutating func appendToChain(_ c: SignedChange, refusal: CoreError?, clockSkewed: Bool) throws {
        try db.cachedStatement(sql: """
            INSERT INTO changes (id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, seed, envelope, local)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [Data(c.id.bytes), c.change.device.description, Int64(c.change.seq), Int64(bitPattern: c.change.hlc.raw),
                             Int64(bitPattern: c.change.wallMillis), Int64(wallMillis), Data(c.bytes), Data(c.signature),
                             refusal?.code.description, refusal?.message, clockSkewed, c.seed.map { Data($0) },
                             keepsEnvelopes ? Data(c.envelope) : nil, c.change.device == localDevice])
        let n = db.lastInsertedRowID
        appended = (c.id, n, c.values)
        // A chain grows only at its head (`Replicator` checked the link).
        heads[c.change.device] = (c.change.seq, c.id)
        guard refusal != nil else { return }  // its edits are saved record by record (`saveRecord`)
        // Refused: applied nowhere, never loaded (live -1), but kept by record so that an erasure
        // of the record reaches its values too.
        for (record, indexes) in c.change.opsByRecord {
            try insertEdit(n, record, EditBody(entries: indexes.map { entry(UInt16($0), c.change.ops[$0]) }), live: -1, ended: "")
        }
    }

    /// An op of the change appended last, with its value as received.
    func entry(_ index: UInt16, _ op: Op) -> EditBody.Entry {
        EditBody.Entry(index: index, op: op, value: appended!.values[index].map { ($0.salt, $0.canonical) })
    }

    mutating func insertEdit(_ n: Int64, _ record: RecordID, _ body: EditBody, live: Int, ended: String) throws {
        unstored.remove(record)
        try db.cachedStatement(sql: "INSERT INTO edits (id, change, record, body, live, ended) VALUES (?, ?, ?, ?, ?, ?)")
            .execute(arguments: [Self.editKey(change: n, firstOp: body.entries[0].index), n, Data(record.bytes), Data(body.bytes), live, ended])
    }

    /// An edit's key (0011): its change's number, then the first op index of its record in that
    /// change (for rows 0011 moved, the record's place among the change's records), so that the
    /// edits of one change are one range of keys.
    static func editKey(change n: Int64, firstOp: UInt16) -> Int64 { n << 16 | Int64(firstOp) }

    /// The first and last key an edit of change `n` can have, for `id BETWEEN ? AND ?`.
    static func editKeys(ofChange n: Int64) -> (first: Int64, last: Int64) {
        (editKey(change: n, firstOp: 0), editKey(change: n, firstOp: .max))
    }

    /// Learns which records the ops of `changes` touch that have nothing stored yet (`unstored`).
    /// Asked in batches (an IN list probes the index inside SQLite, one statement per batch).
    mutating func expect(_ changes: [SignedChange]) throws {
        var ids: [RecordID] = []
        var seen: Set<RecordID> = []
        for c in changes { for op in c.change.ops where seen.insert(op.record).inserted { ids.append(op.record) } }
        // Batches of 250, 16 or 1 parameters (the last one padded with its last id): three cached
        // statements. A small sync's one record padded to 250 was a quarter of its answer's storing.
        var start = 0
        while start < ids.count {
            let batch = [1, 16, 250].first { $0 >= ids.count - start } ?? 250
            let lookup = try db.cachedStatement(sql: "SELECT DISTINCT record FROM edits WHERE record IN (\(repeatElement("?", count: batch).joined(separator: ",")))")
            let part = ids[start..<min(ids.count, start + batch)]
            let keys = part.map { Data($0.bytes) }
            let stored = try Set(Data.fetchAll(lookup, arguments: StatementArguments(keys + repeatElement(keys.last!, count: batch - keys.count))))
            for (id, key) in zip(part, keys) where !stored.contains(key) { unstored.insert(id) }
            start += part.count
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
    /// time stored with it, so the ops that no longer count need not be read; one not shown yet
    /// (its create has not arrived) is read whole, which is rare and small.
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
        if unstored.contains(id) { return (ops, true) }
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

    /// A record's applied ops: with `onlyCounting`, those that can still show; else every one.
    func appliedOps(_ id: RecordID, onlyCounting: Bool) throws -> [AppliedOp] {
        let rows = try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT changes.id, changes.device, changes.hlc, changes.wall, edits.body, edits.ended
            FROM edits JOIN changes ON changes.n = edits.change
            WHERE edits.record = ? AND edits.live >= ?
            """), arguments: [Data(id.bytes), onlyCounting ? 1 : 0])
        var out: [AppliedOp] = []
        // Most ops of a record come from a few devices: parse each device id once.
        var devices: [String: DeviceID] = [:]
        while let row = try rows.next() {
            let text: String = row["device"]
            guard let author = devices[text] ?? DeviceID(text) else { throw StoreError(.notAReplica, "a stored change names a malformed device \(text)") }
            devices[text] = author
            let ended: String = row["ended"]
            let skip = onlyCounting && !ended.isEmpty ? Set(ended.split(separator: " ").compactMap { UInt16($0) }) : []
            let change = ChangeID(bytes: row.bytes("id"))!
            let hlc = HLC(raw: UInt64(bitPattern: row["hlc"])), wall = UInt64(bitPattern: row["wall"])
            for e in try EditBody.decode(row.bytes("body"), record: id).entries where !skip.contains(e.index) {
                out.append(AppliedOp(ref: OpRef(change: change, index: e.index), op: e.op, hlc: hlc, author: author, wallMillis: wall,
                                     value: try e.value.map { try JSONValue.parseCanonical($0.canonical) }))
            }
        }
        return out
    }

    /// Stores the ops `added` to a record (all from the change appended last) as one edit, with
    /// their values as received but for those the merge cleared (personal fields of an erased
    /// record): those are never written, and the change's seed and kept envelope go with them.
    mutating func saveRecord(_ ops: RecordOps, added: [AppliedOp]) throws {
        var ops = ops
        guard let change = appended, added.allSatisfy({ $0.ref.change == change.id }) else {
            throw StoreError(.notAReplica, "ops saved for record \(ops.id) are not all from the change stored last")
        }
        let record = Data(ops.id.bytes)
        // Ended before it arrived, by an op that may itself no longer count (and so not be loaded).
        // Only by an op on the same field ('*': a row from before 0015, which always was).
        let wasEnded = try db.cachedStatement(sql: "SELECT 1 FROM ended WHERE record = ? AND change = ? AND idx = ? AND how = ? AND field IN (?, '*')")
        for e in added where loadedEmpty != ops.id {
            guard let how = e.op.endedBy,
                  try Bool.fetchOne(wasEnded, arguments: [record, Data(e.ref.change.bytes), Int64(e.ref.index), Int64(how.rawValue), e.op.field]) != nil
            else { continue }
            ops.ended(e.ref, field: e.op.field, by: how)
        }
        var body = EditBody()
        var live = 0
        var ended = ""
        var dropped = false
        for e in added {
            var stored = entry(e.ref.index, e.op)
            if e.value == nil && stored.value != nil { stored.value = nil; dropped = true }
            body.entries.append(stored)
            if ops.mustLoad(e) { live += 1 } else { ended += " \(e.ref.index)" }
        }
        try insertEdit(change.n, ops.id, body, live: live, ended: ended)
        if dropped { try forgetSeedAndEnvelope(ofChange: change.n) }
        try noteEndings(of: added, in: ops)
        guard let view = ops.materialize(schema: schema) else { return }  // its create has not arrived yet
        try RecordRow(view).save(db)
    }

    /// Lists what `ops` ended, and marks the stored ops among them that no longer count.
    func noteEndings(of ops: [AppliedOp], in record: RecordOps) throws {
        let key = Data(record.id.bytes)
        let note = try db.cachedStatement(sql: "INSERT OR IGNORE INTO ended (record, change, idx, how, field) VALUES (?, ?, ?, ?, ?)")
        // The `instr` guard: an op already listed is not counted twice (a record not shown yet
        // loads its ended ops too, and an edit is stored with its own ended ops listed).
        let mark = try db.cachedStatement(sql: """
            UPDATE edits SET live = live - 1, ended = ended || ?
            WHERE id BETWEEN ? AND ? AND record = ? AND live > 0 AND instr(ended || ' ', ?) = 0
            """)
        var marked: Set<OpRef> = []
        for e in ops {
            guard let how = e.op.ending else { continue }
            for ref in e.op.refs {
                try note.execute(arguments: [key, Data(ref.change.bytes), Int64(ref.index), Int64(how.rawValue), e.op.field])
                guard let victim = record.applied(ref), !record.stillCounts(victim),
                      marked.insert(ref).inserted else { continue }
                let keys = Self.editKeys(ofChange: try number(of: ref.change))
                try mark.execute(arguments: [" \(ref.index)", keys.first, keys.last, key, " \(ref.index) "])
            }
        }
    }

    func isErased(_ id: RecordID) throws -> Bool {
        if let erased = try Bool.fetchOne(db.cachedStatement(sql: "SELECT erased FROM records WHERE id = ?"), arguments: [id.description]) {
            return erased
        }
        // Not shown yet (its create has not arrived): an erase may have, all the same.
        return try load(id).ops.isErased
    }

    /// Drops the values of a record's ops on these fields, in every change that wrote to it
    /// (refused ones included), with each such change's seed and kept envelope.
    func eraseValues(record: RecordID, fields: Set<String>) throws {
        let key = Data(record.bytes)
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT id, change, body FROM edits WHERE record = ?"), arguments: [key]) {
            var body = try EditBody.decode(row.bytes("body"), record: record)
            var dropped = false
            for i in body.entries.indices where body.entries[i].value != nil && fields.contains(body.entries[i].op.field) {
                body.entries[i].value = nil
                dropped = true
            }
            guard dropped else { continue }
            let n: Int64 = row["change"]
            try db.execute(sql: "UPDATE edits SET body = ? WHERE id = ?", arguments: [Data(body.bytes), row["id"] as Int64])
            try forgetSeedAndEnvelope(ofChange: n)
        }
        // Changes held back for a gap hold their values in their envelopes: drop them there too,
        // now, not when the gap fills (it may never).
        let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT device, seq, envelope FROM pending"))
        for row in rows {
            var held = try SignedChange(envelope: row.bytes("envelope"))
            let drop = held.change.ops.indices.filter { i in
                held.change.ops[i].record == record && fields.contains(held.change.ops[i].field) && held.values[UInt16(i)] != nil
            }.map { UInt16($0) }
            guard !drop.isEmpty else { continue }
            held.dropValues(drop)
            try db.execute(sql: "UPDATE pending SET envelope = ? WHERE device = ? AND seq = ?",
                           arguments: [Data(held.envelope), row["device"] as String, row["seq"] as Int64])
        }
    }

    /// A value of change `n` is no longer kept: nor are its salt seed (from which the value's salt
    /// could be derived again) and the server's kept envelope (which holds the value itself).
    func forgetSeedAndEnvelope(ofChange n: Int64) throws {
        try db.cachedStatement(sql: "UPDATE changes SET seed = NULL, envelope = NULL WHERE n = ?").execute(arguments: [n])
    }

    /// The stored values of one change (`changes.n`), by op index, from all its edits.
    static func values(ofChange n: Int64, _ db: Database) throws -> [UInt16: (salt: [UInt8], canonical: [UInt8])] {
        var out: [UInt16: (salt: [UInt8], canonical: [UInt8])] = [:]
        let keys = SQLiteStorage.editKeys(ofChange: n)
        let range = try db.cachedStatement(sql: "SELECT record, body FROM edits WHERE id BETWEEN ? AND ?")
        for row in try Row.fetchAll(range, arguments: [keys.first, keys.last]) {
            guard let record = RecordID(bytes: row.bytes("record")) else { throw StoreError(.notAReplica, "a stored edit names a malformed record") }
            for e in try EditBody.decode(row.bytes("body"), record: record).entries { if let v = e.value { out[e.index] = v } }
        }
        return out
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
        // A register's shown value (a set's is never a string).
        func text(_ field: String) -> String? { view.fields[field]?.value?.stringValue }
        try db.cachedStatement(sql: """
            INSERT INTO records (id, type, kind, deleted, conflicted, erased, last_changed, ref, status, team, review, json)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET type = excluded.type, kind = excluded.kind, deleted = excluded.deleted,
              conflicted = excluded.conflicted, erased = excluded.erased, last_changed = excluded.last_changed,
              ref = excluded.ref, status = excluded.status, team = excluded.team, review = excluded.review, json = excluded.json
            """).execute(arguments: [view.id.description, view.type.description, view.kind, view.deleted, view.hasConflict,
                             view.erasedBy != nil, Int64(bitPattern: view.lastChanged.raw), text("ref"), text("status"), text("team"),
                             view.fields["review"]?.value?["state"]?.stringValue, String(decoding: view.listingBytes, as: UTF8.self)])
    }
}

extension Row {
    func bytes(_ column: String) -> [UInt8] { [UInt8](self[column] as Data) }
    func optionalBytes(_ column: String) -> [UInt8]? { (self[column] as Data?).map { [UInt8]($0) } }
}
