//! Issue 6: the Docker network and IPAM driver (`zt-docker-plugin`) under a real Docker engine
//! (Debian's `docker.io`, 20.10), with real agents.
//!
//! Two hosts in namespaces: the first is root and controller and has a "container" (a
//! namespace) attached through the plugin API; the second is the Docker host: its zt-agent,
//! the plugin, and dockerd, which the test starts inside that host's namespace (`nsenter
//! --net`, so that nothing touches the real host's network) with its own data root, exec
//! root, pid file and socket, no default bridge and no iptables rules, and `--live-restore`.
//! The image is `docker import` of a busybox-static root: no registry.
//!
//! Docker finds a legacy plugin by its socket's name in `/run/docker/plugins/`, whatever
//! daemon asks; a test that used `zerotier.sock` would take the real driver's place on a
//! Docker host and collide with another run. So the test's driver is named
//! `zerotier-e2e-<pid>` (its socket's name): `docker network create -d zerotier-e2e-<pid>
//! --ipam-driver zerotier-e2e-<pid> ...` is exactly what users type with `zerotier`.
//!
//! It shows: the error cases (a missing and a malformed network ID, a member that is not
//! authorized, the agent down) with their messages and nothing created; the network created;
//! two containers on it and the second host's container ping each other over IPv4;
//! `docker network disconnect` and `connect` on a running container, with a stable key
//! (`--driver-opt zerotier.key=...` and `--ip`) that keeps the member's address; dockerd and
//! the plugin restarted, then the Docker host's agent restarted: the running containers
//! still ping; containers and network removed: no tap, endpoint or identity left but the
//! kept key's, which `zt-docker-plugin forget` then removes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_core::vl2::NetworkId;
use serde_json::json;
use zt_agent::plugin_api::{AttachRequest, Endpoint};
use zt_agent::plugin_client::PluginClient;
use zt_e2e::{
    agent_binary, make_homes, require_privileged, wait_until, Agent, Lan, Netns, TempDir,
    AGENT_PORT,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, of the daemon's version.
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "zte2e-busybox:latest";

/// Whether dockerd and busybox are there; under CI their absence fails the test.
fn require_docker() -> bool {
    let missing: Vec<&str> = [DOCKERD, DOCKER, BUSYBOX]
        .into_iter()
        .filter(|tool| !Path::new(tool).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{} not installed (Debian: docker.io, busybox-static)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("this test needs Docker and CI must run it: {reason}");
    }
    eprintln!("SKIPPED (needs Docker; runs in CI): {reason}");
    false
}

/// A binary built next to `zt-agent` (`target/<profile>/NAME`).
fn sibling_binary(name: &str) -> PathBuf {
    let path = agent_binary().with_file_name(name);
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build -p docker-plugin` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// dockerd in the Docker host's namespace, with everything of its own under `dir`.
struct Engine {
    dir: PathBuf,
    netns: String,
    daemon: Option<Child>,
}

impl Engine {
    fn start(dir: &Path, netns: &Netns) -> Engine {
        let mut engine = Engine {
            dir: dir.to_path_buf(),
            netns: netns.name().to_string(),
            daemon: None,
        };
        engine.launch();
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts dockerd and waits for it to answer.
    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log");
        // nsenter, not `ip netns exec`: that one remounts /sys in a mount namespace of its
        // own, which hides the cgroups from dockerd and its sandboxes from the agent.
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(DOCKERD)
            .arg(format!("--data-root={}", self.dir.join("data").display()))
            .arg(format!("--exec-root={}", self.dir.join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                self.dir.join("dockerd.pid").display()
            ))
            .arg(format!("--host=unix://{}", self.socket().display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--live-restore", "--storage-driver=vfs"])
            // dockerd uses the host's containerd when one runs: keep to namespaces of our own.
            .arg(format!(
                "--containerd-namespace=zte2e-{}",
                std::process::id()
            ))
            .arg(format!(
                "--containerd-plugins-namespace=zte2e-plugins-{}",
                std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.daemon = Some(daemon);
        let up = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            self.docker(&["version"]).ok()
        });
        assert!(
            up.is_some(),
            "dockerd did not come up; its log:\n{}",
            self.log()
        );
    }

    /// Stops dockerd (SIGTERM: with live-restore the containers keep running).
    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status();
            let stopped = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
                daemon.try_wait().ok().flatten()
            });
            if stopped.is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the client: Ok(stdout) or Err(stderr).
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(DOCKER)
            .arg(format!("--host=unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
    }

    fn fails(&self, args: &[&str]) -> String {
        match self.docker(args) {
            Ok(out) => panic!("docker {} succeeded: {out}", args.join(" ")),
            Err(e) => e,
        }
    }

    /// Imports a busybox-static root as [`IMAGE`].
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        fs::create_dir_all(root.join("bin")).expect("rootfs");
        fs::copy(BUSYBOX, root.join("bin/busybox")).expect("busybox");
        for tool in ["sh", "ip", "sleep", "ping", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).expect("link");
        }
        let tar = self.dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar of the busybox root");
        self.ok(&["import", tar.to_str().expect("utf-8"), IMAGE]);
    }

    /// The container's address on `network`.
    fn address(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }

    /// Pings `target` from inside `container` until one answers or 20 s have passed.
    fn pings(&self, container: &str, target: &str) -> bool {
        wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
            self.docker(&["exec", container, "ping", "-c", "1", "-W", "1", target])
                .ok()
        })
        .is_some()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            if let Ok(ids) = self.docker(&["ps", "-aq"]) {
                for id in ids.split_whitespace() {
                    let _ = self.docker(&["rm", "-f", id]);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("---- dockerd log ----\n{}\n---- end ----", self.log());
        }
        self.stop();
        // dockerd's mounts (sandboxes, storage) under its roots.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
    }
}

/// zt-docker-plugin serving the test's driver socket.
struct Plugin {
    socket: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Plugin {
    fn start(socket: &Path, agent_socket: &Path, state: &Path, log: &Path) -> Plugin {
        let mut plugin = Plugin {
            socket: socket.to_path_buf(),
            args: vec![
                "--socket".into(),
                socket.display().to_string(),
                "--agent-socket".into(),
                agent_socket.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
                "--attach-wait".into(),
                "20".into(),
                "--log-level".into(),
                "debug".into(),
            ],
            log: log.to_path_buf(),
            child: None,
        };
        plugin.launch();
        plugin
    }

    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("plugin log");
        let child = Command::new(sibling_binary("zt-docker-plugin"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start zt-docker-plugin");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            std::os::unix::net::UnixStream::connect(&self.socket).ok()
        });
        assert!(up.is_some(), "the plugin never listened:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `zt-docker-plugin forget KEY --network NWID` against the running plugin.
    fn forget(&self, key: &str, nwid: &str) -> Result<String, String> {
        let output = Command::new(sibling_binary("zt-docker-plugin"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["forget", "--network", nwid, key])
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- zt-docker-plugin log ----\n{}\n---- end ----",
                self.log()
            );
        }
        self.stop();
        let _ = fs::remove_file(&self.socket);
    }
}

/// The taps of Docker endpoints in the Docker host's namespace (`ztd...`).
fn docker_taps(host: &Netns) -> Vec<String> {
    let out = host.run("ip", ["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with("ztd"))
        .collect()
}

/// The endpoint records in an agent's home (kept identities among them).
fn endpoint_records(home: &Path) -> Vec<String> {
    fs::read_dir(home.join("endpoints.d"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ipv4_of(endpoint: &Endpoint) -> String {
    endpoint
        .ips
        .iter()
        .find(|p| p.address.is_ipv4())
        .map(|p| p.address.to_string())
        .expect("an IPv4 address")
}

fn start_agent<'a>(host: &'a Netns, home: &Path) -> Agent<'a> {
    let agent = Agent::start(host, home, AGENT_PORT);
    agent.expect_online();
    agent
}

#[test]
fn docker_containers_on_a_zerotier_network() {
    if !require_privileged() || !require_docker() {
        return;
    }
    let started = Instant::now();
    let lan = Lan::new("dk", 2);
    let work = TempDir::new("dk");
    let homes = make_homes(work.path(), &["root", "docker"], lan.ip(0), AGENT_PORT);
    let root = start_agent(lan.host(0), &homes[0]);
    let mut docker_agent = Some(start_agent(lan.host(1), &homes[1]));
    let docker_host = lan.host(1);

    // A public network (members need no authorization), and a private one whose members the
    // Docker host's agent cannot authorize (it has no controller credentials).
    let network = |body: serde_json::Value| {
        let created = root
            .api("POST", "/controller/network", Some(&body))
            .expect("network");
        created["id"].as_str().expect("id").to_string()
    };
    let nwid = network(json!({
        "name": "docker", "private": false,
        "v4AssignMode": {"zt": true},
        "ipAssignmentPools": [{"ipRangeStart": "10.213.70.10", "ipRangeEnd": "10.213.70.250"}],
        "routes": [{"target": "10.213.70.0/24"}],
    }));
    let private_nwid = network(json!({
        "name": "private", "private": true,
        "v4AssignMode": {"zt": true},
        "ipAssignmentPools": [{"ipRangeStart": "10.213.71.10", "ipRangeEnd": "10.213.71.250"}],
        "routes": [{"target": "10.213.71.0/24"}],
    }));

    // The second host's container, attached through the plugin API.
    let c3 = Netns::new("c3");
    let mut request = AttachRequest::new(
        NetworkId(u64::from_str_radix(&nwid, 16).expect("hex")),
        "test/c3".parse().expect("key"),
        "c3".parse().expect("container id"),
        Some(Path::new("/var/run/netns").join(c3.name())),
        "eth0".parse().expect("ifname"),
    );
    request.wait = Some(40);
    let e3 = PluginClient::new(homes[0].join("agent.sock"))
        .attach(&request)
        .unwrap_or_else(|e| panic!("attach c3: {e}"));
    let ip3 = ipv4_of(&e3);
    println!("second host's container c3: {} {ip3}", e3.address);

    // dockerd in the Docker host's namespace, and the plugin.
    let docker_dir = work.path().join("docker");
    fs::create_dir_all(&docker_dir).expect("docker dir");
    let mut engine = Engine::start(&docker_dir, docker_host);
    engine.import_busybox();
    let driver = format!("zerotier-e2e-{}", std::process::id());
    let agent_socket = homes[1].join("agent.sock");
    let mut plugin = Plugin::start(
        &PathBuf::from(format!("/run/docker/plugins/{driver}.sock")),
        &agent_socket,
        &work.path().join("plugin-state"),
        &work.path().join("plugin.log"),
    );
    println!(
        "dockerd and the plugin ({driver}) up after {:?}",
        started.elapsed()
    );

    let create = |engine: &Engine, name: &str, options: &[&str]| -> Result<String, String> {
        let mut args = vec!["network", "create", "-d", &driver, "--ipam-driver", &driver];
        args.extend_from_slice(options);
        args.push(name);
        engine.docker(&args)
    };
    let networks = |engine: &Engine| engine.ok(&["network", "ls", "--format", "{{.Name}}"]);

    // Error cases at creation: nothing is created.
    let missing = create(&engine, "ztbad", &[]).expect_err("no network ID");
    assert!(missing.contains("zerotier.network is missing"), "{missing}");
    let malformed = create(
        &engine,
        "ztbad",
        &["-o", "zerotier.network=8056c2e21c00001"],
    )
    .expect_err("a malformed network ID");
    assert!(
        malformed.contains("is not a ZeroTier network ID"),
        "{malformed}"
    );
    assert!(!networks(&engine).contains("ztbad"), "nothing created");
    println!("missing network ID: {missing}\nmalformed network ID: {malformed}");

    // The network (with the ZeroTier pool's subnet, for `--ip`), two containers, pings.
    create(
        &engine,
        "ztnet",
        &[
            "--subnet",
            "10.213.70.0/24",
            "-o",
            &format!("zerotier.network={nwid}"),
        ],
    )
    .unwrap_or_else(|e| panic!("network create: {e}"));
    for name in ["a1", "a2"] {
        engine.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "ztnet",
            IMAGE,
            "sleep",
            "100000",
        ]);
    }
    let (ip1, ip2) = (engine.address("a1", "ztnet"), engine.address("a2", "ztnet"));
    println!("a1 {ip1}, a2 {ip2}");
    let all_ping = |engine: &Engine, ip1: &str, ip2: &str, when: &str| {
        for (from, to) in [("a1", ip2), ("a2", ip1), ("a1", &ip3), ("a2", &ip3)] {
            assert!(engine.pings(from, to), "{when}: {from} cannot ping {to}");
        }
        for to in [ip1, ip2] {
            assert!(c3.ping_until(to), "{when}: c3 cannot ping {to}");
        }
        println!("{when}: a1, a2 and c3 ping each other");
    };
    all_ping(&engine, &ip1, &ip2, "started");

    // disconnect and connect on a running container, with a stable key the second time.
    engine.ok(&["network", "disconnect", "ztnet", "a2"]);
    assert!(
        engine
            .docker(&["exec", "a2", "ping", "-c", "1", "-W", "1", &ip1])
            .is_err(),
        "a2 reaches a1 after disconnect"
    );
    engine.ok(&[
        "network",
        "connect",
        "--driver-opt",
        "zerotier.key=web",
        "ztnet",
        "a2",
    ]);
    let ip2 = engine.address("a2", "ztnet");
    assert!(engine.pings("a2", &ip1), "a2 cannot ping a1 after connect");
    // The key keeps the member: disconnected and connected again with its address.
    engine.ok(&["network", "disconnect", "ztnet", "a2"]);
    engine.ok(&[
        "network",
        "connect",
        "--driver-opt",
        "zerotier.key=web",
        "--ip",
        &ip2,
        "ztnet",
        "a2",
    ]);
    assert_eq!(engine.address("a2", "ztnet"), ip2, "the kept key's address");
    all_ping(&engine, &ip1, &ip2, "after disconnect/connect with key web");

    // dockerd and the plugin restart (live-restore keeps the containers running).
    plugin.stop();
    engine.stop();
    engine.launch();
    plugin.launch();
    let running = engine.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(
        running.contains("a1") && running.contains("a2"),
        "{running}"
    );
    all_ping(&engine, &ip1, &ip2, "after dockerd and plugin restarts");
    // The Docker host's agent restarts: it takes the containers' taps over again.
    drop(docker_agent.take());
    docker_agent = Some(start_agent(docker_host, &homes[1]));
    all_ping(&engine, &ip1, &ip2, "after the agent restarted");

    // A member that is not authorized: the run fails naming it; the container never starts.
    create(
        &engine,
        "ztpriv",
        &["-o", &format!("zerotier.network={private_nwid}")],
    )
    .unwrap_or_else(|e| panic!("network create (private): {e}"));
    let refused = engine.fails(&[
        "run",
        "-d",
        "--name",
        "p1",
        "--network",
        "ztpriv",
        IMAGE,
        "sleep",
        "100000",
    ]);
    assert!(
        refused.contains("not authorized") && refused.contains("authorize"),
        "{refused}"
    );
    println!("unauthorized member: {refused}");
    let state = engine.ok(&["inspect", "-f", "{{.State.Status}}", "p1"]);
    assert_eq!(state, "created", "the refused container never ran");
    engine.ok(&["rm", "-f", "p1"]);
    engine.ok(&["network", "rm", "ztpriv"]);

    // Remove everything: no taps, endpoints or identities left but the kept key's.
    engine.ok(&["rm", "-f", "a1", "a2"]);
    engine.ok(&["network", "rm", "ztnet"]);
    let client = PluginClient::new(&agent_socket);
    let clean = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let endpoints = client.endpoints().ok()?;
        (endpoints.is_empty() && docker_taps(docker_host).is_empty()).then_some(())
    });
    assert!(
        clean.is_some(),
        "left behind: endpoints {:?}, taps {:?}",
        client.endpoints(),
        docker_taps(docker_host)
    );
    let records = endpoint_records(&homes[1]);
    assert_eq!(
        records.len(),
        1,
        "only the kept key's identity: {records:?}"
    );
    assert!(!records[0].contains("\"attach\""), "{records:?}");
    let forgot = plugin
        .forget("web", &nwid)
        .unwrap_or_else(|e| panic!("forget web: {e}"));
    println!("forget web: {}", forgot.trim());
    assert!(
        endpoint_records(&homes[1]).is_empty(),
        "the forgotten key's identity is gone"
    );
    println!("removed: no taps, endpoints or identities left");

    // The agent down: creating a network says so, and nothing is created.
    drop(docker_agent.take());
    let down = create(
        &engine,
        "ztdown",
        &["-o", &format!("zerotier.network={nwid}")],
    )
    .expect_err("agent down");
    assert!(down.contains("cannot reach zt-agent"), "{down}");
    assert!(!networks(&engine).contains("ztdown"), "nothing created");
    println!("agent down: {down}");

    drop(plugin);
    drop(engine);
    println!("done in {:?}", started.elapsed());
}
