//! Issue 4, item 2: a container's namespace given to the plugin API as a file descriptor
//! (`netnsFd`) instead of a path. Two hosts in namespaces, the first root and controller; on
//! the second, one container attached by path and one by a descriptor this test process
//! holds (it opens /run/netns/<name> and passes the number over the socket). Wrong input
//! (both forms, a file, another kind of namespace, a number the caller does not hold) is
//! refused and changes nothing. The descriptor's namespace is pinned with a bind mount in
//! the agent's home; the containers ping each other; after `kill -9` and a restart the
//! endpoint comes back through the pin and answers again; a detach removes the pin.
//!
//! The second agent runs in this process's mount namespace (`nsenter --net`, not `ip netns
//! exec`), as an agent in the host's mount namespace does: its pins outlive its process.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use node_core::vl2::NetworkId;
use serde_json::json;
use zt_agent::plugin_api::{AttachRequest, Endpoint, EndpointRef, ErrorCode};
use zt_agent::plugin_client::{ClientError, PluginClient};
use zt_e2e::{
    make_homes, require_privileged, run_command, wait_until, Agent, Lan, Netns, TempDir, AGENT_PORT,
};

fn attach_request(nwid: NetworkId, key: &str, netns: Option<PathBuf>) -> AttachRequest {
    let mut request = AttachRequest::new(
        nwid,
        key.parse().expect("key"),
        key.replace('/', "-").parse().expect("container id"),
        netns,
        "eth0".parse().expect("ifname"),
    );
    request.wait = Some(40);
    request.owner = Some("test".into());
    request
}

fn ipv4_of(endpoint: &Endpoint) -> String {
    endpoint
        .ips
        .iter()
        .find(|p| p.address.is_ipv4())
        .map(|p| p.address.to_string())
        .expect("an IPv4 address")
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mount_point(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// The files in the pins folder.
fn pins_in(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Unmounts whatever pins a failed run leaves, so that its namespaces can go.
struct PinsCleanup(PathBuf);

impl Drop for PinsCleanup {
    fn drop(&mut self) {
        for pin in pins_in(&self.0) {
            let _ = run_command("umount", [Path::new("-l"), &pin]);
        }
    }
}

/// The API error of a refused attach, with its code checked.
fn refused(result: Result<Endpoint, ClientError>, what: &str, says: &str) {
    let error = match result {
        Err(ClientError::Api { error, .. }) => error,
        Err(other) => panic!("{what}: not an API error: {other}"),
        Ok(endpoint) => panic!("{what}: attached {endpoint:?}"),
    };
    assert_eq!(error.code, ErrorCode::InvalidRequest, "{what}: {error}");
    assert!(
        error.message.contains(says),
        "{what}: the message says {says:?}: {}",
        error.message
    );
    println!("refused ({what}): {}", error.message);
}

#[test]
fn a_namespace_given_by_descriptor_is_pinned_and_survives_a_restart() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("fd", 2);
    let work = TempDir::new("fd");
    let homes = make_homes(work.path(), &["root", "host"], lan.ip(0), AGENT_PORT);
    let pins_dir = homes[1].join("netns");
    let _cleanup = PinsCleanup(pins_dir.clone());
    let root = Agent::start_with(
        lan.host(0),
        &homes[0],
        AGENT_PORT,
        &["--api-bind", "0.0.0.0"],
    );
    // The second host authorizes its endpoints itself on the root's controller.
    let controller_url = format!("http://{}:{AGENT_PORT}", lan.ip(0));
    let token_file = homes[0].join("authtoken.secret");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            token_file.is_file().then_some(())
        })
        .is_some(),
        "the root wrote no authtoken.secret"
    );
    let host_args = [
        "--controller-url",
        controller_url.as_str(),
        "--controller-token-file",
        token_file.to_str().expect("utf-8 path"),
    ];
    let mut host = Agent::start_keeping_mounts(lan.host(1), &homes[1], AGENT_PORT, &host_args);
    for agent in [&root, &host] {
        agent.expect_online();
    }
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "netns-fd", "private": true,
                "v4AssignMode": {"zt": true},
                "ipAssignmentPools": [{"ipRangeStart": "10.213.96.10", "ipRangeEnd": "10.213.96.250"}],
                "routes": [{"target": "10.213.96.0/24"}],
            })),
        )
        .expect("network");
    let nwid =
        NetworkId(u64::from_str_radix(created["id"].as_str().expect("id"), 16).expect("hex nwid"));

    let by_path = Netns::new("bypath");
    let by_fd = Netns::new("byfd");
    let client = PluginClient::new(homes[1].join("agent.sock"));
    let e_path = client
        .attach(&attach_request(
            nwid,
            "fd/path",
            Some(Path::new("/run/netns").join(by_path.name())),
        ))
        .unwrap_or_else(|e| panic!("attach by path: {e}"));

    // Wrong input is refused and changes nothing.
    let listed_keys = |client: &PluginClient| -> Vec<String> {
        let mut keys: Vec<String> = client
            .endpoints()
            .expect("endpoints")
            .into_iter()
            .map(|e| e.key.to_string())
            .collect();
        keys.sort();
        keys
    };
    let keys_before = listed_keys(&client);
    let netns_file =
        File::open(Path::new("/run/netns").join(by_fd.name())).expect("open the namespace");
    let mut both = attach_request(
        nwid,
        "fd/fd",
        Some(Path::new("/run/netns").join(by_fd.name())),
    );
    both.netns_fd = Some(netns_file.as_raw_fd());
    refused(client.attach(&both), "path and descriptor", "not both");
    let plain_file = File::open(homes[1].join("planet")).expect("open a file");
    refused(
        client.attach_with_netns_fd(&attach_request(nwid, "fd/fd", None), plain_file.as_fd()),
        "a regular file",
        "not a network namespace",
    );
    let mount_ns = File::open("/proc/self/ns/mnt").expect("open a mount namespace");
    refused(
        client.attach_with_netns_fd(&attach_request(nwid, "fd/fd", None), mount_ns.as_fd()),
        "a mount namespace",
        "mnt:[",
    );
    let mut not_held = attach_request(nwid, "fd/fd", None);
    not_held.netns_fd = Some(65_000);
    refused(
        client.attach(&not_held),
        "a number this process does not hold",
        "no open file descriptor 65000",
    );
    assert_eq!(listed_keys(&client), keys_before, "refusals change nothing");
    assert!(pins_in(&pins_dir).is_empty(), "refusals pin nothing");

    // By descriptor: pinned in the agent's home, the interface in the namespace.
    let e_fd = client
        .attach_with_netns_fd(&attach_request(nwid, "fd/fd", None), netns_file.as_fd())
        .unwrap_or_else(|e| panic!("attach by descriptor: {e}"));
    let pin = e_fd.netns.clone().expect("the endpoint names its pin");
    println!("attached by descriptor, pinned at {}", pin.display());
    assert_eq!(
        pin.parent(),
        Some(pins_dir.as_path()),
        "pinned in <home>/netns"
    );
    assert!(is_mount_point(&pin), "{} is a mount", pin.display());
    assert!(
        by_fd.run("ip", ["link", "show", "eth0"]).status.success(),
        "the interface is in the namespace"
    );
    drop((netns_file, plain_file, mount_ns));
    let (ip_path, ip_fd) = (ipv4_of(&e_path), ipv4_of(&e_fd));
    assert!(by_path.ping_until(&ip_fd), "cannot ping {ip_fd} (by fd)");
    assert!(
        by_fd.ping_until(&ip_path),
        "cannot ping {ip_path} (by path)"
    );
    println!("by path {ip_path} <-> by descriptor {ip_fd}: ping ok");

    // The same attachment again, by a new descriptor: the same endpoint and pin.
    let again_file = File::open(Path::new("/run/netns").join(by_fd.name())).expect("reopen");
    let again = client
        .attach_with_netns_fd(&attach_request(nwid, "fd/fd", None), again_file.as_fd())
        .unwrap_or_else(|e| panic!("attach again by descriptor: {e}"));
    drop(again_file);
    assert_eq!(
        (again.address, &again.netns),
        (e_fd.address, &e_fd.netns),
        "attach again: the same endpoint and pin"
    );
    assert_eq!(pins_in(&pins_dir), vec![pin.clone()], "one pin");

    // kill -9 and restart: the endpoint comes back in the pinned namespace.
    drop(host);
    assert!(is_mount_point(&pin), "the pin outlives the agent");
    host = Agent::start_keeping_mounts(lan.host(1), &homes[1], AGENT_PORT, &host_args);
    let answered = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        by_path.ping_once(&ip_fd).then_some(())
    });
    assert!(
        answered.is_some(),
        "no answer from {ip_fd} after the restart"
    );
    let back = client
        .endpoints()
        .expect("endpoints after the restart")
        .into_iter()
        .find(|e| e.address == e_fd.address)
        .expect("the endpoint is restored");
    assert_eq!(back.netns.as_ref(), Some(&pin), "restored through the pin");
    assert_eq!(ipv4_of(&back), ip_fd, "same IPv4 after the restart");
    println!("restored after kill -9 through {}", pin.display());

    // Detach: the pin goes; the other endpoint stays.
    assert!(
        client
            .detach(&EndpointRef::by_key("fd/fd".parse().expect("key")))
            .expect("detach")
            .detached
    );
    assert!(!is_mount_point(&pin), "unmounted after the detach");
    assert!(!pin.exists(), "pin file removed after the detach");
    assert!(pins_in(&pins_dir).is_empty(), "no pins left");
    assert!(
        !by_fd.run("ip", ["link", "show", "eth0"]).status.success(),
        "the interface is gone from the namespace"
    );
    assert_eq!(listed_keys(&client), vec!["fd/path".to_string()]);
    if let Err(exited) = host.check_running() {
        panic!("host agent: {exited}");
    }
}
