import Foundation

/// How a field merges (DESIGN.md §5).
public enum MergeType: String, Sendable, Codable { case register, set }

/// One field as `Schema/records.json` declares it.
public struct FieldSpec: Sendable, Codable, Hashable {
    public var type: String
    public var merge: MergeType
    public var maxLength: Int?
    public var maxItems: Int?
    public var min: Double?
    public var max: Double?
    public var values: [String]?
    public var personal: Bool?
    /// "review": only a `review` op writes this field.
    public var writtenBy: String?

    enum CodingKeys: String, CodingKey {
        case type, merge, min, max, values, personal
        case maxLength = "max_length", maxItems = "max_items", writtenBy = "written_by"
    }

    public var isPersonal: Bool { personal ?? false }
}

public struct TypeSpec: Sendable, Codable {
    public var kinds: [String]
    public var fields: [String: FieldSpec]
    public var kindFields: [String: [String: FieldSpec]]

    enum CodingKeys: String, CodingKey { case kinds, fields, kindFields = "kind_fields" }
}

/// The record schema: loaded from `Schema/records.json` (embedded at build time), it drives
/// validation on every replica, the CLI's `--set` parsing, the SQL views and the exports.
public struct RecordSchema: Sendable {
    public let version: Int
    /// A value of each field type as `--set` takes it (`examples` in the schema file).
    public let examples: [String: String]
    public let types: [RecordType: TypeSpec]
    let personal: [RecordType: Set<String>]
    /// Each type's fields, common and of every kind, for lookups that accept any kind: one
    /// dictionary read for every op a replica applies (`Policy`). A common field comes first,
    /// then kinds in name order, so a name shared by two kinds (none is, today) would resolve
    /// alike on every replica.
    let anyKind: [RecordType: [String: FieldSpec]]

    struct File: Codable {
        var schemaVersion: Int
        var types: [String: TypeSpec]
        /// A value of each field type as `--set` takes it, for `fieldsync schema`.
        var examples: [String: String]?
        enum CodingKeys: String, CodingKey { case schemaVersion = "schema_version", types, examples }
    }

    public init(json: [UInt8]) throws(CoreError) {
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: Data(json)) } catch {
            throw CoreError(.malformed, "record schema is not valid: \(error)")
        }
        var types: [RecordType: TypeSpec] = [:]
        for (name, spec) in file.types {
            guard let t = RecordType(name: name) else { throw CoreError(.malformed, "record schema names unknown type \(name)") }
            types[t] = spec
        }
        guard types.count == RecordType.allCases.count else { throw CoreError(.malformed, "record schema lacks a record type") }
        self.version = file.schemaVersion
        self.types = types
        self.examples = file.examples ?? [:]
        var personal: [RecordType: Set<String>] = [:]
        for (t, spec) in types {
            var out = Set(spec.fields.filter { $0.value.isPersonal }.keys)
            for fields in spec.kindFields.values { out.formUnion(fields.filter { $0.value.isPersonal }.keys) }
            personal[t] = out
        }
        self.personal = personal
        self.anyKind = types.mapValues { spec in
            var all = spec.fields
            for kind in spec.kindFields.keys.sorted() { all.merge(spec.kindFields[kind]!) { earlier, _ in earlier } }
            return all
        }
    }

    /// The schema this build was made with.
    public static let standard: RecordSchema = {
        do { return try RecordSchema(json: Array(EmbeddedSchema.files["records.json"]!.utf8)) } catch {
            fatalError("the embedded Schema/records.json does not load: \(error)")  // a build defect, caught by tests
        }
    }()

    public func kinds(of type: RecordType) -> [String] { types[type]!.kinds }

    /// The field spec for a field of a record of this type and kind (kind-specific fields only
    /// exist for their kind; `kind == nil` accepts any kind's fields).
    public func field(_ name: String, type: RecordType, kind: String?) -> FieldSpec? {
        guard let kind else { return anyKind[type]![name] }
        let spec = types[type]!
        return spec.fields[name] ?? spec.kindFields[kind]?[name]
    }

    /// Every field a record of this type and kind may have, common ones first, each list sorted.
    public func fieldNames(type: RecordType, kind: String?) -> [String] {
        let spec = types[type]!
        var names = spec.fields.keys.sorted()
        if let kind, let extra = spec.kindFields[kind] { names += extra.keys.sorted() }
        return names
    }

    /// Fields erased by `erase` (any kind's).
    public func personalFields(of type: RecordType) -> Set<String> { personal[type]! }
}
