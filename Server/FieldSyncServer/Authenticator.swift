import FieldSyncBodyCoding
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

/// Checks every `/v1/` request (DESIGN.md §7, §10). Everything that needs no body is judged from
/// the head, before one byte of the body is read: content type, declared length, the RFC 9421
/// headers, their components and algorithm, the signature's freshness, and (but for enrolment,
/// whose key is in the body) that its key is an enrolled, unrevoked device. Only then is the body
/// read (at most `SyncProtocol.maxBodyBytes`; `maxEnrollBytes` for an enrolment), its
/// Content-Digest checked, the signature verified, and its nonce judged (replay). Every number
/// from the request is handled with checked arithmetic: none can trap the server.
struct Authenticator: RouterMiddleware {
    typealias Context = SyncContext
    let server: SyncServer

    /// An enrolment is a token, a public key and a name: a few hundred bytes.
    static let maxEnrollBytes = 4096

    /// The only routes served without a signature, as the path arrives. Every other path is
    /// authenticated, whatever it is: deciding by prefix let `//v1/sync`, which the router serves
    /// as `/v1/sync`, past the authenticator (the handler then refused it with a 500).
    static let openRoutes: Set<String> = ["/healthz", "/ca.pem", "/metrics"]

    func handle(_ request: Request, context: SyncContext, next: (Request, SyncContext) async throws -> Response) async throws -> Response {
        guard !Self.openRoutes.contains(request.uri.path) else { return try await next(request, context) }
        var context = context
        do {
            try await authenticate(request, &context)
            if let device = context.device { context.note.signed(by: device.name) }
            return try await next(request, context)
        } catch let p as Problem {
            context.note.refused(p.code)
            return server.problemResponse(p, nonce: context.nonce)
        }
    }

    func authenticate(_ request: Request, _ context: inout SyncContext) async throws {
        // The head is here; the body may take minutes on a slow link (`HTTPSignature.maxTransferSeconds`).
        let arrived = server.clock()
        let ctype = request.headers[.contentType] ?? ""
        let isSync = request.uri.path == "/v1/sync"
        let isEnroll = request.uri.path == "/v1/enroll"
        let expected = isSync ? SyncProtocol.syncType : SyncProtocol.contentType
        guard ctype.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces) }) == expected else {
            throw Problem(.unsupportedMediaType, "\(request.uri.path) requests must be \(expected), not '\(ctype)'")
        }
        let limit = isEnroll ? Self.maxEnrollBytes : SyncProtocol.maxBodyBytes
        // RFC 9110 §15.5.16: a coding the server does not speak is 415. An enrolment is a few
        // hundred bytes and is read before its signature is checked: never compressed.
        let coding = BodyCoding.coding(of: request.headers[.contentEncoding])
        if coding == .unsupported || (isEnroll && coding != nil) {
            throw Problem(.unsupportedMediaType, "Content-Encoding '\((request.headers[.contentEncoding] ?? "").prefix(40))' is not taken here (gzip on /v1/sync, or none)")
        }
        context.acceptsGzip = BodyCoding.admitsGzip(request.headers[.acceptEncoding])
        if let declared = request.headers[.contentLength], Int(declared).map({ $0 > limit }) ?? true {
            throw Problem(.bodyTooLarge, "request body is larger than \(limit) bytes (Content-Length \(declared.prefix(24)))")
        }
        guard let digest = request.headers[.contentDigest] else {
            throw Problem(.digestMissing, "Content-Digest header is missing")
        }
        guard let input = request.headers[.signatureInput], let signature = request.headers[.signature] else {
            throw Problem(.unsigned, "the request is not signed (Signature-Input and Signature headers)")
        }
        let params: HTTPSignature.Parameters, sig: [UInt8]
        do { (params, sig) = try HTTPSignature.parse(input: input, signature: signature) } catch {
            throw Problem(.signatureMalformed, "bad signature headers: \(error.message)")
        }
        context.nonce = params.nonce
        guard params.components == HTTPSignature.requestComponents else {
            throw Problem(.signatureComponents, "the signature must cover \(HTTPSignature.requestComponents.joined(separator: " "))")
        }
        // RFC 9421 §2.3: alg is optional (the key determines it); named, it must be ours.
        guard params.alg.isEmpty || params.alg == "ed25519" else { throw Problem(.signatureAlgorithm, "alg must be ed25519") }
        // Judged as of the head's arrival: the signature was fresh when the request was sent.
        let expires = try Self.checkFreshness(created: params.created, expires: params.expires, nowMillis: arrived)
        var publicKey: [UInt8] = []
        if !isEnroll {
            let roster = try await server.store.recentRoster(knowing: DeviceID(params.keyid))
            context.roster = roster
            guard let device = DeviceID(params.keyid), let entry = roster[device] else {
                throw Problem(.unknownKey, "keyid '\(params.keyid.prefix(80))' is not an enrolled device")
            }
            guard entry.revokedAfterSeq == nil else {
                throw Problem(.deviceRevoked, "device \(entry.name) (\(device)) has been revoked")
            }
            publicKey = entry.publicKey
            context.device = entry
        }
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: limit) } catch {
            context.device = nil
            throw Problem(.bodyTooLarge, "request body is larger than \(limit) bytes")
        }
        context.body = Array(buffer.readableBytesView)
        guard server.clock() <= Self.adding(seconds: HTTPSignature.maxTransferSeconds, to: arrived) else {
            context.device = nil
            throw Problem(.transferTooSlow, "the request took more than \(HTTPSignature.maxTransferSeconds) s to arrive; send less at once")
        }
        guard digest == HTTPSignature.contentDigest(context.body) else {
            context.device = nil
            throw Problem(.digestMismatch, "Content-Digest does not match the body")
        }
        if isEnroll {
            // Proof of possession: the enrolling key, from the body, must sign its own request.
            guard let enroll = try? JSONDecoder().decode(EnrollRequest.self, from: Data(context.body)),
                  let pk = Data(base64Encoded: enroll.publicKey), pk.count == 32 else {
                throw Problem(.malformedRequest, "the enrolment request is not valid JSON with a 32-byte public key")
            }
            guard params.keyid == DeviceID(publicKey: Array(pk)).description else {
                throw Problem(.keyMismatch, "keyid is not the id of the enrolling key")
            }
            publicKey = Array(pk)
        }
        let target = "https://" + (request.head.authority ?? "") + (request.head.path ?? request.uri.path)
        let values = [request.method.rawValue, target, digest, ctype]
        guard HTTPSignature.verify(values: values, parameters: params, signature: sig, publicKey: publicKey) else {
            context.device = nil
            throw Problem(.signatureInvalid, "the request signature does not verify")
        }
        // Kept until the signature has expired and its body could no longer be arriving.
        let nonce = SignatureNonce(device: params.keyid, nonce: params.nonce,
                                   expiresAt: Self.adding(seconds: HTTPSignature.maxTransferSeconds, to: expires))
        if isEnroll {
            // Nothing is written for an enrolment (no nonce, no rate-limiter entry) until its
            // invite token has been verified: `SyncServer.enroll` records the nonce afterwards.
            context.enrollingKey = publicKey
            context.unrecordedNonce = nonce
            context.markAuthenticated()
            return
        }
        if isSync {
            // Recorded in the exchange's own transaction: one durable commit per sync, not two.
            context.unrecordedNonce = nonce
        } else if try await !server.store.useNonce(nonce, now: server.clock()) {
            throw Problem(.replayed, Self.replayed)
        }
        try await server.limiter.admit(params.keyid)
        // Only an authenticated, admitted body is decompressed (a replay or a device over its
        // rate costs no inflate), and never past the limit it would have had uncompressed.
        if coding == .gzip {
            do { context.body = try BodyCoding.decompress(context.body, limit: limit) } catch {
                context.device = nil
                throw error.code == .tooLarge ? Problem(.bodyTooLarge, "request body is larger than \(limit) bytes once decompressed")
                                              : Problem(.malformedRequest, "the gzip body is corrupt")
            }
        }
        context.markAuthenticated()
    }

    /// The signature's `created` must be within `maxAgeSeconds` of the server's clock and its
    /// `expires` in the future, at most `maxAgeSeconds` after `created`. Returns when it expires,
    /// in milliseconds. Any Int64 is a possible input: nothing here can overflow.
    static func checkFreshness(created: Int64, expires: Int64?, nowMillis: UInt64) throws -> UInt64 {
        let now = Int64(nowMillis / 1000)  // at most UInt64.max / 1000: fits
        let (skew, overflow) = created.subtractingReportingOverflow(now)
        guard !overflow, skew.magnitude <= HTTPSignature.maxAgeSeconds.magnitude else {
            let by = overflow ? "beyond 64 bits" : "\(skew) s"
            throw Problem(.signatureCreated, "signature created \(by) from the server's clock (limit ±\(HTTPSignature.maxAgeSeconds) s); sync the offset and retry")
        }
        // `created` is now within ±maxAge of a clock that fits in 55 bits: so are the sums below.
        guard let expires, expires > now, expires <= created + HTTPSignature.maxAgeSeconds, let seconds = UInt64(exactly: expires) else {
            throw Problem(.signatureExpired, "signature has expired or has no valid expires")
        }
        return seconds * 1000
    }

    /// `millis + seconds × 1000`, saturating instead of trapping on a clock near the top.
    static func adding(seconds: Int64, to millis: UInt64) -> UInt64 {
        let (ms, o1) = UInt64(clamping: seconds).multipliedReportingOverflow(by: 1000)
        let (sum, o2) = millis.addingReportingOverflow(ms)
        return o1 || o2 ? .max : sum
    }
}

extension Authenticator {
    static let replayed = "this signature nonce was already used (replay)"
}

/// Requests per device per minute, per server process. Only authenticated devices get a window
/// (an enrolment gets none), so the map is bounded by the roster; windows older than a minute
/// are dropped at most once a minute, and the map never holds more than `maxWindows`.
actor RateLimiter {
    let perMinute: Int
    var windows: [String: (start: UInt64, count: Int)] = [:]
    var lastPrune: UInt64?
    let clock: @Sendable () -> UInt64
    static let window: UInt64 = 60_000
    static let maxWindows = 10_000

    init(perMinute: Int, clock: @escaping @Sendable () -> UInt64) { self.perMinute = perMinute; self.clock = clock }

    func admit(_ key: String) throws {
        let now = clock()
        prune(now)
        var w = windows[key] ?? (now, 0)
        // A clock stepped backwards (NTP) starts a new window, as one a minute old does.
        if now < w.start || now - w.start >= Self.window { w = (now, 0) }
        w.count += 1
        windows[key] = w
        guard w.count <= perMinute else {
            throw Problem(.rateLimited, "more than \(perMinute) requests in a minute from this device; retry later")
        }
    }

    /// Drops the windows that are over (or from before a backward step of the clock).
    func prune(_ now: UInt64) {
        let due = lastPrune.map { now < $0 || now - $0 >= Self.window } ?? true
        guard due || windows.count >= Self.maxWindows else { return }
        lastPrune = now
        windows = windows.filter { now >= $0.value.start && now - $0.value.start < Self.window }
        // Still full of live windows (more devices than the bound, all busy): start afresh rather
        // than grow; a device loses at most one minute's count.
        if windows.count >= Self.maxWindows { windows.removeAll() }
    }
}
