import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    static let signatureInput = HTTPField.Name("Signature-Input")!
    static let signature = HTTPField.Name("Signature")!
    static let contentDigest = HTTPField.Name("Content-Digest")!
}

/// Checks every `/v1/` request (DESIGN.md §7): content type, body size, Content-Digest, then the
/// RFC 9421 signature over method, target URI, digest and content type, its freshness, its
/// nonce (replay), and that its key is an enrolled, unrevoked device.
struct Authenticator: RouterMiddleware {
    typealias Context = SyncContext
    let server: SyncServer

    func handle(_ request: Request, context: SyncContext, next: (Request, SyncContext) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        // Counted from here to the answer: every storage access of a /v1/ request is inside.
        server.requests.enter()
        defer { server.requests.leave() }
        var context = context
        do {
            try await authenticate(request, &context)
            return try await next(request, context)
        } catch let p as Problem {
            return server.problemResponse(p, nonce: context.nonce)
        }
    }

    func authenticate(_ request: Request, _ context: inout SyncContext) async throws {
        // The head is here; the body may take minutes on a slow link (`HTTPSignature.maxTransferSeconds`).
        let arrived = server.clock()
        let ctype = request.headers[.contentType] ?? ""
        let isSync = request.uri.path == "/v1/sync"
        let expected = isSync ? SyncProtocol.syncType : SyncProtocol.contentType
        guard ctype.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces) }) == expected else {
            throw Problem(status: 415, title: "Unsupported Media Type", detail: "\(request.uri.path) requests must be \(expected), not '\(ctype)'")
        }
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: SyncProtocol.maxBodyBytes) } catch {
            throw Problem(status: 413, title: "Content Too Large", detail: "request body is larger than \(SyncProtocol.maxBodyBytes) bytes")
        }
        context.body = Array(buffer.readableBytesView)
        guard server.clock() <= arrived + UInt64(HTTPSignature.maxTransferSeconds) * 1000 else {
            throw Problem(status: 408, title: "Request Timeout", detail: "the request took more than \(HTTPSignature.maxTransferSeconds) s to arrive; send less at once")
        }
        guard let digest = request.headers[.contentDigest] else {
            throw Problem(status: 400, title: "Bad Request", detail: "Content-Digest header is missing")
        }
        guard digest == HTTPSignature.contentDigest(context.body) else {
            throw Problem(status: 400, title: "Bad Request", detail: "Content-Digest does not match the body")
        }
        guard let input = request.headers[.signatureInput], let signature = request.headers[.signature] else {
            throw Problem(status: 401, title: "Unauthorized", detail: "the request is not signed (Signature-Input and Signature headers)")
        }
        let params: HTTPSignature.Parameters, sig: [UInt8]
        do { (params, sig) = try HTTPSignature.parse(input: input, signature: signature) } catch {
            throw Problem(status: 401, title: "Unauthorized", detail: "bad signature headers: \(error.message)")
        }
        context.nonce = params.nonce
        guard params.components == HTTPSignature.requestComponents else {
            throw Problem(status: 401, title: "Unauthorized", detail: "the signature must cover \(HTTPSignature.requestComponents.joined(separator: " "))")
        }
        guard params.alg == "ed25519" else { throw Problem(status: 401, title: "Unauthorized", detail: "alg must be ed25519") }
        // Judged as of the head's arrival: the signature was fresh when the request was sent.
        let now = Int64(arrived / 1000)
        guard abs(params.created - now) <= HTTPSignature.maxAgeSeconds else {
            throw Problem(status: 401, title: "Unauthorized", detail: "signature created \(params.created - now) s from the server's clock (limit ±\(HTTPSignature.maxAgeSeconds) s); sync the offset and retry")
        }
        guard let expires = params.expires, expires > now, expires - params.created <= HTTPSignature.maxAgeSeconds else {
            throw Problem(status: 401, title: "Unauthorized", detail: "signature has expired or has no valid expires")
        }
        let publicKey: [UInt8]
        if request.uri.path == "/v1/enroll" {
            // Proof of possession: the enrolling key, from the body, must sign its own request.
            guard let enroll = try? JSONDecoder().decode(EnrollRequest.self, from: Data(context.body)),
                  let pk = Data(base64Encoded: enroll.publicKey), pk.count == 32 else {
                throw Problem(status: 400, title: "Bad Request", detail: "the enrolment request is not valid JSON with a 32-byte public key")
            }
            guard params.keyid == DeviceID(publicKey: Array(pk)).description else {
                throw Problem(status: 401, title: "Unauthorized", detail: "keyid is not the id of the enrolling key")
            }
            publicKey = Array(pk)
            context.enrollingKey = publicKey
        } else {
            let roster = try await server.store.currentRoster(alone: server.requests.alone)
            context.roster = roster
            guard let device = DeviceID(params.keyid), let entry = roster[device] else {
                throw Problem(status: 401, title: "Unauthorized", detail: "keyid '\(params.keyid)' is not an enrolled device")
            }
            guard entry.revokedAfterSeq == nil else {
                throw Problem(status: 403, title: "Forbidden", detail: "device \(entry.name) (\(device)) has been revoked")
            }
            publicKey = entry.publicKey
            context.device = entry
        }
        let target = "https://" + (request.head.authority ?? "") + (request.head.path ?? request.uri.path)
        let values = [request.method.rawValue, target, digest, ctype]
        guard HTTPSignature.verify(values: values, parameters: params, signature: sig, publicKey: publicKey) else {
            context.device = nil
            throw Problem(status: 401, title: "Unauthorized", detail: "the request signature does not verify")
        }
        let nonce = SignatureNonce(device: params.keyid, nonce: params.nonce, expiresAt: UInt64(expires + HTTPSignature.maxTransferSeconds) * 1000)
        if isSync {
            // Recorded in the exchange's own transaction: one durable commit per sync, not two.
            context.unrecordedNonce = nonce
        } else if try await !server.store.useNonce(nonce, now: server.clock()) {
            throw Problem(status: 401, title: "Unauthorized", detail: Self.replayed)
        }
        try await server.limiter.admit(params.keyid)
    }
}

extension Authenticator {
    static let replayed = "this signature nonce was already used (replay)"
}

/// Requests per device per minute, per server process.
actor RateLimiter {
    let perMinute: Int
    var windows: [String: (start: UInt64, count: Int)] = [:]
    let clock: @Sendable () -> UInt64

    init(perMinute: Int, clock: @escaping @Sendable () -> UInt64) { self.perMinute = perMinute; self.clock = clock }

    func admit(_ key: String) throws {
        let now = clock()
        var w = windows[key] ?? (now, 0)
        if now - w.start >= 60_000 { w = (now, 0) }
        w.count += 1
        windows[key] = w
        guard w.count <= perMinute else {
            throw Problem(status: 429, title: "Too Many Requests", detail: "more than \(perMinute) requests in a minute from this device; retry later")
        }
    }
}
