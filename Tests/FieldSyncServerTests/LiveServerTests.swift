import AsyncHTTPClient
import FieldSyncCore
import FieldSyncStore
import Foundation
import NIOCore
import NIOSSL
import Synchronization
import Testing
@testable import FieldSyncServer

/// The real `fieldsync-server` binary, serving TLS on a free loopback port.
final class ServerProcess: @unchecked Sendable {
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fieldsync-server").path
    let process = Process()
    let port: Int

    /// `fieldsync-server serve` on this test server's store.
    convenience init(_ ts: TestServer) throws { try self.init(storeArgs: ts.storeArgs) }

    init(storeArgs: [String]) throws {
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["serve", "--port", "0"] + storeArgs
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line says where it listens.
        var line = Data()
        let handle = out.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            guard !chunk.isEmpty else { throw ServerError("server exited before listening") }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.lastIndex(of: ":"), let p = Int(text[text.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ServerError("unexpected first line: \(text)")
        }
        port = p
    }

    func kill(_ signal: Int32) { Foundation.kill(process.processIdentifier, signal) }
    deinit { if process.isRunning { kill(SIGKILL) } }
}

/// A signing HTTPS client trusting only the server's CA.
struct LiveClient {
    let http: HTTPClient
    let port: Int

    init(caPEM: String, port: Int, maxTLS: TLSVersion? = nil) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        tls.minimumTLSVersion = .tlsv1
        tls.maximumTLSVersion = maxTLS
        // Generous bounds on reaching the server and getting a pooled connection: on two loaded
        // cores sixteen TLS handshakes at once take longer than the client's defaults.
        var config = HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .seconds(60)))
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.port = port
    }

    func sync(_ key: DeviceKey, changes: [SignedChange]) async throws -> (Int, JSONValue) {
        let body = syncBody(changes)
        var s = Signer(key)
        s.target = "https://127.0.0.1:\(port)/v1/sync"
        var req = HTTPClientRequest(url: s.target)
        req.method = .POST
        for f in s.headers(body: body) { req.headers.add(name: f.name.rawName, value: f.value) }
        req.body = .bytes(ByteBuffer(bytes: body))
        let res = try await http.execute(req, timeout: .seconds(10))
        let bytes = try await res.body.collect(upTo: 32 << 20)
        return (Int(res.status.code), readableBody(Array(bytes.readableBytesView), contentType: res.headers.first(name: "Content-Type")))
    }

    func shutdown() async { try? await http.shutdown() }
}

@Suite(.serialized) struct LiveServerTests {
    @Test func syncOverRealTLSAndGracefulShutdown() async throws {
        let ts = try await TestServer.make()
        let key = try await ts.enroll(.field, "alice")
        var laptop = TestLaptop(key: key, roster: try await ts.store.roster())
        let c = try laptop.note("UA-LIVE-1").1
        let server = try ServerProcess(ts)
        let client = try LiveClient(caPEM: try ts.data.caPEM(), port: server.port)
        let (status, answer) = try await client.sync(key, changes: [c])
        #expect(status == 200 && answer["accepted"] == .array([.string(c.id.hex)]))
        // A client that does not trust the server's CA gets no connection.
        let stranger = try LiveClient(caPEM: try ServerData(directory: ts.dir + "-other").initialisedCA(), port: server.port)
        await #expect(throws: (any Error).self) { _ = try await stranger.sync(key, changes: []) }
        // Nor does one limited to TLS 1.1.
        let old = try LiveClient(caPEM: try ts.data.caPEM(), port: server.port, maxTLS: .tlsv11)
        await #expect(throws: (any Error).self) { _ = try await old.sync(key, changes: []) }
        for cl in [client, stranger, old] { await cl.shutdown() }
        server.kill(SIGTERM)
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .exit)
    }

    /// Only a store call that is the only one in flight may work on its own thread, and while it
    /// runs no other is: at most one pool thread ever waits on SQLite (two waiting for the
    /// reader pool once deadlocked the server in B3).
    @Test func twoStoreCallsInFlightAreNeverBothInline() async throws {
        let ts = try await TestServer.make(.sqlite)  // the SQLite store's own thread hand-off
        let store = try #require(ts.store as? SQLiteSyncStore)
        let (first, second) = try await store.counted { first in (first, try await store.counted { $0 }) }
        #expect(first && !second)
        #expect(try await store.counted { $0 })
        // A burst of fifty calls: at most one inline at any moment.
        final class Inline: Sendable { let count = Mutex((now: 0, most: 0)) }
        let inline = Inline()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await store.counted { alone in
                        if alone { inline.count.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
                        try await Task.sleep(for: .milliseconds(2))
                        if alone { inline.count.withLock { $0.now -= 1 } }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(inline.count.withLock { $0.most } <= 1)
    }

    /// An upload on a slow link: its signature was fresh when the request went out, and expired
    /// while the body was still arriving. Judged when its head arrived, it is taken; judged at the
    /// body's end, every large upload on a link of a few kB/s was refused as expired (exit 4).
    @Test func anUploadStillArrivingWhenItsSignatureExpiresIsTaken() async throws {
        let ts = try await TestServer.make()
        let key = try await ts.enroll(.field, "slow-link")
        var laptop = TestLaptop(key: key, roster: try await ts.store.roster())
        let c = try laptop.note("UA-SLOW-1").1
        let server = try ServerProcess(ts)
        let client = try LiveClient(caPEM: try ts.data.caPEM(), port: server.port)
        defer { server.kill(SIGKILL) }
        let body = syncBody([c])
        var signer = Signer(key)
        signer.target = "https://127.0.0.1:\(server.port)/v1/sync"
        // Expiring 10 s from now; the second half of the body comes 12 s from now.
        signer.expiresIn = 120
        signer.created = Int64(Timestamps.nowMillis / 1000) - 110
        var request = HTTPClientRequest(url: signer.target)
        request.method = .POST
        for f in signer.headers(body: body) { request.headers.add(name: f.name.rawName, value: f.value) }
        let half = body.count / 2
        let (parts, more) = AsyncStream.makeStream(of: ByteBuffer.self)
        more.yield(ByteBuffer(bytes: body[..<half]))
        let rest = Task {
            try await Task.sleep(for: .seconds(12))
            more.yield(ByteBuffer(bytes: body[half...]))
            more.finish()
        }
        request.body = .stream(parts, length: .known(Int64(body.count)))
        let response = try await client.http.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        _ = try await rest.value
        let answer = readableBody(Array(bytes.readableBytesView), contentType: response.headers.first(name: "Content-Type"))
        #expect(response.status.code == 200, "\(answer)")
        #expect(answer["accepted"] == .array([.string(c.id.hex)]))
        await client.shutdown()
    }

    /// A depot's laptops all at once, each on its own connection, uploading and pulling: every
    /// request is answered. (Storage work done on pool threads when a request looked alone once
    /// deadlocked the server this way: B3 hung in two of five runs.)
    @Test func aBurstOfLaptopsAllGetTheirAnswers() async throws {
        let ts = try await TestServer.make()
        var keys: [DeviceKey] = []
        for i in 0..<50 { keys.append(try await ts.enroll(.field, "depot-\(i)")) }
        let roster = try await ts.store.roster()
        let server = try ServerProcess(ts)
        defer { server.kill(SIGKILL) }
        let caPEM = try ts.data.caPEM()
        let port = server.port
        let answered = await withTaskGroup(of: Int.self) { group in
            for key in keys {
                group.addTask {
                    var laptop = TestLaptop(key: key, roster: roster)
                    guard let client = try? LiveClient(caPEM: caPEM, port: port) else { return 0 }
                    var ok = 0
                    for i in 0..<30 {
                        // Every third request a pull alone; the others carry a new note.
                        let changes = i % 3 == 0 ? [] : [try? laptop.note("D-\(i)").1].compactMap { $0 }
                        if let (status, _) = try? await client.sync(key, changes: changes), status == 200 { ok += 1 }
                    }
                    await client.shutdown()
                    return ok
                }
            }
            return await group.reduce(0, +)
        }
        #expect(answered == 50 * 30)
    }

    /// SIGKILL while five laptops upload: every change the server acknowledged is there after a restart.
    @Test func killedServerLosesNoAcknowledgedChange() async throws {
        let ts = try await TestServer.make()
        var keys: [DeviceKey] = []
        for i in 0..<5 { keys.append(try await ts.enroll(.field, "laptop-\(i)")) }
        let roster = try await ts.store.roster()
        let server = try ServerProcess(ts)
        let caPEM = try ts.data.caPEM()
        let port = server.port
        let acked = await withTaskGroup(of: [ChangeID].self) { group in
            for key in keys {
                group.addTask {
                    var laptop = TestLaptop(key: key, roster: roster)
                    guard let client = try? LiveClient(caPEM: caPEM, port: port) else { return [] }
                    var mine: [ChangeID] = []
                    var unacked: [SignedChange] = []
                    for i in 0..<400 {
                        guard let c = try? laptop.note("K-\(i)").1 else { break }
                        unacked.append(c)
                        guard let (status, answer) = try? await client.sync(key, changes: unacked), status == 200 else { break }
                        let ids = Set((answer["accepted"]?.arrayValue ?? []).compactMap(\.stringValue))
                        mine += unacked.filter { ids.contains($0.id.hex) }.map(\.id)
                        unacked.removeAll { ids.contains($0.id.hex) }
                    }
                    await client.shutdown()
                    return mine
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(3))
                server.kill(SIGKILL)
                return []
            }
            var all: [ChangeID] = []
            for await ids in group { all += ids }
            return all
        }
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .uncaughtSignal)
        #expect(acked.count > 20, "the laptops got answers before the kill (\(acked.count))")
        // Restart: the server opens its store again and holds every acknowledged change.
        let again = try ServerProcess(ts)
        again.kill(SIGTERM)
        again.process.waitUntilExit()
        var missing: [ChangeID] = []
        for id in acked { if try await !ts.store.hasChange(id) { missing.append(id) } }
        #expect(missing.isEmpty, "\(missing.count) acknowledged changes were lost")
    }
}

extension ServerData {
    /// Initialises a throwaway server elsewhere and returns its CA: a CA the real server did not use.
    func initialisedCA() throws -> String {
        _ = try initialise(hostnames: ["localhost"])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try caPEM()
    }
}
