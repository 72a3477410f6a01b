//! The rules engine (zt-vl2.md 5.3-5.5): what 1.14's `_doZtFilter` decides for one frame
//! against one rule list, and the pipeline around it (`filterOutgoingPacket`,
//! `filterIncomingPacket`): base rules first, then capabilities, then the TEE/WATCH and
//! REDIRECT copies to send.
//!
//! Everything here is pure and allocation-free: the caller hands in the frame, the ZeroTier
//! addresses, the tags of both sides, ownership facts (for the `ipauth`/`macauth`
//! characteristics bits) and a source of randomness (for MATCH_RANDOM), and gets back a
//! decision and the EXT_FRAME copies 1.14 would send. Sending them is the caller's business.
//!
//! Where 1.14 reads out of bounds (the TCP flags of an IPv4 TCP header cut short) we read
//! zeros; where it shifts by a negative amount (prefix lengths above 32/128, which only a
//! hand-made rule carries) we do what x86-64 does (shift counts taken modulo the width).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::config::FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH;
use super::credentials::{CertificateOfOwnership, Thing};
use super::network::Mac;
use super::rules::{Forward, Ipv4Match, Ipv6Match, Rule, RuleKind, TagMatch};
use super::Capability;
use crate::Address;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Packet characteristics bits (zt-vl2.md 5.4) as MATCH_CHARACTERISTICS tests them.
pub mod characteristics {
    pub const INBOUND: u64 = 0x8000_0000_0000_0000;
    pub const MULTICAST: u64 = 0x4000_0000_0000_0000;
    pub const BROADCAST: u64 = 0x2000_0000_0000_0000;
    pub const SENDER_IP_AUTHENTICATED: u64 = 0x1000_0000_0000_0000;
    pub const SENDER_MAC_AUTHENTICATED: u64 = 0x0800_0000_0000_0000;
    pub const TCP_FIN: u64 = 0x001;
    pub const TCP_SYN: u64 = 0x002;
    pub const TCP_RST: u64 = 0x004;
    pub const TCP_PSH: u64 = 0x008;
    pub const TCP_ACK: u64 = 0x010;
    pub const TCP_URG: u64 = 0x020;
    pub const TCP_ECE: u64 = 0x040;
    pub const TCP_CWR: u64 = 0x080;
    pub const TCP_NS: u64 = 0x100;
    pub const TCP_RS2: u64 = 0x200;
    pub const TCP_RS1: u64 = 0x400;
    pub const TCP_RS0: u64 = 0x800;
}

/// EXT_FRAME flags 1.14 puts on the copies the rules make it send.
pub mod ext_frame_flags {
    /// Outbound TEE copy.
    pub const OUTBOUND_TEE: u8 = 0x02;
    /// Outbound WATCH copy.
    pub const OUTBOUND_WATCH: u8 = 0x16;
    /// Outbound REDIRECT (the whole frame).
    pub const OUTBOUND_REDIRECT: u8 = 0x04;
    /// Inbound TEE copy.
    pub const INBOUND_TEE: u8 = 0x08;
    /// Inbound WATCH copy.
    pub const INBOUND_WATCH: u8 = 0x1c;
    /// Inbound REDIRECT (the whole frame).
    pub const INBOUND_REDIRECT: u8 = 0x0a;
}

/// IP protocol numbers the engine looks into.
const IP_PROTO_ICMP: u8 = 0x01;
const IP_PROTO_TCP: u8 = 0x06;
const IP_PROTO_UDP: u8 = 0x11;
const IP_PROTO_SCTP: u8 = 0x84;
const IP_PROTO_UDPLITE: u8 = 0x88;
const IP_PROTO_ICMPV6: u8 = 0x3a;
/// ICMPv6 Neighbor Solicitation and Advertisement.
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 0x87;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 0x88;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// `qosBucket` when PRIORITY names a bucket above 8.
const DEFAULT_QOS_BUCKET: u8 = 4;

/// Which way the frame goes relative to the node evaluating it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From our tap towards a peer (`filterOutgoingPacket`).
    Outbound,
    /// From a peer towards our tap (`filterIncomingPacket`).
    Inbound,
}

/// A tag as the rules see it: an ID and a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TagValue {
    pub id: u32,
    pub value: u32,
}

/// The frame under evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub mac_source: Mac,
    pub mac_dest: Mac,
    pub ethertype: u16,
    /// The 802.1Q VLAN ID (0 without a tag; 1.14's Linux tap always passes 0).
    pub vlan_id: u16,
    /// The Ethernet payload (from the IP header on).
    pub data: &'a [u8],
}

/// Ownership facts behind the `ipauth` and `macauth` characteristics bits. Inbound they are
/// the sender's valid COOs (plus 1.14's NDP-emulation rule: with config flag 0x04, an IPv6
/// source in our own 6PLANE /40 or RFC4193 /88 counts as owned); outbound, our own COOs.
pub trait Ownership {
    fn owns_ip(&self, ip: IpAddr) -> bool;
    fn owns_mac(&self, mac: Mac) -> bool;
}

/// No ownership at all (no COOs known).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOwnership;

impl Ownership for NoOwnership {
    fn owns_ip(&self, _: IpAddr) -> bool {
        false
    }
    fn owns_mac(&self, _: Mac) -> bool {
        false
    }
}

/// Ownership as a list of COOs (outbound: our config's COOs).
#[derive(Clone, Copy, Debug)]
pub struct CooOwnership<'a>(pub &'a [CertificateOfOwnership]);

impl Ownership for CooOwnership<'_> {
    fn owns_ip(&self, ip: IpAddr) -> bool {
        let thing = match ip {
            IpAddr::V4(v4) => Thing::ipv4(v4),
            IpAddr::V6(v6) => Thing::ipv6(v6),
        };
        self.0.iter().any(|coo| coo.owns(&thing))
    }
    fn owns_mac(&self, mac: Mac) -> bool {
        let thing = Thing::mac(mac);
        self.0.iter().any(|coo| coo.owns(&thing))
    }
}

/// Everything about the evaluating node and the frame's two ends that the rules look at.
#[derive(Clone, Copy)]
pub struct FilterContext<'a> {
    /// The evaluating node (TEE/WATCH/REDIRECT targets are compared with it).
    pub this_node: Address,
    pub direction: Direction,
    /// ZeroTier source: us outbound, the sending peer inbound.
    pub zt_source: Address,
    /// ZeroTier destination: the recipient outbound (0 for the multicast or bridged
    /// pre-filter), us inbound.
    pub zt_dest: Address,
    /// Our own tags (the network config's).
    pub local_tags: &'a [TagValue],
    /// The other side's currently valid tags: the recipient's outbound, the sender's
    /// inbound. Empty when we hold none (or, outbound, know no membership).
    pub remote_tags: &'a [TagValue],
    /// The network config's flags (`f`); bit 0x08 is the result of unsupported matches.
    pub config_flags: u64,
    pub ownership: &'a dyn Ownership,
}

/// The outcome of one rule list (`_doZtFilterResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The table ended or a BREAK was taken.
    NoMatch,
    Drop,
    Accept,
    /// Accept, and we are a TEE/WATCH/REDIRECT target: bypass the bridging checks.
    SuperAccept,
    /// Accept, but send to this address instead of the original destination.
    Redirect(Address),
}

/// A TEE or WATCH copy a rule list asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleCopy {
    pub target: Address,
    /// Bytes of the Ethernet payload to copy.
    pub length: usize,
    /// WATCH rather than TEE.
    pub watch: bool,
}

/// What one rule list decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Evaluation {
    pub verdict: Verdict,
    /// The last TEE/WATCH taken, if any (1.14 keeps only the last).
    pub copy: Option<RuleCopy>,
    /// Set by PRIORITY.
    pub qos_bucket: Option<u8>,
}

/// The result of one match before its NOT bit is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchResult {
    /// Subject to the NOT bit.
    Plain(bool),
    /// False whatever the NOT bit says.
    HardNo,
    /// True whatever the NOT bit says.
    HardYes,
}

use MatchResult::{HardNo, HardYes, Plain};

/// Mutable state of one evaluation.
struct SetState {
    super_accept: bool,
    skip_drop: bool,
}

/// Evaluates one rule list (base rules or one capability's) as 1.14's `_doZtFilter` does.
/// `random` is called once per MATCH_RANDOM evaluated.
pub fn evaluate(
    rules: &[Rule],
    cx: &FilterContext<'_>,
    frame: &Frame<'_>,
    random: &mut dyn FnMut() -> u32,
) -> Evaluation {
    let inbound = cx.direction == Direction::Inbound;
    let mut set_matches = true;
    let mut state = SetState {
        super_accept: false,
        skip_drop: false,
    };
    let mut copy = None;
    let mut qos_bucket = None;
    let done = |verdict, copy, qos_bucket| Evaluation {
        verdict,
        copy,
        qos_bucket,
    };

    for rule in rules {
        if rule.kind.is_action() {
            if !set_matches {
                // A TEE/WATCH/REDIRECT to us that did not fire still marks us as a target.
                if inbound {
                    if let RuleKind::Tee(fwd) | RuleKind::Watch(fwd) | RuleKind::Redirect(fwd) =
                        rule.kind
                    {
                        if fwd.address == cx.this_node {
                            state.super_accept = true;
                        }
                    }
                }
                set_matches = true;
                continue;
            }
            match rule.kind {
                RuleKind::Priority => {
                    // The bucket is not serialized: received PRIORITY rules carry 0.
                    let bucket = 0u8;
                    qos_bucket = Some(if bucket <= 8 {
                        bucket
                    } else {
                        DEFAULT_QOS_BUCKET
                    });
                    return done(Verdict::Accept, copy, qos_bucket);
                }
                RuleKind::Drop => {
                    if state.skip_drop {
                        state.skip_drop = false;
                        continue;
                    }
                    return done(Verdict::Drop, copy, qos_bucket);
                }
                RuleKind::Accept => {
                    let verdict = if state.super_accept {
                        Verdict::SuperAccept
                    } else {
                        Verdict::Accept
                    };
                    return done(verdict, copy, qos_bucket);
                }
                RuleKind::Tee(fwd) | RuleKind::Watch(fwd) | RuleKind::Redirect(fwd) => {
                    let target = fwd.address;
                    if target == cx.zt_source {
                        // The source is the target: nothing to do.
                    } else if target == cx.this_node {
                        if inbound {
                            return done(Verdict::SuperAccept, copy, qos_bucket);
                        }
                    } else if target == cx.zt_dest {
                        // It goes there anyway.
                    } else if let RuleKind::Redirect(_) = rule.kind {
                        return done(Verdict::Redirect(target), copy, qos_bucket);
                    } else {
                        copy = Some(RuleCopy {
                            target,
                            length: copy_length(fwd, frame.data.len()),
                            watch: matches!(rule.kind, RuleKind::Watch(_)),
                        });
                    }
                }
                RuleKind::Break => return done(Verdict::NoMatch, copy, qos_bucket),
                // Unknown actions are no-ops.
                _ => {}
            }
            continue;
        }

        // Short-circuit: an AND with a false set stays false.
        if !set_matches && !rule.or {
            continue;
        }
        let matched = match match_rule(&rule.kind, cx, frame, &mut state, random) {
            Plain(r) => r != rule.not,
            HardNo => false,
            HardYes => true,
        };
        if rule.or {
            set_matches |= matched;
        } else {
            set_matches &= matched;
        }
    }
    done(Verdict::NoMatch, copy, qos_bucket)
}

fn copy_length(fwd: Forward, frame_len: usize) -> usize {
    match usize::from(fwd.length) {
        0 => frame_len,
        limit => limit.min(frame_len),
    }
}

fn match_rule(
    kind: &RuleKind,
    cx: &FilterContext<'_>,
    frame: &Frame<'_>,
    state: &mut SetState,
    random: &mut dyn FnMut() -> u32,
) -> MatchResult {
    let data = frame.data;
    let len = data.len();
    let ethertype = frame.ethertype;
    let is_ipv4 = ethertype == ETHERTYPE_IPV4 && len >= IPV4_MIN_HEADER_LEN;
    let is_ipv6_full = ethertype == ETHERTYPE_IPV6 && len >= IPV6_HEADER_LEN;
    match *kind {
        RuleKind::SourceZeroTierAddress(a) => Plain(a == cx.zt_source),
        RuleKind::DestZeroTierAddress(a) => Plain(a == cx.zt_dest),
        RuleKind::VlanId(id) => Plain(id == frame.vlan_id),
        // 1.14 does not support these: they match only a rule value of 0.
        RuleKind::VlanPcp(v) | RuleKind::VlanDei(v) => Plain(v == 0),
        RuleKind::MacSource(mac) => Plain(mac == frame.mac_source),
        RuleKind::MacDest(mac) => Plain(mac == frame.mac_dest),
        RuleKind::Ipv4Source(m) if is_ipv4 => Plain(ipv4_contains(m, &data[12..16])),
        RuleKind::Ipv4Dest(m) if is_ipv4 => Plain(ipv4_contains(m, &data[16..20])),
        RuleKind::Ipv6Source(m) if is_ipv6_full => Plain(ipv6_contains(m, &data[8..24])),
        RuleKind::Ipv6Dest(m) if is_ipv6_full => Plain(ipv6_contains(m, &data[24..40])),
        RuleKind::Ipv4Source(_)
        | RuleKind::Ipv4Dest(_)
        | RuleKind::Ipv6Source(_)
        | RuleKind::Ipv6Dest(_) => HardNo,
        RuleKind::IpTos { mask, start, end } => {
            let tos = if is_ipv4 {
                data[1]
            } else if is_ipv6_full {
                // Traffic class: low nibble of byte 0, high nibble of byte 1.
                (data[0] << 4) | (data[1] >> 4)
            } else {
                return HardNo;
            };
            let masked = tos & mask;
            Plain(masked >= start && masked <= end)
        }
        RuleKind::IpProtocol(protocol) => {
            if is_ipv4 {
                Plain(data[9] == protocol)
            } else if ethertype == ETHERTYPE_IPV6 {
                match ipv6_payload(data) {
                    Some((_, proto)) => Plain(proto == protocol),
                    None => HardNo,
                }
            } else {
                HardNo
            }
        }
        RuleKind::Ethertype(e) => Plain(e == ethertype),
        RuleKind::Icmp {
            icmp_type,
            code,
            flags,
        } => {
            let at = if is_ipv4 {
                if data[9] != IP_PROTO_ICMP {
                    return HardNo;
                }
                ipv4_header_len(data)
            } else if ethertype == ETHERTYPE_IPV6 {
                match ipv6_payload(data) {
                    Some((pos, IP_PROTO_ICMPV6)) => pos,
                    _ => return HardNo,
                }
            } else {
                return HardNo;
            };
            match data.get(at..at.saturating_add(2)) {
                Some(&[t, _]) if t != icmp_type => HardNo,
                Some(&[_, c]) if flags & 0x01 != 0 => Plain(c == code),
                Some(_) => HardYes,
                None => HardNo,
            }
        }
        RuleKind::IpSourcePortRange { start, end } => port_range(frame, false, start, end),
        RuleKind::IpDestPortRange { start, end } => port_range(frame, true, start, end),
        RuleKind::Characteristics(mask) => Plain(packet_characteristics(cx, frame) & mask != 0),
        RuleKind::FrameSizeRange { start, end } => {
            Plain(len >= usize::from(start) && len <= usize::from(end))
        }
        RuleKind::Random(probability) => Plain(random() <= probability),
        RuleKind::TagsDifference(m)
        | RuleKind::TagsBitwiseAnd(m)
        | RuleKind::TagsBitwiseOr(m)
        | RuleKind::TagsBitwiseXor(m)
        | RuleKind::TagsEqual(m) => {
            let Some(local) = find_tag(cx.local_tags, m.id) else {
                return HardNo;
            };
            match find_tag(cx.remote_tags, m.id) {
                Some(remote) => Plain(match *kind {
                    RuleKind::TagsDifference(_) => local.abs_diff(remote) <= m.value,
                    RuleKind::TagsBitwiseAnd(_) => local & remote == m.value,
                    RuleKind::TagsBitwiseOr(_) => local | remote == m.value,
                    RuleKind::TagsBitwiseXor(_) => local ^ remote == m.value,
                    _ => local == m.value && remote == m.value,
                }),
                None if cx.direction == Direction::Inbound && !state.super_accept => HardNo,
                None => {
                    // Outbound we may not know the recipient's tags yet (it filters
                    // inbound), and a TEE/REDIRECT target may hold none.
                    state.skip_drop = true;
                    HardYes
                }
            }
        }
        RuleKind::TagSender(m) | RuleKind::TagReceiver(m) => {
            tag_sender_receiver(kind, m, cx, state)
        }
        RuleKind::IntegerRange(range) => {
            let value = read_integer(data, range.index, range.format);
            // 1.14 keeps the span as 32 bits.
            let span = range.end.wrapping_sub(range.start) as u32;
            Plain(value >= range.start && value <= range.start.wrapping_add(u64::from(span)))
        }
        RuleKind::Unknown(_)
        | RuleKind::Drop
        | RuleKind::Accept
        | RuleKind::Tee(_)
        | RuleKind::Watch(_)
        | RuleKind::Redirect(_)
        | RuleKind::Break
        | RuleKind::Priority => {
            Plain(cx.config_flags & FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH != 0)
        }
    }
}

fn find_tag(tags: &[TagValue], id: u32) -> Option<u32> {
    tags.iter().find(|t| t.id == id).map(|t| t.value)
}

fn tag_sender_receiver(
    kind: &RuleKind,
    m: TagMatch,
    cx: &FilterContext<'_>,
    state: &mut SetState,
) -> MatchResult {
    if state.super_accept {
        state.skip_drop = true;
        return HardYes;
    }
    let is_sender = matches!(kind, RuleKind::TagSender(_));
    let inbound = cx.direction == Direction::Inbound;
    if is_sender == inbound {
        // The other side's tag: the sender's inbound, the receiver's outbound.
        match find_tag(cx.remote_tags, m.id) {
            Some(remote) => Plain(remote == m.value),
            None if is_sender => HardNo,
            None => {
                state.skip_drop = true;
                HardYes
            }
        }
    } else {
        match find_tag(cx.local_tags, m.id) {
            Some(local) => Plain(local == m.value),
            None => HardNo,
        }
    }
}

fn ipv4_header_len(data: &[u8]) -> usize {
    usize::from(data[0] & 0x0f) * 4
}

/// `InetAddress::containsAddress` for an IPv4 rule network.
fn ipv4_contains(m: Ipv4Match, address: &[u8]) -> bool {
    let bits = u32::from(m.prefix_bits);
    if bits == 0 {
        return true;
    }
    let shift = 32u32.wrapping_sub(bits) & 31;
    let packet = u32::from_be_bytes([address[0], address[1], address[2], address[3]]);
    (packet >> shift) == (u32::from(m.ip) >> shift)
}

/// `InetAddress::containsAddress` for an IPv6 rule network: the packet address masked must
/// equal the rule address as written (host bits set in the rule never match).
fn ipv6_contains(m: Ipv6Match, address: &[u8]) -> bool {
    let mask = ipv6_netmask(u32::from(m.prefix_bits));
    let rule = m.ip.octets();
    address
        .iter()
        .zip(mask.iter())
        .zip(rule.iter())
        .all(|((a, k), r)| a & k == *r)
}

fn ipv6_netmask(bits: u32) -> [u8; 16] {
    if bits == 0 {
        return [0; 16];
    }
    let high = if bits >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - bits)
    };
    let low = if bits <= 64 {
        0
    } else {
        u64::MAX << (128u32.wrapping_sub(bits) & 63)
    };
    let mut mask = [0u8; 16];
    mask[..8].copy_from_slice(&high.to_be_bytes());
    mask[8..].copy_from_slice(&low.to_be_bytes());
    mask
}

/// `_ipv6GetPayload`: skips the hop-by-hop, routing, destination-options and mobility
/// headers; returns the payload offset and final next-header.
fn ipv6_payload(data: &[u8]) -> Option<(usize, u8)> {
    let len = data.len();
    if len < IPV6_HEADER_LEN {
        return None;
    }
    let mut pos = IPV6_HEADER_LEN;
    let mut proto = data[6];
    while pos <= len {
        match proto {
            0 | 43 | 60 | 135 => {
                if pos + 8 > len {
                    return None;
                }
                proto = data[pos];
                pos += usize::from(data[pos + 1]) * 8 + 8;
            }
            _ => return Some((pos, proto)),
        }
    }
    None
}

fn carries_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        IP_PROTO_TCP | IP_PROTO_UDP | IP_PROTO_SCTP | IP_PROTO_UDPLITE
    )
}

fn port_range(frame: &Frame<'_>, destination: bool, start: u16, end: u16) -> MatchResult {
    let data = frame.data;
    let len = data.len();
    let read_port = |at: usize| -> Option<u16> {
        let pos = at + if destination { 2 } else { 0 };
        Some(u16::from_be_bytes([*data.get(pos)?, *data.get(pos + 1)?]))
    };
    if frame.ethertype == ETHERTYPE_IPV4 && len >= IPV4_MIN_HEADER_LEN {
        let header_len = ipv4_header_len(data);
        let port = if carries_ports(data[9]) && len > header_len + 4 {
            read_port(header_len)
        } else {
            None
        };
        // IPv4 accepts port 0 here, IPv6 does not.
        Plain(port.is_some_and(|p| p >= start && p <= end))
    } else if frame.ethertype == ETHERTYPE_IPV6 {
        match ipv6_payload(data) {
            Some((pos, proto)) => {
                let port = if carries_ports(proto) && len > pos + 4 {
                    read_port(pos)
                } else {
                    None
                };
                Plain(port.is_some_and(|p| p > 0 && p >= start && p <= end))
            }
            None => HardNo,
        }
    } else {
        HardNo
    }
}

/// The source address 1.14 checks ownership of, or `Err(())` for an IPv6 Neighbor
/// Solicitation, which 1.14 treats as authenticated outright.
fn sender_ip(frame: &Frame<'_>) -> Result<Option<IpAddr>, ()> {
    let data = frame.data;
    let len = data.len();
    let ipv4_at = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            data[at],
            data[at + 1],
            data[at + 2],
            data[at + 3],
        ))
    };
    let ipv6_at = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&data[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    match frame.ethertype {
        ETHERTYPE_IPV4 if len >= IPV4_MIN_HEADER_LEN => Ok(Some(ipv4_at(12))),
        ETHERTYPE_IPV6 if len >= IPV6_HEADER_LEN => {
            // NDP: the first next-header must be ICMPv6 (no extension headers considered).
            if len >= IPV6_HEADER_LEN + 8 + 16 && data[6] == IP_PROTO_ICMPV6 {
                match data[IPV6_HEADER_LEN] {
                    ICMPV6_NEIGHBOR_SOLICITATION => return Err(()),
                    // The advertised target address.
                    ICMPV6_NEIGHBOR_ADVERTISEMENT => return Ok(Some(ipv6_at(IPV6_HEADER_LEN + 8))),
                    _ => {}
                }
            }
            Ok(Some(ipv6_at(8)))
        }
        // The ARP sender protocol address.
        ETHERTYPE_ARP if len >= 28 => Ok(Some(ipv4_at(14))),
        _ => Ok(None),
    }
}

/// The characteristics word MATCH_CHARACTERISTICS tests (zt-vl2.md 5.4).
pub fn packet_characteristics(cx: &FilterContext<'_>, frame: &Frame<'_>) -> u64 {
    use characteristics as c;
    let data = frame.data;
    let len = data.len();
    let mut cf = 0;
    if cx.direction == Direction::Inbound {
        cf |= c::INBOUND;
    }
    if frame.mac_dest.is_multicast() {
        cf |= c::MULTICAST;
    }
    if frame.mac_dest.is_broadcast() {
        cf |= c::BROADCAST;
    }
    match sender_ip(frame) {
        Err(()) => cf |= c::SENDER_IP_AUTHENTICATED,
        Ok(Some(ip)) if cx.ownership.owns_ip(ip) => cf |= c::SENDER_IP_AUTHENTICATED,
        Ok(_) => {}
    }
    if cx.ownership.owns_mac(frame.mac_source) {
        cf |= c::SENDER_MAC_AUTHENTICATED;
    }
    let tcp_header = if frame.ethertype == ETHERTYPE_IPV4
        && len >= IPV4_MIN_HEADER_LEN
        && data[9] == IP_PROTO_TCP
    {
        // 1.14 reads these two bytes unchecked; a cut-short header reads as zeros here.
        Some(ipv4_header_len(data))
    } else if frame.ethertype == ETHERTYPE_IPV6 {
        match ipv6_payload(data) {
            Some((pos, IP_PROTO_TCP)) if len > pos + 14 => Some(pos),
            _ => None,
        }
    } else {
        None
    };
    if let Some(at) = tcp_header {
        let byte = |i: usize| u64::from(data.get(at + i).copied().unwrap_or(0));
        cf |= byte(13);
        cf |= (byte(12) & 0x0f) << 8;
    }
    cf
}

/// MATCH_INTEGER_RANGE's read, with 1.14's big-endian offset of `index + 8 − bytes`.
fn read_integer(data: &[u8], index: u16, format: u8) -> u64 {
    let bits = u32::from(format & 63) + 1;
    let bytes = bits.div_ceil(8) as usize;
    if format & 0x80 == 0 {
        let start = usize::from(index) + (8 - bytes);
        let value = data
            .get(start..start + bytes)
            .map_or(0, |b| b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)));
        value & (u64::MAX >> (64 - bits))
    } else {
        let start = usize::from(index);
        let value = data.get(start..start + bytes).map_or(0, |b| {
            b.iter().fold(0u64, |v, &x| (v >> 8) | (u64::from(x) << 56))
        });
        value >> (64 - bits)
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline

/// An EXT_FRAME the filter asks the caller to send: to `target`, with `flags`, carrying the
/// frame's MACs and ethertype and the first `length` bytes of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtFrameCopy {
    pub target: Address,
    pub flags: u8,
    pub length: usize,
}

/// What the pipeline decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilterDecision {
    /// Deliver the frame: outbound, send it to the original ZeroTier destination; inbound,
    /// hand it to the tap.
    pub deliver: bool,
    /// Inbound only: 1.14's super-accept (returns 2), which skips the bridging checks.
    pub super_accept: bool,
    /// The ID of the capability that accepted, when the base rules did not decide.
    pub capability: Option<u32>,
    /// The accepting capability's own TEE/WATCH copy (1.14 sends it first).
    pub capability_copy: Option<ExtFrameCopy>,
    /// The base rules' TEE/WATCH copy.
    pub copy: Option<ExtFrameCopy>,
    /// The whole frame, redirected (then `deliver` is false).
    pub redirect: Option<ExtFrameCopy>,
    /// Set by a PRIORITY rule.
    pub qos_bucket: Option<u8>,
}

impl Default for FilterDecision {
    /// Drop, with nothing to send.
    fn default() -> Self {
        Self::DROP
    }
}

impl FilterDecision {
    const DROP: Self = Self {
        deliver: false,
        super_accept: false,
        capability: None,
        capability_copy: None,
        copy: None,
        redirect: None,
        qos_bucket: None,
    };

    /// The copies and the redirect to send, in the order 1.14 sends them.
    pub fn sends(&self) -> impl Iterator<Item = ExtFrameCopy> {
        [self.capability_copy, self.copy, self.redirect]
            .into_iter()
            .flatten()
    }
}

fn ext_copy(copy: RuleCopy, direction: Direction) -> ExtFrameCopy {
    use ext_frame_flags as f;
    let flags = match (direction, copy.watch) {
        (Direction::Outbound, false) => f::OUTBOUND_TEE,
        (Direction::Outbound, true) => f::OUTBOUND_WATCH,
        (Direction::Inbound, false) => f::INBOUND_TEE,
        (Direction::Inbound, true) => f::INBOUND_WATCH,
    };
    ExtFrameCopy {
        target: copy.target,
        flags,
        length: copy.length,
    }
}

/// `filterOutgoingPacket`: the base rules, then our own capabilities in the order given
/// (1.14: the config's, ascending ID). `cx.direction` must be [`Direction::Outbound`].
/// `no_tee` suppresses the TEE/WATCH copies (the per-recipient re-filter of a multicast).
pub fn filter_outgoing<'c>(
    base_rules: &[Rule],
    capabilities: impl IntoIterator<Item = &'c Capability>,
    cx: &FilterContext<'_>,
    frame: &Frame<'_>,
    no_tee: bool,
    random: &mut dyn FnMut() -> u32,
) -> FilterDecision {
    filter(base_rules, capabilities, cx, frame, no_tee, random)
}

/// `filterIncomingPacket`: the base rules, then the sender's presented, currently valid
/// capabilities (1.14 walks them in hash-table order). `cx.direction` must be
/// [`Direction::Inbound`].
pub fn filter_incoming<'c>(
    base_rules: &[Rule],
    sender_capabilities: impl IntoIterator<Item = &'c Capability>,
    cx: &FilterContext<'_>,
    frame: &Frame<'_>,
    random: &mut dyn FnMut() -> u32,
) -> FilterDecision {
    filter(base_rules, sender_capabilities, cx, frame, false, random)
}

fn filter<'c>(
    base_rules: &[Rule],
    capabilities: impl IntoIterator<Item = &'c Capability>,
    cx: &FilterContext<'_>,
    frame: &Frame<'_>,
    no_tee: bool,
    random: &mut dyn FnMut() -> u32,
) -> FilterDecision {
    let direction = cx.direction;
    let base = evaluate(base_rules, cx, frame, random);
    let mut decision = FilterDecision {
        qos_bucket: base.qos_bucket,
        ..FilterDecision::DROP
    };
    let mut final_dest = cx.zt_dest;
    match base.verdict {
        Verdict::Drop => return decision,
        Verdict::Accept => {}
        Verdict::SuperAccept => decision.super_accept = true,
        Verdict::Redirect(target) => final_dest = target,
        Verdict::NoMatch => {
            let mut accepted = false;
            for capability in capabilities {
                let result = evaluate(&capability.rules, cx, frame, random);
                if result.qos_bucket.is_some() {
                    decision.qos_bucket = result.qos_bucket;
                }
                match result.verdict {
                    // A DROP inside a capability only ends that capability.
                    Verdict::NoMatch | Verdict::Drop => continue,
                    Verdict::Accept => {}
                    Verdict::SuperAccept => decision.super_accept = true,
                    Verdict::Redirect(target) => final_dest = target,
                }
                accepted = true;
                decision.capability = Some(capability.id);
                if !no_tee {
                    decision.capability_copy = result.copy.map(|c| ext_copy(c, direction));
                }
                break;
            }
            if !accepted {
                return decision;
            }
        }
    }
    // Outbound, super-accept means nothing.
    if direction == Direction::Outbound {
        decision.super_accept = false;
    }
    if !no_tee {
        decision.copy = base.copy.map(|c| ext_copy(c, direction));
    }
    if final_dest != cx.zt_dest && final_dest != Address::NIL {
        decision.redirect = Some(ExtFrameCopy {
            target: final_dest,
            flags: match direction {
                Direction::Outbound => ext_frame_flags::OUTBOUND_REDIRECT,
                Direction::Inbound => ext_frame_flags::INBOUND_REDIRECT,
            },
            length: frame.data.len(),
        });
        decision.super_accept = false;
        return decision;
    }
    decision.deliver = true;
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl2::rules::IntegerRange;
    use crate::vl2::NetworkId;

    const A: Address = Address::from_u64(0x33_4665_2ff6);
    const B: Address = Address::from_u64(0xea_b805_61d6);
    const C: Address = Address::from_u64(0x01_2345_6789);
    const MAC_A: Mac = Mac([0x2e, 1, 2, 3, 4, 5]);
    const MAC_B: Mac = Mac([0x2e, 6, 7, 8, 9, 10]);
    const TAG_ID: u32 = 1000;

    fn rule(kind: RuleKind) -> Rule {
        Rule::new(kind)
    }

    /// IPv4 header (IHL 5, TOS 0x28) then a TCP/UDP header with the ports and TCP flags.
    fn ipv4(protocol: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut d = vec![0x45, 0x28, 0, 40, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        d.extend_from_slice(&[10, 148, 0, 154, 10, 148, 0, 130]);
        d.extend_from_slice(&sport.to_be_bytes());
        d.extend_from_slice(&dport.to_be_bytes());
        d.extend_from_slice(&[0; 8]);
        // Data offset 5, NS bit set in byte 12's low nibble bit 0.
        d.extend_from_slice(&[0x51, flags, 0xff, 0xff, 0, 0, 0, 0]);
        d
    }

    fn icmp4(icmp_type: u8, code: u8) -> Vec<u8> {
        let mut d = ipv4(IP_PROTO_ICMP, 0, 0, 0);
        d[20] = icmp_type;
        d[21] = code;
        d
    }

    /// IPv6 (traffic class 0xb8) with a hop-by-hop header before `protocol`.
    fn ipv6(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x6b, 0x80, 0, 0, 0, 0, 0, 64];
        d.extend_from_slice(&[0xfd, 0x7f, 0x12, 0x36, 0x94, 0xd7, 0xa2, 0x88]);
        d.extend_from_slice(&[0x2f, 0x99, 0x93, 0x33, 0x46, 0x65, 0x2f, 0xf6]);
        d.extend_from_slice(&[0xfd, 0x7f, 0x12, 0x36, 0x94, 0xd7, 0xa2, 0x88]);
        d.extend_from_slice(&[0x2f, 0x99, 0x93, 0xea, 0xb8, 0x05, 0x61, 0xd6]);
        d.extend_from_slice(&[protocol, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(payload);
        d
    }

    struct Env {
        direction: Direction,
        local: Vec<TagValue>,
        remote: Vec<TagValue>,
        flags: u64,
        ownership: &'static dyn Ownership,
    }

    impl Env {
        fn out() -> Self {
            Self {
                direction: Direction::Outbound,
                local: vec![TagValue {
                    id: TAG_ID,
                    value: 7,
                }],
                remote: vec![TagValue {
                    id: TAG_ID,
                    value: 5,
                }],
                flags: 0,
                ownership: &NoOwnership,
            }
        }
        fn inb() -> Self {
            Self {
                direction: Direction::Inbound,
                ..Self::out()
            }
        }
        fn cx(&self) -> FilterContext<'_> {
            let (me, peer) = (A, B);
            let (zt_source, zt_dest) = match self.direction {
                Direction::Outbound => (me, peer),
                Direction::Inbound => (peer, me),
            };
            FilterContext {
                this_node: me,
                direction: self.direction,
                zt_source,
                zt_dest,
                local_tags: &self.local,
                remote_tags: &self.remote,
                config_flags: self.flags,
                ownership: self.ownership,
            }
        }
        fn eval(&self, rules: &[Rule], ethertype: u16, data: &[u8]) -> Evaluation {
            let frame = Frame {
                mac_source: MAC_A,
                mac_dest: MAC_B,
                ethertype,
                vlan_id: 0,
                data,
            };
            evaluate(rules, &self.cx(), &frame, &mut || 0x8000_0000)
        }
        /// Whether `[r, ACCEPT]` accepts.
        fn hit(&self, r: Rule, ethertype: u16, data: &[u8]) -> bool {
            let verdict = self
                .eval(&[r, rule(RuleKind::Accept)], ethertype, data)
                .verdict;
            matches!(verdict, Verdict::Accept | Verdict::SuperAccept)
        }
    }

    fn tcp() -> Vec<u8> {
        ipv4(IP_PROTO_TCP, 40000, 8080, 0x02)
    }

    #[test]
    fn zerotier_addresses_vlan_macs_ethertype() {
        let e = Env::out();
        let d = tcp();
        let t = |k| e.hit(rule(k), ETHERTYPE_IPV4, &d);
        assert!(t(RuleKind::SourceZeroTierAddress(A)));
        assert!(!t(RuleKind::SourceZeroTierAddress(B)));
        assert!(t(RuleKind::DestZeroTierAddress(B)));
        assert!(!t(RuleKind::DestZeroTierAddress(C)));
        assert!(t(RuleKind::VlanId(0)));
        assert!(!t(RuleKind::VlanId(5)));
        assert!(t(RuleKind::VlanPcp(0)));
        assert!(!t(RuleKind::VlanPcp(3)));
        assert!(t(RuleKind::VlanDei(0)));
        assert!(!t(RuleKind::VlanDei(1)));
        assert!(t(RuleKind::MacSource(MAC_A)));
        assert!(!t(RuleKind::MacSource(MAC_B)));
        assert!(t(RuleKind::MacDest(MAC_B)));
        assert!(!t(RuleKind::MacDest(MAC_A)));
        assert!(t(RuleKind::Ethertype(ETHERTYPE_IPV4)));
        assert!(!t(RuleKind::Ethertype(ETHERTYPE_ARP)));
        // Inbound, the ZeroTier source is the peer.
        let e = Env::inb();
        assert!(e.hit(rule(RuleKind::SourceZeroTierAddress(B)), ETHERTYPE_IPV4, &d));
    }

    #[test]
    fn ip_networks_and_their_hard_no() {
        let e = Env::out();
        let d = tcp();
        let v4 = |ip: [u8; 4], prefix_bits| Ipv4Match {
            ip: Ipv4Addr::from(ip),
            prefix_bits,
        };
        assert!(e.hit(
            rule(RuleKind::Ipv4Source(v4([10, 148, 0, 0], 24))),
            ETHERTYPE_IPV4,
            &d
        ));
        assert!(!e.hit(
            rule(RuleKind::Ipv4Source(v4([10, 149, 0, 0], 24))),
            ETHERTYPE_IPV4,
            &d
        ));
        assert!(e.hit(
            rule(RuleKind::Ipv4Dest(v4([10, 148, 0, 130], 32))),
            ETHERTYPE_IPV4,
            &d
        ));
        assert!(!e.hit(
            rule(RuleKind::Ipv4Dest(v4([10, 148, 0, 154], 32))),
            ETHERTYPE_IPV4,
            &d
        ));
        assert!(e.hit(
            rule(RuleKind::Ipv4Dest(v4([1, 2, 3, 4], 0))),
            ETHERTYPE_IPV4,
            &d
        ));
        // Not IPv4: false even under NOT.
        let not_v4 = rule(RuleKind::Ipv4Source(v4([1, 2, 3, 4], 32))).negated();
        assert!(e.hit(not_v4, ETHERTYPE_IPV4, &d));
        assert!(!e.hit(not_v4, ETHERTYPE_ARP, &d));

        let d6 = ipv6(IP_PROTO_UDP, &[0; 8]);
        let v6 = |text: &str, prefix_bits| Ipv6Match {
            ip: text.parse().unwrap(),
            prefix_bits,
        };
        let src = rule(RuleKind::Ipv6Source(v6(
            "fd7f:1236:94d7:a288:2f99:9300::",
            88,
        )));
        assert!(e.hit(src, ETHERTYPE_IPV6, &d6));
        assert!(e.hit(
            rule(RuleKind::Ipv6Dest(v6(
                "fd7f:1236:94d7:a288:2f99:93ea:b805:61d6",
                128
            ))),
            ETHERTYPE_IPV6,
            &d6
        ));
        assert!(!e.hit(
            rule(RuleKind::Ipv6Dest(v6("fc00::", 8))),
            ETHERTYPE_IPV6,
            &d6
        ));
        // Host bits set in the rule never match (1.14 compares the masked packet address
        // with the rule address as written).
        assert!(!e.hit(
            rule(RuleKind::Ipv6Source(v6(
                "fd7f:1236:94d7:a288:2f99:9333::",
                88
            ))),
            ETHERTYPE_IPV6,
            &d6
        ));
        assert!(!e.hit(src.negated(), ETHERTYPE_IPV6, &d6[..39]));
    }

    #[test]
    fn tos_protocol_and_ipv6_extension_headers() {
        let e = Env::out();
        let d = tcp();
        let tos = |mask, start, end| rule(RuleKind::IpTos { mask, start, end });
        assert!(e.hit(tos(0xfc, 0x28, 0x28), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(tos(0xfc, 0x00, 0x27), ETHERTYPE_IPV4, &d));
        let d6 = ipv6(IP_PROTO_UDP, &[0; 8]);
        assert!(e.hit(tos(0xff, 0xb8, 0xb8), ETHERTYPE_IPV6, &d6));
        assert!(!e.hit(tos(0xff, 0xb8, 0xb8).negated(), ETHERTYPE_ARP, &d));

        assert!(e.hit(rule(RuleKind::IpProtocol(IP_PROTO_TCP)), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(rule(RuleKind::IpProtocol(IP_PROTO_UDP)), ETHERTYPE_IPV4, &d));
        // The IPv6 protocol is the one after the extension headers.
        assert!(e.hit(
            rule(RuleKind::IpProtocol(IP_PROTO_UDP)),
            ETHERTYPE_IPV6,
            &d6
        ));
        assert!(!e.hit(rule(RuleKind::IpProtocol(0)), ETHERTYPE_IPV6, &d6));
        // A cut extension header is a parse failure: hard no.
        assert!(!e.hit(
            rule(RuleKind::IpProtocol(IP_PROTO_UDP)).negated(),
            ETHERTYPE_IPV6,
            &d6[..44]
        ));
        assert!(!e.hit(rule(RuleKind::IpProtocol(0)).negated(), ETHERTYPE_ARP, &d));
    }

    #[test]
    fn icmp_type_code_and_hard_results() {
        let e = Env::out();
        let echo = icmp4(8, 0);
        let icmp = |icmp_type, code, flags| {
            rule(RuleKind::Icmp {
                icmp_type,
                code,
                flags,
            })
        };
        assert!(e.hit(icmp(8, 9, 0), ETHERTYPE_IPV4, &echo));
        // Type equal without code: hard yes, NOT does not invert it.
        assert!(e.hit(icmp(8, 9, 0).negated(), ETHERTYPE_IPV4, &echo));
        assert!(e.hit(icmp(8, 0, 1), ETHERTYPE_IPV4, &echo));
        assert!(!e.hit(icmp(8, 1, 1), ETHERTYPE_IPV4, &echo));
        assert!(e.hit(icmp(8, 1, 1).negated(), ETHERTYPE_IPV4, &echo));
        // Other type: hard no, NOT does not invert it.
        assert!(!e.hit(icmp(0, 0, 0), ETHERTYPE_IPV4, &echo));
        assert!(!e.hit(icmp(0, 0, 0).negated(), ETHERTYPE_IPV4, &echo));
        assert!(!e.hit(icmp(8, 0, 0).negated(), ETHERTYPE_IPV4, &tcp()));
        let echo6 = ipv6(IP_PROTO_ICMPV6, &[0x80, 0, 0, 0]);
        assert!(e.hit(icmp(0x80, 0, 1), ETHERTYPE_IPV6, &echo6));
        assert!(!e.hit(icmp(0x81, 0, 0), ETHERTYPE_IPV6, &echo6));
    }

    #[test]
    fn port_ranges() {
        let e = Env::out();
        let d = tcp();
        let dport = |start, end| rule(RuleKind::IpDestPortRange { start, end });
        let sport = |start, end| rule(RuleKind::IpSourcePortRange { start, end });
        assert!(e.hit(dport(8000, 8100), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(dport(8081, 8100), ETHERTYPE_IPV4, &d));
        assert!(e.hit(sport(40000, 40000), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(sport(8080, 8080), ETHERTYPE_IPV4, &d));
        // SCTP and UDPLite carry ports too.
        assert!(e.hit(
            dport(8080, 8080),
            ETHERTYPE_IPV4,
            &ipv4(IP_PROTO_SCTP, 1, 8080, 0)
        ));
        assert!(e.hit(
            dport(8080, 8080),
            ETHERTYPE_IPV4,
            &ipv4(IP_PROTO_UDPLITE, 1, 8080, 0)
        ));
        // IPv4 port 0 counts; IPv6 port 0 does not.
        assert!(e.hit(dport(0, 0), ETHERTYPE_IPV4, &ipv4(IP_PROTO_UDP, 1, 0, 0)));
        assert!(!e.hit(
            dport(0, 0),
            ETHERTYPE_IPV6,
            &ipv6(IP_PROTO_UDP, &[0, 1, 0, 0, 0, 0, 0, 0])
        ));
        assert!(e.hit(
            dport(53, 53),
            ETHERTYPE_IPV6,
            &ipv6(IP_PROTO_UDP, &[0, 1, 0, 53, 0, 0, 0, 0])
        ));
        // ICMP has no ports: a plain false, which NOT inverts.
        assert!(e.hit(dport(1, 65535).negated(), ETHERTYPE_IPV4, &icmp4(8, 0)));
        // Not IP: hard no.
        assert!(!e.hit(dport(1, 65535).negated(), ETHERTYPE_ARP, &d));
    }

    struct OwnsEverything;
    impl Ownership for OwnsEverything {
        fn owns_ip(&self, _: IpAddr) -> bool {
            true
        }
        fn owns_mac(&self, _: Mac) -> bool {
            true
        }
    }

    #[test]
    fn characteristics_bits() {
        use characteristics as c;
        let out = Env::out();
        let inb = Env::inb();
        let d = tcp();
        let chr = |mask| rule(RuleKind::Characteristics(mask));
        assert!(out.hit(chr(c::TCP_SYN), ETHERTYPE_IPV4, &d));
        assert!(!out.hit(chr(c::TCP_ACK | c::TCP_FIN), ETHERTYPE_IPV4, &d));
        // Byte 12's low nibble: NS (bit 8) in our frame.
        assert!(out.hit(chr(c::TCP_NS), ETHERTYPE_IPV4, &d));
        assert!(!out.hit(chr(c::TCP_RS0), ETHERTYPE_IPV4, &d));
        assert!(!out.hit(chr(c::INBOUND), ETHERTYPE_IPV4, &d));
        assert!(inb.hit(chr(c::INBOUND), ETHERTYPE_IPV4, &d));
        assert!(!out.hit(chr(c::MULTICAST | c::BROADCAST), ETHERTYPE_IPV4, &d));
        let cx = out.cx();
        let broadcast = Frame {
            mac_source: MAC_A,
            mac_dest: Mac::BROADCAST,
            ethertype: ETHERTYPE_ARP,
            vlan_id: 0,
            data: &[0; 28],
        };
        assert_eq!(
            packet_characteristics(&cx, &broadcast),
            c::MULTICAST | c::BROADCAST
        );
        // ipauth/macauth through the ownership facts.
        assert!(!out.hit(chr(c::SENDER_IP_AUTHENTICATED), ETHERTYPE_IPV4, &d));
        let owner = Env {
            ownership: &OwnsEverything,
            ..Env::out()
        };
        assert!(owner.hit(chr(c::SENDER_IP_AUTHENTICATED), ETHERTYPE_IPV4, &d));
        assert!(owner.hit(chr(c::SENDER_MAC_AUTHENTICATED), ETHERTYPE_IPV4, &d));
        // A Neighbor Solicitation counts as IP-authenticated outright.
        let mut ns = ipv6(IP_PROTO_ICMPV6, &[0; 24]);
        ns[6] = IP_PROTO_ICMPV6;
        ns[IPV6_HEADER_LEN] = ICMPV6_NEIGHBOR_SOLICITATION;
        assert!(out.hit(chr(c::SENDER_IP_AUTHENTICATED), ETHERTYPE_IPV6, &ns));
        // COO-based ownership of the IPv4 source.
        let mut coo = CertificateOfOwnership::new(NetworkId(1), 0, A, 1);
        coo.things.push(Thing::ipv4(Ipv4Addr::new(10, 148, 0, 154)));
        let coos = [coo];
        let ownership = CooOwnership(&coos);
        assert!(ownership.owns_ip(IpAddr::V4(Ipv4Addr::new(10, 148, 0, 154))));
        assert!(!ownership.owns_ip(IpAddr::V4(Ipv4Addr::new(10, 148, 0, 130))));
        assert!(!ownership.owns_mac(MAC_A));
    }

    #[test]
    fn frame_size_random_unknown() {
        let e = Env::out();
        let d = tcp();
        let size = |start, end| rule(RuleKind::FrameSizeRange { start, end });
        assert!(e.hit(size(40, 40), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(size(41, 1500), ETHERTYPE_IPV4, &d));
        // Our randomness returns 0x8000_0000.
        assert!(e.hit(rule(RuleKind::Random(0x8000_0000)), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(rule(RuleKind::Random(0x7fff_ffff)), ETHERTYPE_IPV4, &d));
        // Unknown matches follow config flag 0x08.
        assert!(!e.hit(rule(RuleKind::Unknown(60)), ETHERTYPE_IPV4, &d));
        let flagged = Env {
            flags: FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH,
            ..Env::out()
        };
        assert!(flagged.hit(rule(RuleKind::Unknown(60)), ETHERTYPE_IPV4, &d));
    }

    #[test]
    fn tag_comparisons() {
        let d = tcp();
        let e = Env::out(); // local 7, remote 5
        let m = |value| TagMatch { id: TAG_ID, value };
        let t = |e: &Env, k| e.hit(rule(k), ETHERTYPE_IPV4, &d);
        assert!(t(&e, RuleKind::TagsDifference(m(2))));
        assert!(!t(&e, RuleKind::TagsDifference(m(1))));
        assert!(t(&e, RuleKind::TagsBitwiseAnd(m(5))));
        assert!(!t(&e, RuleKind::TagsBitwiseAnd(m(7))));
        assert!(t(&e, RuleKind::TagsBitwiseOr(m(7))));
        assert!(!t(&e, RuleKind::TagsBitwiseOr(m(5))));
        assert!(t(&e, RuleKind::TagsBitwiseXor(m(2))));
        assert!(!t(&e, RuleKind::TagsBitwiseXor(m(0))));
        assert!(!t(&e, RuleKind::TagsEqual(m(7))));
        let same = Env {
            remote: vec![TagValue {
                id: TAG_ID,
                value: 7,
            }],
            ..Env::out()
        };
        assert!(t(&same, RuleKind::TagsEqual(m(7))));
        // We lack the tag: hard no.
        let untagged = Env {
            local: vec![],
            ..Env::out()
        };
        assert!(!untagged.hit(
            rule(RuleKind::TagsDifference(m(100))).negated(),
            ETHERTYPE_IPV4,
            &d
        ));
        // The peer's tag is unknown: outbound hard yes and the next DROP is skipped...
        let blind = Env {
            remote: vec![],
            ..Env::out()
        };
        let drop_then_accept = [
            rule(RuleKind::TagsEqual(m(99))).negated(),
            rule(RuleKind::Drop),
            rule(RuleKind::Accept),
        ];
        assert_eq!(
            blind.eval(&drop_then_accept, ETHERTYPE_IPV4, &d).verdict,
            Verdict::Accept
        );
        // With the peer's tag known, the same NOT matches plainly and the DROP is taken.
        assert_eq!(
            e.eval(&drop_then_accept, ETHERTYPE_IPV4, &d).verdict,
            Verdict::Drop
        );
        // ... inbound, hard no.
        let blind_in = Env {
            remote: vec![],
            ..Env::inb()
        };
        assert!(!blind_in.hit(rule(RuleKind::TagsEqual(m(7))), ETHERTYPE_IPV4, &d));
        assert!(!blind_in.hit(
            rule(RuleKind::TagsEqual(m(7))).negated(),
            ETHERTYPE_IPV4,
            &d
        ));
    }

    #[test]
    fn tag_sender_and_receiver() {
        let d = tcp();
        let m = |value| TagMatch { id: TAG_ID, value };
        let t = |e: &Env, k| e.hit(rule(k), ETHERTYPE_IPV4, &d);
        let out = Env::out(); // local 7, remote 5
        let inb = Env::inb();
        // Outbound: the sender is us, the receiver the peer.
        assert!(t(&out, RuleKind::TagSender(m(7))));
        assert!(!t(&out, RuleKind::TagSender(m(5))));
        assert!(t(&out, RuleKind::TagReceiver(m(5))));
        assert!(!t(&out, RuleKind::TagReceiver(m(7))));
        // Inbound: the sender is the peer, the receiver us.
        assert!(t(&inb, RuleKind::TagSender(m(5))));
        assert!(t(&inb, RuleKind::TagReceiver(m(7))));
        assert!(!t(&inb, RuleKind::TagReceiver(m(5))));
        // Unknown remote tag: receiver (outbound) hard yes, sender (inbound) hard no.
        let blind_out = Env {
            remote: vec![],
            ..Env::out()
        };
        let blind_in = Env {
            remote: vec![],
            ..Env::inb()
        };
        assert!(blind_out.hit(
            rule(RuleKind::TagReceiver(m(1))).negated(),
            ETHERTYPE_IPV4,
            &d
        ));
        assert!(!blind_in.hit(
            rule(RuleKind::TagSender(m(1))).negated(),
            ETHERTYPE_IPV4,
            &d
        ));
    }

    #[test]
    fn integer_ranges() {
        let e = Env::out();
        let d = tcp();
        let range = |start, end, index, format| {
            rule(RuleKind::IntegerRange(IntegerRange {
                start,
                end,
                index,
                format,
            }))
        };
        // 16-bit big-endian at "index 14": 1.14 reads at 14 + 8 − 2 = 20, the source port.
        assert!(e.hit(range(40000, 40000, 14, 0x0f), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(range(0x0028, 0x0028, 0, 0x0f), ETHERTYPE_IPV4, &d));
        assert!(e.hit(
            range(0x0028, 0x0028, 0, 0x0f),
            ETHERTYPE_IPV4,
            &[0, 0, 0, 0, 0, 0, 0x00, 0x28]
        ));
        // 16-bit little-endian at 22 (destination port 8080 = 1f 90) reads 0x901f.
        assert!(e.hit(range(0x901f, 0x901f, 22, 0x8f), ETHERTYPE_IPV4, &d));
        assert!(!e.hit(range(8080, 8080, 22, 0x8f), ETHERTYPE_IPV4, &d));
        // Out of the frame: 0.
        assert!(e.hit(range(0, 0, 1000, 0x0f), ETHERTYPE_IPV4, &d));
        // 4-bit big-endian: one byte at index + 7, masked to its low 4 bits.
        assert!(e.hit(
            range(0x5, 0x5, 0, 0x03),
            ETHERTYPE_IPV4,
            &[0, 0, 0, 0, 0, 0, 0, 0x45]
        ));
    }

    #[test]
    fn not_or_chaining() {
        let e = Env::out();
        let d = tcp();
        let yes = rule(RuleKind::Ethertype(ETHERTYPE_IPV4));
        let no = rule(RuleKind::Ethertype(ETHERTYPE_ARP));
        let accept = rule(RuleKind::Accept);
        let verdict = |rules: &[Rule]| e.eval(rules, ETHERTYPE_IPV4, &d).verdict;
        assert_eq!(verdict(&[yes, yes, accept]), Verdict::Accept);
        assert_eq!(verdict(&[yes, no, accept]), Verdict::NoMatch);
        assert_eq!(verdict(&[yes, no.negated(), accept]), Verdict::Accept);
        assert_eq!(verdict(&[no, yes.ored(), accept]), Verdict::Accept);
        assert_eq!(verdict(&[no, no.ored(), accept]), Verdict::NoMatch);
        assert_eq!(verdict(&[no, no.ored().negated(), accept]), Verdict::Accept);
        // AND after a false set is skipped; OR re-opens it.
        assert_eq!(verdict(&[no, yes, accept]), Verdict::NoMatch);
        assert_eq!(verdict(&[no, yes, yes.ored(), accept]), Verdict::Accept);
        // An action ends the set: the next one starts true again.
        assert_eq!(
            verdict(&[no, rule(RuleKind::Drop), accept]),
            Verdict::Accept
        );
        assert_eq!(verdict(&[]), Verdict::NoMatch);
    }

    fn fwd(address: Address, length: u16) -> Forward {
        Forward {
            address,
            flags: 0,
            length,
        }
    }

    #[test]
    fn actions() {
        let e = Env::out();
        let d = tcp();
        let eval = |rules: &[Rule]| e.eval(rules, ETHERTYPE_IPV4, &d);
        assert_eq!(eval(&[rule(RuleKind::Drop)]).verdict, Verdict::Drop);
        assert_eq!(eval(&[rule(RuleKind::Accept)]).verdict, Verdict::Accept);
        assert_eq!(
            eval(&[rule(RuleKind::Break), rule(RuleKind::Accept)]).verdict,
            Verdict::NoMatch
        );
        let priority = eval(&[rule(RuleKind::Priority), rule(RuleKind::Drop)]);
        assert_eq!(
            (priority.verdict, priority.qos_bucket),
            (Verdict::Accept, Some(0))
        );
        // Unknown actions are no-ops.
        assert_eq!(
            eval(&[rule(RuleKind::Unknown(9)), rule(RuleKind::Drop)]).verdict,
            Verdict::Drop
        );
        // TEE: copy length capped by the frame; the last TEE wins; evaluation goes on.
        let tee = eval(&[rule(RuleKind::Tee(fwd(C, 16))), rule(RuleKind::Drop)]);
        assert_eq!(tee.verdict, Verdict::Drop);
        assert_eq!(
            tee.copy,
            Some(RuleCopy {
                target: C,
                length: 16,
                watch: false
            })
        );
        let all = eval(&[rule(RuleKind::Tee(fwd(C, 0)))]);
        assert_eq!(all.copy.map(|c| c.length), Some(d.len()));
        let watch = eval(&[rule(RuleKind::Watch(fwd(C, 1000)))]);
        assert_eq!(
            watch.copy,
            Some(RuleCopy {
                target: C,
                length: d.len(),
                watch: true
            })
        );
        // TEE to the source or the destination, or (outbound) to us: nothing.
        for target in [A, B] {
            assert_eq!(eval(&[rule(RuleKind::Tee(fwd(target, 0)))]).copy, None);
            assert_eq!(
                eval(&[
                    rule(RuleKind::Redirect(fwd(target, 0))),
                    rule(RuleKind::Drop)
                ])
                .verdict,
                Verdict::Drop
            );
        }
        assert_eq!(
            eval(&[rule(RuleKind::Redirect(fwd(C, 0)))]).verdict,
            Verdict::Redirect(C)
        );
        // Inbound, a TEE to us super-accepts; one that did not fire makes a later ACCEPT a
        // super-accept.
        let inbound = Env {
            direction: Direction::Inbound,
            ..Env::out()
        };
        let cx = FilterContext {
            zt_source: C,
            ..inbound.cx()
        };
        let frame = Frame {
            mac_source: MAC_A,
            mac_dest: MAC_B,
            ethertype: ETHERTYPE_IPV4,
            vlan_id: 0,
            data: &d,
        };
        let run = |rules: &[Rule]| evaluate(rules, &cx, &frame, &mut || 0).verdict;
        assert_eq!(run(&[rule(RuleKind::Tee(fwd(A, 0)))]), Verdict::SuperAccept);
        let no = rule(RuleKind::Ethertype(ETHERTYPE_ARP));
        assert_eq!(
            run(&[no, rule(RuleKind::Watch(fwd(A, 0))), rule(RuleKind::Accept)]),
            Verdict::SuperAccept
        );
        assert_eq!(
            run(&[no, rule(RuleKind::Watch(fwd(C, 0))), rule(RuleKind::Accept)]),
            Verdict::Accept
        );
    }

    #[test]
    fn pipeline() {
        let d = tcp();
        let frame = Frame {
            mac_source: MAC_A,
            mac_dest: MAC_B,
            ethertype: ETHERTYPE_IPV4,
            vlan_id: 0,
            data: &d,
        };
        let nwid = NetworkId(0x7f12_3694_d7a2_882f);
        let port_cap = |id, start, end, tail: RuleKind| {
            Capability::new(
                nwid,
                0,
                id,
                vec![
                    rule(RuleKind::Tee(fwd(C, 8))),
                    rule(RuleKind::IpDestPortRange { start, end }),
                    rule(tail),
                ],
            )
        };
        let base = [rule(RuleKind::Tee(fwd(C, 20)))];
        let caps = [
            port_cap(1, 1, 10, RuleKind::Accept),
            port_cap(2, 8080, 8080, RuleKind::Drop),
            port_cap(3, 8000, 8100, RuleKind::Accept),
        ];
        let out = Env::out();
        let decision = filter_outgoing(&base, &caps, &out.cx(), &frame, false, &mut || 0);
        assert!(decision.deliver);
        assert_eq!(decision.capability, Some(3));
        let copy = |flags, length| {
            Some(ExtFrameCopy {
                target: C,
                flags,
                length,
            })
        };
        assert_eq!(
            decision.capability_copy,
            copy(ext_frame_flags::OUTBOUND_TEE, 8)
        );
        assert_eq!(decision.copy, copy(ext_frame_flags::OUTBOUND_TEE, 20));
        assert_eq!(decision.sends().count(), 2);
        let quiet = filter_outgoing(&base, &caps, &out.cx(), &frame, true, &mut || 0);
        assert!(quiet.deliver && quiet.sends().count() == 0);
        // No capability accepts: dropped, nothing sent.
        let dropped = filter_outgoing(&base, &caps[..2], &out.cx(), &frame, false, &mut || 0);
        assert_eq!(dropped, FilterDecision::DROP);

        let inb = Env::inb();
        let decision = filter_incoming(&base, &caps, &inb.cx(), &frame, &mut || 0);
        assert!(decision.deliver && !decision.super_accept);
        assert_eq!(
            decision.capability_copy,
            copy(ext_frame_flags::INBOUND_TEE, 8)
        );
        let watch_base = [rule(RuleKind::Watch(fwd(C, 0))), rule(RuleKind::Accept)];
        let decision = filter_incoming(&watch_base, &caps, &inb.cx(), &frame, &mut || 0);
        assert_eq!(decision.capability, None);
        assert_eq!(decision.copy, copy(ext_frame_flags::INBOUND_WATCH, d.len()));

        // Redirects: the whole frame to the target, not delivered.
        let redirect = [rule(RuleKind::Redirect(fwd(C, 0)))];
        let decision = filter_outgoing(&redirect, &caps, &out.cx(), &frame, false, &mut || 0);
        assert!(!decision.deliver);
        assert_eq!(
            decision.redirect,
            copy(ext_frame_flags::OUTBOUND_REDIRECT, d.len())
        );
        let decision = filter_incoming(&redirect, &caps, &inb.cx(), &frame, &mut || 0);
        assert!(!decision.deliver);
        assert_eq!(
            decision.redirect,
            copy(ext_frame_flags::INBOUND_REDIRECT, d.len())
        );
        // Base DROP ends it, whatever the capabilities say.
        let drop = [rule(RuleKind::Drop)];
        assert!(!filter_outgoing(&drop, &caps, &out.cx(), &frame, false, &mut || 0).deliver);
        // Inbound super-accept.
        let to_us = [rule(RuleKind::Tee(fwd(A, 0)))];
        let cx = FilterContext {
            zt_source: C,
            ..inb.cx()
        };
        let decision = filter_incoming(&to_us, &caps, &cx, &frame, &mut || 0);
        assert!(decision.deliver && decision.super_accept);
    }
}
