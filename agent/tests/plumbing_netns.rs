//! Root-only tests of the namespace plumbing: taps made in the test's (root) namespace are
//! moved into namespaces the tests create (`ip netns add ztpl-...`), renamed, configured
//! and deleted there by a [`NetnsWorker`].
//!
//! Not root: the tests print "SKIPPED: needs root" and pass, unless the `CI` variable is set,
//! in which case they fail (CI runs as root and must not skip them silently).
//!
//! Network safety: addresses only from 10.213.230.0/24 and fd00:213:230::/64, and only inside
//! the namespaces the tests create; a guard deletes each namespace, with whatever was moved
//! into it, when the test ends, failing or not.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand_core::RngCore;
use zt_agent::netconf::ManagedRoute;
use zt_agent::plumbing::{LinkSpec, NetnsRef, NetnsWorker, PlumbingError};
use zt_agent::tap::Tap;

const TAP_MAC: [u8; 6] = [0x02, 0x13, 0x23, 0x00, 0x00, 0x01];
const ENDPOINT_MAC: [u8; 6] = [0x02, 0x13, 0x23, 0x00, 0x00, 0x0a];
const PEER_MAC: [u8; 6] = [0x02, 0x13, 0x23, 0x00, 0x00, 0x02];
const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 230, 10);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 230, 2);
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 230, 254);
const ENDPOINT_IP6: &str = "fd00:213:230::a";
const ETHERTYPE_IPV4: u16 = 0x0800;
const IP_PROTOCOL_ICMP: u8 = 0x01;
const ICMP_ECHO_REQUEST: u8 = 0x08;
const ICMP_ECHO_REPLY: u8 = 0x00;

/// Whether the test may run; panics when it may not but must (under CI).
fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: must run as root under CI"
    );
    println!("SKIPPED: needs root ({test})");
    false
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand_core::OsRng.fill_bytes(&mut random);
    hex::encode(random)
}

/// A namespace made with `ip netns add`, deleted when dropped (unless already gone).
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn create() -> Self {
        let name = format!("ztpl-{}", random_hex(4));
        ip(&["netns", "add", &name]);
        Self { name }
    }

    fn reference(&self) -> NetnsRef {
        NetnsRef::named(&self.name)
    }

    fn delete(&self) {
        ip(&["netns", "del", &self.name]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A tap name no one else uses: `ztpl` and 10 hex digits.
fn test_tap_name() -> String {
    format!("ztpl{}", random_hex(5))
}

fn ip(arguments: &[&str]) {
    let output = Command::new("ip").args(arguments).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip_json(netns: &str, arguments: &[&str]) -> serde_json::Value {
    let output = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(arguments)
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip -n {netns} {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ip -j prints JSON")
}

fn exists_in_root_namespace(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ip")
        .success()
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn endpoint_spec() -> LinkSpec {
    LinkSpec {
        mac: ENDPOINT_MAC,
        mtu: 2800,
        addresses: vec![
            (IpAddr::V4(ENDPOINT_IP), 24),
            (ENDPOINT_IP6.parse().unwrap(), 64),
        ],
        routes: vec![
            // Through a gateway, with host bits in the target that must be ignored.
            ManagedRoute {
                target: ("10.213.230.130".parse().unwrap(), 25),
                via: Some(IpAddr::V4(GATEWAY_IP)),
            },
            ManagedRoute {
                target: ("fd00:213:230::8000".parse().unwrap(), 113),
                via: None,
            },
        ],
        default_route_via: Some(IpAddr::V4(GATEWAY_IP)),
        up: true,
    }
}

/// Runs `body` on a current-thread runtime with a deadline.
fn run(body: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        tokio::time::timeout(Duration::from_secs(30), body)
            .await
            .expect("test timed out");
    });
}

#[test]
fn a_tap_moved_into_a_container_is_configured_and_carries_frames_both_ways() {
    if !privileged("a_tap_moved_into_a_container_is_configured_and_carries_frames_both_ways") {
        return;
    }
    run(async {
        let container = TestNetns::create();
        let worker = NetnsWorker::start().expect("start the plumbing thread");
        let tap_name = test_tap_name();
        let tap = Tap::create(&tap_name, TAP_MAC, 1500).expect("create tap");

        worker
            .move_link(&tap_name, container.reference(), "eth0")
            .await
            .expect("move into the container");
        assert!(
            !exists_in_root_namespace(&tap_name),
            "{tap_name} is still in the root namespace"
        );
        assert!(worker
            .link_exists(container.reference(), "eth0")
            .await
            .unwrap());
        assert!(!worker
            .link_exists(container.reference(), &tap_name)
            .await
            .unwrap());

        let spec = endpoint_spec();
        worker
            .configure(container.reference(), "eth0", spec.clone())
            .await
            .expect("configure");
        // Again: everything is already there, which is success.
        worker
            .configure(container.reference(), "eth0", spec)
            .await
            .expect("configure again");

        let link = &ip_json(&container.name, &["link", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], mac_text(ENDPOINT_MAC));
        assert_eq!(link["mtu"], 2800);
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .filter_map(|flag| flag.as_str())
            .collect();
        assert!(flags.contains(&"UP"), "{flags:?}");

        let addresses = &ip_json(&container.name, &["addr", "show", "dev", "eth0"])[0]["addr_info"];
        let mut found = Vec::new();
        for info in addresses.as_array().expect("addr_info") {
            let local = info["local"].as_str().expect("local").to_owned();
            let prefix = info["prefixlen"].as_u64().expect("prefixlen");
            let tentative = info["tentative"].as_bool().unwrap_or(false);
            found.push((local, prefix, tentative));
        }
        assert!(
            found.contains(&(ENDPOINT_IP.to_string(), 24, false)),
            "{found:?}"
        );
        assert!(
            found.contains(&(ENDPOINT_IP6.to_owned(), 64, false)),
            "the IPv6 address is there without DAD: {found:?}"
        );
        assert_eq!(
            found.len(),
            3,
            "two addresses and the link-local one, each once: {found:?}"
        );

        let mut routes = Vec::new();
        for family in ["-4", "-6"] {
            let table = ip_json(&container.name, &[family, "route", "show", "dev", "eth0"]);
            for route in table.as_array().expect("routes") {
                routes.push((
                    route["dst"].as_str().expect("dst").to_owned(),
                    route["gateway"].as_str().map(str::to_owned),
                ));
            }
        }
        let gateway = Some(GATEWAY_IP.to_string());
        for expected in [
            ("default".to_owned(), gateway.clone()),
            ("10.213.230.128/25".to_owned(), gateway.clone()),
            ("10.213.230.0/24".to_owned(), None),
            ("fd00:213:230::8000/113".to_owned(), None),
            ("fd00:213:230::/64".to_owned(), None),
        ] {
            assert!(
                routes.contains(&expected),
                "{expected:?} missing from {routes:?}"
            );
        }

        // The agent's descriptor still carries the interface's frames: a ping from inside the
        // container comes out of `Tap::recv`, and a reply given to `Tap::send` answers it.
        ip(&[
            "-n",
            &container.name,
            "neigh",
            "add",
            &PEER_IP.to_string(),
            "lladdr",
            &mac_text(PEER_MAC),
            "dev",
            "eth0",
        ]);
        let ping = Command::new("ip")
            .args(["netns", "exec", &container.name])
            .args(["ping", "-c1", "-W5", "-n", &PEER_IP.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ping");
        let mut buf = vec![0u8; 4096];
        let request = loop {
            let length = tap.recv(&mut buf).await.expect("recv");
            // With offloads every read starts with a virtio-net header (all zero for ICMP).
            let start = if tap.has_vnet_header() {
                zt_agent::offload::VNET_HDR_LEN
            } else {
                0
            };
            let frame = &buf[start..length];
            // Skip what else the stack sends (router solicitations, MLD reports).
            if is_echo_request_to(frame, PEER_IP) {
                break frame.to_vec();
            }
        };
        assert_eq!(request[0..6], PEER_MAC, "sent to the neighbour's MAC");
        assert_eq!(request[6..12], ENDPOINT_MAC, "sent from the configured MAC");
        tap.send(&echo_reply_for(&request)).expect("send reply");
        let output = tokio::task::spawn_blocking(move || ping.wait_with_output())
            .await
            .expect("join")
            .expect("ping ends");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "ping saw no reply: {stdout}");
        assert!(stdout.contains("1 received"), "{stdout}");

        assert!(worker
            .delete_link(container.reference(), "eth0")
            .await
            .expect("delete"));
        assert!(!worker
            .link_exists(container.reference(), "eth0")
            .await
            .unwrap());
        assert!(
            !worker
                .delete_link(container.reference(), "eth0")
                .await
                .expect("delete again"),
            "nothing left to delete"
        );
        drop(tap);
    });
}

#[test]
fn deleting_after_the_namespace_is_gone_succeeds_with_nothing_done() {
    if !privileged("deleting_after_the_namespace_is_gone_succeeds_with_nothing_done") {
        return;
    }
    run(async {
        let container = TestNetns::create();
        let worker = NetnsWorker::start().expect("start the plumbing thread");
        let tap_name = test_tap_name();
        let _tap = Tap::create(&tap_name, TAP_MAC, 1500).expect("create tap");
        worker
            .move_link(&tap_name, container.reference(), "eth1")
            .await
            .expect("move");
        assert!(worker
            .link_exists(container.reference(), "eth1")
            .await
            .unwrap());

        container.delete();
        let deleted = worker
            .delete_link(container.reference(), "eth1")
            .await
            .expect("delete in a deleted namespace");
        assert!(!deleted, "nothing to delete once the namespace is gone");
        assert!(!worker
            .link_exists(container.reference(), "eth1")
            .await
            .unwrap());
        let error = worker
            .configure(container.reference(), "eth1", endpoint_spec())
            .await
            .unwrap_err();
        assert!(
            matches!(error, PlumbingError::NamespaceGone { .. }),
            "{error}"
        );
    });
}

#[test]
fn a_taken_name_refuses_the_move_and_a_namespace_fd_works_like_a_path() {
    if !privileged("a_taken_name_refuses_the_move_and_a_namespace_fd_works_like_a_path") {
        return;
    }
    run(async {
        let container = TestNetns::create();
        let namespace_file = std::fs::File::open(format!("/var/run/netns/{}", container.name))
            .expect("open the namespace");
        let by_fd = NetnsRef::from_fd(OwnedFd::from(namespace_file));
        let worker = NetnsWorker::start().expect("start the plumbing thread");

        let first_name = test_tap_name();
        let _first = Tap::create(&first_name, TAP_MAC, 1500).expect("create tap");
        worker
            .move_link(&first_name, by_fd.clone(), "eth0")
            .await
            .expect("move by fd");
        worker
            .configure(by_fd.clone(), "eth0", endpoint_spec())
            .await
            .expect("configure by fd");
        let link = &ip_json(&container.name, &["link", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], mac_text(ENDPOINT_MAC));

        // A second endpoint asking for the same name: refused before anything moves.
        let second_name = test_tap_name();
        let _second = Tap::create(&second_name, PEER_MAC, 1500).expect("create tap");
        let error = worker
            .move_link(&second_name, container.reference(), "eth0")
            .await
            .unwrap_err();
        assert!(
            matches!(error, PlumbingError::NameTaken { ref ifname, .. } if ifname == "eth0"),
            "{error}"
        );
        assert!(
            exists_in_root_namespace(&second_name),
            "the refused tap stayed home"
        );

        // A tap that does not exist, named in the error.
        let error = worker
            .move_link("ztpl-missing", container.reference(), "eth2")
            .await
            .unwrap_err();
        assert!(
            matches!(error, PlumbingError::NoSuchLink { ref ifname, .. } if ifname == "ztpl-missing"),
            "{error}"
        );

        assert!(worker.delete_link(by_fd, "eth0").await.expect("delete"));
    });
}

/// Whether `frame` is an Ethernet frame carrying an IPv4 ICMP echo request for `target`.
fn is_echo_request_to(frame: &[u8], target: Ipv4Addr) -> bool {
    if frame.len() < 14 + 20 + 8 || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return false;
    }
    let ip = &frame[14..];
    let header_length = usize::from(ip[0] & 0x0f) * 4;
    ip.len() >= header_length + 8
        && ip[9] == IP_PROTOCOL_ICMP
        && ip[16..20] == target.octets()
        && ip[header_length] == ICMP_ECHO_REQUEST
}

/// The echo reply the peer would send: MACs and IP addresses swapped, ICMP type 0, ICMP
/// checksum recomputed (swapping the addresses leaves the IP header checksum valid).
fn echo_reply_for(request: &[u8]) -> Vec<u8> {
    let mut reply = request.to_vec();
    reply[0..6].copy_from_slice(&request[6..12]);
    reply[6..12].copy_from_slice(&request[0..6]);
    let ip = &mut reply[14..];
    let header_length = usize::from(ip[0] & 0x0f) * 4;
    let total_length = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let (source, destination) = (ip[12..16].to_vec(), ip[16..20].to_vec());
    ip[12..16].copy_from_slice(&destination);
    ip[16..20].copy_from_slice(&source);
    let icmp = &mut ip[header_length..total_length];
    icmp[0] = ICMP_ECHO_REPLY;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let checksum = internet_checksum(icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    reply
}

/// RFC 1071: one's-complement sum of 16-bit big-endian words, complemented.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
