import FieldSyncCore
import Foundation

/// Which country a national phone number ("95045667") belongs to, from what the source says:
/// the contact's own e-mail domain, its organisation, the release's publisher, the release's
/// language. Nil when nothing says it clearly: the number then stays raw unless a country code
/// was given (`--country-code`, or the replica's default).
public enum PhoneCountry {
    /// Country-code top-level domains of the countries press contacts mostly come from.
    static let byTopLevel: [String: String] = [
        "no": "47", "se": "46", "dk": "45", "fi": "358", "is": "354", "ua": "380", "uk": "44", "de": "49", "pl": "48",
        "ee": "372", "lv": "371", "lt": "370", "fr": "33", "nl": "31", "be": "32", "ch": "41", "at": "43", "ie": "353",
    ]

    /// Words in an organisation's name that say its country ("Norsk Folkehjelp", "Danish Red Cross").
    static let byOrganisationWord: [(String, String)] = [
        ("norsk", "47"), ("norwegian", "47"), ("norway", "47"), ("norge", "47"), ("noreg", "47"),
        ("svensk", "46"), ("swedish", "46"), ("sweden", "46"), ("sverige", "46"),
        ("dansk", "45"), ("danish", "45"), ("denmark", "45"), ("danmark", "45"),
        ("suomen", "358"), ("finnish", "358"), ("finland", "358"), ("finlands", "358"),
        ("ukrain", "380"), ("україн", "380"),
        ("scottish", "44"), ("british", "44"), ("scotland", "44"), ("england", "44"),
        ("deutsch", "49"), ("german", "49"),
    ]

    public static func fromEmail(_ email: String) -> String? {
        guard let dot = email.lastIndex(of: ".") else { return nil }
        return byTopLevel[email[email.index(after: dot)...].lowercased()]
    }

    /// One country named by the organisation's words; nil when none or several.
    public static func fromOrganisation(_ name: String) -> String? {
        let lower = name.lowercased()
        let found = Set(byOrganisationWord.filter { lower.contains($0.0) }.map(\.1))
        return found.count == 1 ? found.first : nil
    }

    /// Function words that tell the Nordic languages apart, and Ukrainian's own letters.
    static let languageWords: [(country: String, words: Set<String>)] = [
        ("47", ["og", "ikke", "sier", "hvor", "hva", "jeg", "vil", "fra", "blir", "mye"]),
        ("45", ["og", "ikke", "siger", "hvor", "hvad", "jeg", "vil", "fra", "bliver", "meget"]),
        ("46", ["och", "inte", "säger", "är", "var", "jag", "från", "blir", "mycket", "att"]),
        ("358", ["ja", "on", "että", "sanoo", "ovat", "ei", "myös", "kanssa", "tai", "mutta"]),
    ]

    /// The country of the release's language, when it is clearly one of a few.
    public static func fromLanguage(_ text: some StringProtocol) -> String? {
        let ukrainian = text.unicodeScalars.filter { "іїєґІЇЄҐ".unicodeScalars.contains($0) }.count
        if ukrainian >= 3 { return "380" }
        let words = text.lowercased().split(whereSeparator: { !$0.isLetter })
        var scores: [String: Int] = [:]
        for w in words.prefix(5000) {
            for (country, set) in languageWords where set.contains(String(w)) { scores[country, default: 0] += 1 }
        }
        let ranked = scores.sorted { $0.value > $1.value }
        guard let best = ranked.first, best.value >= 3, ranked.dropFirst().first.map({ $0.value < best.value }) ?? true else { return nil }
        return best.key
    }

    /// The country for one contact's national numbers: a given code first, then what the card
    /// says of itself (its e-mail domain, its organisation), then the release, then the default.
    static func code(explicit: String?, card: ContactCard, release: String?, fallback: String?) -> String? {
        if let explicit { return explicit }
        for email in (card.sets["email"] ?? []).compactMap(\.stringValue) { if let c = fromEmail(email) { return c } }
        for org in (card.sets["org"] ?? []).compactMap({ $0["name"]?.stringValue }) { if let c = fromOrganisation(org) { return c } }
        return release ?? fallback
    }

    /// Fills "e164" of the card's numbers that lack it, where the country is known.
    static func normalise(_ card: inout ContactCard, code: String?) {
        guard let code, let tels = card.sets["tel"] else { return }
        card.sets["tel"] = tels.map { tel in
            guard tel["e164"] == nil, var o = tel.objectValue, let raw = o["raw"]?.stringValue,
                  let e164 = Phone.e164(raw, defaultCountryCode: code) else { return tel }
            o["e164"] = .string(e164)
            return .object(o)
        }
    }
}
