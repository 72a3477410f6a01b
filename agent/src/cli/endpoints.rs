//! `endpoints`, `attach`, `detach`, `check`: clients of the plugin API (the agent's Unix
//! socket, [`crate::plugin_api`]) that print a line per endpoint in zerotier-cli's manner
//! (`200 endpoints <key> ...`), or the JSON with `-j`.
//!
//! Which socket: `--socket PATH` if given; else `<home>/agent.sock` when that file exists
//! (where tests and the demo put it with `run --socket <home>/agent.sock`); else the
//! default of `run`, `/run/zt-agent/agent.sock`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use node_core::vl2::NetworkId;
use serde::Serialize;

use crate::cli::query::Failure;
use crate::plugin_api::{
    AttachRequest, ContainerId, Endpoint, EndpointKey, EndpointRef, InterfaceName, DEFAULT_SOCKET,
    MAX_ATTACH_WAIT, MAX_MTU, MIN_MTU,
};
use crate::plugin_client::{ClientError, PluginClient};

/// The socket's file name inside a home, looked for when `--socket` is not given.
pub const HOME_SOCKET: &str = "agent.sock";
/// Where `ip netns add NAME` puts a namespace: a bare `--netns NAME` means this folder.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// The plugin API's socket, for the commands that use it.
#[derive(Clone, Debug, Default, Args)]
pub struct SocketArg {
    /// The agent's plugin API socket [default: <home>/agent.sock if it exists, else
    /// /run/zt-agent/agent.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The path to connect to: `--socket`, else `<home>/agent.sock` if it exists, else
    /// [`DEFAULT_SOCKET`].
    pub fn path(&self, home: &Path) -> PathBuf {
        if let Some(socket) = &self.socket {
            return socket.clone();
        }
        let in_home = home.join(HOME_SOCKET);
        if in_home.exists() {
            in_home
        } else {
            PathBuf::from(DEFAULT_SOCKET)
        }
    }
}

/// `attach`'s options: the fields of an [`AttachRequest`].
#[derive(Clone, Debug, Args)]
pub struct AttachArgs {
    /// The network's 16 hex digit ID.
    #[arg(long, value_name = "NWID")]
    pub network: NetworkId,
    /// The endpoint's stable name; the same key keeps the same ZeroTier address and IPs.
    #[arg(long)]
    pub key: EndpointKey,
    /// The container's network namespace: a path (/proc/PID/ns/net), or a name made by
    /// `ip netns add` (looked up in /var/run/netns). Without it the interface stays in the
    /// agent's namespace, unaddressed (for a runtime that moves it itself).
    #[arg(long, value_name = "PATH|NAME")]
    pub netns: Option<String>,
    /// The interface's name inside the container.
    #[arg(long, value_name = "NAME", default_value = "eth0")]
    pub if_name: InterfaceName,
    /// The runtime's container ID [default: made from the key].
    #[arg(long, value_name = "ID")]
    pub container_id: Option<ContainerId>,
    /// Who makes the endpoint (`cni`, `docker`, ...); a gc for an owner removes only its own.
    #[arg(long)]
    pub owner: Option<String>,
    /// The interface's MTU [default: the network's].
    #[arg(
        long,
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_MTU)..=i64::from(MAX_MTU))
    )]
    pub mtu: Option<u32>,
    /// Also route 0.0.0.0/0 (and ::/0) through the network.
    #[arg(long)]
    pub default_route: bool,
    /// Seconds to wait for the endpoint to be ready (configured, authorized, addressed)
    /// [default: the agent's, 30].
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(..=MAX_ATTACH_WAIT.as_secs())
    )]
    pub wait: Option<u64>,
    /// Print the endpoint's JSON (or, on failure, the API error's JSON).
    #[arg(short = 'j')]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

impl AttachArgs {
    /// The request these options describe, checked as the agent would check it.
    pub fn request(&self) -> Result<AttachRequest, Failure> {
        let netns = self
            .netns
            .as_deref()
            .map(netns_path)
            .transpose()
            .map_err(usage)?;
        let container_id = self
            .container_id
            .clone()
            .unwrap_or_else(|| container_id_for(&self.key));
        let mut request = AttachRequest::new(
            self.network,
            self.key.clone(),
            container_id,
            netns,
            self.if_name.clone(),
        );
        request.owner.clone_from(&self.owner);
        request.mtu = self.mtu;
        request.default_route = self.default_route;
        request.wait = self.wait;
        request.validate().map_err(|e| usage(e.message))?;
        Ok(request)
    }
}

/// `detach`'s and `check`'s options: an [`EndpointRef`].
#[derive(Clone, Debug, Args)]
pub struct EndpointRefArgs {
    /// The endpoint's key.
    #[arg(long)]
    pub key: Option<EndpointKey>,
    /// The container's ID (with --if-name).
    #[arg(long, value_name = "ID", requires = "if_name")]
    pub container_id: Option<ContainerId>,
    /// The interface's name in the container.
    #[arg(long, value_name = "NAME")]
    pub if_name: Option<InterfaceName>,
    /// Only the endpoint on this network.
    #[arg(long, value_name = "NWID")]
    pub network: Option<NetworkId>,
    /// Print the JSON answer.
    #[arg(short = 'j')]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

impl EndpointRefArgs {
    /// The reference these options describe: a key, or a container and interface, or both.
    pub fn reference(&self) -> Result<EndpointRef, Failure> {
        let reference = EndpointRef {
            key: self.key.clone(),
            container_id: self.container_id.clone(),
            if_name: self.if_name.clone(),
            network: self.network,
        };
        reference
            .validate()
            .map_err(|_| usage("name the endpoint with --key, or --container-id and --if-name"))?;
        Ok(reference)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 2,
    }
}

/// `--netns`: an absolute path as is; a bare name is a namespace of `ip netns add`; any
/// other relative path is taken from the current folder (the agent needs an absolute one).
pub fn netns_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("--netns is empty".into());
    }
    let path = Path::new(text);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if !text.contains('/') && text != "." && text != ".." {
        return Ok(Path::new(NETNS_RUN_DIR).join(text));
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|e| format!("cannot make --netns {text} absolute: {e}"))
}

/// A container ID for an endpoint named only by its key: the key with the characters a
/// container ID may not hold (`/`, `:`, `@`) turned into `-`, starting with a letter or
/// digit. The same key always gives the same ID, so a repeated attach is the same
/// attachment.
pub fn container_id_for(key: &EndpointKey) -> ContainerId {
    let mut id: String = key
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        id.insert(0, 'c');
    }
    // A key is at most 255 characters, so the prefixed text may be one too long.
    id.truncate(crate::plugin_api::MAX_KEY_LEN);
    id.parse()
        .unwrap_or_else(|_| "cli".parse().expect("a valid container ID"))
}

/// `endpoints [-j]`.
pub fn endpoints(client: &PluginClient, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let endpoints = client
        .endpoints()
        .map_err(|e| failure("endpoints", e, false, out))?;
    if json {
        return write_json(out, &endpoints);
    }
    write_out(out, &endpoints_table(&endpoints))
}

/// The header of the `endpoints` listing.
pub const ENDPOINTS_HEADER: &str = "200 endpoints <key> <container> <dev> <nwid> <ztaddr> <mac> \
                                    <state> <ips> <rx/tx> <switched-out/in>";

/// The `endpoints` listing: the header, then one line per endpoint, by key. Counters are
/// packets: `rx` frames the container sent into the network, `tx` frames delivered to it;
/// `switched` the unicast frames that went to (`out`) or came from (`in`) another endpoint
/// of the same agent without UDP.
pub fn endpoints_table(endpoints: &[Endpoint]) -> String {
    let mut sorted: Vec<&Endpoint> = endpoints.iter().collect();
    sorted.sort_by(|a, b| (&a.key, a.network).cmp(&(&b.key, b.network)));
    let mut text = format!("{ENDPOINTS_HEADER}\n");
    for endpoint in sorted {
        let c = &endpoint.counters;
        text.push_str(&format!(
            "200 endpoints {} {}/{} {}/{}\n",
            endpoint_columns(endpoint),
            c.rx_packets,
            c.tx_packets,
            c.switched_out_packets,
            c.switched_in_packets
        ));
    }
    text
}

/// `<key> <container> <dev> <nwid> <ztaddr> <mac> <state> <ips>`, `-` for nothing.
fn endpoint_columns(endpoint: &Endpoint) -> String {
    let ips: Vec<String> = endpoint.ips.iter().map(ToString::to_string).collect();
    format!(
        "{} {} {} {} {} {} {} {}",
        endpoint.key,
        endpoint.container_id,
        endpoint.if_name.as_str(),
        endpoint.network,
        endpoint.address,
        endpoint.mac,
        state_name(endpoint),
        if ips.is_empty() {
            "-".to_string()
        } else {
            ips.join(",")
        }
    )
}

/// The state as the API names it (`ready`, `accessDenied`, ...).
fn state_name(endpoint: &Endpoint) -> String {
    serde_json::to_value(endpoint.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".to_string())
}

/// `attach ...`: `200 attach <key> <container> <dev> <nwid> <ztaddr> <mac> <state> <ips>`.
pub fn attach(
    client: &PluginClient,
    request: &AttachRequest,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let endpoint = client
        .attach(request)
        .map_err(|e| failure("attach", e, json, out))?;
    if json {
        return write_json(out, &endpoint);
    }
    write_out(
        out,
        &format!("200 attach {}\n", endpoint_columns(&endpoint)),
    )
}

/// `detach ...`: `200 detach OK`, or `200 detach OK (no such endpoint)`; both succeed.
pub fn detach(
    client: &PluginClient,
    reference: &EndpointRef,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let answer = client
        .detach(reference)
        .map_err(|e| failure("detach", e, json, out))?;
    if json {
        return write_json(out, &answer);
    }
    write_out(
        out,
        if answer.detached {
            "200 detach OK\n"
        } else {
            "200 detach OK (no such endpoint)\n"
        },
    )
}

/// `check ...`: `200 check <columns>` when the endpoint is ready, else the error.
pub fn check(
    client: &PluginClient,
    reference: &EndpointRef,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let endpoint = client
        .check(reference)
        .map_err(|e| failure("check", e, json, out))?;
    if json {
        return write_json(out, &endpoint);
    }
    write_out(out, &format!("200 check {}\n", endpoint_columns(&endpoint)))
}

/// The failure to print for a client error: `<status> <command> <message> (<code>)` for the
/// agent's refusals, whose JSON also goes to `out` with `-j` so scripts can read its details
/// (the member to authorize); the client's own message otherwise.
fn failure(command: &str, error: ClientError, json: bool, out: &mut dyn Write) -> Failure {
    match &error {
        ClientError::Api { status, error } => {
            if json {
                // The failure is reported either way; a broken stdout adds nothing to it.
                let _ = write_json(out, error);
            }
            Failure {
                message: format!("{status} {command} {error}"),
                code: 1,
            }
        }
        _ => Failure {
            message: error.to_string(),
            code: 1,
        },
    }
}

fn write_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        message: format!("cannot print the answer: {e}"),
        code: 1,
    })?;
    write_out(out, &format!("{text}\n"))
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes()).map_err(|e| Failure {
        message: e.to_string(),
        code: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_api::{EndpointCounters, EndpointState, IpPrefix};
    use node_core::vl2::Mac;
    use node_core::Address;

    fn endpoint(key: &str, state: EndpointState, ips: &[&str]) -> Endpoint {
        Endpoint {
            key: key.parse().unwrap(),
            owner: None,
            network: "8056c2e21c000001".parse().unwrap(),
            container_id: "c1".parse().unwrap(),
            netns: Some("/var/run/netns/c1".into()),
            if_name: "eth0".parse().unwrap(),
            mac: Mac([0x32, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]),
            address: "a1b2c3d4e5".parse::<Address>().unwrap(),
            ips: ips
                .iter()
                .map(|ip| ip.parse::<IpPrefix>().unwrap())
                .collect(),
            routes: Vec::new(),
            gateway: None,
            mtu: 2800,
            state,
            dns: None,
            counters: EndpointCounters::default(),
        }
    }

    #[test]
    fn table_has_a_header_and_a_line_per_endpoint() {
        let mut ready = endpoint(
            "demo/c1",
            EndpointState::Ready,
            &["10.147.17.5/24", "fd80:56c2:e21c::1/88"],
        );
        ready.counters = EndpointCounters {
            rx_packets: 12,
            tx_packets: 11,
            switched_out_packets: 4,
            switched_in_packets: 3,
            ..EndpointCounters::default()
        };
        let denied = endpoint("k8s/default/web-0", EndpointState::AccessDenied, &[]);
        let table = endpoints_table(&[denied, ready]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], ENDPOINTS_HEADER);
        assert_eq!(
            lines[1],
            "200 endpoints demo/c1 c1 eth0 8056c2e21c000001 a1b2c3d4e5 32:a1:b2:c3:d4:e5 \
             ready 10.147.17.5/24,fd80:56c2:e21c::1/88 12/11 4/3"
        );
        assert_eq!(
            lines[2],
            "200 endpoints k8s/default/web-0 c1 eth0 8056c2e21c000001 a1b2c3d4e5 \
             32:a1:b2:c3:d4:e5 accessDenied - 0/0 0/0"
        );
        // Every line has as many columns as the header names.
        let columns = |line: &str| line.split(' ').count();
        assert!(lines[1..].iter().all(|l| columns(l) == columns(lines[0])));
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(endpoints_table(&[]), format!("{ENDPOINTS_HEADER}\n"));
    }

    #[test]
    fn attach_and_check_lines_use_the_same_columns() {
        let e = endpoint("demo/c2", EndpointState::Pending, &["10.147.17.6/24"]);
        assert_eq!(
            endpoint_columns(&e),
            "demo/c2 c1 eth0 8056c2e21c000001 a1b2c3d4e5 32:a1:b2:c3:d4:e5 pending 10.147.17.6/24"
        );
    }

    #[test]
    fn socket_path_prefers_the_option_then_the_home() {
        let explicit = SocketArg {
            socket: Some("/tmp/x.sock".into()),
        };
        assert_eq!(
            explicit.path(Path::new("/nonexistent")),
            Path::new("/tmp/x.sock")
        );
        let default = SocketArg::default();
        assert_eq!(
            default.path(Path::new("/nonexistent/home")),
            Path::new(DEFAULT_SOCKET)
        );
        let home = std::env::temp_dir().join(format!("zt-cli-sock-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join(HOME_SOCKET), b"").unwrap();
        assert_eq!(default.path(&home), home.join(HOME_SOCKET));
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn netns_names_paths_and_relative_paths() {
        assert_eq!(
            netns_path("demo-c1").unwrap(),
            Path::new("/var/run/netns/demo-c1")
        );
        assert_eq!(
            netns_path("/proc/42/ns/net").unwrap(),
            Path::new("/proc/42/ns/net")
        );
        let relative = netns_path("ns/c1").unwrap();
        assert!(relative.is_absolute() && relative.ends_with("ns/c1"));
        assert!(netns_path("").is_err());
    }

    #[test]
    fn container_ids_from_keys_are_valid_and_stable() {
        for (key, id) in [
            ("demo/c1", "demo-c1"),
            ("k8s/default/web-0", "k8s-default-web-0"),
            ("@x:y", "c-x-y"),
            ("_a", "c_a"),
        ] {
            let key: EndpointKey = key.parse().unwrap();
            assert_eq!(container_id_for(&key).as_str(), id);
        }
        let longest: EndpointKey = format!("-{}", "a".repeat(254)).parse().unwrap();
        assert_eq!(container_id_for(&longest).as_str().len(), 255);
    }

    #[test]
    fn attach_options_make_a_checked_request() {
        let args = AttachArgs {
            network: "8056c2e21c000001".parse().unwrap(),
            key: "demo/c1".parse().unwrap(),
            netns: Some("demo-c1".into()),
            if_name: "eth0".parse().unwrap(),
            container_id: None,
            owner: Some("demo".into()),
            mtu: None,
            default_route: false,
            wait: Some(5),
            json: false,
            socket: SocketArg::default(),
        };
        let request = args.request().unwrap();
        assert_eq!(request.container_id.as_str(), "demo-c1");
        assert_eq!(
            request.netns.as_deref(),
            Some(Path::new("/var/run/netns/demo-c1"))
        );
        assert_eq!(request.wait, Some(5));
        let bad_owner = AttachArgs {
            owner: Some("no spaces".into()),
            ..args
        };
        assert_eq!(bad_owner.request().unwrap_err().code, 2);
    }

    #[test]
    fn a_reference_needs_a_key_or_an_attachment() {
        let none = EndpointRefArgs {
            key: None,
            container_id: None,
            if_name: None,
            network: None,
            json: false,
            socket: SocketArg::default(),
        };
        assert_eq!(none.reference().unwrap_err().code, 2);
        let by_key = EndpointRefArgs {
            key: Some("demo/c1".parse().unwrap()),
            ..none.clone()
        };
        assert!(by_key.reference().is_ok());
        let by_attachment = EndpointRefArgs {
            container_id: Some("c1".parse().unwrap()),
            if_name: Some("eth0".parse().unwrap()),
            ..none
        };
        assert!(by_attachment.reference().is_ok());
    }

    #[test]
    fn api_refusals_print_status_command_and_message() {
        let error = crate::plugin_api::ApiError::not_authorized(
            "8056c2e21c000001".parse().unwrap(),
            "a1b2c3d4e5".parse().unwrap(),
        );
        let mut out = Vec::new();
        let failure = failure(
            "attach",
            ClientError::Api { status: 403, error },
            true,
            &mut out,
        );
        assert_eq!(failure.code, 1);
        assert!(failure
            .message
            .starts_with("403 attach network 8056c2e21c000001 is private"));
        assert!(failure.message.ends_with("(NotAuthorized)"));
        let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed["details"]["memberAddress"], "a1b2c3d4e5");
    }
}
