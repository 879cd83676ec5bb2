import FieldSyncCore
import FieldSyncStore
import Foundation
import Glibc

/// `backup` and `restore` of a server on SQLite. A backup is one file: a consistent copy of
/// the database made while the server serves, carrying the folder's keys and certificates, so
/// it alone rebuilds the server (and so it is as secret as the server key: 0600). A restored
/// server has lost what came after the backup; its laptops send their own changes again at
/// their next sync (they still hold them), so nothing a laptop holds is lost.
public enum ServerBackup {
    /// The folder's files a backup carries.
    static let carried = ["server.key", "tls.key", "tls.pem", "ca.pem"]

    public struct Report: Sendable {
        public var madeAt: String
        public var devices: Int
        public var changes: Int
        /// Where `restore` put the database it replaced, if there was one.
        public var previous: String?
        /// Enrolments and revocations made after the backup, taken from the replaced database.
        public var rosterCarried = 0
        /// The replaced database could not be read: nothing was carried from it.
        public var previousUnreadable = false
    }

    public static func create(_ data: ServerData, to path: String) throws -> Report {
        try data.refuseIfPostgres()
        let store = try data.openStore()
        var files: [String: [UInt8]] = [:]
        for name in carried {
            guard let bytes = FileManager.default.contents(atPath: data.directory + "/" + name) else {
                throw ServerError("cannot read \(data.directory)/\(name)")
            }
            files[name] = Array(bytes)
        }
        try store.copy(to: path, files: files)
        let copy = try ReplicaStore.readCopy(path)
        return Report(madeAt: copy.madeAt, devices: copy.devices, changes: copy.changes)
    }

    /// Restores `path` into the folder: a new folder (or one without a server) gets the
    /// backup's keys and database; a folder of the same server (the same server key) gets its
    /// database replaced, the old one kept beside it. Refused while a `serve` runs on the folder,
    /// and for another server's backup.
    public static func restore(_ data: ServerData, from path: String) throws -> Report {
        let copy = try ReplicaStore.readCopy(path)
        for name in carried where copy.files[name] == nil { throw ServerError("\(path) lacks \(name): not a whole fieldsync server backup") }
        let fm = FileManager.default
        if !fm.fileExists(atPath: data.directory) {
            do { try fm.createDirectory(atPath: data.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
                throw ServerError("cannot create \(data.directory): \(error.localizedDescription)")
            }
        }
        let lock = try data.lockAgainstServe()
        defer { lock.release() }
        var readable = true
        var previous: String?
        if fm.fileExists(atPath: data.serverKeyPath) {
            guard FileManager.default.contents(atPath: data.serverKeyPath).map(Array.init) == copy.files["server.key"] else {
                throw ServerError("\(path) is the backup of another server (its server key differs from \(data.serverKeyPath)); restore it into a new folder")
            }
            try data.refuseIfPostgres()
        } else {
            for name in carried + ["server.sqlite"] where fm.fileExists(atPath: data.directory + "/" + name) {
                throw ServerError("\(data.directory) holds \(name) but no server key: restore into an empty folder")
            }
            for name in carried { try data.write(data.directory + "/" + name, copy.files[name]!, secret: name.hasSuffix(".key")) }
        }
        if fm.fileExists(atPath: data.databasePath) {
            // The database it replaces is kept beside it: a whole copy if it can be read, else its
            // files as they are (a damaged database is why many restores happen).
            let stamp = Timestamps.iso(Timestamps.nowMillis).replacingOccurrences(of: ":", with: "")
            let aside = data.databasePath + ".before-restore-" + stamp
            do {
                try ReplicaStore.open(path: data.databasePath, server: true).copy(to: aside)
                previous = aside
            } catch {
                for suffix in ["", "-wal", "-shm"] where fm.fileExists(atPath: data.databasePath + suffix) {
                    guard rename(data.databasePath + suffix, aside + suffix) == 0 else {
                        throw ServerError("cannot move \(data.databasePath + suffix) aside: \(ServerData.errno())")
                    }
                }
                previous = aside
                readable = false
            }
        }
        // What happened after the backup and must not be undone comes from the replaced database
        // (when it could be read), in the same transaction as the rest.
        let carriedOver = try ReplicaStore.install(copy: path, at: data.databasePath, carryFrom: readable ? previous : nil)
        try data.tightenDatabase()
        var report = Report(madeAt: copy.madeAt, devices: copy.devices, changes: copy.changes, previous: previous)
        report.rosterCarried = carriedOver
        report.previousUnreadable = !readable
        return report
    }
}

extension ServerData {
    var serveLockPath: String { directory + "/serve.lock" }

    /// A lock each `serve` holds (shared: several processes may serve one folder's PostgreSQL
    /// database) for as long as it runs, so `restore` can tell that the folder is in use.
    public func holdServeLock() throws -> FolderLock {
        try FolderLock(path: serveLockPath, exclusive: false, busy: "")
    }

    /// Held by what must not run beside a serve of this folder (`restore`, `migrate`): refused
    /// while one serves, and no serve starts meanwhile. The lock file too goes to the folder's
    /// owner when root runs it: `serve` must open it.
    public func lockAgainstServe() throws -> FolderLock {
        let lock = try FolderLock(path: serveLockPath, exclusive: true, busy: "a server is serving from \(directory): stop it first (systemctl stop, or SIGTERM)")
        try giveToFolderOwner(serveLockPath)
        return lock
    }

    func refuseIfPostgres() throws {
        if FileManager.default.fileExists(atPath: postgresMarkerPath) {
            throw ServerError("this server's data is in PostgreSQL: back it up and restore it with pg_dump and pg_restore (docs/DEPLOY.md, Backups)")
        }
    }
}

/// An advisory lock (flock) on a file, released when the process ends if not before.
public final class FolderLock: Sendable {
    let fd: Int32

    init(path: String, exclusive: Bool, busy: String) throws {
        // Not through a link: root running restore or migrate must not create a file elsewhere.
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ServerError("cannot open \(path): \(ServerData.errno())") }
        guard flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
            close(fd)
            throw ServerError(busy.isEmpty ? "cannot lock \(path): \(ServerData.errno())" : busy)
        }
    }

    public func release() { flock(fd, LOCK_UN); close(fd) }
}
