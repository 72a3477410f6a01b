//! Physical paths to a peer: one remote UDP address each (zt-vl1.md 9.3).

use std::net::{IpAddr, SocketAddr};

use crate::time::{Millis, Timestamp};

/// A path is alive if anything was received on it this recently (ZT_PATH_HEARTBEAT_PERIOD + 5 s).
pub(crate) const PATH_ALIVE_TIMEOUT: Millis = Millis(19_000);
/// A path with no authenticated receive for this long is removed (ZT_PEER_PATH_EXPIRATION).
pub(crate) const PATH_EXPIRATION: Millis = Millis(243_000);
/// Keepalive ECHO when nothing was sent on a path for this long (ZT_PATH_HEARTBEAT_PERIOD).
pub(crate) const PATH_HEARTBEAT_PERIOD: Millis = Millis(14_000);
/// At most one ECHO answered per path per this period (ZT_PEER_GENERAL_RATE_LIMIT / 6).
pub(crate) const ECHO_ANSWER_INTERVAL: Millis = Millis(166);
/// Most paths kept per peer (ZT_MAX_PEER_NETWORK_PATHS).
pub(crate) const MAX_PATHS_PER_PEER: usize = 64;

/// A confirmed physical path to a peer. Paths are only ever learned from an authenticated OK
/// that arrived on them, so a spoofed source address cannot hijack a peer's traffic.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub(crate) remote: SocketAddr,
    pub(crate) last_send: Timestamp,
    /// Last authenticated packet received on this path (only authenticated packets touch paths).
    pub(crate) last_receive: Timestamp,
    pub(crate) latency: Option<i64>,
    pub(crate) last_echo_answered: Option<Timestamp>,
}

impl Path {
    pub(crate) fn new(remote: SocketAddr, now: Timestamp) -> Self {
        Self {
            remote,
            last_send: Timestamp::ZERO,
            last_receive: now,
            latency: None,
            last_echo_answered: None,
        }
    }

    pub(crate) fn is_alive(&self, now: Timestamp) -> bool {
        now.since(self.last_receive) < PATH_ALIVE_TIMEOUT
    }

    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        now.since(self.last_receive) >= PATH_EXPIRATION
    }

    /// Lower is better: latency (unknown counts as 0xffff ms), worse the longer the silence.
    pub(crate) fn quality(&self, now: Timestamp) -> i64 {
        let latency = self.latency.unwrap_or(0xffff).max(1);
        latency * (1 + now.since(self.last_receive).0 / 5_000)
    }

    /// Updates the smoothed latency with a new sample.
    pub(crate) fn record_latency(&mut self, sample: i64) {
        let sample = sample.max(0);
        self.latency = Some(match self.latency {
            Some(old) => (old * 3 + sample) / 4,
            None => sample,
        });
    }
}

/// Whether ZeroTier traffic may use this physical address (`Path::isAddressValidForPath`):
/// unicast IPv4/IPv6 only; no multicast, unspecified, link-local, broadcast or he.net tunnel
/// space. Loopback is allowed (ZeroTier One refuses it), so that single-machine tests work.
pub(crate) fn is_address_valid_for_path(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local())
        }
        IpAddr::V6(ip) => {
            let seg = ip.segments();
            let link_local = (seg[0] & 0xffc0) == 0xfe80;
            let he_tunnel = seg[0] == 0x2001 && seg[1] == 0x0470;
            !(ip.is_unspecified() || ip.is_multicast() || link_local || he_tunnel)
        }
    }
}

/// The rate-gate key of a source address (`InetAddress::rateGateHash`): IPv4 /24 or the first
/// 48 bits of IPv6, so many identities behind one network share one gate.
pub(crate) fn rate_gate_key(addr: &SocketAddr) -> u64 {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            (u64::from(o[0]) << 16) | (u64::from(o[1]) << 8) | u64::from(o[2])
        }
        IpAddr::V6(ip) => {
            let o = ip.octets();
            (1 << 63)
                | (u64::from(o[0]) << 40)
                | (u64::from(o[1]) << 32)
                | (u64::from(o[2]) << 24)
                | (u64::from(o[3]) << 16)
                | (u64::from(o[4]) << 8)
                | u64::from(o[5])
        }
    }
}
