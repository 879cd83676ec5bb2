import Foundation
import Testing
@testable import FieldSyncCore

/// The sync header's own JSON coding must answer exactly as Foundation's: the same bytes written,
/// the same request read (or none, where Foundation decides), on seeded headers and on texts
/// mutated a byte at a time.
@Suite struct SyncHeaderJSONTests {
    static func foundation(_ header: some Encodable) throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return Array(try enc.encode(header))
    }

    /// Text with the characters escaping must get right.
    static func text(_ g: inout SeededRNG) -> String {
        let alphabet = Array("abcxyz0279_-/\\\"\t\n\r\u{8}\u{c}\u{1}\u{1f}\u{7f} éø€😀")
        return String((0..<Int.random(in: 0...12, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
    }

    static func key(_ g: inout SeededRNG) -> String {
        Int.random(in: 0..<4, using: &g) == 0 ? text(&g) : DeviceID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })!.description
    }

    static func number(_ g: inout SeededRNG) -> UInt64 {
        [0, 1, 9, 10, UInt64.max, UInt64.random(in: 0...1000, using: &g), UInt64.random(in: 0...UInt64.max, using: &g)].randomElement(using: &g)!
    }

    static func vector(_ g: inout SeededRNG) -> [String: UInt64] {
        var v: [String: UInt64] = [:]
        for _ in 0..<Int.random(in: 0...8, using: &g) { v[key(&g)] = number(&g) }
        return v
    }

    @Test func headersAreWrittenAsFoundationWritesThem() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        var g = SeededRNG(seed: seed)
        for _ in 0..<2000 {
            var req = SyncRequest(vector: VersionVector(), changes: [])
            req.vector = Self.vector(&g)
            req.rosterDigest = Bool.random(using: &g) ? Self.text(&g) : nil
            #expect(SyncHeaderJSON.request(req) == (try Self.foundation(req)), "seed \(String(seed, radix: 16))")

            var res = SyncResponse(accepted: (0..<Int.random(in: 0...3, using: &g)).map { _ in Self.text(&g) },
                                   refused: (0..<Int.random(in: 0...3, using: &g)).map { _ in
                                       ChangeRefusal(id: Self.text(&g), code: Self.text(&g), reason: Self.text(&g)) },
                                   changes: [], vector: Self.vector(&g), more: Bool.random(using: &g), serverTime: Self.number(&g), roster: nil)
            if Bool.random(using: &g) {
                res.forks = (0..<Int.random(in: 0...2, using: &g)).map { _ in ForkNotice(device: Self.key(&g), seq: Self.number(&g), refused: Self.text(&g)) }
            }
            #expect(SyncHeaderJSON.response(res) == (try Self.foundation(res)), "seed \(String(seed, radix: 16))")
        }
    }

    @Test func requestsAreReadAsFoundationReadsThem() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        var g = SeededRNG(seed: seed)
        var decidedHere = 0, invalid = 0
        for _ in 0..<4000 {
            var req = SyncRequest(vector: VersionVector(), changes: [])
            req.vector = Self.vector(&g)
            req.rosterDigest = Bool.random(using: &g) ? Self.text(&g) : nil
            var text = try Self.foundation(req)
            if Bool.random(using: &g) { text = Array(String(decoding: text, as: UTF8.self).replacingOccurrences(of: ",", with: " ,\n ").utf8) }
            // Mutations: a byte changed, dropped or repeated; a key or a number written otherwise.
            for _ in 0..<Int.random(in: 0...2, using: &g) where !text.isEmpty {
                let i = Int.random(in: 0..<text.count, using: &g)
                switch Int.random(in: 0..<5, using: &g) {
                case 0: text[i] = Array("{}[]\":,0123456789.eE-\\ nul".utf8).randomElement(using: &g)!
                case 1: text.remove(at: i)
                case 2: text.insert(text[i], at: i)
                case 3: text = Array(String(decoding: text, as: UTF8.self).replacingOccurrences(of: "vector", with: "vectors").utf8)
                default: text = Array(String(decoding: text, as: UTF8.self).replacingOccurrences(of: ":1", with: ":1.0").utf8)
                }
            }
            let ours = SyncHeaderJSON.request(text)
            let theirs = try? JSONDecoder().decode(SyncRequest.self, from: Data(text))
            if theirs == nil { invalid += 1 }
            guard let ours else { continue }
            decidedHere += 1
            let shown = String(decoding: text, as: UTF8.self)
            #expect(ours.vector == theirs?.vector && ours.rosterDigest == theirs?.rosterDigest,
                    "seed \(String(seed, radix: 16)): \(shown) read as \(ours.vector), \(String(describing: ours.rosterDigest))")
        }
        // Not vacuous: most plain headers are decided here, and some texts are not JSON at all.
        #expect(decidedHere > 300, "seed \(String(seed, radix: 16)): only \(decidedHere) decided directly")
        #expect(invalid > 200, "seed \(String(seed, radix: 16)): only \(invalid) invalid texts tried")
    }

    @Test func theHeadersLaptopsSendAreReadDirectly() throws {
        let a = DeviceID(bytes: [UInt8](repeating: 7, count: 16))!.description
        for text in [#"{"rosterDigest":"abc123","vector":{"\#(a)":42}}"#, #"{"vector":{}}"#, #" { "vector" : { "\#(a)" : 0 } , "rosterDigest" : null } "#] {
            #expect(SyncHeaderJSON.request(Array(text.utf8)) != nil, "\(text)")
        }
        // Left to Foundation: a repeated key, an unknown key, a fraction, an escape, a leading zero.
        for text in [#"{"vector":{"a":1,"a":2}}"#, #"{"vector":{},"x":1}"#, #"{"vector":{"a":1.0}}"#, #"{"vector":{"\u0061":1}}"#,
                     #"{"vector":{"a":01}}"#, #"{"vector":{},"vector":{}}"#] {
            #expect(SyncHeaderJSON.request(Array(text.utf8)) == nil, "\(text)")
        }
    }
}
