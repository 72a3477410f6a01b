//! The plugin API: JSON over HTTP/1.1 on a root-only Unix socket (`--socket PATH` of
//! `zt-agent run`, default [`DEFAULT_SOCKET`]). The CNI plugin and the Docker driver are thin
//! clients of it ([`crate::plugin_client`]); everything they need to be correct under retries
//! (idempotent attach and detach, garbage collection) is decided here and in the
//! [`EndpointManager`] behind it. `docs/plugin-api.md` documents the API for plugin writers.
//!
//! | Operation            | Request        | Answer          |
//! |----------------------|----------------|-----------------|
//! | `POST /v1/attach`    | [`AttachRequest`] | [`Endpoint`] |
//! | `POST /v1/detach`    | [`EndpointRef`]   | [`DetachResponse`] |
//! | `POST /v1/check`     | [`EndpointRef`]   | [`Endpoint`] (state `ready`) |
//! | `GET /v1/status`     | none              | [`Status`] |
//! | `POST /v1/gc`        | [`GcRequest`]     | [`GcResponse`] |
//! | `GET /v1/endpoints`  | none              | `[`[`Endpoint`]`]` |
//!
//! Every failure is an [`ApiError`]: `{"code","message","details"?}` with an HTTP status that
//! follows from the [`ErrorCode`].
//!
//! Division of work: this module parses and validates requests (shapes, network IDs,
//! interface names, keys, ranges), serializes operations per endpoint key and per
//! (container, interface) (see [`KeyLocks`]), bounds how long an attach may take, and turns a
//! `check` of an endpoint that is not ready into the error that says why. It also resolves
//! an attach's `netnsFd` (a descriptor of the peer, found through its pid) and pins that
//! namespace at a path ([`crate::netns_fd`]), so the manager only ever sees paths. The
//! manager does everything else that needs the node or the OS, including opening the
//! namespace: a namespace that does not exist is the manager's [`ErrorCode::NetnsNotFound`],
//! because only the thread that enters it can tell (and a detach must succeed without it).
//!
//! The types and [`ApiError`] depend on serde and node-core only, so that plugins can share
//! them with the client ([`crate::plugin_client`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use node_core::vl2::{Mac, NetworkId};
use node_core::Address;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::netns_fd::{open_caller_netns, NetnsFdError, NetnsPins};

/// Where `zt-agent run` listens unless told `--socket PATH`.
pub const DEFAULT_SOCKET: &str = "/run/zt-agent/agent.sock";
/// The version prefix of every path; a later incompatible API gets `/v2/`.
pub const API_PREFIX: &str = "/v1";
/// Largest request body accepted (a gc list of a few thousand attachments fits).
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// How long an attach waits for the endpoint to be ready when the request does not say.
pub const DEFAULT_ATTACH_WAIT: Duration = Duration::from_secs(30);
/// The longest wait a request may ask for.
pub const MAX_ATTACH_WAIT: Duration = Duration::from_secs(300);
/// What the server adds to an attach's wait before it gives up on the manager itself: the
/// manager is expected to answer within the wait, this only catches a manager that hangs.
pub const ATTACH_GRACE: Duration = Duration::from_secs(5);
/// Longest a non-attach operation may take in the manager.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Linux `IFNAMSIZ` less the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;
/// Longest endpoint key or container ID.
pub const MAX_KEY_LEN: usize = 255;
/// MTU bounds: IPv6's minimum, ZeroTier's maximum.
pub const MIN_MTU: u32 = 1280;
pub const MAX_MTU: u32 = 10_000;

// ---------------------------------------------------------------------------------------------
// Validated scalar types
// ---------------------------------------------------------------------------------------------

/// A Linux interface name as CNI allows it: 1..=15 bytes, no `/`, `:` or whitespace, not `.`
/// or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

/// Why a text is not a usable interface name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than {MAX_INTERFACE_NAME} bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', ':', whitespace or a control character")]
    BadCharacter(String),
    #[error("interface name may not be '.' or '..'")]
    Dot,
}

impl InterfaceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = InterfaceNameError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(InterfaceNameError::Empty);
        }
        if text.len() > MAX_INTERFACE_NAME {
            return Err(InterfaceNameError::TooLong(text.to_string()));
        }
        if text == "." || text == ".." {
            return Err(InterfaceNameError::Dot);
        }
        if text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(InterfaceNameError::BadCharacter(text.to_string()));
        }
        Ok(Self(text.to_string()))
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = InterfaceNameError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<InterfaceName> for String {
    fn from(name: InterfaceName) -> Self {
        name.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable endpoint key (`k8s/<namespace>/<pod>`, `docker/<endpoint id>`, ...): 1..=255
/// characters from `A-Za-z0-9._-/:@`, no empty, `.` or `..` segment between slashes, so a
/// manager may map it to a file name without surprises.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointKey(String);

/// Why a text is not a usable endpoint key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("endpoint key {0:?} is not 1..=255 characters of A-Za-z0-9._-/:@ with non-empty segments other than '.' and '..'")]
pub struct EndpointKeyError(pub String);

impl EndpointKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EndpointKey {
    type Err = EndpointKeyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let characters_ok = text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-/:@".contains(&c));
        let segments_ok = text
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
        if text.is_empty() || text.len() > MAX_KEY_LEN || !characters_ok || !segments_ok {
            return Err(EndpointKeyError(text.to_string()));
        }
        Ok(Self(text.to_string()))
    }
}

impl TryFrom<String> for EndpointKey {
    type Error = EndpointKeyError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<EndpointKey> for String {
    fn from(key: EndpointKey) -> Self {
        key.0
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container ID as CNI checks it (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), at most 255 characters.
/// Docker's 64-hex endpoint and container IDs fit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

/// Why a text is not a usable container ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("container ID {0:?} does not match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (at most 255 characters)")]
pub struct ContainerIdError(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = ContainerIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = text.bytes();
        let first_ok = bytes.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
        if !first_ok || !rest_ok || text.len() > MAX_KEY_LEN {
            return Err(ContainerIdError(text.to_string()));
        }
        Ok(Self(text.to_string()))
    }
}

impl TryFrom<String> for ContainerId {
    type Error = ContainerIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> Self {
        id.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address with its prefix length, written `10.147.17.5/24` or `fd00::1/88`, as CNI
/// results want it (the prefix is mandatory there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Why a text is not `address/prefix`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address with a prefix length (10.0.0.5/24, fd00::5/88)")]
pub struct IpPrefixError(pub String);

impl IpPrefix {
    /// `None` when `prefix_len` is longer than the address.
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self {
            address,
            prefix_len,
        })
    }
}

impl FromStr for IpPrefix {
    type Err = IpPrefixError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || IpPrefixError(text.to_string());
        let (address, prefix_len) = text.split_once('/').ok_or_else(error)?;
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let prefix_len: u8 = prefix_len.parse().map_err(|_| error())?;
        Self::new(address, prefix_len).ok_or_else(error)
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = IpPrefixError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<IpPrefix> for String {
    fn from(prefix: IpPrefix) -> Self {
        prefix.to_string()
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Serde for node-core's IDs and MACs as the text forms the rest of the agent uses (the
/// plugins' own state files use them too).
pub mod text_form {
    use super::*;
    use serde::{Deserializer, Serializer};

    fn parse<'de, D: Deserializer<'de>, T: FromStr>(d: D, what: &str) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not {what}")))
    }

    pub mod network_id {
        use super::*;
        pub fn serialize<S: Serializer>(id: &NetworkId, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(id)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkId, D::Error> {
            parse(d, "a network ID (16 hex digits)")
        }
    }

    pub mod opt_network_id {
        use super::*;
        pub fn serialize<S: Serializer>(id: &Option<NetworkId>, s: S) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.collect_str(id),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NetworkId>, D::Error> {
            let Some(text) = Option::<String>::deserialize(d)? else {
                return Ok(None);
            };
            text.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a network ID (16 hex digits)"))
            })
        }
    }

    pub(super) mod address {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(a)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
            parse(d, "a ZeroTier address (10 hex digits)")
        }
    }

    pub(super) mod opt_address {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(
            a: &Option<Address>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match a {
                Some(a) => s.collect_str(a),
                None => s.serialize_none(),
            }
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Address>, D::Error> {
            let Some(text) = Option::<String>::deserialize(d)? else {
                return Ok(None);
            };
            text.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a ZeroTier address"))
            })
        }
    }

    pub(super) mod mac {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(mac)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
            let text = String::deserialize(d)?;
            parse_mac(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("{text:?} is not a MAC (aa:bb:cc:dd:ee:ff)"))
            })
        }
    }

    /// `aa:bb:cc:dd:ee:ff`, six groups of two hex digits.
    pub(crate) fn parse_mac(text: &str) -> Option<Mac> {
        let mut octets = [0u8; 6];
        let mut groups = text.split(':');
        for octet in &mut octets {
            let group = groups.next()?;
            if group.len() != 2 {
                return None;
            }
            *octet = u8::from_str_radix(group, 16).ok()?;
        }
        groups.next().is_none().then_some(Mac(octets))
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

/// `POST /v1/attach`: attach one container interface to one network, or return the
/// attachment that already exists for this key and container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachRequest {
    #[serde(with = "text_form::network_id")]
    pub network: NetworkId,
    /// Names the endpoint's ZeroTier identity: the same key gets the same address and IPs.
    pub key: EndpointKey,
    /// Who made the endpoint (`"cni"`, `"docker"`); a gc with an owner only removes that
    /// owner's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The runtime's container (CNI) or endpoint (Docker) ID.
    pub container_id: ContainerId,
    /// The container's network namespace (`/var/run/netns/cni-...`, `/proc/<pid>/ns/net`).
    /// Absent: the interface stays in the agent's namespace, named `ifName`, with its MAC and
    /// MTU, up, without addresses or routes, for a runtime that moves and addresses it itself
    /// (Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The container's network namespace as a file descriptor number of the calling process
    /// (the peer of the socket), instead of `netns`. The agent opens it through
    /// `/proc/<caller pid>/fd/<n>` during the request, pins the namespace with a bind mount
    /// (see [`crate::netns_fd`]) and answers with the pin's path as the endpoint's `netns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_fd: Option<i32>,
    pub if_name: InterfaceName,
    /// Defaults to the network's MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Also route 0.0.0.0/0 (and ::/0 when the endpoint has IPv6) through the network.
    #[serde(default)]
    pub default_route: bool,
    /// Seconds to wait for the endpoint to be ready (configured and authorized); default 30,
    /// at most 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// Addresses from the caller's own IPAM (for networks that assign none): applied next
    /// to the managed ones and announced on the network (ARP and NDP groups) so that other
    /// members find them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ips: Vec<IpPrefix>,
    /// Routes from the caller's IPAM, applied next to the network's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_routes: Vec<Route>,
    /// Also join this host to the network (once, with a tap of its own), so that the host
    /// reaches its containers (Kubernetes probes pods from the host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
}

impl AttachRequest {
    /// A request with the optional fields unset.
    pub fn new(
        network: NetworkId,
        key: EndpointKey,
        container_id: ContainerId,
        netns: Option<PathBuf>,
        if_name: InterfaceName,
    ) -> Self {
        Self {
            network,
            key,
            owner: None,
            container_id,
            netns,
            netns_fd: None,
            if_name,
            mtu: None,
            default_route: false,
            wait: None,
            extra_ips: Vec::new(),
            extra_routes: Vec::new(),
            host_access: false,
        }
    }

    /// How long the manager may wait for the endpoint to become ready.
    pub fn wait_duration(&self) -> Duration {
        self.wait
            .map_or(DEFAULT_ATTACH_WAIT, Duration::from_secs)
            .min(MAX_ATTACH_WAIT)
    }

    /// Checks what the field types cannot: ranges and the namespace path's form.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(ApiError::invalid(format!(
                    "mtu {mtu} is outside {MIN_MTU}..={MAX_MTU}"
                )));
            }
        }
        if let Some(wait) = self.wait {
            if wait > MAX_ATTACH_WAIT.as_secs() {
                return Err(ApiError::invalid(format!(
                    "wait {wait} s is longer than the limit of {} s",
                    MAX_ATTACH_WAIT.as_secs()
                )));
            }
        }
        if let Some(fd) = self.netns_fd {
            if self.netns.is_some() {
                return Err(ApiError::invalid(
                    "give the namespace as netns (a path) or as netnsFd (a descriptor), not both",
                ));
            }
            if fd < 0 {
                return Err(ApiError::invalid(format!(
                    "netnsFd {fd} is not a file descriptor number"
                )));
            }
        }
        if let Some(netns) = &self.netns {
            check_namespace_path("netns", netns)?;
        }
        if let Some(owner) = &self.owner {
            check_owner(owner)?;
        }
        Ok(())
    }
}

/// Longest namespace path accepted (Linux's `PATH_MAX` less the terminating NUL).
pub const MAX_NAMESPACE_PATH: usize = 4095;

/// A namespace path as the agent will open it: absolute, without NUL (the kernel would cut
/// it there) or `..` components (a path that climbs is never a runtime's namespace file), at
/// most [`MAX_NAMESPACE_PATH`] bytes. `field` names it in the error.
pub fn check_namespace_path(field: &str, path: &Path) -> Result<(), ApiError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let problem = if !path.is_absolute() {
        Some("is not an absolute path")
    } else if bytes.contains(&0) {
        Some("contains a NUL byte")
    } else if bytes.len() > MAX_NAMESPACE_PATH {
        Some("is longer than 4095 bytes")
    } else if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        Some("has a '..' component")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ApiError::invalid(format!(
            "{field} {:?} {problem}",
            path.display()
                .to_string()
                .chars()
                .take(128)
                .collect::<String>()
        ))),
        None => Ok(()),
    }
}

fn check_owner(owner: &str) -> Result<(), ApiError> {
    let ok = !owner.is_empty()
        && owner.len() <= 64
        && owner
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "owner {owner:?} is not 1..=64 characters of A-Za-z0-9._-"
        )))
    }
}

/// Names an attachment for `detach` and `check`: by `key`, or by `containerId` and `ifName`,
/// or both. Every field given must match (see [`EndpointRef::matches`]), so a late detach for
/// an old container does not remove the endpoint a new container with the same key now has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<EndpointKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_name: Option<InterfaceName>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_network_id"
    )]
    pub network: Option<NetworkId>,
}

impl EndpointRef {
    pub fn by_key(key: EndpointKey) -> Self {
        Self {
            key: Some(key),
            ..Self::default()
        }
    }

    pub fn by_attachment(container_id: ContainerId, if_name: InterfaceName) -> Self {
        Self {
            container_id: Some(container_id),
            if_name: Some(if_name),
            ..Self::default()
        }
    }

    /// A reference must name a key, or a container and interface.
    pub fn validate(&self) -> Result<(), ApiError> {
        let by_attachment = self.container_id.is_some() && self.if_name.is_some();
        if self.key.is_none() && !by_attachment {
            return Err(ApiError::invalid(
                "name the endpoint by key, or by containerId and ifName",
            ));
        }
        Ok(())
    }

    /// Whether `endpoint` is the one referred to: every field given matches.
    pub fn matches(&self, endpoint: &Endpoint) -> bool {
        self.names(
            &endpoint.key,
            &endpoint.container_id,
            &endpoint.if_name,
            endpoint.network,
        )
    }

    /// Whether this names the attachment `request` made.
    pub fn matches_request(&self, request: &AttachRequest) -> bool {
        self.names(
            &request.key,
            &request.container_id,
            &request.if_name,
            request.network,
        )
    }

    /// Whether every field given equals its counterpart of an attachment.
    fn names(
        &self,
        key: &EndpointKey,
        container_id: &ContainerId,
        if_name: &InterfaceName,
        network: NetworkId,
    ) -> bool {
        self.key.as_ref().is_none_or(|k| k == key)
            && self
                .container_id
                .as_ref()
                .is_none_or(|id| id == container_id)
            && self.if_name.as_ref().is_none_or(|name| name == if_name)
            && self.network.is_none_or(|nwid| nwid == network)
    }
}

/// `POST /v1/detach`: the endpoint (as [`EndpointRef`] names it), and whether its key's
/// identity is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<EndpointKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_name: Option<InterfaceName>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_network_id"
    )]
    pub network: Option<NetworkId>,
    /// The endpoint and its interface go, but the key's identity (and its network's last
    /// config) stays, so that a later attach with the key is the same member with the same
    /// addresses. Without it (the default) the identity goes too; a detach by key alone of a
    /// key that only has a kept identity deletes that identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_identity: bool,
}

impl DetachRequest {
    /// The endpoint it names.
    pub fn target(&self) -> EndpointRef {
        EndpointRef {
            key: self.key.clone(),
            container_id: self.container_id.clone(),
            if_name: self.if_name.clone(),
            network: self.network,
        }
    }
}

impl From<EndpointRef> for DetachRequest {
    fn from(target: EndpointRef) -> Self {
        Self {
            key: target.key,
            container_id: target.container_id,
            if_name: target.if_name,
            network: target.network,
            keep_identity: false,
        }
    }
}

/// `POST /v1/sandbox`: where the runtime moved (or put back) the interface of an endpoint
/// attached without `netns` (Docker's Join and Leave), so that a restarted agent finds it
/// there. Every field names the endpoint and must match it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxRequest {
    pub key: EndpointKey,
    pub container_id: ContainerId,
    pub if_name: InterfaceName,
    /// The namespace the interface is moved into (a path such as Docker's
    /// `/var/run/docker/netns/<id>`); `null`: back in the agent's namespace, named `ifName`.
    #[serde(default)]
    pub sandbox: Option<PathBuf>,
}

impl SandboxRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        match &self.sandbox {
            Some(path) => check_namespace_path("sandbox", path),
            None => Ok(()),
        }
    }

    /// The endpoint it names.
    pub fn target(&self) -> EndpointRef {
        EndpointRef {
            key: Some(self.key.clone()),
            container_id: Some(self.container_id.clone()),
            if_name: Some(self.if_name.clone()),
            network: None,
        }
    }
}

/// `POST /v1/detach`: whether an endpoint was there to remove. Unknown endpoints are not an
/// error (`detached: false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachResponse {
    pub detached: bool,
}

/// `GET /v1/status`: whether an attach can be served now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The agent is up, online (it reaches a root) and ready to attach.
    pub ready: bool,
    /// The agent's own ZeroTier address.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_address"
    )]
    pub address: Option<Address>,
    pub version: String,
    /// How many endpoints the agent holds.
    #[serde(default)]
    pub endpoints: usize,
    /// Why the agent is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A container attachment as CNI's GC names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRef {
    pub container_id: ContainerId,
    pub if_name: InterfaceName,
}

/// `POST /v1/gc`: remove every endpoint (of `owner`, if given) that is named neither in
/// `valid` (keys) nor in `validAttachments`. Both lists empty removes all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only endpoints on this network are in scope (a CNI network config names one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_network_id"
    )]
    pub network: Option<NetworkId>,
    #[serde(default)]
    pub valid: Vec<EndpointKey>,
    #[serde(default)]
    pub valid_attachments: Vec<AttachmentRef>,
}

impl GcRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        match &self.owner {
            Some(owner) => check_owner(owner),
            None => Ok(()),
        }
    }

    /// Whether `endpoint` survives this gc.
    pub fn keeps(&self, endpoint: &Endpoint) -> bool {
        let other_owner = self
            .owner
            .as_ref()
            .is_some_and(|owner| endpoint.owner.as_ref() != Some(owner));
        let other_network = self.network.is_some_and(|n| n != endpoint.network);
        other_owner
            || other_network
            || self.valid.contains(&endpoint.key)
            || self.valid_attachments.iter().any(|attachment| {
                attachment.container_id == endpoint.container_id
                    && attachment.if_name == endpoint.if_name
            })
    }
}

/// `POST /v1/gc`: the keys of the endpoints removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    pub removed: Vec<EndpointKey>,
    /// Endpoints the manager could not remove, with why; it went on with the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<GcFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcFailure {
    pub key: EndpointKey,
    pub message: String,
}

/// A route in the container: `dst` through the network, via `gateway` when given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// Where an endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointState {
    /// Waiting for the network's configuration.
    Pending,
    /// The controller refused the member: it must be authorized.
    AccessDenied,
    /// The controller says the network does not exist.
    NetworkNotFound,
    /// Up, addressed, authorized and online.
    Ready,
    /// Configured, but the node has lost its roots or the controller for now.
    Offline,
    /// A state this client does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

/// One attachment of a container interface to a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub key: EndpointKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(with = "text_form::network_id")]
    pub network: NetworkId,
    pub container_id: ContainerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    pub if_name: InterfaceName,
    #[serde(with = "text_form::mac")]
    pub mac: Mac,
    /// The endpoint's own ZeroTier address (the member to authorize).
    #[serde(with = "text_form::address")]
    pub address: Address,
    /// Managed addresses, with prefix lengths.
    #[serde(default)]
    pub ips: Vec<IpPrefix>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub mtu: u32,
    pub state: EndpointState,
    /// The network's DNS settings, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Traffic through the endpoint since the agent started.
    #[serde(default)]
    pub counters: EndpointCounters,
}

/// A network's DNS settings (ZeroTier's `dns` of a network config).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// The search domain.
    pub domain: String,
    pub servers: Vec<IpAddr>,
}

/// Per-endpoint packet and byte counters. `switched*` count unicast frames handed between
/// two endpoints of the same agent without UDP or encryption (local switching); the rest
/// went over VL1 as ZeroTier packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCounters {
    /// Frames (and their bytes) read from the endpoint's interface.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames (and their bytes) written to the endpoint's interface.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames this endpoint sent to a local endpoint, switched locally.
    pub switched_out_packets: u64,
    pub switched_out_bytes: u64,
    /// Frames a local endpoint switched to this one that its inbound rules accepted.
    pub switched_in_packets: u64,
    pub switched_in_bytes: u64,
}

impl Endpoint {
    /// `Ok` when the endpoint is ready, else the error that says what it waits for.
    pub fn readiness(&self) -> Result<(), ApiError> {
        let (network, key) = (self.network, &self.key);
        match self.state {
            EndpointState::Ready => Ok(()),
            EndpointState::AccessDenied => Err(ApiError::not_authorized(network, self.address)),
            EndpointState::NetworkNotFound => Err(ApiError::network_not_found(network)),
            EndpointState::Pending => Err(ApiError::new(
                ErrorCode::NotReady,
                format!("endpoint {key} on network {network} is waiting for its configuration"),
            )),
            EndpointState::Offline => Err(ApiError::new(
                ErrorCode::NotReady,
                format!("endpoint {key} on network {network} is offline (no root or controller reachable)"),
            )),
            EndpointState::Unknown => Err(ApiError::new(
                ErrorCode::NotReady,
                format!("endpoint {key} on network {network} is in an unknown state"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What went wrong, for programs; [`ApiError::message`] says it for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, a bad field, a missing field.
    InvalidRequest,
    /// No such path or method under `/v1/` (the client is newer than the agent?).
    UnsupportedOperation,
    /// `check` of an endpoint the agent does not have.
    NotFound,
    /// The network namespace given does not exist (any more).
    NetnsNotFound,
    /// The request collides with another attachment (an interface of that name in the
    /// namespace belongs to another endpoint, or the key is attached in another namespace).
    Conflict,
    /// The network is private and the endpoint's member is not authorized:
    /// `details.memberAddress` names it.
    NotAuthorized,
    /// The endpoint exists but is not ready yet (no configuration, offline).
    NotReady,
    /// `check`: the endpoint's interface is gone from its namespace (deleted by hand?).
    InterfaceMissing,
    /// The network's controller is unreachable or says the network does not exist.
    NetworkUnreachable,
    /// The operation did not finish in the time allowed.
    Timeout,
    /// The agent is not ready to serve attaches (starting, no roots reachable).
    Unavailable,
    /// A fault in the agent.
    Internal,
    /// A code this client does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "InvalidRequest",
            Self::UnsupportedOperation => "UnsupportedOperation",
            Self::NotFound => "NotFound",
            Self::NetnsNotFound => "NetnsNotFound",
            Self::Conflict => "Conflict",
            Self::NotAuthorized => "NotAuthorized",
            Self::NotReady => "NotReady",
            Self::InterfaceMissing => "InterfaceMissing",
            Self::NetworkUnreachable => "NetworkUnreachable",
            Self::Timeout => "Timeout",
            Self::Unavailable => "Unavailable",
            Self::Internal => "Internal",
            Self::Unknown => "Unknown",
        }
    }

    /// The HTTP status the server answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::NotAuthorized => 403,
            Self::UnsupportedOperation
            | Self::NotFound
            | Self::NetnsNotFound
            | Self::InterfaceMissing => 404,
            Self::Conflict => 409,
            Self::NetworkUnreachable => 502,
            Self::NotReady | Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// The CNI error code a CNI plugin should report (spec, "Error"): 3 for a container that
    /// is gone, 7 for a bad configuration, 11 for "try again later", 50 for an agent not
    /// available, 999 for anything else.
    pub const fn cni_code(self) -> u32 {
        match self {
            Self::NetnsNotFound | Self::NotFound => 3,
            Self::InvalidRequest => 7,
            Self::NotAuthorized | Self::NotReady | Self::NetworkUnreachable | Self::Timeout => 11,
            Self::Unavailable => 50,
            Self::UnsupportedOperation
            | Self::Conflict
            | Self::InterfaceMissing
            | Self::Internal
            | Self::Unknown => 999,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts an error refers to, for programs that act on them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_network_id"
    )]
    pub network: Option<NetworkId>,
    /// The member to authorize on the network's controller.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_form::opt_address"
    )]
    pub member_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<EndpointKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
}

/// An error as the API carries it: `{"code","message","details"?}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: ErrorDetails) -> Self {
        self.details = Some(details);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The private-network refusal; the message names the member to authorize.
    pub fn not_authorized(network: NetworkId, member: Address) -> Self {
        Self::new(
            ErrorCode::NotAuthorized,
            format!(
                "network {network} is private and member {member} is not authorized: \
                 authorize member {member} on the network's controller, or give the agent \
                 controller credentials so that it authorizes its endpoints itself"
            ),
        )
        .with_details(ErrorDetails {
            network: Some(network),
            member_address: Some(member),
            ..ErrorDetails::default()
        })
    }

    pub fn network_not_found(network: NetworkId) -> Self {
        Self::new(
            ErrorCode::NetworkUnreachable,
            format!(
                "network {network} does not exist on its controller {}",
                network.controller()
            ),
        )
        .with_details(ErrorDetails {
            network: Some(network),
            ..ErrorDetails::default()
        })
    }

    pub fn netns_not_found(netns: &Path) -> Self {
        Self::new(
            ErrorCode::NetnsNotFound,
            format!("network namespace {} does not exist", netns.display()),
        )
        .with_details(ErrorDetails {
            netns: Some(netns.to_path_buf()),
            ..ErrorDetails::default()
        })
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
}

// ---------------------------------------------------------------------------------------------
// The manager the server drives
// ---------------------------------------------------------------------------------------------

/// The future a manager method returns (the trait must be object-safe).
pub type ManagerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server needs from the agent. The server hands over validated requests and holds
/// the per-key lock (see [`KeyLocks`]) for the duration of `attach`, `detach` and `check`.
///
/// Contract, for correctness under retries:
/// - `attach` is idempotent: an attach for a key that is attached for the same container
///   and interface returns that endpoint (waiting for readiness again if needed). An attach
///   for a key attached to another container replaces that attachment (the old container
///   is gone or about to be; the identity follows the key). It waits up to
///   [`AttachRequest::wait_duration`] for the endpoint to be ready and then fails with the
///   reason ([`ApiError::not_authorized`] naming the member, `NetworkUnreachable`,
///   `Timeout`), leaving the endpoint in place so that a retry or a detach finds it.
/// - `detach` is idempotent: nothing matching is `detached: false`, not an error; a
///   namespace that is gone is not an error either (the tap went with it).
/// - `check` returns the endpoint (or `NotFound`) after verifying its plumbing; the server
///   turns a state other than `Ready` into the matching error.
/// - `gc` removes what [`GcRequest::keeps`] rejects, goes on after failures and lists them.
pub trait EndpointManager: Send + Sync + 'static {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>>;
    fn detach(&self, request: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>>;
    fn check(&self, request: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>>;
    fn status(&self) -> ManagerFuture<'_, Status>;
    fn gc(&self, request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>>;
    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>>;
    /// `detach` with its options; a manager without kept identities refuses `keepIdentity`.
    fn detach_with(
        &self,
        request: DetachRequest,
    ) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        if request.keep_identity {
            return Box::pin(std::future::ready(Err(ApiError::new(
                ErrorCode::UnsupportedOperation,
                "this agent cannot keep an endpoint's identity (keepIdentity)",
            ))));
        }
        self.detach(request.target())
    }
    /// Records where the runtime moved an endpoint's interface; `NotFound` when no endpoint
    /// matches every field.
    fn sandbox(&self, request: SandboxRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        let _ = request;
        Box::pin(std::future::ready(Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            "this agent does not track sandboxes",
        ))))
    }
}

// ---------------------------------------------------------------------------------------------
// Per-key serialization
// ---------------------------------------------------------------------------------------------

/// Async locks by name, created on demand and dropped when nobody holds or waits for them.
/// The server takes `key:<key>` and then `attachment:<containerId>/<ifName>` (always in that
/// order, so two requests never wait on each other crosswise), so that the manager never
/// sees two operations on one endpoint at once.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one named lock; releasing it forgets the lock if nobody else wants it.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, name: String) -> KeyGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(name.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        KeyGuard {
            locks: self,
            name,
            guard: Some(guard),
        }
    }

    /// How many names have a lock (held or awaited); for tests.
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under the map's lock, so one reference left is the map's own:
        // nobody holds or waits for this name.
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

async fn lock_endpoint<'a>(
    locks: &'a KeyLocks,
    key: Option<&EndpointKey>,
    attachment: Option<(&ContainerId, &InterfaceName)>,
) -> (Option<KeyGuard<'a>>, Option<KeyGuard<'a>>) {
    let key_guard = match key {
        Some(key) => Some(locks.lock(format!("key:{key}")).await),
        None => None,
    };
    let attachment_guard = match attachment {
        Some((id, name)) => Some(locks.lock(format!("attachment:{id}/{name}")).await),
        None => None,
    };
    (key_guard, attachment_guard)
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A listening plugin API: the socket file and the task that serves it. Dropping it stops
/// the task; [`PluginApiServer::shutdown`] also removes the socket file.
pub struct PluginApiServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl PluginApiServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file (connections in flight are cut).
    pub fn shutdown(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for PluginApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists the namespace paths that endpoint records name (pins among them are kept).
pub type PinsInUse = Arc<dyn Fn() -> Vec<PathBuf> + Send + Sync>;

/// How the server pins namespaces given by descriptor (`netnsFd`).
#[derive(Clone)]
pub struct ServerOptions {
    /// The folder of the pins ([`NetnsPins`]).
    pub netns_pins: PathBuf,
    /// What keeps a pin: the agent's endpoint records. Without it, the manager's endpoint
    /// list.
    pub pins_in_use: Option<PinsInUse>,
}

impl ServerOptions {
    /// Pins in `netns/` next to the socket, kept while the manager lists them.
    pub fn beside(socket: &Path) -> Self {
        let parent = socket.parent().unwrap_or(Path::new("."));
        Self {
            netns_pins: parent.join("netns"),
            pins_in_use: None,
        }
    }
}

/// Binds `path` (see [`bind_socket`]) and serves the API there on a task of its own, with
/// namespace pins beside the socket ([`ServerOptions::beside`]).
pub async fn spawn(path: &Path, manager: Arc<dyn EndpointManager>) -> io::Result<PluginApiServer> {
    spawn_with(path, manager, ServerOptions::beside(path)).await
}

/// [`spawn`] with options.
pub async fn spawn_with(
    path: &Path,
    manager: Arc<dyn EndpointManager>,
    options: ServerOptions,
) -> io::Result<PluginApiServer> {
    let (listener, owner_uid) = bind_socket(path, 0o700)?;
    let task = tokio::spawn(serve(listener, owner_uid, manager, options));
    Ok(PluginApiServer {
        path: path.to_path_buf(),
        task,
    })
}

/// Binds a root-only API socket at `path` (the agent's, and the Docker plugin's):
/// - missing parent directories are created with `parent_mode` (existing ones are left
///   alone): 0700 for the agent's, 0755 for Docker's `/run/docker/plugins`;
/// - a stale socket file is removed, but a live one (another agent answers on it) is
///   `AddrInUse`, and a path that is not a socket is `AlreadyExists`;
/// - the socket is bound under a temporary name, set to mode 0600 and renamed into place,
///   so it is never reachable with a looser mode.
///
/// Returns the listener and the uid that owns the socket (the agent's), which with root is
/// the only peer [`serve`] accepts.
pub fn bind_socket(path: &Path, parent_mode: u32) -> io::Result<(UnixListener, u32)> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(parent_mode)
        .create(parent)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket_like() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = parent.join(temporary_name);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let owner_uid = std::fs::metadata(path)?.uid();
    Ok((listener, owner_uid))
}

/// `FileType::is_socket` behind a name that reads well at the call site.
trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

/// Accepts connections until the task is dropped. Peers other than root and `owner_uid` are
/// refused (the socket's mode already keeps them out; this holds if the mode is loosened).
/// The peer's pid is kept for the connection: an attach's `netnsFd` is its descriptor.
pub async fn serve(
    listener: UnixListener,
    owner_uid: u32,
    manager: Arc<dyn EndpointManager>,
    options: ServerOptions,
) {
    let shared = Arc::new(Shared {
        manager,
        locks: KeyLocks::default(),
        pins: NetnsPins::open(options.netns_pins),
        pins_in_use: options.pins_in_use,
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("plugin API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer_pid = match stream.peer_cred() {
            Ok(cred) if cred.uid() == 0 || cred.uid() == owner_uid => cred.pid(),
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "plugin API: refused a connection");
                continue;
            }
            Err(e) => {
                tracing::warn!("plugin API: no peer credentials: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, request, peer_pid).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("plugin API connection ended: {e}");
            }
        });
    }
}

struct Shared {
    manager: Arc<dyn EndpointManager>,
    locks: KeyLocks,
    pins: NetnsPins,
    pins_in_use: Option<PinsInUse>,
}

type HttpResponse = Response<Full<Bytes>>;

async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    peer_pid: Option<i32>,
) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::invalid(format!(
                "request body over {MAX_REQUEST_BODY} bytes, or cut short"
            )))
        }
    };
    let path = parts.uri.path();
    let operation = path
        .strip_prefix(API_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .map(|rest| rest.trim_end_matches('/'));
    let Some(operation) = operation else {
        return unsupported(&parts.method, path, None);
    };
    let expected = match operation {
        "attach" | "detach" | "check" | "gc" | "sandbox" => Method::POST,
        "status" | "endpoints" => Method::GET,
        _ => return unsupported(&parts.method, path, None),
    };
    if parts.method != expected {
        return unsupported(&parts.method, path, Some(&expected));
    }
    let result = match operation {
        "attach" => attach(shared, &body, peer_pid).await,
        "detach" => detach(shared, &body).await,
        "check" => check(shared, &body).await,
        "gc" => gc(shared, &body).await,
        "sandbox" => sandbox(shared, &body).await,
        "status" => Ok(to_json(&shared.manager.status().await)),
        "endpoints" => bounded(OPERATION_TIMEOUT, shared.manager.endpoints())
            .await
            .map(|list| to_json(&list)),
        _ => return unsupported(&parts.method, path, None),
    };
    match result {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(error) => error_response(&error),
    }
}

async fn attach(shared: &Shared, body: &[u8], peer_pid: Option<i32>) -> Result<Vec<u8>, ApiError> {
    let mut request: AttachRequest = parse_body(body)?;
    request.validate()?;
    // A descriptor is opened and checked before anything changes.
    let caller_netns = request
        .netns_fd
        .map(|fd| open_caller_netns(peer_pid, fd))
        .transpose()
        .map_err(netns_fd_error)?;
    let _guards = lock_endpoint(
        &shared.locks,
        Some(&request.key),
        Some((&request.container_id, &request.if_name)),
    )
    .await;
    let pin = match &caller_netns {
        Some(netns) => {
            let path = shared.pins.pin(netns).await.map_err(netns_fd_error)?;
            request.netns = Some(path.clone());
            request.netns_fd = None;
            Some(path)
        }
        None => None,
    };
    let limit = request.wait_duration() + ATTACH_GRACE;
    let result = bounded(limit, shared.manager.attach(request)).await;
    if let Some(pin) = &pin {
        shared.pins.release(pin).await;
    }
    // A pin nothing uses (a failed attach, a replaced endpoint's) goes now.
    sweep_pins(shared).await;
    Ok(to_json(&result?))
}

async fn detach(shared: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: DetachRequest = parse_body(body)?;
    let target = request.target();
    target.validate()?;
    let _guards = lock_endpoint(&shared.locks, target.key.as_ref(), attachment_of(&target)).await;
    let answer = bounded(OPERATION_TIMEOUT, shared.manager.detach_with(request)).await;
    sweep_pins(shared).await;
    Ok(to_json(&answer?))
}

/// Unpins the namespaces no endpoint record (or, without records, no listed endpoint)
/// names any more.
async fn sweep_pins(shared: &Shared) {
    let in_use = async {
        match &shared.pins_in_use {
            Some(in_use) => Some(in_use()),
            None => bounded(OPERATION_TIMEOUT, shared.manager.endpoints())
                .await
                .ok()
                .map(|list| list.into_iter().filter_map(|e| e.netns).collect()),
        }
    };
    shared.pins.sweep(in_use).await;
}

fn netns_fd_error(error: NetnsFdError) -> ApiError {
    if error.is_callers() {
        ApiError::invalid(error.to_string())
    } else {
        ApiError::internal(error.to_string())
    }
}

async fn sandbox(shared: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: SandboxRequest = parse_body(body)?;
    request.validate()?;
    let _guards = lock_endpoint(
        &shared.locks,
        Some(&request.key),
        Some((&request.container_id, &request.if_name)),
    )
    .await;
    let endpoint = bounded(OPERATION_TIMEOUT, shared.manager.sandbox(request)).await?;
    Ok(to_json(&endpoint))
}

async fn check(shared: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: EndpointRef = parse_body(body)?;
    request.validate()?;
    let _guards = lock_endpoint(&shared.locks, request.key.as_ref(), attachment_of(&request)).await;
    let endpoint = bounded(OPERATION_TIMEOUT, shared.manager.check(request)).await?;
    endpoint.readiness()?;
    Ok(to_json(&endpoint))
}

async fn gc(shared: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: GcRequest = parse_body(body)?;
    request.validate()?;
    let answer = bounded(OPERATION_TIMEOUT, shared.manager.gc(request)).await;
    sweep_pins(shared).await;
    Ok(to_json(&answer?))
}

fn attachment_of(request: &EndpointRef) -> Option<(&ContainerId, &InterfaceName)> {
    request.container_id.as_ref().zip(request.if_name.as_ref())
}

async fn bounded<T>(
    limit: Duration,
    operation: ManagerFuture<'_, Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!("the agent did not finish within {} s", limit.as_secs()),
            ))
        })
}

/// Reads a request body as every POST route does (public for the fuzz targets): an empty
/// body is an error, not `{}`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("bad request body: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own types serialize infallibly (string keys, no non-finite floats).
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

fn unsupported(method: &Method, path: &str, allowed: Option<&Method>) -> HttpResponse {
    match allowed {
        Some(allowed) => {
            let mut response = error_response_with(
                StatusCode::METHOD_NOT_ALLOWED,
                &ApiError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("{path} takes {allowed}, not {method}"),
                ),
            );
            if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
                response.headers_mut().insert(ALLOW, value);
            }
            response
        }
        None => error_response(&ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!("no operation {method} {path} (this agent speaks {API_PREFIX}/)"),
        )),
    }
}

fn error_response(error: &ApiError) -> HttpResponse {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response_with(status, error)
}

fn error_response_with(status: StatusCode, error: &ApiError) -> HttpResponse {
    json_response(status, to_json(error))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interface_names_follow_cni_rules() {
        assert!("eth0".parse::<InterfaceName>().is_ok());
        assert!("a23456789012345".parse::<InterfaceName>().is_ok());
        assert_eq!(
            "a234567890123456".parse::<InterfaceName>(),
            Err(InterfaceNameError::TooLong("a234567890123456".into()))
        );
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "a\u{7}"] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_container_ids_are_checked() {
        for good in ["k8s/default/web-0", "docker/0123abcd", "x", "a:b@c.d_e-f"] {
            assert!(good.parse::<EndpointKey>().is_ok(), "{good:?}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "a\\b", "é"] {
            assert!(bad.parse::<EndpointKey>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(256).parse::<EndpointKey>().is_err());
        assert!("abc123_.-x".parse::<ContainerId>().is_ok());
        for bad in ["", "-a", ".a", "a/b", "a b"] {
            assert!(bad.parse::<ContainerId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_need_a_length_in_range() {
        let p: IpPrefix = "10.147.17.5/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.147.17.5/24");
        assert_eq!(
            "fd00::1/88".parse::<IpPrefix>().unwrap().to_string(),
            "fd00::1/88"
        );
        for bad in ["10.0.0.1", "10.0.0.1/33", "fd00::1/129", "x/8", "10.0.0.1/"] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_parse_exactly_six_octets() {
        assert_eq!(
            text_form::parse_mac("32:aa:00:01:02:ff"),
            Some(Mac([0x32, 0xaa, 0x00, 0x01, 0x02, 0xff]))
        );
        for bad in [
            "32:aa:00:01:02",
            "32:aa:00:01:02:ff:00",
            "32aa00:01:02:ff",
            "zz:aa:00:01:02:ff",
        ] {
            assert_eq!(text_form::parse_mac(bad), None, "{bad:?}");
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            key: "k8s/ns/pod".parse().unwrap(),
            owner: Some("cni".into()),
            network: NetworkId(0x8056_c2e2_1c00_0001),
            container_id: "c1".parse().unwrap(),
            netns: Some("/var/run/netns/cni-1".into()),
            if_name: "eth0".parse().unwrap(),
            mac: Mac([0x32, 1, 2, 3, 4, 5]),
            address: Address::from_u64(0x01_2345_6789),
            ips: vec!["10.147.17.5/24".parse().unwrap()],
            routes: vec![Route {
                dst: "10.147.17.0/24".parse().unwrap(),
                gateway: None,
            }],
            gateway: None,
            mtu: 2800,
            dns: None,
            counters: EndpointCounters::default(),
            state: EndpointState::Ready,
        }
    }

    #[test]
    fn endpoint_json_is_camel_case_text() {
        let value = serde_json::to_value(endpoint()).unwrap();
        assert_eq!(
            value,
            json!({
                "key": "k8s/ns/pod", "owner": "cni", "network": "8056c2e21c000001",
                "containerId": "c1", "netns": "/var/run/netns/cni-1", "ifName": "eth0",
                "mac": "32:01:02:03:04:05", "address": "0123456789",
                "ips": ["10.147.17.5/24"], "routes": [{"dst": "10.147.17.0/24"}],
                "mtu": 2800, "state": "ready",
                "counters": {
                    "rxPackets": 0, "rxBytes": 0, "txPackets": 0, "txBytes": 0,
                    "switchedOutPackets": 0, "switchedOutBytes": 0,
                    "switchedInPackets": 0, "switchedInBytes": 0
                }
            })
        );
        let back: Endpoint = serde_json::from_value(value).unwrap();
        assert_eq!(back, endpoint());
    }

    #[test]
    fn attach_request_parses_and_validates() {
        let request: AttachRequest = serde_json::from_value(json!({
            "network": "8056c2e21c000001", "key": "k8s/ns/pod", "containerId": "c1",
            "netns": "/var/run/netns/x", "ifName": "eth0", "mtu": 2800, "defaultRoute": true,
            "wait": 10
        }))
        .unwrap();
        request.validate().unwrap();
        assert_eq!(request.wait_duration(), Duration::from_secs(10));
        assert!(request.default_route);

        let bad_nwid = serde_json::from_value::<AttachRequest>(json!({
            "network": "8056c2e21c00001", "key": "k", "containerId": "c", "ifName": "eth0"
        }))
        .unwrap_err();
        assert!(bad_nwid.to_string().contains("network ID"), "{bad_nwid}");

        let mut relative = request.clone();
        relative.netns = Some("netns/x".into());
        assert_eq!(
            relative.validate().unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let by_fd: AttachRequest = serde_json::from_value(json!({
            "network": "8056c2e21c000001", "key": "k", "containerId": "c", "ifName": "eth0",
            "netnsFd": 7
        }))
        .unwrap();
        by_fd.validate().unwrap();
        assert_eq!((by_fd.netns_fd, &by_fd.netns), (Some(7), &None));
        assert_eq!(serde_json::to_value(&by_fd).unwrap()["netnsFd"], 7);
        let mut both = by_fd.clone();
        both.netns = Some("/var/run/netns/x".into());
        let error = both.validate().unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains("not both"), "{error}");
        let mut negative = by_fd;
        negative.netns_fd = Some(-1);
        assert!(negative.validate().is_err());
        assert!(serde_json::from_value::<AttachRequest>(json!({
            "network": "8056c2e21c000001", "key": "k", "containerId": "c", "ifName": "eth0",
            "netnsFd": "7"
        }))
        .is_err());

        let mut small = request.clone();
        small.mtu = Some(500);
        assert!(small.validate().is_err());
        let mut long = request;
        long.wait = Some(301);
        assert!(long.validate().is_err());
    }

    #[test]
    fn references_match_every_given_field() {
        let ep = endpoint();
        assert!(EndpointRef::by_key(ep.key.clone()).matches(&ep));
        assert!(
            EndpointRef::by_attachment(ep.container_id.clone(), ep.if_name.clone()).matches(&ep)
        );
        let stale = EndpointRef {
            container_id: Some("old".parse().unwrap()),
            ..EndpointRef::by_key(ep.key.clone())
        };
        assert!(
            !stale.matches(&ep),
            "an old container's detach must spare the new one"
        );
        let other_net = EndpointRef {
            network: Some(NetworkId(1)),
            ..EndpointRef::by_key(ep.key.clone())
        };
        assert!(!other_net.matches(&ep));
        assert!(EndpointRef::default().validate().is_err());
        let half = EndpointRef {
            container_id: Some("c1".parse().unwrap()),
            ..EndpointRef::default()
        };
        assert!(half.validate().is_err());
    }

    #[test]
    fn gc_keeps_listed_and_foreign_endpoints() {
        let ep = endpoint();
        assert!(!GcRequest::default().keeps(&ep));
        let by_key = GcRequest {
            valid: vec![ep.key.clone()],
            ..GcRequest::default()
        };
        assert!(by_key.keeps(&ep));
        let by_attachment = GcRequest {
            valid_attachments: vec![AttachmentRef {
                container_id: ep.container_id.clone(),
                if_name: ep.if_name.clone(),
            }],
            ..GcRequest::default()
        };
        assert!(by_attachment.keeps(&ep));
        let docker_gc = GcRequest {
            owner: Some("docker".into()),
            ..GcRequest::default()
        };
        assert!(
            docker_gc.keeps(&ep),
            "a docker gc leaves cni endpoints alone"
        );
        let cni_gc = GcRequest {
            owner: Some("cni".into()),
            ..GcRequest::default()
        };
        assert!(!cni_gc.keeps(&ep));
    }

    #[test]
    fn not_ready_states_explain_themselves() {
        let mut ep = endpoint();
        assert!(ep.readiness().is_ok());
        ep.state = EndpointState::AccessDenied;
        let error = ep.readiness().unwrap_err();
        assert_eq!(error.code, ErrorCode::NotAuthorized);
        assert!(error.message.contains("0123456789"), "{}", error.message);
        assert_eq!(
            error.details.unwrap().member_address,
            Some(Address::from_u64(0x01_2345_6789))
        );
        ep.state = EndpointState::Pending;
        assert_eq!(ep.readiness().unwrap_err().code, ErrorCode::NotReady);
        ep.state = EndpointState::NetworkNotFound;
        assert_eq!(
            ep.readiness().unwrap_err().code,
            ErrorCode::NetworkUnreachable
        );
    }

    #[test]
    fn error_codes_round_trip_and_tolerate_new_ones() {
        let error =
            ApiError::not_authorized(NetworkId(0x8056_c2e2_1c00_0001), Address::from_u64(0xaa));
        let value = serde_json::to_value(&error).unwrap();
        assert_eq!(value["code"], "NotAuthorized");
        assert_eq!(value["details"]["memberAddress"], "00000000aa");
        assert_eq!(value["details"]["network"], "8056c2e21c000001");
        assert_eq!(serde_json::from_value::<ApiError>(value).unwrap(), error);
        let future: ApiError =
            serde_json::from_value(json!({"code": "SomethingNew", "message": "m"})).unwrap();
        assert_eq!(future.code, ErrorCode::Unknown);
        assert_eq!(ErrorCode::NotAuthorized.http_status(), 403);
        assert_eq!(ErrorCode::NotAuthorized.cni_code(), 11);
    }

    #[tokio::test]
    async fn key_locks_serialize_and_forget() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("a".into()).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("a".into()).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let other = locks.lock("b".into()).await;
        drop(other);
        drop(first);
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }

    #[test]
    fn detach_and_sandbox_requests_parse_and_validate() {
        let detach: DetachRequest = serde_json::from_value(json!({
            "key": "docker/3f9a0c1b2d4e", "containerId": "3f9a0c1b2d4e",
            "ifName": "ztd3f9a0c1b2d4e", "keepIdentity": true
        }))
        .unwrap();
        assert!(detach.keep_identity);
        let target = detach.target();
        assert_eq!(target.key, detach.key);
        assert_eq!(target.if_name, detach.if_name);
        // The plain form still parses, without the option; and it is not sent when false.
        let plain: DetachRequest = serde_json::from_value(json!({"key": "a"})).unwrap();
        assert!(!plain.keep_identity);
        assert_eq!(serde_json::to_value(&plain).unwrap(), json!({"key": "a"}));
        assert!(serde_json::from_value::<DetachRequest>(json!({"key": "a", "keep": 1})).is_err());

        let sandbox: SandboxRequest = serde_json::from_value(json!({
            "key": "docker/3f9a0c1b2d4e", "containerId": "3f9a0c1b2d4e",
            "ifName": "ztd3f9a0c1b2d4e", "sandbox": "/var/run/docker/netns/1a2b"
        }))
        .unwrap();
        assert!(sandbox.validate().is_ok());
        assert_eq!(
            sandbox
                .target()
                .container_id
                .as_ref()
                .map(ContainerId::as_str),
            Some("3f9a0c1b2d4e")
        );
        let back: SandboxRequest = serde_json::from_value(json!({
            "key": "k", "containerId": "c", "ifName": "i", "sandbox": null
        }))
        .unwrap();
        assert_eq!(back.sandbox, None);
        let relative: SandboxRequest = serde_json::from_value(json!({
            "key": "k", "containerId": "c", "ifName": "i", "sandbox": "netns/1"
        }))
        .unwrap();
        assert_eq!(
            relative.validate().unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert!(serde_json::from_value::<SandboxRequest>(json!({"key": "k"})).is_err());
    }

    /// A manager that knows nothing of kept identities or sandboxes.
    struct Plain;

    impl EndpointManager for Plain {
        fn attach(&self, _: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
            Box::pin(async { Err(ApiError::internal("unused")) })
        }
        fn detach(&self, _: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
            Box::pin(async { Ok(DetachResponse { detached: true }) })
        }
        fn check(&self, _: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
            Box::pin(async { Err(ApiError::internal("unused")) })
        }
        fn status(&self) -> ManagerFuture<'_, Status> {
            Box::pin(async { unreachable!() })
        }
        fn gc(&self, _: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
            Box::pin(async { Err(ApiError::internal("unused")) })
        }
        fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[tokio::test]
    async fn managers_without_the_additions_refuse_them_clearly() {
        let key: EndpointKey = "k".parse().unwrap();
        let plain = DetachRequest {
            key: Some(key.clone()),
            ..DetachRequest::default()
        };
        assert!(Plain.detach_with(plain.clone()).await.unwrap().detached);
        let keeping = DetachRequest {
            keep_identity: true,
            ..plain
        };
        let refused = Plain.detach_with(keeping).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::UnsupportedOperation);
        let sandbox = SandboxRequest {
            key,
            container_id: "c".parse().unwrap(),
            if_name: "i".parse().unwrap(),
            sandbox: None,
        };
        let refused = Plain.sandbox(sandbox).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::UnsupportedOperation);
    }
}
