import Crypto
import Foundation

/// HTTP Message Signatures (RFC 9421) with `ed25519`, and Content-Digest (RFC 9530, sha-256):
/// how every request and every response of the sync protocol is signed. Pure: the caller
/// supplies the component values it sees on the wire.
///
/// We sign with our own parameter order; a verifier takes the `@signature-params` value exactly
/// as it came in `Signature-Input` (RFC 9421 §2.5, §3.2), so a signature made by any conforming
/// implementation, whatever its parameter order, verifies here.
public enum HTTPSignature {
    public static let label = "sig1"
    public static let requestComponents = ["@method", "@target-uri", "content-digest", "content-type"]
    public static let responseComponents = ["@status", "content-digest", "content-type"]
    /// How long a signature is valid, and how far `created` may be from the verifier's clock.
    public static let maxAgeSeconds: Int64 = 300
    /// How long a request's body may take to arrive after its head. A signature's freshness is
    /// judged when the head arrives, not when the body is whole: a laptop's upload on a field link
    /// of a few kB/s takes minutes, and judged at its end it expired on the way (a 512 kB upload
    /// at 2.5 kB/s was refused as "signature has expired", exit 4, every time). So the server
    /// bounds the body's journey by this, and keeps each nonce this much longer than its
    /// signature's expiry: a replay that started in time is still caught when it ends.
    public static let maxTransferSeconds: Int64 = 600

    /// Bounds on what `parse` reads from outside: each header's length, the components of one
    /// signature, the nonce, any string parameter.
    public static let maxFieldBytes = 4096
    public static let maxComponents = 16
    public static let maxNonceLength = 64
    public static let maxStringLength = 256

    /// `sha-256=:BASE64:` of the body.
    public static func contentDigest(_ body: some Sequence<UInt8>) -> String {
        "sha-256=:" + Data(SHA256.hash(data: Array(body))).base64EncodedString() + ":"
    }

    /// The parameters of one signature (the part after the component list).
    public struct Parameters: Hashable, Sendable {
        // Changing a field after `parse` drops the received text: `serialised` then says what the fields say.
        public var components: [String] { didSet { received = nil } }
        public var created: Int64 { didSet { received = nil } }
        public var expires: Int64? { didSet { received = nil } }
        /// Empty when the signature has none (only `parse(input:signature:label:)` allows that).
        public var nonce: String { didSet { received = nil } }
        public var keyid: String { didSet { received = nil } }
        /// Empty when the signature does not name one.
        public var alg: String { didSet { received = nil } }
        /// The `@signature-params` value exactly as received in `Signature-Input` (the inner list
        /// and its parameters, in the sender's order); nil for parameters made here.
        public fileprivate(set) var received: String?

        public init(components: [String], created: Int64, expires: Int64?, nonce: String, keyid: String, alg: String = "ed25519") {
            self.components = components
            self.created = created
            self.expires = expires
            self.nonce = nonce
            self.keyid = keyid
            self.alg = alg
        }

        /// The serialised `@signature-params` value (and the Signature-Input member): as received
        /// when parsed, else in our own order.
        public var serialised: String {
            if let received { return received }
            var s = "(" + components.map { "\"\($0)\"" }.joined(separator: " ") + ");created=\(created)"
            if let expires { s += ";expires=\(expires)" }
            s += ";nonce=\"\(nonce)\";keyid=\"\(keyid)\""
            return alg.isEmpty ? s : s + ";alg=\"\(alg)\""  // optional (RFC 9421 §2.3)
        }
    }

    /// The signature base of RFC 9421 §2.5 from the component values, in the order signed.
    public static func base(values: [String], parameters: Parameters) -> [UInt8] {
        var lines: [String] = []
        for (name, value) in zip(parameters.components, values) { lines.append("\"\(name)\": \(value)") }
        lines.append("\"@signature-params\": \(parameters.serialised)")
        return Array(lines.joined(separator: "\n").utf8)
    }

    // The base is signed as it is, as RFC 9421 requires: `.httpRequest` is the empty prefix, and
    // this cannot be confused with a change or roster signature because those sign
    // "fieldsync change v1\0…" and "fieldsync roster v1\0…" while a signature base starts with '"'.

    /// Signs; returns the `Signature-Input` and `Signature` header values.
    public static func sign(values: [String], parameters: Parameters, key: DeviceKey) -> (input: String, signature: String) {
        let sig = key.sign(base(values: values, parameters: parameters), domain: .httpRequest)
        return ("\(label)=\(parameters.serialised)", "\(label)=:\(Data(sig).base64EncodedString()):")
    }

    /// False also when a value is missing or holds a line break (it would forge a line of the base).
    public static func verify(values: [String], parameters: Parameters, signature: [UInt8], publicKey: [UInt8]) -> Bool {
        guard values.count == parameters.components.count,
              !values.contains(where: { $0.utf8.contains { $0 == 0x0A || $0 == 0x0D } }) else { return false }
        return verifySignature(signature, of: base(values: values, parameters: parameters), domain: .httpRequest, publicKey: publicKey)
    }

    /// Parses `Signature-Input` and `Signature` for our label; the nonce is required.
    /// Throws `.malformed` or `.oversize` with the reason.
    public static func parse(input: String, signature: String) throws(CoreError) -> (Parameters, [UInt8]) {
        let (params, sig) = try parse(input: input, signature: signature, label: label)
        guard !params.nonce.isEmpty else { throw CoreError(.malformed, "Signature-Input has no nonce") }
        return (params, sig)
    }

    /// Parses the member `label` of `Signature-Input` and `Signature`, both RFC 8941 Dictionaries,
    /// strictly: any syntax error, a repeated key or parameter, a component with parameters or
    /// named twice, or a value beyond the bounds above is refused. `created` and `keyid` are
    /// required; `expires`, `nonce` and `alg` may be absent. The parameters keep the
    /// `@signature-params` text as received, for the signature base.
    public static func parse(input: String, signature: String, label: String) throws(CoreError) -> (Parameters, [UInt8]) {
        guard input.utf8.count <= maxFieldBytes else { throw CoreError(.oversize, "Signature-Input is longer than \(maxFieldBytes) bytes") }
        guard signature.utf8.count <= maxFieldBytes else { throw CoreError(.oversize, "Signature is longer than \(maxFieldBytes) bytes") }

        let inputBytes = Array(input.utf8)
        var inputParser = StructuredFieldParser(inputBytes, field: "Signature-Input")
        let inputs = try inputParser.dictionary()
        guard let member = inputs.first(where: { $0.key == label }) else { throw CoreError(.malformed, "Signature-Input has no \(label)") }
        guard case .innerList(let items, let listParameters) = member.value else {
            throw CoreError(.malformed, "Signature-Input \(label) is not a list of components")
        }
        guard items.count <= maxComponents else { throw CoreError(.oversize, "Signature-Input \(label) has more than \(maxComponents) components") }
        var components: [String] = []
        for (item, itemParameters) in items {
            guard case .string(let name) = item else { throw CoreError(.malformed, "Signature-Input component \(item) is not a string") }
            guard itemParameters.isEmpty else { throw CoreError(.malformed, "Signature-Input component \"\(name)\" has parameters (not supported)") }
            guard isComponentName(name) else { throw CoreError(.malformed, "Signature-Input component \"\(name)\" is not a component name") }
            guard !components.contains(name) else { throw CoreError(.malformed, "Signature-Input names component \"\(name)\" twice") }
            components.append(name)
        }

        func integer(_ name: String) throws(CoreError) -> Int64? {
            guard let value = listParameters.first(where: { $0.key == name })?.value else { return nil }
            guard case .integer(let n) = value else { throw CoreError(.malformed, "Signature-Input \(name) is not an integer") }
            guard n >= 0 else { throw CoreError(.malformed, "Signature-Input \(name) is negative") }
            return n
        }
        func string(_ name: String) throws(CoreError) -> String? {
            guard let value = listParameters.first(where: { $0.key == name })?.value else { return nil }
            guard case .string(let s) = value else { throw CoreError(.malformed, "Signature-Input \(name) is not a string") }
            return s
        }
        guard let created = try integer("created") else { throw CoreError(.malformed, "Signature-Input has no created") }
        let expires = try integer("expires")
        guard let keyid = try string("keyid") else { throw CoreError(.malformed, "Signature-Input has no keyid") }
        let nonce = try string("nonce") ?? ""
        guard nonce.utf8.count <= maxNonceLength else { throw CoreError(.oversize, "Signature-Input nonce is longer than \(maxNonceLength)") }
        let alg = try string("alg") ?? ""
        _ = try string("tag")

        var signatureParser = StructuredFieldParser(Array(signature.utf8), field: "Signature")
        let signatures = try signatureParser.dictionary()
        guard let sigMember = signatures.first(where: { $0.key == label }) else { throw CoreError(.malformed, "Signature has no \(label)") }
        guard case .item(.bytes(let sig), _) = sigMember.value, sig.count == 64 else {
            throw CoreError(.malformed, "Signature is not \(label)=:<64 bytes base64>:")
        }

        var params = Parameters(components: components, created: created, expires: expires, nonce: nonce, keyid: keyid, alg: alg)
        params.received = String(decoding: inputBytes[member.range], as: UTF8.self)
        return (params, sig)
    }

    /// A derived component (`@` then lower-case letters and '-') or a lower-case field name.
    static func isComponentName(_ name: String) -> Bool {
        var bytes = Substring(name).utf8[...]
        if bytes.first == UInt8(ascii: "@") { bytes = bytes.dropFirst() }
        return !bytes.isEmpty && bytes.allSatisfy { b in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
        }
    }

    /// A fresh random nonce (128 bits, base64url).
    public static func nonce() -> String {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<2).flatMap { _ -> [UInt8] in let w = g.next(); return (0..<8).map { UInt8(truncatingIfNeeded: w >> ($0 * 8)) } }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// An RFC 8941 bare item.
enum StructuredFieldItem: Hashable, Sendable {
    case integer(Int64)
    /// Kept as written: nothing here reads decimals, they are only checked.
    case decimal(String)
    case string(String)
    case token(String)
    case bytes([UInt8])
    case boolean(Bool)
}

/// A Dictionary member's value: an item or an inner list, each with its parameters.
enum StructuredFieldMember: Sendable {
    typealias Parameters = [(key: String, value: StructuredFieldItem)]
    case item(StructuredFieldItem, Parameters)
    case innerList([(StructuredFieldItem, Parameters)], Parameters)
}

/// A strict parser of RFC 8941 Dictionaries (§4.2), stricter than the RFC where it is lenient:
/// a repeated dictionary key or parameter is an error instead of the last one winning, and
/// sizes are bounded. Never traps: integers are at most 15 digits, as RFC 8941 requires.
struct StructuredFieldParser {
    let bytes: [UInt8]
    let field: String
    var at = 0
    static let maxMembers = 8
    static let maxListItems = 32
    static let maxParameters = 16
    static let maxKeyLength = 64

    init(_ bytes: [UInt8], field: String) { self.bytes = bytes; self.field = field }

    /// The members in order, each with the byte range of its value (after `key=`).
    mutating func dictionary() throws(CoreError) -> [(key: String, value: StructuredFieldMember, range: Range<Int>)] {
        var members: [(key: String, value: StructuredFieldMember, range: Range<Int>)] = []
        skip(space: true, tab: false)
        if at == bytes.count { return members }
        while true {
            let key = try self.key()
            guard !members.contains(where: { $0.key == key }) else { throw fail("repeats the member \(key)") }
            guard members.count < Self.maxMembers else { throw CoreError(.oversize, "\(field) has more than \(Self.maxMembers) members") }
            let value: StructuredFieldMember
            let start: Int
            if peek == UInt8(ascii: "=") {
                at += 1
                start = at
                if peek == UInt8(ascii: "(") { value = try innerList() } else { value = .item(try bareItem(), try parameters()) }
            } else {
                start = at
                value = .item(.boolean(true), try parameters())
            }
            members.append((key, value, start..<at))
            skip(space: true, tab: true)
            if at == bytes.count { return members }
            guard peek == UInt8(ascii: ",") else { throw fail("expects ',' between members") }
            at += 1
            skip(space: true, tab: true)
            guard at < bytes.count else { throw fail("ends with ','") }
        }
    }

    private var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

    private func fail(_ what: String) -> CoreError { CoreError(.malformed, "\(field) is not a structured dictionary: \(what) (at byte \(at))") }

    private mutating func skip(space: Bool, tab: Bool) {
        while let b = peek, (space && b == 0x20) || (tab && b == 0x09) { at += 1 }
    }

    private static func isLower(_ b: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) }
    private static func isDigit(_ b: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) }
    private static func isAlpha(_ b: UInt8) -> Bool { isLower(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b) }
    /// tchar of RFC 9110, with ':' and '/' as RFC 8941 tokens allow.
    private static func isTokenChar(_ b: UInt8) -> Bool {
        isAlpha(b) || isDigit(b) || Array("!#$%&'*+-.^_`|~:/".utf8).contains(b)
    }

    private mutating func key() throws(CoreError) -> String {
        guard let first = peek, Self.isLower(first) || first == UInt8(ascii: "*") else { throw fail("a key must start with a-z or '*'") }
        let start = at
        while let b = peek, Self.isLower(b) || Self.isDigit(b) || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
            || b == UInt8(ascii: ".") || b == UInt8(ascii: "*") {
            at += 1
            guard at - start <= Self.maxKeyLength else { throw CoreError(.oversize, "\(field) has a key longer than \(Self.maxKeyLength)") }
        }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    private mutating func innerList() throws(CoreError) -> StructuredFieldMember {
        at += 1  // '('
        var items: [(StructuredFieldItem, StructuredFieldMember.Parameters)] = []
        while true {
            skip(space: true, tab: false)
            if peek == UInt8(ascii: ")") {
                at += 1
                return .innerList(items, try parameters())
            }
            guard items.count < Self.maxListItems else { throw CoreError(.oversize, "\(field) has a list longer than \(Self.maxListItems)") }
            items.append((try bareItem(), try parameters()))
            guard peek == 0x20 || peek == UInt8(ascii: ")") else { throw fail("expects ' ' or ')' in a list") }
        }
    }

    private mutating func parameters() throws(CoreError) -> StructuredFieldMember.Parameters {
        var params: StructuredFieldMember.Parameters = []
        while peek == UInt8(ascii: ";") {
            at += 1
            skip(space: true, tab: false)
            let key = try self.key()
            guard !params.contains(where: { $0.key == key }) else { throw fail("repeats the parameter \(key)") }
            guard params.count < Self.maxParameters else { throw CoreError(.oversize, "\(field) has more than \(Self.maxParameters) parameters") }
            var value = StructuredFieldItem.boolean(true)
            if peek == UInt8(ascii: "=") {
                at += 1
                value = try bareItem()
            }
            params.append((key, value))
        }
        return params
    }

    private mutating func bareItem() throws(CoreError) -> StructuredFieldItem {
        guard let b = peek else { throw fail("an item is missing") }
        if b == UInt8(ascii: "-") || Self.isDigit(b) { return try number() }
        if b == UInt8(ascii: "\"") { return try string() }
        if b == UInt8(ascii: ":") { return try byteSequence() }
        if b == UInt8(ascii: "?") { return try boolean() }
        if Self.isAlpha(b) || b == UInt8(ascii: "*") { return token() }
        throw fail("not an item")
    }

    private mutating func number() throws(CoreError) -> StructuredFieldItem {
        let start = at
        var negative = false
        if peek == UInt8(ascii: "-") { negative = true; at += 1 }
        guard let first = peek, Self.isDigit(first) else { throw fail("a number has no digits") }
        var value: Int64 = 0
        var digits = 0
        var point: Int?
        while let b = peek {
            if Self.isDigit(b) {
                digits += 1
                // At most 15 digits: far inside Int64, so this cannot overflow.
                guard digits <= 15 else { throw fail("a number has more than 15 digits") }
                value = value * 10 + Int64(b - UInt8(ascii: "0"))
            } else if b == UInt8(ascii: "."), point == nil {
                guard digits <= 12 else { throw fail("a decimal has more than 12 integer digits") }
                point = digits
            } else {
                break
            }
            at += 1
        }
        guard let point else { return .integer(negative ? -value : value) }
        let fraction = digits - point
        guard fraction >= 1, fraction <= 3 else { throw fail("a decimal needs 1 to 3 fraction digits") }
        return .decimal(String(decoding: bytes[start..<at], as: UTF8.self))
    }

    private mutating func string() throws(CoreError) -> StructuredFieldItem {
        at += 1  // '"'
        var out: [UInt8] = []
        while let b = peek {
            at += 1
            if b == UInt8(ascii: "\\") {
                guard let e = peek, e == UInt8(ascii: "\"") || e == UInt8(ascii: "\\") else { throw fail("a string has a bad escape") }
                at += 1
                out.append(e)
            } else if b == UInt8(ascii: "\"") {
                return .string(String(decoding: out, as: UTF8.self))
            } else {
                guard (0x20...0x7E).contains(b) else { throw fail("a string holds a byte outside printable ASCII") }
                out.append(b)
            }
            guard out.count <= HTTPSignature.maxStringLength else {
                throw CoreError(.oversize, "\(field) has a string longer than \(HTTPSignature.maxStringLength)")
            }
        }
        throw fail("a string is not closed")
    }

    private mutating func token() -> StructuredFieldItem {
        let start = at
        while let b = peek, Self.isTokenChar(b), at - start < HTTPSignature.maxStringLength { at += 1 }
        return .token(String(decoding: bytes[start..<at], as: UTF8.self))
    }

    private mutating func byteSequence() throws(CoreError) -> StructuredFieldItem {
        at += 1  // ':'
        let start = at
        while let b = peek, Self.isAlpha(b) || Self.isDigit(b) || b == UInt8(ascii: "+") || b == UInt8(ascii: "/") || b == UInt8(ascii: "=") {
            at += 1
            guard at - start <= 1024 else { throw CoreError(.oversize, "\(field) has a byte sequence longer than 1024 characters") }
        }
        guard peek == UInt8(ascii: ":") else { throw fail("a byte sequence is not closed") }
        let text = String(decoding: bytes[start..<at], as: UTF8.self)
        at += 1
        guard let data = Data(base64Encoded: text) else { throw fail("a byte sequence is not base64") }
        return .bytes(Array(data))
    }

    private mutating func boolean() throws(CoreError) -> StructuredFieldItem {
        at += 1  // '?'
        guard let b = peek, b == UInt8(ascii: "0") || b == UInt8(ascii: "1") else { throw fail("a boolean is not ?0 or ?1") }
        at += 1
        return .boolean(b == UInt8(ascii: "1"))
    }
}
