import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
@testable import FieldSyncServer

/// One request as fuzz input: `MODE METHOD PATH\n`, header lines `Name: value\n`, an empty line,
/// then the body. MODE `s` signs the request as an enrolled field device and `c` as an enrolled
/// coordinator (the harness computes Content-Digest, Signature-Input and Signature over the
/// fuzzed method, path, content type and body), so that the fuzzer reaches what lies behind
/// the signature check; `-` sends the headers exactly as given.
struct FuzzRequest: Sendable {
    var mode: Character
    var method: HTTPRequest.Method
    var path: String
    var headers: [(String, String)]
    var body: [UInt8]

    init(mode: Character, method: HTTPRequest.Method, path: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.mode = mode; self.method = method; self.path = path; self.headers = headers; self.body = body
    }

    init?(_ bytes: [UInt8]) {
        let split = bytes.indices.dropLast().first { bytes[$0] == 0x0A && bytes[$0 + 1] == 0x0A }
        let head = String(decoding: bytes[..<(split ?? bytes.endIndex)], as: UTF8.self)
        body = split.map { Array(bytes[($0 + 2)...]) } ?? []
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard !lines.isEmpty else { return nil }
        let first = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard first.count == 3, first[0].count == 1, let m = HTTPRequest.Method(String(first[1])) else { return nil }
        // Only a path the test client can carry as given: the server's parsing is the subject here.
        let p = String(first[2])
        guard p.hasPrefix("/"), p.utf8.count <= 2048, p.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        mode = first[0].first!
        method = m
        path = p
        headers = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
    }

    var bytes: [UInt8] {
        var out = Array("\(mode) \(method.rawValue) \(path)\n".utf8)
        for (n, v) in headers { out += Array("\(n): \(v)\n".utf8) }
        out += [0x0A] + body
        return out
    }

    /// The headers to send: signed ones first when the mode asks for them.
    func fields() -> HTTPFields {
        var h = HTTPFields()
        var signedNames: Set<String> = []
        if let key = mode == "s" ? FuzzSeeds.fieldKey : mode == "c" ? FuzzSeeds.coordinatorKey : nil {
            let contentType = headers.first { $0.0.lowercased() == "content-type" }?.1
                ?? (path == "/v1/sync" ? SyncProtocol.syncType : SyncProtocol.contentType)
            let digest = HTTPSignature.contentDigest(body)
            let created = Int64(Timestamps.nowMillis / 1000)
            let params = HTTPSignature.Parameters(components: HTTPSignature.requestComponents, created: created, expires: created + 300,
                                                  nonce: HTTPSignature.nonce(), keyid: key.deviceID.description)
            let (input, sig) = HTTPSignature.sign(values: [method.rawValue, "https://localhost" + path, digest, contentType], parameters: params, key: key)
            for (n, v) in [("Content-Type", contentType), ("Content-Digest", digest), ("Signature-Input", input), ("Signature", sig)] {
                h.append(HTTPField(name: HTTPField.Name(n)!, value: v))
                signedNames.insert(n.lowercased())
            }
        }
        for (n, v) in headers where !signedNames.contains(n.lowercased()) {
            guard let name = HTTPField.Name(n) else { continue }
            h.append(HTTPField(name: name, value: v))
        }
        return h
    }
}

/// The server's router in this process (HummingbirdTesting's `.router` framework: the whole
/// middleware chain and the handlers, no sockets), over a real store in a temporary folder with
/// the two fuzz devices enrolled. Every input is one request; the store keeps what it accepts.
enum ServerHarness {
    struct Job: Sendable {
        let request: FuzzRequest
        let done: @Sendable (UInt?) -> Void
    }

    static let jobs = AsyncStream<Job>.makeStream()
    /// FUZZ_VERBOSE=1: each request's status on standard output (replaying a corpus).
    static let verbose = ProcessInfo.processInfo.environment["FUZZ_VERBOSE"] == "1"
    static let started = Mutex(false)

    /// Starts the server once; requests queue in `jobs` until it takes them.
    static func start() {
        guard started.withLock({ s in defer { s = true }; return !s }) else { return }
        let server: SyncServer
        do { server = try makeServer() } catch { fatalError("cannot start the server: \(error)") }
        Task.detached {
            do {
                try await Application(router: server.router()).test(.router) { client in
                    for await job in jobs.stream {
                        let r = job.request
                        do {
                            let status = try await client.execute(uri: r.path, method: r.method, headers: r.fields(), body: ByteBuffer(bytes: r.body)) {
                                UInt($0.status.code)
                            }
                            job.done(status)
                        } catch {
                            job.done(nil)
                        }
                    }
                }
            } catch {
                fatalError("the in-process server stopped: \(error)")
            }
        }
    }

    static func makeServer() throws -> SyncServer {
        let dir = NSTemporaryDirectory() + "fieldsync-fuzz-server-" + UUID().uuidString
        let data = ServerData(directory: dir)
        _ = try data.initialise(hostnames: ["localhost"])
        let store = try data.openStore()
        let now = Timestamps.nowMillis
        for (key, role, name) in [(FuzzSeeds.fieldKey, Role.field, "fuzz-field"), (FuzzSeeds.coordinatorKey, .coordinator, "fuzz-coordinator")] {
            let token = try store.createInvite(role: role, name: name, ttlMillis: 3_600_000, now: now)
            _ = try store.enroll(token: token, publicKey: key.publicKey, name: name, now: now)
        }
        return SyncServer(store: SQLiteSyncStore(store), key: try data.serverKey(), caPEM: try data.caPEM(), requestsPerMinute: 1 << 40)
    }

    final class Outcome: Sendable {
        let status = Mutex<UInt?>(nil)
        let finished = DispatchSemaphore(value: 0)
    }

    /// One input, waiting on this thread (libFuzzer's and the replayer's main thread).
    static func run(_ bytes: [UInt8]) {
        guard let request = FuzzRequest(bytes) else { return }
        start()
        let outcome = Outcome()
        jobs.continuation.yield(Job(request: request) { s in
            outcome.status.withLock { $0 = s }
            outcome.finished.signal()
        })
        outcome.finished.wait()
        check(request, outcome.status.withLock { $0 })
    }

    /// One input from async code (the corpus test), without blocking a thread of the pool the server runs on.
    static func run(_ bytes: [UInt8]) async {
        guard let request = FuzzRequest(bytes) else { return }
        start()
        let status = await withCheckedContinuation { (c: CheckedContinuation<UInt?, Never>) in
            jobs.continuation.yield(Job(request: request) { c.resume(returning: $0) })
        }
        check(request, status)
    }

    static func check(_ request: FuzzRequest, _ status: UInt?) {
        if verbose { print("server: \(request.mode) \(request.method) \(request.path) -> \(status.map(String.init) ?? "client error")") }
        // A request from outside never makes the server fail internally.
        require((status ?? 0) < 500, "\(request.method) \(request.path) answered \(status ?? 0)")
    }
}
