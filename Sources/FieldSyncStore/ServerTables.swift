import Crypto
import FieldSyncCore
import Foundation
import GRDB

/// A request signature's nonce, kept until the signature expires (the replay cache).
public struct SignatureNonce: Sendable, Hashable {
    public var device: String
    public var nonce: String
    public var expiresAt: UInt64
    public init(device: String, nonce: String, expiresAt: UInt64) { self.device = device; self.nonce = nonce; self.expiresAt = expiresAt }
}

/// How many changes one exchange takes up and sends down, asked when that work starts rather
/// than when the request arrived: laptops arrive in bursts, and the first of a burst would
/// otherwise take a whole batch through the writer while the rest queue behind it.
public struct ExchangeLimits: Sendable {
    public var takes: @Sendable () -> Int
    public var sends: @Sendable () -> Int

    public init(takes: @escaping @Sendable () -> Int, sends: @escaping @Sendable () -> Int) {
        self.takes = takes
        self.sends = sends
    }

    public static func fixed(_ n: Int) -> ExchangeLimits { ExchangeLimits(takes: { n }, sends: { n }) }
}

/// The sync server's own bookkeeping on its replica: invites, the replay cache, device activity,
/// and the exchange itself (receive, then answer from the same committed state).
extension ReplicaStore {
    public struct ExchangeResult: Sendable {
        public var accepted: [ChangeID] = []
        public var refused: [ChangeRefusal] = []
        /// What the client lacks, as envelopes (see `loadEnvelope`).
        public var lacking: [[UInt8]] = []
        public var vector = VersionVector()
        public var more = false
    }

    /// One sync exchange for `device`: its changes are stored in one write transaction, which
    /// commits before anything is answered, so an acknowledged change is on disk. Signatures are
    /// checked before the writer is taken, and what the client lacks is read from a snapshot
    /// after the commit, beside other writers: the single SQLite writer is held only to store.
    /// The request's `nonce` is recorded in that same transaction (one durable commit per
    /// exchange, not two); a replayed one throws `StoreError(.replayed)` and stores nothing.
    /// `roster` is the one the request was authenticated with (nil: read it): the signatures of
    /// the upload are checked against it; revocation is judged again inside the transaction.
    /// `alone`: no other request is in flight in this process, so the SQLite work runs on the
    /// calling thread rather than on GRDB's queues (see `Access`).
    public func exchange(device: DeviceID, roster known: Roster? = nil, upload: [SignedChange], clientVector: VersionVector, limits: ExchangeLimits,
                         now: UInt64, nonce: SignatureNonce? = nil, alone: Bool = false) async throws -> ExchangeResult {
        let access = Access(alone: alone)
        let roster: Roster
        if let known { roster = known } else { roster = try await currentRoster(alone: alone) }
        // Signatures are checked only as far as the limit reaches, asked again before each one.
        var verified: Set<ChangeID> = []
        var considered = 0
        for c in upload {
            guard considered < limits.takes() else { break }
            considered += 1
            if c.change.device == device, let entry = roster[c.change.device], (try? c.verify(publicKey: entry.publicKey)) != nil {
                verified.insert(c.id)
            }
        }
        let upload = Array(upload.prefix(considered))
        let stored = try await storeUpload(device: device, upload: upload, verified: verified, clientVector: clientVector, limits: limits,
                                           now: now, nonce: nonce, access: access)
        var result = stored.0
        // An erase must not survive in the WAL: fold it into the main file (zeroed by secure_delete).
        // One that readers keep from finishing is tried again after each later exchange.
        if upload.contains(where: { $0.erases && result.accepted.contains($0.id) }) { try? checkpoint() } else { checkpointIfDue() }
        let known = stored.known
        let limit = limits.sends()
        let (lacking, more, vector) = try await read(access) { db in
            try Self.lacking(db, known: known, limit: limit, maxBytes: SyncProtocol.maxAnswerBytes, size: \.count, load: Self.loadEnvelope)
        }
        result.lacking = lacking
        result.vector = vector
        result.more = more
        return result
    }

    /// Stores the upload in one write transaction: as many changes as `limits.takes` allows while
    /// the writer is ours; the rest are neither accepted nor refused. Returns the result so far
    /// and what the client holds now: what it said it had, plus what it just sent.
    func storeUpload(device: DeviceID, upload: [SignedChange], verified: Set<ChangeID>, clientVector: VersionVector, limits: ExchangeLimits,
                     now: UInt64, nonce: SignatureNonce?, access: Access) async throws -> (ExchangeResult, known: VersionVector) {
        // A pull stores no change: its nonce and the device's activity are safe to lose in a
        // power cut (replaying a pull needs its plaintext, which only the device and TLS see,
        // and would only repeat an answer).
        return try await write(access, durable: !upload.isEmpty) { db in
            if let nonce, try !Self.useNonce(db, nonce, now: now) {
                throw StoreError(.replayed, "this signature nonce was already used (replay)")
            }
            var s = try storage(db, wallMillis: now)
            try s.expect(upload)
            var result = ExchangeResult()
            var known = clientVector
            // Asked again before each change: a writer taken while the server looked idle
            // lets go early once a crowd has come in behind it.
            for (taken, c) in upload.enumerated() {
                guard taken < limits.takes() else { break }
                let id = c.id.hex
                guard c.change.device == device else {
                    result.refused.append(ChangeRefusal(id: id, code: "wrong_uploader", reason: "change \(id.prefix(12)) was signed by \(c.change.device), not by the uploading device"))
                    continue
                }
                if let bad = Self.invalidValue(c, schema: schema) {
                    result.refused.append(ChangeRefusal(id: id, code: bad.code.description, reason: bad.message))
                    continue
                }
                do {
                    // A change that waits for an earlier one of its device (one refused outright:
                    // a value this schema refuses) is held, not acknowledged. Acknowledged, the
                    // laptop would count it delivered, though no one gets it until the gap is
                    // filled; held, it stays in the laptop's outbox and `status` shows it waiting.
                    let outcome = try Replicator.receive(c, into: &s, wallMillis: now, verified: verified.contains(c.id))
                    guard outcome != .pending else { continue }
                    result.accepted.append(c.id)
                    known.seqs[device] = max(known[device], c.change.seq)
                    // Accepted and refused: kept in the chain, applied nowhere. A duplicate (an
                    // answer lost on the way) gets the verdict it was stored with.
                    switch outcome {
                    case .applied(let taken):
                        if let refusal = taken.first?.refusal {
                            result.refused.append(ChangeRefusal(id: id, code: refusal.code.description, reason: refusal.message))
                        }
                    case .duplicate:
                        if let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT refusal_code, refusal FROM changes WHERE id = ? AND refusal_code IS NOT NULL"),
                                                      arguments: [Data(c.id.bytes)]) {
                            result.refused.append(ChangeRefusal(id: id, code: row["refusal_code"], reason: row["refusal"]))
                        }
                    case .pending:
                        break
                    }
                } catch let e as CoreError {
                    result.refused.append(ChangeRefusal(id: id, code: e.code.description, reason: e.message))
                }
            }
            // Backlog: what the client will still lack after this answer's changes.
            let limit = limits.sends()
            let lacking = try Self.vector(db).seqs.reduce(Int64(0)) { $0 + max(0, Int64($1.value) - Int64(known[$1.key])) }
            try db.execute(sql: """
                INSERT INTO device_activity (device, last_sync, backlog) VALUES (?, ?, ?)
                ON CONFLICT (device) DO UPDATE SET last_sync = excluded.last_sync, backlog = excluded.backlog
                """, arguments: [device.description, Int64(now), max(0, lacking - Int64(limit))])
            return (result, known)
        }
    }

    /// Values must meet the schema on the server, which every laptop trusts to pass changes on.
    static func invalidValue(_ c: SignedChange, schema: RecordSchema) -> CoreError? {
        for (i, v) in c.values {
            let op = c.change.ops[Int(i)]
            guard op.action != .resolve || !op.field.isEmpty else { continue }
            do { _ = try schema.validate(v.value, field: op.field, type: op.recordType, kind: nil) } catch {
                return CoreError(error.code, "change \(c.id.hex.prefix(12)) op \(i): \(error.message)")
            }
        }
        return nil
    }

    // MARK: Invites

    static func tokenHash(_ token: String) -> Data { Data(SHA256.hash(data: Array(token.utf8))) }

    /// A one-time invite; returns the token (only its hash is stored).
    public func createInvite(role: Role, name: String, ttlMillis: UInt64, now: UInt64) throws -> String {
        var g = SystemRandomNumberGenerator()
        let token = (0..<3).map { _ in String(g.next(), radix: 36) }.joined(separator: "-")
        try write { db in
            try db.execute(sql: "INSERT INTO invites (token_hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [Self.tokenHash(token), role.rawValue, name, Int64(now), Int64(now + ttlMillis)])
        }
        return token
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
    /// a synchronous read there can starve the pool while async readers wait for it), or, when
    /// the server handles nothing else (`alone`), on the calling thread.
    public func currentRoster(alone: Bool = false) async throws -> Roster {
        try await read(Access(alone: alone)) { [rosters] db in try rosters.roster(db) }
    }

    /// Where a server handler's SQLite work runs. `queued` (under load): on GRDB's queues, the
    /// handler suspended meanwhile, so that a task waiting for a connection or for the writer
    /// never holds one of the cooperative pool's few threads. `inline` (the request is the only
    /// one in flight, `SyncServer`'s `alone`): on the calling thread, which then waits for
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
        try await writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM device_activity WHERE last_sync >= ?", arguments: [Int64(since)]) ?? 0 }
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

    /// Records a signature nonce; false when it was seen before (a replay).
    public func useNonce(_ nonce: SignatureNonce, now: UInt64) async throws -> Bool {
        // Safe to lose in a power cut, as a pull's (see `storeUpload`): no need to wait for the disk.
        try await writeAsync(durable: false) { db in try Self.useNonce(db, nonce, now: now) }
    }

    static func useNonce(_ db: Database, _ n: SignatureNonce, now: UInt64) throws -> Bool {
        try db.cachedStatement(sql: "DELETE FROM nonces WHERE expires_at < ?").execute(arguments: [Int64(now)])
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO nonces (device, nonce, expires_at) VALUES (?, ?, ?)")
            .execute(arguments: [n.device, n.nonce, Int64(n.expiresAt)])
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
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM device_activity WHERE last_sync >= ?", arguments: [Int64(since)]) ?? 0 }
    }

    public func hasChange(_ id: ChangeID) throws -> Bool {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes WHERE id = ?", arguments: [Data(id.bytes)])! > 0 }
    }
}
