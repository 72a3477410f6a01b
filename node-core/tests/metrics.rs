//! `Node::metrics`: what a node counts of its traffic, checked against what the simulator
//! carried, and drops counted by their reason.

use node_core::metrics::{Direction, DropReason, PACKET_TYPES};
use node_core::node::Node;
use node_core::sim::{generate_identities, root_address, LinkConfig, Sim};
use node_core::wire::packet::Packet;
use node_core::wire::verb::Verb;
use node_core::Millis;

/// Runs until no datagram is in flight any more.
fn settle(sim: &mut Sim) {
    let quiet = sim.run_until_true(Millis(5_000), Millis(1), |s| {
        s.stats.sent == s.stats.delivered + s.stats.lost + s.stats.unroutable
    });
    assert!(quiet, "the simulation never went quiet");
}

/// A root and one node that has said HELLO to it.
fn root_and_node() -> (Sim, usize) {
    let ids = generate_identities(2, 0x6d65_7472);
    let mut sim = Sim::new(0x77, LinkConfig::default(), vec![ids[0].clone()]);
    let node = sim.add_node(ids[1].clone(), None);
    let online = sim.run_until_true(Millis(10_000), Millis(50), |s| {
        s.host(node).node.is_online(s.now())
    });
    assert!(online, "the node never heard from its root");
    settle(&mut sim);
    (sim, node)
}

fn metrics_of(sim: &Sim, id: usize) -> &node_core::metrics::Metrics {
    sim.host(id).node.metrics()
}

#[test]
fn hello_and_ok_are_counted_on_both_ends() {
    let (sim, node) = root_and_node();
    let root = 0;
    let root_address = sim.address_of(root);
    let n = metrics_of(&sim, node);
    let r = metrics_of(&sim, root);
    assert!(n.packets(Direction::Tx, Verb::Hello) >= 1);
    assert!(n.packets(Direction::Rx, Verb::Ok) >= 1);
    assert!(r.packets(Direction::Rx, Verb::Hello) >= 1);
    assert!(r.packets(Direction::Tx, Verb::Ok) >= 1);
    assert!(n.udp_bytes(Direction::Tx) > 0 && n.udp_bytes(Direction::Rx) > 0);

    let peer = n.peer(root_address).expect("the root has counters");
    assert!(peer.packets(Direction::Rx) >= 1 && peer.packets(Direction::Tx) >= 1);
    assert!(
        peer.latency().count() >= 1,
        "OK(HELLO) measured a round trip"
    );
    assert_eq!(peer.packet_errors(), 0);

    // Nothing was lost or dropped: every packet sent was received and authenticated.
    for verb in PACKET_TYPES {
        let sent = n.packets(Direction::Tx, verb) + r.packets(Direction::Tx, verb);
        let received = n.packets(Direction::Rx, verb) + r.packets(Direction::Rx, verb);
        assert_eq!(sent, received, "{verb}");
    }
    for reason in DropReason::ALL {
        assert_eq!(n.dropped(reason) + r.dropped(reason), 0, "{reason:?}");
    }
}

#[test]
fn datagram_and_byte_totals_match_the_wire() {
    let (mut sim, _) = root_and_node();
    // A few ping cycles more, so keepalives are counted too.
    sim.run_for(Millis(40_000));
    settle(&mut sim);
    let hosts = sim.hosts();
    let total = |f: &dyn Fn(&Node) -> u64| hosts.iter().map(|h| f(&h.node)).sum::<u64>();
    assert_eq!(
        total(&|n| n.metrics().udp_datagrams(Direction::Tx)),
        sim.stats.sent
    );
    assert_eq!(
        total(&|n| n.metrics().udp_datagrams(Direction::Rx)),
        sim.stats.delivered
    );
    assert_eq!(sim.stats.sent, sim.stats.delivered, "no loss configured");
    assert_eq!(
        total(&|n| n.metrics().udp_bytes(Direction::Tx)),
        total(&|n| n.metrics().udp_bytes(Direction::Rx))
    );
    // Every datagram here carries one whole packet (no fragments, no NAT junk).
    let packets_out: u64 = PACKET_TYPES
        .iter()
        .map(|v| total(&|n| n.metrics().packets(Direction::Tx, *v)))
        .sum();
    assert_eq!(packets_out, sim.stats.sent);
}

#[test]
fn bad_datagrams_count_by_reason() {
    let (mut sim, node) = root_and_node();
    let root = sim.address_of(0);
    let root_socket = root_address(0);
    let node_local = sim.host(node).local;

    // Capture the root's answer to an ECHO: an OK, encrypted and authenticated.
    sim.capture(true);
    sim.with_node(node, |n, now| n.send_echo(now, root, b"count me"));
    settle(&mut sim);
    let answer = sim
        .captured()
        .iter()
        .find(|c| {
            c.to == node_local
                && Packet::new_checked(&c.data[..]).is_ok_and(|p| {
                    // OK(ECHO): in-re verb and packet ID (9 bytes), then our 8-byte payload.
                    p.source() == root && p.payload().len() == 9 + 8
                })
        })
        .expect("the root answered the ECHO")
        .clone();
    sim.capture(false);
    let before = metrics_of(&sim, node).clone();

    // One flipped bit in the ciphertext: the MAC fails, charged to the claimed sender.
    let mut corrupted = answer.data.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    sim.with_node(node, |n, now| {
        n.handle_datagram(now, root_socket, &corrupted)
    });
    let m = metrics_of(&sim, node);
    assert_eq!(m.dropped(DropReason::MacFailure), 1);
    assert_eq!(m.peer(root).map(|p| p.packet_errors()), Some(1));
    assert_eq!(
        m.packets(Direction::Rx, Verb::Ok),
        before.packets(Direction::Rx, Verb::Ok),
        "a packet that fails its MAC is not counted as received"
    );

    // The same OK again: authentic, but it answers nothing pending any more.
    sim.with_node(node, |n, now| {
        n.handle_datagram(now, root_socket, &answer.data)
    });
    let m = metrics_of(&sim, node);
    assert_eq!(m.dropped(DropReason::InvalidReply), 1);
    assert_eq!(
        m.packets(Direction::Rx, Verb::Ok),
        before.packets(Direction::Rx, Verb::Ok) + 1
    );

    // Too short for anything.
    sim.with_node(node, |n, now| {
        n.handle_datagram(now, root_socket, &[0x42; 20])
    });
    assert_eq!(metrics_of(&sim, node).dropped(DropReason::Malformed), 1);

    // For someone else: an ordinary node does not relay.
    let mut stray = answer.data.clone();
    stray[8..13].copy_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d, 0x0e]);
    sim.with_node(node, |n, now| n.handle_datagram(now, root_socket, &stray));
    let m = metrics_of(&sim, node);
    assert_eq!(m.dropped(DropReason::NotRelayed), 1);
    assert_eq!(
        m.udp_datagrams(Direction::Rx),
        before.udp_datagrams(Direction::Rx) + 4,
        "every datagram handed in is counted, dropped or not"
    );
}
