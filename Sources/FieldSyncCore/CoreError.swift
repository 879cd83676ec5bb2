/// The one error type of the shared model. Callers branch on `code`; `message` is the one
/// line a user reads. Equality looks at the code only, so tests can say which refusal they expect.
public struct CoreError: Error, Hashable, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }
        /// A code as stored with a refused change (its `description`), read back.
        public init(stored name: String) { self.name = name }

        /// Bytes that are not a well-formed change, envelope or value.
        public static let malformed = Code("malformed")
        /// A format version this build does not know.
        public static let unknownVersion = Code("unknown_version")
        /// A length, count or size beyond the protocol's limits.
        public static let oversize = Code("oversize")
        /// Bytes left over after a complete structure.
        public static let trailingBytes = Code("trailing_bytes")
        /// The Ed25519 signature does not verify.
        public static let badSignature = Code("bad_signature")
        /// The signing key is not the key of the device named in the header.
        public static let keyMismatch = Code("key_mismatch")
        /// The device is not on the roster.
        public static let unknownDevice = Code("unknown_device")
        /// `prev` is not the hash of the device's previous change.
        public static let brokenChain = Code("broken_chain")
        /// `seq` does not follow from `prev` (a change claiming a position it cannot hold).
        public static let forgedSeq = Code("forged_seq")
        /// Two different changes with the same device and `seq`.
        public static let forkedChain = Code("forked_chain")
        /// A value does not hash to the commitment its op carries.
        public static let commitmentMismatch = Code("commitment_mismatch")
        /// The device was revoked and this change comes after its cut-off.
        public static let revoked = Code("revoked")
        /// A value breaks the schema (field, value and rule are in the message).
        public static let invalidValue = Code("invalid_value")
        /// A field or record type the schema does not declare.
        public static let unknownField = Code("unknown_field")
        /// The author's role does not allow an op in the change.
        public static let forbidden = Code("forbidden")
        /// An op claims a record type other than the one its record's id names, or a shape
        /// (field, refs) its action never has: ops never cross records, types or fields.
        public static let crossRecord = Code("cross_record")
        /// A create of a record whose id carries another device's mark (`RecordID`).
        public static let foreignCreate = Code("foreign_create")
        /// A change whose HLC is too far ahead of the receiver's clock to be taken now, or a
        /// device with too many changes held back for a gap.
        public static let tooFarAhead = Code("too_far_ahead")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func == (a: CoreError, b: CoreError) -> Bool { a.code == b.code }
    public func hash(into h: inout Hasher) { h.combine(code) }
}
