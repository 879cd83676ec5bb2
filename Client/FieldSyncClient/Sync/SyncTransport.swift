import Crypto
import FieldSyncBodyCoding
import FieldSyncCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// How a sync ended, as scripts see it (DESIGN.md §9).
public enum SyncExit: Int32, Sendable {
    case ok = 0, failure = 1, usage = 2, unreachable = 3, authentication = 4, policy = 5, busy = 6
}

public struct SyncFailure: Error, CustomStringConvertible, Sendable {
    public let exit: SyncExit
    public let message: String
    /// The link failed while a request was going out, before its answer began (connected, not
    /// refused or unresolved; or the server's 408): what it carried may have been too much for
    /// it (`UploadWindow.linkFailed`). An answer cut off on its way down says nothing of that.
    public var uploadCut = false
    /// The server's stable problem code, when the failure is a refusal that carried one.
    public var problem: Problem.Code?
    public init(_ exit: SyncExit, _ message: String) { self.exit = exit; self.message = message }
    public var description: String { message }
}

/// Where the server is, from its URL as enrolled (`https://HOST[:PORT][/PATH]`).
struct ServerEndpoint: Sendable {
    /// `https://` and the authority as written: requests are signed over this and their path,
    /// and the server checks the signature against the Host it was sent.
    let base: String
    let host: String
    let port: Int
    let authority: String
    let basePath: String

    init(_ url: String) throws {
        let trimmed = url.hasSuffix("/") ? String(url.dropLast()) : url
        guard trimmed.lowercased().hasPrefix("https://") else {
            throw SyncFailure(.usage, "the server URL must start with https:// (got '\(url)')")
        }
        let rest = trimmed.dropFirst("https://".count)
        let authority = String(rest.prefix { $0 != "/" })
        guard let parsed = URLComponents(string: "https://" + authority), let host = parsed.host, !host.isEmpty,
              parsed.user == nil, parsed.query == nil else {
            throw SyncFailure(.usage, "'\(url)' is not a server URL (https://HOST[:PORT])")
        }
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        port = parsed.port ?? 443
        self.authority = authority
        basePath = String(rest.dropFirst(authority.count))
        base = "https://" + authority + basePath
    }
}

/// HTTPS to one sync server: trusts only the pinned CA (never the system roots), signs every
/// request (RFC 9421) and checks every answer's signature against the pinned server key. Keeps
/// one connection for the requests that follow (`ConnectionSlot`).
public final class SyncTransport: Sendable {
    let endpoint: ServerEndpoint
    let connections: ConnectionSlot
    let key: DeviceKey
    /// Milliseconds to add to the local clock to get the server's, learned from its answers: a
    /// transport kept for hours (`sync --watch`) follows the laptop's clock as it drifts.
    let offset: Atomic<Int64>
    let serverKey: [UInt8]?
    /// The server said it takes gzip requests (`Accept-Encoding` in an answer, RFC 7694): uploads
    /// from then on go compressed. Learned afresh by each transport, from its first answer.
    let serverTakesGzip = Atomic<Bool>(false)

    var base: String { endpoint.base }

    /// No byte moving either way for this long ends a request: a link gone dead (the request's
    /// own deadline is minutes long, for slow links that still move).
    static let stall = TimeAmount.seconds(60)
    static let connectTimeout = TimeAmount.seconds(10)

    /// - Parameter idleTimeout: how long a connection is kept for the next request (60 s when nil).
    public init(baseURL: String, caPEM: String, key: DeviceKey, offsetMillis: Int64, serverKey: [UInt8]?, idleTimeout: Duration? = nil) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        tls.minimumTLSVersion = .tlsv12
        endpoint = try ServerEndpoint(baseURL)
        connections = ConnectionSlot(endpoint: endpoint, tls: try NIOSSLContext(configuration: tls), idleTimeout: idleTimeout ?? .seconds(60))
        self.key = key
        offset = Atomic(offsetMillis)
        self.serverKey = serverKey
    }

    public func shutdown() async { await connections.close() }

    /// The server's clock as its latest answer showed it, for signing the next requests.
    func learn(offsetMillis: Int64) { offset.store(offsetMillis, ordering: .relaxed) }

    /// Fetches the server's CA over an unverified connection and keeps it only if it matches the
    /// pin: everything after uses full verification against that CA alone.
    public static func fetchPinnedCA(baseURL: String, pin: String) async throws -> String {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        let endpoint = try ServerEndpoint(baseURL)
        let slot = ConnectionSlot(endpoint: endpoint, tls: try NIOSSLContext(configuration: tls), idleTimeout: .seconds(1))
        defer { Task { await slot.close() } }
        let (head, body) = try await exchange(slot, head: request(endpoint, .GET, "/ca.pem", headers: []), body: [],
                                              limit: 1 << 16, timeout: .seconds(15))
        let pem = String(decoding: body, as: UTF8.self)
        guard head.status == .ok, let got = try? caPin(pem) else { throw SyncFailure(.authentication, "\(endpoint.base) did not offer a CA certificate") }
        guard got == pin.lowercased() else { throw SyncFailure(.authentication, "the server's CA does not match the pin (got \(got))") }
        return pem
    }

    public static func caPin(_ pem: String) throws -> String {
        let certs = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
        guard certs.count == 1 else { throw SyncFailure(.usage, "the CA file must hold exactly one certificate") }
        return "sha256:" + Array(SHA256.hash(data: try certs[0].toDERBytes())).hex
    }

    static func request(_ endpoint: ServerEndpoint, _ method: HTTPMethod, _ path: String, headers: [(String, String)]) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: endpoint.basePath + path)
        head.headers.add(name: "Host", value: endpoint.authority)
        head.headers.add(name: "User-Agent", value: "fieldsync")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        return head
    }

    /// One request on the slot's connection (opened if need be), the connection given back after
    /// a whole answer; any failure is turned into the `SyncFailure` it means for the user.
    static func exchange(_ slot: ConnectionSlot, head: HTTPRequestHead, body: [UInt8], limit: Int,
                         timeout: TimeAmount) async throws -> (HTTPResponseHead, [UInt8]) {
        var head = head
        head.headers.add(name: "Content-Length", value: String(body.count))
        var connection: HTTPSConnection?
        do {
            // A request called off before it starts (the pull ahead) opens no connection.
            try Task.checkCancellation()
            let c = try await slot.take()
            connection = c
            let (answer, bytes) = try await c.send(head, body: ByteBuffer(bytes: body), limit: limit, stall: stall, deadline: .now() + timeout)
            // Cancelled as its answer came, the connection is being closed: not offered again.
            if Task.isCancelled { c.close() } else { await slot.put(c) }
            return (answer, Array(bytes.readableBytesView))
        } catch {
            connection?.close()
            // Stopped (SIGTERM to `sync --watch`), not a bad link.
            if Task.isCancelled { throw CancellationError() }
            var f = failure(error, slot.endpoint)
            f.uploadCut = connection?.end.stage.load(ordering: .acquiring) == 1
            throw f
        }
    }

    /// What a failed request means: a server whose certificate does not chain to the pinned CA
    /// (or names another host) is not a bad link, so it is not retried.
    static func failure(_ error: any Error, _ endpoint: ServerEndpoint) -> SyncFailure {
        // Only a certificate that fails to verify: a link cut during the handshake is also a
        // failed handshake (`eofDuringHandshake`), and a bad link is retried.
        if let e = error as? NIOSSLError, case .handshakeFailed(let reason) = e, certificateDidNotVerify(reason) {
            return SyncFailure(.authentication, "the server's TLS certificate does not verify against the pinned CA: \(e)")
        }
        if let e = error as? NIOSSLExtraError, e == .failedToValidateHostname {
            return SyncFailure(.authentication, "the server's TLS certificate is not for \(endpoint.host): \(e)")
        }
        return SyncFailure(.unreachable, "cannot reach \(endpoint.base): \(describe(error))")
    }

    /// Whether a failed handshake is BoringSSL refusing the server's certificate. NIOSSL gives
    /// nothing typed for it: `BoringSSLInternalError` keeps its packed error code private and
    /// shows only its text (`error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED`),
    /// so the reason's name is looked for there, here and nowhere else.
    static func certificateDidNotVerify(_ reason: BoringSSLError) -> Bool {
        guard case .sslError(let stack) = reason else { return false }
        return stack.contains { $0.description.contains("CERTIFICATE_VERIFY_FAILED") }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let e as NIOConnectionError:
            if e.connectionErrors.isEmpty, e.dnsAError != nil || e.dnsAAAAError != nil { return "cannot resolve \(e.host)" }
            return e.connectionErrors.first.map { describe($0.error) } ?? "no connection"
        case let e as ChannelError:
            if case .connectTimeout = e { return "no connection within \(connectTimeout.nanoseconds / 1_000_000_000) s" }
            if case .ioOnClosedChannel = e { return "the connection was closed" }
            return "\(e)"
        case let e as IOError: return String(cString: strerror(e.errnoCode)).lowercased()
        case let e as NIOSSLError:
            if case .handshakeFailed(let reason) = e { return "the TLS handshake failed: \(reason)" }
            return "TLS: \(e)"
        default: return "\(error)"
        }
    }

    /// The server's clock, read from `/healthz` (unauthenticated), to sign with a fresh `created`.
    public func serverTime() async throws -> UInt64 {
        let (_, body) = try await send(method: .GET, path: "/healthz", body: [], sign: false)
        guard let t = (try? JSONValue.parse(body))?["server_time"]?.intValue else { throw SyncFailure(.failure, "the server gave no time") }
        return UInt64(t)
    }

    /// Sends one request; returns the verified body of a 2xx answer, or throws a `SyncFailure`
    /// carrying the exit code the failure means.
    public func send(method: HTTPMethod, path: String, body: [UInt8], contentType: String = SyncProtocol.contentType, sign: Bool = true,
                     answerKey: [UInt8]? = nil, timeout: TimeAmount = .seconds(60)) async throws -> (Int, [UInt8]) {
        let url = base + path
        var headers: [(String, String)] = []
        // A body is compressed only for a server known to take it; the digest and the signature
        // cover the body as sent. Answers are asked for compressed on every signed request.
        let compress = sign && body.count >= BodyCoding.minimumBytes && serverTakesGzip.load(ordering: .relaxed)
        let body = compress ? BodyCoding.compress(body) : body
        if compress { headers.append(("Content-Encoding", BodyCoding.gzip)) }
        if sign { headers.append(("Accept-Encoding", BodyCoding.gzip)) }
        let digest = HTTPSignature.contentDigest(body)
        let nonce = HTTPSignature.nonce()
        headers += [("Content-Type", contentType), ("Content-Digest", digest)]
        if sign {
            let created = (Int64(Timestamps.nowMillis) + offset.load(ordering: .relaxed)) / 1000
            let params = HTTPSignature.Parameters(components: HTTPSignature.requestComponents, created: created, expires: created + 120,
                                                  nonce: nonce, keyid: key.deviceID.description)
            let (input, sig) = HTTPSignature.sign(values: [method.rawValue, url, digest, contentType], parameters: params, key: key)
            headers += [("Signature-Input", input), ("Signature", sig)]
        }
        let (res, sent) = try await Self.exchange(connections, head: Self.request(endpoint, method, path, headers: headers),
                                                  body: body, limit: SyncProtocol.maxBodyBytes * 2, timeout: timeout)
        let status = Int(res.status.code)
        if sign, let pinned = answerKey ?? serverKey {
            try verifyAnswer(res.headers, body: sent, status: status, nonce: nonce, key: pinned)
        }
        if sign, BodyCoding.admitsGzip(res.headers.first(name: "Accept-Encoding")) { serverTakesGzip.store(true, ordering: .relaxed) }
        let bytes: [UInt8]
        switch BodyCoding.coding(of: res.headers.first(name: "Content-Encoding")) {
        case nil: bytes = sent
        case .gzip?:
            do { bytes = try BodyCoding.decompress(sent, limit: SyncProtocol.maxBodyBytes * 2) } catch {
                throw SyncFailure(.failure, error.code == .tooLarge ? "the server's answer is too large once decompressed" : "the server's answer is corrupt gzip")
            }
        case .unsupported?:
            throw SyncFailure(.failure, "the server's answer has a content coding this laptop does not read")
        }
        guard (200..<300).contains(status) else {
            throw Self.refusal(status: status, problem: try? JSONDecoder().decode(Problem.self, from: Data(bytes)))
        }
        return (status, bytes)
    }

    /// What each problem code the server sends means for the laptop: the one table the client
    /// decides a refusal on (its exit code, whether it retries). Never the problem's text.
    public static let problemExits: [Problem.Code: SyncExit] = [
        .unsupportedMediaType: .failure, .bodyTooLarge: .failure, .malformedRequest: .failure, .tooManyChanges: .failure,
        .digestMissing: .failure, .digestMismatch: .failure,
        // The upload took too long to arrive: sent again in smaller parts (`UploadWindow`).
        .transferTooSlow: .unreachable,
        .rateLimited: .unreachable,
        .unsigned: .authentication, .signatureMalformed: .authentication, .signatureComponents: .authentication,
        .signatureAlgorithm: .authentication, .signatureCreated: .authentication, .signatureExpired: .authentication,
        .signatureInvalid: .authentication, .replayed: .authentication, .unknownKey: .authentication, .keyMismatch: .authentication,
        .deviceRevoked: .authentication, .inviteRefused: .authentication,
    ]

    /// A refusal as the failure it means: by its problem code, or, for an answer without a code
    /// this build knows (an older server, a proxy in the way), by its HTTP status.
    public static func refusal(status: Int, problem: Problem?) -> SyncFailure {
        let detail = problem?.detail ?? "HTTP \(status)"
        let code = problem?.code
        let exit: SyncExit
        if let code, let known = problemExits[code] { exit = known } else {
            switch status {
            case 401, 403: exit = .authentication
            case 408, 429, 500...599: exit = .unreachable
            default: exit = .failure
            }
        }
        let slow = code.map { $0 == .transferTooSlow } ?? (status == 408)
        var f: SyncFailure
        switch exit {
        case .authentication: f = SyncFailure(exit, "the server refused this device: \(detail)")
        case .unreachable where slow: f = SyncFailure(exit, "the link was too slow for this upload (\(status)): \(detail)")
        case .unreachable: f = SyncFailure(exit, "the server is busy or failing (\(status)): \(detail)")
        default: f = SyncFailure(exit, "the server refused the request (\(status)): \(detail)")
        }
        f.uploadCut = slow
        f.problem = code
        return f
    }

    /// One `/v1/sync` exchange: the request's body out, the verified answer decoded.
    public func exchange(_ request: SyncRequest) async throws -> SyncResponse {
        // Ten minutes, not one: a request of `maxUploadBytes` on a link of 8 kB/s takes more than
        // one. A link gone dead is noticed sooner, by the write and read timeouts (no byte moved
        // for 60 s).
        let (_, raw) = try await send(method: .POST, path: "/v1/sync", body: try request.body(), contentType: SyncProtocol.syncType,
                                      timeout: .minutes(10))
        do { return try SyncResponse(body: raw) } catch {
            throw SyncFailure(.failure, "the server's answer is malformed: \(error.message)")
        }
    }

    func verifyAnswer(_ headers: HTTPHeaders, body: [UInt8], status: Int, nonce: String, key: [UInt8]) throws {
        guard let input = headers.first(name: "Signature-Input"), let sig = headers.first(name: "Signature"),
              let digest = headers.first(name: "Content-Digest"), let ctype = headers.first(name: "Content-Type"),
              digest == HTTPSignature.contentDigest(body),
              let (params, signature) = try? HTTPSignature.parse(input: input, signature: sig),
              params.components == HTTPSignature.responseComponents, params.nonce == nonce,
              HTTPSignature.verify(values: [String(status), digest, ctype], parameters: params, signature: signature, publicKey: key)
        else {
            throw SyncFailure(.authentication, "the answer is not signed by the pinned server key: refusing it")
        }
    }
}

/// The transport's one kept connection. A request takes the connection for itself and gives it
/// back after a whole answer, so two requests never share one (the pull ahead of a first sync
/// can overlap the next request when it is called off): the second opens a connection of its own.
actor ConnectionSlot {
    let endpoint: ServerEndpoint
    let tls: NIOSSLContext
    let idleTimeout: Duration
    var idle: (connection: HTTPSConnection, since: ContinuousClock.Instant)?
    var closed = false

    init(endpoint: ServerEndpoint, tls: NIOSSLContext, idleTimeout: Duration) {
        self.endpoint = endpoint
        self.tls = tls
        self.idleTimeout = idleTimeout
    }

    func take() async throws -> HTTPSConnection {
        if let (connection, since) = idle {
            idle = nil
            // Idle too long, the server may be closing it as the request goes out: a new one.
            if connection.isOpen && since.duration(to: .now) < idleTimeout { return connection }
            connection.close()
        }
        return try await HTTPSConnection.connect(host: endpoint.host, port: endpoint.port, tls: tls, timeout: SyncTransport.connectTimeout)
    }

    func put(_ connection: HTTPSConnection) {
        guard !closed, idle == nil, connection.isOpen else { return connection.close() }
        idle = (connection, .now)
    }

    func close() {
        closed = true
        let kept = idle?.connection
        idle = nil
        kept?.close()
    }
}
