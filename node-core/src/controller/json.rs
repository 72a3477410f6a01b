//! How 1.14's controller reads its JSON records: leniently (`OSUtils::jsonInt`, `jsonBool`,
//! `jsonString`), with IP addresses in `InetAddress::fromString`'s text form.
//!
//! Records are kept as `serde_json` objects rather than typed structs so that fields we do
//! not know (hand-edited files, newer controllers) survive a load and save unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Map, Value};

// The lenient number readers are shared with the rules' JSON form.
use crate::vl2::rules_json::number_to_u64;
pub(crate) use crate::vl2::rules_json::str_to_u64;

/// A record: a JSON object.
pub(crate) type Record = Map<String, Value>;

/// `OSUtils::jsonInt`: numbers, decimal strings (`strtoull`), booleans; else `default`.
pub(crate) fn int(value: Option<&Value>, default: u64) -> u64 {
    match value {
        Some(Value::Number(n)) => number_to_u64(n),
        Some(Value::String(text)) => str_to_u64(text, 10),
        Some(Value::Bool(b)) => u64::from(*b),
        _ => default,
    }
}

/// `OSUtils::jsonIntHex`: as [`int`] but strings are hexadecimal.
pub(crate) fn int_hex(value: Option<&Value>, default: u64) -> u64 {
    match value {
        Some(Value::String(text)) => str_to_u64(text, 16),
        other => int(other, default),
    }
}

/// `OSUtils::jsonBool`: booleans, numbers (> 0), strings starting with `t`, `T` or `1`.
pub(crate) fn boolean(value: Option<&Value>, default: bool) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => number_to_u64(n) > 0,
        Some(Value::String(text)) => matches!(text.bytes().next(), Some(b't' | b'T' | b'1')),
        _ => default,
    }
}

/// `OSUtils::jsonString`: strings, numbers (as unsigned decimal), booleans (`1`/`0`).
pub(crate) fn string(value: Option<&Value>, default: &str) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => number_to_u64(n).to_string(),
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_owned(),
        _ => default.to_owned(),
    }
}

/// The field `key` of `record`, if present.
pub(crate) fn field<'a>(record: &'a Record, key: &str) -> Option<&'a Value> {
    record.get(key)
}

/// `InetAddress::fromString` over `ip[/port]`: the address family is chosen by the first
/// `:` (IPv6) or `.` (IPv4) before the slash; an address of that family that does not parse
/// reads as the family's all-zero address (1.14 ignores `inet_pton`'s failure); text with
/// neither, empty text and text of 64 bytes or more read as no address. The port (a netmask
/// bit count in routes) is `strtoul & 0xffff`.
pub(crate) fn parse_inet(text: &str) -> Option<SocketAddr> {
    // 1.14 copies the text into a 64-byte buffer first and gives up if it does not fit.
    if text.is_empty() || text.len() >= 64 {
        return None;
    }
    let (address, port) = match text.split_once('/') {
        Some((address, port)) => (address, (str_to_u64(port, 10) & 0xffff) as u16),
        None => (text, 0),
    };
    if address.contains(':') {
        let ip = address.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        Some(SocketAddr::new(IpAddr::V6(ip), port))
    } else if address.contains('.') {
        let ip = address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        Some(SocketAddr::new(IpAddr::V4(ip), port))
    } else {
        None
    }
}

/// `InetAddress::toIpString`: `inet_ntop`'s text (glibc), without the port.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            // glibc writes an IPv4-compatible address (96 zero bits, then not 0.0.0.x) in
            // dotted form; Rust writes only IPv4-mapped ones so.
            let segments = v6.segments();
            if segments[..6].iter().all(|&s| s == 0) && segments[6] != 0 {
                let o = v6.octets();
                format!("::{}", Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                v6.to_string()
            }
        }
    }
}

/// `InetAddress::toString`: the address, `/`, the port.
pub(crate) fn inet_text(addr: SocketAddr) -> String {
    format!("{}/{}", ip_text(addr.ip()), addr.port())
}

/// `InetAddress::containsAddress` for a route target (netmask bits in the port): same
/// family and the same leading bits. IPv6 compares the masked address with the target
/// as is, so a target with host bits set contains nothing (as in 1.14). Netmask bit
/// counts beyond the family's width contain nothing.
pub(crate) fn route_contains(target: SocketAddr, ip: IpAddr) -> bool {
    let bits = u32::from(target.port());
    match (target.ip(), ip) {
        (IpAddr::V4(t), IpAddr::V4(a)) => {
            if bits == 0 {
                return true;
            }
            if bits > 32 {
                return false;
            }
            (u32::from(a) >> (32 - bits)) == (u32::from(t) >> (32 - bits))
        }
        (IpAddr::V6(t), IpAddr::V6(a)) => {
            if bits > 128 {
                return false;
            }
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(a) & mask) == u128::from(t)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_readers() {
        assert_eq!(int(Some(&json!(7)), 0), 7);
        assert_eq!(int(Some(&json!(-1)), 0), u64::MAX);
        assert_eq!(int(Some(&json!("42abc")), 0), 42);
        assert_eq!(int(Some(&json!(true)), 0), 1);
        assert_eq!(int(Some(&Value::Null), 9), 9);
        assert_eq!(int(None, 9), 9);
        assert_eq!(int_hex(Some(&json!("8e4df28b72")), 0), 0x8e_4df2_8b72);
        assert!(boolean(Some(&json!("true")), false));
        assert!(!boolean(Some(&json!("no")), true));
        assert!(boolean(Some(&json!(2)), false));
        assert!(boolean(Some(&Value::Null), true));
        assert_eq!(string(Some(&json!(12)), ""), "12");
        assert_eq!(string(Some(&json!(false)), ""), "0");
        assert_eq!(string(Some(&json!([1])), "d"), "d");
    }

    #[test]
    fn inet_text_forms() {
        let a = parse_inet("10.147.17.0/24").unwrap();
        assert_eq!(a, "10.147.17.0:24".parse().unwrap());
        assert_eq!(inet_text(a), "10.147.17.0/24");
        assert_eq!(parse_inet("10.1.2.3"), Some("10.1.2.3:0".parse().unwrap()));
        // A broken address of a recognised family reads as all zeros, as in 1.14.
        assert_eq!(parse_inet("10.x/8"), Some("0.0.0.0:8".parse().unwrap()));
        assert_eq!(parse_inet("nonsense"), None);
        assert_eq!(parse_inet(""), None);
        let v6 = parse_inet("fd00::/8").unwrap();
        assert_eq!(inet_text(v6), "fd00::/8");
        assert_eq!(ip_text("::10.0.0.1".parse().unwrap()), "::10.0.0.1");
        assert_eq!(
            ip_text("::ffff:10.0.0.1".parse().unwrap()),
            "::ffff:10.0.0.1"
        );
        assert_eq!(ip_text("::1".parse().unwrap()), "::1");
    }

    #[test]
    fn containment() {
        let net = parse_inet("10.147.17.0/24").unwrap();
        assert!(route_contains(net, "10.147.17.200".parse().unwrap()));
        assert!(!route_contains(net, "10.147.18.1".parse().unwrap()));
        assert!(!route_contains(net, "fd00::1".parse().unwrap()));
        let all = parse_inet("0.0.0.0/0").unwrap();
        assert!(route_contains(all, "1.2.3.4".parse().unwrap()));
        let v6 = parse_inet("fd00:1::/32").unwrap();
        assert!(route_contains(v6, "fd00:1::77".parse().unwrap()));
        assert!(!route_contains(v6, "fd00:2::77".parse().unwrap()));
        // Host bits set in an IPv6 target: nothing matches (1.14 does not mask the target).
        let sloppy = parse_inet("fd00:1::1/32").unwrap();
        assert!(!route_contains(sloppy, "fd00:1::1".parse().unwrap()));
    }
}
