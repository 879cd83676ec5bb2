import FieldSyncCore
import FieldSyncStore
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The sync server's store on PostgreSQL, for several server processes on one database. Any
/// process takes any request: what must be shared (the chain, the replay cache, invites, the
/// roster) is in the database and decided there, in transactions (docs/ARCHITECTURE.md,
/// "PostgreSQL"). The client must be running (`PostgresClient.run()`) for any call to return.
public final class PostgresSyncStore: SyncStoreAdmin {
    public let client: PostgresClient
    let schema: RecordSchema
    let logger: Logger
    /// Tests only: runs inside an upload's transaction just before it commits, so a test can
    /// hold a writer open while others commit and read.
    let beforeCommit: (@Sendable (DeviceID) async -> Void)?
    let rosters = PostgresRosterCache()

    /// A store over a running client; `migrate` before the first exchange.
    public init(client: PostgresClient, schema: RecordSchema = .standard, logger: Logger,
                beforeCommit: (@Sendable (DeviceID) async -> Void)? = nil) {
        self.client = client
        self.schema = schema
        self.logger = logger
        self.beforeCommit = beforeCommit
    }

    // MARK: Schema

    /// The first key of the migration lock (the second is the schema's).
    static let migrationLockSpace: Int32 = 704_611

    /// The format this build writes; a database marked otherwise is refused.
    public static let format = "fieldsync-postgres-1"

    /// Applies the embedded `Schema/postgres/*.sql` files not yet applied, in name order, in one
    /// transaction under an advisory lock: processes that start together wait for each other,
    /// and none sees a half-made schema. The lock is the schema's own, so servers in other
    /// schemas of the database never wait on it.
    public func migrate() async throws {
        try await transaction { db in
            _ = try await db.query("SELECT pg_advisory_xact_lock(\(Self.migrationLockSpace), hashtext(current_schema()))", logger: logger).collect()
            _ = try await db.query("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                               logger: logger).collect()
            var applied = Set<String>()
            for try await name in try await db.query("SELECT name FROM schema_migrations", logger: logger).decode(String.self) { applied.insert(name) }
            for name in EmbeddedSchema.files.keys.filter({ $0.hasPrefix("postgres/") }).sorted() where !applied.contains(name) {
                for statement in Self.statements(EmbeddedSchema.files[name]!) {
                    _ = try await db.query(PostgresQuery(unsafeSQL: statement), logger: logger).collect()
                }
                _ = try await db.query("INSERT INTO schema_migrations (name) VALUES (\(name))", logger: logger).collect()
            }
            var format: String?
            for try await value in try await db.query("SELECT value FROM meta WHERE key = 'format'", logger: logger).decode(String.self) { format = value }
            if let format, format != Self.format {
                throw ServerError("this PostgreSQL database holds \(format), not \(Self.format): it was made by another fieldsync")
            }
            if format == nil {
                _ = try await db.query("INSERT INTO meta (key, value) VALUES ('format', \(Self.format))", logger: logger).collect()
            }
        }
    }

    /// A migration file's statements: each ends with a semicolon at the end of a line (the
    /// extended protocol runs one statement at a time). Comment lines are dropped.
    static func statements(_ sql: String) -> [String] {
        var out: [String] = []
        var current = ""
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("--") || trimmed.isEmpty { continue }
            current += line + "\n"
            if trimmed.hasSuffix(";") {
                out.append(current)
                current = ""
            }
        }
        if !current.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { out.append(current) }
        return out
    }

    /// Whether the database already holds a fieldsync server (`init` refuses to make a second).
    public func isInitialised() async throws -> Bool {
        try await client.withConnection { db in
            var found = false
            for try await _ in try await db.query("SELECT 1 FROM pg_tables WHERE tablename = 'roster' AND schemaname = current_schema()",
                                                  logger: logger).decode(Int.self) { found = true }
            return found
        }
    }

    /// A `meta` value (the server's public key, the format).
    public func meta(_ key: String) async throws -> String? {
        try await client.withConnection { db in
            var value: String?
            for try await v in try await db.query("SELECT value FROM meta WHERE key = \(key)", logger: logger).decode(String.self) { value = v }
            return value
        }
    }

    /// Sets a `meta` value that must be set once: false if it already was.
    public func setMetaOnce(_ key: String, _ value: String) async throws -> Bool {
        try await transaction { db in
            var inserted = false
            for try await _ in try await db.query("INSERT INTO meta (key, value) VALUES (\(key), \(value)) ON CONFLICT DO NOTHING RETURNING 1",
                                                  logger: logger).decode(Int.self) { inserted = true }
            return inserted
        }
    }

    // MARK: Transactions

    /// Runs `body` in one transaction on a leased connection: committed if it returns, rolled back
    /// if it throws. A deadlock or serialization failure (another process won a race) is retried
    /// up to three times; the error of the last try is thrown.
    func transaction<T: Sendable>(_ mode: String = "READ WRITE", _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await transaction(mode, body, then: { _, value in value })
    }

    /// The same, then `after` on the same connection once the transaction has committed (it is
    /// never retried: what committed stays committed).
    func transaction<T: Sendable, U: Sendable>(_ mode: String = "READ WRITE", _ body: (PostgresConnection) async throws -> T,
                                               then after: (PostgresConnection, T) async throws -> U) async throws -> U {
        try await client.withConnection { db in
            let value = try await Self.retried {
                _ = try await db.query(PostgresQuery(unsafeSQL: "BEGIN \(mode)"), logger: logger).collect()
                do {
                    let value = try await body(db)
                    _ = try await db.query("COMMIT", logger: logger).collect()
                    return value
                } catch {
                    _ = try? await db.query("ROLLBACK", logger: logger).collect()
                    throw error
                }
            }
            return try await after(db, value)
        }
    }

    /// Runs `work` again when it fails on a deadlock or a serialization failure (`retriable`),
    /// up to three tries; the error of the last try is thrown. `work` must have left nothing
    /// behind when it fails: a rolled-back transaction, or a statement of its own.
    static func retried<T>(isolation: isolated (any Actor)? = #isolation, _ work: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await work()
            } catch let e as PSQLError where attempt < 3 && retriable(e) {
                attempt += 1
            }
        }
    }

    /// One line for a person: the server's message and SQLSTATE, or what stopped the connection.
    /// (PSQLError's own description hides both, lest a query's values reach a log.)
    public static func describe(_ e: PSQLError) -> String {
        if let info = e.serverInfo, let message = info[.message] { return "\(message) (SQLSTATE \(info[.sqlState] ?? "?"))" }
        if let underlying = e.underlying { return "\(e.code): \(underlying)" }
        return "\(e.code)"
    }

    /// Serialization failure, deadlock, or a unique violation on a device's chain (two
    /// processes took one laptop's retried upload at once; the second finds it stored).
    static func retriable(_ e: PSQLError) -> Bool {
        guard let state = e.serverInfo?[.sqlState] else { return false }
        return state == "40001" || state == "40P01" || (state == "23505" && e.serverInfo?[.constraintName] == "changes_device_seq_key")
    }

    // MARK: SyncStore

    public func roster() async throws -> Roster {
        try await client.withConnection { db in try await rosters.roster(version: Self.rosterVersion(db, logger: logger), db, logger: logger) }
    }

    public func recentRoster(knowing device: DeviceID?) async throws -> Roster {
        if let kept = rosters.recent(), device.map({ kept[$0] != nil }) ?? true { return kept }
        return try await roster()
    }

    /// Nil if the row is missing (then the roster is read every time, never kept).
    static func rosterVersion(_ db: PostgresConnection, logger: Logger) async throws -> Int64? {
        var version: Int64?
        for try await v in try await db.query("SELECT version FROM roster_version", logger: logger).decode(Int64.self) { version = v }
        return version
    }

    /// The roster and its version, read in one statement (one snapshot).
    static func rosterRead(_ db: PostgresConnection, logger: Logger) async throws -> (version: Int64?, roster: Roster) {
        var entries: [RosterEntry] = []
        var version: Int64?
        for try await (v, key, name, role, enrolled, revoked) in try await db.query(
            "SELECT (SELECT version FROM roster_version), public_key, name, role, enrolled_at, revoked_after_seq FROM roster ORDER BY device",
            logger: logger).decode((Int64?, ByteBuffer, String, String, Int64, Int64?).self) {
            version = v
            guard let role = Role(rawValue: role) else { continue }
            entries.append(RosterEntry(publicKey: Array(buffer: key), name: name, role: role, enrolledAtMillis: UInt64(clamping: enrolled),
                                       revokedAfterSeq: revoked.map { UInt64(clamping: $0) }))
        }
        return (version, Roster(entries))
    }

    static func roster(_ db: PostgresConnection, logger: Logger) async throws -> Roster { try await rosterRead(db, logger: logger).roster }

    public func exchange(_ r: ExchangeRequest, limits: ExchangeLimits) async throws -> ExchangeResult {
        let (upload, verified) = ServerExchange.preverify(r, limits: limits)
        if upload.isEmpty {
            // A pull stores no change: its nonce and activity are one statement, its own
            // transaction, whose commit need not wait for the disk; then the answer. A deadlock
            // rolls the statement back whole, so it is tried again as a transaction would be.
            return try await client.withConnection { db in
                let pairs = r.clientVector.seqs.map { ($0.key.description, Int64(clamping: $0.value)) }
                let statement = PullStatement(nonceDevice: r.nonce?.device ?? r.device.description, now: Int64(clamping: r.now), nonce: r.nonce?.nonce,
                                              expiresAt: Int64(clamping: r.nonce?.expiresAt ?? 0),
                                              sends: Int64(max(0, limits.sends())), devices: pairs.map(\.0), known: pairs.map(\.1),
                                              device: r.device.description)
                let fresh = try await Self.retried {
                    var fresh = false
                    for try await (spent, _) in try await db.execute(statement, logger: logger) { fresh = spent }
                    return fresh
                }
                guard fresh else { throw SyncStoreError.replayed }
                var result = ExchangeResult()
                (result.lacking, result.more, result.vector) = try await Self.lacking(db, known: r.clientVector, limit: limits.sends(),
                                                                                      maxBytes: SyncProtocol.maxAnswerBytes, logger: logger)
                return result
            }
        }
        // Tried again, once, with more records locked when the device's held changes need them.
        do { return try await store(r, upload, verified: verified, limits: limits, alsoLock: []) } catch let more as LockMore {
            return try await store(r, upload, verified: verified, limits: limits, alsoLock: more.records)
        }
    }

    /// An upload's transaction, then its answer on the same connection.
    func store(_ r: ExchangeRequest, _ upload: [SignedChange], verified: Set<ChangeID>, limits: ExchangeLimits,
               alsoLock: Set<RecordID>) async throws -> ExchangeResult {
        return try await transaction("READ WRITE", { db in
            var stage = try await PostgresStage.load(db, device: r.author, relayed: r.author != r.device, alsoLock: alsoLock, nonce: r.nonce,
                                                     upload: upload, schema: schema, rosters: rosters,
                                                     now: r.now, logger: logger)
            let (result, known) = try ServerExchange.apply(upload, verified: verified, request: r, limits: limits, into: &stage)
            try await stage.flush(db, requester: r.device, known: known, sends: limits.sends(), logger: logger)
            await beforeCommit?(r.device)
            return (result, known, !stage.erasures.isEmpty)
        }, then: { db, stored in
            if stored.2 { vacuumSoon() }
            // The answer from one snapshot, so the vector and the changes agree; after the
            // upload's commit, so it holds what was just stored; on the same connection.
            var result = stored.0
            (result.lacking, result.more, result.vector) = try await Self.lacking(db, known: stored.1, limit: limits.sends(),
                                                                                  maxBytes: SyncProtocol.maxAnswerBytes, logger: logger)
            return result
        })
    }

    /// An erased value's old row versions stay in the table files until VACUUM, which cannot
    /// remove them while any older snapshot is open (another process's pull, say): vacuum now
    /// and a few times after, rather than wait for autovacuum, which a small table may never
    /// get. Not awaited: on a large table it takes a while. Started as soon as the erasure has
    /// committed, whatever happens to the answer.
    func vacuumSoon() {
        let client = self.client, logger = self.logger
        Task.detached {
            for delay in [0, 1, 5, 30] {
                try? await Task.sleep(for: .seconds(delay))
                _ = try? await client.query("VACUUM (SKIP_LOCKED) changes, pending, records", logger: logger).collect()
            }
        }
    }

    /// The highest applied seq of each device.
    static func vector(_ db: PostgresConnection, logger: Logger) async throws -> VersionVector {
        var v = VersionVector()
        for try await (device, seq) in try await db.query("SELECT device, seq FROM heads WHERE seq > 0", logger: logger).decode((String, Int64).self) {
            if let d = DeviceID(device) { v.seqs[d] = UInt64(clamping: seq) }
        }
        return v
    }

    /// What a client holding `known` lacks, in each device's seq order, as envelopes: at most
    /// `limit` changes and about `maxBytes` (at least one); whether more remain; the vector.
    /// One statement, so one snapshot (the vector and the changes agree) and one round trip:
    /// the heads, and each lacking device's changes by its own index (fifty devices were fifty
    /// round trips per pull, and a transaction around two reads four).
    static func lacking(_ db: PostgresConnection, known: VersionVector, limit: Int, maxBytes: Int,
                        logger: Logger) async throws -> ([[UInt8]], Bool, VersionVector) {
        let pairs = known.seqs.map { ($0.key.description, Int64(clamping: $0.value)) }
        var vector = VersionVector()
        var out: [[UInt8]] = []
        var budget = ByteBudget(limit: maxBytes)
        var sent: [String: UInt64] = [:]
        var spent = false
        let statement = LackingStatement(devices: pairs.map(\.0), known: pairs.map(\.1), limit: Int64(max(0, limit)))
        for try await (device, seq, envelope) in try await db.execute(statement, logger: logger) {
            guard let envelope else {
                if let d = DeviceID(device) { vector.seqs[d] = UInt64(clamping: seq) }
                continue
            }
            // Rows keep coming after the budget is spent (the query is already running): read
            // and drop them, so the connection is left clean.
            guard !spent else { continue }
            let bytes = Array(buffer: envelope)
            guard budget.take(bytes.count) else { spent = true; continue }
            out.append(bytes)
            sent[device, default: 0] += 1
        }
        let more = vector.seqs.contains { d, top in top > known[d] && (sent[d.description] ?? 0) < top - known[d] }
        return (out, more, vector)
    }

    public func enroll(token: String, publicKey: [UInt8], name: String, now: UInt64) async throws -> RosterEntry {
        try await transaction { db in
            let hash = ByteBuffer(bytes: ReplicaStore.tokenHash(token))
            var invite: (role: String, name: String, expires: Int64, used: Int64?)?
            for try await row in try await db.query("SELECT role, name, expires_at, used_at FROM invites WHERE token_hash = \(hash) FOR UPDATE",
                                                    logger: logger).decode((String, String, Int64, Int64?).self) { invite = row }
            guard let invite, let role = Role(rawValue: invite.role) else { throw SyncStoreError(.inviteRefused, "the invite token is not known") }
            guard invite.used == nil else { throw SyncStoreError(.inviteRefused, "the invite token was already used") }
            guard UInt64(clamping: invite.expires) > now else { throw SyncStoreError(.inviteRefused, "the invite token has expired") }
            let entry = RosterEntry(publicKey: publicKey, name: name.isEmpty ? invite.name : name, role: role, enrolledAtMillis: now)
            var inserted = false
            for try await _ in try await db.query("""
                INSERT INTO roster (device, public_key, name, role, enrolled_at) VALUES
                  (\(entry.device.description), \(ByteBuffer(bytes: publicKey)), \(entry.name), \(role.rawValue), \(Int64(clamping: now)))
                ON CONFLICT (device) DO NOTHING RETURNING 1
                """, logger: logger).decode(Int.self) { inserted = true }
            guard inserted else { throw SyncStoreError(.inviteRefused, "this device key is already enrolled") }
            _ = try await db.query("INSERT INTO heads (device) VALUES (\(entry.device.description))", logger: logger).collect()
            _ = try await db.query("UPDATE invites SET used_at = \(Int64(clamping: now)), used_by = \(entry.device.description) WHERE token_hash = \(hash)",
                               logger: logger).collect()
            return entry
        }
    }

    public func useNonce(_ n: SignatureNonce, now: UInt64) async throws -> Bool {
        try await transaction { db in
            _ = try await db.query("SELECT set_config('synchronous_commit', 'off', true)", logger: logger).collect()
            return try await Self.useNonce(db, n, now: now, logger: logger)
        }
    }

    /// Records a nonce; false when any process recorded it before. A second process sending the
    /// same nonce at once waits on the primary key and then finds it taken.
    static func useNonce(_ db: PostgresConnection, _ n: SignatureNonce, now: UInt64, logger: Logger) async throws -> Bool {
        var fresh = false
        for try await _ in try await db.execute(NonceStatement(device: n.device, now: Int64(clamping: now), nonce: n.nonce,
                                                               expiresAt: Int64(clamping: n.expiresAt)), logger: logger) { fresh = true }
        return fresh
    }

    public func devicesSeen(since: UInt64) async throws -> Int {
        try await client.withConnection { db in
            var count = 0
            for try await n in try await db.query("SELECT count(*) FROM device_activity WHERE last_sync >= \(Int64(clamping: since))",
                                                  logger: logger).decode(Int64.self) { count = Int(n) }
            return count
        }
    }

    /// Asks the database for `SELECT 1`, for at most two seconds (a load balancer's probe must
    /// not hang on a database that does not answer).
    public func health() async -> StoreHealth {
        let client = self.client, logger = self.logger
        // The first answer wins: the query's own task may wait on the pool much longer (it gives
        // up only when its connection attempts do), and nothing waits for it.
        let answered: Bool = await withCheckedContinuation { continuation in
            let first = FirstAnswer(continuation)
            Task {
                let ok = (try? await client.withConnection { db in try await db.query("SELECT 1", logger: logger).collect() }) != nil
                first.answer(ok)
            }
            Task {
                try? await Task.sleep(for: .seconds(2))
                first.answer(false)
            }
        }
        return answered ? StoreHealth(ok: true, backend: "postgresql", detail: "reachable")
            : StoreHealth(ok: false, backend: "postgresql", detail: "the database does not answer")
    }

    public func recordForks(_ forks: [ForkReport]) async throws {
        try await client.withConnection { db in
            for f in forks {
                let device = f.device.description
                _ = try await db.query("""
                    INSERT INTO forks (device, seq, refused, seen_at)
                    SELECT \(device), \(Int64(clamping: f.seq)), \(ByteBuffer(bytes: f.refused.bytes)), \(Int64(clamping: f.seenAt))
                    WHERE (SELECT count(*) FROM forks WHERE device = \(device)) < \(Int64(ForkReport.maxPerDevice))
                    ON CONFLICT DO NOTHING
                    """, logger: logger).collect()
            }
        }
    }

    public func forks(limit: Int) async throws -> [ForkReport] {
        try await client.withConnection { db in
            var out: [ForkReport] = []
            for try await (device, seq, refused, seen) in try await db.query("""
                SELECT device, seq, refused, seen_at FROM forks WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.id = forks.refused)
                ORDER BY seen_at DESC, device, seq LIMIT \(Int64(max(0, limit)))
                """, logger: logger).decode((String, Int64, ByteBuffer, Int64).self) {
                guard let d = DeviceID(device), let id = ChangeID(bytes: Array(refused.readableBytesView)) else { continue }
                out.append(ForkReport(device: d, seq: UInt64(clamping: seq), refused: id, seenAt: UInt64(clamping: seen)))
            }
            return out
        }
    }

    // MARK: SyncStoreAdmin

    public func createInvite(role: Role, name: String, ttlMillis: UInt64, now: UInt64) async throws -> String {
        let token = ReplicaStore.newInviteToken()
        let expires = now.addingReportingOverflow(ttlMillis)
        try await transaction { db in
            _ = try await db.query("""
                INSERT INTO invites (token_hash, role, name, created_at, expires_at)
                VALUES (\(ByteBuffer(bytes: ReplicaStore.tokenHash(token))), \(role.rawValue), \(name), \(Int64(clamping: now)),
                        \(expires.overflow ? Int64.max : Int64(clamping: expires.partialValue)))
                """, logger: logger).collect()
        }
        return token
    }

    public func revoke(_ device: DeviceID) async throws -> RosterEntry {
        let revoked = try await transaction { db in
            // Waits for the device's exchange in flight, if any: the cut is after what it stored.
            var head: Int64?
            for try await seq in try await db.query("SELECT seq FROM heads WHERE device = \(device.description) FOR UPDATE",
                                                    logger: logger).decode(Int64.self) { head = seq }
            guard let head else { throw SyncStoreError(.notFound, "no device \(device)") }
            _ = try await db.query("UPDATE roster SET revoked_after_seq = \(head) WHERE device = \(device.description)", logger: logger).collect()
            guard let entry = try await Self.roster(db, logger: logger)[device] else { throw SyncStoreError(.notFound, "no device \(device)") }
            return entry
        }
        // This process's requests see it at once; other processes' within `PostgresRosterCache.maxAge`.
        rosters.forget()
        return revoked
    }

    public func deviceReports() async throws -> [DeviceReport] {
        try await client.withConnection { db in
            let roster = try await Self.roster(db, logger: logger)
            var reports: [DeviceID: DeviceReport] = [:]
            for e in roster.sorted { reports[e.device] = DeviceReport(entry: e, lastSync: nil, changes: 0, backlog: 0) }
            for try await (device, seq, last, backlog) in try await db.query("""
                SELECT h.device, h.seq, a.last_sync, a.backlog FROM heads h LEFT JOIN device_activity a USING (device)
                """, logger: logger).decode((String, Int64, Int64?, Int64?).self) {
                guard let d = DeviceID(device), var r = reports[d] else { continue }
                r.changes = Int(clamping: seq)
                r.lastSync = last.map { UInt64(clamping: $0) }
                r.backlog = Int(clamping: backlog ?? 0)
                reports[d] = r
            }
            return roster.sorted.compactMap { reports[$0.device] }
        }
    }

    public func hasChange(_ id: ChangeID) async throws -> Bool {
        try await client.withConnection { db in
            var found = false
            for try await _ in try await db.query("SELECT 1 FROM changes WHERE id = \(ByteBuffer(bytes: id.bytes))", logger: logger)
                .decode(Int.self) { found = true }
            return found
        }
    }

    public func vector() async throws -> VersionVector {
        try await client.withConnection { db in try await Self.vector(db, logger: logger) }
    }

    public func invites() async throws -> [InviteReport] {
        try await client.withConnection { db in
            var out: [InviteReport] = []
            for try await (hash, role, name, created, expires, used, usedBy) in try await db.query("""
                SELECT token_hash, role, name, created_at, expires_at, used_at, used_by FROM invites ORDER BY created_at, token_hash
                """, logger: logger).decode((ByteBuffer, String, String, Int64, Int64, Int64?, String?).self) {
                guard let r = Role(rawValue: role) else { continue }
                out.append(InviteReport(hash: Array(buffer: hash), role: r, name: name, createdAt: UInt64(clamping: created),
                                        expiresAt: UInt64(clamping: expires), usedAt: used.map { UInt64(clamping: $0) }, usedBy: usedBy))
            }
            return out
        }
    }

    public func cancelInvite(hash: [UInt8]) async throws -> Bool {
        try await transaction { db in
            var gone = false
            for try await _ in try await db.query("""
                DELETE FROM invites WHERE token_hash = \(ByteBuffer(bytes: hash)) AND used_at IS NULL RETURNING 1
                """, logger: logger).decode(Int.self) { gone = true }
            return gone
        }
    }

    public func view(_ id: RecordID) async throws -> RecordView? {
        let schema = self.schema
        return try await transaction("READ ONLY") { db in
            try await PostgresStage.recordOps(db, [id], schema: schema, logger: logger)[id]?.materialize(schema: schema)
        }
    }
}

/// Resumes a continuation with the first of several answers; the later ones are dropped.
final class FirstAnswer: Sendable {
    let continuation: Mutex<CheckedContinuation<Bool, Never>?>
    init(_ c: CheckedContinuation<Bool, Never>) { continuation = Mutex(c) }
    func answer(_ ok: Bool) {
        continuation.withLock { c in
            c?.resume(returning: ok)
            c = nil
        }
    }
}

/// The roster this process read last, with its version (`roster_version`, raised by a trigger on
/// every statement that changes the roster): read again only when the version moved. Each read
/// of the whole roster was one more round trip and a row per device on every request (a fifth
/// of PostgreSQL's statements in B3). Authentication takes it as kept for up to `maxAge`, so a
/// revocation made through another process refuses the device here within that; an upload's
/// transaction compares the version after its chain lock, so what it stores is never judged
/// by a stale roster.
final class PostgresRosterCache: Sendable {
    static let maxAge = Duration.milliseconds(500)
    private let kept = Mutex<(version: Int64, checked: ContinuousClock.Instant, roster: Roster)?>(nil)

    /// The roster as of `version`: the kept one if it is that version, else read on `db`.
    func roster(version: Int64?, _ db: PostgresConnection, logger: Logger) async throws -> Roster {
        let now = ContinuousClock.now
        if let version, let roster = kept.withLock({ k -> Roster? in
            guard let hit = k, hit.version == version else { return nil }
            k?.checked = now
            return hit.roster
        }) { return roster }
        let read = try await PostgresSyncStore.rosterRead(db, logger: logger)
        if let v = read.version { kept.withLock { $0 = (v, now, read.roster) } }
        return read.roster
    }

    /// The kept roster, if its version was checked within `maxAge`.
    func recent() -> Roster? {
        kept.withLock { k in k.flatMap { ContinuousClock.now - $0.checked <= Self.maxAge ? $0.roster : nil } }
    }

    func forget() { kept.withLock { $0 = nil } }
}
