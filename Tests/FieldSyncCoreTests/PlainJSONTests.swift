import Foundation
import Testing
@testable import FieldSyncCore

/// `JSONValue.parse` reads plain text itself and hands the rest to JSONDecoder: on any text,
/// valid or not, it must answer exactly what JSONDecoder answers.
@Suite struct PlainJSONTests {
    @Test func plainParserAgreesWithFoundationOnSeededTexts() {
        let seed = UInt64.random(in: 1...UInt64.max)
        var g = SeededRNG(seed: seed)
        var decidedHere = 0, valid = 0
        for _ in 0..<4000 {
            var text = Self.text(Self.value(&g, depth: 0, top: true), &g)
            if Int.random(in: 0..<4, using: &g) == 0 { Self.mutate(&text, &g) }
            let plain = PlainJSONParser.parse(text)
            let ours = Result { () throws(CoreError) -> JSONValue in try JSONValue.parse(text) }
            let theirs = Result { () throws(CoreError) -> JSONValue in try JSONValue.parseWithFoundation(text) }
            let shown = String(decoding: text, as: UTF8.self)
            switch (ours, theirs) {
            case (.success(let a), .success(let b)): #expect(a == b, "seed \(String(seed, radix: 16)): \(shown)")
            case (.failure, .failure): break
            default: Issue.record("seed \(String(seed, radix: 16)): parse and JSONDecoder disagree on \(shown): \(ours) against \(theirs)")
            }
            if plain != nil { decidedHere += 1 }
            if case .success = theirs { valid += 1 }
        }
        // Not vacuous: about one text in nine is plain and decided without JSONDecoder (the rest
        // carry an escape, a non-ASCII letter, an exponent or a long number), and some are invalid.
        #expect(decidedHere > 250, "seed \(String(seed, radix: 16)): only \(decidedHere) decided directly")
        #expect(valid < 4000, "seed \(String(seed, radix: 16)): no invalid text was tried")
    }

    @Test func theTextsACommandLineCarriesAreReadDirectly() throws {
        for text in [#"{"type":"Point","coordinates":[30.5234,50.4501]}"#,
                     #"{ "type": "Polygon", "coordinates": [[[30.1, 50.2], [30.2, 50.2], [30.2, 50.3], [30.1, 50.2]]] }"#,
                     #"{"category":"AP","model":"PMN-2","quantity":3,"disposition":"destroyed in situ"}"#] {
            let direct = try #require(PlainJSONParser.parse(Array(text.utf8)), "\(text)")
            #expect(direct == (try JSONValue.parseWithFoundation(Array(text.utf8))))
        }
        // Left to JSONDecoder: an exponent, a \u escape, non-ASCII text, a repeated key, a bare number.
        for text in [#"{"a":1e3}"#, #"{"a":"\u00e9"}"#, #"{"a":"é"}"#, #"{"a":1,"a":2}"#, "42"] {
            #expect(PlainJSONParser.parse(Array(text.utf8)) == nil, "\(text)")
        }
    }

    static func value(_ g: inout SeededRNG, depth: Int, top: Bool = false) -> JSONValue {
        let pick = top ? Int.random(in: 0..<10, using: &g) : Int.random(in: 0..<(depth > 3 ? 6 : 9), using: &g)
        switch pick {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &g))
        case 2: return .int(Int64.random(in: -1_000_000...1_000_000, using: &g))
        case 3: return .int(Int64.random(in: Int64.min...Int64.max, using: &g))
        case 4: return .double(Double(Int.random(in: -18_000_000...18_000_000, using: &g)) / 100_000)
        case 5: return .string(string(&g))
        case 6, 9: return .object(Dictionary((0..<Int.random(in: 0...4, using: &g)).map { _ in (string(&g), value(&g, depth: depth + 1)) },
                                             uniquingKeysWith: { a, _ in a }))
        default: return .array((0..<Int.random(in: 0...4, using: &g)).map { _ in value(&g, depth: depth + 1) })
        }
    }

    static let pieces = ["a", "b", "type", "Point", " ", "/", "\"", "\\", "\n", "\t", "é", "e\u{301}", "地雷", "\u{1}", "\u{8}", "\u{c}", "\r", "🙂"]
    static func string(_ g: inout SeededRNG) -> String {
        (0..<Int.random(in: 0...5, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined()
    }

    /// The value as a person or a script might write it: spacing, escapes and number forms vary.
    static func text(_ v: JSONValue, _ g: inout SeededRNG) -> [UInt8] {
        var out = ""
        func space() { if Int.random(in: 0..<3, using: &g) == 0 { out += [" ", "\n", "\t", "  ", "\r\n"].randomElement(using: &g)! } }
        func str(_ s: String) {
            out += "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += Bool.random(using: &g) ? "\\n" : "\\u000a"
                case "\t": out += "\\t"
                case "\r": out += Bool.random(using: &g) ? "\\r" : "\\u000D"
                case "\u{8}": out += Bool.random(using: &g) ? "\\b" : "\\u0008"
                case "\u{c}": out += Bool.random(using: &g) ? "\\f" : "\\u000c"
                case "/": out += Bool.random(using: &g) ? "/" : "\\/"
                case _ where c.value < 0x20: out += String(format: "\\u%04x", c.value)
                case _ where c.value > 0x7F && Int.random(in: 0..<4, using: &g) == 0 && c.value < 0x10000: out += String(format: "\\u%04X", c.value)
                default: out.unicodeScalars.append(c)
                }
            }
            out += "\""
        }
        func walk(_ v: JSONValue) {
            space()
            switch v {
            case .null: out += "null"
            case .bool(let b): out += b ? "true" : "false"
            case .int(let i):
                switch Int.random(in: 0..<6, using: &g) {
                case 0: out += "\(i).0"
                case 1: out += "\(i)e0"
                default: out += "\(i)"
                }
            case .double(let d):
                switch Int.random(in: 0..<5, using: &g) {
                case 0: out += String(format: "%.3e", d)
                case 1: out += String(format: "%.17g", d)
                default: out += "\(d)"
                }
            case .string(let s): str(s)
            case .array(let a):
                out += "["
                for (k, e) in a.enumerated() { if k > 0 { out += "," }; walk(e) }
                space(); out += "]"
            case .object(let o):
                out += "{"
                var entries = o.map { ($0.key, $0.value) }
                if let first = entries.first, Int.random(in: 0..<8, using: &g) == 0 { entries.append((first.0, .int(1))) }
                for (k, e) in entries.enumerated() {
                    if k > 0 { out += "," }
                    space(); str(e.0); space(); out += ":"; walk(e.1)
                }
                space(); out += "}"
            }
            space()
        }
        walk(v)
        return Array(out.utf8)
    }

    /// A typing slip: a byte dropped, doubled or replaced by one JSON cares about.
    static func mutate(_ t: inout [UInt8], _ g: inout SeededRNG) {
        guard !t.isEmpty else { return }
        let at = Int.random(in: 0..<t.count, using: &g)
        switch Int.random(in: 0..<3, using: &g) {
        case 0: t.remove(at: at)
        case 1: t.insert(t[at], at: at)
        default: t[at] = Array("{}[],:\"\\0-.eE \u{7F}".utf8).randomElement(using: &g)!
        }
    }
}
