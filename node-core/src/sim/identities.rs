//! Many valid identities without the memory-hard search on every run.
//!
//! Finding an identity costs about fifteen 2 MiB memory-hard hashes; ten thousand of them take
//! minutes. Instead, identity number `i` is defined by a deterministic key stream (ChaCha20
//! seeded with [`FIXTURE_SEED`], stream `i`): 64 bytes of secret key, then one 32-byte X25519
//! candidate after another. A fixture records, per identity, which candidate won and the
//! address it hashed to; rebuilding the identity then costs two key derivations and no hash.
//!
//! The fixture format (all big-endian): the 8-byte [`FIXTURE_MAGIC`], a `u32` count, then per
//! identity a `u16` index of the winning candidate and the 5-byte address.
//!
//! Rebuilt identities are as valid as generated ones ([`Identity::locally_validate`] holds),
//! but only the search's outcome is trusted here: a damaged fixture gives identities whose
//! address does not match their key, which validation (or a test) catches.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::address::{Address, ADDRESS_LEN};
use crate::crypto::c25519::{self, PUBLIC_KEY_LEN, SECRET_KEY_LEN};
use crate::identity::{Identity, MemoryHardScratch};

/// Seed of every identity's key stream.
pub const FIXTURE_SEED: [u8; 32] = *b"node-core sim identity fixture 1";
/// First bytes of a fixture file.
pub const FIXTURE_MAGIC: [u8; 8] = *b"ZTSIMID1";
/// Bytes per identity in a fixture.
pub const FIXTURE_ENTRY_LEN: usize = 2 + ADDRESS_LEN;
const HEADER_LEN: usize = FIXTURE_MAGIC.len() + 4;
/// `ZT_IDENTITY_GEN_HASHCASH_FIRST_BYTE_LESS_THAN`.
const HASHCASH_FIRST_BYTE_LESS_THAN: u8 = 17;

/// What the search found for one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixtureEntry {
    /// Index of the winning X25519 candidate in the identity's key stream.
    pub candidate: u16,
    pub address: Address,
}

/// Why a fixture could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FixtureError {
    #[error("the fixture does not start with the magic bytes ZTSIMID1")]
    BadMagic,
    #[error("the fixture holds {held} bytes of entries, expected {expected} for its count")]
    BadLength { held: usize, expected: usize },
    #[error("the fixture holds {held} identities, {wanted} were asked for")]
    TooFew { held: usize, wanted: usize },
    #[error("entry {0} names a reserved address")]
    ReservedAddress(usize),
    #[error("entry {0} does not rebuild into an identity")]
    Unbuildable(usize),
}

/// The key stream of identity `index`.
fn key_stream(index: u32) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::from_seed(FIXTURE_SEED);
    rng.set_stream(u64::from(index));
    rng
}

/// The secret key of identity `index` whose winning candidate is `candidate`.
fn secret_key(index: u32, candidate: u16) -> [u8; SECRET_KEY_LEN] {
    let mut rng = key_stream(index);
    let mut secret = [0u8; SECRET_KEY_LEN];
    rng.fill_bytes(&mut secret);
    let mut x_secret = [0u8; 32];
    for _ in 0..=candidate {
        rng.fill_bytes(&mut x_secret);
    }
    secret[..32].copy_from_slice(&x_secret);
    secret
}

/// Runs the memory-hard search for identity `index`: `None` if no candidate among the first
/// 65,536 wins (which practically never happens).
pub fn search(index: u32, scratch: &mut MemoryHardScratch) -> Option<FixtureEntry> {
    let mut rng = key_stream(index);
    let mut secret = [0u8; SECRET_KEY_LEN];
    rng.fill_bytes(&mut secret);
    let mut ed_seed = [0u8; 32];
    ed_seed.copy_from_slice(&secret[32..]);
    let mut public = [0u8; PUBLIC_KEY_LEN];
    public[32..].copy_from_slice(&c25519::ed25519_public(&ed_seed));
    for candidate in 0..=u16::MAX {
        let mut x_secret = [0u8; 32];
        rng.fill_bytes(&mut x_secret);
        public[..32].copy_from_slice(&c25519::x25519_public(&x_secret));
        let digest = Identity::memory_hard_hash_with(&public, scratch);
        let address = Address::from_bytes(&digest[64 - ADDRESS_LEN..]);
        if digest[0] < HASHCASH_FIRST_BYTE_LESS_THAN && !address.is_reserved() {
            return Some(FixtureEntry { candidate, address });
        }
    }
    None
}

/// Rebuilds identity `index` (with its secret) from its fixture entry, without hashing.
pub fn rebuild(index: u32, entry: FixtureEntry) -> Option<Identity> {
    if entry.address.is_reserved() {
        return None;
    }
    let keys = c25519::KeyPair::from_secret(&secret_key(index, entry.candidate));
    let mut text = format!("{}:0:", entry.address);
    push_hex(&mut text, &keys.public);
    text.push(':');
    push_hex(&mut text, &keys.secret);
    text.parse().ok()
}

/// Identity `index` without any search: candidate 0 of its key stream, with an address taken
/// from a plain SHA-512 of the public key. It does **not** pass
/// [`Identity::locally_validate`]: only for simulations larger than a fixture, with
/// [`crate::sim::Sim::set_validate_identities`] off.
pub fn unsearched(index: u32) -> Identity {
    let keys = c25519::KeyPair::from_secret(&secret_key(index, 0));
    let digest = crate::crypto::sha512(&keys.public);
    let mut address = Address::from_bytes(&digest[..ADDRESS_LEN]);
    if address.is_reserved() {
        // Reserved: 0 or the 0xff prefix; flipping the top byte's low bit leaves both.
        address = Address::from_u64(address.to_u64() ^ 0x01_0000_0001);
    }
    let mut text = format!("{address}:0:");
    push_hex(&mut text, &keys.public);
    text.push(':');
    push_hex(&mut text, &keys.secret);
    text.parse()
        .expect("a key pair derived from its own secret always parses")
}

/// The first `count` identities: those of the fixture rebuilt, then [`unsearched`] ones;
/// also returns how many came from the fixture (and are therefore valid).
pub fn identities(fixture: &[u8], count: usize) -> Result<(Vec<Identity>, usize), FixtureError> {
    let held = decode(fixture)?.len();
    let valid = held.min(count);
    let mut out = identities_from_fixture(fixture, valid)?;
    out.extend((valid..count).map(|i| unsearched(i as u32)));
    Ok((out, valid))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
}

/// Serializes entries (in identity order) as a fixture.
pub fn encode(entries: &[FixtureEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * FIXTURE_ENTRY_LEN);
    out.extend_from_slice(&FIXTURE_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.candidate.to_be_bytes());
        out.extend_from_slice(&entry.address.to_bytes());
    }
    out
}

/// Reads a fixture's entries.
pub fn decode(fixture: &[u8]) -> Result<Vec<FixtureEntry>, FixtureError> {
    let (magic, rest) = fixture
        .split_at_checked(FIXTURE_MAGIC.len())
        .ok_or(FixtureError::BadMagic)?;
    if magic != FIXTURE_MAGIC {
        return Err(FixtureError::BadMagic);
    }
    let (count, entries) = rest.split_at_checked(4).ok_or(FixtureError::BadLength {
        held: 0,
        expected: 4,
    })?;
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let expected = count.saturating_mul(FIXTURE_ENTRY_LEN);
    if entries.len() != expected {
        return Err(FixtureError::BadLength {
            held: entries.len(),
            expected,
        });
    }
    Ok(entries
        .chunks_exact(FIXTURE_ENTRY_LEN)
        .map(|e| FixtureEntry {
            candidate: u16::from_be_bytes([e[0], e[1]]),
            address: Address::from_bytes(&e[2..]),
        })
        .collect())
}

/// The first `count` identities of a fixture, with their secrets.
pub fn identities_from_fixture(
    fixture: &[u8],
    count: usize,
) -> Result<Vec<Identity>, FixtureError> {
    let entries = decode(fixture)?;
    if entries.len() < count {
        return Err(FixtureError::TooFew {
            held: entries.len(),
            wanted: count,
        });
    }
    entries
        .iter()
        .take(count)
        .enumerate()
        .map(|(i, &entry)| {
            if entry.address.is_reserved() {
                return Err(FixtureError::ReservedAddress(i));
            }
            rebuild(i as u32, entry).ok_or(FixtureError::Unbuildable(i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searched_identities_rebuild_and_validate() {
        let mut scratch = MemoryHardScratch::new();
        let entries: Vec<FixtureEntry> = (0..3)
            .map(|i| search(i, &mut scratch).expect("a candidate wins"))
            .collect();
        let fixture = encode(&entries);
        assert_eq!(fixture.len(), HEADER_LEN + 3 * FIXTURE_ENTRY_LEN);
        assert_eq!(decode(&fixture), Ok(entries.clone()));
        let identities = identities_from_fixture(&fixture, 3).expect("rebuilds");
        for (identity, entry) in identities.iter().zip(&entries) {
            assert_eq!(identity.address(), entry.address);
            assert!(identity.has_secret());
            assert!(identity.locally_validate_with(&mut scratch));
        }
    }

    #[test]
    fn a_wrong_address_rebuilds_but_does_not_validate() {
        let mut scratch = MemoryHardScratch::new();
        let mut entry = search(7, &mut scratch).expect("a candidate wins");
        entry.address = Address::from_u64(entry.address.to_u64() ^ 1);
        let identity = rebuild(7, entry).expect("builds");
        assert!(!identity.locally_validate_with(&mut scratch));
    }

    #[test]
    fn damaged_fixtures_are_refused() {
        let entry = FixtureEntry {
            candidate: 3,
            address: Address::from_u64(0x01_0203_0405),
        };
        let fixture = encode(&[entry, entry]);
        assert_eq!(decode(&fixture[..5]), Err(FixtureError::BadMagic));
        assert!(matches!(
            decode(&fixture[..fixture.len() - 1]),
            Err(FixtureError::BadLength { .. })
        ));
        let mut bad = fixture.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad), Err(FixtureError::BadMagic));
        assert_eq!(
            identities_from_fixture(&fixture, 3).err(),
            Some(FixtureError::TooFew { held: 2, wanted: 3 })
        );
        let reserved = encode(&[FixtureEntry {
            candidate: 0,
            address: Address::NIL,
        }]);
        assert_eq!(
            identities_from_fixture(&reserved, 1).err(),
            Some(FixtureError::ReservedAddress(0))
        );
    }
}
