#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets from the known-answer data in tests/data.

    fuzz-seeds.py DATA_DIR CORPUS_DIR

Seeds are named by the SHA-1 of their content, so running this again adds nothing twice.
The input formats are the fuzz targets' own (see fuzz/fuzz_targets/*.rs):
  packet    one UDP payload: a packet (armored or plain) or a fragment
  fragment  a sequence of datagrams, each as a delay byte (100 ms units), a 2-byte big-endian
            length and its bytes
  identity  an identity in text form or in binary form
  world     a serialized world (planet or moon)
  dictionary, netconfig  a dictionary's bytes
  credentials  a selector byte (0 COM, 1 capability, 2 tag, 3 revocation, 4 COO, 5 rules)
            and the credential's bytes
  rules     0 and a binary rule list, or 1 and a JSON rule list
  plugin_api  a selector byte (0 attach, 1 detach, 2 check, 3 sandbox, 4 gc) and the body
  controller_api  JSON bodies separated by NUL, posted to the network and member in turn
  local_api  0 and a POST /network/<nwid> body, or 1 and a local.conf file
  cni       NAME=VALUE lines, NUL, the network config on stdin
  docker    calls separated by NUL, each a method byte (see fuzz_targets/docker.rs) and body
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

# At most this many datagrams from the captures, spread over them evenly: enough variety of
# verbs and sizes without making every smoke run start with thousands of inputs.
MAX_CAPTURE_SEEDS = 400


def udp_payloads(pcap: Path):
    """Yields the UDP payloads of an Ethernet pcap (IPv4 and IPv6, no IP fragments)."""
    data = pcap.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1" or magic == b"\x4d\x3c\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4" or magic == b"\xa1\xb2\x3c\x4d":
        endian = ">"
    else:
        raise ValueError(f"{pcap}: not a pcap file")
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 14:
            continue
        ethertype = struct.unpack("!H", frame[12:14])[0]
        packet = frame[14:]
        if ethertype == 0x8100 and len(frame) >= 18:
            ethertype = struct.unpack("!H", frame[16:18])[0]
            packet = frame[18:]
        if ethertype == 0x0800 and len(packet) >= 20:
            header_len = (packet[0] & 0x0F) * 4
            flags_fragment = struct.unpack("!H", packet[6:8])[0]
            if packet[9] != 17 or flags_fragment & 0x3FFF:
                continue
            udp = packet[header_len:]
        elif ethertype == 0x86DD and len(packet) >= 40:
            if packet[6] != 17:
                continue
            udp = packet[40:]
        else:
            continue
        if len(udp) >= 8:
            yield udp[8:]


def spread(items, limit):
    """At most `limit` of `items`, taken evenly from the whole list."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def length_prefixed(datagrams, delay=0):
    """The fragment target's input: records of delay (u8, 100 ms units), length, datagram."""
    return b"".join(struct.pack("!BH", delay, len(d)) + d for d in datagrams)


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def json_seeds(capture: Path, seeds):
    """The JSON targets' seeds: the controller records of the capture, and bodies as the
    plugin API, CNI and libnetwork documents show them."""
    networks = [json.loads(p.read_text()) for p in sorted(capture.glob("controller-network-*.json"))]
    members = [json.loads(p.read_text()) for p in sorted(capture.glob("controller-member-*.json"))]
    rules = json.loads((capture / "controller-rules-rich-revision1.json").read_text())
    seeds["rules"].append(b"\x01" + compact(rules))
    seeds["rules"] += [b"\x01" + compact(rule) for rule in rules]
    for network in networks:
        seeds["rules"].append(b"\x01" + compact(network.get("rules", [])))
        for member in members:
            seeds["controller_api"].append(compact(network) + b"\x00" + compact(member))
    seeds["controller_api"] += [
        b"{}\x00{\"authorized\":true}",
        compact({"name": "n", "private": True, "v4AssignMode": {"zt": True},
                 "ipAssignmentPools": [{"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"}],
                 "routes": [{"target": "10.0.0.0/24", "via": None}],
                 "v6AssignMode": {"rfc4193": True, "6plane": True, "zt": False}})
        + b"\x00" + compact({"authorized": True, "ipAssignments": ["10.0.0.3"],
                             "tags": [[1, 2]], "capabilities": [1], "activeBridge": True}),
    ]

    seeds["local_api"] += [
        b"\x00" + compact({"allowManaged": False, "allowGlobal": True, "allowDefault": True,
                           "allowDNS": True}),
        b"\x00",
        b"\x01allowManaged=0\nallowGlobal=1\nallowDefault=true\nallowDNS=1\n",
    ]

    nwid = "8056c2e21c000001"
    attach = {"network": nwid, "key": "k8s/default/web", "containerId": "abc123",
              "netns": "/var/run/netns/cni-1", "ifName": "eth0", "mtu": 2800, "wait": 30,
              "owner": "cni", "defaultRoute": True, "hostAccess": True,
              "extraIps": ["10.1.0.5/24"], "extraRoutes": [{"dst": "10.2.0.0/16", "gateway": "10.1.0.1"}]}
    for selector, body in [
        (0, attach),
        (0, {"network": nwid, "key": "docker/x", "containerId": "abc", "netnsFd": 3, "ifName": "eth1"}),
        (1, {"key": "k8s/default/web", "containerId": "abc123", "ifName": "eth0", "network": nwid,
             "keepIdentity": True}),
        (2, {"containerId": "abc123", "ifName": "eth0"}),
        (3, {"key": "docker/x", "containerId": "abc", "ifName": "eth0", "sandbox": "/var/run/docker/netns/1"}),
        (4, {"owner": "cni", "network": nwid, "valid": ["k8s/default/web"],
             "validAttachments": [{"containerId": "abc123", "ifName": "eth0"}]}),
    ]:
        seeds["plugin_api"].append(bytes([selector]) + compact(body))

    env = (b"CNI_COMMAND=ADD\nCNI_CONTAINERID=abc123\nCNI_IFNAME=eth0\n"
           b"CNI_NETNS=/var/run/netns/cni-1\nCNI_PATH=/opt/cni/bin:/usr/lib/cni\n"
           b"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web\n")
    conf = {"cniVersion": "1.0.0", "name": "zt", "type": "zerotier", "network": nwid,
            "agentSocket": "/run/zt-agent/plugin.sock", "mtu": 2800, "defaultRoute": True,
            "hostAccess": False, "attachWait": 60, "pendingDeleteDir": "/var/lib/x",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
            "dns": {"nameservers": ["10.0.0.1"], "domain": "z", "search": ["z"], "options": ["ndots:2"]},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": []},
            "cni.dev/valid-attachments": [{"containerID": "abc123", "ifname": "eth0"}]}
    seeds["cni"] += [env + b"\x00" + compact(conf), compact(conf),
                     env.replace(b"ADD", b"GC") + b"\x00" + compact({"cniVersion": "1.1.0", "name": "zt", "network": nwid})]

    # The docker target's method bytes: 0 CreateNetwork, 4 CreateEndpoint, 7 Join, 8 Leave,
    # 5 DeleteEndpoint, 1 DeleteNetwork, 11 RequestPool, 13 RequestAddress, 14 ReleaseAddress.
    pool = {"AddressSpace": "zerotier", "Pool": "", "SubPool": "", "V6": False,
            "Options": {"zerotier.network": nwid}}
    create = {"NetworkID": "d0c", "Options": {"com.docker.network.generic": {"zerotier.network": nwid,
              "com.docker.network.driver.mtu": "2800"}},
              "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "10.147.17.0/24",
                            "Gateway": "10.147.17.1/24"}], "IPv6Data": []}
    endpoint = {"NetworkID": "d0c", "EndpointID": "e1", "Interface": {"Address": "10.147.17.5/24"},
                "Options": {"zerotier.key": "web"}}
    calls = [(11, pool), (13, {"PoolID": "zerotier-" + nwid, "Address": "", "Options": {}}),
             (0, create), (4, endpoint),
             (7, {"NetworkID": "d0c", "EndpointID": "e1", "SandboxKey": "/var/run/docker/netns/1"}),
             (8, {"NetworkID": "d0c", "EndpointID": "e1"}), (5, {"NetworkID": "d0c", "EndpointID": "e1"}),
             (1, {"NetworkID": "d0c"})]
    seeds["docker"].append(b"\x00".join(bytes([m]) + compact(b) for m, b in calls))
    seeds["docker"] += [bytes([m]) + compact(b) for m, b in calls]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data_dir = Path(sys.argv[1])
    corpus_dir = Path(sys.argv[2])
    seeds = {"packet": [], "fragment": [], "identity": [], "world": [],
             "netconfig": [], "credentials": [], "dictionary": [], "rules": [],
             "plugin_api": [], "controller_api": [], "cni": [], "docker": [], "local_api": []}

    vectors = json.loads((data_dir / "zt-vl1-packet-vectors.json").read_text())
    # Keys are "<case>.<field>", values hex (or "1"/"0" for outcomes).
    harness = vectors["harness"]
    packet_fields = {"plain", "wire", "wire_c1", "wire_c3", "decrypted", "compressed_plain",
                     "roundtrip", "full_wire", "head", "fragment1", "fragment2"}
    for key, value in harness.items():
        field = key.rsplit(".", 1)[-1]
        if field in packet_fields:
            seeds["packet"].append(bytes.fromhex(value))
        elif field.startswith("serialized_"):
            seeds["identity"].append(bytes.fromhex(value))
    head, first, second = (bytes.fromhex(harness["FRAG." + k]) for k in ("head", "fragment1", "fragment2"))
    seeds["fragment"] += [
        length_prefixed([head, first, second]),
        length_prefixed([second, head, first]),
        length_prefixed([first, second, head]),
        length_prefixed([first, first, second, head]),
        # A piece that comes after the reassembler's 5 s limit.
        length_prefixed([head, first]) + length_prefixed([second], delay=60),
    ]
    for key in ("PLANET.serialized", "MOON.serialized"):
        seeds["world"].append(bytes.fromhex(harness[key]))

    identities = list(vectors["identities"].values())
    selftest = json.loads((data_dir / "zt-vl1-selftest-vectors.json").read_text())
    identities += [selftest["KNOWN_GOOD_IDENTITY"], selftest["KNOWN_BAD_IDENTITY"]]
    capture = data_dir / "capture-1.14.1"
    for secret in sorted(capture.glob("*.identity.secret")):
        text = secret.read_text().strip()
        identities.append(text)
        # The public form: the first three fields.
        identities.append(":".join(text.split(":")[:3]))
    seeds["identity"] += [text.encode() for text in identities]
    seeds["world"].append((capture / "planet").read_bytes())

    datagrams = []
    for pcap in sorted(capture.glob("*.pcap")):
        datagrams += list(udp_payloads(pcap))
    datagrams = spread(datagrams, MAX_CAPTURE_SEEDS)
    seeds["packet"] += datagrams
    # Runs of consecutive datagrams: fragments of one packet travel together.
    seeds["fragment"] += [length_prefixed(datagrams[i : i + 4]) for i in range(0, len(datagrams), 4)]

    # VL2: the config dictionary, and credentials/rules behind their selector byte (see
    # fuzz_targets/credentials.rs: 0 COM, 1 capability, 2 tag, 3 revocation, 4 COO, 5 rules).
    vl2 = json.loads((data_dir / "zt-vl2-vectors.json").read_text())["hex"]
    for key, value in vl2.items():
        raw = bytes.fromhex(value) if all(c in "0123456789abcdefABCDEF" for c in value) else None
        if raw is None:
            continue
        if key.startswith("network config dictionary") or key.startswith("dictionary example"):
            seeds["netconfig"].append(raw)
            seeds["dictionary"].append(raw)
        elif key.startswith("COM") and "serialized" in key:
            seeds["credentials"].append(b"\x00" + raw)
        elif key.startswith("Capability serialized"):
            seeds["credentials"].append(b"\x01" + raw)
        elif key.startswith("Tag serialized"):
            seeds["credentials"].append(b"\x02" + raw)
        elif key.startswith("Revocation serialized"):
            seeds["credentials"].append(b"\x03" + raw)
        elif key.startswith("COO serialized"):
            seeds["credentials"].append(b"\x04" + raw)
        elif key.startswith("rule["):
            seeds["credentials"].append(b"\x05" + raw)
            seeds["rules"].append(b"\x00" + raw)

    json_seeds(capture, seeds)

    for target, inputs in seeds.items():
        directory = corpus_dir / target
        directory.mkdir(parents=True, exist_ok=True)
        for raw in inputs:
            (directory / hashlib.sha1(raw).hexdigest()).write_bytes(raw)
        print(f"seeds for {target}: {len(set(inputs))}")


if __name__ == "__main__":
    main()
