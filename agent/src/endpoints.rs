//! Container endpoints (issue 4 groundwork): their records in `endpoints.d/` and the real
//! virtual port of an endpoint, a tap the agent creates, moves into the container's network
//! namespace and keeps the descriptor of.
//!
//! An endpoint record holds the endpoint's identity secret, so that a container coming back
//! under the same key keeps its ZeroTier address and addresses; records are written
//! atomically with mode 0600.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use node_core::vl2::config::{NetworkConfig, DEFAULT_MTU};
use node_core::vl2::{Mac, NetworkId};
use node_core::Address;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::driver::{EndpointFrame, EndpointPort};
use crate::home::{write_atomic, SECRET_MODE};
use crate::networks::{self, LocalSettings};
use crate::plumbing::{LinkSpec, NetnsRef, NetnsWorker, PlumbingError};
use crate::tap::Tap;

pub const ENDPOINTS_DIR: &str = "endpoints.d";
/// Longest endpoint key accepted: the plugin API's limit, so that every key it lets in has
/// a record.
pub const MAX_KEY_LEN: usize = crate::plugin_api::MAX_KEY_LEN;
/// Keys up to this long name their record by their hex form; longer ones by the SHA-256 of
/// the key (a hex name of 255 bytes would pass the file system's 255-byte name limit).
pub const MAX_HEX_NAMED_KEY: usize = 100;

/// What is kept of an endpoint across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRecord {
    /// The caller's stable key (e.g. `k8s/<namespace>/<pod>/<interface>`).
    pub key: String,
    /// 16 hex digits.
    pub network: String,
    /// The container's network namespace (a path).
    pub netns: PathBuf,
    pub if_name: String,
    /// `identity.secret`'s text form.
    pub identity: String,
    /// The attach request that made the endpoint (to make it again after a restart).
    /// `None`: no endpoint, only the key's identity (and config) kept for a later attach
    /// (a detach with `keepIdentity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<serde_json::Value>,
    /// For an endpoint without `netns`: the namespace its runtime moved the interface into
    /// (`POST /v1/sandbox`), where a restarted agent looks for it by its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<PathBuf>,
    /// The network's last config (its dictionary, in hex), applied at once after a restart
    /// while the controller is asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl EndpointRecord {
    /// The saved config, when there is one that parses and belongs to `network`.
    pub fn saved_config(&self, network: NetworkId) -> Option<NetworkConfig> {
        let bytes = hex::decode(self.config.as_deref()?).ok()?;
        NetworkConfig::from_bytes(&bytes)
            .ok()
            .filter(|c| c.network_id == network)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointStoreError {
    #[error("endpoint key is empty or longer than {MAX_KEY_LEN} bytes")]
    BadKey,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// `endpoints.d/` in the home folder: one JSON record per endpoint key.
#[derive(Clone, Debug)]
pub struct EndpointStore {
    dir: PathBuf,
}

impl EndpointStore {
    pub fn new(home: &Path) -> Self {
        Self {
            dir: home.join(ENDPOINTS_DIR),
        }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, EndpointStoreError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(EndpointStoreError::BadKey);
        }
        let name = if key.len() <= MAX_HEX_NAMED_KEY {
            hex::encode(key)
        } else {
            use sha2::Digest;
            format!(
                "sha256-{}",
                hex::encode(sha2::Sha256::digest(key.as_bytes()))
            )
        };
        Ok(self.dir.join(format!("{name}.json")))
    }

    pub fn save(&self, record: &EndpointRecord) -> Result<(), EndpointStoreError> {
        let path = self.path_of(&record.key)?;
        let io_error = |source| EndpointStoreError::Io {
            path: path.clone(),
            source,
        };
        // Records hold identity secrets: a folder others could write to would let them
        // plant a record (an identity they know) for a key.
        crate::home::create_dir_with_mode(&self.dir, crate::home::PRIVATE_DIR_MODE)
            .map_err(io_error)?;
        let text = serde_json::to_vec(record).unwrap_or_default();
        write_atomic(&path, &text, SECRET_MODE).map_err(io_error)
    }

    pub fn load(&self, key: &str) -> Result<Option<EndpointRecord>, EndpointStoreError> {
        let path = self.path_of(key)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice::<EndpointRecord>(&bytes)
                .ok()
                .filter(|record| record.key == key)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EndpointStoreError::Io { path, source }),
        }
    }

    /// Every record that reads back; unreadable files are skipped (and logged).
    pub fn load_all(&self) -> Vec<EndpointRecord> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).ok())
            {
                Some(record) => out.push(record),
                None => tracing::warn!("skipping unreadable endpoint record {}", path.display()),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The namespace paths the records' attach requests name.
    pub fn netns_paths(&self) -> Vec<PathBuf> {
        self.load_all()
            .into_iter()
            .filter_map(|record| {
                let netns = record.attach?.get("netns")?.as_str()?.to_string();
                Some(PathBuf::from(netns))
            })
            .collect()
    }

    /// Forgets an endpoint; forgetting an unknown one is not an error.
    pub fn remove(&self, key: &str) -> Result<bool, EndpointStoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(EndpointStoreError::Io { path, source }),
        }
    }
}

/// An endpoint's tap, living in the container's namespace under the name the runtime asked
/// for; the agent keeps its descriptor.
pub struct TapEndpointPort {
    tap: Arc<Tap>,
    worker: NetnsWorker,
    /// The container's namespace; `None` leaves the tap in ours for the caller to move
    /// (Docker does, and applies the addresses itself).
    netns: Option<NetnsRef>,
    if_name: String,
    mac: Mac,
    reader: JoinHandle<()>,
    /// The revision of the last config whose addresses and routes are in place, plus one
    /// (0: none yet); set by the netlink task when it is done.
    applied: Arc<AtomicU64>,
    /// Woken when a config has been applied (attaches wait for that).
    applied_notify: Arc<Notify>,
    /// The newest spec to apply; one task applies them in order, skipping superseded ones
    /// (an older spec applied after a newer one would remove the newer addresses).
    pending: watch::Sender<Option<(u64, LinkSpec)>>,
    configurer: Option<JoinHandle<()>>,
    options: PortOptions,
    /// Frames were delivered since the last flush.
    unflushed: bool,
}

impl TapEndpointPort {
    /// Creates the tap in our namespace under a temporary name, moves it into `netns` as
    /// `if_name`, gives it its MAC and MTU and brings it up; its frames go to `frames`
    /// tagged with `address`, and `applied_notify` is woken each time a config is in place.
    /// Without `netns` the tap stays in our namespace, named `if_name`. Must run inside a
    /// tokio runtime.
    pub async fn open(
        worker: NetnsWorker,
        address: Address,
        network: NetworkId,
        netns: Option<NetnsRef>,
        if_name: &str,
        (frames, applied_notify): (mpsc::Sender<EndpointFrame>, Arc<Notify>),
        options: PortOptions,
    ) -> Result<Self, PlumbingError> {
        let mac = Mac::from_address(address, network);
        let Some(netns) = netns else {
            // Named as asked, in our namespace, with its MAC and MTU and up; whoever moves it
            // (Docker) addresses it. Persistent: once moved it is the container's interface,
            // which must outlive an agent restart.
            let mtu = options.mtu.unwrap_or(DEFAULT_MTU);
            let tap = Tap::create_persistent(if_name, mac.0, mtu).map_err(|e| {
                PlumbingError::InvalidInput(format!("cannot create tap {if_name}: {e}"))
            })?;
            return Ok(Self::unmoved(
                tap,
                worker,
                address,
                if_name,
                (frames, applied_notify),
                options,
            ));
        };
        // A name unique on this host while the tap is still ours.
        let temporary = format!("zte{}", &address.to_string()[..8]);
        let tap = Tap::create(&temporary, mac.0, DEFAULT_MTU)
            .map_err(|e| PlumbingError::InvalidInput(format!("cannot create a tap: {e}")))?;
        let tap = Arc::new(tap);
        worker.move_link(&temporary, netns.clone(), if_name).await?;
        let spec = LinkSpec {
            mac: mac.0,
            mtu: options.mtu.unwrap_or(DEFAULT_MTU),
            up: true,
            ..LinkSpec::default()
        };
        worker.configure(netns.clone(), if_name, spec).await?;
        let reader = tokio::spawn(read_frames(address, tap.clone(), frames));
        Ok(Self {
            tap,
            worker,
            netns: Some(netns),
            if_name: if_name.to_string(),
            mac,
            reader,
            applied: Arc::new(AtomicU64::new(0)),
            applied_notify,
            pending: watch::Sender::new(None),
            configurer: None,
            options,
            unflushed: false,
        })
    }
}

impl TapEndpointPort {
    /// The port of an endpoint without `netns` from an earlier run of the agent: its
    /// persistent tap, found by its MAC in `location` (the namespace its runtime moved it
    /// into, or ours), is taken over as it is. `Ok(None)` when it is in neither (the
    /// container is gone); nothing is created.
    pub async fn reopen(
        worker: NetnsWorker,
        address: Address,
        network: NetworkId,
        location: NetnsRef,
        if_name: &str,
        (frames, applied_notify): (mpsc::Sender<EndpointFrame>, Arc<Notify>),
        options: PortOptions,
    ) -> Result<Option<Self>, PlumbingError> {
        let mac = Mac::from_address(address, network);
        let Some(opened) = worker.open_tap(location.clone(), mac.0).await? else {
            return Ok(None);
        };
        let tap =
            Tap::take_over(opened.device, opened.control, &opened.name, mac.0).map_err(|e| {
                PlumbingError::InvalidInput(format!(
                    "cannot take over tap {} in {location}: {e}",
                    opened.name
                ))
            })?;
        Ok(Some(Self::unmoved(
            tap,
            worker,
            address,
            if_name,
            (frames, applied_notify),
            options,
        )))
    }

    /// A port whose tap the runtime moves and addresses (no `netns`).
    fn unmoved(
        tap: Tap,
        worker: NetnsWorker,
        address: Address,
        if_name: &str,
        (frames, applied_notify): (mpsc::Sender<EndpointFrame>, Arc<Notify>),
        options: PortOptions,
    ) -> Self {
        let mac = Mac(tap.mac());
        let tap = Arc::new(tap);
        let reader = tokio::spawn(read_frames(address, tap.clone(), frames));
        Self {
            tap,
            worker,
            netns: None,
            if_name: if_name.to_string(),
            mac,
            reader,
            applied: Arc::new(AtomicU64::new(0)),
            applied_notify,
            pending: watch::Sender::new(None),
            configurer: None,
            options,
            unflushed: false,
        }
    }
}

impl Drop for TapEndpointPort {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(configurer) = &self.configurer {
            configurer.abort();
        }
    }
}

impl EndpointPort for TapEndpointPort {
    fn deliver(&mut self, frame: &[u8]) {
        self.unflushed = true;
        if let Err(e) = self.tap.send(frame) {
            tracing::debug!(interface = %self.if_name, "endpoint tap write failed: {e}");
        }
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.unflushed) {
            if let Err(e) = self.tap.flush() {
                tracing::debug!(interface = %self.if_name, "endpoint tap write failed: {e}");
            }
        }
    }

    fn configure(&mut self, config: &NetworkConfig) {
        let Some(netns) = self.netns.clone() else {
            // Whoever moved the interface applies the addresses (from the attach's answer).
            self.applied
                .store(config.revision.saturating_add(1), Ordering::Release);
            self.applied_notify.notify_one();
            return;
        };
        let spec = link_spec(self.mac, config, &self.options);
        self.pending.send_replace(Some((config.revision, spec)));
        if self.configurer.is_none() {
            // Netlink work happens on the worker's thread; the packet loop does not wait.
            self.configurer = Some(tokio::spawn(apply_configs(
                self.worker.clone(),
                netns,
                self.if_name.clone(),
                self.pending.subscribe(),
                self.applied.clone(),
                self.applied_notify.clone(),
            )));
        }
    }

    fn set_options(&mut self, options: PortOptions) {
        self.options = options;
        // Not in place until the next configure has been applied.
        if self.netns.is_some() {
            self.applied.store(0, Ordering::Release);
        }
    }

    fn is_applied(&self, revision: u64) -> bool {
        self.applied.load(Ordering::Acquire) == revision.saturating_add(1)
    }

    fn discard(&mut self) {
        // A persistent tap (no `netns`) would outlive its descriptor; make it go with it,
        // wherever it is now.
        if self.netns.is_none() {
            if let Err(e) = self.tap.set_persistent(false) {
                tracing::warn!(interface = %self.if_name, "cannot make the tap transient: {e}");
            }
        }
    }
}

/// What the attach asked for beyond the network's config.
#[derive(Clone, Debug, Default)]
pub struct PortOptions {
    /// Instead of the network's MTU.
    pub mtu: Option<u32>,
    /// A default route through the network's first gateway.
    pub default_route: bool,
    /// From the caller's IPAM.
    pub extra_ips: Vec<(std::net::IpAddr, u8)>,
    pub extra_routes: Vec<crate::netconf::ManagedRoute>,
}

impl PortOptions {
    pub fn of(request: &crate::plugin_api::AttachRequest) -> Self {
        Self {
            mtu: request.mtu,
            default_route: request.default_route,
            extra_ips: request
                .extra_ips
                .iter()
                .map(|p| (p.address, p.prefix_len))
                .collect(),
            extra_routes: request
                .extra_routes
                .iter()
                .map(|r| crate::netconf::ManagedRoute {
                    target: (r.dst.address, r.dst.prefix_len),
                    via: r.gateway,
                })
                .collect(),
        }
    }
}

/// The interface an endpoint should have under `config`.
pub fn link_spec(mac: Mac, config: &NetworkConfig, options: &PortOptions) -> LinkSpec {
    let settings = LocalSettings::default();
    let mut addresses = networks::managed_addresses(config, &settings);
    for extra in &options.extra_ips {
        if !addresses.contains(extra) {
            addresses.push(*extra);
        }
    }
    let mut routes = networks::managed_routes(config, &settings);
    routes.extend(options.extra_routes.iter().cloned());
    LinkSpec {
        mac: mac.0,
        mtu: options.mtu.unwrap_or(config.mtu),
        addresses,
        default_route_via: options
            .default_route
            .then(|| default_gateway(&routes))
            .flatten(),
        routes,
        up: true,
    }
}

/// The gateway a default route goes through: the first route's that has one, preferring
/// an IPv4 one.
pub fn default_gateway(routes: &[crate::netconf::ManagedRoute]) -> Option<std::net::IpAddr> {
    let gateways = || routes.iter().filter_map(|r| r.via);
    gateways()
        .find(std::net::IpAddr::is_ipv4)
        .or_else(|| gateways().next())
}

/// Applies an endpoint's specs one after the other, always the newest one pending.
async fn apply_configs(
    worker: NetnsWorker,
    netns: NetnsRef,
    if_name: String,
    mut pending: watch::Receiver<Option<(u64, LinkSpec)>>,
    applied: Arc<AtomicU64>,
    notify: Arc<Notify>,
) {
    // The spec sent before subscribing counts as unseen.
    pending.mark_changed();
    while pending.changed().await.is_ok() {
        let Some((revision, spec)) = pending.borrow_and_update().clone() else {
            continue;
        };
        match worker.configure(netns.clone(), &if_name, spec).await {
            Ok(()) => {
                applied.store(revision.saturating_add(1), Ordering::Release);
                notify.notify_one();
            }
            Err(e) => tracing::warn!(interface = %if_name, "cannot configure the endpoint: {e}"),
        }
    }
}

async fn read_frames(address: Address, tap: Arc<Tap>, frames: mpsc::Sender<EndpointFrame>) {
    let pumped = crate::ports::pump_frames(&tap, |frame| {
        let frames = &frames;
        async move { frames.send((address, frame)).await.is_ok() }
    })
    .await;
    if let Err(e) = pumped {
        tracing::error!(%address, "endpoint tap read failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::tests::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn record(key: &str) -> EndpointRecord {
        EndpointRecord {
            key: key.to_string(),
            network: "8056c2e21c000001".into(),
            netns: "/var/run/netns/c1".into(),
            if_name: "eth0".into(),
            identity: "0123456789:0:00:00".into(),
            attach: None,
            sandbox: None,
            config: None,
        }
    }

    #[test]
    fn records_round_trip_privately() {
        let dir = TempDir::new("endpoints");
        let store = EndpointStore::new(dir.path());
        assert!(store.load_all().is_empty());
        let a = record("k8s/default/web-0/eth0");
        let b = record("docker/6f1e");
        store.save(&a).unwrap();
        store.save(&b).unwrap();
        assert_eq!(store.load(&a.key).unwrap(), Some(a.clone()));
        assert_eq!(store.load_all(), vec![b.clone(), a.clone()]);
        let file = dir
            .path()
            .join(ENDPOINTS_DIR)
            .join(format!("{}.json", hex::encode(&a.key)));
        let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "records hold identity secrets");
        assert!(store.remove(&a.key).unwrap());
        assert!(!store.remove(&a.key).unwrap(), "removing twice is harmless");
        assert_eq!(store.load_all(), vec![b]);
        // A kept identity: no attach; a Docker endpoint's record names its sandbox.
        let mut kept = record("docker/kept");
        kept.sandbox = Some("/var/run/docker/netns/1a2b".into());
        store.save(&kept).unwrap();
        assert_eq!(store.load(&kept.key).unwrap(), Some(kept.clone()));
        // Records written before the field existed still read.
        let old = serde_json::json!({"key": "old", "network": "8056c2e21c000001",
            "netns": "", "ifName": "ztd0", "identity": "x"});
        let old: EndpointRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.sandbox, None);
        assert!(store.remove(&kept.key).unwrap());
        assert!(matches!(
            store.save(&record("")),
            Err(EndpointStoreError::BadKey)
        ));
        assert!(matches!(
            store.save(&record(&"k".repeat(MAX_KEY_LEN + 1))),
            Err(EndpointStoreError::BadKey)
        ));
    }

    /// Every key the plugin API accepts has a record, up to its 255 characters: a long
    /// key's file is named by its hash (a hex name would pass the 255-byte name limit).
    #[test]
    fn the_longest_keys_the_api_accepts_have_records() {
        let dir = TempDir::new("endpoints-long");
        let store = EndpointStore::new(dir.path());
        let short = record(&"s".repeat(MAX_HEX_NAMED_KEY));
        let long = record(&format!("k8s/{}/{}", "n".repeat(63), "p".repeat(187)));
        assert_eq!(long.key.len(), MAX_KEY_LEN);
        for record in [&short, &long] {
            store.save(record).unwrap();
            assert_eq!(store.load(&record.key).unwrap().as_ref(), Some(record));
        }
        assert_eq!(store.load_all().len(), 2);
        for entry in fs::read_dir(dir.path().join(ENDPOINTS_DIR)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(name.len() <= 255, "{name:?}");
        }
        assert!(store.remove(&long.key).unwrap());
        assert_eq!(store.load_all(), vec![short]);
    }
}
