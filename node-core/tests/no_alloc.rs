//! The unicast data path allocates nothing in steady state: two members of a network,
//! already joined and past their first exchange, move frames tap → FRAME datagram → port and
//! switch frames locally, while a counting global allocator watches this test's thread.
//!
//! This binary holds only these tests, because the allocator is global; counting is per
//! thread, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use node_core::node::{ConfigAnswer, Event, Node};
use node_core::sim::{generate_identities, HostId, LinkConfig, Sim};
use node_core::vl2::config::{NetworkConfig, FLAG_ENABLE_IPV6_NDP_EMULATION};
use node_core::vl2::network::rfc4193_address;
use node_core::vl2::{CertificateOfMembership, Mac, NetworkId, Rule, RuleKind, Tag};
use node_core::wire::inet::InetAddress;
use node_core::{Address, Identity, Millis, Timestamp};

/// Counts heap allocations (and reallocations) made on threads that turned counting on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches
// only const-initialized thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Heap allocations `f` made on this thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

fn frame(dest: Mac, source: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dest.0);
    f.extend_from_slice(&source.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
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
    config.name = "no-alloc".into();
    // NDP emulation and a tag, so that the rules engine has ownership and tags to consider.
    config.flags = FLAG_ENABLE_IPV6_NDP_EMULATION;
    let mut com = CertificateOfMembership::new(now.as_millis() as u64, 1_800_000, nwid, member);
    com.sign(controller).expect("controller has its secret");
    config.com = Some(com);
    let mut tag = Tag::new(
        nwid,
        now.as_millis(),
        member.address(),
        7,
        u32::from(ip.octets()[3]),
    );
    tag.sign(controller).expect("controller has its secret");
    config.tags = vec![tag];
    config.static_ips = vec![
        InetAddress::Ip(SocketAddr::new(IpAddr::V4(ip), 24)),
        InetAddress::Ip(SocketAddr::new(
            IpAddr::V6(rfc4193_address(nwid, member.address())),
            88,
        )),
    ];
    config.rules = vec![Rule {
        not: false,
        or: false,
        kind: RuleKind::Accept,
    }];
    config
}

/// Two members of a private network whose controller is the root, configured, each holding
/// the other's credentials and a direct path to it.
struct Pair {
    sim: Sim,
    nwid: NetworkId,
    a: HostId,
    b: HostId,
}

fn joined_pair(seed: u64) -> Pair {
    let ids = generate_identities(3, 0x0a11_0c00 + seed);
    let controller = ids[0].clone();
    let nwid = NetworkId((controller.address().to_u64() << 24) | 0x00_0042);
    let mut sim = Sim::new(seed, LinkConfig::default(), vec![controller.clone()]);
    let members: Vec<Address> = ids[1..].iter().map(Identity::address).collect();
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
            let index = members
                .iter()
                .position(|m| *m == requester.address())
                .unwrap_or(0) as u8;
            let config = config_for(
                &controller,
                *network_id,
                requester,
                now,
                Ipv4Addr::new(10, 42, 0, index + 1),
            );
            node.answer_config_request(
                now,
                *network_id,
                requester.address(),
                *packet_id,
                ConfigAnswer::Config(Box::new(config)),
            );
        }),
    );
    let a = sim.add_node(ids[1].clone(), None);
    let b = sim.add_node(ids[2].clone(), None);
    sim.run_for(Millis(3_000));
    for host in [a, b] {
        sim.with_node(host, |n, now| n.join(now, nwid, None));
    }
    assert!(sim.run_until_true(Millis(12_000), Millis(500), |s| {
        [a, b].iter().all(|&h| {
            s.host(h)
                .node
                .network(nwid)
                .is_some_and(|n| n.config.is_some())
        })
    }));
    let mut pair = Pair { sim, nwid, a, b };
    // One exchange through the simulator: credentials, LIKEs and direct paths settle.
    let (mac_a, mac_b) = (pair.mac(a), pair.mac(b));
    let hello = b"\x45\x00\x00\x1c............hello";
    for (from, to, src, dst) in [(a, b, mac_a, mac_b), (b, a, mac_b, mac_a)] {
        let f = frame(dst, src, 0x0800, hello);
        pair.sim
            .with_node(from, |n, now| n.handle_tap_frame(now, nwid, &f));
        pair.sim.run_for(Millis(2_000));
        assert!(
            pair.sim
                .host(to)
                .events
                .iter()
                .any(|e| matches!(e, Event::Frame { frame, .. } if *frame == f)),
            "the warm-up frame went through the simulator"
        );
    }
    for host in [0, a, b] {
        pair.sim.host_mut(host).events.clear();
    }
    pair
}

/// What a burst of frames did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    delivered: usize,
    datagrams: usize,
    /// Events other than the expected frames, or frames that differ.
    unexpected: usize,
}

impl Pair {
    fn mac(&self, host: HostId) -> Mac {
        Mac::from_address(self.sim.address_of(host), self.nwid)
    }

    /// Drives the two nodes by hand, as the agent's driver does, recycling every buffer:
    /// `frame` enters `from`'s port, its datagrams go straight to `to`, and `to`'s port
    /// output is checked against `frame`.
    fn unicast(&mut self, from: HostId, to: HostId, frame: &[u8], tally: &mut Tally) {
        let (nwid, now) = (self.nwid, self.sim.now());
        let from_addr = self.sim.host(from).local;
        let to_addr = self.sim.host(to).local;
        self.sim
            .host_mut(from)
            .node
            .handle_tap_frame(now, nwid, frame);
        while let Some(t) = self.sim.host_mut(from).node.poll_transmit() {
            tally.datagrams += 1;
            if t.to == to_addr {
                self.sim
                    .host_mut(to)
                    .node
                    .handle_datagram(now, from_addr, &t.data);
            } else {
                tally.unexpected += 1;
            }
            self.sim.host_mut(from).node.recycle(t.data);
        }
        self.drain_port(to, frame, tally);
        // Neither side should have anything else to say.
        for host in [from, to] {
            while let Some(t) = self.sim.host_mut(host).node.poll_transmit() {
                tally.unexpected += 1;
                self.sim.host_mut(host).node.recycle(t.data);
            }
        }
        self.drain_port(from, &[], tally);
    }

    /// `frame` enters `from`'s port and is switched to `to` in-process.
    fn switched(&mut self, from: HostId, to: HostId, frame: &[u8], tally: &mut Tally) {
        let (nwid, now) = (self.nwid, self.sim.now());
        let from_address = self.sim.address_of(from);
        self.sim
            .host_mut(from)
            .node
            .handle_tap_frame(now, nwid, frame);
        while let Some(event) = self.sim.host_mut(from).node.poll_event() {
            match event {
                Event::SwitchedFrame {
                    network_id,
                    to: target,
                    ethertype,
                    payload,
                } if target == self.sim.address_of(to) => {
                    self.sim.host_mut(to).node.handle_switched_frame(
                        now,
                        network_id,
                        from_address,
                        ethertype,
                        &payload,
                    );
                    self.sim.host_mut(from).node.recycle(payload);
                }
                _ => tally.unexpected += 1,
            }
        }
        self.drain_port(to, frame, tally);
        for host in [from, to] {
            while let Some(t) = self.sim.host_mut(host).node.poll_transmit() {
                tally.datagrams += 1;
                tally.unexpected += 1;
                self.sim.host_mut(host).node.recycle(t.data);
            }
        }
    }

    /// Takes `host`'s events: frames equal to `expected` count as delivered.
    fn drain_port(&mut self, host: HostId, expected: &[u8], tally: &mut Tally) {
        while let Some(event) = self.sim.host_mut(host).node.poll_event() {
            match event {
                Event::Frame { network_id, frame } => {
                    if network_id == self.nwid && frame == expected {
                        tally.delivered += 1;
                    } else {
                        tally.unexpected += 1;
                    }
                    self.sim.host_mut(host).node.recycle(frame);
                }
                _ => tally.unexpected += 1,
            }
        }
    }
}

/// Frames per direction in the counted window.
const BURST: usize = 200;
/// Rounds before counting: more than the 32 slots of the reassembly ring.
const WARM_UP_ROUNDS: usize = 40;
/// Ethernet payload sizes: a small packet, one that fills a 1432-byte datagram, and one
/// sent in two fragments (the network's MTU is 2800).
const PAYLOAD_SIZES: [usize; 3] = [64, 1_432 - 28 - 10, 2_000];

fn ip_payload(len: usize, seed: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    p[0] = 0x45;
    p
}

#[test]
fn unicast_frames_through_udp_allocate_nothing() {
    let mut pair = joined_pair(1);
    let (a, b) = (pair.a, pair.b);
    let (mac_a, mac_b) = (pair.mac(a), pair.mac(b));
    let frames: Vec<(HostId, HostId, Vec<u8>)> = PAYLOAD_SIZES
        .iter()
        .flat_map(|&len| {
            [
                (a, b, frame(mac_b, mac_a, 0x0800, &ip_payload(len, 3))),
                (b, a, frame(mac_a, mac_b, 0x0800, &ip_payload(len, 7))),
            ]
        })
        .collect();
    // Warm up: pools fill, queues and counters reach their working size, and every slot of
    // the reassembly ring (32, used in turn) has held a packet and kept its buffers.
    let mut warm = Tally::default();
    for _ in 0..WARM_UP_ROUNDS {
        for (from, to, f) in &frames {
            pair.unicast(*from, *to, f, &mut warm);
        }
    }
    assert_eq!(warm.unexpected, 0, "warm-up: {warm:?}");
    let mut tally = Tally::default();
    let ((), allocations) = allocations_in(|| {
        for _ in 0..BURST {
            for (from, to, f) in &frames {
                pair.unicast(*from, *to, f, &mut tally);
            }
        }
    });
    let expected = BURST * frames.len();
    // Two of every three frames fit a datagram; the third takes two.
    let fragmented = BURST * 2;
    assert_eq!(
        tally,
        Tally {
            delivered: expected,
            datagrams: expected + fragmented,
            unexpected: 0
        }
    );
    assert_eq!(
        allocations, 0,
        "{expected} unicast frames made {allocations} heap allocations"
    );
}

#[test]
fn locally_switched_frames_allocate_nothing() {
    let mut pair = joined_pair(2);
    let (a, b) = (pair.a, pair.b);
    let local: Arc<BTreeSet<Address>> = Arc::new(
        [pair.sim.address_of(a), pair.sim.address_of(b)]
            .into_iter()
            .collect(),
    );
    for host in [a, b] {
        let local = local.clone();
        pair.sim
            .with_node(host, move |n, _| n.set_local_peers(local));
    }
    let (mac_a, mac_b) = (pair.mac(a), pair.mac(b));
    let frames: Vec<(HostId, HostId, Vec<u8>)> = PAYLOAD_SIZES
        .iter()
        .flat_map(|&len| {
            [
                (a, b, frame(mac_b, mac_a, 0x0800, &ip_payload(len, 5))),
                (b, a, frame(mac_a, mac_b, 0x0800, &ip_payload(len, 9))),
            ]
        })
        .collect();
    let mut warm = Tally::default();
    for _ in 0..WARM_UP_ROUNDS {
        for (from, to, f) in &frames {
            pair.switched(*from, *to, f, &mut warm);
        }
    }
    assert_eq!(warm.unexpected, 0, "warm-up: {warm:?}");
    let mut tally = Tally::default();
    let ((), allocations) = allocations_in(|| {
        for _ in 0..BURST {
            for (from, to, f) in &frames {
                pair.switched(*from, *to, f, &mut tally);
            }
        }
    });
    let expected = BURST * frames.len();
    assert_eq!(
        tally,
        Tally {
            delivered: expected,
            datagrams: 0,
            unexpected: 0
        }
    );
    assert_eq!(
        allocations, 0,
        "{expected} switched frames made {allocations} heap allocations"
    );
}
