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

/// The device's held changes name records the upload's locks do not cover as they must: the
/// transaction is rolled back and tried again with them locked (`PostgresSyncStore.exchange`).
struct LockMore: Error {
    let records: Set<RecordID>
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
    /// The upload's author's head, as locked; other devices' are never asked (an upload holds
    /// one author's changes: `ServerExchange` refuses the rest first).
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

    /// Spends the upload's nonce, locks and loads what receiving `upload` from `device` can ask.
    /// The caller holds the transaction; `device`'s heads row is taken FOR UPDATE here, first,
    /// then the records' advisory locks in sorted order (`recordLocks`), in the same statement:
    /// one order in every process, so no deadlock. Then one read, after every lock. Two round
    /// trips, three when held changes name other records.
    /// `relayed`: another device sent `device`'s changes (`ExchangeRequest.author`).
    /// `alsoLock`: records the device's held changes name, found by an earlier try (`LockMore`).
    static func load(_ db: PostgresConnection, device: DeviceID, relayed: Bool, alsoLock: Set<RecordID> = [], nonce: SignatureNonce?,
                     upload: [SignedChange], schema: RecordSchema, rosters: PostgresRosterCache, now: UInt64,
                     logger: Logger) async throws -> PostgresStage {
        var asked = Asked(upload)
        let locks = recordLocks(asked.records.union(alsoLock), device: device, relayed: relayed)
        var lockRow: ChainLockStatement.Row?
        for try await row in try await db.execute(ChainLockStatement(device: device.description, now: Int64(clamping: now), nonce: nonce,
                                                                     keys: locks.map(\.key), exclusive: locks.map(\.exclusive)),
                                                  logger: logger) { lockRow = row }
        guard let (seq, id, fresh, taken) = lockRow else { throw CoreError(.unknownDevice, "device \(device) is not on the roster") }
        guard fresh else { throw SyncStoreError.replayed }
        guard taken == locks.count else { throw StageMiss(what: "the \(locks.count) record locks (\(taken) taken)") }
        var head: (seq: UInt64, id: ChangeID)?
        if seq > 0, let id, let cid = ChangeID(bytes: Array(buffer: id)) { head = (UInt64(clamping: seq), cid) }

        // Everything else in a statement of its own after the locks: a revocation takes the
        // same row, and only a snapshot taken after the locks sees it and what other uploads
        // committed to these records (the locking statement's snapshot is from before its
        // waits). The roster itself is read again only if its version is not the kept one's.
        // Which seqs are held is fixed while the chain lock is ours.
        var loaded = try await read(db, device: device, asked, schema: schema, logger: logger)
        let roster = try await rosters.roster(version: loaded.version, db, logger: logger)
        // Held changes may name changes and records the upload does not (rare: a gap in a chain).
        // A record of theirs not locked as it must be is not locked now, out of the one order
        // (two uploads could then wait for each other): the transaction is tried again with it
        // in the first statement's locks (`LockMore`). The held changes cannot change meanwhile
        // but by this device's own uploads, which wait for the chain lock.
        let more = Asked(Array(loaded.held.values)).subtracting(asked)
        if !more.isEmpty {
            let held = Dictionary(uniqueKeysWithValues: locks.map { ($0.key, $0.exclusive) })
            let needed = recordLocks(more.records, device: device, relayed: relayed)
            if needed.contains(where: { held[$0.key] == nil || ($0.exclusive && held[$0.key] == false) }) {
                throw LockMore(records: more.records.union(alsoLock))
            }
            loaded.merge(try await read(db, device: device, more, schema: schema, logger: logger))
            asked.formUnion(more)
        }
        return PostgresStage(schema: schema, wallMillis: now, roster: roster.entries, device: device, head: head, positions: loaded.positions,
                             held: loaded.held, records: loaded.records)
    }

    /// The records' advisory locks, by bucket in key order. Two devices' changes to one record
    /// are merged one after the other, so neither saves a `records` row that lacks the other's
    /// op. Records share 256 buckets: an upload of thousands of records takes at most 256 locks
    /// (PostgreSQL's lock table is shared and small). A record only this device may create (its
    /// mark) is locked shared: this device's uploads wait for each other anyway (the chain
    /// lock), and laptops' uploads of their own notes take shared locks that do not conflict,
    /// while any other device's change to one (it had the note by bundle, or edits it now)
    /// locks it exclusive and waits, or is waited for (and while it waits, later shared
    /// requests on that bucket queue behind it). A bucket holding any other record is
    /// exclusive; so is every bucket of a relayed upload (its relay has seen the records, and
    /// may have edited them).
    static func recordLocks(_ records: Set<RecordID>, device: DeviceID, relayed: Bool) -> [(key: Int64, exclusive: Bool)] {
        var buckets: [Int64: Bool] = [:]
        for r in records {
            let key = lockSpace + Int64(r.lockKey % lockBuckets)
            buckets[key] = buckets[key] == true || relayed || !r.onlyCreatable(by: device)
        }
        return buckets.keys.sorted().map { ($0, buckets[$0]!) }
    }

    /// The changes (ids and predecessors) and records some changes can ask about.
    struct Asked {
        var changes: Set<ChangeID> = []
        var records: Set<RecordID> = []

        init(changes: Set<ChangeID>, records: Set<RecordID>) { self.changes = changes; self.records = records }

        init(_ of: [SignedChange]) {
            for c in of {
                changes.insert(c.id)
                if !c.change.prev.isZero { changes.insert(c.change.prev) }
                for op in c.change.ops { records.insert(op.record) }
            }
        }

        var isEmpty: Bool { changes.isEmpty && records.isEmpty }
        func subtracting(_ other: Asked) -> Asked { Asked(changes: changes.subtracting(other.changes), records: records.subtracting(other.records)) }
        mutating func formUnion(_ other: Asked) { changes.formUnion(other.changes); records.formUnion(other.records) }
    }

    /// What `UploadReadStatement` read, decoded.
    struct Loaded {
        var version: Int64?
        var held: [UInt64: SignedChange] = [:]
        var positions: [ChangeID: (device: DeviceID, seq: UInt64, refusal: CoreError?)?] = [:]
        var records: [RecordID: RecordOps] = [:]

        mutating func merge(_ other: Loaded) {
            positions.merge(other.positions) { $1 }
            records.merge(other.records) { $1 }
        }
    }

    /// The roster's version, the device's held changes, the positions of `asked.changes` and the
    /// records of `asked.records`, in one statement (one snapshot, one round trip).
    static func read(_ db: PostgresConnection, device: DeviceID, _ asked: Asked, schema: RecordSchema, logger: Logger) async throws -> Loaded {
        var loaded = Loaded()
        for id in asked.changes { loaded.positions[id] = .some(nil) }
        var ops = RecordOpsReader(asked.records, schema: schema)
        let statement = UploadReadStatement(device: device.description, ids: asked.changes.map { ByteBuffer(bytes: $0.bytes) },
                                            records: asked.records.map(\.description))
        for try await (part, num, bytes, text, code, reason) in try await db.execute(statement, logger: logger) {
            switch part {
            case 0:
                loaded.version = num
            case 1:
                guard let num, let bytes else { continue }
                loaded.held[UInt64(clamping: num)] = try SignedChange(envelope: Array(buffer: bytes))
            case 2:
                guard let num, let bytes, let text, let cid = ChangeID(bytes: Array(buffer: bytes)), let d = DeviceID(text) else { continue }
                loaded.positions[cid] = (d, UInt64(clamping: num), code.map { CoreError(CoreError.Code(stored: $0), reason ?? "") })
            case 4:
                guard let num, let bytes, let text, let rid = RecordID(text) else { continue }
                try ops.add(record: rid, n: num, envelope: bytes)
            default:
                continue
            }
        }
        loaded.records = ops.records
        return loaded
    }

    /// Every applied op of each of `ids`, as the merge reads a record (an id nothing wrote to
    /// comes back empty).
    static func recordOps(_ db: PostgresConnection, _ ids: [RecordID], schema: RecordSchema, logger: Logger) async throws -> [RecordID: RecordOps] {
        guard !ids.isEmpty else { return [:] }
        var ops = RecordOpsReader(ids, schema: schema)
        let recordKeys = ids.map(\.description)
        for try await (record, n, envelope) in try await db.query("""
            SELECT rc.record::text, c.n, c.envelope FROM record_changes rc JOIN changes c ON c.n = rc.change
            WHERE rc.record = ANY(\(recordKeys)::uuid[]) AND rc.applied
            """, logger: logger).decode((String, Int64, ByteBuffer).self) {
            if let rid = RecordID(record) { try ops.add(record: rid, n: n, envelope: envelope) }
        }
        return ops.records
    }

    /// Builds records from their applied changes' rows (a change that wrote to several records
    /// comes once per record, and is decoded once).
    struct RecordOpsReader {
        let schema: RecordSchema
        private(set) var records: [RecordID: RecordOps] = [:]
        private var personal: [RecordType: Set<String>] = [:]
        private var decoded: [Int64: SignedChange] = [:]

        init(_ ids: some Sequence<RecordID>, schema: RecordSchema) {
            self.schema = schema
            for id in ids { records[id] = RecordOps(id: id) }
        }

        mutating func add(record rid: RecordID, n: Int64, envelope: ByteBuffer) throws {
            guard records[rid] != nil else { return }
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

    /// Writes what the merge did, in the caller's transaction, with the activity of the device
    /// that sent it, `requester` (`known`: what it holds after this answer, `sends`: what the
    /// answer may carry): the
    /// appended changes, the records they wrote to and the head in one statement
    /// (`UploadWriteStatement`), then the held changes and the erasures, which are rare.
    func flush(_ db: PostgresConnection, requester: DeviceID, known: VersionVector, sends: Int, logger: Logger) async throws {
        var changes = UploadWriteStatement.Changes(), recordChanges = UploadWriteStatement.RecordChanges()
        for a in appended {
            let c = a.change.change, id = ByteBuffer(bytes: a.change.id.bytes)
            changes.ids.append(id)
            changes.devices.append(c.device.description)
            changes.seqs.append(Int64(clamping: c.seq))
            // No NULL elements in a bound array: an empty prev stands for none.
            changes.prevs.append(ByteBuffer(bytes: c.prev.isZero ? [] : c.prev.bytes))
            changes.hlcs.append(Int64(bitPattern: c.hlc.raw))
            changes.walls.append(Int64(bitPattern: c.wallMillis))
            changes.envelopes.append(ByteBuffer(bytes: a.change.envelope))
            changes.codes.append(a.refusal?.code.description ?? "")
            changes.reasons.append(a.refusal?.message ?? "")
            changes.skews.append(a.skewed)
            for r in a.applied { recordChanges.records.append(r.description); recordChanges.ids.append(id); recordChanges.applied.append(true) }
            for r in a.listed { recordChanges.records.append(r.description); recordChanges.ids.append(id); recordChanges.applied.append(false) }
        }
        let pairs = known.seqs.map { ($0.key.description, Int64(clamping: $0.value)) }
        let statement = UploadWriteStatement(
            changes: changes, receivedAt: Int64(clamping: wallMillis), recordChanges: recordChanges, device: device.description,
            headSeq: head.map { Int64(clamping: $0.seq) } ?? -1, headID: ByteBuffer(bytes: head?.id.bytes ?? []), records: recordRows(),
            now: Int64(clamping: wallMillis), sends: Int64(max(0, sends)), knownDevices: pairs.map(\.0), known: pairs.map(\.1),
            requester: requester.description)
        var inserted: Int64 = -1
        for try await n in try await db.execute(statement, logger: logger) { inserted = n }
        guard inserted == Int64(appended.count) else { throw StageMiss(what: "the numbers of the \(appended.count) appended changes") }
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
        for (record, fields) in erasures.sorted(by: { $0.key < $1.key }) {
            try await Self.erase(db, record: record, fields: fields, logger: logger)
        }
    }

    /// The `records` rows of the records this stage saved, as their listing shows them.
    func recordRows() -> UploadWriteStatement.Records {
        var rows = UploadWriteStatement.Records()
        for id in saved.sorted() {
            guard let view = records[id]?.materialize(schema: schema) else { continue }  // its create has not arrived yet
            func text(_ field: String) -> String { view.fields[field]?.value?.stringValue ?? "" }
            rows.ids.append(id.description); rows.types.append(view.type.description); rows.kinds.append(view.kind ?? "")
            rows.deleted.append(view.deleted); rows.conflicted.append(view.hasConflict); rows.erased.append(view.erasedBy != nil)
            rows.changed.append(Int64(bitPattern: view.lastChanged.raw)); rows.refs.append(text("ref")); rows.statuses.append(text("status"))
            rows.teams.append(text("team")); rows.reviews.append(view.fields["review"]?.value?["state"]?.stringValue ?? "")
            rows.jsons.append(String(decoding: view.listingBytes, as: UTF8.self))
        }
        return rows
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
