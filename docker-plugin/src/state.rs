//! What the plugin remembers across restarts (Docker never replays CreateNetwork, and
//! Join/Leave/DeleteEndpoint must be answerable for endpoints made before a restart): one
//! JSON file, `state.json` in the state directory, mode 0600, replaced atomically (written
//! to a temporary file, synced, renamed, directory synced).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use node_core::vl2::NetworkId;
use serde::{Deserialize, Serialize};
use zt_agent::plugin_api::{EndpointKey, InterfaceName, IpPrefix, Route};

use crate::agent::DetachRequest;

/// Where the plugin keeps its state unless told `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zt-docker-plugin";
const STATE_FILE: &str = "state.json";
const STATE_VERSION: u32 = 1;

/// The whole state; see `docs/docker-plugin-design.md` for how each part is used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub version: u32,
    /// IPAM pools by pool ID.
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// Docker networks of this driver by Docker network ID.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Members attached for Docker by reservation ID (also their `containerId`).
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
    /// Stable endpoint keys by [`key_slot`].
    #[serde(default)]
    pub keys: BTreeMap<String, KeptKey>,
    /// Detaches the agent could not take when they were due; replayed.
    #[serde(default)]
    pub pending_detaches: Vec<DetachRequest>,
}

/// An IPAM pool handed to Docker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub v6: bool,
    pub cidr: IpPrefix,
    /// The `--ipam-opt` values, compared when CreateNetwork binds the pool.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The Docker network that owns the pool, once CreateNetwork bound it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The ZeroTier network, from `--ipam-opt zerotier.network` or CreateNetwork.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "zt_agent::plugin_api::text_form::opt_network_id"
    )]
    pub zt_network: Option<NetworkId>,
    /// Unix seconds.
    pub created: u64,
}

/// A Docker network of this driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(with = "zt_agent::plugin_api::text_form::network_id")]
    pub zt_network: NetworkId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Seconds an attach waits for the member to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    pub created: u64,
}

/// Where a reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// The attach is in flight (recorded before it is sent; a restart finds and detaches it).
    Attaching,
    /// IPAM handed out its address; no endpoint yet.
    Reserved,
    /// CreateEndpoint bound it to a Docker endpoint.
    Bound,
    /// Its attach failed (not authorized, not ready in time); kept attached so that the next
    /// container on the network gets this member, the one the error named.
    Spare,
}

/// A ZeroTier member attached for Docker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub phase: Phase,
    #[serde(with = "zt_agent::plugin_api::text_form::network_id")]
    pub zt_network: NetworkId,
    /// The Docker network whose pool handed out the address (none for a spare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<String>,
    /// The agent's key for the member's identity.
    pub agent_key: EndpointKey,
    /// The host-side interface name, Join's `SrcName`.
    pub if_name: InterfaceName,
    /// The member's ZeroTier address and MAC, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Every managed address of the member, and the ones handed to Docker.
    #[serde(default)]
    pub ips: Vec<IpPrefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpPrefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpPrefix>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<PathBuf>,
    /// The stable key this member belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub created: u64,
}

/// A stable endpoint key (`--driver-opt zerotier.key=NAME`) and its member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptKey {
    #[serde(with = "zt_agent::plugin_api::text_form::network_id")]
    pub zt_network: NetworkId,
    pub name: String,
    pub agent_key: EndpointKey,
    pub member: String,
    /// The member's addresses when last attached; `--ip` with one of them picks the member.
    #[serde(default)]
    pub ips: Vec<IpPrefix>,
}

/// Where a stable key lives in [`State::keys`]: keys are per ZeroTier network.
pub fn key_slot(network: NetworkId, name: &str) -> String {
    format!("{network}/{name}")
}

impl State {
    /// Every agent key the plugin knows (the `valid` list of its gc).
    pub fn agent_keys(&self) -> Vec<EndpointKey> {
        let mut keys: Vec<EndpointKey> = self
            .reservations
            .values()
            .map(|r| r.agent_key.clone())
            .chain(self.keys.values().map(|k| k.agent_key.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a state file of this plugin ({problem}); move it away to start with no networks", path = .path.display())]
    Unreadable { path: PathBuf, problem: String },
}

/// The state file.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state; no file is an empty state.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Unreadable {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        if state.version > STATE_VERSION {
            return Err(StateError::Unreadable {
                path,
                problem: format!(
                    "version {} is newer than this plugin's {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Replaces the saved state; on return the new state is on disk.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.path();
        let io_error = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error)?;
        let mut versioned = state.clone();
        versioned.version = STATE_VERSION;
        let mut text =
            serde_json::to_vec_pretty(&versioned).map_err(|e| io_error(io::Error::other(e)))?;
        text.push(b'\n');
        let temporary = self
            .dir
            .join(format!("{STATE_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            // The rename itself must reach the disk before the answer that depends on it.
            fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        written.map_err(io_error)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Serde for network IDs as their 16-hex-digit text.
#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> State {
        let mut state = State::default();
        state.pools.insert(
            "zt-pool-1".into(),
            Pool {
                v6: false,
                cidr: "0.0.0.0/0".parse().unwrap(),
                options: BTreeMap::new(),
                network: Some("n1".into()),
                zt_network: Some(NetworkId(0x8056_c2e2_1c00_0001)),
                created: 1,
            },
        );
        state.networks.insert(
            "n1".into(),
            Network {
                zt_network: NetworkId(0x8056_c2e2_1c00_0001),
                mtu: Some(2800),
                wait: None,
                created: 1,
            },
        );
        state.reservations.insert(
            "0123456789ab".into(),
            Reservation {
                phase: Phase::Bound,
                zt_network: NetworkId(0x8056_c2e2_1c00_0001),
                docker_network: Some("n1".into()),
                agent_key: "docker/0123456789ab".parse().unwrap(),
                if_name: "ztd0123456789ab".parse().unwrap(),
                member: Some("a1b2c3d4e5".into()),
                mac: Some("32:a1:b2:c3:d4:e5".into()),
                ips: vec!["10.147.17.5/24".parse().unwrap()],
                ipv4: Some("10.147.17.5/24".parse().unwrap()),
                ipv6: None,
                routes: vec![],
                endpoint_id: Some("e1".into()),
                sandbox: None,
                key_name: None,
                created: 2,
            },
        );
        state
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("zt-docker-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = StateStore::new(&dir);
        assert_eq!(store.load().unwrap(), State::default());
        let state = sample();
        store.save(&state).unwrap();
        let mut expected = state;
        expected.version = STATE_VERSION;
        assert_eq!(store.load().unwrap(), expected);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_or_newer_state_is_refused_with_advice() {
        let dir = std::env::temp_dir().join(format!("zt-docker-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = StateStore::new(&dir);
        fs::write(store.path(), b"{not json").unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("move it away"), "{error}");
        fs::write(store.path(), br#"{"version": 99}"#).unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("newer"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn agent_keys_cover_reservations_and_kept_keys() {
        let mut state = sample();
        state.keys.insert(
            key_slot(NetworkId(0x8056_c2e2_1c00_0001), "web"),
            KeptKey {
                zt_network: NetworkId(0x8056_c2e2_1c00_0001),
                name: "web".into(),
                agent_key: "docker/00000000aaaa".parse().unwrap(),
                member: "a1b2c3d4e5".into(),
                ips: vec![],
            },
        );
        let keys: Vec<String> = state.agent_keys().iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["docker/00000000aaaa", "docker/0123456789ab"]);
    }
}
