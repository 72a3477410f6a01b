//! Pending deletes: a DEL that cannot reach the agent must still succeed (the runtime would
//! otherwise keep the pod in teardown), so it records the detach in a spool directory and
//! the agent replays the records when it starts.
//!
//! Format (the contract with the agent):
//! - Directory: `pendingDeleteDir` of the config, default
//!   [`crate::config::DEFAULT_PENDING_DELETE_DIR`]; created with mode 0700 if missing.
//! - One file per attachment: `<sha256 hex of "<containerId>\n<ifName>">.json`, mode 0600,
//!   written to a `.tmp-...` name first and renamed into place, so a reader never sees half
//!   a record. A repeated DEL of the same attachment overwrites the same file.
//! - Content: exactly the body of `POST /v1/detach`, an `EndpointRef`:
//!   `{"key"?, "containerId", "ifName", "network"?}`. Every field given must match, so a
//!   replay never removes a newer container's endpoint.
//! - Replay (the agent's side): for each `*.json` file (names starting with `.` are
//!   temporary), detach it as if it had come over the socket, then remove the file. A
//!   detach that matches nothing is done too.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zt_agent::plugin_api::EndpointRef;

/// The file a pending delete of `reference` goes to in `dir`. The reference must name its
/// attachment (container and interface); DEL always knows both.
pub fn record_path(dir: &Path, reference: &EndpointRef) -> PathBuf {
    let mut hash = Sha256::new();
    if let Some(id) = &reference.container_id {
        hash.update(id.as_str());
    }
    hash.update(b"\n");
    if let Some(name) = &reference.if_name {
        hash.update(name.as_str());
    }
    dir.join(format!("{}.json", hex::encode(hash.finalize())))
}

/// Writes the pending delete of `reference` into `dir`; returns the file.
pub fn record(dir: &Path, reference: &EndpointRef) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = record_path(dir, reference);
    let body = serde_json::to_vec(reference).map_err(io::Error::other)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".tmp-{}-{file_name}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    // Make the rename itself durable: the record must survive the node's reboot.
    if let Ok(directory) = fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cni-spool-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn reference(container: &str) -> EndpointRef {
        EndpointRef {
            key: Some("k8s/default/web-0".parse().unwrap()),
            ..EndpointRef::by_attachment(container.parse().unwrap(), "eth0".parse().unwrap())
        }
    }

    #[test]
    fn records_are_private_whole_and_one_per_attachment() {
        let dir = scratch("record").join("nested");
        let first = record(&dir, &reference("c1")).unwrap();
        let again = record(&dir, &reference("c1")).unwrap();
        let other = record(&dir, &reference("c2")).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let mode = fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let back: EndpointRef = serde_json::from_slice(&fs::read(&first).unwrap()).unwrap();
        assert_eq!(back, reference("c1"));
        assert!(first
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".json"));
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_unwritable_spool_is_an_error() {
        let dir = scratch("blocked");
        fs::write(&dir, b"a file where the directory should be").unwrap();
        assert!(record(&dir, &reference("c1")).is_err());
        fs::remove_file(&dir).unwrap();
    }
}
