//! A deterministic network simulator for [`Node`]s: a virtual clock, seeded randomness, links
//! with loss, delay, jitter (hence reordering) and duplication, and NATs of three behaviours.
//!
//! Nothing here touches a real network: addresses are labels in a map. The same seed and the
//! same calls give the same run, datagram for datagram.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::address::Address;
use crate::crypto::c25519::KeyPair;
use crate::identity::Identity;
use crate::node::{Event, Node, NodeConfig};
use crate::time::{Millis, Timestamp};
use crate::world::{Root, World, WorldKind};

pub mod identities;
pub mod scale;

/// The UDP port every simulated node listens on.
pub const SIM_PORT: u16 = 9993;
/// Virtual time at which a simulation starts (an arbitrary epoch-like value).
pub const SIM_EPOCH: Timestamp = Timestamp(1_700_000_000_000);

/// How every link behaves.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// One-way delay.
    pub latency: Millis,
    /// Extra random delay in [0, jitter): datagrams overtake each other.
    pub jitter: Millis,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            latency: Millis(10),
            jitter: Millis(0),
        }
    }
}

/// NAT behaviours (RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping; inbound only from addresses sent to.
    PortRestricted,
    /// A new mapping per destination; inbound only from that destination.
    Symmetric,
}

/// Index of a host in the simulation.
pub type HostId = usize;

/// Code a host runs on each of its node's events (e.g. a controller answering config
/// requests, or a virtual port echoing frames), with the node and the current time.
pub type Responder = Box<dyn FnMut(&mut Node, Timestamp, &Event)>;

/// One simulated machine: a node, its address and what it reported.
pub struct Host {
    pub node: Node,
    /// The address the node binds (behind its NAT if it has one).
    pub local: SocketAddr,
    nat: Option<usize>,
    /// Events the node produced, in order.
    pub events: Vec<Event>,
    responder: Option<Responder>,
}

struct Nat {
    kind: NatKind,
    public_ip: IpAddr,
    next_port: u16,
    /// (inner address, destination for symmetric NATs) -> public port.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// public port -> (inner address, destination for symmetric NATs).
    reverse: HashMap<u16, (SocketAddr, Option<SocketAddr>)>,
    /// (public port, remote) pairs inbound traffic is allowed from (restricted NATs).
    permitted: HashSet<(u16, SocketAddr)>,
}

struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A datagram delivered while capturing.
#[derive(Clone, Debug)]
pub struct Captured {
    pub at: Timestamp,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Counters over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Dropped at a NAT (no mapping or filtered) or sent to an address nobody has.
    pub unroutable: u64,
}

/// The simulation. See the module docs.
pub struct Sim {
    now: Timestamp,
    rng: ChaCha20Rng,
    link: LinkConfig,
    planet: World,
    hosts: Vec<Host>,
    by_addr: HashMap<SocketAddr, HostId>,
    nats: Vec<Nat>,
    nat_by_ip: HashMap<IpAddr, usize>,
    /// Inner (private) address of each NATed host.
    nat_inner: HashMap<SocketAddr, HostId>,
    /// (delivery time, sequence) -> datagram; the sequence keeps equal times in send order.
    queue: BinaryHeap<Reverse<(Timestamp, u64)>>,
    in_flight: HashMap<u64, InFlight>,
    /// (deadline, host): lazily invalidated timer heap.
    timers: BinaryHeap<Reverse<(Timestamp, HostId)>>,
    seq: u64,
    validate_identities: bool,
    /// Every delivered datagram, when capturing.
    captured: Option<Vec<Captured>>,
    pub stats: SimStats,
    /// Hosts taken offline and what that dropped (see the fault injection block below).
    faults: Faults,
}

/// Deterministic identities for tests: the same seed gives the same identities.
pub fn generate_identities(count: usize, seed: u64) -> Vec<Identity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..count).map(|_| Identity::generate(&mut rng)).collect()
}

/// The address a simulated host binds: each in its own /24, so the per-prefix identity
/// validation gate of roots does not serialize the whole network.
pub fn host_address(index: usize) -> SocketAddr {
    let i = index as u32 + 1;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1)),
        SIM_PORT,
    )
}

/// The address of root number `index`.
pub fn root_address(index: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, index as u8, 1)), SIM_PORT)
}

impl Sim {
    /// A simulation whose planet has `roots` as its roots (at [`root_address`]), which are
    /// started as hosts 0.. in order.
    pub fn new(seed: u64, link: LinkConfig, roots: Vec<Identity>) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5a5a_0000_0000_0001);
        let signing = KeyPair::generate(&mut rng);
        let planet_roots: Vec<Root> = roots
            .iter()
            .enumerate()
            .map(|(i, id)| Root {
                identity: id.public_only(),
                stable_endpoints: vec![root_address(i)],
            })
            .collect();
        let planet = World::make(
            WorldKind::Planet,
            0x5157_0000_0000_0001,
            SIM_EPOCH.as_millis() as u64,
            planet_roots,
            &signing,
            signing.public,
        );
        let mut sim = Self {
            now: SIM_EPOCH,
            rng,
            link,
            planet,
            hosts: Vec::new(),
            by_addr: HashMap::new(),
            nats: Vec::new(),
            nat_by_ip: HashMap::new(),
            nat_inner: HashMap::new(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            validate_identities: true,
            captured: None,
            stats: SimStats::default(),
            faults: Faults::default(),
        };
        for (i, identity) in roots.into_iter().enumerate() {
            sim.add_host_at(identity, root_address(i), None, |_| {});
        }
        sim
    }

    /// Skips the memory-hard hash on learned identities (large simulations only), in the
    /// nodes already running (the roots) and those added later.
    pub fn set_validate_identities(&mut self, validate: bool) {
        self.validate_identities = validate;
        for host in &mut self.hosts {
            host.node.set_validate_identities(validate);
        }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn planet(&self) -> &World {
        &self.planet
    }

    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id]
    }

    pub fn host_mut(&mut self, id: HostId) -> &mut Host {
        &mut self.hosts[id]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn address_of(&self, id: HostId) -> Address {
        self.hosts[id].node.address()
    }

    /// Adds a node at the next free [`host_address`], optionally behind its own NAT.
    pub fn add_node(&mut self, identity: Identity, nat: Option<NatKind>) -> HostId {
        self.add_node_with(identity, nat, |_| {})
    }

    /// Like [`Sim::add_node`], letting `configure` adjust the node's configuration first.
    pub fn add_node_with(
        &mut self,
        identity: Identity,
        nat: Option<NatKind>,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let local = host_address(self.hosts.len());
        self.add_host_at(identity, local, nat, configure)
    }

    /// Starts (or stops) recording every delivered datagram.
    pub fn capture(&mut self, on: bool) {
        self.captured = on.then(Vec::new);
    }

    /// The datagrams delivered while capturing.
    pub fn captured(&self) -> &[Captured] {
        self.captured.as_deref().unwrap_or(&[])
    }

    fn add_host_at(
        &mut self,
        identity: Identity,
        local: SocketAddr,
        nat: Option<NatKind>,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let id = self.hosts.len();
        let mut config = NodeConfig::new(identity, self.planet.clone());
        config.rng_seed = self.rng.next_u64();
        config.validate_identities = self.validate_identities;
        configure(&mut config);
        let node = Node::new(config, self.now);
        let nat = nat.map(|kind| {
            let n = self.nats.len();
            let public_ip = IpAddr::V4(Ipv4Addr::new(100, 64 + (n >> 8) as u8, n as u8, 1));
            self.nats.push(Nat {
                kind,
                public_ip,
                next_port: 20_000,
                mappings: HashMap::new(),
                reverse: HashMap::new(),
                permitted: HashSet::new(),
            });
            self.nat_by_ip.insert(public_ip, n);
            n
        });
        if nat.is_none() {
            self.by_addr.insert(local, id);
        } else {
            self.nat_inner.insert(local, id);
        }
        self.hosts.push(Host {
            node,
            local,
            nat,
            events: Vec::new(),
            responder: None,
        });
        self.after_input(id);
        id
    }

    /// Runs `f` on a host's node at the current time, then collects its output.
    pub fn with_node<R>(&mut self, id: HostId, f: impl FnOnce(&mut Node, Timestamp) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.hosts[id].node, now);
        self.after_input(id);
        r
    }

    /// Advances virtual time to `until`, delivering datagrams and firing timers in order.
    pub fn run_until(&mut self, until: Timestamp) {
        loop {
            let next_packet = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let next = match (next_packet, next_timer) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                let Some(Reverse((_, seq))) = self.queue.pop() else {
                    break;
                };
                if let Some(d) = self.in_flight.remove(&seq) {
                    self.deliver(d);
                }
            } else {
                let Some(Reverse((deadline, id))) = self.timers.pop() else {
                    break;
                };
                // Stale entries (the node's deadline moved) are skipped.
                if self.hosts[id].node.poll_timeout() != deadline {
                    continue;
                }
                let now = self.now;
                self.hosts[id].node.handle_timeout(now);
                self.after_input(id);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `span` of virtual time.
    pub fn run_for(&mut self, span: Millis) {
        let until = self.now + span;
        self.run_until(until);
    }

    /// Runs until `done` holds (checked every `step`) or `limit` passes; true if it held.
    pub fn run_until_true(
        &mut self,
        limit: Millis,
        step: Millis,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let next = (self.now + step).min(end);
            self.run_until(next);
        }
        done(self)
    }

    /// Runs `responder` on every later event of this host.
    pub fn set_responder(&mut self, id: HostId, responder: Responder) {
        self.hosts[id].responder = Some(responder);
    }

    /// Drains a host's transmits and events after any input; a responder's reaction to an
    /// event is drained too.
    fn after_input(&mut self, id: HostId) {
        loop {
            while let Some(t) = self.hosts[id].node.poll_transmit() {
                self.send_from(id, t.to, t.data);
            }
            let Some(e) = self.hosts[id].node.poll_event() else {
                break;
            };
            let now = self.now;
            let host = &mut self.hosts[id];
            if let Some(responder) = host.responder.as_mut() {
                responder(&mut host.node, now, &e);
            }
            host.events.push(e);
        }
        let deadline = self.hosts[id].node.poll_timeout();
        self.timers.push(Reverse((deadline.max(self.now), id)));
    }

    fn send_from(&mut self, id: HostId, to: SocketAddr, data: Vec<u8>) {
        self.stats.sent += 1;
        let local = self.hosts[id].local;
        let from = match self.hosts[id].nat {
            None => local,
            Some(n) => {
                let nat = &mut self.nats[n];
                let key = (
                    local,
                    if nat.kind == NatKind::Symmetric {
                        Some(to)
                    } else {
                        None
                    },
                );
                let port = match nat.mappings.get(&key) {
                    Some(p) => *p,
                    None => {
                        let p = nat.next_port;
                        nat.next_port = nat.next_port.wrapping_add(1).max(1024);
                        nat.mappings.insert(key, p);
                        nat.reverse.insert(p, key);
                        p
                    }
                };
                nat.permitted.insert((port, to));
                SocketAddr::new(nat.public_ip, port)
            }
        };
        if self.faults.offline.contains(&id) {
            self.faults.dropped_offline += 1;
            return;
        }
        if self.chance(self.link.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.chance(self.link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.link.jitter.0 > 0 {
                (self.rng.next_u64() % self.link.jitter.0 as u64) as i64
            } else {
                0
            };
            let at = self.now + self.link.latency + Millis(jitter);
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq)));
            self.in_flight.insert(
                self.seq,
                InFlight {
                    from,
                    to,
                    data: data.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, d: InFlight) {
        let target = if let Some(id) = self.by_addr.get(&d.to) {
            Some(*id)
        } else if let Some(&n) = self.nat_by_ip.get(&d.to.ip()) {
            let nat = &self.nats[n];
            nat.reverse.get(&d.to.port()).and_then(|(inner, dest)| {
                let allowed = match nat.kind {
                    NatKind::FullCone => true,
                    NatKind::PortRestricted => nat.permitted.contains(&(d.to.port(), d.from)),
                    NatKind::Symmetric => *dest == Some(d.from),
                };
                if allowed {
                    self.nat_inner.get(inner).copied()
                } else {
                    None
                }
            })
        } else {
            None
        };
        let Some(id) = target else {
            self.stats.unroutable += 1;
            return;
        };
        if self.faults.offline.contains(&id) {
            self.faults.dropped_offline += 1;
            return;
        }
        self.stats.delivered += 1;
        if let Some(log) = &mut self.captured {
            log.push(Captured {
                at: self.now,
                from: d.from,
                to: d.to,
                data: d.data.clone(),
            });
        }
        let now = self.now;
        self.hosts[id].node.handle_datagram(now, d.from, &d.data);
        self.after_input(id);
    }

    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }
}

// -------------------------------------------------------------------------------------------
// Fault injection: hosts going off and on line, NAT rebinding, changing links, and datagrams
// injected from any address (replays, forgeries). Kept apart from the core loop above, which
// only consults `Faults` on the way out of a host and on the way into one.

/// What tests broke on purpose, and what it cost.
#[derive(Default)]
struct Faults {
    /// Hosts whose datagrams, both ways, are dropped.
    offline: HashSet<HostId>,
    /// Datagrams dropped because their sender or receiver was offline.
    dropped_offline: u64,
    /// Datagrams handed to [`Sim::inject`].
    injected: u64,
}

impl Sim {
    /// Takes a host off the network (`online == false`) or puts it back. While offline,
    /// every datagram it sends and every datagram that reaches it is dropped, as if its
    /// cable were pulled; its node keeps running (timers fire, state is kept), so when it
    /// comes back it carries on from where it was, as a machine whose uplink flapped does.
    /// Datagrams already on the wire when it goes offline are still delivered elsewhere.
    pub fn set_online(&mut self, id: HostId, online: bool) {
        if online {
            self.faults.offline.remove(&id);
        } else {
            self.faults.offline.insert(id);
        }
    }

    /// False while a host is offline (see [`Sim::set_online`]).
    pub fn is_connected(&self, id: HostId) -> bool {
        !self.faults.offline.contains(&id)
    }

    /// Datagrams dropped because their sender or receiver was offline.
    pub fn dropped_offline(&self) -> u64 {
        self.faults.dropped_offline
    }

    /// Datagrams injected with [`Sim::inject`] so far.
    pub fn injected(&self) -> u64 {
        self.faults.injected
    }

    /// How links behave now.
    pub fn link(&self) -> LinkConfig {
        self.link
    }

    /// Changes how every link behaves from now on; datagrams in flight keep their delivery
    /// time. Lets a test set up on clean links and then turn on loss, or the reverse.
    pub fn set_link(&mut self, link: LinkConfig) {
        self.link = link;
    }

    /// Adds a node at a chosen address (e.g. a moon's root at its stable endpoint, or an
    /// attacker at a known address), optionally behind its own NAT.
    pub fn add_node_at(
        &mut self,
        identity: Identity,
        local: SocketAddr,
        nat: Option<NatKind>,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        self.add_host_at(identity, local, nat, configure)
    }

    /// The public address a NATed host's traffic to `to` leaves from now, if it has a
    /// mapping for it; `None` for a host without a NAT or before it sent anything to `to`.
    pub fn public_address(&self, id: HostId, to: SocketAddr) -> Option<SocketAddr> {
        let host = &self.hosts[id];
        let nat = &self.nats[host.nat?];
        let key = (host.local, (nat.kind == NatKind::Symmetric).then_some(to));
        nat.mappings
            .get(&key)
            .map(|port| SocketAddr::new(nat.public_ip, *port))
    }

    /// NAT rebinding: the host's NAT forgets every mapping and filter entry (as a NAT does
    /// when it reboots or its mappings time out), so the next datagrams leave from fresh
    /// public ports, and datagrams to the old ones are dropped. With `new_public_ip` the NAT
    /// also moves to that public address (a new DHCP lease, a mobile handover); it must not
    /// be used by any other host. Returns false if the host has no NAT.
    pub fn rebind_nat(&mut self, id: HostId, new_public_ip: Option<IpAddr>) -> bool {
        let Some(n) = self.hosts[id].nat else {
            return false;
        };
        let nat = &mut self.nats[n];
        nat.mappings.clear();
        nat.reverse.clear();
        nat.permitted.clear();
        if let Some(ip) = new_public_ip {
            self.nat_by_ip.remove(&nat.public_ip);
            nat.public_ip = ip;
            self.nat_by_ip.insert(ip, n);
        }
        true
    }

    /// Delivers `data` to `to` at time `at` (or now, if `at` has passed) as if `from` had
    /// sent it: the way to replay captured datagrams or forge new ones, from any address.
    /// The link's loss, duplication and delay do not apply; NAT filtering at `to` and an
    /// offline receiver do.
    pub fn inject(&mut self, at: Timestamp, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.faults.injected += 1;
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq)));
        self.in_flight.insert(self.seq, InFlight { from, to, data });
    }
}
