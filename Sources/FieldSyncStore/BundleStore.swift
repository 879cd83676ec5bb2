import FieldSyncCore
import Foundation
import GRDB

/// What a bundle takes from a replica, and the acknowledgement a server's bundle brings.
extension ReplicaStore {
    /// Every stored change after local number `n`, in the order stored, as envelopes; and the
    /// highest number read (`n` if none).
    public func envelopes(after n: Int64) throws -> (envelopes: [[UInt8]], last: Int64) {
        try read { db in
            var out: [[UInt8]] = []
            var last = n
            for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT n, id, signed, signature, seed, envelope FROM changes WHERE n > ? ORDER BY n"),
                                        arguments: [n]) {
                out.append(try Self.loadEnvelope(row, db))
                last = row["n"]
            }
            return (out, last)
        }
    }

    /// Marks `device`'s changes up to `seq` acknowledged, when the change held here at `seq` is
    /// `head` (the server holds this chain, not another). Returns how many were marked.
    public func acknowledge(device: DeviceID, through seq: UInt64, head: ChangeID) throws -> Int {
        let ids: [ChangeID] = try read { db in
            guard let at = try Data.fetchOne(db.cachedStatement(sql: "SELECT id FROM changes WHERE device = ? AND seq = ?"),
                                             arguments: [device.description, Int64(clamping: seq)]),
                  ChangeID(bytes: [UInt8](at)) == head else { return [] }
            return try Data.fetchAll(db.cachedStatement(sql: "SELECT id FROM changes WHERE device = ? AND seq <= ? AND acked = 0 ORDER BY seq"),
                                     arguments: [device.description, Int64(clamping: seq)]).compactMap { ChangeID(bytes: [UInt8]($0)) }
        }
        guard !ids.isEmpty else { return 0 }
        _ = try absorb(ExchangeOutcome(acknowledged: ids))
        return ids.count
    }
}
