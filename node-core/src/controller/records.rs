//! Network and member records as 1.14's controller keeps them (zt-vl2.md 6.5, 6.6): the
//! defaults a record starts from, the fields never persisted, the save rule (compare
//! ignoring `revision`) and the normalisation of API POST bodies.

use serde_json::{json, Map, Value};

use super::json::{self, field, inet_text, ip_text, parse_inet, Record};
use crate::vl2::config::{DEFAULT_MTU, MAX_MTU, MIN_MTU};
use crate::vl2::rules_json::{rule_from_json, rule_to_json};

/// `ZT_CONTROLLER_MAX_ARRAY_SIZE`: the most entries kept in any list from a POST body.
pub(crate) const MAX_ARRAY_SIZE: usize = 16384;

/// Default multicast limit.
pub(crate) const DEFAULT_MULTICAST_LIMIT: u64 = 32;

/// Sets what a network record lacks to 1.14's defaults (`DB::initNetwork`).
pub(crate) fn init_network(network: &mut Record, now: i64) {
    let mut default = |key: &str, value: Value| {
        if !network.contains_key(key) {
            network.insert(key.to_owned(), value);
        }
    };
    default("private", json!(true));
    default("creationTime", json!(now));
    default("name", json!(""));
    default("multicastLimit", json!(DEFAULT_MULTICAST_LIMIT));
    default("enableBroadcast", json!(true));
    default("v4AssignMode", json!({"zt": false}));
    default(
        "v6AssignMode",
        json!({"rfc4193": false, "zt": false, "6plane": false}),
    );
    // What 1.14's `{{}}` initializer makes: an array holding one null.
    default("authTokens", json!([null]));
    default("capabilities", json!([]));
    default("tags", json!([]));
    default("routes", json!([]));
    default("ipAssignmentPools", json!([]));
    default("mtu", json!(DEFAULT_MTU));
    default("remoteTraceTarget", Value::Null);
    default("rulesSource", json!(""));
    default(
        "rules",
        json!([{"not": false, "or": false, "type": "ACTION_ACCEPT"}]),
    );
    default("dns", json!([]));
    default("ssoEnabled", json!(false));
    default("clientId", json!(""));
    default("authorizationEndpoint", json!(""));
    // 1.14 tests for a misspelt key ("removeTraceLevel") here, so every initialisation resets
    // the trace level to 0; kept for compatibility.
    network.insert("remoteTraceLevel".to_owned(), json!(0));
    network.insert("objtype".to_owned(), json!("network"));
}

/// Sets what a member record lacks to 1.14's defaults (`DB::initMember`).
pub(crate) fn init_member(member: &mut Record, now: i64) {
    let mut default = |key: &str, value: Value| {
        if !member.contains_key(key) {
            member.insert(key.to_owned(), value);
        }
    };
    default("authorized", json!(false));
    default("ssoExempt", json!(false));
    default("ipAssignments", json!([]));
    default("activeBridge", json!(false));
    default("tags", json!([]));
    default("capabilities", json!([]));
    default("creationTime", json!(now));
    default("noAutoAssignIps", json!(false));
    default("revision", json!(0));
    default("lastDeauthorizedTime", json!(0));
    default("lastAuthorizedTime", json!(0));
    default("lastAuthorizedCredentialType", Value::Null);
    default("lastAuthorizedCredential", Value::Null);
    default("authenticationExpiryTime", json!(0));
    default("vMajor", json!(-1));
    default("vMinor", json!(-1));
    default("vRev", json!(-1));
    default("vProto", json!(-1));
    default("remoteTraceTarget", Value::Null);
    // Same misspelt-key quirk as for networks.
    member.insert("remoteTraceLevel".to_owned(), json!(0));
    member.insert("objtype".to_owned(), json!("member"));
}

/// Removes the fields 1.14 computes per answer and never stores (`DB::cleanNetwork`).
pub(crate) fn clean_network(network: &mut Record) {
    for key in [
        "clock",
        "authorizedMemberCount",
        "activeMemberCount",
        "totalMemberCount",
        "lastModified",
    ] {
        network.remove(key);
    }
}

/// Removes the fields 1.14 computes per answer and never stores (`DB::cleanMember`).
pub(crate) fn clean_member(member: &mut Record) {
    for key in [
        "clock",
        "physicalAddr",
        "recentLog",
        "lastModified",
        "lastRequestMetaData",
        "authenticationURL",
        "authenticationClientID",
    ] {
        member.remove(key);
    }
}

/// FileDB's change test: same keys and values, `revision` aside.
pub(crate) fn same_ignoring_revision(a: &Record, b: &Record) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(key, value)| key == "revision" || b.get(key) == Some(value))
}

/// Applies a POST body to a network record (`networkUpdateFromPostData`): only the writable
/// fields, each normalised as 1.14 does. A body that is not an object changes nothing.
pub(crate) fn apply_network_post(network: &mut Record, body: &Value) {
    let Some(body) = body.as_object() else {
        return;
    };
    let given = |key: &str| body.get(key);
    if let Some(v) = given("name") {
        network.insert("name".into(), json!(json::string(Some(v), "")));
    }
    if let Some(v) = given("private") {
        network.insert("private".into(), json!(json::boolean(Some(v), true)));
    }
    if let Some(v) = given("enableBroadcast") {
        network.insert(
            "enableBroadcast".into(),
            json!(json::boolean(Some(v), false)),
        );
    }
    if let Some(v) = given("multicastLimit") {
        network.insert(
            "multicastLimit".into(),
            json!(json::int(Some(v), DEFAULT_MULTICAST_LIMIT)),
        );
    }
    if let Some(v) = given("mtu") {
        // 1.14 converts to a 32-bit unsigned before clamping.
        let mtu = (json::int(Some(v), u64::from(DEFAULT_MTU)) as u32).clamp(MIN_MTU, MAX_MTU);
        network.insert("mtu".into(), json!(mtu));
    }
    if let Some(v) = given("remoteTraceTarget") {
        network.insert("remoteTraceTarget".into(), trace_target(v));
    }
    if let Some(v) = given("remoteTraceLevel") {
        network.insert("remoteTraceLevel".into(), json!(json::int(Some(v), 0)));
    }
    if let Some(v) = given("v4AssignMode") {
        let zt = match v {
            // The legacy form: the string "zt".
            Value::String(text) => text == "zt",
            Value::Object(mode) => json::boolean(mode.get("zt"), false),
            _ => false,
        };
        network.insert("v4AssignMode".into(), json!({ "zt": zt }));
    }
    if let Some(v) = given("v6AssignMode") {
        network.insert("v6AssignMode".into(), v6_assign_mode(v));
    }
    if let Some(Value::Array(routes)) = given("routes") {
        network.insert("routes".into(), Value::Array(normalise_routes(routes)));
    }
    if let Some(Value::Array(pools)) = given("ipAssignmentPools") {
        network.insert(
            "ipAssignmentPools".into(),
            Value::Array(normalise_pools(pools)),
        );
    }
    if let Some(Value::Array(rules)) = given("rules") {
        network.insert("rules".into(), Value::Array(normalise_rules(rules)));
    }
    if let Some(v) = given("authTokens") {
        network.insert("authTokens".into(), normalise_auth_tokens(v));
    }
    if let Some(Value::Array(capabilities)) = given("capabilities") {
        network.insert(
            "capabilities".into(),
            Value::Array(normalise_capabilities(capabilities)),
        );
    }
    if let Some(Value::Array(tags)) = given("tags") {
        network.insert("tags".into(), Value::Array(normalise_network_tags(tags)));
    }
    if let Some(Value::Object(dns)) = given("dns") {
        let mut out = Map::new();
        out.insert(
            "domain".into(),
            dns.get("domain").cloned().unwrap_or(Value::Null),
        );
        if let Some(Value::Array(servers)) = dns.get("servers") {
            out.insert("servers".into(), Value::Array(servers.clone()));
        }
        network.insert("dns".into(), Value::Object(out));
    }
}

/// A 10-character string is kept, anything else becomes null.
fn trace_target(value: &Value) -> Value {
    let text = json::string(Some(value), "");
    if text.len() == 10 {
        json!(text)
    } else {
        Value::Null
    }
}

/// `"rfc4193,zt,6plane"` (legacy) or an object of which only the supplied keys are kept.
fn v6_assign_mode(value: &Value) -> Value {
    let mut out = Map::new();
    match value {
        Value::String(text) => {
            let modes: Vec<&str> = text.split(',').collect();
            for key in ["rfc4193", "zt", "6plane"] {
                out.insert(key.into(), json!(modes.contains(&key)));
            }
        }
        Value::Object(mode) => {
            for key in ["rfc4193", "zt", "6plane"] {
                if let Some(v) = mode.get(key) {
                    out.insert(key.into(), json!(json::boolean(Some(v), false)));
                }
            }
        }
        _ => {
            for key in ["rfc4193", "zt", "6plane"] {
                out.insert(key.into(), json!(false));
            }
        }
    }
    Value::Object(out)
}

/// Routes with a valid `target` (`ip/bits`, bits within the family); `via` kept only when
/// of the same family.
fn normalise_routes(routes: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for route in routes.iter().filter_map(Value::as_object) {
        let Some(Value::String(target)) = route.get("target") else {
            continue;
        };
        let Some(target) = parse_inet(target) else {
            continue;
        };
        let max_bits = if target.is_ipv4() { 32 } else { 128 };
        if target.port() > max_bits {
            continue;
        }
        let via = match route.get("via") {
            Some(Value::String(via)) => parse_inet(via),
            _ => None,
        }
        .filter(|via| via.is_ipv4() == target.is_ipv4());
        out.push(json!({
            "target": inet_text(target),
            "via": via.map_or(Value::Null, |via| json!(ip_text(via.ip()))),
        }));
        if out.len() >= MAX_ARRAY_SIZE {
            break;
        }
    }
    out
}

/// Pools whose start and end are addresses of the same family, stored as plain IPs.
fn normalise_pools(pools: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for pool in pools.iter().filter_map(Value::as_object) {
        let (Some(start), Some(end)) = (pool.get("ipRangeStart"), pool.get("ipRangeEnd")) else {
            continue;
        };
        let start = parse_inet(&json::string(Some(start), ""));
        let end = parse_inet(&json::string(Some(end), ""));
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        if start.is_ipv4() != end.is_ipv4() {
            continue;
        }
        out.push(json!({
            "ipRangeStart": ip_text(start.ip()),
            "ipRangeEnd": ip_text(end.ip()),
        }));
        if out.len() >= MAX_ARRAY_SIZE {
            break;
        }
    }
    out
}

/// Rules read and re-rendered; what 1.14 cannot read is dropped.
fn normalise_rules(rules: &[Value]) -> Vec<Value> {
    rules
        .iter()
        .filter_map(rule_from_json)
        .filter_map(|rule| rule_to_json(&rule))
        .take(MAX_ARRAY_SIZE)
        .collect()
}

/// `{token: expiry}` with non-negative numeric expiries; an object keeping none reads as
/// null and anything else as `[null]`, as 1.14 stores them.
fn normalise_auth_tokens(value: &Value) -> Value {
    let Value::Object(tokens) = value else {
        return json!([null]);
    };
    let kept: Map<String, Value> = tokens
        .iter()
        .filter(|(_, expiry)| expiry.as_f64().is_some_and(|e| e >= 0.0))
        .map(|(token, expiry)| (token.clone(), expiry.clone()))
        .collect();
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Object(kept)
    }
}

/// `[{id, default, rules}]`, one per ID (the last wins), sorted by ID.
fn normalise_capabilities(capabilities: &[Value]) -> Vec<Value> {
    let mut by_id = std::collections::BTreeMap::new();
    for capability in capabilities.iter().filter_map(Value::as_object) {
        let id = json::int(capability.get("id"), 0);
        let rules = match capability.get("rules") {
            Some(Value::Array(rules)) => normalise_rules(rules),
            _ => Vec::new(),
        };
        by_id.insert(
            id,
            json!({
                "id": id,
                "default": json::boolean(capability.get("default"), false),
                "rules": rules,
            }),
        );
    }
    by_id.into_values().take(MAX_ARRAY_SIZE).collect()
}

/// `[{id, default}]` (default a number or null), one per ID (the last wins), sorted.
fn normalise_network_tags(tags: &[Value]) -> Vec<Value> {
    let mut by_id = std::collections::BTreeMap::new();
    for tag in tags.iter().filter_map(Value::as_object) {
        let id = json::int(tag.get("id"), 0);
        let default = match tag.get("default") {
            None | Some(Value::Null) => Value::Null,
            Some(v) => json!(json::int(Some(v), 0)),
        };
        by_id.insert(id, json!({"id": id, "default": default}));
    }
    by_id.into_values().take(MAX_ARRAY_SIZE).collect()
}

/// Applies a POST body to a member record (`memberPost`): a change of `authorized` stamps
/// `lastAuthorizedTime` or `lastDeauthorizedTime` with `now`. A body that is not an object
/// changes nothing.
pub(crate) fn apply_member_post(member: &mut Record, body: &Value, now: i64) {
    let Some(body) = body.as_object() else {
        return;
    };
    let given = |key: &str| body.get(key);
    for key in ["activeBridge", "noAutoAssignIps"] {
        if let Some(v) = given(key) {
            member.insert(key.into(), json!(json::boolean(Some(v), false)));
        }
    }
    if let Some(v) = given("authenticationExpiryTime") {
        member.insert(
            "authenticationExpiryTime".into(),
            json!(json::int(Some(v), 0)),
        );
    }
    // Accepted, and removed again before saving (`cleanMember`).
    if let Some(v) = given("authenticationURL") {
        member.insert("authenticationURL".into(), json!(json::string(Some(v), "")));
    }
    if let Some(v) = given("name") {
        member.insert("name".into(), json!(json::string(Some(v), "")));
    }
    if let Some(v) = given("remoteTraceTarget") {
        member.insert("remoteTraceTarget".into(), trace_target(v));
    }
    if let Some(v) = given("remoteTraceLevel") {
        member.insert("remoteTraceLevel".into(), json!(json::int(Some(v), 0)));
    }
    if let Some(v) = given("authorized") {
        let authorized = json::boolean(Some(v), false);
        if authorized != json::boolean(field(member, "authorized"), false) {
            member.insert("authorized".into(), json!(authorized));
            if authorized {
                member.insert("lastAuthorizedTime".into(), json!(now));
                member.insert("lastAuthorizedCredentialType".into(), json!("api"));
                member.insert("lastAuthorizedCredential".into(), Value::Null);
            } else {
                member.insert("lastDeauthorizedTime".into(), json!(now));
            }
        }
    }
    if let Some(Value::Array(ips)) = given("ipAssignments") {
        // 1.14 fails the whole request on a non-string entry; we skip it.
        let ips: Vec<Value> = ips
            .iter()
            .filter_map(Value::as_str)
            .filter_map(parse_inet)
            .map(|ip| json!(ip_text(ip.ip())))
            .take(MAX_ARRAY_SIZE)
            .collect();
        member.insert("ipAssignments".into(), Value::Array(ips));
    }
    if let Some(Value::Array(tags)) = given("tags") {
        let mut by_id = std::collections::BTreeMap::new();
        for tag in tags.iter().filter_map(Value::as_array) {
            if let [id, value] = tag.as_slice() {
                by_id.insert(
                    json::int(Some(id), 0) & 0xffff_ffff,
                    json::int(Some(value), 0) & 0xffff_ffff,
                );
            }
        }
        let tags: Vec<Value> = by_id
            .into_iter()
            .map(|(id, value)| json!([id, value]))
            .take(MAX_ARRAY_SIZE)
            .collect();
        member.insert("tags".into(), Value::Array(tags));
    }
    if let Some(Value::Array(capabilities)) = given("capabilities") {
        let mut ids: Vec<u64> = capabilities
            .iter()
            .take(MAX_ARRAY_SIZE)
            .map(|id| json::int(Some(id), 0))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        member.insert("capabilities".into(), json!(ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Record {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn network_post_normalises() {
        let mut network = Record::new();
        init_network(&mut network, 5);
        apply_network_post(
            &mut network,
            &json!({
                "name": 7,
                "mtu": 100,
                "multicastLimit": "12",
                "remoteTraceTarget": "short",
                "v4AssignMode": "zt",
                "v6AssignMode": "6plane,rfc4193,bogus",
                "routes": [
                    {"target": "10.0.0.0/24"},
                    {"target": "10.1.0.0/16", "via": "10.0.0.1"},
                    {"target": "fd00::/8", "via": "10.0.0.1"},
                    {"target": "10.2.0.0/33"},
                    {"target": 5},
                    "nonsense"
                ],
                "ipAssignmentPools": [
                    {"ipRangeStart": "10.0.0.10", "ipRangeEnd": "10.0.0.20"},
                    {"ipRangeStart": "10.0.0.10", "ipRangeEnd": "fd00::1"},
                    {"ipRangeStart": "10.0.0.10"}
                ],
                "rules": [{"type": "ACTION_DROP", "not": true}, {"type": "BOGUS"}],
                "authTokens": {"good": 0, "later": 99, "bad": -1, "text": "x"},
                "capabilities": [
                    {"id": 2, "rules": [{"type": "ACTION_ACCEPT"}]},
                    {"id": 1, "default": true},
                    {"id": 2, "default": "1"}
                ],
                "tags": [{"id": 9, "default": "3"}, {"id": 4}],
                "dns": {"domain": "zt.example", "servers": ["10.0.0.1"]},
                "ignored": true
            }),
        );
        assert_eq!(network["name"], json!("7"));
        assert_eq!(network["mtu"], json!(1280));
        assert_eq!(network["multicastLimit"], json!(12));
        assert_eq!(network["remoteTraceTarget"], Value::Null);
        assert_eq!(network["v4AssignMode"], json!({"zt": true}));
        assert_eq!(
            network["v6AssignMode"],
            json!({"6plane": true, "rfc4193": true, "zt": false})
        );
        assert_eq!(
            network["routes"],
            json!([
                {"target": "10.0.0.0/24", "via": null},
                {"target": "10.1.0.0/16", "via": "10.0.0.1"},
                {"target": "fd00::/8", "via": null}
            ])
        );
        assert_eq!(
            network["ipAssignmentPools"],
            json!([{"ipRangeStart": "10.0.0.10", "ipRangeEnd": "10.0.0.20"}])
        );
        assert_eq!(network["rules"], json!([{"type": "ACTION_DROP"}]));
        assert_eq!(network["authTokens"], json!({"good": 0, "later": 99}));
        assert_eq!(
            network["capabilities"],
            json!([
                {"id": 1, "default": true, "rules": []},
                {"id": 2, "default": true, "rules": []}
            ])
        );
        assert_eq!(
            network["tags"],
            json!([{"id": 4, "default": null}, {"id": 9, "default": 3}])
        );
        assert_eq!(
            network["dns"],
            json!({"domain": "zt.example", "servers": ["10.0.0.1"]})
        );
        assert!(!network.contains_key("ignored"));
    }

    #[test]
    fn v6_object_keeps_only_supplied_keys() {
        let mut network = Record::new();
        init_network(&mut network, 5);
        apply_network_post(&mut network, &json!({"v6AssignMode": {"zt": 1}}));
        assert_eq!(network["v6AssignMode"], json!({"zt": true}));
        apply_network_post(&mut network, &json!({"authTokens": 3}));
        assert_eq!(network["authTokens"], json!([null]));
        apply_network_post(&mut network, &json!({"authTokens": {}}));
        assert_eq!(network["authTokens"], Value::Null);
    }

    #[test]
    fn member_post_normalises() {
        let mut member = Record::new();
        init_member(&mut member, 5);
        apply_member_post(
            &mut member,
            &json!({
                "authorized": true,
                "ipAssignments": ["10.0.0.5/24", "fd00::1", 7, "junk"],
                "tags": [[3, 4], [1, "2"], [3, 5], [9]],
                "capabilities": [5, 1, "5"],
                "authenticationURL": "https://x",
                "remoteTraceTarget": "0123456789",
                "name": "box"
            }),
            77,
        );
        assert_eq!(member["authorized"], json!(true));
        assert_eq!(member["lastAuthorizedTime"], json!(77));
        assert_eq!(member["lastAuthorizedCredentialType"], json!("api"));
        assert_eq!(member["ipAssignments"], json!(["10.0.0.5", "fd00::1"]));
        assert_eq!(member["tags"], json!([[1, 2], [3, 5]]));
        assert_eq!(member["capabilities"], json!([1, 5]));
        assert_eq!(member["remoteTraceTarget"], json!("0123456789"));
        clean_member(&mut member);
        assert!(!member.contains_key("authenticationURL"));

        // Unchanged authorization leaves the times alone; a change sets the other time.
        apply_member_post(&mut member, &json!({"authorized": true}), 80);
        assert_eq!(member["lastAuthorizedTime"], json!(77));
        apply_member_post(&mut member, &json!({"authorized": false}), 90);
        assert_eq!(member["lastDeauthorizedTime"], json!(90));
        assert_eq!(member["lastAuthorizedTime"], json!(77));
    }

    #[test]
    fn revision_is_ignored_when_comparing() {
        let a = object(json!({"x": 1, "revision": 1}));
        let b = object(json!({"x": 1, "revision": 7}));
        let c = object(json!({"x": 2, "revision": 1}));
        assert!(same_ignoring_revision(&a, &b));
        assert!(!same_ignoring_revision(&a, &c));
    }
}
