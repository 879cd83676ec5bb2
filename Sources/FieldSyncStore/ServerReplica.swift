import Crypto
import FieldSyncCore
import Foundation
import GRDB

/// The server's replica: the SQL it runs, with no policy of its own. The exchange itself (what
/// an upload may hold, what is acknowledged, the answer's limits) is the server's
/// (`FieldSyncServer`'s `ServerExchange`), over these primitives; a PostgreSQL store offers the
/// same. Invites, the replay cache and device activity live in the same file as the changes.
extension ReplicaStore {
    /// A write transaction for one exchange, `inline` on the calling thread or queued on GRDB's
    /// writer (`Access`), waiting for the disk only when `durable`.
    public func serverWrite<T: Sendable>(inline: Bool, durable: Bool, wallMillis: UInt64,
                                         _ body: @escaping @Sendable (inout ServerTransaction) throws -> T) async throws -> T {
        let schema = self.schema
        return try await write(Access(alone: inline), durable: durable) { [self] db in
            var t = ServerTransaction(db: db, storage: try storage(db, wallMillis: wallMillis), schema: schema)
            return try body(&t)
        }
    }

    /// A read transaction (a snapshot after the writes before it), `inline` or queued.
    public func serverRead<T: Sendable>(inline: Bool, _ body: @escaping @Sendable (ServerReader) throws -> T) async throws -> T {
        try await read(Access(alone: inline)) { db in try body(ServerReader(db: db)) }
    }

    // MARK: Invites

    /// What an invite is stored as: SHA-256 of its token (every server store keeps only this).
    public static func tokenHash(_ token: String) -> Data { Data(SHA256.hash(data: Array(token.utf8))) }

    /// A new invite token: three base-36 words of 64 random bits each.
    public static func newInviteToken() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<3).map { _ in String(g.next(), radix: 36) }.joined(separator: "-")
    }

    /// A one-time invite; returns the token (only its hash is stored).
    public func createInvite(role: Role, name: String, ttlMillis: UInt64, now: UInt64) throws -> String {
        let token = Self.newInviteToken()
        try write { db in
            try db.execute(sql: "INSERT INTO invites (token_hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [Self.tokenHash(token), role.rawValue, name, Int64(now), Int64(now + ttlMillis)])
        }
        return token
    }

    /// Every invite made, oldest first: its token hash, role, name, times and who used it.
    public func invites() throws -> [(hash: [UInt8], role: String, name: String, createdAt: UInt64, expiresAt: UInt64, usedAt: UInt64?, usedBy: String?)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT token_hash, role, name, created_at, expires_at, used_at, used_by FROM invites ORDER BY created_at, token_hash").map { r in
                ([UInt8](r["token_hash"] as Data), r["role"], r["name"], UInt64(clamping: r["created_at"] as Int64), UInt64(clamping: r["expires_at"] as Int64),
                 (r["used_at"] as Int64?).map { UInt64(clamping: $0) }, r["used_by"])
            }
        }
    }

    /// Deletes the unused invite with this token hash; false if there is none.
    public func cancelInvite(hash: [UInt8]) throws -> Bool {
        try write { db in
            try db.execute(sql: "DELETE FROM invites WHERE token_hash = ? AND used_at IS NULL", arguments: [Data(hash)])
            return db.changesCount > 0
        }
    }

    /// Uses an invite to enrol a device key. Refuses an unknown, used or expired token.
    public func enroll(token: String, publicKey: [UInt8], name: String, now: UInt64) throws -> RosterEntry {
        try write { db in try Self.enroll(db, token: token, publicKey: publicKey, name: name, now: now) }
    }

    /// As `enroll`, for the server's handlers: suspends rather than blocks while the writer is busy.
    public func enrollDevice(token: String, publicKey: [UInt8], name: String, now: UInt64) async throws -> RosterEntry {
        try await writeAsync { db in try Self.enroll(db, token: token, publicKey: publicKey, name: name, now: now) }
    }

    static func enroll(_ db: Database, token: String, publicKey: [UInt8], name: String, now: UInt64) throws -> RosterEntry {
        guard let row = try Row.fetchOne(db, sql: "SELECT role, name, expires_at, used_at FROM invites WHERE token_hash = ?",
                                         arguments: [Self.tokenHash(token)]) else {
            throw StoreError(.notFound, "the invite token is not known")
        }
        guard (row["used_at"] as Int64?) == nil else { throw StoreError(.alreadyInitialised, "the invite token was already used") }
        guard UInt64(row["expires_at"] as Int64) > now else { throw StoreError(.notFound, "the invite token has expired") }
        let entry = RosterEntry(publicKey: publicKey, name: name.isEmpty ? row["name"] : name, role: Role(rawValue: row["role"])!,
                                enrolledAtMillis: now)
        if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM roster WHERE device = ?", arguments: [entry.device.description])! > 0 {
            throw StoreError(.alreadyInitialised, "this device key is already enrolled")
        }
        try RosterRow.upsert(entry, db)
        try db.execute(sql: "UPDATE invites SET used_at = ?, used_by = ? WHERE token_hash = ?",
                       arguments: [Int64(now), entry.device.description, Self.tokenHash(token)])
        return entry
    }

    /// The roster, read without blocking a thread of the cooperative pool (the server's handlers:
    /// a synchronous read there can starve the pool while async readers wait for it), or
    /// `inline`, on the calling thread.
    public func currentRoster(inline: Bool) async throws -> Roster {
        try await read(Access(alone: inline)) { [rosters] db in try rosters.roster(db) }
    }

    /// Where a server handler's SQLite work runs. `queued` (under load): on GRDB's queues, the
    /// handler suspended meanwhile, so that a task waiting for a connection or for the writer
    /// never holds one of the cooperative pool's few threads. `inline` (the request is the only
    /// one in flight, `SQLiteSyncStore`'s `inline`): on the calling thread, which then waits for
    /// nobody but its own fsync. Each queued access hands the work to another thread and back,
    /// and waking a thread costs more on this VM than a small sync's reads: three per exchange
    /// were a tenth of B2's round (BENCHMARKS.md, eleventh session).
    ///
    /// An inline read goes through the writer's connection, never GRDB's reader pool: an async
    /// read gives its reader back only when its task runs again on the cooperative pool, so pool
    /// threads blocked waiting for a reader can wait for each other forever (seen in B3, when
    /// fifty requests at once each read the roster inline). The writer's queue needs no
    /// pool thread to move on.
    enum Access: Sendable {
        case queued, inline
        init(alone: Bool) { self = alone ? .inline : .queued }
    }

    func read<T: Sendable>(_ access: Access, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch access {
        case .inline: try readOnWriter(body)
        case .queued: try await writer.read(body)
        }
    }

    /// A read transaction on the writer's connection, on the calling thread.
    func readOnWriter<T>(_ body: (Database) throws -> T) throws -> T {
        try writer.writeWithoutTransaction { db in
            var value: T?
            try db.inTransaction(.deferred) { value = try body(db); return .commit }
            return value!
        }
    }

    func write<T: Sendable>(_ access: Access, durable: Bool, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch access {
        case .inline: try write(durable: durable, body)
        case .queued: try await writeAsync(durable: durable, body)
        }
    }

    public func countDevicesSeen(since: UInt64) async throws -> Int {
        try await writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM device_activity WHERE last_sync >= ?", arguments: [Int64(clamping: since)]) ?? 0 }
    }

    /// Revokes a device: changes after its last accepted seq are refused from now on.
    public func revoke(_ device: DeviceID) throws -> RosterEntry {
        try write { db in
            guard var e = try RosterRow.all(db).first(where: { $0.device == device }) else { throw StoreError(.notFound, "no device \(device)") }
            let last = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM changes WHERE device = ?", arguments: [device.description]) ?? 0
            e.revokedAfterSeq = UInt64(last)
            try RosterRow.upsert(e, db)
            return e
        }
    }

    // MARK: Replay cache

    /// Records a signature nonce (kept until `expiresAt`); false when it was seen before (a replay).
    public func useNonce(device: String, nonce: String, expiresAt: UInt64, now: UInt64) async throws -> Bool {
        // Safe to lose in a power cut, as a pull's: no need to wait for the disk.
        try await writeAsync(durable: false) { db in try Self.useNonce(db, device: device, nonce: nonce, expiresAt: expiresAt, now: now) }
    }

    static func useNonce(_ db: Database, device: String, nonce: String, expiresAt: UInt64, now: UInt64) throws -> Bool {
        try db.cachedStatement(sql: "DELETE FROM nonces WHERE expires_at < ?").execute(arguments: [Int64(now)])
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO nonces (device, nonce, expires_at) VALUES (?, ?, ?)")
            .execute(arguments: [device, nonce, Int64(clamping: expiresAt)])
        return db.changesCount == 1
    }

    public struct DeviceReport: Sendable {
        public var entry: RosterEntry
        public var lastSync: UInt64?
        public var changes: Int
        public var backlog: Int
    }

    /// Each device with its last sync and how many changes it has sent.
    public func deviceReports() throws -> [DeviceReport] {
        try read { db in
            try RosterRow.all(db).map { e in
                DeviceReport(
                    entry: e,
                    lastSync: try Int64.fetchOne(db, sql: "SELECT last_sync FROM device_activity WHERE device = ?", arguments: [e.device.description]).map { UInt64($0) },
                    changes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes WHERE device = ?", arguments: [e.device.description]) ?? 0,
                    backlog: try Int.fetchOne(db, sql: "SELECT backlog FROM device_activity WHERE device = ?", arguments: [e.device.description]) ?? 0)
            }
        }
    }

    public func devicesSeen(since: UInt64) throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM device_activity WHERE last_sync >= ?", arguments: [Int64(clamping: since)]) ?? 0 }
    }

    /// Invites not used and not expired.
    public func openInviteCount(now: UInt64) throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM invites WHERE used_at IS NULL AND expires_at > ?", arguments: [Int64(clamping: now)]) ?? 0
        }
    }

    /// The envelopes of the changes held back for a gap, by device and seq.
    public func heldEnvelopes() throws -> [[UInt8]] {
        try read { db in try Data.fetchAll(db, sql: "SELECT envelope FROM pending ORDER BY device, seq").map { [UInt8]($0) } }
    }

    public func hasChange(_ id: ChangeID) throws -> Bool {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes WHERE id = ?", arguments: [Data(id.bytes)])! > 0 }
    }
}

/// One exchange's write transaction on the server's replica.
public struct ServerTransaction {
    let db: Database
    var storage: SQLiteStorage
    public let schema: RecordSchema

    /// Records a signature nonce; false when it was seen before (a replay).
    public func useNonce(device: String, nonce: String, expiresAt: UInt64, now: UInt64) throws -> Bool {
        try ReplicaStore.useNonce(db, device: device, nonce: nonce, expiresAt: expiresAt, now: now)
    }

    /// Loads in bulk what receiving `upload` will look up.
    public mutating func expect(_ upload: [SignedChange]) throws { try storage.expect(upload) }

    /// Whether the record is erased on this server.
    public func isErased(_ record: RecordID) throws -> Bool { try storage.isErased(record) }

    /// `Replicator.receive` on this replica, at the transaction's wall clock.
    public mutating func receive(_ change: SignedChange, verified: Bool) throws -> ReceiveOutcome {
        try Replicator.receive(change, into: &storage, wallMillis: storage.wallMillis, verified: verified)
    }

    /// The verdict a stored change was kept with: nil if its ops were applied (or it is not stored).
    public func storedRefusal(of id: ChangeID) throws -> CoreError? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT refusal_code, refusal FROM changes WHERE id = ? AND refusal_code IS NOT NULL"),
                                         arguments: [Data(id.bytes)]) else { return nil }
        return CoreError(CoreError.Code(stored: row["refusal_code"]), row["refusal"])
    }

    /// The highest seq held of each device.
    public func vector() throws -> VersionVector { try ReplicaStore.vector(db) }

    /// When `device` last synced, and how many changes it still lacks.
    public func recordActivity(device: DeviceID, now: UInt64, backlog: Int64) throws {
        try db.execute(sql: """
            INSERT INTO device_activity (device, last_sync, backlog) VALUES (?, ?, ?)
            ON CONFLICT (device) DO UPDATE SET last_sync = excluded.last_sync, backlog = excluded.backlog
            """, arguments: [device.description, Int64(clamping: now), max(0, backlog)])
    }
}

/// A read transaction on the server's replica.
public struct ServerReader {
    let db: Database

    /// What a client holding `known` lacks, in each device's seq order, as envelopes: at most
    /// `limit` changes and about `maxBytes` (at least one change); whether more remain; and the
    /// replica's vector.
    public func lacking(known: VersionVector, limit: Int, maxBytes: Int) throws -> (lacking: [[UInt8]], more: Bool, vector: VersionVector) {
        let (changes, more, vector) = try ReplicaStore.lacking(db, known: known, limit: limit, maxBytes: maxBytes, size: \.count,
                                                               load: ReplicaStore.loadEnvelope)
        return (changes, more, vector)
    }

    /// One device's stored changes after `seq`, in order, at most `limit`, as envelopes.
    public func chain(of device: DeviceID, after seq: UInt64, limit: Int) throws -> [[UInt8]] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT n, id, signed, signature, seed, envelope FROM changes WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?"),
                         arguments: [device.description, Int64(clamping: seq), limit]).map { try ReplicaStore.loadEnvelope($0, db) }
    }
}
