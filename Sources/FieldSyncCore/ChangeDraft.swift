/// Ops being gathered for one local change. Each method reads the record as the author sees it
/// and names exactly what the op supersedes, so the merge rules hold by construction.
public struct ChangeDraft: Sendable {
    public private(set) var ops: [Op] = []
    /// Keyed by op position; a draft may hold more ops than one change (`chunks` splits it).
    private var valuesByIndex: [Int: OpValue] = [:]

    /// The values of a draft that fits in one change, keyed as the change's ops are. They are
    /// not salted yet (an empty salt), so their `commitment` means nothing until signing.
    public var values: [UInt16: OpValue] {
        precondition(ops.count <= ChangeCodec.maxOps, "split the draft with chunks() first")
        return Dictionary(uniqueKeysWithValues: valuesByIndex.map { (UInt16($0.key), $0.value) })
    }

    public init() {}

    public var isEmpty: Bool { ops.isEmpty }

    /// A value waits unsalted and its op uncommitted: signing salts every value of a change from
    /// one fresh seed and only then commits to it (`SignedChange.author`). A salt drawn here was
    /// thrown away, and drawing it a tenth of a `note add`.
    mutating func append(_ op: Op, value: JSONValue? = nil) {
        if let value { valuesByIndex[ops.count] = OpValue(salt: [], value: value) }
        ops.append(op)
    }

    public mutating func create(_ id: RecordID, type: RecordType, kind: String?) {
        append(Op(action: .create, recordType: type, record: id, kind: kind ?? ""))
    }

    /// Register write: supersedes the value the author sees displayed (the winner), only.
    public mutating func set(_ field: String, to value: JSONValue, on record: RecordOps, type: RecordType) {
        let winner = record.survivors(field, type: type).first
        append(Op(action: .set, recordType: type, record: record.id, field: field, refs: winner.map { [$0.ref] } ?? []), value: value)
    }

    /// A write to a record created in this same draft: nothing to supersede.
    public mutating func set(_ field: String, to value: JSONValue, onNew id: RecordID, type: RecordType) {
        append(Op(action: .set, recordType: type, record: id, field: field), value: value)
    }

    public mutating func add(_ field: String, _ value: JSONValue, record id: RecordID, type: RecordType) {
        append(Op(action: .add, recordType: type, record: id, field: field), value: value)
    }

    /// Removes every live tag of `value` the author sees. Returns false when the value is absent.
    @discardableResult
    public mutating func remove(_ field: String, _ value: JSONValue, on record: RecordOps, type: RecordType) -> Bool {
        let tags = record.liveTags(field, type: type).filter { $0.value == value }.map(\.ref)
        guard !tags.isEmpty else { return false }
        append(Op(action: .remove, recordType: type, record: record.id, field: field, refs: tags))
        return true
    }

    /// Tombstone naming every survivor and live tag the author sees.
    public mutating func delete(_ record: RecordOps, type: RecordType) {
        var seen: [OpRef] = []
        for f in record.writes.keys { seen += record.survivors(f, type: type).map(\.ref) }
        for f in record.adds.keys { seen += record.liveTags(f, type: type).map(\.ref) }
        append(Op(action: .delete, recordType: type, record: record.id, refs: seen))
    }

    /// Coordinator: one value for a field, superseding every survivor.
    public mutating func resolve(_ field: String, to value: JSONValue, on record: RecordOps, type: RecordType) {
        let all = record.survivors(field, type: type).map(\.ref)
        append(Op(action: .resolve, recordType: type, record: record.id, field: field, refs: all), value: value)
    }

    /// Coordinator: settles a delete/edit conflict by keeping the record.
    public mutating func keepRecord(_ record: RecordOps, type: RecordType) {
        append(Op(action: .resolve, recordType: type, record: record.id, refs: record.liveTombstones.map(\.ref)))
    }

    /// Review state of a note (a field device's `submitted`, a coordinator's verdict), superseding
    /// every earlier review survivor. The state is in the signed op as well as in the value.
    public mutating func review(_ state: String, comment: String?, on record: RecordOps) {
        var v: [String: JSONValue] = ["state": .string(state)]
        if let comment { v["comment"] = .string(comment) }
        // The review states it supersedes, and what it covers: a later edit returns the report to
        // draft (`RecordOps.shownReview`).
        let refs = record.survivors("review", type: .note).map(\.ref) + record.contentRefs(type: .note)
        append(Op(action: .review, recordType: .note, record: record.id, kind: state, field: "review", refs: refs), value: .object(v))
    }

    public mutating func erase(_ id: RecordID) {
        append(Op(action: .erase, recordType: .contact, record: id))
    }
}

extension ChangeDraft {
    /// About how many bytes a change made by `chunks` carries at most. A change travels whole
    /// (the first of an upload always goes), so on a link of 1 kB/s this is about a minute,
    /// far inside the server's transfer limit, and far below `ChangeCodec.maxChangeBytes`: an
    /// import of long notes as 1,000-op changes made changes of 5 MB that no server accepts.
    public static let chunkBytes = 64 << 10

    /// Splits a large draft into drafts of at most `maxOps` ops and about `maxBytes` bytes, for
    /// imports bigger than one change should be; the store commits them in one transaction. A
    /// record's ops stay in one change unless they alone are more than one may hold, so a
    /// laptop that has pulled only part of an import sees whole notes.
    public func chunks(maxOps: Int = ChangeCodec.maxOps, maxBytes: Int = chunkBytes) -> [ChangeDraft] {
        let sizes = ops.indices.map { Self.estimatedBytes(ops[$0], value: valuesByIndex[$0]) }
        guard ops.count > maxOps || sizes.reduce(0, +) > maxBytes else { return [self] }
        var starts = [0]
        var bytes = 0
        var recordStart = 0
        for i in ops.indices {
            if i > 0 && ops[i].record != ops[i - 1].record { recordStart = i }
            let start = starts[starts.count - 1]
            if i > start && (i - start == maxOps || bytes + sizes[i] > maxBytes) {
                // Cut before this op's record when the part holds other records before it.
                let cut = recordStart > start ? recordStart : i
                starts.append(cut)
                bytes = sizes[cut..<i].reduce(0, +)
            }
            bytes += sizes[i]
        }
        return starts.indices.map { n in
            var d = ChangeDraft()
            for i in starts[n]..<(n + 1 < starts.count ? starts[n + 1] : ops.count) {
                if let v = valuesByIndex[i] { d.valuesByIndex[d.ops.count] = v }
                d.ops.append(ops[i])
            }
            return d
        }
    }

    /// What an op and its value add to a change's envelope, about: the op as `ChangeCodec`
    /// writes it (its record id counted whole, a commitment for a value) and the value with its
    /// salt and length.
    static func estimatedBytes(_ op: Op, value: OpValue?) -> Int {
        24 + op.field.utf8.count + op.kind.utf8.count + 34 * op.refs.count + (value.map { 60 + $0.canonical.count } ?? 0)
    }
}
