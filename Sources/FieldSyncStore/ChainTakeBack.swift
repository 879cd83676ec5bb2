import FieldSyncCore
import Foundation
import GRDB

/// A device's chain as the server holds it is the true one (issue 25, item 2), and every replica
/// ends up holding it:
/// - a restored or cloned laptop takes its own chain back from the server and signs again, on
///   top of it, those of its changes the server lacks (`takeBack`): they never left the laptop,
///   so nothing anywhere refers to them;
/// - when two versions of one seq have both left their laptop (acknowledged, or carried off in a
///   bundle), it is a real fork: a replica holding the version the server refused gives it up
///   for the server's (`adoptChain`), and the laptop that wrote it moves to a new key
///   (`rekey`), signing its changes the server lacks again under that key. Each fork is listed
///   (`forks`).
extension ReplicaStore {
    /// The newest change of `device` held here.
    public func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)? {
        try read { db in
            var s = try storage(db, wallMillis: 0)
            return try s.head(of: device)
        }
    }

    public struct TakeBack: Sendable {
        /// Local changes signed again on top of the true head (under a new key, for `rekey`).
        public var resigned = 0
        /// The true chain's changes this replica lacked.
        public var taken = 0
        /// Changes given up for the true chain's (`adoptChain`, `rekey`).
        public var dropped = 0
        /// A real fork `takeBack` cannot mend: the first seq where a change of this device that
        /// left the laptop differs from the server's. Listed in `forks`; nothing else changed.
        public var forkedAt: UInt64?
        public init() {}
    }

    /// One fork a replica knows of: `device` signed another change at `seq` than the one the
    /// server's chain holds, and `refused` is that other one.
    public struct Fork: Sendable {
        /// A hostile device could sign a new version of every seq it ever wrote: what is kept of
        /// them is bounded.
        public static let maxPerDevice = 64
        public var device: DeviceID
        public var seq: UInt64
        public var refused: ChangeID
        public var seenAt: UInt64
        public init(device: DeviceID, seq: UInt64, refused: ChangeID, seenAt: UInt64) {
            self.device = device; self.seq = seq; self.refused = refused; self.seenAt = seenAt
        }
    }

    /// Which of `ids` are stored here, in one read (a sync answer names every fork the server
    /// knows of).
    public func held(_ ids: [ChangeID]) throws -> Set<ChangeID> {
        guard !ids.isEmpty else { return [] }
        return try read { db in
            let look = try db.cachedStatement(sql: "SELECT 1 FROM changes WHERE id = ?")
            return Set(try ids.filter { try Int.fetchOne(look, arguments: [Data($0.bytes)]) != nil })
        }
    }

    /// Every fork listed here.
    public func forks() throws -> [Fork] { try read { try Self.forks($0, unheld: false) } }

    /// For the server's handlers, without blocking a thread of the cooperative pool
    /// (`currentRoster`): the forks whose refused version is not stored here (a version refused
    /// while a gap was open may be stored since).
    public func unheldForks(inline: Bool) async throws -> [Fork] {
        try await read(Access(alone: inline)) { db in try Self.forks(db, unheld: true) }
    }

    static func forks(_ db: Database, unheld: Bool) throws -> [Fork] {
        try Row.fetchAll(db, sql: "SELECT device, seq, refused, seen_at FROM forks"
                         + (unheld ? " WHERE refused NOT IN (SELECT id FROM changes)" : "") + " ORDER BY device, seq").compactMap { row in
            guard let d = DeviceID(row["device"] as String), let id = ChangeID(bytes: row.bytes("refused")) else { return nil }
            return Fork(device: d, seq: UInt64(clamping: row["seq"] as Int64), refused: id, seenAt: UInt64(clamping: row["seen_at"] as Int64))
        }
    }

    /// Remembers forks (the server's `recordForks`): the first version refused at each device
    /// and seq, at most `maxPerDevice` per device. Never blocks a thread of the cooperative pool.
    public func recordForks(_ forks: [Fork], maxPerDevice: Int = Fork.maxPerDevice, inline: Bool) async throws {
        try await write(Access(alone: inline), durable: true) { db in try Self.recordForks(forks, maxPerDevice: maxPerDevice, db) }
    }

    /// The same, for a laptop: a bundle that brings another version of a change held here is
    /// evidence that its device's key signed two (`Replica.applyBundle`).
    public func recordForks(_ forks: [Fork]) throws {
        try write { db in try Self.recordForks(forks, maxPerDevice: Fork.maxPerDevice, db) }
    }

    static func recordForks(_ forks: [Fork], maxPerDevice: Int, _ db: Database) throws {
        for f in forks {
            let n = try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM forks WHERE device = ?"), arguments: [f.device.description]) ?? 0
            guard n < maxPerDevice else { continue }
            try Self.recordFork(device: f.device, seq: f.seq, refused: f.refused, at: f.seenAt, db)
        }
    }

    /// Replaces this device's chain from `theirs.first` on with `theirs` (its changes as the
    /// server holds them, contiguous, each checked against the roster here), and signs again
    /// every local change of the replaced part that `theirs` lacks. When one of those left the
    /// laptop, nothing is replaced: the fork is recorded and `forkedAt` says where.
    public func takeBack(theirs: [SignedChange], key: DeviceKey, wallMillis: UInt64 = Timestamps.nowMillis) throws -> TakeBack {
        let me = key.deviceID
        guard let first = theirs.first else { return TakeBack() }
        try Self.checkContiguous(theirs, device: me, from: first.change.seq)
        let from = first.change.seq
        return try write { db in
            try Self.checkPredecessor(of: first, db)
            let stored = try Self.storedChanges(db)
            let trueIDs = Set(theirs.map(\.id))
            let replaced = stored.filter { $0.change.change.device == me && $0.change.change.seq >= from && !trueIDs.contains($0.change.id) }
            // Acknowledged once (even if a resend to a restored server unmarked it since), or
            // carried off in a bundle: it left this laptop, so something may refer to it.
            let leftUpTo = try Self.acknowledgedMark(db, device: me)
            if let spread = replaced.filter({ $0.acked || $0.change.change.seq <= leftUpTo }).min(by: { $0.change.change.seq < $1.change.change.seq }) {
                try Self.recordFork(device: me, seq: spread.change.change.seq, refused: spread.change.id, at: wallMillis, db)
                var result = TakeBack()
                result.forkedAt = spread.change.change.seq
                return result
            }
            guard !replaced.isEmpty else { return TakeBack() }
            var result = try rebuild(db, stored: stored, dropping: Set(replaced.map(\.change.id)), theirs: theirs,
                                     resign: replaced.map(\.change), as: key, wallMillis: wallMillis)
            result.dropped = 0
            try Meta.set(Outbox.key(me.description), String(from), db)
            return result
        }
    }

    /// Another device's chain forked, and this replica holds a version the server refused:
    /// `theirs` (that device's changes as the server holds them, contiguous) replaces what is
    /// held here from `theirs.first` on. What is given up is listed in `forks`; its author signs
    /// it again under a new key (`rekey`), so it comes back that way.
    public func adoptChain(theirs: [SignedChange], wallMillis: UInt64 = Timestamps.nowMillis) throws -> TakeBack {
        guard let first = theirs.first else { return TakeBack() }
        let device = first.change.device
        try Self.checkContiguous(theirs, device: device, from: first.change.seq)
        return try write { db in
            guard try Meta.get("device", db) != device.description else {
                throw StoreError(.ambiguous, "this device's own chain is taken back, not adopted")
            }
            try Self.checkPredecessor(of: first, db)
            let stored = try Self.storedChanges(db)
            let trueIDs = Set(theirs.map(\.id))
            let replaced = stored.filter { $0.change.change.device == device && $0.change.change.seq >= first.change.seq && !trueIDs.contains($0.change.id) }
            guard !replaced.isEmpty else { return TakeBack() }
            // The version given up here is the one not kept, whatever an earlier row named (a
            // bundle's version refused here before the server's word came).
            for r in replaced { try Self.recordFork(device: device, seq: r.change.change.seq, refused: r.change.id, at: wallMillis, replacing: true, db) }
            try db.execute(sql: "DELETE FROM pending WHERE device = ?", arguments: [device.description])
            var result = try rebuild(db, stored: stored, dropping: Set(replaced.map(\.change.id)), theirs: theirs, resign: [], as: nil, wallMillis: wallMillis)
            result.dropped = replaced.count
            return result
        }
    }

    /// `fieldsync rekey`: this replica becomes `newKey`'s device (enrolled with the server, on
    /// `roster`). Its old device's chain becomes `oldChain` (the server's, from seq 1, maybe
    /// empty); every change of the old device the server lacks is signed again under the new
    /// key on top of nothing, a record it created getting a new id (`RecordID.remade`), and each
    /// seq where the server holds another version is listed in `forks`. One transaction: a crash
    /// leaves the replica as it was.
    public func rekey(oldChain: [SignedChange], newKey: DeviceKey, roster: [RosterEntry], meta: [String: String],
                      wallMillis: UInt64 = Timestamps.nowMillis) throws -> TakeBack {
        let new = newKey.deviceID
        return try write { db in
            guard let oldText = try Meta.get("device", db), let old = DeviceID(oldText), old != new else {
                throw StoreError(.ambiguous, "this replica is already the new key's device")
            }
            if !oldChain.isEmpty { try Self.checkContiguous(oldChain, device: old, from: 1) }
            let stored = try Self.storedChanges(db)
            let trueIDs = Set(oldChain.map(\.id))
            let replaced = stored.filter { $0.change.change.device == old && !trueIDs.contains($0.change.id) }
            for r in replaced where r.change.change.seq <= UInt64(oldChain.count) {
                try Self.recordFork(device: old, seq: r.change.change.seq, refused: r.change.id, at: wallMillis, db)
            }
            for e in roster { try RosterRow.upsert(e, db) }
            for (k, v) in meta { try Meta.set(k, v, db) }
            try Meta.set("device", new.description, db)
            try Meta.set("rekeyed_from", old.description, db)
            try db.execute(sql: "DELETE FROM meta WHERE key IN ('acked_high', ?)", arguments: [Outbox.key(old.description)])
            try Meta.set(Outbox.key(new.description), "1", db)
            try db.execute(sql: "DELETE FROM pending WHERE device = ?", arguments: [old.description])
            var result = try rebuild(db, stored: stored, dropping: Set(replaced.map(\.change.id)), theirs: oldChain,
                                     resign: replaced.map(\.change), as: newKey, wallMillis: wallMillis)
            result.dropped = replaced.count
            return result
        }
    }

    // MARK: The shared rebuild

    typealias Stored = (change: SignedChange, acked: Bool, receivedAt: Int64, skew: Int64)

    /// Every stored change, in the order stored, with whether it was acknowledged and when it came.
    static func storedChanges(_ db: Database) throws -> [Stored] {
        try Row.fetchAll(db, sql: "SELECT n, id, device, seq, signed, signature, seed, acked, received_at, clock_skew FROM changes ORDER BY n").map { row in
            (try loadChange(row, db), (row["acked"] as Int64) != 0, row["received_at"], row["clock_skew"])
        }
    }

    static func checkContiguous(_ theirs: [SignedChange], device: DeviceID, from: UInt64) throws {
        for (i, c) in theirs.enumerated() {
            guard c.change.device == device, c.change.seq == from + UInt64(i),
                  i == 0 ? (from > 1 || c.change.prev.isZero) : c.change.prev == theirs[i - 1].id else {
                throw StoreError(.notFound, "the server's copy of device \(device)'s chain is not contiguous")
            }
        }
    }

    /// Where the true chain starts, the replica must agree on what came before.
    static func checkPredecessor(of first: SignedChange, _ db: Database) throws {
        guard first.change.seq > 1 else { return }
        let before = try Data.fetchOne(db.cachedStatement(sql: "SELECT id FROM changes WHERE device = ? AND seq = ?"),
                                       arguments: [first.change.device.description, Int64(clamping: first.change.seq - 1)])
        guard let before, ChangeID(bytes: [UInt8](before)) == first.change.prev else {
            throw StoreError(.notFound, "this replica lacks device \(first.change.device)'s change at seq \(first.change.seq - 1) that the server's chain follows")
        }
    }

    /// Lists a fork; the first version named at a device and seq stays unless `replacing`.
    static func recordFork(device: DeviceID, seq: UInt64, refused: ChangeID, at: UInt64, replacing: Bool = false, _ db: Database) throws {
        try db.execute(sql: "INSERT INTO forks (device, seq, refused, seen_at) VALUES (?, ?, ?, ?) ON CONFLICT DO "
                       + (replacing ? "UPDATE SET refused = excluded.refused, seen_at = excluded.seen_at" : "NOTHING"),
                       arguments: [device.description, Int64(clamping: seq), Data(refused.bytes), Int64(clamping: at)])
    }

    /// Rebuilds the derived state from every stored change but `dropped`, then `theirs`, then
    /// `resign` signed again with `key` (in seq order, on top of `key`'s device's head), by
    /// applying each again through `Replicator` in the order stored: the merge does not depend
    /// on that order. Runs inside the caller's transaction.
    func rebuild(_ db: Database, stored: [Stored], dropping dropped: Set<ChangeID>, theirs: [SignedChange],
                 resign: [SignedChange], as key: DeviceKey?, wallMillis: UInt64) throws -> TakeBack {
        let held = Set(stored.map(\.change.id))
        for table in ["edits", "ended", "records", "changes", "heads"] { try db.execute(sql: "DELETE FROM \(table)") }
        // Stored again, every change gets a new local number: a bundle's mark by number no
        // longer says what was bundled, so the next bundle carries everything.
        try db.execute(sql: "DELETE FROM meta WHERE key = 'bundle_mark'")
        for id in dropped { try db.execute(sql: "DELETE FROM refusals WHERE change_id = ?", arguments: [Data(id.bytes)]) }
        var s = try storage(db, wallMillis: wallMillis)
        let kept = stored.filter { !dropped.contains($0.change.id) }
        try s.expect(kept.map(\.change) + theirs + resign)
        // What is stored was taken when it came: a revocation that came later does not refuse
        // it now (its cut-off judges what arrives after it).
        let roster = s.roster
        for device in s.roster.keys { s.roster[device]?.revokedAfterSeq = nil }
        for k in kept { _ = try Replicator.receive(k.change, into: &s, wallMillis: wallMillis, verified: true) }
        s.roster = roster
        var result = TakeBack()
        for c in theirs where !held.contains(c.id) {
            _ = try Replicator.receive(c, into: &s, wallMillis: wallMillis)
            result.taken += 1
        }
        if let key {
            let me = key.deviceID
            // An op naming an op of a change signed again names its new id; a record created
            // under another key gets an id this key may create, and a value signed again that
            // names such a record (a note's `links`) names the new id. A link another device
            // signed to the old id (it had the forked version by bundle) cannot be rewritten,
            // and names a record that no longer exists.
            var renamed: [ChangeID: ChangeID] = [:]
            var remade: [RecordID: RecordID] = [:]
            let resigning = resign.sorted(by: { $0.change.seq < $1.change.seq })
            for old in resigning {
                for op in old.change.ops where op.action == .create && !op.record.mayBeCreated(by: me) && remade[op.record] == nil {
                    remade[op.record] = op.record.remade(by: me)
                }
            }
            for old in resigning {
                var ops = old.change.ops
                var values = old.values
                for i in ops.indices {
                    ops[i].refs = ops[i].refs.map { r in renamed[r.change].map { OpRef(change: $0, index: r.index) } ?? r }.sorted()
                    if let r = remade[ops[i].record] { ops[i].record = r }
                    if let v = values[UInt16(i)], case .string(let text) = v.value, let named = RecordID(text), let new = remade[named],
                       s.schema.field(ops[i].field, type: ops[i].recordType, kind: nil)?.type == "record_id" {
                        values[UInt16(i)] = OpValue.fresh(.string(new.description))
                    }
                }
                let head = try s.head(of: me)
                let change = Change(device: me, seq: (head?.seq ?? 0) + 1, prev: head?.id ?? .zero, hlc: s.clock.tick(wallMillis: wallMillis),
                                    wallMillis: wallMillis, ops: ops)
                let again = SignedChange.author(change, values: values, key: key)
                _ = try Replicator.receive(again, into: &s, wallMillis: wallMillis, verified: true)
                renamed[old.id] = again.id
                result.resigned += 1
            }
        }
        // Acknowledged stays acknowledged; the server holds the true chain.
        let acked = try db.cachedStatement(sql: "UPDATE changes SET acked = 1 WHERE id = ?")
        for k in kept where k.acked { try acked.execute(arguments: [Data(k.change.id.bytes)]) }
        for c in theirs { try acked.execute(arguments: [Data(c.id.bytes)]) }
        // When each change first came, and whether its clock was off then, as they were.
        let stamp = try db.cachedStatement(sql: "UPDATE changes SET received_at = ?, clock_skew = ? WHERE id = ?")
        for k in kept { try stamp.execute(arguments: [k.receivedAt, k.skew, Data(k.change.id.bytes)]) }
        return result
    }
}
