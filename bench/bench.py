#!/usr/bin/env python3
"""The benchmark: this project against its peers, on two hosts in network namespaces.

Two hosts (network namespaces) are joined by veth pairs to a bridge (in a namespace of its
own), on 10.213.240.0/24, which exists only inside these namespaces. Every system under test
makes an overlay between the two hosts, all of them at once, each on its own subnet:

  veth           the hosts' own link, no tunnel: the limit
  zt-agent       zt-agent to zt-agent (host-1 is the planet's root and the controller)
  zt-container   a container on each host, attached through the plugin API
  wireguard-go   Debian's wireguard-go, configured with wg
  boringtun      boringtun-cli from crates.io, configured with wg
  nebula         Debian's nebula, with a CA made here and a static host map
  zerotier-one   ZeroTier One, only when ZT_ONE_BINARY names its binary (root, controller
                 and planet made here, as for zt-agent)

Then, in rounds, each system in turn: iperf3 TCP (1 and 4 streams), iperf3 UDP at 64 and
1400 byte payloads (packets per second the receiver got), ping RTT (average and p99), the CPU
time of the tunnel processes on both hosts per gigabit moved in the TCP tests, and their peak
RSS (VmHWM). Results: a Markdown table with our ratios to each peer (stdout and table.md),
results.json, and chart.png (when matplotlib can be imported).

Nothing here sends a packet outside the namespaces it made; everything it made (processes,
namespaces, WireGuard sockets, its work folder) is removed on exit, also on failure or signal.

Run it through bench/run.sh, which builds zt-agent and finds or installs the tools.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

UNDERLAY = "10.213.240"  # the hosts' LAN (inside the bench's namespaces only)
ZT_PORTS = {"zt-agent": 9993, "zt-container": 9994, "zerotier-one": 9995}
IPERF_PORT = 5201
MIB = 1024 * 1024

# How each metric reads: its unit, and whether more is better.
METRICS = [
    ("tcp1_gbps", "TCP 1 stream", "Gbit/s", True),
    ("tcp4_gbps", "TCP 4 streams", "Gbit/s", True),
    ("udp64_kpps", "UDP 64 B", "kpps", True),
    ("udp1400_kpps", "UDP 1400 B", "kpps", True),
    ("rtt_avg_ms", "RTT avg", "ms", False),
    ("rtt_p99_ms", "RTT p99", "ms", False),
    ("cpu_s_per_gbit", "CPU", "s/Gbit", False),
    ("rss_mib", "peak RSS", "MiB", False),
]

OURS = ("zt-agent", "zt-container")

# Set on SIGINT/SIGTERM: setups waiting in other threads give up at once, so that the
# cleanup is not held up.
STOPPING = threading.Event()


class BenchError(Exception):
    """A step of the bench failed: says which, with the command's output."""


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, timeout=60, check=True, input_text=None):
    """Runs a command, returns its stdout; raises BenchError with its output when it fails."""
    try:
        done = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"{' '.join(args)}: no answer in {timeout}s") from error
    if check and done.returncode != 0:
        raise BenchError(
            f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()} {done.stdout.strip()}"
        )
    return done.stdout


def wait_for(what, check, timeout, poll=0.2):
    """Calls check() until it returns something true; raises BenchError after timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        if STOPPING.is_set():
            raise BenchError(f"{what}: interrupted")
        try:
            value = check()
            if value:
                return value
        except BenchError as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise BenchError(f"{what}: not within {timeout}s{detail}")
        time.sleep(poll)


class Testbed:
    """The namespaces, processes and files of one run; `close` removes all of them."""

    def __init__(self, work):
        self.prefix = f"ztbench-{os.getpid()}"
        self.work = work
        self.namespaces = []
        self.processes = []
        self.wireguard_sockets = []
        self.logs = {}

    def netns(self, name):
        full = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        run(["ip", "-n", full, "link", "set", "lo", "up"])
        return full

    def exec(self, netns, args, timeout=60, check=True):
        return run(["ip", "netns", "exec", netns, *args], timeout=timeout, check=check)

    def spawn(self, netns, args, name, env=None):
        """Starts a long-lived process in a namespace (ip netns exec execs it: same pid)."""
        path = os.path.join(self.work, f"{name}.log")
        with open(path, "wb") as log_file:
            process = subprocess.Popen(
                ["ip", "netns", "exec", netns, *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.processes.append(process)
        self.logs[name] = path
        return process

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for netns in self.namespaces:
            pids = run(["ip", "netns", "pids", netns], check=False).split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        deadline = time.monotonic() + 3
        for netns in self.namespaces:
            while time.monotonic() < deadline:
                if not run(["ip", "netns", "pids", netns], check=False).split():
                    break
                time.sleep(0.1)
            for pid in run(["ip", "netns", "pids", netns], check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for netns in reversed(self.namespaces):
            run(["ip", "netns", "del", netns], check=False)
        for path in self.wireguard_sockets:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.work, ignore_errors=True)

    def tail(self, name, lines=20):
        path = self.logs.get(name)
        if not path or not os.path.exists(path):
            return ""
        with open(path, errors="replace") as log_file:
            return "".join(log_file.readlines()[-lines:])


def remove_stale_testbeds():
    """Deletes the namespaces of earlier runs that were killed before they could clean up
    (named ztbench-<pid>-..., their pid gone)."""
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != "ztbench" or not parts[1].isdigit():
            continue
        if os.path.exists(f"/proc/{parts[1]}"):
            continue
        for pid in run(["ip", "netns", "pids", name], check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        log(f"removing {name}, left by a killed run")
        run(["ip", "netns", "del", name], check=False)


class Link:
    """What a system gives the measurements: where the client and server run, the server's
    overlay address, and the processes doing the tunnel's work on both hosts."""

    def __init__(self, client_ns, server_ns, server_address, tunnel_pids):
        self.client_ns = client_ns
        self.server_ns = server_ns
        self.server_address = server_address
        self.tunnel_pids = tunnel_pids


def make_lan(bed):
    """host-1 and host-2 on a bridge: returns their namespaces."""
    bridge = bed.netns("br")
    run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", bridge, "link", "set", "br0", "up"])
    hosts = []
    for index in (1, 2):
        host = bed.netns(f"h{index}")
        run(
            ["ip", "-n", bridge, "link", "add", f"port{index}", "type", "veth", "peer", "name",
             "eth0", "netns", host]
        )
        run(["ip", "-n", bridge, "link", "set", f"port{index}", "master", "br0", "up"])
        run(["ip", "-n", host, "addr", "add", f"{UNDERLAY}.{index}/24", "dev", "eth0"])
        run(["ip", "-n", host, "link", "set", "eth0", "up"])
        hosts.append(host)
    return hosts


def ping_until_answered(bed, netns, address, timeout=60):
    wait_for(
        f"ping {address} from {netns}",
        lambda: " 1 received" in bed.exec(
            netns, ["ping", "-c", "1", "-W", "1", address], check=False, timeout=5
        ),
        timeout,
        poll=0.1,
    )


def address_on(bed, netns, device):
    """The first IPv4 address on a device, or None."""
    out = bed.exec(netns, ["ip", "-4", "-o", "addr", "show", "dev", device], check=False)
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


# --- Systems -------------------------------------------------------------------------------


def setup_veth(bed, hosts, tools):
    return Link(hosts[0], hosts[1], f"{UNDERLAY}.2", [])


def wireguard_keys():
    private = run(["wg", "genkey"]).strip()
    public = run(["wg", "pubkey"], input_text=private + "\n").strip()
    return private, public


def setup_wireguard(bed, hosts, program, system, subnet, tag, port):
    """Two userspace WireGuard nodes (wireguard-go or boringtun-cli), configured by wg."""
    keys = [wireguard_keys(), wireguard_keys()]
    # The UAPI sockets live in /var/run/wireguard, which every namespace shares: the names
    # carry this run's pid.
    names = [f"{tag}{os.getpid() % 100000}{side}" for side in "ab"]
    processes = []
    for index, host in enumerate(hosts):
        name = names[index]
        bed.wireguard_sockets.append(f"/var/run/wireguard/{name}.sock")
        # (WG_LOG_FILE: boringtun-cli's log, which is otherwise a shared file in /tmp.)
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", WG_SUDO="1",
                   WG_LOG_FILE=os.path.join(bed.work, f"{name}.out"))
        processes.append(bed.spawn(host, [*program, name], f"{system}-h{index + 1}", env=env))
    for index, host in enumerate(hosts):
        name, other = names[index], 1 - index
        socket = f"/var/run/wireguard/{name}.sock"
        wait_for(f"{name}'s UAPI socket", lambda s=socket: os.path.exists(s), 20)
        key_file = os.path.join(bed.work, f"{name}.key")
        with open(key_file, "w") as key:
            key.write(keys[index][0] + "\n")
        bed.exec(
            host,
            ["wg", "set", name, "private-key", key_file, "listen-port", str(port),
             "peer", keys[other][1], "allowed-ips", f"{subnet}.{other + 1}/32",
             "endpoint", f"{UNDERLAY}.{other + 1}:{port}"],
        )
        # The largest MTU a 1500-byte IPv4 underlay carries (60 bytes of WireGuard overhead).
        run(["ip", "-n", host, "addr", "add", f"{subnet}.{index + 1}/24", "dev", name])
        run(["ip", "-n", host, "link", "set", name, "mtu", "1440", "up"])
    ping_until_answered(bed, hosts[0], f"{subnet}.2", timeout=30)
    return Link(hosts[0], hosts[1], f"{subnet}.2", [p.pid for p in processes])


def setup_wireguard_go(bed, hosts, tools):
    program = [tools["wireguard-go"], "-f"]
    return setup_wireguard(bed, hosts, program, "wireguard-go", "10.213.241", "wgg", 51820)


def setup_boringtun(bed, hosts, tools):
    program = [tools["boringtun"], "--foreground", "--disable-drop-privileges"]
    return setup_wireguard(bed, hosts, program, "boringtun", "10.213.246", "btn", 51821)


def setup_nebula(bed, hosts, tools):
    subnet = "10.213.242"
    folder = os.path.join(bed.work, "nebula")
    os.makedirs(folder)
    cert = tools["nebula-cert"]
    run([cert, "ca", "-name", "bench", "-out-crt", f"{folder}/ca.crt", "-out-key", f"{folder}/ca.key"])
    processes = []
    for index, host in enumerate(hosts):
        name = f"h{index + 1}"
        run(
            [cert, "sign", "-ca-crt", f"{folder}/ca.crt", "-ca-key", f"{folder}/ca.key",
             "-name", name, "-ip", f"{subnet}.{index + 1}/24",
             "-out-crt", f"{folder}/{name}.crt", "-out-key", f"{folder}/{name}.key"]
        )
        other = 2 - index
        anything = [{"port": "any", "proto": "any", "host": "any"}]
        config = {
            "pki": {"ca": f"{folder}/ca.crt", "cert": f"{folder}/{name}.crt",
                    "key": f"{folder}/{name}.key"},
            "static_host_map": {f"{subnet}.{other}": [f"{UNDERLAY}.{other}:4242"]},
            "lighthouse": {"am_lighthouse": False, "hosts": []},
            "listen": {"host": "0.0.0.0", "port": 4242},
            "punchy": {"punch": False},
            # The largest MTU a 1500-byte IPv4 underlay carries (60 bytes of overhead).
            "tun": {"disabled": False, "dev": "nebula1", "mtu": 1440},
            "logging": {"level": "warning"},
            "firewall": {"outbound": anything, "inbound": anything},
        }
        # YAML is a superset of JSON.
        with open(f"{folder}/{name}.yml", "w") as config_file:
            json.dump(config, config_file)
        processes.append(
            bed.spawn(host, [tools["nebula"], "-config", f"{folder}/{name}.yml"], f"nebula-{name}")
        )
    ping_until_answered(bed, hosts[0], f"{subnet}.2", timeout=30)
    return Link(hosts[0], hosts[1], f"{subnet}.2", [p.pid for p in processes])


class ZtAgents:
    """Two zt-agent processes (one per host) on a planet of their own: host-1 is its root and
    the controller; a private network with an IPv4 pool is made on it."""

    def __init__(self, bed, hosts, agent, system, subnet):
        self.bed, self.hosts, self.agent, self.subnet = bed, hosts, agent, subnet
        self.port = ZT_PORTS[system]
        self.homes = [os.path.join(bed.work, system, f"h{i}") for i in (1, 2)]
        self.addresses = []
        for home in self.homes:
            os.makedirs(home)
            run([agent, "idtool", "generate", f"{home}/identity.secret", f"{home}/identity.public"])
            with open(f"{home}/identity.public") as public:
                self.addresses.append(public.read().split(":")[0])
        make_planet(agent, self.homes, f"{self.homes[0]}/identity.public", self.port, bed.work)
        self.processes = []
        for index, host in enumerate(hosts):
            home = self.homes[index]
            self.processes.append(
                bed.spawn(
                    host,
                    [agent, "run", "--home", home, "--port", str(self.port),
                     "--socket", f"{home}/agent.sock"],
                    f"{system}-h{index + 1}",
                )
            )
        for index in (0, 1):
            wait_for(
                f"{system} on host-{index + 1} online",
                lambda i=index: json.loads(self.cli(i, ["info", "-j"])).get("online") is True,
                60,
                poll=0.3,
            )
        network = {
            "name": system, "private": True,
            "v4AssignMode": {"zt": True},
            "v6AssignMode": {"rfc4193": False, "6plane": False, "zt": False},
            "ipAssignmentPools": [{"ipRangeStart": f"{subnet}.10", "ipRangeEnd": f"{subnet}.250"}],
            "routes": [{"target": f"{subnet}.0/24"}],
        }
        self.nwid = json.loads(
            self.cli(0, ["api", "POST", "/controller/network", json.dumps(network)])
        )["id"]

    def cli(self, index, args, timeout=30):
        return self.bed.exec(
            self.hosts[index], [self.agent, "--home", self.homes[index], *args], timeout=timeout
        )

    def authorize(self, member):
        self.cli(
            0,
            ["api", "POST", f"/controller/network/{self.nwid}/member/{member}",
             '{"authorized": true}'],
        )


def make_planet(agent, homes, root_public, port, work):
    """A planet whose only root is host-1 (made with zt-agent mkworld), copied into homes."""
    template = json.loads(run([agent, "mkworld", "init", root_public]))
    with open(root_public) as public:
        identity = public.read().strip()
    template["worldType"] = "planet"
    template["roots"] = [{"identity": identity, "stableEndpoints": [f"{UNDERLAY}.1/{port}"]}]
    description = os.path.join(work, f"planet-{port}.json")
    with open(description, "w") as out:
        json.dump(template, out)
    planet = os.path.join(work, f"planet-{port}")
    run([agent, "mkworld", description, "-o", planet])
    for home in homes:
        shutil.copy(planet, os.path.join(home, "planet"))


def setup_zt_agent(bed, hosts, tools):
    agents = ZtAgents(bed, hosts, tools["zt-agent"], "zt-agent", "10.213.243")
    for index in (0, 1):
        agents.cli(index, ["join", agents.nwid])
        agents.authorize(agents.addresses[index])

    def tap_address(index):
        for network in json.loads(agents.cli(index, ["listnetworks", "-j"])):
            if network.get("nwid", network.get("id")) == agents.nwid:
                for assigned in network.get("assignedAddresses") or []:
                    if assigned.startswith(agents.subnet + "."):
                        device = network.get("portDeviceName")
                        if device and address_on(bed, hosts[index], device):
                            return assigned.split("/")[0]
        return None

    addresses = [wait_for(f"zt-agent tap on host-{i + 1}", lambda i=i: tap_address(i), 60)
                 for i in (0, 1)]
    ping_until_answered(bed, hosts[0], addresses[1])
    return Link(hosts[0], hosts[1], addresses[1], [p.pid for p in agents.processes])


def setup_zt_container(bed, hosts, tools):
    agents = ZtAgents(bed, hosts, tools["zt-agent"], "zt-container", "10.213.244")
    containers = [bed.netns("c1"), bed.netns("c2")]
    addresses = []
    for index, container in enumerate(containers):
        attach = ["attach", "--network", agents.nwid, "--key", f"bench/c{index + 1}",
                  "--netns", container, "--if-name", "eth0"]

        def refused_member(index=index, attach=attach):
            # The endpoint is a member of its own, refused until authorized: the refusal
            # names it (while it waits for the controller's first answer, ask again).
            answer = agents.bed.exec(
                hosts[index],
                [agents.agent, "--home", agents.homes[index], *attach, "--wait", "3", "-j"],
                check=False,
            )
            try:
                refusal = json.loads(answer)
            except json.JSONDecodeError:
                return None
            if refusal.get("code") == "NotAuthorized":
                return refusal["details"]["memberAddress"]
            return None

        member = wait_for(f"container c{index + 1} refused", refused_member, 60, poll=0.5)
        agents.authorize(member)
        agents.cli(index, [*attach, "--wait", "30"], timeout=60)
        addresses.append(
            wait_for(f"c{index + 1}'s address", lambda c=container: address_on(bed, c, "eth0"), 30)
        )
    ping_until_answered(bed, containers[0], addresses[1])
    return Link(containers[0], containers[1], addresses[1], [p.pid for p in agents.processes])


def setup_zerotier_one(bed, hosts, tools):
    """ZeroTier One on both hosts: host-1 is the root of a planet made here and the
    controller. Its local.conf turns off everything that would reach beyond the planet."""
    binary, agent = tools["zerotier-one"], tools["zt-agent"]
    port, subnet = ZT_PORTS["zerotier-one"], "10.213.245"
    homes = [os.path.join(bed.work, "zerotier-one", f"h{i}") for i in (1, 2)]
    addresses = []
    token = "ztbench" + os.urandom(8).hex()
    for home in homes:
        os.makedirs(home)
        run([binary, "-i", "generate", f"{home}/identity.secret", f"{home}/identity.public"])
        with open(f"{home}/identity.public") as public:
            addresses.append(public.read().split(":")[0])
        with open(f"{home}/authtoken.secret", "w") as secret:
            secret.write(token)
        os.chmod(f"{home}/authtoken.secret", 0o600)
        settings = {"primaryPort": port, "allowSecondaryPort": False, "portMappingEnabled": False,
                    "allowTcpFallbackRelay": False}
        with open(f"{home}/local.conf", "w") as conf:
            json.dump({"settings": settings}, conf)
    make_planet(agent, homes, f"{homes[0]}/identity.public", port, bed.work)
    processes = [bed.spawn(host, [binary, homes[i]], f"zerotier-one-h{i + 1}")
                 for i, host in enumerate(hosts)]

    def api(index, method, path, body=None):
        args = ["curl", "-sf", "-X", method, "-H", f"X-ZT1-Auth: {token}",
                f"http://127.0.0.1:{port}{path}"]
        if body is not None:
            args += ["-d", json.dumps(body)]
        return json.loads(bed.exec(hosts[index], args, timeout=15) or "null")

    for index in (0, 1):
        wait_for(f"zerotier-one on host-{index + 1} online",
                 lambda i=index: api(i, "GET", "/status").get("online"), 60, poll=0.3)
    network = {
        "name": "bench", "private": True, "v4AssignMode": {"zt": True},
        "ipAssignmentPools": [{"ipRangeStart": f"{subnet}.10", "ipRangeEnd": f"{subnet}.250"}],
        "routes": [{"target": f"{subnet}.0/24"}],
    }
    nwid = api(0, "POST", f"/controller/network/{addresses[0]}______", network)["id"]
    for index in (0, 1):
        api(index, "POST", f"/network/{nwid}", {})
        api(0, "POST", f"/controller/network/{nwid}/member/{addresses[index]}", {"authorized": True})

    def tap_address(index):
        network = api(index, "GET", f"/network/{nwid}")
        for assigned in network.get("assignedAddresses") or []:
            device = network.get("portDeviceName")
            if assigned.startswith(subnet + ".") and device and address_on(bed, hosts[index], device):
                return assigned.split("/")[0]
        return None

    overlay = [wait_for(f"zerotier-one tap on host-{i + 1}", lambda i=i: tap_address(i), 60)
               for i in (0, 1)]
    ping_until_answered(bed, hosts[0], overlay[1])
    return Link(hosts[0], hosts[1], overlay[1], [p.pid for p in processes])


SYSTEMS = {
    "zt-agent": setup_zt_agent,
    "zt-container": setup_zt_container,
    "veth": setup_veth,
    "wireguard-go": setup_wireguard_go,
    "boringtun": setup_boringtun,
    "nebula": setup_nebula,
    "zerotier-one": setup_zerotier_one,
}


# --- Measurements --------------------------------------------------------------------------


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # The command name may hold spaces: fields after its closing parenthesis.
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError as error:
            raise BenchError(f"tunnel process {pid} is gone") from error
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def peak_rss_mib(pids):
    """The largest VmHWM among these processes (one per host), in MiB."""
    peak = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
    return peak / MIB


def iperf(bed, link, args, duration, omit, attempts=3):
    """One iperf3 test (JSON `end`). A test whose control connection failed is tried again
    after a pause: the server may still be closing the previous one."""
    for attempt in range(1, attempts + 1):
        out = bed.exec(
            link.client_ns,
            ["iperf3", "-c", link.server_address, "-p", str(IPERF_PORT), "-J", "-t",
             str(duration), "-O", str(omit), "--connect-timeout", "5000", *args],
            timeout=duration + omit + 30,
            check=False,
        )
        try:
            result = json.loads(out)
        except json.JSONDecodeError:
            result = {"error": out[-500:]}
        if "error" not in result:
            return result["end"]
        log(f"  iperf3 {' '.join(args)} to {link.server_address} (try {attempt}): {result['error']}")
        time.sleep(1)
    raise BenchError(f"iperf3 {' '.join(args)} to {link.server_address}: {result['error']}")


def measure_tcp(bed, link, streams, duration, omit):
    """Gbit/s the receiver got, and the bits it got."""
    end = iperf(bed, link, ["-P", str(streams)], duration, omit)
    received = end["sum_received"]
    return received["bits_per_second"] / 1e9, received["bytes"] * 8


def measure_udp(bed, link, length, duration):
    """Packets per second the receiver got (sent minus lost), in thousands."""
    # -b 0: as fast as the sender can; -w: socket buffers large enough that the receiving
    # iperf3 itself drops little.
    end = iperf(bed, link, ["-u", "-l", str(length), "-b", "0", "-w", "4M"], duration, 0)
    total = end.get("sum_received") or end["sum"]
    received = total["packets"] - total["lost_packets"]
    return received / total["seconds"] / 1000


def measure_ping(bed, link, count, interval):
    out = bed.exec(
        link.client_ns,
        ["ping", "-c", str(count), "-i", str(interval), "-W", "1", link.server_address],
        timeout=count * interval + 30,
        check=False,
    )
    rtts = []
    for line in out.splitlines():
        if "time=" in line:
            rtts.append(float(line.split("time=")[1].split()[0]))
    if not rtts:
        raise BenchError(f"ping {link.server_address}: no replies: {out[-300:]}")
    return rtts


def percentile(values, fraction):
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # nearest rank
    return ordered[min(rank, len(ordered)) - 1]


def measure_round(bed, link, settings):
    """One round of every measurement on one system."""
    duration, omit = settings["duration"], settings["omit"]
    result = {}
    cpu_before = cpu_seconds(link.tunnel_pids)
    result["tcp1_gbps"], bits1 = measure_tcp(bed, link, 1, duration, omit)
    result["tcp4_gbps"], bits4 = measure_tcp(bed, link, 4, duration, omit)
    cpu = cpu_seconds(link.tunnel_pids) - cpu_before
    # The warm-up seconds (-O) are not in the bits, but are in the CPU time: scale them in.
    moved_gbit = (bits1 + bits4) / 1e9 * (duration + omit) / duration
    result["cpu_s_per_gbit"] = cpu / moved_gbit if link.tunnel_pids and moved_gbit > 0 else None
    result["udp64_kpps"] = measure_udp(bed, link, 64, duration)
    result["udp1400_kpps"] = measure_udp(bed, link, 1400, duration)
    result["rtts_ms"] = measure_ping(bed, link, settings["pings"], settings["ping_interval"])
    return result


def summarize(rounds, pids):
    """Medians over rounds; RTT statistics over every ping of every round."""
    summary = {}
    for key, _, _, _ in METRICS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        summary[key] = statistics.median(values) if values else None
    rtts = [rtt for r in rounds for rtt in r["rtts_ms"]]
    summary["rtt_avg_ms"] = statistics.fmean(rtts)
    summary["rtt_p99_ms"] = percentile(rtts, 0.99)
    summary["rss_mib"] = peak_rss_mib(pids) if pids else None
    return summary


# --- Output --------------------------------------------------------------------------------


def formatted(value, unit):
    if value is None:
        return "-"
    if unit in ("ms",):
        return f"{value:.3f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(ours, theirs, more_is_better):
    if ours is None or theirs is None or theirs == 0 or ours == 0:
        return "-"
    value = ours / theirs
    return f"{value:.2f}x"


def tables(report):
    systems = [name for name in report["systems"] if name in report["results"]]
    lines = [
        "| system | " + " | ".join(f"{label} ({unit})" for _, label, unit, _ in METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for name in systems:
        summary = report["results"][name]
        cells = [formatted(summary[key], unit) for key, _, unit, _ in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for ours in OURS:
        if ours not in report["results"]:
            continue
        peers = [name for name in systems if name not in OURS]
        if not peers:
            continue
        lines += [
            "",
            f"{ours} / peer (Gbit/s and kpps: higher is better; RTT, CPU and RSS: lower is better)",
            "",
            "| peer | " + " | ".join(label for _, label, _, _ in METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for peer in peers:
            cells = [
                ratio(report["results"][ours][key], report["results"][peer][key], better)
                for key, _, _, better in METRICS
            ]
            lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(report, path):
    """A bar chart per metric (matplotlib); returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = [name for name in report["systems"] if name in report["results"]]
    figure, axes = plt.subplots(2, 4, figsize=(18, 8))
    colors = ["#d9480f" if name in OURS else "#868e96" if name == "veth" else "#1c7ed6"
              for name in systems]
    for axis, (key, label, unit, better) in zip(axes.flat, METRICS):
        values = [report["results"][name][key] or 0 for name in systems]
        bars = axis.barh(systems, values, color=colors)
        axis.invert_yaxis()
        axis.set_title(f"{label} ({unit}, {'higher' if better else 'lower'} is better)",
                       fontsize=10)
        for bar, name in zip(bars, systems):
            value = report["results"][name][key]
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                      f" {formatted(value, unit) if value is not None else 'n/a'}",
                      va="center", fontsize=8)
        axis.margins(x=0.25)
    figure.suptitle(f"zt-agent benchmark, {report['date']} ({report['mode']} mode, "
                    f"{report['settings']['rounds']} rounds; {report['machine']})", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} x {cpu}, Linux {platform.release()}"


# --- Main ----------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true",
                        help="CI mode: tiny durations, one round (asserts no speed)")
    parser.add_argument("--systems", help="comma-separated subset of: " + ",".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, help="rounds of every system (default 3; short 1)")
    parser.add_argument("--duration", type=int, help="seconds per iperf3 test (default 5; short 1)")
    parser.add_argument("--out", default="bench/results", help="folder for the results")
    parser.add_argument("--zt-agent", required=True, help="the zt-agent binary")
    parser.add_argument("--wireguard-go", default=shutil.which("wireguard-go"))
    parser.add_argument("--boringtun", default=shutil.which("boringtun-cli"))
    parser.add_argument("--nebula", default=shutil.which("nebula"))
    parser.add_argument("--zerotier-one", default=os.environ.get("ZT_ONE_BINARY"))
    options = parser.parse_args()

    if os.geteuid() != 0:
        sys.exit("the bench makes network namespaces: run it as root")
    settings = {
        "rounds": options.rounds or (1 if options.short else 3),
        "duration": options.duration or (1 if options.short else 5),
        "omit": 0 if options.short else 1,
        "pings": 20 if options.short else 200,
        "ping_interval": 0.02,
    }
    tools = {
        "zt-agent": os.path.abspath(options.zt_agent),
        "wireguard-go": options.wireguard_go,
        "boringtun": options.boringtun,
        "nebula": options.nebula,
        "nebula-cert": shutil.which("nebula-cert"),
        "zerotier-one": options.zerotier_one,
    }
    needs = {"wireguard-go": ["wireguard-go"], "boringtun": ["boringtun"],
             "nebula": ["nebula", "nebula-cert"], "zerotier-one": ["zerotier-one"]}
    wanted = options.systems.split(",") if options.systems else list(SYSTEMS)
    systems, skipped = [], {}
    for name in wanted:
        if name not in SYSTEMS:
            sys.exit(f"unknown system {name}; known: {', '.join(SYSTEMS)}")
        missing = [tool for tool in needs.get(name, []) if not tools[tool]]
        if missing:
            skipped[name] = f"no {', '.join(missing)}"
            log(f"skipping {name}: no {', '.join(missing)}")
            continue
        systems.append(name)
    for tool in ("iperf3", "ping", "ip", "curl" if "zerotier-one" in systems else "ip"):
        if not shutil.which(tool):
            sys.exit(f"the bench needs {tool}")

    remove_stale_testbeds()
    work = tempfile.mkdtemp(prefix="ztbench.")
    bed = Testbed(work)

    def stop(signum, _frame):
        STOPPING.set()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "short" if options.short else "full",
        "command": " ".join(sys.argv),
        "machine": machine(),
        "settings": settings,
        # Other work on the machine lowers every row: the load before and after says how much.
        "load_average": {"start": list(os.getloadavg())},
        "systems": systems,
        "skipped": skipped,
        "results": {},
        "rounds": {},
    }
    current = None
    try:
        hosts = make_lan(bed)
        # Set up side by side: most of it is waiting (for roots, controllers, handshakes).
        started = time.monotonic()

        def setup(name):
            try:
                link = SYSTEMS[name](bed, hosts, tools)
            except BenchError as error:
                raise BenchError(f"setting up {name}: {error}") from error
            log(f"{name} up in {time.monotonic() - started:.1f}s: server {link.server_address}")
            return link

        log(f"setting up {', '.join(systems)}")
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(systems)) as pool:
            futures = {name: pool.submit(setup, name) for name in systems}
            failures = []
            for name, future in futures.items():
                try:
                    future.result()
                except BenchError as error:
                    failures.append((name, error))
            if failures:
                current = failures[0][0]
                raise failures[0][1]
            links = {name: future.result() for name, future in futures.items()}
        for server_ns in {link.server_ns for link in links.values()}:
            bed.spawn(server_ns, ["iperf3", "-s", "-p", str(IPERF_PORT)], f"iperf3-{server_ns}")
        for server_ns in {link.server_ns for link in links.values()}:
            wait_for(f"iperf3 server in {server_ns}",
                     lambda ns=server_ns: f":{IPERF_PORT} " in bed.exec(ns, ["ss", "-ltn"]), 10)
        rounds = {name: [] for name in systems}
        for number in range(settings["rounds"]):
            # Each round in another order, so that no system always runs first or last.
            shift = number % len(systems)
            for name in systems[shift:] + systems[:shift]:
                current = name
                log(f"round {number + 1}/{settings['rounds']}: {name}")
                result = measure_round(bed, links[name], settings)
                rounds[name].append(result)
                log(f"  {name}: TCP {result['tcp1_gbps']:.2f}/{result['tcp4_gbps']:.2f} Gbit/s, "
                    f"UDP {result['udp64_kpps']:.0f}/{result['udp1400_kpps']:.0f} kpps, "
                    f"RTT {statistics.fmean(result['rtts_ms']):.3f} ms")
        current = None
        for name in systems:
            report["results"][name] = summarize(rounds[name], links[name].tunnel_pids)
            report["rounds"][name] = rounds[name]
    except BenchError as error:
        print(f"bench failed{f' ({current})' if current else ''}: {error}", file=sys.stderr)
        for name in bed.logs:
            if current and name.startswith(current):
                print(f"--- the last lines of {name}'s log\n{bed.tail(name)}", file=sys.stderr)
        return 1
    finally:
        log("cleaning up: processes, namespaces, " + work)
        bed.close()

    report["load_average"]["end"] = list(os.getloadavg())
    os.makedirs(options.out, exist_ok=True)
    table = tables(report)
    load = report["load_average"]
    heading = (f"{report['date']}, {report['mode']} mode, {settings['rounds']} rounds of "
               f"{settings['duration']} s per test; {report['machine']}; load average "
               f"{load['start'][0]:.1f} before, {load['end'][0]:.1f} after\n"
               f"command: {report['command']}\n")
    if skipped:
        heading += "skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n"
    with open(os.path.join(options.out, "table.md"), "w") as out:
        out.write(heading + "\n" + table)
    with open(os.path.join(options.out, "results.json"), "w") as out:
        json.dump(report, out, indent=2)
    drawn = chart(report, os.path.join(options.out, "chart.png"))
    print(heading)
    print(table)
    print(f"results: {options.out}/table.md, results.json"
          + (", chart.png" if drawn else " (no chart: matplotlib is missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
