#!/usr/bin/env bash
# The scale simulation of issue 8 item 6: 10,000 member nodes, 4 roots and one controller
# with 100 networks on the simulator's virtual clock, then the controller alone serving one
# network of 10,000 members. Prints the report (docs/scale.md explains it and records runs).
#
#   scripts/scale.sh                 the full-size run
#   scripts/scale.sh --nodes 2000    any option of the example (see node-core/examples/sim_scale.rs)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p node-core --example sim_scale
target=${CARGO_TARGET_DIR:-target}
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$target/release/examples/sim_scale" --nodes 10000 --roots 4 --networks 100 "$@"
