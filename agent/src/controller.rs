//! The network controller's storage and HTTP API, around `node_core::controller::Controller`
//! (zt-vl2.md 6.3, 6.4).
//!
//! Storage is ZeroTier One's file database, so that an existing `controller.d` can be moved
//! over (and back):
//!
//! ```text
//! controller.d/                       mode 0700
//!   network/<nwid>.json               network record, compact one-line JSON
//!   network/<nwid>/member/<addr>.json member record
//!   trace/                            created, unused (as 1.14)
//! ```
//!
//! At startup only files whose names have exactly the lengths `<16 hex>.json` and
//! `<10 hex>.json` have are read; records that do not parse are skipped with a warning.
//!
//! [`ControllerService`] is what the host drives: it owns the controller and its store,
//! answers the HTTP API ([`ControllerService::handle_http`]) and config requests
//! ([`ControllerService::handle_request`]), and writes every change before returning.
//! Everything here is synchronous and independent of the HTTP server.

use std::fs::{self, DirBuilder};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use node_core::controller::{Controller, LoadError, Push, RequestAnswer, StoreChange};
use node_core::time::Timestamp;
use node_core::vl2::NetworkId;
use node_core::{Address, Identity};
use serde_json::{json, Value};

use crate::home::{write_atomic, SECRET_MODE};

/// The controller's folder under the home folder.
pub const CONTROLLER_DIR: &str = "controller.d";
const NETWORK_DIR: &str = "network";
const MEMBER_DIR: &str = "member";
const TRACE_DIR: &str = "trace";
/// Mode of the controller's folder (1.14 locks it down).
const DIR_MODE: u32 = 0o700;
/// `<16 hex>.json` and `<10 hex>.json`.
const NETWORK_FILE_NAME_LEN: usize = 21;
const MEMBER_FILE_NAME_LEN: usize = 15;
/// The suffix `<ctrl10>______` of the legacy network-creation path.
const LEGACY_CREATE_SUFFIX: &str = "______";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A stored record that was not loaded, and why.
#[derive(Debug)]
pub struct SkippedRecord {
    pub path: PathBuf,
    pub reason: String,
}

/// `controller.d`: reads the records at startup and applies [`StoreChange`]s.
#[derive(Clone, Debug)]
pub struct ControllerStore {
    root: PathBuf,
}

impl ControllerStore {
    /// Opens (creating if needed) the store at `root` (normally `<home>/controller.d`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let store = Self { root };
        create_dir(&store.root)?;
        // 1.14 keeps the folder private; so do we, also when it already existed.
        fs::set_permissions(&store.root, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| StoreError::io(&store.root, e))?;
        create_dir(&store.networks_dir())?;
        create_dir(&store.root.join(TRACE_DIR))?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn networks_dir(&self) -> PathBuf {
        self.root.join(NETWORK_DIR)
    }

    /// `network/<nwid>.json`.
    pub fn network_path(&self, network_id: NetworkId) -> PathBuf {
        self.networks_dir().join(format!("{network_id}.json"))
    }

    /// `network/<nwid>/member/`.
    pub fn members_dir(&self, network_id: NetworkId) -> PathBuf {
        self.networks_dir()
            .join(network_id.to_string())
            .join(MEMBER_DIR)
    }

    /// `network/<nwid>/member/<address>.json`.
    pub fn member_path(&self, network_id: NetworkId, address: Address) -> PathBuf {
        self.members_dir(network_id).join(format!("{address}.json"))
    }

    /// Loads every stored network and its members into `controller`; returns what was
    /// skipped. A folder that cannot be listed counts as empty.
    pub fn load_into(&self, controller: &mut Controller) -> Vec<SkippedRecord> {
        let mut skipped = Vec::new();
        for path in files_named(&self.networks_dir(), NETWORK_FILE_NAME_LEN) {
            let record = match read_record(&path) {
                Ok(record) => record,
                Err(reason) => {
                    skipped.push(SkippedRecord { path, reason });
                    continue;
                }
            };
            // Members live under the ID the record names, as in 1.14.
            let id = record.get("id").and_then(Value::as_str).map(str::to_owned);
            let network_id = match controller.load_network(record) {
                Ok(network_id) => network_id,
                Err(e) => {
                    skipped.push(SkippedRecord {
                        path,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let members_dir = self
                .networks_dir()
                .join(id.unwrap_or_else(|| network_id.to_string()))
                .join(MEMBER_DIR);
            for path in files_named(&members_dir, MEMBER_FILE_NAME_LEN) {
                let result = read_record(&path).and_then(|record| {
                    controller
                        .load_member(record)
                        .map_err(|e: LoadError| e.to_string())
                });
                if let Err(reason) = result {
                    skipped.push(SkippedRecord { path, reason });
                }
            }
        }
        skipped
    }

    /// Writes or deletes what `change` says.
    pub fn apply(&self, change: &StoreChange) -> Result<(), StoreError> {
        match change {
            StoreChange::NetworkSaved(network_id, record) => {
                self.write(&self.network_path(*network_id), record)
            }
            StoreChange::MemberSaved(network_id, address, record) => {
                let dir = self.members_dir(*network_id);
                create_dir(&dir)?;
                self.write(&self.member_path(*network_id, *address), record)
            }
            StoreChange::NetworkDeleted(network_id) => {
                let file = self.network_path(*network_id);
                removed(&file, fs::remove_file(&file))?;
                let dir = self.networks_dir().join(network_id.to_string());
                removed(&dir, fs::remove_dir_all(&dir))
            }
            StoreChange::MemberDeleted(network_id, address) => {
                let file = self.member_path(*network_id, *address);
                removed(&file, fs::remove_file(&file))
            }
        }
    }

    fn write(&self, path: &Path, record: &Value) -> Result<(), StoreError> {
        // Compact, one line, no newline: what 1.14 writes.
        let text = record.to_string();
        write_atomic(path, text.as_bytes(), SECRET_MODE).map_err(|e| StoreError::io(path, e))
    }
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| StoreError::io(path, e))
}

/// The outcome of removing `path`: already absent is fine.
fn removed(path: &Path, result: io::Result<()>) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// The regular files in `dir` whose names are `len` bytes long, sorted.
fn files_named(dir: &Path, len: usize) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().len() == len)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn read_record(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// An HTTP answer: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Value,
}

impl HttpAnswer {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::error(404, what)
    }
}

/// The controller with its store: what the host's node task owns.
#[derive(Debug)]
pub struct ControllerService {
    controller: Controller,
    store: ControllerStore,
}

impl ControllerService {
    /// Opens `<home>/controller.d` and loads it into a controller signing as `identity`
    /// (with its secret), seeded with `rng_seed`. Skipped records are logged.
    pub fn open(home: &Path, identity: Identity, rng_seed: u64) -> Result<Self, StoreError> {
        let store = ControllerStore::open(home.join(CONTROLLER_DIR))?;
        let mut controller = Controller::new(identity, rng_seed);
        for skipped in store.load_into(&mut controller) {
            tracing::warn!(
                "controller: skipped {}: {}",
                skipped.path.display(),
                skipped.reason
            );
        }
        Ok(Self { controller, store })
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn store(&self) -> &ControllerStore {
        &self.store
    }

    /// Whether the local API should hand `path` (without query) to [`Self::handle_http`].
    pub fn handles_path(path: &str) -> bool {
        ["/controller", "/unstable/controller"]
            .iter()
            .any(|prefix| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// Answers one request of the controller API (zt-vl2.md 6.4). `path` may carry a
    /// query, which is ignored. Changes are written before returning; afterwards call
    /// [`Self::take_pushes`] and send what it returns.
    pub fn handle_http(
        &mut self,
        now: Timestamp,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> HttpAnswer {
        let answer = self.route(now, method, path, body);
        self.persist();
        answer
    }

    /// Answers a NETWORK_CONFIG_REQUEST (the node's `Event::NetworkConfigRequest`).
    pub fn handle_request(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        requester: &Identity,
        metadata: &[u8],
        from: Option<SocketAddr>,
    ) -> RequestAnswer {
        let answer = self
            .controller
            .handle_request(now, network_id, requester, metadata, from);
        self.persist();
        answer
    }

    /// Configs and revocations owed to members because of API changes; see
    /// [`Controller::take_pushes`].
    pub fn take_pushes(&mut self, now: Timestamp) -> Vec<Push> {
        let pushes = self.controller.take_pushes(now);
        self.persist();
        pushes
    }

    /// Writes the controller's changes. A failed write is logged and the change dropped,
    /// as 1.14 does: the records in memory stay authoritative until the next change.
    fn persist(&mut self) {
        for change in self.controller.take_changes() {
            if let Err(e) = self.store.apply(&change) {
                tracing::warn!("controller: {e}");
            }
        }
    }

    fn route(&mut self, now: Timestamp, method: &str, path: &str, body: &[u8]) -> HttpAnswer {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let write = matches!(method, "POST" | "PUT");
        let c = &mut self.controller;
        match (segments.as_slice(), method) {
            (["controller"], "GET") => HttpAnswer::ok(c.status(now)),
            (["controller", "network"], "GET") => HttpAnswer::ok(c.network_list()),
            (["controller", "network"], _) if write => match parse_body(body, NETWORK_FIELDS) {
                Ok(body) => match c.create_network(now, &body) {
                    Some(network) => HttpAnswer::ok(network),
                    None => HttpAnswer::error(503, "no free network ID"),
                },
                Err(answer) => answer,
            },
            (["controller", "network", id], _) if legacy_create_id(id).is_some() => {
                if !write {
                    return method_not_allowed(method, path);
                }
                if legacy_create_id(id) != Some(c.address().to_string().as_str()) {
                    return HttpAnswer::error(
                        400,
                        format!("{id}: networks are created under {}", c.address()),
                    );
                }
                match parse_body(body, NETWORK_FIELDS) {
                    Ok(body) => match c.create_network(now, &body) {
                        Some(network) => HttpAnswer::ok(network),
                        None => HttpAnswer::error(503, "no free network ID"),
                    },
                    Err(answer) => answer,
                }
            }
            (["controller", "network", id], _) => {
                let Some(network_id) = network_id(id) else {
                    return HttpAnswer::not_found(format!("no such endpoint: {path}"));
                };
                match method {
                    "GET" => c.network(network_id).map_or_else(
                        || HttpAnswer::not_found(format!("no network {network_id}")),
                        HttpAnswer::ok,
                    ),
                    "POST" | "PUT" => match parse_body(body, NETWORK_FIELDS) {
                        Ok(body) => HttpAnswer::ok(c.post_network(now, network_id, &body)),
                        Err(answer) => answer,
                    },
                    "DELETE" => c.delete_network(now, network_id).map_or_else(
                        || HttpAnswer::not_found(format!("no network {network_id}")),
                        HttpAnswer::ok,
                    ),
                    _ => method_not_allowed(method, path),
                }
            }
            (["controller", "network", id, "member"], _) => {
                let Some(network_id) = network_id(id) else {
                    return HttpAnswer::not_found(format!("no such endpoint: {path}"));
                };
                if method != "GET" {
                    return method_not_allowed(method, path);
                }
                c.member_revisions(network_id).map_or_else(
                    || HttpAnswer::not_found(format!("no network {network_id}")),
                    HttpAnswer::ok,
                )
            }
            (["controller", "network", id, "member", address], _) => {
                let (Some(network_id), Some(address)) = (network_id(id), member_address(address))
                else {
                    return HttpAnswer::not_found(format!("no such endpoint: {path}"));
                };
                match method {
                    "GET" => c.member(network_id, address).map_or_else(
                        || HttpAnswer::not_found(format!("no member {address} in {network_id}")),
                        HttpAnswer::ok,
                    ),
                    "POST" | "PUT" => match parse_body(body, MEMBER_FIELDS) {
                        Ok(body) => c.post_member(now, network_id, address, &body).map_or_else(
                            || HttpAnswer::not_found(format!("no network {network_id}")),
                            HttpAnswer::ok,
                        ),
                        Err(answer) => answer,
                    },
                    "DELETE" => c.delete_member(now, network_id, address).map_or_else(
                        || HttpAnswer::not_found(format!("no member {address} in {network_id}")),
                        HttpAnswer::ok,
                    ),
                    _ => method_not_allowed(method, path),
                }
            }
            (["unstable", "controller", "network"], "GET") => {
                HttpAnswer::ok(c.unstable_network_list())
            }
            (["unstable", "controller", "network", id, "member"], "GET") => {
                match network_id(id).and_then(|id| c.unstable_member_list(id)) {
                    Some(list) => HttpAnswer::ok(list),
                    None => HttpAnswer::not_found(format!("no network {id}")),
                }
            }
            (
                ["controller"]
                | ["controller", "network"]
                | ["unstable", "controller", "network"]
                | ["unstable", "controller", "network", _, "member"],
                _,
            ) => method_not_allowed(method, path),
            _ => HttpAnswer::not_found(format!("no such endpoint: {path}")),
        }
    }
}

fn method_not_allowed(method: &str, path: &str) -> HttpAnswer {
    HttpAnswer::error(405, format!("{method} not allowed on {path}"))
}

/// A POST body: a JSON object, or nothing (read as `{}`; 1.14 fails such a request with 500).
/// Anything else is refused before the controller sees it: 1.14 would create or update the
/// record with its defaults.
fn parse_body(body: &[u8], shapes: &[(&str, Shape)]) -> Result<Value, HttpAnswer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HttpAnswer::error(400, format!("invalid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(HttpAnswer::error(
            400,
            format!(
                "the body must be a JSON object, not {}",
                crate::api::json_type(&value)
            ),
        ));
    };
    for (field, shape) in shapes {
        if let Some(given) = object.get(*field) {
            if !shape.admits(given) {
                return Err(HttpAnswer::error(
                    400,
                    format!(
                        "{field} must be {}, not {}",
                        shape.describe(),
                        crate::api::json_type(given)
                    ),
                ));
            }
        }
    }
    Ok(value)
}

/// What a field of a network or member record may be given as. Scalars are converted as
/// 1.14 converts them (`"true"`, `1` for a boolean); a list or object where a scalar
/// belongs, or the reverse, would be silently ignored by the records, so it is refused.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Scalar,
    Array,
    Object,
    /// `v4AssignMode` and `v6AssignMode` also take their legacy string form.
    ObjectOrString,
}

impl Shape {
    fn admits(self, value: &Value) -> bool {
        match self {
            _ if value.is_null() => true,
            Self::Scalar => !value.is_array() && !value.is_object(),
            Self::Array => value.is_array(),
            Self::Object => value.is_object(),
            Self::ObjectOrString => value.is_object() || value.is_string(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Scalar => "a boolean, number or string",
            Self::Array => "an array",
            Self::Object => "an object",
            Self::ObjectOrString => "an object or a string",
        }
    }
}

/// The fields of a network POST the controller reads, with their shapes.
const NETWORK_FIELDS: &[(&str, Shape)] = &[
    ("name", Shape::Scalar),
    ("private", Shape::Scalar),
    ("enableBroadcast", Shape::Scalar),
    ("multicastLimit", Shape::Scalar),
    ("mtu", Shape::Scalar),
    ("remoteTraceTarget", Shape::Scalar),
    ("remoteTraceLevel", Shape::Scalar),
    ("v4AssignMode", Shape::ObjectOrString),
    ("v6AssignMode", Shape::ObjectOrString),
    ("routes", Shape::Array),
    ("ipAssignmentPools", Shape::Array),
    ("rules", Shape::Array),
    ("capabilities", Shape::Array),
    ("tags", Shape::Array),
    ("dns", Shape::Object),
];

/// The fields of a member POST the controller reads, with their shapes.
const MEMBER_FIELDS: &[(&str, Shape)] = &[
    ("authorized", Shape::Scalar),
    ("activeBridge", Shape::Scalar),
    ("noAutoAssignIps", Shape::Scalar),
    ("name", Shape::Scalar),
    ("remoteTraceTarget", Shape::Scalar),
    ("remoteTraceLevel", Shape::Scalar),
    ("authenticationExpiryTime", Shape::Scalar),
    ("ipAssignments", Shape::Array),
    ("tags", Shape::Array),
    ("capabilities", Shape::Array),
];

/// A network ID path segment: exactly 16 hex digits, either case.
fn network_id(segment: &str) -> Option<NetworkId> {
    segment.parse().ok()
}

/// A member address path segment: exactly 10 hex digits, either case.
fn member_address(segment: &str) -> Option<Address> {
    if segment.len() != 10 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    segment.parse().ok()
}

/// `<ctrl10>______`: the 10 hex digits (as written) of a legacy creation path segment.
fn legacy_create_id(segment: &str) -> Option<&str> {
    let id = segment.strip_suffix(LEGACY_CREATE_SUFFIX)?;
    (id.len() == 10 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::tests::TempDir;

    const CONTROLLER: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";
    const T0: i64 = 1_700_000_000_000;

    fn service(home: &Path) -> ControllerService {
        ControllerService::open(home, CONTROLLER.parse().unwrap(), 3).unwrap()
    }

    fn call(s: &mut ControllerService, method: &str, path: &str, body: &str) -> HttpAnswer {
        s.handle_http(Timestamp(T0), method, path, body.as_bytes())
    }

    #[test]
    fn every_route() {
        let home = TempDir::new("controller-routes");
        let mut s = service(home.path());
        let status = call(&mut s, "GET", "/controller", "");
        assert_eq!(status.status, 200);
        assert_eq!(status.body["apiVersion"], json!(4));
        assert_eq!(status.body["clock"], json!(T0));
        assert_eq!(
            call(&mut s, "GET", "/controller/network", "").body,
            json!([])
        );

        let created = call(&mut s, "POST", "/controller/network", r#"{"name":"one"}"#);
        assert_eq!(created.status, 200);
        let id = created.body["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("8e4df28b72"));
        assert_eq!(created.body["name"], json!("one"));
        let legacy = call(&mut s, "PUT", "/controller/network/8e4df28b72______", "{}");
        assert_eq!(legacy.status, 200);
        assert_ne!(legacy.body["id"], json!(id));
        assert_eq!(
            call(&mut s, "POST", "/controller/network/0123456789______", "{}").status,
            400
        );
        assert_eq!(
            call(&mut s, "GET", "/controller/network/8e4df28b72______", "").status,
            405
        );
        assert_eq!(
            call(&mut s, "GET", "/controller/network", "")
                .body
                .as_array()
                .unwrap()
                .len(),
            2
        );

        let path = format!("/controller/network/{id}");
        assert_eq!(call(&mut s, "GET", &path, "").body["name"], json!("one"));
        assert_eq!(
            call(
                &mut s,
                "GET",
                &path
                    .to_uppercase()
                    .replace("/CONTROLLER/NETWORK", "/controller/network"),
                ""
            )
            .status,
            200
        );
        let updated = call(
            &mut s,
            "POST",
            &format!("{path}?auth=x"),
            r#"{"name":"two"}"#,
        );
        assert_eq!(updated.body["revision"], json!(2));
        assert_eq!(call(&mut s, "POST", &path, "{nope").status, 400);
        assert_eq!(call(&mut s, "PATCH", &path, "{}").status, 405);
        assert_eq!(
            call(&mut s, "GET", "/controller/network/8e4df28b72000000", "").status,
            404
        );
        assert_eq!(
            call(&mut s, "GET", "/controller/network/xyz", "").status,
            404
        );

        let members = format!("{path}/member");
        assert_eq!(call(&mut s, "GET", &members, "").body, json!({}));
        assert_eq!(
            call(
                &mut s,
                "GET",
                "/controller/network/8e4df28b72000000/member",
                ""
            )
            .status,
            404
        );
        let member = format!("{members}/a77dd93248");
        assert_eq!(call(&mut s, "GET", &member, "").status, 404);
        let posted = call(&mut s, "POST", &member, r#"{"authorized":true}"#);
        assert_eq!(posted.status, 200);
        assert_eq!(posted.body["lastAuthorizedTime"], json!(T0));
        assert_eq!(
            call(&mut s, "GET", &members, "").body,
            json!({"a77dd93248": 1})
        );
        assert_eq!(
            call(
                &mut s,
                "POST",
                "/controller/network/8e4df28b72000000/member/a77dd93248",
                "{}"
            )
            .status,
            404
        );
        let unstable = call(&mut s, "GET", "/unstable/controller/network", "");
        assert_eq!(unstable.body["meta"]["networkCount"], json!(2));
        let listed = call(&mut s, "GET", &format!("/unstable{members}"), "");
        assert_eq!(
            listed.body["meta"],
            json!({"totalCount": 1, "authorizedCount": 1})
        );
        assert_eq!(
            call(&mut s, "DELETE", &member, "").body["id"],
            json!("a77dd93248")
        );
        assert_eq!(call(&mut s, "DELETE", &member, "").status, 404);
        assert_eq!(call(&mut s, "DELETE", &path, "").body["name"], json!("two"));
        assert_eq!(call(&mut s, "DELETE", &path, "").status, 404);
        assert_eq!(call(&mut s, "GET", "/controller/other", "").status, 404);

        assert!(ControllerService::handles_path("/controller"));
        assert!(ControllerService::handles_path(
            "/unstable/controller/network"
        ));
        assert!(!ControllerService::handles_path("/controllers"));
        assert!(!ControllerService::handles_path("/status"));
    }

    #[test]
    fn store_round_trip() {
        let home = TempDir::new("controller-store");
        let (network, member, id) = {
            let mut s = service(home.path());
            let network = call(
                &mut s,
                "POST",
                "/controller/network/8e4df28b72123456",
                r#"{"name":"kept","ipAssignmentPools":[{"ipRangeStart":"10.0.0.1","ipRangeEnd":"10.0.0.9"}]}"#,
            )
            .body;
            let member = call(
                &mut s,
                "POST",
                "/controller/network/8e4df28b72123456/member/a77dd93248",
                r#"{"authorized":true,"name":"box"}"#,
            )
            .body;
            let other = call(&mut s, "POST", "/controller/network", "{}").body;
            (network, member, other["id"].as_str().unwrap().to_owned())
        };
        let root = home.path().join(CONTROLLER_DIR);
        let file = root.join("network/8e4df28b72123456.json");
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text, network.to_string());
        assert!(!text.contains('\n'));
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            DIR_MODE
        );
        assert!(root.join("trace").is_dir());
        let member_file = root.join("network/8e4df28b72123456/member/a77dd93248.json");
        assert_eq!(
            fs::read_to_string(&member_file).unwrap(),
            member.to_string()
        );
        // Files of other name lengths are not read.
        fs::write(root.join("network/stray.json"), "{}").unwrap();
        fs::write(root.join("network/abcdefabcdefabcd.json"), "not json").unwrap();

        let mut s = service(home.path());
        assert_eq!(s.controller().network_ids().len(), 2);
        let path = "/controller/network/8e4df28b72123456";
        assert_eq!(call(&mut s, "GET", path, "").body, network);
        assert_eq!(
            call(&mut s, "GET", &format!("{path}/member/a77dd93248"), "").body,
            member
        );
        // Deletions remove the files (and a network's folder).
        call(&mut s, "DELETE", &format!("{path}/member/a77dd93248"), "");
        assert!(!member_file.exists());
        call(&mut s, "DELETE", path, "");
        assert!(!file.exists());
        assert!(!root.join("network/8e4df28b72123456").exists());
        let s = service(home.path());
        assert_eq!(
            s.controller().network_ids(),
            vec![id.parse::<NetworkId>().unwrap()]
        );
    }

    /// Requests and pushes write what they change, too.
    #[test]
    fn requests_and_pushes_persist() {
        const MEMBER: &str = "a77dd93248:0:3ae13797f8532ba6c1858b3fc82c3574997fd775131e31bdb1cd6ad349f97378d0905be1a87ff1d0e7063f7d39b72844748363cc7ef998f09eee5774d2ff3b16";
        let home = TempDir::new("controller-requests");
        let mut s = service(home.path());
        let path = "/controller/network/8e4df28b72123456";
        call(&mut s, "POST", path, r#"{"private":false}"#);
        let member: Identity = MEMBER.parse().unwrap();
        let metadata = node_core::vl2::config::RequestMetadata::zerotier_1_14("linux/x86_64")
            .to_dictionary()
            .unwrap()
            .into_bytes();
        let nwid: NetworkId = "8e4df28b72123456".parse().unwrap();
        let answer = s.handle_request(Timestamp(T0), nwid, &member, &metadata, None);
        assert!(matches!(answer, RequestAnswer::Config(_)));
        let file = s.store().member_path(nwid, member.address());
        let stored: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(stored["identity"], json!(MEMBER));
        assert_eq!(stored["lastAuthorizedCredentialType"], json!("public"));

        // A network change is pushed to the member, which asked a moment ago.
        call(&mut s, "POST", path, r#"{"name":"renamed"}"#);
        let pushes = s.take_pushes(Timestamp(T0 + 1));
        assert!(matches!(
            pushes.as_slice(),
            [Push::Config { to, config, .. }] if *to == member.address() && config.name == "renamed"
        ));
        // Deauthorizing revokes its COM (on a public network the member is authorized again
        // at once, as with 1.14, and gets a fresh config).
        call(
            &mut s,
            "POST",
            &format!("{path}/member/a77dd93248"),
            r#"{"authorized":false}"#,
        );
        let pushes = s.take_pushes(Timestamp(T0 + 2));
        assert!(matches!(
            pushes.as_slice(),
            [Push::Revocation { to, .. }, Push::Config { .. }] if to == &[member.address()]
        ));
        let stored: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(stored["lastDeauthorizedTime"], json!(T0));
        assert_eq!(stored["lastAuthorizedTime"], json!(T0 + 2));
    }
}
