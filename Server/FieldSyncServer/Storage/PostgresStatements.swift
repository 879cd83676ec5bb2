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

/// Records a device's sync and what it will still lack after this answer
/// (`ServerExchange.backlog`), counted in the same statement: numeric, so no sum overflows.
struct ActivityStatement: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO device_activity (device, last_sync, backlog)
        SELECT $1, $2, LEAST(GREATEST(COALESCE(SUM(GREATEST(h.seq::numeric - COALESCE(k.known, 0), 0)), 0) - $3, 0), 9223372036854775807)::int8
        FROM heads h LEFT JOIN unnest($4::text[], $5::int8[]) AS k(device, known) USING (device)
        WHERE h.seq > 0
        ON CONFLICT (device) DO UPDATE SET last_sync = excluded.last_sync, backlog = excluded.backlog
        """
    typealias Row = ()
    var device: String
    var now: Int64
    var sends: Int64
    var devices: [String]
    var known: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 5)
        b.append(device)
        b.append(now)
        b.append(sends)
        b.append(devices)
        b.append(known)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {}
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
