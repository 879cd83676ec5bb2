import Foundation
import FieldSyncCore

/// Writes contact cards as vCard 4.0 (RFC 6350) and jCard (RFC 7095), and reads jCard back.
/// Both forms re-import to the same fields and sets.
public enum VCardWriter {
    /// Carries "source" (free text such as a press-release headline; SOURCE must be a URI).
    static let sourceProperty = "X-FIELDSYNC-SOURCE"
    /// Carries "to_check": text an import kept for a person to look at.
    static let checkProperty = "X-FIELDSYNC-CHECK"
    /// The number as written, beside a `tel:` URI that holds only the E.164 form.
    static let rawTelParam = "X-FIELDSYNC-RAW"
    /// RFC 6350 §3.2: lines longer than 75 octets are folded.
    static let maxLineOctets = 75

    /// vCard 4.0 text with CRLF line endings. `uids[i]` (e.g. "urn:uuid:…") is card i's UID.
    public static func vcard4(_ cards: [ContactCard], uids: [String]) -> String {
        var out = ""
        for (i, card) in cards.enumerated() {
            for line in contentLines(card, uid: i < uids.count ? uids[i] : nil) {
                out += fold(line) + "\r\n"
            }
        }
        return out
    }

    /// A jCard `["vcard", [properties]]` for one card; for any other count, an array of them.
    public static func jcard(_ cards: [ContactCard], uids: [String]) -> JSONValue {
        let items = cards.enumerated().map { i, card in jcardItem(card, uid: i < uids.count ? uids[i] : nil) }
        return items.count == 1 ? items[0] : .array(items)
    }

    /// Reads what `jcard` writes (and other RFC 7095 jCards). jCard has no lines, so an
    /// error's `line` is the card's 1-based position.
    public static func parseJCard(_ value: JSONValue, file: String) -> [Result<ContactCard, ImportError>] {
        let items: [JSONValue]
        if let a = value.arrayValue, a.first?.stringValue != nil {
            items = [value]  // a single card
        } else if let a = value.arrayValue {
            items = a
        } else {
            return [.failure(ImportError(file: file, line: 1, message: "not a jCard: expected [\"vcard\", [...]] or an array of them"))]
        }
        return items.enumerated().map { i, item in JCardReader.card(item, position: i + 1, file: file) }
    }
}

// MARK: - vCard 4.0 text

extension VCardWriter {
    static func contentLines(_ card: ContactCard, uid: String?) -> [String] {
        let esc = VCardEscape.escape
        var lines = ["BEGIN:VCARD", "VERSION:4.0"]
        if let uid { lines.append("UID:" + esc(uid)) }
        lines.append("FN:" + esc(formattedName(card)))
        if let n = card.fields["n"]?.objectValue {
            lines.append("N:" + nameComponents(n).map(esc).joined(separator: ";"))
        }
        for org in card.sets["org"] ?? [] {
            guard let name = org["name"]?.stringValue else { continue }
            let lang = org["lang"]?.stringValue.map { ";LANGUAGE=" + VCardEscape.encodeParam($0) } ?? ""
            let unit = org["unit"]?.stringValue.map { ";" + esc($0) } ?? ""
            lines.append("ORG\(lang):" + esc(name) + unit)
        }
        if let title = card.fields["title"]?.stringValue { lines.append("TITLE:" + esc(title)) }
        for tel in card.sets["tel"] ?? [] {
            guard let raw = tel["raw"]?.stringValue else { continue }
            let kept = typeAndPrefParams(tel)
            if let e164 = tel["e164"]?.stringValue {
                let rawParam = raw == e164 ? "" : ";\(rawTelParam)=" + VCardEscape.encodeParam(raw)
                lines.append("TEL;VALUE=uri\(kept)\(rawParam):tel:" + e164)
            } else {
                lines.append("TEL;VALUE=text\(kept):" + esc(raw))
            }
        }
        for email in strings(card.sets["email"]) {
            lines.append("EMAIL\(typeAndPrefParams(emailParams(card, email) ?? .null)):" + esc(email))
        }
        for lang in strings(card.sets["lang"]) { lines.append("LANG:" + esc(lang)) }
        if let tz = card.fields["tz"]?.stringValue { lines.append("TZ:" + esc(tz)) }
        let beats = strings(card.sets["beats"])
        if !beats.isEmpty { lines.append("CATEGORIES:" + beats.map(esc).joined(separator: ",")) }
        if let note = card.fields["note"]?.stringValue { lines.append("NOTE:" + esc(note)) }
        if let source = card.fields["source"]?.stringValue { lines.append("\(sourceProperty):" + esc(source)) }
        for check in strings(card.sets["to_check"]) { lines.append("\(checkProperty):" + esc(check)) }
        lines.append("END:VCARD")
        return lines
    }

    /// Folds at character boundaries where it can (and never inside a UTF-8 sequence), so each
    /// physical line, the leading space included, stays within 75 octets.
    static func fold(_ line: String) -> String {
        guard line.utf8.count > maxLineOctets else { return line }
        var out = ""
        var octets = 0
        func append(_ piece: String) {
            let size = piece.utf8.count
            if octets + size > maxLineOctets, octets > 1 {
                out += "\r\n "
                octets = 1
            }
            out += piece
            octets += size
        }
        for character in line {
            if character.utf8.count <= maxLineOctets - 1 {
                append(String(character))
            } else {
                // A cluster too long for any line (stacked marks): break between its scalars.
                for scalar in character.unicodeScalars { append(String(scalar)) }
            }
        }
        return out
    }

    /// FN is required by RFC 6350; fall back to the name parts.
    static func formattedName(_ card: ContactCard) -> String {
        card.fields["fn"]?.stringValue ?? ContactBuilder.formattedName(card.fields["n"]) ?? ""
    }

    static func nameComponents(_ n: [String: JSONValue]) -> [String] {
        ["family", "given", "additional", "prefix", "suffix"].map { n[$0]?.stringValue ?? "" }
    }

    static func strings(_ values: [JSONValue]?) -> [String] { (values ?? []).compactMap(\.stringValue) }

    /// `;TYPE=work,cell;PREF=1` from a stored tel or email_params element (words only: the schema
    /// refuses anything else, so nothing here needs quoting).
    static func typeAndPrefParams(_ v: JSONValue) -> String {
        var out = ""
        let types = strings(v["type"]?.arrayValue).filter { $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") } }
        if !types.isEmpty { out += ";TYPE=" + types.joined(separator: ",") }
        if let pref = v["pref"]?.intValue { out += ";PREF=\(pref)" }
        return out
    }

    /// The TYPE/PREF element kept for one of the card's addresses.
    static func emailParams(_ card: ContactCard, _ email: String) -> JSONValue? {
        (card.sets["email_params"] ?? []).first { $0["email"]?.stringValue?.lowercased() == email.lowercased() }
    }

    /// The same as jCard parameters.
    static func jcardParams(_ v: JSONValue?) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        let types = strings(v?["type"]?.arrayValue)
        if !types.isEmpty { out["type"] = types.count == 1 ? .string(types[0]) : .array(types.map { .string($0) }) }
        if let pref = v?["pref"]?.intValue { out["pref"] = .string(String(pref)) }
        return out
    }
}

// MARK: - jCard

extension VCardWriter {
    static func jcardItem(_ card: ContactCard, uid: String?) -> JSONValue {
        var props: [JSONValue] = [prop("version", "4.0")]
        if let uid { props.append(prop("uid", uid, type: uid.contains(":") ? "uri" : "text")) }
        props.append(prop("fn", formattedName(card)))
        if let n = card.fields["n"]?.objectValue {
            props.append(structured("n", nameComponents(n)))
        }
        for org in card.sets["org"] ?? [] {
            guard let name = org["name"]?.stringValue else { continue }
            let params: [String: JSONValue] = org["lang"].map { ["language": $0] } ?? [:]
            if let unit = org["unit"]?.stringValue {
                props.append(structured("org", [name, unit], params: params))
            } else {
                props.append(prop("org", name, params: params))
            }
        }
        if let title = card.fields["title"]?.stringValue { props.append(prop("title", title)) }
        for tel in card.sets["tel"] ?? [] {
            guard let raw = tel["raw"]?.stringValue else { continue }
            var params = jcardParams(tel)
            if let e164 = tel["e164"]?.stringValue {
                if raw != e164 { params[rawTelParam.lowercased()] = .string(raw) }
                props.append(prop("tel", "tel:" + e164, type: "uri", params: params))
            } else {
                props.append(prop("tel", raw, params: params))
            }
        }
        for email in strings(card.sets["email"]) { props.append(prop("email", email, params: jcardParams(emailParams(card, email)))) }
        for lang in strings(card.sets["lang"]) { props.append(prop("lang", lang, type: "language-tag")) }
        if let tz = card.fields["tz"]?.stringValue { props.append(prop("tz", tz)) }
        let beats = strings(card.sets["beats"])
        if !beats.isEmpty {
            props.append(.array([.string("categories"), .object([:]), .string("text")] + beats.map { .string($0) }))
        }
        if let note = card.fields["note"]?.stringValue { props.append(prop("note", note)) }
        if let source = card.fields["source"]?.stringValue { props.append(prop(sourceProperty.lowercased(), source)) }
        for check in strings(card.sets["to_check"]) { props.append(prop(checkProperty.lowercased(), check)) }
        return .array([.string("vcard"), .array(props)])
    }

    static func prop(_ name: String, _ value: String, type: String = "text", params: [String: JSONValue] = [:]) -> JSONValue {
        .array([.string(name), .object(params), .string(type), .string(value)])
    }

    /// RFC 7095 §3.3.1.3: a structured value is one array of its components.
    static func structured(_ name: String, _ components: [String], params: [String: JSONValue] = [:]) -> JSONValue {
        .array([.string(name), .object(params), .string("text"), .array(components.map { .string($0) })])
    }
}

/// Turns jCard properties into the same `ContactProperty` values the vCard reader makes.
enum JCardReader {
    static func card(_ item: JSONValue, position: Int, file: String) -> Result<ContactCard, ImportError> {
        guard let a = item.arrayValue, a.count == 2, a[0].stringValue?.lowercased() == "vcard", let props = a[1].arrayValue else {
            return .failure(ImportError(file: file, line: position, message: "card \(position) is not a jCard [\"vcard\", [properties]]"))
        }
        var builder = ContactBuilder(file: file, line: position, defaultCountryCode: nil)
        for (i, value) in props.enumerated() {
            guard let p = property(value, line: position) else {
                builder.fail(position, "card \(position): property \(i + 1) is not [name, {parameters}, type, value…]")
                continue
            }
            builder.apply(p)
        }
        return builder.finish()
    }

    static func property(_ value: JSONValue, line: Int) -> ContactProperty? {
        guard let a = value.arrayValue, a.count >= 4, let name = a[0].stringValue,
              let params = a[1].objectValue, let type = a[2].stringValue else { return nil }
        let values = Array(a[3...])
        let upper = name.uppercased()
        let components: [[String]]
        switch upper {
        case "N", "ORG":
            if let parts = values.first?.arrayValue {
                components = parts.map { $0.arrayValue?.compactMap(text) ?? [text($0) ?? ""] }
            } else {
                components = [[values.first.flatMap(text) ?? ""]]
            }
        case "CATEGORIES":
            components = [values.compactMap(text)]
        default:
            components = [[values.first.flatMap(text) ?? ""]]
        }
        var paramLists: [String: [String]] = [:]
        for (key, v) in params {
            paramLists[key.uppercased()] = v.arrayValue?.compactMap(text) ?? [text(v)].compactMap { $0 }
        }
        return ContactProperty(name: upper, params: paramLists, valueType: type.lowercased(), components: components, line: line)
    }

    /// jCard values may be numbers or booleans; contact fields want their text.
    static func text(_ v: JSONValue) -> String? {
        switch v {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return b ? "true" : "false"
        default: return nil
        }
    }
}
