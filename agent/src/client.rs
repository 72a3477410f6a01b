//! A small blocking HTTP/1.1 client for the local API: one request per connection
//! (`Connection: close`), enough for the CLI and for tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::api::AUTH_HEADER;

/// Connecting gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reading gives up after this; longer than the API's ECHO wait.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Responses larger than this are refused (ZeroTier One's CLI allows 16 MiB too).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("request to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("malformed HTTP response from {addr}: {reason}")]
    Malformed {
        addr: SocketAddr,
        reason: &'static str,
    },
}

/// A response: the status code and the body as text.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: String,
}

/// Talks to one agent's local API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    addr: SocketAddr,
    token: String,
}

impl ApiClient {
    /// An empty `token` sends no auth header at all.
    pub fn new(addr: SocketAddr, token: String) -> Self {
        Self { addr, token }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<ApiResponse, ClientError> {
        let addr = self.addr;
        let io_error = |source| ClientError::Io { addr, source };
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(io_error)?;
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .map_err(io_error)?;

        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        if !self.token.is_empty() {
            head.push_str(&format!("{AUTH_HEADER}: {}\r\n", self.token));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io_error)?;
        stream.write_all(body).map_err(io_error)?;

        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(io_error)?;
        parse_response(&raw).map_err(|reason| ClientError::Malformed { addr, reason })
    }
}

/// Parses a whole `Connection: close` response, plain or chunked.
fn parse_response(raw: &[u8]) -> Result<ApiResponse, &'static str> {
    let header_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..header_end]).map_err(|_| "headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut status_fields = status_line.split(' ');
    if !status_fields
        .next()
        .is_some_and(|v| v.starts_with("HTTP/1."))
    {
        return Err("not HTTP/1.x");
    }
    let status: u16 = status_fields
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("no status code")?;

    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| "bad content-length")?);
        }
    }
    let rest = &raw[header_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = content_length {
        rest.get(..length)
            .ok_or("body shorter than content-length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(ApiResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let response = parse_response(plain).expect("parses");
        assert_eq!((response.status, response.body.as_str()), (200, "{}"));
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n";
        let response = parse_response(chunked).expect("parses");
        assert_eq!((response.status, response.body.as_str()), (401, "abcd"));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
    }
}
