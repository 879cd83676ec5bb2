import Testing
@testable import FieldSyncClient
import FieldSyncCore

/// Inputs `scripts/fuzz.sh` found (issue 23), each kept in `Fuzz/corpus/` too.
@Suite struct FuzzRegressionTests {
    /// Fuzz/corpus/vcard/crash-tel-raw-beside-text: the raw-number parameter of our own export
    /// beside a value that is no number was taken as the number as written, so the card showed
    /// "+358 40 000 0000" while holding text, and read back from its own export as another card
    /// (with an E.164 form it never had).
    @Test func aRawTelParameterBesideTextIsNotTheNumber() throws {
        let text = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nTEL;VALUE=uri;X-FIELDSYNC-RAW=\"+358 40 000 0000\":tel:+re 16:00\r\nEND:VCARD\r\n"
        let card = try #require(VCard.parse(text, file: "t.vcf", defaultCountryCode: "46").first).get()
        #expect(card.sets["tel"] == [.object(["raw": "+re 16:00"])])
        let again = try #require(VCard.parse(VCardWriter.vcard4([card], uids: []), file: "e.vcf", defaultCountryCode: "46").first).get()
        #expect(again.sets == card.sets && again.fields == card.fields)
        // Beside an E.164 number it is still the written form.
        let ok = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nTEL;VALUE=uri;X-FIELDSYNC-RAW=\"040-00 00 00\":tel:+4640000000\r\nEND:VCARD\r\n"
        let okCard = try #require(VCard.parse(ok, file: "t.vcf", defaultCountryCode: "46").first).get()
        #expect(okCard.sets["tel"] == [.object(["raw": "040-00 00 00", "e164": "+4640000000"])])
    }

    /// Fuzz/corpus/vcard/crash-tel-space-after-scheme: `TEL:tel: 1` kept the space after the
    /// scheme in the number as written (the line was trimmed before `tel:` came off), so the
    /// card read back from its own export as another card.
    @Test func aSpaceAfterTheTelSchemeIsNotPartOfTheNumber() throws {
        let card = try #require(VCard.parse("BEGIN:VCARD\r\nFN:A\r\nTEL:tel: 1\r\nEND:VCARD\r\n", file: "t.vcf", defaultCountryCode: "46").first).get()
        #expect(card.sets["tel"] == [.object(["raw": "1"])])
        let again = try #require(VCard.parse(VCardWriter.vcard4([card], uids: []), file: "e.vcf", defaultCountryCode: "46").first).get()
        #expect(again.sets == card.sets)
    }

    /// Fuzz/corpus/vcard/crash-email-case: one address on two EMAIL lines in two spellings of
    /// case was kept twice, and the second line's TYPE, matched to addresses regardless of case,
    /// was written back with the first spelling, so the card read back from its own export as
    /// another card. An address is now kept once, as first spelled, with its parameters.
    @Test func oneAddressInTwoCasesIsOneAddress() throws {
        let text = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEMAIL:Olena@Example.org\r\nEMAIL;TYPE=work:olena@example.org\r\nEND:VCARD\r\n"
        let card = try #require(VCard.parse(text, file: "t.vcf", defaultCountryCode: "46").first).get()
        #expect(card.sets["email"] == ["Olena@Example.org"])
        #expect(card.sets["email_params"] == [.object(["email": "Olena@Example.org", "type": .array(["work"])])])
        let again = try #require(VCard.parse(VCardWriter.vcard4([card], uids: []), file: "e.vcf", defaultCountryCode: "46").first).get()
        #expect(again.sets == card.sets && again.fields == card.fields)
    }

    /// Fuzz find: `mailto:mailto:` kept one scheme, which the export dropped on the way back.
    @Test func anAddressLosesEveryMailtoScheme() throws {
        let text = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEMAIL:mailto:MAILTO: k@example.org\r\nEND:VCARD\r\n"
        let card = try #require(VCard.parse(text, file: "t.vcf", defaultCountryCode: "46").first).get()
        #expect(card.sets["email"] == ["k@example.org"])
        let again = try #require(VCard.parse(VCardWriter.vcard4([card], uids: []), file: "e.vcf", defaultCountryCode: "46").first).get()
        #expect(again.sets == card.sets && again.fields == card.fields)
    }
}
