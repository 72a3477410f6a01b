//! VL2 in the node (zt-vl2.md 2-5): joined networks and their configs, the membership
//! credentials peers present, multicast subscriptions and the multicast directory, and the
//! frames that cross between the host's virtual port and the wire.
//!
//! The host hands frames from its tap to [`Node::handle_tap_frame`] and gets frames for the tap
//! back as [`Event::Frame`]. A node whose address is a network's controller does not decide
//! configs itself: it reports [`Event::NetworkConfigRequest`] and the host answers with
//! [`Node::answer_config_request`] (the controller lives above the node, as in 1.14).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use rand_core::RngCore;

use crate::address::Address;
use crate::identity::Identity;
use crate::time::{Millis, Timestamp};
use crate::vl2::config::{
    NetworkConfig, NetworkType, RequestMetadata, FLAG_ENABLE_BROADCAST,
    FLAG_ENABLE_IPV6_NDP_EMULATION,
};
use crate::vl2::credentials::{CredentialType, Thing};
use crate::vl2::filter::{
    self, CooOwnership, Direction, ExtFrameCopy, FilterContext, FilterDecision, Frame, Ownership,
    TagValue,
};
use crate::vl2::network::{RFC4193_PREFIX_BITS, SIXPLANE_PREFIX_BITS};
use crate::vl2::verbs::{
    ConfigChunkRepr, ExtFrameRepr, FrameView, MulticastFrameRepr, MulticastGatherRepr,
    MulticastLikeRepr, NetworkConfigAckRepr, NetworkConfigRequestRepr, NetworkCredentialsRepr,
    OkMulticastFrameRepr, OkMulticastGatherRepr, Vl2ErrorPayload,
};
use crate::vl2::{
    Capability, CertificateOfMembership, CertificateOfOwnership, Mac, MulticastGroup, NetworkId,
    Revocation, Tag,
};
use crate::wire::error::ErrorRepr;
use crate::wire::inet::InetAddress;
use crate::wire::ok::OkHeader;
use crate::wire::packet::SOFTWARE_VERSION;
use crate::wire::verb::{ErrorCode, Verb};

use super::{Event, Node, ParkedRx, Route};

/// A member re-requests its config this often (ZT_NETWORK_AUTOCONF_DELAY).
const CONFIG_REFRESH_PERIOD: Millis = Millis(60_000);
/// An unconfigured network asks again at most this often (the ping-check period).
const CONFIG_RETRY_PERIOD: Millis = Millis(5_000);
/// LIKEs are re-announced this often (ZT_MULTICAST_ANNOUNCE_PERIOD).
const MULTICAST_ANNOUNCE_PERIOD: Millis = Millis(60_000);
/// A LIKE is forgotten after this (ZT_MULTICAST_LIKE_EXPIRE).
const MULTICAST_LIKE_EXPIRE: Millis = Millis(600_000);
/// At most one explicit GATHER per group this often (ZT_MULTICAST_EXPLICIT_GATHER_DELAY).
const EXPLICIT_GATHER_DELAY: Millis = Millis(60_000);
/// A multicast waiting for members is dropped after this (ZT_MULTICAST_TRANSMIT_TIMEOUT).
const MULTICAST_TRANSMIT_TIMEOUT: Millis = Millis(5_000);
/// Multicasts waiting per group (ZT_TX_QUEUE_SIZE).
const MULTICAST_QUEUE_PER_GROUP: usize = 32;
/// Credentials are pushed again to a peer after this (ZT_PEER_ACTIVITY_TIMEOUT).
const CREDENTIAL_REPUSH_PERIOD: Millis = Millis(500_000);
/// NEED_MEMBERSHIP_CERTIFICATE makes us re-push at most this often.
const CREDENTIAL_REQUEST_INTERVAL: Millis = Millis(1_000);
/// One NETWORK_CREDENTIALS per peer per this period is processed (1.14's rate).
const CREDENTIALS_RATE_LIMIT: Millis = Millis(1_000);
/// A controller answers one request per (network, member) per this period.
const CONFIG_REQUEST_MIN_PERIOD: Millis = Millis(1_000);
/// A controller accepts LIKE/GATHER from members it configured within this window.
const CONTROLLER_AUTHORIZATION_WINDOW: Millis = Millis(3 * 60_000);
/// A frame that failed the membership gate is retried for this long, when the sender's
/// credentials arrive (1.14 keeps it in its receive queue as long).
const GATE_RETRY_TIMEOUT: Millis = Millis(5_000);
/// In-progress config updates kept per network (ZT_NETWORK_MAX_INCOMING_UPDATES).
const MAX_INCOMING_UPDATES: usize = 3;
/// LIKE tuples per packet: 18 bytes each, well inside one 1432-byte datagram after LZ4.
const LIKES_PER_PACKET: usize = 400;
/// Ethernet header: destination, source, ethertype.
const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 0x3a;
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 0x87;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 0x88;

/// Where a network stands, as `/network` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkStatus {
    RequestingConfiguration,
    Ok,
    AccessDenied,
    NotFound,
    AuthenticationRequired,
}

impl NetworkStatus {
    /// ZeroTier One's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestingConfiguration => "REQUESTING_CONFIGURATION",
            Self::Ok => "OK",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
        }
    }
}

/// The host's (controller's) answer to [`Event::NetworkConfigRequest`].
#[derive(Clone, Debug)]
pub enum ConfigAnswer {
    /// Send this config (signed by us, the controller).
    Config(Box<NetworkConfig>),
    /// Refuse: `ObjectNotFound` or `NetworkAccessDenied`.
    Error(ErrorCode),
}

/// What `/network/<nwid>` reports.
#[derive(Clone, Debug)]
pub struct NetworkInfo {
    pub id: NetworkId,
    /// Our port's MAC on this network.
    pub mac: Mac,
    pub status: NetworkStatus,
    pub config: Option<NetworkConfig>,
    /// Every group we announce (host groups, address resolution, broadcast).
    pub multicast_subscriptions: Vec<MulticastGroup>,
}

/// One joined network.
pub(super) struct Network {
    id: NetworkId,
    mac: Mac,
    config: Option<NetworkConfig>,
    status: NetworkStatus,
    /// When a new config was applied (credentials are re-pushed after it).
    last_config_update: Option<Timestamp>,
    /// When any valid config (new or identical) last arrived.
    last_config_received: Option<Timestamp>,
    last_config_request: Option<Timestamp>,
    assemblies: Vec<ConfigAssembly>,
    memberships: BTreeMap<Address, Membership>,
    /// Groups the host's virtual port has (from the OS).
    host_groups: BTreeSet<MulticastGroup>,
    last_upstream_announce: Option<Timestamp>,
    last_gather: BTreeMap<MulticastGroup, Timestamp>,
    pending: Vec<PendingMulticast>,
}

/// A config update being reassembled from chunks.
struct ConfigAssembly {
    update_id: u64,
    total: usize,
    data: Vec<u8>,
    have: usize,
    chunk_ids: Vec<[u8; 8]>,
    /// Chunks stored in this slot; the least used slot is reused first (as 1.14).
    uses: u64,
}

/// What we know of another member of a network: the credentials it presented and when we
/// last talked VL2 to it.
#[derive(Default)]
struct Membership {
    com: Option<CertificateOfMembership>,
    /// COMs with a timestamp at or below this are revoked.
    com_revoked_through: i64,
    tags: BTreeMap<u32, Tag>,
    capabilities: BTreeMap<u32, Capability>,
    coos: BTreeMap<u32, CertificateOfOwnership>,
    /// Revocation thresholds of tags, capabilities and COOs by (type, credential ID).
    revoked: BTreeMap<(u8, u32), i64>,
    last_pushed: Option<Timestamp>,
    last_announced: Option<Timestamp>,
}

/// A multicast waiting for the gather to name members.
struct PendingMulticast {
    group: MulticastGroup,
    created: Timestamp,
    limit: usize,
    sent_to: Vec<Address>,
    ethertype: u16,
    payload: Vec<u8>,
}

impl Network {
    fn new(id: NetworkId, address: Address) -> Self {
        Self {
            id,
            mac: Mac::from_address(address, id),
            config: None,
            status: NetworkStatus::RequestingConfiguration,
            last_config_update: None,
            last_config_received: None,
            last_config_request: None,
            assemblies: Vec::new(),
            memberships: BTreeMap::new(),
            host_groups: BTreeSet::new(),
            last_upstream_announce: None,
            last_gather: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Every group we subscribe to: the host's, the address-resolution groups of our managed
    /// addresses, and broadcast when the network enables it.
    fn subscriptions(&self) -> BTreeSet<MulticastGroup> {
        let mut groups = self.host_groups.clone();
        if let Some(config) = &self.config {
            for ip in static_ips(config) {
                match ip.0 {
                    IpAddr::V4(v4) => groups.insert(MulticastGroup::ipv4_arp(v4)),
                    IpAddr::V6(v6) => groups.insert(MulticastGroup::ipv6_solicited_node(v6)),
                };
            }
            if config.flags & FLAG_ENABLE_BROADCAST != 0 {
                groups.insert(MulticastGroup::BROADCAST);
            }
        }
        groups
    }

    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            id: self.id,
            mac: self.mac,
            status: self.status,
            config: self.config.clone(),
            multicast_subscriptions: self.subscriptions().into_iter().collect(),
        }
    }

    /// Whether `peer` may talk on this network (`Network::gate`): a public network, or a
    /// presented COM that is not revoked and agrees with ours.
    fn gate(&self, peer: &Identity) -> bool {
        let Some(config) = &self.config else {
            return false;
        };
        if config.network_type == NetworkType::Public {
            return true;
        }
        let (Some(ours), Some(membership)) = (&config.com, self.memberships.get(&peer.address()))
        else {
            return false;
        };
        match &membership.com {
            Some(theirs) => {
                theirs.timestamp() as i64 > membership.com_revoked_through
                    && ours.agrees_with(theirs, peer)
            }
            None => false,
        }
    }

    /// Whether a remote credential's timestamp is close enough to our config's.
    fn credential_time_ok(&self, timestamp: i64) -> bool {
        self.config.as_ref().is_some_and(|c| {
            timestamp.abs_diff(c.timestamp) <= c.credential_time_max_delta.unsigned_abs()
        })
    }

    fn credential_valid(&self, m: &Membership, kind: CredentialType, id: u32, ts: i64) -> bool {
        self.credential_time_ok(ts)
            && m.revoked
                .get(&(u8::from(kind), id))
                .is_none_or(|&threshold| ts > threshold)
    }

    /// Appends the peer's currently valid tags, as the rules see them, to `out`.
    fn remote_tags_into(&self, peer: Address, out: &mut Vec<TagValue>) {
        let Some(m) = self.memberships.get(&peer) else {
            return;
        };
        out.extend(
            m.tags
                .values()
                .filter(|t| self.credential_valid(m, CredentialType::Tag, t.id, t.timestamp))
                .map(|t| TagValue {
                    id: t.id,
                    value: t.value,
                }),
        );
    }

    /// The peer's currently valid capabilities.
    fn remote_capabilities(&self, peer: Address) -> impl Iterator<Item = &Capability> + '_ {
        self.memberships.get(&peer).into_iter().flat_map(move |m| {
            m.capabilities.values().filter(move |c| {
                self.credential_valid(m, CredentialType::Capability, c.id, c.timestamp)
            })
        })
    }

    /// The peer's currently valid certificates of ownership.
    fn remote_coos(&self, peer: Address) -> impl Iterator<Item = &CertificateOfOwnership> + '_ {
        self.memberships.get(&peer).into_iter().flat_map(move |m| {
            m.coos.values().filter(move |c| {
                self.credential_valid(m, CredentialType::CertificateOfOwnership, c.id, c.timestamp)
            })
        })
    }

    /// Appends our own tags (the config's) to `out`.
    fn local_tags_into(&self, out: &mut Vec<TagValue>) {
        if let Some(c) = &self.config {
            out.extend(c.tags.iter().map(|t| TagValue {
                id: t.id,
                value: t.value,
            }));
        }
    }
}

/// Our managed addresses with their prefix lengths.
fn static_ips(config: &NetworkConfig) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
    config.static_ips.iter().filter_map(|ip| match ip {
        InetAddress::Ip(sa) => Some((sa.ip(), sa.port().min(128) as u8)),
        _ => None,
    })
}

/// Inbound ownership: the sender's valid COOs, plus 1.14's NDP-emulation rule (an IPv6
/// source inside our own RFC4193 /88 or 6PLANE /40 counts as owned). Both are looked up
/// only when a rule asks, so a frame costs no list of them.
struct InboundOwnership<'a> {
    network: &'a Network,
    sender: Address,
    config: &'a NetworkConfig,
}

impl Ownership for InboundOwnership<'_> {
    fn owns_ip(&self, ip: IpAddr) -> bool {
        if let IpAddr::V6(v6) = ip {
            let o = v6.octets();
            if ndp_emulated_prefixes(self.config)
                .any(|(p, bytes)| p.octets()[..bytes] == o[..bytes])
            {
                return true;
            }
        }
        let thing = match ip {
            IpAddr::V4(v4) => Thing::ipv4(v4),
            IpAddr::V6(v6) => Thing::ipv6(v6),
        };
        self.network
            .remote_coos(self.sender)
            .any(|coo| coo.owns(&thing))
    }
    fn owns_mac(&self, mac: Mac) -> bool {
        let thing = Thing::mac(mac);
        self.network
            .remote_coos(self.sender)
            .any(|coo| coo.owns(&thing))
    }
}

/// Our RFC4193 and 6PLANE static addresses with the bytes of their prefix that identify the
/// network (11 and 5), when NDP emulation is on.
fn ndp_emulated_prefixes(config: &NetworkConfig) -> impl Iterator<Item = (Ipv6Addr, usize)> + '_ {
    let emulating = config.flags & FLAG_ENABLE_IPV6_NDP_EMULATION != 0;
    static_ips(config)
        .filter(move |_| emulating)
        .filter_map(|(ip, bits)| match ip {
            IpAddr::V6(v6) => {
                let o = v6.octets();
                if bits == RFC4193_PREFIX_BITS && o[0] == 0xfd && o[9] == 0x99 && o[10] == 0x93 {
                    Some((v6, 11))
                } else if bits == SIXPLANE_PREFIX_BITS && o[0] == 0xfc {
                    Some((v6, 5))
                } else {
                    None
                }
            }
            IpAddr::V4(_) => None,
        })
}

/// The multicast group an outgoing frame to a multicast MAC goes to (zt-vl2.md 1.3).
fn multicast_group_of(dest: Mac, ethertype: u16, payload: &[u8]) -> MulticastGroup {
    if dest.is_broadcast()
        && ethertype == ETHERTYPE_ARP
        && payload.len() >= 28
        && payload[2..4] == [0x08, 0x00]
        && payload[4] == 6
        && payload[5] == 4
        && payload[7] == 1
    {
        let target = u32::from_be_bytes([payload[24], payload[25], payload[26], payload[27]]);
        return MulticastGroup {
            mac: Mac::BROADCAST,
            adi: target,
        };
    }
    MulticastGroup { mac: dest, adi: 0 }
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `icmp`.
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Appends a raw Ethernet frame for the tap to `frame`.
fn emit_ethernet_frame(
    frame: &mut Vec<u8>,
    dest: Mac,
    source: Mac,
    ethertype: u16,
    payload: &[u8],
) {
    frame.extend_from_slice(&dest.0);
    frame.extend_from_slice(&source.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
}

impl Node {
    // ---------------------------------------------------------------------------------------
    // Host interface

    /// Joins a network: asks its controller for a config. `saved` is the config persisted
    /// from an earlier run (used until a fresh one arrives).
    pub fn join(&mut self, now: Timestamp, network_id: NetworkId, saved: Option<NetworkConfig>) {
        if self.networks.contains_key(&network_id) {
            return;
        }
        let mut network = Network::new(network_id, self.address);
        if let Some(config) = saved {
            if config.network_id == network_id && config.issued_to == self.address {
                network.config = Some(config);
                network.status = NetworkStatus::Ok;
            }
        }
        self.networks.insert(network_id, network);
        self.request_config(now, network_id);
    }

    /// Leaves a network; its state is forgotten.
    pub fn leave(&mut self, _now: Timestamp, network_id: NetworkId) -> bool {
        let left = self.networks.remove(&network_id).is_some();
        let networks = &self.networks;
        self.metrics.retain_networks(|id| networks.contains_key(id));
        left
    }

    pub fn network(&self, network_id: NetworkId) -> Option<NetworkInfo> {
        self.networks.get(&network_id).map(Network::info)
    }

    pub fn networks(&self) -> Vec<NetworkInfo> {
        self.networks.values().map(Network::info).collect()
    }

    /// The multicast groups the host's virtual port has (e.g. from `/proc/net/dev_mcast`).
    /// New ones are announced at once.
    pub fn set_multicast_subscriptions(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        groups: impl IntoIterator<Item = MulticastGroup>,
    ) {
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        let before = network.subscriptions();
        network.host_groups = groups.into_iter().collect();
        if network.subscriptions().difference(&before).next().is_some() {
            self.announce_everywhere(now, network_id);
        }
    }

    /// Answers an [`Event::NetworkConfigRequest`] (we are the network's controller).
    /// `in_re_packet_id` 0 pushes the config as NETWORK_CONFIG.
    pub fn answer_config_request(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        to: Address,
        in_re_packet_id: u64,
        answer: ConfigAnswer,
    ) {
        if network_id.controller() != self.address {
            return;
        }
        if to == self.address {
            match answer {
                ConfigAnswer::Config(config) => {
                    let dictionary = config
                        .to_dictionary()
                        .map(|d| d.into_bytes())
                        .unwrap_or_default();
                    self.set_config(now, network_id, *config, dictionary);
                }
                ConfigAnswer::Error(code) => self.config_refused(network_id, code),
            }
            return;
        }
        match answer {
            ConfigAnswer::Config(config) => {
                let Ok(dictionary) = config.to_dictionary() else {
                    return;
                };
                let update_id = loop {
                    let id = self.rng.next_u64();
                    if id != 0 {
                        break id;
                    }
                };
                let Ok(chunks) = ConfigChunkRepr::split(
                    network_id,
                    dictionary.as_bytes(),
                    update_id,
                    &self.identity,
                ) else {
                    return;
                };
                for chunk in chunks {
                    let mut payload = Vec::with_capacity(9 + chunk.buffer_len());
                    if in_re_packet_id != 0 {
                        OkHeader {
                            in_re_verb: Verb::NetworkConfigRequest,
                            in_re_packet_id,
                        }
                        .emit(&mut payload);
                        chunk.emit(&mut payload);
                        self.send(now, to, Verb::Ok, payload, Route::Best);
                    } else {
                        chunk.emit(&mut payload);
                        self.send(now, to, Verb::NetworkConfig, payload, Route::Best);
                    }
                }
                self.controller_authorized.insert((network_id, to), now);
            }
            ConfigAnswer::Error(code) => {
                if in_re_packet_id == 0 {
                    return; // 1.14 sends errors only in answer to a real request.
                }
                let mut body = Vec::with_capacity(18);
                ErrorRepr {
                    in_re_verb: Verb::NetworkConfigRequest,
                    in_re_packet_id,
                    code,
                    payload: network_id.to_bytes().to_vec(),
                }
                .emit(&mut body);
                self.send(now, to, Verb::Error, body, Route::Best);
            }
        }
    }

    /// Sends a revocation (as a controller: a deauthorized member's COM) to `to`.
    pub fn send_revocation(&mut self, now: Timestamp, to: Address, revocation: Revocation) {
        if to == self.address {
            self.apply_revocation(&revocation);
            return;
        }
        let credentials = NetworkCredentialsRepr {
            revocations: vec![revocation],
            ..NetworkCredentialsRepr::default()
        };
        let mut payload = Vec::with_capacity(credentials.buffer_len());
        credentials.emit(&mut payload);
        self.send(now, to, Verb::NetworkCredentials, payload, Route::Best);
    }

    /// Members hosted in the same process as this node (other container endpoints of the
    /// same agent). Unicast frames to them that our outbound rules allow come out as
    /// [`Event::SwitchedFrame`] instead of FRAMEs: no UDP, no encryption. Everything else
    /// (HELLO, credentials, multicast) still goes over VL1, so membership works as usual.
    pub fn set_local_peers(&mut self, peers: std::sync::Arc<BTreeSet<Address>>) {
        self.local_peers = peers;
    }

    /// A frame another node of this process switched to us ([`Event::SwitchedFrame`] of
    /// `source`): the same membership gate and inbound rules as a FRAME from `source`.
    /// Returns whether it reached our port. A sender without credentials yet is asked for
    /// them over VL1 and its frame dropped (the next one passes).
    pub fn handle_switched_frame(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        source: Address,
        ethertype: u16,
        payload: &[u8],
    ) -> bool {
        let Some(network) = self.networks.get(&network_id) else {
            return false;
        };
        let our_mac = network.mac;
        if source == self.address || payload.is_empty() {
            return false;
        }
        if !self.peer_passes_gate(network_id, source) {
            self.ask_for_credentials(now, source, Verb::Frame, 0, network_id);
            return false;
        }
        self.announce_to_member_if_due(now, network_id, source);
        let source_mac = Mac::from_address(source, network_id);
        let decision = self.filter_in(
            now, network_id, source, source_mac, our_mac, ethertype, payload,
        );
        if decision.deliver {
            self.deliver(network_id, our_mac, source_mac, ethertype, payload);
        }
        decision.deliver
    }

    /// A raw Ethernet frame from the host's virtual port for `network_id`
    /// (`Switch::onLocalEthernet`, zt-vl2.md 2.11).
    pub fn handle_tap_frame(&mut self, now: Timestamp, network_id: NetworkId, frame: &[u8]) {
        if frame.len() < ETHERNET_HEADER_LEN {
            return;
        }
        let dest = Mac(frame[0..6].try_into().unwrap_or_default());
        let source = Mac(frame[6..12].try_into().unwrap_or_default());
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let payload = &frame[ETHERNET_HEADER_LEN..];
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let Some(config) = &network.config else {
            return;
        };
        // We are no bridge: only our own port's frames leave.
        if source != network.mac {
            return;
        }
        let (our_mac, multicast_limit, flags) = (network.mac, config.multicast_limit, config.flags);
        if dest.is_multicast() {
            if multicast_limit == 0 {
                return;
            }
            if self.emulate_ndp(network_id, dest, ethertype, payload) {
                return;
            }
            let group = multicast_group_of(dest, ethertype, payload);
            if group == MulticastGroup::BROADCAST && flags & FLAG_ENABLE_BROADCAST == 0 {
                return;
            }
            // The pre-filter, with no ZeroTier destination.
            let decision = self.filter_out(
                now,
                network_id,
                Address::NIL,
                source,
                dest,
                ethertype,
                payload,
                false,
            );
            self.metrics.record_frame_out(network_id, decision.deliver);
            if !decision.deliver {
                return;
            }
            self.multicast_send(now, network_id, group, ethertype, payload);
        } else if dest == our_mac {
            // To ourselves: the OS never sends this.
        } else if dest.is_member_mac(network_id) {
            let peer = dest.to_address(network_id);
            if peer == self.address || peer == Address::NIL {
                return;
            }
            let decision = self.filter_out(
                now, network_id, peer, source, dest, ethertype, payload, false,
            );
            self.metrics.record_frame_out(network_id, decision.deliver);
            if !decision.deliver {
                return;
            }
            self.push_credentials_if_needed(now, network_id, peer, false);
            if self.local_peers.contains(&peer) {
                let mut switched = self.take_buffer();
                switched.extend_from_slice(payload);
                self.events.push_back(Event::SwitchedFrame {
                    network_id,
                    to: peer,
                    ethertype,
                    payload: switched,
                });
                return;
            }
            let frame = FrameView {
                network_id,
                ethertype,
                payload,
            };
            self.send_frame(now, peer, &frame);
        }
        // Other unicast destinations would be bridged hosts; we bridge nothing.
    }

    /// Sends a FRAME to `peer`. When it can go now, it is written straight into a pooled
    /// buffer and armored there; otherwise it waits in the send queue like any packet.
    fn send_frame(&mut self, now: Timestamp, peer: Address, frame: &FrameView<'_>) {
        let target = match self.resolve_route(now, peer, Route::Best) {
            Ok(target) => target,
            Err(unroutable) => {
                let mut payload = Vec::with_capacity(10 + frame.payload.len());
                frame.emit(&mut payload);
                self.hold_unroutable(now, peer, Verb::Frame, payload, false, unroutable);
                return;
            }
        };
        let mut buf = self.take_buffer();
        let id = self.random_packet_id();
        crate::wire::packet::emit_header(&mut buf, id, peer, self.address, Verb::Frame);
        frame.emit(&mut buf);
        self.send_built(now, peer, Verb::Frame, buf, Route::Best, target, false);
    }

    // ---------------------------------------------------------------------------------------
    // Timers

    /// Config refresh, LIKE announcements and expiry; runs with the ping check (5 s).
    pub(super) fn vl2_periodic(&mut self, now: Timestamp) {
        let ids: Vec<NetworkId> = self.networks.keys().copied().collect();
        for network_id in ids {
            let Some(network) = self.networks.get_mut(&network_id) else {
                continue;
            };
            network
                .pending
                .retain(|p| now.since(p.created) < MULTICAST_TRANSMIT_TIMEOUT);
            let request_due = match (network.config.is_some(), network.last_config_received) {
                (true, Some(t)) => now.since(t) >= CONFIG_REFRESH_PERIOD,
                _ => network
                    .last_config_request
                    .is_none_or(|t| now.since(t) >= CONFIG_RETRY_PERIOD),
            } && network
                .last_config_request
                .is_none_or(|t| now.since(t) >= CONFIG_RETRY_PERIOD);
            let announce_due = network
                .last_upstream_announce
                .is_none_or(|t| now.since(t) >= MULTICAST_ANNOUNCE_PERIOD);
            if request_due {
                self.request_config(now, network_id);
            }
            if announce_due {
                self.announce_everywhere(now, network_id);
            }
        }
        self.multicast_directory.retain(|_, members| {
            members.retain(|_, t| now.since(*t) < MULTICAST_LIKE_EXPIRE);
            !members.is_empty()
        });
        self.controller_authorized
            .retain(|_, t| now.since(*t) < CONTROLLER_AUTHORIZATION_WINDOW);
        self.config_request_gate
            .retain(|_, t| now.since(*t) < CONFIG_REQUEST_MIN_PERIOD);
        self.credentials_gate
            .retain(|_, t| now.since(*t) < CREDENTIALS_RATE_LIMIT);
        self.gate_parked
            .retain(|p| now.since(p.parked) < GATE_RETRY_TIMEOUT);
    }

    // ---------------------------------------------------------------------------------------
    // Config

    fn request_config(&mut self, now: Timestamp, network_id: NetworkId) {
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        network.last_config_request = Some(now);
        let (have_revision, have_timestamp) = network
            .config
            .as_ref()
            .map_or((0, 0), |c| (c.revision, c.timestamp as u64));
        let mut metadata = RequestMetadata::zerotier_1_14(&format!(
            "{}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ));
        metadata.major_version = u64::from(SOFTWARE_VERSION.major);
        metadata.minor_version = u64::from(SOFTWARE_VERSION.minor);
        metadata.revision = u64::from(SOFTWARE_VERSION.revision);
        let metadata = metadata
            .to_dictionary()
            .map(|d| d.into_bytes())
            .unwrap_or_default();
        let controller = network_id.controller();
        if controller == self.address {
            self.events.push_back(Event::NetworkConfigRequest {
                network_id,
                requester: self.identity.public_only(),
                metadata,
                packet_id: 0,
                from: None,
            });
            return;
        }
        let request = NetworkConfigRequestRepr {
            network_id,
            metadata,
            have_revision,
            have_timestamp,
        };
        let mut payload = Vec::with_capacity(request.buffer_len());
        request.emit(&mut payload);
        self.send(
            now,
            controller,
            Verb::NetworkConfigRequest,
            payload,
            Route::Best,
        );
    }

    /// A controller became known (its identity arrived): networks of it still without a
    /// config ask now instead of at the next 5 s tick (a request queued before may have
    /// timed out while the root was still rate-limiting our first HELLO).
    pub(super) fn controller_learned(&mut self, now: Timestamp, address: Address) {
        let waiting: Vec<NetworkId> = self
            .networks
            .values()
            .filter(|n| n.config.is_none() && n.id.controller() == address)
            .map(|n| n.id)
            .collect();
        for network_id in waiting {
            self.request_config(now, network_id);
        }
    }

    /// A NETWORK_CONFIG_REQUEST from a member.
    pub(super) fn handle_config_request(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        hops: u8,
        packet_id: u64,
        payload: &[u8],
    ) {
        let Ok(request) = NetworkConfigRequestRepr::parse(payload) else {
            return;
        };
        let network_id = request.network_id;
        if network_id.controller() != self.address {
            // Not a controller of that network: 1.14 without a controller says so; with one,
            // it ignores requests for other controllers' networks. We run a controller only
            // for our own address, so say so for every other.
            let mut body = Vec::with_capacity(18);
            ErrorRepr {
                in_re_verb: Verb::NetworkConfigRequest,
                in_re_packet_id: packet_id,
                code: ErrorCode::UnsupportedOperation,
                payload: network_id.to_bytes().to_vec(),
            }
            .emit(&mut body);
            self.send(now, source, Verb::Error, body, Route::Direct(from));
            return;
        }
        if self
            .config_request_gate
            .get(&(network_id, source))
            .is_some_and(|t| now.since(*t) < CONFIG_REQUEST_MIN_PERIOD)
        {
            return;
        }
        self.config_request_gate.insert((network_id, source), now);
        let Some(peer) = self.peers.get(&source) else {
            return;
        };
        self.events.push_back(Event::NetworkConfigRequest {
            network_id,
            requester: peer.identity.clone(),
            metadata: request.metadata,
            packet_id,
            from: (hops == 0).then_some(from),
        });
    }

    /// A config chunk, from OK(NETWORK_CONFIG_REQUEST) or NETWORK_CONFIG. Returns the
    /// update ID when it completed a config (`handleConfigChunk`).
    pub(super) fn handle_config_chunk(
        &mut self,
        now: Timestamp,
        source: Address,
        packet_id: u64,
        body: &[u8],
    ) -> Option<(NetworkId, u64)> {
        let chunk = ConfigChunkRepr::parse(body).ok()?;
        let network_id = chunk.network_id;
        let controller = network_id.controller();
        if !self.networks.contains_key(&network_id) {
            return None;
        }
        let (update_id, total, index) = match &chunk.trailer {
            None => {
                // Legacy: one unsigned chunk, only straight from the controller.
                if source != controller {
                    return None;
                }
                (packet_id, chunk.data.len(), 0usize)
            }
            Some(trailer) => {
                // The controller's identity must be known already (1.14 does not WHOIS here).
                let controller_identity = if controller == self.address {
                    &self.identity
                } else {
                    &self.peers.get(&controller)?.identity
                };
                chunk.verify(controller_identity).ok()?;
                (
                    trailer.update_id,
                    trailer.total_length as usize,
                    trailer.chunk_index as usize,
                )
            }
        };
        let chunk_id = chunk.chunk_id().unwrap_or(packet_id.to_be_bytes());
        let network = self.networks.get_mut(&network_id)?;
        let slot = match network
            .assemblies
            .iter()
            .position(|a| a.update_id == update_id)
        {
            Some(i) => {
                if network.assemblies[i].chunk_ids.contains(&chunk_id) {
                    return None;
                }
                i
            }
            None => {
                let fresh = ConfigAssembly {
                    update_id,
                    total,
                    data: vec![0; total],
                    have: 0,
                    chunk_ids: Vec::new(),
                    uses: 0,
                };
                if network.assemblies.len() < MAX_INCOMING_UPDATES {
                    network.assemblies.push(fresh);
                    network.assemblies.len() - 1
                } else {
                    let i = network
                        .assemblies
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, a)| a.uses)
                        .map_or(0, |(i, _)| i);
                    network.assemblies[i] = fresh;
                    i
                }
            }
        };
        let assembly = &mut network.assemblies[slot];
        if assembly.total != total || index + chunk.data.len() > total {
            return None;
        }
        assembly.data[index..index + chunk.data.len()].copy_from_slice(&chunk.data);
        assembly.have += chunk.data.len();
        assembly.chunk_ids.push(chunk_id);
        assembly.uses += 1;
        if assembly.have < assembly.total {
            return None;
        }
        let assembly = network.assemblies.remove(slot);
        let config = NetworkConfig::from_bytes(&assembly.data).ok()?;
        self.set_config(now, network_id, config, assembly.data);
        Some((network_id, update_id))
    }

    /// Applies a config for one of our networks (`Network::setConfiguration`).
    fn set_config(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        config: NetworkConfig,
        dictionary: Vec<u8>,
    ) {
        if config.issued_to != self.address || config.network_id != network_id {
            return;
        }
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        // An older config than ours is a replay (its signed chunks can be sent again by
        // anyone who saw them) or a stale answer overtaken by a newer one: keep ours, and do
        // not count it as news from the controller.
        if network
            .config
            .as_ref()
            .is_some_and(|current| current.timestamp > config.timestamp)
        {
            return;
        }
        network.last_config_received = Some(now);
        let status_changed = network.status != NetworkStatus::Ok;
        network.status = NetworkStatus::Ok;
        if status_changed {
            self.events.push_back(Event::NetworkStatusChanged {
                network_id,
                status: NetworkStatus::Ok,
            });
        }
        if network.config.as_ref() == Some(&config) {
            return;
        }
        network.config = Some(config.clone());
        network.last_config_update = Some(now);
        self.events.push_back(Event::NetworkConfigUpdated {
            network_id,
            config: Box::new(config),
            dictionary,
        });
        self.announce_everywhere(now, network_id);
    }

    fn config_refused(&mut self, network_id: NetworkId, code: ErrorCode) {
        let status = match code {
            ErrorCode::ObjectNotFound | ErrorCode::UnsupportedOperation => NetworkStatus::NotFound,
            ErrorCode::NetworkAccessDenied => NetworkStatus::AccessDenied,
            ErrorCode::NetworkAuthenticationRequired => NetworkStatus::AuthenticationRequired,
            _ => return,
        };
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        if network.status != status {
            network.status = status;
            self.events
                .push_back(Event::NetworkStatusChanged { network_id, status });
        }
    }

    /// NETWORK_CONFIG (0x0c): a pushed config chunk; acknowledged as 1.14 does (in re ECHO).
    pub(super) fn handle_network_config(
        &mut self,
        now: Timestamp,
        source: Address,
        packet_id: u64,
        payload: &[u8],
    ) {
        if let Some((network_id, update_id)) =
            self.handle_config_chunk(now, source, packet_id, payload)
        {
            let mut body = Vec::with_capacity(9 + 16);
            OkHeader {
                in_re_verb: Verb::Echo,
                in_re_packet_id: packet_id,
            }
            .emit(&mut body);
            NetworkConfigAckRepr {
                network_id,
                update_id,
            }
            .emit(&mut body);
            self.send(now, source, Verb::Ok, body, Route::Best);
        }
    }

    /// VL2 ERRORs (zt-vl2.md 2.9).
    pub(super) fn handle_vl2_error(&mut self, now: Timestamp, source: Address, error: &ErrorRepr) {
        let Ok(payload) = Vl2ErrorPayload::parse(error.code, &error.payload) else {
            return;
        };
        let network_id = payload.network_id();
        match error.code {
            ErrorCode::ObjectNotFound
            | ErrorCode::UnsupportedOperation
            | ErrorCode::NetworkAccessDenied
            | ErrorCode::NetworkAuthenticationRequired
                if error.in_re_verb == Verb::NetworkConfigRequest
                    && source == network_id.controller() =>
            {
                self.config_refused(network_id, error.code);
            }
            ErrorCode::NeedMembershipCertificate => {
                self.push_credentials_if_needed(now, network_id, source, true);
            }
            ErrorCode::UnwantedMulticast => {
                if let Vl2ErrorPayload::UnwantedMulticast { group, .. } = payload {
                    let gate = self.peer_passes_gate(network_id, source);
                    if gate {
                        if let Some(members) =
                            self.multicast_directory.get_mut(&(network_id, group))
                        {
                            members.remove(&source);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------------
    // Credentials

    fn peer_passes_gate(&self, network_id: NetworkId, peer: Address) -> bool {
        let (Some(network), Some(p)) = (self.networks.get(&network_id), self.peers.get(&peer))
        else {
            return false;
        };
        network.gate(&p.identity)
    }

    /// Sends our credentials for `network_id` to `peer` when it has not had them since our
    /// config changed, or for a long time; `requested` = the peer asked (ERROR 0x06).
    fn push_credentials_if_needed(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        peer: Address,
        requested: bool,
    ) {
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        let Some(config) = &network.config else {
            return;
        };
        // Without a COM there is nothing to present (public networks need none).
        let Some(com) = &config.com else {
            return;
        };
        let last_update = network.last_config_update;
        let membership = network.memberships.entry(peer).or_default();
        let due = match membership.last_pushed {
            None => true,
            Some(t) => {
                last_update.is_some_and(|u| t < u)
                    || now.since(t) >= CREDENTIAL_REPUSH_PERIOD
                    || (requested && now.since(t) >= CREDENTIAL_REQUEST_INTERVAL)
            }
        };
        if !due {
            return;
        }
        membership.last_pushed = Some(now);
        let credentials = NetworkCredentialsRepr {
            coms: vec![com.clone()],
            capabilities: config.capabilities.clone(),
            tags: config.tags.clone(),
            revocations: Vec::new(),
            certificates_of_ownership: config.certificates_of_ownership.clone(),
        };
        let mut payload = Vec::with_capacity(credentials.buffer_len());
        credentials.emit(&mut payload);
        self.send(now, peer, Verb::NetworkCredentials, payload, Route::Best);
    }

    /// NETWORK_CREDENTIALS (0x0a).
    pub(super) fn handle_network_credentials(
        &mut self,
        now: Timestamp,
        source: Address,
        payload: &[u8],
    ) {
        if self
            .credentials_gate
            .get(&source)
            .is_some_and(|t| now.since(*t) < CREDENTIALS_RATE_LIMIT)
        {
            return;
        }
        self.credentials_gate.insert(source, now);
        let Ok(credentials) = NetworkCredentialsRepr::parse(payload) else {
            return;
        };
        let mut touched = false;
        for com in credentials.coms {
            touched |= self.add_com(now, com);
        }
        for tag in credentials.tags {
            let network_id = tag.network_id;
            let Some(controller) = self.controller_identity(now, network_id) else {
                continue;
            };
            if tag.verify(&controller).is_err() {
                continue;
            }
            if let Some(network) = self.networks.get_mut(&network_id) {
                let m = network.memberships.entry(tag.issued_to).or_default();
                if m.tags
                    .get(&tag.id)
                    .is_none_or(|t| t.timestamp <= tag.timestamp)
                {
                    m.tags.insert(tag.id, tag);
                }
            }
        }
        for capability in credentials.capabilities {
            let network_id = capability.network_id;
            let Some(holder) = capability
                .custody
                .iter()
                .rev()
                .find(|c| c.to != Address::NIL)
                .map(|c| c.to)
            else {
                continue;
            };
            let verified = capability
                .verify(|address| {
                    if address == self.address {
                        Some(&self.identity)
                    } else {
                        self.peers.get(&address).map(|p| &p.identity)
                    }
                })
                .is_ok();
            if !verified {
                // Perhaps the controller is not known yet: look it up for the next push.
                self.controller_identity(now, network_id);
                continue;
            }
            if let Some(network) = self.networks.get_mut(&network_id) {
                let m = network.memberships.entry(holder).or_default();
                if m.capabilities
                    .get(&capability.id)
                    .is_none_or(|c| c.timestamp <= capability.timestamp)
                {
                    m.capabilities.insert(capability.id, capability);
                }
            }
        }
        for revocation in credentials.revocations {
            let Some(controller) = self.controller_identity(now, revocation.network_id) else {
                continue;
            };
            if revocation.verify(&controller).is_ok() {
                self.apply_revocation(&revocation);
                touched = true;
            }
        }
        for coo in credentials.certificates_of_ownership {
            let network_id = coo.network_id;
            let Some(controller) = self.controller_identity(now, network_id) else {
                continue;
            };
            if coo.verify(&controller).is_err() {
                continue;
            }
            if let Some(network) = self.networks.get_mut(&network_id) {
                let m = network.memberships.entry(coo.issued_to).or_default();
                if m.coos
                    .get(&coo.id)
                    .is_none_or(|c| c.timestamp <= coo.timestamp)
                {
                    m.coos.insert(coo.id, coo);
                }
            }
        }
        if touched {
            self.retry_gated(now, source);
        }
    }

    /// The identity of a network's controller, WHOISing it when unknown.
    fn controller_identity(&mut self, now: Timestamp, network_id: NetworkId) -> Option<Identity> {
        let controller = network_id.controller();
        if controller == self.address {
            return Some(self.identity.public_only());
        }
        match self.peers.get(&controller) {
            Some(peer) => Some(peer.identity.clone()),
            None => {
                if self
                    .whois_sent
                    .get(&controller)
                    .is_none_or(|t| now.since(*t) >= Millis(500))
                {
                    self.send_whois(now, controller);
                }
                None
            }
        }
    }

    /// Verifies and stores a COM under the member it was issued to. True if it was stored.
    fn add_com(&mut self, now: Timestamp, com: CertificateOfMembership) -> bool {
        let network_id = com.network_id();
        if !self.networks.contains_key(&network_id) {
            return false;
        }
        let Some(controller) = self.controller_identity(now, network_id) else {
            return false;
        };
        if com.verify(&controller).is_err() {
            return false;
        }
        let Some(network) = self.networks.get_mut(&network_id) else {
            return false;
        };
        let m = network.memberships.entry(com.issued_to()).or_default();
        if com.timestamp() as i64 <= m.com_revoked_through {
            return false;
        }
        if m.com
            .as_ref()
            .is_some_and(|c| c.timestamp() > com.timestamp())
        {
            return false;
        }
        m.com = Some(com);
        true
    }

    fn apply_revocation(&mut self, revocation: &Revocation) {
        let Some(network) = self.networks.get_mut(&revocation.network_id) else {
            return;
        };
        let m = network.memberships.entry(revocation.target).or_default();
        match revocation.credential_type {
            CredentialType::CertificateOfMembership => {
                m.com_revoked_through = m.com_revoked_through.max(revocation.threshold);
            }
            other => {
                // 1.14: revoking a tag, capability or COO also raises the COM threshold.
                let key = (u8::from(other), revocation.credential_id);
                let threshold = m.revoked.entry(key).or_insert(i64::MIN);
                *threshold = (*threshold).max(revocation.threshold);
                m.com_revoked_through = m.com_revoked_through.max(revocation.threshold);
            }
        }
    }

    /// Frames that failed the gate for lack of `source`'s credentials, tried again.
    fn retry_gated(&mut self, now: Timestamp, source: Address) {
        let (ready, rest): (Vec<ParkedRx>, Vec<ParkedRx>) = std::mem::take(&mut self.gate_parked)
            .into_iter()
            .partition(|p| p.source == source);
        self.gate_parked = rest;
        for p in ready {
            if now.since(p.parked) < GATE_RETRY_TIMEOUT {
                self.retrying_gated = true;
                self.dispatch(now, p.from, &p.packet);
                self.retrying_gated = false;
            }
        }
    }

    /// A frame failed the gate: ask for credentials and keep the packet for a retry.
    #[allow(clippy::too_many_arguments)]
    fn gate_failed(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        verb: Verb,
        packet_id: u64,
        network_id: NetworkId,
        packet: &[u8],
    ) {
        self.ask_for_credentials(now, source, verb, packet_id, network_id);
        if !self.retrying_gated && self.gate_parked.len() < super::MAX_PARKED_RX {
            self.gate_parked.push(ParkedRx {
                from,
                source,
                packet: packet.to_vec(),
                parked: now,
            });
        }
    }

    /// ERROR(NEED_MEMBERSHIP_CERTIFICATE) to a sender that failed the gate.
    fn ask_for_credentials(
        &mut self,
        now: Timestamp,
        source: Address,
        verb: Verb,
        packet_id: u64,
        network_id: NetworkId,
    ) {
        let mut body = Vec::with_capacity(18);
        ErrorRepr {
            in_re_verb: verb,
            in_re_packet_id: packet_id,
            code: ErrorCode::NeedMembershipCertificate,
            payload: network_id.to_bytes().to_vec(),
        }
        .emit(&mut body);
        self.send(now, source, Verb::Error, body, Route::Best);
    }

    // ---------------------------------------------------------------------------------------
    // Filtering

    /// The outbound filter; sends the copies and the redirect it asks for.
    #[allow(clippy::too_many_arguments)]
    fn filter_out(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        zt_dest: Address,
        source: Mac,
        dest: Mac,
        ethertype: u16,
        payload: &[u8],
        no_tee: bool,
    ) -> FilterDecision {
        // The tag lists are built in vectors the node keeps, not new ones per frame.
        let (mut local_tags, mut remote_tags) = std::mem::take(&mut self.filter_tags);
        local_tags.clear();
        remote_tags.clear();
        let Some(network) = self.networks.get(&network_id) else {
            return FilterDecision::default();
        };
        let Some(config) = &network.config else {
            return FilterDecision::default();
        };
        network.local_tags_into(&mut local_tags);
        if zt_dest != Address::NIL {
            network.remote_tags_into(zt_dest, &mut remote_tags);
        }
        let ownership = CooOwnership(&config.certificates_of_ownership);
        let cx = FilterContext {
            this_node: self.address,
            direction: Direction::Outbound,
            zt_source: self.address,
            zt_dest,
            local_tags: &local_tags,
            remote_tags: &remote_tags,
            config_flags: config.flags,
            ownership: &ownership,
        };
        let frame = Frame {
            mac_source: source,
            mac_dest: dest,
            ethertype,
            vlan_id: 0,
            data: payload,
        };
        let rng = &mut self.rng;
        let decision = filter::filter_outgoing(
            &config.rules,
            config.capabilities.iter(),
            &cx,
            &frame,
            no_tee,
            &mut || rng.next_u32(),
        );
        self.filter_tags = (local_tags, remote_tags);
        self.send_copies(now, network_id, &decision, source, dest, ethertype, payload);
        decision
    }

    /// The inbound filter for a frame from `sender`; sends the copies it asks for.
    #[allow(clippy::too_many_arguments)]
    fn filter_in(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        sender: Address,
        source: Mac,
        dest: Mac,
        ethertype: u16,
        payload: &[u8],
    ) -> FilterDecision {
        let (mut local_tags, mut remote_tags) = std::mem::take(&mut self.filter_tags);
        local_tags.clear();
        remote_tags.clear();
        let Some(network) = self.networks.get(&network_id) else {
            return FilterDecision::default();
        };
        let Some(config) = &network.config else {
            return FilterDecision::default();
        };
        network.local_tags_into(&mut local_tags);
        network.remote_tags_into(sender, &mut remote_tags);
        let capabilities = network.remote_capabilities(sender);
        let ownership = InboundOwnership {
            network,
            sender,
            config,
        };
        let cx = FilterContext {
            this_node: self.address,
            direction: Direction::Inbound,
            zt_source: sender,
            zt_dest: self.address,
            local_tags: &local_tags,
            remote_tags: &remote_tags,
            config_flags: config.flags,
            ownership: &ownership,
        };
        let frame = Frame {
            mac_source: source,
            mac_dest: dest,
            ethertype,
            vlan_id: 0,
            data: payload,
        };
        let rng = &mut self.rng;
        let decision =
            filter::filter_incoming(&config.rules, capabilities, &cx, &frame, &mut || {
                rng.next_u32()
            });
        self.filter_tags = (local_tags, remote_tags);
        self.metrics.record_frame_in(network_id, decision.deliver);
        self.send_copies(now, network_id, &decision, source, dest, ethertype, payload);
        decision
    }

    #[allow(clippy::too_many_arguments)]
    fn send_copies(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        decision: &FilterDecision,
        source: Mac,
        dest: Mac,
        ethertype: u16,
        payload: &[u8],
    ) {
        let copies: Vec<ExtFrameCopy> = decision.sends().collect();
        for copy in copies {
            if copy.target == self.address || copy.target == Address::NIL {
                continue;
            }
            let length = if copy.length == 0 {
                payload.len()
            } else {
                copy.length.min(payload.len())
            };
            self.push_credentials_if_needed(now, network_id, copy.target, false);
            let ext = ExtFrameRepr {
                network_id,
                flags: copy.flags,
                com: None,
                to: dest,
                from: source,
                ethertype,
                payload: payload[..length].to_vec(),
            };
            let mut out = Vec::with_capacity(ext.buffer_len());
            ext.emit(&mut out);
            self.send(now, copy.target, Verb::ExtFrame, out, Route::Best);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Frames in

    /// FRAME (0x06).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_frame(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        packet_id: u64,
        payload: &[u8],
        packet: &[u8],
    ) {
        let Ok(frame) = FrameView::parse(payload) else {
            return;
        };
        let network_id = frame.network_id;
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let our_mac = network.mac;
        if !self.peer_passes_gate(network_id, source) {
            self.gate_failed(
                now,
                from,
                source,
                Verb::Frame,
                packet_id,
                network_id,
                packet,
            );
            return;
        }
        self.announce_to_member_if_due(now, network_id, source);
        if frame.payload.is_empty() {
            return;
        }
        let source_mac = Mac::from_address(source, network_id);
        let decision = self.filter_in(
            now,
            network_id,
            source,
            source_mac,
            our_mac,
            frame.ethertype,
            frame.payload,
        );
        if decision.deliver {
            self.deliver(
                network_id,
                our_mac,
                source_mac,
                frame.ethertype,
                frame.payload,
            );
        }
    }

    /// EXT_FRAME (0x07).
    pub(super) fn handle_ext_frame(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        packet_id: u64,
        payload: &[u8],
        packet: &[u8],
    ) {
        let Ok(frame) = ExtFrameRepr::parse(payload) else {
            return;
        };
        let network_id = frame.network_id;
        if !self.networks.contains_key(&network_id) {
            return;
        }
        if let Some(com) = frame.com.clone() {
            self.add_com(now, com);
        }
        if !self.peer_passes_gate(network_id, source) {
            self.gate_failed(
                now,
                from,
                source,
                Verb::ExtFrame,
                packet_id,
                network_id,
                packet,
            );
            return;
        }
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let our_mac = network.mac;
        let multicast_limit = network.config.as_ref().map_or(0, |c| c.multicast_limit);
        let sender_is_bridge = network
            .config
            .as_ref()
            .is_some_and(|c| c.permits_bridging(source));
        if frame.from.is_zero() || frame.from == our_mac {
            return;
        }
        let decision = self.filter_in(
            now,
            network_id,
            source,
            frame.from,
            frame.to,
            frame.ethertype,
            &frame.payload,
        );
        if !decision.deliver {
            return;
        }
        if !decision.super_accept {
            if frame.from != Mac::from_address(source, network_id) && !sender_is_bridge {
                return;
            }
            if frame.to != our_mac {
                // Multicast needs multicast on; a unicast to another MAC needs us to be a
                // bridge, which we never are.
                if !frame.to.is_multicast() || multicast_limit == 0 {
                    return;
                }
            }
        }
        self.deliver(
            network_id,
            frame.to,
            frame.from,
            frame.ethertype,
            &frame.payload,
        );
        if frame.ack_requested() {
            let mut body = Vec::with_capacity(17);
            OkHeader {
                in_re_verb: Verb::ExtFrame,
                in_re_packet_id: packet_id,
            }
            .emit(&mut body);
            body.extend_from_slice(&network_id.to_bytes());
            self.send(now, source, Verb::Ok, body, Route::Best);
        }
    }

    /// MULTICAST_FRAME (0x0e).
    pub(super) fn handle_multicast_frame(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        source: Address,
        packet_id: u64,
        payload: &[u8],
        packet: &[u8],
    ) {
        let Ok(frame) = MulticastFrameRepr::parse(payload) else {
            return;
        };
        let network_id = frame.network_id;
        if !self.networks.contains_key(&network_id) {
            return;
        }
        if let Some(com) = frame.com.clone() {
            self.add_com(now, com);
        }
        if !self.peer_passes_gate(network_id, source) {
            self.gate_failed(
                now,
                from,
                source,
                Verb::MulticastFrame,
                packet_id,
                network_id,
                packet,
            );
            return;
        }
        self.announce_to_member_if_due(now, network_id, source);
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let Some(config) = &network.config else {
            return;
        };
        if config.multicast_limit == 0 {
            return;
        }
        let our_mac = network.mac;
        let sender_mac = Mac::from_address(source, network_id);
        let source_mac = frame.source.unwrap_or(sender_mac);
        if !frame.group.mac.is_multicast()
            || source_mac.is_zero()
            || source_mac.is_multicast()
            || source_mac == our_mac
        {
            return;
        }
        if source_mac != sender_mac && !config.permits_bridging(source) {
            return;
        }
        if frame.payload.len() > crate::vl2::config::MAX_MTU as usize {
            return;
        }
        let decision = self.filter_in(
            now,
            network_id,
            source,
            source_mac,
            frame.group.mac,
            frame.ethertype,
            &frame.payload,
        );
        if decision.deliver {
            self.deliver(
                network_id,
                frame.group.mac,
                source_mac,
                frame.ethertype,
                &frame.payload,
            );
        }
        if let Some(limit) = frame.gather_limit.filter(|&l| l > 0) {
            let members = self.gather(network_id, frame.group, source, limit);
            if !members.is_empty() {
                let ok = OkMulticastFrameRepr {
                    network_id,
                    group: frame.group,
                    flags: 0,
                    com: None,
                    gathered: Some(crate::vl2::verbs::GatheredMembers {
                        total_known: members.len() as u32,
                        members,
                    }),
                };
                let mut body = Vec::with_capacity(9 + ok.buffer_len());
                OkHeader {
                    in_re_verb: Verb::MulticastFrame,
                    in_re_packet_id: packet_id,
                }
                .emit(&mut body);
                ok.emit(&mut body);
                self.send(now, source, Verb::Ok, body, Route::Best);
            }
        }
    }

    fn deliver(
        &mut self,
        network_id: NetworkId,
        dest: Mac,
        source: Mac,
        ethertype: u16,
        payload: &[u8],
    ) {
        let mut frame = self.take_buffer();
        emit_ethernet_frame(&mut frame, dest, source, ethertype, payload);
        self.events.push_back(Event::Frame { network_id, frame });
    }

    /// IPv6 NDP emulation (config flag 0x04): a Neighbor Solicitation for an RFC4193 or
    /// 6PLANE address of this network is answered locally with the MAC the address embeds.
    fn emulate_ndp(&mut self, network_id: NetworkId, dest: Mac, ethertype: u16, p: &[u8]) -> bool {
        if ethertype != ETHERTYPE_IPV6
            || p.len() < 64
            || p[6] != ICMPV6
            || p[40] != ICMPV6_NEIGHBOR_SOLICITATION
            || !dest.is_multicast()
        {
            return false;
        }
        let Some(network) = self.networks.get(&network_id) else {
            return false;
        };
        let Some(config) = &network.config else {
            return false;
        };
        let target: [u8; 16] = p[48..64].try_into().unwrap_or_default();
        let mut found = None;
        for (prefix, bytes) in ndp_emulated_prefixes(config) {
            let o = prefix.octets();
            if target[..bytes] == o[..bytes] {
                let embedded = &target[bytes..bytes + 5];
                let address = Address::from_bytes(embedded);
                found = Some((address, o));
                break;
            }
        }
        let Some((address, own_ip)) = found else {
            return false;
        };
        if address == self.address || address == Address::NIL {
            return false;
        }
        let peer_mac = Mac::from_address(address, network_id);
        // Neighbor Advertisement: solicited + override, target link-layer address option.
        let mut icmp = Vec::with_capacity(32);
        icmp.extend_from_slice(&[ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0x60, 0, 0, 0]);
        icmp.extend_from_slice(&target);
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&peer_mac.0);
        let checksum = icmpv6_checksum(&target, &own_ip, &icmp);
        icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
        let mut ip = Vec::with_capacity(72);
        ip.extend_from_slice(&[0x60, 0, 0, 0]);
        ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[ICMPV6, 0xff]);
        ip.extend_from_slice(&target);
        ip.extend_from_slice(&own_ip);
        ip.extend_from_slice(&icmp);
        let our_mac = network.mac;
        self.deliver(network_id, our_mac, peer_mac, ETHERTYPE_IPV6, &ip);
        true
    }

    // ---------------------------------------------------------------------------------------
    // Multicast

    /// Members of a group we know, without `exclude` and ourselves, LIKEd recently.
    fn known_members(
        &self,
        network_id: NetworkId,
        group: MulticastGroup,
        exclude: Address,
    ) -> Vec<Address> {
        self.multicast_directory
            .get(&(network_id, group))
            .map(|m| {
                m.keys()
                    .copied()
                    .filter(|a| *a != exclude && *a != self.address)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Up to `limit` members of a group for a gather answer: ourselves first if subscribed,
    /// then others in random order, never the requester.
    fn gather(
        &mut self,
        network_id: NetworkId,
        group: MulticastGroup,
        requester: Address,
        limit: u32,
    ) -> Vec<Address> {
        let limit = limit.min(0xffff) as usize;
        let mut out = Vec::new();
        if self
            .networks
            .get(&network_id)
            .is_some_and(|n| n.subscriptions().contains(&group))
        {
            out.push(self.address);
        }
        let mut others = self.known_members(network_id, group, requester);
        self.shuffle(&mut others);
        out.extend(others);
        out.truncate(limit);
        out
    }

    fn shuffle(&mut self, items: &mut [Address]) {
        for i in (1..items.len()).rev() {
            let j = (self.rng.next_u32() as usize) % (i + 1);
            items.swap(i, j);
        }
    }

    /// Sends a multicast (zt-vl2.md 2.12): to known members up to the limit, gathering more
    /// from the roots and the controller when too few are known.
    fn multicast_send(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        group: MulticastGroup,
        ethertype: u16,
        payload: &[u8],
    ) {
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let Some(config) = &network.config else {
            return;
        };
        let limit = config.multicast_limit as usize;
        let com = config.com.clone();
        let mut known = self.known_members(network_id, group, Address::NIL);
        self.shuffle(&mut known);
        if known.len() >= limit {
            known.truncate(limit);
            for member in known {
                self.multicast_to(now, network_id, member, group, ethertype, payload, 1);
            }
            return;
        }
        let gather_limit = (limit - known.len() + 1) as u32;
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        let gather_due = known.is_empty()
            || network
                .last_gather
                .get(&group)
                .is_none_or(|t| now.since(*t) >= EXPLICIT_GATHER_DELAY);
        if gather_due {
            network.last_gather.insert(group, now);
        }
        if network.pending.iter().filter(|p| p.group == group).count() < MULTICAST_QUEUE_PER_GROUP {
            network.pending.push(PendingMulticast {
                group,
                created: now,
                limit,
                sent_to: known.clone(),
                ethertype,
                payload: payload.to_vec(),
            });
        }
        if gather_due {
            let gather = MulticastGatherRepr {
                network_id,
                flags: 0,
                group,
                gather_limit,
                com,
            };
            let mut body = Vec::with_capacity(gather.buffer_len());
            gather.emit(&mut body);
            let mut targets = Vec::new();
            if let Some(upstream) = self.best_upstream(now) {
                targets.push(upstream);
            }
            let controller = network_id.controller();
            if controller != self.address && !targets.contains(&controller) {
                targets.push(controller);
            }
            for target in targets {
                self.send(
                    now,
                    target,
                    Verb::MulticastGather,
                    body.clone(),
                    Route::Best,
                );
            }
        }
        for member in known {
            self.multicast_to(
                now,
                network_id,
                member,
                group,
                ethertype,
                payload,
                gather_limit,
            );
        }
    }

    /// One copy of a multicast to one member, re-filtered for that member.
    #[allow(clippy::too_many_arguments)]
    fn multicast_to(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        member: Address,
        group: MulticastGroup,
        ethertype: u16,
        payload: &[u8],
        gather_limit: u32,
    ) {
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let our_mac = network.mac;
        let decision = self.filter_out(
            now, network_id, member, our_mac, group.mac, ethertype, payload, true,
        );
        if !decision.deliver {
            return;
        }
        self.push_credentials_if_needed(now, network_id, member, false);
        let frame = MulticastFrameRepr {
            network_id,
            flags: 0,
            com: None,
            gather_limit: Some(gather_limit),
            source: None,
            group,
            ethertype,
            payload: payload.to_vec(),
        };
        let mut body = Vec::with_capacity(frame.buffer_len());
        frame.emit(&mut body);
        self.send(now, member, Verb::MulticastFrame, body, Route::Best);
    }

    /// New members of a group became known: send them what waits for that group.
    fn add_members(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        group: MulticastGroup,
        members: &[Address],
    ) {
        let directory = self
            .multicast_directory
            .entry((network_id, group))
            .or_default();
        for &member in members {
            if member != self.address && member != Address::NIL {
                directory.insert(member, now);
            }
        }
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        let mut sends = Vec::new();
        for pending in network.pending.iter_mut().filter(|p| p.group == group) {
            for &member in members {
                if member == self.address
                    || member == Address::NIL
                    || pending.sent_to.contains(&member)
                    || pending.sent_to.len() >= pending.limit
                {
                    continue;
                }
                pending.sent_to.push(member);
                sends.push((member, pending.ethertype, pending.payload.clone()));
            }
        }
        for (member, ethertype, payload) in sends {
            self.multicast_to(now, network_id, member, group, ethertype, &payload, 1);
        }
    }

    /// MULTICAST_LIKE (0x09).
    pub(super) fn handle_multicast_like(
        &mut self,
        now: Timestamp,
        source: Address,
        payload: &[u8],
    ) {
        let Ok(likes) = MulticastLikeRepr::parse(payload) else {
            return;
        };
        let mut authorized: BTreeMap<NetworkId, bool> = BTreeMap::new();
        for (network_id, group) in likes.likes {
            let ok = match authorized.get(&network_id) {
                Some(ok) => *ok,
                None => {
                    let ok = self.may_use_directory(now, network_id, source);
                    authorized.insert(network_id, ok);
                    ok
                }
            };
            if ok {
                self.add_members(now, network_id, group, &[source]);
            }
        }
    }

    /// Whether `peer` may LIKE or GATHER on a network here: a valid member, or we are a root,
    /// or we are the controller and configured it recently.
    fn may_use_directory(&self, now: Timestamp, network_id: NetworkId, peer: Address) -> bool {
        self.peer_passes_gate(network_id, peer)
            || self.am_root
            || (network_id.controller() == self.address
                && self
                    .controller_authorized
                    .get(&(network_id, peer))
                    .is_some_and(|t| now.since(*t) < CONTROLLER_AUTHORIZATION_WINDOW))
    }

    /// MULTICAST_GATHER (0x0d).
    pub(super) fn handle_multicast_gather(
        &mut self,
        now: Timestamp,
        source: Address,
        packet_id: u64,
        payload: &[u8],
    ) {
        let Ok(gather) = MulticastGatherRepr::parse(payload) else {
            return;
        };
        if let Some(com) = gather.com.clone() {
            self.add_com(now, com);
        }
        if gather.gather_limit == 0 || !self.may_use_directory(now, gather.network_id, source) {
            return;
        }
        let members = self.gather(gather.network_id, gather.group, source, gather.gather_limit);
        if members.is_empty() {
            return;
        }
        let total_known = self
            .multicast_directory
            .get(&(gather.network_id, gather.group))
            .map_or(0, |m| m.len()) as u32;
        let ok = OkMulticastGatherRepr {
            network_id: gather.network_id,
            group: gather.group,
            total_known: total_known.max(members.len() as u32),
            members,
        };
        let mut body = Vec::with_capacity(9 + ok.buffer_len());
        OkHeader {
            in_re_verb: Verb::MulticastGather,
            in_re_packet_id: packet_id,
        }
        .emit(&mut body);
        ok.emit(&mut body);
        self.send(now, source, Verb::Ok, body, Route::Best);
    }

    /// OK(MULTICAST_GATHER) and OK(MULTICAST_FRAME): members to add.
    pub(super) fn handle_gathered(&mut self, now: Timestamp, in_re: Verb, body: &[u8]) {
        let (network_id, group, members) = match in_re {
            Verb::MulticastGather => match OkMulticastGatherRepr::parse(body) {
                Ok(ok) => (ok.network_id, ok.group, ok.members),
                Err(_) => return,
            },
            Verb::MulticastFrame => match OkMulticastFrameRepr::parse(body) {
                Ok(ok) => {
                    if let Some(com) = ok.com.clone() {
                        self.add_com(now, com);
                    }
                    match ok.gathered {
                        Some(g) => (ok.network_id, ok.group, g.members),
                        None => return,
                    }
                }
                Err(_) => return,
            },
            _ => return,
        };
        if self.networks.contains_key(&network_id) {
            self.add_members(now, network_id, group, &members);
        }
    }

    /// Announces our groups to the roots, the controller and every valid member.
    fn announce_everywhere(&mut self, now: Timestamp, network_id: NetworkId) {
        let Some(network) = self.networks.get_mut(&network_id) else {
            return;
        };
        if network.config.is_none() {
            return;
        }
        network.last_upstream_announce = Some(now);
        let members: Vec<Address> = network.memberships.keys().copied().collect();
        let mut targets: Vec<Address> = self.upstreams.clone();
        let controller = network_id.controller();
        if controller != self.address && !targets.contains(&controller) {
            targets.push(controller);
        }
        for target in targets {
            self.send_likes(now, network_id, target);
        }
        for member in members {
            if self.peer_passes_gate(network_id, member) {
                self.push_credentials_if_needed(now, network_id, member, false);
                self.send_likes(now, network_id, member);
                if let Some(m) = self
                    .networks
                    .get_mut(&network_id)
                    .and_then(|n| n.memberships.get_mut(&member))
                {
                    m.last_announced = Some(now);
                }
            }
        }
    }

    /// On traffic from a valid member: our LIKEs, if it has not had them for a while.
    fn announce_to_member_if_due(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        member: Address,
    ) {
        let Some(m) = self
            .networks
            .get_mut(&network_id)
            .and_then(|n| n.memberships.get_mut(&member))
        else {
            return;
        };
        if m.last_announced
            .is_some_and(|t| now.since(t) < MULTICAST_ANNOUNCE_PERIOD)
        {
            return;
        }
        m.last_announced = Some(now);
        self.push_credentials_if_needed(now, network_id, member, false);
        self.send_likes(now, network_id, member);
    }

    fn send_likes(&mut self, now: Timestamp, network_id: NetworkId, to: Address) {
        let Some(network) = self.networks.get(&network_id) else {
            return;
        };
        let groups: Vec<MulticastGroup> = network.subscriptions().into_iter().collect();
        for batch in groups.chunks(LIKES_PER_PACKET) {
            let likes = MulticastLikeRepr {
                likes: batch.iter().map(|g| (network_id, *g)).collect(),
            };
            let mut body = Vec::with_capacity(likes.buffer_len());
            likes.emit(&mut body);
            self.send(now, to, Verb::MulticastLike, body, Route::Best);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_requests_go_to_the_target_address_group() {
        // ARP who-has 10.147.17.5 tell 10.147.17.20 (zt-vl2.md 2.5's example).
        let arp = hex_bytes("0001080006040001 56936fabb9ba 0a931114 000000000000 0a931105");
        let group = multicast_group_of(Mac::BROADCAST, ETHERTYPE_ARP, &arp);
        assert_eq!(
            group,
            MulticastGroup::ipv4_arp("10.147.17.5".parse().unwrap())
        );
        // An ARP reply (opcode 2) is a plain broadcast.
        let mut reply = arp.clone();
        reply[7] = 2;
        assert_eq!(
            multicast_group_of(Mac::BROADCAST, ETHERTYPE_ARP, &reply),
            MulticastGroup::BROADCAST
        );
    }

    #[test]
    fn icmpv6_checksum_of_a_known_packet() {
        // A Neighbor Advertisement whose checksum field is zero sums to the value that makes
        // the whole (pseudo-header + message) sum to 0xffff.
        let src = [0xfd; 16];
        let dst = [0xfc; 16];
        let mut icmp = vec![0x88, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&src);
        icmp.extend_from_slice(&[2, 1, 0x32, 1, 2, 3, 4, 5]);
        let c = icmpv6_checksum(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(icmpv6_checksum(&src, &dst, &icmp), 0);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
