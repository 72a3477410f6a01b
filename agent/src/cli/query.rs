//! `info`, `listpeers`, `peers`, `echo`: clients of the local API that print what
//! zerotier-cli prints (`200 info <address> <version> ONLINE`, ...), or the JSON with `-j`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::client::{ApiClient, ApiResponse};
use crate::home::{Home, AUTHTOKEN_SECRET};

/// The UDP and API port when neither `--port` nor `<home>/zerotier-one.port` says otherwise.
pub const DEFAULT_PORT: u16 = 9993;

/// A CLI failure: what to print on stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }
}

/// The API client for the global options: the port from `--port`, else the home's
/// `zerotier-one.port`, else 9993; the token from `--token`, else `authtoken.secret`.
pub fn client_for(
    home: &Path,
    port: Option<u16>,
    token: Option<String>,
) -> Result<ApiClient, Failure> {
    let home_dir = Home::new(home);
    let port = port
        .or_else(|| home_dir.read_port())
        .unwrap_or(DEFAULT_PORT);
    let token = match token {
        Some(token) => token,
        None => home_dir.read_authtoken().ok_or_else(|| {
            Failure::new(
                2,
                format!(
                    "{AUTHTOKEN_SECRET} not found or readable in {} (try again as root, or \
                     pass --home or --token)",
                    home.display()
                ),
            )
        })?,
    };
    Ok(ApiClient::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        token,
    ))
}

/// GETs or POSTs and returns a 200's JSON; anything else becomes a [`Failure`] that says
/// what went wrong (unreachable agent, wrong token, error status).
fn call(
    client: &ApiClient,
    command: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Value, Failure> {
    let response = client.request(method, path, body).map_err(|e| {
        Failure::new(
            1,
            format!(
                "Error connecting to the zt-agent service: {e}\n\nPlease check that the agent \
                 is running and that TCP port {} can be contacted via 127.0.0.1.",
                client.addr().port()
            ),
        )
    })?;
    let ApiResponse { status, body } = response;
    if status == 401 {
        return Err(Failure::new(
            1,
            format!("401 {command} {body}\nthe agent refused the auth token (check --token or authtoken.secret)"),
        ));
    }
    if status != 200 {
        return Err(Failure::new(
            1,
            format!("{status} {command} {}", body.trim()),
        ));
    }
    serde_json::from_str(&body)
        .map_err(|e| Failure::new(1, format!("{status} {command} invalid JSON response ({e})")))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::new(1, e.to_string()))
}

/// `info [-j]`.
pub fn info(client: &ApiClient, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let status = call(client, "info", "GET", "/status", b"")?;
    if json {
        return write_out(out, &format!("{}\n", pretty(&status)));
    }
    let state = if status["tcpFallbackActive"].as_bool() == Some(true) {
        "TUNNELED"
    } else if status["online"].as_bool() == Some(true) {
        "ONLINE"
    } else {
        "OFFLINE"
    };
    write_out(
        out,
        &format!(
            "200 info {} {} {state}\n",
            status["address"].as_str().unwrap_or("-"),
            status["version"].as_str().unwrap_or("-")
        ),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since `at`, or -1 for never (0).
fn age(at: &Value, now: i64) -> i64 {
    match at.as_i64() {
        Some(t) if t > 0 => now - t,
        _ => -1,
    }
}

fn peer_version(peer: &Value) -> String {
    match peer["versionMajor"].as_i64() {
        Some(major) if major >= 0 => format!(
            "{major}.{}.{}",
            peer["versionMinor"].as_i64().unwrap_or(0),
            peer["versionRev"].as_i64().unwrap_or(0)
        ),
        _ => "-".to_string(),
    }
}

fn preferred_path(peer: &Value) -> Option<&Value> {
    peer["paths"]
        .as_array()?
        .iter()
        .find(|p| p["preferred"].as_bool() == Some(true))
}

/// `listpeers [-j]`.
pub fn listpeers(client: &ApiClient, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let peers = call(client, "listpeers", "GET", "/peer", b"")?;
    if json {
        return write_out(out, &format!("{}\n", pretty(&peers)));
    }
    let now = now_ms();
    let mut text = String::from("200 listpeers <ztaddr> <path> <latency> <version> <role>\n");
    for peer in peers.as_array().into_iter().flatten() {
        let path = preferred_path(peer).map_or_else(
            || "-".to_string(),
            |p| {
                format!(
                    "{};{};{}",
                    p["address"].as_str().unwrap_or("-"),
                    age(&p["lastSend"], now),
                    age(&p["lastReceive"], now)
                )
            },
        );
        text.push_str(&format!(
            "200 listpeers {} {path} {} {} {}\n",
            peer["address"].as_str().unwrap_or("-"),
            peer["latency"].as_i64().unwrap_or(0),
            peer_version(peer),
            peer["role"].as_str().unwrap_or("-")
        ));
    }
    write_out(out, &text)
}

/// `peers [-j]`: the table zerotier-cli prints.
pub fn peers(client: &ApiClient, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let peers = call(client, "peers", "GET", "/peer", b"")?;
    if json {
        return write_out(out, &format!("{}\n", pretty(&peers)));
    }
    let now = now_ms();
    let mut text = String::from(
        "200 peers\n<ztaddr>   <ver>  <role> <lat> <link>   <lastTX> <lastRX> <path>\n",
    );
    for peer in peers.as_array().into_iter().flatten() {
        let link = preferred_path(peer).map_or_else(
            || "RELAY".to_string(),
            |p| {
                format!(
                    "DIRECT   {:<8} {:<8} {}",
                    age(&p["lastSend"], now),
                    age(&p["lastReceive"], now),
                    p["address"].as_str().unwrap_or("-")
                )
            },
        );
        text.push_str(&format!(
            "{} {:<6} {:<6} {:>5} {link}\n",
            peer["address"].as_str().unwrap_or("-"),
            peer_version(peer),
            peer["role"].as_str().unwrap_or("-"),
            peer["latency"].as_i64().unwrap_or(0)
        ));
    }
    write_out(out, &text)
}

/// `echo <address> [-c COUNT] [-i MS] [-p PAYLOAD]`: one line per ECHO,
/// `200 echo <address> <rtt ms> <hops> <path>` or `504 echo <address> <error>`.
/// Succeeds if at least one reply came back, as ping does.
pub fn echo(
    client: &ApiClient,
    address: &str,
    count: u32,
    interval: Duration,
    payload: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut replies = 0;
    for attempt in 0..count {
        if attempt > 0 {
            std::thread::sleep(interval);
        }
        let response = client
            .request("POST", &format!("/echo/{address}"), payload.as_bytes())
            .map_err(|e| {
                Failure::new(1, format!("Error connecting to the zt-agent service: {e}"))
            })?;
        match response.status {
            200 => {
                replies += 1;
                let reply: Value = serde_json::from_str(&response.body).map_err(|e| {
                    Failure::new(1, format!("200 echo invalid JSON response ({e})"))
                })?;
                let line = if json {
                    format!("{reply}\n")
                } else {
                    format!(
                        "200 echo {} {:.3} {} {}\n",
                        reply["address"].as_str().unwrap_or(address),
                        reply["rtt"].as_f64().unwrap_or(-1.0),
                        reply["hops"].as_u64().unwrap_or(0),
                        reply["path"].as_str().unwrap_or("-")
                    )
                };
                write_out(out, &line)?;
            }
            504 => {
                let error: Value = serde_json::from_str(&response.body).unwrap_or_default();
                let line = if json {
                    format!("{error}\n")
                } else {
                    format!(
                        "504 echo {address} {}\n",
                        error["error"].as_str().unwrap_or("timeout")
                    )
                };
                write_out(out, &line)?;
            }
            401 => return Err(Failure::new(
                1,
                "401 echo: the agent refused the auth token (check --token or authtoken.secret)",
            )),
            status => {
                return Err(Failure::new(
                    1,
                    format!("{status} echo {}", response.body.trim()),
                ))
            }
        }
    }
    if replies == 0 {
        return Err(Failure::new(1, format!("no ECHO reply from {address}")));
    }
    Ok(())
}

fn network_id_arg(text: &str) -> Result<String, Failure> {
    let t = text.trim().to_ascii_lowercase();
    if t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(Failure::new(
            2,
            format!("invalid network ID: {text} (16 hex digits)"),
        ))
    }
}

/// `join <nwid>`, as zerotier-cli: `200 join OK`.
pub fn join(
    client: &ApiClient,
    nwid: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let nwid = network_id_arg(nwid)?;
    let network = call(client, "join", "POST", &format!("/network/{nwid}"), b"{}")?;
    if json {
        return write_out(out, &format!("{}\n", pretty(&network)));
    }
    write_out(out, "200 join OK\n")
}

/// `leave <nwid>`: `200 leave OK`.
pub fn leave(client: &ApiClient, nwid: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let nwid = network_id_arg(nwid)?;
    call(client, "leave", "DELETE", &format!("/network/{nwid}"), b"")?;
    write_out(out, "200 leave OK\n")
}

/// `listnetworks [-j]`, zerotier-cli's columns.
pub fn listnetworks(client: &ApiClient, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let networks = call(client, "listnetworks", "GET", "/network", b"")?;
    if json {
        return write_out(out, &format!("{}\n", pretty(&networks)));
    }
    let mut text = String::from(
        "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>\n",
    );
    for n in networks.as_array().into_iter().flatten() {
        let ips: Vec<&str> = n["assignedAddresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let name = n["name"].as_str().filter(|s| !s.is_empty()).unwrap_or("-");
        text.push_str(&format!(
            "200 listnetworks {} {name} {} {} {} {} {}\n",
            n["nwid"].as_str().unwrap_or("-"),
            n["mac"].as_str().unwrap_or("-"),
            n["status"].as_str().unwrap_or("-"),
            n["type"].as_str().unwrap_or("-"),
            n["portDeviceName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("-"),
            if ips.is_empty() {
                "-".to_string()
            } else {
                ips.join(",")
            }
        ));
    }
    write_out(out, &text)
}

/// `api <METHOD> <path> [<body>]`: any local API call with the home's token (the controller
/// API included), printing the JSON answer. Non-200 answers fail with their status.
pub fn api(
    client: &ApiClient,
    method: &str,
    path: &str,
    body: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let method = method.to_ascii_uppercase();
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let value = call(client, "api", &method, &path, body.unwrap_or("").as_bytes())?;
    write_out(out, &format!("{}\n", pretty(&value)))
}
