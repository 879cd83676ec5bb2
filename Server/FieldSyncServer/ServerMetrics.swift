import Hummingbird
import Prometheus

/// What `/metrics` exposes (Prometheus text): requests by route and status, changes accepted
/// and refused, sync duration, devices seen in the last day.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let changesAccepted: Counter
    let changesRefused: Counter
    let syncDuration: DurationHistogram
    let devicesSeen: Gauge
    /// Body bytes of /v1/sync, both ways: what a sync costs on the wire before TLS framing.
    let syncBytesIn: Counter
    let syncBytesOut: Counter

    static func name(_ metric: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "fieldsync", metricName: metric, unitName: unit, helpText: help)
    }

    static var requests: MetricNameDescriptor { name("requests", unit: "total", help: "HTTP requests by route and status") }

    init() {
        changesAccepted = registry.makeCounter(descriptor: Self.name("changes_accepted", unit: "total", help: "Changes stored and applied"))
        changesRefused = registry.makeCounter(descriptor: Self.name("changes_refused", unit: "total",
                                                                    help: "Changes refused (not stored, or stored but refused by policy)"))
        syncDuration = registry.makeDurationHistogram(
            descriptor: Self.name("sync_duration", unit: "seconds", help: "Time to serve one /v1/sync exchange"),
            buckets: [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                      .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)])
        let bytes = Self.name("sync_body_bytes", unit: "total", help: "Body bytes of /v1/sync requests (in) and answers (out)")
        syncBytesIn = registry.makeCounter(descriptor: bytes, labels: [("direction", "in")])
        syncBytesOut = registry.makeCounter(descriptor: bytes, labels: [("direction", "out")])
        devicesSeen = registry.makeGauge(descriptor: Self.name("devices_seen_last_day", unit: "", help: "Devices that synced in the last 24 hours"))
    }

    func request(route: String, status: Int) {
        registry.makeCounter(descriptor: Self.requests, labels: [("route", route), ("status", String(status))]).increment()
    }
}

struct MetricsMiddleware: RouterMiddleware {
    typealias Context = SyncContext
    let metrics: ServerMetrics

    func handle(_ request: Request, context: SyncContext, next: (Request, SyncContext) async throws -> Response) async throws -> Response {
        // Known routes only, so a scan of random paths cannot grow the label set.
        let known = ["/healthz", "/metrics", "/v1/enroll", "/v1/sync", "/v1/roster"]
        let route = known.contains(request.uri.path) ? request.uri.path : "other"
        do {
            let response = try await next(request, context)
            metrics.request(route: route, status: response.status.code)
            if route == "/v1/sync" {
                metrics.syncBytesIn.increment(by: Int64(request.headers[.contentLength].flatMap { Int($0) } ?? 0))
                metrics.syncBytesOut.increment(by: Int64(response.body.contentLength ?? 0))
            }
            return response
        } catch {
            metrics.request(route: route, status: (error as? any HTTPResponseError)?.status.code ?? 500)
            throw error
        }
    }
}
