import FieldSyncCore
import FieldSyncStore
import Foundation

/// What a take-back, a fork adopted or a rekey did (for the command-line client, which does not
/// see the store).
public typealias ReplicaStoreTakeBack = ReplicaStore.TakeBack

/// THE SYNC LOOP: enrolment, then repeated exchanges until neither side has anything left.
/// A change is marked acknowledged only after a verified answer lists it; an interrupted sync
/// resumes from the outbox and the version vector, both on disk.
public struct SyncEngine: Sendable {
    public let replica: Replica

    public init(replica: Replica) { self.replica = replica }

    // MARK: Enrolment

    public func enroll(url: String, token: String, caFile: String?, pin: String?) async throws -> RosterEntry {
        guard url.lowercased().hasPrefix("https://") else { throw SyncFailure(.usage, "the server URL must start with https://") }
        guard (caFile == nil) != (pin == nil) else { throw SyncFailure(.usage, "give exactly one of --ca FILE or --pin sha256:HEX") }
        if try replica.store.meta("server_url") != nil { throw SyncFailure(.failure, "this replica is already enrolled with \(try replica.store.meta("server_url")!)") }
        let caPEM: String
        if let caFile {
            guard let d = FileManager.default.contents(atPath: caFile), let text = String(data: d, encoding: .utf8) else {
                throw SyncFailure(.usage, "cannot read the CA file \(caFile)")
            }
            _ = try SyncTransport.caPin(text)
            caPEM = text
        } else {
            let p = pin!.lowercased()
            guard p.hasPrefix("sha256:"), p.count == 7 + 64, [UInt8](hex: String(p.dropFirst(7))) != nil else {
                throw SyncFailure(.usage, "--pin takes sha256: and 64 hex digits, as `fieldsync-server init` printed it")
            }
            caPEM = try await SyncTransport.fetchPinnedCA(baseURL: url, pin: p)
        }
        let offset = try await Self.serverOffset(url: url, caPEM: caPEM, key: replica.key, serverKey: nil)
        let transport = try SyncTransport(baseURL: url, caPEM: caPEM, key: replica.key, offsetMillis: offset, serverKey: nil)
        defer { Task { await transport.shutdown() } }
        let me = try replica.myEntry()
        let enrolled = try await Self.spend(token, key: replica.key, name: me.name, over: transport)
        guard let serverKey = Data(base64Encoded: enrolled.serverPublicKey).map(Array.init), serverKey.count == 32 else {
            throw SyncFailure(.failure, "the server's enrolment answer is malformed")
        }
        // Trust on first use within the pinned TLS channel: from now on every answer must verify with this key.
        let roster = try enrolled.roster.verified(serverKey: serverKey)
        guard let mine = roster[replica.device] else { throw SyncFailure(.failure, "the server's roster does not list this device") }
        if mine.role != me.role, try !replica.store.isEmpty() {
            throw SyncFailure(.failure, "the invite is for a \(mine.role.rawValue) device but this replica already holds changes made as \(me.role.rawValue); enrol a fresh replica")
        }
        try replica.store.upsertRoster(roster.sorted)
        try replica.store.setMeta("roster_digest", enrolled.roster.digest)
        try replica.store.setMeta("roster_signed", Self.stored(enrolled.roster))
        try replica.store.setMeta("server_url", url.hasSuffix("/") ? String(url.dropLast()) : url)
        try replica.store.setMeta("server_key", serverKey.hex)
        try replica.store.setMeta("ca_pem", caPEM)
        try replica.store.setMeta("clock_offset", String(Int64(enrolled.serverTime) - Int64(Timestamps.nowMillis)))
        return mine
    }

    /// Milliseconds to add to this laptop's clock to get the server's (`/healthz`), so that
    /// what it signs is fresh by the server's clock whatever its own says.
    static func serverOffset(url: String, caPEM: String, key: DeviceKey, serverKey: [UInt8]?) async throws -> Int64 {
        let probe = try SyncTransport(baseURL: url, caPEM: caPEM, key: key, offsetMillis: 0, serverKey: serverKey)
        do {
            let offset = Int64(try await probe.serverTime()) - Int64(Timestamps.nowMillis)
            await probe.shutdown()
            return offset
        } catch {
            await probe.shutdown()
            throw error
        }
    }

    /// Spends an invite on `key` (`/v1/enroll`, the request signed by that key: proof of possession).
    static func spend(_ token: String, key: DeviceKey, name: String, over transport: SyncTransport) async throws -> EnrollResponse {
        let body = Array(try JSONEncoder().encode(EnrollRequest(token: token, publicKey: key.publicKey, name: name)))
        let (_, answer) = try await transport.send(method: .POST, path: "/v1/enroll", body: body)
        guard let enrolled = try? JSONDecoder().decode(EnrollResponse.self, from: Data(answer)) else {
            throw SyncFailure(.failure, "the server's enrolment answer is malformed")
        }
        return enrolled
    }

    // MARK: Rekey

    /// `fieldsync rekey`: after a fork, this laptop moves to `key` (enrolled with `token`, an
    /// invite from the same server), and its changes the server lacks are signed again under
    /// it (`ReplicaStore.rekey`). `retry`: `key` was made by a rekey that stopped, and may be
    /// enrolled already.
    public func rekey(token: String, key: DeviceKey, retry: Bool) async throws -> (entry: RosterEntry, result: ReplicaStore.TakeBack) {
        let store = replica.store
        guard let url = try store.meta("server_url"), let caPEM = try store.meta("ca_pem"),
              let keyHex = try store.meta("server_key"), let serverKey = [UInt8](hex: keyHex) else {
            throw SyncFailure(.usage, "this replica is not enrolled: a rekey moves an enrolled laptop to a new key")
        }
        let me = try replica.myEntry()
        let offset = try await Self.serverOffset(url: url, caPEM: caPEM, key: key, serverKey: serverKey)
        let transport = try SyncTransport(baseURL: url, caPEM: caPEM, key: key, offsetMillis: offset, serverKey: serverKey)
        defer { Task { await transport.shutdown() } }
        var signed: SignedRoster
        do {
            let enrolled = try await Self.spend(token, key: key, name: me.name, over: transport)
            guard enrolled.serverPublicKey == Data(serverKey).base64EncodedString() else {
                throw SyncFailure(.failure, "the invite is from another server than the one this replica syncs with")
            }
            signed = enrolled.roster
        } catch let f as SyncFailure where retry && f.exit != .unreachable {
            // Enrolled by the rekey that stopped: the key signs for itself now.
            let answer = try await transport.exchange(SyncRequest(vector: try store.vector(), changes: [], rosterDigest: nil))
            guard let r = answer.roster else { throw f }
            signed = r
        }
        let roster = try signed.verified(serverKey: serverKey)
        guard let mine = roster[key.deviceID] else { throw SyncFailure(.failure, "the server's roster does not list the new key") }
        guard mine.role == me.role else {
            // That key is enrolled in the wrong role and no use to this laptop: the next rekey,
            // with the right invite, makes another.
            replica.home.abandonRekey()
            throw SyncFailure(.failure, "the invite is for a \(mine.role.rawValue) device but this laptop's work was signed as \(me.role.rawValue): ask for a \(me.role.rawValue) invite (and have this one revoked: fieldsync-server devices revoke \(key.deviceID))")
        }
        // The old device's chain as the server holds it, from its first change.
        let answer = try await transport.exchange(SyncRequest(vector: try store.vector(), changes: [], rosterDigest: signed.digest))
        let chain = try await fetchChain(transport, device: replica.device, from: 1, serverVector: answer.vector)
        let result: ReplicaStore.TakeBack
        do {
            result = try store.rekey(oldChain: chain, newKey: key, roster: roster.sorted,
                                     meta: ["roster_digest": signed.digest, "roster_signed": Self.stored(signed),
                                            "clock_offset": String(offset), "name": mine.name])
        } catch let e as StoreError {
            throw SyncFailure(.failure, "the replica could not move to the new key: \(e.message)")
        } catch let e as CoreError {
            throw SyncFailure(.failure, "the replica could not move to the new key: \(e.message)")
        }
        return (mine, result)
    }

    // MARK: Sync

    public struct Summary: Sendable {
        public var pushed = 0
        public var pulled = 0
        /// This laptop's changes the server had acknowledged, then lost (restored from a backup),
        /// and was sent again.
        public var resent = 0
        /// This laptop's own changes it found on the server and lacked (a restored or copied
        /// replica), and its changes signed again on top of them.
        public var takenBack = 0
        public var resigned = 0
        /// Other devices' changes given up for the server's chain (forks, `adoptChain`).
        public var forkDropped = 0
        public var refused: [ChangeRefusal] = []
        /// Other devices' changes the server lacked and took from this laptop (`Relay`): a server
        /// restored from a backup, or work that came here by bundle.
        public var relayed = 0
        /// Other devices' changes this replica holds and the server still lacks at the sync's
        /// end: those it refused when relayed (each with its reason), or all of them while this
        /// laptop's own changes are not all taken (they go first).
        public var serverLacks: [ServerLack] = []
        public var conflictsBefore = 0
        public var conflictsAfter = 0
        public var rounds = 0
        public var server = ""

        public var json: JSONValue {
            .object([
                "pushed": .int(Int64(pushed)), "pulled": .int(Int64(pulled)), "rounds": .int(Int64(rounds)), "server": .string(server),
                "resent": .int(Int64(resent)), "taken_back": .int(Int64(takenBack)), "resigned": .int(Int64(resigned)),
                "fork_dropped": .int(Int64(forkDropped)),
                "relayed": .int(Int64(relayed)),
                "server_lacks": .array(serverLacks.map { lack in
                    var o: [String: JSONValue] = ["device": .string(lack.device.description), "name": .string(lack.name),
                                                  "changes": .int(Int64(clamping: lack.changes))]
                    if let reason = lack.refusal { o["reason"] = .string(reason) }
                    return .object(o)
                }),
                "refused": .array(refused.map { .object(["id": .string($0.id), "code": .string($0.code), "reason": .string($0.reason)]) }),
                "conflicts_open": .int(Int64(conflictsAfter)), "conflicts_raised": .int(Int64(max(0, conflictsAfter - conflictsBefore))),
            ])
        }
    }

    public struct ServerLack: Sendable, Equatable {
        public var device: DeviceID
        public var name: String
        public var changes: UInt64
        /// Why the server did not take them when this laptop relayed them (nil: not relayed).
        public var refusal: String?
    }

    /// What this replica holds of other devices beyond the server's vector, by roster name.
    func serverLacks(_ serverVector: [String: UInt64]) throws -> [ServerLack] {
        let roster = try replica.store.roster()
        return try replica.store.vector().seqs.compactMap { device, held -> ServerLack? in
            let there = serverVector[device.description] ?? 0
            guard device != replica.device, held > there else { return nil }
            return ServerLack(device: device, name: roster[device]?.name ?? device.description, changes: held - there)
        }.sorted { ($0.name, $0.device.description) < ($1.name, $1.device.description) }
    }

    /// Exchanges until both sides are done over a connection of its own (`fieldsync sync`).
    /// `progress` is called after each round.
    public func sync(deadline: ContinuousClock.Instant, progress: @Sendable (Summary) -> Void = { _ in }) async throws -> Summary {
        let session = SyncSession(engine: self)
        do {
            let summary = try await session.sync(deadline: deadline, progress: progress)
            await session.close()
            return summary
        } catch {
            await session.close()
            throw error
        }
    }

    /// `window` is the session's: how much to upload at once, as learned from the server and the
    /// link; so is `relay`: what the server would not take by relay.
    func exchangeUntilDone(_ transport: SyncTransport, _ summary: inout Summary, _ offset: inout Int64, _ window: inout UploadWindow,
                           _ relay: inout Relay, progress: @Sendable (Summary) -> Void) async throws {
        let store = replica.store
        // The next answer, asked for while this one is stored (see "Pull ahead" below).
        var ahead: Task<(answer: SyncResponse, opened: Opened), any Error>?
        /// What the request asked ahead said this replica holds.
        var claimed = VersionVector()
        /// This device's chain was mended once in this sync (`takeBack`).
        var mendedFork = false
        /// Other devices whose chain was adopted in this sync: once each, so that a notice this
        /// replica cannot act on never keeps the sync going.
        var adopted: Set<DeviceID> = []
        /// Other devices' changes the server lacks, relayed once this laptop's own are all taken:
        /// the authors left to relay, and the server's vector they were read against.
        var relayLacks: [ServerLack] = []
        var relayVector: [String: UInt64] = [:]
        /// The next request's changes, read while this one is at the server: building envelopes
        /// is most of the laptop's work in an upload, and it need not wait for the answer.
        /// Taken only when that answer acknowledged all it carried and sent nothing back again.
        var readAhead: Task<[ReplicaStore.OutgoingChange], any Error>?
        defer { ahead?.cancel(); readAhead?.cancel() }
        while true {
            try Task.checkCancellation()
            let outbox: [ReplicaStore.OutgoingChange]
            /// Changes of the outbox left for the next request by `maxUploadBytes`.
            var heldBack = 0
            /// Another device's changes this request carries instead (the outbox is empty).
            var relaying: Relay.Batch?
            let answer: SyncResponse
            var early: Opened?
            if let next = ahead {
                ahead = nil
                outbox = []
                // Waiting on a task's value does not pass a cancellation on (SIGTERM to `sync --watch`).
                (answer, early) = try await withTaskCancellationHandler { try await next.value } onCancel: { next.cancel() }
            } else {
                let waiting: [ReplicaStore.OutgoingChange]
                if let read = readAhead {
                    readAhead = nil
                    // Read for the largest window this one could have become: cut to the window.
                    waiting = Array(try await read.value.prefix(window.size))
                } else {
                    waiting = try store.outbox(device: replica.device, limit: window.size, bytes: window.bytes)
                }
                let envelopes = waiting.map(\.envelope)
                let sending = SyncProtocol.fitting(envelopes.map(\.count), budget: window.bytes)
                outbox = Array(waiting.prefix(sending))
                heldBack = waiting.count - sending
                var request = SyncRequest(vector: try store.vector(), changes: [], rosterDigest: try store.meta("roster_digest"))
                request.changes = Array(envelopes.prefix(sending))
                if waiting.isEmpty, !relayLacks.isEmpty {
                    relaying = try relay.next(relayLacks, serverVector: relayVector, store: store, window: window)
                    request.changes = relaying?.changes.map(\.envelope) ?? []
                }
                window.sending = request.changes.reduce(0) { $0 + $1.count }
                if heldBack > 0 || outbox.count == window.size, let last = outbox.last?.seq {
                    let (device, most) = (replica.device, window.mostNext)
                    readAhead = Task { try store.outbox(device: device, after: last, limit: most.size, bytes: most.bytes) }
                }
                if let batch = relaying {
                    do { answer = try await transport.exchange(request) } catch let f as SyncFailure
                        where f.exit == .failure && f.problem.map(Relay.refusedWhole.contains) == true {
                        // Refused whole for what it carried (other devices' changes too large,
                        // say): this laptop's own work is all sent, so the sync goes on without
                        // that author. Anything else (this device refused, an answer that does
                        // not verify, a bad link) ends the sync as it would any request.
                        relay.failed(batch, reason: f.message, code: f.problem?.rawValue ?? "")
                        try store.setMeta(Relay.metaKey, relay.stored)
                        relayLacks = relay.open(relayLacks, serverVector: relayVector)
                        window.sending = 0
                        continue
                    }
                } else {
                    answer = try await transport.exchange(request)
                }
            }
            summary.rounds += 1
            offset = Int64(answer.serverTime) - Int64(Timestamps.nowMillis)
            transport.learn(offsetMillis: offset)
            var outcome = ReplicaStore.ExchangeOutcome(meta: ["clock_offset": String(offset)])
            // The roster first: it says whose changes to trust (and who was revoked).
            if let r = answer.roster, let serverKey = try store.meta("server_key").flatMap({ [UInt8](hex: $0) }) {
                outcome.roster = try r.verified(serverKey: serverKey).sorted
                outcome.meta["roster_digest"] = r.digest
                // Kept as signed: a bundle made here passes it on (docs/BUNDLE.md).
                outcome.meta["roster_signed"] = Self.stored(r)
            }
            let accepted = Set(answer.accepted)
            let acked = outbox.filter { accepted.contains($0.id.hex) }.map(\.id)
            outcome.acknowledged = acked
            if let batch = relaying {
                summary.relayed += relay.answered(batch, vector: answer.vector, accepted: accepted, refusals: answer.refused)
                outcome.meta[Relay.metaKey] = relay.stored
            }
            // A server restored from a backup holds less of this laptop's work than it once
            // acknowledged: what it lost is unacknowledged again here and sent again, so a
            // restore loses nothing a laptop still holds. Once per sync: a server that keeps
            // answering so is not chased round after round.
            var lost = 0
            let serverHolds = answer.vector[replica.device.description] ?? 0
            if summary.resent == 0 {
                let head = try store.acknowledgedHead(device: replica.device)
                if serverHolds < head {
                    outcome.resendAfter = (replica.device, serverHolds)
                    lost = Int(clamping: head - serverHolds)
                }
            }
            // The changes read ahead follow this request's: sent only on top of all of them.
            if acked.count != outbox.count || lost > 0 {
                readAhead?.cancel()
                readAhead = nil
            }
            let mine = Set(outbox.map(\.id.hex))
            // A change the server could not even decode it names by its place in the request
            // ("#2"): it is this laptop's all the same, and must not pass for a clean sync.
            let refusedHere = answer.refused.compactMap { r -> ChangeRefusal? in
                if mine.contains(r.id) { return r }
                guard r.id.hasPrefix("#"), let i = Int(r.id.dropFirst()), outbox.indices.contains(i) else { return nil }
                return ChangeRefusal(id: outbox[i].id.hex, code: r.code, reason: r.reason)
            }
            // A change refused outright is sent again in the next round of this sync: named once.
            let named = Set(summary.refused.map(\.id))
            summary.refused += refusedHere.filter { !named.contains($0.id) }
            outcome.refusals = refusedHere.compactMap { r in ChangeID(hex: r.id).map { ($0, r.code, r.reason) } }
            if !answer.changes.isEmpty {
                // Opened ahead with the keys known then; one signed by a key the roster in this
                // answer brings is not marked verified, and is checked when it is applied.
                if early == nil { early = try await Self.open(answer.changes, keys: keys(adding: outcome.roster)) }
                (outcome.incoming, outcome.verified) = early!
            }
            // An erasure here removes its values from this laptop's unsent changes too: those
            // read ahead of it are read again once it is stored.
            if outcome.incoming.contains(where: \.erases) {
                readAhead?.cancel()
                readAhead = nil
            }
            // A restored or copied replica: the server's chain of this device runs beside this
            // one's. Its changes are taken back here and ours signed again on top, then the
            // sync goes on. Once per sync: a second fork means two copies are writing as one
            // device at once.
            if try forksFromServer(refused: refusedHere, incoming: outcome.incoming) {
                guard !mendedFork else {
                    throw SyncFailure(.failure, "this device's changes fork from the server's again: another copy of this replica is writing as this device")
                }
                ahead?.cancel()
                ahead = nil
                readAhead?.cancel()
                readAhead = nil
                let mended = try await takeBack(transport, serverVector: answer.vector)
                mendedFork = true
                summary.takenBack = mended.taken
                summary.resigned = mended.resigned
                // The fork it refused is mended: not a refusal to report.
                summary.refused.removeAll { $0.code == CoreError.Code.forkedChain.description || $0.code == CoreError.Code.brokenChain.description }
                continue
            }
            // Another device's fork, of which this replica holds the version the server refused:
            // that device's chain is fetched and adopted after this answer is stored, and its
            // changes in this answer wait for that.
            let forked = try forkedChainsHeld(answer.forks ?? []).filter { !adopted.contains($0.key) }
            if !forked.isEmpty {
                ahead?.cancel()
                ahead = nil
                let keep = outcome.incoming.indices.filter { forked[outcome.incoming[$0].change.device] == nil }
                (outcome.incoming, outcome.verified) = (keep.map { outcome.incoming[$0] }, keep.map { outcome.verified[$0] })
            }
            // Done when the server has nothing more and we sent all we had, or could make no
            // progress (changes refused outright stay unacknowledged in the outbox).
            let sentEverything = acked.count == outbox.count && outbox.count < window.size && heldBack == 0
            // Kept-but-refused changes are listed both accepted and refused: count each once.
            if let batch = relaying {
                let answered = accepted.union(answer.refused.map(\.id))
                window.update(sent: batch.changes.count, handled: batch.changes.count { answered.contains($0.id.hex) })
            } else {
                window.update(sent: outbox.count, handled: Set(acked.map(\.hex)).union(refusedHere.map(\.id)).count)
            }
            let settled = !answer.more && (sentEverything || acked.isEmpty) && lost == 0 && forked.isEmpty
            // What the server lacks is relayed only once all of this laptop's own is taken.
            let lacks = settled && sentEverything ? try serverLacks(answer.vector) : nil
            relayLacks = lacks.map { relay.open($0, serverVector: answer.vector) } ?? []
            relayVector = answer.vector
            let done = settled && relayLacks.isEmpty
            if done { outcome.meta["last_sync"] = Timestamps.iso(Timestamps.nowMillis) }
            // Pull ahead: when only pulling is left (all sent, no roster news), ask for the next
            // answer while this one is stored, so the server's work, the transfer and the
            // signature checks overlap the one writer's (a first sync). The request counts this
            // answer's changes as held; if storing them fails, the sync ends and the next one
            // starts again from what is on disk.
            if !done && answer.more && sentEverything && lost == 0 && answer.roster == nil && refusedHere.isEmpty && forked.isEmpty && !outcome.incoming.isEmpty {
                var vector = try store.vector()
                for c in outcome.incoming { vector.seqs[c.change.device] = max(vector[c.change.device], c.change.seq) }
                claimed = vector
                let request = SyncRequest(vector: vector, changes: [], rosterDigest: try store.meta("roster_digest"))
                let keys = try keys(adding: [])
                ahead = Task {
                    let next = try await transport.exchange(request)
                    return (next, try await Self.open(next.changes, keys: keys))
                }
            }
            // One transaction (one fsync) for everything this answer changes here.
            let results = try store.absorb(outcome)
            if lost > 0 { summary.resent = lost }  // counted once it is done
            for (id, r) in results {
                if case .failure(let e) = r { throw SyncFailure(.failure, "change \(id.hex.prefix(12)) from the server was refused: \(e.message)") }
            }
            // Asked ahead as if all of them were now held: if one was not (it waits for an
            // earlier one), ask again from what is on disk rather than skip it.
            if ahead != nil, try !store.vector().includes(claimed) {
                ahead?.cancel()
                ahead = nil
            }
            for (device, from) in forked.sorted(by: { $0.key < $1.key }) {
                adopted.insert(device)
                summary.forkDropped += try await adopt(transport, device: device, from: from, serverVector: answer.vector).dropped
            }
            summary.pushed += acked.count
            summary.pulled += outcome.incoming.count
            if done {
                summary.serverLacks = try (lacks ?? serverLacks(answer.vector)).map { lack in
                    var lack = lack
                    lack.refusal = relay.refusal(of: lack, serverVector: answer.vector)
                    return lack
                }
            }
            progress(summary)
            if done { return }
        }
    }

    /// An answer's changes, decoded, each with whether its signature was checked.
    typealias Opened = (changes: [SignedChange], verified: [Bool])

    /// A signed roster as `meta.roster_signed` keeps it.
    static func stored(_ r: SignedRoster) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: (try? enc.encode(r)) ?? Data(), as: UTF8.self)
    }

    /// Whether this answer shows the server holding another chain of this device than the one
    /// here: our change refused as a fork, or one of ours coming back that does not follow ours.
    func forksFromServer(refused: [ChangeRefusal], incoming: [SignedChange]) throws -> Bool {
        let codes: Set = [CoreError.Code.forkedChain.description, CoreError.Code.brokenChain.description]
        if refused.contains(where: { codes.contains($0.code) }) { return true }
        let me = replica.device
        guard let first = incoming.filter({ $0.change.device == me }).min(by: { $0.change.seq < $1.change.seq }) else { return false }
        let head = try replica.store.head(of: me)
        let seq = head?.seq ?? 0
        if first.change.seq <= seq { return try !replica.store.hasChange(first.id) }
        return first.change.seq == seq + 1 && first.change.prev != (head?.id ?? .zero)
    }

    /// Fetches this device's chain as the server holds it, from the first change the server
    /// has not acknowledged to us, and hands it to `ReplicaStore.takeBack`. A change of ours
    /// that left this laptop differing from the server's is a real fork: it needs `rekey`.
    func takeBack(_ transport: SyncTransport, serverVector: [String: UInt64]) async throws -> ReplicaStore.TakeBack {
        let store = replica.store, me = replica.device
        let theirs = try await fetchChain(transport, device: me, from: try store.acknowledgedHead(device: me) + 1, serverVector: serverVector)
        guard !theirs.isEmpty else { throw SyncFailure(.failure, "the server refused this device's chain as a fork but sent none of its own") }
        let result: ReplicaStore.TakeBack
        do { result = try store.takeBack(theirs: theirs, key: replica.key) } catch let e as StoreError {
            throw SyncFailure(.failure, e.message)
        } catch let e as CoreError {
            throw SyncFailure(.failure, "this device's changes could not be taken back from the server: \(e.message)")
        }
        if let seq = result.forkedAt {
            throw SyncFailure(.policy, "this device's change at seq \(seq) left this laptop (acknowledged, or in a bundle), yet the server holds another: a fork (a copy of this replica wrote as this device). Nothing here is lost; ask the server's administrator for an invite and run `fieldsync rekey --token TOKEN`")
        }
        return result
    }

    /// The devices (not this one) whose change this replica holds though the server named it a
    /// fork, each with the lowest such seq.
    func forkedChainsHeld(_ notices: [ForkNotice]) throws -> [DeviceID: UInt64] {
        let named = notices.compactMap { n in
            DeviceID(n.device).flatMap { d in ChangeID(hex: n.refused).map { (device: d, seq: n.seq, id: $0) } }
        }.filter { $0.device != replica.device }
        let held = try replica.store.held(named.map(\.id))
        var out: [DeviceID: UInt64] = [:]
        for n in named where held.contains(n.id) { out[n.device] = min(out[n.device] ?? .max, n.seq) }
        return out
    }

    /// Gives up this replica's version of `device`'s chain from `from` for the server's
    /// (`ReplicaStore.adoptChain`); from seq 1 when the two differ earlier too.
    func adopt(_ transport: SyncTransport, device: DeviceID, from: UInt64, serverVector: [String: UInt64]) async throws -> ReplicaStore.TakeBack {
        for start in from > 1 ? [from, 1] : [1] {
            let theirs = try await fetchChain(transport, device: device, from: start, serverVector: serverVector)
            do { return try replica.store.adoptChain(theirs: theirs) } catch let e as StoreError where e.code == .notFound && start > 1 {
                continue
            } catch let e as StoreError {
                throw SyncFailure(.failure, "device \(device)'s chain forked and the server's could not be taken: \(e.message)")
            } catch let e as CoreError {
                throw SyncFailure(.failure, "device \(device)'s chain forked and the server's could not be taken: \(e.message)")
            }
        }
        return ReplicaStore.TakeBack()
    }

    /// `device`'s changes as the server holds them, from seq `from` to its head, contiguous.
    func fetchChain(_ transport: SyncTransport, device: DeviceID, from: UInt64, serverVector: [String: UInt64]) async throws -> [SignedChange] {
        var target = serverVector[device.description] ?? 0
        var theirs: [SignedChange] = []
        // Every other device as the server holds it: only this device's chain is lacking.
        var vector = VersionVector()
        for (k, v) in serverVector { if let d = DeviceID(k) { vector.seqs[d] = v } }
        while from + UInt64(theirs.count) <= target {
            vector.seqs[device] = from - 1 + UInt64(theirs.count)
            let answer = try await transport.exchange(SyncRequest(vector: vector, changes: [], rosterDigest: try replica.store.meta("roster_digest")))
            target = max(target, answer.vector[device.description] ?? 0)
            let next = try answer.changes.map { try SignedChange(envelope: $0) }.filter { $0.change.device == device }
                .sorted { $0.change.seq < $1.change.seq }
            var took = 0
            for c in next where c.change.seq == from + UInt64(theirs.count) { theirs.append(c); took += 1 }
            if took == 0 { break }
        }
        return theirs
    }

    /// Each roster device's public key: the stored roster's, and those of `news`.
    func keys(adding news: [RosterEntry]) throws -> [DeviceID: [UInt8]] {
        var keys: [DeviceID: [UInt8]] = [:]
        for e in try replica.store.roster().sorted + news { keys[e.device] = e.publicKey }
        return keys
    }

    /// Decodes an answer's envelopes and checks their signatures on every core at once: on a
    /// first sync that is a fifth of the laptop's work, and applying them (the store's one
    /// writer) cannot start before. A change whose signature fails here is checked again, and
    /// refused, when it is applied.
    static func open(_ envelopes: [[UInt8]], keys: [DeviceID: [UInt8]]) async throws -> Opened {
        let parts = max(1, min(ProcessInfo.processInfo.activeProcessorCount, envelopes.count / 32))
        let size = (envelopes.count + parts - 1) / parts
        typealias Part = (index: Int, changes: [SignedChange], verified: [Bool], error: String?)
        let opened = await withTaskGroup(of: Part.self) { group in
            for p in 0..<parts {
                let slice = envelopes[min(envelopes.count, p * size)..<min(envelopes.count, (p + 1) * size)]
                group.addTask {
                    var changes: [SignedChange] = [], verified: [Bool] = []
                    for envelope in slice {
                        switch Result(catching: { () throws(CoreError) -> SignedChange in try SignedChange(envelope: envelope) }) {
                        case .success(let c):
                            changes.append(c)
                            verified.append(keys[c.change.device].map { key in (try? c.verify(publicKey: key)) != nil } ?? false)
                        case .failure(let e):
                            return (p, changes, verified, e.message)
                        }
                    }
                    return (p, changes, verified, nil)
                }
            }
            var all: [Part] = []
            for await part in group { all.append(part) }
            return all.sorted { $0.index < $1.index }
        }
        if let bad = opened.first(where: { $0.error != nil }), let message = bad.error {
            throw SyncFailure(.failure, "the server sent a malformed change: \(message)")
        }
        return (opened.flatMap(\.changes), opened.flatMap(\.verified))
    }
}

/// Syncs of one replica over a connection kept between them (`fieldsync sync --watch`, the
/// bench's resident laptops). A sync after the first skips the TCP and TLS handshakes: two round
/// trips on a field link, about 2 ms of CPU on loopback. A connection that failed is dropped and
/// the next attempt opens a new one.
public actor SyncSession {
    public let engine: SyncEngine
    /// How long the kept connection may stay idle before the client closes it (the server closes
    /// idle connections after ten minutes).
    let idleTimeout: Duration?
    var transport: SyncTransport?
    /// How much to upload at once: kept across retries and syncs, so a slow link is learned once,
    /// and its bytes in the replica (`meta.upload_bytes`) for the next process.
    var window = UploadWindow()
    /// What the server would not take by relay (`Relay`), as the replica keeps it (read at the
    /// first sync).
    var relay: Relay?
    /// The bytes the replica holds (nil until read at the first sync).
    var keptBytes: Int?
    /// One sync at a time: a second, interleaved at an await, would share the transport.
    var syncing = false

    public init(engine: SyncEngine, idleTimeout: Duration? = nil) {
        self.engine = engine
        self.idleTimeout = idleTimeout
    }

    /// One sync: exchanges until both sides are done. A bad link is retried (with a growing
    /// pause) until `deadline`; nothing acknowledged is lost by an interruption.
    public func sync(deadline: ContinuousClock.Instant, progress: @Sendable (SyncEngine.Summary) -> Void = { _ in }) async throws -> SyncEngine.Summary {
        guard !syncing else { throw SyncFailure(.busy, "this session is already syncing") }
        syncing = true
        defer { syncing = false }
        let replica = engine.replica
        guard let url = try replica.store.meta("server_url"), let caPEM = try replica.store.meta("ca_pem"),
              let keyHex = try replica.store.meta("server_key"), let serverKey = [UInt8](hex: keyHex) else {
            throw SyncFailure(.usage, "this replica is not enrolled: run `fieldsync enroll URL --token TOKEN --pin sha256:…` first")
        }
        var summary = SyncEngine.Summary()
        summary.server = url
        summary.conflictsBefore = try replica.store.conflictCount()
        var offset = Int64(try replica.store.meta("clock_offset") ?? "0") ?? 0
        var attempt = 0
        var relearned = false
        if keptBytes == nil {
            keptBytes = Int(try replica.store.meta(Self.uploadBytesKey) ?? "")
            window = UploadWindow(learnedBytes: keptBytes)
            keptBytes = window.bytes
        }
        // Also on the way out of a failed sync: the next process starts from what this one learned.
        defer { keepWindow() }
        while true {
            let transport = try self.transport ?? SyncTransport(baseURL: url, caPEM: caPEM, key: replica.key, offsetMillis: offset,
                                                                 serverKey: serverKey, idleTimeout: idleTimeout)
            self.transport = transport
            var failure: (any Error)?
            var window = self.window, relay = try self.relay ?? Relay(stored: replica.store.meta(Relay.metaKey))
            do { try await engine.exchangeUntilDone(transport, &summary, &offset, &window, &relay, progress: progress) } catch { failure = error }
            self.window = window
            self.relay = relay
            guard let failure else { break }
            self.transport = nil
            await transport.shutdown()
            guard let f = failure as? SyncFailure else { throw failure }
            // A bad link that cut off an upload: the next attempt sends half as much.
            if f.exit == .unreachable && f.uploadCut {
                self.window.linkFailed()
                keepWindow()
            }
            if f.exit == .unreachable && ContinuousClock.now < deadline {
                // A bad link: back off and retry until the deadline; nothing acknowledged is lost.
                attempt += 1
                let wait = Duration.milliseconds(min(8_000, 250 << min(attempt, 5)))
                if ContinuousClock.now + wait >= deadline { throw f }
                try await Task.sleep(for: wait)
            } else if f.problem == .signatureCreated && !relearned {
                // This laptop's clock moved since the offset was learned: learn it again, once.
                relearned = true
                offset = try await SyncEngine.serverOffset(url: url, caPEM: caPEM, key: replica.key, serverKey: serverKey)
            } else {
                throw f
            }
        }
        summary.conflictsAfter = try replica.store.conflictCount()
        return summary
    }

    static let uploadBytesKey = "upload_bytes"

    /// Writes the window's bytes to the replica when they changed. A hint, not data: if the
    /// write fails, the sync's own outcome is what to report.
    func keepWindow() {
        guard window.bytes != keptBytes else { return }
        do {
            try engine.replica.store.setMeta(Self.uploadBytesKey, String(window.bytes))
            keptBytes = window.bytes
        } catch {}
    }

    /// Closes the kept connection (after the sync in progress, if any, has returned).
    public func close() async {
        await transport?.shutdown()
        transport = nil
    }
}
