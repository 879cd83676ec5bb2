import Testing
@testable import fieldsync_fuzz

/// Every file of every seed corpus (`Fuzz/corpus/TARGET/`, crashes found and fixed included)
/// through its fuzz target, without libFuzzer or sanitizers: what CI runs of the fuzzing
/// (issue 23; `scripts/fuzz.sh` runs libFuzzer). The targets check their properties as they go;
/// a broken one stops the test process with the property and the input's target in the log.
@Suite struct FuzzCorpusTests {
    @Test(arguments: FuzzTargets.names)
    func corpusReplays(_ name: String) async throws {
        let target = try #require(FuzzTargets.named(name))
        let files = FuzzCorpus.files(of: name)
        #expect(!files.isEmpty, "Fuzz/corpus/\(name) is empty")
        FuzzTargets.prepare(target)
        for f in files {
            // The server answers on the cooperative pool: its inputs are awaited, not waited for.
            if name == "server" { await ServerHarness.run(f.bytes) } else { target.run(f.bytes) }
        }
    }
}
