import Crypto
@testable import FieldSyncClient
import FieldSyncCore
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import X509

/// An HTTPS server that misbehaves in one way (`Fixtures/odd_tls_server.py`), with a certificate
/// from a real `fieldsync-server init`'s CA.
final class OddServer: @unchecked Sendable {
    let process = Process()
    let port: Int
    let caPEM: String

    /// `cert` and `key`: files in the server's directory (its own TLS certificate by default).
    init(_ mode: String, _ server: LiveServer, cert: String = "tls.pem", key: String = "tls.key") throws {
        caPEM = try String(contentsOfFile: server.dir + "/ca.pem", encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/odd_tls_server.py").path,
                             mode, server.dir + "/" + cert, server.dir + "/" + key]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        port = Int(try firstLine(of: out, from: "odd_tls_server.py \(mode)"))!
    }

    var url: String { "https://127.0.0.1:\(port)" }

    func transport() throws -> SyncTransport {
        try SyncTransport(baseURL: url, caPEM: caPEM, key: DeviceKey(), offsetMillis: 0, serverKey: nil)
    }

    deinit { process.terminate() }
}

/// The sync transport against servers that stop answering, answer too much or close after each
/// answer: each request ends with the failure the user would be told about, never a hang.
@Suite struct TransportTests {
    static func get(_ c: HTTPSConnection, limit: Int = 1 << 20, stall: TimeAmount = .seconds(30),
                    deadline: TimeAmount = .seconds(30)) async throws -> (HTTPResponseHead, ByteBuffer) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/healthz")
        head.headers.add(name: "Host", value: "127.0.0.1")
        head.headers.add(name: "Content-Length", value: "0")
        return try await c.send(head, body: ByteBuffer(), limit: limit, stall: stall, deadline: .now() + deadline)
    }

    static func connect(_ odd: OddServer) async throws -> HTTPSConnection {
        let t = try odd.transport()
        return try await HTTPSConnection.connect(host: "127.0.0.1", port: odd.port, tls: t.connections.tls, timeout: .seconds(5))
    }

    /// The failure a request ended with, and how long it took to end.
    static func failure(_ body: () async throws -> Void) async -> (String, Duration) {
        let start = ContinuousClock.now
        do { try await body() } catch { return ("\(error)", ContinuousClock.now - start) }
        return ("no failure", ContinuousClock.now - start)
    }

    @Test func anAnswerThatNeverComesEndsTheRequestWhenNothingMoves() async throws {
        let odd = try OddServer("silent", try LiveServer())
        let c = try await Self.connect(odd)
        let (message, took) = await Self.failure { _ = try await Self.get(c, stall: .milliseconds(400)) }
        #expect(message.contains("nothing moved"), "\(message)")
        // Well before the server gives up (60 s). Not tighter: other suites' processes share the cores.
        #expect(took < .seconds(50))
        #expect(!c.isOpen, "a connection whose request failed is closed, never reused")
    }

    @Test func aRequestEndsAtItsDeadlineThoughTheLinkIsAlive() async throws {
        let odd = try OddServer("silent", try LiveServer())
        let c = try await Self.connect(odd)
        let (message, took) = await Self.failure { _ = try await Self.get(c, deadline: .milliseconds(400)) }
        #expect(message.contains("deadline"), "\(message)")
        #expect(took < .seconds(50))
    }

    @Test func aCancelledRequestEndsWithoutWaitingForTLSToClose() async throws {
        let odd = try OddServer("silent", try LiveServer())
        let c = try await Self.connect(odd)
        let request = Task { try await Self.get(c) }
        try await Task.sleep(for: .milliseconds(300))
        request.cancel()
        // Failed by the collector as the close went by, not later by the channel going inactive
        // (TLS waits for the silent server's close_notify first).
        let (message, _) = await Self.failure { _ = try await request.value }
        #expect(message.contains("closed during the request"), "\(message)")
        #expect(!c.isOpen)
        // Through the transport, a cancelled sync is a cancellation, not a bad link.
        let t = try odd.transport()
        let sync = Task { try await t.send(method: .GET, path: "/healthz", body: [], sign: false) }
        try await Task.sleep(for: .milliseconds(300))
        sync.cancel()
        await #expect(throws: CancellationError.self) { _ = try await sync.value }
    }

    @Test func anAnswerLargerThanTheLimitIsRefused() async throws {
        let odd = try OddServer("big", try LiveServer())
        let c = try await Self.connect(odd)
        let (message, _) = await Self.failure { _ = try await Self.get(c, limit: 100_000) }
        #expect(message.contains("larger than 100000 bytes"), "\(message)")
        // Under the limit, the whole answer arrives.
        let fresh = try await Self.connect(odd)
        let (head, body) = try await Self.get(fresh, limit: 4 << 20)
        #expect(head.status == .ok && body.readableBytes == 2 * 1024 * 1024)
        fresh.close()
    }

    @Test func aConnectionTheServerClosesAfterItsAnswerIsNotUsedAgain() async throws {
        let odd = try OddServer("close", try LiveServer())
        let t = try odd.transport()
        // Each answer says `Connection: close`: each request gets a connection of its own (the
        // server counts them), none fails on the one closed behind the last answer.
        for n in 1...3 {
            let (status, body) = try await t.send(method: .GET, path: "/healthz", body: [], sign: false)
            #expect(status == 200 && String(decoding: body, as: UTF8.self) == "ok \(n)")
        }
        await t.shutdown()
    }

    @Test func aLinkGoneDeadIsUnreachableAndAServerOfAnotherCAIsNotTrusted() async throws {
        let server = try LiveServer()
        let odd = try OddServer("silent", server)
        // Nothing listens on the port any more: unreachable (exit 3), retried by `sync`.
        let closed = try SyncTransport(baseURL: "https://127.0.0.1:1", caPEM: odd.caPEM, key: DeviceKey(), offsetMillis: 0, serverKey: nil)
        let (refused, _) = await Self.failure { _ = try await closed.send(method: .GET, path: "/healthz", body: [], sign: false) }
        #expect(refused.hasPrefix("cannot reach https://127.0.0.1:1"), "\(refused)")
        // A server whose certificate chains to another CA: authentication (exit 4), not a bad link.
        let other = try LiveServer()
        let stranger = try SyncTransport(baseURL: odd.url, caPEM: try String(contentsOfFile: other.dir + "/ca.pem", encoding: .utf8),
                                         key: DeviceKey(), offsetMillis: 0, serverKey: nil)
        do {
            _ = try await stranger.send(method: .GET, path: "/healthz", body: [], sign: false)
            Issue.record("a server of another CA was trusted")
        } catch let f as SyncFailure {
            #expect(f.exit == .authentication && f.message.contains("pinned CA"), "\(f.message)")
        }
    }

    /// A certificate the pinned CA signed, but for another host: a bad certificate (exit 4, not
    /// retried), never a bad link, and no request goes out on it.
    @Test func aCertificateForAnotherHostIsRefused() async throws {
        let server = try LiveServer()
        let ca = try Certificate(pemEncoded: String(contentsOfFile: server.dir + "/ca.pem", encoding: .utf8))
        let caKey = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: server.dir + "/ca.key", encoding: .utf8))
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let now = Date()
        let other = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(3600),
            issuer: ca.subject, subject: try DistinguishedName { CommonName("other.example") }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([.dnsName("other.example")])
            },
            issuerPrivateKey: caKey)
        try (try other.serializeAsPEM().pemString).write(toFile: server.dir + "/other.pem", atomically: true, encoding: .utf8)
        try (try key.serializeAsPEM().pemString).write(toFile: server.dir + "/other.key", atomically: true, encoding: .utf8)
        let odd = try OddServer("count", server, cert: "other.pem", key: "other.key")
        do {
            _ = try await odd.transport().send(method: .GET, path: "/healthz", body: [], sign: false)
            Issue.record("a certificate for other.example was trusted for 127.0.0.1")
        } catch let f as SyncFailure {
            #expect(f.exit == .authentication && f.message.contains("not for 127.0.0.1"), "\(f.message)")
        }
    }

    @Test func aSlowUploadThatKeepsMovingIsNotCutOff() async throws {
        // The server takes 320 kB/s through a small buffer; nothing may stall for 0.8 s, and the
        // whole upload takes seconds: each piece that leaves counts as progress.
        let odd = try OddServer("slow", try LiveServer())
        let c = try await Self.connect(odd)
        #expect(try await Self.upload(1 << 20, on: c, stall: .milliseconds(800)) == "got \(1 << 20)")
        c.close()
    }

    /// Uploads `size` bytes; the answer's body.
    static func upload(_ size: Int, on c: HTTPSConnection, stall: TimeAmount) async throws -> String {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/sync")
        head.headers.add(name: "Host", value: "127.0.0.1")
        head.headers.add(name: "Content-Length", value: String(size))
        let (answer, body) = try await c.send(head, body: ByteBuffer(repeating: 7, count: size), limit: 1000, stall: stall, deadline: .now() + .seconds(60))
        return answer.status == .ok ? String(buffer: body) : "HTTP \(answer.status.code)"
    }

    /// An upload waits in the send buffer at the link's pace: after its last write (all of a
    /// small one), and in the middle of a large one, whose writes resume only when half the
    /// buffer has drained. Here the link carries nothing for 2 s each time. The stall check
    /// allows for the drain (at 1 kB/s).
    @Test func anUploadWaitingInTheSendBufferIsNotAStall() async throws {
        let odd = try OddServer("late", try LiveServer())
        let c = try await Self.connect(odd)
        #expect(try await Self.upload(48 << 10, on: c, stall: .milliseconds(800)) == "got \(48 << 10)")
        #expect(try await Self.upload(1 << 20, on: c, stall: .milliseconds(800)) == "got \(1 << 20)")
        c.close()
    }

    @Test func aKeptConnectionIsUsedAgainAndOneTheServerClosedIsReplaced() async throws {
        let odd = try OddServer("count", try LiveServer())
        let t = try odd.transport()
        func ask(_ path: String = "/healthz") async throws -> String {
            String(decoding: try await t.send(method: .GET, path: path, body: [], sign: false).1, as: UTF8.self)
        }
        #expect(try await ask() == "ok 1")
        #expect(try await ask() == "ok 1", "the second request goes on the kept connection")
        // The server lets the connection go 0.1 s after this answer, as it does an idle one: the
        // next request opens another, and does not fail on the closed one.
        #expect(try await ask("/bye") == "ok 1")
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try await ask() == "ok 2")
        await t.shutdown()
    }

    @Test func aConnectionAnsweredBeforeItsRequestWentWholeIsNotUsedAgain() async throws {
        // The server answers a 2 MB upload as soon as it has read the request's head: the rest of
        // the body would be read as the next request, so the next one opens a connection of its own.
        let odd = try OddServer("early", try LiveServer())
        let t = try odd.transport()
        let (status, body) = try await t.send(method: .POST, path: "/v1/upload", body: [UInt8](repeating: 1, count: 2 << 20), sign: false)
        #expect(status == 200 && String(decoding: body, as: UTF8.self) == "early 1")
        let (_, next) = try await t.send(method: .GET, path: "/healthz", body: [], sign: false, timeout: .seconds(20))
        #expect(String(decoding: next, as: UTF8.self) == "early 2")
        await t.shutdown()
    }

    @Test func anAnswerThatEndsWithTheConnectionIsWhole() async throws {
        let odd = try OddServer("eof", try LiveServer())
        let t = try odd.transport()
        let (status, body) = try await t.send(method: .GET, path: "/healthz", body: [], sign: false)
        #expect(status == 200 && String(decoding: body, as: UTF8.self) == "all of it, until the end")
        await t.shutdown()
    }

    @Test func aLinkCutDuringTheHandshakeIsABadLinkNotABadCertificate() async throws {
        let odd = try OddServer("hangup", try LiveServer())
        let t = try odd.transport()
        do {
            _ = try await t.send(method: .GET, path: "/healthz", body: [], sign: false)
            Issue.record("a request through a hung-up handshake succeeded")
        } catch let f as SyncFailure {
            #expect(f.exit == .unreachable && f.message.contains("handshake"), "\(f.message)")
        }
    }

    @Test func serverURLsAreReadAsEnrolled() throws {
        let plain = try ServerEndpoint("https://depot.example")
        #expect(plain.host == "depot.example" && plain.port == 443 && plain.authority == "depot.example" && plain.base == "https://depot.example")
        let full = try ServerEndpoint("https://10.0.0.5:8443/fieldsync/")
        #expect(full.host == "10.0.0.5" && full.port == 8443 && full.basePath == "/fieldsync" && full.base == "https://10.0.0.5:8443/fieldsync")
        let v6 = try ServerEndpoint("https://[::1]:9443")
        #expect(v6.host == "::1" && v6.port == 9443 && v6.authority == "[::1]:9443")
        #expect(HTTPSConnection.isAddress("10.0.0.5") && HTTPSConnection.isAddress("::1") && !HTTPSConnection.isAddress("depot.example"))
        for bad in ["http://depot.example", "depot.example:8443", "https://", "https://user@depot.example"] {
            #expect(throws: SyncFailure.self, "\(bad)") { try ServerEndpoint(bad) }
        }
    }
}
