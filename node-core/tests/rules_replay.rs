//! Replays the unicast frames of the ZeroTier One 1.14.1 rules captures through our rules
//! engine (`vl2::filter`), with the rules, capabilities and tags the controller JSON files
//! hold (read through `vl2::rules_json`), and checks the engine decides what 1.14 did:
//! `tests/data/README.md`'s outcome table for `zt-1.14.1-rules-tcp.pcap`, and what each
//! capture shows (which frames went on the wire, which TEE copies were sent).

// Only part of the pcap reader is used here.
#[allow(dead_code)]
#[path = "common/pcap.rs"]
mod pcap;
#[path = "common/vl2_capture.rs"]
mod vl2_capture;

use node_core::vl2::filter::{
    ext_frame_flags, filter_incoming, filter_outgoing, Direction, ExtFrameCopy, FilterContext,
    FilterDecision, Frame, NoOwnership, TagValue, ETHERTYPE_IPV4,
};
use node_core::vl2::rules_json::rules_from_json;
use node_core::vl2::verbs::{ExtFrameRepr, FrameRepr, NetworkCredentialsRepr};
use node_core::vl2::{Capability, Mac, NetworkId, Rule};
use node_core::wire::Verb;
use node_core::{Address, Identity};
use serde_json::Value;

use vl2_capture::{decode_capture, CapturedPacket};

macro_rules! capture_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/capture-1.14.1/",
            $name
        )
    };
}

const CAPTURE_RULES_TCP: &[u8] = include_bytes!(capture_file!("zt-1.14.1-rules-tcp.pcap"));
const CAPTURE_RULES_V6: &[u8] = include_bytes!(capture_file!("zt-1.14.1-rules-v6.pcap"));
const SECRET_R: &str = include_str!(capture_file!("r.identity.secret"));
const SECRET_A: &str = include_str!(capture_file!("a.identity.secret"));
const SECRET_B: &str = include_str!(capture_file!("b.identity.secret"));
const NETWORK_RICH: &str = include_str!(capture_file!("controller-network-rich.json"));
const RULES_RICH_REVISION_1: &str =
    include_str!(capture_file!("controller-rules-rich-revision1.json"));
const MEMBER_A: &str = include_str!(capture_file!("controller-member-rich-3346652ff6.json"));
const MEMBER_B: &str = include_str!(capture_file!("controller-member-rich-eab80561d6.json"));

const IP_PROTO_ICMP: u8 = 0x01;
const IP_PROTO_TCP: u8 = 0x06;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// The TEE rule of both rule sets sends to b; revision 2 copies 64 bytes, revision 1 128.
const TEE_LENGTH_REVISION_2: usize = 64;
const TEE_LENGTH_REVISION_1: usize = 128;

// ---------------------------------------------------------------------------------------------
// The network and its members, from the controller's JSON

struct Member {
    identity: Identity,
    tags: Vec<TagValue>,
    capabilities: Vec<Capability>,
}

impl Member {
    fn address(&self) -> Address {
        self.identity.address()
    }
}

struct Network {
    id: NetworkId,
    rules: Vec<Rule>,
    a: Member,
    b: Member,
}

fn parse_json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn identity(secret: &str) -> Identity {
    secret.trim().parse().expect("identity secret parses")
}

impl Network {
    /// Network "rich" with the base rules `rules` (a JSON array of controller rule objects).
    fn load(rules: &Value) -> Self {
        let network = parse_json(NETWORK_RICH, "network JSON");
        let id: NetworkId = network["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("network id");
        let defined: Vec<(u32, Vec<Rule>)> = network["capabilities"]
            .as_array()
            .expect("network capabilities")
            .iter()
            .map(|c| {
                let id = c["id"].as_u64().expect("capability id") as u32;
                (id, rules_from_json(&c["rules"]))
            })
            .collect();
        let member = |text: &str, secret: &str| {
            let json = parse_json(text, "member JSON");
            let tags = json["tags"]
                .as_array()
                .expect("member tags")
                .iter()
                .map(|pair| TagValue {
                    id: pair[0].as_u64().expect("tag id") as u32,
                    value: pair[1].as_u64().expect("tag value") as u32,
                })
                .collect();
            let capabilities = json["capabilities"]
                .as_array()
                .expect("member capabilities")
                .iter()
                .map(|cap_id| {
                    let cap_id = cap_id.as_u64().expect("capability id") as u32;
                    let (_, rules) = defined
                        .iter()
                        .find(|(defined_id, _)| *defined_id == cap_id)
                        .expect("member capability is defined on the network");
                    Capability::new(id, 0, cap_id, rules.clone())
                })
                .collect();
            let member = Member {
                identity: identity(secret),
                tags,
                capabilities,
            };
            assert_eq!(
                json["address"].as_str(),
                Some(&*member.address().to_string())
            );
            member
        };
        Self {
            id,
            rules: rules_from_json(rules),
            a: member(MEMBER_A, SECRET_A),
            b: member(MEMBER_B, SECRET_B),
        }
    }

    fn member(&self, address: Address) -> &Member {
        [&self.a, &self.b]
            .into_iter()
            .find(|m| m.address() == address)
            .unwrap_or_else(|| panic!("{address} is not a member"))
    }

    fn mac(&self, address: Address) -> Mac {
        Mac::from_address(address, self.id)
    }

    /// `filterOutgoingPacket` on `sender` for a frame to `destination` (NIL: the multicast
    /// pre-filter).
    fn outbound(
        &self,
        sender: &Member,
        destination: Option<&Member>,
        frame: &Frame<'_>,
    ) -> FilterDecision {
        let cx = FilterContext {
            this_node: sender.address(),
            direction: Direction::Outbound,
            zt_source: sender.address(),
            zt_dest: destination.map_or(Address::NIL, Member::address),
            local_tags: &sender.tags,
            remote_tags: destination.map_or(&[][..], |d| &d.tags),
            config_flags: 0,
            ownership: &NoOwnership,
        };
        filter_outgoing(
            &self.rules,
            &sender.capabilities,
            &cx,
            frame,
            false,
            &mut || 0,
        )
    }

    /// `filterIncomingPacket` on `receiver` for a frame from `sender`, who presented its
    /// capabilities (`sender_capabilities`).
    fn inbound(
        &self,
        sender: &Member,
        sender_capabilities: &[Capability],
        receiver: &Member,
        frame: &Frame<'_>,
    ) -> FilterDecision {
        let cx = FilterContext {
            this_node: receiver.address(),
            direction: Direction::Inbound,
            zt_source: sender.address(),
            zt_dest: receiver.address(),
            local_tags: &receiver.tags,
            remote_tags: &sender.tags,
            config_flags: 0,
            ownership: &NoOwnership,
        };
        filter_incoming(&self.rules, sender_capabilities, &cx, frame, &mut || 0)
    }
}

// ---------------------------------------------------------------------------------------------
// Frames from the captures

/// A unicast FRAME between a and b, as the sender's tap handed it over.
struct UnicastFrame {
    record: usize,
    source: Address,
    destination: Address,
    ethertype: u16,
    data: Vec<u8>,
}

impl UnicastFrame {
    fn frame<'a>(&'a self, network: &Network) -> Frame<'a> {
        Frame {
            mac_source: network.mac(self.source),
            mac_dest: network.mac(self.destination),
            ethertype: self.ethertype,
            vlan_id: 0,
            data: &self.data,
        }
    }

    fn ipv4_protocol(&self) -> Option<u8> {
        (self.ethertype == ETHERTYPE_IPV4 && self.data.len() >= 20).then(|| self.data[9])
    }

    /// (source port, destination port, TCP flags) of an IPv4 TCP segment.
    fn tcp(&self) -> Option<(u16, u16, u8)> {
        if self.ipv4_protocol()? != IP_PROTO_TCP {
            return None;
        }
        let ihl = usize::from(self.data[0] & 0x0f) * 4;
        let tcp = self.data.get(ihl..ihl + 14)?;
        Some((
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
            tcp[13],
        ))
    }

    fn icmp_type(&self) -> Option<u8> {
        if self.ipv4_protocol()? != IP_PROTO_ICMP {
            return None;
        }
        self.data.get(usize::from(self.data[0] & 0x0f) * 4).copied()
    }

    /// A copy with the TCP destination port rewritten.
    fn with_destination_port(&self, port: u16) -> Self {
        let ihl = usize::from(self.data[0] & 0x0f) * 4;
        let mut data = self.data.clone();
        data[ihl + 2..ihl + 4].copy_from_slice(&port.to_be_bytes());
        Self {
            record: 0,
            data,
            ..*self
        }
    }

    /// A copy going the other way (IP addresses and ZeroTier ends swapped).
    fn reversed(&self) -> Self {
        let mut data = self.data.clone();
        data[12..16].copy_from_slice(&self.data[16..20]);
        data[16..20].copy_from_slice(&self.data[12..16]);
        Self {
            record: 0,
            source: self.destination,
            destination: self.source,
            data,
            ..*self
        }
    }
}

struct CaptureFrames {
    packets: Vec<CapturedPacket>,
    frames: Vec<UnicastFrame>,
}

fn capture_frames(capture: &[u8], network: &Network) -> CaptureFrames {
    let identities = [
        identity(SECRET_R),
        network.a.identity.clone(),
        network.b.identity.clone(),
    ];
    let packets = decode_capture(capture, &identities);
    let frames = packets
        .iter()
        .filter(|p| p.verb == Verb::Frame)
        .map(|p| {
            let frame = FrameRepr::parse(&p.payload)
                .unwrap_or_else(|e| panic!("record {}: FRAME: {e}", p.record));
            assert_eq!(frame.network_id, network.id, "record {}", p.record);
            UnicastFrame {
                record: p.record,
                source: p.source,
                destination: p.destination,
                ethertype: frame.ethertype,
                data: frame.payload,
            }
        })
        .collect();
    CaptureFrames { packets, frames }
}

/// The capabilities `sender` presented in the capture (NETWORK_CREDENTIALS).
fn presented_capabilities(packets: &[CapturedPacket], sender: Address) -> Vec<Capability> {
    packets
        .iter()
        .filter(|p| p.verb == Verb::NetworkCredentials && p.source == sender)
        .flat_map(|p| {
            NetworkCredentialsRepr::parse(&p.payload)
                .unwrap_or_else(|e| panic!("record {}: NETWORK_CREDENTIALS: {e}", p.record))
                .capabilities
        })
        .collect()
}

/// The tags `sender` presented in the capture.
fn presented_tags(packets: &[CapturedPacket], sender: Address) -> Vec<TagValue> {
    packets
        .iter()
        .filter(|p| p.verb == Verb::NetworkCredentials && p.source == sender)
        .flat_map(|p| {
            NetworkCredentialsRepr::parse(&p.payload)
                .expect("NETWORK_CREDENTIALS parses")
                .tags
        })
        .map(|t| TagValue {
            id: t.id,
            value: t.value,
        })
        .collect()
}

/// Checks the controller JSON and what the capture shows agree on credentials: the same
/// capability rules, the same tags.
fn check_presented_credentials(network: &Network, packets: &[CapturedPacket]) {
    for member in [&network.a, &network.b] {
        let presented = presented_capabilities(packets, member.address());
        let presented_rules: Vec<(u32, &[Rule])> =
            presented.iter().map(|c| (c.id, &c.rules[..])).collect();
        let expected: Vec<(u32, &[Rule])> = member
            .capabilities
            .iter()
            .map(|c| (c.id, &c.rules[..]))
            .collect();
        assert_eq!(
            presented_rules,
            expected,
            "{}: capabilities presented in the capture vs the controller JSON",
            member.address()
        );
        assert_eq!(presented_tags(packets, member.address()), member.tags);
    }
}

/// Both ends of a frame 1.14 put on the wire: the sender's outbound filter let it go and the
/// receiver's inbound filter delivers it.
fn both_sides(network: &Network, frame: &UnicastFrame) -> (FilterDecision, FilterDecision) {
    let sender = network.member(frame.source);
    let receiver = network.member(frame.destination);
    let view = frame.frame(network);
    (
        network.outbound(sender, Some(receiver), &view),
        network.inbound(sender, &sender.capabilities, receiver, &view),
    )
}

// ---------------------------------------------------------------------------------------------
// zt-1.14.1-rules-tcp.pcap, revision 2

fn revision_2() -> Network {
    let network = parse_json(NETWORK_RICH, "network JSON");
    assert_eq!(network["revision"], 2);
    let net = Network::load(&network["rules"]);
    assert_eq!(net.rules.len(), 23, "README: 23 rule entries");
    net
}

#[test]
fn rules_tcp_every_captured_frame_passes_both_filters() {
    let network = revision_2();
    let capture = capture_frames(CAPTURE_RULES_TCP, &network);
    check_presented_credentials(&network, &capture.packets);
    assert_eq!(capture.frames.len(), 22, "README: FRAME 3: 22");
    for frame in &capture.frames {
        let (out, inb) = both_sides(&network, frame);
        assert!(
            out.deliver,
            "record {}: 1.14 sent it, so its outbound filter passed it",
            frame.record
        );
        assert!(inb.deliver, "record {}: inbound filter", frame.record);
        // The TEE to b never fires between a and b: b is the destination (a → b) or the
        // source (b → a). The capture holds no EXT_FRAME.
        assert_eq!(out.sends().count(), 0, "record {}", frame.record);
        assert_eq!(inb.sends().count(), 0, "record {}", frame.record);
    }
    assert!(
        capture.packets.iter().all(|p| p.verb != Verb::ExtFrame),
        "no TEE copy on the wire"
    );
}

#[test]
fn rules_tcp_outcome_table() {
    let network = revision_2();
    let capture = capture_frames(CAPTURE_RULES_TCP, &network);
    let (a, b) = (network.a.address(), network.b.address());
    let find = |what: &str, f: &dyn Fn(&UnicastFrame) -> bool| {
        capture
            .frames
            .iter()
            .find(|frame| f(frame))
            .unwrap_or_else(|| panic!("the capture holds {what}"))
    };

    // a pings b (IPv4): delivered by the base rules (tags 1000 equal, ICMP), both ways.
    let ping = find("a's echo request", &|f| {
        f.source == a && f.icmp_type() == Some(8)
    });
    let pong = find("b's echo reply", &|f| {
        f.source == b && f.icmp_type() == Some(0)
    });
    for frame in [ping, pong] {
        let (out, inb) = both_sides(&network, frame);
        assert!(out.deliver && inb.deliver, "record {}", frame.record);
        assert_eq!(
            (out.capability, inb.capability),
            (None, None),
            "record {}",
            frame.record
        );
    }

    // a → b TCP 8080: no base rule accepts the first SYN; a's capability 1 does, on a's side
    // (its own capabilities) and on b's (the capabilities a presented).
    let syn_8080 = find("a SYN to 8080", &|f| {
        f.source == a
            && matches!(f.tcp(), Some((_, 8080, flags)) if flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
    });
    let presented_by_a = presented_capabilities(&capture.packets, a);
    let view = syn_8080.frame(&network);
    let out = network.outbound(&network.a, Some(&network.b), &view);
    let inb = network.inbound(&network.a, &presented_by_a, &network.b, &view);
    assert!(out.deliver && inb.deliver);
    assert_eq!((out.capability, inb.capability), (Some(1), Some(1)));
    // Without a's capability, b drops it.
    assert!(!network.inbound(&network.a, &[], &network.b, &view).deliver);
    // The rest of that connection passes on the base rules (not SYN, or ACK).
    let syn_ack = find("b's SYN-ACK from 8080", &|f| {
        f.source == b && matches!(f.tcp(), Some((8080, _, flags)) if flags & TCP_SYN != 0)
    });
    let (out, inb) = both_sides(&network, syn_ack);
    assert!(out.deliver && inb.deliver);
    assert_eq!((out.capability, inb.capability), (None, None));

    // a → b TCP 5201: the base rule "SYN to 22 or 5201".
    let syn_5201 = find("a SYN to 5201", &|f| {
        f.source == a
            && matches!(f.tcp(), Some((_, 5201, flags)) if flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
    });
    let (out, inb) = both_sides(&network, syn_5201);
    assert!(out.deliver && inb.deliver);
    assert_eq!((out.capability, inb.capability), (None, None));

    // a → b TCP 5202: dropped on a (no rule, no capability), and b would drop it too. 1.14
    // did drop it on a: no segment to 5202 is on the wire.
    let syn_5202 = syn_8080.with_destination_port(5202);
    let view = syn_5202.frame(&network);
    assert!(
        !network
            .outbound(&network.a, Some(&network.b), &view)
            .deliver
    );
    assert!(
        !network
            .inbound(&network.a, &presented_by_a, &network.b, &view)
            .deliver
    );
    assert!(capture
        .frames
        .iter()
        .all(|f| !matches!(f.tcp(), Some((_, 5202, _)))));

    // b → a TCP 8081: b holds no capability, so b drops its SYN; a would too. Nothing to
    // 8081 is on the wire.
    let syn_8081 = syn_8080.with_destination_port(8081).reversed();
    let view = syn_8081.frame(&network);
    assert!(
        !network
            .outbound(&network.b, Some(&network.a), &view)
            .deliver
    );
    assert!(
        !network
            .inbound(
                &network.b,
                &presented_capabilities(&capture.packets, b),
                &network.a,
                &view
            )
            .deliver
    );
    assert!(capture
        .frames
        .iter()
        .all(|f| !matches!(f.tcp(), Some((_, 8081, _)))));
    // The same SYN from a (who holds capability 1) would go out.
    let syn_8081_from_a = syn_8080.with_destination_port(8081);
    assert_eq!(
        network
            .outbound(
                &network.a,
                Some(&network.b),
                &syn_8081_from_a.frame(&network)
            )
            .capability,
        Some(1)
    );
}

#[test]
fn rules_tcp_tee_copies_first_64_bytes_to_b() {
    let network = revision_2();
    let capture = capture_frames(CAPTURE_RULES_TCP, &network);
    let b = network.b.address();
    // Outbound TCP to anyone but b (and not from b) is copied to b: 64 bytes, EXT_FRAME 0x02.
    let third: Address = "0123456789".parse().unwrap();
    let third_member = Member {
        identity: identity(SECRET_R),
        tags: network.b.tags.clone(),
        capabilities: Vec::new(),
    };
    let mut tcp_frames = 0;
    for frame in capture
        .frames
        .iter()
        .filter(|f| f.source == network.a.address())
    {
        let view = Frame {
            mac_dest: network.mac(third),
            ..frame.frame(&network)
        };
        let mut decision = network.outbound(&network.a, Some(&third_member), &view);
        let expected_copy = frame.tcp().map(|_| ExtFrameCopy {
            target: b,
            flags: ext_frame_flags::OUTBOUND_TEE,
            length: TEE_LENGTH_REVISION_2.min(frame.data.len()),
        });
        assert_eq!(decision.copy, expected_copy, "record {}", frame.record);
        tcp_frames += usize::from(expected_copy.is_some());
        // The multicast re-filter (noTee) sends no copy.
        decision = {
            let cx = FilterContext {
                this_node: network.a.address(),
                direction: Direction::Outbound,
                zt_source: network.a.address(),
                zt_dest: third_member.address(),
                local_tags: &network.a.tags,
                remote_tags: &third_member.tags,
                config_flags: 0,
                ownership: &NoOwnership,
            };
            filter_outgoing(
                &network.rules,
                &network.a.capabilities,
                &cx,
                &view,
                true,
                &mut || 0,
            )
        };
        assert_eq!(decision.copy, None);
    }
    assert_eq!(tcp_frames, 10, "a's TCP segments in the capture");
    // Inbound TCP is never copied (the rule starts "not inbound").
    let frame = &capture.frames[0];
    let inb = network.inbound(
        &network.a,
        &network.a.capabilities,
        &network.b,
        &frame.frame(&network),
    );
    assert_eq!(inb.copy, None);
}

// ---------------------------------------------------------------------------------------------
// zt-1.14.1-rules-v6.pcap, revision 1

fn revision_1() -> Network {
    Network::load(&parse_json(RULES_RICH_REVISION_1, "revision 1 rules"))
}

#[test]
fn rules_v6_every_captured_frame_passes_both_filters() {
    let network = revision_1();
    let capture = capture_frames(CAPTURE_RULES_V6, &network);
    check_presented_credentials(&network, &capture.packets);
    assert!(
        capture.frames.len() > 200,
        "README: FRAME 3: 270 (some to r)"
    );
    for frame in &capture.frames {
        let (out, inb) = both_sides(&network, frame);
        assert!(out.deliver, "record {}", frame.record);
        assert!(inb.deliver, "record {}", frame.record);
        // The TEE to b is a no-op between a and b.
        assert_eq!(
            out.sends().count() + inb.sends().count(),
            0,
            "record {}",
            frame.record
        );
    }
}

/// The 7 EXT_FRAMEs of rules-v6 are the TEE copies of a's multicasts (ARP, NDP, MLD) to b:
/// the multicast pre-filter runs with ZeroTier destination 0, so b is neither source nor
/// destination and gets a copy of up to 128 bytes. Rebuild each multicast from its copy (all
/// are shorter than 128 bytes, so whole) and check the engine asks for exactly that copy.
#[test]
fn rules_v6_tee_copies_of_multicasts_match_the_capture() {
    let network = revision_1();
    let capture = capture_frames(CAPTURE_RULES_V6, &network);
    let (a, b) = (network.a.address(), network.b.address());
    let copies: Vec<(usize, ExtFrameRepr)> = capture
        .packets
        .iter()
        .filter(|p| p.verb == Verb::ExtFrame)
        .map(|p| {
            assert_eq!((p.source, p.destination), (a, b), "record {}", p.record);
            (
                p.record,
                ExtFrameRepr::parse(&p.payload).expect("EXT_FRAME parses"),
            )
        })
        .collect();
    assert_eq!(copies.len(), 7, "README: EXT_FRAME 3: 7");
    for (record, copy) in &copies {
        assert_eq!(copy.flags, ext_frame_flags::OUTBOUND_TEE, "record {record}");
        assert!(copy.to.is_multicast(), "record {record}");
        assert!(
            copy.payload.len() < TEE_LENGTH_REVISION_1,
            "record {record}"
        );
        let view = Frame {
            mac_source: copy.from,
            mac_dest: copy.to,
            ethertype: copy.ethertype,
            vlan_id: 0,
            data: &copy.payload,
        };
        let decision = network.outbound(&network.a, None, &view);
        assert!(decision.deliver, "record {record}");
        assert_eq!(
            decision.copy,
            Some(ExtFrameCopy {
                target: b,
                flags: ext_frame_flags::OUTBOUND_TEE,
                length: copy.payload.len(),
            }),
            "record {record}"
        );
    }
}
