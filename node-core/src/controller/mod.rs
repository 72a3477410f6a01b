//! The network controller (zt-vl2.md 6): what ZeroTier One's embedded controller does with
//! its file database, written fresh and sans-IO.
//!
//! The [`Controller`] keeps every network and member as the JSON object 1.14 keeps, with
//! the same defaults, normalisation and quirks, so that tools written for ZeroTier's
//! controller API work unchanged. It reads no clock, no files and no sockets:
//!
//! - startup: [`Controller::load_network`] and [`Controller::load_member`] with the records
//!   the host read from `controller.d/`;
//! - the HTTP API's semantics: [`Controller::create_network`], [`Controller::post_network`],
//!   [`Controller::post_member`] and the other per-endpoint methods (the host maps paths and
//!   status codes);
//! - config requests: [`Controller::handle_request`], answered at once;
//! - outputs, polled after each input: [`Controller::take_pushes`] (configs and revocations
//!   to send because of an API change; building them may change member records, so poll it
//!   first) then [`Controller::take_changes`] (records to write or delete).
//!
//! Randomness (new network IDs, revocation IDs, random IPv6 candidates) comes from a seeded
//! generator: the same inputs give the same outputs.

mod build;
mod json;
mod records;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value};

use self::build::{build_config, ConfigInputs, Summary};
use self::json::{field, Record};
use self::records::{
    apply_member_post, apply_network_post, clean_member, clean_network, init_member, init_network,
    same_ignoring_revision,
};
use crate::time::Timestamp;
use crate::vl2::credentials::{CredentialType, REVOCATION_FLAG_FAST_PROPAGATE};
use crate::vl2::dictionary::METADATA_CAPACITY;
use crate::vl2::{Dictionary, NetworkConfig, NetworkId, Revocation};
use crate::{Address, Identity};

pub use self::build::{
    CREDENTIAL_TIME_MAX_DELTA_DEFAULT, CREDENTIAL_TIME_MAX_DELTA_MAX, CREDENTIAL_TIME_MAX_DELTA_MIN,
};

/// `ZT_NETCONF_CONTROLLER_API_VERSION`, reported by `GET /controller`.
pub const API_VERSION: u64 = 4;
/// `ZT_NETCONF_MIN_REQUEST_PERIOD`: requests from one member for one network closer
/// together than this are dropped.
pub const MIN_REQUEST_PERIOD_MS: i64 = 1000;
/// A member that asked for its config this recently is online (`2 ×
/// ZT_NETWORK_AUTOCONF_DELAY`): it receives pushed configs and revocations.
pub const ONLINE_WINDOW_MS: i64 = 120_000;
/// Attempts at a free random network ID before giving up.
const NETWORK_ID_TRIALS: u32 = 100_000;
/// The longest join token read from request metadata (1.14's 512-byte buffer, with NUL).
const MAX_AUTH_LEN: usize = 511;
/// The metadata prefix of a join token.
const TOKEN_PREFIX: &[u8] = b"token:";

/// The answer to one NETWORK_CONFIG_REQUEST.
#[derive(Clone, Debug)]
pub enum RequestAnswer {
    /// Send this config, signed by us.
    Config(Box<NetworkConfig>),
    /// ERROR OBJ_NOT_FOUND: no such network.
    NotFound,
    /// ERROR NETWORK_ACCESS_DENIED_: not authorized, or another identity holds the address.
    AccessDenied,
    /// Send nothing: not our network, or a repeat within [`MIN_REQUEST_PERIOD_MS`].
    Ignore,
}

/// A record to persist (`controller.d/network/...`), as compact JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreChange {
    NetworkSaved(NetworkId, Value),
    MemberSaved(NetworkId, Address, Value),
    /// Remove the network's file and its folder of members.
    NetworkDeleted(NetworkId),
    MemberDeleted(NetworkId, Address),
}

/// Something to send because the API changed a network or member.
#[derive(Clone, Debug)]
pub enum Push {
    /// A fresh config for an online member, sent as NETWORK_CONFIG (request packet ID 0).
    Config {
        to: Address,
        network_id: NetworkId,
        config: Box<NetworkConfig>,
    },
    /// A signed revocation of a member's COM (it was deauthorized or deleted), sent in
    /// NETWORK_CREDENTIALS to each online member of the network.
    Revocation {
        network_id: NetworkId,
        revocation: Revocation,
        to: Vec<Address>,
    },
}

/// Why a stored record was not loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("the record is not a JSON object")]
    NotAnObject,
    #[error("the network record has no \"id\" of 16 hex digits")]
    BadNetworkId,
    #[error("the member record has no \"id\" of 10 hex digits")]
    BadMemberAddress,
    #[error("the member record names network {0}, which is not loaded")]
    UnknownNetwork(NetworkId),
}

/// A network and its members.
#[derive(Debug, Default)]
struct NetworkEntry {
    record: Record,
    /// Changed only through [`NetworkEntry::insert_member`] and
    /// [`NetworkEntry::remove_member`], which keep `summary` in step.
    members: BTreeMap<Address, Record>,
    summary: Summary,
}

impl NetworkEntry {
    fn insert_member(&mut self, address: Address, record: Record) {
        self.summary.add(address, &record);
        if let Some(old) = self.members.insert(address, record) {
            self.summary.remove(address, &old);
        }
    }

    fn remove_member(&mut self, address: Address) -> Option<Record> {
        let old = self.members.remove(&address)?;
        self.summary.remove(address, &old);
        Some(old)
    }
}

/// What the controller remembers about a member's requests (never persisted).
#[derive(Debug, Default)]
struct MemberStatus {
    /// The last request let through the rate limit.
    last_request: Option<i64>,
    /// Where it came from, when it came direct.
    physical_address: Option<SocketAddr>,
    /// Identity and metadata of the last authorized request, to build pushed configs.
    identity: Option<Identity>,
    metadata: Vec<u8>,
}

impl MemberStatus {
    fn is_online(&self, now: i64) -> bool {
        self.last_request
            .is_some_and(|last| now.saturating_sub(last) < ONLINE_WINDOW_MS)
    }
}

/// The network controller for the networks `<our address>xxxxxx`.
#[derive(Debug)]
pub struct Controller {
    identity: Identity,
    networks: BTreeMap<NetworkId, NetworkEntry>,
    status: BTreeMap<(NetworkId, Address), MemberStatus>,
    changes: Vec<StoreChange>,
    /// Members owed a pushed config because the API changed something while they were
    /// online.
    pending_configs: BTreeSet<(NetworkId, Address)>,
    revocations: Vec<Push>,
    rng: ChaCha20Rng,
}

impl Controller {
    /// A controller signing with `identity` (which must hold its secret key to answer
    /// requests), drawing its randomness from `rng_seed`.
    pub fn new(identity: Identity, rng_seed: u64) -> Self {
        Self {
            identity,
            networks: BTreeMap::new(),
            status: BTreeMap::new(),
            changes: Vec::new(),
            pending_configs: BTreeSet::new(),
            revocations: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(rng_seed),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn address(&self) -> Address {
        self.identity.address()
    }

    // -------------------------------------------------------------------------------------
    // Startup

    /// Adds a network record read from disk, as is. Its `id` must be 16 hex digits.
    pub fn load_network(&mut self, record: Value) -> Result<NetworkId, LoadError> {
        let Value::Object(record) = record else {
            return Err(LoadError::NotAnObject);
        };
        let network_id = match field(&record, "id") {
            Some(Value::String(id)) => id.parse().map_err(|_| LoadError::BadNetworkId)?,
            _ => return Err(LoadError::BadNetworkId),
        };
        self.networks.entry(network_id).or_default().record = record;
        Ok(network_id)
    }

    /// Adds a member record read from disk, as is, to the network its `nwid` names (which
    /// must be loaded first). Its `id` must be 10 hex digits.
    pub fn load_member(&mut self, record: Value) -> Result<(NetworkId, Address), LoadError> {
        let Value::Object(record) = record else {
            return Err(LoadError::NotAnObject);
        };
        let address = match field(&record, "id") {
            Some(Value::String(id)) if id.len() == 10 => {
                id.parse().map_err(|_| LoadError::BadMemberAddress)?
            }
            _ => return Err(LoadError::BadMemberAddress),
        };
        let network_id = NetworkId(json::int_hex(field(&record, "nwid"), 0));
        let entry = self
            .networks
            .get_mut(&network_id)
            .ok_or(LoadError::UnknownNetwork(network_id))?;
        entry.insert_member(address, record);
        Ok((network_id, address))
    }

    // -------------------------------------------------------------------------------------
    // The HTTP API's semantics (zt-vl2.md 6.4)

    /// `GET /controller`.
    pub fn status(&self, now: Timestamp) -> Value {
        json!({
            "controller": true,
            "apiVersion": API_VERSION,
            "clock": now.as_millis(),
            "databaseReady": true,
        })
    }

    /// The networks, ascending.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        self.networks.keys().copied().collect()
    }

    /// `GET /controller/network`: `["<nwid>", …]`.
    pub fn network_list(&self) -> Value {
        Value::Array(
            self.networks
                .keys()
                .map(|id| json!(id.to_string()))
                .collect(),
        )
    }

    /// `GET /controller/network/<nwid>`.
    pub fn network(&self, network_id: NetworkId) -> Option<Value> {
        self.networks
            .get(&network_id)
            .map(|entry| Value::Object(entry.record.clone()))
    }

    /// `POST /controller/network` (and the legacy `<ctrl>______` form): a network with a
    /// random free ID under our address (the low 24 bits never 0), set up from `body`.
    /// `None` if no free ID was found.
    pub fn create_network(&mut self, now: Timestamp, body: &Value) -> Option<Value> {
        let prefix = self.address().to_u64() << 24;
        for _ in 0..NETWORK_ID_TRIALS {
            let mut number = self.rng.next_u64() & 0xff_ffff;
            if number == 0 {
                number = 1;
            }
            let network_id = NetworkId(prefix | number);
            if !self.networks.contains_key(&network_id) {
                return Some(self.post_network(now, network_id, body));
            }
        }
        None
    }

    /// `POST /controller/network/<nwid>`: creates or updates the network (any ID is
    /// accepted, as 1.14 does) and returns the record. A changed record is saved with its
    /// revision bumped and pushed to the network's online members.
    pub fn post_network(&mut self, now: Timestamp, network_id: NetworkId, body: &Value) -> Value {
        let mut record = self
            .networks
            .get(&network_id)
            .map(|entry| entry.record.clone())
            .unwrap_or_default();
        init_network(&mut record, now.as_millis());
        apply_network_post(&mut record, body);
        record.insert("id".into(), json!(network_id.to_string()));
        record.insert("nwid".into(), json!(network_id.to_string()));
        clean_network(&mut record);
        if self.save_network(network_id, &mut record) {
            self.owe_configs(now, network_id, None);
        }
        Value::Object(record)
    }

    /// `DELETE /controller/network/<nwid>`: returns the deleted record. Every member's COM
    /// is revoked.
    pub fn delete_network(&mut self, now: Timestamp, network_id: NetworkId) -> Option<Value> {
        let entry = self.networks.remove(&network_id)?;
        self.changes.push(StoreChange::NetworkDeleted(network_id));
        for &member in entry.members.keys() {
            self.revoke(now, network_id, member);
        }
        Some(Value::Object(entry.record))
    }

    /// `GET /controller/network/<nwid>/member`: `{"<address>": revision, …}`.
    pub fn member_revisions(&self, network_id: NetworkId) -> Option<Value> {
        let entry = self.networks.get(&network_id)?;
        let revisions = entry
            .members
            .values()
            .filter_map(|member| {
                let id = json::string(field(member, "id"), "");
                (id.len() == 10).then(|| (id, json!(json::int(field(member, "revision"), 0))))
            })
            .collect();
        Some(Value::Object(revisions))
    }

    /// `GET /controller/network/<nwid>/member/<address>`.
    pub fn member(&self, network_id: NetworkId, address: Address) -> Option<Value> {
        self.networks
            .get(&network_id)?
            .members
            .get(&address)
            .map(|member| Value::Object(member.clone()))
    }

    /// `POST /controller/network/<nwid>/member/<address>`: creates or updates the member
    /// and returns the record; `None` if the network does not exist. A changed record is
    /// saved and pushed to the member if it is online; a deauthorization revokes its COM.
    pub fn post_member(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        address: Address,
        body: &Value,
    ) -> Option<Value> {
        let entry = self.networks.get(&network_id)?;
        let mut record = entry.members.get(&address).cloned().unwrap_or_default();
        let was_authorized = json::boolean(field(&record, "authorized"), false);
        init_member(&mut record, now.as_millis());
        apply_member_post(&mut record, body, now.as_millis());
        record.insert("id".into(), json!(address.to_string()));
        record.insert("address".into(), json!(address.to_string()));
        record.insert("nwid".into(), json!(network_id.to_string()));
        clean_member(&mut record);
        if self.save_member(network_id, address, &mut record) {
            self.owe_configs(now, network_id, Some(address));
            if was_authorized && !json::boolean(field(&record, "authorized"), false) {
                self.revoke(now, network_id, address);
            }
        }
        Some(Value::Object(record))
    }

    /// `DELETE /controller/network/<nwid>/member/<address>`: returns the deleted record;
    /// an authorized member's COM is revoked.
    pub fn delete_member(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        address: Address,
    ) -> Option<Value> {
        let member = self.networks.get_mut(&network_id)?.remove_member(address)?;
        self.changes
            .push(StoreChange::MemberDeleted(network_id, address));
        if json::boolean(field(&member, "authorized"), false) {
            self.revoke(now, network_id, address);
        }
        Some(Value::Object(member))
    }

    /// `GET /unstable/controller/network`: every network with member counts.
    pub fn unstable_network_list(&self) -> Value {
        let data: Vec<Value> = self
            .networks
            .values()
            .map(|entry| {
                let mut record = entry.record.clone();
                record.insert(
                    "meta".into(),
                    json!({
                        "totalMemberCount": entry.members.len(),
                        "authorizedMemberCount": authorized_count(entry),
                    }),
                );
                Value::Object(record)
            })
            .collect();
        json!({"data": data, "meta": {"networkCount": self.networks.len()}})
    }

    /// `GET /unstable/controller/network/<nwid>/member`: the member records with counts.
    pub fn unstable_member_list(&self, network_id: NetworkId) -> Option<Value> {
        let entry = self.networks.get(&network_id)?;
        let data: Vec<Value> = entry
            .members
            .values()
            .map(|member| Value::Object(member.clone()))
            .collect();
        Some(json!({
            "data": data,
            "meta": {
                "totalCount": entry.members.len(),
                "authorizedCount": authorized_count(entry),
            },
        }))
    }

    // -------------------------------------------------------------------------------------
    // Config requests (zt-vl2.md 6.1)

    /// Answers a NETWORK_CONFIG_REQUEST from `requester` (for our own node too).
    ///
    /// A first request creates the member record (saved, so it shows in the member list
    /// even when refused); the identity first seen for an address is pinned; public
    /// networks and valid join tokens authorize automatically. An authorized member gets a
    /// config signed by us, and its metadata is remembered for later pushes.
    pub fn handle_request(
        &mut self,
        now: Timestamp,
        network_id: NetworkId,
        requester: &Identity,
        metadata: &[u8],
        from: Option<SocketAddr>,
    ) -> RequestAnswer {
        let now = now.as_millis();
        if network_id.controller() != self.address() || !self.identity.has_secret() {
            return RequestAnswer::Ignore;
        }
        let status = self
            .status
            .entry((network_id, requester.address()))
            .or_default();
        if status
            .last_request
            .is_some_and(|last| now.saturating_sub(last) <= MIN_REQUEST_PERIOD_MS)
        {
            return RequestAnswer::Ignore;
        }
        status.last_request = Some(now);
        status.physical_address = from;
        let metadata = Dictionary::from_bytes(metadata, METADATA_CAPACITY);
        self.answer(now, network_id, requester, &metadata, true)
    }

    /// Where `address` last asked for a config of `network_id` from, if it came direct.
    pub fn physical_address(&self, network_id: NetworkId, address: Address) -> Option<SocketAddr> {
        self.status.get(&(network_id, address))?.physical_address
    }

    /// Whether `address` asked for a config of `network_id` within [`ONLINE_WINDOW_MS`].
    pub fn is_online(&self, now: Timestamp, network_id: NetworkId, address: Address) -> bool {
        self.status
            .get(&(network_id, address))
            .is_some_and(|s| s.is_online(now.as_millis()))
    }

    // -------------------------------------------------------------------------------------
    // Outputs

    /// Records to write or delete since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<StoreChange> {
        std::mem::take(&mut self.changes)
    }

    /// What to send because of API changes since the last call: revocations first, then
    /// fresh configs for the members that were online at the change (built at `now`). Building a config may
    /// change member records (default tags, addresses): take the changes afterwards.
    pub fn take_pushes(&mut self, now: Timestamp) -> Vec<Push> {
        let now = now.as_millis();
        let mut pushes = std::mem::take(&mut self.revocations);
        let targets = std::mem::take(&mut self.pending_configs);
        for (network_id, address) in targets {
            let Some(status) = self.status.get(&(network_id, address)) else {
                continue;
            };
            let Some(identity) = status.identity.clone() else {
                continue;
            };
            let metadata = Dictionary::from_bytes(&status.metadata, METADATA_CAPACITY);
            if let RequestAnswer::Config(config) =
                self.answer(now, network_id, &identity, &metadata, false)
            {
                pushes.push(Push::Config {
                    to: address,
                    network_id,
                    config,
                });
            }
        }
        pushes
    }

    // -------------------------------------------------------------------------------------
    // Internals

    /// 1.14's `_request`: `real` is false for pushes (no version or metadata update).
    fn answer(
        &mut self,
        now: i64,
        network_id: NetworkId,
        requester: &Identity,
        metadata: &Dictionary,
        real: bool,
    ) -> RequestAnswer {
        let address = requester.address();
        let Some(entry) = self.networks.get(&network_id) else {
            return RequestAnswer::NotFound;
        };
        if entry.record.is_empty() {
            return RequestAnswer::NotFound;
        }
        let network = &entry.record;
        let existing = entry.members.get(&address);
        let new_member = existing.is_none_or(|m| m.is_empty());
        let mut member = existing.cloned().unwrap_or_default();
        init_member(&mut member, now);

        // The first identity seen for an address is kept; another key claiming the same
        // address is refused.
        let pinned = json::string(field(&member, "identity"), "");
        if pinned.is_empty() {
            member.insert(
                "identity".into(),
                json!(requester.public_only().to_string()),
            );
        } else if pinned.parse::<Identity>().ok().as_ref() != Some(requester) {
            return RequestAnswer::AccessDenied;
        }
        member.insert("id".into(), json!(address.to_string()));
        member.insert("address".into(), json!(address.to_string()));
        member.insert("nwid".into(), json!(network_id.to_string()));

        let mut authorized = json::boolean(field(&member, "authorized"), false);
        if !authorized {
            let automatic = if !json::boolean(field(network, "private"), true) {
                Some(("public", Value::Null))
            } else {
                presented_token(metadata)
                    .filter(|token| token_valid(network, token, now))
                    .map(|token| ("token", json!(token)))
            };
            if let Some((kind, credential)) = automatic {
                authorized = true;
                member.insert("authorized".into(), json!(true));
                member.insert("lastAuthorizedTime".into(), json!(now));
                member.insert("lastAuthorizedCredentialType".into(), json!(kind));
                member.insert("lastAuthorizedCredential".into(), credential);
            }
        }

        // SSO needs ZeroTier Central; with files only, an SSO network refuses every member
        // that is not exempt once its authentication expired (1.14 sends
        // AUTHENTICATION_REQUIRED with an empty URL here; we deny).
        let sso_expired = json::boolean(field(network, "ssoEnabled"), false)
            && !json::boolean(field(&member, "ssoExempt"), false)
            && (json::int(field(&member, "authenticationExpiryTime"), 0) as i64) <= now;
        if real {
            // Kept for refused members too (1.14 keeps it only for authorized ones): when an
            // administrator authorizes one, its config is pushed at once instead of waiting
            // for its next request.
            let status = self.status.entry((network_id, address)).or_default();
            status.identity = Some(requester.public_only());
            status.metadata = metadata.as_bytes().to_vec();
        }
        if sso_expired || !authorized {
            clean_member(&mut member);
            self.save_member(network_id, address, &mut member);
            return RequestAnswer::AccessDenied;
        }

        if real {
            let version = |key: &[u8]| json!(metadata.u64(key).unwrap_or(0));
            member.insert("vMajor".into(), version(b"majv"));
            member.insert("vMinor".into(), version(b"minv"));
            member.insert("vRev".into(), version(b"revv"));
            member.insert("vProto".into(), version(b"pv"));
        }

        let Some(entry) = self.networks.get(&network_id) else {
            return RequestAnswer::NotFound;
        };
        let config = build_config(
            ConfigInputs {
                controller: &self.identity,
                now,
                network_id,
                network: &entry.record,
                member: &mut member,
                new_member,
                requester,
                metadata,
                summary: &entry.summary,
            },
            &mut self.rng,
        );
        let Some(config) = config else {
            return RequestAnswer::NotFound;
        };
        clean_member(&mut member);
        self.save_member(network_id, address, &mut member);
        RequestAnswer::Config(Box::new(config))
    }

    /// FileDB's save: a new or changed record (ignoring `revision`) gets `revision + 1`
    /// and is stored; returns whether it was. Network 0 is never stored.
    fn save_network(&mut self, network_id: NetworkId, record: &mut Record) -> bool {
        if network_id.0 == 0 {
            return false;
        }
        let entry = self.networks.entry(network_id).or_default();
        if !entry.record.is_empty() && same_ignoring_revision(&entry.record, record) {
            return false;
        }
        bump_revision(record);
        entry.record = record.clone();
        self.changes.push(StoreChange::NetworkSaved(
            network_id,
            Value::Object(record.clone()),
        ));
        true
    }

    /// As [`Self::save_network`], for a member of an existing network (address 0 is never
    /// stored).
    fn save_member(
        &mut self,
        network_id: NetworkId,
        address: Address,
        record: &mut Record,
    ) -> bool {
        if address == Address::NIL {
            return false;
        }
        let Some(entry) = self.networks.get_mut(&network_id) else {
            return false;
        };
        if entry
            .members
            .get(&address)
            .is_some_and(|old| same_ignoring_revision(old, record))
        {
            return false;
        }
        bump_revision(record);
        entry.insert_member(address, record.clone());
        self.changes.push(StoreChange::MemberSaved(
            network_id,
            address,
            Value::Object(record.clone()),
        ));
        true
    }

    /// Notes that the network's online members (or only `member`) are owed a fresh config:
    /// those whose last authorized request left metadata to build it from.
    fn owe_configs(&mut self, now: Timestamp, network_id: NetworkId, member: Option<Address>) {
        let now = now.as_millis();
        let owed: Vec<Address> = statuses_of(&self.status, network_id)
            .filter(|&(address, status)| {
                member.is_none_or(|m| m == address)
                    && status.is_online(now)
                    && status.identity.is_some()
                    && !status.metadata.is_empty()
            })
            .map(|(address, _)| address)
            .collect();
        self.pending_configs
            .extend(owed.into_iter().map(|address| (network_id, address)));
    }

    /// Revokes `target`'s COM as of `now`, to every online member of the network.
    fn revoke(&mut self, now: Timestamp, network_id: NetworkId, target: Address) {
        let now = now.as_millis();
        let to: Vec<Address> = statuses_of(&self.status, network_id)
            .filter(|(_, status)| status.is_online(now))
            .map(|(address, _)| address)
            .collect();
        if to.is_empty() {
            return;
        }
        let mut revocation = Revocation::new(
            self.rng.next_u32(),
            network_id,
            0,
            now,
            REVOCATION_FLAG_FAST_PROPAGATE,
            target,
            CredentialType::CertificateOfMembership,
        );
        if revocation.sign(&self.identity).is_ok() {
            self.revocations.push(Push::Revocation {
                network_id,
                revocation,
                to,
            });
        }
    }
}

/// The request statuses of one network's members, without visiting other networks'.
fn statuses_of(
    status: &BTreeMap<(NetworkId, Address), MemberStatus>,
    network_id: NetworkId,
) -> impl Iterator<Item = (Address, &MemberStatus)> {
    status
        .range((network_id, Address::NIL)..=(network_id, Address::from_u64(ADDRESS_MAX)))
        .map(|(&(_, address), status)| (address, status))
}

/// The largest 40-bit address.
const ADDRESS_MAX: u64 = 0xff_ffff_ffff;

fn bump_revision(record: &mut Record) {
    let revision = json::int(field(record, "revision"), 0).wrapping_add(1);
    record.insert("revision".into(), json!(revision));
}

fn authorized_count(entry: &NetworkEntry) -> usize {
    entry
        .members
        .values()
        .filter(|m| json::boolean(field(m, "authorized"), false))
        .count()
}

/// The join token in the metadata's `a` entry (`token:<token>`, at most 511 bytes).
fn presented_token(metadata: &Dictionary) -> Option<String> {
    let value = metadata.get(b"a")?;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    let value = &value[..end.min(MAX_AUTH_LEN)];
    let token = value.strip_prefix(TOKEN_PREFIX)?;
    (!token.is_empty()).then(|| String::from_utf8_lossy(token).into_owned())
}

/// Whether the network's `authTokens` lists `token` with an expiry of 0 (never) or later
/// than `now`.
fn token_valid(network: &Record, token: &str, now: i64) -> bool {
    let Some(Value::Object(tokens)) = field(network, "authTokens") else {
        return false;
    };
    match tokens.get(token) {
        Some(Value::Number(expiry)) => expiry.as_f64().is_some_and(|e| e == 0.0 || e > now as f64),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
