//! A ZeroTier node: one identity, its peers, paths and roots (VL1, zt-vl1.md sections 4-9).
//!
//! The node is sans-IO. Drive it with:
//! - [`Node::handle_datagram`] for every UDP datagram received,
//! - [`Node::handle_timeout`] whenever `now >= `[`Node::poll_timeout`],
//! - host requests such as [`Node::send_echo`],
//!
//! and after each call drain [`Node::poll_transmit`] (datagrams to send) and
//! [`Node::poll_event`] (things the host must persist or report). Every input carries `now`;
//! randomness comes from the seed in [`NodeConfig`]. The same inputs give the same outputs.
//!
//! Buffers: the node builds datagrams ([`Transmit::data`]), frames for the port
//! ([`Event::Frame`]) and switched payloads ([`Event::SwitchedFrame`]) in buffers from a small
//! pool of its own. A host that hands each one back with [`Node::recycle`] once it is done
//! with it makes the unicast data path run without heap allocation in steady state; a host
//! that drops them only costs an allocation per packet.

mod path;
mod peer;
mod vl2;

pub use vl2::{ConfigAnswer, NetworkInfo, NetworkStatus};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::address::Address;
use crate::crypto::armor::{self, CipherSuite};
use crate::identity::Identity;
use crate::metrics::{DropReason, Metrics};
use crate::time::{Millis, Timestamp};
use crate::vl2::{NetworkConfig, NetworkId};
use crate::wire::compress;
use crate::wire::error::ErrorRepr;
use crate::wire::fragment::{self, Fragment};
use crate::wire::hello::{HelloRepr, MoonRecord, PlanetRef};
use crate::wire::inet::InetAddress;
use crate::wire::ok::{OkBody, OkHeader, OkHelloRepr, OkRepr};
use crate::wire::packet::{self, Packet};
use crate::wire::push_direct_paths::PushDirectPathsRepr;
use crate::wire::reassembly::Reassembler;
use crate::wire::rendezvous::RendezvousRepr;
use crate::wire::user_message::UserMessageRepr;
use crate::wire::verb::{ErrorCode, Verb};
use crate::wire::whois::WhoisRepr;
use crate::world::{World, WorldKind};

use path::{is_address_valid_for_path, rate_gate_key, ECHO_ANSWER_INTERVAL, PATH_HEARTBEAT_PERIOD};
use peer::{Peer, RemoteVersion};

/// The background loop period (ZT_PING_CHECK_INTERVAL).
const PING_CHECK_INTERVAL: Millis = Millis(5_000);
/// Full HELLO to active peers this often (ZT_PEER_PING_PERIOD).
const PEER_PING_PERIOD: Millis = Millis(60_000);
/// Roots get a full HELLO when the last one is older than 16 heartbeat periods.
const ROOT_HELLO_PERIOD: Millis = Millis(16 * 14_000);
/// A peer is active (gets keepalives) and an upstream counts as heard, within this
/// (ZT_PEER_ACTIVITY_TIMEOUT).
const PEER_ACTIVITY_TIMEOUT: Millis = Millis(500_000);
/// WHOIS for one address at most this often (ZT_WHOIS_RETRY_DELAY).
const WHOIS_RETRY_DELAY: Millis = Millis(500);
/// Parked inbound and queued outbound packets wait this long for a WHOIS answer.
const QUEUE_TIMEOUT: Millis = Millis(5_000);
/// Non-roots answer one WHOIS per requesting peer per this period.
const WHOIS_ANSWER_INTERVAL: Millis = Millis(100);
/// New identities validated per source prefix are limited per this period (1.14's value,
/// ZT_IDENTITY_VALIDATION_SOURCE_RATE_LIMIT on x86-64)...
const IDENTITY_VALIDATION_INTERVAL: Millis = Millis(2_000);
/// ...to this many. 1.14 allows one; a container host puts many identities (one per
/// endpoint) behind one address, and one per 2 s would make its attaches queue up.
const IDENTITY_VALIDATION_BURST: u32 = 8;
/// RENDEZVOUS for one (source, destination) pair at most this often (ZT_MIN_UNITE_INTERVAL).
const UNITE_INTERVAL: Millis = Millis(30_000);
/// Relays forward only packets that crossed fewer hops than this (ZT_RELAY_MAX_HOPS).
const RELAY_MAX_HOPS: u8 = 3;
/// Replies are accepted only to requests sent within this window.
const EXPECT_REPLY_TIMEOUT: Millis = Millis(30_000);
/// Bounds on the state a stranger can make us hold.
const MAX_PARKED_RX: usize = 256;
/// New identities waiting for the host's validation ([`NodeConfig::defer_identity_validation`]);
/// beyond this the oldest is given up. The per-prefix gate already bounds how fast they come.
const MAX_PENDING_VALIDATIONS: usize = 32;
/// How long a requested validation may take before it is given up (a host that never answers
/// must not hold the queue for ever).
const VALIDATION_TIMEOUT: Millis = Millis(30_000);
const MAX_QUEUED_TX: usize = 1024;
const MAX_EXPECTED_REPLIES: usize = 8192;
/// Where a packet's payload starts: 27-byte header and the verb byte.
const PAYLOAD_OFFSET: usize = packet::MIN_PACKET_LEN;
/// The 13-byte legacy LAN beacon.
const BEACON_LEN: usize = 13;
/// The datagram that opens NAT mappings before contacting a peer named by RENDEZVOUS.
const NAT_JUNK: [u8; 4] = [0x4a, 0x55, 0x4e, 0x4b];
/// Capacity of a pooled buffer: the largest packet, which also holds the largest Ethernet
/// frame (14-byte header and a 10000-byte MTU) and any single datagram.
const POOL_BUFFER_CAPACITY: usize = packet::MAX_PACKET_LEN;
/// Free buffers kept for reuse. A host recycles after each batch, so a few dozen cover the
/// packets in flight; more would only hold memory (one pool per node, many nodes per host).
const POOL_MAX_FREE: usize = 32;

/// How a node starts.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's identity; it must hold its secret key.
    pub identity: Identity,
    /// The planet in effect: its roots are this node's upstreams.
    pub planet: World,
    /// Moons orbited: their roots are upstreams too.
    pub moons: Vec<World>,
    /// Seed of the node's randomness (packet IDs, choices). The agent draws it from the OS.
    pub rng_seed: u64,
    /// Run the memory-hard hash on identities learned from HELLO and WHOIS. Only a simulator
    /// of many nodes turns this off.
    pub validate_identities: bool,
    /// Leave the memory-hard hash to the host instead of running it on the packet path: a
    /// new identity's authenticated HELLO (or WHOIS answer) waits while the node emits
    /// [`Event::ValidateIdentity`], and the host answers with [`Node::identity_validated`].
    /// Off by default (the hash runs inline, as the simulator and tests expect).
    pub defer_identity_validation: bool,
    /// Largest UDP payload sent before fragmenting (ZT_DEFAULT_PHYSMTU).
    pub physical_mtu: usize,
    /// Physical networks where packets travel without crypto (cipher 2), each with the ID
    /// both ends must have configured (`local.conf` `physical` → `trustedPathId`).
    pub trusted_paths: Vec<TrustedPath>,
}

/// A physical network prefix on which packets are sent and accepted without encryption or
/// authentication, when both ends configured the same ID (zt-vl1.md 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedPath {
    pub network: std::net::IpAddr,
    pub prefix_len: u8,
    pub id: u64,
}

impl TrustedPath {
    /// Whether `addr` lies inside this prefix.
    pub fn contains(&self, addr: &std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix_len.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix_len.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(*a) & mask
            }
            _ => false,
        }
    }
}

impl NodeConfig {
    pub fn new(identity: Identity, planet: World) -> Self {
        Self {
            identity,
            planet,
            moons: Vec::new(),
            rng_seed: 0,
            validate_identities: true,
            defer_identity_validation: false,
            physical_mtu: packet::DEFAULT_PHYSICAL_MTU,
            trusted_paths: Vec::new(),
        }
    }
}

/// One UDP datagram for the host to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    /// The datagram, in a buffer of the node's pool: give it back with [`Node::recycle`]
    /// after sending.
    pub data: Vec<u8>,
    /// An IP TTL for this datagram only: `Some(2)` for the NAT-opening junk before a
    /// RENDEZVOUS contact.
    pub ttl: Option<u8>,
}

/// Something the host must act on.
#[derive(Clone, Debug)]
pub enum Event {
    /// A signed planet update was accepted: the host rewrites `<home>/planet`.
    PlanetUpdated(World),
    /// A moon update was accepted: the host writes `<home>/moons.d/<16 hex id>.moon`.
    MoonUpdated(World),
    /// A new peer identity was learned and verified; the host may cache it.
    PeerLearned(Identity),
    /// With [`NodeConfig::defer_identity_validation`]: run [`Identity::locally_validate`] on
    /// this identity (away from the packet path) and report with
    /// [`Node::identity_validated`]. What brought it waits until then.
    ValidateIdentity(Identity),
    /// The answer to [`Node::send_echo`].
    EchoReply {
        from: Address,
        payload: Vec<u8>,
        path: SocketAddr,
        hops: u8,
    },
    UserMessage {
        from: Address,
        type_id: u64,
        data: Vec<u8>,
    },
    /// An upstream says another node owns our address with a different key. ZeroTier One
    /// treats this as fatal.
    IdentityCollision,
    /// We are this network's controller and a member (perhaps we) asks for its config: the
    /// host's controller decides and answers with [`Node::answer_config_request`].
    NetworkConfigRequest {
        network_id: NetworkId,
        requester: Identity,
        /// The request's metadata dictionary.
        metadata: Vec<u8>,
        /// The request's packet ID; 0 for our own request.
        packet_id: u64,
        /// The requester's physical address, when it came direct.
        from: Option<SocketAddr>,
    },
    /// A new config for a joined network: the host applies addresses, routes and MTU and
    /// persists `dictionary` as `networks.d/<nwid>.conf`.
    NetworkConfigUpdated {
        network_id: NetworkId,
        config: Box<NetworkConfig>,
        dictionary: Vec<u8>,
    },
    NetworkStatusChanged {
        network_id: NetworkId,
        status: NetworkStatus,
    },
    /// An Ethernet frame for the network's virtual port, in a pooled buffer: give it back
    /// with [`Node::recycle`] after writing it.
    Frame {
        network_id: NetworkId,
        frame: Vec<u8>,
    },
    /// A unicast frame for a member hosted next to us (see [`Node::set_local_peers`]),
    /// already allowed by our outbound rules: the host hands it to that member's node with
    /// [`Node::handle_switched_frame`] instead of sending a FRAME over UDP. `payload` is a
    /// pooled buffer: give it back to this node with [`Node::recycle`] afterwards.
    SwitchedFrame {
        network_id: NetworkId,
        to: Address,
        ethertype: u16,
        payload: Vec<u8>,
    },
}

/// What `/status` reports.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub address: Address,
    pub public_identity: String,
    pub online: bool,
    pub planet_id: u64,
    pub planet_timestamp: u64,
    pub version: (u8, u8, u16),
}

/// A peer's relation to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    Leaf,
    Moon,
    Planet,
}

/// What `/peer` reports about one peer.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub address: Address,
    pub role: PeerRole,
    pub version: Option<(u8, u8, u16)>,
    pub proto_version: Option<u8>,
    pub latency: Option<i64>,
    pub paths: Vec<PathStatus>,
}

#[derive(Clone, Debug)]
pub struct PathStatus {
    pub address: SocketAddr,
    pub last_send: Timestamp,
    pub last_receive: Timestamp,
    pub active: bool,
    pub expired: bool,
    pub preferred: bool,
}

/// A request we sent and whose OK we will accept, keyed by its on-wire packet ID.
#[derive(Clone, Copy, Debug)]
struct ExpectedReply {
    verb: Verb,
    to: Address,
    sent: Timestamp,
    /// The host asked for this (ECHO from [`Node::send_echo`]): report the answer.
    report: bool,
}

/// A packet from a sender we do not know yet, waiting for WHOIS.
struct ParkedRx {
    from: SocketAddr,
    source: Address,
    packet: Vec<u8>,
    parked: Timestamp,
}

/// A new identity waiting for the host's verdict on its memory-hard hash.
struct PendingValidation {
    identity: Identity,
    key: armor::PeerKey,
    requested: Timestamp,
    /// The HELLO that brought it, MAC already verified, with where it came from: answered
    /// once the identity holds. `None` for an identity from OK(WHOIS).
    hello: Option<(SocketAddr, Vec<u8>)>,
}

/// A packet to a node we do not know yet, waiting for WHOIS.
struct QueuedTx {
    to: Address,
    verb: Verb,
    payload: Vec<u8>,
    queued: Timestamp,
    /// Report the answer to the host (an ECHO it asked for).
    report: bool,
}

/// Where a packet is sent.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Over the peer's best path, else relayed through the best upstream.
    Best,
    /// To this physical address, in one datagram whatever its size (replies, contacts).
    Direct(SocketAddr),
}

/// A ZeroTier node. See the module docs for how to drive it.
pub struct Node {
    identity: Identity,
    address: Address,
    physical_mtu: usize,
    validate_identities: bool,
    defer_identity_validation: bool,
    /// Identities handed to the host to validate, oldest first, at most one per address.
    pending_validations: VecDeque<PendingValidation>,
    trusted_paths: Vec<TrustedPath>,
    planet: World,
    moons: Vec<World>,
    /// Root addresses of the planet and moons, sorted, without ourselves.
    upstreams: Vec<Address>,
    /// Stable endpoints of each root.
    root_endpoints: HashMap<Address, Vec<SocketAddr>>,
    am_root: bool,
    /// Ordered, so that iteration (and thus a whole run) is deterministic.
    peers: BTreeMap<Address, Peer>,
    rng: ChaCha20Rng,
    reassembler: Reassembler,
    whois_sent: HashMap<Address, Timestamp>,
    parked_rx: Vec<ParkedRx>,
    queued_tx: Vec<QueuedTx>,
    expected_replies: HashMap<u64, ExpectedReply>,
    unite_gate: HashMap<(Address, Address), Timestamp>,
    /// Per source prefix: when its window opened and how many identities it validated.
    identity_gate: HashMap<u64, (Timestamp, u32)>,
    last_upstream_receive: Option<Timestamp>,
    next_ping_check: Timestamp,
    /// Joined networks (VL2).
    networks: BTreeMap<NetworkId, vl2::Network>,
    /// Who LIKEd which group: kept by members, roots and controllers alike.
    multicast_directory:
        HashMap<(NetworkId, crate::vl2::MulticastGroup), BTreeMap<Address, Timestamp>>,
    /// As a controller: members we sent a config to, and when.
    controller_authorized: HashMap<(NetworkId, Address), Timestamp>,
    config_request_gate: HashMap<(NetworkId, Address), Timestamp>,
    credentials_gate: HashMap<Address, Timestamp>,
    /// Frames that failed the membership gate, retried when the sender's credentials come.
    gate_parked: Vec<ParkedRx>,
    retrying_gated: bool,
    /// Members hosted in the same process, whose unicast frames are switched locally.
    local_peers: Arc<BTreeSet<Address>>,
    /// Traffic counters for the host's `/metrics`.
    metrics: Metrics,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Empty buffers for packets and frames, refilled by [`Node::recycle`].
    free_buffers: Vec<Vec<u8>>,
    /// The rules engine's tag lists (ours, the other side's), kept between frames.
    filter_tags: (
        Vec<crate::vl2::filter::TagValue>,
        Vec<crate::vl2::filter::TagValue>,
    ),
}

/// What stops a packet from being sent now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unroutable {
    /// To ourselves: never sent.
    ToSelf,
    /// We do not know the peer yet: the packet waits for WHOIS.
    UnknownPeer,
    /// Neither a path nor an upstream: the packet waits for a root to answer.
    NoPath,
}

/// Where a routable packet goes.
#[derive(Clone, Copy, Debug)]
struct Target {
    to: SocketAddr,
    /// Straight to the peer (not relayed by an upstream).
    direct: bool,
    /// May be split into fragments (not a reply to a given address).
    fragmentable: bool,
}

impl Node {
    pub fn new(config: NodeConfig, now: Timestamp) -> Self {
        assert!(
            config.identity.has_secret(),
            "a node needs its identity's secret key"
        );
        let address = config.identity.address();
        let mut node = Self {
            address,
            physical_mtu: config
                .physical_mtu
                .clamp(packet::MIN_PHYSICAL_MTU, packet::MAX_PHYSICAL_MTU),
            validate_identities: config.validate_identities,
            defer_identity_validation: config.defer_identity_validation,
            pending_validations: VecDeque::new(),
            trusted_paths: config.trusted_paths,
            planet: config.planet,
            moons: config.moons,
            upstreams: Vec::new(),
            root_endpoints: HashMap::new(),
            am_root: false,
            peers: BTreeMap::new(),
            rng: ChaCha20Rng::seed_from_u64(config.rng_seed),
            reassembler: Reassembler::new(),
            whois_sent: HashMap::new(),
            parked_rx: Vec::new(),
            queued_tx: Vec::new(),
            expected_replies: HashMap::new(),
            unite_gate: HashMap::new(),
            identity_gate: HashMap::new(),
            last_upstream_receive: None,
            next_ping_check: now,
            networks: BTreeMap::new(),
            multicast_directory: HashMap::new(),
            controller_authorized: HashMap::new(),
            config_request_gate: HashMap::new(),
            credentials_gate: HashMap::new(),
            gate_parked: Vec::new(),
            retrying_gated: false,
            local_peers: Arc::default(),
            metrics: Metrics::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            free_buffers: Vec::new(),
            filter_tags: Default::default(),
            identity: config.identity,
        };
        node.recompute_upstreams(now);
        node
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn planet(&self) -> &World {
        &self.planet
    }

    pub fn moons(&self) -> &[World] {
        &self.moons
    }

    /// True if this node is one of the roots of its planet or moons.
    pub fn is_root(&self) -> bool {
        self.am_root
    }

    /// What this node counted of its traffic.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether a new identity from `from` may be validated now (a memory-hard hash each).
    /// [`Identity::locally_validate`], counted in the metrics.
    fn validate_counted(&mut self, identity: &Identity) -> bool {
        self.metrics.record_identity_validation();
        identity.locally_validate()
    }

    fn identity_gate_passes(&mut self, now: Timestamp, from: &SocketAddr) -> bool {
        let (opened, count) = self
            .identity_gate
            .entry(rate_gate_key(from))
            .or_insert((now, 0));
        if now.since(*opened) >= IDENTITY_VALIDATION_INTERVAL {
            (*opened, *count) = (now, 0);
        }
        if *count >= IDENTITY_VALIDATION_BURST {
            return false;
        }
        *count += 1;
        true
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.transmits.pop_front()?;
        self.metrics.record_datagram_out(transmit.data.len());
        Some(transmit)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gives back a buffer the host is done with: a [`Transmit::data`] after sending, an
    /// [`Event::Frame`] after writing it to the port, an [`Event::SwitchedFrame`] payload
    /// after handing it over. The node reuses it for a later packet. Buffers too small to
    /// hold any packet, and buffers beyond the pool's bound, are freed.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if buffer.capacity() >= POOL_BUFFER_CAPACITY && self.free_buffers.len() < POOL_MAX_FREE {
            buffer.clear();
            self.free_buffers.push(buffer);
        }
    }

    /// An empty buffer that holds any packet or frame without growing.
    fn take_buffer(&mut self) -> Vec<u8> {
        take_buffer(&mut self.free_buffers)
    }

    /// The next time [`Node::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Timestamp {
        let mut next = self.next_ping_check;
        // Pending WHOIS lookups are retried on their own, faster clock.
        if let Some(oldest) = self.whois_sent.values().min() {
            next = next.min(*oldest + WHOIS_RETRY_DELAY);
        }
        next
    }

    /// Restores a peer identity from the host's cache (peers.d) at start-up.
    pub fn add_peer_identity(&mut self, now: Timestamp, identity: Identity) {
        if identity.address() == self.address || self.peers.contains_key(&identity.address()) {
            return;
        }
        if self.validate_identities && !self.validate_counted(&identity) {
            return;
        }
        if let Some(key) = self.identity.agree(&identity) {
            self.peers
                .insert(identity.address(), Peer::new(identity, key, now));
        }
    }

    pub fn status(&self, now: Timestamp) -> NodeStatus {
        NodeStatus {
            address: self.address,
            public_identity: self.identity.to_string(),
            online: self.is_online(now),
            planet_id: self.planet.id,
            planet_timestamp: self.planet.timestamp,
            version: (
                packet::VERSION_MAJOR,
                packet::VERSION_MINOR,
                packet::VERSION_REVISION,
            ),
        }
    }

    /// Whether identities learned from now on must pass the memory-hard hash check
    /// ([`NodeConfig::validate_identities`]); turned off only by large simulations.
    pub fn set_validate_identities(&mut self, validate: bool) {
        self.validate_identities = validate;
    }

    /// Online: something was heard from an upstream recently, or we are a root.
    pub fn is_online(&self, now: Timestamp) -> bool {
        self.am_root
            || self
                .last_upstream_receive
                .is_some_and(|t| now.since(t) < PEER_ACTIVITY_TIMEOUT)
    }

    pub fn peers(&self, now: Timestamp) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(address, peer)| {
                let best = peer.best_path_index(now);
                PeerStatus {
                    address: *address,
                    role: self.role_of(*address),
                    version: peer.version.map(|v| (v.major, v.minor, v.revision)),
                    proto_version: peer.version.map(|v| v.proto),
                    latency: peer.latency,
                    paths: peer
                        .paths
                        .iter()
                        .enumerate()
                        .map(|(i, p)| PathStatus {
                            address: p.remote,
                            last_send: p.last_send,
                            last_receive: p.last_receive,
                            active: p.is_alive(now),
                            expired: p.is_expired(now),
                            preferred: Some(i) == best,
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by_key(|p| p.address);
        out
    }

    fn role_of(&self, address: Address) -> PeerRole {
        if self
            .planet
            .roots
            .iter()
            .any(|r| r.identity.address() == address)
        {
            PeerRole::Planet
        } else if self
            .moons
            .iter()
            .any(|m| m.roots.iter().any(|r| r.identity.address() == address))
        {
            PeerRole::Moon
        } else {
            PeerRole::Leaf
        }
    }

    // ---------------------------------------------------------------------------------------
    // Host requests

    /// Sends an ECHO; the answer comes back as [`Event::EchoReply`].
    pub fn send_echo(&mut self, now: Timestamp, to: Address, payload: &[u8]) {
        self.send_reporting(now, to, Verb::Echo, payload.to_vec(), Route::Best, true);
    }

    pub fn send_user_message(&mut self, now: Timestamp, to: Address, type_id: u64, data: &[u8]) {
        let mut payload = Vec::with_capacity(8 + data.len());
        UserMessageRepr {
            type_id,
            data: data.to_vec(),
        }
        .emit(&mut payload);
        self.send(now, to, Verb::UserMessage, payload, Route::Best);
    }

    // ---------------------------------------------------------------------------------------
    // Timers

    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.retry_whois(now);
        if now >= self.next_ping_check {
            self.next_ping_check = now + PING_CHECK_INTERVAL;
            self.ping_upstreams(now);
            self.ping_active_peers(now);
            self.housekeeping(now);
            self.vl2_periodic(now);
        }
    }

    fn retry_whois(&mut self, now: Timestamp) {
        // Drop what waited too long; what still waits keeps its lookup going.
        let parked = self.parked_rx.len();
        self.parked_rx
            .retain(|p| now.since(p.parked) < QUEUE_TIMEOUT);
        self.metrics
            .record_dropped_many(DropReason::UnknownPeer, parked - self.parked_rx.len());
        self.queued_tx
            .retain(|q| now.since(q.queued) < QUEUE_TIMEOUT);
        let mut wanted: Vec<Address> = self
            .parked_rx
            .iter()
            .map(|p| p.source)
            .chain(self.queued_tx.iter().map(|q| q.to))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        self.whois_sent.retain(|a, _| wanted.contains(a));
        for address in wanted {
            if self
                .whois_sent
                .get(&address)
                .is_none_or(|t| now.since(*t) >= WHOIS_RETRY_DELAY)
            {
                self.send_whois(now, address);
            }
        }
    }

    fn ping_upstreams(&mut self, now: Timestamp) {
        for root in self.upstreams.clone() {
            let Some(peer) = self.peers.get(&root) else {
                continue;
            };
            let alive = peer.has_alive_path(now);
            let since_hello = peer.last_hello_sent.map(|t| now.since(t));
            // A root with no paths is retried every cycle until it answers.
            let hello_due = match since_hello {
                None => true,
                Some(s) => !alive || s >= ROOT_HELLO_PERIOD,
            };
            self.keepalive_paths(now, root);
            if hello_due {
                let endpoints = self.root_endpoints.get(&root).cloned().unwrap_or_default();
                let peer = &self.peers[&root];
                let mut targets: Vec<SocketAddr> = Vec::new();
                for want_v4 in [true, false] {
                    let alive_in_family = peer
                        .paths
                        .iter()
                        .find(|p| p.is_alive(now) && p.remote.is_ipv4() == want_v4)
                        .map(|p| p.remote);
                    if let Some(addr) = alive_in_family {
                        targets.push(addr);
                        continue;
                    }
                    let family: Vec<&SocketAddr> = endpoints
                        .iter()
                        .filter(|e| e.is_ipv4() == want_v4)
                        .collect();
                    if !family.is_empty() {
                        let pick = (self.rng.next_u32() as usize) % family.len();
                        targets.push(*family[pick]);
                    }
                }
                for target in targets {
                    self.send_hello(now, root, Some(target));
                }
            }
        }
    }

    fn ping_active_peers(&mut self, now: Timestamp) {
        let active: Vec<Address> = self
            .peers
            .iter()
            .filter(|(a, p)| {
                !self.upstreams.contains(a)
                    && !p.paths.is_empty()
                    && p.last_activity
                        .is_some_and(|t| now.since(t) < PEER_ACTIVITY_TIMEOUT)
            })
            .map(|(a, _)| *a)
            .collect();
        for address in active {
            let hello_due = self.peers[&address]
                .last_hello_sent
                .is_none_or(|t| now.since(t) >= PEER_PING_PERIOD);
            if hello_due {
                let remotes: Vec<SocketAddr> = self.peers[&address]
                    .paths
                    .iter()
                    .map(|p| p.remote)
                    .collect();
                for remote in remotes {
                    self.send_hello(now, address, Some(remote));
                }
            } else {
                self.keepalive_paths(now, address);
            }
        }
    }

    /// ECHO (or HELLO to old peers) on every path nothing was sent on for a heartbeat period.
    fn keepalive_paths(&mut self, now: Timestamp, address: Address) {
        let Some(peer) = self.peers.get(&address) else {
            return;
        };
        let answers_echo = peer.answers_echo();
        let due: Vec<SocketAddr> = peer
            .paths
            .iter()
            .filter(|p| now.since(p.last_send) >= PATH_HEARTBEAT_PERIOD)
            .map(|p| p.remote)
            .collect();
        for remote in due {
            if answers_echo {
                self.send(now, address, Verb::Echo, Vec::new(), Route::Direct(remote));
            } else {
                self.send_hello(now, address, Some(remote));
            }
        }
    }

    fn housekeeping(&mut self, now: Timestamp) {
        for peer in self.peers.values_mut() {
            peer.expire_paths(now);
        }
        let upstreams = &self.upstreams;
        self.peers.retain(|address, peer| {
            upstreams.contains(address) || now.since(peer.last_receive) < PEER_ACTIVITY_TIMEOUT
        });
        let peers = &self.peers;
        self.metrics
            .retain_peers(|address| peers.contains_key(address));
        self.expected_replies
            .retain(|_, e| now.since(e.sent) < EXPECT_REPLY_TIMEOUT);
        self.unite_gate
            .retain(|_, t| now.since(*t) < UNITE_INTERVAL);
        self.identity_gate
            .retain(|_, (t, _)| now.since(*t) < IDENTITY_VALIDATION_INTERVAL);
        while self
            .pending_validations
            .front()
            .is_some_and(|p| now.since(p.requested) >= VALIDATION_TIMEOUT)
        {
            if let Some(expired) = self.pending_validations.pop_front() {
                self.give_up_validation(expired);
            }
        }
        self.reassembler.expire(now);
    }

    // ---------------------------------------------------------------------------------------
    // Receiving

    /// One UDP datagram from `from`. Malformed, unauthenticated or unwanted input is dropped
    /// silently, as ZeroTier One does; nothing here panics on any input.
    pub fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, data: &[u8]) {
        self.metrics.record_datagram_in(data.len());
        if data.len() == BEACON_LEN {
            return; // Legacy LAN beacons: 1.14 never sends them; we do not answer them.
        }
        if fragment::is_fragment(data) {
            let Ok(frag) = Fragment::new_checked(data) else {
                self.metrics.record_dropped(DropReason::Malformed);
                return;
            };
            if frag.destination() != self.address {
                self.relay(now, from, data, None);
                return;
            }
            let mut whole = self.take_buffer();
            if self.reassembler.handle_fragment_into(now, data, &mut whole) {
                self.handle_packet(now, from, whole);
            } else {
                self.recycle(whole);
            }
            return;
        }
        let Ok(view) = Packet::new_checked(data) else {
            self.metrics.record_dropped(DropReason::Malformed);
            return;
        };
        let (source, destination) = (view.source(), view.destination());
        if source == self.address {
            return;
        }
        if destination != self.address {
            self.relay(now, from, data, Some(source));
            return;
        }
        if view.is_fragmented() {
            let mut whole = self.take_buffer();
            if self.reassembler.handle_head_into(now, data, &mut whole) {
                self.handle_packet(now, from, whole);
            } else {
                self.recycle(whole);
            }
            return;
        }
        let mut packet = self.take_buffer();
        packet.extend_from_slice(data);
        self.handle_packet(now, from, packet);
    }

    /// A whole packet addressed to us.
    fn handle_packet(&mut self, now: Timestamp, from: SocketAddr, mut packet: Vec<u8>) {
        let Ok(view) = Packet::new_checked(&packet[..]) else {
            self.metrics.record_dropped(DropReason::Malformed);
            return;
        };
        let source = view.source();
        let cipher = view.cipher();
        if cipher == CipherSuite::Poly1305.number()
            && Verb::from_verb_byte(view.raw_verb()) == Verb::Hello
        {
            self.handle_hello(now, from, packet);
            return;
        }
        if !self.peers.contains_key(&source) {
            if self.parked_rx.len() < MAX_PARKED_RX {
                // Parked at its own size, not in a pool-sized buffer: strangers could
                // otherwise make us hold MAX_PARKED_RX full buffers.
                packet.shrink_to_fit();
                self.parked_rx.push(ParkedRx {
                    from,
                    source,
                    packet,
                    parked: now,
                });
            } else {
                self.metrics.record_dropped(DropReason::UnknownPeer);
                self.recycle(packet);
            }
            if self
                .whois_sent
                .get(&source)
                .is_none_or(|t| now.since(*t) >= WHOIS_RETRY_DELAY)
            {
                self.send_whois(now, source);
            }
            return;
        }
        if cipher == CipherSuite::TrustedPath.number() {
            // No crypto: accepted only from a configured prefix carrying its ID.
            let id = view.trusted_path_id();
            if !self
                .trusted_paths
                .iter()
                .any(|t| t.id == id && t.contains(&from.ip()))
            {
                self.metrics.record_dropped(DropReason::UntrustedPath);
                self.recycle(packet);
                return;
            }
        } else if armor::dearmor(&mut packet, &self.peers[&source].key).is_err() {
            self.metrics.record_mac_failure(source);
            self.recycle(packet);
            return;
        }
        if Packet::new_checked(&packet[..]).is_ok_and(|p| p.is_compressed()) {
            let mut out = self.take_buffer();
            if compress::decompress_packet(&packet, &mut out).is_err() {
                self.metrics.record_dropped(DropReason::DecompressionFailed);
                self.recycle(out);
                self.recycle(packet);
                return;
            }
            self.recycle(std::mem::replace(&mut packet, out));
        }
        self.dispatch(now, from, &packet);
        self.recycle(packet);
    }

    fn dispatch(&mut self, now: Timestamp, from: SocketAddr, packet: &[u8]) {
        let Ok(view) = Packet::new_checked(packet) else {
            return;
        };
        let source = view.source();
        let hops = view.hops();
        let packet_id = view.packet_id();
        let payload = view.payload();
        let verb = Verb::from_verb_byte(view.raw_verb());
        if verb != Verb::Hello {
            // HELLO is counted where both of its ways in meet (handle_hello_authenticated).
            self.metrics.record_received(source, verb, payload);
        }
        let handled_ok = match verb {
            Verb::Hello => {
                // An encrypted HELLO from a known peer: process like a cipher-0 one.
                if let Ok((hello, tail)) = HelloRepr::parse(payload) {
                    if hello.identity.address() == source {
                        self.handle_hello_authenticated(now, from, packet, &hello, tail);
                    }
                }
                return;
            }
            Verb::Ok => self.handle_ok(now, from, source, hops, payload),
            Verb::Error => {
                self.handle_error(now, source, payload);
                true
            }
            Verb::Whois => {
                self.handle_whois(now, from, source, packet_id, payload);
                true
            }
            Verb::Rendezvous => {
                self.handle_rendezvous(now, source, payload);
                true
            }
            Verb::Echo => {
                self.handle_echo(now, from, source, hops, packet_id, payload);
                true
            }
            Verb::PushDirectPaths => {
                self.handle_push_direct_paths(now, source, payload);
                true
            }
            Verb::UserMessage => {
                if let Ok(m) = UserMessageRepr::parse(payload) {
                    self.events.push_back(Event::UserMessage {
                        from: source,
                        type_id: m.type_id,
                        data: m.data,
                    });
                }
                true
            }
            Verb::NetworkConfigRequest => {
                self.handle_config_request(now, from, source, hops, packet_id, payload);
                true
            }
            Verb::NetworkConfig => {
                self.handle_network_config(now, source, packet_id, payload);
                true
            }
            Verb::NetworkCredentials => {
                self.handle_network_credentials(now, source, payload);
                true
            }
            Verb::Frame => {
                self.handle_frame(now, from, source, packet_id, payload, packet);
                true
            }
            Verb::ExtFrame => {
                self.handle_ext_frame(now, from, source, packet_id, payload, packet);
                true
            }
            Verb::MulticastFrame => {
                self.handle_multicast_frame(now, from, source, packet_id, payload, packet);
                true
            }
            Verb::MulticastLike => {
                self.handle_multicast_like(now, source, payload);
                true
            }
            Verb::MulticastGather => {
                self.handle_multicast_gather(now, source, packet_id, payload);
                true
            }
            // NOP and unknown verbs that authenticated are accepted and counted as received,
            // as ZeroTier One does.
            _ => true,
        };
        if handled_ok {
            self.received(now, from, source, hops, verb == Verb::Ok);
        } else {
            self.metrics.record_dropped(DropReason::InvalidReply);
        }
    }

    /// Path learning after an authenticated packet (`Peer::received`): only direct packets
    /// (hops 0) touch paths; only an OK adds a new one; anything else from an unknown address
    /// makes us send a HELLO there, whose OK then confirms it.
    fn received(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        hops: u8,
        is_ok: bool,
    ) {
        let is_upstream = self.upstreams.contains(&source);
        let allowed = self.path_allowed(source, &from);
        let Some(peer) = self.peers.get_mut(&source) else {
            return;
        };
        peer.last_receive = now;
        if is_upstream {
            self.last_upstream_receive = Some(now);
        }
        if hops != 0 {
            return;
        }
        if let Some(path) = peer.path_mut(&from) {
            path.last_receive = now;
            return;
        }
        if !allowed {
            return;
        }
        if is_ok {
            peer.learn_path(from, now);
            self.release_routable(now);
        } else if peer.gate_contact_attempt(from, now) {
            self.send_hello(now, source, Some(from));
        }
    }

    /// Path policy: a usable address, and a root only at its listed stable endpoints.
    fn path_allowed(&self, peer: Address, remote: &SocketAddr) -> bool {
        if !is_address_valid_for_path(remote) {
            return false;
        }
        match self.root_endpoints.get(&peer) {
            Some(endpoints) if !endpoints.is_empty() => endpoints.contains(remote),
            _ => true,
        }
    }

    fn handle_hello(&mut self, now: Timestamp, from: SocketAddr, mut packet: Vec<u8>) {
        let Ok(view) = Packet::new_checked(&packet[..]) else {
            return;
        };
        let source = view.source();
        let Ok((hello, tail)) = HelloRepr::parse(view.payload()) else {
            self.metrics.record_dropped(DropReason::Malformed);
            return;
        };
        if hello.identity.address() != source {
            self.metrics.record_dropped(DropReason::Malformed);
            return;
        }
        if let Some(known) = self.peers.get(&source) {
            if known.identity != hello.identity {
                self.metrics.record_dropped(DropReason::IdentityCollision);
                self.handle_identity_collision(now, from, packet, &hello.identity);
                return;
            }
            if armor::dearmor(&mut packet, &known.key).is_err() {
                self.metrics.record_mac_failure(source);
                return;
            }
        } else {
            // A retried HELLO of an identity being validated waits with the first: the
            // newest is kept (its timestamp is echoed), and nothing is hashed twice.
            if let Some(i) = self
                .pending_validations
                .iter()
                .position(|p| p.identity.address() == source)
            {
                let pending = &self.pending_validations[i];
                if pending.identity != hello.identity {
                    self.metrics.record_dropped(DropReason::IdentityCollision);
                    return;
                }
                if armor::dearmor(&mut packet, &pending.key).is_err() {
                    self.metrics.record_dropped(DropReason::MacFailure);
                    return;
                }
                let replaced = self.pending_validations[i].hello.replace((from, packet));
                if let Some((_, old)) = replaced {
                    self.recycle(old);
                }
                return;
            }
            // A new identity costs a memory-hard hash: one per source prefix per interval.
            if !self.identity_gate_passes(now, &from) {
                self.metrics.record_dropped(DropReason::RateLimited);
                return;
            }
            let Some(key) = self.identity.agree(&hello.identity) else {
                self.metrics.record_dropped(DropReason::InvalidIdentity);
                return;
            };
            if armor::dearmor(&mut packet, &key).is_err() {
                self.metrics.record_dropped(DropReason::MacFailure);
                return;
            }
            if self.validate_identities && self.defer_identity_validation {
                self.request_validation(now, hello.identity, key, Some((from, packet)));
                return;
            }
            if self.validate_identities && !self.validate_counted(&hello.identity) {
                self.metrics.record_dropped(DropReason::InvalidIdentity);
                return;
            }
            self.accept_new_hello(now, from, &packet, &hello, tail, key);
            return;
        }
        self.handle_hello_authenticated(now, from, &packet, &hello, tail);
    }

    /// A HELLO from a new, valid identity whose MAC verified with `key`: its sender becomes
    /// a peer.
    fn accept_new_hello(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        packet: &[u8],
        hello: &HelloRepr,
        tail: Option<usize>,
        key: armor::PeerKey,
    ) {
        // Answer the HELLO first (it also records the version, so what was waiting on this
        // peer goes out with the right cipher), then release what waited.
        let identity = hello.identity.clone();
        let source = identity.address();
        self.peers
            .insert(source, Peer::new(identity.clone(), key, now));
        self.handle_hello_authenticated(now, from, packet, hello, tail);
        self.events.push_back(Event::PeerLearned(identity));
        self.release_waiting(now, source);
    }

    /// Hands a new identity to the host to validate; what brought it waits. The queue is
    /// bounded: when full, the oldest request is given up.
    fn request_validation(
        &mut self,
        now: Timestamp,
        identity: Identity,
        key: armor::PeerKey,
        hello: Option<(SocketAddr, Vec<u8>)>,
    ) {
        if self.pending_validations.len() >= MAX_PENDING_VALIDATIONS {
            if let Some(oldest) = self.pending_validations.pop_front() {
                self.give_up_validation(oldest);
            }
        }
        self.metrics.record_identity_validation();
        self.events
            .push_back(Event::ValidateIdentity(identity.clone()));
        self.pending_validations.push_back(PendingValidation {
            identity,
            key,
            requested: now,
            hello,
        });
    }

    fn give_up_validation(&mut self, pending: PendingValidation) {
        self.metrics.record_dropped(DropReason::ValidationBacklog);
        if let Some((_, packet)) = pending.hello {
            self.recycle(packet);
        }
    }

    /// Identities handed to the host with [`Event::ValidateIdentity`] and not answered yet.
    pub fn pending_validations(&self) -> usize {
        self.pending_validations.len()
    }

    /// The host will not validate this identity after all ([`Event::ValidateIdentity`] was
    /// dropped from its own bounded queue): what waited on it is given up, counted as
    /// [`DropReason::ValidationBacklog`]; the sender's next HELLO asks again.
    pub fn identity_validation_abandoned(&mut self, identity: &Identity) {
        let Some(i) = self
            .pending_validations
            .iter()
            .position(|p| p.identity == *identity)
        else {
            return;
        };
        if let Some(pending) = self.pending_validations.remove(i) {
            self.give_up_validation(pending);
        }
    }

    /// The host's verdict on an identity it was asked to validate ([`Event::ValidateIdentity`]):
    /// `valid` is what [`Identity::locally_validate`] returned. A valid identity becomes a
    /// peer (its waiting HELLO is answered, its waiting packets go); an invalid one is
    /// dropped. A verdict nobody waits for (given up, or already answered) is ignored.
    pub fn identity_validated(&mut self, now: Timestamp, identity: &Identity, valid: bool) {
        let Some(i) = self
            .pending_validations
            .iter()
            .position(|p| p.identity == *identity)
        else {
            return;
        };
        let Some(pending) = self.pending_validations.remove(i) else {
            return;
        };
        if !valid {
            self.metrics.record_dropped(DropReason::InvalidIdentity);
            if let Some((_, packet)) = pending.hello {
                self.recycle(packet);
            }
            return;
        }
        let address = identity.address();
        if let Some(known) = self.peers.get(&address) {
            // Learned meanwhile some other way (the host restored it, say).
            if known.identity != *identity {
                self.metrics.record_dropped(DropReason::IdentityCollision);
                return;
            }
        }
        match pending.hello {
            Some((from, packet)) => {
                let parsed = Packet::new_checked(&packet[..])
                    .ok()
                    .and_then(|view| HelloRepr::parse(view.payload()).ok());
                if let Some((hello, tail)) = parsed {
                    if self.peers.contains_key(&address) {
                        self.handle_hello_authenticated(now, from, &packet, &hello, tail);
                    } else {
                        self.accept_new_hello(now, from, &packet, &hello, tail, pending.key);
                    }
                }
                self.recycle(packet);
            }
            None if self.peers.contains_key(&address) => self.release_waiting(now, address),
            None => self.add_peer(now, identity.clone(), pending.key),
        }
    }

    /// A HELLO whose sender is known and whose MAC verified, parsed by the caller (`tail`: the
    /// payload offset of its encrypted moon list) and checked to come from its identity.
    fn handle_hello_authenticated(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        packet: &[u8],
        hello: &HelloRepr,
        tail: Option<usize>,
    ) {
        let Ok(view) = Packet::new_checked(packet) else {
            return;
        };
        let source = view.source();
        let hops = view.hops();
        let hello_id = view.packet_id();
        self.metrics.record_received(source, Verb::Hello, &[]);
        // The moon list is encrypted with the unmangled key (zt-vl1.md 4.5).
        let mut moons_wanted = Vec::new();
        if let Some(tail) = tail {
            let start = PAYLOAD_OFFSET + tail;
            if start < packet.len() {
                let mut decrypted = packet.to_vec();
                armor::crypt_field(&self.peers[&source].key, &mut decrypted, start);
                if let Ok(moons) = HelloRepr::parse_moons(&decrypted[start..]) {
                    moons_wanted = moons.into_iter().filter(MoonRecord::is_moon).collect();
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&source) else {
            return;
        };
        peer.version = Some(RemoteVersion {
            proto: hello.protocol_version,
            major: hello.software_version.major,
            minor: hello.software_version.minor,
            revision: hello.software_version.revision,
        });

        // World updates for a sender behind on our planet or moons.
        let mut worlds = Vec::new();
        if hello
            .planet
            .is_some_and(|p| p.id == self.planet.id && p.timestamp < self.planet.timestamp)
        {
            self.planet.emit(&mut worlds);
        }
        for m in &moons_wanted {
            if let Some(moon) = self
                .moons
                .iter()
                .find(|w| w.id == m.id && m.timestamp < w.timestamp)
            {
                moon.emit(&mut worlds);
            }
        }

        let mut payload = Vec::with_capacity(64 + worlds.len());
        let reported = if hello.protocol_version >= 5 {
            from
        } else {
            with_port(from, 0)
        };
        OkRepr {
            in_re_verb: Verb::Hello,
            in_re_packet_id: hello_id,
            body: OkBody::Hello(OkHelloRepr {
                timestamp_echo: hello.timestamp,
                protocol_version: packet::PROTO_VERSION,
                software_version: packet::SOFTWARE_VERSION,
                physical_source: Some(InetAddress::Ip(reported)),
                world_updates: Some(worlds),
            }),
        }
        .emit(&mut payload);
        self.send(now, source, Verb::Ok, payload, Route::Direct(from));
        self.received(now, from, source, hops, false);
    }

    fn handle_identity_collision(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        mut packet: Vec<u8>,
        claimed: &Identity,
    ) {
        if !self.identity_gate_passes(now, &from) {
            return;
        }
        let Some(key) = self.identity.agree(claimed) else {
            return;
        };
        let Ok(view) = Packet::new_checked(&packet[..]) else {
            return;
        };
        let hello_id = view.packet_id();
        if armor::dearmor(&mut packet, &key).is_err() {
            return;
        }
        // Answer the claimant with its own key: it must learn it collides.
        let mut payload = Vec::new();
        ErrorRepr {
            in_re_verb: Verb::Hello,
            in_re_packet_id: hello_id,
            code: ErrorCode::IdentityCollision,
            payload: Vec::new(),
        }
        .emit(&mut payload);
        let mut out = Vec::with_capacity(packet::MIN_PACKET_LEN + payload.len());
        packet::emit_header(
            &mut out,
            self.random_packet_id(),
            claimed.address(),
            self.address,
            Verb::Error,
        );
        out.extend_from_slice(&payload);
        armor::armor(&mut out, &key, CipherSuite::Salsa2012Poly1305);
        self.metrics
            .record_sent(claimed.address(), Verb::Error, &payload);
        self.transmits.push_back(Transmit {
            to: from,
            data: out,
            ttl: None,
        });
    }

    fn handle_ok(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        hops: u8,
        payload: &[u8],
    ) -> bool {
        let Ok((header, body)) = OkHeader::parse(payload) else {
            return false;
        };
        // Only replies to what we asked are accepted (`Node::expectingReplyTo`).
        let Some(expected) = self.expected_replies.get(&header.in_re_packet_id).copied() else {
            return false;
        };
        if expected.to != source || expected.verb != header.in_re_verb {
            return false;
        }
        match expected.verb {
            Verb::Hello => {
                self.expected_replies.remove(&header.in_re_packet_id);
                let Ok(okh) = OkHelloRepr::parse(body) else {
                    return false;
                };
                if okh.protocol_version < packet::PROTO_VERSION_MIN {
                    return false;
                }
                let is_upstream = self.upstreams.contains(&source);
                let path_allowed = self.path_allowed(source, &from);
                let Some(peer) = self.peers.get_mut(&source) else {
                    return false;
                };
                peer.version = Some(RemoteVersion {
                    proto: okh.protocol_version,
                    major: okh.software_version.major,
                    minor: okh.software_version.minor,
                    revision: okh.software_version.revision,
                });
                if hops == 0 {
                    let latency = now.since(Timestamp(okh.timestamp_echo as i64)).0;
                    peer.latency = Some(latency);
                    self.metrics.observe_latency(source, latency);
                    if path_allowed {
                        peer.learn_path(from, now).record_latency(latency);
                    }
                }
                if is_upstream {
                    if let Some(area) = &okh.world_updates {
                        self.accept_worlds(now, area);
                    }
                }
                if hops == 0 && path_allowed {
                    self.release_routable(now);
                }
            }
            Verb::Whois => {
                self.expected_replies.remove(&header.in_re_packet_id);
                if !self.upstreams.contains(&source) {
                    return false;
                }
                let Ok(OkBody::Whois(identities)) = OkBody::parse(Verb::Whois, body) else {
                    return false;
                };
                for identity in identities {
                    self.learn_identity(now, identity);
                }
            }
            Verb::Echo => {
                self.expected_replies.remove(&header.in_re_packet_id);
                let latency = now.since(expected.sent).0;
                if let Some(peer) = self.peers.get_mut(&source) {
                    if hops == 0 {
                        if let Some(path) = peer.path_mut(&from) {
                            path.record_latency(latency);
                            self.metrics.observe_latency(source, latency);
                        }
                    }
                }
                if expected.report {
                    self.events.push_back(Event::EchoReply {
                        from: source,
                        payload: body.to_vec(),
                        path: from,
                        hops,
                    });
                }
            }
            // A config may come in several chunks, members in several OKs: the entry stays
            // until it ages out.
            Verb::NetworkConfigRequest => {
                self.handle_config_chunk(now, source, header.in_re_packet_id, body);
            }
            Verb::MulticastGather | Verb::MulticastFrame => {
                self.handle_gathered(now, expected.verb, body);
            }
            _ => {}
        }
        true
    }

    fn accept_worlds(&mut self, now: Timestamp, mut area: &[u8]) {
        while !area.is_empty() {
            let Ok((world, used)) = World::parse(area) else {
                return;
            };
            area = &area[used..];
            match world.kind {
                WorldKind::Planet => {
                    if self.planet.should_be_replaced_by(&world) {
                        self.planet = world.clone();
                        self.events.push_back(Event::PlanetUpdated(world));
                        self.recompute_upstreams(now);
                    }
                }
                WorldKind::Moon => {
                    if let Some(i) = self.moons.iter().position(|m| m.id == world.id) {
                        if self.moons[i].should_be_replaced_by(&world) {
                            self.moons[i] = world.clone();
                            self.events.push_back(Event::MoonUpdated(world));
                            self.recompute_upstreams(now);
                        }
                    }
                }
            }
        }
    }

    /// An identity from OK(WHOIS).
    fn learn_identity(&mut self, now: Timestamp, identity: Identity) {
        let address = identity.address();
        if address == self.address {
            return;
        }
        if !self.peers.contains_key(&address) {
            if self
                .pending_validations
                .iter()
                .any(|p| p.identity.address() == address)
            {
                return; // Being validated: its packets are released with the verdict.
            }
            if self.validate_identities && self.defer_identity_validation {
                if let Some(key) = self.identity.agree(&identity) {
                    self.request_validation(now, identity, key, None);
                }
                return;
            }
            // ZeroTier One trusts identities from upstreams without the hash; we check anyway.
            if self.validate_identities && !self.validate_counted(&identity) {
                return;
            }
            let Some(key) = self.identity.agree(&identity) else {
                return;
            };
            self.add_peer(now, identity, key);
        } else {
            self.release_waiting(now, address);
        }
    }

    /// The one place a new peer becomes known: it is reported, and whatever waited for its
    /// identity (parked inbound packets, queued outbound ones) goes now.
    fn add_peer(&mut self, now: Timestamp, identity: Identity, key: armor::PeerKey) {
        let address = identity.address();
        self.peers
            .insert(address, Peer::new(identity.clone(), key, now));
        self.events.push_back(Event::PeerLearned(identity));
        self.release_waiting(now, address);
        self.controller_learned(now, address);
    }

    /// Sends what waited for a path (queued as [`Unroutable::NoPath`]) and has one now: a
    /// new node's first packets to its roots and controller go out as soon as the first
    /// OK(HELLO) confirms a path, instead of at the next 5 s retry.
    fn release_routable(&mut self, now: Timestamp) {
        if self.queued_tx.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<QueuedTx>, Vec<QueuedTx>) = std::mem::take(&mut self.queued_tx)
            .into_iter()
            .partition(|q| {
                self.peers.contains_key(&q.to) && self.resolve_route(now, q.to, Route::Best).is_ok()
            });
        self.queued_tx = waiting;
        for q in ready {
            self.send_reporting(now, q.to, q.verb, q.payload, Route::Best, q.report);
        }
    }

    fn release_waiting(&mut self, now: Timestamp, address: Address) {
        self.whois_sent.remove(&address);
        let (parked, rest): (Vec<ParkedRx>, Vec<ParkedRx>) = std::mem::take(&mut self.parked_rx)
            .into_iter()
            .partition(|p| p.source == address);
        self.parked_rx = rest;
        for p in parked {
            self.handle_packet(now, p.from, p.packet);
        }
        let (queued, rest): (Vec<QueuedTx>, Vec<QueuedTx>) = std::mem::take(&mut self.queued_tx)
            .into_iter()
            .partition(|q| q.to == address);
        self.queued_tx = rest;
        for q in queued {
            self.send_reporting(now, q.to, q.verb, q.payload, Route::Best, q.report);
        }
    }

    fn handle_error(&mut self, now: Timestamp, source: Address, payload: &[u8]) {
        let Ok(error) = ErrorRepr::parse(payload) else {
            return;
        };
        if error.code == ErrorCode::IdentityCollision && self.upstreams.contains(&source) {
            self.events.push_back(Event::IdentityCollision);
            return;
        }
        self.handle_vl2_error(now, source, &error);
    }

    fn handle_whois(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        packet_id: u64,
        payload: &[u8],
    ) {
        if !self.am_root {
            let Some(peer) = self.peers.get_mut(&source) else {
                return;
            };
            if peer
                .last_whois_answered
                .is_some_and(|t| now.since(t) < WHOIS_ANSWER_INTERVAL)
            {
                return;
            }
            peer.last_whois_answered = Some(now);
        }
        let whois = WhoisRepr::parse(payload);
        let mut identities = Vec::new();
        for address in whois.addresses {
            if address == self.address {
                identities.push(self.identity.public_only());
            } else if let Some(peer) = self.peers.get(&address) {
                identities.push(peer.identity.clone());
            }
        }
        if identities.is_empty() {
            return; // No reply at all when nothing is known (as 1.14).
        }
        let mut body = Vec::new();
        OkRepr {
            in_re_verb: Verb::Whois,
            in_re_packet_id: packet_id,
            body: OkBody::Whois(identities),
        }
        .emit(&mut body);
        self.send(now, source, Verb::Ok, body, Route::Direct(from));
    }

    fn handle_rendezvous(&mut self, now: Timestamp, source: Address, payload: &[u8]) {
        if !self.upstreams.contains(&source) {
            return;
        }
        let Ok(r) = RendezvousRepr::parse(payload) else {
            return;
        };
        let target = r.with;
        let Some(remote) = r.endpoint() else { return };
        if !self.peers.contains_key(&target) || !self.path_allowed(target, &remote) {
            return;
        }
        self.transmits.push_back(Transmit {
            to: remote,
            data: NAT_JUNK.to_vec(),
            ttl: Some(2),
        });
        self.contact(now, target, remote);
    }

    /// Contacts a peer at an address not yet confirmed: ECHO when it answers them, else HELLO.
    fn contact(&mut self, now: Timestamp, target: Address, remote: SocketAddr) {
        let Some(peer) = self.peers.get(&target) else {
            return;
        };
        if peer.answers_echo() {
            self.send(now, target, Verb::Echo, Vec::new(), Route::Direct(remote));
        } else {
            self.send_hello(now, target, Some(remote));
        }
    }

    fn handle_echo(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        hops: u8,
        packet_id: u64,
        payload: &[u8],
    ) {
        let Some(peer) = self.peers.get_mut(&source) else {
            return;
        };
        if hops == 0 {
            if let Some(path) = peer.path_mut(&from) {
                if path
                    .last_echo_answered
                    .is_some_and(|t| now.since(t) < ECHO_ANSWER_INTERVAL)
                {
                    return;
                }
                path.last_echo_answered = Some(now);
            }
        }
        let mut body = Vec::with_capacity(crate::wire::ok::OK_HEADER_LEN + payload.len());
        OkHeader {
            in_re_verb: Verb::Echo,
            in_re_packet_id: packet_id,
        }
        .emit(&mut body);
        body.extend_from_slice(payload);
        self.send(now, source, Verb::Ok, body, Route::Direct(from));
    }

    fn handle_push_direct_paths(&mut self, now: Timestamp, source: Address, payload: &[u8]) {
        let Some(peer) = self.peers.get_mut(&source) else {
            return;
        };
        if !peer.gate_push_direct_paths(now) {
            return;
        }
        let Ok(push) = PushDirectPathsRepr::parse(payload) else {
            return;
        };
        let mut per_family = [0usize; 2];
        let mut targets = Vec::new();
        for record in &push.records {
            let Some(addr) = record.usable_address() else {
                continue;
            };
            let family = usize::from(addr.is_ipv6());
            if per_family[family] >= 8 || peer.has_path(&addr) {
                continue;
            }
            per_family[family] += 1;
            targets.push(addr);
        }
        for addr in targets {
            if !self.path_allowed(source, &addr) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&source) else {
                return;
            };
            if peer.gate_contact_attempt(addr, now) {
                self.contact(now, source, addr);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Relaying (zt-vl1.md 9.5)

    /// Forwards a packet or fragment not addressed to us. `source` is `None` for fragments.
    fn relay(&mut self, now: Timestamp, from: SocketAddr, data: &[u8], source: Option<Address>) {
        // Ordinary nodes relay only over paths with established trust (a VL2 notion we do
        // not track yet): until then only roots relay.
        if !self.am_root {
            self.metrics.record_dropped(DropReason::NotRelayed);
            return;
        }
        let mut forwarded = data.to_vec();
        let destination = if source.is_some() {
            let Ok(mut view) = Packet::new_checked(&mut forwarded[..]) else {
                return;
            };
            let hops = view.hops();
            if hops >= RELAY_MAX_HOPS {
                self.metrics.record_dropped(DropReason::NotRelayed);
                return;
            }
            view.set_hops(hops + 1);
            view.destination()
        } else {
            let Ok(mut view) = Fragment::new_checked(&mut forwarded[..]) else {
                return;
            };
            let hops = view.hops();
            if hops >= RELAY_MAX_HOPS {
                self.metrics.record_dropped(DropReason::NotRelayed);
                return;
            }
            view.set_hops(hops + 1);
            view.destination()
        };
        let direct = self
            .peers
            .get(&destination)
            .and_then(|p| p.best_path_index(now).map(|i| p.paths[i].remote));
        if let Some(to) = direct {
            if let Some(path) = self
                .peers
                .get_mut(&destination)
                .and_then(|p| p.path_mut(&to))
            {
                path.last_send = now;
            }
            self.transmits.push_back(Transmit {
                to,
                data: forwarded,
                ttl: None,
            });
            if let Some(source) = source {
                self.unite(now, source, destination);
            }
            return;
        }
        // Not ours to reach directly: hand it to another upstream, never back where it came.
        if let Some((upstream, to)) = self.best_upstream_path(now, Some(destination)) {
            if to != from && Some(upstream) != source {
                self.transmits.push_back(Transmit {
                    to,
                    data: forwarded,
                    ttl: None,
                });
            }
        }
    }

    /// RENDEZVOUS to both peers, telling each the other's best address (`Peer::introduce`).
    fn unite(&mut self, now: Timestamp, a: Address, b: Address) {
        // One gate per unordered pair, as 1.14 keys it: a request relayed one way and its
        // answer relayed back must not introduce the pair twice.
        let gate_key = (a.min(b), a.max(b));
        if self
            .unite_gate
            .get(&gate_key)
            .is_some_and(|t| now.since(*t) < UNITE_INTERVAL)
        {
            return;
        }
        let (Some(pa), Some(pb)) = (self.peers.get(&a), self.peers.get(&b)) else {
            return;
        };
        // Prefer a family both have alive paths in, IPv6 first.
        let mut pair = None;
        for want_v6 in [true, false] {
            let ea = pa
                .paths
                .iter()
                .filter(|p| p.is_alive(now) && p.remote.is_ipv6() == want_v6)
                .max_by_key(|p| p.last_receive);
            let eb = pb
                .paths
                .iter()
                .filter(|p| p.is_alive(now) && p.remote.is_ipv6() == want_v6)
                .max_by_key(|p| p.last_receive);
            if let (Some(ea), Some(eb)) = (ea, eb) {
                pair = Some((ea.remote, eb.remote));
                break;
            }
        }
        let Some((addr_a, addr_b)) = pair else { return };
        self.unite_gate.insert(gate_key, now);
        let mut to_a = Vec::new();
        RendezvousRepr::new(b, addr_b).emit(&mut to_a);
        let mut to_b = Vec::new();
        RendezvousRepr::new(a, addr_a).emit(&mut to_b);
        let sends = [(a, to_a, addr_a), (b, to_b, addr_b)];
        let first = (self.rng.next_u32() & 1) as usize;
        for i in [first, 1 - first] {
            let (peer, payload, addr) = sends[i].clone();
            self.send(now, peer, Verb::Rendezvous, payload, Route::Direct(addr));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Sending

    fn random_packet_id(&mut self) -> [u8; 8] {
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        id
    }

    fn send_whois(&mut self, now: Timestamp, address: Address) {
        self.whois_sent.insert(address, now);
        let Some(upstream) = self.best_upstream(now) else {
            return;
        };
        if upstream == address {
            return;
        }
        let mut payload = Vec::with_capacity(5);
        WhoisRepr {
            addresses: vec![address],
        }
        .emit(&mut payload);
        self.send(now, upstream, Verb::Whois, payload, Route::Best);
    }

    /// HELLO to a peer (cipher 0, moon list cryptField'ed). `to` = a physical address; `None`
    /// relays it through the best upstream (physical destination then nil).
    fn send_hello(&mut self, now: Timestamp, dest: Address, to: Option<SocketAddr>) {
        if !self.peers.contains_key(&dest) {
            return;
        }
        let (target, physical_destination) = match to {
            Some(addr) => (addr, Some(addr)),
            None => match self.best_upstream_path(now, Some(dest)) {
                Some((_, addr)) => (addr, None),
                None => return,
            },
        };
        let mut buf = Vec::with_capacity(256);
        let id = self.random_packet_id();
        packet::emit_header(&mut buf, id, dest, self.address, Verb::Hello);
        let hello = HelloRepr {
            protocol_version: packet::PROTO_VERSION,
            software_version: packet::SOFTWARE_VERSION,
            timestamp: now.as_millis() as u64,
            identity: self.identity.public_only(),
            physical_destination: Some(
                physical_destination.map_or(InetAddress::Nil, InetAddress::Ip),
            ),
            planet: Some(PlanetRef {
                id: self.planet.id,
                timestamp: self.planet.timestamp,
            }),
            moons: Some(
                self.moons
                    .iter()
                    .map(|m| MoonRecord::moon(m.id, m.timestamp))
                    .collect(),
            ),
        };
        hello.emit(&mut buf);
        let tail = PAYLOAD_OFFSET + hello.tail_offset().unwrap_or(0);
        let key = &self.peers[&dest].key;
        armor::crypt_field(key, &mut buf, tail);
        armor::armor(&mut buf, key, CipherSuite::Poly1305);
        self.expect_reply(u64::from_be_bytes(id), Verb::Hello, dest, now, false);
        self.metrics.record_sent(dest, Verb::Hello, &[]);
        self.transmits.push_back(Transmit {
            to: target,
            data: buf,
            ttl: None,
        });
        if let Some(peer) = self.peers.get_mut(&dest) {
            peer.last_hello_sent = Some(now);
            if let Some(path) = peer.path_mut(&target) {
                path.last_send = now;
            }
        }
    }

    fn expect_reply(
        &mut self,
        on_wire_id: u64,
        verb: Verb,
        to: Address,
        now: Timestamp,
        report: bool,
    ) {
        if self.expected_replies.len() >= MAX_EXPECTED_REPLIES {
            let cutoff = now - EXPECT_REPLY_TIMEOUT;
            self.expected_replies.retain(|_, e| e.sent > cutoff);
            if self.expected_replies.len() >= MAX_EXPECTED_REPLIES {
                self.expected_replies.clear();
            }
        }
        self.expected_replies.insert(
            on_wire_id,
            ExpectedReply {
                verb,
                to,
                sent: now,
                report,
            },
        );
    }

    /// Builds, armors and queues a packet of `verb` with `payload` for `dest`.
    fn send(&mut self, now: Timestamp, dest: Address, verb: Verb, payload: Vec<u8>, route: Route) {
        self.send_reporting(now, dest, verb, payload, route, false);
    }

    /// Like [`Node::send`]; `report` = the host asked for this request, so its answer becomes
    /// an event. The flag travels with the packet while it waits for a WHOIS.
    fn send_reporting(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: Vec<u8>,
        route: Route,
        report: bool,
    ) {
        let target = match self.resolve_route(now, dest, route) {
            Ok(target) => target,
            Err(unroutable) => {
                self.hold_unroutable(now, dest, verb, payload, report, unroutable);
                return;
            }
        };
        let mut buf = self.take_buffer();
        let id = self.random_packet_id();
        packet::emit_header(&mut buf, id, dest, self.address, verb);
        buf.extend_from_slice(&payload);
        self.send_built(now, dest, verb, buf, route, target, report);
    }

    /// Where a packet to `dest` goes now (a given address, the peer's best path, or relayed
    /// via an upstream), or why it cannot go yet.
    fn resolve_route(
        &self,
        now: Timestamp,
        dest: Address,
        route: Route,
    ) -> Result<Target, Unroutable> {
        if dest == self.address {
            return Err(Unroutable::ToSelf);
        }
        let Some(peer) = self.peers.get(&dest) else {
            return Err(Unroutable::UnknownPeer);
        };
        match route {
            Route::Direct(to) => Ok(Target {
                to,
                direct: true,
                fragmentable: false,
            }),
            Route::Best => match peer.best_path_index(now) {
                Some(i) => Ok(Target {
                    to: peer.paths[i].remote,
                    direct: true,
                    fragmentable: true,
                }),
                None => match self.best_upstream_path(now, Some(dest)) {
                    Some((_, to)) => Ok(Target {
                        to,
                        direct: false,
                        fragmentable: true,
                    }),
                    None => Err(Unroutable::NoPath),
                },
            },
        }
    }

    /// Keeps a packet that cannot be sent yet: it waits for a WHOIS answer (asked here) or
    /// for a root to answer.
    fn hold_unroutable(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: Vec<u8>,
        report: bool,
        unroutable: Unroutable,
    ) {
        if unroutable == Unroutable::ToSelf {
            return;
        }
        if self.queued_tx.len() < MAX_QUEUED_TX {
            self.queued_tx.push(QueuedTx {
                to: dest,
                verb,
                payload,
                queued: now,
                report,
            });
        }
        if unroutable == Unroutable::UnknownPeer
            && self
                .whois_sent
                .get(&dest)
                .is_none_or(|t| now.since(*t) >= WHOIS_RETRY_DELAY)
        {
            self.send_whois(now, dest);
        }
    }

    /// Compresses, fragments, armors and queues `buf`, a whole plaintext packet (header with
    /// its packet ID, verb and payload) for `dest`, a known peer reached at `target`.
    #[allow(clippy::too_many_arguments)]
    fn send_built(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        mut buf: Vec<u8>,
        route: Route,
        target: Target,
        report: bool,
    ) {
        self.metrics
            .record_sent(dest, verb, buf.get(PAYLOAD_OFFSET..).unwrap_or_default());
        // What 1.14 compresses (frames are not, since 1.4.8); compression is kept only when
        // it shrinks the packet.
        let compressible = matches!(
            verb,
            Verb::UserMessage
                | Verb::PushDirectPaths
                | Verb::NetworkConfigRequest
                | Verb::NetworkConfig
                | Verb::NetworkCredentials
                | Verb::MulticastLike
                | Verb::MulticastGather
                | Verb::MulticastFrame
        ) || (verb == Verb::Ok && buf.len() > PAYLOAD_OFFSET + 256);
        if compressible {
            let mut scratch = Vec::new();
            compress::compress_packet(&mut buf, &mut scratch);
        }
        let fragment = target.fragmentable && buf.len() > self.physical_mtu;
        if fragment {
            if let Ok(mut view) = Packet::new_checked(&mut buf[..]) {
                view.set_fragmented(true);
            }
        }
        let Some(peer) = self.peers.get(&dest) else {
            return;
        };
        match self
            .trusted_paths
            .iter()
            .find(|t| t.contains(&target.to.ip()))
        {
            Some(trusted) => armor::armor_trusted(&mut buf, trusted.id),
            None => armor::armor(&mut buf, &peer.key, peer.cipher()),
        }
        let on_wire_id = u64::from_be_bytes([
            buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
        ]);
        if matches!(
            verb,
            Verb::Echo
                | Verb::Whois
                | Verb::Hello
                | Verb::NetworkConfigRequest
                | Verb::MulticastGather
                | Verb::MulticastFrame
        ) {
            self.expect_reply(on_wire_id, verb, dest, now, report);
        }
        // Application traffic (not keepalives or replies) makes a peer active: only active
        // peers get keepalives, as in ZeroTier One.
        if matches!(route, Route::Best)
            && matches!(
                verb,
                Verb::Echo
                    | Verb::UserMessage
                    | Verb::Frame
                    | Verb::ExtFrame
                    | Verb::MulticastFrame
            )
        {
            if let Some(peer) = self.peers.get_mut(&dest) {
                peer.last_activity = Some(now);
            }
        }
        if target.direct {
            if let Some(path) = self
                .peers
                .get_mut(&dest)
                .and_then(|p| p.path_mut(&target.to))
            {
                path.last_send = now;
            }
        }
        if fragment {
            // Each piece is copied into a buffer of its own; the whole packet's goes back to
            // the pool.
            let (free, transmits) = (&mut self.free_buffers, &mut self.transmits);
            let _ = fragment::split_with(&buf, self.physical_mtu, |piece| {
                let mut data = take_buffer(free);
                data.extend_from_slice(piece);
                transmits.push_back(Transmit {
                    to: target.to,
                    data,
                    ttl: None,
                });
            });
            self.recycle(buf);
        } else {
            self.transmits.push_back(Transmit {
                to: target.to,
                data: buf,
                ttl: None,
            });
        }
    }

    // ---------------------------------------------------------------------------------------
    // Upstreams (zt-vl1.md 9.4)

    fn recompute_upstreams(&mut self, now: Timestamp) {
        let mut roots: Vec<(Identity, Vec<SocketAddr>)> = Vec::new();
        for world in std::iter::once(&self.planet).chain(self.moons.iter()) {
            for root in &world.roots {
                roots.push((root.identity.clone(), root.stable_endpoints.clone()));
            }
        }
        self.am_root = roots.iter().any(|(id, _)| id.address() == self.address);
        self.upstreams.clear();
        self.root_endpoints.clear();
        for (identity, endpoints) in roots {
            let address = identity.address();
            if address == self.address {
                continue;
            }
            self.upstreams.push(address);
            self.root_endpoints
                .entry(address)
                .or_default()
                .extend(endpoints);
            if !self.peers.contains_key(&address) {
                // Root identities come signed inside the world: no WHOIS, no hash needed.
                if let Some(key) = self.identity.agree(&identity) {
                    self.peers.insert(address, Peer::new(identity, key, now));
                }
            }
        }
        self.upstreams.sort_unstable();
        self.upstreams.dedup();
    }

    /// The upstream to relay and WHOIS through (`Topology::getUpstreamPeer`): lowest latency,
    /// penalized by silence; ties go to the later address.
    fn best_upstream(&self, now: Timestamp) -> Option<Address> {
        self.upstreams
            .iter()
            .filter_map(|a| self.peers.get(a).map(|p| (a, p)))
            .min_by_key(|(a, p)| {
                let silence = now.since(p.last_receive);
                let heard = !p.paths.is_empty() && silence < PEER_ACTIVITY_TIMEOUT;
                let quality = if heard {
                    p.latency.unwrap_or(0xffff).max(0) * (1 + silence.0 / 61_000)
                } else {
                    i64::MAX
                };
                (quality, std::cmp::Reverse(**a))
            })
            .map(|(a, _)| *a)
    }

    /// The best upstream other than `except` and its physical address: its best path, else
    /// its first stable endpoint.
    fn best_upstream_path(
        &self,
        now: Timestamp,
        except: Option<Address>,
    ) -> Option<(Address, SocketAddr)> {
        let mut candidates: Vec<Address> = self
            .upstreams
            .iter()
            .copied()
            .filter(|a| Some(*a) != except)
            .collect();
        if let Some(best) = self.best_upstream(now) {
            if let Some(i) = candidates.iter().position(|a| *a == best) {
                candidates.swap(0, i);
            }
        }
        for upstream in candidates {
            let Some(peer) = self.peers.get(&upstream) else {
                continue;
            };
            if let Some(i) = peer.best_path_index(now) {
                return Some((upstream, peer.paths[i].remote));
            }
            if let Some(endpoint) = self.root_endpoints.get(&upstream).and_then(|e| e.first()) {
                return Some((upstream, *endpoint));
            }
        }
        None
    }
}

/// A buffer from `free`, or a new one when the pool is empty. A free function so that it can
/// borrow the pool alone while other fields of the node are borrowed too.
fn take_buffer(free: &mut Vec<Vec<u8>>) -> Vec<u8> {
    free.pop()
        .unwrap_or_else(|| Vec::with_capacity(POOL_BUFFER_CAPACITY))
}

fn with_port(mut addr: SocketAddr, port: u16) -> SocketAddr {
    addr.set_port(port);
    addr
}
