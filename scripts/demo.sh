#!/usr/bin/env bash
# The demo: a private ZeroTier planet and network on one machine.
#
# Three network namespaces on a bridge (10.213.250.0/24, which exists only inside them): a
# root node that also runs the network controller, and two member hosts, each a
# `zt-agent run`. The planet is made here with `zt-agent mkworld`, with the root as its only
# root. The members come ONLINE through the root and ECHO each other. Then a network is
# created through the controller API, both hosts join it, are refused until authorized,
# get their addresses on a `zt...` tap and ping each other over IPv4 and IPv6 (RFC4193).
# Everything is removed at the end.
#
# Run as root (it creates network namespaces): ./scripts/demo.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the demo creates network namespaces: run it as root" >&2
    exit 1
fi
if ! command -v ip >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

echo "==> building zt-agent"
cargo build -q -p zt-agent
agent=$(pwd)/target/debug/zt-agent

subnet=10.213.250
port=9993
prefix=ztdemo-$$
names=(root member-a member-b)
work=$(mktemp -d /tmp/ztdemo.XXXXXX)

cleanup() {
    set +e
    for name in "${names[@]}" br; do
        local netns=$prefix-$name
        [ -e "/run/netns/$netns" ] || continue
        # shellcheck disable=SC2046 # one pid per word
        kill -KILL $(ip netns pids "$netns") 2>/dev/null
        ip netns del "$netns"
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { # in_ns NAME COMMAND...: runs a command inside a demo host
    local netns=$prefix-$1
    shift
    ip netns exec "$netns" "$@"
}

cli() { # cli NAME ARGS...: zt-agent's CLI against that host's agent
    local name=$1
    shift
    in_ns "$name" "$agent" --home "$work/$name" "$@"
}

json_field() { # json_field FIELD: reads JSON on stdin, prints one top-level field
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]))' "$1"
}

echo "==> network: bridge + ${#names[@]} namespaces on $subnet.0/24"
ip netns add "$prefix-br"
ip -n "$prefix-br" link add br0 type bridge
ip -n "$prefix-br" link set br0 up
for i in "${!names[@]}"; do
    name=${names[$i]}
    netns=$prefix-$name
    ip netns add "$netns"
    ip -n "$netns" link set lo up
    ip -n "$prefix-br" link add "port$i" type veth peer name eth0 netns "$netns"
    ip -n "$prefix-br" link set "port$i" master br0 up
    ip -n "$netns" addr add "$subnet.$((i + 1))/24" dev eth0
    ip -n "$netns" link set eth0 up
    echo "    $name: $subnet.$((i + 1))"
done

echo "==> identities"
declare -A address
for name in "${names[@]}"; do
    mkdir -p "$work/$name"
    "$agent" idtool generate "$work/$name/identity.secret" "$work/$name/identity.public" >/dev/null
    address[$name]=$(cut -d: -f1 "$work/$name/identity.public")
    echo "    $name: ${address[$name]}"
done

echo "==> planet with root ${address[root]} at $subnet.1/$port (zt-agent mkworld)"
"$agent" mkworld init "$work/root/identity.public" >"$work/template.json"
python3 - "$work/template.json" "$work/root/identity.public" "$subnet.1/$port" \
    >"$work/planet.json" <<'EOF'
import json, sys
template, root_public, endpoint = sys.argv[1:4]
world = json.load(open(template))
world["worldType"] = "planet"
world["roots"] = [{"identity": open(root_public).read().strip(), "stableEndpoints": [endpoint]}]
json.dump(world, sys.stdout, indent=2)
EOF
"$agent" mkworld "$work/planet.json" -o "$work/planet"
for name in "${names[@]}"; do
    cp "$work/planet" "$work/$name/planet"
done

echo "==> starting zt-agent run in each namespace"
for name in "${names[@]}"; do
    in_ns "$name" "$agent" run --home "$work/$name" --port "$port" \
        --socket "$work/$name/agent.sock" >"$work/$name.log" 2>&1 &
done

for name in "${names[@]}"; do
    online=False
    for _ in $(seq 120); do
        online=$(cli "$name" info -j 2>/dev/null | json_field online 2>/dev/null || true)
        [ "$online" = True ] && break
        sleep 0.5
    done
    if [ "$online" != True ]; then
        echo "$name did not come ONLINE; its log:" >&2
        cat "$work/$name.log" >&2
        exit 1
    fi
    echo "    $name (${address[$name]}) is ONLINE"
done

echo "==> ECHO between the members"
for pair in "member-a member-b" "member-b member-a"; do
    read -r from to <<<"$pair"
    for attempt in $(seq 20); do
        if reply=$(cli "$from" echo "${address[$to]}" 2>&1); then
            echo "    $from -> $to: $reply"
            break
        fi
        [ "$attempt" -eq 20 ] && { echo "    $from -> $to: no reply: $reply" >&2; exit 1; }
        sleep 1
    done
done

# Relayed traffic made the root send RENDEZVOUS; give the members a moment to go direct.
sleep 3
for name in "${names[@]}"; do
    echo "==> zt-agent listpeers on $name"
    cli "$name" listpeers
done

echo "==> a network on the root's controller (POST /controller/network)"
nwid=$(cli root api POST /controller/network '{
    "name": "demo", "private": true,
    "v4AssignMode": {"zt": true}, "v6AssignMode": {"rfc4193": true, "6plane": true, "zt": false},
    "ipAssignmentPools": [{"ipRangeStart": "10.213.251.10", "ipRangeEnd": "10.213.251.250"}],
    "routes": [{"target": "10.213.251.0/24"}]
}' | json_field id)
echo "    network $nwid"

network_field() { # network_field HOST FIELD
    cli "$1" api GET "/network/$nwid" 2>/dev/null | json_field "$2" 2>/dev/null || true
}

for name in member-a member-b; do
    cli "$name" join "$nwid"
done
for name in member-a member-b; do
    for _ in $(seq 60); do
        [ "$(network_field "$name" status)" = ACCESS_DENIED ] && break
        sleep 0.5
    done
    echo "    $name: $(network_field "$name" status) (not authorized yet)"
done

echo "==> authorizing both members (POST /controller/network/$nwid/member/<address>)"
for name in member-a member-b; do
    cli root api POST "/controller/network/$nwid/member/${address[$name]}" '{"authorized": true}' >/dev/null
done
declare -A ipv4 ipv6
for name in member-a member-b; do
    for _ in $(seq 80); do
        addrs=$(cli "$name" api GET "/network/$nwid" 2>/dev/null | python3 -c '
import json, sys
n = json.load(sys.stdin)
print(" ".join(a.split("/")[0] for a in n.get("assignedAddresses", [])) if n.get("status") == "OK" else "")' || true)
        [ -n "$addrs" ] && break
        sleep 0.5
    done
    [ -n "$addrs" ] || { echo "$name got no config; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
    for a in $addrs; do
        case $a in 10.*) ipv4[$name]=$a ;; fd*) ipv6[$name]=$a ;; esac
    done
    echo "    $name: $addrs"
done
cli member-a listnetworks

echo "==> ping over the ZeroTier network"
for pair in "member-a member-b" "member-b member-a"; do
    read -r from to <<<"$pair"
    for target in "${ipv4[$to]}" "${ipv6[$to]}"; do
        ok=
        for _ in $(seq 30); do
            if in_ns "$from" ping -c 1 -W 1 "$target" >/dev/null 2>&1; then ok=1; break; fi
        done
        [ -n "$ok" ] || { echo "    $from -> $to ($target): no answer" >&2; exit 1; }
        echo "    $from -> $to ($target): $(in_ns "$from" ping -c 3 -i 0.2 "$target" | tail -1)"
    done
done

echo "==> done; removing the namespaces"
