#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import FieldSyncCore

// The hostile half of the convergence scenarios (issue 23): enrolled devices that sign whatever
// well-formed ops they like, and the oracle that judges what honest devices wrote afterwards.

/// Everything a scenario made, honest or hostile: what hostile devices harvest their targets
/// from, and what the invariants judge.
struct Ledger {
    struct Made {
        let ref: OpRef
        let op: Op
    }

    /// Every op made so far, in order: hostile devices name any of them.
    var made: [Made] = []
    /// Indexes into `made`, by the record each op names.
    var madeIn: [RecordID: [Int]] = [:]
    /// Every record id named so far, in order.
    var records: [RecordID] = []
    /// Records an honest device created (its create not refused), with the type it created.
    var honestType: [RecordID: RecordType] = [:]
    var honestRecords: [RecordID] = []
    /// Honest ops that something may end (register writes, set adds, tombstones), applied (not
    /// refused) and written on an honest record as the type it was created.
    var honestOps: [Made] = []
    /// The records each change writes.
    var touched: [ChangeID: [RecordID]] = [:]
    var roles: [DeviceID: Role] = [:]
    var hostile: Set<DeviceID> = []
    var hostileChanges: [SignedChange] = []
    /// Whether hostile devices take part: else there is nothing to harvest for.
    var harvest = false

    mutating func note(_ c: SignedChange, honest: Bool, refused: Bool) {
        var records: [RecordID] = []
        for (i, op) in c.change.ops.enumerated() {
            let m = Made(ref: OpRef(change: c.id, index: UInt16(i)), op: op)
            if harvest {
                if madeIn[op.record] == nil { self.records.append(op.record) }
                madeIn[op.record, default: []].append(made.count)
                made.append(m)
            }
            if records.last != op.record && !records.contains(op.record) { records.append(op.record) }
            guard honest && !refused else { continue }
            if op.action == .create {
                if honestType[op.record] == nil { honestType[op.record] = op.recordType; honestRecords.append(op.record) }
            } else if honestType[op.record] == op.recordType, HonestKind(op) != nil {
                honestOps.append(m)
            }
        }
        touched[c.id] = records
        if !honest { hostileChanges.append(c) }
    }
}

/// What the hostile devices did over a run: evidence that their ops reach the merge.
struct HostileStats: Sendable {
    var scenarios = 0
    var withHostile = 0
    var changes = 0
    var refused = 0
    /// Honest writes, tags and tombstones ended by a hostile device's legitimate op.
    var honestEnded = 0
    /// Hostile creates of ids another device made, refused (without which (g) would fail).
    var foreignCreates = 0

    mutating func add(_ o: HostileStats) {
        scenarios += o.scenarios; withHostile += o.withHostile; changes += o.changes; refused += o.refused
        honestEnded += o.honestEnded; foreignCreates += o.foreignCreates
    }

    var summary: String {
        "\(withHostile) of \(scenarios) with hostile devices: \(changes) hostile changes, \(refused) refused by policy; "
            + "\(honestEnded) honest values ended by legitimate hostile ops; \(foreignCreates) creates of ids another device made refused"
    }
}

/// What an honest op is, for what may end it.
enum HonestKind {
    case write, tag, tombstone

    init?(_ op: Op) {
        switch op.action {
        case .set, .review: self = .write
        case .resolve where !op.field.isEmpty: self = .write
        case .add: self = .tag
        case .delete: self = .tombstone
        case .create, .remove, .erase, .resolve: return nil
        }
    }
}

/// An enrolled device whose key signs anything well-formed.
struct HostileDevice {
    let key: DeviceKey
    let entry: RosterEntry
    var chain: [SignedChange] = []
    var budget: Int
    var clockOffset: Int64

    init(_ rng: inout SeededRNG, name: String) {
        // Seeded keys: the scenario replays from its seed, signatures included (Ed25519 is deterministic).
        var raw: [UInt8] = []
        for _ in 0..<4 { let w = rng.next(); for s in stride(from: 0, to: 64, by: 8) { raw.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        key = try! DeviceKey(rawRepresentation: raw)  // any 32 bytes are an Ed25519 seed
        let role = Role.allCases.randomElement(using: &rng)!
        entry = RosterEntry(publicKey: key.publicKey, name: name, role: role, enrolledAtMillis: 0)
        budget = Int.random(in: 2...10, using: &rng)
        clockOffset = [Int64(0), 0, -3 * Int64(day), 3 * Int64(day)].randomElement(using: &rng)!
    }

    static let noteKinds = RecordSchema.standard.kinds(of: .note)
    /// Every field either type has (any kind), the review field, and one neither has.
    static let anyField: [String] = {
        var all = Set<String>(["zz_no_such_field", "review"])
        for t in RecordType.allCases {
            all.formUnion(RecordSchema.standard.fieldNames(type: t, kind: nil))
            for k in RecordSchema.standard.kinds(of: t) { all.formUnion(RecordSchema.standard.fieldNames(type: t, kind: k)) }
        }
        return all.sorted()
    }()
    static let values: [JSONValue] = ["h0", "h1", .int(Int64.max), .int(-1), .null, .bool(true), .array([]), .object(["x": "y"]), "suspected"]
    static let reviewStates = ["submitted", "approved", "rejected", "draft"]

    /// Signs the device's next change: 1 to 8 ops, sneaky or blatant. Through the real path: the values
    /// salted from a seed, the canonical bytes signed with the device's key, then read back as a
    /// receiver reads them (strict decoding, each value checked against its commitment).
    mutating func next(now: UInt64, ledger: Ledger, rng: inout SeededRNG) throws -> SignedChange {
        var ops: [Op] = []
        var values: [Int: JSONValue] = [:]
        // Half the changes sneaky: a change is refused whole for one forbidden op, and blatant ops
        // are forbidden nearly always, so only sneaky changes reach the merge.
        let sneaky = Bool.random(using: &rng)
        for _ in 0..<Int.random(in: 1...8, using: &rng) {
            let (op, value) = makeOp(sneaky: sneaky, ledger: ledger, rng: &rng)
            if let value { values[ops.count] = value }
            ops.append(op)
        }
        var seed: [UInt8] = []
        for _ in 0..<2 { let w = rng.next(); for s in stride(from: 0, to: 64, by: 8) { seed.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        var salted: [UInt16: OpValue] = [:]
        for (i, v) in values {
            let value = OpValue(salt: OpValue.salt(seed: seed, index: UInt16(i)), value: v)
            salted[UInt16(i)] = value
            ops[i].commitment = value.commitment
        }
        let wall = UInt64(Int64(now) + clockOffset)
        let change = Change(device: key.deviceID, seq: UInt64(chain.count) + 1, prev: chain.last?.id ?? .zero,
                            hlc: Self.hlc(wall: wall, rng: &rng), wallMillis: [wall, wall, 0, .max].randomElement(using: &rng)!, ops: ops)
        let bytes = ChangeCodec.encode(change)
        let signed = try SignedChange(bytes: bytes, signature: key.sign(bytes, domain: .change), values: salted, seed: seed)
        chain.append(signed)
        budget -= 1
        return signed
    }

    /// Extreme readings half the time: 0, 1, the top of the 64 bits and of the 48-bit milliseconds,
    /// and readings around the sender's wall clock, some just inside or past the skew and lead limits.
    static func hlc(wall: UInt64, rng: inout SeededRNG) -> HLC {
        let top48: UInt64 = 0xFFFF_FFFF_FFFF
        let hour: UInt64 = 3_600_000
        switch Int.random(in: 0..<14, using: &rng) {
        case 0: return HLC(raw: 0)
        case 1: return HLC(raw: 1)
        case 2: return HLC(raw: .max)
        case 3: return HLC(millis: top48, counter: 0)
        case 4: return HLC(millis: top48 - 1, counter: .max)
        case 5: return HLC(millis: wall + HybridClock.maxLeadMillis - hour, counter: 0)
        case 6: return HLC(millis: wall + HybridClock.maxLeadMillis + hour, counter: .max)
        case 7: return HLC(millis: wall + 10 * day, counter: 0)
        case 8: return HLC(millis: wall + HybridClock.skewThresholdMillis + 1, counter: 0)
        case 9: return HLC(millis: wall - day, counter: 0)
        case 10: return HLC(millis: wall, counter: .max)
        default: return HLC(millis: wall, counter: UInt16.random(in: 0...3, using: &rng))
        }
    }

    /// A register or set field of the type, as the schema has them (any kind's; not `review`).
    static let fields: [RecordType: (register: [String], set: [String])] = Dictionary(uniqueKeysWithValues: RecordType.allCases.map { t in
        var names = Set(RecordSchema.standard.fieldNames(type: t, kind: nil))
        for k in RecordSchema.standard.kinds(of: t) { names.formUnion(RecordSchema.standard.fieldNames(type: t, kind: k)) }
        let specs = names.sorted().compactMap { n in RecordSchema.standard.field(n, type: t, kind: nil).map { (n, $0) } }
        return (t, (specs.filter { $0.1.merge == .register && $0.1.writtenBy == nil }.map(\.0), specs.filter { $0.1.merge == .set }.map(\.0)))
    })

    /// One op. A sneaky one passes policy (its record's own type, a type the role writes, a field
    /// the type has, an action the role may take), so only its refs are hostile: it reaches the
    /// merge. Any other is anything the codec carries.
    func makeOp(sneaky: Bool, ledger: Ledger, rng: inout SeededRNG) -> (Op, JSONValue?) {
        let role = entry.role
        func writable(_ id: RecordID) -> Bool {
            role == .coordinator || (ledger.honestType[id] ?? id.type) == (role == .press ? .contact : .note)
        }
        // The record: mostly an honest one, else any id seen so far, else a new id (ops on a
        // record never created), half of those with the other type's bit.
        var record: RecordID?
        let r = Int.random(in: 0..<10, using: &rng)
        if r < 7 {
            record = sneaky ? ledger.honestRecords.filter(writable).randomElement(using: &rng) : ledger.honestRecords.randomElement(using: &rng)
        } else if r < 9 {
            record = sneaky ? ledger.records.filter(writable).randomElement(using: &rng) : ledger.records.randomElement(using: &rng)
        }
        // A new id: the device's own, or (blatant, a fifth) one marked as another device's.
        let maker = !sneaky && Int.random(in: 0..<5, using: &rng) == 0
            ? DeviceID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })! : entry.device
        let id = record ?? RecordID.make(
            sneaky && role != .coordinator ? (role == .press ? .contact : .note) : (Bool.random(using: &rng) ? .note : .contact),
            by: maker, unixMillis: baseMillis, using: &rng)
        let own = ledger.madeIn[id] ?? []
        // The type claimed: the record's own, or (a third of blatant ops) the other.
        let trueType = ledger.honestType[id] ?? id.type
        let type: RecordType = !sneaky && Int.random(in: 0..<3, using: &rng) == 0 ? (trueType == .note ? .contact : .note) : trueType
        // The field: one the record has ops on, or any field (sneaky: of the type, of the merge the action needs).
        var field = HostileDevice.anyField.randomElement(using: &rng)!
        if Bool.random(using: &rng), let i = own.randomElement(using: &rng), !ledger.made[i].op.field.isEmpty { field = ledger.made[i].op.field }
        func sneakyField(set: Bool) -> String {
            let pool = set ? Self.fields[type]!.set : Self.fields[type]!.register
            return pool.contains(field) ? field : pool.randomElement(using: &rng)!
        }

        /// Refs: ops of the record on other fields (the attack), on this field, any op at all, or
        /// every op of the record.
        func refs(max: Int) -> [OpRef] {
            let count = Int.random(in: 1...max, using: &rng)
            var pool: [Int]
            switch Int.random(in: 0..<20, using: &rng) {
            case 0..<8: pool = own.filter { ledger.made[$0].op.field != field }
            case 8..<13: pool = own.filter { ledger.made[$0].op.field == field }
            case 13..<17: return (0..<count).compactMap { _ in ledger.made.randomElement(using: &rng)?.ref }
            default: return Array(own.map { ledger.made[$0].ref }.suffix(200))
            }
            if pool.isEmpty { pool = own }
            return (0..<count).compactMap { _ in pool.randomElement(using: &rng).map { ledger.made[$0].ref } }
        }
        let value = Self.values.randomElement(using: &rng)!
        var roll = Int.random(in: 0..<100, using: &rng)
        if sneaky {
            // Only what the role may do: a resolve, review verdict or erase it may not becomes a set.
            if (70..<82).contains(roll) && role != .coordinator { roll = 12 }
            if (82..<92).contains(roll) && type != .note { roll = 12 }
            if roll >= 92 && (role != .coordinator || type != .contact) { roll = 56 }
        }
        switch roll {
        case 0..<12:
            // Over an existing id (either type, any HLC), or a new one.
            let kind = type == .note ? (!sneaky && Int.random(in: 0..<8, using: &rng) == 0 ? "zz" : Self.noteKinds.randomElement(using: &rng)!)
                                     : (!sneaky && Int.random(in: 0..<8, using: &rng) == 0 ? "survey" : "")
            return (Op(action: .create, recordType: type, record: id, kind: kind), nil)
        case 12..<34:
            if sneaky { field = sneakyField(set: false) }
            return (Op(action: .set, recordType: type, record: id, field: field, refs: refs(max: !sneaky && Int.random(in: 0..<5, using: &rng) == 0 ? 3 : 1)), value)
        case 34..<42:
            if sneaky { field = sneakyField(set: true) }
            return (Op(action: .add, recordType: type, record: id, field: field), value)
        case 42..<56:
            if sneaky { field = sneakyField(set: true) }
            return (Op(action: .remove, recordType: type, record: id, field: field, refs: refs(max: 3)), nil)
        case 56..<70:
            return (Op(action: .delete, recordType: type, record: id, refs: refs(max: 8)), nil)
        case 70..<82:
            if Int.random(in: 0..<5, using: &rng) < 2 {
                return (Op(action: .resolve, recordType: type, record: id, refs: refs(max: 4)), nil)  // record-level: keeps it
            }
            if sneaky { field = sneakyField(set: false) }
            return (Op(action: .resolve, recordType: type, record: id, field: field, refs: refs(max: 4)), value)
        case 82..<92:
            let state = sneaky && role != .coordinator ? "submitted" : Self.reviewStates.randomElement(using: &rng)!
            let f = !sneaky && Int.random(in: 0..<5, using: &rng) == 0 ? field : "review"
            return (Op(action: .review, recordType: type, record: id, kind: state, field: f, refs: refs(max: 2)), .object(["state": .string(state)]))
        default:
            return (Op(action: .erase, recordType: type, record: id), nil)
        }
    }
}

/// The oracle of invariant (b): whether `ender` may end `honest` (DESIGN.md §5, §6): the same
/// record, the record's own type, the same field, an action that ends that kind of op, allowed to
/// its author's role, in a change policy did not refuse.
enum Legitimacy {
    static func mayEnd(_ ender: Op, role: Role, refused: Bool, honest: Op, recordType: RecordType) -> Bool {
        guard !refused, ender.record == honest.record, ender.recordType == recordType, ender.field == honest.field,
              let kind = HonestKind(honest) else { return false }
        switch kind {
        case .write:
            guard ender.action == .set || ender.action == .review || (ender.action == .resolve && !ender.field.isEmpty) else { return false }
            // The review field is written by review ops only, and review ops write nothing else.
            let spec = RecordSchema.standard.field(ender.field, type: recordType, kind: nil)
            guard (spec?.writtenBy == "review") == (ender.action == .review) else { return false }
        case .tag:
            guard ender.action == .remove else { return false }
        case .tombstone:
            guard ender.action == .resolve, ender.field.isEmpty else { return false }
        }
        return roleAllows(role, ender)
    }

    /// DESIGN.md §6: field writes notes, press contacts, a coordinator everything plus review
    /// verdicts, resolve and erase; a field device may only submit a note for review.
    static func roleAllows(_ role: Role, _ op: Op) -> Bool {
        switch (role, op.recordType) {
        case (.field, .contact), (.press, .note): return false
        default: break
        }
        switch op.action {
        case .resolve, .erase: return role == .coordinator
        case .review: return op.recordType == .note && op.field == "review" && (role == .coordinator || op.kind == "submitted")
        default: return true
        }
    }

    /// Invariant (b) at the end, over the reference replica (every honest replica holds the same
    /// views, invariant (a)): every honest write, tag or tombstone that no longer counts was ended
    /// by at least one legitimate op, and no honest record is deleted but by legitimate deletes.
    /// `strict` holds every hostile op illegitimate: the self-check that hostile ops do end honest ones.
    static func check(_ reference: MemoryReplica, views: [RecordID: RecordView], ledger: Ledger, strict: Bool = false,
                      stats: inout HostileStats) -> String? {
        // Who names what, over every change applied (refused ones included: they must end nothing).
        var enders: [OpRef: [(op: Op, author: DeviceID, refused: Bool)]] = [:]
        for (device, chain) in reference.chains {
            for c in chain {
                let refused = reference.refusals[c.id] != nil
                for op in c.change.ops where !op.refs.isEmpty && op.action != .delete {
                    for r in op.refs { enders[r, default: []].append((op, device, refused)) }
                }
            }
        }
        for h in ledger.honestOps {
            let id = h.op.record
            guard let type = ledger.honestType[id], let view = views[id], let ops = reference.records[id] else {
                return "(b) honest record \(id) is missing from the reference replica"
            }
            let live: Bool
            switch HonestKind(h.op)! {
            case .write: live = view.fields[h.op.field]?.survivors.contains { $0.ref == h.ref } ?? false
            case .tag: live = view.fields[h.op.field]?.elements.contains { $0.tags.contains(h.ref) } ?? false
            case .tombstone: live = ops.liveTombstones.contains { $0.ref == h.ref }
            }
            guard !live else { continue }
            let named = enders[h.ref] ?? []
            let legitimate = named.filter { e in
                !(strict && ledger.hostile.contains(e.author))
                    && mayEnd(e.op, role: ledger.roles[e.author] ?? .field, refused: e.refused, honest: h.op, recordType: type)
            }
            if !legitimate.isEmpty && legitimate.allSatisfy({ ledger.hostile.contains($0.author) }) { stats.honestEnded += 1 }
            if legitimate.isEmpty {
                let who = named.map { "\($0.op.action) \($0.op.recordType) '\($0.op.field)' on \($0.op.record == id ? "this record" : "record \($0.op.record)") by \(ledger.roles[$0.author]!)\(ledger.hostile.contains($0.author) ? " (hostile)" : "")\($0.refused ? " (refused)" : "")" }
                return "(b) honest \(h.op.action) \(h.ref) on \(type) \(id) '\(h.op.field)' no longer counts; named by \(who.isEmpty ? "nothing" : who.joined(separator: ", ")), none of it legitimate"
            }
        }
        for id in ledger.honestRecords {
            guard let view = views[id], view.deleted, let ops = reference.records[id], let type = ledger.honestType[id] else { continue }
            let legitimate = ops.liveTombstones.filter { t in
                !(strict && ledger.hostile.contains(t.author))
                    && reference.refusals[t.ref.change] == nil && t.op.recordType == type && roleAllows(ledger.roles[t.author] ?? .field, t.op)
            }
            let seen = Set(legitimate.flatMap(\.op.refs))
            let content = view.fields.values.flatMap { $0.survivors.map(\.ref) + $0.elements.flatMap(\.tags) }
            if let unseen = content.first(where: { !seen.contains($0) }) {
                let tombs = ops.liveTombstones.map { "\($0.op.recordType) delete by \(ledger.roles[$0.author]!)\(ledger.hostile.contains($0.author) ? " (hostile)" : "")" }
                return "(b) honest \(type) \(id) is deleted, but no legitimate delete saw \(unseen) (tombstones: \(tombs.joined(separator: ", ")))"
            }
        }
        return nil
    }
}

/// Invariant (e) for traps: a trap ends the test process, so the seeds running at that moment
/// are written to stderr from a signal handler before the previous handler (the runtime's
/// backtracer, or the default) takes over.
enum CrashSeeds {
    static let slotCount = 256
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: slotCount)
        p.initialize(repeating: 0, count: slotCount)
        return p
    }()
    /// The thread running each slot's seed, so the report can tell which seed trapped.
    nonisolated(unsafe) static let threads: UnsafeMutablePointer<pthread_t> = .allocate(capacity: slotCount)
    nonisolated(unsafe) static let previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    nonisolated(unsafe) static let text = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
    static let signals: [Int32] = [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT]

    /// Installs the handler once per process.
    static let installed: Bool = {
        for s in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = crashSeedsHandler
            action.sa_flags = SA_SIGINFO | SA_ONSTACK
            sigemptyset(&action.sa_mask)
            sigaction(s, &action, previous + Int(s))
        }
        return true
    }()

    static func running(_ seed: UInt64, worker: Int) {
        threads[worker % slotCount] = pthread_self()  // a scenario runs synchronously: it stays on this thread
        slots[worker % slotCount] = seed
    }
    static func idle(worker: Int) { slots[worker % slotCount] = 0 }

    /// Async-signal-safe: fixed buffers and write(2) only.
    static func report(_ signal: Int32) {
        for w in 0..<slotCount where slots[w] != 0 {
            var n = 0
            func put(_ s: StaticString) { s.withUTF8Buffer { for b in $0 where n < 255 { text[n] = b; n += 1 } } }
            func hex(_ v: UInt64) {
                for shift in stride(from: 60, through: 0, by: -4) {
                    let d = UInt8((v >> UInt64(shift)) & 0xF)
                    text[n] = d < 10 ? 48 + d : 87 + d
                    n += 1
                }
            }
            if pthread_equal(threads[w], pthread_self()) != 0 {
                put("\nconvergence: the process trapped in seed ")
            } else {
                put("\nconvergence: the process trapped; another worker was running seed ")
            }
            hex(slots[w])
            put(" (replay: FIELDSYNC_SEED=")
            hex(slots[w])
            put(" swift test --filter Convergence)\n")
            _ = write(2, text, n)
        }
        // Back to the handler before ours; returning runs the faulting instruction again under it.
        sigaction(signal, previous + Int(signal), nil)
        if signal == SIGABRT { raise(signal) }
    }
}

private func crashSeedsHandler(_ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    CrashSeeds.report(signal)
}
