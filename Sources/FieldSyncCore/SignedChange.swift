import Crypto

/// An Ed25519 key pair of a device (or of the server).
public struct DeviceKey: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey
    /// Kept: deriving them (a public key, then its SHA-256) was a hundredth of every `note add`.
    public let publicKey: [UInt8]
    public let deviceID: DeviceID

    public init() { self.init(Curve25519.Signing.PrivateKey()) }
    public init(rawRepresentation: [UInt8]) throws(CoreError) {
        let key: Curve25519.Signing.PrivateKey
        do { key = try Curve25519.Signing.PrivateKey(rawRepresentation: rawRepresentation) } catch {
            throw CoreError(.malformed, "not an Ed25519 private key")
        }
        self.init(key)
    }
    init(_ privateKey: Curve25519.Signing.PrivateKey) {
        self.privateKey = privateKey
        publicKey = Array(privateKey.publicKey.rawRepresentation)
        deviceID = DeviceID(publicKey: publicKey)
    }

    public var rawRepresentation: [UInt8] { Array(privateKey.rawRepresentation) }

    /// Signs `domain ‖ message`: the domain keeps a change signature from ever being valid as
    /// an HTTP signature or a roster signature, and the other way round.
    public func sign(_ message: [UInt8], domain: SignatureDomain) -> [UInt8] {
        // BoringSSL's Ed25519 signing does not fail for a valid key.
        Array(try! privateKey.signature(for: domain.prefix + message))
    }
}

/// Domain-separation prefixes for every kind of signed bytes.
public struct SignatureDomain: Sendable {
    public let prefix: [UInt8]
    public static let change = SignatureDomain(prefix: Array("fieldsync change v1\0".utf8))
    public static let roster = SignatureDomain(prefix: Array("fieldsync roster v1\0".utf8))
    public static let httpRequest = SignatureDomain(prefix: [])  // RFC 9421 signature base is its own domain
    /// A server's bundle for one device: what it held of that device (its acknowledgement).
    public static let bundleReceipt = SignatureDomain(prefix: Array("fieldsync bundle receipt v1\0".utf8))
}

public func verifySignature(_ signature: [UInt8], of message: [UInt8], domain: SignatureDomain, publicKey: [UInt8]) -> Bool {
    guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return false }
    return key.isValidSignature(signature, for: domain.prefix + message)
}

/// A value with its salt, travelling beside the change whose op commits to it.
public struct OpValue: Hashable, Sendable {
    public let salt: [UInt8]
    public let value: JSONValue
    /// `value.canonicalBytes`, kept: the commitment, the store and the envelope each need them,
    /// and a received value arrives as them.
    public let canonical: [UInt8]

    public init(salt: [UInt8], value: JSONValue) { self.init(salt: salt, value: value, canonical: value.canonicalBytes) }

    /// With `canonical` already known to be `value`'s canonical bytes (it was parsed from them by
    /// `JSONValue.parseCanonical`, which accepts nothing else).
    package init(salt: [UInt8], value: JSONValue, canonical: [UInt8]) { self.salt = salt; self.value = value; self.canonical = canonical }

    public static func fresh(_ value: JSONValue) -> OpValue {
        var g = SystemRandomNumberGenerator()
        var salt = [UInt8](); salt.reserveCapacity(16)
        for _ in 0..<2 { let w = g.next(); for s in stride(from: 0, to: 64, by: 8) { salt.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        return OpValue(salt: salt, value: value)
    }

    /// The salt of op `index` in a change whose salts come from `seed`: SHA-256 over a domain
    /// label, the seed and the index, first 16 bytes.
    public static func salt(seed: [UInt8], index: UInt16) -> [UInt8] {
        // Buffers, not `update(data:)`: its generic path and the label and index arrays it was
        // given cost four times the hashing itself (every value signed or received has a salt).
        var h = SHA256()
        saltLabel.withUnsafeBytes { h.update(bufferPointer: $0) }
        seed.withUnsafeBytes { h.update(bufferPointer: $0) }
        withUnsafeBytes(of: index.bigEndian) { h.update(bufferPointer: $0) }
        return h.finalize().withUnsafeBytes { Array($0.prefix(16)) }
    }
    static let saltLabel = Array("fieldsync salt v1".utf8)

    public var commitment: Commitment {
        var h = SHA256()
        salt.withUnsafeBytes { h.update(bufferPointer: $0) }
        canonical.withUnsafeBytes { h.update(bufferPointer: $0) }
        return Commitment(bytes: h.finalize().withUnsafeBytes { Array($0) })!
    }
}

/// A change as its author signed it: the signed bytes (never re-serialised), the signature, and
/// the values beside it. `values` may lack entries whose values were erased.
public struct SignedChange: Hashable, Sendable {
    public let bytes: [UInt8]
    public let signature: [UInt8]
    public let id: ChangeID
    public let change: Change
    public private(set) var values: [UInt16: OpValue]
    /// The 16 bytes every salt of this change derives from (`OpValue.salt(seed:index:)`); nil
    /// once a value was erased, so that an erased value's salt cannot be derived again.
    public private(set) var seed: [UInt8]?

    /// Decodes signed bytes strictly and checks each value against its commitment. The
    /// signature is checked separately (`verify`), against the key the roster holds.
    public init(bytes: [UInt8], signature: [UInt8], values: [UInt16: OpValue], seed: [UInt8]? = nil) throws(CoreError) {
        guard signature.count == 64 else { throw CoreError(.malformed, "signature is \(signature.count) bytes, not 64") }
        if let seed {
            guard seed.count == 16 else { throw CoreError(.malformed, "salt seed is \(seed.count) bytes, not 16") }
            guard values.allSatisfy({ $0.value.salt == OpValue.salt(seed: seed, index: $0.key) }) else {
                throw CoreError(.malformed, "a salt does not derive from the change's seed")
            }
        }
        let change = try ChangeCodec.decode(bytes)
        for (index, value) in values {
            guard Int(index) < change.ops.count, let c = change.ops[Int(index)].commitment else {
                throw CoreError(.malformed, "a value is given for op \(index), which carries none")
            }
            guard value.salt.count == 16 else { throw CoreError(.malformed, "salt of op \(index) is not 16 bytes") }
            guard value.commitment == c else {
                throw CoreError(.commitmentMismatch, "the value of op \(index) does not match its commitment")
            }
        }
        try Self.checkReviewStates(change, values)
        self.init(trusted: change, bytes: bytes, signature: signature, values: values, seed: seed)
    }

    /// For a change read from its wire form (`ChangeWire`): each commitment was computed from the
    /// value and salt beside it (the salt derived from `seed` when there is one), so they agree by
    /// construction; the signed bytes are the strictly decoded change encoded again.
    init(wire change: Change, signature: [UInt8], values: [UInt16: OpValue], seed: [UInt8]?) throws(CoreError) {
        try Self.checkReviewStates(change, values)
        self.init(trusted: change, bytes: ChangeCodec.encode(change), signature: signature, values: values, seed: seed)
    }

    /// A review value must name the state its op signs.
    static func checkReviewStates(_ change: Change, _ values: [UInt16: OpValue]) throws(CoreError) {
        for (index, value) in values {
            let op = change.ops[Int(index)]
            if op.action == .review, value.value["state"]?.stringValue != op.kind {
                throw CoreError(.commitmentMismatch, "the review value of op \(index) names another state than the signed '\(op.kind)'")
            }
        }
    }

    /// For changes this build just encoded itself: no need to decode what we hold.
    init(trusted change: Change, bytes: [UInt8], signature: [UInt8], values: [UInt16: OpValue], seed: [UInt8]?) {
        self.bytes = bytes
        self.signature = signature
        self.change = change
        self.id = ChangeID.of(signedBytes: bytes)
        self.values = values
        self.seed = seed
    }

    /// Makes and signs a change. The only place signed bytes are produced. Each value gets the
    /// salt derived from a fresh seed, and its op the commitment to that salt and value.
    public static func author(_ change: Change, values: [UInt16: OpValue], key: DeviceKey) -> SignedChange {
        precondition(change.device == key.deviceID, "a change is signed by its own device")
        let (change, salted, seed) = salting(change, values: values)
        let bytes = ChangeCodec.encode(change)
        let signature = key.sign(bytes, domain: .change)
        return SignedChange(trusted: change, bytes: bytes, signature: signature, values: salted, seed: seed)
    }

    /// The change with each value salted from one fresh seed and each op committed to its value.
    static func salting(_ change: Change, values: [UInt16: OpValue]) -> (Change, [UInt16: OpValue], seed: [UInt8]) {
        let seed = OpValue.fresh(.null).salt
        var salted: [UInt16: OpValue] = [:]
        var change = change
        for (i, v) in values {
            let value = OpValue(salt: OpValue.salt(seed: seed, index: i), value: v.value, canonical: v.canonical)
            salted[i] = value
            change.ops[Int(i)].commitment = value.commitment
        }
        return (change, salted, seed)
    }

    /// Checks that `publicKey` is the key of the device in the header and that it signed these bytes.
    public func verify(publicKey: [UInt8]) throws(CoreError) {
        guard DeviceID(publicKey: publicKey) == change.device else {
            throw CoreError(.keyMismatch, "change \(id.hex.prefix(12)) names device \(change.device) but the key is another device's")
        }
        guard verifySignature(signature, of: bytes, domain: .change, publicKey: publicKey) else {
            throw CoreError(.badSignature, "change \(id.hex.prefix(12)) from \(change.device): signature does not verify")
        }
    }

    /// Drops the values and salts of the given ops (erasure). Commitments stay in the signed bytes.
    public mutating func dropValues(_ indices: some Sequence<UInt16>) {
        for i in indices where values[i] != nil {
            values[i] = nil
            seed = nil
        }
    }

    /// Every value its ops commit to travels with it: none was erased on the way.
    public var isWhole: Bool {
        change.ops.indices.allSatisfy { change.ops[$0].commitment == nil || values[UInt16($0)] != nil }
    }

    public static func == (a: SignedChange, b: SignedChange) -> Bool { a.id == b.id && a.values == b.values }
    public func hash(into h: inout Hasher) { h.combine(id) }
}

// MARK: - Envelope: a signed change with its values, for storage and the wire.

/// The wire form of a change: the signed encoding with each commitment slot replaced by what it
/// commits to, `0 ‖ salt(16) ‖ blob(canonical value)`, or, once the value is erased,
/// `1 ‖ commitment(32)`. The receiver recomputes each commitment and so the signed bytes, byte
/// for byte, and checks the signature over those: 32 bytes a field write never travel.
/// With a seed, the salt is left out too: the receiver derives it.
enum ChangeWire {
    static func encode(_ c: Change, seed: [UInt8]?, values: [UInt16: (salt: [UInt8], canonical: [UInt8])]) -> [UInt8] {
        ChangeCodec.encode(c) { w, index, commitment in
            if let v = values[UInt16(index)] {
                w.u8(0)
                if seed == nil { w.raw(v.salt) }
                w.blob(v.canonical)
            } else {
                w.u8(1)
                w.raw(commitment.bytes)
            }
        }
    }

    static func decode(_ bytes: [UInt8], seed: [UInt8]?) throws(CoreError) -> (Change, [UInt16: OpValue]) {
        var values: [UInt16: OpValue] = [:]
        let change = try ChangeCodec.decode(bytes) { r, index throws(CoreError) in
            switch try r.u8() {
            case 0:
                let salt: [UInt8]
                if let seed { salt = OpValue.salt(seed: seed, index: UInt16(index)) } else { salt = try r.raw(16) }
                let canonical = try r.blob(max: SignedChange.maxValueBytes, what: "value")
                let value: JSONValue
                switch Result(catching: { () throws(CoreError) -> JSONValue in try JSONValue.parseCanonical(canonical) }) {
                case .success(let v): value = v
                case .failure: throw CoreError(.malformed, "value of op \(index) is not in canonical form")
                }
                let v = OpValue(salt: salt, value: value, canonical: canonical)
                values[UInt16(index)] = v
                return v.commitment
            case 1:
                return Commitment(bytes: try r.raw(32))!
            case let tag:
                throw CoreError(.malformed, "op \(index) has an unknown value tag \(tag)")
            }
        }
        return (change, values)
    }
}

extension SignedChange {
    public static let envelopeVersion: UInt8 = 2
    public static let maxValueBytes = 1 << 20

    /// `version(1) ‖ signature(64) ‖ 0, or 1 ‖ salt seed(16) ‖ the change in wire form`
    /// (`ChangeWire`): how a change is sent and how a store holds one waiting for its predecessor.
    public var envelope: [UInt8] {
        Self.envelope(change: change, signature: signature, seed: seed, values: values.mapValues { ($0.salt, $0.canonical) })
    }

    /// Also how a store sends what it holds without parsing the values again.
    public static func envelope(change: Change, signature: [UInt8], seed: [UInt8]?,
                                values: [UInt16: (salt: [UInt8], canonical: [UInt8])]) -> [UInt8] {
        var w = ByteWriter()
        w.u8(Self.envelopeVersion)
        w.raw(signature)
        if let seed { w.u8(1); w.raw(seed) } else { w.u8(0) }
        w.raw(ChangeWire.encode(change, seed: seed, values: values))
        return w.bytes
    }

    public init(envelope: [UInt8]) throws(CoreError) {
        guard envelope.count >= 66 else { throw CoreError(.malformed, "envelope is \(envelope.count) bytes, too short") }
        guard envelope[0] == Self.envelopeVersion else { throw CoreError(.unknownVersion, "envelope version \(envelope[0]) is not known") }
        let signature = Array(envelope[1..<65])
        var start = 66
        var seed: [UInt8]?
        switch envelope[65] {
        case 0: break
        case 1:
            guard envelope.count >= 82 else { throw CoreError(.malformed, "envelope is too short for its salt seed") }
            seed = Array(envelope[66..<82])
            start = 82
        case let flag: throw CoreError(.malformed, "envelope has an unknown salt flag \(flag)")
        }
        let (change, values) = try ChangeWire.decode(Array(envelope[start...]), seed: seed)
        try self.init(wire: change, signature: signature, values: values, seed: seed)
    }
}

extension SignedChange {
    /// For tests of the merge alone: the values salted from a fresh seed and committed, as
    /// `author` does, then the real canonical bytes with a zero signature. Only
    /// `Replicator.receive(verified: true)` takes such a change; `verify` refuses it.
    package static func unsignedForTesting(_ change: Change, values: [UInt16: OpValue]) -> SignedChange {
        let (change, salted, seed) = salting(change, values: values)
        return SignedChange(trusted: change, bytes: ChangeCodec.encode(change), signature: [UInt8](repeating: 0, count: 64), values: salted, seed: seed)
    }
}
