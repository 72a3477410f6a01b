//! Fragments (zt-vl1.md 5): the 16-byte fragment header view, receive-side classification of
//! datagrams, and splitting an armored packet into MTU-sized datagrams.

use super::packet::{Packet, MAX_PACKET_LEN, MIN_PACKET_LEN};
use super::Error;
use crate::Address;

/// Bytes of a fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 16;
/// Byte 13 of every fragment (a source address can never start with it).
pub const FRAGMENT_INDICATOR: u8 = 0xff;
/// Most pieces (head included) 1.14 will reassemble.
pub const MAX_FRAGMENTS: usize = 7;
/// Length of a legacy LAN beacon datagram (zt-vl1.md 9.10).
pub const BEACON_LEN: usize = 13;

/// Byte ranges of the fragment header fields (`ZT_PACKET_FRAGMENT_IDX_*`).
pub mod field {
    use core::ops::{Range, RangeFrom};

    pub const PACKET_ID: Range<usize> = 0..8;
    pub const DESTINATION: Range<usize> = 8..13;
    pub const INDICATOR: usize = 13;
    /// High nibble: total pieces including the head; low nibble: this fragment's number.
    pub const COUNTS: usize = 14;
    pub const HOPS: usize = 15;
    pub const PAYLOAD: RangeFrom<usize> = 16..;
}

/// What a received UDP datagram is, by 1.14's dispatch rule (zt-vl1.md 4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    /// Exactly 13 bytes: a legacy LAN beacon.
    Beacon,
    /// More than 16 bytes with 0xff at byte 13.
    Fragment,
    /// At least 28 bytes otherwise: a packet (possibly the head of a fragmented one).
    Packet,
    /// Anything else: dropped.
    Runt,
}

/// Classifies a received datagram as 1.14's `Switch::onRemotePacket` does.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    if datagram.len() == BEACON_LEN {
        DatagramKind::Beacon
    } else if is_fragment(datagram) {
        DatagramKind::Fragment
    } else if datagram.len() >= MIN_PACKET_LEN {
        DatagramKind::Packet
    } else {
        DatagramKind::Runt
    }
}

/// The receive dispatch rule for fragments: longer than 16 bytes and byte 13 is 0xff.
pub fn is_fragment(datagram: &[u8]) -> bool {
    datagram.len() > FRAGMENT_HEADER_LEN && datagram[field::INDICATOR] == FRAGMENT_INDICATOR
}

/// A view over one fragment datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Fragment<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is shorter than 16 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a received datagram after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let fragment = Self::new_unchecked(buffer);
        fragment.check_len()?;
        Ok(fragment)
    }

    /// Accepts what [`is_fragment`] accepts, up to 10024 bytes: after this no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        if bytes.len() <= FRAGMENT_HEADER_LEN {
            Err(Error::Truncated("fragment header"))
        } else if bytes.len() > MAX_PACKET_LEN {
            Err(Error::TooLong {
                what: "fragment",
                max: MAX_PACKET_LEN,
            })
        } else if bytes[field::INDICATOR] != FRAGMENT_INDICATOR {
            Err(Error::NotAFragment)
        } else {
            Ok(())
        }
    }

    /// Whether 1.14 would accept the counters of a fragment addressed to it:
    /// `1 <= number < 7`, `1 < total <= 7`. We additionally require `number < total`.
    pub fn check_counters(&self) -> Result<(), Error> {
        let (number, total) = (self.fragment_number(), self.total_fragments());
        let ok = total > 1 && usize::from(total) <= MAX_FRAGMENTS && number >= 1 && number < total;
        if ok {
            Ok(())
        } else {
            Err(Error::FragmentCounters { number, total })
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// ID of the packet this fragment belongs to (the head's on-wire ID), big-endian.
    pub fn packet_id(&self) -> u64 {
        u64::from_be_bytes(self.packet_id_bytes())
    }

    pub fn packet_id_bytes(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.buffer.as_ref()[field::PACKET_ID]);
        id
    }

    pub fn destination(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Total pieces of the packet, head included (high nibble of byte 14).
    pub fn total_fragments(&self) -> u8 {
        self.buffer.as_ref()[field::COUNTS] >> 4
    }

    /// This fragment's number, 1.. (the head is number 0; low nibble of byte 14).
    pub fn fragment_number(&self) -> u8 {
        self.buffer.as_ref()[field::COUNTS] & 0x0f
    }

    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS] & 0x07
    }

    /// The fragment's share of the packet (bytes 16..).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fragment<T> {
    pub fn set_packet_id_bytes(&mut self, id: [u8; 8]) {
        self.buffer.as_mut()[field::PACKET_ID].copy_from_slice(&id);
    }

    pub fn set_destination(&mut self, address: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&address.to_bytes());
    }

    pub fn set_indicator(&mut self) {
        self.buffer.as_mut()[field::INDICATOR] = FRAGMENT_INDICATOR;
    }

    /// Sets byte 14 from `total` and `number` (each taken modulo 16).
    pub fn set_counters(&mut self, number: u8, total: u8) {
        self.buffer.as_mut()[field::COUNTS] = (total << 4) | (number & 0x0f);
    }

    /// Sets the hop count (modulo 8); the upper five bits of byte 15 are zero.
    pub fn set_hops(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOPS] = hops & 0x07;
    }

    /// Adds one hop, wrapping at 8 as 1.14 does. Relays check the limit first.
    pub fn increment_hops(&mut self) {
        self.set_hops(self.hops().wrapping_add(1));
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Why an armored packet could not be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    #[error("packet of {0} bytes is not between 28 and 10024 bytes")]
    PacketLength(usize),
    #[error("MTU {0} is below the 28-byte packet minimum")]
    MtuTooSmall(usize),
    #[error("packet needs fragmenting but its fragmented flag was not set before armoring")]
    FragmentedFlagNotSet,
    #[error("packet of {len} bytes needs {pieces} pieces at MTU {mtu}; at most 7 are accepted")]
    TooManyPieces {
        len: usize,
        mtu: usize,
        pieces: usize,
    },
}

/// Whether a packet of `len` bytes must be fragmented for `mtu`. If so, set the fragmented
/// flag ([`Packet::set_fragmented`]) **before** armoring: the flag is authenticated.
pub fn needs_fragmentation(len: usize, mtu: usize) -> bool {
    len > mtu
}

/// Splits an armored packet for `mtu` as 1.14's `Switch::_sendViaSpecificPath` does, calling
/// `emit` with each datagram in order: the head (bytes `[0..mtu)`), then fragments 1.. with
/// at most `mtu - 16` packet bytes each. A packet that fits is emitted whole. Returns the
/// number of datagrams.
pub fn split_with(
    packet: &[u8],
    mtu: usize,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, SplitError> {
    let len = packet.len();
    if !(MIN_PACKET_LEN..=MAX_PACKET_LEN).contains(&len) {
        return Err(SplitError::PacketLength(len));
    }
    if mtu < MIN_PACKET_LEN {
        return Err(SplitError::MtuTooSmall(mtu));
    }
    if !needs_fragmentation(len, mtu) {
        emit(packet);
        return Ok(1);
    }
    if !Packet::new_unchecked(packet).is_fragmented() {
        return Err(SplitError::FragmentedFlagNotSet);
    }
    let chunk = mtu - FRAGMENT_HEADER_LEN;
    let pieces = 1 + (len - mtu).div_ceil(chunk);
    if pieces > MAX_FRAGMENTS {
        return Err(SplitError::TooManyPieces { len, mtu, pieces });
    }

    emit(&packet[..mtu]);
    // Pieces are assembled on the stack, so splitting allocates nothing (the data path's
    // senders reuse their buffers). A piece is shorter than `mtu`, which is below `len`
    // here, so it fits.
    let mut datagram = [0u8; MAX_PACKET_LEN];
    for (index, data) in packet[mtu..].chunks(chunk).enumerate() {
        let datagram = &mut datagram[..FRAGMENT_HEADER_LEN + data.len()];
        datagram[..FRAGMENT_HEADER_LEN].copy_from_slice(&packet[..FRAGMENT_HEADER_LEN]);
        datagram[FRAGMENT_HEADER_LEN..].copy_from_slice(data);
        let mut fragment = Fragment::new_unchecked(&mut datagram[..]);
        fragment.set_indicator();
        // `pieces` and `index + 1` are at most 7: the casts cannot truncate.
        fragment.set_counters(index as u8 + 1, pieces as u8);
        fragment.set_hops(0);
        emit(datagram);
    }
    Ok(pieces)
}

/// [`split_with`], collecting the datagrams into `out` (appended).
pub fn split(packet: &[u8], mtu: usize, out: &mut Vec<Vec<u8>>) -> Result<usize, SplitError> {
    split_with(packet, mtu, |datagram| out.push(datagram.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet::DEFAULT_PHYSICAL_MTU;

    fn packet(len: usize, fragmented: bool) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p[13] = 0x12; // a source address never starts with 0xff
        Packet::new_unchecked(&mut p[..]).set_fragmented(fragmented);
        p
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&[0u8; 13]), DatagramKind::Beacon);
        let mut d = [0u8; 17];
        d[13] = 0xff;
        assert_eq!(classify(&d), DatagramKind::Fragment);
        assert_eq!(classify(&d[..16]), DatagramKind::Runt);
        assert_eq!(classify(&[0u8; 28]), DatagramKind::Packet);
        assert_eq!(classify(&[0u8; 27]), DatagramKind::Runt);
    }

    #[test]
    fn split_limits() {
        let fits = packet(DEFAULT_PHYSICAL_MTU, false);
        let mut out = vec![];
        assert_eq!(split(&fits, DEFAULT_PHYSICAL_MTU, &mut out), Ok(1));
        assert_eq!(out, [fits]);

        assert_eq!(
            split(&packet(2000, false), DEFAULT_PHYSICAL_MTU, &mut vec![]),
            Err(SplitError::FragmentedFlagNotSet)
        );
        // 1432 + 6 × 1416 = 9928 bytes fit in 7 pieces; one more byte does not.
        assert_eq!(
            split(&packet(9928, true), DEFAULT_PHYSICAL_MTU, &mut vec![]),
            Ok(7)
        );
        assert_eq!(
            split(&packet(9929, true), DEFAULT_PHYSICAL_MTU, &mut vec![]),
            Err(SplitError::TooManyPieces {
                len: 9929,
                mtu: 1432,
                pieces: 8
            })
        );
        assert!(split(&packet(27, false), 1432, &mut vec![]).is_err());
        assert!(split(&packet(100, true), 27, &mut vec![]).is_err());
    }

    #[test]
    fn fragment_counters() {
        let mut d = [0u8; 20];
        d[13] = 0xff;
        for (byte, ok) in [(0x31, true), (0x32, true), (0x30, false), (0x33, false)] {
            d[14] = byte;
            let f = Fragment::new_checked(&d[..]).unwrap();
            assert_eq!(f.check_counters().is_ok(), ok, "{byte:#x}");
        }
        for byte in [0x11, 0x81, 0x87, 0x08] {
            d[14] = byte;
            assert!(Fragment::new_checked(&d[..])
                .unwrap()
                .check_counters()
                .is_err());
        }
        d[13] = 0;
        assert_eq!(Fragment::new_checked(&d[..]), Err(Error::NotAFragment));
    }
}
