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
///
/// The id also names its creator: the low 48 bits of `rand_b` are SHA-256 of the creator's
/// device id and the rest of the id. Every replica refuses a create from any other device, so an
/// enrolled device cannot re-create someone else's record with an earlier HLC and take over its
/// author, date and kind. A device cannot choose its id once enrolled; to forge one record's mark
/// it would have to make about 2^48 keys before enrolment and then be enrolled with the one that
/// fits. The 25 random bits (11 in `rand_a`, 14 in `rand_b`) keep one device's ids apart within
/// a millisecond; a batch counts instead. Contacts named by an outside identifier
/// (`contact(named:)`, UUIDv8) name no creator: any device that may write contacts may create
/// them, the earliest create counting.
public struct RecordID: Hashable, Comparable, Sendable, CustomStringConvertible {
    // Two words: records are keyed and sorted by id everywhere, so comparing must be cheap.
    let hi: UInt64
    let lo: UInt64

    static let contactBit: UInt64 = 0x0800
    static let variantBits: UInt64 = 0x8000_0000_0000_0000
    static let randBMask: UInt64 = 0x3FFF_FFFF_FFFF_FFFF
    static let markMask: UInt64 = 0x0000_FFFF_FFFF_FFFF

    /// A new id for a record of `type` made by `creator` now: a UUIDv7 with 25 random bits and
    /// the creator's mark.
    public static func make(_ type: RecordType, by creator: DeviceID,
                            unixMillis: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> RecordID {
        var g = SystemRandomNumberGenerator()
        return make(type, by: creator, unixMillis: unixMillis, using: &g)
    }

    public static func make(_ type: RecordType, by creator: DeviceID, unixMillis: UInt64,
                            using rng: inout some RandomNumberGenerator) -> RecordID {
        let randA = rng.next() & 0x07FF | (type == .contact ? contactBit : 0)
        return made(by: creator, hi: (unixMillis & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | randA, random: rng.next())  // version 7
    }

    /// `count` distinct ids made by `creator`, in order: a batch counts up through `rand_a` from a
    /// random start (RFC 9562 §6.2, method 1) rather than leave its ids to birthdays, and runs on
    /// into the next milliseconds when one millisecond has no more room.
    public static func make(_ count: Int, _ type: RecordType, by creator: DeviceID,
                            unixMillis: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> [RecordID] {
        var g = SystemRandomNumberGenerator()
        // Milliseconds and rand_a's 11 low bits as one counter: 48 + 11 bits.
        var counter = (unixMillis & 0xFFFF_FFFF_FFFF) << 11 | g.next() & 0x03FF
        let random = g.next()
        var ids: [RecordID] = []
        ids.reserveCapacity(max(0, count))
        for _ in 0..<max(0, count) {
            let ms = counter >> 11 & 0xFFFF_FFFF_FFFF, randA = counter & 0x07FF
            ids.append(made(by: creator, hi: ms << 16 | 0x7000 | randA | (type == .contact ? contactBit : 0), random: random))
            counter &+= 1
        }
        return ids
    }

    /// The creator's mark for an id whose other bits are `hi` and `random`'s 14 bits.
    private static func mark(_ creator: DeviceID, hi: UInt64, random: UInt64) -> UInt64 {
        var input = Array("fieldsync record id\0".utf8)
        input += creator.bytes
        for i in 0..<8 { input.append(UInt8(truncatingIfNeeded: hi >> UInt64(56 - 8 * i))) }
        input.append(UInt8(truncatingIfNeeded: random >> 8))
        input.append(UInt8(truncatingIfNeeded: random))
        let (h, _) = words(Array(SHA256.hash(data: input).prefix(16)))
        return h & markMask
    }

    private static func made(by creator: DeviceID, hi: UInt64, random: UInt64) -> RecordID {
        let random14 = random & 0x3FFF
        return RecordID(hi: hi, lo: variantBits | random14 << 48 | mark(creator, hi: hi, random: random14))
    }

    /// The id a record made by another device gets when `creator` signs its create again
    /// (`fieldsync rekey`): the same time and type, fresh random bits and `creator`'s mark,
    /// because only the device whose mark an id carries may create it.
    public func remade(by creator: DeviceID) -> RecordID {
        var g = SystemRandomNumberGenerator()
        return Self.made(by: creator, hi: hi & ~0x07FF | g.next() & 0x07FF, random: g.next())
    }

    /// Whether `device` may create the record this id names: the device whose mark it carries,
    /// or anyone for an id named by an outside identifier. Any other 16 bytes (another version,
    /// a wrong variant) name no record anyone may create.
    public func mayBeCreated(by device: DeviceID) -> Bool {
        guard lo & ~Self.randBMask == Self.variantBits else { return false }
        switch hi >> 12 & 0xF {
        case 7: return lo & Self.markMask == Self.mark(device, hi: hi, random: lo >> 48 & 0x3FFF)
        case 8: return type == .contact
        default: return false
        }
    }

    /// The id of a contact named by an outside identifier (a vCard UID that is not one of ours):
    /// a name-based UUIDv8 from SHA-256 of the identifier, so two laptops importing the same
    /// card make the same record.
    public static func contact(named uid: String) -> RecordID {
        let h = Array(SHA256.hash(data: Array("fieldsync contact uid\0\(uid)".utf8)))
        let (hi, lo) = words(Array(h.prefix(16)))
        return RecordID(hi: hi & ~0xF000 & ~contactBit | 0x8000 | contactBit, lo: lo & randBMask | variantBits)
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
