import Foundation

/// A bundle: signed changes carried on a USB stick or a laptop when there is no network at all
/// (docs/BUNDLE.md). The file is `ChangeBundle.magic`, then a sync body (`SyncBody`: a version byte,
/// the JSON header, each change's envelope), each part with a varint length: the same framing,
/// and the same decoder, as a sync request. Nothing in it is trusted for being in it: every
/// change is checked on apply exactly as on sync, the roster by the server key the reader
/// pinned, and a server's receipt by the same key.
public enum ChangeBundle {
    public static let magic = Array("FIELDSYNC-BUNDLE".utf8)
    /// The largest bundle a replica reads: a first sync's worth of a large programme.
    public static let maxBytes = 1 << 30

    public struct Header: Codable, Sendable, Equatable {
        /// The header's layout: 1.
        public var bundle: Int
        /// The device that made it, or "server".
        public var madeBy: String
        public var madeAt: String
        /// The server whose devices wrote these changes (hex of its public key).
        public var serverKey: String
        /// The roster as the server signed it, when the maker held one.
        public var roster: SignedRoster?
        /// From a server to one device: what the server held of it.
        public var receipt: Receipt?

        enum CodingKeys: String, CodingKey {
            case bundle, roster, receipt
            case madeBy = "made_by", madeAt = "made_at", serverKey = "server_key"
        }

        public init(madeBy: String, madeAt: String, serverKey: String, roster: SignedRoster?, receipt: Receipt? = nil) {
            bundle = 1
            self.madeBy = madeBy
            self.madeAt = madeAt
            self.serverKey = serverKey
            self.roster = roster
            self.receipt = receipt
        }
    }

    /// The server's word that it holds `device`'s chain up to `seq`, ending in change `head`:
    /// the device may count those changes acknowledged, as after a sync.
    public struct Receipt: Codable, Sendable, Equatable {
        public var device: String
        public var seq: UInt64
        public var head: String
        public var signature: String

        /// The signed bytes: one line, so that a script can check it too.
        public static func message(device: String, seq: UInt64, head: String) -> [UInt8] {
            Array("\(device) \(seq) \(head)".utf8)
        }

        public static func sign(device: DeviceID, seq: UInt64, head: ChangeID, key: DeviceKey) -> Receipt {
            let sig = key.sign(message(device: device.description, seq: seq, head: head.hex), domain: .bundleReceipt)
            return Receipt(device: device.description, seq: seq, head: head.hex, signature: Data(sig).base64EncodedString())
        }

        public func verified(serverKey: [UInt8]) -> Bool {
            guard let sig = Data(base64Encoded: signature) else { return false }
            return verifySignature(Array(sig), of: Self.message(device: device, seq: seq, head: head), domain: .bundleReceipt, publicKey: serverKey)
        }
    }

    public static func encode(_ header: Header, changes: [[UInt8]]) throws -> [UInt8] {
        magic + (try SyncBody.encode(header: header, changes: changes))
    }

    /// The header and the envelopes, framing checked; the changes are decoded by the caller.
    public static func decode(_ bytes: [UInt8]) throws(CoreError) -> (Header, [[UInt8]]) {
        guard bytes.count <= maxBytes else { throw CoreError(.oversize, "the bundle is \(bytes.count) bytes, more than \(maxBytes)") }
        guard bytes.starts(with: magic) else { throw CoreError(.malformed, "not a fieldsync bundle (it does not start with FIELDSYNC-BUNDLE)") }
        let (head, changes) = try SyncBody.split(Array(bytes.dropFirst(magic.count)))
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(head)) else {
            throw CoreError(.malformed, "the bundle's header is not the expected JSON")
        }
        guard header.bundle == 1 else { throw CoreError(.malformed, "bundle layout \(header.bundle) is not 1: made by a newer fieldsync") }
        return (header, changes)
    }
}
