//! The packet header view (zt-vl1.md 3) and the protocol constants.

use super::verb::{Verb, VERB_FLAG_COMPRESSED, VERB_MASK};
use super::Error;
use crate::Address;

/// Protocol version we advertise in HELLO and OK(HELLO), as 1.14 does.
pub const PROTO_VERSION: u8 = 12;
/// HELLO / OK(HELLO) with a lower protocol version are dropped.
pub const PROTO_VERSION_MIN: u8 = 4;

/// The software version we advertise. We speak 1.14.1's protocol and say so: peers pick
/// ciphers and features by this triple (zt-vl1.md 4.0, 9.1). This is the one place to change.
pub const SOFTWARE_VERSION: SoftwareVersion = SoftwareVersion {
    major: VERSION_MAJOR,
    minor: VERSION_MINOR,
    revision: VERSION_REVISION,
};
pub const VERSION_MAJOR: u8 = 1;
pub const VERSION_MINOR: u8 = 14;
pub const VERSION_REVISION: u16 = 1;

/// Header (27 bytes) plus the verb byte: the shortest datagram that is a packet.
pub const MIN_PACKET_LEN: usize = 28;
/// Largest assembled packet 1.14 can hold (7 × 1432).
pub const MAX_PACKET_LEN: usize = 10024;
/// Largest payload after the verb byte (also the bound for decompression).
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - MIN_PACKET_LEN;
/// Largest UDP payload sent unless a path is configured otherwise.
pub const DEFAULT_PHYSICAL_MTU: usize = 1432;
/// Range a configured per-path MTU is clamped to.
pub const MIN_PHYSICAL_MTU: usize = 1400;
pub const MAX_PHYSICAL_MTU: usize = 10324;

/// Flags byte: deprecated "encrypted" bit, set exactly when the cipher is 1.
pub const FLAG_ENCRYPTED: u8 = 0x80;
/// Flags byte: this packet is the head of a fragmented series. Authenticated, so it must be set
/// before armoring.
pub const FLAG_FRAGMENTED: u8 = 0x40;
/// Flags byte: the cipher suite bits.
pub const FLAGS_CIPHER_MASK: u8 = 0x38;
/// Flags byte: the hop counter, the only field relays change (never authenticated).
pub const FLAGS_HOPS_MASK: u8 = 0x07;
/// Hop counter maximum (3 bits).
pub const MAX_HOPS: u8 = 7;

/// Cipher suite 0: Poly1305 MAC, no encryption (HELLO).
pub const CIPHER_POLY1305_NONE: u8 = 0;
/// Cipher suite 1: Salsa20/12 + Poly1305.
pub const CIPHER_POLY1305_SALSA2012: u8 = 1;
/// Cipher suite 2: trusted path, no crypto; the MAC field holds the trusted path ID.
pub const CIPHER_TRUSTED_PATH: u8 = 2;
/// Cipher suite 3: AES-256-GMAC-SIV.
pub const CIPHER_AES_GMAC_SIV: u8 = 3;

/// A software version triple as carried in HELLO and OK(HELLO).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SoftwareVersion {
    pub major: u8,
    pub minor: u8,
    pub revision: u16,
}

/// Byte ranges of the header fields (`ZT_PACKET_IDX_*`).
pub mod field {
    use core::ops::{Range, RangeFrom};

    pub const IV: Range<usize> = 0..8;
    pub const DESTINATION: Range<usize> = 8..13;
    pub const SOURCE: Range<usize> = 13..18;
    pub const FLAGS: usize = 18;
    pub const MAC: Range<usize> = 19..27;
    pub const VERB: usize = 27;
    pub const PAYLOAD: RangeFrom<usize> = 28..;
}

/// A view over a packet: a reassembled packet or the head datagram of a fragmented one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is shorter than 28 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a received buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Accepts 28..=10024 bytes: after this no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_PACKET_LEN {
            Err(Error::Truncated("packet header"))
        } else if len > MAX_PACKET_LEN {
            Err(Error::TooLong {
                what: "packet",
                max: MAX_PACKET_LEN,
            })
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The packet ID as a big-endian integer (reassembly and reply matching use this).
    pub fn packet_id(&self) -> u64 {
        u64::from_be_bytes(self.packet_id_bytes())
    }

    /// The packet ID / IV bytes exactly as on the wire.
    pub fn packet_id_bytes(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        id
    }

    pub fn destination(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn source(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The whole flags byte (`FFCCCHHH`).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The cipher suite, 0..=7 (only 0..=3 are defined).
    pub fn cipher(&self) -> u8 {
        (self.flags() & FLAGS_CIPHER_MASK) >> 3
    }

    pub fn hops(&self) -> u8 {
        self.flags() & FLAGS_HOPS_MASK
    }

    /// Whether this is the head of a fragmented series.
    pub fn is_fragmented(&self) -> bool {
        self.flags() & FLAG_FRAGMENTED != 0
    }

    pub fn mac(&self) -> [u8; 8] {
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&self.buffer.as_ref()[field::MAC]);
        mac
    }

    /// The MAC field read as a big-endian trusted path ID (cipher 2).
    pub fn trusted_path_id(&self) -> u64 {
        u64::from_be_bytes(self.mac())
    }

    /// Byte 27 unmasked (verb, compression flag and the unused bits). Only meaningful in the
    /// clear, i.e. after dearmoring ciphers 1 and 3.
    pub fn raw_verb(&self) -> u8 {
        self.buffer.as_ref()[field::VERB]
    }

    pub fn verb(&self) -> Verb {
        Verb::from_verb_byte(self.raw_verb())
    }

    pub fn is_compressed(&self) -> bool {
        self.raw_verb() & VERB_FLAG_COMPRESSED != 0
    }

    /// Bytes 28.. (the verb payload).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_packet_id(&mut self, id: u64) {
        self.set_packet_id_bytes(id.to_be_bytes());
    }

    pub fn set_packet_id_bytes(&mut self, id: [u8; 8]) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&id);
    }

    pub fn set_destination(&mut self, address: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&address.to_bytes());
    }

    pub fn set_source(&mut self, address: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&address.to_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the cipher bits, and the deprecated encrypted flag exactly when `cipher` is 1, as
    /// 1.14's `setCipher` does (that flag is authenticated, so peers must agree on it).
    pub fn set_cipher(&mut self, cipher: u8) {
        let mut flags = self.flags() & !(FLAGS_CIPHER_MASK | FLAG_ENCRYPTED);
        flags |= (cipher << 3) & FLAGS_CIPHER_MASK;
        if cipher == CIPHER_POLY1305_SALSA2012 {
            flags |= FLAG_ENCRYPTED;
        }
        self.set_flags(flags);
    }

    /// Sets the hop counter (taken modulo 8).
    pub fn set_hops(&mut self, hops: u8) {
        let flags = (self.flags() & !FLAGS_HOPS_MASK) | (hops & FLAGS_HOPS_MASK);
        self.set_flags(flags);
    }

    /// Adds one hop, wrapping at 8 like 1.14's `incrementHops`. Relays check the limit first.
    pub fn increment_hops(&mut self) {
        self.set_hops(self.hops().wrapping_add(1));
    }

    pub fn set_fragmented(&mut self, fragmented: bool) {
        let flags = if fragmented {
            self.flags() | FLAG_FRAGMENTED
        } else {
            self.flags() & !FLAG_FRAGMENTED
        };
        self.set_flags(flags);
    }

    pub fn set_mac(&mut self, mac: [u8; 8]) {
        self.buffer.as_mut()[field::MAC].copy_from_slice(&mac);
    }

    pub fn set_raw_verb(&mut self, byte: u8) {
        self.buffer.as_mut()[field::VERB] = byte;
    }

    /// Sets the verb, keeping the compression flag as it is.
    pub fn set_verb(&mut self, verb: Verb) {
        let byte = (self.raw_verb() & VERB_FLAG_COMPRESSED) | (u8::from(verb) & VERB_MASK);
        self.set_raw_verb(byte);
    }

    pub fn set_compressed(&mut self, compressed: bool) {
        let byte = if compressed {
            self.raw_verb() | VERB_FLAG_COMPRESSED
        } else {
            self.raw_verb() & !VERB_FLAG_COMPRESSED
        };
        self.set_raw_verb(byte);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Starts a packet: appends the 28-byte header with flags 0 (cipher 0, hops 0, not
/// fragmented), a zero MAC and `verb`. The verb payload is appended after it, then the packet
/// is compressed (optionally) and armored, which fills in the cipher and MAC.
pub fn emit_header(
    out: &mut Vec<u8>,
    packet_id: [u8; 8],
    destination: Address,
    source: Address,
    verb: Verb,
) {
    out.extend_from_slice(&packet_id);
    out.extend_from_slice(&destination.to_bytes());
    out.extend_from_slice(&source.to_bytes());
    out.push(0);
    out.extend_from_slice(&[0u8; 8]);
    out.push(u8::from(verb) & VERB_MASK);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The plaintext ECHO A→B of zt-vl1.md A.2 (before armoring; cipher bits not yet set).
    const ECHO_PLAIN: &str = "0f0e0d0c0b0a09086d09ce149c8e4df28b720000000000000000000870696e6721";

    #[test]
    fn reads_header_fields() {
        let bytes = hex_decode(ECHO_PLAIN);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.packet_id(), 0x0f0e0d0c0b0a0908);
        assert_eq!(p.destination().to_string(), "6d09ce149c");
        assert_eq!(p.source().to_string(), "8e4df28b72");
        assert_eq!(p.cipher(), 0);
        assert_eq!(p.hops(), 0);
        assert!(!p.is_fragmented());
        assert_eq!(p.verb(), Verb::Echo);
        assert!(!p.is_compressed());
        assert_eq!(p.payload(), b"ping!");
    }

    #[test]
    fn emit_header_then_set_fields() {
        let mut out = vec![];
        emit_header(
            &mut out,
            [0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08],
            "6d09ce149c".parse().unwrap(),
            "8e4df28b72".parse().unwrap(),
            Verb::Echo,
        );
        out.extend_from_slice(b"ping!");
        assert_eq!(out, hex_decode(ECHO_PLAIN));

        let mut p = Packet::new_unchecked(&mut out[..]);
        p.set_cipher(CIPHER_AES_GMAC_SIV);
        assert_eq!(p.flags(), 0x18);
        p.set_cipher(CIPHER_POLY1305_SALSA2012);
        assert_eq!(p.flags(), 0x88);
        p.set_fragmented(true);
        assert_eq!(p.flags(), 0xc8);
        p.set_hops(7);
        p.increment_hops();
        assert_eq!(p.hops(), 0);
        p.set_hops(1);
        assert_eq!(p.flags(), 0xc9);
        p.set_compressed(true);
        p.set_verb(Verb::UserMessage);
        assert_eq!(p.raw_verb(), 0x94);
        assert!(p.is_compressed());
        p.set_mac([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.trusted_path_id(), 0x0102030405060708);
    }

    #[test]
    fn check_len_bounds() {
        assert!(Packet::new_checked(&[0u8; 27][..]).is_err());
        assert!(Packet::new_checked(&[0u8; 28][..]).is_ok());
        assert!(Packet::new_checked(&vec![0u8; MAX_PACKET_LEN][..]).is_ok());
        assert!(Packet::new_checked(&vec![0u8; MAX_PACKET_LEN + 1][..]).is_err());
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
}
