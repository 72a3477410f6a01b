//! VL1 in the simulator: many nodes and a root on a virtual clock, with loss and NATs.
//!
//! What this shows (issue "The engine, part 1"): 50 nodes and one root with 2 % loss all reach
//! each other through the root, then move to direct paths after RENDEZVOUS; nodes behind
//! symmetric NATs stay reachable by relay; the same seed gives the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use node_core::node::{Event, PeerRole};
use node_core::sim::{generate_identities, LinkConfig, NatKind, Sim};
use node_core::{Identity, Millis};

const NODES: usize = 50;

/// Identity generation is the expensive part (a memory-hard hash); make them once.
fn identities() -> &'static [Identity] {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    IDS.get_or_init(|| generate_identities(NODES + 3, 0x2d2d_2d2d))
}

fn lossy() -> LinkConfig {
    LinkConfig {
        loss: 0.02,
        duplicate: 0.0,
        latency: Millis(15),
        jitter: Millis(10),
    }
}

/// Echo replies a host received so far: (from, hops) in order.
fn echo_replies(sim: &Sim, host: usize) -> Vec<(node_core::Address, u8)> {
    sim.host(host)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::EchoReply { from, hops, .. } => Some((*from, *hops)),
            _ => None,
        })
        .collect()
}

/// True if `host` has an active direct path to `other` at `other`'s own address.
fn has_direct_path(sim: &Sim, host: usize, other: usize) -> bool {
    let now = sim.now();
    let target = sim.address_of(other);
    let expected = sim.host(other).local;
    sim.host(host).node.peers(now).iter().any(|p| {
        p.address == target
            && p.paths
                .iter()
                .any(|path| path.active && path.address == expected)
    })
}

/// True if `host` has any active path to `other`, wherever it leads.
fn has_any_active_path(sim: &Sim, host: usize, other: usize) -> bool {
    let target = sim.address_of(other);
    sim.host(host)
        .node
        .peers(sim.now())
        .iter()
        .any(|p| p.address == target && p.paths.iter().any(|path| path.active))
}

/// Every host echoes every other host until each pair got a reply (or rounds run out).
/// Returns, per (from, to) pair, the hop count of the first reply.
fn echo_all_pairs(sim: &mut Sim, hosts: &[usize], rounds: usize) -> BTreeMap<(usize, usize), u8> {
    let mut first_reply = BTreeMap::new();
    for _ in 0..rounds {
        for &a in hosts {
            for &b in hosts {
                if a != b && !first_reply.contains_key(&(a, b)) {
                    let to = sim.address_of(b);
                    sim.with_node(a, |node, now| node.send_echo(now, to, b"ping"));
                }
            }
        }
        sim.run_for(Millis(3_000));
        for &a in hosts {
            let replies = echo_replies(sim, a);
            for &b in hosts {
                if a == b || first_reply.contains_key(&(a, b)) {
                    continue;
                }
                let addr = sim.address_of(b);
                if let Some((_, hops)) = replies.iter().find(|(from, _)| *from == addr) {
                    first_reply.insert((a, b), *hops);
                }
            }
        }
        if first_reply.len() == hosts.len() * (hosts.len() - 1) {
            break;
        }
    }
    first_reply
}

#[test]
fn fifty_nodes_meet_through_the_root_then_go_direct() {
    let ids = identities();
    let mut sim = Sim::new(7, lossy(), vec![ids[0].clone()]);
    let hosts: Vec<usize> = (1..=NODES)
        .map(|i| sim.add_node(ids[i].clone(), None))
        .collect();

    // Everyone comes online through the root.
    let online = sim.run_until_true(Millis(120_000), Millis(1_000), |s| {
        hosts.iter().all(|&h| s.host(h).node.is_online(s.now()))
    });
    assert!(
        online,
        "all {NODES} nodes should come online through the root"
    );
    let root_peers = sim.host(0).node.peers(sim.now());
    assert_eq!(
        root_peers
            .iter()
            .filter(|p| p.role == PeerRole::Leaf)
            .count(),
        NODES
    );

    // First contact: every pair reaches each other, and the first answers come relayed.
    let first = echo_all_pairs(&mut sim, &hosts, 10);
    assert_eq!(
        first.len(),
        NODES * (NODES - 1),
        "every pair must get an echo reply"
    );
    let relayed = first.values().filter(|h| **h > 0).count();
    assert!(
        relayed * 2 > first.len(),
        "most first replies should come through the root (relayed {relayed} of {})",
        first.len()
    );

    // After RENDEZVOUS every pair has a direct path. Traffic keeps flowing meanwhile, as it
    // does between real applications: a pair whose one contact attempt was lost keeps being
    // relayed, and the root introduces it again (once per pair per 30 s, as 1.14 does).
    let missing = |sim: &Sim| -> Vec<(usize, usize)> {
        hosts
            .iter()
            .flat_map(|&a| hosts.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a != b && !has_direct_path(sim, a, b))
            .collect()
    };
    for _ in 0..40 {
        let pending = missing(&sim);
        if pending.is_empty() {
            break;
        }
        for (a, b) in pending {
            let to = sim.address_of(b);
            sim.with_node(a, |node, now| node.send_echo(now, to, b"still relayed?"));
        }
        sim.run_for(Millis(5_000));
    }
    let left = missing(&sim);
    assert!(
        left.is_empty(),
        "every pair should have a direct path; missing: {left:?}"
    );

    // And traffic now flows directly: a fresh echo comes back with zero hops.
    let (a, b) = (hosts[3], hosts[41]);
    let before = echo_replies(&sim, a).len();
    let to = sim.address_of(b);
    sim.with_node(a, |node, now| node.send_echo(now, to, b"direct?"));
    sim.run_for(Millis(2_000));
    let after = echo_replies(&sim, a);
    assert!(
        after.len() > before,
        "the echo over the direct path should be answered"
    );
    assert_eq!(
        after.last().map(|r| r.1),
        Some(0),
        "the answer should come directly"
    );
    assert!(sim.stats.lost > 0, "the links should have lost datagrams");
}

#[test]
fn symmetric_nat_nodes_stay_reachable_by_relay() {
    let ids = identities();
    let mut sim = Sim::new(11, lossy(), vec![ids[0].clone()]);
    let public_a = sim.add_node(ids[1].clone(), None);
    let natted_b = sim.add_node(ids[2].clone(), Some(NatKind::Symmetric));
    let natted_c = sim.add_node(ids[3].clone(), Some(NatKind::Symmetric));
    let cone_d = sim.add_node(ids[4].clone(), Some(NatKind::PortRestricted));
    let hosts = [public_a, natted_b, natted_c, cone_d];

    let online = sim.run_until_true(Millis(60_000), Millis(1_000), |s| {
        hosts.iter().all(|&h| s.host(h).node.is_online(s.now()))
    });
    assert!(online, "NATed nodes come online through the root");

    let first = echo_all_pairs(&mut sim, &hosts, 10);
    assert_eq!(first.len(), 12, "every pair reaches each other: {first:?}");
    sim.run_for(Millis(60_000));

    // Two symmetric NATs can never open a path to each other: they keep using the root.
    assert!(!has_any_active_path(&sim, natted_b, natted_c));
    assert!(!has_any_active_path(&sim, natted_c, natted_b));
    let before = echo_replies(&sim, natted_b).len();
    let to = sim.address_of(natted_c);
    // Four relayed legs at 2 % loss each: allow a few tries.
    for _ in 0..5 {
        sim.with_node(natted_b, |node, now| {
            node.send_echo(now, to, b"still there?")
        });
        sim.run_for(Millis(1_000));
        if echo_replies(&sim, natted_b).len() > before {
            break;
        }
    }
    let after = echo_replies(&sim, natted_b);
    assert!(
        after.len() > before,
        "relayed echo between symmetric NATs is answered"
    );
    assert!(
        after.last().is_some_and(|(_, hops)| *hops > 0),
        "it came through the root"
    );

    // The public node and the port-restricted node do get a direct path to each other.
    let direct =
        sim.run_until_true(Millis(60_000), Millis(2_000), |s| {
            s.host(cone_d).node.peers(s.now()).iter().any(|p| {
                p.address == s.address_of(public_a) && p.paths.iter().any(|path| path.active)
            })
        });
    assert!(
        direct,
        "a port-restricted cone NAT gets a direct path after RENDEZVOUS"
    );
}

/// Runs a small scenario and returns a fingerprint of everything that happened.
fn fingerprint(seed: u64) -> (node_core::sim::SimStats, Vec<String>) {
    let ids = identities();
    let mut sim = Sim::new(seed, lossy(), vec![ids[0].clone()]);
    let hosts: Vec<usize> = (1..=6)
        .map(|i| sim.add_node(ids[i].clone(), None))
        .collect();
    sim.run_for(Millis(20_000));
    echo_all_pairs(&mut sim, &hosts, 3);
    sim.run_for(Millis(30_000));
    let mut log = Vec::new();
    for (i, host) in sim.hosts().iter().enumerate() {
        for e in &host.events {
            log.push(format!("{i}: {e:?}"));
        }
        let peers: BTreeSet<String> = host
            .node
            .peers(sim.now())
            .iter()
            .map(|p| {
                format!(
                    "{} {:?} {:?}",
                    p.address,
                    p.latency,
                    p.paths.iter().map(|x| x.address).collect::<Vec<_>>()
                )
            })
            .collect();
        log.push(format!("{i} peers {peers:?}"));
    }
    (sim.stats, log)
}

#[test]
fn same_seed_same_run() {
    let (stats_a, log_a) = fingerprint(99);
    let (stats_b, log_b) = fingerprint(99);
    assert_eq!(stats_a, stats_b);
    assert_eq!(log_a, log_b);
    let (stats_c, _) = fingerprint(100);
    assert_ne!(stats_a, stats_c, "another seed should give another run");
}
