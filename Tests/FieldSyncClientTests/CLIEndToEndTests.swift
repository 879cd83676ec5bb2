import FieldSyncCore
import Foundation
import Testing

/// Runs the built `fieldsync` binary as a process, as a field worker would.
struct CLI {
    let home: String
    static let binary: String = {
        // The test bundle sits in the build products folder, beside the executables.
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return dir.appendingPathComponent("fieldsync").path
    }()
    static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/samples").standardized.path

    init() {
        home = NSTemporaryDirectory() + "fieldsync-cli-" + UUID().uuidString
    }

    struct Result { let status: Int32; let out: String; let err: String }

    @discardableResult
    func run(_ args: String...) throws -> Result { try run(args) }

    func run(_ args: [String], wrapper: [String] = []) throws -> Result {
        var env = ProcessInfo.processInfo.environment
        env["FIELDSYNC_HOME"] = home
        // A wrapper (e.g. faketime) runs the binary.
        return wrapper.isEmpty ? try runProcess(Self.binary, args, environment: env)
                               : try runProcess("/usr/bin/env", wrapper + [Self.binary] + args, environment: env)
    }

    func ok(_ args: String...) throws -> String { try ok(args) }

    func ok(_ args: [String]) throws -> String {
        let r = try run(args)
        #expect(r.status == 0, "fieldsync \(args.joined(separator: " ")) failed: \(r.err)")
        return r.out
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: home) }
}

/// Runs a program to its end, collecting both outputs.
func runProcess(_ path: String, _ args: [String], environment: [String: String]? = nil) throws -> CLI.Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CLI.Result(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
}

@Suite(.serialized) struct CLIEndToEndTests {
    @Test func aFieldWorkersDayOffline() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        // Nothing works before init, with a clear message; a missing replica needs a person (2).
        let early = try cli.run("note", "list")
        #expect(early.status == 2 && early.err.contains("fieldsync init"))

        _ = try cli.ok("init", "--name", "mt3-laptop", "--role", "coordinator")
        let again = try cli.run("init", "--name", "x")
        #expect(again.status == 1 && again.err.contains("already exists"))
        let keyMode = try FileManager.default.attributesOfItem(atPath: cli.home + "/device.key")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)

        let added = try cli.ok("note", "add", "--json-file", CLI.samples + "/notes.jsonl").split(separator: "\n")
        try #require(added.count == 5, "the samples are read from \(CLI.samples)")
        let imported = try cli.ok("contact", "import", CLI.samples + "/contacts.vcf").split(separator: "\n")
        #expect(imported.last == "new 3, updated 0, unchanged 0")
        // Sigrun is in both files (the same e-mail address): the release adds its headline to her.
        let fromRelease = try cli.ok("contact", "import", CLI.samples + "/press-release-sample.txt", "--country-code", "47").split(separator: "\n")
        #expect(fromRelease.last == "new 1, updated 1, unchanged 0")

        let id = try cli.ok("note", "add", "--kind", "clearance_day", "--set", "ref=UA-KHA-CLR-0099", "--set", "depth_cm=13",
                            "--set", "devices=AP:PMN-2:2:destroyed_in_situ").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try cli.ok("note", "edit", id, "--set", "depth_cm=15", "--add", "tags=agriculture")
        let shown = try JSONValue.parse(try cli.ok("note", "show", id, "--json"))
        #expect(shown["fields"]?["depth_cm"] == .int(15))
        #expect(shown["fields"]?["tags"] == .array(["agriculture"]))

        // Bad input: one line naming field, value and rule; nothing written.
        let before = try cli.ok("note", "list", "--json")
        let bad = try cli.run("note", "edit", id, "--set", "depth_cm=-3")
        #expect(bad.status == 1)
        #expect(bad.err == "fieldsync: field 'depth_cm': value -3 breaks rule: at least 0\n")
        #expect(try cli.ok("note", "list", "--json") == before)
        let usage = try cli.run("note", "add", "--kind", "picnic")
        #expect(usage.status == 2 && usage.err.hasPrefix("fieldsync: --kind must be one of"))
        #expect(try cli.run("frobnicate").status == 2)

        _ = try cli.ok("note", "delete", String(added[0]), "--reason", "duplicate")
        let notes = try JSONValue.parse(try cli.ok("note", "list", "--json"))
        #expect(notes.arrayValue?.count == 5)
        let clearance = try JSONValue.parse(try cli.ok("note", "list", "--kind", "clearance_day", "--json"))
        #expect(clearance.arrayValue?.count == 2)

        let contacts = try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue ?? []
        let names = Set(contacts.compactMap { $0["fields"]?["fn"]?.stringValue })
        #expect(names.isSuperset(of: ["Sigrun Ødegård Ås", "Aino Rämö-Lindqvist", "Олена Мельник", "Mykola Shevchuk-Petrenko"]))
        let tels = contacts.flatMap { $0["fields"]?["tel"]?.arrayValue ?? [] }
        #expect(tels.contains(.object(["raw": "+358 40 000 0000", "e164": "+358400000000", "type": .array(["work", "voice"])])))
        #expect(tels.contains(.object(["raw": "+4790000000", "e164": "+4790000000", "type": .array(["work", "cell"]), "pref": .int(1)])))
        #expect(!tels.contains(.object(["raw": "90000000", "e164": "+4790000000"])), "the same number is not added twice")

        // Exports.
        let geo = try JSONValue.parse(try cli.ok("export", "--format", "geojson"))
        #expect(geo["type"] == "FeatureCollection")
        #expect(geo["features"]?.arrayValue?.count == 1, "the deleted hazard area is gone; the EOD spot has a location")
        let csv = try cli.ok("export", "--format", "csv", "--hxl")
        #expect(csv.split(separator: "\r\n")[1].hasPrefix("#meta+id,#event+type"))
        #expect(csv.split(separator: "\r\n").count == 2 + 5)
        let vcf = try cli.ok("export", "--format", "vcard")
        #expect(vcf.components(separatedBy: "BEGIN:VCARD").count - 1 == 4)
        #expect(vcf.contains("FN:Олена Мельник"))
        #expect(vcf.contains("TEL;VALUE=uri;TYPE=work,cell;PREF=1:tel:+4790000000\r\n"), "TYPE and PREF kept")
        #expect(vcf.contains("EMAIL;TYPE=work:sigrun.as@npaid.example\r\n"))
        // Contacts as CSV: one value or ;-joined values a cell, no JSON.
        let contactCSV = try cli.ok("export", "--format", "csv", "--type", "contact").split(separator: "\r\n").map(String.init)
        #expect(contactCSV.count == 1 + 4)
        #expect(!contactCSV.dropFirst().contains { $0.contains("{") || $0.contains("[") })
        let sigrunRow = try #require(contactCSV.first { $0.contains("Sigrun Ødegård Ås") })
        #expect(sigrunRow.contains(",+4790000000,") && sigrunRow.contains("Norwegian People's Aid; Norsk Folkehjelp"), "\(sigrunRow)")
        #expect(sigrunRow.contains(",en; nb,") && sigrunRow.contains("APMBC; landmines") && sigrunRow.contains(",sigrun.as@npaid.example (work),"))

        // Log and status.
        let log = try cli.ok("log", "--record", id)
        #expect(log.split(separator: "\n").count == 2)
        #expect(log.contains("depth_cm 13 → 15"))
        let status = try JSONValue.parse(try cli.ok("status", "--json"))
        #expect(status["notes"] == .int(5) && status["contacts"] == .int(4))
        #expect(status["changes_waiting"] != .int(0))
    }

    /// Every export re-imported into a fresh replica gives the same records.
    @Test func exportsReimportToTheSameRecords() throws {
        let a = CLI(), b = CLI(), c = CLI()
        defer { a.cleanUp(); b.cleanUp(); c.cleanUp() }
        for cli in [a, b, c] { _ = try cli.ok("init", "--name", "x", "--role", "coordinator") }
        _ = try a.ok("note", "add", "--json-file", CLI.samples + "/notes.jsonl")
        _ = try a.ok("contact", "import", CLI.samples + "/contacts.vcf")
        let dir = NSTemporaryDirectory() + "fieldsync-export-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        _ = try a.ok("export", "--format", "jsonl", "--type", "note", "--out", dir + "/notes.jsonl")
        // Only the laptop that made an id may create it: another laptop refuses the ids, writing
        // nothing, and takes the notes under new ids when told to.
        let refused = try b.run("note", "add", "--json-file", dir + "/notes.jsonl")
        #expect(refused.status == 1 && refused.err.contains("was made by another device"))
        #expect(try JSONValue.parse(try b.ok("note", "list", "--json")).arrayValue?.isEmpty == true)
        _ = try b.ok("note", "add", "--json-file", dir + "/notes.jsonl", "--new-ids")
        func fields(_ cli: CLI, _ type: String) throws -> [JSONValue] {
            (try JSONValue.parse(try cli.ok(type, "list", "--json")).arrayValue ?? []).map { v in
                .object(["kind": v["kind"] ?? .null, "fields": v["fields"]!])
            }.sorted { $0.canonicalString < $1.canonicalString }
        }
        #expect(try fields(a, "note") == fields(b, "note"))
        // On the laptop that made them, the same ids come back as the same records.
        let ids = { (cli: CLI) throws -> [String] in (try JSONValue.parse(try cli.ok("note", "list", "--json")).arrayValue ?? []).compactMap { $0["id"]?.stringValue } }
        let again = CLI()
        defer { again.cleanUp() }
        try FileManager.default.copyItem(atPath: a.home, toPath: again.home)
        #expect(try again.run("note", "add", "--json-file", dir + "/notes.jsonl").err.contains("already exists"))
        #expect(try ids(again) == ids(a))

        _ = try a.ok("export", "--format", "geojson", "--out", dir + "/notes.geojson")
        _ = try c.ok("note", "add", "--json-file", dir + "/notes.geojson", "--new-ids")
        let located = try fields(a, "note").filter { $0["fields"]?["location"] != nil }
        #expect(try fields(c, "note") == located)

        for format in ["vcard", "jcard"] {
            let d = CLI()
            defer { d.cleanUp() }
            _ = try d.ok("init", "--name", "y", "--role", "press")
            _ = try a.ok("export", "--format", format, "--out", dir + "/contacts.\(format)")
            _ = try d.ok("contact", "import", dir + "/contacts.\(format)")
            let strip: (JSONValue) -> JSONValue = { $0["fields"]! }
            #expect(try fields(a, "contact").map(strip) == fields(d, "contact").map(strip), "\(format) round trip")
        }
    }

    @Test func aBadCardImportsNothingUnlessSkipped() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let file = cli.home + "/cards.vcf"
        let text = """
            BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Good One\r\nEMAIL:good@example.org\r\nEND:VCARD\r\n\
            BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Bad Mail\r\nEMAIL:not-an-address\r\nEND:VCARD\r\n
            """
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try cli.run("contact", "import", file)
        #expect(refused.status == 1)
        #expect(refused.err.contains("cards.vcf:6:") && refused.err.contains("email"))
        #expect(try cli.ok("contact", "list", "--json") == "[]\n")
        let skipped = try cli.run("contact", "import", file, "--skip-invalid")
        #expect(skipped.status == 0)
        #expect(skipped.err.contains("skipped") && skipped.err.contains(":6:"))
        #expect(try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue?.count == 1)
        // A field device may not write contacts: refused locally, nothing kept.
        let f = CLI()
        defer { f.cleanUp() }
        _ = try f.ok("init", "--name", "field-laptop")
        let forbidden = try f.run("contact", "add", "--set", "fn=Someone")
        #expect(forbidden.status == 1 && forbidden.err.contains("field device does not write press contacts"))
    }

    /// Fields can be found: `schema` lists a kind's, and a typo names the field meant.
    @Test func fieldsAreDiscoverable() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "x")
        #expect(try cli.ok("schema").contains("clearance_day"))
        let fields = try cli.ok("schema", "clearance_day")
        #expect(fields.contains("depth_cm") && fields.contains("devices") && fields.contains("set of device_item (one element per --set or --add)"))
        let json = try JSONValue.parse(try cli.ok("schema", "contact", "--json"))
        #expect(json["email"]?["personal"] == .bool(true) && json["email"]?["merge"] == "set")
        #expect(try cli.run("schema", "clearing_day").status == 2)
        let typo = try cli.run("note", "add", "--kind", "clearance_day", "--set", "dept_cm=12")
        #expect(typo.status != 0 && typo.err.contains("did you mean 'depth_cm'?"), "\(typo.err)")
        let far = try cli.run("note", "add", "--kind", "clearance_day", "--set", "xyzzy=1")
        #expect(far.err.contains("`fieldsync schema clearance_day` lists them"), "\(far.err)")
    }

    /// Commands say what they did; a listing has a header and aligned columns; a value cannot
    /// rewrite the terminal; a note needs at least one field.
    @Test func commandsSayWhatTheyDid() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "x", "--role", "coordinator")
        #expect(try cli.run("note", "add", "--kind", "survey").status == 2)
        #expect(try cli.ok("note", "list") == "no notes\n")
        let id = try cli.ok("note", "add", "--kind", "survey", "--set", "ref=UA-1", "--set", "team=MT\u{1B}[2J").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try cli.ok("note", "edit", "UA-1", "--set", "narrative=walked", "--add", "tags=a") == "edited \(id) (UA-1): narrative, tags\n")
        let list = try cli.ok("note", "list").split(separator: "\n")
        #expect(list.count == 2 && list[0].hasPrefix("ID") && list[0].contains("REVIEW") && list[1].contains("survey  UA-1"))
        #expect(!list[1].contains("\u{1B}") && list[1].contains("\\u{001B}"))
        for command in [["note", "show", "UA-1"], ["log"]] {
            let out = try cli.ok(command)
            #expect(!out.contains("\u{1B}") && out.contains("MT\\u{001B}[2J"), "\(command): \(out)")
        }
        #expect(try cli.ok("submit", id) == "submitted \(id) (UA-1) for review\n")
        #expect(try cli.ok("review", id, "--approve") == "approved \(id) (UA-1)\n")
        #expect(try cli.ok("note", "delete", id, "--reason", "entered twice") == "deleted \(id) (UA-1)\n")
        #expect(try cli.ok("log").contains("deleted (entered twice)"))
    }

    /// A location as people give it: "LAT,LON", or a GeoJSON file; coordinates that look
    /// swapped are refused with the reason.
    @Test func locationsAsPeopleGiveThem() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "x")
        let point = try cli.ok("note", "add", "--kind", "eod_spot", "--set", "location=49.1987, 37.2611").trimmingCharacters(in: .whitespacesAndNewlines)
        let shown = try JSONValue.parse(try cli.ok("note", "show", point, "--json"))["fields"]?["location"]
        #expect(shown == .object(["type": "Point", "coordinates": .array([.double(37.2611), .double(49.1987)])]))
        #expect(try cli.run("note", "add", "--kind", "eod_spot", "--set", "location=137.2,49.1").status != 0)
        // `show` says structured values in words.
        _ = try cli.ok("note", "edit", point, "--add", "devices=AP:PMN-2:2:destroyed_in_situ")
        let text = try cli.ok("note", "show", point)
        #expect(text.contains("Point 49.1987 N, 37.2611 E") && text.contains("AP PMN-2 ×2 destroyed in situ"), "\(text)")
        let file = cli.home + "/area.geojson"
        try FileManager.default.createDirectory(atPath: cli.home, withIntermediateDirectories: true)
        let ring = "[[37.26,49.19],[37.27,49.19],[37.27,49.20],[37.26,49.19]]"
        try #"{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[\#(ring)]}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let area = try cli.ok("note", "add", "--kind", "hazard_area", "--set", "location=@" + file).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try JSONValue.parse(try cli.ok("note", "show", area, "--json"))["fields"]?["location"]?["type"] == "Polygon")
        // Latitude first (49.19, 137.2 would be a longitude past 90 in the latitude's place).
        let swapped = "[[49.19,137.26],[49.19,137.27],[49.20,137.27],[49.19,137.26]]"
        try #"{"type":"Polygon","coordinates":[\#(swapped)]}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try cli.run("note", "add", "--kind", "hazard_area", "--set", "location=@" + file)
        #expect(refused.status == 1 && refused.err.contains("looks like latitude, longitude"), "\(refused.err)")
        #expect(try cli.run("note", "add", "--kind", "hazard_area", "--set", "location=@/nonexistent.geojson").err.contains("cannot read"))
    }

    @Test func corruptReplicaIsAClearError() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "x")
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: cli.home + "/replica.sqlite"))
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: cli.home + "/replica.sqlite" + suffix) }
        let r = try cli.run("note", "list")
        #expect(r.status == 2, "an unusable replica needs a person: exit 2")
        #expect(r.err.hasPrefix("fieldsync: ") && r.err.contains("not a fieldsync replica"))
        #expect(r.err.split(separator: "\n").count == 1)
    }
}

@Suite(.serialized) struct CLIContactTests {
    @Test func contactAddEditShowDeleteAndErase() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "hq-coordinator", "--role", "coordinator")
        let id = try cli.ok("contact", "add", "--set", "fn=Aino Rämö-Lindqvist", "--set", "email=aino.ramo@redcross.example",
                            "--set", "tel=+358 40 000 0000", "--set", "source=press release 27.2.2026").trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try cli.ok("contact", "edit", String(id.prefix(30)), "--set", "title=Viestintäpäällikkö", "--add", "beats=landmines",
                       "--remove", "email=aino.ramo@redcross.example")
        let shown = try JSONValue.parse(try cli.ok("contact", "show", id, "--json"))
        #expect(shown["fields"]?["title"] == "Viestintäpäällikkö")
        #expect(shown["fields"]?["beats"] == .array(["landmines"]))
        #expect(shown["fields"]?["email"] == nil)
        let badRemove = try cli.run("contact", "edit", id, "--remove", "beats=weather")
        #expect(badRemove.status == 1 && badRemove.err.contains("holds no"))
        let setOnSet = try cli.run("contact", "edit", id, "--set", "beats=x")
        #expect(setOnSet.status == 2 && setOnSet.err.contains("use --add or --remove"))

        _ = try cli.ok("contact", "erase", id)
        let human = try cli.ok("contact", "show", id)
        #expect(human.contains("ERASED") && human.contains("hq-coordinator"))
        #expect(!human.contains("Rämö"))
        let exported = try cli.ok("export", "--format", "vcard")
        #expect(!exported.contains("Rämö") && !exported.contains("+358"))
        #expect(try cli.ok("log").contains("(erased)"))

        _ = try cli.ok("contact", "delete", id)
        #expect(try cli.ok("contact", "list", "--json") == "[]\n")
        #expect(try cli.ok("conflicts") == "no open conflicts\n")
        #expect(try cli.ok("conflicts", "--json") == "[]\n")
    }
}

/// Press contacts as they really arrive: re-imports, glued releases, phone exports.
@Suite(.serialized) struct CLIContactImportTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

    @Test func theSameFilesImportedTwiceMakeNoDuplicates() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        #expect(try cli.ok("contact", "import", CLI.samples + "/contacts.vcf").hasSuffix("new 3, updated 0, unchanged 0\n"))
        // It failed with "record … already exists" (one card has a UID).
        let again = try cli.run("contact", "import", CLI.samples + "/contacts.vcf")
        #expect(again.status == 0, "\(again.err)")
        #expect(again.out.hasSuffix("new 0, updated 0, unchanged 3\n"))
        let glued = Self.fixtures + "/press-release-glued-nb.txt"
        let first = try JSONValue.parse(try cli.ok("contact", "import", glued, "--json"))
        #expect(first["new"]?.arrayValue?.count == 2)
        let second = try JSONValue.parse(try cli.ok("contact", "import", glued, "--json"))
        #expect(second["new"] == .array([]) && second["updated"] == .array([]))
        #expect(second["unchanged"] == first["new"], "the same release twice is the same two contacts")
        #expect(try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue?.count == 5)

        // An updated export: one title changed, one card new, the rest as before.
        let file = cli.home + "/updated.vcf"
        let updated = try String(contentsOfFile: CLI.samples + "/contacts.vcf", encoding: .utf8)
            .replacingOccurrences(of: "TITLE:Viestintäpäällikkö", with: "TITLE:Viestintäjohtaja")
            + "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Taras Bondar\r\nEMAIL:t.bondar@umac.example\r\nEND:VCARD\r\n"
        try updated.write(toFile: file, atomically: true, encoding: .utf8)
        let third = try cli.ok("contact", "import", file)
        #expect(third.hasSuffix("new 1, updated 1, unchanged 2\n"), "\(third)")
        #expect(third.contains("updated") && third.contains("Aino Rämö-Lindqvist"))
        let contacts = try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue ?? []
        #expect(contacts.count == 6)
        #expect(contacts.contains { $0["fields"]?["title"] == "Viestintäjohtaja" })
    }

    @Test func aGluedReleaseThroughTheCommandLine() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let unclear = try cli.run("contact", "import", Self.fixtures + "/press-release-unclear-en.txt")
        #expect(unclear.status == 0)
        #expect(unclear.err.contains("check ") && unclear.err.contains("press-release-unclear-en.txt:4:"))
        #expect(try cli.ok("contact", "list").contains("CHECK"))
        let list = try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue ?? []
        #expect(list.first?["fields"]?["email"] == nil)
    }
}

extension CLIContactImportTests {
    @Test func aPhoneExportImportsWhole() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let file = Self.fixtures + "/phone-export-crcrlf.vcf"
        let r = try cli.run("contact", "import", file, "--country-code", "47")
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.hasSuffix("new 5, updated 0, unchanged 0\n"))
        #expect(r.err.contains("phone-export-crcrlf.vcf:13: card has no FN or N; named “Kari Lunde” from its e-mail address"))
        let again = try JSONValue.parse(try cli.ok("contact", "import", file, "--country-code", "47", "--json"))
        #expect(again["unchanged"]?.arrayValue?.count == 5 && again["new"] == .array([]), "\(again)")
        #expect(again["named"]?.arrayValue?.count == 3)
    }
}

extension CLIContactImportTests {
    @Test func aDefaultCountryCodeSetOnce() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        #expect(try cli.ok("contact", "country-code") == "none set\n")
        #expect(try cli.run("contact", "country-code", "047").status == 2)
        _ = try cli.ok("contact", "country-code", "47")
        #expect(try cli.ok("contact", "country-code") == "47\n")
        let file = cli.home + "/k.vcf"
        try "BEGIN:VCARD\nVERSION:3.0\nFN:Kari Nordmann\nTEL:900 00 000\nEND:VCARD\n".write(toFile: file, atomically: true, encoding: .utf8)
        _ = try cli.ok("contact", "import", file)
        let list = try JSONValue.parse(try cli.ok("contact", "list", "--json"))
        #expect(list.arrayValue?.first?["fields"]?["tel"] == .array([.object(["raw": "900 00 000", "e164": "+4790000000"])]))
        // A Ukrainian release still gives Ukrainian numbers.
        _ = try cli.ok("contact", "import", Self.fixtures + "/press-release-uk.txt")
        let tels = (try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue ?? []).flatMap { $0["fields"]?["tel"]?.arrayValue ?? [] }
        #expect(tels.contains(.object(["raw": "067 000 11 22", "e164": "+380670001122"])))
        _ = try cli.ok("contact", "country-code", "--clear")
        #expect(try cli.ok("contact", "country-code") == "none set\n")
    }
}

extension CLIContactImportTests {
    @Test func anArticlesBylinesTwice() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let file = Self.fixtures + "/article-bylines-en.txt"
        #expect(try cli.ok("contact", "import", file).hasSuffix("new 3, updated 0, unchanged 0\n"))
        #expect(try cli.ok("contact", "import", file).hasSuffix("new 0, updated 0, unchanged 3\n"))
        let list = try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue ?? []
        #expect(list.allSatisfy { $0["fields"]?["source"] == "Clearing the fields is only half the job: why mine action needs long-term funding" })
    }
}

extension CLIContactImportTests {
    @Test func duplicatesListedAndMerged() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        _ = try cli.ok("contact", "import", CLI.samples + "/contacts.vcf")
        #expect(try cli.ok("contact", "duplicates") == "no duplicates\n")
        let other = try cli.ok("contact", "add", "--set", "fn=Aino Rämö-Lindqvist", "--set", "tel=+358 40 000 0000",
                               "--set", "beats=EORE").trimmingCharacters(in: .whitespacesAndNewlines)
        let groups = try JSONValue.parse(try cli.ok("contact", "duplicates", "--json")).arrayValue ?? []
        try #require(groups.count == 1)
        #expect(groups[0]["shared"] == .array(["phone +358400000000", "name aino rämö-lindqvist"]))
        let ids = groups[0]["ids"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let keep = try #require(ids.first { $0 != other })
        let merged = try cli.ok("contact", "merge", keep, other)
        #expect(merged == "merged \(other) into \(keep): gained beats; \(other) deleted\n")
        #expect(try cli.ok("contact", "duplicates") == "no duplicates\n")
        #expect(try cli.run("contact", "merge", keep, keep).status == 2)
        let shown = try JSONValue.parse(try cli.ok("contact", "show", keep, "--json"))
        #expect(shown["fields"]?["beats"] == .array(["EORE"]))
    }
}

extension CLIContactImportTests {
    @Test func anErasureReachesTheWholePerson() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "hq", "--role", "coordinator")
        _ = try cli.ok("contact", "import", CLI.samples + "/contacts.vcf")
        // The sample card's UID names a contact this laptop did not make: it becomes the contact
        // named by that UID, the same on every laptop (`RecordID.contact(named:)`).
        let sigrun = RecordID.contact(named: "urn:uuid:0198f2a1-7c3e-7b2a-9d41-3f5e8c2b1a07").description
        let byMail = try cli.ok("contact", "add", "--set", "fn=Sigrun Ås", "--set", "email=Sigrun.As@npaid.example")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let byPhone = try cli.ok("contact", "add", "--set", "fn=S. Ås", "--set", "tel=+47 900 00 000", "--set", "email=sas@private.example")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // Reached through byPhone's private address: the same person, two steps away.
        let viaPrivate = try cli.ok("contact", "add", "--set", "fn=Sigrun", "--set", "email=sas@private.example")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // A colleague behind the same switchboard number is another person.
        let colleague = try cli.ok("contact", "add", "--set", "fn=Kari Lunde", "--set", "tel=+47 900 00 000")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let out = try cli.ok("contact", "erase", sigrun)
        #expect(out.contains("not erased \(colleague)  Kari Lunde  (shares phone +4790000000 under another name"))
        #expect(try JSONValue.parse(try cli.ok("contact", "show", colleague, "--json"))["fields"]?["fn"] == "Kari Lunde")
        #expect(out.hasPrefix("erased \(sigrun)  Sigrun Ødegård Ås\n"))
        for id in [byMail, byPhone, viaPrivate] { #expect(out.contains("erased \(id)")) }
        #expect(out.contains("(same person: e-mail sigrun.as@npaid.example)") && out.contains("(same person: phone +4790000000)"))
        let exported = try cli.ok("export", "--format", "vcard")
        #expect(!exported.contains("npaid.example") && !exported.contains("private.example") && !exported.contains("Ødegård"))
        #expect(exported.components(separatedBy: "+4790000000").count == 2, "only in the colleague's card")
        #expect(exported.contains("Aino Rämö-Lindqvist"), "another person is untouched")
    }

    @Test func eraseOnlyThisNamesTheOthers() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "hq", "--role", "coordinator")
        let a = try cli.ok("contact", "add", "--set", "fn=Kari Lunde", "--set", "email=kari.lunde@npaid.no").trimmingCharacters(in: .whitespacesAndNewlines)
        let b = try cli.ok("contact", "add", "--set", "fn=K. Lunde", "--set", "email=kari.lunde@npaid.no").trimmingCharacters(in: .whitespacesAndNewlines)
        let r = try JSONValue.parse(try cli.ok("contact", "erase", a, "--only-this", "--json"))
        #expect(r["erased"] == .array([.string(a)]))
        #expect(r["not_erased"]?.arrayValue?.first?["id"] == .string(b))
        #expect(try JSONValue.parse(try cli.ok("contact", "show", b, "--json"))["fields"]?["email"] == .array(["kari.lunde@npaid.no"]))
    }
}

extension CLIContactImportTests {
    @Test func colleaguesBehindOneSwitchboardStayTwo() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let file = cli.home + "/release.txt"
        try """
            Minerydding i Kharkiv
            Kontakter
            Håkon OrvedalNorsk Folkehjelp
            Tel: 22 03 77 00
            Kari LundeNorsk Folkehjelp
            Tel: 22 03 77 00 / Mob: 913 37 001
            Bilder
            """.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try cli.ok("contact", "import", file).hasSuffix("new 2, updated 0, unchanged 0\n"))
        #expect(try cli.ok("contact", "import", file).hasSuffix("new 0, updated 0, unchanged 2\n"))
        // A later release with Kari's mobile only finds her, not Håkon.
        try "Ny pressemelding\nKontakter\nKari LundeNorsk Folkehjelp\nSeniorrådgiver\nMob: 913 37 001\nBilder\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let third = try cli.ok("contact", "import", file)
        #expect(third.hasSuffix("new 0, updated 1, unchanged 0\n") && third.contains("Kari Lunde"))
    }
}

extension CLIContactImportTests {
    @Test func aReimportDoesNotBringBackADeletedContact() throws {
        let cli = CLI()
        defer { cli.cleanUp() }
        _ = try cli.ok("init", "--name", "press-laptop", "--role", "press")
        let file = Self.fixtures + "/press-release-glued-nb.txt"
        let first = try JSONValue.parse(try cli.ok("contact", "import", file, "--json"))
        let kari = try #require(first["new"]?.arrayValue?.last?.stringValue)
        _ = try cli.ok("contact", "delete", kari)
        let again = try cli.ok("contact", "import", file)
        #expect(again.hasSuffix("new 0, updated 0, unchanged 1, left alone 1 (deleted or erased here)\n"), "\(again)")
        #expect(try JSONValue.parse(try cli.ok("contact", "list", "--json")).arrayValue?.count == 1)
    }
}
