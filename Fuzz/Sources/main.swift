import Foundation

// `fieldsync-fuzz`: the fuzz targets of issue 23 in one executable, each a function of bytes
// (`FuzzTargets`). Built by `scripts/fuzz.sh` with `-sanitize=fuzzer,address -DFUZZING`, it is a
// libFuzzer binary running the target named by FUZZ_TARGET. In an ordinary build it replays the
// corpora (`Fuzz/corpus/TARGET/`) through the same functions, and writes the generated seeds.

#if FUZZING
// SwiftPM links an executable with `--defsym main=<module>_main`, which takes the place of
// libFuzzer's own main: this main hands over to libFuzzer's driver instead.
typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: FuzzCallback) -> CInt

guard let target = FuzzTargets.selected else {
    FileHandle.standardError.write(Data("set FUZZ_TARGET to one of: \(FuzzTargets.names.joined(separator: " "))\n".utf8))
    exit(2)
}
FuzzTargets.prepare(target)
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) })
#else
exit(FuzzCommand.run(Array(CommandLine.arguments.dropFirst())))
#endif
