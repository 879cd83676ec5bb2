import ArgumentParser
import FieldSyncClient
import FieldSyncCore
import Foundation

struct BundleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle",
        abstract: "Carry changes without a network: a file for a USB stick, to another laptop or the server.",
        discussion: "docs/BUNDLE.md describes the file. Every change in it is signed by its author and checked on apply as a sync checks it.",
        subcommands: [Create.self, Apply.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write this laptop's unsent changes and what it received since its last bundle (--all: every change) to a new file.")
        @Option(help: "The bundle file to write (never over an existing file; mode 0600).") var out: String
        @Flag(help: "Every change this replica holds, not only the news since the last bundle.") var all = false
        @OptionGroup var output: OutputOptions

        func run() throws {
            let r = try openReplica().createBundle(out: out, all: all)
            if output.json {
                printJSON(.object(["file": .string(out), "changes": .int(Int64(r.changes)), "own": .int(Int64(r.own))]))
            } else {
                print("wrote \(r.changes) changes (\(r.own) of this laptop's) to \(out)")
            }
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take in a bundle from another laptop or the server.",
            discussion: "Exit codes: 0 all taken; 5 some changes refused (named; those of their device that follow wait); 1 the file is not a bundle of this replica's server.")
        @Argument(help: "The bundle file.") var file: String
        @OptionGroup var output: OutputOptions

        func run() throws {
            let r = try openReplica().applyBundle(file)
            if output.json {
                printJSON(.object([
                    "made_by": .string(r.madeBy), "new": .int(Int64(r.new)), "already_here": .int(Int64(r.already)), "held": .int(Int64(r.held)),
                    "roster_news": .int(Int64(r.rosterNews)), "acknowledged": .int(Int64(r.acknowledged)), "forks": .int(Int64(r.forks)),
                    "refused": .array(r.refused.map { .object(["id": .string($0.id), "device": .string($0.device), "seq": $0.seq.map { .int(Int64(clamping: $0)) } ?? .null,
                                                                "reason": .string($0.reason)]) }),
                    "exit": .int(r.refused.isEmpty ? 0 : 5),
                ]))
            } else {
                var line = "took \(r.new) new changes (\(r.already) already here"
                if r.held > 0 { line += ", \(r.held) waiting for earlier ones" }
                line += ")"
                if r.acknowledged > 0 { line += "; the server acknowledged \(r.acknowledged) of this laptop's" }
                if r.rosterNews > 0 { line += "; \(r.rosterNews) roster changes" }
                if r.forks > 0 { line += "; \(r.forks) forks (a key that signed two versions: `fieldsync status` lists them)" }
                print(line)
                for x in r.refused {
                    print("refused \(x.id.prefix(12)) by \(TerminalText.escaped(x.device))\(x.seq.map { " seq \($0)" } ?? ""): \(TerminalText.escaped(x.reason))")
                }
            }
            if !r.refused.isEmpty { throw ExitCode(5) }
        }
    }
}
