//! The plugin API server's side of `netnsFd` over a real socket and a fake endpoint manager
//! (root only: pins are bind mounts; skipped elsewhere, except under CI where it fails):
//! refusals reach no manager and pin nothing; an accepted descriptor reaches the manager as
//! the pin's path; one pin serves two endpoints in one namespace and goes with the last of
//! them; a failed attach and a gc leave no pin behind. The async client drives it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use node_core::vl2::{Mac, NetworkId};
use node_core::Address;
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, DetachResponse, Endpoint, EndpointKey, EndpointManager,
    EndpointRef, EndpointState, ErrorCode, GcRequest, GcResponse, ManagerFuture, Status,
};
use zt_agent::plugin_client::{AsyncPluginClient, ClientError};

const PUBLIC_NET: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
const PRIVATE_NET: NetworkId = NetworkId(0x8056_c2e2_1c00_0002);

/// Endpoints by key, and every attach request the manager was given.
#[derive(Default)]
struct FakeManager {
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    requests: Mutex<Vec<AttachRequest>>,
}

impl EndpointManager for FakeManager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async move {
            self.requests.lock().unwrap().push(request.clone());
            let address = Address::from_u64(0x12_3456_0000 + request.key.as_str().len() as u64);
            if request.network == PRIVATE_NET {
                return Err(ApiError::not_authorized(request.network, address));
            }
            let endpoint = Endpoint {
                key: request.key.clone(),
                owner: request.owner.clone(),
                network: request.network,
                container_id: request.container_id,
                netns: request.netns,
                if_name: request.if_name,
                mac: Mac::from_address(address, request.network),
                address,
                ips: Vec::new(),
                routes: Vec::new(),
                gateway: None,
                mtu: 2800,
                state: EndpointState::Ready,
                dns: None,
                counters: Default::default(),
            };
            self.endpoints
                .lock()
                .unwrap()
                .insert(request.key, endpoint.clone());
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

    fn gc(&self, request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let removed: Vec<EndpointKey> = endpoints
                .values()
                .filter(|endpoint| !request.keeps(endpoint))
                .map(|endpoint| endpoint.key.clone())
                .collect();
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
        Box::pin(async move { Ok(self.endpoints.lock().unwrap().values().cloned().collect()) })
    }
}

/// Root, or a skip (a failure under CI).
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("this test needs root (bind mounts), and CI must run it");
    }
    eprintln!("SKIPPED (needs root for bind mounts; runs in CI)");
    false
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // Whatever a failed run left mounted first, so that the folder can go.
        if let Ok(entries) = std::fs::read_dir(self.0.join("netns")) {
            for entry in entries.flatten() {
                let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_mount_point(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

fn request(network: NetworkId, key: &str, if_name: &str) -> AttachRequest {
    AttachRequest::new(
        network,
        key.parse().unwrap(),
        "c1".parse().unwrap(),
        None,
        if_name.parse().unwrap(),
    )
}

fn invalid(result: Result<Endpoint, ClientError>, says: &str) {
    match result {
        Err(ClientError::Api { error, .. }) => {
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{error}");
            assert!(error.message.contains(says), "{says:?} in {error}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_are_pinned_while_endpoints_use_them() {
    if !privileged() {
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(format!("zt-netns-fd-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let socket = dir.0.join("agent.sock");
    let pins = dir.0.join("netns");
    let manager = Arc::new(FakeManager::default());
    let _server = plugin_api::spawn(&socket, manager.clone()).await.unwrap();
    let client = AsyncPluginClient::new(&socket);
    let own_netns = File::open("/proc/self/ns/net").unwrap();
    let pin = pins.join(format!("net-{}", own_netns.metadata().unwrap().ino()));

    // Refused before the manager sees anything; nothing pinned.
    let mut both = request(PUBLIC_NET, "k/a", "eth0");
    both.netns = Some("/proc/self/ns/net".into());
    both.netns_fd = Some(own_netns.as_raw_fd());
    invalid(client.attach(&both).await, "not both");
    let mut not_held = request(PUBLIC_NET, "k/a", "eth0");
    not_held.netns_fd = Some(60_000);
    invalid(
        client.attach(&not_held).await,
        "no open file descriptor 60000",
    );
    let file = File::open("/proc/self/status").unwrap();
    invalid(
        client
            .attach_with_netns_fd(&request(PUBLIC_NET, "k/a", "eth0"), file.as_fd())
            .await,
        "not a network namespace",
    );
    assert!(manager.requests.lock().unwrap().is_empty());
    assert!(!pin.exists());

    // Accepted: the manager sees the pin's path only; two endpoints share the pin.
    let a = client
        .attach_with_netns_fd(&request(PUBLIC_NET, "k/a", "eth0"), own_netns.as_fd())
        .await
        .unwrap();
    assert_eq!(a.netns.as_ref(), Some(&pin));
    let seen = manager.requests.lock().unwrap()[0].clone();
    assert_eq!((seen.netns.as_ref(), seen.netns_fd), (Some(&pin), None));
    assert!(is_mount_point(&pin));
    let b = client
        .attach_with_netns_fd(&request(PUBLIC_NET, "k/b", "eth1"), own_netns.as_fd())
        .await
        .unwrap();
    assert_eq!(b.netns.as_ref(), Some(&pin));
    let by_key = |key: &str| EndpointRef::by_key(key.parse().unwrap());
    assert!(client.detach(&by_key("k/a")).await.unwrap().detached);
    assert!(is_mount_point(&pin), "still used by k/b");
    assert!(client.detach(&by_key("k/b")).await.unwrap().detached);
    assert!(!is_mount_point(&pin) && !pin.exists(), "gone with k/b");

    // A failed attach that left no endpoint leaves no pin.
    let refused = client
        .attach_with_netns_fd(&request(PRIVATE_NET, "k/c", "eth0"), own_netns.as_fd())
        .await
        .unwrap_err();
    assert_eq!(
        refused.api_error().map(|e| e.code),
        Some(ErrorCode::NotAuthorized)
    );
    assert!(!pin.exists(), "no pin after a failed attach");

    // gc takes the pin with the endpoint.
    client
        .attach_with_netns_fd(&request(PUBLIC_NET, "k/d", "eth0"), own_netns.as_fd())
        .await
        .unwrap();
    assert!(is_mount_point(&pin));
    let gc: GcRequest = serde_json::from_value(serde_json::json!({"valid": []})).unwrap();
    let removed = client.gc(&gc).await.unwrap();
    assert_eq!(removed.removed.len(), 1);
    assert!(!pin.exists(), "no pin after gc");
}
