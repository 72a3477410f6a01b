//! Cryptographic primitives as ZeroTier 1.x uses them (zt-vl1.md sections 1, 2 and 4).
//!
//! - [`salsa`]: Salsa20/12 and Salsa20/20 keystreams.
//! - [`poly1305`]: the one-time authenticator of ciphers 0 and 1.
//! - [`c25519`]: X25519 agreement and ZeroTier's 96-byte Ed25519-based signatures.
//! - [`armor`]: the per-peer key and packet armor/dearmor for all cipher suites.
//!
//! Nothing here reads the OS: randomness always comes from a caller-passed RNG.

pub mod armor;
pub mod c25519;
pub mod poly1305;
pub mod salsa;

pub use armor::{armor, armor_trusted, crypt_field, dearmor, CipherSuite, DearmorError, PeerKey};

use hmac::Mac;
use sha2::Digest;

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    sha2::Sha512::digest(data).into()
}

/// KBKDF label for the AES-GMAC-SIV GMAC key `K0` (`'0'`).
pub const KBKDF_LABEL_AES_GMAC_SIV_K0: u8 = 0x30;
/// KBKDF label for the AES-GMAC-SIV SIV/CTR key `K1` (`'1'`).
pub const KBKDF_LABEL_AES_GMAC_SIV_K1: u8 = 0x31;

/// ZeroTier's KBKDF (zt-vl1 2.2, NIST SP 800-108 counter mode, a single iteration):
/// HMAC-SHA-384 keyed with all 48 bytes of `key` over
/// `counter 0 (BE u32) ‖ 'Z' ‖ 'T' ‖ label ‖ 0x00 ‖ context 0x00 ‖ 384 (BE u32)`.
pub fn kbkdf_hmac_sha384(key: &[u8; 48], label: u8) -> [u8; 48] {
    let mut message = [0u8; 13];
    message[4] = b'Z';
    message[5] = b'T';
    message[6] = label;
    message[9..13].copy_from_slice(&384u32.to_be_bytes());
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha384>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    mac.update(&message);
    mac.finalize().into_bytes().into()
}
