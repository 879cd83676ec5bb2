import FieldSyncCore
import FieldSyncStore

/// What the sync server needs of its storage. The embedded SQLite `ReplicaStore` is the default;
/// another backend (PostgreSQL, for several server processes) implements the same calls.
/// Every call is async: a handler must never block a thread of the cooperative pool on storage,
/// unless it is `alone` (no other request in flight, `RequestCount`), where the store may do
/// its work on the calling thread rather than pay for two thread hand-offs each time.
public protocol SyncStore: Sendable {
    func currentRoster(alone: Bool) async throws -> Roster
    /// Records the request's nonce and stores the uploaded changes durably (one transaction; a
    /// pull, which stores no change, need not wait for the disk), then collects what the client
    /// lacks, as many as `limits` allows when each part of the work starts. A nonce seen before
    /// throws `StoreError(.replayed)`.
    func exchange(device: DeviceID, roster: Roster?, upload: [SignedChange], clientVector: VersionVector, limits: ExchangeLimits, now: UInt64,
                  nonce: SignatureNonce?, alone: Bool) async throws -> ReplicaStore.ExchangeResult
    func enrollDevice(token: String, publicKey: [UInt8], name: String, now: UInt64) async throws -> RosterEntry
    /// False when the nonce was seen before (a replay).
    func useNonce(_ nonce: SignatureNonce, now: UInt64) async throws -> Bool
    func countDevicesSeen(since: UInt64) async throws -> Int
}

extension ReplicaStore: SyncStore {}
