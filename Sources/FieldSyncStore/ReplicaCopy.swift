import FieldSyncCore
import Foundation
import GRDB
import Glibc

extension ReplicaStore {
    /// A consistent copy of this replica at `path`, made while others go on writing: SQLite's
    /// `VACUUM INTO` reads one snapshot (the WAL included) and writes a compact file. The file
    /// is created 0600 before any byte goes in, and never over an existing one.
    public func copy(to path: String) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw StoreError(errno == EEXIST ? .alreadyInitialised : .cannotOpen, "cannot create \(path): \(reason)")
        }
        close(fd)
        do {
            // Outside a transaction (VACUUM refuses one), on a reader: writers are not held up.
            guard let pool = writer as? DatabasePool else { throw StoreError(.cannotOpen, "this replica cannot be copied while open in memory") }
            try pool.unsafeRead { db in try db.execute(sql: "VACUUM INTO ?", arguments: [path]) }
        } catch {
            unlink(path)
            if let e = error as? StoreError { throw e }
            throw StoreError(.cannotOpen, "cannot copy the replica to \(path): \(Self.reason(error))")
        }
    }

    /// What a copy made by `copy(to:files:)` holds, read back.
    public struct Copy: Sendable {
        public var files: [String: [UInt8]]
        /// When the copy was made (ISO 8601).
        public var madeAt: String
        public var devices: Int
        public var changes: Int
    }

    /// A copy (as `copy(to:)`) that also carries `files` (a server's keys and certificates), so
    /// the copy alone rebuilds what it came from.
    public func copy(to path: String, files: [String: [UInt8]]) throws {
        try copy(to: path)
        do {
            let q = try DatabaseQueue(path: path)
            try q.write { db in
                try db.execute(sql: "CREATE TABLE copy_files (name TEXT PRIMARY KEY, bytes BLOB NOT NULL)")
                for (name, bytes) in files { try db.execute(sql: "INSERT INTO copy_files (name, bytes) VALUES (?, ?)", arguments: [name, Data(bytes)]) }
                try Meta.set("copied_at", Timestamps.iso(Timestamps.nowMillis), db)
            }
            try q.close()
        } catch {
            unlink(path)
            throw StoreError(.cannotOpen, "cannot finish the copy at \(path): \(Self.reason(error))")
        }
    }

    /// Reads a copy made by `copy(to:files:)`, checking that it is whole (SQLite's
    /// `quick_check`) and a replica of this build's layout; the file is not changed.
    public static func readCopy(_ path: String) throws -> Copy {
        guard FileManager.default.fileExists(atPath: path) else { throw StoreError(.notFound, "no file \(path)") }
        var config = Configuration()
        config.readonly = true
        do {
            let q = try DatabaseQueue(path: path, configuration: config)
            defer { try? q.close() }
            return try q.read { db in
                guard try String.fetchOne(db, sql: "PRAGMA quick_check") == "ok" else {
                    throw StoreError(.notAReplica, "\(path) is damaged (SQLite's quick_check fails)")
                }
                guard try db.tableExists("meta"), try Meta.get("format", db) == Self.format, try db.tableExists("copy_files"),
                      let madeAt = try Meta.get("copied_at", db) else {
                    throw StoreError(.notAReplica, "\(path) is not a fieldsync server backup")
                }
                var files: [String: [UInt8]] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT name, bytes FROM copy_files") { files[row["name"]] = [UInt8](row["bytes"] as Data) }
                let devices = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM roster") ?? 0
                let changes = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM changes") ?? 0
                return Copy(files: files, madeAt: madeAt, devices: devices, changes: changes)
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError(.notAReplica, "\(path) is not a fieldsync server backup (\(Self.reason(error)))")
        }
    }

    /// Puts the copy at `copy` in place as the replica at `path`, whose owner has stopped using
    /// it: written beside it (0600), its carried files dropped, then renamed over it in one step,
    /// so a crash leaves the old replica or the new one, never half of either. With
    /// `carryFrom` (a server's replaced database, whole), what happened there after the copy
    /// was made and must not be undone comes along, in the same transaction: devices enrolled
    /// since, revocations made since, invites used since (a token must not enrol twice), and
    /// the replay cache. Returns how many roster entries came along.
    @discardableResult
    public static func install(copy: String, at path: String, carryFrom later: String? = nil) throws -> Int {
        let temporary = path + ".restoring"
        unlink(temporary)
        do {
            try copyFile(copy, to: temporary)
            let q = try DatabaseQueue(path: temporary)
            let carried = try q.writeWithoutTransaction { db -> Int in
                if let later { try db.execute(sql: "ATTACH DATABASE ? AS later", arguments: [later]) }
                var n = 0
                try db.inTransaction {
                    try db.execute(sql: "DROP TABLE IF EXISTS copy_files")
                    try db.execute(sql: "DELETE FROM meta WHERE key = 'copied_at'")
                    guard later != nil else { return .commit }
                    // Counted first: the roster's triggers write too.
                    n = try Int.fetchOne(db, sql: """
                        SELECT (SELECT COUNT(*) FROM later.roster WHERE device NOT IN (SELECT device FROM main.roster))
                             + (SELECT COUNT(*) FROM main.roster m JOIN later.roster l ON l.device = m.device
                                WHERE m.revoked_after_seq IS NULL AND l.revoked_after_seq IS NOT NULL)
                        """) ?? 0
                    try db.execute(sql: """
                        INSERT INTO main.roster SELECT * FROM later.roster WHERE device NOT IN (SELECT device FROM main.roster);
                        UPDATE main.roster SET revoked_after_seq = (SELECT l.revoked_after_seq FROM later.roster l WHERE l.device = roster.device)
                            WHERE revoked_after_seq IS NULL
                              AND device IN (SELECT device FROM later.roster WHERE revoked_after_seq IS NOT NULL);
                        """)
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO main.invites SELECT * FROM later.invites WHERE used_at IS NOT NULL;
                        INSERT OR IGNORE INTO main.nonces SELECT * FROM later.nonces;
                        """)
                    return .commit
                }
                if later != nil { try db.execute(sql: "DETACH DATABASE later") }
                return n
            }
            try q.close()
            // Never a WAL of the old file beside the new one: SQLite would apply it to it.
            for suffix in ["-wal", "-shm"] { unlink(path + suffix) }
            guard rename(temporary, path) == 0 else { throw StoreError(.cannotOpen, "cannot put the copy in place: \(String(cString: strerror(errno)))") }
            let dir = Glibc.open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dir >= 0 { fsync(dir); close(dir) }
            return carried
        } catch {
            unlink(temporary)
            if let e = error as? StoreError { throw e }
            throw StoreError(.cannotOpen, "cannot restore \(copy): \(Self.reason(error))")
        }
    }

    /// Copies a file of any size to a new file (0600, never over an existing one), synced.
    static func copyFile(_ from: String, to path: String) throws {
        let input = Glibc.open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw StoreError(.cannotOpen, "cannot read \(from): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        let output = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw StoreError(.cannotOpen, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 { if errno == EINTR { continue }; throw StoreError(.cannotOpen, "cannot read \(from): \(String(cString: strerror(errno)))") }
            var done = 0
            while done < n {
                let w = buffer.withUnsafeBytes { Glibc.write(output, $0.baseAddress! + done, n - done) }
                if w < 0 { if errno == EINTR { continue }; throw StoreError(.cannotOpen, "cannot write \(path): \(String(cString: strerror(errno)))") }
                done += w
            }
        }
        guard fsync(output) == 0 else { throw StoreError(.cannotOpen, "cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    /// The highest seq of this replica's own device ever acknowledged, kept in `meta` and never
    /// lowered: a resend to a restored server marks changes unacknowledged again, but they did
    /// leave this laptop, and `takeBack` must never replace them.
    static func raiseAcknowledgedMark(_ db: Database) throws {
        guard let me = try Meta.get("device", db) else { return }
        let high = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM changes WHERE device = ? AND acked = 1"), arguments: [me]) ?? 0
        if high > (try Meta.get("acked_high", db).flatMap { Int64($0) } ?? 0) { try Meta.set("acked_high", String(high), db) }
    }

    /// This replica's own changes up to `seq` left the laptop another way than by sync (a
    /// bundle): like acknowledged ones, `takeBack` must never replace them.
    public func markLeft(through seq: UInt64) throws {
        try write { db in
            if Int64(clamping: seq) > (try Meta.get("acked_high", db).flatMap { Int64($0) } ?? 0) { try Meta.set("acked_high", String(seq), db) }
        }
    }

    static func acknowledgedMark(_ db: Database, device: DeviceID) throws -> UInt64 {
        let now = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM changes WHERE device = ? AND acked = 1"),
                                     arguments: [device.description]) ?? 0
        let kept = try Meta.get("device", db) == device.description ? (try Meta.get("acked_high", db).flatMap { Int64($0) } ?? 0) : 0
        return UInt64(clamping: max(now, kept))
    }

    /// The highest seq of `device` that a server has acknowledged.
    public func acknowledgedHead(device: DeviceID) throws -> UInt64 {
        try read { db in
            UInt64(clamping: try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM changes WHERE device = ? AND acked = 1"),
                                                arguments: [device.description]) ?? 0)
        }
    }
}
