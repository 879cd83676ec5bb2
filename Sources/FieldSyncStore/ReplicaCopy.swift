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
    /// so a crash leaves the old replica or the new one, never half of either.
    public static func install(copy: String, at path: String) throws {
        let temporary = path + ".restoring"
        unlink(temporary)
        do {
            guard let bytes = FileManager.default.contents(atPath: copy) else { throw StoreError(.cannotOpen, "cannot read \(copy)") }
            let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw StoreError(.cannotOpen, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            close(fd)
            guard written == bytes.count, synced else { throw StoreError(.cannotOpen, "cannot write \(temporary)") }
            let q = try DatabaseQueue(path: temporary)
            try q.write { db in
                try db.execute(sql: "DROP TABLE IF EXISTS copy_files")
                try db.execute(sql: "DELETE FROM meta WHERE key = 'copied_at'")
            }
            try q.close()
            for suffix in ["-wal", "-shm"] { unlink(path + suffix) }
            guard rename(temporary, path) == 0 else { throw StoreError(.cannotOpen, "cannot put the copy in place: \(String(cString: strerror(errno)))") }
        } catch {
            unlink(temporary)
            if let e = error as? StoreError { throw e }
            throw StoreError(.cannotOpen, "cannot restore \(copy): \(Self.reason(error))")
        }
    }

    /// The highest seq of `device` that a server has acknowledged.
    public func acknowledgedHead(device: DeviceID) throws -> UInt64 {
        try read { db in
            UInt64(clamping: try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM changes WHERE device = ? AND acked = 1"),
                                                arguments: [device.description]) ?? 0)
        }
    }
}
