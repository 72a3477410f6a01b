//! Network namespaces given to an attach as a file descriptor of the caller (`netnsFd`)
//! rather than a path.
//!
//! The descriptor is the caller's, so the agent reaches it through the caller's process:
//! the peer credentials of the plugin socket give its pid, and `/proc/<pid>/fd/<n>` is its
//! descriptor `n`. [`open_caller_netns`] opens that (with `O_PATH`: no side effect, no
//! blocking, whatever the descriptor is) and accepts it only when it is a network namespace:
//! a file of the namespace filesystem (nsfs), and then (opened for reading, which for an
//! nsfs file has no side effect either) of type `CLONE_NEWNET` (`ioctl NS_GET_NSTYPE`). Both
//! are checked on the agent's own descriptor, so a caller that swaps its descriptor meanwhile
//! changes nothing.
//!
//! A descriptor does not survive an agent restart, and the endpoint must be restored into
//! the same namespace after one. So [`NetnsPins`] pins the namespace with a bind mount at
//! `<pins>/net-<inode>` (what `ip netns add` does under /run/netns), and that path becomes
//! the endpoint's `netns`. One pin serves every endpoint in the namespace. A pin that no
//! endpoint record names (and no attach in flight holds) is unmounted and removed by
//! [`NetnsPins::sweep`], which the server runs after detach, gc and failed attaches.
//!
//! The mount lives in the agent's mount namespace: for pins to outlive the agent's process,
//! the agent runs in the host's mount namespace (or, in a container, with the pins folder on
//! a host path with bidirectional mount propagation). Pins whose mount is gone (after a
//! reboot, or when the agent's private mount namespace ended with it) are plain files; they
//! are removed when the pins are opened ([`NetnsPins::open`]), so that the endpoints that
//! named them count as "namespace gone" instead of failing to restore.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A file of nsfs to compare device numbers with (our own network namespace).
const OWN_NETNS: &str = "/proc/self/ns/net";
/// File names of pins: this prefix and the namespace's inode number.
const PIN_PREFIX: &str = "net-";

/// Why a `netnsFd` is refused or cannot be pinned.
#[derive(Debug, thiserror::Error)]
pub enum NetnsFdError {
    /// The peer's pid is unknown (its process is in a PID namespace the agent cannot see).
    #[error(
        "netnsFd needs the calling process, which the agent cannot see (another PID namespace?): give netns as a path"
    )]
    NoCallerProcess,
    #[error("netnsFd {fd} is not a file descriptor number")]
    BadNumber { fd: i32 },
    /// The caller holds no such descriptor.
    #[error("the calling process (pid {pid}) has no open file descriptor {fd}")]
    NotOpen { pid: i32, fd: i32 },
    #[error("cannot open file descriptor {fd} of the calling process (pid {pid}): {source}")]
    Open {
        pid: i32,
        fd: i32,
        source: io::Error,
    },
    /// The descriptor is something else than a network namespace.
    #[error("file descriptor {fd} of the calling process is not a network namespace but {what}")]
    NotNetns { fd: i32, what: String },
    #[error("cannot pin the network namespace at {}: {source}", .path.display())]
    Pin { path: PathBuf, source: io::Error },
}

impl NetnsFdError {
    /// Whether the caller's input is at fault (as opposed to the agent's system).
    pub fn is_callers(&self) -> bool {
        !matches!(self, Self::Pin { .. })
    }
}

/// A network namespace the agent holds open (an `O_PATH` descriptor), and its inode number.
#[derive(Debug)]
pub struct OpenNetns {
    file: File,
    inode: u64,
}

impl OpenNetns {
    pub fn inode(&self) -> u64 {
        self.inode
    }
}

/// Opens descriptor `fd` of process `pid` (the plugin socket's peer) and checks that it is a
/// network namespace.
pub fn open_caller_netns(pid: Option<i32>, fd: i32) -> Result<OpenNetns, NetnsFdError> {
    let pid = pid
        .filter(|pid| *pid > 0)
        .ok_or(NetnsFdError::NoCallerProcess)?;
    if fd < 0 {
        return Err(NetnsFdError::BadNumber { fd });
    }
    let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&link)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => NetnsFdError::NotOpen { pid, fd },
            _ => NetnsFdError::Open { pid, fd, source },
        })?;
    let open = |source| NetnsFdError::Open { pid, fd, source };
    let meta = file.metadata().map_err(open)?;
    let own_link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let target = std::fs::read_link(&own_link).map_err(open)?;
    let target = target.to_string_lossy();
    let not_netns = |what| NetnsFdError::NotNetns { fd, what };
    check_netns(meta.dev(), nsfs_device()?, None, &target).map_err(not_netns)?;
    // An nsfs file: reading it is harmless, and its type needs a readable descriptor.
    let file = File::open(&own_link).map_err(open)?;
    let namespace_type = namespace_type(&file).map_err(open)?;
    check_netns(meta.dev(), nsfs_device()?, Some(namespace_type), &target).map_err(not_netns)?;
    Ok(OpenNetns {
        file,
        inode: meta.ino(),
    })
}

/// `NS_GET_NSTYPE` of `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The `CLONE_NEW*` type of the namespace `file` is (a file of nsfs).
#[allow(unsafe_code)]
fn namespace_type(file: &File) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value; the descriptor is
    // open for the duration of the call (borrowed from `file`).
    let result = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The device number of nsfs.
fn nsfs_device() -> Result<u64, NetnsFdError> {
    std::fs::metadata(OWN_NETNS)
        .map(|m| m.dev())
        .map_err(|source| NetnsFdError::Pin {
            path: OWN_NETNS.into(),
            source,
        })
}

/// Whether a file on device `dev` whose namespace type is `namespace_type` (when known) is a
/// network namespace; if not, what it is instead, by its `/proc` link text `target`.
fn check_netns(
    dev: u64,
    nsfs: u64,
    namespace_type: Option<i32>,
    target: &str,
) -> Result<(), String> {
    if dev != nsfs {
        return Err(format!("{target:?}"));
    }
    match namespace_type {
        Some(libc::CLONE_NEWNET) | None => Ok(()),
        // Another kind of namespace: `mnt:[...]`, `pid:[...]`...
        Some(other) => Err(format!("namespace {target:?} (type {other:#x})")),
    }
}

/// The inode a pin's file name stands for (`net-<inode>`).
fn pin_inode(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PIN_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where namespaces given by descriptor are pinned, and the pins being used by attaches in
/// flight.
#[derive(Debug)]
pub struct NetnsPins {
    dir: PathBuf,
    /// Pins made or reused by attaches that have not finished, by path, with how many.
    /// Held across a whole sweep so that a sweep and a new pin never interleave.
    in_flight: tokio::sync::Mutex<HashMap<PathBuf, usize>>,
}

impl NetnsPins {
    /// Pins in `dir` (created on the first pin). Pins there whose mount is gone are removed
    /// now (see the module's documentation).
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        let pins = Self {
            dir: dir.into(),
            in_flight: tokio::sync::Mutex::default(),
        };
        if let Ok(nsfs) = nsfs_device() {
            for (path, _) in pins.listed() {
                let mounted = std::fs::metadata(&path).is_ok_and(|m| m.dev() == nsfs);
                if !mounted {
                    tracing::info!(pin = %path.display(), "removing a namespace pin whose mount is gone");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        pins
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pin files in the folder, with their inode numbers.
    fn listed(&self) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let inode = pin_inode(entry.file_name().to_str()?)?;
                Some((entry.path(), inode))
            })
            .collect()
    }

    /// Pins `netns` (or finds it pinned) and returns the pin's path, counted as in flight
    /// until [`Self::release`].
    pub async fn pin(&self, netns: &OpenNetns) -> Result<PathBuf, NetnsFdError> {
        let mut in_flight = self.in_flight.lock().await;
        let path = self.dir.join(format!("{PIN_PREFIX}{}", netns.inode));
        let failed = |source| NetnsFdError::Pin {
            path: path.clone(),
            source,
        };
        let nsfs = nsfs_device()?;
        let pinned =
            std::fs::metadata(&path).is_ok_and(|m| m.dev() == nsfs && m.ino() == netns.inode);
        if !pinned {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(failed)?;
            // A mount point: an empty file (a stale one from a gone mount is reused).
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(failed)?;
            let source = format!("/proc/self/fd/{}", netns.file.as_raw_fd());
            if let Err(errno) = mount(
                Some(source.as_str()),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ) {
                let _ = std::fs::remove_file(&path);
                return Err(failed(io::Error::from(errno)));
            }
            tracing::info!(pin = %path.display(), "pinned a network namespace given by descriptor");
        }
        *in_flight.entry(path.clone()).or_default() += 1;
        Ok(path)
    }

    /// The attach that pinned `path` has finished (its endpoint record names the pin, or
    /// there is none and the next sweep removes it).
    pub async fn release(&self, path: &Path) {
        let mut in_flight = self.in_flight.lock().await;
        if let Some(count) = in_flight.get_mut(path) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(path);
            }
        }
    }

    /// Unmounts and removes every pin that no path of `in_use` names and no attach in
    /// flight holds; returns how many. `in_use` runs under the lock, so that an attach
    /// finishing meanwhile is either still in flight or already in its answer.
    pub async fn sweep<F>(&self, in_use: F) -> usize
    where
        F: Future<Output = Option<Vec<PathBuf>>>,
    {
        let in_flight = self.in_flight.lock().await;
        let listed = self.listed();
        if listed.is_empty() {
            return 0;
        }
        // Without a list of what is in use nothing is known to be unused.
        let Some(in_use) = in_use.await else {
            return 0;
        };
        let in_use: HashSet<PathBuf> = in_use.into_iter().collect();
        let mut removed = 0;
        for (path, _) in listed {
            if in_use.contains(&path) || in_flight.contains_key(&path) {
                continue;
            }
            match unpin(&path) {
                Ok(()) => {
                    tracing::info!(pin = %path.display(), "unpinned a network namespace");
                    removed += 1;
                }
                Err(e) => tracing::warn!(pin = %path.display(), "cannot unpin: {e}"),
            }
        }
        removed
    }
}

/// Unmounts a pin (if it is mounted) and removes its file.
fn unpin(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (any more).
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(errno) => return Err(errno.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_namespaces_pass() {
        let (nsfs, net) = (4, Some(libc::CLONE_NEWNET));
        assert!(check_netns(4, nsfs, net, "net:[4026531840]").is_ok());
        // A bind mount of one (`ip netns add`) links to its path.
        assert!(check_netns(4, nsfs, net, "/run/netns/c1").is_ok());
        // Another kind of namespace, on nsfs too.
        let mount_ns = check_netns(4, nsfs, Some(libc::CLONE_NEWNS), "mnt:[4026531841]");
        assert!(mount_ns.unwrap_err().contains("mnt:"));
        // Files that only look like one.
        let file = check_netns(2049, nsfs, None, "/tmp/net:[12]").unwrap_err();
        assert!(file.contains("/tmp/net:[12]"), "{file}");
        assert!(check_netns(2049, nsfs, net, "net:[12]").is_err());
    }

    #[test]
    fn pin_names_carry_an_inode() {
        assert_eq!(pin_inode("net-4026532000"), Some(4026532000));
        for name in [
            "net-",
            "net-12a",
            "net--1",
            "mnt-12",
            "net-99999999999999999999999",
        ] {
            assert_eq!(pin_inode(name), None, "{name}");
        }
    }

    #[test]
    fn caller_descriptors_are_checked() {
        let pid = Some(std::process::id() as i32);
        assert!(matches!(
            open_caller_netns(None, 0),
            Err(NetnsFdError::NoCallerProcess)
        ));
        assert!(matches!(
            open_caller_netns(Some(0), 0),
            Err(NetnsFdError::NoCallerProcess)
        ));
        assert!(matches!(
            open_caller_netns(pid, -1),
            Err(NetnsFdError::BadNumber { fd: -1 })
        ));
        assert!(matches!(
            open_caller_netns(pid, 999_999),
            Err(NetnsFdError::NotOpen { fd: 999_999, .. })
        ));
        // A regular file is refused, and the message says what it is.
        let file = File::open("/proc/self/status").unwrap();
        let error = open_caller_netns(pid, file.as_raw_fd()).unwrap_err();
        assert!(matches!(error, NetnsFdError::NotNetns { .. }), "{error}");
        assert!(error.is_callers());
        // Our own network namespace passes (readable by any user).
        let own = File::open(OWN_NETNS).unwrap();
        let netns = open_caller_netns(pid, own.as_raw_fd()).unwrap();
        assert_eq!(netns.inode(), std::fs::metadata(OWN_NETNS).unwrap().ino());
        // Another namespace kind does not.
        let user_ns = File::open("/proc/self/ns/user").unwrap();
        let error = open_caller_netns(pid, user_ns.as_raw_fd()).unwrap_err();
        assert!(error.to_string().contains("user:["), "{error}");
        // Nor does a socket (its link reads `socket:[...]`) or a pipe.
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let error = open_caller_netns(pid, socket.as_raw_fd()).unwrap_err();
        assert!(error.to_string().contains("socket:["), "{error}");
    }
}
