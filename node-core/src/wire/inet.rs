//! The InetAddress binary form (zt-vl1.md 7.1), used by HELLO, OK(HELLO) and worlds.
//!
//! | type | then | meaning |
//! |---|---|---|
//! | 0x00 | — | nil |
//! | 0x04 | IPv4 (4) ‖ port (2, BE) | IPv4 |
//! | 0x06 | IPv6 (16) ‖ port (2, BE) | IPv6 |
//! | 0x01, 0x02 | 6 bytes | reserved (Ethernet, Bluetooth): skipped |
//! | 0x03 | u16 BE length `n` ‖ `n` bytes | reserved ("other"): skipped |
//!
//! 1.14 forgets reserved addresses on reading (they become nil), so they are re-emitted as
//! nil here too. Unlike 1.14 we require a reserved address's bytes to be present in the
//! buffer (1.14 advances past them without looking); no 1.14 node sends these types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{Error, Reader};

const TYPE_NIL: u8 = 0x00;
const TYPE_ETHERNET: u8 = 0x01;
const TYPE_BLUETOOTH: u8 = 0x02;
const TYPE_OTHER: u8 = 0x03;
const TYPE_IPV4: u8 = 0x04;
const TYPE_IPV6: u8 = 0x06;

/// Serialized length of an IPv4 InetAddress.
pub const IPV4_LEN: usize = 7;
/// Serialized length of an IPv6 InetAddress.
pub const IPV6_LEN: usize = 19;

/// A decoded InetAddress, keeping apart "no address" and "an address of a reserved type".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InetAddress {
    /// Type 0: no address (e.g. a relayed HELLO's destination).
    Nil,
    /// An IPv4 or IPv6 address with port. Scope ID and flow info are not carried.
    Ip(SocketAddr),
    /// Types 1, 2 or 3, which 1.14 accepts and ignores: the type byte.
    Reserved(u8),
}

impl InetAddress {
    /// Reads one InetAddress from the start of `bytes`; returns it and the bytes it used.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), Error> {
        let mut r = Reader::new(bytes);
        let addr = match r.u8("InetAddress type")? {
            TYPE_NIL => Self::Nil,
            TYPE_IPV4 => {
                let ip: [u8; 4] = r.array("IPv4 address")?;
                let port = r.u16("IPv4 port")?;
                Self::Ip(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
            }
            TYPE_IPV6 => {
                let ip: [u8; 16] = r.array("IPv6 address")?;
                let port = r.u16("IPv6 port")?;
                Self::Ip(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    0,
                    0,
                )))
            }
            kind @ (TYPE_ETHERNET | TYPE_BLUETOOTH) => {
                r.skip(6, "reserved InetAddress")?;
                Self::Reserved(kind)
            }
            TYPE_OTHER => {
                let len = r.u16("reserved InetAddress length")?;
                r.skip(usize::from(len), "reserved InetAddress")?;
                Self::Reserved(TYPE_OTHER)
            }
            other => return Err(Error::InetAddressType(other)),
        };
        Ok((addr, r.position()))
    }

    /// The address, if this is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(addr) => Some(*addr),
            Self::Nil | Self::Reserved(_) => None,
        }
    }

    /// Appends the binary form. Reserved addresses are written as nil, as 1.14 does.
    pub fn emit(&self, out: &mut Vec<u8>) {
        emit_inet_address(self.socket_addr(), out);
    }

    /// Length [`emit`](Self::emit) appends.
    pub fn buffer_len(&self) -> usize {
        inet_address_len(self.socket_addr().as_ref())
    }
}

impl From<SocketAddr> for InetAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::Ip(addr)
    }
}

impl From<Option<SocketAddr>> for InetAddress {
    fn from(addr: Option<SocketAddr>) -> Self {
        addr.map_or(Self::Nil, Self::Ip)
    }
}

/// Reads one InetAddress; nil and reserved types both read as `None`.
pub fn parse_inet_address(bytes: &[u8]) -> Result<(Option<SocketAddr>, usize), Error> {
    InetAddress::parse(bytes).map(|(addr, used)| (addr.socket_addr(), used))
}

/// Appends the binary form of `addr` (`None` is nil).
pub fn emit_inet_address(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    match addr {
        None => out.push(TYPE_NIL),
        Some(addr) => {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out.push(TYPE_IPV4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(TYPE_IPV6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&addr.port().to_be_bytes());
        }
    }
}

/// Length [`emit_inet_address`] appends for `addr`.
pub fn inet_address_len(addr: Option<&SocketAddr>) -> usize {
    match addr {
        None => 1,
        Some(SocketAddr::V4(_)) => IPV4_LEN,
        Some(SocketAddr::V6(_)) => IPV6_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_both_ways() {
        let cases: [(&str, Option<SocketAddr>); 3] = [
            ("04c00002012709", Some("192.0.2.1:9993".parse().unwrap())),
            (
                "0620010db80000000000000000000000012709",
                Some("[2001:db8::1]:9993".parse().unwrap()),
            ),
            ("00", None),
        ];
        for (hex_form, addr) in cases {
            let bytes = hex::decode(hex_form).unwrap();
            assert_eq!(parse_inet_address(&bytes).unwrap(), (addr, bytes.len()));
            let mut out = vec![];
            emit_inet_address(addr, &mut out);
            assert_eq!(out, bytes);
            assert_eq!(inet_address_len(addr.as_ref()), bytes.len());
        }
    }

    #[test]
    fn reserved_types_are_skipped() {
        let eth = hex::decode("01aabbccddeeff99").unwrap();
        assert_eq!(
            InetAddress::parse(&eth).unwrap(),
            (InetAddress::Reserved(1), 7)
        );
        let other = hex::decode("030003aabbcc77").unwrap();
        assert_eq!(
            InetAddress::parse(&other).unwrap(),
            (InetAddress::Reserved(3), 6)
        );
        let mut out = vec![];
        InetAddress::Reserved(3).emit(&mut out);
        assert_eq!(out, [0]);
        assert_eq!(InetAddress::parse(&[0x05]), Err(Error::InetAddressType(5)));
        assert!(InetAddress::parse(&[0x03, 0x00, 0x04, 1, 2, 3]).is_err());
        assert!(InetAddress::parse(&[]).is_err());
    }
}
