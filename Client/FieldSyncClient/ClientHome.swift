import FieldSyncCore
import FieldSyncStore
import Foundation
import Glibc

/// The replica folder: `$FIELDSYNC_HOME` (default `~/.local/share/fieldsync`) holding the device
/// key (`device.key`, mode 0600) and the replica (`replica.sqlite`).
public struct ClientHome: Sendable {
    public let path: String

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let h = environment["FIELDSYNC_HOME"], !h.isEmpty {
            path = h
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            path = home + "/.local/share/fieldsync"
        }
    }

    public var keyPath: String { path + "/device.key" }
    /// The key `fieldsync rekey` enrols, until the replica is the new key's: it replaces
    /// `device.key` only after the replica's commit, so a crash between the two is finished
    /// when the replica is next opened.
    public var rekeyPath: String { path + "/device.key.rekey" }
    public var databasePath: String { path + "/replica.sqlite" }

    /// Creates the key and the replica. Refuses an existing replica rather than overwrite it.
    public func initialise(name: String, role: Role) throws -> Replica {
        let fm = FileManager.default
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.count <= 100 else { throw ClientError.usage("--name must be 1 to 100 characters") }
        if fm.fileExists(atPath: databasePath) || fm.fileExists(atPath: keyPath) {
            throw ClientError("a replica already exists in \(path); refusing to overwrite it")
        }
        do { try fm.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw ClientError("cannot create \(path): \((error as NSError).localizedDescription)")
        }
        guard fm.isWritableFile(atPath: path) else { throw ClientError("cannot write in \(path): it is read-only") }
        let key = DeviceKey()
        // Write the key to a temporary name with 0600 from the start, then move it in place.
        let tmp = keyPath + ".tmp"
        guard fm.createFile(atPath: tmp, contents: Data(key.rawRepresentation.hex.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ClientError("cannot write the device key in \(path)")
        }
        let store: ReplicaStore
        do {
            store = try ReplicaStore.open(path: databasePath, create: true)
            let me = RosterEntry(publicKey: key.publicKey, name: trimmed, role: role, enrolledAtMillis: Timestamps.nowMillis)
            try store.upsertRoster([me])
            try store.setMeta("device", me.device.description)
            try store.setMeta("name", trimmed)
            try fm.moveItem(atPath: tmp, toPath: keyPath)
        } catch {
            try? fm.removeItem(atPath: tmp)
            try? fm.removeItem(atPath: databasePath)
            for suffix in ["-wal", "-shm"] { try? fm.removeItem(atPath: databasePath + suffix) }
            throw error
        }
        return Replica(home: self, store: store, key: key)
    }

    public func open() throws -> Replica {
        let fm = FileManager.default
        guard fm.fileExists(atPath: databasePath) else {
            throw StoreError(.notInitialised, "no replica in \(path): run `fieldsync init --name NAME` first")
        }
        guard let text = fm.contents(atPath: keyPath).flatMap({ String(data: $0, encoding: .utf8) }),
              let raw = [UInt8](hex: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ClientError("the device key \(keyPath) is missing or unreadable")
        }
        if let attrs = try? fm.attributesOfItem(atPath: keyPath), let mode = attrs[.posixPermissions] as? Int, mode & 0o077 != 0 {
            throw ClientError("the device key \(keyPath) is readable by others (mode \(String(mode, radix: 8))): run chmod 600 on it")
        }
        var key = try DeviceKey(rawRepresentation: raw)
        let store = try ReplicaStore.open(path: databasePath)
        if try store.meta("device") != key.deviceID.description, let pending = try? readKey(rekeyPath),
           try store.meta("device") == pending.deviceID.description {
            // A rekey committed its replica but was stopped before it put its key in place.
            try finishRekey()
            key = pending
        }
        guard try store.meta("device") == key.deviceID.description else {
            throw ClientError("the device key in \(path) does not belong to this replica")
        }
        return Replica(home: self, store: store, key: key)
    }

    func readKey(_ file: String) throws -> DeviceKey {
        guard let text = FileManager.default.contents(atPath: file).flatMap({ String(data: $0, encoding: .utf8) }),
              let raw = [UInt8](hex: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ClientError("the device key \(file) is missing or unreadable")
        }
        return try DeviceKey(rawRepresentation: raw)
    }

    /// The key a rekey enrols: the one a stopped rekey made (its invite may be spent on it
    /// already), or a new one, 0600 from its first byte.
    public func rekeyKey() throws -> (key: DeviceKey, new: Bool) {
        if FileManager.default.fileExists(atPath: rekeyPath) { return (try readKey(rekeyPath), false) }
        let key = DeviceKey()
        try Replica.writeNew(rekeyPath, Array(key.rawRepresentation.hex.utf8))
        // The name too: the key must outlive a power cut that the replica's commit survives.
        syncFolder()
        return (key, true)
    }

    /// Puts the rekeyed key in place of the old one (which no longer signs for this replica).
    public func finishRekey() throws {
        guard rename(rekeyPath, keyPath) == 0 else { throw ClientError("cannot move \(rekeyPath) to \(keyPath): \(String(cString: strerror(errno)))") }
        syncFolder()
    }

    /// Makes the folder's names durable (a new or renamed key file).
    func syncFolder() {
        let dir = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { _ = fsync(dir); close(dir) }
    }

    /// Drops a rekey's key that was never enrolled (the server refused the invite).
    public func abandonRekey() { unlink(rekeyPath) }
}

/// An open replica with its device key: what every command works on.
public struct Replica: Sendable {
    public let home: ClientHome
    public let store: ReplicaStore
    public let key: DeviceKey
    public var device: DeviceID { key.deviceID }
    public var schema: RecordSchema { store.schema }

    public func myEntry() throws -> RosterEntry {
        guard let e = try store.roster()[device] else { throw ClientError("this device is missing from its own roster") }
        return e
    }

    /// Device names for display, falling back to the id.
    public func names() throws -> [DeviceID: String] {
        Dictionary(uniqueKeysWithValues: try store.roster().sorted.map { ($0.device, $0.name) })
    }
}
