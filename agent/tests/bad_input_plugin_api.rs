//! Bad input on the plugin API socket (issue 8, items 2 and 4): malformed JSON, wrong types,
//! unknown fields, oversized bodies, bad network IDs and hostile names in every field that
//! names something. Each request must get a 4xx answer whose JSON error says what is wrong,
//! and must change nothing: the manager behind the server is never called for it, its
//! endpoint list stays as it was, and no file appears next to the socket.
//!
//! Also: the socket is root-only (mode 0600 in a 0700 folder), and a process running as
//! another user can neither connect through the file's mode nor, if the mode is loosened,
//! get an answer (the server checks the peer's credentials).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node_core::vl2::Mac;
use node_core::Address;
use serde_json::{json, Value};
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, DetachResponse, Endpoint, EndpointManager, EndpointRef,
    EndpointState, GcRequest, GcResponse, ManagerFuture, PluginApiServer, Status,
};

/// An in-memory manager that counts every call, so that a test can tell that a refused
/// request never reached it.
#[derive(Default)]
struct CountingManager {
    endpoints: Mutex<Vec<Endpoint>>,
    calls: AtomicUsize,
}

impl CountingManager {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn snapshot(&self) -> Vec<Endpoint> {
        self.endpoints.lock().unwrap().clone()
    }
}

impl EndpointManager for CountingManager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let address = Address::from_u64(0x00_aa00_0001);
            let endpoint = Endpoint {
                key: request.key,
                owner: request.owner,
                network: request.network,
                container_id: request.container_id,
                netns: request.netns,
                if_name: request.if_name,
                mac: Mac::from_address(address, request.network),
                address,
                ips: vec!["10.147.17.5/24".parse().unwrap()],
                routes: Vec::new(),
                gateway: None,
                mtu: request.mtu.unwrap_or(2800),
                state: EndpointState::Ready,
                dns: None,
                counters: Default::default(),
            };
            self.endpoints.lock().unwrap().push(endpoint.clone());
            Ok(endpoint)
        })
    }

    fn detach(&self, request: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let before = endpoints.len();
            endpoints.retain(|endpoint| !request.matches(endpoint));
            Ok(DetachResponse {
                detached: endpoints.len() < before,
            })
        })
    }

    fn check(&self, request: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let endpoints = self.endpoints.lock().unwrap();
            endpoints
                .iter()
                .find(|endpoint| request.matches(endpoint))
                .cloned()
                .ok_or_else(|| ApiError::new(plugin_api::ErrorCode::NotFound, "no such endpoint"))
        })
    }

    fn status(&self) -> ManagerFuture<'_, Status> {
        Box::pin(async move {
            Status {
                ready: true,
                address: None,
                version: "test".into(),
                endpoints: self.endpoints.lock().unwrap().len(),
                reason: None,
            }
        })
    }

    fn gc(&self, request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut endpoints = self.endpoints.lock().unwrap();
            let mut response = GcResponse::default();
            endpoints.retain(|endpoint| {
                let keep = request.keeps(endpoint);
                if !keep {
                    response.removed.push(endpoint.key.clone());
                }
                keep
            });
            Ok(response)
        })
    }

    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
        Box::pin(async move { Ok(self.endpoints.lock().unwrap().clone()) })
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("zt-bad-plugin-{}-{name}", std::process::id()));
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

/// Every file under `dir` with its contents (sockets by name only).
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path.clone());
                out.insert(path, b"<dir>".to_vec());
            } else if kind.is_file() {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            } else {
                out.insert(path, b"<other>".to_vec());
            }
        }
    }
    out
}

/// Sends one HTTP/1.1 request; returns the status and the JSON body. A server that answers
/// an oversized body before reading all of it may close early: write errors are ignored.
fn raw_request(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {body:?}"));
    (status, json)
}

async fn start(dir: &TempDir) -> (PluginApiServer, Arc<CountingManager>) {
    let socket = dir.0.join("run/agent.sock");
    let manager = Arc::new(CountingManager::default());
    let server = plugin_api::spawn(&socket, manager.clone()).await.unwrap();
    (server, manager)
}

/// A valid attach, as JSON, with `netns` an existing directory; cases change one field.
fn good_attach(netns: &Path) -> Value {
    json!({
        "network": "8056c2e21c000001",
        "key": "k8s/default/web-0",
        "owner": "cni",
        "containerId": "c0ffee",
        "netns": netns,
        "ifName": "eth0",
        "wait": 5,
    })
}

fn with(mut value: Value, field: &str, replacement: Value) -> Value {
    value[field] = replacement;
    value
}

fn without(mut value: Value, field: &str) -> Value {
    value.as_object_mut().unwrap().remove(field);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = TempDir::new("table");
    let (server, manager) = start(&dir).await;
    let socket = server.path().to_path_buf();
    let netns = dir.0.join("netns-c0ffee");
    std::fs::create_dir_all(&netns).unwrap();

    // One endpoint that every refused request must leave alone.
    let good = good_attach(&netns);
    let s = socket.clone();
    let body = good.to_string();
    let (status, json) =
        tokio::task::spawn_blocking(move || raw_request(&s, "POST", "/v1/attach", body.as_bytes()))
            .await
            .unwrap();
    assert_eq!(status, 200, "{json}");

    let long = |n: usize| "a".repeat(n);
    let hostile_keys = [
        json!("../x"),
        json!("a/../b"),
        json!("/abs"),
        json!("a//b"),
        json!("a\u{0}b"),
        json!(""),
        json!("k y"),
        json!(long(256)),
    ];
    let hostile_container_ids = [
        json!("../x"),
        json!("-x"),
        json!("a/b"),
        json!("c\u{0}"),
        json!(""),
        json!(long(256)),
    ];
    let hostile_if_names = [
        json!("../x"),
        json!("a/b"),
        json!("."),
        json!(".."),
        json!(""),
        json!("eth0\u{0}"),
        json!("eth 0"),
        json!("eth:0"),
        json!(long(16)),
        json!(long(200)),
    ];
    let hostile_netns = [
        json!("relative/netns"),
        json!("../netns"),
        json!("/var/run/netns/../../etc/shadow"),
        json!("/var/run/netns/c\u{0}1"),
        json!(format!("/{}", long(5000))),
        json!(""),
    ];
    let bad_network_ids = [
        json!("xyz"),
        json!("8056c2e21c00000"),
        json!("8056c2e21c0000011"),
        json!("+056c2e21c000001"),
        json!("8056c2e21c00000g"),
        json!(""),
        json!(0x8056_c2e2_1c00_0001_u64),
    ];

    // (what, method, path, body, status)
    let mut cases: Vec<(String, &str, &str, Vec<u8>, u16)> = vec![
        (
            "bad JSON".into(),
            "POST",
            "/v1/attach",
            b"{\"network\":".to_vec(),
            400,
        ),
        ("empty body".into(), "POST", "/v1/attach", Vec::new(), 400),
        ("null".into(), "POST", "/v1/attach", b"null".to_vec(), 400),
        ("array".into(), "POST", "/v1/attach", b"[]".to_vec(), 400),
        (
            "string".into(),
            "POST",
            "/v1/attach",
            b"\"attach\"".to_vec(),
            400,
        ),
        (
            "not UTF-8".into(),
            "POST",
            "/v1/attach",
            vec![0xff, 0xfe, b'{'],
            400,
        ),
        (
            "oversized body".into(),
            "POST",
            "/v1/attach",
            vec![b' '; plugin_api::MAX_REQUEST_BODY + 1],
            400,
        ),
        (
            "oversized gc".into(),
            "POST",
            "/v1/gc",
            format!("{{\"valid\":[{}\"x\"]}}", "\"k\",".repeat(300_000)).into_bytes(),
            400,
        ),
    ];
    let attach_cases: Vec<(String, Value)> = [
        (
            "unknown field".to_string(),
            with(good.clone(), "bogus", json!(1)),
        ),
        ("no key".into(), without(good.clone(), "key")),
        ("no network".into(), without(good.clone(), "network")),
        ("no ifName".into(), without(good.clone(), "ifName")),
        (
            "no containerId".into(),
            without(good.clone(), "containerId"),
        ),
        ("key a number".into(), with(good.clone(), "key", json!(5))),
        (
            "ifName a bool".into(),
            with(good.clone(), "ifName", json!(true)),
        ),
        (
            "mtu a string".into(),
            with(good.clone(), "mtu", json!("1500")),
        ),
        (
            "mtu too small".into(),
            with(good.clone(), "mtu", json!(100)),
        ),
        (
            "mtu too big".into(),
            with(good.clone(), "mtu", json!(70_000)),
        ),
        ("mtu negative".into(), with(good.clone(), "mtu", json!(-1))),
        (
            "wait negative".into(),
            with(good.clone(), "wait", json!(-1)),
        ),
        (
            "wait too long".into(),
            with(good.clone(), "wait", json!(301)),
        ),
        (
            "defaultRoute a string".into(),
            with(good.clone(), "defaultRoute", json!("yes")),
        ),
        (
            "extraIps a string".into(),
            with(good.clone(), "extraIps", json!("10.0.0.1/24")),
        ),
        (
            "extraIps no prefix".into(),
            with(good.clone(), "extraIps", json!(["10.0.0.1"])),
        ),
        (
            "extraIps long prefix".into(),
            with(good.clone(), "extraIps", json!(["10.0.0.1/33"])),
        ),
        (
            "extraRoutes bad".into(),
            with(good.clone(), "extraRoutes", json!([{"dst": "x"}])),
        ),
        ("netnsFd negative".into(), {
            let v = without(good.clone(), "netns");
            with(v, "netnsFd", json!(-1))
        }),
        (
            "netns and netnsFd".into(),
            with(good.clone(), "netnsFd", json!(3)),
        ),
        (
            "owner hostile".into(),
            with(good.clone(), "owner", json!("../x")),
        ),
        ("owner empty".into(), with(good.clone(), "owner", json!(""))),
        (
            "owner long".into(),
            with(good.clone(), "owner", json!(long(65))),
        ),
        (
            "owner NUL".into(),
            with(good.clone(), "owner", json!("cni\u{0}")),
        ),
    ]
    .into_iter()
    .chain(
        hostile_keys
            .iter()
            .map(|k| (format!("key {k}"), with(good.clone(), "key", k.clone()))),
    )
    .chain(hostile_container_ids.iter().map(|c| {
        (
            format!("containerId {c}"),
            with(good.clone(), "containerId", c.clone()),
        )
    }))
    .chain(hostile_if_names.iter().map(|i| {
        (
            format!("ifName {i}"),
            with(good.clone(), "ifName", i.clone()),
        )
    }))
    .chain(hostile_netns.iter().map(|n| {
        (
            format!("netns {:.60}", n.to_string()),
            with(good.clone(), "netns", n.clone()),
        )
    }))
    .chain(bad_network_ids.iter().map(|n| {
        (
            format!("network {n}"),
            with(good.clone(), "network", n.clone()),
        )
    }))
    .collect();
    for (what, body) in attach_cases {
        cases.push((
            format!("attach: {what}"),
            "POST",
            "/v1/attach",
            body.to_string().into_bytes(),
            400,
        ));
    }
    // detach, check: a reference must name something, with valid names.
    let references: Vec<(String, Value)> = [
        ("names nothing".to_string(), json!({})),
        ("only ifName".into(), json!({"ifName": "eth0"})),
        (
            "unknown field".into(),
            json!({"key": "k8s/default/web-0", "bogus": true}),
        ),
        (
            "network bad".into(),
            json!({"key": "k8s/default/web-0", "network": "xyz"}),
        ),
    ]
    .into_iter()
    .chain(
        hostile_keys
            .iter()
            .map(|k| (format!("key {k}"), json!({ "key": k }))),
    )
    .chain(hostile_container_ids.iter().map(|c| {
        (
            format!("containerId {c}"),
            json!({"containerId": c, "ifName": "eth0"}),
        )
    }))
    .chain(hostile_if_names.iter().map(|i| {
        (
            format!("ifName {i}"),
            json!({"containerId": "c0ffee", "ifName": i}),
        )
    }))
    .collect();
    for (what, body) in &references {
        for path in ["/v1/detach", "/v1/check"] {
            cases.push((
                format!("{path}: {what}"),
                "POST",
                path,
                body.to_string().into_bytes(),
                400,
            ));
        }
    }
    cases.push((
        "detach: keepIdentity a string".into(),
        "POST",
        "/v1/detach",
        br#"{"key":"k8s/default/web-0","keepIdentity":"yes"}"#.to_vec(),
        400,
    ));
    // gc: hostile owners and names in its lists. An empty gc would remove everything, so a
    // list it cannot read must never be taken for an empty one.
    for body in [
        json!({"owner": "../x"}),
        json!({"owner": ""}),
        json!({"owner": 5}),
        json!({"valid": "k8s/default/web-0"}),
        json!({"valid": ["../x"]}),
        json!({"valid": [long(256)]}),
        json!({"validAttachments": [{"containerId": "../x", "ifName": "eth0"}]}),
        json!({"validAttachments": [{"containerId": "c0ffee", "ifName": "a/b"}]}),
        json!({"validAttachments": [{"containerId": "c0ffee"}]}),
        json!({"network": "xyz"}),
        json!({"bogus": []}),
    ] {
        cases.push((
            format!("gc {body}"),
            "POST",
            "/v1/gc",
            body.to_string().into_bytes(),
            400,
        ));
    }
    // sandbox: hostile names and namespace paths.
    let good_sandbox = json!({
        "key": "k8s/default/web-0", "containerId": "c0ffee", "ifName": "eth0",
        "sandbox": "/var/run/docker/netns/0123456789ab",
    });
    for (field, value) in [
        ("sandbox", json!("relative")),
        ("sandbox", json!("/var/run/docker/netns/../../../etc")),
        ("sandbox", json!("/var/run/docker/netns/a\u{0}b")),
        ("sandbox", json!(format!("/{}", long(5000)))),
        ("sandbox", json!(5)),
        ("key", json!("../x")),
        ("containerId", json!("")),
        ("ifName", json!(long(200))),
        ("bogus", json!(1)),
    ] {
        let body = with(good_sandbox.clone(), field, value);
        cases.push((
            format!("sandbox {body:.80}"),
            "POST",
            "/v1/sandbox",
            body.to_string().into_bytes(),
            400,
        ));
    }
    // Paths and methods.
    for (method, path, status) in [
        ("GET", "/v1/attach", 405),
        ("DELETE", "/v1/endpoints", 405),
        ("POST", "/v1/../v1/attach", 404),
        ("POST", "/v1/attach/../gc", 404),
        ("POST", "/v2/attach", 404),
        ("POST", "/v1/%2e%2e/attach", 404),
        ("POST", "/v1/attach%00", 404),
        ("GET", "/", 404),
    ] {
        cases.push((
            format!("{method} {path}"),
            method,
            path,
            good.to_string().into_bytes(),
            status,
        ));
    }

    let endpoints_before = manager.snapshot();
    let calls_before = manager.calls();
    let files_before = files_under(&dir.0);
    for (what, method, path, body, status) in cases {
        let s = socket.clone();
        let (got, json) = tokio::task::spawn_blocking(move || raw_request(&s, method, path, &body))
            .await
            .unwrap();
        assert_eq!(got, status, "{what}: {json}");
        let code = json["code"].as_str().unwrap_or_default();
        let expected_code = if status == 400 {
            "InvalidRequest"
        } else {
            "UnsupportedOperation"
        };
        assert_eq!(code, expected_code, "{what}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.len() > 10,
            "{what}: the message says what is wrong: {json}"
        );
        assert!(
            message.len() < 2048,
            "{what}: the message is bounded: {}",
            message.len()
        );
        assert_eq!(
            manager.calls(),
            calls_before,
            "{what}: the manager was called"
        );
        assert_eq!(
            manager.snapshot(),
            endpoints_before,
            "{what}: endpoints changed"
        );
        assert_eq!(files_under(&dir.0), files_before, "{what}: files changed");
    }

    // Messages name the field: a few that a user is most likely to meet.
    for (body, says) in [
        (
            with(good.clone(), "ifName", json!("../x")),
            "interface name",
        ),
        (with(good.clone(), "key", json!("../x")), "endpoint key"),
        (
            with(good.clone(), "containerId", json!("../x")),
            "container ID",
        ),
        (with(good.clone(), "netns", json!("/a/../b")), "'..'"),
        (with(good.clone(), "netns", json!("/a\u{0}b")), "NUL"),
        (with(good.clone(), "network", json!("xyz")), "network ID"),
        (with(good.clone(), "bogus", json!(1)), "bogus"),
    ] {
        let s = socket.clone();
        let (_, json) = tokio::task::spawn_blocking(move || {
            raw_request(&s, "POST", "/v1/attach", body.to_string().as_bytes())
        })
        .await
        .unwrap();
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    }
}

/// The uid the unprivileged child runs as.
const NOBODY: u32 = 65534;
/// Set for the child: the socket to try.
const CHILD_SOCKET_VAR: &str = "ZT_BAD_INPUT_CONNECT_AS_OTHER_USER";

/// Not a test of its own: the body of the child process [`other_users_get_nothing`]
/// starts as another user. Without the variable it does nothing.
#[test]
fn connect_as_child() {
    let Some(socket) = std::env::var_os(CHILD_SOCKET_VAR) else {
        return;
    };
    let outcome = match UnixStream::connect(&socket) {
        Err(e) => format!("refused: {e}"),
        Ok(mut stream) => {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream
                .write_all(b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            if answer.is_empty() {
                "closed without an answer".to_string()
            } else {
                format!("ANSWERED: {}", String::from_utf8_lossy(&answer))
            }
        }
    };
    println!("\nOUTCOME {outcome}");
}

/// Runs [`connect_as_child`] as `nobody`; returns its outcome line, or what went wrong.
fn connect_as_nobody(socket: &Path) -> Result<String, String> {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "connect_as_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET_VAR, socket)
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| {
            line.split_once("OUTCOME ")
                .map(|(_, outcome)| outcome.to_string())
        })
        .ok_or_else(|| {
            format!(
                "no outcome: {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_get_nothing() {
    let is_root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !is_root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: this test must run"
        );
        eprintln!("skipped: dropping to another user needs root");
        return;
    }
    let dir = TempDir::new("other-user");
    // The temporary directory must let `nobody` reach the socket's folder once it is opened.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (server, manager) = start(&dir).await;
    let socket = server.path().to_path_buf();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is root-only");
    let parent = socket.parent().unwrap();
    let parent_mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
    assert_eq!(parent_mode, 0o700, "its new folder too");

    // As created: the folder's and the socket's modes keep another user out.
    let s = socket.clone();
    let outcome = tokio::task::spawn_blocking(move || connect_as_nobody(&s))
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.starts_with("refused"), "{outcome}");

    // Loosened by hand: the peer check still refuses to serve another user.
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let s = socket.clone();
    let outcome = tokio::task::spawn_blocking(move || connect_as_nobody(&s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, "closed without an answer");
    assert_eq!(manager.calls(), 0);
}
