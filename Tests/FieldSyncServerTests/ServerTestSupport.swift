import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import FieldSyncServer

/// A server in a temporary data folder, with devices enrolled through real invites, on the
/// store `FIELDSYNC_TEST_STORE` names (`sqlite`, the default, or `postgres`): scripts/test.sh
/// runs this whole suite once on each, so both stores pass the same tests.
final class TestServer: @unchecked Sendable {
    let kind: StoreKind
    let dir: String
    let data: ServerData
    /// The server's store, as the server and the admin commands use it.
    let store: any SyncStoreAdmin
    let server: SyncServer
    let serverKey: DeviceKey
    /// PostgreSQL's schema for this server, dropped with it.
    let database: TestDatabase?

    /// The store the run asks for.
    static var configuredKind: StoreKind {
        ProcessInfo.processInfo.environment["FIELDSYNC_TEST_STORE"].flatMap(StoreKind.init(rawValue:)) ?? .sqlite
    }

    private init(kind: StoreKind, dir: String, data: ServerData, store: any SyncStoreAdmin, server: SyncServer, serverKey: DeviceKey,
                 database: TestDatabase?) {
        self.kind = kind
        self.dir = dir
        self.data = data
        self.store = store
        self.server = server
        self.serverKey = serverKey
        self.database = database
    }

    /// `kind` nil: the configured store. A test about one store's own machinery names it.
    static func make(_ kind: StoreKind? = nil, requestsPerMinute: Int = 10_000) async throws -> TestServer {
        let kind = kind ?? configuredKind
        let dir = NSTemporaryDirectory() + "fieldsync-server-" + UUID().uuidString
        let data = ServerData(directory: dir)
        let store: any SyncStoreAdmin
        var database: TestDatabase?
        switch kind {
        case .sqlite:
            _ = try data.initialise(hostnames: ["localhost"])
            store = SQLiteSyncStore(try data.openStore())
        case .postgres:
            let db = try await TestDatabase.make()
            database = db
            let pg = try await db.open()
            let result = try data.initialise(hostnames: ["localhost"], sqlite: false)
            _ = try await pg.setMetaOnce("server_public_key", result.serverPublicKey.hex)
            store = pg
        }
        let key = try data.serverKey()
        let server = SyncServer(store: store, key: key, caPEM: try data.caPEM(), requestsPerMinute: requestsPerMinute)
        return TestServer(kind: kind, dir: dir, data: data, store: store, server: server, serverKey: key, database: database)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: dir)
        if let database { Task { await database.close() } }
    }

    /// What `fieldsync-server` takes to reach this server's store.
    var storeArgs: [String] { ["--data", dir] + (database.map { ["--postgres", $0.url] } ?? []) }

    func enroll(_ role: Role, _ name: String) async throws -> DeviceKey {
        let key = DeviceKey()
        let token = try await store.createInvite(role: role, name: name, ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        _ = try await store.enroll(token: token, publicKey: key.publicKey, name: name, now: Timestamps.nowMillis)
        return key
    }

    var app: some ApplicationProtocol { Application(router: server.router()) }
}

/// Builds signed requests the way a client does, with knobs to break each part.
struct Signer {
    var key: DeviceKey
    var keyid: String?
    var method = "POST"
    var target = "https://localhost/v1/sync"
    /// Nil: what the target's route expects.
    var contentType: String?
    var components = HTTPSignature.requestComponents
    var created = Int64(Timestamps.nowMillis / 1000)
    /// The longest validity the server accepts. With the whole suite on two cores, an async test
    /// can wait a minute for a thread while the synchronous end-to-end tests hold the
    /// cooperative pool; a signature valid for 60 s then expired before its second use (seen
    /// once, in the replay tests).
    var expiresIn: Int64 = HTTPSignature.maxAgeSeconds
    var nonce = HTTPSignature.nonce()
    var alg = "ed25519"
    var signedDigest: String?
    var signedContentType: String?

    init(_ key: DeviceKey) { self.key = key }

    func headers(body: [UInt8]) -> HTTPFields {
        let digest = HTTPSignature.contentDigest(body)
        let params = HTTPSignature.Parameters(components: components, created: created, expires: created + expiresIn, nonce: nonce,
                                              keyid: keyid ?? key.deviceID.description, alg: alg)
        let contentType = self.contentType ?? (target.hasSuffix("/v1/sync") ? SyncProtocol.syncType : SyncProtocol.contentType)
        let all = [method, target, signedDigest ?? digest, signedContentType ?? contentType]
        let values = components.map { c in all[HTTPSignature.requestComponents.firstIndex(of: c)!] }
        let (input, sig) = HTTPSignature.sign(values: values, parameters: params, key: key)
        var h = HTTPFields()
        h[.contentType] = contentType
        h[HTTPField.Name("Content-Digest")!] = digest
        h[HTTPField.Name("Signature-Input")!] = input
        h[HTTPField.Name("Signature")!] = sig
        return h
    }
}

func syncBody(_ changes: [SignedChange], vector: VersionVector = VersionVector()) -> [UInt8] {
    try! SyncRequest(vector: vector, changes: changes).body()
}

/// A body as JSON for the tests to read: a sync body's header, with its envelopes added as
/// base64 strings under "changes"; any other body parsed as JSON (null if it is not).
func readableBody(_ bytes: [UInt8], contentType: String?) -> JSONValue {
    guard contentType == SyncProtocol.syncType, let (header, changes) = try? SyncBody.split(bytes),
          case .object(var o)? = try? JSONValue.parse(header) else { return (try? JSONValue.parse(bytes)) ?? .null }
    o["changes"] = .array(changes.map { .string(Data($0).base64EncodedString()) })
    return .object(o)
}

/// An envelope as `readableBody` shows it.
func envelope(_ text: JSONValue) -> SignedChange? {
    text.stringValue.flatMap { Data(base64Encoded: $0) }.flatMap { try? SignedChange(envelope: Array($0)) }
}

/// A local replica for a test device, to make real signed changes.
struct TestLaptop {
    let key: DeviceKey
    var replica: MemoryReplica

    init(key: DeviceKey, roster: Roster) { self.key = key; replica = MemoryReplica(roster: roster) }

    mutating func note(_ ref: String, kind: String = "survey") throws -> (RecordID, SignedChange) {
        var d = ChangeDraft()
        let id = RecordID.make(.note, by: key.deviceID)
        d.create(id, type: .note, kind: kind)
        d.set("ref", to: .string(ref), onNew: id, type: .note)
        return (id, try replica.commit(d, key: key, wallMillis: Timestamps.nowMillis))
    }
}

extension SyncStore {
    /// One exchange as the server runs it, with the roster as stored.
    func exchange(device: DeviceID, upload: [SignedChange], clientVector: VersionVector = VersionVector(), limits: ExchangeLimits,
                  now: UInt64 = Timestamps.nowMillis, nonce: SignatureNonce? = nil) async throws -> ExchangeResult {
        try await exchange(ExchangeRequest(device: device, roster: try await roster(), upload: upload, clientVector: clientVector,
                                           nonce: nonce, now: now), limits: limits)
    }
}
