import Testing
@testable import FieldSyncCore

/// Tamper evidence: every kind of forgery is refused, each with its own error code.
@Suite struct SignedChangeTests {
    let alice = DeviceKey()
    let mallory = DeviceKey()
    var roster: Roster {
        Roster([RosterEntry(publicKey: alice.publicKey, name: "alice", role: .field, enrolledAtMillis: 0),
                RosterEntry(publicKey: mallory.publicKey, name: "mallory", role: .field, enrolledAtMillis: 0)])
    }

    func note(_ replica: inout MemoryReplica, ref: String, wall: UInt64 = baseMillis) throws -> SignedChange {
        var d = ChangeDraft()
        let id = RecordID.make(.note, by: alice.deviceID, unixMillis: wall)
        d.create(id, type: .note, kind: "survey")
        d.set("ref", to: .string(ref), onNew: id, type: .note)
        return try replica.commit(d, key: alice, wallMillis: wall)
    }

    func refusal(_ c: SignedChange, into r: inout MemoryReplica) -> CoreError.Code? {
        do { _ = try Replicator.receive(c, into: &r, wallMillis: baseMillis); return nil } catch let e as CoreError { return e.code } catch { return nil }
    }

    /// Salts and commitments are part of the wire format: pinned to values computed apart
    /// (Python's hashlib: SHA-256 of the label, the seed and the big-endian index, first 16
    /// bytes; then SHA-256 of the salt and the canonical value).
    @Test func saltAndCommitmentAreTheDocumentedHashes() {
        let salt = OpValue.salt(seed: Array(0..<16), index: 0x0102)
        #expect(salt.hex == "dbc9e0555df5c63f7ef92308315c202d")
        #expect(OpValue(salt: salt, value: "edge cleared").commitment.bytes.hex == "6576c29055dc8f9005fa62723919b6b867665c51b8b6cf3f0e943f8257e96049")
    }

    @Test func authenticChangesAreAccepted() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        let c2 = try note(&a, ref: "A-2")
        var b = MemoryReplica(roster: roster)
        #expect(refusal(c1, into: &b) == nil)
        #expect(refusal(c2, into: &b) == nil)
        #expect(b.allRecords.count == 2)
    }

    @Test func changedByteIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        // Flip one bit of the HLC (offset 1 + 16 + 1 + 32): still well-formed, no longer signed.
        var bytes = c.bytes
        bytes[50] ^= 0x01
        let forged = try SignedChange(bytes: bytes, signature: c.signature, values: c.values)
        var b = MemoryReplica(roster: roster)
        #expect(refusal(forged, into: &b) == .badSignature)
    }

    @Test func wrongKeyIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        // Mallory re-signs Alice's bytes with her own key.
        let resigned = try SignedChange(bytes: c.bytes, signature: mallory.sign(c.bytes, domain: .change), values: c.values)
        var b = MemoryReplica(roster: roster)
        #expect(refusal(resigned, into: &b) == .badSignature)
        // And Alice's signature checked against Mallory's key names the mismatch.
        #expect(throws: CoreError(.keyMismatch, "")) { try c.verify(publicKey: mallory.publicKey) }
    }

    @Test func unknownDeviceIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        var b = MemoryReplica(roster: Roster([]))
        #expect(refusal(c, into: &b) == .unknownDevice)
    }

    @Test func signatureFromAnotherDomainIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        let crossDomain = try SignedChange(bytes: c.bytes, signature: alice.sign(c.bytes, domain: .roster), values: c.values)
        #expect(throws: CoreError(.badSignature, "")) { try crossDomain.verify(publicKey: alice.publicKey) }
    }

    /// Alice signs changes whose chain is wrong: the chain checks, not the signature, refuse them.
    @Test func brokenPrevIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        _ = try note(&a, ref: "A-2")
        // seq 2 whose prev is not c1.
        let bad = SignedChange.author(Change(device: alice.deviceID, seq: 2, prev: ChangeID(bytes: [UInt8](repeating: 7, count: 32))!,
                                             hlc: HLC(millis: baseMillis + 5, counter: 0), wallMillis: baseMillis, ops: c1.change.ops),
                                      values: c1.values, key: alice)
        var b = MemoryReplica(roster: roster)
        #expect(refusal(c1, into: &b) == nil)
        #expect(refusal(bad, into: &b) == .brokenChain)
    }

    @Test func missingPrevIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        // seq 2 with no prev at all: refused while decoding.
        let change = Change(device: alice.deviceID, seq: 2, prev: .zero, hlc: HLC(millis: baseMillis + 5, counter: 0),
                            wallMillis: baseMillis, ops: c1.change.ops)
        let bytes = ChangeCodec.encode(change)
        #expect(throws: CoreError(.forgedSeq, "")) {
            _ = try SignedChange(bytes: bytes, signature: alice.sign(bytes, domain: .change), values: c1.values)
        }
    }

    @Test func reorderedPrevIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        let c2 = try note(&a, ref: "A-2")
        let c3 = try note(&a, ref: "A-3")
        // Alice's seq 4 points back to seq 1: a chain that skips (reorders) history.
        let skip = SignedChange.author(Change(device: alice.deviceID, seq: 4, prev: c1.id, hlc: HLC(millis: baseMillis + 9, counter: 0),
                                              wallMillis: baseMillis, ops: c3.change.ops), values: c3.values, key: alice)
        var b = MemoryReplica(roster: roster)
        for c in [c1, c2, c3] { #expect(refusal(c, into: &b) == nil) }
        #expect(refusal(skip, into: &b) == .forgedSeq)
    }

    @Test func forgedSeqIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        // A change claiming seq 7 right after seq 1.
        let forged = SignedChange.author(Change(device: alice.deviceID, seq: 7, prev: c1.id, hlc: HLC(millis: baseMillis + 9, counter: 0),
                                                wallMillis: baseMillis, ops: c1.change.ops), values: c1.values, key: alice)
        var b = MemoryReplica(roster: roster)
        #expect(refusal(c1, into: &b) == nil)
        #expect(refusal(forged, into: &b) == .forgedSeq)
    }

    @Test func forkedChainIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        let c2 = try note(&a, ref: "A-2")
        // A second, different seq 2 from the same device.
        var other = ChangeDraft()
        other.create(RecordID.make(.note, by: alice.deviceID), type: .note, kind: "survey")
        let fork = SignedChange.author(Change(device: alice.deviceID, seq: 2, prev: c1.id, hlc: HLC(millis: baseMillis + 9, counter: 0),
                                              wallMillis: baseMillis, ops: other.ops), values: other.values, key: alice)
        var b = MemoryReplica(roster: roster)
        #expect(refusal(c1, into: &b) == nil)
        #expect(refusal(c2, into: &b) == nil)
        #expect(refusal(fork, into: &b) == .forkedChain)
        #expect(refusal(c2, into: &b) == nil, "the same change again is a harmless duplicate")
    }

    @Test func valueNotMatchingCommitmentIsRefused() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        var values = c.values
        let (index, v) = values.first!
        values[index] = OpValue(salt: v.salt, value: .string("A-2"))
        #expect(throws: CoreError(.commitmentMismatch, "")) {
            _ = try SignedChange(bytes: c.bytes, signature: c.signature, values: values)
        }
    }

    @Test func erasedValueStillVerifies() throws {
        var a = MemoryReplica(roster: roster)
        var c = try note(&a, ref: "A-1")
        #expect(c.seed != nil, "salts come from one seed")
        #expect(try SignedChange(envelope: c.envelope).seed == c.seed)
        c.dropValues([1])
        #expect(c.seed == nil, "after an erase the seed would give the erased value's salt away")
        let again = try SignedChange(envelope: c.envelope)
        try again.verify(publicKey: alice.publicKey)
        #expect(again.values.isEmpty)
        #expect(again.seed == nil)
        #expect(again.id == c.id)
    }

    /// The wire form carries no commitment for a value it carries: the receiver recomputes it, so
    /// a value changed in transit gives other signed bytes and fails the signature.
    @Test func valueChangedOnTheWireFailsTheSignature() throws {
        var a = MemoryReplica(roster: roster)
        let c = try note(&a, ref: "A-1")
        let envelope = c.envelope
        #expect(envelope.count < c.bytes.count + 64 + 1, "the wire form is smaller than signed bytes plus signature")
        let text = Array("\"A-1\"".utf8)
        var forged = envelope
        let at = (0...(forged.count - text.count)).first { Array(forged[$0..<$0 + text.count]) == text }!
        forged.replaceSubrange(at..<at + text.count, with: Array("\"A-2\"".utf8))
        let received = try SignedChange(envelope: forged)
        #expect(received.id != c.id)
        #expect(throws: CoreError(.badSignature, "")) { try received.verify(publicKey: alice.publicKey) }
        #expect(try SignedChange(envelope: envelope).id == c.id)
    }

    @Test func revokedDeviceIsCutOffAfterItsLastSeq() throws {
        var a = MemoryReplica(roster: roster)
        let c1 = try note(&a, ref: "A-1")
        let c2 = try note(&a, ref: "A-2")
        var revoked = roster
        var e = revoked[alice.deviceID]!
        e.revokedAfterSeq = 1
        revoked.upsert(e)
        var b = MemoryReplica(roster: revoked)
        #expect(refusal(c1, into: &b) == nil)
        #expect(refusal(c2, into: &b) == .revoked)
    }

    @Test func roleForbiddenChangeIsKeptButNotApplied() throws {
        var a = MemoryReplica(roster: roster)
        var d = ChangeDraft()
        d.create(RecordID.make(.contact, by: alice.deviceID), type: .contact, kind: nil)  // a field device may not write contacts
        let c = try a.commit(d, key: alice, wallMillis: baseMillis)
        #expect(a.refusals[c.id]?.code == .forbidden)
        #expect(a.allRecords.isEmpty)
        #expect(a.vector[alice.deviceID] == 1, "the refused change stays in the chain")
        let c2 = try note(&a, ref: "A-2")
        var b = MemoryReplica(roster: roster)
        #expect(refusal(c, into: &b) == nil)
        #expect(refusal(c2, into: &b) == nil)
        #expect(b.refusals[c.id]?.code == .forbidden)
        #expect(b.allRecords.count == 1)
    }
}
