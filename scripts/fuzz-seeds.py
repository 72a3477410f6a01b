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


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data_dir = Path(sys.argv[1])
    corpus_dir = Path(sys.argv[2])
    seeds = {"packet": [], "fragment": [], "identity": [], "world": [],
             "netconfig": [], "credentials": []}

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

    for target, inputs in seeds.items():
        directory = corpus_dir / target
        directory.mkdir(parents=True, exist_ok=True)
        for raw in inputs:
            (directory / hashlib.sha1(raw).hexdigest()).write_bytes(raw)
        print(f"seeds for {target}: {len(set(inputs))}")


if __name__ == "__main__":
    main()
