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
//! - A completed entry is emptied at once; the caller parks packets that wait for a WHOIS.
//!   Entries keep their buffers for the next packet, and [`Reassembler::handle_head_into`] and
//!   [`Reassembler::handle_fragment_into`] write a completed packet into the caller's buffer,
//!   so steady-state reassembly allocates nothing.

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
    /// The head datagram, valid when `has_head`.
    head: Vec<u8>,
    has_head: bool,
    /// Payloads (bytes 16..) of fragments 1..=6, at index `number - 1`; fragment `n` is
    /// here when bit `n - 1` of `have` is set.
    fragments: [Vec<u8>; MAX_FRAGMENTS - 1],
    have: u8,
    /// Total pieces, head included, as told by the latest fragment; 0 until one arrives.
    total: u8,
}

impl Entry {
    /// Claims the entry for `packet_id`, keeping its buffers' capacity.
    fn reset(&mut self, packet_id: u64, now: Timestamp) {
        self.empty();
        self.packet_id = Some(packet_id);
        self.created = now;
    }

    /// Frees the slot, keeping its buffers' capacity.
    fn empty(&mut self) {
        self.packet_id = None;
        self.has_head = false;
        self.have = 0;
        self.total = 0;
        self.head.clear();
        for fragment in &mut self.fragments {
            fragment.clear();
        }
    }

    fn has_fragment(&self, index: usize) -> bool {
        self.have & (1 << index) != 0
    }

    /// Writes the assembled packet into `out` (cleared first), if the head and every
    /// fragment 1..total are here and it is not too long.
    fn assemble_into(&self, out: &mut Vec<u8>) -> bool {
        if !self.has_head || self.total < 2 {
            return false;
        }
        let pieces = usize::from(self.total) - 1;
        if !(0..pieces).all(|i| self.has_fragment(i)) {
            return false;
        }
        let fragments = &self.fragments[..pieces];
        let len = self.head.len() + fragments.iter().map(Vec::len).sum::<usize>();
        if len > MAX_PACKET_LEN {
            return false;
        }
        out.clear();
        out.reserve(len);
        out.extend_from_slice(&self.head);
        for fragment in fragments {
            out.extend_from_slice(fragment);
        }
        true
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
        let mut packet = Vec::new();
        self.handle_head_into(now, datagram, &mut packet)
            .then_some(packet)
    }

    /// As [`Reassembler::handle_head`], writing a completed packet into `out` (true when it
    /// did; `out` is left alone otherwise).
    pub fn handle_head_into(&mut self, now: Timestamp, datagram: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(head) = Packet::new_checked(datagram) else {
            return false;
        };
        if !head.is_fragmented() {
            return false;
        }
        let slot = self.find_or_claim(now, head.packet_id());
        let entry = &mut self.slots[slot];
        if entry.has_head {
            return false; // duplicate head
        }
        entry.head.clear();
        entry.head.extend_from_slice(datagram);
        entry.has_head = true;
        self.finish_if_complete(slot, out)
    }

    /// Takes a fragment datagram. Fragments with a bad header or counters 1.14 would drop are
    /// ignored. Returns the packet if this completed it.
    pub fn handle_fragment(&mut self, now: Timestamp, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut packet = Vec::new();
        self.handle_fragment_into(now, datagram, &mut packet)
            .then_some(packet)
    }

    /// As [`Reassembler::handle_fragment`], writing a completed packet into `out` (true when
    /// it did; `out` is left alone otherwise).
    pub fn handle_fragment_into(
        &mut self,
        now: Timestamp,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Ok(fragment) = Fragment::new_checked(datagram) else {
            return false;
        };
        if fragment.check_counters().is_err() {
            return false;
        }
        let index = usize::from(fragment.fragment_number()) - 1;
        let slot = self.find_or_claim(now, fragment.packet_id());
        let entry = &mut self.slots[slot];
        if entry.has_fragment(index) {
            return false; // duplicate fragment
        }
        entry.fragments[index].clear();
        entry.fragments[index].extend_from_slice(fragment.payload());
        entry.have |= 1 << index;
        entry.total = fragment.total_fragments();
        self.finish_if_complete(slot, out)
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

    fn finish_if_complete(&mut self, slot: usize, out: &mut Vec<u8>) -> bool {
        let entry = &mut self.slots[slot];
        let total = usize::from(entry.total);
        let have_all =
            entry.has_head && total >= 2 && (0..total - 1).all(|i| entry.has_fragment(i));
        if !have_all {
            return false;
        }
        let assembled = entry.assemble_into(out);
        // Complete (or too long to ever be valid): either way the entry is done.
        entry.empty();
        assembled
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
