import FieldSyncBodyCoding
import FieldSyncCore
import FieldSyncServer
import Foundation
import HTTPTypes
import Testing

/// gzip on the wire (issue 25): what the coding refuses, and the server taking and giving it.
@Suite struct CompressionTests {
    @Test func gzipRoundTripsAndRefusesWhatItDoesNotFullyUnderstand() throws {
        var rng = SystemRandomNumberGenerator()
        for size in [0, 1, 511, 512, 70_000, 300_000] {
            let text = (0..<size).map { _ in UInt8.random(in: 97...100, using: &rng) }
            #expect(try BodyCoding.decompress(BodyCoding.compress(text), limit: size) == text, "\(size) bytes")
        }
        let plain = Array(String(repeating: "narrative: cleared lane 4, no items found. ", count: 200).utf8)
        let packed = BodyCoding.compress(plain)
        #expect(packed.count < plain.count / 10)
        func refused(_ bytes: [UInt8], limit: Int = 1 << 20) -> BodyCodingError.Code? {
            do { _ = try BodyCoding.decompress(bytes, limit: limit); return nil } catch { return error.code }
        }
        #expect(refused(Array(packed.dropLast())) == .corrupt, "a stream that stops short")
        #expect(refused(Array(packed.dropLast(packed.count / 2))) == .corrupt)
        #expect(refused(packed + [0]) == .corrupt, "a byte after the stream")
        #expect(refused(packed + packed) == .corrupt, "a second member")
        #expect(refused([]) == .corrupt && refused(Array("not gzip".utf8)) == .corrupt)
        var flipped = packed
        flipped[flipped.count - 6] ^= 0x01  // the CRC-32
        #expect(refused(flipped) == .corrupt)
        // A bomb: 64 MB of zeros in about 64 kB stops at the limit, its output never past it.
        let bomb = BodyCoding.compress([UInt8](repeating: 0, count: 64 << 20))
        #expect(bomb.count < 100_000)
        #expect(refused(bomb, limit: 1 << 20) == .tooLarge)
        #expect(refused(packed, limit: plain.count - 1) == .tooLarge && refused(packed, limit: plain.count) == nil)

        #expect(BodyCoding.admitsGzip("gzip") && BodyCoding.admitsGzip("br, GZIP;q=0.5") && BodyCoding.admitsGzip("deflate, gzip"))
        #expect(!BodyCoding.admitsGzip("gzip;q=0") && !BodyCoding.admitsGzip("identity") && !BodyCoding.admitsGzip(nil) && !BodyCoding.admitsGzip("x-gzip"))
        #expect(BodyCoding.coding(of: nil) == nil && BodyCoding.coding(of: "identity") == nil)
        #expect(BodyCoding.coding(of: " GZip ") == .gzip && BodyCoding.coding(of: "br") == .unsupported && BodyCoding.coding(of: "gzip, gzip") == .unsupported)
    }

    /// An upload sent compressed is taken, and the answer comes compressed, signed over the bytes
    /// as sent, with the server saying it takes compressed requests.
    @Test func anUploadGoesAndItsAnswerComesCompressed() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a"), kb = try await ts.enroll(.field, "b")
        var a = TestLaptop(key: ka, roster: try await ts.store.roster())
        let changes = try (0..<40).map { try a.note(String(format: "UA-KHA-%04d", $0)).1 }
        let plain = syncBody(changes)
        let packed = BodyCoding.compress(plain)
        var headers = Signer(ka).headers(body: packed)
        headers[.contentEncoding] = "gzip"
        let (status, answer, h, _) = try await send(ts, headers: headers, body: packed)
        #expect(status == 200 && answer["accepted"]?.arrayValue?.count == 40, "\(answer)")
        #expect(h[.acceptEncoding] == "gzip")

        let pull = syncBody([])
        var asks = Signer(kb).headers(body: pull)
        asks[.acceptEncoding] = "gzip"
        let (s2, _, h2, raw) = try await send(ts, headers: asks, body: pull)
        #expect(s2 == 200 && h2[.contentEncoding] == "gzip")
        let (params, sig) = try HTTPSignature.parse(input: h2[HTTPField.Name("Signature-Input")!]!, signature: h2[HTTPField.Name("Signature")!]!)
        #expect(h2[HTTPField.Name("Content-Digest")!] == HTTPSignature.contentDigest(raw))
        #expect(HTTPSignature.verify(values: ["200", HTTPSignature.contentDigest(raw), SyncProtocol.syncType], parameters: params, signature: sig,
                                     publicKey: ts.serverKey.publicKey))
        let unpacked = try BodyCoding.decompress(raw, limit: SyncProtocol.maxBodyBytes)
        #expect(try SyncResponse(body: unpacked).changes.count == 40)
        #expect(raw.count < unpacked.count * 3 / 4, "\(raw.count) of \(unpacked.count)")
        // Not asked for: not compressed.
        let (_, _, h3, _) = try await send(ts, headers: Signer(kb).headers(body: pull), body: pull)
        #expect(h3[.contentEncoding] == nil)
    }

    /// A compressed body is authenticated before it is read, refused past the limit its plain
    /// form has, and a coding the server does not speak is 415.
    @Test func compressedBodiesAreBoundedAndCodingsChecked() async throws {
        let ts = try await TestServer.make()
        let ka = try await ts.enroll(.field, "a")
        func sent(_ body: [UInt8], coding: String?, signer: Signer? = nil) async throws -> (Int, String?) {
            var headers = (signer ?? Signer(ka)).headers(body: body)
            headers[.contentEncoding] = coding
            let (status, answer, _, _) = try await send(ts, headers: headers, body: body)
            return (status, answer["type"]?.stringValue)
        }
        let bomb = BodyCoding.compress([UInt8](repeating: 0, count: SyncProtocol.maxBodyBytes + 1))
        #expect(try await sent(bomb, coding: "gzip") == (413, Problem.Code.bodyTooLarge.uri))
        #expect(try await sent(Array("not gzip at all".utf8), coding: "gzip") == (400, Problem.Code.malformedRequest.uri))
        #expect(try await sent(BodyCoding.compress(syncBody([])), coding: "br") == (415, Problem.Code.unsupportedMediaType.uri))
        // Unauthenticated: refused on its key before anything is decompressed.
        #expect(try await sent(bomb, coding: "gzip", signer: Signer(DeviceKey())) == (401, Problem.Code.unknownKey.uri))
        // An enrolment is never compressed.
        let key = DeviceKey()
        let enrol = BodyCoding.compress(Array(try JSONEncoder().encode(EnrollRequest(token: "t", publicKey: key.publicKey, name: "x"))))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        var headers = s.headers(body: enrol)
        headers[.contentEncoding] = "gzip"
        let (status, answer, _, _) = try await send(ts, uri: "/v1/enroll", headers: headers, body: enrol)
        #expect(status == 415 && answer["type"]?.stringValue == Problem.Code.unsupportedMediaType.uri, "\(answer)")
    }
}
