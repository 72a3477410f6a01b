#!/usr/bin/env bash
# The benchmark, in one command (as root): zt-agent against raw veth, wireguard-go,
# boringtun-cli, nebula and (when ZT_ONE_BINARY names its binary) ZeroTier One, on two hosts in
# network namespaces. See docs/benchmark.md.
#
#   bench/run.sh [--short] [--systems a,b,...] [--rounds N] [--duration S] [--out DIR]
#
# --short is CI's mode: one round of one-second tests with the debug build of zt-agent; it
# measures everything and asserts no speed. Without it: three rounds of five-second tests with
# the release build.
#
# It installs what it lacks: Debian packages (iperf3, wireguard-go, wireguard-tools, nebula,
# curl), boringtun-cli from crates.io (`cargo install`, into the cache folder below; not in
# --short mode, which uses it only when it is already there) and matplotlib from PyPI (into a
# virtualenv in the cache folder) for the chart.
#
# Environment:
#   ZT_ONE_BINARY=PATH   also measure ZeroTier One, this zerotier-one binary (optional)
#   ZT_AGENT_BIN=PATH    the zt-agent to measure [default: built here]
#   ZT_BENCH_CACHE=DIR   the cache folder [default: ~/.cache/zt-bench]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmark creates network namespaces: run it as root" >&2
    exit 1
fi
short=
for arg in "$@"; do
    [ "$arg" != --short ] || short=1
done
cache=${ZT_BENCH_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/zt-bench}
mkdir -p "$cache"

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
command -v nebula >/dev/null 2>&1 || missing+=(nebula)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

boringtun=$(command -v boringtun-cli || true)
[ -n "$boringtun" ] || [ ! -x "$cache/boringtun/bin/boringtun-cli" ] ||
    boringtun=$cache/boringtun/bin/boringtun-cli
if [ -z "$boringtun" ] && [ -z "$short" ]; then
    echo "==> cargo install boringtun-cli (into $cache/boringtun)"
    cargo install --quiet --locked --root "$cache/boringtun" boringtun-cli
    boringtun=$cache/boringtun/bin/boringtun-cli
fi

python=$cache/venv/bin/python3
if ! "$python" -c 'import matplotlib' >/dev/null 2>&1; then
    echo "==> matplotlib (PyPI) into $cache/venv, for the chart"
    rm -rf "$cache/venv"
    if ! { python3 -m venv "$cache/venv" &&
        "$cache/venv/bin/pip" install --quiet --disable-pip-version-check matplotlib; }; then
        # The measurements do not need it: go on without the chart rather than fail.
        echo "matplotlib could not be installed: no chart this time" >&2
        rm -rf "$cache/venv"
        python=python3
    fi
fi

agent=${ZT_AGENT_BIN:-}
if [ -z "$agent" ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$(pwd)/$target_dir
    if [ -n "$short" ]; then
        echo "==> cargo build -p zt-agent"
        cargo build --quiet -p zt-agent
        agent=$target_dir/debug/zt-agent
    else
        echo "==> cargo build --release -p zt-agent"
        cargo build --quiet --release -p zt-agent
        agent=$target_dir/release/zt-agent
    fi
fi

exec "$python" bench/bench.py --zt-agent "$agent" ${boringtun:+--boringtun "$boringtun"} "$@"
