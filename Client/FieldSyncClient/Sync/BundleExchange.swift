import FieldSyncCore
import FieldSyncStore
import Foundation
import Glibc

/// `fieldsync bundle create` and `bundle apply`: the sync, carried by hand (docs/BUNDLE.md).
extension Replica {
    /// Where the last bundle made here stopped (`changes.n`): the next one starts after it.
    static let bundleMarkKey = "bundle_mark"

    public struct BundleWritten: Sendable {
        public var changes = 0
        public var own = 0
    }

    /// Writes what a reader of this bundle may lack: this laptop's changes the server has not
    /// acknowledged, and every change stored here since the last bundle (`all`: every change).
    /// The signed roster goes with them, so a reader learns the devices that wrote them.
    public func createBundle(out path: String, all: Bool) throws -> BundleWritten {
        guard let serverKey = try store.meta("server_key") else { throw ClientError("this replica is not enrolled: a bundle carries changes between devices of one server") }
        let mark = all ? 0 : (try store.meta(Self.bundleMarkKey).flatMap { Int64($0) } ?? 0)
        let (since, last) = try store.envelopes(after: mark)
        let outbox = all ? [] : try store.outbox(device: device)
        // The outbox first (a laptop's own work is what must travel), then the rest; once each.
        var seen = Set<ChangeID>()
        var envelopes: [[UInt8]] = []
        var own = 0, ownHigh: UInt64 = 0
        for e in outbox.map(\.envelope) + since {
            guard let c = try? SignedChange(envelope: e), seen.insert(c.id).inserted else { continue }
            if c.change.device == device { own += 1; ownHigh = max(ownHigh, c.change.seq) }
            envelopes.append(e)
        }
        let roster = try store.meta("roster_signed").flatMap { try? JSONDecoder().decode(SignedRoster.self, from: Data($0.utf8)) }
        let header = ChangeBundle.Header(madeBy: device.description, madeAt: Timestamps.iso(Timestamps.nowMillis), serverKey: serverKey, roster: roster)
        try Self.writeNew(path, try ChangeBundle.encode(header, changes: envelopes))
        try store.setMeta(Self.bundleMarkKey, String(last))
        // What left in a bundle may be held elsewhere now: never taken back (a fork if the
        // server comes to hold another version).
        if ownHigh > 0 { try store.markLeft(through: ownHigh) }
        return BundleWritten(changes: envelopes.count, own: own)
    }

    /// A new file, 0600 from its first byte (it holds what the replica holds), synced.
    static func writeNew(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ClientError(errno == EEXIST ? "\(path) already exists; refusing to overwrite it" : "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 { if errno == EINTR { continue }; unlink(path); throw ClientError("cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
        guard fsync(fd) == 0 else { unlink(path); throw ClientError("cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    public struct BundleApplied: Sendable {
        public var new = 0
        public var already = 0
        /// Waiting for an earlier change of their device (one refused, or not in any bundle yet).
        public var held = 0
        public var refused: [(id: String, device: String, seq: UInt64?, reason: String)] = []
        /// Devices the bundle's roster added or revoked here.
        public var rosterNews = 0
        /// Refused changes that another version of, signed by the same key, is held here.
        public var forks = 0
        /// This laptop's changes the server's receipt acknowledged.
        public var acknowledged = 0
        public var madeBy = ""
    }

    /// Takes a bundle in: its roster if the pinned server key signed it, then every change
    /// checked as a sync checks it (signature, chain, roster, policy). A change that fails is
    /// refused, and those of its device that follow wait; other devices' changes are taken.
    public func applyBundle(_ path: String) throws -> BundleApplied {
        guard let serverHex = try store.meta("server_key"), let serverKey = [UInt8](hex: serverHex) else {
            throw ClientError("this replica is not enrolled: it cannot check a bundle's roster")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
        guard let size else { throw ClientError("cannot read \(path)") }
        guard size <= ChangeBundle.maxBytes else { throw ClientError("\(path) is \(size) bytes, more than a bundle may be (\(ChangeBundle.maxBytes))") }
        guard let data = FileManager.default.contents(atPath: path) else { throw ClientError("cannot read \(path)") }
        let (header, envelopes): (ChangeBundle.Header, [[UInt8]])
        do { (header, envelopes) = try ChangeBundle.decode(Array(data)) } catch { throw ClientError("\(path): \(error.message)") }
        guard header.serverKey == serverHex else {
            throw ClientError("\(path) was made for another server's devices (server key \(header.serverKey.prefix(12))…, this replica's is \(serverHex.prefix(12))…)")
        }
        var report = BundleApplied()
        report.madeBy = header.madeBy
        // The roster: only as the server signed it, and never undoing a revocation held here.
        if let signed = header.roster {
            guard let roster = try? signed.verified(serverKey: serverKey) else { throw ClientError("\(path): its roster is not signed by this replica's server") }
            let mine = try store.roster()
            let news = roster.sorted.filter { e in
                guard let known = mine[e.device] else { return true }
                return known.revokedAfterSeq == nil && e.revokedAfterSeq != nil
            }
            if !news.isEmpty { try store.upsertRoster(news) }
            report.rosterNews = news.count
        }
        var changes: [SignedChange] = []
        for (i, e) in envelopes.enumerated() {
            do { changes.append(try SignedChange(envelope: e)) } catch {
                report.refused.append(("#\(i + 1)", "?", nil, "not a change: \(error.message)"))
            }
        }
        // In each device's seq order: a bundle made from several places may hold them in any.
        changes.sort { ($0.change.device.description, $0.change.seq) < ($1.change.device.description, $1.change.seq) }
        let results = try store.receive(changes)
        let names = try self.names()
        var forks: [ReplicaStore.Fork] = []
        for c in changes {
            switch results[c.id] {
            case .success(.applied)?: report.new += 1
            case .success(.duplicate)?: report.already += 1
            case .success(.pending)?: report.held += 1
            case .failure(let e)?:
                report.refused.append((c.id.hex, names[c.change.device] ?? c.change.device.description, c.change.seq, e.message))
                // Its signature held (checked before the chain), so the device's key signed two
                // versions of that seq, and both have spread: a fork, listed by `status`. This
                // device's own is left to the next sync, which takes back what it can.
                if e.code == .forkedChain, c.change.device != device {
                    forks.append(ReplicaStore.Fork(device: c.change.device, seq: c.change.seq, refused: c.id, seenAt: Timestamps.nowMillis))
                }
            case nil: report.already += 1
            }
        }
        if !forks.isEmpty { try store.recordForks(forks) }
        report.forks = forks.count
        // A server's receipt: this laptop's changes it holds count as acknowledged.
        if let r = header.receipt, r.device == device.description, r.verified(serverKey: serverKey), let head = ChangeID(hex: r.head) {
            report.acknowledged = try store.acknowledge(device: device, through: r.seq, head: head)
        }
        return report
    }
}
