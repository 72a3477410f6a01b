//! Poly1305 one-time authenticator (RFC 8439 section 2.5). ZeroTier keeps the first 8
//! bytes of the tag in the packet MAC field (zt-vl1 4.1).

use poly1305::universal_hash::KeyInit;

/// Bytes of a full Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// The 16-byte Poly1305 tag of `msg` under the one-time key `key` (`r || s`).
pub fn poly1305(key: &[u8; 32], msg: &[u8]) -> [u8; TAG_LEN] {
    poly1305::Poly1305::new(key.into())
        .compute_unpadded(msg)
        .into()
}
