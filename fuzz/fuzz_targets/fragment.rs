//! A sequence of received datagrams through the fragment view and the reassembler.
//!
//! Input: records of `[delay: u8, in 100 ms][length: u16 BE][datagram]`; a truncated last
//! record takes what is left. Each datagram is classified as the receive path does, and heads
//! and fragments go to one `Reassembler` on a clock advanced by the delays.
//!
//! Properties, beyond "never panics": a reassembled packet is a valid packet with its
//! fragmented flag set and within the size limit; splitting it again and feeding the pieces,
//! last first, to a fresh reassembler gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::wire::{classify, split, DatagramKind, Fragment, Packet, Reassembler};
use node_core::Timestamp;

/// 1.14's largest packet after reassembly.
const MAX_PACKET_LEN: usize = 10024;

fn records(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&delay, rest) = input.split_first()?;
        let (length, rest) = match rest {
            [high, low, rest @ ..] => (usize::from(u16::from_be_bytes([*high, *low])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (datagram, rest) = rest.split_at(length.min(rest.len()));
        input = rest;
        Some((delay, datagram))
    })
}

fn check_fragment_view(datagram: &[u8]) {
    let Ok(fragment) = Fragment::new_checked(datagram) else {
        return;
    };
    let _ = (
        fragment.packet_id(),
        fragment.packet_id_bytes(),
        fragment.destination(),
    );
    let _ = (
        fragment.total_fragments(),
        fragment.fragment_number(),
        fragment.hops(),
    );
    let _ = (fragment.payload().len(), fragment.check_counters());
}

/// A reassembled packet, split again at `mtu` and reassembled in reverse order, comes back
/// whole. (Splitting fails when it would take more than 7 pieces.)
fn check_resplit(packet: &[u8], mtu: usize) {
    let mut pieces = Vec::new();
    let Ok(count) = split(packet, mtu, &mut pieces) else {
        return;
    };
    assert_eq!(count, pieces.len());
    let mut reassembler = Reassembler::new();
    let now = Timestamp(0);
    let mut whole = None;
    for piece in pieces.iter().rev() {
        let done = match classify(piece) {
            DatagramKind::Fragment => reassembler.handle_fragment(now, piece),
            DatagramKind::Packet if count > 1 => reassembler.handle_head(now, piece),
            DatagramKind::Packet => Some(piece.clone()),
            kind => panic!("split made a {kind:?} datagram"),
        };
        if done.is_some() {
            assert!(whole.is_none(), "reassembled twice");
            whole = done;
        }
    }
    assert_eq!(
        whole.as_deref(),
        Some(packet),
        "split + reassembly lost the packet"
    );
}

fuzz_target!(|input: &[u8]| {
    let mut reassembler = Reassembler::new();
    let mut now = Timestamp(1_700_000_000_000);
    for (delay, datagram) in records(input) {
        now = Timestamp(now.0 + i64::from(delay) * 100);
        check_fragment_view(datagram);
        let assembled = match classify(datagram) {
            DatagramKind::Fragment => reassembler.handle_fragment(now, datagram),
            DatagramKind::Packet => reassembler.handle_head(now, datagram),
            DatagramKind::Beacon | DatagramKind::Runt => None,
        };
        let Some(packet) = assembled else {
            continue;
        };
        assert!(
            packet.len() <= MAX_PACKET_LEN,
            "reassembled {} bytes",
            packet.len()
        );
        let view = Packet::new_checked(&packet[..])
            .unwrap_or_else(|error| panic!("reassembly made an invalid packet: {error}"));
        assert!(
            view.is_fragmented(),
            "reassembled a packet whose head was not flagged"
        );
        for mtu in [1432, 576] {
            check_resplit(&packet, mtu);
        }
    }
    assert!(reassembler.pending() <= 32);
});
