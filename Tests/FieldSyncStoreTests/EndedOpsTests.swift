import FieldSyncCore
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// The store reads only a record's ops that still count (`edits.live`, `ended`). These tests hold it to
/// the in-memory reference, which keeps every op: same records, whatever the delivery order.
///
/// Replay one history: `FIELDSYNC_SEED=<hex> swift test --filter EndedOps`.
@Suite struct EndedOpsTests {
    static let baseSeed: UInt64 = 0xE4DE_D000_0000_0001

    static var seeds: [UInt64] {
        if let s = ProcessInfo.processInfo.environment["FIELDSYNC_SEED"], let seed = UInt64(s, radix: 16) { return [seed] }
        var g = SplitMix(seed: baseSeed)
        return (0..<40).map { _ in g.next() }
    }

    /// Random histories of concurrent edits, removes, deletes, resolves, reviews and erasures by
    /// three devices, delivered to a SQLite store shuffled and with duplicates: an op often
    /// arrives after the op that superseded or removed it, and edits before their record's create.
    @Test func storeAgreesWithTheReferenceInAnyOrder() throws {
        var failures: [String] = []
        for seed in Self.seeds {
            do {
                if let f = try History(seed: seed).checkStore() { failures.append("seed \(String(seed, radix: 16)): \(f)") }
            } catch {
                failures.append("seed \(String(seed, radix: 16)): \(error)")
            }
        }
        for f in failures.prefix(3) { Issue.record(Comment(rawValue: f + " (replay: FIELDSYNC_SEED=<seed> swift test --filter EndedOps)")) }
        #expect(failures.isEmpty, "\(failures.count) of \(Self.seeds.count) histories differ from the reference")
    }

    /// A record whose create has not arrived loads its ended ops too. A second op ending one of
    /// them must not count it ended twice: its edit also holds a tag that still counts.
    @Test func anOpEndedTwiceBeforeTheCreateArrivesIsCountedOnce() throws {
        let b = DeviceKey(), a = DeviceKey(), d = DeviceKey()
        let roster = Roster([b, a, d].enumerated().map { RosterEntry(publicKey: $1.publicKey, name: "c\($0)", role: .coordinator, enrolledAtMillis: 0) })
        var rb = MemoryReplica(roster: roster), ra = MemoryReplica(roster: roster), rd = MemoryReplica(roster: roster)
        let id = RecordID.make(.note, by: b.deviceID)
        var draft = ChangeDraft()
        draft.create(id, type: .note, kind: "survey")
        let c0 = try rb.commit(draft, key: b, wallMillis: 1_000)
        _ = try Replicator.receive(c0, into: &ra, wallMillis: 1_000)
        _ = try Replicator.receive(c0, into: &rd, wallMillis: 1_000)
        draft = ChangeDraft()
        draft.set("narrative", to: "first", on: ra.records[id]!, type: .note)
        draft.add("tags", "AP", record: id, type: .note)
        let c1 = try ra.commit(draft, key: a, wallMillis: 2_000)
        _ = try Replicator.receive(c1, into: &rd, wallMillis: 2_000)
        draft = ChangeDraft(); draft.set("narrative", to: "second", on: ra.records[id]!, type: .note)
        let c2 = try ra.commit(draft, key: a, wallMillis: 3_000)
        draft = ChangeDraft(); draft.set("narrative", to: "third", on: rd.records[id]!, type: .note)
        let c3 = try rd.commit(draft, key: d, wallMillis: 3_000)
        var reference = MemoryReplica(roster: roster)
        for c in [c0, c1, c2, c3] { _ = try Replicator.receive(c, into: &reference, wallMillis: 4_000) }

        let dir = TempDir()
        let store = try ReplicaStore.open(path: dir.path + "/r.sqlite", create: true)
        try store.upsertRoster(roster.sorted)
        for c in [c1, c2, c3, c0] { _ = try store.receive([c], wallMillis: 4_000) }
        #expect(try store.view(id)?.fields["tags"]?.elements.map(\.value) == ["AP"])
        #expect(try store.view(id) == reference.allRecords.first { $0.id == id })
    }

    /// The point of it: a note edited 60 times loads a handful of ops, not 60.
    @Test func aLongEditedNoteLoadsOnlyWhatCounts() throws {
        let dir = TempDir()
        let key = DeviceKey()
        let store = try ReplicaStore.open(path: dir.path + "/r.sqlite", create: true)
        try store.upsertRoster([RosterEntry(publicKey: key.publicKey, name: "field", role: .field, enrolledAtMillis: 0)])
        let id = RecordID.make(.note, by: key.deviceID)
        try store.commitLocal(key: key) { _ in
            var d = ChangeDraft()
            d.create(id, type: .note, kind: "survey")
            d.set("narrative", to: "day 0", onNew: id, type: .note)
            d.add("tags", "AP", record: id, type: .note)
            return d
        }
        for day in 1...60 {
            try store.commitLocal(key: key) { r in
                var d = ChangeDraft()
                let ops = try r.ops(id)
                d.set("narrative", to: .string("day \(day)"), on: ops, type: .note)
                d.remove("tags", day % 2 == 1 ? "AP" : "AT", on: ops, type: .note)
                d.add("tags", day % 2 == 1 ? "AT" : "AP", record: id, type: .note)
                return d
            }
        }
        let live = try store.read { db in
            try store.storage(db, wallMillis: 0).appliedOps(id, onlyCounting: true)
        }
        // The create, the last narrative and the last tag; removes are known by what they ended.
        #expect(live.count == 3)
        let view = try #require(try store.view(id))
        #expect(view.fields["narrative"]?.value == "day 60")
        #expect(view.fields["tags"]?.elements.map(\.value) == ["AP"])
    }
}

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One random history: three devices (two coordinators, one field laptop) editing a few records
/// concurrently, with partial syncs between them.
struct History {
    let seed: UInt64
    let keys = [DeviceKey(), DeviceKey(), DeviceKey()]
    var roster: [RosterEntry] {
        [RosterEntry(publicKey: keys[0].publicKey, name: "coord-a", role: .coordinator, enrolledAtMillis: 0),
         RosterEntry(publicKey: keys[1].publicKey, name: "coord-b", role: .coordinator, enrolledAtMillis: 0),
         RosterEntry(publicKey: keys[2].publicKey, name: "field", role: .field, enrolledAtMillis: 0)]
    }

    init(seed: UInt64) { self.seed = seed }

    /// Every change made, and the reference replica holding them all.
    func make() throws -> (changes: [SignedChange], reference: MemoryReplica, rng: SplitMix) {
        var rng = SplitMix(seed: seed)
        var replicas = keys.map { _ in MemoryReplica(roster: Roster(roster)) }
        var ids: [RecordID] = []
        var now: UInt64 = 1_700_000_000_000
        for _ in 0..<Int.random(in: 20...60, using: &rng) {
            now += UInt64.random(in: 1...5_000, using: &rng)
            let i = Int.random(in: 0..<3, using: &rng)
            if Int.random(in: 0..<4, using: &rng) == 0 {
                let j = (i + Int.random(in: 1...2, using: &rng)) % 3
                for c in replicas[j].missing(for: replicas[i].vector) where Bool.random(using: &rng) {
                    _ = try Replicator.receive(c, into: &replicas[i], wallMillis: now)
                }
                continue
            }
            var d = ChangeDraft()
            let field = ["ref", "team", "narrative"].randomElement(using: &rng)!
            let value = JSONValue.string("v\(Int.random(in: 0..<4, using: &rng))")
            let target = ids.filter { replicas[i].records[$0]?.materialize(schema: .standard).map { !$0.deleted } ?? false }.randomElement(using: &rng)
            let ops = target.flatMap { replicas[i].records[$0] }
            switch (Int.random(in: 0..<100, using: &rng), ops) {
            case (_, nil), (0..<10, _):
                let id = RecordID.make(.note, by: keys[i].deviceID, unixMillis: now, using: &rng)
                ids.append(id)
                d.create(id, type: .note, kind: "survey")
                d.set(field, to: value, onNew: id, type: .note)
                d.add("tags", value, record: id, type: .note)
            case (10..<50, let ops?):
                d.set(field, to: value, on: ops, type: .note)
            case (50..<65, let ops?):
                d.add("tags", value, record: ops.id, type: .note)
            case (65..<78, let ops?):
                if !d.remove("tags", value, on: ops, type: .note) { d.add("tags", value, record: ops.id, type: .note) }
            case (78..<84, let ops?):
                d.delete(ops, type: .note)
            case (84..<94, let ops?):
                guard i < 2 else { d.set(field, to: value, on: ops, type: .note); break }
                if ops.liveTombstones.isEmpty { d.resolve(field, to: value, on: ops, type: .note) } else { d.keepRecord(ops, type: .note) }
            case (_, let ops?):
                guard i < 2 else { d.set(field, to: value, on: ops, type: .note); break }
                d.review(["approved", "rejected"].randomElement(using: &rng)!, comment: nil, on: ops)
            }
            _ = try replicas[i].commit(d, key: keys[i], wallMillis: now)
        }
        var all: [SignedChange] = []
        for r in replicas { all += r.missing(for: VersionVector()) }
        let unique = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }).values
            .sorted { ($0.change.device, $0.change.seq) < ($1.change.device, $1.change.seq) }
        var reference = MemoryReplica(roster: Roster(roster))
        for c in unique { _ = try Replicator.receive(c, into: &reference, wallMillis: now) }
        return (unique, reference, rng)
    }

    /// Shuffled, with duplicates, in random batches.
    static func deliveries(_ changes: [SignedChange], rng: inout SplitMix) -> [[SignedChange]] {
        var all = changes + changes.filter { _ in Int.random(in: 0..<4, using: &rng) == 0 }
        all.shuffle(using: &rng)
        var batches: [[SignedChange]] = []
        while !all.isEmpty {
            let n = min(all.count, Int.random(in: 1...6, using: &rng))
            batches.append(Array(all.prefix(n)))
            all.removeFirst(n)
        }
        return batches
    }

    func differences(_ store: ReplicaStore, _ reference: MemoryReplica) throws -> String? {
        for want in reference.allRecords {
            let got = try store.view(want.id)
            if got != want { return "record \(want.id) differs from the reference" }
        }
        let listed = try store.listing(type: .note).sorted()
        let wanted = reference.allRecords.filter { !$0.deleted }.map { $0.listingJSON.canonicalString }.sorted()
        return listed == wanted ? nil : "listing differs from the reference"
    }

    func checkStore() throws -> String? {
        var (changes, reference, rng) = try make()
        let dir = TempDir()
        let store = try ReplicaStore.open(path: dir.path + "/r.sqlite", create: true)
        try store.upsertRoster(roster)
        for batch in Self.deliveries(changes, rng: &rng) { _ = try store.receive(batch, wallMillis: 1_800_000_000_000) }
        return try differences(store, reference)
    }

}
