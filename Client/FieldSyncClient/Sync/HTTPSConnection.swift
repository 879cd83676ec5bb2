import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTPS connection to the sync server, HTTP/1.1, one request at a time (never pipelined).
/// The whole answer is gathered on the connection's event loop and handed to the waiting task
/// once: a sync's exchange costs one hop to the event loop and one back.
///
/// Built on NIO directly rather than AsyncHTTPClient: the laptop talks to one server, one request
/// at a time, and needs none of a general client's pool, redirects, proxies or HTTP/2, whose
/// per-request and per-connection work was measurable in a small sync (BENCHMARKS.md, tenth
/// session).
final class HTTPSConnection: Sendable {
    let channel: any Channel
    let end: End

    /// Whether the connection is being closed, and why, shared by the connection and its collector.
    /// TLS keeps a closing channel active until the server has answered the close (or a timeout),
    /// so `isActive` alone would offer a closing connection for the next request.
    final class End: Sendable {
        let closing = Atomic(false)
        /// How far the latest request got: 0 nothing of it has left (a handshake still under
        /// way), 1 going out, its answer not begun, 2 its answer begun. A request that fails at 1
        /// may have been too large for the link; at 0 or 2 it says nothing of that.
        let stage = Atomic<UInt8>(0)
        /// What ended the connection while no request was in flight (a failed handshake, found
        /// while the caller was still reading what to send), for the request that comes next.
        let error: NIOLoopBoundBox<(any Error)?>

        init(_ loop: any EventLoop) { error = .makeEmptyBox(valueType: (any Error).self, eventLoop: loop) }
    }

    private init(channel: any Channel, end: End) {
        self.channel = channel
        self.end = end
    }

    /// Why a request on this connection ended without an answer (besides the channel's own errors).
    struct Failure: Error, CustomStringConvertible, Sendable {
        let description: String
    }

    /// Opens the TCP connection; the TLS handshake starts at once and the first request waits for it.
    static func connect(host: String, port: Int, tls: NIOSSLContext, timeout: TimeAmount) async throws -> HTTPSConnection {
        // SNI names a host, never an address: for an address, NIOSSL checks the certificate's
        // IP entries against the peer's address instead.
        let sni = Self.isAddress(host) ? nil : host
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let end = End(loop)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // A small send buffer, so that a written piece of an upload is one that has nearly
            // left the laptop: the stall check sees a slow link's progress, where a buffer the
            // kernel grows to megabytes would swallow the whole upload at once and then show
            // nothing moving while it drains. (It bounds an upload to 128 kB per round trip.)
            .channelOption(.socketOption(.so_sndbuf), value: Self.sendBuffer)
            // No TCP_USER_TIMEOUT: Linux counts a receiver's shut window toward it, and a slow
            // link keeps the window shut most of the time, so the kernel ended every upload that
            // took over its 60 s ("connection timed out"). The stall check watches the link.
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sni))
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(AnswerCollector(end: end))
                }
            }
        return HTTPSConnection(channel: try await bootstrap.connect(host: host, port: port).get(), end: end)
    }

    /// SO_SNDBUF asked for; Linux doubles it for its own bookkeeping.
    static let sendBuffer = 64 * 1024

    static func isAddress(_ host: String) -> Bool {
        host.contains(":") || (!host.isEmpty && host.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") })
    }

    /// Open and not closing: the collector starts closing it before it hands over an answer
    /// after which the server ends the connection, or a failure.
    var isOpen: Bool { channel.isActive && !end.closing.load(ordering: .acquiring) }

    /// Sends one request and returns the whole answer. Fails when no byte moves either way for
    /// `stall`, when `deadline` passes before the answer begins, when the answer grows beyond
    /// `limit` bytes, or when the connection ends first; the connection is closed then, and
    /// must not be used again.
    func send(_ head: HTTPRequestHead, body: ByteBuffer, limit: Int, stall: TimeAmount, deadline: NIODeadline) async throws -> (HTTPResponseHead, ByteBuffer) {
        let answer = channel.eventLoop.makePromise(of: (HTTPResponseHead, ByteBuffer).self)
        let request = AnswerCollector.Request(head: head, body: body, limit: limit, stall: stall, deadline: deadline, answer: answer)
        let (channel, end) = (self.channel, self.end)
        // On the event loop, so that a connection found open reaches the collector, which then
        // owns the answer; one found closed fails it here, with what closed it.
        channel.eventLoop.execute {
            if channel.isActive && !end.closing.load(ordering: .relaxed) {
                channel.writeAndFlush(request, promise: nil)
            } else {
                answer.fail(end.error.value ?? Failure(description: "the connection was closed before the request"))
            }
        }
        // Cancelled (SIGTERM to `sync --watch`): closing fails the answer at once.
        return try await withTaskCancellationHandler { try await answer.futureResult.get() } onCancel: { channel.close(promise: nil) }
    }

    /// Starts closing, without waiting for TLS to finish: on a dead link that takes seconds, and
    /// nothing after needs it done.
    func close() { channel.close(promise: nil) }
}

/// The request in flight on a connection and what has come back of its answer.
final class AnswerCollector: ChannelDuplexHandler {
    struct Request: Sendable {
        let head: HTTPRequestHead
        let body: ByteBuffer
        let limit: Int
        let stall: TimeAmount
        let deadline: NIODeadline
        let answer: EventLoopPromise<(HTTPResponseHead, ByteBuffer)>
    }
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart
    typealias InboundIn = HTTPClientResponsePart

    /// A body goes out in pieces this size, each written and flushed after the one before has
    /// gone, so that each is progress the stall check sees (TLS merges the writes of one flush,
    /// and they all complete only when the last byte has gone).
    static let piece = 16 * 1024

    let end: HTTPSConnection.End
    var answer: EventLoopPromise<(HTTPResponseHead, ByteBuffer)>?
    var limit = 0
    var head: HTTPResponseHead?
    var body = ByteBuffer()
    var lastProgress = NIODeadline.now()
    var deadlineTimer: Scheduled<Void>?
    var stallTimer: Scheduled<Void>?
    /// What is left of the request's body, and the promise of its last write.
    var unsent = ByteBuffer()
    var sent: EventLoopPromise<Void>?
    /// Whether the request went out whole (its end written).
    var bodyDone = false
    /// How much longer than `stall` the stall check waits while a body is going out or waiting
    /// for its answer to begin: as long as the slowest link we carry (1 kB/s) takes to drain what
    /// the send buffer holds of this body. The kernel tells a writer of a full buffer only when
    /// half of it has drained (64 kB: a minute at 1 kB/s), and after the last write the whole
    /// buffer drains before the answer can begin; without this, every upload above about 128 kB
    /// on a link under 2 kB/s failed as "nothing moved" just before its answer. A link that dies
    /// meanwhile is noticed that much later.
    var drain = TimeAmount.zero
    /// Counts requests, so that a piece written for one request does not drive the next's body.
    var generation = 0

    init(end: HTTPSConnection.End) { self.end = end }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard answer == nil else {
            let busy = HTTPSConnection.Failure(description: "a request is already in flight on this connection")
            promise?.fail(busy)
            request.answer.fail(busy)
            return
        }
        answer = request.answer
        end.stage.store(0, ordering: .releasing)
        generation += 1
        bodyDone = false
        drain = .seconds(Int64(min(request.body.readableBytes, 2 * HTTPSConnection.sendBuffer) / 1024))
        limit = request.limit
        head = nil
        body.clear()
        lastProgress = .now()
        let loop = context.eventLoop.assumeIsolated()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadlineTimer = loop.scheduleTask(deadline: request.deadline) { [self] in
            guard answer != nil else { return }
            fail(bound.value, HTTPSConnection.Failure(description: "no whole answer before the request's deadline"))
        }
        watchStall(context, every: request.stall)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        unsent = request.body
        sent = promise
        writeNextPiece(context, of: generation)
    }

    /// Writes and flushes the next piece of request `of`'s body, or its end; the piece after goes
    /// when this one has left.
    func writeNextPiece(_ context: ChannelHandlerContext, of request: Int) {
        guard answer != nil, request == generation, !bodyDone else { return }
        guard unsent.readableBytes > 0, let part = unsent.readSlice(length: min(Self.piece, unsent.readableBytes)) else {
            let last = sent
            sent = nil
            bodyDone = true
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: last)
            return
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        written.futureResult.assumeIsolated().whenSuccess { [self] in
            guard request == generation else { return }
            lastProgress = .now()
            if head == nil { end.stage.store(1, ordering: .releasing) }
            writeNextPiece(bound.value, of: request)
        }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(part))), promise: written)
    }

    /// Fails the request when neither a read nor a written piece has moved for `stall` (and,
    /// until the answer begins, the drain allowed for its body).
    func watchStall(_ context: ChannelHandlerContext, every stall: TimeAmount) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let allowed = head == nil ? stall + drain : stall
        stallTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: lastProgress + allowed) { [self] in
            guard answer != nil else { return }
            if NIODeadline.now() - lastProgress >= (head == nil ? stall + drain : stall) {
                let ms = stall.nanoseconds / 1_000_000
                fail(bound.value, HTTPSConnection.Failure(description: "nothing moved for " + (ms < 1000 ? "\(ms) ms" : "\(ms / 1000) s")))
            } else {
                watchStall(bound.value, every: stall)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastProgress = .now()
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            end.stage.store(2, ordering: .releasing)
            // The deadline is for the answer to begin: once it streams, the stall check alone
            // applies, so a large answer on a slow link that keeps moving is not cut off.
            deadlineTimer?.cancel()
            deadlineTimer = nil
        case .body(var part):
            guard body.readableBytes + part.readableBytes <= limit else {
                return fail(context, HTTPSConnection.Failure(description: "the answer is larger than \(limit) bytes"))
            }
            body.writeBuffer(&part)
        case .end:
            guard let head, let answer else { return fail(context, HTTPSConnection.Failure(description: "an answer came with no request")) }
            let whole = body
            // Answered before the whole request went (a refusal of its size, say): the rest of
            // it would be read as the next request, so the connection goes.
            let cutShort = !bodyDone
            finish()
            // The server ends the connection after this answer, or it was cut short: closed
            // first, it is not offered for the next request.
            if !head.isKeepAlive || cutShort { close(context) }
            answer.succeed((head, whole))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // An answer that ends when the connection does (no length, not chunked), from a server
        // that sends no TLS close alert: the decoder ends it as the channel goes inactive.
        if let e = error as? NIOSSLError, case .uncleanShutdown = e, let head, head.headers["content-length"].isEmpty,
           !head.headers["transfer-encoding"].contains(where: { $0.lowercased().contains("chunked") }) {
            return
        }
        fail(context, error)
    }

    /// Closed from outside (a cancelled request, the transport shut down): the request in
    /// flight fails now, not when TLS has finished closing, which on a dead link takes seconds.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        end.closing.store(true, ordering: .releasing)
        failInFlight("the connection was closed during the request")
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        end.closing.store(true, ordering: .releasing)
        failInFlight("the server closed the connection before its answer was whole")
        context.fireChannelInactive()
    }

    /// Fails the request in flight, if any, for a connection already closing.
    func failInFlight(_ why: String) {
        guard let answer else { return }
        finish()
        answer.fail(HTTPSConnection.Failure(description: why))
    }

    /// Closes the connection first, so that the task woken by the failure finds it closed.
    func fail(_ context: ChannelHandlerContext, _ error: any Error) {
        let waiting = answer
        finish()
        if waiting == nil && end.error.value == nil { end.error.value = error }
        close(context)
        waiting?.fail(error)
    }

    func close(_ context: ChannelHandlerContext) {
        end.closing.store(true, ordering: .releasing)
        context.close(promise: nil)
    }

    func finish() {
        answer = nil
        // A kept connection does not hold on to the last answer (up to tens of MB).
        body = ByteBuffer()
        unsent = ByteBuffer()
        if let sent { self.sent = nil; sent.fail(ChannelError.ioOnClosedChannel) }
        deadlineTimer?.cancel()
        stallTimer?.cancel()
        deadlineTimer = nil
        stallTimer = nil
    }
}
