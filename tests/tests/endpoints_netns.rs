//! Issue 4: containers attached through the plugin Unix-socket API. Two hosts in namespaces,
//! the first also root and controller; three "containers" (namespaces the test makes), two
//! attached on the first host and one on the second. An attach on the private network fails
//! with an error naming the member to authorize; authorized, it comes up with its addresses
//! inside the container; all pairs ping over IPv4 and IPv6 (RFC4193); the two containers of
//! the first host are switched locally (their counters say so, and the UDP path is not
//! used); repeated attach and detach are harmless; detach after the namespace is gone
//! succeeds; after `kill -9` and a restart the endpoint comes back with the same address and
//! IPs and answers pings again; restarted with controller credentials, the second host
//! authorizes a new container's endpoint by itself.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use node_core::vl2::NetworkId;
use serde_json::json;
use zt_agent::plugin_api::{
    AttachRequest, DetachRequest, Endpoint, EndpointCounters, EndpointRef, ErrorCode,
    SandboxRequest,
};
use zt_agent::plugin_client::{ClientError, PluginClient};
use zt_e2e::{make_homes, require_privileged, wait_until, Agent, Lan, Netns, TempDir, AGENT_PORT};

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

fn ipv6_of(endpoint: &Endpoint) -> String {
    endpoint
        .ips
        .iter()
        .find(|p| p.address.is_ipv6())
        .map(|p| p.address.to_string())
        .expect("an IPv6 address")
}

fn ping_count(from: &Netns, target: &str, count: u32) -> bool {
    from.command("ping")
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "1", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Lower-case hex of `text`'s bytes (how the agent names endpoint records).
fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn counters_of(client: &PluginClient, endpoint: &Endpoint) -> EndpointCounters {
    client
        .endpoints()
        .expect("endpoints")
        .into_iter()
        .find(|e| e.address == endpoint.address)
        .map(|e| e.counters)
        .unwrap_or_else(|| panic!("endpoint {} is listed", endpoint.address))
}

#[test]
fn containers_attach_ping_and_survive_a_restart() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("ep", 2);
    let work = TempDir::new("ep");
    let homes = make_homes(work.path(), &["root", "host"], lan.ip(0), AGENT_PORT);
    // The controller's API answers the other host too (for its controller credentials).
    let root = Agent::start_with(
        lan.host(0),
        &homes[0],
        AGENT_PORT,
        &["--api-bind", "0.0.0.0"],
    );
    let mut host = Agent::start(lan.host(1), &homes[1], AGENT_PORT);
    for agent in [&root, &host] {
        agent.expect_online();
    }
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "containers", "private": true,
                "v4AssignMode": {"zt": true},
                "v6AssignMode": {"zt": false, "rfc4193": true, "6plane": false},
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
    let (ip6_1, ip6_2, ip6_3) = (ipv6_of(&e1), ipv6_of(&e2), ipv6_of(&e3));
    println!(
        "c1 {ip1} {ip6_1} ({}), c2 {ip2} {ip6_2} ({}), c3 {ip3} {ip6_3} ({})",
        e1.address, e2.address, e3.address
    );

    for (from, name, to) in [
        (&c1, "c1", &ip2),
        (&c2, "c2", &ip1),
        (&c1, "c1", &ip3),
        (&c3, "c3", &ip1),
        (&c2, "c2", &ip3),
        (&c3, "c3", &ip2),
        (&c1, "c1", &ip6_2),
        (&c2, "c2", &ip6_1),
        (&c1, "c1", &ip6_3),
        (&c3, "c3", &ip6_1),
        (&c2, "c2", &ip6_3),
        (&c3, "c3", &ip6_2),
    ] {
        assert!(from.ping_until(to), "{name} cannot ping {to}");
        println!("ping {name} -> {to} ok");
    }

    // c1 and c2 share a host: their frames are switched locally, c3's are not.
    let (before1, before2, before3) = (
        counters_of(&root_client, &e1),
        counters_of(&root_client, &e2),
        counters_of(&host_client, &e3),
    );
    assert!(ping_count(&c1, &ip2, 10), "c1 pings c2 ten times");
    assert!(ping_count(&c1, &ip3, 5), "c1 pings c3 five times");
    let (after1, after2, after3) = (
        counters_of(&root_client, &e1),
        counters_of(&root_client, &e2),
        counters_of(&host_client, &e3),
    );
    println!("c1 counters {after1:?}\nc2 counters {after2:?}\nc3 counters {after3:?}");
    // Ten requests out of c1 and ten replies into it went through the switch; its five
    // requests to c3 did not (they show in rx but not in switched_out).
    assert!(after1.switched_out_packets >= before1.switched_out_packets + 10);
    assert!(after1.switched_in_packets >= before1.switched_in_packets + 10);
    assert!(after2.switched_in_packets >= before2.switched_in_packets + 10);
    assert!(after2.switched_out_packets >= before2.switched_out_packets + 10);
    assert!(after1.rx_packets >= before1.rx_packets + 15);
    assert!(
        after1.switched_out_packets - before1.switched_out_packets
            < after1.rx_packets - before1.rx_packets,
        "traffic to c3 is not switched"
    );
    assert_eq!(after3.switched_in_packets, 0, "c3 is on another host");
    assert_eq!(after3.switched_out_packets, 0, "c3 is on another host");
    assert!(after3.rx_packets >= before3.rx_packets + 5);

    // Attach again: the same endpoint; detach twice: harmless.
    let again = root_client
        .attach(&attach_request(nwid, "test/c1", &c1, 10))
        .expect("repeated attach");
    assert_eq!((again.address, ipv4_of(&again)), (e1.address, ip1.clone()));
    let by_key = EndpointRef::by_key("test/c2".parse().expect("key"));
    assert!(root_client.detach(&by_key).expect("detach").detached);
    assert!(!root_client.detach(&by_key).expect("detach again").detached);

    // kill -9 and restart the second host, now with controller credentials: c3 comes back
    // with its address and IPs and answers pings again.
    drop(host);
    let controller_url = format!("http://{}:{AGENT_PORT}", lan.ip(0));
    let token_file = homes[0].join("authtoken.secret");
    let restarted = Instant::now();
    host = Agent::start_with(
        lan.host(1),
        &homes[1],
        AGENT_PORT,
        &[
            "--controller-url",
            &controller_url,
            "--controller-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
    );
    let answered = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        c1.ping_once(&ip3).then_some(())
    });
    assert!(answered.is_some(), "c1 cannot ping c3 after the restart");
    let outage = restarted.elapsed();
    println!("c3 answers pings {outage:?} after its agent was restarted");
    let back = host_client
        .endpoints()
        .expect("endpoints after the restart")
        .into_iter()
        .find(|e| e.address == e3.address)
        .expect("c3's endpoint is restored after the restart");
    assert_eq!(ipv4_of(&back), ip3, "same IPv4 after the restart");
    assert_eq!(ipv6_of(&back), ip6_3, "same IPv6 after the restart");
    assert!(
        c3.ping_until(&ip6_1),
        "c3 cannot ping c1 over IPv6 after the restart"
    );
    println!("c3 restored after kill -9: {} {ip3} {ip6_3}", back.address);
    assert!(
        outage < Duration::from_secs(5),
        "pings resume within 5 s of the restart (took {outage:?})"
    );

    // With controller credentials the agent authorizes a new endpoint itself: the first
    // attach succeeds.
    // It asks for host access too: the host joins the network (authorized the same way) and
    // reaches the container, as kubelet must reach its pods.
    let c4 = Netns::new("c4");
    let mut with_host_access = attach_request(nwid, "test/c4", &c4, 40);
    with_host_access.host_access = true;
    let e4 = host_client
        .attach(&with_host_access)
        .unwrap_or_else(|e| panic!("attach with controller credentials: {e}"));
    let member = root
        .api(
            "GET",
            &format!("/controller/network/{:016x}/member/{}", nwid.0, e4.address),
            None,
        )
        .expect("member record");
    assert_eq!(member["authorized"], true, "{member}");
    let ip4 = ipv4_of(&e4);
    assert!(c4.ping_until(&ip1), "c4 cannot ping c1");
    println!("c4 authorized by its agent: {} {ip4}", e4.address);
    assert!(
        lan.host(1).ping_until(&ip4),
        "the second host cannot reach c4 (host access)"
    );
    println!("the second host reaches c4");

    // Addresses from a caller's IPAM (a network that assigns none, say): the same attachment
    // again with extraIps; the agent applies and announces them, and they answer.
    let with_extra = |mut request: AttachRequest, ip: &str| {
        request.extra_ips = vec![ip.parse().expect("prefix")];
        request
    };
    let again1 = root_client
        .attach(&with_extra(
            attach_request(nwid, "test/c1", &c1, 20),
            "10.213.98.1/24",
        ))
        .expect("c1 with an IPAM address");
    let again4 = host_client
        .attach(&with_extra(with_host_access.clone(), "10.213.98.4/24"))
        .expect("c4 with an IPAM address");
    assert_eq!(
        (again1.address, again4.address),
        (e1.address, e4.address),
        "the same endpoints"
    );
    assert!(
        again4.ips.iter().any(|p| p.to_string() == "10.213.98.4/24"),
        "{again4:?}"
    );
    assert!(
        c1.ping_until("10.213.98.4"),
        "c1 cannot reach c4's IPAM address"
    );
    println!("IPAM addresses applied and announced: c1 -> 10.213.98.4 ok");

    // Docker's way: no namespace in the attach; the tap stays in the agent's namespace under
    // the asked name, and the runtime moves it and applies the answer's addresses itself.
    let c5 = Netns::new("c5");
    let mut docker_style = attach_request(nwid, "test/c5", &c5, 40);
    docker_style.netns = None;
    docker_style.if_name = "ztdtest0".parse().expect("ifname");
    let e5 = host_client
        .attach(&docker_style)
        .unwrap_or_else(|e| panic!("attach without a namespace: {e}"));
    let link = lan.host(1).run("ip", ["-o", "link", "show", "ztdtest0"]);
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(
        link.contains(&e5.mac.to_string()),
        "tap with the endpoint's MAC: {link}"
    );
    let moved = lan
        .host(1)
        .run("ip", ["link", "set", "ztdtest0", "netns", c5.name()]);
    assert!(moved.status.success(), "move the tap into c5");
    let ip5 = e5
        .ips
        .iter()
        .find(|p| p.address.is_ipv4())
        .expect("an IPv4 address for the runtime to apply")
        .to_string();
    c5.ip(&["link", "set", "ztdtest0", "name", "eth0"]);
    c5.ip(&["addr", "add", &ip5, "dev", "eth0"]);
    c5.ip(&["link", "set", "eth0", "up"]);
    assert!(c5.ping_until(&ip1), "c5 (moved by hand) cannot ping c1");
    println!(
        "c5 attached without a namespace and moved by hand: {} {ip5}",
        e5.address
    );

    // The runtime says where it moved the tap (Docker's Join); the tap is persistent, so it
    // stays in c5 while the agent is down, and the restarted agent takes it over there (found
    // by its MAC: the runtime renamed it) and c5 pings again.
    let c5_sandbox = SandboxRequest {
        key: docker_style.key.clone(),
        container_id: docker_style.container_id.clone(),
        if_name: docker_style.if_name.clone(),
        sandbox: Some(Path::new("/var/run/netns").join(c5.name())),
    };
    let told = host_client.sandbox(&c5_sandbox).expect("sandbox");
    assert_eq!(told.address, e5.address);
    let mut wrong = c5_sandbox.clone();
    wrong.container_id = "another".parse().expect("container id");
    assert!(
        matches!(host_client.sandbox(&wrong), Err(ClientError::Api { error, .. }) if error.code == ErrorCode::NotFound),
        "a sandbox for another container is NotFound"
    );
    drop(host);
    let link = c5.run("ip", ["-o", "link", "show", "eth0"]);
    assert!(
        link.status.success(),
        "the persistent tap stays in c5 while the agent is down"
    );
    host = Agent::start_with(
        lan.host(1),
        &homes[1],
        AGENT_PORT,
        &[
            "--controller-url",
            &controller_url,
            "--controller-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        c5.ping_until(&ip1),
        "c5 cannot ping c1 after its agent restarted"
    );
    println!("c5's tap taken over in its sandbox after an agent restart");

    // Docker's Leave: the tap goes back to the agent's namespace under its first name; then a
    // detach that keeps the identity removes the tap but keeps the member for the key.
    c5.ip(&["link", "set", "eth0", "down"]);
    c5.ip(&["link", "set", "eth0", "name", "ztdtest0"]);
    c5.ip(&["link", "set", "ztdtest0", "netns", lan.host(1).name()]);
    let mut left = c5_sandbox.clone();
    left.sandbox = None;
    host_client.sandbox(&left).expect("sandbox: back");
    let record = homes[1]
        .join("endpoints.d")
        .join(format!("{}.json", hex_of("test/c5")));
    let keep = DetachRequest {
        key: Some(docker_style.key.clone()),
        container_id: Some(docker_style.container_id.clone()),
        if_name: Some(docker_style.if_name.clone()),
        network: None,
        keep_identity: true,
    };
    assert!(
        host_client
            .detach_with(&keep)
            .expect("detach keeping")
            .detached
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let shown = lan.host(1).run("ip", ["link", "show", "ztdtest0"]);
            (!shown.status.success()).then_some(())
        })
        .is_some(),
        "the detached endpoint's tap is gone"
    );
    assert!(record.is_file(), "the kept identity's record stays");
    let mut again5 = docker_style.clone();
    again5.container_id = "c5again".parse().expect("container id");
    again5.if_name = "ztdtest1".parse().expect("ifname");
    let e5_again = host_client
        .attach(&again5)
        .expect("attach the kept key again");
    assert_eq!(
        (e5_again.address, &e5_again.ips),
        (e5.address, &e5.ips),
        "the same member and addresses for the kept key"
    );
    let mut keep_again = keep.clone();
    keep_again.container_id = Some(again5.container_id.clone());
    keep_again.if_name = Some(again5.if_name.clone());
    assert!(
        host_client
            .detach_with(&keep_again)
            .expect("detach")
            .detached
    );
    // A detach by key alone forgets the kept identity.
    let forget = DetachRequest {
        key: Some(docker_style.key.clone()),
        ..DetachRequest::default()
    };
    assert!(!host_client.detach_with(&forget).expect("forget").detached);
    assert!(!record.exists(), "the forgotten identity's record is gone");
    println!(
        "detach with keepIdentity kept {} for its key, then forgot it",
        e5.address
    );

    // The container's namespace goes away; detach still succeeds.
    drop(c3);
    host_client
        .detach(&EndpointRef::by_key("test/c3".parse().expect("key")))
        .expect("detach after the namespace is gone");
    if let Err(exited) = host.check_running() {
        panic!("host agent: {exited}");
    }
}
