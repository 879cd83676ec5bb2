import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Testing
@testable import FieldSyncServer

/// An enrolled device that signs what no honest client would (issue 23, items 2 and 4): the
/// server refuses it with a code and keeps serving.
@Suite struct HostileDeviceServerTests {
    func signed(_ ops: [Op], key: DeviceKey, seq: UInt64, prev: ChangeID, values: [UInt16: OpValue] = [:]) -> SignedChange {
        SignedChange.author(Change(device: key.deviceID, seq: seq, prev: prev, hlc: HLC(millis: Timestamps.nowMillis, counter: 0),
                                   wallMillis: Timestamps.nowMillis, ops: ops), values: values, key: key)
    }

    @Test func aSeqBeyondSixtyThreeBitsIsRefusedAndTheServerServesOn() async throws {
        let ts = try await TestServer.make()
        let key = try await ts.enroll(.field, "mallory")
        let huge = signed([Op(action: .create, recordType: .note, record: RecordID.make(.note, by: key.deviceID), kind: "survey")],
                          key: key, seq: UInt64(Int64.max) + 1, prev: ChangeID(bytes: [UInt8](repeating: 7, count: 32))!)
        var body = syncBody([huge])
        var (status, answer, _, _) = try await send(ts, headers: Signer(key).headers(body: body), body: body)
        #expect(status == 200)
        #expect(answer["refused"]?.arrayValue?.first?["code"] == "oversize")
        // A vector entry past 2^63 is refused as a bad request.
        var request = SyncRequest(vector: VersionVector(), changes: [])
        request.vector = [key.deviceID.description: UInt64.max]
        body = try request.body()
        (status, _, _, _) = try await send(ts, headers: Signer(key).headers(body: body), body: body)
        #expect(status == 400)
        // And an honest sync still goes through.
        var laptop = TestLaptop(key: key, roster: try await ts.store.roster())
        let (_, c) = try laptop.note("UA-1")
        body = syncBody([c])
        (status, answer, _, _) = try await send(ts, headers: Signer(key).headers(body: body), body: body)
        #expect(status == 200 && answer["accepted"] == .array([.string(c.id.hex)]))
    }

    /// A large upload to an idle server is decoded on every core: in order, and a change that
    /// does not decode is named by its place in the request, as when decoded on one.
    @Test func anUploadDecodedOnEveryCoreKeepsItsOrderAndPlaces() async throws {
        let key = DeviceKey()
        var prev = ChangeID.zero
        var envelopes: [[UInt8]] = []
        for seq in 1...40 {
            var d = ChangeDraft()
            let id = RecordID.make(.note, by: key.deviceID)
            d.create(id, type: .note, kind: "survey")
            d.set("narrative", to: .string(String(repeating: "lane \(seq) cleared; ", count: 400)), onNew: id, type: .note)
            let c = signed(d.ops, key: key, seq: UInt64(seq), prev: prev, values: d.values)
            prev = c.id
            envelopes.append(c.envelope)
        }
        for broken in [0, 17, 39] { envelopes[broken] = Array(envelopes[broken].prefix(30)) }
        #expect(envelopes.reduce(0) { $0 + $1.count } >= 128 << 10, "large enough to be split")
        let alone = await SyncServer.decode(envelopes, alone: true)
        let crowded = await SyncServer.decode(envelopes, alone: false)
        #expect(alone.undecodable.map(\.id) == ["#0", "#17", "#39"])
        #expect(alone.undecodable == crowded.undecodable)
        #expect(alone.upload.map(\.id) == crowded.upload.map(\.id) && alone.upload.count == 37)
        #expect(alone.upload.map(\.change.seq) == (1...40).filter { ![1, 18, 40].contains($0) }.map(UInt64.init))
    }

    @Test func aFieldDevicesDeleteTypedAsANoteLeavesAContactAlone() async throws {
        let ts = try await TestServer.make()
        let press = try await ts.enroll(.press, "press"), field = try await ts.enroll(.field, "mallory")
        let id = RecordID.make(.contact, by: press.deviceID)
        let name = OpValue(salt: [], value: "Olena Melnyk")
        let made = signed([Op(action: .create, recordType: .contact, record: id),
                           Op(action: .set, recordType: .contact, record: id, field: "fn", commitment: name.commitment)],
                          key: press, seq: 1, prev: .zero, values: [1: name])
        var body = syncBody([made])
        _ = try await send(ts, headers: Signer(press).headers(body: body), body: body)
        let evil = signed([Op(action: .delete, recordType: .note, record: id, refs: [OpRef(change: made.id, index: 1)])],
                          key: field, seq: 1, prev: .zero)
        body = syncBody([evil])
        let (status, answer, _, _) = try await send(ts, headers: Signer(field).headers(body: body), body: body)
        #expect(status == 200)
        // Kept in its author's chain (so it is acknowledged) but refused by policy, with the code.
        #expect(answer["refused"]?.arrayValue?.first?["code"] == "cross_record")
        let view = try #require(try await ts.store.view(id))
        #expect(view.type == .contact && !view.deleted && view.fields["fn"]?.value == "Olena Melnyk")
    }

    /// RFC 9421 makes `alg` optional (the key says what it is): a signature without it is
    /// accepted; one naming another algorithm is refused with its code.
    @Test func aSignatureWithoutAlgIsAcceptedAndAnotherAlgRefused() async throws {
        let ts = try await TestServer.make()
        let key = try await ts.enroll(.field, "a")
        let body = syncBody([])
        var signer = Signer(key)
        signer.alg = ""
        var (status, _, _, _) = try await send(ts, headers: signer.headers(body: body), body: body)
        #expect(status == 200)
        signer = Signer(key)
        signer.alg = "ed448"
        let problem: JSONValue
        (status, problem, _, _) = try await send(ts, headers: signer.headers(body: body), body: body)
        #expect(status == 401 && problem["type"]?.stringValue == Problem.Code.signatureAlgorithm.uri)
    }
}
