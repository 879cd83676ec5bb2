import FieldSyncCore
import FieldSyncStore
import Foundation

public struct LogFilter: Sendable {
    public var sinceMillis: UInt64?
    public var device: DeviceID?
    public var record: RecordID?
    /// Review filters: only changes touching records of this kind, team, review state, or in conflict.
    public var kind: String?
    public var team: String?
    public var review: String?
    public var conflictsOnly = false
    public var limit = 1000
    var filtersRecords: Bool { kind != nil || team != nil || review != nil || conflictsOnly }
    public init() {}
}

/// One line of `fieldsync log`: a change, who made it, and what it did to which records.
public struct LogEntry: Sendable {
    public let json: JSONValue
    public let line: String
}

public enum ChangeLog {
    public static func entries(_ replica: Replica, filter: LogFilter) throws -> [LogEntry] {
        let names = try replica.names()
        var changes = try replica.store.logChanges(since: filter.sinceMillis, device: filter.device, record: filter.record,
                                                   limit: filter.filtersRecords ? Int.max : filter.limit)
        var wanted: Set<RecordID>?
        if filter.filtersRecords {
            let ids = try replica.store.recordIDs(kind: filter.kind, team: filter.team, review: filter.review, conflictedOnly: filter.conflictsOnly)
            changes = Array(changes.filter { $0.change.change.ops.contains { ids.contains($0.record) } }.prefix(filter.limit))
            wanted = ids
        }
        return changes.map { item in
            let c = item.change
            let who = names[c.change.device] ?? c.change.device.description
            var ops: [JSONValue] = []
            // One phrase per record: "note 01a2…-7680 (clearance_day): area_cleared_m2 1100 → 1150, +tags re-measured".
            var phrases: [(RecordID, String, [String])] = []
            for (i, op) in c.change.ops.enumerated() where (filter.record == nil || op.record == filter.record) && (wanted?.contains(op.record) ?? true) {
                let value = c.values[UInt16(i)]?.value
                var o: [String: JSONValue] = ["action": .string(op.action.description), "record": .string(op.record.description),
                                              "type": .string(op.recordType.description)]
                if !op.field.isEmpty { o["field"] = .string(op.field) }
                if op.action == .create, !op.kind.isEmpty { o["kind"] = .string(op.kind) }
                if op.carriesValue { o["value"] = value ?? "(erased)" }
                var before: [JSONValue] = []
                if op.action == .set || op.action == .resolve || op.action == .review {
                    before = op.refs.map { (try? replica.store.value(of: $0)).flatMap { $0 } ?? "(erased)" }
                    if !before.isEmpty { o["superseded"] = .array(before) }
                }
                // The reason `delete --reason` kept on this laptop (it does not travel).
                if op.action == .delete, let reason = (try? replica.store.meta("delete_reason:\(op.record)")).flatMap({ $0 }) {
                    o["reason"] = .string(reason)
                }
                ops.append(.object(o))
                let shown = value.map(short) ?? "(erased)"
                let word: String
                switch op.action {
                case .create: word = "created"
                case .set, .resolve:
                    // One value replaced: both sides cut around where they differ, so a long
                    // narrative edited near its end shows the edit, not the same opening twice.
                    let (old, new): (String, String) = before.count == 1 && value != nil
                        ? shortPair(before[0], value!) : (before.map(short).joined(separator: " | "), shown)
                    let from = before.isEmpty ? "" : old + " → "
                    word = op.field.isEmpty ? "kept (delete/edit conflict resolved)"
                        : "\(op.action == .resolve ? "resolved " : "")\(op.field) \(from)\(new)"
                case .add: word = "+\(op.field) \(shown)"
                case .remove: word = "-\(op.field)"
                case .delete: word = "deleted" + (o["reason"]?.stringValue.map { " (\($0))" } ?? "")
                case .review: word = "review \(value?["state"]?.stringValue ?? "?")\(value?["comment"]?.stringValue.map { " (\($0))" } ?? "")"
                case .erase: word = "personal data erased"
                }
                if let last = phrases.indices.last, phrases[last].0 == op.record {
                    phrases[last].2.append(word)
                } else {
                    let label = "\(op.recordType) \(op.record.description.prefix(18))\(op.kind.isEmpty ? "" : " (\(op.kind))")"
                    phrases.append((op.record, label, [word]))
                }
            }
            var words = phrases.prefix(3).map { "\($0.1): " + ($0.2.count > 6 ? $0.2.prefix(6).joined(separator: ", ") + ", … \($0.2.count - 6) more" : $0.2.joined(separator: ", ")) }
            if phrases.count > 3 { words.append("and \(phrases.count - 3) more records") }
            var json: [String: JSONValue] = [
                "id": .string(c.id.hex), "device": .string(c.change.device.description), "device_name": .string(who),
                "seq": .int(Int64(c.change.seq)), "hlc_time": .string(Timestamps.iso(c.change.hlc.millis)),
                "device_time": .string(Timestamps.iso(c.change.wallMillis)), "ops": .array(ops),
            ]
            if item.clockSkew { json["clock_skew"] = .bool(true) }
            if let r = item.refusal { json["refused"] = .string(r) }
            var line = "\(Timestamps.iso(c.change.hlc.millis))  \(who)  " + words.joined(separator: "; ")
            if item.clockSkew { line += "  [clock skew]" }
            if let r = item.refusal { line += "  [REFUSED: \(r)]" }
            return LogEntry(json: .object(json), line: line)
        }
    }
}

/// A value shortened for one log line.
func short(_ v: JSONValue) -> String {
    let s = v.stringValue ?? v.canonicalString
    return s.count > 40 ? String(s.prefix(37)) + "..." : s
}

/// Two values shortened for one log line around their first difference: "…fence posts checked"
/// → "…fence posts replaced", not the same first 37 characters twice.
func shortPair(_ a: JSONValue, _ b: JSONValue) -> (String, String) {
    let x = Array(a.stringValue ?? a.canonicalString), y = Array(b.stringValue ?? b.canonicalString)
    guard x.count > 40 || y.count > 40 else { return (String(x), String(y)) }
    var same = 0
    while same < min(x.count, y.count) && x[same] == y[same] { same += 1 }
    let start = same > 16 ? same - 12 : 0
    func cut(_ s: [Character]) -> String {
        let part = s[min(start, s.count)...]
        return (start > 0 ? "…" : "") + (part.count > 37 ? String(part.prefix(34)) + "..." : String(part))
    }
    return (cut(x), cut(y))
}
