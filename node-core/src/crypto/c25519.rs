//! "C25519": ZeroTier 1.x's pairing of X25519 (agreement) and Ed25519 (signatures)
//! (zt-vl1 1.1, 1.7, 2.1).
//!
//! Keys are 64 bytes, X25519 half first: public = X25519 public ‖ Ed25519 public,
//! secret = X25519 scalar ‖ Ed25519 seed. A signature is 96 bytes: a standard Ed25519
//! signature of `m = SHA-512(msg)[0..32)`, followed by `m` itself.

use ed25519_dalek::{Signer, Verifier};
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;

use super::sha512;

pub const PUBLIC_KEY_LEN: usize = 64;
pub const SECRET_KEY_LEN: usize = 64;
pub const SIGNATURE_LEN: usize = 96;

/// Bytes of SHA-512(message) that are actually signed (and carried at the signature's end).
const SIGNED_DIGEST_LEN: usize = 32;

/// A C25519 key pair. The secret is public API because identities persist it.
#[derive(Clone)]
pub struct KeyPair {
    pub public: [u8; PUBLIC_KEY_LEN],
    pub secret: [u8; SECRET_KEY_LEN],
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &Hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from 64 random bytes.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut secret = [0u8; SECRET_KEY_LEN];
        rng.fill_bytes(&mut secret);
        Self::from_secret(&secret)
    }

    /// Derives both public halves from a secret key.
    pub fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        let mut public = [0u8; PUBLIC_KEY_LEN];
        let (x_secret, ed_seed) = split_halves(secret);
        public[..32].copy_from_slice(&x25519_public(x_secret));
        public[32..].copy_from_slice(&ed25519_public(ed_seed));
        Self {
            public,
            secret: *secret,
        }
    }
}

/// The X25519 public key for a (not yet clamped) X25519 secret scalar.
pub fn x25519_public(x_secret: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*x_secret);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// The Ed25519 public key for an Ed25519 seed.
pub fn ed25519_public(ed_seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(ed_seed)
        .verifying_key()
        .to_bytes()
}

/// `SHA-512(X25519(my X25519 secret, their X25519 public))`. ZeroTier's per-peer key is the
/// first 48 bytes. Like the C++, there is no check for an all-zero shared secret.
pub fn agree(my_secret: &[u8; SECRET_KEY_LEN], their_public: &[u8; PUBLIC_KEY_LEN]) -> [u8; 64] {
    let (x_secret, _) = split_halves(my_secret);
    let (x_public, _) = split_halves(their_public);
    let raw = x25519_dalek::x25519(*x_secret, *x_public);
    sha512(&raw)
}

/// A 96-byte C25519 signature of `msg`.
///
/// The Ed25519 public half is derived from the secret seed; `public` is only checked against
/// it in debug builds (a mismatched pair would make signatures nobody can verify).
pub fn sign(
    secret: &[u8; SECRET_KEY_LEN],
    public: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
) -> [u8; SIGNATURE_LEN] {
    let (_, ed_seed) = split_halves(secret);
    let signing = ed25519_dalek::SigningKey::from_bytes(ed_seed);
    debug_assert_eq!(
        signing.verifying_key().as_bytes()[..],
        public[32..],
        "C25519 secret and public key do not belong together"
    );
    let digest = sha512(msg);
    let signed = &digest[..SIGNED_DIGEST_LEN];
    let mut out = [0u8; SIGNATURE_LEN];
    out[..64].copy_from_slice(&signing.sign(signed).to_bytes());
    out[64..].copy_from_slice(signed);
    out
}

/// Checks a 96-byte C25519 signature. Any other length, a digest that does not match `msg`,
/// an invalid public key or a failed Ed25519 check is `false`.
///
/// The Ed25519 check is ed25519-dalek's default (cofactorless, like the C++); it rejects a
/// non-canonical `S`, which the C++ would reduce and accept. Honest signers never produce one.
pub fn verify(public: &[u8; PUBLIC_KEY_LEN], msg: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return false;
    };
    let digest = sha512(msg);
    let signed = &digest[..SIGNED_DIGEST_LEN];
    if !bool::from(signature[64..].ct_eq(signed)) {
        return false;
    }
    let (_, ed_public) = split_halves(public);
    let Ok(verifying) = ed25519_dalek::VerifyingKey::from_bytes(ed_public) else {
        return false;
    };
    let mut ed_sig = [0u8; 64];
    ed_sig.copy_from_slice(&signature[..64]);
    verifying
        .verify(signed, &ed25519_dalek::Signature::from_bytes(&ed_sig))
        .is_ok()
}

/// The X25519 and Ed25519 halves of a 64-byte C25519 key.
fn split_halves(key: &[u8; 64]) -> (&[u8; 32], &[u8; 32]) {
    let (x, ed) = key.split_at(32);
    // Both halves are exactly 32 bytes by construction.
    match (x.try_into(), ed.try_into()) {
        (Ok(x), Ok(ed)) => (x, ed),
        _ => unreachable!("64 bytes split at 32"),
    }
}

/// Lowercase hex for Debug output.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
