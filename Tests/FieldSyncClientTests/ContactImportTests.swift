import Foundation
import Testing
@testable import FieldSyncClient
import FieldSyncCore

/// Sample files: the shared samples sit beside the repository (CI clones shared/ next to it),
/// the fixtures beside this file.
private enum ContactFiles {
    static let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()

    static func sample(_ name: String) throws -> String {
        try String(contentsOf: here.appendingPathComponent("../../../shared/samples/\(name)"), encoding: .utf8)
    }

    static func fixture(_ name: String) throws -> String {
        try String(contentsOf: here.appendingPathComponent("Fixtures/\(name)"), encoding: .utf8)
    }
}

// MARK: - Helpers

private func js(_ text: String) -> JSONValue { .string(text) }

private func orgEntry(_ name: String, lang: String? = nil, unit: String? = nil) -> JSONValue {
    var o: [String: JSONValue] = ["name": js(name)]
    if let lang { o["lang"] = js(lang) }
    if let unit { o["unit"] = js(unit) }
    return .object(o)
}

private func telEntry(_ raw: String, _ e164: String? = nil, type: [String] = [], pref: Int64? = nil) -> JSONValue {
    var o: [String: JSONValue] = ["raw": js(raw)]
    if let e164 { o["e164"] = js(e164) }
    if !type.isEmpty { o["type"] = .array(type.map(js)) }
    if let pref { o["pref"] = .int(pref) }
    return .object(o)
}

private func nameParts(family: String, given: String, additional: String? = nil) -> JSONValue {
    var o: [String: JSONValue] = ["family": js(family), "given": js(given)]
    if let additional { o["additional"] = js(additional) }
    return .object(o)
}

private func cardsIn(_ results: [Result<ContactCard, ImportError>]) -> [ContactCard] {
    results.compactMap { try? $0.get() }
}

private func errorsIn(_ results: [Result<ContactCard, ImportError>]) -> [ImportError] {
    results.compactMap { if case .failure(let e) = $0 { e } else { nil } }
}

/// Equal as data: fields and sets, whatever line the card was read from.
private func sameContactContent(_ a: [ContactCard], _ b: [ContactCard]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.fields == $1.fields && $0.sets == $1.sets }
}

// MARK: - vCard

@Suite struct VCardImportTests {
    @Test func sampleCards() throws {
        let results = VCard.parse(try ContactFiles.sample("contacts.vcf"), file: "contacts.vcf", defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty)
        let c = cardsIn(results)
        try #require(c.count == 3)

        let sigrun = c[0]
        #expect(sigrun.line == 1)
        #expect(sigrun.uid == "urn:uuid:0198f2a1-7c3e-7b2a-9d41-3f5e8c2b1a07")
        #expect(sigrun.fields["fn"] == js("Sigrun Ødegård Ås"))
        #expect(sigrun.fields["n"] == nameParts(family: "Ås", given: "Sigrun", additional: "Ødegård"))
        #expect(sigrun.sets["org"] == [orgEntry("Norsk Folkehjelp", lang: "nb"), orgEntry("Norwegian People's Aid", lang: "en")])
        #expect(sigrun.fields["title"] == js("Press officer"))
        #expect(sigrun.sets["tel"] == [telEntry("+4790000000", "+4790000000", type: ["work", "cell"], pref: 1)])
        #expect(sigrun.sets["email"] == [js("sigrun.as@npaid.example")])
        #expect(sigrun.sets["email_params"] == [.object(["email": js("sigrun.as@npaid.example"), "type": .array([js("work")])])])
        #expect(sigrun.sets["lang"] == [js("nb"), js("en")])
        #expect(sigrun.fields["tz"] == js("Europe/Oslo"))
        #expect(sigrun.sets["beats"] == [js("landmines"), js("APMBC")])
        #expect(sigrun.fields["note"] == js("Prefers calls before 16:00 Oslo time."))

        let aino = c[1]
        #expect(aino.line == 17)
        #expect(aino.fields["fn"] == js("Aino Rämö-Lindqvist"))
        #expect(aino.fields["title"] == js("Viestintäpäällikkö"))
        #expect(aino.sets["org"] == [orgEntry("Suomen Punainen Risti")])
        #expect(aino.sets["tel"] == [telEntry("+358 40 000 0000", "+358400000000", type: ["work", "voice"])])
        #expect(aino.sets["email"] == [js("aino.ramo@redcross.example")])

        let olena = c[2]
        #expect(olena.fields["fn"] == js("Олена Мельник"))
        #expect(olena.fields["n"] == nameParts(family: "Мельник", given: "Олена"))
        #expect(olena.sets["org"] == [orgEntry("Ukrainian Mine Action Centre")])
        #expect(olena.sets["tel"] == [telEntry("+380440000001", "+380440000001")])
        #expect(olena.sets["lang"] == [js("uk")])
    }

    @Test func namesComeOutNFC() {
        let decomposed = "Sigrun Ødegård Ås".decomposedStringWithCanonicalMapping
        // A fold that lands between "a" and its combining ring must still join to "å".
        let text = "BEGIN:VCARD\nVERSION:4.0\nFN:\(decomposed)\nN:Ødega\n \u{30A}rd;Sigrun;;;\nEND:VCARD\n"
        let card = cardsIn(VCard.parse(text, file: "nfd.vcf", defaultCountryCode: nil)).first
        #expect(card?.fields["fn"] == js("Sigrun Ødegård Ås"))
        #expect(card?.fields["fn"]?.stringValue?.unicodeScalars.count == 17)
        #expect(card?.fields["n"] == nameParts(family: "Ødegård", given: "Sigrun"))
    }

    @Test func foldedLinesGroupsAndEscapes() throws {
        let text = """
        BEGIN:VCARD\r
        VERSION:3.0\r
        N:Petrenko;Mykola;;;\r
        item1.EMAIL;TYPE=INTERNET:m.petrenko@\r
         dpu.example\r
        NOTE:Line one\\nline two\\, with comma\\; and semicolon \\\\ backslash and a lo\r
        \tng word\r
        ORG:Demining Partners\\, Ukraine;Survey;Mapping\r
        CATEGORIES:eore,survey\\,nts,  eore\r
        TZ:-05:00\r
        END:VCARD\r

        """
        let card = try #require(cardsIn(VCard.parse(text, file: "folded.vcf", defaultCountryCode: nil)).first)
        #expect(card.fields["fn"] == js("Mykola Petrenko"), "FN is built from N when missing")
        #expect(card.sets["email"] == [js("m.petrenko@dpu.example")])
        #expect(card.fields["note"] == js("Line one\nline two, with comma; and semicolon \\ backslash and a long word"))
        #expect(card.sets["org"] == [orgEntry("Demining Partners, Ukraine", unit: "Survey, Mapping")])
        #expect(card.sets["beats"] == [js("eore"), js("survey,nts")])
        #expect(card.fields["tz"] == nil, "a UTC offset is not a zone")
    }

    @Test func quotedPrintable() throws {
        let text = "BEGIN:VCARD\r\nVERSION:2.1\r\n"
            + "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=D0=9C=D0=B5=D0=BB=D1=8C=D0=BD=D0=B8=D0=BA;=D0=9E=D0=BB=D0=B5=\r\n=D0=BD=D0=B0;;;\r\n"
            + "FN;CHARSET=UTF-8;QUOTED-PRINTABLE:=C3=98deg=C3=A5rd =C3=85s\r\n"
            + "TEL;WORK;VOICE:+47 900 00 000\r\n"
            + "TITLE;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:R=E5dgiver\r\n"
            + "END:VCARD\r\n"
        let card = try #require(cardsIn(VCard.parse(text, file: "qp.vcf", defaultCountryCode: nil)).first)
        #expect(card.fields["n"] == nameParts(family: "Мельник", given: "Олена"))
        #expect(card.fields["fn"] == js("Ødegård Ås"))
        #expect(card.fields["title"] == js("Rådgiver"))
        #expect(card.sets["tel"] == [telEntry("+47 900 00 000", "+4790000000", type: ["work", "voice"])], "2.1's bare parameters are TYPEs")
    }

    @Test func nationalNumbersNeedACountryCode() throws {
        let text = "BEGIN:VCARD\nVERSION:3.0\nFN:Kari Nordmann\nTEL:900 00 000\nEND:VCARD\n"
        let without = try #require(cardsIn(VCard.parse(text, file: "k.vcf", defaultCountryCode: nil)).first)
        let with = try #require(cardsIn(VCard.parse(text, file: "k.vcf", defaultCountryCode: "47")).first)
        #expect(without.sets["tel"] == [telEntry("900 00 000")])
        #expect(with.sets["tel"] == [telEntry("900 00 000", "+4790000000")])
    }

    @Test func badCardsNameTheirLines() throws {
        let text = """
        BEGIN:VCARD
        VERSION:5.0
        FN:Future Person
        END:VCARD
        BEGIN:VCARD
        VERSION:4.0
        FN:No End
        BEGIN:VCARD
        VERSION:4.0
        N:Bondarenko;Iryna;;;
        END:VCARD
        BEGIN:VCARD
        VERSION:4.0
        EMAIL:nobody@example.org
        END:VCARD
        END:VCARD
        BEGIN:VCARD
        VERSION:4.0
        FN:Last
        this line has no colon
        END:VCARD
        BEGIN:VCARD
        VERSION:3.0
        FN:Unclosed
        """
        let results = VCard.parse(text.replacingOccurrences(of: "EMAIL:nobody@example.org", with: "NOTE:nothing else"),
                                  file: "bad.vcf", defaultCountryCode: nil)
        try #require(results.count == 7)
        let e = errorsIn(results)
        #expect(e.map(\.line) == [2, 5, 12, 16, 20, 22])
        #expect(e[0].message.contains("VERSION 5.0"))
        #expect(e[1].message.contains("no END:VCARD"))
        #expect(e[2].message == "card has no name (FN or N), e-mail address, phone number or organisation")
        #expect(e[3].message.contains("END:VCARD without BEGIN:VCARD"))
        #expect(e[5].description == "bad.vcf:22: card has no END:VCARD")
        // The card after the unclosed one still reads, so a caller may skip the bad ones.
        #expect(cardsIn(results).map { $0.fields["fn"] } == [js("Iryna Bondarenko")])
        // A card with an address and no name is a phone export's card, not a broken one.
        let named = cardsIn(VCard.parse(text, file: "bad.vcf", defaultCountryCode: nil))
        #expect(named.map { $0.fields["fn"] } == [js("Iryna Bondarenko"), js("Nobody")])
    }
}

// MARK: - Press releases

@Suite struct PressReleaseImportTests {
    static let headline = "Landmine clearance resumes in Kharkiv oblast after winter pause"

    @Test(arguments: [nil, "47"] as [String?])
    func sampleRelease(defaultCountryCode: String?) throws {
        let results = PressRelease.parseContacts(try ContactFiles.sample("press-release-sample.txt"), file: "pr.txt",
                                                 defaultCountryCode: defaultCountryCode)
        #expect(errorsIn(results).isEmpty)
        let c = cardsIn(results)
        try #require(c.count == 2)

        #expect(c[0].line == 6)
        #expect(c[0].fields["fn"] == js("Sigrun Ødegård Ås"))
        #expect(c[0].fields["n"] == nameParts(family: "Ås", given: "Sigrun Ødegård"))
        #expect(c[0].sets["org"] == [orgEntry("Norwegian Peoples Aid"), orgEntry("Norsk Folkehjelp")])
        // Without a country code, the organisation (Norwegian Peoples Aid/Norsk Folkehjelp) says Norway.
        #expect(c[0].sets["tel"] == [telEntry("90000000", "+4790000000")])
        #expect(c[0].sets["email"] == [js("sigrun.as@npaid.example")])
        #expect(c[0].fields["source"] == js(Self.headline))

        #expect(c[1].fields["fn"] == js("Mykola Shevchuk-Petrenko"))
        #expect(c[1].fields["n"] == nameParts(family: "Shevchuk-Petrenko", given: "Mykola"))
        #expect(c[1].sets["org"] == [orgEntry("Demining Partners Ukraine")])
        #expect(c[1].sets["tel"] == [telEntry("+380 44 000 0000", "+380440000000")])
        #expect(c[1].sets["email"] == [js("m.shevchuk@dpu.example")])
        #expect(c[1].fields["source"] == js(Self.headline))
    }

    @Test func swedishReleaseWithKontakter() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("press-release-kontakter-sv.txt"), file: "sv.txt",
                                                 defaultCountryCode: "358")
        #expect(errorsIn(results).isEmpty)
        let c = cardsIn(results)
        try #require(c.count == 2)
        #expect(c[0].fields["fn"] == js("Aino Rämö-Lindqvist"))
        #expect(c[0].sets["org"] == [orgEntry("Suomen Punainen Risti"), orgEntry("Finlands Röda Kors")])
        #expect(c[0].fields["title"] == js("Kommunikationschef"))
        #expect(c[0].sets["tel"] == [telEntry("+358 40 000 0000", "+358400000000"), telEntry("040 000 0001", "+358400000001")])
        #expect(c[0].sets["email"] == [js("aino.ramo@redcross.example")])
        // Only an e-mail address, and no organisation glued to the name.
        #expect(c[1].fields["fn"] == js("Jukka Mäkelä"))
        #expect(c[1].fields["n"] == nameParts(family: "Mäkelä", given: "Jukka"))
        #expect(c[1].sets["org"] == nil)
        #expect(c[1].sets["tel"] == nil)
        #expect(c[1].sets["email"] == [js("jukka.makela@redcross.example")])
        #expect(c[1].fields["source"] == js("Finlands Röda Kors utbildar minröjare i Ukraina"))
    }

    @Test func englishReleaseWithMediaContacts() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("press-release-media-contacts-en.txt"), file: "en.txt",
                                                 defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty)
        let c = cardsIn(results)
        try #require(c.count == 3)
        #expect(c[0].fields["fn"] == js("Ewan McDonald"), "Mc is a surname prefix, not the organisation's start")
        #expect(c[0].sets["org"] == [orgEntry("Scottish Mine Action Trust")])
        #expect(c[0].fields["title"] == js("Head of Communications"))
        #expect(c[0].sets["tel"] == [telEntry("+44 20 7946 0000", "+442079460000"), telEntry("+44 7700 900000", "+447700900000")])
        #expect(c[0].sets["email"] == [js("ewan.mcdonald@smat.example")])
        #expect(c[1].fields["fn"] == js("Kari Nordmann"))
        #expect(c[1].sets["org"] == nil)
        #expect(c[1].sets["tel"] == [telEntry("22 00 00 00")])
        #expect(c[1].sets["email"] == [js("kari.nordmann@frilans.example")])
        #expect(c[2].fields["fn"] == js("Олена Мельник"))
        #expect(c[2].sets["org"] == [orgEntry("Ukrainian Mine Action Centre")])
        #expect(c[2].sets["tel"] == [telEntry("+380 44 000 0001", "+380440000001")])
    }

    @Test func noContactsHeading() {
        let results = PressRelease.parseContacts("Headline\nBody text.\n", file: "n.txt", defaultCountryCode: nil)
        #expect(errorsIn(results).map(\.message) == ["no Contacts heading found, and no byline (a name, then a “Title, Organisation” line)"])
    }

    @Test func unreadableLinesAreErrors() {
        let text = "Headline\nKontakt\nTel:900 00 000\nKari NordmannNPA\nTel: ask the switchboard\nPer Hansen\nPress officer\nAbout us\n"
        let results = PressRelease.parseContacts(text, file: "b.txt", defaultCountryCode: nil)
        #expect(results.count == 3)
        #expect(errorsIn(results).map(\.line) == [3, 5, 6])
        #expect(errorsIn(results).first?.description.hasPrefix("b.txt:3: ") == true)
    }
}

// MARK: - Export and round trips

@Suite struct ContactExportTests {
    /// The three sample cards and every press-release contact, with and without a country code.
    static func allCards() throws -> [ContactCard] {
        var all = cardsIn(VCard.parse(try ContactFiles.sample("contacts.vcf"), file: "contacts.vcf", defaultCountryCode: nil))
        let release = try ContactFiles.sample("press-release-sample.txt")
        all += cardsIn(PressRelease.parseContacts(release, file: "pr.txt", defaultCountryCode: nil))
        all += cardsIn(PressRelease.parseContacts(release, file: "pr.txt", defaultCountryCode: "47"))
        all += cardsIn(PressRelease.parseContacts(try ContactFiles.fixture("press-release-kontakter-sv.txt"), file: "sv.txt", defaultCountryCode: "358"))
        all += cardsIn(PressRelease.parseContacts(try ContactFiles.fixture("press-release-media-contacts-en.txt"), file: "en.txt", defaultCountryCode: nil))
        // What an import kept for a person to check travels too.
        all += cardsIn(PressRelease.parseContacts(try ContactFiles.fixture("press-release-unclear-en.txt"), file: "u.txt", defaultCountryCode: nil))
        return all
    }

    static func uids(_ count: Int) -> [String] {
        (0..<count).map { "urn:uuid:0198f2a1-0000-7000-8000-\(String(format: "%012d", $0))" }
    }

    @Test func vcardRoundTrip() throws {
        let all = try Self.allCards()
        #expect(all.count == 13)
        #expect(all.last?.sets["to_check"] != nil)
        let text = VCardWriter.vcard4(all, uids: Self.uids(all.count))
        let back = VCard.parse(text, file: "export.vcf", defaultCountryCode: nil)
        #expect(errorsIn(back).isEmpty)
        #expect(sameContactContent(cardsIn(back), all))
        #expect(cardsIn(back).map(\.uid) == Self.uids(all.count))
    }

    @Test func jcardRoundTrip() throws {
        let all = try Self.allCards()
        let json = VCardWriter.jcard(all, uids: Self.uids(all.count))
        #expect(sameContactContent(cardsIn(VCardWriter.parseJCard(json, file: "export.json")), all))
        // Through JSON text too, as a file would carry it.
        let reread = try JSONValue.parse(json.canonicalString)
        #expect(sameContactContent(cardsIn(VCardWriter.parseJCard(reread, file: "export.json")), all))
    }

    @Test func jcardShape() throws {
        let sigrun = try #require(try Self.allCards().first)
        let json = VCardWriter.jcard([sigrun], uids: ["urn:uuid:0198f2a1-7c3e-7b2a-9d41-3f5e8c2b1a07"])
        let top = try #require(json.arrayValue)
        #expect(top.first == js("vcard"), "one card is a bare [\"vcard\", …]")
        let props = try #require(top.last?.arrayValue)
        #expect(props.first == .array([js("version"), .object([:]), js("text"), js("4.0")]))
        #expect(props.contains(.array([js("fn"), .object([:]), js("text"), js("Sigrun Ødegård Ås")])))
        #expect(props.contains(.array([js("org"), .object(["language": js("nb")]), js("text"), js("Norsk Folkehjelp")])))
        #expect(props.contains(.array([js("tel"), .object(["type": .array([js("work"), js("cell")]), "pref": js("1")]), js("uri"), js("tel:+4790000000")])))
        #expect(props.contains(.array([js("email"), .object(["type": js("work")]), js("text"), js("sigrun.as@npaid.example")])))
        #expect(VCardWriter.jcard([sigrun, sigrun], uids: []).arrayValue?.first?.arrayValue?.first == js("vcard"))
    }

    @Test func vcardTextShape() throws {
        let all = try Self.allCards()
        let text = VCardWriter.vcard4(all, uids: Self.uids(all.count))
        let lines = text.components(separatedBy: "\r\n")
        #expect(!text.replacingOccurrences(of: "\r\n", with: "").contains("\n"), "CRLF line endings only")
        #expect(lines.allSatisfy { $0.utf8.count <= 75 })
        #expect(lines.contains("ORG;LANGUAGE=nb:Norsk Folkehjelp"))
        #expect(lines.contains("TEL;VALUE=uri;TYPE=work,cell;PREF=1:tel:+4790000000"), "TYPE and PREF kept")
        #expect(lines.contains("EMAIL;TYPE=work:sigrun.as@npaid.example"))
        #expect(lines.contains("TEL;VALUE=uri:tel:+380440000001"))
        #expect(lines.contains("TEL;VALUE=text:22 00 00 00"))
        #expect(lines.contains("TEL;VALUE=uri;X-FIELDSYNC-RAW=\"+358 40 000 0000\":tel:+358400000000"))
        #expect(lines.contains("CATEGORIES:landmines,APMBC"))
    }

    @Test func longLinesFoldAtCharacterBoundaries() throws {
        var card = ContactCard(fields: ["fn": js("Олена Мельник")], line: 1)
        card.fields["note"] = js(String(repeating: "Розмінування триває. ", count: 12) + "Кінець")
        let text = VCardWriter.vcard4([card], uids: [])
        let lines = text.components(separatedBy: "\r\n")
        #expect(lines.count > 6)
        #expect(lines.allSatisfy { $0.utf8.count <= 75 })
        #expect(sameContactContent(cardsIn(VCard.parse(text, file: "long.vcf", defaultCountryCode: nil)), [card]))
    }
}

// MARK: - Press releases as scraped from real pressroom pages

@Suite struct GluedPressReleaseTests {
    @Test func anAddressEndsWhereItsDomainEnds() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("press-release-glued-nb.txt"), file: "nb.txt",
                                                 defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty, "\(errorsIn(results))")
        let c = cardsIn(results)
        try #require(c.count == 2, "the image caption and the documents after the glued heading are not contacts")
        #expect(c[0].fields["fn"] == js("Håkon Orvedal"))
        #expect(c[0].sets["org"] == [orgEntry("Norsk Folkehjelp")])
        #expect(c[0].fields["title"] == js("Pressevakt"))
        #expect(c[0].sets["tel"]?.first?["raw"] == js("95045667"))
        #expect(c[0].sets["email"] == [js("hakono@npaid.org")], "the next contact's name is not part of the address")
        #expect(c[0].sets["to_check"] == nil)
        #expect(c[1].fields["fn"] == js("Kari Lunde"), "the name glued after an address starts the next contact")
        #expect(c[1].fields["title"] == js("Seniorrådgiver"))
        #expect(c[1].sets["email"] == [js("kari.lunde@npaid.no")], "“Images” is the page's next heading")
        #expect(c[1].fields["source"] == js("Norsk Folkehjelp åpner nytt ryddeprosjekt i Tsjernihiv"))
    }

    @Test func theIssuesLine() throws {
        let text = "Headline\nContacts\nHåkon OrvedalNorwegian Peoples Aid\nTel:95045667hakono@npaid.orgImages\nA caption\n"
        let c = cardsIn(PressRelease.parseContacts(text, file: "i.txt", defaultCountryCode: nil))
        try #require(c.count == 1)
        #expect(c[0].sets["email"] == [js("hakono@npaid.org")])
        #expect(c[0].sets["tel"] == [telEntry("95045667", "+4795045667")], "Norwegian Peoples Aid: a Norwegian number")
    }

    @Test func whenInDoubtTheTextIsKeptAndFlagged() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("press-release-unclear-en.txt"), file: "u.txt",
                                                 defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty)
        let c = try #require(cardsIn(results).first)
        #expect(c.sets["email"] == nil, "no wrong address is stored")
        let check = try #require(c.sets["to_check"]?.first?.stringValue)
        #expect(check.hasPrefix("u.txt:4: ") && check.contains("ingrid.solberg@npaid.orgxq"))
    }

    @Test(arguments: [true, false])
    func gluedAddresses(fromFile: Bool) {
        let list = fromFile ? PublicSuffixList.shared : PublicSuffixList(path: "/nonexistent/public_suffix_list.dat")
        #expect(list.fromFile == fromFile || !fromFile)
        func read(_ s: String) -> GluedAddress.Reading? { GluedAddress.read(s, suffixes: list) }
        #expect(read("hakono@npaid.orgImages") == .glued(address: "hakono@npaid.org", tail: "Images"))
        #expect(read("hakono@npaid.orgimages") == .glued(address: "hakono@npaid.org", tail: "images"), "lower-cased by a scraper")
        #expect(read("a.b@redcross.noSubscribe") == .glued(address: "a.b@redcross.no", tail: "Subscribe"))
        #expect(read("o.melnyk@umac.com.uaDocuments") == .glued(address: "o.melnyk@umac.com.ua", tail: "Documents"))
        #expect(read("kari@frilans.noKeywords") == .glued(address: "kari@frilans.no", tail: "Keywords"))
        #expect(read("sigrun.as@npaid.example") == .address("sigrun.as@npaid.example"))
        #expect(read("press@npaid.org") == .address("press@npaid.org"))
        #expect(read("press@npaid.orgxq") == .doubtful("press@npaid.orgxq"))
        #expect(read("press@" + String(repeating: "a", count: 300) + ".org" + String(repeating: "x", count: 300)) != nil)
        #expect(read("no-at-sign.org") == nil)
    }

    @Test func theSystemListIsRead() {
        // scripts/ensure-deps.sh installs Debian's publicsuffix; without it the fallback serves.
        if FileManager.default.fileExists(atPath: PublicSuffixList.systemPath) {
            #expect(PublicSuffixList.shared.fromFile)
            #expect(PublicSuffixList.shared.isTopLevel("ngo") && PublicSuffixList.shared.isTopLevel("UA"))
        }
        #expect(!PublicSuffixList(path: "/nonexistent").fromFile)
    }
}

// MARK: - Phone and mail-client exports

@Suite struct PhoneExportTests {
    @Test func aPhoneExportWithCRCRLFQuotedPrintablePhotosAndNamelessCards() throws {
        let text = try ContactFiles.fixture("phone-export-crcrlf.vcf")
        #expect(text.contains("\r\r\n"))
        let results = VCard.parse(text, file: "phone.vcf", defaultCountryCode: "47")
        #expect(errorsIn(results).isEmpty, "\(errorsIn(results))")
        let c = cardsIn(results)
        try #require(c.count == 5)
        #expect(c.map(\.line) == [1, 13, 17, 21, 26], "a CR CR LF line end is one line end")
        #expect(c[0].fields["fn"] == js("Håkon Orvedal"))
        #expect(c[0].fields["n"] == nameParts(family: "Orvedal", given: "Håkon"))
        #expect(c[0].sets["tel"] == [telEntry("950 45 667", "+4795045667", type: ["cell"], pref: 1)], "2.1's bare PREF")
        #expect(c[0].sets["email"] == [js("hakon.orvedal@npaid.example")], "the photo's base64 lines are skipped")
        #expect(c[0].remarks.isEmpty && c[0].guessed.isEmpty)
        #expect(c[1].fields["fn"] == js("Kari Lunde"))
        #expect(c[1].guessed == ["fn"])
        #expect(c[1].remarks == ["phone.vcf:13: card has no FN or N; named “Kari Lunde” from its e-mail address"])
        #expect(c[2].fields["fn"] == js("+380 67 000 1122"))
        #expect(c[2].remarks.first?.hasSuffix("from its phone number") == true)
        #expect(c[3].fields["fn"] == js("Norsk Folkehjelp"), "post@ names no one: the organisation does")
        #expect(c[4].fields["fn"] == js("Bjørn Sørensen"), "ISO-8859-1 quoted-printable")
        #expect(c[4].fields["title"] == js("Rådgiver for minerydding og humanitær respons"), "a soft line break joins")
    }

    @Test func latin1FilesAreRead() throws {
        let bytes = Array("BEGIN:VCARD\r\nVERSION:2.1\r\nN:S".utf8) + [0xF8] + Array("rensen;Bj".utf8) + [0xF8]
            + Array("rn\r\nTEL:+47 22 00 00 00\r\nEND:VCARD\r\n".utf8)
        let path = NSTemporaryDirectory() + "fieldsync-latin1-\(UUID().uuidString).vcf"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = cardsIn(try ContactImport.read(file: path, countryCode: nil))
        #expect(c.first?.fields["fn"] == js("Bjørn Sørensen"))
    }
}

// MARK: - Phone numbers: the country from the source

@Suite struct PhoneCountryTests {
    @Test func aNorwegianReleaseGivesNorwegianNumbers() throws {
        let c = cardsIn(PressRelease.parseContacts(try ContactFiles.fixture("press-release-glued-nb.txt"), file: "nb.txt",
                                                   defaultCountryCode: nil))
        try #require(c.count == 2)
        #expect(c[0].sets["tel"] == [telEntry("95045667", "+4795045667")], "the publisher and the organisation are Norwegian")
        #expect(c[1].sets["tel"] == [telEntry("+47 913 37 001", "+4791337001")])
    }

    @Test func aUkrainianReleaseGivesUkrainianNumbers() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("press-release-uk.txt"), file: "uk.txt", defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty, "\(errorsIn(results))")
        let c = cardsIn(results)
        try #require(c.count == 2)
        #expect(c[0].fields["fn"] == js("Оксана Коваленко"))
        #expect(c[0].sets["org"] == [orgEntry("Центр протимінної діяльності")])
        #expect(c[0].sets["tel"] == [telEntry("067 000 11 22", "+380670001122")], "the release is in Ukrainian")
        #expect(c[1].sets["tel"] == [telEntry("+380 50 000 3344", "+380500003344"), telEntry("22 00 00")],
                "a number too short for Ukraine stays raw")
    }

    @Test func theCountryComesFromWhatTheSourceSays() {
        #expect(Phone.e164("95045667", defaultCountryCode: "47") == "+4795045667")
        #expect(Phone.e164("950 45 66", defaultCountryCode: "47") == nil, "seven digits are no Norwegian number")
        #expect(Phone.e164("067 000 11 22", defaultCountryCode: "380") == "+380670001122")
        #expect(Phone.e164("22 00 00 00", defaultCountryCode: "380") == nil)
        #expect(PhoneCountry.fromEmail("kari.lunde@npaid.no") == "47")
        #expect(PhoneCountry.fromEmail("o.melnyk@umac.example") == nil)
        #expect(PhoneCountry.fromOrganisation("Norwegian Peoples Aid") == "47")
        #expect(PhoneCountry.fromOrganisation("Danish Red Cross Society") == "45")
        #expect(PhoneCountry.fromOrganisation("Demining Partners") == nil)
        #expect(PhoneCountry.fromLanguage("Finlands Röda Kors skickar två experter som utbildar lokala team och är där i mars, säger hon") == "46")
        #expect(PhoneCountry.fromLanguage("Field teams returned to three confirmed hazardous areas") == nil)
        // A card's own address says its country; a given code wins; the replica default comes last.
        let text = "BEGIN:VCARD\nVERSION:3.0\nFN:Kari Nordmann\nEMAIL:kari@frilans.no\nTEL:900 00 000\nEND:VCARD\n"
            + "BEGIN:VCARD\nVERSION:3.0\nFN:Per Hansen\nTEL:900 00 001\nEND:VCARD\n"
        let cards = cardsIn(VCard.parse(text, file: "k.vcf", defaultCountryCode: nil, fallbackCountryCode: "45"))
        #expect(cards.map { $0.sets["tel"] } == [[telEntry("900 00 000", "+4790000000")], [telEntry("900 00 001", "+4590000001")]])
    }
}

// MARK: - Article bylines

@Suite struct BylineTests {
    static let title = "Clearing the fields is only half the job: why mine action needs long-term funding"

    @Test func authorsUnderAnAnalysis() throws {
        let results = PressRelease.parseContacts(try ContactFiles.fixture("article-bylines-en.txt"), file: "a.txt", defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty, "\(errorsIn(results))")
        let c = cardsIn(results)
        try #require(c.count == 3)
        #expect(c.map(\.line) == [6, 8, 10])
        #expect(c[0].fields["fn"] == js("Anna Bech Jensen"))
        #expect(c[0].fields["n"] == nameParts(family: "Jensen", given: "Anna Bech"))
        #expect(c[0].fields["title"] == js("Secretary General"))
        #expect(c[0].sets["org"] == [orgEntry("Danish Red Cross Society")])
        #expect(c[0].fields["source"] == js(Self.title))
        #expect(c[1].fields["title"] == js("Head of Mine Action"))
        #expect(c[1].sets["org"] == [orgEntry("Ukrainian Red Cross Society")])
        #expect(c[2].fields["fn"] == js("Ingrid Solberg"), "“By” is not part of the name")
        #expect(c[2].fields["title"] == js("Senior Adviser, Humanitarian Disarmament"))
        #expect(c[2].sets["org"] == [orgEntry("Norwegian People's Aid")])
        #expect(c.allSatisfy { $0.sets["tel"] == nil && $0.sets["email"] == nil })
    }

    @Test func bodyTextIsNoByline() {
        let text = "Title\nThe Minister\nSaid today, in Kyiv\nAnna Jensen\nspoke at the meeting, then left\n"
        #expect(cardsIn(PressRelease.parseContacts(text, file: "b.txt", defaultCountryCode: nil)).isEmpty)
    }
}

extension GluedPressReleaseTests {
    @Test func aHeadingOrANameGluedToANumber() throws {
        let text = "Headline\nKontakter\nHåkon OrvedalNorsk Folkehjelp\nTel: 95045667Kari LundeNorsk Folkehjelp\n"
            + "Mob: 913 37 001Dokumenter\nFaktaark.pdf\n"
        let results = PressRelease.parseContacts(text, file: "g.txt", defaultCountryCode: nil)
        #expect(errorsIn(results).isEmpty, "\(errorsIn(results))")
        let c = cardsIn(results)
        try #require(c.count == 2)
        #expect(c[0].sets["tel"] == [telEntry("95045667", "+4795045667")])
        #expect(c[1].fields["fn"] == js("Kari Lunde") && c[1].sets["org"] == [orgEntry("Norsk Folkehjelp")])
        #expect(c[1].sets["tel"] == [telEntry("913 37 001", "+4791337001")], "“Dokumenter” ends the block; the file name is no contact")
    }
}
