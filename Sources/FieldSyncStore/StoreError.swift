/// Errors of the local replica, with a code a caller can branch on and one line for the user.
public struct StoreError: Error, Hashable, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let notInitialised = Code("not_initialised")
        public static let alreadyInitialised = Code("already_initialised")
        public static let notAReplica = Code("not_a_replica")
        public static let cannotOpen = Code("cannot_open")
        public static let notFound = Code("not_found")
        public static let ambiguous = Code("ambiguous")
        public static let readOnly = Code("read_only")
        public static let busy = Code("busy")
        /// A request signature's nonce was seen before.
        public static let replayed = Code("replayed")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { message }
    public static func == (a: StoreError, b: StoreError) -> Bool { a.code == b.code }
    public func hash(into h: inout Hasher) { h.combine(code) }
}
