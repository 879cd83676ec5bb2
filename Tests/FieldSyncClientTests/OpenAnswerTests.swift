import FieldSyncCore
import Foundation
import Testing
@testable import FieldSyncClient

/// An answer's changes are decoded and checked on several cores; the result must be what one
/// core would give: every change in order, only good signatures marked verified, and a
/// malformed envelope refused with its reason.
@Suite struct OpenAnswerTests {
    @Test func changesComeBackInOrderAndOnlyGoodSignaturesCount() async throws {
        let a = DeviceKey(), b = DeviceKey()
        let roster = Roster([RosterEntry(publicKey: a.publicKey, name: "a", role: .field, enrolledAtMillis: 0),
                             RosterEntry(publicKey: b.publicKey, name: "b", role: .field, enrolledAtMillis: 0)])
        var ra = MemoryReplica(roster: roster), rb = MemoryReplica(roster: roster)
        var changes: [SignedChange] = []
        for i in 0..<150 {
            var d = ChangeDraft()
            let id = RecordID.make(.note, by: (i % 2 == 0 ? a : b).deviceID)
            d.create(id, type: .note, kind: "survey")
            d.set("ref", to: .string("N-\(i)"), onNew: id, type: .note)
            changes.append(i % 2 == 0 ? try ra.commit(d, key: a, wallMillis: Timestamps.nowMillis)
                                      : try rb.commit(d, key: b, wallMillis: Timestamps.nowMillis))
        }
        // b's key is not given for verification: its changes are opened but not marked verified.
        let (opened, verified) = try await SyncEngine.open(changes.map(\.envelope), keys: [a.deviceID: a.publicKey])
        #expect(opened.map(\.id) == changes.map(\.id))
        #expect(verified == changes.indices.map { $0 % 2 == 0 })

        // A copy with a broken signature before the genuine one: only the genuine one counts.
        var forged = changes[0].envelope
        forged[5] ^= 1   // inside the signature
        let (twice, flags) = try await SyncEngine.open([forged, changes[0].envelope], keys: [a.deviceID: a.publicKey])
        #expect(twice.map(\.id) == [changes[0].id, changes[0].id])
        #expect(flags == [false, true])

        var broken = changes.map(\.envelope)
        broken[120] = Array(broken[120].prefix(40))
        await #expect(throws: SyncFailure.self) { _ = try await SyncEngine.open(broken, keys: [:]) }
    }
}
