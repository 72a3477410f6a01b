//! The network config on stdin: the conflist's entry for this plugin, with the runtime's
//! additions (`name`, `cniVersion`, `prevResult`, `runtimeConfig`, GC's attachment list).
//!
//! Plugin keys (all but `network` optional):
//!
//! | key | meaning |
//! |---|---|
//! | `network` | the ZeroTier network ID, 16 hex digits |
//! | `agentSocket` | the agent's plugin API socket, absolute (default [`DEFAULT_SOCKET`]) |
//! | `mtu` | the interface's MTU, 1280..=10000 (default: the network's) |
//! | `defaultRoute` | also route the default route(s) through the network |
//! | `hostAccess` | the node joins the network too, so that it reaches its pods (kubelet probes); default true |
//! | `attachWait` | seconds ADD waits for the endpoint to be authorized and configured (default 30, at most 300) |
//! | `pendingDeleteDir` | where DEL records deletes while the agent is down (default [`DEFAULT_PENDING_DELETE_DIR`]) |
//! | `ipam` | an IPAM plugin (`{"type": "host-local", ...}`) for networks without managed addresses |
//! | `dns` | `{nameservers, domain, search, options}` for the result |
//!
//! Keys this plugin does not know are ignored, as the spec asks (other plugins' and the
//! runtime's keys pass through a chain). A key that is present with the wrong type or an
//! out-of-range value is an error (code 7) that names it: a typo'd value must not silently
//! become a default.

use std::path::PathBuf;

use node_core::vl2::NetworkId;
use serde_json::{Map, Value};
use zt_agent::plugin_api::{
    AttachmentRef, ContainerId, InterfaceName, MAX_ATTACH_WAIT, MAX_MTU, MIN_MTU,
};

pub use zt_agent::plugin_api::DEFAULT_SOCKET;

use crate::error::{code, CniError};
use crate::result::Dns;
use crate::version::CniVersion;

/// Where DEL records a detach it could not deliver, for the agent to replay.
pub const DEFAULT_PENDING_DELETE_DIR: &str = "/var/lib/zt-agent/cni-pending-del";

/// Spec key of GC's list of attachments to keep (spec HEAD, libcni 1.2+).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The same list under the name the spec-v1.1.0 tag gives it (libcni HEAD sends both).
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// The request on stdin, decoded as a JSON object, with its bytes kept for delegation (an
/// IPAM plugin gets exactly what this plugin got).
#[derive(Clone, Debug)]
pub struct Request {
    pub bytes: Vec<u8>,
    pub object: Map<String, Value>,
}

impl Request {
    /// Code 6 when stdin is not a JSON object.
    pub fn decode(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, "the network config is not JSON")
                .with_details(format!("decoding stdin: {e}"))
        })?;
        let Value::Object(object) = value else {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                "the network config is not a JSON object",
            ));
        };
        Ok(Self {
            bytes: bytes.to_vec(),
            object,
        })
    }

    /// The config's `cniVersion`: code 1 when it is missing or not one this plugin speaks.
    pub fn version(&self) -> Result<CniVersion, CniError> {
        match self.object.get("cniVersion") {
            None | Some(Value::Null) => Ok("".parse::<CniVersion>()?),
            Some(Value::String(text)) => Ok(text.parse::<CniVersion>()?),
            Some(other) => Err(CniError::config(format!(
                "`cniVersion` must be a string like \"1.0.0\", not {other}"
            ))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }
}

/// The `cniVersion` to echo in an error: the request's, as long as it is a short string;
/// else the newest version (the request could not be read).
pub fn echo_version(stdin: &[u8]) -> String {
    let given = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
        v.get("cniVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match given {
        Some(text) if !text.is_empty() && text.len() <= 32 => text,
        _ => crate::version::LATEST.as_str().to_string(),
    }
}

/// An IPAM plugin to delegate to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipam {
    /// The plugin's binary name, looked up in `CNI_PATH`.
    pub plugin_type: String,
}

/// Everything ADD, CHECK, STATUS and GC need, validated.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub network: NetworkId,
    pub agent_socket: PathBuf,
    pub mtu: Option<u32>,
    pub default_route: bool,
    pub host_access: bool,
    pub attach_wait: Option<u64>,
    pub pending_delete_dir: PathBuf,
    pub ipam: Option<Ipam>,
    pub dns: Dns,
    pub prev_result: Option<Value>,
}

impl NetConf {
    /// Validates every key this plugin knows; the first problem is the error.
    pub fn parse(request: &Request) -> Result<Self, CniError> {
        Ok(Self {
            cni_version: request.version()?,
            name: name(request)?,
            network: network(request)?,
            agent_socket: agent_socket(request)?,
            mtu: mtu(request)?,
            default_route: bool_key(request, "defaultRoute")?.unwrap_or(false),
            host_access: bool_key(request, "hostAccess")?.unwrap_or(true),
            attach_wait: attach_wait(request)?,
            pending_delete_dir: pending_delete_dir(request)?,
            ipam: ipam(request)?,
            dns: dns(request)?,
            prev_result: prev_result(request)?,
        })
    }
}

/// What DEL needs. DEL must succeed whenever nothing is left to remove, and a config that
/// is invalid now was invalid at ADD (configs do not change between ADD and DEL), so ADD
/// failed and attached nothing: DEL reads what it can and says what it skipped.
#[derive(Clone, Debug)]
pub struct DelConf {
    pub cni_version: CniVersion,
    /// `None` when the config has no valid network ID.
    pub network: Option<NetworkId>,
    /// `None` when `agentSocket` is invalid: no agent was reached through it at ADD.
    pub agent_socket: Option<PathBuf>,
    pub pending_delete_dir: Option<PathBuf>,
    pub ipam: Option<Ipam>,
    /// The problems found, for stderr.
    pub warnings: Vec<String>,
}

impl DelConf {
    /// Only an undecodable config or an unsupported version are errors.
    pub fn parse(request: &Request) -> Result<Self, CniError> {
        let cni_version = request.version()?;
        let mut warnings = Vec::new();
        let network = keep(network(request), &mut warnings);
        let agent_socket = keep(agent_socket(request), &mut warnings);
        let pending_delete_dir = keep(pending_delete_dir(request), &mut warnings);
        let ipam = keep(ipam(request), &mut warnings).flatten();
        Ok(Self {
            cni_version,
            network,
            agent_socket,
            pending_delete_dir,
            ipam,
            warnings,
        })
    }
}

/// The value, or `None` with the problem noted.
fn keep<T>(result: Result<T, CniError>, warnings: &mut Vec<String>) -> Option<T> {
    result.map_err(|e| warnings.push(e.msg)).ok()
}

/// The network name: CNI's rule for names, `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
fn name(request: &Request) -> Result<String, CniError> {
    let name = string_key(request, "name")?
        .ok_or_else(|| CniError::config("missing network name (`name`)"))?;
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && bytes.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if !valid {
        return Err(CniError::config(format!(
            "invalid network name {name:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
        )));
    }
    Ok(name.to_string())
}

fn network(request: &Request) -> Result<NetworkId, CniError> {
    let text = string_key(request, "network")?.ok_or_else(|| {
        CniError::config("missing `network`: the ZeroTier network ID (16 hex digits)")
    })?;
    text.parse().map_err(|_| {
        CniError::config(format!(
            "`network` {text:?} is not a ZeroTier network ID (16 hex digits, e.g. 8056c2e21c000001)"
        ))
    })
}

fn agent_socket(request: &Request) -> Result<PathBuf, CniError> {
    absolute_path_key(request, "agentSocket").map(|p| p.unwrap_or_else(|| DEFAULT_SOCKET.into()))
}

fn pending_delete_dir(request: &Request) -> Result<PathBuf, CniError> {
    absolute_path_key(request, "pendingDeleteDir")
        .map(|p| p.unwrap_or_else(|| DEFAULT_PENDING_DELETE_DIR.into()))
}

fn mtu(request: &Request) -> Result<Option<u32>, CniError> {
    let Some(value) = request.get("mtu") else {
        return Ok(None);
    };
    value
        .as_u64()
        .and_then(|mtu| u32::try_from(mtu).ok())
        .filter(|mtu| (MIN_MTU..=MAX_MTU).contains(mtu))
        .map(Some)
        .ok_or_else(|| {
            CniError::config(format!(
                "`mtu` must be an integer from {MIN_MTU} to {MAX_MTU}, not {value}"
            ))
        })
}

fn attach_wait(request: &Request) -> Result<Option<u64>, CniError> {
    let Some(value) = request.get("attachWait") else {
        return Ok(None);
    };
    let most = MAX_ATTACH_WAIT.as_secs();
    value
        .as_u64()
        .filter(|wait| *wait <= most)
        .map(Some)
        .ok_or_else(|| {
            CniError::config(format!(
                "`attachWait` must be a number of seconds from 0 to {most}, not {value}"
            ))
        })
}

fn ipam(request: &Request) -> Result<Option<Ipam>, CniError> {
    let Some(value) = request.get("ipam") else {
        return Ok(None);
    };
    let Some(object) = value.as_object() else {
        return Err(CniError::config(format!(
            "`ipam` must be an object like {{\"type\": \"host-local\", ...}}, not {value}"
        )));
    };
    // `"ipam": {}` is how some configs say "no IPAM".
    if object.is_empty() {
        return Ok(None);
    }
    let plugin_type = object
        .get("type")
        .and_then(Value::as_str)
        .filter(|name| is_plugin_name(name))
        .ok_or_else(|| {
            CniError::config(
                "`ipam.type` must name an IPAM plugin binary in CNI_PATH (e.g. \"host-local\")",
            )
        })?;
    Ok(Some(Ipam {
        plugin_type: plugin_type.to_string(),
    }))
}

/// A binary name as the spec allows in `type`: a file name, not a path.
fn is_plugin_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn dns(request: &Request) -> Result<Dns, CniError> {
    match request.get("dns") {
        None => Ok(Dns::default()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            CniError::config(format!(
                "`dns` must be {{\"nameservers\": [..], \"domain\": .., \"search\": [..], \"options\": [..]}}: {e}"
            ))
        }),
    }
}

fn prev_result(request: &Request) -> Result<Option<Value>, CniError> {
    match request.get("prevResult") {
        None => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
        Some(other) => Err(CniError::config(format!(
            "`prevResult` must be a result object, not {other}"
        ))),
    }
}

/// GC's attachments to keep, from both spellings of the key. An entry that could not name
/// an attachment of ours (a container ID or interface name the agent would have refused)
/// is skipped: it cannot protect anything.
pub fn gc_valid_attachments(request: &Request) -> Result<Vec<AttachmentRef>, CniError> {
    let mut valid = Vec::new();
    for key in [VALID_ATTACHMENTS_KEY, ATTACHMENTS_KEY] {
        let Some(value) = request.get(key) else {
            continue;
        };
        let Some(list) = value.as_array() else {
            return Err(CniError::config(format!(
                "`{key}` must be a list of {{\"containerID\", \"ifname\"}}"
            )));
        };
        for entry in list {
            let field = |name: &str| entry.get(name).and_then(Value::as_str);
            let container_id = field("containerID").and_then(|t| t.parse::<ContainerId>().ok());
            let if_name = field("ifname").and_then(|t| t.parse::<InterfaceName>().ok());
            if let (Some(container_id), Some(if_name)) = (container_id, if_name) {
                let attachment = AttachmentRef {
                    container_id,
                    if_name,
                };
                if !valid.contains(&attachment) {
                    valid.push(attachment);
                }
            }
        }
    }
    Ok(valid)
}

fn string_key<'a>(request: &'a Request, key: &str) -> Result<Option<&'a str>, CniError> {
    match request.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(CniError::config(format!(
            "`{key}` must be a string, not {other}"
        ))),
    }
}

fn bool_key(request: &Request, key: &str) -> Result<Option<bool>, CniError> {
    match request.get(key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(CniError::config(format!(
            "`{key}` must be true or false, not {other}"
        ))),
    }
}

fn absolute_path_key(request: &Request, key: &str) -> Result<Option<PathBuf>, CniError> {
    let Some(text) = string_key(request, key)? else {
        return Ok(None);
    };
    let path = PathBuf::from(text);
    if !path.is_absolute() || text.contains('\0') {
        return Err(CniError::config(format!(
            "`{key}` must be an absolute path without NUL, not {text:?}"
        )));
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Request {
        Request::decode(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    fn minimal() -> Value {
        json!({"cniVersion": "1.0.0", "name": "zt", "type": "zerotier", "network": "8056c2e21c000001"})
    }

    fn with(key: &str, value: Value) -> Request {
        let mut config = minimal();
        config[key] = value;
        request(config)
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let conf = NetConf::parse(&request(minimal())).unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(conf.name, "zt");
        assert_eq!(conf.network, NetworkId(0x8056_c2e2_1c00_0001));
        assert_eq!(conf.agent_socket, PathBuf::from("/run/zt-agent/agent.sock"));
        assert_eq!(
            conf.pending_delete_dir,
            PathBuf::from("/var/lib/zt-agent/cni-pending-del")
        );
        assert_eq!(conf.mtu, None);
        assert!(!conf.default_route);
        assert!(conf.host_access);
        assert_eq!(conf.attach_wait, None);
        assert_eq!(conf.ipam, None);
        assert_eq!(conf.dns, Dns::default());
        assert!(conf.prev_result.is_none());
    }

    #[test]
    fn every_plugin_key_is_read() {
        let conf = NetConf::parse(&request(json!({
            "cniVersion": "0.4.0", "name": "zt-net.1", "type": "zerotier",
            "network": "8056C2E21C000001", "agentSocket": "/run/zt/a.sock", "mtu": 2800,
            "defaultRoute": true, "hostAccess": false, "attachWait": 120,
            "pendingDeleteDir": "/tmp/spool",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]]},
            "dns": {"nameservers": ["10.147.17.1"], "domain": "zt.local"},
            "prevResult": {"cniVersion": "0.4.0"},
            "runtimeConfig": {"portMappings": []}, "capabilities": {"portMappings": true},
            "somethingElse": [1, 2]
        })))
        .unwrap();
        assert_eq!(conf.cni_version, CniVersion::V0_4_0);
        assert_eq!(conf.network, NetworkId(0x8056_c2e2_1c00_0001));
        assert_eq!(conf.agent_socket, PathBuf::from("/run/zt/a.sock"));
        assert_eq!(conf.mtu, Some(2800));
        assert!(conf.default_route);
        assert!(!conf.host_access);
        assert_eq!(conf.attach_wait, Some(120));
        assert_eq!(conf.pending_delete_dir, PathBuf::from("/tmp/spool"));
        assert_eq!(conf.ipam.unwrap().plugin_type, "host-local");
        assert_eq!(conf.dns.nameservers, vec!["10.147.17.1"]);
        assert_eq!(conf.dns.domain.as_deref(), Some("zt.local"));
        assert!(conf.prev_result.is_some());
    }

    #[test]
    fn bad_values_are_code_7_and_name_the_key() {
        let cases = [
            ("network", json!("8056c2e21c00001"), "`network`"),
            ("network", json!("zz56c2e21c000001"), "`network`"),
            ("network", json!(12), "`network`"),
            ("name", json!("-bad"), "network name"),
            ("name", json!(""), "network name"),
            ("agentSocket", json!("run/agent.sock"), "`agentSocket`"),
            ("mtu", json!(1279), "`mtu`"),
            ("mtu", json!(10001), "`mtu`"),
            ("mtu", json!("1500"), "`mtu`"),
            ("mtu", json!(-1), "`mtu`"),
            ("defaultRoute", json!("yes"), "`defaultRoute`"),
            ("attachWait", json!(301), "`attachWait`"),
            ("pendingDeleteDir", json!("spool"), "`pendingDeleteDir`"),
            ("ipam", json!("host-local"), "`ipam`"),
            ("ipam", json!({"type": "../host-local"}), "`ipam.type`"),
            ("ipam", json!({"ranges": []}), "`ipam.type`"),
            ("dns", json!({"nameservers": "10.0.0.1"}), "`dns`"),
            ("prevResult", json!("x"), "`prevResult`"),
        ];
        for (key, value, named) in cases {
            let error = NetConf::parse(&with(key, value.clone())).unwrap_err();
            assert_eq!(error.code, 7, "{key}={value}: {error}");
            assert!(error.msg.contains(named), "{key}={value}: {}", error.msg);
        }
        let mut no_network = minimal();
        no_network.as_object_mut().unwrap().remove("network");
        let error = NetConf::parse(&request(no_network)).unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.starts_with("missing `network`"), "{}", error.msg);
        let mut no_name = minimal();
        no_name.as_object_mut().unwrap().remove("name");
        assert_eq!(NetConf::parse(&request(no_name)).unwrap_err().code, 7);
        assert_eq!(
            NetConf::parse(&with("ipam", json!({}))).unwrap().ipam,
            None,
            "an empty ipam object means none"
        );
        assert_eq!(
            NetConf::parse(&with("mtu", Value::Null)).unwrap().mtu,
            None,
            "null is absent"
        );
    }

    #[test]
    fn undecodable_and_version_errors_have_their_codes() {
        for bad in [&b""[..], b"{", b"[1]", b"\"x\"", b"{\"a\":1}garbage"] {
            assert_eq!(Request::decode(bad).unwrap_err().code, 6, "{bad:?}");
        }
        let version = |v: Value| {
            let mut config = minimal();
            config["cniVersion"] = v;
            NetConf::parse(&request(config)).unwrap_err()
        };
        assert_eq!(version(json!("0.2.0")).code, 1);
        assert_eq!(version(json!("2.0.0")).code, 1);
        assert_eq!(version(Value::Null).code, 1);
        assert_eq!(version(json!(1)).code, 7);
    }

    #[test]
    fn del_reads_what_it_can() {
        let conf = DelConf::parse(&request(json!({
            "cniVersion": "1.0.0", "name": "zt", "network": "nope", "mtu": "x",
            "agentSocket": "/run/a.sock", "ipam": {"type": "host-local"}
        })))
        .unwrap();
        assert_eq!(conf.network, None);
        assert_eq!(conf.agent_socket, Some(PathBuf::from("/run/a.sock")));
        assert_eq!(conf.ipam.unwrap().plugin_type, "host-local");
        assert_eq!(conf.warnings.len(), 1, "{:?}", conf.warnings);
        let relative = DelConf::parse(&with("agentSocket", json!("a.sock"))).unwrap();
        assert_eq!(relative.agent_socket, None);
        assert_eq!(relative.network, Some(NetworkId(0x8056_c2e2_1c00_0001)));
        let mut old = minimal();
        old["cniVersion"] = json!("0.1.0");
        assert_eq!(DelConf::parse(&request(old)).unwrap_err().code, 1);
    }

    #[test]
    fn gc_reads_both_attachment_keys() {
        let request = request(json!({
            "cniVersion": "1.1.0", "name": "zt", "network": "8056c2e21c000001",
            "cni.dev/valid-attachments": [
                {"containerID": "c1", "ifname": "eth0"},
                {"containerID": "c2", "ifname": "eth0"},
                {"containerID": "-bad", "ifname": "eth0"},
                {"ifname": "eth0"}
            ],
            "cni.dev/attachments": [
                {"containerID": "c1", "ifname": "eth0"},
                {"containerID": "c3", "ifname": "net1"}
            ]
        }));
        let valid = gc_valid_attachments(&request).unwrap();
        let names: Vec<String> = valid
            .iter()
            .map(|a| format!("{}/{}", a.container_id, a.if_name))
            .collect();
        assert_eq!(names, ["c1/eth0", "c2/eth0", "c3/net1"]);
        let bad = with(VALID_ATTACHMENTS_KEY, json!({"containerID": "c1"}));
        assert_eq!(gc_valid_attachments(&bad).unwrap_err().code, 7);
    }

    #[test]
    fn errors_echo_a_readable_version() {
        assert_eq!(echo_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(echo_version(br#"{"cniVersion":"9.9.9"}"#), "9.9.9");
        assert_eq!(echo_version(b"garbage"), "1.1.0");
        assert_eq!(echo_version(br#"{"cniVersion":""}"#), "1.1.0");
        assert_eq!(echo_version(br#"{"cniVersion":7}"#), "1.1.0");
    }
}
