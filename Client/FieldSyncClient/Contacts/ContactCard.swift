import Foundation
import FieldSyncCore

/// One contact as read from a file, in the field shapes of Schema/records.json.
public struct ContactCard: Sendable, Hashable {
    /// Register fields: "fn" (string), "n" ({"family","given","additional","prefix","suffix"},
    /// empty parts omitted), "title", "tz" (IANA name), "note", "source".
    public var fields: [String: JSONValue]
    /// Set fields, in file order without repeats: "org" ([{"name", "lang"?, "unit"?}]),
    /// "tel" ([{"raw", "e164"?}]), "email", "lang", "beats" (strings).
    public var sets: [String: [JSONValue]]
    /// 1-based line where the card starts in the file (for jCard: the card's position).
    public var line: Int
    /// The vCard UID, if any; informational, never a record id.
    public var uid: String?
    /// Register fields the reader guessed rather than read: they never overwrite a stored value.
    public var guessed: Set<String> = []
    /// What the reader made up and the import should say (a display name given to a nameless card).
    public var remarks: [String] = []

    public init(fields: [String: JSONValue] = [:], sets: [String: [JSONValue]] = [:], line: Int, uid: String? = nil) {
        self.fields = fields
        self.sets = sets
        self.line = line
        self.uid = uid
    }
}

/// Why one card (or one line) of an import file could not be read.
public struct ImportError: Error, Sendable, Hashable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { "\(file):\(line): \(message)" }
}

extension ContactCard {
    /// Adds to a set field unless an equal element is already there (sets keep file order).
    mutating func insert(_ value: JSONValue, into set: String) {
        var items = sets[set] ?? []
        if !items.contains(value) { items.append(value) }
        sets[set] = items
    }

    /// Every string NFC, so names compare and hash the same whatever the file's encoding did.
    func normalized() -> ContactCard {
        var out = self
        out.fields = fields.mapValues { $0.normalized() }
        out.sets = sets.mapValues { $0.map { $0.normalized() } }
        out.uid = uid?.precomposedStringWithCanonicalMapping
        return out
    }

    /// "n" as a {"family", "given", …} object, or nil when every part is empty.
    static func nameParts(family: String, given: String, additional: String = "", prefix: String = "", suffix: String = "") -> JSONValue? {
        var parts: [String: JSONValue] = [:]
        for (key, value) in [("family", family), ("given", given), ("additional", additional), ("prefix", prefix), ("suffix", suffix)] {
            let trimmed = ContactText.trim(value)
            if !trimmed.isEmpty { parts[key] = .string(trimmed) }
        }
        return parts.isEmpty ? nil : .object(parts)
    }
}

/// Text helpers shared by the contact importers (a namespace, so the module's other files
/// cannot collide with them).
enum ContactText {
    /// Physical lines (LF, CRLF, CR, or the CR CR LF of a file that went through a CRLF
    /// conversion twice), 1-based, with a leading byte-order mark removed.
    static func lines(_ text: String) -> [(number: Int, text: Substring)] {
        var body = Substring(text)
        if body.unicodeScalars.first == "\u{FEFF}" { body = Substring(body.unicodeScalars.dropFirst()) }
        if body.contains("\r\r\n") { body = Substring(body.replacingOccurrences(of: "\r\r\n", with: "\r\n")) }
        // "\r\n" is one Character in Swift, so it must be named beside "\n" and "\r".
        let lines = body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        return lines.enumerated().map { (number: $0.offset + 1, text: $0.element) }
    }

    static func trim(_ s: some StringProtocol) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }
}
