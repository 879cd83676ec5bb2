import Crypto
import Foundation

/// 16 bytes as two big-endian words, and back: the storage of RecordID and DeviceID.
private func words(_ bytes: [UInt8]) -> (hi: UInt64, lo: UInt64) {
    var h: UInt64 = 0, l: UInt64 = 0
    for i in 0..<8 { h = h << 8 | UInt64(bytes[i]); l = l << 8 | UInt64(bytes[8 + i]) }
    return (h, l)
}

private func bytes(hi: UInt64, lo: UInt64) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 16)
    for i in 0..<8 {
        out[i] = UInt8(truncatingIfNeeded: hi >> UInt64(56 - 8 * i))
        out[8 + i] = UInt8(truncatingIfNeeded: lo >> UInt64(56 - 8 * i))
    }
    return out
}

/// A record's id: a UUIDv7 made on the device that created the record (time-ordered, so
/// ids sort by creation and index well). The id names its record's type in one bit (the top bit
/// of `rand_a`: 0 note, 1 contact), so every replica can refuse, from the signed bytes alone, an
/// op that claims another type for a record: a record's type can never change, whatever order
/// changes arrive in (DESIGN.md §6, "ops never cross records, types or fields").
public struct RecordID: Hashable, Comparable, Sendable, CustomStringConvertible {
    // Two words: records are keyed and sorted by id everywhere, so comparing must be cheap.
    let hi: UInt64
    let lo: UInt64

    static let contactBit: UInt64 = 0x0800

    /// A new UUIDv7 for a record of `type` at `unixMillis`, with 73 random bits.
    public static func make(_ type: RecordType, unixMillis: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> RecordID {
        var g = SystemRandomNumberGenerator()
        return make(type, unixMillis: unixMillis, using: &g)
    }

    public static func make(_ type: RecordType, unixMillis: UInt64, using rng: inout some RandomNumberGenerator) -> RecordID {
        let randA = rng.next() & 0x07FF | (type == .contact ? contactBit : 0)
        let randB = rng.next() & 0x3FFF_FFFF_FFFF_FFFF
        return RecordID(hi: (unixMillis & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | randA,  // version 7
                        lo: 0x8000_0000_0000_0000 | randB)                           // RFC 9562 variant
    }

    /// The id of a contact named by an outside identifier (a vCard UID that is not one of ours):
    /// a name-based UUIDv8 from SHA-256 of the identifier, so two laptops importing the same
    /// card make the same record.
    public static func contact(named uid: String) -> RecordID {
        let h = Array(SHA256.hash(data: Array("fieldsync contact uid\0\(uid)".utf8)))
        let (hi, lo) = words(Array(h.prefix(16)))
        return RecordID(hi: hi & ~0xF000 & ~contactBit | 0x8000 | contactBit, lo: lo & 0x3FFF_FFFF_FFFF_FFFF | 0x8000_0000_0000_0000)
    }

    /// The record type this id names.
    public var type: RecordType { hi & Self.contactBit != 0 ? .contact : .note }

    init(hi: UInt64, lo: UInt64) { self.hi = hi; self.lo = lo }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        (hi, lo) = words(bytes)
    }

    public init(uuid: UUID) {
        self.init(bytes: withUnsafeBytes(of: uuid.uuid) { Array($0) })!
    }

    public init?(_ text: String) {
        guard let u = UUID(uuidString: text) else { return nil }
        self.init(uuid: u)
    }

    public var bytes: [UInt8] { FieldSyncCore.bytes(hi: hi, lo: lo) }

    public var uuid: UUID {
        let b = bytes
        return UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
    }

    /// Lower-case hex in UUID form (8-4-4-4-12), written directly: every listing row and record
    /// row names its record, and Foundation's form plus lowercasing made three Strings.
    public var description: String {
        String(unsafeUninitializedCapacity: 36) { out in
            let hex = hexDigits
            var at = 0
            for nibble in 0..<32 {
                if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 { out[at] = UInt8(ascii: "-"); at += 1 }
                let word = nibble < 16 ? hi : lo
                out[at] = hex[Int(truncatingIfNeeded: (word >> UInt64(60 - 4 * (nibble % 16))) & 0xF)]
                at += 1
            }
            return 36
        }
    }
    public static func < (a: RecordID, b: RecordID) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }
}

/// A device's id: base32 (RFC 4648, lower case, no padding) of the first 16 bytes of
/// SHA-256 of its Ed25519 public key. Anyone holding the key can check the id.
public struct DeviceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    // Two words, like RecordID: device ids break ties in every write comparison.
    let hi: UInt64
    let lo: UInt64

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        (hi, lo) = words(bytes)
    }

    public init(publicKey: [UInt8]) {
        self.init(bytes: Array(SHA256.hash(data: publicKey).prefix(16)))!
    }

    public var bytes: [UInt8] { FieldSyncCore.bytes(hi: hi, lo: lo) }

    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    /// 26 base32 digits (RFC 4648 alphabet, lower case, no padding): 128 bits and two zero bits.
    /// Without intermediate arrays: the server names devices in every query and vector.
    public var description: String {
        let v = UInt128(hi) << 64 | UInt128(lo)
        return String(unsafeUninitializedCapacity: 26) { out in
            for i in 0..<25 { out[i] = Self.alphabet[Int(truncatingIfNeeded: (v >> UInt128(123 - 5 * i)) & 31)] }
            out[25] = Self.alphabet[Int(truncatingIfNeeded: (v & 7) << 2)]
            return 26
        }
    }

    /// Parses the description (either case); nil for anything else, including non-zero pad bits.
    public init?(_ text: String) {
        var v: UInt128 = 0
        var count = 0
        for c in text.utf8 {
            let d: UInt8
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): d = c - UInt8(ascii: "a")
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): d = c - UInt8(ascii: "A")
            case UInt8(ascii: "2")...UInt8(ascii: "7"): d = c - UInt8(ascii: "2") + 26
            default: return nil
            }
            count += 1
            if count < 26 {
                v = v << 5 | UInt128(d)
            } else if count == 26 {
                guard d & 3 == 0 else { return nil }
                v = v << 3 | UInt128(d >> 2)
            } else {
                return nil
            }
        }
        guard count == 26 else { return nil }
        hi = UInt64(truncatingIfNeeded: v >> 64)
        lo = UInt64(truncatingIfNeeded: v)
    }

    public static func < (a: DeviceID, b: DeviceID) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }
}

/// SHA-256 of a change's signed bytes. Kept as four words so hashing and comparing are cheap:
/// the merge keys every op by (change id, index).
public struct ChangeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    let w0, w1, w2, w3: UInt64

    public static let zero = ChangeID(w0: 0, w1: 0, w2: 0, w3: 0)

    init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) { (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3) }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        // Four big-endian loads from contiguous bytes (every caller's case): a generic,
        // element-by-element loop here was a sixth of loading a record's ops.
        if let w = bytes.withContiguousStorageIfAvailable({ buffer in
            let raw = UnsafeRawBufferPointer(buffer)
            func word(_ i: Int) -> UInt64 { UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
            return (word(0), word(1), word(2), word(3))
        }) {
            self.init(w0: w.0, w1: w.1, w2: w.2, w3: w.3)
        } else {
            self.init(bytes: Array(bytes))  // an array is contiguous
        }
    }

    public init?(hex: String) {
        guard let b = [UInt8](hex: hex) else { return nil }
        self.init(bytes: b)
    }

    /// The id of a change: SHA-256 of its signed bytes.
    public static func of(signedBytes: [UInt8]) -> ChangeID {
        ChangeID(bytes: Array(SHA256.hash(data: signedBytes)))!
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []; out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        return out
    }

    public var hex: String { bytes.hex }
    public var description: String { hex }
    public var isZero: Bool { self == .zero }

    public static func < (a: ChangeID, b: ChangeID) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }
}

/// One op inside one change: what `set` supersedes, what `remove` removes and what
/// a set element's tag is.
public struct OpRef: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let change: ChangeID
    public let index: UInt16

    public init(change: ChangeID, index: UInt16) { self.change = change; self.index = index }

    public var description: String { "\(change.hex.prefix(12)):\(index)" }
    public static func < (a: OpRef, b: OpRef) -> Bool { (a.change, a.index) < (b.change, b.index) }
}
