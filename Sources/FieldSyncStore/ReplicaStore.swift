import FieldSyncCore
import Foundation
import GRDB
import Synchronization

/// The laptop's replica: local changes, what a sync answer changes, and the questions the CLI
/// asks (listings, status, the log, the outbox). The database itself is `SQLiteDatabase.swift`;
/// the server's half is `ServerReplica.swift`.
extension ReplicaStore {
    // MARK: Meta and roster

    public func meta(_ key: String) throws -> String? { try read { try Meta.get(key, $0) } }
    public func setMeta(_ key: String, _ value: String) throws { try write { try Meta.set(key, value, $0) } }

    /// What ties this replica to its server (`fieldsync unenroll`): its address, keys and clock
    /// offset. The changes and the roster stay; acknowledgements too, and a server enrolled
    /// with later that holds less asks for the rest (`ExchangeOutcome.resendAfter`).
    public func forgetServer() throws {
        try write { db in
            try db.execute(sql: "DELETE FROM meta WHERE key IN ('server_url', 'server_key', 'ca_pem', 'roster_digest', 'roster_signed', 'clock_offset', 'last_sync', 'upload_bytes', 'bundle_mark')")
        }
    }

    public func roster() throws -> Roster { try read { try rosters.roster($0) } }

    /// `ReplicaStorage` inside one of this store's transactions.
    func storage(_ db: Database, wallMillis: UInt64) throws -> SQLiteStorage {
        try SQLiteStorage(db: db, schema: schema, wallMillis: wallMillis, keepsEnvelopes: keepsEnvelopes, roster: rosters.roster(db))
    }

    public func upsertRoster(_ entries: [RosterEntry]) throws {
        try write { db in for e in entries { try RosterRow.upsert(e, db) } }
    }

    // MARK: Changes in

    /// Makes one local change from what `build` drafts against the current records, signs it and
    /// applies it, all in one transaction. Returns nil when the draft is empty.
    @discardableResult
    public func commitLocal(key: DeviceKey, wallMillis: UInt64 = Timestamps.nowMillis,
                            _ build: (RecordReader) throws -> ChangeDraft) throws -> [SignedChange] {
        try write { db in
            var s = try storage(db, wallMillis: wallMillis)
            // A command that opened the replica before a rekey committed must not sign with the
            // old key after it.
            guard s.localDevice == nil || s.localDevice == key.deviceID else {
                throw StoreError(.ambiguous, "this replica moved to a new device key (fieldsync rekey) while this command ran: run it again")
            }
            let draft = try build(RecordReader(storage: s))
            guard !draft.isEmpty else { return [] }
            var out: [SignedChange] = []
            // More ops than one change holds (a large import) become several changes, one transaction.
            for part in draft.chunks() {
                let device = key.deviceID
                let head = try s.head(of: device)
                let change = Change(device: device, seq: (head?.seq ?? 0) + 1, prev: head?.id ?? .zero,
                                    hlc: s.clock.tick(wallMillis: wallMillis), wallMillis: wallMillis, ops: part.ops)
                let signed = SignedChange.author(change, values: part.values, key: key)
                // Refused by policy: say so and write nothing, rather than keep a change that applies nowhere.
                if case .applied(let taken) = try Replicator.receive(signed, into: &s, wallMillis: wallMillis, verified: true),
                   let refusal = taken.first?.refusal {
                    throw CoreError(.forbidden, refusal.message)
                }
                out.append(signed)
            }
            return out
        }
    }

    /// Applies received changes in one transaction. Each is verified against the roster; a change
    /// that is refused is reported, the others are kept.
    public func receive(_ changes: [SignedChange], wallMillis: UInt64 = Timestamps.nowMillis) throws -> [ChangeID: Result<ReceiveOutcome, CoreError>] {
        try absorb(ExchangeOutcome(incoming: changes), wallMillis: wallMillis)
    }

    /// What one sync answer changes on a laptop.
    public struct ExchangeOutcome: Sendable {
        public var roster: [RosterEntry] = []
        public var acknowledged: [ChangeID] = []
        public var refusals: [(id: ChangeID, code: String, reason: String)] = []
        public var incoming: [SignedChange] = []
        /// Beside `incoming`, one flag each: the caller has checked that change's signature
        /// against the roster's keys. Per position, not per id: an id covers the signed bytes but
        /// not the signature, and an answer may repeat a change.
        public var verified: [Bool] = []
        public var meta: [String: String] = [:]
        /// The server holds only up to `seq` of `device`'s changes, though it acknowledged more
        /// (it was restored from a backup): those after `seq` are unacknowledged again, so they
        /// go out again.
        public var resendAfter: (device: DeviceID, seq: UInt64)?
        public init(roster: [RosterEntry] = [], acknowledged: [ChangeID] = [], refusals: [(id: ChangeID, code: String, reason: String)] = [],
                    incoming: [SignedChange] = [], meta: [String: String] = [:]) {
            self.roster = roster; self.acknowledged = acknowledged; self.refusals = refusals; self.incoming = incoming; self.meta = meta
        }
    }

    /// Stores one sync answer in one transaction, so one fsync: the roster first (it says whose
    /// changes to trust), the acknowledgements and refusals of our changes, then the changes
    /// pulled, each through `Replicator`. Returns each pulled change's outcome.
    public func absorb(_ o: ExchangeOutcome, wallMillis: UInt64 = Timestamps.nowMillis) throws -> [ChangeID: Result<ReceiveOutcome, CoreError>] {
        // An answer with no change and no roster leaves only what the next sync would repeat.
        let results = try write(durable: !o.incoming.isEmpty || !o.roster.isEmpty) { db in
            for (k, v) in o.meta { try Meta.set(k, v, db) }
            for e in o.roster { try RosterRow.upsert(e, db) }
            let ack = try db.cachedStatement(sql: "UPDATE changes SET acked = 1 WHERE id = ?")
            for id in o.acknowledged { try ack.execute(arguments: [Data(id.bytes)]) }
            try Outbox.advance(after: o.acknowledged, db)
            if !o.acknowledged.isEmpty { try Self.raiseAcknowledgedMark(db) }
            if let (device, seq) = o.resendAfter {
                try db.execute(sql: "UPDATE changes SET acked = 0 WHERE device = ? AND seq > ? AND acked = 1",
                               arguments: [device.description, Int64(clamping: seq)])
                if try Outbox.mark(device, db) > Int64(clamping: seq) + 1 { try Meta.set(Outbox.key(device.description), String(seq + 1), db) }
            }
            // A change taken after all (a refusal the server no longer makes) is refused no more;
            // one kept but refused by policy is listed in both, and stays refused.
            let refusedNow = Set(o.refusals.map(\.id))
            let unrefuse = try db.cachedStatement(sql: "DELETE FROM refusals WHERE change_id = ?")
            for id in o.acknowledged where !refusedNow.contains(id) { try unrefuse.execute(arguments: [Data(id.bytes)]) }
            for r in o.refusals {
                try db.execute(sql: """
                    INSERT INTO refusals (change_id, code, reason, at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (change_id) DO UPDATE SET code = excluded.code, reason = excluded.reason, at = excluded.at
                    """, arguments: [Data(r.id.bytes), r.code, r.reason, Int64(wallMillis)])
            }
            guard !o.incoming.isEmpty else { return [ChangeID: Result<ReceiveOutcome, CoreError>]() }
            var s = try storage(db, wallMillis: wallMillis)
            try s.expect(o.incoming)
            var out: [ChangeID: Result<ReceiveOutcome, CoreError>] = [:]
            for (i, c) in o.incoming.enumerated() {
                do {
                    let verified = o.verified.indices.contains(i) && o.verified[i]
                    out[c.id] = .success(try Replicator.receive(c, into: &s, wallMillis: wallMillis, verified: verified))
                } catch let e as CoreError {
                    out[c.id] = .failure(e)
                }
            }
            return out
        }
        if o.incoming.contains(where: \.erases) { try checkpoint() } else { checkpointIfDue() }
        return results
    }

    /// Open conflicts as `fieldsync conflicts` lists them: each field in conflict and each
    /// delete/edit conflict (a record's listing names them under `conflicts`).
    public func conflictCount() throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(json_array_length(json, '$.conflicts')), 0) FROM records WHERE conflicted = 1") ?? 0
        }
    }

    // MARK: Questions

    public func vector() throws -> VersionVector { try read { db in try Self.vector(db) } }

    /// Each device's highest stored seq: other devices' from `heads` (kept by a trigger,
    /// migration 0008: a GROUP BY over `changes` read the whole index on every exchange and was
    /// 40 % of the server's time under load, and one index probe per roster device still a
    /// tenth), and this replica's own device's from `changes` (0013: one probe, and one page
    /// less in each of its own commits).
    static func vector(_ db: Database) throws -> VersionVector {
        var v = VersionVector()
        let rows = try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT device, seq FROM heads
            UNION ALL
            SELECT * FROM (SELECT device, seq FROM changes WHERE device = (SELECT value FROM meta WHERE key = 'device') ORDER BY seq DESC LIMIT 1)
            """))
        // (Not `MAX(seq) … GROUP BY device`: that reads every index entry of the device.)
        while let row = try rows.next() {
            guard let device = DeviceID(row[0] as String) else { throw StoreError(.notAReplica, "a stored change names a malformed device") }
            // Both, if `heads` still has a row of the own device: the higher is right.
            v.seqs[device] = max(v.seqs[device] ?? 0, UInt64(row[1] as Int64))
        }
        return v
    }

    /// Changes a peer with `vector` lacks, oldest first per device, at most `limit`.
    public func missing(for peer: VersionVector, limit: Int = .max) throws -> [SignedChange] {
        try read { db in try Self.lacking(db, known: peer, limit: limit, load: Self.loadChange).changes }
    }

    /// `device`'s changes after its seq `after`, in seq order, as they go on the wire: for a
    /// server that lacks them (`Relay`). At most `limit`, and no more than `bytes` (but always one).
    public func relayable(of device: DeviceID, after: UInt64, limit: Int, bytes: Int) throws -> [OutgoingChange] {
        try read { db in
            var known = try Self.vector(db)
            known.seqs[device] = after
            var seq = after
            return try Self.lacking(db, known: known, limit: limit, maxBytes: bytes, size: { (c: OutgoingChange) in c.envelope.count }) { row, db in
                guard let id = ChangeID(bytes: row.bytes("id")) else { throw StoreError(.notAReplica, "a stored change has a malformed id") }
                seq += 1
                return OutgoingChange(id: id, seq: seq, envelope: try Self.loadEnvelope(row, db))
            }.changes
        }
    }

    /// What a peer holding `known` lacks (each device's changes in seq order, at most `limit`,
    /// and no more than `maxBytes` as `size` counts them, but always one), whether more remain,
    /// and this replica's vector: one pass for `missing` and the server's exchange, each change
    /// read by `load` (a `SignedChange`, or an envelope to send as is).
    static func lacking<T>(_ db: Database, known: VersionVector, limit: Int, maxBytes: Int = .max, size: (T) -> Int = { _ in 0 },
                           load: (Row, Database) throws -> T) throws -> (changes: [T], more: Bool, vector: VersionVector) {
        var out: [T] = []
        var budget = ByteBudget(limit: maxBytes)
        var more = false
        let vector = try vector(db)
        for (d, top) in vector.seqs.sorted(by: { $0.key < $1.key }) {
            guard top > known[d] else { continue }
            if out.count >= limit || budget.isSpent { more = true; continue }
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT n, id, signed, signature, seed, envelope FROM changes WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?"),
                                           arguments: [d.description, Int64(known[d]), limit - out.count])
            var n = 0
            while let r = try rows.next() {
                let change = try load(r, db)
                guard budget.take(size(change)) else { break }  // left for the next exchange
                out.append(change)
                n += 1
            }
            if UInt64(n) < top - known[d] { more = true }
        }
        return (out, more, vector)
    }

    /// A stored change as its envelope: the server's kept copy, or else built from the stored
    /// bytes (the server sends what it checked on receipt without parsing the values again).
    static func loadEnvelope(_ row: Row, _ db: Database) throws -> [UInt8] {
        if let kept = row.optionalBytes("envelope") { return kept }
        return SignedChange.envelope(change: try ChangeCodec.decode(row.bytes("signed")), signature: row.bytes("signature"),
                                     seed: row.optionalBytes("seed"), values: try SQLiteStorage.values(ofChange: row["n"], db))
    }

    static func loadChange(_ row: Row, _ db: Database) throws -> SignedChange {
        var values: [UInt16: OpValue] = [:]
        for (i, v) in try SQLiteStorage.values(ofChange: row["n"], db) {
            values[i] = OpValue(salt: v.salt, value: try JSONValue.parseCanonical(v.canonical), canonical: v.canonical)
        }
        return try SignedChange(bytes: row.bytes("signed"), signature: row.bytes("signature"), values: values, seed: row.optionalBytes("seed"))
    }

    /// A change of the outbox as it goes on the wire.
    public struct OutgoingChange: Sendable {
        public let id: ChangeID
        public let seq: UInt64
        public let envelope: [UInt8]
    }

    /// This device's changes the server has not acknowledged yet, in seq order, each as its
    /// envelope built from the stored bytes. Their values are neither parsed nor checked against
    /// their commitments again: the server checks every one on receipt.
    /// The first `limit` changes waiting to be sent, in seq order, stopping at the first whose
    /// envelope takes the total past `bytes`. That one is included, and never as the only one:
    /// one change always goes, so the caller needs a second to see that more wait.
    /// Building an envelope decodes and re-encodes its change: an upload of large imported
    /// changes built four times what one request could carry, every round, before this bound.
    /// - Parameter after: only changes after this seq: those of a request still at the server
    ///   are not acknowledged yet, and the next request's changes are read while it is there.
    public func outbox(device: DeviceID, after: UInt64? = nil, limit: Int = .max, bytes budget: Int = .max) throws -> [OutgoingChange] {
        try read { db in
            let from = max(try Outbox.mark(device, db), after.map { Int64(clamping: $0 < UInt64.max ? $0 + 1 : $0) } ?? 0)
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT n, id, seq, signed, signature, seed FROM changes WHERE device = ? AND seq >= ? AND acked = 0 ORDER BY seq LIMIT ?"),
                                           arguments: [device.description, from, limit])
            var out: [OutgoingChange] = []
            var total = 0
            while let row = try rows.next() {
                guard let id = ChangeID(bytes: row.bytes("id")) else { throw StoreError(.notAReplica, "a stored change has a malformed id") }
                let change = OutgoingChange(id: id, seq: UInt64(row["seq"] as Int64), envelope: try Self.loadEnvelope(row, db))
                out.append(change)
                total += change.envelope.count
                if total > budget && out.count >= 2 { break }
            }
            return out
        }
    }


    public func view(_ id: RecordID) throws -> RecordView? {
        try read { db in try storage(db, wallMillis: 0).load(id).ops.materialize(schema: schema) }
    }

    /// Finds a record by a unique prefix of its id.
    public func resolveID(_ text: String, type: RecordType? = nil) throws -> RecordID {
        let p = text.lowercased()
        let what = type?.description ?? "record"
        guard !p.isEmpty, !p.contains(where: \.isNewline) else { throw StoreError(.notFound, "give a record id, the start or end of one, or a note's ref") }
        let rows = try read { db -> [Row] in
            var rows: [Row] = []
            if p.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
                // The start of an id, or (four digits or more) its end: ids made the same day share
                // their first twelve digits, never their last ones.
                rows = try Row.fetchAll(db, sql: """
                    SELECT id, ref, kind FROM records
                    WHERE ((id >= ?1 AND id < ?1 || '~') OR (length(?1) >= 4 AND id LIKE '%' || ?1)) AND (?2 IS NULL OR type = ?2)
                    ORDER BY id LIMIT 6
                    """, arguments: [p, type?.description])
            }
            if rows.isEmpty {
                rows = try Row.fetchAll(db, sql: "SELECT id, ref, kind FROM records WHERE ref = ?1 COLLATE NOCASE AND (?2 IS NULL OR type = ?2) ORDER BY id LIMIT 6",
                                        arguments: [text, type?.description])
            }
            return rows
        }
        guard let first = rows.first else { throw StoreError(.notFound, "no \(what) with id or ref \(text)") }
        guard rows.count == 1 else {
            let listed = rows.prefix(5).map { r -> String in
                let about = [r["ref"] as String?, r["kind"] as String?].compactMap { $0 }.joined(separator: ", ")
                return (r["id"] as String) + (about.isEmpty ? "" : " (\(about))")
            }
            throw StoreError(.ambiguous, "\(text) matches \(rows.count > 5 ? "more than 5" : String(rows.count)) \(what)s: \(listed.joined(separator: "; ")); give more of the id")
        }
        return RecordID(first["id"] as String)!
    }

    /// Listing JSON of live records, in id (creation) order.
    public func listing(type: RecordType, kind: String? = nil, status: String? = nil, team: String? = nil,
                        review: String? = nil, conflictedOnly: Bool = false, includeDeleted: Bool = false) throws -> [String] {
        try read { db in
            try String.fetchAll(db, sql: """
                SELECT json FROM records WHERE type = ? AND (? OR deleted = 0) AND (? IS NULL OR kind = ?)
                  AND (? IS NULL OR status = ?) AND (? IS NULL OR team = ?) AND (? IS NULL OR COALESCE(review, 'draft') = ?) AND (NOT ? OR conflicted = 1)
                ORDER BY id
                """, arguments: [type.description, includeDeleted, kind, kind, status, status, team, team, review, review, conflictedOnly])
        }
    }

    /// Every record with an open conflict, fully materialised.
    public func conflicts() throws -> [RecordView] {
        let ids = try read { db in try String.fetchAll(db, sql: "SELECT id FROM records WHERE conflicted = 1 ORDER BY id") }
        return try ids.compactMap { try view(RecordID($0)!) }
    }

    public func status(device: DeviceID) throws -> ReplicaStatus {
        try read { db in
            ReplicaStatus(
                notes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM records WHERE type = 'note' AND deleted = 0") ?? 0,
                contacts: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM records WHERE type = 'contact' AND deleted = 0") ?? 0,
                conflicts: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM records WHERE conflicted = 1") ?? 0,
                changes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes") ?? 0,
                waiting: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes WHERE device = ? AND seq >= ? AND acked = 0",
                                          arguments: [device.description, try Outbox.mark(device, db)]) ?? 0,
                pending: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending") ?? 0
            )
        }
    }
}

/// Read access to records inside a local write transaction, for drafting the next change.
public struct RecordReader {
    let storage: SQLiteStorage
    public var schema: RecordSchema { storage.schema }
    public func ops(_ id: RecordID) throws -> RecordOps { try storage.load(id).ops }
    public func view(_ id: RecordID) throws -> RecordView? { try storage.load(id).ops.materialize(schema: storage.schema) }
}

public struct ReplicaStatus: Sendable, Codable {
    public var notes, contacts, conflicts, changes, waiting, pending: Int
}

/// A change as the log shows it.
public struct LoggedChange: Sendable {
    public let change: SignedChange
    public let refusal: String?
    public let clockSkew: Bool
}

extension ReplicaStore {
    /// Stored changes (refused ones too, with their refusal), newest (by HLC) first: the newest
    /// of those in `changes_by_hlc`, and the newest of the own device's `local` ones, which are
    /// in HLC order by seq (0014), merged.
    public func logChanges(since: UInt64?, device: DeviceID?, record: RecordID?, limit: Int) throws -> [LoggedChange] {
        try read { db in
            let filters = """
                (?1 IS NULL OR hlc >= ?1) AND (?2 IS NULL OR device = ?2) AND (?3 IS NULL OR n IN (SELECT id >> 16 FROM edits WHERE record = ?3))
                """
            let columns = "n, id, signed, signature, seed, refusal, clock_skew, hlc, device"
            let sinceHLC = since.map { Int64($0 << 16) }
            var arguments: [(any DatabaseValueConvertible)?] = [sinceHLC, device?.description, record.map { Data($0.bytes) }, limit]
            var ownPart = ""
            // (Asked for another device's changes, the own ones are not read at all.)
            if let own = try Meta.get("device", db), device == nil || device?.description == own {
                ownPart = """
                    UNION ALL
                    SELECT * FROM (SELECT \(columns) FROM changes WHERE device = ?5 AND seq >= ?6 AND local = 1 AND \(filters) ORDER BY seq DESC LIMIT ?4)
                    """
                arguments += [own, try sinceHLC.map { try Self.firstSeq(of: own, atOrAbove: $0, db) } ?? 0]
            }
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM (SELECT \(columns) FROM changes WHERE local = 0 AND \(filters) ORDER BY hlc DESC, device DESC LIMIT ?4)
                \(ownPart)
                ORDER BY hlc DESC, device DESC LIMIT ?4
                """, arguments: StatementArguments(arguments))
            return try rows.map { row in
                LoggedChange(change: try Self.loadChange(row, db), refusal: row["refusal"], clockSkew: row["clock_skew"])
            }
        }
    }

    /// The lowest seq of `device` whose change is stamped `hlc` or later, by bisection: its
    /// changes are in HLC order by seq, as the clock's reading also assumes (0014). Without it,
    /// `log --since` read every own change when fewer than `limit` were that recent.
    static func firstSeq(of device: String, atOrAbove hlc: Int64, _ db: Database) throws -> Int64 {
        guard let top = try Int64.fetchOne(db, sql: "SELECT seq FROM changes WHERE device = ? ORDER BY seq DESC LIMIT 1", arguments: [device]) else { return 0 }
        let stampAtOrAfter = try db.cachedStatement(sql: "SELECT hlc FROM changes WHERE device = ? AND seq >= ? ORDER BY seq LIMIT 1")
        var low: Int64 = 0, high = top + 1  // the answer is in low...high
        while low < high {
            let mid = low + (high - low) / 2
            if let stamp = try Int64.fetchOne(stampAtOrAfter, arguments: [device, mid]), stamp >= hlc { high = mid } else { low = mid + 1 }
        }
        return low
    }
}

extension ReplicaStore {
    /// What the server refused of this replica's changes, and why, oldest first: kept but
    /// applied nowhere (policy), or not taken at all and still waiting in the outbox.
    public func refusals() throws -> [(id: ChangeID, code: String, reason: String)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT change_id, code, reason FROM refusals ORDER BY at").map {
                (ChangeID(bytes: $0.bytes("change_id"))!, $0["code"], $0["reason"])
            }
        }
    }

    /// Whether any change has been made or received yet (enrolment may still change the role).
    public func isEmpty() throws -> Bool { try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes")! == 0 } }
}

extension ReplicaStore {
    /// The value an op wrote, if this replica holds it (nil when erased or unknown).
    public func value(of ref: OpRef) throws -> JSONValue? {
        try read { db in
            guard let n = try Int64.fetchOne(db, sql: "SELECT n FROM changes WHERE id = ?", arguments: [Data(ref.change.bytes)]) else { return nil }
            return try SQLiteStorage.values(ofChange: n, db)[ref.index].flatMap { try? JSONValue.parseCanonical($0.canonical) }
        }
    }
}

extension SignedChange {
    /// Holds an `erase`: after applying it, the store folds and truncates its WAL.
    public var erases: Bool { change.ops.contains { $0.action == .erase } }
}

extension ReplicaStore {
    /// Ids of live records matching the review filters of `fieldsync log`.
    public func recordIDs(kind: String?, team: String?, review: String?, conflictedOnly: Bool) throws -> Set<RecordID> {
        try read { db in
            Set(try String.fetchAll(db, sql: """
                SELECT id FROM records WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR team = ?)
                  AND (? IS NULL OR review = ?) AND (NOT ? OR conflicted = 1)
                """, arguments: [kind, kind, team, team, review, review, conflictedOnly]).compactMap(RecordID.init))
        }
    }
}

/// Where a device's unacknowledged changes start (migration 0012): every change of the device
/// below the mark is acknowledged. Acknowledgements only ever arrive, so a mark that is low is
/// still right, only slower; it moves up after each answer that acknowledges something, past
/// the changes acknowledged in a row. A change refused outright stays unacknowledged and holds
/// it (as it stays in the outbox): the search then reads every change of the device after it.
enum Outbox {
    static func key(_ device: String) -> String { "outbox_from.\(device)" }

    static func mark(_ device: DeviceID, _ db: Database) throws -> Int64 {
        try Meta.get(key(device.description), db).flatMap { Int64($0) } ?? 0
    }

    static func advance(after acknowledged: [ChangeID], _ db: Database) throws {
        guard let first = acknowledged.first,
              let device = try String.fetchOne(db.cachedStatement(sql: "SELECT device FROM changes WHERE id = ?"), arguments: [Data(first.bytes)]),
              let id = DeviceID(device) else { return }
        let from = try mark(id, db)
        let next = try Int64.fetchOne(db.cachedStatement(sql: """
            SELECT COALESCE((SELECT MIN(seq) FROM changes WHERE device = ?1 AND seq >= ?2 AND acked = 0),
                            (SELECT MAX(seq) + 1 FROM changes WHERE device = ?1), ?2)
            """), arguments: [device, from]) ?? from
        if next > from { try Meta.set(key(device), String(next), db) }
    }
}
