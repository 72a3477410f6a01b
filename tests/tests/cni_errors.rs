//! Issue 5: the `zerotier` CNI plugin's errors against a real zt-agent (the plugin's own
//! tests use a fake one). One host in a namespace, root and controller of a private network
//! it authorizes itself into; the plugin binary is exec'd there with the `CNI_*` variables
//! and a config on stdin, as a runtime does. For each broken request:
//! - the exit status is non-zero and stdout is exactly the spec's error object
//!   (`cniVersion` echoing the request's, `code`, `msg`, optional `details`) with the code
//!   the spec gives: 6 for config that is not JSON, 7 for a missing or malformed `network`,
//!   4 for a bad `CNI_IFNAME`, 3 for a namespace that does not exist (the agent's answer),
//!   11 while the agent is down;
//! - nothing is left behind: no endpoint on the agent's plugin API, no link but `lo` in the
//!   pod's namespace, no endpoint record in the agent's home, no pending delete.
//!
//! And DEL while the agent is down succeeds (twice), records the detach in the agent's
//! pending-delete folder, and the restarted agent replays it: the endpoint of the earlier
//! ADD is not made again and its record is gone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zt_agent::plugin_client::PluginClient;
use zt_e2e::{make_homes, require_privileged, wait_until, Agent, Lan, Netns, TempDir, AGENT_PORT};

/// The newest spec version, which the plugin echoes when the request has none it can read.
const LATEST_CNI_VERSION: &str = "1.1.0";

/// `target/<profile>`: the folder of zt-agent and of the plugin binary `zerotier`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .to_owned()
}

/// What one run of the plugin did.
struct Run {
    output: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the spec's error object with `code` and `version` on stdout and a failing
    /// exit status; returns the object.
    fn expect_error(&self, what: &str, code: u64, version: &str) -> Value {
        let stdout = self.stdout();
        assert!(
            !self.output.status.success(),
            "{what}: the plugin succeeded: {stdout}"
        );
        let error: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{what}: stdout is not the error JSON ({e}): {stdout}{}",
                self.stderr()
            )
        });
        let object = error
            .as_object()
            .unwrap_or_else(|| panic!("{what}: the error is not an object: {error}"));
        for key in object.keys() {
            assert!(
                ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
                "{what}: the error has a key the spec does not: {key} in {error}"
            );
        }
        assert_eq!(error["cniVersion"], version, "{what}: {error}");
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(
            error["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{what}: no msg: {error}"
        );
        assert!(
            error.get("details").is_none_or(Value::is_string),
            "{what}: details is not a string: {error}"
        );
        error
    }

    fn expect_success(&self, what: &str) {
        assert!(
            self.output.status.success(),
            "{what} failed ({}): {}{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
    }
}

/// Runs the plugin binary in `host`'s namespace with exactly these variables (and PATH) and
/// `stdin`.
fn run_plugin(host: &Netns, plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut command = host.command(plugin);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    if let Some(mut input) = child.stdin.take() {
        // The plugin reads all of stdin before anything else; a failed write shows in its
        // answer.
        let _ = input.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("cannot wait for {command:?}: {error}"));
    Run { output }
}

/// One pod's invocations: its container ID, namespace and `CNI_ARGS`.
struct Pod<'a> {
    host: &'a Netns,
    plugin: &'a Path,
    netns: &'a Netns,
    container_id: String,
    args: String,
}

impl Pod<'_> {
    fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns.name())
    }

    /// The key the plugin gives this pod's endpoint.
    fn key(&self) -> String {
        format!("k8s/e2e/{}", self.container_id)
    }

    /// `command` with `config`; `overrides` replace variables (an empty value unsets one).
    fn run(&self, command: &str, stdin: &[u8], overrides: &[(&str, &str)]) -> Run {
        let netns = self.netns_path();
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            if !value.is_empty() {
                env.push((key, value));
            }
        }
        run_plugin(self.host, self.plugin, &env, stdin)
    }

    /// The links in the pod's namespace other than `lo`.
    fn links(&self) -> Vec<String> {
        let output = self.netns.run("ip", ["-o", "link", "show"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
            .filter(|name| name != "lo")
            .collect()
    }
}

/// The keys of the endpoint records in an agent home's `endpoints.d/`.
fn recorded_keys(home: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(home.join("endpoints.d")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|record| record["key"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("unreadable {}", entry.path().display()))
        })
        .collect()
}

/// The files in a folder (none when it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// The endpoint keys a live agent lists.
fn listed_keys(agent: &Agent<'_>) -> Vec<String> {
    PluginClient::new(agent.home().join("agent.sock"))
        .endpoints()
        .expect("the agent lists its endpoints")
        .iter()
        .map(|endpoint| endpoint.key.to_string())
        .collect()
}

fn start_agent<'a>(host: &'a Netns, home: &Path, args: &[&str]) -> Agent<'a> {
    let agent = Agent::start_with(host, home, AGENT_PORT, args);
    agent.expect_online();
    agent
}

#[test]
fn plugin_errors_against_a_real_agent_leave_nothing_behind() {
    if !require_privileged() {
        return;
    }
    let plugin_built = profile_dir().join("zerotier");
    assert!(
        plugin_built.is_file(),
        "{} does not exist: build it first with `cargo build -p cni-plugin` \
         (scripts/test.sh does)",
        plugin_built.display()
    );
    let started = Instant::now();

    let lan = Lan::new("cnierr", 1);
    let host = lan.host(0);
    let work = TempDir::new("cnierr");
    let home = make_homes(work.path(), &["root"], lan.ip(0), AGENT_PORT).remove(0);
    // The agent is its own controller and authorizes its endpoints with its own token.
    let token_file = home.join("authtoken.secret");
    fs::write(&token_file, format!("e2eerr{:018}", std::process::id())).expect("token");
    let controller_url = format!("http://{}:{AGENT_PORT}", lan.ip(0));
    let token_path = token_file.to_str().expect("utf-8 path");
    let agent_args = [
        "--api-bind",
        "0.0.0.0",
        "--controller-url",
        controller_url.as_str(),
        "--controller-token-file",
        token_path,
    ];
    let agent = start_agent(host, &home, &agent_args);
    let zt_subnet = if lan.subnet() == 241 { 242 } else { 241 };
    let created = agent
        .api(
            "POST",
            "/controller/network",
            Some(&json!({
                "name": "cni-errors", "private": true,
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
    println!("network {nwid}, agent online after {:?}", started.elapsed());

    let bin = work.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    let plugin = bin.join("zerotier");
    fs::copy(&plugin_built, &plugin).expect("copy the plugin");
    let pending_dir = home.join("cni-pending-del");
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "zt-errors",
        "type": "zerotier",
        "network": nwid,
        "agentSocket": home.join("agent.sock"),
        "pendingDeleteDir": pending_dir,
        "attachWait": 40,
    });
    let with = |key: &str, value: Value| {
        let mut changed = config.clone();
        changed[key] = value;
        serde_json::to_vec(&changed).expect("JSON")
    };
    let without = |key: &str| {
        let mut changed = config.clone();
        changed.as_object_mut().expect("object").remove(key);
        serde_json::to_vec(&changed).expect("JSON")
    };
    let good = serde_json::to_vec(&config).expect("JSON");

    let pod_netns = Netns::new("errpod");
    let pod = Pod {
        host,
        plugin: &plugin,
        netns: &pod_netns,
        container_id: "errpod".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=errpod".into(),
    };
    let nothing_left = |what: &str, agent: &Agent<'_>, pod: &Pod<'_>| {
        let listed = listed_keys(agent);
        assert!(
            !listed.contains(&pod.key()),
            "{what}: the agent lists an endpoint: {listed:?}"
        );
        assert!(
            pod.links().is_empty(),
            "{what}: links left in the pod: {:?}",
            pod.links()
        );
        let records = recorded_keys(agent.home());
        assert!(
            !records.contains(&pod.key()),
            "{what}: an endpoint record is left in the agent's home: {records:?}"
        );
        assert!(
            files_in(&pending_dir).is_empty(),
            "{what}: a pending delete was recorded: {:?}",
            files_in(&pending_dir)
        );
    };

    // Broken requests, the agent up.
    let missing_netns = format!("/var/run/netns/{}-none", pod_netns.name());
    let cases: Vec<(&str, Run, u64, &str, &str)> = vec![
        (
            "bad JSON",
            pod.run("ADD", b"{\"cniVersion\": \"1.0.0\", \"name\": ", &[]),
            6,
            LATEST_CNI_VERSION,
            "not JSON",
        ),
        (
            "missing network",
            pod.run("ADD", &without("network"), &[]),
            7,
            "1.0.0",
            "missing `network`",
        ),
        (
            "network ID one digit short",
            pod.run("ADD", &with("network", json!(&nwid[..15])), &[]),
            7,
            "1.0.0",
            "not a ZeroTier network ID",
        ),
        (
            "network ID not hex",
            pod.run("ADD", &with("network", json!("zt-network-one!!")), &[]),
            7,
            "1.0.0",
            "not a ZeroTier network ID",
        ),
        (
            "network ID a number",
            pod.run("ADD", &with("network", json!(12345)), &[]),
            7,
            "1.0.0",
            "`network`",
        ),
        (
            "CNI_IFNAME with a colon",
            pod.run("ADD", &good, &[("CNI_IFNAME", "eth0:1")]),
            4,
            "1.0.0",
            "CNI_IFNAME",
        ),
        (
            "CNI_IFNAME of 16 characters",
            pod.run("ADD", &good, &[("CNI_IFNAME", "a234567890123456")]),
            4,
            "1.0.0",
            "CNI_IFNAME",
        ),
        (
            "CNI_IFNAME ..",
            pod.run("ADD", &good, &[("CNI_IFNAME", "..")]),
            4,
            "1.0.0",
            "CNI_IFNAME",
        ),
        (
            "CNI_IFNAME missing",
            pod.run("ADD", &good, &[("CNI_IFNAME", "")]),
            4,
            "1.0.0",
            "CNI_IFNAME",
        ),
        (
            "namespace that does not exist",
            pod.run("ADD", &good, &[("CNI_NETNS", &missing_netns)]),
            3,
            "1.0.0",
            "",
        ),
    ];
    for (what, run, code, version, says) in &cases {
        let error = run.expect_error(what, *code, version);
        let msg = error["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{what}: {msg:?} does not say {says:?}");
        assert!(
            run.stderr().contains(msg),
            "{what}: the error is not logged on stderr: {}",
            run.stderr()
        );
        nothing_left(what, &agent, &pod);
        println!("{what}: code {code}: {error}");
    }
    // The agent's own refusal says which namespace.
    let (_, netns_run, ..) = &cases[cases.len() - 1];
    assert!(
        netns_run.stdout().contains(&missing_netns),
        "the missing namespace is not named: {}",
        netns_run.stdout()
    );
    assert!(
        listed_keys(&agent).is_empty(),
        "endpoints after the broken requests"
    );

    // The same pod with a good request: the agent makes its endpoint (so the checks above
    // looked where a leftover would have been).
    let added = pod.run("ADD", &good, &[]);
    added.expect_success("ADD");
    let result: Value = serde_json::from_str(&added.stdout()).expect("ADD result JSON");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    assert_eq!(listed_keys(&agent), [pod.key()]);
    assert_eq!(recorded_keys(&home), [pod.key()]);
    assert_eq!(pod.links(), ["eth0"]);
    println!("ADD with a good request: endpoint {} made", pod.key());

    // The agent goes down. ADD of another pod is "try again later" and leaves nothing.
    drop(agent);
    let other_netns = Netns::new("errpod2");
    let other = Pod {
        host,
        plugin: &plugin,
        netns: &other_netns,
        container_id: "errpod2".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=errpod2".into(),
    };
    let down = other.run("ADD", &good, &[]);
    let error = down.expect_error("ADD with the agent down", 11, "1.0.0");
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("cannot reach zt-agent")),
        "{error}"
    );
    assert!(error["details"].is_string(), "{error}");
    assert!(other.links().is_empty(), "links left: {:?}", other.links());
    assert!(!recorded_keys(&home).contains(&other.key()));
    assert!(files_in(&pending_dir).is_empty());
    println!("ADD with the agent down: code 11: {error}");

    // DEL of the first pod with the agent down succeeds, twice, and is recorded once.
    for attempt in ["first", "second"] {
        let deleted = pod.run("DEL", &good, &[]);
        deleted.expect_success(&format!("{attempt} DEL with the agent down"));
        assert!(
            deleted.stdout().trim().is_empty(),
            "DEL printed {}",
            deleted.stdout()
        );
        assert!(
            deleted.stderr().contains("for the agent to replay"),
            "{}",
            deleted.stderr()
        );
    }
    let spooled = files_in(&pending_dir);
    assert_eq!(spooled.len(), 1, "one pending delete: {spooled:?}");
    let record: Value =
        serde_json::from_slice(&fs::read(&spooled[0]).expect("pending delete")).expect("JSON");
    assert_eq!(
        record,
        json!({"key": pod.key(), "containerId": "errpod", "ifName": "eth0", "network": nwid}),
    );
    println!("DEL with the agent down: recorded {}", spooled[0].display());

    // The agent starts again: it replays the delete, so the pod's endpoint is not restored.
    let agent = start_agent(host, &home, &agent_args);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            files_in(&pending_dir).is_empty().then_some(())
        })
        .is_some(),
        "the agent left the pending delete: {:?}",
        files_in(&pending_dir)
    );
    // Give a restore (which would be wrong) the time to happen before looking.
    std::thread::sleep(Duration::from_secs(2));
    nothing_left("after the replay", &agent, &pod);
    assert!(
        listed_keys(&agent).is_empty(),
        "endpoints after the replay: {:?}",
        listed_keys(&agent)
    );
    assert!(
        recorded_keys(&home).is_empty(),
        "{:?}",
        recorded_keys(&home)
    );
    // A DEL now, with the agent up, finds nothing and succeeds.
    pod.run("DEL", &good, &[])
        .expect_success("DEL after the replay");
    println!(
        "the restarted agent replayed the delete; done in {:?}",
        started.elapsed()
    );
}
