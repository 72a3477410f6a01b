#!/usr/bin/env bash
# Fuzzing the parsers (node-core, the agent's APIs, the CNI and Docker plugins) with cargo-fuzz
# (libFuzzer + AddressSanitizer) on the machine's stable toolchain.
#
#   scripts/fuzz.sh smoke              every target for $FUZZ_SECONDS (default 20) seconds
#   scripts/fuzz.sh run TARGET [ARGS]  one target until stopped; ARGS go to libFuzzer
#   scripts/fuzz.sh list               the targets
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and others) to rustc. No nightly
# toolchain can be installed here, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them; the
# stable toolchain ships the sanitizer runtimes. Seeds are extracted from tests/data into
# fuzz/corpus/<target>/ (ignored by git) before each run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
seconds=${FUZZ_SECONDS:-20}

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

targets() {
    cargo fuzz list --fuzz-dir "$repo/fuzz"
}

seed() {
    python3 "$repo/scripts/fuzz-seeds.py" "$repo/tests/data" "$repo/fuzz/corpus"
}

# The docker target keeps its state folder in /dev/shm/zt-fuzz-docker-<pid>; libFuzzer exits
# without running destructors, so the folders of finished runs are removed here.
remove_stale_state() {
    local dir
    for dir in /dev/shm/zt-fuzz-docker-*; do
        [ -d "$dir" ] || continue
        kill -0 "${dir##*-}" 2>/dev/null || rm -rf "$dir"
    done
}
trap remove_stale_state EXIT

# libFuzzer options shared by every run: a hang is a failure too.
common_options=(-timeout=10 -rss_limit_mb=2048 -max_len=16384)

case "${1:-smoke}" in
list)
    targets
    ;;
run)
    target=${2:?usage: scripts/fuzz.sh run TARGET [libFuzzer options]}
    shift 2
    seed
    cargo fuzz run --fuzz-dir "$repo/fuzz" "$target" -- "${common_options[@]}" "$@"
    ;;
smoke)
    seed
    cargo fuzz build --fuzz-dir "$repo/fuzz"
    failed=()
    for target in $(targets); do
        log=$(mktemp)
        printf -- '--- fuzz %s for %ss: ' "$target" "$seconds"
        if cargo fuzz run --fuzz-dir "$repo/fuzz" "$target" -- \
            "${common_options[@]}" -max_total_time="$seconds" -print_final_stats=1 \
            >"$log" 2>&1; then
            # "Done N runs in S second(s)" and the final stats say how much ran.
            runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo '?')
            corpus=$(find "$repo/fuzz/corpus/$target" -type f | wc -l)
            echo "ok, $runs runs, corpus $corpus inputs"
        else
            echo "FAILED"
            tail -n 60 "$log"
            failed+=("$target")
        fi
        rm -f "$log"
        remove_stale_state
    done
    if ((${#failed[@]})); then
        echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: scripts/fuzz.sh smoke | run TARGET [ARGS] | list" >&2
    exit 2
    ;;
esac
