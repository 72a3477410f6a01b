#!/usr/bin/env bash
# The `zerotier` CNI plugin driven by libcni (cni-libcni, built from Debian's libcni 1.1.2)
# against a real zt-agent, on one host, every process in network namespaces this script
# makes: a host namespace whose agent is its own root (a planet made here) and the
# network's controller, and two "pod" namespaces. It checks, in order:
#   ADD of both pods (a 1.0.0 result libcni accepts and caches), a ping between them, the
#   portmap chain's DNAT rule for a hostPort, CHECK, CHECK failing once the pod's interface
#   is deleted by hand, STATUS and GC exec'd per spec 1.1 (GC keeps the listed pod only),
#   DEL twice, and DEL with the agent stopped (recorded in the pending-delete spool), then
#   STATUS failing with code 50.
#
# Needs root, iproute2, iptables, python3, Debian's golang-go,
# golang-github-containernetworking-cni-dev and containernetworking-plugins (portmap); it
# installs the Debian packages if they are missing.
#
#   tests/cni-libcni/smoke.sh      (ZT_AGENT, ZT_CNI_PLUGIN: binaries to use instead of
#                                   building them; KEEP=1 keeps the scratch directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "smoke: needs root (network namespaces)" >&2
    exit 1
fi
packages=()
command -v go >/dev/null || packages+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containernetworking/cni ] ||
    packages+=(golang-github-containernetworking-cni-dev)
[ -x /usr/lib/cni/portmap ] || packages+=(containernetworking-plugins)
command -v iptables >/dev/null || packages+=(iptables)
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

target=${CARGO_TARGET_DIR:-target}
if [ -z "${ZT_AGENT:-}" ] || [ -z "${ZT_CNI_PLUGIN:-}" ]; then
    cargo build -q -p zt-agent -p cni-plugin
fi
agent=${ZT_AGENT:-$target/debug/zt-agent}
plugin=${ZT_CNI_PLUGIN:-$target/debug/zerotier}
driver=$(tests/cni-libcni/build.sh "$target/cni-libcni")

prefix=ztcni$$
work=$(mktemp -d /tmp/zt-cni-smoke.XXXXXX)
lan=10.213.240.1 # the root's address, on the host namespace's loopback only
cleanup() {
    local status=$? netns pids
    set +e
    if [ "$status" -ne 0 ] && [ -s "$work/agent.log" ]; then
        echo "--- the agent's last log lines" >&2
        tail -n 30 "$work/agent.log" >&2
    fi
    for netns in host p1 p2; do
        pids=$(ip netns pids "$prefix-$netns" 2>/dev/null)
        [ -z "$pids" ] || kill $pids 2>/dev/null
    done
    sleep 0.5
    for netns in host p1 p2; do
        ip netns del "$prefix-$netns" 2>/dev/null
    done
    [ -n "${KEEP:-}" ] || rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}
in_host() { ip netns exec "$prefix-host" "$@"; }
cli() { in_host "$agent" --home "$work/home" "$@"; }
json() { # json FILE EXPRESSION: evaluates a Python expression over the JSON in FILE as `v`
    python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

echo "==> namespaces: $prefix-host (agent, root, controller), $prefix-p1, $prefix-p2 (pods)"
for netns in host p1 p2; do
    ip netns add "$prefix-$netns"
    ip -n "$prefix-$netns" link set lo up
done
ip -n "$prefix-host" addr add "$lan/32" dev lo

mkdir -p "$work/home" "$work/bin"
"$agent" idtool generate "$work/home/identity.secret" "$work/home/identity.public" >/dev/null
"$agent" mkworld init "$work/home/identity.public" >"$work/template.json"
python3 - "$work/template.json" "$work/home/identity.public" "$lan/9993" >"$work/planet.json" <<'EOF'
import json, sys
template, public, endpoint = sys.argv[1:4]
world = json.load(open(template))
world["worldType"] = "planet"
world["roots"] = [{"identity": open(public).read().strip(), "stableEndpoints": [endpoint]}]
json.dump(world, sys.stdout)
EOF
"$agent" mkworld "$work/planet.json" -o "$work/home/planet" >/dev/null
in_host "$agent" run --home "$work/home" --port 9993 --socket "$work/agent.sock" >"$work/agent.log" 2>&1 &
for _ in $(seq 60); do
    cli info -j 2>/dev/null | grep -q '"online": *true' && break
    sleep 0.5
done
cli info -j | grep -q '"online": *true' || fail "the agent did not come online"

nwid=$(cli api POST /controller/network '{
    "name": "cni-smoke", "private": false, "v4AssignMode": {"zt": true},
    "ipAssignmentPools": [{"ipRangeStart": "10.213.241.10", "ipRangeEnd": "10.213.241.250"}],
    "routes": [{"target": "10.213.241.0/24"}]}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "==> network $nwid (public) on the agent's controller"

cp "$plugin" "$work/bin/zerotier"
cp /usr/lib/cni/portmap "$work/bin/portmap"
cat >"$work/smoke.conflist" <<EOF
{"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "zt-smoke", "plugins": [
  {"type": "zerotier", "network": "$nwid", "agentSocket": "$work/agent.sock",
   "pendingDeleteDir": "$work/pending-del", "attachWait": 30},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}
EOF
# libcni runs in the host namespace, as a runtime would (portmap's rules go there).
cni() { # cni VERB POD [options]
    local verb=$1 pod=$2
    shift 2
    in_host "$driver" "$verb" -conflist "$work/smoke.conflist" -cni-path "$work/bin" \
        -cache-dir "$work/cache" -id "c-$pod" -netns "/var/run/netns/$prefix-$pod" \
        -args "IgnoreUnknown=1;K8S_POD_NAMESPACE=smoke;K8S_POD_NAME=$pod" "$@"
}
cni_list() { # cni_list VERB [options]: STATUS and GC, for our plugin only
    local verb=$1
    shift
    in_host "$driver" "$verb" -conflist "$work/smoke.conflist" -cni-path "$work/bin" -type zerotier "$@"
}

echo "==> ADD p1 (hostPort 18080 -> 80) and p2"
cni add p1 -port-mappings '[{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]' >"$work/p1.json"
cni add p2 >"$work/p2.json"
cat "$work/p1.json" "$work/p2.json"
for pod in p1 p2; do
    [ "$(json "$work/$pod.json" 'v["cniVersion"]')" = 1.0.0 ] || fail "$pod: result version"
    [ "$(json "$work/$pod.json" 'v["interfaces"][0]["sandbox"]')" = "/var/run/netns/$prefix-$pod" ] ||
        fail "$pod: sandbox"
    [ "$(json "$work/$pod.json" 'v["ips"][0]["interface"]')" = 0 ] || fail "$pod: ips[0].interface"
done
ip1=$(json "$work/p1.json" 'v["ips"][0]["address"].split("/")[0]')
ip2=$(json "$work/p2.json" 'v["ips"][0]["address"].split("/")[0]')

echo "==> ping p1 ($ip1) <-> p2 ($ip2)"
ip netns exec "$prefix-p1" ping -c 2 -W 3 "$ip2" >/dev/null || fail "p1 cannot ping p2"
ip netns exec "$prefix-p2" ping -c 2 -W 3 "$ip1" >/dev/null || fail "p2 cannot ping p1"

echo "==> portmap after zerotier: DNAT of hostPort 18080 to $ip1:80"
in_host iptables -t nat -S | grep -q -- "--to-destination $ip1:80" || fail "no portmap DNAT rule"

echo "==> CHECK p1, then again after deleting its interface by hand"
cni check p1 || fail "CHECK of an intact pod"
ip -n "$prefix-p1" link del eth0
if cni check p1 >"$work/check.json" 2>/dev/null; then
    fail "CHECK passed without the pod's interface"
fi
echo "    CHECK failed as it should: $(cat "$work/check.json")"

echo "==> STATUS and GC (spec 1.1, exec'd as libcni 1.2+ does), keeping p1 only"
cni_list status || fail "STATUS"
cni_list gc -valid c-p1/eth0 || fail "GC"
endpoints=$(cli endpoints -j --socket "$work/agent.sock")
echo "$endpoints" | grep -q '"key": *"k8s/smoke/p1"' || fail "GC removed p1: $endpoints"
echo "$endpoints" | grep -q '"key": *"k8s/smoke/p2"' && fail "GC kept p2: $endpoints"

echo "==> DEL p1 twice (with its port mappings, as runtimes pass them), p2 after GC"
mappings='[{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]'
cni del p1 -port-mappings "$mappings" || fail "first DEL"
cni del p1 -port-mappings "$mappings" || fail "second DEL"
cni del p2 || fail "DEL of a collected pod"
in_host iptables -t nat -S | grep -q -- "--to-destination $ip1:80" && fail "portmap rule left behind"

echo "==> the agent stopped: DEL is recorded for replay, STATUS says 50"
kill "$(ip netns pids "$prefix-host")"
for _ in $(seq 50); do
    [ -z "$(ip netns pids "$prefix-host")" ] && break
    sleep 0.1
done
cni add p1 >/dev/null 2>&1 && fail "ADD without an agent"
cni del p1 || fail "DEL without an agent"
ls "$work/pending-del"/*.json >/dev/null 2>&1 || fail "no pending delete recorded"
if cni_list status >"$work/status.json" 2>/dev/null; then
    fail "STATUS without an agent"
fi
[ "$(json "$work/status.json" 'v["code"]')" = 50 ] || fail "STATUS code: $(cat "$work/status.json")"

echo "smoke: all checks passed"
