import FieldSyncCore
import Foundation

/// `fieldsync contact import`: picks the reader by content, then checks every card against the
/// schema. Without `skipInvalid`, one bad card means nothing is imported.
public enum ContactImport {
    /// `countryCode` (`--country-code`) wins; `fallbackCountryCode` (the replica's default)
    /// serves where neither the card nor the release names a country.
    public static func read(file: String, countryCode: String?, fallbackCountryCode: String? = nil) throws -> [Result<ContactCard, ImportError>] {
        guard let data = FileManager.default.contents(atPath: file) else { throw ClientError("cannot read \(file)") }
        // Older phone exports are Windows-1252 / Latin-1 where no CHARSET says otherwise.
        let latin = { () -> String? in
            guard data.starts(with: Array("BEGIN:VCARD".utf8)) || data.starts(with: Array("begin:vcard".utf8)) else { return nil }
            return String(data: data, encoding: .windowsCP1252) ?? String(data: data, encoding: .isoLatin1)
        }
        guard var text = String(data: data, encoding: .utf8) ?? latin() else { throw ClientError("\(file) is not UTF-8 text") }
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        let head = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if head.uppercased().hasPrefix("BEGIN:VCARD") {
            return VCard.parse(text, file: file, defaultCountryCode: countryCode, fallbackCountryCode: fallbackCountryCode)
        }
        if head.hasPrefix("[") || head.hasPrefix("{") {
            let value: JSONValue
            do { value = try JSONValue.parse(head) } catch { throw ClientError("\(file): not valid JSON (expected jCard)") }
            return VCardWriter.parseJCard(value, file: file)
        }
        return PressRelease.parseContacts(text, file: file, defaultCountryCode: countryCode, fallbackCountryCode: fallbackCountryCode)
    }

    public static func inputs(_ results: [Result<ContactCard, ImportError>], replica: Replica, file: String,
                              skipInvalid: Bool) throws -> ([RecordInput], [String]) {
        var inputs: [RecordInput] = []
        var skipped: [String] = []
        for r in results {
            do {
                inputs.append(try input(r.get(), replica: replica, file: file))
            } catch let e as ImportError {
                if skipInvalid { skipped.append(e.description) } else { throw ClientError("\(e.description) (nothing imported; --skip-invalid imports the rest)") }
            }
        }
        if inputs.isEmpty && skipped.isEmpty { throw ClientError("\(file): no contacts found") }
        return (inputs, skipped)
    }

    static func input(_ card: ContactCard, replica: Replica, file: String) throws -> RecordInput {
        var input = RecordInput()
        input.fillOnly = card.guessed
        // A card exported by fieldsync (UID urn:uuid:<record id>) comes back as the same record;
        // another UUID that does not name a contact (ids carry their type) becomes a contact id
        // derived from it, the same on every laptop.
        if let uid = card.uid, uid.lowercased().hasPrefix("urn:uuid:"), let id = RecordID(String(uid.dropFirst(9))) {
            input.id = id.type == .contact ? id : RecordID.contact(named: uid.lowercased())
        }
        let schema = replica.schema
        func checked(_ value: JSONValue, _ field: String) throws -> JSONValue {
            let result = Result { () throws(CoreError) -> JSONValue in try schema.validate(value, field: field, type: .contact, kind: nil) }
            switch result {
            case .success(let v): return v
            case .failure(let e): throw ImportError(file: file, line: card.line, message: e.message)
            }
        }
        for (field, value) in card.fields.sorted(by: { $0.key < $1.key }) {
            input.registers.append((field, try checked(value, field)))
        }
        for (field, items) in card.sets.sorted(by: { $0.key < $1.key }) {
            var seen: Set<JSONValue> = []
            for item in items {
                let v = try checked(item, field)
                if seen.insert(v).inserted { input.elements.append((field, v)) }
            }
        }
        return input
    }
}
