//! Parses every VL2 packet of the three ZeroTier One 1.14.1 captures in
//! `tests/data/capture-1.14.1/` with the codecs of `vl2::verbs`: frames, multicast, config
//! chunks, credentials, and the OKs and ERRORs that answer them. Each payload must parse and
//! re-emit to the very bytes 1.14 sent; the per-verb counts must match `tests/data/README.md`;
//! and what the lab set up must show in the parsed fields:
//!
//! - config delivery: every chunk is signed by the controller r, the chunks of each update
//!   reassemble into a dictionary that reads as a config issued to the member that received
//!   it, whose certificate of membership r signed, and the two members' certificates agree;
//! - credentials: every COM, tag and capability verifies against r and names its sender;
//! - frames: FRAME payloads are ARP, IPv4 or IPv6 between the members' assigned addresses;
//!   multicasts go to the groups 1.14 derives (ARP to broadcast with the target IPv4 as ADI,
//!   NDP to the solicited-node group), and the members subscribe only to their own groups.

// Only part of the pcap reader is used here.
#[allow(dead_code)]
#[path = "common/pcap.rs"]
mod pcap;
#[path = "common/vl2_capture.rs"]
mod vl2_capture;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use node_core::crypto::dearmor;
use node_core::time::Timestamp;
use node_core::vl2::config::{NetworkConfig, RequestMetadata};
use node_core::vl2::credentials::Thing;
use node_core::vl2::dictionary::{Dictionary, METADATA_CAPACITY, NETWORK_CONFIG_CAPACITY};
use node_core::vl2::network::{rfc4193_address, sixplane_address};
use node_core::vl2::rules_json::rules_from_json;
use node_core::vl2::verbs::{
    ConfigChunkRepr, ExtFrameRepr, ExtFrameSubtype, FrameRepr, MulticastFrameRepr,
    MulticastGatherRepr, MulticastLikeRepr, NetworkConfigAckRepr, NetworkConfigRequestRepr,
    NetworkCredentialsRepr, OkMulticastFrameRepr, OkMulticastGatherRepr, Vl2ErrorPayload,
    NETWORK_CONFIG_ACK_IN_RE_VERB,
};
use node_core::vl2::{
    CertificateOfMembership, CertificateOfOwnership, Mac, MulticastGroup, NetworkId, VerifyError,
};
use node_core::wire::{
    classify, decompress_packet, DatagramKind, ErrorCode, ErrorRepr, InetAddress, OkHeader, Packet,
    Reassembler, Verb,
};
use node_core::{Address, Identity};
use serde_json::Value;

use pcap::Pcap;

macro_rules! capture_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/capture-1.14.1/",
            $name
        )
    };
}

const CAPTURE_JOIN_PING: &[u8] = include_bytes!(capture_file!("zt-1.14.1-join-ping.pcap"));
const CAPTURE_RULES_TCP: &[u8] = include_bytes!(capture_file!("zt-1.14.1-rules-tcp.pcap"));
const CAPTURE_RULES_V6: &[u8] = include_bytes!(capture_file!("zt-1.14.1-rules-v6.pcap"));
const SECRET_R: &str = include_str!(capture_file!("r.identity.secret"));
const SECRET_A: &str = include_str!(capture_file!("a.identity.secret"));
const SECRET_B: &str = include_str!(capture_file!("b.identity.secret"));
const RULES_RICH_REVISION_1: &str =
    include_str!(capture_file!("controller-rules-rich-revision1.json"));

/// Network "lab" of the join-ping capture.
const NETWORK_LAB: NetworkId = NetworkId(0x7f12_3694_d797_1343);
/// Network "rich" of the two rules captures.
const NETWORK_RICH: NetworkId = NetworkId(0x7f12_3694_d7a2_882f);
/// Both networks' IPv4 routes are /24s, which is also the netmask of the assigned addresses.
const IPV4_NETMASK_BITS: u16 = 24;
/// Tag 1000 of network "rich"; both members hold value 7.
const RICH_TAG_ID: u32 = 1000;
const RICH_TAG_VALUE: u32 = 7;
/// Capability 1 of network "rich" (TCP/UDP destination ports 8000-8100); only a holds it.
const RICH_CAPABILITY_ID: u32 = 1;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_REQUEST: u16 = 0x0001;
const ARP_REPLY: u16 = 0x0002;
const IP_PROTO_ICMPV6: u8 = 0x3a;
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 0x87;
/// 224.0.0.1 (all hosts) and ff02::1 (all nodes): groups every member joins.
const MAC_IPV4_ALL_HOSTS: Mac = Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
const MAC_IPV6_ALL_NODES: Mac = Mac([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]);

// ---------------------------------------------------------------------------------------------
// The lab

/// One of the three nodes whose secrets we have.
struct Node {
    name: &'static str,
    identity: Identity,
    /// The IPv4 address the controller assigned on (lab, rich); r is no member.
    assigned: Option<(Ipv4Addr, Ipv4Addr)>,
}

struct Lab {
    r: Node,
    a: Node,
    b: Node,
}

impl Lab {
    fn load() -> Self {
        let node = |name, secret: &str, assigned| Node {
            name,
            identity: secret
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}.identity.secret: {e}")),
            assigned,
        };
        let lab = Self {
            r: node("r", SECRET_R, None),
            // controller-member-{lab,rich}-*.json: "ipAssignments".
            a: node(
                "a",
                SECRET_A,
                Some((
                    Ipv4Addr::new(10, 147, 17, 144),
                    Ipv4Addr::new(10, 148, 0, 154),
                )),
            ),
            b: node(
                "b",
                SECRET_B,
                Some((
                    Ipv4Addr::new(10, 147, 17, 240),
                    Ipv4Addr::new(10, 148, 0, 130),
                )),
            ),
        };
        assert_eq!(NETWORK_LAB.controller(), lab.r.identity.address());
        assert_eq!(NETWORK_RICH.controller(), lab.r.identity.address());
        lab
    }

    fn nodes(&self) -> [&Node; 3] {
        [&self.r, &self.a, &self.b]
    }

    fn members(&self) -> [&Node; 2] {
        [&self.a, &self.b]
    }

    fn node(&self, address: Address) -> &Node {
        self.nodes()
            .into_iter()
            .find(|n| n.identity.address() == address)
            .unwrap_or_else(|| panic!("{address} is none of r, a, b"))
    }

    fn identities(&self) -> Vec<Identity> {
        self.nodes().iter().map(|n| n.identity.clone()).collect()
    }

    /// `address`'s IPv4 address on `nwid`, if it is a member.
    fn ipv4(&self, address: Address, nwid: NetworkId) -> Option<Ipv4Addr> {
        let (lab, rich) = self.node(address).assigned?;
        match nwid {
            NETWORK_LAB => Some(lab),
            NETWORK_RICH => Some(rich),
            _ => None,
        }
    }

    /// The IPv6 addresses `address` holds on `nwid`: its link-local address (EUI-64 of its
    /// port MAC), and on "rich" also its RFC4193 and 6PLANE addresses.
    fn ipv6(&self, address: Address, nwid: NetworkId) -> Vec<Ipv6Addr> {
        let mac = Mac::from_address(address, nwid).0;
        let link_local = Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
            u16::from_be_bytes([mac[2], 0xff]),
            u16::from_be_bytes([0xfe, mac[3]]),
            u16::from_be_bytes([mac[4], mac[5]]),
        );
        let mut addresses = vec![link_local];
        if nwid == NETWORK_RICH {
            addresses.push(rfc4193_address(nwid, address));
            addresses.push(sixplane_address(nwid, address));
        }
        addresses
    }

    /// r as the credential-verifying closure of [`node_core::vl2::Capability::verify`] wants.
    fn controller_identity(&self, address: Address) -> Option<&Identity> {
        (address == self.r.identity.address()).then_some(&self.r.identity)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding the captures

/// One packet between two of r, a and b, dearmored and decompressed. `vl2_capture` gives the
/// same packets without cipher, packet ID and fragmentation, which the README's counts need.
#[derive(Clone, Debug)]
struct Captured {
    /// pcap record (1-based) of the datagram that completed the packet.
    record: usize,
    source: Address,
    destination: Address,
    cipher: u8,
    /// The packet ID as on the wire (what an OK or ERROR quotes).
    packet_id: u64,
    /// Whether it was reassembled from a head and fragments.
    reassembled: bool,
    verb: Verb,
    /// The payload after the verb byte.
    payload: Vec<u8>,
}

fn decode(lab: &Lab, capture: &[u8]) -> Vec<Captured> {
    let identities = lab.identities();
    let known = |address: Address| identities.iter().find(|i| i.address() == address);
    let pcap = Pcap::parse(capture).expect("the capture is a classic pcap file");
    let records = pcap.udp_datagrams().expect("every pcap record reads");
    let mut reassemblers: HashMap<(SocketAddr, SocketAddr), Reassembler> = HashMap::new();
    let mut plain = Vec::new();
    let mut out = Vec::new();
    for datagram in &records.datagrams {
        let now = Timestamp(datagram.time_micros / 1000);
        let flow = (datagram.source, datagram.destination);
        let payload = datagram.payload;
        let (mut packet, reassembled) = match classify(payload) {
            DatagramKind::Runt | DatagramKind::Beacon => continue,
            DatagramKind::Fragment => {
                match reassemblers
                    .entry(flow)
                    .or_default()
                    .handle_fragment(now, payload)
                {
                    Some(packet) => (packet, true),
                    None => continue,
                }
            }
            DatagramKind::Packet => match Packet::new_checked(payload) {
                Ok(head) if head.is_fragmented() => {
                    match reassemblers
                        .entry(flow)
                        .or_default()
                        .handle_head(now, payload)
                    {
                        Some(packet) => (packet, true),
                        None => continue,
                    }
                }
                Ok(_) => (payload.to_vec(), false),
                Err(e) => panic!("record {}: {e}", datagram.record),
            },
        };
        let view = Packet::new_checked(&packet[..])
            .unwrap_or_else(|e| panic!("record {}: {e}", datagram.record));
        let (source, destination) = (view.source(), view.destination());
        let (cipher, packet_id) = (view.cipher(), view.packet_id());
        // Packets to the two earlier members cannot be dearmored; none of them is VL2.
        let (Some(sender), Some(receiver)) = (known(source), known(destination)) else {
            continue;
        };
        let key = receiver
            .agree(sender)
            .unwrap_or_else(|| panic!("record {}: no key", datagram.record));
        dearmor(&mut packet, &key)
            .unwrap_or_else(|e| panic!("record {}: dearmor: {e}", datagram.record));
        decompress_packet(&packet, &mut plain)
            .unwrap_or_else(|e| panic!("record {}: decompress: {e}", datagram.record));
        let view = Packet::new_checked(&plain[..])
            .unwrap_or_else(|e| panic!("record {}: {e}", datagram.record));
        out.push(Captured {
            record: datagram.record,
            source,
            destination,
            cipher,
            packet_id,
            reassembled,
            verb: view.verb(),
            payload: view.payload().to_vec(),
        });
    }
    // The shared decoder must see the very same packets.
    let shared = vl2_capture::decode_capture(capture, &identities);
    assert_eq!(
        shared.len(),
        out.len(),
        "packets decoded by common/vl2_capture"
    );
    for (ours, theirs) in out.iter().zip(&shared) {
        assert_eq!(
            (ours.record, ours.source, ours.destination, ours.verb),
            (
                theirs.record,
                theirs.source,
                theirs.destination,
                theirs.verb
            )
        );
        assert_eq!(ours.payload, theirs.payload, "record {}", ours.record);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing the VL2 packets

/// A VL2 payload, parsed.
#[derive(Clone, Debug)]
enum Message {
    Frame(FrameRepr),
    ExtFrame(ExtFrameRepr),
    MulticastLike(MulticastLikeRepr),
    MulticastGather(MulticastGatherRepr),
    OkMulticastGather(OkMulticastGatherRepr),
    MulticastFrame(MulticastFrameRepr),
    OkMulticastFrame(OkMulticastFrameRepr),
    NetworkCredentials(NetworkCredentialsRepr),
    NetworkConfigRequest {
        request: NetworkConfigRequestRepr,
        metadata: RequestMetadata,
    },
    /// The body of OK(NETWORK_CONFIG_REQUEST) or the payload of NETWORK_CONFIG.
    ConfigChunk(ConfigChunkRepr),
    /// OK(ECHO) answering a NETWORK_CONFIG.
    ConfigAck(NetworkConfigAckRepr),
    Error {
        code: ErrorCode,
        payload: Vl2ErrorPayload,
    },
}

/// What a VL2 message is: its verb, the verb an OK or ERROR answers, and the cipher.
type Kind = (Verb, Option<Verb>, u8);

/// A VL2 packet and what it parsed to.
#[derive(Clone, Debug)]
struct Vl2Packet {
    packet: Captured,
    /// For OK and ERROR: the verb and packet ID answered.
    in_re: Option<(Verb, u64)>,
    message: Message,
}

impl Vl2Packet {
    fn kind(&self) -> Kind {
        (
            self.packet.verb,
            self.in_re.map(|(verb, _)| verb),
            self.packet.cipher,
        )
    }

    fn at(&self) -> String {
        at(&self.packet)
    }
}

fn at(packet: &Captured) -> String {
    format!(
        "record {} ({} -> {}, {:?})",
        packet.record, packet.source, packet.destination, packet.verb
    )
}

/// Everything one capture gave.
struct Replay {
    name: &'static str,
    packets: Vec<Captured>,
    vl2: Vec<Vl2Packet>,
    /// Each VL2 payload that did not parse or did not re-emit to its bytes.
    failures: Vec<String>,
}

/// Checks that `parsed` emits back to `bytes` and claims their length: 1.14 would have
/// written the same bytes for the same fields.
fn re_emits<T>(
    bytes: &[u8],
    parsed: &T,
    emit: impl Fn(&T, &mut Vec<u8>),
    buffer_len: impl Fn(&T) -> usize,
) -> Result<(), String> {
    let mut out = Vec::new();
    emit(parsed, &mut out);
    if out != bytes {
        return Err(format!("re-emits as {}", hex::encode(&out)));
    }
    if buffer_len(parsed) != bytes.len() {
        return Err(format!(
            "buffer_len {} for {} bytes",
            buffer_len(parsed),
            bytes.len()
        ));
    }
    Ok(())
}

fn parsed<T, E: core::fmt::Display>(
    bytes: &[u8],
    result: Result<T, E>,
    emit: impl Fn(&T, &mut Vec<u8>),
    buffer_len: impl Fn(&T) -> usize,
) -> Result<T, String> {
    let value = result.map_err(|e| e.to_string())?;
    re_emits(bytes, &value, emit, buffer_len)?;
    Ok(value)
}

/// A VL2 payload parsed, with the verb and packet ID an OK or ERROR answers.
type Parsed = (Option<(Verb, u64)>, Message);

/// The VL2 meaning of `packet`: `None` for VL1 traffic (HELLO, WHOIS, ECHO and their OKs,
/// RENDEZVOUS, PUSH_DIRECT_PATHS), else what it parsed to or why it did not.
/// `config_packet_ids` are the IDs of the NETWORK_CONFIG packets, which 1.14 acknowledges
/// with an OK in re ECHO.
fn parse_vl2(packet: &Captured, config_packet_ids: &[u64]) -> Option<Result<Parsed, String>> {
    let p = &packet.payload[..];
    let message = match packet.verb {
        Verb::Frame => parsed(
            p,
            FrameRepr::parse(p),
            FrameRepr::emit,
            FrameRepr::buffer_len,
        )
        .map(Message::Frame),
        Verb::ExtFrame => parsed(
            p,
            ExtFrameRepr::parse(p),
            ExtFrameRepr::emit,
            ExtFrameRepr::buffer_len,
        )
        .map(Message::ExtFrame),
        Verb::MulticastLike => parsed(
            p,
            MulticastLikeRepr::parse(p),
            MulticastLikeRepr::emit,
            MulticastLikeRepr::buffer_len,
        )
        .map(Message::MulticastLike),
        Verb::MulticastGather => parsed(
            p,
            MulticastGatherRepr::parse(p),
            MulticastGatherRepr::emit,
            MulticastGatherRepr::buffer_len,
        )
        .map(Message::MulticastGather),
        Verb::MulticastFrame => parsed(
            p,
            MulticastFrameRepr::parse(p),
            MulticastFrameRepr::emit,
            MulticastFrameRepr::buffer_len,
        )
        .map(Message::MulticastFrame),
        Verb::NetworkCredentials => parsed(
            p,
            NetworkCredentialsRepr::parse(p),
            NetworkCredentialsRepr::emit,
            NetworkCredentialsRepr::buffer_len,
        )
        .map(Message::NetworkCredentials),
        Verb::NetworkConfigRequest => parsed(
            p,
            NetworkConfigRequestRepr::parse(p),
            NetworkConfigRequestRepr::emit,
            NetworkConfigRequestRepr::buffer_len,
        )
        .map(|request| {
            let metadata = RequestMetadata::from_dictionary(&Dictionary::from_bytes(
                &request.metadata,
                METADATA_CAPACITY,
            ));
            Message::NetworkConfigRequest { request, metadata }
        }),
        Verb::NetworkConfig => parsed(
            p,
            ConfigChunkRepr::parse(p),
            ConfigChunkRepr::emit,
            ConfigChunkRepr::buffer_len,
        )
        .map(Message::ConfigChunk),
        Verb::Ok => {
            let (header, body) = match OkHeader::parse(p) {
                Ok(parsed) => parsed,
                Err(e) => return Some(Err(format!("OK header: {e}"))),
            };
            let in_re = Some((header.in_re_verb, header.in_re_packet_id));
            let message = match header.in_re_verb {
                Verb::MulticastGather => parsed(
                    body,
                    OkMulticastGatherRepr::parse(body),
                    OkMulticastGatherRepr::emit,
                    OkMulticastGatherRepr::buffer_len,
                )
                .map(Message::OkMulticastGather),
                Verb::MulticastFrame => parsed(
                    body,
                    OkMulticastFrameRepr::parse(body),
                    OkMulticastFrameRepr::emit,
                    OkMulticastFrameRepr::buffer_len,
                )
                .map(Message::OkMulticastFrame),
                Verb::NetworkConfigRequest => parsed(
                    body,
                    ConfigChunkRepr::parse(body),
                    ConfigChunkRepr::emit,
                    ConfigChunkRepr::buffer_len,
                )
                .map(Message::ConfigChunk),
                NETWORK_CONFIG_ACK_IN_RE_VERB
                    if config_packet_ids.contains(&header.in_re_packet_id) =>
                {
                    parsed(
                        body,
                        NetworkConfigAckRepr::parse(body),
                        NetworkConfigAckRepr::emit,
                        NetworkConfigAckRepr::buffer_len,
                    )
                    .map(Message::ConfigAck)
                }
                Verb::Frame
                | Verb::ExtFrame
                | Verb::MulticastLike
                | Verb::NetworkCredentials
                | Verb::NetworkConfig => Err(format!(
                    "1.14 sends no OK in re {:?} here",
                    header.in_re_verb
                )),
                _ => return None,
            };
            return Some(message.map(|m| (in_re, m)));
        }
        Verb::Error => {
            let error = match ErrorRepr::parse(p) {
                Ok(error) => error,
                Err(e) => return Some(Err(format!("ERROR header: {e}"))),
            };
            if error.in_re_verb.is_vl1() {
                return None;
            }
            let in_re = Some((error.in_re_verb, error.in_re_packet_id));
            let message = parsed(
                &error.payload,
                Vl2ErrorPayload::parse(error.code, &error.payload),
                Vl2ErrorPayload::emit,
                Vl2ErrorPayload::buffer_len,
            )
            .map(|payload| Message::Error {
                code: error.code,
                payload,
            });
            return Some(message.map(|m| (in_re, m)));
        }
        _ => return None,
    };
    Some(message.map(|m| (None, m)))
}

impl Replay {
    fn run(lab: &Lab, capture: &[u8], name: &'static str) -> Self {
        let packets = decode(lab, capture);
        let config_packet_ids: Vec<u64> = packets
            .iter()
            .filter(|p| p.verb == Verb::NetworkConfig)
            .map(|p| p.packet_id)
            .collect();
        let mut vl2 = Vec::new();
        let mut failures = Vec::new();
        for packet in &packets {
            match parse_vl2(packet, &config_packet_ids) {
                None => {}
                Some(Ok((in_re, message))) => vl2.push(Vl2Packet {
                    packet: packet.clone(),
                    in_re,
                    message,
                }),
                Some(Err(error)) => failures.push(format!(
                    "{}: {error}\n    payload: {}",
                    at(packet),
                    hex::encode(&packet.payload)
                )),
            }
        }
        let replay = Self {
            name,
            packets,
            vl2,
            failures,
        };
        assert!(
            replay.failures.is_empty(),
            "{name}: {} VL2 payload(s) failed:\n{}",
            replay.failures.len(),
            replay.failures.join("\n")
        );
        replay
    }

    /// Counts of the VL2 messages `filter` accepts, by kind.
    fn counts(&self, filter: impl Fn(&Vl2Packet) -> bool) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for packet in self.vl2.iter().filter(|p| filter(p)) {
            *counts.entry(packet.kind()).or_default() += 1;
        }
        counts
    }

    /// (verb, cipher) counts over all packets `filter` accepts, as the README has them.
    fn verb_counts(&self, filter: impl Fn(&Captured) -> bool) -> BTreeMap<(Verb, u8), usize> {
        let mut counts = BTreeMap::new();
        for packet in self.packets.iter().filter(|p| filter(p)) {
            *counts.entry((packet.verb, packet.cipher)).or_default() += 1;
        }
        counts
    }

    /// The packet a reply answers: sent the other way, with the quoted ID and verb.
    fn request_of(&self, reply: &Vl2Packet) -> &Captured {
        let (verb, id) = reply.in_re.expect("an OK or ERROR");
        let matches: Vec<&Captured> = self.packets.iter().filter(|p| p.packet_id == id).collect();
        let request = matches
            .first()
            .unwrap_or_else(|| panic!("{}: request {id:016x} not captured", reply.at()));
        // A retransmission keeps the ID and the payload.
        assert!(
            matches.iter().all(|m| m.payload == request.payload),
            "{}",
            reply.at()
        );
        // 1.14 acknowledges a NETWORK_CONFIG with an OK in re ECHO.
        let quoted = match reply.message {
            Message::ConfigAck(_) => Verb::NetworkConfig,
            _ => verb,
        };
        assert_eq!(request.verb, quoted, "{}: in-re verb", reply.at());
        assert_eq!(
            (request.source, request.destination),
            (reply.packet.destination, reply.packet.source),
            "{}: answers a packet sent the other way",
            reply.at()
        );
        request
    }
}

/// The README's (verb, cipher) counts; `OK` and `ERROR` as totals over VL1 and VL2.
fn readme_table(entries: &[(Verb, u8, usize)]) -> BTreeMap<(Verb, u8), usize> {
    entries.iter().map(|&(v, c, n)| ((v, c), n)).collect()
}

fn kind_table(entries: &[(Verb, Option<Verb>, u8, usize)]) -> BTreeMap<Kind, usize> {
    entries.iter().map(|&(v, r, c, n)| ((v, r, c), n)).collect()
}

/// The README's counts restricted to VL2 verbs and to OK/ERROR, against ours.
fn check_readme_counts(
    replay: &Replay,
    readme: &BTreeMap<(Verb, u8), usize>,
    filter: impl Fn(&Captured) -> bool + Copy,
) {
    let name = replay.name;
    let vl2_or_reply = |verb: Verb| !verb.is_vl1() || matches!(verb, Verb::Ok | Verb::Error);
    let expected: BTreeMap<(Verb, u8), usize> = readme
        .iter()
        .filter(|((verb, _), _)| vl2_or_reply(*verb))
        .map(|(&k, &n)| (k, n))
        .collect();
    assert_eq!(
        replay.verb_counts(|p| filter(p) && vl2_or_reply(p.verb)),
        expected,
        "{name}: README (verb, cipher) counts"
    );
    // Every packet of a VL2 verb parsed as one (OK and ERROR may be VL1 replies).
    let mut parsed_vl2 = BTreeMap::new();
    for packet in replay.vl2.iter().filter(|p| filter(&p.packet)) {
        if !matches!(packet.packet.verb, Verb::Ok | Verb::Error) {
            *parsed_vl2
                .entry((packet.packet.verb, packet.packet.cipher))
                .or_insert(0) += 1;
        }
    }
    let expected_vl2: BTreeMap<(Verb, u8), usize> = expected
        .into_iter()
        .filter(|((verb, _), _)| !matches!(verb, Verb::Ok | Verb::Error))
        .collect();
    assert_eq!(parsed_vl2, expected_vl2, "{name}: parsed VL2 packets");
}

// ---------------------------------------------------------------------------------------------
// Frames and multicast

/// The ones' complement checksum of an IPv4 header is 0xffff when the header is intact.
fn ipv4_header_checksum_ok(header: &[u8]) -> bool {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// An Ethernet payload that `sender` put on network `nwid`, checked for its ethertype.
/// `unicast_to` is the receiving member of a FRAME. Returns a short description.
fn check_ethernet_payload(
    lab: &Lab,
    at: &str,
    nwid: NetworkId,
    sender: Address,
    unicast_to: Option<Address>,
    ethertype: u16,
    data: &[u8],
) -> &'static str {
    let sender_mac = Mac::from_address(sender, nwid);
    match ethertype {
        ETHERTYPE_IPV4 => {
            assert!(data.len() >= 20, "{at}: IPv4 header cut");
            assert_eq!(data[0] >> 4, 4, "{at}: IPv4 version");
            let header_len = usize::from(data[0] & 0x0f) * 4;
            assert!(
                (20..=data.len()).contains(&header_len),
                "{at}: IPv4 IHL {header_len}"
            );
            assert!(
                ipv4_header_checksum_ok(&data[..header_len]),
                "{at}: IPv4 header checksum"
            );
            assert_eq!(
                usize::from(u16::from_be_bytes([data[2], data[3]])),
                data.len(),
                "{at}: IPv4 total length"
            );
            let source = Ipv4Addr::new(data[12], data[13], data[14], data[15]);
            let destination = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
            assert_eq!(Some(source), lab.ipv4(sender, nwid), "{at}: IPv4 source");
            if let Some(to) = unicast_to {
                assert_eq!(
                    Some(destination),
                    lab.ipv4(to, nwid),
                    "{at}: IPv4 destination"
                );
            }
            "IPv4"
        }
        ETHERTYPE_IPV6 => {
            assert!(data.len() >= 40, "{at}: IPv6 header cut");
            assert_eq!(data[0] >> 4, 6, "{at}: IPv6 version");
            assert_eq!(
                usize::from(u16::from_be_bytes([data[4], data[5]])) + 40,
                data.len(),
                "{at}: IPv6 payload length"
            );
            let source = Ipv6Addr::from(<[u8; 16]>::try_from(&data[8..24]).expect("16 bytes"));
            let destination =
                Ipv6Addr::from(<[u8; 16]>::try_from(&data[24..40]).expect("16 bytes"));
            // Duplicate address detection comes from the unspecified address.
            assert!(
                source.is_unspecified() || lab.ipv6(sender, nwid).contains(&source),
                "{at}: IPv6 source {source} is not {}'s",
                lab.node(sender).name
            );
            if let Some(to) = unicast_to {
                assert!(
                    lab.ipv6(to, nwid).contains(&destination),
                    "{at}: IPv6 destination {destination} is not {}'s",
                    lab.node(to).name
                );
            }
            "IPv6"
        }
        ETHERTYPE_ARP => {
            assert_eq!(data.len(), 28, "{at}: ARP for IPv4 over Ethernet");
            assert_eq!(
                &data[..6],
                &[0x00, 0x01, 0x08, 0x00, 0x06, 0x04],
                "{at}: ARP hardware/protocol types and lengths"
            );
            assert_eq!(data[8..14], sender_mac.0, "{at}: ARP sender MAC");
            assert_eq!(
                Some(Ipv4Addr::new(data[14], data[15], data[16], data[17])),
                lab.ipv4(sender, nwid),
                "{at}: ARP sender IPv4"
            );
            let operation = u16::from_be_bytes([data[6], data[7]]);
            match unicast_to {
                // Replies are unicast, to the asker's MAC and IPv4.
                Some(to) => {
                    assert_eq!(operation, ARP_REPLY, "{at}: unicast ARP");
                    assert_eq!(
                        data[18..24],
                        Mac::from_address(to, nwid).0,
                        "{at}: ARP target MAC"
                    );
                    assert_eq!(
                        Some(Ipv4Addr::new(data[24], data[25], data[26], data[27])),
                        lab.ipv4(to, nwid),
                        "{at}: ARP target IPv4"
                    );
                }
                None => assert_eq!(operation, ARP_REQUEST, "{at}: multicast ARP"),
            }
            "ARP"
        }
        other => panic!("{at}: ethertype {other:#06x} is not ARP, IPv4 or IPv6"),
    }
}

/// The group 1.14 multicasts an Ethernet payload to: ARP requests go to broadcast with the
/// target IPv4 as ADI; IPv6 to 33:33 and the destination's last four bytes (ADI 0).
fn expected_group(at: &str, ethertype: u16, data: &[u8]) -> MulticastGroup {
    match ethertype {
        ETHERTYPE_ARP => {
            let target: [u8; 4] = data[24..28].try_into().expect("checked ARP length");
            MulticastGroup::ipv4_arp(Ipv4Addr::from(target))
        }
        ETHERTYPE_IPV6 => {
            let destination: [u8; 16] = data[24..40].try_into().expect("checked IPv6 length");
            let group = MulticastGroup {
                mac: Mac([
                    0x33,
                    0x33,
                    destination[12],
                    destination[13],
                    destination[14],
                    destination[15],
                ]),
                adi: 0,
            };
            // A neighbour solicitation goes to the solicited-node group of its target.
            if data[6] == IP_PROTO_ICMPV6 && data.get(40) == Some(&ICMPV6_NEIGHBOR_SOLICITATION) {
                let target: [u8; 16] = data
                    .get(48..64)
                    .and_then(|t| t.try_into().ok())
                    .unwrap_or_else(|| panic!("{at}: neighbour solicitation cut"));
                assert_eq!(
                    group,
                    MulticastGroup::ipv6_solicited_node(Ipv6Addr::from(target)),
                    "{at}: NS target's solicited-node group"
                );
            }
            group
        }
        other => panic!("{at}: multicast ethertype {other:#06x}"),
    }
}

/// The groups a member subscribes to on `nwid`: broadcast (both networks enable it), IPv4
/// all-hosts, IPv6 all-nodes, broadcast with its IPv4 address as ADI (for ARP), and the
/// solicited-node group of each of its IPv6 addresses.
fn own_groups(lab: &Lab, member: Address, nwid: NetworkId) -> Vec<MulticastGroup> {
    let mut groups = vec![
        MulticastGroup::BROADCAST,
        MulticastGroup {
            mac: MAC_IPV4_ALL_HOSTS,
            adi: 0,
        },
        MulticastGroup {
            mac: MAC_IPV6_ALL_NODES,
            adi: 0,
        },
    ];
    groups.extend(lab.ipv4(member, nwid).map(MulticastGroup::ipv4_arp));
    groups.extend(
        lab.ipv6(member, nwid)
            .into_iter()
            .map(MulticastGroup::ipv6_solicited_node),
    );
    groups
}

/// Per capture: (frames, multicasts + TEE copies) checked, by payload kind.
fn check_frames(lab: &Lab, replay: &Replay, networks: &[NetworkId]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut note = |what: String| *seen.entry(what).or_insert(0) += 1;
    for packet in &replay.vl2 {
        let at = packet.at();
        let (source, destination) = (packet.packet.source, packet.packet.destination);
        match &packet.message {
            Message::Frame(frame) => {
                assert!(networks.contains(&frame.network_id), "{at}: network");
                let kind = check_ethernet_payload(
                    lab,
                    &at,
                    frame.network_id,
                    source,
                    Some(destination),
                    frame.ethertype,
                    &frame.payload,
                );
                note(format!("FRAME {kind}"));
            }
            Message::MulticastFrame(multicast) => {
                let nwid = multicast.network_id;
                assert!(networks.contains(&nwid), "{at}: network");
                assert_eq!(multicast.flags, 0, "{at}: no other flag");
                assert!(multicast.com.is_none(), "{at}: 1.14 sends no COM inline");
                assert!(
                    multicast.source.is_none(),
                    "{at}: from the sender's own MAC"
                );
                assert!(
                    multicast.gather_limit.is_some_and(|limit| limit > 0),
                    "{at}: gathers members"
                );
                let kind = check_ethernet_payload(
                    lab,
                    &at,
                    nwid,
                    source,
                    None,
                    multicast.ethertype,
                    &multicast.payload,
                );
                assert_eq!(
                    multicast.group,
                    expected_group(&at, multicast.ethertype, &multicast.payload),
                    "{at}: group"
                );
                // The receiver subscribed to that group.
                assert!(
                    own_groups(lab, destination, nwid).contains(&multicast.group),
                    "{at}: {} is not in {:?}",
                    lab.node(destination).name,
                    multicast.group
                );
                note(format!("MULTICAST_FRAME {kind}"));
            }
            Message::ExtFrame(copy) => {
                let nwid = copy.network_id;
                assert!(networks.contains(&nwid), "{at}: network");
                assert_eq!(copy.subtype(), ExtFrameSubtype::TeeOutbound, "{at}: TEE");
                assert!(!copy.ack_requested(), "{at}: no ACK asked");
                assert!(copy.com.is_none(), "{at}: no COM");
                assert_eq!(copy.from, Mac::from_address(source, nwid), "{at}: from");
                let kind = check_ethernet_payload(
                    lab,
                    &at,
                    nwid,
                    source,
                    None,
                    copy.ethertype,
                    &copy.payload,
                );
                let group = expected_group(&at, copy.ethertype, &copy.payload);
                assert_eq!(copy.to, group.mac, "{at}: to");
                note(format!("EXT_FRAME {kind}"));
            }
            _ => {}
        }
    }
    seen
}

/// A group someone gathers or multicasts to on `nwid`: a group some member would subscribe
/// to, or IPv6 all-routers / MLDv2 reports (which members multicast but never join).
fn gatherable(lab: &Lab, group: MulticastGroup, nwid: NetworkId) -> bool {
    let mldv2_routers = Mac([0x33, 0x33, 0x00, 0x00, 0x00, 0x16]);
    let all_routers = Mac([0x33, 0x33, 0x00, 0x00, 0x00, 0x02]);
    lab.members()
        .iter()
        .any(|m| own_groups(lab, m.identity.address(), nwid).contains(&group))
        || (group.adi == 0 && (group.mac == mldv2_routers || group.mac == all_routers))
}

fn check_multicast_subscriptions(lab: &Lab, replay: &Replay, networks: &[NetworkId]) {
    let members: Vec<Address> = lab.members().iter().map(|m| m.identity.address()).collect();
    for packet in &replay.vl2 {
        let at = packet.at();
        let (source, destination) = (packet.packet.source, packet.packet.destination);
        match &packet.message {
            Message::MulticastLike(like) => {
                assert!(!like.likes.is_empty(), "{at}: no group");
                for (nwid, group) in &like.likes {
                    assert!(networks.contains(nwid), "{at}: network {nwid}");
                    assert!(
                        own_groups(lab, source, *nwid).contains(group),
                        "{at}: {} subscribes to {group:?}, not one of its own groups",
                        lab.node(source).name
                    );
                }
            }
            Message::MulticastGather(gather) => {
                let nwid = gather.network_id;
                assert!(networks.contains(&nwid), "{at}: network");
                assert_eq!(destination, lab.r.identity.address(), "{at}: asks r");
                assert!(gather.gather_limit > 0, "{at}: gather limit");
                assert!(
                    gatherable(lab, gather.group, nwid),
                    "{at}: {:?}",
                    gather.group
                );
                // 1.14 attaches its COM, which r must accept.
                let com = gather
                    .com
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: no COM"));
                check_com(lab, &at, com, source, nwid);
            }
            Message::OkMulticastGather(answer) => {
                let request = replay.request_of(packet);
                let Ok(gather) = MulticastGatherRepr::parse(&request.payload) else {
                    panic!("{at}: the gather parsed before");
                };
                assert_eq!(
                    (answer.network_id, answer.group),
                    (gather.network_id, gather.group),
                    "{at}: answers its gather"
                );
                assert!(!answer.members.is_empty(), "{at}: gathered nobody");
                assert!(answer.total_known as usize >= answer.members.len(), "{at}");
                for member in &answer.members {
                    assert!(
                        members.contains(member) && *member != destination,
                        "{at}: gathered {member}"
                    );
                    assert!(
                        own_groups(lab, *member, answer.network_id).contains(&answer.group),
                        "{at}: {member} is not in {:?}",
                        answer.group
                    );
                }
            }
            Message::OkMulticastFrame(answer) => {
                let request = replay.request_of(packet);
                let Ok(multicast) = MulticastFrameRepr::parse(&request.payload) else {
                    panic!("{at}: the multicast parsed before");
                };
                assert_eq!(
                    (answer.network_id, answer.group),
                    (multicast.network_id, multicast.group),
                    "{at}: answers its multicast"
                );
                assert_eq!(answer.flags, 0, "{at}: no other flag");
                assert!(answer.com.is_none(), "{at}: no COM");
                let gathered = answer
                    .gathered
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: the multicast asked for members"));
                assert_eq!(gathered.members, [source], "{at}: the responder itself");
                assert!(gathered.total_known >= 1, "{at}");
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// A COM of `member` on `nwid`: signed by r, issued to `member`, binding its identity.
fn check_com(lab: &Lab, at: &str, com: &CertificateOfMembership, member: Address, nwid: NetworkId) {
    com.verify(&lab.r.identity)
        .unwrap_or_else(|e| panic!("{at}: COM does not verify against r: {e}"));
    assert_eq!(com.signed_by, lab.r.identity.address(), "{at}: COM signer");
    let mut forged = com.clone();
    forged.qualifiers[0].value ^= 0x01;
    assert_eq!(
        forged.verify(&lab.r.identity),
        Err(VerifyError::BadSignature),
        "{at}: COM signature"
    );
    assert_eq!(com.network_id(), nwid, "{at}: COM network");
    assert_eq!(com.issued_to(), member, "{at}: COM issued to");
    assert_eq!(com.qualifiers.len(), 7, "{at}: 1.14 issues 7 qualifiers");
    let identity = &lab.node(member).identity;
    // Agreeing with itself checks that the COM binds the member's identity hash.
    assert!(com.agrees_with(com, identity), "{at}: COM binds its holder");
    let other = lab
        .members()
        .into_iter()
        .find(|m| m.identity.address() != member)
        .expect("two members");
    assert!(
        !com.agrees_with(com, &other.identity),
        "{at}: COM does not bind {}",
        other.name
    );
}

/// A COO of `member` on `nwid`: signed by r, listing exactly the member's managed IPs (its
/// IPv4 address; on "rich" also its RFC4193 and 6PLANE addresses) and not the other's.
fn check_coo(lab: &Lab, at: &str, coo: &CertificateOfOwnership, member: Address, nwid: NetworkId) {
    coo.verify(&lab.r.identity)
        .unwrap_or_else(|e| panic!("{at}: COO {} does not verify: {e}", coo.id));
    let mut forged = coo.clone();
    forged.things.pop();
    assert_eq!(
        forged.verify(&lab.r.identity),
        Err(VerifyError::BadSignature),
        "{at}: COO signature"
    );
    assert_eq!(
        (coo.network_id, coo.issued_to, coo.signed_by),
        (nwid, member, lab.r.identity.address()),
        "{at}: COO {}",
        coo.id
    );
    let mut owned = vec![Thing::ipv4(lab.ipv4(member, nwid).expect("a member"))];
    if nwid == NETWORK_RICH {
        owned.push(Thing::ipv6(rfc4193_address(nwid, member)));
        owned.push(Thing::ipv6(sixplane_address(nwid, member)));
    }
    for thing in &owned {
        assert!(coo.owns(thing), "{at}: COO lacks {thing:?}");
    }
    assert_eq!(coo.things.len(), owned.len(), "{at}: COO things");
    let other = lab
        .members()
        .into_iter()
        .find(|m| m.identity.address() != member)
        .expect("two members");
    let other_ipv4 = lab.ipv4(other.identity.address(), nwid).expect("a member");
    assert!(
        !coo.owns(&Thing::ipv4(other_ipv4)),
        "{at}: owns {other_ipv4}"
    );
}

/// What each (member, network) presented: counts of (COMs, capabilities, tags, COOs).
type Presented = BTreeMap<(&'static str, &'static str), (usize, usize, usize, usize)>;

fn check_credentials(lab: &Lab, replay: &Replay, networks: &[NetworkId]) -> Presented {
    let r = lab.r.identity.address();
    let mut presented = BTreeMap::new();
    for packet in &replay.vl2 {
        let Message::NetworkCredentials(credentials) = &packet.message else {
            continue;
        };
        let at = packet.at();
        let source = packet.packet.source;
        assert!(
            lab.members()
                .iter()
                .any(|m| m.identity.address() == packet.packet.destination),
            "{at}: presented to a member"
        );
        assert!(
            !credentials.coms.is_empty(),
            "{at}: 1.14 always sends its COM"
        );
        let nwid = credentials.coms[0].network_id();
        assert!(networks.contains(&nwid), "{at}: network {nwid}");
        for com in &credentials.coms {
            check_com(lab, &at, com, source, nwid);
        }
        for tag in &credentials.tags {
            tag.verify(&lab.r.identity)
                .unwrap_or_else(|e| panic!("{at}: tag {} does not verify: {e}", tag.id));
            let mut forged = tag.clone();
            forged.value += 1;
            assert_eq!(
                forged.verify(&lab.r.identity),
                Err(VerifyError::BadSignature),
                "{at}: tag signature"
            );
            assert_eq!(
                (tag.network_id, tag.issued_to, tag.signed_by),
                (nwid, source, r),
                "{at}: tag {}",
                tag.id
            );
            assert_eq!(
                (tag.id, tag.value),
                (RICH_TAG_ID, RICH_TAG_VALUE),
                "{at}: tag"
            );
        }
        for capability in &credentials.capabilities {
            capability
                .verify(|address| lab.controller_identity(address))
                .unwrap_or_else(|e| {
                    panic!("{at}: capability {} does not verify: {e}", capability.id)
                });
            assert_eq!(capability.network_id, nwid, "{at}: capability network");
            assert_eq!(capability.id, RICH_CAPABILITY_ID, "{at}: capability ID");
            assert_eq!(
                (capability.custody[0].from, capability.custody[0].to),
                (r, source),
                "{at}: r handed the capability to its sender"
            );
            // The signature covers the capability (1.14 signs it without the custody chain).
            let mut forged = capability.clone();
            forged.timestamp += 1;
            assert_eq!(
                forged.verify(|address| lab.controller_identity(address)),
                Err(VerifyError::BadSignature),
                "{at}: capability signature"
            );
        }
        for coo in &credentials.certificates_of_ownership {
            check_coo(lab, &at, coo, source, nwid);
        }
        assert!(credentials.revocations.is_empty(), "{at}: revocations");
        let entry = presented
            .entry((lab.node(source).name, network_name(nwid)))
            .or_insert((0, 0, 0, 0));
        entry.0 += credentials.coms.len();
        entry.1 += credentials.capabilities.len();
        entry.2 += credentials.tags.len();
        entry.3 += credentials.certificates_of_ownership.len();
    }
    presented
}

fn network_name(nwid: NetworkId) -> &'static str {
    match nwid {
        NETWORK_LAB => "lab",
        NETWORK_RICH => "rich",
        _ => "?",
    }
}

/// The COMs the members presented (credentials and gathers): each signed by r (checked
/// above), and any two of different members on one network agree both ways.
fn check_presented_coms_agree(lab: &Lab, replay: &Replay) -> usize {
    let mut coms: Vec<(Address, &CertificateOfMembership)> = Vec::new();
    for packet in &replay.vl2 {
        let source = packet.packet.source;
        match &packet.message {
            Message::NetworkCredentials(credentials) => {
                coms.extend(credentials.coms.iter().map(|c| (source, c)));
            }
            Message::MulticastGather(gather) => {
                coms.extend(gather.com.iter().map(|c| (source, c)));
            }
            _ => {}
        }
    }
    let mut pairs = 0;
    for (holder, ours) in &coms {
        for (peer, theirs) in &coms {
            if holder == peer || ours.network_id() != theirs.network_id() {
                continue;
            }
            assert!(
                ours.agrees_with(theirs, &lab.node(*peer).identity),
                "{}: {holder}'s COM does not agree with {peer}'s",
                replay.name
            );
            pairs += 1;
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------------------
// Config requests and delivery

fn check_config_requests(replay: &Replay, networks: &[NetworkId]) -> usize {
    let mut requests = 0;
    for packet in &replay.vl2 {
        let Message::NetworkConfigRequest { request, metadata } = &packet.message else {
            continue;
        };
        let at = packet.at();
        assert!(networks.contains(&request.network_id), "{at}: network");
        assert_eq!(
            request.network_id.controller(),
            packet.packet.destination,
            "{at}: sent to the network's controller"
        );
        // A 1.14.1 node: protocol 12, version 1.14.1, config format 7, rules engine 1.
        assert_eq!(
            (
                metadata.protocol_version,
                metadata.major_version,
                metadata.minor_version,
                metadata.revision
            ),
            (12, 1, 14, 1),
            "{at}: pv / version"
        );
        assert!(
            metadata.os_arch.starts_with("linux/"),
            "{at}: os/arch {:?}",
            metadata.os_arch
        );
        // Everything else is what our 1.14.1 request writes, in 1.14.1's key order.
        let ours = RequestMetadata::zerotier_1_14(&metadata.os_arch)
            .to_dictionary()
            .expect("fits");
        assert_eq!(
            String::from_utf8_lossy(ours.as_bytes()),
            String::from_utf8_lossy(&request.metadata),
            "{at}: metadata dictionary"
        );
        assert_eq!(*metadata, RequestMetadata::zerotier_1_14(&metadata.os_arch));
        requests += 1;
    }
    requests
}

/// A config update reassembled from its chunks.
#[derive(Debug)]
struct Delivered {
    member: Address,
    update_id: u64,
    /// How the chunks came: OK(NETWORK_CONFIG_REQUEST) or NETWORK_CONFIG.
    verb: Verb,
    /// NETWORK_CONFIG packet IDs, which the member acknowledges.
    pushed_packet_ids: Vec<u64>,
    bytes: Vec<u8>,
    config: NetworkConfig,
}

/// Gathers every config chunk, checks each chunk's signature, reassembles each update and
/// reads it as a config issued to the member that received it.
fn reassemble_configs(lab: &Lab, replay: &Replay) -> Vec<Delivered> {
    /// The chunks of one update received so far.
    struct Update {
        verb: Verb,
        network_id: NetworkId,
        total_length: u32,
        chunks: BTreeMap<u32, Vec<u8>>,
        pushed_packet_ids: Vec<u64>,
    }
    let r = lab.r.identity.address();
    let mut updates: BTreeMap<(Address, u64), Update> = BTreeMap::new();
    for packet in &replay.vl2 {
        let Message::ConfigChunk(chunk) = &packet.message else {
            continue;
        };
        let at = packet.at();
        assert_eq!(packet.packet.source, r, "{at}: from the controller");
        chunk
            .verify(&lab.r.identity)
            .unwrap_or_else(|e| panic!("{at}: chunk signature: {e}"));
        // The signature covers the chunk: one flipped data bit and it fails.
        let mut tampered = chunk.clone();
        tampered.data[0] ^= 0x01;
        assert_eq!(
            tampered.verify(&lab.r.identity),
            Err(VerifyError::BadSignature),
            "{at}: a tampered chunk verifies"
        );
        // ... and only r's signature will do.
        assert!(
            chunk.verify(&lab.a.identity).is_err(),
            "{at}: verifies against a"
        );
        let trailer = chunk.trailer.expect("verified, so signed");
        assert_ne!(trailer.update_id, 0, "{at}: update ID");
        let member = packet.packet.destination;
        if packet.packet.verb == Verb::Ok {
            // The answer to this member's own request for this network.
            let request = replay.request_of(packet);
            let Ok(request) = NetworkConfigRequestRepr::parse(&request.payload) else {
                panic!("{at}: the request parsed before");
            };
            assert_eq!(request.network_id, chunk.network_id, "{at}: network");
        }
        let update = updates
            .entry((member, trailer.update_id))
            .or_insert_with(|| Update {
                verb: packet.packet.verb,
                network_id: chunk.network_id,
                total_length: trailer.total_length,
                chunks: BTreeMap::new(),
                pushed_packet_ids: Vec::new(),
            });
        assert_eq!(
            (update.verb, update.network_id, update.total_length),
            (packet.packet.verb, chunk.network_id, trailer.total_length),
            "{at}: chunks of one update agree"
        );
        if let Some(earlier) = update
            .chunks
            .insert(trailer.chunk_index, chunk.data.clone())
        {
            assert_eq!(earlier, chunk.data, "{at}: a resent chunk differs");
        }
        if packet.packet.verb == Verb::NetworkConfig {
            update.pushed_packet_ids.push(packet.packet.packet_id);
        }
    }
    updates
        .into_iter()
        .map(|((member, update_id), update)| {
            let at = format!("{}: update {update_id:016x} to {member}", replay.name);
            let nwid = update.network_id;
            let mut bytes = Vec::with_capacity(update.total_length as usize);
            for (index, data) in update.chunks {
                assert_eq!(index as usize, bytes.len(), "{at}: chunk gap");
                bytes.extend_from_slice(&data);
            }
            assert_eq!(
                bytes.len(),
                update.total_length as usize,
                "{at}: incomplete"
            );
            let config =
                NetworkConfig::from_bytes(&bytes).unwrap_or_else(|e| panic!("{at}: config: {e}"));
            // The same through the Dictionary type, and back to the very same bytes.
            let dictionary = Dictionary::from_bytes(&bytes, NETWORK_CONFIG_CAPACITY);
            assert_eq!(
                NetworkConfig::from_dictionary(&dictionary).as_ref(),
                Ok(&config),
                "{at}"
            );
            let reserialized = config.to_dictionary().expect("fits");
            assert_eq!(
                String::from_utf8_lossy(reserialized.as_bytes()),
                String::from_utf8_lossy(&bytes),
                "{at}: re-serialized config"
            );
            assert_eq!(config.network_id, nwid, "{at}: network");
            assert_eq!(config.issued_to, member, "{at}: issued to");
            let com = config
                .com
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: a private network's config has a COM"));
            check_com(lab, &at, com, member, nwid);
            Delivered {
                member,
                update_id,
                verb: update.verb,
                pushed_packet_ids: update.pushed_packet_ids,
                bytes,
                config,
            }
        })
        .collect()
}

/// Each pushed NETWORK_CONFIG is acknowledged by its member with the update ID.
fn check_config_acks(replay: &Replay, delivered: &[Delivered]) -> usize {
    let mut acks = 0;
    for packet in &replay.vl2 {
        let Message::ConfigAck(ack) = &packet.message else {
            continue;
        };
        let at = packet.at();
        let (_, in_re_id) = packet.in_re.expect("an OK");
        let request = replay.request_of(packet);
        assert_eq!(request.verb, Verb::NetworkConfig, "{at}");
        let update = delivered
            .iter()
            .find(|d| d.pushed_packet_ids.contains(&in_re_id))
            .unwrap_or_else(|| panic!("{at}: acknowledges no pushed config"));
        assert_eq!(
            update.member, packet.packet.source,
            "{at}: ack by its member"
        );
        assert_eq!(
            (ack.network_id, ack.update_id),
            (update.config.network_id, update.update_id),
            "{at}: ack names the update"
        );
        acks += 1;
    }
    for update in delivered.iter().filter(|d| d.verb == Verb::NetworkConfig) {
        assert!(
            !update.pushed_packet_ids.is_empty(),
            "{}: push without packet",
            replay.name
        );
    }
    acks
}

/// The latest config each member got on `nwid`; their COMs agree both ways.
fn check_members_configs_agree<'d>(
    lab: &Lab,
    delivered: &'d [Delivered],
    nwid: NetworkId,
) -> [&'d NetworkConfig; 2] {
    let latest = |member: &Node| {
        delivered
            .iter()
            .filter(|d| d.member == member.identity.address() && d.config.network_id == nwid)
            .map(|d| &d.config)
            .max_by_key(|c| c.timestamp)
            .unwrap_or_else(|| panic!("no config for {} on {nwid}", member.name))
    };
    let (a, b) = (latest(&lab.a), latest(&lab.b));
    let (com_a, com_b) = (
        a.com.as_ref().expect("checked"),
        b.com.as_ref().expect("checked"),
    );
    assert!(com_a.agrees_with(com_b, &lab.b.identity), "a accepts b");
    assert!(com_b.agrees_with(com_a, &lab.a.identity), "b accepts a");
    // b's COM presented with a's identity is someone else's: refused.
    assert!(!com_a.agrees_with(com_b, &lab.a.identity));
    [a, b]
}

/// What the controller's JSON for `nwid` set up shows in a member's config.
fn check_config_contents(lab: &Lab, config: &NetworkConfig, nwid: NetworkId) {
    let member = lab.node(config.issued_to);
    let at = format!("{}'s config on {}", member.name, network_name(nwid));
    assert_eq!(config.name, network_name(nwid), "{at}: name");
    assert_eq!(config.mtu, 2800, "{at}: MTU");
    let ipv4 = lab.ipv4(config.issued_to, nwid).expect("a member");
    let assigned = InetAddress::Ip(SocketAddr::new(IpAddr::V4(ipv4), IPV4_NETMASK_BITS));
    assert!(
        config.static_ips.contains(&assigned),
        "{at}: {ipv4}/{IPV4_NETMASK_BITS} not in {:?}",
        config.static_ips
    );
    let route = |target: [u8; 4], bits: u16| {
        InetAddress::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(target)), bits))
    };
    match nwid {
        NETWORK_LAB => {
            assert_eq!(config.static_ips, [assigned], "{at}: static IPs");
            assert_eq!(config.multicast_limit, 32, "{at}: multicast limit");
            let targets: Vec<&InetAddress> = config.routes.iter().map(|r| &r.target).collect();
            assert_eq!(targets, [&route([10, 147, 17, 0], 24)], "{at}: routes");
            assert!(config.capabilities.is_empty() && config.tags.is_empty());
        }
        NETWORK_RICH => {
            assert_eq!(config.multicast_limit, 16, "{at}: multicast limit");
            let managed =
                |ip: Ipv6Addr, bits: u16| InetAddress::Ip(SocketAddr::new(ip.into(), bits));
            for ipv6 in [
                managed(rfc4193_address(nwid, config.issued_to), 88),
                managed(sixplane_address(nwid, config.issued_to), 40),
            ] {
                assert!(config.static_ips.contains(&ipv6), "{at}: {ipv6:?}");
            }
            let targets: Vec<&InetAddress> = config.routes.iter().map(|r| &r.target).collect();
            assert_eq!(
                targets,
                [&route([10, 148, 0, 0], 24), &route([10, 149, 0, 0], 16)],
                "{at}: routes"
            );
            assert_eq!(config.dns.domain, b"zt.example", "{at}: DNS domain");
            let [tag] = &config.tags[..] else {
                panic!("{at}: tags {:?}", config.tags);
            };
            tag.verify(&lab.r.identity)
                .unwrap_or_else(|e| panic!("{at}: tag: {e}"));
            assert_eq!(
                (tag.id, tag.value, tag.issued_to),
                (RICH_TAG_ID, RICH_TAG_VALUE, config.issued_to)
            );
            let capabilities: Vec<u32> = config.capabilities.iter().map(|c| c.id).collect();
            let expected: &[u32] = if member.name == "a" {
                &[RICH_CAPABILITY_ID]
            } else {
                &[]
            };
            assert_eq!(capabilities, expected, "{at}: capabilities");
            for capability in &config.capabilities {
                capability
                    .verify(|address| lab.controller_identity(address))
                    .unwrap_or_else(|e| panic!("{at}: capability: {e}"));
            }
        }
        _ => unreachable!("two networks"),
    }
}

/// The COMs the members presented in the capture are those their configs carried.
fn check_presented_coms_were_issued(replay: &Replay, delivered: &[Delivered]) -> usize {
    let mut matched = 0;
    for packet in &replay.vl2 {
        let coms: Vec<&CertificateOfMembership> = match &packet.message {
            Message::NetworkCredentials(credentials) => credentials.coms.iter().collect(),
            Message::MulticastGather(gather) => gather.com.iter().collect(),
            _ => continue,
        };
        for com in coms {
            let issued: Vec<&CertificateOfMembership> = delivered
                .iter()
                .filter(|d| {
                    d.member == packet.packet.source && d.config.network_id == com.network_id()
                })
                .filter_map(|d| d.config.com.as_ref())
                .collect();
            if issued.is_empty() {
                // Configured before the capture began.
                continue;
            }
            assert!(
                issued.contains(&com),
                "{}: a COM no captured config carried",
                packet.at()
            );
            matched += 1;
        }
    }
    matched
}

// ---------------------------------------------------------------------------------------------
// ERRORs

/// (from, to, in-re verb, code) of each VL2 ERROR, after checking it names a network.
fn check_errors(
    lab: &Lab,
    replay: &Replay,
    networks: &[NetworkId],
) -> Vec<(&'static str, &'static str, Verb, ErrorCode)> {
    let mut errors = Vec::new();
    for packet in &replay.vl2 {
        let Message::Error { code, payload } = &packet.message else {
            continue;
        };
        let at = packet.at();
        let request = replay.request_of(packet);
        let Vl2ErrorPayload::Network(nwid) = payload else {
            panic!("{at}: {payload:?}");
        };
        assert!(networks.contains(nwid), "{at}: network");
        // The network the refused packet was about (all start with the network ID).
        assert_eq!(
            request.payload.get(..8),
            Some(&nwid.to_bytes()[..]),
            "{at}: the request's network"
        );
        let (verb, _) = packet.in_re.expect("an ERROR");
        errors.push((
            lab.node(packet.packet.source).name,
            lab.node(packet.packet.destination).name,
            verb,
            *code,
        ));
    }
    errors.sort();
    errors
}

// ---------------------------------------------------------------------------------------------
// The captures

#[test]
fn join_ping_vl2() {
    let lab = Lab::load();
    let replay = Replay::run(&lab, CAPTURE_JOIN_PING, "join-ping");
    let networks = [NETWORK_LAB];
    use Verb::*;
    check_readme_counts(
        &replay,
        &readme_table(&[
            (Frame, 3, 257),
            (Ok, 3, 86),
            (MulticastGather, 3, 12),
            (MulticastLike, 3, 10),
            (NetworkConfigRequest, 3, 4),
            (Error, 3, 4),
            (Ok, 1, 3),
            (MulticastFrame, 1, 2),
            (NetworkCredentials, 1, 2),
            (NetworkConfig, 3, 2),
            (MulticastFrame, 3, 1),
            (NetworkCredentials, 3, 1),
        ]),
        |_| true,
    );
    // The OKs and ERRORs among them that answer VL2 verbs (the other OKs answer HELLO,
    // WHOIS and ECHO).
    assert_eq!(
        replay.counts(|p| p.in_re.is_some()),
        kind_table(&[
            (Ok, Some(Echo), 3, 2),
            (Ok, Some(NetworkConfigRequest), 3, 2),
            (Ok, Some(MulticastGather), 3, 4),
            (Ok, Some(MulticastFrame), 3, 3),
            (Error, Some(NetworkConfigRequest), 3, 2),
            (Error, Some(MulticastFrame), 3, 2),
        ]),
        "join-ping: VL2 replies"
    );

    assert_eq!(
        check_frames(&lab, &replay, &networks),
        BTreeMap::from([
            ("FRAME ARP".to_owned(), 1),
            ("FRAME IPv4".to_owned(), 250),
            ("FRAME IPv6".to_owned(), 6),
            // a's ARP for b (sent twice), a's neighbour solicitation for b.
            ("MULTICAST_FRAME ARP".to_owned(), 2),
            ("MULTICAST_FRAME IPv6".to_owned(), 1),
        ]),
        "join-ping: frames by payload"
    );
    check_multicast_subscriptions(&lab, &replay, &networks);
    assert_eq!(
        check_credentials(&lab, &replay, &networks),
        BTreeMap::from([(("a", "lab"), (2, 0, 0, 2)), (("b", "lab"), (1, 0, 0, 1)),]),
        "join-ping: (COMs, capabilities, tags, COOs) presented"
    );
    let agreeing = check_presented_coms_agree(&lab, &replay);
    assert!(agreeing > 0, "no COMs of both members");
    assert_eq!(check_config_requests(&replay, &networks), 4);

    let delivered = reassemble_configs(&lab, &replay);
    assert_eq!(delivered.len(), 4, "a and b: one answer and one push each");
    assert_eq!(check_config_acks(&replay, &delivered), 2);
    for config in check_members_configs_agree(&lab, &delivered, NETWORK_LAB) {
        check_config_contents(&lab, config, NETWORK_LAB);
    }
    for update in &delivered {
        check_config_contents(&lab, &update.config, NETWORK_LAB);
    }
    // 3 COMs in credentials and 12 in gathers.
    assert_eq!(check_presented_coms_were_issued(&replay, &delivered), 15);

    // The first requests were refused, and b wanted a's COM before its first multicast
    // (twice, for the resent packet).
    assert_eq!(
        check_errors(&lab, &replay, &networks),
        [
            (
                "b",
                "a",
                MulticastFrame,
                ErrorCode::NeedMembershipCertificate
            ),
            (
                "b",
                "a",
                MulticastFrame,
                ErrorCode::NeedMembershipCertificate
            ),
            (
                "r",
                "a",
                NetworkConfigRequest,
                ErrorCode::NetworkAccessDenied
            ),
            (
                "r",
                "b",
                NetworkConfigRequest,
                ErrorCode::NetworkAccessDenied
            ),
        ]
    );
}

#[test]
fn rules_tcp_vl2() {
    let lab = Lab::load();
    let replay = Replay::run(&lab, CAPTURE_RULES_TCP, "rules-tcp");
    // b is still on "lab" from the join-ping run and tells a what it subscribes to there.
    let networks = [NETWORK_RICH, NETWORK_LAB];
    use Verb::*;
    check_readme_counts(
        &replay,
        &readme_table(&[
            (Ok, 3, 26),
            (Frame, 3, 22),
            (MulticastLike, 3, 5),
            (NetworkCredentials, 3, 2),
        ]),
        |_| true,
    );
    assert_eq!(
        replay.counts(|p| p.in_re.is_some()),
        kind_table(&[]),
        "rules-tcp: no VL2 replies"
    );
    assert_eq!(
        check_frames(&lab, &replay, &networks),
        BTreeMap::from([("FRAME IPv4".to_owned(), 22)]),
        "rules-tcp: frames by payload"
    );
    check_multicast_subscriptions(&lab, &replay, &networks);
    let credentials = check_credentials(&lab, &replay, &networks);
    assert_eq!(
        credentials,
        BTreeMap::from([(("a", "rich"), (1, 1, 1, 1)), (("b", "rich"), (1, 0, 1, 1)),]),
        "rules-tcp: (COMs, capabilities, tags) presented"
    );
    assert!(check_presented_coms_agree(&lab, &replay) > 0);
    assert!(reassemble_configs(&lab, &replay).is_empty());
    assert!(check_errors(&lab, &replay, &networks).is_empty());
}

#[test]
fn rules_v6_vl2() {
    let lab = Lab::load();
    let replay = Replay::run(&lab, CAPTURE_RULES_V6, "rules-v6");
    let networks = [NETWORK_RICH, NETWORK_LAB];
    use Verb::*;
    // The README counts only packets that came in one datagram (see captures.rs); the 240
    // reassembled ones are all FRAMEs.
    check_readme_counts(
        &replay,
        &readme_table(&[
            (Frame, 3, 270),
            (Ok, 3, 51),
            (MulticastGather, 3, 28),
            (MulticastLike, 3, 17),
            (ExtFrame, 3, 7),
            (NetworkConfigRequest, 3, 2),
            (NetworkCredentials, 3, 2),
            (NetworkConfig, 3, 2),
            (MulticastFrame, 3, 1),
            (Error, 3, 1),
        ]),
        |p| !p.reassembled,
    );
    assert_eq!(
        replay.counts(|p| p.packet.reassembled),
        kind_table(&[(Frame, None, 3, 240)]),
        "rules-v6: reassembled packets parsed"
    );
    assert_eq!(
        replay.counts(|p| p.in_re.is_some()),
        kind_table(&[
            (Ok, Some(Echo), 3, 2),
            (Ok, Some(NetworkConfigRequest), 3, 2),
            (Ok, Some(MulticastGather), 3, 2),
            (Ok, Some(MulticastFrame), 3, 1),
            (Error, Some(ExtFrame), 3, 1),
        ]),
        "rules-v6: VL2 replies"
    );
    assert_eq!(
        check_frames(&lab, &replay, &networks),
        BTreeMap::from([
            ("EXT_FRAME ARP".to_owned(), 1),
            ("EXT_FRAME IPv6".to_owned(), 6),
            ("FRAME ARP".to_owned(), 2),
            ("FRAME IPv4".to_owned(), 500),
            ("FRAME IPv6".to_owned(), 8),
            ("MULTICAST_FRAME ARP".to_owned(), 1),
        ]),
        "rules-v6: frames by payload"
    );
    check_multicast_subscriptions(&lab, &replay, &networks);
    let credentials = check_credentials(&lab, &replay, &networks);
    assert_eq!(
        credentials,
        BTreeMap::from([(("a", "rich"), (1, 1, 1, 1)), (("b", "rich"), (1, 0, 1, 1)),]),
        "rules-v6: (COMs, capabilities, tags) presented"
    );
    assert!(check_presented_coms_agree(&lab, &replay) > 0);
    assert_eq!(check_config_requests(&replay, &networks), 2);

    let delivered = reassemble_configs(&lab, &replay);
    assert_eq!(delivered.len(), 4, "a and b: one answer and one push each");
    assert_eq!(check_config_acks(&replay, &delivered), 2);
    for config in check_members_configs_agree(&lab, &delivered, NETWORK_RICH) {
        check_config_contents(&lab, config, NETWORK_RICH);
    }
    // The rules are revision 1's, as the controller JSON has them.
    let revision_1: Value =
        serde_json::from_str(RULES_RICH_REVISION_1).expect("revision 1 rules JSON");
    for update in &delivered {
        check_config_contents(&lab, &update.config, NETWORK_RICH);
        assert_eq!(
            update.config.rules,
            rules_from_json(&revision_1),
            "rules of update {:016x}",
            update.update_id
        );
        assert!(update.bytes.len() > 1000);
    }
    // 2 COMs in credentials and 26 in gathers on "rich" (b's 2 gathers on "lab" carry a COM
    // from before the capture).
    assert_eq!(check_presented_coms_were_issued(&replay, &delivered), 28);

    assert_eq!(
        check_errors(&lab, &replay, &networks),
        [("b", "a", ExtFrame, ErrorCode::NeedMembershipCertificate)]
    );
}
