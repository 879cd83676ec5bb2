import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Testing
@testable import FieldSyncServer

/// Every way a request can be wrong is refused, with its status code.
@Suite struct SecurityTests {
    let ts: TestServer
    let alice: DeviceKey
    let bob: DeviceKey
    let body: [UInt8]

    init() async throws {
        ts = try await TestServer.make()
        alice = try await ts.enroll(.field, "alice")
        bob = try await ts.enroll(.field, "bob")
        body = syncBody([])
    }

    func status(_ headers: HTTPFields, body: [UInt8]? = nil, uri: String = "/v1/sync") async throws -> (Int, String) {
        let (s, problem, h, _) = try await send(ts, uri: uri, headers: headers, body: body ?? self.body)
        if s >= 400 { #expect(h[.contentType] == "application/problem+json", "refusals are RFC 9457 problems") }
        return (s, problem["detail"]?.stringValue ?? "")
    }

    @Test func unsignedRequestIsRefused() async throws {
        var h = Signer(alice).headers(body: body)
        h[HTTPField.Name("Signature")!] = nil
        h[HTTPField.Name("Signature-Input")!] = nil
        #expect(try await status(h).0 == 401)
    }

    @Test func signatureHeaderAloneIsRefused() async throws {
        var h = Signer(alice).headers(body: body)
        h[HTTPField.Name("Signature-Input")!] = nil
        #expect(try await status(h).0 == 401)
    }

    @Test func alteredMethodIsRefused() async throws {
        var s = Signer(alice); s.method = "PUT"
        #expect(try await status(s.headers(body: body)) == (401, "the request signature does not verify"))
    }

    @Test func alteredTargetIsRefused() async throws {
        var s = Signer(alice); s.target = "https://localhost/v1/roster"; s.contentType = SyncProtocol.syncType
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func alteredHostIsRefused() async throws {
        var s = Signer(alice); s.target = "https://evil.example/v1/sync"
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func alteredDigestComponentIsRefused() async throws {
        var s = Signer(alice); s.signedDigest = HTTPSignature.contentDigest(Array("other".utf8))
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func alteredContentTypeComponentIsRefused() async throws {
        var s = Signer(alice); s.signedContentType = "application/json; charset=latin1"
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func droppedComponentIsRefused() async throws {
        for dropped in HTTPSignature.requestComponents {
            var s = Signer(alice); s.components.removeAll { $0 == dropped }
            #expect(try await status(s.headers(body: body)).0 == 401, "without \(dropped)")
        }
    }

    @Test func bodyNotMatchingItsDigestIsRefused() async throws {
        let h = Signer(alice).headers(body: body)
        #expect(try await status(h, body: syncBody([], vector: VersionVector([alice.deviceID: 3]))) == (400, "Content-Digest does not match the body"))
    }

    @Test func missingDigestIsRefused() async throws {
        var h = Signer(alice).headers(body: body)
        h[HTTPField.Name("Content-Digest")!] = nil
        #expect(try await status(h).0 == 400)
    }

    @Test func unknownKeyIsRefused() async throws {
        #expect(try await status(Signer(DeviceKey()).headers(body: body)).0 == 401)
    }

    @Test func revokedKeyIsRefused() async throws {
        _ = try await ts.store.revoke(alice.deviceID)
        let (code, detail) = try await status(Signer(alice).headers(body: body))
        #expect(code == 403 && detail.contains("revoked"))
    }

    @Test func expiredSignatureIsRefused() async throws {
        var s = Signer(alice); s.created -= 400; s.expiresIn = 60
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func signatureWithExpiresPassedIsRefused() async throws {
        var s = Signer(alice); s.created -= 100; s.expiresIn = 50
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func signatureCreatedInTheFutureIsRefused() async throws {
        var s = Signer(alice); s.created += 400
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func overlongValidityIsRefused() async throws {
        var s = Signer(alice); s.expiresIn = 3600
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func replayedNonceIsRefused() async throws {
        let h = Signer(alice).headers(body: body)
        #expect(try await status(h).0 == 200)
        let (code, detail) = try await status(h)
        #expect(code == 401 && detail.contains("replay"))
    }

    /// An upload spends its nonce with its chain lock, a pull with its activity: both refuse a
    /// replay, and the replayed upload stores nothing more.
    @Test func replayedUploadIsRefused() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let upload = syncBody([try laptop.note("MA-1").1])
        let h = Signer(alice).headers(body: upload)
        #expect(try await status(h, body: upload).0 == 200)
        let (code, detail) = try await status(h, body: upload)
        #expect(code == 401 && detail.contains("replay"))
        #expect(try await ts.store.vector()[alice.deviceID] == 1)
    }

    /// A keyid in capitals names the same device, and its sync is recorded as that device's.
    @Test func aKeyidInCapitalsIsRecordedAsItsDevice() async throws {
        var s = Signer(alice); s.keyid = alice.deviceID.description.uppercased()
        #expect(try await status(s.headers(body: body)).0 == 200)
        let report = try await ts.store.deviceReports().first { $0.entry.device == alice.deviceID }
        #expect(report?.lastSync != nil)
        #expect(try await ts.store.devicesSeen(since: 0) == 1)
    }

    /// `/v1/sync` records its nonce in the exchange's transaction, the other routes before the
    /// handler: a replay is refused on both paths, and a replayed sync stores nothing.
    @Test func replayedNonceIsRefusedOnTheRosterToo() async throws {
        var s = Signer(alice); s.method = "GET"; s.target = "https://localhost/v1/roster"
        let h = s.headers(body: [])
        #expect(try await send(ts, uri: "/v1/roster", method: .get, headers: h, body: []).0 == 200)
        let (code, problem, _, _) = try await send(ts, uri: "/v1/roster", method: .get, headers: h, body: [])
        #expect(code == 401 && problem["detail"]?.stringValue?.contains("replay") == true)
    }

    @Test func garbageSignatureIsRefused() async throws {
        var h = Signer(alice).headers(body: body)
        h[HTTPField.Name("Signature")!] = "sig1=:" + Data(repeating: 7, count: 64).base64EncodedString() + ":"
        #expect(try await status(h).0 == 401)
    }

    @Test func signatureByAnotherKeyIsRefused() async throws {
        var s = Signer(bob); s.keyid = alice.deviceID.description
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func otherAlgorithmIsRefused() async throws {
        var s = Signer(alice); s.alg = "hmac-sha256"
        #expect(try await status(s.headers(body: body)).0 == 401)
    }

    @Test func malformedSyncBodyIsRefused() async throws {
        let good = syncBody([])
        let header = Array("{\"vector\": [".utf8)
        let cases: [[UInt8]] = [
            Array("{\"vector\": {}}".utf8),                      // JSON, not a sync body
            [1, UInt8(header.count)] + header,                   // framed, but the header is not JSON
            [2] + good.dropFirst(),                              // an unknown body version
            good + [5, 1, 2],                                    // a change cut short
        ]
        for junk in cases {
            let (code, detail) = try await status(Signer(alice).headers(body: junk), body: junk)
            #expect(code == 400 && detail.hasPrefix("malformed sync body"), "\(junk.prefix(8)): \(code) \(detail)")
        }
    }

    @Test func wrongContentTypeIsRefused() async throws {
        var s = Signer(alice); s.contentType = "text/plain"
        #expect(try await status(s.headers(body: body)).0 == 415)
    }

    @Test func oversizeBodyIsRefused() async throws {
        let big = [UInt8](repeating: 0x20, count: SyncProtocol.maxBodyBytes + 1)
        #expect(try await status(Signer(alice).headers(body: big), body: big).0 == 413)
    }

    @Test func tooManyChangesInOneBatchAreRefused() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let c = try laptop.note("X").1
        let many = syncBody(Array(repeating: c, count: SyncProtocol.maxBatch + 1))
        #expect(try await status(Signer(alice).headers(body: many), body: many).0 == 413)
    }

    @Test func tooManyRequestsAreRefused() async throws {
        let limited = try await TestServer.make(requestsPerMinute: 2)
        let k = try await limited.enroll(.field, "k")
        var codes: [Int] = []
        for _ in 0..<3 { codes.append(try await send(limited, headers: Signer(k).headers(body: body), body: body).0) }
        #expect(codes == [200, 200, 429])
    }

    /// Change-level refusals: the request is fine (200), the change is refused by id with a reason.
    func refusals(_ changes: [SignedChange], by key: DeviceKey) async throws -> [String: String] {
        let b = syncBody(changes)
        let (code, answer, _, _) = try await send(ts, headers: Signer(key).headers(body: b), body: b)
        #expect(code == 200)
        var out: [String: String] = [:]
        for r in answer["refused"]?.arrayValue ?? [] { out[r["id"]!.stringValue!] = r["code"]!.stringValue! }
        return out
    }

    /// Another device's changes relayed by bob (a server that lost them, work carried to bob
    /// by bundle) are checked as if alice had sent them: her key, her chain. A request carries
    /// one author's changes; a key not on the roster relays nothing.
    @Test func aRelayedChangeIsCheckedAsItsAuthorsAndNoOneElses() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let c1 = try laptop.note("A-1").1, c2 = try laptop.note("A-2").1, c3 = try laptop.note("A-3").1
        #expect(try await refusals([c1, c2], by: bob).isEmpty)
        let vector = try await ts.store.vector()
        #expect(try await ts.store.hasChange(c2.id))
        #expect(vector[alice.deviceID] == 2 && vector[bob.deviceID] == 0, "stored as alice's, not bob's")
        let seen = try await ts.store.deviceReports()
        #expect(seen.first { $0.entry.device == alice.deviceID }?.lastSync == nil, "bob synced, not alice")
        #expect(seen.first { $0.entry.device == bob.deviceID }?.lastSync != nil)

        var bytes = c3.bytes
        bytes[50] ^= 1
        let forged = try SignedChange(bytes: bytes, signature: c3.signature, values: c3.values)
        #expect(try await refusals([forged], by: bob) == [forged.id.hex: "bad_signature"])
        var bobs = TestLaptop(key: bob, roster: try await ts.store.roster())
        let b1 = try bobs.note("B-1").1
        #expect(try await refusals([c3, b1], by: bob) == [b1.id.hex: "wrong_uploader"], "one author a request")
        #expect(try await ts.store.hasChange(c3.id))
        #expect(try await !ts.store.hasChange(b1.id))

        // Values travel beside the signed bytes: a relay that drops them is refused, or the
        // server would keep alice's change without them for good.
        let c4 = try laptop.note("A-4").1
        var stripped = c4
        stripped.dropValues(Array(c4.values.keys))
        #expect(!stripped.isWhole && c4.isWhole)
        #expect(try await refusals([stripped], by: bob) == [c4.id.hex: "values_missing"])
        #expect(try await refusals([c4], by: bob).isEmpty, "whole, it is taken")
        #expect(try await ts.store.view(try #require(c4.change.ops.first?.record))?.fields["ref"]?.value == .string("A-4"))

        let stranger = DeviceKey()
        let own = try await ts.store.roster().sorted + [RosterEntry(publicKey: stranger.publicKey, name: "stranger", role: .field, enrolledAtMillis: 0, revokedAfterSeq: nil)]
        var outside = TestLaptop(key: stranger, roster: Roster(own))
        let x = try outside.note("X").1
        #expect(try await refusals([x], by: bob) == [x.id.hex: "unknown_device"])
        #expect(try await !ts.store.hasChange(x.id))
    }

    /// A laptop that applied an erase holds the erased record's changes without those values:
    /// relayed so, they are taken where the server holds the erase, and only there.
    @Test func aRelayedChangeMayLackOnlyValuesTheServerHoldsErased() async throws {
        let press = try await ts.enroll(.press, "press"), hq = try await ts.enroll(.coordinator, "hq")
        let roster = try await ts.store.roster()
        var pl = TestLaptop(key: press, roster: roster), hl = TestLaptop(key: hq, roster: roster)
        func contact(_ name: String) throws -> SignedChange {
            var d = ChangeDraft()
            let id = RecordID.make(.contact, by: press.deviceID)
            d.create(id, type: .contact, kind: nil)
            d.set("fn", to: .string(name), onNew: id, type: .contact)
            return try pl.replica.commit(d, key: press, wallMillis: Timestamps.nowMillis)
        }
        let erasedOne = try contact("Erased Person"), keptOne = try contact("Kept Person")
        _ = try Replicator.receive(erasedOne, into: &hl.replica, wallMillis: Timestamps.nowMillis)
        var e = ChangeDraft()
        e.erase(try #require(erasedOne.change.ops.first?.record))
        #expect(try await refusals([try hl.replica.commit(e, key: hq, wallMillis: Timestamps.nowMillis)], by: hq).isEmpty)
        var strippedErased = erasedOne, strippedKept = keptOne
        strippedErased.dropValues(Array(erasedOne.values.keys))
        strippedKept.dropValues(Array(keptOne.values.keys))
        #expect(try await refusals([strippedErased], by: bob).isEmpty, "the server holds that record erased")
        #expect(try await refusals([strippedKept], by: bob) == [keptOne.id.hex: "values_missing"])
        #expect(try await refusals([keptOne], by: bob).isEmpty)
    }

    /// A revoked device's changes after its revocation stay refused whoever carries them.
    @Test func aRevokedDevicesLaterChangesAreRefusedWhenRelayed() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let c1 = try laptop.note("before").1
        #expect(try await refusals([c1], by: alice).isEmpty)
        let c2 = try laptop.note("after").1
        _ = try await ts.store.revoke(alice.deviceID)
        let refused = try await refusals([c2], by: bob)
        #expect(refused.keys.contains(c2.id.hex) && refused[c2.id.hex] != "wrong_uploader", "\(refused)")
        #expect(try await ts.store.vector()[alice.deviceID] == 1)
    }

    @Test func forkedChainIsRefused() async throws {
        var one = TestLaptop(key: alice, roster: try await ts.store.roster())
        var two = TestLaptop(key: alice, roster: try await ts.store.roster())  // the same key on two laptops
        let c1 = try one.note("first").1
        let fork = try two.note("fork").1
        #expect(try await refusals([c1], by: alice).isEmpty)
        #expect(try await refusals([fork], by: alice) == [fork.id.hex: "forked_chain"])
        // Kept as evidence once, listed for the administrator and named in every answer.
        #expect(try await refusals([fork], by: alice) == [fork.id.hex: "forked_chain"])
        let kept = try await ts.store.forks(limit: 10)
        #expect(kept.map(\.refused) == [fork.id] && kept.first?.device == alice.deviceID && kept.first?.seq == 1)
        let b = syncBody([])
        let (code, answer, _, _) = try await send(ts, headers: Signer(bob).headers(body: b), body: b)
        #expect(code == 200)
        #expect(answer["forks"] == .array([.object(["device": .string(alice.deviceID.description), "seq": .int(1), "refused": .string(fork.id.hex)])]),
                "\(answer)")
    }

    /// A device that signs a new version of every seq it ever wrote leaves a bounded trace.
    @Test func forksKeptPerDeviceAreBounded() async throws {
        var one = TestLaptop(key: alice, roster: try await ts.store.roster())
        var twin = TestLaptop(key: alice, roster: try await ts.store.roster())
        let n = ForkReport.maxPerDevice + 3
        var chain: [SignedChange] = [], forks: [SignedChange] = []
        for i in 0..<n { chain.append(try one.note("c\(i)").1); forks.append(try twin.note("f\(i)").1) }
        #expect(try await refusals(chain, by: alice).isEmpty)
        for f in forks { _ = try await refusals([f], by: alice) }
        #expect(try await ts.store.forks(limit: 1_000).count == ForkReport.maxPerDevice)
    }

    @Test func tamperedChangeIsRefusedAndTheRestKept() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let c1 = try laptop.note("one").1
        let c2 = try laptop.note("two").1
        var bytes = c2.bytes
        bytes[50] ^= 1
        let forged = try SignedChange(bytes: bytes, signature: c2.signature, values: c2.values)
        #expect(try await refusals([c1, forged], by: alice) == [forged.id.hex: "bad_signature"])
        #expect(try await ts.store.hasChange(c1.id))
    }

    @Test func opTheRoleForbidsIsKeptButRefused() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let (id, c1) = try laptop.note("one")
        var d = ChangeDraft()
        d.review("approved", comment: nil, on: laptop.replica.records[id]!)
        let review = try laptop.replica.commit(d, key: alice, wallMillis: Timestamps.nowMillis)
        let refused = try await refusals([c1, review], by: alice)
        #expect(refused == [review.id.hex: "forbidden"])
        #expect(try await ts.store.hasChange(review.id), "kept, so alice's chain stays whole")
        #expect(try await ts.store.view(id)?.fields["review"] == nil, "and applied nowhere")
    }

    /// A new clearance day with a negative depth, which the schema refuses: a draft the CLI
    /// would never make.
    func negativeDepth(_ laptop: inout TestLaptop) throws -> SignedChange {
        var d = ChangeDraft()
        let id = RecordID.make(.note, by: laptop.key.deviceID)
        d.create(id, type: .note, kind: "clearance_day")
        d.set("depth_cm", to: .int(-5), onNew: id, type: .note)
        return try laptop.replica.commit(d, key: laptop.key, wallMillis: Timestamps.nowMillis)
    }

    @Test func valueBreakingTheSchemaIsRefused() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let c = try negativeDepth(&laptop)
        #expect(try await refusals([c], by: alice) == [c.id.hex: "invalid_value"])
    }

    @Test func aChangeWaitingBehindARefusedOneIsNotAcknowledged() async throws {
        var laptop = TestLaptop(key: alice, roster: try await ts.store.roster())
        let refused = try negativeDepth(&laptop)
        let after = try laptop.note("after").1
        // Sent twice, as the laptop's next sync sends both again.
        for _ in 0..<2 {
            let b = syncBody([refused, after])
            let (code, answer, _, _) = try await send(ts, headers: Signer(alice).headers(body: b), body: b)
            #expect(code == 200)
            #expect(answer["accepted"]?.arrayValue == [], "held behind the refused change, so not acknowledged")
            #expect(answer["refused"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [refused.id.hex])
        }
        #expect(try await !ts.store.hasChange(after.id))
    }

    @Test func expiredInviteIsRefused() async throws {
        let token = try await ts.store.createInvite(role: .field, name: "late", ttlMillis: 1, now: Timestamps.nowMillis - 10_000)
        let key = DeviceKey()
        let b = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: key.publicKey, name: "late")))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        let (code, detail) = try await status(s.headers(body: b), body: b, uri: "/v1/enroll")
        #expect(code == 403 && detail.contains("expired"))
    }

    @Test func enrolmentSignedByAnotherKeyIsRefused() async throws {
        let token = try await ts.store.createInvite(role: .field, name: "x", ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        let claimed = DeviceKey(), actual = DeviceKey()
        let b = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: claimed.publicKey, name: "x")))
        var s = Signer(actual); s.target = "https://localhost/v1/enroll"
        #expect(try await status(s.headers(body: b), body: b, uri: "/v1/enroll").0 == 401)
        var s2 = Signer(actual); s2.target = "https://localhost/v1/enroll"; s2.keyid = claimed.deviceID.description
        #expect(try await status(s2.headers(body: b), body: b, uri: "/v1/enroll").0 == 401)
    }

    @Test func unknownInviteIsRefused() async throws {
        let key = DeviceKey()
        let b = Array(try JSONEncoder().encode(EnrollRequest(token: "made-up", publicKey: key.publicKey, name: "x")))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        #expect(try await status(s.headers(body: b), body: b, uri: "/v1/enroll").0 == 403)
    }
}
