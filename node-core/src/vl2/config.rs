//! Network configurations (zt-vl2.md 3.2, 3.3, 3.6) and the request metadata a node sends
//! with NETWORK_CONFIG_REQUEST (3.4).
//!
//! [`NetworkConfig::from_dictionary`] accepts and rejects what 1.14's `fromDictionary`
//! does; [`NetworkConfig::to_dictionary`] writes the keys in 1.14's order with 1.14's
//! encodings, so a config parsed from a 1.14 controller re-serializes to the same bytes.

use super::credentials::{Capability, CertificateOfMembership, CertificateOfOwnership, Tag};
use super::dictionary::{Dictionary, DictionaryFull, METADATA_CAPACITY, NETWORK_CONFIG_CAPACITY};
use super::network::NetworkId;
use super::rules::{self, Rule};
use super::{DecodeError, Reader};
use crate::wire::InetAddress;
use crate::Address;

/// `ZT_NETWORKCONFIG_VERSION`: the `v` 1.14 writes.
pub const CONFIG_VERSION: u64 = 7;
/// The oldest `v` 1.14 accepts (older formats are compiled out).
pub const CONFIG_VERSION_MIN: u64 = 6;
/// `ZT_DEFAULT_MTU`, `ZT_MIN_MTU`, `ZT_MAX_MTU`.
pub const DEFAULT_MTU: u32 = 2800;
pub const MIN_MTU: u32 = 1280;
pub const MAX_MTU: u32 = 10000;
/// Table limits (`include/ZeroTierOne.h`, `node/Constants.hpp`).
pub const MAX_NETWORK_CAPABILITIES: usize = 128;
pub const MAX_NETWORK_TAGS: usize = 128;
pub const MAX_CERTIFICATES_OF_OWNERSHIP: usize = 4;
pub const MAX_NETWORK_SPECIALISTS: usize = 256;
pub const MAX_NETWORK_ROUTES: usize = 128;
pub const MAX_ZT_ASSIGNED_ADDRESSES: usize = 32;
pub const MAX_DNS_SERVERS: usize = 4;
/// Bytes of the DNS domain field.
pub const DNS_DOMAIN_LEN: usize = 128;
/// `ZT_MAX_NETWORK_SHORT_NAME_LENGTH`.
pub const MAX_NAME_LEN: usize = 127;

/// Config flag bits (`f`).
pub const FLAG_ENABLE_BROADCAST: u64 = 0x02;
pub const FLAG_ENABLE_IPV6_NDP_EMULATION: u64 = 0x04;
pub const FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH: u64 = 0x08;
pub const FLAG_DISABLE_COMPRESSION: u64 = 0x10;

/// Specialist role bits (above the 40-bit address in each `S` word).
pub const SPECIALIST_ACTIVE_BRIDGE: u64 = 0x0000_0200_0000_0000;
pub const SPECIALIST_ANCHOR: u64 = 0x0000_0400_0000_0000;
pub const SPECIALIST_MULTICAST_REPLICATOR: u64 = 0x0000_0800_0000_0000;

/// Why a dictionary is not an acceptable config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("the config has no non-zero network ID (nwid)")]
    MissingNetworkId,
    #[error("the config has no non-zero issued-to address (id)")]
    MissingIssuedTo,
    #[error("config version {0} is older than 6 (legacy formats are not supported)")]
    LegacyVersion(u64),
    #[error("config key {key}: {error}")]
    Blob {
        key: &'static str,
        error: DecodeError,
    },
    #[error("the serialized config does not fit: {0}")]
    TooLarge(#[from] DictionaryFull),
}

/// Network type (`t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkType {
    #[default]
    Private,
    Public,
    /// A value 1.14 does not define; kept as is.
    Other(u64),
}

impl From<u64> for NetworkType {
    fn from(v: u64) -> Self {
        match v {
            0 => Self::Private,
            1 => Self::Public,
            other => Self::Other(other),
        }
    }
}

impl From<NetworkType> for u64 {
    fn from(v: NetworkType) -> Self {
        match v {
            NetworkType::Private => 0,
            NetworkType::Public => 1,
            NetworkType::Other(other) => other,
        }
    }
}

/// A managed route: `target` (netmask bits in the port) via `via` (nil: on-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub target: InetAddress,
    pub via: InetAddress,
    pub flags: u16,
    pub metric: u16,
}

/// The `DNS` blob: a search domain and up to 4 servers (nil when unused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// At most 127 bytes (1.14 NUL-terminates the 128-byte field).
    pub domain: Vec<u8>,
    pub servers: [InetAddress; MAX_DNS_SERVERS],
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            domain: Vec::new(),
            servers: [InetAddress::Nil; MAX_DNS_SERVERS],
        }
    }
}

impl Dns {
    /// Reads the blob. 1.14 copies 128 domain bytes without a bounds check; we require them.
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let field = r.take(DNS_DOMAIN_LEN, "DNS domain")?;
        let domain = c_string(&field[..DNS_DOMAIN_LEN - 1]).to_vec();
        let mut servers = [InetAddress::Nil; MAX_DNS_SERVERS];
        for server in &mut servers {
            let (addr, used) = InetAddress::parse(r.rest())?;
            r.skip(used, "DNS server")?;
            *server = addr;
        }
        Ok(Self { domain, servers })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut field = [0u8; DNS_DOMAIN_LEN];
        let n = self.domain.len().min(DNS_DOMAIN_LEN - 1);
        field[..n].copy_from_slice(&self.domain[..n]);
        out.extend_from_slice(&field);
        for server in &self.servers {
            server.emit(out);
        }
    }
}

/// SSO (OIDC) settings; only a ZeroTier Central backend fills them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SsoConfig {
    /// `ssov`: 0 (implicit flow) or 1 (full flow); 1.14 writes no SSO keys at all for others.
    pub version: u64,
    /// `ssoe`.
    pub enabled: bool,
    /// `aurl` (v0; v1 reads it too but does not write it).
    pub authentication_url: String,
    /// `aexpt` (v0).
    pub authentication_expiry_time: i64,
    /// `iurl` (v1).
    pub issuer_url: String,
    /// `ssoce` (v1).
    pub central_endpoint_url: String,
    /// `sson` (v1).
    pub nonce: String,
    /// `ssos` (v1).
    pub state: String,
    /// `ssocid` (v1).
    pub client_id: String,
    /// `ssop` (v1); 1.14 reads "default" when absent.
    pub provider: String,
}

/// A network configuration as a controller issues it to one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `nwid`, non-zero.
    pub network_id: NetworkId,
    /// `ts`: the controller's clock when issued (ms).
    pub timestamp: i64,
    /// `ctmd`: how far tags/capabilities/COOs may be from `timestamp` (ms).
    pub credential_time_max_delta: i64,
    /// `r`.
    pub revision: u64,
    /// `id`, non-zero.
    pub issued_to: Address,
    /// `tt`.
    pub remote_trace_target: Address,
    /// `tl`.
    pub remote_trace_level: u64,
    /// `f`, see the `FLAG_*` constants.
    pub flags: u64,
    /// `ml`: 0 disables multicast.
    pub multicast_limit: u32,
    /// `t`.
    pub network_type: NetworkType,
    /// `n`, at most 127 bytes.
    pub name: String,
    /// `mtu`, clamped to 1280..=10000 on reading.
    pub mtu: u32,
    /// `C`.
    pub com: Option<CertificateOfMembership>,
    /// `CAP`, sorted by ID.
    pub capabilities: Vec<Capability>,
    /// `TAG`, sorted by ID.
    pub tags: Vec<Tag>,
    /// `COO`, at most 4.
    pub certificates_of_ownership: Vec<CertificateOfOwnership>,
    /// `S`: address in the low 40 bits, `SPECIALIST_*` role bits above.
    pub specialists: Vec<u64>,
    /// `RT`.
    pub routes: Vec<Route>,
    /// `I`: managed addresses, netmask bits in the port.
    pub static_ips: Vec<InetAddress>,
    /// `R`: the base rules.
    pub rules: Vec<Rule>,
    /// `DNS`.
    pub dns: Dns,
    /// `ssov`, `ssoe` and the SSO strings.
    pub sso: SsoConfig,
}

impl NetworkConfig {
    /// The defaults 1.14 starts from (an empty config for `network_id` issued to `issued_to`).
    pub fn new(network_id: NetworkId, issued_to: Address) -> Self {
        Self {
            network_id,
            timestamp: 0,
            credential_time_max_delta: 0,
            revision: 0,
            issued_to,
            remote_trace_target: Address::NIL,
            remote_trace_level: 0,
            flags: 0,
            multicast_limit: 0,
            network_type: NetworkType::Private,
            name: String::new(),
            mtu: DEFAULT_MTU,
            com: None,
            capabilities: Vec::new(),
            tags: Vec::new(),
            certificates_of_ownership: Vec::new(),
            specialists: Vec::new(),
            routes: Vec::new(),
            static_ips: Vec::new(),
            rules: Vec::new(),
            dns: Dns::default(),
            sso: SsoConfig::default(),
        }
    }

    /// Reads a config as 1.14's `fromDictionary`: required keys `nwid`, `id` and `v ≥ 6`;
    /// a malformed `C`, `COO`, `RT`, `I`, `R` or `DNS` rejects the config, a malformed
    /// `CAP`/`TAG` entry ends that list quietly.
    pub fn from_dictionary(d: &Dictionary) -> Result<Self, ConfigError> {
        let network_id = NetworkId(d.u64(b"nwid").unwrap_or(0));
        if network_id.0 == 0 {
            return Err(ConfigError::MissingNetworkId);
        }
        let issued_to = Address::from_u64(d.u64(b"id").unwrap_or(0));
        if issued_to == Address::NIL {
            return Err(ConfigError::MissingIssuedTo);
        }
        let mut c = Self::new(network_id, issued_to);
        c.timestamp = d.u64(b"ts").unwrap_or(0) as i64;
        c.credential_time_max_delta = d.u64(b"ctmd").unwrap_or(0) as i64;
        c.revision = d.u64(b"r").unwrap_or(0);
        c.remote_trace_target = Address::from_u64(d.u64(b"tt").unwrap_or(0));
        c.remote_trace_level = d.u64(b"tl").unwrap_or(0);
        c.multicast_limit = d.u64(b"ml").unwrap_or(0) as u32;
        c.name = d
            .get(b"n")
            .map(|v| text(&v, MAX_NAME_LEN))
            .unwrap_or_default();
        c.mtu = (d.u64(b"mtu").unwrap_or(u64::from(DEFAULT_MTU)) as u32).clamp(MIN_MTU, MAX_MTU);
        let version = d.u64(b"v").unwrap_or(0);
        if version < CONFIG_VERSION_MIN {
            return Err(ConfigError::LegacyVersion(version));
        }
        c.flags = d.u64(b"f").unwrap_or(0);
        c.network_type = NetworkType::from(d.u64(b"t").unwrap_or(0));

        if let Some(blob) = d.get(b"C") {
            let (com, _) = CertificateOfMembership::parse(&blob).map_err(blob_error("C"))?;
            // 1.14 treats a COM without qualifiers as no COM.
            c.com = (!com.qualifiers.is_empty()).then_some(com);
        }
        if let Some(blob) = d.get(b"CAP") {
            c.capabilities = read_tolerant(&blob, MAX_NETWORK_CAPABILITIES, Capability::parse);
            c.capabilities.sort_by_key(|cap| cap.id);
        }
        if let Some(blob) = d.get(b"TAG") {
            c.tags = read_tolerant(&blob, MAX_NETWORK_TAGS, Tag::parse);
            c.tags.sort_by_key(|tag| tag.id);
        }
        if let Some(blob) = d.get(b"COO") {
            let mut pos = 0;
            while pos < blob.len() {
                let (coo, used) =
                    CertificateOfOwnership::parse(&blob[pos..]).map_err(blob_error("COO"))?;
                pos += used;
                if c.certificates_of_ownership.len() < MAX_CERTIFICATES_OF_OWNERSHIP {
                    c.certificates_of_ownership.push(coo);
                }
            }
        }
        if let Some(blob) = d.get(b"S") {
            c.specialists = blob
                .chunks_exact(8)
                .take(MAX_NETWORK_SPECIALISTS)
                .map(|w| w.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
                .collect();
        }
        if let Some(blob) = d.get(b"RT") {
            c.routes = parse_routes(&blob).map_err(blob_error("RT"))?;
        }
        if let Some(blob) = d.get(b"I") {
            c.static_ips = parse_static_ips(&blob).map_err(blob_error("I"))?;
        }
        if let Some(blob) = d.get(b"R") {
            c.rules = rules::parse_rules(&blob).map_err(blob_error("R"))?;
        }
        if let Some(blob) = d.get(b"DNS") {
            c.dns = Dns::parse(&blob).map_err(blob_error("DNS"))?;
        }
        c.sso = read_sso(d);
        Ok(c)
    }

    /// Reads the bytes of an assembled config.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_dictionary(&Dictionary::from_bytes(bytes, NETWORK_CONFIG_CAPACITY))
    }

    /// Writes the config as 1.14's `toDictionary` does (version 7, keys in its order).
    pub fn to_dictionary(&self) -> Result<Dictionary, ConfigError> {
        let mut d = Dictionary::new(NETWORK_CONFIG_CAPACITY);
        d.add_u64(b"v", CONFIG_VERSION)?;
        d.add_u64(b"nwid", self.network_id.0)?;
        d.add_i64(b"ts", self.timestamp)?;
        d.add_i64(b"ctmd", self.credential_time_max_delta)?;
        d.add_u64(b"r", self.revision)?;
        d.add_address(b"id", self.issued_to)?;
        d.add_address(b"tt", self.remote_trace_target)?;
        d.add_u64(b"tl", self.remote_trace_level)?;
        d.add_u64(b"f", self.flags)?;
        d.add_u64(b"ml", u64::from(self.multicast_limit))?;
        d.add_u64(b"t", u64::from(self.network_type))?;
        d.add(b"n", c_string(self.name.as_bytes()))?;
        d.add_u64(b"mtu", u64::from(self.mtu))?;

        let mut blob = Vec::new();
        if let Some(com) = self.com.as_ref().filter(|com| !com.qualifiers.is_empty()) {
            com.emit(&mut blob);
            d.add(b"C", &blob)?;
        }
        blob.clear();
        self.capabilities.iter().for_each(|cap| cap.emit(&mut blob));
        add_if_any(&mut d, b"CAP", &blob)?;
        blob.clear();
        self.tags.iter().for_each(|tag| tag.emit(&mut blob));
        add_if_any(&mut d, b"TAG", &blob)?;
        blob.clear();
        self.certificates_of_ownership
            .iter()
            .for_each(|coo| coo.emit(&mut blob));
        add_if_any(&mut d, b"COO", &blob)?;
        blob.clear();
        self.specialists
            .iter()
            .for_each(|s| blob.extend_from_slice(&s.to_be_bytes()));
        add_if_any(&mut d, b"S", &blob)?;
        blob.clear();
        for route in &self.routes {
            route.target.emit(&mut blob);
            route.via.emit(&mut blob);
            blob.extend_from_slice(&route.flags.to_be_bytes());
            blob.extend_from_slice(&route.metric.to_be_bytes());
        }
        add_if_any(&mut d, b"RT", &blob)?;
        blob.clear();
        self.static_ips.iter().for_each(|ip| ip.emit(&mut blob));
        add_if_any(&mut d, b"I", &blob)?;
        blob.clear();
        rules::emit_rules(&self.rules, &mut blob);
        add_if_any(&mut d, b"R", &blob)?;
        blob.clear();
        self.dns.emit(&mut blob);
        d.add(b"DNS", &blob)?;
        write_sso(&self.sso, &mut d)?;
        Ok(d)
    }

    /// Whether `address` is an active bridge on this network.
    pub fn permits_bridging(&self, address: Address) -> bool {
        self.specialists
            .iter()
            .any(|&s| s & SPECIALIST_ACTIVE_BRIDGE != 0 && Address::from_u64(s) == address)
    }
}

fn blob_error(key: &'static str) -> impl Fn(DecodeError) -> ConfigError {
    move |error| ConfigError::Blob { key, error }
}

fn add_if_any(d: &mut Dictionary, key: &[u8], blob: &[u8]) -> Result<(), DictionaryFull> {
    if blob.is_empty() {
        Ok(())
    } else {
        d.add(key, blob)
    }
}

/// Reads credentials back to back until the blob ends, stopping quietly at the first that
/// does not parse (1.14 catches the error and keeps what it has).
fn read_tolerant<T>(
    blob: &[u8],
    max: usize,
    parse: impl Fn(&[u8]) -> Result<(T, usize), DecodeError>,
) -> Vec<T> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < blob.len() && out.len() < max {
        match parse(&blob[pos..]) {
            Ok((item, used)) => {
                out.push(item);
                pos += used;
            }
            Err(_) => break,
        }
    }
    out
}

fn parse_routes(blob: &[u8]) -> Result<Vec<Route>, DecodeError> {
    let mut r = Reader::new(blob);
    let mut routes = Vec::new();
    while r.remaining() > 0 && routes.len() < MAX_NETWORK_ROUTES {
        let (target, used) = InetAddress::parse(r.rest())?;
        r.skip(used, "route target")?;
        let (via, used) = InetAddress::parse(r.rest())?;
        r.skip(used, "route via")?;
        routes.push(Route {
            target,
            via,
            flags: r.u16("route flags")?,
            metric: r.u16("route metric")?,
        });
    }
    Ok(routes)
}

fn parse_static_ips(blob: &[u8]) -> Result<Vec<InetAddress>, DecodeError> {
    let mut pos = 0;
    let mut ips = Vec::new();
    while pos < blob.len() && ips.len() < MAX_ZT_ASSIGNED_ADDRESSES {
        let (ip, used) = InetAddress::parse(&blob[pos..])?;
        pos += used;
        ips.push(ip);
    }
    Ok(ips)
}

/// The bytes before the first NUL (1.14 keeps text values as C strings).
fn c_string(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// A text value as 1.14 stores it in a `max_len + 1`-byte C string, decoded lossily.
fn text(value: &[u8], max_len: usize) -> String {
    let v = c_string(value);
    String::from_utf8_lossy(&v[..v.len().min(max_len)]).into_owned()
}

/// Sizes of 1.14's SSO buffers (with the NUL).
const URL_BUFFER: usize = 2048;
const NONCE_BUFFER: usize = 128;
const STATE_BUFFER: usize = 256;
const CLIENT_ID_BUFFER: usize = 256;
const PROVIDER_BUFFER: usize = 64;

fn read_sso(d: &Dictionary) -> SsoConfig {
    let string =
        |key: &[u8], buffer: usize| d.get(key).map(|v| text(&v, buffer - 1)).unwrap_or_default();
    let mut sso = SsoConfig {
        version: d.u64(b"ssov").unwrap_or(0),
        enabled: d.bool(b"ssoe").unwrap_or(false),
        ..SsoConfig::default()
    };
    if !sso.enabled {
        return sso;
    }
    match sso.version {
        0 => {
            sso.authentication_url = string(b"aurl", URL_BUFFER);
            sso.authentication_expiry_time = d.i64(b"aexpt").unwrap_or(0);
        }
        1 => {
            sso.authentication_url = string(b"aurl", URL_BUFFER);
            sso.issuer_url = string(b"iurl", URL_BUFFER);
            sso.central_endpoint_url = string(b"ssoce", URL_BUFFER);
            sso.nonce = string(b"sson", NONCE_BUFFER);
            sso.state = string(b"ssos", STATE_BUFFER);
            sso.client_id = string(b"ssocid", CLIENT_ID_BUFFER);
            sso.provider = string(b"ssop", PROVIDER_BUFFER);
            if sso.provider.is_empty() {
                sso.provider = "default".to_owned();
            }
        }
        _ => {}
    }
    sso
}

fn write_sso(sso: &SsoConfig, d: &mut Dictionary) -> Result<(), DictionaryFull> {
    match sso.version {
        0 => {
            d.add_u64(b"ssov", 0)?;
            d.add_bool(b"ssoe", sso.enabled)?;
            if sso.enabled {
                if !sso.authentication_url.is_empty() {
                    d.add(b"aurl", c_string(sso.authentication_url.as_bytes()))?;
                }
                d.add_i64(b"aexpt", sso.authentication_expiry_time)?;
            }
        }
        1 => {
            d.add_u64(b"ssov", 1)?;
            d.add_bool(b"ssoe", sso.enabled)?;
            d.add(b"iurl", c_string(sso.issuer_url.as_bytes()))?;
            d.add(b"ssoce", c_string(sso.central_endpoint_url.as_bytes()))?;
            d.add(b"sson", c_string(sso.nonce.as_bytes()))?;
            d.add(b"ssos", c_string(sso.state.as_bytes()))?;
            d.add(b"ssocid", c_string(sso.client_id.as_bytes()))?;
            d.add(b"ssop", c_string(sso.provider.as_bytes()))?;
        }
        // 1.14 writes no SSO keys for other versions.
        _ => {}
    }
    Ok(())
}

/// The metadata dictionary a node sends with NETWORK_CONFIG_REQUEST (zt-vl2.md 3.4).
/// Missing integers read as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMetadata {
    /// `v`.
    pub config_version: u64,
    /// `vend` (1 = ZeroTier).
    pub vendor: u64,
    /// `pv`.
    pub protocol_version: u64,
    /// `majv`, `minv`, `revv`.
    pub major_version: u64,
    pub minor_version: u64,
    pub revision: u64,
    /// `mr`, `mc`, `mcr`, `mt`.
    pub max_rules: u64,
    pub max_capabilities: u64,
    pub max_capability_rules: u64,
    pub max_tags: u64,
    /// `f`.
    pub flags: u64,
    /// `revr`; 0 makes a 1.14 controller send a single ACCEPT rule and no caps/tags.
    pub rules_engine_revision: u64,
    /// `o`, e.g. `linux/x86_64`.
    pub os_arch: String,
    /// `a`: optional join token text (`token:<tok>`); 1.14 nodes never send it.
    pub auth: Option<String>,
}

impl RequestMetadata {
    /// What a 1.14.1 node on `os_arch` sends.
    pub fn zerotier_1_14(os_arch: &str) -> Self {
        Self {
            config_version: CONFIG_VERSION,
            vendor: 1,
            protocol_version: 0x0c,
            major_version: 1,
            minor_version: 0x0e,
            revision: 1,
            max_rules: rules::MAX_NETWORK_RULES as u64,
            max_capabilities: MAX_NETWORK_CAPABILITIES as u64,
            max_capability_rules: rules::MAX_CAPABILITY_RULES as u64,
            max_tags: MAX_NETWORK_TAGS as u64,
            flags: 0,
            rules_engine_revision: 1,
            os_arch: os_arch.to_owned(),
            auth: None,
        }
    }

    /// Writes the keys in 1.14.1's order.
    pub fn to_dictionary(&self) -> Result<Dictionary, DictionaryFull> {
        let mut d = Dictionary::new(METADATA_CAPACITY);
        d.add_u64(b"v", self.config_version)?;
        d.add_u64(b"vend", self.vendor)?;
        d.add_u64(b"pv", self.protocol_version)?;
        d.add_u64(b"majv", self.major_version)?;
        d.add_u64(b"minv", self.minor_version)?;
        d.add_u64(b"revv", self.revision)?;
        d.add_u64(b"mr", self.max_rules)?;
        d.add_u64(b"mc", self.max_capabilities)?;
        d.add_u64(b"mcr", self.max_capability_rules)?;
        d.add_u64(b"mt", self.max_tags)?;
        d.add_u64(b"f", self.flags)?;
        d.add_u64(b"revr", self.rules_engine_revision)?;
        d.add(b"o", self.os_arch.as_bytes())?;
        if let Some(auth) = &self.auth {
            d.add(b"a", auth.as_bytes())?;
        }
        Ok(d)
    }

    /// Reads the keys; never fails (absent keys read as 0 / empty).
    pub fn from_dictionary(d: &Dictionary) -> Self {
        let n = |key: &[u8]| d.u64(key).unwrap_or(0);
        Self {
            config_version: n(b"v"),
            vendor: n(b"vend"),
            protocol_version: n(b"pv"),
            major_version: n(b"majv"),
            minor_version: n(b"minv"),
            revision: n(b"revv"),
            max_rules: n(b"mr"),
            max_capabilities: n(b"mc"),
            max_capability_rules: n(b"mcr"),
            max_tags: n(b"mt"),
            flags: n(b"f"),
            rules_engine_revision: n(b"revr"),
            os_arch: d.get(b"o").map(|v| text(&v, 1023)).unwrap_or_default(),
            auth: d.get(b"a").map(|v| text(&v, 1023)),
        }
    }
}
