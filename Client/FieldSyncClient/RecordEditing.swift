import FieldSyncCore
import FieldSyncStore
import Foundation

/// Field values for a new record, or edits to an existing one, checked against the schema
/// before anything is written.
public struct RecordInput: Sendable {
    public var id: RecordID?
    public var kind: String?
    /// Register fields: one value each. Set fields: their elements.
    public var registers: [(String, JSONValue)] = []
    public var elements: [(String, JSONValue)] = []
    /// Registers an importer guessed (a name split from a press release, a display name made from
    /// an address): a re-import writes them only where the record has no value.
    public var fillOnly: Set<String> = []

    public init(id: RecordID? = nil, kind: String? = nil) { self.id = id; self.kind = kind }
}

public struct RecordEdits: Sendable {
    public var sets: [(String, String)] = []
    public var adds: [(String, String)] = []
    public var removes: [(String, String)] = []
    /// Value fields to clear.
    public var unsets: [String] = []
    public init() {}
    public var isEmpty: Bool { sets.isEmpty && adds.isEmpty && removes.isEmpty && unsets.isEmpty }
    /// The fields touched, each once, in the order given.
    public var fieldNames: [String] {
        var seen: Set<String> = []
        return ((sets + adds + removes).map(\.0) + unsets).filter { seen.insert($0).inserted }
    }
}

extension Replica {
    /// Largest file `--set FIELD=@FILE` reads: a geometry of the schema's 10,000 positions is
    /// well under a megabyte.
    static let maxValueFileBytes = 4 << 20

    /// A `--set`/`--add` value as the schema reads it; `@FILE` for a GeoJSON field reads the
    /// geometry from a file (a bare geometry, a Feature, or a FeatureCollection of one feature).
    public func parse(_ text: String, field: String, type: RecordType, kind: String?) throws -> JSONValue {
        guard text.hasPrefix("@"), schema.field(field, type: type, kind: kind)?.type == "geojson" else {
            return try schema.parse(text: text, field: field, type: type, kind: kind)
        }
        let path = String(text.dropFirst())
        guard let h = FileHandle(forReadingAtPath: path) else { throw ClientError("\(field): cannot read \(path)") }
        defer { try? h.close() }
        let data = (try? h.read(upToCount: Self.maxValueFileBytes + 1)) ?? Data()
        guard data.count <= Self.maxValueFileBytes else { throw ClientError("\(field): \(path) is larger than \(Self.maxValueFileBytes >> 20) MB") }
        guard var geometry = try? JSONValue.parse(Array(data)) else { throw ClientError("\(field): \(path) is not JSON") }
        if geometry["type"] == "FeatureCollection" {
            guard let features = geometry["features"]?.arrayValue, features.count == 1 else {
                throw ClientError("\(field): \(path) holds \(geometry["features"]?.arrayValue?.count ?? 0) features; give one")
            }
            geometry = features[0]
        }
        if geometry["type"] == "Feature" { geometry = geometry["geometry"] ?? .null }
        return try schema.parse(text: geometry.canonicalString, field: field, type: type, kind: kind)
    }

    /// Parses `FIELD=VALUE`.
    public static func splitAssignment(_ text: String, option: String) throws -> (String, String) {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw ClientError.usage("\(option) takes FIELD=VALUE, got '\(text)'")
        }
        return (String(text[..<eq]), String(text[text.index(after: eq)...]))
    }

    /// Turns `--set FIELD=VALUE` text (for a new record) into checked values.
    public func input(type: RecordType, kind: String?, sets: [String]) throws -> RecordInput {
        var input = RecordInput(kind: kind)
        for s in sets {
            let (field, text) = try Self.splitAssignment(s, option: "--set")
            let value = try parse(text, field: field, type: type, kind: kind)
            if schema.field(field, type: type, kind: kind)?.merge == .set { input.elements.append((field, value)) } else { input.registers.append((field, value)) }
        }
        return input
    }

    /// Reads a JSON object in the shape of the samples (`{"kind": …, "ref": …}`) or of our own
    /// JSON Lines export (`{"id": …, "type": …, "kind": …, "fields": {…}}`).
    public func input(type: RecordType, object: [String: JSONValue], where place: String) throws -> RecordInput {
        var fields = object
        var input = RecordInput()
        if case .object(let inner)? = object["fields"] {
            fields = inner
            if let t = object["type"]?.stringValue, t != type.description { throw ClientError("\(place): a \(t), not a \(type)") }
        }
        if let id = object["id"]?.stringValue {
            guard let rid = RecordID(id) else { throw ClientError("\(place): 'id' \(id) is not a UUID") }
            // Every replica refuses an op whose type is not the one its id names (`Policy`).
            guard rid.type == type else { throw ClientError("\(place): 'id' \(id) names a \(rid.type), not a \(type)") }
            input.id = rid
        }
        input.kind = object["kind"]?.stringValue
        for k in ["kind", "id", "type", "created_by", "created_at", "updated_at", "conflicts", "erased", "deleted"] where object["fields"] == nil {
            fields[k] = nil
        }
        if type == .note {
            guard let kind = input.kind else { throw ClientError("\(place): 'kind' is missing") }
            guard schema.kinds(of: .note).contains(kind) else {
                throw ClientError("\(place): kind '\(kind)' is not one of \(schema.kinds(of: .note).joined(separator: ", "))")
            }
        }
        for (field, value) in fields.sorted(by: { $0.key < $1.key }) {
            if field == "review" { throw ClientError("\(place): 'review' is set by `fieldsync review`, not on import") }
            guard let spec = schema.field(field, type: type, kind: input.kind) else {
                throw ClientError("\(place): \(schema.unknownField(field, type: type, kind: input.kind).message)")
            }
            do {
                if spec.merge == .set {
                    guard case .array(let items) = value else { throw ClientError("\(place): field '\(field)' is a set: give a JSON array") }
                    if let max = spec.maxItems, items.count > max { throw ClientError("\(place): field '\(field)' holds at most \(max) items") }
                    for item in items { input.elements.append((field, try schema.validate(item, field: field, type: type, kind: input.kind))) }
                } else if value != .null {
                    input.registers.append((field, try schema.validate(value, field: field, type: type, kind: input.kind)))
                }
            } catch let e as CoreError {
                throw ClientError("\(place): \(e.message)")
            }
        }
        return input
    }

    /// Creates records, all in one transaction. Returns their ids.
    @discardableResult
    public func add(_ inputs: [RecordInput], type: RecordType) throws -> [RecordID] {
        var ids: [RecordID] = []
        try store.commitLocal(key: key) { reader in
            var d = ChangeDraft()
            // One batch of ids counts up, so records list in the order they were given.
            var fresh = RecordID.make(inputs.count { $0.id == nil }, type, by: key.deviceID).makeIterator()
            for input in inputs {
                let id = input.id ?? fresh.next()!
                if input.id != nil, try reader.view(id) != nil { throw ClientError("record \(id) already exists") }
                if input.id != nil, !id.mayBeCreated(by: key.deviceID) {
                    throw ClientError("record \(id) was made by another device: sync to receive it, or leave out its 'id' to add it as a new record")
                }
                d.create(id, type: type, kind: type == .note ? input.kind : nil)
                for (f, v) in input.registers { d.set(f, to: v, onNew: id, type: type) }
                for (f, v) in input.elements { d.add(f, v, record: id, type: type) }
                ids.append(id)
            }
            return d
        }
        return ids
    }

    /// Applies `--set/--add/--remove` to one record, as one change.
    public func edit(_ id: RecordID, type: RecordType, edits: RecordEdits) throws {
        guard !edits.isEmpty else { throw ClientError.usage("nothing to change: give --set, --add, --remove or --unset") }
        try store.commitLocal(key: key) { reader in
            let ops = try reader.ops(id)
            guard let view = ops.materialize(schema: schema), !view.deleted else { throw ClientError("no \(type) \(id)") }
            guard view.type == type else { throw ClientError("\(id) is a \(view.type), not a \(type)") }
            var d = ChangeDraft()
            var seen: Set<String> = []
            for (field, text) in edits.sets {
                guard seen.insert(field).inserted else { throw ClientError.usage("field '\(field)' is set twice") }
                guard let spec = schema.field(field, type: type, kind: view.kind) else {
                    throw schema.unknownField(field, type: type, kind: view.kind)
                }
                if spec.writtenBy == "review" { throw ClientError.usage("'\(field)' is set by `fieldsync review`") }
                guard spec.merge == .register else { throw ClientError.usage("'\(field)' is a set: use --add or --remove") }
                d.set(field, to: try parse(text, field: field, type: type, kind: view.kind), on: ops, type: type)
            }
            for field in edits.unsets {
                guard seen.insert(field).inserted else { throw ClientError.usage("field '\(field)' is set and unset at once") }
                guard let spec = schema.field(field, type: type, kind: view.kind) else {
                    throw schema.unknownField(field, type: type, kind: view.kind)
                }
                if spec.writtenBy == "review" { throw ClientError.usage("'\(field)' is set by `fieldsync review`") }
                guard spec.merge == .register else { throw ClientError.usage("'\(field)' is a set: use --remove for each element") }
                guard view.fields[field] != nil else { throw ClientError("\(field) of \(id) holds no value") }
                d.set(field, to: .null, on: ops, type: type)
            }
            for (field, text) in edits.adds {
                guard schema.field(field, type: type, kind: view.kind)?.merge == .set else {
                    throw ClientError.usage("'\(field)' is not a set field: use --set")
                }
                d.add(field, try parse(text, field: field, type: type, kind: view.kind), record: id, type: type)
            }
            for (field, text) in edits.removes {
                guard schema.field(field, type: type, kind: view.kind)?.merge == .set else {
                    throw ClientError.usage("'\(field)' is not a set field")
                }
                let value = try parse(text, field: field, type: type, kind: view.kind)
                guard d.remove(field, value, on: ops, type: type) else {
                    throw ClientError("\(field) of \(id) holds no \(value.canonicalString)")
                }
            }
            return d
        }
    }

    public func delete(_ id: RecordID, type: RecordType) throws {
        try store.commitLocal(key: key) { reader in
            let ops = try reader.ops(id)
            guard let view = ops.materialize(schema: schema), !view.deleted, view.type == type else { throw ClientError("no \(type) \(id)") }
            var d = ChangeDraft()
            d.delete(ops, type: type)
            return d
        }
    }
}
