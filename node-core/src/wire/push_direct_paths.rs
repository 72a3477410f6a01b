//! PUSH_DIRECT_PATHS (0x10, zt-vl1.md 7.8): physical addresses a peer can be reached at.
//!
//! Not the InetAddress encoding: each record has its own type and length bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{Error, Reader};

/// Record flag: forget this path (1.14 ignores such records).
pub const FLAG_FORGET_PATH: u8 = 0x01;
/// Record flag: contact this address and prefer it ("cluster redirect").
pub const FLAG_CLUSTER_REDIRECT: u8 = 0x02;

const ADDRESS_TYPE_IPV4: u8 = 4;
const ADDRESS_TYPE_IPV6: u8 = 6;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushDirectPathsRepr {
    pub records: Vec<PathRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRecord {
    pub flags: u8,
    /// Extension bytes, unused by 1.14 (it skips them). 1.14 sends none.
    pub extensions: Vec<u8>,
    pub address: PathAddress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathAddress {
    /// Type 4 (IPv4 ‖ port) or 6 (IPv6 ‖ port).
    Ip(SocketAddr),
    /// Another type, skipped by 1.14 using its length byte.
    Other { kind: u8, bytes: Vec<u8> },
}

impl PathRecord {
    /// A plain record for `address`: no flags, no extensions, as 1.14 sends.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            flags: 0,
            extensions: vec![],
            address: PathAddress::Ip(address),
        }
    }

    /// The IP address, unless the record is of another type or says "forget".
    pub fn usable_address(&self) -> Option<SocketAddr> {
        match self.address {
            PathAddress::Ip(addr) if self.flags & FLAG_FORGET_PATH == 0 => Some(addr),
            _ => None,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let flags = r.u8("path record flags")?;
        let extension_len = r.u16("path record extension length")?;
        let extensions = r
            .take(usize::from(extension_len), "path record extensions")?
            .to_vec();
        let kind = r.u8("path record address type")?;
        let len = usize::from(r.u8("path record address length")?);
        // 1.14 reads a type 4/6 address from fixed-size fields and then advances by the length
        // byte, whatever it says; we require both the fields and the stated length to be there.
        let fixed_len = match kind {
            ADDRESS_TYPE_IPV4 => 6,
            ADDRESS_TYPE_IPV6 => 18,
            _ => 0,
        };
        let fixed = r
            .rest()
            .get(..fixed_len)
            .ok_or(Error::Truncated("path record address"))?;
        let address = match kind {
            ADDRESS_TYPE_IPV4 => {
                let ip = Ipv4Addr::new(fixed[0], fixed[1], fixed[2], fixed[3]);
                let port = u16::from_be_bytes([fixed[4], fixed[5]]);
                PathAddress::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            ADDRESS_TYPE_IPV6 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&fixed[..16]);
                let port = u16::from_be_bytes([fixed[16], fixed[17]]);
                PathAddress::Ip(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    0,
                    0,
                )))
            }
            _ => PathAddress::Other {
                kind,
                bytes: r.rest().get(..len).unwrap_or(&[]).to_vec(),
            },
        };
        r.skip(len, "path record address")?;
        Ok(Self {
            flags,
            extensions,
            address,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        // Extensions longer than 65535 bytes cannot be expressed; they are cut there.
        let extensions = &self.extensions[..self.extensions.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        out.extend_from_slice(extensions);
        match &self.address {
            PathAddress::Ip(addr) => {
                match addr {
                    SocketAddr::V4(a) => {
                        out.extend_from_slice(&[ADDRESS_TYPE_IPV4, 6]);
                        out.extend_from_slice(&a.ip().octets());
                    }
                    SocketAddr::V6(a) => {
                        out.extend_from_slice(&[ADDRESS_TYPE_IPV6, 18]);
                        out.extend_from_slice(&a.ip().octets());
                    }
                }
                out.extend_from_slice(&addr.port().to_be_bytes());
            }
            PathAddress::Other { kind, bytes } => {
                let bytes = &bytes[..bytes.len().min(usize::from(u8::MAX))];
                out.extend_from_slice(&[*kind, bytes.len() as u8]);
                out.extend_from_slice(bytes);
            }
        }
    }

    fn buffer_len(&self) -> usize {
        let address_len = match &self.address {
            PathAddress::Ip(SocketAddr::V4(_)) => 6,
            PathAddress::Ip(SocketAddr::V6(_)) => 18,
            PathAddress::Other { bytes, .. } => bytes.len().min(usize::from(u8::MAX)),
        };
        5 + self.extensions.len().min(usize::from(u16::MAX)) + address_len
    }
}

impl PushDirectPathsRepr {
    /// Reads the record count and exactly that many records; bytes after them are ignored,
    /// as by 1.14. A truncated record is an error (1.14 throws and drops the packet).
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let count = r.u16("PUSH_DIRECT_PATHS record count")?;
        // No preallocation from the count: each record is at least 5 bytes, so the vector
        // never outgrows the input.
        let mut records = Vec::new();
        for _ in 0..count {
            records.push(PathRecord::parse(&mut r)?);
        }
        Ok(Self { records })
    }

    /// Appends the payload. More than 65535 records cannot be expressed; the rest are dropped.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let records = &self.records[..self.records.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        for record in records {
            record.emit(out);
        }
    }

    pub fn buffer_len(&self) -> usize {
        let records = &self.records[..self.records.len().min(usize::from(u16::MAX))];
        2 + records.iter().map(PathRecord::buffer_len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let repr = PushDirectPathsRepr {
            records: vec![
                PathRecord::new("10.77.0.2:9993".parse().unwrap()),
                PathRecord::new("[fd7f:1236::1]:41234".parse().unwrap()),
                PathRecord {
                    flags: FLAG_FORGET_PATH | FLAG_CLUSTER_REDIRECT,
                    extensions: vec![1, 2, 3],
                    address: PathAddress::Other {
                        kind: 9,
                        bytes: vec![7; 5],
                    },
                },
            ],
        };
        let mut out = vec![];
        repr.emit(&mut out);
        assert_eq!(out.len(), repr.buffer_len());
        assert_eq!(hex::encode(&out[..13]), "000300000004060a4d00022709");
        assert_eq!(PushDirectPathsRepr::parse(&out), Ok(repr.clone()));
        assert_eq!(
            repr.records[0].usable_address(),
            Some("10.77.0.2:9993".parse().unwrap())
        );
        assert_eq!(repr.records[2].usable_address(), None);
        for cut in 0..out.len() {
            assert!(
                PushDirectPathsRepr::parse(&out[..cut]).is_err(),
                "cut {cut}"
            );
        }
        out.push(0xee);
        assert_eq!(PushDirectPathsRepr::parse(&out), Ok(repr));
    }
}
