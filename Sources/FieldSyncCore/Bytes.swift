/// Big-endian, length-prefixed binary writing and strict reading: the building blocks of
/// the canonical change encoding. Every length is a minimal LEB128 varint, so one structure
/// has exactly one encoding.
package struct ByteWriter {
    package var bytes: [UInt8] = []
    package init() {}

    package mutating func u8(_ v: UInt8) { bytes.append(v) }
    package mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    package mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    package mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    package mutating func string(_ s: String) { varint(UInt64(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
    package mutating func blob(_ b: [UInt8]) { varint(UInt64(b.count)); bytes.append(contentsOf: b) }
}

package struct ByteReader {
    package let bytes: [UInt8]
    package var offset = 0

    package init(_ bytes: [UInt8]) { self.bytes = bytes }

    package var isAtEnd: Bool { offset == bytes.count }

    package mutating func u8() throws(CoreError) -> UInt8 {
        guard offset < bytes.count else { throw CoreError(.malformed, "change ends early at byte \(offset)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    package mutating func u64() throws(CoreError) -> UInt64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(try u8()) }
        return v
    }

    package mutating func varint() throws(CoreError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            if shift == 63 && b > 1 { throw CoreError(.malformed, "varint overflows 64 bits") }
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 { throw CoreError(.malformed, "varint is not minimal") }
                return v
            }
            shift += 7
        }
    }

    package mutating func count(max: Int, what: String) throws(CoreError) -> Int {
        let n = try varint()
        guard n <= UInt64(max) else { throw CoreError(.oversize, "\(what) is \(n), more than the limit \(max)") }
        return Int(n)
    }

    package mutating func raw(_ n: Int) throws(CoreError) -> [UInt8] {
        guard n <= bytes.count - offset else { throw CoreError(.malformed, "change ends early at byte \(offset)") }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }

    package mutating func string(max: Int, what: String) throws(CoreError) -> String {
        let n = try count(max: max, what: "\(what) length")
        let b = try raw(n)
        guard let s = String(validating: b, as: UTF8.self) else { throw CoreError(.malformed, "\(what) is not UTF-8") }
        return s
    }

    package mutating func blob(max: Int, what: String) throws(CoreError) -> [UInt8] {
        try raw(try count(max: max, what: "\(what) length"))
    }

    package func finish() throws(CoreError) {
        guard isAtEnd else { throw CoreError(.trailingBytes, "\(bytes.count - offset) bytes follow the end of the structure") }
    }
}

/// The digits of lower-case hexadecimal, as bytes.
let hexDigits = Array("0123456789abcdef".utf8)

extension Array where Element == UInt8 {
    /// Lower-case hexadecimal.
    public var hex: String {
        let digits = hexDigits
        var out = [UInt8](); out.reserveCapacity(count * 2)
        for b in self { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public init?(hex: String) {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        var out = [UInt8](); out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let h = nib(u[i]), let l = nib(u[i + 1]) else { return nil }
            out.append(h << 4 | l); i += 2
        }
        self = out
    }
}
