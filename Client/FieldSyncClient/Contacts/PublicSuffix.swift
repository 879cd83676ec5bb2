import Foundation

/// Which domain endings exist: the public suffix list (Debian package `publicsuffix`), read once
/// at run time, or a small built-in list of common endings when the file is absent. The press
/// release reader asks it where an address glued to the page's next heading ends.
public struct PublicSuffixList: Sendable {
    /// Every rule, lower case, without `!` and `*.` marks.
    public let rules: Set<String>
    /// The last label of every rule: the top-level domains.
    public let topLevel: Set<String>
    /// Whether the rules came from the file (false: the built-in fallback).
    public let fromFile: Bool

    public static let systemPath = "/usr/share/publicsuffix/public_suffix_list.dat"
    public static let shared = PublicSuffixList(path: systemPath)

    /// RFC 2606 / RFC 6761 names for documentation and tests: never registered, always valid.
    static let reserved = ["example", "test", "invalid", "localhost"]
    /// When the list is not installed: the endings press contacts mostly have.
    static let fallback = """
        com net org edu gov int mil info biz name pro coop aero museum ngo ong eu int
        no se dk fi is ee lv lt pl de at ch fr be nl lu it es pt ie uk co.uk org.uk ac.uk gov.uk
        ua com.ua org.ua gov.ua net.ua in.ua kiev.ua kyiv.ua ru by md ro bg hu cz sk si hr rs ba me mk al gr tr cy mt
        us ca au nz jp kr cn in pk bd lk np af ir iq sy lb jo il ps eg ly tn dz ma sd ss et so ke ug tz rw cd ao mz zw zm za ng gh sn ml ne td cf cm
        co mx br ar cl pe ve ec bo py uy io ai me tv cc ly org.au com.au
        news media press global online site info world agency foundation
        """

    /// Reads the list at `path`; the built-in endings when it is missing, unreadable or absurd.
    public init(path: String) {
        if let data = FileManager.default.contents(atPath: path), data.count < 8 << 20,
           let text = String(data: data, encoding: .utf8) {
            let parsed = Self.parse(text)
            if parsed.count > 100 {
                self.init(rules: parsed, fromFile: true)
                return
            }
        }
        self.init(rules: Self.parse(Self.fallback), fromFile: false)
    }

    init(rules: Set<String>, fromFile: Bool) {
        var all = rules
        all.formUnion(Self.reserved)
        self.rules = all
        self.topLevel = Set(all.compactMap { $0.split(separator: ".").last.map(String.init) })
        self.fromFile = fromFile
    }

    /// The list's format: one rule a line (the first word), `//` comments, `*.` and `!` marks.
    static func parse(_ text: String) -> Set<String> {
        var out: Set<String> = []
        for line in text.split(whereSeparator: \.isNewline) {
            for word in line.split(whereSeparator: \.isWhitespace) {
                if word.hasPrefix("//") { break }
                var rule = Substring(word)
                if rule.hasPrefix("!") { rule = rule.dropFirst() }
                while rule.hasPrefix("*.") { rule = rule.dropFirst(2) }
                if !rule.isEmpty { out.insert(rule.lowercased()) }
                // The list has one rule a line; the fallback several.
            }
        }
        return out
    }

    /// Whether `label` (any case) is a top-level domain.
    public func isTopLevel(_ label: some StringProtocol) -> Bool { topLevel.contains(label.lowercased()) }
}
