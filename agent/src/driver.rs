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

use node_core::controller::{Push, RequestAnswer};
use node_core::node::{ConfigAnswer, Event, Node, PeerRole, PeerStatus};
use node_core::vl2::Mac;
use node_core::wire::verb::ErrorCode;
use node_core::{Address, Timestamp};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    endpoint_text, ApiRequest, EchoReport, PathReport, PeerReport, StatusConfig, StatusReport,
    StatusSettings, ECHO_TIMEOUT,
};
use crate::controller::ControllerService;
use crate::home::Home;
use crate::networks::LocalSettings;
use crate::ports::{Ports, TapFrame};
use crate::transport::Transport;

/// Large enough for any UDP datagram.
const RECEIVE_BUFFER: usize = 65_536;
/// Outstanding `POST /echo` requests kept at once; more are refused at once.
const MAX_PENDING_ECHOES: usize = 1024;
/// How often the taps' multicast groups are read from the OS.
const MULTICAST_SCAN_PERIOD: Duration = Duration::from_secs(5);

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
    /// Joined networks' taps; `None` runs without virtual ports (tests of VL1 only).
    ports: Option<Ports>,
    tap_frames: Option<mpsc::Receiver<TapFrame>>,
    /// The network controller for networks under our address.
    controller: Option<ControllerService>,
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
            ports: None,
            tap_frames: None,
            controller: None,
        }
    }

    /// Gives the node virtual ports: `ports` makes the taps, their frames come on `frames`.
    pub fn with_ports(mut self, ports: Ports, frames: mpsc::Receiver<TapFrame>) -> Self {
        self.ports = Some(ports);
        self.tap_frames = Some(frames);
        self
    }

    /// Runs the network controller for networks under our address.
    pub fn with_controller(mut self, controller: ControllerService) -> Self {
        self.controller = Some(controller);
        self
    }

    /// Joins the networks of `networks.d/` again, with their saved configs applied at once.
    fn restore_networks(&mut self) {
        let now = wall_clock();
        let Some(ports) = self.ports.as_mut() else {
            return;
        };
        for (nwid, saved, settings) in ports.saved() {
            tracing::info!(network = %nwid, saved_config = saved.is_some(), "rejoining network");
            let mtu = saved
                .as_ref()
                .map_or(node_core::vl2::config::DEFAULT_MTU, |c| c.mtu);
            let mac = Mac::from_address(self.node.address(), nwid);
            ports.open(nwid, mac, mtu, settings, false);
            if let Some(config) = &saved {
                let dictionary = config
                    .to_dictionary()
                    .map(|d| d.into_bytes())
                    .unwrap_or_default();
                ports.configure(nwid, config, &dictionary);
            }
            self.node.join(now, nwid, saved);
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Runs until `shutdown` completes (Ok) or the node reports a fatal condition (Err).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        self.restore_networks();
        let mut tap_frames = self.tap_frames.take();
        let mut multicast_scan = tokio::time::interval(MULTICAST_SCAN_PERIOD);
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
                Some((network_id, frame)) = recv_frame(&mut tap_frames) => {
                    self.node.handle_tap_frame(wall_clock(), network_id, &frame);
                }
                _ = multicast_scan.tick() => self.scan_multicast_groups(),
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
            Event::Frame { network_id, frame } => {
                if let Some(ports) = &self.ports {
                    ports.deliver(network_id, &frame);
                }
            }
            Event::NetworkConfigUpdated {
                network_id,
                config,
                dictionary,
            } => {
                tracing::info!(
                    network = %network_id,
                    revision = config.revision,
                    addresses = config.static_ips.len(),
                    "network config updated"
                );
                if let Some(ports) = self.ports.as_mut() {
                    ports.configure(network_id, &config, &dictionary);
                }
            }
            Event::NetworkStatusChanged { network_id, status } => {
                tracing::info!(network = %network_id, status = status.as_str(), "network status");
            }
            Event::NetworkConfigRequest {
                network_id,
                requester,
                metadata,
                packet_id,
                from,
            } => {
                let Some(controller) = self.controller.as_mut() else {
                    return Ok(());
                };
                let now = wall_clock();
                let answer =
                    match controller.handle_request(now, network_id, &requester, &metadata, from) {
                        RequestAnswer::Config(config) => ConfigAnswer::Config(config),
                        RequestAnswer::NotFound => ConfigAnswer::Error(ErrorCode::ObjectNotFound),
                        RequestAnswer::AccessDenied => {
                            ConfigAnswer::Error(ErrorCode::NetworkAccessDenied)
                        }
                        RequestAnswer::Ignore => return Ok(()),
                    };
                self.node.answer_config_request(
                    now,
                    network_id,
                    requester.address(),
                    packet_id,
                    answer,
                );
            }
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

    /// Configs and revocations the controller owes members after an API change.
    fn send_controller_pushes(&mut self) {
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        let now = wall_clock();
        for push in controller.take_pushes(now) {
            match push {
                Push::Config {
                    to,
                    network_id,
                    config,
                } => self.node.answer_config_request(
                    now,
                    network_id,
                    to,
                    0,
                    ConfigAnswer::Config(config),
                ),
                Push::Revocation { revocation, to, .. } => {
                    for member in to {
                        self.node.send_revocation(now, member, revocation.clone());
                    }
                }
            }
        }
    }

    fn scan_multicast_groups(&mut self) {
        let Some(ports) = &self.ports else {
            return;
        };
        let now = wall_clock();
        for (network_id, groups) in ports.multicast_groups() {
            self.node
                .set_multicast_subscriptions(now, network_id, groups);
        }
    }

    fn network_json(&self, network_id: node_core::vl2::NetworkId) -> Option<Value> {
        let info = self.node.network(network_id)?;
        Some(match &self.ports {
            Some(ports) => ports.network_json(&info),
            None => crate::networks::network_json(&info, "", &LocalSettings::default()),
        })
    }

    fn handle_request(&mut self, request: ApiRequest) {
        let now = wall_clock();
        match request {
            ApiRequest::Networks { reply } => {
                let list: Vec<Value> = self
                    .node
                    .networks()
                    .iter()
                    .filter_map(|n| self.network_json(n.id))
                    .collect();
                let _ = reply.send(Value::Array(list));
            }
            ApiRequest::Network { network_id, reply } => {
                let _ = reply.send(self.network_json(network_id));
            }
            ApiRequest::Join {
                network_id,
                body,
                reply,
            } => {
                if self.node.network(network_id).is_none() {
                    tracing::info!(network = %network_id, "joining network");
                    let mac = Mac::from_address(self.node.address(), network_id);
                    if let Some(ports) = self.ports.as_mut() {
                        let mut settings = LocalSettings::default();
                        settings.update_from_json(&body);
                        ports.open(
                            network_id,
                            mac,
                            node_core::vl2::config::DEFAULT_MTU,
                            settings,
                            true,
                        );
                    }
                    self.node.join(now, network_id, None);
                } else if let Some(ports) = self.ports.as_mut() {
                    let config = self.node.network(network_id).and_then(|n| n.config);
                    ports.update_settings(network_id, &body, config.as_ref());
                }
                let _ = reply.send(self.network_json(network_id).unwrap_or_else(|| json!({})));
            }
            ApiRequest::Leave { network_id, reply } => {
                let joined = self.node.leave(now, network_id);
                if let Some(ports) = self.ports.as_mut() {
                    ports.close(network_id);
                }
                if joined {
                    tracing::info!(network = %network_id, "left network");
                }
                let _ = reply.send(joined);
            }
            ApiRequest::Controller {
                method,
                path,
                body,
                reply,
            } => {
                let Some(controller) = self.controller.as_mut() else {
                    let _ = reply.send((404, json!({"error": "no controller runs here"})));
                    return;
                };
                let answer = controller.handle_http(now, &method, &path, &body);
                let _ = reply.send((answer.status, answer.body));
                self.send_controller_pushes();
            }
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

/// The next frame from the taps, or never when the driver has no ports.
async fn recv_frame(frames: &mut Option<mpsc::Receiver<TapFrame>>) -> Option<TapFrame> {
    match frames {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant at which wall-clock `deadline` falls, seen from `now`.
fn instant_of(deadline: Timestamp, now: Timestamp) -> Instant {
    let wait = u64::try_from(deadline.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
    // A far-off deadline is capped so an absurd value cannot overflow Instant.
    Instant::now() + Duration::from_millis(wait.min(ECHO_TIMEOUT.as_millis() as u64 * 12))
}
