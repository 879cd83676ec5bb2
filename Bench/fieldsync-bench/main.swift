import FieldSyncCore
import Foundation

/// `fieldsync-bench [--quick | --full]`: one JSON object per scenario on standard output, and a
/// table of the figures beside their targets and limits on standard error. Run it from
/// `bench/run.sh`, which builds every product in release first.
struct Sizes {
    var b1Notes, b2Rounds, b3Laptops, b3Changes, b4Added, b4List, listRuns, sqliteRows, b5Notes: Int
    static let quick = Sizes(b1Notes: 2_000, b2Rounds: 50, b3Laptops: 10, b3Changes: 50, b4Added: 300, b4List: 2_000, listRuns: 5, sqliteRows: 20_000,
                             b5Notes: 10_000)
    static let full = Sizes(b1Notes: 10_000, b2Rounds: 200, b3Laptops: 50, b3Changes: 200, b4Added: 2_000, b4List: 10_000, listRuns: 15, sqliteRows: 100_000,
                            b5Notes: 100_000)
}

func figure(_ results: [Result], _ scenario: String, _ name: String) -> Double {
    results.first { $0.scenario == scenario }?.figures.first { $0.0 == name }?.1 ?? .nan
}

func table(_ results: [Result]) -> String {
    func f(_ v: Double) -> String {
        guard v.isFinite else { return "-" }
        return v >= 100 ? String(Int(v.rounded())) : String(format: "%.2f", v)
    }
    let sqlite = figure(results, "limits", "sqlite_rows_per_s"), ed = figure(results, "limits", "ed25519_verifications_per_s")
    // name, figure, target, ratio to its limit (or "" when the figure has no limit run here)
    let rows: [(String, Double, String, String)] = [
        ("B1 field writes/s", figure(results, "B1 first sync", "field_writes_per_s"), "≥ 100000",
         "\(f(figure(results, "B1 first sync", "field_writes_per_s") / sqlite)) of raw SQLite"),
        ("B1 wire bytes/field write", figure(results, "B1 first sync", "wire_bytes_per_field_write"), "≤ 40", ""),
        ("B1 changes verified/s", figure(results, "B1 first sync", "changes") / figure(results, "B1 first sync", "seconds"), "",
         "\(f(figure(results, "B1 first sync", "changes") / figure(results, "B1 first sync", "seconds") / ed)) of Ed25519"),
        ("B1 laptop peak RSS MB", figure(results, "B1 first sync", "laptop_peak_rss_mb"), "≤ 150", ""),
        ("B1 server peak RSS MB", figure(results, "B1 first sync", "server_peak_rss_mb"), "≤ 300", ""),
        ("B2 p50 ms (sync, new TLS each)", figure(results, "B2 small sync", "p50_ms"), "≤ 10", ""),
        ("B2 p99 ms (sync, new TLS each)", figure(results, "B2 small sync", "p99_ms"), "≤ 30", ""),
        ("B2 p50 ms (sync --watch, kept)", figure(results, "B2 small sync", "resident_p50_ms"), "≤ 10", ""),
        ("B2 p99 ms (sync --watch, kept)", figure(results, "B2 small sync", "resident_p99_ms"), "≤ 30", ""),
        ("B2 empty exchange, new TLS ms", figure(results, "B2 small sync", "empty_exchange_new_connection_ms"), "", ""),
        ("B2 empty exchange, warm ms", figure(results, "B2 small sync", "empty_exchange_warm_connection_ms"), "", ""),
        ("B3 field writes/s", figure(results, "B3 depot load", "field_writes_per_s"), "≥ 20000",
         "\(f(figure(results, "B3 depot load", "field_writes_per_s") / sqlite)) of raw SQLite"),
        ("B3 p99 request ms", figure(results, "B3 depot load", "p99_request_ms"), "≤ 250", ""),
        ("B3 p99 after each first ms", figure(results, "B3 depot load", "p99_request_after_first_ms"), "", ""),
        ("B3 p50 first request ms", figure(results, "B3 depot load", "p50_first_request_ms"), "", ""),
        ("B3 refusals", figure(results, "B3 depot load", "refusals"), "0", ""),
        ("B3 server peak RSS MB", figure(results, "B3 depot load", "server_peak_rss_mb"), "≤ 300", ""),
        ("B1 from PostgreSQL field writes/s", figure(results, "B1 first sync (PostgreSQL)", "field_writes_per_s"), "",
         "\(f(figure(results, "B1 first sync (PostgreSQL)", "field_writes_per_s") / figure(results, "B1 first sync", "field_writes_per_s"))) of B1 (target ≥ 0.5)"),
        ("B3 PostgreSQL ×2 field writes/s", figure(results, "B3 depot load (PostgreSQL, 2 processes)", "field_writes_per_s"), "",
         "\(f(figure(results, "B3 depot load (PostgreSQL, 2 processes)", "field_writes_per_s") / figure(results, "B3 depot load", "field_writes_per_s"))) of B3 (target ≥ 0.2)"),
        ("B3 PostgreSQL ×2 p99 request ms", figure(results, "B3 depot load (PostgreSQL, 2 processes)", "p99_request_ms"), "≤ 250", ""),
        ("B3 PostgreSQL ×2 refusals", figure(results, "B3 depot load (PostgreSQL, 2 processes)", "refusals"), "0", ""),
        ("B4 durable notes/s (note add)", figure(results, "B4 local work", "durable_notes_per_s"), "≥ 2000",
         "\(f(figure(results, "B4 local work", "durable_notes_per_s") / figure(results, "limits", "sqlite_durable_commits_per_s"))) of durable SQLite commits"),
        ("B4 import notes/s", figure(results, "B4 local work", "import_notes_per_s"), "",
         "\(f(figure(results, "B4 local work", "import_notes_per_s") * 11 / sqlite)) of raw SQLite (11 rows a note)"),
        ("B4 note list --json ms", figure(results, "B4 local work", "note_list_json_ms"), "≤ 300", ""),
        ("B5 first upload s", figure(results, "B5 first upload", "upload_seconds"), "", ""),
        ("B5 same notes down s", figure(results, "B5 first upload", "download_seconds"), "", ""),
        ("B5 upload / download", figure(results, "B5 first upload", "upload_over_download"), "≤ 2", ""),
        ("limit: raw SQLite rows/s", sqlite, "", ""),
        ("limit: durable SQLite commits/s", figure(results, "limits", "sqlite_durable_commits_per_s"), "", ""),
        ("limit: Ed25519 verifications/s", ed, "", ""),
    ]
    let w0 = rows.map(\.0.count).max()!
    var out = "figure".padding(toLength: w0, withPad: " ", startingAt: 0) + "  " + "value".padding(toLength: 10, withPad: " ", startingAt: 0)
        + "  " + "target".padding(toLength: 9, withPad: " ", startingAt: 0) + "  ratio to limit\n"
    for (name, v, target, ratio) in rows {
        out += name.padding(toLength: w0, withPad: " ", startingAt: 0) + "  " + f(v).padding(toLength: 10, withPad: " ", startingAt: 0)
            + "  " + target.padding(toLength: 9, withPad: " ", startingAt: 0) + "  " + ratio + "\n"
    }
    return out
}

let args = Set(CommandLine.arguments.dropFirst())
let unknown = args.subtracting(["--quick", "--full", "--only-b1", "--only-b2", "--only-b3", "--only-b4", "--only-b5", "--only-limits"])
guard unknown.isEmpty else {
    FileHandle.standardError.write(Data("fieldsync-bench: unknown option \(unknown.sorted().joined(separator: " ")); use --quick (default) or --full, and --only-b1…b5|limits\n".utf8))
    exit(2)
}
let sizes = args.contains("--full") ? Sizes.full : Sizes.quick
let only = args.filter { $0.hasPrefix("--only-") }
func wanted(_ s: String) -> Bool { only.isEmpty || only.contains("--only-" + s) }

var results: [Result] = []
do {
    if wanted("limits") { results.append(try limits(rows: sizes.sqliteRows)) }
    // PostgreSQL beside SQLite in the same run when bench/run.sh started a cluster.
    let postgres = ProcessInfo.processInfo.environment["FIELDSYNC_BENCH_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    if wanted("b1") {
        results.append(try await b1FirstSync(notes: sizes.b1Notes))
        if let postgres { results.append(try await b1FirstSync(notes: sizes.b1Notes, postgres: postgres)) }
    }
    if wanted("b2") { results.append(try await b2SmallSync(rounds: sizes.b2Rounds)) }
    if wanted("b3") {
        results.append(try await b3DepotLoad(laptops: sizes.b3Laptops, changesEach: sizes.b3Changes))
        if let postgres { results.append(try await b3DepotLoad(laptops: sizes.b3Laptops, changesEach: sizes.b3Changes, postgres: postgres)) }
    }
    if wanted("b4") { results.append(try b4LocalWork(notesAdded: sizes.b4Added, listNotes: sizes.b4List, listRuns: sizes.listRuns)) }
    if wanted("b5") { results.append(try await b5FirstUpload(notes: sizes.b5Notes)) }
} catch {
    for r in results { print(r.json) }
    FileHandle.standardError.write(Data("fieldsync-bench: \(error)\n".utf8))
    exit(1)
}
for r in results { print(r.json) }
FileHandle.standardError.write(Data(("\n" + table(results)).utf8))
