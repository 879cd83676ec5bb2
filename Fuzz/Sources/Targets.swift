import FieldSyncBodyCoding
@testable import FieldSyncClient
@testable import FieldSyncCore
import FieldSyncStore
import Foundation

/// A function of bytes from outside, and what it checks beyond "no crash".
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    let run: @Sendable ([UInt8]) -> Void
}

/// A property broken: stops the process like a crash, so libFuzzer keeps the input.
func require(_ ok: Bool, _ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !ok { fatalError("property broken: \(what())", file: file, line: line) }
}

enum FuzzTargets {
    static let all: [FuzzTarget] = [
        FuzzTarget(name: "change", summary: "ChangeCodec.decode / decodeOp; re-encodes to the same bytes; Policy.judge", run: change),
        FuzzTarget(name: "envelope", summary: "SignedChange(envelope:) (wire form); re-encodes; agrees with the signed form", run: envelope),
        FuzzTarget(name: "syncbody", summary: "SyncBody.split, SyncRequest/SyncResponse(body:) and their JSON headers, enrolment JSON", run: syncBody),
        FuzzTarget(name: "canonical", summary: "JSONValue.parseCanonical; canonical bytes again; the general parser agrees", run: canonicalJSON),
        FuzzTarget(name: "plainjson", summary: "JSONValue.parse; PlainJSONParser agrees with JSONDecoder; canonical form parses back", run: plainJSON),
        FuzzTarget(name: "httpsig", summary: "HTTPSignature.parse(input:signature:) (line 1: Signature-Input, rest: Signature)", run: httpSignature),
        FuzzTarget(name: "vcard", summary: "VCard.parse, ContactImport.inputs; written vCard 4 reads back the same cards", run: vcard),
        FuzzTarget(name: "pressrelease", summary: "PressRelease.parseContacts, ContactImport.inputs", run: pressRelease),
        FuzzTarget(name: "jsonl", summary: "`--json-file` reading (JSON, JSON Lines, GeoJSON) and Replica.input", run: jsonLines),
        FuzzTarget(name: "gzip", summary: "BodyCoding.decompress under a limit; what it returns compresses and reads back the same", run: gzip),
        FuzzTarget(name: "server", summary: "the server's router in-process: method, path, headers, body (FuzzRequest)", run: ServerHarness.run),
    ]

    static var names: [String] { all.map(\.name) }
    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// The target named by FUZZ_TARGET.
    static let selected: FuzzTarget? = ProcessInfo.processInfo.environment["FUZZ_TARGET"].flatMap(named)

    /// Starts what a target needs before its first input (so that setup is not counted as the
    /// first input's work, and a libFuzzer run starts from a warm state).
    static func prepare(_ target: FuzzTarget) {
        switch target.name {
        case "vcard", "pressrelease", "jsonl": _ = FuzzReplica.shared
        case "server": ServerHarness.start()
        default: break
        }
    }

    // MARK: Binary forms

    static func change(_ b: [UInt8]) {
        if let c = try? ChangeCodec.decode(b) {
            require(ChangeCodec.encode(c) == b, "a decoded change encodes to other bytes")
            _ = c.opsByRecord
            for role in Role.allCases { _ = Policy.judge(c, role: role, schema: .standard) }
        }
        if let op = try? ChangeCodec.decodeOp(b) {
            require(ChangeCodec.encodeOp(op) == b, "a decoded op encodes to other bytes")
        }
    }

    static func envelope(_ b: [UInt8]) {
        guard let s = try? SignedChange(envelope: b) else { return }
        require(s.envelope == b, "a decoded envelope encodes to other bytes")
        // The signed bytes the wire form stands for read back as the same change with the same values.
        let signed = try? SignedChange(bytes: s.bytes, signature: s.signature, values: s.values, seed: s.seed)
        require(signed != nil, "the signed form of a decoded envelope is refused")
        require(signed?.change == s.change && signed?.values == s.values, "the signed form reads as another change")
        require((try? s.verify(publicKey: FuzzSeeds.fieldKey.publicKey)) == nil || s.change.device == FuzzSeeds.fieldKey.deviceID,
                "a signature verified for another device's key")
        for role in Role.allCases { _ = Policy.judge(s.change, role: role, schema: .standard) }
    }

    static func syncBody(_ b: [UInt8]) {
        if let (head, changes) = try? SyncBody.split(b) {
            var w = ByteWriter()
            w.u8(SyncBody.version)
            w.blob(head)
            for c in changes { w.blob(c) }
            require(w.bytes == b, "a split sync body frames to other bytes")
        }
        // The header's own reader decides only what JSONDecoder decides the same way.
        if let (head, _) = try? SyncBody.split(b), let fast = SyncHeaderJSON.request(head) {
            let slow = try? JSONDecoder().decode(SyncRequest.self, from: Data(head))
            require(slow?.vector == fast.vector && slow?.rosterDigest == fast.rosterDigest, "the sync header's reader and JSONDecoder disagree")
        }
        if let req = try? SyncRequest(body: b) {
            _ = try? req.decodedVector()
            // What the server does next (`SyncServer.sync`).
            for e in req.changes.prefix(SyncProtocol.maxBatch) { _ = try? SignedChange(envelope: e) }
            let again = (try? req.body()).flatMap { try? SyncRequest(body: $0) }
            require(again?.vector == req.vector && again?.changes == req.changes && again?.rosterDigest == req.rosterDigest,
                    "a sync request does not survive encoding again")
        }
        if let resp = try? SyncResponse(body: b) {
            if let fast = SyncHeaderJSON.response(resp) {
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                require(fast == (try? enc.encode(resp)).map { Array($0) }, "the sync header's writer and JSONEncoder disagree")
            }
            // What the laptop does next with an answer.
            _ = try? resp.roster?.verified(serverKey: FuzzSeeds.fieldKey.publicKey)
            for e in resp.changes.prefix(SyncProtocol.maxBatch) { _ = try? SignedChange(envelope: e) }
            let again = (try? resp.body()).flatMap { try? SyncResponse(body: $0) }
            require(again?.accepted == resp.accepted && again?.refused == resp.refused && again?.changes == resp.changes
                    && again?.vector == resp.vector && again?.roster == resp.roster, "a sync response does not survive encoding again")
        }
        // The other bodies that cross the network as JSON.
        let data = Data(b)
        _ = try? JSONDecoder().decode(EnrollRequest.self, from: data)
        _ = try? JSONDecoder().decode(EnrollResponse.self, from: data)
        _ = try? JSONDecoder().decode(Problem.self, from: data)
        if let roster = try? JSONDecoder().decode(SignedRoster.self, from: data) { _ = try? roster.verified(serverKey: FuzzSeeds.fieldKey.publicKey) }
    }

    // MARK: JSON

    static func canonicalJSON(_ b: [UInt8]) {
        guard let v = try? JSONValue.parseCanonical(b) else { return }
        require(v.canonicalBytes == b, "a canonical value has other canonical bytes")
        require(v.normalized() == v, "a canonical value is not normalised")
        // Canonical JSON is JSON: the general reader finds the same value in it.
        let general = try? JSONValue.parse(b)
        require(general == v, "JSONValue.parse reads canonical \(String(decoding: b.prefix(200), as: UTF8.self)) as \(String(describing: general))")
    }

    static func plainJSON(_ b: [UInt8]) {
        if let fast = PlainJSONParser.parse(b) {
            let slow = try? JSONValue.parseWithFoundation(b)
            require(slow == fast, "PlainJSONParser reads \(fast), JSONDecoder \(String(describing: slow))")
        }
        guard let v = try? JSONValue.parse(b) else { return }
        // Every value a person can give has a canonical form, which reads back as that value.
        if depth(v) < CanonicalParser.maxDepth {
            let c = v.canonicalBytes
            let back = try? JSONValue.parseCanonical(c)
            require(back == v, "the canonical bytes \(String(decoding: c.prefix(200), as: UTF8.self)) read back as \(String(describing: back))")
        }
        // And the schema's checks of a value.
        _ = try? RecordSchema.standard.validate(v, field: "location", type: .note, kind: "hazard_area")
    }

    static func depth(_ v: JSONValue) -> Int {
        switch v {
        case .array(let a): return 1 + (a.map(depth).max() ?? 0)
        case .object(let o): return 1 + (o.values.map(depth).max() ?? 0)
        default: return 0
        }
    }

    // MARK: Content coding

    static func gzip(_ b: [UInt8]) {
        // The limit as the server's, scaled down: past it is refused, never returned.
        let limit = 1 << 20
        guard let plain = try? BodyCoding.decompress(b, limit: limit) else { return }
        require(plain.count <= limit, "\(plain.count) bytes returned past the limit")
        let again = try? BodyCoding.decompress(BodyCoding.compress(plain), limit: limit)
        require(again == plain, "\(plain.count) bytes do not survive compressing again")
    }

    // MARK: HTTP signatures

    static func httpSignature(_ b: [UInt8]) {
        let text = String(decoding: b, as: UTF8.self)
        let parts = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        let input = String(parts.first ?? ""), signature = parts.count > 1 ? String(parts[1]) : ""
        _ = try? HTTPSignature.parse(input: input, signature: signature)
    }

    // MARK: Contacts and notes from files

    static func text(_ b: [UInt8]) -> String {
        // As `ContactImport.read`: UTF-8, a leading BOM dropped. Other bytes are decoded leniently
        // rather than thrown away, so that the parsers see them too.
        var t = String(data: Data(b), encoding: .utf8) ?? String(decoding: b, as: UTF8.self)
        if t.hasPrefix("\u{FEFF}") { t.removeFirst() }
        return t
    }

    static func vcard(_ b: [UInt8]) {
        let results = VCard.parse(text(b), file: "fuzz.vcf", defaultCountryCode: "46")
        _ = try? ContactImport.inputs(results, replica: FuzzReplica.shared.replica, file: "fuzz.vcf", skipInvalid: true)
        // A card read is written as vCard 4 on export; that text reads back as the same card.
        let cards = results.compactMap { try? $0.get() }
        guard !cards.isEmpty else { return }
        let written = VCardWriter.vcard4(cards, uids: cards.indices.map { "urn:uuid:00000000-0000-4000-8000-\(String(format: "%012d", $0))" })
        let again = VCard.parse(written, file: "export.vcf", defaultCountryCode: "46").map { try? $0.get() }
        require(again.count == cards.count, "\(cards.count) cards written as \(again.count)")
        for (a, c) in zip(again, cards) {
            require(a?.fields == c.fields && a?.sets == c.sets,
                    "card at line \(c.line) reads back as \(String(describing: a)), was \(c)\nwritten:\n\(written)")
        }
    }

    static func pressRelease(_ b: [UInt8]) {
        let results = PressRelease.parseContacts(text(b), file: "fuzz.txt", defaultCountryCode: "46")
        _ = try? ContactImport.inputs(results, replica: FuzzReplica.shared.replica, file: "fuzz.txt", skipInvalid: true)
    }

    /// `fieldsync note add --json-file` / `contact add --json-file`: the reading of
    /// `RecordCommands.readJSONObjects` and `add` (in the `fieldsync` executable, which cannot
    /// be imported: kept in step by hand), then `Replica.input`, which checks every value.
    static func jsonLines(_ b: [UInt8]) {
        guard let text = String(data: Data(b), encoding: .utf8) else { return }
        var objects: [JSONValue] = []
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("[") || (trimmed.hasPrefix("{") && !trimmed.contains("\n")) {
            guard let v = try? JSONValue.parse(trimmed) else { return }
            if case .array(let items) = v { objects = items } else { objects = [v] }
        } else {
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                let l = line.trimmingCharacters(in: .whitespaces)
                guard !l.isEmpty else { continue }
                guard let v = try? JSONValue.parse(l) else { return }
                objects.append(v)
            }
        }
        let replica = FuzzReplica.shared.replica
        for type in [RecordType.note, .contact] {
            for v in objects {
                guard case .object(let o) = v else { continue }
                if o["type"] == "Feature", case .object(var props)? = o["properties"] {
                    props["location"] = o["geometry"]; props["id"] = o["id"]
                    _ = try? replica.input(type: type, object: props, where: "fuzz")
                } else if o["type"] == "FeatureCollection", case .array(let fs)? = o["features"] {
                    for f in fs {
                        guard case .object(var props)? = f["properties"] else { continue }
                        props["location"] = f["geometry"]; props["id"] = f["id"]
                        _ = try? replica.input(type: type, object: props, where: "fuzz")
                    }
                } else {
                    _ = try? replica.input(type: type, object: o, where: "fuzz")
                }
            }
        }
    }
}

/// A coordinator's replica in a temporary folder, for the importers' schema checks.
final class FuzzReplica: Sendable {
    static let shared = FuzzReplica()
    let replica: Replica

    init() {
        let dir = NSTemporaryDirectory() + "fieldsync-fuzz-" + UUID().uuidString
        do { replica = try ClientHome(environment: ["FIELDSYNC_HOME": dir]).initialise(name: "fuzz", role: .coordinator) } catch {
            fatalError("cannot make a replica in \(dir): \(error)")
        }
    }
}
