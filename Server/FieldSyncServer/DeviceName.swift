import FieldSyncCore

/// A device's name is chosen by the administrator (`fieldsync-server invite --name`) and shown on
/// terminals: it may hold no control or formatting character (escape sequences, bidirectional
/// overrides and isolates, zero-width characters, line separators), which could rewrite what an
/// administrator reads.
public enum DeviceName {
    public static let maxLength = 100

    /// Why `name` cannot be a device's name, or nil if it can.
    public static func problem(_ name: String) -> String? {
        if name.allSatisfy({ $0 == " " }) { return "must not be empty" }
        if name.first == " " || name.last == " " { return "must not begin or end with a space" }
        if name.count > maxLength { return "is longer than \(maxLength) characters" }
        if let bad = name.unicodeScalars.first(where: unsafe) {
            return "must not contain U+\(hex(bad)) (a control, formatting or bidirectional character)"
        }
        return nil
    }

    /// `name` with every unsafe character written as `\u{XXXX}`: safe to print whatever the
    /// roster holds (a name stored before names were checked).
    public static func printable(_ name: String) -> String { TerminalText.escaped(name) }

    static func unsafe(_ s: Unicode.Scalar) -> Bool { TerminalText.isUnsafe(s) }
    static func hex(_ s: Unicode.Scalar) -> String { TerminalText.hex(s) }
}
