//! The task that owns the [`Node`]: it feeds the node datagrams, timer ticks and API
//! requests, and carries out what the node asks (datagrams to send, state to persist).
//!
//! One task, one loop: `select` over the transport, the API request channel and a timer at
//! [`Node::poll_timeout`]; after each input, drain [`Node::poll_transmit`] then
//! [`Node::poll_event`]. Each turn handles one input, so a flood of datagrams cannot starve
//! the API or the timer for long (select picks among ready branches at random).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use node_core::controller::{Push, RequestAnswer};
use node_core::node::{ConfigAnswer, Event, Node, PeerRole, PeerStatus};
use node_core::vl2::{Mac, NetworkId};
use node_core::wire::verb::ErrorCode;
use node_core::{Address, Timestamp};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    endpoint_text, ApiRequest, EchoReport, PathReport, PeerReport, StatusConfig, StatusReport,
    StatusSettings, ECHO_TIMEOUT,
};
use crate::authorize::{authorize_member, ControllerCredentials};
use crate::controller::ControllerService;
use crate::endpoint_manager::{describe, PluginRequest};
use crate::endpoints::{EndpointRecord, EndpointStore, TapEndpointPort};
use crate::home::Home;
use crate::identity_pool::IdentityPool;
use crate::networks::LocalSettings;
use crate::plugin_api::{
    ApiError, AttachRequest, DetachRequest, DetachResponse, Endpoint as PluginEndpoint,
    EndpointCounters, EndpointKey, EndpointRef, EndpointState, ErrorCode as ApiErrorCode,
    GcResponse, SandboxRequest, Status,
};
use crate::plumbing::{NetnsRef, NetnsWorker};
use crate::ports::{Ports, TapFrame};
use crate::transport::{RecvBatch, Transport};
use crate::validator::{IdentityValidator, Verdict};
use node_core::node::{NodeConfig, Transmit};
use node_core::Identity;

/// Tap frames handled in one turn of the loop before the datagrams they made are sent.
const FRAME_BATCH: usize = 64;
/// Outstanding `POST /echo` requests kept at once; more are refused at once.
const MAX_PENDING_ECHOES: usize = 1024;
/// How often the taps' multicast groups are read from the OS.
const MULTICAST_SCAN_PERIOD: Duration = Duration::from_secs(5);
/// Endpoint identities kept ready (each takes a fraction of a second to make).
pub const ENDPOINT_IDENTITIES_READY: usize = 3;

/// A container endpoint's virtual port, as the driver sees it: where its node's frames go
/// and what its network's config changes. The real one is a tap in the container's
/// namespace; tests use channels.
pub trait EndpointPort: Send {
    /// A frame for the endpoint's interface; it may be held back until [`EndpointPort::flush`].
    fn deliver(&mut self, frame: &[u8]);
    /// Writes what [`EndpointPort::deliver`] held back: called at the end of every batch.
    fn flush(&mut self) {}
    /// A new config of the endpoint's network (addresses, routes, MTU to apply).
    fn configure(&mut self, config: &node_core::vl2::config::NetworkConfig);
    /// New attach options (IPAM addresses, routes), applied with the next configure.
    fn set_options(&mut self, options: crate::endpoints::PortOptions) {
        let _ = options;
    }
    /// Whether the config of `revision` is in place on the interface (applying may take a
    /// moment after [`EndpointPort::configure`]).
    fn is_applied(&self, revision: u64) -> bool {
        let _ = revision;
        true
    }
    /// The endpoint is removed for good (not just dropped at the agent's exit): an interface
    /// made to outlive the agent must go with it.
    fn discard(&mut self) {}
}

/// A frame from an endpoint's interface, tagged with the endpoint's node address.
pub type EndpointFrame = (Address, crate::ports::FrameBuf);

/// A container endpoint: a ZeroTier member of its own on one network, hosted on the agent's
/// UDP port next to the host's node.
pub struct Endpoint {
    /// The caller's stable key (pod, container, endpoint).
    pub key: String,
    pub network: node_core::vl2::NetworkId,
    pub node: Node,
    pub port: Box<dyn EndpointPort>,
    /// The plugin API request that made it, when one did.
    pub request: Option<crate::plugin_api::AttachRequest>,
    /// Without `netns` in its request: the namespace its runtime moved its interface into
    /// (`POST /v1/sandbox`), kept in its record for a restart.
    pub sandbox: Option<PathBuf>,
    pub counters: EndpointCounters,
}

/// A frame one hosted node switched to another ([`Event::SwitchedFrame`]).
struct SwitchedFrame {
    from: Address,
    network_id: node_core::vl2::NetworkId,
    to: Address,
    ethertype: u16,
    payload: Vec<u8>,
}

/// Where a datagram goes: the node its destination field names, else the host's node (which
/// relays, when it is a root, or drops).
pub fn datagram_destination(datagram: &[u8]) -> Option<Address> {
    // Packets and fragments both carry the destination at bytes 8..13.
    datagram.get(8..13).map(Address::from_bytes)
}

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
    /// Container endpoints by node address.
    endpoints: BTreeMap<Address, Endpoint>,
    endpoint_frames: Option<mpsc::Receiver<EndpointFrame>>,
    /// The plugin API's requests, when the agent serves one.
    plugin: Option<PluginState>,
    /// Frames between hosted nodes, switched at the end of the turn.
    switched: Vec<SwitchedFrame>,
    /// A turn's datagrams, sent together, and the node each came from (its buffer goes
    /// back to that node's pool once sent). Both keep their capacity from turn to turn.
    outgoing: Vec<Transmit>,
    outgoing_from: Vec<Address>,
    /// Runs the memory-hard hash of new peer identities for every hosted node, off this
    /// task ([`Event::ValidateIdentity`]); its verdicts come on `verdicts`.
    validator: IdentityValidator,
    verdicts: Option<mpsc::UnboundedReceiver<Verdict>>,
    /// Validations the endpoints' nodes asked for this turn.
    validation_requests: Vec<(Address, Identity)>,
}

/// What serving the plugin API takes.
pub struct PluginState {
    pub requests: mpsc::Receiver<PluginRequest>,
    /// For helper tasks to hand their results back.
    pub loopback: mpsc::Sender<PluginRequest>,
    pub worker: NetnsWorker,
    pub store: EndpointStore,
    pub frames: mpsc::Sender<EndpointFrame>,
    waiters: Vec<AttachWaiter>,
    /// Woken when an endpoint's config is in place, to answer its waiting attaches.
    applied: std::sync::Arc<tokio::sync::Notify>,
    /// Identities for new endpoints, made ahead of time.
    identities: IdentityPool,
    /// With these, the agent authorizes its new endpoints on their networks itself.
    credentials: Option<std::sync::Arc<ControllerCredentials>>,
    /// Where the CNI plugin records deletes it could not send while the agent was down
    /// (one detach body per file), replayed at start.
    pending_deletes: Option<PathBuf>,
}

impl PluginState {
    pub fn new(
        requests: mpsc::Receiver<PluginRequest>,
        loopback: mpsc::Sender<PluginRequest>,
        worker: NetnsWorker,
        store: EndpointStore,
        frames: mpsc::Sender<EndpointFrame>,
    ) -> Self {
        Self {
            requests,
            loopback,
            worker,
            store,
            frames,
            waiters: Vec::new(),
            applied: std::sync::Arc::default(),
            identities: IdentityPool::new(ENDPOINT_IDENTITIES_READY),
            credentials: None,
            pending_deletes: None,
        }
    }

    /// Deletes recorded in `dir` while the agent was down are carried out at start.
    pub fn with_pending_deletes(mut self, dir: PathBuf) -> Self {
        self.pending_deletes = Some(dir);
        self
    }

    /// New endpoints take their identities from `pool` (started here).
    pub fn with_identity_pool(mut self, pool: IdentityPool) -> Self {
        pool.start();
        self.identities = pool;
        self
    }

    /// New endpoints are authorized through the controller API these credentials are for.
    pub fn with_credentials(mut self, credentials: Option<ControllerCredentials>) -> Self {
        self.credentials = credentials.map(std::sync::Arc::new);
        self
    }
}

/// Where an attach's tap comes from.
enum Placement {
    /// Made now (and moved into the request's `netns`, when it has one).
    New,
    /// Taken over from an earlier run: an endpoint without `netns` whose persistent tap is
    /// in `sandbox`, or in our namespace.
    Reopen { sandbox: Option<PathBuf> },
}

/// An attach waiting for its endpoint to be configured (or for its deadline).
struct AttachWaiter {
    address: Address,
    deadline: Instant,
    /// Why the agent could not authorize the endpoint itself, for the error if it stays
    /// unauthorized.
    authorize_error: Option<String>,
    reply: oneshot::Sender<Result<crate::plugin_api::Endpoint, crate::plugin_api::ApiError>>,
}

impl<T: Transport> Driver<T> {
    pub fn new(
        node: Node,
        transport: T,
        home: Option<Home>,
        requests: mpsc::Receiver<ApiRequest>,
        local: LocalInfo,
    ) -> Self {
        let (verdicts_tx, verdicts) = mpsc::unbounded_channel();
        Self {
            validator: IdentityValidator::new(verdicts_tx),
            verdicts: Some(verdicts),
            validation_requests: Vec::new(),
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
            endpoints: BTreeMap::new(),
            endpoint_frames: None,
            plugin: None,
            switched: Vec::new(),
            outgoing: Vec::new(),
            outgoing_from: Vec::new(),
        }
    }

    /// Serves the plugin API's requests.
    pub fn with_plugin(mut self, plugin: PluginState) -> Self {
        self.plugin = Some(plugin);
        self
    }

    /// Frames from endpoints' interfaces come on `frames`.
    pub fn with_endpoint_frames(mut self, frames: mpsc::Receiver<EndpointFrame>) -> Self {
        self.endpoint_frames = Some(frames);
        self
    }

    /// Hosts an endpoint's node (already joined to its network) from now on.
    pub fn add_endpoint(&mut self, endpoint: Endpoint) {
        let address = endpoint.node.address();
        tracing::info!(key = %endpoint.key, %address, network = %endpoint.network, "endpoint added");
        self.endpoints.insert(address, endpoint);
        self.share_local_peers();
    }

    /// Stops hosting an endpoint; its port goes with it.
    pub fn remove_endpoint(&mut self, address: Address) -> Option<Endpoint> {
        let removed = self.endpoints.remove(&address);
        self.share_local_peers();
        removed
    }

    /// Tells every hosted node who else is hosted here, so that unicast frames between them
    /// are switched locally.
    fn share_local_peers(&mut self) {
        let peers: std::sync::Arc<std::collections::BTreeSet<Address>> = std::sync::Arc::new(
            std::iter::once(self.node.address())
                .chain(self.endpoints.keys().copied())
                .collect(),
        );
        self.node.set_local_peers(peers.clone());
        for endpoint in self.endpoints.values_mut() {
            endpoint.node.set_local_peers(peers.clone());
        }
    }

    /// Hands switched frames to their destination nodes, counting them at both ends.
    fn switch_frames(&mut self) {
        let now = wall_clock();
        // Taken and put back, so the list keeps its capacity (receivers queue events, never
        // switched frames, while this runs).
        let mut switched = std::mem::take(&mut self.switched);
        for frame in switched.drain(..) {
            let bytes = frame.payload.len() as u64 + 14;
            let delivered = if frame.to == self.node.address() {
                self.node.handle_switched_frame(
                    now,
                    frame.network_id,
                    frame.from,
                    frame.ethertype,
                    &frame.payload,
                )
            } else if let Some(to) = self.endpoints.get_mut(&frame.to) {
                let delivered = to.node.handle_switched_frame(
                    now,
                    frame.network_id,
                    frame.from,
                    frame.ethertype,
                    &frame.payload,
                );
                if delivered {
                    to.counters.switched_in_packets += 1;
                    to.counters.switched_in_bytes += bytes;
                }
                delivered
            } else {
                false
            };
            if let Some(from) = self.endpoints.get_mut(&frame.from) {
                from.counters.switched_out_packets += 1;
                from.counters.switched_out_bytes += bytes;
            }
            if !delivered {
                tracing::trace!(from = %frame.from, to = %frame.to, "switched frame dropped");
            }
            // The payload buffer came from the sender's pool: back it goes.
            self.recycle(frame.from, frame.payload);
        }
        self.switched = switched;
    }

    /// Gives a buffer back to the pool of the hosted node `owner` (if still hosted).
    fn recycle(&mut self, owner: Address, buffer: Vec<u8>) {
        if owner == self.node.address() {
            self.node.recycle(buffer);
        } else if let Some(endpoint) = self.endpoints.get_mut(&owner) {
            endpoint.node.recycle(buffer);
        }
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// Endpoints of earlier runs, made again in their containers (skipped when the
    /// container's namespace is gone).
    fn restore_endpoints(&mut self) {
        let Some(plugin) = &self.plugin else {
            return;
        };
        let pending = plugin
            .pending_deletes
            .as_deref()
            .map(take_pending_deletes)
            .unwrap_or_default();
        let mut restore = Vec::new();
        for record in plugin.store.load_all() {
            let Some(request) = record
                .attach
                .clone()
                .and_then(|v| serde_json::from_value::<AttachRequest>(v).ok())
            else {
                continue;
            };
            if pending
                .iter()
                .any(|target| target.matches_request(&request))
            {
                tracing::info!(key = %record.key, "deleted while the agent was down");
                if let Err(e) = plugin.store.remove(&record.key) {
                    tracing::warn!(key = %record.key, "cannot remove the endpoint record: {e}");
                }
                continue;
            }
            let placement = match &request.netns {
                // Its persistent tap is where its runtime moved it, or still here.
                None => Placement::Reopen {
                    sandbox: record.sandbox.clone(),
                },
                Some(netns) if !netns.exists() => {
                    tracing::info!(key = %record.key, "container namespace gone; endpoint not restored");
                    continue;
                }
                Some(_) => Placement::New,
            };
            tracing::info!(key = %record.key, "restoring endpoint");
            restore.push((request, placement));
        }
        for (request, placement) in restore {
            let (reply, answer) = oneshot::channel();
            let key = request.key.clone();
            self.start_attach_at(request, reply, placement);
            tokio::spawn(async move {
                if let Ok(Err(e)) = answer.await {
                    tracing::info!(%key, "endpoint not restored: {}", e.message);
                }
            });
        }
    }

    /// Attach, first half: the identity (kept per key) and the tap moved into the container,
    /// done off the loop; the result comes back as [`PluginRequest::Opened`].
    fn start_attach(
        &mut self,
        request: AttachRequest,
        reply: oneshot::Sender<Result<PluginEndpoint, ApiError>>,
    ) {
        self.start_attach_at(request, reply, Placement::New);
    }

    /// [`Driver::start_attach`], with the tap made anew or taken over from an earlier run.
    fn start_attach_at(
        &mut self,
        request: AttachRequest,
        reply: oneshot::Sender<Result<PluginEndpoint, ApiError>>,
        placement: Placement,
    ) {
        let Some(plugin) = &self.plugin else {
            let _ = reply.send(Err(ApiError::new(
                ApiErrorCode::Unavailable,
                "no plugin API",
            )));
            return;
        };
        // Without a namespace the tap stays here, for the caller to move (Docker).
        let netns = request.netns.clone();
        if let Some(netns) = netns.as_ref().filter(|n| !n.exists()) {
            let _ = reply.send(Err(ApiError::netns_not_found(netns)));
            return;
        }
        let (store, worker, frames, loopback, applied) = (
            plugin.store.clone(),
            plugin.worker.clone(),
            plugin.frames.clone(),
            plugin.loopback.clone(),
            plugin.applied.clone(),
        );
        let (identities, credentials) = (plugin.identities.clone(), plugin.credentials.clone());
        let received = Instant::now();
        tokio::spawn(async move {
            let record = store.load(request.key.as_str()).ok().flatten();
            let saved = record
                .as_ref()
                .and_then(|r| r.identity.parse::<Identity>().ok())
                .filter(Identity::has_secret);
            let saved_config = record
                .as_ref()
                .filter(|_| saved.is_some())
                .and_then(|r| r.saved_config(request.network))
                .map(Box::new);
            let identity = match saved {
                Some(identity) => identity,
                None => identities.take().await,
            };
            // With controller credentials, the member is authorized before it first asks for
            // its config, so that the first answer is a config. A restored endpoint (with a
            // saved config) was authorized before: an administrator's later decision stands.
            let authorize_error = match (&credentials, &saved_config) {
                (Some(credentials), None) => authorize_member(
                    credentials,
                    request.network,
                    identity.address(),
                    Some(request.key.as_str()),
                )
                .await
                .map_err(|e| {
                    tracing::warn!(key = %request.key, "cannot authorize the endpoint: {e}");
                    e.to_string()
                })
                .err(),
                _ => None,
            };
            let options = crate::endpoints::PortOptions::of(&request);
            let (port, sandbox) = match placement {
                Placement::New => (
                    TapEndpointPort::open(
                        worker,
                        identity.address(),
                        request.network,
                        netns.map(NetnsRef::path),
                        request.if_name.as_str(),
                        (frames, applied),
                        options,
                    )
                    .await
                    .map(Box::new)
                    .map_err(|e| ApiError::new(ApiErrorCode::Internal, e.to_string())),
                    None,
                ),
                Placement::Reopen { sandbox } => {
                    let location = sandbox
                        .clone()
                        .map_or_else(|| NetnsRef::of_process(std::process::id()), NetnsRef::path);
                    let port = TapEndpointPort::reopen(
                        worker,
                        identity.address(),
                        request.network,
                        location.clone(),
                        request.if_name.as_str(),
                        (frames, applied),
                        options,
                    )
                    .await
                    .map_err(|e| ApiError::new(ApiErrorCode::Internal, e.to_string()))
                    .and_then(|port| {
                        port.map(Box::new).ok_or_else(|| {
                            ApiError::new(
                                ApiErrorCode::InterfaceMissing,
                                format!(
                                    "the interface of endpoint {} is not in {location} any more",
                                    request.key
                                ),
                            )
                        })
                    });
                    (port, sandbox)
                }
            };
            let _ = loopback
                .send(PluginRequest::Opened {
                    request,
                    identity: Box::new(identity),
                    saved_config,
                    authorize_error,
                    port,
                    sandbox,
                    received,
                    reply,
                })
                .await;
        });
    }

    /// Caches a peer's identity in `peers.d`, unless the peer is one of our own endpoints:
    /// their identities live in `endpoints.d`, and would otherwise pile up in `peers.d`, one
    /// per container that ever talked to a neighbour here.
    fn cache_peer(&self, identity: Identity) {
        if self.endpoints.contains_key(&identity.address()) {
            return;
        }
        // A cache write (with its fsync) must not hold up the packet loop.
        if let Some(home) = self.home.clone() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = home.save_peer(&identity) {
                    tracing::warn!("cannot cache a peer identity: {e}");
                }
            });
        }
    }

    fn find_endpoints(&self, target: &EndpointRef) -> Vec<Address> {
        self.endpoints
            .iter()
            .filter(|(_, e)| {
                e.request
                    .as_ref()
                    .is_some_and(|r| target.matches(&describe(e, r)))
            })
            .map(|(a, _)| *a)
            .collect()
    }

    /// Removes an endpoint and its interface; its record goes too, or with `keep_identity`
    /// is reduced to the key's identity and config.
    fn drop_endpoint(&mut self, address: Address, keep_identity: bool) -> Option<EndpointKey> {
        let mut endpoint = self.remove_endpoint(address)?;
        endpoint.port.discard();
        let key = endpoint.request.as_ref().map(|r| r.key.clone());
        if let (Some(plugin), Some(key)) = (&self.plugin, &key) {
            let kept = if keep_identity {
                save_kept_identity(&plugin.store, &endpoint);
                true
            } else {
                if let Err(e) = plugin.store.remove(key.as_str()) {
                    tracing::warn!(%key, "cannot remove the endpoint record: {e}");
                }
                // Its identity may have been cached while it was not yet hosted here (a
                // remote node met it first); with the identity gone, it would stay forever.
                if let Some(home) = self.home.clone() {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = home.forget_peer(address) {
                            tracing::warn!("cannot remove a peer identity: {e}");
                        }
                    });
                }
                false
            };
            tracing::info!(%key, identity_kept = kept, "endpoint removed");
        }
        key
    }

    /// A detach that found no hosted endpoint: the record of the key (a kept identity, or an
    /// endpoint that was not restored) is forgotten or, with `keepIdentity`, reduced to its
    /// identity; a persistent tap it left in our namespace is deleted.
    fn forget_unhosted(&mut self, request: &DetachRequest) {
        let (Some(plugin), Some(key)) = (&self.plugin, &request.key) else {
            return;
        };
        if self.endpoints.values().any(|e| e.key == key.as_str()) {
            // Another attachment has the key now; its record is not this detach's.
            return;
        }
        let Ok(Some(mut record)) = plugin.store.load(key.as_str()) else {
            return;
        };
        let attached = record
            .attach
            .clone()
            .and_then(|v| serde_json::from_value::<AttachRequest>(v).ok());
        let target = request.target();
        if let Some(attached) = &attached {
            if !target.matches_request(attached) {
                return;
            }
            if attached.netns.is_none() {
                let (worker, if_name) = (plugin.worker.clone(), attached.if_name.clone());
                tokio::spawn(async move {
                    let here = NetnsRef::of_process(std::process::id());
                    if let Ok(true) = worker.delete_link(here, if_name.as_str()).await {
                        tracing::info!(interface = %if_name, "deleted a detached endpoint's tap");
                    }
                });
            }
        }
        if request.keep_identity {
            record.attach = None;
            record.sandbox = None;
            if let Err(e) = plugin.store.save(&record) {
                tracing::warn!(%key, "cannot save the kept identity: {e}");
            }
        } else if let Err(e) = plugin.store.remove(key.as_str()) {
            tracing::warn!(%key, "cannot remove the endpoint record: {e}");
        }
    }

    fn handle_plugin(&mut self, request: PluginRequest) {
        match request {
            PluginRequest::Attach { request, reply } => {
                // The same attachment again: answer with what is there (when ready).
                let same = self.endpoints.iter().find_map(|(a, e)| {
                    let r = e.request.as_ref()?;
                    (r.key == request.key
                        && r.container_id == request.container_id
                        && r.if_name == request.if_name
                        && r.network == request.network)
                        .then_some(*a)
                });
                if let Some(address) = same {
                    self.update_extras(address, &request);
                    self.wait_for(address, &request, reply, None, Instant::now());
                    return;
                }
                // A new container under the key replaces the old endpoint.
                let stale: Vec<Address> = self
                    .endpoints
                    .iter()
                    .filter(|(_, e)| e.request.as_ref().is_some_and(|r| r.key == request.key))
                    .map(|(a, _)| *a)
                    .collect();
                // The identity follows the key.
                for address in stale {
                    self.drop_endpoint(address, true);
                }
                self.start_attach(request, reply);
            }
            PluginRequest::Opened {
                request,
                identity,
                saved_config,
                authorize_error,
                port,
                sandbox,
                received,
                reply,
            } => {
                let mut port = match port {
                    Ok(port) => port,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let now = wall_clock();
                if request.host_access {
                    self.give_host_access(now, request.network);
                }
                let mut config = NodeConfig::new((*identity).clone(), self.node.planet().clone());
                config.moons = self.node.moons().to_vec();
                // The memory-hard hash of new peers runs on the validator's thread.
                config.defer_identity_validation = true;
                config.rng_seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
                let mut node = Node::new(config, now);
                // A saved config puts the addresses back at once; the controller is asked
                // for a fresh one all the same.
                if let Some(saved) = &saved_config {
                    port.configure(saved);
                }
                node.join(now, request.network, saved_config.map(|c| *c));
                // Addresses from the caller's IPAM are announced like managed ones, so that
                // ARP and NDP for them reach this endpoint.
                if !request.extra_ips.is_empty() {
                    node.set_multicast_subscriptions(now, request.network, extra_groups(&request));
                }
                let address = node.address();
                self.add_endpoint(Endpoint {
                    key: request.key.as_str().to_string(),
                    network: request.network,
                    node,
                    port,
                    request: Some(request.clone()),
                    sandbox,
                    counters: EndpointCounters::default(),
                });
                if let (Some(plugin), Some(endpoint)) = (&self.plugin, self.endpoints.get(&address))
                {
                    save_record(&plugin.store, endpoint, None);
                }
                self.wait_for(address, &request, reply, authorize_error, received);
            }
            PluginRequest::Detach { request, reply } => {
                let found = self.find_endpoints(&request.target());
                let detached = !found.is_empty();
                for address in found {
                    self.drop_endpoint(address, request.keep_identity);
                }
                // Not hosted (the agent restarted after the namespace went, or only the
                // identity is kept): the record.
                if !detached {
                    self.forget_unhosted(&request);
                }
                let _ = reply.send(Ok(DetachResponse { detached }));
            }
            PluginRequest::Sandbox { request, reply } => {
                let answer = self.set_sandbox(request);
                let _ = reply.send(answer);
            }
            PluginRequest::Check { target, reply } => {
                let found = self.find_endpoints(&target);
                let answer = match found.first().and_then(|a| self.endpoints.get(a)) {
                    Some(e) => {
                        let d = describe(e, e.request.as_ref().expect("found by request"));
                        d.readiness().map(|()| d)
                    }
                    None => Err(ApiError::new(ApiErrorCode::NotFound, "no such endpoint")),
                };
                // Ready as far as the node knows: the interface must still be in the
                // container too (somebody may have deleted it by hand).
                let (Ok(endpoint), Some(plugin)) = (&answer, &self.plugin) else {
                    let _ = reply.send(answer);
                    return;
                };
                let Some(netns) = endpoint.netns.clone() else {
                    let _ = reply.send(answer);
                    return;
                };
                let worker = plugin.worker.clone();
                let if_name = endpoint.if_name.as_str().to_string();
                tokio::spawn(async move {
                    let answer = match worker.link_exists(NetnsRef::path(netns), &if_name).await {
                        Ok(true) => answer,
                        Ok(false) => Err(ApiError::new(
                            ApiErrorCode::InterfaceMissing,
                            format!("interface {if_name} is missing in the container"),
                        )),
                        Err(e) => Err(ApiError::new(
                            ApiErrorCode::NotReady,
                            format!("cannot look at interface {if_name} in the container: {e}"),
                        )),
                    };
                    let _ = reply.send(answer);
                });
            }
            PluginRequest::Status { reply } => {
                let online = self.node.is_online(wall_clock());
                let _ = reply.send(Status {
                    ready: online,
                    address: Some(self.node.address()),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    endpoints: self.endpoints.len(),
                    reason: (!online).then(|| "no root reachable yet".to_string()),
                });
            }
            PluginRequest::Gc { request, reply } => {
                let gone: Vec<Address> = self
                    .endpoints
                    .iter()
                    .filter(|(_, e)| {
                        e.request
                            .as_ref()
                            .is_some_and(|r| !request.keeps(&describe(e, r)))
                    })
                    .map(|(a, _)| *a)
                    .collect();
                let removed = gone
                    .into_iter()
                    .filter_map(|a| self.drop_endpoint(a, false))
                    .collect();
                let _ = reply.send(Ok(GcResponse {
                    removed,
                    failed: Vec::new(),
                }));
            }
            PluginRequest::List { reply } => {
                let list = self
                    .endpoints
                    .values()
                    .filter_map(|e| e.request.as_ref().map(|r| describe(e, r)))
                    .collect();
                let _ = reply.send(Ok(list));
            }
        }
    }

    /// `POST /v1/sandbox`: records where the runtime moved the interface of an endpoint
    /// without `netns`.
    fn set_sandbox(&mut self, request: SandboxRequest) -> Result<PluginEndpoint, ApiError> {
        let target = request.target();
        let address = self
            .find_endpoints(&target)
            .first()
            .copied()
            .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, "no such endpoint"))?;
        let endpoint = self
            .endpoints
            .get_mut(&address)
            .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, "no such endpoint"))?;
        let attached = endpoint
            .request
            .clone()
            .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, "no such endpoint"))?;
        if attached.netns.is_some() {
            return Err(ApiError::invalid(format!(
                "endpoint {} was attached into a namespace by the agent; only an endpoint \
                 attached without netns has a sandbox",
                request.key
            )));
        }
        if endpoint.sandbox != request.sandbox {
            tracing::info!(key = %request.key, sandbox = ?request.sandbox, "endpoint sandbox");
            endpoint.sandbox = request.sandbox;
            if let Some(plugin) = &self.plugin {
                save_record(&plugin.store, endpoint, None);
            }
        }
        Ok(describe(endpoint, &attached))
    }

    /// The same attachment again with other IPAM addresses or routes (a CNI plugin attaches
    /// first, then delegates to IPAM when the network assigns nothing): applied, announced
    /// and kept with the endpoint's record.
    fn update_extras(&mut self, address: Address, request: &AttachRequest) {
        let Some(endpoint) = self.endpoints.get_mut(&address) else {
            return;
        };
        let Some(stored) = endpoint.request.as_mut() else {
            return;
        };
        if stored.extra_ips == request.extra_ips && stored.extra_routes == request.extra_routes {
            return;
        }
        stored.extra_ips = request.extra_ips.clone();
        stored.extra_routes = request.extra_routes.clone();
        let now = wall_clock();
        let network = endpoint.network;
        endpoint
            .port
            .set_options(crate::endpoints::PortOptions::of(request));
        if let Some(config) = endpoint.node.network(network).and_then(|n| n.config) {
            endpoint.port.configure(&config);
        }
        endpoint
            .node
            .set_multicast_subscriptions(now, network, extra_groups(request));
        if let Some(plugin) = &self.plugin {
            save_record(&plugin.store, endpoint, None);
        }
    }

    fn wait_for(
        &mut self,
        address: Address,
        request: &AttachRequest,
        reply: oneshot::Sender<Result<PluginEndpoint, ApiError>>,
        authorize_error: Option<String>,
        received: Instant,
    ) {
        let Some(plugin) = self.plugin.as_mut() else {
            return;
        };
        plugin.waiters.push(AttachWaiter {
            address,
            // From the request's arrival: opening the endpoint may have taken a while, and the
            // server gives up a short grace after the wait.
            deadline: received + request.wait_duration(),
            authorize_error,
            reply,
        });
        self.answer_waiters();
    }

    /// Answers attaches whose endpoint is ready, or whose wait is over.
    fn answer_waiters(&mut self) {
        let Some(plugin) = self.plugin.as_mut() else {
            return;
        };
        let now = Instant::now();
        let endpoints = &self.endpoints;
        let waiters = std::mem::take(&mut plugin.waiters);
        for waiter in waiters {
            let Some(e) = endpoints.get(&waiter.address) else {
                let _ = waiter.reply.send(Err(ApiError::new(
                    ApiErrorCode::NotFound,
                    "the endpoint was removed",
                )));
                continue;
            };
            let Some(request) = e.request.as_ref() else {
                continue;
            };
            let described = describe(e, request);
            if described.state == EndpointState::Ready {
                let _ = waiter.reply.send(Ok(described));
            } else if now >= waiter.deadline {
                let answer = described.readiness().map(|()| described).map_err(|mut e| {
                    if let (ApiErrorCode::NotAuthorized, Some(why)) =
                        (e.code, &waiter.authorize_error)
                    {
                        e.message = format!(
                            "{} (the agent tried to authorize it with its controller \
                             credentials: {why})",
                            e.message
                        );
                    }
                    e
                });
                let _ = waiter.reply.send(answer);
            } else if !waiter.reply.is_closed() {
                plugin.waiters.push(waiter);
            }
        }
    }

    /// When the first pending attach's wait runs out.
    fn earliest_waiter(&self) -> Option<Instant> {
        let plugin = self.plugin.as_ref()?;
        plugin.waiters.iter().map(|w| w.deadline).min()
    }

    /// The earliest deadline of all hosted nodes.
    fn next_deadline(&self) -> Timestamp {
        self.endpoints
            .values()
            .map(|e| e.node.poll_timeout())
            .fold(self.node.poll_timeout(), Timestamp::min)
    }

    /// Fires the timers that are due, on every node.
    fn handle_timeouts(&mut self, now: Timestamp) {
        if now >= self.node.poll_timeout() {
            self.node.handle_timeout(now);
        }
        for endpoint in self.endpoints.values_mut() {
            if now >= endpoint.node.poll_timeout() {
                endpoint.node.handle_timeout(now);
            }
        }
    }

    /// One datagram, to the node it is addressed to.
    fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, data: &[u8]) {
        match datagram_destination(data).and_then(|a| self.endpoints.get_mut(&a)) {
            Some(endpoint) => endpoint.node.handle_datagram(now, from, data),
            None => self.node.handle_datagram(now, from, data),
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
                ports.apply(nwid, Some(config));
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
        let mut datagrams = RecvBatch::new();
        self.restore_networks();
        let mut tap_frames = self.tap_frames.take();
        let mut endpoint_frames = self.endpoint_frames.take();
        let mut verdicts = self.verdicts.take();
        let mut plugin_requests = self.plugin.as_mut().map(|p| {
            let (_, empty) = mpsc::channel(1);
            std::mem::replace(&mut p.requests, empty)
        });
        self.restore_endpoints();
        let mut multicast_scan = tokio::time::interval(MULTICAST_SCAN_PERIOD);
        let applied = self.plugin.as_ref().map(|p| p.applied.clone());
        // Anything the node queued at construction (first HELLOs) goes out now.
        self.flush().await?;
        // One timer for the whole run, moved only when what it waits for changes: making a
        // new one every turn cost a timer-wheel insert and removal per packet.
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        // The deadline and waiter the timer is set for; `None` after it fired.
        let mut armed: Option<(Timestamp, Option<Instant>)> = None;
        loop {
            let deadline = self.next_deadline();
            // An attach whose wait runs out is answered then, not at the next unrelated wake-up.
            let waiter = self.earliest_waiter();
            if armed != Some((deadline, waiter)) {
                let mut wake = instant_of(deadline, wall_clock());
                if let Some(waiter) = waiter {
                    wake = wake.min(waiter);
                }
                timer.as_mut().reset(wake.into());
                armed = Some((deadline, waiter));
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                received = self.transport.recv_batch(&mut datagrams) => match received {
                    Ok(()) => {
                        let now = wall_clock();
                        for (from, data) in datagrams.iter() {
                            // Slots of datagrams that could not be used are empty.
                            if !data.is_empty() {
                                self.handle_datagram(now, from, data);
                            }
                        }
                    }
                    Err(e) => tracing::debug!("UDP receive failed: {e}"),
                },
                Some(request) = self.requests.recv() => self.handle_request(request),
                Some(first) = recv_frame(&mut tap_frames) => {
                    // This frame and whatever else the taps queued, up to a batch: one
                    // flush (and one sendmmsg) for all of them. Each buffer goes back to
                    // its reader's pool when dropped here.
                    let now = wall_clock();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some((network_id, frame)) = next {
                        self.node.handle_tap_frame(now, network_id, &frame);
                        taken += 1;
                        next = try_recv_frame(&mut tap_frames, taken);
                    }
                }
                Some(first) = recv_frame(&mut endpoint_frames) => {
                    let now = wall_clock();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some((address, frame)) = next {
                        if let Some(endpoint) = self.endpoints.get_mut(&address) {
                            let network = endpoint.network;
                            endpoint.counters.rx_packets += 1;
                            endpoint.counters.rx_bytes += frame.len() as u64;
                            endpoint.node.handle_tap_frame(now, network, &frame);
                        }
                        taken += 1;
                        next = try_recv_frame(&mut endpoint_frames, taken);
                    }
                }
                Some(request) = recv_frame(&mut plugin_requests) => self.handle_plugin(request),
                Some(verdict) = recv_verdict(&mut verdicts) => self.apply_verdict(verdict),
                () = notified(applied.as_deref()) => self.answer_waiters(),
                _ = multicast_scan.tick() => {
                    self.scan_multicast_groups();
                    self.answer_waiters();
                }
                () = &mut timer => {
                    // Set again next turn, also when it fired a little before the deadline.
                    armed = None;
                    let now = wall_clock();
                    if now >= deadline {
                        self.handle_timeouts(now);
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Hands the worker's verdict on a new identity to the node that asked.
    fn apply_verdict(&mut self, verdict: Verdict) {
        let now = wall_clock();
        let node = if verdict.node == self.node.address() {
            &mut self.node
        } else if let Some(endpoint) = self.endpoints.get_mut(&verdict.node) {
            &mut endpoint.node
        } else {
            return; // Detached meanwhile.
        };
        match verdict.valid {
            Some(valid) => node.identity_validated(now, &verdict.identity, valid),
            None => node.identity_validation_abandoned(&verdict.identity),
        }
    }

    /// Sends what the nodes queued and acts on their events.
    async fn flush(&mut self) -> Result<(), DriverError> {
        // Switched frames make more work for their receivers (a delivered frame, an ERROR
        // asking for credentials): go round until no node has anything left.
        // Identities the endpoints' nodes learned (rare: new peers only).
        let mut learned = Vec::new();
        loop {
            self.take_transmits_of_host();
            while let Some(event) = self.node.poll_event() {
                self.handle_event(event)?;
            }
            for endpoint in self.endpoints.values_mut() {
                while let Some(transmit) = endpoint.node.poll_transmit() {
                    self.outgoing.push(transmit);
                    self.outgoing_from.push(endpoint.node.address());
                }
                let store = self.plugin.as_ref().map(|p| &p.store);
                while let Some(event) = endpoint.node.poll_event() {
                    if let Event::ValidateIdentity(identity) = event {
                        self.validation_requests
                            .push((endpoint.node.address(), identity));
                        continue;
                    }
                    handle_endpoint_event(endpoint, event, &mut learned, store, &mut self.switched);
                }
            }
            for (node, identity) in self.validation_requests.drain(..) {
                self.validator.validate(node, identity);
            }
            for identity in learned.drain(..) {
                self.cache_peer(identity);
            }
            if self.switched.is_empty() {
                break;
            }
            self.switch_frames();
        }
        // Frames held back to be merged (TCP segments of one flow) go to their taps now.
        if let Some(ports) = &mut self.ports {
            ports.flush();
        }
        for endpoint in self.endpoints.values_mut() {
            endpoint.port.flush();
        }
        // What the host's events made it send (config answers, say) goes in this batch too.
        self.take_transmits_of_host();
        self.send_outgoing().await;
        self.answer_waiters();
        // Requests whose HTTP side gave up (timeout, closed connection) are forgotten.
        self.pending_echoes.retain(|p| !p.reply.is_closed());
        Ok(())
    }

    /// Moves the host node's queued datagrams to the turn's batch.
    fn take_transmits_of_host(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            self.outgoing.push(transmit);
            self.outgoing_from.push(self.node.address());
        }
    }

    /// Sends the turn's datagrams in batches, then gives each buffer back to its node.
    async fn send_outgoing(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        self.transport.send_batch(&self.outgoing).await;
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let mut owners = std::mem::take(&mut self.outgoing_from);
        for (transmit, owner) in outgoing.drain(..).zip(owners.drain(..)) {
            self.recycle(owner, transmit.data);
        }
        self.outgoing = outgoing;
        self.outgoing_from = owners;
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
                self.cache_peer(identity);
            }
            Event::ValidateIdentity(identity) => {
                self.validator.validate(self.node.address(), identity);
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
            Event::SwitchedFrame {
                network_id,
                to,
                ethertype,
                payload,
            } => self.switched.push(SwitchedFrame {
                from: self.node.address(),
                network_id,
                to,
                ethertype,
                payload,
            }),
            Event::Frame { network_id, frame } => {
                if let Some(ports) = &mut self.ports {
                    ports.deliver(network_id, &frame);
                }
                self.node.recycle(frame);
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

    /// Joins this host's own node to a network, with a tap of its own.
    fn join_host(&mut self, now: Timestamp, network_id: NetworkId, settings: LocalSettings) {
        tracing::info!(network = %network_id, "joining network");
        let mac = Mac::from_address(self.node.address(), network_id);
        if let Some(ports) = self.ports.as_mut() {
            ports.open(
                network_id,
                mac,
                node_core::vl2::config::DEFAULT_MTU,
                settings,
                true,
            );
        }
        self.node.join(now, network_id, None);
    }

    /// For an attach that asks for host access: the host joins the endpoint's network (once)
    /// so that it reaches its containers, authorized with the controller credentials when
    /// the agent has them.
    fn give_host_access(&mut self, now: Timestamp, network_id: NetworkId) {
        if self.node.network(network_id).is_some() {
            return;
        }
        self.join_host(now, network_id, LocalSettings::default());
        let Some(credentials) = self.plugin.as_ref().and_then(|p| p.credentials.clone()) else {
            return;
        };
        let host = self.node.address();
        tokio::spawn(async move {
            if let Err(e) =
                authorize_member(&credentials, network_id, host, Some("zt-agent host")).await
            {
                tracing::warn!(network = %network_id, "cannot authorize this host: {e}");
            }
        });
    }

    fn handle_request(&mut self, request: ApiRequest) {
        let now = wall_clock();
        match request {
            ApiRequest::Metrics { reply } => {
                let _ = reply.send(crate::metrics::render(
                    &self.node,
                    self.endpoints.values(),
                    now,
                ));
            }
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
                    let mut settings = LocalSettings::default();
                    settings.update_from_json(&body);
                    self.join_host(now, network_id, settings);
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

/// What an endpoint's node asks of its host.
fn handle_endpoint_event(
    endpoint: &mut Endpoint,
    event: Event,
    learned: &mut Vec<Identity>,
    store: Option<&EndpointStore>,
    switched: &mut Vec<SwitchedFrame>,
) {
    match event {
        Event::Frame { network_id, frame } if network_id == endpoint.network => {
            endpoint.counters.tx_packets += 1;
            endpoint.counters.tx_bytes += frame.len() as u64;
            endpoint.port.deliver(&frame);
            endpoint.node.recycle(frame);
        }
        Event::SwitchedFrame {
            network_id,
            to,
            ethertype,
            payload,
        } => switched.push(SwitchedFrame {
            from: endpoint.node.address(),
            network_id,
            to,
            ethertype,
            payload,
        }),
        Event::NetworkConfigUpdated {
            network_id,
            config,
            dictionary,
        } if network_id == endpoint.network => {
            tracing::info!(key = %endpoint.key, network = %network_id, "endpoint config updated");
            endpoint.port.configure(&config);
            // Kept with the endpoint's record, to be applied at once after a restart. Written
            // here, in order with the record's other writes and its removal (configs are
            // rare: at attach and when the controller changes something).
            if let Some(store) = store {
                save_record(store, endpoint, Some(&dictionary));
            }
        }
        Event::NetworkStatusChanged { network_id, status } => {
            tracing::info!(key = %endpoint.key, network = %network_id, status = status.as_str(), "endpoint network status");
        }
        Event::PeerLearned(identity) => learned.push(identity),
        Event::IdentityCollision => {
            tracing::error!(key = %endpoint.key, "endpoint identity collides with another node's");
        }
        other => tracing::debug!(key = %endpoint.key, "endpoint event ignored: {other:?}"),
    }
}

/// Writes an endpoint's record: its identity, the attach that made it and its network's
/// config (`dictionary`, or the node's current one), everything a restart needs.
fn save_record(store: &EndpointStore, endpoint: &Endpoint, dictionary: Option<&[u8]>) {
    let Some(request) = &endpoint.request else {
        return;
    };
    let config = match dictionary {
        Some(bytes) => Some(hex::encode(bytes)),
        None => endpoint
            .node
            .network(endpoint.network)
            .and_then(|n| n.config)
            .and_then(|c| c.to_dictionary().ok())
            .map(|d| hex::encode(d.into_bytes())),
    };
    let record = EndpointRecord {
        key: request.key.as_str().to_string(),
        network: format!("{:016x}", request.network.0),
        netns: request.netns.clone().unwrap_or_default(),
        if_name: request.if_name.as_str().to_string(),
        identity: endpoint
            .node
            .identity()
            .to_secret_string()
            .unwrap_or_default(),
        attach: serde_json::to_value(request).ok(),
        sandbox: endpoint.sandbox.clone(),
        config,
    };
    if let Err(e) = store.save(&record) {
        tracing::error!(key = %record.key, "cannot save the endpoint record: {e}");
    }
}

/// Reduces an endpoint's record to its key's identity and network config, for a later
/// attach with the key (a detach with `keepIdentity`).
fn save_kept_identity(store: &EndpointStore, endpoint: &Endpoint) {
    save_record(store, endpoint, None);
    let Ok(Some(mut record)) = store.load(&endpoint.key) else {
        return;
    };
    record.attach = None;
    record.sandbox = None;
    if let Err(e) = store.save(&record) {
        tracing::error!(key = %record.key, "cannot save the kept identity: {e}");
    }
}

/// The multicast groups that find the addresses a caller's IPAM gave an endpoint.
fn extra_groups(request: &AttachRequest) -> Vec<node_core::vl2::MulticastGroup> {
    request
        .extra_ips
        .iter()
        .map(|p| match p.address {
            std::net::IpAddr::V4(v4) => node_core::vl2::MulticastGroup::ipv4_arp(v4),
            std::net::IpAddr::V6(v6) => node_core::vl2::MulticastGroup::ipv6_solicited_node(v6),
        })
        .collect()
}

/// Reads and removes the detach bodies recorded in `dir` (bad files are removed too).
fn take_pending_deletes(dir: &std::path::Path) -> Vec<EndpointRef> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<EndpointRef>(&b).ok())
        {
            // A target that names nothing would match every endpoint.
            Some(target) if target.key.is_some() || target.container_id.is_some() => {
                targets.push(target)
            }
            _ => tracing::warn!("ignoring unreadable pending delete {}", path.display()),
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    targets
}

/// A notification, or never when there is nothing to notify.
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// The next frame from a channel, or never when there is none.
async fn recv_verdict(verdicts: &mut Option<mpsc::UnboundedReceiver<Verdict>>) -> Option<Verdict> {
    match verdicts {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_frame<F>(frames: &mut Option<mpsc::Receiver<F>>) -> Option<F> {
    match frames {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Another frame already queued on a channel, while fewer than [`FRAME_BATCH`] were
/// `taken` this turn.
fn try_recv_frame<F>(frames: &mut Option<mpsc::Receiver<F>>, taken: usize) -> Option<F> {
    if taken >= FRAME_BATCH {
        return None;
    }
    frames.as_mut().and_then(|rx| rx.try_recv().ok())
}

/// The monotonic instant at which wall-clock `deadline` falls, seen from `now`.
fn instant_of(deadline: Timestamp, now: Timestamp) -> Instant {
    let wait = u64::try_from(deadline.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
    // A far-off deadline is capped so an absurd value cannot overflow Instant.
    Instant::now() + Duration::from_millis(wait.min(ECHO_TIMEOUT.as_millis() as u64 * 12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::mkworld::WorldSpec;
    use crate::home::tests::TempDir;
    use crate::transport::UdpTransport;
    use node_core::node::NodeConfig;
    use node_core::vl2::config::NetworkConfig;
    use node_core::vl2::NetworkId;
    use node_core::Identity;
    use rand_core::OsRng;

    /// A port whose frames and configs land in channels.
    struct ChannelPort {
        frames: mpsc::UnboundedSender<Vec<u8>>,
        configs: mpsc::UnboundedSender<NetworkConfig>,
    }

    impl EndpointPort for ChannelPort {
        fn deliver(&mut self, frame: &[u8]) {
            let _ = self.frames.send(frame.to_vec());
        }
        fn configure(&mut self, config: &NetworkConfig) {
            let _ = self.configs.send(config.clone());
        }
    }

    #[test]
    fn datagrams_are_routed_by_their_destination_field() {
        let mut packet = vec![0u8; 28];
        packet[8..13].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89]);
        assert_eq!(
            datagram_destination(&packet),
            Some(Address::from_u64(0x01_2345_6789))
        );
        assert_eq!(datagram_destination(&packet[..12]), None);
    }

    /// One agent's UDP port hosts its own node (root and controller) and two endpoint nodes
    /// on one of its networks: the endpoints get configs from the controller and a frame
    /// from one reaches the other, all through the one socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_share_the_agents_port() {
        let ids: Vec<Identity> = (0..3).map(|_| Identity::generate(&mut OsRng)).collect();
        let transport = UdpTransport::bind(0).expect("bind");
        let port = transport.port().expect("port");
        let mut spec = crate::cli::mkworld::template(
            node_core::world::WorldKind::Planet,
            &[ids[0].public_only()],
        );
        spec["roots"][0]["stableEndpoints"] = serde_json::json!([format!("127.0.0.1/{port}")]);
        let planet = WorldSpec::parse(&spec.to_string(), 1).expect("spec").make();
        let now = wall_clock();
        let host = Node::new(NodeConfig::new(ids[0].clone(), planet.clone()), now);

        let dir = TempDir::new("endpoints");
        let mut controller =
            ControllerService::open(dir.path(), ids[0].clone(), 7).expect("controller");
        let created = controller.handle_http(
            now,
            "POST",
            "/controller/network",
            br#"{"v4AssignMode":{"zt":true},"ipAssignmentPools":[{"ipRangeStart":"10.147.20.10","ipRangeEnd":"10.147.20.99"}],"routes":[{"target":"10.147.20.0/24"}]}"#,
        );
        let nwid_text = created.body["id"].as_str().expect("id").to_string();
        let nwid = NetworkId(u64::from_str_radix(&nwid_text, 16).expect("hex"));
        for id in &ids[1..] {
            let answer = controller.handle_http(
                now,
                "POST",
                &format!("/controller/network/{nwid_text}/member/{}", id.address()),
                br#"{"authorized":true}"#,
            );
            assert_eq!(answer.status, 200, "{:?}", answer.body);
        }

        let (_requests_tx, requests) = mpsc::channel(4);
        let local = LocalInfo {
            port,
            home_dir: dir.path().to_path_buf(),
        };
        let (frames_tx, frames_rx) = mpsc::channel(16);
        let mut driver = Driver::new(host, transport, None, requests, local)
            .with_controller(controller)
            .with_endpoint_frames(frames_rx);
        let mut delivered = Vec::new();
        let mut configured = Vec::new();
        for (i, id) in ids[1..].iter().enumerate() {
            let (ftx, frx) = mpsc::unbounded_channel();
            let (ctx, crx) = mpsc::unbounded_channel();
            let mut config = NodeConfig::new(id.clone(), planet.clone());
            config.rng_seed = i as u64;
            let mut node = Node::new(config, now);
            node.join(now, nwid, None);
            driver.add_endpoint(Endpoint {
                key: format!("test/{i}"),
                network: nwid,
                node,
                port: Box::new(ChannelPort {
                    frames: ftx,
                    configs: ctx,
                }),
                request: None,
                sandbox: None,
                counters: EndpointCounters::default(),
            });
            delivered.push(frx);
            configured.push(crx);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(async move {
            let _ = stopped.await;
        }));

        for (i, configs) in configured.iter_mut().enumerate() {
            let config = tokio::time::timeout(Duration::from_secs(15), configs.recv())
                .await
                .unwrap_or_else(|_| panic!("endpoint {i} got no config"))
                .expect("config");
            assert_eq!(config.issued_to, ids[i + 1].address());
            assert_eq!(config.static_ips.len(), 1, "one IPv4 address from the pool");
        }
        // A unicast frame from endpoint 0's MAC to endpoint 1's.
        let (a, b) = (ids[1].address(), ids[2].address());
        let mut frame = Vec::new();
        frame.extend_from_slice(&Mac::from_address(b, nwid).0);
        frame.extend_from_slice(&Mac::from_address(a, nwid).0);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(b"\x45\x00\x00\x14 a frame between endpoints");
        let mut got = None;
        for _ in 0..20 {
            frames_tx
                .send((a, crate::ports::FrameBuf::copy_of(&frame)))
                .await
                .expect("driver runs");
            if let Ok(Some(f)) =
                tokio::time::timeout(Duration::from_millis(500), delivered[1].recv()).await
            {
                got = Some(f);
                break;
            }
        }
        assert_eq!(
            got.as_deref(),
            Some(&frame[..]),
            "endpoint 1 receives the frame"
        );
        let _ = stop.send(());
        task.await.expect("join").expect("clean stop");
    }
}
