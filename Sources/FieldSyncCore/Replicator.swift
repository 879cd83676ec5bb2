/// Where a replica keeps its changes and record states. The in-memory `MemoryReplica` and the
/// SQLite store (FieldSyncStore) both implement it, so both run the very same `Replicator`.
public protocol ReplicaStorage {
    var schema: RecordSchema { get }
    func rosterEntry(_ device: DeviceID) throws -> RosterEntry?
    /// The highest applied seq of a device and that change's id. Mutating: a store may keep it.
    mutating func head(of device: DeviceID) throws -> (seq: UInt64, id: ChangeID)?
    /// The applied change with this id, if any: its device and seq.
    func position(of id: ChangeID) throws -> (device: DeviceID, seq: UInt64)?
    /// A change held back for a gap before it. Mutating: a store may learn that none is held.
    mutating func pending(device: DeviceID, seq: UInt64) throws -> SignedChange?
    mutating func addPending(_ change: SignedChange) throws
    mutating func removePending(device: DeviceID, seq: UInt64) throws
    /// Stores an applied change (refused by policy or not) in the device's chain.
    mutating func appendToChain(_ change: SignedChange, refusal: CoreError?, clockSkewed: Bool) throws
    mutating func recordOps(_ id: RecordID) throws -> RecordOps
    /// Saves a record after `added` were inserted into it. An op's value is nil where the merge
    /// dropped it (a personal field of an erased record): it must not be kept.
    mutating func saveRecord(_ ops: RecordOps, added: [AppliedOp]) throws
    /// Drops stored values of ops on these fields of a record (erasure).
    mutating func eraseValues(record: RecordID, fields: Set<String>) throws
    /// Whether the record has been erased (without taking it out for a change).
    func isErased(_ id: RecordID) throws -> Bool
    var clock: HybridClock { get set }
}

/// What happened to a received change.
public enum ReceiveOutcome: Hashable, Sendable {
    /// Taken now, with any held successors it released, in seq order; each with policy's
    /// verdict (a refused change is kept in its chain but applied nowhere).
    case applied([AppliedChange])
    /// Already applied: nothing to do.
    case duplicate
    /// Waits for an earlier seq of its device.
    case pending
}

/// A change taken into its device's chain, and policy's verdict on it: nil when its ops were
/// applied, else why none was (`Policy`). Callers read the verdict here, never from the store.
public struct AppliedChange: Hashable, Sendable {
    public let id: ChangeID
    public let refusal: CoreError?
    public init(id: ChangeID, refusal: CoreError?) { self.id = id; self.refusal = refusal }
}

/// The one path by which a change enters a replica, local or remote: chain checks, per-device
/// seq order (a gap waits), policy, then the merge (`RecordOps.insert`).
public enum Replicator {
    /// How far beyond a device's applied head a change may be held back for a gap.
    public static let maxHeldAhead: UInt64 = 2_000
    /// - Parameter verified: the signature was already checked (local authoring, or a caller that
    ///   verified in bulk). Otherwise it is checked here against the roster's key.
    public static func receive<S: ReplicaStorage>(_ change: SignedChange, into s: inout S, wallMillis: UInt64,
                                                   verified: Bool = false) throws -> ReceiveOutcome {
        let c = change.change
        guard let entry = try s.rosterEntry(c.device) else {
            throw CoreError(.unknownDevice, "change \(change.id.hex.prefix(12)) comes from device \(c.device), which is not on the roster")
        }
        if let cut = entry.revokedAfterSeq, c.seq > cut {
            throw CoreError(.revoked, "device \(entry.name) (\(c.device)) was revoked after seq \(cut); change seq \(c.seq) is refused")
        }
        if !verified { try change.verify(publicKey: entry.publicKey) }

        let head = try s.head(of: c.device)
        let applied = head?.seq ?? 0
        if c.seq <= applied {
            if let pos = try s.position(of: change.id), pos.device == c.device, pos.seq == c.seq { return .duplicate }
            throw CoreError(.forkedChain, "device \(c.device) already has a different change at seq \(c.seq)")
        }
        if let held = try s.pending(device: c.device, seq: c.seq) {
            if held.id == change.id { return .pending }  // held already: it still waits
            throw CoreError(.forkedChain, "device \(c.device) already sent a different change at seq \(c.seq)")
        }
        // A prev that names a known change of this device at the wrong position is a forged seq,
        // whether or not the gap before it has arrived yet. (The next change linked to the head,
        // every local one among them, names the head at seq - 1: no need to look it up.)
        let linksToHead = c.seq == applied + 1 && c.prev == (head?.id ?? .zero)
        if !c.prev.isZero, !linksToHead, let pos = try s.position(of: c.prev), pos.device == c.device, pos.seq != c.seq - 1 {
            throw CoreError(.forgedSeq, "change seq \(c.seq) of \(c.device) follows seq \(pos.seq)")
        }
        if c.seq > applied + 1 {
            // Held changes are bounded per device: a device cannot fill a replica with changes
            // that wait for a gap it never fills.
            guard c.seq - applied <= Self.maxHeldAhead else {
                throw CoreError(.tooFarAhead, "change seq \(c.seq) of \(c.device) is more than \(Self.maxHeldAhead) ahead of seq \(applied); send the changes before it first")
            }
            // A held change keeps no personal value of a record already erased: it may wait for
            // its gap for ever, and "no personal value is kept, whenever it arrives" holds here too.
            var held = change
            for (id, indexes) in c.opsByRecord where try s.isErased(id) {
                let personal = s.schema.personalFields(of: c.ops[indexes[0]].recordType)
                held.dropValues(indexes.filter { personal.contains(c.ops[$0].field) }.map { UInt16($0) })
            }
            try s.addPending(held)
            return .pending
        }
        try checkLink(change, head: head)
        var taken = [AppliedChange(id: change.id, refusal: try apply(change, into: &s, wallMillis: wallMillis))]
        // Release successors that were waiting for this one.
        var next = c.seq + 1
        var prevID = change.id
        while let waiting = try s.pending(device: c.device, seq: next) {
            try s.removePending(device: c.device, seq: next)
            guard waiting.change.prev == prevID else { break }  // a broken successor is dropped
            taken.append(AppliedChange(id: waiting.id, refusal: try apply(waiting, into: &s, wallMillis: wallMillis)))
            prevID = waiting.id
            next += 1
        }
        return .applied(taken)
    }

    static func checkLink(_ change: SignedChange, head: (seq: UInt64, id: ChangeID)?) throws(CoreError) {
        let expected = head?.id ?? .zero
        guard change.change.prev == expected else {
            throw CoreError(.brokenChain, "change seq \(change.change.seq) of \(change.change.device) does not link to its predecessor")
        }
    }

    /// Appends `change` to its chain and applies its ops unless policy refuses it; returns the refusal.
    static func apply<S: ReplicaStorage>(_ change: SignedChange, into s: inout S, wallMillis: UInt64) throws -> CoreError? {
        let c = change.change
        let skewed = s.clock.observe(c.hlc, wallMillis: wallMillis)
        let role = try s.rosterEntry(c.device)?.role ?? .field
        let refusal = Policy.judge(c, role: role, schema: s.schema)
        try s.appendToChain(change, refusal: refusal, clockSkewed: skewed)
        // By record, in op order, so each record is loaded and saved once.
        let groups = c.opsByRecord
        guard refusal == nil else {
            // Kept, applied nowhere; but no personal value of an erased record is kept either.
            for (id, indexes) in groups where try s.isErased(id) {
                try s.eraseValues(record: id, fields: s.schema.personalFields(of: c.ops[indexes[0]].recordType))
            }
            return refusal
        }

        for (id, indexes) in groups {
            var ops = try s.recordOps(id)
            let wasErased = ops.isErased
            let added = indexes.map { i in
                AppliedOp(ref: OpRef(change: change.id, index: UInt16(i)), op: c.ops[i], hlc: c.hlc, author: c.device,
                          wallMillis: c.wallMillis, value: change.values[UInt16(i)]?.value)
            }
            let type = added[0].op.recordType
            let personal = s.schema.personalFields(of: type)
            for e in added { ops.insert(e, personalFields: personal) }
            // Once a record is erased, no personal value of it is kept, whenever it arrives.
            let stored = ops.isErased
                ? added.map { e in var e = e; if personal.contains(e.op.field) { e.value = nil }; return e }
                : added
            try s.saveRecord(ops, added: stored)
            if ops.isErased && (!wasErased || added.contains(where: { personal.contains($0.op.field) && $0.value != nil })) {
                try s.eraseValues(record: id, fields: personal)
            }
        }
        return nil
    }
}
