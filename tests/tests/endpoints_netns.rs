//! Issue 4 (first slice): containers attached through the plugin Unix-socket API. Two hosts
//! in namespaces, the first also root and controller; three "containers" (namespaces the
//! test makes), two attached on the first host and one on the second. An attach on the
//! private network fails with an error naming the member to authorize; authorized, it comes
//! up with its addresses inside the container; all pairs ping; repeated attach and detach are
//! harmless; detach after the namespace is gone succeeds; after `kill -9` and a restart the
//! endpoint comes back with the same address and IP.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use node_core::vl2::NetworkId;
use serde_json::json;
use zt_agent::plugin_api::{AttachRequest, Endpoint, EndpointRef, ErrorCode};
use zt_agent::plugin_client::{ClientError, PluginClient};
use zt_e2e::{
    generate_identity, make_planet, require_privileged, wait_until, Agent, Lan, Netns, TempDir,
    AGENT_PORT,
};

fn attach_request(nwid: NetworkId, key: &str, container: &Netns, wait: u64) -> AttachRequest {
    let mut request = AttachRequest::new(
        nwid,
        key.parse().expect("key"),
        format!("c{:x}", nwid.0 ^ key.len() as u64)
            .parse()
            .expect("container id"),
        Some(Path::new("/var/run/netns").join(container.name())),
        "eth0".parse().expect("ifname"),
    );
    request.wait = Some(wait);
    request.owner = Some("test".into());
    request
}

/// Attach; the first try on a private network is refused and names the member, which the
/// controller then authorizes.
fn attach_authorized(
    client: &PluginClient,
    root: &Agent<'_>,
    nwid: NetworkId,
    key: &str,
    container: &Netns,
) -> Endpoint {
    let refused = client
        .attach(&attach_request(nwid, key, container, 20))
        .expect_err("an unauthorized attach fails");
    let error = match refused {
        ClientError::Api { error, .. } => error,
        other => panic!("attach {key}: not an API error: {other}"),
    };
    assert_eq!(error.code, ErrorCode::NotAuthorized, "{error}");
    let member = error
        .details
        .as_ref()
        .and_then(|d| d.member_address)
        .expect("the error names the member to authorize");
    assert!(
        error.message.contains(&member.to_string()),
        "the message names the member: {}",
        error.message
    );
    root.api(
        "POST",
        &format!("/controller/network/{:016x}/member/{member}", nwid.0),
        Some(&json!({"authorized": true})),
    )
    .expect("authorize");
    let endpoint = client
        .attach(&attach_request(nwid, key, container, 40))
        .unwrap_or_else(|e| panic!("attach {key} after authorization: {e}"));
    assert_eq!(
        endpoint.address, member,
        "same identity on the second attach"
    );
    assert!(!endpoint.ips.is_empty(), "{endpoint:?}");
    endpoint
}

fn ipv4_of(endpoint: &Endpoint) -> String {
    endpoint
        .ips
        .iter()
        .find(|p| p.address.is_ipv4())
        .map(|p| p.address.to_string())
        .expect("an IPv4 address")
}

fn ping_until(from: &Netns, target: &str) -> bool {
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        from.command("ping")
            .args(["-c", "1", "-W", "1", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then_some(())
    })
    .is_some()
}

#[test]
fn containers_attach_ping_and_survive_a_restart() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("ep", 2);
    let work = TempDir::new("ep");
    let homes: Vec<_> = ["root", "host"]
        .iter()
        .map(|n| work.path().join(n))
        .collect();
    let mut addresses = Vec::new();
    for home in &homes {
        fs::create_dir_all(home).expect("home");
        addresses.push(generate_identity(home));
    }
    let planet = make_planet(
        work.path(),
        &homes[0].join("identity.public"),
        &[format!("{}/{AGENT_PORT}", lan.ip(0))],
    );
    for home in &homes {
        fs::copy(&planet, home.join("planet")).expect("planet");
    }
    let root = Agent::start(lan.host(0), &homes[0], AGENT_PORT);
    let mut host = Agent::start(lan.host(1), &homes[1], AGENT_PORT);
    for agent in [&root, &host] {
        assert!(
            wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
                agent.is_online().then_some(())
            })
            .is_some(),
            "agent never came online"
        );
    }
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "containers", "private": true,
                "v4AssignMode": {"zt": true},
                "ipAssignmentPools": [{"ipRangeStart": "10.213.97.10", "ipRangeEnd": "10.213.97.250"}],
                "routes": [{"target": "10.213.97.0/24"}],
            })),
        )
        .expect("network");
    let nwid =
        NetworkId(u64::from_str_radix(created["id"].as_str().expect("id"), 16).expect("hex nwid"));

    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    let c3 = Netns::new("c3");
    let root_client = PluginClient::new(homes[0].join("agent.sock"));
    let host_client = PluginClient::new(homes[1].join("agent.sock"));
    let e1 = attach_authorized(&root_client, &root, nwid, "test/c1", &c1);
    let e2 = attach_authorized(&root_client, &root, nwid, "test/c2", &c2);
    let e3 = attach_authorized(&host_client, &root, nwid, "test/c3", &c3);
    let (ip1, ip2, ip3) = (ipv4_of(&e1), ipv4_of(&e2), ipv4_of(&e3));
    println!(
        "c1 {ip1} ({}), c2 {ip2} ({}), c3 {ip3} ({})",
        e1.address, e2.address, e3.address
    );

    for (from, name, to) in [
        (&c1, "c1", &ip2),
        (&c2, "c2", &ip1),
        (&c1, "c1", &ip3),
        (&c3, "c3", &ip1),
        (&c2, "c2", &ip3),
        (&c3, "c3", &ip2),
    ] {
        assert!(ping_until(from, to), "{name} cannot ping {to}");
        println!("ping {name} -> {to} ok");
    }

    // Attach again: the same endpoint; detach twice: harmless.
    let again = root_client
        .attach(&attach_request(nwid, "test/c1", &c1, 10))
        .expect("repeated attach");
    assert_eq!((again.address, ipv4_of(&again)), (e1.address, ip1.clone()));
    let by_key = EndpointRef::by_key("test/c2".parse().expect("key"));
    assert!(root_client.detach(&by_key).expect("detach").detached);
    assert!(!root_client.detach(&by_key).expect("detach again").detached);

    // kill -9 and restart the second host: c3 comes back with its address and IP.
    drop(host);
    host = Agent::start(lan.host(1), &homes[1], AGENT_PORT);
    let back = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        host_client.endpoints().ok()?.into_iter().find(|e| {
            e.address == e3.address && e.state == zt_agent::plugin_api::EndpointState::Ready
        })
    })
    .expect("c3's endpoint is restored after the restart");
    assert_eq!(ipv4_of(&back), ip3, "same IP after the restart");
    assert!(ping_until(&c1, &ip3), "c1 cannot ping c3 after the restart");
    println!("c3 restored after kill -9: {} {ip3}", back.address);

    // The container's namespace goes away; detach still succeeds.
    drop(c3);
    host_client
        .detach(&EndpointRef::by_key("test/c3".parse().expect("key")))
        .expect("detach after the namespace is gone");
    if let Err(exited) = host.check_running() {
        panic!("host agent: {exited}");
    }
}
