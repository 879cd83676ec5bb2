import FieldSyncCore
import Foundation
import GRDB

/// A restored or cloned laptop (issue 25, item 2). Its own chain on the server runs past or
/// beside its local one: it wrote seq 11 after a restore while the server holds another seq 11
/// the laptop made before the disk was lost, or a clone of the same replica wrote it. The
/// server's chain is the true one. The local changes it lacks never left this laptop (none was
/// acknowledged), so nothing anywhere refers to them: they are taken back and signed again, with
/// the same ops and values, on top of the true head. Only a change acknowledged on both sides
/// makes a real fork, which this cannot mend.
extension ReplicaStore {
    /// The newest change of `device` held here.
    public func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)? {
        try read { db in
            var s = try storage(db, wallMillis: 0)
            return try s.head(of: device)
        }
    }

    public struct TakeBack: Sendable {
        /// Local changes signed again on top of the true head.
        public var resigned = 0
        /// The true chain's changes this replica lacked.
        public var taken = 0
    }

    /// Replaces this device's chain from `theirs.first` on with `theirs` (its changes as the
    /// server holds them, contiguous, each checked against the roster here), and signs again
    /// every local change of the replaced part that `theirs` lacks. The derived state is rebuilt
    /// by applying every change again through `Replicator`, in the order they were stored, in one
    /// transaction: the merge does not depend on that order, and a crash leaves the replica as it
    /// was.
    public func takeBack(theirs: [SignedChange], key: DeviceKey, wallMillis: UInt64 = Timestamps.nowMillis) throws -> TakeBack {
        let me = key.deviceID
        guard let first = theirs.first else { return TakeBack() }
        for (i, c) in theirs.enumerated() {
            guard c.change.device == me, c.change.seq == first.change.seq + UInt64(i),
                  i == 0 || c.change.prev == theirs[i - 1].id else {
                throw StoreError(.notFound, "the server's copy of this device's chain is not contiguous")
            }
        }
        let from = first.change.seq
        return try write { db in
            // Where the true chain starts, the local one must agree on what came before.
            if from > 1 {
                let before = try Data.fetchOne(db.cachedStatement(sql: "SELECT id FROM changes WHERE device = ? AND seq = ?"),
                                               arguments: [me.description, Int64(clamping: from - 1)])
                guard let before, ChangeID(bytes: [UInt8](before)) == first.change.prev else {
                    throw StoreError(.notFound, "this replica lacks this device's change at seq \(from - 1) that the server's chain follows")
                }
            }
            let trueIDs = Set(theirs.map(\.id))
            // Every stored change, in the order stored, with whether it was acknowledged.
            var all: [(change: SignedChange, acked: Bool)] = []
            var stamps: [(id: ChangeID, receivedAt: Int64, skew: Int64)] = []
            for row in try Row.fetchAll(db, sql: "SELECT n, id, device, seq, signed, signature, seed, acked, received_at, clock_skew FROM changes ORDER BY n") {
                let c = try Self.loadChange(row, db)
                all.append((c, (row["acked"] as Int64) != 0))
                stamps.append((c.id, row["received_at"], row["clock_skew"]))
            }
            let replaced = all.filter { $0.change.change.device == me && $0.change.change.seq >= from && !trueIDs.contains($0.change.id) }
            // Acknowledged once, even if a resend to a restored server unmarked it since: it left
            // this laptop, so something may refer to it.
            let spreadUpTo = try Self.acknowledgedMark(db, device: me)
            if let spread = replaced.first(where: { $0.acked || $0.change.change.seq <= spreadUpTo }) {
                throw StoreError(.ambiguous, "this device's change at seq \(spread.change.change.seq) was acknowledged, yet the server holds another: a real fork (see `fieldsync rekey`)")
            }
            let dropped = Set(replaced.map(\.change.id))
            let held = Set(all.map(\.change.id))
            var result = TakeBack()
            guard !replaced.isEmpty else { return result }

            for table in ["edits", "ended", "records", "changes", "heads"] { try db.execute(sql: "DELETE FROM \(table)") }
            for id in dropped { try db.execute(sql: "DELETE FROM refusals WHERE change_id = ?", arguments: [Data(id.bytes)]) }
            var s = try storage(db, wallMillis: wallMillis)
            let kept = all.filter { !dropped.contains($0.change.id) }
            try s.expect(kept.map(\.change) + theirs + replaced.map(\.change))
            // What is stored was taken when it came: a revocation that came later does not refuse
            // it now (its cut-off judges what arrives after it).
            let roster = s.roster
            for device in s.roster.keys { s.roster[device]?.revokedAfterSeq = nil }
            for (c, _) in kept { _ = try Replicator.receive(c, into: &s, wallMillis: wallMillis, verified: true) }
            s.roster = roster
            for c in theirs where !held.contains(c.id) {
                _ = try Replicator.receive(c, into: &s, wallMillis: wallMillis)
                result.taken += 1
            }
            // Signed again in seq order; an op naming an op of a change signed again names its
            // new id.
            var renamed: [ChangeID: ChangeID] = [:]
            for (old, _) in replaced.sorted(by: { $0.change.change.seq < $1.change.change.seq }) {
                var ops = old.change.ops
                for i in ops.indices {
                    ops[i].refs = ops[i].refs.map { r in renamed[r.change].map { OpRef(change: $0, index: r.index) } ?? r }.sorted()
                }
                let head = try s.head(of: me)
                let change = Change(device: me, seq: (head?.seq ?? 0) + 1, prev: head?.id ?? .zero, hlc: s.clock.tick(wallMillis: wallMillis),
                                    wallMillis: wallMillis, ops: ops)
                let again = SignedChange.author(change, values: old.values, key: key)
                _ = try Replicator.receive(again, into: &s, wallMillis: wallMillis, verified: true)
                renamed[old.id] = again.id
                result.resigned += 1
            }
            // Acknowledged stays acknowledged; the server holds the true chain.
            let acked = try db.cachedStatement(sql: "UPDATE changes SET acked = 1 WHERE id = ?")
            for (c, wasAcked) in kept where wasAcked { try acked.execute(arguments: [Data(c.id.bytes)]) }
            for c in theirs { try acked.execute(arguments: [Data(c.id.bytes)]) }
            // When each change first came, and whether its clock was off then, as they were.
            let stamp = try db.cachedStatement(sql: "UPDATE changes SET received_at = ?, clock_skew = ? WHERE id = ?")
            for (id, at, skew) in stamps where !dropped.contains(id) { try stamp.execute(arguments: [at, skew, Data(id.bytes)]) }
            try Meta.set(Outbox.key(me.description), String(from), db)
            return result
        }
    }
}
