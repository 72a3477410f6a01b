//! Issue 5: the `zerotier` CNI plugin driven by libcni, the Go library containerd and CRI-O
//! use (Debian's golang-github-containernetworking-cni-dev, built offline here from
//! `tests/cni-libcni`). Two hosts in namespaces, the first also root and controller of a
//! private network; both agents hold the controller's credentials, so pods and hosts are
//! authorized without a person. Each host runs libcni in its own namespace with a conflist of
//! our plugin followed by Debian's `portmap`, for one pod (a namespace the test makes):
//! - ADD on both hosts; the pods ping each other over ZeroTier, and each host pings its pod
//!   (host access: the agent joins the host to the network);
//! - portmap after our plugin: a TCP connection to the host port, made on the host, reaches a
//!   listener in the pod;
//! - CHECK passes, and fails once the pod's interface is deleted by hand;
//! - STATUS succeeds; GC removes an attachment the runtime no longer lists and keeps pod1;
//! - DEL twice succeeds on both hosts, and takes the endpoint and the DNAT rule away.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use node_core::vl2::NetworkId;
use serde_json::{json, Value};
use zt_agent::plugin_api::AttachRequest;
use zt_agent::plugin_client::PluginClient;
use zt_e2e::{make_homes, require_privileged, wait_until, Agent, Lan, Netns, TempDir, AGENT_PORT};

/// Where Debian's reference plugins (portmap) live.
const DEBIAN_CNI_PLUGINS: &str = "/usr/lib/cni";
/// Debian's libcni sources, the GOPATH of the offline build.
const DEBIAN_GOPATH_LIBCNI: &str = "/usr/share/gocode/src/github.com/containernetworking/cni";
/// The pod's port behind the host port.
const CONTAINER_PORT: u16 = 80;
const HOST_PORT: u16 = 18080;
/// What the pod's listener answers, so the client knows it reached the pod.
const GREETING: &str = "hello from the pod";

/// `target/<profile>`: the folder of zt-agent and of the plugin binary `zerotier`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .to_owned()
}

/// Whether the tools this test needs beyond the harness's are installed; under CI a missing
/// one fails the test (scripts/test.sh installs them), elsewhere it is skipped.
fn require_tools() -> bool {
    let mut missing = Vec::new();
    if Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        missing.push("golang-go");
    }
    if !Path::new(DEBIAN_GOPATH_LIBCNI).is_dir() {
        missing.push("golang-github-containernetworking-cni-dev");
    }
    if !Path::new(DEBIAN_CNI_PLUGINS).join("portmap").is_file() {
        missing.push("containernetworking-plugins");
    }
    for (tool, package) in [("iptables", "iptables"), ("python3", "python3")] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            missing.push(package);
        }
    }
    let plugin = profile_dir().join("zerotier");
    if !plugin.is_file() {
        panic!(
            "{} does not exist: build it first with `cargo build -p cni-plugin` \
             (scripts/test.sh does)",
            plugin.display()
        );
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("missing Debian packages: {}", missing.join(" "));
    if std::env::var_os("CI").is_some_and(|value| !value.is_empty()) {
        panic!("{message} (scripts/test.sh installs them)");
    }
    eprintln!("SKIPPED ({message})");
    false
}

/// Builds the libcni driver offline (GOPATH mode against Debian's libcni, no downloads) into
/// the target folder, next to the other test binaries.
fn build_driver() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-libcni");
    let output = profile_dir().join("cni-libcni");
    let started = Instant::now();
    let mut command = Command::new("sh");
    command
        .arg(source.join("build.sh"))
        .arg(&output)
        .env("GOCACHE", profile_dir().join("cni-libcni-go-cache"))
        .stdin(Stdio::null());
    let built = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        built.status.success(),
        "building the libcni driver failed ({}): {}{}",
        built.status,
        String::from_utf8_lossy(&built.stderr),
        String::from_utf8_lossy(&built.stdout)
    );
    println!("libcni driver built in {:?}", started.elapsed());
    output
}

/// One host's libcni: the driver run in the host's namespace, as a runtime would run it.
struct Runtime<'a> {
    host: &'a Netns,
    driver: &'a Path,
    conflist: PathBuf,
    cni_path: String,
    cache_dir: PathBuf,
}

impl Runtime<'_> {
    /// `cni-libcni <verb>` for `pod`, with `extra` flags.
    fn run(&self, verb: &str, pod: &Netns, pod_name: &str, extra: &[&str]) -> Output {
        let netns = Path::new("/var/run/netns").join(pod.name());
        let mut command = self.host.command(self.driver);
        command
            .arg(verb)
            .arg("-conflist")
            .arg(&self.conflist)
            .arg("-cni-path")
            .arg(&self.cni_path)
            .arg("-cache-dir")
            .arg(&self.cache_dir)
            .arg("-id")
            .arg(format!("ctr-{pod_name}"))
            .arg("-netns")
            .arg(&netns)
            .arg("-args")
            .arg(format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME={pod_name}"
            ))
            .args(["-timeout", "90s"])
            .args(extra);
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
    }

    /// Runs `verb` and panics with libcni's output unless it succeeds; returns stdout.
    fn expect_ok(&self, verb: &str, pod: &Netns, pod_name: &str, extra: &[&str]) -> String {
        let output = self.run(verb, pod, pod_name, extra);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "libcni {verb} of {pod_name} in {} failed ({}): {}{stdout}",
            self.host.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// The IPv4 address (without prefix length) of the first IP in an ADD result.
fn result_ipv4(result: &Value) -> String {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|cidr| cidr.split('/').next())
        .find(|address| address.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_else(|| panic!("no IPv4 address in the result: {result}"))
        .to_owned()
}

/// The host's own IPv4 address on the network (it joined for host access), from its agent.
fn host_ipv4_on(agent: &Agent<'_>, nwid: &str) -> Option<String> {
    let network = agent.api("GET", &format!("/network/{nwid}"), None).ok()?;
    network["assignedAddresses"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|cidr| cidr.split('/').next())
        .find(|address| address.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
}

/// The `iptables -t nat -S` rules of a namespace.
fn nat_rules(netns: &Netns) -> String {
    let output = netns.run("iptables", ["-t", "nat", "-S"]);
    assert!(
        output.status.success(),
        "iptables -t nat -S in {}: {}",
        netns.name(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A one-connection-at-a-time TCP server in the pod that greets whoever connects.
fn start_listener(pod: &Netns) -> Child {
    let script = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {CONTAINER_PORT}))\n\
         s.listen(8)\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   c.sendall(b'{GREETING}')\n\
         \x20   c.close()\n"
    );
    let mut command = pod.command("python3");
    command
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"))
}

/// Connects from `from` to `address:port` and returns what the server sent, if anything.
fn tcp_fetch(from: &Netns, address: &str, port: u16) -> Option<String> {
    let script = format!(
        "import socket\n\
         c = socket.create_connection(('{address}', {port}), timeout=2)\n\
         c.settimeout(2)\n\
         print(c.recv(100).decode())\n"
    );
    let output = from.run("python3", ["-c", &script]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn libcni_drives_the_plugin_on_two_hosts() {
    if !require_privileged() || !require_tools() {
        return;
    }
    let started = Instant::now();
    let driver = build_driver();

    let lan = Lan::new("cni", 2);
    let work = TempDir::new("cni");
    let homes = make_homes(work.path(), &["root", "host"], lan.ip(0), AGENT_PORT);
    // The root's local API token, written before it starts so that both agents can be given
    // it as controller credentials (the root keeps an existing token).
    let token_file = homes[0].join("authtoken.secret");
    let token = format!("e2ecni{:018}", std::process::id());
    fs::write(&token_file, token).expect("authtoken.secret");
    let controller_url = format!("http://{}:{AGENT_PORT}", lan.ip(0));
    let token_path = token_file.to_str().expect("utf-8 path");
    let credentials = [
        "--controller-url",
        controller_url.as_str(),
        "--controller-token-file",
        token_path,
    ];
    let mut root_args = vec!["--api-bind", "0.0.0.0"];
    root_args.extend_from_slice(&credentials);
    let mut root = Agent::start_with(lan.host(0), &homes[0], AGENT_PORT, &root_args);
    let mut host = Agent::start_with(lan.host(1), &homes[1], AGENT_PORT, &credentials);
    for agent in [&root, &host] {
        agent.expect_online();
    }
    // The network's addresses must not overlap the LAN's 10.213.<subnet>.0/24.
    let zt_subnet = if lan.subnet() == 241 { 242 } else { 241 };
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "cni-libcni", "private": true,
                "v4AssignMode": {"zt": true},
                "ipAssignmentPools": [{
                    "ipRangeStart": format!("10.213.{zt_subnet}.10"),
                    "ipRangeEnd": format!("10.213.{zt_subnet}.250"),
                }],
                "routes": [{"target": format!("10.213.{zt_subnet}.0/24")}],
            })),
        )
        .expect("network");
    let nwid = created["id"].as_str().expect("network id").to_owned();
    println!(
        "network {nwid} (private), agents online after {:?}",
        started.elapsed()
    );

    // Our plugin in a folder of its own (a copy: a concurrent build cannot swap it), then
    // Debian's reference plugins for portmap.
    let bin = work.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    fs::copy(profile_dir().join("zerotier"), bin.join("zerotier")).expect("copy the plugin");
    let cni_path = format!("{}:{DEBIAN_CNI_PLUGINS}", bin.display());
    let runtimes: Vec<Runtime<'_>> = [&root, &host]
        .iter()
        .enumerate()
        .map(|(index, agent)| {
            let conflist = work.path().join(format!("h{index}.conflist"));
            let list = json!({
                "cniVersion": "1.0.0",
                "cniVersions": ["1.0.0", "1.1.0"],
                "name": "zt-e2e",
                "plugins": [
                    {
                        "type": "zerotier",
                        "network": nwid,
                        "agentSocket": agent.home().join("agent.sock"),
                        "pendingDeleteDir": work.path().join(format!("pending-del-{index}")),
                        "attachWait": 40,
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                ],
            });
            fs::write(&conflist, list.to_string()).expect("conflist");
            Runtime {
                host: lan.host(index),
                driver: &driver,
                conflist,
                cni_path: cni_path.clone(),
                cache_dir: work.path().join(format!("cache-{index}")),
            }
        })
        .collect();
    let pods = [Netns::new("pod0"), Netns::new("pod1")];
    let pod_names = ["pod0", "pod1"];
    let mappings = json!([{
        "hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp",
    }])
    .to_string();
    let with_mappings = ["-port-mappings", mappings.as_str()];

    // ADD on both hosts, pod0 with a host port.
    let mut pod_ips = Vec::new();
    for index in 0..2 {
        let extra: &[&str] = if index == 0 { &with_mappings } else { &[] };
        let added = Instant::now();
        let stdout = runtimes[index].expect_ok("add", &pods[index], pod_names[index], extra);
        let result: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("ADD printed no JSON ({error}): {stdout}"));
        assert_eq!(result["cniVersion"], "1.0.0", "{result}");
        let sandbox = Path::new("/var/run/netns").join(pods[index].name());
        assert!(
            result["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["name"] == "eth0" && i["sandbox"] == sandbox.to_str().unwrap_or("")),
            "the result lists eth0 in the pod: {result}"
        );
        let ip = result_ipv4(&result);
        println!(
            "ADD {} on host {index}: {ip} in {:?}",
            pod_names[index],
            added.elapsed()
        );
        pod_ips.push(ip);
    }

    // The pods ping each other over ZeroTier; each host reaches its own pod.
    assert!(
        pods[0].ping_until(&pod_ips[1]),
        "pod0 cannot ping pod1 ({})",
        pod_ips[1]
    );
    assert!(
        pods[1].ping_until(&pod_ips[0]),
        "pod1 cannot ping pod0 ({})",
        pod_ips[0]
    );
    println!("pods ping each other");
    for (index, pod_ip) in pod_ips.iter().enumerate() {
        assert!(
            lan.host(index).ping_until(pod_ip),
            "host {index} cannot ping its pod {pod_ip}"
        );
    }
    println!("each host pings its pod");

    // portmap after our plugin: the DNAT rule, and a real connection from the host to the
    // host port (on the host's own address on the network) that ends in the pod.
    let dnat = format!("--to-destination {}:{CONTAINER_PORT}", pod_ips[0]);
    assert!(
        nat_rules(lan.host(0)).contains(&dnat),
        "no portmap DNAT rule {dnat}:\n{}",
        nat_rules(lan.host(0))
    );
    let host_ip = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        host_ipv4_on(&root, &nwid)
    })
    .expect("the host has an address on the network (host access)");
    let mut listener = start_listener(&pods[0]);
    let greeting = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        tcp_fetch(lan.host(0), &host_ip, HOST_PORT).filter(|text| text == GREETING)
    });
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(
        greeting.is_some(),
        "host 0 got no answer from the pod through {host_ip}:{HOST_PORT}"
    );
    println!("portmap: {host_ip}:{HOST_PORT} on host 0 reaches pod0's listener");

    // STATUS (spec 1.1, exec'd as libcni 1.2+ does): the agent is up and ready.
    runtimes[1].expect_ok("status", &pods[1], pod_names[1], &["-type", "zerotier"]);
    println!("STATUS succeeds");

    // GC (spec 1.1): an attachment the runtime no longer lists goes, the listed one stays.
    let stale = Netns::new("cnistale");
    let host_client = PluginClient::new(host.home().join("agent.sock"));
    let mut stale_attach = AttachRequest::new(
        NetworkId(u64::from_str_radix(&nwid, 16).expect("hex network id")),
        "k8s/e2e/stale".parse().expect("key"),
        "ctr-stale".parse().expect("container id"),
        Some(Path::new("/var/run/netns").join(stale.name())),
        "eth0".parse().expect("ifname"),
    );
    stale_attach.owner = Some("cni".into());
    stale_attach.wait = Some(0);
    // Not ready at once (it still waits for its config); it is there all the same.
    let _ = host_client.attach(&stale_attach);
    let keys = |client: &PluginClient| -> Vec<String> {
        let mut keys: Vec<String> = client
            .endpoints()
            .expect("endpoints")
            .iter()
            .map(|e| e.key.to_string())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&host_client),
        ["k8s/e2e/pod1", "k8s/e2e/stale"],
        "before GC"
    );
    let valid = format!("ctr-{}/eth0", pod_names[1]);
    runtimes[1].expect_ok(
        "gc",
        &pods[1],
        pod_names[1],
        &["-type", "zerotier", "-valid", &valid],
    );
    assert_eq!(keys(&host_client), ["k8s/e2e/pod1"], "GC keeps only pod1");
    println!("GC removes the stale attachment and keeps pod1");

    // CHECK passes; it fails once the pod's interface is deleted by hand.
    for index in 0..2 {
        runtimes[index].expect_ok("check", &pods[index], pod_names[index], &[]);
    }
    println!("CHECK passes on both hosts");
    pods[0].ip(&["link", "del", "eth0"]);
    let check = runtimes[0].run("check", &pods[0], pod_names[0], &[]);
    assert!(
        !check.status.success(),
        "CHECK passed without the pod's interface"
    );
    println!(
        "CHECK without eth0 fails as it should: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );

    // DEL twice on both hosts (pod0's with its port mappings, as runtimes pass them).
    for index in 0..2 {
        let extra: &[&str] = if index == 0 { &with_mappings } else { &[] };
        for attempt in ["first", "second"] {
            let output = runtimes[index].run("del", &pods[index], pod_names[index], extra);
            assert!(
                output.status.success(),
                "{attempt} DEL of {} failed ({}): {}{}",
                pod_names[index],
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
        }
    }
    assert!(
        !nat_rules(lan.host(0)).contains(&dnat),
        "the portmap rule is left behind"
    );
    for (index, agent) in [&root, &host].iter().enumerate() {
        let left = PluginClient::new(agent.home().join("agent.sock"))
            .endpoints()
            .expect("endpoints");
        assert!(
            left.is_empty(),
            "host {index} still has endpoints after DEL: {left:?}"
        );
    }
    println!("DEL twice succeeds on both hosts; no endpoint or DNAT rule left");

    for agent in [&mut root, &mut host] {
        if let Err(exited) = agent.check_running() {
            panic!("{exited}");
        }
    }
    println!("done in {:?}", started.elapsed());
}
