//! ERROR (0x02, zt-vl1.md 7.4): the in-re verb and packet ID, a code and code-specific bytes.

use super::verb::{ErrorCode, Verb};
use super::{Error, Reader};

/// Length of the fixed part: in-re verb (1), in-re packet ID (8), code (1).
pub const ERROR_HEADER_LEN: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRepr {
    /// The verb of the packet this answers, compared unmasked as 1.14 does.
    pub in_re_verb: Verb,
    /// The on-wire ID of the packet this answers.
    pub in_re_packet_id: u64,
    pub code: ErrorCode,
    /// Code-specific bytes (often the 8-byte network ID); see [`ErrorCode`].
    pub payload: Vec<u8>,
}

impl ErrorRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let in_re_verb = Verb::from(r.u8("ERROR in-re verb")?);
        let in_re_packet_id = r.u64("ERROR in-re packet ID")?;
        let code = ErrorCode::from(r.u8("ERROR code")?);
        Ok(Self {
            in_re_verb,
            in_re_packet_id,
            code,
            payload: r.rest().to_vec(),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.in_re_verb));
        out.extend_from_slice(&self.in_re_packet_id.to_be_bytes());
        out.push(u8::from(self.code));
        out.extend_from_slice(&self.payload);
    }

    pub fn buffer_len(&self) -> usize {
        ERROR_HEADER_LEN + self.payload.len()
    }

    /// The network ID that most codes carry first, if present.
    pub fn network_id(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.payload.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_collision_round_trip() {
        let e = ErrorRepr {
            in_re_verb: Verb::Hello,
            in_re_packet_id: 0x0102030405060708,
            code: ErrorCode::IdentityCollision,
            payload: vec![],
        };
        let mut out = vec![];
        e.emit(&mut out);
        assert_eq!(hex::encode(&out), "01010203040506070804");
        assert_eq!(ErrorRepr::parse(&out), Ok(e));
        assert!(ErrorRepr::parse(&out[..9]).is_err());
        let denied =
            ErrorRepr::parse(&hex::decode("0b1111111111111111071122334455667788").unwrap())
                .unwrap();
        assert_eq!(denied.code, ErrorCode::NetworkAccessDenied);
        assert_eq!(denied.network_id(), Some(0x1122334455667788));
    }
}
