//! Packet armor and dearmor (zt-vl1 section 4): the per-peer key and the four cipher suites.
//!
//! Armor is applied to a whole, fully built (and possibly compressed) packet before
//! fragmentation; dearmor to a whole, reassembled packet. Everything works in place on the
//! packet bytes and nothing allocates.
//!
//! Header layout used here (zt-vl1 3.1): packet ID `[0..8)`, destination `[8..13)`, source
//! `[13..18)`, flags `[18]` (`FFCCCHHH`), MAC `[19..27)`, verb and payload `[27..)`.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes256Dec, Aes256Enc};
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use subtle::ConstantTimeEq;

use super::kbkdf_hmac_sha384;
use super::poly1305::poly1305;
use super::salsa::Salsa2012;
use super::{KBKDF_LABEL_AES_GMAC_SIV_K0, KBKDF_LABEL_AES_GMAC_SIV_K1};

/// Bytes of the per-peer symmetric key `K` (`ZT_SYMMETRIC_KEY_SIZE`).
pub const PEER_KEY_LEN: usize = 48;

/// Shortest packet that can be armored or dearmored: 27-byte header plus the verb byte.
pub const MIN_PACKET_LEN: usize = 28;

/// Packet header field offsets (zt-vl1 3.1).
mod field {
    use core::ops::Range;
    pub(super) const PACKET_ID: Range<usize> = 0..8;
    /// Destination, source and flags: what AES-GMAC-SIV authenticates as AAD.
    pub(super) const ADDRESSES_AND_FLAGS: Range<usize> = 8..19;
    pub(super) const FLAGS: usize = 18;
    pub(super) const MAC: Range<usize> = 19..27;
    /// Verb byte and payload: what is encrypted and MACed.
    pub(super) const ENVELOPE: usize = 27;
}

/// Legacy "encrypted" flag; the C++ sets it exactly when the cipher is 1.
const FLAG_ENCRYPTED: u8 = 0x80;
/// Head of a fragmented packet; authenticated, so it must be final before armor.
const FLAG_FRAGMENTED: u8 = 0x40;
/// Cipher suite bits of the flags byte.
const FLAGS_CIPHER_MASK: u8 = 0x38;
const FLAGS_CIPHER_SHIFT: u8 = 3;
/// Everything but the hop count: the part of the flags byte that is authenticated.
const FLAGS_AUTHENTICATED_MASK: u8 = 0xf8;

/// The cipher suite in bits 5..3 of the flags byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CipherSuite {
    /// Poly1305 MAC only, payload in clear (HELLO).
    Poly1305 = 0,
    /// Salsa20/12 encryption plus Poly1305 MAC.
    Salsa2012Poly1305 = 1,
    /// No crypto; the MAC field carries a trusted path ID.
    TrustedPath = 2,
    /// AES-256-GMAC-SIV.
    AesGmacSiv = 3,
}

impl CipherSuite {
    /// The suite named by a packet's flags byte (byte 18); `None` for the undefined 4..7.
    pub fn from_flags(flags: u8) -> Option<Self> {
        match (flags & FLAGS_CIPHER_MASK) >> FLAGS_CIPHER_SHIFT {
            0 => Some(Self::Poly1305),
            1 => Some(Self::Salsa2012Poly1305),
            2 => Some(Self::TrustedPath),
            3 => Some(Self::AesGmacSiv),
            _ => None,
        }
    }

    /// The suite number, 0..=3.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The suite as it sits in the flags byte (`number << 3`, e.g. 0x18 for AES-GMAC-SIV);
    /// the legacy 0x80 flag of cipher 1 is not included.
    pub fn bits(self) -> u8 {
        (self as u8) << FLAGS_CIPHER_SHIFT
    }
}

/// The 48-byte per-peer key `K` plus the expanded AES-256 keys `K0`/`K1` (KBKDF HMAC-SHA-384,
/// zt-vl1 2.2). Built once per peer; armor and dearmor then need no key setup.
#[derive(Clone)]
pub struct PeerKey {
    secret: [u8; PEER_KEY_LEN],
    /// `AES_K0`: encrypts the GMAC counter block `IV ‖ 0^31 ‖ 1`.
    gmac_aes: Aes256Enc,
    /// GHASH keyed with `H = AES_K0(0^128)`, cloned per packet.
    gmac_hash: GHash,
    /// `AES_K1` (encryption): builds the SIV block and runs CTR.
    siv_aes: Aes256Enc,
    /// `AES_K1` (decryption): recovers IV and tag from the SIV block on receive.
    siv_aes_dec: Aes256Dec,
}

impl core::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PeerKey { .. }")
    }
}

impl PeerKey {
    /// Expands `K` (normally the first 48 bytes of a C25519 agreement).
    pub fn from_secret(k: [u8; PEER_KEY_LEN]) -> Self {
        let k0 = kbkdf_hmac_sha384(&k, KBKDF_LABEL_AES_GMAC_SIV_K0);
        let k1 = kbkdf_hmac_sha384(&k, KBKDF_LABEL_AES_GMAC_SIV_K1);
        let gmac_aes = Aes256Enc::new(&aes_key(&k0));
        let mut h = aes::Block::default();
        gmac_aes.encrypt_block(&mut h);
        Self {
            secret: k,
            gmac_aes,
            gmac_hash: GHash::new(&h),
            siv_aes: Aes256Enc::new(&aes_key(&k1)),
            siv_aes_dec: Aes256Dec::new(&aes_key(&k1)),
        }
    }

    /// The 48-byte `K`.
    pub fn secret(&self) -> &[u8; PEER_KEY_LEN] {
        &self.secret
    }

    /// `K[0..32)`: the Salsa20/12 key of ciphers 0/1 (before mangling) and of `cryptField`.
    fn salsa_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.secret[..32]);
        key
    }
}

/// The AES-256 key in the first 32 bytes of a KBKDF output.
fn aes_key(derived: &[u8; 48]) -> aes::cipher::Key<Aes256Enc> {
    let mut key = [0u8; 32];
    key.copy_from_slice(&derived[..32]);
    key.into()
}

/// Why a packet failed to dearmor.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DearmorError {
    #[error("packet shorter than the 28-byte minimum")]
    TooShort,
    #[error("cipher suite {0} cannot be dearmored with a peer key")]
    UnsupportedCipher(u8),
    #[error("packet authentication failed")]
    MacMismatch,
}

/// Armors a fully built packet in place for `suite`.
///
/// Preconditions: the header is set, bytes `[0..8)` hold 8 fresh random bytes (the packet
/// ID, which is also the IV) and the fragmented flag is final. Sets the cipher bits (and 0x80
/// for cipher 1, clearing it otherwise), zeroes the hop count and writes the MAC. For
/// AES-GMAC-SIV the ID bytes `[0..8)` are then replaced by the first half of the SIV tag:
/// that on-wire ID is what an OK or ERROR will quote.
///
/// A packet shorter than 28 bytes is a caller bug: it trips a debug assertion and is left
/// unarmored in release builds (any receiver drops it).
///
/// # Panics
/// On [`CipherSuite::TrustedPath`], which needs a path ID: use [`armor_trusted`].
pub fn armor(packet: &mut [u8], key: &PeerKey, suite: CipherSuite) {
    debug_assert!(
        packet.len() >= MIN_PACKET_LEN,
        "armor of a {}-byte packet",
        packet.len()
    );
    if packet.len() < MIN_PACKET_LEN {
        return;
    }
    let flags = packet[field::FLAGS] & FLAG_FRAGMENTED;
    match suite {
        CipherSuite::Poly1305 => {
            packet[field::FLAGS] = flags | suite.bits();
            salsa_poly1305_armor(packet, key, false);
        }
        CipherSuite::Salsa2012Poly1305 => {
            packet[field::FLAGS] = flags | suite.bits() | FLAG_ENCRYPTED;
            salsa_poly1305_armor(packet, key, true);
        }
        CipherSuite::AesGmacSiv => {
            packet[field::FLAGS] = flags | suite.bits();
            gmac_siv_armor(packet, key);
        }
        CipherSuite::TrustedPath => panic!("armor(TrustedPath): use armor_trusted"),
    }
}

/// Verifies (and for ciphers 1 and 3 decrypts) a packet in place, using the cipher suite in
/// its flags byte. The hop count is ignored. Accepts suites 0, 1 and 3.
///
/// On success the header is left as received (the MAC field and, for cipher 3, the on-wire
/// ID are not restored). On error the packet is unchanged. Never panics.
pub fn dearmor(packet: &mut [u8], key: &PeerKey) -> Result<CipherSuite, DearmorError> {
    if packet.len() < MIN_PACKET_LEN {
        return Err(DearmorError::TooShort);
    }
    let flags = packet[field::FLAGS];
    match CipherSuite::from_flags(flags) {
        Some(CipherSuite::Poly1305) => {
            salsa_poly1305_dearmor(packet, key, false).map(|()| CipherSuite::Poly1305)
        }
        Some(CipherSuite::Salsa2012Poly1305) => {
            salsa_poly1305_dearmor(packet, key, true).map(|()| CipherSuite::Salsa2012Poly1305)
        }
        Some(CipherSuite::AesGmacSiv) => {
            gmac_siv_dearmor(packet, key).map(|()| CipherSuite::AesGmacSiv)
        }
        Some(CipherSuite::TrustedPath) | None => Err(DearmorError::UnsupportedCipher(
            (flags & FLAGS_CIPHER_MASK) >> FLAGS_CIPHER_SHIFT,
        )),
    }
}

/// HELLO's extra encryption (zt-vl1 4.5) of `packet[start..]`: Salsa20/12 keyed with the
/// unmangled `K[0..32)`, nonce = packet ID with the low 3 bits of byte 7 cleared, keystream
/// from byte 0. Its own inverse. Applied before armor on send and after dearmor on receive.
/// Does nothing if the packet has no full ID or `start` is past the end.
pub fn crypt_field(key: &PeerKey, packet: &mut [u8], start: usize) {
    if packet.len() < field::PACKET_ID.end || start >= packet.len() {
        return;
    }
    let mut nonce = packet_id(packet);
    nonce[7] &= 0xf8;
    Salsa2012::new(&key.salsa_key(), &nonce).apply_keystream(&mut packet[start..]);
}

/// Cipher 2 (trusted path, zt-vl1 4.6): sets cipher bits 2 (clearing 0x80 and the hop count)
/// and writes `trusted_path_id` big-endian into the MAC field. Nothing is encrypted.
/// Does nothing to a packet shorter than the 27-byte header (a caller bug, debug-asserted).
pub fn armor_trusted(packet: &mut [u8], trusted_path_id: u64) {
    debug_assert!(
        packet.len() >= MIN_PACKET_LEN,
        "armor of a {}-byte packet",
        packet.len()
    );
    if packet.len() < field::MAC.end {
        return;
    }
    packet[field::FLAGS] =
        (packet[field::FLAGS] & FLAG_FRAGMENTED) | CipherSuite::TrustedPath.bits();
    packet[field::MAC].copy_from_slice(&trusted_path_id.to_be_bytes());
}

/// The 8 ID bytes; callers have checked the length.
fn packet_id(packet: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&packet[field::PACKET_ID]);
    id
}

// ---- Ciphers 0 and 1 -------------------------------------------------------------------------

/// The per-packet Salsa20/12 stream of ciphers 0/1 (zt-vl1 4.2): key `K[0..32)` XORed with
/// ID, addresses, flags minus hops and the little-endian packet length; nonce = packet ID.
fn packet_salsa(packet: &[u8], key: &PeerKey) -> Salsa2012 {
    let mut mangled = key.salsa_key();
    for (k, p) in mangled.iter_mut().zip(&packet[..field::FLAGS]) {
        *k ^= p;
    }
    mangled[18] ^= packet[field::FLAGS] & FLAGS_AUTHENTICATED_MASK;
    let len = packet.len();
    mangled[19] ^= len as u8;
    mangled[20] ^= (len >> 8) as u8;
    Salsa2012::new(&mangled, &packet_id(packet))
}

/// The Poly1305 one-time key: the first half of keystream block 0 (the second half is
/// discarded). `salsa` must be at block 0 and is left at block 1, where the payload starts.
fn poly1305_one_time_key(salsa: &mut Salsa2012) -> [u8; 32] {
    let block0 = salsa.next_block();
    let mut one_time_key = [0u8; 32];
    one_time_key.copy_from_slice(&block0[..32]);
    one_time_key
}

/// The 8 bytes of the Poly1305 tag that go into the MAC field.
fn poly1305_mac(one_time_key: &[u8; 32], envelope: &[u8]) -> [u8; 8] {
    let tag = poly1305(one_time_key, envelope);
    let mut mac = [0u8; 8];
    mac.copy_from_slice(&tag[..8]);
    mac
}

fn salsa_poly1305_armor(packet: &mut [u8], key: &PeerKey, encrypt: bool) {
    let mut salsa = packet_salsa(packet, key);
    let one_time_key = poly1305_one_time_key(&mut salsa);
    if encrypt {
        salsa.apply_keystream(&mut packet[field::ENVELOPE..]);
    }
    // The MAC covers the envelope as sent (ciphertext for cipher 1).
    let mac = poly1305_mac(&one_time_key, &packet[field::ENVELOPE..]);
    packet[field::MAC].copy_from_slice(&mac);
}

fn salsa_poly1305_dearmor(
    packet: &mut [u8],
    key: &PeerKey,
    decrypt: bool,
) -> Result<(), DearmorError> {
    let mut salsa = packet_salsa(packet, key);
    let one_time_key = poly1305_one_time_key(&mut salsa);
    let mac = poly1305_mac(&one_time_key, &packet[field::ENVELOPE..]);
    if !bool::from(mac.ct_eq(&packet[field::MAC])) {
        return Err(DearmorError::MacMismatch);
    }
    if decrypt {
        salsa.apply_keystream(&mut packet[field::ENVELOPE..]);
    }
    Ok(())
}

// ---- Cipher 3: AES-GMAC-SIV ------------------------------------------------------------------

type SivCtr<'a> = ctr::CtrCore<&'a Aes256Enc, ctr::flavors::Ctr32BE>;

/// `T[0..8) XOR T[8..16)` where `T` is AES-256-GMAC under `K0` with the 96-bit IV
/// `iv ‖ 0^32` over `dest ‖ src ‖ (flags & 0xF8) ‖ 0^40 ‖ plaintext` (zt-vl1 4.4 step 4),
/// computed without concatenating: the first 16 AAD bytes are exactly one GHASH block.
fn gmac_tag64(key: &PeerKey, iv: &[u8; 8], packet: &[u8]) -> [u8; 8] {
    let mut header = aes::Block::default();
    header[..11].copy_from_slice(&packet[field::ADDRESSES_AND_FLAGS]);
    header[10] &= FLAGS_AUTHENTICATED_MASK;
    let plaintext = &packet[field::ENVELOPE..];

    let mut ghash = key.gmac_hash.clone();
    ghash.update(&[header]);
    ghash.update_padded(plaintext);
    // GCM length block: AAD bits, then 0 bits of ciphertext.
    let aad_bits = ((16 + plaintext.len()) as u64).wrapping_mul(8);
    let mut lengths = aes::Block::default();
    lengths[..8].copy_from_slice(&aad_bits.to_be_bytes());
    ghash.update(&[lengths]);
    let hash = ghash.finalize();

    let mut counter0 = aes::Block::default();
    counter0[..8].copy_from_slice(iv);
    counter0[15] = 1;
    key.gmac_aes.encrypt_block(&mut counter0);

    let mut tag64 = [0u8; 8];
    for (i, t) in tag64.iter_mut().enumerate() {
        *t = (hash[i] ^ counter0[i]) ^ (hash[i + 8] ^ counter0[i + 8]);
    }
    tag64
}

/// AES-256-CTR under `K1` with the SIV block as IV, its counter MSB cleared so the 32-bit
/// counter cannot wrap within a packet.
fn siv_ctr_apply(key: &PeerKey, siv: &aes::Block, data: &mut [u8]) {
    let mut iv = *siv;
    iv[12] &= 0x7f;
    let ctr = SivCtr::inner_iv_init(&key.siv_aes, &iv);
    ctr::cipher::StreamCipherCoreWrapper::from_core(ctr).apply_keystream(data);
}

fn gmac_siv_armor(packet: &mut [u8], key: &PeerKey) {
    let iv = packet_id(packet);
    let tag64 = gmac_tag64(key, &iv, packet);
    let mut siv = aes::Block::default();
    siv[..8].copy_from_slice(&iv);
    siv[8..].copy_from_slice(&tag64);
    key.siv_aes.encrypt_block(&mut siv);
    siv_ctr_apply(key, &siv, &mut packet[field::ENVELOPE..]);
    packet[field::PACKET_ID].copy_from_slice(&siv[..8]);
    packet[field::MAC].copy_from_slice(&siv[8..]);
}

fn gmac_siv_dearmor(packet: &mut [u8], key: &PeerKey) -> Result<(), DearmorError> {
    let mut siv = aes::Block::default();
    siv[..8].copy_from_slice(&packet[field::PACKET_ID]);
    siv[8..].copy_from_slice(&packet[field::MAC]);
    siv_ctr_apply(key, &siv, &mut packet[field::ENVELOPE..]);

    let mut opened = siv;
    key.siv_aes_dec.decrypt_block(&mut opened);
    let mut iv = [0u8; 8];
    iv.copy_from_slice(&opened[..8]);
    let expected = gmac_tag64(key, &iv, packet);
    if bool::from(expected.ct_eq(&opened[8..])) {
        Ok(())
    } else {
        // Put the ciphertext back so a failed packet is left as it came.
        siv_ctr_apply(key, &siv, &mut packet[field::ENVELOPE..]);
        Err(DearmorError::MacMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PeerKey {
        PeerKey::from_secret([0x5a; PEER_KEY_LEN])
    }

    #[test]
    fn cipher_suite_flags() {
        assert_eq!(
            CipherSuite::from_flags(0x88),
            Some(CipherSuite::Salsa2012Poly1305)
        );
        assert_eq!(CipherSuite::from_flags(0x1f), Some(CipherSuite::AesGmacSiv));
        assert_eq!(CipherSuite::from_flags(0x20), None);
        assert_eq!(CipherSuite::AesGmacSiv.bits(), 0x18);
        assert_eq!(CipherSuite::TrustedPath.number(), 2);
    }

    #[test]
    fn dearmor_never_panics_on_short_or_garbage_input() {
        let key = key();
        for len in 0..MIN_PACKET_LEN {
            let mut p = vec![0xa5u8; len];
            assert_eq!(dearmor(&mut p, &key), Err(DearmorError::TooShort));
        }
        // Every flags value over a range of lengths, garbage contents: must not panic and
        // must not authenticate.
        let mut seed = 0x1234_5678_u32;
        for len in MIN_PACKET_LEN..200 {
            for flags in 0..=255u8 {
                let mut p: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                p[18] = flags;
                let before = p.clone();
                let r = dearmor(&mut p, &key);
                match (flags >> 3) & 7 {
                    0 | 1 | 3 => assert_eq!(r, Err(DearmorError::MacMismatch)),
                    c => assert_eq!(r, Err(DearmorError::UnsupportedCipher(c))),
                }
                assert_eq!(p, before, "failed dearmor must leave the packet unchanged");
            }
        }
    }

    #[test]
    fn round_trip_all_suites_and_lengths() {
        let key = key();
        for suite in [
            CipherSuite::Poly1305,
            CipherSuite::Salsa2012Poly1305,
            CipherSuite::AesGmacSiv,
        ] {
            for len in [MIN_PACKET_LEN, 29, 63, 64, 91, 92, 93, 1432, 3000] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let mut p = plain.clone();
                p[18] = 0x47; // fragmented + garbage hops/cipher: armor must fix up the rest
                armor(&mut p, &key, suite);
                assert_eq!(p[18] & 0x07, 0);
                assert_eq!(p[18] & 0x40, 0x40);
                assert_eq!(CipherSuite::from_flags(p[18]), Some(suite));
                p[18] |= 0x05; // hops are not authenticated
                assert_eq!(dearmor(&mut p, &key), Ok(suite));
                assert_eq!(p[27..], plain[27..]);
                assert_eq!(p[8..18], plain[8..18]);
            }
        }
    }

    #[test]
    fn tampering_fails() {
        let key = key();
        for suite in [
            CipherSuite::Poly1305,
            CipherSuite::Salsa2012Poly1305,
            CipherSuite::AesGmacSiv,
        ] {
            let mut armored: Vec<u8> = (0..100u8).collect();
            armored[18] = 0;
            armor(&mut armored, &key, suite);
            for i in 0..armored.len() {
                if i == 18 {
                    continue;
                }
                let mut p = armored.clone();
                p[i] ^= 0x01;
                assert_eq!(
                    dearmor(&mut p, &key),
                    Err(DearmorError::MacMismatch),
                    "{suite:?} byte {i}"
                );
            }
            // Flipping the fragmented flag or truncating also fails.
            let mut p = armored.clone();
            p[18] ^= FLAG_FRAGMENTED;
            assert_eq!(dearmor(&mut p, &key), Err(DearmorError::MacMismatch));
            let mut p = armored[..99].to_vec();
            assert_eq!(dearmor(&mut p, &key), Err(DearmorError::MacMismatch));
            // A different key fails.
            let mut p = armored.clone();
            assert_eq!(
                dearmor(&mut p, &PeerKey::from_secret([0x5b; PEER_KEY_LEN])),
                Err(DearmorError::MacMismatch)
            );
        }
    }

    #[test]
    fn trusted_path_sets_bits_and_id() {
        let mut p = [0u8; 40];
        p[18] = 0xc7;
        armor_trusted(&mut p, 0x0102_0304_0506_0708);
        assert_eq!(p[18], 0x50);
        assert_eq!(p[19..27], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            dearmor(&mut p, &key()),
            Err(DearmorError::UnsupportedCipher(2))
        );
    }

    #[test]
    fn crypt_field_is_involutive_and_tolerates_bad_offsets() {
        let key = key();
        let mut p: Vec<u8> = (0..80u8).collect();
        let orig = p.clone();
        crypt_field(&key, &mut p, 40);
        assert_eq!(p[..40], orig[..40]);
        assert_ne!(p[40..], orig[40..]);
        crypt_field(&key, &mut p, 40);
        assert_eq!(p, orig);
        crypt_field(&key, &mut p, 80);
        crypt_field(&key, &mut p, 1000);
        crypt_field(&key, &mut p[..5], 0);
        assert_eq!(p, orig);

        // The low 3 bits of ID byte 7 are masked out of the nonce.
        let mut q = orig.clone();
        q[7] ^= 0x07;
        crypt_field(&key, &mut p, 8);
        crypt_field(&key, &mut q, 8);
        assert_eq!(p[8..], q[8..]);
        q[7] ^= 0x08;
        crypt_field(&key, &mut q, 8);
        crypt_field(&key, &mut q, 8);
        let mut r = orig.clone();
        r[7] ^= 0x0f;
        crypt_field(&key, &mut r, 8);
        assert_ne!(p[8..], r[8..]);
    }
}
