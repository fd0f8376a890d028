#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for SECONDS (default 60), with
# the flags README.md gives (AddressSanitizer, -rss_limit_mb=2048, the
# dictionaries; classify_decode with -malloc_limit_mb=512), and prints one
# line per target: executions, coverage (edges) and features, corpus size,
# and whether it crashed. libFuzzer's whole output goes to logs/<target>.log;
# a crash leaves its input in artifacts/<target>/.
#
# Usage (from anywhere; needs nightly and `cargo +nightly install cargo-fuzz`):
#   fuzz/run.sh [SECONDS] [TARGET...]        # all targets when none is named
# To reach a number of executions instead, pass -runs=N in LIBFUZZER_ARGS
# (e.g. LIBFUZZER_ARGS=-runs=1000000 fuzz/run.sh 100000 idx).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
mkdir -p logs
cargo +nightly fuzz build   # all targets, so that no run below includes a build
status=0
for t in "${targets[@]}"; do
    extra=()
    case $t in
        spec_file) extra+=(-dict=dicts/spec.dict) ;;
        model_file | model_header | infer_model) extra+=(-dict=dicts/model_file.dict) ;;
        classify_decode) extra+=(-malloc_limit_mb=512) ;;
    esac
    # shellcheck disable=SC2086
    if cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        "${extra[@]}" ${LIBFUZZER_ARGS:-} > "logs/$t.log" 2>&1; then
        result=ok
    else
        result="CRASH (logs/$t.log, artifacts/$t/)"
        status=1
    fi
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "logs/$t.log" | tail -1 || true)
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' <<< "$last" || true)
    printf '%-16s %-40s %s  %s\n' "$t" "${runs:-no summary}" "${cov:-}" "$result"
done
exit $status
