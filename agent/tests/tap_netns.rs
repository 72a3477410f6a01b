//! Root-only tests of the tap device and interface configuration, each inside a network
//! namespace of its own so nothing reaches a real network.
//!
//! Not root: the tests print "SKIPPED: needs root" and pass, unless the `CI` variable is set,
//! in which case they fail (CI runs as root and must not skip them silently).
//!
//! Each test body runs on a fresh thread that has called `unshare(CLONE_NEWNET)`: the thread
//! gets an empty namespace of its own, every `ip`/`ping` it starts inherits it, and the
//! namespace vanishes with the thread and its tap, so a failing test leaves nothing behind.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use zt_agent::netconf::{self, Applied, ManagedRoute, PrefixedAddr};
use zt_agent::tap::{self, Tap};

const TAP_MAC: [u8; 6] = [0x02, 0x13, 0x24, 0x00, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x13, 0x24, 0x00, 0x00, 0x02];
const TAP_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 240, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 240, 2);
const ETHERTYPE_IPV4: u16 = 0x0800;
const IP_PROTOCOL_ICMP: u8 = 0x01;
const ICMP_ECHO_REQUEST: u8 = 0x08;
const ICMP_ECHO_REPLY: u8 = 0x00;

/// Runs `body` on a thread of its own inside a new network namespace, with a current-thread
/// tokio runtime (so every task stays in that namespace), unless not root.
fn in_private_netns(test: &str, body: impl AsyncFnOnce() + Send + 'static) {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: must run as root under CI"
        );
        println!("SKIPPED: needs root ({test})");
        return;
    }
    let worker = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) for a private namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), body())
                .await
                .expect("test timed out");
        });
    });
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A unique interface name in ZeroTier One's form (a random network ID).
fn test_interface_name() -> String {
    let mut nwid = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut nwid);
    tap::interface_name(u64::from_le_bytes(nwid))
}

fn ip_json(arguments: &[&str]) -> serde_json::Value {
    let output = Command::new("ip")
        .arg("-j")
        .args(arguments)
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ip -j prints JSON")
}

fn ip(arguments: &[&str]) {
    let output = Command::new("ip").args(arguments).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `(local, prefixlen)` of every address `ip -j addr` lists on `ifname`, plus those of them
/// that are still tentative (duplicate address detection not finished).
fn addresses_on(ifname: &str) -> (Vec<PrefixedAddr>, Vec<PrefixedAddr>) {
    let links = ip_json(&["addr", "show", "dev", ifname]);
    let mut addresses = Vec::new();
    let mut tentative = Vec::new();
    for info in links[0]["addr_info"].as_array().expect("addr_info") {
        let local: IpAddr = info["local"]
            .as_str()
            .expect("local")
            .parse()
            .expect("address");
        let prefix = u8::try_from(info["prefixlen"].as_u64().expect("prefixlen")).expect("prefix");
        if info["tentative"].as_bool().unwrap_or(false) {
            tentative.push((local, prefix));
        }
        addresses.push((local, prefix));
    }
    (addresses, tentative)
}

/// `(dst, gateway)` of every route on `ifname` in the main tables of both families.
fn routes_on(ifname: &str) -> Vec<(String, Option<String>)> {
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let table = ip_json(&[family, "route", "show", "dev", ifname]);
        for route in table.as_array().expect("routes") {
            let destination = route["dst"].as_str().expect("dst").to_owned();
            let gateway = route["gateway"].as_str().map(str::to_owned);
            routes.push((destination, gateway));
        }
    }
    routes
}

fn route(target: &str, prefix: u8, via: Option<&str>) -> ManagedRoute {
    ManagedRoute {
        target: (target.parse().unwrap(), prefix),
        via: via.map(|gateway| gateway.parse().unwrap()),
    }
}

#[test]
fn tap_has_its_mac_and_mtu_and_goes_away_on_drop() {
    in_private_netns(
        "tap_has_its_mac_and_mtu_and_goes_away_on_drop",
        async || {
            let name = test_interface_name();
            let tap = Tap::create(&name, TAP_MAC, 2800).expect("create tap");
            assert_eq!(tap.name(), name);

            let link = &ip_json(&["link", "show", "dev", &name])[0];
            assert_eq!(link["address"], mac_text(TAP_MAC));
            assert_eq!(link["mtu"], 2800);
            assert_eq!(link["link_type"], "ether");
            let flags: Vec<&str> = link["flags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            assert!(
                flags.contains(&"UP") && flags.contains(&"MULTICAST"),
                "{flags:?}"
            );

            tap.set_mtu(1400).expect("set mtu");
            assert_eq!(ip_json(&["link", "show", "dev", &name])[0]["mtu"], 1400);

            // A second tap cannot take the name while the first holds it.
            assert!(Tap::create(&name, PEER_MAC, 1400).is_err());

            drop(tap);
            // The kernel unregisters the device when its last descriptor closes, which can
            // lag a moment behind under load: look for up to two seconds.
            let exists = || {
                Command::new("ip")
                    .args(["link", "show", "dev", &name])
                    .stderr(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(!exists(), "{name} still exists after the Tap was dropped");
        },
    );
}

#[test]
fn ping_goes_out_through_the_tap_and_a_crafted_reply_comes_back() {
    in_private_netns(
        "ping_goes_out_through_the_tap_and_a_crafted_reply_comes_back",
        async || {
            let name = test_interface_name();
            let tap = Tap::create(&name, TAP_MAC, 2800).expect("create tap");
            netconf::apply(
                &name,
                2800,
                &[(IpAddr::V4(TAP_IP), 24)],
                &[],
                &Applied::default(),
            )
            .expect("assign address");
            ip(&[
                "neigh",
                "add",
                &PEER_IP.to_string(),
                "lladdr",
                &mac_text(PEER_MAC),
                "dev",
                &name,
            ]);

            let ping = Command::new("ping")
                .args(["-c1", "-W5", "-n", &PEER_IP.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start ping");

            // Skip whatever else the stack sends (router solicitations, MLD reports).
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
                if is_echo_request_to(frame, PEER_IP) {
                    break frame.to_vec();
                }
            };
            assert_eq!(request[0..6], PEER_MAC, "sent to the neighbour's MAC");
            assert_eq!(request[6..12], TAP_MAC, "sent from the tap's MAC");
            assert_eq!(
                u16::from_be_bytes([request[12], request[13]]),
                ETHERTYPE_IPV4
            );

            tap.send(&echo_reply_for(&request)).expect("send reply");

            let output = tokio::task::spawn_blocking(move || ping.wait_with_output())
                .await
                .unwrap()
                .expect("ping ends");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "ping saw no reply: {stdout}");
            assert!(stdout.contains("1 received"), "{stdout}");
        },
    );
}

#[test]
fn apply_adds_then_removes_only_its_own_addresses_and_routes() {
    in_private_netns(
        "apply_adds_then_removes_only_its_own_addresses_and_routes",
        async || {
            let name = test_interface_name();
            let _tap = Tap::create(&name, TAP_MAC, 2800).expect("create tap");
            let v4: PrefixedAddr = (IpAddr::V4(TAP_IP), 24);
            let v6: PrefixedAddr = ("fd00:213:240::1".parse().unwrap(), 64);
            // Someone else's address, which apply must never remove.
            let foreign: PrefixedAddr = ("10.213.240.77".parse().unwrap(), 24);
            ip(&["addr", "add", "10.213.240.77/24", "dev", &name]);

            let via_gateway = route("10.213.241.0", 24, Some("10.213.240.254"));
            let v6_on_link = route("fd00:213:241::", 64, None);
            // Implied by the /24 address (the kernel made it): skipped, and so never ours.
            let subnet_route = route("10.213.240.0", 24, None);
            // Host bits in a target are ignored.
            let sloppy = route("10.213.242.9", 24, None);
            // A default route goes in as two /1 halves. (A private namespace: nothing escapes.)
            let default_route = route("0.0.0.0", 0, Some("10.213.240.254"));
            let wanted = [via_gateway, v6_on_link, subnet_route, sloppy, default_route];

            let first = netconf::apply(
                &name,
                2000,
                &[v4, v6, foreign],
                &wanted,
                &Applied::default(),
            )
            .expect("first apply");
            assert_eq!(
                first.addresses,
                vec![v4, v6],
                "the foreign address is not ours"
            );
            assert_eq!(
                first.routes,
                vec![
                    via_gateway,
                    v6_on_link,
                    route("10.213.242.0", 24, None),
                    route("0.0.0.0", 1, Some("10.213.240.254")),
                    route("128.0.0.0", 1, Some("10.213.240.254")),
                ],
                "the kernel's subnet route is not ours"
            );
            assert_eq!(ip_json(&["link", "show", "dev", &name])[0]["mtu"], 2000);
            let (addresses, tentative) = addresses_on(&name);
            for address in [v4, v6, foreign] {
                assert!(
                    addresses.contains(&address),
                    "{address:?} missing from {addresses:?}"
                );
            }
            assert!(
                !tentative.contains(&v6),
                "IPv6 addresses are added without DAD: {tentative:?}"
            );
            let routes = routes_on(&name);
            for expected in [
                ("10.213.241.0/24", Some("10.213.240.254")),
                ("10.213.240.0/24", None),
                ("10.213.242.0/24", None),
                ("fd00:213:241::/64", None),
            ] {
                let expected = (expected.0.to_owned(), expected.1.map(str::to_owned));
                assert!(
                    routes.contains(&expected),
                    "{expected:?} missing from {routes:?}"
                );
            }

            // Applying the same config again changes nothing and keeps ownership.
            let again = netconf::apply(&name, 2000, &[v4, v6, foreign], &wanted, &first)
                .expect("repeated apply");
            assert_eq!(again, first);

            // Drop the IPv6 address and every route but the kernel's.
            let second =
                netconf::apply(&name, 2800, &[v4], &[subnet_route], &again).expect("second apply");
            assert_eq!(
                second,
                Applied {
                    addresses: vec![v4],
                    routes: vec![]
                }
            );
            let (addresses, _) = addresses_on(&name);
            assert!(
                addresses.contains(&v4) && addresses.contains(&foreign),
                "{addresses:?}"
            );
            assert!(!addresses.contains(&v6), "{addresses:?}");
            let routes = routes_on(&name);
            let destinations: Vec<&str> = routes.iter().map(|(dst, _)| dst.as_str()).collect();
            assert!(destinations.contains(&"10.213.240.0/24"), "{routes:?}");
            for gone in [
                "10.213.241.0/24",
                "10.213.242.0/24",
                "0.0.0.0/1",
                "128.0.0.0/1",
                "fd00:213:241::/64",
            ] {
                assert!(!destinations.contains(&gone), "{gone} still in {routes:?}");
            }
            assert_eq!(ip_json(&["link", "show", "dev", &name])[0]["mtu"], 2800);

            // An empty config removes the rest of ours, and only ours.
            let third = netconf::apply(&name, 2800, &[], &[], &second).expect("third apply");
            assert_eq!(third, Applied::default());
            let (addresses, _) = addresses_on(&name);
            assert!(!addresses.contains(&v4), "{addresses:?}");
            assert!(addresses.contains(&foreign), "{addresses:?}");
        },
    );
}

#[test]
fn an_up_interface_lists_the_all_nodes_group_and_a_link_local_address() {
    in_private_netns(
        "an_up_interface_lists_the_all_nodes_group_and_a_link_local_address",
        async || {
            let name = test_interface_name();
            let _tap = Tap::create(&name, TAP_MAC, 2800).expect("create tap");
            let all_nodes = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let groups = netconf::multicast_groups(&name).expect("read dev_mcast");
                if groups.contains(&all_nodes) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "33:33:00:00:00:01 never joined: {groups:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(netconf::multicast_groups("no-such-if").unwrap().is_empty());

            // The kernel derives the link-local address from the MAC (EUI-64).
            let link_local = netconf::ipv6_link_local(&name).expect("read if_inet6");
            assert_eq!(link_local, Some("fe80::13:24ff:fe00:1".parse().unwrap()));
        },
    );
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

#[test]
fn checksum_matches_rfc_1071_example() {
    // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2, complement 220d.
    assert_eq!(
        internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
}

#[test]
fn a_persistent_tap_outlives_its_descriptor_and_is_taken_over() {
    in_private_netns(
        "a_persistent_tap_outlives_its_descriptor_and_is_taken_over",
        async || {
            let name = test_interface_name();
            let exists = |name: &str| {
                Command::new("ip")
                    .args(["link", "show", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let tap = Tap::create_persistent(&name, TAP_MAC, 2800).expect("create tap");
            drop(tap);
            assert!(
                exists(&name),
                "a persistent tap stays without its descriptor"
            );
            // Renamed, as a runtime does when it moves it; taken over under the new name
            // with nothing changed.
            ip(&["link", "set", &name, "name", "eth7"]);
            ip(&["addr", "add", "10.213.240.1/24", "dev", "eth7"]);
            let device = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .expect("open /dev/net/tun");
            let control = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("control socket");
            let tap = Tap::take_over(device, control, "eth7", TAP_MAC).expect("take over");
            assert_eq!(tap.name(), "eth7");
            let link = &ip_json(&["addr", "show", "eth7"])[0];
            assert_eq!(link["mtu"], 2800, "{link}");
            assert_eq!(link["addr_info"][0]["local"], "10.213.240.1", "{link}");
            // Made transient again, it goes with its descriptor.
            tap.set_persistent(false).expect("clear persist");
            drop(tap);
            let deadline = Instant::now() + Duration::from_secs(2);
            while exists("eth7") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!exists("eth7"), "a transient tap goes with its descriptor");
        },
    );
}
