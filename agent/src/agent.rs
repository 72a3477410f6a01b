//! `zt-agent run`: prepares the home folder, binds the sockets, starts the local API and
//! drives the node until SIGINT/SIGTERM.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use node_core::node::{Node, NodeConfig};
use node_core::Address;
use rand_core::{OsRng, RngCore};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::authorize::ControllerCredentials;
use crate::controller::ControllerService;
use crate::driver::{wall_clock, Driver, LocalInfo};
use crate::driver::{PluginState, ENDPOINT_IDENTITIES_READY};
use crate::endpoint_manager::DriverEndpointManager;
use crate::endpoints::EndpointStore;
use crate::home::{Home, PLANET};
use crate::identity_pool::IdentityPool;
use crate::networks::NetworksDir;
use crate::plugin_api::{self, PluginApiServer};
use crate::plumbing::NetnsWorker;
use crate::ports::{self, Ports};
use crate::transport::UdpTransport;
use std::sync::Arc;

/// Where the CNI plugin records deletes it could not send (its `pendingDeleteDir` default
/// under the default home).
pub const CNI_PENDING_DELETES: &str = "cni-pending-del";

/// API requests queued for the driver before HTTP handlers wait.
const API_QUEUE: usize = 64;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub home: PathBuf,
    /// UDP port, and TCP port of the local API; 0 picks a free one.
    pub port: u16,
    /// Address the local API listens on.
    pub api_bind: IpAddr,
    /// The plugin API's Unix socket; `None` serves none.
    pub socket: Option<PathBuf>,
    /// A controller API the agent authorizes its container endpoints with.
    pub controller_credentials: Option<ControllerCredentials>,
}

/// A started agent: sockets bound, home ready, API listening.
pub struct Agent {
    driver: Driver<UdpTransport>,
    api_tasks: Vec<JoinHandle<()>>,
    /// Removes its socket when dropped.
    plugin_server: Option<PluginApiServer>,
    pub address: Address,
    pub port: u16,
    pub token: String,
}

impl Agent {
    /// Prepares the home (identity, token, worlds, cached peers), binds UDP and the API.
    pub async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let home = Home::new(&options.home);
        home.create()?;
        let loaded = home.load_or_create_identity(&mut OsRng)?;
        let identity = loaded.identity;
        if loaded.created {
            tracing::info!(address = %identity.address(), "generated a new identity");
        }
        let token = home.load_or_create_authtoken(&mut OsRng)?;

        let planet = match home.load_planet()? {
            Some(planet) => {
                tracing::info!(
                    id = %format!("{:016x}", planet.id),
                    timestamp = planet.timestamp,
                    "using planet from {}",
                    home.path(PLANET).display()
                );
                planet
            }
            None => {
                tracing::warn!(
                    "NO PLANET FILE at {}: using the BUILT-IN planet, whose roots are \
                     ZeroTier's PUBLIC root servers on the internet. Make a private planet \
                     with `zt-agent mkworld` and put it there to stay off them.",
                    home.path(PLANET).display()
                );
                node_core::world::default_planet()
            }
        };
        let moons = home.load_moons();
        for moon in &moons {
            tracing::info!(id = %format!("{:016x}", moon.id), "orbiting moon");
        }

        let transport = UdpTransport::bind(options.port)
            .with_context(|| format!("cannot bind UDP port {}", options.port))?;
        let port = transport.port()?;

        let (requests_tx, requests_rx) = mpsc::channel(API_QUEUE);
        let metrics_token = home.load_or_create_metricstoken(&mut OsRng)?;
        let state = ApiState::with_metrics_token(token.clone(), metrics_token, requests_tx);
        let mut api_tasks = Vec::new();
        let api_addr = SocketAddr::new(options.api_bind, port);
        let listener = TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot bind the local API to TCP {api_addr}"))?;
        tracing::info!("local API on http://{api_addr}");
        api_tasks.push(tokio::spawn(api::serve(listener, state.clone())));
        if options.api_bind == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            // As ZeroTier One: the API answers on both loopbacks where the host has IPv6.
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            if let Ok(listener) = TcpListener::bind(v6).await {
                api_tasks.push(tokio::spawn(api::serve(listener, state)));
            }
        }
        home.write_port(port)?;

        let now = wall_clock();
        let mut config = NodeConfig::new(identity, planet);
        config.moons = moons;
        config.rng_seed = OsRng.next_u64();
        // New peers' memory-hard hash runs on the driver's validator thread, not on the
        // packet path (a flood of fresh identities would stall every endpoint).
        config.defer_identity_validation = true;
        let mut node = Node::new(config, now);
        let address = node.address();
        let cached = home.load_peer_identities();
        let cached_count = cached.len();
        for peer in cached {
            node.add_peer_identity(now, peer);
        }
        tracing::info!(%address, port, cached_peers = cached_count, "node started");

        let local = LocalInfo {
            port,
            home_dir: options.home.clone(),
        };
        let controller =
            ControllerService::open(&options.home, node.identity().clone(), OsRng.next_u64())
                .context("cannot open the controller's records (controller.d)")?;
        let (frames_tx, frames_rx) = mpsc::channel(ports::FRAME_QUEUE);
        let ports = Ports::new(Some(NetworksDir::new(&options.home)), frames_tx);
        let mut driver = Driver::new(node, transport, Some(home), requests_rx, local)
            .with_ports(ports, frames_rx)
            .with_controller(controller);
        let mut plugin_server = None;
        if let Some(socket) = &options.socket {
            let worker = NetnsWorker::start().context("cannot start the namespace worker")?;
            let (plugin_tx, plugin_rx) = mpsc::channel(API_QUEUE);
            let (endpoint_tx, endpoint_rx) = mpsc::channel(ports::FRAME_QUEUE);
            let manager = Arc::new(DriverEndpointManager::new(plugin_tx.clone()));
            // Namespaces given by descriptor are pinned in the home folder and kept while an
            // endpoint record names them.
            let records = EndpointStore::new(&options.home);
            let server_options = plugin_api::ServerOptions {
                netns_pins: options.home.join("netns"),
                pins_in_use: Some(Arc::new(move || records.netns_paths())),
            };
            let server = plugin_api::spawn_with(socket, manager, server_options)
                .await
                .with_context(|| format!("cannot serve the plugin API on {}", socket.display()))?;
            tracing::info!("plugin API on {}", socket.display());
            plugin_server = Some(server);
            driver = driver.with_endpoint_frames(endpoint_rx).with_plugin(
                PluginState::new(
                    plugin_rx,
                    plugin_tx,
                    worker,
                    EndpointStore::new(&options.home),
                    endpoint_tx,
                )
                .with_identity_pool(IdentityPool::persistent(
                    ENDPOINT_IDENTITIES_READY,
                    options.home.join(IdentityPool::FILE_NAME),
                ))
                .with_credentials(options.controller_credentials.clone())
                .with_pending_deletes(options.home.join(CNI_PENDING_DELETES)),
            );
        }
        Ok(Self {
            driver,
            api_tasks,
            plugin_server,
            address,
            port,
            token,
        })
    }

    /// Drives the node until `shutdown` completes or the node fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let result = self.driver.run(shutdown).await;
        for task in &self.api_tasks {
            task.abort();
        }
        if let Some(server) = self.plugin_server {
            server.shutdown();
        }
        if result.is_ok() {
            tracing::info!("node stopped");
        }
        result.map_err(Into::into)
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); only SIGINT stops the agent");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::mkworld::WorldSpec;
    use crate::client::ApiClient;
    use crate::home::tests::TempDir;
    use crate::transport::UdpTransport;
    use serde_json::{json, Value};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A UDP port free right now (and very likely still free a moment later).
    fn free_port() -> u16 {
        let transport = UdpTransport::bind(0).expect("bind");
        transport.port().expect("port")
    }

    /// Writes a planet whose only root is `root` at 127.0.0.1:`port` into each home.
    fn write_test_planet(root: &node_core::Identity, port: u16, homes: &[&Home]) {
        let mut spec = crate::cli::mkworld::template(
            node_core::world::WorldKind::Planet,
            &[root.public_only()],
        );
        spec["roots"][0]["stableEndpoints"] = json!([format!("127.0.0.1/{port}")]);
        let world = WorldSpec::parse(&spec.to_string(), 1)
            .expect("valid spec")
            .make();
        for home in homes {
            home.save_planet(&world).expect("save planet");
        }
    }

    struct Running {
        address: Address,
        client: ApiClient,
        stop: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    }

    async fn start(home: &Home, port: u16) -> Running {
        let options = RunOptions {
            home: home.root().to_path_buf(),
            port,
            api_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            socket: None,
            controller_credentials: None,
        };
        let agent = Agent::start(&options).await.expect("agent starts");
        let address = agent.address;
        let client = ApiClient::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, agent.port)),
            agent.token.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        Running {
            address,
            client,
            stop,
            task,
        }
    }

    async fn call(client: &ApiClient, method: &'static str, path: String) -> (u16, Value) {
        let client = client.clone();
        let response = tokio::task::spawn_blocking(move || client.request(method, &path, b""))
            .await
            .expect("join")
            .expect("request");
        (
            response.status,
            serde_json::from_str(&response.body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaf_reaches_its_private_root_over_loopback() {
        let root_dir = TempDir::new("agent-root");
        let leaf_dir = TempDir::new("agent-leaf");
        let root_home = Home::new(root_dir.path());
        let leaf_home = Home::new(leaf_dir.path());
        root_home.create().expect("create");
        leaf_home.create().expect("create");
        let root_identity = root_home
            .load_or_create_identity(&mut OsRng)
            .expect("identity")
            .identity;
        let root_port = free_port();
        write_test_planet(&root_identity, root_port, &[&root_home, &leaf_home]);

        let root = start(&root_home, root_port).await;
        let leaf = start(&leaf_home, 0).await;
        assert_eq!(root.address, root_identity.address());

        // The leaf says HELLO to its root at start; an ECHO confirms the path.
        let mut echoed = None;
        for _ in 0..10 {
            let (status, body) =
                call(&leaf.client, "POST", format!("/echo/{}", root.address)).await;
            if status == 200 {
                echoed = Some(body);
                break;
            }
            assert_eq!(status, 504, "{body}");
        }
        let echoed = echoed.expect("the root answers ECHO");
        assert_eq!(echoed["address"], root.address.to_string());
        assert_eq!(echoed["path"], format!("127.0.0.1/{root_port}"));
        assert!(echoed["rtt"].as_f64().is_some_and(|rtt| rtt >= 0.0));

        let (status, peers) = call(&leaf.client, "GET", "/peer".to_string()).await;
        assert_eq!(status, 200);
        let root_entry = peers
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|p| p["address"] == root.address.to_string())
            })
            .expect("the root is a peer")
            .clone();
        assert_eq!(root_entry["role"], "PLANET");
        assert!(root_entry["paths"]
            .as_array()
            .is_some_and(|paths| !paths.is_empty()));

        let (status, info) = call(&leaf.client, "GET", "/status".to_string()).await;
        assert_eq!(status, 200);
        assert_eq!(info["address"], leaf.address.to_string());
        assert_eq!(info["online"], true);
        assert_eq!(
            leaf_home.read_port(),
            Some(info["config"]["settings"]["primaryPort"].as_u64().unwrap() as u16)
        );

        for running in [root, leaf] {
            let _ = running.stop.send(());
            tokio::time::timeout(Duration::from_secs(5), running.task)
                .await
                .expect("stops promptly")
                .expect("join")
                .expect("clean exit");
        }
    }
}
