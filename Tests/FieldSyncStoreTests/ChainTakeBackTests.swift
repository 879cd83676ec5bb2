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
        #expect(throws: StoreError.self) { _ = try store.takeBack(theirs: [fake], key: me) }
        #expect(try store.hasChange(c1[0].id) && !store.hasChange(fake.id), "nothing changed")
    }
}
