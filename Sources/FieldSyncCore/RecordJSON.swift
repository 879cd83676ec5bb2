import Foundation

/// The JSON forms of records and times that listings, exports and scripts read. Canonical, so
/// two replicas with the same changes print byte-identical listings.
extension RecordView {
    /// The listing form, parsed (`fieldsync note show --json` adds to it).
    public var listingJSON: JSONValue {
        // Written canonical by `listingBytes`, the one definition of the form. A set's element
        // sits three levels into the listing, so a value nested as deeply as a value may be
        // still parses.
        try! JSONValue.parseCanonical(listingBytes, maxDepth: CanonicalParser.maxDepth + 3)
    }

    /// The listing form in canonical bytes, written directly: every record a sync touches gets
    /// its listing row rewritten, and building a `JSONValue` tree first (two dictionaries and
    /// two key sorts a record) was a tenth of a first sync's one writer.
    public var listingBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        // Keys in the order of their UTF-8 bytes, as canonical JSON sorts them.
        func key(_ k: StaticString, first: Bool = false) {
            if !first { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(start: k.utf8Start, count: k.utf8CodeUnitCount))
            out.append(contentsOf: "\":".utf8)
        }
        func string(_ s: String) { JSONValue.appendString(s, to: &out) }
        func time(_ millis: UInt64) {
            out.append(UInt8(ascii: "\""))
            Timestamps.appendISO(millis, to: &out)
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "{"))
        var conflicts = hasConflict ? conflictedFields : []
        if deleteConflict != nil { conflicts.insert("(deleted)", at: 0) }
        if !conflicts.isEmpty {
            key("conflicts", first: true)
            out.append(UInt8(ascii: "["))
            for (i, c) in conflicts.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(c)
            }
            out.append(UInt8(ascii: "]"))
        }
        key("created_at", first: conflicts.isEmpty)
        time(createdAt.millis)
        key("created_by")
        string(createdBy.description)
        if deleted {
            key("deleted")
            out.append(contentsOf: "true".utf8)
        }
        if let e = erasedBy {
            key("erased")
            out.append(contentsOf: "{\"at\":".utf8)
            time(e.hlc.millis)
            out.append(contentsOf: ",\"by\":".utf8)
            string(e.author.description)
            out.append(UInt8(ascii: "}"))
        }
        key("fields")
        out.append(UInt8(ascii: "{"))
        for (i, (name, f)) in fields.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            string(name)
            out.append(UInt8(ascii: ":"))
            switch f.merge {
            case .register: (f.value ?? .null).appendCanonical(to: &out)
            case .set:
                out.append(UInt8(ascii: "["))
                for (j, e) in f.elements.enumerated() {
                    if j > 0 { out.append(UInt8(ascii: ",")) }
                    (e.value ?? .null).appendCanonical(to: &out)
                }
                out.append(UInt8(ascii: "]"))
            }
        }
        out.append(UInt8(ascii: "}"))
        key("id")
        string(id.description)
        if let kind {
            key("kind")
            string(kind)
        }
        key("type")
        string(type.description)
        key("updated_at")
        time(lastChanged.millis)
        out.append(UInt8(ascii: "}"))
        return out
    }
}

public enum Timestamps {
    /// RFC 3339 UTC with milliseconds. Computed by hand (days to civil date, after Howard
    /// Hinnant's algorithm): every listing row carries three of these, and a Foundation
    /// formatter per call was a fifth of an import's time.
    public static func iso(_ millis: UInt64) -> String {
        var out: [UInt8] = []
        appendISO(millis, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `iso`, appended as bytes (a listing row is written without a String per timestamp).
    static func appendISO(_ millis: UInt64, to out: inout [UInt8]) {
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
        func digits(_ v: Int64, _ width: Int, then separator: UInt8) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(v / divisor % 10))
                divisor /= 10
            }
            out.append(separator)
        }
        digits(year, 4, then: UInt8(ascii: "-")); digits(month, 2, then: UInt8(ascii: "-")); digits(day, 2, then: UInt8(ascii: "T"))
        digits(inDay / 3_600_000, 2, then: UInt8(ascii: ":")); digits(inDay / 60_000 % 60, 2, then: UInt8(ascii: ":"))
        digits(inDay / 1000 % 60, 2, then: UInt8(ascii: ".")); digits(inDay % 1000, 3, then: UInt8(ascii: "Z"))
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
