import Foundation

/// The JSON forms of records and times that listings, exports and scripts read. Canonical, so
/// two replicas with the same changes print byte-identical listings.
extension RecordView {
    public var listingJSON: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id.description),
            "type": .string(type.description),
            "fields": .object(values),
            "created_by": .string(createdBy.description),
            "created_at": .string(Timestamps.iso(createdAt.millis)),
            "updated_at": .string(Timestamps.iso(lastChanged.millis)),
        ]
        if let kind { o["kind"] = .string(kind) }
        var conflicts = conflictedFields.map { JSONValue.string($0) }
        if deleteConflict != nil { conflicts.insert("(deleted)", at: 0) }
        if !conflicts.isEmpty { o["conflicts"] = .array(conflicts) }
        if deleted { o["deleted"] = .bool(true) }
        if let e = erasedBy {
            o["erased"] = .object(["by": .string(e.author.description), "at": .string(Timestamps.iso(e.hlc.millis))])
        }
        return .object(o)
    }
}

public enum Timestamps {
    /// RFC 3339 UTC with milliseconds.
    public static func iso(_ millis: UInt64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }

    public static var nowMillis: UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// A date (YYYY-MM-DD, as UTC midnight) or an RFC 3339 instant, as Unix ms.
    public static func parse(_ text: String) -> UInt64? {
        if RecordSchema.isDate(text) {
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withFullDate]
            f.timeZone = TimeZone(identifier: "UTC")
            return f.date(from: text).map { UInt64(max(0, $0.timeIntervalSince1970) * 1000) }
        }
        let f = ISO8601DateFormatter()
        for opts: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            f.formatOptions = opts
            if let d = f.date(from: text) { return UInt64(max(0, d.timeIntervalSince1970) * 1000) }
        }
        return nil
    }
}
