#!/usr/bin/env bash
# Fuzzing (issue 23; Fuzz/README.md).
#   scripts/fuzz.sh TARGET SECONDS    one libFuzzer target for SECONDS (crashes under Fuzz/crashes/TARGET/)
#   scripts/fuzz.sh all SECONDS       each target in turn for SECONDS
#   scripts/fuzz.sh build             only the sanitizer build (.build-fuzz)
#   scripts/fuzz.sh list              the targets
# New inputs that add coverage go to .build-fuzz/corpus/TARGET (not the repository); the seed
# corpus Fuzz/corpus/TARGET is read, never written. Extra arguments after SECONDS go to libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
scratch=.build-fuzz
bin=$scratch/debug/fieldsync-fuzz
fuzzer_lib=$(ls /opt/swift/usr/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a | head -1)
targets=(change envelope syncbody canonical plainjson httpsig vcard pressrelease jsonl gzip server)

build() {
    local log start
    log=$(mktemp)
    start=$(date +%s)
    # Not `-sanitize=fuzzer`: SwiftPM passes -Xswiftc to the build-tool executable too (embed-schema,
    # run by the EmbedSchema plugin), which then fails to link without LLVMFuzzerTestOneInput
    # (and `--sanitize fuzzer` compiles it -parse-as-library). So: every module is compiled with
    # ASan and libFuzzer's coverage (what -sanitize=fuzzer instruments), and libFuzzer comes from
    # its no-main archive, which a link only takes from when it calls LLVMFuzzerRunDriver: our
    # main does (Fuzz/Sources/main.swift); embed-schema does not, and links and runs as before.
    if ! swift build -c debug --product fieldsync-fuzz --scratch-path "$scratch" \
            -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
            -Xswiftc -DFUZZING -Xlinker "$fuzzer_lib" -Xlinker -lstdc++ >"$log" 2>&1; then
        grep -E "error:" "$log" | sort -u | head -40 || tail -40 "$log"
        exit 1
    fi
    echo "sanitizer build: $(( $(date +%s) - start )) s" >&2
    rm -f "$log"
}

run() {
    local target=$1 seconds=$2; shift 2
    mkdir -p "Fuzz/crashes/$target" "$scratch/corpus/$target"
    echo "== $target for ${seconds}s" >&2
    # The Swift runtime's backtracer would take over libFuzzer's crash handling (and take
    # half a minute per crash): libFuzzer and ASan print the stack instead. One process, one
    # thread (the machine has two cores): libFuzzer's default. `-jobs=1 -workers=1` would say the
    # same but run a child whose output goes to ./fuzz-0.log instead of here.
    SWIFT_BACKTRACE=enable=no FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0:${ASAN_OPTIONS:-} \
        "$bin" -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
        -artifact_prefix="Fuzz/crashes/$target/" "$@" "$scratch/corpus/$target" "Fuzz/corpus/$target"
}

case "${1:-}" in
    build) build ;;
    list) printf '%s\n' "${targets[@]}" ;;
    all)
        [ $# -ge 2 ] || { echo "usage: $0 all SECONDS" >&2; exit 2; }
        build
        status=0
        for t in "${targets[@]}"; do run "$t" "$2" "${@:3}" || status=1; done
        exit $status ;;
    "" | -h | --help) sed -n 2,8p "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *)
        [ $# -ge 2 ] || { echo "usage: $0 TARGET SECONDS" >&2; exit 2; }
        [[ " ${targets[*]} " == *" $1 "* ]] || { echo "no target $1: ${targets[*]}" >&2; exit 2; }
        build
        run "$@" ;;
esac
