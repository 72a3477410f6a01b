#!/usr/bin/env bash
# The demo: containers on a private ZeroTier network, on one machine, with no flags.
#
# Two hosts, each a network namespace running `zt-agent run`, on a bridge in a namespace of
# its own (10.213.250.0/24, which exists only inside these namespaces). host-1 is also the
# planet's only root (a planet made here with `zt-agent mkworld`) and the network's
# controller; host-2 is a plain agent. A private network (an IPv4 pool and RFC4193 IPv6) is
# created through host-1's controller API. Three "containers" (network namespaces made with
# `ip netns add`; two on host-1, one on host-2) are attached with `zt-agent attach`, the
# plugin API's client: each is a ZeroTier member of its own, refused until the controller
# authorizes it. Their addresses are shown, every pair pings over IPv4 and IPv6, and
# `zt-agent endpoints` shows the counters (the two containers on host-1 are switched
# locally). Everything is removed at the end, also when a step fails.
#
# Run as root (it creates network namespaces): ./scripts/demo.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the demo creates network namespaces: run it as root" >&2
    exit 1
fi
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

subnet=10.213.250 # the hosts' LAN, inside the demo's namespaces only
port=9993
prefix=ztdemo-$$
hosts=(host-1 host-2)
containers=(c1 c2 c3)
declare -A host_of=([c1]=host-1 [c2]=host-1 [c3]=host-2)
work=$(mktemp -d /tmp/ztdemo.XXXXXX)

exec 3>&1 4>&2 # the demo's own output, for cleanup (a signal may come mid-redirection)
cleanup() {
    local status=$?
    set +e
    exec 1>&3 2>&4
    if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; then
        for host in "${hosts[@]}"; do
            [ -s "$work/$host.log" ] || continue
            echo "--- the last lines of $host's log" >&2
            tail -n 25 "$work/$host.log" >&2
        done
    fi
    echo "==> cleaning up: agents, namespaces, $work"
    # Every process the demo started runs in one of its namespaces: stop them first, so
    # that nothing holds a namespace while it is deleted.
    local netns pids
    for netns in "${hosts[@]}" "${containers[@]}" br; do
        netns=$prefix-$netns
        [ -e "/run/netns/$netns" ] || continue
        pids=$(ip netns pids "$netns")
        # shellcheck disable=SC2086 # one pid per word
        [ -z "$pids" ] || kill -TERM $pids 2>/dev/null
    done
    for netns in "${hosts[@]}" "${containers[@]}" br; do
        netns=$prefix-$netns
        [ -e "/run/netns/$netns" ] || continue
        for _ in $(seq 20); do
            [ -z "$(ip netns pids "$netns")" ] && break
            sleep 0.1
        done
        pids=$(ip netns pids "$netns")
        # shellcheck disable=SC2086 # one pid per word
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
        ip netns del "$netns"
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> building zt-agent"
cargo build -q -p zt-agent
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$(pwd)/$target_dir
agent=$target_dir/debug/zt-agent

in_ns() { # in_ns NAME COMMAND...: runs a command inside one of the demo's namespaces
    local netns=$prefix-$1
    shift
    ip netns exec "$netns" "$@"
}

cli() { # cli HOST ARGS...: zt-agent's CLI against that host's agent (local API, socket)
    local host=$1
    shift
    in_ns "$host" "$agent" --home "$work/$host" "$@"
}

json_field() { # json_field PATH: reads JSON on stdin, prints a field (a.b.c) or nothing
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for name in sys.argv[1].split("."):
    value = value.get(name) if isinstance(value, dict) else None
print("" if value is None else value)' "$1"
}

echo "==> two hosts on a bridge, $subnet.0/24"
ip netns add "$prefix-br"
ip -n "$prefix-br" link add br0 type bridge
ip -n "$prefix-br" link set br0 up
for i in "${!hosts[@]}"; do
    host=${hosts[$i]}
    ip netns add "$prefix-$host"
    ip -n "$prefix-$host" link set lo up
    ip -n "$prefix-br" link add "port$i" type veth peer name eth0 netns "$prefix-$host"
    ip -n "$prefix-br" link set "port$i" master br0 up
    ip -n "$prefix-$host" addr add "$subnet.$((i + 1))/24" dev eth0
    ip -n "$prefix-$host" link set eth0 up
done

declare -A address
for host in "${hosts[@]}"; do
    mkdir -p "$work/$host"
    "$agent" idtool generate "$work/$host/identity.secret" "$work/$host/identity.public" >/dev/null
    address[$host]=$(cut -d: -f1 "$work/$host/identity.public")
done
echo "    host-1: $subnet.1, ZeroTier ${address[host-1]} (root and controller)"
echo "    host-2: $subnet.2, ZeroTier ${address[host-2]}"

echo "==> the demo's own planet: root host-1 at $subnet.1/$port (zt-agent mkworld)"
"$agent" mkworld init "$work/host-1/identity.public" >"$work/template.json"
python3 - "$work/template.json" "$work/host-1/identity.public" "$subnet.1/$port" \
    >"$work/planet.json" <<'EOF'
import json, sys
template, root_public, endpoint = sys.argv[1:4]
world = json.load(open(template))
world["worldType"] = "planet"
world["roots"] = [{"identity": open(root_public).read().strip(), "stableEndpoints": [endpoint]}]
json.dump(world, sys.stdout, indent=2)
EOF
"$agent" mkworld "$work/planet.json" -o "$work/planet" >/dev/null
for host in "${hosts[@]}"; do
    cp "$work/planet" "$work/$host/planet"
done

echo "==> zt-agent run --socket <home>/agent.sock on each host"
for host in "${hosts[@]}"; do
    in_ns "$host" "$agent" run --home "$work/$host" --port "$port" \
        --socket "$work/$host/agent.sock" >"$work/$host.log" 2>&1 &
done
for host in "${hosts[@]}"; do
    online=
    for _ in $(seq 120); do
        online=$(cli "$host" info -j 2>/dev/null | json_field online 2>/dev/null || true)
        [ "$online" = True ] && break
        sleep 0.5
    done
    [ "$online" = True ] || { echo "$host did not come ONLINE" >&2; exit 1; }
    echo "    $(cli "$host" info)"
done

echo "==> a private network on host-1's controller (zt-agent api POST /controller/network)"
nwid=$(cli host-1 api POST /controller/network '{
    "name": "demo", "private": true,
    "v4AssignMode": {"zt": true}, "v6AssignMode": {"rfc4193": true, "6plane": false, "zt": false},
    "ipAssignmentPools": [{"ipRangeStart": "10.213.251.10", "ipRangeEnd": "10.213.251.250"}],
    "routes": [{"target": "10.213.251.0/24"}]
}' | json_field id)
echo "    network $nwid: 10.213.251.0/24 and RFC4193 IPv6"

echo "==> three containers (ip netns add): c1 and c2 on host-1, c3 on host-2"
for c in "${containers[@]}"; do
    ip netns add "$prefix-$c"
    ip -n "$prefix-$c" link set lo up
done

attach() { # attach CONTAINER WAIT [-j]: zt-agent attach on the container's host
    local c=$1 wait=$2
    shift 2
    cli "${host_of[$c]}" attach --network "$nwid" --key "demo/$c" --netns "$prefix-$c" \
        --if-name eth0 --wait "$wait" "$@"
}

declare -A member
for c in "${containers[@]}"; do
    host=${host_of[$c]}
    echo "==> $c on $host: zt-agent attach --network $nwid --key demo/$c --netns $prefix-$c"
    # The endpoint is a member of its own, unknown to the private network: the attach is
    # refused, and the error names the member to authorize. (While the endpoint still waits
    # for the controller's first answer the refusal is "not ready": ask again.)
    for attempt in $(seq 20); do
        if attach "$c" 3 -j >"$work/answer.json" 2>"$work/error.txt"; then
            echo "$c was attached without authorization" >&2
            exit 1
        fi
        [ "$(json_field code <"$work/answer.json" 2>/dev/null)" = NotAuthorized ] && break
        [ "$attempt" -lt 20 ] || { cat "$work/error.txt" >&2; exit 1; }
    done
    member[$c]=$(json_field details.memberAddress <"$work/answer.json")
    echo "    refused: $(cat "$work/error.txt")"
    echo "    authorizing member ${member[$c]}: zt-agent api POST /controller/network/$nwid/member/${member[$c]}"
    cli host-1 api POST "/controller/network/$nwid/member/${member[$c]}" \
        '{"authorized": true}' >/dev/null
    echo "    $(attach "$c" 30)"
done

echo "==> the containers' interfaces (ip -n <container> -brief addr show eth0)"
declare -A ipv4 ipv6
for c in "${containers[@]}"; do
    # IPv6 addresses are usable once duplicate address detection is done.
    for _ in $(seq 50); do
        ip -n "$prefix-$c" -6 addr show dev eth0 scope global tentative | grep -q inet6 || break
        sleep 0.1
    done
    echo "    $c: $(ip -n "$prefix-$c" -brief addr show dev eth0)"
    for a in $(ip -n "$prefix-$c" -brief addr show dev eth0 | cut -d' ' -f2-); do
        case $a in
            10.*) ipv4[$c]=${a%/*} ;;
            fd*) ipv6[$c]=${a%/*} ;;
        esac
    done
    if [ -z "${ipv4[$c]:-}" ] || [ -z "${ipv6[$c]:-}" ]; then
        echo "$c lacks an IPv4 or RFC4193 address" >&2
        exit 1
    fi
done

echo "==> ping between every pair of containers, IPv4 and IPv6"
for from in "${containers[@]}"; do
    for to in "${containers[@]}"; do
        [ "$from" != "$to" ] || continue
        if [ "${host_of[$from]}" = "${host_of[$to]}" ]; then
            how="same host, switched inside the agent"
        else
            how="${host_of[$from]} -> ${host_of[$to]}, over UDP"
        fi
        for target in "${ipv4[$to]}" "${ipv6[$to]}"; do
            ok=
            for _ in $(seq 20); do
                if in_ns "$from" ping -c 1 -W 1 "$target" >/dev/null 2>&1; then ok=1; break; fi
            done
            [ -n "$ok" ] || { echo "    $from -> $to $target: no answer" >&2; exit 1; }
            summary=$(in_ns "$from" ping -q -c 3 -i 0.2 -W 1 "$target" | awk -F'[ /]+' '
                /packets transmitted/ { sent = $1; received = $4 }
                /^rtt/ { avg = $8 }
                END { printf "%s/%s replies, avg %s ms", received, sent, avg }')
            printf '    %s -> %s  %-39s  %s  (%s)\n' "$from" "$to" "$target" "$summary" "$how"
        done
    done
done

for host in "${hosts[@]}"; do
    echo "==> zt-agent endpoints on $host"
    cli "$host" endpoints | sed 's/^/    /'
done
switched=$(cli host-1 endpoints -j | python3 -c '
import json, sys
counters = {e["key"]: e["counters"] for e in json.load(sys.stdin)}
print(min(counters[k]["switchedOutPackets"] for k in ("demo/c1", "demo/c2")))')
[ "$switched" -gt 0 ] || { echo "c1 and c2 switched no frames locally" >&2; exit 1; }
echo "    (c1 and c2 share host-1: their frames to each other are switched inside the agent)"

echo "==> zt-agent check, then detach"
echo "    $(cli host-2 check --key demo/c3)"
for c in "${containers[@]}"; do
    echo "    $c: $(cli "${host_of[$c]}" detach --key "demo/$c")"
done
if ip -n "$prefix-c1" link show dev eth0 >/dev/null 2>&1; then
    echo "c1's interface is still there after detach" >&2
    exit 1
fi
echo "    the containers' interfaces are gone"

echo "==> done"
