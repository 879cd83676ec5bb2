/// A direct parser for the plain JSON people type on a command line (a GeoJSON point, a device
/// item): an object or array of ASCII text with the simple escapes, and decimal numbers without
/// an exponent. Anything else (a `\u` escape, a non-ASCII byte, an exponent, a long number, a
/// repeated key, a bare scalar) is not decided here: `parse` returns nil and `JSONValue.parse`
/// hands the text to Foundation's JSONDecoder, which decides. JSONDecoder was about half the cost
/// of reading a `--set` value, a twentieth of a `note add`. A seeded property test holds the two
/// paths to the same answers (`PlainJSONTests`).
struct PlainJSONParser {
    /// Deeper nesting is left to JSONDecoder (and then to the schema's own limit).
    static let maxDepth = 32
    /// Digits a number may have here. A decimal of at most 15 digits survives a round trip
    /// through a Double, so any parser that rounds to nearest reads it as the same Double;
    /// longer ones are left to JSONDecoder rather than rely on two parsers rounding alike.
    static let maxDigits = 15

    let bytes: [UInt8]
    var i = 0

    /// The value, normalised as `JSONValue.parse` returns it, or nil when this parser does not decide.
    static func parse(_ bytes: [UInt8]) -> JSONValue? {
        var p = PlainJSONParser(bytes: bytes)
        p.skipSpace()
        guard p.i < bytes.count, bytes[p.i] == UInt8(ascii: "{") || bytes[p.i] == UInt8(ascii: "[") else { return nil }
        guard let v = p.value(depth: 0) else { return nil }
        p.skipSpace()
        return p.i == bytes.count ? v : nil
    }

    mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    mutating func value(depth: Int) -> JSONValue? {
        guard depth < Self.maxDepth, i < bytes.count else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "n"): return literal("null", .null)
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "\""): return string().map { .string($0) }
        case UInt8(ascii: "["):
            i += 1
            var out: [JSONValue] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
            while true {
                skipSpace()
                guard let v = value(depth: depth + 1) else { return nil }
                out.append(v)
                skipSpace()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
                guard bytes[i] == UInt8(ascii: ",") else { return nil }
                i += 1
            }
        case UInt8(ascii: "{"):
            i += 1
            var out: [String: JSONValue] = [:]
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\""), let k = string() else { return nil }
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipSpace()
                guard let v = value(depth: depth + 1), out.updateValue(v, forKey: k) == nil else { return nil }
                skipSpace()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
                guard bytes[i] == UInt8(ascii: ",") else { return nil }
                i += 1
            }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
        default: return nil
        }
    }

    mutating func literal(_ word: StaticString, _ v: JSONValue) -> JSONValue? {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { return nil }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { return nil }
        i += n
        return v
    }

    /// ASCII text with the two-character escapes; nil for anything else.
    mutating func string() -> String? {
        i += 1   // opening quote
        var out: [UInt8] = []
        while i < bytes.count {
            let b = bytes[i]
            i += 1
            switch b {
            case UInt8(ascii: "\""): return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                default: return nil
                }
            case 0x20..<0x7F: out.append(b)
            default: return nil
            }
        }
        return nil
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with at most `maxDigits` digits; whole values become ints,
    /// as `normalized()` makes them.
    mutating func number() -> JSONValue? {
        let start = i
        var digits = 0
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1; digits += 1 }
        let intDigits = i - intStart
        guard intDigits > 0, intDigits == 1 || bytes[intStart] != UInt8(ascii: "0") else { return nil }
        var fraction = false
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            fraction = true
            i += 1
            let fracStart = i
            while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1; digits += 1 }
            guard i > fracStart else { return nil }
        }
        // An exponent, or a number run into other text, is JSONDecoder's to judge.
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") || bytes[i] == UInt8(ascii: ".") { return nil }
        guard digits <= Self.maxDigits else { return nil }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if !fraction { return Int64(text).map { .int($0) } }
        return Double(text).map { JSONValue.double($0).normalized() }
    }
}
