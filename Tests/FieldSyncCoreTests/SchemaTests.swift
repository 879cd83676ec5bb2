import Foundation
import Testing
@testable import FieldSyncCore

@Suite struct SchemaTests {
    let schema = RecordSchema.standard

    @Test func everyKindAndFieldIsDeclared() {
        #expect(Set(schema.kinds(of: .note)) == ["hazard_area", "survey", "clearance_day", "eod_spot", "accident", "eore_session", "observation"])
        for f in ["ref", "org", "team", "info_date", "observed_at", "location", "area_m2", "status", "narrative", "lang",
                  "links", "devices", "tags", "sensitivity", "review"] {
            #expect(schema.field(f, type: .note, kind: "survey") != nil, "note field \(f)")
        }
        #expect(schema.field("depth_cm", type: .note, kind: "clearance_day")?.type == "integer")
        #expect(schema.field("depth_cm", type: .note, kind: "survey") == nil, "kind-specific fields belong to their kind")
        for f in ["fn", "n", "org", "title", "tel", "email", "lang", "tz", "beats", "note", "source", "lawful_basis", "consent", "do_not_contact"] {
            #expect(schema.field(f, type: .contact, kind: nil) != nil, "contact field \(f)")
        }
        #expect(schema.personalFields(of: .contact).isSuperset(of: ["fn", "n", "tel", "email"]))
        #expect(schema.personalFields(of: .note).isEmpty)
    }

    @Test func refusalsNameFieldValueAndRule() {
        func message(_ f: String, _ text: String, kind: String = "clearance_day") -> String? {
            do { _ = try schema.parse(text: text, field: f, type: .note, kind: kind); return nil } catch { return error.message }
        }
        #expect(message("depth_cm", "-3") == "field 'depth_cm': value -3 breaks rule: at least 0")
        #expect(message("depth_cm", "deep")?.contains("whole number") == true)
        #expect(message("info_date", "2025-02-30")?.contains("calendar date") == true)
        #expect(message("status", "dunno")?.contains("one of suspected") == true)
        #expect(message("location", #"{"type":"Point","coordinates":[49.2,137.25]}"#)?.contains("latitude") == true)
        #expect(message("nope", "1")?.contains("has no field 'nope'") == true)
        #expect(message("observed_at", "2025-08-27 13:40")?.contains("instant") == true)
        #expect(message("devices", "XX:PMN-2:2")?.contains("category") == true)
        #expect(message("ref", "two\nlines")?.contains("one line") == true)
    }

    @Test func textIsParsedByFieldType() throws {
        #expect(try schema.parse(text: "13", field: "depth_cm", type: .note, kind: "clearance_day") == .int(13))
        #expect(try schema.parse(text: "1250.5", field: "area_m2", type: .note, kind: nil) == .double(1250.5))
        #expect(try schema.parse(text: "AP:PMN-2:2:destroyed_in_situ", field: "devices", type: .note, kind: nil)
                == .object(["category": "AP", "model": "PMN-2", "quantity": .int(2), "disposition": "destroyed_in_situ"]))
        #expect(try schema.parse(text: "2025-08-27T13:40:00+03:00[Europe/Kyiv]", field: "observed_at", type: .note, kind: nil)
                == "2025-08-27T13:40:00+03:00[Europe/Kyiv]")
        #expect(try schema.parse(text: "+380 44 000 0000", field: "tel", type: .contact, kind: nil)
                == .object(["raw": "+380 44 000 0000", "e164": "+380440000000"]))
        #expect(try schema.parse(text: "yes", field: "do_not_contact", type: .contact, kind: nil) == .bool(true))
    }

    /// RFC 3339 instants, read directly: what the old ISO8601DateFormatter took, and no more.
    @Test func instantsAreReadStrictly() {
        for ok in ["2025-08-27T13:40:00Z", "2025-08-27T13:40:00+03:00", "2025-08-27T13:40:00.5-11:30", "2024-02-29T23:59:59.123456789Z",
                   "2025-08-27T13:40:00+03:00[Europe/Kyiv]", "2025-08-27T00:00:00Z[UTC]"] {
            #expect(RecordSchema.isInstant(ok), "\(ok)")
        }
        for bad in ["2025-08-27 13:40:00Z", "2025-08-27T13:40Z", "2025-08-27T24:00:00Z", "2025-08-27T13:60:00Z", "2025-08-27T13:40:61Z",
                    "2025-02-30T13:40:00Z", "2025-08-27T13:40:00", "2025-08-27T13:40:00+0300", "2025-08-27T13:40:00+03", "2025-08-27T13:40:00.Z",
                    "2025-08-27T13:40:00.1234567890Z", "2025-08-27T13:40:00Zx", "2025-08-27t13:40:00Z", "2025-08-27T13:40:00+24:00",
                    "2025-08-27T13:40:00Z[Mars/Olympus]", "2025-08-27T1३:40:00Z", "", "2025-08-27T13:40:00+03:00[]",
                    "+202-01-01T00:00:00Z"] {
            #expect(!RecordSchema.isInstant(bad), "\(bad)")
        }
        #expect(!RecordSchema.isDate("+202-01-01") && !RecordSchema.isDate("202-01-01") && RecordSchema.isDate("2025-01-01"))
        // A look-alike zone name (KELVIN SIGN for K) is refused, and does not make the real one
        // refused after it: a memo keyed by String would have shared their entries.
        #expect(!RecordSchema.isInstant("2025-08-27T13:40:00+04:30[Asia/\u{212A}abul]"))
        #expect(RecordSchema.isInstant("2025-08-27T13:40:00+04:30[Asia/Kabul]"))
    }

    @Test func phoneNumbersGainE164OnlyWhenTheCountryIsClear() {
        #expect(Phone.e164("+47 900 00 000", defaultCountryCode: nil) == "+4790000000")
        #expect(Phone.e164("0047 90000000", defaultCountryCode: nil) == "+4790000000")
        #expect(Phone.e164("90000000", defaultCountryCode: nil) == nil)
        #expect(Phone.e164("90000000", defaultCountryCode: "47") == "+4790000000")
        #expect(Phone.e164("tel:+380440000001", defaultCountryCode: nil) == "+380440000001")
        #expect(Phone.e164("call me", defaultCountryCode: "47") == nil)
    }

    /// The blank-text rule says what trimming would, non-ASCII spaces included.
    @Test func blankTextIsWhatTrimmingLeavesEmpty() throws {
        let samples = ["", " ", "\t", " \t ", "\u{00A0}", "\u{3000}\u{2003}", "x", " x ", "\u{3000}é", "é", "\n", " \n", "\u{200B}", "🙂", "\t\u{00A0}a"]
        for s in samples {
            #expect(RecordSchema.isBlank(s) == s.trimmingCharacters(in: .whitespaces).isEmpty, "\(s.unicodeScalars.map { String($0.value, radix: 16) })")
        }
        let narrative = try #require(schema.field("narrative", type: .note, kind: "observation"))
        #expect(throws: CoreError.self) { try RecordSchema.check(.string("\u{3000} \t"), spec: narrative, field: "narrative") }
    }

    /// Numbers are trimmed as `trimmingCharacters(in: .whitespaces)` trims, and read the same.
    @Test func numberTextIsTrimmedAsFoundationTrims() throws {
        let samples = ["", " ", "42", " 42", "42 ", "\t-7\t", "\u{00A0}3.5\u{3000}", "4 2", " \n5", "5\n", "\u{200B}6", "é7", " 1e3 ", "\u{2003}"]
        for s in samples {
            let foundation = s.trimmingCharacters(in: .whitespaces)
            #expect(String(RecordSchema.trimmingBlanks(s)) == foundation, "\(s.unicodeScalars.map { String($0.value, radix: 16) })")
        }
        #expect(try schema.parse(text: "\u{00A0} 1200 \t", field: "area_m2", type: .note, kind: "observation")
                == schema.parse(text: "1200", field: "area_m2", type: .note, kind: "observation"))
        #expect(throws: CoreError.self) { try schema.parse(text: "12 00", field: "area_m2", type: .note, kind: "observation") }
    }
}
