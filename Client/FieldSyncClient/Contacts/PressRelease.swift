import Foundation
import FieldSyncCore

/// Reads the contact block of a press release saved as text from a wire-service page. The
/// page's HTML was stripped, so pieces that sat in separate elements arrive glued together:
/// "Sigrun Ødegård ÅsNorwegian Peoples Aid/Norsk Folkehjelp", "Tel:90000000sigrun.as@npaid.example".
public enum PressRelease {
    /// One result per contact (and per line that cannot be read), in file order. "source" is
    /// the release's headline, its first non-empty line.
    /// National numbers take `defaultCountryCode` when given, else the country the contact or the
    /// release names (e-mail domain, organisation, publisher, language), else `fallbackCountryCode`.
    public static func parseContacts(_ text: String, file: String, defaultCountryCode: String?,
                                     fallbackCountryCode: String? = nil) -> [Result<ContactCard, ImportError>] {
        let lines = ContactText.lines(text.precomposedStringWithCanonicalMapping).map { (number: $0.number, text: ContactText.trim($0.text)) }
        let blocks = PressContactBlocks.find(in: lines)
        let source = lines.first { !$0.text.isEmpty }.map { String($0.text.prefix(500)) }
        guard !blocks.isEmpty else {
            // An article signed by its authors: each a name, then a "Title, Organisation" line.
            let bylines = Bylines.read(lines, file: file, source: source)
            guard bylines.isEmpty else { return bylines }
            return [.failure(ImportError(file: file, line: 1,
                                         message: "no Contacts heading found, and no byline (a name, then a “Title, Organisation” line)"))]
        }
        let reader = PressContactReader(file: file, source: source, defaultCountryCode: defaultCountryCode,
                                        releaseCountry: releaseCountry(lines), fallbackCountryCode: fallbackCountryCode)
        var results: [Result<ContactCard, ImportError>] = []
        for block in blocks {
            if block.lines.isEmpty {
                results.append(.failure(ImportError(file: file, line: block.heading, message: "no contacts under the Contacts heading")))
            } else {
                results += reader.read(block.lines)
            }
        }
        return results
    }
}

extension PressRelease {
    /// Lines that name the release's publisher: "About Norsk Folkehjelp", "Subscribe to releases
    /// from …", the "date | organisation | Press release" line under the headline.
    static let publisherPrefixes = ["about ", "om ", "subscribe", "latest releases", "more releases", "abonner", "prenumerera",
                                    "tilaa", "siste pressemeldinger", "senaste pressmeddelanden", "uusimmat"]

    /// The publisher's country, else the country of the release's language (body text, not the
    /// places it reports on: "Ukraina" in a Swedish release says nothing of its numbers).
    static func releaseCountry(_ lines: [(number: Int, text: String)]) -> String? {
        var named: Set<String> = []
        for (i, line) in lines.enumerated() {
            let key = line.text.lowercased()
            guard publisherPrefixes.contains(where: { key.hasPrefix($0) }) || (i < 5 && line.text.contains(" | ")) else { continue }
            if let c = PhoneCountry.fromOrganisation(line.text) { named.insert(c) }
        }
        if named.count == 1 { return named.first }
        return PhoneCountry.fromLanguage(lines.map(\.text).joined(separator: " "))
    }
}

// MARK: - Bylines

/// The authors of an analysis or opinion piece, listed under it (or under its headline):
///
///     Anna Jensen
///     Secretary General, Danish Red Cross Society
///
/// The article's title (its first line) is each contact's source.
enum Bylines {
    static let byPrefixes = ["by ", "av ", "af ", "written by ", "автор ", "автори "]

    static func read(_ lines: [(number: Int, text: String)], file: String, source: String?) -> [Result<ContactCard, ImportError>] {
        let filled = lines.filter { !$0.text.isEmpty }
        var out: [Result<ContactCard, ImportError>] = []
        var i = 1  // the first line is the title
        while i + 1 < filled.count {
            guard let name = self.name(filled[i].text), let (title, org) = titleAndOrganisation(filled[i + 1].text) else {
                i += 1
                continue
            }
            var card = ContactCard(line: filled[i].number)
            card.fields["fn"] = .string(name)
            let words = name.split(separator: " ").map(String.init)
            card.fields["n"] = ContactCard.nameParts(family: words.last ?? "", given: words.dropLast().joined(separator: " "))
            card.fields["title"] = .string(title)
            card.insert(.object(["name": .string(org)]), into: "org")
            if let source { card.fields["source"] = .string(source) }
            card.guessed = ["n", "source"]
            out.append(.success(card.normalized()))
            i += 2
        }
        return out
    }

    /// "Anna Jensen", "By Anna Jensen": two to five capitalised words.
    static func name(_ line: String) -> String? {
        var text = Substring(line)
        if let p = byPrefixes.first(where: { line.lowercased().hasPrefix($0) }) { text = text.dropFirst(p.count) }
        let name = ContactText.trim(text)
        guard name.count <= 100, PressContactLine.readsLikeName(name) else { return nil }
        return name.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    /// "Secretary General, Danish Red Cross Society": the title reads like one, the organisation
    /// (after the last comma) starts with a capital.
    static func titleAndOrganisation(_ line: String) -> (String, String)? {
        guard line.count <= 200, let comma = line.lastIndex(of: ",") else { return nil }
        let title = ContactText.trim(line[..<comma])
        let org = ContactText.trim(line[line.index(after: comma)...])
        guard !title.isEmpty, !org.isEmpty, org.first?.isUppercase == true, !line.contains(where: \.isNumber),
              !title.hasSuffix("."), PressContactLine.readsLikeTitle(title),
              PressContactLine.titleWords.contains(where: { title.lowercased().contains($0) }) else { return nil }
        return (title, org)
    }
}

// MARK: - Finding the block

/// A "Contacts" heading and the non-empty lines under it.
struct PressContactBlock {
    let heading: Int
    var lines: [(number: Int, text: String)] = []
}

enum PressContactBlocks {
    static let contactHeadings: Set<String> = [
        "contacts", "contact", "press contacts", "press contact", "media contacts", "media contact",
        "kontakter", "kontakt", "pressekontakter", "pressekontakt", "presskontakter", "presskontakt",
        "mediekontakter", "mediekontakt", "yhteystiedot", "yhteyshenkilöt",
        "контакти", "контакти для змі", "контакти для преси", "для змі", "контакти для медіа",
    ]
    /// Headings that close the block: the sections wire-service pages put after it.
    static let endHeadings: Set<String> = [
        "images", "image", "keywords", "documents", "links", "videos", "attachments", "quotes", "tags", "downloads",
        "bilder", "nøkkelord", "nyckelord", "dokumenter", "dokument", "lenker", "länkar", "vedlegg", "bilagor",
        "kuvat", "avainsanat", "liitteet", "linkit", "asiasanat",
        "зображення", "фото", "документи", "ключові слова", "теги", "посилання",
    ]
    static let endPrefixes = [
        "about ", "subscribe", "latest releases", "latest news", "more releases", "read more", "related",
        "abonner", "prenumerera", "siste pressemeldinger", "senaste pressmeddelanden", "tilaa", "uusimmat",
    ]

    static func find(in lines: [(number: Int, text: String)]) -> [PressContactBlock] {
        var blocks: [PressContactBlock] = []
        var current: PressContactBlock?
        for line in lines {
            if isContactHeading(line.text) {
                if let done = current { blocks.append(done) }
                current = PressContactBlock(heading: line.number)
            } else if var block = current {
                if isEndHeading(line.text) {
                    blocks.append(block)
                    current = nil
                } else if !line.text.isEmpty {
                    block.lines.append(line)
                    current = block
                    // "…@npaid.orgImages": the next heading is glued to the last address.
                    if case .details(let d) = PressContactLine.classify(line.text), d.endsBlock {
                        blocks.append(block)
                        current = nil
                    }
                }
            }
        }
        if let done = current { blocks.append(done) }
        return blocks
    }

    static func key(_ line: String) -> String {
        var k = line.lowercased()
        while k.hasSuffix(":") { k.removeLast() }
        return k.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    static func isContactHeading(_ line: String) -> Bool { contactHeadings.contains(key(line)) }

    static func isEndHeading(_ line: String) -> Bool {
        let k = key(line)
        if endHeadings.contains(k) || endPrefixes.contains(where: { k.hasPrefix($0) }) { return true }
        // "Om …" (About) is also a given name; a glued "Om PrakashRed Cross" is a contact line.
        return k.hasPrefix("om ") && PressContactLine.splitNameOrg(line) == nil
    }
}

// MARK: - Reading contacts

/// One contact while its lines are read.
struct PressContactDraft {
    let line: Int
    let name: String
    let orgs: [String]
    var title: String?
    var phones: [String] = []
    var emails: [String] = []
    /// What a person should look at: text kept raw rather than read wrongly.
    var toCheck: [String] = []
    var error: ImportError?

    var hasDetails: Bool { !phones.isEmpty || !emails.isEmpty || !toCheck.isEmpty }
}

struct PressContactReader {
    let file: String
    let source: String?
    let defaultCountryCode: String?
    let releaseCountry: String?
    let fallbackCountryCode: String?

    /// A name(+org) line starts a contact; phone/e-mail lines and a title line belong to the
    /// contact above them.
    func read(_ lines: [(number: Int, text: String)]) -> [Result<ContactCard, ImportError>] {
        var drafts: [PressContactDraft] = []
        var strays: [ImportError] = []
        func take(_ text: String, _ number: Int) {
            if let last = drafts.last, PressContactLine.isTitle(text, after: last) {
                drafts[drafts.count - 1].title = text
            } else {
                drafts.append(PressContactLine.newDraft(text, line: number))
            }
        }
        for (number, text) in lines {
            switch PressContactLine.classify(text) {
            case .details(let d):
                guard !drafts.isEmpty else {
                    strays.append(error(number, "phone or e-mail before any name: “\(text)”"))
                    continue
                }
                drafts[drafts.count - 1].phones += d.phones
                drafts[drafts.count - 1].emails += d.emails
                drafts[drafts.count - 1].toCheck += d.unclear.map {
                    "\(file):\(number): cannot tell where the e-mail address ends in “\($0)” (kept as written, not stored as an address)"
                }
                // Text glued after an address (the next contact's name) is read as its own line.
                if let rest = d.leftover { take(rest, number) }
            case .invalid(let message):
                guard !drafts.isEmpty else { strays.append(error(number, message)); continue }
                if drafts[drafts.count - 1].error == nil { drafts[drafts.count - 1].error = error(number, message) }
            case .text:
                take(text, number)
            }
        }
        let results: [(Int, Result<ContactCard, ImportError>)] =
            drafts.map { ($0.line, card(from: $0)) } + strays.map { ($0.line, .failure($0)) }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }

    func card(from d: PressContactDraft) -> Result<ContactCard, ImportError> {
        if let e = d.error { return .failure(e) }
        guard d.hasDetails else {
            return .failure(error(d.line, "contact “\(d.name)” has no phone number or e-mail address under it"))
        }
        var card = ContactCard(line: d.line)
        card.fields["fn"] = .string(d.name)
        let words = d.name.split(separator: " ").map(String.init)
        card.fields["n"] = ContactCard.nameParts(family: words.last ?? "", given: words.dropLast().joined(separator: " "))
        if let title = d.title { card.fields["title"] = .string(title) }
        if let source { card.fields["source"] = .string(source) }
        // The name's split is a guess, and the first release a person came from stays the source.
        card.guessed = ["n", "source"]
        for org in d.orgs { card.insert(.object(["name": .string(org)]), into: "org") }
        for raw in d.phones {
            var tel: [String: JSONValue] = ["raw": .string(raw)]
            if let e164 = Phone.e164(raw, defaultCountryCode: nil) { tel["e164"] = .string(e164) }
            card.insert(.object(tel), into: "tel")
        }
        for email in d.emails { card.insert(.string(email), into: "email") }
        PhoneCountry.normalise(&card, code: PhoneCountry.code(explicit: defaultCountryCode, card: card, release: releaseCountry,
                                                              fallback: fallbackCountryCode))
        for text in d.toCheck { card.insert(.string(String(text.prefix(500))), into: "to_check") }
        return .success(card.normalized())
    }

    func error(_ line: Int, _ message: String) -> ImportError {
        ImportError(file: file, line: line, message: message)
    }
}

// MARK: - One line of the block

/// The numbers and addresses of one line.
struct PressDetails {
    var phones: [String] = []
    var emails: [String] = []
    /// Address-like text whose end cannot be told: kept raw for a person to check.
    var unclear: [String] = []
    /// Text glued after the last address that is not a heading (the next contact's name).
    var leftover: String?
    /// A pressroom heading was glued after the last address: the contact block ends here.
    var endsBlock = false
}

enum PressContactLine {
    case details(PressDetails)
    case text
    case invalid(String)

    static let phoneLabels = ["telephone", "telefon", "phone", "mobile", "mobil", "mob", "tel", "tlf", "cell", "gsm",
                              "puhelin", "puh", "телефон", "тел", "моб"]
    static let emailLabels = ["e-mail", "email", "e-post", "epost", "mail", "sähköposti", "s-posti"]
    /// Between two numbers or a number and an address: "Tel: 22 00 00 00 / Mob: 900 00 000".
    static let separators = Set(" \t/,;|·•–—")
    /// Surname prefixes whose capital is not an organisation's start: "McDonald", "DeLuca".
    static let namePrefixes: Set<String> = ["Mc", "Mac", "De", "Di", "Da", "Du", "Le", "La", "Van", "Von", "Fitz"]
    /// Lower-case words that belong to names, not titles.
    static let nameParticles: Set<String> = ["van", "von", "der", "den", "de", "da", "di", "du", "la", "le", "af", "av",
                                             "al", "el", "bin", "ibn", "zu", "ten", "ter", "del", "della", "dos", "das", "y"]
    static let titleWords = ["officer", "manager", "director", "direktør", "direktor", "head", "chief", "adviser", "advisor",
                             "rådgiv", "spokes", "talsperson", "talesperson", "press", "kommunik", "communicat", "media",
                             "coordinator", "koordinator", "secretary", "sekretær", "sekreterare", "president", "leader",
                             "leder", "ledare", "sjef", "chef", "päällikkö", "johtaja", "viestintä", "tiedottaja",
                             "asiantuntija", "specialist", "representative", "ceo"]

    static func classify(_ line: String) -> PressContactLine {
        if dropLabel(Substring(line), phoneLabels) != nil || dropLabel(Substring(line), emailLabels) != nil
            || line.contains("@") || line.first.map(startsPhone) == true {
            return details(line)
        }
        return .text
    }

    /// Labels, numbers and addresses in any order; anything else makes the line unreadable.
    static func details(_ line: String) -> PressContactLine {
        var d = PressDetails()
        var rest = Substring(line)
        while let c = rest.first, separators.contains(c) { rest.removeFirst() }
        reading: while !rest.isEmpty {
            if let after = dropLabel(rest, phoneLabels) ?? dropLabel(rest, emailLabels) {
                rest = after
            } else if case let (phone, after)? = takePhone(rest) {
                d.phones.append(phone)
                rest = after
            } else if case let (email, after)? = takeEmail(rest) {
                switch email {
                case .address(let address):
                    d.emails.append(address)
                    rest = after
                case .glued(let address, let tail):
                    d.emails.append(address)
                    if GluedAddress.isHeading(tail) {
                        d.endsBlock = true  // what follows belongs to the page's next section
                    } else {
                        let leftover = ContactText.trim(tail + after)
                        if !leftover.isEmpty { d.leftover = leftover }
                    }
                    break reading
                case .doubtful(let raw):
                    d.unclear.append(raw)
                    rest = after
                }
            } else if !(d.phones.isEmpty && d.emails.isEmpty), GluedAddress.isHeading(String(rest.prefix(40))) {
                d.endsBlock = true  // "Tel: 913 37 001Documents": the next heading, glued to a number
                break reading
            } else if !(d.phones.isEmpty && d.emails.isEmpty), rest.first?.isUppercase == true, splitNameOrg(String(rest)) != nil || PressContactLine.readsLikeName(String(rest)) {
                d.leftover = ContactText.trim(rest)  // "Tel: 95045667Kari Lunde": the next contact
                break reading
            } else {
                return .invalid("cannot read “\(rest)” as a phone number or e-mail address in “\(line)”")
            }
            while let c = rest.first, separators.contains(c) { rest.removeFirst() }
        }
        if d.phones.isEmpty && d.emails.isEmpty && d.unclear.isEmpty { return .invalid("no phone number or e-mail address in “\(line)”") }
        return .details(d)
    }

    /// "Tel:", "Tel.:", "Tlf", "E-mail:" …: the label, then dots, colons and spaces.
    static func dropLabel(_ s: Substring, _ labels: [String]) -> Substring? {
        let lower = s.lowercased()
        for label in labels where lower.hasPrefix(label) {
            var rest = s.dropFirst(label.count)
            // "Telford" is a name, not "Tel" + "ford".
            guard let next = rest.first, next == "." || next == ":" || next.isWhitespace || startsPhone(next) else { continue }
            while let c = rest.first, c == "." || c == ":" || c.isWhitespace { rest.removeFirst() }
            return rest
        }
        return nil
    }

    static func startsPhone(_ c: Character) -> Bool { c == "+" || c == "(" || (c.isASCII && c.isNumber) }

    /// The longest run of phone characters: "+", digits, spaces, parentheses, dashes, and dots
    /// between digits. The address glued after it is whatever follows.
    static func takePhone(_ s: Substring) -> (String, Substring)? {
        guard let first = s.first, startsPhone(first) else { return nil }
        let chars = Array(s)
        var end = 0
        while end < chars.count {
            let c = chars[end]
            let isDigit = c.isASCII && c.isNumber
            let dotBetweenDigits = c == "." && end > 0 && chars[end - 1].isASCII && chars[end - 1].isNumber
                && end + 1 < chars.count && chars[end + 1].isASCII && chars[end + 1].isNumber
            guard isDigit || (c == "+" && end == 0) || c == " " || c == "(" || c == ")" || c == "-" || dotBetweenDigits else { break }
            end += 1
        }
        // Closing parentheses stay only when they close something; trailing spaces and dashes go.
        while end > 0, " -(".contains(chars[end - 1]) { end -= 1 }
        let phone = String(chars[..<end])
        guard phone.filter({ $0.isASCII && $0.isNumber }).count >= 3 else { return nil }
        return (phone, s.dropFirst(end))
    }

    /// An address up to the next space or separator, and no further than its domain goes.
    static func takeEmail(_ s: Substring) -> (GluedAddress.Reading, Substring)? {
        var rest = s
        if rest.lowercased().hasPrefix("mailto:") { rest = rest.dropFirst(7) }
        let end = rest.firstIndex { $0.isWhitespace || separators.contains($0) || "<>()".contains($0) } ?? rest.endIndex
        var email = String(rest[..<end])
        while let last = email.last, ".:".contains(last) { email.removeLast() }
        guard isEmail(email), let reading = GluedAddress.read(email) else { return nil }
        return (reading, rest[end...])
    }

    static func isEmail(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !parts[1].hasPrefix("."), !parts[1].hasSuffix(".") else { return false }
        return !s.contains { $0.isWhitespace || $0 == "\"" }
    }

    // MARK: names, organisations and titles

    /// Splits at the first lower→upper boundary with no space ("Ås|Norwegian"); a hyphen or a
    /// surname prefix ("McDonald") is not a boundary. Nil when there is none.
    static func splitNameOrg(_ line: String) -> (name: String, org: String)? {
        let chars = Array(line)
        var wordStart = 0
        for i in chars.indices.dropFirst() {
            if chars[i - 1].isWhitespace || chars[i - 1] == "-" { wordStart = i }
            guard chars[i - 1].isLowercase, chars[i].isUppercase else { continue }
            if namePrefixes.contains(String(chars[wordStart..<i])) { continue }
            let name = ContactText.trim(String(chars[..<i]))
            let org = ContactText.trim(String(chars[i...]))
            return name.isEmpty || org.isEmpty ? nil : (name, org)
        }
        return nil
    }

    static func newDraft(_ line: String, line number: Int) -> PressContactDraft {
        let collapse = { (s: String) in s.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        guard case let (name, org)? = splitNameOrg(line) else {
            return PressContactDraft(line: number, name: collapse(line), orgs: [])
        }
        // "Norwegian Peoples Aid/Norsk Folkehjelp": one organisation named in two languages.
        let orgs = org.split(separator: "/").map { collapse(ContactText.trim($0)) }.filter { !$0.isEmpty }
        return PressContactDraft(line: number, name: collapse(name), orgs: orgs)
    }

    /// A line without a glued organisation is the contact's title when it reads like one, or
    /// when it comes between the name and the numbers and does not read like a name.
    static func isTitle(_ line: String, after draft: PressContactDraft) -> Bool {
        guard draft.title == nil, splitNameOrg(line) == nil else { return false }
        return readsLikeTitle(line) || (!draft.hasDetails && !readsLikeName(line))
    }

    static func readsLikeTitle(_ line: String) -> Bool {
        let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
        let lowerWord = words.contains { w in (w.first?.isLowercase ?? false) && !nameParticles.contains(w) }
        let titleWord = words.contains { w in
            let lw = w.lowercased()
            return titleWords.contains { lw.hasPrefix($0) }
        }
        return lowerWord || titleWord
    }

    /// Two to five capitalised words (particles aside), no digits.
    static func readsLikeName(_ line: String) -> Bool {
        let words = line.split(whereSeparator: \.isWhitespace)
        guard (2...5).contains(words.count), !line.contains(where: \.isNumber) else { return false }
        return words.allSatisfy { w in (w.first?.isUppercase ?? false) || nameParticles.contains(String(w)) }
    }
}

// MARK: - Where a glued address ends

/// A wire-service page stripped of its HTML glues the element after an e-mail address to it:
/// "hakono@npaid.orgImages". The address ends where its domain's top-level label ends, told by
/// the public suffix list together with the page's next heading or a lower→upper case change;
/// when neither tells, the text is kept as written for a person to check.
enum GluedAddress {
    enum Reading: Equatable {
        /// The whole text is the address.
        case address(String)
        /// The address, then text glued to it.
        case glued(address: String, tail: String)
        /// Looks like an address, but where it ends cannot be told.
        case doubtful(String)
    }

    /// The first words of the headings that follow a contact block on pressroom pages.
    static let headingWords: [String] = {
        var words = Set(PressContactBlocks.endHeadings)
        for p in PressContactBlocks.endPrefixes { if let w = p.split(separator: " ").first { words.insert(String(w)) } }
        for h in PressContactBlocks.contactHeadings { if let w = h.split(separator: " ").first { words.insert(String(w)) } }
        words.formUnion(["photos", "photo", "media", "share", "follow", "contacts", "more", "news", "pressemeldinger", "om"])
        return words.sorted { $0.count > $1.count }
    }()

    /// Whether glued text starts with a pressroom heading ("Images", "Subscribe", "Documents"…).
    static func isHeading(_ tail: String) -> Bool {
        let lower = tail.lowercased()
        return headingWords.contains { lower.hasPrefix($0) }
    }

    /// Reads one address-shaped token (one "@", a dotted domain); nil when it has no such shape.
    static func read(_ token: String, suffixes: PublicSuffixList = .shared) -> Reading? {
        let parts = token.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, let dot = parts[1].lastIndex(of: ".") else { return nil }
        let domain = parts[1]
        let head = domain[..<dot]
        let last = Array(domain[domain.index(after: dot)...])
        guard !head.isEmpty, !last.isEmpty else { return nil }
        // A DNS label is at most 63 octets: anything much longer is not one glued label.
        guard last.count <= 120 else { return .doubtful(token) }
        func isTopLevel(_ k: Int) -> Bool { suffixes.isTopLevel(String(last[..<k])) }
        let boundary = (1..<last.count).first { last[$0 - 1].isLowercase && last[$0].isUppercase }
        if boundary == nil, isTopLevel(last.count) { return .address(token) }
        var cuts: Set<Int> = []
        if let b = boundary, isTopLevel(b) { cuts.insert(b) }
        for k in 1..<last.count where isTopLevel(k) && isHeading(String(last[k...])) { cuts.insert(k) }
        guard cuts.count == 1, let k = cuts.first else { return .doubtful(token) }
        return .glued(address: "\(parts[0])@\(head).\(String(last[..<k]))", tail: String(last[k...]))
    }
}
