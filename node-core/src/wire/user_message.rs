//! USER_MESSAGE (0x14, zt-vl1.md 7.9): a type ID and application data.

use super::{Error, Reader};

/// Type IDs up to this value are reserved for ZeroTier, Inc.
pub const RESERVED_TYPE_ID_MAX: u64 = 0xffff;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserMessageRepr {
    pub type_id: u64,
    pub data: Vec<u8>,
}

impl UserMessageRepr {
    /// Payloads shorter than the 8-byte type ID are [`Error::TooShort`]: 1.14 ignores them.
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let type_id = r
            .u64("USER_MESSAGE type ID")
            .map_err(|_| Error::TooShort("USER_MESSAGE"))?;
        Ok(Self {
            type_id,
            data: r.rest().to_vec(),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_id.to_be_bytes());
        out.extend_from_slice(&self.data);
    }

    pub fn buffer_len(&self) -> usize {
        8 + self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = UserMessageRepr {
            type_id: 0x1234567890abcdef,
            data: (0..37).collect(),
        };
        let mut out = vec![];
        m.emit(&mut out);
        assert_eq!(out.len(), m.buffer_len());
        assert_eq!(UserMessageRepr::parse(&out), Ok(m));
        assert_eq!(
            UserMessageRepr::parse(&out[..7]),
            Err(Error::TooShort("USER_MESSAGE"))
        );
    }
}
