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
    /// RFC 3339 UTC with milliseconds. Computed by hand (days to civil date, after Howard
    /// Hinnant's algorithm): every listing row carries three of these, and a Foundation
    /// formatter per call was a fifth of an import's time.
    public static func iso(_ millis: UInt64) -> String {
        let ms = Int64(min(millis, 253_402_300_799_999))   // 9999-12-31T23:59:59.999Z at most
        let days = ms / 86_400_000, inDay = ms % 86_400_000
        let z = days + 719_468
        let era = z / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        var out = ""
        out.reserveCapacity(24)
        func pad(_ v: Int64, _ width: Int) {
            let digits = String(v)
            out += String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        pad(year, 4); out += "-"; pad(month, 2); out += "-"; pad(day, 2); out += "T"
        pad(inDay / 3_600_000, 2); out += ":"; pad(inDay / 60_000 % 60, 2); out += ":"; pad(inDay / 1000 % 60, 2)
        out += "."; pad(inDay % 1000, 3); out += "Z"
        return out
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
