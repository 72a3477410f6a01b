//! Docker's side of the protocol, against a real Docker engine (Debian's `docker.io`), with a
//! stand-in agent: the agent's real plugin API server over a manager that makes a bare
//! persistent tap (with the member's MAC) where the agent would make its own. It checks what the unit tests
//! cannot: that dockerd accepts the pools, the addresses, the MAC and the routes, moves the
//! link into the container and cleans up. No traffic flows: nobody reads the taps.
//!
//! Not built for now (work in progress toward the Docker issue's CI test): copy it to
//! `docker-plugin/tests/` and run, as root with `dockerd` and `busybox` (busybox-static)
//! installed, `cargo test -p docker-plugin --test docker_smoke -- --ignored`. dockerd runs in a network
//! namespace the test makes, with its own data and exec roots; the plugin's socket is
//! `/run/docker/plugins/zerotier-smoke.sock` (Docker looks only there), so the driver is
//! named `zerotier-smoke`. No registry is used: the image is `docker import` of a busybox
//! root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docker_plugin::agent::UnixAgent;
use docker_plugin::driver::{Driver, DriverConfig};
use docker_plugin::server;
use docker_plugin::state::StateStore;
use node_core::vl2::Mac;
use node_core::Address;
use zt_agent::plugin_api::{
    self, ApiError, AttachRequest, DetachResponse, Endpoint, EndpointKey, EndpointManager,
    EndpointRef, EndpointState, ErrorCode, GcRequest, GcResponse, ManagerFuture, Route, Status,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, of the same version as the daemon.
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/usr/bin/busybox";
const DRIVER: &str = "zerotier-smoke";
const NWID: &str = "8056c2e21c000001";

/// Makes and removes persistent taps in dockerd's namespace, with nobody reading them.
struct DummyLinks {
    netns: String,
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    next: Mutex<u64>,
}

fn ip(netns: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl EndpointManager for DummyLinks {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async move {
            if let Some(existing) = self.endpoints.lock().unwrap().get(&request.key) {
                return Ok(existing.clone());
            }
            let index = {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                *next
            };
            let address = Address::from_u64(0xa1_0000_0000 + index);
            let subnet = 16 + (request.network.0 & 0xff);
            let mac = Mac::from_address(address, request.network);
            let name = request.if_name.as_str();
            ip(&self.netns, &["tuntap", "add", "dev", name, "mode", "tap"])
                .and_then(|()| {
                    ip(
                        &self.netns,
                        &["link", "set", name, "address", &mac.to_string()],
                    )
                })
                .and_then(|()| ip(&self.netns, &["link", "set", name, "mtu", "2800", "up"]))
                .map_err(ApiError::internal)?;
            let endpoint = Endpoint {
                key: request.key.clone(),
                owner: request.owner.clone(),
                network: request.network,
                container_id: request.container_id,
                netns: None,
                if_name: request.if_name,
                mac,
                address,
                // Each network its own subnet and routed range: 10.147.(16+n).0/24 and
                // 10.(9+n).0.0/16 via .1, for network ...0n.
                ips: vec![format!("10.147.{subnet}.{}/24", 10 + index)
                    .parse()
                    .unwrap()],
                routes: vec![
                    Route {
                        dst: format!("10.147.{subnet}.0/24").parse().unwrap(),
                        gateway: None,
                    },
                    Route {
                        dst: format!("10.{}.0.0/16", subnet - 7).parse().unwrap(),
                        gateway: Some(format!("10.147.{subnet}.1").parse().unwrap()),
                    },
                ],
                gateway: None,
                mtu: 2800,
                state: EndpointState::Ready,
                dns: None,
                counters: Default::default(),
            };
            self.endpoints
                .lock()
                .unwrap()
                .insert(request.key, endpoint.clone());
            Ok(endpoint)
        })
    }

    fn detach(&self, request: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        Box::pin(async move {
            let gone: Vec<Endpoint> = {
                let mut endpoints = self.endpoints.lock().unwrap();
                let gone = endpoints
                    .values()
                    .filter(|e| request.matches(e))
                    .cloned()
                    .collect();
                endpoints.retain(|_, e| !request.matches(e));
                gone
            };
            for endpoint in &gone {
                // Back in dockerd's namespace under its own name after Leave.
                let name = endpoint.if_name.as_str();
                let _ = ip(&self.netns, &["tuntap", "del", "dev", name, "mode", "tap"]);
            }
            Ok(DetachResponse {
                detached: !gone.is_empty(),
            })
        })
    }

    fn check(&self, _request: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(async { Err(ApiError::new(ErrorCode::NotFound, "no such endpoint")) })
    }

    fn status(&self) -> ManagerFuture<'_, Status> {
        Box::pin(async {
            Status {
                ready: true,
                address: None,
                version: "smoke".into(),
                endpoints: 0,
                reason: None,
            }
        })
    }

    fn gc(&self, _request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        Box::pin(async { Ok(GcResponse::default()) })
    }

    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
        Box::pin(async { Ok(self.endpoints.lock().unwrap().values().cloned().collect()) })
    }
}

/// dockerd in its namespace, and everything to remove afterwards.
struct Engine {
    netns: String,
    dir: PathBuf,
    daemon: Child,
}

impl Engine {
    fn start(dir: &Path, netns: &str) -> Self {
        let status = Command::new("ip")
            .args(["netns", "add", netns])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {netns}");
        ip(netns, &["link", "set", "lo", "up"]).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroups.
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(DOCKERD)
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .arg(format!(
                "--host=unix://{}",
                dir.join("docker.sock").display()
            ))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--live-restore", "--storage-driver=vfs"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let engine = Self {
            netns: netns.to_string(),
            dir: dir.to_path_buf(),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while engine.docker(&["version"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up; see {}",
                dir.join("dockerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        engine
    }

    /// Runs the client; Ok(stdout) or Err(stderr).
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(DOCKER)
            .arg(format!(
                "--host=unix://{}",
                self.dir.join("docker.sock").display()
            ))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
    }

    /// Imports a busybox root as `smoke:latest`.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for tool in ["sh", "ip", "sleep", "cat", "ping"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.ok(&["import", tar.to_str().unwrap(), "smoke:latest"]);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "c1", "c2"]);
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // dockerd's namespace mounts under its exec root.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn usable() -> Result<(), String> {
    if !nix_is_root() {
        return Err("not root".into());
    }
    for tool in [DOCKERD, DOCKER, BUSYBOX] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, dockerd and busybox; run with --ignored"]
async fn docker_engine_accepts_the_driver() {
    if let Err(why) = usable() {
        eprintln!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("zt-docker-smoke-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let netns = format!("ztdsmoke{pid}");
    let engine = tokio::task::spawn_blocking({
        let (dir, netns) = (dir.clone(), netns.clone());
        move || Engine::start(&dir, &netns)
    })
    .await
    .unwrap();

    let manager = Arc::new(DummyLinks {
        netns: netns.clone(),
        endpoints: Mutex::new(HashMap::new()),
        next: Mutex::new(0),
    });
    let agent_socket = dir.join("agent.sock");
    let _agent = plugin_api::spawn(&agent_socket, manager.clone())
        .await
        .unwrap();
    let plugin_socket = PathBuf::from(format!("/run/docker/plugins/{DRIVER}.sock"));
    let driver = Driver::new(
        Arc::new(UnixAgent::new(&agent_socket)),
        StateStore::new(dir.join("plugin-state")),
        DriverConfig::default(),
    )
    .unwrap();
    let _plugin = server::spawn(&plugin_socket, Arc::new(driver)).unwrap();
    let _socket_file = RemoveOnDrop(plugin_socket);

    let engine = Arc::new(engine);
    let run = |args: Vec<&'static str>| {
        let engine = engine.clone();
        async move {
            tokio::task::spawn_blocking(move || engine.docker(&args))
                .await
                .unwrap()
        }
    };
    {
        tokio::task::spawn_blocking({
            let engine = engine.clone();
            move || engine.import_busybox()
        })
        .await
        .unwrap();
        let error = run(vec![
            "network",
            "create",
            "-d",
            DRIVER,
            "--ipam-driver",
            DRIVER,
            "bad",
        ])
        .await
        .unwrap_err();
        assert!(error.contains("zerotier.network is missing"), "{error}");
        run(vec![
            "network",
            "create",
            "-d",
            DRIVER,
            "--ipam-driver",
            DRIVER,
            "-o",
            "zerotier.network=8056c2e21c000001",
            "zt",
        ])
        .await
        .unwrap();
        run(vec![
            "run",
            "-d",
            "--name",
            "c1",
            "--network",
            "zt",
            "smoke",
            "sleep",
            "1000",
        ])
        .await
        .unwrap();
        let addresses = run(vec!["exec", "c1", "ip", "addr", "show", "eth0"])
            .await
            .unwrap();
        assert!(addresses.contains("inet 10.147.17.11/24"), "{addresses}");
        let mac = Mac::from_address(Address::from_u64(0xa1_0000_0001), NWID.parse().unwrap());
        assert!(addresses.contains(&mac.to_string()), "{addresses}");
        assert!(addresses.contains("mtu 2800"), "{addresses}");
        let routes = run(vec!["exec", "c1", "ip", "route"]).await.unwrap();
        assert!(
            routes.contains("10.10.0.0/16 via 10.147.17.1 dev eth0"),
            "{routes}"
        );
        // connect and disconnect on a running container (on another ZeroTier network). Its
        // interface numbers depend on docker_gwbridge's, which Docker adds for outbound access.
        run(vec![
            "network",
            "create",
            "-d",
            DRIVER,
            "--ipam-driver",
            DRIVER,
            "-o",
            "network=8056c2e21c000002",
            "zt2",
        ])
        .await
        .unwrap();
        run(vec![
            "run",
            "-d",
            "--name",
            "c2",
            "--network",
            "zt2",
            "smoke",
            "sleep",
            "1000",
        ])
        .await
        .unwrap();
        run(vec!["network", "connect", "zt", "c2"]).await.unwrap();
        let addresses = run(vec!["exec", "c2", "ip", "addr"]).await.unwrap();
        assert!(addresses.contains("inet 10.147.18.12/24"), "{addresses}");
        assert!(addresses.contains("inet 10.147.17.13/24"), "{addresses}");
        let routes = run(vec!["exec", "c2", "ip", "route"]).await.unwrap();
        assert!(
            routes.contains("10.10.0.0/16 via 10.147.17.1 dev eth"),
            "{routes}"
        );
        assert!(
            routes.contains("10.11.0.0/16 via 10.147.18.1 dev eth0"),
            "{routes}"
        );
        run(vec!["network", "disconnect", "zt", "c2"])
            .await
            .unwrap();
        assert_eq!(manager.endpoints.lock().unwrap().len(), 2);
        let addresses = run(vec!["exec", "c2", "ip", "addr"]).await.unwrap();
        assert!(!addresses.contains("10.147.17."), "{addresses}");
        run(vec!["rm", "-f", "c1", "c2"]).await.unwrap();
        assert!(manager.endpoints.lock().unwrap().is_empty());
        // The taps went with the endpoints.
        let links = Command::new("ip")
            .args(["-n", &netns, "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        assert!(!links.contains("ztd"), "{links}");
        run(vec!["network", "rm", "zt", "zt2"]).await.unwrap();
    }
    // The engine, the plugin and its socket file go with their guards, also on a panic.
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
