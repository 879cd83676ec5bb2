import FieldSyncCore
import Foundation

/// `fieldsync-server bundle apply` and `bundle create` (docs/BUNDLE.md): the server's half of a
/// sync, carried by hand. Applying goes through the store's own exchange, author by author, so
/// every change is checked and stored as if its author had uploaded it, on either store.
public enum ServerBundle {
    public struct Applied: Sendable {
        public var accepted = 0
        public var refused: [ChangeRefusal] = []
        public var madeBy = ""
    }

    public static func apply(_ bytes: [UInt8], store: any SyncStoreAdmin, key: DeviceKey, now: UInt64 = Timestamps.nowMillis) async throws -> Applied {
        let (header, envelopes): (ChangeBundle.Header, [[UInt8]])
        do { (header, envelopes) = try ChangeBundle.decode(bytes) } catch { throw ServerError(error.message) }
        guard header.serverKey == key.publicKey.hex else { throw ServerError("the bundle was made for another server's devices") }
        var report = Applied()
        report.madeBy = header.madeBy
        var byAuthor: [DeviceID: [SignedChange]] = [:]
        for (i, e) in envelopes.enumerated() {
            do {
                let c = try SignedChange(envelope: e)
                byAuthor[c.change.device, default: []].append(c)
            } catch {
                report.refused.append(ChangeRefusal(id: "#\(i + 1)", code: error.code.description, reason: "not a change: \(error.message)"))
            }
        }
        let roster = try await store.roster()
        // The store's own vector as the "client's": nothing is lacking, so nothing is pulled.
        let held = try await store.vector()
        for (author, changes) in byAuthor.sorted(by: { $0.key.description < $1.key.description }) {
            guard roster[author] != nil else {
                report.refused += changes.map { ChangeRefusal(id: $0.id.hex, code: CoreError.Code.unknownDevice.description, reason: "device \(author) is not on the roster") }
                continue
            }
            var rest = changes.sorted { $0.change.seq < $1.change.seq }
            while !rest.isEmpty {
                let batch = Array(rest.prefix(SyncProtocol.maxBatch))
                let result = try await store.exchange(ExchangeRequest(device: author, roster: roster, upload: batch, clientVector: held, nonce: nil, now: now),
                                                      limits: ExchangeLimits(takes: { SyncProtocol.maxBatch }, sends: { 1 }))
                let refusedIDs = Set(result.refused.map(\.id))
                report.accepted += result.accepted.filter { !refusedIDs.contains($0.hex) }.count
                report.refused += result.refused
                if !result.forks.isEmpty { try await store.recordForks(result.forks) }
                // Taken in order: stop where the store took no more (a refusal holds the rest).
                let taken = Set(result.accepted.map(\.hex)).union(refusedIDs)
                let done = batch.prefix { taken.contains($0.id.hex) }.count
                if done == 0 {
                    report.refused += rest.map { ChangeRefusal(id: $0.id.hex, code: "held", reason: "waits for an earlier change of its device that was refused or is missing") }
                    break
                }
                rest.removeFirst(done)
            }
        }
        return report
    }

    /// Everything the server holds, for `device` to apply (the receiver keeps what it lacks),
    /// with the roster and the server's receipt for the device's own chain.
    public static func create(for device: DeviceID, store: any SyncStoreAdmin, key: DeviceKey, now: UInt64 = Timestamps.nowMillis) async throws -> (bytes: [UInt8], changes: Int) {
        let roster = try await store.roster()
        guard roster[device] != nil else { throw ServerError("no device \(device) on the roster") }
        var known = VersionVector()
        var envelopes: [[UInt8]] = []
        var head: (seq: UInt64, id: ChangeID)?
        for _ in 0..<1_000_000 {
            let r = try await store.exchange(ExchangeRequest(device: device, roster: roster, upload: [], clientVector: known, nonce: nil, now: now),
                                             limits: .fixed(SyncProtocol.maxBatch))
            for e in r.lacking {
                let c = try SignedChange(envelope: e)
                known.seqs[c.change.device] = max(known[c.change.device], c.change.seq)
                if c.change.device == device, c.change.seq > (head?.seq ?? 0) { head = (c.change.seq, c.id) }
                envelopes.append(e)
            }
            if !r.more || r.lacking.isEmpty { break }
        }
        let receipt = head.map { ChangeBundle.Receipt.sign(device: device, seq: $0.seq, head: $0.id, key: key) }
        let header = ChangeBundle.Header(madeBy: "server", madeAt: Timestamps.iso(now), serverKey: key.publicKey.hex,
                                   roster: SignedRoster.sign(roster, key: key), receipt: receipt)
        return (try ChangeBundle.encode(header, changes: envelopes), envelopes.count)
    }
}
