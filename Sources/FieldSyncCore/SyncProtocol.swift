import Crypto
import Foundation

/// The sync protocol's messages (DESIGN.md §7). Enrolment and the roster are JSON. A sync body
/// (`SyncBody`) is a small JSON header followed by the changes' envelopes as raw bytes
/// (`SignedChange.envelope`: the signature and the change in wire form, from which the receiver
/// rebuilds the signed bytes byte for byte). Raw rather than base64 in JSON: a first sync is
/// mostly envelopes, and base64 added a third to every one of them, plus the parsing.
public enum SyncProtocol {
    public static let contentType = "application/json"
    /// `/v1/sync` requests and answers.
    public static let syncType = "application/vnd.fieldsync.sync"
    public static let problemType = "application/problem+json"
    /// Most changes either side sends in one exchange.
    public static let maxBatch = 500
    /// Largest request body the server reads.
    public static let maxBodyBytes = 16 << 20
    /// Envelope bytes an answer carries at most (beside `maxBatch`), and those a client sends in
    /// one request: a field link may move 8 kB a second, and an exchange must end inside the
    /// client's deadline, an upload inside its signature's two minutes. Counted by changes only,
    /// 500 changes of a large import (1,000 ops, 35 kB each) were 17 MB in one exchange. One
    /// change always goes, whatever its size.
    public static let maxAnswerBytes = 1 << 20
    public static let maxUploadBytes = 512 << 10

    /// How many of the first `sizes` fit in `budget` bytes: always at least one.
    public static func fitting(_ sizes: [Int], budget: Int) -> Int {
        var b = ByteBudget(limit: budget)
        return sizes.prefix { b.take($0) }.count
    }
}

/// The bytes one request or answer may still carry (`SyncProtocol.maxUploadBytes`,
/// `maxAnswerBytes`): changes are taken in order while they fit, and the first always is.
public struct ByteBudget: Sendable {
    public let limit: Int
    public private(set) var used = 0
    var taken = 0
    var refused = false

    public init(limit: Int) { self.limit = limit }

    /// Takes a change of `size` bytes if it fits (or is the first); once one does not, none does.
    public mutating func take(_ size: Int) -> Bool {
        guard !refused, taken == 0 || size <= limit - used else { refused = true; return false }
        used += size
        taken += 1
        return true
    }

    /// Nothing more can be taken.
    public var isSpent: Bool { refused || used >= limit }
}

/// `version (1) ‖ varint length ‖ header JSON ‖ (varint length ‖ envelope)*`, read strictly.
public enum SyncBody {
    static let version: UInt8 = 1

    public static func encode(header: some Encodable, changes: [[UInt8]]) throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return encode(headerJSON: Array(try enc.encode(header)), changes: changes)
    }

    static func encode(headerJSON: [UInt8], changes: [[UInt8]]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(changes.reduce(headerJSON.count + 8) { $0 + $1.count + 3 })
        w.u8(version)
        w.blob(headerJSON)
        for c in changes { w.blob(c) }
        return w.bytes
    }

    /// The header's JSON bytes and the envelopes, checked for framing only.
    public static func split(_ body: [UInt8]) throws(CoreError) -> (header: [UInt8], changes: [[UInt8]]) {
        var r = ByteReader(body)
        let parsed = Result { () throws(CoreError) -> ([UInt8], [[UInt8]]) in
            guard try r.u8() == version else { throw CoreError(.malformed, "version \(body.first ?? 0) is not \(version)") }
            let head = try r.blob(max: 1 << 20, what: "header")
            var changes: [[UInt8]] = []
            while !r.isAtEnd { changes.append(try r.blob(max: SyncProtocol.maxBodyBytes, what: "change")) }
            return (head, changes)
        }
        switch parsed {
        case .success(let p): return p
        case .failure(let e): throw CoreError(.malformed, "malformed sync body: \(e.message)")
        }
    }

    /// `direct` reads the plain headers it knows (`SyncHeaderJSON`); JSONDecoder reads the rest.
    public static func decode<H: Decodable>(_ body: [UInt8], header: H.Type,
                                            direct: ([UInt8]) -> H? = { _ in nil }) throws(CoreError) -> (H, [[UInt8]]) {
        let (head, changes) = try split(body)
        guard let h = direct(head) ?? (try? JSONDecoder().decode(H.self, from: Data(head))) else {
            throw CoreError(.malformed, "malformed sync body: the header is not the expected JSON")
        }
        return (h, changes)
    }
}

public struct SyncRequest: Codable, Sendable {
    /// What the client holds: device id → highest contiguous seq.
    public var vector: [String: UInt64]
    /// The client's unacknowledged changes as envelopes, oldest first (at most `SyncProtocol.maxBatch`).
    public var changes: [[UInt8]] = []
    /// `SignedRoster.digest` of the roster the client holds: the answer carries the roster only
    /// when the server's differs (it changes on enrolment and revocation, not per exchange).
    public var rosterDigest: String?

    enum CodingKeys: String, CodingKey { case vector, rosterDigest }

    public init(vector: VersionVector, changes: [SignedChange], rosterDigest: String? = nil) {
        self.vector = Dictionary(uniqueKeysWithValues: vector.seqs.map { ($0.key.description, $0.value) })
        self.changes = changes.map(\.envelope)
        self.rosterDigest = rosterDigest
    }

    public init(body: [UInt8]) throws(CoreError) {
        let (h, changes) = try SyncBody.decode(body, header: SyncRequest.self, direct: SyncHeaderJSON.request)
        self = h
        self.changes = changes
    }

    public func body() throws -> [UInt8] { SyncBody.encode(headerJSON: SyncHeaderJSON.request(self), changes: changes) }

    public func decodedVector() throws(CoreError) -> VersionVector {
        var v = VersionVector()
        for (k, s) in vector {
            guard let d = DeviceID(k) else { throw CoreError(.malformed, "vector names '\(k)', not a device id") }
            guard s <= ChangeCodec.maxSeq else { throw CoreError(.oversize, "vector seq \(s) for \(k) is beyond \(ChangeCodec.maxSeq)") }
            v.seqs[d] = s
        }
        return v
    }
}

public struct ChangeRefusal: Codable, Sendable, Hashable {
    public var id: String
    public var code: String
    public var reason: String
    public init(id: String, code: String, reason: String) { self.id = id; self.code = code; self.reason = reason }

    /// A relayed change without a value, on a record the server does not hold erased: the
    /// server refuses it, and a relaying laptop tries that author again once another's moves.
    public static let valuesMissing = "values_missing"
}

public struct SyncResponse: Codable, Sendable {
    /// Changes stored durably (including those kept but refused by policy, listed in `refused` too).
    public var accepted: [String]
    /// Changes refused: not stored (tampered, revoked, forked…), or stored but applied nowhere (policy).
    public var refused: [ChangeRefusal]
    /// Changes the client lacks, as envelopes, oldest first per device.
    public var changes: [[UInt8]] = []
    /// The server's vector after this exchange.
    public var vector: [String: UInt64]
    /// More changes wait on the server: ask again.
    public var more: Bool
    /// The server's clock (Unix ms), from which the client learns its offset.
    public var serverTime: UInt64
    /// The signed roster, when it differs from the one the request named.
    public var roster: SignedRoster?
    /// Forks the server knows of (absent when none): a replica holding a refused version gives
    /// it up for the server's chain.
    public var forks: [ForkNotice]?

    enum CodingKeys: String, CodingKey { case accepted, refused, vector, more, serverTime, roster, forks }

    public init(body: [UInt8]) throws(CoreError) {
        let (h, changes) = try SyncBody.decode(body, header: SyncResponse.self)
        self = h
        self.changes = changes
    }

    public func body() throws -> [UInt8] {
        guard let head = SyncHeaderJSON.response(self) else { return try SyncBody.encode(header: self, changes: changes) }
        return SyncBody.encode(headerJSON: head, changes: changes)
    }

    public init(accepted: [String], refused: [ChangeRefusal], changes: [[UInt8]], vector: [String: UInt64], more: Bool,
                serverTime: UInt64, roster: SignedRoster?) {
        self.accepted = accepted
        self.refused = refused
        self.changes = changes
        self.vector = vector
        self.more = more
        self.serverTime = serverTime
        self.roster = roster
    }
}

/// A device whose key signed `refused` at `seq` beside the change the server's chain holds
/// there: a fork. Ids as hex, devices as base32, like the rest of the header.
public struct ForkNotice: Codable, Sendable, Hashable {
    public var device: String
    public var seq: UInt64
    public var refused: String
    public init(device: String, seq: UInt64, refused: String) { self.device = device; self.seq = seq; self.refused = refused }
}

public struct EnrollRequest: Codable, Sendable {
    public var token: String
    public var publicKey: String
    public var name: String
    public init(token: String, publicKey: [UInt8], name: String) {
        self.token = token
        self.publicKey = Data(publicKey).base64EncodedString()
        self.name = name
    }
}

public struct EnrollResponse: Codable, Sendable {
    public var device: String
    public var role: String
    public var serverPublicKey: String
    public var roster: SignedRoster
    public var serverTime: UInt64
    public init(device: String, role: String, serverPublicKey: String, roster: SignedRoster, serverTime: UInt64) {
        self.device = device
        self.role = role
        self.serverPublicKey = serverPublicKey
        self.roster = roster
        self.serverTime = serverTime
    }
}

/// RFC 9457 problem details: every refusal the server makes. Its `type` is
/// `urn:fieldsync:problem:CODE` with a stable `Code`: clients decide on the code, never on the
/// title or detail, which are for people and may change.
public struct Problem: Codable, Sendable, Error {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    public init(status: Int, title: String, detail: String, type: String = "about:blank") {
        self.type = type
        self.title = title
        self.status = status
        self.detail = detail
    }

    /// A refusal with its stable code, and the status and title that code always has.
    public init(_ code: Code, _ detail: String) {
        self.init(status: code.status, title: code.title, detail: detail, type: code.uri)
    }

    /// The stable code of `type`; nil for `about:blank` or a code this build does not know.
    public var code: Code? {
        guard type.hasPrefix(Code.prefix) else { return nil }
        return Code(rawValue: String(type.dropFirst(Code.prefix.count)))
    }

    /// Every problem code the server sends (listed in docs/PROTOCOL.md, "Problem codes").
    /// A code is never renamed or reused; new ones may be added.
    public enum Code: String, Sendable, CaseIterable {
        case unsupportedMediaType = "unsupported-media-type"
        case bodyTooLarge = "body-too-large"
        case transferTooSlow = "transfer-too-slow"
        case digestMissing = "digest-missing"
        case digestMismatch = "digest-mismatch"
        case unsigned = "unsigned"
        case signatureMalformed = "signature-malformed"
        case signatureComponents = "signature-components"
        case signatureAlgorithm = "signature-algorithm"
        /// `created` is too far from the server's clock: relearn the clock offset and retry.
        case signatureCreated = "signature-created"
        case signatureExpired = "signature-expired"
        case signatureInvalid = "signature-invalid"
        case replayed = "replayed"
        case unknownKey = "unknown-key"
        case keyMismatch = "key-mismatch"
        case deviceRevoked = "device-revoked"
        case rateLimited = "rate-limited"
        case malformedRequest = "malformed-request"
        case tooManyChanges = "too-many-changes"
        case inviteRefused = "invite-refused"

        public static let prefix = "urn:fieldsync:problem:"
        public var uri: String { Self.prefix + rawValue }

        public var status: Int {
            switch self {
            case .unsupportedMediaType: 415
            case .bodyTooLarge, .tooManyChanges: 413
            case .transferTooSlow: 408
            case .digestMissing, .digestMismatch, .malformedRequest: 400
            case .unsigned, .signatureMalformed, .signatureComponents, .signatureAlgorithm, .signatureCreated, .signatureExpired,
                 .signatureInvalid, .replayed, .unknownKey, .keyMismatch: 401
            case .deviceRevoked, .inviteRefused: 403
            case .rateLimited: 429
            }
        }

        public var title: String {
            switch status {
            case 400: "Bad Request"
            case 401: "Unauthorized"
            case 403: "Forbidden"
            case 408: "Request Timeout"
            case 413: "Content Too Large"
            case 415: "Unsupported Media Type"
            default: "Too Many Requests"
            }
        }
    }
}

/// The roster as the server signs it: every device, key, name, role, enrolment time and
/// revocation cut-off, in canonical JSON, signed with the server key.
public struct SignedRoster: Codable, Sendable, Hashable {
    public var entries: String   // canonical JSON array
    public var signature: String // base64 Ed25519 over the `entries` bytes, roster domain

    public init(entries: String, signature: String) { self.entries = entries; self.signature = signature }

    /// SHA-256 of the signed entries, hex: how a client names the roster it holds.
    public var digest: String { Array(SHA256.hash(data: Array(entries.utf8))).hex }

    public static func sign(_ roster: Roster, key: DeviceKey) -> SignedRoster {
        let json = JSONValue.array(roster.sorted.map { e in
            var o: [String: JSONValue] = [
                "device": .string(e.device.description), "public_key": .string(Data(e.publicKey).base64EncodedString()),
                "name": .string(e.name), "role": .string(e.role.rawValue), "enrolled_at": .int(Int64(e.enrolledAtMillis)),
            ]
            if let r = e.revokedAfterSeq { o["revoked_after_seq"] = .int(Int64(r)) }
            return .object(o)
        }).canonicalString
        return SignedRoster(entries: json, signature: Data(key.sign(Array(json.utf8), domain: .roster)).base64EncodedString())
    }

    /// Checks the server's signature and returns the roster.
    public func verified(serverKey: [UInt8]) throws(CoreError) -> Roster {
        guard let sig = Data(base64Encoded: signature), verifySignature(Array(sig), of: Array(entries.utf8), domain: .roster, publicKey: serverKey) else {
            throw CoreError(.badSignature, "the roster is not signed by the pinned server key")
        }
        guard case .array(let items) = try JSONValue.parse(entries) else { throw CoreError(.malformed, "roster is not a list") }
        var out: [RosterEntry] = []
        for item in items {
            guard let pk = item["public_key"]?.stringValue.flatMap({ Data(base64Encoded: $0) }), let name = item["name"]?.stringValue,
                  let role = item["role"]?.stringValue.flatMap(Role.init(rawValue:)), let at = item["enrolled_at"]?.intValue.flatMap(UInt64.init(exactly:)) else {
                throw CoreError(.malformed, "a roster entry is incomplete")
            }
            var e = RosterEntry(publicKey: Array(pk), name: name, role: role, enrolledAtMillis: at)
            if let cut = item["revoked_after_seq"] {
                guard let seq = cut.intValue.flatMap(UInt64.init(exactly:)) else { throw CoreError(.malformed, "a roster entry's revoked_after_seq is not a seq") }
                e.revokedAfterSeq = seq
            }
            guard item["device"]?.stringValue == e.device.description else { throw CoreError(.keyMismatch, "a roster entry's id does not match its key") }
            out.append(e)
        }
        return Roster(out)
    }
}

/// How much of its outbox a laptop sends in one exchange, in changes and in bytes.
///
/// Changes: a crowded server takes only part of a batch (the rest stays in the outbox), so
/// sending whole batches again would only load a link that is often poor. The window opens at 128
/// (more than a day's work), doubles after every full take up to the batch limit, and after a
/// partial take is twice what was taken.
///
/// Bytes: an upload a bad link cut off (a stall, a deadline, the server's 408) is sent again in
/// halves, down to 16 kB (the first change always goes), so that a link of a few kB/s still
/// carries a first sync after days offline, one smaller request at a time, instead of failing
/// the same whole upload again and again. They grow back as TCP's window does after a loss: by
/// 16 kB for each full take of an upload that used at least half of them, up to
/// `SyncProtocol.maxUploadBytes`; so a link that carries only so much is probed gently rather
/// than cut off again every other request, as doubling did. A session
/// (`fieldsync sync --watch`, and the retries of one `fieldsync sync`) keeps what it learned,
/// and the replica keeps the bytes for the next process (`init(learnedBytes:)`), so a nightly
/// sync on a bad link does not begin each night with an upload the link has always cut off.
public struct UploadWindow: Sendable, Equatable {
    /// The fewest a crowded server takes (`ExchangeLoad.uploadLimit`).
    public static let minimum = 4
    public static let initial = 128
    public static let minimumBytes = 16 << 10
    public private(set) var size = initial
    public private(set) var bytes = SyncProtocol.maxUploadBytes
    /// Bytes of the upload in flight (0: none, or a pull).
    public var sending = 0

    /// - Parameter learnedBytes: the bytes an earlier session of this replica ended with; the
    ///   link is taken to carry about that much.
    public init(learnedBytes: Int? = nil) {
        if let learnedBytes { bytes = min(SyncProtocol.maxUploadBytes, max(Self.minimumBytes, learnedBytes)) }
    }

    /// The most the next request may carry, whatever this one's answer says (`update` at most
    /// doubles the size and adds `minimumBytes`): what a read ahead of it takes.
    public var mostNext: (size: Int, bytes: Int) {
        (min(SyncProtocol.maxBatch, 2 * size), min(SyncProtocol.maxUploadBytes, bytes + Self.minimumBytes))
    }

    /// After an answer: `handled` of the `sent` changes were accepted or refused.
    public mutating func update(sent: Int, handled: Int) {
        size = handled < sent ? max(Self.minimum, 2 * handled) : min(SyncProtocol.maxBatch, 2 * size)
        // Only an upload that used the bytes says the link carries them: a day's few notes do not.
        if sent > 0 && handled == sent && 2 * sending >= bytes {
            bytes = min(SyncProtocol.maxUploadBytes, bytes + Self.minimumBytes)
        }
        sending = 0
    }

    /// The link failed during an exchange: if it was carrying an upload, the next one is half of it.
    public mutating func linkFailed() {
        if sending > 0 { bytes = max(Self.minimumBytes, min(bytes, sending) / 2) }
        sending = 0
    }
}
