import FieldSyncCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// What a request's log line says of it beyond its route and status, filled in while it is
/// handled: the device that signed it, the problem that refused it, and whose changes it relayed
/// (the log is the record of which laptop brought another's work). A reference, so the
/// outermost middleware reads what the authenticator and the handler, deeper in, wrote.
final class RequestNote: Sendable {
    struct Read { var device: String?; var problem: String?; var relayedFor: String?; var relayedForName = ""; var relayed = 0 }
    private let state = Mutex(Read())
    func signed(by device: String) { state.withLock { $0.device = device } }
    func refused(_ code: Problem.Code?) { state.withLock { $0.problem = code?.rawValue ?? "problem" } }
    /// `author` by device id (names are not unique: a rekeyed laptop's new key takes its old name).
    func relayed(for author: String, named name: String, changes: Int) {
        state.withLock { $0.relayedFor = author; $0.relayedForName = name; $0.relayed = changes }
    }
    var read: Read { state.withLock { $0 } }
}

/// One log line per request (info): route, status, duration, device, problem code, and for a
/// relay the author and the changes taken. The route is
/// one of the server's or "other", never the raw path: a path is the client's bytes.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = SyncContext
    let logger: Logger

    func handle(_ request: Request, context: SyncContext, next: (Request, SyncContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            log(request, status: response.status.code, context: context, start: start)
            return response
        } catch {
            log(request, status: (error as? any HTTPResponseError)?.status.code ?? 500, context: context, start: start)
            throw error
        }
    }

    func log(_ request: Request, status: Int, context: SyncContext, start: ContinuousClock.Instant) {
        let known = ["/healthz", "/metrics", "/ca.pem", "/v1/enroll", "/v1/sync", "/v1/roster"]
        let note = context.note.read
        let ms = (ContinuousClock.now - start).components
        var metadata: Logger.Metadata = [
            "method": .string(request.method.rawValue.count <= 16 ? request.method.rawValue : "other"),
            "route": .string(known.contains(request.uri.path) ? request.uri.path : "other"),
            "status": .stringConvertible(status),
            "ms": .stringConvertible(ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000),
        ]
        if let device = note.device { metadata["device"] = .string(device) }
        if let problem = note.problem { metadata["problem"] = .string(problem) }
        if let author = note.relayedFor {
            metadata["relayed_for"] = .string(author)
            metadata["relayed_for_name"] = .string(note.relayedForName)
            metadata["relayed"] = .stringConvertible(note.relayed)
        }
        logger.log(level: status >= 500 ? .error : .info, "request", metadata: metadata)
    }
}

/// The server's log as one JSON object per line on standard error (`--log-format json`):
/// `time`, `level`, `message` and the metadata, for a log collector.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var o: [String: JSONValue] = [
            "time": .string(Timestamps.iso(Timestamps.nowMillis)), "level": .string(event.level.rawValue),
            "message": .string(event.message.description), "logger": .string(label),
        ]
        for (k, v) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) where o[k] == nil { o[k] = Self.json(v) }
        if let error = event.error { o["error"] = .string("\(error)") }
        FileHandle.standardError.write(Data((JSONValue.object(o).canonicalString + "\n").utf8))
    }

    static func json(_ v: Logger.Metadata.Value) -> JSONValue {
        switch v {
        case .string(let s): .string(s)
        case .stringConvertible(let c): Int64(c.description).map { JSONValue.int($0) } ?? .string(c.description)
        case .array(let a): .array(a.map(json))
        case .dictionary(let d): .object(d.mapValues(json))
        }
    }
}
