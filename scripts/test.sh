#!/usr/bin/env bash
# Runs every check CI runs, on a fresh machine as on a developer's:
#   formatting, clippy, the whole workspace's tests (with the privileged end-to-end tests in
#   network namespaces when run as root), and a short run of each fuzz target.
# It installs what it needs by itself (Debian packages, cargo-fuzz) and exits non-zero when
# any step fails.
#
# Environment:
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
#   CI=true          privileged tests fail instead of skipping when they cannot run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
fuzz_seconds=${FUZZ_SECONDS:-20}

step() {
    printf '\n==> %s\n' "$*"
}

elapsed() {
    printf '    (%ss)\n' "$((SECONDS - step_start))"
}

# --- Debian packages: only what is missing, with one apt-get update -------------------------
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
# nsenter: an e2e agent that keeps its mounts (tests/tests/netns_fd.rs).
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
# kill(1) itself, not the shell's builtin: the test harness runs it.
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || missing+=(procps)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v c++ >/dev/null 2>&1 || missing+=(g++) # libFuzzer is C++
# The manifest check installs kubernetes-validate (PyPI) into a virtualenv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The CNI end-to-end test (tests/tests/cni_libcni.rs) builds a libcni driver offline against
# Debian's libcni and chains Debian's portmap plugin, which needs iptables.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containernetworking/cni ] ||
    missing+=(golang-github-containernetworking-cni-dev)
[ -x /usr/lib/cni/portmap ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# The podman end-to-end test (tests/tests/cni_podman.rs) runs Debian's podman 4 with its CNI
# backend; the Docker one (tests/tests/docker_engine.rs) starts Debian's dockerd itself. Both
# import a busybox-static root as their image (no registry; the dynamic busybox would not do).
command -v podman >/dev/null 2>&1 || missing+=(podman)
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# The benchmark's short run (bench/run.sh --short): iperf3 and the peers it measures.
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
command -v nebula >/dev/null 2>&1 || missing+=(nebula)
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "not root: cannot install ${missing[*]}; tests that need them will skip" >&2
    fi
fi

# --- Static checks ---------------------------------------------------------------------------
step_start=$SECONDS
step "cargo fmt --all -- --check (and the fuzz crate)"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
elapsed

step_start=$SECONDS
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
elapsed

# --- Tests -----------------------------------------------------------------------------------
# The end-to-end tests (crate zt-e2e, tests/) run target/debug/zt-agent, which `cargo test`
# does not build for them. Building every target first builds it, and with the same features
# `cargo test` uses, so the test step compiles nothing more.
step_start=$SECONDS
step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets
elapsed

step_start=$SECONDS
step "cargo test --workspace"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$test_log"
test_status=${PIPESTATUS[0]}
set -e
elapsed

# --- Kubernetes manifests --------------------------------------------------------------------
step_start=$SECONDS
step "Kubernetes manifests: kubernetes-validate --strict"
manifest_status=0
"$repo/scripts/validate-manifests.sh" || manifest_status=1
elapsed

# --- Benchmark, short mode ------------------------------------------------------------------
# One round of one-second tests of every system, with the debug zt-agent built above: it must
# set every system up and measure it; it asserts no speed. boringtun-cli joins in only when a
# full run has already installed it (cargo install is too slow for CI).
bench_status=0
step_start=$SECONDS
step "benchmark, short mode: bench/run.sh --short (measures, asserts no speed)"
if [ "$(id -u)" -eq 0 ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$repo/$target_dir
    bench_out=$(mktemp -d)
    ZT_AGENT_BIN=$target_dir/debug/zt-agent "$repo/bench/run.sh" --short --out "$bench_out" ||
        bench_status=1
    rm -rf "$bench_out"
elif [ -n "${CI:-}" ]; then
    echo "the benchmark needs root (network namespaces), and CI must run it" >&2
    bench_status=1
else
    echo "SKIPPED (needs root and network namespaces; runs in CI)"
fi
elapsed

# --- Fuzz smoke ------------------------------------------------------------------------------
fuzz_status=0
if [ "$fuzz_seconds" -gt 0 ]; then
    step_start=$SECONDS
    step "fuzz smoke: each target for ${fuzz_seconds}s"
    if ! FUZZ_SECONDS=$fuzz_seconds "$repo/scripts/fuzz.sh" smoke; then
        fuzz_status=1
    fi
    elapsed
fi

# --- Summary ---------------------------------------------------------------------------------
echo
echo "==> cargo test results"
grep -E '^test result:' "$test_log" || true
awk '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
            if ($(i + 1) ~ /^ignored/) ignored += $i
        }
    }
    END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }
' "$test_log"

if [ "$test_status" -ne 0 ]; then
    echo "cargo test failed (exit $test_status)" >&2
    exit 1
fi
if [ "$manifest_status" -ne 0 ]; then
    echo "manifest validation failed" >&2
    exit 1
fi
if [ "$bench_status" -ne 0 ]; then
    echo "the benchmark's short run failed" >&2
    exit 1
fi
if [ "$fuzz_status" -ne 0 ]; then
    echo "fuzz smoke failed" >&2
    exit 1
fi
