//! The plugin API end to end: a server on a socket in a temporary directory, driving a fake
//! endpoint manager, called through the blocking client and through raw HTTP.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node_core::vl2::{Mac, NetworkId};
use node_core::Address;
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, ContainerId, DetachResponse, Endpoint, EndpointKey,
    EndpointManager, EndpointRef, EndpointState, ErrorCode, GcRequest, GcResponse, InterfaceName,
    ManagerFuture, PluginApiServer, Route, Status,
};
use zt_agent::plugin_client::{ClientError, PluginClient};

const PUBLIC_NET: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
const PRIVATE_NET: NetworkId = NetworkId(0x8056_c2e2_1c00_0002);
/// On this network the fake's endpoints stay `pending`.
const SLOW_NET: NetworkId = NetworkId(0x8056_c2e2_1c00_0003);

/// An in-memory manager that behaves as the contract asks, and counts how many operations
/// run at once on one key.
#[derive(Default)]
struct FakeManager {
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    attaches: AtomicUsize,
    in_flight: Mutex<HashMap<EndpointKey, usize>>,
    max_in_flight: AtomicUsize,
}

impl FakeManager {
    fn address_for(key: &EndpointKey) -> Address {
        let hash = key.as_str().bytes().fold(0x0001_2345_u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        Address::from_u64(hash & 0xff_ffff_ffff)
    }

    fn enter(&self, key: &EndpointKey) {
        let mut in_flight = self.in_flight.lock().unwrap();
        let count = in_flight.entry(key.clone()).or_default();
        *count += 1;
        self.max_in_flight.fetch_max(*count, Ordering::SeqCst);
    }

    fn leave(&self, key: &EndpointKey) {
        *self.in_flight.lock().unwrap().get_mut(key).unwrap() -= 1;
    }
}

impl EndpointManager for FakeManager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async move {
            self.attaches.fetch_add(1, Ordering::SeqCst);
            self.enter(&request.key);
            // Long enough for a concurrent attach of the same key to overlap, were it let in.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.leave(&request.key);
            if let Some(netns) = &request.netns {
                if !netns.exists() {
                    return Err(ApiError::netns_not_found(netns));
                }
            }
            let address = Self::address_for(&request.key);
            if request.network == PRIVATE_NET {
                return Err(ApiError::not_authorized(request.network, address));
            }
            let mut endpoints = self.endpoints.lock().unwrap();
            if let Some(existing) = endpoints.get(&request.key) {
                if existing.container_id == request.container_id
                    && existing.if_name == request.if_name
                {
                    return Ok(existing.clone());
                }
            }
            let state = if request.network == SLOW_NET {
                EndpointState::Pending
            } else {
                EndpointState::Ready
            };
            let endpoint = Endpoint {
                key: request.key.clone(),
                owner: request.owner.clone(),
                network: request.network,
                container_id: request.container_id,
                netns: request.netns,
                if_name: request.if_name,
                mac: Mac::from_address(address, request.network),
                address,
                ips: vec!["10.147.17.5/24".parse().unwrap()],
                routes: vec![Route {
                    dst: "10.147.17.0/24".parse().unwrap(),
                    gateway: None,
                }],
                gateway: None,
                mtu: request.mtu.unwrap_or(2800),
                state,
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

    fn check(&self, request: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async move {
            let endpoints = self.endpoints.lock().unwrap();
            endpoints
                .values()
                .find(|endpoint| request.matches(endpoint))
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such endpoint"))
        })
    }

    fn status(&self) -> ManagerFuture<'_, Status> {
        Box::pin(async move {
            Status {
                ready: true,
                address: Some(Address::from_u64(0xaa_bbcc_ddee)),
                version: "1.14.2".into(),
                endpoints: self.endpoints.lock().unwrap().len(),
                reason: None,
            }
        })
    }

    fn gc(&self, request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let mut removed: Vec<EndpointKey> = endpoints
                .values()
                .filter(|endpoint| !request.keeps(endpoint))
                .map(|endpoint| endpoint.key.clone())
                .collect();
            removed.sort();
            for key in &removed {
                endpoints.remove(key);
            }
            Ok(GcResponse {
                removed,
                failed: Vec::new(),
            })
        })
    }

    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
        Box::pin(async move {
            let mut list: Vec<Endpoint> =
                self.endpoints.lock().unwrap().values().cloned().collect();
            list.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(list)
        })
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("zt-plugin-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &TempDir) -> (PluginApiServer, Arc<FakeManager>, PluginClient) {
    let socket = dir.0.join("run/zt-agent/agent.sock");
    let manager = Arc::new(FakeManager::default());
    let server = plugin_api::spawn(&socket, manager.clone()).await.unwrap();
    (server, manager, PluginClient::new(socket))
}

/// Runs a blocking client call off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn attach_request(key: &str, container: &str, netns: &Path) -> AttachRequest {
    let mut request = AttachRequest::new(
        PUBLIC_NET,
        key.parse().unwrap(),
        container.parse().unwrap(),
        Some(netns.to_path_buf()),
        "eth0".parse().unwrap(),
    );
    request.owner = Some("cni".into());
    request.wait = Some(5);
    request
}

/// Sends `head` (and `body`) as one HTTP/1.1 request; returns the status and JSON body.
fn raw_request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_its_new_directory_are_root_only() {
    let dir = TempDir::new("mode");
    let (server, _, client) = start(&dir).await;
    let socket_mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(socket_mode & 0o777, 0o600, "socket mode {socket_mode:o}");
    let parent_mode = std::fs::metadata(dir.0.join("run/zt-agent"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(parent_mode & 0o777, 0o700, "directory mode {parent_mode:o}");
    // Nothing but the socket is left in the directory (the temporary name was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.0.join("run/zt-agent"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")]);
    let status = blocking(move || client.status()).await.unwrap();
    assert!(status.ready);
    assert_eq!(status.version, "1.14.2");
    assert_eq!(status.address, Some(Address::from_u64(0xaa_bbcc_ddee)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_sockets_are_replaced_live_ones_and_files_are_not() {
    let dir = TempDir::new("stale");
    let socket = dir.0.join("agent.sock");
    // A socket file nobody listens on any more: what `kill -9` leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let manager = Arc::new(FakeManager::default());
    let server = plugin_api::spawn(&socket, manager.clone()).await.unwrap();
    let client = PluginClient::new(&socket);
    assert!(blocking(move || client.status()).await.unwrap().ready);

    // A second agent on the same path is refused while the first one serves.
    let second = plugin_api::spawn(&socket, manager.clone()).await;
    assert_eq!(
        second.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse)
    );
    server.shutdown();
    assert!(!socket.exists());

    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    let refused = plugin_api::spawn(&file, manager).await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AlreadyExists)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_round_trips_through_the_client() {
    let dir = TempDir::new("roundtrip");
    let (_server, manager, client) = start(&dir).await;
    let netns = dir.0.clone(); // Any existing path stands in for a namespace.

    let request = attach_request("k8s/default/web-0", "c1", &netns);
    let endpoint = {
        let (client, request) = (client.clone(), request.clone());
        blocking(move || client.attach(&request)).await.unwrap()
    };
    assert_eq!(endpoint.key.as_str(), "k8s/default/web-0");
    assert_eq!(endpoint.network, PUBLIC_NET);
    assert_eq!(endpoint.state, EndpointState::Ready);
    assert_eq!(endpoint.ips[0].to_string(), "10.147.17.5/24");

    // Attach again, as a retried CNI ADD would: the same endpoint.
    let again = {
        let (client, request) = (client.clone(), request.clone());
        blocking(move || client.attach(&request)).await.unwrap()
    };
    assert_eq!(again, endpoint);

    let by_attachment = EndpointRef::by_attachment("c1".parse().unwrap(), "eth0".parse().unwrap());
    let checked = {
        let (client, reference) = (client.clone(), by_attachment.clone());
        blocking(move || client.check(&reference)).await.unwrap()
    };
    assert_eq!(checked, endpoint);

    let second = attach_request("docker/0123abcd", "0123abcd", &netns);
    let mut second = AttachRequest {
        owner: Some("docker".into()),
        ..second
    };
    second.netns = None;
    let second_endpoint = {
        let client = client.clone();
        blocking(move || client.attach(&second)).await.unwrap()
    };
    let list = {
        let client = client.clone();
        blocking(move || client.endpoints()).await.unwrap()
    };
    assert_eq!(list, vec![second_endpoint.clone(), endpoint.clone()]);

    // A CNI gc with no valid attachments removes the CNI endpoint only.
    let gc = GcRequest {
        owner: Some("cni".into()),
        ..GcRequest::default()
    };
    let removed = {
        let client = client.clone();
        blocking(move || client.gc(&gc)).await.unwrap()
    };
    assert_eq!(removed.removed, vec![endpoint.key.clone()]);
    assert_eq!(manager.endpoints.lock().unwrap().len(), 1);

    // Detach is idempotent: present, then absent, then never known.
    let docker_ref = EndpointRef::by_key("docker/0123abcd".parse().unwrap());
    for expected in [true, false] {
        let (client, reference) = (client.clone(), docker_ref.clone());
        let answer = blocking(move || client.detach(&reference)).await.unwrap();
        assert_eq!(answer.detached, expected);
    }
    let unknown = EndpointRef::by_attachment("gone".parse().unwrap(), "eth9".parse().unwrap());
    let answer = {
        let client = client.clone();
        blocking(move || client.detach(&unknown)).await.unwrap()
    };
    assert!(!answer.detached);

    // Check of something gone is a typed NotFound.
    let error = blocking(move || client.check(&by_attachment))
        .await
        .unwrap_err();
    assert_eq!(error.api_error().map(|e| e.code), Some(ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_detach_spares_the_new_container_with_the_same_key() {
    let dir = TempDir::new("stale-detach");
    let (_server, manager, client) = start(&dir).await;
    let request = attach_request("k8s/default/web-0", "new-container", &dir.0);
    {
        let client = client.clone();
        blocking(move || client.attach(&request)).await.unwrap();
    }
    let late_del = EndpointRef {
        container_id: Some("old-container".parse().unwrap()),
        if_name: Some("eth0".parse().unwrap()),
        ..EndpointRef::by_key("k8s/default/web-0".parse().unwrap())
    };
    let answer = blocking(move || client.detach(&late_del)).await.unwrap();
    assert!(!answer.detached);
    assert_eq!(manager.endpoints.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_network_error_names_the_member_to_authorize() {
    let dir = TempDir::new("private");
    let (_server, _, client) = start(&dir).await;
    let mut request = attach_request("k8s/default/db-0", "c2", &dir.0);
    request.network = PRIVATE_NET;
    let member = FakeManager::address_for(&request.key);
    let error = blocking(move || client.attach(&request)).await.unwrap_err();
    let ClientError::Api { status, error } = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(status, 403);
    assert_eq!(error.code, ErrorCode::NotAuthorized);
    assert!(
        error.message.contains(&member.to_string()),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("8056c2e21c000002"),
        "{}",
        error.message
    );
    let details = error.details.unwrap();
    assert_eq!(details.member_address, Some(member));
    assert_eq!(details.network, Some(PRIVATE_NET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_namespace_and_unready_endpoint_are_typed_errors() {
    let dir = TempDir::new("netns");
    let (_server, _, client) = start(&dir).await;
    let gone = attach_request("k8s/default/x", "c3", &dir.0.join("no-such-netns"));
    let error = {
        let client = client.clone();
        blocking(move || client.attach(&gone)).await.unwrap_err()
    };
    assert_eq!(
        error.api_error().map(|e| e.code),
        Some(ErrorCode::NetnsNotFound)
    );

    let mut slow = attach_request("k8s/default/slow", "c4", &dir.0);
    slow.network = SLOW_NET;
    {
        let client = client.clone();
        blocking(move || client.attach(&slow)).await.unwrap();
    }
    let reference = EndpointRef::by_key("k8s/default/slow".parse().unwrap());
    let error = blocking(move || client.check(&reference))
        .await
        .unwrap_err();
    let api = error.api_error().unwrap();
    assert_eq!(api.code, ErrorCode::NotReady);
    assert!(
        api.message.contains("waiting for its configuration"),
        "{}",
        api.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_attaches_both_succeed_one_at_a_time() {
    let dir = TempDir::new("concurrent");
    let (_server, manager, client) = start(&dir).await;
    let request = attach_request("k8s/default/web-1", "c5", &dir.0);
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (client, request) = (client.clone(), request.clone());
            tokio::task::spawn_blocking(move || client.attach(&request))
        })
        .collect();
    let mut endpoints = Vec::new();
    for call in calls {
        endpoints.push(call.await.unwrap().unwrap());
    }
    assert_eq!(endpoints[0], endpoints[1]);
    assert_eq!(manager.attaches.load(Ordering::SeqCst), 2);
    assert_eq!(
        manager.max_in_flight.load(Ordering::SeqCst),
        1,
        "the server let two operations on one key into the manager at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_unknown_paths_are_refused_in_json() {
    let dir = TempDir::new("raw");
    let (server, _, _) = start(&dir).await;
    let socket = server.path().to_path_buf();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/v1/attach", "{not json".into(), 400, "InvalidRequest"),
        ("POST", "/v1/attach", String::new(), 400, "InvalidRequest"),
        (
            "POST",
            "/v1/attach",
            r#"{"network":"8056c2e21c000001","key":"k","containerId":"c","ifName":"averyveryverylongname"}"#.into(),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/v1/attach",
            r#"{"network":"xyz","key":"k","containerId":"c","ifName":"eth0"}"#.into(),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/v1/attach",
            r#"{"network":"8056c2e21c000001","key":"k","containerId":"c","ifName":"eth0","mtu":100}"#.into(),
            400,
            "InvalidRequest",
        ),
        ("POST", "/v1/detach", "{}".into(), 400, "InvalidRequest"),
        ("POST", "/v1/detach", r#"{"bogus":1}"#.into(), 400, "InvalidRequest"),
        ("GET", "/v1/nothing", String::new(), 404, "UnsupportedOperation"),
        ("GET", "/status", String::new(), 404, "UnsupportedOperation"),
        ("GET", "/v2/status", String::new(), 404, "UnsupportedOperation"),
        ("GET", "/v1/attach", String::new(), 405, "UnsupportedOperation"),
        ("POST", "/v1/status", "{}".into(), 405, "UnsupportedOperation"),
    ];
    for (method, path, body, status, code) in cases {
        let socket = socket.clone();
        let body_for_call = body.clone();
        let (got_status, json) =
            blocking(move || raw_request(&socket, method, path, &body_for_call)).await;
        assert_eq!(got_status, status, "{method} {path} {body}: {json}");
        assert_eq!(json["code"], code, "{method} {path} {body}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
}

#[test]
fn typed_fields_reject_what_the_server_would() {
    assert!("toolonginterface".parse::<InterfaceName>().is_err());
    assert!("a/../b".parse::<EndpointKey>().is_err());
    assert!("-x".parse::<ContainerId>().is_err());
}
