import FieldSyncCore
import Foundation
import Testing
@testable import FieldSyncStore

/// `ReplicaStore.takeBack` (issue 25, item 2): a replica restored from a copy, or cloned, hands
/// its never-acknowledged changes over to the true chain, and never one that left it.
@Suite struct ChainTakeBackTests {
    let me = DeviceKey(), coord = DeviceKey()
    var entries: [RosterEntry] {
        [RosterEntry(publicKey: me.publicKey, name: "me", role: .field, enrolledAtMillis: 0),
         RosterEntry(publicKey: coord.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0)]
    }

    func laptop(_ dir: TempDir) throws -> ReplicaStore {
        let s = try ReplicaStore.open(path: dir.path + "/r.sqlite", create: true)
        try s.upsertRoster(entries)
        try s.setMeta("device", me.deviceID.description)
        return s
    }

    func note(_ ref: String) -> (RecordID, ChangeDraft) {
        let id = RecordID.make(.note, by: me.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "survey")
        d.set("ref", to: .string(ref), onNew: id, type: .note)
        return (id, d)
    }

    @Test func onlyWhatNeverLeftIsSignedAgainAndTheRecordsAgree() throws {
        let dir = TempDir()
        let store = try laptop(dir)
        // Seq 1, acknowledged; then, on this copy, seq 2 (a note) and seq 3 (an edit of it).
        let (_, d1) = note("BASE")
        let c1 = try store.commitLocal(key: me, wallMillis: 1_000) { _ in d1 }
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: c1.map(\.id)))
        let (mine, d2) = note("MINE")
        _ = try store.commitLocal(key: me, wallMillis: 2_000) { _ in d2 }
        _ = try store.commitLocal(key: me, wallMillis: 3_000) { r in
            var e = ChangeDraft()
            e.set("narrative", to: "edited here", on: try r.ops(mine), type: .note)
            return e
        }
        // The other copy wrote its own seq 2 and synced it: the true chain.
        var other = MemoryReplica(roster: Roster(entries))
        _ = try Replicator.receive(c1[0], into: &other, wallMillis: 4_000)
        let (theirs, dt) = note("THEIRS")
        let t2 = try other.commit(dt, key: me, wallMillis: 4_000)

        let result = try store.takeBack(theirs: [t2], key: me, wallMillis: 5_000)
        #expect(result.taken == 1 && result.resigned == 2)
        // The chain is the true one, then ours again on top, unacknowledged.
        #expect(try store.head(of: me.deviceID)?.seq == 4)
        #expect(try store.hasChange(t2.id) && store.hasChange(c1[0].id))
        let out = try store.outbox(device: me.deviceID)
        #expect(out.map(\.seq) == [3, 4])
        // Every record as a replica that received the true chain and the changes signed again.
        var reference = MemoryReplica(roster: Roster(entries))
        for c in [c1[0], t2] + (try out.map { try SignedChange(envelope: $0.envelope) }) {
            _ = try Replicator.receive(c, into: &reference, wallMillis: 6_000)
        }
        for id in [theirs, mine] { #expect(try store.view(id) == reference.record(id)) }
        #expect(try store.view(mine)?.fields["narrative"]?.value == "edited here", "the edit follows its note")
    }

    /// A resend to a restored server unmarks what it had acknowledged; those changes still left
    /// this laptop, and a server that then claims another version of them is a real fork.
    @Test func aChangeOnceAcknowledgedIsNeverTakenBack() throws {
        let dir = TempDir()
        let store = try laptop(dir)
        let (_, d1) = note("SENT")
        let c1 = try store.commitLocal(key: me, wallMillis: 1_000) { _ in d1 }
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: c1.map(\.id)))
        var lost = ReplicaStore.ExchangeOutcome()
        lost.resendAfter = (me.deviceID, 0)
        _ = try store.absorb(lost)
        #expect(try store.outbox(device: me.deviceID).count == 1, "unacknowledged, to be sent again")
        var other = MemoryReplica(roster: Roster(entries))
        let fake = try other.commit(note("OTHER").1, key: me, wallMillis: 2_000)
        let result = try store.takeBack(theirs: [fake], key: me)
        #expect(result.forkedAt == 1 && result.resigned == 0 && result.taken == 0)
        #expect(try store.hasChange(c1[0].id) && !store.hasChange(fake.id), "nothing changed")
        let forks = try store.forks()
        #expect(forks.count == 1 && forks.first?.device == me.deviceID && forks.first?.seq == 1 && forks.first?.refused == c1[0].id, "but the fork is listed")
    }

    /// A rekey gives the notes the old key created new ids; a link to one of them, in a note it
    /// created or in an older note's edit, names the new id (the old never left this laptop).
    @Test func aRekeyRenamesLinksToTheNotesItRemakes() throws {
        let dir = TempDir()
        let store = try laptop(dir)
        let (base, d1) = note("BASE")
        let c1 = try store.commitLocal(key: me, wallMillis: 1_000) { _ in d1 }
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: c1.map(\.id)))
        let (first, d2) = note("FIRST")
        _ = try store.commitLocal(key: me, wallMillis: 2_000) { _ in d2 }
        var (second, d3) = note("SECOND")
        d3.add("links", .string(first.description), record: second, type: .note)
        _ = try store.commitLocal(key: me, wallMillis: 3_000) { _ in d3 }
        _ = try store.commitLocal(key: me, wallMillis: 4_000) { _ in
            var e = ChangeDraft()
            e.add("links", .string(first.description), record: base, type: .note)
            return e
        }
        let fresh = DeviceKey()
        let newEntry = RosterEntry(publicKey: fresh.publicKey, name: "me-2", role: .field, enrolledAtMillis: 5_000)
        let result = try store.rekey(oldChain: [c1[0]], newKey: fresh, roster: [newEntry], meta: [:], wallMillis: 6_000)
        #expect(result.resigned == 3)
        let out = try store.outbox(device: fresh.deviceID).map { try SignedChange(envelope: $0.envelope) }
        let made = out.flatMap { $0.change.ops.filter { $0.action == .create }.map(\.record) }
        let ref = { (id: RecordID) in try store.view(id)?.fields["ref"]?.value }
        let newFirst = try #require(try made.first { try ref($0) == "FIRST" })
        second = try #require(try made.first { try ref($0) == "SECOND" })
        #expect(newFirst != first)
        for holder in [second, base] {
            let links = String(describing: try store.view(holder)?.fields["links"])
            #expect(links.contains(newFirst.description) && !links.contains(first.description), "\(holder): \(links)")
        }
        // Another replica that gets the server's chain and the new changes sees the same.
        var reference = MemoryReplica(roster: Roster(entries + [newEntry]))
        for c in [c1[0]] + out { _ = try Replicator.receive(c, into: &reference, wallMillis: 7_000) }
        #expect(reference.refusals.isEmpty)
        #expect(try store.view(base) == reference.record(base))
    }

    /// `rekey`: the old device's chain becomes the server's; what it lacks is signed again
    /// under the new key, a note the old key created getting an id the new key may create, and
    /// a replica that receives the server's chain and the new changes shows the same records.
    @Test func aRekeySignsWhatTheServerLacksUnderTheNewKey() throws {
        let dir = TempDir()
        let store = try laptop(dir)
        let (_, d1) = note("BASE")
        let c1 = try store.commitLocal(key: me, wallMillis: 1_000) { _ in d1 }
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(acknowledged: c1.map(\.id)))
        let (mine, d2) = note("MINE")
        let c2 = try store.commitLocal(key: me, wallMillis: 2_000) { _ in d2 }
        _ = try store.commitLocal(key: me, wallMillis: 3_000) { r in
            var e = ChangeDraft()
            e.set("narrative", to: "edited here", on: try r.ops(mine), type: .note)
            return e
        }
        try store.markLeft(through: 3)  // carried off in a bundle: a real fork
        var other = MemoryReplica(roster: Roster(entries))
        _ = try Replicator.receive(c1[0], into: &other, wallMillis: 4_000)
        let t2 = try other.commit(note("THEIRS").1, key: me, wallMillis: 4_000)
        #expect(try store.takeBack(theirs: [t2], key: me).forkedAt == 2)

        try store.setMeta("bundle_mark", "3")
        let fresh = DeviceKey()
        let newEntry = RosterEntry(publicKey: fresh.publicKey, name: "me-2", role: .field, enrolledAtMillis: 5_000)
        let result = try store.rekey(oldChain: [c1[0], t2], newKey: fresh, roster: [newEntry], meta: ["name": "me-2"], wallMillis: 6_000)
        #expect(result.resigned == 2 && result.taken == 1 && result.dropped == 2)
        #expect(try store.meta("device") == fresh.deviceID.description && store.meta("rekeyed_from") == me.deviceID.description)
        #expect(try !store.hasChange(c2[0].id) && store.hasChange(t2.id))
        let out = try store.outbox(device: fresh.deviceID).map { try SignedChange(envelope: $0.envelope) }
        #expect(out.map(\.change.seq) == [1, 2] && out.allSatisfy { $0.change.device == fresh.deviceID })
        #expect(try store.outbox(device: me.deviceID).isEmpty, "the old key sends nothing more")
        let remade = try #require(out.first?.change.ops.first { $0.action == .create }?.record)
        #expect(remade != mine && remade.mayBeCreated(by: fresh.deviceID) && remade.type == .note)
        #expect(try store.view(mine) == nil)
        // Another replica: the server's chain of the old device, then the new device's changes.
        var reference = MemoryReplica(roster: Roster(entries + [newEntry]))
        for c in [c1[0], t2] + out { _ = try Replicator.receive(c, into: &reference, wallMillis: 7_000) }
        #expect(reference.refusals.isEmpty, "policy takes every change signed again")
        #expect(try store.view(remade) == reference.record(remade))
        #expect(try store.view(remade)?.fields["narrative"]?.value == "edited here", "the edit follows its note")
        #expect(try store.forks().map(\.seq) == [2])
        #expect(try store.meta("bundle_mark") == nil, "changes are numbered afresh: the next bundle carries everything")
        #expect(throws: StoreError.self, "a command still holding the old key signs nothing") {
            try store.commitLocal(key: me, wallMillis: 8_000) { _ in note("LATE").1 }
        }
    }

    /// `adoptChain`: a replica holding another device's version the server refused gives it
    /// up for the server's, and lists what it gave up.
    @Test func anotherDevicesRefusedVersionIsGivenUpForTheServers() throws {
        let dir = TempDir()
        let store = try ReplicaStore.open(path: dir.path + "/c.sqlite", create: true)
        try store.upsertRoster(entries)
        try store.setMeta("device", coord.deviceID.description)
        var a = MemoryReplica(roster: Roster(entries)), b = MemoryReplica(roster: Roster(entries))
        let base = try a.commit(note("BASE").1, key: me, wallMillis: 1_000)
        _ = try Replicator.receive(base, into: &b, wallMillis: 1_000)
        let x = try a.commit(note("FROM-A").1, key: me, wallMillis: 2_000)
        let y = try b.commit(note("FROM-TWIN").1, key: me, wallMillis: 2_000)
        _ = try store.absorb(ReplicaStore.ExchangeOutcome(incoming: [base, x]))
        let result = try store.adoptChain(theirs: [y], wallMillis: 3_000)
        #expect(result.dropped == 1 && result.taken == 1)
        #expect(try !store.hasChange(x.id) && store.hasChange(y.id))
        #expect(try store.forks().map { [$0.seq: $0.refused] } == [[2: x.id]])
        #expect(try store.adoptChain(theirs: [y], wallMillis: 4_000).dropped == 0, "once")
    }
}
