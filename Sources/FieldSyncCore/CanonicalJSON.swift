import Foundation

/// A direct parser for values in canonical form (`JSONValue.canonicalBytes`): how signed values
/// are read from the wire and from the store. Foundation's JSONDecoder plus normalisation cost
/// several times more, and every received op carries a value.
extension JSONValue {
    /// Parses canonical bytes; anything not byte-for-byte canonical (whitespace, other escapes,
    /// unsorted keys, a non-NFC string, `1.0` for `1`) is refused.
    public static func parseCanonical(_ bytes: [UInt8]) throws(CoreError) -> JSONValue {
        try parseCanonical(bytes, maxDepth: CanonicalParser.maxDepth)
    }

    /// `maxDepth`: how deeply arrays and objects may nest (a value nested as deeply as a value
    /// may be, inside a listing, sits a few levels deeper).
    static func parseCanonical(_ bytes: [UInt8], maxDepth: Int) throws(CoreError) -> JSONValue {
        var p = CanonicalParser(bytes: bytes, maxDepth: maxDepth)
        guard let v = p.value(depth: 0), p.i == bytes.count, v.canonicalBytes == bytes, v.isNFC else {
            throw CoreError(.malformed, "value is not canonical JSON")
        }
        return v
    }

    /// Every string and key is in NFC (compared as bytes: `==` on String is canonical equivalence).
    var isNFC: Bool {
        switch self {
        // ASCII is its own NFC: most values are, and need no copies to say so.
        case .string(let s): return s.utf8.allSatisfy { $0 < 0x80 } || Array(JSONValue.nfc(s).utf8) == Array(s.utf8)
        case .array(let a): return a.allSatisfy(\.isNFC)
        case .object(let o): return o.allSatisfy { JSONValue.string($0.key).isNFC && $0.value.isNFC }
        default: return true
        }
    }
}

struct CanonicalParser {
    /// How deeply a value's arrays and objects may nest.
    static let maxDepth = 64
    let bytes: [UInt8]
    let maxDepth: Int
    var i = 0

    init(bytes: [UInt8], maxDepth: Int) { self.bytes = bytes; self.maxDepth = maxDepth }

    mutating func value(depth: Int) -> JSONValue? {
        guard depth < maxDepth, i < bytes.count else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "n"): return literal("null", .null)
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "\""): return string().map { .string($0) }
        case UInt8(ascii: "["):
            i += 1
            var out: [JSONValue] = []
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
            while true {
                guard let v = value(depth: depth + 1) else { return nil }
                out.append(v)
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
                guard bytes[i] == UInt8(ascii: ",") else { return nil }
                i += 1
            }
        case UInt8(ascii: "{"):
            i += 1
            var out: [String: JSONValue] = [:]
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
            while true {
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\""), let k = string(),
                      i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                guard let v = value(depth: depth + 1), out.updateValue(v, forKey: k) == nil, i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
                guard bytes[i] == UInt8(ascii: ",") else { return nil }
                i += 1
            }
        default: return number()
        }
    }

    mutating func literal(_ word: String, _ v: JSONValue) -> JSONValue? {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { return nil }
        i += w.count
        return v
    }

    mutating func string() -> String? {
        i += 1   // opening quote
        var out: [UInt8] = []
        while i < bytes.count {
            let b = bytes[i]
            i += 1
            switch b {
            case UInt8(ascii: "\""): return String(validating: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(e)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let code = UInt8(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16), code < 0x20 else { return nil }
                    out.append(code)
                    i += 4
                default: return nil
                }
            case 0x00..<0x20: return nil
            default: out.append(b)
            }
        }
        return nil
    }

    mutating func number() -> JSONValue? {
        let start = i
        var integral = true
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): break
            case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "+"): integral = false
            default:
                return finish(start, integral)
            }
            i += 1
        }
        return finish(start, integral)
    }

    func finish(_ start: Int, _ integral: Bool) -> JSONValue? {
        guard i > start else { return nil }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if integral { return Int64(text).map { .int($0) } }
        return Double(text).map { .double($0) }
    }
}
