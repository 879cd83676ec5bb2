import FieldSyncBodyCoding
import FieldSyncCore
import FieldSyncStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import Prometheus
import Synchronization

/// The sync server: routes, handlers and signed answers over one `ReplicaStore` (DESIGN.md §7).
public struct SyncServer: Sendable {
    public let store: any SyncStore
    public let key: DeviceKey
    public let clock: @Sendable () -> UInt64
    let limiter: RateLimiter
    let metrics: ServerMetrics
    let load: ExchangeLoad
    let rosters = RosterSigner()
    let forkNotices = ForkNotices()

    /// The CA certificate, served at `/ca.pem` so `fieldsync enroll --pin` can check it against the pin.
    public let caPEM: String

    /// `processes`: how many server processes share the store's database (PostgreSQL); each
    /// judges its crowd as that many times its own.
    public init(store: any SyncStore, key: DeviceKey, caPEM: String = "", requestsPerMinute: Int = 600, processes: Int = 1,
                clock: @escaping @Sendable () -> UInt64 = { Timestamps.nowMillis }) {
        load = ExchangeLoad(processes: processes)
        self.caPEM = caPEM
        self.store = store
        self.key = key
        self.clock = clock
        limiter = RateLimiter(perMinute: requestsPerMinute, clock: clock)
        metrics = ServerMetrics()
    }

    /// The routes; each request logged on `logger` (info: one line each).
    public func router(logger: Logger = Logger(label: "fieldsync-server", factory: { _ in SwiftLogNoOpLogHandler() })) -> Router<SyncContext> {
        let router = Router(context: SyncContext.self)
        router.add(middleware: RequestLogMiddleware(logger: logger))
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: Authenticator(server: self))
        // 503 when the store does not answer, so a load balancer sends laptops to another process.
        router.get("/healthz") { _, _ in
            let health = await self.store.health()
            return self.signed(status: health.ok ? .ok : .serviceUnavailable,
                               json: .object(["status": .string(health.ok ? "ok" : "unavailable"), "server_time": .int(Int64(clamping: self.clock())),
                                              "database": .object(["backend": .string(health.backend), "ok": .bool(health.ok),
                                                                   "detail": .string(health.detail)])]), nonce: nil)
        }
        router.get("/ca.pem") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/x-pem-file"], body: .init(byteBuffer: ByteBuffer(string: self.caPEM)))
        }
        router.get("/metrics") { _, _ in
            var buffer: [UInt8] = []
            self.metrics.devicesSeen.set(Double((try? await self.store.devicesSeen(since: self.clock() >= 86_400_000 ? self.clock() - 86_400_000 : 0)) ?? 0))
            self.metrics.registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.post("/v1/enroll") { _, context in try await self.enroll(context) }
        router.post("/v1/sync") { _, context in try await self.sync(context) }
        router.get("/v1/roster") { _, context in
            try self.signed(status: .ok, encodable: SignedRoster.sign(try await self.store.roster(), key: self.key), nonce: context.nonce,
                            gzip: context.acceptsGzip)
        }
        return router
    }

    func enroll(_ context: SyncContext) async throws -> Response {
        let req: EnrollRequest
        do { req = try JSONDecoder().decode(EnrollRequest.self, from: Data(context.body)) } catch {
            throw Problem(.malformedRequest, "malformed enrolment JSON")
        }
        guard let pk = context.enrollingKey, let nonce = context.unrecordedNonce else {
            throw Problem(.signatureInvalid, "not signed by the enrolling key")
        }
        // The device's name is the one the invite was made for (`fieldsync-server invite --name`):
        // the name the laptop asks for is ignored, so a field invite cannot enrol as
        // "coordinator-laptop". An empty name makes the store take the invite's.
        let entry: RosterEntry
        do { entry = try await store.enroll(token: req.token, publicKey: pk, name: "", now: clock()) } catch let e as SyncStoreError where e.code == .inviteRefused {
            throw Problem(.inviteRefused, e.message)
        }
        // Only now, the token verified, is anything of the request written. A replay of it finds
        // the token used; the nonce is kept all the same, as every other route's is.
        // The device is enrolled whether or not this write succeeds: its answer still goes out.
        _ = try? await store.useNonce(nonce, now: clock())
        let body = EnrollResponse(device: entry.device.description, role: entry.role.rawValue, serverPublicKey: Data(key.publicKey).base64EncodedString(),
                                  roster: SignedRoster.sign(try await store.roster(), key: key), serverTime: clock())
        return try signed(status: .ok, encodable: body, nonce: context.nonce)
    }

    func sync(_ context: SyncContext) async throws -> Response {
        guard let device = context.device else { throw Problem(.signatureInvalid, "not authenticated") }
        let start = ContinuousClock.now
        let req: SyncRequest
        do { req = try SyncRequest(body: context.body) } catch {
            throw Problem(.malformedRequest, error.message)
        }
        guard req.changes.count <= SyncProtocol.maxBatch else {
            throw Problem(.tooManyChanges, "\(req.changes.count) changes in one request; at most \(SyncProtocol.maxBatch)")
        }
        let vector: VersionVector
        do { vector = try req.decodedVector() } catch { throw Problem(.malformedRequest, error.message) }
        // Bounded work per exchange under load: every laptop gets its turn at the single writer
        // instead of queueing behind whole batches. Changes beyond the limit are neither accepted
        // nor refused; they stay in the client's outbox for its next exchange. The limits are
        // asked again as the work starts (decoding, the writer, the answer): in a burst, the
        // first laptops arrive while the server still looks idle.
        let load = self.load
        load.enter()
        defer { load.leave() }
        let limits = ExchangeLimits(takes: { ExchangeLoad.uploadLimit(crowd: load.crowd) },
                                    sends: { ExchangeLoad.sendLimit(crowd: load.crowd) })
        let (upload, undecodable) = await Self.decode(Array(req.changes.prefix(limits.takes())), alone: load.crowdHere == 1)
        guard let nonce = context.unrecordedNonce else { throw Problem(.signatureInvalid, "no signature nonce") }
        let roster: Roster
        if let known = context.roster { roster = known } else { roster = try await store.roster() }
        // An upload extends its first change's author's chain: the device's own, or an enrolled
        // device's it relays. A change of anyone else is refused (`ServerExchange.apply`).
        let author = upload.first.map(\.change.device).flatMap { roster[$0] == nil ? nil : $0 } ?? device.device
        // Logged even if the exchange fails: the log is the record of who brought whose work.
        let relayedFor = author == device.device ? nil : (id: author.description, name: roster[author]?.name ?? "")
        if let r = relayedFor { context.note.relayed(for: r.id, named: r.name, changes: 0) }
        let result: ExchangeResult
        do {
            result = try await store.exchange(ExchangeRequest(device: device.device, author: author, roster: roster, upload: upload,
                                                              clientVector: vector, nonce: nonce, now: clock()), limits: limits)
        } catch let e as SyncStoreError where e.code == .replayed {
            throw Problem(.replayed, Authenticator.replayed)
        }
        let refused = undecodable + result.refused
        // Accepted minus those kept but refused by policy (listed in both), without comparing every pair.
        let acceptedIDs = Set(result.accepted.map(\.hex))
        let applied = result.accepted.count - result.refused.filter { acceptedIDs.contains($0.id) }.count
        metrics.changesAccepted.increment(by: Int64(applied))
        if let r = relayedFor { context.note.relayed(for: r.id, named: r.name, changes: applied) }
        metrics.changesRefused.increment(by: Int64(refused.count))
        var body = SyncResponse(
            accepted: result.accepted.map(\.hex), refused: refused, changes: result.lacking,
            vector: Dictionary(uniqueKeysWithValues: result.vector.seqs.map { ($0.key.description, $0.value) }),
            more: result.more, serverTime: clock(), roster: nil)
        if !result.forks.isEmpty {
            // Evidence kept for the administrator and every laptop; the refusal itself stands
            // even if keeping it fails.
            try? await store.recordForks(result.forks)
            await forkNotices.expire()
        }
        let forks = await forkNotices.current(store)
        if !forks.isEmpty { body.forks = forks }
        let signedRoster = await rosters.signed(roster, key: key)
        if signedRoster.digest != req.rosterDigest { body.roster = signedRoster.signed }
        metrics.syncDuration.record(ContinuousClock.now - start)
        return signed(status: .ok, body: try body.body(), contentType: SyncProtocol.syncType, nonce: context.nonce, gzip: context.acceptsGzip)
    }

    /// The upload's envelopes as changes, and a refusal for each that does not decode, named by
    /// its place ("#2"). A large upload to a server with nothing else to do is decoded on every
    /// core: decoding is a fifth of what an imported laptop's first upload costs the server, and
    /// the other cores would idle. Under a crowd, the other exchanges have them.
    static func decode(_ envelopes: [[UInt8]], alone: Bool) async -> (upload: [SignedChange], undecodable: [ChangeRefusal]) {
        func decode(_ part: ArraySlice<[UInt8]>) -> [Result<SignedChange, CoreError>] {
            part.map { envelope in Result { () throws(CoreError) in try SignedChange(envelope: envelope) } }
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let parts = alone && cores > 1 && envelopes.count > 1 && envelopes.reduce(0, { $0 + $1.count }) >= 128 << 10
            ? min(cores, envelopes.count) : 1
        var decoded: [Result<SignedChange, CoreError>]
        if parts == 1 { decoded = decode(envelopes[...]) } else {
            let size = (envelopes.count + parts - 1) / parts
            decoded = await withTaskGroup(of: (Int, [Result<SignedChange, CoreError>]).self) { group in
                for start in stride(from: 0, to: envelopes.count, by: size) {
                    let part = envelopes[start..<min(envelopes.count, start + size)]
                    group.addTask { (start, decode(part)) }
                }
                var out = [Result<SignedChange, CoreError>?](repeating: nil, count: envelopes.count)
                for await (start, results) in group { for (i, r) in results.enumerated() { out[start + i] = r } }
                return out.map { $0! }
            }
        }
        var upload: [SignedChange] = []
        var undecodable: [ChangeRefusal] = []
        for (i, r) in decoded.enumerated() {
            switch r {
            case .success(let c): upload.append(c)
            case .failure(let e): undecodable.append(ChangeRefusal(id: "#\(i)", code: e.code.description, reason: e.message))
            }
        }
        return (upload, undecodable)
    }

    // MARK: Signed answers

    func signed(status: HTTPResponse.Status, encodable: some Encodable, nonce: String?, gzip: Bool = false) throws -> Response {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return signed(status: status, body: Array(try enc.encode(encodable)), contentType: SyncProtocol.contentType, nonce: nonce, gzip: gzip)
    }

    func signed(status: HTTPResponse.Status, json: JSONValue, nonce: String?) -> Response {
        signed(status: status, body: json.canonicalBytes, contentType: SyncProtocol.contentType, nonce: nonce)
    }

    /// Every answer is signed by the server key over status, digest and content type; the
    /// request's nonce is echoed so an old answer cannot be replayed to a new request. With
    /// `gzip` (the laptop accepts it) a large body goes compressed, the digest over what is
    /// sent. Every answer says that requests may come compressed (RFC 7694).
    func signed(status: HTTPResponse.Status, body plain: [UInt8], contentType: String, nonce: String?, gzip: Bool = false) -> Response {
        let compress = gzip && plain.count >= BodyCoding.minimumBytes
        let body = compress ? BodyCoding.compress(plain) : plain
        let digest = HTTPSignature.contentDigest(body)
        let params = HTTPSignature.Parameters(components: HTTPSignature.responseComponents, created: Int64(clock() / 1000), expires: nil,
                                              nonce: nonce ?? "-", keyid: "server")
        let (input, sig) = HTTPSignature.sign(values: [String(status.code), digest, contentType], parameters: params, key: key)
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.contentDigest] = digest
        if compress { headers[.contentEncoding] = BodyCoding.gzip }
        headers[.acceptEncoding] = BodyCoding.gzip
        headers[.signatureInput] = input
        headers[.signature] = sig
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    func problemResponse(_ p: Problem, nonce: String?) -> Response {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let body = (try? enc.encode(p)).map(Array.init) ?? []
        return signed(status: HTTPResponse.Status(code: p.status), body: body, contentType: SyncProtocol.problemType, nonce: nonce)
    }

    // MARK: Application

    /// The HTTPS application: TLS 1.2 or newer, HTTP/1.1, graceful shutdown via `runService()`,
    /// within `limits` (connections at once, in all and per address; idle timeouts; header size).
    public func application(chainPEM: String, keyPEM: String, host: String, port: Int, logger: Logger, limits: ConnectionLimits = .init(),
                            onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                           privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        let addresses = AddressConnections(limit: limits.maxConnectionsPerAddress)
        let http = HTTP1Channel.Configuration(
            additionalChannelHandlers: [AddressCap(addresses), ConnectionGuard(limits: limits)], idleTimeout: limits.idle,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes, maxHeaderFieldCount: 100))
        return Application(router: router(logger: logger), server: try .tls(.http1(configuration: http), tlsConfiguration: tls),
                           configuration: .init(address: .hostname(host, port: port), serverName: "fieldsync",
                                                availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections)),
                           onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }
}

/// How crowded this process is (exchanges in flight, and exchanges just begun), and from that
/// how many changes one exchange takes up and sends down: the whole batch when it is alone, less
/// as laptops crowd in, so a depot's worth of laptops syncing at once share the writer and the
/// cores in small turns.
final class ExchangeLoad: Sendable {
    let inFlight = Atomic<Int>(0)
    /// Processes sharing one database (PostgreSQL), a balancer spreading laptops evenly: the
    /// crowd at the database is this many times the one this process sees. Counted as one,
    /// each of two processes let its uploads take four times the changes SQLite's one process
    /// did, and held each laptop's chain lock that much longer (B3's tail).
    let processes: Int

    init(processes: Int = 1) { self.processes = min(max(1, processes), 64) }
    /// When the exchanges of the last `window` began, oldest first. A crowd that
    /// arrives at once (a depot's laptops after a link comes back) finishes its TLS handshakes
    /// one by one; counting only the exchanges in flight, the first few found the server idle
    /// and took whole batches, checking a signature each, while the rest queued behind them
    /// (B3: Ed25519 was a third of the server in the first half-second, a ninth afterwards).
    let arrivals = Mutex<[ContinuousClock.Instant]>([])
    static let window = Duration.milliseconds(250)

    func enter() {
        inFlight.wrappingAdd(1, ordering: .relaxed)
        let now = ContinuousClock.now
        arrivals.withLock { times in
            if let stale = times.firstIndex(where: { now - $0 <= Self.window }) { times.removeFirst(stale) } else { times.removeAll() }
            times.append(now)
        }
    }

    func leave() { inFlight.wrappingSubtract(1, ordering: .relaxed) }

    /// How many exchanges are in flight now, this one included.
    var current: Int { inFlight.load(ordering: .relaxed) }

    /// How many exchanges share the server: this process's crowd (`crowdHere`) times the
    /// processes that share the database. Both limits are judged by it.
    var crowd: Int { crowdHere * processes }

    /// The exchanges of this process: those in flight, or those that began within the window,
    /// whichever is more. What shares this process's cores.
    var crowdHere: Int {
        let now = ContinuousClock.now
        // Arrival times ascend: find the first inside the window by bisection (this is asked
        // before every signature check and every change applied).
        let recent = arrivals.withLock { times in
            var (lo, hi) = (0, times.count)
            while lo < hi {
                let mid = (lo + hi) / 2
                if now - times[mid] > Self.window { lo = mid + 1 } else { hi = mid }
            }
            return times.count - lo
        }
        return max(current, recent)
    }

    /// The whole batch (500 changes) for up to ten exchanges at once, then shrinking with the
    /// load: 250 at twenty, 100 at fifty, never under 50. Measured in BENCHMARKS.md (B3): smaller
    /// turns cut the tail latency but cost a fixed few ms of machine time each (with a floor of
    /// 16, fifty laptops' arrivals took pulls down to 28 changes and halved the throughput; with
    /// 100 the p99 was 390–470 ms; with 50 about 200 ms at 280k field writes/s: `--only-b3` runs).
    static func sendLimit(crowd: Int) -> Int {
        max(50, SyncProtocol.maxBatch * 10 / max(10, crowd))
    }

    /// Changes taken up shrink sooner and faster, with the square of the load: they all go
    /// through the one SQLite writer, one exchange after another, while pulls are read beside
    /// it. The whole batch for up to five at once, 100 at ten, 25 at twenty, 4 at fifty (the
    /// writer's turns then last a few milliseconds; measured in BENCHMARKS.md, B3).
    static func uploadLimit(crowd: Int) -> Int {
        max(4, SyncProtocol.maxBatch * 2 / max(2, crowd * crowd / 10))
    }
}

/// The forks every answer names (`SyncResponse.forks`), read from the store at most once a
/// second: a fork recorded by another process reaches this one's answers within a second.
actor ForkNotices {
    static let most = 256
    var last: (at: ContinuousClock.Instant, notices: [ForkNotice])?

    func current(_ store: any SyncStore) async -> [ForkNotice] {
        if let last, ContinuousClock.now - last.at < .seconds(1) { return last.notices }
        guard let read = try? await store.forks(limit: Self.most) else { return last?.notices ?? [] }
        let notices = read.map { ForkNotice(device: $0.device.description, seq: $0.seq, refused: $0.refused.hex) }
        last = (ContinuousClock.now, notices)
        return notices
    }

    func expire() { last = nil }
}

/// The roster as last signed: signing it again for every answer cost an Ed25519 signature and
/// its JSON per exchange, though it changes only on enrolment and revocation. Keyed by the
/// roster read from the store, so a change made by another process is signed afresh.
actor RosterSigner {
    var last: (roster: Roster, signed: SignedRoster, digest: String)?

    func signed(_ roster: Roster, key: DeviceKey) -> (signed: SignedRoster, digest: String) {
        if let last, last.roster == roster { return (last.signed, last.digest) }
        let s = SignedRoster.sign(roster, key: key)
        last = (roster, s, s.digest)
        return (s, s.digest)
    }
}
