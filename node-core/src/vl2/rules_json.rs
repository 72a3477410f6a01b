//! The controller's JSON form of rules (zt-vl2.md 5.6): 1.14's `_parseRule` and
//! `_renderRule`, as pure functions over `serde_json::Value`.
//!
//! Reading is as lenient as 1.14's: numbers may be JSON numbers, decimal strings or booleans;
//! addresses and characteristics masks are hexadecimal strings read like `strtoull`; missing
//! fields take 1.14's defaults. What 1.14's parser refuses (not an object, an unknown
//! `"type"`, `ACTION_PRIORITY`, and `INTEGER_RANGE`, which 1.14's parser never accepts) reads
//! as `None`, and a controller leaves such rules out.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

use super::network::Mac;
use super::rules::{Forward, IntegerRange, Ipv4Match, Ipv6Match, Rule, RuleKind, TagMatch};
use crate::Address;

/// Reads one rule as 1.14's controller does; `None` where 1.14 drops the rule.
pub fn rule_from_json(value: &Value) -> Option<Rule> {
    let object = value.as_object()?;
    let field = |name: &str| object.get(name).unwrap_or(&Value::Null);
    let int = |name: &str, default: u64| json_int(field(name), default);
    let address = |name: &str| Address::from_u64(hex_str_to_u64(&json_string(field(name), "0")));
    let forward = |with_length: bool| Forward {
        address: address("address"),
        flags: int("flags", 0) as u32,
        length: if with_length {
            int("length", 0) as u16
        } else {
            0
        },
    };
    let range = || {
        let start = int("start", 0) as u16;
        (start, int("end", u64::from(start)) as u16)
    };
    let tag = || TagMatch {
        id: int("id", 0) as u32,
        value: int("value", 0) as u32,
    };
    let kind = match json_string(field("type"), "").as_str() {
        "ACTION_DROP" => RuleKind::Drop,
        "ACTION_ACCEPT" => RuleKind::Accept,
        "ACTION_TEE" => RuleKind::Tee(forward(true)),
        "ACTION_WATCH" => RuleKind::Watch(forward(true)),
        "ACTION_REDIRECT" => RuleKind::Redirect(forward(false)),
        "ACTION_BREAK" => RuleKind::Break,
        "MATCH_SOURCE_ZEROTIER_ADDRESS" => RuleKind::SourceZeroTierAddress(address("zt")),
        "MATCH_DEST_ZEROTIER_ADDRESS" => RuleKind::DestZeroTierAddress(address("zt")),
        "MATCH_VLAN_ID" => RuleKind::VlanId(int("vlanId", 0) as u16),
        "MATCH_VLAN_PCP" => RuleKind::VlanPcp(int("vlanPcp", 0) as u8),
        "MATCH_VLAN_DEI" => RuleKind::VlanDei(int("vlanDei", 0) as u8),
        "MATCH_MAC_SOURCE" => RuleKind::MacSource(mac_from_text(&json_string(field("mac"), "0"))),
        "MATCH_MAC_DEST" => RuleKind::MacDest(mac_from_text(&json_string(field("mac"), "0"))),
        "MATCH_IPV4_SOURCE" => RuleKind::Ipv4Source(ipv4_from_text(&json_string(field("ip"), ""))),
        "MATCH_IPV4_DEST" => RuleKind::Ipv4Dest(ipv4_from_text(&json_string(field("ip"), ""))),
        "MATCH_IPV6_SOURCE" => RuleKind::Ipv6Source(ipv6_from_text(&json_string(field("ip"), ""))),
        "MATCH_IPV6_DEST" => RuleKind::Ipv6Dest(ipv6_from_text(&json_string(field("ip"), ""))),
        "MATCH_IP_TOS" => RuleKind::IpTos {
            mask: int("mask", 0) as u8,
            start: int("start", 0) as u8,
            end: int("end", 0) as u8,
        },
        "MATCH_IP_PROTOCOL" => RuleKind::IpProtocol(int("ipProtocol", 0) as u8),
        "MATCH_ETHERTYPE" => RuleKind::Ethertype(int("etherType", 0) as u16),
        "MATCH_ICMP" => {
            let code = field("icmpCode");
            RuleKind::Icmp {
                icmp_type: int("icmpType", 0) as u8,
                code: if code.is_null() {
                    0
                } else {
                    json_int(code, 0) as u8
                },
                flags: if code.is_null() { 0x00 } else { 0x01 },
            }
        }
        "MATCH_IP_SOURCE_PORT_RANGE" => {
            let (start, end) = range();
            RuleKind::IpSourcePortRange { start, end }
        }
        "MATCH_IP_DEST_PORT_RANGE" => {
            let (start, end) = range();
            RuleKind::IpDestPortRange { start, end }
        }
        "MATCH_CHARACTERISTICS" => RuleKind::Characteristics(match object.get("mask") {
            None => 0,
            Some(Value::String(text)) => hex_str_to_u64(text),
            Some(other) => json_int(other, 0),
        }),
        "MATCH_FRAME_SIZE_RANGE" => {
            let (start, end) = range();
            RuleKind::FrameSizeRange { start, end }
        }
        "MATCH_RANDOM" => RuleKind::Random(int("probability", 0) as u32),
        "MATCH_TAGS_DIFFERENCE" => RuleKind::TagsDifference(tag()),
        "MATCH_TAGS_BITWISE_AND" => RuleKind::TagsBitwiseAnd(tag()),
        "MATCH_TAGS_BITWISE_OR" => RuleKind::TagsBitwiseOr(tag()),
        "MATCH_TAGS_BITWISE_XOR" => RuleKind::TagsBitwiseXor(tag()),
        "MATCH_TAGS_EQUAL" => RuleKind::TagsEqual(tag()),
        "MATCH_TAG_SENDER" => RuleKind::TagSender(tag()),
        "MATCH_TAG_RECEIVER" => RuleKind::TagReceiver(tag()),
        // INTEGER_RANGE: 1.14 reads the fields but never reports success; see
        // `integer_range_from_json` for the fields' reading.
        _ => return None,
    };
    Some(Rule {
        not: json_bool(field("not"), false),
        or: json_bool(field("or"), false),
        kind,
    })
}

/// Reads the fields of an `INTEGER_RANGE` object as 1.14's parser does before dropping the
/// rule (`start`/`end` hex strings or numbers, `idx`, `little`, `bits`), for callers that want
/// integer-range rules despite 1.14's controller.
pub fn integer_range_from_json(value: &Value) -> Option<Rule> {
    let object = value.as_object()?;
    if object.get("type").and_then(Value::as_str) != Some("INTEGER_RANGE") {
        return None;
    }
    let field = |name: &str| object.get(name).unwrap_or(&Value::Null);
    let number = |v: &Value| match v {
        Value::String(text) => hex_str_to_u64(text),
        other => json_int(other, 0),
    };
    let start = number(field("start"));
    let span = number(field("end")).wrapping_sub(start) as u32;
    let bits = json_int(field("bits"), 1);
    let format = if json_bool(field("little"), false) {
        0x80
    } else {
        0x00
    } | (bits.wrapping_sub(1) & 63) as u8;
    Some(Rule {
        not: json_bool(field("not"), false),
        or: json_bool(field("or"), false),
        kind: RuleKind::IntegerRange(IntegerRange {
            start,
            end: start.wrapping_add(u64::from(span)),
            index: json_int(field("idx"), 0) as u16,
            format,
        }),
    })
}

/// Reads a JSON array of rules, leaving out what 1.14 drops; anything else than an array
/// reads as no rules.
pub fn rules_from_json(value: &Value) -> Vec<Rule> {
    value
        .as_array()
        .map(|rules| rules.iter().filter_map(rule_from_json).collect())
        .unwrap_or_default()
}

/// Writes one rule as 1.14's `_renderRule` does: actions without `not`/`or`, matches with
/// them. `None` for what 1.14 renders as an empty object (PRIORITY, unknown types).
pub fn rule_to_json(rule: &Rule) -> Option<Value> {
    let forward = |name: &str, fwd: Forward, with_length: bool| {
        let mut object = json!({
            "type": name,
            "address": fwd.address.to_string(),
            "flags": fwd.flags,
        });
        if with_length {
            object["length"] = json!(fwd.length);
        }
        object
    };
    let action = match rule.kind {
        RuleKind::Drop => Some(json!({ "type": "ACTION_DROP" })),
        RuleKind::Accept => Some(json!({ "type": "ACTION_ACCEPT" })),
        RuleKind::Tee(fwd) => Some(forward("ACTION_TEE", fwd, true)),
        RuleKind::Watch(fwd) => Some(forward("ACTION_WATCH", fwd, true)),
        RuleKind::Redirect(fwd) => Some(forward("ACTION_REDIRECT", fwd, false)),
        RuleKind::Break => Some(json!({ "type": "ACTION_BREAK" })),
        _ => None,
    };
    if action.is_some() {
        return action;
    }
    let tag = |name: &str, m: TagMatch| json!({ "type": name, "id": m.id, "value": m.value });
    let range =
        |name: &str, start: u16, end: u16| json!({ "type": name, "start": start, "end": end });
    let mut object = match rule.kind {
        RuleKind::SourceZeroTierAddress(a) => {
            json!({ "type": "MATCH_SOURCE_ZEROTIER_ADDRESS", "zt": a.to_string() })
        }
        RuleKind::DestZeroTierAddress(a) => {
            json!({ "type": "MATCH_DEST_ZEROTIER_ADDRESS", "zt": a.to_string() })
        }
        RuleKind::VlanId(v) => json!({ "type": "MATCH_VLAN_ID", "vlanId": v }),
        RuleKind::VlanPcp(v) => json!({ "type": "MATCH_VLAN_PCP", "vlanPcp": v }),
        RuleKind::VlanDei(v) => json!({ "type": "MATCH_VLAN_DEI", "vlanDei": v }),
        RuleKind::MacSource(mac) => json!({ "type": "MATCH_MAC_SOURCE", "mac": mac.to_string() }),
        RuleKind::MacDest(mac) => json!({ "type": "MATCH_MAC_DEST", "mac": mac.to_string() }),
        RuleKind::Ipv4Source(m) => json!({ "type": "MATCH_IPV4_SOURCE", "ip": ipv4_text(m) }),
        RuleKind::Ipv4Dest(m) => json!({ "type": "MATCH_IPV4_DEST", "ip": ipv4_text(m) }),
        RuleKind::Ipv6Source(m) => json!({ "type": "MATCH_IPV6_SOURCE", "ip": ipv6_text(m) }),
        RuleKind::Ipv6Dest(m) => json!({ "type": "MATCH_IPV6_DEST", "ip": ipv6_text(m) }),
        RuleKind::IpTos { mask, start, end } => {
            json!({ "type": "MATCH_IP_TOS", "mask": mask, "start": start, "end": end })
        }
        RuleKind::IpProtocol(p) => json!({ "type": "MATCH_IP_PROTOCOL", "ipProtocol": p }),
        RuleKind::Ethertype(e) => json!({ "type": "MATCH_ETHERTYPE", "etherType": e }),
        RuleKind::Icmp {
            icmp_type,
            code,
            flags,
        } => json!({
            "type": "MATCH_ICMP",
            "icmpType": icmp_type,
            "icmpCode": if flags & 0x01 != 0 { json!(code) } else { Value::Null },
        }),
        RuleKind::IpSourcePortRange { start, end } => {
            range("MATCH_IP_SOURCE_PORT_RANGE", start, end)
        }
        RuleKind::IpDestPortRange { start, end } => range("MATCH_IP_DEST_PORT_RANGE", start, end),
        RuleKind::Characteristics(mask) => {
            json!({ "type": "MATCH_CHARACTERISTICS", "mask": format!("{mask:016x}") })
        }
        RuleKind::FrameSizeRange { start, end } => range("MATCH_FRAME_SIZE_RANGE", start, end),
        RuleKind::Random(p) => json!({ "type": "MATCH_RANDOM", "probability": p }),
        RuleKind::TagsDifference(m) => tag("MATCH_TAGS_DIFFERENCE", m),
        RuleKind::TagsBitwiseAnd(m) => tag("MATCH_TAGS_BITWISE_AND", m),
        RuleKind::TagsBitwiseOr(m) => tag("MATCH_TAGS_BITWISE_OR", m),
        RuleKind::TagsBitwiseXor(m) => tag("MATCH_TAGS_BITWISE_XOR", m),
        RuleKind::TagsEqual(m) => tag("MATCH_TAGS_EQUAL", m),
        RuleKind::TagSender(m) => tag("MATCH_TAG_SENDER", m),
        RuleKind::TagReceiver(m) => tag("MATCH_TAG_RECEIVER", m),
        RuleKind::IntegerRange(r) => {
            let span = r.end.wrapping_sub(r.start) as u32;
            json!({
                "type": "INTEGER_RANGE",
                "start": format!("{:016x}", r.start),
                "end": format!("{:016x}", r.start.wrapping_add(u64::from(span))),
                "idx": r.index,
                "little": r.format & 0x80 != 0,
                "bits": (r.format & 63) + 1,
            })
        }
        _ => return None,
    };
    object["not"] = json!(rule.not);
    object["or"] = json!(rule.or);
    Some(object)
}

/// Writes rules as a JSON array, leaving out what 1.14 would render empty.
pub fn rules_to_json(rules: &[Rule]) -> Value {
    Value::Array(rules.iter().filter_map(rule_to_json).collect())
}

// ---------------------------------------------------------------------------------------------
// 1.14's lenient JSON readers (OSUtils::jsonInt / jsonBool / jsonString)

/// A JSON number as 1.14's `(uint64_t)` conversion gives it: negative integers wrap, floats
/// truncate.
pub(crate) fn number_to_u64(n: &serde_json::Number) -> u64 {
    if let Some(v) = n.as_u64() {
        v
    } else if let Some(v) = n.as_i64() {
        v as u64
    } else {
        n.as_f64().map_or(0, |f| f as u64)
    }
}

fn json_int(value: &Value, default: u64) -> u64 {
    match value {
        Value::Number(n) => number_to_u64(n),
        Value::String(text) => str_to_u64(text, 10),
        Value::Bool(b) => u64::from(*b),
        _ => default,
    }
}

fn json_bool(value: &Value, default: bool) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => number_to_u64(n) > 0,
        Value::String(text) => matches!(text.bytes().next(), Some(b't' | b'T' | b'1')),
        _ => default,
    }
}

fn json_string(value: &Value, default: &str) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(n) => number_to_u64(n).to_string(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        _ => default.to_owned(),
    }
}

/// `strtoull`: leading white space, an optional sign, an optional `0x` for base 16, then
/// digits up to the first non-digit; saturates on overflow; a minus sign negates (wrapping).
pub(crate) fn str_to_u64(text: &str, radix: u32) -> u64 {
    let mut s = text.trim_start();
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if radix == 16 {
        if let Some(rest) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if rest.starts_with(|c: char| c.is_ascii_hexdigit()) {
                s = rest;
            }
        }
    }
    let mut value: u64 = 0;
    for c in s.chars() {
        let Some(digit) = c.to_digit(radix) else {
            break;
        };
        value = match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(digit)))
        {
            Some(v) => v,
            None => return u64::MAX,
        };
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

fn hex_str_to_u64(text: &str) -> u64 {
    str_to_u64(text, 16)
}

/// `Utils::cleanMac` then `Utils::unhex` into 6 zeroed bytes: `-` and `:` removed, pairs of
/// characters read as bytes (a non-hex character counts as 0), a trailing odd one ignored.
fn mac_from_text(text: &str) -> Mac {
    let cleaned: Vec<u8> = text.bytes().filter(|&c| c != b'-' && c != b':').collect();
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    };
    let mut mac = [0u8; 6];
    for (byte, pair) in mac.iter_mut().zip(cleaned.chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Mac(mac)
}

/// Splits `addr/bits` as `InetAddress::fromString` does; the bits are `strtoul & 0xffff`,
/// then 1.14 keeps the low 8 bits.
fn split_prefix(text: &str) -> (&str, u8) {
    match text.split_once('/') {
        Some((address, bits)) => (address, (str_to_u64(bits, 10) & 0xffff) as u8),
        None => (text, 0),
    }
}

fn ipv4_from_text(text: &str) -> Ipv4Match {
    let (address, bits) = split_prefix(text);
    Ipv4Match {
        ip: address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        prefix_bits: bits.min(32),
    }
}

fn ipv6_from_text(text: &str) -> Ipv6Match {
    let (address, bits) = split_prefix(text);
    Ipv6Match {
        ip: address.parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
        prefix_bits: bits.min(128),
    }
}

/// `InetAddress::toString`: the address, `/`, the prefix bits.
fn ipv4_text(m: Ipv4Match) -> String {
    format!("{}/{}", m.ip, m.prefix_bits)
}

/// `inet_ntop` (glibc): RFC 5952 text, and an IPv4-compatible address (96 zero bits, then
/// not 0.0.0.x) in dotted form after `::`.
fn ipv6_text(m: Ipv6Match) -> String {
    let segments = m.ip.segments();
    if segments[..6].iter().all(|&s| s == 0) && segments[6] != 0 {
        let o = m.ip.octets();
        let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        return format!("::{v4}/{}", m.prefix_bits);
    }
    format!("{}/{}", m.ip, m.prefix_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl2::rules::rule_type;

    const NETWORK_RICH: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/capture-1.14.1/controller-network-rich.json"
    ));
    const RULES_REVISION_1: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/capture-1.14.1/controller-rules-rich-revision1.json"
    ));

    /// Every rule the 1.14 controller rendered into its files reads and renders back to the
    /// same JSON.
    #[test]
    fn controller_files_round_trip() {
        let network: Value = serde_json::from_str(NETWORK_RICH).unwrap();
        let revision_1: Value = serde_json::from_str(RULES_REVISION_1).unwrap();
        let mut lists = vec![&network["rules"], &revision_1];
        for capability in network["capabilities"].as_array().unwrap() {
            lists.push(&capability["rules"]);
        }
        let mut seen = 0;
        for list in lists {
            for object in list.as_array().unwrap() {
                let rule = rule_from_json(object).expect("1.14 rendered it, so it reads");
                assert_eq!(rule_to_json(&rule).as_ref(), Some(object));
                seen += 1;
            }
        }
        assert_eq!(seen, 23 + 17 + 2);
        let rules = rules_from_json(&network["rules"]);
        assert_eq!(rules_to_json(&rules), network["rules"]);
        // Spot checks against the README's description of revision 2.
        assert_eq!(rules[0], Rule::new(RuleKind::Ethertype(0x0800)).negated());
        assert_eq!(
            rules[6].kind,
            RuleKind::Tee(Forward {
                address: Address::from_u64(0xea_b805_61d6),
                flags: 0,
                length: 64
            })
        );
        assert_eq!(rules[8], Rule::new(RuleKind::IpProtocol(58)).ored());
        assert_eq!(rules[13].kind, RuleKind::Characteristics(0x02));
    }

    fn every_kind() -> Vec<RuleKind> {
        let fwd = Forward {
            address: Address::from_u64(0xaa_bbcc_ddee),
            flags: 7,
            length: 128,
        };
        let tag = TagMatch { id: 1000, value: 7 };
        vec![
            RuleKind::Drop,
            RuleKind::Accept,
            RuleKind::Tee(fwd),
            RuleKind::Watch(fwd),
            RuleKind::Redirect(Forward { length: 0, ..fwd }),
            RuleKind::Break,
            RuleKind::SourceZeroTierAddress(Address::from_u64(0x01_2345_6789)),
            RuleKind::DestZeroTierAddress(Address::from_u64(0xff_0000_0001)),
            RuleKind::VlanId(42),
            RuleKind::VlanPcp(3),
            RuleKind::VlanDei(1),
            RuleKind::MacSource(Mac([0x2e, 0xbb, 0xe4, 0xb2, 0xbb, 0xc0])),
            RuleKind::MacDest(Mac::BROADCAST),
            RuleKind::Ipv4Source(Ipv4Match {
                ip: Ipv4Addr::new(10, 148, 0, 0),
                prefix_bits: 24,
            }),
            RuleKind::Ipv4Dest(Ipv4Match {
                ip: Ipv4Addr::new(10, 149, 1, 2),
                prefix_bits: 32,
            }),
            RuleKind::Ipv6Source(Ipv6Match {
                ip: "fd7f:1236:94d7:a288:2f99:9300::".parse().unwrap(),
                prefix_bits: 88,
            }),
            RuleKind::Ipv6Dest(Ipv6Match {
                ip: "::10.1.2.3".parse().unwrap(),
                prefix_bits: 128,
            }),
            RuleKind::IpTos {
                mask: 0xfc,
                start: 8,
                end: 16,
            },
            RuleKind::IpProtocol(17),
            RuleKind::Ethertype(0x86dd),
            RuleKind::Icmp {
                icmp_type: 8,
                code: 0,
                flags: 0,
            },
            RuleKind::Icmp {
                icmp_type: 3,
                code: 4,
                flags: 1,
            },
            RuleKind::IpSourcePortRange {
                start: 1,
                end: 1023,
            },
            RuleKind::IpDestPortRange { start: 80, end: 80 },
            RuleKind::Characteristics(0x8000_0000_0000_0002),
            RuleKind::FrameSizeRange {
                start: 0,
                end: 1500,
            },
            RuleKind::Random(0x7fff_ffff),
            RuleKind::TagsDifference(tag),
            RuleKind::TagsBitwiseAnd(tag),
            RuleKind::TagsBitwiseOr(tag),
            RuleKind::TagsBitwiseXor(tag),
            RuleKind::TagsEqual(tag),
            RuleKind::TagSender(tag),
            RuleKind::TagReceiver(tag),
        ]
    }

    #[test]
    fn every_kind_round_trips_with_its_flags() {
        for kind in every_kind() {
            for (not, or) in [(false, false), (true, false), (false, true), (true, true)] {
                let rule = Rule { not, or, kind };
                let json = rule_to_json(&rule).unwrap();
                let back = rule_from_json(&json).unwrap();
                if kind.is_action() {
                    // Actions are rendered without not/or.
                    assert!(json.get("not").is_none(), "{json}");
                    assert_eq!(back, Rule::new(kind));
                } else {
                    assert_eq!(back, rule, "{json}");
                }
            }
        }
        let json = rule_to_json(&Rule::new(RuleKind::Ipv6Dest(Ipv6Match {
            ip: "::10.1.2.3".parse().unwrap(),
            prefix_bits: 128,
        })))
        .unwrap();
        assert_eq!(json["ip"], "::10.1.2.3/128");
        let json = rule_to_json(&Rule::new(RuleKind::Icmp {
            icmp_type: 8,
            code: 0,
            flags: 0,
        }))
        .unwrap();
        assert!(json["icmpCode"].is_null());
    }

    #[test]
    fn what_1_14_drops() {
        assert_eq!(rule_from_json(&json!([])), None);
        assert_eq!(rule_from_json(&json!({ "type": "MATCH_NOTHING" })), None);
        assert_eq!(rule_from_json(&json!({ "type": "ACTION_PRIORITY" })), None);
        assert_eq!(rule_to_json(&Rule::new(RuleKind::Priority)), None);
        assert_eq!(rule_to_json(&Rule::new(RuleKind::Unknown(60))), None);
        // INTEGER_RANGE renders, but 1.14's parser never accepts it.
        let range = Rule::new(RuleKind::IntegerRange(IntegerRange {
            start: 100,
            end: 150,
            index: 14,
            format: 0x0f,
        }));
        let json = rule_to_json(&range).unwrap();
        assert_eq!(json["start"], "0000000000000064");
        assert_eq!(json["end"], "0000000000000096");
        assert_eq!(
            (json["idx"].clone(), json["bits"].clone()),
            (json!(14), json!(16))
        );
        assert_eq!(rule_from_json(&json), None);
        assert_eq!(integer_range_from_json(&json), Some(range));
        let list = json!([{ "type": "ACTION_ACCEPT" }, json, { "type": "ACTION_DROP" }]);
        assert_eq!(
            rules_from_json(&list),
            [Rule::new(RuleKind::Accept), Rule::new(RuleKind::Drop)]
        );
        assert_eq!(rules_from_json(&json!({})), []);
    }

    #[test]
    fn lenient_reading_like_1_14() {
        let read = |v: Value| rule_from_json(&v).unwrap();
        // Numbers as decimal strings or booleans; not/or as strings, numbers.
        let r =
            read(json!({ "type": "MATCH_ETHERTYPE", "etherType": "2054", "not": "true", "or": 1 }));
        assert_eq!(r, Rule::new(RuleKind::Ethertype(0x0806)).negated().ored());
        assert_eq!(
            read(json!({ "type": "MATCH_IP_PROTOCOL", "ipProtocol": true })).kind,
            RuleKind::IpProtocol(1)
        );
        // Ranges: end defaults to start; values truncate to the field.
        assert_eq!(
            read(json!({ "type": "MATCH_IP_DEST_PORT_RANGE", "start": 65536 + 22 })).kind,
            RuleKind::IpDestPortRange { start: 22, end: 22 }
        );
        // Characteristics: hex string (strtoull, 0x allowed) or number.
        assert_eq!(
            read(json!({ "type": "MATCH_CHARACTERISTICS", "mask": "0x10" })).kind,
            RuleKind::Characteristics(0x10)
        );
        assert_eq!(
            read(json!({ "type": "MATCH_CHARACTERISTICS", "mask": 3 })).kind,
            RuleKind::Characteristics(3)
        );
        assert_eq!(
            read(json!({ "type": "MATCH_CHARACTERISTICS" })).kind,
            RuleKind::Characteristics(0)
        );
        // Addresses are hex, masked to 40 bits.
        assert_eq!(
            read(json!({ "type": "MATCH_SOURCE_ZEROTIER_ADDRESS", "zt": "ffeab80561d6" })).kind,
            RuleKind::SourceZeroTierAddress(Address::from_u64(0xea_b805_61d6))
        );
        // MACs: separators dropped, missing bytes zero.
        assert_eq!(
            read(json!({ "type": "MATCH_MAC_DEST", "mac": "2e-bb-e4" })).kind,
            RuleKind::MacDest(Mac([0x2e, 0xbb, 0xe4, 0, 0, 0]))
        );
        // IP prefixes: clamped; bits above 255 keep their low 8 bits first.
        assert_eq!(
            read(json!({ "type": "MATCH_IPV4_SOURCE", "ip": "10.0.0.0/40" })).kind,
            RuleKind::Ipv4Source(Ipv4Match {
                ip: Ipv4Addr::new(10, 0, 0, 0),
                prefix_bits: 32
            })
        );
        assert_eq!(
            read(json!({ "type": "MATCH_IPV6_DEST", "ip": "fd00::/264" })).kind,
            RuleKind::Ipv6Dest(Ipv6Match {
                ip: "fd00::".parse().unwrap(),
                prefix_bits: 8
            })
        );
        // ICMP: a code present (even 0) means "match the code".
        assert_eq!(
            read(json!({ "type": "MATCH_ICMP", "icmpType": 8, "icmpCode": 0 })).kind,
            RuleKind::Icmp {
                icmp_type: 8,
                code: 0,
                flags: 1
            }
        );
        assert_eq!(
            read(json!({ "type": "MATCH_ICMP", "icmpType": 8 })).kind,
            RuleKind::Icmp {
                icmp_type: 8,
                code: 0,
                flags: 0
            }
        );
        // REDIRECT has no length.
        assert_eq!(
            read(json!({ "type": "ACTION_REDIRECT", "address": "eab80561d6", "length": 9 })).kind,
            RuleKind::Redirect(Forward {
                address: Address::from_u64(0xea_b805_61d6),
                flags: 0,
                length: 0
            })
        );
        assert_eq!(
            read(json!({ "type": "MATCH_TAG_SENDER", "id": "1000", "value": 7.9 })).kind,
            RuleKind::TagSender(TagMatch { id: 1000, value: 7 })
        );
        assert_eq!(
            read(json!({ "type": "MATCH_RANDOM", "probability": -1 })).kind,
            RuleKind::Random(u32::MAX)
        );
        assert_eq!(
            rule_type::MATCH_RANDOM,
            read(json!({ "type": "MATCH_RANDOM" })).kind.type_number()
        );
    }

    #[test]
    fn strtoull() {
        assert_eq!(str_to_u64("  42abc", 10), 42);
        assert_eq!(str_to_u64("-1", 10), u64::MAX);
        assert_eq!(str_to_u64("99999999999999999999999", 10), u64::MAX);
        assert_eq!(str_to_u64("0x1F", 16), 0x1f);
        assert_eq!(str_to_u64("0xg", 16), 0);
        assert_eq!(str_to_u64("", 16), 0);
    }
}
