import FieldSyncCore
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// What one server process allows its connections (docs/PROTOCOL.md, "Limits").
public struct ConnectionLimits: Sendable {
    /// Open connections at once; past it the server stops accepting (they wait in the listen
    /// backlog) until one closes.
    public var maxConnections = 512
    /// Open connections at once from one IP address; past it a new one is closed at once. One
    /// host cannot then take every slot of `maxConnections`, while a depot's laptops behind one
    /// NAT address (a few dozen, each holding at most one connection) still fit.
    public var maxConnectionsPerAddress = 64
    /// A connection that has not yet carried an authenticated request is closed after this long
    /// with nothing received or sent (a TLS handshake, a request head that does not come).
    public var unauthenticatedIdle = TimeAmount.seconds(30)
    /// A connection that has authenticated, between requests: laptops running
    /// `fieldsync sync --watch` keep theirs between syncs (and close it after five idle minutes);
    /// one gone silent without closing is let go after ten.
    public var idle = TimeAmount.minutes(10)
    /// A request's head (request line and all header fields).
    public var maxHeaderBytes = 32 * 1024
    /// From a request's head to the end of its body, on any connection: past it the connection is
    /// closed (a body trickled in forever). The `Authenticator` refuses a body slower than
    /// `HTTPSignature.maxTransferSeconds` once it has come; this ends one that never does.
    public var requestTransfer = TimeAmount.seconds(HTTPSignature.maxTransferSeconds + 30)

    public init() {}
}

/// Counts each IP address's open connections, shared by every connection of one server.
final class AddressConnections: Sendable {
    let limit: Int
    private let open = Mutex<[String: Int]>([:])
    init(limit: Int) { self.limit = limit }

    /// Takes a slot for `address`, or says there is none left.
    func enter(_ address: String) -> Bool {
        open.withLock { open in
            let n = open[address, default: 0]
            guard n < limit else { return false }
            open[address] = n + 1
            return true
        }
    }

    func leave(_ address: String) {
        open.withLock { open in
            let n = open[address, default: 0] - 1
            open[address] = n > 0 ? n : nil  // dropped at zero, so the table holds only open addresses
        }
    }

    var addresses: Int { open.withLock { $0.count } }
}

/// In every connection's pipeline: closes a connection from an address that already holds
/// `AddressConnections.limit` as soon as it is active, before it has sent a byte, so its TLS
/// handshake costs nothing.
final class AddressCap: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    let table: AddressConnections
    var address: String?
    var refused = false
    init(_ table: AddressConnections) { self.table = table }

    func handlerAdded(context: ChannelHandlerContext) {
        // A connection whose peer cannot be named (it has already gone) is counted under "".
        let peer = context.channel.remoteAddress?.ipAddress ?? ""
        if table.enter(peer) { address = peer } else { refused = true }
        if refused, context.channel.isActive { context.close(promise: nil) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if refused { return context.close(promise: nil) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let address { table.leave(address) }
        address = nil
    }
}

/// Per connection: closes one that has not authenticated once it has been idle for
/// `ConnectionLimits.unauthenticatedIdle`, one whose request body is still coming
/// `requestTransfer` after its head, and ends a connection on which an unauthenticated request
/// was refused before its body had arrived, so the server neither waits for nor reads a body it
/// has refused. Told of authentication by `Authenticated`, fired by `Authenticator`.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// A request on this connection authenticated (fired from any thread through the pipeline).
    struct Authenticated: Sendable {}

    let timeout: TimeAmount
    let transfer: TimeAmount
    var authenticated = false
    var lastActivity = NIODeadline.now()
    /// A request's head has arrived and its end has not.
    var requestOpen = false
    /// The answer being written refuses the request.
    var refusing = false
    var check: Scheduled<Void>?
    /// Requests whose head has come on this connection, and the transfer check of the last.
    var requests = 0
    /// A request's head has come and its answer has not yet been written: the server is working
    /// on it (under load, authenticating can take longer than the idle limit), so it is not idle.
    var awaitingAnswer = false
    var transferCheck: Scheduled<Void>?

    init(limits: ConnectionLimits) { timeout = limits.unauthenticatedIdle; transfer = limits.requestTransfer }

    func handlerAdded(context: ChannelHandlerContext) {
        lastActivity = .now()
        schedule(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        transferCheck?.cancel()
        transferCheck = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = .now()
        switch unwrapInboundIn(data) {
        case .head:
            requestOpen = true
            awaitingAnswer = true
            requests += 1
            let request = requests
            let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            transferCheck?.cancel()
            transferCheck = context.eventLoop.assumeIsolated().scheduleTask(in: transfer) { [weak self] in
                guard let self, self.requestOpen, self.requests == request else { return }
                loopContext.value.close(promise: nil)
            }
        case .end:
            requestOpen = false
            transferCheck?.cancel()
            transferCheck = nil
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        switch unwrapOutboundIn(data) {
        case .head(let head):
            refusing = head.status.code >= 400
            awaitingAnswer = false
            context.write(data, promise: promise)
        case .end where refusing && requestOpen && !authenticated:
            // Refused from its head while its body is still coming: answer, then hang up rather
            // than read (and discard) up to the whole body.
            let done = context.eventLoop.makePromise(of: Void.self)
            done.futureResult.cascade(to: promise)
            let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.futureResult.whenComplete { _ in loopContext.value.close(promise: nil) }
            context.writeAndFlush(data, promise: done)
        default:
            context.write(data, promise: promise)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is Authenticated else { return context.fireUserInboundEventTriggered(event) }
        authenticated = true
        check?.cancel()
        check = nil
    }

    private func schedule(_ context: ChannelHandlerContext) {
        guard !authenticated else { return }
        let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: lastActivity + timeout) { [weak self] in
            guard let self, !self.authenticated else { return }
            if self.awaitingAnswer { self.lastActivity = .now() }
            if NIODeadline.now() >= self.lastActivity + self.timeout {
                loopContext.value.close(promise: nil)
            } else {
                self.schedule(loopContext.value)
            }
        }
    }
}
