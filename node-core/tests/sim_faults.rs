//! Faults in the simulator (issue 8, item 3): lossy links that reorder and duplicate, a root
//! going down (and every planet root, with a moon left), the controller going down and
//! coming back, and NAT rebinding. Each runs a small private network on a virtual clock,
//! seeded, so a failure replays exactly.

#[path = "common/fault_lab.rs"]
mod fault_lab;

use fault_lab::{clean, Lab, LabSpec};
use node_core::crypto::c25519::KeyPair;
use node_core::sim::{root_address, LinkConfig, NatKind};
use node_core::world::{Root, World, WorldKind};
use node_core::{Identity, Millis};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Every ordered pair of `hosts`.
fn pairs(hosts: &[usize]) -> Vec<(usize, usize)> {
    hosts
        .iter()
        .flat_map(|&a| hosts.iter().map(move |&b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect()
}

/// Sends frames between every pair until each has a direct path both ways (or rounds run
/// out); returns the pairs still without one.
fn settle_direct_paths(lab: &mut Lab, hosts: &[usize], rounds: usize) -> Vec<(usize, usize)> {
    for round in 0..rounds {
        let missing: Vec<(usize, usize)> = pairs(hosts)
            .into_iter()
            .filter(|&(a, b)| !lab.has_direct_path(a, b))
            .collect();
        if missing.is_empty() {
            return missing;
        }
        for (a, b) in missing {
            let frame = lab.ip_frame(a, b, format!("settle {round}").as_bytes());
            lab.send_frame(a, frame);
        }
        lab.sim.run_for(Millis(5_000));
    }
    pairs(hosts)
        .into_iter()
        .filter(|&(a, b)| !lab.has_direct_path(a, b))
        .collect()
}

/// 5 % loss, 5 % duplication and jitter larger than the latency (datagrams overtake each
/// other): members still find each other through the root, get their configs, go direct,
/// and frames get through with retries. Duplicated or reordered config answers are applied
/// once and never roll a config back.
#[test]
fn five_percent_loss_with_reordering_and_duplication() {
    let link = LinkConfig {
        loss: 0.05,
        duplicate: 0.05,
        latency: Millis(20),
        jitter: Millis(40),
    };
    let mut lab = Lab::new(
        LabSpec {
            seed: 1,
            link,
            roots: 1,
            members: vec![None; 4],
        },
        |_, _| {},
    );
    assert!(
        lab.join_all(Millis(120_000)),
        "every member gets its config"
    );
    let members = lab.members.clone();
    for (a, b) in pairs(&members) {
        assert!(
            lab.deliver_with_retries(a, b, "lossy", 10, Millis(2_000)),
            "a frame from {a} reaches {b}"
        );
    }
    let left = settle_direct_paths(&mut lab, &members, 30);
    assert!(left.is_empty(), "pairs without a direct path: {left:?}");
    // Several config refreshes (every 60 s) under the same loss.
    lab.sim.run_for(Millis(200_000));
    for (a, b) in pairs(&members) {
        assert!(lab.deliver_with_retries(a, b, "later", 10, Millis(2_000)));
    }

    let stats = lab.sim.stats;
    assert!(stats.lost > 0 && stats.duplicated > 0, "{stats:?}");
    for &m in &members {
        let applied = lab.applied_configs(m);
        let address = lab.sim.address_of(m);
        let answered = lab
            .policy
            .borrow()
            .answered
            .iter()
            .filter(|(to, _)| *to == address)
            .count();
        assert!(applied.len() >= 3, "member {m} refreshed its config");
        assert!(
            applied.len() <= answered,
            "member {m} applied {} configs for {answered} answers",
            applied.len()
        );
        assert!(
            applied.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
            "member {m} applied each config once, in order: {:?}",
            applied.iter().map(|c| c.timestamp).collect::<Vec<_>>()
        );
    }
}

/// A planet of two roots; root 0 goes down. The direct path between two members keeps
/// carrying frames for minutes, and a member that never talked to another reaches it
/// through root 1, the only upstream left.
#[test]
fn a_root_going_down_keeps_direct_paths_and_new_contacts_use_the_other_root() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 2,
            link: clean(),
            roots: 2,
            members: vec![None; 3],
        },
        |_, _| {},
    );
    assert!(lab.join_all(Millis(60_000)));
    let (a, b, c) = (lab.members[0], lab.members[1], lab.members[2]);
    assert!(settle_direct_paths(&mut lab, &[a, b], 10).is_empty());

    lab.sim.set_online(lab.roots[0], false);
    lab.sim.capture(true);
    for minute in 0..5 {
        lab.sim.run_for(Millis(60_000));
        assert!(
            lab.deliver_with_retries(a, b, &format!("minute {minute}"), 3, Millis(1_000)),
            "a reaches b {minute} min after the root went down"
        );
        assert!(lab.deliver_with_retries(b, a, "back", 3, Millis(1_000)));
        assert!(lab.has_direct_path(a, b) && lab.has_direct_path(b, a));
    }
    assert!(lab.sim.dropped_offline() > 0, "traffic to root 0 was lost");

    // c has never talked to a: it has to look a up and be relayed by a root.
    let peers_of_c = lab.sim.host(c).node.peers(lab.sim.now());
    assert!(!peers_of_c
        .iter()
        .any(|p| p.address == lab.sim.address_of(a)));
    assert!(
        lab.deliver_with_retries(c, a, "first contact", 20, Millis(3_000)),
        "c reaches a through the remaining root"
    );
    let root_1 = root_address(1);
    let c_local = lab.sim.host(c).local;
    assert!(
        lab.sim
            .captured()
            .iter()
            .any(|d| d.from == c_local && d.to == root_1),
        "c talked to root 1"
    );
    assert!(lab.deliver_with_retries(a, c, "answer", 10, Millis(2_000)));
}

/// The members also orbit a moon. With both planet roots down, a first contact goes
/// through the moon's root, and existing direct paths keep working.
#[test]
fn with_every_planet_root_down_new_contacts_go_through_a_moon() {
    // The lab uses identities 0..6; the moon's root takes the last one.
    let moon_identity: Identity = fault_lab::fixed_identities()[7].clone();
    let moon_address = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), 9993);
    let signing = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(3));
    let moon = World::make(
        WorldKind::Moon,
        moon_identity.address().to_u64(),
        1,
        vec![Root {
            identity: moon_identity.public_only(),
            stable_endpoints: vec![moon_address],
        }],
        &signing,
        signing.public,
    );
    let orbit = moon.clone();
    let mut lab = Lab::new(
        LabSpec {
            seed: 3,
            link: clean(),
            roots: 2,
            members: vec![None; 3],
        },
        move |_, config| config.moons = vec![orbit.clone()],
    );
    let moon_root = {
        let moon = moon.clone();
        lab.sim
            .add_node_at(moon_identity, moon_address, None, move |config| {
                config.moons = vec![moon]
            })
    };
    assert!(lab.join_all(Millis(60_000)));
    let (a, b, c) = (lab.members[0], lab.members[1], lab.members[2]);
    assert!(lab.sim.host(moon_root).node.is_root());
    assert!(settle_direct_paths(&mut lab, &[a, b], 10).is_empty());

    for &root in &lab.roots.clone() {
        lab.sim.set_online(root, false);
    }
    lab.sim.capture(true);
    lab.sim.run_for(Millis(60_000));
    assert!(lab.deliver_with_retries(a, b, "planet gone", 3, Millis(1_000)));
    assert!(
        lab.deliver_with_retries(c, a, "via the moon", 20, Millis(3_000)),
        "c reaches a through the moon"
    );
    let c_local = lab.sim.host(c).local;
    assert!(lab
        .sim
        .captured()
        .iter()
        .any(|d| d.from == c_local && d.to == moon_address));
    assert!(lab.deliver_with_retries(a, c, "answer", 10, Millis(2_000)));
    assert!(lab.sim.host(a).node.is_online(lab.sim.now()));
}

/// The controller goes down. ZeroTier's credentials do not expire by the clock: a member
/// accepts another's COM while the two agree, i.e. while their timestamps are within the
/// network's max delta of each other (`CertificateOfMembership::agreesWith` in 1.14). So
/// members keep talking as long as the controller is away, however long. When it returns,
/// a member that got a fresh COM no longer agrees with one still holding the old COM (more
/// than max delta older): they are cut off from each other until that one gets its new
/// config too, after which they talk again.
#[test]
fn members_outlive_the_controller_until_their_credentials_disagree() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 4,
            link: clean(),
            roots: 1,
            members: vec![None; 2],
        },
        |_, _| {},
    );
    let max_delta = 120_000;
    lab.policy.borrow_mut().max_delta = max_delta;
    assert!(lab.join_all(Millis(60_000)));
    let (a, b) = (lab.members[0], lab.members[1]);
    assert!(lab.deliver_with_retries(a, b, "before", 3, Millis(1_000)));
    assert!(lab.deliver_with_retries(b, a, "before", 3, Millis(1_000)));
    let first_a = lab.config(a).unwrap().timestamp;

    lab.sim.set_online(lab.controller, false);
    for minute in 0..10 {
        lab.sim.run_for(Millis(60_000));
        assert!(
            lab.deliver_with_retries(a, b, &format!("down {minute}"), 3, Millis(1_000)),
            "members keep talking {minute} min into the outage"
        );
        assert!(lab.deliver_with_retries(b, a, "down", 3, Millis(1_000)));
    }
    assert_eq!(lab.config(a).unwrap().timestamp, first_a, "no refresh came");
    assert_eq!(lab.status(a), Some(node_core::node::NetworkStatus::Ok));

    // The controller returns but a's link to it stays broken: b refreshes, a does not.
    let addr_a = lab.sim.address_of(a);
    lab.policy.borrow_mut().ignored.insert(addr_a);
    lab.sim.set_online(lab.controller, true);
    assert!(
        lab.sim.run_until_true(Millis(120_000), Millis(1_000), |s| {
            s.host(b)
                .node
                .network(lab.nwid)
                .and_then(|n| n.config)
                .is_some_and(|c| c.timestamp > first_a + max_delta as i64)
        }),
        "b gets a fresh config"
    );
    assert!(
        !lab.deliver_with_retries(a, b, "stale to fresh", 5, Millis(2_000)),
        "b refuses a's COM: it is more than max delta older than b's"
    );
    // a judges b by the newest COM of b it holds. b pushes its fresh COM just before its
    // next frame, but nothing orders the two on arrival (in this run the frame is handled
    // first), so that one frame may still pass on b's older COM, which agrees with a's.
    // From then on a holds the fresh COM and refuses b.
    let carrier = lab.ip_frame(b, a, b"carries the fresh COM");
    lab.send_frame(b, carrier);
    lab.sim.run_for(Millis(2_000));
    assert!(
        !lab.deliver_with_retries(b, a, "fresh to stale", 5, Millis(2_000)),
        "a refuses b's COM for the same reason"
    );
    // The cut is the credentials, not the link: VL1 between them still works.
    let addr_b = lab.sim.address_of(b);
    lab.sim
        .with_node(a, |n, now| n.send_echo(now, addr_b, b"still there"));
    lab.sim.run_for(Millis(1_000));
    assert!(lab.sim.host(a).events.iter().any(|e| matches!(
        e,
        node_core::node::Event::EchoReply { from, .. } if *from == addr_b
    )));

    // a reaches the controller again: it refreshes, presents its new COM, and both talk.
    lab.policy.borrow_mut().ignored.clear();
    assert!(lab.sim.run_until_true(Millis(120_000), Millis(1_000), |s| {
        s.host(a)
            .node
            .network(lab.nwid)
            .and_then(|n| n.config)
            .is_some_and(|c| c.timestamp > first_a + max_delta as i64)
    }));
    assert!(lab.deliver_with_retries(a, b, "recovered", 10, Millis(2_000)));
    assert!(lab.deliver_with_retries(b, a, "recovered", 10, Millis(2_000)));
}

/// A member behind a port-restricted NAT whose mappings are lost (new public ports), then
/// whose NAT moves to a new public IP: the root and its direct peer learn the new address
/// from its keepalives (each answers the unknown address with a HELLO, whose OK confirms
/// it) within a heartbeat period and a timer tick, with no frame sent meanwhile; then frames
/// flow again.
#[test]
fn nat_rebinding_gets_paths_back() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 5,
            link: clean(),
            roots: 1,
            members: vec![Some(NatKind::PortRestricted), None],
        },
        |_, _| {},
    );
    assert!(lab.join_all(Millis(60_000)));
    let (a, b) = (lab.members[0], lab.members[1]);
    let root = lab.roots[0];
    assert!(settle_direct_paths(&mut lab, &[a, b], 10).is_empty());
    let b_local = lab.sim.host(b).local;
    let before = lab.sim.public_address(a, b_local).expect("a has a mapping");

    for (step, new_ip) in [
        ("new port", None),
        ("new IP", Some(IpAddr::V4(Ipv4Addr::new(100, 127, 0, 9)))),
    ] {
        let old = lab.sim.public_address(a, b_local).expect("a has a mapping");
        assert!(lab.sim.rebind_nat(a, new_ip));
        // Path heartbeat (14 s) plus the 5 s timer tick, plus slack for the HELLO round trip.
        let back = lab.sim.run_until_true(Millis(40_000), Millis(1_000), |s| {
            let Some(new) = s.public_address(a, b_local) else {
                return false;
            };
            new != old
                && [root, b].iter().all(|&h| {
                    s.host(h).node.peers(s.now()).iter().any(|p| {
                        p.address == s.address_of(a)
                            && p.paths.iter().any(|x| x.active && x.address == new)
                    })
                })
        });
        assert!(back, "{step}: the root and b learn a's new address");
        let new = lab.sim.public_address(a, b_local).unwrap();
        if new_ip.is_some() {
            assert_ne!(new.ip(), before.ip());
        }
        assert!(lab.has_active_path_at(b, a, new));
        assert!(lab.deliver_with_retries(b, a, step, 5, Millis(1_000)));
        assert!(lab.deliver_with_retries(a, b, step, 5, Millis(1_000)));
        assert!(lab.sim.host(a).node.is_online(lab.sim.now()));
    }
}
