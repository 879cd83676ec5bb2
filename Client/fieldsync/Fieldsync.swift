import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation

@main
struct Fieldsync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "Offline-first field notes and press contacts, replicated and signed.",
        subcommands: [Init.self, Enroll.self, Unenroll.self, Sync.self, Rekey.self, BundleCommand.self, NoteCommand.self, ContactCommand.self, SchemaCommand.self, Export.self, Log.self, Conflicts.self, Resolve.self, Submit.self, Review.self, Status.self]
    )

    /// Every failure is one line on stderr and an exit code from DESIGN.md §9; never a trace.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? any AsyncParsableCommand { try await async.run() } else { try command.run() }
        } catch let failure where Failure(failure) != nil {
            let f = Failure(failure)!
            fail(f.message, f.exit)
        } catch {
            let code = exitCode(for: error)
            if let e = error as? ExitCode, e.rawValue != 64 { Foundation.exit(e.rawValue) }
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            // Usage mistakes: the parser's one-line message, exit 2.
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            fail(message, 2)
        }
    }

    static func fail(_ message: String, _ code: Int32) -> Never {
        FileHandle.standardError.write(Data("fieldsync: \(message)\n".utf8))
        Foundation.exit(code)
    }
}

/// A command's failure as scripts see it: the exit status (DESIGN.md §9), a stable code, and
/// the one line people read. The one table from error to exit status.
struct Failure {
    let exit: Int32
    let code: String
    let message: String

    init?(_ error: any Error) {
        switch error {
        case let e as SyncFailure:
            exit = e.exit.rawValue
            code = e.problem?.rawValue ?? ["ok", "failed", "usage", "unreachable", "authentication", "policy", "busy"][Int(e.exit.rawValue)]
            message = e.message
        case let e as ClientError:
            (exit, code, message) = (e.exitCode, e.exitCode == 2 ? "usage" : "failed", e.message)
        case let e as CoreError:
            (exit, code, message) = (1, e.code.description, e.message)
        case let e as StoreError:
            // A replica that is missing, foreign or read-only needs a person, not a retry (a
            // systemd unit lists 2 among the exits it does not restart on).
            let unusable: Set<StoreError.Code> = [.notInitialised, .notAReplica, .readOnly, .cannotOpen]
            (exit, code, message) = (unusable.contains(e.code) ? 2 : 1, e.code.description, e.message)
        case let e as ImportError:
            (exit, code, message) = (1, "invalid_input", e.description)
        default:
            return nil
        }
    }

    /// What `--json` prints for it: `{"exit":N,"error":{"code":…,"message":…}}`.
    var json: JSONValue { .object(["exit": .int(Int64(exit)), "error": .object(["code": .string(code), "message": .string(message)])]) }
}

/// Options every listing command shares.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false
}

func openReplica() throws -> Replica { try ClientHome().open() }

func printJSON(_ v: JSONValue) { print(v.canonicalString) }

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create this laptop's replica and device key.")
    @Option(help: "A name for this device, e.g. 'mt3-laptop-2'.") var name: String
    @Option(help: "The role until enrolment: field, press or coordinator.") var role: String = "field"
    @OptionGroup var output: OutputOptions

    func run() throws {
        guard let r = Role(rawValue: role) else { throw ClientError.usage("--role must be field, press or coordinator") }
        let replica = try ClientHome().initialise(name: name, role: r)
        if output.json {
            printJSON(.object(["device": .string(replica.device.description), "name": .string(name), "role": .string(role), "home": .string(replica.home.path)]))
        } else {
            print("initialised \(name) (\(role)) as device \(replica.device) in \(replica.home.path)")
        }
    }
}

struct Conflicts: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every open conflict with its values, authors and times.")
    @OptionGroup var output: OutputOptions

    func run() throws {
        let replica = try openReplica()
        let names = try replica.names()
        let views = try replica.store.conflicts()
        let items = views.flatMap { ConflictReport.items(for: $0, names: names) }
        if output.json { printJSON(.array(items)); return }
        if items.isEmpty { print("no open conflicts"); return }
        for item in items {
            print("\(item["record"]!.stringValue!) \(TerminalText.escaped(item["ref"]?.stringValue ?? ""))  \(item["field"]!.stringValue!)")
            func by(_ v: JSONValue) -> String {
                guard let name = v["device_name"]?.stringValue, let at = v["hlc_time"]?.stringValue else { return "" }
                let skew = v["clock_skew"] == .bool(true) ? "  (clock skew)" : ""
                // One time: the device's own clock only when it tells another story (a minute
                // or more off the merge's time), which is when it matters.
                let device = v["device_time"]?.stringValue
                let apart = device.flatMap(Timestamps.parse).flatMap { d in Timestamps.parse(at).map { d > $0 ? d - $0 : $0 - d } }
                let clock = device != nil && (apart ?? .max) >= 60_000 ? " (device clock \(device!))" : ""
                return "  by \(TerminalText.escaped(name)) at \(at)\(clock)\(skew)"
            }
            func shown(_ v: JSONValue?) -> String { v.map(RecordCommands.display) ?? "" }
            for (i, v) in (item["values"]?.arrayValue ?? []).enumerated() {
                switch v["choice"]?.stringValue {
                case "delete"?:
                    let deletions = v["deletions"]?.arrayValue ?? []
                    print("  [\(i + 1)] delete it" + (deletions.count == 1 ? by(deletions[0]) : ": \(deletions.count) deletions"))
                    if deletions.count > 1 { for d in deletions { print("        deleted" + by(d)) } }
                case "keep"?:
                    print("  [\(i + 1)] keep it, with the edits the deletion did not see:")
                    for e in v["edits"]?.arrayValue ?? [] { print("        \(e["field"]?.stringValue ?? "?") = \(shown(e["value"]))" + by(e)) }
                default:
                    print("  [\(i + 1)] \(shown(v["value"]))" + by(v))
                }
            }
        }
    }
}

enum ConflictReport {
    static func items(for v: RecordView, names: [DeviceID: String]) -> [JSONValue] {
        func survivor(_ s: Survivor) -> JSONValue {
            .object(["value": s.value ?? .null, "device": .string(s.author.description), "device_name": .string(names[s.author] ?? s.author.description),
                     "hlc_time": .string(Timestamps.iso(s.hlc.millis)), "device_time": .string(Timestamps.iso(s.wallMillis)),
                     "clock_skew": .bool(s.clockSkewed)])
        }
        var out: [JSONValue] = []
        let ref = v.values["ref"] ?? v.values["fn"] ?? .null
        if let dc = v.deleteConflict {
            // The two ways out, numbered as `resolve ID (deleted) --keep N` counts them: 1 deletes
            // (every deletion listed), 2 keeps the record with the edits the deletions did not see.
            var delete = survivor(dc.tombstones[0]).objectValue!
            delete["choice"] = "delete"
            delete["value"] = "(deleted)"
            delete["deletions"] = .array(dc.tombstones.map(survivor))
            var edits: [JSONValue] = []
            for ref in dc.unseenEdits {
                for (name, f) in v.fields.sorted(by: { $0.key < $1.key }) {
                    if let s = f.survivors.first(where: { $0.ref == ref }) {
                        var o = survivor(s).objectValue!
                        o["field"] = .string(name)
                        edits.append(.object(o))
                    } else if let e = f.elements.first(where: { $0.tags.contains(ref) }) {
                        edits.append(.object(["field": .string(name), "value": e.value ?? .null]))
                    }
                }
            }
            var keep = edits.first?.objectValue ?? [:]
            keep["choice"] = "keep"
            keep["value"] = "(kept)"
            keep["field"] = nil
            keep["edits"] = .array(edits)
            out.append(.object(["record": .string(v.id.description), "ref": ref, "type": .string(v.type.description), "field": "(deleted)",
                                "values": .array([.object(delete), .object(keep)])]))
        }
        for f in v.conflictedFields {
            out.append(.object(["record": .string(v.id.description), "ref": ref, "type": .string(v.type.description), "field": .string(f),
                                "values": .array(v.fields[f]!.survivors.map(survivor))]))
        }
        return out
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Device, role, counts and what waits to be synced.")
    @OptionGroup var output: OutputOptions

    func run() throws {
        let replica = try openReplica()
        let me = try replica.myEntry()
        let s = try replica.store.status(device: replica.device)
        let server = try replica.store.meta("server_url")
        let lastSync = try replica.store.meta("last_sync")
        let refusals = try replica.store.refusals()
        let forks = try replica.store.forks()
        let names = try replica.names()
        let rekeyedFrom = try replica.store.meta("rekeyed_from")
        if output.json {
            printJSON(.object([
                "device": .string(replica.device.description), "name": .string(me.name), "role": .string(me.role.rawValue),
                "server": server.map { .string($0) } ?? .null, "last_sync": lastSync.map { .string($0) } ?? .null,
                "notes": .int(Int64(s.notes)), "contacts": .int(Int64(s.contacts)), "conflicts": .int(Int64(s.conflicts)),
                "changes_waiting": .int(Int64(s.waiting)), "changes_refused": .int(Int64(refusals.count)), "changes": .int(Int64(s.changes)),
                "refusals": .array(refusals.map { .object(["id": .string($0.id.hex), "code": .string($0.code), "reason": .string($0.reason)]) }),
                "forks": .array(forks.map { f in
                    .object(["device": .string(f.device.description), "name": .string(names[f.device] ?? ""), "seq": .int(Int64(clamping: f.seq)),
                             "refused": .string(f.refused.hex), "seen": .string(Timestamps.iso(f.seenAt)), "this_device": .bool(f.device == replica.device)])
                }),
                "rekeyed_from": rekeyedFrom.map { .string($0) } ?? .null,
            ]))
            return
        }
        print("device      \(me.name) (\(replica.device))")
        print("role        \(me.role.rawValue)")
        print("server      \(server ?? "not enrolled")")
        print("last sync   \(lastSync ?? "never")")
        print("records     \(s.notes) notes, \(s.contacts) contacts")
        print("conflicts   \(s.conflicts) open")
        print("waiting     \(s.waiting) changes to send\(refusals.isEmpty ? "" : ", \(refusals.count) refused by the server")")
        for r in refusals { print("refused     \(r.id.hex.prefix(12)) (\(r.code)): \(r.reason)") }
        if let rekeyedFrom { print("rekeyed     from \(rekeyedFrom) (after a fork)") }
        for f in forks {
            let who = f.device == replica.device ? "THIS DEVICE" : TerminalText.escaped(names[f.device] ?? f.device.description)
            let what = f.device == replica.device
                ? "a copy of this replica wrote another change as this device; ask for an invite and run `fieldsync rekey --token TOKEN`"
                : "its key signed two versions of that change; \(f.refused.hex.prefix(12)) is the one not kept here"
            print("fork        \(who) at seq \(f.seq), \(Timestamps.iso(f.seenAt)): \(what)")
        }
    }
}
