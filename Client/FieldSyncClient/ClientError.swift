import FieldSyncCore
import FieldSyncStore

/// A refusal the client reports as one line, with the exit code scripts rely on
/// (DESIGN.md §9: 1 failure, 2 usage).
public struct ClientError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let exitCode: Int32

    public init(_ message: String, exitCode: Int32 = 1) { self.message = message; self.exitCode = exitCode }
    public static func usage(_ message: String) -> ClientError { ClientError(message, exitCode: 2) }
    public var description: String { message }
}
