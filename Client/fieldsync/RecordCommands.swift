import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation

/// The options `note edit` and `contact edit` share.
struct EditOptions: ParsableArguments {
    @Option(name: .customLong("set"), help: "FIELD=VALUE: write a register field.") var sets: [String] = []
    @Option(name: .customLong("add"), help: "FIELD=VALUE: add an element to a set field.") var adds: [String] = []
    @Option(name: .customLong("remove"), help: "FIELD=VALUE: remove an element from a set field.") var removes: [String] = []
    @Option(name: .customLong("unset"), help: "FIELD: clear a value field (a set field loses its elements with --remove).") var unsets: [String] = []

    func edits() throws -> RecordEdits {
        var e = RecordEdits()
        e.sets = try sets.map { try Replica.splitAssignment($0, option: "--set") }
        e.adds = try adds.map { try Replica.splitAssignment($0, option: "--add") }
        e.removes = try removes.map { try Replica.splitAssignment($0, option: "--remove") }
        e.unsets = unsets
        return e
    }
}

/// A record as a confirmation names it: its id, and its ref (a note) or name (a contact).
func label(_ r: Replica, _ id: RecordID) -> String {
    let v = try? r.store.view(id)
    let name = v?.values["ref"]?.stringValue ?? v?.values["fn"]?.stringValue
    return name.map { "\(id) (\(TerminalText.escaped($0)))" } ?? id.description
}

/// What `add`, `edit`, `delete`, `show` and `list` do, for either record type.
enum RecordCommands {
    static func readJSONObjects(_ path: String) throws -> [(JSONValue, String)] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ClientError("cannot read \(path)") }
        guard let text = String(data: data, encoding: .utf8) else { throw ClientError("\(path) is not UTF-8 text") }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        // A JSON array or one object, or JSON Lines (one object per line).
        if trimmed.hasPrefix("[") || (trimmed.hasPrefix("{") && !trimmed.contains("\n")) {
            let v: JSONValue
            do { v = try JSONValue.parse(trimmed) } catch { throw ClientError("\(path): not valid JSON") }
            if case .array(let items) = v { return items.enumerated().map { ($1, "\(path): item \($0 + 1)") } }
            return [(v, "\(path):1")]
        }
        var out: [(JSONValue, String)] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.trimmingCharacters(in: .whitespaces)
            guard !l.isEmpty else { continue }
            do { out.append((try JSONValue.parse(l), "\(path):\(i + 1)")) } catch { throw ClientError("\(path):\(i + 1): not valid JSON") }
        }
        return out
    }

    static func add(type: RecordType, kind: String?, sets: [String], jsonFile: String?, newIDs: Bool, json: Bool) throws {
        let replica = try openReplica()
        var inputs: [RecordInput] = []
        guard !newIDs || jsonFile != nil else { throw ClientError.usage("--new-ids goes with --json-file") }
        if let jsonFile {
            guard sets.isEmpty, kind == nil || type == .contact else { throw ClientError.usage("give either --json-file or --kind/--set, not both") }
            for (v, place) in try readJSONObjects(jsonFile) {
                guard case .object(let o) = v else { throw ClientError("\(place): expected a JSON object") }
                // A GeoJSON Feature from our export re-imports as the note it came from.
                if o["type"] == "Feature", case .object(var props)? = o["properties"] {
                    props["location"] = o["geometry"]; props["id"] = o["id"]
                    inputs.append(try replica.input(type: type, object: props, where: place))
                } else if o["type"] == "FeatureCollection", case .array(let fs)? = o["features"] {
                    for (i, f) in fs.enumerated() {
                        guard case .object(var props)? = f["properties"] else { throw ClientError("\(place): feature \(i + 1) has no properties") }
                        props["location"] = f["geometry"]; props["id"] = f["id"]
                        inputs.append(try replica.input(type: type, object: props, where: "\(place) feature \(i + 1)"))
                    }
                } else {
                    inputs.append(try replica.input(type: type, object: o, where: place))
                }
            }
            guard !inputs.isEmpty else { throw ClientError("\(jsonFile) holds no records") }
            // Another laptop's export: only the device that made an id may create it (`RecordID`).
            if newIDs { for i in inputs.indices { inputs[i].id = nil } }
        } else {
            if type == .note {
                guard let kind else { throw ClientError.usage("--kind is required: one of \(replica.schema.kinds(of: .note).joined(separator: ", "))") }
                guard replica.schema.kinds(of: .note).contains(kind) else {
                    throw ClientError.usage("--kind must be one of \(replica.schema.kinds(of: .note).joined(separator: ", "))")
                }
            }
            guard !sets.isEmpty else {
                throw ClientError.usage("give at least one field with --set FIELD=VALUE (`fieldsync schema \(kind ?? type.description)` lists them)")
            }
            inputs = [try replica.input(type: type, kind: kind, sets: sets)]
        }
        let ids = try replica.add(inputs, type: type)
        if json { printJSON(.array(ids.map { .string($0.description) })) } else { ids.forEach { print($0) } }
        // The ids on standard output are for scripts; a person reading a file import sees a count.
        if let jsonFile, !json {
            FileHandle.standardError.write(Data("added \(ids.count) \(type)\(ids.count == 1 ? "" : "s") from \(jsonFile)\n".utf8))
        }
    }

    static func show(type: RecordType, id: String, json: Bool) throws {
        let replica = try openReplica()
        let rid = try replica.store.resolveID(id, type: type)
        guard let view = try replica.store.view(rid) else { throw ClientError("no \(type) \(id)") }
        let names = try replica.names()
        if json {
            var o = view.listingJSON.objectValue!
            o["conflict_details"] = .array(ConflictReport.items(for: view, names: names))
            printJSON(.object(o)); return
        }
        print("\(type) \(view.id)\(view.kind.map { " (\($0))" } ?? "")\(view.deleted ? "  [deleted]" : "")")
        print("created     \(Timestamps.iso(view.createdAt.millis)) by \(TerminalText.escaped(names[view.createdBy] ?? view.createdBy.description))")
        print("updated     \(Timestamps.iso(view.lastChanged.millis))")
        if let e = view.erasedBy {
            print("ERASED      personal data erased by \(TerminalText.escaped(names[e.author] ?? e.author.description)) at \(Timestamps.iso(e.hlc.millis))")
        }
        for name in view.fields.keys.sorted() {
            let f = view.fields[name]!
            let shown: String
            switch f.merge {
            case .register: shown = f.value.map(words) ?? "(erased)"
            case .set: shown = f.elements.map { $0.value.map(words) ?? "(erased)" }.joined(separator: "; ")
            }
            print("\(name.padding(toLength: max(11, name.count), withPad: " ", startingAt: 0)) \(shown)\(f.inConflict ? "   <- CONFLICT: \(f.survivors.count) values, see `fieldsync conflicts`" : "")")
        }
        if view.deleteConflict != nil { print("CONFLICT    deleted on one device while edited on another: see `fieldsync conflicts`") }
    }

    /// A structured value as words for `show`: "AP PMN-2 ×2 destroyed in situ", "Point 49.1987 N,
    /// 37.2611 E", "approved (checked)"; anything else as `display` gives it.
    static func words(_ v: JSONValue) -> String {
        guard let o = v.objectValue else { return display(v) }
        if let category = o["category"]?.stringValue, let model = o["model"]?.stringValue, let n = o["quantity"]?.intValue {
            let how = o["disposition"]?.stringValue.map { " " + $0.replacingOccurrences(of: "_", with: " ") } ?? ""
            return TerminalText.escaped("\(category) \(model) ×\(n)\(how)")
        }
        if let state = o["state"]?.stringValue {
            let since = o["changed_since"]?.stringValue.map { " (changed since \($0))" } ?? ""
            return TerminalText.escaped(state + since + (o["comment"]?.stringValue.map { ": \($0)" } ?? ""))
        }
        if let type = o["type"]?.stringValue, let coords = o["coordinates"]?.arrayValue {
            if type == "Point", coords.count >= 2, let lon = coords[0].doubleValue, let lat = coords[1].doubleValue {
                return "Point \(abs(lat)) \(lat < 0 ? "S" : "N"), \(abs(lon)) \(lon < 0 ? "W" : "E")"
            }
            return "\(TerminalText.escaped(type)) (`show --json` for its coordinates)"
        }
        if let name = o["name"]?.stringValue, o.count <= 2 { return TerminalText.escaped(name + (o["unit"]?.stringValue.map { ", \($0)" } ?? "")) }
        if let raw = o["raw"]?.stringValue { return TerminalText.escaped(raw + (o["e164"]?.stringValue.map { " (\($0))" } ?? "")) }
        return display(v)
    }

    /// A value for the terminal: text as it is, structures as JSON, control characters escaped.
    static func display(_ v: JSONValue) -> String { TerminalText.escaped(v.stringValue ?? v.canonicalString) }

    static let reviewStates = ["draft", "submitted", "approved", "rejected"]

    static func list(type: RecordType, kind: String?, status: String?, review: String? = nil, json: Bool) throws {
        let replica = try openReplica()
        if let kind, !replica.schema.kinds(of: .note).contains(kind) {
            throw ClientError.usage("--kind must be one of \(replica.schema.kinds(of: .note).joined(separator: ", "))")
        }
        if let review, !reviewStates.contains(review) {
            throw ClientError.usage("--review must be one of \(reviewStates.joined(separator: ", "))")
        }
        let rows = try replica.store.listing(type: type, kind: kind, status: status, review: review)
        if json {
            // The stored listing JSON, printed as it is: byte-identical on replicas that agree.
            print("[" + rows.joined(separator: ",") + "]")
            return
        }
        if rows.isEmpty { print(type == .note ? "no notes" : "no contacts"); return }
        // A header and aligned columns; every value escaped for the terminal.
        var table = [type == .note ? ["ID", "DATE", "KIND", "REF", "TEAM", "STATUS", "REVIEW", ""] : ["ID", "DATE", "NAME", "ORGANISATION", "E-MAIL", ""]]
        for row in rows {
            let v = try JSONValue.parse(row)
            let f = v["fields"]?.objectValue ?? [:]
            let date = String((v["created_at"]?.stringValue ?? "").prefix(10))
            var flags: [String] = []
            if v["conflicts"] != nil { flags.append("CONFLICT") }
            if !(f["to_check"]?.arrayValue ?? []).isEmpty { flags.append("CHECK") }
            let cells = type == .note
                ? [v["kind"]?.stringValue ?? "", f["ref"]?.stringValue ?? "", f["team"]?.stringValue ?? "", f["status"]?.stringValue ?? "",
                   f["review"]?["state"]?.stringValue ?? "draft"]
                : [f["fn"]?.stringValue ?? (v["erased"] != nil ? "(erased)" : ""), (f["org"]?.arrayValue?.first?["name"]?.stringValue) ?? "",
                   f["email"]?.arrayValue?.first?.stringValue ?? ""]
            table.append([v["id"]?.stringValue ?? "", date] + cells.map { TerminalText.escaped(String($0.prefix(40))) } + [flags.joined(separator: " ")])
        }
        let widths = table[0].indices.map { c in table.map { $0[c].count }.max() ?? 0 }
        for line in table {
            let padded = line.enumerated().map { c, v in c == line.count - 1 ? v : v.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
            print(padded.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
    }
}

struct NoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "note", abstract: "Field notes.",
                                                    subcommands: [Add.self, Edit.self, Delete.self, Show.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a note (or every note of a JSON / JSON Lines file).")
        @Option(help: "hazard_area, survey, clearance_day, eod_spot, accident, eore_session or observation.") var kind: String?
        @Option(name: .customLong("set"), help: "FIELD=VALUE (repeatable; a set field takes one element each time).") var sets: [String] = []
        @Option(name: .customLong("json-file"), help: "Add the notes in this file.") var jsonFile: String?
        @Flag(name: .customLong("new-ids"), help: "Give every note of the file a new id (an export from another laptop: only the laptop that made an id may create it).")
        var newIDs = false
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.add(type: .note, kind: kind, sets: sets, jsonFile: jsonFile, newIDs: newIDs, json: output.json) }
    }

    struct Edit: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change fields of a note.")
        @Argument(help: "Note id or unique prefix.") var id: String
        @OptionGroup var edit: EditOptions
        func run() throws {
            let r = try openReplica()
            let rid = try r.store.resolveID(id, type: .note), edits = try edit.edits()
            try r.edit(rid, type: .note, edits: edits)
            print("edited \(label(r, rid)): \(edits.fieldNames.joined(separator: ", "))")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a note (a tombstone: concurrent edits keep it).")
        @Argument(help: "Note id or unique prefix.") var id: String
        @Option(help: "Why, for the local log.") var reason: String?
        func run() throws {
            let r = try openReplica()
            let rid = try r.store.resolveID(id, type: .note)
            let name = label(r, rid)
            try r.delete(rid, type: .note)
            if let reason { try r.store.setMeta("delete_reason:\(rid)", reason) }
            print("deleted \(name)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one note, with its conflicts.")
        @Argument(help: "Note id or unique prefix.") var id: String
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.show(type: .note, id: id, json: output.json) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List notes.")
        @Option(help: "Only notes of this kind.") var kind: String?
        @Option(help: "Only notes whose own `status` field is this.") var status: String?
        @Option(help: "Only notes in this review state: draft, submitted (the coordinator's queue), approved or rejected.") var review: String?
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.list(type: .note, kind: kind, status: status, review: review, json: output.json) }
    }
}

struct ContactCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "contact", abstract: "Press contacts.",
                                                    subcommands: [Add.self, Edit.self, Delete.self, Show.self, List.self, Import.self, Erase.self,
                                                                  CountryCode.self, Duplicates.self, Merge.self])

    struct Duplicates: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List contacts that look like one person (a shared e-mail address, phone number or name).")
        @OptionGroup var output: OutputOptions
        func run() throws {
            let groups = try ContactDuplicates.find(try openReplica())
            if output.json {
                printJSON(.array(groups.map { g in
                    .object(["ids": .array(g.ids.map { .string($0.description) }), "names": .array(g.names.map { .string($0) }),
                             "shared": .array(g.shared.map { .string($0) })])
                }))
                return
            }
            if groups.isEmpty { print("no duplicates"); return }
            for g in groups {
                print("same \(g.shared.joined(separator: ", ")):")
                for (id, name) in zip(g.ids, g.names) { print("  \(id)  \(name)") }
            }
            print("merge two with `fieldsync contact merge KEEP OTHER`")
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge OTHER into KEEP in one change: KEEP gains what it lacks, OTHER is deleted.")
        @Argument(help: "The contact to keep (id or unique prefix).") var keep: String
        @Argument(help: "The contact merged into it and deleted.") var other: String
        func run() throws {
            let r = try openReplica()
            let k = try r.store.resolveID(keep, type: .contact), o = try r.store.resolveID(other, type: .contact)
            let gained = try r.mergeContacts(keep: k, other: o)
            print("merged \(o) into \(k)" + (gained.isEmpty ? " (it held nothing more)" : ": gained \(gained.joined(separator: ", "))")
                  + "; \(o) deleted")
        }
    }

    /// The replica's default calling code for national numbers (meta, this laptop only).
    static let countryCodeMeta = "contact_country_code"

    static func checkCountryCode(_ cc: String, option: String) throws {
        guard (1...3).contains(cc.count), cc.allSatisfy({ $0.isASCII && $0.isNumber }), !cc.hasPrefix("0") else {
            throw ClientError.usage("\(option) takes 1 to 3 digits, e.g. 47")
        }
    }

    struct CountryCode: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "country-code",
            abstract: "Show or set this laptop's calling code for national numbers that no import option, card or release places.")
        @Argument(help: "1 to 3 digits, e.g. 47; none to show the one set.") var code: String?
        @Flag(help: "Forget the default.") var clear = false
        func run() throws {
            let replica = try openReplica()
            if clear {
                guard code == nil else { throw ClientError.usage("give a code or --clear, not both") }
                try replica.store.setMeta(ContactCommand.countryCodeMeta, "")
            } else if let code {
                try ContactCommand.checkCountryCode(code, option: "country-code")
                try replica.store.setMeta(ContactCommand.countryCodeMeta, code)
            } else {
                let current = try replica.store.meta(ContactCommand.countryCodeMeta) ?? ""
                print(current.isEmpty ? "none set" : current)
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a contact.")
        @Option(name: .customLong("set"), help: "FIELD=VALUE (repeatable).") var sets: [String] = []
        @Option(name: .customLong("json-file"), help: "Add the contacts in this JSON / JSON Lines file.") var jsonFile: String?
        @Flag(name: .customLong("new-ids"), help: "Give every contact of the file a new id (an export from another laptop).")
        var newIDs = false
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.add(type: .contact, kind: nil, sets: sets, jsonFile: jsonFile, newIDs: newIDs, json: output.json) }
    }

    struct Edit: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change fields of a contact.")
        @Argument var id: String
        @OptionGroup var edit: EditOptions
        func run() throws {
            let r = try openReplica()
            let rid = try r.store.resolveID(id, type: .contact), edits = try edit.edits()
            try r.edit(rid, type: .contact, edits: edits)
            print("edited \(label(r, rid)): \(edits.fieldNames.joined(separator: ", "))")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a contact.")
        @Argument var id: String
        @Option(help: "Why, for the local log.") var reason: String?
        func run() throws {
            let r = try openReplica()
            let rid = try r.store.resolveID(id, type: .contact)
            let name = label(r, rid)
            try r.delete(rid, type: .contact)
            if let reason { try r.store.setMeta("delete_reason:\(rid)", reason) }
            print("deleted \(name)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one contact.")
        @Argument var id: String
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.show(type: .contact, id: id, json: output.json) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List contacts.")
        @OptionGroup var output: OutputOptions
        func run() throws { try RecordCommands.list(type: .contact, kind: nil, status: nil, json: output.json) }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import contacts: vCard 3/4 (.vcf), jCard (.json), or a press release's contact block (text).")
        @Argument(help: "The file.") var file: String
        @Flag(name: .customLong("skip-invalid"), help: "Import the good cards and report each bad one, instead of importing nothing.") var skipInvalid = false
        @Option(name: .customLong("country-code"),
                help: "Calling code for national numbers, e.g. 47 (else the card's or release's country, else `contact country-code`).")
        var countryCode: String?
        @OptionGroup var output: OutputOptions

        func run() throws {
            if let cc = countryCode { try ContactCommand.checkCountryCode(cc, option: "--country-code") }
            let replica = try openReplica()
            let fallback = try replica.store.meta(ContactCommand.countryCodeMeta).flatMap { $0.isEmpty ? nil : $0 }
            let results = try ContactImport.read(file: file, countryCode: countryCode, fallbackCountryCode: fallback)
            let (inputs, skipped) = try ContactImport.inputs(results, replica: replica, file: file, skipInvalid: skipInvalid)
            for s in skipped { FileHandle.standardError.write(Data("fieldsync: skipped \(s)\n".utf8)) }
            // Display names made up for nameless cards (phone and mail-client exports).
            let remarks = results.flatMap { (try? $0.get())?.remarks ?? [] }
            for r in remarks { FileHandle.standardError.write(Data("fieldsync: \(r)\n".utf8)) }
            for input in inputs { for (field, v) in input.elements where field == "to_check" {
                FileHandle.standardError.write(Data("fieldsync: check \(v.stringValue ?? "")\n".utf8))
            } }
            // A re-import matches what exists (UID, e-mail, phone) and never duplicates.
            let outcome = inputs.isEmpty ? ContactImportOutcome() : try ContactImport.apply(inputs, replica: replica)
            if output.json {
                var o = outcome.json.objectValue ?? [:]
                o["skipped"] = .array(skipped.map { .string($0) })
                o["named"] = .array(remarks.map { .string($0) })
                o["to_check"] = .array(inputs.flatMap { $0.elements.filter { $0.0 == "to_check" }.map(\.1) })
                printJSON(.object(o))
            } else {
                for row in outcome.rows {
                    print("\(row.status.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(row.id)  \(row.name)")
                }
                print(outcome.summary)
            }
        }
    }

    struct Erase: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Coordinator: erase a person's personal data on every replica: this contact and every contact sharing an e-mail address or phone number with it.")
        @Argument var id: String
        @Flag(name: .customLong("only-this"), help: "Erase this contact only, and name the others that share an address or number.")
        var onlyThis = false
        @OptionGroup var output: OutputOptions
        func run() throws {
            let r = try openReplica()
            let rid = try r.store.resolveID(id, type: .contact)
            guard try r.myEntry().role == .coordinator else { throw ClientError("only a coordinator may erase a contact") }
            let name = try r.store.view(rid)?.values["fn"]?.stringValue ?? ""
            // A data-protection request is about a person, not one record of her.
            let (others, colleagues) = try r.samePerson(as: rid)
            let erased = [(id: rid, name: name, shares: "")] + (onlyThis ? [] : others)
            try r.store.commitLocal(key: r.key) { reader in
                guard try reader.view(rid) != nil else { throw ClientError("no contact \(id)") }
                var d = ChangeDraft()
                for e in erased { d.erase(e.id) }
                return d
            }
            try r.store.checkpoint()
            if output.json {
                func list(_ rows: [(id: RecordID, name: String, shares: String)]) -> JSONValue {
                    .array(rows.map { .object(["id": .string($0.id.description), "name": .string($0.name), "shares": .string($0.shares)]) })
                }
                printJSON(.object(["erased": .array(erased.map { .string($0.id.description) }),
                                   "not_erased": onlyThis ? list(others) : .array([]), "reached": onlyThis ? .array([]) : list(others),
                                   "other_names": list(colleagues)]))
                return
            }
            print("erased \(rid)  \(name)")
            for o in others where !onlyThis { print("erased \(o.id)  \(o.name)  (same person: \(o.shares))") }
            for o in others where onlyThis { print("not erased (--only-this) \(o.id)  \(o.name)  (shares \(o.shares))") }
            for o in colleagues {
                print("not erased \(o.id)  \(o.name)  (shares \(o.shares) under another name: erase it by its id if it is the same person)")
            }
        }
    }
}

/// `fieldsync schema [KIND]`: what each kind of record holds, from `Schema/records.json`, so
/// fields can be found without reading the source.
struct SchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema", abstract: "List the record kinds, or the fields of one (note, contact, or a note kind).",
        discussion: "Each field with its type, whether it is a set (--add/--remove) or a value (--set), its limits and allowed values.")
    @Argument(help: "note, contact, or a note kind such as clearance_day.") var kind: String?
    @OptionGroup var output: OutputOptions

    func run() throws {
        let schema = RecordSchema.standard
        guard let kind else {
            let kinds: [String: JSONValue] = Dictionary(uniqueKeysWithValues: RecordType.allCases.map { t in
                (t.description, JSONValue.array(schema.kinds(of: t).map { .string($0) }))
            })
            if output.json { printJSON(.object(kinds)); return }
            print("note kinds: \(schema.kinds(of: .note).joined(separator: ", "))")
            print("contact: one kind")
            print("`fieldsync schema KIND` lists a kind's fields.")
            return
        }
        let type: RecordType, noteKind: String?
        if let t = RecordType.allCases.first(where: { $0.description == kind }) {
            (type, noteKind) = (t, nil)
        } else if schema.kinds(of: .note).contains(kind) {
            (type, noteKind) = (.note, kind)
        } else {
            let all = RecordType.allCases.map(\.description) + schema.kinds(of: .note)
            throw ClientError.usage("'\(kind)' is not a record type or kind: one of \(all.joined(separator: ", "))")
        }
        let names = schema.fieldNames(type: type, kind: noteKind)
        var rows: [(String, FieldSpec)] = names.compactMap { n in schema.field(n, type: type, kind: noteKind).map { (n, $0) } }
        rows.sort { $0.0 < $1.0 }
        if output.json {
            printJSON(.object(Dictionary(uniqueKeysWithValues: rows.map { ($0.0, Self.json($0.1, example: $0.1.values == nil ? schema.examples[$0.1.type] : nil)) })))
            return
        }
        let width = rows.map(\.0.count).max() ?? 0
        print("\(noteKind.map { "note of kind \($0)" } ?? type.description): \(rows.count) fields")
        for (name, spec) in rows {
            print(name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + Self.describe(spec))
            if spec.values == nil, spec.writtenBy == nil, let example = schema.examples[spec.type] {
                print(String(repeating: " ", count: width + 4) + "e.g. --set \(name)=\(example)")
            }
        }
    }

    static func describe(_ s: FieldSpec) -> String {
        var parts = [s.merge == .set ? "set of \(s.type) (one element per --set or --add)" : s.type]
        if let v = s.values { parts.append("one of " + v.joined(separator: "|")) }
        if let n = s.maxLength { parts.append("at most \(n) characters") }
        if let n = s.maxItems { parts.append(s.merge == .set ? "at most \(n) elements" : "at most \(n) positions") }
        if let lo = s.min, let hi = s.max { parts.append("\(Self.number(lo))…\(Self.number(hi))") }
        if s.isPersonal { parts.append("personal (erased by `contact erase`)") }
        if s.writtenBy == "review" { parts.append("set by `fieldsync submit`/`review` only") }
        return parts.joined(separator: ", ")
    }

    static func number(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d) }

    static func json(_ s: FieldSpec, example: String? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["type": .string(s.type), "merge": .string(s.merge == .set ? "set" : "register")]
        if let example, s.writtenBy == nil { o["example"] = .string(example) }
        if let v = s.values { o["values"] = .array(v.map { .string($0) }) }
        if let n = s.maxLength { o["max_length"] = .int(Int64(n)) }
        if let n = s.maxItems { o["max_items"] = .int(Int64(n)) }
        if let n = s.min { o["min"] = .double(n) }
        if let n = s.max { o["max"] = .double(n) }
        if s.isPersonal { o["personal"] = .bool(true) }
        if let w = s.writtenBy { o["written_by"] = .string(w) }
        return .object(o)
    }
}
