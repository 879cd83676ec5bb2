/// What a device may do (DESIGN.md §6).
public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
    case field, press, coordinator
}

/// One enrolled device, as the server's signed roster lists it.
public struct RosterEntry: Hashable, Sendable, Codable {
    public var device: DeviceID
    public var publicKey: [UInt8]
    public var name: String
    public var role: Role
    public var enrolledAtMillis: UInt64
    /// For a revoked device: the last `seq` accepted from it. Later changes are refused outright.
    public var revokedAfterSeq: UInt64?

    public init(publicKey: [UInt8], name: String, role: Role, enrolledAtMillis: UInt64, revokedAfterSeq: UInt64? = nil) {
        self.device = DeviceID(publicKey: publicKey)
        self.publicKey = publicKey
        self.name = name
        self.role = role
        self.enrolledAtMillis = enrolledAtMillis
        self.revokedAfterSeq = revokedAfterSeq
    }
}

/// The devices a replica trusts, by id.
public struct Roster: Hashable, Sendable {
    public private(set) var entries: [DeviceID: RosterEntry] = [:]

    public init(_ entries: [RosterEntry] = []) { for e in entries { self.entries[e.device] = e } }

    public subscript(device: DeviceID) -> RosterEntry? { entries[device] }
    public mutating func upsert(_ e: RosterEntry) { entries[e.device] = e }
    public var sorted: [RosterEntry] { entries.values.sorted { $0.device < $1.device } }
}

/// Per-change policy, judged from the signed bytes, the author's role and the schema alone, so
/// every replica reaches the same verdict. A refused change is kept (the author's chain stays
/// whole) but none of its ops is applied anywhere.
public enum Policy {
    /// Most references one change may carry in all: a delete names what its author saw of a
    /// record (at most a few thousand values and tags at the schema's limits), and every
    /// reference costs each replica a lookup when the change is applied.
    public static let maxRefsPerChange = 16_384

    public static func judge(_ change: Change, role: Role, schema: RecordSchema) -> CoreError? {
        var refs = 0
        // Adds per (record, field): a change may not hold more elements of a set than the schema allows.
        var adds: [RecordID: [String: Int]] = [:]
        for (i, op) in change.ops.enumerated() {
            if let reason = judge(op, author: change.device, role: role, schema: schema) {
                // The reason first, in the words its reader would use; which op, after it.
                return CoreError(reason.code, "\(reason.message) (op \(i): \(op.action) on \(op.recordType) \(op.record))")
            }
            refs += op.refs.count
            if op.action == .add {
                let n = adds[op.record, default: [:]][op.field, default: 0] + 1
                adds[op.record, default: [:]][op.field] = n
                if let max = schema.field(op.field, type: op.recordType, kind: nil)?.maxItems, n > max {
                    return CoreError(.oversize, "op \(i): more than \(max) elements added to '\(op.field)' of \(op.record) in one change")
                }
            }
        }
        guard refs <= maxRefsPerChange else {
            return CoreError(.oversize, "the change names \(refs) ops; at most \(maxRefsPerChange)")
        }
        return nil
    }

    static func judge(_ op: Op, author: DeviceID, role: Role, schema: RecordSchema) -> CoreError? {
        // The record's type is in its id: an op claiming another type would reach into a record
        // of that other type (a note's delete over a contact, a note create over a contact).
        guard op.record.type == op.recordType else {
            return CoreError(.crossRecord, "record \(op.record) is a \(op.record.type), not a \(op.recordType)")
        }
        // The shape of each action: only what the action means (no refs on a create or an add,
        // no field on a create, delete or erase), so no op carries what the merge might misread.
        switch op.action {
        case .create, .erase:
            guard op.field.isEmpty, op.refs.isEmpty else { return CoreError(.crossRecord, "\(op.action) names no field and no ops") }
        case .delete:
            guard op.field.isEmpty else { return CoreError(.crossRecord, "delete names no field") }
        case .add:
            guard op.refs.isEmpty else { return CoreError(.crossRecord, "add names no ops") }
        case .set, .remove, .resolve, .review:
            break
        }
        switch (role, op.recordType) {
        case (.field, .contact): return CoreError(.forbidden, "a field device does not write press contacts")
        case (.press, .note): return CoreError(.forbidden, "a press device does not write field notes")
        default: break
        }
        switch op.action {
        case .resolve, .erase:
            guard role == .coordinator else { return CoreError(.forbidden, "only a coordinator may \(op.action)") }
        default: break
        }
        switch op.action {
        case .create:
            // Only the device whose mark the id carries creates it: a create by anyone else would
            // take over the record's author, date and kind with an earlier HLC (`RecordID`).
            guard op.record.mayBeCreated(by: author) else {
                return CoreError(.foreignCreate, "record \(op.record) is not one this device made")
            }
            let kinds = schema.kinds(of: op.recordType)
            if op.recordType == .note ? !kinds.contains(op.kind) : !op.kind.isEmpty {
                return CoreError(.unknownField, "kind '\(op.kind)' is not a \(op.recordType) kind")
            }
        case .set, .add, .remove, .resolve:
            if op.action == .resolve && op.field.isEmpty { return nil }
            guard let spec = schema.field(op.field, type: op.recordType, kind: nil) else {
                return CoreError(.unknownField, "\(op.recordType) has no field '\(op.field)'")
            }
            if spec.writtenBy == "review" { return CoreError(.forbidden, "'\(op.field)' is written by review only") }
            let wantsSet = op.action == .add || op.action == .remove
            if wantsSet != (spec.merge == .set) {
                return CoreError(.forbidden, "\(op.action) does not apply to \(spec.merge) field '\(op.field)'")
            }
            if op.action == .set && op.refs.count > 1 {
                return CoreError(.forbidden, "a set supersedes at most one value; settling a conflict takes resolve")
            }
        case .review:
            guard op.recordType == .note, op.field == "review" else { return CoreError(.forbidden, "review applies to a note's review field") }
            // `draft` is the state before any review op; a field device may only submit.
            let verdicts: Set<String> = ["submitted", "approved", "rejected"]
            guard verdicts.contains(op.kind) else { return CoreError(.forbidden, "review state '\(op.kind)' cannot be written") }
            guard role == .coordinator || op.kind == "submitted" else {
                return CoreError(.forbidden, "only a coordinator may set review state '\(op.kind)'")
            }
        case .erase:
            guard op.recordType == .contact else { return CoreError(.forbidden, "erase applies to press contacts") }
        case .delete:
            break
        }
        return nil
    }
}

/// For each device, the highest `seq` applied without a gap.
public struct VersionVector: Hashable, Sendable, Codable {
    public var seqs: [DeviceID: UInt64] = [:]

    public init(_ seqs: [DeviceID: UInt64] = [:]) { self.seqs = seqs }

    public subscript(device: DeviceID) -> UInt64 { seqs[device] ?? 0 }

    /// True when this vector has seen everything `other` has.
    public func includes(_ other: VersionVector) -> Bool { other.seqs.allSatisfy { self[$0.key] >= $0.value } }

    public func merged(with other: VersionVector) -> VersionVector {
        VersionVector(seqs.merging(other.seqs, uniquingKeysWith: max))
    }

    /// Total number of changes covered.
    public var total: UInt64 { seqs.values.reduce(0, +) }
}

extension DeviceID: Codable {
    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let d = DeviceID(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a device id: \(s)"))
        }
        self = d
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
