//! The host side of joined networks: one tap per network ("virtual port"), the managed
//! addresses, routes and MTU on it, its multicast groups, and `networks.d/`.
//!
//! Frames read from a tap go to the driver over a channel, tagged with their network; frames
//! for a tap are written straight to it (a full queue drops the frame, as a NIC would).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use node_core::node::NetworkInfo;
use node_core::vl2::config::{NetworkConfig, DEFAULT_MTU};
use node_core::vl2::{Mac, MulticastGroup, NetworkId};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::netconf::{self, Applied};
use crate::networks::{self, LocalSettings, NetworksDir};
use crate::offload::{self, SplitRead};
use crate::tap::{self, Tap};

/// Frames from all taps waiting for the driver.
pub const FRAME_QUEUE: usize = 4096;
/// Largest frame read from a tap: the largest ZeroTier MTU and an Ethernet header.
const TAP_READ_BUFFER: usize = 10_000 + 14 + 4;

/// A frame read from a network's tap, for the host's node.
pub type TapFrame = (NetworkId, FrameBuf);

/// Frames a tap reader takes in one wake-up before it waits again.
pub const TAP_BATCH: usize = 64;
/// Free frame buffers a reader keeps (frames in flight beyond this are freed when done).
const FRAME_POOL_MAX_FREE: usize = 32;

/// The frame buffers of one tap reader: the reader fills them, the driver drops them once
/// its node took the frame, and dropping gives them back. Frames thus cross the channel to
/// the driver without an allocation each.
#[derive(Clone, Default)]
pub struct FramePool(Arc<Mutex<Vec<Vec<u8>>>>);

impl FramePool {
    /// A buffer of [`TAP_READ_BUFFER`] bytes to read one frame into.
    pub fn take(&self) -> FrameBuf {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        FrameBuf {
            buf: reused.unwrap_or_else(|| vec![0; TAP_READ_BUFFER]),
            len: 0,
            pool: Some(self.clone()),
        }
    }
}

/// One Ethernet frame in a reader's buffer; it derefs to the frame's bytes.
pub struct FrameBuf {
    /// Always [`TAP_READ_BUFFER`] bytes long, whatever the frame's length, so that reuse
    /// never zeroes or grows it.
    buf: Vec<u8>,
    len: usize,
    pool: Option<FramePool>,
}

impl FrameBuf {
    /// A frame of its own, in no pool (tests, and frames made by the agent itself).
    pub fn copy_of(frame: &[u8]) -> Self {
        Self {
            buf: frame.to_vec(),
            len: frame.len(),
            pool: None,
        }
    }

    /// The whole buffer, to read a frame into; then [`FrameBuf::set_len`].
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
    }
}

impl std::ops::Deref for FrameBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        if let Ok(mut free) = pool.0.lock() {
            if free.len() < FRAME_POOL_MAX_FREE {
                free.push(std::mem::take(&mut self.buf));
            }
        };
    }
}

/// Reads frames from `tap` into pooled buffers and hands them to `deliver` (which awaits
/// room in the driver's channel), until the tap fails or `deliver` says stop. Each wake-up
/// takes every frame waiting, up to [`TAP_BATCH`].
pub async fn pump_frames<F, Fut>(tap: &Tap, deliver: F) -> std::io::Result<()>
where
    F: FnMut(FrameBuf) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if tap.has_vnet_header() {
        pump_offloaded_frames(tap, deliver).await
    } else {
        pump_plain_frames(tap, deliver).await
    }
}

/// [`pump_frames`] for a tap with offloads: each read (a `virtio_net_hdr`, then a frame or
/// a TCP super-frame) lands in one buffer of the reader's and is cut into MTU-sized frames
/// in pooled buffers, with their checksums complete.
async fn pump_offloaded_frames<F, Fut>(tap: &Tap, mut deliver: F) -> std::io::Result<()>
where
    F: FnMut(FrameBuf) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let pool = FramePool::default();
    let mut read = vec![0u8; offload::VNET_HDR_LEN + offload::MAX_OFFLOAD_FRAME];
    loop {
        let mut len = tap.recv(&mut read).await?;
        let mut taken = 0;
        loop {
            taken += 1;
            match offload::split_read(&mut read[..len], TAP_READ_BUFFER) {
                Ok(SplitRead::Frame(frame)) => {
                    if !frame.is_empty() {
                        let mut buf = pool.take();
                        buf.space()[..frame.len()].copy_from_slice(frame);
                        buf.set_len(frame.len());
                        if !deliver(buf).await {
                            return Ok(());
                        }
                    }
                }
                Ok(SplitRead::Segments(segments)) => {
                    for index in 0..segments.len() {
                        let mut buf = pool.take();
                        let len = segments.write(index, buf.space());
                        buf.set_len(len);
                        if !deliver(buf).await {
                            return Ok(());
                        }
                    }
                }
                Err(e) => tracing::debug!(device = tap.name(), "tap frame dropped: {e}"),
            }
            if taken == TAP_BATCH {
                break;
            }
            len = match tap.try_recv(&mut read) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
        }
    }
}

/// [`pump_frames`] for a tap without offloads: one plain frame per read, straight into a
/// pooled buffer.
async fn pump_plain_frames<F, Fut>(tap: &Tap, mut deliver: F) -> std::io::Result<()>
where
    F: FnMut(FrameBuf) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let pool = FramePool::default();
    loop {
        let mut frame = pool.take();
        let len = tap.recv(frame.space()).await?;
        frame.set_len(len);
        if len > 0 && !deliver(frame).await {
            return Ok(());
        }
        for _ in 1..TAP_BATCH {
            let mut frame = pool.take();
            match tap.try_recv(frame.space()) {
                Ok(0) => continue,
                Ok(len) => {
                    frame.set_len(len);
                    if !deliver(frame).await {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One network's port.
struct Port {
    tap: Option<Arc<Tap>>,
    name: String,
    settings: LocalSettings,
    applied: Applied,
    reader: Option<JoinHandle<()>>,
    /// Frames were delivered since the last flush.
    unflushed: bool,
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Every joined network's port, and `networks.d/`.
pub struct Ports {
    dir: Option<NetworksDir>,
    ports: BTreeMap<NetworkId, Port>,
    frames: mpsc::Sender<TapFrame>,
}

impl Ports {
    /// `dir` = `None` persists nothing (tests). Frames read from taps go to `frames`.
    pub fn new(dir: Option<NetworksDir>, frames: mpsc::Sender<TapFrame>) -> Self {
        if let Some(dir) = &dir {
            if let Err(e) = dir.create() {
                tracing::warn!("cannot create networks.d: {e}");
            }
        }
        Self {
            dir,
            ports: BTreeMap::new(),
            frames,
        }
    }

    /// Networks joined in an earlier run, with their saved configs.
    pub fn saved(&self) -> Vec<(NetworkId, Option<NetworkConfig>, LocalSettings)> {
        self.dir
            .as_ref()
            .map(NetworksDir::joined)
            .unwrap_or_default()
    }

    pub fn is_open(&self, nwid: NetworkId) -> bool {
        self.ports.contains_key(&nwid)
    }

    /// Creates the network's tap (ZeroTier One's name for it) with our MAC on that network.
    /// Without the privilege to make taps the network stays joined with no port, and says so.
    pub fn open(
        &mut self,
        nwid: NetworkId,
        mac: Mac,
        mtu: u32,
        settings: LocalSettings,
        persist: bool,
    ) {
        if self.ports.contains_key(&nwid) {
            return;
        }
        if persist {
            if let Some(dir) = &self.dir {
                if let Err(e) = dir
                    .save_joined(nwid)
                    .and_then(|()| dir.save_settings(nwid, &settings))
                {
                    tracing::error!(network = %nwid, "cannot record the join in networks.d: {e}");
                }
            }
        }
        let made = tap::free_interface_name(nwid.0).and_then(|name| Tap::create(&name, mac.0, mtu));
        let port = match made {
            Ok(device) => {
                let device = Arc::new(device);
                tracing::info!(network = %nwid, device = device.name(), "virtual port up");
                let reader = tokio::spawn(read_frames(nwid, device.clone(), self.frames.clone()));
                Port {
                    name: device.name().to_string(),
                    tap: Some(device),
                    settings,
                    applied: Applied::default(),
                    reader: Some(reader),
                    unflushed: false,
                }
            }
            Err(e) => {
                tracing::error!(network = %nwid, "cannot create the network's tap device: {e}");
                Port {
                    tap: None,
                    name: String::new(),
                    settings,
                    applied: Applied::default(),
                    reader: None,
                    unflushed: false,
                }
            }
        };
        self.ports.insert(nwid, port);
    }

    /// Removes the port (the tap goes with it) and forgets the network in `networks.d/`.
    pub fn close(&mut self, nwid: NetworkId) -> bool {
        let existed = self.ports.remove(&nwid).is_some();
        if let Some(dir) = &self.dir {
            if let Err(e) = dir.remove(nwid) {
                tracing::warn!(network = %nwid, "cannot remove its networks.d files: {e}");
            }
        }
        existed
    }

    /// A frame for the network's tap; it may be held back until [`Ports::flush`].
    pub fn deliver(&mut self, nwid: NetworkId, frame: &[u8]) {
        if let Some(port) = self.ports.get_mut(&nwid) {
            if let Some(tap) = &port.tap {
                port.unflushed = true;
                if let Err(e) = tap.send(frame) {
                    tracing::debug!(network = %nwid, "tap write failed: {e}");
                }
            }
        }
    }

    /// Writes what [`Ports::deliver`] held back (TCP segments waiting to be merged): at the
    /// end of every batch.
    pub fn flush(&mut self) {
        for (nwid, port) in &mut self.ports {
            if !std::mem::take(&mut port.unflushed) {
                continue;
            }
            if let Some(tap) = &port.tap {
                if let Err(e) = tap.flush() {
                    tracing::debug!(network = %nwid, "tap write failed: {e}");
                }
            }
        }
    }

    /// A new config: persist it, then apply MTU, addresses and routes as the settings allow.
    pub fn configure(&mut self, nwid: NetworkId, config: &NetworkConfig, dictionary: &[u8]) {
        if let Some(dir) = &self.dir {
            if let Err(e) = dir.save_config(nwid, dictionary) {
                tracing::error!(network = %nwid, "cannot save the network config: {e}");
            }
        }
        self.apply(nwid, Some(config));
    }

    /// (Re)applies what the config manages on the tap; `None` removes all of it. A config
    /// read back from `networks.d/` is applied with this, without writing it again.
    pub fn apply(&mut self, nwid: NetworkId, config: Option<&NetworkConfig>) {
        let Some(port) = self.ports.get_mut(&nwid) else {
            return;
        };
        let Some(tap) = &port.tap else {
            return;
        };
        let (mtu, addresses, routes) = match config {
            Some(config) => (
                config.mtu,
                networks::managed_addresses(config, &port.settings),
                networks::managed_routes(config, &port.settings),
            ),
            None => (DEFAULT_MTU, Vec::new(), Vec::new()),
        };
        if let Err(e) = tap.set_mtu(mtu) {
            tracing::warn!(network = %nwid, "cannot set the MTU to {mtu}: {e}");
        }
        match netconf::apply(&port.name, mtu, &addresses, &routes, &port.applied) {
            Ok(applied) => port.applied = applied,
            Err(e) => {
                tracing::warn!(network = %nwid, "managed addresses/routes: {e}");
                port.applied = e.applied;
            }
        }
    }

    /// `POST /network/<nwid>` on a joined network: new settings, saved and applied.
    pub fn update_settings(
        &mut self,
        nwid: NetworkId,
        body: &Value,
        config: Option<&NetworkConfig>,
    ) -> LocalSettings {
        let Some(port) = self.ports.get_mut(&nwid) else {
            return LocalSettings::default();
        };
        let before = port.settings;
        port.settings.update_from_json(body);
        let settings = port.settings;
        if settings != before {
            if let Some(dir) = &self.dir {
                if let Err(e) = dir.save_settings(nwid, &settings) {
                    tracing::warn!(network = %nwid, "cannot save local.conf: {e}");
                }
            }
            self.apply(nwid, config);
        }
        settings
    }

    /// The multicast groups the OS has on each tap (`/proc/net/dev_mcast`).
    pub fn multicast_groups(&self) -> Vec<(NetworkId, Vec<MulticastGroup>)> {
        self.ports
            .iter()
            .filter(|(_, p)| !p.name.is_empty())
            .filter_map(|(nwid, p)| {
                let macs = netconf::multicast_groups(&p.name).ok()?;
                let groups = macs
                    .into_iter()
                    .map(|mac| MulticastGroup {
                        mac: Mac(mac),
                        adi: 0,
                    })
                    .collect();
                Some((*nwid, groups))
            })
            .collect()
    }

    /// ZeroTier One's `/network` object for a joined network.
    pub fn network_json(&self, info: &NetworkInfo) -> Value {
        let (name, settings) = self
            .ports
            .get(&info.id)
            .map_or((String::new(), LocalSettings::default()), |p| {
                (p.name.clone(), p.settings)
            });
        networks::network_json(info, &name, &settings)
    }
}

/// Reads frames from a tap until it fails or the task is aborted.
async fn read_frames(nwid: NetworkId, tap: Arc<Tap>, frames: mpsc::Sender<TapFrame>) {
    let pumped = pump_frames(&tap, |frame| {
        let frames = &frames;
        async move { frames.send((nwid, frame)).await.is_ok() }
    })
    .await;
    if let Err(e) = pumped {
        tracing::error!(network = %nwid, "tap read failed, port stopped: {e}");
    }
}
