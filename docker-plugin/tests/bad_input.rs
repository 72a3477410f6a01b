//! Bad input on the Docker plugin's socket (issue 8, item 2): libnetwork remote-driver and
//! IPAM calls with malformed JSON, wrong types, oversized bodies, unknown networks, pools
//! and endpoints, and hostile IDs, names and sandbox paths. Each gets Docker's error shape
//! (HTTP 500, `{"Err": "..."}` that says what is wrong; 404 for an unknown method) and
//! changes nothing: the plugin's state file (its bytes) and the agent's endpoints stay as
//! they were, and the agent is not asked to attach anything.
//!
//! The agent is its real plugin API server over an in-memory manager, as in `http.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use docker_plugin::agent::UnixAgent;
use docker_plugin::driver::{Driver, DriverConfig};
use docker_plugin::server::{self, PluginServer, MAX_REQUEST_BODY};
use docker_plugin::state::StateStore;
use node_core::vl2::Mac;
use node_core::Address;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, DetachResponse, Endpoint, EndpointKey, EndpointManager,
    EndpointRef, EndpointState, ErrorCode, GcRequest, GcResponse, ManagerFuture, PluginApiServer,
    SandboxRequest, Status,
};

const NWID: &str = "8056c2e21c000001";

/// Endpoints by key; counts every call that would change something.
#[derive(Default)]
struct Manager {
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    changes: AtomicUsize,
}

impl Manager {
    fn snapshot(&self) -> Vec<Endpoint> {
        let mut list: Vec<Endpoint> = self.endpoints.lock().unwrap().values().cloned().collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list
    }
}

impl EndpointManager for Manager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let index = endpoints.len() as u64 + 1;
            let address = Address::from_u64(0xa1_0000_0000 + index);
            let endpoint = Endpoint {
                key: request.key.clone(),
                owner: request.owner.clone(),
                network: request.network,
                container_id: request.container_id,
                netns: request.netns,
                if_name: request.if_name,
                mac: Mac::from_address(address, request.network),
                address,
                ips: vec![format!("10.147.17.{}/24", 10 + index).parse().unwrap()],
                routes: Vec::new(),
                gateway: None,
                mtu: request.mtu.unwrap_or(2800),
                state: EndpointState::Ready,
                dns: None,
                counters: Default::default(),
            };
            endpoints.insert(request.key, endpoint.clone());
            Ok(endpoint)
        })
    }

    fn detach(&self, request: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let before = endpoints.len();
            endpoints.retain(|_, endpoint| !request.matches(endpoint));
            Ok(DetachResponse {
                detached: endpoints.len() < before,
            })
        })
    }

    fn sandbox(&self, request: SandboxRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let endpoints = self.endpoints.lock().unwrap();
            endpoints
                .values()
                .find(|endpoint| request.target().matches(endpoint))
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such endpoint"))
        })
    }

    fn check(&self, _request: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async { Err(ApiError::new(ErrorCode::NotFound, "no such endpoint")) })
    }

    fn status(&self) -> ManagerFuture<'_, Status> {
        Box::pin(async {
            Status {
                ready: true,
                address: None,
                version: "test".into(),
                endpoints: 0,
                reason: None,
            }
        })
    }

    fn gc(&self, _request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(GcResponse::default()) })
    }

    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
        Box::pin(async { Ok(self.endpoints.lock().unwrap().values().cloned().collect()) })
    }
}

struct Setup {
    dir: PathBuf,
    manager: Arc<Manager>,
    _agent: PluginApiServer,
    _plugin: PluginServer,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("zt-docker-bad-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let manager = Arc::new(Manager::default());
        let agent = plugin_api::spawn(&dir.join("agent.sock"), manager.clone())
            .await
            .unwrap();
        let driver = Driver::new(
            Arc::new(UnixAgent::new(dir.join("agent.sock"))),
            StateStore::new(dir.join("state")),
            DriverConfig::default(),
        )
        .unwrap();
        let plugin = server::spawn(&dir.join("plugins/zerotier.sock"), Arc::new(driver)).unwrap();
        Self {
            dir,
            manager,
            _agent: agent,
            _plugin: plugin,
        }
    }

    /// One POST as Docker sends it: (status, JSON body). Write errors are ignored (a server
    /// may answer an oversized body before reading all of it).
    async fn post(&self, method: &str, body: &[u8]) -> (u16, Value) {
        let mut stream = UnixStream::connect(self.dir.join("plugins/zerotier.sock"))
            .await
            .unwrap();
        let head = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method}: no answer: {text:?}"));
        let status = head[9..12].parse().unwrap();
        let json = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{method}: answer is not JSON ({e}): {body:?}"));
        (status, json)
    }

    async fn ok(&self, method: &str, body: Value) -> Value {
        let (status, answer) = self.post(method, body.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{method}: {answer}");
        answer
    }

    /// The state file's bytes (none before the first change).
    fn state_bytes(&self) -> Vec<u8> {
        let store = StateStore::new(self.dir.join("state"));
        std::fs::read(store.path()).unwrap_or_default()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_clearly_and_change_nothing() {
    let setup = Setup::new("table").await;
    // A network with one joined container, for the bad calls to leave alone.
    let pool = setup
        .ok(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "zerotier", "Pool": "", "Options": {}, "V6": false}),
        )
        .await;
    let pool_id = pool["PoolID"].as_str().unwrap().to_string();
    setup
        .ok(
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": "net1",
                "Options": {"com.docker.network.generic": {"zerotier.network": NWID}},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}],
            }),
        )
        .await;
    let address = setup
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": ""}),
        )
        .await;
    let address = address["Address"].as_str().unwrap().to_string();
    setup
        .ok(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "net1", "EndpointID": "ep1", "Interface": {"Address": address}}),
        )
        .await;
    setup
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": "net1", "EndpointID": "ep1", "SandboxKey": "/var/run/docker/netns/0123456789ab"}),
        )
        .await;

    let long = "a".repeat(200);
    let hostile_ids = [
        json!("../x"),
        json!("a/b"),
        json!("net\u{0}1"),
        json!(long),
        json!("a b"),
        json!("."),
    ];
    let network = |id: Value| {
        json!({
            "NetworkID": id,
            "Options": {"com.docker.network.generic": {"zerotier.network": NWID}},
            "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}],
        })
    };
    let generic = |options: Value| {
        json!({
            "NetworkID": "net2",
            "Options": {"com.docker.network.generic": options},
            "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}],
        })
    };
    let endpoint = |network: Value, endpoint: Value, interface: Value, options: Value| json!({"NetworkID": network, "EndpointID": endpoint, "Interface": interface, "Options": options});
    let no_options = json!({});
    let interface = json!({"Address": ""});
    let join = |endpoint: Value, sandbox: Value| json!({"NetworkID": "net1", "EndpointID": endpoint, "SandboxKey": sandbox});
    // (what, method, body, the Err says)
    let mut cases: Vec<(String, &str, Vec<u8>, &str)> = vec![
        (
            "bad JSON".into(),
            "NetworkDriver.CreateNetwork",
            b"{\"NetworkID\":".to_vec(),
            "malformed request body",
        ),
        (
            "a string".into(),
            "NetworkDriver.CreateEndpoint",
            b"\"ep\"".to_vec(),
            "malformed request body",
        ),
        (
            "not UTF-8".into(),
            "IpamDriver.RequestPool",
            vec![0xff, b'{'],
            "malformed request body",
        ),
        (
            "oversized".into(),
            "IpamDriver.RequestAddress",
            vec![b' '; MAX_REQUEST_BODY + 1],
            "request body over",
        ),
        (
            "NetworkID a number".into(),
            "NetworkDriver.CreateNetwork",
            network(json!(5)).to_string().into_bytes(),
            "malformed request body",
        ),
        (
            "no NetworkID".into(),
            "NetworkDriver.CreateNetwork",
            network(json!("")).to_string().into_bytes(),
            "names no NetworkID",
        ),
        (
            "IPv4Data an object".into(),
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "net2", "IPv4Data": {"Pool": "0.0.0.0/0"}})
                .to_string()
                .into_bytes(),
            "malformed request body",
        ),
        (
            "ZeroTier network not an ID".into(),
            "NetworkDriver.CreateNetwork",
            generic(json!({"zerotier.network": "../x"}))
                .to_string()
                .into_bytes(),
            "not a ZeroTier network ID",
        ),
        (
            "ZeroTier network a number".into(),
            "NetworkDriver.CreateNetwork",
            generic(json!({"zerotier.network": 5}))
                .to_string()
                .into_bytes(),
            "zerotier.network",
        ),
        (
            "unknown option".into(),
            "NetworkDriver.CreateNetwork",
            generic(json!({"zerotier.network": NWID, "zerotier.bogus": "1"}))
                .to_string()
                .into_bytes(),
            "zerotier.bogus",
        ),
        (
            "mtu not a number".into(),
            "NetworkDriver.CreateNetwork",
            generic(json!({"zerotier.network": NWID, "com.docker.network.driver.mtu": "big"}))
                .to_string()
                .into_bytes(),
            "mtu",
        ),
        (
            "the network again on another ZeroTier network".into(),
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": "net1",
                "Options": {"com.docker.network.generic": {"zerotier.network": "8056c2e21c000002"}},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}],
            })
            .to_string()
            .into_bytes(),
            "already on ZeroTier network",
        ),
        (
            "endpoint on an unknown network".into(),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                json!("netX"),
                json!("ep2"),
                interface.clone(),
                no_options.clone(),
            )
            .to_string()
            .into_bytes(),
            "Docker network netX is unknown",
        ),
        (
            "endpoint address garbage".into(),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                json!("net1"),
                json!("ep2"),
                json!({"Address": "garbage"}),
                no_options.clone(),
            )
            .to_string()
            .into_bytes(),
            "garbage",
        ),
        (
            "endpoint key hostile".into(),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                json!("net1"),
                json!("ep2"),
                interface.clone(),
                json!({"zerotier.key": "../x"}),
            )
            .to_string()
            .into_bytes(),
            "endpoint key",
        ),
        (
            "endpoint key a number".into(),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                json!("net1"),
                json!("ep2"),
                interface.clone(),
                json!({"zerotier.key": 5}),
            )
            .to_string()
            .into_bytes(),
            "zerotier.key must be text",
        ),
        (
            "join of an unknown endpoint".into(),
            "NetworkDriver.Join",
            join(json!("epX"), json!("/var/run/docker/netns/1"))
                .to_string()
                .into_bytes(),
            "endpoint epX is unknown",
        ),
        (
            "pool with a sub-pool".into(),
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "zerotier", "Pool": "10.0.0.0/24", "SubPool": "10.0.0.0/25"})
                .to_string()
                .into_bytes(),
            "--ip-range",
        ),
        (
            "pool garbage".into(),
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "zerotier", "Pool": "garbage"})
                .to_string()
                .into_bytes(),
            "garbage",
        ),
        (
            "pool V6 a string".into(),
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "zerotier", "V6": "yes"})
                .to_string()
                .into_bytes(),
            "malformed request body",
        ),
        (
            "address from an unknown pool".into(),
            "IpamDriver.RequestAddress",
            json!({"PoolID": "../x", "Address": ""})
                .to_string()
                .into_bytes(),
            "address pool \"../x\" is unknown",
        ),
        (
            "address garbage".into(),
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "10.0.0.300"})
                .to_string()
                .into_bytes(),
            "is not an IP address",
        ),
    ];
    for id in &hostile_ids {
        cases.push((
            format!("CreateNetwork NetworkID {id:.40}"),
            "NetworkDriver.CreateNetwork",
            network(id.clone()).to_string().into_bytes(),
            "NetworkID",
        ));
        cases.push((
            format!("CreateEndpoint EndpointID {id:.40}"),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                json!("net1"),
                id.clone(),
                interface.clone(),
                no_options.clone(),
            )
            .to_string()
            .into_bytes(),
            "EndpointID",
        ));
        cases.push((
            format!("CreateEndpoint NetworkID {id:.40}"),
            "NetworkDriver.CreateEndpoint",
            endpoint(
                id.clone(),
                json!("ep2"),
                interface.clone(),
                no_options.clone(),
            )
            .to_string()
            .into_bytes(),
            "NetworkID",
        ));
    }
    for sandbox in [
        json!("relative/netns"),
        json!("/var/run/docker/netns/../../../etc"),
        json!("/var/run/docker/netns/a\u{0}b"),
        json!(format!("/{}", "n".repeat(5000))),
    ] {
        cases.push((
            format!("Join SandboxKey {sandbox:.60}"),
            "NetworkDriver.Join",
            join(json!("ep1"), sandbox).to_string().into_bytes(),
            "SandboxKey",
        ));
    }

    let state = setup.state_bytes();
    assert!(!state.is_empty());
    let endpoints = setup.manager.snapshot();
    let changes = setup.manager.changes.load(Ordering::SeqCst);
    for (what, method, body, says) in cases {
        let (status, answer) = setup.post(method, &body).await;
        assert_eq!(status, 500, "{what}: {answer}");
        let message = answer["Err"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{what}: {message:?} does not say {says:?}"
        );
        assert!(message.len() < 2048, "{what}: the message is bounded");
        assert_eq!(setup.state_bytes(), state, "{what}: the state changed");
        assert_eq!(
            setup.manager.snapshot(),
            endpoints,
            "{what}: endpoints changed"
        );
        assert_eq!(
            setup.manager.changes.load(Ordering::SeqCst),
            changes,
            "{what}: the agent was asked to change something"
        );
    }
    // Unknown methods, and ones with a hostile name, are 404 and change nothing.
    for method in [
        "NetworkDriver.Teleport",
        "../NetworkDriver.Join",
        "IpamDriver.",
        "",
    ] {
        let (status, answer) = setup.post(method, b"{}").await;
        assert_eq!(status, 404, "{method}: {answer}");
        assert!(
            answer["Err"]
                .as_str()
                .is_some_and(|m| m.contains("no method")),
            "{answer}"
        );
        assert_eq!(setup.state_bytes(), state);
    }
}
