/// A whole replica in memory: the reference implementation of `ReplicaStorage`, used by the
/// property tests and the demonstration, and the model the SQLite store must agree with.
public struct MemoryReplica: ReplicaStorage, Sendable {
    public let schema: RecordSchema
    public var roster: Roster
    public var clock = HybridClock()
    /// Each device's applied changes, index = seq - 1.
    public private(set) var chains: [DeviceID: [SignedChange]] = [:]
    public private(set) var refusals: [ChangeID: CoreError] = [:]
    public private(set) var skewed: Set<ChangeID> = []
    var positions: [ChangeID: (device: DeviceID, seq: UInt64)] = [:]
    var pendingChanges: [DeviceID: [UInt64: SignedChange]] = [:]
    public private(set) var records: [RecordID: RecordOps] = [:]
    /// Where each record's ops sit in the chains, so erasure finds them without a scan.
    var opsByRecord: [RecordID: [(device: DeviceID, position: Int, op: Int)]] = [:]

    public init(schema: RecordSchema = .standard, roster: Roster) {
        self.schema = schema
        self.roster = roster
    }

    public func rosterEntry(_ device: DeviceID) -> RosterEntry? { roster[device] }
    public func head(of device: DeviceID) -> (seq: UInt64, id: ChangeID)? {
        chains[device]?.last.map { (UInt64(chains[device]!.count), $0.id) }
    }
    public func position(of id: ChangeID) -> (device: DeviceID, seq: UInt64)? { positions[id] }
    public func pending(device: DeviceID, seq: UInt64) -> SignedChange? { pendingChanges[device]?[seq] }
    public mutating func addPending(_ change: SignedChange) { pendingChanges[change.change.device, default: [:]][change.change.seq] = change }
    public mutating func removePending(device: DeviceID, seq: UInt64) { pendingChanges[device]?[seq] = nil }

    public mutating func appendToChain(_ change: SignedChange, refusal: CoreError?, clockSkewed: Bool) {
        chains[change.change.device, default: []].append(change)
        let position = chains[change.change.device]!.count - 1
        for (i, op) in change.change.ops.enumerated() where change.values[UInt16(i)] != nil {
            opsByRecord[op.record, default: []].append((change.change.device, position, i))
        }
        positions[change.id] = (change.change.device, change.change.seq)
        if let refusal { refusals[change.id] = refusal }
        if clockSkewed { skewed.insert(change.id) }
    }

    /// Taken out of the map while it is being changed, so the insert does not copy it.
    public mutating func recordOps(_ id: RecordID) -> RecordOps { records.removeValue(forKey: id) ?? RecordOps(id: id) }
    public mutating func saveRecord(_ ops: RecordOps, added: [AppliedOp]) { records[ops.id] = ops }

    public func isErased(_ id: RecordID) -> Bool { records[id]?.isErased ?? false }

    public mutating func eraseValues(record: RecordID, fields: Set<String>) {
        for (device, position, op) in opsByRecord[record] ?? [] where fields.contains(chains[device]![position].change.ops[op].field) {
            chains[device]![position].dropValues([UInt16(op)])
        }
    }

    // MARK: Questions a replica answers

    public var vector: VersionVector { VersionVector(chains.mapValues { UInt64($0.count) }) }

    /// The changes a peer holding `vector` lacks, each device's in seq order.
    public func missing(for peer: VersionVector) -> [SignedChange] {
        chains.keys.sorted().flatMap { d in chains[d]!.dropFirst(Int(peer[d])) }
    }

    public func record(_ id: RecordID) -> RecordView? { records[id]?.materialize(schema: schema) }

    /// Every record that has arrived in full (its create included), deleted ones too.
    public var allRecords: [RecordView] {
        records.keys.sorted().compactMap { records[$0]!.materialize(schema: schema) }
    }

    public var conflicts: [RecordView] { allRecords.filter(\.hasConflict) }

    // MARK: Local work

    /// Signs the draft as this device's next change and applies it locally.
    @discardableResult
    public mutating func commit(_ draft: ChangeDraft, key: DeviceKey, wallMillis: UInt64) throws -> SignedChange {
        let device = key.deviceID
        let head = self.head(of: device)
        let change = Change(device: device, seq: (head?.seq ?? 0) + 1, prev: head?.id ?? .zero,
                            hlc: clock.tick(wallMillis: wallMillis), wallMillis: wallMillis, ops: draft.ops)
        let signed = SignedChange.author(change, values: draft.values, key: key)
        _ = try Replicator.receive(signed, into: &self, wallMillis: wallMillis, verified: true)
        return signed
    }
}

extension MemoryReplica {
    /// As `commit`, but unsigned: for property tests of the merge, where signing every change of
    /// thousands of scenarios would measure Ed25519 rather than the merge.
    @discardableResult
    package mutating func commitUnsigned(_ draft: ChangeDraft, device: DeviceID, wallMillis: UInt64) throws -> SignedChange {
        let head = self.head(of: device)
        let change = Change(device: device, seq: (head?.seq ?? 0) + 1, prev: head?.id ?? .zero,
                            hlc: clock.tick(wallMillis: wallMillis), wallMillis: wallMillis, ops: draft.ops)
        let signed = SignedChange.unsignedForTesting(change, values: draft.values)
        _ = try Replicator.receive(signed, into: &self, wallMillis: wallMillis, verified: true)
        return signed
    }
}
