#!/usr/bin/env python3
"""Endpoint scale: attach-to-first-ping latency and the RSS of an agent with many endpoints.

Issue 7's goals, measured (never asserted): "attach to first ping (plugin API attach of a new
endpoint, controller on the same LAN, member auto-authorized): p50 at most 150 ms, p99 at most
500 ms over 100 attaches" and "100 endpoints on one agent in at most 64 MiB RSS".

Two hosts on a bridge, as in bench.py. host-1 runs zt-agent as the planet's root and the
controller, and joins the network itself (its tap is the ping target). host-2 runs zt-agent
with controller credentials, so that it authorizes each new endpoint's member itself. Then,
one after another, N container namespaces are made and each gets an endpoint through the
plugin socket (POST /v1/attach, a new key, wait 30 s); the clock runs from the request to
the first answered ping from inside the container to host-1's address (ping every 10 ms).
All N stay attached; then the agent's VmRSS and VmHWM are read.

    bench/endpoints.py --zt-agent target/release/zt-agent [--count 100] [--out DIR]

Results: a summary on stdout and endpoints.json in --out. `--count 5` is a quick check (CI's
scripts may run it); docs/benchmark.md records a full run.
"""

import argparse
import datetime
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the testbed: namespaces, processes, planet)

PORT = 9996
SUBNET = "10.213.246"
MIB = 1024 * 1024


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the agent's plugin socket."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def plugin_call(socket_path, path, body, timeout=60):
    connection = UnixHTTPConnection(socket_path, timeout)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise bench.BenchError(f"{path}: {response.status} {answer.decode(errors='replace')}")
    return json.loads(answer)


def status_field(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(options, bed):
    agent = options.zt_agent
    hosts = bench.make_lan(bed)
    homes = [os.path.join(bed.work, f"h{i}") for i in (1, 2)]
    for home in homes:
        os.makedirs(home)
        bench.run([agent, "idtool", "generate", f"{home}/identity.secret",
                   f"{home}/identity.public"])
    bench.make_planet(agent, homes, f"{homes[0]}/identity.public", PORT, bed.work)
    root = bed.spawn(
        hosts[0],
        [agent, "run", "--home", homes[0], "--port", str(PORT), "--socket",
         f"{homes[0]}/agent.sock", "--api-bind", "0.0.0.0"],
        "root",
    )
    del root

    def cli(index, args, timeout=30):
        return bed.exec(hosts[index], [agent, "--home", homes[index], *args], timeout=timeout)

    bench.wait_for("host-1 online",
                   lambda: json.loads(cli(0, ["info", "-j"])).get("online") is True, 60, 0.3)
    network = {
        "name": "endpoints", "private": True,
        "v4AssignMode": {"zt": True},
        "v6AssignMode": {"rfc4193": False, "6plane": False, "zt": False},
        "ipAssignmentPools": [{"ipRangeStart": f"{SUBNET}.2", "ipRangeEnd": f"{SUBNET}.250"}],
        "routes": [{"target": f"{SUBNET}.0/24"}],
    }
    nwid = json.loads(cli(0, ["api", "POST", "/controller/network", json.dumps(network)]))["id"]
    address = open(f"{homes[0]}/identity.public").read().split(":")[0]
    cli(0, ["join", nwid])
    cli(0, ["api", "POST", f"/controller/network/{nwid}/member/{address}",
            '{"authorized": true}'])

    def host_address():
        for joined in json.loads(cli(0, ["listnetworks", "-j"])):
            if joined.get("nwid", joined.get("id")) == nwid:
                device = joined.get("portDeviceName")
                for assigned in joined.get("assignedAddresses") or []:
                    if assigned.startswith(SUBNET + ".") and device and bench.address_on(
                            bed, hosts[0], device):
                        return assigned.split("/")[0]
        return None

    target = bench.wait_for("host-1's address on the network", host_address, 60)

    host = bed.spawn(
        hosts[1],
        [agent, "run", "--home", homes[1], "--port", str(PORT), "--socket",
         f"{homes[1]}/agent.sock", "--controller-url", f"http://{bench.UNDERLAY}.1:{PORT}",
         "--controller-token-file", f"{homes[0]}/authtoken.secret"],
        "host",
    )
    bench.wait_for("host-2 online",
                   lambda: json.loads(cli(1, ["info", "-j"])).get("online") is True, 60, 0.3)
    socket_path = f"{homes[1]}/agent.sock"
    bench.wait_for("host-2's identity pool", lambda: os.path.exists(
        f"{homes[1]}/endpoint-identities.secret"), 60)
    # The pool fills in the background after the start: give it the time a host has
    # between boot and its first pod.
    time.sleep(options.settle)
    rss_idle = status_field(host.pid, "VmRSS")

    latencies, attach_only = [], []
    for index in range(options.count):
        container = bed.netns(f"c{index}")
        request = {
            "network": nwid, "key": f"bench/e{index}", "owner": "bench",
            "containerId": f"bench{index}", "netns": f"/var/run/netns/{container}",
            "ifName": "eth0", "wait": 30,
        }
        started = time.monotonic()
        plugin_call(socket_path, "/v1/attach", request)
        attached = time.monotonic()
        # One reply ends it; a request every 10 ms until then.
        bed.exec(container, ["ping", "-c", "1", "-i", "0.01", "-w", "20", target], timeout=30)
        answered = time.monotonic()
        attach_only.append((attached - started) * 1000)
        latencies.append((answered - started) * 1000)
        if options.pause:
            time.sleep(options.pause)
        bench.log(f"endpoint {index + 1}: attach {attach_only[-1]:.0f} ms, "
                  f"first ping {latencies[-1]:.0f} ms")
    time.sleep(2)
    rss = status_field(host.pid, "VmRSS")
    return {
        "count": options.count,
        "attach_to_first_ping_ms": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "mean": statistics.mean(latencies),
            "max": max(latencies),
        },
        "attach_ms": {"p50": percentile(attach_only, 0.50), "p99": percentile(attach_only, 0.99)},
        "rss_idle_mib": rss_idle / MIB,
        "rss_mib": rss / MIB,
        "rss_peak_mib": status_field(host.pid, "VmHWM") / MIB,
        "latencies_ms": latencies,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zt-agent", required=True, help="the zt-agent binary")
    parser.add_argument("--count", type=int, default=100, help="endpoints to attach")
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds between the agent's start and the first attach")
    parser.add_argument("--pause", type=float, default=0,
                        help="seconds between one endpoint's first ping and the next attach")
    parser.add_argument("--out", default="bench/results", help="folder for endpoints.json")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the bench makes network namespaces: run it as root")
    bench.remove_stale_testbeds()
    bed = bench.Testbed(tempfile.mkdtemp(prefix="zt-bench-endpoints-"))
    try:
        results = measure(options, bed)
    except bench.BenchError as error:
        for name in ("root", "host"):
            sys.stderr.write(f"--- {name} log ---\n{bed.tail(name, 40)}")
        sys.exit(f"endpoints bench failed: {error}")
    finally:
        bed.close()
    results["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["agent"] = options.zt_agent
    results["load"] = os.getloadavg()
    os.makedirs(options.out, exist_ok=True)
    with open(os.path.join(options.out, "endpoints.json"), "w") as out:
        json.dump(results, out, indent=1)
    ping = results["attach_to_first_ping_ms"]
    print(f"{results['count']} attaches: attach to first ping p50 {ping['p50']:.0f} ms, "
          f"p99 {ping['p99']:.0f} ms (mean {ping['mean']:.0f}, max {ping['max']:.0f}); "
          f"attach alone p50 {results['attach_ms']['p50']:.0f} ms, "
          f"p99 {results['attach_ms']['p99']:.0f} ms")
    print(f"RSS with {results['count']} endpoints: {results['rss_mib']:.1f} MiB "
          f"(idle {results['rss_idle_mib']:.1f} MiB, peak {results['rss_peak_mib']:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
