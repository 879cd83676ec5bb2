import FieldSyncCore
import FieldSyncStore
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// `fieldsync-server migrate`: a server on its SQLite file moves to PostgreSQL. The roster and
/// each device's last sync are copied; every stored change (and every held one) goes in
/// through the PostgreSQL store's own exchange, device by device in seq order, so each is
/// checked and merged exactly as if its laptop had uploaded it. The SQLite file is left as it
/// was; the data folder then says its data is in PostgreSQL, so a `serve` without `--postgres`
/// cannot fork the server in two.
public enum StoreMigration {
    public struct Report: Sendable {
        public var devices = 0
        public var changes = 0
        public var held = 0
        public var records = 0
        public var openInvites = 0
    }

    public static func run(from files: ServerData, to url: PostgresURL, logger: Logger,
                           progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let sqlite = try files.openStore()
        let key = try files.serverKey()
        guard try sqlite.meta("server_public_key") == key.publicKey.hex else {
            throw ServerError("\(files.databasePath) was not made with the key in \(files.directory)")
        }
        let roster = try sqlite.roster()
        let reports = try sqlite.deviceReports()
        let sourceVector = try sqlite.vector()
        let openInvites = try sqlite.openInviteCount(now: Timestamps.nowMillis)
        let directory = files.directory
        let report = try await PostgresSyncStore.with(url, maxConnections: 4, logger: logger) { pg in
            if try await pg.meta("server_public_key") != nil {
                throw ServerError("the PostgreSQL database already holds a fieldsync server; migrate needs an empty database (or schema=NAME)")
            }
            if try await !pg.roster().entries.isEmpty {
                throw ServerError("the PostgreSQL database holds a roster but no server key: an earlier migrate was interrupted; drop its tables (or use a new schema) and run migrate again")
            }
            try await pg.importDevices(roster.sorted, activity: reports.map { ($0.entry.device, $0.lastSync, $0.backlog) })
            var report = Report()
            report.devices = roster.entries.count
            report.openInvites = openInvites
            let pgRoster = try await pg.roster()
            // Each device's chain in order, in batches, as its laptop would upload it.
            for entry in roster.sorted {
                var known = VersionVector()
                while known[entry.device] < sourceVector[entry.device] {
                    let from = known
                    let batch = try await sqlite.serverRead(inline: false) { reader in
                        try reader.chain(of: entry.device, after: from[entry.device], limit: 500)
                    }
                    guard !batch.isEmpty else { break }
                    let changes = try batch.map { try SignedChange(envelope: $0) }
                    let result = try await pg.exchange(ExchangeRequest(device: entry.device, roster: pgRoster, upload: changes, clientVector: from,
                                                                       nonce: nil, now: Timestamps.nowMillis), limits: .fixed(500))
                    guard result.accepted.count == changes.count else {
                        let why = result.refused.first.map { "\($0.code): \($0.reason)" } ?? "not acknowledged"
                        throw ServerError("change \(changes[result.accepted.count].id.hex.prefix(12)) of \(entry.name) did not move: \(why)")
                    }
                    known.seqs[entry.device] = changes.last!.change.seq
                    report.changes += changes.count
                }
                progress("\(entry.name): \(known[entry.device]) changes")
            }
            // Changes held for a gap, held again (their gap may still be filled by their laptop).
            for envelope in try sqlite.heldEnvelopes() {
                let c = try SignedChange(envelope: envelope)
                _ = try await pg.exchange(ExchangeRequest(device: c.change.device, roster: pgRoster, upload: [c], clientVector: VersionVector(),
                                                          nonce: nil, now: Timestamps.nowMillis), limits: .fixed(1))
                report.held += 1
            }
            let moved = try await pg.vector()
            guard moved == sourceVector else {
                throw ServerError("after the move PostgreSQL holds \(moved.total) changes, SQLite \(sourceVector.total): nothing was switched over")
            }
            report.records = try await pg.recordCount()
            guard try await pg.setMetaOnce("server_public_key", key.publicKey.hex) else {
                throw ServerError("another server was made in this PostgreSQL database meanwhile")
            }
            return report
        }
        try files.markPostgres(movedFrom: directory)
        return report
    }
}

extension PostgresSyncStore {
    /// Enrols devices as they are elsewhere (`migrate`), each with its activity.
    func importDevices(_ entries: [RosterEntry], activity: [(DeviceID, UInt64?, Int)]) async throws {
        try await transaction { db in
            for e in entries {
                _ = try await db.query("""
                    INSERT INTO roster (device, public_key, name, role, enrolled_at, revoked_after_seq) VALUES
                      (\(e.device.description), \(ByteBuffer(bytes: e.publicKey)), \(e.name), \(e.role.rawValue),
                       \(Int64(clamping: e.enrolledAtMillis)), \(e.revokedAfterSeq.map { Int64(clamping: $0) }))
                    """, logger: logger).collect()
                _ = try await db.query("INSERT INTO heads (device) VALUES (\(e.device.description))", logger: logger).collect()
            }
            for (device, last, backlog) in activity {
                guard let last else { continue }
                _ = try await db.query("""
                    INSERT INTO device_activity (device, last_sync, backlog) VALUES (\(device.description), \(Int64(clamping: last)), \(Int64(backlog)))
                    """, logger: logger).collect()
            }
        }
    }

    func recordCount() async throws -> Int {
        try await client.withConnection { db in
            var n = 0
            for try await c in try await db.query("SELECT count(*) FROM records", logger: logger).decode(Int64.self) { n = Int(c) }
            return n
        }
    }
}
