import FieldSyncCore
import FieldSyncStore
import Hummingbird
import NIOCore

/// The request context: after `Authenticator` has run, the verified device and the body it signed.
public struct SyncContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The device whose signature verified (nil on open routes, and for `/v1/enroll`).
    public var device: RosterEntry?
    /// The roster that device was found in: the exchange checks upload signatures against it and
    /// answers with it, instead of reading it twice more (revocation itself is judged again
    /// inside the exchange's write transaction, on the roster as it is then).
    public var roster: Roster?
    /// The request body, read once (the digest and signature cover it).
    public var body: [UInt8] = []
    /// The request's signature nonce, echoed in the signed response to bind the two.
    public var nonce: String?
    /// For `/v1/sync`: the nonce the exchange must record in its own transaction (the
    /// authenticator records every other route's nonce itself).
    public var unrecordedNonce: SignatureNonce?
    /// The laptop takes gzip answers (`Accept-Encoding`).
    public var acceptsGzip = false
    /// For `/v1/enroll`: the key that signed the request (its own key, proven by the signature).
    public var enrollingKey: [UInt8]?

    /// The connection, told once a request on it has authenticated (`ConnectionGuard`).
    let channel: any Channel
    /// What this request's log line will say of who signed it and what refused it.
    let note = RequestNote()

    public init(source: ApplicationRequestContextSource) { coreContext = .init(source: source); channel = source.channel }

    /// This connection has carried an authenticated request: it gets the long idle timeout.
    func markAuthenticated() { channel.pipeline.fireUserInboundEventTriggered(ConnectionGuard.Authenticated()) }
    public var maxUploadSize: Int { SyncProtocol.maxBodyBytes }
}
