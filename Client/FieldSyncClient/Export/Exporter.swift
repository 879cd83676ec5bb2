import FieldSyncCore
import FieldSyncStore
import Foundation

/// The export formats of `fieldsync export`. Each re-imports to the same records:
/// JSON Lines and GeoJSON through `note add --json-file`, vCard and jCard through `contact import`.
public enum ExportFormat: String, CaseIterable, Sendable {
    case geojson, csv, vcard, jcard, jsonl
}

public enum Exporter {
    /// Records as stored (listing JSON), parsed back into values.
    static func records(_ replica: Replica, type: RecordType) throws -> [JSONValue] {
        try replica.store.listing(type: type).map { try JSONValue.parse($0) }
    }

    public static func export(_ replica: Replica, format: ExportFormat, type: RecordType?, hxl: Bool) throws -> String {
        switch format {
        case .jsonl:
            let types = type.map { [$0] } ?? [.note, .contact]
            return try types.flatMap { try replica.store.listing(type: $0) }.map { $0 + "\n" }.joined()
        case .geojson:
            return try geojson(records(replica, type: .note)).canonicalString + "\n"
        case .csv:
            let t = type ?? .note
            return try csv(records(replica, type: t), type: t, schema: replica.schema, hxl: hxl)
        case .vcard, .jcard:
            let recs = try records(replica, type: .contact)
            let cards = recs.map(card)
            let uids = recs.map { "urn:uuid:" + ($0["id"]?.stringValue ?? "") }
            return format == .vcard ? VCardWriter.vcard4(cards, uids: uids) : VCardWriter.jcard(cards, uids: uids).canonicalString + "\n"
        }
    }

    /// RFC 7946 FeatureCollection of the notes that have a location (lon, lat as stored).
    static func geojson(_ notes: [JSONValue]) -> JSONValue {
        var features: [JSONValue] = []
        for n in notes {
            guard var fields = n["fields"]?.objectValue, let geometry = fields.removeValue(forKey: "location") else { continue }
            fields["kind"] = n["kind"]
            features.append(.object(["type": "Feature", "id": n["id"] ?? .null, "geometry": geometry, "properties": .object(fields)]))
        }
        return .object(["type": "FeatureCollection", "features": .array(features)])
    }

    /// HXL hashtags for the humanitarian exchange language row under the header.
    static let hxlTags: [String: String] = [
        "id": "#meta+id", "kind": "#event+type", "ref": "#meta+ref", "org": "#org", "team": "#org+team",
        "info_date": "#date", "observed_at": "#date+observed", "location": "#geo+json", "area_m2": "#meta+area_m2",
        "status": "#status", "narrative": "#description", "lang": "#meta+lang", "tags": "#meta+tags",
        "sensitivity": "#meta+sensitivity", "devices": "#item+devices", "links": "#meta+links",
        "fn": "#contact+name", "email": "#contact+email", "tel": "#contact+phone",
    ]

    /// UTF-8 CSV (RFC 4180): one row a record, one column a field; structured values as JSON.
    static func csv(_ records: [JSONValue], type: RecordType, schema: RecordSchema, hxl: Bool) -> String {
        var columns = ["id"] + (type == .note ? ["kind"] : [])
        var fieldNames = schema.fieldNames(type: type, kind: nil)
        for kind in schema.kinds(of: type) { fieldNames += schema.fieldNames(type: type, kind: kind).filter { !fieldNames.contains($0) } }
        columns += fieldNames
        var out = columns.map(cell).joined(separator: ",") + "\r\n"
        if hxl { out += columns.map { hxlTags[$0] ?? "#meta+\($0)" }.joined(separator: ",") + "\r\n" }
        for r in records {
            let fields = r["fields"]?.objectValue ?? [:]
            let row = columns.map { c -> String in
                let v: JSONValue? = c == "id" ? r["id"] : c == "kind" ? r["kind"] : fields[c]
                switch v {
                case nil, .null?: return ""
                case .string(let s)?: return cell(s)
                case let other? where type == .contact: return cell(plain(other))
                case let other?: return cell(other.canonicalString)
                }
            }
            out += row.joined(separator: ",") + "\r\n"
        }
        return out
    }

    /// A contact's structured value as a person reads it: set elements joined by "; ", a phone as
    /// its E.164 form (else as written), an organisation or address by its name, a name by its parts.
    static func plain(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return s
        case .array(let items): return items.map(plain).filter { !$0.isEmpty }.joined(separator: "; ")
        case .object(let o):
            if let e164 = o["e164"]?.stringValue ?? o["raw"]?.stringValue { return e164 }
            if let name = o["name"]?.stringValue { return name }
            if let email = o["email"]?.stringValue {
                let types = (o["type"]?.arrayValue ?? []).compactMap(\.stringValue)
                return types.isEmpty ? email : "\(email) (\(types.joined(separator: ", ")))"
            }
            return ["prefix", "given", "additional", "family", "suffix"].compactMap { o[$0]?.stringValue }.joined(separator: " ")
        case .null: return ""
        case .bool(let b): return b ? "true" : "false"
        default: return v.canonicalString
        }
    }

    static func cell(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    /// A stored contact as a card for the vCard writer.
    static func card(_ r: JSONValue) -> ContactCard {
        var c = ContactCard(line: 0, uid: r["id"]?.stringValue)
        for (k, v) in r["fields"]?.objectValue ?? [:] {
            if case .array(let items) = v { c.sets[k] = items.filter { $0 != .null } } else if v != .null { c.fields[k] = v }
        }
        return c
    }
}
