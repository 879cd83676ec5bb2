import Crypto
import Foundation

/// HTTP Message Signatures (RFC 9421) with `ed25519`, and Content-Digest (RFC 9530, sha-256):
/// how every request and every response of the sync protocol is signed. Pure: the caller
/// supplies the component values it sees on the wire.
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

    /// `sha-256=:BASE64:` of the body.
    public static func contentDigest(_ body: some Sequence<UInt8>) -> String {
        "sha-256=:" + Data(SHA256.hash(data: Array(body))).base64EncodedString() + ":"
    }

    /// The parameters of one signature (the part after the component list).
    public struct Parameters: Hashable, Sendable {
        public var components: [String]
        public var created: Int64
        public var expires: Int64?
        public var nonce: String
        public var keyid: String
        public var alg: String

        public init(components: [String], created: Int64, expires: Int64?, nonce: String, keyid: String, alg: String = "ed25519") {
            self.components = components
            self.created = created
            self.expires = expires
            self.nonce = nonce
            self.keyid = keyid
            self.alg = alg
        }

        /// The serialised `@signature-params` value (and the Signature-Input member).
        public var serialised: String {
            var s = "(" + components.map { "\"\($0)\"" }.joined(separator: " ") + ");created=\(created)"
            if let expires { s += ";expires=\(expires)" }
            return s + ";nonce=\"\(nonce)\";keyid=\"\(keyid)\";alg=\"\(alg)\""
        }
    }

    /// The signature base of RFC 9421 §2.5 from the component values, in the order signed.
    public static func base(values: [String], parameters: Parameters) -> [UInt8] {
        var lines: [String] = []
        for (name, value) in zip(parameters.components, values) { lines.append("\"\(name)\": \(value)") }
        lines.append("\"@signature-params\": \(parameters.serialised)")
        return Array(lines.joined(separator: "\n").utf8)
    }

    /// Signs; returns the `Signature-Input` and `Signature` header values.
    public static func sign(values: [String], parameters: Parameters, key: DeviceKey) -> (input: String, signature: String) {
        let sig = key.sign(base(values: values, parameters: parameters), domain: .httpRequest)
        return ("\(label)=\(parameters.serialised)", "\(label)=:\(Data(sig).base64EncodedString()):")
    }

    public static func verify(values: [String], parameters: Parameters, signature: [UInt8], publicKey: [UInt8]) -> Bool {
        verifySignature(signature, of: base(values: values, parameters: parameters), domain: .httpRequest, publicKey: publicKey)
    }

    /// Parses `Signature-Input` and `Signature` for our label. Throws `.malformed` with the reason.
    public static func parse(input: String, signature: String) throws(CoreError) -> (Parameters, [UInt8]) {
        let prefix = label + "="
        guard input.hasPrefix(prefix + "(") else { throw CoreError(.malformed, "Signature-Input has no \(label)") }
        guard signature.hasPrefix(prefix + ":"), signature.hasSuffix(":"), signature.count > prefix.count + 2,
              let sig = Data(base64Encoded: String(signature.dropFirst(prefix.count + 1).dropLast())), sig.count == 64 else {
            throw CoreError(.malformed, "Signature is not \(label)=:<64 bytes base64>:")
        }
        var rest = Substring(input.dropFirst(prefix.count + 1))
        guard let close = rest.firstIndex(of: ")") else { throw CoreError(.malformed, "Signature-Input component list is not closed") }
        let list = rest[..<close]
        rest = rest[rest.index(after: close)...]
        var components: [String] = []
        for item in list.split(separator: " ") {
            guard item.count >= 2, item.first == "\"", item.last == "\"" else { throw CoreError(.malformed, "Signature-Input component \(item) is not quoted") }
            components.append(String(item.dropFirst().dropLast()))
        }
        var params: [String: String] = [:]
        for p in rest.split(separator: ";", omittingEmptySubsequences: true) {
            let kv = p.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { throw CoreError(.malformed, "Signature-Input parameter \(p) has no value") }
            var v = String(kv[1])
            if v.hasPrefix("\"") {
                guard v.count >= 2, v.hasSuffix("\"") else { throw CoreError(.malformed, "Signature-Input parameter \(kv[0]) is not closed") }
                v = String(v.dropFirst().dropLast())
            }
            guard params[String(kv[0])] == nil else { throw CoreError(.malformed, "Signature-Input repeats \(kv[0])") }
            params[String(kv[0])] = v
        }
        guard let createdText = params["created"], let created = Int64(createdText) else { throw CoreError(.malformed, "Signature-Input has no created") }
        guard let nonce = params["nonce"], !nonce.isEmpty, nonce.count <= 64 else { throw CoreError(.malformed, "Signature-Input has no nonce") }
        guard let keyid = params["keyid"] else { throw CoreError(.malformed, "Signature-Input has no keyid") }
        let expires = try params["expires"].map { (t) throws(CoreError) -> Int64 in
            guard let e = Int64(t) else { throw CoreError(.malformed, "Signature-Input expires is not a number") }
            return e
        }
        return (Parameters(components: components, created: created, expires: expires, nonce: nonce, keyid: keyid, alg: params["alg"] ?? ""), Array(sig))
    }

    /// A fresh random nonce (128 bits, base64url).
    public static func nonce() -> String {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<2).flatMap { _ -> [UInt8] in let w = g.next(); return (0..<8).map { UInt8(truncatingIfNeeded: w >> ($0 * 8)) } }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
