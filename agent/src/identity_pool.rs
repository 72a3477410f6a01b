//! A small pool of ready-made identities for container endpoints.
//!
//! Generating a ZeroTier identity means searching for a key whose memory-hard hash meets a
//! criterion: about fifteen 2 MiB hashes, a good fraction of a second and sometimes more. An
//! endpoint attach should not wait for that, so the agent keeps a few identities generated
//! ahead of time. [`IdentityPool::take`] hands one out at once and wakes a refiller that
//! makes the next one on tokio's blocking pool, one at a time so that it never occupies more
//! than one core. Only when the pool is empty does a caller wait for a generation of its own.
//!
//! A pool made with [`IdentityPool::persistent`] keeps its identities in a file (one
//! `identity.secret` line each, mode 0600, replaced atomically on every change) so that a
//! restarted agent does not start cold. An identity is removed from the file before `take`
//! returns it, so no identity is ever handed out twice, even across a crash.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use node_core::identity::MemoryHardScratch;
use node_core::Identity;
use tokio::sync::Notify;

use crate::home::{write_atomic, SECRET_MODE};

/// A shared pool of identities with their secrets. Cloning shares the pool.
#[derive(Clone)]
pub struct IdentityPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// How many identities the refiller keeps ready.
    target: usize,
    ready: Mutex<VecDeque<Identity>>,
    /// Wakes the refiller: an identity was taken, or the pool is being dropped. Outside
    /// `Inner` so that the refiller can wait on it without keeping the pool alive.
    wake: Arc<Notify>,
    /// Set once a refiller runs, so that a second `start` does not add another.
    refilling: AtomicBool,
    store: Option<Store>,
}

/// The file a persistent pool keeps its identities in.
struct Store {
    path: PathBuf,
    /// Held while a snapshot is taken and written, so that writes land in the order their
    /// snapshots were taken and an older one never replaces a newer one.
    writing: Mutex<()>,
}

impl IdentityPool {
    /// A file name for [`IdentityPool::persistent`] in the home folder.
    pub const FILE_NAME: &'static str = "endpoint-identities.secret";

    /// An empty pool that keeps `target` identities ready once [`IdentityPool::start`]ed,
    /// in memory only.
    pub fn new(target: usize) -> Self {
        Self::with_contents(target, VecDeque::new(), None)
    }

    /// A pool kept in the file at `path`, starting with the identities saved there by an
    /// earlier run. Lines that do not hold a valid identity with its secret are dropped; a
    /// missing or unreadable file means an empty pool. Checking each saved identity costs
    /// one memory-hard hash, so this blocks for a few milliseconds per identity.
    pub fn persistent(target: usize, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let saved = load(&path);
        Self::with_contents(
            target,
            saved,
            Some(Store {
                path,
                writing: Mutex::new(()),
            }),
        )
    }

    fn with_contents(target: usize, ready: VecDeque<Identity>, store: Option<Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                target,
                ready: Mutex::new(ready),
                wake: Arc::new(Notify::new()),
                refilling: AtomicBool::new(false),
                store,
            }),
        }
    }

    /// Starts the refiller, which generates identities whenever fewer than the target are
    /// ready. Must be called within a tokio runtime; later calls do nothing. The refiller
    /// ends when every clone of the pool is dropped.
    pub fn start(&self) {
        if self.inner.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(refill(Arc::downgrade(&self.inner), self.inner.wake.clone()));
    }

    /// A fresh identity with its secret: a ready one at once, or, if there is none, one
    /// generated now on the blocking pool.
    pub async fn take(&self) -> Identity {
        let ready = self.inner.lock_ready().pop_front();
        self.inner.wake.notify_one();
        match ready {
            Some(identity) => {
                // Out of the file before the caller has it, so a restart cannot offer it again.
                save(&self.inner).await;
                identity
            }
            None => generate().await,
        }
    }

    /// How many identities are ready now.
    pub fn ready(&self) -> usize {
        self.inner.lock_ready().len()
    }

    /// How many identities the refiller keeps ready.
    pub fn target(&self) -> usize {
        self.inner.target
    }
}

impl fmt::Debug for IdentityPool {
    /// Counts only: the identities carry secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityPool")
            .field("target", &self.inner.target)
            .field("ready", &self.ready())
            .field(
                "file",
                &self.inner.store.as_ref().map(|store| store.path.display()),
            )
            .finish()
    }
}

impl Inner {
    fn lock_ready(&self) -> MutexGuard<'_, VecDeque<Identity>> {
        // A panic elsewhere while holding the lock leaves a queue that is still consistent.
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the ready identities to the file. If that fails the file is removed instead:
    /// a file still listing a taken identity could hand it out again after a restart.
    fn save_now(&self) -> io::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _writing = store.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::new();
        for identity in self.lock_ready().iter() {
            if let Some(secret) = identity.to_secret_string() {
                text.push_str(&secret);
                text.push('\n');
            }
        }
        write_atomic(&store.path, text.as_bytes(), SECRET_MODE).inspect_err(|_| {
            let _ = fs::remove_file(&store.path);
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the refiller notice that the pool is gone.
        self.wake.notify_one();
    }
}

/// Saves the pool on the blocking pool (file writes and an fsync), logging a failure.
async fn save(inner: &Arc<Inner>) {
    if inner.store.is_none() {
        return;
    }
    let saving = Arc::clone(inner);
    let result = tokio::task::spawn_blocking(move || saving.save_now()).await;
    let result = match result {
        Ok(result) => result,
        // The runtime is shutting down and did not run the save; `take` must not return
        // before the file is written, so write it here.
        Err(_) => inner.save_now(),
    };
    if let (Err(error), Some(store)) = (result, &inner.store) {
        tracing::warn!(
            "cannot save the identity pool to {}: {error}",
            store.path.display()
        );
    }
}

/// Generates one identity on the blocking pool.
async fn generate() -> Identity {
    tokio::task::spawn_blocking(|| Identity::generate(&mut rand_core::OsRng))
        .await
        // Only when the runtime is shutting down: generate here rather than fail.
        .unwrap_or_else(|_| Identity::generate(&mut rand_core::OsRng))
}

/// The refiller: tops the pool up to its target, one identity at a time, then sleeps until
/// woken. Holds the pool only weakly, so it ends when the pool is dropped.
async fn refill(pool: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        loop {
            let Some(inner) = pool.upgrade() else {
                return;
            };
            if inner.lock_ready().len() >= inner.target {
                break;
            }
            drop(inner);
            let Ok(identity) =
                tokio::task::spawn_blocking(|| Identity::generate(&mut rand_core::OsRng)).await
            else {
                // The runtime is shutting down.
                return;
            };
            let Some(inner) = pool.upgrade() else {
                return;
            };
            inner.lock_ready().push_back(identity);
            save(&inner).await;
        }
        wake.notified().await;
    }
}

/// The valid identities with secrets in the pool file at `path`, without duplicates.
fn load(path: &Path) -> VecDeque<Identity> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return VecDeque::new(),
        Err(error) => {
            tracing::warn!(
                "cannot read the identity pool {}: {error}; starting empty",
                path.display()
            );
            return VecDeque::new();
        }
    };
    let mut scratch = MemoryHardScratch::new();
    let mut seen = HashSet::new();
    let mut identities = VecDeque::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        match line.parse::<Identity>() {
            Ok(identity)
                if identity.has_secret() && identity.locally_validate_with(&mut scratch) =>
            {
                if seen.insert(identity.address()) {
                    identities.push_back(identity);
                }
            }
            _ => tracing::warn!(
                "dropping an invalid line of the identity pool {}",
                path.display()
            ),
        }
    }
    identities
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::tests::TempDir;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    /// Waits (up to a generous bound: debug builds generate slowly) until `pool` holds
    /// `count` identities.
    async fn wait_for_ready(pool: &IdentityPool, count: usize) {
        tokio::time::timeout(Duration::from_secs(120), async {
            while pool.ready() < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the pool never held {count} identities: {pool:?}"));
    }

    fn assert_usable(identity: &Identity) {
        assert!(identity.has_secret(), "{identity:?} has no secret");
        assert!(identity.locally_validate(), "{identity:?} is not valid");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn taken_identities_are_distinct_and_valid_with_secrets() {
        let pool = IdentityPool::new(2);
        pool.start();
        let mut addresses = HashSet::new();
        for _ in 0..3 {
            let identity = pool.take().await;
            assert_usable(&identity);
            assert!(
                addresses.insert(identity.address()),
                "{identity:?} handed out twice"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_started_pool_fills_to_its_target_and_refills_after_a_take() {
        let pool = IdentityPool::new(2);
        assert_eq!(pool.ready(), 0);
        pool.start();
        pool.start(); // A second refiller would overshoot nothing, but must not exist.
        wait_for_ready(&pool, 2).await;
        let taken = pool.take().await;
        assert_usable(&taken);
        assert_eq!(pool.ready(), 1, "taken from the pool, not generated");
        wait_for_ready(&pool, 2).await;
        // Stays at the target.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pool.ready(), 2);
    }

    #[tokio::test]
    async fn taking_from_an_empty_pool_still_returns_an_identity() {
        // Never started: every take generates its own.
        let pool = IdentityPool::new(0);
        let first = pool.take().await;
        let second = pool.take().await;
        assert_usable(&first);
        assert_usable(&second);
        assert_ne!(first.address(), second.address());
        assert_eq!(pool.ready(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_persistent_pool_survives_a_restart_without_handing_out_an_identity_twice() {
        let dir = TempDir::new("identity-pool");
        let path = dir.path().join(IdentityPool::FILE_NAME);
        let pool = IdentityPool::persistent(2, &path);
        assert_eq!(pool.ready(), 0, "no file yet");
        pool.start();
        wait_for_ready(&pool, 2).await;
        // The refiller saves after adding, so the file may lag the count for a moment.
        tokio::time::timeout(Duration::from_secs(10), async {
            while fs::read_to_string(&path).map_or(0, |text| text.lines().count()) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the file lists both identities");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, SECRET_MODE);

        let taken = pool.take().await;
        let saved = fs::read_to_string(&path).expect("read the pool file");
        assert!(
            !saved.contains(&taken.address().to_string()),
            "a taken identity is out of the file when take returns"
        );
        drop(pool);

        let restarted = IdentityPool::persistent(2, &path);
        assert!(restarted.ready() >= 1, "{restarted:?}");
        let from_file = restarted.take().await;
        assert_usable(&from_file);
        assert_ne!(from_file.address(), taken.address());
    }

    #[test]
    fn invalid_and_repeated_lines_of_the_pool_file_are_dropped() {
        let dir = TempDir::new("identity-pool-load");
        let path = dir.path().join(IdentityPool::FILE_NAME);
        let identity = Identity::generate(&mut rand_core::OsRng);
        let secret = identity.to_secret_string().expect("secret");
        let text = format!("{secret}\nnot an identity\n{identity}\n{secret}\n\n");
        fs::write(&path, text).expect("write");
        let pool = IdentityPool::persistent(1, &path);
        assert_eq!(
            pool.ready(),
            1,
            "one valid identity, once; none without a secret"
        );
    }
}
