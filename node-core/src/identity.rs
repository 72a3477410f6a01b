//! Identities (zt-vl1.md section 1): a 40-bit address bound to a 64-byte C25519 public key
//! by the memory-hard hash, optionally with the 64-byte secret key.
//!
//! Forms: text `addr:0:public[:secret]` (1.4) and binary `addr(5) ‖ 0x00 ‖ public(64) ‖
//! secret length (0 or 0x40) ‖ secret` (1.5).

use core::fmt;
use core::str::FromStr;

use rand_core::{CryptoRng, RngCore};

use crate::address::{Address, ADDRESS_LEN};
use crate::crypto::armor::{PeerKey, PEER_KEY_LEN};
use crate::crypto::c25519::{self, PUBLIC_KEY_LEN, SECRET_KEY_LEN, SIGNATURE_LEN};
use crate::crypto::salsa::Salsa20;
use crate::crypto::sha512;

/// Bytes of the public-only binary form: address, type, public key, secret length 0.
pub const IDENTITY_PUBLIC_BINARY_LEN: usize = ADDRESS_LEN + 1 + PUBLIC_KEY_LEN + 1;
/// Bytes of the binary form with the secret key.
pub const IDENTITY_SECRET_BINARY_LEN: usize = IDENTITY_PUBLIC_BINARY_LEN + SECRET_KEY_LEN;

/// The only identity type of ZeroTier 1.x: C25519.
const IDENTITY_TYPE_C25519: u8 = 0x00;
/// The text form's type field.
const IDENTITY_TYPE_C25519_TEXT: &str = "0";

/// `ZT_IDENTITY_GEN_MEMORY`: scratch size of the memory-hard hash.
const MEMORY_HARD_BYTES: usize = 2_097_152;
const MEMORY_HARD_WORDS: usize = MEMORY_HARD_BYTES / 8;
/// `ZT_IDENTITY_GEN_HASHCASH_FIRST_BYTE_LESS_THAN`: the proof-of-work criterion.
const HASHCASH_FIRST_BYTE_LESS_THAN: u8 = 17;
/// The C++ parses text identities from a 1024-byte buffer; longer strings are refused.
const MAX_TEXT_LEN: usize = 1023;

/// Why an identity could not be parsed or built.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported identity type {0:#04x} (only 0, C25519, exists)")]
    UnsupportedType(u8),
    #[error("secret key length byte is {0:#04x} (must be 0 or 0x40)")]
    BadSecretLength(u8),
    #[error("identity text longer than {MAX_TEXT_LEN} bytes")]
    TextTooLong,
    #[error("identity text has {0} ':'-separated fields (must be 3 or 4)")]
    FieldCount(usize),
    #[error("identity address is not 10 hex digits")]
    BadAddress,
    #[error("identity address {0} is reserved")]
    ReservedAddress(Address),
    #[error("identity type field is not \"0\"")]
    BadTypeField,
    #[error("identity public key is not 128 hex digits")]
    BadPublicKey,
    #[error("identity secret key is not 128 hex digits")]
    BadSecretKey,
    #[error("identity secret key does not belong to its public key")]
    SecretKeyMismatch,
    #[error("public key fails the memory-hard hash criterion")]
    HashCriterion,
}

/// A ZeroTier 1.x identity. Equality and hashing use the address and public key only.
#[derive(Clone)]
pub struct Identity {
    address: Address,
    public: [u8; PUBLIC_KEY_LEN],
    secret: Option<Box<[u8; SECRET_KEY_LEN]>>,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address && self.public == other.public
    }
}

impl Eq for Identity {}

impl core::hash::Hash for Identity {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.address.hash(state);
        self.public.hash(state);
    }
}

impl fmt::Debug for Identity {
    /// Never prints the secret key, only whether there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("address", &format_args!("{}", self.address))
            .field("public", &c25519::Hex(&self.public))
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

/// Reusable 2 MiB scratch for [`Identity::memory_hard_hash_with`], so that repeated
/// validations (or generation attempts) do not reallocate.
pub struct MemoryHardScratch(Vec<u64>);

impl MemoryHardScratch {
    pub fn new() -> Self {
        Self(vec![0; MEMORY_HARD_WORDS])
    }
}

impl Default for MemoryHardScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryHardScratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryHardScratch")
    }
}

impl Identity {
    /// Generates a new identity: random keys, retrying the X25519 half until the memory-hard
    /// hash meets the criterion and the address is not reserved (about 15 hashes expected).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut scratch = MemoryHardScratch::new();
        let mut secret = [0u8; SECRET_KEY_LEN];
        let mut public = [0u8; PUBLIC_KEY_LEN];
        loop {
            // Like the C++, the Ed25519 half is fixed per search and only X25519 varies.
            rng.fill_bytes(&mut secret);
            let mut ed_seed = [0u8; 32];
            ed_seed.copy_from_slice(&secret[32..]);
            public[32..].copy_from_slice(&c25519::ed25519_public(&ed_seed));
            let digest = loop {
                let mut x_secret = [0u8; 32];
                rng.fill_bytes(&mut x_secret);
                public[..32].copy_from_slice(&c25519::x25519_public(&x_secret));
                let digest = Self::memory_hard_hash_with(&public, &mut scratch);
                if digest[0] < HASHCASH_FIRST_BYTE_LESS_THAN {
                    secret[..32].copy_from_slice(&x_secret);
                    break digest;
                }
            };
            let address = address_from_digest(&digest);
            if !address.is_reserved() {
                return Self {
                    address,
                    public,
                    secret: Some(Box::new(secret)),
                };
            }
        }
    }

    /// Builds an identity from a secret key, deriving the public key and the address.
    /// Fails if the public key does not satisfy the memory-hard hash criterion or yields a
    /// reserved address.
    pub fn from_secret_key(secret: &[u8; SECRET_KEY_LEN]) -> Result<Self, IdentityError> {
        let public = c25519::KeyPair::from_secret(secret).public;
        let digest = Self::memory_hard_hash(&public);
        let address = address_from_digest(&digest);
        if address.is_reserved() {
            return Err(IdentityError::ReservedAddress(address));
        }
        let identity = Self {
            address,
            public,
            secret: Some(Box::new(*secret)),
        };
        if digest[0] < HASHCASH_FIRST_BYTE_LESS_THAN {
            Ok(identity)
        } else {
            Err(IdentityError::HashCriterion)
        }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// X25519 public ‖ Ed25519 public.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// X25519 secret ‖ Ed25519 seed, if this identity has its secret.
    pub fn secret_key(&self) -> Option<&[u8; SECRET_KEY_LEN]> {
        self.secret.as_deref()
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The same identity without its secret key.
    pub fn public_only(&self) -> Identity {
        Identity {
            address: self.address,
            public: self.public,
            secret: None,
        }
    }

    /// The address is not reserved and the memory-hard hash of the public key starts with a
    /// byte below 17 and ends with the address (zt-vl1 1.3). Costs one 2 MiB hash.
    pub fn locally_validate(&self) -> bool {
        self.locally_validate_with(&mut MemoryHardScratch::new())
    }

    /// [`Self::locally_validate`] with caller-provided scratch memory.
    pub fn locally_validate_with(&self, scratch: &mut MemoryHardScratch) -> bool {
        if self.address.is_reserved() {
            return false;
        }
        let digest = Self::memory_hard_hash_with(&self.public, scratch);
        digest[0] < HASHCASH_FIRST_BYTE_LESS_THAN && address_from_digest(&digest) == self.address
    }

    /// The memory-hard hash of a public key (zt-vl1 1.3).
    pub fn memory_hard_hash(public: &[u8; PUBLIC_KEY_LEN]) -> [u8; 64] {
        Self::memory_hard_hash_with(public, &mut MemoryHardScratch::new())
    }

    /// [`Self::memory_hard_hash`] with caller-provided scratch memory.
    ///
    /// Both the scratch and the digest are kept as 64-bit words holding their 8 bytes read
    /// big-endian: the C++ swaps raw 8-byte cells and reads indices big-endian, and XOR and
    /// swaps commute with that reading, so this is byte-for-byte the same computation.
    pub fn memory_hard_hash_with(
        public: &[u8; PUBLIC_KEY_LEN],
        scratch: &mut MemoryHardScratch,
    ) -> [u8; 64] {
        let initial = sha512(public);
        let mut key = [0u8; 32];
        key.copy_from_slice(&initial[..32]);
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&initial[32..40]);
        let mut salsa = Salsa20::new(&key, &nonce);
        let mut digest = be_words(&initial);

        // Fill: block i = block i-1 XOR keystream block i (block -1 being zero).
        let memory = &mut scratch.0[..];
        let mut previous = [0u64; 8];
        for block in memory.chunks_exact_mut(8) {
            for ((p, k), m) in previous
                .iter_mut()
                .zip(be_words(&salsa.next_block()))
                .zip(block)
            {
                *p ^= k;
                *m = *p;
            }
        }

        // Mix: both indices come from the current memory before the swap, in order; then
        // the digest is encrypted with the next keystream block.
        for i in (0..MEMORY_HARD_WORDS).step_by(2) {
            let digest_index = (memory[i] % 8) as usize;
            let memory_index = (memory[i + 1] % MEMORY_HARD_WORDS as u64) as usize;
            core::mem::swap(&mut memory[memory_index], &mut digest[digest_index]);
            for (d, k) in digest.iter_mut().zip(be_words(&salsa.next_block())) {
                *d ^= k;
            }
        }

        let mut out = [0u8; 64];
        for (chunk, word) in out.chunks_exact_mut(8).zip(digest) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The 48-byte per-peer key shared with `other` (zt-vl1 2.1), expanded for armor.
    /// `None` without this identity's secret.
    pub fn agree(&self, other: &Identity) -> Option<PeerKey> {
        let secret = self.secret.as_deref()?;
        let full = c25519::agree(secret, &other.public);
        let mut k = [0u8; PEER_KEY_LEN];
        k.copy_from_slice(&full[..PEER_KEY_LEN]);
        Some(PeerKey::from_secret(k))
    }

    /// A 96-byte C25519 signature, or `None` without the secret.
    pub fn sign(&self, msg: &[u8]) -> Option<[u8; SIGNATURE_LEN]> {
        let secret = self.secret.as_deref()?;
        Some(c25519::sign(secret, &self.public, msg))
    }

    /// Checks a C25519 signature made by this identity; `false` on any wrong length.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        c25519::verify(&self.public, msg, signature)
    }

    /// `addr:0:public:secret`, the content of `identity.secret` (no trailing newline).
    pub fn to_secret_string(&self) -> Option<String> {
        let secret = self.secret.as_deref()?;
        let mut s = self.to_string();
        s.push(':');
        push_hex(&mut s, secret);
        Some(s)
    }

    /// Appends the 71-byte public binary form (what packets carry).
    pub fn emit_public(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.address.to_bytes());
        out.push(IDENTITY_TYPE_C25519);
        out.extend_from_slice(&self.public);
        out.push(0);
    }

    /// Appends the binary form including the secret (135 bytes), or the public form if this
    /// identity has no secret.
    pub fn emit_with_secret(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.address.to_bytes());
        out.push(IDENTITY_TYPE_C25519);
        out.extend_from_slice(&self.public);
        match self.secret.as_deref() {
            Some(secret) => {
                out.push(SECRET_KEY_LEN as u8);
                out.extend_from_slice(secret);
            }
            None => out.push(0),
        }
    }

    /// Parses the binary form at the start of `bytes`; returns the identity and the bytes
    /// consumed (71, or 135 with a secret). Like the C++ this checks format only (no hash
    /// validation, reserved addresses pass); a secret must match the public key.
    pub fn parse(bytes: &[u8]) -> Result<(Identity, usize), IdentityError> {
        let truncated = |needed| IdentityError::Truncated {
            needed,
            available: bytes.len(),
        };
        if bytes.len() < IDENTITY_PUBLIC_BINARY_LEN {
            return Err(truncated(IDENTITY_PUBLIC_BINARY_LEN));
        }
        let address = Address::from_bytes(&bytes[..ADDRESS_LEN]);
        let identity_type = bytes[ADDRESS_LEN];
        if identity_type != IDENTITY_TYPE_C25519 {
            return Err(IdentityError::UnsupportedType(identity_type));
        }
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(&bytes[ADDRESS_LEN + 1..ADDRESS_LEN + 1 + PUBLIC_KEY_LEN]);
        match bytes[IDENTITY_PUBLIC_BINARY_LEN - 1] {
            0 => Ok((
                Identity {
                    address,
                    public,
                    secret: None,
                },
                IDENTITY_PUBLIC_BINARY_LEN,
            )),
            len if usize::from(len) == SECRET_KEY_LEN => {
                let Some(secret_bytes) =
                    bytes.get(IDENTITY_PUBLIC_BINARY_LEN..IDENTITY_SECRET_BINARY_LEN)
                else {
                    return Err(truncated(IDENTITY_SECRET_BINARY_LEN));
                };
                let mut secret = [0u8; SECRET_KEY_LEN];
                secret.copy_from_slice(secret_bytes);
                let identity = with_checked_secret(address, public, secret)?;
                Ok((identity, IDENTITY_SECRET_BINARY_LEN))
            }
            len => Err(IdentityError::BadSecretLength(len)),
        }
    }
}

impl fmt::Display for Identity {
    /// The public text form `addr:0:public`, the content of `identity.public`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.address, IDENTITY_TYPE_C25519_TEXT)?;
        for b in &self.public {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses `addr:0:public` or `addr:0:public:secret` (zt-vl1 1.4). As in the C++, empty
    /// fields are skipped (strtok), hex is case-insensitive and anything after the 128th hex
    /// digit of a key field (such as a trailing newline) is ignored; a reserved address is
    /// refused. Stricter than the C++: the address must be 10 hex digits, key digits must be
    /// hex (the C++ reads other characters as 0) and a secret must match the public key.
    /// Format only: run [`Identity::locally_validate`] to check the hash.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_TEXT_LEN {
            return Err(IdentityError::TextTooLong);
        }
        let mut fields = [""; 4];
        let mut count = 0;
        for field in s.split(':').filter(|f| !f.is_empty()) {
            if count == fields.len() {
                return Err(IdentityError::FieldCount(
                    s.split(':').filter(|f| !f.is_empty()).count(),
                ));
            }
            fields[count] = field;
            count += 1;
        }
        if count < 3 {
            return Err(IdentityError::FieldCount(count));
        }
        let address: Address = fields[0].parse().map_err(|_| IdentityError::BadAddress)?;
        if address.is_reserved() {
            return Err(IdentityError::ReservedAddress(address));
        }
        if fields[1] != IDENTITY_TYPE_C25519_TEXT {
            return Err(IdentityError::BadTypeField);
        }
        let public = key_from_hex(fields[2]).ok_or(IdentityError::BadPublicKey)?;
        if count == 4 {
            let secret = key_from_hex(fields[3]).ok_or(IdentityError::BadSecretKey)?;
            with_checked_secret(address, public, secret)
        } else {
            Ok(Identity {
                address,
                public,
                secret: None,
            })
        }
    }
}

/// An identity with a secret, refused if the secret does not derive the public key.
fn with_checked_secret(
    address: Address,
    public: [u8; PUBLIC_KEY_LEN],
    secret: [u8; SECRET_KEY_LEN],
) -> Result<Identity, IdentityError> {
    if c25519::KeyPair::from_secret(&secret).public != public {
        return Err(IdentityError::SecretKeyMismatch);
    }
    Ok(Identity {
        address,
        public,
        secret: Some(Box::new(secret)),
    })
}

/// The address is the last 5 bytes of the memory-hard digest.
fn address_from_digest(digest: &[u8; 64]) -> Address {
    Address::from_bytes(&digest[64 - ADDRESS_LEN..])
}

/// 64 bytes from the first 128 characters of `field`, which must be hex digits; anything
/// after them is ignored.
fn key_from_hex(field: &str) -> Option<[u8; 64]> {
    let digits = field.as_bytes().get(..128)?;
    let mut key = [0u8; 64];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(key)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Eight 64-bit words, each from 8 bytes read big-endian.
#[inline(always)]
fn be_words(bytes: &[u8; 64]) -> [u64; 8] {
    let mut words = [0u64; 8];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_be_bytes(b);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";

    #[test]
    fn text_rules() {
        let id: Identity = GOOD.parse().unwrap();
        assert!(id.has_secret());
        assert_eq!(id.to_secret_string().unwrap(), GOOD);
        let public = id.to_string();
        assert_eq!(public.parse::<Identity>().unwrap(), id);
        assert!(!public.parse::<Identity>().unwrap().has_secret());

        // Case-insensitive, trailing newline tolerated, empty fields skipped like strtok.
        assert_eq!(GOOD.to_uppercase().parse::<Identity>().unwrap(), id);
        assert!(format!("{GOOD}\n")
            .parse::<Identity>()
            .unwrap()
            .has_secret());
        assert_eq!(format!("{public}\n").parse::<Identity>().unwrap(), id);
        assert_eq!(format!("{public}:").parse::<Identity>().unwrap(), id);
        assert_eq!(format!("{public}::").parse::<Identity>().unwrap(), id);

        assert_eq!(
            "8e4df28b72:0".parse::<Identity>(),
            Err(IdentityError::FieldCount(2))
        );
        assert_eq!(
            format!("{GOOD}:00").parse::<Identity>(),
            Err(IdentityError::FieldCount(5))
        );
        assert_eq!(
            GOOD.replacen(":0:", ":1:", 1).parse::<Identity>(),
            Err(IdentityError::BadTypeField)
        );
        assert_eq!(
            GOOD.replacen(":0:", ":00:", 1).parse::<Identity>(),
            Err(IdentityError::BadTypeField)
        );
        assert_eq!(
            GOOD.replacen("8e4df28b72", "ff4df28b72", 1)
                .parse::<Identity>(),
            Err(IdentityError::ReservedAddress(Address::from_u64(
                0xff4df28b72
            )))
        );
        assert_eq!(
            GOOD.replacen("8e4df28b72", "0000000000", 1)
                .parse::<Identity>(),
            Err(IdentityError::ReservedAddress(Address::NIL))
        );
        assert_eq!(
            GOOD.replacen("8e4df28b72", "8e4df28b7", 1)
                .parse::<Identity>(),
            Err(IdentityError::BadAddress)
        );
        assert_eq!(
            public[..public.len() - 2].parse::<Identity>(),
            Err(IdentityError::BadPublicKey)
        );
        assert_eq!(
            public.replacen(":ac3d", ":ag3d", 1).parse::<Identity>(),
            Err(IdentityError::BadPublicKey)
        );
        assert_eq!(
            GOOD[..GOOD.len() - 1].parse::<Identity>(),
            Err(IdentityError::BadSecretKey)
        );
        // Secret of another key.
        let mismatched = format!("{}{}", &GOOD[..GOOD.len() - 1], "f");
        assert_eq!(
            mismatched.parse::<Identity>(),
            Err(IdentityError::SecretKeyMismatch)
        );
        assert_eq!(
            "x".repeat(2000).parse::<Identity>(),
            Err(IdentityError::TextTooLong)
        );
        assert!("".parse::<Identity>().is_err());
        assert!(":::::".parse::<Identity>().is_err());
        assert!("é:0:é".parse::<Identity>().is_err());
    }

    #[test]
    fn binary_rules() {
        let id: Identity = GOOD.parse().unwrap();
        let mut public = Vec::new();
        id.emit_public(&mut public);
        assert_eq!(public.len(), IDENTITY_PUBLIC_BINARY_LEN);
        let mut secret = Vec::new();
        id.emit_with_secret(&mut secret);
        assert_eq!(secret.len(), IDENTITY_SECRET_BINARY_LEN);

        for len in 0..public.len() {
            assert!(matches!(
                Identity::parse(&public[..len]),
                Err(IdentityError::Truncated { .. })
            ));
        }
        for len in public.len()..secret.len() {
            assert!(matches!(
                Identity::parse(&secret[..len]),
                Err(IdentityError::Truncated { .. })
            ));
        }
        let mut extra = public.clone();
        extra.extend_from_slice(b"more");
        let (parsed, used) = Identity::parse(&extra).unwrap();
        assert_eq!(
            (parsed.clone(), used, parsed.has_secret()),
            (id.clone(), 71, false)
        );
        let (parsed, used) = Identity::parse(&secret).unwrap();
        assert_eq!((used, parsed.secret_key()), (135, id.secret_key()));

        let mut bad = public.clone();
        bad[5] = 1;
        assert_eq!(
            Identity::parse(&bad),
            Err(IdentityError::UnsupportedType(1))
        );
        let mut bad = public.clone();
        bad[70] = 0x20;
        assert_eq!(
            Identity::parse(&bad),
            Err(IdentityError::BadSecretLength(0x20))
        );
        let mut bad = secret.clone();
        bad[100] ^= 1;
        assert_eq!(Identity::parse(&bad), Err(IdentityError::SecretKeyMismatch));
    }

    #[test]
    fn debug_hides_secret() {
        let id: Identity = GOOD.parse().unwrap();
        let debug = format!("{id:?}");
        assert!(debug.contains("8e4df28b72"));
        assert!(debug.contains("has_secret: true"));
        assert!(!debug.contains("bd8dd6e4"));
    }
}
