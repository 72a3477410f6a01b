//! Pulls the decrypted VL1 payloads out of a ZeroTier One capture, the way `captures.rs` does
//! (reassemble, dearmor with the pair's key, decompress), keeping only packets between nodes
//! whose identities are known. Include next to `common/pcap.rs`:
//!
//! ```ignore
//! #[path = "common/pcap.rs"]
//! mod pcap;
//! #[path = "common/vl2_capture.rs"]
//! mod vl2_capture;
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

use node_core::crypto::dearmor;
use node_core::time::Timestamp;
use node_core::wire::{classify, decompress_packet, DatagramKind, Packet, Reassembler, Verb};
use node_core::{Address, Identity};

use crate::pcap::Pcap;

/// One packet between two known nodes, dearmored and decompressed.
#[derive(Clone, Debug)]
pub(crate) struct CapturedPacket {
    /// pcap record (1-based) of the datagram that completed the packet.
    pub(crate) record: usize,
    pub(crate) source: Address,
    pub(crate) destination: Address,
    pub(crate) verb: Verb,
    /// The payload after the verb byte.
    pub(crate) payload: Vec<u8>,
}

/// Decodes every packet of `capture` whose two ends are both in `identities`; panics on any
/// packet between known nodes that does not decode (the capture is a fixed test vector).
pub(crate) fn decode_capture(capture: &[u8], identities: &[Identity]) -> Vec<CapturedPacket> {
    let pcap = Pcap::parse(capture).expect("the capture is a classic pcap file");
    let records = pcap.udp_datagrams().expect("every pcap record reads");
    let known = |address: Address| identities.iter().find(|i| i.address() == address);
    let mut reassemblers: HashMap<(SocketAddr, SocketAddr), Reassembler> = HashMap::new();
    let mut plain = Vec::new();
    let mut out = Vec::new();
    for datagram in &records.datagrams {
        let now = Timestamp(datagram.time_micros / 1000);
        let flow = (datagram.source, datagram.destination);
        let payload = datagram.payload;
        let mut packet = match classify(payload) {
            DatagramKind::Runt | DatagramKind::Beacon => continue,
            DatagramKind::Fragment => {
                match reassemblers
                    .entry(flow)
                    .or_default()
                    .handle_fragment(now, payload)
                {
                    Some(packet) => packet,
                    None => continue,
                }
            }
            DatagramKind::Packet => match Packet::new_checked(payload) {
                Ok(head) if head.is_fragmented() => {
                    match reassemblers
                        .entry(flow)
                        .or_default()
                        .handle_head(now, payload)
                    {
                        Some(packet) => packet,
                        None => continue,
                    }
                }
                Ok(_) => payload.to_vec(),
                Err(_) => continue,
            },
        };
        let Ok(view) = Packet::new_checked(&packet[..]) else {
            continue;
        };
        let (source, destination) = (view.source(), view.destination());
        let (Some(sender), Some(receiver)) = (known(source), known(destination)) else {
            continue;
        };
        let key = receiver
            .agree(sender)
            .unwrap_or_else(|| panic!("record {}: no key", datagram.record));
        dearmor(&mut packet, &key)
            .unwrap_or_else(|e| panic!("record {}: dearmor: {e}", datagram.record));
        decompress_packet(&packet, &mut plain)
            .unwrap_or_else(|e| panic!("record {}: decompress: {e}", datagram.record));
        let view = Packet::new_checked(&plain[..])
            .unwrap_or_else(|e| panic!("record {}: {e}", datagram.record));
        out.push(CapturedPacket {
            record: datagram.record,
            source,
            destination,
            verb: view.verb(),
            payload: view.payload().to_vec(),
        });
    }
    out
}
