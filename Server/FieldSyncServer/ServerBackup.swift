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
        let lock = try data.lockForRestore()
        defer { lock.release() }
        var previous: String?
        var later: Roster?
        if fm.fileExists(atPath: data.serverKeyPath) {
            guard FileManager.default.contents(atPath: data.serverKeyPath).map(Array.init) == copy.files["server.key"] else {
                throw ServerError("\(path) is the backup of another server (its server key differs from \(data.serverKeyPath)); restore it into a new folder")
            }
            try data.refuseIfPostgres()
            if fm.fileExists(atPath: data.databasePath) {
                // The database it replaces is kept, whole (its WAL too), beside it.
                let aside = data.databasePath + ".before-restore-" + Timestamps.iso(Timestamps.nowMillis).replacingOccurrences(of: ":", with: "")
                let old = try ReplicaStore.open(path: data.databasePath, server: true)
                try old.copy(to: aside)
                later = try old.roster()
                previous = aside
            }
        } else {
            for name in carried where fm.fileExists(atPath: data.directory + "/" + name) {
                throw ServerError("\(data.directory) holds \(name) but no server key: restore into an empty folder")
            }
            for name in carried { try data.write(data.directory + "/" + name, copy.files[name]!, secret: name.hasSuffix(".key")) }
        }
        try ReplicaStore.install(copy: path, at: data.databasePath)
        // The roster as it was, where the replaced database still tells: a device enrolled after
        // the backup can go on syncing, and one revoked after it stays revoked.
        var carriedOver = 0
        if let later {
            let restored = try ReplicaStore.open(path: data.databasePath, server: true)
            let now = try restored.roster()
            let news = later.sorted.filter { e in
                guard let was = now[e.device] else { return true }
                return was.revokedAfterSeq == nil && e.revokedAfterSeq != nil
            }
            try restored.upsertRoster(news)
            carriedOver = news.count
        }
        try data.tightenDatabase()
        var report = Report(madeAt: copy.madeAt, devices: copy.devices, changes: copy.changes, previous: previous)
        report.rosterCarried = carriedOver
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

    func lockForRestore() throws -> FolderLock {
        try FolderLock(path: serveLockPath, exclusive: true, busy: "a server is serving from \(directory): stop it first (systemctl stop, or SIGTERM)")
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
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServerError("cannot open \(path): \(ServerData.errno())") }
        guard flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
            close(fd)
            throw ServerError(busy.isEmpty ? "cannot lock \(path): \(ServerData.errno())" : busy)
        }
    }

    public func release() { flock(fd, LOCK_UN); close(fd) }
}
