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
/// for ever), and stays in `Summary.serverLacks` with the server's reason. A change refused for
/// lacking a value (erased here, by an erase the server does not hold yet) is tried again
/// once another author's relay moves: that may be the erase.
struct Relay: Sendable {
    /// What one request carried: `device`'s changes after `after`.
    struct Batch: Sendable {
        let device: DeviceID
        let after: UInt64
        let changes: [ReplicaStore.OutgoingChange]
    }

    /// Why the server would not take an author's changes: the seq it held of them then, its
    /// reason and refusal code, and when (ms, this laptop's clock).
    struct Refusal: Sendable {
        var at: UInt64
        var reason: String
        var code: String
        var when: UInt64
    }

    private var refused: [DeviceID: Refusal] = [:]

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
                  let reason = v["reason"]?.stringValue, let code = v["code"]?.stringValue else { continue }
            refused[device] = Refusal(at: UInt64(at), reason: reason, code: code, when: UInt64(when))
        }
    }

    /// The form the replica keeps.
    var stored: String {
        JSONValue.object(Dictionary(uniqueKeysWithValues: refused.map { d, r in
            (d.description, JSONValue.object(["at": .int(Int64(clamping: r.at)), "reason": .string(r.reason), "code": .string(r.code),
                                              "when": .int(Int64(clamping: r.when))]))
        })).canonicalString
    }

    /// Why the server would not take `lack` from this laptop, if it would not at the seq it
    /// holds now. A refusal dated ahead of this laptop's clock (set while the clock was wrong)
    /// has passed too.
    func refusal(of lack: SyncEngine.ServerLack, serverVector: [String: UInt64]) -> String? {
        guard let r = refused[lack.device], r.at == serverVector[lack.device.description] ?? 0 else { return nil }
        let t = now()
        guard t >= r.when, t - r.when < Self.retryAfterMillis else { return nil }
        return r.reason
    }

    /// The authors still to relay, of those the server lacks.
    func open(_ lacks: [SyncEngine.ServerLack], serverVector: [String: UInt64]) -> [SyncEngine.ServerLack] {
        lacks.filter { refusal(of: $0, serverVector: serverVector) == nil }
    }

    /// The next batch: the first of `lacks` (in their order), from the seq `serverVector` says
    /// the server holds, as much as `window` allows. A change larger than the window is not
    /// sent alone, as a laptop's own may be: the window is what this link was seen to carry, and
    /// another's change cut off on the way would fail this laptop's own sync each time.
    mutating func next(_ lacks: [SyncEngine.ServerLack], serverVector: [String: UInt64], store: ReplicaStore,
                       window: UploadWindow) throws -> Batch? {
        for lack in open(lacks, serverVector: serverVector) {
            let after = serverVector[lack.device.description] ?? 0
            let read = try store.relayable(of: lack.device, after: after, limit: window.size, bytes: window.bytes)
            var total = 0
            let changes = read.prefix { total += $0.envelope.count; return total <= window.bytes }
            if !changes.isEmpty { return Batch(device: lack.device, after: after, changes: Array(changes)) }
            let reason = read.first.map { "its change \($0.id.hex.prefix(12)) is \($0.envelope.count) bytes, more than this link carries in one upload now" }
                // Its vector says this replica holds them: never expected.
                ?? "this laptop could not read them"
            refused[lack.device] = Refusal(at: after, reason: reason, code: "too_large", when: now())
        }
        return nil
    }

    /// What the server's answer did with `batch`: its vector shows how far it now holds the
    /// author's chain. No step forward, and the author is not tried again from there: so a
    /// relay always ends (a step forward for another author reopens only those refused for a
    /// missing value, and only a finite number of steps can be taken). Returns how many of the
    /// batch the server took.
    mutating func answered(_ batch: Batch, vector: [String: UInt64], accepted: Set<String>, refusals: [ChangeRefusal]) -> Int {
        let holds = vector[batch.device.description] ?? 0
        let refusedIDs = Set(refusals.map(\.id))
        guard holds > batch.after else {
            let ids = Set(batch.changes.map(\.id.hex))
            let first = refusals.first { ids.contains($0.id) }
            refused[batch.device] = Refusal(at: holds, reason: first?.reason ?? "the server did not take them", code: first?.code ?? "",
                                            when: now())
            return 0
        }
        refused = refused.filter { $0.value.code != ChangeRefusal.valuesMissing }
        // Those it took and applied (one kept but refused is listed both ways).
        return batch.changes.count { accepted.contains($0.id.hex) && !refusedIDs.contains($0.id.hex) }
    }

    /// The problems by which a server refuses a request for what it carries, not for who sent it.
    static let refusedWhole: Set<Problem.Code> = [.bodyTooLarge, .tooManyChanges, .malformedRequest]

    /// The server refused the request that carried `batch` whole (its problem `code`): its
    /// author is not tried again from there, and the sync goes on with the rest.
    mutating func failed(_ batch: Batch, reason: String, code: String) {
        refused[batch.device] = Refusal(at: batch.after, reason: reason, code: code, when: now())
    }
}
