import Synchronization
import Foundation

/// Value validation and text parsing, driven by each field's declared type. Every refusal
/// names the field, the value and the rule.
extension RecordSchema {
    static let deviceCategories = ["AP", "AT", "UXO", "AXO", "CMR", "IED", "SAA"]
    static let dispositions = ["destroyed_in_situ", "removed", "rendered_safe", "handed_over", "left_in_place", "other"]

    /// Checks one value (for a set field: one element) and returns it in normal form.
    public func validate(_ value: JSONValue, field: String, type: RecordType, kind: String?) throws(CoreError) -> JSONValue {
        guard let spec = self.field(field, type: type, kind: kind) else {
            throw unknownField(field, type: type, kind: kind)
        }
        return try Self.check(value.normalized(), spec: spec, field: field)
    }

    /// "note of kind clearance_day has no field 'dept_cm' (did you mean 'depth_cm'?)": the nearest
    /// field names by edit distance, so a typo says what was meant.
    public func unknownField(_ field: String, type: RecordType, kind: String?) -> CoreError {
        let names = fieldNames(type: type, kind: kind)
        let near = names.map { ($0, Self.editDistance(field.lowercased(), $0)) }.filter { $0.1 <= max(2, field.count / 3) }
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }.prefix(2).map { "'\($0.0)'" }
        let hint = near.isEmpty ? "; `fieldsync schema \(kind ?? type.description)` lists them" : " (did you mean \(near.joined(separator: " or "))?)"
        return CoreError(.unknownField, "\(type)\(kind.map { " of kind \($0)" } ?? "") has no field '\(field)'\(hint)")
    }

    /// Levenshtein distance over Unicode scalars, for short names.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a.unicodeScalars.prefix(64)), y = Array(b.unicodeScalars.prefix(64))
        var row = Array(0...y.count)
        for i in 1...max(1, x.count) where !x.isEmpty {
            var prev = row[0]
            row[0] = i
            for j in 1...max(1, y.count) where !y.isEmpty {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (x[i - 1] == y[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return x.isEmpty ? y.count : row[y.count]
    }

    static func refuse(_ field: String, _ value: JSONValue, _ rule: String) -> CoreError {
        var shown = value.canonicalString
        if shown.count > 80 { shown = String(shown.prefix(77)) + "..." }
        return CoreError(.invalidValue, "field '\(field)': value \(shown) breaks rule: \(rule)")
    }

    /// Whether `s` is empty or only whitespace (`CharacterSet.whitespaces`: spaces and tabs), as
    /// trimming it would say, without trimming's copy: most text answers at its first character,
    /// and trimming every field was a fortieth of a `note add`.
    static func isBlank(_ s: String) -> Bool { s.unicodeScalars.allSatisfy(isBlank) }

    static func isBlank(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || (c.value > 0x7E && CharacterSet.whitespaces.contains(c))
    }

    /// `s` without leading and trailing `CharacterSet.whitespaces`, as `trimmingCharacters(in:)`
    /// gives it but without the trip through NSString (a number field's trim was a sixtieth of a
    /// `note add`).
    static func trimmingBlanks(_ s: String) -> Substring {
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isBlank($0) }), let last = scalars.lastIndex(where: { !isBlank($0) }) else { return "" }
        return Substring(scalars[first...last])
    }

    static func check(_ v: JSONValue, spec: FieldSpec, field: String) throws(CoreError) -> JSONValue {
        func string(_ rule: String = "must be text") throws(CoreError) -> String {
            guard let s = v.stringValue else { throw refuse(field, v, rule) }
            if let max = spec.maxLength, s.count > max { throw refuse(field, v, "at most \(max) characters") }
            return s
        }
        switch spec.type {
        case "string", "text":
            let s = try string()
            if spec.type == "string", s.contains(where: { $0.isNewline }) { throw refuse(field, v, "one line only") }
            if isBlank(s) { throw refuse(field, v, "must not be empty") }
        case "enum":
            let s = try string()
            guard spec.values?.contains(s) == true else { throw refuse(field, v, "one of \(spec.values!.joined(separator: ", "))") }
        case "integer":
            guard let i = v.intValue else { throw refuse(field, v, "must be a whole number") }
            try range(Double(i))
        case "number":
            guard let d = v.doubleValue, d.isFinite else { throw refuse(field, v, "must be a number") }
            try range(d)
        case "bool":
            guard case .bool = v else { throw refuse(field, v, "must be true or false") }
        case "date":
            guard isDate(try string("must be a date YYYY-MM-DD")) else { throw refuse(field, v, "must be a calendar date YYYY-MM-DD") }
        case "instant":
            guard isInstant(try string()) else {
                throw refuse(field, v, "must be an instant with offset, optionally with an IANA zone: 2025-08-27T13:40:00+03:00[Europe/Kyiv]")
            }
        case "geojson":
            try checkGeoJSON(v, field: field, maxPositions: spec.maxItems ?? 10000)
        case "record_id":
            guard let s = v.stringValue, RecordID(s) != nil else { throw refuse(field, v, "must be a record id (UUID)") }
            return .string(s.lowercased())
        case "device_item":
            try checkDeviceItem(v, field: field)
        case "tel":
            guard let o = v.objectValue, let raw = o["raw"]?.stringValue, !raw.isEmpty, raw.count <= 64,
                  Set(o.keys).isSubset(of: ["raw", "e164", "type", "pref"]) else {
                throw refuse(field, v, "must be {\"raw\": text, \"e164\": \"+…\", \"type\": [words], \"pref\": 1-100 (each optional)}")
            }
            if let e = o["e164"] {
                guard let s = e.stringValue, isE164(s) else { throw refuse(field, v, "e164 must be + and 8 to 15 digits") }
            }
            try checkTypeAndPref(o, v, field: field)
        case "email_params":
            // vCard TYPE and PREF of one of the contact's addresses, kept for exports.
            guard let o = v.objectValue, let email = o["email"]?.stringValue, isEmail(email),
                  Set(o.keys).isSubset(of: ["email", "type", "pref"]), o.count > 1 else {
                throw refuse(field, v, "must be {\"email\": address, \"type\": [words], \"pref\": 1-100}")
            }
            try checkTypeAndPref(o, v, field: field)
        case "email":
            let s = try string()
            guard isEmail(s) else { throw refuse(field, v, "must be an e-mail address") }
            return .string(lowercasedDomain(s))
        case "lang":
            guard isLanguageTag(try string()) else { throw refuse(field, v, "must be a BCP 47 language tag such as en, uk or nb-NO") }
        case "tz":
            guard TimeZone(identifier: try string()) != nil else { throw refuse(field, v, "must be an IANA time zone such as Europe/Kyiv") }
        case "org_name":
            guard let o = v.objectValue, let name = o["name"]?.stringValue, !name.isEmpty, name.count <= (spec.maxLength ?? 200),
                  Set(o.keys).isSubset(of: ["name", "lang", "unit"]) else {
                throw refuse(field, v, "must be {\"name\": text, \"lang\": tag (optional), \"unit\": text (optional)}")
            }
            if let l = o["lang"], !(l.stringValue.map(isLanguageTag) ?? false) { throw refuse(field, v, "lang must be a BCP 47 tag") }
        case "name_parts":
            let parts = ["family", "given", "additional", "prefix", "suffix"]
            guard let o = v.objectValue, !o.isEmpty, Set(o.keys).isSubset(of: parts),
                  o.values.allSatisfy({ ($0.stringValue?.count ?? Int.max) <= (spec.maxLength ?? 200) }) else {
                throw refuse(field, v, "must be an object of text parts: \(parts.joined(separator: ", "))")
            }
        case "review":
            guard let o = v.objectValue, let state = o["state"]?.stringValue, spec.values?.contains(state) == true,
                  Set(o.keys).isSubset(of: ["state", "comment"]) else {
                throw refuse(field, v, "must be {\"state\": \(spec.values!.joined(separator: "|")), \"comment\": text (optional)}")
            }
            if let c = o["comment"], (c.stringValue?.count ?? Int.max) > (spec.maxLength ?? 2000) {
                throw refuse(field, v, "comment at most \(spec.maxLength ?? 2000) characters")
            }
        default:
            throw refuse(field, v, "schema type \(spec.type) is unknown to this build")
        }
        return v

        func range(_ d: Double) throws(CoreError) {
            if let min = spec.min, d < min { throw refuse(field, v, "at least \(JSONValue.double(min).normalized().canonicalString)") }
            if let max = spec.max, d > max { throw refuse(field, v, "at most \(JSONValue.double(max).normalized().canonicalString)") }
        }
    }

    static func isDate(_ s: String) -> Bool {
        let p = s.split(separator: "-", omittingEmptySubsequences: false)
        // ASCII digits only: `Int("+202")` is 202, and "+202-01-01" is no calendar date.
        guard p.count == 3, p[0].count == 4, p[1].count == 2, p[2].count == 2,
              p.allSatisfy({ $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }),
              let y = Int(p[0]), let m = Int(p[1]), let d = Int(p[2]), (1...12).contains(m), d >= 1 else { return false }
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
        return d <= days
    }

    /// RFC 3339 date-time with offset, optionally followed by an RFC 9557 `[Zone/Name]`:
    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, read directly. (ISO8601DateFormatter, made
    /// per value, was two fifths of the server's time taking an upload of imported notes.)
    static func isInstant(_ s: String) -> Bool {
        var text = Substring(s)
        if text.hasSuffix("]"), let open = text.lastIndex(of: "[") {
            let zone = text[text.index(after: open)..<text.index(before: text.endIndex)]
            guard ZoneNames.known(String(zone)) else { return false }
            text = text[..<open]
        }
        let b = Array(text.utf8)
        guard b.count >= 20, b[10] == UInt8(ascii: "T"), isDate(String(decoding: b[..<10], as: UTF8.self)) else { return false }
        func number(_ at: Int, max: Int) -> Bool {
            guard b[at] >= 0x30, b[at] <= 0x39, b[at + 1] >= 0x30, b[at + 1] <= 0x39 else { return false }
            return Int(b[at] - 0x30) * 10 + Int(b[at + 1] - 0x30) <= max
        }
        guard number(11, max: 23), b[13] == UInt8(ascii: ":"), number(14, max: 59), b[16] == UInt8(ascii: ":"), number(17, max: 59) else { return false }
        var i = 19
        if b[i] == UInt8(ascii: ".") {
            let digits = b[(i + 1)...].prefix { $0 >= 0x30 && $0 <= 0x39 }.count
            guard (1...9).contains(digits) else { return false }
            i += 1 + digits
        }
        let offset = b[i...]
        if offset.elementsEqual([UInt8(ascii: "Z")]) { return true }
        guard offset.count == 6, offset.first == UInt8(ascii: "+") || offset.first == UInt8(ascii: "-"), b[i + 3] == UInt8(ascii: ":") else { return false }
        return number(i + 1, max: 23) && number(i + 4, max: 59)
    }

    /// vCard TYPE values (words such as work, cell, x-mobile) and PREF (RFC 6350: 1 to 100).
    static func checkTypeAndPref(_ o: [String: JSONValue], _ v: JSONValue, field: String) throws(CoreError) {
        if let t = o["type"] {
            guard let items = t.arrayValue, !items.isEmpty, items.count <= 10, items.allSatisfy({ item in
                guard let s = item.stringValue, (1...40).contains(s.count) else { return false }
                return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
            }) else { throw refuse(field, v, "type must be a list of up to 10 words (work, cell, x-…)") }
        }
        if let p = o["pref"] {
            guard let n = p.intValue, (1...100).contains(n) else { throw refuse(field, v, "pref must be a whole number from 1 to 100") }
        }
    }

    static func isE164(_ s: String) -> Bool {
        s.hasPrefix("+") && (8...15).contains(s.count - 1) && s.dropFirst().allSatisfy { $0.isASCII && $0.isNumber }
    }

    static func isEmail(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard s.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !parts[1].hasPrefix("."), !parts[1].hasSuffix(".") else { return false }
        return !s.contains(where: { $0.isWhitespace || $0 == "<" || $0 == ">" || $0 == "," })
    }

    static func lowercasedDomain(_ s: String) -> String {
        let parts = s.split(separator: "@")
        return parts.count == 2 ? "\(parts[0])@\(parts[1].lowercased())" : s
    }

    static func isLanguageTag(_ s: String) -> Bool {
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard let first = parts.first, (2...3).contains(first.count), first.allSatisfy({ $0.isASCII && $0.isLetter }) else { return false }
        return parts.dropFirst().allSatisfy { (1...8).contains($0.count) && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } }
    }

    static func checkDeviceItem(_ v: JSONValue, field: String) throws(CoreError) {
        guard let o = v.objectValue, Set(o.keys).isSubset(of: ["category", "model", "quantity", "disposition"]) else {
            throw refuse(field, v, "must be {category, model, quantity, disposition}")
        }
        guard let c = o["category"]?.stringValue, deviceCategories.contains(c) else {
            throw refuse(field, v, "category one of \(deviceCategories.joined(separator: ", "))")
        }
        if let m = o["model"], (m.stringValue?.count ?? Int.max) > 80 { throw refuse(field, v, "model is text of at most 80 characters") }
        guard let q = o["quantity"]?.intValue, (1...100_000).contains(q) else { throw refuse(field, v, "quantity a whole number from 1 to 100000") }
        if let d = o["disposition"], !(d.stringValue.map(dispositions.contains) ?? false) {
            throw refuse(field, v, "disposition one of \(dispositions.joined(separator: ", "))")
        }
    }

    /// RFC 7946 Point, Polygon or MultiPolygon in WGS84 longitude, latitude.
    static func checkGeoJSON(_ v: JSONValue, field: String, maxPositions: Int) throws(CoreError) {
        guard let o = v.objectValue, let type = o["type"]?.stringValue, let coords = o["coordinates"]?.arrayValue,
              Set(o.keys).isSubset(of: ["type", "coordinates"]) else {
            throw refuse(field, v, "must be a GeoJSON geometry {type, coordinates}")
        }
        var count = 0
        func position(_ p: JSONValue) throws(CoreError) {
            count += 1
            guard count <= maxPositions else { throw refuse(field, v, "at most \(maxPositions) positions") }
            guard let a = p.arrayValue, (2...3).contains(a.count), let lon = a[0].doubleValue, let lat = a[1].doubleValue else {
                throw refuse(field, v, "a position is [longitude, latitude]")
            }
            guard (-180...180).contains(lon), (-90...90).contains(lat) else {
                if (-90...90).contains(lon), (-180...180).contains(lat) {
                    throw refuse(field, v, "[\(a[0].canonicalString), \(a[1].canonicalString)] looks like latitude, longitude: GeoJSON positions are [longitude, latitude]")
                }
                throw refuse(field, v, "longitude within -180..180 and latitude within -90..90 (GeoJSON order is lon, lat)")
            }
        }
        func ring(_ r: JSONValue) throws(CoreError) {
            guard let ps = r.arrayValue, ps.count >= 4 else { throw refuse(field, v, "a polygon ring has at least 4 positions") }
            for p in ps { try position(p) }
            guard ps.first == ps.last else { throw refuse(field, v, "a polygon ring ends where it starts") }
        }
        func polygon(_ p: JSONValue) throws(CoreError) {
            guard let rings = p.arrayValue, !rings.isEmpty else { throw refuse(field, v, "a polygon has at least one ring") }
            for r in rings { try ring(r) }
        }
        switch type {
        case "Point": try position(.array(coords))
        case "Polygon": try polygon(.array(coords))
        case "MultiPolygon":
            guard !coords.isEmpty else { throw refuse(field, v, "a MultiPolygon has at least one polygon") }
            for p in coords { try polygon(p) }
        default: throw refuse(field, v, "geometry type Point, Polygon or MultiPolygon")
        }
    }
}

// MARK: - Text parsing for `--set FIELD=VALUE`

extension RecordSchema {
    /// Parses command-line text into a value of the field's type, then validates it. Structured
    /// types take JSON; a few take a short form (`devices`: CATEGORY:MODEL:QUANTITY[:DISPOSITION],
    /// `org`: NAME, `tel`: the number as written).
    public func parse(text: String, field: String, type: RecordType, kind: String?) throws(CoreError) -> JSONValue {
        guard let spec = self.field(field, type: type, kind: kind) else {
            throw unknownField(field, type: type, kind: kind)
        }
        let value: JSONValue
        switch spec.type {
        case "integer":
            guard let i = Int64(Self.trimmingBlanks(text)) else { throw Self.refuse(field, .string(text), "must be a whole number") }
            value = .int(i)
        case "number":
            guard let d = Double(Self.trimmingBlanks(text)), d.isFinite else { throw Self.refuse(field, .string(text), "must be a number") }
            value = .double(d)
        case "bool":
            switch text.lowercased() {
            case "true", "yes", "1": value = .bool(true)
            case "false", "no", "0": value = .bool(false)
            default: throw Self.refuse(field, .string(text), "must be true or false")
            }
        case "device_item" where !text.hasPrefix("{"):
            let p = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (3...4).contains(p.count), let q = Int64(p[2]) else {
                throw Self.refuse(field, .string(text), "CATEGORY:MODEL:QUANTITY[:DISPOSITION] or a JSON object")
            }
            var o: [String: JSONValue] = ["category": .string(p[0].uppercased()), "model": .string(p[1]), "quantity": .int(q)]
            if p.count == 4 { o["disposition"] = .string(p[3]) }
            value = .object(o)
        case "org_name" where !text.hasPrefix("{"):
            value = .object(["name": .string(text)])
        case "tel" where !text.hasPrefix("{"):
            var o: [String: JSONValue] = ["raw": .string(text)]
            if let e = Phone.e164(text, defaultCountryCode: nil) { o["e164"] = .string(e) }
            value = .object(o)
        case "geojson" where Self.latLon(text) != nil:
            // "49.1987,37.2611": a point as people say it, latitude first.
            let (lat, lon) = Self.latLon(text)!
            guard (-90...90).contains(lat), (-180...180).contains(lon) else {
                throw Self.refuse(field, .string(text), "LAT,LON: latitude within -90..90, then longitude within -180..180")
            }
            value = .object(["type": "Point", "coordinates": .array([.double(lon), .double(lat)])])
        case "geojson", "device_item", "org_name", "name_parts", "tel", "review", "email_params":
            do { value = try JSONValue.parse(text) } catch {
                throw Self.refuse(field, .string(text), "must be JSON for a \(spec.type)")
            }
        default:
            value = .string(text)
        }
        return try Self.check(value.normalized(), spec: spec, field: field)
    }
}

extension RecordSchema {
    /// Two decimal numbers separated by a comma (spaces allowed): "LAT,LON".
    static func latLon(_ text: String) -> (Double, Double)? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { trimmingBlanks(String($0)) }
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { c in c.isASCII && (c.isNumber || c == "." || c == "-" || c == "+") } }),
              let lat = Double(parts[0]), let lon = Double(parts[1]), lat.isFinite, lon.isFinite else { return nil }
        return (lat, lon)
    }
}

/// Telephone numbers: keep what was written, derive E.164 only when the country is clear.
public enum Phone {
    /// Digits of a national significant number (after the trunk 0), for the countries whose
    /// numbers press contacts mostly have (ITU-T E.164 national numbering plans).
    static let nationalLengths: [String: ClosedRange<Int>] = [
        "47": 8...8, "46": 7...9, "45": 8...8, "358": 5...10, "354": 7...7, "380": 9...9, "44": 9...10, "49": 6...11,
        "48": 9...9, "372": 7...8, "371": 8...8, "370": 8...8, "33": 9...9, "31": 9...9, "32": 8...9, "41": 9...9,
        "43": 4...13, "353": 7...9, "1": 10...10,
    ]

    /// `+CC…` or `00CC…` are clear; a national number needs `defaultCountryCode` (digits, e.g. "47").
    public static func e164(_ raw: String, defaultCountryCode: String?) -> String? {
        var s = raw.trimmingCharacters(in: .whitespaces)
        if s.lowercased().hasPrefix("tel:") { s = String(s.dropFirst(4)) }
        if let semi = s.firstIndex(of: ";") { s = String(s[..<semi]) }
        let allowed = Set("+0123456789 ()-./")
        guard !s.isEmpty, s.allSatisfy({ allowed.contains($0) }) else { return nil }
        let digits = s.filter { $0.isASCII && $0.isNumber }
        let candidate: String
        if s.hasPrefix("+") {
            candidate = "+" + digits
        } else if digits.hasPrefix("00") {
            candidate = "+" + digits.dropFirst(2)
        } else if let cc = defaultCountryCode {
            let national = digits.hasPrefix("0") ? String(digits.dropFirst()) : digits
            // A number of the wrong length for its country is not that country's: keep it raw.
            if let lengths = nationalLengths[cc], !lengths.contains(national.count) { return nil }
            candidate = "+" + cc + national
        } else {
            return nil
        }
        return RecordSchema.isE164(candidate) ? candidate : nil
    }
}

/// Time zone names already looked up: `TimeZone(identifier:)` goes through ICU on every call,
/// and an import repeats a handful of names thousands of times. Bounded, so names from outside
/// cannot grow it.
enum ZoneNames {
    static let seen = Mutex<[String: Bool]>([:])

    /// Only ASCII names (IANA's are letters, digits, `/ _ + -`): Swift's `String` equality is
    /// canonical equivalence, so a look-alike such as "Asia/\u{212A}abul" (KELVIN SIGN) would
    /// share the memo entry of "Asia/Kabul", and its refusal would refuse the real name too.
    static func known(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), name.utf8.allSatisfy({ c in
            (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c == 0x2F || c == 0x5F || c == 0x2B || c == 0x2D
        }) else { return false }
        if let answer = seen.withLock({ $0[name] }) { return answer }
        let answer = TimeZone(identifier: name) != nil
        seen.withLock { if $0.count < 512 { $0[name] = answer } }
        return answer
    }
}
