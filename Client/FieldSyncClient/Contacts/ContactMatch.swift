import FieldSyncCore
import FieldSyncStore
import Foundation

/// What tells two contacts to be the same person: an e-mail address (compared without case), a
/// phone number (E.164, or the national digits as written), and, for a contact with neither,
/// its name together with its source.
public enum ContactIdentity {
    public static func emailKey(_ v: JSONValue) -> String? {
        guard let s = v.stringValue, !s.isEmpty else { return nil }
        return "e:" + s.lowercased()
    }

    /// "+4795045667" and "95045667" written in a Norwegian release are one number: an element
    /// with both forms gives both keys, an element with the national form only gives that one.
    public static func phoneKeys(_ v: JSONValue) -> [String] {
        var keys: [String] = []
        if let e = v["e164"]?.stringValue { keys.append("t:" + e) }
        if let raw = v["raw"]?.stringValue {
            let trimmed = raw.trimmingCharacters(in: .whitespaces)
            var digits = trimmed.filter { $0.isASCII && $0.isNumber }
            if trimmed.hasPrefix("+") || digits.hasPrefix("00") {
                if keys.isEmpty, digits.count >= 7 { keys.append("t:+" + (digits.hasPrefix("00") ? String(digits.dropFirst(2)) : digits)) }
            } else {
                while digits.hasPrefix("0") { digits.removeFirst() }
                if digits.count >= 6 { keys.append("n:" + digits) }
            }
        }
        return keys
    }

    /// The same name with the same source, organisation or title (a press release read twice,
    /// a card with neither address nor number), or the bare name of a card with nothing else.
    static func nameKeys(_ fields: [String: JSONValue]) -> [String] {
        guard let fn = fields["fn"]?.stringValue?.lowercased() else { return [] }
        var with = [fields["source"]?.stringValue, fields["title"]?.stringValue].compactMap { $0 }
        with += (fields["org"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
        return with.map { "s:" + fn + "\u{0}" + $0.lowercased() } + ["s:" + fn + "\u{0}"]
    }

    /// Every key of a contact's fields (a listing's "fields" object), strongest first; name and
    /// source only for a contact with no address or number (`nameAlways` for the ones stored).
    public static func keys(_ fields: [String: JSONValue], nameAlways: Bool = true) -> [String] {
        var out = (fields["email"]?.arrayValue ?? []).compactMap(emailKey)
        out += (fields["tel"]?.arrayValue ?? []).flatMap(phoneKeys)
        if nameAlways {
            out += nameKeys(fields)
        } else if out.isEmpty {
            let keys = nameKeys(fields)
            out += keys.count > 1 ? keys.dropLast() : keys  // the bare name only for a bare card
        }
        return out
    }

    static func fields(_ input: RecordInput) -> [String: JSONValue] {
        var fields: [String: JSONValue] = [:]
        for (f, v) in input.registers { fields[f] = v }
        for (f, v) in input.elements { fields[f] = .array((fields[f]?.arrayValue ?? []) + [v]) }
        return fields
    }

    static func keys(_ input: RecordInput) -> [String] { keys(fields(input), nameAlways: false) }

    /// The input's name, or "" when the importer made it up (it names no one).
    static func name(_ input: RecordInput) -> String {
        input.fillOnly.contains("fn") ? "" : input.registers.first { $0.0 == "fn" }?.1.stringValue ?? ""
    }

    /// Whether two names may be one person's: a word in common ("Sigrun Ås", "S. Ås"), or either
    /// names no one. Colleagues behind one switchboard number or press@ address are not.
    public static func sameName(_ a: String, _ b: String) -> Bool {
        func words(_ s: String) -> Set<String> {
            Set(s.lowercased().split(whereSeparator: { !$0.isLetter }).filter { $0.count >= 2 }.map(String.init))
        }
        let (wa, wb) = (words(a), words(b))
        return wa.isEmpty || wb.isEmpty || !wa.isDisjoint(with: wb)
    }
}

/// What one `contact import` did.
public struct ContactImportOutcome: Sendable {
    public enum Status: String, Sendable {
        case new, updated, unchanged
        /// Matched a contact deleted or erased here: left as it is, never brought back.
        case leftAlone = "left alone"
    }
    public struct Row: Sendable {
        public let id: RecordID
        public let status: Status
        public let name: String
    }
    public var rows: [Row] = []

    public init() {}

    public func count(_ s: Status) -> Int { rows.filter { $0.status == s }.count }

    /// "new 2, updated 1, unchanged 5" (and what was left alone, when anything was).
    public var summary: String {
        var s = "new \(count(.new)), updated \(count(.updated)), unchanged \(count(.unchanged))"
        if count(.leftAlone) > 0 { s += ", left alone \(count(.leftAlone)) (deleted or erased here)" }
        return s
    }

    public var json: JSONValue {
        func ids(_ s: Status) -> JSONValue { .array(rows.filter { $0.status == s }.map { .string($0.id.description) }) }
        return .object(["new": ids(.new), "updated": ids(.updated), "unchanged": ids(.unchanged), "left_alone": ids(.leftAlone),
                        "imported": .array(rows.map { .string($0.id.description) })])
    }
}

extension ContactImport {
    /// Imports checked cards as one local transaction: each card is matched with a contact that
    /// exists (its UID's id, else an e-mail address, else a phone number, else name and source)
    /// or with an earlier card of the same file; a match gains what it lacks and takes the
    /// card's register values where they differ, and keeps everything else. Nothing is duplicated,
    /// and a contact deleted or erased here is never written to.
    public static func apply(_ inputs: [RecordInput], replica: Replica) throws -> ContactImportOutcome {
        var known: [String: RecordID] = [:]
        var knownName: [RecordID: String] = [:]
        // Live contacts first; a deleted one only where no live one matches, so that re-importing
        // an old file does not bring back what someone deleted (it is left alone, and said so).
        let rows = try replica.store.listing(type: .contact, includeDeleted: true).map { try JSONValue.parse($0) }
        for deleted in [false, true] {
            for v in rows where (v["deleted"] == .bool(true)) == deleted {
                guard let id = v["id"]?.stringValue.flatMap(RecordID.init) else { continue }
                let f = v["fields"]?.objectValue ?? [:]
                knownName[id] = f["fn"]?.stringValue ?? ""
                for k in ContactIdentity.keys(f) where known[k] == nil { known[k] = id }
            }
        }
        var outcome = ContactImportOutcome()
        try replica.store.commitLocal(key: replica.key) { reader in
            outcome = ContactImportOutcome()
            // Group the cards by the record they land in, in file order.
            var groups: [(id: RecordID?, input: RecordInput, exists: Bool)] = []
            var groupOfKey: [String: Int] = [:]
            var groupOfID: [RecordID: Int] = [:]
            for input in inputs {
                let keys = ContactIdentity.keys(input)
                let name = ContactIdentity.name(input)
                var target = input.id.flatMap { groupOfID[$0] } ?? keys.lazy.compactMap { groupOfKey[$0] }.first {
                    ContactIdentity.sameName(name, ContactIdentity.name(groups[$0].input))
                }
                if target == nil {
                    var id = input.id
                    var exists = false
                    if let uid = id { exists = try reader.view(uid) != nil }
                    // A card of a record this laptop has not received and did not make: only its
                    // maker may create that id (`RecordID`), so the card becomes the contact named
                    // by its UID, the same on every laptop that imports it.
                    if !exists, let uid = id, !uid.mayBeCreated(by: replica.key.deviceID) {
                        let named = RecordID.contact(named: "urn:uuid:\(uid)")
                        id = named
                        exists = try reader.view(named) != nil
                    }
                    if !exists, let matched = keys.lazy.compactMap({ known[$0] }).first(where: { ContactIdentity.sameName(name, knownName[$0] ?? "") }) {
                        id = matched
                        exists = true
                    }
                    target = id.flatMap { groupOfID[$0] }
                    if target == nil {
                        groups.append((id, input, exists))
                        target = groups.count - 1
                        if let id { groupOfID[id] = target }
                        for k in keys where groupOfKey[k] == nil { groupOfKey[k] = target }
                        continue
                    }
                }
                guard let t = target else { continue }
                groups[t].input = merged(groups[t].input, input)
                for k in keys where groupOfKey[k] == nil { groupOfKey[k] = t }
            }

            var d = ChangeDraft()
            var fresh = RecordID.make(groups.count { $0.id == nil }, .contact, by: replica.key.deviceID).makeIterator()
            for g in groups {
                let name = g.input.registers.first { $0.0 == "fn" }?.1.stringValue ?? ""
                if g.exists, let id = g.id {
                    let ops = try reader.ops(id)
                    guard let view = ops.materialize(schema: replica.schema), !view.deleted, view.erasedBy == nil else {
                        outcome.rows.append(.init(id: id, status: .leftAlone, name: name))
                        continue
                    }
                    let changed = update(&d, ops: ops, view: view, with: g.input)
                    outcome.rows.append(.init(id: id, status: changed ? .updated : .unchanged, name: name))
                } else {
                    guard let id = g.id ?? fresh.next() else { continue }
                    d.create(id, type: .contact, kind: nil)
                    for (f, v) in g.input.registers { d.set(f, to: v, onNew: id, type: .contact) }
                    for (f, v) in g.input.elements { d.add(f, v, record: id, type: .contact) }
                    outcome.rows.append(.init(id: id, status: .new, name: name))
                }
            }
            return d
        }
        return outcome
    }

    /// A later card of the same person: its set elements join, its registers fill what is empty.
    static func merged(_ a: RecordInput, _ b: RecordInput) -> RecordInput {
        var out = a
        for (f, v) in b.registers where !out.registers.contains(where: { $0.0 == f }) {
            out.registers.append((f, v))
            if b.fillOnly.contains(f) { out.fillOnly.insert(f) }
        }
        for (f, v) in b.elements where !out.elements.contains(where: { $0.0 == f && $0.1 == v }) { out.elements.append((f, v)) }
        return out
    }

    /// Drafts the ops that bring an existing contact up to a card; true when there are any.
    static func update(_ d: inout ChangeDraft, ops: RecordOps, view: RecordView, with input: RecordInput) -> Bool {
        var changed = false
        for (f, v) in input.registers where view.fields[f]?.value != v {
            if input.fillOnly.contains(f), view.fields[f]?.value != nil { continue }
            d.set(f, to: v, on: ops, type: .contact)
            changed = true
        }
        var added: Set<JSONValue> = []
        for (f, v) in input.elements {
            let existing = view.fields[f]?.elements.compactMap(\.value) ?? []
            switch f {
            case "email":
                let key = ContactIdentity.emailKey(v)
                if existing.contains(where: { ContactIdentity.emailKey($0) == key }) { continue }
            case "org":
                let name = v["name"]?.stringValue?.lowercased()
                if existing.contains(where: { $0["name"]?.stringValue?.lowercased() == name }) { continue }
            case "tel":
                let keys = Set(ContactIdentity.phoneKeys(v))
                if let same = existing.first(where: { !keys.isDisjoint(with: ContactIdentity.phoneKeys($0)) }) {
                    // The same number: replaced only when the card adds its E.164 form.
                    guard same["e164"] == nil, v["e164"] != nil, same != v else { continue }
                    d.remove(f, same, on: ops, type: .contact)
                }
            default:
                if existing.contains(v) { continue }
            }
            guard added.insert(.array([.string(f), v])).inserted else { continue }
            d.add(f, v, record: view.id, type: .contact)
            changed = true
        }
        return changed
    }
}

// MARK: - Duplicates and merging

/// Contacts that look like one person: they share an e-mail address, a phone number or a name.
public struct ContactDuplicates: Sendable {
    public struct Group: Sendable {
        public var ids: [RecordID]
        public var names: [String]
        /// What they share, as shown: "e-mail a@b.org", "phone +4795045667", "name Kari Lunde".
        public var shared: [String]
    }

    static func shown(_ key: String) -> String {
        let body = String(key.dropFirst(2))
        switch key.prefix(2) {
        case "e:": return "e-mail " + body
        case "t:", "n:": return "phone " + body
        default: return "name " + body
        }
    }

    /// Groups of two or more live contacts, each in id order, the groups in order of their first id.
    public static func find(_ replica: Replica) throws -> [Group] {
        var ids: [RecordID] = []
        var names: [String] = []
        var keysOf: [[String]] = []
        for row in try replica.store.listing(type: .contact) {
            let v = try JSONValue.parse(row)
            guard let id = v["id"]?.stringValue.flatMap(RecordID.init), v["erased"] == nil else { continue }
            let f = v["fields"]?.objectValue ?? [:]
            var keys = ContactIdentity.keys(f, nameAlways: false).filter { !$0.hasPrefix("s:") }
            if let fn = f["fn"]?.stringValue { keys.append("f:" + fn.lowercased()) }
            ids.append(id)
            names.append(f["fn"]?.stringValue ?? "")
            keysOf.append(keys)
        }
        // Union-find over shared keys.
        var parent = Array(ids.indices)
        func root(_ i: Int) -> Int {
            var i = i
            while parent[i] != i { parent[i] = parent[parent[i]]; i = parent[i] }
            return i
        }
        var firstWith: [String: Int] = [:]
        var sharedKeys: Set<String> = []
        for (i, keys) in keysOf.enumerated() {
            for k in keys {
                if let j = firstWith[k] {
                    parent[root(i)] = root(j)
                    sharedKeys.insert(k)
                } else {
                    firstWith[k] = i
                }
            }
        }
        var groups: [Int: [Int]] = [:]
        for i in ids.indices { groups[root(i), default: []].append(i) }
        return groups.values.filter { $0.count > 1 }.sorted { $0[0] < $1[0] }.map { members in
            var shared: [String] = []
            for i in members { for k in keysOf[i] where sharedKeys.contains(k) && !shared.contains(shown(k)) { shared.append(shown(k)) } }
            return Group(ids: members.map { ids[$0] }, names: members.map { names[$0] }, shared: shared)
        }
    }
}

extension Replica {
    /// `contact merge KEEP OTHER`: one change in which KEEP gains what OTHER has and it lacks (its
    /// own values stay where both have one) and OTHER is deleted. Two laptops merging the same pair
    /// differently while offline converge like any concurrent edit and delete: a record edited by
    /// one and deleted by the other stays, with a delete/edit conflict for a coordinator.
    /// Returns the fields KEEP gained.
    @discardableResult
    public func mergeContacts(keep: RecordID, other: RecordID) throws -> [String] {
        guard keep != other else { throw ClientError.usage("give two different contacts") }
        var gained: [String] = []
        try store.commitLocal(key: key) { reader in
            let keepOps = try reader.ops(keep), otherOps = try reader.ops(other)
            guard let k = keepOps.materialize(schema: schema), !k.deleted, k.type == .contact else { throw ClientError("no contact \(keep)") }
            guard let o = otherOps.materialize(schema: schema), !o.deleted, o.type == .contact else { throw ClientError("no contact \(other)") }
            guard k.erasedBy == nil, o.erasedBy == nil else { throw ClientError("an erased contact is not merged: delete it instead") }
            var input = RecordInput(id: keep)
            for (name, f) in o.fields.sorted(by: { $0.key < $1.key }) {
                switch f.merge {
                case .register:
                    if let v = f.value { input.registers.append((name, v)); input.fillOnly.insert(name) }
                case .set:
                    for e in f.elements { if let v = e.value { input.elements.append((name, v)) } }
                }
            }
            var d = ChangeDraft()
            _ = ContactImport.update(&d, ops: keepOps, view: k, with: input)
            gained = Array(Set(d.ops.compactMap { $0.field.isEmpty ? nil : $0.field })).sorted()
            d.delete(otherOps, type: .contact)
            return d
        }
        return gained
    }
}

extension Replica {
    /// The other contacts of the same person as `id`: every record, deleted ones too, reached
    /// from it through a shared e-mail address or phone number (and from those, the same way).
    /// Names alone do not link: two people may share one. But a shared switchboard number or
    /// press@ address links colleagues too, so a record whose name has no word in common with
    /// the first one's is listed in `colleagues` and not reached through.
    public func samePerson(as id: RecordID) throws -> (same: [(id: RecordID, name: String, shares: String)],
                                                      colleagues: [(id: RecordID, name: String, shares: String)]) {
        var records: [(id: RecordID, name: String, keys: [String])] = []
        for row in try store.listing(type: .contact, includeDeleted: true) {
            let v = try JSONValue.parse(row)
            guard let rid = v["id"]?.stringValue.flatMap(RecordID.init), v["erased"] == nil else { continue }
            let f = v["fields"]?.objectValue ?? [:]
            records.append((rid, f["fn"]?.stringValue ?? "", ContactIdentity.keys(f, nameAlways: false).filter { !$0.hasPrefix("s:") }))
        }
        guard let start = records.first(where: { $0.id == id }) else { return ([], []) }
        func words(_ name: String) -> Set<String> {
            Set(name.lowercased().split(whereSeparator: { !$0.isLetter }).filter { $0.count >= 2 }.map(String.init))
        }
        let startWords = words(start.name)
        var reached: Set<RecordID> = [id]
        var frontier = Set(start.keys)
        var same: [(id: RecordID, name: String, shares: String)] = []
        var colleagues: [(id: RecordID, name: String, shares: String)] = []
        var grew = true
        while grew {
            grew = false
            for r in records where !reached.contains(r.id) {
                guard let k = r.keys.first(where: frontier.contains) else { continue }
                reached.insert(r.id)
                if startWords.isDisjoint(with: words(r.name)) && !startWords.isEmpty && !words(r.name).isEmpty {
                    colleagues.append((r.id, r.name, ContactDuplicates.shown(k)))
                    continue
                }
                frontier.formUnion(r.keys)
                same.append((r.id, r.name, ContactDuplicates.shown(k)))
                grew = true
            }
        }
        return (same, colleagues)
    }
}
