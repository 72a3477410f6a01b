//! Cipher 2 (trusted paths, zt-vl1.md 4.6): between nodes that configured the same ID for a
//! physical prefix, packets travel without crypto; with a different ID they are dropped.

use node_core::node::{Event, TrustedPath};
use node_core::sim::{generate_identities, LinkConfig, Sim};
use node_core::wire::fragment::is_fragment;
use node_core::wire::packet::{Packet, CIPHER_TRUSTED_PATH};
use node_core::Millis;

fn trusted(id: u64) -> TrustedPath {
    TrustedPath {
        network: "10.0.0.0".parse().unwrap(),
        prefix_len: 8,
        id,
    }
}

fn echo_answered(sim: &Sim, host: usize, payload: &[u8]) -> bool {
    sim.host(host)
        .events
        .iter()
        .any(|e| matches!(e, Event::EchoReply { payload: p, hops: 0, .. } if p == payload))
}

/// Cipher-2 packets seen between the two hosts' addresses.
fn trusted_packets_between(sim: &Sim, a: usize, b: usize) -> usize {
    let (la, lb) = (sim.host(a).local, sim.host(b).local);
    sim.captured()
        .iter()
        .filter(|c| (c.from == la && c.to == lb) || (c.from == lb && c.to == la))
        .filter(|c| !is_fragment(&c.data))
        .filter_map(|c| Packet::new_checked(&c.data[..]).ok().map(|p| p.cipher()))
        .filter(|cipher| *cipher == CIPHER_TRUSTED_PATH)
        .count()
}

#[test]
fn same_id_uses_cipher_2_and_a_wrong_id_is_refused() {
    let ids = generate_identities(4, 0x7257);
    let mut sim = Sim::new(3, LinkConfig::default(), vec![ids[0].clone()]);
    let a = sim.add_node_with(ids[1].clone(), None, |c| {
        c.trusted_paths = vec![trusted(42)]
    });
    let b = sim.add_node_with(ids[2].clone(), None, |c| {
        c.trusted_paths = vec![trusted(42)]
    });
    let c = sim.add_node_with(ids[3].clone(), None, |c| {
        c.trusted_paths = vec![trusted(43)]
    });
    sim.run_for(Millis(10_000));

    // Meet through the root, then go direct.
    for (from, to) in [(a, b), (a, c)] {
        let addr = sim.address_of(to);
        sim.with_node(from, |n, now| n.send_echo(now, addr, b"first"));
    }
    sim.run_for(Millis(10_000));
    sim.capture(true);
    let (addr_b, addr_c) = (sim.address_of(b), sim.address_of(c));
    sim.with_node(a, |n, now| n.send_echo(now, addr_b, b"trusted"));
    sim.with_node(a, |n, now| n.send_echo(now, addr_c, b"mismatch"));
    sim.run_for(Millis(3_000));

    assert!(
        echo_answered(&sim, a, b"trusted"),
        "a and b share ID 42: direct echo answered"
    );
    assert!(
        trusted_packets_between(&sim, a, b) >= 2,
        "a <-> b traffic used cipher 2"
    );
    // c configured ID 43: a's cipher-2 packets are refused by c, and c's by a.
    assert!(
        !echo_answered(&sim, a, b"mismatch"),
        "a mismatched ID must not be accepted"
    );
}
