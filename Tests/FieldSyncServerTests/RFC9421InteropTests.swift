import FieldSyncCore
import Foundation
import HTTPTypes
import Testing
@testable import FieldSyncServer

/// Requests signed by an independent RFC 9421 implementation, the PyPI package
/// `http-message-signatures`, which writes its parameters in its own order
/// (`created;keyid;alg;expires;nonce`): our verifier and the server accept them, and refuse a
/// tampered copy. The package is installed in a virtual environment in `.build/venv-rfc9421`
/// (made on the first run, reused after); if it cannot be installed these tests fail.
@Suite struct RFC9421InteropTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let package = "http-message-signatures==3.0.0"

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Runs a program; returns its standard output, or throws with its output if it fails.
    static func run(_ program: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Read before waiting: pip's output can fill a pipe.
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: o, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw Failure(description: "\(program) \(arguments.joined(separator: " ")) exited \(p.terminationStatus): \(text)\(String(decoding: e, as: UTF8.self))")
        }
        return text
    }

    /// The virtual environment's python, with the package installed. Made once per process.
    static let python: Result<String, Failure> = {
        let venv = root + "/.build/venv-rfc9421"
        let python = venv + "/bin/python"
        if (try? run(python, ["-c", "import http_message_signatures"])) != nil { return .success(python) }
        do {
            _ = try run("/usr/bin/env", ["python3", "-m", "venv", "--clear", venv])
            _ = try run(venv + "/bin/pip", ["install", "--quiet", package])
            _ = try run(python, ["-c", "import http_message_signatures"])
            return .success(python)
        } catch {
            return .failure(Failure(description: "cannot install \(package) in \(venv) (python3-venv and PyPI are needed): \(error)"))
        }
    }()

    struct Signed: Decodable {
        let contentDigest: String, signatureInput: String, signature: String
        enum CodingKeys: String, CodingKey { case contentDigest = "Content-Digest", signatureInput = "Signature-Input", signature = "Signature" }
    }

    /// The headers `scripts/rfc9421-sign.py` makes for this request.
    static func sign(method: String = "POST", url: String, contentType: String, body: [UInt8], key: DeviceKey, keyid: String,
                     created: Int64 = Int64(Timestamps.nowMillis / 1000), nonce: String = HTTPSignature.nonce()) throws -> Signed {
        let python = try Self.python.get()
        let hex = { (b: [UInt8]) in b.map { String(format: "%02x", $0) }.joined() }
        let out = try run(python, [root + "/scripts/rfc9421-sign.py", method, url, contentType, hex(body), hex(key.rawRepresentation), keyid,
                                   String(created), String(created + 120), nonce])
        return try JSONDecoder().decode(Signed.self, from: Data(out.utf8))
    }

    @Test func ourVerifierAcceptsASignatureFromHTTPMessageSignatures() throws {
        let key = DeviceKey()
        let body = Array(#"{"hello": "world"}"#.utf8)
        let url = "https://sync.example:8443/v1/roster"
        let s = try Self.sign(url: url, contentType: SyncProtocol.contentType, body: body, key: key, keyid: key.deviceID.description, nonce: "n0nce")
        // Its own order, which our serialisation does not produce.
        #expect(s.signatureInput.contains(#";created="#) && s.signatureInput.contains(#";alg="ed25519";expires="#), "\(s.signatureInput)")
        #expect(s.contentDigest == HTTPSignature.contentDigest(body))
        let (params, sig) = try HTTPSignature.parse(input: s.signatureInput, signature: s.signature)
        #expect(params.components == HTTPSignature.requestComponents && params.nonce == "n0nce" && params.keyid == key.deviceID.description)
        let values = ["POST", url, s.contentDigest, SyncProtocol.contentType]
        #expect(HTTPSignature.verify(values: values, parameters: params, signature: sig, publicKey: key.publicKey))

        // Tampered: one body byte (with its digest made again), the method, the target.
        var other = body
        other[2] ^= 1
        for (what, altered) in [("body", ["POST", url, HTTPSignature.contentDigest(other), SyncProtocol.contentType]),
                                ("method", ["PUT", url, s.contentDigest, SyncProtocol.contentType]),
                                ("target", ["POST", url + "?x", s.contentDigest, SyncProtocol.contentType])] {
            #expect(!HTTPSignature.verify(values: altered, parameters: params, signature: sig, publicKey: key.publicKey), "altered \(what)")
        }
    }

    @Test func theServerAcceptsASyncSignedByHTTPMessageSignatures() async throws {
        let ts = try await TestServer.make()
        let alice = try await ts.enroll(.field, "alice")
        let body = syncBody([])
        let s = try Self.sign(url: "https://localhost/v1/sync", contentType: SyncProtocol.syncType, body: body, key: alice,
                              keyid: alice.deviceID.description)
        func headers(_ s: Signed, digest: String? = nil) -> HTTPFields {
            var h = HTTPFields()
            h[.contentType] = SyncProtocol.syncType
            h[HTTPField.Name("Content-Digest")!] = digest ?? s.contentDigest
            h[HTTPField.Name("Signature-Input")!] = s.signatureInput
            h[HTTPField.Name("Signature")!] = s.signature
            return h
        }
        let (status, answer, _, _) = try await send(ts, headers: headers(s), body: body)
        #expect(status == 200, "\(answer)")

        // One body byte changed, its Content-Digest made again to match: the signature no longer verifies.
        let fresh = try Self.sign(url: "https://localhost/v1/sync", contentType: SyncProtocol.syncType, body: body, key: alice,
                                  keyid: alice.deviceID.description)
        var other = body
        other[other.count - 1] ^= 1
        let (s1, p1, _, _) = try await send(ts, headers: headers(fresh, digest: HTTPSignature.contentDigest(other)), body: other)
        #expect(s1 == 401 && p1["detail"]?.stringValue == "the request signature does not verify", "\(p1)")
        // The method changed: signed as PUT, sent as POST.
        let put = try Self.sign(method: "PUT", url: "https://localhost/v1/sync", contentType: SyncProtocol.syncType, body: body, key: alice,
                                keyid: alice.deviceID.description)
        let (s2, p2, _, _) = try await send(ts, headers: headers(put), body: body)
        #expect(s2 == 401 && p2["detail"]?.stringValue == "the request signature does not verify", "\(p2)")
    }
}
