//! ZeroTier addresses: 40-bit node identifiers, carried as 5 big-endian bytes.

use core::fmt;
use core::str::FromStr;

/// Bytes of an address on the wire.
pub const ADDRESS_LEN: usize = 5;

/// Addresses whose most significant byte is this are reserved (0xff also marks fragments).
pub const RESERVED_PREFIX: u8 = 0xff;

/// A 40-bit ZeroTier node address. The value is always masked to 40 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(u64);

/// An address text or byte string that is not 10 hex digits / 5 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a ZeroTier address (expected 10 hex digits)")]
pub struct AddressParseError;

impl Address {
    pub const NIL: Self = Self(0);

    /// Masks `v` to 40 bits.
    pub const fn from_u64(v: u64) -> Self {
        Self(v & 0xff_ffff_ffff)
    }

    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// Reads 5 big-endian bytes. Panics if `b` is shorter than 5: callers slice after a
    /// length check.
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut v = 0u64;
        for &x in &b[..ADDRESS_LEN] {
            v = (v << 8) | u64::from(x);
        }
        Self(v)
    }

    pub fn to_bytes(self) -> [u8; ADDRESS_LEN] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }

    /// Zero, or starting with 0xff: never a valid identity's address.
    pub fn is_reserved(self) -> bool {
        self.0 == 0 || (self.0 >> 32) as u8 == RESERVED_PREFIX
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010x}", self.0)
    }
}

impl FromStr for Address {
    type Err = AddressParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 10 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(AddressParseError);
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| AddressParseError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reserved() {
        let a: Address = "8e4df28b72".parse().unwrap();
        assert_eq!(a.to_bytes(), [0x8e, 0x4d, 0xf2, 0x8b, 0x72]);
        assert_eq!(Address::from_bytes(&a.to_bytes()), a);
        assert_eq!(a.to_string(), "8e4df28b72");
        assert!(!a.is_reserved());
        assert!(Address::NIL.is_reserved());
        assert!(Address::from_u64(0xff_0000_0001).is_reserved());
        assert!("8e4df28b7".parse::<Address>().is_err());
        assert!("8e4df28b7g".parse::<Address>().is_err());
    }
}
