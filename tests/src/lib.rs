//! Harness for the end-to-end tests: real `zt-agent` processes in network namespaces that the
//! tests create themselves.
//!
//! Everything a test builds here is torn down by `Drop`: namespaces ([`Netns`]) are deleted
//! after the processes inside them are killed, agents ([`Agent`]) are killed, temporary
//! folders ([`TempDir`]) are removed. Traffic stays inside the namespaces: a [`Lan`] is a
//! bridge in a namespace of its own, each host namespace is attached to it with a veth pair,
//! and none of them has a default route. Addresses come from `10.213.<k>.0/24`, which exists
//! only inside these namespaces.
//!
//! Privileged tests start with [`require_privileged`]: without root and `ip netns` they are
//! skipped with a message, except under CI (`CI` set), where they fail.
//!
//! The `zt-agent` binary is found next to the test executable (`target/<profile>/zt-agent`,
//! see [`agent_binary`]). `cargo test` does not build it for this crate, so build it first:
//! `cargo build -p zt-agent` (`scripts/test.sh` does), or point `ZT_AGENT_BIN` at one.

use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every namespace and temporary folder the harness makes starts with this, followed by the
/// pid of the test process, so leftovers of a killed run can be recognised and removed.
const NAME_PREFIX: &str = "zte2e";

/// The UDP port every test agent listens on (ZeroTier's default; each agent has its own
/// namespace, so they never collide).
pub const AGENT_PORT: u16 = 9993;

/// A number unique within this test process, for names.
fn next_sequence() -> usize {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// Checks that this process may create network namespaces (root and a working `ip netns`).
///
/// Returns true when it can. Otherwise, under CI (the `CI` variable set and not empty) it
/// panics, so that a privileged test cannot pass in CI by skipping; elsewhere it prints
/// "SKIPPED ..." to stderr and returns false, and the test should return at once.
///
/// The first call also removes namespaces left behind by earlier test runs that were killed.
pub fn require_privileged() -> bool {
    static PRIVILEGE: OnceLock<Result<(), String>> = OnceLock::new();
    let privilege = PRIVILEGE.get_or_init(|| {
        let result = probe_privilege();
        if result.is_ok() {
            remove_stale_namespaces();
        }
        result
    });
    match privilege {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var_os("CI").is_some_and(|value| !value.is_empty()) {
                panic!("this test needs root and network namespaces, and CI must run it: {reason}");
            }
            eprintln!("SKIPPED (needs root and network namespaces; runs in CI): {reason}");
            false
        }
    }
}

fn probe_privilege() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|error| format!("cannot read /proc/self/status: {error}"))?;
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if effective_uid != "0" {
        return Err(format!("not root (effective uid {effective_uid})"));
    }
    let probe = format!("{NAME_PREFIX}-{}-probe", std::process::id());
    run_command("ip", ["netns", "add", probe.as_str()])
        .map_err(|error| format!("`ip netns add` does not work: {error}"))?;
    run_command("ip", ["netns", "del", probe.as_str()])
        .map_err(|error| format!("`ip netns del` does not work: {error}"))?;
    Ok(())
}

/// Deletes namespaces named `zte2e-<pid>-...` whose test process no longer exists.
fn remove_stale_namespaces() {
    let Ok(listing) = run_command("ip", ["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_processes_in(name);
            let _ = run_command("ip", ["netns", "del", name]);
        }
    }
}

/// Runs a command to completion; an error says what failed, with its stderr.
pub fn run_command<I, S>(program: &str, args: I) -> Result<Output, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    let rendered = format!("{command:?}");
    let output = command
        .output()
        .map_err(|error| format!("cannot run {rendered}: {error}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{rendered} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// Polls `check` every `poll` until it returns `Some`, for at most `timeout`.
///
/// `check` runs at least once, and once more at the deadline.
pub fn wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// A temporary folder, removed on drop (kept, and its path printed, when the test panicked).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/zte2e-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "{NAME_PREFIX}-{}-{}-{label}",
            std::process::id(),
            next_sequence()
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Kills every process whose network namespace is `name` (`ip netns pids`).
fn kill_processes_in(name: &str) {
    let Ok(listing) = run_command("ip", ["netns", "pids", name]) else {
        return;
    };
    let pids: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(&pids)
        .stderr(Stdio::null())
        .status();
    // The namespace goes away only once its last process is gone; give them a moment.
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        pids.iter().all(|pid| process_is_gone(pid)).then_some(())
    });
}

/// Whether `pid` has exited: no longer in /proc, or a zombie waiting for its parent (a test
/// that spawned it) to reap it.
fn process_is_gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// A network namespace, deleted on drop after the processes inside it are killed.
///
/// Its loopback interface is up (the agent's local API listens on 127.0.0.1).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `zte2e-<pid>-<n>-<label>`. Call [`require_privileged`] first.
    pub fn new(label: &str) -> Netns {
        let name = format!(
            "{NAME_PREFIX}-{}-{}-{label}",
            std::process::id(),
            next_sequence()
        );
        run_command("ip", ["netns", "add", name.as_str()])
            .unwrap_or_else(|error| panic!("{error}"));
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.name.as_str()])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    /// A command that runs `program` inside this namespace but in this process's mount
    /// namespace (`nsenter --net`), unlike [`Netns::command`], whose `ip netns exec` gives
    /// it a private one: mounts it makes stay after it exits.
    pub fn command_keeping_mounts(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    /// Runs `program args` inside this namespace to completion, whatever its exit status.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(program);
        command.args(args);
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
    }

    /// One ping to `target` from inside this namespace, waiting at most a second.
    pub fn ping_once(&self, target: &str) -> bool {
        self.command("ping")
            .args(["-c", "1", "-W", "1", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Pings `target` until one answers (true) or 20 s have passed (false).
    pub fn ping_until(&self, target: &str) -> bool {
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            self.ping_once(target).then_some(())
        })
        .is_some()
    }

    /// Runs `ip -n <this> args`, panicking with ip's message when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_command("ip", full).unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_processes_in(&self.name);
        if let Err(error) = run_command("ip", ["netns", "del", self.name.as_str()]) {
            eprintln!("cannot delete namespace {}: {error}", self.name);
        }
    }
}

/// One Ethernet segment: a bridge in a namespace of its own, and `host_count` host
/// namespaces each attached by a veth pair (`eth0` inside the host) with the address
/// `10.213.<subnet>.<index + 1>/24`. No namespace has a default route.
#[derive(Debug)]
pub struct Lan {
    // Hosts are dropped (and their processes killed) before the bridge.
    hosts: Vec<Netns>,
    bridge: Netns,
    subnet: u8,
}

impl Lan {
    pub fn new(label: &str, host_count: usize) -> Lan {
        assert!(host_count < 250, "a /24 holds fewer hosts");
        // The namespaces are isolated from each other, so subnets need not differ between
        // tests; a different one per LAN just keeps logs of parallel tests apart.
        let subnet =
            u8::try_from((std::process::id() as usize + next_sequence()) % 250 + 1).unwrap_or(1);
        let bridge = Netns::new(&format!("{label}-br"));
        bridge.ip(&["link", "add", "br0", "type", "bridge"]);
        bridge.ip(&["link", "set", "br0", "up"]);
        let mut hosts = Vec::with_capacity(host_count);
        for index in 0..host_count {
            let host = Netns::new(&format!("{label}-h{index}"));
            let port = format!("port{index}");
            // Both ends are made inside the bridge's namespace and one is moved to the host,
            // so no interface ever appears in the namespace the tests run in.
            bridge.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.name(),
            ]);
            bridge.ip(&["link", "set", &port, "master", "br0"]);
            bridge.ip(&["link", "set", &port, "up"]);
            let address = format!("10.213.{subnet}.{}/24", index + 1);
            host.ip(&["addr", "add", &address, "dev", "eth0"]);
            host.ip(&["link", "set", "eth0", "up"]);
            hosts.push(host);
        }
        Lan {
            hosts,
            bridge,
            subnet,
        }
    }

    pub fn host(&self, index: usize) -> &Netns {
        &self.hosts[index]
    }

    /// The IPv4 address of host `index`.
    pub fn ip(&self, index: usize) -> Ipv4Addr {
        let last = u8::try_from(index + 1).expect("fewer than 250 hosts");
        Ipv4Addr::new(10, 213, self.subnet, last)
    }

    /// The third octet of this LAN's `10.213.<subnet>.0/24`.
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    pub fn bridge(&self) -> &Netns {
        &self.bridge
    }
}

/// The `zt-agent` binary under test: `$ZT_AGENT_BIN`, or `zt-agent` in the target profile
/// folder this test executable was built into (`target/<profile>/deps/<test>` →
/// `target/<profile>/zt-agent`).
pub fn agent_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let path = match std::env::var_os("ZT_AGENT_BIN") {
                Some(path) => PathBuf::from(path),
                None => {
                    let exe = std::env::current_exe().expect("the test executable's path");
                    let deps = exe
                        .parent()
                        .expect("test executable in target/<profile>/deps");
                    let profile = deps.parent().expect("target/<profile>");
                    profile.join("zt-agent")
                }
            };
            assert!(
                path.is_file(),
                "{} does not exist: build it first with `cargo build -p zt-agent` \
                 (scripts/test.sh does) or set ZT_AGENT_BIN",
                path.display()
            );
            path
        })
        .clone()
}

/// Runs `zt-agent args` outside any namespace (for offline subcommands: idtool, mkworld).
pub fn zt_agent<I, S>(args: I) -> Result<Output, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let binary = agent_binary();
    run_command(&binary.to_string_lossy(), args)
}

/// Makes `home/identity.secret` and `home/identity.public` with `zt-agent idtool generate`
/// and returns the new node's address (10 hex digits).
pub fn generate_identity(home: &Path) -> String {
    let secret = home.join("identity.secret");
    let public = home.join("identity.public");
    zt_agent([
        OsStr::new("idtool"),
        OsStr::new("generate"),
        secret.as_os_str(),
        public.as_os_str(),
    ])
    .unwrap_or_else(|error| panic!("{error}"));
    let text = fs::read_to_string(&public)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", public.display()));
    let address = text.split(':').next().unwrap_or_default().trim().to_owned();
    assert!(
        address.len() == 10 && address.bytes().all(|b| b.is_ascii_hexdigit()),
        "identity.public does not start with an address: {text:?}"
    );
    address
}

/// Makes the homes `names` under `dir`, each with a new identity and the same planet, whose
/// only root is the first home's node, at `root_ip` and `port`; returns their paths.
pub fn make_homes(dir: &Path, names: &[&str], root_ip: Ipv4Addr, port: u16) -> Vec<PathBuf> {
    let homes: Vec<PathBuf> = names.iter().map(|name| dir.join(name)).collect();
    for home in &homes {
        fs::create_dir_all(home)
            .unwrap_or_else(|error| panic!("cannot make {}: {error}", home.display()));
        generate_identity(home);
    }
    let root = homes.first().expect("at least one home");
    let planet = make_planet(
        dir,
        &root.join("identity.public"),
        &[format!("{root_ip}/{port}")],
    );
    for home in &homes {
        fs::copy(&planet, home.join("planet"))
            .unwrap_or_else(|error| panic!("cannot copy the planet: {error}"));
    }
    homes
}

/// Makes a planet with `zt-agent mkworld` whose only root is the identity in
/// `root_public` (an identity.public file), reachable at `endpoints` ("ip/port").
/// Writes the description and the planet into `dir` and returns the planet's path.
pub fn make_planet(dir: &Path, root_public: &Path, endpoints: &[String]) -> PathBuf {
    let template = zt_agent([
        OsStr::new("mkworld"),
        OsStr::new("init"),
        root_public.as_os_str(),
    ])
    .unwrap_or_else(|error| panic!("{error}"));
    let mut description: Value = serde_json::from_slice(&template.stdout).unwrap_or_else(|error| {
        panic!(
            "`mkworld init` printed no JSON ({error}): {}",
            String::from_utf8_lossy(&template.stdout)
        )
    });
    let root_identity = fs::read_to_string(root_public)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", root_public.display()));
    description["worldType"] = Value::from("planet");
    description["roots"] = serde_json::json!([{
        "identity": root_identity.trim(),
        "stableEndpoints": endpoints,
    }]);
    let description_path = dir.join("planet.json");
    fs::write(
        &description_path,
        serde_json::to_vec_pretty(&description).expect("JSON serializes"),
    )
    .unwrap_or_else(|error| panic!("cannot write {}: {error}", description_path.display()));
    let planet = dir.join("planet");
    zt_agent([
        OsStr::new("mkworld"),
        description_path.as_os_str(),
        OsStr::new("-o"),
        planet.as_os_str(),
    ])
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(planet.is_file(), "mkworld wrote no {}", planet.display());
    planet
}

/// A running `zt-agent run --home <home> --port <port>` inside a namespace, killed on drop.
///
/// Its stdout and stderr go to `<home>/agent.log`, which is printed when the test panics.
#[derive(Debug)]
pub struct Agent<'ns> {
    netns: &'ns Netns,
    home: PathBuf,
    port: u16,
    log_path: PathBuf,
    child: Child,
}

impl<'ns> Agent<'ns> {
    /// Starts the agent. `home` must already hold a `planet` that the test made: a test
    /// node never falls back to ZeroTier's built-in planet.
    pub fn start(netns: &'ns Netns, home: &Path, port: u16) -> Agent<'ns> {
        Self::start_with(netns, home, port, &[])
    }

    /// [`Agent::start`] with more arguments for `zt-agent run`.
    pub fn start_with(netns: &'ns Netns, home: &Path, port: u16, extra: &[&str]) -> Agent<'ns> {
        Self::launch(netns, netns.command(agent_binary()), home, port, extra)
    }

    /// [`Agent::start_with`] in this process's mount namespace
    /// ([`Netns::command_keeping_mounts`]), so that the bind mounts the agent makes (its
    /// namespace pins) outlive it, as they do for an agent in the host's mount namespace.
    pub fn start_keeping_mounts(
        netns: &'ns Netns,
        home: &Path,
        port: u16,
        extra: &[&str],
    ) -> Agent<'ns> {
        let command = netns.command_keeping_mounts(agent_binary());
        Self::launch(netns, command, home, port, extra)
    }

    fn launch(
        netns: &'ns Netns,
        mut command: Command,
        home: &Path,
        port: u16,
        extra: &[&str],
    ) -> Agent<'ns> {
        assert!(
            home.join("planet").is_file(),
            "refusing to start zt-agent without a test-made planet in {}",
            home.display()
        );
        let log_path = home.join("agent.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_path.display()));
        let log_for_stdout = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot clone the log handle: {error}"));
        command
            .arg("run")
            .arg("--home")
            .arg(home)
            .arg("--port")
            .arg(port.to_string())
            .arg("--socket")
            .arg(home.join("agent.sock"))
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .stdout(log_for_stdout)
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        Agent {
            netns,
            home: home.to_owned(),
            port,
            log_path,
            child,
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The agent's process ID (`ip netns exec` executes the agent in its own place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn netns(&self) -> &Netns {
        self.netns
    }

    /// What the agent has printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Err with the exit status and the log when the agent is no longer running.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "zt-agent in {} exited ({status}); its log:\n{}",
                self.netns.name(),
                self.log()
            )),
            Err(error) => Err(format!("cannot query zt-agent: {error}")),
        }
    }

    /// Runs `zt-agent --home <home> args` inside the agent's namespace (the CLI talks to the
    /// agent's local API on 127.0.0.1 there). Ok(stdout) when it exits 0.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut command = self.netns.command(agent_binary());
        command.arg("--home").arg(&self.home).args(args);
        let output = command
            .output()
            .map_err(|error| format!("cannot run {command:?}: {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "zt-agent {} in {} failed ({}): {}{}",
                args.join(" "),
                self.netns.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                stdout.trim()
            ))
        }
    }

    /// Runs a CLI command that prints JSON and parses it.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let stdout = self.cli(args)?;
        serde_json::from_str(&stdout).map_err(|error| {
            format!(
                "zt-agent {} printed no JSON ({error}): {stdout}",
                args.join(" ")
            )
        })
    }

    /// A local API call (`zt-agent api METHOD PATH [BODY]`), its JSON answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string);
        let mut args = vec!["api", method, path];
        if let Some(body) = &body {
            args.push(body);
        }
        self.cli_json(&args)
    }

    /// `GET /metrics` of the local API (Prometheus text; the CLI's `api` wants JSON answers),
    /// fetched over TCP from a thread that enters the agent's namespace.
    pub fn metrics(&self) -> Result<String, String> {
        let token = fs::read_to_string(self.home.join("authtoken.secret"))
            .map_err(|error| format!("cannot read the API token: {error}"))?;
        let netns_path = format!("/run/netns/{}", self.netns.name());
        let port = self.port;
        thread::scope(|scope| {
            scope
                .spawn(move || -> Result<String, String> {
                    use std::io::{Read, Write};
                    let handle = fs::File::open(&netns_path)
                        .map_err(|error| format!("cannot open {netns_path}: {error}"))?;
                    nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|error| format!("setns into {netns_path}: {error}"))?;
                    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
                        .map_err(|error| format!("cannot reach the local API: {error}"))?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(|error| error.to_string())?;
                    write!(
                        stream,
                        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ZT1-Auth: {}\r\n\
                         Connection: close\r\n\r\n",
                        token.trim()
                    )
                    .map_err(|error| format!("cannot send the request: {error}"))?;
                    let mut answer = String::new();
                    stream
                        .read_to_string(&mut answer)
                        .map_err(|error| format!("cannot read the answer: {error}"))?;
                    let (head, body) = answer
                        .split_once("\r\n\r\n")
                        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
                    if !head.starts_with("HTTP/1.1 200") {
                        return Err(format!("GET /metrics: {head}"));
                    }
                    Ok(body.to_owned())
                })
                .join()
                .unwrap_or_else(|_| Err("the metrics thread panicked".into()))
        })
    }

    /// `info -j`: the node's status ("address", "online", ...).
    pub fn info(&self) -> Result<Value, String> {
        self.cli_json(&["info", "-j"])
    }

    /// `listpeers -j`: the node's peers ("address", "role", "latency", "paths", ...).
    pub fn peers(&self) -> Result<Vec<Peer>, String> {
        match self.cli_json(&["listpeers", "-j"])? {
            Value::Array(peers) => Ok(peers.into_iter().map(Peer).collect()),
            other => Err(format!("listpeers -j printed no JSON array: {other}")),
        }
    }

    /// The peer with `address`, if listed.
    pub fn peer(&self, address: &str) -> Result<Option<Peer>, String> {
        Ok(self
            .peers()?
            .into_iter()
            .find(|peer| peer.address() == Some(address)))
    }

    /// `echo <address>`: Ok(what it printed, with the round-trip time) when a reply came.
    pub fn echo(&self, address: &str) -> Result<String, String> {
        self.cli(&["echo", address])
    }

    /// The node's address from `info -j`.
    pub fn address(&self) -> Result<String, String> {
        let info = self.info()?;
        info["address"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("info -j has no \"address\": {info}"))
    }

    /// Whether `info -j` says "online": true.
    pub fn is_online(&self) -> bool {
        self.info()
            .is_ok_and(|info| info["online"].as_bool() == Some(true))
    }

    /// Waits up to 30 s for the node to come online; fails the test (with the agent's log,
    /// printed when this agent is dropped) if it does not.
    pub fn expect_online(&self) {
        assert!(
            wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
                self.is_online().then_some(())
            })
            .is_some(),
            "the agent in {} never came online",
            self.netns.name()
        );
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- zt-agent log, namespace {} ({}) ----\n{}\n---- end of log ----",
                self.netns.name(),
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// One entry of `listpeers -j`.
#[derive(Debug, Clone)]
pub struct Peer(pub Value);

impl Peer {
    pub fn address(&self) -> Option<&str> {
        self.0["address"].as_str()
    }

    /// "LEAF", "PLANET" or "MOON".
    pub fn role(&self) -> Option<&str> {
        self.0["role"].as_str()
    }

    /// The "address" ("ip/port") of every path marked "active".
    pub fn active_paths(&self) -> Vec<&str> {
        self.0["paths"]
            .as_array()
            .map(|paths| {
                paths
                    .iter()
                    .filter(|path| path["active"].as_bool() == Some(true))
                    .filter_map(|path| path["address"].as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether an active path goes straight to `ip` (any port): the peer is DIRECT there.
    pub fn has_active_path_to(&self, ip: Ipv4Addr) -> bool {
        let prefix = format!("{ip}/");
        self.active_paths()
            .iter()
            .any(|path| path.starts_with(&prefix))
    }
}

impl Netns {
    /// A command that runs `program` with only its network namespace switched to this one
    /// (`nsenter --net`), unlike [`Netns::command`], whose `ip netns exec` also gives the
    /// program a mount namespace of its own (a slave of the test's).
    ///
    /// A container runtime needs this: the namespaces it creates for its containers are bind
    /// mounts under `/run/netns`, which must be visible to the agent that plumbs them (an
    /// agent in another namespace opens them by path). Made inside `ip netns exec`, such a
    /// mount would never propagate out of the runtime's private mount namespace.
    pub fn net_only_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        command
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`, ...), or a count (`Threads`).
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// How many file descriptors `pid` has open.
pub fn open_fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// User plus system CPU time of `pid` so far, in clock ticks (`/proc/<pid>/stat` fields 14
/// and 15; 100 ticks a second on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}
