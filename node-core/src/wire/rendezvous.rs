//! RENDEZVOUS (0x05, zt-vl1.md 7.6): a relay tells a peer where to reach another peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Error, Reader};
use crate::Address;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RendezvousRepr {
    /// Sent as 0 and ignored by 1.14.
    pub flags: u8,
    /// The peer to contact.
    pub with: Address,
    pub port: u16,
    /// `None` when the address length byte is neither 4 nor 16; 1.14 ignores such messages.
    pub ip: Option<IpAddr>,
}

impl RendezvousRepr {
    /// Reads the fields 1.14 reads. An address length other than 4 or 16 is not an error
    /// (1.14 ignores the message without reading further): `ip` is `None` then. Bytes after
    /// the address are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let flags = r.u8("RENDEZVOUS flags")?;
        let with = r.address("RENDEZVOUS address")?;
        let port = r.u16("RENDEZVOUS port")?;
        let ip = match r.u8("RENDEZVOUS address length")? {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                r.array::<4>("RENDEZVOUS IPv4 address")?,
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                r.array::<16>("RENDEZVOUS IPv6 address")?,
            ))),
            _ => None,
        };
        Ok(Self {
            flags,
            with,
            port,
            ip,
        })
    }

    /// A rendezvous telling the receiver to contact `with` at `at`.
    pub fn new(with: Address, at: SocketAddr) -> Self {
        Self {
            flags: 0,
            with,
            port: at.port(),
            ip: Some(at.ip()),
        }
    }

    /// The address to contact, if 1.14 would act on it (known length, non-zero port).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self.ip {
            Some(ip) if self.port > 0 => Some(SocketAddr::new(ip, self.port)),
            _ => None,
        }
    }

    /// Appends the payload; a missing `ip` is written as length 0.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        out.extend_from_slice(&self.with.to_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        match self.ip {
            Some(IpAddr::V4(ip)) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                out.push(16);
                out.extend_from_slice(&ip.octets());
            }
            None => out.push(0),
        }
    }

    pub fn buffer_len(&self) -> usize {
        9 + match self.ip {
            Some(IpAddr::V4(_)) => 4,
            Some(IpAddr::V6(_)) => 16,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_v6() {
        for at in ["10.77.0.3:9993", "[fd00::1]:41000"] {
            let r = RendezvousRepr::new("eab80561d6".parse().unwrap(), at.parse().unwrap());
            let mut out = vec![];
            r.emit(&mut out);
            assert_eq!(out.len(), r.buffer_len());
            assert_eq!(RendezvousRepr::parse(&out), Ok(r));
            assert_eq!(r.endpoint(), Some(at.parse().unwrap()));
            assert!(RendezvousRepr::parse(&out[..out.len() - 1]).is_err());
        }
        let v4 = hex::decode("00eab80561d6270904").unwrap();
        assert!(RendezvousRepr::parse(&v4).is_err());
        let odd = hex::decode("00eab80561d6270905").unwrap();
        assert_eq!(RendezvousRepr::parse(&odd).unwrap().endpoint(), None);
        let zero_port = hex::decode("00eab80561d600000401020304").unwrap();
        assert_eq!(RendezvousRepr::parse(&zero_port).unwrap().endpoint(), None);
    }
}
