//! Issue 8, item 4: every file the agent writes that holds a secret is mode 0600, and its
//! folders are not writable by others, even when the agent runs under a umask of 0 (the
//! modes are set explicitly, not left to the umask). The files are written by a child process
//! that a shell starts with `umask 0`.
//!
//! Covered: `identity.secret`, `authtoken.secret`, `metricstoken.secret`, the endpoint
//! records in `endpoints.d/` (they hold endpoint identities), the persistent identity pool
//! (`endpoint-identities.secret`), the controller's records in `controller.d/` (network
//! secrets such as SSO settings and member authorizations), and the plugin API socket
//! (0600 in a 0700 folder). The CNI plugin's pending-delete spool and the Docker plugin's
//! state are written by their crates with explicit 0600/0700 modes (their unit tests check
//! the modes); a umask can only narrow those.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use node_core::time::Timestamp;
use rand_core::OsRng;
use zt_agent::controller::ControllerService;
use zt_agent::endpoints::{EndpointRecord, EndpointStore};
use zt_agent::home::Home;
use zt_agent::identity_pool::IdentityPool;

/// Every path under `dir` (itself included) with its permission bits.
fn modes_under(dir: &Path) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.insert(path.clone(), meta.permissions().mode() & 0o777);
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

/// Set for the child process that writes the files under a umask of 0.
const CHILD_VAR: &str = "ZT_SECRET_MODES_CHILD";

/// Runs [`write_secrets_and_check_modes`] in a child process whose umask a shell has set
/// to 0 (the umask is per process, and setting it here would need `unsafe`).
#[test]
fn secrets_are_0600_even_under_a_umask_of_0() {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 0 && exec \"$0\" --exact write_secrets_and_check_modes --nocapture --test-threads=1")
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_VAR, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("CHECKED under umask 0000"),
        "the child did not run:\n{stdout}\n{stderr}"
    );
}

/// The child's work; without [`CHILD_VAR`] it does nothing.
#[test]
fn write_secrets_and_check_modes() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .map(str::trim)
        .unwrap_or("unknown")
        .to_string();
    assert_eq!(umask, "0000", "the shell set the umask");
    let root = std::env::temp_dir().join(format!("zt-secret-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home_dir = root.join("home");
    let home = Home::new(&home_dir);
    home.create().unwrap();
    let identity = home.load_or_create_identity(&mut OsRng).unwrap().identity;
    home.load_or_create_authtoken(&mut OsRng).unwrap();
    home.load_or_create_metricstoken(&mut OsRng).unwrap();
    EndpointStore::new(&home_dir)
        .save(&EndpointRecord {
            key: "k8s/default/web-0".into(),
            network: "8056c2e21c000001".into(),
            netns: "/var/run/netns/c1".into(),
            if_name: "eth0".into(),
            identity: identity.to_secret_string().unwrap(),
            attach: None,
            sandbox: None,
            config: None,
        })
        .unwrap();
    let mut controller = ControllerService::open(&home_dir, identity.clone(), 1).unwrap();
    let network = format!("/controller/network/{}000001", identity.address());
    let now = Timestamp(1_700_000_000_000);
    for (path, body) in [
        (network.clone(), r#"{"name":"n","private":true}"#),
        (
            format!("{network}/member/1122334455"),
            r#"{"authorized":true}"#,
        ),
    ] {
        let answer = controller.handle_http(now, "POST", &path, body.as_bytes());
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool_file = home_dir.join(IdentityPool::FILE_NAME);
    runtime.block_on(async {
        let pool = IdentityPool::persistent(1, &pool_file);
        pool.start();
        // Generating one identity takes a memory-hard hash; the file follows.
        for _ in 0..600 {
            if pool.ready() == 1 && pool_file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(pool_file.exists(), "the pool saved its identity");
    });
    let socket = root.join("run/agent.sock");
    let (_listener, _) = runtime
        .block_on(async { zt_agent::plugin_api::bind_socket(&socket, 0o700) })
        .unwrap();

    let modes = modes_under(&root);
    let secret = |path: &Path| {
        let name = path.file_name().unwrap().to_string_lossy();
        name.ends_with(".secret")
            || path.starts_with(home_dir.join("endpoints.d"))
            || path.starts_with(home_dir.join("controller.d"))
    };
    let mut secrets = 0;
    for (path, mode) in &modes {
        assert_eq!(
            mode & 0o022,
            0,
            "{} is writable by others: {mode:o}",
            path.display()
        );
        if path.is_file() && secret(path) {
            assert_eq!(*mode, 0o600, "{} holds a secret: {mode:o}", path.display());
            secrets += 1;
        }
        if path.is_dir() && secret(path) {
            assert_eq!(
                *mode & 0o077,
                0,
                "{} is a folder of secrets: {mode:o}",
                path.display()
            );
        }
    }
    // identity, authtoken, metricstoken, the record, the pool, a network and a member.
    assert!(secrets >= 7, "{modes:#?}");
    for name in ["identity.secret", "authtoken.secret", "metricstoken.secret"] {
        assert_eq!(modes[&home_dir.join(name)], 0o600, "{name}");
    }
    assert_eq!(modes[&socket], 0o600, "the plugin socket");
    assert_eq!(
        modes[&root.join("run")],
        0o700,
        "the plugin socket's folder"
    );
    assert_eq!(
        modes[&home_dir], 0o755,
        "the home folder, as ZeroTier One makes it"
    );
    let _ = std::fs::remove_dir_all(&root);
    println!("CHECKED under umask {umask}");
}
