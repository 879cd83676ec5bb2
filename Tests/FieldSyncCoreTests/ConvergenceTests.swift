import Foundation
import Testing
@testable import FieldSyncCore

/// The merge is a function of the set of changes: replicas that exchange changes in any order,
/// with duplicates, end equal to each other and to one replica fed every change in one order.
///
/// Most scenarios also enrol hostile devices (issue 23, `HostileScenario.swift`): enrolled keys
/// that sign arbitrary well-formed ops. Over every seed:
/// (a) honest replicas converge;
/// (b) nothing an honest device wrote (a register write, a set element's tag, a tombstone) stops
///     counting unless an op that may end it does: same record, the record's type, same field,
///     allowed to its author's role, in a change policy did not refuse; and no honest record is
///     deleted but by such deletes;
/// (c) a record's type is the type its honest create gave it, at every replica, after every
///     delivered change;
/// (d) no honest replica's clock runs more than `HybridClock.maxLeadMillis` ahead of its wall
///     clock, after every delivered change, and an honest device's own writes are never dated
///     before its wall clock or its previous reading (the tick never wraps);
/// (e) nothing traps (a `CoreError` refusing a hostile change outright is fine); a trap prints
///     the seeds running (`CrashSeeds`);
/// (f) every hostile op whose type is not the one its record id names is refused everywhere;
/// (g) no hostile device's create is the one that counts for an honest record (its author, date
///     and kind): only an id's maker may create it (`RecordID`).
///
/// Replay one scenario: `FIELDSYNC_SEED=<seed> swift test --filter Convergence`.
/// More scenarios: `FIELDSYNC_SCENARIOS=20000 swift test --filter Convergence`.
/// Honest devices only (the generator as it was): `FIELDSYNC_HOSTILE=0`.
@Suite struct ConvergenceTests {
    static let baseSeed: UInt64 = 0x5EED_F1E1_D500_0001

    @Test func randomScenariosConverge() async throws {
        let env = ProcessInfo.processInfo.environment
        let seeds: [UInt64]
        if let s = env["FIELDSYNC_SEED"], let seed = UInt64(s, radix: 16) ?? UInt64(s) {
            seeds = [seed]
        } else {
            let n = Int(env["FIELDSYNC_SCENARIOS"] ?? "") ?? 2000
            var g = SeededRNG(seed: Self.baseSeed)
            seeds = (0..<n).map { _ in g.next() }
        }
        let hostile = env["FIELDSYNC_HOSTILE"] != "0"
        let workers = max(2, ProcessInfo.processInfo.activeProcessorCount)
        _ = CrashSeeds.installed
        let (failures, stats) = await withTaskGroup(of: ([String], HostileStats).self) { group in
            for w in 0..<workers {
                group.addTask {
                    await Self.onOwnThread {
                        var out: [String] = []
                        var stats = HostileStats()
                        for i in stride(from: w, to: seeds.count, by: workers) {
                            CrashSeeds.running(seeds[i], worker: w)
                            if let f = Scenario(seed: seeds[i], hostile: hostile).run(stats: &stats) {
                                out.append("seed \(String(seeds[i], radix: 16)) failed: \(f) (replay: FIELDSYNC_SEED=\(String(seeds[i], radix: 16)) swift test --filter Convergence)")
                            }
                        }
                        CrashSeeds.idle(worker: w)
                        return (out, stats)
                    }
                }
            }
            var all: [String] = []
            var stats = HostileStats()
            for await (f, s) in group { all += f; stats.add(s) }
            return (all, stats)
        }
        for f in failures.prefix(5) { Issue.record(Comment(rawValue: f)) }
        #expect(failures.isEmpty, "\(failures.count) of \(seeds.count) scenarios failed an invariant")
        print("convergence: \(seeds.count) scenarios, \(failures.count) failed; \(stats.summary)")
    }

    /// Runs `body` on a thread of its own. The scenarios are minutes of CPU: run as tasks they
    /// held both threads of the cooperative pool (two cores) for all that time, and every other
    /// test's awaits waited with them, until their signatures expired and their deadlines passed.
    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (done: CheckedContinuation<T, Never>) in
            let thread = Thread { done.resume(returning: body()) }
            thread.stackSize = 16 << 20
            thread.start()
        }
    }

    /// The property must be able to fail: a replica that skips one change must differ.
    @Test func divergenceIsDetected() throws {
        var found = false
        var g = SeededRNG(seed: 42)
        for _ in 0..<50 where !found {
            let seed = g.next()
            found = Scenario(seed: seed, dropOneChangeAtReplica0: true).run()?.hasPrefix("(a)") ?? false
        }
        #expect(found, "dropping a change never showed as divergence: the comparison is blind")
    }

    /// Invariant (b) must be able to fail too: hostile ops do end honest values (legitimately:
    /// a hostile coordinator may), so an oracle that holds every hostile op illegitimate must object.
    @Test func hostileEndingsAreSeen() throws {
        var found = false
        var g = SeededRNG(seed: 23)
        for _ in 0..<50 where !found {
            found = Scenario(seed: g.next(), strictOracle: true).run()?.hasPrefix("(b)") ?? false
        }
        #expect(found, "no hostile op ever ended an honest value: the hostile devices miss the merge, or (b) is blind")
    }
}

/// One random scenario: 2 to 8 replicas, up to 200 ops each, random partial syncs in random
/// order with duplicates, then a final full exchange. Three scenarios in four also enrol one or
/// two hostile devices, which sign changes and push them (in random order, with duplicates) to
/// random honest replicas, whose syncs then carry them on.
struct Scenario {
    let seed: UInt64
    var dropOneChangeAtReplica0 = false
    var hostile = true
    var strictOracle = false

    init(seed: UInt64, hostile: Bool = true, dropOneChangeAtReplica0: Bool = false, strictOracle: Bool = false) {
        self.seed = seed
        self.hostile = hostile
        self.dropOneChangeAtReplica0 = dropOneChangeAtReplica0
        self.strictOracle = strictOracle
    }

    static let noteFields = ["ref", "team", "narrative", "status"]
    static let contactFields = ["fn", "title", "source"]
    static let texts: [JSONValue] = (0..<4).map { .string("v\($0)") }
    static let statuses: [JSONValue] = ["suspected", "confirmed", "cleared"].map { .string($0) }

    struct Device {
        var entry: RosterEntry
        var replica: MemoryReplica
        var budget: Int
        var clockOffset: Int64
    }

    func run() -> String? {
        var stats = HostileStats()
        return run(stats: &stats)
    }

    func run(stats: inout HostileStats) -> String? {
        var rng = SeededRNG(seed: seed)
        // The hostile devices draw from a stream of their own: with none enrolled, the honest
        // devices do exactly what they did before hostile ones existed.
        var hrng = SeededRNG(seed: seed ^ 0x4057_11E0_DE71_CE00)
        let n = Int.random(in: 2...8, using: &rng)
        var entries: [RosterEntry] = []
        for i in 0..<n {
            let r = UInt64.random(in: 0..<20, using: &rng)
            let role: Role = r < 13 ? .coordinator : (r < 17 ? .field : .press)
            entries.append(.fake(&rng, role: role, name: "d\(i)"))
        }
        var hostiles = (0..<(hostile ? [0, 1, 1, 2].randomElement(using: &hrng)! : 0)).map { HostileDevice(&hrng, name: "h\($0)") }
        stats.scenarios += 1
        if !hostiles.isEmpty { stats.withHostile += 1 }
        var ledger = Ledger()
        ledger.harvest = !hostiles.isEmpty
        for e in entries { ledger.roles[e.device] = e.role }
        for h in hostiles { ledger.roles[h.entry.device] = h.entry.role; ledger.hostile.insert(h.entry.device) }
        let roster = Roster(entries + hostiles.map(\.entry))
        var devices = entries.map { e -> Device in
            // Some laptops run days behind or ahead.
            let skew = [Int64(0), 0, 0, -3 * Int64(day), 3 * Int64(day)].randomElement(using: &rng)!
            return Device(entry: e, replica: MemoryReplica(roster: roster), budget: Int.random(in: 0...200, using: &rng), clockOffset: skew)
        }
        var now = baseMillis
        var created: [RecordID] = []  // every record id made so far, in order: a cheap, replayable pick list
        do {
            while devices.contains(where: { $0.budget > 0 }) {
                now += UInt64.random(in: 1...2000, using: &rng)
                // A hostile device, now and then: signs its next change, or pushes some of its
                // changes (any order, duplicates) to an honest replica.
                if !hostiles.isEmpty, Int.random(in: 0..<6, using: &hrng) == 0 {
                    let h = Int.random(in: 0..<hostiles.count, using: &hrng)
                    if hostiles[h].budget > 0 && (hostiles[h].chain.isEmpty || Int.random(in: 0..<5, using: &hrng) < 3) {
                        let c = try hostiles[h].next(now: now, ledger: ledger, rng: &hrng)
                        ledger.note(c, honest: false, refused: false)
                    } else if !hostiles[h].chain.isEmpty {
                        let j = Int.random(in: 0..<n, using: &hrng)
                        var push = hostiles[h].chain.filter { _ in Int.random(in: 0..<3, using: &hrng) > 0 }
                        push += push.filter { _ in Int.random(in: 0..<4, using: &hrng) == 0 }
                        push.shuffle(using: &hrng)
                        let w = wall(now, devices[j])
                        for c in push {
                            if let f = try deliver(c, to: &devices[j], first: j == 0, wall: w, ledger: ledger) { return f }
                        }
                    }
                }
                let i = devices.indices.filter { devices[$0].budget > 0 }.randomElement(using: &rng)!
                if Int.random(in: 0..<4, using: &rng) == 0 {
                    let j = Int.random(in: 0..<n, using: &rng)
                    guard j != i else { continue }
                    var missing = devices[j].replica.missing(for: devices[i].replica.vector)
                    missing = missing.filter { _ in Bool.random(using: &rng) }
                    missing += missing.filter { _ in Int.random(in: 0..<5, using: &rng) == 0 }
                    missing.shuffle(using: &rng)
                    let w = wall(now, devices[i])
                    for c in missing {
                        if let f = try deliver(c, to: &devices[i], first: i == 0, wall: w, ledger: ledger) { return f }
                    }
                } else {
                    let draft = makeDraft(&devices[i], created: &created, rng: &rng)
                    guard !draft.isEmpty else { devices[i].budget -= 1; continue }
                    devices[i].budget -= draft.ops.count
                    if let f = try commit(draft, at: &devices[i], first: i == 0, wall: wall(now, devices[i]), ledger: &ledger) { return f }
                }
            }
            // Every change, from everyone, to everyone: random order, with duplicates.
            var all: [SignedChange] = []
            for d in devices { all += d.replica.missing(for: VersionVector()) }
            for h in hostiles { all += h.chain }
            let unique = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            var reference = MemoryReplica(roster: roster)
            let ordered = unique.values.sorted { ($0.change.device, $0.change.seq) < ($1.change.device, $1.change.seq) }
            for c in ordered {
                // Some hostile changes through the whole receiving path, their signatures checked
                // (every one would be a fifth of the test's time: Ed25519 is built without
                // optimisation in a debug build).
                let signed = ledger.hostile.contains(c.change.device)
                do {
                    _ = try Replicator.receive(c, into: &reference, wallMillis: now, verified: !(signed && c.change.seq % 8 == 1))
                } catch let e as CoreError where signed && e.code != .badSignature && e.code != .keyMismatch {
                    continue  // (e) refused outright: fine, if every replica does the same (a)
                }
            }

            for i in devices.indices {
                // What it lacks, plus a fifth of everything again as duplicates.
                let lacking = ordered.filter { devices[i].replica.position(of: $0.id) == nil }
                var deliveries = lacking + lacking.filter { _ in Int.random(in: 0..<3, using: &rng) == 0 }
                deliveries += all.filter { _ in Int.random(in: 0..<5, using: &rng) == 0 }
                deliveries.shuffle(using: &rng)
                let w = wall(now, devices[i])
                if i == 0 && dropOneChangeAtReplica0 {
                    // Withhold one change replica 0 lacks: the comparison below must see it.
                    let have = Set(devices[0].replica.missing(for: VersionVector()).map(\.id))
                    guard let victim = ordered.last(where: { !have.contains($0.id) }) else { return nil }
                    deliveries.removeAll { $0.id == victim.id }
                }
                for c in deliveries {
                    if let f = try deliver(c, to: &devices[i], first: i == 0, wall: w, ledger: ledger) { return f }
                }
            }
            let want = reference.allRecords
            for v in want where v.listingBytes != Self.listingTree(v).canonicalBytes {
                return "record \(v.id): the listing written directly differs from its JSON tree"
            }
            // (c) at the end, everywhere (the others equal the reference, or (a) fails below).
            for v in want where ledger.honestType[v.id].map({ $0 != v.type }) ?? false {
                return "(c) reference: \(ledger.honestType[v.id]!) \(v.id) shows as a \(v.type)"
            }
            for d in devices {
                let r = d.replica
                let got = r.allRecords
                if got != want {
                    let diff = zip(got, want).first { $0 != $1 }.map { "record \($0.0.id)" } ?? "record count \(got.count) vs \(want.count)"
                    return "(a) \(d.entry.name): records differ from reference at \(diff)"
                }
                if r.vector != reference.vector { return "(a) \(d.entry.name): vector \(r.vector.total) != reference \(reference.vector.total)" }
                if Set(r.refusals.keys) != Set(reference.refusals.keys) { return "(a) \(d.entry.name): policy refusals differ" }
            }
            // (f) An op typed otherwise than its record id is refused, wherever it arrives.
            for c in ledger.hostileChanges where reference.refusals[c.id] == nil {
                if let op = c.change.ops.first(where: { $0.record.type != $0.recordType }) {
                    return "(f) hostile change \(c.id.hex.prefix(12)) was applied with a \(op.action) typed \(op.recordType) on \(op.record.type) \(op.record)"
                }
            }
            // (b)
            let views = Dictionary(uniqueKeysWithValues: want.map { ($0.id, $0) })
            if let f = Legitimacy.check(reference, views: views, ledger: ledger, strict: strictOracle, stats: &stats) { return f }
            stats.changes += ledger.hostileChanges.count
            stats.refused += ledger.hostileChanges.filter { reference.refusals[$0.id] != nil }.count
            stats.foreignCreates += ledger.hostileChanges.filter { reference.refusals[$0.id]?.code == .foreignCreate }.count
            // (g) No one takes over an honest record's create (its author, date and kind).
            if let taken = ledger.honestRecords.first(where: { views[$0].map { ledger.hostile.contains($0.createdBy) } ?? false }) {
                return "(g) honest record \(taken) shows a hostile device's create"
            }
            return nil
        } catch {
            return "(e) error \(error)"
        }
    }

    /// Delivers one change to an honest replica at its wall clock, then checks (d) there, and (c)
    /// on replica 0 (`first`). A hostile change refused outright with a `CoreError` is fine (e);
    /// an honest one is not. (The device inout, not the array and an index: a debug build copies
    /// an array element it reads, a whole replica.)
    func deliver(_ c: SignedChange, to d: inout Device, first: Bool, wall: UInt64, ledger: Ledger) throws -> String? {
        let outcome: ReceiveOutcome
        do {
            outcome = try Replicator.receive(c, into: &d.replica, wallMillis: wall, verified: true)
        } catch is CoreError where ledger.hostile.contains(c.change.device) {
            return nil
        }
        let last = d.replica.clock.last
        if last.millis > wall && last.millis - wall > HybridClock.maxLeadMillis {
            return "(d) \(d.entry.name): clock \(last) is \(last.millis - wall) ms ahead of its wall clock \(wall) after change \(c.id.hex.prefix(12)) (hlc \(c.change.hlc))"
        }
        guard first, case .applied(let taken) = outcome else { return nil }
        for id in taken.map(\.id) {
            if let f = checkTypes(ledger.touched[id] ?? [], at: d, ledger: ledger, after: id) { return f }
        }
        return nil
    }

    /// Commits an honest draft, checks the reading it was dated with (d), and notes it.
    func commit(_ draft: ChangeDraft, at d: inout Device, first: Bool, wall: UInt64, ledger: inout Ledger) throws -> String? {
        let before = d.replica.clock.last
        let c = try d.replica.commitUnsigned(draft, device: d.entry.device, wallMillis: wall)
        // (d) An honest device's own reading: never before its wall clock or its last one.
        if c.change.hlc.millis < wall || c.change.hlc < before {
            return "(d) \(d.entry.name) dated its own change \(c.change.hlc) at wall clock \(wall), after reading \(before)"
        }
        ledger.note(c, honest: true, refused: d.replica.refusals[c.id] != nil)
        return first ? checkTypes(ledger.touched[c.id] ?? [], at: d, ledger: ledger, after: c.id) : nil
    }

    /// (c) The records a change touched keep their honest type. Checked after every change on
    /// replica 0, by the create that counts (`RecordOps.header`, what `materialize` takes a view's
    /// type from: materialising every touched record after every change cost a twentieth of the
    /// test), and on every replica's full views at the end. Every replica runs the same code on
    /// the same kinds of deliveries: checking all of them every time cost another tenth.
    func checkTypes(_ records: [RecordID], at d: Device, ledger: Ledger, after change: ChangeID) -> String? {
        for id in records {
            guard let want = ledger.honestType[id] else { continue }
            if let type = d.replica.records[id]?.header?.op.recordType, type != want {
                return "(c) \(d.entry.name): \(want) \(id) shows as a \(type) after change \(change.hex.prefix(12))"
            }
        }
        return nil
    }

    /// The listing form built as a `JSONValue` tree, as it was before `listingBytes` wrote it
    /// directly: the reference that the direct writer must match byte for byte.
    static func listingTree(_ v: RecordView) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(v.id.description), "type": .string(v.type.description), "fields": .object(v.values),
            "created_by": .string(v.createdBy.description), "created_at": .string(Timestamps.iso(v.createdAt.millis)),
            "updated_at": .string(Timestamps.iso(v.lastChanged.millis)),
        ]
        if let kind = v.kind { o["kind"] = .string(kind) }
        var conflicts = v.conflictedFields.map { JSONValue.string($0) }
        if v.deleteConflict != nil { conflicts.insert("(deleted)", at: 0) }
        if !conflicts.isEmpty { o["conflicts"] = .array(conflicts) }
        if v.deleted { o["deleted"] = .bool(true) }
        if let e = v.erasedBy { o["erased"] = .object(["by": .string(e.author.description), "at": .string(Timestamps.iso(e.hlc.millis))]) }
        return .object(o)
    }

    func wall(_ now: UInt64, _ d: Device) -> UInt64 { UInt64(Int64(now) + d.clockOffset) }

    /// A random local change of 1 to 5 ops, each on a different (record, field).
    func makeDraft(_ d: inout Device, created: inout [RecordID], rng: inout SeededRNG) -> ChangeDraft {
        var draft = ChangeDraft()
        var touched: Set<String> = []
        let count = min(d.budget, Int.random(in: 1...5, using: &rng))
        for _ in 0..<count {
            let roll = Int.random(in: 0..<100, using: &rng)
            if created.isEmpty || roll < 12 {
                // Mostly within the role; sometimes a forbidden attempt, which policy must refuse everywhere.
                var type: RecordType = d.entry.role == .press ? .contact : .note
                if d.entry.role == .coordinator || Int.random(in: 0..<10, using: &rng) == 0 { type = Bool.random(using: &rng) ? .note : .contact }
                let id = RecordID.make(type, by: d.entry.device, unixMillis: baseMillis, using: &rng)
                draft.create(id, type: type, kind: type == .note ? "survey" : nil)
                let f = type == .note ? Self.noteFields[0] : Self.contactFields[0]
                draft.set(f, to: Self.texts.randomElement(using: &rng)!, onNew: id, type: type)
                created.append(id)
                continue
            }
            // Materialise only the record picked, and only as far as the generator needs.
            guard let ops = d.replica.records[created.randomElement(using: &rng)!], let view = Glance(ops), !view.deleted else { continue }
            let type = view.type
            let fields = type == .note ? Self.noteFields : Self.contactFields
            let field = fields.randomElement(using: &rng)!
            let key = "\(view.id)/\(field)"
            let setField = type == .note ? "tags" : "beats"
            switch roll {
            case 12..<55:
                guard touched.insert(key).inserted else { continue }
                let v = field == "status" ? Self.statuses.randomElement(using: &rng)! : Self.texts.randomElement(using: &rng)!
                draft.set(field, to: v, on: ops, type: type)
            case 55..<70:
                guard touched.insert("\(view.id)/\(setField)").inserted else { continue }
                draft.add(setField, Self.texts.randomElement(using: &rng)!, record: view.id, type: type)
            case 70..<80:
                guard touched.insert("\(view.id)/\(setField)").inserted else { continue }
                draft.remove(setField, Self.texts.randomElement(using: &rng)!, on: ops, type: type)
            case 80..<85:
                guard touched.insert("\(view.id)/*").inserted else { continue }
                draft.delete(ops, type: type)
            case 85..<93:
                guard touched.insert(key).inserted else { continue }
                if let conflicted = view.conflictedFields.first, touched.insert("\(view.id)/\(conflicted)").inserted {
                    draft.resolve(conflicted, to: Self.texts.randomElement(using: &rng)!, on: ops, type: type)
                } else if view.deleteConflict {
                    draft.keepRecord(ops, type: type)
                } else {
                    draft.resolve(field, to: Self.texts.randomElement(using: &rng)!, on: ops, type: type)
                }
            case 93..<97:
                guard type == .note, touched.insert("\(view.id)/review").inserted else { continue }
                draft.review(["submitted", "approved", "rejected"].randomElement(using: &rng)!, comment: nil, on: ops)
            default:
                guard type == .contact, touched.insert("\(view.id)/erase").inserted else { continue }
                draft.erase(view.id)
            }
        }
        return draft
    }
}

/// What the generator needs to know of a record, without materialising it in full.
struct Glance {
    let ops: RecordOps
    let id: RecordID
    let type: RecordType
    let deleted: Bool
    let deleteConflict: Bool
    let conflictedFields: [String]

    init?(_ ops: RecordOps) {
        guard let h = ops.header else { return nil }
        self.ops = ops
        id = ops.id
        type = h.op.recordType
        var content: [OpRef] = []
        var conflicted: [String] = []
        for f in ops.writes.keys.sorted() {
            let s = ops.survivors(f, type: type)
            if s.count > 1 { conflicted.append(f) }
            content += s.map(\.ref)
        }
        for f in ops.adds.keys { content += ops.liveTags(f, type: type).map(\.ref) }
        conflictedFields = conflicted
        let tombs = ops.liveTombstones
        let seen = Set(tombs.flatMap(\.op.refs))
        let unseen = content.contains { !seen.contains($0) }
        deleted = !tombs.isEmpty && !unseen
        deleteConflict = !tombs.isEmpty && unseen
    }
}
