//! What the local-API and controller-API bad-input tests share: the local API server
//! (`zt_agent::api::serve`) on loopback, in front of a stand-in for the driver that keeps
//! joined networks in memory, counts every request that reaches it, and answers the
//! controller routes with the real controller service over a home folder of the test's own.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node_core::time::Timestamp;
use node_core::vl2::NetworkId;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use zt_agent::api::{self, ApiRequest, ApiState};
use zt_agent::controller::ControllerService;

pub(crate) const TOKEN: &str = "sekrit0123456789abcdefgh";
pub(crate) const METRICS_TOKEN: &str = "metricsonly0123456789abc";
/// The controller's identity (address 8e4df28b72), with its secret.
pub(crate) const CONTROLLER: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";
/// A network the stand-in has joined.
pub(crate) const JOINED: &str = "8056c2e21c000001";
const T0: i64 = 1_700_000_000_000;

/// A fresh directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("zt-bad-local-{}-{name}", std::process::id()));
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

/// What the stand-in for the driver holds and has been asked.
#[derive(Default)]
pub(crate) struct Driven {
    /// Joined networks with the settings body of their last POST.
    pub(crate) networks: Mutex<BTreeMap<String, Value>>,
    /// Every request that reached the driver.
    pub(crate) requests: AtomicUsize,
}

impl Driven {
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn networks(&self) -> BTreeMap<String, Value> {
        self.networks.lock().unwrap().clone()
    }
}

async fn stand_in(
    mut requests: mpsc::Receiver<ApiRequest>,
    driven: Arc<Driven>,
    mut controller: ControllerService,
) {
    let mut tick = 0;
    while let Some(request) = requests.recv().await {
        driven.requests.fetch_add(1, Ordering::SeqCst);
        match request {
            ApiRequest::Metrics { reply } => {
                let _ = reply.send("zt_test 1\n".into());
            }
            ApiRequest::Status { reply } => drop(reply),
            ApiRequest::Peers { reply } => {
                let _ = reply.send(Vec::new());
            }
            ApiRequest::Peer { reply, .. } => {
                let _ = reply.send(None);
            }
            ApiRequest::Echo { reply, .. } => drop(reply),
            ApiRequest::Networks { reply } => {
                let list: Vec<Value> = driven
                    .networks()
                    .keys()
                    .map(|id| json!({ "nwid": id }))
                    .collect();
                let _ = reply.send(Value::Array(list));
            }
            ApiRequest::Network { network_id, reply } => {
                let known = driven.networks().contains_key(&network_id.to_string());
                let _ = reply.send(known.then(|| json!({ "nwid": network_id.to_string() })));
            }
            ApiRequest::Join {
                network_id,
                body,
                reply,
            } => {
                driven
                    .networks
                    .lock()
                    .unwrap()
                    .insert(network_id.to_string(), body);
                let _ = reply.send(json!({ "nwid": network_id.to_string() }));
            }
            ApiRequest::Leave { network_id, reply } => {
                let left = driven
                    .networks
                    .lock()
                    .unwrap()
                    .remove(&network_id.to_string())
                    .is_some();
                let _ = reply.send(left);
            }
            ApiRequest::Controller {
                method,
                path,
                body,
                reply,
            } => {
                tick += 1;
                let answer = controller.handle_http(Timestamp(T0 + tick), &method, &path, &body);
                let _ = reply.send((answer.status, answer.body));
            }
        }
    }
}

/// A local API on loopback over the stand-in; the controller keeps its records in
/// `home/controller.d`.
pub(crate) struct LocalApi {
    pub(crate) port: u16,
    pub(crate) driven: Arc<Driven>,
    pub(crate) home: PathBuf,
}

pub(crate) async fn start(home: &Path) -> LocalApi {
    let identity = CONTROLLER.parse().unwrap();
    let controller = ControllerService::open(home, identity, 7).unwrap();
    let driven = Arc::new(Driven::default());
    driven
        .networks
        .lock()
        .unwrap()
        .insert(JOINED.into(), json!({}));
    let (driver, requests) = mpsc::channel(8);
    tokio::spawn(stand_in(requests, driven.clone(), controller));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = ApiState::with_metrics_token(TOKEN.to_string(), METRICS_TOKEN.to_string(), driver);
    tokio::spawn(api::serve(listener, state));
    LocalApi {
        port,
        driven,
        home: home.to_path_buf(),
    }
}

/// How a request carries a token.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Carrier<'a> {
    None,
    Header(&'a str),
    Query(&'a str),
    Bearer(&'a str),
}

/// One request over a fresh connection; returns the status and the body as text. A server
/// that answers an oversized body early may close first: write errors are ignored.
pub(crate) fn request(
    port: u16,
    carrier: Carrier<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (path, header) = match carrier {
        Carrier::None => (path.to_string(), String::new()),
        Carrier::Header(token) => (path.to_string(), format!("X-ZT1-Auth: {token}\r\n")),
        Carrier::Bearer(token) => (
            path.to_string(),
            format!("Authorization: Bearer {token}\r\n"),
        ),
        Carrier::Query(token) => {
            let joiner = if path.contains('?') { '&' } else { '?' };
            (format!("{path}{joiner}auth={token}"), String::new())
        }
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}Connection: close\r\nContent-Length: {}\r\n\r\n",
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
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// [`request`] off the runtime's workers.
pub(crate) async fn call(
    port: u16,
    carrier: Carrier<'static>,
    method: &'static str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let (path, body) = (path.to_string(), body.to_vec());
    tokio::task::spawn_blocking(move || request(port, carrier, method, &path, &body))
        .await
        .unwrap()
}

/// Every file under `dir` with its contents.
pub(crate) fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
                out.insert(path, b"<dir>".to_vec());
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// The JSON error body `{"error": "..."}`'s message.
pub(crate) fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("not a JSON error: {body:?}"))
}

pub(crate) fn network_id(text: &str) -> NetworkId {
    text.parse().unwrap()
}
