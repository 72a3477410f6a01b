//! Reassembly of fragmented packets (zt-vl1.md 5.3).
//!
//! Like 1.14 (`Switch::onRemotePacket`): a ring of 32 entries keyed by packet ID; the head
//! and fragments may come in any order; the total is learned from any fragment (the latest
//! one wins); duplicates are ignored; a complete packet is the head followed by the fragment
//! payloads in number order. When no entry matches, the next ring slot is overwritten.
//!
//! Ours, not 1.14's:
//! - Entries older than [`Reassembler::max_age`] (default [`DEFAULT_MAX_AGE`]) count as
//!   absent and are overwritten; 1.14 only ever overwrites on wrap-around.
//! - A fragment must have `number < total` (1.14 only checks `number < 7`), and an assembly
//!   longer than 10024 bytes is dropped here instead of overflowing a buffer and throwing.
//! - A completed entry is freed at once; the caller parks packets that wait for a WHOIS.

use super::fragment::{Fragment, MAX_FRAGMENTS};
use super::packet::{Packet, MAX_PACKET_LEN};
use crate::time::{Millis, Timestamp};

/// Entries in the ring (`ZT_RX_QUEUE_SIZE`).
pub const RING_SLOTS: usize = 32;

/// How long an incomplete reassembly is kept. Pieces of one packet are sent back to back, so a
/// few seconds is generous; this matches 1.14's 5 s receive-queue timeout.
pub const DEFAULT_MAX_AGE: Millis = Millis(5000);

#[derive(Clone, Debug, Default)]
struct Entry {
    /// `None` when the slot is free.
    packet_id: Option<u64>,
    created: Timestamp,
    head: Option<Vec<u8>>,
    /// Payloads (bytes 16..) of fragments 1..=6, at index `number - 1`.
    fragments: [Option<Vec<u8>>; MAX_FRAGMENTS - 1],
    /// Total pieces, head included, as told by the latest fragment; 0 until one arrives.
    total: u8,
}

impl Entry {
    fn reset(&mut self, packet_id: u64, now: Timestamp) {
        *self = Self {
            packet_id: Some(packet_id),
            created: now,
            ..Self::default()
        };
    }

    /// The assembled packet, if the head and every fragment 1..total are here.
    fn assemble(&self) -> Option<Vec<u8>> {
        let head = self.head.as_ref()?;
        if self.total < 2 {
            return None;
        }
        let fragments = &self.fragments[..usize::from(self.total) - 1];
        let mut len = head.len();
        for fragment in fragments {
            len += fragment.as_ref()?.len();
        }
        if len > MAX_PACKET_LEN {
            return None;
        }
        let mut packet = Vec::with_capacity(len);
        packet.extend_from_slice(head);
        for fragment in fragments.iter().flatten() {
            packet.extend_from_slice(fragment);
        }
        Some(packet)
    }
}

/// Reassembles fragmented packets addressed to this node. Feed it heads (packets whose
/// fragmented flag is set) and fragments; each call returns the whole packet once complete.
#[derive(Clone, Debug)]
pub struct Reassembler {
    slots: Vec<Entry>,
    next_slot: usize,
    max_age: Millis,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    pub fn new() -> Self {
        Self::with_max_age(DEFAULT_MAX_AGE)
    }

    /// A reassembler that forgets incomplete packets after `max_age`.
    pub fn with_max_age(max_age: Millis) -> Self {
        Self {
            slots: vec![Entry::default(); RING_SLOTS],
            next_slot: 0,
            max_age,
        }
    }

    pub fn max_age(&self) -> Millis {
        self.max_age
    }

    /// Takes the head of a fragmented packet (a 28..=10024-byte datagram with the fragmented
    /// flag). Anything else is ignored. Returns the packet if this completed it.
    pub fn handle_head(&mut self, now: Timestamp, datagram: &[u8]) -> Option<Vec<u8>> {
        let head = Packet::new_checked(datagram).ok()?;
        if !head.is_fragmented() {
            return None;
        }
        let slot = self.find_or_claim(now, head.packet_id());
        let entry = &mut self.slots[slot];
        if entry.head.is_some() {
            return None; // duplicate head
        }
        entry.head = Some(datagram.to_vec());
        self.finish_if_complete(slot)
    }

    /// Takes a fragment datagram. Fragments with a bad header or counters 1.14 would drop are
    /// ignored. Returns the packet if this completed it.
    pub fn handle_fragment(&mut self, now: Timestamp, datagram: &[u8]) -> Option<Vec<u8>> {
        let fragment = Fragment::new_checked(datagram).ok()?;
        fragment.check_counters().ok()?;
        let index = usize::from(fragment.fragment_number()) - 1;
        let slot = self.find_or_claim(now, fragment.packet_id());
        let entry = &mut self.slots[slot];
        if entry.fragments[index].is_some() {
            return None; // duplicate fragment
        }
        entry.fragments[index] = Some(fragment.payload().to_vec());
        entry.total = fragment.total_fragments();
        self.finish_if_complete(slot)
    }

    /// Frees the entries older than [`max_age`](Self::max_age), releasing their buffers.
    /// Optional: stale entries are ignored and overwritten anyway; this only returns memory.
    pub fn expire(&mut self, now: Timestamp) {
        let max_age = self.max_age;
        for entry in &mut self.slots {
            if entry.packet_id.is_some() && now.since(entry.created) > max_age {
                *entry = Entry::default();
            }
        }
    }

    /// Number of entries in use (stale ones included until overwritten or expired).
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|e| e.packet_id.is_some()).count()
    }

    fn is_live(&self, entry: &Entry, now: Timestamp) -> bool {
        entry.packet_id.is_some() && now.since(entry.created) <= self.max_age
    }

    /// The live entry for `packet_id`, or a fresh one in the next ring slot.
    fn find_or_claim(&mut self, now: Timestamp, packet_id: u64) -> usize {
        if let Some(slot) = self
            .slots
            .iter()
            .position(|e| e.packet_id == Some(packet_id) && self.is_live(e, now))
        {
            return slot;
        }
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % RING_SLOTS;
        self.slots[slot].reset(packet_id, now);
        slot
    }

    fn finish_if_complete(&mut self, slot: usize) -> Option<Vec<u8>> {
        let entry = &mut self.slots[slot];
        let total = usize::from(entry.total);
        let have_all = entry.head.is_some()
            && total >= 2
            && entry.fragments[..total - 1].iter().all(Option::is_some);
        if !have_all {
            return None;
        }
        let packet = entry.assemble();
        // Complete (or too long to ever be valid): either way the entry is done.
        *entry = Entry::default();
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fragment::split;

    fn fragmented_packet(id: u8, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        p[..8].fill(id);
        p[13] = 0x12;
        Packet::new_unchecked(&mut p[..]).set_fragmented(true);
        p
    }

    fn pieces(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut out = vec![];
        split(packet, mtu, &mut out).unwrap();
        out
    }

    fn feed(r: &mut Reassembler, now: Timestamp, datagram: &[u8]) -> Option<Vec<u8>> {
        if crate::wire::is_fragment(datagram) {
            r.handle_fragment(now, datagram)
        } else {
            r.handle_head(now, datagram)
        }
    }

    #[test]
    fn interleaved_packets() {
        let (a, b) = (fragmented_packet(1, 3000), fragmented_packet(2, 4000));
        let (pa, pb) = (pieces(&a, 1432), pieces(&b, 1432));
        let mut r = Reassembler::new();
        let now = Timestamp(1000);
        assert_eq!(feed(&mut r, now, &pb[2]), None);
        assert_eq!(feed(&mut r, now, &pa[1]), None);
        assert_eq!(feed(&mut r, now, &pb[0]), None);
        assert_eq!(feed(&mut r, now, &pa[0]), None);
        assert_eq!(feed(&mut r, now, &pa[2]), Some(a));
        assert_eq!(feed(&mut r, now, &pb[1]), Some(b));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn stale_entries_are_forgotten() {
        let a = fragmented_packet(1, 3000);
        let pa = pieces(&a, 1432);
        let mut r = Reassembler::new();
        assert_eq!(feed(&mut r, Timestamp(0), &pa[0]), None);
        assert_eq!(feed(&mut r, Timestamp(0), &pa[1]), None);
        // Too late: the entry is stale, so the last piece starts a new one.
        assert_eq!(feed(&mut r, Timestamp(5001), &pa[2]), None);
        assert_eq!(feed(&mut r, Timestamp(5002), &pa[0]), None);
        assert_eq!(feed(&mut r, Timestamp(5003), &pa[1]), Some(a));
        // The stale entry from t=0 is still held (overwritten only on wrap) until expired;
        // a late duplicate starts one more.
        assert_eq!(feed(&mut r, Timestamp(5003), &pa[1]), None);
        assert_eq!(r.pending(), 2);
        r.expire(Timestamp(10_002));
        assert_eq!(r.pending(), 1);
        r.expire(Timestamp(10_004));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn ring_overwrites_oldest() {
        let mut r = Reassembler::new();
        let first = fragmented_packet(0, 200);
        let first_pieces = pieces(&first, 100);
        assert_eq!(feed(&mut r, Timestamp(0), &first_pieces[0]), None);
        for id in 1..=32u8 {
            let p = fragmented_packet(id, 200);
            assert_eq!(feed(&mut r, Timestamp(0), &pieces(&p, 100)[0]), None);
        }
        // The first packet's head was overwritten by the 33rd.
        assert_eq!(feed(&mut r, Timestamp(0), &first_pieces[1]), None);
        assert_eq!(feed(&mut r, Timestamp(0), &first_pieces[2]), None);
    }

    #[test]
    fn rejects_bad_pieces() {
        let mut r = Reassembler::new();
        let mut unflagged = fragmented_packet(1, 200);
        Packet::new_unchecked(&mut unflagged[..]).set_fragmented(false);
        assert_eq!(r.handle_head(Timestamp(0), &unflagged), None);
        assert_eq!(r.pending(), 0);
        let mut fragment = pieces(&fragmented_packet(1, 200), 100)[1].clone();
        fragment[14] = 0x33; // number == total
        assert_eq!(r.handle_fragment(Timestamp(0), &fragment), None);
        fragment[14] = 0x81; // total > 7
        assert_eq!(r.handle_fragment(Timestamp(0), &fragment), None);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn oversized_assembly_is_dropped() {
        // 7 pieces of up to 10024 bytes each would assemble to far more than 10024 bytes.
        let mut head = fragmented_packet(9, 10000);
        head[..8].fill(9);
        let mut r = Reassembler::new();
        assert_eq!(r.handle_head(Timestamp(0), &head), None);
        let mut fragment = vec![0u8; 100];
        fragment[..8].fill(9);
        fragment[13] = 0xff;
        fragment[14] = 0x21;
        assert_eq!(r.handle_fragment(Timestamp(0), &fragment), None);
        assert_eq!(r.pending(), 0);
    }
}
