//! The home folder, laid out as ZeroTier One lays out its own (`/var/lib/zerotier-one`):
//!
//! ```text
//! identity.secret      <address>:0:<public hex>:<secret hex>, no newline, mode 0600
//! identity.public      <address>:0:<public hex>, no newline
//! authtoken.secret     the local API token (24 characters a-z0-9), mode 0600
//! zerotier-one.port    the port in use, so that CLI clients find it
//! planet               a binary world (zt-vl1.md 8.1); absent = the built-in planet
//! moons.d/<id>.moon    binary moons, 16 hex digit world ID
//! peers.d/<addr>.peer  identities learned from the network (our own text format: the
//!                      public identity string; ZeroTier One's binary files are skipped)
//! ```
//!
//! Every write is atomic (temporary file in the same folder, then rename), so a crash never
//! leaves a half-written identity or planet behind.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use node_core::world::{World, WorldKind};
use node_core::{Address, Identity};
use rand_core::{CryptoRng, RngCore};

pub const IDENTITY_SECRET: &str = "identity.secret";
pub const IDENTITY_PUBLIC: &str = "identity.public";
pub const AUTHTOKEN_SECRET: &str = "authtoken.secret";
pub const PORT_FILE: &str = "zerotier-one.port";
pub const PLANET: &str = "planet";
pub const MOONS_DIR: &str = "moons.d";
pub const PEERS_DIR: &str = "peers.d";

/// Mode of files holding secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of every other file written here.
pub const PUBLIC_MODE: u32 = 0o644;
/// Folders the agent creates, as ZeroTier One makes them (0755): never wider whatever the
/// umask (a world-writable home would let anyone swap `identity.secret` or the planet).
pub const PUBLIC_DIR_MODE: u32 = 0o755;
/// Folders of secrets (`endpoints.d/`): only root may list them or add to them.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents with `mode` (less the umask); folders that exist
/// are left as they are.
pub fn create_dir_with_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Length of a generated auth token, as ZeroTier One makes them.
const AUTHTOKEN_LEN: usize = 24;
const AUTHTOKEN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not an identity ({reason})", path.display())]
    IdentityUnparsable { path: PathBuf, reason: String },
    #[error("{}: holds no secret key", path.display())]
    IdentityWithoutSecret { path: PathBuf },
    #[error("{}: fails validation (its address does not derive from its key)", path.display())]
    IdentityInvalid { path: PathBuf },
    #[error("{}: not a valid world: {reason}", path.display())]
    WorldUnparsable { path: PathBuf, reason: String },
    #[error("{}: is a moon, not a planet", path.display())]
    PlanetIsMoon { path: PathBuf },
}

impl HomeError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The identity the node runs as, and whether it was made just now.
pub struct LoadedIdentity {
    pub identity: Identity,
    pub created: bool,
}

/// A home folder.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at `root`, which need not exist yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the folder and its subfolders if absent.
    pub fn create(&self) -> Result<(), HomeError> {
        for dir in [
            self.root.clone(),
            self.path(MOONS_DIR),
            self.path(PEERS_DIR),
        ] {
            create_dir_with_mode(&dir, PUBLIC_DIR_MODE).map_err(|e| HomeError::io(&dir, e))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Reads `identity.secret`, or generates and writes a new identity if it is absent.
    /// A present but broken or invalid secret is an error, never silently replaced: the
    /// address is the node's name on the network. `identity.public` is rewritten when it
    /// does not match, as ZeroTier One does.
    pub fn load_or_create_identity<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<LoadedIdentity, HomeError> {
        let secret_path = self.path(IDENTITY_SECRET);
        let (identity, created) = match fs::read_to_string(&secret_path) {
            Ok(text) => (parse_secret_identity(&secret_path, &text)?, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = Identity::generate(rng);
                let text = identity.to_secret_string().ok_or_else(|| {
                    HomeError::IdentityWithoutSecret {
                        path: secret_path.clone(),
                    }
                })?;
                write_atomic(&secret_path, text.as_bytes(), SECRET_MODE)
                    .map_err(|e| HomeError::io(&secret_path, e))?;
                (identity, true)
            }
            Err(e) => return Err(HomeError::io(&secret_path, e)),
        };

        let public_path = self.path(IDENTITY_PUBLIC);
        let public_text = identity.to_string();
        let current = fs::read_to_string(&public_path).ok();
        if current.as_deref() != Some(public_text.as_str()) {
            write_atomic(&public_path, public_text.as_bytes(), PUBLIC_MODE)
                .map_err(|e| HomeError::io(&public_path, e))?;
        }
        Ok(LoadedIdentity { identity, created })
    }

    /// Reads `authtoken.secret` (trimmed), or makes and writes a new random token when the
    /// file is absent or empty.
    pub fn load_or_create_authtoken<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<String, HomeError> {
        self.load_or_create_token(AUTHTOKEN_SECRET, rng)
    }

    /// Reads the token file `name` (trimmed), or makes and writes (0600) a new random token
    /// when it is absent or empty.
    fn load_or_create_token<R: RngCore + CryptoRng>(
        &self,
        name: &str,
        rng: &mut R,
    ) -> Result<String, HomeError> {
        let path = self.path(name);
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HomeError::io(&path, e)),
        }
        let token = random_token(rng);
        write_atomic(&path, token.as_bytes(), SECRET_MODE).map_err(|e| HomeError::io(&path, e))?;
        Ok(token)
    }

    /// The token a CLI client should send, if the agent has written one.
    pub fn read_authtoken(&self) -> Option<String> {
        let text = fs::read_to_string(self.path(AUTHTOKEN_SECRET)).ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// Records the port in use for CLI clients (ZeroTier One's `zerotier-one.port`).
    pub fn write_port(&self, port: u16) -> Result<(), HomeError> {
        let path = self.path(PORT_FILE);
        write_atomic(&path, port.to_string().as_bytes(), PUBLIC_MODE)
            .map_err(|e| HomeError::io(&path, e))
    }

    pub fn read_port(&self) -> Option<u16> {
        let text = fs::read_to_string(self.path(PORT_FILE)).ok()?;
        text.trim().parse().ok().filter(|&p| p != 0)
    }

    /// The planet file, if there is one. It must parse and be a planet.
    pub fn load_planet(&self) -> Result<Option<World>, HomeError> {
        let path = self.path(PLANET);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HomeError::io(&path, e)),
        };
        let world = parse_world(&path, &bytes)?;
        if world.kind != WorldKind::Planet {
            return Err(HomeError::PlanetIsMoon { path });
        }
        Ok(Some(world))
    }

    /// Every readable moon in `moons.d`; unreadable ones are skipped with a warning.
    pub fn load_moons(&self) -> Vec<World> {
        let mut moons = Vec::new();
        for path in self.files_with_extension(MOONS_DIR, "moon") {
            let parsed = fs::read(&path)
                .map_err(|e| HomeError::io(&path, e))
                .and_then(|bytes| parse_world(&path, &bytes));
            match parsed {
                Ok(world) if world.kind == WorldKind::Moon => moons.push(world),
                Ok(_) => tracing::warn!(path = %path.display(), "skipping: not a moon"),
                Err(e) => tracing::warn!("skipping moon: {e}"),
            }
        }
        moons
    }

    /// Identities cached in `peers.d`. Files that do not hold a public identity whose
    /// address matches the file name are skipped.
    pub fn load_peer_identities(&self) -> Vec<Identity> {
        let mut identities = Vec::new();
        for path in self.files_with_extension(PEERS_DIR, "peer") {
            let Ok(text) = fs::read_to_string(&path) else {
                tracing::debug!(path = %path.display(), "skipping unreadable peer cache file");
                continue;
            };
            let Ok(identity) = text.trim().parse::<Identity>() else {
                tracing::debug!(path = %path.display(), "skipping peer cache file: not ours");
                continue;
            };
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem.parse::<Address>().ok() != Some(identity.address()) {
                tracing::warn!(path = %path.display(), "skipping: file name is not its address");
                continue;
            }
            identities.push(identity.public_only());
        }
        identities
    }

    pub fn save_planet(&self, planet: &World) -> Result<(), HomeError> {
        let path = self.path(PLANET);
        let mut bytes = Vec::new();
        planet.emit(&mut bytes);
        write_atomic(&path, &bytes, PUBLIC_MODE).map_err(|e| HomeError::io(&path, e))
    }

    pub fn save_moon(&self, moon: &World) -> Result<(), HomeError> {
        let path = self.path(MOONS_DIR).join(moon_file_name(moon.id));
        let mut bytes = Vec::new();
        moon.emit(&mut bytes);
        write_atomic(&path, &bytes, PUBLIC_MODE).map_err(|e| HomeError::io(&path, e))
    }

    /// Caches a learned identity; does nothing if the same text is there already.
    pub fn save_peer(&self, identity: &Identity) -> Result<(), HomeError> {
        let path = self
            .path(PEERS_DIR)
            .join(format!("{}.peer", identity.address()));
        let text = identity.public_only().to_string();
        if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        write_atomic(&path, text.as_bytes(), PUBLIC_MODE).map_err(|e| HomeError::io(&path, e))
    }

    /// Removes `address`'s cached identity, if any (an endpoint of ours that is gone for
    /// good: no node will meet it again).
    pub fn forget_peer(&self, address: Address) -> Result<(), HomeError> {
        let path = self.path(PEERS_DIR).join(format!("{address}.peer"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HomeError::io(&path, e)),
        }
    }

    fn files_with_extension(&self, dir: &str, extension: &str) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.path(dir)) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(extension))
            .collect();
        paths.sort();
        paths
    }
}

/// `<16 hex digits>.moon`, the name ZeroTier One gives a moon file.
pub fn moon_file_name(world_id: u64) -> String {
    format!("{world_id:016x}.moon")
}

fn parse_secret_identity(path: &Path, text: &str) -> Result<Identity, HomeError> {
    let identity: Identity =
        text.trim()
            .parse()
            .map_err(
                |e: node_core::identity::IdentityError| HomeError::IdentityUnparsable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                },
            )?;
    if !identity.has_secret() {
        return Err(HomeError::IdentityWithoutSecret {
            path: path.to_path_buf(),
        });
    }
    if !identity.locally_validate() {
        return Err(HomeError::IdentityInvalid {
            path: path.to_path_buf(),
        });
    }
    Ok(identity)
}

fn parse_world(path: &Path, bytes: &[u8]) -> Result<World, HomeError> {
    let (world, used) = World::parse(bytes).map_err(|e| HomeError::WorldUnparsable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(HomeError::WorldUnparsable {
            path: path.to_path_buf(),
            reason: format!("{} bytes after the world", bytes.len() - used),
        });
    }
    Ok(world)
}

/// A token of [`AUTHTOKEN_LEN`] characters from a-z0-9, drawn without modulo bias.
pub fn random_token<R: RngCore + CryptoRng>(rng: &mut R) -> String {
    // 252 = 7 * 36: bytes at or above it are redrawn so every character is equally likely.
    const LIMIT: u8 = 252;
    let mut token = String::with_capacity(AUTHTOKEN_LEN);
    while token.len() < AUTHTOKEN_LEN {
        let mut byte = [0u8; 1];
        rng.fill_bytes(&mut byte);
        if byte[0] < LIMIT {
            token.push(char::from(AUTHTOKEN_ALPHABET[usize::from(byte[0] % 36)]));
        }
    }
    token
}

/// Writes `data` to `path` atomically with permission bits `mode`: a temporary file in the
/// same folder is written, synced and renamed over `path`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have cleared bits of `mode`; secrets must not end up wider either.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// ZeroTier One's second token (`metricstoken.secret`, mode 0600): it opens `GET /metrics`
/// and nothing else, so a Prometheus scraper need not hold the API's key.
pub const METRICSTOKEN_SECRET: &str = "metricstoken.secret";

impl Home {
    /// Reads `metricstoken.secret` (trimmed), or makes and writes a new random token when the
    /// file is absent or empty, as ZeroTier One does at start.
    pub fn load_or_create_metricstoken<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<String, HomeError> {
        self.load_or_create_token(METRICSTOKEN_SECRET, rng)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_core::OsRng;

    /// A fresh folder under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "zt-agent-test-{tag}-{}-{}",
                std::process::id(),
                OsRng.next_u64()
            ));
            fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn creates_identity_and_token_with_secret_modes() {
        let dir = TempDir::new("home");
        let home = Home::new(dir.path().join("home"));
        home.create().expect("create");
        assert!(home.path(MOONS_DIR).is_dir());
        assert!(home.path(PEERS_DIR).is_dir());

        let loaded = home.load_or_create_identity(&mut OsRng).expect("identity");
        assert!(loaded.created);
        assert!(loaded.identity.has_secret());
        let secret_text = fs::read_to_string(home.path(IDENTITY_SECRET)).expect("read");
        assert_eq!(
            Some(secret_text.clone()),
            loaded.identity.to_secret_string()
        );
        assert!(!secret_text.ends_with('\n'));
        assert_eq!(mode_of(&home.path(IDENTITY_SECRET)), SECRET_MODE);
        let public_text = fs::read_to_string(home.path(IDENTITY_PUBLIC)).expect("read");
        assert_eq!(public_text, loaded.identity.to_string());

        // A second start keeps the same identity and repairs a wrong identity.public.
        fs::write(home.path(IDENTITY_PUBLIC), "garbage").expect("write");
        let again = home.load_or_create_identity(&mut OsRng).expect("identity");
        assert!(!again.created);
        assert_eq!(again.identity, loaded.identity);
        assert_eq!(
            fs::read_to_string(home.path(IDENTITY_PUBLIC)).expect("read"),
            public_text
        );

        let token = home.load_or_create_authtoken(&mut OsRng).expect("token");
        assert_eq!(token.len(), AUTHTOKEN_LEN);
        assert!(token.bytes().all(|c| AUTHTOKEN_ALPHABET.contains(&c)));
        assert_eq!(mode_of(&home.path(AUTHTOKEN_SECRET)), SECRET_MODE);
        assert_eq!(
            home.load_or_create_authtoken(&mut OsRng).expect("token"),
            token
        );
        assert_eq!(home.read_authtoken(), Some(token));
    }

    #[test]
    fn keeps_a_user_written_token_and_trims_it() {
        let dir = TempDir::new("token");
        let home = Home::new(dir.path());
        fs::write(home.path(AUTHTOKEN_SECRET), "  mytoken\n").expect("write");
        assert_eq!(
            home.load_or_create_authtoken(&mut OsRng).expect("token"),
            "mytoken"
        );
        fs::write(home.path(AUTHTOKEN_SECRET), "\n").expect("write");
        let made = home.load_or_create_authtoken(&mut OsRng).expect("token");
        assert_eq!(made.len(), AUTHTOKEN_LEN);
    }

    #[test]
    fn refuses_a_broken_or_invalid_identity() {
        let dir = TempDir::new("badid");
        let home = Home::new(dir.path());
        fs::write(home.path(IDENTITY_SECRET), "not an identity").expect("write");
        assert!(matches!(
            home.load_or_create_identity(&mut OsRng),
            Err(HomeError::IdentityUnparsable { .. })
        ));
        let vectors = crate::cli::idtool::tests::selftest_identities();
        fs::write(home.path(IDENTITY_SECRET), vectors.1).expect("write");
        assert!(matches!(
            home.load_or_create_identity(&mut OsRng),
            Err(HomeError::IdentityInvalid { .. })
        ));
        // The known-good identity is accepted, with a trailing newline tolerated.
        fs::write(home.path(IDENTITY_SECRET), format!("{}\n", vectors.0)).expect("write");
        let loaded = home.load_or_create_identity(&mut OsRng).expect("identity");
        assert_eq!(loaded.identity.address().to_string(), "8e4df28b72");
        assert!(!loaded.created);
    }

    #[test]
    fn port_file_round_trips() {
        let dir = TempDir::new("port");
        let home = Home::new(dir.path());
        assert_eq!(home.read_port(), None);
        home.write_port(9994).expect("write");
        assert_eq!(home.read_port(), Some(9994));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = TempDir::new("atomic");
        let path = dir.path().join("f");
        write_atomic(&path, b"one", PUBLIC_MODE).expect("write");
        write_atomic(&path, b"two", SECRET_MODE).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), SECRET_MODE);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn peer_cache_round_trips_and_skips_foreign_files() {
        let dir = TempDir::new("peers");
        let home = Home::new(dir.path());
        home.create().expect("create");
        let good: Identity = crate::cli::idtool::tests::selftest_identities()
            .0
            .parse()
            .expect("known good identity parses");
        home.save_peer(&good).expect("save");
        let cached =
            fs::read_to_string(home.path(PEERS_DIR).join("8e4df28b72.peer")).expect("read");
        assert_eq!(cached, good.to_string(), "no secret in the cache");
        fs::write(
            home.path(PEERS_DIR).join("0123456789.peer"),
            good.to_string(),
        )
        .expect("write");
        fs::write(home.path(PEERS_DIR).join("abcdefabcd.peer"), [0u8, 1, 2]).expect("write");
        assert_eq!(home.load_peer_identities(), vec![good.public_only()]);
    }

    #[test]
    fn metrics_token_is_made_once_secret_and_apart_from_the_api_token() {
        let dir = TempDir::new("metricstoken");
        let home = Home::new(dir.path());
        home.create().expect("create");
        let api = home.load_or_create_authtoken(&mut OsRng).expect("token");
        let metrics = home.load_or_create_metricstoken(&mut OsRng).expect("token");
        assert_ne!(api, metrics);
        assert_eq!(metrics.len(), AUTHTOKEN_LEN);
        let path = home.path(METRICSTOKEN_SECRET);
        assert_eq!(mode_of(&path), SECRET_MODE);
        assert_eq!(
            home.load_or_create_metricstoken(&mut OsRng).expect("token"),
            metrics,
            "kept across starts"
        );
        fs::write(&path, " scrape-me \n").expect("write");
        assert_eq!(
            home.load_or_create_metricstoken(&mut OsRng).expect("token"),
            "scrape-me"
        );
    }
}
