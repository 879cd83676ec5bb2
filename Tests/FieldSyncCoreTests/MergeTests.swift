import Testing
@testable import FieldSyncCore

/// The merge rules one by one, each between two replicas that then exchange changes.
@Suite struct MergeTests {
    let k1 = DeviceKey(), k2 = DeviceKey(), boss = DeviceKey()
    var roster: Roster {
        Roster([RosterEntry(publicKey: k1.publicKey, name: "field-1", role: .field, enrolledAtMillis: 0),
                RosterEntry(publicKey: k2.publicKey, name: "press-2", role: .press, enrolledAtMillis: 0),
                RosterEntry(publicKey: boss.publicKey, name: "coord", role: .coordinator, enrolledAtMillis: 0)])
    }

    /// Two replicas that both hold a note (or contact) created by `creator`.
    func pair(type: RecordType = .note, creator: DeviceKey? = nil) throws -> (MemoryReplica, MemoryReplica, RecordID) {
        var a = MemoryReplica(roster: roster), b = MemoryReplica(roster: roster)
        let id = RecordID.make(type, by: (creator ?? (type == .note ? k1 : k2)).deviceID)
        var d = ChangeDraft()
        d.create(id, type: type, kind: type == .note ? "hazard_area" : nil)
        d.set(type == .note ? "team" : "fn", to: "start", onNew: id, type: type)
        d.add(type == .note ? "tags" : "beats", "keep", record: id, type: type)
        let c = try a.commit(d, key: creator ?? (type == .note ? k1 : k2), wallMillis: baseMillis)
        _ = try Replicator.receive(c, into: &b, wallMillis: baseMillis)
        return (a, b, id)
    }

    func exchange(_ a: inout MemoryReplica, _ b: inout MemoryReplica) throws {
        for c in a.missing(for: b.vector) { _ = try Replicator.receive(c, into: &b, wallMillis: baseMillis) }
        for c in b.missing(for: a.vector) { _ = try Replicator.receive(c, into: &a, wallMillis: baseMillis) }
        #expect(a.allRecords == b.allRecords)
    }

    @Test func concurrentWritesBothSurviveAsAConflict() throws {
        var (a, b, id) = try pair()
        var da = ChangeDraft(); da.set("team", to: "MT-3", on: a.records[id]!, type: .note)
        var db = ChangeDraft(); db.set("team", to: "MT-4", on: b.records[id]!, type: .note)
        try a.commit(da, key: k1, wallMillis: baseMillis + 10)
        try b.commit(db, key: boss, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        let f = try #require(a.record(id)?.fields["team"])
        #expect(f.inConflict)
        #expect(Set(f.survivors.compactMap(\.value)) == ["MT-3", "MT-4"])
        #expect(a.conflicts.map(\.id) == [id])
    }

    @Test func aLaterSetOfAConflictedFieldKeepsTheConflictUntilResolve() throws {
        var (a, b, id) = try pair()
        var da = ChangeDraft(); da.set("team", to: "MT-3", on: a.records[id]!, type: .note)
        var db = ChangeDraft(); db.set("team", to: "MT-4", on: b.records[id]!, type: .note)
        try a.commit(da, key: k1, wallMillis: baseMillis + 10)
        try b.commit(db, key: boss, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        var again = ChangeDraft(); again.set("team", to: "MT-5", on: a.records[id]!, type: .note)
        try a.commit(again, key: k1, wallMillis: baseMillis + 20)
        #expect(a.record(id)?.fields["team"]?.survivors.count == 2, "a plain edit supersedes only the value it displayed")
        var r = ChangeDraft(); r.resolve("team", to: "MT-5", on: a.records[id]!, type: .note)
        // A field device may not resolve: refused by policy, nothing applied.
        let refused = try a.commit(r, key: k1, wallMillis: baseMillis + 30)
        #expect(a.refusals[refused.id]?.code == .forbidden)
        try exchange(&a, &b)
        var r2 = ChangeDraft(); r2.resolve("team", to: "MT-5", on: b.records[id]!, type: .note)
        try b.commit(r2, key: boss, wallMillis: baseMillis + 40)
        try exchange(&a, &b)
        #expect(a.record(id)?.fields["team"]?.inConflict == false)
        #expect(a.record(id)?.fields["team"]?.value == "MT-5")
    }

    @Test func aConflictRaisedConcurrentlyWithAResolutionStaysOpen() throws {
        var (a, b, id) = try pair()
        var da = ChangeDraft(); da.set("team", to: "X", on: a.records[id]!, type: .note)
        var db = ChangeDraft(); db.set("team", to: "Y", on: b.records[id]!, type: .note)
        try a.commit(da, key: k1, wallMillis: baseMillis + 10)
        try b.commit(db, key: boss, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        var r = ChangeDraft(); r.resolve("team", to: "Y", on: b.records[id]!, type: .note)
        try b.commit(r, key: boss, wallMillis: baseMillis + 20)
        var late = ChangeDraft(); late.set("team", to: "Z", on: a.records[id]!, type: .note)  // concurrent with the resolve
        try a.commit(late, key: k1, wallMillis: baseMillis + 20)
        try exchange(&a, &b)
        let f = try #require(a.record(id)?.fields["team"])
        #expect(Set(f.survivors.compactMap(\.value)) == ["Y", "Z"])
    }

    @Test func setsAreAddWins() throws {
        var (a, b, id) = try pair()
        var da = ChangeDraft(); da.remove("tags", "keep", on: a.records[id]!, type: .note)
        var db = ChangeDraft(); db.add("tags", "keep", record: id, type: .note)  // concurrent re-add
        db.add("tags", "new", record: id, type: .note)
        try a.commit(da, key: k1, wallMillis: baseMillis + 10)
        try b.commit(db, key: boss, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        #expect(a.record(id)?.values["tags"] == .array(["keep", "new"]))
        var rm = ChangeDraft(); rm.remove("tags", "keep", on: a.records[id]!, type: .note)
        try a.commit(rm, key: k1, wallMillis: baseMillis + 20)
        try exchange(&a, &b)
        #expect(b.record(id)?.values["tags"] == .array(["new"]))
    }

    @Test func deleteConcurrentWithEditKeepsTheRecordAndRaisesAConflict() throws {
        var (a, b, id) = try pair()
        var del = ChangeDraft(); del.delete(a.records[id]!, type: .note)
        var edit = ChangeDraft(); edit.set("narrative", to: "found two more", on: b.records[id]!, type: .note)
        try a.commit(del, key: k1, wallMillis: baseMillis + 10)
        #expect(a.record(id)?.deleted == true)
        try b.commit(edit, key: boss, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        let v = try #require(a.record(id))
        #expect(!v.deleted)
        #expect(v.deleteConflict != nil)
        #expect(v.values["team"] == "start", "the whole record stays visible, not just the unseen edit")
        #expect(v.values["narrative"] == "found two more")
        // The coordinator keeps it.
        var keep = ChangeDraft(); keep.keepRecord(b.records[id]!, type: .note)
        try b.commit(keep, key: boss, wallMillis: baseMillis + 20)
        try exchange(&a, &b)
        #expect(a.record(id)?.deleteConflict == nil && a.record(id)?.deleted == false)
    }

    @Test func deleteOfEverythingSeenRemovesTheRecord() throws {
        var (a, b, id) = try pair()
        var del = ChangeDraft(); del.delete(a.records[id]!, type: .note)
        try a.commit(del, key: k1, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        #expect(b.record(id)?.deleted == true)
        #expect(!b.conflicts.contains { $0.id == id })
    }

    @Test func eraseDropsPersonalValuesButKeepsTheHistoryVerifiable() throws {
        var (a, b, id) = try pair(type: .contact)
        var d = ChangeDraft()
        d.add("email", "o.melnyk@umac.example", record: id, type: .contact)
        d.set("source", to: "press release 27.2.2026", on: a.records[id]!, type: .contact)
        try a.commit(d, key: k2, wallMillis: baseMillis + 10)
        try exchange(&a, &b)
        var e = ChangeDraft(); e.erase(id)
        try b.commit(e, key: boss, wallMillis: baseMillis + 20)
        // A concurrent edit of a personal field, arriving after the erase, is erased too.
        var late = ChangeDraft(); late.set("fn", to: "Олена Мельник", on: a.records[id]!, type: .contact)
        try a.commit(late, key: k2, wallMillis: baseMillis + 20)
        try exchange(&a, &b)
        for r in [a, b] {
            let v = try #require(r.record(id))
            #expect(v.erasedBy?.author == boss.deviceID)
            #expect(v.fields["fn"]?.survivors.allSatisfy { $0.value == nil } == true)
            #expect(v.fields["email"]?.elements.allSatisfy { $0.value == nil } == true)
            #expect(v.values["source"] == "press release 27.2.2026", "fields that are not personal stay")
            for c in r.missing(for: VersionVector()) {
                try c.verify(publicKey: r.roster[c.change.device]!.publicKey)
                for (i, _) in c.values { #expect(!["fn", "email"].contains(c.change.ops[Int(i)].field)) }
            }
        }
    }

    @Test func aFieldDeviceSubmitsAndOnlyACoordinatorDecides() throws {
        var (a, _, id) = try pair()
        var approve = ChangeDraft(); approve.review("approved", comment: "ok", on: a.records[id]!)
        let refused = try a.commit(approve, key: k1, wallMillis: baseMillis + 10)
        #expect(a.refusals[refused.id]?.code == .forbidden)
        #expect(a.record(id)?.fields["review"] == nil)

        var submit = ChangeDraft(); submit.review("submitted", comment: nil, on: a.records[id]!)
        try a.commit(submit, key: k1, wallMillis: baseMillis + 15)
        #expect(a.record(id)?.values["review"] == .object(["state": "submitted"]))

        var decide = ChangeDraft(); decide.review("approved", comment: "ok", on: a.records[id]!)
        try a.commit(decide, key: boss, wallMillis: baseMillis + 20)
        #expect(a.record(id)?.values["review"] == .object(["state": "approved", "comment": "ok"]))
        #expect(a.record(id)?.fields["review"]?.inConflict == false, "the verdict supersedes the submission")

        var draft = ChangeDraft(); draft.review("draft", comment: nil, on: a.records[id]!)
        let back = try a.commit(draft, key: boss, wallMillis: baseMillis + 30)
        #expect(a.refusals[back.id]?.code == .forbidden, "no op writes draft")
    }

    /// An approval covers what its coordinator saw: a later edit, or one made offline before it
    /// that arrives after it, returns the report to draft on every replica; a review that saw
    /// the edit stands.
    @Test func anEditAfterReviewReturnsTheReportToDraft() throws {
        var (a, b, id) = try pair()
        var submit = ChangeDraft(); submit.review("submitted", comment: nil, on: a.records[id]!)
        let submitted = try a.commit(submit, key: k1, wallMillis: baseMillis + 10)
        _ = try Replicator.receive(submitted, into: &b, wallMillis: baseMillis + 10)
        // Offline on a, before the approval: a depth written at +15 that b has not seen.
        var offline = ChangeDraft(); offline.set("team", to: "MT-9", on: a.records[id]!, type: .note)
        let edit = try a.commit(offline, key: k1, wallMillis: baseMillis + 15)
        var approve = ChangeDraft(); approve.review("approved", comment: "ok", on: b.records[id]!)
        let approval = try b.commit(approve, key: boss, wallMillis: baseMillis + 20)
        #expect(b.record(id)?.values["review"]?["state"] == "approved")
        // Either order: the approval did not see the edit, so the report is a draft again.
        _ = try Replicator.receive(approval, into: &a, wallMillis: baseMillis + 30)
        _ = try Replicator.receive(edit, into: &b, wallMillis: baseMillis + 30)
        for r in [a, b] {
            #expect(r.record(id)?.values["review"] == .object(["state": "draft", "changed_since": "approved", "comment": "ok"]))
        }
        #expect(a.record(id) == b.record(id))
        // Approved again having seen it: approved. Then an edit after it: draft again.
        var again = ChangeDraft(); again.review("approved", comment: nil, on: b.records[id]!)
        _ = try b.commit(again, key: boss, wallMillis: baseMillis + 40)
        #expect(b.record(id)?.values["review"] == .object(["state": "approved"]))
        var tag = ChangeDraft(); tag.add("tags", "late", record: id, type: .note)
        _ = try b.commit(tag, key: k1, wallMillis: baseMillis + 50)
        #expect(b.record(id)?.values["review"]?["state"] == "draft")
        // A rejection stands through edits: it asks for them.
        var reject = ChangeDraft(); reject.review("rejected", comment: "fix the depth", on: b.records[id]!)
        _ = try b.commit(reject, key: boss, wallMillis: baseMillis + 60)
        var fix = ChangeDraft(); fix.set("team", to: "MT-3", on: b.records[id]!, type: .note)
        _ = try b.commit(fix, key: k1, wallMillis: baseMillis + 70)
        #expect(b.record(id)?.values["review"]?["state"] == "rejected")
    }

    @Test func aReviewValueMustNameTheSignedState() throws {
        let (a, _, id) = try pair()
        var d = ChangeDraft(); d.review("submitted", comment: nil, on: a.records[id]!)
        // The signed op says `submitted`; a value claiming `approved` beside it is refused.
        let op = d.ops[0]
        let forged = OpValue.fresh(.object(["state": "approved"]))
        var signedOp = op; signedOp.commitment = forged.commitment
        let change = Change(device: k1.deviceID, seq: 9, prev: ChangeID(bytes: [UInt8](repeating: 1, count: 32))!,
                            hlc: HLC(raw: 1 << 20), wallMillis: baseMillis, ops: [signedOp])
        let signed = SignedChange.author(change, values: [0: forged], key: k1)
        #expect(throws: CoreError.self) { try SignedChange(envelope: signed.envelope) }
        do { _ = try SignedChange(envelope: signed.envelope) } catch { #expect(error.code == .commitmentMismatch) }
    }

    @Test func aSetNamingTwoValuesIsRefused() throws {
        var (a, _, id) = try pair()
        let ops = a.records[id]!
        let s = ops.survivors("team", type: .note)[0].ref
        let op = Op(action: .set, recordType: .note, record: id, field: "team",
                    refs: [s, OpRef(change: ChangeID(bytes: [UInt8](repeating: 9, count: 32))!, index: 0)])
        var d = ChangeDraft()
        d.append(op, value: "sneaky")
        let c = try a.commit(d, key: boss, wallMillis: baseMillis + 10)
        #expect(a.refusals[c.id]?.code == .forbidden)
    }
}
