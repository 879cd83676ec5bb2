import Testing
@testable import FieldSyncCore

/// What an enrolled but hostile device can sign, item by item (issue 23): each test fails
/// without the rule it names.
@Suite struct HostileChangeTests {
    let field = DeviceKey(), press = DeviceKey(), boss = DeviceKey()
    var roster: Roster {
        Roster([RosterEntry(publicKey: field.publicKey, name: "field", role: .field, enrolledAtMillis: 0),
                RosterEntry(publicKey: press.publicKey, name: "press", role: .press, enrolledAtMillis: 0),
                RosterEntry(publicKey: boss.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0)])
    }

    /// Signs `ops` as the next change of `key` on `replica` (any ops: no draft checks).
    func sign(_ ops: [Op], values: [UInt16: OpValue] = [:], key: DeviceKey, seq: UInt64? = nil, hlc: HLC = HLC(millis: baseMillis, counter: 0),
              on replica: MemoryReplica) -> SignedChange {
        let head = replica.head(of: key.deviceID)
        let change = Change(device: key.deviceID, seq: seq ?? (head?.seq ?? 0) + 1, prev: head?.id ?? .zero, hlc: hlc, wallMillis: baseMillis, ops: ops)
        return SignedChange.author(change, values: values, key: key)
    }

    /// A contact made by the press device: its `fn` write and its `beats` tag.
    func contact(_ r: inout MemoryReplica) throws -> (id: RecordID, fn: OpRef, beat: OpRef) {
        let id = RecordID.make(.contact, by: press.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .contact, kind: nil)
        d.set("fn", to: "Olena Melnyk", onNew: id, type: .contact)
        d.add("beats", "mines", record: id, type: .contact)
        let c = try r.commit(d, key: press, wallMillis: baseMillis)
        return (id, OpRef(change: c.id, index: 1), OpRef(change: c.id, index: 2))
    }

    @Test func recordIDsNameTheirType() {
        for _ in 0..<200 {
            #expect(RecordID.make(.note, by: field.deviceID).type == .note)
            #expect(RecordID.make(.contact, by: press.deviceID).type == .contact)
        }
        let derived = RecordID.contact(named: "urn:uuid:0198f2a1-7c3e-0b2a-9d41-3f5e8c2b1a07")
        #expect(derived.type == .contact)
        #expect(derived.description.dropFirst(14).first == "8")  // UUIDv8: name-based
        #expect(derived == RecordID.contact(named: "urn:uuid:0198f2a1-7c3e-0b2a-9d41-3f5e8c2b1a07"))
    }

    /// An id carries its maker's mark: only that device may create it, whoever else signs; ids
    /// named by an outside identifier carry none. A batch's ids are distinct and in order.
    @Test func recordIDsNameTheirMaker() {
        let other = DeviceKey()
        for _ in 0..<200 {
            let id = RecordID.make(.note, by: field.deviceID)
            #expect(id.mayBeCreated(by: field.deviceID))
            #expect(!id.mayBeCreated(by: other.deviceID) && !id.mayBeCreated(by: press.deviceID))
            #expect(id.description.dropFirst(14).first == "7")
        }
        let named = RecordID.contact(named: "urn:uuid:x")
        #expect(named.mayBeCreated(by: press.deviceID) && named.mayBeCreated(by: other.deviceID))
        // Another version, or a note id with version 8, is no one's to create.
        #expect(!RecordID("01a24d22-0000-4000-8000-000000000000")!.mayBeCreated(by: field.deviceID))
        #expect(!RecordID("01a24d22-0000-8000-8000-000000000000")!.mayBeCreated(by: field.deviceID))
        let batch = RecordID.make(5_000, .contact, by: press.deviceID, unixMillis: baseMillis)
        #expect(Set(batch).count == 5_000 && batch == batch.sorted())
        #expect(batch.allSatisfy { $0.type == .contact && $0.mayBeCreated(by: press.deviceID) })
    }

    /// A device of the same role re-creating a note it did not make, with an earlier HLC, would
    /// become the create that counts: its author, date and kind. Refused everywhere instead.
    @Test func aCreateOfSomeoneElsesRecordIsRefused() throws {
        let other = DeviceKey()
        var roster = self.roster
        roster.upsert(RosterEntry(publicKey: other.publicKey, name: "other field", role: .field, enrolledAtMillis: 0))
        var r = MemoryReplica(roster: roster)
        let id = RecordID.make(.note, by: field.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "clearance_day")
        d.set("team", to: "MT-3", onNew: id, type: .note)
        _ = try r.commit(d, key: field, wallMillis: baseMillis)
        let evil = sign([Op(action: .create, recordType: .note, record: id, kind: "accident")], key: other, hlc: HLC(millis: 1, counter: 0), on: r)
        _ = try Replicator.receive(evil, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[evil.id]?.code == .foreignCreate)
        let view = try #require(r.record(id))
        #expect(view.createdBy == field.deviceID && view.kind == "clearance_day")
        // Nor may a coordinator re-create it.
        let boss = sign([Op(action: .create, recordType: .note, record: id, kind: "survey")], key: self.boss, hlc: HLC(millis: 1, counter: 0), on: r)
        _ = try Replicator.receive(boss, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[boss.id]?.code == .foreignCreate)
    }

    @Test func aDeleteTypedAsANoteCannotReachAContact() throws {
        var r = MemoryReplica(roster: roster)
        let c = try contact(&r)
        // The field device's delete, typed `note`, naming the contact's ops.
        let evil = sign([Op(action: .delete, recordType: .note, record: c.id, refs: [c.fn, c.beat])], key: field, on: r)
        _ = try Replicator.receive(evil, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[evil.id]?.code == .crossRecord)
        let view = try #require(r.record(c.id))
        #expect(!view.deleted && view.deleteConflict == nil && view.type == .contact)
    }

    @Test func aCreateOfTheOtherTypeCannotTurnAContactIntoANote() throws {
        var r = MemoryReplica(roster: roster)
        let c = try contact(&r)
        let evil = sign([Op(action: .create, recordType: .note, record: c.id, kind: "survey")], key: field, hlc: HLC(millis: 1, counter: 0), on: r)
        _ = try Replicator.receive(evil, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[evil.id]?.code == .crossRecord)
        #expect(r.record(c.id)?.type == .contact)
        #expect(r.record(c.id)?.fields["fn"]?.value == "Olena Melnyk")
    }

    @Test func aWriteNamingAnotherFieldsValueEndsNothing() throws {
        var r = MemoryReplica(roster: roster)
        let c = try contact(&r)
        // The press device may write `title`; naming the `fn` value from there supersedes nothing.
        var v = OpValue(salt: [], value: "Editor")
        var change = sign([Op(action: .set, recordType: .contact, record: c.id, field: "title", commitment: v.commitment, refs: [c.fn])],
                          values: [0: v], key: press, on: r)
        _ = try Replicator.receive(change, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[change.id] == nil)
        #expect(r.record(c.id)?.fields["fn"]?.value == "Olena Melnyk")
        #expect(r.record(c.id)?.fields["title"]?.value == "Editor")
        // Nor does a remove on `org` naming the `beats` tag.
        change = sign([Op(action: .remove, recordType: .contact, record: c.id, field: "org", refs: [c.beat])], key: press, on: r)
        _ = try Replicator.receive(change, into: &r, wallMillis: baseMillis)
        #expect(r.record(c.id)?.fields["beats"]?.elements.map(\.value) == ["mines"])
        // The same write on the right field does supersede: the rule is the field, not the ref.
        v = OpValue(salt: [], value: "O. Melnyk")
        change = sign([Op(action: .set, recordType: .contact, record: c.id, field: "fn", commitment: v.commitment, refs: [c.fn])],
                      values: [0: v], key: press, on: r)
        _ = try Replicator.receive(change, into: &r, wallMillis: baseMillis)
        #expect(r.record(c.id)?.fields["fn"]?.survivors.count == 1)
        #expect(r.record(c.id)?.fields["fn"]?.value == "O. Melnyk")
    }

    @Test func opsOfTheWrongShapeAreRefused() throws {
        var r = MemoryReplica(roster: roster)
        let c = try contact(&r)
        let shapes = [
            Op(action: .create, recordType: .contact, record: RecordID.make(.contact, by: press.deviceID), refs: [c.fn]),
            Op(action: .create, recordType: .contact, record: RecordID.make(.contact, by: press.deviceID), field: "fn"),
            Op(action: .delete, recordType: .contact, record: c.id, field: "fn", refs: [c.fn]),
            Op(action: .erase, recordType: .contact, record: c.id, refs: [c.fn]),
        ]
        for op in shapes {
            let change = sign([op], key: op.action == .erase ? boss : press, on: r)
            _ = try Replicator.receive(change, into: &r, wallMillis: baseMillis)
            #expect(r.refusals[change.id]?.code == .crossRecord, "\(op.action)")
        }
        #expect(r.record(c.id)?.fields["fn"]?.value == "Olena Melnyk")
    }

    @Test func oneChangeMayNotAddMoreElementsThanTheFieldHolds() throws {
        var r = MemoryReplica(roster: roster)
        let c = try contact(&r)
        var ops: [Op] = [], values: [UInt16: OpValue] = [:]
        for i in 0..<51 {  // beats: max_items 50
            let v = OpValue(salt: [], value: .string("beat \(i)"))
            ops.append(Op(action: .add, recordType: .contact, record: c.id, field: "beats", commitment: v.commitment))
            values[UInt16(i)] = v
        }
        let change = sign(ops, values: values, key: press, on: r)
        _ = try Replicator.receive(change, into: &r, wallMillis: baseMillis)
        #expect(r.refusals[change.id]?.code == .oversize)
    }

    @Test func aSeqBeyondSignedSixtyFourBitsIsRefusedByTheCodec() {
        let change = Change(device: field.deviceID, seq: UInt64(Int64.max) + 1, prev: ChangeID(bytes: [UInt8](repeating: 1, count: 32))!,
                            hlc: HLC(millis: baseMillis, counter: 0), wallMillis: baseMillis,
                            ops: [Op(action: .create, recordType: .note, record: RecordID.make(.note, by: field.deviceID), kind: "survey")])
        #expect(throws: CoreError(.oversize, "")) { _ = try ChangeCodec.decode(ChangeCodec.encode(change)) }
        var request = SyncRequest(vector: VersionVector(), changes: [])
        request.vector = [field.deviceID.description: UInt64.max]
        #expect(throws: CoreError(.oversize, "")) { _ = try request.decodedVector() }
    }

    @Test func aChangeFarAheadOfItsChainIsNotHeld() throws {
        var r = MemoryReplica(roster: roster)
        let far = sign([Op(action: .create, recordType: .note, record: RecordID.make(.note, by: field.deviceID), kind: "survey")], key: field,
                       seq: Replicator.maxHeldAhead + 1, on: r)
        #expect(throws: CoreError(.tooFarAhead, "")) { _ = try Replicator.receive(far, into: &r, wallMillis: baseMillis) }
        #expect(r.pending(device: field.deviceID, seq: Replicator.maxHeldAhead + 1) == nil)
        let near = sign([Op(action: .create, recordType: .note, record: RecordID.make(.note, by: field.deviceID), kind: "survey")], key: field,
                        seq: Replicator.maxHeldAhead, on: r)
        #expect(try Replicator.receive(near, into: &r, wallMillis: baseMillis) == .pending)
    }

    @Test func aChangeFromTheEndOfTimeDoesNotDragTheClock() throws {
        var r = MemoryReplica(roster: roster)
        let evil = sign([Op(action: .create, recordType: .note, record: RecordID.make(.note, by: field.deviceID), kind: "survey")], key: field,
                        hlc: HLC(raw: .max), on: r)
        _ = try Replicator.receive(evil, into: &r, wallMillis: baseMillis)
        #expect(r.clock.last.millis <= baseMillis + HybridClock.maxLeadMillis)
        let mine = r.clock.tick(wallMillis: baseMillis)
        #expect(mine.millis >= baseMillis && mine.millis <= baseMillis + HybridClock.maxLeadMillis)
        // At the very top the clock stays there instead of wrapping to 1970.
        var top = HybridClock(last: HLC(raw: .max))
        let reading = top.tick(wallMillis: baseMillis)
        #expect(reading == HLC(raw: .max))
        let skewed = top.observe(HLC(raw: .max), wallMillis: .max)  // no overflow in the skew test
        #expect(!skewed)
    }
}
