import Foundation
import FieldSyncCore

/// Reads vCard 2.1, 3.0 and 4.0 files (RFC 2426, RFC 6350) into contact cards.
public enum VCard {
    /// One result per card, in file order, so a caller can refuse the whole file or skip bad
    /// cards. `defaultCountryCode` (digits, e.g. "47") makes national numbers E.164.
    /// Without it, a card's own e-mail domain or organisation may name the country, else
    /// `fallbackCountryCode` (the replica's default).
    public static func parse(_ text: String, file: String, defaultCountryCode: String?,
                             fallbackCountryCode: String? = nil) -> [Result<ContactCard, ImportError>] {
        var reader = VCardReader(file: file, defaultCountryCode: defaultCountryCode)
        reader.fallbackCountryCode = fallbackCountryCode
        for line in VCardLines.unfold(text) { reader.take(line) }
        return reader.finish()
    }
}

// MARK: - Lines

/// One content line after unfolding, numbered by its first physical line.
struct VCardLogicalLine {
    var text: String
    let line: Int
}

enum VCardLines {
    /// Joins folded lines (a line starting with space or tab continues the previous one) and
    /// quoted-printable soft breaks (a QP value ending in "=" continues on the next line).
    static func unfold(_ text: String) -> [VCardLogicalLine] {
        var out: [VCardLogicalLine] = []
        for (number, physical) in ContactText.lines(text) {
            // Empty lines mean nothing (a 2.1 BASE64 value ends with one), and must not take a
            // fold. A line of only spaces and tabs is one too, unless it continues a value: a fold
            // of a value with a run of tabs or spaces (our own export writes such lines).
            let blank = physical.allSatisfy({ $0 == " " || $0 == "\t" })
            let continuesValue = !physical.isEmpty && out.last.map { !isBase64($0.text) } ?? false
            if blank, !continuesValue, !(out.last.map { isQuotedPrintable($0.text) && $0.text.hasSuffix("=") } ?? false) {
                continue
            }
            if let last = out.last {
                // vCard 2.1 writers (phones, Outlook) may continue a BASE64 PHOTO or KEY on
                // unindented lines; base64 has no colon, so such a line cannot be a property.
                if isBase64(last.text), !physical.contains(":"), physical.allSatisfy(isBase64Character) {
                    out[out.count - 1].text += physical.filter { !$0.isWhitespace }
                    continue
                }
                if isQuotedPrintable(last.text), last.text.hasSuffix("=") {
                    out[out.count - 1].text = String(last.text.dropLast()) + physical
                    continue
                }
                if let first = physical.unicodeScalars.first, first == " " || first == "\t" {
                    // Drop exactly one scalar: " " followed by a combining mark is one Character.
                    out[out.count - 1].text += String(physical.unicodeScalars.dropFirst())
                    continue
                }
            }
            out.append(VCardLogicalLine(text: String(physical), line: number))
        }
        return out
    }

    static func isBase64(_ line: String) -> Bool {
        guard let colon = line.firstIndex(of: ":") else { return false }
        let head = line[..<colon].uppercased()
        return head.contains("BASE64") || head.contains("ENCODING=B")
    }

    static func isBase64Character(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "+" || c == "/" || c == "=" || c == " " || c == "\t")
    }

    static func isQuotedPrintable(_ line: String) -> Bool {
        guard let colon = line.firstIndex(of: ":") else { return false }
        return line[..<colon].uppercased().contains("QUOTED-PRINTABLE")
    }
}

// MARK: - Properties

/// A property in a form both vCard text and jCard reduce to: components, each a list of
/// values, already unescaped.
struct ContactProperty {
    var name: String                 // upper-case, group removed
    var params: [String: [String]]   // upper-case names
    var valueType: String?           // VALUE parameter or jCard type, lower-case
    var components: [[String]]
    var line: Int

    /// The value as one text (components joined as they were written).
    var text: String { components.map { $0.joined(separator: ",") }.joined(separator: ";") }

    func param(_ name: String) -> String? { params[name]?.first }
}

/// A content line split into group, name, parameters and the still-escaped value.
struct VCardContentLine {
    var name: String
    var params: [String: [String]]
    var value: String
    let line: Int

    static let encodings: Set<String> = ["QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"]

    /// `[group.]NAME *(;PARAM[=VALUE]) : value`; nil when the line has no such shape.
    static func parse(_ logical: VCardLogicalLine) -> VCardContentLine? {
        let chars = Array(logical.text)
        var head: [String] = []
        var current = ""
        var inQuotes = false
        var valueStart: Int?
        for (i, c) in chars.enumerated() {
            if c == "\"" { inQuotes.toggle() }
            if !inQuotes, c == ";" || c == ":" {
                head.append(current)
                current = ""
                if c == ":" { valueStart = i + 1; break }
                continue
            }
            current.append(c)
        }
        guard let valueStart, let rawName = head.first else { return nil }
        let name = String(rawName.split(separator: ".", omittingEmptySubsequences: false).last ?? "")
            .trimmingCharacters(in: .whitespaces).uppercased()
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else { return nil }

        var params: [String: [String]] = [:]
        for raw in head.dropFirst() where !raw.isEmpty {
            let (key, values) = parseParam(raw)
            params[key, default: []] += values
        }
        var value = String(chars[valueStart...])
        if params["ENCODING"]?.contains(where: { $0.uppercased() == "QUOTED-PRINTABLE" }) == true {
            value = QuotedPrintable.decode(value, charset: params["CHARSET"]?.first)
        }
        return VCardContentLine(name: name, params: params, value: value, line: logical.line)
    }

    /// `NAME=v1,"v2"` or a vCard 2.1 bare value (`WORK`, `QUOTED-PRINTABLE`).
    static func parseParam(_ raw: String) -> (String, [String]) {
        guard let eq = raw.firstIndex(of: "=") else {
            let bare = raw.trimmingCharacters(in: .whitespaces)
            return (encodings.contains(bare.uppercased()) ? "ENCODING" : "TYPE", [bare])
        }
        let key = raw[..<eq].trimmingCharacters(in: .whitespaces).uppercased()
        let values = VCardEscape.split(String(raw[raw.index(after: eq)...]), on: ",", quotes: true)
            .map { VCardEscape.decodeParam(VCardEscape.unquote($0)) }
        return (key, values)
    }

    /// Splits the value the way this property's type needs and unescapes it.
    func property() -> ContactProperty {
        let valueType = params["VALUE"]?.first?.lowercased()
        let components: [[String]]
        switch name {
        case "N", "ORG":
            components = VCardEscape.split(value, on: ";").map { VCardEscape.split($0, on: ",").map(VCardEscape.unescape) }
        case "CATEGORIES":
            components = [VCardEscape.split(value, on: ",").map(VCardEscape.unescape)]
        case "TEL" where valueType == "uri" || value.lowercased().hasPrefix("tel:"):
            components = [[value]]  // a URI has no backslash escapes
        default:
            components = [[VCardEscape.unescape(value)]]
        }
        return ContactProperty(name: name, params: params, valueType: valueType, components: components, line: line)
    }
}

// MARK: - Escapes and encodings

enum VCardEscape {
    /// Splits at unescaped separators (and, for parameters, outside double quotes); escapes stay.
    static func split(_ s: String, on separator: Character, quotes: Bool = false) -> [String] {
        var parts: [String] = []
        var current = ""
        var escaped = false
        var inQuotes = false
        for c in s {
            if escaped { current.append(c); escaped = false; continue }
            if c == "\\" && !quotes { current.append(c); escaped = true; continue }
            if quotes && c == "\"" { inQuotes.toggle() }
            if c == separator && !inQuotes { parts.append(current); current = ""; continue }
            current.append(c)
        }
        parts.append(current)
        return parts
    }

    /// `\n` `\N` → newline, `\x` → x (covers `\,` `\;` `\\` and 3.0's `\:`).
    static func unescape(_ s: String) -> String {
        var out = ""
        var escaped = false
        for c in s {
            if escaped {
                out.append(c == "n" || c == "N" ? "\n" : c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        if escaped { out.append("\\") }
        return out
    }

    /// Text value escaping of RFC 6350 §3.4; line breaks of any kind become `\n`.
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case ",": out += "\\,"
            case ";": out += "\\;"
            case "\n", "\r\n", "\r": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func unquote(_ s: String) -> String {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard t.count >= 2, t.hasPrefix("\""), t.hasSuffix("\"") else { return t }
        return String(t.dropFirst().dropLast())
    }

    /// RFC 6868: `^n` newline, `^'` double quote, `^^` caret.
    static func decodeParam(_ s: String) -> String {
        guard s.contains("^") else { return s }
        var out = ""
        var caret = false
        for c in s {
            if caret {
                switch c {
                case "n": out.append("\n")
                case "'": out.append("\"")
                case "^": out.append("^")
                default: out.append("^"); out.append(c)
                }
                caret = false
            } else if c == "^" {
                caret = true
            } else {
                out.append(c)
            }
        }
        if caret { out.append("^") }
        return out
    }

    /// A parameter value: RFC 6868 encoded, quoted unless it is plainly safe.
    static func encodeParam(_ s: String) -> String {
        var encoded = ""
        for c in s {
            switch c {
            case "^": encoded += "^^"
            case "\"": encoded += "^'"
            case "\n", "\r\n", "\r": encoded += "^n"
            default: encoded.append(c)
            }
        }
        let plain = encoded.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        return plain ? encoded : "\"\(encoded)\""
    }
}

enum QuotedPrintable {
    /// Decodes `=XX` octets; the bytes are read in the declared charset (UTF-8 unless it says
    /// Latin-1 or Windows-1252), falling back to Latin-1 when they are not valid UTF-8.
    static func decode(_ s: String, charset: String?) -> String {
        let input = Array(s.utf8)
        var bytes: [UInt8] = []
        var i = 0
        while i < input.count {
            if input[i] == UInt8(ascii: "="), i + 2 < input.count, let hi = hexValue(input[i + 1]), let lo = hexValue(input[i + 2]) {
                bytes.append(hi << 4 | lo)
                i += 3
            } else {
                bytes.append(input[i])
                i += 1
            }
        }
        switch charset?.uppercased() {
        case "ISO-8859-1", "LATIN1", "ISO_8859-1":
            return String(bytes: bytes, encoding: .isoLatin1) ?? String(decoding: bytes, as: UTF8.self)
        case "WINDOWS-1252", "CP1252":
            return String(bytes: bytes, encoding: .windowsCP1252) ?? String(decoding: bytes, as: UTF8.self)
        default:
            return String(bytes: bytes, encoding: .utf8) ?? String(bytes: bytes, encoding: .isoLatin1) ?? String(decoding: bytes, as: UTF8.self)
        }
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}

// MARK: - Cards

/// Walks the content lines: BEGIN/END pairing, text outside cards, one result per card.
struct VCardReader {
    let file: String
    let defaultCountryCode: String?
    var fallbackCountryCode: String?
    private(set) var results: [Result<ContactCard, ImportError>] = []
    private var open: ContactBuilder?
    private var reportedStray = false

    init(file: String, defaultCountryCode: String?) {
        self.file = file
        self.defaultCountryCode = defaultCountryCode
    }

    mutating func take(_ logical: VCardLogicalLine) {
        guard !logical.text.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        guard let content = VCardContentLine.parse(logical) else {
            fail(logical.line, "not a vCard property line (expected NAME:value)")
            return
        }
        let isVCard = content.value.trimmingCharacters(in: .whitespaces).uppercased() == "VCARD"
        switch (content.name, isVCard) {
        case ("BEGIN", true):
            if let card = open {
                results.append(.failure(error(card.line, "card has no END:VCARD (a new BEGIN:VCARD starts at line \(content.line))")))
            }
            open = ContactBuilder(file: file, line: content.line, defaultCountryCode: defaultCountryCode)
            open?.fallbackCountryCode = fallbackCountryCode
            reportedStray = false
        case ("END", true):
            if let card = open {
                results.append(card.finish())
                open = nil
            } else {
                results.append(.failure(error(content.line, "END:VCARD without BEGIN:VCARD")))
            }
            reportedStray = false
        case ("BEGIN", false), ("END", false):
            fail(content.line, "unexpected \(content.name):\(content.value) (only VCARD blocks are read)")
        default:
            if open != nil {
                open?.apply(content.property())
            } else {
                fail(content.line, "text outside BEGIN:VCARD … END:VCARD")
            }
        }
    }

    func finish() -> [Result<ContactCard, ImportError>] {
        guard let card = open else { return results }
        return results + [.failure(error(card.line, "card has no END:VCARD"))]
    }

    /// Inside a card the card fails; outside, one error per run of stray lines.
    private mutating func fail(_ line: Int, _ message: String) {
        if open != nil {
            open?.fail(line, message)
        } else if !reportedStray {
            results.append(.failure(error(line, message)))
            reportedStray = true
        }
    }

    private func error(_ line: Int, _ message: String) -> ImportError {
        ImportError(file: file, line: line, message: message)
    }
}

/// Maps properties onto contact fields; shared by the vCard and jCard readers.
struct ContactBuilder {
    let file: String
    let line: Int
    let defaultCountryCode: String?
    var fallbackCountryCode: String?
    private var card: ContactCard
    private var error: ImportError?
    private var sourceURI: String?

    static let versions: Set<String> = ["2.1", "3.0", "4.0"]

    init(file: String, line: Int, defaultCountryCode: String?) {
        self.file = file
        self.line = line
        self.defaultCountryCode = defaultCountryCode
        self.card = ContactCard(line: line)
    }

    /// Keeps the first error: it is the one that explains the rest.
    mutating func fail(_ line: Int, _ message: String) {
        if error == nil { error = ImportError(file: file, line: line, message: message) }
    }

    mutating func apply(_ p: ContactProperty) {
        let text = ContactText.trim(p.text)
        switch p.name {
        case "VERSION":
            if !Self.versions.contains(text) { fail(p.line, "unsupported vCard VERSION \(text) (expected 2.1, 3.0 or 4.0)") }
        case "FN": setOnce("fn", text)
        case "N": applyName(p)
        case "ORG": applyOrg(p)
        case "TITLE": setOnce("title", text)
        case "TEL": applyTel(p)
        case "EMAIL":
            // Every leading `mailto:` goes, not just one: the export writes the bare address, so
            // an address that kept a scheme would come back as another address.
            var email = Substring(text)
            while email.lowercased().hasPrefix("mailto:") { email = Substring(ContactText.trim(email.dropFirst(7))) }
            let address = String(email)
            if !address.isEmpty {
                // An address is one address whatever its letters' case (mail is delivered so):
                // kept as first spelled, so a second spelling neither doubles it nor takes
                // another's parameters on the way back from an export.
                let spelled = (card.sets["email"] ?? []).lazy.compactMap(\.stringValue).first { $0.lowercased() == address.lowercased() }
                if spelled == nil { card.insert(.string(address), into: "email") }
                var params = Self.typeAndPref(p)
                // One entry per address: the first line that gives it parameters (the export
                // writes one EMAIL line per address, so a second entry could not come back).
                let known = (card.sets["email_params"] ?? []).contains { $0["email"]?.stringValue?.lowercased() == address.lowercased() }
                if !params.isEmpty && !known {
                    params["email"] = .string(spelled ?? address)
                    card.insert(.object(params), into: "email_params")
                }
            }
        case "LANG": if !text.isEmpty { card.insert(.string(text), into: "lang") }
        case "TZ": if isZoneName(text, valueType: p.valueType) { setOnce("tz", text) }
        case "CATEGORIES":
            for beat in p.components.joined().map({ ContactText.trim($0) }) where !beat.isEmpty {
                card.insert(.string(beat), into: "beats")
            }
        case "NOTE": setOnce("note", text)
        case "UID": if card.uid == nil, !text.isEmpty { card.uid = text }
        case VCardWriter.sourceProperty: if !text.isEmpty { card.fields["source"] = .string(text) }
        case VCardWriter.checkProperty: if !text.isEmpty { card.insert(.string(text), into: "to_check") }
        case "SOURCE": if sourceURI == nil, !text.isEmpty { sourceURI = text }
        default: break  // unknown properties (PHOTO, KEY, ADR, X-…) are not contact fields here: skipped whole
        }
    }

    func finish() -> Result<ContactCard, ImportError> {
        if let error { return .failure(error) }
        var out = card
        if out.fields["source"] == nil, let sourceURI { out.fields["source"] = .string(sourceURI) }
        if out.fields["fn"] == nil, let fn = Self.formattedName(out.fields["n"]) { out.fields["fn"] = .string(fn) }
        if defaultCountryCode == nil {
            PhoneCountry.normalise(&out, code: PhoneCountry.code(explicit: nil, card: out, release: nil, fallback: fallbackCountryCode))
        }
        if out.fields["fn"] == nil {
            // Phone and mail-client exports hold cards with only an address or a number.
            guard let (name, from) = Self.displayName(out) else {
                return .failure(ImportError(file: file, line: line, message: "card has no name (FN or N), e-mail address, phone number or organisation"))
            }
            out.fields["fn"] = .string(name)
            out.guessed.insert("fn")
            out.remarks.append("\(file):\(line): card has no FN or N; named “\(name)” from its \(from)")
        }
        return .success(Self.paramsInAddressOrder(out.normalized()))
    }

    /// An address's parameters may come on a later line than the address (a repeated EMAIL);
    /// the export writes them with the address. Kept in the addresses' order, a card reads back
    /// as it was written.
    static func paramsInAddressOrder(_ card: ContactCard) -> ContactCard {
        guard let params = card.sets["email_params"], params.count > 1, let emails = card.sets["email"] else { return card }
        let order = emails.map { $0.stringValue?.lowercased() ?? "" }
        func rank(_ v: JSONValue) -> Int { order.firstIndex(of: v["email"]?.stringValue?.lowercased() ?? "") ?? order.count }
        var out = card
        out.sets["email_params"] = params.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
        return out
    }

    private mutating func setOnce(_ field: String, _ text: String) {
        if card.fields[field] == nil, !text.isEmpty { card.fields[field] = .string(text) }
    }

    /// family;given;additional;prefix;suffix, each possibly a comma list.
    private mutating func applyName(_ p: ContactProperty) {
        guard card.fields["n"] == nil else { return }
        func part(_ i: Int, _ glue: String) -> String {
            i < p.components.count ? p.components[i].map { ContactText.trim($0) }.filter { !$0.isEmpty }.joined(separator: glue) : ""
        }
        card.fields["n"] = ContactCard.nameParts(family: part(0, " "), given: part(1, " "), additional: part(2, " "),
                                                 prefix: part(3, ", "), suffix: part(4, ", "))
    }

    /// First component is the name; the rest (departments) are the unit.
    private mutating func applyOrg(_ p: ContactProperty) {
        // An unescaped comma is not a list separator in ORG, so put it back.
        let parts = p.components.map { ContactText.trim($0.joined(separator: ",")) }.filter { !$0.isEmpty }
        guard let name = parts.first else { return }
        var org: [String: JSONValue] = ["name": .string(name)]
        if parts.count > 1 { org["unit"] = .string(parts.dropFirst().joined(separator: ", ")) }
        if let lang = p.param("LANGUAGE").map({ ContactText.trim($0) }), !lang.isEmpty { org["lang"] = .string(lang) }
        card.insert(.object(org), into: "org")
    }

    /// Raw text as written (minus `tel:`); E.164 only when the number's country is clear. An
    /// export keeps the written form in a parameter beside the tel: URI.
    private mutating func applyTel(_ p: ContactProperty) {
        var value = ContactText.trim(p.text)
        // Every leading `tel:` (a "tel:tel:" written by hand too), so the raw form never starts
        // with one: written as text, it would read back shorter (found by the vcard fuzz target).
        while value.lowercased().hasPrefix("tel:") { value = ContactText.trim(value.dropFirst(4)) }
        guard !value.isEmpty else { return }
        let e164 = Phone.e164(value, defaultCountryCode: defaultCountryCode)
        // The written form rides beside an E.164 URI only (`VCardWriter`): beside anything else
        // it names no number, and the card would show it while holding another.
        let raw = e164 == nil ? value : p.param(VCardWriter.rawTelParam) ?? value
        var tel = Self.typeAndPref(p)
        tel["raw"] = .string(raw)
        if let e164 { tel["e164"] = .string(e164) }
        card.insert(.object(tel), into: "tel")
    }

    /// TYPE (lower case, "pref" aside) and PREF of a TEL or EMAIL, kept for exports: 4.0's
    /// PREF=n, 3.0's TYPE=pref and 2.1's bare PREF. Values that are not plain words are dropped.
    static func typeAndPref(_ p: ContactProperty) -> [String: JSONValue] {
        var types: [String] = []
        var pref = p.param("PREF").flatMap { Int(ContactText.trim($0)) }.flatMap { (1...100).contains($0) ? $0 : nil }
        for t in (p.params["TYPE"] ?? []).flatMap({ $0.split(separator: ",") }) {
            let w = ContactText.trim(t).lowercased()
            if w == "pref" { pref = pref ?? 1; continue }
            guard (1...40).contains(w.count), w.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }),
                  !types.contains(w), types.count < 10 else { continue }
            types.append(w)
        }
        var out: [String: JSONValue] = [:]
        if !types.isEmpty { out["type"] = .array(types.map { .string($0) }) }
        if let pref { out["pref"] = .int(Int64(pref)) }
        return out
    }

    /// IANA names only: UTC offsets (`-05:00`, `+0100`, `Z`) and URIs say nothing about the zone's rules.
    private func isZoneName(_ text: String, valueType: String?) -> Bool {
        guard !text.isEmpty, valueType != "utc-offset", valueType != "uri" else { return false }
        let offsetChars = Set("+-−0123456789:")
        return !(text == "Z" || text.allSatisfy { offsetChars.contains($0) })
    }

    /// Mailbox names that say nothing about the person.
    static let roleMailboxes: Set<String> = ["info", "post", "press", "presse", "media", "kontakt", "contact", "office", "mail",
                                             "admin", "news", "pressekontakt", "kommunikasjon", "communications", "comms", "noreply"]

    /// A display name for a card without one: a personal address's mailbox ("hakon.orvedal" →
    /// "Hakon Orvedal"), else the organisation, else the address or the number itself.
    static func displayName(_ card: ContactCard) -> (String, String)? {
        let email = card.sets["email"]?.first?.stringValue
        if let email, let at = email.firstIndex(of: "@") {
            let mailbox = email[..<at]
            let words = mailbox.split(whereSeparator: { ".-_+".contains($0) }).filter { !$0.isEmpty && !$0.allSatisfy(\.isNumber) }
            if !roleMailboxes.contains(mailbox.lowercased()), !words.isEmpty, words.allSatisfy({ $0.allSatisfy(\.isLetter) }) {
                return (words.map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(separator: " "), "e-mail address")
            }
        }
        if let org = card.sets["org"]?.first?["name"]?.stringValue { return (org, "organisation") }
        if let email { return (email, "e-mail address") }
        if let raw = card.sets["tel"]?.first?["raw"]?.stringValue { return (raw, "phone number") }
        return nil
    }

    /// given + family, or whatever parts there are.
    static func formattedName(_ n: JSONValue?) -> String? {
        guard let n = n?.objectValue else { return nil }
        let main = ["given", "family"].compactMap { n[$0]?.stringValue }
        let all = ["prefix", "given", "additional", "family", "suffix"].compactMap { n[$0]?.stringValue }
        let fn = (main.isEmpty ? all : main).joined(separator: " ")
        return fn.isEmpty ? nil : fn
    }
}
