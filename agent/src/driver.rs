//! The task that owns the [`Node`]: it feeds the node datagrams, timer ticks and API
//! requests, and carries out what the node asks (datagrams to send, state to persist).
//!
//! One task, one loop: `select` over the transport, the API request channel and a timer at
//! [`Node::poll_timeout`]; after each input, drain [`Node::poll_transmit`] then
//! [`Node::poll_event`]. Each turn handles one input, so a flood of datagrams cannot starve
//! the API or the timer for long (select picks among ready branches at random).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use node_core::node::{Event, Node, PeerRole, PeerStatus};
use node_core::{Address, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    endpoint_text, ApiRequest, EchoReport, PathReport, PeerReport, StatusConfig, StatusReport,
    StatusSettings, ECHO_TIMEOUT,
};
use crate::home::Home;
use crate::transport::Transport;

/// Large enough for any UDP datagram.
const RECEIVE_BUFFER: usize = 65_536;
/// Outstanding `POST /echo` requests kept at once; more are refused at once.
const MAX_PENDING_ECHOES: usize = 1024;

/// Why the driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "identity collision: another node holds our address with a different key; \
         remove identity.secret and identity.public to make a new identity"
    )]
    IdentityCollision,
}

/// Milliseconds since the Unix epoch, the agent's clock for the node.
pub fn wall_clock() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// What `/status` says about this host beyond the node itself.
#[derive(Clone, Debug)]
pub struct LocalInfo {
    pub port: u16,
    pub home_dir: PathBuf,
}

/// An ECHO waiting for its OK.
struct PendingEcho {
    to: Address,
    payload: Vec<u8>,
    sent: Instant,
    reply: oneshot::Sender<EchoReport>,
}

/// The node, its transport and everything the loop keeps between turns.
pub struct Driver<T: Transport> {
    node: Node,
    transport: T,
    /// Where planet, moon and peer updates are persisted; `None` persists nothing.
    home: Option<Home>,
    requests: mpsc::Receiver<ApiRequest>,
    local: LocalInfo,
    pending_echoes: Vec<PendingEcho>,
    echo_sequence: u64,
}

impl<T: Transport> Driver<T> {
    pub fn new(
        node: Node,
        transport: T,
        home: Option<Home>,
        requests: mpsc::Receiver<ApiRequest>,
        local: LocalInfo,
    ) -> Self {
        Self {
            node,
            transport,
            home,
            requests,
            local,
            pending_echoes: Vec::new(),
            echo_sequence: 0,
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Runs until `shutdown` completes (Ok) or the node reports a fatal condition (Err).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        // Anything the node queued at construction (first HELLOs) goes out now.
        self.flush().await?;
        loop {
            let deadline = self.node.poll_timeout();
            let wake = instant_of(deadline, wall_clock());
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                received = self.transport.recv(&mut buf) => match received {
                    Ok((len, from)) => self.node.handle_datagram(wall_clock(), from, &buf[..len]),
                    Err(e) => tracing::debug!("UDP receive failed: {e}"),
                },
                Some(request) = self.requests.recv() => self.handle_request(request),
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = wall_clock();
                    if now >= deadline {
                        self.node.handle_timeout(now);
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Sends what the node queued and acts on its events.
    async fn flush(&mut self) -> Result<(), DriverError> {
        while let Some(transmit) = self.node.poll_transmit() {
            if let Err(e) = self
                .transport
                .send(transmit.to, &transmit.data, transmit.ttl)
                .await
            {
                tracing::debug!(to = %transmit.to, "UDP send failed: {e}");
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.handle_event(event)?;
        }
        // Requests whose HTTP side gave up (timeout, closed connection) are forgotten.
        self.pending_echoes.retain(|p| !p.reply.is_closed());
        Ok(())
    }

    fn handle_event(&mut self, event: Event) -> Result<(), DriverError> {
        match event {
            Event::PlanetUpdated(planet) => {
                tracing::info!(
                    id = %format!("{:016x}", planet.id),
                    timestamp = planet.timestamp,
                    "planet updated"
                );
                if let Some(home) = &self.home {
                    if let Err(e) = home.save_planet(&planet) {
                        tracing::error!("cannot save the updated planet: {e}");
                    }
                }
            }
            Event::MoonUpdated(moon) => {
                tracing::info!(id = %format!("{:016x}", moon.id), timestamp = moon.timestamp, "moon updated");
                if let Some(home) = &self.home {
                    if let Err(e) = home.save_moon(&moon) {
                        tracing::error!("cannot save the updated moon: {e}");
                    }
                }
            }
            Event::PeerLearned(identity) => {
                tracing::debug!(address = %identity.address(), "peer identity learned");
                // A cache write (with its fsync) must not hold up the packet loop.
                if let Some(home) = self.home.clone() {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = home.save_peer(&identity) {
                            tracing::warn!("cannot cache a peer identity: {e}");
                        }
                    });
                }
            }
            Event::EchoReply {
                from,
                payload,
                path,
                hops,
            } => {
                self.complete_echo(from, &payload, path, hops);
            }
            Event::UserMessage {
                from,
                type_id,
                data,
            } => {
                tracing::debug!(%from, type_id, len = data.len(), "user message ignored");
            }
            Event::IdentityCollision => return Err(DriverError::IdentityCollision),
            other => tracing::debug!("VL2 event not handled yet: {other:?}"),
        }
        Ok(())
    }

    fn complete_echo(&mut self, from: Address, payload: &[u8], path: SocketAddr, hops: u8) {
        let Some(index) = self
            .pending_echoes
            .iter()
            .position(|p| p.to == from && p.payload == payload)
        else {
            tracing::debug!(%from, "ECHO reply nobody waits for");
            return;
        };
        let pending = self.pending_echoes.remove(index);
        let rtt = pending.sent.elapsed();
        let report = EchoReport {
            address: from.to_string(),
            rtt: (rtt.as_micros() as f64) / 1000.0,
            hops,
            path: endpoint_text(path),
        };
        let _ = pending.reply.send(report);
    }

    fn handle_request(&mut self, request: ApiRequest) {
        let now = wall_clock();
        match request {
            ApiRequest::Status { reply } => {
                let _ = reply.send(self.status_report(now));
            }
            ApiRequest::Peers { reply } => {
                let peers = self
                    .node
                    .peers(now)
                    .iter()
                    .map(|p| self.peer_report(p))
                    .collect();
                let _ = reply.send(peers);
            }
            ApiRequest::Peer { address, reply } => {
                let peer = self
                    .node
                    .peers(now)
                    .iter()
                    .find(|p| p.address == address)
                    .map(|p| self.peer_report(p));
                let _ = reply.send(peer);
            }
            ApiRequest::Echo {
                address,
                payload,
                reply,
            } => {
                if self.pending_echoes.len() >= MAX_PENDING_ECHOES {
                    // Dropping `reply` answers the request with 504 at once.
                    tracing::warn!("too many ECHOs outstanding; refusing one to {address}");
                    return;
                }
                // Replies are matched on their payload: make each one distinct when the
                // caller gave none.
                let payload = if payload.is_empty() {
                    self.echo_sequence += 1;
                    format!("zt-agent echo {} {}", self.echo_sequence, now.as_millis()).into_bytes()
                } else {
                    payload
                };
                self.node.send_echo(now, address, &payload);
                self.pending_echoes.push(PendingEcho {
                    to: address,
                    payload,
                    sent: Instant::now(),
                    reply,
                });
            }
        }
    }

    fn status_report(&self, now: Timestamp) -> StatusReport {
        let status = self.node.status(now);
        let (major, minor, revision) = status.version;
        StatusReport {
            address: status.address.to_string(),
            public_identity: status.public_identity,
            online: status.online,
            tcp_fallback_active: false,
            version_major: major,
            version_minor: minor,
            version_rev: revision,
            version_build: 0,
            version: format!("{major}.{minor}.{revision}"),
            clock: now.as_millis(),
            planet_world_id: status.planet_id,
            planet_world_timestamp: status.planet_timestamp,
            config: StatusConfig {
                settings: StatusSettings {
                    primary_port: self.local.port,
                    secondary_port: 0,
                    tertiary_port: 0,
                    home_dir: self.local.home_dir.display().to_string(),
                    listening_on: self
                        .transport
                        .local_addrs()
                        .into_iter()
                        .map(endpoint_text)
                        .collect(),
                    surface_addresses: Vec::new(),
                    allow_tcp_fallback_relay: false,
                    force_tcp_relay: false,
                    port_mapping_enabled: false,
                    software_update: "disable".to_string(),
                    software_update_channel: "release".to_string(),
                },
            },
        }
    }

    fn peer_report(&self, peer: &PeerStatus) -> PeerReport {
        let (major, minor, revision) = match peer.version {
            Some((major, minor, revision)) => {
                (i32::from(major), i32::from(minor), i32::from(revision))
            }
            None => (-1, -1, -1),
        };
        PeerReport {
            address: peer.address.to_string(),
            version_major: major,
            version_minor: minor,
            version_rev: revision,
            version: format!("{major}.{minor}.{revision}"),
            latency: peer.latency.unwrap_or(-1),
            role: match peer.role {
                PeerRole::Leaf => "LEAF",
                PeerRole::Moon => "MOON",
                PeerRole::Planet => "PLANET",
            },
            is_bonded: false,
            tunneled: false,
            paths: peer
                .paths
                .iter()
                .map(|path| PathReport {
                    address: endpoint_text(path.address),
                    last_send: path.last_send.as_millis().max(0),
                    last_receive: path.last_receive.as_millis().max(0),
                    trusted_path_id: 0,
                    active: path.active,
                    expired: path.expired,
                    preferred: path.preferred,
                    local_socket: self.transport.local_socket_id(path.address),
                    local_port: self.local.port,
                })
                .collect(),
        }
    }
}

/// The monotonic instant at which wall-clock `deadline` falls, seen from `now`.
fn instant_of(deadline: Timestamp, now: Timestamp) -> Instant {
    let wait = u64::try_from(deadline.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
    // A far-off deadline is capped so an absurd value cannot overflow Instant.
    Instant::now() + Duration::from_millis(wait.min(ECHO_TIMEOUT.as_millis() as u64 * 12))
}
