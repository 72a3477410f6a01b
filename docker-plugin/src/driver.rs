//! The network driver and the IPAM driver: each libnetwork call, checked, turned into agent
//! calls and state changes, and answered. `docs/docker-plugin-design.md` explains the flow;
//! in short, IPAM's RequestAddress attaches a new member (the agent answers once the
//! controller configured it), CreateEndpoint finds that member again by the address Docker
//! passes, Join hands its tap to Docker, DeleteEndpoint detaches it.
//!
//! State changes are written to disk before the answer that depends on them is sent
//! ([`Driver::update`]). The state lock is never held across an agent call: a reservation is
//! recorded (phase `Attaching`) before its attach is sent and completed after it returns.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use node_core::vl2::NetworkId;
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use zt_agent::plugin_api::check_namespace_path;
use zt_agent::plugin_api::{
    AttachRequest, ContainerId, Endpoint, EndpointKey, ErrorCode, GcRequest, InterfaceName,
    IpPrefix, MAX_ATTACH_WAIT, MAX_MTU, MIN_MTU,
};

use crate::agent::{Agent, AgentError, DetachRequest, SandboxRequest};
use crate::protocol::{self, *};
use crate::state::{
    key_slot, now, KeptKey, Network, Phase, Pool, Reservation, State, StateError, StateStore,
};

/// The ZeroTier network option of `docker network create -o` (and `--ipam-opt`).
pub const NETWORK_OPTION: &str = "zerotier.network";
/// Its short form.
pub const SHORT_NETWORK_OPTION: &str = "network";
/// Seconds an attach may wait for the member (`-o zerotier.wait=N`).
pub const WAIT_OPTION: &str = "zerotier.wait";
/// The stable endpoint key (`--driver-opt zerotier.key=NAME`).
pub const KEY_OPTION: &str = "zerotier.key";
/// Docker's prefix for the interface name in the container: `eth0`, `eth1`...
pub const CONTAINER_IF_PREFIX: &str = "eth";
/// Host-side interface names are this and the reservation ID (15 bytes in all).
pub const HOST_IF_PREFIX: &str = "ztd";
/// The IPAM driver's address space names.
pub const LOCAL_ADDRESS_SPACE: &str = "zerotier";
pub const GLOBAL_ADDRESS_SPACE: &str = "zerotier-global";
/// An unbound pool older than this is a leftover of a failed network creation.
pub const STALE_POOL_SECS: u64 = 120;
/// Longest stable key name.
pub const MAX_KEY_NAME: usize = 64;
/// The default attach wait: under the 30 s after which Docker's plugin client may give up.
pub const DEFAULT_ATTACH_WAIT_SECS: u64 = 25;
/// A reservation that got no endpoint in this long is a leftover (libnetwork calls
/// CreateEndpoint right after RequestAddress, or releases the address).
pub const STALE_RESERVATION_SECS: u64 = 600;
/// How often queued detaches are retried.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// How the driver behaves.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The agent's `owner` of this plugin's endpoints (and of its gc).
    pub owner: String,
    /// Seconds an attach waits for the member, unless the network says `zerotier.wait`.
    pub attach_wait: u64,
    /// Failed members kept for reuse per ZeroTier network.
    pub max_spares: usize,
    /// Whether to gc the owner's endpoints the state does not know, at start.
    pub gc_at_start: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            owner: "docker".into(),
            attach_wait: DEFAULT_ATTACH_WAIT_SECS,
            max_spares: 4,
            gc_at_start: true,
        }
    }
}

/// What can make a call fail; the text is what `docker` prints.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The request cannot be served as it is; the message says what to change.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("cannot save the plugin's state: {0}")]
    State(#[from] StateError),
}

fn refuse<T>(message: impl Into<String>) -> Result<T, PluginError> {
    Err(PluginError::Refused(message.into()))
}

/// The driver: state, its file, and the agent.
pub struct Driver {
    agent: Arc<dyn Agent>,
    store: StateStore,
    state: Mutex<State>,
    config: DriverConfig,
    /// Attaches hold it shared and the start-up gc exclusively, so that the gc's list of
    /// valid keys cannot miss a member attached while it runs.
    gc_gate: tokio::sync::RwLock<()>,
    /// Set once an agent without `/v1/sandbox` has been reported.
    sandbox_unsupported: AtomicBool,
}

impl Driver {
    /// A driver over the state in `store` (which must load).
    pub fn new(
        agent: Arc<dyn Agent>,
        store: StateStore,
        config: DriverConfig,
    ) -> Result<Self, StateError> {
        let state = store.load()?;
        Ok(Self {
            agent,
            store,
            state: Mutex::new(state),
            config,
            gc_gate: tokio::sync::RwLock::new(()),
            sandbox_unsupported: AtomicBool::new(false),
        })
    }

    /// A copy of the state, for tests and diagnostics.
    pub fn snapshot(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves one call, `method` being `Kind.Method` (`NetworkDriver.Join`). `Ok(None)` is
    /// a method this plugin does not have (HTTP 404).
    pub async fn handle(&self, method: &str, body: &[u8]) -> Result<Option<Value>, PluginError> {
        let answer = match method {
            "Plugin.Activate" => to_value(ActivateResponse {
                implements: vec!["NetworkDriver".into(), "IpamDriver".into()],
            }),
            "NetworkDriver.GetCapabilities" => to_value(CapabilitiesResponse {
                scope: "local".into(),
                // ZeroTier reaches past this host, like an overlay.
                connectivity_scope: "global".into(),
            }),
            "NetworkDriver.CreateNetwork" => {
                self.create_network(parse_body(body)?).await?;
                json!({})
            }
            "NetworkDriver.DeleteNetwork" => {
                self.delete_network(parse_body(body)?).await?;
                json!({})
            }
            "NetworkDriver.AllocateNetwork" => {
                // Swarm managers only; a local-scope driver is never asked. Nothing to do.
                let _: AllocateNetworkRequest = parse_body(body)?;
                to_value(AllocateNetworkResponse::default())
            }
            "NetworkDriver.FreeNetwork" => {
                let _: NetworkRequest = parse_body(body)?;
                json!({})
            }
            "NetworkDriver.CreateEndpoint" => to_value(self.create_endpoint(parse_body(body)?)?),
            "NetworkDriver.DeleteEndpoint" => {
                self.delete_endpoint(parse_body(body)?).await?;
                json!({})
            }
            "NetworkDriver.EndpointOperInfo" => to_value(self.endpoint_info(parse_body(body)?)),
            "NetworkDriver.Join" => to_value(self.join(parse_body(body)?).await?),
            "NetworkDriver.Leave" => {
                self.leave(parse_body(body)?).await?;
                json!({})
            }
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                // Outbound access is docker_gwbridge's or the network's own gateway's.
                let _: EndpointRequest = parse_body(body)?;
                json!({})
            }
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
                let _: Value = parse_body(body)?;
                json!({})
            }
            "NetworkDriver.GwAllocCheck" => to_value(GwAllocCheckResponse::default()),
            "IpamDriver.GetCapabilities" => to_value(IpamCapabilitiesResponse {
                requires_mac_address: false,
                requires_request_replay: false,
            }),
            "IpamDriver.GetDefaultAddressSpaces" => to_value(AddressSpacesResponse {
                local_default_address_space: LOCAL_ADDRESS_SPACE.into(),
                global_default_address_space: GLOBAL_ADDRESS_SPACE.into(),
            }),
            "IpamDriver.RequestPool" => to_value(self.request_pool(parse_body(body)?)?),
            "IpamDriver.ReleasePool" => {
                self.release_pool(parse_body(body)?)?;
                json!({})
            }
            "IpamDriver.RequestAddress" => to_value(self.request_address(parse_body(body)?).await?),
            "IpamDriver.ReleaseAddress" => {
                self.release_address(parse_body(body)?).await?;
                json!({})
            }
            FORGET_KEY_METHOD => to_value(self.forget_key(parse_body(body)?).await?),
            _ => return Ok(None),
        };
        Ok(Some(answer))
    }

    // -----------------------------------------------------------------------------------------
    // State
    // -----------------------------------------------------------------------------------------

    /// Applies `change` to a copy of the state and, when it succeeds and changed anything,
    /// writes the copy to disk and makes it the state. A failed change or write leaves the
    /// state as it was.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = state.clone();
        let value = change(&mut next)?;
        if next != *state {
            self.store.save(&next)?;
            *state = next;
        }
        Ok(value)
    }

    fn read<T>(&self, look: impl FnOnce(&State) -> T) -> T {
        look(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    // -----------------------------------------------------------------------------------------
    // Networks and pools
    // -----------------------------------------------------------------------------------------

    fn request_pool(
        &self,
        request: RequestPoolRequest,
    ) -> Result<RequestPoolResponse, PluginError> {
        if !request.sub_pool.is_empty() {
            return refuse(format!(
                "--ip-range {} is not supported: the ZeroTier network's controller assigns the \
                 addresses; leave --ip-range out",
                request.sub_pool
            ));
        }
        let zt_network = ipam_network_option(&request.options)?;
        let cidr = if request.pool.is_empty() {
            if request.v6 {
                return refuse(
                    "IPv6 on a ZeroTier Docker network needs the network's IPv6 prefix: give it \
                     with --subnet (e.g. --ipv6 --subnet fd80:56c2:e21c:0:199:9300::/88 for an \
                     RFC 4193 network), since Docker cannot work out a pool of its own here",
                );
            }
            IpPrefix {
                address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix_len: 0,
            }
        } else {
            parse_subnet(&request.pool, request.v6)?
        };
        let pool_id = format!("zt-pool-{}", random_hex(8));
        let created = now();
        self.update(|state| {
            // Leftovers of network creations that failed before CreateNetwork.
            state.pools.retain(|_, p| {
                p.network.is_some() || created.saturating_sub(p.created) <= STALE_POOL_SECS
            });
            state.pools.insert(
                pool_id.clone(),
                Pool {
                    v6: request.v6,
                    cidr,
                    options: request.options.clone(),
                    network: None,
                    zt_network,
                    created,
                },
            );
            Ok(())
        })?;
        tracing::info!(%pool_id, %cidr, "pool requested");
        Ok(RequestPoolResponse {
            pool_id,
            pool: cidr.to_string(),
            // libnetwork takes this as the gateway and skips asking for one: a container's
            // gateway comes from the ZeroTier network's routes, at Join.
            data: BTreeMap::from([(GATEWAY_LABEL.to_string(), cidr.to_string())]),
        })
    }

    fn release_pool(&self, request: ReleasePoolRequest) -> Result<(), PluginError> {
        self.update(|state| {
            state.pools.remove(&request.pool_id);
            Ok(())
        })
    }

    async fn create_network(&self, request: CreateNetworkRequest) -> Result<(), PluginError> {
        let network_id = request.network_id.clone();
        if network_id.is_empty() {
            return refuse("CreateNetwork names no NetworkID");
        }
        check_docker_id("NetworkID", &network_id)?;
        let options = network_options(&request.options)?;
        let known = self.read(|state| state.networks.get(&network_id).cloned());
        if let Some(known) = known {
            if known.zt_network == options.zt_network {
                return Ok(());
            }
            return refuse(format!(
                "Docker network {network_id} is already on ZeroTier network {}",
                known.zt_network
            ));
        }
        if request.ipv4_data.is_empty() && request.ipv6_data.is_empty() {
            return refuse(
                "the network has no address pool: create it with --ipam-driver zerotier, so that \
                 containers get the addresses the ZeroTier controller assigns",
            );
        }
        // Fail here rather than at the first container: Docker keeps a network it created.
        self.agent.status().await?;
        let zt_network = options.zt_network;
        let created = now();
        self.update(|state| {
            let mut bound: Vec<String> = Vec::new();
            let pools = request
                .ipv4_data
                .iter()
                .map(|data| (data, false))
                .chain(request.ipv6_data.iter().map(|data| (data, true)));
            for (data, v6) in pools {
                let pool_id = bind_pool(state, data, v6, zt_network, &bound, created)?;
                bound.push(pool_id);
            }
            for pool_id in &bound {
                if let Some(pool) = state.pools.get_mut(pool_id) {
                    pool.network = Some(network_id.clone());
                    pool.zt_network = Some(zt_network);
                }
            }
            state.networks.insert(
                network_id.clone(),
                Network {
                    zt_network,
                    mtu: options.mtu,
                    wait: options.wait,
                    created,
                },
            );
            Ok(())
        })?;
        tracing::info!(network = %network_id, %zt_network, "network created");
        Ok(())
    }

    async fn delete_network(&self, request: NetworkRequest) -> Result<(), PluginError> {
        let network_id = request.network_id;
        let detaches = self.update(|state| {
            let Some(network) = state.networks.remove(&network_id) else {
                return Ok(Vec::new());
            };
            let last_on_zt = !state
                .networks
                .values()
                .any(|n| n.zt_network == network.zt_network);
            // Docker deletes endpoints first, so what is left is leftovers: reservations
            // without an endpoint, and the spares when no Docker network needs them now.
            let leftovers: Vec<String> = state
                .reservations
                .iter()
                .filter(|(_, r)| {
                    r.docker_network.as_deref() == Some(network_id.as_str())
                        || (last_on_zt
                            && r.phase == Phase::Spare
                            && r.zt_network == network.zt_network)
                })
                .map(|(id, _)| id.clone())
                .collect();
            Ok(leftovers
                .iter()
                .filter_map(|id| {
                    let reservation = state.reservations.remove(id)?;
                    Some(detach_request(id, &reservation))
                })
                .collect())
        })?;
        self.detach_all(detaches).await;
        tracing::info!(network = %network_id, "network deleted");
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Addresses: the members
    // -----------------------------------------------------------------------------------------

    async fn request_address(
        &self,
        request: RequestAddressRequest,
    ) -> Result<RequestAddressResponse, PluginError> {
        let Some(pool) = self.read(|state| state.pools.get(&request.pool_id).cloned()) else {
            return refuse(format!(
                "address pool {:?} is unknown to zt-docker-plugin: was the network created with \
                 --ipam-driver zerotier, and is the plugin's state ({}) intact?",
                request.pool_id,
                self.store.path().display()
            ));
        };
        let preferred = match request.address.as_str() {
            "" => None,
            text => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| PluginError::Refused(format!("{text:?} is not an IP address")))?,
            ),
        };
        if let Some(address) = preferred {
            if address.is_ipv6() != pool.v6 {
                return refuse(format!(
                    "{address} is not an IPv{} address",
                    if pool.v6 { 6 } else { 4 }
                ));
            }
        }
        if request
            .options
            .get(REQUEST_ADDRESS_TYPE)
            .map(String::as_str)
            == Some(GATEWAY_LABEL)
        {
            // `--gateway`: a label in `docker network inspect` only; containers route by the
            // ZeroTier network's routes.
            let address = preferred.unwrap_or(pool.cidr.address);
            return Ok(address_response(IpPrefix {
                address,
                prefix_len: pool.cidr.prefix_len,
            }));
        }
        let Some(docker_network) = pool.network.clone() else {
            return refuse(
                "--aux-address is not supported: the ZeroTier network's controller assigns the \
                 addresses; leave --aux-address out",
            );
        };
        let Some(network) = self.read(|state| state.networks.get(&docker_network).cloned()) else {
            return refuse(format!(
                "Docker network {docker_network} is unknown to zt-docker-plugin"
            ));
        };
        if pool.v6 {
            let has_ipv4 = self.read(|state| {
                state
                    .pools
                    .values()
                    .any(|p| !p.v6 && p.network.as_deref() == Some(docker_network.as_str()))
            });
            if has_ipv4 {
                return self.second_address(&docker_network, &pool, preferred);
            }
        }
        self.reserve(&docker_network, &network, &pool, preferred)
            .await
            .map(address_response)
    }

    /// The IPv6 address of the endpoint whose IPv4 address was just handed out: libnetwork
    /// holds its network lock from the first RequestAddress to CreateEndpoint, so the newest
    /// reservation of the network that has no endpoint and no IPv6 address is this one's.
    fn second_address(
        &self,
        docker_network: &str,
        pool: &Pool,
        preferred: Option<IpAddr>,
    ) -> Result<RequestAddressResponse, PluginError> {
        self.update(|state| {
            let Some(reservation) = state
                .reservations
                .values_mut()
                .filter(|r| {
                    r.docker_network.as_deref() == Some(docker_network)
                        && r.phase == Phase::Reserved
                        && r.endpoint_id.is_none()
                        && r.ipv6.is_none()
                })
                .max_by_key(|r| r.created)
            else {
                return refuse(format!(
                    "an IPv6 address was asked for on Docker network {docker_network} without an \
                     IPv4 address before it"
                ));
            };
            let Some(address) = pick_address(&reservation.ips, true, pool.cidr) else {
                return refuse(no_address_message(reservation, true));
            };
            if let Some(wanted) = preferred {
                if wanted != address.address {
                    return refuse(format!(
                        "the endpoint's ZeroTier member has IPv6 address {}, not {wanted}: leave \
                         out --ip6 or give that address",
                        address.address
                    ));
                }
            }
            reservation.ipv6 = Some(address);
            Ok(address_response(address))
        })
    }

    /// Attaches the member for a new endpoint and returns its address of the pool's family.
    async fn reserve(
        &self,
        docker_network: &str,
        network: &Network,
        pool: &Pool,
        preferred: Option<IpAddr>,
    ) -> Result<IpPrefix, PluginError> {
        let _gate = self.gc_gate.read().await;
        let zt_network = network.zt_network;
        let created = now();
        let (id, from_spare, reservation) = self.update(|state| {
            let mut from_spare = false;
            let id = match preferred {
                Some(address) => {
                    let Some(kept) = state
                        .keys
                        .values()
                        .find(|k| {
                            k.zt_network == zt_network && k.ips.iter().any(|p| p.address == address)
                        })
                        .cloned()
                    else {
                        return refuse(format!(
                            "{address} is not the address of a kept endpoint key on ZeroTier \
                             network {zt_network}: the network's controller assigns addresses, so \
                             leave out --ip, or give the address a key's member had"
                        ));
                    };
                    if state
                        .reservations
                        .values()
                        .any(|r| r.agent_key == kept.agent_key)
                    {
                        return refuse(format!(
                            "{address} belongs to endpoint key {}, which another endpoint is \
                             using now",
                            kept.name
                        ));
                    }
                    let id = new_reservation_id(state);
                    let mut reservation = new_reservation(&id, zt_network, docker_network, created);
                    reservation.agent_key = kept.agent_key;
                    reservation.key_name = Some(kept.name);
                    state.reservations.insert(id.clone(), reservation);
                    id
                }
                None => {
                    let spare = state
                        .reservations
                        .iter()
                        .filter(|(_, r)| r.phase == Phase::Spare && r.zt_network == zt_network)
                        .min_by_key(|(_, r)| r.created)
                        .map(|(id, _)| id.clone());
                    match spare {
                        Some(id) => {
                            from_spare = true;
                            if let Some(r) = state.reservations.get_mut(&id) {
                                r.phase = Phase::Attaching;
                                r.docker_network = Some(docker_network.to_string());
                                r.created = created;
                            }
                            id
                        }
                        None => {
                            let id = new_reservation_id(state);
                            let reservation =
                                new_reservation(&id, zt_network, docker_network, created);
                            state.reservations.insert(id.clone(), reservation);
                            id
                        }
                    }
                }
            };
            let reservation = state.reservations.get(&id).cloned();
            Ok((id, from_spare, reservation))
        })?;
        let Some(reservation) = reservation else {
            return refuse("internal error: a reservation vanished as it was made");
        };
        let container_id: ContainerId = id
            .parse()
            .map_err(|_| PluginError::Refused(format!("internal error: bad reservation {id}")))?;
        let mut attach = AttachRequest::new(
            zt_network,
            reservation.agent_key.clone(),
            container_id,
            None,
            reservation.if_name.clone(),
        );
        attach.owner = Some(self.config.owner.clone());
        attach.mtu = network.mtu;
        attach.wait = Some(network.wait.unwrap_or(self.config.attach_wait));
        tracing::info!(reservation = %id, key = %reservation.agent_key, %zt_network, "attaching a member");
        let attached =
            self.agent
                .attach(attach)
                .await
                .and_then(|endpoint| match endpoint.readiness() {
                    Ok(()) => Ok(endpoint),
                    Err(error) => Err(AgentError::Api(error)),
                });
        match attached {
            Ok(endpoint) => self.reserved(&id, &endpoint, pool).await,
            Err(error) => {
                self.attach_failed(&id, from_spare, &error).await?;
                Err(error.into())
            }
        }
    }

    /// The attach succeeded: hand out the member's address of the pool's family.
    async fn reserved(
        &self,
        id: &str,
        endpoint: &Endpoint,
        pool: &Pool,
    ) -> Result<IpPrefix, PluginError> {
        let outcome = self.update(|state| {
            let Some(reservation) = state.reservations.get_mut(id) else {
                // The network went while the attach was in flight.
                return Ok(Err(None));
            };
            reservation.member = Some(endpoint.address.to_string());
            reservation.mac = Some(endpoint.mac.to_string());
            reservation.ips = endpoint.ips.clone();
            reservation.routes = endpoint.routes.clone();
            let Some(address) = pick_address(&endpoint.ips, pool.v6, pool.cidr) else {
                let message = no_address_message(reservation, pool.v6);
                let detach = state
                    .reservations
                    .remove(id)
                    .map(|r| detach_request(id, &r));
                return Ok(Err(detach.map(|d| (d, message))));
            };
            if pool.v6 {
                reservation.ipv6 = Some(address);
            } else {
                reservation.ipv4 = Some(address);
            }
            reservation.phase = Phase::Reserved;
            if let Some(name) = reservation.key_name.clone() {
                if let Some(kept) = state.keys.get_mut(&key_slot(endpoint.network, &name)) {
                    kept.member = endpoint.address.to_string();
                    kept.ips = endpoint.ips.clone();
                }
            }
            Ok(Ok(address))
        })?;
        match outcome {
            Ok(address) => {
                tracing::info!(reservation = %id, member = %endpoint.address, %address, "member reserved");
                Ok(address)
            }
            Err(Some((detach, message))) => {
                self.detach_all(vec![detach]).await;
                refuse(message)
            }
            Err(None) => {
                // A kept key's member keeps its identity, whatever happened to the endpoint.
                let kept =
                    self.read(|state| state.keys.values().any(|k| k.agent_key == endpoint.key));
                let detach = DetachRequest {
                    key: endpoint.key.clone(),
                    container_id: Some(endpoint.container_id.clone()),
                    if_name: Some(endpoint.if_name.clone()),
                    network: Some(endpoint.network.to_string()),
                    keep_identity: kept,
                };
                self.detach_all(vec![detach]).await;
                refuse("the Docker network was deleted while its endpoint was being made")
            }
        }
    }

    /// The attach failed. Unreached agent: nothing was made (a spare stays one). Member not
    /// authorized or not ready yet: keep it as a spare, so that the next container on the
    /// network gets the member the error named. Anything else: detach it.
    async fn attach_failed(
        &self,
        id: &str,
        from_spare: bool,
        error: &AgentError,
    ) -> Result<(), PluginError> {
        let max_spares = self.config.max_spares;
        let detach = self.update(|state| {
            let Some(reservation) = state.reservations.get_mut(id) else {
                return Ok(None);
            };
            let zt_network = reservation.zt_network;
            let keep_as_spare = if error.is_unreachable() {
                from_spare
            } else {
                let worth_keeping = matches!(
                    error.code(),
                    Some(
                        ErrorCode::NotAuthorized
                            | ErrorCode::NotReady
                            | ErrorCode::Timeout
                            | ErrorCode::NetworkUnreachable
                    )
                );
                worth_keeping && reservation.key_name.is_none()
            };
            if keep_as_spare {
                reservation.phase = Phase::Spare;
                reservation.docker_network = None;
                let spares = state
                    .reservations
                    .values()
                    .filter(|r| r.phase == Phase::Spare && r.zt_network == zt_network)
                    .count();
                if spares <= max_spares {
                    return Ok(None);
                }
            } else if error.is_unreachable() {
                state.reservations.remove(id);
                return Ok(None);
            }
            Ok(state
                .reservations
                .remove(id)
                .map(|r| detach_request(id, &r)))
        })?;
        tracing::warn!(reservation = %id, "attach failed: {error}");
        if let Some(detach) = detach {
            self.detach_all(vec![detach]).await;
        }
        Ok(())
    }

    async fn release_address(&self, request: ReleaseAddressRequest) -> Result<(), PluginError> {
        let Ok(address) = request.address.parse::<IpAddr>() else {
            // Nothing of ours can have that address; releasing is idempotent.
            return Ok(());
        };
        let detach = self.update(|state| {
            let Some(docker_network) = state
                .pools
                .get(&request.pool_id)
                .and_then(|p| p.network.clone())
            else {
                return Ok(None);
            };
            let found = state
                .reservations
                .iter()
                .find(|(_, r)| {
                    r.docker_network.as_deref() == Some(docker_network.as_str())
                        && r.phase == Phase::Reserved
                        && r.endpoint_id.is_none()
                        && [r.ipv4, r.ipv6]
                            .iter()
                            .flatten()
                            .any(|p| p.address == address)
                })
                .map(|(id, _)| id.clone());
            // A bound reservation goes with its endpoint (DeleteEndpoint); this is Docker
            // rolling back an endpoint it could not create.
            Ok(found.and_then(|id| {
                let reservation = state.reservations.remove(&id)?;
                Some(detach_request(&id, &reservation))
            }))
        })?;
        if let Some(detach) = detach {
            tracing::info!(%address, "reservation released before its endpoint was made");
            self.detach_all(vec![detach]).await;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Endpoints
    // -----------------------------------------------------------------------------------------

    fn create_endpoint(
        &self,
        request: CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, PluginError> {
        let (network_id, endpoint_id) = (request.network_id.clone(), request.endpoint_id.clone());
        if network_id.is_empty() || endpoint_id.is_empty() {
            return refuse("CreateEndpoint names no NetworkID or no EndpointID");
        }
        check_docker_id("NetworkID", &network_id)?;
        check_docker_id("EndpointID", &endpoint_id)?;
        let key_name = endpoint_key_option(&request.options)?;
        let address = parse_interface_address(&request.interface.address, "Address")?;
        let address_ipv6 = parse_interface_address(&request.interface.address_ipv6, "AddressIPv6")?;
        let given_mac = match request.interface.mac_address.as_str() {
            "" => None,
            text => Some(text.to_ascii_lowercase()),
        };
        let answer = self.update(|state| {
            let Some(network) = state.networks.get(&network_id).cloned() else {
                return refuse(unknown_network_message(&network_id, &self.store));
            };
            // A retried call: answer as before.
            if let Some(reservation) = state
                .reservations
                .values()
                .find(|r| r.endpoint_id.as_deref() == Some(endpoint_id.as_str()))
            {
                return Ok(endpoint_answer(reservation, given_mac.as_deref()));
            }
            let found = state
                .reservations
                .iter()
                .find(|(_, r)| {
                    r.docker_network.as_deref() == Some(network_id.as_str())
                        && r.phase == Phase::Reserved
                        && r.endpoint_id.is_none()
                        && match (address, address_ipv6) {
                            (Some(a), _) => r.ipv4.map(|p| p.address) == Some(a.address),
                            (None, Some(a)) => r.ipv6.map(|p| p.address) == Some(a.address),
                            (None, None) => false,
                        }
                })
                .map(|(id, _)| id.clone());
            let Some(id) = found else {
                let Some(given) = address.or(address_ipv6) else {
                    return refuse(format!(
                        "Docker gave endpoint {endpoint_id} no address from this plugin's IPAM \
                         driver: create the network with --ipam-driver zerotier"
                    ));
                };
                return refuse(format!(
                    "no ZeroTier member was reserved for address {given} on Docker network \
                     {network_id} (was the network created with --ipam-driver zerotier, and is \
                     the plugin's state {} intact?)",
                    self.store.path().display()
                ));
            };
            let Some(reservation) = state.reservations.get(&id).cloned() else {
                return refuse("internal error: a reservation vanished");
            };
            if let (Some(given), Some(mac)) = (&given_mac, &reservation.mac) {
                if given != mac {
                    return refuse(format!(
                        "a ZeroTier interface has its member's MAC address ({mac}), not {given}: \
                         leave out --mac-address"
                    ));
                }
            }
            let mut owner = reservation.key_name.clone();
            if let Some(name) = &key_name {
                let slot = key_slot(network.zt_network, name);
                match state.keys.get(&slot) {
                    Some(kept) if kept.agent_key == reservation.agent_key => {}
                    Some(kept) => {
                        let address = kept
                            .ips
                            .iter()
                            .find(|p| p.address.is_ipv4())
                            .or(kept.ips.first())
                            .map_or_else(|| "(none yet)".to_string(), |p| p.address.to_string());
                        return refuse(format!(
                            "endpoint key {name} keeps ZeroTier member {} with address {address}, \
                             but Docker asked for a new address before it passed the key: connect \
                             with --ip {address} as well (the Docker network needs --subnet)",
                            kept.member
                        ));
                    }
                    None => {
                        if let Some(other) = &reservation.key_name {
                            return refuse(format!(
                                "the address Docker asked for belongs to endpoint key {other}, \
                                 not {name}"
                            ));
                        }
                        state.keys.insert(
                            slot,
                            KeptKey {
                                zt_network: network.zt_network,
                                name: name.clone(),
                                agent_key: reservation.agent_key.clone(),
                                member: reservation.member.clone().unwrap_or_default(),
                                ips: reservation.ips.clone(),
                            },
                        );
                        owner = Some(name.clone());
                    }
                }
            }
            let Some(reservation) = state.reservations.get_mut(&id) else {
                return refuse("internal error: a reservation vanished");
            };
            reservation.endpoint_id = Some(endpoint_id.clone());
            reservation.phase = Phase::Bound;
            reservation.key_name = owner;
            Ok(endpoint_answer(reservation, given_mac.as_deref()))
        })?;
        tracing::info!(network = %network_id, endpoint = %endpoint_id, "endpoint created");
        Ok(answer)
    }

    async fn delete_endpoint(&self, request: EndpointRequest) -> Result<(), PluginError> {
        let endpoint_id = request.endpoint_id;
        let detach = self.update(|state| {
            let Some(id) = find_endpoint(state, &endpoint_id) else {
                return Ok(None);
            };
            let Some(reservation) = state.reservations.remove(&id) else {
                return Ok(None);
            };
            if let Some(name) = &reservation.key_name {
                if let Some(kept) = state.keys.get_mut(&key_slot(reservation.zt_network, name)) {
                    kept.ips = reservation.ips.clone();
                }
            }
            Ok(Some(detach_request(&id, &reservation)))
        })?;
        if let Some(detach) = detach {
            tracing::info!(endpoint = %endpoint_id, "endpoint deleted");
            self.detach_all(vec![detach]).await;
        }
        Ok(())
    }

    fn endpoint_info(&self, request: EndpointRequest) -> EndpointInfoResponse {
        let value = self.read(|state| {
            let Some(reservation) = find_endpoint(state, &request.endpoint_id)
                .and_then(|id| state.reservations.get(&id))
            else {
                return BTreeMap::new();
            };
            let mut value = BTreeMap::from([
                (
                    "zerotier.network".to_string(),
                    reservation.zt_network.to_string(),
                ),
                (
                    "zerotier.interface".to_string(),
                    reservation.if_name.to_string(),
                ),
            ]);
            if let Some(member) = &reservation.member {
                value.insert("zerotier.member".into(), member.clone());
            }
            if let Some(name) = &reservation.key_name {
                value.insert("zerotier.key".into(), name.clone());
            }
            value
        });
        EndpointInfoResponse { value }
    }

    async fn join(&self, request: JoinRequest) -> Result<JoinResponse, PluginError> {
        let endpoint_id = request.endpoint_id.clone();
        let sandbox =
            (!request.sandbox_key.is_empty()).then(|| PathBuf::from(&request.sandbox_key));
        if let Some(sandbox) = &sandbox {
            // Refused here, before the state records it, rather than by the agent later.
            check_namespace_path("SandboxKey", sandbox).or_else(|error| refuse(error.message))?;
        }
        let (id, reservation) = self.update(|state| {
            let Some(id) = find_endpoint(state, &endpoint_id) else {
                return refuse(format!(
                    "endpoint {endpoint_id} is unknown to zt-docker-plugin (is its state {} \
                     intact?)",
                    self.store.path().display()
                ));
            };
            let Some(reservation) = state.reservations.get_mut(&id) else {
                return refuse("internal error: a reservation vanished");
            };
            reservation.sandbox = sandbox.clone();
            Ok((id, reservation.clone()))
        })?;
        if sandbox.is_some() {
            match self.tell_sandbox(&id, &reservation).await {
                Err(error) if error.is_unreachable() => return Err(error.into()),
                Err(error) => self.sandbox_failed(&error),
                Ok(()) => {}
            }
        }
        tracing::info!(endpoint = %endpoint_id, interface = %reservation.if_name, "endpoint joined");
        Ok(join_answer(&reservation))
    }

    async fn leave(&self, request: EndpointRequest) -> Result<(), PluginError> {
        let endpoint_id = request.endpoint_id;
        let found = self.update(|state| {
            let Some(id) = find_endpoint(state, &endpoint_id) else {
                return Ok(None);
            };
            let Some(reservation) = state.reservations.get_mut(&id) else {
                return Ok(None);
            };
            reservation.sandbox = None;
            Ok(Some((id, reservation.clone())))
        })?;
        if let Some((id, reservation)) = found {
            // The link is back in the host under its name whether or not the agent hears it.
            if let Err(error) = self.tell_sandbox(&id, &reservation).await {
                self.sandbox_failed(&error);
            }
        }
        Ok(())
    }

    async fn tell_sandbox(&self, id: &str, reservation: &Reservation) -> Result<(), AgentError> {
        let Ok(container_id) = id.parse() else {
            return Ok(());
        };
        let request = SandboxRequest {
            key: reservation.agent_key.clone(),
            container_id,
            if_name: reservation.if_name.clone(),
            sandbox: reservation.sandbox.clone(),
        };
        self.agent.sandbox(request).await.map(drop)
    }

    fn sandbox_failed(&self, error: &AgentError) {
        if error.code() == Some(ErrorCode::UnsupportedOperation) {
            if !self.sandbox_unsupported.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the agent has no /v1/sandbox: containers lose their ZeroTier interface if \
                     the agent restarts"
                );
            }
        } else {
            tracing::warn!("telling the agent where the interface went: {error}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Stable keys
    // -----------------------------------------------------------------------------------------

    async fn forget_key(
        &self,
        request: ForgetKeyRequest,
    ) -> Result<ForgetKeyResponse, PluginError> {
        let zt_network = parse_network_id("Network", &request.network)?;
        let name = check_key_name(&request.key)?;
        let kept = self.update(|state| {
            let slot = key_slot(zt_network, &name);
            let Some(kept) = state.keys.get(&slot).cloned() else {
                return refuse(format!(
                    "there is no endpoint key {name} on ZeroTier network {zt_network}"
                ));
            };
            if state
                .reservations
                .values()
                .any(|r| r.agent_key == kept.agent_key)
            {
                return refuse(format!(
                    "endpoint key {name} is in use by an endpoint: disconnect it first"
                ));
            }
            state.keys.remove(&slot);
            Ok(kept)
        })?;
        self.detach_all(vec![DetachRequest {
            key: kept.agent_key.clone(),
            container_id: None,
            if_name: None,
            network: Some(zt_network.to_string()),
            keep_identity: false,
        }])
        .await;
        tracing::info!(key = %name, %zt_network, "endpoint key forgotten");
        Ok(ForgetKeyResponse {
            member: kept.member,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Detaches and upkeep
    // -----------------------------------------------------------------------------------------

    /// Sends each detach; those the agent cannot take now are queued and retried.
    async fn detach_all(&self, detaches: Vec<DetachRequest>) {
        for detach in detaches {
            match self.agent.detach(detach.clone()).await {
                Ok(_) => {}
                Err(error) if error.is_transient() => {
                    tracing::warn!("detach of {} queued: {error}", detach.describe());
                    let queued = self.update(|state| {
                        if !state.pending_detaches.contains(&detach) {
                            state.pending_detaches.push(detach.clone());
                        }
                        Ok(())
                    });
                    if let Err(e) = queued {
                        tracing::error!("cannot queue the detach of {}: {e}", detach.describe());
                    }
                }
                Err(error) => tracing::error!("detach of {} refused: {error}", detach.describe()),
            }
        }
    }

    /// Retries queued detaches once; true when none is left.
    pub async fn retry_detaches(&self) -> bool {
        let pending = self.read(|state| state.pending_detaches.clone());
        for detach in pending {
            let result = self.agent.detach(detach.clone()).await;
            if let Err(error) = &result {
                if error.is_transient() {
                    return false;
                }
                tracing::error!("queued detach of {} refused: {error}", detach.describe());
            }
            let removed = self.update(|state| {
                state.pending_detaches.retain(|d| *d != detach);
                Ok(())
            });
            if let Err(e) = removed {
                tracing::error!("cannot update the detach queue: {e}");
                return false;
            }
        }
        true
    }

    /// After a restart: members whose attach was in flight are detached (Docker got no
    /// address for them), and unless configured otherwise, the agent's endpoints of this
    /// plugin's owner that the state does not know are removed. True when done.
    pub async fn recover(&self) -> bool {
        let interrupted = self.update(|state| {
            let ids: Vec<String> = state
                .reservations
                .iter()
                .filter(|(_, r)| r.phase == Phase::Attaching)
                .map(|(id, _)| id.clone())
                .collect();
            Ok(ids
                .iter()
                .filter_map(|id| {
                    let reservation = state.reservations.remove(id)?;
                    Some(detach_request(id, &reservation))
                })
                .collect::<Vec<_>>())
        });
        match interrupted {
            Ok(detaches) => self.detach_all(detaches).await,
            Err(e) => {
                tracing::error!("cannot clean up interrupted attaches: {e}");
                return false;
            }
        }
        if !self.config.gc_at_start {
            return true;
        }
        let _gate = self.gc_gate.write().await;
        let request = GcRequest {
            owner: Some(self.config.owner.clone()),
            valid: self.read(State::agent_keys),
            ..GcRequest::default()
        };
        match self.agent.gc(request).await {
            Ok(answer) => {
                if !answer.removed.is_empty() {
                    tracing::info!(removed = ?answer.removed, "removed endpoints the plugin did not know");
                }
                true
            }
            Err(error) => {
                tracing::warn!("gc of unknown endpoints postponed: {error}");
                false
            }
        }
    }

    /// Detaches reservations that never got an endpoint (Docker stopped between the address
    /// and the endpoint and forgot them).
    pub async fn reap_stale_reservations(&self, now: u64) {
        let detaches = self.update(|state| {
            let stale: Vec<String> = state
                .reservations
                .iter()
                .filter(|(_, r)| {
                    r.phase == Phase::Reserved
                        && r.endpoint_id.is_none()
                        && now.saturating_sub(r.created) > STALE_RESERVATION_SECS
                })
                .map(|(id, _)| id.clone())
                .collect();
            Ok(stale
                .iter()
                .filter_map(|id| {
                    let reservation = state.reservations.remove(id)?;
                    Some(detach_request(id, &reservation))
                })
                .collect::<Vec<_>>())
        });
        match detaches {
            Ok(detaches) => {
                if !detaches.is_empty() {
                    tracing::info!(
                        count = detaches.len(),
                        "detaching reservations Docker forgot"
                    );
                }
                self.detach_all(detaches).await;
            }
            Err(e) => tracing::error!("cannot reap stale reservations: {e}"),
        }
    }

    /// Runs [`Driver::recover`] until it succeeds, retries queued detaches and reaps stale
    /// reservations, forever.
    pub async fn maintain(self: Arc<Self>) {
        let mut recovered = false;
        loop {
            if !recovered {
                recovered = self.recover().await;
            }
            self.retry_detaches().await;
            self.reap_stale_reservations(now()).await;
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }
}

/// The plugin's own method, beside libnetwork's: forget a stable endpoint key and delete its
/// member's identity (`zt-docker-plugin forget`).
pub const FORGET_KEY_METHOD: &str = "ZeroTier.ForgetKey";

/// `POST /ZeroTier.ForgetKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ForgetKeyRequest {
    pub network: String,
    pub key: String,
}

/// `POST /ZeroTier.ForgetKey`'s answer: the member that was the key's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ForgetKeyResponse {
    pub member: String,
}

fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, PluginError> {
    Ok(protocol::parse_body(body)?)
}

fn to_value<T: Serialize>(value: T) -> Value {
    // Our answer types serialize infallibly (string keys, no floats).
    serde_json::to_value(value).unwrap_or_else(|_| json!({}))
}

// ---------------------------------------------------------------------------------------------
// Options and checks
// ---------------------------------------------------------------------------------------------

/// What `docker network create -o` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NetworkOptions {
    zt_network: NetworkId,
    mtu: Option<u32>,
    wait: Option<u64>,
}

const KNOWN_NETWORK_OPTIONS: &str = "zerotier.network (or network), zerotier.wait, \
                                     com.docker.network.driver.mtu";

fn network_options(options: &Map<String, Value>) -> Result<NetworkOptions, PluginError> {
    let generic = match options.get(GENERIC_OPTIONS) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(generic)) => generic.clone(),
        Some(other) => return refuse(format!("{GENERIC_OPTIONS} is not a map: {other}")),
    };
    let mut strings = BTreeMap::new();
    for (key, value) in &generic {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            other => return refuse(format!("option {key} must be text, not {other}")),
        };
        if ![
            NETWORK_OPTION,
            SHORT_NETWORK_OPTION,
            WAIT_OPTION,
            MTU_OPTION,
        ]
        .contains(&key.as_str())
        {
            return refuse(format!(
                "unknown option {key}: the zerotier driver takes {KNOWN_NETWORK_OPTIONS}"
            ));
        }
        strings.insert(key.as_str(), text);
    }
    let zt_network = match (
        strings.get(NETWORK_OPTION),
        strings.get(SHORT_NETWORK_OPTION),
    ) {
        (Some(long), Some(short)) if long != short => {
            return refuse(format!(
                "{NETWORK_OPTION}={long} and {SHORT_NETWORK_OPTION}={short} disagree: give one"
            ))
        }
        (Some(text), _) => parse_network_id(NETWORK_OPTION, text)?,
        (None, Some(text)) => parse_network_id(SHORT_NETWORK_OPTION, text)?,
        (None, None) => {
            return refuse(format!(
                "{NETWORK_OPTION} is missing: docker network create -d zerotier --ipam-driver \
                 zerotier -o {NETWORK_OPTION}=<16 hex digit network ID> NAME"
            ))
        }
    };
    let mtu = match strings.get(MTU_OPTION) {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(mtu) if (MIN_MTU..=MAX_MTU).contains(&mtu) => Some(mtu),
            _ => {
                return refuse(format!(
                    "{MTU_OPTION} {text:?} is not an MTU from {MIN_MTU} to {MAX_MTU}"
                ))
            }
        },
    };
    let wait = match strings.get(WAIT_OPTION) {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(wait) if wait <= MAX_ATTACH_WAIT.as_secs() => Some(wait),
            _ => {
                return refuse(format!(
                    "{WAIT_OPTION} {text:?} is not a number of seconds from 0 to {}",
                    MAX_ATTACH_WAIT.as_secs()
                ))
            }
        },
    };
    Ok(NetworkOptions {
        zt_network,
        mtu,
        wait,
    })
}

/// `--ipam-opt zerotier.network=<nwid>` (optional).
fn ipam_network_option(
    options: &BTreeMap<String, String>,
) -> Result<Option<NetworkId>, PluginError> {
    for key in options.keys() {
        if key.starts_with("zerotier.") && key != NETWORK_OPTION {
            return refuse(format!(
                "unknown IPAM option {key}: the zerotier IPAM driver takes {NETWORK_OPTION}"
            ));
        }
    }
    match options
        .get(NETWORK_OPTION)
        .or_else(|| options.get(SHORT_NETWORK_OPTION))
    {
        Some(text) => parse_network_id(NETWORK_OPTION, text).map(Some),
        None => Ok(None),
    }
}

fn parse_network_id(option: &str, text: &str) -> Result<NetworkId, PluginError> {
    text.parse().map_err(|_| {
        PluginError::Refused(format!(
            "{option} {text:?} is not a ZeroTier network ID (16 hex digits, e.g. 8056c2e21c000001)"
        ))
    })
}

fn parse_subnet(text: &str, v6: bool) -> Result<IpPrefix, PluginError> {
    let Ok(prefix) = text.parse::<IpPrefix>() else {
        return refuse(format!(
            "--subnet {text:?} is not a subnet (10.147.17.0/24)"
        ));
    };
    if prefix.address.is_ipv6() != v6 {
        return refuse(format!(
            "--subnet {text} is not an IPv{} subnet",
            if v6 { 6 } else { 4 }
        ));
    }
    Ok(network_of(prefix))
}

/// Longest Docker network or endpoint ID accepted (Docker's are 64 hex digits).
pub const MAX_DOCKER_ID: usize = 128;

/// A Docker network or endpoint ID as the state keeps it: 1 to [`MAX_DOCKER_ID`] ASCII
/// letters and digits (Docker makes 64 hex digits), so that a hostile one is refused before
/// it is recorded. `field` names it in the error.
fn check_docker_id(field: &str, id: &str) -> Result<(), PluginError> {
    if !id.is_empty() && id.len() <= MAX_DOCKER_ID && id.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return Ok(());
    }
    let shown: String = id.chars().take(80).collect();
    refuse(format!(
        "{field} {shown:?} is not a Docker ID (1 to {MAX_DOCKER_ID} letters and digits)"
    ))
}

fn endpoint_key_option(options: &Map<String, Value>) -> Result<Option<String>, PluginError> {
    match options.get(KEY_OPTION) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => check_key_name(name).map(Some),
        Some(other) => refuse(format!("{KEY_OPTION} must be text, not {other}")),
    }
}

fn check_key_name(name: &str) -> Result<String, PluginError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if ok {
        Ok(name.to_string())
    } else {
        refuse(format!(
            "endpoint key {name:?} is not 1 to {MAX_KEY_NAME} characters of A-Za-z0-9._-"
        ))
    }
}

fn parse_interface_address(text: &str, field: &str) -> Result<Option<IpPrefix>, PluginError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        PluginError::Refused(format!(
            "CreateEndpoint's Interface.{field} {text:?} is not address/prefix"
        ))
    })
}

fn unknown_network_message(network_id: &str, store: &StateStore) -> String {
    format!(
        "Docker network {network_id} is unknown to zt-docker-plugin: its state ({}) does not \
         have it; remove the network and create it again",
        store.path().display()
    )
}

// ---------------------------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------------------------

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    hex::encode(buffer)
}

fn new_reservation_id(state: &State) -> String {
    loop {
        let id = random_hex(6);
        if !state.reservations.contains_key(&id) {
            return id;
        }
    }
}

fn new_reservation(
    id: &str,
    zt_network: NetworkId,
    docker_network: &str,
    created: u64,
) -> Reservation {
    Reservation {
        phase: Phase::Attaching,
        zt_network,
        docker_network: Some(docker_network.to_string()),
        agent_key: agent_key_of(id),
        if_name: host_if_name(id),
        member: None,
        mac: None,
        ips: Vec::new(),
        ipv4: None,
        ipv6: None,
        routes: Vec::new(),
        endpoint_id: None,
        sandbox: None,
        key_name: None,
        created,
    }
}

/// `docker/<id>`: 12 hex digits always make a valid key.
fn agent_key_of(id: &str) -> EndpointKey {
    format!("docker/{id}")
        .parse()
        .unwrap_or_else(|_| unreachable!("hex reservation IDs make valid keys"))
}

/// `ztd<id>`: 15 bytes, a valid interface name.
fn host_if_name(id: &str) -> InterfaceName {
    format!("{HOST_IF_PREFIX}{id}")
        .parse()
        .unwrap_or_else(|_| unreachable!("hex reservation IDs make valid interface names"))
}

fn detach_request(id: &str, reservation: &Reservation) -> DetachRequest {
    DetachRequest {
        key: reservation.agent_key.clone(),
        container_id: id.parse().ok(),
        if_name: Some(reservation.if_name.clone()),
        network: Some(reservation.zt_network.to_string()),
        keep_identity: reservation.key_name.is_some(),
    }
}

fn find_endpoint(state: &State, endpoint_id: &str) -> Option<String> {
    if endpoint_id.is_empty() {
        return None;
    }
    state
        .reservations
        .iter()
        .find(|(_, r)| r.endpoint_id.as_deref() == Some(endpoint_id))
        .map(|(id, _)| id.clone())
}

/// Binds the unbound pool CreateNetwork's `data` describes (IPAMData has no pool ID: the
/// family, CIDR and age tell).
fn bind_pool(
    state: &State,
    data: &IpamData,
    v6: bool,
    zt_network: NetworkId,
    taken: &[String],
    now: u64,
) -> Result<String, PluginError> {
    let Ok(cidr) = data.pool.parse::<IpPrefix>() else {
        return refuse(format!(
            "the network's address pool {:?} is not a subnet: create the network with \
             --ipam-driver zerotier",
            data.pool
        ));
    };
    let candidates: Vec<(&String, &Pool)> = state
        .pools
        .iter()
        .filter(|(id, p)| {
            p.network.is_none()
                && p.v6 == v6
                && network_of(p.cidr) == network_of(cidr)
                && now.saturating_sub(p.created) <= STALE_POOL_SECS
                && !taken.contains(id)
        })
        .collect();
    let named: Vec<&String> = candidates
        .iter()
        .filter(|(_, p)| p.zt_network == Some(zt_network))
        .map(|(id, _)| *id)
        .collect();
    let unnamed: Vec<&String> = candidates
        .iter()
        .filter(|(_, p)| p.zt_network.is_none())
        .map(|(id, _)| *id)
        .collect();
    match (named.as_slice(), unnamed.as_slice()) {
        ([id], _) | ([], [id]) => Ok((*id).clone()),
        ([], []) => {
            if let Some((_, other)) = candidates.first() {
                return refuse(format!(
                    "--ipam-opt {NETWORK_OPTION}={} and -o {NETWORK_OPTION}={zt_network} \
                     disagree: give the same network ID",
                    other.zt_network.map_or_else(String::new, |n| n.to_string())
                ));
            }
            refuse(format!(
                "the network's address pool {cidr} does not come from this plugin: create the \
                 network with --ipam-driver zerotier"
            ))
        }
        _ => refuse(
            "several ZeroTier networks are being created at this moment and their address pools \
             cannot be told apart: run the command again, or give each network --ipam-opt \
             zerotier.network=<network ID> as well",
        ),
    }
}

/// The member's address of a family: one inside the pool when the pool says anything,
/// else the first.
fn pick_address(ips: &[IpPrefix], v6: bool, pool: IpPrefix) -> Option<IpPrefix> {
    let of_family = || ips.iter().filter(move |p| p.address.is_ipv6() == v6);
    of_family()
        .find(|p| pool.prefix_len > 0 && contains(pool, p.address))
        .or_else(|| of_family().next())
        .copied()
}

fn no_address_message(reservation: &Reservation, v6: bool) -> String {
    let member = reservation.member.as_deref().unwrap_or("(unknown)");
    if v6 {
        format!(
            "ZeroTier network {} gives member {member} no IPv6 address: enable an IPv6 mode (RFC \
             4193 or 6plane) or an IPv6 pool on the network's controller, or create the Docker \
             network without --ipv6",
            reservation.zt_network
        )
    } else {
        format!(
            "ZeroTier network {} gives member {member} no IPv4 address: add an IPv4 pool to the \
             network on its controller (or, with Docker 28 and later, create the Docker network \
             with --ipv4=false --ipv6)",
            reservation.zt_network
        )
    }
}

fn address_response(address: IpPrefix) -> RequestAddressResponse {
    RequestAddressResponse {
        address: address.to_string(),
        data: BTreeMap::new(),
    }
}

/// CreateEndpoint's answer: the member's MAC, unless Docker gave one (then nothing: a
/// returned field that was already set fails the call).
fn endpoint_answer(reservation: &Reservation, given_mac: Option<&str>) -> CreateEndpointResponse {
    match (&reservation.mac, given_mac) {
        (Some(mac), None) => CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: mac.clone(),
                ..EndpointInterface::default()
            }),
        },
        _ => CreateEndpointResponse::default(),
    }
}

/// Join's answer: the host-side name Docker moves, and the network's routes. The subnet of
/// an assigned address is left out (Docker adds it with the address); a default route
/// becomes the gateway; a family without an assigned address gets no routes (their next
/// hops would not be reachable).
fn join_answer(reservation: &Reservation) -> JoinResponse {
    let assigned: Vec<IpPrefix> = [reservation.ipv4, reservation.ipv6]
        .into_iter()
        .flatten()
        .collect();
    let mut answer = JoinResponse {
        interface_name: protocol::InterfaceName {
            src_name: reservation.if_name.to_string(),
            dst_prefix: CONTAINER_IF_PREFIX.into(),
        },
        ..JoinResponse::default()
    };
    for route in &reservation.routes {
        let v6 = route.dst.address.is_ipv6();
        if !assigned.iter().any(|a| a.address.is_ipv6() == v6) {
            continue;
        }
        if route.dst.prefix_len == 0 {
            let gateway = match route.gateway {
                Some(gateway) if gateway.is_ipv6() == v6 => gateway.to_string(),
                _ => continue,
            };
            let slot = if v6 {
                &mut answer.gateway_ipv6
            } else {
                &mut answer.gateway
            };
            if slot.is_empty() {
                *slot = gateway;
            }
            continue;
        }
        let connected = assigned
            .iter()
            .any(|a| network_of(*a) == network_of(route.dst));
        match route.gateway {
            None if connected => {}
            None => answer.static_routes.push(StaticRoute {
                destination: network_of(route.dst).to_string(),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new(),
            }),
            Some(gateway) => answer.static_routes.push(StaticRoute {
                destination: network_of(route.dst).to_string(),
                route_type: ROUTE_NEXT_HOP,
                next_hop: gateway.to_string(),
            }),
        }
    }
    answer
}

/// The subnet a prefix lies in (host bits cleared).
fn network_of(prefix: IpPrefix) -> IpPrefix {
    let address = match prefix.address {
        IpAddr::V4(address) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(address) & mask))
        }
        IpAddr::V6(address) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(address) & mask))
        }
    };
    IpPrefix {
        address,
        prefix_len: prefix.prefix_len,
    }
}

fn contains(subnet: IpPrefix, address: IpAddr) -> bool {
    address.is_ipv6() == subnet.address.is_ipv6()
        && network_of(IpPrefix {
            address,
            prefix_len: subnet.prefix_len,
        }) == network_of(subnet)
}

#[cfg(test)]
mod tests;
