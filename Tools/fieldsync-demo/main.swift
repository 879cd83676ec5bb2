import FieldSyncCore
import Foundation

// The model's own demonstration: three replicas with real Ed25519 keys work apart, exchange
// signed changes in different orders, and end with the same records and the same conflict.
let now: UInt64 = 1_788_000_000_000
let alice = DeviceKey(), bogdan = DeviceKey(), coord = DeviceKey()
let roster = Roster([
    RosterEntry(publicKey: alice.publicKey, name: "alice-laptop", role: .field, enrolledAtMillis: now),
    RosterEntry(publicKey: bogdan.publicKey, name: "bogdan-laptop", role: .field, enrolledAtMillis: now),
    RosterEntry(publicKey: coord.publicKey, name: "coordinator", role: .coordinator, enrolledAtMillis: now),
])
var a = MemoryReplica(roster: roster), b = MemoryReplica(roster: roster), c = MemoryReplica(roster: roster)
func name(_ d: DeviceID) -> String { roster[d]?.name ?? d.description }

func exchange(_ x: inout MemoryReplica, _ y: inout MemoryReplica) throws {
    for ch in x.missing(for: y.vector) { _ = try Replicator.receive(ch, into: &y, wallMillis: now) }
    for ch in y.missing(for: x.vector) { _ = try Replicator.receive(ch, into: &x, wallMillis: now) }
}

do {
    let id = RecordID.make(.note, by: alice.deviceID, unixMillis: now)
    var d = ChangeDraft()
    d.create(id, type: .note, kind: "clearance_day")
    d.set("ref", to: "UA-KHA-CLR-0042", onNew: id, type: .note)
    d.set("team", to: "MT-3", onNew: id, type: .note)
    d.set("area_cleared_m2", to: .int(1100), onNew: id, type: .note)
    try a.commit(d, key: alice, wallMillis: now)
    try exchange(&a, &b)
    print("alice creates \(id) and syncs it to bogdan.")

    var da = ChangeDraft(); da.set("area_cleared_m2", to: .int(1150), on: a.records[id]!, type: .note)
    var db = ChangeDraft(); db.set("area_cleared_m2", to: .int(1200), on: b.records[id]!, type: .note)
    db.add("tags", "agriculture", record: id, type: .note)
    try a.commit(da, key: alice, wallMillis: now + 60_000)
    // Bogdan's laptop clock is three days behind; the HLC keeps the order honest.
    try b.commit(db, key: bogdan, wallMillis: now - 3 * 86_400_000)
    print("offline, alice writes area_cleared_m2=1150 and bogdan (clock 3 days behind) writes 1200.")

    try exchange(&b, &c)
    try exchange(&a, &c)
    try exchange(&b, &c)
    let views = [a, b, c].map { $0.record(id)! }
    print("after exchanging in different orders, all replicas equal: \(views.allSatisfy { $0 == views[0] })")
    let f = views[0].fields["area_cleared_m2"]!
    print("conflict on area_cleared_m2: shown \(f.value!.canonicalString); survivors:")
    for s in f.survivors { print("  \(s.value!.canonicalString) by \(name(s.author)) at HLC \(s.hlc)\(s.clockSkewed ? " (clock skew)" : "")") }

    var r = ChangeDraft(); r.resolve("area_cleared_m2", to: .int(1200), on: c.records[id]!, type: .note)
    r.review("approved", comment: "checked against the site sketch", on: c.records[id]!)
    try c.commit(r, key: coord, wallMillis: now + 120_000)
    try exchange(&a, &c); try exchange(&b, &c)
    let final = a.record(id)!
    print("coordinator resolves to 1200 and approves; conflicts left anywhere: \([a, b, c].map { $0.conflicts.count })")
    print("merged note: \(JSONValue.object(final.values).canonicalString)")
    for ch in a.missing(for: VersionVector()) { try ch.verify(publicKey: roster[ch.change.device]!.publicKey) }
    print("every change verified against its author's key: \(a.vector.total) changes")
} catch {
    print("demo failed: \(error)")
    exit(1)
}
