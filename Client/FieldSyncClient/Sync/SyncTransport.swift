import AsyncHTTPClient
import Crypto
import FieldSyncCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// How a sync ended, as scripts see it (DESIGN.md §9).
public enum SyncExit: Int32, Sendable {
    case ok = 0, failure = 1, usage = 2, unreachable = 3, authentication = 4, policy = 5, busy = 6
}

public struct SyncFailure: Error, CustomStringConvertible, Sendable {
    public let exit: SyncExit
    public let message: String
    public init(_ exit: SyncExit, _ message: String) { self.exit = exit; self.message = message }
    public var description: String { message }
}

/// HTTPS to one sync server: trusts only the pinned CA (never the system roots), signs every
/// request (RFC 9421) and checks every answer's signature against the pinned server key.
public final class SyncTransport: Sendable {
    let http: HTTPClient
    let base: String
    let key: DeviceKey
    /// Milliseconds to add to the local clock to get the server's, learned from its answers: a
    /// transport kept for hours (`sync --watch`) follows the laptop's clock as it drifts.
    let offset: Atomic<Int64>
    let serverKey: [UInt8]?

    /// - Parameter idleTimeout: how long a connection is kept for the next request (AsyncHTTPClient's default, 60 s, when nil).
    public init(baseURL: String, caPEM: String, key: DeviceKey, offsetMillis: Int64, serverKey: [UInt8]?, idleTimeout: Duration? = nil) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        tls.minimumTLSVersion = .tlsv12
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.timeout = .init(connect: .seconds(10), read: .seconds(60))
        // A link that dies while a request goes up: no byte taken for 60 s ends it (the request's
        // own deadline is minutes long, for slow links that still move).
        config.timeout.write = .seconds(60)
        if let idleTimeout { config.connectionPool = .init(idleTimeout: TimeAmount(idleTimeout)) }
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.key = key
        offset = Atomic(offsetMillis)
        self.serverKey = serverKey
    }

    public func shutdown() async { try? await http.shutdown() }

    /// The server's clock as its latest answer showed it, for signing the next requests.
    func learn(offsetMillis: Int64) { offset.store(offsetMillis, ordering: .relaxed) }

    /// Fetches the server's CA over an unverified connection and keeps it only if it matches the
    /// pin: everything after uses full verification against that CA alone.
    public static func fetchPinnedCA(baseURL: String, pin: String) async throws -> String {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { Task { try? await http.shutdown() } }
        let url = (baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL) + "/ca.pem"
        let res: HTTPClientResponse
        do { res = try await http.execute(HTTPClientRequest(url: url), timeout: .seconds(15)) } catch {
            throw SyncFailure(.unreachable, "cannot reach \(baseURL): \(Self.describe(error))")
        }
        let pem = String(buffer: try await res.body.collect(upTo: 1 << 16))
        guard res.status == .ok, let got = try? caPin(pem) else { throw SyncFailure(.authentication, "\(baseURL) did not offer a CA certificate") }
        guard got == pin.lowercased() else { throw SyncFailure(.authentication, "the server's CA does not match the pin (got \(got))") }
        return pem
    }

    public static func caPin(_ pem: String) throws -> String {
        let certs = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
        guard certs.count == 1 else { throw SyncFailure(.usage, "the CA file must hold exactly one certificate") }
        return "sha256:" + Array(SHA256.hash(data: try certs[0].toDERBytes())).hex
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? HTTPClientError { return "\(e)" }
        if let e = error as? NIOSSLError { return "TLS: \(e)" }
        return "\(error)"
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
        var req = HTTPClientRequest(url: url)
        req.method = method
        let digest = HTTPSignature.contentDigest(body)
        let nonce = HTTPSignature.nonce()
        req.headers.add(name: "Content-Type", value: contentType)
        req.headers.add(name: "Content-Digest", value: digest)
        if sign {
            let created = (Int64(Timestamps.nowMillis) + offset.load(ordering: .relaxed)) / 1000
            let params = HTTPSignature.Parameters(components: HTTPSignature.requestComponents, created: created, expires: created + 120,
                                                  nonce: nonce, keyid: key.deviceID.description)
            let (input, sig) = HTTPSignature.sign(values: [method.rawValue, url, digest, contentType], parameters: params, key: key)
            req.headers.add(name: "Signature-Input", value: input)
            req.headers.add(name: "Signature", value: sig)
        }
        req.body = .bytes(ByteBuffer(bytes: body))
        let res: HTTPClientResponse
        let bytes: [UInt8]
        do {
            res = try await http.execute(req, timeout: timeout)
            bytes = Array(try await res.body.collect(upTo: SyncProtocol.maxBodyBytes * 2).readableBytesView)
        } catch let e as NIOSSLError {
            // The server's certificate does not chain to the pinned CA: not a bad link, so no retry.
            throw SyncFailure(.authentication, "the server's TLS certificate does not verify against the pinned CA: \(e)")
        } catch {
            // Stopped (SIGTERM to `sync --watch`), not a bad link.
            if Task.isCancelled { throw CancellationError() }
            throw SyncFailure(.unreachable, "cannot reach \(base): \(Self.describe(error))")
        }
        let status = Int(res.status.code)
        if sign, let pinned = answerKey ?? serverKey {
            try verifyAnswer(res, body: bytes, status: status, nonce: nonce, key: pinned)
        }
        guard (200..<300).contains(status) else {
            let detail = (try? JSONDecoder().decode(Problem.self, from: Data(bytes)))?.detail ?? "HTTP \(status)"
            switch status {
            case 401, 403: throw SyncFailure(.authentication, "the server refused this device: \(detail)")
            case 429, 500...599: throw SyncFailure(.unreachable, "the server is busy or failing (\(status)): \(detail)")
            default: throw SyncFailure(.failure, "the server refused the request (\(status)): \(detail)")
            }
        }
        return (status, bytes)
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

    func verifyAnswer(_ res: HTTPClientResponse, body: [UInt8], status: Int, nonce: String, key: [UInt8]) throws {
        guard let input = res.headers.first(name: "Signature-Input"), let sig = res.headers.first(name: "Signature"),
              let digest = res.headers.first(name: "Content-Digest"), let ctype = res.headers.first(name: "Content-Type"),
              digest == HTTPSignature.contentDigest(body),
              let (params, signature) = try? HTTPSignature.parse(input: input, signature: sig),
              params.components == HTTPSignature.responseComponents, params.nonce == nonce,
              HTTPSignature.verify(values: [String(status), digest, ctype], parameters: params, signature: signature, publicKey: key)
        else {
            throw SyncFailure(.authentication, "the answer is not signed by the pinned server key: refusing it")
        }
    }
}
