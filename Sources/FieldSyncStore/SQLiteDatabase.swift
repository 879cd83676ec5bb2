import FieldSyncCore
import Foundation
import GRDB
import Synchronization

/// A replica on disk: one SQLite file (WAL, synchronous=FULL but for commits the next sync
/// would repeat, see `write(durable:)`; foreign keys, secure_delete),
/// migrated from `Schema/sqlite/` when opened. Every write is one transaction that goes
/// through `Replicator`, so a crash leaves a whole change or none of it.
public struct ReplicaStore: Sendable {
    /// The layout this build reads (`meta.format`). 1 was the layout before the schema was
    /// squashed into one baseline; such a file is refused with a way forward.
    public static let format = "fieldsync-replica-2"
    let writer: any DatabaseWriter
    public let schema: RecordSchema
    public let path: String
    /// The server's store keeps each change's envelope to send it as is (`changes.envelope`).
    let keepsEnvelopes: Bool
    let rosters = RosterCache()
    /// An erase whose checkpoint could not finish yet (a reader held an old snapshot): tried
    /// again after every later write of this process until it does (`checkpointIfDue`).
    let checkpointDue = CheckpointDue()

    /// Opens the replica at `path`. With `create`, makes a new one (refusing to reuse a file).
    public static func open(path: String, create: Bool = false, schema: RecordSchema = .standard, server: Bool = false) throws -> ReplicaStore {
        let fm = FileManager.default
        let exists = fm.fileExists(atPath: path)
        if create && exists { throw StoreError(.alreadyInitialised, "a replica already exists at \(path)") }
        if !create && !exists { throw StoreError(.notInitialised, "no replica at \(path): run `fieldsync init --name NAME` first") }
        if exists && !fm.isWritableFile(atPath: path) { throw StoreError(.readOnly, "the replica \(path) is read-only") }
        if create {
            let dir = (path as NSString).deletingLastPathComponent
            if !fm.fileExists(atPath: dir) {
                do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
                    throw StoreError(.cannotOpen, "cannot create \(dir): \(Self.reason(error))")
                }
            }
            guard fm.isWritableFile(atPath: dir) else { throw StoreError(.readOnly, "cannot write in \(dir): it is read-only") }
        }
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            // Erased values must not linger in free pages.
            try db.execute(sql: "PRAGMA secure_delete = ON")
            // A first sync or a large import writes one long transaction: with SQLite's default
            // 2 MB page cache it spills dirty pages mid-transaction and re-reads them. The
            // writer only: readers keep the default, so a pool of them does not multiply it.
            if !db.configuration.readonly { try db.execute(sql: "PRAGMA cache_size = -32768") }
        }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: config)
            // GRDB's pool sets synchronous=NORMAL on its writer once WAL is on, after
            // `prepareDatabase` ran: set FULL again, or a commit would not wait for the disk.
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        } catch {
            throw StoreError(.notAReplica, "\(path) is not a fieldsync replica (\(Self.reason(error)))")
        }
        do {
            if !create {
                let format = try pool.read { db -> String? in
                    guard try db.tableExists("meta") else { return nil }
                    return try Meta.get("format", db)
                }
                if format == "fieldsync-replica-1" {
                    throw StoreError(.notAReplica, "\(path) was made by an earlier fieldsync whose layout this one does not read: make a new one with init, then sync")
                }
                guard format == Self.format else { throw StoreError(.notAReplica, "\(path) is a SQLite file but not a fieldsync replica") }
            }
            try Self.migrator(server: server).migrate(pool)
            if create { try pool.write { db in try Meta.set("format", Self.format, db) } }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError(.notAReplica, "\(path) is not a fieldsync replica (\(Self.reason(error)))")
        }
        return ReplicaStore(writer: pool, schema: schema, path: path, keepsEnvelopes: server)
    }

    static func reason(_ error: any Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "\(e.resultCode)" }
        return (error as NSError).localizedDescription
    }

    /// Migrations from `Schema/sqlite/`, plus `Schema/sqlite-server/` for the sync server: SQL
    /// only, each file once, in name order (GRDB's `DatabaseMigrator`).
    static func migrator(server: Bool) -> DatabaseMigrator {
        var m = DatabaseMigrator()
        let folders = server ? ["sqlite/", "sqlite-server/"] : ["sqlite/"]
        for name in EmbeddedSchema.files.keys.filter({ n in folders.contains { n.hasPrefix($0) } }).sorted() {
            let sql = EmbeddedSchema.files[name]!
            m.registerMigration(name) { db in try db.execute(sql: sql) }
        }
        return m
    }

    /// Runs `body` in one write transaction, turning SQLite's failures into one clear line.
    /// With `durable: false` the commit does not wait for the disk (synchronous=NORMAL for that
    /// one transaction): only for writes that are safe to lose in a power cut, because the next
    /// sync repeats them (an acknowledgement, a replay nonce, device activity). WAL keeps the
    /// order, so it can never outlive a later durable commit's loss, nor corrupt anything.
    func write<T>(durable: Bool = true, _ body: (Database) throws -> T) throws -> T {
        do {
            return try writer.writeWithoutTransaction { db in try Self.transaction(db, durable: durable, body) }
        } catch {
            throw translated(error, busy: "another fieldsync is writing to it")
        }
    }

    /// SQLite's read-only and busy failures as one clear line each; anything else as it is.
    func translated(_ error: any Error, busy: String) -> any Error {
        guard let e = error as? DatabaseError else { return error }
        if e.resultCode == .SQLITE_READONLY { return StoreError(.readOnly, "the replica \(path) is read-only") }
        if e.resultCode == .SQLITE_BUSY { return StoreError(.busy, "the replica \(path) is busy: \(busy)") }
        return error
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T { try writer.read(body) }

    /// One transaction, its commit's synchronous mode set just before it: each transaction sets
    /// its own, so none depends on an earlier one having restored FULL (a cancelled task makes
    /// GRDB refuse every later statement of its access, the restoring one included). FULL is
    /// put back after a light one when possible, so that a write bypassing these helpers (none
    /// does today) would not commit lightly by accident.
    static func transaction<T>(_ db: Database, durable: Bool, _ body: (Database) throws -> T) throws -> T {
        // Cached: compiling the pragma anew at every transaction was about 2 % of a `note add`.
        try db.cachedStatement(sql: durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL").execute()
        defer { if !durable { try? db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute() } }
        var value: T?
        try db.inTransaction { value = try body(db); return .commit }
        return value!
    }

    /// As `write`, but suspends instead of blocking a thread while another writer holds the
    /// lock: the server's handlers must not stall the cooperative pool on SQLite.
    func writeAsync<T: Sendable>(durable: Bool = true, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await writer.writeWithoutTransaction { db in try Self.transaction(db, durable: durable, body) }
        } catch {
            throw translated(error, busy: "another process is writing to it")
        }
    }

    /// After an erase: fold the WAL into the main file and truncate it, so no copy of an erased
    /// value survives in the WAL either (secure_delete zeroes the freed pages).
    /// It returns only when the whole WAL was copied and truncated: a reader holding an old
    /// snapshot keeps SQLite from finishing (it answers "busy" and leaves the WAL as it was), so
    /// it is tried again for up to `patience`, and then remembered and tried after each later
    /// write (`checkpointIfDue`), and the caller told (`StoreError.busy`).
    public func checkpoint(patience: Duration = .seconds(5)) throws {
        let deadline = ContinuousClock.now + patience
        while true {
            let done = try writer.writeWithoutTransaction { db -> Bool in
                guard let row = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") else { return false }
                // (busy, WAL frames, frames checkpointed): TRUNCATE leaves 0 and 0 when it finished.
                return (row[0] as Int64) == 0 && (row[1] as Int64) <= 0
            }
            if done { checkpointDue.set(false); return }
            guard ContinuousClock.now < deadline else {
                checkpointDue.set(true)
                throw StoreError(.busy, "the replica \(path) is busy: erased values are still in its write-ahead log; they are folded in at the next write")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    /// After a write: the checkpoint an earlier erase could not finish, if any.
    public func checkpointIfDue() {
        if checkpointDue.get() { try? checkpoint(patience: .milliseconds(200)) }
    }
}

/// Whether an erase still waits for its checkpoint (`ReplicaStore.checkpoint`).
final class CheckpointDue: Sendable {
    private let due = Mutex(false)
    func set(_ value: Bool) { due.withLock { $0 = value } }
    func get() -> Bool { due.withLock { $0 } }
}
