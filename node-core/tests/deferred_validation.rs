//! `NodeConfig::defer_identity_validation`: a new identity's memory-hard hash is left to the
//! host (`Event::ValidateIdentity` → `Node::identity_validated`) instead of running on the
//! packet path. Nodes are driven by hand here: a root with deferred validation, and leaves
//! whose first HELLOs go to it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use node_core::metrics::DropReason;
use node_core::node::{Event, Node, NodeConfig};
use node_core::sim::identities::unsearched;
use node_core::sim::{generate_identities, root_address, LinkConfig, Sim};
use node_core::wire::packet::Packet;
use node_core::wire::verb::Verb;
use node_core::world::World;
use node_core::{Identity, Millis, Timestamp};

const START: Timestamp = Timestamp(1_700_000_000_000);

/// A leaf's physical address, each in its own /24 (the identity gate is per prefix).
fn leaf_address(index: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (index >> 8) as u8, index as u8, 1)),
        9993,
    )
}

struct Lab {
    planet: World,
    root: Node,
    root_identity: Identity,
}

fn lab(seed: u64) -> (Lab, Vec<Identity>) {
    let ids = generate_identities(3, seed);
    let planet = Sim::new(seed, LinkConfig::default(), vec![ids[0].clone()])
        .planet()
        .clone();
    let mut config = NodeConfig::new(ids[0].clone(), planet.clone());
    config.defer_identity_validation = true;
    let mut root = Node::new(config, START);
    drain(&mut root);
    (
        Lab {
            planet,
            root,
            root_identity: ids[0].clone(),
        },
        ids[1..].to_vec(),
    )
}

/// Everything a node queued: datagrams and events.
fn drain(node: &mut Node) -> (Vec<(SocketAddr, Vec<u8>)>, Vec<Event>) {
    let mut transmits = Vec::new();
    while let Some(t) = node.poll_transmit() {
        transmits.push((t.to, t.data));
    }
    let mut events = Vec::new();
    while let Some(e) = node.poll_event() {
        events.push(e);
    }
    (transmits, events)
}

/// A leaf (inline validation) and the HELLO it sends the root first.
fn leaf_and_hello(lab: &Lab, identity: Identity) -> (Node, Vec<u8>) {
    let mut leaf = Node::new(NodeConfig::new(identity, lab.planet.clone()), START);
    leaf.handle_timeout(START);
    let (transmits, _) = drain(&mut leaf);
    let hello = transmits
        .into_iter()
        .find(|(to, data)| {
            *to == root_address(0)
                && Packet::new_checked(&data[..]).is_ok_and(|p| p.verb() == Verb::Hello)
        })
        .expect("a new leaf says HELLO to its root")
        .1;
    (leaf, hello)
}

fn validations(events: &[Event]) -> Vec<Identity> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ValidateIdentity(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn learned(events: &[Event]) -> Vec<Identity> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerLearned(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_valid_identity_is_learned_and_answered_after_the_verdict() {
    let (mut lab, ids) = lab(0x6f66_6601);
    let (mut leaf, hello) = leaf_and_hello(&lab, ids[0].clone());
    let from = leaf_address(1);

    lab.root.handle_datagram(START, from, &hello);
    let (transmits, events) = drain(&mut lab.root);
    assert!(
        transmits.is_empty(),
        "nothing is answered before the verdict"
    );
    assert_eq!(validations(&events), vec![ids[0].clone()]);
    assert!(learned(&events).is_empty());
    assert_eq!(lab.root.pending_validations(), 1);
    assert!(lab
        .root
        .peers(START)
        .iter()
        .all(|p| p.address != ids[0].address()));

    // The host ran the hash elsewhere; the verdict completes the HELLO.
    assert!(ids[0].locally_validate());
    let later = START + Millis(40);
    lab.root.identity_validated(later, &ids[0], true);
    let (transmits, events) = drain(&mut lab.root);
    assert_eq!(learned(&events), vec![ids[0].clone()]);
    assert_eq!(lab.root.pending_validations(), 0);
    assert!(lab
        .root
        .peers(later)
        .iter()
        .any(|p| p.address == ids[0].address()));
    let ok = transmits
        .iter()
        .find(|(to, _)| *to == from)
        .expect("the HELLO is answered");
    leaf.handle_datagram(later, root_address(0), &ok.1);
    assert!(leaf.is_online(later), "the leaf accepted the OK(HELLO)");
    assert_eq!(lab.root.metrics().identity_validations(), 1);
}

#[test]
fn an_invalid_identity_is_dropped_and_counted() {
    let (mut lab, _) = lab(0x6f66_6602);
    let forged = unsearched(7);
    assert!(!forged.locally_validate());
    let (_leaf, hello) = leaf_and_hello(&lab, forged.clone());

    lab.root.handle_datagram(START, leaf_address(1), &hello);
    let (_, events) = drain(&mut lab.root);
    assert_eq!(validations(&events), vec![forged.clone()]);

    lab.root.identity_validated(START, &forged, false);
    let (transmits, events) = drain(&mut lab.root);
    assert!(transmits.is_empty());
    assert!(learned(&events).is_empty());
    assert_eq!(lab.root.pending_validations(), 0);
    assert_eq!(lab.root.metrics().dropped(DropReason::InvalidIdentity), 1);
    assert!(lab
        .root
        .peers(START)
        .iter()
        .all(|p| p.address != forged.address()));

    // A second verdict for it waits on nothing and changes nothing.
    lab.root.identity_validated(START, &forged, true);
    let (transmits, events) = drain(&mut lab.root);
    assert!(transmits.is_empty() && events.is_empty());
}

#[test]
fn a_retried_hello_is_not_validated_twice() {
    let (mut lab, ids) = lab(0x6f66_6603);
    let (_leaf, hello) = leaf_and_hello(&lab, ids[0].clone());
    let from = leaf_address(1);

    for i in 0..5 {
        lab.root
            .handle_datagram(START + Millis(i * 100), from, &hello);
    }
    let (transmits, events) = drain(&mut lab.root);
    assert!(transmits.is_empty());
    assert_eq!(
        validations(&events).len(),
        1,
        "one request for one identity"
    );
    assert_eq!(lab.root.pending_validations(), 1);
    assert_eq!(lab.root.metrics().identity_validations(), 1);
    assert_eq!(lab.root.metrics().dropped(DropReason::RateLimited), 0);

    lab.root
        .identity_validated(START + Millis(600), &ids[0], true);
    let (transmits, events) = drain(&mut lab.root);
    assert_eq!(learned(&events).len(), 1);
    let verbs: Vec<Verb> = transmits
        .iter()
        .filter(|(to, _)| *to == from)
        .filter_map(|(_, data)| Packet::new_checked(&data[..]).ok().map(|p| p.verb()))
        // The root says HELLO to its new peer as well, as with inline validation.
        .filter(|verb| *verb != Verb::Hello)
        .collect();
    assert_eq!(verbs.len(), 1, "one answer (OK), to the newest HELLO kept");
}

#[test]
fn the_queue_is_bounded_and_gives_up_the_oldest() {
    let (mut lab, _) = lab(0x6f66_6604);
    let count = 40;
    let forged: Vec<Identity> = (0..count).map(unsearched).collect();
    for (i, identity) in forged.iter().enumerate() {
        let (_leaf, hello) = leaf_and_hello(&lab, identity.clone());
        lab.root
            .handle_datagram(START, leaf_address(i as u32 + 1), &hello);
    }
    let (_, events) = drain(&mut lab.root);
    assert_eq!(validations(&events).len(), count as usize);
    let bound = lab.root.pending_validations();
    assert!(bound < count as usize, "{bound} pending");
    let given_up = lab.root.metrics().dropped(DropReason::ValidationBacklog);
    assert_eq!(given_up as usize, count as usize - bound);

    // The verdict on a given-up identity finds nothing waiting.
    lab.root.identity_validated(START, &forged[0], false);
    assert_eq!(lab.root.metrics().dropped(DropReason::InvalidIdentity), 0);
    // The newest is still waiting.
    lab.root
        .identity_validated(START, &forged[count as usize - 1], false);
    assert_eq!(lab.root.metrics().dropped(DropReason::InvalidIdentity), 1);
    assert_eq!(lab.root.pending_validations(), bound - 1);

    // A host that never answers does not hold the rest for ever.
    let late = START + Millis(31_000);
    lab.root.handle_timeout(late);
    assert_eq!(lab.root.pending_validations(), 0);
    assert_eq!(
        lab.root.metrics().dropped(DropReason::ValidationBacklog) as usize,
        count as usize - 1
    );
}

#[test]
fn a_known_peer_is_served_while_a_validation_is_pending() {
    let (mut lab, ids) = lab(0x6f66_6605);
    let root_id = lab.root_identity.address();
    // Leaf A becomes a peer.
    let (mut a, hello) = leaf_and_hello(&lab, ids[0].clone());
    let a_from = leaf_address(1);
    lab.root.handle_datagram(START, a_from, &hello);
    drain(&mut lab.root);
    lab.root.identity_validated(START, &ids[0], true);
    let (transmits, _) = drain(&mut lab.root);
    for (_, data) in &transmits {
        a.handle_datagram(START, root_address(0), data);
    }
    assert!(a.is_online(START));
    drain(&mut a);

    // Leaf B's validation is pending, and stays so.
    let (_b, hello) = leaf_and_hello(&lab, ids[1].clone());
    lab.root.handle_datagram(START, leaf_address(2), &hello);
    drain(&mut lab.root);
    assert_eq!(lab.root.pending_validations(), 1);

    // A's ECHO is answered at once.
    let now = START + Millis(10);
    a.send_echo(now, root_id, b"still here");
    let (echoes, _) = drain(&mut a);
    assert!(!echoes.is_empty());
    for (_, data) in &echoes {
        lab.root.handle_datagram(now, a_from, data);
    }
    let (answers, _) = drain(&mut lab.root);
    assert!(!answers.is_empty(), "the root answered A");
    for (_, data) in &answers {
        a.handle_datagram(now, root_address(0), data);
    }
    let (_, events) = drain(&mut a);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::EchoReply { payload, .. } if payload == b"still here"
        )),
        "{events:?}"
    );
    assert_eq!(lab.root.pending_validations(), 1);
}

#[test]
fn inline_validation_stays_the_default() {
    let ids = generate_identities(2, 0x6f66_6606);
    let planet = Sim::new(6, LinkConfig::default(), vec![ids[0].clone()])
        .planet()
        .clone();
    assert!(!NodeConfig::new(ids[0].clone(), planet.clone()).defer_identity_validation);
    let mut root = Node::new(NodeConfig::new(ids[0].clone(), planet.clone()), START);
    drain(&mut root);
    let lab = Lab {
        root: Node::new(NodeConfig::new(ids[0].clone(), planet.clone()), START),
        planet,
        root_identity: ids[0].clone(),
    };
    let (_leaf, hello) = leaf_and_hello(&lab, ids[1].clone());
    root.handle_datagram(START, leaf_address(1), &hello);
    let (transmits, events) = drain(&mut root);
    assert!(validations(&events).is_empty());
    assert_eq!(learned(&events), vec![ids[1].clone()]);
    assert!(!transmits.is_empty(), "answered at once");
    assert_eq!(root.pending_validations(), 0);
}

/// Carries every datagram between `hosts` (by physical address) until none is left;
/// returns each host's events.
fn pump(hosts: &mut [(SocketAddr, Node)], now: Timestamp) -> Vec<Vec<Event>> {
    let mut events: Vec<Vec<Event>> = hosts.iter().map(|_| Vec::new()).collect();
    for _ in 0..50 {
        let mut moved = false;
        for i in 0..hosts.len() {
            let from = hosts[i].0;
            let (transmits, mut evs) = drain(&mut hosts[i].1);
            events[i].append(&mut evs);
            for (to, data) in transmits {
                if let Some(j) = hosts.iter().position(|(a, _)| *a == to) {
                    hosts[j].1.handle_datagram(now, from, &data);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    events
}

#[test]
fn an_identity_from_whois_waits_for_the_verdict_with_the_packets_it_held() {
    let ids = generate_identities(3, 0x6f66_6607);
    let planet = Sim::new(7, LinkConfig::default(), vec![ids[0].clone()])
        .planet()
        .clone();
    let node = |identity: &Identity, defer: bool| {
        let mut config = NodeConfig::new(identity.clone(), planet.clone());
        config.defer_identity_validation = defer;
        let mut node = Node::new(config, START);
        node.handle_timeout(START);
        node
    };
    // The root validates inline; the leaf under test defers.
    let mut hosts = vec![
        (root_address(0), node(&ids[0], false)),
        (leaf_address(1), node(&ids[1], true)),
        (leaf_address(2), node(&ids[2], false)),
    ];
    pump(&mut hosts, START);
    assert!(hosts[1].1.is_online(START) && hosts[2].1.is_online(START));
    // The root's own identity comes with the planet: nothing was asked of the host.
    assert_eq!(hosts[1].1.pending_validations(), 0);

    // The other leaf pings ours through the root: ours asks the root WHOIS, and the answer
    // waits for the verdict, as does the ECHO.
    let now = START + Millis(100);
    hosts[2].1.send_echo(now, ids[1].address(), b"via whois");
    let events = pump(&mut hosts, now);
    assert_eq!(validations(&events[1]), vec![ids[2].clone()]);
    assert!(learned(&events[1]).is_empty());
    assert!(!events[2]
        .iter()
        .any(|e| matches!(e, Event::EchoReply { .. })));

    hosts[1].1.identity_validated(now, &ids[2], true);
    let events = pump(&mut hosts, now);
    assert_eq!(learned(&events[1]), vec![ids[2].clone()]);
    assert!(
        events[2].iter().any(|e| matches!(
            e,
            Event::EchoReply { payload, .. } if payload == b"via whois"
        )),
        "the held ECHO was answered: {:?}",
        events[2]
    );
    assert_eq!(hosts[1].1.pending_validations(), 0);
}
