@testable import FieldSyncClient
@testable import FieldSyncCore
import Foundation

/// Seeds made by the code itself (`fieldsync-fuzz write-seeds`): real changes, envelopes, sync
/// bodies, signature headers and requests, from the sample notes and contacts in the corpus
/// (copies of /work/shared/samples). Files named `seed-*` are rewritten; others are kept.
enum FuzzSeeds {
    /// Fixed keys, so that the server target's enrolled devices are the seeds' authors.
    static let fieldKey = try! DeviceKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32))
    static let coordinatorKey = try! DeviceKey(rawRepresentation: [UInt8](repeating: 0x22, count: 32))

    static func write(to dir: String) throws -> Int {
        var seeds: [(target: String, name: String, bytes: [UInt8])] = []
        func add(_ target: String, _ name: String, _ bytes: [UInt8]) { seeds.append((target, name, bytes)) }
        func sample(_ target: String, _ name: String) throws -> String {
            guard let d = FileManager.default.contents(atPath: "\(dir)/\(target)/\(name)"), let s = String(data: d, encoding: .utf8) else {
                throw FuzzSeedError("cannot read \(dir)/\(target)/\(name)")
            }
            return s
        }
        let replica = FuzzReplica.shared.replica
        let now = UInt64(1_765_000_000_000)
        let roster = Roster([fieldKey, coordinatorKey].enumerated().map { i, k in
            RosterEntry(publicKey: k.publicKey, name: i == 0 ? "field" : "coordinator", role: i == 0 ? .field : .coordinator, enrolledAtMillis: now)
        })
        var field = MemoryReplica(roster: roster)
        var coordinator = MemoryReplica(roster: roster)
        var changes: [SignedChange] = []

        // Notes from the sample, one change each, by the field device.
        let notesText = try sample("jsonl", "sample-notes.jsonl")
        var noteIDs: [RecordID] = []
        for (i, line) in notesText.split(separator: "\n").enumerated() {
            guard case .object(let o) = try JSONValue.parse(String(line)) else { continue }
            let input = try replica.input(type: .note, object: o, where: "sample line \(i + 1)")
            let id = RecordID.make(.note, by: fieldKey.deviceID, unixMillis: now)
            var d = ChangeDraft()
            d.create(id, type: .note, kind: input.kind)
            for (f, v) in input.registers { d.set(f, to: v, onNew: id, type: .note) }
            for (f, v) in input.elements { d.add(f, v, record: id, type: .note) }
            changes.append(try field.commit(d, key: fieldKey, wallMillis: now + UInt64(i)))
            noteIDs.append(id)
        }
        // Contacts from the sample vCard, by the coordinator.
        let cards = VCard.parse(try sample("vcard", "sample-contacts.vcf"), file: "contacts.vcf", defaultCountryCode: "46")
        let (contactInputs, _) = try ContactImport.inputs(cards, replica: replica, file: "contacts.vcf", skipInvalid: true)
        var contactIDs: [RecordID] = []
        for input in contactInputs {
            let id = RecordID.make(.contact, by: coordinatorKey.deviceID, unixMillis: now)
            var d = ChangeDraft()
            d.create(id, type: .contact, kind: input.kind)
            for (f, v) in input.registers { d.set(f, to: v, onNew: id, type: .contact) }
            for (f, v) in input.elements { d.add(f, v, record: id, type: .contact) }
            changes.append(try coordinator.commit(d, key: coordinatorKey, wallMillis: now + 10))
            contactIDs.append(id)
        }
        // The coordinator learns the notes, then edits, reviews and deletes; erases a contact.
        for c in changes where c.change.device == fieldKey.deviceID { _ = try Replicator.receive(c, into: &coordinator, wallMillis: now + 15) }
        if let id = noteIDs.first, let record = coordinator.records[id] {
            var d = ChangeDraft()
            d.set("status", to: "cleared", on: record, type: .note)
            d.review("approved", comment: "checked on site", on: record)
            changes.append(try coordinator.commit(d, key: coordinatorKey, wallMillis: now + 20))
        }
        if noteIDs.count > 1, let record = coordinator.records[noteIDs[1]] {
            var d = ChangeDraft()
            d.delete(record, type: .note)
            changes.append(try coordinator.commit(d, key: coordinatorKey, wallMillis: now + 30))
        }
        if let id = contactIDs.first {
            var d = ChangeDraft()
            d.erase(id)
            changes.append(try coordinator.commit(d, key: coordinatorKey, wallMillis: now + 40))
        }

        for (i, c) in changes.enumerated() {
            add("change", "seed-change-\(i)", c.bytes)
            add("envelope", "seed-envelope-\(i)", c.envelope)
            for value in c.values.values.prefix(3) { add("canonical", "seed-value-\(i)-\(seeds.count)", value.canonical) }
        }
        for (i, op) in (changes.first?.change.ops ?? []).prefix(3).enumerated() { add("change", "seed-op-\(i)", ChangeCodec.encodeOp(op)) }
        if let c = changes.first {
            // Salts written out rather than derived from a seed; every value erased.
            let values = c.values.mapValues { ($0.salt, $0.canonical) }
            add("envelope", "seed-envelope-salts", SignedChange.envelope(change: c.change, signature: c.signature, seed: nil, values: values))
            add("envelope", "seed-envelope-erased", SignedChange.envelope(change: c.change, signature: c.signature, seed: nil, values: [:]))
        }

        // Sync bodies, both ways, and the other JSON that crosses the network.
        let fieldChanges = changes.filter { $0.change.device == fieldKey.deviceID }
        let request = try SyncRequest(vector: VersionVector(), changes: fieldChanges, rosterDigest: "abc").body()
        add("syncbody", "seed-request", request)
        add("syncbody", "seed-request-empty", try SyncRequest(vector: coordinator.vector, changes: []).body())
        let signedRoster = SignedRoster.sign(roster, key: coordinatorKey)
        let response = SyncResponse(accepted: fieldChanges.map(\.id.hex), refused: [ChangeRefusal(id: "#0", code: "malformed", reason: "no")],
                                    changes: changes.map(\.envelope), vector: ["a": 1], more: true, serverTime: now, roster: signedRoster)
        add("syncbody", "seed-response", try response.body())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let enroll = EnrollRequest(token: "invite-token", publicKey: fieldKey.publicKey, name: "field")
        add("syncbody", "seed-enroll-request", Array(try encoder.encode(enroll)))
        add("syncbody", "seed-problem", Array(try encoder.encode(Problem(status: 401, title: "Unauthorized", detail: "no"))))
        add("syncbody", "seed-roster", Array(try encoder.encode(signedRoster)))

        // JSON as people give it.
        for (i, line) in notesText.split(separator: "\n").enumerated() { add("plainjson", "seed-note-\(i)", Array(line.utf8)) }
        add("plainjson", "seed-escapes", Array(#"{"a":"\u00e9\n\"x\"","b":[1.5,-2,3e2,true,null],"c":{}}"#.utf8))
        add("canonical", "seed-mixed", JSONValue.object(["a": .array([.int(-3), .double(0.25), .bool(true), .null]), "é": "x\u{1}"]).canonicalBytes)

        // Signature headers as a laptop writes them.
        let created = Int64(now / 1000)
        for (i, expires) in [Int64?.some(created + 300), nil].enumerated() {
            let params = HTTPSignature.Parameters(components: HTTPSignature.requestComponents, created: created, expires: expires,
                                                  nonce: "n0nce-\(i)", keyid: fieldKey.deviceID.description)
            let (input, sig) = HTTPSignature.sign(values: ["POST", "https://localhost/v1/sync", "sha-256=:x:", SyncProtocol.syncType], parameters: params, key: fieldKey)
            add("httpsig", "seed-signed-\(i)", Array("\(input)\n\(sig)".utf8))
        }
        add("httpsig", "seed-rfc9421-order",
            Array(#"sig1=("@method" "@target-uri" "content-digest" "content-type");created=1618884473;keyid="test-key-ed25519";alg="ed25519";expires=1618884773;nonce="b3k2pp5k7z"\#nsig1=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"#.utf8))

        // Contacts written by our own exporter.
        let parsed = cards.compactMap { try? $0.get() }
        add("vcard", "seed-written-vcard4", Array(VCardWriter.vcard4(parsed, uids: contactIDs.map { "urn:uuid:\($0)" }).utf8))

        // JSON Lines in our export's shape, GeoJSON, and an array.
        if let first = notesText.split(separator: "\n").first, case .object(let o) = try JSONValue.parse(String(first)) {
            var fields = o
            fields["kind"] = nil
            let exported = JSONValue.object(["id": .string(noteIDs[0].description), "type": "note", "kind": o["kind"] ?? .null, "fields": .object(fields)])
            add("jsonl", "seed-export", exported.canonicalBytes + [0x0A])
            var props = o
            let geometry = props.removeValue(forKey: "location") ?? .null
            let feature = JSONValue.object(["type": "Feature", "geometry": geometry, "properties": .object(props)])
            add("jsonl", "seed-geojson", JSONValue.object(["type": "FeatureCollection", "features": .array([feature])]).canonicalBytes)
            add("jsonl", "seed-array", JSONValue.array([.object(o)]).canonicalBytes)
        }

        // Requests to the server.
        add("server", "seed-sync-upload", FuzzRequest(mode: "s", method: .post, path: "/v1/sync", body: request).bytes)
        add("server", "seed-sync-empty", FuzzRequest(mode: "c", method: .post, path: "/v1/sync",
                                                     body: try SyncRequest(vector: VersionVector(), changes: []).body()).bytes)
        add("server", "seed-roster", FuzzRequest(mode: "s", method: .get, path: "/v1/roster").bytes)
        add("server", "seed-healthz", FuzzRequest(mode: "-", method: .get, path: "/healthz").bytes)
        add("server", "seed-enroll", FuzzRequest(mode: "s", method: .post, path: "/v1/enroll", body: Array(try encoder.encode(enroll))).bytes)
        add("server", "seed-unsigned", FuzzRequest(mode: "-", method: .post, path: "/v1/sync",
                                                   headers: [("Content-Type", SyncProtocol.syncType), ("Content-Digest", "sha-256=:AA==:"),
                                                             ("Signature-Input", #"sig1=("@method");created=1;keyid="x""#), ("Signature", "sig1=:AA==:")],
                                                   body: request).bytes)

        let fm = FileManager.default
        for t in Set(seeds.map(\.target)) {
            let folder = "\(dir)/\(t)"
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for old in try fm.contentsOfDirectory(atPath: folder) where old.hasPrefix("seed-") { try fm.removeItem(atPath: "\(folder)/\(old)") }
        }
        for s in seeds {
            guard fm.createFile(atPath: "\(dir)/\(s.target)/\(s.name)", contents: Data(s.bytes)) else { throw FuzzSeedError("cannot write \(s.name)") }
        }
        return seeds.count
    }
}

struct FuzzSeedError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
