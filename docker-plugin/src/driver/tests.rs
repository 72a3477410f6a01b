//! The driver against an in-memory agent that keeps the plugin API's contract (and the
//! proposed additions): every libnetwork call's JSON, the flows, the errors, restarts.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use node_core::vl2::Mac;
use node_core::Address;
use serde_json::json;
use zt_agent::plugin_api::{ApiError, DetachResponse, EndpointState, GcResponse, Route, Status};

use super::*;
use crate::agent::AgentFuture;

const NWID: &str = "8056c2e21c000001";
const PRIVATE_NWID: &str = "8056c2e21c000002";
/// On this network members get a default route through 10.147.18.1.
const GATEWAY_NWID: &str = "8056c2e21c000003";

/// An agent in memory: endpoints by key, identities kept per key, and knobs.
#[derive(Default)]
struct FakeAgent {
    down: AtomicBool,
    sandbox_unsupported: AtomicBool,
    next_member: AtomicU64,
    inner: Mutex<FakeInner>,
}

#[derive(Default)]
struct FakeInner {
    endpoints: HashMap<EndpointKey, Endpoint>,
    identities: HashMap<EndpointKey, Address>,
    authorized: BTreeSet<Address>,
    sandboxes: HashMap<EndpointKey, Option<PathBuf>>,
    calls: Vec<String>,
}

impl FakeAgent {
    fn unreachable() -> AgentError {
        AgentError::Unreachable {
            socket: "/run/zt-agent/agent.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn authorize(&self, member: &str) {
        let address: Address = member.parse().unwrap();
        self.inner.lock().unwrap().authorized.insert(address);
    }

    fn endpoint_count(&self) -> usize {
        self.inner.lock().unwrap().endpoints.len()
    }

    fn identity_count(&self) -> usize {
        self.inner.lock().unwrap().identities.len()
    }

    fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    fn sandbox_of(&self, key: &EndpointKey) -> Option<Option<PathBuf>> {
        self.inner.lock().unwrap().sandboxes.get(key).cloned()
    }

    fn describe(request: &AttachRequest, member: Address, index: u64) -> Endpoint {
        let network = request.network.to_string();
        let (subnet, gateway) = if network == GATEWAY_NWID {
            ("10.147.18", true)
        } else {
            ("10.147.17", false)
        };
        let mut routes = vec![
            Route {
                dst: format!("{subnet}.0/24").parse().unwrap(),
                gateway: None,
            },
            Route {
                dst: "10.10.0.0/16".parse().unwrap(),
                gateway: Some(format!("{subnet}.1").parse().unwrap()),
            },
            Route {
                dst: "fd80:56c2:e21c:0:199:9300::/88".parse().unwrap(),
                gateway: None,
            },
        ];
        if gateway {
            routes.push(Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: Some(format!("{subnet}.1").parse().unwrap()),
            });
        }
        Endpoint {
            key: request.key.clone(),
            owner: request.owner.clone(),
            network: request.network,
            container_id: request.container_id.clone(),
            netns: None,
            if_name: request.if_name.clone(),
            mac: Mac::from_address(member, request.network),
            address: member,
            ips: vec![
                format!("{subnet}.{}/24", 10 + index).parse().unwrap(),
                format!("fd80:56c2:e21c:0:199:9300:0:{index:x}/88")
                    .parse()
                    .unwrap(),
            ],
            routes,
            gateway: None,
            mtu: request.mtu.unwrap_or(2800),
            state: EndpointState::Ready,
            dns: None,
            counters: Default::default(),
        }
    }
}

impl Agent for FakeAgent {
    fn attach(&self, request: AttachRequest) -> AgentFuture<'_, Endpoint> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            assert!(
                request.netns.is_none(),
                "the Docker plugin attaches without netns"
            );
            let mut inner = self.inner.lock().unwrap();
            inner.calls.push(format!("attach {}", request.key));
            let member = match inner.identities.get(&request.key) {
                Some(member) => *member,
                None => {
                    let n = self.next_member.fetch_add(1, Ordering::SeqCst) + 1;
                    let member = Address::from_u64(0xa1_0000_0000 + n);
                    inner.identities.insert(request.key.clone(), member);
                    member
                }
            };
            let index = member.to_u64() & 0xff;
            let endpoint = match inner.endpoints.get(&request.key) {
                Some(existing)
                    if existing.container_id == request.container_id
                        && existing.if_name == request.if_name =>
                {
                    existing.clone()
                }
                _ => Self::describe(&request, member, index),
            };
            inner
                .endpoints
                .insert(request.key.clone(), endpoint.clone());
            if request.network.to_string() == PRIVATE_NWID && !inner.authorized.contains(&member) {
                return Err(AgentError::Api(ApiError::not_authorized(
                    request.network,
                    member,
                )));
            }
            Ok(endpoint)
        })
    }

    fn detach(&self, request: DetachRequest) -> AgentFuture<'_, DetachResponse> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            let mut inner = self.inner.lock().unwrap();
            inner.calls.push(format!(
                "detach {}{}",
                request.key,
                if request.keep_identity { " keep" } else { "" }
            ));
            let matches = inner.endpoints.get(&request.key).is_some_and(|e| {
                request
                    .container_id
                    .as_ref()
                    .is_none_or(|c| *c == e.container_id)
                    && request.if_name.as_ref().is_none_or(|n| *n == e.if_name)
            });
            if matches {
                inner.endpoints.remove(&request.key);
                inner.sandboxes.remove(&request.key);
            }
            if !request.keep_identity && (matches || !inner.endpoints.contains_key(&request.key)) {
                inner.identities.remove(&request.key);
            }
            Ok(DetachResponse { detached: matches })
        })
    }

    fn sandbox(&self, request: SandboxRequest) -> AgentFuture<'_, Endpoint> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            if self.sandbox_unsupported.load(Ordering::SeqCst) {
                return Err(AgentError::Api(ApiError::new(
                    ErrorCode::UnsupportedOperation,
                    "no operation POST /v1/sandbox",
                )));
            }
            let mut inner = self.inner.lock().unwrap();
            let Some(endpoint) = inner.endpoints.get(&request.key).cloned() else {
                return Err(AgentError::Api(ApiError::new(
                    ErrorCode::NotFound,
                    "no such endpoint",
                )));
            };
            inner.sandboxes.insert(request.key, request.sandbox);
            Ok(endpoint)
        })
    }

    fn status(&self) -> AgentFuture<'_, Status> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            Ok(Status {
                ready: true,
                address: None,
                version: "test".into(),
                endpoints: self.endpoint_count(),
                reason: None,
            })
        })
    }

    fn gc(&self, request: GcRequest) -> AgentFuture<'_, GcResponse> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            let mut inner = self.inner.lock().unwrap();
            let gone: Vec<EndpointKey> = inner
                .endpoints
                .values()
                .filter(|e| !request.keeps(e))
                .map(|e| e.key.clone())
                .collect();
            for key in &gone {
                inner.endpoints.remove(key);
                inner.identities.remove(key);
            }
            Ok(GcResponse {
                removed: gone,
                failed: Vec::new(),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    agent: Arc<FakeAgent>,
    driver: Driver,
    dir: PathBuf,
}

impl Harness {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("zt-docker-driver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let agent = Arc::new(FakeAgent::default());
        let driver = Self::driver(&agent, &dir);
        Self { agent, driver, dir }
    }

    fn driver(agent: &Arc<FakeAgent>, dir: &Path) -> Driver {
        let config = DriverConfig {
            max_spares: 2,
            ..DriverConfig::default()
        };
        Driver::new(agent.clone(), StateStore::new(dir), config).unwrap()
    }

    /// The plugin restarted over the same state directory.
    fn restart(&mut self) {
        self.driver = Self::driver(&self.agent, &self.dir);
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, String> {
        let body = serde_json::to_vec(&body).unwrap();
        match self.driver.handle(method, &body).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(format!("404 {method}")),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn ok(&self, method: &str, body: Value) -> Value {
        match self.call(method, body).await {
            Ok(answer) => answer,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    async fn err(&self, method: &str, body: Value) -> String {
        match self.call(method, body).await {
            Ok(answer) => panic!("{method} succeeded with {answer}"),
            Err(error) => error,
        }
    }

    /// `docker network create` as libnetwork calls it; returns the v4 (and v6) pool IDs.
    async fn create_network(&self, id: &str, options: Value, subnet6: Option<&str>) -> Vec<String> {
        let v4 = self
            .ok("IpamDriver.RequestPool", json!({"AddressSpace": "zerotier", "Pool": "", "SubPool": "", "Options": {}, "V6": false}))
            .await;
        let mut pools = vec![v4["PoolID"].as_str().unwrap().to_string()];
        let mut ipv6_data = json!([]);
        if let Some(subnet) = subnet6 {
            let v6 = self
                .ok(
                    "IpamDriver.RequestPool",
                    json!({"AddressSpace": "zerotier", "Pool": subnet, "V6": true}),
                )
                .await;
            pools.push(v6["PoolID"].as_str().unwrap().to_string());
            ipv6_data = json!([{"AddressSpace": "zerotier", "Pool": subnet, "Gateway": subnet}]);
        }
        self.ok(
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": id,
                "Options": {"com.docker.network.generic": options, "com.docker.network.enable_ipv6": subnet6.is_some()},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}],
                "IPv6Data": ipv6_data
            }),
        )
        .await;
        pools
    }

    async fn request_address(&self, pool: &str, address: &str) -> Result<String, String> {
        self.call(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": address, "Options": {}}),
        )
        .await
        .map(|answer| answer["Address"].as_str().unwrap().to_string())
    }

    async fn create_endpoint(
        &self,
        network: &str,
        endpoint: &str,
        address: &str,
        options: Value,
    ) -> Result<Value, String> {
        self.call(
            "NetworkDriver.CreateEndpoint",
            json!({
                "NetworkID": network, "EndpointID": endpoint,
                "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
                "Options": options
            }),
        )
        .await
    }

    /// A whole `docker run`: address, endpoint, join. Returns (address, Join's answer).
    async fn run_container(&self, network: &str, pool: &str, endpoint: &str) -> (String, Value) {
        let address = self.request_address(pool, "").await.unwrap();
        self.create_endpoint(network, endpoint, &address, json!({}))
            .await
            .unwrap();
        let join = self
            .ok(
                "NetworkDriver.Join",
                json!({"NetworkID": network, "EndpointID": endpoint, "SandboxKey": format!("/var/run/docker/netns/{endpoint}"), "Options": {}}),
            )
            .await;
        (address, join)
    }

    /// A whole `docker rm -f`: leave, delete the endpoint, release its address.
    async fn remove_container(&self, network: &str, pool: &str, endpoint: &str, address: &str) {
        let target = json!({"NetworkID": network, "EndpointID": endpoint});
        self.ok("NetworkDriver.Leave", target.clone()).await;
        self.ok("NetworkDriver.DeleteEndpoint", target).await;
        let ip = address.split('/').next().unwrap();
        self.ok(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool, "Address": ip}),
        )
        .await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn zt_options() -> Value {
    json!({"zerotier.network": NWID})
}

// ---------------------------------------------------------------------------------------------
// Handshake and fixed answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn activation_and_capabilities_answer_docker_shapes() {
    let h = Harness::new("activate");
    assert_eq!(
        h.ok("Plugin.Activate", Value::Null).await,
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    assert_eq!(
        h.ok("NetworkDriver.GetCapabilities", Value::Null).await,
        json!({"Scope": "local", "ConnectivityScope": "global"})
    );
    assert_eq!(
        h.ok("IpamDriver.GetCapabilities", Value::Null).await,
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(
        h.ok("IpamDriver.GetDefaultAddressSpaces", Value::Null)
            .await,
        json!({"LocalDefaultAddressSpace": "zerotier", "GlobalDefaultAddressSpace": "zerotier-global"})
    );
    assert_eq!(
        h.ok(
            "NetworkDriver.AllocateNetwork",
            json!({"NetworkID": "n", "Options": {}})
        )
        .await,
        json!({"Options": {}})
    );
    for method in [
        "NetworkDriver.FreeNetwork",
        "NetworkDriver.DiscoverNew",
        "NetworkDriver.DiscoverDelete",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
    ] {
        assert_eq!(h.ok(method, json!({})).await, json!({}), "{method}");
    }
    assert_eq!(
        h.ok(
            "NetworkDriver.DiscoverNew",
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1", "self": true}})
        )
        .await,
        json!({})
    );
    assert_eq!(
        h.err("NetworkDriver.Teleport", json!({})).await,
        "404 NetworkDriver.Teleport"
    );
    // The driver works with bodies Docker sends for calls that take none.
    let body: &[u8] = b"";
    assert!(h
        .driver
        .handle("Plugin.Activate", body)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn malformed_bodies_are_clear_errors() {
    let h = Harness::new("malformed");
    let error = h
        .driver
        .handle("NetworkDriver.CreateNetwork", b"{\"NetworkID\": ")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("malformed request body"), "{error}");
    let error = h
        .err(
            "IpamDriver.RequestPool",
            json!({"Options": {"zerotier.network": 5}}),
        )
        .await;
    assert!(error.starts_with("malformed request body"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_network_refuses_missing_and_malformed_ids_without_leaving_anything() {
    let h = Harness::new("bad-network");
    let pool = h
        .ok("IpamDriver.RequestPool", json!({"Pool": "", "V6": false}))
        .await;
    assert_eq!(pool["Pool"], "0.0.0.0/0");
    assert_eq!(
        pool["Data"],
        json!({"com.docker.network.gateway": "0.0.0.0/0"})
    );
    let create = |generic: Value| {
        json!({
            "NetworkID": "n1",
            "Options": {"com.docker.network.generic": generic},
            "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}]
        })
    };
    let error = h
        .err("NetworkDriver.CreateNetwork", create(json!({})))
        .await;
    assert_eq!(
        error,
        "zerotier.network is missing: docker network create -d zerotier --ipam-driver zerotier \
         -o zerotier.network=<16 hex digit network ID> NAME"
    );
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            create(json!({"zerotier.network": "8056c2e21c00001"})),
        )
        .await;
    assert_eq!(
        error,
        "zerotier.network \"8056c2e21c00001\" is not a ZeroTier network ID (16 hex digits, e.g. \
         8056c2e21c000001)"
    );
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            create(json!({"network": "zzzzzzzzzzzzzzzz"})),
        )
        .await;
    assert!(
        error.starts_with("network \"zzzzzzzzzzzzzzzz\" is not a ZeroTier network ID"),
        "{error}"
    );
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            create(json!({"zerotier.netwrok": NWID})),
        )
        .await;
    assert!(
        error.starts_with("unknown option zerotier.netwrok"),
        "{error}"
    );
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            create(json!({"zerotier.network": NWID, "network": "8056c2e21c000009"})),
        )
        .await;
    assert!(error.contains("disagree"), "{error}");
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            create(json!({"zerotier.network": NWID, "com.docker.network.driver.mtu": "100"})),
        )
        .await;
    assert!(
        error.contains("is not an MTU from 1280 to 10000"),
        "{error}"
    );
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.generic": {"network": NWID}}}),
        )
        .await;
    assert!(error.contains("--ipam-driver zerotier"), "{error}");
    // Nothing was created, the pool is still free for a corrected command.
    let state = h.driver.snapshot();
    assert!(state.networks.is_empty());
    assert!(state.pools.values().all(|p| p.network.is_none()));
    assert!(h.agent.calls().is_empty());
    // The short option works.
    h.ok(
        "NetworkDriver.CreateNetwork",
        create(json!({"network": NWID})),
    )
    .await;
    assert_eq!(
        h.driver.snapshot().networks["n1"].zt_network.to_string(),
        NWID
    );
}

#[tokio::test]
async fn create_network_with_the_agent_down_fails_and_leaves_nothing() {
    let h = Harness::new("network-agent-down");
    h.agent.set_down(true);
    h.ok("IpamDriver.RequestPool", json!({})).await;
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": "n1",
                "Options": {"com.docker.network.generic": zt_options()},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}]
            }),
        )
        .await;
    assert!(
        error.starts_with("cannot reach zt-agent at /run/zt-agent/agent.sock"),
        "{error}"
    );
    assert!(error.contains("systemctl start zt-agent"), "{error}");
    assert!(h.driver.snapshot().networks.is_empty());
}

#[tokio::test]
async fn pools_refuse_what_the_controller_decides() {
    let h = Harness::new("pools");
    let error = h
        .err(
            "IpamDriver.RequestPool",
            json!({"Pool": "10.147.17.0/24", "SubPool": "10.147.17.0/28"}),
        )
        .await;
    assert!(
        error.starts_with("--ip-range 10.147.17.0/28 is not supported"),
        "{error}"
    );
    let error = h.err("IpamDriver.RequestPool", json!({"V6": true})).await;
    assert!(error.contains("--subnet"), "{error}");
    let error = h
        .err(
            "IpamDriver.RequestPool",
            json!({"Pool": "10.147.17.0/24", "V6": true}),
        )
        .await;
    assert!(error.contains("not an IPv6 subnet"), "{error}");
    let error = h
        .err(
            "IpamDriver.RequestPool",
            json!({"Options": {"zerotier.network": "nope"}}),
        )
        .await;
    assert!(error.contains("is not a ZeroTier network ID"), "{error}");
    // A user subnet is kept (normalized), with itself as the gateway label.
    let pool = h
        .ok("IpamDriver.RequestPool", json!({"Pool": "10.147.17.9/24"}))
        .await;
    assert_eq!(pool["Pool"], "10.147.17.0/24");
    assert!(pool["PoolID"].as_str().unwrap().starts_with("zt-pool-"));
    let pool_id = pool["PoolID"].as_str().unwrap();
    // --gateway is a label; --aux-address is refused.
    let gateway = h
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "10.147.17.1", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        )
        .await;
    assert_eq!(gateway, json!({"Address": "10.147.17.1/24", "Data": {}}));
    let error = h
        .err(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "10.147.17.9"}),
        )
        .await;
    assert!(
        error.starts_with("--aux-address is not supported"),
        "{error}"
    );
    let error = h
        .err(
            "IpamDriver.RequestAddress",
            json!({"PoolID": "zt-pool-nope"}),
        )
        .await;
    assert!(error.contains("is unknown to zt-docker-plugin"), "{error}");
    h.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
    h.ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
    assert!(!h.driver.snapshot().pools.contains_key(pool_id));
}

#[tokio::test]
async fn simultaneous_creations_are_refused_rather_than_guessed() {
    let h = Harness::new("ambiguous");
    let data = json!([{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}]);
    h.ok("IpamDriver.RequestPool", json!({})).await;
    h.ok("IpamDriver.RequestPool", json!({})).await;
    let error = h
        .err(
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.generic": zt_options()}, "IPv4Data": data}),
        )
        .await;
    assert!(error.contains("run the command again"), "{error}");
    // Pools that name their ZeroTier network bind without doubt.
    let h = Harness::new("named-pools");
    let a = h
        .ok(
            "IpamDriver.RequestPool",
            json!({"Options": {"zerotier.network": NWID}}),
        )
        .await;
    let b = h
        .ok(
            "IpamDriver.RequestPool",
            json!({"Options": {"zerotier.network": PRIVATE_NWID}}),
        )
        .await;
    h.ok(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": "nb", "Options": {"com.docker.network.generic": {"network": PRIVATE_NWID}}, "IPv4Data": data}),
    )
    .await;
    h.ok(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": "na", "Options": {"com.docker.network.generic": zt_options()}, "IPv4Data": data}),
    )
    .await;
    let state = h.driver.snapshot();
    assert_eq!(
        state.pools[a["PoolID"].as_str().unwrap()]
            .network
            .as_deref(),
        Some("na")
    );
    assert_eq!(
        state.pools[b["PoolID"].as_str().unwrap()]
            .network
            .as_deref(),
        Some("nb")
    );
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_container_gets_its_members_address_and_leaves_nothing_behind() {
    let h = Harness::new("flow");
    let pools = h.create_network("n1", zt_options(), None).await;
    let pool = &pools[0];
    let address = h.request_address(pool, "").await.unwrap();
    assert_eq!(address, "10.147.17.11/24");
    let state = h.driver.snapshot();
    let (id, reservation) = state.reservations.iter().next().unwrap();
    assert_eq!(reservation.phase, Phase::Reserved);
    assert_eq!(reservation.agent_key.to_string(), format!("docker/{id}"));
    assert_eq!(reservation.if_name.to_string(), format!("ztd{id}"));
    let mac = reservation.mac.clone().unwrap();

    let answer = h
        .create_endpoint(
            "n1",
            "e1",
            &address,
            json!({"com.docker.network.endpoint.exposedports": []}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"Interface": {"MacAddress": mac}}));
    // Docker retries calls; the same answer comes back.
    let again = h
        .create_endpoint("n1", "e1", &address, json!({}))
        .await
        .unwrap();
    assert_eq!(again, answer);

    let join = h
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e1", "SandboxKey": "/var/run/docker/netns/abc", "Options": {}}),
        )
        .await;
    assert_eq!(
        join,
        json!({
            "InterfaceName": {"SrcName": format!("ztd{id}"), "DstPrefix": "eth"},
            "StaticRoutes": [{"Destination": "10.10.0.0/16", "RouteType": 0, "NextHop": "10.147.17.1"}],
            "DisableGatewayService": false
        })
    );
    let key = reservation.agent_key.clone();
    assert_eq!(
        h.agent.sandbox_of(&key),
        Some(Some(PathBuf::from("/var/run/docker/netns/abc")))
    );
    let info = h
        .ok(
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": "n1", "EndpointID": "e1"}),
        )
        .await;
    assert_eq!(info["Value"]["zerotier.network"], NWID);
    assert_eq!(info["Value"]["zerotier.interface"], format!("ztd{id}"));
    assert!(info["Value"]["zerotier.member"].is_string());

    h.ok(
        "NetworkDriver.Leave",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    )
    .await;
    assert_eq!(h.agent.sandbox_of(&key), Some(None));
    h.ok(
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    )
    .await;
    h.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool, "Address": "10.147.17.11"}),
    )
    .await;
    h.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"}))
        .await;
    h.ok("IpamDriver.ReleasePool", json!({"PoolID": pool}))
        .await;

    assert_eq!(h.agent.endpoint_count(), 0, "no endpoint left in the agent");
    assert_eq!(h.agent.identity_count(), 0, "no identity left in the agent");
    let state = h.driver.snapshot();
    assert!(state.reservations.is_empty() && state.networks.is_empty() && state.pools.is_empty());
    assert_eq!(
        h.agent.calls(),
        [format!("attach {key}"), format!("detach {key}")]
    );
}

#[tokio::test]
async fn two_containers_get_two_members_and_ipv6_comes_from_the_same_member() {
    let h = Harness::new("ipv6");
    let pools = h
        .create_network("n1", zt_options(), Some("fd80:56c2:e21c:0:199:9300::/88"))
        .await;
    let (v4_pool, v6_pool) = (&pools[0], &pools[1]);
    let first4 = h.request_address(v4_pool, "").await.unwrap();
    let first6 = h.request_address(v6_pool, "").await.unwrap();
    assert_eq!(first4, "10.147.17.11/24");
    assert_eq!(first6, "fd80:56c2:e21c:0:199:9300:0:1/88");
    h.call(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e1", "Interface": {"Address": first4, "AddressIPv6": first6}}),
    )
    .await
    .unwrap();
    let second4 = h.request_address(v4_pool, "").await.unwrap();
    let second6 = h.request_address(v6_pool, "").await.unwrap();
    assert_eq!(second4, "10.147.17.12/24");
    assert_eq!(second6, "fd80:56c2:e21c:0:199:9300:0:2/88");
    // Docker 28 without IPv4: the IPv6 address alone finds the member.
    h.call(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e2", "Interface": {"AddressIPv6": second6}}),
    )
    .await
    .unwrap();
    let join = h
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e2", "SandboxKey": "/x"}),
        )
        .await;
    // The IPv6 subnet is the address's own: no static route for it.
    assert_eq!(
        join["StaticRoutes"],
        json!([{"Destination": "10.10.0.0/16", "RouteType": 0, "NextHop": "10.147.17.1"}])
    );
    assert_eq!(h.agent.endpoint_count(), 2);
    // A --ip6 that is not the member's is refused.
    h.request_address(v4_pool, "").await.unwrap();
    let error = h.request_address(v6_pool, "fd00::1").await.unwrap_err();
    assert!(error.contains("leave out --ip6"), "{error}");
}

#[tokio::test]
async fn a_default_route_becomes_the_gateway() {
    let h = Harness::new("gateway");
    let pools = h
        .create_network("n1", json!({"zerotier.network": GATEWAY_NWID}), None)
        .await;
    let (_, join) = h.run_container("n1", &pools[0], "e1").await;
    assert_eq!(join["Gateway"], "10.147.18.1");
    assert_eq!(
        join["StaticRoutes"],
        json!([{"Destination": "10.10.0.0/16", "RouteType": 0, "NextHop": "10.147.18.1"}])
    );
}

#[tokio::test]
async fn request_address_with_the_agent_down_fails_and_leaves_nothing() {
    let h = Harness::new("address-agent-down");
    let pools = h.create_network("n1", zt_options(), None).await;
    h.agent.set_down(true);
    let error = h.request_address(&pools[0], "").await.unwrap_err();
    assert!(error.starts_with("cannot reach zt-agent"), "{error}");
    assert!(h.driver.snapshot().reservations.is_empty());
    assert_eq!(h.agent.endpoint_count(), 0);
    h.agent.set_down(false);
    assert_eq!(
        h.request_address(&pools[0], "").await.unwrap(),
        "10.147.17.11/24"
    );
}

#[tokio::test]
async fn an_unauthorized_member_is_named_and_is_the_one_the_next_container_gets() {
    let h = Harness::new("unauthorized");
    let pools = h
        .create_network("n1", json!({"zerotier.network": PRIVATE_NWID}), None)
        .await;
    let error = h.request_address(&pools[0], "").await.unwrap_err();
    assert!(
        error.starts_with("network 8056c2e21c000002 is private and member a100000001 is not authorized: authorize member a100000001"),
        "{error}"
    );
    // Kept as a spare, attached in the agent.
    let state = h.driver.snapshot();
    assert_eq!(state.reservations.len(), 1);
    assert_eq!(
        state.reservations.values().next().unwrap().phase,
        Phase::Spare
    );
    // Until authorized, every try names the same member.
    let error = h.request_address(&pools[0], "").await.unwrap_err();
    assert!(error.contains("member a100000001 "), "{error}");
    assert_eq!(h.agent.identity_count(), 1);
    h.agent.authorize("a100000001");
    let address = h.request_address(&pools[0], "").await.unwrap();
    assert_eq!(address, "10.147.17.11/24");
    assert_eq!(h.agent.identity_count(), 1);
    // The network's removal takes leftovers (reservations and spares) with it.
    h.agent.inner.lock().unwrap().authorized.clear();
    h.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pools[0], "Address": "10.147.17.11"}),
    )
    .await;
    let error = h.request_address(&pools[0], "").await.unwrap_err();
    assert!(error.contains("is not authorized"), "{error}");
    assert_eq!(h.driver.snapshot().reservations.len(), 1);
    h.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"}))
        .await;
    assert!(h.driver.snapshot().reservations.is_empty());
    assert_eq!(h.agent.endpoint_count(), 0);
    assert_eq!(h.agent.identity_count(), 0);
}

#[tokio::test]
async fn spares_are_bounded() {
    let h = Harness::new("spares");
    let pools = h
        .create_network("n1", json!({"zerotier.network": PRIVATE_NWID}), None)
        .await;
    // Concurrent failures can leave more spares than max_spares (2); the next failure
    // trims them.
    for id in ["000000000001", "000000000002", "000000000003"] {
        h.driver
            .update(|state| {
                let mut r = new_reservation(id, PRIVATE_NWID.parse().unwrap(), "n1", 1);
                r.phase = Phase::Spare;
                r.docker_network = None;
                state.reservations.insert(id.into(), r);
                Ok(())
            })
            .unwrap();
    }
    h.request_address(&pools[0], "").await.unwrap_err();
    // The oldest spare was reused, failed again and was detached: two spares left.
    let spares = h
        .driver
        .snapshot()
        .reservations
        .values()
        .filter(|r| r.phase == Phase::Spare)
        .count();
    assert_eq!(spares, 2);
}

#[tokio::test]
async fn create_endpoint_errors_say_what_to_do() {
    let h = Harness::new("endpoint-errors");
    let pools = h.create_network("n1", zt_options(), None).await;
    let error = h
        .create_endpoint("nope", "e1", "10.147.17.11/24", json!({}))
        .await
        .unwrap_err();
    assert!(
        error.starts_with("Docker network nope is unknown to zt-docker-plugin"),
        "{error}"
    );
    let error = h
        .create_endpoint("n1", "e1", "", json!({}))
        .await
        .unwrap_err();
    assert!(
        error.contains("create the network with --ipam-driver zerotier"),
        "{error}"
    );
    let error = h
        .create_endpoint("n1", "e1", "10.147.17.99/24", json!({}))
        .await
        .unwrap_err();
    assert!(
        error.starts_with("no ZeroTier member was reserved for address 10.147.17.99/24"),
        "{error}"
    );
    let error = h
        .create_endpoint("n1", "e1", "10.147.17.99", json!({}))
        .await
        .unwrap_err();
    assert!(error.contains("is not address/prefix"), "{error}");
    let address = h.request_address(&pools[0], "").await.unwrap();
    let error = h
        .call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n1", "EndpointID": "e1", "Interface": {"Address": address, "MacAddress": "02:42:ac:11:00:02"}}),
        )
        .await
        .unwrap_err();
    assert!(error.contains("leave out --mac-address"), "{error}");
    let error = h
        .create_endpoint("n1", "e1", &address, json!({"zerotier.key": "no spaces"}))
        .await
        .unwrap_err();
    assert!(error.contains("is not 1 to 64 characters"), "{error}");
    // The member's own MAC given back: accepted, and not returned again.
    let mac = h
        .driver
        .snapshot()
        .reservations
        .values()
        .next()
        .unwrap()
        .mac
        .clone()
        .unwrap();
    let answer = h
        .call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n1", "EndpointID": "e1", "Interface": {"Address": address, "MacAddress": mac.to_uppercase()}}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({}));
    let error = h
        .err(
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e9"}),
        )
        .await;
    assert!(
        error.starts_with("endpoint e9 is unknown to zt-docker-plugin"),
        "{error}"
    );
}

#[tokio::test]
async fn teardown_calls_are_idempotent_for_unknown_ids() {
    let h = Harness::new("idempotent");
    for (method, body) in [
        (
            "NetworkDriver.Leave",
            json!({"NetworkID": "n", "EndpointID": "e"}),
        ),
        (
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": "n", "EndpointID": "e"}),
        ),
        ("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n"})),
        (
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": "p", "Address": "10.0.0.1"}),
        ),
        (
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": "p", "Address": "junk"}),
        ),
        ("IpamDriver.ReleasePool", json!({"PoolID": "p"})),
        (
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": "n", "EndpointID": "e"}),
        ),
    ] {
        let answer = h.ok(method, body).await;
        assert!(
            answer == json!({}) || answer == json!({"Value": {}}),
            "{method}: {answer}"
        );
    }
    assert!(h.agent.calls().is_empty());
}

#[tokio::test]
async fn docker_rolling_back_an_endpoint_releases_its_member() {
    let h = Harness::new("rollback");
    let pools = h.create_network("n1", zt_options(), None).await;
    let address = h.request_address(&pools[0], "").await.unwrap();
    // CreateEndpoint failed elsewhere; Docker releases the address.
    h.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pools[0], "Address": address.split('/').next().unwrap()}),
    )
    .await;
    assert!(h.driver.snapshot().reservations.is_empty());
    assert_eq!(h.agent.endpoint_count(), 0);
    assert_eq!(h.agent.identity_count(), 0);
}

#[tokio::test]
async fn detaches_while_the_agent_is_down_are_queued_and_replayed() {
    let h = Harness::new("queued");
    let pools = h.create_network("n1", zt_options(), None).await;
    let (address, _) = h.run_container("n1", &pools[0], "e1").await;
    h.agent.set_down(true);
    // Leave and DeleteEndpoint must not fail: Docker could not finish the container's stop.
    h.remove_container("n1", &pools[0], "e1", &address).await;
    let state = h.driver.snapshot();
    assert!(state.reservations.is_empty());
    assert_eq!(state.pending_detaches.len(), 1);
    assert!(!h.driver.retry_detaches().await);
    h.agent.set_down(false);
    // Also survives a plugin restart.
    let mut h = h;
    h.restart();
    assert!(h.driver.retry_detaches().await);
    assert!(h.driver.snapshot().pending_detaches.is_empty());
    assert_eq!(h.agent.endpoint_count(), 0);
    assert_eq!(h.agent.identity_count(), 0);
}

#[tokio::test]
async fn reservations_docker_forgot_are_reaped() {
    let h = Harness::new("reap");
    let pools = h.create_network("n1", zt_options(), None).await;
    let (_, _) = h.run_container("n1", &pools[0], "e1").await;
    h.request_address(&pools[0], "").await.unwrap();
    assert_eq!(h.agent.endpoint_count(), 2);
    h.driver.reap_stale_reservations(now()).await;
    assert_eq!(h.agent.endpoint_count(), 2, "too young to be a leftover");
    h.driver
        .reap_stale_reservations(now() + STALE_RESERVATION_SECS + 1)
        .await;
    assert_eq!(
        h.agent.endpoint_count(),
        1,
        "the container's endpoint stays"
    );
    assert_eq!(h.driver.snapshot().reservations.len(), 1);
}

#[tokio::test]
async fn join_with_the_agent_down_fails_clearly() {
    let h = Harness::new("join-down");
    let pools = h.create_network("n1", zt_options(), None).await;
    let address = h.request_address(&pools[0], "").await.unwrap();
    h.create_endpoint("n1", "e1", &address, json!({}))
        .await
        .unwrap();
    h.agent.set_down(true);
    let error = h
        .err(
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e1", "SandboxKey": "/x"}),
        )
        .await;
    assert!(error.starts_with("cannot reach zt-agent"), "{error}");
}

#[tokio::test]
async fn an_agent_without_sandbox_still_serves_join() {
    let h = Harness::new("no-sandbox");
    h.agent.sandbox_unsupported.store(true, Ordering::SeqCst);
    let pools = h.create_network("n1", zt_options(), None).await;
    let (_, join) = h.run_container("n1", &pools[0], "e1").await;
    assert!(join["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .starts_with("ztd"));
    h.ok(
        "NetworkDriver.Leave",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Stable keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stable_key_keeps_the_member_across_recreation() {
    let h = Harness::new("stable");
    let pools = h.create_network("n1", zt_options(), None).await;
    let pool = &pools[0];
    let key = json!({"zerotier.key": "web"});
    let address = h.request_address(pool, "").await.unwrap();
    h.create_endpoint("n1", "e1", &address, key.clone())
        .await
        .unwrap();
    let member = h.driver.snapshot().keys[&format!("{NWID}/web")]
        .member
        .clone();
    h.remove_container("n1", pool, "e1", &address).await;
    // The identity was kept, the endpoint went.
    assert_eq!(h.agent.endpoint_count(), 0);
    assert_eq!(h.agent.identity_count(), 1);
    assert!(h.agent.calls().last().unwrap().ends_with(" keep"));

    // Again without --ip: Docker took a new member's address before it passed the key.
    let fresh = h.request_address(pool, "").await.unwrap();
    let error = h
        .create_endpoint("n1", "e2", &fresh, key.clone())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        format!(
            "endpoint key web keeps ZeroTier member {member} with address 10.147.17.11, but \
             Docker asked for a new address before it passed the key: connect with --ip \
             10.147.17.11 as well (the Docker network needs --subnet)"
        )
    );
    // Docker rolls back: the fresh member is forgotten, the kept one stays.
    h.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pool, "Address": fresh.split('/').next().unwrap()}),
    )
    .await;
    assert_eq!(h.agent.identity_count(), 1);

    // With --ip, the same member and address.
    let again = h.request_address(pool, "10.147.17.11").await.unwrap();
    assert_eq!(again, address);
    h.create_endpoint("n1", "e3", &again, key.clone())
        .await
        .unwrap();
    let info = h
        .ok(
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": "n1", "EndpointID": "e3"}),
        )
        .await;
    assert_eq!(info["Value"]["zerotier.member"], member);
    assert_eq!(info["Value"]["zerotier.key"], "web");
    // In use: a second container cannot have it, and it cannot be forgotten.
    let error = h.request_address(pool, "10.147.17.11").await.unwrap_err();
    assert!(
        error.contains("which another endpoint is using now"),
        "{error}"
    );
    let error = h
        .err("ZeroTier.ForgetKey", json!({"Network": NWID, "Key": "web"}))
        .await;
    assert!(error.contains("disconnect it first"), "{error}");
    h.remove_container("n1", pool, "e3", &again).await;
    // Forgetting deletes the identity.
    let forgot = h
        .ok("ZeroTier.ForgetKey", json!({"Network": NWID, "Key": "web"}))
        .await;
    assert_eq!(forgot, json!({"Member": member}));
    assert_eq!(h.agent.identity_count(), 0);
    let error = h
        .err("ZeroTier.ForgetKey", json!({"Network": NWID, "Key": "web"}))
        .await;
    assert!(error.starts_with("there is no endpoint key web"), "{error}");
    // An --ip that no key had is refused.
    let error = h.request_address(pool, "10.147.17.200").await.unwrap_err();
    assert!(
        error.contains("is not the address of a kept endpoint key"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_restarted_plugin_serves_what_it_made_before() {
    let mut h = Harness::new("restart");
    let pools = h.create_network("n1", zt_options(), None).await;
    let address = h.request_address(&pools[0], "").await.unwrap();
    h.restart();
    // Docker never replays CreateNetwork or RequestAddress.
    h.create_endpoint("n1", "e1", &address, json!({}))
        .await
        .unwrap();
    h.restart();
    let join = h
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e1", "SandboxKey": "/x"}),
        )
        .await;
    assert!(join["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .starts_with("ztd"));
    h.restart();
    let second = h.request_address(&pools[0], "").await.unwrap();
    assert_ne!(second, address);
    h.restart();
    h.remove_container("n1", &pools[0], "e1", &address).await;
    h.ok(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": pools[0], "Address": second.split('/').next().unwrap()}),
    )
    .await;
    h.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "n1"}))
        .await;
    assert_eq!(h.agent.endpoint_count(), 0);
    assert_eq!(h.agent.identity_count(), 0);
}

#[tokio::test]
async fn recovery_detaches_interrupted_attaches_and_collects_strays() {
    let mut h = Harness::new("recover");
    let pools = h.create_network("n1", zt_options(), None).await;
    let (_, _) = h.run_container("n1", &pools[0], "e1").await;
    // An attach in flight when the plugin died: recorded, attached in the agent.
    let stray: AttachRequest = {
        let id = "00000000beef";
        h.driver
            .update(|state| {
                state.reservations.insert(
                    id.into(),
                    new_reservation(id, NWID.parse().unwrap(), "n1", now()),
                );
                Ok(())
            })
            .unwrap();
        AttachRequest::new(
            NWID.parse().unwrap(),
            agent_key_of(id),
            id.parse().unwrap(),
            None,
            host_if_name(id),
        )
    };
    h.agent.attach(stray).await.unwrap();
    // An endpoint of this owner the state never knew (state lost, say).
    let mut unknown = AttachRequest::new(
        NWID.parse().unwrap(),
        "docker/ffffffffffff".parse().unwrap(),
        "ffffffffffff".parse().unwrap(),
        None,
        "ztdffffffffffff".parse().unwrap(),
    );
    unknown.owner = Some("docker".into());
    h.agent.attach(unknown).await.unwrap();
    // Another owner's endpoint is left alone.
    let mut foreign = AttachRequest::new(
        NWID.parse().unwrap(),
        "k8s/default/web".parse().unwrap(),
        "c1".parse().unwrap(),
        None,
        "eth0".parse().unwrap(),
    );
    foreign.owner = Some("cni".into());
    h.agent.attach(foreign).await.unwrap();
    assert_eq!(h.agent.endpoint_count(), 4);

    h.restart();
    assert!(h.driver.recover().await);
    let state = h.driver.snapshot();
    assert_eq!(
        state.reservations.len(),
        1,
        "only the running container's member"
    );
    assert_eq!(
        h.agent.endpoint_count(),
        2,
        "the container's and the foreign one"
    );
    let keys: BTreeSet<String> = h
        .agent
        .inner
        .lock()
        .unwrap()
        .endpoints
        .keys()
        .map(ToString::to_string)
        .collect();
    assert!(keys.contains("k8s/default/web"));
}

#[tokio::test]
async fn a_network_deleted_during_an_attach_does_not_leak_the_member() {
    let h = Harness::new("vanished");
    let pools = h.create_network("n1", zt_options(), None).await;
    let pool = h.driver.snapshot().pools[&pools[0]].clone();
    let endpoint = {
        let request = AttachRequest::new(
            NWID.parse().unwrap(),
            agent_key_of("0000000000aa"),
            "0000000000aa".parse().unwrap(),
            None,
            host_if_name("0000000000aa"),
        );
        h.agent.attach(request).await.unwrap()
    };
    let error = h
        .driver
        .reserved("0000000000aa", &endpoint, &pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("was deleted"), "{error}");
    assert_eq!(h.agent.endpoint_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Pieces
// ---------------------------------------------------------------------------------------------

#[test]
fn routes_become_static_routes_docker_can_add() {
    let mut reservation = new_reservation("0123456789ab", NWID.parse().unwrap(), "n1", 0);
    reservation.ipv4 = Some("10.147.17.5/24".parse().unwrap());
    reservation.routes = vec![
        Route {
            dst: "10.147.17.0/24".parse().unwrap(),
            gateway: None,
        },
        Route {
            dst: "10.20.0.0/16".parse().unwrap(),
            gateway: None,
        },
        Route {
            dst: "10.10.0.0/16".parse().unwrap(),
            gateway: Some("10.147.17.1".parse().unwrap()),
        },
        Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.147.17.254".parse().unwrap()),
        },
        Route {
            dst: "fd00::/8".parse().unwrap(),
            gateway: None,
        },
    ];
    let answer = join_answer(&reservation);
    assert_eq!(answer.interface_name.src_name, "ztd0123456789ab");
    assert_eq!(answer.gateway, "10.147.17.254");
    assert_eq!(answer.gateway_ipv6, "");
    assert_eq!(
        answer.static_routes,
        vec![
            StaticRoute {
                destination: "10.20.0.0/16".into(),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new()
            },
            StaticRoute {
                destination: "10.10.0.0/16".into(),
                route_type: ROUTE_NEXT_HOP,
                next_hop: "10.147.17.1".into()
            },
        ]
    );
}

#[test]
fn subnets_and_addresses() {
    let prefix = |t: &str| t.parse::<IpPrefix>().unwrap();
    assert_eq!(
        network_of(prefix("10.147.17.5/24")),
        prefix("10.147.17.0/24")
    );
    assert_eq!(network_of(prefix("10.1.2.3/0")), prefix("0.0.0.0/0"));
    assert_eq!(network_of(prefix("10.1.2.3/32")), prefix("10.1.2.3/32"));
    assert_eq!(
        network_of(prefix("fd80:56c2:e21c:0:199:93a1:b2c3:d4e5/88")),
        prefix("fd80:56c2:e21c:0:199:9300::/88")
    );
    assert!(contains(
        prefix("10.147.17.0/24"),
        "10.147.17.200".parse().unwrap()
    ));
    assert!(!contains(
        prefix("10.147.17.0/24"),
        "10.147.18.1".parse().unwrap()
    ));
    assert!(!contains(
        prefix("10.147.17.0/24"),
        "fd00::1".parse().unwrap()
    ));
    let ips = [
        prefix("10.9.0.5/16"),
        prefix("10.147.17.5/24"),
        prefix("fd00::5/88"),
    ];
    assert_eq!(pick_address(&ips, false, prefix("0.0.0.0/0")), Some(ips[0]));
    assert_eq!(
        pick_address(&ips, false, prefix("10.147.17.0/24")),
        Some(ips[1])
    );
    assert_eq!(
        pick_address(&ips, false, prefix("192.168.0.0/24")),
        Some(ips[0])
    );
    assert_eq!(pick_address(&ips, true, prefix("fd00::/88")), Some(ips[2]));
    assert_eq!(pick_address(&ips[..2], true, prefix("fd00::/88")), None);
    let _: IpAddr = ips[0].address;
}

#[test]
fn reservation_names_fit_the_agent_and_the_kernel() {
    let id = random_hex(6);
    assert_eq!(id.len(), 12);
    assert_eq!(host_if_name(&id).as_str().len(), 15);
    assert_eq!(agent_key_of(&id).as_str(), format!("docker/{id}"));
    assert!(id.parse::<ContainerId>().is_ok());
}
