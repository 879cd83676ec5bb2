import Crypto
import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation
import GRDB

/// One scenario's figures: printed as one JSON object, and as rows of the table.
struct Result {
    var scenario: String
    var figures: [(String, Double, String)] = []   // name, value, unit
    var notes: [String] = []

    mutating func add(_ name: String, _ value: Double, _ unit: String) { figures.append((name, value, unit)) }

    var json: String {
        var o: [String: JSONValue] = ["scenario": .string(scenario)]
        for (n, v, _) in figures { o[n] = v.isFinite ? .double((v * 1000).rounded() / 1000) : .null }
        if !notes.isEmpty { o["notes"] = .array(notes.map { .string($0) }) }
        return JSONValue.object(o).canonicalString
    }
}

func median(_ xs: [Double]) -> Double { percentile(xs, 50) }
/// Nearest-rank percentile.
func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    let rank = Int((p / 100 * Double(s.count)).rounded(.up))
    return s[min(max(rank, 1), s.count) - 1]
}

/// Loads a server database before it serves: roster entries and changes, through the same
/// receive path (`Replicator`) the server's exchange uses.
func seedServer(_ path: String, roster: [RosterEntry], changes: [SignedChange]) throws {
    let store = try ReplicaStore.open(path: path, server: true)
    try store.upsertRoster(roster)
    for start in stride(from: 0, to: changes.count, by: 500) {
        let results = try store.receive(Array(changes[start..<min(start + 500, changes.count)]))
        if let bad = results.values.first(where: { if case .failure = $0 { true } else { false } }) {
            throw BenchFailure("seeding the server failed: \(bad)")
        }
    }
}

/// Reads the server's `/metrics` counter of sync body bytes, both directions summed.
func syncBodyBytes(_ server: ServerProcess) async throws -> Double {
    let t = try SyncTransport(baseURL: server.url, caPEM: server.caPEM, key: DeviceKey(), offsetMillis: 0, serverKey: nil)
    defer { Task { await t.shutdown() } }
    let (_, body) = try await t.send(method: .GET, path: "/metrics", body: [], sign: false)
    var total = 0.0
    for line in String(decoding: body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("fieldsync_sync_body_bytes_total{") {
        total += Double(line.split(separator: " ").last ?? "") ?? 0
    }
    return total
}

/// A laptop as the CLI makes one: `fieldsync init` and `fieldsync enroll` as processes.
func enrolledLaptop(_ server: ServerProcess, name: String) throws -> [String: String] {
    let home = NSTemporaryDirectory() + "fsbench-\(name)-\(UUID().uuidString)"
    let env = ["FIELDSYNC_HOME": home]
    let cli = try Child.binary("fieldsync")
    _ = try Child.run(cli, ["init", "--name", name, "--role", "field"], env: env)
    _ = try Child.run(cli, ["enroll", server.url, "--token", try server.invite(role: "field", name: name), "--pin", server.pin], env: env)
    return env
}

// MARK: - B1 first sync

func b1FirstSync(notes: Int, postgres: String? = nil) async throws -> Result {
    var authors = (0..<4).map { _ in ChainAuthor(key: DeviceKey()) }
    let changes = Workload.notes(notes, authors: &authors, opsPerChange: 100)
    let roster = authors.enumerated().map { RosterEntry(publicKey: $1.key.publicKey, name: "writer-\($0)", role: .field, enrolledAtMillis: 0) }
    let server = try ServerProcess(postgres: postgres) { try seedServer($0, roster: roster, changes: changes) }
    defer { server.stop() }
    let env = try enrolledLaptop(server, name: "new-laptop")
    defer { try? FileManager.default.removeItem(atPath: env["FIELDSYNC_HOME"]!) }

    let bytesBefore = try await syncBodyBytes(server)
    let run = try Child.run(try Child.binary("fieldsync"), ["sync", "--json"], env: env)
    let bytes = try await syncBodyBytes(server) - bytesBefore
    let summary = try JSONValue.parse(Array(run.out.utf8))
    let pulled = Int(summary["pulled"]?.intValue ?? 0)
    guard pulled == changes.count else { throw BenchFailure("B1: the laptop pulled \(pulled) changes, not \(changes.count)") }
    let writes = Double(notes * Workload.fieldsPerNote)
    var r = Result(scenario: postgres == nil ? "B1 first sync" : "B1 first sync (PostgreSQL)")
    r.add("field_writes", writes, "")
    r.add("changes", Double(changes.count), "")
    r.add("seconds", run.seconds, "s")
    r.add("field_writes_per_s", writes / run.seconds, "/s")
    r.add("wire_bytes_per_field_write", bytes / writes, "B")
    r.add("laptop_peak_rss_mb", run.peakRSSMB, "MB")
    r.add("server_peak_rss_mb", server.peakRSSMB, "MB")
    r.notes.append("`fieldsync sync` as a process over TLS on loopback, process start included; every change's signature verified and stored (WAL, synchronous=FULL); wire bytes are HTTP bodies of /v1/sync, both ways, before TLS")
    return r
}

// MARK: - B5 first upload

/// A laptop's first upload of imported notes, beside the download of the same notes to an empty
/// laptop, in one run: `fieldsync note add --json-file`, then `fieldsync sync` on each, as
/// processes against a real server on loopback.
func b5FirstUpload(notes: Int) async throws -> Result {
    let server = try ServerProcess { _ in }
    defer { server.stop() }
    let writer = try enrolledLaptop(server, name: "importer"), reader = try enrolledLaptop(server, name: "reader")
    defer { for env in [writer, reader] { try? FileManager.default.removeItem(atPath: env["FIELDSYNC_HOME"]!) } }
    let file = writer["FIELDSYNC_HOME"]! + "/notes.jsonl"
    try importedNotes(notes).write(toFile: file, atomically: true, encoding: .utf8)
    let cli = try Child.binary("fieldsync")
    let imported = try Child.run(cli, ["note", "add", "--json-file", file], env: writer)
    let up = try Child.run(cli, ["sync", "--json"], env: writer)
    let down = try Child.run(cli, ["sync", "--json"], env: reader)
    let pushed = try JSONValue.parse(Array(up.out.utf8))["pushed"]?.intValue ?? -1
    let pulled = try JSONValue.parse(Array(down.out.utf8))["pulled"]?.intValue ?? -2
    guard pushed == pulled, pushed > 0 else { throw BenchFailure("B5: \(pushed) changes up, \(pulled) down") }
    var r = Result(scenario: "B5 first upload")
    r.add("notes", Double(notes), "")
    r.add("changes", Double(pushed), "")
    r.add("import_seconds", imported.seconds, "s")
    r.add("upload_seconds", up.seconds, "s")
    r.add("download_seconds", down.seconds, "s")
    r.add("upload_over_download", up.seconds / down.seconds, "")
    r.add("server_peak_rss_mb", server.peakRSSMB, "MB")
    r.notes.append("notes shaped like ../shared/samples/notes.jsonl (clearance days, hazard areas, EOD spots), imported as `note add --json-file` makes them (changes of up to about 64 kB); each sync a process over TLS on loopback")
    return r
}

/// `count` notes as JSON Lines, three kinds in turn, each with its own ref and figures.
func importedNotes(_ count: Int) -> String {
    (0..<count).map { i in
        let day = String(format: "2025-%02d-%02d", 1 + i % 12, 1 + i % 28)
        switch i % 3 {
        case 0:
            return #"{"kind":"clearance_day","ref":"UA-KHA-CLR-\#(i)","org":"NPA","team":"MT-\#(i % 9)","info_date":"\#(day)","method":"manual","area_m2":\#(1000 + i % 700),"area_cleared_m2":\#(900 + i % 500),"depth_cm":\#(10 + i % 20),"devices":[{"category":"AP","model":"PMN-2","quantity":\#(1 + i % 4),"disposition":"destroyed_in_situ"}],"narrative":"Lane \#(i % 40) cleared to \#(10 + i % 20) cm; \#(1 + i % 4) PMN-2 destroyed in situ.","lang":"en","sensitivity":"internal"}"#
        case 1:
            return #"{"kind":"hazard_area","ref":"UA-KHA-HAZ-\#(i)","org":"NPA","team":"NTS-\#(i % 5)","info_date":"\#(day)","status":"confirmed","location":{"type":"Polygon","coordinates":[[[37.25,49.2],[37.252,49.2],[37.252,49.2012],[37.25,49.2012],[37.25,49.2]]]},"area_m2":\#(15000 + i % 9000),"narrative":"Field edge \#(i): villagers report items near the tree line.","lang":"en","tags":["agriculture","CHA"],"sensitivity":"restricted"}"#
        default:
            return #"{"kind":"eod_spot","ref":"UA-KHA-EOD-\#(i)","org":"NPA","team":"EOD-\#(i % 3)","info_date":"\#(day)","location":{"type":"Point","coordinates":[37.2611,49.1987]},"devices":[{"category":"UXO","model":"122mm rocket","quantity":1,"disposition":"removed"}],"narrative":"Call \#(i) from the village council; item moved to the demolition site.","lang":"en","sensitivity":"internal"}"#
        }
    }.joined(separator: "\n")
}

// MARK: - B2 small sync

func b2SmallSync(rounds: Int) async throws -> Result {
    let server = try ServerProcess { _ in }
    defer { server.stop() }
    func laptop(_ name: String) async throws -> Replica {
        let home = NSTemporaryDirectory() + "fsbench-\(name)-\(UUID().uuidString)"
        let r = try ClientHome(environment: ["FIELDSYNC_HOME": home]).initialise(name: name, role: .field)
        _ = try await SyncEngine(replica: r).enroll(url: server.url, token: try server.invite(role: "field", name: name), caFile: nil, pin: server.pin)
        return r
    }
    let a = try await laptop("laptop-a"), b = try await laptop("laptop-b")
    defer { for r in [a, b] { try? FileManager.default.removeItem(atPath: r.home.path) } }
    // A day's worth of notes on both, so the edit travels into a replica that holds something.
    let ids = try a.add((0..<200).map { n in try a.input(type: .note, kind: "observation", sets: Workload.sets(n)) }, type: .note)
    let deadline = { ContinuousClock.now + .seconds(60) }
    _ = try await SyncEngine(replica: a).sync(deadline: deadline())
    _ = try await SyncEngine(replica: b).sync(deadline: deadline())
    let target = ids[0]

    /// `rounds` edits of the target on A, each timed from A's sync to B's, checked on B.
    func measure(_ label: String, _ syncA: () async throws -> Void, _ syncB: () async throws -> Void) async throws -> [Double] {
        var times: [Double] = []
        for round in 0..<rounds {
            var edits = RecordEdits()
            edits.sets = [("narrative", "\(label) round \(round)")]
            try a.edit(target, type: .note, edits: edits)
            let start = ContinuousClock.now
            try await syncA()
            try await syncB()
            times.append((ContinuousClock.now - start).millis)
            guard try b.store.view(target)?.fields["narrative"]?.value == .string("\(label) round \(round)") else {
                throw BenchFailure("B2: \(label) round \(round)'s edit did not reach laptop B")
            }
        }
        return times
    }
    let times = try await measure("one-shot", { _ = try await SyncEngine(replica: a).sync(deadline: deadline()) },
                                  { _ = try await SyncEngine(replica: b).sync(deadline: deadline()) })
    // The same rounds with each laptop resident (`fieldsync sync --watch`): its connection is
    // kept between syncs, so a round has no handshake.
    let residentA = SyncSession(engine: SyncEngine(replica: a), idleTimeout: .seconds(300))
    let residentB = SyncSession(engine: SyncEngine(replica: b), idleTimeout: .seconds(300))
    _ = try await residentA.sync(deadline: deadline())
    _ = try await residentB.sync(deadline: deadline())
    let resident = try await measure("resident", { _ = try await residentA.sync(deadline: deadline()) },
                                     { _ = try await residentB.sync(deadline: deadline()) })
    await residentA.close()
    await residentB.close()
    // Where a small sync's time goes: a new TLS connection, then an exchange with nothing to carry.
    let serverKey = [UInt8](hex: try a.store.meta("server_key") ?? "") ?? []
    var firstPost: [Double] = [], warmPost: [Double] = []
    for _ in 0..<40 {
        let t = try SyncTransport(baseURL: server.url, caPEM: server.caPEM, key: a.key, offsetMillis: 0, serverKey: serverKey)
        let request = SyncRequest(vector: try a.store.vector(), changes: [])
        var start = ContinuousClock.now
        _ = try await t.exchange(request)
        firstPost.append((ContinuousClock.now - start).millis)
        start = ContinuousClock.now
        _ = try await t.exchange(request)
        warmPost.append((ContinuousClock.now - start).millis)
        await t.shutdown()
    }
    var r = Result(scenario: "B2 small sync")
    r.add("rounds", Double(rounds), "")
    r.add("p50_ms", median(times), "ms")
    r.add("p99_ms", percentile(times, 99), "ms")
    r.add("max_ms", times.max() ?? .nan, "ms")
    r.add("resident_p50_ms", median(resident), "ms")
    r.add("resident_p99_ms", percentile(resident, 99), "ms")
    r.add("empty_exchange_new_connection_ms", median(firstPost), "ms")
    r.add("empty_exchange_warm_connection_ms", median(warmPost), "ms")
    r.notes.append("one edit: A syncs, then B syncs, in this process through the CLI's sync engine; each sync opens its own TLS connection, as `fieldsync sync` does; resident_*: the same rounds with each laptop's connection kept between syncs, as `fieldsync sync --watch` keeps it (SyncSession)")
    return r
}

// MARK: - B3 depot load

/// A depot's laptops as load clients: each signs its requests, uploads its own signed changes
/// and pulls until the server has nothing more. They read only each change's header (device,
/// seq) to advance their vector, so the two cores go to the server, not to 50 local merges.
struct LoadClient: Sendable {
    let key: DeviceKey
    let changes: [SignedChange]

    struct Outcome: Sendable {
        var latencies: [Double] = []
        /// The same, split: requests that carried changes up, and pulls only.
        var uploadLatencies: [Double] = [], pullLatencies: [Double] = []
        var uploadedOps = 0, pulledOps = 0, refused = 0
    }

    func run(_ server: ServerProcess, url: String, serverKey: [UInt8]) async throws -> Outcome {
        let t = try SyncTransport(baseURL: url, caPEM: server.caPEM, key: key, offsetMillis: 0, serverKey: serverKey)
        defer { Task { await t.shutdown() } }
        var out = Outcome()
        var vector = VersionVector()
        var upload = changes
        var rosterDigest: String?
        var window = UploadWindow()
        while true {
            let batch = Array(upload.prefix(window.size))
            let start = ContinuousClock.now
            let answer = try await t.exchange(SyncRequest(vector: vector, changes: batch, rosterDigest: rosterDigest))
            // As the CLI: check a roster that came, and name it from now on.
            if let r = answer.roster { _ = try r.verified(serverKey: serverKey); rosterDigest = r.digest }
            let ms = (ContinuousClock.now - start).millis
            out.latencies.append(ms)
            if batch.isEmpty { out.pullLatencies.append(ms) } else { out.uploadLatencies.append(ms) }
            out.refused += answer.refused.count
            let accepted = Set(answer.accepted)
            out.uploadedOps += batch.filter { accepted.contains($0.id.hex) }.reduce(0) { $0 + $1.change.ops.count }
            // Under load the server takes part of a batch; the rest goes again, as the CLI does it.
            let handled = accepted.union(answer.refused.map(\.id))
            let taken = batch.prefix { handled.contains($0.id.hex) }.count
            upload.removeFirst(taken)
            window.update(sent: batch.count, handled: taken)
            for envelope in answer.changes {
                guard let (device, seq, ops) = Self.peek(envelope) else { throw BenchFailure("B3: a malformed change from the server") }
                vector.seqs[device] = max(vector[device], seq)
                out.pulledOps += ops
            }
            if !answer.more && upload.isEmpty { return out }
        }
    }

    /// Device, seq and op count from an envelope (`SignedChange.envelope`), without checking
    /// the rest: version, signature, salt flag (and seed), then the change's header.
    static func peek(_ b: [UInt8]) -> (DeviceID, UInt64, Int)? {
        guard b.count > 66 else { return nil }
        var i = 1 + 64
        i += b[i] == 1 ? 17 : 1
        func varint() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while i < b.count, shift < 64 { let x = b[i]; i += 1; v |= UInt64(x & 0x7f) << shift; if x < 0x80 { return v }; shift += 7 }
            return nil
        }
        i += 1   // change format version
        guard i + 16 <= b.count, let device = DeviceID(bytes: Array(b[i..<i + 16])) else { return nil }
        i += 16
        guard let seq = varint() else { return nil }
        i += 32 + 8 + 8   // prev, hlc, wall clock
        guard let records = varint(), records < 100_000 else { return nil }
        i += Int(records) * 16
        guard let ops = varint() else { return nil }
        return (device, seq, Int(ops))
    }
}

/// With `postgres`, two server processes on one database, the laptops split between them.
func b3DepotLoad(laptops: Int, changesEach: Int, postgres: String? = nil) async throws -> Result {
    var keys: [DeviceKey] = []
    var clients: [LoadClient] = []
    for _ in 0..<laptops {
        var author = ChainAuthor(key: DeviceKey())
        // 10 ops a change: one note of nine fields.
        let changes = (0..<changesEach).map { n -> SignedChange in
            var d = ChangeDraft()
            let id = RecordID.make(.note, by: author.key.deviceID)
            d.create(id, type: .note, kind: "observation")
            for (f, v) in Workload.fields(n).prefix(9) { d.set(f, to: v, onNew: id, type: .note) }
            return author.sign(d)
        }
        keys.append(author.key)
        clients.append(LoadClient(key: author.key, changes: changes))
    }
    let roster = keys.enumerated().map { RosterEntry(publicKey: $1.publicKey, name: "depot-\($0)", role: .field, enrolledAtMillis: 0) }
    let server = try ServerProcess(postgres: postgres, processes: postgres == nil ? 1 : 2) { try seedServer($0, roster: roster, changes: []) }
    defer { server.stop() }
    let serverKey = try await fetchServerKey(server)
    let urls = server.urls

    let start = ContinuousClock.now
    let outcomes = try await withThrowingTaskGroup(of: LoadClient.Outcome.self) { group in
        for (i, c) in clients.enumerated() { group.addTask { try await c.run(server, url: urls[i % urls.count], serverKey: serverKey) } }
        var all: [LoadClient.Outcome] = []
        for try await o in group { all.append(o) }
        return all
    }
    let seconds = (ContinuousClock.now - start).seconds
    let uploaded = outcomes.reduce(0) { $0 + $1.uploadedOps }, pulled = outcomes.reduce(0) { $0 + $1.pulledOps }
    let latencies = outcomes.flatMap(\.latencies)
    // Each laptop's first exchange also opens its TLS connection, all fifty within a few
    // milliseconds of each other: that burst is reported apart.
    let firsts = outcomes.compactMap(\.latencies.first), later = outcomes.flatMap { $0.latencies.dropFirst() }
    var r = Result(scenario: postgres == nil ? "B3 depot load" : "B3 depot load (PostgreSQL, 2 processes)")
    r.add("laptops", Double(laptops), "")
    r.add("requests", Double(latencies.count), "")
    r.add("seconds", seconds, "s")
    r.add("field_writes_per_s", Double(uploaded + pulled) / seconds, "/s")
    r.add("uploaded_field_writes_per_s", Double(uploaded) / seconds, "/s")
    r.add("p50_request_ms", median(latencies), "ms")
    r.add("p99_request_ms", percentile(latencies, 99), "ms")
    r.add("p50_first_request_ms", median(firsts), "ms")
    r.add("p99_request_after_first_ms", percentile(later, 99), "ms")
    let up = outcomes.flatMap(\.uploadLatencies), pulls = outcomes.flatMap(\.pullLatencies)
    r.add("upload_requests", Double(up.count), "")
    r.add("p50_upload_request_ms", median(up), "ms")
    r.add("p99_upload_request_ms", percentile(up, 99), "ms")
    r.add("p50_pull_request_ms", median(pulls), "ms")
    r.add("p99_pull_request_ms", percentile(pulls, 99), "ms")
    r.add("refusals", Double(outcomes.reduce(0) { $0 + $1.refused }), "")
    r.add("server_peak_rss_mb", server.peakRSSMB, "MB")
    r.notes.append("field writes through the server = ops accepted from uploads + ops delivered to pulls; the load clients sign every request and verify every answer's signature but only peek at pulled changes")
    return r
}

/// The server's signing key, learnt as `fieldsync enroll` learns it: by enrolling a device.
func fetchServerKey(_ server: ServerProcess) async throws -> [UInt8] {
    let home = NSTemporaryDirectory() + "fsbench-keyprobe-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: home) }
    let r = try ClientHome(environment: ["FIELDSYNC_HOME": home]).initialise(name: "key-probe", role: .field)
    _ = try await SyncEngine(replica: r).enroll(url: server.url, token: try server.invite(role: "field", name: "key-probe"), caFile: nil, pin: server.pin)
    guard let hex = try r.store.meta("server_key"), let key = [UInt8](hex: hex) else { throw BenchFailure("no server key after enrolment") }
    return key
}

// MARK: - B4 local work

func b4LocalWork(notesAdded: Int, listNotes: Int, listRuns: Int) throws -> Result {
    let home = NSTemporaryDirectory() + "fsbench-local-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: home) }
    let replica = try ClientHome(environment: ["FIELDSYNC_HOME": home]).initialise(name: "desk", role: .field)
    // `note add`, one note per command: one transaction, one signed change, fsync'd. Each
    // command's `--set` text is made before the clock starts, as a command line exists before
    // its command runs; parsing it is timed.
    let commandLines = (0..<notesAdded).map(Workload.sets)
    var start = ContinuousClock.now
    for sets in commandLines {
        try replica.add([try replica.input(type: .note, kind: "observation", sets: sets)], type: .note)
    }
    let addSeconds = (ContinuousClock.now - start).seconds
    // `note add --json-file`: the rest in one transaction.
    let rest = max(0, listNotes - notesAdded)
    let fileLines = (notesAdded..<notesAdded + rest).map(Workload.sets)
    start = ContinuousClock.now
    let inputs = try fileLines.map { try replica.input(type: .note, kind: "observation", sets: $0) }
    try replica.add(inputs, type: .note)
    let importSeconds = (ContinuousClock.now - start).seconds
    let cli = try Child.binary("fieldsync")
    var listTimes: [Double] = []
    var peak = 0.0
    for _ in 0..<listRuns {
        let run = try Child.run(cli, ["note", "list", "--json"], env: ["FIELDSYNC_HOME": home])
        listTimes.append(run.seconds * 1000)
        peak = max(peak, run.peakRSSMB)
    }
    var r = Result(scenario: "B4 local work")
    r.add("notes_added", Double(notesAdded), "")
    r.add("durable_notes_per_s", Double(notesAdded) / addSeconds, "/s")
    r.add("import_notes", Double(rest), "")
    r.add("import_notes_per_s", Double(rest) / importSeconds, "/s")
    r.add("list_notes", Double(notesAdded + rest), "")
    r.add("note_list_json_ms", median(listTimes), "ms")
    r.add("note_list_peak_rss_mb", peak, "MB")
    r.notes.append("notes added through the code path of `fieldsync note add` (one transaction and one signed change each, synchronous=FULL); the import through that of `note add --json-file`; `note list --json` run as a process")
    return r
}

// MARK: - Limits

/// What this machine can do at best: raw SQLite inserts of the same 100,000 rows in one
/// transaction with the replica's durability settings, and Ed25519 verifications.
func limits(rows: Int) throws -> Result {
    let dir = NSTemporaryDirectory() + "fsbench-sqlite-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var config = Configuration()
    config.prepareDatabase { db in
        try db.execute(sql: "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON")
    }
    let db = try DatabaseQueue(path: dir + "/raw.sqlite", configuration: config)
    guard try db.read({ try Int.fetchOne($0, sql: "PRAGMA synchronous") }) == 2 else { throw BenchFailure("the raw SQLite limit is not synchronous=FULL") }
    try db.write { db in
        try db.execute(sql: "CREATE TABLE ops (change BLOB NOT NULL, idx INTEGER NOT NULL, record BLOB NOT NULL, field TEXT NOT NULL, value BLOB, PRIMARY KEY (change, idx))")
    }
    var rows_: [(Data, Int, Data, String, Data)] = []
    rows_.reserveCapacity(rows)
    for n in 0..<rows {
        let change = Data(SHA256.hash(data: withUnsafeBytes(of: n / 100) { Array($0) }))
        rows_.append((change, n % 100, Data((0..<16).map { UInt8(truncatingIfNeeded: n >> ($0 % 4)) }), "narrative",
                      Data(Workload.fields(n)[n % 10].1.canonicalBytes)))
    }
    let start = ContinuousClock.now
    try db.write { db in
        let stmt = try db.makeStatement(sql: "INSERT INTO ops VALUES (?, ?, ?, ?, ?)")
        for r in rows_ { try stmt.execute(arguments: [r.0, r.1, r.2, r.3, r.4]) }
    }
    let sqliteSeconds = (ContinuousClock.now - start).seconds
    // Durable commits: one small transaction each, as one `note add` is.
    let commits = 300
    let cStart = ContinuousClock.now
    for r in rows_.prefix(commits) {
        try db.write { db in try db.execute(sql: "INSERT INTO ops VALUES (?, ?, ?, ?, ?)", arguments: [Data(r.0.reversed()), r.1, r.2, r.3, r.4]) }
    }
    let commitSeconds = (ContinuousClock.now - cStart).seconds

    let key = Curve25519.Signing.PrivateKey()
    let message = [UInt8](repeating: 7, count: 1200)
    let signature = try key.signature(for: message)
    let verifications = 2000
    let vStart = ContinuousClock.now
    var ok = 0
    for _ in 0..<verifications where key.publicKey.isValidSignature(signature, for: message) { ok += 1 }
    let vSeconds = (ContinuousClock.now - vStart).seconds
    guard ok == verifications else { throw BenchFailure("a good signature failed to verify") }

    var r = Result(scenario: "limits")
    r.add("sqlite_rows_per_s", Double(rows) / sqliteSeconds, "/s")
    r.add("sqlite_seconds", sqliteSeconds, "s")
    r.add("sqlite_durable_commits_per_s", Double(commits) / commitSeconds, "/s")
    r.add("ed25519_verifications_per_s", Double(verifications) / vSeconds, "/s")
    r.notes.append("raw SQLite: \(rows) rows of (change, index, record, field, value) in one transaction, WAL, synchronous=FULL, secure_delete; Ed25519: swift-crypto, a 1.2 kB message")
    return r
}

