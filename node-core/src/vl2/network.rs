//! Addressing on a virtual network (zt-vl2.md 1): network IDs, MACs derived from addresses,
//! multicast groups and the managed IPv6 address formulas.

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::Address;

/// A 64-bit network ID; the top 40 bits are the controller's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkId(pub u64);

/// A network ID text that is not 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a network ID (expected 16 hex digits)")]
pub struct NetworkIdParseError;

impl NetworkId {
    /// The controller that must sign everything for this network: `nwid >> 24`.
    pub const fn controller(self) -> Address {
        Address::from_u64(self.0 >> 24)
    }

    /// The network number on its controller (low 24 bits).
    pub const fn network_number(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }

    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for NetworkId {
    type Err = NetworkIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(NetworkIdParseError);
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| NetworkIdParseError)
    }
}

/// A 48-bit Ethernet MAC address, first octet first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// The first octet ZeroTier derives would be 0x52, which it avoids (KVM/libvirt use it).
const AVOIDED_FIRST_OCTET: u8 = 0x52;
/// What replaces [`AVOIDED_FIRST_OCTET`].
const REPLACEMENT_FIRST_OCTET: u8 = 0x32;

impl Mac {
    pub const BROADCAST: Self = Self([0xff; 6]);
    pub const ZERO: Self = Self([0; 6]);

    /// The first octet of every member's MAC on `nwid`: the network ID's last byte made
    /// unicast and locally administered, 0x52 replaced by 0x32.
    pub const fn first_octet(nwid: NetworkId) -> u8 {
        let candidate = ((nwid.0 as u8) & 0xfe) | 0x02;
        if candidate == AVOIDED_FIRST_OCTET {
            REPLACEMENT_FIRST_OCTET
        } else {
            candidate
        }
    }

    /// A node's port MAC on a network: the address XORed with network ID bytes 6..2.
    pub fn from_address(address: Address, nwid: NetworkId) -> Self {
        let a = address.to_bytes();
        let n = nwid.to_bytes();
        Self([
            Self::first_octet(nwid),
            a[0] ^ n[6],
            a[1] ^ n[5],
            a[2] ^ n[4],
            a[3] ^ n[3],
            a[4] ^ n[2],
        ])
    }

    /// The address a MAC stands for on `nwid` (the first octet is ignored; check it with
    /// [`Mac::is_member_mac`] first).
    pub fn to_address(self, nwid: NetworkId) -> Address {
        let n = nwid.to_bytes();
        let m = self.0;
        Address::from_bytes(&[
            m[1] ^ n[6],
            m[2] ^ n[5],
            m[3] ^ n[4],
            m[4] ^ n[3],
            m[5] ^ n[2],
        ])
    }

    /// Whether outbound switching treats this MAC as a ZeroTier member (first octet test).
    pub fn is_member_mac(self, nwid: NetworkId) -> bool {
        self.0[0] == Self::first_octet(nwid)
    }

    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    pub fn to_u64(self) -> u64 {
        self.0.iter().fold(0, |v, &b| (v << 8) | u64::from(b))
    }

    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        Self([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A multicast group: a multicast MAC and 32 bits of "additional distinguishing
/// information". Ordered by MAC then ADI, as 1.14 sorts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MulticastGroup {
    pub mac: Mac,
    pub adi: u32,
}

/// Bytes of a multicast group on the wire: MAC (6) and ADI (4).
pub const MULTICAST_GROUP_LEN: usize = 10;

impl MulticastGroup {
    /// Plain broadcast (ff:ff:ff:ff:ff:ff, 0).
    pub const BROADCAST: Self = Self {
        mac: Mac::BROADCAST,
        adi: 0,
    };

    /// The group an ARP request for `ip` goes to, and which the owner of `ip` subscribes to:
    /// broadcast with the IPv4 address as ADI.
    pub fn ipv4_arp(ip: Ipv4Addr) -> Self {
        Self {
            mac: Mac::BROADCAST,
            adi: u32::from(ip),
        }
    }

    /// The IPv6 solicited-node group of `ip`: 33:33:ff and the address's last 3 bytes.
    pub fn ipv6_solicited_node(ip: Ipv6Addr) -> Self {
        let o = ip.octets();
        Self {
            mac: Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
            adi: 0,
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mac.0);
        out.extend_from_slice(&self.adi.to_be_bytes());
    }
}

/// Netmask bits of an RFC4193 managed address.
pub const RFC4193_PREFIX_BITS: u8 = 88;
/// Netmask bits of a 6PLANE managed address.
pub const SIXPLANE_PREFIX_BITS: u8 = 40;

/// The RFC4193 managed address: `fd ‖ nwid ‖ 99 93 ‖ address`, prefix /88.
pub fn rfc4193_address(nwid: NetworkId, address: Address) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..9].copy_from_slice(&nwid.to_bytes());
    b[9] = 0x99;
    b[10] = 0x93;
    b[11..16].copy_from_slice(&address.to_bytes());
    Ipv6Addr::from(b)
}

/// The 6PLANE managed address: `fc ‖ (nwid ^ nwid >> 32) as u32 ‖ address ‖ 0 × 5 ‖ 01`,
/// prefix /40 (each host owns the /80 around it).
pub fn sixplane_address(nwid: NetworkId, address: Address) -> Ipv6Addr {
    let folded = ((nwid.0 ^ (nwid.0 >> 32)) & 0xffff_ffff) as u32;
    let mut b = [0u8; 16];
    b[0] = 0xfc;
    b[1..5].copy_from_slice(&folded.to_be_bytes());
    b[5..10].copy_from_slice(&address.to_bytes());
    b[15] = 0x01;
    Ipv6Addr::from(b)
}
