//! The client of the plugin API ([`crate::plugin_api`]) for the CLI and the plugins: hyper's
//! HTTP/1.1 client over the agent's Unix socket (hyperlocal's connector), one connection per
//! request (no pool: a blocking caller's runtime lives for one call), with a deadline on the
//! whole exchange.
//!
//! [`AsyncPluginClient`] is for callers with a tokio runtime (the Docker plugin);
//! [`PluginClient`] is the blocking form for the CLI and the CNI plugin, which drives the async
//! one on a current-thread runtime of its own for each call.
//!
//! Errors keep what a plugin must tell apart: the agent could not be reached at all
//! ([`ClientError::Connect`]: a CNI DEL queues and succeeds), the agent answered with an
//! [`ApiError`] ([`ClientError::Api`]: report its code and message), or the exchange failed
//! midway.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::plugin_api::{
    ApiError, AttachRequest, DetachRequest, DetachResponse, Endpoint, EndpointRef, GcRequest,
    GcResponse, SandboxRequest, Status, API_PREFIX, ATTACH_GRACE,
};

/// Deadline of an operation other than attach.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (the endpoint list of a busy host fits many times).
pub const MAX_RESPONSE: usize = 16 << 20;
/// Pause before connecting again to an agent whose queue of connections is full.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (the agent is down or elsewhere).
    #[error("cannot reach zt-agent at {socket}: {source} (is `zt-agent run --socket {socket}` running?)", socket = .socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    /// The agent did not answer in time.
    #[error("zt-agent did not answer {operation} within {} s", .after.as_secs())]
    Timeout { operation: String, after: Duration },
    /// The connection failed midway.
    #[error("talking to zt-agent ({operation}): {source}")]
    Io {
        operation: String,
        source: io::Error,
    },
    /// The answer is not what the API promises.
    #[error("zt-agent answered {operation} with something unexpected: {problem}")]
    Protocol { operation: String, problem: String },
    /// The agent refused or failed the operation.
    #[error("{error}")]
    Api { status: u16, error: ApiError },
}

impl ClientError {
    /// Whether the agent was not reached at all, so nothing was done.
    pub fn is_agent_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// The agent's error, when it answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// `request` to be sent with `netnsFd` naming `netns` (and no `netns` path): the agent opens
/// the descriptor through this process while the call is in flight, which the borrow
/// guarantees.
fn with_netns_fd(request: &AttachRequest, netns: BorrowedFd<'_>) -> AttachRequest {
    let mut request = request.clone();
    request.netns = None;
    request.netns_fd = Some(netns.as_raw_fd());
    request
}

/// The async client for the agent listening at one socket path.
#[derive(Clone, Debug)]
pub struct AsyncPluginClient {
    socket: PathBuf,
    timeout: Duration,
    http: Client<UnixConnector, Full<Bytes>>,
}

impl AsyncPluginClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        // No idle connections kept: a connection must not outlive the runtime that drives
        // it (the blocking client's lasts one call), and the agent is local.
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(UnixConnector);
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            http,
        }
    }

    /// Sets the deadline of operations other than attach (which waits as long as it asks to
    /// wait, plus a margin).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn attach(&self, request: &AttachRequest) -> Result<Endpoint, ClientError> {
        // The server gives the manager the wait plus a grace period; allow for both.
        let deadline = request.wait_duration() + ATTACH_GRACE + self.timeout;
        self.call(Method::POST, "attach", Some(request), deadline)
            .await
    }

    /// [`Self::attach`] into the namespace `netns` refers to, passed as a descriptor of this
    /// process (`netnsFd`) rather than a path; `request.netns` is ignored. The agent pins
    /// the namespace for as long as the endpoint exists.
    pub async fn attach_with_netns_fd(
        &self,
        request: &AttachRequest,
        netns: BorrowedFd<'_>,
    ) -> Result<Endpoint, ClientError> {
        self.attach(&with_netns_fd(request, netns)).await
    }

    pub async fn detach(&self, request: &EndpointRef) -> Result<DetachResponse, ClientError> {
        self.call(Method::POST, "detach", Some(request), self.timeout)
            .await
    }

    /// A detach with its options (`keepIdentity`).
    pub async fn detach_with(
        &self,
        request: &DetachRequest,
    ) -> Result<DetachResponse, ClientError> {
        self.call(Method::POST, "detach", Some(request), self.timeout)
            .await
    }

    /// Where the runtime moved an endpoint's interface (`POST /v1/sandbox`).
    pub async fn sandbox(&self, request: &SandboxRequest) -> Result<Endpoint, ClientError> {
        self.call(Method::POST, "sandbox", Some(request), self.timeout)
            .await
    }

    pub async fn check(&self, request: &EndpointRef) -> Result<Endpoint, ClientError> {
        self.call(Method::POST, "check", Some(request), self.timeout)
            .await
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call::<(), _>(Method::GET, "status", None, self.timeout)
            .await
    }

    pub async fn gc(&self, request: &GcRequest) -> Result<GcResponse, ClientError> {
        self.call(Method::POST, "gc", Some(request), self.timeout)
            .await
    }

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, ClientError> {
        self.call::<(), _>(Method::GET, "endpoints", None, self.timeout)
            .await
    }

    /// One request, one answer: `method` on `/v1/<operation>` with `body` as JSON, within
    /// `limit`. Public for operations this client has no method for yet.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &str,
        body: Option<&B>,
        limit: Duration,
    ) -> Result<T, ClientError> {
        let exchange = async {
            loop {
                match self.exchange(method.clone(), operation, body).await {
                    // The agent's queue of connections is full: it is there, only busy (a
                    // blocking connect would wait too). Nothing was sent: try again.
                    Err(ClientError::Connect { source, .. })
                        if source.kind() == io::ErrorKind::WouldBlock =>
                    {
                        tokio::time::sleep(CONNECT_RETRY).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                operation: operation.to_string(),
                after: limit,
            }),
        }
    }

    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let unexpected = |problem: String| ClientError::Protocol {
            operation: operation.to_string(),
            problem,
        };
        let body = match body {
            Some(body) => serde_json::to_vec(body)
                .map_err(|e| unexpected(format!("cannot encode the request: {e}")))?,
            None => Vec::new(),
        };
        let uri: hyper::Uri =
            hyperlocal::Uri::new(&self.socket, &format!("{API_PREFIX}/{operation}")).into();
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "application/json");
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unexpected(format!("cannot make the request: {e}")))?;
        let answer = self
            .http
            .request(request)
            .await
            .map_err(|e| self.request_error(operation, e))?;
        let status = answer.status().as_u16();
        let bytes = Limited::new(answer.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    unexpected(format!("answer over {MAX_RESPONSE} bytes"))
                } else {
                    ClientError::Io {
                        operation: operation.to_string(),
                        source: io_error_in(&*e)
                            .unwrap_or_else(|| io::Error::other(chain_text(&*e))),
                    }
                }
            })?
            .to_bytes();
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| unexpected(format!("undecodable answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(ClientError::Api { status, error }),
            Err(_) => Err(unexpected(format!(
                "HTTP {status} with body {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))),
        }
    }

    /// A failed request: not connected at all (the agent is not there), or broken midway.
    fn request_error(
        &self,
        operation: &str,
        error: hyper_util::client::legacy::Error,
    ) -> ClientError {
        if error.is_connect() {
            return ClientError::Connect {
                socket: self.socket.clone(),
                source: io_error_in(&error).unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotConnected, "no connection")
                }),
            };
        }
        let source = io_error_in(&error).unwrap_or_else(|| io::Error::other(chain_text(&error)));
        ClientError::Io {
            operation: operation.to_string(),
            source,
        }
    }
}

/// `error` and its causes, for a message (hyper's own say little: "error reading a body").
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The OS error at the bottom of `error`'s chain, as an owned copy (its kind and message).
fn io_error_in(error: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io_error) = current.downcast_ref::<io::Error>() {
            return Some(match io_error.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(io_error.kind(), io_error.to_string()),
            });
        }
        cause = current.source();
    }
    None
}

/// The blocking client for the agent listening at one socket path: each call runs
/// [`AsyncPluginClient`] on a current-thread runtime made for it (on a helper thread when
/// the caller is itself inside a tokio runtime, where blocking on another one is not
/// allowed).
#[derive(Clone, Debug)]
pub struct PluginClient {
    inner: AsyncPluginClient,
}

impl PluginClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            inner: AsyncPluginClient::new(socket),
        }
    }

    /// Sets the deadline of operations other than attach (which waits as long as it asks to
    /// wait, plus a margin).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.with_timeout(timeout);
        self
    }

    pub fn socket(&self) -> &Path {
        self.inner.socket()
    }

    /// The async client this one drives.
    pub fn as_async(&self) -> &AsyncPluginClient {
        &self.inner
    }

    pub fn attach(&self, request: &AttachRequest) -> Result<Endpoint, ClientError> {
        self.block_on("attach", self.inner.attach(request))
    }

    /// [`Self::attach`] into the namespace `netns` refers to, passed as a descriptor of this
    /// process (`netnsFd`) rather than a path; `request.netns` is ignored. The agent pins
    /// the namespace for as long as the endpoint exists.
    pub fn attach_with_netns_fd(
        &self,
        request: &AttachRequest,
        netns: BorrowedFd<'_>,
    ) -> Result<Endpoint, ClientError> {
        self.attach(&with_netns_fd(request, netns))
    }

    pub fn detach(&self, request: &EndpointRef) -> Result<DetachResponse, ClientError> {
        self.block_on("detach", self.inner.detach(request))
    }

    /// A detach with its options (`keepIdentity`).
    pub fn detach_with(&self, request: &DetachRequest) -> Result<DetachResponse, ClientError> {
        self.block_on("detach", self.inner.detach_with(request))
    }

    /// Where the runtime moved an endpoint's interface (`POST /v1/sandbox`).
    pub fn sandbox(&self, request: &SandboxRequest) -> Result<Endpoint, ClientError> {
        self.block_on("sandbox", self.inner.sandbox(request))
    }

    pub fn check(&self, request: &EndpointRef) -> Result<Endpoint, ClientError> {
        self.block_on("check", self.inner.check(request))
    }

    pub fn status(&self) -> Result<Status, ClientError> {
        self.block_on("status", self.inner.status())
    }

    pub fn gc(&self, request: &GcRequest) -> Result<GcResponse, ClientError> {
        self.block_on("gc", self.inner.gc(request))
    }

    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ClientError> {
        self.block_on("endpoints", self.inner.endpoints())
    }

    /// Runs `call` to completion on a runtime of its own. Every call is bounded by its
    /// deadline, so this never blocks for longer.
    fn block_on<T: Send>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, ClientError>> + Send,
    ) -> Result<T, ClientError> {
        let run = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|source| ClientError::Io {
                    operation: operation.to_string(),
                    source,
                })?;
            runtime.block_on(call)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|scope| {
            scope.spawn(run).join().unwrap_or_else(|_| {
                Err(ClientError::Io {
                    operation: operation.to_string(),
                    source: io::Error::other("the client's thread panicked"),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::plugin_api::ErrorCode;

    /// A socket path of its own in a fresh folder (removed by the caller's `Folder`).
    struct Folder(PathBuf);

    impl Folder {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "zt-plugin-client-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn socket(&self) -> PathBuf {
            self.0.join("agent.sock")
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Serves one connection: reads the request head, then writes `answer` (if any) and
    /// closes, or holds the connection open for `hold`.
    fn serve_once(socket: &Path, answer: Option<&'static [u8]>, hold: Duration) {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            match answer {
                Some(answer) => {
                    let _ = stream.write_all(answer);
                }
                None => std::thread::sleep(hold),
            }
        });
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let client = PluginClient::new("/nonexistent/zt-agent-test.sock");
        let error = client.status().unwrap_err();
        assert!(error.is_agent_unreachable(), "{error}");
        assert!(error
            .to_string()
            .contains("/nonexistent/zt-agent-test.sock"));
        assert!(error.to_string().contains("No such file"), "{error}");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_unreachable() {
        let folder = Folder::new();
        drop(UnixListener::bind(folder.socket()).unwrap());
        let error = PluginClient::new(folder.socket()).status().unwrap_err();
        assert!(error.is_agent_unreachable(), "{error}");
    }

    #[test]
    fn chunked_api_errors_are_decoded() {
        let folder = Folder::new();
        serve_once(
            &folder.socket(),
            Some(
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                  f\r\n{\"code\":\"NotFou\r\n1c\r\nnd\",\"message\":\"no such one\"}\r\n0\r\n\r\n",
            ),
            Duration::ZERO,
        );
        let error = PluginClient::new(folder.socket()).status().unwrap_err();
        match error {
            ClientError::Api { status, error } => {
                assert_eq!(status, 404);
                assert_eq!(error.code, ErrorCode::NotFound);
                assert_eq!(error.message, "no such one");
            }
            other => panic!("not an API error: {other}"),
        }
    }

    #[test]
    fn garbage_answers_are_errors_not_panics() {
        for answer in [
            &b"SMTP 220 hello\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
            b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nbody",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let folder = Folder::new();
            serve_once(&folder.socket(), Some(answer), Duration::ZERO);
            let error = PluginClient::new(folder.socket()).status().unwrap_err();
            assert!(!error.is_agent_unreachable(), "{error}");
            assert!(
                matches!(error, ClientError::Io { .. } | ClientError::Protocol { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn a_silent_agent_times_out_on_time() {
        let folder = Folder::new();
        serve_once(&folder.socket(), None, Duration::from_secs(5));
        let client = PluginClient::new(folder.socket()).with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let error = client.status().unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn the_blocking_client_works_inside_a_runtime() {
        let folder = Folder::new();
        serve_once(
            &folder.socket(),
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"),
            Duration::ZERO,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let list = runtime.block_on(async { PluginClient::new(folder.socket()).endpoints() });
        assert_eq!(list.unwrap(), Vec::new());
    }

    #[test]
    fn netns_fd_requests_carry_the_number_and_no_path() {
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        let request = AttachRequest::new(
            node_core::vl2::NetworkId(0x8056_c2e2_1c00_0001),
            "k".parse().unwrap(),
            "c".parse().unwrap(),
            Some("/var/run/netns/x".into()),
            "eth0".parse().unwrap(),
        );
        use std::os::fd::AsFd;
        let sent = with_netns_fd(&request, file.as_fd());
        assert_eq!(sent.netns, None);
        assert_eq!(sent.netns_fd, Some(file.as_raw_fd()));
        let json = serde_json::to_value(&sent).unwrap();
        assert_eq!(json["netnsFd"], file.as_raw_fd());
        assert!(json.get("netns").is_none());
    }
}
