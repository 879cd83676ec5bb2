import FieldSyncCore
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// A question `PostgresStage` cannot answer from what it loaded: a bug in the stage's prefetch,
/// never a state of the data. The exchange fails (500) rather than guess.
struct StageMiss: Error, CustomStringConvertible {
    let what: String
    var description: String { "the PostgreSQL stage did not load \(what)" }
}

/// One upload's view of the PostgreSQL replica, for `Replicator` (which is synchronous; the
/// database is not): everything the upload can ask is loaded first, under the device's chain
/// lock and the records' locks, the same merge then runs in memory, and what it wrote is
/// flushed in a few batched statements. The records' state is their stored changes: a record is
/// loaded as every applied change that wrote to it, as `MemoryReplica` keeps it.
struct PostgresStage: ReplicaStorage, ExchangeTransaction {
    let schema: RecordSchema
    let wallMillis: UInt64
    var clock = HybridClock()
    var roster: [DeviceID: RosterEntry]
    /// The uploading device's head, as locked; other devices' are never asked (an upload holds
    /// only its own device's changes: `ServerExchange` refuses the rest first).
    let device: DeviceID
    var head: (seq: UInt64, id: ChangeID)?
    /// Positions of the changes this upload can ask about (its ids and prevs, and those of the
    /// device's held changes), with the verdicts they were stored with; nil: not stored.
    var positions: [ChangeID: (device: DeviceID, seq: UInt64, refusal: CoreError?)?]
    /// The device's held changes, by seq, as loaded; `pendingChanged` marks those to write.
    var held: [UInt64: SignedChange]
    var heldChanged: Set<UInt64> = []
    var records: [RecordID: RecordOps]
    /// Records saved by this stage, to write to `records`.
    var saved: Set<RecordID> = []
    /// Changes appended by this stage, in order, and the records each applied to.
    var appended: [(change: SignedChange, refusal: CoreError?, skewed: Bool, applied: [RecordID], listed: [RecordID])] = []
    /// Records whose personal values must go, from every stored change and held envelope.
    var erasures: [RecordID: Set<String>] = [:]

    // MARK: Loading

    /// Locks and loads what receiving `upload` from `device` can ask. The caller holds the
    /// transaction; `device`'s heads row is taken FOR UPDATE here, first, then the records'
    /// advisory locks in sorted order: one order in every process, so no deadlock.
    static func load(_ db: PostgresConnection, device: DeviceID, upload: [SignedChange], schema: RecordSchema, rosters: PostgresRosterCache,
                     now: UInt64, logger: Logger) async throws -> PostgresStage {
        var head: (seq: UInt64, id: ChangeID)?
        var locked = false
        for try await (seq, id) in try await db.query("SELECT seq, id FROM heads WHERE device = \(device.description) FOR UPDATE",
                                                       logger: logger).decode((Int64, ByteBuffer?).self) {
            locked = true
            if seq > 0, let id, let cid = ChangeID(bytes: Array(buffer: id)) { head = (UInt64(clamping: seq), cid) }
        }
        guard locked else { throw CoreError(.unknownDevice, "device \(device) is not on the roster") }
        // The roster's version in a statement of its own after the chain lock: a revocation takes
        // the same row, and only a snapshot taken after the lock sees it (the locking statement's
        // snapshot is from before its wait). The roster itself is read again only if the version
        // is not the kept one's.
        let roster = try await rosters.roster(version: PostgresSyncStore.rosterVersion(db, logger: logger), db, logger: logger)

        // Which seqs are held is fixed while the chain lock is ours; their envelopes are read again
        // once the records are locked too (an erasure elsewhere may rewrite them meanwhile).
        var held = try await heldChanges(db, device: device, logger: logger)

        let candidates = upload + held.values
        var recordIDs = Set<RecordID>()
        var changeIDs = Set<ChangeID>()
        for c in candidates {
            changeIDs.insert(c.id)
            if !c.change.prev.isZero { changeIDs.insert(c.change.prev) }
            for op in c.change.ops { recordIDs.insert(op.record) }
        }
        let sortedRecords = recordIDs.sorted()
        let recordKeys = sortedRecords.map(\.description)
        // The records' locks: two devices' changes to one record are merged one after the other,
        // so neither saves a `records` row that lacks the other's op. Records share 256 lock
        // buckets, taken in order: an upload of thousands of records takes at most 256 locks
        // (PostgreSQL's lock table is shared and small). A record that nothing has written yet
        // and that only this device may create (its mark) needs none: no other device has seen
        // it, and this device's uploads already wait for each other (the chain lock). So a
        // laptop's new notes never wait for another laptop's.
        if !recordKeys.isEmpty {
            var stored = Set<RecordID>()
            for try await id in try await db.query("SELECT DISTINCT record::text FROM record_changes WHERE record = ANY(\(recordKeys)::uuid[])",
                                                   logger: logger).decode(String.self) {
                if let rid = RecordID(id) { stored.insert(rid) }
            }
            let shared = sortedRecords.filter { stored.contains($0) || !$0.onlyCreatable(by: device) }
            if !shared.isEmpty {
                let keys = Set(shared.map { Int64($0.lockKey % Self.lockBuckets) }).sorted().map { Self.lockSpace + $0 }
                _ = try await db.query("SELECT pg_advisory_xact_lock(k) FROM unnest(\(keys)::int8[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
                                       logger: logger).collect()
                held = try await heldChanges(db, device: device, logger: logger)
            }
        }

        var positions: [ChangeID: (device: DeviceID, seq: UInt64, refusal: CoreError?)?] = [:]
        for id in changeIDs { positions[id] = .some(nil) }
        let idBuffers = changeIDs.map { ByteBuffer(bytes: $0.bytes) }
        for try await (id, dev, seq, code, reason) in try await db.query("""
            SELECT id, device, seq, refusal_code, refusal FROM changes WHERE id = ANY(\(idBuffers)::bytea[])
            """, logger: logger).decode((ByteBuffer, String, Int64, String?, String?).self) {
            guard let cid = ChangeID(bytes: Array(buffer: id)), let d = DeviceID(dev) else { continue }
            positions[cid] = (d, UInt64(clamping: seq), code.map { CoreError(CoreError.Code(stored: $0), reason ?? "") })
        }

        let records = try await recordOps(db, sortedRecords, schema: schema, logger: logger)
        return PostgresStage(schema: schema, wallMillis: now, roster: roster.entries, device: device, head: head, positions: positions,
                             held: held, records: records)
    }

    /// Every applied op of each of `ids`, as the merge reads a record (an id nothing wrote to
    /// comes back empty).
    static func recordOps(_ db: PostgresConnection, _ ids: [RecordID], schema: RecordSchema, logger: Logger) async throws -> [RecordID: RecordOps] {
        var records: [RecordID: RecordOps] = [:]
        for id in ids { records[id] = RecordOps(id: id) }
        guard !ids.isEmpty else { return records }
        let recordKeys = ids.map(\.description)
        var personal: [RecordType: Set<String>] = [:]
        var decoded: [Int64: SignedChange] = [:]
        for try await (record, n, envelope) in try await db.query("""
            SELECT rc.record::text, c.n, c.envelope FROM record_changes rc JOIN changes c ON c.n = rc.change
            WHERE rc.record = ANY(\(recordKeys)::uuid[]) AND rc.applied
            """, logger: logger).decode((String, Int64, ByteBuffer).self) {
            guard let rid = RecordID(record), records[rid] != nil else { continue }
            let change: SignedChange
            if let known = decoded[n] { change = known } else {
                change = try SignedChange(envelope: Array(buffer: envelope))
                decoded[n] = change
            }
            let c = change.change
            for (i, op) in c.ops.enumerated() where op.record == rid {
                let fields = personal[op.recordType] ?? schema.personalFields(of: op.recordType)
                personal[op.recordType] = fields
                records[rid]!.insert(AppliedOp(ref: OpRef(change: change.id, index: UInt16(i)), op: op, hlc: c.hlc, author: c.device,
                                               wallMillis: c.wallMillis, value: change.values[UInt16(i)]?.value), personalFields: fields)
            }
        }
        return records
    }

    /// A device's held changes, by seq.
    static func heldChanges(_ db: PostgresConnection, device: DeviceID, logger: Logger) async throws -> [UInt64: SignedChange] {
        var held: [UInt64: SignedChange] = [:]
        for try await (seq, envelope) in try await db.query("SELECT seq, envelope FROM pending WHERE device = \(device.description)",
                                                             logger: logger).decode((Int64, ByteBuffer).self) {
            held[UInt64(clamping: seq)] = try SignedChange(envelope: Array(buffer: envelope))
        }
        return held
    }

    /// Record lock buckets, as advisory-lock keys above `lockSpace` (clear of the migration's).
    static let lockBuckets: UInt64 = 256
    static let lockSpace: Int64 = 7_046_120_000

    // MARK: ReplicaStorage

    func rosterEntry(_ device: DeviceID) -> RosterEntry? { roster[device] }

    func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)? {
        guard device == self.device else { throw StageMiss(what: "the head of \(device)") }
        return head
    }

    func position(of id: ChangeID) throws -> (device: DeviceID, seq: UInt64)? {
        guard let known = positions[id] else { throw StageMiss(what: "change \(id.hex.prefix(12))") }
        return known.map { ($0.device, $0.seq) }
    }

    func pending(device: DeviceID, seq: UInt64) throws -> SignedChange? {
        guard device == self.device else { throw StageMiss(what: "the held changes of \(device)") }
        return held[seq]
    }

    mutating func addPending(_ change: SignedChange) throws {
        guard change.change.device == device else { throw StageMiss(what: "the held changes of \(change.change.device)") }
        held[change.change.seq] = change
        heldChanged.insert(change.change.seq)
    }

    mutating func removePending(device: DeviceID, seq: UInt64) throws {
        guard device == self.device else { throw StageMiss(what: "the held changes of \(device)") }
        held[seq] = nil
        heldChanged.insert(seq)
    }

    mutating func appendToChain(_ change: SignedChange, refusal: CoreError?, clockSkewed: Bool) throws {
        let c = change.change
        positions[change.id] = (c.device, c.seq, refusal)
        if c.device == device { head = (c.seq, change.id) }
        // A refused change is listed under its records (not applied), so an erasure reaches it.
        appended.append((change, refusal, clockSkewed, [], refusal == nil ? [] : c.opsByRecord.map(\.record)))
    }

    mutating func recordOps(_ id: RecordID) throws -> RecordOps {
        guard let ops = records[id] else { throw StageMiss(what: "record \(id)") }
        return ops
    }

    mutating func saveRecord(_ ops: RecordOps, added: [AppliedOp]) throws {
        guard var last = appended.last, added.allSatisfy({ $0.ref.change == last.change.id }) else {
            throw StageMiss(what: "the change that wrote to record \(ops.id)")
        }
        // A value the merge dropped (a personal field of an erased record) is never written.
        let dropped = added.filter { $0.value == nil && last.change.values[$0.ref.index] != nil }.map(\.ref.index)
        if !dropped.isEmpty { last.change.dropValues(dropped) }
        last.applied.append(ops.id)
        appended[appended.count - 1] = last
        records[ops.id] = ops
        saved.insert(ops.id)
    }

    mutating func eraseValues(record: RecordID, fields: Set<String>) throws {
        erasures[record, default: []].formUnion(fields)
        // In what this stage holds in memory now; the stored changes and every device's held
        // changes at `flush`.
        for i in appended.indices {
            let drop = appended[i].change.change.ops.indices.filter { j in
                let op = appended[i].change.change.ops[j]
                return op.record == record && fields.contains(op.field)
            }.map { UInt16($0) }
            if !drop.isEmpty { appended[i].change.dropValues(drop) }
        }
        for (seq, var c) in held {
            let drop = c.change.ops.indices.filter { c.change.ops[$0].record == record && fields.contains(c.change.ops[$0].field) }.map { UInt16($0) }
            guard drop.contains(where: { c.values[$0] != nil }) else { continue }
            c.dropValues(drop)
            held[seq] = c
            heldChanged.insert(seq)
        }
    }

    func isErased(_ id: RecordID) throws -> Bool {
        guard let ops = records[id] else { throw StageMiss(what: "record \(id)") }
        return ops.isErased
    }

    // MARK: ExchangeTransaction

    mutating func receive(_ change: SignedChange, verified: Bool) throws -> ReceiveOutcome {
        try Replicator.receive(change, into: &self, wallMillis: wallMillis, verified: verified)
    }

    func storedRefusal(of id: ChangeID) throws -> CoreError? {
        guard let known = positions[id] else { throw StageMiss(what: "change \(id.hex.prefix(12))") }
        return known?.refusal
    }

    // MARK: Flushing

    /// Writes what the merge did, in the caller's transaction: the appended changes (the chain's
    /// foreign key and `UNIQUE (device, seq)` check them again), the records they wrote to, the
    /// held changes, the head, and the erasures.
    func flush(_ db: PostgresConnection, logger: Logger) async throws {
        if !appended.isEmpty {
            let ids = appended.map { ByteBuffer(bytes: $0.change.id.bytes) }
            let devices = appended.map { $0.change.change.device.description }
            let seqs = appended.map { Int64(clamping: $0.change.change.seq) }
            // No NULL elements in a bound array: an empty prev stands for none.
            let prevs = appended.map { ByteBuffer(bytes: $0.change.change.prev.isZero ? [] : $0.change.change.prev.bytes) }
            let hlcs = appended.map { Int64(bitPattern: $0.change.change.hlc.raw) }
            let walls = appended.map { Int64(bitPattern: $0.change.change.wallMillis) }
            let envelopes = appended.map { ByteBuffer(bytes: $0.change.envelope) }
            let codes = appended.map { $0.refusal?.code.description ?? "" }
            let reasons = appended.map { $0.refusal?.message ?? "" }
            let skews = appended.map(\.skewed)
            let received = Int64(clamping: wallMillis)
            var numbers: [ChangeID: Int64] = [:]
            for try await (n, id) in try await db.query("""
                INSERT INTO changes (id, device, seq, prev, hlc, wall, received_at, envelope, refusal_code, refusal, clock_skew)
                SELECT id, device, seq, NULLIF(prev, ''::bytea), hlc, wall, \(received), envelope, NULLIF(code, ''), NULLIF(reason, ''), skew
                FROM unnest(\(ids)::bytea[], \(devices)::text[], \(seqs)::int8[], \(prevs)::bytea[], \(hlcs)::int8[], \(walls)::int8[],
                            \(envelopes)::bytea[], \(codes)::text[], \(reasons)::text[], \(skews)::bool[])
                     AS t(id, device, seq, prev, hlc, wall, envelope, code, reason, skew)
                ORDER BY seq
                RETURNING n, id
                """, logger: logger).decode((Int64, ByteBuffer).self) {
                if let cid = ChangeID(bytes: Array(buffer: id)) { numbers[cid] = n }
            }
            var rcRecords: [String] = [], rcChanges: [Int64] = [], rcApplied: [Bool] = []
            for a in appended {
                guard let n = numbers[a.change.id] else { throw StageMiss(what: "the number of change \(a.change.id.hex.prefix(12))") }
                for r in a.applied { rcRecords.append(r.description); rcChanges.append(n); rcApplied.append(true) }
                for r in a.listed { rcRecords.append(r.description); rcChanges.append(n); rcApplied.append(false) }
            }
            if !rcRecords.isEmpty {
                _ = try await db.query("""
                    INSERT INTO record_changes (record, change, applied)
                    SELECT record::uuid, change, applied FROM unnest(\(rcRecords)::text[], \(rcChanges)::int8[], \(rcApplied)::bool[])
                        AS t(record, change, applied)
                    ON CONFLICT DO NOTHING
                    """, logger: logger).collect()
            }
        }
        if let head {
            _ = try await db.query("UPDATE heads SET seq = \(Int64(clamping: head.seq)), id = \(ByteBuffer(bytes: head.id.bytes)) WHERE device = \(device.description)",
                               logger: logger).collect()
        }
        if !heldChanged.isEmpty {
            let seqs = heldChanged.sorted().map { Int64(clamping: $0) }
            _ = try await db.query("DELETE FROM pending WHERE device = \(device.description) AND seq = ANY(\(seqs)::int8[])", logger: logger).collect()
            let kept = heldChanged.sorted().compactMap { held[$0] }
            if !kept.isEmpty {
                let keptSeqs = kept.map { Int64(clamping: $0.change.seq) }
                let keptIDs = kept.map { ByteBuffer(bytes: $0.id.bytes) }
                let keptEnvelopes = kept.map { ByteBuffer(bytes: $0.envelope) }
                _ = try await db.query("""
                    INSERT INTO pending (device, seq, id, envelope)
                    SELECT \(device.description), seq, id, envelope FROM unnest(\(keptSeqs)::int8[], \(keptIDs)::bytea[], \(keptEnvelopes)::bytea[])
                        AS t(seq, id, envelope)
                    """, logger: logger).collect()
            }
        }
        try await saveRecords(db, logger: logger)
        for (record, fields) in erasures.sorted(by: { $0.key < $1.key }) {
            try await Self.erase(db, record: record, fields: fields, logger: logger)
        }
    }

    func saveRecords(_ db: PostgresConnection, logger: Logger) async throws {
        var ids: [String] = [], types: [String] = [], kinds: [String] = [], deleted: [Bool] = [], conflicted: [Bool] = [],
            erased: [Bool] = [], changed: [Int64] = [], refs: [String] = [], statuses: [String] = [], teams: [String] = [],
            reviews: [String] = [], jsons: [String] = []
        for id in saved.sorted() {
            guard let view = records[id]?.materialize(schema: schema) else { continue }  // its create has not arrived yet
            func text(_ field: String) -> String { view.fields[field]?.value?.stringValue ?? "" }
            ids.append(id.description); types.append(view.type.description); kinds.append(view.kind ?? "")
            deleted.append(view.deleted); conflicted.append(view.hasConflict); erased.append(view.erasedBy != nil)
            changed.append(Int64(bitPattern: view.lastChanged.raw)); refs.append(text("ref")); statuses.append(text("status"))
            teams.append(text("team")); reviews.append(view.fields["review"]?.value?["state"]?.stringValue ?? "")
            jsons.append(String(decoding: view.listingBytes, as: UTF8.self))
        }
        guard !ids.isEmpty else { return }
        _ = try await db.query("""
            INSERT INTO records (id, type, kind, deleted, conflicted, erased, last_changed, ref, status, team, review, json)
            SELECT id::uuid, type, NULLIF(kind, ''), deleted, conflicted, erased, changed, NULLIF(ref, ''), NULLIF(status, ''),
                   NULLIF(team, ''), NULLIF(review, ''), json::jsonb
            FROM unnest(\(ids)::text[], \(types)::text[], \(kinds)::text[], \(deleted)::bool[], \(conflicted)::bool[], \(erased)::bool[],
                        \(changed)::int8[], \(refs)::text[], \(statuses)::text[], \(teams)::text[], \(reviews)::text[], \(jsons)::text[])
                 AS t(id, type, kind, deleted, conflicted, erased, changed, ref, status, team, review, json)
            ON CONFLICT (id) DO UPDATE SET type = excluded.type, kind = excluded.kind, deleted = excluded.deleted,
              conflicted = excluded.conflicted, erased = excluded.erased, last_changed = excluded.last_changed, ref = excluded.ref,
              status = excluded.status, team = excluded.team, review = excluded.review, json = excluded.json
            """, logger: logger).collect()
    }

    /// Drops the values of a record's ops on these fields from every stored change that wrote to
    /// it (refused ones too) and from every device's held changes: the envelope is the only copy
    /// of a value in this store. The rows are locked as they are read, in one order: a change
    /// can touch several records, and two processes erasing two of them must not each write back
    /// a copy that still holds the other's value.
    static func erase(_ db: PostgresConnection, record: RecordID, fields: Set<String>, logger: Logger) async throws {
        var rewritten: [(n: Int64, envelope: [UInt8])] = []
        for try await (n, envelope) in try await db.query("""
            SELECT c.n, c.envelope FROM record_changes rc JOIN changes c ON c.n = rc.change WHERE rc.record = \(record.description)::uuid
            ORDER BY c.n FOR UPDATE OF c
            """, logger: logger).decode((Int64, ByteBuffer).self) {
            var c = try SignedChange(envelope: Array(buffer: envelope))
            let drop = c.change.ops.indices.filter { c.change.ops[$0].record == record && fields.contains(c.change.ops[$0].field) }.map { UInt16($0) }
            guard drop.contains(where: { c.values[$0] != nil }) else { continue }
            c.dropValues(drop)
            rewritten.append((n, c.envelope))
        }
        if !rewritten.isEmpty {
            let ns = rewritten.map(\.n), envelopes = rewritten.map { ByteBuffer(bytes: $0.envelope) }
            _ = try await db.query("""
                UPDATE changes SET envelope = t.envelope FROM unnest(\(ns)::int8[], \(envelopes)::bytea[]) AS t(n, envelope) WHERE changes.n = t.n
                """, logger: logger).collect()
        }
        var heldRewritten: [(device: String, seq: Int64, envelope: [UInt8])] = []
        for try await (device, seq, envelope) in try await db.query("SELECT device, seq, envelope FROM pending ORDER BY device, seq FOR UPDATE", logger: logger)
            .decode((String, Int64, ByteBuffer).self) {
            var c = try SignedChange(envelope: Array(buffer: envelope))
            let drop = c.change.ops.indices.filter { c.change.ops[$0].record == record && fields.contains(c.change.ops[$0].field) }.map { UInt16($0) }
            guard drop.contains(where: { c.values[$0] != nil }) else { continue }
            c.dropValues(drop)
            heldRewritten.append((device, seq, c.envelope))
        }
        for h in heldRewritten {
            _ = try await db.query("UPDATE pending SET envelope = \(ByteBuffer(bytes: h.envelope)) WHERE device = \(h.device) AND seq = \(h.seq)",
                               logger: logger).collect()
        }
    }
}

extension RecordID {
    /// Only `device` may create this record: its mark is `device`'s (an id named by an outside
    /// identifier, which any press device may create, is not).
    func onlyCreatable(by device: DeviceID) -> Bool {
        mayBeCreated(by: device) && !mayBeCreated(by: Self.nobody)
    }

    /// A device no record is marked by (all zero): an id it "may create" is creatable by anyone.
    static let nobody = DeviceID(bytes: [UInt8](repeating: 0, count: 16))!

    /// The record's advisory-lock key: its last eight bytes (random, or the maker's mark), so
    /// records made in the same millisecond seldom share a lock. Two that do only wait longer.
    var lockKey: UInt64 { bytes.suffix(8).reduce(0) { $0 << 8 | UInt64($1) } }
}
