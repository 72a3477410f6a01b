//! Counters a node keeps about its own traffic, for the host to export. The agent serves them
//! at `/metrics` under ZeroTier One 1.14's Prometheus names (docs/metrics.md); the label
//! values ZeroTier One uses are here too ([`packet_type_label`], [`PacketErrorType::as_str`],
//! [`Direction::as_str`]) so every host names things alike.
//!
//! Plain integers, no atomics: a [`Node`](crate::node::Node) is driven from one thread and its
//! host reads them through [`Node::metrics`](crate::node::Node::metrics) between calls.
//! Counters only grow. Per-peer entries are dropped when the node forgets the peer, so a
//! stranger cannot make the table grow beyond the peer table.

use std::collections::BTreeMap;

use crate::address::Address;
use crate::vl2::NetworkId;
use crate::wire::error::ErrorRepr;
use crate::wire::verb::{ErrorCode, Verb, VERB_MASK};

/// Which way a packet went, from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Received.
    Rx,
    /// Sent.
    Tx,
}

impl Direction {
    pub const ALL: [Self; 2] = [Self::Rx, Self::Tx];

    /// ZeroTier One's `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Rx => 0,
            Self::Tx => 1,
        }
    }
}

/// The verbs ZeroTier One counts in `zt_packet`, in the order it registers them.
pub const PACKET_TYPES: [Verb; 21] = [
    Verb::Nop,
    Verb::Error,
    Verb::Ack,
    Verb::QosMeasurement,
    Verb::Hello,
    Verb::Ok,
    Verb::Whois,
    Verb::Rendezvous,
    Verb::Frame,
    Verb::ExtFrame,
    Verb::Echo,
    Verb::MulticastLike,
    Verb::NetworkCredentials,
    Verb::NetworkConfigRequest,
    Verb::NetworkConfig,
    Verb::MulticastGather,
    Verb::MulticastFrame,
    Verb::PushDirectPaths,
    Verb::UserMessage,
    Verb::RemoteTrace,
    Verb::PathNegotiationRequest,
];

/// ZeroTier One's `packet_type` label value for a verb. Verbs 1.14 does not define are
/// counted as NOP, as ZeroTier One counts them.
pub fn packet_type_label(verb: Verb) -> &'static str {
    match verb {
        Verb::Nop | Verb::Unknown(_) => "nop",
        Verb::Hello => "hello",
        Verb::Error => "error",
        Verb::Ok => "ok",
        Verb::Whois => "whois",
        Verb::Rendezvous => "rendezvous",
        Verb::Frame => "frame",
        Verb::ExtFrame => "ext_frame",
        Verb::Echo => "echo",
        Verb::MulticastLike => "multicast_like",
        Verb::NetworkCredentials => "network_credentials",
        Verb::NetworkConfigRequest => "network_config_request",
        Verb::NetworkConfig => "network_config",
        Verb::MulticastGather => "multicast_gather",
        Verb::MulticastFrame => "multicast_frame",
        Verb::PushDirectPaths => "push_direct_paths",
        Verb::Ack => "ack",
        Verb::QosMeasurement => "qos",
        Verb::UserMessage => "user_message",
        Verb::RemoteTrace => "remote_trace",
        Verb::PathNegotiationRequest => "path_negotiation_request",
    }
}

/// Slots in the per-verb tables: the verb field is 5 bits wide.
const VERB_SLOTS: usize = VERB_MASK as usize + 1;

/// The table slot of a verb; undefined verbs share NOP's.
fn verb_slot(verb: Verb) -> usize {
    match verb {
        Verb::Unknown(_) => 0,
        known => usize::from(u8::from(known) & VERB_MASK),
    }
}

/// The code of an ERROR packet, as `zt_packet_error`'s `error_type` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketErrorType {
    ObjNotFound,
    UnsupportedOperation,
    IdentityCollision,
    NeedMembershipCertificate,
    NetworkAccessDenied,
    UnwantedMulticast,
    AuthenticationRequired,
    /// Codes ZeroTier One sends but does not count: ours, so nothing goes uncounted.
    InvalidRequest,
    BadProtocolVersion,
    /// Code 0 and codes 1.14 does not define.
    Other,
}

impl PacketErrorType {
    /// ZeroTier One's seven counted codes first, in its order, then ours.
    pub const ALL: [Self; 10] = [
        Self::ObjNotFound,
        Self::UnsupportedOperation,
        Self::IdentityCollision,
        Self::NeedMembershipCertificate,
        Self::NetworkAccessDenied,
        Self::UnwantedMulticast,
        Self::AuthenticationRequired,
        Self::InvalidRequest,
        Self::BadProtocolVersion,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ObjNotFound => "obj_not_found",
            Self::UnsupportedOperation => "unsupported_operation",
            Self::IdentityCollision => "identity_collision",
            Self::NeedMembershipCertificate => "need_membership_certificate",
            Self::NetworkAccessDenied => "network_access_denied",
            Self::UnwantedMulticast => "unwanted_multicast",
            Self::AuthenticationRequired => "authentication_required",
            Self::InvalidRequest => "invalid_request",
            Self::BadProtocolVersion => "bad_protocol_version",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<ErrorCode> for PacketErrorType {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::ObjectNotFound => Self::ObjNotFound,
            ErrorCode::UnsupportedOperation => Self::UnsupportedOperation,
            ErrorCode::IdentityCollision => Self::IdentityCollision,
            ErrorCode::NeedMembershipCertificate => Self::NeedMembershipCertificate,
            ErrorCode::NetworkAccessDenied => Self::NetworkAccessDenied,
            ErrorCode::UnwantedMulticast => Self::UnwantedMulticast,
            ErrorCode::NetworkAuthenticationRequired => Self::AuthenticationRequired,
            ErrorCode::InvalidRequest => Self::InvalidRequest,
            ErrorCode::BadProtocolVersion => Self::BadProtocolVersion,
            ErrorCode::None | ErrorCode::Unknown(_) => Self::Other,
        }
    }
}

/// Why an incoming datagram was dropped before (or instead of) being handled. ZeroTier One
/// only traces these; the counts are ours (`zt_packet_dropped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Too short for a packet or fragment, or a HELLO that does not parse or whose identity
    /// is not its sender's.
    Malformed,
    /// The MAC did not verify (corrupted, forged, or armored with another key).
    MacFailure,
    /// Sent without crypto (trusted-path cipher) from outside a configured trusted path.
    UntrustedPath,
    /// The LZ4 payload did not decompress.
    DecompressionFailed,
    /// A HELLO from a new identity beyond the per-prefix validation rate.
    RateLimited,
    /// A new identity that fails validation or key agreement.
    InvalidIdentity,
    /// A new identity given up before the host validated it (deferred validation: the
    /// queue was full, or no verdict came in time).
    ValidationBacklog,
    /// A HELLO claiming a known address with another key.
    IdentityCollision,
    /// From a sender whose identity never came (WHOIS unanswered, or the wait queue full).
    UnknownPeer,
    /// An OK that answers nothing we asked, or whose answer we refused.
    InvalidReply,
    /// Addressed to another node, and we do not relay it (not a root, or too many hops).
    NotRelayed,
}

impl DropReason {
    pub const ALL: [Self; 11] = [
        Self::Malformed,
        Self::MacFailure,
        Self::UntrustedPath,
        Self::DecompressionFailed,
        Self::RateLimited,
        Self::InvalidIdentity,
        Self::ValidationBacklog,
        Self::IdentityCollision,
        Self::UnknownPeer,
        Self::InvalidReply,
        Self::NotRelayed,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::MacFailure => "mac_failure",
            Self::UntrustedPath => "untrusted_path",
            Self::DecompressionFailed => "decompression_failed",
            Self::RateLimited => "rate_limited",
            Self::InvalidIdentity => "invalid_identity",
            Self::ValidationBacklog => "validation_backlog",
            Self::IdentityCollision => "identity_collision",
            Self::UnknownPeer => "unknown_peer",
            Self::InvalidReply => "invalid_reply",
            Self::NotRelayed => "not_relayed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (inclusive, milliseconds) of the latency histogram's buckets: ZeroTier One's
/// `zt_peer_latency` buckets. A last, unbounded bucket (`+Inf`) follows.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 3, 6, 10, 30, 60, 100, 300, 600, 1000];

/// Round-trip times measured to one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    counts: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum: u64,
}

impl LatencyHistogram {
    fn observe(&mut self, millis: u64) {
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|&bound| millis <= bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[slot] += 1;
        self.sum = self.sum.saturating_add(millis);
    }

    /// `(upper bound, observations at or below it)` for each bounded bucket, in order, as
    /// Prometheus' cumulative `_bucket` series want them; [`Self::count`] is the `+Inf` one.
    pub fn cumulative_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        LATENCY_BUCKETS_MS
            .iter()
            .zip(self.counts.iter())
            .scan(0u64, |running, (&bound, &count)| {
                *running += count;
                Some((bound, *running))
            })
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observed milliseconds.
    pub fn sum(&self) -> u64 {
        self.sum
    }
}

/// What is counted per peer (`zt_peer_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    packets: [u64; 2],
    packet_errors: u64,
    latency: LatencyHistogram,
}

impl PeerCounters {
    /// Authenticated packets from the peer (rx), packets to it (tx).
    pub fn packets(&self, direction: Direction) -> u64 {
        self.packets[direction.index()]
    }

    /// Packets claiming to be from the peer whose MAC failed.
    pub fn packet_errors(&self) -> u64 {
        self.packet_errors
    }

    /// Round trips measured by OK(HELLO) and OK(ECHO) over direct paths.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }
}

/// Frames of one network that the rules accepted or dropped (`zt_network_packets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// `[direction][accepted]`.
    frames: [[u64; 2]; 2],
}

impl NetworkCounters {
    /// Frames in `direction` (rx: from a member toward our port; tx: from our port) that the
    /// network's rules accepted (`accepted`) or dropped.
    pub fn frames(&self, direction: Direction, accepted: bool) -> u64 {
        self.frames[direction.index()][usize::from(accepted)]
    }
}

/// Everything a node counts. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `[direction][verb slot]`.
    packets: [[u64; VERB_SLOTS]; 2],
    /// `[direction][PacketErrorType]`.
    packet_errors: [[u64; PacketErrorType::ALL.len()]; 2],
    dropped: [u64; DropReason::ALL.len()],
    udp_datagrams: [u64; 2],
    udp_bytes: [u64; 2],
    identity_validations: u64,
    peers: BTreeMap<Address, PeerCounters>,
    networks: BTreeMap<NetworkId, NetworkCounters>,
}

impl Metrics {
    /// Packets of `verb` received (authenticated) or sent (each whole packet once, however
    /// many fragments carried it). Received verbs 1.14 does not define count as NOP.
    pub fn packets(&self, direction: Direction, verb: Verb) -> u64 {
        self.packets[direction.index()][verb_slot(verb)]
    }

    /// ERROR packets received or sent, by code.
    pub fn packet_errors(&self, direction: Direction, error: PacketErrorType) -> u64 {
        self.packet_errors[direction.index()][error.index()]
    }

    /// Incoming datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// UDP datagrams handed in ([`Node::handle_datagram`]) or out ([`Node::poll_transmit`]),
    /// relayed ones included.
    ///
    /// [`Node::handle_datagram`]: crate::node::Node::handle_datagram
    /// [`Node::poll_transmit`]: crate::node::Node::poll_transmit
    pub fn udp_datagrams(&self, direction: Direction) -> u64 {
        self.udp_datagrams[direction.index()]
    }

    /// UDP payload bytes of those datagrams (`zt_data{protocol="udp"}`).
    pub fn udp_bytes(&self, direction: Direction) -> u64 {
        self.udp_bytes[direction.index()]
    }

    /// Memory-hard identity validations performed: HELLOs from new identities that passed
    /// the per-prefix rate gate and their MAC, identities from OK(WHOIS), cached peers
    /// restored at start-up. Each costs a memory-hard hash, so this is the count a flood of
    /// fresh identities drives up and the rate gate bounds.
    pub fn identity_validations(&self) -> u64 {
        self.identity_validations
    }

    pub fn peer(&self, address: Address) -> Option<&PeerCounters> {
        self.peers.get(&address)
    }

    /// Counters of every peer the node still knows, by address.
    pub fn peers(&self) -> impl Iterator<Item = (Address, &PeerCounters)> {
        self.peers.iter().map(|(a, c)| (*a, c))
    }

    pub fn network(&self, network_id: NetworkId) -> Option<&NetworkCounters> {
        self.networks.get(&network_id)
    }

    // -----------------------------------------------------------------------------------------
    // Recording, by the node

    pub(crate) fn record_datagram_in(&mut self, len: usize) {
        self.record_datagram(Direction::Rx, len);
    }

    pub(crate) fn record_datagram_out(&mut self, len: usize) {
        self.record_datagram(Direction::Tx, len);
    }

    fn record_datagram(&mut self, direction: Direction, len: usize) {
        let d = direction.index();
        self.udp_datagrams[d] += 1;
        self.udp_bytes[d] = self.udp_bytes[d].saturating_add(len as u64);
    }

    /// An authenticated packet of `verb` from `source`; `payload` follows the verb byte (for
    /// ERROR, its code is counted too).
    pub(crate) fn record_received(&mut self, source: Address, verb: Verb, payload: &[u8]) {
        self.record_packet(Direction::Rx, source, verb, payload);
    }

    /// A packet of `verb` built for `destination`, `payload` as for [`Self::record_received`].
    pub(crate) fn record_sent(&mut self, destination: Address, verb: Verb, payload: &[u8]) {
        self.record_packet(Direction::Tx, destination, verb, payload);
    }

    fn record_packet(&mut self, direction: Direction, peer: Address, verb: Verb, payload: &[u8]) {
        let d = direction.index();
        self.packets[d][verb_slot(verb)] += 1;
        if verb == Verb::Error {
            if let Ok(error) = ErrorRepr::parse(payload) {
                self.packet_errors[d][PacketErrorType::from(error.code).index()] += 1;
            }
        }
        self.peers.entry(peer).or_default().packets[d] += 1;
    }

    pub(crate) fn record_identity_validation(&mut self) {
        self.identity_validations += 1;
    }

    pub(crate) fn record_dropped(&mut self, reason: DropReason) {
        self.record_dropped_many(reason, 1);
    }

    pub(crate) fn record_dropped_many(&mut self, reason: DropReason, count: usize) {
        self.dropped[reason.index()] += count as u64;
    }

    /// A packet claiming to be from a known peer whose MAC failed.
    pub(crate) fn record_mac_failure(&mut self, claimed_source: Address) {
        self.record_dropped(DropReason::MacFailure);
        self.peers.entry(claimed_source).or_default().packet_errors += 1;
    }

    /// A round trip to `peer` measured over a direct path.
    pub(crate) fn observe_latency(&mut self, peer: Address, millis: i64) {
        let millis = u64::try_from(millis).unwrap_or(0);
        self.peers.entry(peer).or_default().latency.observe(millis);
    }

    /// A frame from a member toward our port, through the network's inbound rules.
    pub(crate) fn record_frame_in(&mut self, network_id: NetworkId, accepted: bool) {
        self.record_frame(network_id, Direction::Rx, accepted);
    }

    /// A frame from our port, through the network's outbound rules.
    pub(crate) fn record_frame_out(&mut self, network_id: NetworkId, accepted: bool) {
        self.record_frame(network_id, Direction::Tx, accepted);
    }

    fn record_frame(&mut self, network_id: NetworkId, direction: Direction, accepted: bool) {
        self.networks.entry(network_id).or_default().frames[direction.index()]
            [usize::from(accepted)] += 1;
    }

    /// Forgets the counters of peers the node no longer knows.
    pub(crate) fn retain_peers(&mut self, mut known: impl FnMut(&Address) -> bool) {
        self.peers.retain(|address, _| known(address));
    }

    /// Forgets the counters of networks the node left.
    pub(crate) fn retain_networks(&mut self, mut joined: impl FnMut(&NetworkId) -> bool) {
        self.networks.retain(|id, _| joined(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_type_has_its_own_slot_and_label() {
        let mut slots: Vec<usize> = PACKET_TYPES.iter().map(|v| verb_slot(*v)).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), PACKET_TYPES.len());
        let mut labels: Vec<&str> = PACKET_TYPES.iter().map(|v| packet_type_label(*v)).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), PACKET_TYPES.len());
        assert_eq!(verb_slot(Verb::Unknown(0x11)), verb_slot(Verb::Nop));
        assert_eq!(verb_slot(Verb::Unknown(0xff)), verb_slot(Verb::Nop));
    }

    #[test]
    fn enum_tables_are_in_index_order() {
        for (i, e) in PacketErrorType::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn counts_packets_errors_and_peers() {
        let mut m = Metrics::default();
        let peer = Address::from_bytes(&[1, 2, 3, 4, 5]);
        m.record_received(peer, Verb::Ok, &[]);
        m.record_received(peer, Verb::Unknown(0x1f), &[]);
        // ERROR in re NETWORK_CONFIG_REQUEST, NETWORK_ACCESS_DENIED.
        let denied = [0x0b, 0, 0, 0, 0, 0, 0, 0, 1, 0x07];
        m.record_sent(peer, Verb::Error, &denied);
        m.record_sent(peer, Verb::Error, &[0x0b]); // too short: counted as ERROR only
        assert_eq!(m.packets(Direction::Rx, Verb::Ok), 1);
        assert_eq!(m.packets(Direction::Rx, Verb::Nop), 1);
        assert_eq!(m.packets(Direction::Tx, Verb::Error), 2);
        assert_eq!(
            m.packet_errors(Direction::Tx, PacketErrorType::NetworkAccessDenied),
            1
        );
        let total_errors: u64 = PacketErrorType::ALL
            .iter()
            .map(|e| m.packet_errors(Direction::Tx, *e))
            .sum();
        assert_eq!(total_errors, 1);
        let counters = m.peer(peer).expect("peer counted");
        assert_eq!(counters.packets(Direction::Rx), 2);
        assert_eq!(counters.packets(Direction::Tx), 2);
        m.record_mac_failure(peer);
        assert_eq!(m.dropped(DropReason::MacFailure), 1);
        assert_eq!(m.peer(peer).map(PeerCounters::packet_errors), Some(1));
        m.retain_peers(|_| false);
        assert!(m.peer(peer).is_none());
        assert_eq!(m.dropped(DropReason::MacFailure), 1, "totals stay");
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 1, 2, 7, 1000, 1001, 50_000] {
            h.observe(ms);
        }
        let buckets: Vec<(u64, u64)> = h.cumulative_buckets().collect();
        assert_eq!(
            buckets,
            vec![
                (1, 2),
                (3, 3),
                (6, 3),
                (10, 4),
                (30, 4),
                (60, 4),
                (100, 4),
                (300, 4),
                (600, 4),
                (1000, 5)
            ]
        );
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum(), 1 + 2 + 7 + 1000 + 1001 + 50_000);
        let mut m = Metrics::default();
        let peer = Address::from_bytes(&[9, 9, 9, 9, 9]);
        m.observe_latency(peer, -5);
        assert_eq!(m.peer(peer).map(|p| p.latency().count()), Some(1));
    }

    #[test]
    fn frames_by_network_direction_and_verdict() {
        let mut m = Metrics::default();
        let id = NetworkId(0x8056_c2e2_1c00_0001);
        m.record_frame_in(id, true);
        m.record_frame_in(id, true);
        m.record_frame_out(id, false);
        let n = m.network(id).expect("counted");
        assert_eq!(n.frames(Direction::Rx, true), 2);
        assert_eq!(n.frames(Direction::Rx, false), 0);
        assert_eq!(n.frames(Direction::Tx, false), 1);
        m.retain_networks(|_| false);
        assert!(m.network(id).is_none());
    }

    #[test]
    fn bytes_and_datagrams() {
        let mut m = Metrics::default();
        m.record_datagram_in(100);
        m.record_datagram_out(30);
        m.record_datagram_out(12);
        assert_eq!(m.udp_bytes(Direction::Rx), 100);
        assert_eq!(m.udp_bytes(Direction::Tx), 42);
        assert_eq!(m.udp_datagrams(Direction::Tx), 2);
    }
}
