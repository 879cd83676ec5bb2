import FieldSyncCore
import FieldSyncStore
import Foundation

public struct LogFilter: Sendable {
    public var sinceMillis: UInt64?
    public var device: DeviceID?
    public var record: RecordID?
    public var limit = 1000
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
        let changes = try replica.store.logChanges(since: filter.sinceMillis, device: filter.device, record: filter.record, limit: filter.limit)
        return changes.map { item in
            let c = item.change
            let who = names[c.change.device] ?? c.change.device.description
            var ops: [JSONValue] = []
            var words: [String] = []
            for (i, op) in c.change.ops.enumerated() where filter.record == nil || op.record == filter.record {
                let value = c.values[UInt16(i)]?.value
                var o: [String: JSONValue] = ["action": .string(op.action.description), "record": .string(op.record.description),
                                              "type": .string(op.recordType.description)]
                if !op.field.isEmpty { o["field"] = .string(op.field) }
                if op.action == .create, !op.kind.isEmpty { o["kind"] = .string(op.kind) }
                if op.carriesValue { o["value"] = value ?? "(erased)" }
                ops.append(.object(o))
                let shown = op.carriesValue ? "=" + (value.map { $0.stringValue ?? $0.canonicalString } ?? "(erased)") : ""
                let short = String(op.record.description.prefix(8))
                switch op.action {
                case .create: words.append("create \(op.recordType) \(short)\(op.kind.isEmpty ? "" : " (\(op.kind))")")
                case .delete, .erase: words.append("\(op.action) \(short)")
                case .resolve where op.field.isEmpty: words.append("keep \(short) (delete/edit conflict)")
                default: words.append("\(op.action) \(short) \(op.field)\(shown)")
                }
            }
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
