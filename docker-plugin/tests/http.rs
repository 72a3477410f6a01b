//! The plugin over its socket, as Docker calls it, against the agent's real plugin API
//! server (`zt_agent::plugin_api::spawn`) driving an in-memory endpoint manager: the wire
//! shapes on both sides, the HTTP status and content type of answers, an agent that is not
//! there, and the state surviving a plugin restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use docker_plugin::agent::UnixAgent;
use docker_plugin::driver::{Driver, DriverConfig};
use docker_plugin::server::{self, PluginServer};
use docker_plugin::state::StateStore;
use node_core::vl2::Mac;
use node_core::Address;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, DetachResponse, Endpoint, EndpointKey, EndpointManager,
    EndpointRef, EndpointState, ErrorCode, GcRequest, GcResponse, ManagerFuture, PluginApiServer,
    Route, Status,
};

const NWID: &str = "8056c2e21c000001";

/// Endpoints by key, made as the contract says for an attach without a namespace.
#[derive(Default)]
struct Manager {
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    attaches: Mutex<Vec<AttachRequest>>,
}

impl EndpointManager for Manager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async move {
            self.attaches.lock().unwrap().push(request.clone());
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
                routes: vec![
                    Route {
                        dst: "10.147.17.0/24".parse().unwrap(),
                        gateway: None,
                    },
                    Route {
                        dst: "10.10.0.0/16".parse().unwrap(),
                        gateway: Some("10.147.17.1".parse().unwrap()),
                    },
                ],
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
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let before = endpoints.len();
            endpoints.retain(|_, endpoint| !request.matches(endpoint));
            Ok(DetachResponse {
                detached: endpoints.len() < before,
            })
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
    plugin: Option<PluginServer>,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("zt-docker-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let manager = Arc::new(Manager::default());
        let agent = plugin_api::spawn(&dir.join("agent.sock"), manager.clone())
            .await
            .unwrap();
        let mut setup = Self {
            dir,
            manager,
            _agent: agent,
            plugin: None,
        };
        setup.start_plugin(&setup.dir.join("agent.sock"));
        setup
    }

    fn plugin_socket(&self) -> PathBuf {
        self.dir.join("plugins/zerotier.sock")
    }

    fn start_plugin(&mut self, agent_socket: &Path) {
        if let Some(plugin) = self.plugin.take() {
            plugin.shutdown();
        }
        let driver = Driver::new(
            Arc::new(UnixAgent::new(agent_socket)),
            StateStore::new(self.dir.join("state")),
            DriverConfig::default(),
        )
        .unwrap();
        self.plugin = Some(server::spawn(&self.plugin_socket(), Arc::new(driver)).unwrap());
    }

    /// One POST as Docker's plugin client sends it: (status, content type, JSON body).
    async fn post(&self, method: &str, body: &str) -> (u16, String, Value) {
        let mut stream = UnixStream::connect(self.plugin_socket()).await.unwrap();
        let request = format!(
            "POST /{method} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.plugin_socket().display(),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|line| line.strip_prefix("content-type: "))
            .unwrap_or_default()
            .to_string();
        (status, content_type, serde_json::from_str(body).unwrap())
    }

    async fn ok(&self, method: &str, body: Value) -> Value {
        let (status, content_type, answer) = self.post(method, &body.to_string()).await;
        assert_eq!(status, 200, "{method}: {answer}");
        assert_eq!(content_type, "application/vnd.docker.plugins.v1+json");
        answer
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn docker_run_and_rm_over_the_sockets() {
    let mut setup = Setup::new("flow").await;
    assert_eq!(
        setup.ok("Plugin.Activate", Value::Null).await,
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    // Docker sends no body at all for some calls.
    let (status, _, _) = setup.post("NetworkDriver.GetCapabilities", "").await;
    assert_eq!(status, 200);

    let pool = setup
        .ok("IpamDriver.RequestPool", json!({"AddressSpace": "zerotier", "Pool": "", "SubPool": "", "Options": {}, "V6": false}))
        .await;
    let pool_id = pool["PoolID"].as_str().unwrap().to_string();
    setup
        .ok(
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": "net1",
                "Options": {"com.docker.network.generic": {"zerotier.network": NWID}},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}],
                "IPv6Data": []
            }),
        )
        .await;
    let address = setup
        .ok(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": {}}),
        )
        .await;
    assert_eq!(address, json!({"Address": "10.147.17.11/24", "Data": {}}));
    // What the agent was asked: no namespace, Docker's owner, a host-side name.
    let attach = setup.manager.attaches.lock().unwrap()[0].clone();
    assert!(attach.netns.is_none());
    assert_eq!(attach.owner.as_deref(), Some("docker"));
    assert!(attach.if_name.as_str().starts_with("ztd"));
    assert_eq!(attach.network.to_string(), NWID);

    // The plugin restarts between the address and the endpoint.
    let agent_socket = setup.dir.join("agent.sock");
    setup.start_plugin(&agent_socket);
    let created = setup
        .ok(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "net1", "EndpointID": "ep1", "Interface": {"Address": "10.147.17.11/24", "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
        )
        .await;
    let mac = created["Interface"]["MacAddress"].as_str().unwrap();
    assert_eq!(mac.len(), 17);
    let join = setup
        .ok(
            "NetworkDriver.Join",
            json!({"NetworkID": "net1", "EndpointID": "ep1", "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}}),
        )
        .await;
    assert_eq!(join["InterfaceName"]["SrcName"], attach.if_name.as_str());
    assert_eq!(join["InterfaceName"]["DstPrefix"], "eth");
    setup
        .ok(
            "NetworkDriver.Leave",
            json!({"NetworkID": "net1", "EndpointID": "ep1"}),
        )
        .await;
    setup
        .ok(
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": "net1", "EndpointID": "ep1"}),
        )
        .await;
    assert!(setup.manager.endpoints.lock().unwrap().is_empty());
    setup
        .ok(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool_id, "Address": "10.147.17.11"}),
        )
        .await;
    setup
        .ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": "net1"}))
        .await;
    setup
        .ok("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
        .await;
}

#[tokio::test]
async fn errors_are_500_with_err_and_unknown_methods_404() {
    let setup = Setup::new("errors").await;
    let (status, content_type, answer) = setup
        .post(
            "NetworkDriver.CreateNetwork",
            &json!({"NetworkID": "net1", "Options": {"com.docker.network.generic": {"zerotier.network": "xyz"}}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(content_type, "application/vnd.docker.plugins.v1+json");
    assert_eq!(
        answer,
        json!({"Err": "zerotier.network \"xyz\" is not a ZeroTier network ID (16 hex digits, e.g. 8056c2e21c000001)"})
    );
    let (status, _, answer) = setup.post("NetworkDriver.Teleport", "{}").await;
    assert_eq!(status, 404);
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .contains("no method NetworkDriver.Teleport"));
    let (status, _, answer) = setup
        .post("NetworkDriver.CreateNetwork", "{\"Network")
        .await;
    assert_eq!(status, 500);
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .starts_with("malformed request body"));
}

#[tokio::test]
async fn an_agent_that_is_not_there_is_named_and_nothing_is_made() {
    let mut setup = Setup::new("no-agent").await;
    let missing = setup.dir.join("nobody-here.sock");
    setup.start_plugin(&missing);
    setup.ok("IpamDriver.RequestPool", json!({})).await;
    let (status, _, answer) = setup
        .post(
            "NetworkDriver.CreateNetwork",
            &json!({
                "NetworkID": "net1",
                "Options": {"com.docker.network.generic": {"network": NWID}},
                "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0"}]
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, 500);
    let message = answer["Err"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("cannot reach zt-agent at {}", missing.display())),
        "{message}"
    );
    assert!(message.contains("--agent-socket"), "{message}");
    // The network was not made: an endpoint on it is refused by name.
    let (status, _, answer) = setup
        .post(
            "NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": "net1", "EndpointID": "ep1", "Interface": {"Address": "10.147.17.11/24"}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 500);
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .starts_with("Docker network net1 is unknown"));
}

#[tokio::test]
async fn a_live_socket_is_not_taken_over() {
    let setup = Setup::new("in-use").await;
    let driver = Driver::new(
        Arc::new(UnixAgent::new(setup.dir.join("agent.sock"))),
        StateStore::new(setup.dir.join("state2")),
        DriverConfig::default(),
    )
    .unwrap();
    let error = server::spawn(&setup.plugin_socket(), Arc::new(driver))
        .err()
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}
