/// Text from others (record values, device names) on a terminal: every control, formatting,
/// separator, private-use or unassigned character (escape sequences, bidirectional overrides,
/// zero-width characters) written as `\u{XXXX}`, so it cannot rewrite what a person reads.
public enum TerminalText {
    public static func escaped(_ text: String) -> String {
        var out = ""
        for s in text.unicodeScalars {
            if isUnsafe(s) { out += "\\u{\(hex(s))}" } else { out.unicodeScalars.append(s) }
        }
        return out
    }

    public static func isUnsafe(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned: true
        default: false
        }
    }

    /// At least four upper-case hex digits, as `U+` and `\u{}` write them.
    public static func hex(_ s: Unicode.Scalar) -> String {
        let h = String(s.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }
}
