//! A small blocking client of the plugin API ([`crate::plugin_api`]) for the CLI and the
//! plugins: one HTTP/1.1 request per connection over `std::os::unix::net::UnixStream`, no
//! async runtime, with a deadline on the whole exchange.
//!
//! Errors keep what a plugin must tell apart: the agent could not be reached at all
//! ([`ClientError::Connect`]: a CNI DEL queues and succeeds), the agent answered with an
//! [`ApiError`] ([`ClientError::Api`]: report its code and message), or the exchange failed
//! midway.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// A client for the agent listening at one socket path.
#[derive(Clone, Debug)]
pub struct PluginClient {
    socket: PathBuf,
    timeout: Duration,
}

impl PluginClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
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

    pub fn attach(&self, request: &AttachRequest) -> Result<Endpoint, ClientError> {
        // The server gives the manager the wait plus a grace period; allow for both.
        let deadline = request.wait_duration() + ATTACH_GRACE + self.timeout;
        self.call("POST", "attach", Some(request), deadline)
    }

    pub fn detach(&self, request: &EndpointRef) -> Result<DetachResponse, ClientError> {
        self.call("POST", "detach", Some(request), self.timeout)
    }

    /// A detach with its options (`keepIdentity`).
    pub fn detach_with(&self, request: &DetachRequest) -> Result<DetachResponse, ClientError> {
        self.call("POST", "detach", Some(request), self.timeout)
    }

    /// Where the runtime moved an endpoint's interface (`POST /v1/sandbox`).
    pub fn sandbox(&self, request: &SandboxRequest) -> Result<Endpoint, ClientError> {
        self.call("POST", "sandbox", Some(request), self.timeout)
    }

    pub fn check(&self, request: &EndpointRef) -> Result<Endpoint, ClientError> {
        self.call("POST", "check", Some(request), self.timeout)
    }

    pub fn status(&self) -> Result<Status, ClientError> {
        self.call::<(), _>("GET", "status", None, self.timeout)
    }

    pub fn gc(&self, request: &GcRequest) -> Result<GcResponse, ClientError> {
        self.call("POST", "gc", Some(request), self.timeout)
    }

    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ClientError> {
        self.call::<(), _>("GET", "endpoints", None, self.timeout)
    }

    /// One request, one answer: `method` on `/v1/<operation>`, within `limit`.
    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        operation: &str,
        body: Option<&B>,
        limit: Duration,
    ) -> Result<T, ClientError> {
        let path = format!("{API_PREFIX}/{operation}");
        let body = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
                operation: operation.to_string(),
                problem: format!("cannot encode the request: {e}"),
            })?,
            None => Vec::new(),
        };
        let answer = self.exchange(method, &path, &body, operation, limit)?;
        let unexpected = |problem: String| ClientError::Protocol {
            operation: operation.to_string(),
            problem,
        };
        if (200..300).contains(&answer.status) {
            return serde_json::from_slice(&answer.body)
                .map_err(|e| unexpected(format!("undecodable answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(&answer.body) {
            Ok(error) => Err(ClientError::Api {
                status: answer.status,
                error,
            }),
            Err(_) => Err(unexpected(format!(
                "HTTP {} with body {:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
            ))),
        }
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        operation: &str,
        limit: Duration,
    ) -> Result<HttpAnswer, ClientError> {
        let deadline = Instant::now() + limit;
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let io_error = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                ClientError::Timeout {
                    operation: operation.to_string(),
                    after: limit,
                }
            } else {
                ClientError::Io {
                    operation: operation.to_string(),
                    source,
                }
            }
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: zt-agent\r\nConnection: close\r\n\
             Accept: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        stream
            .set_write_timeout(Some(remaining(deadline)))
            .map_err(io_error)?;
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(io_error)?;

        // The server closes after answering (we asked it to): read until EOF.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(io_error(io::ErrorKind::TimedOut.into()));
            }
            stream.set_read_timeout(Some(left)).map_err(io_error)?;
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&chunk[..n]);
                    if raw.len() > MAX_RESPONSE {
                        return Err(ClientError::Protocol {
                            operation: operation.to_string(),
                            problem: format!("answer over {MAX_RESPONSE} bytes"),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
        parse_response(&raw).map_err(|problem| ClientError::Protocol {
            operation: operation.to_string(),
            problem,
        })
    }
}

/// Time left until `deadline`, at least a millisecond so it can be a socket timeout (zero
/// means "none" there), or zero once it has passed.
fn remaining(deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        left
    } else {
        left.max(Duration::from_millis(1))
    }
}

/// A parsed HTTP answer.
#[derive(Debug, PartialEq, Eq)]
struct HttpAnswer {
    status: u16,
    body: Vec<u8>,
}

/// Parses a whole HTTP/1.1 answer: status line, headers, and a body framed by
/// `Content-Length`, by chunks, or by the end of the connection.
fn parse_response(raw: &[u8]) -> Result<HttpAnswer, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut fields = status_line.splitn(3, ' ');
    let version = fields.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status: u16 = fields
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = content_length {
        rest.get(..length)
            .ok_or_else(|| format!("body cut short: {} of {length} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpAnswer { status, body })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line cut short")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("chunk cut short")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunk end cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_framed_answers() {
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(raw),
            Ok(HttpAnswer {
                status: 200,
                body: b"{}".to_vec()
            })
        );
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}";
        assert!(parse_response(short).is_err());
    }

    #[test]
    fn parses_chunked_and_eof_framed_answers() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"{\"a\":1}");
        assert_eq!(parse_response(raw).unwrap().status, 404);
        let eof = b"HTTP/1.0 500 Oops\r\n\r\nbody";
        assert_eq!(parse_response(eof).unwrap().body, b"body");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for raw in [
            &b""[..],
            b"\r\n\r\n",
            b"SMTP 220\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\nno-colon\r\n\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
        ] {
            assert!(parse_response(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let client = PluginClient::new("/nonexistent/zt-agent-test.sock");
        let error = client.status().unwrap_err();
        assert!(error.is_agent_unreachable(), "{error}");
        assert!(error
            .to_string()
            .contains("/nonexistent/zt-agent-test.sock"));
    }
}
