//! ECHO (0x08, zt-vl1.md 7.7): an arbitrary payload, copied back in OK(ECHO).

/// An ECHO request's payload (1.14's keepalive sends none). OK(ECHO) carries the same bytes,
/// see [`super::OkBody::Echo`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoRepr {
    pub payload: Vec<u8>,
}

impl EchoRepr {
    /// Any payload is valid.
    pub fn parse(payload: &[u8]) -> Self {
        Self {
            payload: payload.to_vec(),
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payload);
    }

    pub fn buffer_len(&self) -> usize {
        self.payload.len()
    }
}
