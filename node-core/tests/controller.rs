//! The controller against ZeroTier One 1.14.1's own: the captures in
//! `tests/data/capture-1.14.1/` hold the configs r (the lab's controller) sent to a and b, and
//! the `controller-*.json` files hold r's records. Fed r's identity, those records and the
//! members' requests, our controller must issue the same configs byte for byte (signatures
//! are deterministic, so the COM, capabilities, tags and COO must match too), given the
//! capture's timestamp.

#[allow(dead_code)]
#[path = "common/pcap.rs"]
mod pcap;
#[allow(dead_code)]
#[path = "common/vl2_capture.rs"]
mod vl2_capture;

use std::collections::BTreeMap;

use node_core::controller::{Controller, RequestAnswer};
use node_core::time::Timestamp;
use node_core::vl2::config::NetworkConfig;
use node_core::vl2::verbs::ConfigChunkRepr;
use node_core::wire::{OkHeader, Verb};
use node_core::{Address, Identity};
use serde_json::Value;

use vl2_capture::{decode_capture, CapturedPacket};

macro_rules! data {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/capture-1.14.1/",
            $name
        )
    };
}

const CAPTURE_JOIN_PING: &[u8] = include_bytes!(data!("zt-1.14.1-join-ping.pcap"));
const CAPTURE_RULES_V6: &[u8] = include_bytes!(data!("zt-1.14.1-rules-v6.pcap"));
const SECRET_R: &str = include_str!(data!("r.identity.secret"));
const SECRET_A: &str = include_str!(data!("a.identity.secret"));
const SECRET_B: &str = include_str!(data!("b.identity.secret"));
const NETWORK_LAB: &str = include_str!(data!("controller-network-lab.json"));
const NETWORK_RICH: &str = include_str!(data!("controller-network-rich.json"));
const RULES_RICH_REVISION_1: &str = include_str!(data!("controller-rules-rich-revision1.json"));
const MEMBER_LAB_A: &str = include_str!(data!("controller-member-lab-3346652ff6.json"));
const MEMBER_LAB_B: &str = include_str!(data!("controller-member-lab-eab80561d6.json"));
const MEMBER_RICH_A: &str = include_str!(data!("controller-member-rich-3346652ff6.json"));
const MEMBER_RICH_B: &str = include_str!(data!("controller-member-rich-eab80561d6.json"));

fn identities() -> [Identity; 3] {
    [SECRET_R, SECRET_A, SECRET_B].map(|s| s.trim().parse().expect("identity"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

/// A config 1.14 sent, reassembled from its chunks, with the request metadata the member
/// sent last before it.
struct Issued {
    to: Address,
    dictionary: Vec<u8>,
    metadata: Vec<u8>,
}

/// A chunk's byte offset and data.
type Chunk = (u32, Vec<u8>);

/// Every complete config r sent in `capture` (OK(NETWORK_CONFIG_REQUEST) or
/// NETWORK_CONFIG), in order.
fn issued_configs(capture: &[u8]) -> Vec<Issued> {
    let ids = identities();
    let controller = ids[0].address();
    let packets: Vec<CapturedPacket> = decode_capture(capture, &ids);
    let mut metadata: BTreeMap<Address, Vec<u8>> = BTreeMap::new();
    let mut partial: BTreeMap<(Address, u64), Vec<Chunk>> = BTreeMap::new();
    let mut out = Vec::new();
    for packet in packets {
        if packet.verb == Verb::NetworkConfigRequest && packet.destination == controller {
            let request =
                node_core::vl2::verbs::NetworkConfigRequestRepr::parse(&packet.payload).unwrap();
            metadata.insert(packet.source, request.metadata);
            continue;
        }
        if packet.source != controller {
            continue;
        }
        let body = match packet.verb {
            Verb::NetworkConfig => packet.payload.clone(),
            Verb::Ok => {
                let (header, body) = OkHeader::parse(&packet.payload).unwrap();
                if header.in_re_verb != Verb::NetworkConfigRequest {
                    continue;
                }
                body.to_vec()
            }
            _ => continue,
        };
        let chunk = ConfigChunkRepr::parse(&body).unwrap();
        let trailer = chunk.trailer.expect("1.14 signs its chunks");
        let parts = partial
            .entry((packet.destination, trailer.update_id))
            .or_default();
        parts.push((trailer.chunk_index, chunk.data));
        let have: usize = parts.iter().map(|(_, d)| d.len()).sum();
        if have == trailer.total_length as usize {
            let mut dictionary = vec![0u8; have];
            for (index, data) in parts.iter() {
                dictionary[*index as usize..*index as usize + data.len()].copy_from_slice(data);
            }
            out.push(Issued {
                to: packet.destination,
                dictionary,
                metadata: metadata
                    .get(&packet.destination)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// r's controller with `network` and `members` loaded as its files held them.
fn lab_controller(network: Value, members: &[&str]) -> Controller {
    let [r, _, _] = identities();
    let mut controller = Controller::new(r, 1);
    controller.load_network(network).unwrap();
    for member in members {
        controller.load_member(json(member)).unwrap();
    }
    controller
}

/// Re-issues every config r sent in `capture` and compares the dictionaries byte for byte.
fn reissue(capture: &[u8], controller_for: impl Fn() -> Controller) -> usize {
    let ids = identities();
    let issued = issued_configs(capture);
    assert!(!issued.is_empty(), "the capture holds configs");
    for config in &issued {
        let theirs = NetworkConfig::from_bytes(&config.dictionary).unwrap();
        let requester = ids.iter().find(|i| i.address() == config.to).unwrap();
        let mut controller = controller_for();
        let answer = controller.handle_request(
            Timestamp(theirs.timestamp),
            theirs.network_id,
            &requester.public_only(),
            &config.metadata,
            None,
        );
        let RequestAnswer::Config(ours) = answer else {
            panic!("{}: no config: {answer:?}", config.to);
        };
        assert_eq!(*ours, theirs, "config for {}", config.to);
        let ours = ours.to_dictionary().unwrap().into_bytes();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&config.dictionary),
            "dictionary for {}",
            config.to
        );
        // The member record must come out as 1.14 stored it (times aside: they are equal,
        // the records here are 1.14's own after these requests).
        let nwid = theirs.network_id;
        let ours = controller.member(nwid, config.to).unwrap();
        let files = [MEMBER_LAB_A, MEMBER_LAB_B, MEMBER_RICH_A, MEMBER_RICH_B];
        let theirs = files
            .iter()
            .map(|f| json(f))
            .find(|m| m["nwid"] == nwid.to_string() && m["id"] == config.to.to_string())
            .unwrap();
        assert_eq!(ours, theirs, "member record of {}", config.to);
    }
    issued.len()
}

/// The "lab" network: IPv4 auto-assignment from 10.147.17.10-250.
#[test]
fn reissues_the_lab_configs_of_1_14() {
    let count = reissue(CAPTURE_JOIN_PING, || {
        lab_controller(json(NETWORK_LAB), &[MEMBER_LAB_A, MEMBER_LAB_B])
    });
    assert_eq!(count, 4);
}

/// The "rich" network as it was at its first revision: rules, a capability, a tag, DNS,
/// two routes, RFC4193 and 6PLANE addresses.
#[test]
fn reissues_the_rich_configs_of_1_14() {
    let mut network = json(NETWORK_RICH);
    network["rules"] = json(RULES_RICH_REVISION_1);
    network["revision"] = Value::from(1);
    let count = reissue(CAPTURE_RULES_V6, || {
        lab_controller(network.clone(), &[MEMBER_RICH_A, MEMBER_RICH_B])
    });
    assert_eq!(count, 4);
}

/// Members that 1.14 auto-assigned addresses to get the same ones from us when their
/// records start without them (zt-vl2.md 6.2, by hand: 0x46652ff6 mod 240 = 134 → .144,
/// 0xb80561d6 mod 240 = 230 → .240; in the rich pool of length 190: 144 → .154, 120 → .130).
#[test]
fn auto_assigns_the_addresses_1_14_chose() {
    let ids = identities();
    for (network, members, expected) in [
        (
            NETWORK_LAB,
            [MEMBER_LAB_A, MEMBER_LAB_B],
            ["10.147.17.144", "10.147.17.240"],
        ),
        (
            NETWORK_RICH,
            [MEMBER_RICH_A, MEMBER_RICH_B],
            ["10.148.0.154", "10.148.0.130"],
        ),
    ] {
        let [r, _, _] = identities();
        let mut controller = Controller::new(r, 1);
        let nwid = controller.load_network(json(network)).unwrap();
        for member in members {
            let mut member = json(member);
            member["ipAssignments"] = Value::Array(Vec::new());
            controller.load_member(member).unwrap();
        }
        for (requester, expected) in ids[1..].iter().zip(expected) {
            let metadata = node_core::vl2::config::RequestMetadata::zerotier_1_14("linux/x86_64")
                .to_dictionary()
                .unwrap()
                .into_bytes();
            let answer = controller.handle_request(
                Timestamp(1_795_524_100_000),
                nwid,
                &requester.public_only(),
                &metadata,
                None,
            );
            let RequestAnswer::Config(config) = answer else {
                panic!("no config: {answer:?}");
            };
            let v4: Vec<String> = config
                .static_ips
                .iter()
                .filter_map(|ip| ip.socket_addr())
                .filter(|ip| ip.is_ipv4())
                .map(|ip| ip.ip().to_string())
                .collect();
            assert_eq!(v4, [expected]);
            let record = controller.member(nwid, requester.address()).unwrap();
            assert_eq!(record["ipAssignments"], serde_json::json!([expected]));
        }
    }
}
