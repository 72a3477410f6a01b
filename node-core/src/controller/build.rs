//! Building the network config an authorized member receives (zt-vl2.md 6.1 step 8) and
//! the IP auto-assignment (6.2).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand_core::RngCore;
use serde_json::{json, Value};

use super::json::{self, field, ip_text, parse_inet, route_contains, Record};
use super::records::DEFAULT_MULTICAST_LIMIT;
use crate::vl2::config::{
    Dns, NetworkConfig, NetworkType, Route, DEFAULT_MTU, DNS_DOMAIN_LEN, FLAG_ENABLE_BROADCAST,
    FLAG_ENABLE_IPV6_NDP_EMULATION, MAX_DNS_SERVERS, MAX_MTU, MAX_NAME_LEN,
    MAX_NETWORK_CAPABILITIES, MAX_NETWORK_ROUTES, MAX_NETWORK_SPECIALISTS, MAX_NETWORK_TAGS,
    MAX_ZT_ASSIGNED_ADDRESSES, MIN_MTU, SPECIALIST_ACTIVE_BRIDGE,
};
use crate::vl2::credentials::{
    Capability, CertificateOfMembership, CertificateOfOwnership, Thing, COO_MAX_THINGS,
};
use crate::vl2::network::{
    rfc4193_address, sixplane_address, RFC4193_PREFIX_BITS, SIXPLANE_PREFIX_BITS,
};
use crate::vl2::rules::{Rule, RuleKind, MAX_CAPABILITY_RULES, MAX_NETWORK_RULES};
use crate::vl2::rules_json::rule_from_json;
use crate::vl2::{Dictionary, NetworkId, Tag};
use crate::wire::InetAddress;
use crate::{Address, Identity};

/// `ZT_NETWORKCONFIG_DEFAULT_CREDENTIAL_TIME_DFL_MAX_DELTA` and its clamp.
pub const CREDENTIAL_TIME_MAX_DELTA_DEFAULT: i64 = 1_800_000;
pub const CREDENTIAL_TIME_MAX_DELTA_MIN: i64 = 300_000;
pub const CREDENTIAL_TIME_MAX_DELTA_MAX: i64 = 7_200_000;

/// Trials per pool when auto-assigning an address.
const ASSIGNMENT_TRIALS: u32 = 1000;
/// The COO a 1.14 controller issues carries this ID.
const COO_ID: u32 = 1;

/// What the whole network's members say that one member's config depends on. The
/// controller keeps it up to date as members are stored and removed ([`Summary::add`],
/// [`Summary::remove`]), so a config request costs no scan of the member list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Members with `activeBridge`, ascending.
    pub(crate) active_bridges: BTreeSet<Address>,
    /// Every IP in any member's `ipAssignments`, with how many times it is listed.
    pub(crate) allocated_ips: HashMap<IpAddr, u32>,
}

impl Summary {
    #[cfg(test)]
    pub(crate) fn of<'a>(members: impl Iterator<Item = (&'a Address, &'a Record)>) -> Self {
        let mut summary = Self::default();
        for (&address, member) in members {
            summary.add(address, member);
        }
        summary
    }

    /// Counts a member record that was stored.
    pub(crate) fn add(&mut self, address: Address, member: &Record) {
        if json::boolean(field(member, "activeBridge"), false) {
            self.active_bridges.insert(address);
        }
        for ip in assigned_ips(member) {
            *self.allocated_ips.entry(ip).or_default() += 1;
        }
    }

    /// Forgets a member record that was replaced or removed (as it was counted).
    pub(crate) fn remove(&mut self, address: Address, member: &Record) {
        if json::boolean(field(member, "activeBridge"), false) {
            self.active_bridges.remove(&address);
        }
        for ip in assigned_ips(member) {
            if let Some(count) = self.allocated_ips.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.allocated_ips.remove(&ip);
                }
            }
        }
    }

    fn is_allocated(&self, ip: &IpAddr) -> bool {
        self.allocated_ips.contains_key(ip)
    }
}

/// The IPs in a member record's `ipAssignments`.
fn assigned_ips(member: &Record) -> impl Iterator<Item = IpAddr> + '_ {
    let ips = match field(member, "ipAssignments") {
        Some(Value::Array(ips)) => ips.as_slice(),
        _ => &[],
    };
    ips.iter()
        .filter_map(Value::as_str)
        .filter_map(parse_inet)
        .map(|ip| ip.ip())
}

/// Everything one config is built from.
pub(crate) struct ConfigInputs<'a> {
    pub(crate) controller: &'a Identity,
    pub(crate) now: i64,
    pub(crate) network_id: NetworkId,
    pub(crate) network: &'a Record,
    /// The member's record; capabilities, tags and addresses the controller hands out are
    /// written into it.
    pub(crate) member: &'a mut Record,
    /// The member had no record before this request.
    pub(crate) new_member: bool,
    pub(crate) requester: &'a Identity,
    pub(crate) metadata: &'a Dictionary,
    pub(crate) summary: &'a Summary,
}

/// Builds and signs the config, or `None` if signing the COM fails (1.14 answers that with
/// an internal error, which reaches the member as OBJ_NOT_FOUND).
pub(crate) fn build_config(
    inputs: ConfigInputs<'_>,
    rng: &mut impl RngCore,
) -> Option<NetworkConfig> {
    let ConfigInputs {
        controller,
        now,
        network_id,
        network,
        member,
        new_member,
        requester,
        metadata,
        summary,
    } = inputs;
    let address = requester.address();
    let net = |key: &str| field(network, key);

    let credential_time_max_delta = credential_time_max_delta(network);
    let mut config = NetworkConfig::new(network_id, address);
    config.network_type = if json::boolean(net("private"), true) {
        NetworkType::Private
    } else {
        NetworkType::Public
    };
    config.timestamp = now;
    config.credential_time_max_delta = credential_time_max_delta;
    config.revision = json::int(net("revision"), 0);
    if json::boolean(net("enableBroadcast"), true) {
        config.flags |= FLAG_ENABLE_BROADCAST;
    }
    config.name = truncated(json::string(net("name"), ""), MAX_NAME_LEN);
    config.mtu = (json::int(net("mtu"), u64::from(DEFAULT_MTU)) as u32).clamp(MIN_MTU, MAX_MTU);
    config.multicast_limit = json::int(net("multicastLimit"), DEFAULT_MULTICAST_LIMIT) as u32;
    config.sso.enabled = json::boolean(net("ssoEnabled"), false);
    config.sso.authentication_expiry_time =
        json::int(field(member, "authenticationExpiryTime"), 0) as i64;

    // The member's trace settings win when it names a target.
    let member_target = json::string(field(member, "remoteTraceTarget"), "");
    if member_target.len() == 10 {
        config.remote_trace_target = Address::from_u64(json::str_to_u64(&member_target, 16));
        config.remote_trace_level = json::int(field(member, "remoteTraceLevel"), 0);
    } else {
        let target = json::string(net("remoteTraceTarget"), "");
        if target.len() == 10 {
            config.remote_trace_target = Address::from_u64(json::str_to_u64(&target, 16));
        }
        config.remote_trace_level = json::int(net("remoteTraceLevel"), 0);
    }

    for &bridge in summary.active_bridges.iter().take(MAX_NETWORK_SPECIALISTS) {
        config
            .specialists
            .push(bridge.to_u64() | SPECIALIST_ACTIVE_BRIDGE);
    }

    if metadata.u64(b"revr").unwrap_or(0) == 0 {
        // A node without a rules engine gets "accept everything" and no capabilities or tags
        // (newer nodes still enforce the real rules on their side).
        config.rules = vec![Rule::new(RuleKind::Accept)];
    } else {
        if let Some(Value::Array(rules)) = net("rules") {
            config.rules = rules
                .iter()
                .filter_map(rule_from_json)
                .take(MAX_NETWORK_RULES)
                .collect();
        }
        config.capabilities = capabilities(
            controller, now, network_id, network, member, new_member, address,
        );
        config.tags = tags(controller, now, network_id, network, member, address);
    }

    config.routes = routes(network);

    let no_auto_assign = json::boolean(field(member, "noAutoAssignIps"), false);
    if let (Some(Value::Object(v6_mode)), false) = (net("v6AssignMode"), no_auto_assign) {
        if json::boolean(v6_mode.get("rfc4193"), false) {
            let ip = rfc4193_address(network_id, address);
            push_static(&mut config, IpAddr::V6(ip), u16::from(RFC4193_PREFIX_BITS));
            config.flags |= FLAG_ENABLE_IPV6_NDP_EMULATION;
        }
        if json::boolean(v6_mode.get("6plane"), false) {
            let ip = sixplane_address(network_id, address);
            push_static(&mut config, IpAddr::V6(ip), u16::from(SIXPLANE_PREFIX_BITS));
            config.flags |= FLAG_ENABLE_IPV6_NDP_EMULATION;
        }
    }

    // Addresses assigned by hand (or earlier automatically) count only inside a route; their
    // prefix is that of the most specific route containing them.
    let mut assignments = match field(member, "ipAssignments") {
        Some(Value::Array(ips)) => ips.clone(),
        _ => Vec::new(),
    };
    let mut have_v4 = false;
    let mut have_v6 = false;
    for ip in assignments
        .iter()
        .filter_map(Value::as_str)
        .filter_map(parse_inet)
    {
        let ip = ip.ip();
        let bits = config
            .routes
            .iter()
            .filter_map(|route| route.target.socket_addr())
            .filter(|target| route_contains(*target, ip))
            .map(|target| target.port())
            .max();
        if let Some(bits) = bits {
            push_static(&mut config, ip, bits);
            match ip {
                IpAddr::V4(_) => have_v4 = true,
                IpAddr::V6(_) => have_v6 = true,
            }
        }
    }

    let pools = match net("ipAssignmentPools") {
        Some(Value::Array(pools)) => pools.as_slice(),
        _ => &[],
    };
    let assign_mode = |key: &str, mode: &str| match net(key) {
        Some(Value::Object(modes)) => json::boolean(modes.get(mode), false),
        _ => false,
    };
    let mut assigned = Vec::new();
    if assign_mode("v6AssignMode", "zt") && !have_v6 && !no_auto_assign {
        if let Some((ip, bits)) =
            assign_ipv6(pools, &config.routes, address, summary, &assignments, rng)
        {
            assigned.push((IpAddr::V6(ip), bits));
        }
    }
    for &(ip, _) in &assigned {
        assignments.push(json!(ip_text(ip)));
    }
    if assign_mode("v4AssignMode", "zt") && !have_v4 && !no_auto_assign {
        if let Some((ip, bits)) = assign_ipv4(pools, &config.routes, address, summary, &assignments)
        {
            assignments.push(json!(ip_text(IpAddr::V4(ip))));
            assigned.push((IpAddr::V4(ip), bits));
        }
    }
    if !assigned.is_empty() {
        member.insert("ipAssignments".into(), Value::Array(assignments));
        for (ip, bits) in assigned {
            push_static(&mut config, ip, bits);
        }
    }

    if let Some(Value::Object(dns)) = net("dns") {
        let mut domain = json::string(dns.get("domain"), "").into_bytes();
        domain.truncate(DNS_DOMAIN_LEN - 1);
        let mut servers = [InetAddress::Nil; MAX_DNS_SERVERS];
        if let Some(Value::Array(list)) = dns.get("servers") {
            for (slot, server) in servers.iter_mut().zip(list) {
                *slot = InetAddress::from(parse_inet(&json::string(Some(server), "")));
            }
        }
        config.dns = Dns { domain, servers };
    }

    if !config.static_ips.is_empty() {
        let mut coo = CertificateOfOwnership::new(network_id, now, address, COO_ID);
        for ip in config
            .static_ips
            .iter()
            .filter_map(InetAddress::socket_addr)
        {
            if coo.things.len() >= COO_MAX_THINGS {
                break;
            }
            coo.things.push(match ip.ip() {
                IpAddr::V4(v4) => Thing::ipv4(v4),
                IpAddr::V6(v6) => Thing::ipv6(v6),
            });
        }
        if coo.sign(controller).is_ok() {
            config.certificates_of_ownership.push(coo);
        }
    }

    let mut com = CertificateOfMembership::new(
        now as u64,
        credential_time_max_delta as u64,
        network_id,
        requester,
    );
    com.sign(controller).ok()?;
    config.com = Some(com);
    Some(config)
}

/// `certificateTimeoutWindowSize` (settable only by editing the file) or 1800000 ms, clamped.
fn credential_time_max_delta(network: &Record) -> i64 {
    let window = match field(network, "certificateTimeoutWindowSize") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|v| v as i64))
            .or_else(|| n.as_f64().map(|v| v as i64)),
        _ => None,
    };
    window
        .unwrap_or(CREDENTIAL_TIME_MAX_DELTA_DEFAULT)
        .clamp(CREDENTIAL_TIME_MAX_DELTA_MIN, CREDENTIAL_TIME_MAX_DELTA_MAX)
}

/// At most `max` bytes, cut at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn push_static(config: &mut NetworkConfig, ip: IpAddr, bits: u16) {
    if config.static_ips.len() < MAX_ZT_ASSIGNED_ADDRESSES {
        config
            .static_ips
            .push(InetAddress::Ip(SocketAddr::new(ip, bits)));
    }
}

/// The member's capabilities that the network defines, signed controller → member. A new
/// member first receives every capability marked `default`.
fn capabilities(
    controller: &Identity,
    now: i64,
    network_id: NetworkId,
    network: &Record,
    member: &mut Record,
    new_member: bool,
    address: Address,
) -> Vec<Capability> {
    if !matches!(field(member, "capabilities"), Some(Value::Array(_))) {
        member.insert("capabilities".into(), json!([]));
    }
    let mut by_id: BTreeMap<u32, &Record> = BTreeMap::new();
    if let Some(Value::Array(defined)) = field(network, "capabilities") {
        for capability in defined.iter().filter_map(Value::as_object) {
            let id = json::int(capability.get("id"), 0) as u32;
            by_id.insert(id, capability);
            if new_member && json::boolean(capability.get("default"), false) {
                if let Some(Value::Array(held)) = member.get_mut("capabilities") {
                    if !held.iter().any(|h| json::int(Some(h), 0) as u32 == id) {
                        held.push(json!(id));
                    }
                }
            }
        }
    }
    let held: Vec<u32> = match field(member, "capabilities") {
        Some(Value::Array(held)) => held.iter().map(|h| json::int(Some(h), 0) as u32).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for id in held {
        let Some(capability) = by_id.get(&id).filter(|c| !c.is_empty()) else {
            continue;
        };
        let rules: Vec<Rule> = match capability.get("rules") {
            Some(Value::Array(rules)) => rules
                .iter()
                .filter_map(rule_from_json)
                .take(MAX_CAPABILITY_RULES)
                .collect(),
            _ => Vec::new(),
        };
        let mut capability = Capability::new(network_id, now, id, rules);
        if capability.sign(controller, address).is_ok() {
            out.push(capability);
        }
        if out.len() >= MAX_NETWORK_CAPABILITIES {
            break;
        }
    }
    out
}

/// The member's tags plus the network's defaults for tags it lacks (which are written into
/// its record), signed, ascending by ID.
fn tags(
    controller: &Identity,
    now: i64,
    network_id: NetworkId,
    network: &Record,
    member: &mut Record,
    address: Address,
) -> Vec<Tag> {
    let mut values: BTreeMap<u32, u32> = BTreeMap::new();
    if let Some(Value::Array(held)) = field(member, "tags") {
        for tag in held.iter().filter_map(Value::as_array) {
            if let [id, value] = tag.as_slice() {
                values.insert(
                    json::int(Some(id), 0) as u32,
                    json::int(Some(value), 0) as u32,
                );
            }
        }
    }
    if let Some(Value::Array(defined)) = field(network, "tags") {
        for tag in defined.iter().filter_map(Value::as_object) {
            let id = json::int(tag.get("id"), 0) as u32;
            let Some(default @ Value::Number(_)) = tag.get("default") else {
                continue;
            };
            if values.contains_key(&id) {
                continue;
            }
            values.insert(id, json::int(Some(default), 0) as u32);
            if !matches!(field(member, "tags"), Some(Value::Array(_))) {
                member.insert("tags".into(), json!([]));
            }
            if let Some(Value::Array(held)) = member.get_mut("tags") {
                held.push(json!([id, default]));
            }
        }
    }
    values
        .into_iter()
        .take(MAX_NETWORK_TAGS)
        .filter_map(|(id, value)| {
            let mut tag = Tag::new(network_id, now, address, id, value);
            tag.sign(controller).ok().map(|()| tag)
        })
        .collect()
}

/// The network's routes with an IP target; `via` only when of the target's family.
fn routes(network: &Record) -> Vec<Route> {
    let Some(Value::Array(routes)) = field(network, "routes") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for route in routes.iter().filter_map(Value::as_object) {
        let Some(Value::String(target)) = route.get("target") else {
            continue;
        };
        let Some(target) = parse_inet(target) else {
            continue;
        };
        let via = match route.get("via") {
            Some(Value::String(via)) => parse_inet(via),
            _ => None,
        }
        .filter(|via| via.is_ipv4() == target.is_ipv4());
        out.push(Route {
            target: InetAddress::Ip(target),
            via: InetAddress::from(via),
            flags: 0,
            metric: 0,
        });
        if out.len() >= MAX_NETWORK_ROUTES {
            break;
        }
    }
    out
}

/// Whether `ip` (as its text) is already in the member's list.
fn listed(assignments: &[Value], ip: IpAddr) -> bool {
    let text = ip_text(ip);
    assignments
        .iter()
        .any(|a| a.as_str() == Some(text.as_str()))
}

/// The first IPv4 pool address for the member (zt-vl2.md 6.2): candidates start at the
/// member address's low 32 bits modulo the pool length, skip `.255`, must lie in an IPv4
/// route (the first whose target matches under its mask gives the prefix) and be free.
fn assign_ipv4(
    pools: &[Value],
    routes: &[Route],
    address: Address,
    summary: &Summary,
    assignments: &[Value],
) -> Option<(Ipv4Addr, u16)> {
    let ipv4_targets: Vec<(u32, u32)> = routes
        .iter()
        .filter_map(|r| r.target.socket_addr())
        .filter_map(|t| match t.ip() {
            IpAddr::V4(ip) => Some((u32::from(ip), u32::from(t.port()))),
            IpAddr::V6(_) => None,
        })
        .collect();
    for pool in pools.iter().filter_map(Value::as_object) {
        let (Some(start), Some(end)) = pool_bounds(pool) else {
            continue;
        };
        let (IpAddr::V4(start), IpAddr::V4(end)) = (start, end) else {
            continue;
        };
        let (start, end) = (u32::from(start), u32::from(end));
        if end < start || start == 0 {
            continue;
        }
        let len = end - start;
        let mut counter = (address.to_u64() & 0xffff_ffff) as u32;
        let mut k = start;
        let mut trials = 0;
        while k <= end && trials < ASSIGNMENT_TRIALS {
            let ip = if len > 0 {
                start + counter % len
            } else {
                start
            };
            counter = counter.wrapping_add(1);
            k = k.wrapping_add(1);
            trials += 1;
            if ip & 0xff != 0xff {
                // The mask is `0xffffffff << (32 - bits)` with the shift count taken modulo
                // 32, as the x86 code of 1.14 computes it.
                let bits = ipv4_targets
                    .iter()
                    .find(|&&(target, bits)| {
                        ip & u32::MAX.wrapping_shl(32u32.wrapping_sub(bits)) == target
                    })
                    .map(|&(_, bits)| bits);
                let candidate = IpAddr::V4(Ipv4Addr::from(ip));
                if let Some(bits) = bits.filter(|&b| b > 0) {
                    if !summary.is_allocated(&candidate) && !listed(assignments, candidate) {
                        return Some((Ipv4Addr::from(ip), bits as u16));
                    }
                }
            }
        }
    }
    None
}

/// An IPv6 pool address for the member (zt-vl2.md 6.2): the member address added to the
/// pool start when the low half spans at least 40 bits, otherwise random addresses; it must
/// lie in an IPv6 route without a gateway (the last such route gives the prefix) and be free.
fn assign_ipv6(
    pools: &[Value],
    routes: &[Route],
    address: Address,
    summary: &Summary,
    assignments: &[Value],
    rng: &mut impl RngCore,
) -> Option<(Ipv6Addr, u16)> {
    let on_link: Vec<SocketAddr> = routes
        .iter()
        .filter(|r| r.via == InetAddress::Nil)
        .filter_map(|r| r.target.socket_addr())
        .filter(SocketAddr::is_ipv6)
        .collect();
    for pool in pools.iter().filter_map(Value::as_object) {
        let (Some(IpAddr::V6(start)), Some(IpAddr::V6(end))) = pool_bounds(pool) else {
            continue;
        };
        let (start, end) = (u128::from(start), u128::from(end));
        let (s_hi, s_lo) = ((start >> 64) as u64, start as u64);
        let (e_hi, e_lo) = ((end >> 64) as u64, end as u64);
        for trial in 0..ASSIGNMENT_TRIALS {
            let (hi, lo) = if trial == 0 && e_lo > s_lo && e_lo - s_lo >= 0xff_ffff_ffff {
                (s_hi, s_lo.wrapping_add(address.to_u64()))
            } else {
                let (r_hi, r_lo) = (rng.next_u64(), rng.next_u64());
                let hi = if e_hi > s_hi { r_hi % (e_hi - s_hi) } else { 0 };
                let lo = if e_lo > s_lo { r_lo % (e_lo - s_lo) } else { 0 };
                (s_hi.wrapping_add(hi), s_lo.wrapping_add(lo))
            };
            let ip = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
            let bits = on_link
                .iter()
                .rev()
                .find(|target| route_contains(**target, IpAddr::V6(ip)))
                .map(SocketAddr::port)
                .unwrap_or(0);
            let candidate = IpAddr::V6(ip);
            if bits > 0 && !summary.is_allocated(&candidate) && !listed(assignments, candidate) {
                return Some((ip, bits));
            }
        }
    }
    None
}

fn pool_bounds(pool: &Record) -> (Option<IpAddr>, Option<IpAddr>) {
    let bound = |key: &str| parse_inet(&json::string(pool.get(key), "")).map(|a| a.ip());
    (bound("ipRangeStart"), bound("ipRangeEnd"))
}
