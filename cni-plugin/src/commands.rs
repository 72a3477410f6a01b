//! The verbs. Each checks the environment first (code 4), then the config (6, 1, 7), then
//! talks to the agent, as the Go skeleton orders its checks.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Map, Value};
use zt_agent::plugin_api::{
    AttachRequest, AttachmentRef, Endpoint, EndpointRef, ErrorCode, IpPrefix, Route,
};
use zt_agent::plugin_client::{ClientError, PluginClient};

use crate::config::{self, DelConf, NetConf, Request, DEFAULT_PENDING_DELETE_DIR};
use crate::delegate;
use crate::env::{endpoint_key, Command, Environment};
use crate::error::{code, CniError};
use crate::result::{CniResult, Dns, Interface, IpConfig, RouteEntry};
use crate::spool;
use crate::version::SUPPORTED;

/// The agent's `owner` of every endpoint this plugin makes; GC only touches these.
pub const OWNER: &str = "cni";

/// Runs the verb of `CNI_COMMAND`; `Some` is a result to print.
pub fn dispatch(
    env: &Environment,
    stdin: &[u8],
    log: &mut dyn Write,
) -> Result<Option<Value>, CniError> {
    match env.command()? {
        Command::Version => Ok(Some(version_info(stdin))),
        Command::Add => add(env, stdin).map(Some),
        Command::Del => del(env, stdin, log).map(|()| None),
        Command::Check => check(env, stdin).map(|()| None),
        Command::Status => status(env, stdin).map(|()| None),
        Command::Gc => gc(env, stdin, log).map(|()| None),
    }
}

/// VERSION: the versions this plugin speaks. It never fails: a runtime probing with a
/// version we do not know still learns which ones we do.
pub fn version_info(stdin: &[u8]) -> Value {
    let supported: Vec<&str> = SUPPORTED.iter().map(|v| v.as_str()).collect();
    json!({
        "cniVersion": config::echo_version(stdin),
        "supportedVersions": supported,
    })
}

/// ADD: attach through the agent (which creates the interface in the namespace, waits for
/// the network and applies its addresses), delegate to IPAM when the network has no managed
/// addresses, and answer the result. A failure after the attach undoes it.
fn add(env: &Environment, stdin: &[u8]) -> Result<Value, CniError> {
    let container_id = env.container_id()?;
    let netns = env.netns()?;
    let if_name = env.if_name()?;
    let args = env.cni_args()?;
    let request = Request::decode(stdin)?;
    let conf = NetConf::parse(&request)?;
    conf.cni_version.allows(Command::Add)?;
    let key = endpoint_key(&args, &container_id, &if_name)?;
    let prev = previous_result(&conf)?;

    let client = PluginClient::new(&conf.agent_socket);
    let mut attach = AttachRequest::new(
        conf.network,
        key,
        container_id,
        Some(netns.clone()),
        if_name,
    );
    attach.owner = Some(OWNER.to_string());
    attach.mtu = conf.mtu;
    attach.default_route = conf.default_route;
    attach.host_access = conf.host_access;
    attach.wait = conf.attach_wait;
    let endpoint = client
        .attach(&attach)
        .map_err(|e| agent_error(e, Command::Add))?;

    let (endpoint, allocation) = match (&conf.ipam, endpoint.ips.is_empty()) {
        (Some(ipam), true) => {
            let undo = |error: CniError, release: bool| {
                undo_add(&client, &attach, release.then_some((env, &request, ipam)));
                error
            };
            let plugin =
                delegate::find_plugin(ipam, &env.cni_path()).map_err(|e| undo(e, false))?;
            let allocation = delegate::add(&plugin, &request.bytes).map_err(|e| undo(e, false))?;
            let endpoint = hand_over_ipam_addresses(&client, &attach, &allocation)
                .map_err(|e| undo(e, true))?;
            (endpoint, Some(allocation))
        }
        _ => (endpoint, None),
    };
    let result = add_result(prev, &endpoint, &netns, allocation, &conf.dns);
    Ok(result.to_value(conf.cni_version))
}

/// The network assigns no addresses: the IPAM plugin's go to the agent with the same
/// attachment again, which applies them and announces them on the network (ARP and NDP
/// groups), so that other members find them.
fn hand_over_ipam_addresses(
    client: &PluginClient,
    attach: &AttachRequest,
    allocation: &CniResult,
) -> Result<Endpoint, CniError> {
    let mut again = attach.clone();
    again.extra_ips = allocation.ips.iter().map(|ip| ip.address).collect();
    again.extra_routes = allocation
        .routes
        .iter()
        .map(|r| Route {
            dst: r.dst,
            gateway: r.gw,
        })
        .collect();
    client
        .attach(&again)
        .map_err(|e| agent_error(e, Command::Add))
}

/// Best-effort undo of an ADD that failed after its attach: release the IPAM allocation
/// (when there is one) and detach. Failures here are logged by the runtime's DEL, which
/// follows a failed ADD and does both again.
fn undo_add(
    client: &PluginClient,
    attach: &AttachRequest,
    release: Option<(&Environment, &Request, &config::Ipam)>,
) {
    if let Some((env, request, ipam)) = release {
        if let Ok(plugin) = delegate::find_plugin(ipam, &env.cni_path()) {
            let _ = delegate::run(&plugin, Command::Del, &request.bytes, &[]);
        }
    }
    let _ = client.detach(&reference_of(attach));
}

fn reference_of(attach: &AttachRequest) -> EndpointRef {
    EndpointRef {
        key: Some(attach.key.clone()),
        container_id: Some(attach.container_id.clone()),
        if_name: Some(attach.if_name.clone()),
        network: Some(attach.network),
    }
}

fn previous_result(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .map(|value| CniResult::from_value(value, "prevResult"))
        .transpose()
        .map_err(CniError::config)
}

/// The ADD result: the previous plugins' result (if chained after one) with the container
/// interface appended, its addresses pointing at it, the routes, and DNS (the config's
/// first, then the network's, then the IPAM plugin's, then the previous result's).
pub fn add_result(
    prev: Option<CniResult>,
    endpoint: &Endpoint,
    netns: &Path,
    allocation: Option<CniResult>,
    dns: &Dns,
) -> CniResult {
    let mut result = prev.unwrap_or_default();
    let index = result.interfaces.len();
    let mut extra = Map::new();
    extra.insert("mtu".into(), endpoint.mtu.into());
    result.interfaces.push(Interface {
        name: endpoint.if_name.to_string(),
        mac: Some(endpoint.mac.to_string()),
        sandbox: Some(netns.display().to_string()),
        extra,
    });
    // Addresses and routes the IPAM plugin gave come back in the endpoint too; its own
    // entries (with their gateways) are the ones listed.
    let from_ipam = |address: &IpPrefix| {
        allocation
            .as_ref()
            .is_some_and(|a| a.ips.iter().any(|ip| ip.address == *address))
    };
    let route_from_ipam = |route: &Route| {
        allocation.as_ref().is_some_and(|a| {
            a.routes
                .iter()
                .any(|r| r.dst == route.dst && r.gw == route.gateway)
        })
    };
    for address in endpoint.ips.iter().filter(|a| !from_ipam(a)) {
        result.ips.push(IpConfig {
            address: *address,
            gateway: endpoint
                .gateway
                .filter(|gateway| same_family(gateway, address)),
            interface: Some(index),
            extra: Map::new(),
        });
    }
    for route in endpoint.routes.iter().filter(|r| !route_from_ipam(r)) {
        result.routes.push(RouteEntry {
            dst: route.dst,
            gw: route.gateway,
            extra: Map::new(),
        });
    }
    let mut ours = dns.clone();
    // Then the network's own DNS (from its controller), as ZeroTier One applies it.
    if let Some(network_dns) = &endpoint.dns {
        let domain = (!network_dns.domain.is_empty()).then(|| network_dns.domain.clone());
        ours.merge(&Dns {
            nameservers: network_dns.servers.iter().map(IpAddr::to_string).collect(),
            search: domain.iter().cloned().collect(),
            domain,
            options: Vec::new(),
        });
    }
    if let Some(allocation) = allocation {
        for mut ip in allocation.ips {
            ip.interface = Some(index);
            result.ips.push(ip);
        }
        result.routes.extend(allocation.routes);
        ours.merge(&allocation.dns);
    }
    ours.merge(&result.dns);
    result.dns = ours;
    result
}

fn same_family(gateway: &IpAddr, address: &IpPrefix) -> bool {
    gateway.is_ipv4() == address.address.is_ipv4()
}

/// DEL: release the IPAM allocation (if the config delegates) and detach. Succeeds when
/// there is nothing to remove: no namespace, a repeated DEL, an endpoint the agent does not
/// have. When the agent cannot be reached, the detach is recorded for the agent to replay
/// (see [`spool`]) and DEL succeeds.
fn del(env: &Environment, stdin: &[u8], log: &mut dyn Write) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let if_name = env.if_name()?;
    let request = Request::decode(stdin)?;
    let conf = DelConf::parse(&request)?;
    conf.cni_version.allows(Command::Del)?;
    for warning in &conf.warnings {
        let _ = writeln!(
            log,
            "zerotier: DEL: ignoring an invalid config key: {warning}"
        );
    }
    // The key only narrows the detach; without it (odd CNI_ARGS) the attachment names it.
    let key = env
        .cni_args()
        .and_then(|args| endpoint_key(&args, &container_id, &if_name))
        .map_err(|e| {
            let _ = writeln!(
                log,
                "zerotier: DEL: detaching by container and interface only: {e}"
            );
        })
        .ok();
    let reference = EndpointRef {
        key,
        container_id: Some(container_id),
        if_name: Some(if_name),
        network: conf.network,
    };

    let mut first_error = None;
    // Reverse of ADD's order: the allocation goes before the endpoint.
    if let Some(ipam) = &conf.ipam {
        let released = delegate::find_plugin(ipam, &env.cni_path())
            .and_then(|plugin| delegate::run(&plugin, Command::Del, &request.bytes, &[]));
        if let Err(e) = released {
            first_error = Some(e);
        }
    }
    match &conf.agent_socket {
        Some(socket) => {
            if let Err(e) = detach_or_record(socket, &conf, &reference, log) {
                first_error.get_or_insert(e);
            }
        }
        None => {
            let _ = writeln!(
                log,
                "zerotier: DEL: no valid agentSocket, so ADD attached nothing through it"
            );
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn detach_or_record(
    socket: &Path,
    conf: &DelConf,
    reference: &EndpointRef,
    log: &mut dyn Write,
) -> Result<(), CniError> {
    let client = PluginClient::new(socket);
    let Err(error) = client.detach(reference) else {
        return Ok(());
    };
    // The agent answered, and not with "I am going away": its error stands.
    if let Some(api) = error.api_error() {
        if api.code != ErrorCode::Unavailable {
            return Err(agent_error(error, Command::Del));
        }
    }
    let dir = conf
        .pending_delete_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_PENDING_DELETE_DIR.into());
    match spool::record(&dir, reference) {
        Ok(path) => {
            let _ = writeln!(
                log,
                "zerotier: DEL: {error}; recorded the detach in {} for the agent to replay",
                path.display()
            );
            Ok(())
        }
        Err(io) => Err(CniError::new(
            code::PENDING_DELETE_FAILED,
            format!("{error}, and the detach could not be recorded for later"),
        )
        .with_details(format!("writing into {}: {io}", dir.display()))),
    }
}

/// CHECK: the agent verifies the endpoint (present, plumbed, authorized, online) and this
/// plugin verifies that the runtime's cached result still describes it.
fn check(env: &Environment, stdin: &[u8]) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let netns = env.netns()?;
    let if_name = env.if_name()?;
    let args = env.cni_args()?;
    let request = Request::decode(stdin)?;
    let conf = NetConf::parse(&request)?;
    conf.cni_version.allows(Command::Check)?;
    let key = endpoint_key(&args, &container_id, &if_name)?;
    let prev = previous_result(&conf)?.ok_or_else(|| {
        CniError::config("CHECK needs `prevResult`, the runtime's cached ADD result")
    })?;
    let sandbox = netns.display().to_string();
    let index = prev
        .interface_index(if_name.as_str(), &sandbox)
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult lists no interface {if_name} in {sandbox}"
            ))
        })?;

    let reference = EndpointRef {
        key: Some(key),
        container_id: Some(container_id),
        if_name: Some(if_name),
        network: Some(conf.network),
    };
    let client = PluginClient::new(&conf.agent_socket);
    let endpoint = client
        .check(&reference)
        .map_err(|e| agent_error(e, Command::Check))?;

    compare_with_result(&prev, index, &endpoint, conf.ipam.is_some())?;
    if let (Some(ipam), true) = (&conf.ipam, endpoint.ips.is_empty()) {
        let plugin = delegate::find_plugin(ipam, &env.cni_path())?;
        delegate::run(&plugin, Command::Check, &request.bytes, &[])?;
    }
    Ok(())
}

/// Whether the cached result's interface `index` is `endpoint`: its MAC, its MTU (when the
/// result carries one) and its managed addresses. Addresses the result lists beyond the
/// managed ones are only acceptable when an IPAM plugin may have allocated them.
fn compare_with_result(
    prev: &CniResult,
    index: usize,
    endpoint: &Endpoint,
    delegates_ipam: bool,
) -> Result<(), CniError> {
    let interface = &prev.interfaces[index];
    let mac = endpoint.mac.to_string();
    if !interface
        .mac
        .as_deref()
        .is_some_and(|listed| listed.eq_ignore_ascii_case(&mac))
    {
        return Err(mismatch(format!(
            "interface {} has MAC {mac}, the cached result says {}",
            interface.name,
            interface.mac.as_deref().unwrap_or("none")
        )));
    }
    if let Some(listed) = interface.mtu() {
        if listed != u64::from(endpoint.mtu) {
            return Err(mismatch(format!(
                "interface {} has MTU {}, the cached result says {listed}",
                interface.name, endpoint.mtu
            )));
        }
    }
    let listed: Vec<IpPrefix> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .map(|ip| ip.address)
        .collect();
    if let Some(missing) = endpoint.ips.iter().find(|ip| !listed.contains(ip)) {
        return Err(mismatch(format!(
            "address {missing} of interface {} is missing from the cached result",
            interface.name
        )));
    }
    if !delegates_ipam {
        if let Some(extra) = listed.iter().find(|ip| !endpoint.ips.contains(ip)) {
            return Err(mismatch(format!(
                "the cached result lists address {extra} on interface {}, which the network no longer assigns",
                interface.name
            )));
        }
    }
    Ok(())
}

fn mismatch(message: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, message)
        .with_details("the attachment changed since ADD; the runtime should re-create the pod")
}

/// STATUS: 50 when the agent cannot be reached (nothing can be attached), 51 when it is up
/// but not ready (offline: no ADD, and existing pods may have lost connectivity).
fn status(env: &Environment, stdin: &[u8]) -> Result<(), CniError> {
    let request = Request::decode(stdin)?;
    let conf = NetConf::parse(&request)?;
    conf.cni_version.allows(Command::Status)?;
    let client = PluginClient::new(&conf.agent_socket);
    match client.status() {
        Err(error) => {
            return Err(CniError::new(code::PLUGIN_NOT_AVAILABLE, error.to_string())
                .with_details("the zt-agent on this node must be running to attach pods"))
        }
        Ok(status) if !status.ready => {
            let reason = status.reason.as_deref().unwrap_or("no reason given");
            let address = status
                .address
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            return Err(CniError::new(
                code::LIMITED_CONNECTIVITY,
                format!("zt-agent is not ready: {reason}"),
            )
            .with_details(format!(
                "agent {address} (version {}) holds {} endpoints; they may have limited connectivity",
                status.version, status.endpoints
            )));
        }
        Ok(_) => {}
    }
    if let Some(ipam) = &conf.ipam {
        let plugin = delegate::find_plugin(ipam, &env.cni_path())?;
        delegate::run(&plugin, Command::Status, &request.bytes, &[])?;
    }
    Ok(())
}

/// GC: detach every endpoint of this plugin on this network that the runtime's list of
/// valid attachments does not name, then GC the IPAM plugin. Goes on after failures and
/// reports them all.
///
/// Done as list-and-detach rather than the agent's `/v1/gc`, because that cannot be scoped
/// to one network: a GC for one CNI network would remove every other CNI network's
/// endpoints.
fn gc(env: &Environment, stdin: &[u8], log: &mut dyn Write) -> Result<(), CniError> {
    let request = Request::decode(stdin)?;
    let conf = NetConf::parse(&request)?;
    conf.cni_version.allows(Command::Gc)?;
    let valid = config::gc_valid_attachments(&request)?;
    let client = PluginClient::new(&conf.agent_socket);
    let endpoints = client
        .endpoints()
        .map_err(|e| agent_error(e, Command::Gc))?;
    let mut failures = Vec::new();
    for endpoint in endpoints.iter().filter(|e| is_stale(e, &conf, &valid)) {
        let reference = EndpointRef {
            key: Some(endpoint.key.clone()),
            container_id: Some(endpoint.container_id.clone()),
            if_name: Some(endpoint.if_name.clone()),
            network: Some(endpoint.network),
        };
        match client.detach(&reference) {
            Ok(_) => {
                let _ = writeln!(
                    log,
                    "zerotier: GC: detached {} ({}/{})",
                    endpoint.key, endpoint.container_id, endpoint.if_name
                );
            }
            Err(e) => failures.push(format!("{}: {e}", endpoint.key)),
        }
    }
    if let Some(ipam) = &conf.ipam {
        let collected = delegate::find_plugin(ipam, &env.cni_path())
            .and_then(|plugin| delegate::run(&plugin, Command::Gc, &request.bytes, &[]));
        if let Err(e) = collected {
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::GC_INCOMPLETE,
            format!("GC could not remove {} stale attachments", failures.len()),
        )
        .with_details(failures.join("; ")))
    }
}

fn is_stale(endpoint: &Endpoint, conf: &NetConf, valid: &[AttachmentRef]) -> bool {
    endpoint.owner.as_deref() == Some(OWNER)
        && endpoint.network == conf.network
        && !valid.iter().any(|attachment| {
            attachment.container_id == endpoint.container_id
                && attachment.if_name == endpoint.if_name
        })
}

/// The CNI error for a failed call to the agent.
pub fn agent_error(error: ClientError, command: Command) -> CniError {
    let retry = "zt-agent on this node is down or restarting; the runtime retries";
    match error {
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Io { .. } => {
            CniError::new(code::TRY_AGAIN_LATER, error.to_string()).with_details(retry)
        }
        ClientError::Protocol { .. } => CniError::new(code::AGENT_FAILED, error.to_string()),
        ClientError::Api { error: api, .. } => {
            let cni_code = match api.code {
                ErrorCode::NotFound | ErrorCode::InterfaceMissing if command == Command::Check => {
                    code::CHECK_MISMATCH
                }
                ErrorCode::NotFound | ErrorCode::NetnsNotFound => code::UNKNOWN_CONTAINER,
                ErrorCode::InvalidRequest => code::INVALID_NETWORK_CONFIG,
                ErrorCode::NotAuthorized
                | ErrorCode::NotReady
                | ErrorCode::NetworkUnreachable
                | ErrorCode::Timeout
                | ErrorCode::Unavailable => code::TRY_AGAIN_LATER,
                ErrorCode::UnsupportedOperation
                | ErrorCode::Conflict
                | ErrorCode::InterfaceMissing
                | ErrorCode::Internal
                | ErrorCode::Unknown => code::AGENT_FAILED,
            };
            let mut details = format!("zt-agent: {}", api.code);
            if let Some(member) = api.details.as_ref().and_then(|d| d.member_address) {
                details.push_str(&format!("; member to authorize: {member}"));
            }
            CniError::new(cni_code, api.message).with_details(details)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_core::vl2::{Mac, NetworkId};
    use node_core::Address;
    use zt_agent::plugin_api::{ApiError, EndpointState, Route};

    fn endpoint() -> Endpoint {
        Endpoint {
            key: "k8s/ns/pod".parse().unwrap(),
            owner: Some(OWNER.into()),
            network: NetworkId(0x8056_c2e2_1c00_0001),
            container_id: "c1".parse().unwrap(),
            netns: Some("/var/run/netns/cni-1".into()),
            if_name: "eth0".parse().unwrap(),
            mac: Mac([0x32, 1, 2, 3, 4, 5]),
            address: Address::from_u64(0x01_2345_6789),
            ips: vec![
                "10.147.17.5/24".parse().unwrap(),
                "fd00::5/88".parse().unwrap(),
            ],
            routes: vec![Route {
                dst: "10.10.0.0/16".parse().unwrap(),
                gateway: Some("10.147.17.1".parse().unwrap()),
            }],
            gateway: Some("10.147.17.1".parse().unwrap()),
            mtu: 2800,
            state: EndpointState::Ready,
            dns: None,
            counters: Default::default(),
        }
    }

    #[test]
    fn the_networks_dns_comes_after_the_configs() {
        let mut e = endpoint();
        e.dns = Some(zt_agent::plugin_api::Dns {
            domain: "zt.example".into(),
            servers: vec!["10.147.17.53".parse().unwrap()],
        });
        let config_dns = Dns {
            nameservers: vec!["10.0.0.53".into()],
            ..Dns::default()
        };
        let result = add_result(None, &e, Path::new("/var/run/netns/x"), None, &config_dns);
        assert_eq!(result.dns.nameservers, ["10.0.0.53", "10.147.17.53"]);
        assert_eq!(result.dns.domain.as_deref(), Some("zt.example"));
        assert_eq!(result.dns.search, ["zt.example"]);
    }

    #[test]
    fn the_result_points_every_address_at_the_container_interface() {
        let dns = Dns {
            nameservers: vec!["10.147.17.1".into()],
            ..Dns::default()
        };
        let result = add_result(
            None,
            &endpoint(),
            Path::new("/var/run/netns/cni-1"),
            None,
            &dns,
        );
        let value = result.to_value(crate::version::CniVersion::V1_1_0);
        assert_eq!(
            value,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "mac": "32:01:02:03:04:05", "sandbox": "/var/run/netns/cni-1", "mtu": 2800}],
                "ips": [
                    {"address": "10.147.17.5/24", "gateway": "10.147.17.1", "interface": 0},
                    {"address": "fd00::5/88", "interface": 0}
                ],
                "routes": [{"dst": "10.10.0.0/16", "gw": "10.147.17.1"}],
                "dns": {"nameservers": ["10.147.17.1"]}
            })
        );
    }

    #[test]
    fn a_chained_result_keeps_what_came_before() {
        let prev = CniResult::from_value(
            &json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/cni-1"}],
                "ips": [{"address": "127.0.0.1/8", "interface": 0}],
                "dns": {"nameservers": ["1.1.1.1"], "domain": "prev"}
            }),
            "prevResult",
        )
        .unwrap();
        let allocation = CniResult::from_value(
            &json!({"ips": [{"address": "10.1.0.2/16", "gateway": "10.1.0.1"}], "routes": [{"dst": "0.0.0.0/0"}], "dns": {"domain": "ipam"}}),
            "IPAM result",
        )
        .unwrap();
        let mut bare = endpoint();
        bare.ips.clear();
        bare.routes.clear();
        bare.gateway = None;
        let result = add_result(
            Some(prev),
            &bare,
            Path::new("/var/run/netns/cni-1"),
            Some(allocation),
            &Dns::default(),
        );
        let value = result.to_value(crate::version::CniVersion::V0_4_0);
        assert_eq!(value["interfaces"][1]["name"], "eth0");
        assert_eq!(
            value["ips"][0],
            json!({"version": "4", "address": "127.0.0.1/8", "interface": 0})
        );
        assert_eq!(
            value["ips"][1],
            json!({"version": "4", "address": "10.1.0.2/16", "gateway": "10.1.0.1", "interface": 1})
        );
        assert_eq!(value["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert_eq!(
            value["dns"],
            json!({"nameservers": ["1.1.1.1"], "domain": "ipam"})
        );
    }

    #[test]
    fn check_compares_mac_mtu_and_addresses() {
        let netns = Path::new("/var/run/netns/cni-1");
        let good = add_result(None, &endpoint(), netns, None, &Dns::default());
        assert!(compare_with_result(&good, 0, &endpoint(), false).is_ok());

        let mut other_mac = endpoint();
        other_mac.mac = Mac([0x32, 9, 9, 9, 9, 9]);
        let error = compare_with_result(&good, 0, &other_mac, false).unwrap_err();
        assert_eq!(error.code, code::CHECK_MISMATCH);
        assert!(error.msg.contains("MAC 32:09:09:09:09:09"), "{}", error.msg);

        let mut other_mtu = endpoint();
        other_mtu.mtu = 1500;
        assert!(compare_with_result(&good, 0, &other_mtu, false)
            .unwrap_err()
            .msg
            .contains("MTU 1500"));

        let mut more = endpoint();
        more.ips.push("10.147.17.6/24".parse().unwrap());
        assert!(compare_with_result(&good, 0, &more, false)
            .unwrap_err()
            .msg
            .contains("10.147.17.6/24"));

        let mut fewer = endpoint();
        fewer.ips.truncate(1);
        assert!(compare_with_result(&good, 0, &fewer, false)
            .unwrap_err()
            .msg
            .contains("fd00::5/88"));
        assert!(
            compare_with_result(&good, 0, &fewer, true).is_ok(),
            "IPAM addresses are not the agent's to confirm"
        );
    }

    #[test]
    fn agent_errors_map_to_cni_codes() {
        let api = |code: ErrorCode| ClientError::Api {
            status: code.http_status(),
            error: ApiError::new(code, "m"),
        };
        let cases = [
            (api(ErrorCode::NotAuthorized), Command::Add, 11),
            (api(ErrorCode::NotReady), Command::Check, 11),
            (api(ErrorCode::NetworkUnreachable), Command::Add, 11),
            (api(ErrorCode::Timeout), Command::Add, 11),
            (api(ErrorCode::Unavailable), Command::Add, 11),
            (api(ErrorCode::NetnsNotFound), Command::Add, 3),
            (api(ErrorCode::NotFound), Command::Add, 3),
            (api(ErrorCode::NotFound), Command::Check, 101),
            (api(ErrorCode::InvalidRequest), Command::Add, 7),
            (api(ErrorCode::Conflict), Command::Add, 100),
            (api(ErrorCode::Internal), Command::Add, 100),
            (api(ErrorCode::Unknown), Command::Add, 100),
            (
                ClientError::Connect {
                    socket: "/x".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
                Command::Add,
                11,
            ),
            (
                ClientError::Protocol {
                    operation: "attach".into(),
                    problem: "p".into(),
                },
                Command::Add,
                100,
            ),
        ];
        for (error, command, expected) in cases {
            let text = error.to_string();
            assert_eq!(agent_error(error, command).code, expected, "{text}");
        }
        let denied = agent_error(
            ClientError::Api {
                status: 403,
                error: ApiError::not_authorized(
                    NetworkId(0x8056_c2e2_1c00_0001),
                    Address::from_u64(0xaa),
                ),
            },
            Command::Add,
        );
        assert!(denied.msg.contains("00000000aa"), "{}", denied.msg);
        assert_eq!(
            denied.details.as_deref(),
            Some("zt-agent: NotAuthorized; member to authorize: 00000000aa")
        );
    }

    #[test]
    fn version_answers_whatever_it_is_asked() {
        let expected = json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
        let answer = version_info(br#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(answer["cniVersion"], "1.0.0");
        assert_eq!(answer["supportedVersions"], expected);
        assert_eq!(version_info(b"")["cniVersion"], "1.1.0");
        assert_eq!(
            version_info(br#"{"cniVersion":"2.0.0"}"#)["cniVersion"],
            "2.0.0"
        );
    }

    #[test]
    fn gc_only_touches_this_plugins_endpoints_on_this_network() {
        let conf = NetConf::parse(
            &Request::decode(br#"{"cniVersion":"1.1.0","name":"zt","network":"8056c2e21c000001"}"#)
                .unwrap(),
        )
        .unwrap();
        let listed = AttachmentRef {
            container_id: "c1".parse().unwrap(),
            if_name: "eth0".parse().unwrap(),
        };
        assert!(is_stale(&endpoint(), &conf, &[]));
        assert!(!is_stale(&endpoint(), &conf, &[listed]));
        let mut docker = endpoint();
        docker.owner = Some("docker".into());
        assert!(!is_stale(&docker, &conf, &[]));
        let mut elsewhere = endpoint();
        elsewhere.network = NetworkId(2);
        assert!(!is_stale(&elsewhere, &conf, &[]));
    }
}
