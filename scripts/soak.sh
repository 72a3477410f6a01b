#!/usr/bin/env bash
# The long soak (issue 8 item 5), as root: attaches and detaches endpoints through the plugin
# API against a real zt-agent for ZT_SOAK_CYCLES cycles (default 1000), then checks that its
# RSS, descriptors, threads, tasks, taps, identities, state files and namespace pins are back
# where they were after the warm-up. The same test runs in CI with a short default
# (tests/tests/soak_netns.rs). Figures go in docs/reliability.md.
#
#   scripts/soak.sh            1,000 cycles
#   ZT_SOAK_CYCLES=5000 scripts/soak.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the soak creates network namespaces: run it as root" >&2
    exit 1
fi
export ZT_SOAK_CYCLES=${ZT_SOAK_CYCLES:-1000}
cargo build --quiet -p zt-agent
echo "==> soak: $ZT_SOAK_CYCLES cycles ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
CI=true cargo test --quiet -p zt-e2e --test soak_netns -- --nocapture
