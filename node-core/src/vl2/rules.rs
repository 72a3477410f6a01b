//! Rules (zt-vl2.md 5.1, 5.2): the entries of a network's base rules table and of
//! capabilities, and their binary form `[1] type ‖ [1] field length L ‖ [L] field`.
//!
//! Parsing is stricter than 1.14 in one way: 1.14 reads a known type's fixed field right after
//! L whatever L says, then advances by L, so a short L makes it read the next rule's bytes as
//! this rule's field. We reject an L shorter than the type's layout, and an L running past
//! the end of the blob. A longer L is accepted and its extra bytes skipped, as in 1.14; no
//! 1.14 controller writes either.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::network::Mac;
use super::{read_u32, DecodeError, Reader};
use crate::Address;

/// Type-byte bit: invert the match result.
pub const RULE_FLAG_NOT: u8 = 0x80;
/// Type-byte bit: combine with the previous match by OR instead of AND.
pub const RULE_FLAG_OR: u8 = 0x40;
/// Type-byte bits holding the rule type.
pub const RULE_TYPE_MASK: u8 = 0x3f;
/// `ZT_NETWORK_RULE_ACTION__MAX_ID`: types up to this are actions.
pub const ACTION_MAX_TYPE: u8 = 15;

/// `ZT_MAX_NETWORK_RULES`: base rules read from a config.
pub const MAX_NETWORK_RULES: usize = 1024;
/// `ZT_MAX_CAPABILITY_RULES`.
pub const MAX_CAPABILITY_RULES: usize = 64;

/// Rule type numbers (`ZT_VirtualNetworkRuleType`).
pub mod rule_type {
    pub const ACTION_DROP: u8 = 0;
    pub const ACTION_ACCEPT: u8 = 1;
    pub const ACTION_TEE: u8 = 2;
    pub const ACTION_WATCH: u8 = 3;
    pub const ACTION_REDIRECT: u8 = 4;
    pub const ACTION_BREAK: u8 = 5;
    pub const ACTION_PRIORITY: u8 = 6;
    pub const MATCH_SOURCE_ZEROTIER_ADDRESS: u8 = 24;
    pub const MATCH_DEST_ZEROTIER_ADDRESS: u8 = 25;
    pub const MATCH_VLAN_ID: u8 = 26;
    pub const MATCH_VLAN_PCP: u8 = 27;
    pub const MATCH_VLAN_DEI: u8 = 28;
    pub const MATCH_MAC_SOURCE: u8 = 29;
    pub const MATCH_MAC_DEST: u8 = 30;
    pub const MATCH_IPV4_SOURCE: u8 = 31;
    pub const MATCH_IPV4_DEST: u8 = 32;
    pub const MATCH_IPV6_SOURCE: u8 = 33;
    pub const MATCH_IPV6_DEST: u8 = 34;
    pub const MATCH_IP_TOS: u8 = 35;
    pub const MATCH_IP_PROTOCOL: u8 = 36;
    pub const MATCH_ETHERTYPE: u8 = 37;
    pub const MATCH_ICMP: u8 = 38;
    pub const MATCH_IP_SOURCE_PORT_RANGE: u8 = 39;
    pub const MATCH_IP_DEST_PORT_RANGE: u8 = 40;
    pub const MATCH_CHARACTERISTICS: u8 = 41;
    pub const MATCH_FRAME_SIZE_RANGE: u8 = 42;
    pub const MATCH_RANDOM: u8 = 43;
    pub const MATCH_TAGS_DIFFERENCE: u8 = 44;
    pub const MATCH_TAGS_BITWISE_AND: u8 = 45;
    pub const MATCH_TAGS_BITWISE_OR: u8 = 46;
    pub const MATCH_TAGS_BITWISE_XOR: u8 = 47;
    pub const MATCH_TAGS_EQUAL: u8 = 48;
    pub const MATCH_TAG_SENDER: u8 = 49;
    pub const MATCH_TAG_RECEIVER: u8 = 50;
    pub const MATCH_INTEGER_RANGE: u8 = 51;
}

use rule_type as t;

/// One rule: its kind and the NOT/OR bits of its type byte. The bits are kept on actions too
/// (where they have no effect) so that rules re-serialize to the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub not: bool,
    pub or: bool,
    pub kind: RuleKind,
}

/// TEE, WATCH and REDIRECT: where to send the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    pub address: Address,
    pub flags: u32,
    /// Bytes of the frame to copy, 0 for all (unused by REDIRECT).
    pub length: u16,
}

/// An IPv4 network to match against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Match {
    pub ip: Ipv4Addr,
    pub prefix_bits: u8,
}

/// An IPv6 network to match against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Match {
    pub ip: Ipv6Addr,
    pub prefix_bits: u8,
}

/// A tag ID and the value it is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TagMatch {
    pub id: u32,
    pub value: u32,
}

/// MATCH_INTEGER_RANGE: an integer read from the frame at `index` must lie in `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IntegerRange {
    pub start: u64,
    /// Absolute end. 1.14 keeps only `end - start` as 32 bits; parsing does the same.
    pub end: u64,
    /// Byte offset into the frame.
    pub index: u16,
    /// Bit 0x80: little-endian; low 6 bits: bit width − 1.
    pub format: u8,
}

/// Every rule type of 1.14 with its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Drop,
    Accept,
    Tee(Forward),
    Watch(Forward),
    Redirect(Forward),
    Break,
    /// The QoS bucket is not serialized, so received PRIORITY rules carry none.
    Priority,
    SourceZeroTierAddress(Address),
    DestZeroTierAddress(Address),
    VlanId(u16),
    VlanPcp(u8),
    VlanDei(u8),
    MacSource(Mac),
    MacDest(Mac),
    Ipv4Source(Ipv4Match),
    Ipv4Dest(Ipv4Match),
    Ipv6Source(Ipv6Match),
    Ipv6Dest(Ipv6Match),
    IpTos {
        mask: u8,
        start: u8,
        end: u8,
    },
    IpProtocol(u8),
    Ethertype(u16),
    Icmp {
        icmp_type: u8,
        code: u8,
        /// 0x01: also match the code.
        flags: u8,
    },
    IpSourcePortRange {
        start: u16,
        end: u16,
    },
    IpDestPortRange {
        start: u16,
        end: u16,
    },
    Characteristics(u64),
    FrameSizeRange {
        start: u16,
        end: u16,
    },
    /// Probability out of 2^32 − 1.
    Random(u32),
    TagsDifference(TagMatch),
    TagsBitwiseAnd(TagMatch),
    TagsBitwiseOr(TagMatch),
    TagsBitwiseXor(TagMatch),
    TagsEqual(TagMatch),
    TagSender(TagMatch),
    TagReceiver(TagMatch),
    IntegerRange(IntegerRange),
    /// A type 1.14 does not know (the low 6 bits of the type byte); its field was skipped
    /// and, as in 1.14, it is written back with an empty field.
    Unknown(u8),
}

impl RuleKind {
    /// The rule type number (low 6 bits of the type byte).
    pub fn type_number(&self) -> u8 {
        match self {
            Self::Drop => t::ACTION_DROP,
            Self::Accept => t::ACTION_ACCEPT,
            Self::Tee(_) => t::ACTION_TEE,
            Self::Watch(_) => t::ACTION_WATCH,
            Self::Redirect(_) => t::ACTION_REDIRECT,
            Self::Break => t::ACTION_BREAK,
            Self::Priority => t::ACTION_PRIORITY,
            Self::SourceZeroTierAddress(_) => t::MATCH_SOURCE_ZEROTIER_ADDRESS,
            Self::DestZeroTierAddress(_) => t::MATCH_DEST_ZEROTIER_ADDRESS,
            Self::VlanId(_) => t::MATCH_VLAN_ID,
            Self::VlanPcp(_) => t::MATCH_VLAN_PCP,
            Self::VlanDei(_) => t::MATCH_VLAN_DEI,
            Self::MacSource(_) => t::MATCH_MAC_SOURCE,
            Self::MacDest(_) => t::MATCH_MAC_DEST,
            Self::Ipv4Source(_) => t::MATCH_IPV4_SOURCE,
            Self::Ipv4Dest(_) => t::MATCH_IPV4_DEST,
            Self::Ipv6Source(_) => t::MATCH_IPV6_SOURCE,
            Self::Ipv6Dest(_) => t::MATCH_IPV6_DEST,
            Self::IpTos { .. } => t::MATCH_IP_TOS,
            Self::IpProtocol(_) => t::MATCH_IP_PROTOCOL,
            Self::Ethertype(_) => t::MATCH_ETHERTYPE,
            Self::Icmp { .. } => t::MATCH_ICMP,
            Self::IpSourcePortRange { .. } => t::MATCH_IP_SOURCE_PORT_RANGE,
            Self::IpDestPortRange { .. } => t::MATCH_IP_DEST_PORT_RANGE,
            Self::Characteristics(_) => t::MATCH_CHARACTERISTICS,
            Self::FrameSizeRange { .. } => t::MATCH_FRAME_SIZE_RANGE,
            Self::Random(_) => t::MATCH_RANDOM,
            Self::TagsDifference(_) => t::MATCH_TAGS_DIFFERENCE,
            Self::TagsBitwiseAnd(_) => t::MATCH_TAGS_BITWISE_AND,
            Self::TagsBitwiseOr(_) => t::MATCH_TAGS_BITWISE_OR,
            Self::TagsBitwiseXor(_) => t::MATCH_TAGS_BITWISE_XOR,
            Self::TagsEqual(_) => t::MATCH_TAGS_EQUAL,
            Self::TagSender(_) => t::MATCH_TAG_SENDER,
            Self::TagReceiver(_) => t::MATCH_TAG_RECEIVER,
            Self::IntegerRange(_) => t::MATCH_INTEGER_RANGE,
            Self::Unknown(number) => number & RULE_TYPE_MASK,
        }
    }

    /// Whether this is an action (type ≤ 15) rather than a match.
    pub fn is_action(&self) -> bool {
        self.type_number() <= ACTION_MAX_TYPE
    }

    /// The field length L this kind is written with.
    fn field_len(&self) -> u8 {
        field_len_of(self.type_number())
    }
}

/// The field length of each type (0 for types without a serialized field).
fn field_len_of(type_number: u8) -> u8 {
    match type_number {
        t::ACTION_TEE | t::ACTION_WATCH | t::ACTION_REDIRECT => 14,
        t::MATCH_SOURCE_ZEROTIER_ADDRESS | t::MATCH_DEST_ZEROTIER_ADDRESS => 5,
        t::MATCH_VLAN_ID => 2,
        t::MATCH_VLAN_PCP | t::MATCH_VLAN_DEI => 1,
        t::MATCH_MAC_SOURCE | t::MATCH_MAC_DEST => 6,
        t::MATCH_IPV4_SOURCE | t::MATCH_IPV4_DEST => 5,
        t::MATCH_IPV6_SOURCE | t::MATCH_IPV6_DEST => 17,
        t::MATCH_IP_TOS => 3,
        t::MATCH_IP_PROTOCOL => 1,
        t::MATCH_ETHERTYPE => 2,
        t::MATCH_ICMP => 3,
        t::MATCH_IP_SOURCE_PORT_RANGE | t::MATCH_IP_DEST_PORT_RANGE => 4,
        t::MATCH_CHARACTERISTICS => 8,
        t::MATCH_FRAME_SIZE_RANGE => 4,
        t::MATCH_RANDOM => 4,
        t::MATCH_TAGS_DIFFERENCE..=t::MATCH_TAG_RECEIVER => 8,
        t::MATCH_INTEGER_RANGE => 19,
        _ => 0,
    }
}

impl Rule {
    /// A rule without NOT/OR bits.
    pub const fn new(kind: RuleKind) -> Self {
        Self {
            not: false,
            or: false,
            kind,
        }
    }

    /// The same rule with the NOT bit set.
    pub const fn negated(self) -> Self {
        Self { not: true, ..self }
    }

    /// The same rule with the OR bit set.
    pub const fn ored(self) -> Self {
        Self { or: true, ..self }
    }

    /// The type byte: type number with the NOT and OR bits.
    pub fn type_byte(&self) -> u8 {
        self.kind.type_number()
            | if self.not { RULE_FLAG_NOT } else { 0 }
            | if self.or { RULE_FLAG_OR } else { 0 }
    }

    /// Reads one rule.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let type_byte = r.u8("rule type")?;
        let declared = r.u8("rule field length")?;
        let field = r.take(usize::from(declared), "rule field")?;
        let type_number = type_byte & RULE_TYPE_MASK;
        let needed = field_len_of(type_number);
        if declared < needed {
            return Err(DecodeError::RuleFieldLength {
                rule_type: type_byte,
                declared,
                needed,
            });
        }
        let mut f = Reader::new(field);
        let kind = read_kind(type_number, &mut f)?;
        Ok(Self {
            not: type_byte & RULE_FLAG_NOT != 0,
            or: type_byte & RULE_FLAG_OR != 0,
            kind,
        })
    }

    /// Reads one rule from the start of `bytes`; returns it and the bytes used.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let rule = Self::read(&mut r)?;
        Ok((rule, r.position()))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.type_byte());
        out.push(self.kind.field_len());
        match self.kind {
            RuleKind::Drop
            | RuleKind::Accept
            | RuleKind::Break
            | RuleKind::Priority
            | RuleKind::Unknown(_) => {}
            RuleKind::Tee(fwd) | RuleKind::Watch(fwd) | RuleKind::Redirect(fwd) => {
                out.extend_from_slice(&fwd.address.to_u64().to_be_bytes());
                out.extend_from_slice(&fwd.flags.to_be_bytes());
                out.extend_from_slice(&fwd.length.to_be_bytes());
            }
            RuleKind::SourceZeroTierAddress(a) | RuleKind::DestZeroTierAddress(a) => {
                out.extend_from_slice(&a.to_bytes());
            }
            RuleKind::VlanId(v) | RuleKind::Ethertype(v) => out.extend_from_slice(&v.to_be_bytes()),
            RuleKind::VlanPcp(v) | RuleKind::VlanDei(v) | RuleKind::IpProtocol(v) => out.push(v),
            RuleKind::MacSource(mac) | RuleKind::MacDest(mac) => out.extend_from_slice(&mac.0),
            RuleKind::Ipv4Source(m) | RuleKind::Ipv4Dest(m) => {
                out.extend_from_slice(&m.ip.octets());
                out.push(m.prefix_bits);
            }
            RuleKind::Ipv6Source(m) | RuleKind::Ipv6Dest(m) => {
                out.extend_from_slice(&m.ip.octets());
                out.push(m.prefix_bits);
            }
            RuleKind::IpTos { mask, start, end } => out.extend_from_slice(&[mask, start, end]),
            RuleKind::Icmp {
                icmp_type,
                code,
                flags,
            } => out.extend_from_slice(&[icmp_type, code, flags]),
            RuleKind::IpSourcePortRange { start, end }
            | RuleKind::IpDestPortRange { start, end }
            | RuleKind::FrameSizeRange { start, end } => {
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&end.to_be_bytes());
            }
            RuleKind::Characteristics(mask) => out.extend_from_slice(&mask.to_be_bytes()),
            RuleKind::Random(p) => out.extend_from_slice(&p.to_be_bytes()),
            RuleKind::TagsDifference(m)
            | RuleKind::TagsBitwiseAnd(m)
            | RuleKind::TagsBitwiseOr(m)
            | RuleKind::TagsBitwiseXor(m)
            | RuleKind::TagsEqual(m)
            | RuleKind::TagSender(m)
            | RuleKind::TagReceiver(m) => {
                out.extend_from_slice(&m.id.to_be_bytes());
                out.extend_from_slice(&m.value.to_be_bytes());
            }
            RuleKind::IntegerRange(range) => {
                out.extend_from_slice(&range.start.to_be_bytes());
                out.extend_from_slice(&range.end.to_be_bytes());
                out.extend_from_slice(&range.index.to_be_bytes());
                out.push(range.format);
            }
        }
    }

    pub fn buffer_len(&self) -> usize {
        2 + usize::from(self.kind.field_len())
    }
}

fn read_kind(type_number: u8, f: &mut Reader<'_>) -> Result<RuleKind, DecodeError> {
    let forward = |f: &mut Reader<'_>| -> Result<Forward, DecodeError> {
        Ok(Forward {
            address: Address::from_u64(f.u64("forward address")?),
            flags: read_u32(f, "forward flags")?,
            length: f.u16("forward length")?,
        })
    };
    let tag = |f: &mut Reader<'_>| -> Result<TagMatch, DecodeError> {
        Ok(TagMatch {
            id: read_u32(f, "tag ID")?,
            value: read_u32(f, "tag value")?,
        })
    };
    let ipv4 = |f: &mut Reader<'_>| -> Result<Ipv4Match, DecodeError> {
        Ok(Ipv4Match {
            ip: Ipv4Addr::from(f.array::<4>("IPv4 address")?),
            prefix_bits: f.u8("IPv4 prefix")?,
        })
    };
    let ipv6 = |f: &mut Reader<'_>| -> Result<Ipv6Match, DecodeError> {
        Ok(Ipv6Match {
            ip: Ipv6Addr::from(f.array::<16>("IPv6 address")?),
            prefix_bits: f.u8("IPv6 prefix")?,
        })
    };
    let range = |f: &mut Reader<'_>| -> Result<(u16, u16), DecodeError> {
        Ok((f.u16("range start")?, f.u16("range end")?))
    };
    Ok(match type_number {
        t::ACTION_DROP => RuleKind::Drop,
        t::ACTION_ACCEPT => RuleKind::Accept,
        t::ACTION_TEE => RuleKind::Tee(forward(f)?),
        t::ACTION_WATCH => RuleKind::Watch(forward(f)?),
        t::ACTION_REDIRECT => RuleKind::Redirect(forward(f)?),
        t::ACTION_BREAK => RuleKind::Break,
        t::ACTION_PRIORITY => RuleKind::Priority,
        t::MATCH_SOURCE_ZEROTIER_ADDRESS => RuleKind::SourceZeroTierAddress(f.address("address")?),
        t::MATCH_DEST_ZEROTIER_ADDRESS => RuleKind::DestZeroTierAddress(f.address("address")?),
        t::MATCH_VLAN_ID => RuleKind::VlanId(f.u16("VLAN ID")?),
        t::MATCH_VLAN_PCP => RuleKind::VlanPcp(f.u8("VLAN PCP")?),
        t::MATCH_VLAN_DEI => RuleKind::VlanDei(f.u8("VLAN DEI")?),
        t::MATCH_MAC_SOURCE => RuleKind::MacSource(Mac(f.array("MAC")?)),
        t::MATCH_MAC_DEST => RuleKind::MacDest(Mac(f.array("MAC")?)),
        t::MATCH_IPV4_SOURCE => RuleKind::Ipv4Source(ipv4(f)?),
        t::MATCH_IPV4_DEST => RuleKind::Ipv4Dest(ipv4(f)?),
        t::MATCH_IPV6_SOURCE => RuleKind::Ipv6Source(ipv6(f)?),
        t::MATCH_IPV6_DEST => RuleKind::Ipv6Dest(ipv6(f)?),
        t::MATCH_IP_TOS => {
            let [mask, start, end] = f.array("IP TOS")?;
            RuleKind::IpTos { mask, start, end }
        }
        t::MATCH_IP_PROTOCOL => RuleKind::IpProtocol(f.u8("IP protocol")?),
        t::MATCH_ETHERTYPE => RuleKind::Ethertype(f.u16("ethertype")?),
        t::MATCH_ICMP => {
            let [icmp_type, code, flags] = f.array("ICMP")?;
            RuleKind::Icmp {
                icmp_type,
                code,
                flags,
            }
        }
        t::MATCH_IP_SOURCE_PORT_RANGE => {
            let (start, end) = range(f)?;
            RuleKind::IpSourcePortRange { start, end }
        }
        t::MATCH_IP_DEST_PORT_RANGE => {
            let (start, end) = range(f)?;
            RuleKind::IpDestPortRange { start, end }
        }
        t::MATCH_CHARACTERISTICS => RuleKind::Characteristics(f.u64("characteristics")?),
        t::MATCH_FRAME_SIZE_RANGE => {
            let (start, end) = range(f)?;
            RuleKind::FrameSizeRange { start, end }
        }
        t::MATCH_RANDOM => RuleKind::Random(read_u32(f, "probability")?),
        t::MATCH_TAGS_DIFFERENCE => RuleKind::TagsDifference(tag(f)?),
        t::MATCH_TAGS_BITWISE_AND => RuleKind::TagsBitwiseAnd(tag(f)?),
        t::MATCH_TAGS_BITWISE_OR => RuleKind::TagsBitwiseOr(tag(f)?),
        t::MATCH_TAGS_BITWISE_XOR => RuleKind::TagsBitwiseXor(tag(f)?),
        t::MATCH_TAGS_EQUAL => RuleKind::TagsEqual(tag(f)?),
        t::MATCH_TAG_SENDER => RuleKind::TagSender(tag(f)?),
        t::MATCH_TAG_RECEIVER => RuleKind::TagReceiver(tag(f)?),
        t::MATCH_INTEGER_RANGE => {
            let start = f.u64("integer range start")?;
            let end_raw = f.u64("integer range end")?;
            // 1.14 stores the span in 32 bits.
            let span = end_raw.wrapping_sub(start) as u32;
            RuleKind::IntegerRange(IntegerRange {
                start,
                end: start.wrapping_add(u64::from(span)),
                index: f.u16("integer range index")?,
                format: f.u8("integer range format")?,
            })
        }
        other => RuleKind::Unknown(other),
    })
}

/// Reads exactly `count` rules (a capability's rules).
pub(crate) fn read_rules(r: &mut Reader<'_>, count: usize) -> Result<Vec<Rule>, DecodeError> {
    (0..count).map(|_| Rule::read(r)).collect()
}

/// Reads a base rules table: rules until the blob ends. As 1.14, at most
/// [`MAX_NETWORK_RULES`] are read and anything after them is ignored.
pub fn parse_rules(bytes: &[u8]) -> Result<Vec<Rule>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut rules = Vec::new();
    while r.remaining() > 0 && rules.len() < MAX_NETWORK_RULES {
        rules.push(Rule::read(&mut r)?);
    }
    Ok(rules)
}

/// Writes rules back to back.
pub fn emit_rules(rules: &[Rule], out: &mut Vec<u8>) {
    for rule in rules {
        rule.emit(out);
    }
}

/// Length [`emit_rules`] appends.
pub fn rules_len(rules: &[Rule]) -> usize {
    rules.iter().map(Rule::buffer_len).sum()
}
