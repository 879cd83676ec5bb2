import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import FieldSyncStore
import Foundation

struct Resolve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Coordinator: settle a conflict with one value that supersedes every survivor.",
        discussion: "FIELD is a conflicted field, or `(deleted)` for a delete/edit conflict (--keep 1 deletes, --keep 2 keeps the record). N counts from 1 in the order `fieldsync conflicts` lists.")
    @Argument(help: "Record id or unique prefix.") var id: String
    @Argument(help: "The conflicted field.") var field: String
    @Option(help: "A new value for the field.") var value: String?
    @Option(help: "Keep the Nth listed value.") var keep: Int?

    func run() throws {
        guard (value == nil) != (keep == nil) else { throw ClientError.usage("give exactly one of --value or --keep") }
        let r = try openReplica()
        guard try r.myEntry().role == .coordinator else { throw ClientError("only a coordinator may resolve conflicts") }
        let rid = try r.store.resolveID(id)
        try r.store.commitLocal(key: r.key) { reader in
            let ops = try reader.ops(rid)
            guard let view = ops.materialize(schema: r.schema) else { throw ClientError("no record \(id)") }
            var d = ChangeDraft()
            if field == "(deleted)" {
                guard let dc = view.deleteConflict else { throw ClientError("\(id) has no delete/edit conflict") }
                switch keep {
                case 1?: d.delete(ops, type: view.type)
                case 2?: d.keepRecord(ops, type: view.type)
                default: throw ClientError.usage("for (deleted), --keep 1 deletes the record and --keep 2 keeps it (\(dc.tombstones.count) deletion(s))")
                }
                return d
            }
            guard let f = view.fields[field], f.inConflict else {
                let hint = view.deleteConflict != nil && ["deleted", "delete", "(delete)"].contains(field) ? "; a delete/edit conflict is spelled (deleted)" : ""
                throw ClientError("field '\(field)' of \(id) is not in conflict\(hint)")
            }
            let chosen: JSONValue
            if let keep {
                guard (1...f.survivors.count).contains(keep) else { throw ClientError.usage("--keep takes 1 to \(f.survivors.count)") }
                guard let v = f.survivors[keep - 1].value else { throw ClientError("value \(keep) was erased") }
                chosen = v
            } else {
                chosen = try r.schema.parse(text: value!, field: field, type: view.type, kind: view.kind)
            }
            d.resolve(field, to: chosen, on: ops, type: view.type)
            return d
        }
        print("resolved \(field) of \(label(r, rid))")
    }
}

/// Review states as the note's survivors show them; no review op yet means `draft`.
func reviewStates(_ view: RecordView) -> Set<String> {
    // A submission or approval that no longer covers what the note shows is a draft again
    // (`RecordOps.shownReview`): it is submitted, and reviewed, anew.
    if view.fields["review"]?.value?["changed_since"] != nil { return ["draft"] }
    let states = (view.fields["review"]?.survivors ?? []).compactMap { $0.value?["state"]?.stringValue }
    return states.isEmpty ? ["draft"] : Set(states)
}

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a field report for review (draft or rejected → submitted).",
        discussion: "A field device may set only `submitted`; approval and rejection are a coordinator's (`fieldsync review`). Works offline; the next sync carries it.")
    @Argument(help: "Note id or unique prefix.") var id: String
    @Option(help: "A word for the reviewer.") var comment: String?

    func run() throws {
        let r = try openReplica()
        let role = try r.myEntry().role
        guard role != .press else { throw ClientError("a press device does not write field notes") }
        let rid = try r.store.resolveID(id, type: .note)
        try r.store.commitLocal(key: r.key) { reader in
            let ops = try reader.ops(rid)
            guard let view = ops.materialize(schema: r.schema), !view.deleted else { throw ClientError("no note \(id)") }
            let states = reviewStates(view)
            guard states.isDisjoint(with: ["submitted", "approved"]) else {
                throw ClientError("note \(id) is already \(states.sorted().joined(separator: " and ")); nothing to submit")
            }
            var d = ChangeDraft()
            d.review("submitted", comment: comment, on: ops)
            return d
        }
        print("submitted \(label(r, rid)) for review")
    }
}

struct Review: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Coordinator: approve or reject a submitted field report.",
        discussion: "A note must have been submitted (`fieldsync submit`); a coordinator may change an earlier verdict. Works offline; the next sync carries it.")
    @Argument(help: "Note id, its start or end, or its ref.") var id: String?
    @Flag(help: "Approve.") var approve = false
    @Flag(help: "Reject.") var reject = false
    @Option(help: "Why.") var comment: String?
    @Flag(help: "List the notes waiting for a verdict (submitted), as `note list --review submitted`.") var queue = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        if queue {
            guard id == nil, !approve, !reject, comment == nil else { throw ClientError.usage("--queue takes no note and no verdict") }
            try RecordCommands.list(type: .note, kind: nil, status: nil, review: "submitted", json: output.json)
            return
        }
        guard let id else { throw ClientError.usage("give a note to review, or --queue to list those waiting") }
        guard approve != reject else { throw ClientError.usage("give exactly one of --approve or --reject") }
        let r = try openReplica()
        guard try r.myEntry().role == .coordinator else { throw ClientError("only a coordinator may review notes; this device is \(try r.myEntry().role.rawValue)") }
        let rid = try r.store.resolveID(id, type: .note)
        try r.store.commitLocal(key: r.key) { reader in
            let ops = try reader.ops(rid)
            guard let view = ops.materialize(schema: r.schema), !view.deleted else { throw ClientError("no note \(id)") }
            // Only a note never submitted waits for its author; one changed since its submission or
            // approval is reviewed as it stands now (the review names what it saw).
            guard view.fields["review"] != nil else {
                throw ClientError("note \(id) is a draft; it can be reviewed once submitted (`fieldsync submit \(id)`)")
            }
            var d = ChangeDraft()
            d.review(approve ? "approved" : "rejected", comment: comment, on: ops)
            return d
        }
        print("\(approve ? "approved" : "rejected") \(label(r, rid))")
    }
}
