import FieldSyncCore
import FieldSyncStore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import Testing
@testable import FieldSyncServer

/// The stores a server can run on. PostgreSQL's tests need `FIELDSYNC_TEST_POSTGRES_URL` (set by
/// scripts/test.sh, which starts a throwaway cluster); with `FIELDSYNC_REQUIRE_POSTGRES=1` (also
/// set there) a missing URL fails the run instead of leaving PostgreSQL untested.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    static var postgresURL: String? { ProcessInfo.processInfo.environment["FIELDSYNC_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    static var available: [StoreKind] { postgresURL == nil ? [.sqlite] : [.sqlite, .postgres] }
}

let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A PostgreSQL schema of its own for one test, dropped at the end; `open` makes a store on it
/// as one more server process would (its own client and connections).
final class TestDatabase: Sendable {
    let url: String
    let schema: String
    let admin: PostgresClient
    let runners = Mutex<[Task<Void, Never>]>([])

    private init(url: String, schema: String, admin: PostgresClient) {
        self.url = url
        self.schema = schema
        self.admin = admin
    }

    static func make() async throws -> TestDatabase {
        guard let base = StoreKind.postgresURL else { throw ServerError("FIELDSYNC_TEST_POSTGRES_URL is not set") }
        let schema = "fs_" + UUID().uuidString.prefix(8).lowercased()
        let url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        let admin = PostgresClient(configuration: try PostgresURL(base).configuration, backgroundLogger: quietLogger)
        let db = TestDatabase(url: url, schema: schema, admin: admin)
        db.runners.withLock { $0.append(Task { await admin.run() }) }
        _ = try await admin.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \(schema)")).collect()
        return db
    }

    /// A store on this schema, migrated, with its own client (another "process").
    func open(maxConnections: Int = 4, beforeCommit: (@Sendable (DeviceID) async -> Void)? = nil) async throws -> PostgresSyncStore {
        var configuration = try PostgresURL(url).configuration
        configuration.options.maximumConnections = maxConnections
        let client = PostgresClient(configuration: configuration, backgroundLogger: quietLogger)
        runners.withLock { $0.append(Task { await client.run() }) }
        let store = PostgresSyncStore(client: client, logger: quietLogger, beforeCommit: beforeCommit)
        try await store.migrate()
        return store
    }

    /// Two server processes' stores on this database: every upload through `held` waits at
    /// `gate` before its commit; `free` and its store are the other process.
    func twoProcesses(holding gate: Gate) async throws -> (held: StoreUnderTest, free: StoreUnderTest, freeStore: PostgresSyncStore) {
        let p1 = try await open(beforeCommit: { _ in await gate.wait() })
        let p2 = try await open()
        return (StoreUnderTest(store: p1, database: nil, dir: nil), StoreUnderTest(store: p2, database: nil, dir: nil), p2)
    }

    func close() async {
        _ = try? await admin.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE")).collect()
        for t in runners.withLock({ $0 }) { t.cancel() }
    }
}

/// A store of either kind, with what a test needs to enrol devices and read it back.
struct StoreUnderTest: Sendable {
    let store: any SyncStoreAdmin
    let database: TestDatabase?
    let dir: String?

    static func make(_ kind: StoreKind) async throws -> StoreUnderTest {
        switch kind {
        case .sqlite:
            let dir = NSTemporaryDirectory() + "fieldsync-store-" + UUID().uuidString
            let data = ServerData(directory: dir)
            _ = try data.initialise(hostnames: ["localhost"])
            return StoreUnderTest(store: SQLiteSyncStore(try data.openStore()), database: nil, dir: dir)
        case .postgres:
            let db = try await TestDatabase.make()
            return StoreUnderTest(store: try await db.open(), database: db, dir: nil)
        }
    }

    func close() async {
        await database?.close()
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    func enroll(_ role: Role, _ name: String, key: DeviceKey = DeviceKey()) async throws -> DeviceKey {
        let token = try await store.createInvite(role: role, name: name, ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        _ = try await store.enroll(token: token, publicKey: key.publicKey, name: "", now: Timestamps.nowMillis)
        return key
    }

    func exchange(_ device: DeviceID, _ upload: [SignedChange], known: VersionVector = VersionVector(), limit: Int = 500,
                  nonce: SignatureNonce? = nil) async throws -> ExchangeResult {
        try await store.exchange(ExchangeRequest(device: device, roster: try await store.roster(), upload: upload, clientVector: known,
                                                 nonce: nonce, now: Timestamps.nowMillis), limits: .fixed(limit))
    }

    /// Everything the store serves, pulled as a new laptop would, in as many exchanges as it takes.
    func pullAll(as device: DeviceID, limit: Int = 37) async throws -> [SignedChange] {
        var known = VersionVector()
        var out: [SignedChange] = []
        for _ in 0..<10_000 {
            let r = try await exchange(device, [], known: known, limit: limit)
            for e in r.lacking {
                let c = try SignedChange(envelope: e)
                #expect(c.change.seq == known[c.change.device] + 1, "each device's changes come in seq order, none skipped")
                known.seqs[c.change.device] = c.change.seq
                out.append(c)
            }
            if !r.more { break }
        }
        return out
    }
}

/// SplitMix64, so a scenario replays from its seed.
struct Seeded: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Both server stores against the in-memory reference (`MemoryReplica`), and PostgreSQL's
/// promises for several processes on one database (issue 24).
@Suite(.timeLimit(.minutes(5))) struct PostgresStoreTests {
    @Test func postgresIsTestedWhenRequired() {
        if ProcessInfo.processInfo.environment["FIELDSYNC_REQUIRE_POSTGRES"] == "1" {
            #expect(StoreKind.postgresURL != nil, "FIELDSYNC_TEST_POSTGRES_URL is not set: the PostgreSQL store would go untested")
        }
    }

    /// Laptops of every role write concurrently to shared records (edits, sets, deletes,
    /// reviews, erasures, some forbidden by policy), see some of each other's changes, and
    /// upload in random batches, some with gaps (held, then released). Whatever the order, the
    /// store must take what the model takes, refuse what it refuses, and serve it all back: a new
    /// laptop's pull and (PostgreSQL) the `records` table equal the model's records.
    @Test(arguments: StoreKind.available) func uploadsInAnyOrderAgreeWithTheModel(_ kind: StoreKind) async throws {
        let seeds = UInt64(ProcessInfo.processInfo.environment["FIELDSYNC_STORE_SCENARIOS"].flatMap { Int($0) } ?? 6)
        let stats = Stats()
        for seed in 1...seeds {
            let failure = try await Self.scenario(kind, seed: seed, stats: stats)
            #expect(failure == nil, "seed \(seed) on \(kind): \(failure ?? "")")
            if failure != nil { break }
        }
        let s = stats.counts.withLock { $0 }
        print("\(kind): \(seeds) scenarios; \(s["changes", default: 0]) changes, \(s["refused", default: 0]) refused by policy, " +
              "\(s["held", default: 0]) uploads held for a gap, \(s["conflicted", default: 0]) records in conflict, \(s["erased", default: 0]) erased")
        #expect(s["refused", default: 0] > 0 && s["held", default: 0] > 0 && s["conflicted", default: 0] > 0, "the scenarios reach what they test")
    }

    final class Stats: Sendable {
        let counts = Mutex<[String: Int]>([:])
        func add(_ key: String, _ n: Int = 1) { counts.withLock { $0[key, default: 0] += n } }
    }

    static func scenario(_ kind: StoreKind, seed: UInt64, stats: Stats) async throws -> String? {
        var rng = Seeded(state: seed)
        let s = try await StoreUnderTest.make(kind)
        defer { Task { await s.close() } }
        let roles: [Role] = [.field, .field, .coordinator, .press]
        var keys: [DeviceKey] = []
        for (i, role) in roles.enumerated() { keys.append(try await s.enroll(role, "d\(i)")) }
        let roster = try await s.store.roster()
        var laptops = keys.map { TestLaptop(key: $0, roster: roster) }
        var chains: [[SignedChange]] = Array(repeating: [], count: keys.count)
        var created: [RecordID] = []
        for _ in 0..<40 {
            let i = Int.random(in: 0..<laptops.count, using: &rng)
            let draft = Self.draft(&laptops[i], created: &created, rng: &rng)
            guard !draft.ops.isEmpty else { continue }
            chains[i].append(try laptops[i].replica.commit(draft, key: keys[i], wallMillis: Timestamps.nowMillis))
            // Sometimes a laptop hears of another's work (as through the server), so edits build on each other.
            if Int.random(in: 0..<3, using: &rng) == 0 {
                let j = Int.random(in: 0..<laptops.count, using: &rng)
                for c in chains[i] where j != i { _ = try? Replicator.receive(c, into: &laptops[j].replica, wallMillis: Timestamps.nowMillis) }
            }
        }
        // The model takes every change in chain order.
        var model = MemoryReplica(roster: roster)
        for chain in chains { for c in chain { _ = try Replicator.receive(c, into: &model, wallMillis: Timestamps.nowMillis) } }

        stats.add("changes", model.vector.total > 0 ? Int(model.vector.total) : 0)
        stats.add("refused", model.refusals.count)
        stats.add("conflicted", model.conflicts.count)
        stats.add("erased", model.allRecords.filter { $0.erasedBy != nil }.count)
        // Uploads: each device's chain in random slices, sometimes a later slice first (a gap).
        var queues = chains.map { $0[...] }
        var heldBack: [Int: ArraySlice<SignedChange>] = [:]
        while queues.contains(where: { !$0.isEmpty }) || !heldBack.isEmpty {
            let i = Int.random(in: 0..<queues.count, using: &rng)
            var batch: [SignedChange] = []
            if let back = heldBack[i], queues[i].isEmpty || Bool.random(using: &rng) {
                batch = Array(back)
                heldBack[i] = nil
            } else if !queues[i].isEmpty {
                let n = Int.random(in: 1...min(4, queues[i].count), using: &rng)
                let slice = queues[i].prefix(n)
                queues[i] = queues[i].dropFirst(n)
                if heldBack[i] == nil, !queues[i].isEmpty, Int.random(in: 0..<3, using: &rng) == 0 {
                    // Send what follows first; this slice later.
                    let m = Int.random(in: 1...min(3, queues[i].count), using: &rng)
                    batch = Array(queues[i].prefix(m))
                    queues[i] = queues[i].dropFirst(m)
                    heldBack[i] = slice
                } else {
                    batch = Array(slice)
                }
            } else { continue }
            let r = try await s.exchange(keys[i].deviceID, batch)
            stats.add("held", batch.count - r.accepted.count - r.refused.filter { rf in !r.accepted.contains { $0.hex == rf.id } }.count)
            for c in batch {
                let refusal = model.refusals[c.id]
                let shown = r.refused.first { $0.id == c.id.hex }
                if r.accepted.contains(c.id), refusal?.code.description != shown?.code {
                    return "change \(c.id.hex.prefix(12)): the model says \(refusal?.code.description ?? "applied"), the store \(shown?.code ?? "applied")"
                }
            }
        }
        for (i, chain) in chains.enumerated() {
            let stored = try await s.store.vector()[keys[i].deviceID]
            if stored != UInt64(chain.count) { return "device \(i): the store holds \(stored) of \(chain.count) changes" }
        }
        // A new laptop pulls everything and must hold the model's records.
        let reader = try await s.enroll(.coordinator, "reader")
        let pulled = try await s.pullAll(as: reader.deviceID)
        var fresh = MemoryReplica(roster: try await s.store.roster())
        for c in pulled { _ = try Replicator.receive(c, into: &fresh, wallMillis: Timestamps.nowMillis) }
        let expected = model.allRecords.map { JSONValue.object(["r": try! JSONValue.parseCanonical($0.listingBytes)]) }
        let got = fresh.allRecords.map { JSONValue.object(["r": try! JSONValue.parseCanonical($0.listingBytes)]) }
        if expected != got { return "a new laptop's records differ from the model's (\(got.count) vs \(expected.count))" }
        if let db = s.database, let pg = s.store as? PostgresSyncStore {
            var rows: [String: JSONValue] = [:]
            for try await (id, json) in try await pg.client.query("SELECT id::text, json::text FROM \(unescaped: db.schema).records").decode((String, String).self) {
                rows[id] = try JSONValue.parse(Array(json.utf8))
            }
            for v in model.allRecords {
                let want = try JSONValue.parseCanonical(v.listingBytes)
                if rows[v.id.description] != want { return "records row \(v.id) differs from the model" }
            }
            if rows.count != model.allRecords.count { return "records holds \(rows.count) rows, the model \(model.allRecords.count)" }
            var pending = 0
            for try await n in try await pg.client.query("SELECT count(*) FROM \(unescaped: db.schema).pending").decode(Int64.self) { pending = Int(n) }
            if pending != 0 { return "\(pending) changes still held after every gap was filled" }
        }
        return nil
    }

    static let noteFields = ["ref", "team", "narrative"]
    static let contactFields = ["fn", "title", "source"]

    /// A random change of one to three ops on new or known records.
    static func draft(_ laptop: inout TestLaptop, created: inout [RecordID], rng: inout Seeded) -> ChangeDraft {
        var d = ChangeDraft()
        var touched: Set<RecordID> = []
        let role = laptop.replica.roster[laptop.key.deviceID]!.role
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let roll = Int.random(in: 0..<100, using: &rng)
            let known = created.filter { laptop.replica.records[$0] != nil && !touched.contains($0) }
            if known.isEmpty || roll < 20 {
                var type: RecordType = role == .press ? .contact : .note
                if Int.random(in: 0..<8, using: &rng) == 0 { type = type == .note ? .contact : .note }  // forbidden for some roles
                let id = RecordID.make(type, by: laptop.key.deviceID)
                d.create(id, type: type, kind: type == .note ? "survey" : nil)
                d.set(type == .note ? "ref" : "fn", to: .string("v\(Int.random(in: 0..<9, using: &rng))"), onNew: id, type: type)
                created.append(id)
                touched.insert(id)
                continue
            }
            let id = known.randomElement(using: &rng)!
            guard let ops = laptop.replica.records[id], let view = ops.materialize(schema: .standard), !view.deleted else { continue }
            touched.insert(id)
            let type = view.type
            switch roll {
            case 20..<70:
                let field = (type == .note ? noteFields : contactFields).randomElement(using: &rng)!
                d.set(field, to: .string("v\(Int.random(in: 0..<9, using: &rng))"), on: ops, type: type)
            case 70..<80:
                d.add(type == .note ? "tags" : "beats", .string("t\(Int.random(in: 0..<4, using: &rng))"), record: id, type: type)
            case 80..<87:
                d.delete(ops, type: type)
            case 87..<94:
                if type == .note { d.review(["submitted", "approved"].randomElement(using: &rng)!, comment: nil, on: ops) }
            default:
                if type == .contact { d.erase(id) }
            }
        }
        return d
    }

    // MARK: Several processes on one database

    @Test func aNonceIsUsedOnceAcrossProcesses() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p1 = try await db.open(), p2 = try await db.open()
        let n = SignatureNonce(device: "dev", nonce: "n-\(UUID().uuidString)", expiresAt: Timestamps.nowMillis + 60_000)
        #expect(try await p1.useNonce(n, now: Timestamps.nowMillis))
        #expect(try await !p2.useNonce(n, now: Timestamps.nowMillis), "the second process sees the first's nonce")
        // At once on both: exactly one takes it.
        let m = SignatureNonce(device: "dev", nonce: "m-\(UUID().uuidString)", expiresAt: Timestamps.nowMillis + 60_000)
        async let a = p1.useNonce(m, now: Timestamps.nowMillis)
        async let b = p2.useNonce(m, now: Timestamps.nowMillis)
        let (ra, rb) = try await (a, b)
        #expect(ra != rb)
    }

    @Test func anInviteEnrolsOnceAcrossProcesses() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p1 = try await db.open(), p2 = try await db.open()
        for _ in 0..<5 {
            let token = try await p1.createInvite(role: .field, name: "once", ttlMillis: 60_000, now: Timestamps.nowMillis)
            let k1 = DeviceKey(), k2 = DeviceKey()
            async let a: RosterEntry? = try? p1.enroll(token: token, publicKey: k1.publicKey, name: "", now: Timestamps.nowMillis)
            async let b: RosterEntry? = try? p2.enroll(token: token, publicKey: k2.publicKey, name: "", now: Timestamps.nowMillis)
            let (ea, eb) = await (a, b)
            #expect((ea == nil) != (eb == nil), "exactly one key enrols on one invite")
        }
        #expect(try await p2.roster().entries.count == 5)
    }

    /// A field device's key, enrolled through `store` on an invite spent at once.
    func enrolledField(_ name: String, through store: PostgresSyncStore) async throws -> DeviceKey {
        let key = DeviceKey()
        let token = try await store.createInvite(role: .field, name: name, ttlMillis: 60_000, now: Timestamps.nowMillis)
        _ = try await store.enroll(token: token, publicKey: key.publicKey, name: "", now: Timestamps.nowMillis)
        return key
    }

    @Test func aRevocationOnOneProcessHoldsOnTheOther() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p1 = try await db.open(), p2 = try await db.open()
        let key = try await enrolledField("lost", through: p1)
        var laptop = TestLaptop(key: key, roster: try await p1.roster())
        let (_, first) = try laptop.note("UA-1")
        let two = StoreUnderTest(store: p2, database: nil, dir: nil)
        #expect(try await two.exchange(key.deviceID, [first]).accepted == [first.id])
        let revoked = try await p1.revoke(key.deviceID)
        #expect(revoked.revokedAfterSeq == 1)
        let (_, second) = try laptop.note("UA-2")
        let r = try await two.exchange(key.deviceID, [second])
        #expect(r.accepted.isEmpty && r.refused.first?.code == "revoked", "\(r.refused)")
    }

    /// Authentication takes the roster a process kept (read again only when its version moved):
    /// a key enrolled through another process a moment ago is known at once, and a revocation
    /// made there refuses the device here within `PostgresRosterCache.maxAge`.
    @Test func aKeptRosterFollowsEnrolmentsAndRevocationsElsewhere() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p1 = try await db.open(), p2 = try await db.open()
        _ = try await p2.recentRoster(knowing: nil)  // p2 keeps the roster as it is now
        let key = try await enrolledField("new", through: p1)
        #expect(try await p2.recentRoster(knowing: key.deviceID)[key.deviceID]?.revokedAfterSeq == nil)
        #expect(try await p2.recentRoster(knowing: key.deviceID)[key.deviceID] != nil, "enrolled elsewhere, known here at once")
        _ = try await p1.revoke(key.deviceID)
        let start = ContinuousClock.now
        while try await p2.recentRoster(knowing: key.deviceID)[key.deviceID]?.revokedAfterSeq == nil {
            #expect(ContinuousClock.now - start < PostgresRosterCache.maxAge + .milliseconds(500), "the revocation is seen within maxAge")
            if ContinuousClock.now - start > .seconds(5) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try await p2.recentRoster(knowing: key.deviceID)[key.deviceID]?.revokedAfterSeq != nil)
        #expect(try await p1.recentRoster(knowing: key.deviceID)[key.deviceID]?.revokedAfterSeq != nil, "at once where it was made")
        // Every change to the roster raises its version, whoever makes it.
        var versions: [Int64?] = []
        for store in [p1, p2] { versions.append(try await store.client.withConnection { try await PostgresSyncStore.rosterVersion($0, logger: store.logger) }) }
        #expect(versions[0] == versions[1] && versions[0] ?? 0 >= 3, "\(versions)")
    }

    /// A revocation made through another process while an upload waits for the device's chain
    /// lock cuts that upload, though the roster this process keeps was checked a moment before:
    /// the upload judges by the roster as of after its lock.
    @Test func aRevocationHoldingTheChainLockCutsTheUploadWaitingForIt() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p1 = try await db.open(), p2 = try await db.open()
        let key = try await enrolledField("stolen", through: p1)
        var laptop = TestLaptop(key: key, roster: try await p1.roster())
        let (_, first) = try laptop.note("UA-1")
        let two = StoreUnderTest(store: p2, database: nil, dir: nil)
        #expect(try await two.exchange(key.deviceID, [first]).accepted == [first.id], "p2 keeps the roster as it is now")
        let (_, second) = try laptop.note("UA-2")
        let device = key.deviceID.description
        try await p1.client.withConnection { c in
            // `revoke`'s statements, its transaction held open on the chain lock.
            _ = try await c.query("BEGIN", logger: p1.logger).collect()
            _ = try await c.query("SELECT seq FROM heads WHERE device = \(device) FOR UPDATE", logger: p1.logger).collect()
            _ = try await c.query("UPDATE roster SET revoked_after_seq = 1 WHERE device = \(device)", logger: p1.logger).collect()
            let upload = Task { try await two.exchange(key.deviceID, [second]) }
            // Until the upload waits for the lock (or five seconds).
            for _ in 0..<250 {
                var waiting = 0
                for try await n in try await p2.client.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                                                             logger: p2.logger).decode(Int64.self) { waiting = Int(n) }
                if waiting > 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            _ = try await c.query("COMMIT", logger: p1.logger).collect()
            let r = try await upload.value
            #expect(r.accepted.isEmpty && r.refused.first?.code == "revoked", "\(r.refused)")
        }
    }

    /// The pull's cursor is each device's seq. A writer holding device A's first changes
    /// uncommitted must not let a reader see later ones of A (a resend through another process
    /// waits for A's chain lock), and once it commits the reader gets them all, none skipped.
    @Test func thePullNeverSkipsAChangeCommittedLate() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let gate = Gate()
        let (one, two, p2) = try await db.twoProcesses(holding: gate)
        let a = try await two.enroll(.field, "a"), b = try await two.enroll(.field, "b"), c = try await two.enroll(.coordinator, "c")
        let roster = try await p2.roster()
        var la = TestLaptop(key: a, roster: roster), lb = TestLaptop(key: b, roster: roster)
        let aChanges = try (1...4).map { _ in try la.note("A").1 }
        let bChanges = try (1...2).map { _ in try lb.note("B").1 }

        // W1: A's first three through process 1, held open before its commit.
        let w1 = Task { try await one.exchange(a.deviceID, Array(aChanges.prefix(3))) }
        try await gate.waitUntilHeld()
        // B commits through process 2 meanwhile; C pulls and sees B only.
        #expect(try await two.exchange(b.deviceID, bChanges).accepted.count == 2)
        var seen = try await two.exchange(c.deviceID, [])
        #expect(seen.vector[a.deviceID] == 0 && seen.vector[b.deviceID] == 2 && seen.lacking.count == 2)
        // A resends everything through process 2: it waits for A's chain lock.
        let w2 = Task { try await two.exchange(a.deviceID, aChanges) }
        try await Task.sleep(for: .milliseconds(300))
        seen = try await two.exchange(c.deviceID, [], known: VersionVector([b.deviceID: 2]))
        #expect(seen.lacking.isEmpty && seen.vector[a.deviceID] == 0, "nothing of A is visible while its first changes are uncommitted")
        await gate.open()
        #expect(try await w1.value.accepted.count == 3)
        let resent = try await w2.value
        #expect(resent.accepted.count == 4 && resent.refused.isEmpty, "three duplicates acknowledged, the fourth applied: \(resent.refused)")
        let pulled = try await two.pullAll(as: c.deviceID)
        #expect(pulled.filter { $0.change.device == a.deviceID }.map(\.change.seq) == [1, 2, 3, 4])
        #expect(Set(pulled.map(\.id)).count == pulled.count, "no change twice")
    }

    /// A note reached b by bundle before its author uploaded it; the author's upload and b's edit
    /// of the note commit at the same moment through two processes, either held open first. The
    /// server's `records` row (what an administrator or a GIS reader sees) holds both: the second
    /// waits for the first's lock on the note, then reads it.
    @Test(arguments: [true, false]) func aNoteWrittenByTwoProcessesAtOnceListsBothWrites(authorFirst: Bool) async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let gate = Gate()
        let (one, two, p2) = try await db.twoProcesses(holding: gate)
        let a = try await two.enroll(.field, "a"), b = try await two.enroll(.field, "b")
        let roster = try await p2.roster()
        var la = TestLaptop(key: a, roster: roster), lb = TestLaptop(key: b, roster: roster)
        let (id, made) = try la.note("MADE-BY-A")
        _ = try Replicator.receive(made, into: &lb.replica, wallMillis: Timestamps.nowMillis)
        var d = ChangeDraft()
        d.set("narrative", to: .string("checked by b"), on: try #require(lb.replica.records[id]), type: .note)
        let edit = try lb.replica.commit(d, key: b, wallMillis: Timestamps.nowMillis)

        let (first, second) = authorFirst ? ((a, made), (b, edit)) : ((b, edit), (a, made))
        let w1 = Task { try await one.exchange(first.0.deviceID, [first.1]) }
        try await gate.waitUntilHeld()
        let w2 = Task { try await two.exchange(second.0.deviceID, [second.1]) }
        try await Task.sleep(for: .milliseconds(300))
        await gate.open()
        #expect(try await w1.value.accepted == [first.1.id])
        #expect(try await w2.value.accepted == [second.1.id])
        var listed = ""
        for try await json in try await p2.client.query("SELECT json::text FROM records WHERE id = \(id.description)::uuid").decode(String.self) {
            listed = json
        }
        #expect(listed.contains("MADE-BY-A") && listed.contains("checked by b"), "\(listed)")
    }

    /// The database refuses a gap or a fork in a chain by itself, whatever the code above it does.
    @Test func theDatabaseHoldsEachChain() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p = try await db.open()
        let s = StoreUnderTest(store: p, database: nil, dir: nil)
        let key = try await s.enroll(.field, "f")
        var laptop = TestLaptop(key: key, roster: try await p.roster())
        let (_, first) = try laptop.note("1")
        _ = try await s.exchange(key.deviceID, [first])
        func insert(seq: Int64, prev: [UInt8]?) async -> String? {
            do {
                _ = try await p.client.query("""
                    INSERT INTO \(unescaped: db.schema).changes (id, device, seq, prev, hlc, wall, received_at, envelope)
                    VALUES (\(ByteBuffer(bytes: (0..<32).map { _ in UInt8.random(in: 0...255) })), \(key.deviceID.description), \(seq),
                            \(prev.map { ByteBuffer(bytes: $0) }), 1, 1, 1, '\\x00'::bytea)
                    """).collect()
                return nil
            } catch let e as PSQLError { return e.serverInfo?[.sqlState] }
            catch { return "\(error)" }
        }
        #expect(await insert(seq: 3, prev: first.id.bytes) == "23503", "a gap breaks the chain's foreign key")
        #expect(await insert(seq: 2, prev: Array(repeating: 7, count: 32)) == "23503", "a wrong predecessor too")
        #expect(await insert(seq: 1, prev: nil) == "23505", "a second seq 1 is a fork: unique (device, seq)")
    }

    /// An erased value leaves the answers at once and the table files soon after: the store
    /// vacuums after an erasure. Read from the heap file itself after a checkpoint.
    @Test func anErasedValueLeavesTheTableFiles() async throws {
        guard StoreKind.postgresURL != nil else { return }
        let db = try await TestDatabase.make()
        defer { Task { await db.close() } }
        let p = try await db.open()
        let s = StoreUnderTest(store: p, database: nil, dir: nil)
        let press = try await s.enroll(.press, "press"), hq = try await s.enroll(.coordinator, "hq")
        let roster = try await p.roster()
        var pl = TestLaptop(key: press, roster: roster), hl = TestLaptop(key: hq, roster: roster)
        let secret = "Zoryana-\(UUID().uuidString.prefix(8))"
        var d = ChangeDraft()
        let id = RecordID.make(.contact, by: press.deviceID)
        d.create(id, type: .contact, kind: nil)
        d.set("fn", to: .string(secret), onNew: id, type: .contact)
        let made = try pl.replica.commit(d, key: press, wallMillis: Timestamps.nowMillis)
        _ = try await s.exchange(press.deviceID, [made])
        _ = try Replicator.receive(made, into: &hl.replica, wallMillis: Timestamps.nowMillis)
        let files = [try await Self.heapFile(p, db.schema, "changes"), try await Self.heapFile(p, db.schema, "records")]
        try await Self.checkpoint(p)
        for file in files { #expect(try Self.contains(file, secret), "the value is in \(file) before the erase (else this test shows nothing)") }
        var e = ChangeDraft()
        e.erase(id)
        let erase = try hl.replica.commit(e, key: hq, wallMillis: Timestamps.nowMillis)
        #expect(try await s.exchange(hq.deviceID, [erase]).accepted == [erase.id])
        let pulled = try await s.pullAll(as: hq.deviceID)
        #expect(!pulled.contains { String(decoding: $0.envelope, as: UTF8.self).contains(secret) }, "no answer carries it")
        var gone = false
        for _ in 0..<240 where !gone {
            try await Task.sleep(for: .milliseconds(500))
            try await Self.checkpoint(p)
            gone = try files.allSatisfy { try !Self.contains($0, secret) }
        }
        #expect(gone, "the erased value is still in \(files) after two minutes")
    }

    static func heapFile(_ p: PostgresSyncStore, _ schema: String, _ table: String) async throws -> String {
        var dir = "", rel = ""
        for try await d in try await p.client.query("SHOW data_directory").decode(String.self) { dir = d }
        for try await r in try await p.client.query("SELECT pg_relation_filepath('\(unescaped: schema).\(unescaped: table)')").decode(String.self) { rel = r }
        return dir + "/" + rel
    }

    static func checkpoint(_ p: PostgresSyncStore) async throws { _ = try await p.client.query("CHECKPOINT").collect() }

    static func contains(_ file: String, _ text: String) throws -> Bool {
        guard let data = FileManager.default.contents(atPath: file) else { throw ServerError("cannot read \(file)") }
        return data.range(of: Data(text.utf8)) != nil
    }

    @Test func healthSaysWhenTheDatabaseIsDown() async throws {
        let url = try PostgresURL("postgres://nobody@127.0.0.1:1/none?sslmode=disable")
        var configuration = url.configuration
        configuration.options.connectTimeout = .seconds(1)
        let client = PostgresClient(configuration: configuration, backgroundLogger: quietLogger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        // It answers within two seconds when run alone; not asserted here, where the suite's
        // synchronous end-to-end tests can hold both threads of the cooperative pool for longer.
        let health = await PostgresSyncStore(client: client, logger: quietLogger).health()
        #expect(!health.ok && health.backend == "postgresql")
    }

    /// A load balancer asks `/healthz`: 200 naming PostgreSQL while the database answers, 503
    /// when it does not.
    @Test func healthzReportsTheDatabase() async throws {
        func healthz(_ store: any SyncStore) async throws -> (Int, JSONValue) {
            let app = Application(router: SyncServer(store: store, key: DeviceKey()).router())
            return try await app.test(.router) { client in
                try await client.execute(uri: "/healthz", method: .get) { r in
                    (Int(r.status.code), try JSONValue.parse(Array(r.body.readableBytesView)))
                }
            }
        }
        if StoreKind.postgresURL != nil {
            let db = try await TestDatabase.make()
            defer { Task { await db.close() } }
            let (status, body) = try await healthz(try await db.open())
            #expect(status == 200 && body["database"]?["backend"] == "postgresql" && body["database"]?["ok"] == .bool(true), "\(body)")
        }
        var configuration = try PostgresURL("postgres://nobody@127.0.0.1:1/none?sslmode=disable").configuration
        configuration.options.connectTimeout = .seconds(1)
        let client = PostgresClient(configuration: configuration, backgroundLogger: quietLogger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        let (status, body) = try await healthz(PostgresSyncStore(client: client, logger: quietLogger))
        #expect(status == 503 && body["status"] == "unavailable" && body["database"]?["ok"] == .bool(false), "\(body)")
    }

    @Test func urlsAreReadStrictly() throws {
        let ok = try PostgresURL("postgres://fs:p%40ss@db.example:6432/fieldsync?sslmode=require&schema=field_a")
        #expect(ok.schema == "field_a" && ok.configuration.username == "fs" && ok.configuration.password == "p@ss")
        #expect(ok.configuration.host == "db.example" && ok.configuration.port == 6432 && ok.configuration.database == "fieldsync")
        #expect(!ok.redacted.contains("p%40ss") && !ok.redacted.contains("p@ss"))
        #expect(ok.redacted.contains(":***@"), "\(ok.redacted)")
        for bad in ["http://x/db", "postgres://x", "postgres://x/db?sslmode=maybe", "postgres://x/db?schema=a;drop", "postgres://x/db?options=-c",
                    "postgres://x/db?host=relative", "postgres://x:0/db", "postgres://x/db?schema=a&schema=b"] {
            #expect(throws: ServerError.self, "\(bad)") { _ = try PostgresURL(bad) }
        }
    }
}

/// Holds a writer until opened; tells the test when one is held.
actor Gate {
    var isOpen = false
    var held = false
    var waiting: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        held = true
        if isOpen { return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func open() {
        isOpen = true
        for w in waiting { w.resume() }
        waiting = []
    }

    func waitUntilHeld() async throws {
        for _ in 0..<3000 where !held { try await Task.sleep(for: .milliseconds(10)) }
        if !held { throw ServerError("the writer never reached its commit") }
    }
}
