import FieldSyncCore
import Foundation

/// Signs drafts as one device's chain, the way a replica's commit does, without storing them:
/// how the bench makes a server's worth of changes quickly and reproducibly.
struct ChainAuthor {
    let key: DeviceKey
    var seq: UInt64 = 0
    var prev: ChangeID = .zero
    var clock = HybridClock()

    init(key: DeviceKey) { self.key = key }

    mutating func sign(_ draft: ChangeDraft, wallMillis: UInt64 = Timestamps.nowMillis) -> SignedChange {
        seq += 1
        let change = Change(device: key.deviceID, seq: seq, prev: prev, hlc: clock.tick(wallMillis: wallMillis),
                            wallMillis: wallMillis, ops: draft.ops)
        let signed = SignedChange.author(change, values: draft.values, key: key)
        prev = signed.id
        return signed
    }
}

/// The field notes every scenario writes: an observation with ten fields, values varying by `n`.
enum Workload {
    static let fieldsPerNote = 10

    static func fields(_ n: Int) -> [(String, JSONValue)] {
        let lon = 36.0 + Double(n % 1000) / 1000, lat = 49.0 + Double(n / 1000 % 1000) / 1000
        return [
            ("ref", .string("UA-KHA-OBS-\(String(format: "%05d", n))")),
            ("org", .string("FSD")),
            ("team", .string("MT\(n % 12 + 1)")),
            ("info_date", .string("2026-11-\(String(format: "%02d", n % 28 + 1))")),
            ("status", .string(n % 3 == 0 ? "open" : "closed")),
            ("narrative", .string("Visual inspection of field edge \(n); no further items seen.")),
            ("lang", .string("en")),
            ("area_m2", .int(Int64(100 + n % 5000))),
            ("sensitivity", .string("internal")),
            ("location", .object(["type": "Point", "coordinates": .array([.double(lon), .double(lat)])])),
        ]
    }

    /// The same fields as `--set FIELD=VALUE` text, for the `note add` path.
    static func sets(_ n: Int) -> [String] {
        fields(n).map { f, v in "\(f)=\(v.stringValue ?? v.canonicalString)" }
    }

    /// One note as ops: a create and one write per field.
    static func add(note n: Int, by author: DeviceID, to d: inout ChangeDraft) {
        let id = RecordID.make(.note, by: author)
        d.create(id, type: .note, kind: "observation")
        for (f, v) in fields(n) { d.set(f, to: v, onNew: id, type: .note) }
    }

    /// `notes` notes by `authors.count` devices, in changes of at most `opsPerChange` ops, each
    /// change holding whole notes; authors take turns change by change.
    static func notes(_ notes: Int, authors: inout [ChainAuthor], opsPerChange: Int) -> [SignedChange] {
        let perChange = max(1, opsPerChange / (fieldsPerNote + 1))
        var out: [SignedChange] = []
        var n = 0, turn = 0
        while n < notes {
            var d = ChangeDraft()
            let author = authors[turn % authors.count].key.deviceID
            for _ in 0..<min(perChange, notes - n) { add(note: n, by: author, to: &d); n += 1 }
            out.append(authors[turn % authors.count].sign(d))
            turn += 1
        }
        return out
    }
}
