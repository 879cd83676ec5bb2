import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation
import Testing

/// `fieldsync rekey`'s key file: the new key replaces `device.key` only after the replica's
/// commit, and a rekey stopped between the two is finished when the replica is next opened.
@Suite struct RekeyKeyFileTests {
    @Test func aRekeyStoppedAfterItsCommitIsFinishedOnOpen() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-rekey-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let home = ClientHome(environment: ["FIELDSYNC_HOME": dir])
        let old = try home.initialise(name: "mt3-laptop", role: .field)
        _ = try old.store.commitLocal(key: old.key) { _ in
            var d = ChangeDraft()
            let id = RecordID.make(.note, by: old.device)
            d.create(id, type: .note, kind: "survey")
            d.set("ref", to: "BEFORE", onNew: id, type: .note)
            return d
        }
        let (key, new) = try home.rekeyKey()
        #expect(new)
        var st = stat()
        #expect(stat(home.rekeyPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try home.rekeyKey().key.deviceID == key.deviceID, "a second run takes the same key")
        let entry = RosterEntry(publicKey: key.publicKey, name: "mt3-laptop-2", role: .field, enrolledAtMillis: 0)
        let result = try old.store.rekey(oldChain: [], newKey: key, roster: [entry], meta: [:])
        #expect(result.resigned == 1)
        // Stopped here: the replica is the new key's, device.key still the old one.
        let reopened = try home.open()
        #expect(reopened.device == key.deviceID)
        #expect(!FileManager.default.fileExists(atPath: home.rekeyPath))
        #expect(stat(home.keyPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try home.open().device == key.deviceID, "and it stays so")
        #expect(try reopened.store.outbox(device: key.deviceID).count == 1)
    }

    @Test func aKeyOfAnotherReplicaIsStillRefused() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-rekey-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let home = ClientHome(environment: ["FIELDSYNC_HOME": dir])
        _ = try home.initialise(name: "mt3-laptop", role: .field)
        _ = try home.rekeyKey()  // made, never enrolled nor committed
        #expect(try home.open().device != home.rekeyKey().key.deviceID, "an uncommitted rekey changes nothing")
        home.abandonRekey()
        #expect(!FileManager.default.fileExists(atPath: home.rekeyPath))
    }
}
