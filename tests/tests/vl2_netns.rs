//! Issue 3: three `zt-agent run` processes in network namespaces the test makes. The root
//! also runs the controller; a network is created through the controller API, two members
//! join, are refused until authorized through the API, get their addresses on a tap named as
//! ZeroTier One names it, and then ping each other over IPv4, IPv6 link-local, RFC4193 and
//! 6PLANE and move a TCP stream. A deauthorized member is cut off.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use zt_e2e::{
    generate_identity, make_planet, require_privileged, wait_until, Agent, Lan, Netns, TempDir,
    AGENT_PORT,
};

const ROOT: usize = 0;
const MEMBER_A: usize = 1;
const MEMBER_B: usize = 2;
const NAMES: [&str; 3] = ["root", "member-a", "member-b"];

fn network_of(agent: &Agent<'_>, nwid: &str) -> Option<Value> {
    agent.api("GET", &format!("/network/{nwid}"), None).ok()
}

fn addresses_of(network: &Value) -> Vec<String> {
    network["assignedAddresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| s.split('/').next().unwrap_or(s).to_string())
        .collect()
}

/// The address of `network` that starts with `prefix`.
fn address_with(network: &Value, prefix: &str) -> String {
    addresses_of(network)
        .into_iter()
        .find(|a| a.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* address in {network}"))
}

fn ping(from: &Netns, target: &str, count: u32) -> bool {
    let v6 = target.contains(':');
    let count = count.to_string();
    let mut args = vec!["-c", &count, "-W", "2", "-i", "0.3"];
    if v6 {
        args.insert(0, "-6");
    }
    args.push(target);
    from.command("ping")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pings until one succeeds (ARP/NDP and the first gathers take a moment).
fn ping_until(from: &Netns, from_name: &str, target: &str, to_name: &str) {
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        ping(from, target, 1).then_some(())
    });
    assert!(
        ok.is_some(),
        "{from_name} cannot ping {to_name} at {target} over the ZeroTier network"
    );
    assert!(
        ping(from, target, 3),
        "{from_name} -> {to_name} at {target}: pings after the first were lost"
    );
    println!("ping {from_name} -> {to_name} ({target}) ok");
}

/// The IPv6 link-local address of `dev` in `netns`.
fn link_local(netns: &Netns, dev: &str) -> String {
    let found = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let out = netns.run("ip", ["-j", "-6", "addr", "show", "dev", dev]);
        let parsed: Value = serde_json::from_slice(&out.stdout).ok()?;
        parsed[0]["addr_info"]
            .as_array()?
            .iter()
            .find(|a| a["scope"] == "link" && a.get("tentative").is_none())
            .and_then(|a| a["local"].as_str())
            .map(str::to_owned)
    });
    found.unwrap_or_else(|| panic!("{dev} in {} has no usable link-local address", netns.name()))
}

/// Sends `size` bytes over TCP from `client` to `server` at `ip`:5201 and returns what the
/// server counted.
fn tcp_transfer(server: &Netns, client: &Netns, ip: &str, size: usize) -> usize {
    let server_script = "import socket\n\
        s=socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('0.0.0.0', 5201)); s.listen(1); s.settimeout(30)\n\
        c,_=s.accept(); c.settimeout(30); n=0\n\
        while True:\n\
        \x20   d=c.recv(65536)\n\
        \x20   if not d: break\n\
        \x20   n+=len(d)\n\
        print(n)\n";
    let listener = server
        .command("python3")
        .args(["-c", server_script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the TCP server");
    std::thread::sleep(Duration::from_millis(500));
    let client_script = format!(
        "import socket\n\
         c=socket.create_connection(('{ip}', 5201), timeout=30)\n\
         c.sendall(b'z' * {size}); c.close()\n"
    );
    let sent = client.run("python3", ["-c", &client_script]);
    assert!(
        sent.status.success(),
        "TCP client failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = listener.wait_with_output().expect("TCP server ends");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("TCP server printed no count: {out:?}"))
}

#[test]
fn members_join_get_authorized_and_talk_over_a_controller_network() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("vl2", 3);
    let work = TempDir::new("vl2");
    let homes: Vec<_> = NAMES.iter().map(|name| work.path().join(name)).collect();
    let mut addresses = Vec::new();
    for home in &homes {
        fs::create_dir_all(home).expect("create a home folder");
        addresses.push(generate_identity(home));
    }
    let planet = make_planet(
        work.path(),
        &homes[ROOT].join("identity.public"),
        &[format!("{}/{AGENT_PORT}", lan.ip(ROOT))],
    );
    for home in &homes {
        fs::copy(&planet, home.join("planet")).expect("copy the planet into a home");
    }
    let mut agents: Vec<Agent<'_>> = (0..3)
        .map(|index| Agent::start(lan.host(index), &homes[index], AGENT_PORT))
        .collect();
    for (index, agent) in agents.iter_mut().enumerate() {
        let online = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
            if let Err(exited) = agent.check_running() {
                return Some(Err(exited));
            }
            agent.is_online().then_some(Ok(()))
        });
        match online {
            Some(Ok(())) => {}
            Some(Err(exited)) => panic!("{}: {exited}", NAMES[index]),
            None => panic!("{} never came ONLINE", NAMES[index]),
        }
    }
    let mut agents = agents.into_iter();
    let (root, mut member_a, member_b) = (
        agents.next().expect("root"),
        agents.next().expect("member-a"),
        agents.next().expect("member-b"),
    );
    let (root, member_b) = (&root, &member_b);

    // The controller API, as ZeroTier's: create a private network with IPv4 auto-assign and
    // both managed IPv6 schemes.
    let status = root
        .api("GET", "/controller", None)
        .expect("GET /controller");
    assert_eq!(status["controller"], true, "{status}");
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "e2e",
                "private": true,
                "v4AssignMode": {"zt": true},
                "v6AssignMode": {"rfc4193": true, "6plane": true, "zt": false},
                "ipAssignmentPools": [{"ipRangeStart": "10.213.99.10", "ipRangeEnd": "10.213.99.250"}],
                "routes": [{"target": "10.213.99.0/24", "via": null}],
                "rules": [{"type": "ACTION_ACCEPT"}],
            })),
        )
        .expect("create a network");
    let nwid = created["id"].as_str().expect("network id").to_string();
    assert!(
        nwid.starts_with(&addresses[ROOT]),
        "the network ID {nwid} starts with the controller's address {}",
        addresses[ROOT]
    );
    println!("network {nwid} created");

    // Members join and are refused: the controller lists them, unauthorized.
    for member in [&member_a, member_b] {
        member.cli(&["join", &nwid]).expect("join");
    }
    for (index, member) in [(MEMBER_A, &member_a), (MEMBER_B, member_b)] {
        let denied = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
            network_of(member, &nwid).filter(|n| n["status"] == "ACCESS_DENIED")
        });
        assert!(
            denied.is_some(),
            "{} is not refused before authorization: {:?}",
            NAMES[index],
            network_of(member, &nwid)
        );
        let record = root
            .api(
                "GET",
                &format!("/controller/network/{nwid}/member/{}", addresses[index]),
                None,
            )
            .expect("the controller lists the refused member");
        assert_eq!(record["authorized"], false, "{record}");
    }
    let listed = member_a.cli(&["listnetworks"]).expect("listnetworks");
    assert!(listed.contains("ACCESS_DENIED"), "{listed}");

    // Authorized through the API: configs arrive, taps get addresses.
    for index in [MEMBER_A, MEMBER_B] {
        root.api(
            "POST",
            &format!("/controller/network/{nwid}/member/{}", addresses[index]),
            Some(&json!({"authorized": true})),
        )
        .expect("authorize");
    }
    let mut networks = Vec::new();
    for (index, member) in [(MEMBER_A, &member_a), (MEMBER_B, member_b)] {
        let network = wait_until(Duration::from_secs(40), Duration::from_millis(500), || {
            network_of(member, &nwid).filter(|n| n["status"] == "OK" && addresses_of(n).len() >= 3)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never got its config: {:?}",
                NAMES[index],
                network_of(member, &nwid)
            )
        });
        let dev = network["portDeviceName"]
            .as_str()
            .expect("device")
            .to_string();
        assert!(dev.starts_with("zt"), "ZeroTier's interface naming: {dev}");
        let v4 = address_with(&network, "10.213.99.");
        let shown = lan
            .host(index)
            .run("ip", ["-j", "addr", "show", "dev", &dev]);
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains(&v4),
            "{}'s tap {dev} does not carry {v4}",
            NAMES[index]
        );
        println!(
            "{} on {dev}: {:?} (mtu {})",
            NAMES[index],
            addresses_of(&network),
            network["mtu"]
        );
        networks.push(network);
    }
    let (net_a, net_b) = (&networks[0], &networks[1]);
    let (host_a, host_b) = (lan.host(MEMBER_A), lan.host(MEMBER_B));

    // IPv4 both ways, then RFC4193 and 6PLANE (NDP emulated), then link-local.
    ping_until(
        host_a,
        "member-a",
        &address_with(net_b, "10.213.99."),
        "member-b",
    );
    ping_until(
        host_b,
        "member-b",
        &address_with(net_a, "10.213.99."),
        "member-a",
    );
    ping_until(host_a, "member-a", &address_with(net_b, "fd"), "member-b");
    ping_until(host_b, "member-b", &address_with(net_a, "fd"), "member-a");
    ping_until(host_a, "member-a", &address_with(net_b, "fc"), "member-b");
    ping_until(host_b, "member-b", &address_with(net_a, "fc"), "member-a");
    let (dev_a, dev_b) = (
        net_a["portDeviceName"].as_str().unwrap_or_default(),
        net_b["portDeviceName"].as_str().unwrap_or_default(),
    );
    let ll_b = format!("{}%{dev_a}", link_local(host_b, dev_b));
    let ll_a = format!("{}%{dev_b}", link_local(host_a, dev_a));
    ping_until(host_a, "member-a", &ll_b, "member-b (link-local)");
    ping_until(host_b, "member-b", &ll_a, "member-a (link-local)");

    // A TCP stream of 4 MB arrives whole.
    let size = 4 << 20;
    let received = tcp_transfer(host_b, host_a, &address_with(net_b, "10.213.99."), size);
    assert_eq!(received, size, "TCP bytes received");
    println!("TCP: {received} bytes member-a -> member-b");

    // Killed (SIGKILL) and restarted, member-a comes back from networks.d with the same
    // network, device and addresses, and traffic flows again.
    drop(member_a);
    assert!(
        !lan.host(MEMBER_A)
            .run("ip", ["link", "show", "dev", dev_a])
            .status
            .success(),
        "the tap goes away with the killed agent"
    );
    member_a = Agent::start(lan.host(MEMBER_A), &homes[MEMBER_A], AGENT_PORT);
    let back = wait_until(Duration::from_secs(40), Duration::from_millis(500), || {
        network_of(&member_a, &nwid).filter(|n| n["status"] == "OK")
    })
    .unwrap_or_else(|| panic!("member-a did not rejoin {nwid} after a restart"));
    assert_eq!(back["portDeviceName"], net_a["portDeviceName"], "{back}");
    let mut before = addresses_of(net_a);
    let mut after = addresses_of(&back);
    before.sort();
    after.sort();
    assert_eq!(after, before, "the same addresses after a restart");
    ping_until(
        host_a,
        "member-a (restarted)",
        &address_with(net_b, "10.213.99."),
        "member-b",
    );
    ping_until(
        host_b,
        "member-b",
        &address_with(net_a, "10.213.99."),
        "member-a (restarted)",
    );

    // Deauthorized: b can neither reach a nor be reached (a drops b's frames once the
    // controller revokes b's certificate of membership).
    root.api(
        "POST",
        &format!("/controller/network/{nwid}/member/{}", addresses[MEMBER_B]),
        Some(&json!({"authorized": false})),
    )
    .expect("deauthorize");
    let ip_a = address_with(net_a, "10.213.99.");
    let ip_b = address_with(net_b, "10.213.99.");
    let cut = wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
        (!ping(host_b, &ip_a, 1)).then_some(())
    });
    assert!(
        cut.is_some(),
        "member-b still reaches member-a after deauthorization"
    );
    assert!(
        !ping(host_b, &ip_a, 3),
        "member-b -> member-a after deauthorization"
    );
    assert!(
        !ping(host_a, &ip_b, 3),
        "member-a -> member-b after deauthorization"
    );
    println!("member-b is cut off after deauthorization");
    if let Err(exited) = member_a.check_running() {
        panic!("member-a: {exited}");
    }
}
