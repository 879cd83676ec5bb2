import Crypto
import Foundation
import Testing
@testable import FieldSyncCore

private let list = #"("@method" "@target-uri" "content-digest" "content-type")"#
private let good = #";created=1700000000;expires=1700000120;nonce="n";keyid="k";alg="ed25519""#
private let signature = "sig1=:" + Data(repeating: 1, count: 64).base64EncodedString() + ":"

/// RFC 9421 as written: the published test vector verifies, the `@signature-params` value is
/// taken as received (any parameter order), the base is signed without a prefix, and the
/// parser of `Signature-Input` and `Signature` refuses what is not a strict RFC 8941 Dictionary.
@Suite struct HTTPSignatureTests {
    // RFC 9421 Appendix B.2.6, "Signing a Request Using ed25519", over the test request of
    // Appendix B.2 with the key `test-key-ed25519` of Appendix B.1.4.
    static let b26Input = #"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#
    static let b26Signature = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
    /// `"date": …`, `"@method": …` and so on, in the order of the vector's component list.
    static let b26Values = ["Tue, 20 Apr 2021 02:07:55 GMT", "POST", "/foo", "example.com", "application/json", "18"]
    /// B.1.4's JWK `x`, "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs", as raw bytes.
    static let b26PublicKey = Array(Data(base64Encoded: "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=")!)

    @Test func rfc9421AppendixB26VerifiesAsPublished() throws {
        let (params, sig) = try HTTPSignature.parse(input: Self.b26Input, signature: Self.b26Signature, label: "sig-b26")
        #expect(params.components == ["date", "@method", "@path", "@authority", "content-type", "content-length"])
        #expect(params.created == 1_618_884_473 && params.keyid == "test-key-ed25519")
        #expect(params.expires == nil && params.nonce.isEmpty && params.alg.isEmpty)
        let base = String(decoding: HTTPSignature.base(values: Self.b26Values, parameters: params), as: UTF8.self)
        #expect(base == """
            "date": Tue, 20 Apr 2021 02:07:55 GMT
            "@method": POST
            "@path": /foo
            "@authority": example.com
            "content-type": application/json
            "content-length": 18
            "@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"
            """)
        #expect(HTTPSignature.verify(values: Self.b26Values, parameters: params, signature: sig, publicKey: Self.b26PublicKey))
        // Our protocol's parse wants its own label and a nonce.
        #expect(throws: CoreError.self) { try HTTPSignature.parse(input: Self.b26Input, signature: Self.b26Signature) }
    }

    @Test func rfc9421AppendixB26RefusesEveryAlteredComponent() throws {
        let (params, sig) = try HTTPSignature.parse(input: Self.b26Input, signature: Self.b26Signature, label: "sig-b26")
        for i in Self.b26Values.indices {
            var values = Self.b26Values
            values[i] += "x"
            #expect(!HTTPSignature.verify(values: values, parameters: params, signature: sig, publicKey: Self.b26PublicKey), "altered \(params.components[i])")
        }
        // The received text is what is verified: a parameter changed after parsing is not.
        var changed = params
        changed.created += 1
        #expect(changed.received == nil)
        #expect(!HTTPSignature.verify(values: Self.b26Values, parameters: changed, signature: sig, publicKey: Self.b26PublicKey))
        // A value with a line break would write a line of its own into the base.
        var values = Self.b26Values
        values[5] = "18\n\"x\": y"
        #expect(!HTTPSignature.verify(values: values, parameters: params, signature: sig, publicKey: Self.b26PublicKey))
        #expect(!HTTPSignature.verify(values: Array(values.dropLast()), parameters: params, signature: sig, publicKey: Self.b26PublicKey))
    }

    static let values = ["POST", "https://sync.example/v1/sync", HTTPSignature.contentDigest(Array("{}".utf8)), "application/json"]

    /// A signature over `paramsText` made outside `HTTPSignature`: the base written out by hand,
    /// signed as bytes with no prefix, as any RFC 9421 implementation does.
    static func foreign(_ paramsText: String, key: DeviceKey, label: String = "sig1") throws -> (input: String, signature: String) {
        let lines = zip(HTTPSignature.requestComponents, values).map { "\"\($0)\": \($1)" } + ["\"@signature-params\": \(paramsText)"]
        let sig = try key.privateKey.signature(for: Array(lines.joined(separator: "\n").utf8))
        return ("\(label)=\(paramsText)", "\(label)=:\(sig.base64EncodedString()):")
    }

    @Test func parametersInAnotherOrderVerify() throws {
        let key = DeviceKey()
        // The order of http-message-signatures (PyPI) and of the report in issue 23.
        let text = list + #";created=1700000000;keyid="k1";alg="ed25519";expires=1700000120;nonce="n-1""#
        let (input, signature) = try Self.foreign(text, key: key)
        let (params, sig) = try HTTPSignature.parse(input: input, signature: signature)
        #expect(params.received == text && params.serialised == text)
        #expect(params.components == HTTPSignature.requestComponents)
        #expect(params.created == 1_700_000_000 && params.expires == 1_700_000_120 && params.nonce == "n-1" && params.keyid == "k1" && params.alg == "ed25519")
        #expect(HTTPSignature.verify(values: Self.values, parameters: params, signature: sig, publicKey: key.publicKey))
        var altered = Self.values
        altered[0] = "PUT"
        #expect(!HTTPSignature.verify(values: altered, parameters: params, signature: sig, publicKey: key.publicKey))
        #expect(!HTTPSignature.verify(values: Self.values, parameters: params, signature: sig, publicKey: DeviceKey().publicKey))
    }

    @Test func otherSignaturesEscapesAndSpacingAreReadAsTheRFCSays() throws {
        let key = DeviceKey()
        // An escaped quote in the nonce, an unknown parameter, a token and a decimal in another
        // signature's parameters, spaces and a tab around the commas.
        let text = list + #";keyid="k\\2";nonce="a\"b";created=1;expires=301;alg="ed25519";tag="fieldsync";x=?1"#
        let (ours, sig) = try Self.foreign(text, key: key)
        let input = #"sig0=("@method");created=5;keyid="other";q=1.25;t=tok/en:x, "# + "\t" + ours + #" ,sig2=?0"#
        let signature = "sig0=:" + Data(repeating: 7, count: 64).base64EncodedString() + ":,   " + sig
        let (params, bytes) = try HTTPSignature.parse(input: input, signature: signature)
        #expect(params.nonce == "a\"b" && params.keyid == "k\\2" && params.received == text)
        #expect(HTTPSignature.verify(values: Self.values, parameters: params, signature: bytes, publicKey: key.publicKey))
    }

    @Test func ourOwnSignaturesAreOverTheRawBaseInOurOrder() throws {
        let key = DeviceKey()
        let mine = HTTPSignature.Parameters(components: HTTPSignature.requestComponents, created: 1_700_000_000, expires: 1_700_000_120,
                                            nonce: "n", keyid: "dev")
        let (input, signature) = HTTPSignature.sign(values: Self.values, parameters: mine, key: key)
        #expect(input == "sig1=" + list + #";created=1700000000;expires=1700000120;nonce="n";keyid="dev";alg="ed25519""#)
        let (params, sig) = try HTTPSignature.parse(input: input, signature: signature)
        #expect(params.received == mine.serialised)
        #expect(HTTPSignature.verify(values: Self.values, parameters: params, signature: sig, publicKey: key.publicKey))
        // No domain prefix: the bare Ed25519 check over the base accepts it, as any verifier's would.
        let plain = try Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey)
        #expect(plain.isValidSignature(sig, for: HTTPSignature.base(values: Self.values, parameters: mine)))
        // A change or roster signature over the same bytes is not an HTTP signature.
        let changeSig = key.sign(HTTPSignature.base(values: Self.values, parameters: mine), domain: .change)
        #expect(!HTTPSignature.verify(values: Self.values, parameters: params, signature: changeSig, publicKey: key.publicKey))
    }

    @Test(arguments: [
        // Numbers outside what RFC 8941 and the protocol allow: never a trap, always a refusal.
        ("Int64.min created", "sig1=" + list + ";created=-9223372036854775808" + #";keyid="k";nonce="n""#),
        ("Int64.max created", "sig1=" + list + ";created=9223372036854775807" + #";keyid="k";nonce="n""#),
        ("huge created", "sig1=" + list + ";created=" + String(repeating: "9", count: 400) + #";keyid="k";nonce="n""#),
        ("16-digit expires", "sig1=" + list + ";created=1;expires=1000000000000000" + #";keyid="k";nonce="n""#),
        ("negative created", "sig1=" + list + #";created=-5;keyid="k";nonce="n""#),
        ("negative expires", "sig1=" + list + #";created=5;expires=-1;keyid="k";nonce="n""#),
        ("decimal created", "sig1=" + list + #";created=1.5;keyid="k";nonce="n""#),
        ("string created", "sig1=" + list + #";created="1";keyid="k";nonce="n""#),
        ("bare minus", "sig1=" + list + #";created=-;keyid="k";nonce="n""#),
        ("decimal with no fraction", "sig1=" + list + #";created=1;x=1.;keyid="k";nonce="n""#),
        ("decimal with 4 fraction digits", "sig1=" + list + #";created=1;x=1.2345;keyid="k";nonce="n""#),
        // Repeats.
        ("duplicate created", "sig1=" + list + good + ";created=1700000001"),
        ("duplicate nonce", "sig1=" + list + good + #";nonce="m""#),
        ("duplicate label", "sig1=" + list + good + ", sig1=" + list + good),
        ("duplicate component", #"sig1=("@method" "@method" "content-digest" "content-type")"# + good),
        // Wrong types and missing parts.
        ("no created", "sig1=" + list + #";expires=1;nonce="n";keyid="k""#),
        ("no keyid", "sig1=" + list + #";created=1;nonce="n""#),
        ("no nonce", "sig1=" + list + #";created=1;keyid="k""#),
        ("token nonce", "sig1=" + list + #";created=1;keyid="k";nonce=n"#),
        ("token component", "sig1=(@method)" + good),
        ("component with parameters", #"sig1=("@method" "content-digest";sf)"# + good),
        ("upper-case component", #"sig1=("@method" "Content-Type")"# + good),
        ("empty component", #"sig1=("")"# + good),
        ("other label only", "sig2=" + list + good),
        ("label is an item", "sig1=:AAAA:" + good),
        ("label is a boolean", "sig1" + good),
        // Bounds.
        ("65-character nonce", "sig1=" + list + #";created=1;keyid="k";nonce=""# + String(repeating: "a", count: 65) + "\""),
        ("17 components", "sig1=(" + (0..<17).map { "\"h\($0)\"" }.joined(separator: " ") + ")" + good),
        ("long string", "sig1=" + list + good.replacingOccurrences(of: "keyid=\"k\"", with: "keyid=\"" + String(repeating: "k", count: 300) + "\"")),
        ("field over 4096 bytes", "sig1=" + list + good + ", " + (0..<600).map { "s\($0)=?1" }.joined(separator: ", ")),
        ("nine members", "sig1=" + list + good + ", " + (0..<8).map { "s\($0)=" + list + good }.joined(separator: ", ")),
        // Syntax.
        ("empty", ""),
        ("list not closed", #"sig1=("@method" "@target-uri""# + good),
        ("string not closed", #"sig1=("@method)"#),
        ("bad escape", "sig1=" + list + #";created=1;keyid="k\n";nonce="n""#),
        ("non-ASCII in a string", "sig1=" + list + ";created=1;keyid=\"ké\";nonce=\"n\""),
        ("control byte in a string", "sig1=" + list + ";created=1;keyid=\"k\u{1}\";nonce=\"n\""),
        ("trailing comma", "sig1=" + list + good + ","),
        ("garbage after", "sig1=" + list + good + " garbage"),
        ("no space between components", #"sig1=("@method""content-type")"# + good),
        ("upper-case key", "Sig1=" + list + good),
        ("parameter key with a digit first", "sig1=" + list + good + ";1x=2"),
        ("comma only", ","),
        ("date item (RFC 9651, not 8941)", "sig1=" + list + good + ";d=@1659578233"),
    ])
    func malformedSignatureInputIsRefused(_ named: (String, String)) {
        #expect(throws: CoreError.self, "\(named.0)") { try HTTPSignature.parse(input: named.1, signature: signature) }
    }

    @Test(arguments: [
        ("63 bytes", "sig1=:" + Data(repeating: 1, count: 63).base64EncodedString() + ":"),
        ("65 bytes", "sig1=:" + Data(repeating: 1, count: 65).base64EncodedString() + ":"),
        ("not base64", "sig1=:" + String(repeating: "*", count: 88) + ":"),
        ("base64url", "sig1=:" + String(repeating: "-_", count: 43) + "==:"),
        ("not closed", "sig1=:" + Data(repeating: 1, count: 64).base64EncodedString()),
        ("a string", "sig1=\"" + Data(repeating: 1, count: 64).base64EncodedString() + "\""),
        ("other label", "sig2=:" + Data(repeating: 1, count: 64).base64EncodedString() + ":"),
        ("duplicate label", signature + ", " + signature),
        ("over 4096 bytes", signature + ", x=:" + String(repeating: "A", count: 4100) + ":"),
        ("empty", ""),
    ])
    func malformedSignatureIsRefused(_ named: (String, String)) {
        #expect(throws: CoreError.self, "\(named.0)") { try HTTPSignature.parse(input: "sig1=" + list + good, signature: named.1) }
    }

    @Test func theLargestNumbersRFC8941AllowsAreRead() throws {
        let input = "sig1=" + list + #";created=999999999999999;expires=999999999999999;keyid="k";nonce="n";q=-999999999999.999"#
        let (params, _) = try HTTPSignature.parse(input: input, signature: signature)
        #expect(params.created == 999_999_999_999_999 && params.expires == 999_999_999_999_999)
    }

    /// Random bytes and random cuts and splices of a good header: every one is parsed or refused, none traps.
    @Test func randomInputNeverTraps() {
        var rng = SeededRNG(seed: 9421)
        let goodBytes = Array(("sig1=" + list + good).utf8)
        let alphabet = Array(#"sig1=()";:,\ -09azAZ@*.?"#.utf8) + [0x09, 0x00, 0xC3, 0xA9]
        var accepted = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0: bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            case 1:
                bytes = goodBytes
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = alphabet.randomElement(using: &rng)!
                }
            default: bytes = Array(goodBytes.prefix(Int.random(in: 0...goodBytes.count, using: &rng)))
            }
            let text = String(decoding: bytes, as: UTF8.self)
            if (try? HTTPSignature.parse(input: text, signature: signature)) != nil { accepted += 1 }
            _ = try? HTTPSignature.parse(input: "sig1=" + list + good, signature: text)
        }
        #expect(accepted > 0, "some mutations of a good header are still good")
    }
}
