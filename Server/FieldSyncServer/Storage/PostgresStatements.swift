import NIOCore
import PostgresNIO

// The statements every exchange runs, prepared once per connection: PostgreSQL planned each of
// them again on every call, and planning was a quarter of its statement time in B3
// (`pg_stat_statements.track_planning`), the answer's alone a tenth.

/// What a client holding `known` lacks (`PostgresSyncStore.lacking`): first the heads (rows
/// with no envelope), then at most `limit` changes in each device's seq order. One statement,
/// so one snapshot: the vector and the changes agree.
struct LackingStatement: PostgresPreparedStatement {
    static let sql = """
        WITH h AS (SELECT device, seq FROM heads WHERE seq > 0),
             k AS (SELECT device, known FROM unnest($1::text[], $2::int8[]) AS k(device, known)),
             b AS (SELECT h.device, COALESCE(k.known, 0) AS known FROM h LEFT JOIN k USING (device) WHERE h.seq > COALESCE(k.known, 0))
        SELECT device, seq, envelope FROM (
            SELECT device, seq, NULL::bytea AS envelope, 0 AS part FROM h
            UNION ALL
            SELECT * FROM (SELECT b.device, c.seq, c.envelope, 1 AS part FROM b
                           CROSS JOIN LATERAL (SELECT seq, envelope FROM changes c WHERE c.device = b.device AND c.seq > b.known
                                               ORDER BY c.seq LIMIT $3) c
                           ORDER BY b.device, c.seq LIMIT $3) l
        ) rows ORDER BY part, device, seq
        """
    typealias Row = (String, Int64, ByteBuffer?)
    var devices: [String]
    var known: [Int64]
    var limit: Int64

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 3)
        b.append(devices)
        b.append(known)
        b.append(limit)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// What a device will still lack after an answer that sends it `sends` of what it lacks
/// (`ServerExchange.backlog`), given `head` for each head in `heads h` and `k.known` for what it
/// holds: counted in numeric, so no sum overflows, and clamped to an int8.
enum Backlog {
    static func sql(head: String, sends: String) -> String {
        "LEAST(GREATEST(COALESCE(SUM(GREATEST(\(head)::numeric - COALESCE(k.known, 0), 0)), 0) - \(sends), 0), 9223372036854775807)::int8"
    }
}

/// Spends a signature nonce (a row back: it was fresh) and drops the device's expired ones, in
/// one round trip. Its parts see one snapshot: an expired nonce used again still counts as
/// used, the safe side.
struct NonceStatement: PostgresPreparedStatement {
    static let sql = """
        WITH expired AS (DELETE FROM nonces WHERE device = $1 AND expires_at < $2)
        INSERT INTO nonces (device, nonce, expires_at) VALUES ($1, $3, $4)
        ON CONFLICT DO NOTHING RETURNING 1
        """
    typealias Row = Int
    var device: String
    var now: Int64
    var nonce: String
    var expiresAt: Int64

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 4)
        b.append(device)
        b.append(now)
        b.append(nonce)
        b.append(expiresAt)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int.self) }
}

// An upload is four statements between BEGIN and COMMIT (it was twelve): under a crowd every
// round trip waits for a core, and the round trips, not the statements' work, made its time.

/// A pull's nonce (if it has one) and activity, in one round trip and its own transaction: the
/// nonce spent (a row with true: it was fresh, or there was none), the device's activity
/// recorded only then, and the commit not waited for on the disk (a pull stores no change; the
/// setting lasts to the statement's commit, as its transaction is the statement). The expired
/// nonces are deleted before the activity row is written (the activity asks for them), the
/// order an upload of the same device takes them in: no deadlock between the two.
struct PullStatement: PostgresPreparedStatement {
    static let sql = """
        WITH expired AS (DELETE FROM nonces WHERE device = $1 AND expires_at < $2 AND $3::text IS NOT NULL RETURNING 1),
             fresh AS (INSERT INTO nonces (device, nonce, expires_at) SELECT $1, $3, $4 WHERE $3::text IS NOT NULL
                       ON CONFLICT DO NOTHING RETURNING 1),
             activity AS (
                 INSERT INTO device_activity (device, last_sync, backlog)
                 SELECT $8, $2, \(Backlog.sql(head: "h.seq", sends: "$5"))
                 FROM heads h LEFT JOIN unnest($6::text[], $7::int8[]) AS k(device, known) USING (device)
                 WHERE h.seq > 0
                 HAVING ($3::text IS NULL OR EXISTS (SELECT 1 FROM fresh)) AND (SELECT count(*) FROM expired) >= 0
                 ON CONFLICT (device) DO UPDATE SET last_sync = excluded.last_sync, backlog = excluded.backlog)
        SELECT $3::text IS NULL OR EXISTS (SELECT 1 FROM fresh), set_config('synchronous_commit', 'off', true) = 'off'
        """
    typealias Row = (Bool, Bool)
    /// The nonce's device as its signature named it (`SignatureNonce.device`).
    var nonceDevice: String
    var now: Int64
    var nonce: String?
    var expiresAt: Int64
    var sends: Int64
    var devices: [String]
    var known: [Int64]
    /// The device's canonical id, for its activity row.
    var device: String

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 8)
        b.append(nonceDevice)
        b.append(now)
        b.append(nonce)
        b.append(expiresAt)
        b.append(sends)
        b.append(devices)
        b.append(known)
        b.append(device)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// An upload's first statement: spends its nonce (if it has one), takes its device's chain
/// lock (the heads row FOR UPDATE), then its records' advisory locks in the order of `keys`,
/// each exclusive or shared (`exclusive`). A row back: the head (seq 0: none), whether the nonce
/// was fresh, and the locks taken; no row: the device is not on the roster. Nothing else may be
/// read here: this statement's snapshot is from before its waits. The new nonce is inserted
/// once the heads row is locked, and the expired ones deleted at the statement's end (a
/// data-modifying CTE runs when its rows are first asked for, else then): the same nonce
/// twice waits on its row and the second is refused. The record locks are taken
/// row by row of the locked head (a join), so after it. A deadlock would be retried
/// (`PostgresSyncStore.retriable`).
struct ChainLockStatement: PostgresPreparedStatement {
    static let sql = """
        WITH expired AS (DELETE FROM nonces WHERE device = $5 AND expires_at < $2 AND $3::text IS NOT NULL),
             fresh AS (INSERT INTO nonces (device, nonce, expires_at) SELECT $5, $3, $4 WHERE $3::text IS NOT NULL
                       ON CONFLICT DO NOTHING RETURNING 1),
             h AS (SELECT h.seq, h.id FROM heads h WHERE h.device = $1 FOR UPDATE OF h),
             l AS (SELECT count(t.taken) AS n FROM (
                       SELECT CASE WHEN u.x THEN pg_advisory_xact_lock(u.k)::text ELSE pg_advisory_xact_lock_shared(u.k)::text END AS taken
                       FROM h, unnest($6::int8[], $7::bool[]) WITH ORDINALITY AS u(k, x, i) ORDER BY u.i) t)
        SELECT h.seq, h.id, $3::text IS NULL OR EXISTS (SELECT 1 FROM fresh), (SELECT n FROM l) FROM h
        """
    typealias Row = (Int64, ByteBuffer?, Bool, Int64)
    var device: String
    var now: Int64
    var nonce: SignatureNonce?
    /// Advisory-lock keys, in the order to take them, and whether each is exclusive.
    var keys: [Int64] = []
    var exclusive: [Bool] = []

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 7)
        b.append(device)
        b.append(now)
        b.append(nonce?.nonce)
        b.append(Int64(clamping: nonce?.expiresAt ?? 0))
        b.append(nonce?.device ?? device)
        b.append(keys)
        b.append(exclusive)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// What an upload reads after its locks, in one snapshot, as rows tagged by `part`:
/// 0 the roster's version; 1 the device's held changes (seq, envelope); 2 the stored changes
/// among `ids` (seq, id, device, refusal code and reason); 4 every applied change of `records`
/// (n, envelope, record).
struct UploadReadStatement: PostgresPreparedStatement {
    static let sql = """
        SELECT 0 AS part, version AS num, NULL::bytea AS bytes, NULL::text AS txt, NULL::text AS code, NULL::text AS reason
        FROM roster_version
        UNION ALL
        SELECT 1, seq, envelope, NULL, NULL, NULL FROM pending WHERE device = $1
        UNION ALL
        SELECT 2, seq, id, device, refusal_code, refusal FROM changes WHERE id = ANY($2::bytea[])
        UNION ALL
        SELECT 4, c.n, c.envelope, rc.record::text, NULL, NULL
        FROM record_changes rc JOIN changes c ON c.n = rc.change WHERE rc.record = ANY($3::uuid[]) AND rc.applied
        """
    typealias Row = (Int32, Int64?, ByteBuffer?, String?, String?, String?)
    var device: String
    var ids: [ByteBuffer]
    var records: [String]

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 3)
        b.append(device)
        b.append(ids)
        b.append(records)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// What an upload's merge wrote, in one statement: the appended changes (the chain's foreign
/// key and `UNIQUE (device, seq)` check them again, at the statement's end), the records each
/// wrote to (by change id: their numbers are taken here), the author's head (seq < 0:
/// unchanged), the records' listings, and the requesting device's activity. The activity reads
/// the heads as they were before this statement, so the author's head is taken as the new one.
/// The row back counts the changes inserted.
struct UploadWriteStatement: PostgresPreparedStatement {
    static let sql = """
        WITH ins AS (
            INSERT INTO changes (id, device, seq, prev, hlc, wall, received_at, envelope, refusal_code, refusal, clock_skew)
            SELECT id, device, seq, NULLIF(prev, ''::bytea), hlc, wall, $7, envelope, NULLIF(code, ''), NULLIF(reason, ''), skew
            FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::bytea[], $5::int8[], $6::int8[], $8::bytea[], $9::text[], $10::text[],
                        $11::bool[]) AS t(id, device, seq, prev, hlc, wall, envelope, code, reason, skew)
            ORDER BY seq
            RETURNING n, id),
        rc AS (
            INSERT INTO record_changes (record, change, applied)
            SELECT r.record::uuid, ins.n, r.applied FROM unnest($12::text[], $13::bytea[], $14::bool[]) AS r(record, id, applied)
            JOIN ins USING (id)
            ON CONFLICT DO NOTHING),
        head AS (UPDATE heads SET seq = $16, id = $17 WHERE device = $15 AND $16 >= 0),
        rec AS (
            INSERT INTO records (id, type, kind, deleted, conflicted, erased, last_changed, ref, status, team, review, json)
            SELECT id::uuid, type, NULLIF(kind, ''), deleted, conflicted, erased, changed, NULLIF(ref, ''), NULLIF(status, ''),
                   NULLIF(team, ''), NULLIF(review, ''), json::jsonb
            FROM unnest($18::text[], $19::text[], $20::text[], $21::bool[], $22::bool[], $23::bool[],
                        $24::int8[], $25::text[], $26::text[], $27::text[], $28::text[], $29::text[])
                 AS t(id, type, kind, deleted, conflicted, erased, changed, ref, status, team, review, json)
            ON CONFLICT (id) DO UPDATE SET type = excluded.type, kind = excluded.kind, deleted = excluded.deleted,
              conflicted = excluded.conflicted, erased = excluded.erased, last_changed = excluded.last_changed, ref = excluded.ref,
              status = excluded.status, team = excluded.team, review = excluded.review, json = excluded.json),
        activity AS (
            INSERT INTO device_activity (device, last_sync, backlog)
            SELECT $34, $30, \(Backlog.sql(head: "CASE WHEN h.device = $15 THEN GREATEST(h.seq, $16) ELSE h.seq END", sends: "$31"))
            FROM heads h LEFT JOIN unnest($32::text[], $33::int8[]) AS k(device, known) USING (device)
            WHERE h.seq > 0 OR (h.device = $15 AND $16 > 0)
            ON CONFLICT (device) DO UPDATE SET last_sync = excluded.last_sync, backlog = excluded.backlog)
        SELECT count(*) FROM ins
        """
    typealias Row = Int64

    struct Changes {
        var ids: [ByteBuffer] = [], devices: [String] = [], seqs: [Int64] = [], prevs: [ByteBuffer] = [], hlcs: [Int64] = []
        var walls: [Int64] = [], envelopes: [ByteBuffer] = [], codes: [String] = [], reasons: [String] = [], skews: [Bool] = []
    }
    struct RecordChanges { var records: [String] = [], ids: [ByteBuffer] = [], applied: [Bool] = [] }
    struct Records {
        var ids: [String] = [], types: [String] = [], kinds: [String] = [], deleted: [Bool] = [], conflicted: [Bool] = []
        var erased: [Bool] = [], changed: [Int64] = [], refs: [String] = [], statuses: [String] = [], teams: [String] = []
        var reviews: [String] = [], jsons: [String] = []
    }
    var changes: Changes
    var receivedAt: Int64
    var recordChanges: RecordChanges
    var device: String
    /// -1: the head is unchanged.
    var headSeq: Int64
    var headID: ByteBuffer
    var records: Records
    var now: Int64
    var sends: Int64
    var knownDevices: [String]
    var known: [Int64]
    /// The device that sent the upload (its activity row); `device` is the changes' author.
    var requester: String

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 34)
        let c = changes
        b.append(c.ids); b.append(c.devices); b.append(c.seqs); b.append(c.prevs); b.append(c.hlcs); b.append(c.walls)
        b.append(receivedAt)
        b.append(c.envelopes); b.append(c.codes); b.append(c.reasons); b.append(c.skews)
        b.append(recordChanges.records); b.append(recordChanges.ids); b.append(recordChanges.applied)
        b.append(device); b.append(headSeq); b.append(headID)
        let r = records
        b.append(r.ids); b.append(r.types); b.append(r.kinds); b.append(r.deleted); b.append(r.conflicted); b.append(r.erased)
        b.append(r.changed); b.append(r.refs); b.append(r.statuses); b.append(r.teams); b.append(r.reviews); b.append(r.jsons)
        b.append(now); b.append(sends); b.append(knownDevices); b.append(known); b.append(requester)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}
