import FieldSyncCore
import FieldSyncStore
import Synchronization

/// The sync server's store on the embedded SQLite replica: one process, one file.
///
/// A call that finds no other call in flight runs its SQLite work on the calling thread
/// (`inline`), which then waits for nobody but its own fsync; any other call queues on GRDB's
/// writer and suspends meanwhile. So at most one thread of the cooperative pool ever waits on
/// SQLite, and a lone laptop's sync pays no thread hand-offs (`ReplicaStore.Access`).
public final class SQLiteSyncStore: SyncStoreAdmin {
    public let replica: ReplicaStore
    let calls = Atomic<Int>(0)
    let inlineWhenAlone: Bool

    /// `inlineWhenAlone: false` queues every call (tests compare the two ways).
    public init(_ replica: ReplicaStore, inlineWhenAlone: Bool = true) {
        self.replica = replica
        self.inlineWhenAlone = inlineWhenAlone
    }

    /// Runs `body`, telling it whether it is the only call in flight.
    func counted<T>(_ body: (_ inline: Bool) async throws -> T) async throws -> T {
        let inline = calls.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue == 1 && inlineWhenAlone
        defer { calls.wrappingSubtract(1, ordering: .acquiringAndReleasing) }
        return try await body(inline)
    }

    public func roster() async throws -> Roster {
        try await counted { inline in try await replica.currentRoster(inline: inline) }
    }

    public func exchange(_ r: ExchangeRequest, limits: ExchangeLimits) async throws -> ExchangeResult {
        try await counted { (inline: Bool) async throws -> ExchangeResult in
            let (upload, verified) = ServerExchange.preverify(r, limits: limits)
            // A pull stores no change: its nonce and the device's activity are safe to lose in a
            // power cut (replaying a pull needs its plaintext, which only the device and TLS see,
            // and would only repeat an answer).
            let (stored, known) = try await replica.serverWrite(inline: inline, durable: !upload.isEmpty, wallMillis: r.now) { (t: inout ServerTransaction) throws -> (ExchangeResult, VersionVector) in
                if let n = r.nonce, try !t.useNonce(device: n.device, nonce: n.nonce, expiresAt: n.expiresAt, now: r.now) {
                    throw SyncStoreError.replayed
                }
                try t.expect(upload)
                let (result, known) = try ServerExchange.apply(upload, verified: verified, request: r, limits: limits, into: &t)
                try t.recordActivity(device: r.device, now: r.now,
                                     backlog: ServerExchange.backlog(held: try t.vector(), known: known, sending: limits.sends()))
                return (result, known)
            }
            var result = stored
            // An erase must not survive in the WAL: fold it into the main file (zeroed by
            // secure_delete). One that readers keep from finishing is tried after later exchanges.
            if upload.contains(where: { $0.erases && result.accepted.contains($0.id) }) { try? replica.checkpoint() } else { replica.checkpointIfDue() }
            // Read after the commit, from a snapshot beside other writers: the single SQLite
            // writer is held only to store.
            let limit = limits.sends()
            let answer = try await replica.serverRead(inline: inline) { (reader: ServerReader) throws -> (lacking: [[UInt8]], more: Bool, vector: VersionVector) in
                try reader.lacking(known: known, limit: limit, maxBytes: SyncProtocol.maxAnswerBytes)
            }
            result.lacking = answer.lacking
            result.vector = answer.vector
            result.more = answer.more
            return result
        }
    }

    public func enroll(token: String, publicKey: [UInt8], name: String, now: UInt64) async throws -> RosterEntry {
        do {
            return try await replica.enrollDevice(token: token, publicKey: publicKey, name: name, now: now)
        } catch let e as StoreError where e.code == .notFound || e.code == .alreadyInitialised {
            throw SyncStoreError(.inviteRefused, e.message)
        }
    }

    public func useNonce(_ n: SignatureNonce, now: UInt64) async throws -> Bool {
        try await replica.useNonce(device: n.device, nonce: n.nonce, expiresAt: n.expiresAt, now: now)
    }

    public func devicesSeen(since: UInt64) async throws -> Int {
        try await replica.countDevicesSeen(since: since)
    }

    public func health() async -> StoreHealth {
        do {
            _ = try await replica.countDevicesSeen(since: .max)
            return StoreHealth(ok: true, backend: "sqlite", detail: "readable")
        } catch {
            return StoreHealth(ok: false, backend: "sqlite", detail: "the database cannot be read")
        }
    }

    public func createInvite(role: Role, name: String, ttlMillis: UInt64, now: UInt64) async throws -> String {
        try replica.createInvite(role: role, name: name, ttlMillis: ttlMillis, now: now)
    }

    public func revoke(_ device: DeviceID) async throws -> RosterEntry {
        do { return try replica.revoke(device) } catch let e as StoreError where e.code == .notFound {
            throw SyncStoreError(.notFound, e.message)
        }
    }

    public func deviceReports() async throws -> [DeviceReport] {
        try replica.deviceReports().map { DeviceReport(entry: $0.entry, lastSync: $0.lastSync, changes: $0.changes, backlog: $0.backlog) }
    }

    public func hasChange(_ id: ChangeID) async throws -> Bool { try replica.hasChange(id) }

    public func recordForks(_ forks: [ForkReport]) async throws {
        let rows = forks.map { ReplicaStore.Fork(device: $0.device, seq: $0.seq, refused: $0.refused, seenAt: $0.seenAt) }
        try await counted { inline in try await replica.recordForks(rows, maxPerDevice: ForkReport.maxPerDevice, inline: inline) }
    }

    public func forks(limit: Int) async throws -> [ForkReport] {
        try await counted { inline in try await replica.unheldForks(inline: inline) }.sorted { ($0.seenAt, $1.device, $1.seq) > ($1.seenAt, $0.device, $0.seq) }.prefix(max(0, limit))
            .map { ForkReport(device: $0.device, seq: $0.seq, refused: $0.refused, seenAt: $0.seenAt) }
    }

    public func vector() async throws -> VersionVector { try replica.vector() }

    public func view(_ id: RecordID) async throws -> RecordView? { try replica.view(id) }

    public func invites() async throws -> [InviteReport] {
        try replica.invites().compactMap { i in
            Role(rawValue: i.role).map { InviteReport(hash: i.hash, role: $0, name: i.name, createdAt: i.createdAt, expiresAt: i.expiresAt, usedAt: i.usedAt, usedBy: i.usedBy) }
        }
    }

    public func cancelInvite(hash: [UInt8]) async throws -> Bool { try replica.cancelInvite(hash: hash) }
}
