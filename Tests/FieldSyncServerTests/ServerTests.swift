import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing
@testable import FieldSyncServer

/// Runs one request through the in-process router; returns the status and decoded body.
func send(_ ts: TestServer, uri: String = "/v1/sync", method: HTTPRequest.Method = .post, headers: HTTPFields,
          body: [UInt8]) async throws -> (Int, JSONValue, HTTPFields, [UInt8]) {
    try await ts.app.test(.router) { client in
        try await client.execute(uri: uri, method: method, headers: headers, body: ByteBuffer(bytes: body)) { r in
            let bytes = Array(r.body.readableBytesView)
            return (r.status.code, readableBody(bytes, contentType: r.headers[.contentType]), r.headers, bytes)
        }
    }
}

@Suite struct ServerSyncTests {
    @Test func twoLaptopsExchangeThroughTheServer() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a"), kb = try await ts.enroll(.coordinator, "b")
        let roster = try await ts.store.roster()
        var a = TestLaptop(key: ka, roster: roster)
        let (id, c1) = try a.note("UA-1")
        let body = syncBody([c1])
        let signer = Signer(ka)
        let (status, answer, headers, raw) = try await send(ts, headers: signer.headers(body: body), body: body)
        #expect(status == 200)
        #expect(answer["accepted"] == .array([.string(c1.id.hex)]))
        // The answer is signed by the server key and bound to the request's nonce.
        let (params, sig) = try HTTPSignature.parse(input: headers[HTTPField.Name("Signature-Input")!]!, signature: headers[HTTPField.Name("Signature")!]!)
        #expect(params.nonce == signer.nonce)
        #expect(HTTPSignature.verify(values: ["200", HTTPSignature.contentDigest(raw), SyncProtocol.syncType], parameters: params, signature: sig,
                                     publicKey: ts.serverKey.publicKey))
        #expect(try await ts.store.hasChange(c1.id), "committed before the answer")

        // Laptop b pulls it.
        let pull = syncBody([])
        let (s2, a2, _, _) = try await send(ts, headers: Signer(kb).headers(body: pull), body: pull)
        #expect(s2 == 200)
        var b = TestLaptop(key: kb, roster: roster)
        for text in a2["changes"]?.arrayValue ?? [] {
            _ = try Replicator.receive(try #require(envelope(text)), into: &b.replica, wallMillis: Timestamps.nowMillis)
        }
        #expect(b.replica.record(id) == a.replica.record(id))
        #expect(a2["more"] == .bool(false))
        // Re-sending is harmless.
        let again = syncBody([c1])
        let (s3, a3, _, _) = try await send(ts, headers: Signer(ka).headers(body: again), body: again)
        #expect(s3 == 200 && a3["accepted"] == .array([.string(c1.id.hex)]) && a3["refused"] == .array([]))
    }

    @Test func largeBacklogsComeInBoundedBatchesWithMore() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a"), kb = try await ts.enroll(.field, "b")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster())
        var changes: [SignedChange] = []
        for i in 0..<(SyncProtocol.maxBatch + 20) { changes.append(try a.note("N-\(i)").1) }
        _ = try await ts.store.exchange(device: ka.deviceID, upload: changes, clientVector: VersionVector(), limits: .fixed(10_000), now: Timestamps.nowMillis, nonce: nil)
        let pull = syncBody([])
        let (_, first, _, _) = try await send(ts, headers: Signer(kb).headers(body: pull), body: pull)
        #expect(first["changes"]?.arrayValue?.count == SyncProtocol.maxBatch)
        #expect(first["more"] == .bool(true))
        let next = syncBody([], vector: VersionVector([ka.deviceID: UInt64(SyncProtocol.maxBatch)]))
        let (_, second, _, _) = try await send(ts, headers: Signer(kb).headers(body: next), body: next)
        #expect(second["changes"]?.arrayValue?.count == 20)
        #expect(second["more"] == .bool(false))
    }

    /// A request whose body took longer than `maxTransferSeconds` to arrive after its head is
    /// refused as too slow (408, which the laptop answers by sending less), not run: its
    /// signature's nonce is kept only that long past its expiry.
    @Test func aBodyThatTakesLongerThanTheTransferLimitIsRefused() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster())
        let c = try a.note("UA-408").1
        // The server's clock reads the head's arrival first, then the body's end 11 minutes later.
        let start = Timestamps.nowMillis
        let reads = Mutex(0)
        let server = SyncServer(store: ts.store, key: ts.serverKey, caPEM: try ts.data.caPEM(), clock: {
            reads.withLock { n in n += 1; return n == 1 ? start : start + 660_000 }
        })
        let body = syncBody([c])
        let status = try await Application(router: server.router()).test(.router) { client in
            try await client.execute(uri: "/v1/sync", method: .post, headers: Signer(ka).headers(body: body), body: ByteBuffer(bytes: body)) { $0.status.code }
        }
        #expect(status == 408)
        #expect(try await !ts.store.hasChange(c.id))
    }

    /// An exchange alone on the server runs on the calling thread; it must store, refuse and
    /// answer exactly as one queued on GRDB's threads, and refuse a replayed nonce the same way.
    @Test(arguments: [false, true]) func anExchangeAloneDoesWhatAQueuedOneDoes(alone: Bool) async throws {
        let ts = try await TestServer.make(.sqlite)  // the SQLite store's own thread hand-off
        let sync = SQLiteSyncStore(try #require(ts.store as? SQLiteSyncStore).replica, inlineWhenAlone: alone)
        let ka = try await ts.enroll(.field, "a"), kb = try await ts.enroll(.field, "b")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster()), b = TestLaptop(key: kb, roster: try await ts.store.roster())
        let theirs = try (0..<3).map { try b.note("B-\($0)").1 }
        _ = try await sync.exchange(device: kb.deviceID, upload: theirs, clientVector: VersionVector(), limits: .fixed(100),
                                        now: Timestamps.nowMillis, nonce: nil)
        let mine = try (0..<4).map { try a.note("A-\($0)").1 }
        let forged = theirs[0]  // signed by b, uploaded by a: refused
        let nonce = SignatureNonce(device: ka.deviceID.description, nonce: "n-1", expiresAt: Timestamps.nowMillis + 60_000)
        let result = try await sync.exchange(device: ka.deviceID, upload: mine + [forged], clientVector: VersionVector(), limits: .fixed(100),
                                                 now: Timestamps.nowMillis, nonce: nonce)
        #expect(result.accepted == mine.map(\.id))
        #expect(result.refused.map(\.code) == ["wrong_uploader"])
        #expect(Set(result.lacking) == Set(theirs.map(\.envelope)))
        #expect(result.vector[ka.deviceID] == 4 && result.vector[kb.deviceID] == 3 && !result.more)
        #expect(try await ts.store.hasChange(mine[3].id))
        await #expect(throws: SyncStoreError.self) {
            try await sync.exchange(device: ka.deviceID, upload: [], clientVector: VersionVector(), limits: .fixed(100),
                                        now: Timestamps.nowMillis, nonce: nonce)
        }
    }

    /// The limits are asked when the work starts, not when the request came: a laptop first in a
    /// burst finds the server idle on arrival, and crowded once it holds the writer.
    @Test func theLimitsAreAskedWhenTheWorkStarts() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a"), kb = try await ts.enroll(.field, "b")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster()), b = TestLaptop(key: kb, roster: try await ts.store.roster())
        for i in 0..<12 { _ = try await ts.store.exchange(device: kb.deviceID, upload: [try b.note("B-\(i)").1], clientVector: VersionVector(),
                                                          limits: .fixed(100), now: Timestamps.nowMillis, nonce: nil) }
        let changes = try (0..<30).map { try a.note("A-\($0)").1 }
        let asked = Mutex(0)
        // Generous when asked first (as on arrival), tight from then on.
        let limits = ExchangeLimits(takes: { asked.withLock { $0 += 1; return $0 == 1 ? 500 : 5 } }, sends: { 4 })
        #expect(limits.takes() == 500)
        let result = try await ts.store.exchange(device: ka.deviceID, upload: changes, clientVector: VersionVector(), limits: limits,
                                                 now: Timestamps.nowMillis, nonce: nil)
        #expect(result.accepted == changes.prefix(5).map(\.id))
        #expect(try await !ts.store.hasChange(changes[5].id))
        #expect(result.lacking.count == 4 && result.more)
    }

    /// The roster travels only when it differs from the one the laptop names, and it is signed.
    @Test func theRosterTravelsWhenItChanged() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a")
        func exchange(digest: String?) async throws -> SignedRoster? {
            var request = SyncRequest(vector: VersionVector(), changes: [])
            request.rosterDigest = digest
            let body = try request.body()
            let (status, _, _, raw) = try await send(ts, headers: Signer(ka).headers(body: body), body: body)
            #expect(status == 200)
            return try SyncResponse(body: raw).roster
        }
        let first = try #require(try await exchange(digest: nil))
        #expect(try first.verified(serverKey: ts.serverKey.publicKey)[ka.deviceID]?.name == "a")
        #expect(try await exchange(digest: first.digest) == nil)
        #expect(try await exchange(digest: "stale") == first)
        _ = try await ts.enroll(.press, "b")
        let second = try #require(try await exchange(digest: first.digest))
        #expect(second.digest != first.digest)
        #expect(try second.verified(serverKey: ts.serverKey.publicKey).sorted.count == 2)
    }

    @Test func theWorkOfOneExchangeShrinksWithTheLoad() {
        #expect(ExchangeLoad.sendLimit(crowd: 1) == SyncProtocol.maxBatch)
        #expect(ExchangeLoad.sendLimit(crowd: 10) == SyncProtocol.maxBatch)
        #expect(ExchangeLoad.sendLimit(crowd: 20) == 250)
        #expect(ExchangeLoad.sendLimit(crowd: 50) == 100)
        #expect(ExchangeLoad.sendLimit(crowd: 10_000) == 50)
        #expect(ExchangeLoad.uploadLimit(crowd: 5) == SyncProtocol.maxBatch)
        #expect(ExchangeLoad.uploadLimit(crowd: 10) == 100)
        #expect(ExchangeLoad.uploadLimit(crowd: 20) == 25)
        #expect(ExchangeLoad.uploadLimit(crowd: 50) == 4)
        #expect(ExchangeLoad.uploadLimit(crowd: 10_000) == 4)
    }

    /// A crowd that came in at once counts as one while its exchanges are still arriving, though
    /// each has already finished: the load is the larger of those in flight and those begun in
    /// the last quarter-second.
    @Test func aCrowdArrivingCountsBeforeItIsInFlight() async throws {
        let load = ExchangeLoad()
        for _ in 0..<30 { load.enter(); load.leave() }
        load.enter()
        #expect(load.current == 1)
        #expect(load.crowd >= 31)
        #expect(ExchangeLoad.uploadLimit(crowd: load.crowd) < ExchangeLoad.uploadLimit(crowd: load.current))
        try await Task.sleep(for: .milliseconds(400))
        #expect(load.crowd == 1, "the window has passed")
        load.leave()
    }

    /// With 49 other exchanges in flight the server stores the first 4 changes of a batch and
    /// neither accepts nor refuses the rest, which the laptop sends again.
    @Test func underLoadAnExchangeTakesPartOfTheBatch() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster())
        var changes: [SignedChange] = []
        for i in 0..<130 { changes.append(try a.note("N-\(i)").1) }
        for _ in 0..<49 { ts.server.load.enter() }
        let body = syncBody(changes)
        let (status, answer, _, _) = try await send(ts, headers: Signer(ka).headers(body: body), body: body)
        #expect(status == 200)
        #expect(answer["accepted"]?.arrayValue?.compactMap(\.stringValue) == changes.prefix(4).map(\.id.hex))
        #expect(answer["refused"] == .array([]))
        #expect(try await !ts.store.hasChange(changes[4].id))
        for _ in 0..<49 { ts.server.load.leave() }
        // The crowd's arrivals count for a quarter of a second (`ExchangeLoad.window`): the
        // laptop's next exchange comes after it.
        try await Task.sleep(for: ExchangeLoad.window + .milliseconds(50))
        let rest = syncBody(Array(changes.dropFirst(4)), vector: VersionVector([ka.deviceID: 4]))
        let (_, second, _, _) = try await send(ts, headers: Signer(ka).headers(body: rest), body: rest)
        #expect(second["accepted"]?.arrayValue?.count == 126)
        #expect(try await ts.store.vector()[ka.deviceID] == 130)
    }

    @Test func enrolmentUsesTheInviteOnce() async throws {
        let ts = try await TestServer.make()
        let token = try await ts.store.createInvite(role: .press, name: "press-1", ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        let key = DeviceKey()
        let body = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: key.publicKey, name: "press-1")))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        let (status, answer, _, _) = try await send(ts, uri: "/v1/enroll", headers: s.headers(body: body), body: body)
        #expect(status == 200)
        #expect(answer["role"] == "press" && answer["device"] == .string(key.deviceID.description))
        let roster = try SignedRoster(entries: #require(answer["roster"]?["entries"]?.stringValue),
                                      signature: #require(answer["roster"]?["signature"]?.stringValue))
            .verified(serverKey: ts.serverKey.publicKey)
        #expect(roster[key.deviceID]?.role == .press)
        // Used twice: refused.
        let other = DeviceKey()
        let body2 = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: other.publicKey, name: "x")))
        var s2 = Signer(other); s2.target = "https://localhost/v1/enroll"
        let (status2, problem, _, _) = try await send(ts, uri: "/v1/enroll", headers: s2.headers(body: body2), body: body2)
        #expect(status2 == 403 && problem["detail"]?.stringValue?.contains("already used") == true)
    }

    @Test func metricsAndHealth() async throws {
        let ts = try await TestServer.make()
        let (status, health, _, _) = try await send(ts, uri: "/healthz", method: .get, headers: [:], body: [])
        #expect(status == 200 && health["status"] == "ok")
        let ka = try await ts.enroll(.field, "a")
        let body = syncBody([])
        _ = try await send(ts, headers: Signer(ka).headers(body: body), body: body)
        _ = try await send(ts, headers: [:], body: body)
        let (_, _, _, raw) = try await send(ts, uri: "/metrics", method: .get, headers: [:], body: [])
        let text = String(decoding: raw, as: UTF8.self)
        #expect(text.contains("fieldsync_requests_total{route=\"/v1/sync\",status=\"200\"} 1"))
        #expect(text.contains("fieldsync_requests_total{route=\"/v1/sync\",status=\"415\"} 1"))
        #expect(text.contains("fieldsync_sync_duration_seconds_bucket"))
        #expect(text.contains("fieldsync_devices_seen_last_day 1.0"))
    }
}

@Suite struct ServerInitTests {
    @Test func initMakesKeysAndRefusesToRunTwice() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-init-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = ServerData(directory: dir)
        let result = try data.initialise(hostnames: ["sync.example.org", "10.0.0.5"])
        #expect(result.caPin.hasPrefix("sha256:") && result.caPin.count == 71)
        #expect(try ServerData.pin(caPEM: data.caPEM()) == result.caPin)
        for secret in [data.serverKeyPath, data.tlsKeyPath] {
            #expect(try FileManager.default.attributesOfItem(atPath: secret)[.posixPermissions] as? Int == 0o600)
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/ca.key"), "the CA key is not kept in the data folder")
        let key = try data.serverKey()
        #expect(throws: ServerError.self) { _ = try data.initialise(hostnames: []) }
        #expect(try data.serverKey().publicKey == key.publicKey, "the refused second init changed nothing")
    }
}
