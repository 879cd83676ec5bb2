import Foundation

/// A field value. Every value has one canonical byte form (`canonicalBytes`), which is what
/// commitments hash and what travels beside a change; two values are equal when those bytes are.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Integral doubles become ints and strings become NFC, so that one value has one form.
    public func normalized() -> JSONValue {
        switch self {
        case .double(let d) where d.rounded() == d && abs(d) < 9_007_199_254_740_992:
            return .int(Int64(d))
        case .string(let s): return .string(Self.nfc(s))
        case .array(let a): return .array(a.map { $0.normalized() })
        case .object(let o):
            var out: [String: JSONValue] = [:]
            for (k, v) in o { out[Self.nfc(k)] = v.normalized() }
            return .object(out)
        default: return self
        }
    }

    /// Unicode NFC. ASCII text is its own NFC (no ASCII character decomposes or combines), and
    /// most field text is ASCII: Foundation's mapping was a twentieth of adding a note.
    static func nfc(_ s: String) -> String {
        s.utf8.allSatisfy { $0 < 0x80 } ? s : s.precomposedStringWithCanonicalMapping
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var intValue: Int64? { if case .int(let i) = self { return i } else { return nil } }
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public subscript(key: String) -> JSONValue? { objectValue?[key] }
}

// MARK: - Canonical encoding (sorted keys, no white space, shortest numbers: RFC 8785 in spirit)

extension JSONValue {
    public var canonicalBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        appendCanonical(to: &out)
        return out
    }

    public var canonicalString: String { String(decoding: canonicalBytes, as: UTF8.self) }

    func appendCanonical(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): Self.appendInt(i, to: &out)
        case .double(let d):
            if d.isFinite, d.rounded() == d, abs(d) < 9_007_199_254_740_992 {
                Self.appendInt(Int64(d), to: &out)
            } else if d.isFinite {
                out.append(contentsOf: "\(d)".utf8)
            } else {
                out.append(contentsOf: "null".utf8)  // JSON has no NaN/Inf; validation refuses them earlier
            }
        case .string(let s): Self.appendString(s, to: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.appendCanonical(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            // Keys ordered by their UTF-8 bytes: the same on every platform.
            for (i, k) in o.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.appendString(k, to: &out)
                out.append(UInt8(ascii: ":"))
                o[k]!.appendCanonical(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Decimal digits, without the String a conversion would allocate (listing JSON is written
    /// for every record a sync touches).
    static func appendInt(_ i: Int64, to out: inout [UInt8]) {
        if i < 0 { out.append(UInt8(ascii: "-")) }
        var m = i.magnitude
        let start = out.count
        repeat {
            out.append(UInt8(ascii: "0") + UInt8(m % 10))
            m /= 10
        } while m > 0
        out[start...].reverse()
    }

    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most text needs no escape: copy it whole, from its UTF-8 storage when it has one.
        func plain(_ b: UInt8) -> Bool { b >= 0x20 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") }
        // Anything else (text to escape, or not stored as UTF-8) goes byte by byte below.
        let copied = s.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard bytes.allSatisfy(plain) else { return false }
            out.append(contentsOf: bytes)
            return true
        } ?? false
        if copied {
            out.append(UInt8(ascii: "\""))
            return
        }
        let hex = hexDigits
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(0x5C); out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x00..<0x20: out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

// MARK: - Parsing

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value") }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses JSON text; numbers that are whole become `.int`. Plain text is read directly
    /// (`PlainJSONParser`); the rest by Foundation.
    public static func parse(_ bytes: some Collection<UInt8>) throws(CoreError) -> JSONValue {
        let bytes = Array(bytes)
        if let v = PlainJSONParser.parse(bytes) { return v }
        return try parseWithFoundation(bytes)
    }

    /// JSONDecoder's reading, normalised: the reference `PlainJSONParser` must agree with.
    static func parseWithFoundation(_ bytes: [UInt8]) throws(CoreError) -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes)).normalized()
        } catch {
            throw CoreError(.malformed, "not valid JSON")
        }
    }

    public static func parse(_ text: String) throws(CoreError) -> JSONValue { try parse(Array(text.utf8)) }
}

extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral s: String) { self = .string(s) }
}
