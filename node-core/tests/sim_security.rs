//! Security in the simulator (issue 8, items 3 and 4): replayed datagrams are harmless, a
//! stranger cannot inject frames into a private network (not with a forged source, not with
//! a stolen COM), and a member cannot send from another member's MAC, nor from an IP it
//! does not own when the rules ask for ownership.
//!
//! Already shown in sim_vl2.rs and not repeated here: a non-member's own port cannot send
//! (`a_member_that_is_not_in_the_network_cannot_send_into_it`), a revoked member is cut off
//! (`a_revoked_member_is_cut_off`), and a locally switched frame from a non-member fails the
//! gate (`local_peers_switch_unicast_frames_without_udp`).

#[path = "common/fault_lab.rs"]
mod fault_lab;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fault_lab::{clean, config_for, frame, ipv4_packet, Lab, LabSpec};
use node_core::crypto::{armor, CipherSuite, PeerKey};
use node_core::metrics::DropReason;
use node_core::node::{ConfigAnswer, NetworkStatus};
use node_core::sim::HostId;
use node_core::vl2::filter::characteristics;
use node_core::vl2::verbs::{ExtFrameRepr, FrameView};
use node_core::vl2::{CertificateOfMembership, Mac, Rule, RuleKind};
use node_core::wire::{emit_header, Verb};
use node_core::{Address, Identity, Millis};

/// An attacker's address no host has: answers sent there are lost.
fn attacker_address() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 4444)
}

/// A packet from `sender` to `receiver` armored with `key` (the right one or not).
fn craft(
    source: Address,
    dest: Address,
    verb: Verb,
    payload: &[u8],
    key: &PeerKey,
    id: u64,
) -> Vec<u8> {
    let mut packet = Vec::new();
    emit_header(&mut packet, id.to_be_bytes(), dest, source, verb);
    packet.extend_from_slice(payload);
    armor(&mut packet, key, CipherSuite::Salsa2012Poly1305);
    packet
}

/// The key `from` shares with `to` (needs `from`'s secret).
fn key_between(lab: &Lab, from: HostId, to: HostId) -> PeerKey {
    let secret: Identity = lab.sim.host(from).node.identity().clone();
    secret
        .agree(lab.sim.host(to).node.identity())
        .expect("the sender's identity has its secret")
}

fn frame_payload(lab: &Lab, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameView {
        network_id: lab.nwid,
        ethertype,
        payload,
    }
    .emit(&mut out);
    out
}

fn ext_frame_payload(
    lab: &Lab,
    com: Option<CertificateOfMembership>,
    to: Mac,
    from: Mac,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    ExtFrameRepr {
        network_id: lab.nwid,
        flags: 0,
        com,
        to,
        from,
        ethertype: 0x0800,
        payload: payload.to_vec(),
    }
    .emit(&mut out);
    out
}

/// `from` sends `packet` to `to`'s address (no link effects) and the run goes on a while.
fn inject(lab: &mut Lab, from: SocketAddr, to: HostId, packet: Vec<u8>) {
    let at = lab.sim.now();
    let to = lab.sim.host(to).local;
    lab.sim.inject(at, from, to, packet);
    lab.sim.run_for(Millis(2_000));
}

/// True if any host has a path at `remote` to any peer.
fn anyone_has_path_at(lab: &Lab, remote: SocketAddr) -> bool {
    let now = lab.sim.now();
    lab.sim.hosts().iter().any(|h| {
        h.node
            .peers(now)
            .iter()
            .any(|p| p.paths.iter().any(|x| x.address == remote))
    })
}

/// Everything delivered during setup is replayed later: each datagram again from its own
/// source, then every datagram to member a from an attacker's address. No host learns a path
/// to the attacker's address (learning needs an OK to a HELLO of ours, which only the peer
/// can make), a's config is not rolled back to an older one by replayed config chunks, and
/// the network keeps working.
#[test]
fn replayed_datagrams_learn_no_path_and_do_not_roll_back_the_config() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 6,
            link: clean(),
            roots: 1,
            members: vec![None; 2],
        },
        |_, _| {},
    );
    lab.sim.capture(true);
    assert!(lab.join_all(Millis(60_000)));
    let (a, b) = (lab.members[0], lab.members[1]);
    assert!(lab.deliver_with_retries(a, b, "setup", 3, Millis(1_000)));
    assert!(lab.deliver_with_retries(b, a, "setup", 3, Millis(1_000)));

    // The controller pushes a second config, then a third: the first two stay in the capture.
    let controller_identity = lab.sim.host(lab.controller).node.identity().clone();
    let a_identity = lab.sim.host(a).node.identity().public_only();
    let addr_a = lab.sim.address_of(a);
    let nwid = lab.nwid;
    for name in ["second", "third"] {
        lab.policy.borrow_mut().name = name.into();
        lab.sim.run_for(Millis(1_000));
        let config = config_for(
            &controller_identity,
            nwid,
            &a_identity,
            lab.sim.now(),
            &lab.policy.borrow(),
        );
        lab.sim.with_node(lab.controller, move |n, now| {
            n.answer_config_request(now, nwid, addr_a, 0, ConfigAnswer::Config(Box::new(config)))
        });
        lab.sim.run_for(Millis(1_000));
    }
    let newest = lab.config(a).expect("a has a config");
    assert_eq!(newest.name, "third");
    // Everything up to (not including) the third config.
    let third_sent = newest.timestamp;
    let old: Vec<_> = lab
        .sim
        .captured()
        .iter()
        .filter(|d| d.at.as_millis() < third_sent)
        .cloned()
        .collect();
    assert!(
        lab.applied_configs(a).iter().any(|c| c.name == "second"),
        "a applied the second config before the third"
    );
    assert!(
        old.len() > 20,
        "the capture holds the setup ({})",
        old.len()
    );

    let a_local = lab.sim.host(a).local;
    let now = lab.sim.now();
    for d in &old {
        lab.sim.inject(now, d.from, d.to, d.data.clone());
    }
    lab.sim.run_for(Millis(3_000));
    let attacker = attacker_address();
    let now = lab.sim.now();
    for d in old.iter().filter(|d| d.to == a_local) {
        lab.sim.inject(now, attacker, a_local, d.data.clone());
    }
    lab.sim.run_for(Millis(3_000));
    // Again much later, when every reply a was waiting for has timed out.
    lab.sim.run_for(Millis(60_000));
    let now = lab.sim.now();
    for d in old.iter().filter(|d| d.to == a_local) {
        lab.sim.inject(now, attacker, a_local, d.data.clone());
    }
    lab.sim.run_for(Millis(3_000));

    assert!(
        !anyone_has_path_at(&lab, attacker),
        "no path to the attacker's address is learned"
    );
    let config = lab.config(a).expect("a keeps a config");
    assert!(
        config.timestamp >= newest.timestamp,
        "a's config is not rolled back: {} < {}",
        config.timestamp,
        newest.timestamp
    );
    let applied = lab.applied_configs(a);
    assert!(
        applied.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
        "a never applied an older config: {:?}",
        applied
            .iter()
            .map(|c| (c.timestamp, &c.name))
            .collect::<Vec<_>>()
    );
    assert_eq!(lab.status(a), Some(NetworkStatus::Ok));
    assert!(lab.sim.host(a).node.is_online(lab.sim.now()));
    assert!(lab.deliver_with_retries(a, b, "after replay", 3, Millis(1_000)));
    assert!(lab.deliver_with_retries(b, a, "after replay", 3, Millis(1_000)));
}

/// A stranger x (known to the root, refused by the controller) tries to get frames onto
/// member a's port: a FRAME claiming member b as its source but armored with x's own key, a
/// FRAME in its own name, and an EXT_FRAME carrying b's real COM. All are dropped; a valid
/// frame from b still gets through.
#[test]
fn a_stranger_cannot_inject_frames() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 7,
            link: clean(),
            roots: 1,
            members: vec![None; 3],
        },
        |_, _| {},
    );
    let (a, b, x) = (lab.members[0], lab.members[1], lab.members[2]);
    let addr_x = lab.sim.address_of(x);
    lab.policy.borrow_mut().authorized.remove(&addr_x);
    let nwid = lab.nwid;
    for host in [a, b, x] {
        lab.sim.with_node(host, |n, now| n.join(now, nwid, None));
    }
    lab.sim.run_for(Millis(10_000));
    assert_eq!(lab.status(x), Some(NetworkStatus::AccessDenied));
    assert!(lab.deliver_with_retries(b, a, "genuine", 3, Millis(1_000)));

    let (addr_a, addr_b) = (lab.sim.address_of(a), lab.sim.address_of(b));
    let (x_local, b_local) = (lab.sim.host(x).local, lab.sim.host(b).local);
    let key_xa = key_between(&lab, x, a);
    let body = ipv4_packet(lab.ip(b), lab.ip(a), b"forged");
    let before = lab.frames_at(a).len();

    // 1. Forged source: b's address, x's key, from b's own physical address even.
    let payload = frame_payload(&lab, 0x0800, &body);
    let forged = craft(addr_b, addr_a, Verb::Frame, &payload, &key_xa, 0x1111);
    inject(&mut lab, b_local, a, forged);
    // 2. In x's own name, properly armored: a knows x but x holds no COM.
    let own = craft(addr_x, addr_a, Verb::Frame, &payload, &key_xa, 0x2222);
    inject(&mut lab, x_local, a, own);
    // 3. With b's COM attached (stolen): it names b's identity, not x's.
    let stolen = lab.config(b).and_then(|c| c.com).expect("b has a COM");
    let ext = ext_frame_payload(&lab, Some(stolen), lab.mac(a), lab.mac(x), &body);
    let with_com = craft(addr_x, addr_a, Verb::ExtFrame, &ext, &key_xa, 0x3333);
    inject(&mut lab, x_local, a, with_com);
    // 4. Both at once: b's address and COM, x's key.
    let ext = ext_frame_payload(
        &lab,
        lab.config(b).and_then(|c| c.com),
        lab.mac(a),
        lab.mac(b),
        &body,
    );
    let forged_ext = craft(addr_b, addr_a, Verb::ExtFrame, &ext, &key_xa, 0x4444);
    inject(&mut lab, x_local, a, forged_ext);

    assert_eq!(
        lab.frames_at(a).len(),
        before,
        "nothing from the stranger reaches a's port"
    );
    assert!(
        lab.sim
            .host(a)
            .node
            .metrics()
            .dropped(DropReason::MacFailure)
            >= 2
    );
    assert!(lab.deliver_with_retries(b, a, "still genuine", 3, Millis(1_000)));
}

/// Member b crafts EXT_FRAMEs to a from c's MAC (b's own port never sends them: we bridge
/// nothing): a drops them, while the same crafted frame from b's own MAC is delivered.
#[test]
fn a_member_cannot_send_from_another_members_mac() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 8,
            link: clean(),
            roots: 1,
            members: vec![None; 3],
        },
        |_, _| {},
    );
    assert!(lab.join_all(Millis(60_000)));
    let (a, b, c) = (lab.members[0], lab.members[1], lab.members[2]);
    assert!(lab.deliver_with_retries(b, a, "credentials", 3, Millis(1_000)));

    // b's port sending with c's MAC: the node does not send it.
    let spoofed = frame(
        lab.mac(a),
        lab.mac(c),
        0x0800,
        &ipv4_packet(lab.ip(c), lab.ip(a), b"port"),
    );
    let sent = lab.sim.stats.sent;
    lab.send_frame(b, spoofed);
    assert_eq!(lab.sim.stats.sent, sent, "b's node sends nothing for it");

    let (addr_a, addr_b) = (lab.sim.address_of(a), lab.sim.address_of(b));
    let b_local = lab.sim.host(b).local;
    let key_ba = key_between(&lab, b, a);
    let body = ipv4_packet(lab.ip(b), lab.ip(a), b"crafted");
    let before = lab.frames_at(a).len();
    let ext = ext_frame_payload(&lab, None, lab.mac(a), lab.mac(c), &body);
    inject(
        &mut lab,
        b_local,
        a,
        craft(addr_b, addr_a, Verb::ExtFrame, &ext, &key_ba, 0x5555),
    );
    assert_eq!(
        lab.frames_at(a).len(),
        before,
        "a drops a frame from c's MAC sent by b"
    );

    let ext = ext_frame_payload(&lab, None, lab.mac(a), lab.mac(b), &body);
    inject(
        &mut lab,
        b_local,
        a,
        craft(addr_b, addr_a, Verb::ExtFrame, &ext, &key_ba, 0x6666),
    );
    assert_eq!(
        lab.frames_at(a),
        lab.frames_at(a)[..before]
            .iter()
            .cloned()
            .chain([frame(lab.mac(a), lab.mac(b), 0x0800, &body)])
            .collect::<Vec<_>>(),
        "the same crafted frame from b's own MAC is delivered"
    );
}

/// The network's rules drop IPv4 whose source the sender does not own (NOT
/// MATCH_CHARACTERISTICS sender-IP-authenticated → DROP), and the controller gives each
/// member a certificate of ownership of its IP. A frame from member b with b's IP reaches a;
/// a frame from b with c's IP is dropped by a, whether b's port sends it or b crafts it.
#[test]
fn rules_requiring_ip_ownership_drop_frames_from_ips_the_sender_does_not_own() {
    let mut lab = Lab::new(
        LabSpec {
            seed: 9,
            link: clean(),
            roots: 1,
            members: vec![None; 3],
        },
        |_, _| {},
    );
    {
        let mut policy = lab.policy.borrow_mut();
        policy.ownership = true;
        policy.rules = vec![
            Rule {
                not: false,
                or: false,
                kind: RuleKind::Ethertype(0x0800),
            },
            Rule {
                not: true,
                or: false,
                kind: RuleKind::Characteristics(characteristics::SENDER_IP_AUTHENTICATED),
            },
            Rule {
                not: false,
                or: false,
                kind: RuleKind::Drop,
            },
            Rule {
                not: false,
                or: false,
                kind: RuleKind::Accept,
            },
        ];
    }
    assert!(lab.join_all(Millis(60_000)));
    let (a, b, c) = (lab.members[0], lab.members[1], lab.members[2]);
    assert!(!lab.config(b).unwrap().certificates_of_ownership.is_empty());
    assert!(
        lab.deliver_with_retries(b, a, "own IP", 3, Millis(1_000)),
        "b's frame from its own IP is delivered"
    );

    let before = lab.frames_at(a).len();
    let not_owned = ipv4_packet(lab.ip(c), lab.ip(a), b"not mine");
    lab.send_frame(b, frame(lab.mac(a), lab.mac(b), 0x0800, &not_owned));
    lab.sim.run_for(Millis(2_000));
    let (addr_a, addr_b) = (lab.sim.address_of(a), lab.sim.address_of(b));
    let b_local = lab.sim.host(b).local;
    let key_ba = key_between(&lab, b, a);
    let payload = frame_payload(&lab, 0x0800, &not_owned);
    inject(
        &mut lab,
        b_local,
        a,
        craft(addr_b, addr_a, Verb::Frame, &payload, &key_ba, 0x7777),
    );
    assert_eq!(
        lab.frames_at(a).len(),
        before,
        "a drops frames from an IP b does not own"
    );
    // The crafted path works for an owned IP (so the drop above is the rule's doing).
    let owned = ipv4_packet(lab.ip(b), lab.ip(a), b"mine, crafted");
    let payload = frame_payload(&lab, 0x0800, &owned);
    inject(
        &mut lab,
        b_local,
        a,
        craft(addr_b, addr_a, Verb::Frame, &payload, &key_ba, 0x8888),
    );
    assert_eq!(
        lab.frames_at(a).last(),
        Some(&frame(lab.mac(a), lab.mac(b), 0x0800, &owned))
    );
}
