//! VL2 on the virtual clock: members join a private network whose controller is the root,
//! are refused until authorized, get configs with COMs, resolve each other with ARP through
//! the multicast directory, exchange unicast frames, and a revoked member is cut off.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use node_core::node::{ConfigAnswer, Event, NetworkStatus, Node};
use node_core::sim::{generate_identities, HostId, LinkConfig, Sim};
use node_core::vl2::config::{NetworkConfig, FLAG_ENABLE_BROADCAST};
use node_core::vl2::credentials::CredentialType;
use node_core::vl2::{CertificateOfMembership, Mac, NetworkId, Revocation, Rule, RuleKind};
use node_core::wire::inet::InetAddress;
use node_core::wire::verb::ErrorCode;
use node_core::{Address, Identity, Millis, Timestamp};

/// Ethernet payload of an ARP request: who has `target`, tell `sender`.
fn arp_request(sender_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01];
    p.extend_from_slice(&sender_mac.0);
    p.extend_from_slice(&sender.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target.octets());
    p
}

fn frame(dest: Mac, source: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dest.0);
    f.extend_from_slice(&source.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn member_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 147, 17, i)
}

struct Lab {
    sim: Sim,
    nwid: NetworkId,
    a: HostId,
    b: HostId,
    c: HostId,
    authorized: Rc<RefCell<BTreeSet<Address>>>,
}

/// The root is the controller of `nwid`; it answers config requests from the authorized set
/// with a config carrying a COM, one IPv4 address and an accept-all rule.
fn lab(seed: u64) -> Lab {
    let ids = generate_identities(4, 0x7e20 + seed);
    let controller = ids[0].clone();
    let nwid = NetworkId((controller.address().to_u64() << 24) | 0x00_0001);
    let mut sim = Sim::new(seed, LinkConfig::default(), vec![controller.clone()]);
    let authorized: Rc<RefCell<BTreeSet<Address>>> = Rc::default();
    let members: Vec<Address> = ids[1..].iter().map(Identity::address).collect();
    {
        let authorized = authorized.clone();
        sim.set_responder(
            0,
            Box::new(move |node: &mut Node, now: Timestamp, event: &Event| {
                let Event::NetworkConfigRequest {
                    network_id,
                    requester,
                    packet_id,
                    ..
                } = event
                else {
                    return;
                };
                let address = requester.address();
                let answer = if authorized.borrow().contains(&address) {
                    let index = members.iter().position(|m| *m == address).unwrap_or(0) as u8;
                    ConfigAnswer::Config(Box::new(config_for(
                        &controller,
                        *network_id,
                        requester,
                        now,
                        member_ip(index + 1),
                    )))
                } else {
                    ConfigAnswer::Error(ErrorCode::NetworkAccessDenied)
                };
                node.answer_config_request(now, *network_id, address, *packet_id, answer);
            }),
        );
    }
    let a = sim.add_node(ids[1].clone(), None);
    let b = sim.add_node(ids[2].clone(), None);
    let c = sim.add_node(ids[3].clone(), None);
    Lab {
        sim,
        nwid,
        a,
        b,
        c,
        authorized,
    }
}

fn config_for(
    controller: &Identity,
    nwid: NetworkId,
    member: &Identity,
    now: Timestamp,
    ip: Ipv4Addr,
) -> NetworkConfig {
    let mut config = NetworkConfig::new(nwid, member.address());
    config.timestamp = now.as_millis();
    config.credential_time_max_delta = 1_800_000;
    config.multicast_limit = 32;
    config.flags = FLAG_ENABLE_BROADCAST;
    config.name = "sim".into();
    let mut com = CertificateOfMembership::new(now.as_millis() as u64, 1_800_000, nwid, member);
    com.sign(controller).expect("controller has its secret");
    config.com = Some(com);
    config.static_ips = vec![InetAddress::Ip(SocketAddr::new(IpAddr::V4(ip), 24))];
    config.rules = vec![Rule {
        not: false,
        or: false,
        kind: RuleKind::Accept,
    }];
    config
}

impl Lab {
    fn status(&self, host: HostId) -> Option<NetworkStatus> {
        self.sim
            .host(host)
            .node
            .network(self.nwid)
            .map(|n| n.status)
    }

    fn mac(&self, host: HostId) -> Mac {
        Mac::from_address(self.sim.address_of(host), self.nwid)
    }

    fn frames_at(&self, host: HostId) -> Vec<Vec<u8>> {
        self.sim
            .host(host)
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Frame { network_id, frame } if *network_id == self.nwid => {
                    Some(frame.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn send_frame(&mut self, host: HostId, frame: Vec<u8>) {
        let nwid = self.nwid;
        self.sim
            .with_node(host, move |n, now| n.handle_tap_frame(now, nwid, &frame));
    }

    fn clear_events(&mut self) {
        for host in [self.a, self.b, self.c] {
            self.sim.host_mut(host).events.clear();
        }
    }
}

#[test]
fn members_are_refused_until_authorized_then_talk() {
    let mut lab = lab(1);
    let (a, b, nwid) = (lab.a, lab.b, lab.nwid);
    lab.sim.run_for(Millis(3_000));
    for host in [a, b] {
        lab.sim.with_node(host, |n, now| n.join(now, nwid, None));
    }
    lab.sim.run_for(Millis(3_000));
    assert_eq!(lab.status(a), Some(NetworkStatus::AccessDenied));
    assert_eq!(lab.status(b), Some(NetworkStatus::AccessDenied));
    assert!(lab.sim.host(a).node.network(nwid).unwrap().config.is_none());

    // Authorized: the next request (every 5 s while unconfigured) gets a config.
    let (addr_a, addr_b) = (lab.sim.address_of(a), lab.sim.address_of(b));
    lab.authorized.borrow_mut().extend([addr_a, addr_b]);
    assert!(lab.sim.run_until_true(Millis(12_000), Millis(500), |s| {
        [a, b].iter().all(|&h| {
            s.host(h)
                .node
                .network(nwid)
                .is_some_and(|n| n.status == NetworkStatus::Ok && n.config.is_some())
        })
    }));
    let info = lab.sim.host(a).node.network(nwid).unwrap();
    let config = info.config.unwrap();
    assert_eq!(config.issued_to, addr_a);
    assert!(lab.sim.host(a).events.iter().any(|e| matches!(
        e,
        Event::NetworkConfigUpdated { network_id, dictionary, .. }
            if *network_id == nwid && NetworkConfig::from_bytes(dictionary).is_ok()
    )));
    assert!(info
        .multicast_subscriptions
        .contains(&node_core::vl2::MulticastGroup::ipv4_arp(member_ip(1))));
    // Let the LIKEs reach the root.
    lab.sim.run_for(Millis(1_000));

    // ARP: a asks who has b's address; b's port gets the request.
    lab.clear_events();
    let (mac_a, mac_b) = (lab.mac(a), lab.mac(b));
    let arp = arp_request(mac_a, member_ip(1), member_ip(2));
    lab.send_frame(a, frame(Mac::BROADCAST, mac_a, 0x0806, &arp));
    lab.sim.run_for(Millis(2_000));
    let at_b = lab.frames_at(b);
    assert_eq!(
        at_b,
        vec![frame(Mac::BROADCAST, mac_a, 0x0806, &arp)],
        "b receives a's ARP request once, unchanged"
    );

    // Unicast both ways (FRAME): an IPv4 payload from a to b and back.
    let ip_payload = b"\x45\x00\x00\x1c............hello".to_vec();
    lab.send_frame(a, frame(mac_b, mac_a, 0x0800, &ip_payload));
    lab.send_frame(b, frame(mac_a, mac_b, 0x0800, &ip_payload));
    lab.sim.run_for(Millis(1_000));
    assert!(lab
        .frames_at(b)
        .contains(&frame(mac_b, mac_a, 0x0800, &ip_payload)));
    assert_eq!(
        lab.frames_at(a),
        vec![frame(mac_a, mac_b, 0x0800, &ip_payload)]
    );
}

#[test]
fn a_member_that_is_not_in_the_network_cannot_send_into_it() {
    let mut lab = lab(2);
    let (a, c, nwid) = (lab.a, lab.c, lab.nwid);
    let addr_a = lab.sim.address_of(a);
    lab.authorized.borrow_mut().insert(addr_a);
    lab.sim.run_for(Millis(3_000));
    lab.sim.with_node(a, |n, now| n.join(now, nwid, None));
    lab.sim.with_node(c, |n, now| n.join(now, nwid, None));
    lab.sim.run_for(Millis(5_000));
    assert_eq!(lab.status(a), Some(NetworkStatus::Ok));
    assert_eq!(lab.status(c), Some(NetworkStatus::AccessDenied));
    // c has no config, so its port cannot send at all; and a forged frame from c (sent as
    // if c had a config) would fail a's gate. Check the first: nothing reaches a.
    lab.clear_events();
    let (mac_a, mac_c) = (lab.mac(a), lab.mac(c));
    lab.send_frame(c, frame(mac_a, mac_c, 0x0800, b"\x45\x00"));
    lab.sim.run_for(Millis(1_000));
    assert!(lab.frames_at(a).is_empty());
}

#[test]
fn a_revoked_member_is_cut_off() {
    let mut lab = lab(3);
    let (a, b, nwid) = (lab.a, lab.b, lab.nwid);
    let (addr_a, addr_b) = (lab.sim.address_of(a), lab.sim.address_of(b));
    lab.authorized.borrow_mut().extend([addr_a, addr_b]);
    lab.sim.run_for(Millis(3_000));
    for host in [a, b] {
        lab.sim.with_node(host, |n, now| n.join(now, nwid, None));
    }
    lab.sim.run_for(Millis(5_000));
    let (mac_a, mac_b) = (lab.mac(a), lab.mac(b));
    let payload = b"\x45\x00\x00\x14 before".to_vec();
    lab.send_frame(b, frame(mac_a, mac_b, 0x0800, &payload));
    lab.sim.run_for(Millis(1_000));
    assert_eq!(lab.frames_at(a).len(), 1, "b reaches a while authorized");

    // The controller revokes b's COM and tells a.
    lab.authorized.borrow_mut().remove(&addr_b);
    let controller = lab.sim.host(0).node.identity().clone();
    let mut revocation = Revocation::new(
        1,
        nwid,
        0,
        lab.sim.now().as_millis(),
        1,
        addr_b,
        CredentialType::CertificateOfMembership,
    );
    revocation.sign(&controller).unwrap();
    lab.sim
        .with_node(0, move |n, now| n.send_revocation(now, addr_a, revocation));
    lab.sim.run_for(Millis(1_000));
    lab.clear_events();
    let payload = b"\x45\x00\x00\x14 after".to_vec();
    lab.send_frame(b, frame(mac_a, mac_b, 0x0800, &payload));
    lab.sim.run_for(Millis(6_000));
    assert!(
        lab.frames_at(a).is_empty(),
        "a drops b's frames once b's COM is revoked"
    );
    // a asked b for a newer COM (ERROR NEED_MEMBERSHIP_CERTIFICATE); b has none newer.
}

/// Two members hosted in one process switch unicast frames to each other without a single
/// datagram; the receiver still applies its membership gate.
#[test]
fn local_peers_switch_unicast_frames_without_udp() {
    let mut lab = lab(4);
    let (a, b, c, nwid) = (lab.a, lab.b, lab.c, lab.nwid);
    let (addr_a, addr_b, addr_c) = (
        lab.sim.address_of(a),
        lab.sim.address_of(b),
        lab.sim.address_of(c),
    );
    lab.authorized.borrow_mut().extend([addr_a, addr_b]);
    lab.sim.run_for(Millis(3_000));
    for host in [a, b, c] {
        lab.sim.with_node(host, |n, now| n.join(now, nwid, None));
    }
    assert!(lab.sim.run_until_true(Millis(12_000), Millis(500), |s| {
        [a, b].iter().all(|&h| {
            s.host(h)
                .node
                .network(nwid)
                .is_some_and(|n| n.config.is_some())
        })
    }));
    // One exchange over UDP first, so each side holds the other's credentials.
    let (mac_a, mac_b) = (lab.mac(a), lab.mac(b));
    let ip_payload = b"\x45\x00\x00\x1c............hello".to_vec();
    lab.send_frame(a, frame(mac_b, mac_a, 0x0800, &ip_payload));
    lab.send_frame(b, frame(mac_a, mac_b, 0x0800, &ip_payload));
    lab.sim.run_for(Millis(2_000));
    assert!(lab
        .frames_at(b)
        .contains(&frame(mac_b, mac_a, 0x0800, &ip_payload)));

    let local: std::sync::Arc<BTreeSet<Address>> =
        std::sync::Arc::new([addr_a, addr_b].into_iter().collect());
    for host in [a, b] {
        let local = local.clone();
        lab.sim
            .with_node(host, move |n, _| n.set_local_peers(local));
    }
    lab.clear_events();
    let sent_before = lab.sim.stats.sent;
    let switched_payload = b"\x45\x00\x00\x1c............local".to_vec();
    lab.send_frame(a, frame(mac_b, mac_a, 0x0800, &switched_payload));
    assert_eq!(
        lab.sim.stats.sent, sent_before,
        "a switched frame sends no datagram"
    );
    let switched: Vec<(Address, u16, Vec<u8>)> = lab
        .sim
        .host(a)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SwitchedFrame {
                network_id,
                to,
                ethertype,
                payload,
            } if *network_id == nwid => Some((*to, *ethertype, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(switched, vec![(addr_b, 0x0800, switched_payload.clone())]);

    let delivered = lab.sim.with_node(b, |n, now| {
        n.handle_switched_frame(now, nwid, addr_a, 0x0800, &switched_payload)
    });
    assert!(delivered);
    assert_eq!(
        lab.frames_at(b),
        vec![frame(mac_b, mac_a, 0x0800, &switched_payload)]
    );

    // A frame "switched" from c, which holds no membership, fails b's gate: nothing
    // reaches b's port and c is asked for credentials over VL1.
    lab.clear_events();
    let sent_before = lab.sim.stats.sent;
    let delivered = lab.sim.with_node(b, |n, now| {
        n.handle_switched_frame(now, nwid, addr_c, 0x0800, &switched_payload)
    });
    assert!(!delivered);
    assert!(lab.frames_at(b).is_empty());
    assert!(lab.sim.stats.sent > sent_before, "b asks c for credentials");

    // Multicast still goes over VL1 (the directory decides who gets it).
    lab.clear_events();
    let arp = arp_request(mac_a, member_ip(1), member_ip(2));
    lab.send_frame(a, frame(Mac::BROADCAST, mac_a, 0x0806, &arp));
    assert!(!lab
        .sim
        .host(a)
        .events
        .iter()
        .any(|e| matches!(e, Event::SwitchedFrame { .. })));
    lab.sim.run_for(Millis(1_000));
    assert_eq!(
        lab.frames_at(b),
        vec![frame(Mac::BROADCAST, mac_a, 0x0806, &arp)]
    );
}
