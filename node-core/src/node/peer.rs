//! What a node knows about another node: its identity, the shared key, versions and paths.

use std::net::SocketAddr;

use crate::crypto::armor::{CipherSuite, PeerKey};
use crate::identity::Identity;
use crate::time::{Millis, Timestamp};

use super::path::{Path, MAX_PATHS_PER_PEER};

/// From this protocol version on a peer speaks AES-GMAC-SIV (cipher 3).
const AES_GMAC_SIV_MIN_PROTO: u8 = 12;
/// From this protocol version on a peer answers ECHO (so ECHO can replace HELLO as keepalive).
pub(crate) const ECHO_MIN_PROTO: u8 = 5;
/// A HELLO to an unknown path in answer to traffic on it, at most this often per path.
const CONTACT_ATTEMPT_INTERVAL: Millis = Millis(1_000);
/// PUSH_DIRECT_PATHS: messages counted within this window (ZT_PUSH_DIRECT_PATHS_CUTOFF_TIME)...
const PUSH_DIRECT_PATHS_WINDOW: Millis = Millis(30_000);
/// ...and processing stops once this many arrived in it (ZT_PUSH_DIRECT_PATHS_CUTOFF_LIMIT).
const PUSH_DIRECT_PATHS_LIMIT: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteVersion {
    pub(crate) proto: u8,
    pub(crate) major: u8,
    pub(crate) minor: u8,
    pub(crate) revision: u16,
}

pub(crate) struct Peer {
    pub(crate) identity: Identity,
    pub(crate) key: PeerKey,
    pub(crate) version: Option<RemoteVersion>,
    pub(crate) paths: Vec<Path>,
    /// Last authenticated packet from this peer, direct or relayed.
    pub(crate) last_receive: Timestamp,
    pub(crate) last_hello_sent: Option<Timestamp>,
    /// Last application-level exchange (ECHO asked by the host, user messages, VL2 later):
    /// only active peers get keepalives, as in ZeroTier One.
    pub(crate) last_activity: Option<Timestamp>,
    pub(crate) latency: Option<i64>,
    contact_attempts: Vec<(SocketAddr, Timestamp)>,
    pub(crate) last_whois_answered: Option<Timestamp>,
    push_window_start: Timestamp,
    push_count: u32,
}

impl Peer {
    pub(crate) fn new(identity: Identity, key: PeerKey, now: Timestamp) -> Self {
        Self {
            identity,
            key,
            version: None,
            paths: Vec::new(),
            last_receive: now,
            last_hello_sent: None,
            last_activity: None,
            latency: None,
            contact_attempts: Vec::new(),
            last_whois_answered: None,
            push_window_start: Timestamp::ZERO,
            push_count: 0,
        }
    }

    /// The cipher suite for an encrypted packet to this peer (zt-vl1.md 4.0).
    pub(crate) fn cipher(&self) -> CipherSuite {
        match self.version {
            Some(v) if v.proto >= AES_GMAC_SIV_MIN_PROTO => CipherSuite::AesGmacSiv,
            _ => CipherSuite::Salsa2012Poly1305,
        }
    }

    pub(crate) fn answers_echo(&self) -> bool {
        matches!(self.version, Some(v) if v.proto >= ECHO_MIN_PROTO)
    }

    pub(crate) fn path_mut(&mut self, remote: &SocketAddr) -> Option<&mut Path> {
        self.paths.iter_mut().find(|p| p.remote == *remote)
    }

    pub(crate) fn has_path(&self, remote: &SocketAddr) -> bool {
        self.paths.iter().any(|p| p.remote == *remote)
    }

    /// Adds a path confirmed by an authenticated OK, evicting the stalest when full.
    pub(crate) fn learn_path(&mut self, remote: SocketAddr, now: Timestamp) -> &mut Path {
        if let Some(i) = self.paths.iter().position(|p| p.remote == remote) {
            self.paths[i].last_receive = now;
            return &mut self.paths[i];
        }
        if self.paths.len() >= MAX_PATHS_PER_PEER {
            if let Some((i, _)) = self
                .paths
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_receive)
            {
                self.paths.swap_remove(i);
            }
        }
        self.paths.push(Path::new(remote, now));
        let last = self.paths.len() - 1;
        &mut self.paths[last]
    }

    /// The path to send on: the best alive one, else the most recently heard.
    pub(crate) fn best_path_index(&self, now: Timestamp) -> Option<usize> {
        let alive = self
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_alive(now))
            .min_by_key(|(_, p)| (p.quality(now), std::cmp::Reverse(p.last_receive)));
        if let Some((i, _)) = alive {
            return Some(i);
        }
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_expired(now))
            .max_by_key(|(_, p)| p.last_receive)
            .map(|(i, _)| i)
    }

    pub(crate) fn has_alive_path(&self, now: Timestamp) -> bool {
        self.paths.iter().any(|p| p.is_alive(now))
    }

    pub(crate) fn expire_paths(&mut self, now: Timestamp) {
        self.paths.retain(|p| !p.is_expired(now));
        self.contact_attempts
            .retain(|(_, t)| now.since(*t) < CONTACT_ATTEMPT_INTERVAL);
    }

    /// Rate gate for contacting an unconfirmed address of this peer: true if allowed now.
    pub(crate) fn gate_contact_attempt(&mut self, remote: SocketAddr, now: Timestamp) -> bool {
        match self.contact_attempts.iter_mut().find(|(a, _)| *a == remote) {
            Some((_, t)) if now.since(*t) < CONTACT_ATTEMPT_INTERVAL => false,
            Some((_, t)) => {
                *t = now;
                true
            }
            None => {
                if self.contact_attempts.len() >= MAX_PATHS_PER_PEER {
                    self.contact_attempts.remove(0);
                }
                self.contact_attempts.push((remote, now));
                true
            }
        }
    }

    /// PUSH_DIRECT_PATHS gate: true if this message may be processed.
    pub(crate) fn gate_push_direct_paths(&mut self, now: Timestamp) -> bool {
        if now.since(self.push_window_start) >= PUSH_DIRECT_PATHS_WINDOW {
            self.push_window_start = now;
            self.push_count = 0;
        }
        self.push_count += 1;
        self.push_count <= PUSH_DIRECT_PATHS_LIMIT
    }
}
