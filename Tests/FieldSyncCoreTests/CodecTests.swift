import Testing
@testable import FieldSyncCore

@Suite struct CodecTests {
    let key = DeviceKey()

    func sample() -> SignedChange {
        var d = ChangeDraft()
        let id = RecordID.make(.note, by: key.deviceID)
        d.create(id, type: .note, kind: "clearance_day")
        d.set("ref", to: "UA-KHA-CLR-0042", onNew: id, type: .note)
        d.set("depth_cm", to: .int(13), onNew: id, type: .note)
        d.add("tags", "agriculture", record: id, type: .note)
        let c = Change(device: key.deviceID, seq: 1, prev: .zero, hlc: HLC(millis: baseMillis, counter: 3), wallMillis: baseMillis, ops: d.ops)
        return SignedChange.author(c, values: d.values, key: key)
    }

    @Test func changeRoundTripsByteForByte() throws {
        let c = sample()
        let decoded = try ChangeCodec.decode(c.bytes)
        #expect(decoded == c.change)
        #expect(ChangeCodec.encode(decoded) == c.bytes)
        let again = try SignedChange(envelope: c.envelope)
        #expect(again.bytes == c.bytes && again.signature == c.signature && again.values == c.values && again.id == c.id)
        try again.verify(publicKey: key.publicKey)
    }

    @Test func trailingBytesAreRefused() {
        let c = sample()
        #expect(throws: CoreError(.trailingBytes, "")) { _ = try ChangeCodec.decode(c.bytes + [0]) }
        #expect(throws: CoreError(.trailingBytes, "")) { _ = try SignedChange(envelope: c.envelope + [0]) }
    }

    @Test func unknownVersionIsRefused() {
        var b = sample().bytes
        b[0] = 1
        #expect(throws: CoreError(.unknownVersion, "")) { _ = try ChangeCodec.decode(b) }
        var e = sample().envelope
        e[0] = 9
        #expect(throws: CoreError(.unknownVersion, "")) { _ = try SignedChange(envelope: e) }
    }

    @Test func oversizeFieldsAreRefused() {
        let c = sample()
        // Op count claims 1001 (varint 0xE9 0x07) in place of 4 (after the one-record table).
        let opCountAt = 1 + 16 + 1 + 32 + 8 + 8 + 1 + 16
        var b = c.bytes
        #expect(b[opCountAt] == 4)
        b.replaceSubrange(opCountAt...opCountAt, with: [0xE9, 0x07])
        #expect(throws: CoreError(.oversize, "")) { _ = try ChangeCodec.decode(b) }
        // A field name longer than 64 bytes.
        var long = c.change
        long.ops[1].field = String(repeating: "x", count: 65)
        #expect(throws: CoreError(.oversize, "")) { _ = try ChangeCodec.decode(ChangeCodec.encode(long)) }
        // A change larger than the limit.
        #expect(throws: CoreError(.oversize, "")) { _ = try ChangeCodec.decode([UInt8](repeating: 1, count: ChangeCodec.maxChangeBytes + 1)) }
    }

    /// Record ids are listed once, in the order ops first use them; anything else is refused.
    @Test func recordTableIsCanonical() throws {
        let c = sample()
        let tableAt = 1 + 16 + 1 + 32 + 8 + 8
        #expect(c.bytes[tableAt] == 1, "four ops on one record list it once")
        // A second record listed but never used.
        var unused = c.bytes
        unused[tableAt] = 2
        unused.insert(contentsOf: [UInt8](repeating: 7, count: 16), at: tableAt + 17)
        #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(unused) }
        // An op naming a record index beyond the table.
        let firstIndexAt = tableAt + 17 + 1 + 2   // op count, then action and type of op 0
        var beyond = c.bytes
        #expect(beyond[firstIndexAt] == 0)
        beyond[firstIndexAt] = 1
        #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(beyond) }
        // Two records used in reverse order of listing.
        let a = RecordID.make(.note, by: key.deviceID), b = RecordID.make(.note, by: key.deviceID)
        let two = Change(device: key.deviceID, seq: 1, prev: .zero, hlc: .zero, wallMillis: 0,
                         ops: [Op(action: .create, recordType: .note, record: a, kind: "survey"), Op(action: .create, recordType: .note, record: b, kind: "survey")])
        var swapped = ChangeCodec.encode(two)
        let i0 = tableAt + 33 + 1 + 2, i1 = i0 + 1 + "survey".utf8.count + 1 + 2
        #expect(swapped[i0] == 0 && swapped[i1] == 1)
        swapped[i0] = 1; swapped[i1] = 0
        #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(swapped) }
        #expect(try ChangeCodec.decode(ChangeCodec.encode(two)).ops.map(\.record) == [a, b])
    }

    @Test func truncatedAndNonMinimalEncodingsAreRefused() {
        let b = sample().bytes
        for cut in [0, 1, 17, 50, b.count - 1] {
            #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(Array(b.prefix(cut))) }
        }
        // seq 1 written as a two-byte varint (0x81 0x00).
        var nonMinimal = b
        nonMinimal.replaceSubrange(17...17, with: [0x81, 0x00])
        #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(nonMinimal) }
    }

    @Test func unsortedRefsAreRefused() {
        let r1 = OpRef(change: ChangeID(bytes: [UInt8](repeating: 1, count: 32))!, index: 0)
        let r2 = OpRef(change: ChangeID(bytes: [UInt8](repeating: 2, count: 32))!, index: 0)
        var op = Op(action: .delete, recordType: .note, record: RecordID.make(.note, by: key.deviceID), refs: [r1, r2])
        op.refs = [r2, r1]  // bypass the sorting initialiser
        let c = Change(device: key.deviceID, seq: 1, prev: .zero, hlc: .zero, wallMillis: 0, ops: [op])
        #expect(throws: CoreError(.malformed, "")) { _ = try ChangeCodec.decode(ChangeCodec.encode(c)) }
    }

    @Test func nonCanonicalValueIsRefused() throws {
        let c = sample()
        var e = c.envelope
        // The envelope's last value is the tag "agriculture": re-spacing it breaks canonical form.
        let text = Array("\"agriculture\"".utf8)
        let at = e.count - text.count
        #expect(Array(e[at...]) == text)
        e.replaceSubrange(at..., with: Array(" \"agriculture\"".utf8))
        e[at - 1] += 1  // its length prefix
        #expect(throws: CoreError(.malformed, "")) { _ = try SignedChange(envelope: e) }
    }

    /// The direct parser reads back exactly what the canonical writer wrote, and nothing else.
    @Test func canonicalParserRoundTripsAndRefusesOtherForms() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        var rng = SeededRNG(seed: seed)
        func random(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 2 ? 5 : 7), using: &rng) {
            case 0: return .null
            case 1: return .bool(Bool.random(using: &rng))
            case 2: return .int(Int64.random(in: Int64.min...Int64.max, using: &rng))
            case 3: return .double(Double.random(in: -1e9...1e9, using: &rng))
            case 4: return .string(String((0..<Int.random(in: 0..<12, using: &rng)).map { _ in
                ["a", "é", "\"", "\\", "\n", "\u{1}", "Ж", "😀", "\t", " "].randomElement(using: &rng)! }.joined()))
            case 5: return .array((0..<Int.random(in: 0..<4, using: &rng)).map { _ in random(depth + 1) })
            default: return .object(Dictionary((0..<Int.random(in: 0..<4, using: &rng)).map { ("k\($0)\(["", "é", "Z"].randomElement(using: &rng)!)", random(depth + 1)) },
                                               uniquingKeysWith: { a, _ in a }))
            }
        }
        for _ in 0..<500 {
            let v = random(0).normalized()
            #expect(try JSONValue.parseCanonical(v.canonicalBytes) == v, "seed \(String(seed, radix: 16))")
        }
        for bad in ["{\"b\":1,\"a\":2}", "{\"a\":1,\"a\":1}", " 1", "1.0", "[1,]", "\"\\u0041\"", "\"e\u{301}\"", "01", "tru", "\"a"] {
            #expect(throws: CoreError.self, "\(bad)") { try JSONValue.parseCanonical(Array(bad.utf8)) }
        }
    }

    @Test func jsonCanonicalForm() throws {
        let v = try JSONValue.parse(#"{"b": [1, 2.5, true, null], "a": "x\n\"y\"", "c": 3.0}"#)
        #expect(v.canonicalString == #"{"a":"x\n\"y\"","b":[1,2.5,true,null],"c":3}"#)
        #expect(try JSONValue.parse(v.canonicalString) == v)
        // NFC: "å" as a + combining ring is stored precomposed.
        #expect(try JSONValue.parse("\"a\u{030A}\"") == .string("\u{00E5}"))
    }

    @Test func idsRoundTrip() throws {
        let d = key.deviceID
        #expect(d.description.count == 26)
        #expect(DeviceID(d.description) == d)
        #expect(DeviceID("not-an-id") == nil)
        #expect(DeviceID(d.description.uppercased()) == d)
        #expect(DeviceID(d.description + "a") == nil)
        #expect(DeviceID(String(d.description.dropLast()) + "b") == nil, "non-zero pad bits")
        let r = RecordID.make(.note, by: key.deviceID, unixMillis: baseMillis)
        #expect(RecordID(r.description) == r)
        #expect(r.description.dropFirst(14).first == "7", "UUID version 7")
        #expect(RecordID.make(.note, by: key.deviceID, unixMillis: baseMillis) < RecordID.make(.note, by: key.deviceID, unixMillis: baseMillis + 1))
    }

    /// A record id's text, written directly, against Foundation's UUID form on seeded random ids.
    @Test func recordIDTextIsFoundationsUUIDInLowerCase() {
        let seed: UInt64 = 0x5EED_1D
        var g = SeededRNG(seed: seed)
        for _ in 0..<2_000 {
            let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
            let id = RecordID(bytes: bytes)!
            #expect(id.description == id.uuid.uuidString.lowercased(), "seed \(String(seed, radix: 16)): \(bytes)")
        }
    }
}

/// Device ids against a plain RFC 4648 base32 encoder, on seeded random ids.
@Suite struct DeviceIDTests {
    static func reference(_ bytes: [UInt8]) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var out = "", buffer: UInt32 = 0, bits = 0
        for b in bytes {
            buffer = buffer << 8 | UInt32(b); bits += 8
            while bits >= 5 { bits -= 5; out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)]) }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return out
    }

    @Test func base32MatchesTheReference() {
        let seed: UInt64 = 0xD1CE_1D5
        var g = SeededRNG(seed: seed)
        for _ in 0..<2_000 {
            let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
            let d = DeviceID(bytes: bytes)!
            #expect(d.description == Self.reference(bytes), "seed \(seed)")
            #expect(DeviceID(d.description) == d, "seed \(seed)")
        }
    }
}

@Suite struct DraftTests {
    /// An import larger than 65,535 ops (10,000 notes of 11 fields) splits into changes whose
    /// values stay with their ops.
    @Test func largeDraftsSplitIntoChangesWithTheirValues() {
        let key = DeviceKey()
        var d = ChangeDraft()
        let id = RecordID.make(.note, by: key.deviceID)
        d.create(id, type: .note, kind: "survey")
        for i in 0..<70_000 { d.add("tags", .string("t\(i)"), record: id, type: .note) }
        let parts = d.chunks(maxBytes: .max)
        #expect(parts.count == 71)
        #expect(parts.allSatisfy { $0.ops.count <= ChangeCodec.maxOps })
        let last = parts.last!
        #expect(last.ops.count == 1)
        #expect(last.values[0]?.value == "t69999")
        #expect(parts[0].values[0] == nil, "the create carries no value")
        // Signed, each part's ops commit to its own values.
        let signed = SignedChange.author(Change(device: key.deviceID, seq: 1, prev: .zero, hlc: HLC(raw: 1 << 16), wallMillis: 1, ops: last.ops),
                                         values: last.values, key: key)
        #expect(signed.values[0]?.value == "t69999")
        #expect(signed.values[0]?.commitment == signed.change.ops[0].commitment)
        #expect(throws: Never.self) { try SignedChange(bytes: signed.bytes, signature: signed.signature, values: signed.values, seed: signed.seed) }
        // By bytes as well: each op is counted at about 100 bytes, so about 650 a change.
        #expect(d.chunks().count > 100)
    }

    /// An import of 260 long notes (20,000 characters each) drafted as one: its changes carry
    /// about 64 kB each, every one decodes as a server decodes it, and no note is split. Drafted
    /// in 1,000-op changes it made one change of 5 MB, which every server refuses.
    @Test func longNotesSplitIntoChangesOfAbout64kBWithEachNoteWhole() throws {
        let narrative = String(repeating: "Strip walked; markers checked. ", count: 645).prefix(19_990)
        let key = DeviceKey()
        var d = ChangeDraft()
        var ids: [RecordID] = []
        for n in 0..<260 {
            let id = RecordID.make(.note, by: key.deviceID)
            ids.append(id)
            d.create(id, type: .note, kind: "survey")
            d.set("ref", to: .string("O-\(n)"), onNew: id, type: .note)
            d.set("narrative", to: .string(String(narrative)), onNew: id, type: .note)
        }
        let parts = d.chunks()
        #expect(parts.count >= 80)
        var holder: [RecordID: Int] = [:]
        var prev = ChangeID.zero
        for (n, part) in parts.enumerated() {
            let signed = SignedChange.author(Change(device: key.deviceID, seq: UInt64(n + 1), prev: prev, hlc: HLC(raw: 1 << 16), wallMillis: 1, ops: part.ops),
                                             values: part.values, key: key)
            prev = signed.id
            #expect(signed.envelope.count <= ChangeDraft.chunkBytes, "change \(n): \(signed.envelope.count) bytes")
            #expect(throws: Never.self) { try SignedChange(envelope: signed.envelope) }
            for op in part.ops {
                #expect(holder[op.record, default: n] == n, "a note split between changes")
                holder[op.record] = n
            }
        }
        #expect(holder.count == ids.count)
        #expect(parts.flatMap(\.ops) == d.ops)
        // A small draft (a `note add`) stays one change.
        var one = ChangeDraft()
        one.create(ids[0], type: .note, kind: "survey")
        one.set("narrative", to: .string(String(narrative)), onNew: ids[0], type: .note)
        #expect(one.chunks().count == 1)
    }
}

@Suite struct UploadWindowTests {
    @Test func opensOnFullTakesAndShrinksToWhatACrowdedServerTakes() {
        var w = UploadWindow()
        #expect(w.size == 128)
        w.update(sent: 128, handled: 128)
        #expect(w.size == 256)
        w.update(sent: 256, handled: 256)
        w.update(sent: 500, handled: 500)
        #expect(w.size == SyncProtocol.maxBatch)
        w.update(sent: 500, handled: 20)
        #expect(w.size == 40)
        w.update(sent: 40, handled: 4)
        #expect(w.size == 8)
        w.update(sent: 8, handled: 0)
        #expect(w.size == UploadWindow.minimum)
        // An outbox smaller than the window, all taken: the window still opens.
        w.update(sent: 3, handled: 3)
        #expect(w.size == 8)
    }

    @Test func anUploadCutOffByTheLinkGoesAgainInHalves() {
        var w = UploadWindow()
        #expect(w.bytes == SyncProtocol.maxUploadBytes)
        // A pull that fails teaches nothing about uploads.
        w.linkFailed()
        #expect(w.bytes == SyncProtocol.maxUploadBytes)
        w.sending = 300_000
        w.linkFailed()
        #expect(w.bytes == 150_000 && w.sending == 0)
        w.sending = 150_000
        w.linkFailed()
        w.sending = 75_000
        w.linkFailed()
        w.sending = 37_500
        w.linkFailed()
        w.sending = 18_750
        w.linkFailed()
        #expect(w.bytes == UploadWindow.minimumBytes)
        // Taken whole, having used at least half of it: it grows by 16 kB, not by doubling, so a
        // link that carries only so much is not cut off again every other request.
        w.sending = 16_000
        w.update(sent: 10, handled: 10)
        #expect(w.bytes == 2 * UploadWindow.minimumBytes && w.sending == 0)
        w.sending = 20_000
        w.update(sent: 10, handled: 10)
        #expect(w.bytes == 3 * UploadWindow.minimumBytes)
        // A small upload, or a pull, says nothing of what the link carries.
        w.sending = 10_000
        w.update(sent: 2, handled: 2)
        w.update(sent: 0, handled: 0)
        #expect(w.bytes == 3 * UploadWindow.minimumBytes)
        for _ in 0..<40 {
            w.sending = w.bytes
            w.update(sent: 10, handled: 10)
        }
        #expect(w.bytes == SyncProtocol.maxUploadBytes)
        // Partly taken (a crowded server), the bytes stay.
        w.sending = 100_000
        w.linkFailed()
        w.update(sent: 10, handled: 5)
        #expect(w.bytes == 50_000)
    }

    /// What an earlier process of the replica learned, within the window's bounds.
    @Test func startsFromWhatTheReplicaLearned() {
        #expect(UploadWindow(learnedBytes: 90_000).bytes == 90_000)
        #expect(UploadWindow(learnedBytes: 5).bytes == UploadWindow.minimumBytes)
        #expect(UploadWindow(learnedBytes: 1 << 30).bytes == SyncProtocol.maxUploadBytes)
        #expect(UploadWindow(learnedBytes: nil) == UploadWindow())
    }
}
