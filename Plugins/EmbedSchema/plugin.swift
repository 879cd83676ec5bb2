import Foundation
import PackagePlugin

/// Embeds `Schema/records.json` and `Schema/{sqlite,sqlite-server,postgres}/*.sql` into the target as Swift string
/// constants (`EmbeddedSchema`), so the schema stays declared in exactly one place and the
/// built binaries need no resource bundle to be copied beside them.
@main
struct EmbedSchema: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let schemaDir = context.package.directoryURL.appending(path: "Schema")
        var inputs = [schemaDir.appending(path: "records.json")]
        for sub in ["sqlite", "sqlite-server", "postgres"] {
            let dir = schemaDir.appending(path: sub)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path())) ?? []
            inputs += names.filter { $0.hasSuffix(".sql") }.sorted().map { dir.appending(path: $0) }
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedSchema.swift")
        return [
            .buildCommand(
                displayName: "Embedding schema into \(target.name)",
                executable: try context.tool(named: "embed-schema").url,
                arguments: [output.path()] + inputs.map { $0.path() },
                inputFiles: inputs,
                outputFiles: [output]
            )
        ]
    }
}
