//! The local HTTP API, as ZeroTier One serves it on `127.0.0.1:<port>` (service/OneService.cpp):
//! every request carries the token from `authtoken.secret` in `X-ZT1-Auth` (or `?auth=`, or
//! `Authorization: Bearer`), else 401. `GET /metrics` also takes the token from
//! `metricstoken.secret`, which opens nothing else, so a scraper need not hold the API's key.
//!
//! - `GET /status`, `GET /peer`, `GET /peer/<address>`: ZeroTier One's JSON field names.
//! - `POST /echo/<address>` (ours): sends a VL1 ECHO (the body, if any, is its payload) and
//!   waits up to [`ECHO_TIMEOUT`] for the OK: `{"address","rtt","hops","path"}`, or 504.
//!
//! This module holds no node: it forwards each request to the driver task over a channel
//! ([`ApiRequest`]) and renders the answer, so it can be tested against a fake driver.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use node_core::vl2::NetworkId;
use node_core::Address;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How long `POST /echo` waits for the reply.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body read (a controller network with its rules, at most).
pub const MAX_BODY: usize = 1 << 20;
/// Largest ECHO payload.
pub const MAX_ECHO_PAYLOAD: usize = 4096;
/// The header ZeroTier One's CLI sends its token in.
pub const AUTH_HEADER: &str = "x-zt1-auth";

/// A question for the task that owns the node.
#[derive(Debug)]
pub enum ApiRequest {
    /// Prometheus text for `GET /metrics`.
    Metrics { reply: oneshot::Sender<String> },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerReport>>,
    },
    Peer {
        address: Address,
        reply: oneshot::Sender<Option<PeerReport>>,
    },
    /// Send an ECHO; the driver answers when the OK arrives (or drops `reply` when it gives
    /// up).
    Echo {
        address: Address,
        payload: Vec<u8>,
        reply: oneshot::Sender<EchoReport>,
    },
    /// `GET /network`: every joined network's object.
    Networks { reply: oneshot::Sender<Value> },
    /// `GET /network/<nwid>`.
    Network {
        network_id: NetworkId,
        reply: oneshot::Sender<Option<Value>>,
    },
    /// `POST /network/<nwid>`: join (if not yet) and apply the settings in `body`.
    Join {
        network_id: NetworkId,
        body: Value,
        reply: oneshot::Sender<Value>,
    },
    /// `DELETE /network/<nwid>`: true if it was joined.
    Leave {
        network_id: NetworkId,
        reply: oneshot::Sender<bool>,
    },
    /// `/controller...` and `/unstable/controller...`: status and JSON body.
    Controller {
        method: String,
        path: String,
        body: Vec<u8>,
        reply: oneshot::Sender<(u16, Value)>,
    },
}

/// `GET /status`, with ZeroTier One's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub address: String,
    pub public_identity: String,
    pub online: bool,
    pub tcp_fallback_active: bool,
    pub version_major: u8,
    pub version_minor: u8,
    pub version_rev: u16,
    pub version_build: u16,
    pub version: String,
    pub clock: i64,
    pub planet_world_id: u64,
    pub planet_world_timestamp: u64,
    pub config: StatusConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusConfig {
    pub settings: StatusSettings,
}

/// The `config.settings` object ZeroTier One reports; fixed values for features we lack.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSettings {
    pub primary_port: u16,
    pub secondary_port: u16,
    pub tertiary_port: u16,
    pub home_dir: String,
    pub listening_on: Vec<String>,
    pub surface_addresses: Vec<String>,
    pub allow_tcp_fallback_relay: bool,
    pub force_tcp_relay: bool,
    pub port_mapping_enabled: bool,
    pub software_update: String,
    pub software_update_channel: String,
}

/// One entry of `GET /peer`. Unknown versions and latency are -1, as in ZeroTier One.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    pub address: String,
    pub version_major: i32,
    pub version_minor: i32,
    pub version_rev: i32,
    pub version: String,
    pub latency: i64,
    pub role: &'static str,
    pub is_bonded: bool,
    pub tunneled: bool,
    pub paths: Vec<PathReport>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathReport {
    /// `ip/port`, ZeroTier's text form.
    pub address: String,
    pub last_send: i64,
    pub last_receive: i64,
    pub trusted_path_id: u64,
    pub active: bool,
    pub expired: bool,
    pub preferred: bool,
    pub local_socket: i64,
    pub local_port: u16,
}

/// The answer to `POST /echo/<address>`.
#[derive(Clone, Debug, Serialize)]
pub struct EchoReport {
    pub address: String,
    /// Round trip in milliseconds (microsecond resolution).
    pub rtt: f64,
    pub hops: u8,
    /// The physical path the reply came over, `ip/port`.
    pub path: String,
}

/// `ip/port`, as ZeroTier One prints a physical address.
pub fn endpoint_text(addr: SocketAddr) -> String {
    format!("{}/{}", addr.ip(), addr.port())
}

/// The path the metrics token opens (ZeroTier One compares the path exactly).
pub const METRICS_PATH: &str = "/metrics";

/// What every connection handler shares.
pub struct ApiState {
    token: String,
    /// Accepted for [`METRICS_PATH`] only.
    metrics_token: Option<String>,
    driver: mpsc::Sender<ApiRequest>,
}

impl ApiState {
    pub fn new(token: String, driver: mpsc::Sender<ApiRequest>) -> Arc<Self> {
        Arc::new(Self {
            token,
            metrics_token: None,
            driver,
        })
    }

    /// Like [`ApiState::new`], with `metrics_token` (`metricstoken.secret`) also accepted for
    /// `GET /metrics`. An empty one is ignored: it would match a request carrying no token.
    pub fn with_metrics_token(
        token: String,
        metrics_token: String,
        driver: mpsc::Sender<ApiRequest>,
    ) -> Arc<Self> {
        Arc::new(Self {
            token,
            metrics_token: (!metrics_token.is_empty()).then_some(metrics_token),
            driver,
        })
    }

    /// Whether a request for `path` carries a token that opens it: the API token anywhere,
    /// the metrics token for [`METRICS_PATH`].
    fn authorizes(&self, path: &str, headers: &HeaderMap, query: &str) -> bool {
        is_authorized(headers, query, &self.token)
            || (path == METRICS_PATH
                && self
                    .metrics_token
                    .as_deref()
                    .is_some_and(|token| is_authorized(headers, query, token)))
    }
}

/// Accepts connections until the listener fails or the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("local API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "local API connection ended: {e}");
            }
        });
    }
}

/// Answers one HTTP request.
pub async fn handle(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_string();
    if !state.authorizes(parts.uri.path(), &parts.headers, &query) {
        return respond(StatusCode::UNAUTHORIZED, json!({}));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY} bytes"),
            )
        }
    };
    route(state, &parts.method, parts.uri.path(), body).await
}

/// Dispatches an authorized request.
async fn route(
    state: &ApiState,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if crate::controller::ControllerService::handles_path(path) {
        let request = |reply| ApiRequest::Controller {
            method: method.as_str().to_string(),
            path: path.to_string(),
            body: body.to_vec(),
            reply,
        };
        return match ask(state, request).await {
            Some((status, value)) => respond(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                value,
            ),
            None => unavailable(),
        };
    }
    match (segments.as_slice(), method) {
        (["metrics"], &Method::GET) => {
            match ask(state, |reply| ApiRequest::Metrics { reply }).await {
                Some(text) => Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(text)))
                    .unwrap_or_else(|_| unavailable()),
                None => unavailable(),
            }
        }
        (["network"], &Method::GET) => {
            match ask(state, |reply| ApiRequest::Networks { reply }).await {
                Some(list) => respond(StatusCode::OK, list),
                None => unavailable(),
            }
        }
        (["network", id], m) => {
            let Some(network_id) = parse_network_id(id) else {
                return error(StatusCode::BAD_REQUEST, format!("not a network ID: {id}"));
            };
            match *m {
                Method::GET => {
                    match ask(state, |reply| ApiRequest::Network { network_id, reply }).await {
                        Some(Some(network)) => respond(StatusCode::OK, network),
                        Some(None) => error(StatusCode::NOT_FOUND, format!("not joined: {id}")),
                        None => unavailable(),
                    }
                }
                Method::POST | Method::PUT => {
                    let body = match network_settings(&body) {
                        Ok(body) => body,
                        Err(message) => return error(StatusCode::BAD_REQUEST, message),
                    };
                    let request = |reply| ApiRequest::Join {
                        network_id,
                        body,
                        reply,
                    };
                    match ask(state, request).await {
                        Some(network) => respond(StatusCode::OK, network),
                        None => unavailable(),
                    }
                }
                Method::DELETE => {
                    match ask(state, |reply| ApiRequest::Leave { network_id, reply }).await {
                        Some(true) => respond(StatusCode::OK, json!({"result": true})),
                        Some(false) => respond(StatusCode::OK, json!({})),
                        None => unavailable(),
                    }
                }
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} not allowed on {path}"),
                ),
            }
        }
        (["status"], &Method::GET) => {
            match ask(state, |reply| ApiRequest::Status { reply }).await {
                Some(status) => respond(StatusCode::OK, to_json(&status)),
                None => unavailable(),
            }
        }
        (["peer"], &Method::GET) => match ask(state, |reply| ApiRequest::Peers { reply }).await {
            Some(peers) => respond(StatusCode::OK, to_json(&peers)),
            None => unavailable(),
        },
        (["peer", address], &Method::GET) => {
            let Ok(address) = parse_address(address) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("not a ZeroTier address: {address}"),
                );
            };
            match ask(state, |reply| ApiRequest::Peer { address, reply }).await {
                Some(Some(peer)) => respond(StatusCode::OK, to_json(&peer)),
                Some(None) => error(StatusCode::NOT_FOUND, format!("no peer {address}")),
                None => unavailable(),
            }
        }
        (["echo", address], &Method::POST) => {
            let Ok(address) = parse_address(address) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("not a ZeroTier address: {address}"),
                );
            };
            if body.len() > MAX_ECHO_PAYLOAD {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("ECHO payload over {MAX_ECHO_PAYLOAD} bytes"),
                );
            }
            echo(state, address, body.to_vec()).await
        }
        (["status"] | ["peer"] | ["peer", _] | ["echo", _], _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

async fn echo(state: &ApiState, address: Address, payload: Vec<u8>) -> Response<Full<Bytes>> {
    let (reply, answer) = oneshot::channel();
    if state
        .driver
        .send(ApiRequest::Echo {
            address,
            payload,
            reply,
        })
        .await
        .is_err()
    {
        return unavailable();
    }
    match tokio::time::timeout(ECHO_TIMEOUT, answer).await {
        Ok(Ok(report)) => respond(StatusCode::OK, to_json(&report)),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no ECHO reply from {address} within {} s",
                ECHO_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Sends a request to the driver and waits for its answer; `None` if the driver is gone.
async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    state.driver.send(make(reply)).await.ok()?;
    answer.await.ok()
}

/// The settings `POST /network/<nwid>` takes; each must be a JSON boolean when given.
pub const NETWORK_SETTINGS: [&str; 4] = ["allowManaged", "allowGlobal", "allowDefault", "allowDNS"];

/// A `POST /network/<nwid>` body: nothing (`{}`), or a JSON object whose settings (see
/// [`NETWORK_SETTINGS`]) are booleans; other fields are ignored, as ZeroTier One does.
/// ZeroTier One joins first and then ignores a body it cannot use; we refuse it before
/// anything changes, so that a typo is an error rather than a join with other settings.
fn network_settings(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err(format!(
            "the body must be a JSON object of settings, not {}",
            json_type(&value)
        ));
    };
    for name in NETWORK_SETTINGS {
        match object.get(name) {
            None | Some(Value::Bool(_)) => {}
            Some(other) => {
                return Err(format!(
                    "{name} must be true or false, not {}",
                    json_type(other)
                ))
            }
        }
    }
    Ok(value)
}

/// A JSON value's kind, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_network_id(text: &str) -> Option<NetworkId> {
    // `from_str_radix` alone would take a leading '+'.
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(NetworkId)
}

fn parse_address(text: &str) -> Result<Address, node_core::address::AddressParseError> {
    let address: Address = text.parse()?;
    if address.is_reserved() {
        return Err(node_core::address::AddressParseError);
    }
    Ok(address)
}

/// The token may come in `X-ZT1-Auth`, `?auth=` or `Authorization: Bearer`, as ZeroTier One
/// accepts it.
pub fn is_authorized(headers: &HeaderMap, query: &str, token: &str) -> bool {
    if let Some(value) = headers.get(AUTH_HEADER) {
        return equal_in_constant_time(value.as_bytes(), token.as_bytes());
    }
    if let Some(value) = query_param(query, "auth") {
        return equal_in_constant_time(value.as_bytes(), token.as_bytes());
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| equal_in_constant_time(v.trim().as_bytes(), token.as_bytes()))
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    respond(status, json!({ "error": message }))
}

fn unavailable() -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is shutting down".to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ApiClient;

    const TOKEN: &str = "sekrit0123456789abcdefgh";

    fn peer_report(address: &str) -> PeerReport {
        PeerReport {
            address: address.to_string(),
            version_major: 1,
            version_minor: 14,
            version_rev: 1,
            version: "1.14.1".into(),
            latency: 3,
            role: "PLANET",
            is_bonded: false,
            tunneled: false,
            paths: vec![PathReport {
                address: "127.0.0.1/9993".into(),
                last_send: 10,
                last_receive: 11,
                trusted_path_id: 0,
                active: true,
                expired: false,
                preferred: true,
                local_socket: 1,
                local_port: 9993,
            }],
        }
    }

    /// A stand-in for the driver: answers with fixed reports; echoes to 1111111111 succeed,
    /// others are never answered.
    async fn fake_driver(mut requests: mpsc::Receiver<ApiRequest>) {
        let mut unanswered = Vec::new();
        while let Some(request) = requests.recv().await {
            match request {
                ApiRequest::Metrics { reply } => {
                    let _ = reply.send("zt_test_metric 1\n".to_string());
                }
                ApiRequest::Status { reply } => {
                    let _ = reply.send(StatusReport {
                        address: "8e4df28b72".into(),
                        public_identity: "8e4df28b72:0:00".into(),
                        online: true,
                        tcp_fallback_active: false,
                        version_major: 1,
                        version_minor: 14,
                        version_rev: 1,
                        version_build: 0,
                        version: "1.14.1".into(),
                        clock: 1,
                        planet_world_id: 42,
                        planet_world_timestamp: 7,
                        config: StatusConfig {
                            settings: StatusSettings {
                                primary_port: 9993,
                                secondary_port: 0,
                                tertiary_port: 0,
                                home_dir: "/x".into(),
                                listening_on: vec![],
                                surface_addresses: vec![],
                                allow_tcp_fallback_relay: false,
                                force_tcp_relay: false,
                                port_mapping_enabled: false,
                                software_update: "disable".into(),
                                software_update_channel: "release".into(),
                            },
                        },
                    });
                }
                ApiRequest::Peers { reply } => {
                    let _ = reply.send(vec![peer_report("1111111111")]);
                }
                ApiRequest::Peer { address, reply } => {
                    let known = address.to_string() == "1111111111";
                    let _ = reply.send(known.then(|| peer_report("1111111111")));
                }
                ApiRequest::Echo {
                    address,
                    payload,
                    reply,
                } => {
                    if address.to_string() == "1111111111" {
                        let _ = reply.send(EchoReport {
                            address: address.to_string(),
                            rtt: payload.len() as f64,
                            hops: 0,
                            path: "127.0.0.1/9993".into(),
                        });
                    } else {
                        unanswered.push(reply);
                    }
                }
                ApiRequest::Networks { reply } => {
                    let _ = reply.send(json!([{"nwid": "8056c2e21c000001"}]));
                }
                ApiRequest::Network { network_id, reply } => {
                    let known = network_id.0 == 0x8056_c2e2_1c00_0001;
                    let _ = reply.send(known.then(|| json!({"nwid": "8056c2e21c000001"})));
                }
                ApiRequest::Join {
                    network_id, body, ..
                } => {
                    // Answer with what the driver was asked, to check the routing.
                    let _ = (network_id, body);
                }
                ApiRequest::Leave { network_id, reply } => {
                    let _ = reply.send(network_id.0 == 0x8056_c2e2_1c00_0001);
                }
                ApiRequest::Controller {
                    method,
                    path,
                    body,
                    reply,
                } => {
                    let _ = reply.send((
                        201,
                        json!({"method": method, "path": path, "len": body.len()}),
                    ));
                }
            }
        }
    }

    async fn start() -> u16 {
        start_with(|driver| ApiState::new(TOKEN.to_string(), driver)).await
    }

    async fn start_with(state: impl FnOnce(mpsc::Sender<ApiRequest>) -> Arc<ApiState>) -> u16 {
        let (driver, requests) = mpsc::channel(8);
        tokio::spawn(fake_driver(requests));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(serve(listener, state(driver)));
        port
    }

    /// Like [`call`], for a body that is not JSON.
    async fn call_text(port: u16, token: &str, path: &str) -> (u16, String) {
        let client = ApiClient::new(([127, 0, 0, 1], port).into(), token.to_string());
        let path = path.to_string();
        let response = tokio::task::spawn_blocking(move || client.request("GET", &path, b""))
            .await
            .expect("join")
            .expect("request");
        (response.status, response.body)
    }

    /// Runs a blocking client call off the runtime's worker.
    async fn call(
        port: u16,
        token: &str,
        method: &'static str,
        path: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let client = ApiClient::new(([127, 0, 0, 1], port).into(), token.to_string());
        let path = path.to_string();
        let body = body.to_vec();
        let response = tokio::task::spawn_blocking(move || client.request(method, &path, &body))
            .await
            .expect("join")
            .expect("request");
        let json = serde_json::from_str(&response.body).expect("JSON body");
        (response.status, json)
    }

    #[tokio::test]
    async fn refuses_requests_without_the_token() {
        let port = start().await;
        for path in ["/status", "/peer", "/peer/1111111111", "/nothing"] {
            let (status, body) = call(port, "", "GET", path, b"").await;
            assert_eq!(status, 401, "{path}");
            assert_eq!(body, json!({}));
            let (status, _) = call(port, "wrong-token", "GET", path, b"").await;
            assert_eq!(status, 401, "{path}");
        }
        let (status, _) = call(port, "", "POST", "/echo/1111111111", b"").await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn accepts_the_token_in_header_or_query() {
        let port = start().await;
        let (status, body) = call(port, TOKEN, "GET", "/status", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body["address"], "8e4df28b72");
        assert_eq!(body["planetWorldId"], 42);
        assert_eq!(body["versionMajor"], 1);
        assert_eq!(body["config"]["settings"]["primaryPort"], 9993);
        let (status, body) = call(port, "", "GET", &format!("/status?auth={TOKEN}"), b"").await;
        assert_eq!(status, 200);
        assert_eq!(body["online"], true);
    }

    #[tokio::test]
    async fn peers_and_errors() {
        let port = start().await;
        let (status, body) = call(port, TOKEN, "GET", "/peer", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body[0]["role"], "PLANET");
        assert_eq!(body[0]["paths"][0]["address"], "127.0.0.1/9993");
        assert_eq!(body[0]["paths"][0]["lastReceive"], 11);
        assert_eq!(body[0]["isBonded"], false);
        let (status, body) = call(port, TOKEN, "GET", "/peer/1111111111", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body["versionRev"], 1);
        let (status, body) = call(port, TOKEN, "GET", "/peer/2222222222", b"").await;
        assert_eq!(status, 404);
        assert!(body["error"].is_string());
        let (status, _) = call(port, TOKEN, "GET", "/peer/xyz", b"").await;
        assert_eq!(status, 400);
        let (status, _) = call(port, TOKEN, "GET", "/peer/ff00000001", b"").await;
        assert_eq!(status, 400);
        let (status, _) = call(port, TOKEN, "GET", "/moon", b"").await;
        assert_eq!(status, 404);
        let (status, _) = call(port, TOKEN, "POST", "/status", b"").await;
        assert_eq!(status, 405);
    }

    #[tokio::test]
    async fn echo_answers_or_times_out() {
        let port = start().await;
        let (status, body) = call(port, TOKEN, "POST", "/echo/1111111111", b"abc").await;
        assert_eq!(status, 200);
        assert_eq!(body["rtt"], 3.0);
        assert_eq!(body["path"], "127.0.0.1/9993");
        let (status, _) = call(port, TOKEN, "POST", "/echo/zz", b"").await;
        assert_eq!(status, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn echo_times_out_with_504() {
        let (driver, requests) = mpsc::channel(8);
        tokio::spawn(fake_driver(requests));
        let state = ApiState::new(TOKEN.to_string(), driver);
        let response = echo(&state, "2222222222".parse().unwrap(), Vec::new()).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn network_and_controller_routes() {
        let port = start().await;
        let (status, body) = call(port, TOKEN, "GET", "/network", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body[0]["nwid"], "8056c2e21c000001");
        let (status, _) = call(port, TOKEN, "GET", "/network/8056c2e21c000001", b"").await;
        assert_eq!(status, 200);
        let (status, _) = call(port, TOKEN, "GET", "/network/8056c2e21c000002", b"").await;
        assert_eq!(status, 404);
        let (status, _) = call(port, TOKEN, "GET", "/network/nothex", b"").await;
        assert_eq!(status, 400);
        let (status, _) = call(port, TOKEN, "POST", "/network/8056c2e21c000001", b"{bad").await;
        assert_eq!(status, 400);
        let (status, body) = call(port, TOKEN, "DELETE", "/network/8056c2e21c000001", b"").await;
        assert_eq!((status, body), (200, json!({"result": true})));
        let (status, body) = call(port, TOKEN, "DELETE", "/network/8056c2e21c000002", b"").await;
        assert_eq!((status, body), (200, json!({})));
        let (status, body) = call(port, TOKEN, "POST", "/controller/network", b"{}").await;
        assert_eq!(status, 201, "the controller's status is passed through");
        assert_eq!(body["path"], "/controller/network");
        assert_eq!(body["method"], "POST");
        let (status, _) = call(port, "wrong", "GET", "/controller", b"").await;
        assert_eq!(status, 401, "the controller API needs the token too");
    }

    const METRICS_TOKEN: &str = "metricsonly0123456789abc";

    #[tokio::test]
    async fn metrics_take_either_token_and_the_metrics_token_opens_nothing_else() {
        let port = start_with(|driver| {
            ApiState::with_metrics_token(TOKEN.to_string(), METRICS_TOKEN.to_string(), driver)
        })
        .await;
        for token in [TOKEN, METRICS_TOKEN] {
            let (status, body) = call_text(port, token, "/metrics").await;
            assert_eq!((status, body.as_str()), (200, "zt_test_metric 1\n"));
        }
        let (status, _) = call_text(port, "", &format!("/metrics?auth={METRICS_TOKEN}")).await;
        assert_eq!(status, 200, "in the query too");
        let (status, body) = call_text(port, "", "/metrics").await;
        assert_eq!((status, body.as_str()), (401, "{}"));
        let (status, _) = call_text(port, "wrong", "/metrics").await;
        assert_eq!(status, 401);
        for path in ["/status", "/peer", "/network", "/controller", "/metrics/"] {
            let (status, _) = call_text(port, METRICS_TOKEN, path).await;
            assert_eq!(status, 401, "{path}");
        }
    }

    #[tokio::test]
    async fn metrics_are_plain_text() {
        let port = start().await;
        let (status, body) = call_text(port, TOKEN, "/metrics").await;
        assert_eq!((status, body.as_str()), (200, "zt_test_metric 1\n"));
        let (status, _) = call(port, TOKEN, "POST", "/metrics", b"").await;
        assert_eq!(status, 404);
    }

    #[test]
    fn metrics_token_in_any_carrier_and_never_empty() {
        let (driver, _requests) = mpsc::channel(1);
        let state =
            ApiState::with_metrics_token(TOKEN.to_string(), METRICS_TOKEN.to_string(), driver);
        let mut bearer = HeaderMap::new();
        bearer.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {METRICS_TOKEN}")).expect("header"),
        );
        assert!(state.authorizes("/metrics", &bearer, ""));
        assert!(!state.authorizes("/status", &bearer, ""));
        let (driver, _requests) = mpsc::channel(1);
        let state = ApiState::with_metrics_token(TOKEN.to_string(), String::new(), driver);
        assert!(!state.authorizes("/metrics", &HeaderMap::new(), "auth="));
        let mut empty = HeaderMap::new();
        empty.insert(AUTH_HEADER, HeaderValue::from_static(""));
        assert!(!state.authorizes("/metrics", &empty, ""));
    }

    #[test]
    fn query_token_is_percent_decoded() {
        assert_eq!(
            query_param("a=1&auth=x%2By+z", "auth").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_param("auth", "auth").as_deref(), Some(""));
        assert_eq!(query_param("a=%zz", "a").as_deref(), Some("%zz"));
        assert!(query_param("a=1", "auth").is_none());
    }
}
