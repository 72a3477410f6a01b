//! Authorizing the agent's own members on a private network's controller.
//!
//! Each container endpoint is a member of its own (it has its own identity), so on a private
//! network somebody must authorize it before the controller sends it a config. When the agent
//! is given controller credentials it does that itself, over the controller's HTTP API, in one
//! of two dialects:
//!
//! - [`ControllerApi::ZeroTierOne`]: the controller API of a ZeroTier One node; ours
//!   ([`crate::controller`], served by [`crate::api`]) speaks it too.
//!   `POST <url>/controller/network/<nwid>/member/<address>` with
//!   `{"authorized": true, "name": ...}`, the node's `authtoken.secret` in `X-ZT1-Auth`.
//!   `url` is the node's local API, e.g. `http://10.0.0.1:9993`.
//! - [`ControllerApi::Central`]: ZeroTier Central's API v1, or one compatible with it.
//!   `POST <url>/network/<nwid>/member/<address>` (`updateNetworkMember`) with
//!   `{"name": ..., "config": {"authorized": true}}` and `Authorization: token <token>` (the
//!   API's `tokenAuth` scheme). `url` includes the version prefix, as the API's own server URL
//!   does: `https://api.zerotier.com/api/v1`.
//!
//! Only `http://` URLs for now: the agent has no TLS stack. Central itself is https-only, so
//! reach it through a local TLS-terminating forwarder (`http://127.0.0.1:<port>/api/v1`).
//!
//! The token is a secret: [`ControllerCredentials`]' `Debug` hides it, no error carries it (a
//! server's message that echoes it is scrubbed), and URLs are refused, and shown without, user
//! info and queries, where a token could hide.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use node_core::vl2::NetworkId;
use node_core::Address;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::api::AUTH_HEADER;

/// How long [`authorize_member`] waits for the whole exchange: connect, request, answer.
pub const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A controller's answer is a member record; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How much of a server's error message goes into an [`AuthorizeError`].
const MAX_MESSAGE_CHARS: usize = 200;

/// The keys a credentials file may have.
const CREDENTIALS_KEYS: [&str; 4] = ["api", "url", "token", "tokenFile"];

/// Which controller API the credentials are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerApi {
    /// A ZeroTier One node's local controller API (ours is compatible); token in `X-ZT1-Auth`.
    ZeroTierOne,
    /// ZeroTier Central's API v1 or a compatible one; `Authorization: token <token>`.
    Central,
}

impl ControllerApi {
    /// The name used in credentials files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ZeroTierOne => "zerotier",
            Self::Central => "central",
        }
    }

    /// The member's path below the base URL.
    fn member_path(self, network: NetworkId, member: Address) -> String {
        match self {
            Self::ZeroTierOne => format!("/controller/network/{network}/member/{member}"),
            Self::Central => format!("/network/{network}/member/{member}"),
        }
    }

    /// The POST body that authorizes a member (and names it, if `name` is given).
    fn authorize_body(self, name: Option<&str>) -> Value {
        match (self, name) {
            (Self::ZeroTierOne, Some(name)) => json!({ "authorized": true, "name": name }),
            (Self::ZeroTierOne, None) => json!({ "authorized": true }),
            (Self::Central, Some(name)) => {
                json!({ "name": name, "config": { "authorized": true } })
            }
            (Self::Central, None) => json!({ "config": { "authorized": true } }),
        }
    }

    /// The header that carries `token`, marked sensitive so hyper never shows it.
    fn auth_header(self, token: &str) -> Result<(HeaderName, HeaderValue), CredentialsError> {
        let (name, text) = match self {
            Self::ZeroTierOne => (HeaderName::from_static(AUTH_HEADER), token.to_owned()),
            Self::Central => (AUTHORIZATION, format!("token {token}")),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| CredentialsError::BadToken {
            reason: "it must be printable ASCII without spaces",
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    /// Where the answer to a member POST says whether the member is authorized.
    fn authorized_flag(self, answer: &Value) -> Option<&Value> {
        match self {
            Self::ZeroTierOne => answer.get("authorized"),
            Self::Central => answer.get("config")?.get("authorized"),
        }
    }
}

impl fmt::Display for ControllerApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A controller API name that is neither `zerotier` nor `central`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown controller API {0:?} (expected \"zerotier\" or \"central\")")]
pub struct UnknownControllerApi(pub String);

impl FromStr for ControllerApi {
    type Err = UnknownControllerApi;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::ZeroTierOne, Self::Central]
            .into_iter()
            .find(|api| text.eq_ignore_ascii_case(api.name()))
            .ok_or_else(|| UnknownControllerApi(text.to_owned()))
    }
}

/// What is wrong with controller credentials, or with the file they were read from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error(
        "controller URL {url}: https is not supported yet (the agent has no TLS); \
         use http://, e.g. through a local TLS-terminating forwarder"
    )]
    HttpsUnsupported { url: String },
    /// `url` is shown without user info or query.
    #[error("controller URL {url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("controller token: {reason}")]
    BadToken { reason: &'static str },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("controller credentials {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// A controller's API base URL, its token, and which API it is.
///
/// `Debug` hides the token. The fields are public for convenience; [`authorize_member`]
/// checks them again, so credentials built by hand fail there rather than misbehave.
#[derive(Clone, PartialEq, Eq)]
pub struct ControllerCredentials {
    pub api: ControllerApi,
    /// The base URL: `http://host[:port][/prefix]`; the member path is appended to it.
    pub url: String,
    pub token: String,
}

impl fmt::Debug for ControllerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerCredentials")
            .field("api", &self.api)
            .field("url", &redacted_url(&self.url))
            .field("token", &"<hidden>")
            .finish()
    }
}

impl ControllerCredentials {
    /// Checked credentials. Surrounding whitespace is dropped from `url` and `token`, and a
    /// trailing `/` from `url`.
    pub fn new(
        api: ControllerApi,
        url: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<Self, CredentialsError> {
        let url = url.into();
        let token = token.into();
        let credentials = Self {
            api,
            url: url.trim().trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        };
        credentials.check()?;
        Ok(credentials)
    }

    /// Reads credentials from a JSON file:
    ///
    /// ```json
    /// {"api": "central", "url": "http://127.0.0.1:8080/api/v1", "token": "..."}
    /// {"api": "zerotier", "url": "http://10.0.0.1:9993", "tokenFile": "authtoken.secret"}
    /// ```
    ///
    /// `api` is `"zerotier"` (the default) or `"central"`. The token is given either inline
    /// (`token`) or as the path of a file holding it (`tokenFile`, relative to the credentials
    /// file's folder), such as a ZeroTier One node's `authtoken.secret`.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let invalid = |reason: &str| CredentialsError::Parse {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Syntax errors name a line and column, never the text, so the token stays out.
        let value: Value = serde_json::from_slice(&text).map_err(|e| invalid(&e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(invalid("not a JSON object"));
        };
        if let Some(key) = fields
            .keys()
            .find(|key| !CREDENTIALS_KEYS.contains(&key.as_str()))
        {
            return Err(invalid(&format!(
                "unknown key {key:?} (expected \"api\", \"url\", \"token\" or \"tokenFile\")"
            )));
        }
        // Not echoing a wrong value: it could be the token put in the wrong place.
        let api = match fields.get("api") {
            None => ControllerApi::ZeroTierOne,
            Some(Value::String(name)) => name
                .parse()
                .map_err(|_| invalid("\"api\" must be \"zerotier\" or \"central\""))?,
            Some(_) => return Err(invalid("\"api\" must be \"zerotier\" or \"central\"")),
        };
        let url = match fields.get("url") {
            Some(Value::String(url)) => url.clone(),
            Some(_) => return Err(invalid("\"url\" must be a string")),
            None => return Err(invalid("\"url\" is missing")),
        };
        let token = match (fields.get("token"), fields.get("tokenFile")) {
            (Some(Value::String(token)), None) => token.clone(),
            (None, Some(Value::String(file))) => {
                let file = path.parent().unwrap_or(Path::new("")).join(file);
                std::fs::read_to_string(&file)
                    .map_err(|source| CredentialsError::Read { path: file, source })?
            }
            (Some(_), Some(_)) => return Err(invalid("give \"token\" or \"tokenFile\", not both")),
            (None, None) => return Err(invalid("\"token\" or \"tokenFile\" is missing")),
            _ => return Err(invalid("\"token\" and \"tokenFile\" must be strings")),
        };
        Self::new(api, url, token)
    }

    /// Checks the URL and the token, as [`Self::new`] does.
    pub fn check(&self) -> Result<(), CredentialsError> {
        self.target().map(drop)
    }

    /// The member's URL on this controller, for messages that tell someone what to authorize.
    pub fn member_url(&self, network: NetworkId, member: Address) -> String {
        format!(
            "{}{}",
            redacted_url(&self.url),
            self.api.member_path(network, member)
        )
    }

    /// The parsed URL and the header that carries the token.
    fn target(&self) -> Result<(ControllerUrl, (HeaderName, HeaderValue)), CredentialsError> {
        if self.token.is_empty() {
            return Err(CredentialsError::BadToken {
                reason: "it is empty",
            });
        }
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialsError::BadToken {
                reason: "it must be printable ASCII without spaces",
            });
        }
        let url = ControllerUrl::parse(&self.url)?;
        Ok((url, self.api.auth_header(&self.token)?))
    }
}

/// A checked `http://` base URL.
#[derive(Debug)]
struct ControllerUrl {
    /// Host name or IP address, IPv6 without its brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// The path prefix without a trailing `/`: empty, or e.g. `/api/v1`.
    base_path: String,
}

impl ControllerUrl {
    fn parse(url: &str) -> Result<Self, CredentialsError> {
        let bad = |reason| CredentialsError::BadUrl {
            url: redacted_url(url),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                return Err(CredentialsError::HttpsUnsupported {
                    url: redacted_url(url),
                })
            }
            Some(_) => return Err(bad("the scheme must be http://")),
            None => return Err(bad("it must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("it names no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user info is not allowed in it; give the token as the token",
            ));
        }
        if uri.query().is_some() {
            return Err(bad(
                "a query is not allowed in it; give the token as the token",
            ));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        if port == 0 {
            return Err(bad("port 0 cannot be connected to"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` as connected to, for messages.
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `url` without what may be secret: user info becomes `***@`, a query `?***`.
fn redacted_url(url: &str) -> String {
    let (before_query, had_query) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], true),
        None => (url, false),
    };
    let (scheme, rest) = match before_query.find("://") {
        Some(at) => before_query.split_at(at + 3),
        None => ("", before_query),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let query = if had_query { "?***" } else { "" };
    format!("{scheme}{authority}{path}{query}")
}

/// Why authorizing a member failed. `url` is the controller's base URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot connect to the controller at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("the controller at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("HTTP exchange with the controller at {url} failed: {source}")]
    Http { url: String, source: hyper::Error },
    /// 401 or 403.
    #[error("the controller at {url} refused the token (HTTP {status}): {message}")]
    TokenRefused {
        url: String,
        status: u16,
        message: String,
    },
    /// 404: the network is not on that controller (or the URL is not a controller API).
    #[error("network {network} was not found on the controller at {url} (HTTP 404): {message}")]
    NetworkNotFound {
        url: String,
        network: NetworkId,
        message: String,
    },
    #[error("the controller at {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the controller at {url} gave an unexpected answer: {reason}")]
    BadResponse { url: String, reason: String },
}

/// Authorizes `member` on `network` (and names it `name`, if given) through the controller
/// API `credentials` are for, waiting at most [`AUTHORIZE_TIMEOUT`].
pub async fn authorize_member(
    credentials: &ControllerCredentials,
    network: NetworkId,
    member: Address,
    name: Option<&str>,
) -> Result<(), AuthorizeError> {
    authorize_member_within(credentials, network, member, name, AUTHORIZE_TIMEOUT).await
}

/// [`authorize_member`], waiting at most `timeout` for the whole exchange.
pub async fn authorize_member_within(
    credentials: &ControllerCredentials,
    network: NetworkId,
    member: Address,
    name: Option<&str>,
    timeout: Duration,
) -> Result<(), AuthorizeError> {
    let (target, (auth_name, auth_value)) = credentials.target()?;
    let url = redacted_url(&credentials.url);
    let body = credentials.api.authorize_body(name).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{}{}",
            target.base_path,
            credentials.api.member_path(network, member)
        ))
        .header(HOST, &target.authority)
        .header(USER_AGENT, concat!("zt-agent/", env!("CARGO_PKG_VERSION")))
        .header(CONTENT_TYPE, "application/json")
        .header(auth_name, auth_value)
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| CredentialsError::BadUrl {
            url: url.clone(),
            reason: "no request can be made to it",
        })?;
    tracing::debug!(%network, %member, controller = %url, "authorizing member");
    let (status, answer) =
        match tokio::time::timeout(timeout, exchange(&target, &url, request)).await {
            Ok(exchanged) => exchanged?,
            Err(_) => return Err(AuthorizeError::Timeout { url, timeout }),
        };
    if status.is_success() {
        return check_authorized(credentials.api, &answer)
            .map_err(|reason| AuthorizeError::BadResponse { url, reason });
    }
    let message = server_message(status, &answer, &credentials.token);
    Err(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AuthorizeError::TokenRefused {
            url,
            status: status.as_u16(),
            message,
        },
        StatusCode::NOT_FOUND => AuthorizeError::NetworkNotFound {
            url,
            network,
            message,
        },
        _ => AuthorizeError::Status {
            url,
            status: status.as_u16(),
            message,
        },
    })
}

/// Connects, sends `request` on a fresh HTTP/1.1 connection and reads the answer.
async fn exchange(
    target: &ControllerUrl,
    url: &str,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), AuthorizeError> {
    let http_failed = |source| AuthorizeError::Http {
        url: url.to_owned(),
        source,
    };
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| AuthorizeError::Connect {
            address: target.address(),
            source,
        })?;
    // One small request: don't let Nagle hold its body back.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_failed)?;
    let answer = async move {
        let response = sender.send_request(request).await.map_err(http_failed)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => http_failed(*e),
                Err(_) => AuthorizeError::BadResponse {
                    url: url.to_owned(),
                    reason: format!("the answer is over {MAX_ANSWER_BYTES} bytes"),
                },
            })?;
        Ok((status, body.to_bytes()))
    };
    // The connection must be driven for the answer to arrive; it is dropped (and the socket
    // closed) as soon as the answer is in.
    tokio::pin!(answer);
    tokio::select! {
        biased;
        answered = &mut answer => answered,
        ended = connection => match ended {
            Ok(()) => answer.await,
            Err(e) => Err(http_failed(e)),
        },
    }
}

/// Checks a success answer: a member record (or nothing) that does not say "unauthorized".
fn check_authorized(api: ControllerApi, answer: &[u8]) -> Result<(), String> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let record: Value =
        serde_json::from_slice(answer).map_err(|_| "the answer is not JSON".to_owned())?;
    match api.authorized_flag(&record) {
        Some(Value::Bool(false)) => {
            Err("it accepted the request but the member is still not authorized".to_owned())
        }
        _ => Ok(()),
    }
}

/// The server's own words for a failure: `error` or `message` of a JSON answer, else its
/// text; cut short, on one line, and without `token` should the server echo it.
fn server_message(status: StatusCode, answer: &[u8], token: &str) -> String {
    let from_json = serde_json::from_slice::<Value>(answer).ok().and_then(|v| {
        ["error", "message"]
            .into_iter()
            .find_map(|key| v.get(key)?.as_str().map(str::to_owned))
    });
    let mut message = from_json.unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned());
    if !token.is_empty() {
        message = message.replace(token, "***");
    }
    let one_line: String = message
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.is_empty() {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    match one_line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use hyper::body::Incoming;
    use hyper::header::HeaderMap;
    use hyper::service::service_fn;
    use hyper::Response;
    use node_core::time::Timestamp;
    use tokio::net::TcpListener;

    use super::*;
    use crate::controller::ControllerService;
    use crate::home::tests::TempDir;

    const TOKEN: &str = "s3cr3t-t0ken-abcdefghijklmnop";
    const NETWORK: NetworkId = NetworkId(0x8e4d_f28b_7200_0001);
    const MEMBER: Address = Address::from_u64(0x01_2345_6789);

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("JSON body")
        }
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// An HTTP server on loopback that records each request and answers it with `answer`.
    async fn serve<F>(answer: F) -> (SocketAddr, Log)
    where
        F: Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let log = Log::default();
        let answer = Arc::new(answer);
        let server_log = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answer) = (server_log.clone(), answer.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (log, answer) = (log.clone(), answer.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.expect("body").to_bytes();
                        let seen = Seen {
                            method: parts.method,
                            path: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let (status, text) = answer(&seen);
                        log.lock().expect("log").push(seen);
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (address, log)
    }

    async fn serve_canned(status: u16, body: &'static str) -> (SocketAddr, Log) {
        serve(move |_| (status, body.to_owned())).await
    }

    fn credentials(api: ControllerApi, url: String) -> ControllerCredentials {
        ControllerCredentials::new(api, url, TOKEN).expect("credentials")
    }

    async fn authorize(
        credentials: &ControllerCredentials,
        name: Option<&str>,
    ) -> Result<(), AuthorizeError> {
        authorize_member(credentials, NETWORK, MEMBER, name).await
    }

    #[tokio::test]
    async fn zerotier_one_api_posts_to_the_member_with_x_zt1_auth() {
        let (address, log) = serve_canned(200, r#"{"id":"0123456789","authorized":true}"#).await;
        let creds = credentials(ControllerApi::ZeroTierOne, format!("http://{address}"));
        authorize(&creds, Some("web-1")).await.expect("authorized");
        authorize(&creds, None).await.expect("authorized");

        let log = log.lock().expect("log");
        let [named, unnamed] = log.as_slice() else {
            panic!("expected two requests, saw {log:?}");
        };
        assert_eq!(named.method, Method::POST);
        assert_eq!(
            named.path,
            "/controller/network/8e4df28b72000001/member/0123456789"
        );
        assert_eq!(named.header("x-zt1-auth"), Some(TOKEN));
        assert_eq!(named.header("authorization"), None);
        assert_eq!(named.header("content-type"), Some("application/json"));
        assert_eq!(named.header("host"), Some(address.to_string().as_str()));
        assert_eq!(named.json(), json!({"authorized": true, "name": "web-1"}));
        assert_eq!(unnamed.json(), json!({"authorized": true}));
    }

    #[tokio::test]
    async fn central_api_posts_config_authorized_with_a_token_header() {
        let (address, log) = serve_canned(200, r#"{"config":{"authorized":true}}"#).await;
        // The base URL keeps its prefix; a trailing slash is dropped.
        let creds = credentials(ControllerApi::Central, format!("http://{address}/api/v1/"));
        assert_eq!(creds.url, format!("http://{address}/api/v1"));
        authorize(&creds, Some("web-1")).await.expect("authorized");
        authorize(&creds, None).await.expect("authorized");

        let log = log.lock().expect("log");
        let [named, unnamed] = log.as_slice() else {
            panic!("expected two requests, saw {log:?}");
        };
        assert_eq!(named.method, Method::POST);
        assert_eq!(
            named.path,
            "/api/v1/network/8e4df28b72000001/member/0123456789"
        );
        assert_eq!(
            named.header("authorization"),
            Some(format!("token {TOKEN}").as_str())
        );
        assert_eq!(named.header("x-zt1-auth"), None);
        assert_eq!(named.header("content-type"), Some("application/json"));
        assert_eq!(
            named.json(),
            json!({"name": "web-1", "config": {"authorized": true}})
        );
        assert_eq!(unnamed.json(), json!({"config": {"authorized": true}}));
    }

    #[tokio::test]
    async fn refusals_and_failures_say_what_went_wrong() {
        for api in [ControllerApi::ZeroTierOne, ControllerApi::Central] {
            for status in [401, 403] {
                let (address, _) = serve_canned(status, "{}").await;
                let creds = credentials(api, format!("http://{address}"));
                let e = authorize(&creds, None).await.expect_err("refused");
                assert!(
                    matches!(e, AuthorizeError::TokenRefused { status: s, .. } if s == status),
                    "{e:?}"
                );
                assert!(e.to_string().contains("refused the token"), "{e}");
            }

            let (address, _) =
                serve_canned(404, r#"{"error":"no network 8e4df28b72000001"}"#).await;
            let creds = credentials(api, format!("http://{address}"));
            let e = authorize(&creds, None).await.expect_err("not found");
            let AuthorizeError::NetworkNotFound {
                network, message, ..
            } = &e
            else {
                panic!("{e:?}");
            };
            assert_eq!(*network, NETWORK);
            assert_eq!(message, "no network 8e4df28b72000001");
            assert!(e
                .to_string()
                .contains("network 8e4df28b72000001 was not found"));

            let (address, _) = serve_canned(500, "database\non fire\n").await;
            let creds = credentials(api, format!("http://{address}"));
            let e = authorize(&creds, None).await.expect_err("server error");
            assert!(
                matches!(&e, AuthorizeError::Status { status: 500, message, .. }
                    if message == "database on fire"),
                "{e:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        drop(listener);
        let creds = credentials(ControllerApi::ZeroTierOne, format!("http://{address}"));
        let e = authorize(&creds, None).await.expect_err("refused");
        assert!(
            matches!(&e, AuthorizeError::Connect { address: a, source }
                if *a == address.to_string() && source.kind() == io::ErrorKind::ConnectionRefused),
            "{e:?}"
        );
        assert!(e.to_string().contains(&address.to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_silent_controller_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        // Accepts and holds connections without ever answering.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let creds = credentials(ControllerApi::Central, format!("http://{address}"));
        let timeout = Duration::from_millis(300);
        let e = authorize_member_within(&creds, NETWORK, MEMBER, None, timeout)
            .await
            .expect_err("timed out");
        assert!(
            matches!(&e, AuthorizeError::Timeout { timeout: t, .. } if *t == timeout),
            "{e:?}"
        );
        holder.abort();
    }

    #[tokio::test]
    async fn answers_that_are_not_member_records_are_bad() {
        let (address, _) = serve_canned(200, "<html>hello</html>").await;
        let creds = credentials(ControllerApi::ZeroTierOne, format!("http://{address}"));
        let e = authorize(&creds, None).await.expect_err("not JSON");
        assert!(matches!(e, AuthorizeError::BadResponse { .. }), "{e:?}");

        let (address, _) = serve_canned(200, r#"{"authorized":false}"#).await;
        let creds = credentials(ControllerApi::ZeroTierOne, format!("http://{address}"));
        let e = authorize(&creds, None)
            .await
            .expect_err("still unauthorized");
        assert!(matches!(e, AuthorizeError::BadResponse { .. }), "{e:?}");

        let (address, _) = serve_canned(200, r#"{"config":{"authorized":false}}"#).await;
        let creds = credentials(ControllerApi::Central, format!("http://{address}"));
        let e = authorize(&creds, None)
            .await
            .expect_err("still unauthorized");
        assert!(matches!(e, AuthorizeError::BadResponse { .. }), "{e:?}");

        let (address, _) = serve_canned(200, "").await;
        let creds = credentials(ControllerApi::Central, format!("http://{address}"));
        authorize(&creds, None)
            .await
            .expect("an empty success is a success");
    }

    #[tokio::test]
    async fn the_token_stays_out_of_debug_and_errors() {
        let creds = credentials(ControllerApi::Central, "http://127.0.0.1:1".into());
        let debug = format!("{creds:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(
            debug.contains("<hidden>") && debug.contains("Central"),
            "{debug}"
        );

        // A server that echoes the token back in its refusal.
        let (address, _) = serve(|seen| {
            let echoed = seen.header("authorization").unwrap_or_default().to_owned();
            (
                401,
                json!({ "message": format!("bad {echoed}") }).to_string(),
            )
        })
        .await;
        let creds = credentials(ControllerApi::Central, format!("http://{address}"));
        let e = authorize(&creds, None).await.expect_err("refused");
        assert!(!e.to_string().contains(TOKEN), "{e}");
        assert!(!format!("{e:?}").contains(TOKEN), "{e:?}");
        assert!(e.to_string().contains("bad token ***"), "{e}");
    }

    #[test]
    fn urls_are_checked() {
        let new = |url: &str| ControllerCredentials::new(ControllerApi::ZeroTierOne, url, TOKEN);
        for good in [
            "http://127.0.0.1:9993",
            "http://127.0.0.1:9993/",
            " http://controller.example:8080/api/v1 ",
            "http://[::1]:9993",
            "HTTP://localhost",
        ] {
            new(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let url = ControllerUrl::parse("http://[::1]:9993/api/v1/").expect("URL");
        assert_eq!((url.host.as_str(), url.port), ("::1", 9993));
        assert_eq!(url.address(), "[::1]:9993");
        assert_eq!(url.authority, "[::1]:9993");
        assert_eq!(url.base_path, "/api/v1");
        let url = ControllerUrl::parse("http://localhost").expect("URL");
        assert_eq!((url.port, url.base_path.as_str()), (80, ""));

        assert!(matches!(
            new("https://api.zerotier.com/api/v1"),
            Err(CredentialsError::HttpsUnsupported { .. })
        ));
        let e = new("https://api.zerotier.com/api/v1").expect_err("https");
        assert!(e.to_string().contains("https is not supported yet"), "{e}");
        for bad in [
            "",
            "localhost:9993",
            "/controller",
            "ftp://127.0.0.1",
            "http://",
            "http://127.0.0.1:0",
            "http://user:hunter2@127.0.0.1:9993",
            "http://127.0.0.1:9993/?auth=hunter2",
            "http://exa mple",
        ] {
            match new(bad) {
                Err(e @ CredentialsError::BadUrl { .. }) => {
                    assert!(!e.to_string().contains("hunter2"), "{e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for bad_token in ["", "  ", "two words", "new\nline", "caf\u{e9}"] {
            assert!(
                matches!(
                    ControllerCredentials::new(ControllerApi::Central, "http://h", bad_token),
                    Err(CredentialsError::BadToken { .. })
                ),
                "{bad_token:?}"
            );
        }
        // Credentials built by hand are checked when used.
        let by_hand = ControllerCredentials {
            api: ControllerApi::Central,
            url: "https://api.zerotier.com/api/v1".into(),
            token: TOKEN.into(),
        };
        assert!(by_hand.check().is_err());
    }

    #[test]
    fn redacts_user_info_and_queries() {
        assert_eq!(
            redacted_url("http://u:p@host:1/a?auth=x#f"),
            "http://***@host:1/a?***"
        );
        assert_eq!(redacted_url("http://host/a/b"), "http://host/a/b");
        assert_eq!(redacted_url("u:p@host"), "***@host");
    }

    #[test]
    fn api_names_parse() {
        assert_eq!("zerotier".parse(), Ok(ControllerApi::ZeroTierOne));
        assert_eq!("Central".parse(), Ok(ControllerApi::Central));
        assert!("zt".parse::<ControllerApi>().is_err());
        assert_eq!(ControllerApi::Central.to_string(), "central");
    }

    #[test]
    fn member_url_names_what_to_authorize() {
        let creds = credentials(
            ControllerApi::Central,
            "http://127.0.0.1:8080/api/v1".into(),
        );
        assert_eq!(
            creds.member_url(NETWORK, MEMBER),
            "http://127.0.0.1:8080/api/v1/network/8e4df28b72000001/member/0123456789"
        );
    }

    #[test]
    fn loads_credentials_files() {
        let dir = TempDir::new("authorize-credentials");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };

        let inline = write(
            "inline.json",
            &json!({"api": "central", "url": "http://127.0.0.1:8080/api/v1", "token": TOKEN})
                .to_string(),
        );
        let loaded = ControllerCredentials::load(&inline).expect("load");
        assert_eq!(
            loaded,
            credentials(
                ControllerApi::Central,
                "http://127.0.0.1:8080/api/v1".into()
            )
        );

        // A token file beside it, newline and all (ZeroTier One's authtoken.secret).
        write("authtoken.secret", &format!("{TOKEN}\n"));
        let from_file = write(
            "from-file.json",
            r#"{"url": "http://10.0.0.1:9993", "tokenFile": "authtoken.secret"}"#,
        );
        let loaded = ControllerCredentials::load(&from_file).expect("load");
        assert_eq!(
            loaded,
            credentials(ControllerApi::ZeroTierOne, "http://10.0.0.1:9993".into())
        );

        for (text, expected) in [
            ("{", "line 1"),
            ("[]", "not a JSON object"),
            (
                r#"{"url": "http://h", "token": "t", "tokn": 1}"#,
                "unknown key \"tokn\"",
            ),
            (
                r#"{"url": "http://h"}"#,
                "\"token\" or \"tokenFile\" is missing",
            ),
            (
                r#"{"url": "http://h", "token": "t", "tokenFile": "f"}"#,
                "not both",
            ),
            (r#"{"token": "t"}"#, "\"url\" is missing"),
            (
                r#"{"api": "s3cr3t-t0ken-abcdefghijklmnop", "url": "http://h", "token": "t"}"#,
                "\"api\" must be",
            ),
        ] {
            let path = write("bad.json", text);
            let e = ControllerCredentials::load(&path).expect_err(text);
            assert!(matches!(e, CredentialsError::Parse { .. }), "{text}: {e:?}");
            assert!(e.to_string().contains(expected), "{text}: {e}");
            assert!(!e.to_string().contains(TOKEN), "{text}: {e}");
        }
        let missing = write(
            "missing-file.json",
            r#"{"url": "http://h", "tokenFile": "nope"}"#,
        );
        assert!(matches!(
            ControllerCredentials::load(&missing),
            Err(CredentialsError::Read { .. })
        ));
        assert!(matches!(
            ControllerCredentials::load(&dir.path().join("absent.json")),
            Err(CredentialsError::Read { .. })
        ));
    }

    const CONTROLLER: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";

    /// The ZeroTier One flavour against our own controller, authenticated as the local API does.
    #[tokio::test]
    async fn our_controller_accepts_the_zerotier_one_flavour() {
        const NOW: Timestamp = Timestamp(1_700_000_000_000);
        let home = TempDir::new("authorize-controller");
        let service = ControllerService::open(home.path(), CONTROLLER.parse().expect("id"), 7)
            .expect("controller");
        let service = Arc::new(Mutex::new(service));
        let created = service.lock().expect("controller").handle_http(
            NOW,
            "POST",
            "/controller/network",
            br#"{"name":"private one"}"#,
        );
        let network: NetworkId = created.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("network ID");
        assert_eq!(created.body["private"], json!(true));

        let answering = service.clone();
        let (address, _) = serve(move |seen| {
            if !crate::api::is_authorized(&seen.headers, "", TOKEN) {
                return (401, "{}".into());
            }
            let answer = answering.lock().expect("controller").handle_http(
                NOW,
                seen.method.as_str(),
                &seen.path,
                &seen.body,
            );
            (answer.status, answer.body.to_string())
        })
        .await;
        let url = format!("http://{address}");
        let creds = credentials(ControllerApi::ZeroTierOne, url.clone());
        authorize_member(&creds, network, MEMBER, Some("web-1"))
            .await
            .expect("authorized");
        let member = service.lock().expect("controller").handle_http(
            NOW,
            "GET",
            &format!("/controller/network/{network}/member/{MEMBER}"),
            b"",
        );
        assert_eq!(member.body["authorized"], json!(true));
        assert_eq!(member.body["name"], json!("web-1"));

        let wrong = ControllerCredentials::new(ControllerApi::ZeroTierOne, url, "wrong-token")
            .expect("credentials");
        assert!(matches!(
            authorize_member(&wrong, network, MEMBER, None).await,
            Err(AuthorizeError::TokenRefused { status: 401, .. })
        ));
        assert!(matches!(
            authorize_member(&creds, NetworkId(network.0 ^ 1), MEMBER, None).await,
            Err(AuthorizeError::NetworkNotFound { .. })
        ));
    }
}
