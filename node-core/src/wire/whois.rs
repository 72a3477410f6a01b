//! WHOIS (0x04, zt-vl1.md 7.5): addresses whose identities the sender wants.
//! The answer, OK(WHOIS), is [`super::OkBody::Whois`].

use crate::address::ADDRESS_LEN;
use crate::Address;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhoisRepr {
    /// 1.14 always asks for exactly one, but answers as many as fit.
    pub addresses: Vec<Address>,
}

impl WhoisRepr {
    /// Reads every complete 5-byte address; a partial one at the end is ignored, as by 1.14.
    /// Never fails (an empty request just gets no answer).
    pub fn parse(payload: &[u8]) -> Self {
        let addresses = payload
            .chunks_exact(ADDRESS_LEN)
            .map(Address::from_bytes)
            .collect();
        Self { addresses }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        for address in &self.addresses {
            out.extend_from_slice(&address.to_bytes());
        }
    }

    pub fn buffer_len(&self) -> usize {
        self.addresses.len() * ADDRESS_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_tail() {
        let w = WhoisRepr {
            addresses: vec!["8e4df28b72".parse().unwrap(), "6d09ce149c".parse().unwrap()],
        };
        let mut out = vec![];
        w.emit(&mut out);
        assert_eq!(hex::encode(&out), "8e4df28b726d09ce149c");
        assert_eq!(out.len(), w.buffer_len());
        out.extend_from_slice(&[1, 2, 3]);
        assert_eq!(WhoisRepr::parse(&out), w);
        assert!(WhoisRepr::parse(&[]).addresses.is_empty());
    }
}
