import AsyncHTTPClient
import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
@testable import FieldSyncServer

/// The server in this process over real TLS on a loopback port, with the given limits.
final class InProcessServer: Sendable {
    let port: Int
    let task: Task<Void, any Error>

    init(_ ts: TestServer, limits: ConnectionLimits = .init()) async throws {
        let (chain, key) = try ts.data.tlsMaterial()
        let (ports, bound) = AsyncStream<Int>.makeStream()
        let app = try ts.server.application(chainPEM: chain, keyPEM: key, host: "127.0.0.1", port: 0, logger: { var l = Logger(label: "test"); l.logLevel = .warning; return l }(),
                                            limits: limits) { port in bound.yield(port) }
        task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var it = ports.makeAsyncIterator()
        guard let p = await it.next() else { throw ServerError("the server did not start") }
        port = p
    }

    func stop() { task.cancel() }
}

/// Runs `body` with a `LiveClient`, shut down however `body` ends (a client dropped unshut
/// crashes the test process instead of failing the test).
func withLiveClient<T>(_ ts: TestServer, _ server: InProcessServer, _ body: (LiveClient) async throws -> T) async throws -> T {
    let client = try LiveClient(caPEM: try ts.data.caPEM(), port: server.port)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// A plain TCP connection to the loopback port, nothing sent.
final class RawSocket {
    let fd: Int32
    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { close(fd); throw ServerError("cannot connect to \(port)") }
    }

    /// Waits up to `seconds` for the server to close: true if it did (EOF or reset).
    func closedByServer(within seconds: Int) -> Bool {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }

    deinit { close(fd) }
}

/// Requests from anywhere, built to break the server (issue 23): none may stop it, make it read
/// a body before the request's head authenticates, or write anything for a stranger; every
/// refusal carries its stable problem code.
@Suite struct HostileRequestTests {
    func problemType(_ answer: JSONValue) -> String? { answer["type"]?.stringValue }

    // MARK: 1. Numbers from outside never trap

    @Test func extremeCreatedAndExpiresAreRefusedNotATrap() async throws {
        let ts = try await TestServer.make()
        let alice = try await ts.enroll(.field, "alice")
        let body = syncBody([])
        let now = Int64(Timestamps.nowMillis / 1000)
        // (created, expiresIn) pairs; created + expiresIn never overflows in the test's own signer.
        // Numbers RFC 8941 does not allow (over 15 digits, negative) the header parser refuses;
        // the rest reach the freshness check.
        let big: Int64 = 999_999_999_999_999
        let cases: [(Int64, Int64, Problem.Code)] = [
            (.min, 0, .signatureCreated), (.min, .max, .signatureCreated), (.max, 0, .signatureCreated), (.max, .min, .signatureCreated),
            (now, .max - now, .signatureExpired), (now, .min, .signatureExpired), (now, -now - 1, .signatureExpired),
            (-1, 0, .signatureCreated), (0, 0, .signatureCreated), (0, big, .signatureCreated), (big, 0, .signatureCreated),
            (now, big - now, .signatureExpired), (now, -now, .signatureExpired),
        ]
        for (created, expiresIn, code) in cases {
            for key in [alice, DeviceKey()] {  // an enrolled key and an unsigned stranger alike
                var s = Signer(key); s.created = created; s.expiresIn = expiresIn
                let (status, answer, _, _) = try await send(ts, headers: s.headers(body: body), body: body)
                #expect(status == 401 && [code.uri, Problem.Code.signatureMalformed.uri].contains(problemType(answer)),
                        "created \(created), expires in \(expiresIn): \(answer)")
            }
        }
        // The server still serves.
        let (status, _, _, _) = try await send(ts, headers: Signer(alice).headers(body: body), body: body)
        #expect(status == 200)
    }

    @Test func freshnessArithmeticIsCheckedForEveryInput() throws {
        let values: [Int64] = [.min, .min + 1, -1, 0, 1, 1_700_000_000, .max - 1, .max]
        for nowMillis: UInt64 in [0, 1_700_000_000_000, .max] {
            for created in values {
                for expires in values.map(Optional.some) + [nil] {
                    _ = try? Authenticator.checkFreshness(created: created, expires: expires, nowMillis: nowMillis)
                }
            }
        }
        let now: UInt64 = 1_700_000_000_000
        #expect(try Authenticator.checkFreshness(created: 1_700_000_000, expires: 1_700_000_100, nowMillis: now) == 1_700_000_100_000)
        #expect(Authenticator.adding(seconds: 600, to: .max) == .max)
        #expect(Authenticator.adding(seconds: .max, to: 1) == .max)
        #expect(Authenticator.adding(seconds: 1, to: 1) == 1001)
    }

    // MARK: 5. Memory before authentication

    /// 10 MB declared, 64 kB sent and the rest never: only a server that judges the head before
    /// reading the body answers at all (before, it waited for 16 MB and the client timed out).
    @Test func largeBodiesWithUnknownKeysAreRefusedBeforeTheBodyIsRead() async throws {
        let ts = try await TestServer.make()
        let server = try await InProcessServer(ts)
        defer { server.stop() }
        try await withLiveClient(ts, server) { client in
            let answers = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for _ in 0..<16 {
                    group.addTask { try await Self.stalledUpload(client, key: DeviceKey(), declared: 10 << 20) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // An answer at all is the proof: the body never completes, so a server that read it
            // first would leave every client to its timeout. (No wall-clock bound: on two loaded
            // cores a bound measured the machine, not the server.)
            #expect(answers.allSatisfy { $0 == (401, Problem.Code.unknownKey.uri) }, "\(answers)")
        }
    }

    /// A declared length past the limit is refused from the head, for a known device too; an
    /// enrolment may not be more than 4 kB.
    @Test func aDeclaredLengthOverTheLimitIsRefusedBeforeReading() async throws {
        let ts = try await TestServer.make()
        let alice = try await ts.enroll(.field, "alice")
        let server = try await InProcessServer(ts)
        defer { server.stop() }
        try await withLiveClient(ts, server) { client in
            let big = try await Self.stalledUpload(client, key: alice, declared: SyncProtocol.maxBodyBytes + 1)
            #expect(big == (413, Problem.Code.bodyTooLarge.uri))
            let enrol = try await Self.stalledUpload(client, key: DeviceKey(), declared: Authenticator.maxEnrollBytes + 1, path: "/v1/enroll")
            #expect(enrol == (413, Problem.Code.bodyTooLarge.uri))
        }
    }

    /// Sends a signed request declaring `declared` bytes of body, 64 kB of which come and the
    /// rest never; returns the answer's status and problem type.
    static func stalledUpload(_ client: LiveClient, key: DeviceKey, declared: Int, path: String = "/v1/sync",
                              timeout: TimeAmount = .seconds(30)) async throws -> (Int, String?) {
        var s = Signer(key)
        s.target = "https://127.0.0.1:\(client.port)\(path)"
        var req = HTTPClientRequest(url: s.target)
        req.method = .POST
        for f in s.headers(body: []) { req.headers.add(name: f.name.rawName, value: f.value) }
        let (chunks, more) = AsyncStream<ByteBuffer>.makeStream()
        more.yield(ByteBuffer(repeating: 0, count: min(declared, 64 << 10)))
        req.body = .stream(chunks, length: .known(Int64(declared)))
        let res = try await client.http.execute(req, timeout: timeout)
        let bytes = try await res.body.collect(upTo: 1 << 20)
        more.finish()
        return (Int(res.status.code), problemType(of: Array(bytes.readableBytesView)))
    }

    static func problemType(of body: [UInt8]) -> String? { (try? JSONValue.parse(body))?["type"]?.stringValue }

    /// A known device's body that never ends: the connection is closed `requestTransfer` after
    /// the head (it was held as long as the client cared to).
    @Test func aBodyThatNeverEndsIsCutOff() async throws {
        let ts = try await TestServer.make()
        let alice = try await ts.enroll(.field, "alice")
        var limits = ConnectionLimits()
        limits.requestTransfer = .seconds(1)
        let server = try await InProcessServer(ts, limits: limits)
        defer { server.stop() }
        try await withLiveClient(ts, server) { client in
            let start = ContinuousClock.now
            await #expect(throws: (any Error).self) { _ = try await Self.stalledUpload(client, key: alice, declared: 1 << 20, timeout: .seconds(120)) }
            #expect(ContinuousClock.now - start < .seconds(60), "cut off after a second, not at the client's 120 s timeout")
        }
    }

    @Test func connectionsPastTheCapWaitUntilOneCloses() async throws {
        let ts = try await TestServer.make()
        var limits = ConnectionLimits()
        limits.maxConnections = 2
        let server = try await InProcessServer(ts, limits: limits)
        defer { server.stop() }
        var held = [try RawSocket(port: server.port), try RawSocket(port: server.port)]
        try await Task.sleep(for: .milliseconds(300))
        var health = HTTPClientRequest(url: "https://127.0.0.1:\(server.port)/healthz")
        health.method = .GET
        try await withLiveClient(ts, server) { client in
            await #expect(throws: (any Error).self, "a third connection is not served while two are open") {
                _ = try await client.http.execute(health, timeout: .seconds(2))
            }
            held.removeAll()
            let res = try await client.http.execute(health, timeout: .seconds(10))
            #expect(res.status == .ok)
            _ = try await res.body.collect(upTo: 1 << 16)
        }
    }

    @Test func oneAddressCannotTakeEverySlot() async throws {
        let ts = try await TestServer.make()
        var limits = ConnectionLimits()
        limits.maxConnectionsPerAddress = 3
        let server = try await InProcessServer(ts, limits: limits)
        defer { server.stop() }
        var held = try (0..<3).map { _ in try RawSocket(port: server.port) }
        try await Task.sleep(for: .milliseconds(300))
        let fourth = try RawSocket(port: server.port)
        #expect(fourth.closedByServer(within: 10), "a fourth connection from one address is closed at once")
        #expect(!held[0].closedByServer(within: 1), "the three within the cap stay open")
        // The slots come back when connections close: the address is served again.
        held.removeAll()
        try await Task.sleep(for: .milliseconds(300))
        let alice = try await ts.enroll(.field, "alice")
        try await withLiveClient(ts, server) { client in
            let status = try await client.sync(alice, changes: []).0
            #expect(status == 200)
        }
    }

    @Test func aConnectionThatNeverAuthenticatesIsClosedSoon() async throws {
        let ts = try await TestServer.make()
        var limits = ConnectionLimits()
        // Long enough for a loaded machine's TLS handshake and first request (30 s in service).
        limits.unauthenticatedIdle = .seconds(5)
        let server = try await InProcessServer(ts, limits: limits)
        defer { server.stop() }
        let silent = try RawSocket(port: server.port)
        let start = ContinuousClock.now
        #expect(silent.closedByServer(within: 30), "a silent connection is closed (it was kept ten minutes)")
        #expect(ContinuousClock.now - start < .seconds(30))
        // One that authenticated is not: two syncs further apart than that, on one kept connection.
        let alice = try await ts.enroll(.field, "alice")
        try await withLiveClient(ts, server) { client in
            #expect(try await client.sync(alice, changes: []).0 == 200)
            try await Task.sleep(for: .seconds(6))
            #expect(try await client.sync(alice, changes: []).0 == 200)
        }
    }

    // MARK: 6. The clock steps back

    @Test func aClockSteppingBackStartsANewWindow() async throws {
        let now = Atomic<UInt64>(1_000_000)
        let limiter = RateLimiter(perMinute: 2) { now.load(ordering: .relaxed) }
        try await limiter.admit("a")
        try await limiter.admit("a")
        await #expect(throws: Problem.self) { try await limiter.admit("a") }
        now.store(400_000, ordering: .relaxed)  // NTP steps ten minutes back: no trap, a new window
        try await limiter.admit("a")
        try await limiter.admit("a")
        do { try await limiter.admit("a"); Issue.record("a third request in the new window was admitted") } catch let p as Problem {
            #expect(p.status == 429 && p.code == .rateLimited)
        }
    }

    // MARK: 7. Nothing written before the token is verified; windows pruned

    @Test func enrolmentWithABadTokenWritesNothing() async throws {
        let ts = try await TestServer.make()
        let key = DeviceKey()
        let body = Array(try JSONEncoder().encode(EnrollRequest(token: "made-up", publicKey: key.publicKey, name: "x")))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        let headers = s.headers(body: body)
        // The same request twice: had the first stored its nonce, the second would be a replay.
        for _ in 0..<2 {
            let (status, answer, _, _) = try await send(ts, uri: "/v1/enroll", headers: headers, body: body)
            #expect(status == 403 && problemType(answer) == Problem.Code.inviteRefused.uri, "\(answer)")
        }
        #expect(await ts.server.limiter.windows.isEmpty, "no rate-limiter entry for an unverified enrolment")
    }

    @Test func limiterWindowsOlderThanAMinuteAreDropped() async throws {
        let now = Atomic<UInt64>(10_000_000)
        let limiter = RateLimiter(perMinute: 10) { now.load(ordering: .relaxed) }
        for i in 0..<100 { try await limiter.admit("device-\(i)") }
        #expect(await limiter.windows.count == 100)
        now.add(61_000, ordering: .relaxed)
        try await limiter.admit("late")
        #expect(await limiter.windows.keys.sorted() == ["late"])
        // Never more than the bound, even all within one minute.
        for i in 0..<(RateLimiter.maxWindows + 5) { try await limiter.admit("burst-\(i)") }
        #expect(await limiter.windows.count <= RateLimiter.maxWindows)
    }

    // MARK: 10. Names are bound by the invite

    @Test func theRosterNameIsTheInvitesNotTheDevicesChoice() async throws {
        let ts = try await TestServer.make()
        let token = try await ts.store.createInvite(role: .field, name: "mt3-laptop", ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        let key = DeviceKey()
        let body = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: key.publicKey, name: "coordinator-laptop")))
        var s = Signer(key); s.target = "https://localhost/v1/enroll"
        let (status, _, _, _) = try await send(ts, uri: "/v1/enroll", headers: s.headers(body: body), body: body)
        #expect(status == 200)
        let entry = try await ts.store.roster()[key.deviceID]
        #expect(entry?.name == "mt3-laptop" && entry?.role == .field)
    }

    @Test func namesWithControlOrBidiCharactersAreRefusedAndEscaped() {
        for bad in ["evil\u{202E}gpj.exe", "a\u{1B}[2J", "line\nbreak", "zero\u{200B}width", "iso\u{2066}late", "", " padded", "x\u{7F}"] {
            #expect(DeviceName.problem(bad) != nil, "\(bad.debugDescription)")
        }
        for good in ["mt3-laptop", "Équipe Nord 2", "مكتب-١", "laptop (press)"] {
            #expect(DeviceName.problem(good) == nil, "\(good)")
        }
        #expect(DeviceName.printable("a\u{1B}[2Jb\u{202E}") == "a\\u{001B}[2Jb\\u{202E}")
    }

    @Test func theAdminCommandsRefuseAndEscapeUnsafeNames() async throws {
        let ts = try await TestServer.make()
        let refused = try await runServerCLI(["invite"] + ts.storeArgs + ["--role", "field", "--name", "ok\u{1B}]0;pwned\u{07}"])
        #expect(refused.status == 2 && refused.err.contains("--name"), "\(refused)")
        // A name stored before names were checked is printed escaped.
        let token = try await ts.store.createInvite(role: .field, name: "old\u{1B}[31mred", ttlMillis: 3_600_000, now: Timestamps.nowMillis)
        _ = try await ts.store.enroll(token: token, publicKey: DeviceKey().publicKey, name: "", now: Timestamps.nowMillis)
        let list = try await runServerCLI(["devices", "list"] + ts.storeArgs)
        #expect(list.status == 0 && list.out.contains("old\\u{001B}[31mred") && !list.out.contains("\u{1B}"), "\(list)")
    }

    /// An administrator's view: an empty roster says so; the list has a header; an invite gives
    /// its token alone on stdout and, for the person, its expiry and the laptop's enrol line; an
    /// ambiguous revoke names the candidates and revokes nothing.
    @Test func theAdminCommandsSayWhatTheyDid() async throws {
        let ts = try await TestServer.make()
        #expect(try await runServerCLI(["devices", "list"] + ts.storeArgs).out == "(none)\n")
        let invite = try await runServerCLI(["invite"] + ts.storeArgs + ["--role", "field", "--name", "mt3-laptop"])
        let token = invite.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(invite.status == 0 && !token.contains(" ") && !token.isEmpty)
        #expect(invite.err.contains("expires 20") && invite.err.contains("fieldsync enroll https://HOST:PORT --token \(token) --pin sha256:"), "\(invite.err)")
        // Two devices enrolled under one name (two invites made for it).
        for _ in 0..<2 {
            let t = try await ts.store.createInvite(role: .field, name: "mt3-laptop", ttlMillis: 3_600_000, now: Timestamps.nowMillis)
            _ = try await ts.store.enroll(token: t, publicKey: DeviceKey().publicKey, name: "", now: Timestamps.nowMillis)
        }
        let list = try await runServerCLI(["devices", "list"] + ts.storeArgs).out.split(separator: "\n")
        #expect(list.count == 3 && list[0].hasPrefix("DEVICE") && list[0].contains("LAST SYNC"))
        let ambiguous = try await runServerCLI(["devices", "revoke", "mt3-laptop"] + ts.storeArgs)
        #expect(ambiguous.status == 1 && ambiguous.err.contains("matches 2 devices"), "\(ambiguous.err)")
        for id in try await ts.store.roster().sorted.map(\.device.description) { #expect(ambiguous.err.contains(id)) }
        #expect(try await ts.store.roster().sorted.allSatisfy { $0.revokedAfterSeq == nil })
    }

    /// A path the router serves as a signed route, spelled otherwise (`//v1/sync`, found by the
    /// server fuzz target), is authenticated like any other: only the open routes, exactly as
    /// written, skip it. Before, it passed the authenticator and the handler answered 500.
    @Test func everyPathButTheOpenOnesIsAuthenticated() async throws {
        let ts = try await TestServer.make()
        let paths = ["//v1/sync", "/v1//sync", "//v1/roster", "/v1/./sync", "/V1/sync", "/x", "//healthz"]
        let answers = try await Application(router: ts.server.router()).test(.router) { client in
            var out: [(String, UInt, String?)] = []
            for p in paths {
                out.append(try await client.execute(uri: p, method: .post, headers: [.contentType: SyncProtocol.syncType], body: ByteBuffer(string: "x")) {
                    (p, UInt($0.status.code), $0.headers[.contentType] == SyncProtocol.problemType ? "problem" : nil)
                })
            }
            return out
        }
        for (p, status, problem) in answers {
            #expect((400..<500).contains(status) && problem == "problem", "\(p) answered \(status)")
        }
    }

    // MARK: 9. File modes

    @Test func theDataFolderItsDatabaseAndKeysAreTheOwnersAlone() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-modes-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: dir + ".ca.key") }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let data = ServerData(directory: dir)
        _ = try data.initialise(hostnames: ["localhost"], caKeyOut: dir + ".ca.key")
        let store = try data.openStore()  // open: the -wal and -shm files exist
        _ = try store.roster()
        #expect(mode(dir) == 0o700, "an existing folder is tightened")
        for file in ["server.sqlite", "server.sqlite-wal", "server.sqlite-shm", "server.key", "tls.key"] {
            #expect(mode(dir + "/" + file) == 0o600, "\(file)")
        }
        #expect(mode(dir + ".ca.key") == 0o600)
        #expect(!FileManager.default.fileExists(atPath: dir + "/ca.key"))
        #expect(throws: ServerError.self, "an existing CA key file is not overwritten") {
            _ = try ServerData(directory: dir + "-2").initialise(hostnames: [], caKeyOut: dir + ".ca.key")
        }
        try? FileManager.default.removeItem(atPath: dir + "-2")
    }

    /// An administrator runs `init`, `cert renew` and `restore` as root in a folder made for the
    /// service user: what they write must be that user's, or `serve` cannot read its own keys.
    @Test(.enabled(if: geteuid() == 0, "needs root to own files as another user"))
    func whatRootMakesInAServiceFolderIsTheServiceUsers() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-owner-" + UUID().uuidString
        defer { for p in [dir, dir + ".ca.key", dir + "-2"] { try? FileManager.default.removeItem(atPath: p) } }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(chown(dir, 65534, 65534) == 0)
        let data = ServerData(directory: dir)
        _ = try data.initialise(hostnames: ["localhost"], caKeyOut: dir + ".ca.key")
        for file in ["server.sqlite", "server.key", "tls.key", "tls.pem", "ca.pem"] { #expect(owner(dir + "/" + file) == 65534, "\(file)") }
        #expect(owner(dir + ".ca.key") == 0, "the CA key, outside the folder, stays root's")
        _ = try data.renewTLS(caKeyPEM: try String(contentsOfFile: dir + ".ca.key", encoding: .utf8), hostnames: ["sync.example.org"])
        #expect(owner(data.tlsKeyPath) == 65534 && owner(data.tlsCertPath) == 65534)

        // A CA key that cannot be written leaves nothing behind: `init` can be run again.
        #expect(throws: ServerError.self) {
            _ = try ServerData(directory: dir + "-2").initialise(hostnames: [], caKeyOut: "/nonexistent-\(UUID().uuidString)/ca.key")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "-2/server.key"))
        _ = try ServerData(directory: dir + "-2").initialise(hostnames: [])
    }

    func owner(_ path: String) -> uid_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_uid : nil
    }

    @Test func serveRefusesAKeyOthersCanRead() async throws {
        let ts = try await TestServer.make()
        #expect(chmod(ts.data.tlsKeyPath, 0o644) == 0)
        let r = try await runServerCLI(["serve", "--port", "0"] + ts.storeArgs)
        #expect(r.status == 1 && r.err.split(separator: "\n").count == 1 && r.err.contains("tls.key"), "\(r)")
        #expect(throws: ServerError.self) { try ts.data.checkSecretModes() }
        #expect(chmod(ts.data.tlsKeyPath, 0o600) == 0)
        try ts.data.checkSecretModes()
    }

    func mode(_ path: String) -> mode_t? {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : nil
    }

    // MARK: Stable problem codes

    /// Each way a request is refused, with the code a client decides on.
    @Test func everyRefusalCarriesItsCode() async throws {
        let ts = try await TestServer.make(requestsPerMinute: 3)
        let alice = try await ts.enroll(.field, "alice")
        let gone = try await ts.enroll(.field, "gone")
        _ = try await ts.store.revoke(gone.deviceID)
        let body = syncBody([])
        var cases: [(String, HTTPFields, [UInt8], Problem.Code)] = []
        func add(_ name: String, _ code: Problem.Code, body b: [UInt8]? = nil, _ change: (inout Signer) -> Void = { _ in }, headers: (inout HTTPFields) -> Void = { _ in }) {
            var s = Signer(alice)
            change(&s)
            var h = s.headers(body: b ?? body)
            headers(&h)
            cases.append((name, h, b ?? body, code))
        }
        add("content type", .unsupportedMediaType) { $0.contentType = "text/plain" }
        add("no digest", .digestMissing, headers: { $0[HTTPField.Name("Content-Digest")!] = nil })
        add("unsigned", .unsigned, headers: { $0[HTTPField.Name("Signature")!] = nil })
        add("garbage input", .signatureMalformed, headers: { $0[HTTPField.Name("Signature-Input")!] = "sig1=garbage(" })
        add("components", .signatureComponents) { $0.components = ["@method", "@target-uri"] }
        add("alg", .signatureAlgorithm) { $0.alg = "hmac-sha256" }
        add("created", .signatureCreated) { $0.created -= 3600 }
        add("expired", .signatureExpired) { $0.created -= 100; $0.expiresIn = 50 }
        add("unknown key", .unknownKey) { $0.key = DeviceKey() }
        add("revoked", .deviceRevoked) { $0.key = gone }
        cases.append(("digest", Signer(alice).headers(body: body), syncBody([], vector: VersionVector()) + [0], .digestMismatch))
        add("other key", .signatureInvalid) { $0.key = DeviceKey(); $0.keyid = alice.deviceID.description }
        add("body", .malformedRequest, body: Array("not a sync body".utf8))
        for (name, headers, b, code) in cases {
            let (status, answer, h, _) = try await send(ts, headers: headers, body: b)
            #expect(status == code.status && problemType(answer) == code.uri, "\(name): \(status) \(answer)")
            #expect(h[.contentType] == SyncProtocol.problemType)
        }
        // Replay, then the rate limit (3 a minute: two syncs, and the replay's nonce check came
        // after its admission in the exchange).
        let once = Signer(alice).headers(body: body)
        #expect(try await send(ts, headers: once, body: body).0 == 200)
        let replay = try await send(ts, headers: once, body: body)
        #expect(problemType(replay.1) == Problem.Code.replayed.uri, "\(replay.1)")
        var limited: JSONValue = .null
        for _ in 0..<3 {
            let r = try await send(ts, headers: Signer(alice).headers(body: body), body: body)
            if r.0 == 429 { limited = r.1 }
        }
        #expect(problemType(limited) == Problem.Code.rateLimited.uri, "\(limited)")
        // Enrolment: a keyid that is not the enrolling key's.
        let key = DeviceKey()
        let enrol = Array(try JSONEncoder().encode(EnrollRequest(token: "t", publicKey: key.publicKey, name: "x")))
        var s = Signer(DeviceKey()); s.target = "https://localhost/v1/enroll"
        let (status, answer, _, _) = try await send(ts, uri: "/v1/enroll", headers: s.headers(body: enrol), body: enrol)
        #expect(status == 401 && problemType(answer) == Problem.Code.keyMismatch.uri, "\(answer)")
    }
}

/// Runs `fieldsync-server` with `args`; its exit status and output. The wait is on a thread of
/// its own: a test waiting on the cooperative pool's two threads would starve the PostgreSQL
/// client that the command may be waiting on (seen: both threads blocked on `devices list`,
/// which waited for a migration lock held by a task of this process).
func runServerCLI(_ args: [String]) async throws -> (status: Int32, out: String, err: String) {
    try await withCheckedThrowingContinuation { done in
        Thread.detachNewThread { done.resume(with: Result { try runServerCLIWaiting(args) }) }
    }
}

private func runServerCLIWaiting(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: ServerProcess.binary)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
