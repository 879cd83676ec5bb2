import FieldSyncCore
import Testing
@testable import FieldSyncClient

/// `Relay`'s memory of what the server would not take: it stands while the server's chain of
/// that author stays where it was, for a day, and survives being kept in the replica.
@Suite struct RelayTests {
    let author = DeviceKey().deviceID

    func lack(_ changes: UInt64) -> SyncEngine.ServerLack { SyncEngine.ServerLack(device: author, name: "spare", changes: changes) }

    @Test func aRefusalStandsUntilTheServerMovesOrADayPasses() throws {
        let t: UInt64 = 1_800_000_000_000
        let stored = JSONValue.object([author.description: .object(["at": .int(4), "reason": .string("revoked"), "when": .int(Int64(t))])]).canonicalString
        var relay = Relay(stored: stored)
        relay.now = { t + 3_600_000 }
        #expect(relay.refusal(of: lack(2), serverVector: [author.description: 4]) == "revoked")
        #expect(relay.open([lack(2)], serverVector: [author.description: 4]).isEmpty)
        #expect(relay.refusal(of: lack(1), serverVector: [author.description: 5]) == nil, "the server's chain moved")
        relay.now = { t + Relay.retryAfterMillis }
        #expect(relay.open([lack(2)], serverVector: [author.description: 4]).count == 1, "tried again after a day")
        // Kept as it was read; what cannot be read is forgotten.
        #expect(Relay(stored: relay.stored).stored == relay.stored)
        for junk in ["", "[]", "{\"x\":1}", "{\"\(author)\":{\"at\":-1,\"reason\":\"r\",\"when\":0}}"] {
            #expect(Relay(stored: junk).stored == "{}", "\(junk)")
        }
    }
}
