/// THE MERGE RULE (DESIGN.md §5) lives in this file.
///
/// A record's state is a pure function of the *set* of ops applied to it: `RecordOps.insert`
/// only adds to sets and maps keyed by op ref, and `materialize` reads them in a fixed order.
/// So any delivery order, with any duplicates, gives the same `RecordView` on every replica.
///
/// - Register fields are multi-value registers: a write supersedes the refs it names; every
///   write not superseded survives. One survivor is clean; several are a conflict, shown as the
///   survivor with the highest (HLC, device, op index) and listed until a `resolve` supersedes
///   them all. An ordinary `set` names only the value its author displayed (Policy enforces it).
/// - Set fields are add-wins observed-remove sets: an element lives while one of its add tags
///   is not removed; a remove only removes the tags its author saw.
/// - `delete` is a tombstone naming what the deleter saw. Content it did not see (a concurrent
///   write or add) keeps the record and raises a delete/edit conflict.
/// - `erase` makes every replica drop the values of the record's personal fields for good.
/// - Endings never cross fields: a ref ends an op only when the ending op writes the same field
///   as the op it names (a record-level resolve and a tombstone both have the empty field). An
///   op naming another field's or another record's ops ends nothing there, so no device can
///   supersede what it was not shown, whatever refs it signs. (Types never mix: `Policy` refuses
///   an op whose type is not the one its record's id names.)

/// One op as applied: where it came from and its value, when the replica holds it.
public struct AppliedOp: Hashable, Sendable {
    public let ref: OpRef
    public let op: Op
    public let hlc: HLC
    public let author: DeviceID
    public let wallMillis: UInt64
    /// Nil when the op carries no value, or its value was erased.
    public var value: JSONValue?

    public init(ref: OpRef, op: Op, hlc: HLC, author: DeviceID, wallMillis: UInt64, value: JSONValue?) {
        self.ref = ref
        self.op = op
        self.hlc = hlc
        self.author = author
        self.wallMillis = wallMillis
        self.value = value
    }

    /// The total order of writes: (HLC, device id, op index).
    public static func precedes(_ a: AppliedOp, _ b: AppliedOp) -> Bool {
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        if a.author != b.author { return a.author < b.author }
        return a.ref < b.ref
    }

    /// The author's wall clock and the HLC disagree by more than the skew threshold.
    public var clockSkewed: Bool {
        let h = hlc.millis
        let d = h > wallMillis ? h - wallMillis : wallMillis - h
        return d > HybridClock.skewThresholdMillis
    }
}

/// An op ref as ended by an op on `field`: it ends the op it names only if that op is on the
/// same field (see the merge rule above).
public struct EndedRef: Hashable, Sendable {
    public let ref: OpRef
    public let field: String
    public init(_ ref: OpRef, field: String) { self.ref = ref; self.field = field }
}

/// How an op ends the ops it names: a write (set, review, resolve) supersedes them, a remove
/// removes tags. A delete's refs end nothing: they say what its author saw.
public enum Ending: UInt8, Sendable {
    case supersedes = 0, removes = 1
}

extension Op {
    /// How this op ends the ops it names, if it does.
    public var ending: Ending? {
        switch action {
        case .set, .review, .resolve: .supersedes
        case .remove: .removes
        case .create, .add, .delete, .erase: nil
        }
    }

    /// What can end this op: writes and tombstones are superseded, tags removed. Creates,
    /// removes, erasures and a record-level resolve count for good.
    public var endedBy: Ending? {
        switch action {
        case .set, .review, .delete: .supersedes
        case .resolve: field.isEmpty ? nil : .supersedes
        case .add: .removes
        case .create, .remove, .erase: nil
        }
    }
}

/// Every op applied to one record. Insertion is commutative and idempotent.
public struct RecordOps: Sendable {
    public let id: RecordID
    public private(set) var creates: [OpRef: AppliedOp] = [:]
    public private(set) var writes: [String: [OpRef: AppliedOp]] = [:]
    public private(set) var adds: [String: [OpRef: AppliedOp]] = [:]
    public private(set) var removed: Set<EndedRef> = []
    public private(set) var superseded: Set<EndedRef> = []
    public private(set) var tombstones: [OpRef: AppliedOp] = [:]
    public private(set) var erasures: [OpRef: AppliedOp] = [:]
    /// The newest op of any kind: when the record last changed.
    public private(set) var lastChanged: HLC = .zero

    public init(id: RecordID) { self.id = id }

    public var isErased: Bool { !erasures.isEmpty }

    public mutating func insert(_ e: AppliedOp, personalFields: Set<String>) {
        var e = e
        if isErased, personalFields.contains(e.op.field) { e.value = nil }
        if e.hlc > lastChanged { lastChanged = e.hlc }
        switch e.op.action {
        case .create:
            creates[e.ref] = e
        case .set, .review:
            writes[e.op.field, default: [:]][e.ref] = e
            for r in e.op.refs { superseded.insert(EndedRef(r, field: e.op.field)) }
        case .resolve:
            // Record-level (field ""): keeps the record; the tombstones it names stop counting.
            if !e.op.field.isEmpty { writes[e.op.field, default: [:]][e.ref] = e }
            for r in e.op.refs { superseded.insert(EndedRef(r, field: e.op.field)) }
        case .add:
            adds[e.op.field, default: [:]][e.ref] = e
        case .remove:
            for r in e.op.refs { removed.insert(EndedRef(r, field: e.op.field)) }
        case .delete:
            tombstones[e.ref] = e
        case .erase:
            erasures[e.ref] = e
            dropValues(of: personalFields)
        }
    }

    mutating func dropValues(of fields: Set<String>) {
        for f in fields {
            if var w = writes[f] { for k in w.keys { w[k]!.value = nil }; writes[f] = w }
            if var a = adds[f] { for k in a.keys { a[k]!.value = nil }; adds[f] = a }
        }
    }

    // MARK: Ended ops
    // An op superseded or removed never shows again, whatever arrives later: `materialize`
    // reads only survivors, live tags and live tombstones. So a store may load just the ops that
    // still count (a note edited every day would otherwise load its whole history on each
    // edit) provided it also tells `RecordOps` what ended ops it did not load, below.

    /// Whether the op can still show in `materialize`.
    public func stillCounts(_ e: AppliedOp) -> Bool {
        switch e.op.endedBy {
        case nil: true
        case .supersedes: !superseded.contains(EndedRef(e.ref, field: e.op.field))
        case .removes: !removed.contains(EndedRef(e.ref, field: e.op.field))
        }
    }

    /// Whether a store that keeps what ops ended (and loads only what this says) must load
    /// the op to materialise the record: an op that still counts, except a remove or a
    /// record-level resolve, whose whole effect is what they ended.
    public func mustLoad(_ e: AppliedOp) -> Bool {
        switch e.op.action {
        case .remove: false
        case .resolve where e.op.field.isEmpty: false
        default: stillCounts(e)
        }
    }

    /// Records that an op on `field`, not loaded here, ended `ref`.
    public mutating func ended(_ ref: OpRef, field: String, by how: Ending) {
        switch how {
        case .supersedes: superseded.insert(EndedRef(ref, field: field))
        case .removes: removed.insert(EndedRef(ref, field: field))
        }
    }

    /// Raises `lastChanged` to the time of ops not loaded here.
    public mutating func changed(at hlc: HLC) { if hlc > lastChanged { lastChanged = hlc } }

    /// A loaded op by its ref.
    public func applied(_ ref: OpRef) -> AppliedOp? {
        if let e = creates[ref] ?? tombstones[ref] ?? erasures[ref] { return e }
        for w in writes.values { if let e = w[ref] { return e } }
        for a in adds.values { if let e = a[ref] { return e } }
        return nil
    }

    /// The create that counts: the earliest, so two creates of one id agree everywhere.
    public var header: AppliedOp? { creates.values.min(by: AppliedOp.precedes) }

    /// Register survivors of a field, winner first.
    public func survivors(_ field: String, type: RecordType) -> [AppliedOp] {
        guard let w = writes[field] else { return [] }
        if w.count == 1, let only = w.values.first {  // most fields: no sort, no filter
            return !superseded.contains(EndedRef(only.ref, field: field)) && only.op.recordType == type ? [only] : []
        }
        return w.values.filter { !superseded.contains(EndedRef($0.ref, field: field)) && $0.op.recordType == type }
            .sorted { AppliedOp.precedes($1, $0) }
    }

    /// What a record shows but its review: every surviving write of its other fields and every
    /// live tag. A review names these (with the review survivors it supersedes): what its author
    /// saw, as a delete does.
    public func contentRefs(type: RecordType) -> [OpRef] {
        var refs: [OpRef] = []
        for name in writes.keys where name != "review" { refs += survivors(name, type: type).map(\.ref) }
        for name in adds.keys { refs += liveTags(name, type: type).map(\.ref) }
        return refs
    }

    /// Review states that stand only while the report stays as its reviewer saw it.
    static let reviewedStates: Set<String> = ["submitted", "approved"]

    /// The review as shown: a submission or approval whose review did not see everything the
    /// record shows now (an edit after it, or one made offline before it that arrived later)
    /// shows as `draft`, with `changed_since` the state it had. Judged from the op set alone, so
    /// every replica shows the same, whatever order the ops came in.
    func shownReview(_ s: [AppliedOp], type: RecordType) -> FieldView {
        let view = FieldView(merge: .register, value: s[0].value, survivors: s.map(Survivor.init), elements: [])
        guard let state = s[0].value?["state"]?.stringValue, Self.reviewedStates.contains(state) else { return view }
        let seen = Set(s[0].op.refs)
        guard contentRefs(type: type).contains(where: { !seen.contains($0) }) else { return view }
        var value: [String: JSONValue] = ["state": "draft", "changed_since": .string(state)]
        if let comment = s[0].value?["comment"] { value["comment"] = comment }
        return FieldView(merge: .register, value: .object(value), survivors: view.survivors, elements: [])
    }

    /// Live add tags of a set field, in op order.
    public func liveTags(_ field: String, type: RecordType) -> [AppliedOp] {
        guard let a = adds[field] else { return [] }
        return a.values.filter { !removed.contains(EndedRef($0.ref, field: field)) && $0.op.recordType == type }.sorted(by: AppliedOp.precedes)
    }

    /// Tombstones no record-level resolve has superseded.
    public var liveTombstones: [AppliedOp] {
        tombstones.values.filter { !superseded.contains(EndedRef($0.ref, field: "")) }.sorted(by: AppliedOp.precedes)
    }

    /// Builds the record as every replica shows it. Nil until its `create` has arrived.
    public func materialize(schema: RecordSchema) -> RecordView? {
        guard let h = header else { return nil }
        let type = h.op.recordType
        var fields: [String: FieldView] = [:]
        // What a delete must have seen to be clean: collected only when a tombstone counts.
        let tombs = liveTombstones
        var content: [OpRef] = []
        for (name, _) in writes {
            let s = survivors(name, type: type)
            guard !s.isEmpty else { continue }
            if !tombs.isEmpty { content += s.map(\.ref) }
            // A field cleared (`--unset`: a write of null) and not in conflict is not shown.
            if s.count == 1, case .null? = s[0].value, name != "review" { continue }
            fields[name] = name == "review" ? shownReview(s, type: type)
                : FieldView(merge: .register, value: s[0].value, survivors: s.map(Survivor.init), elements: [])
        }
        for (name, _) in adds {
            let live = liveTags(name, type: type)
            guard !live.isEmpty else { continue }
            if !tombs.isEmpty { content += live.map(\.ref) }
            // One element per distinct value; erased values stay as one erased element per tag.
            var byValue: [[UInt8]: SetElement] = [:]
            var erased: [SetElement] = []
            for t in live {
                if let v = t.value {
                    byValue[v.canonicalBytes, default: SetElement(value: v, tags: [])].tags.append(t.ref)
                } else {
                    erased.append(SetElement(value: nil, tags: [t.ref]))
                }
            }
            let elements = byValue.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map(\.value) + erased
            fields[name] = FieldView(merge: .set, value: nil, survivors: [], elements: elements)
        }
        var deleteConflict: DeleteConflict?
        var deleted = false
        if !tombs.isEmpty {
            let seen = Set(tombs.flatMap(\.op.refs))
            let unseen = content.filter { !seen.contains($0) }
            if unseen.isEmpty {
                deleted = true
            } else {
                deleteConflict = DeleteConflict(tombstones: tombs.map(Survivor.init), unseenEdits: unseen.sorted())
            }
        }
        let erasure = erasures.values.min(by: AppliedOp.precedes)
        return RecordView(
            id: id, type: type, kind: h.op.kind.isEmpty ? nil : h.op.kind,
            createdBy: h.author, createdAt: h.hlc, lastChanged: lastChanged,
            fields: fields, deleted: deleted, deleteConflict: deleteConflict,
            erasedBy: erasure.map(Survivor.init)
        )
    }
}

/// One surviving write (or tombstone), with who wrote it and when.
public struct Survivor: Hashable, Sendable {
    public let ref: OpRef
    public let value: JSONValue?
    public let author: DeviceID
    public let hlc: HLC
    public let wallMillis: UInt64
    public let clockSkewed: Bool

    public init(_ e: AppliedOp) {
        ref = e.ref
        value = e.value
        author = e.author
        hlc = e.hlc
        wallMillis = e.wallMillis
        clockSkewed = e.clockSkewed
    }
}

public struct SetElement: Hashable, Sendable {
    /// Nil when erased.
    public var value: JSONValue?
    public var tags: [OpRef]
}

public struct FieldView: Hashable, Sendable {
    public let merge: MergeType
    /// Register: the displayed value (the winner); nil when erased.
    public let value: JSONValue?
    /// Register: every survivor, winner first. More than one is a conflict.
    public let survivors: [Survivor]
    /// Set: the live elements, in canonical order.
    public let elements: [SetElement]

    public var inConflict: Bool { survivors.count > 1 }
}

public struct DeleteConflict: Hashable, Sendable {
    public let tombstones: [Survivor]
    /// Writes and adds the deleters did not see.
    public let unseenEdits: [OpRef]
}

/// A record as shown: the same on every replica that holds the same set of changes.
public struct RecordView: Hashable, Sendable {
    public let id: RecordID
    public let type: RecordType
    public let kind: String?
    public let createdBy: DeviceID
    public let createdAt: HLC
    public let lastChanged: HLC
    public let fields: [String: FieldView]
    /// Tombstoned with nothing unseen: gone from listings.
    public let deleted: Bool
    public let deleteConflict: DeleteConflict?
    public let erasedBy: Survivor?

    public var conflictedFields: [String] { fields.compactMap { $0.value.inConflict ? $0.key : nil }.sorted() }
    public var hasConflict: Bool { deleteConflict != nil || fields.values.contains { $0.inConflict } }

    /// The plain JSON shape of the record's current values (the winner of each register,
    /// the elements of each set), as listings and exports show it.
    public var values: [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for (name, f) in fields {
            switch f.merge {
            case .register: out[name] = f.value ?? .null
            case .set: out[name] = .array(f.elements.map { $0.value ?? .null })
            }
        }
        return out
    }
}
