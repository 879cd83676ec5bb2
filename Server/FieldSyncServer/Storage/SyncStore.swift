import FieldSyncCore
import FieldSyncStore

/// What the sync server needs of its storage: the embedded SQLite replica (`SQLiteSyncStore`)
/// or, for several server processes, PostgreSQL. The types here are the server's; a store
/// keeps its threading to itself. Every call is async and must never block a thread of the
/// cooperative pool for long (a store may run a call on the caller's thread when nothing else
/// waits, as SQLite's does).
public protocol SyncStore: Sendable {
    /// The roster as stored now.
    func roster() async throws -> Roster
    /// The roster to authenticate a request with: as stored now, or as read at most
    /// `PostgresRosterCache.maxAge` ago by a store that keeps it (a revocation made through
    /// another process then holds here within that; an upload's transaction checks it again).
    /// A roster that does not list `device` is read afresh: it may have enrolled a moment ago.
    func recentRoster(knowing device: DeviceID?) async throws -> Roster
    /// One exchange (`ExchangeRequest`): records its nonce and stores the upload durably in one
    /// transaction (a pull, which stores no change, need not wait for the disk), then collects
    /// what the client lacks, as many as `limits` allows when each part of the work starts. A
    /// nonce seen before throws `SyncStoreError(.replayed)` and stores nothing.
    func exchange(_ request: ExchangeRequest, limits: ExchangeLimits) async throws -> ExchangeResult
    /// Spends an invite on a device key; throws `SyncStoreError(.inviteRefused)` for an unknown,
    /// used or expired token or a key already enrolled. An empty `name` takes the invite's.
    func enroll(token: String, publicKey: [UInt8], name: String, now: UInt64) async throws -> RosterEntry
    /// False when the nonce was seen before (a replay).
    func useNonce(_ nonce: SignatureNonce, now: UInt64) async throws -> Bool
    /// Devices that synced since `since` (ms).
    func devicesSeen(since: UInt64) async throws -> Int
    /// Whether the database answers (`/healthz`).
    func health() async -> StoreHealth
    /// Remembers forks an exchange refused (`ExchangeResult.forks`): the first version refused
    /// at each device and seq, at most `ForkReport.maxPerDevice` per device.
    func recordForks(_ forks: [ForkReport]) async throws
    /// The forks remembered whose refused version is not stored (one refused while a gap was
    /// open may be taken since), newest first, at most `limit`.
    func forks(limit: Int) async throws -> [ForkReport]
}

/// A device whose key signed another change at `seq` than the one stored: the stored chain is
/// the true one, and `refused` names the other version (DESIGN.md §5, forks).
public struct ForkReport: Sendable, Hashable {
    /// A hostile device could sign a new version of every seq it ever wrote: what is kept of
    /// them is bounded, as on a laptop.
    public static let maxPerDevice = ReplicaStore.Fork.maxPerDevice
    public var device: DeviceID
    public var seq: UInt64
    public var refused: ChangeID
    public var seenAt: UInt64
    public init(device: DeviceID, seq: UInt64, refused: ChangeID, seenAt: UInt64) {
        self.device = device; self.seq = seq; self.refused = refused; self.seenAt = seenAt
    }
}

/// What an administrator (the `fieldsync-server` commands) and the tests need beside the
/// exchange: invites, revocation, and a look at what is stored.
public protocol SyncStoreAdmin: SyncStore {
    /// A one-time invite for a device of `role` named `name`; returns the token (only its hash
    /// is stored).
    func createInvite(role: Role, name: String, ttlMillis: UInt64, now: UInt64) async throws -> String
    /// Refuses the device's changes after its last stored seq, on every process; throws
    /// `SyncStoreError(.notFound)` for a device not on the roster.
    func revoke(_ device: DeviceID) async throws -> RosterEntry
    /// Each enrolled device with its last sync, its changes stored and its backlog.
    func deviceReports() async throws -> [DeviceReport]
    func hasChange(_ id: ChangeID) async throws -> Bool
    /// The highest stored seq of each device.
    func vector() async throws -> VersionVector
    /// A record as the merge shows it now; nil for one nothing wrote to.
    func view(_ id: RecordID) async throws -> RecordView?
    /// Every invite made, oldest first (`invite list`).
    func invites() async throws -> [InviteReport]
    /// Withdraws the unused invite whose token hash is `hash`; false if there is none (used,
    /// withdrawn, or never made).
    func cancelInvite(hash: [UInt8]) async throws -> Bool
}

/// An invite as `invite list` shows it. Its id is its token's hash (the token itself is never
/// stored).
public struct InviteReport: Sendable {
    public var hash: [UInt8]
    public var role: Role
    public var name: String
    public var createdAt: UInt64
    public var expiresAt: UInt64
    public var usedAt: UInt64?
    public var usedBy: String?

    public init(hash: [UInt8], role: Role, name: String, createdAt: UInt64, expiresAt: UInt64, usedAt: UInt64?, usedBy: String?) {
        self.hash = hash; self.role = role; self.name = name; self.createdAt = createdAt; self.expiresAt = expiresAt
        self.usedAt = usedAt; self.usedBy = usedBy
    }

    /// The short id people type: the hash's first 12 hex digits.
    public var id: String { String(hash.hex.prefix(12)) }

    public func state(now: UInt64) -> String {
        if let usedAt { return "used \(Timestamps.iso(usedAt))" + (usedBy.map { " by \($0)" } ?? "") }
        return expiresAt > now ? "open" : "expired"
    }
}

/// One enrolled device as `devices list` shows it.
public struct DeviceReport: Sendable {
    public var entry: RosterEntry
    public var lastSync: UInt64?
    public var changes: Int
    /// Changes it still lacked after its last exchange.
    public var backlog: Int
}

/// Whether a store can serve, for `/healthz`.
public struct StoreHealth: Sendable {
    public var ok: Bool
    /// "sqlite" or "postgresql".
    public var backend: String
    public var detail: String
}


/// A store's refusal, by code: the server decides on the code, never on the message.
public struct SyncStoreError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The request's signature nonce was used before.
        case replayed
        /// The invite token is unknown, used or expired, or the key is already enrolled.
        case inviteRefused
        /// No such device (or other thing named by the caller).
        case notFound
    }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { message }

    /// The request's signature nonce was spent before: every store refuses a replay with this.
    static let replayed = SyncStoreError(.replayed, Authenticator.replayed)
}

/// A request signature's nonce, kept until the signature expires (the replay cache).
public struct SignatureNonce: Sendable, Hashable {
    public var device: String
    public var nonce: String
    public var expiresAt: UInt64
    public init(device: String, nonce: String, expiresAt: UInt64) { self.device = device; self.nonce = nonce; self.expiresAt = expiresAt }
}

/// How many changes one exchange takes up and sends down, asked when that work starts rather
/// than when the request arrived: laptops arrive in bursts, and the first of a burst would
/// otherwise take a whole batch through the writer while the rest queue behind it.
public struct ExchangeLimits: Sendable {
    public var takes: @Sendable () -> Int
    public var sends: @Sendable () -> Int

    public init(takes: @escaping @Sendable () -> Int, sends: @escaping @Sendable () -> Int) {
        self.takes = takes
        self.sends = sends
    }

    public static func fixed(_ n: Int) -> ExchangeLimits { ExchangeLimits(takes: { n }, sends: { n }) }
}

/// One authenticated sync request, as the store sees it.
public struct ExchangeRequest: Sendable {
    /// The device that signed the request: its nonce and its activity.
    public var device: DeviceID
    /// Whose chain the upload extends: the requesting device's own, or another enrolled
    /// device's that it relays (work it holds that the server lacks: a server restored from a
    /// backup, or changes carried to it by bundle). Each change is checked against its
    /// author's key and chain exactly as if the author had sent it, so relaying needs no trust
    /// in the relay; one author a request, so an upload takes one chain lock.
    public var author: DeviceID
    /// The roster the request was authenticated with: the upload's signatures are checked
    /// against it (revocation is judged again inside the store's transaction).
    public var roster: Roster
    public var upload: [SignedChange]
    public var clientVector: VersionVector
    /// Recorded in the exchange's own transaction (nil: already recorded).
    public var nonce: SignatureNonce?
    public var now: UInt64

    public init(device: DeviceID, author: DeviceID? = nil, roster: Roster, upload: [SignedChange], clientVector: VersionVector,
                nonce: SignatureNonce?, now: UInt64) {
        self.device = device
        self.author = author ?? device
        self.roster = roster
        self.upload = upload
        self.clientVector = clientVector
        self.nonce = nonce
        self.now = now
    }
}

/// What one exchange did and what it answers.
public struct ExchangeResult: Sendable {
    /// Stored (a duplicate too): the laptop may drop them from its outbox.
    public var accepted: [ChangeID] = []
    /// Refused outright, or stored but applied nowhere by policy (then listed in both).
    public var refused: [ChangeRefusal] = []
    /// What the client lacks, as envelopes.
    public var lacking: [[UInt8]] = []
    public var vector = VersionVector()
    public var more = false
    /// Uploaded changes refused because their device's chain holds another at their seq.
    public var forks: [ForkReport] = []
    public init() {}
}

extension SyncStore {
    public func recentRoster(knowing device: DeviceID?) async throws -> Roster { try await roster() }
}
