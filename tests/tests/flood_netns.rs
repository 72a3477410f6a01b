//! Issue 8 item 4, flood: garbage datagrams and HELLOs from fresh identities, sent from a
//! test namespace to an agent's UDP port on the test LAN, neither stop the agent from
//! serving its endpoints nor make it do more expensive work than its rate limits allow.
//!
//! Three hosts on a LAN: the first is root and controller, the second hosts the endpoint
//! under attack, the third sends the flood (a thread of this test that enters its
//! namespace). The flood is bounded in count and rate ([`FLOOD_SECONDS`] at
//! [`FLOOD_RATE`] datagrams a second by default; `ZT_FLOOD_SECONDS` and `ZT_FLOOD_RATE`
//! change them) and mixes:
//! - short junk (too short for a packet),
//! - packets for the agent's node from unknown senders with random bodies (MAC fails, or
//!   the sender is unknown),
//! - packets for nodes that are not there, and for the endpoint's node,
//! - one in ten a HELLO from a new identity, correctly MACed with the key agreed with the
//!   agent's node, whose address does not derive from its key: the node must run the
//!   memory-hard hash to find out, unless its identity-validation gate (8 new identities per
//!   /24 per 2 s) refuses it first. The hash runs on the agent's validator thread, not on
//!   its packet loop (`NodeConfig::defer_identity_validation`).
//!
//! What it asserts, by counting rather than timing: a container pings the attacked endpoint
//! all through each flood (garbage, then HELLOs) and nearly every ping is answered; the garbage is dropped at the
//! cheap stages (`zt_packet_dropped` grows by at least most of what was sent, ignoring the
//! kernel's own drops); the number of memory-hard validations (`zt_identity_validations`)
//! stays within what the gate allows over the flood's duration. The agent's CPU seconds
//! during the flood are printed (docs/reliability.md records them), not asserted.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use node_core::crypto::armor::{self, CipherSuite};
use node_core::crypto::c25519::KeyPair;
use node_core::identity::IDENTITY_PUBLIC_BINARY_LEN;
use node_core::vl2::NetworkId;
use node_core::wire::packet::{PROTO_VERSION, SOFTWARE_VERSION};
use node_core::wire::{emit_header, HelloRepr, Verb};
use node_core::{Address, Identity};
use serde_json::json;
use zt_agent::plugin_api::{AttachRequest, Endpoint};
use zt_agent::plugin_client::PluginClient;
use zt_e2e::{cpu_ticks, make_homes, require_privileged, Agent, Lan, Netns, TempDir, AGENT_PORT};

const FLOOD_SECONDS: u64 = 5;
const FLOOD_RATE: u64 = 2_000;
/// HELLOs from new identities a second in the second phase (`ZT_FLOOD_HELLO_RATE`).
const HELLO_RATE: u64 = 200;
/// The node's identity-validation gate: new identities per source prefix per interval.
const GATE_BURST: u64 = 8;
const GATE_INTERVAL: Duration = Duration::from_secs(2);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: the flood's bytes need no more than variety.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn address(&mut self) -> Address {
        loop {
            let mut bytes = [0u8; 5];
            self.fill(&mut bytes);
            let address = Address::from_bytes(&bytes);
            if !address.is_reserved() {
                return address;
            }
        }
    }
}

/// A HELLO to `target` from a new identity with real keys but an address that does not
/// derive from them, MACed with the key agreed with `target`.
fn forged_hello(noise: &mut Noise, target: &Identity) -> Vec<u8> {
    let mut secret = [0u8; 64];
    noise.fill(&mut secret);
    let keys = KeyPair::from_secret(&secret);
    let address = noise.address();
    let mut binary = Vec::with_capacity(IDENTITY_PUBLIC_BINARY_LEN + 64);
    binary.extend_from_slice(&address.to_bytes());
    binary.push(0);
    binary.extend_from_slice(&keys.public);
    binary.push(64);
    binary.extend_from_slice(&keys.secret);
    let (forged, _) = Identity::parse(&binary).expect("a well-formed identity");
    let key = forged
        .agree(target)
        .expect("the forged identity has its secret");
    let mut packet = Vec::with_capacity(256);
    emit_header(
        &mut packet,
        noise.next().to_be_bytes(),
        target.address(),
        address,
        Verb::Hello,
    );
    HelloRepr {
        protocol_version: PROTO_VERSION,
        software_version: SOFTWARE_VERSION,
        timestamp: 0,
        identity: forged.public_only(),
        physical_destination: None,
        planet: None,
        moons: None,
    }
    .emit(&mut packet);
    armor::armor(&mut packet, &key, CipherSuite::Poly1305);
    packet
}

/// A packet header for `destination` from a random sender, then `body_len` random bytes.
fn junk_packet(noise: &mut Noise, destination: Address, body_len: usize) -> Vec<u8> {
    let mut packet = Vec::with_capacity(28 + body_len);
    let source = noise.address();
    emit_header(
        &mut packet,
        noise.next().to_be_bytes(),
        destination,
        source,
        Verb::Frame,
    );
    // Random flags and MAC, then the body. Not marked fragmented: a head waiting for its
    // fragments is not dropped but expires, and this test counts drops.
    noise.fill(&mut packet[18..27]);
    packet[18] &= !0x40;
    let start = packet.len();
    packet.resize(start + body_len, 0);
    noise.fill(&mut packet[start..]);
    packet
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FloodKind {
    /// Junk of every kind but HELLOs.
    Garbage,
    /// HELLOs from new identities only.
    Hellos,
}

/// What the flood thread sent.
#[derive(Debug, Default)]
struct Sent {
    hellos: u64,
    total: u64,
}

/// The flood's datagrams, built before it starts so that sending is cheap.
fn build_flood(
    count: u64,
    agent: &Identity,
    endpoint: Address,
    kind: FloodKind,
) -> (Vec<Vec<u8>>, Sent) {
    let mut noise = Noise(0x5eed_f100d);
    let mut sent = Sent::default();
    let datagrams = (0..count)
        .map(|i| {
            sent.total += 1;
            let slot = match kind {
                FloodKind::Garbage => 1 + i % 9,
                FloodKind::Hellos => 0,
            };
            match slot {
                0 => {
                    sent.hellos += 1;
                    forged_hello(&mut noise, agent)
                }
                1..=3 => {
                    let mut junk = vec![0u8; 1 + noise.below(40) as usize];
                    noise.fill(&mut junk);
                    junk
                }
                kind => {
                    let destination = match kind {
                        4..=6 => agent.address(),
                        7 => endpoint,
                        _ => noise.address(),
                    };
                    let body_len = 8 + noise.below(1300) as usize;
                    junk_packet(&mut noise, destination, body_len)
                }
            }
        })
        .collect();
    (datagrams, sent)
}

/// Sends `datagrams` to `target` from inside `netns` at `rate` a second.
fn send_flood(netns: &Netns, target: SocketAddr, datagrams: Vec<Vec<u8>>, rate: u64) {
    let path = format!("/run/netns/{}", netns.name());
    let handle = File::open(&path).unwrap_or_else(|error| panic!("cannot open {path}: {error}"));
    nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|error| panic!("setns into {path}: {error}"));
    let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket in the flood namespace");
    let started = Instant::now();
    for (index, datagram) in datagrams.iter().enumerate() {
        // Paced in small bursts: datagram n leaves no earlier than n / rate seconds in.
        if index % 20 == 0 {
            let due = Duration::from_micros(index as u64 * 1_000_000 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
        // A full socket buffer is the kernel's business; the flood goes on.
        let _ = socket.send_to(datagram, target);
    }
}

/// Every sample of a Prometheus text exposition, by series (name and labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metrics(agent: &Agent<'_>) -> BTreeMap<String, f64> {
    samples(
        &agent
            .metrics()
            .unwrap_or_else(|error| panic!("metrics: {error}")),
    )
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> u64 {
    let of = |m: &BTreeMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    (of(after) - of(before)).max(0.0) as u64
}

fn attach(client: &PluginClient, nwid: NetworkId, key: &str, netns: &Netns) -> Endpoint {
    let mut request = AttachRequest::new(
        nwid,
        key.parse().expect("key"),
        key.replace('/', "-").parse().expect("container id"),
        Some(std::path::Path::new("/var/run/netns").join(netns.name())),
        "eth0".parse().expect("ifname"),
    );
    request.wait = Some(40);
    client
        .attach(&request)
        .unwrap_or_else(|error| panic!("attach {key}: {error}"))
}

fn ipv4_of(endpoint: &Endpoint) -> String {
    endpoint
        .ips
        .iter()
        .find(|p| p.address.is_ipv4())
        .map(|p| p.address.to_string())
        .unwrap_or_else(|| panic!("no IPv4 address: {endpoint:?}"))
}

/// One phase of the flood and what it did to the agent.
struct Phase {
    sent: Sent,
    took: Duration,
    /// From the first datagram to the metrics read after the flood.
    window: Duration,
    cpu_seconds: f64,
    pings: u64,
    answered: u64,
    ping_text: String,
    before: BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
}

impl Phase {
    fn delta(&self, series: &str) -> u64 {
        delta(&self.before, &self.after, series)
    }

    fn dropped(&self, reason: &str) -> u64 {
        self.delta(&format!("zt_packet_dropped{{reason=\"{reason}\"}}"))
    }

    /// Drops at the stages before any memory-hard work.
    fn cheap_drops(&self) -> u64 {
        CHEAP_DROPS.iter().map(|reason| self.dropped(reason)).sum()
    }

    fn summary(&self) -> String {
        let drops: Vec<String> = CHEAP_DROPS
            .iter()
            .chain(["invalid_identity", "validation_backlog"].iter())
            .map(|reason| format!("{reason} {}", self.dropped(reason)))
            .collect();
        format!(
            "{} datagrams ({} HELLOs) sent in {:.2?}; agent CPU {:.2} s; pings {}/{}; \
             identity validations {}; dropped: {}",
            self.sent.total,
            self.sent.hellos,
            self.took,
            self.cpu_seconds,
            self.answered,
            self.pings,
            self.delta("zt_identity_validations"),
            drops.join(", ")
        )
    }
}

const CHEAP_DROPS: [&str; 5] = [
    "malformed",
    "mac_failure",
    "unknown_peer",
    "not_relayed",
    "rate_limited",
];

/// "N received" of ping's summary.
fn received(ping_output: &str) -> u64 {
    ping_output
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_garbage_and_hello_flood_neither_stops_endpoints_nor_escapes_the_rate_limits() {
    if !require_privileged() {
        return;
    }
    let seconds = env_or("ZT_FLOOD_SECONDS", FLOOD_SECONDS).max(1);
    let rate = env_or("ZT_FLOOD_RATE", FLOOD_RATE).max(10);

    let lan = Lan::new("flood", 3);
    let work = TempDir::new("flood");
    let homes = make_homes(work.path(), &["root", "host"], lan.ip(0), AGENT_PORT);
    let root = Agent::start(lan.host(0), &homes[0], AGENT_PORT);
    let mut host = Agent::start(lan.host(1), &homes[1], AGENT_PORT);
    for agent in [&root, &host] {
        agent.expect_online();
    }
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "flood", "private": false,
                "v4AssignMode": {"zt": true},
                "ipAssignmentPools": [{"ipRangeStart": "10.213.96.10", "ipRangeEnd": "10.213.96.250"}],
                "routes": [{"target": "10.213.96.0/24"}],
            })),
        )
        .expect("network");
    let nwid =
        NetworkId(u64::from_str_radix(created["id"].as_str().expect("id"), 16).expect("hex nwid"));
    let pinger = Netns::new("pinger");
    let target = Netns::new("target");
    let from = attach(
        &PluginClient::new(homes[0].join("agent.sock")),
        nwid,
        "flood/a",
        &pinger,
    );
    let attacked = attach(
        &PluginClient::new(homes[1].join("agent.sock")),
        nwid,
        "flood/b",
        &target,
    );
    let target_ip = ipv4_of(&attacked);
    assert!(pinger.ping_until(&target_ip), "no ping before the flood");
    println!("{} pings {} ({target_ip})", from.address, attacked.address);

    let host_identity: Identity = std::fs::read_to_string(homes[1].join("identity.public"))
        .expect("identity.public")
        .trim()
        .parse()
        .expect("a public identity");
    let agent_port = SocketAddr::from((lan.ip(1), AGENT_PORT));
    let attacker = lan.host(2);
    let flood = |kind: FloodKind, rate: u64| -> Phase {
        let (datagrams, sent) = build_flood(seconds * rate, &host_identity, attacked.address, kind);
        let before = metrics(&host);
        let ticks_before = cpu_ticks(host.pid()).expect("the agent's CPU time");
        let pings = seconds * 5;
        let ping = pinger
            .command("ping")
            .args(["-c", &pings.to_string(), "-i", "0.2", "-W", "2", &target_ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        let started = Instant::now();
        thread::scope(|scope| {
            scope.spawn(|| send_flood(attacker, agent_port, datagrams, rate));
        });
        let took = started.elapsed();
        let ping = ping.wait_with_output().expect("ping's output");
        let ticks_after = cpu_ticks(host.pid()).expect("the agent's CPU time");
        let after = metrics(&host);
        let ping_text = String::from_utf8_lossy(&ping.stdout).into_owned();
        let phase = Phase {
            sent,
            took,
            window: started.elapsed(),
            cpu_seconds: (ticks_after - ticks_before) as f64 / 100.0,
            pings,
            answered: received(&ping_text),
            ping_text,
            before,
            after,
        };
        println!("{kind:?} flood at {rate}/s: {}", phase.summary());
        phase
    };

    // Garbage: nothing reaches the expensive stage, everything is dropped cheaply, and the
    // endpoint keeps answering.
    let garbage = flood(FloodKind::Garbage, rate);
    assert_eq!(
        garbage.delta("zt_identity_validations"),
        0,
        "garbage reached identity validation"
    );
    assert!(
        garbage.answered * 10 >= garbage.pings * 9,
        "only {} of {} pings answered during the garbage flood:\n{}",
        garbage.answered,
        garbage.pings,
        garbage.ping_text
    );
    // Junk for the endpoint counts on the endpoint's node; the rest on the agent's. Half of
    // it is a lenient floor: the kernel may drop some on a busy machine.
    let for_host_node = garbage.sent.total - garbage.sent.total / 9;
    assert!(
        garbage.cheap_drops() * 2 >= for_host_node,
        "only {} of {for_host_node} junk datagrams were dropped: {}",
        garbage.cheap_drops(),
        garbage.summary()
    );
    assert!(
        pinger.ping_until(&target_ip),
        "no ping after the garbage flood"
    );

    // HELLOs from new identities: each one the gate lets through costs a memory-hard hash;
    // no more than the gate allows over the flood's duration (one interval more for a gate
    // already open when the flood began, one for the interval under way at the end).
    let hello_rate = env_or("ZT_FLOOD_HELLO_RATE", HELLO_RATE).max(1);
    let hellos = flood(FloodKind::Hellos, hello_rate);
    let validations = hellos.delta("zt_identity_validations");
    let intervals = hellos.window.as_millis() as u64 / GATE_INTERVAL.as_millis() as u64 + 2;
    assert!(
        validations <= GATE_BURST * intervals,
        "{validations} identity validations in {:.2?}: the gate allows {}",
        hellos.window,
        GATE_BURST * intervals
    );
    assert!(
        validations >= GATE_BURST.min(hellos.sent.hellos),
        "the forged HELLOs never reached validation ({validations}): the test does not test"
    );
    // The verdicts come from the validator thread: the last may still be on their way.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        let now = metrics(&host);
        let judged = delta(
            &hellos.before,
            &now,
            "zt_packet_dropped{reason=\"invalid_identity\"}",
        ) + delta(
            &hellos.before,
            &now,
            "zt_packet_dropped{reason=\"validation_backlog\"}",
        );
        if judged >= validations || Instant::now() >= deadline {
            break (judged, now);
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        settled.0 >= validations,
        "every forged identity fails validation (or is given up): {} judged of {validations}; {}",
        settled.0,
        hellos.summary()
    );
    assert!(
        delta(
            &hellos.before,
            &settled.1,
            "zt_packet_dropped{reason=\"invalid_identity\"}"
        ) > 0,
        "no forged identity was found invalid: {}",
        hellos.summary()
    );
    assert!(
        hellos.dropped("rate_limited") > 0,
        "the gate turned no forged HELLO away: {}",
        hellos.summary()
    );
    // The hashes run on the validator thread: the packet loop keeps serving the endpoint.
    assert!(
        hellos.answered * 10 >= hellos.pings * 9,
        "only {} of {} pings answered during the HELLO flood:\n{}",
        hellos.answered,
        hellos.pings,
        hellos.ping_text
    );
    assert!(
        pinger.ping_until(&target_ip),
        "no ping after the HELLO flood"
    );
    if let Err(exited) = host.check_running() {
        panic!("attacked agent: {exited}");
    }
}
