//! One received datagram: the packet view and every accessor, every verb's `Repr` parser on
//! its payload (the payload is taken as already dearmored), and LZ4 decompression.
//!
//! Properties, beyond "never panics": `emit` writes exactly `buffer_len()` bytes; what a
//! parser accepted, re-emitted, parses again and re-emits to the same bytes (parsing may
//! normalise, e.g. reserved InetAddress types become nil, but only once); a decompressed
//! packet is a valid packet without the compression flag; compressing a plain packet and
//! decompressing it gives the packet back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::wire::{
    classify, decompress_packet, EchoRepr, ErrorRepr, HelloRepr, InetAddress, OkRepr, Packet,
    PushDirectPathsRepr, RendezvousRepr, UserMessageRepr, WhoisRepr,
};

/// Checks the emit properties of a parser `parse` that accepted some bytes.
macro_rules! check_reemit {
    ($parse:expr, $repr:expr) => {{
        let repr = $repr;
        let mut first = Vec::new();
        repr.emit(&mut first);
        assert_eq!(
            first.len(),
            repr.buffer_len(),
            "buffer_len disagrees with emit: {repr:?}"
        );
        let again = match ($parse)(&first[..]) {
            Some(again) => again,
            None => panic!("emitted bytes do not parse again: {repr:?} -> {first:02x?}"),
        };
        let mut second = Vec::new();
        again.emit(&mut second);
        assert_eq!(
            first, second,
            "re-emit is not stable: {repr:?} -> {again:?}"
        );
    }};
}

/// Every VL1 verb's parser on `payload` (bytes 28.. of a dearmored packet).
fn parse_every_verb(payload: &[u8]) {
    let hello = |bytes: &[u8]| HelloRepr::parse(bytes).ok().map(|(hello, _tail)| hello);
    if let Some(repr) = hello(payload) {
        check_reemit!(hello, repr);
    }
    if let Ok((_, Some(tail_offset))) = HelloRepr::parse(payload) {
        let _ = HelloRepr::parse_moons(payload.get(tail_offset..).unwrap_or_default());
    }
    let _ = HelloRepr::parse_moons(payload);

    let ok = |bytes: &[u8]| OkRepr::parse(bytes).ok();
    if let Some(repr) = ok(payload) {
        check_reemit!(ok, repr);
    }
    let error = |bytes: &[u8]| ErrorRepr::parse(bytes).ok();
    if let Some(repr) = error(payload) {
        check_reemit!(error, repr);
    }
    let whois = |bytes: &[u8]| Some(WhoisRepr::parse(bytes));
    if let Some(repr) = whois(payload) {
        check_reemit!(whois, repr);
    }
    let rendezvous = |bytes: &[u8]| RendezvousRepr::parse(bytes).ok();
    if let Some(repr) = rendezvous(payload) {
        check_reemit!(rendezvous, repr);
    }
    let echo = |bytes: &[u8]| Some(EchoRepr::parse(bytes));
    if let Some(repr) = echo(payload) {
        check_reemit!(echo, repr);
    }
    let push = |bytes: &[u8]| PushDirectPathsRepr::parse(bytes).ok();
    if let Some(repr) = push(payload) {
        check_reemit!(push, repr);
    }
    let user_message = |bytes: &[u8]| UserMessageRepr::parse(bytes).ok();
    if let Some(repr) = user_message(payload) {
        check_reemit!(user_message, repr);
    }
    let inet = |bytes: &[u8]| {
        InetAddress::parse(bytes)
            .ok()
            .map(|(address, _used)| address)
    };
    if let Some(repr) = inet(payload) {
        check_reemit!(inet, repr);
    }
}

fn check_packet(datagram: &[u8]) {
    let Ok(packet) = Packet::new_checked(datagram) else {
        return;
    };
    // The accessor contract: none of these may panic once new_checked accepted the buffer.
    let _ = (
        packet.packet_id(),
        packet.packet_id_bytes(),
        packet.destination(),
        packet.source(),
    );
    let _ = (
        packet.flags(),
        packet.cipher(),
        packet.hops(),
        packet.is_fragmented(),
    );
    let _ = (
        packet.mac(),
        packet.trusted_path_id(),
        packet.raw_verb(),
        packet.verb(),
    );
    let compressed = packet.is_compressed();
    parse_every_verb(packet.payload());

    let mut plain = Vec::new();
    if decompress_packet(datagram, &mut plain).is_ok() {
        let decompressed = Packet::new_checked(&plain[..])
            .unwrap_or_else(|error| panic!("decompression made an invalid packet: {error}"));
        assert!(
            !decompressed.is_compressed(),
            "decompression left the compressed flag set"
        );
        if compressed {
            parse_every_verb(decompressed.payload());
        } else {
            assert_eq!(
                plain, datagram,
                "an uncompressed packet changed in decompression"
            );
            let mut packed = plain.clone();
            let mut scratch = Vec::new();
            if node_core::wire::compress_packet(&mut packed, &mut scratch) {
                let mut unpacked = Vec::new();
                decompress_packet(&packed, &mut unpacked)
                    .unwrap_or_else(|error| panic!("our own compression does not expand: {error}"));
                assert_eq!(unpacked, plain, "compression does not round-trip");
            }
        }
    }
}

fuzz_target!(|datagram: &[u8]| {
    let _ = classify(datagram);
    check_packet(datagram);
    // The same bytes as a bare payload reach the verb parsers with every leading byte.
    parse_every_verb(datagram);
});
