/// The two record types.
public enum RecordType: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case note = 1
    case contact = 2

    public var description: String { self == .note ? "note" : "contact" }
    public init?(name: String) {
        switch name {
        case "note": self = .note
        case "contact": self = .contact
        default: return nil
        }
    }
}

/// What an op does (DESIGN.md §3). The merge meaning of each is in `RecordMerge`.
public enum OpAction: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case create = 1   // a new record of a type (and, for notes, a kind)
    case set = 2      // register write; supersedes at most the one value its author displayed
    case add = 3      // set element, tagged by this op's ref (add-wins)
    case remove = 4   // removes the set-element tags it names
    case delete = 5   // tombstone; names every value and tag the deleter saw
    case resolve = 6  // coordinator: supersedes every survivor of a field (or the tombstones, field "")
    case review = 7   // coordinator: review state of a note
    case erase = 8    // coordinator: drop the values of a record's personal fields everywhere

    public var description: String {
        ["", "create", "set", "add", "remove", "delete", "resolve", "review", "erase"][Int(rawValue)]
    }
}

/// SHA-256(salt ‖ canonical value). What the signature covers in place of the value, so a value
/// can be erased later while the change still verifies.
public struct Commitment: Hashable, Sendable {
    public let bytes: [UInt8]
    public init?(bytes: [UInt8]) { guard bytes.count == 32 else { return nil }; self.bytes = bytes }
}

/// One operation on one record.
public struct Op: Hashable, Sendable {
    public var action: OpAction
    public var recordType: RecordType
    public var record: RecordID
    /// `create` of a note: its kind. `review`: the review state, signed so that policy can tell
    /// a field device's `submitted` from a coordinator's verdict. Empty otherwise.
    public var kind: String
    /// The field written (`set`, `add`, `remove`, `resolve`; "review" for `review`). Empty otherwise;
    /// a `resolve` with an empty field settles a delete/edit conflict by keeping the record.
    public var field: String
    /// For ops that carry a value.
    public var commitment: Commitment?
    /// `set`/`resolve`/`review`: the writes superseded. `remove`: the tags removed.
    /// `delete`: every write and tag the deleter saw. Sorted, no duplicates.
    public var refs: [OpRef]

    public init(action: OpAction, recordType: RecordType, record: RecordID, kind: String = "", field: String = "",
                commitment: Commitment? = nil, refs: [OpRef] = []) {
        self.action = action
        self.recordType = recordType
        self.record = record
        self.kind = kind
        self.field = field
        self.commitment = commitment
        self.refs = Array(Set(refs)).sorted()
    }

    /// Whether this action carries a value beside the change.
    public var carriesValue: Bool {
        switch action {
        case .set, .add, .review: return true
        case .resolve: return !field.isEmpty
        case .create, .remove, .delete, .erase: return false
        }
    }
}

/// A change: the ops one device made in one local transaction, with the header that places it
/// in the device's hash chain. Its canonical bytes are made once by the author (`ChangeCodec`)
/// and then kept byte for byte.
public struct Change: Hashable, Sendable {
    public static let formatVersion: UInt8 = 2

    public var device: DeviceID
    /// 1, 2, 3… per device.
    public var seq: UInt64
    /// The id of this device's change `seq - 1`; zero for `seq == 1`.
    public var prev: ChangeID
    public var hlc: HLC
    /// The author's wall clock (Unix ms) when the change was made, kept apart from the HLC.
    public var wallMillis: UInt64
    public var ops: [Op]

    public init(device: DeviceID, seq: UInt64, prev: ChangeID, hlc: HLC, wallMillis: UInt64, ops: [Op]) {
        self.device = device
        self.seq = seq
        self.prev = prev
        self.hlc = hlc
        self.wallMillis = wallMillis
        self.ops = ops
    }

    public var stamp: Stamp { Stamp(hlc: hlc, device: device) }

    /// The indexes of its ops grouped by the record they touch, records in order of first use:
    /// how a change is applied (and stored) record by record.
    public var opsByRecord: [(record: RecordID, ops: [Int])] {
        var groups: [(record: RecordID, ops: [Int])] = []
        var group: [RecordID: Int] = [:]
        for (i, op) in ops.enumerated() {
            // Most changes write a record's ops together: no lookup while the record stays the same.
            if let last = groups.indices.last, groups[last].record == op.record { groups[last].ops.append(i); continue }
            if let g = group[op.record] { groups[g].ops.append(i) } else { group[op.record] = groups.count; groups.append((op.record, [i])) }
        }
        return groups
    }
}

/// The strict canonical binary form of a change:
/// `version(1) ‖ device(16) ‖ varint seq ‖ prev(32) ‖ hlc(u64 BE) ‖ wall ms(u64 BE) ‖ varint record count ‖
/// records(16 each, in order of first use) ‖ varint op count ‖ ops`, each op `action(1) ‖ record type(1) ‖
/// varint record index` then, by action, field name, review state, commitment(32)
/// and refs (varint count, then change id(32) ‖ varint op index each, sorted).
public enum ChangeCodec {
    public static let maxOps = 1000
    public static let maxRefs = 4096
    public static let maxFieldName = 64
    public static let maxKind = 32
    public static let maxChangeBytes = 4 << 20
    public static let maxSeq = UInt64(Int64.max)

    public static func encode(_ c: Change) -> [UInt8] {
        encode(c) { w, _, commitment in w.raw(commitment.bytes) }
    }

    /// Writes a change, each commitment slot by `slot` (op index, commitment): the signed form
    /// writes the 32 bytes, the wire form what they commit to (`ChangeWire`).
    static func encode(_ c: Change, slot: (inout ByteWriter, Int, Commitment) -> Void) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(90 + c.ops.count * 60)
        w.u8(Change.formatVersion)
        w.raw(c.device.bytes)
        w.varint(c.seq)
        w.raw(c.prev.bytes)
        w.u64(c.hlc.raw)
        w.u64(c.wallMillis)
        // Each record id once: a note's create and its ten writes name it by a one-byte index.
        var table: [RecordID] = []
        var index: [RecordID: Int] = [:]
        for op in c.ops where index[op.record] == nil {
            index[op.record] = table.count
            table.append(op.record)
        }
        w.varint(UInt64(table.count))
        for id in table { w.raw(id.bytes) }
        w.varint(UInt64(c.ops.count))
        for (i, op) in c.ops.enumerated() { encode(op, into: &w, recordIndex: index[op.record]!) { w, c in slot(&w, i, c) } }
        return w.bytes
    }

    /// One op; with `recordIndex` its record as an index into the change's table, else in full.
    package static func encode(_ op: Op, into w: inout ByteWriter, recordIndex: Int? = nil,
                       slot: (inout ByteWriter, Commitment) -> Void = { w, c in w.raw(c.bytes) }) {
        w.u8(op.action.rawValue)
        w.u8(op.recordType.rawValue)
        if let recordIndex { w.varint(UInt64(recordIndex)) } else { w.raw(op.record.bytes) }
        switch op.action {
        case .create:
            w.string(op.kind)
        case .set:
            w.string(op.field)
            slot(&w, op.commitment!)
            refs(op.refs, into: &w)
        case .review:
            w.string(op.field)
            w.string(op.kind)
            slot(&w, op.commitment!)
            refs(op.refs, into: &w)
        case .add:
            w.string(op.field)
            slot(&w, op.commitment!)
        case .remove:
            w.string(op.field)
            refs(op.refs, into: &w)
        case .delete:
            refs(op.refs, into: &w)
        case .resolve:
            w.string(op.field)
            if !op.field.isEmpty { slot(&w, op.commitment!) }
            refs(op.refs, into: &w)
        case .erase:
            break
        }
    }

    static func refs(_ refs: [OpRef], into w: inout ByteWriter) {
        w.varint(UInt64(refs.count))
        for r in refs { w.raw(r.change.bytes); w.varint(UInt64(r.index)) }
    }

    /// Decodes strictly: unknown version, unknown action, oversize counts, non-minimal or
    /// unsorted encodings and trailing bytes are all refused.
    public static func decode(_ bytes: [UInt8]) throws(CoreError) -> Change {
        try decode(bytes) { r, _ throws(CoreError) in Commitment(bytes: try r.raw(32))! }
    }

    /// Reads a change, each commitment slot by `slot` (see `encode(_:slot:)`).
    static func decode(_ bytes: [UInt8], slot: (inout ByteReader, Int) throws(CoreError) -> Commitment) throws(CoreError) -> Change {
        guard bytes.count <= maxChangeBytes else { throw CoreError(.oversize, "change is \(bytes.count) bytes, more than \(maxChangeBytes)") }
        var r = ByteReader(bytes)
        let version = try r.u8()
        guard version == Change.formatVersion else { throw CoreError(.unknownVersion, "change format version \(version) is not known (this build reads \(Change.formatVersion))") }
        let device = DeviceID(bytes: try r.raw(16))!
        let seq = try r.varint()
        let prev = ChangeID(bytes: try r.raw(32))!
        let hlc = HLC(raw: try r.u64())
        let wall = try r.u64()
        let records = try r.count(max: maxOps, what: "record count")
        var table: [RecordID] = []
        table.reserveCapacity(records)
        for _ in 0..<records { table.append(RecordID(bytes: try r.raw(16))!) }
        let n = try r.count(max: maxOps, what: "op count")
        guard n > 0 else { throw CoreError(.malformed, "change has no ops") }
        var ops: [Op] = []
        ops.reserveCapacity(n)
        var used = 0
        for i in 0..<n {
            let op = try decodeOp(&r, readRecord: { r throws(CoreError) in
                // Canonical: records are listed in the order ops first use them, each once.
                let k = try r.count(max: maxOps, what: "record index")
                guard k < records, k <= used else { throw CoreError(.malformed, "op \(i) names record \(k) out of order or beyond the \(records) listed") }
                if k == used { used += 1 }
                return table[k]
            }, slot: { r throws(CoreError) in try slot(&r, i) })
            ops.append(op)
        }
        guard used == records else { throw CoreError(.malformed, "\(records - used) listed record(s) have no op") }
        try r.finish()
        guard seq >= 1 else { throw CoreError(.malformed, "seq 0 is not allowed") }
        // Stores keep seqs as SQL integers (signed 64-bit): a larger one is refused here, once.
        guard seq <= maxSeq else { throw CoreError(.oversize, "seq \(seq) is beyond \(maxSeq)") }
        guard (seq == 1) == prev.isZero else {
            throw CoreError(.forgedSeq, seq == 1 ? "seq 1 must have no prev" : "seq \(seq) has no prev")
        }
        return Change(device: device, seq: seq, prev: prev, hlc: hlc, wallMillis: wall, ops: ops)
    }

    /// One op; its record read by `readRecord` (an index into the change's table, or in full).
    package static func decodeOp(_ r: inout ByteReader,
                         readRecord: (inout ByteReader) throws(CoreError) -> RecordID = { r throws(CoreError) in RecordID(bytes: try r.raw(16))! },
                         slot: (inout ByteReader) throws(CoreError) -> Commitment = { r throws(CoreError) in Commitment(bytes: try r.raw(32))! }) throws(CoreError) -> Op {
        let a = try r.u8()
        guard let action = OpAction(rawValue: a) else { throw CoreError(.malformed, "unknown op action \(a)") }
        let t = try r.u8()
        guard let type = RecordType(rawValue: t) else { throw CoreError(.malformed, "unknown record type \(t)") }
        let record = try readRecord(&r)
        var op = Op(action: action, recordType: type, record: record)
        func field(_ r: inout ByteReader) throws(CoreError) -> String { try r.string(max: maxFieldName, what: "field name") }
        func commitment(_ r: inout ByteReader) throws(CoreError) -> Commitment { try slot(&r) }
        switch action {
        case .create:
            op.kind = try r.string(max: maxKind, what: "kind")
        case .set:
            op.field = try field(&r)
            op.commitment = try commitment(&r)
            op.refs = try refs(&r)
        case .review:
            op.field = try field(&r)
            op.kind = try r.string(max: maxKind, what: "review state")
            op.commitment = try commitment(&r)
            op.refs = try refs(&r)
        case .add:
            op.field = try field(&r)
            op.commitment = try commitment(&r)
        case .remove:
            op.field = try field(&r)
            op.refs = try refs(&r)
        case .delete:
            op.refs = try refs(&r)
        case .resolve:
            op.field = try field(&r)
            if !op.field.isEmpty { op.commitment = try commitment(&r) }
            op.refs = try refs(&r)
        case .erase:
            break
        }
        guard action == .create || action == .delete || action == .erase || !op.field.isEmpty || action == .resolve else {
            throw CoreError(.malformed, "\(action) op has no field")
        }
        return op
    }

    static func refs(_ r: inout ByteReader) throws(CoreError) -> [OpRef] {
        let n = try r.count(max: maxRefs, what: "reference count")
        var out: [OpRef] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let change = ChangeID(bytes: try r.raw(32))!
            let index = try r.varint()
            guard index < UInt64(maxOps) else { throw CoreError(.oversize, "op index \(index) is beyond \(maxOps)") }
            let ref = OpRef(change: change, index: UInt16(index))
            if let last = out.last, !(last < ref) { throw CoreError(.malformed, "references are not sorted and unique") }
            out.append(ref)
        }
        return out
    }
}

extension ChangeCodec {
    /// One op alone, in the change encoding: how the SQLite store keeps applied ops per record.
    public static func encodeOp(_ op: Op) -> [UInt8] {
        var w = ByteWriter()
        encode(op, into: &w)
        return w.bytes
    }

    public static func decodeOp(_ bytes: [UInt8]) throws(CoreError) -> Op {
        var r = ByteReader(bytes)
        let op = try decodeOp(&r)
        try r.finish()
        return op
    }
}
