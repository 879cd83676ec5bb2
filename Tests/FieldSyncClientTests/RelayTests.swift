import FieldSyncCore
@testable import FieldSyncStore
import Testing
@testable import FieldSyncClient

/// `Relay`'s memory of what the server would not take: it stands while the server's chain of
/// that author stays where it was, for a day by this laptop's clock, and survives being kept in
/// the replica; a refusal for a missing value reopens when another author's relay moves.
@Suite struct RelayTests {
    let author = DeviceKey().deviceID, other = DeviceKey().deviceID
    let t: UInt64 = 1_800_000_000_000

    func lack(_ device: DeviceID, _ changes: UInt64) -> SyncEngine.ServerLack { SyncEngine.ServerLack(device: device, name: "x", changes: changes) }

    func kept(when: UInt64, code: String = "revoked") -> String {
        JSONValue.object([author.description: .object(["at": .int(4), "reason": .string("revoked"), "code": .string(code), "when": .int(Int64(when))])])
            .canonicalString
    }

    @Test func aRefusalStandsUntilTheServerMovesOrADayPasses() throws {
        var relay = Relay(stored: kept(when: t))
        relay.now = { [t] in t + 3_600_000 }
        #expect(relay.refusal(of: lack(author, 2), serverVector: [author.description: 4]) == "revoked")
        #expect(relay.open([lack(author, 2)], serverVector: [author.description: 4]).isEmpty)
        #expect(relay.refusal(of: lack(author, 1), serverVector: [author.description: 5]) == nil, "the server's chain moved")
        relay.now = { [t] in t + Relay.retryAfterMillis }
        #expect(relay.open([lack(author, 2)], serverVector: [author.description: 4]).count == 1, "tried again after a day")
        // Dated ahead of the clock (set while it was wrong): passed.
        relay.now = { [t] in t - 1 }
        #expect(relay.open([lack(author, 2)], serverVector: [author.description: 4]).count == 1)
        // Kept as it was read; what cannot be read is forgotten.
        #expect(Relay(stored: relay.stored).stored == relay.stored)
        for junk in ["", "[]", "{\"x\":1}", kept(when: t).replacingOccurrences(of: "\"at\":4", with: "\"at\":-1"),
                     kept(when: t).replacingOccurrences(of: "\"code\":\"revoked\",", with: "")] {
            #expect(Relay(stored: junk).stored == "{}", "\(junk)")
        }
    }

    @Test func aMissingValueIsTriedAgainOnceAnotherAuthorMoves() throws {
        var relay = Relay(stored: kept(when: t, code: ChangeRefusal.valuesMissing))
        relay.now = { [t] in t + 1 }
        let vector: [String: UInt64] = [author.description: 4, other.description: 0]
        #expect(relay.open([lack(author, 2), lack(other, 1)], serverVector: vector).map(\.device) == [other])
        let id = ChangeID(bytes: Array(repeating: 7, count: 32))!
        let batch = Relay.Batch(device: other, after: 0, changes: [ReplicaStore.OutgoingChange(id: id, seq: 1, envelope: [1])])
        #expect(relay.answered(batch, vector: [author.description: 4, other.description: 1], accepted: [id.hex], refusals: []) == 1)
        #expect(relay.open([lack(author, 2)], serverVector: vector).map(\.device) == [author], "the erase may have come")
    }
}
