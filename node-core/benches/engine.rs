//! Microbenchmarks of the engine's per-packet work and of identity generation (issue 7):
//!
//! - `armor/<suite>/<bytes>` and `dearmor/<suite>/<bytes>`: each armorable cipher suite
//!   (Poly1305 MAC only, Salsa20/12-Poly1305, AES-GMAC-SIV) on whole packets of 64, 1400 and
//!   2800 bytes (2800: ZeroTier's default network MTU, one VL1 packet before fragmentation).
//! - `packet/...`: the VL1 header view and a FRAME/EXT_FRAME payload, parsed and emitted.
//! - `rules/...`: one frame through a typical rule list, outbound and inbound.
//! - `identity/generate`: a new identity (the memory-hard hash dominates).
//!
//! Run: `cargo bench -p node-core` (a filter narrows it: `cargo bench -p node-core -- armor`).
//! Throughput is reported per byte of packet, so Gbit/s per core can be read directly.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use node_core::crypto::{armor, dearmor, CipherSuite, PeerKey};
use node_core::vl2::filter::{
    evaluate, filter_incoming, Direction, FilterContext, Frame, NoOwnership, TagValue,
};
use node_core::vl2::rules_json::rules_from_json;
use node_core::vl2::verbs::{ExtFrameRepr, FrameRepr};
use node_core::vl2::{Mac, NetworkId};
use node_core::wire::{emit_header, Packet, Verb};
use node_core::{Address, Identity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Whole packet sizes, header included.
const PACKET_SIZES: [usize; 3] = [64, 1400, 2800];

const SUITES: [(CipherSuite, &str); 3] = [
    (CipherSuite::Poly1305, "poly1305"),
    (CipherSuite::Salsa2012Poly1305, "salsa2012-poly1305"),
    (CipherSuite::AesGmacSiv, "aes-gmac-siv"),
];

const NETWORK: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
const SOURCE: Address = Address::from_u64(0x89_e92c_ebab);
const DESTINATION: Address = Address::from_u64(0x6d_09ce_149c);

fn peer_key() -> PeerKey {
    let mut secret = [0u8; 48];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = i as u8 ^ 0x5a;
    }
    PeerKey::from_secret(secret)
}

/// A plaintext FRAME packet of exactly `size` bytes (header, network ID, ethertype, payload).
fn plain_packet(size: usize) -> Vec<u8> {
    let mut packet = Vec::with_capacity(size);
    emit_header(
        &mut packet,
        [1, 2, 3, 4, 5, 6, 7, 8],
        DESTINATION,
        SOURCE,
        Verb::Frame,
    );
    packet.extend_from_slice(&NETWORK.0.to_be_bytes());
    packet.extend_from_slice(&0x0800u16.to_be_bytes());
    packet.resize(size, 0xab);
    packet
}

fn armor_and_dearmor(c: &mut Criterion) {
    let key = peer_key();
    for (suite, suite_name) in SUITES {
        let mut group = c.benchmark_group(format!("armor/{suite_name}"));
        for size in PACKET_SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let plain = plain_packet(size);
            let mut buffer = plain.clone();
            group.bench_function(size.to_string(), |b| {
                b.iter(|| {
                    // A fresh plaintext each time: armor rewrites the header (AES-GMAC-SIV
                    // even the packet ID).
                    buffer.copy_from_slice(&plain);
                    armor(black_box(&mut buffer), &key, suite);
                });
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("dearmor/{suite_name}"));
        for size in PACKET_SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let mut armored = plain_packet(size);
            armor(&mut armored, &key, suite);
            let mut buffer = armored.clone();
            group.bench_function(size.to_string(), |b| {
                b.iter(|| {
                    buffer.copy_from_slice(&armored);
                    let opened = dearmor(black_box(&mut buffer), &key);
                    assert!(opened.is_ok(), "a packet armored here failed to dearmor");
                });
            });
        }
        group.finish();
    }
}

fn ext_frame(payload_len: usize) -> ExtFrameRepr {
    ExtFrameRepr {
        network_id: NETWORK,
        flags: 0,
        com: None,
        to: Mac([0x32, 0x10, 0x20, 0x30, 0x40, 0x50]),
        from: Mac([0x32, 0x11, 0x21, 0x31, 0x41, 0x51]),
        ethertype: 0x0800,
        payload: vec![0xcd; payload_len],
    }
}

fn parse_and_emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("packet");
    let packet = plain_packet(1400);
    group.throughput(Throughput::Bytes(packet.len() as u64));
    group.bench_function("parse-header/1400", |b| {
        b.iter(|| {
            let view = Packet::new_checked(black_box(&packet[..])).expect("a valid packet");
            black_box((
                view.destination(),
                view.source(),
                view.cipher(),
                view.verb(),
                view.payload().len(),
            ))
        });
    });
    group.bench_function("parse-frame/1400", |b| {
        b.iter(|| {
            let view = Packet::new_checked(black_box(&packet[..])).expect("a valid packet");
            FrameRepr::parse(view.payload()).expect("a valid FRAME")
        });
    });
    let mut out = Vec::with_capacity(1500);
    let frame = FrameRepr::parse(&packet[28..]).expect("a valid FRAME");
    group.bench_function("emit-frame/1400", |b| {
        b.iter(|| {
            out.clear();
            emit_header(&mut out, [9; 8], DESTINATION, SOURCE, Verb::Frame);
            black_box(&frame).emit(&mut out);
            black_box(out.len())
        });
    });
    let ext = ext_frame(1400 - 28 - 23);
    let mut ext_packet = Vec::new();
    emit_header(&mut ext_packet, [9; 8], DESTINATION, SOURCE, Verb::ExtFrame);
    ext.emit(&mut ext_packet);
    group.bench_function("parse-ext-frame/1400", |b| {
        b.iter(|| {
            let view = Packet::new_checked(black_box(&ext_packet[..])).expect("a valid packet");
            ExtFrameRepr::parse(view.payload()).expect("a valid EXT_FRAME")
        });
    });
    group.bench_function("emit-ext-frame/1400", |b| {
        b.iter(|| {
            out.clear();
            emit_header(&mut out, [9; 8], DESTINATION, SOURCE, Verb::ExtFrame);
            black_box(&ext).emit(&mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

/// An IPv4 TCP segment (to port 443) as the rules see it: from the IP header on.
fn ipv4_tcp(total_len: usize) -> Vec<u8> {
    let mut data = vec![0u8; total_len];
    data[0] = 0x45;
    data[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    data[8] = 64; // TTL
    data[9] = 6; // TCP
    data[12..16].copy_from_slice(&[10, 147, 17, 5]);
    data[16..20].copy_from_slice(&[10, 147, 17, 9]);
    data[20..22].copy_from_slice(&51000u16.to_be_bytes());
    data[22..24].copy_from_slice(&443u16.to_be_bytes());
    data[32] = 0x50; // data offset: 5 words
    data[33] = 0x18; // PSH, ACK
    data
}

/// A rule list like a real network's: ethertype allow-list, a tag check, port ranges.
fn typical_rules() -> Vec<node_core::vl2::Rule> {
    let rules = serde_json::json!([
        {"type": "MATCH_ETHERTYPE", "not": true, "etherType": 0x0800},
        {"type": "MATCH_ETHERTYPE", "not": true, "etherType": 0x0806},
        {"type": "MATCH_ETHERTYPE", "not": true, "etherType": 0x86dd},
        {"type": "ACTION_DROP"},
        {"type": "MATCH_TAGS_DIFFERENCE", "id": 1000, "value": 0, "not": true},
        {"type": "ACTION_DROP"},
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 22, "end": 22},
        {"type": "ACTION_DROP"},
        {"type": "MATCH_IP_PROTOCOL", "ipProtocol": 6},
        {"type": "MATCH_IP_DEST_PORT_RANGE", "start": 80, "end": 443},
        {"type": "ACTION_ACCEPT"},
        {"type": "MATCH_IPV4_SOURCE", "ip": "10.147.0.0/16"},
        {"type": "ACTION_ACCEPT"},
        {"type": "ACTION_DROP"},
    ]);
    rules_from_json(&rules)
}

fn rules_evaluation(c: &mut Criterion) {
    let rules = typical_rules();
    let data = ipv4_tcp(1400 - 14);
    let frame = Frame {
        mac_source: Mac([0x32, 0x11, 0x21, 0x31, 0x41, 0x51]),
        mac_dest: Mac([0x32, 0x10, 0x20, 0x30, 0x40, 0x50]),
        ethertype: 0x0800,
        vlan_id: 0,
        data: &data,
    };
    let tags = [TagValue { id: 1000, value: 7 }];
    let outbound = FilterContext {
        this_node: SOURCE,
        direction: Direction::Outbound,
        zt_source: SOURCE,
        zt_dest: DESTINATION,
        local_tags: &tags,
        remote_tags: &tags,
        config_flags: 0,
        ownership: &NoOwnership,
    };
    let inbound = FilterContext {
        this_node: DESTINATION,
        direction: Direction::Inbound,
        zt_source: SOURCE,
        zt_dest: DESTINATION,
        ..outbound
    };
    let mut group = c.benchmark_group("rules");
    group.bench_function("evaluate-outbound", |b| {
        b.iter(|| evaluate(black_box(&rules), &outbound, black_box(&frame), &mut || 4));
    });
    group.bench_function("filter-incoming", |b| {
        b.iter(|| {
            filter_incoming(
                black_box(&rules),
                [],
                &inbound,
                black_box(&frame),
                &mut || 4,
            )
        });
    });
    group.finish();
}

fn identity_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("identity");
    // Each generation takes long (the memory-hard hash, retried until the hash qualifies):
    // few samples are enough.
    group.sample_size(10);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    group.bench_function("generate", |b| {
        b.iter_batched(
            || ChaCha20Rng::seed_from_u64(rand_chacha::rand_core::RngCore::next_u64(&mut rng)),
            |mut seeded| Identity::generate(&mut seeded),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(
    engine,
    armor_and_dearmor,
    parse_and_emit,
    rules_evaluation,
    identity_generation
);
criterion_main!(engine);
