//! Issue 5: the `zerotier` CNI plugin driven by podman (Debian's podman 4, with its CNI
//! network backend) on two hosts in network namespaces, the first also root and controller
//! of a private network whose members the agents authorize with the controller's
//! credentials.
//!
//! Each host has a podman of its own, isolated from the machine's: its own storage, run
//! and temporary folders, network config folder (holding only our conflist, whose plugin
//! talks to that host's agent), `containers.conf` (CNI backend, plugin folders = our
//! `zerotier` plus Debian's `/usr/lib/cni`, file locks and events) and an image imported
//! from a tar of a busybox-static root (no registry). Podman runs in the host's network
//! namespace (`nsenter --net`: see [`Netns::net_only_command`] for why not `ip netns exec`).
//! - `podman run -d --network <ours>` on host 0: the container gets a ZeroTier address, the
//!   one host 0's agent lists for it, and host 0 reaches it;
//! - `podman run --rm --network <ours>` on host 1 gets an address of its own and pings the
//!   first container over ZeroTier; its removal (podman's CNI DEL) takes its endpoint away;
//! - `podman rm -f` of the first container does the same on host 0, and the namespace
//!   podman made for it is gone.
//!
//! Two of podman's files stay in the machine's folders, as podman 4 has no option to move
//! them: its libcni's result cache (`/var/lib/cni/results/<network>-<container>-eth0`,
//! removed with each container) and `podman import`'s blob-info cache
//! (`/var/lib/containers/cache`). Nothing else of podman's (locks, runc state, events,
//! namespaces) is outside the test's folder, and no network outside the test's namespaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use zt_agent::plugin_api::Endpoint;
use zt_agent::plugin_client::PluginClient;
use zt_e2e::{make_homes, require_privileged, Agent, Lan, Netns, TempDir, AGENT_PORT};

/// Debian's reference plugins.
const DEBIAN_CNI_PLUGINS: &str = "/usr/lib/cni";
/// busybox-static's binary, the whole userland of the test image.
const BUSYBOX: &str = "/bin/busybox";
/// The applets the containers use, as links to busybox in the image.
const APPLETS: [&str; 5] = ["sh", "ping", "ip", "sleep", "cat"];
const IMAGE: &str = "localhost/zt-e2e-busybox:latest";
/// The podman network (the conflist's `name`).
const NETWORK_NAME: &str = "zt-e2e";
/// Soft and hard limit of the containers' open files and processes: podman's default as
/// root (1048576 files) is above the hard limit of many CI machines, and runc then fails.
const CONTAINER_ULIMIT: u64 = 4096;

/// `target/<profile>`: the folder of zt-agent and of the plugin binary `zerotier`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .to_owned()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an ELF file is statically linked (no `PT_INTERP` program header): a dynamic
/// busybox would not run in an image that holds nothing else.
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only (the machines this runs on).
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(table), Some(entry_size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(count)).all(|index| {
        let at = table as usize + index * usize::from(entry_size);
        bytes
            .get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
    })
}

/// Whether the tools this test needs beyond the harness's are installed; under CI a missing
/// one fails the test (scripts/test.sh installs them), elsewhere it is skipped.
fn require_tools() -> bool {
    let mut missing = Vec::new();
    if !succeeds("podman", &["--version"]) {
        missing.push("podman");
    }
    if !is_static_elf(Path::new(BUSYBOX)) {
        missing.push("busybox-static");
    }
    if !succeeds("nsenter", &["--version"]) {
        missing.push("util-linux");
    }
    if !succeeds("tar", &["--version"]) {
        missing.push("tar");
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

/// The hard limit named `name` in /proc/self/limits ("Max open files", ...), if finite.
fn hard_limit(name: &str) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
}

/// One host's podman, with everything of its own under `dir`.
struct Podman<'a> {
    host: &'a Netns,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// Writes the configuration: `containers.conf`, `storage.conf`, an empty
    /// `registries.conf`, and `net.d/` with `conflist` as the only network.
    fn new(host: &'a Netns, dir: PathBuf, plugin_dir: &Path, conflist: &Value) -> Podman<'a> {
        for sub in [
            "root",
            "run",
            "runc",
            "tmp",
            "libpod-tmp",
            "volumes",
            "net.d",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("podman folder");
        }
        let ulimit = |name: &str| {
            hard_limit(name).map_or(CONTAINER_ULIMIT, |hard| hard.min(CONTAINER_ULIMIT))
        };
        let files = ulimit("Max open files");
        let processes = ulimit("Max processes");
        let containers_conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile={files}:{files}\", \"nproc={processes}:{processes}\"]\n\
             \n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [{plugins:?}, {DEBIAN_CNI_PLUGINS:?}]\n\
             network_config_dir = {net_d:?}\n\
             \n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = {events:?}\n\
             lock_type = \"file\"\n\
             tmp_dir = {libpod_tmp:?}\n\
             volume_path = {volumes:?}\n",
            plugins = plugin_dir.display().to_string(),
            net_d = dir.join("net.d").display().to_string(),
            events = dir.join("events.log").display().to_string(),
            libpod_tmp = dir.join("libpod-tmp").display().to_string(),
            volumes = dir.join("volumes").display().to_string(),
        );
        fs::write(dir.join("containers.conf"), containers_conf).expect("containers.conf");
        let storage_conf = format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = {:?}\ngraphroot = {:?}\n",
            dir.join("run").display().to_string(),
            dir.join("root").display().to_string(),
        );
        fs::write(dir.join("storage.conf"), storage_conf).expect("storage.conf");
        fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .expect("registries.conf");
        fs::write(
            dir.join("net.d").join(format!("{NETWORK_NAME}.conflist")),
            conflist.to_string(),
        )
        .expect("conflist");
        Podman { host, dir }
    }

    /// `podman <args>` in the host's network namespace, with this podman's configuration.
    fn command(&self, args: &[&str]) -> Command {
        let path = |sub: &str| self.dir.join(sub);
        let mut command = self.host.net_only_command("podman");
        command
            .env("CONTAINERS_CONF", path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", path("registries.conf"))
            .env("TMPDIR", path("tmp"))
            .arg("--root")
            .arg(path("root"))
            .arg("--runroot")
            .arg(path("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .arg("--network-config-dir")
            .arg(path("net.d"))
            .arg("--tmpdir")
            .arg(path("libpod-tmp"))
            .arg("--volumepath")
            .arg(path("volumes"))
            // runc's container state, by default in the machine's /run/runc.
            .arg("--runtime-flag")
            .arg(format!("root={}", path("runc").display()))
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
    }

    /// Runs `podman args`, panics with its output unless it succeeds; returns stdout.
    fn expect_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "podman {} in {} failed ({}): {}{stdout}",
            args.join(" "),
            self.host.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Containers left by a failed test: removed while the agents still run, so that
        // podman's CNI DEL reaches them, and before the namespaces go.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}

/// A root folder with busybox and links to the applets, as a tar for `podman import`.
fn make_image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("rootfs/bin");
    for empty in ["etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(empty)).expect("rootfs folder");
    }
    fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let tar = dir.join("rootfs.tar");
    let output = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        output.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    tar
}

/// The endpoints an agent lists on its plugin API.
fn endpoints(agent: &Agent<'_>) -> Vec<Endpoint> {
    PluginClient::new(agent.home().join("agent.sock"))
        .endpoints()
        .expect("the agent lists its endpoints")
}

/// The IPv4 address (without prefix length) of an endpoint.
fn endpoint_ipv4(endpoint: &Endpoint) -> Option<String> {
    endpoint
        .ips
        .iter()
        .map(|prefix| prefix.address)
        .find(std::net::IpAddr::is_ipv4)
        .map(|address| address.to_string())
}

/// Whether `address` is in `10.213.<subnet>.0/24`.
fn in_subnet(address: &str, subnet: u8) -> bool {
    address.starts_with(&format!("10.213.{subnet}."))
}

#[test]
fn podman_runs_containers_on_the_plugin() {
    if !require_privileged() || !require_tools() {
        return;
    }
    let started = Instant::now();

    let lan = Lan::new("pm", 2);
    let work = TempDir::new("podman");
    let homes = make_homes(work.path(), &["root", "host"], lan.ip(0), AGENT_PORT);
    // The root's local API token, written before it starts so that both agents can be given
    // it as controller credentials (the root keeps an existing token).
    let token_file = homes[0].join("authtoken.secret");
    fs::write(&token_file, format!("e2epm{:019}", std::process::id())).expect("token");
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
                "name": "cni-podman", "private": true,
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

    // Our plugin in a folder of its own (a copy: a concurrent build cannot swap it).
    let plugin_dir = work.path().join("bin");
    fs::create_dir_all(&plugin_dir).expect("bin");
    fs::copy(profile_dir().join("zerotier"), plugin_dir.join("zerotier")).expect("copy the plugin");
    let image_tar = make_image_tar(work.path());
    let podmans: Vec<Podman<'_>> = [&root, &host]
        .iter()
        .enumerate()
        .map(|(index, agent)| {
            let conflist = json!({
                "cniVersion": "1.0.0",
                "name": NETWORK_NAME,
                "plugins": [{
                    "type": "zerotier",
                    "network": nwid,
                    "agentSocket": agent.home().join("agent.sock"),
                    // Where the agent replays deletes from when it starts.
                    "pendingDeleteDir": agent.home().join("cni-pending-del"),
                    "attachWait": 40,
                }],
            });
            let podman = Podman::new(
                lan.host(index),
                work.path().join(format!("podman-{index}")),
                &plugin_dir,
                &conflist,
            );
            podman.expect_ok(&["import", &image_tar.display().to_string(), IMAGE]);
            let backend = podman.expect_ok(&["info", "--format", "{{.Host.NetworkBackend}}"]);
            assert_eq!(
                backend.trim(),
                "cni",
                "podman on host {index} does not use CNI"
            );
            let networks = podman.expect_ok(&["network", "ls", "--format", "{{.Name}}"]);
            assert!(
                networks.lines().any(|name| name == NETWORK_NAME),
                "podman on host {index} does not list {NETWORK_NAME}: {networks}"
            );
            podman
        })
        .collect();
    println!("podman set up on both hosts after {:?}", started.elapsed());

    // Host 0: a long-running container on our network.
    let run_started = Instant::now();
    let container = podmans[0]
        .expect_ok(&[
            "run",
            "--detach",
            "--name",
            "ztc0",
            "--network",
            NETWORK_NAME,
            "--cap-add",
            "NET_RAW",
            IMAGE,
            "sleep",
            "600",
        ])
        .trim()
        .to_owned();
    let inspected: Value = serde_json::from_str(&podmans[0].expect_ok(&["inspect", "ztc0"]))
        .expect("podman inspect prints JSON");
    let settings = &inspected[0]["NetworkSettings"];
    let container_ip = settings["Networks"][NETWORK_NAME]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("podman lists no address on {NETWORK_NAME}: {settings}"))
        .to_owned();
    let sandbox = settings["SandboxKey"]
        .as_str()
        .unwrap_or_else(|| panic!("podman names no network namespace: {settings}"))
        .to_owned();
    println!(
        "podman run on host 0: container {} has {container_ip} in {sandbox} after {:?}",
        &container[..12.min(container.len())],
        run_started.elapsed()
    );
    assert!(
        in_subnet(&container_ip, zt_subnet),
        "{container_ip} is not a ZeroTier address of 10.213.{zt_subnet}.0/24"
    );
    let listed = endpoints(&root);
    assert_eq!(listed.len(), 1, "host 0's agent lists {listed:?}");
    assert_eq!(
        listed[0].container_id.as_str(),
        container,
        "the endpoint is podman's container"
    );
    assert_eq!(
        endpoint_ipv4(&listed[0]).as_deref(),
        Some(container_ip.as_str()),
        "the agent's endpoint has the address podman shows"
    );
    println!("host 0's agent: endpoint {} for it", listed[0].key);
    // The address is on the container's eth0, as the container itself sees it.
    let addresses = podmans[0].expect_ok(&["exec", "ztc0", "ip", "-4", "-o", "addr", "show"]);
    assert!(
        addresses.contains(&format!("eth0    inet {container_ip}/"))
            || addresses
                .lines()
                .any(|line| line.contains("eth0") && line.contains(&container_ip)),
        "the container's eth0 does not have {container_ip}:\n{addresses}"
    );

    // Host 0 itself reaches the container (host access, as for kubelet's probes).
    assert!(
        lan.host(0).ping_until(&container_ip),
        "host 0 cannot ping its container {container_ip}"
    );
    println!("host 0 pings its container");

    // Host 1: `podman run --rm` gets an address and pings the first container over ZeroTier
    // (retrying for a while: paths and ARP are set up with the first packets).
    let script = format!(
        "ip -4 -o addr show eth0 && i=0 && while [ $i -lt 30 ]; do \
         ping -c 1 -W 1 {container_ip} && exit 0; i=$((i + 1)); done; exit 1"
    );
    let run_started = Instant::now();
    let output = podmans[1].run(&[
        "run",
        "--rm",
        "--name",
        "ztc1",
        "--network",
        NETWORK_NAME,
        "--cap-add",
        "NET_RAW",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the container on host 1 cannot ping {container_ip} ({}): {}{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let own_ip = stdout
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        in_subnet(&own_ip, zt_subnet) && own_ip != container_ip,
        "the container on host 1 has no ZeroTier address of its own: {stdout}"
    );
    println!(
        "podman run --rm on host 1: {own_ip} pings {container_ip} ({:?})",
        run_started.elapsed()
    );
    // Its removal ran CNI DEL: host 1's agent has no endpoint left.
    let left = endpoints(&host);
    assert!(
        left.is_empty(),
        "host 1's agent still has endpoints after podman run --rm: {left:?}"
    );

    // Host 0: removing the container takes its endpoint and namespace away.
    podmans[0].expect_ok(&["rm", "--force", "--time", "0", "ztc0"]);
    let left = endpoints(&root);
    assert!(
        left.is_empty(),
        "host 0's agent still has endpoints after podman rm: {left:?}"
    );
    assert!(
        !Path::new(&sandbox).exists(),
        "podman's namespace {sandbox} is left behind"
    );
    println!("podman rm: endpoints gone on both hosts");

    for agent in [&mut root, &mut host] {
        if let Err(exited) = agent.check_running() {
            panic!("{exited}");
        }
    }
    println!("done in {:?}", started.elapsed());
}
