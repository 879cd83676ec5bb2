/// The sync header's JSON on the hot path of every exchange: Foundation's coders were a tenth of
/// the server's CPU in B3 (its JSON header decoded, its answer's encoded, per request). Each
/// function here handles only the plain shapes laptops and the server send, and gives anything
/// else back (nil) to Foundation, which decides as before; so the answers are the same by
/// construction, and `SyncHeaderJSONTests` holds them to it byte for byte, seeded.
enum SyncHeaderJSON {
    // MARK: Writing, as JSONEncoder with `.sortedKeys` writes

    /// `SyncRequest`'s header: `rosterDigest` (if any), then `vector`.
    static func request(_ r: SyncRequest) -> [UInt8] {
        var w = Writer()
        w.byte("{")
        if let digest = r.rosterDigest {
            w.key("rosterDigest")
            w.string(digest)
            w.byte(",")
        }
        w.key("vector")
        w.vector(r.vector)
        w.byte("}")
        return w.bytes
    }

    /// `SyncResponse`'s header, or nil when it carries a roster (rare: Foundation writes it).
    static func response(_ r: SyncResponse) -> [UInt8]? {
        guard r.roster == nil else { return nil }
        var w = Writer()
        w.byte("{")
        w.key("accepted")
        w.list(r.accepted) { w, id in w.string(id) }
        if let forks = r.forks {
            w.byte(",")
            w.key("forks")
            w.list(forks) { w, f in
                w.byte("{")
                w.key("device"); w.string(f.device); w.byte(",")
                w.key("refused"); w.string(f.refused); w.byte(",")
                w.key("seq"); w.number(f.seq)
                w.byte("}")
            }
        }
        w.byte(",")
        w.key("more")
        w.bytes += r.more ? Array("true".utf8) : Array("false".utf8)
        w.byte(",")
        w.key("refused")
        w.list(r.refused) { w, x in
            w.byte("{")
            w.key("code"); w.string(x.code); w.byte(",")
            w.key("id"); w.string(x.id); w.byte(",")
            w.key("reason"); w.string(x.reason)
            w.byte("}")
        }
        w.byte(",")
        w.key("serverTime")
        w.number(r.serverTime)
        w.byte(",")
        w.key("vector")
        w.vector(r.vector)
        w.byte("}")
        return w.bytes
    }

    struct Writer {
        var bytes: [UInt8] = []

        init() { bytes.reserveCapacity(256) }

        mutating func byte(_ c: Unicode.Scalar) { bytes.append(UInt8(ascii: c)) }

        mutating func key(_ k: String) {
            string(k)
            byte(":")
        }

        mutating func number(_ n: UInt64) { bytes += Array(String(n).utf8) }

        /// A JSON array, each item written by `item`.
        mutating func list<T>(_ items: [T], _ item: (inout Writer, T) -> Void) {
            byte("[")
            for (i, x) in items.enumerated() {
                if i > 0 { byte(",") }
                item(&self, x)
            }
            byte("]")
        }

        /// Keys in the order of their UTF-8 bytes, as `.sortedKeys` orders them.
        mutating func vector(_ v: [String: UInt64]) {
            byte("{")
            for (i, (k, n)) in v.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
                if i > 0 { byte(",") }
                key(k)
                number(n)
            }
            byte("}")
        }

        /// JSONEncoder's escapes: the quote, the backslash and the solidus, the five short
        /// control escapes, `\u00xx` for the other control bytes; everything else as it is.
        mutating func string(_ s: String) {
            byte("\"")
            for c in s.utf8 {
                switch c {
                case 0x22: bytes += [0x5C, 0x22]
                case 0x5C: bytes += [0x5C, 0x5C]
                case 0x2F: bytes += [0x5C, 0x2F]
                case 0x08: bytes += [0x5C, UInt8(ascii: "b")]
                case 0x0C: bytes += [0x5C, UInt8(ascii: "f")]
                case 0x0A: bytes += [0x5C, UInt8(ascii: "n")]
                case 0x0D: bytes += [0x5C, UInt8(ascii: "r")]
                case 0x09: bytes += [0x5C, UInt8(ascii: "t")]
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes += [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(c >> 4)], hex[Int(c & 0xF)]]
                default: bytes.append(c)
                }
            }
            byte("\"")
        }
    }

    // MARK: Reading

    /// A request header of the plain shape: an object with `vector` (an object of keys to
    /// integers written as digits) and perhaps `rosterDigest` (a string or null), each once,
    /// nothing else, keys and strings of printable ASCII without escapes. Nil for anything
    /// else: Foundation decides it (a repeated key, an unknown one, `1.0`, an escape...).
    static func request(_ b: [UInt8]) -> SyncRequest? {
        var r = Reader(b: b)
        var vector: [String: UInt64]?
        var digest: String??
        r.space()
        guard r.take("{") else { return nil }
        r.space()
        if !r.take("}") {
            repeat {
                r.space()
                guard let key = r.string() else { return nil }
                r.space()
                guard r.take(":") else { return nil }
                r.space()
                switch key {
                case "vector":
                    guard vector == nil, let v = r.vector() else { return nil }
                    vector = v
                case "rosterDigest":
                    guard digest == nil else { return nil }
                    if r.literal("null") { digest = .some(nil) } else {
                        guard let s = r.string() else { return nil }
                        digest = .some(s)
                    }
                default:
                    return nil
                }
                r.space()
            } while r.take(",")
            guard r.take("}") else { return nil }
        }
        r.space()
        guard r.i == b.count, let vector else { return nil }
        var req = SyncRequest(vector: VersionVector(), changes: [])
        req.vector = vector
        req.rosterDigest = digest ?? nil
        return req
    }

    struct Reader {
        let b: [UInt8]
        var i = 0

        mutating func space() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }

        mutating func take(_ c: Unicode.Scalar) -> Bool {
            guard i < b.count, b[i] == UInt8(ascii: c) else { return false }
            i += 1
            return true
        }

        mutating func literal(_ word: String) -> Bool {
            let w = Array(word.utf8)
            guard b.count - i >= w.count, Array(b[i..<i + w.count]) == w else { return false }
            i += w.count
            return true
        }

        /// Printable ASCII without a backslash, between quotes.
        mutating func string() -> String? {
            guard take("\"") else { return nil }
            let start = i
            while i < b.count, b[i] != 0x22 {
                guard b[i] >= 0x20, b[i] < 0x7F, b[i] != 0x5C else { return nil }
                i += 1
            }
            guard i < b.count else { return nil }
            let s = String(decoding: b[start..<i], as: UTF8.self)
            i += 1
            return s
        }

        /// Digits only, no leading zero, within UInt64.
        mutating func unsigned() -> UInt64? {
            let start = i
            var n: UInt64 = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                let (m, o1) = n.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(UInt64(b[i] - 0x30))
                guard !o1, !o2 else { return nil }
                n = s
                i += 1
            }
            guard i > start, !(b[start] == 0x30 && i - start > 1) else { return nil }
            // A fraction or an exponent is Foundation's to read.
            guard i == b.count || (b[i] != UInt8(ascii: ".") && b[i] != UInt8(ascii: "e") && b[i] != UInt8(ascii: "E")) else { return nil }
            return n
        }

        mutating func vector() -> [String: UInt64]? {
            guard take("{") else { return nil }
            var v: [String: UInt64] = [:]
            space()
            if take("}") { return v }
            repeat {
                space()
                guard let k = string() else { return nil }
                space()
                guard take(":") else { return nil }
                space()
                guard v[k] == nil, let n = unsigned() else { return nil }
                v[k] = n
                space()
            } while take(",")
            guard take("}") else { return nil }
            return v
        }
    }
}
