import Testing
import Foundation
@testable import FieldSyncCore

@Suite struct ClockTests {
    @Test func localTicksAreStrictlyIncreasingEvenWhenTheWallClockStepsBack() {
        var c = HybridClock()
        let a = c.tick(wallMillis: baseMillis)
        let b = c.tick(wallMillis: baseMillis - day)   // wall clock set back a day
        let d = c.tick(wallMillis: baseMillis)
        #expect(a < b && b < d)
    }

    @Test func counterOverflowMovesToTheNextMillisecond() {
        var c = HybridClock(last: HLC(millis: baseMillis, counter: .max))
        let t = c.tick(wallMillis: baseMillis)
        #expect(t == HLC(millis: baseMillis + 1, counter: 0))
    }

    /// A laptop 3 days behind receives from one 3 days ahead, then writes: its write still
    /// orders after what it received (causality), and the far-ahead change is flagged, not dropped.
    @Test func devicesThreeDaysOffKeepTheHLCOrder() throws {
        let behind = DeviceKey(), ahead = DeviceKey()
        let roster = Roster([RosterEntry(publicKey: behind.publicKey, name: "behind", role: .field, enrolledAtMillis: 0),
                             RosterEntry(publicKey: ahead.publicKey, name: "ahead", role: .field, enrolledAtMillis: 0)])
        var b = MemoryReplica(roster: roster)
        var a = MemoryReplica(roster: roster)
        let id = RecordID.make(.note, by: ahead.deviceID)
        var d1 = ChangeDraft()
        d1.create(id, type: .note, kind: "survey")
        d1.set("ref", to: "from-ahead", onNew: id, type: .note)
        let c1 = try a.commit(d1, key: ahead, wallMillis: baseMillis + 3 * day)

        _ = try Replicator.receive(c1, into: &b, wallMillis: baseMillis - 3 * day)
        #expect(b.skewed.contains(c1.id), "a change 6 days ahead of the receiver is flagged as clock skew")
        #expect(b.record(id) != nil, "and kept")

        var d2 = ChangeDraft()
        d2.set("ref", to: "from-behind", on: b.records[id]!, type: .note)
        let c2 = try b.commit(d2, key: behind, wallMillis: baseMillis - 3 * day)
        #expect(c2.change.hlc > c1.change.hlc, "a write made after receiving orders after it")
        #expect(c2.change.wallMillis == baseMillis - 3 * day, "the device's own wall clock is kept apart")

        _ = try Replicator.receive(c2, into: &a, wallMillis: baseMillis + 3 * day)
        #expect(a.record(id)?.fields["ref"]?.value == "from-behind")
        #expect(b.record(id)?.fields["ref"]?.value == "from-behind")
        #expect(a.record(id)?.fields["ref"]?.inConflict == false)
        #expect(a.record(id)?.fields["ref"]?.survivors.first?.clockSkewed == true, "its wall clock is 3 days off its HLC")
    }

    /// Two concurrent writes order by (HLC, device id) on every replica, whatever the wall clocks.
    @Test func concurrentWritesOrderTheSameEverywhere() throws {
        let k1 = DeviceKey(), k2 = DeviceKey()
        let roster = Roster([RosterEntry(publicKey: k1.publicKey, name: "1", role: .field, enrolledAtMillis: 0),
                             RosterEntry(publicKey: k2.publicKey, name: "2", role: .field, enrolledAtMillis: 0)])
        var r1 = MemoryReplica(roster: roster), r2 = MemoryReplica(roster: roster)
        let id = RecordID.make(.note, by: k1.deviceID)
        var d = ChangeDraft()
        d.create(id, type: .note, kind: "survey")
        let base = try r1.commit(d, key: k1, wallMillis: baseMillis)
        _ = try Replicator.receive(base, into: &r2, wallMillis: baseMillis)
        var w1 = ChangeDraft(); w1.set("team", to: "one", on: r1.records[id]!, type: .note)
        var w2 = ChangeDraft(); w2.set("team", to: "two", on: r2.records[id]!, type: .note)
        let c1 = try r1.commit(w1, key: k1, wallMillis: baseMillis - 3 * day)
        let c2 = try r2.commit(w2, key: k2, wallMillis: baseMillis + 3 * day)
        _ = try Replicator.receive(c2, into: &r1, wallMillis: baseMillis)
        _ = try Replicator.receive(c1, into: &r2, wallMillis: baseMillis)
        let v1 = try #require(r1.record(id)), v2 = try #require(r2.record(id))
        #expect(v1 == v2)
        #expect(v1.fields["team"]?.inConflict == true)
        let expected: JSONValue = Stamp(hlc: c1.change.hlc, device: k1.deviceID) < Stamp(hlc: c2.change.hlc, device: k2.deviceID) ? "two" : "one"
        #expect(v1.fields["team"]?.value == expected)
    }
}

@Suite struct TimestampTests {
    /// The hand-written RFC 3339 formatter agrees with Foundation's on seeded random instants.
    @Test func isoAgreesWithFoundation() {
        let seed = UInt64.random(in: 1...UInt64.max)
        var rng = SeededRNG(seed: seed)
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        let fixed: [UInt64] = [0, 951_782_400_000, 4_107_542_399_999, 1_709_164_800_123, 253_402_300_799_999]
        for millis in fixed + (0..<2000).map({ _ in UInt64.random(in: 0...253_402_300_799_999, using: &rng) }) {
            let expected = f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
            #expect(Timestamps.iso(millis) == expected, "seed \(String(seed, radix: 16)): \(millis)")
        }
    }
}
