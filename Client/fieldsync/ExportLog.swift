import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export records: geojson, csv, vcard, jcard or jsonl.")
    @Option(help: "geojson | csv | vcard | jcard | jsonl") var format: String
    @Option(help: "Write to this file (atomically) instead of standard output.") var out: String?
    @Option(help: "For csv and jsonl: note or contact (csv defaults to note).") var type: String?
    @Flag(help: "For csv: add a row of HXL hashtags under the header.") var hxl = false

    func run() throws {
        guard let f = ExportFormat(rawValue: format) else { throw ClientError.usage("--format must be one of geojson, csv, vcard, jcard, jsonl") }
        let t = try type.map { name -> RecordType in
            guard let t = RecordType(name: name) else { throw ClientError.usage("--type must be note or contact") }
            return t
        }
        let text = try Exporter.export(try openReplica(), format: f, type: t, hxl: hxl)
        if let out {
            do { try text.write(toFile: out, atomically: true, encoding: .utf8) } catch {
                throw ClientError("cannot write \(out): \((error as NSError).localizedDescription)")
            }
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The merged change log, newest first.")
    @Option(help: "Only changes from this date (YYYY-MM-DD) or instant on.") var since: String?
    @Option(help: "Only changes by this device (id, id prefix or name).") var device: String?
    @Option(help: "Only changes to this record (id or prefix).") var record: String?
    @Option(help: "Only changes to notes of this kind.") var kind: String?
    @Option(help: "Only changes to notes of this team.") var team: String?
    @Option(help: "Only changes to notes in this review state: draft, submitted, approved, rejected.") var review: String?
    @Flag(name: .customLong("conflicts"), help: "Only changes to records with an open conflict.") var conflictsOnly = false
    @Option(help: "Show at most this many changes.") var limit: Int = 1000
    @OptionGroup var output: OutputOptions

    func run() throws {
        let replica = try openReplica()
        var filter = LogFilter()
        if let since {
            guard let ms = Timestamps.parse(since) else { throw ClientError.usage("--since takes a date YYYY-MM-DD or an RFC 3339 instant") }
            filter.sinceMillis = ms
        }
        if let device {
            let roster = try replica.store.roster().sorted
            let matches = roster.filter { $0.name == device || $0.device.description.hasPrefix(device.lowercased()) }
            guard matches.count == 1 else { throw ClientError(matches.isEmpty ? "no device '\(device)'" : "'\(device)' matches several devices") }
            filter.device = matches[0].device
        }
        if let record { filter.record = try replica.store.resolveID(record) }
        if let review, !["draft", "submitted", "approved", "rejected"].contains(review) {
            throw ClientError.usage("--review must be draft, submitted, approved or rejected")
        }
        filter.kind = kind
        filter.team = team
        filter.review = review
        filter.conflictsOnly = conflictsOnly
        filter.limit = limit
        let entries = try ChangeLog.entries(replica, filter: filter)
        if output.json { printJSON(.array(entries.map(\.json))); return }
        for e in entries { print(TerminalText.escaped(e.line)) }  // values and names are others' text
    }
}
