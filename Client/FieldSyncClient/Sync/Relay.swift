import FieldSyncCore
import FieldSyncStore

/// Other devices' changes this laptop holds and the server lacks go up in the sync itself, once
/// this laptop's own are all taken: a server restored from a backup gets back what its other
/// laptops hold, and work carried here by bundle (or on a laptop handed to a driver) reaches the
/// server with the first laptop that syncs. Each change is signed by its author and checked by
/// the server as if its author had sent it, so relaying trusts no one. One author a request,
/// from the seq the server holds; an author whose relayed changes the server did not take
/// (revoked, or a chain it holds another version of) is not tried again while the server holds
/// as much of that chain as then, for a day (the replica keeps this, `meta.relay_refused`, so a
/// nightly sync or an idle `sync --watch` does not send the same refused changes every time,
/// and a refusal that passes, a roster read a moment before an enrolment, say, does not stand
/// for ever), and stays in `Summary.serverLacks` with the server's reason.
struct Relay: Sendable {
    /// What one request carried: `device`'s changes after `after`.
    struct Batch: Sendable {
        let device: DeviceID
        let after: UInt64
        let changes: [ReplicaStore.OutgoingChange]
    }

    /// Authors the server would not take from this laptop: the seq it held of them then, why,
    /// and when (ms).
    private var refused: [DeviceID: (at: UInt64, reason: String, when: UInt64)] = [:]

    static let metaKey = "relay_refused"
    /// How long a refusal stands while the server's chain of its author stays where it was.
    static let retryAfterMillis: UInt64 = 86_400_000
    /// The time now (ms), for the tests to move.
    var now: @Sendable () -> UInt64 = { Timestamps.nowMillis }

    init() {}

    /// As the replica keeps it (`stored`); what cannot be read is forgotten (tried again).
    init(stored: String?) {
        guard let stored, case .object(let o)? = try? JSONValue.parse(stored) else { return }
        for (k, v) in o {
            guard let device = DeviceID(k), case .int(let at)? = v["at"], at >= 0, case .int(let when)? = v["when"], when >= 0,
                  let reason = v["reason"]?.stringValue else { continue }
            refused[device] = (UInt64(at), reason, UInt64(when))
        }
    }

    /// The form the replica keeps.
    var stored: String {
        JSONValue.object(Dictionary(uniqueKeysWithValues: refused.map { d, r in
            (d.description, JSONValue.object(["at": .int(Int64(clamping: r.at)), "reason": .string(r.reason), "when": .int(Int64(clamping: r.when))]))
        })).canonicalString
    }

    /// Why the server would not take `lack` from this laptop, if it would not at the seq it holds now.
    func refusal(of lack: SyncEngine.ServerLack, serverVector: [String: UInt64]) -> String? {
        guard let r = refused[lack.device], r.at == serverVector[lack.device.description] ?? 0,
              now() < r.when.addingReportingOverflow(Self.retryAfterMillis).partialValue else { return nil }
        return r.reason
    }

    /// The authors still to relay, of those the server lacks.
    func open(_ lacks: [SyncEngine.ServerLack], serverVector: [String: UInt64]) -> [SyncEngine.ServerLack] {
        lacks.filter { refusal(of: $0, serverVector: serverVector) == nil }
    }

    /// The next batch: the first of `lacks` (in their order), from the seq `serverVector` says
    /// the server holds, as much as `window` allows.
    mutating func next(_ lacks: [SyncEngine.ServerLack], serverVector: [String: UInt64], store: ReplicaStore,
                       window: UploadWindow) throws -> Batch? {
        for lack in open(lacks, serverVector: serverVector) {
            let after = serverVector[lack.device.description] ?? 0
            let read = try store.relayable(of: lack.device, after: after, limit: window.size, bytes: window.bytes)
            // What fits the window; at least one, unless it is larger than any upload may be
            // (an author's own changes are cut to about 64 kB, but a relay carries what it was given).
            var total = 0
            let changes = read.prefix { total += $0.envelope.count; return total <= window.bytes }
            if let first = read.first, changes.isEmpty, first.envelope.count > SyncProtocol.maxUploadBytes {
                refused[lack.device] = (after, "its change \(first.id.hex.prefix(12)) is \(first.envelope.count) bytes, more than one upload may carry", now())
                continue
            }
            if !read.isEmpty { return Batch(device: lack.device, after: after, changes: changes.isEmpty ? [read[0]] : Array(changes)) }
            // Its vector says this replica holds them: never expected, and never tried again.
            refused[lack.device] = (after, "this laptop could not read them", now())
        }
        return nil
    }

    /// What the server's answer did with `batch`: its vector shows how far it now holds the
    /// author's chain. No step forward, and the author is not tried again from there: so a
    /// relay always ends. Returns how many of the batch the server took.
    mutating func answered(_ batch: Batch, vector: [String: UInt64], accepted: Set<String>, refusals: [ChangeRefusal]) -> Int {
        let holds = vector[batch.device.description] ?? 0
        let refusedIDs = Set(refusals.map(\.id))
        guard holds > batch.after else {
            let ids = Set(batch.changes.map(\.id.hex))
            refused[batch.device] = (holds, refusals.first { ids.contains($0.id) }?.reason ?? "the server did not take them", now())
            return 0
        }
        // Those it took and applied (one kept but refused is listed both ways).
        return batch.changes.count { accepted.contains($0.id.hex) && !refusedIDs.contains($0.id.hex) }
    }

    /// The server refused the request that carried `batch` (a problem, not a change's refusal):
    /// its author is not tried again from there, and the sync goes on with the rest.
    mutating func failed(_ batch: Batch, reason: String) {
        refused[batch.device] = (batch.after, reason, now())
    }
}
