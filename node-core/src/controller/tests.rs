//! Unit tests of the controller: records, requests, pushes.

use serde_json::{json, Value};

use super::*;
use crate::vl2::config::{RequestMetadata, FLAG_ENABLE_BROADCAST, FLAG_ENABLE_IPV6_NDP_EMULATION};
use crate::vl2::rules::{Rule, RuleKind};
use crate::wire::InetAddress;

/// zt-vl2.md 8.2: the controller (selftest's known-good identity) and a member.
const CONTROLLER: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";
const MEMBER: &str = "a77dd93248:0:3ae13797f8532ba6c1858b3fc82c3574997fd775131e31bdb1cd6ad349f97378d0905be1a87ff1d0e7063f7d39b72844748363cc7ef998f09eee5774d2ff3b16:ee0a006ddc03ec2416f374fff98ee10848f6691e04ed9e5f918be4e1d40d189db1335985bdfdad065aee45e069d8e7b5a7e475f3e6ec10016e8f4a6897c38174";
/// Two more members (the capture lab's a and b).
const OTHER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/capture-1.14.1/a.identity.secret"
));
const THIRD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/capture-1.14.1/b.identity.secret"
));

const NWID: NetworkId = NetworkId(0x8e4d_f28b_7212_3456);
const T0: i64 = 1_700_000_000_000;

fn identity(text: &str) -> Identity {
    text.trim().parse().unwrap()
}

fn controller() -> Controller {
    Controller::new(identity(CONTROLLER), 7)
}

fn member() -> Identity {
    identity(MEMBER).public_only()
}

fn other() -> Identity {
    identity(OTHER).public_only()
}

fn third() -> Identity {
    identity(THIRD).public_only()
}

fn metadata() -> Vec<u8> {
    RequestMetadata::zerotier_1_14("linux/x86_64")
        .to_dictionary()
        .unwrap()
        .into_bytes()
}

fn at(ms: i64) -> Timestamp {
    Timestamp(ms)
}

fn request(c: &mut Controller, now: i64, who: &Identity) -> RequestAnswer {
    c.handle_request(at(now), NWID, who, &metadata(), None)
}

fn config(answer: RequestAnswer) -> NetworkConfig {
    match answer {
        RequestAnswer::Config(config) => *config,
        other => panic!("expected a config, got {other:?}"),
    }
}

fn authorize(c: &mut Controller, now: i64, who: Address) {
    c.post_member(at(now), NWID, who, &json!({"authorized": true}))
        .unwrap();
}

fn without(mut value: Value, keys: &[&str]) -> Value {
    for key in keys {
        value.as_object_mut().unwrap().remove(*key);
    }
    value
}

#[test]
fn fresh_network_has_the_defaults_of_1_14() {
    let mut c = controller();
    let network = c.post_network(at(T0), NWID, &json!({}));
    let expected = json!({"authTokens":[null],"authorizationEndpoint":"","capabilities":[],
        "clientId":"","creationTime":T0,"dns":[],"enableBroadcast":true,"id":"8e4df28b72123456",
        "ipAssignmentPools":[],"mtu":2800,"multicastLimit":32,"name":"","nwid":"8e4df28b72123456",
        "objtype":"network","private":true,"remoteTraceLevel":0,"remoteTraceTarget":null,
        "revision":1,"routes":[],"rules":[{"not":false,"or":false,"type":"ACTION_ACCEPT"}],
        "rulesSource":"","ssoEnabled":false,"tags":[],"v4AssignMode":{"zt":false},
        "v6AssignMode":{"6plane":false,"rfc4193":false,"zt":false}});
    assert_eq!(network, expected);
    // Compact JSON with sorted keys, as 1.14 writes its files.
    let text = serde_json::to_string(&network).unwrap();
    assert!(text.starts_with(r#"{"authTokens":[null],"authorizationEndpoint":"","#));
    assert_eq!(
        c.take_changes(),
        vec![StoreChange::NetworkSaved(NWID, expected)]
    );
    assert_eq!(c.network_list(), json!(["8e4df28b72123456"]));
}

#[test]
fn fresh_member_has_the_defaults_of_1_14() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({}));
    let address = member().address();
    let record = c
        .post_member(at(T0 + 5), NWID, address, &json!({}))
        .unwrap();
    let expected = json!({"activeBridge":false,"address":"a77dd93248",
        "authenticationExpiryTime":0,"authorized":false,"capabilities":[],"creationTime":T0 + 5,
        "id":"a77dd93248","ipAssignments":[],"lastAuthorizedCredential":null,
        "lastAuthorizedCredentialType":null,"lastAuthorizedTime":0,"lastDeauthorizedTime":0,
        "noAutoAssignIps":false,"nwid":"8e4df28b72123456","objtype":"member",
        "remoteTraceLevel":0,"remoteTraceTarget":null,"revision":1,"ssoExempt":false,"tags":[],
        "vMajor":-1,"vMinor":-1,"vProto":-1,"vRev":-1});
    assert_eq!(record, expected);
    assert_eq!(c.member(NWID, address), Some(expected));
    assert_eq!(c.member_revisions(NWID), Some(json!({"a77dd93248": 1})));
    // Members of an absent network: nothing.
    assert_eq!(
        c.post_member(at(T0), NetworkId(NWID.0 + 1), address, &json!({})),
        None
    );
}

#[test]
fn revision_moves_only_on_change() {
    let mut c = controller();
    let body = json!({"name": "lab", "remoteTraceLevel": 0});
    assert_eq!(c.post_network(at(T0), NWID, &body)["revision"], json!(1));
    c.take_changes();
    assert_eq!(
        c.post_network(at(T0 + 1), NWID, &body)["revision"],
        json!(1)
    );
    assert!(c.take_changes().is_empty());
    let changed = c.post_network(at(T0 + 2), NWID, &json!({"name": "lab2"}));
    assert_eq!(changed["revision"], json!(2));
    assert_eq!(changed["creationTime"], json!(T0));
    assert_eq!(c.take_changes().len(), 1);
}

#[test]
fn created_networks_live_under_our_address() {
    let mut c = controller();
    let mut seen = BTreeSet::new();
    for i in 0..20 {
        let network = c.create_network(at(T0 + i), &json!({"name": "x"})).unwrap();
        let id: NetworkId = network["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(id.controller(), c.address());
        assert_ne!(id.network_number(), 0);
        assert!(seen.insert(id));
    }
    assert_eq!(c.network_ids().len(), 20);
    // Deterministic for a given seed.
    let a = controller().create_network(at(T0), &json!({})).unwrap();
    let b = controller().create_network(at(T0), &json!({})).unwrap();
    assert_eq!(a["id"], b["id"]);
}

#[test]
fn unauthorized_member_is_denied_and_listed() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({}));
    c.take_changes();
    let who = member();
    assert!(matches!(
        request(&mut c, T0, &who),
        RequestAnswer::AccessDenied
    ));
    let record = c.member(NWID, who.address()).unwrap();
    assert_eq!(record["identity"], json!(who.to_string()));
    assert_eq!(record["authorized"], json!(false));
    // Versions are recorded only for authorized members.
    assert_eq!(record["vMajor"], json!(-1));
    assert_eq!(record["revision"], json!(1));
    assert_eq!(c.member_revisions(NWID), Some(json!({"a77dd93248": 1})));
    let listing = c.unstable_member_list(NWID).unwrap();
    assert_eq!(
        listing["meta"],
        json!({"totalCount": 1, "authorizedCount": 0})
    );
    assert!(matches!(
        c.take_changes().as_slice(),
        [StoreChange::MemberSaved(NWID, a, _)] if *a == who.address()
    ));
}

#[test]
fn unknown_network_and_foreign_networks() {
    let mut c = controller();
    assert!(matches!(
        request(&mut c, T0, &member()),
        RequestAnswer::NotFound
    ));
    assert!(c.take_changes().is_empty());
    let foreign = NetworkId(0x1122_3344_5500_0001);
    c.post_network(at(T0), foreign, &json!({}));
    let answer = c.handle_request(at(T0), foreign, &member(), &metadata(), None);
    assert!(matches!(answer, RequestAnswer::Ignore));
}

#[test]
fn repeated_requests_are_rate_limited() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    let who = member();
    assert!(matches!(
        request(&mut c, T0, &who),
        RequestAnswer::Config(_)
    ));
    assert!(matches!(
        request(&mut c, T0 + 1000, &who),
        RequestAnswer::Ignore
    ));
    assert!(matches!(
        request(&mut c, T0 + 1001, &who),
        RequestAnswer::Config(_)
    ));
    // Per member: another member is not held back.
    assert!(matches!(
        request(&mut c, T0 + 1002, &other()),
        RequestAnswer::Config(_)
    ));
}

#[test]
fn authorized_member_gets_a_config_that_round_trips() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "name": "testnet",
            "multicastLimit": 16,
            "mtu": 2700,
            "routes": [{"target": "10.147.17.0/24"}],
            "ipAssignmentPools": [{"ipRangeStart": "10.147.17.10", "ipRangeEnd": "10.147.17.250"}],
            "v4AssignMode": {"zt": true},
            "dns": {"domain": "zt.example", "servers": ["10.147.17.1"]}
        }),
    );
    let (a, b) = (member(), other());
    authorize(&mut c, T0, a.address());
    authorize(&mut c, T0, b.address());
    let now = T0 + 10_000;
    let ours = config(request(&mut c, now, &a));
    assert_eq!(ours.network_id, NWID);
    assert_eq!(ours.issued_to, a.address());
    assert_eq!(ours.timestamp, now);
    assert_eq!(ours.credential_time_max_delta, 1_800_000);
    assert_eq!(ours.revision, 1);
    assert_eq!(ours.flags, FLAG_ENABLE_BROADCAST);
    assert_eq!(ours.multicast_limit, 16);
    assert_eq!(ours.mtu, 2700);
    assert_eq!(ours.name, "testnet");
    assert_eq!(ours.rules, vec![Rule::new(RuleKind::Accept)]);
    assert_eq!(ours.dns.domain, b"zt.example");
    assert_eq!(ours.routes.len(), 1);

    let parsed = NetworkConfig::from_dictionary(&ours.to_dictionary().unwrap()).unwrap();
    assert_eq!(parsed, ours);

    // The COM is ours and agrees with another member's.
    let com = ours.com.clone().unwrap();
    com.verify(c.identity()).unwrap();
    assert_eq!(com.timestamp(), now as u64);
    let theirs = config(request(&mut c, now + 60_000, &b)).com.unwrap();
    theirs.verify(c.identity()).unwrap();
    assert!(com.agrees_with(&theirs, &b));
    assert!(theirs.agrees_with(&com, &a));
    // The COO lists the static IPs.
    let coo = &ours.certificates_of_ownership[0];
    coo.verify(c.identity()).unwrap();
    assert_eq!(coo.things.len(), ours.static_ips.len());

    // Versions are recorded from the metadata.
    let record = c.member(NWID, a.address()).unwrap();
    assert_eq!(
        (
            &record["vMajor"],
            &record["vMinor"],
            &record["vRev"],
            &record["vProto"]
        ),
        (&json!(1), &json!(14), &json!(1), &json!(12))
    );
    assert_eq!(record["lastAuthorizedCredentialType"], json!("api"));
}

/// zt-vl2.md 6.2 by hand: member a77dd93248 counts from 0x7dd93248, which is 8 mod 16; in
/// the pool 10.0.0.247-10.0.1.7 (length 16) the first candidate is 10.0.0.255 (skipped),
/// the second 10.0.1.0, taken by another member, the third 10.0.1.1. The first route
/// containing it gives the prefix (/16, not the more specific /24 after it).
#[test]
fn ipv4_auto_assignment_by_hand() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "routes": [{"target": "10.0.0.0/16"}, {"target": "10.0.1.0/24"}],
            "ipAssignmentPools": [{"ipRangeStart": "10.0.0.247", "ipRangeEnd": "10.0.1.7"}],
            "v4AssignMode": {"zt": true}
        }),
    );
    let b = other();
    c.post_member(
        at(T0),
        NWID,
        b.address(),
        &json!({"authorized": true, "ipAssignments": ["10.0.1.0"]}),
    );
    let a = member();
    authorize(&mut c, T0, a.address());
    let ours = config(request(&mut c, T0 + 1, &a));
    assert_eq!(
        ours.static_ips,
        vec![InetAddress::Ip("10.0.1.1:16".parse().unwrap())]
    );
    assert_eq!(
        c.member(NWID, a.address()).unwrap()["ipAssignments"],
        json!(["10.0.1.1"])
    );
    // The other member's hand-made address takes the most specific route's prefix.
    let theirs = config(request(&mut c, T0 + 2, &b));
    assert_eq!(
        theirs.static_ips,
        vec![InetAddress::Ip("10.0.1.0:24".parse().unwrap())]
    );
    // Addresses outside every route are left out of the config.
    c.post_member(
        at(T0 + 3),
        NWID,
        b.address(),
        &json!({"ipAssignments": ["192.168.1.1"], "noAutoAssignIps": true}),
    );
    assert!(config(request(&mut c, T0 + 5000, &b)).static_ips.is_empty());
}

#[test]
fn managed_ipv6_addresses() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({"v6AssignMode": {"rfc4193": true, "6plane": true}, "enableBroadcast": false}),
    );
    let a = member();
    authorize(&mut c, T0, a.address());
    let ours = config(request(&mut c, T0, &a));
    assert_eq!(
        ours.static_ips,
        vec![
            InetAddress::Ip(
                "[fd8e:4df2:8b72:1234:5699:93a7:7dd9:3248]:88"
                    .parse()
                    .unwrap()
            ),
            InetAddress::Ip("[fcfc:5fc6:dda7:7dd9:3248::1]:40".parse().unwrap()),
        ]
    );
    assert_eq!(ours.flags, FLAG_ENABLE_IPV6_NDP_EMULATION);
    // noAutoAssignIps turns them off.
    c.post_member(at(T0), NWID, a.address(), &json!({"noAutoAssignIps": true}));
    let ours = config(request(&mut c, T0 + 2000, &a));
    assert!(ours.static_ips.is_empty());
    assert_eq!(ours.flags, 0);
}

#[test]
fn ipv6_pool_assignment_uses_the_address() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "routes": [{"target": "fd00:1:2:3::/64"}],
            "ipAssignmentPools": [{"ipRangeStart": "fd00:1:2:3::", "ipRangeEnd": "fd00:1:2:3:ffff:ffff:ffff:ffff"}],
            "v6AssignMode": {"zt": true}
        }),
    );
    let a = member();
    authorize(&mut c, T0, a.address());
    let ours = config(request(&mut c, T0, &a));
    assert_eq!(
        ours.static_ips,
        vec![InetAddress::Ip(
            "[fd00:1:2:3:0:a7:7dd9:3248]:64".parse().unwrap()
        )]
    );
    assert_eq!(
        c.member(NWID, a.address()).unwrap()["ipAssignments"],
        json!(["fd00:1:2:3:0:a7:7dd9:3248"])
    );
}

#[test]
fn identity_is_pinned() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    let a = member();
    // Same address, another key (one hex digit changed): refused, record untouched.
    let mut impostor_text = a.to_string();
    let last = impostor_text.pop().unwrap();
    impostor_text.push(if last == '0' { '1' } else { '0' });
    let impostor: Identity = impostor_text.parse().unwrap();
    assert_eq!(impostor.address(), a.address());
    assert!(matches!(request(&mut c, T0, &a), RequestAnswer::Config(_)));
    c.take_changes();
    assert!(matches!(
        request(&mut c, T0 + 5000, &impostor),
        RequestAnswer::AccessDenied
    ));
    assert!(c.take_changes().is_empty());
    assert_eq!(
        c.member(NWID, a.address()).unwrap()["identity"],
        json!(a.to_string())
    );
    // A record that names an identity before any request pins it too.
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    c.load_member(
        json!({"id": "a77dd93248", "nwid": "8e4df28b72123456", "identity": impostor_text}),
    )
    .unwrap();
    assert!(matches!(
        request(&mut c, T0, &a),
        RequestAnswer::AccessDenied
    ));
}

#[test]
fn public_networks_authorize_automatically() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    let a = member();
    let ours = config(request(&mut c, T0, &a));
    assert_eq!(ours.network_type, crate::vl2::config::NetworkType::Public);
    let record = c.member(NWID, a.address()).unwrap();
    assert_eq!(record["authorized"], json!(true));
    assert_eq!(record["lastAuthorizedTime"], json!(T0));
    assert_eq!(record["lastAuthorizedCredentialType"], json!("public"));
    assert_eq!(record["lastAuthorizedCredential"], Value::Null);
}

#[test]
fn join_tokens_authorize() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({"authTokens": {"forever": 0, "later": T0 + 10_000, "gone": T0 - 1}}),
    );
    let ask = |c: &mut Controller, now: i64, who: &Identity, token: &str| {
        let mut m = RequestMetadata::zerotier_1_14("linux/x86_64");
        m.auth = Some(format!("token:{token}"));
        let m = m.to_dictionary().unwrap().into_bytes();
        c.handle_request(at(now), NWID, who, &m, None)
    };
    assert!(matches!(
        ask(&mut c, T0, &member(), "gone"),
        RequestAnswer::AccessDenied
    ));
    assert!(matches!(
        ask(&mut c, T0, &other(), "wrong"),
        RequestAnswer::AccessDenied
    ));
    assert!(matches!(
        ask(&mut c, T0 + 5000, &member(), "later"),
        RequestAnswer::Config(_)
    ));
    assert!(matches!(
        ask(&mut c, T0 + 5000, &other(), "forever"),
        RequestAnswer::Config(_)
    ));
    let record = c.member(NWID, other().address()).unwrap();
    assert_eq!(record["lastAuthorizedCredentialType"], json!("token"));
    assert_eq!(record["lastAuthorizedCredential"], json!("forever"));
    // Expired tokens do not let anyone else in.
    assert!(matches!(
        ask(&mut c, T0 + 20_000, &third(), "later"),
        RequestAnswer::AccessDenied
    ));
}

#[test]
fn old_nodes_get_accept_all_and_no_credentials() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "private": false,
            "rules": [{"type": "ACTION_DROP"}],
            "capabilities": [{"id": 1, "default": true, "rules": [{"type": "ACTION_ACCEPT"}]}],
            "tags": [{"id": 5, "default": 3}]
        }),
    );
    let old = Dictionary::new(METADATA_CAPACITY).into_bytes();
    let ours = config(c.handle_request(at(T0), NWID, &member(), &old, None));
    assert_eq!(ours.rules, vec![Rule::new(RuleKind::Accept)]);
    assert!(ours.capabilities.is_empty() && ours.tags.is_empty());
}

#[test]
fn default_capabilities_and_tags() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "private": false,
            "rules": [{"type": "ACTION_DROP"}],
            "capabilities": [
                {"id": 1, "default": true, "rules": [{"type": "ACTION_ACCEPT"}]},
                {"id": 2, "rules": [{"type": "ACTION_BREAK"}]}
            ],
            "tags": [{"id": 5, "default": 3}, {"id": 6}]
        }),
    );
    let a = member();
    let ours = config(request(&mut c, T0, &a));
    assert_eq!(ours.rules, vec![Rule::new(RuleKind::Drop)]);
    assert_eq!(ours.capabilities.len(), 1);
    let capability = &ours.capabilities[0];
    assert_eq!(capability.id, 1);
    assert_eq!(capability.rules, vec![Rule::new(RuleKind::Accept)]);
    capability.verify(|_| Some(c.identity())).unwrap();
    assert_eq!(capability.custody[0].to, a.address());
    assert_eq!(ours.tags.len(), 1);
    assert_eq!((ours.tags[0].id, ours.tags[0].value), (5, 3));
    ours.tags[0].verify(c.identity()).unwrap();
    let record = c.member(NWID, a.address()).unwrap();
    assert_eq!(record["capabilities"], json!([1]));
    assert_eq!(record["tags"], json!([[5, 3]]));

    // Defaults go to new members only; the API decides afterwards.
    c.post_member(
        at(T0),
        NWID,
        a.address(),
        &json!({"capabilities": [2], "tags": [[5, 9]]}),
    );
    let ours = config(request(&mut c, T0 + 5000, &a));
    assert_eq!(
        ours.capabilities.iter().map(|c| c.id).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!((ours.tags[0].id, ours.tags[0].value), (5, 9));
}

#[test]
fn active_bridges_are_specialists() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    c.post_member(
        at(T0),
        NWID,
        other().address(),
        &json!({"activeBridge": true}),
    );
    let ours = config(request(&mut c, T0, &member()));
    assert_eq!(
        ours.specialists,
        vec![other().address().to_u64() | crate::vl2::config::SPECIALIST_ACTIVE_BRIDGE]
    );
    assert!(ours.permits_bridging(other().address()));
}

#[test]
fn deauthorizing_pushes_a_revocation() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({}));
    let (a, b) = (member(), other());
    authorize(&mut c, T0, a.address());
    authorize(&mut c, T0, b.address());
    config(request(&mut c, T0, &a));
    config(request(&mut c, T0, &b));
    assert!(c.take_pushes(at(T0)).is_empty());

    let now = T0 + 30_000;
    let record = c
        .post_member(at(now), NWID, a.address(), &json!({"authorized": false}))
        .unwrap();
    assert_eq!(record["lastDeauthorizedTime"], json!(now));
    let pushes = c.take_pushes(at(now));
    let Some(Push::Revocation {
        network_id,
        revocation,
        to,
    }) = pushes.first()
    else {
        panic!("expected a revocation first: {pushes:?}");
    };
    assert_eq!(*network_id, NWID);
    assert_eq!(to, &vec![b.address(), a.address()]);
    revocation.verify(c.identity()).unwrap();
    assert_eq!(revocation.target, a.address());
    assert_eq!(revocation.threshold, now);
    assert_eq!(
        revocation.credential_type,
        CredentialType::CertificateOfMembership
    );
    assert_eq!(revocation.flags, REVOCATION_FLAG_FAST_PROPAGATE);
    assert_eq!(revocation.credential_id, 0);
    // The deauthorized member gets no config pushed.
    assert_eq!(pushes.len(), 1);
    assert!(matches!(
        request(&mut c, now + 1, &a),
        RequestAnswer::AccessDenied
    ));

    // Deleting an authorized member revokes too; members offline for 120 s hear nothing.
    assert!(c.delete_member(at(now), NWID, b.address()).is_some());
    assert!(matches!(
        c.take_pushes(at(now)).as_slice(),
        [Push::Revocation { .. }]
    ));
    assert_eq!(
        c.take_changes().last(),
        Some(&StoreChange::MemberDeleted(NWID, b.address()))
    );
    assert!(c.delete_member(at(now), NWID, b.address()).is_none());
    c.post_member(at(now), NWID, a.address(), &json!({"authorized": true}));
    c.take_pushes(at(now));
    c.post_member(
        at(now + 200_000),
        NWID,
        a.address(),
        &json!({"authorized": false}),
    );
    assert!(c.take_pushes(at(now + 200_000)).is_empty());
}

#[test]
fn api_changes_push_configs_to_online_members() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"name": "one"}));
    let (a, b) = (member(), other());
    authorize(&mut c, T0, a.address());
    authorize(&mut c, T0, b.address());
    config(request(&mut c, T0, &a));
    config(request(&mut c, T0, &b));
    // A third member asked but is not authorized: it gets nothing pushed.
    assert!(matches!(
        request(&mut c, T0, &third()),
        RequestAnswer::AccessDenied
    ));
    c.take_changes();

    let now = T0 + 60_000;
    c.post_network(at(now), NWID, &json!({"name": "two"}));
    let pushes = c.take_pushes(at(now));
    let mut names = Vec::new();
    for push in &pushes {
        let Push::Config {
            to,
            network_id,
            config,
        } = push
        else {
            panic!("unexpected {push:?}");
        };
        assert_eq!(*network_id, NWID);
        assert_eq!(config.issued_to, *to);
        assert_eq!(config.timestamp, now);
        assert_eq!(config.revision, 2);
        names.push((*to, config.name.clone()));
    }
    // Ascending by address.
    assert_eq!(
        names,
        vec![(b.address(), "two".into()), (a.address(), "two".into())]
    );
    // Nothing changed: nothing pushed.
    c.post_network(at(now), NWID, &json!({"name": "two"}));
    assert!(c.take_pushes(at(now)).is_empty());
    // A member change pushes to that member only.
    c.post_member(at(now), NWID, b.address(), &json!({"name": "bee"}));
    let pushes = c.take_pushes(at(now));
    assert!(matches!(pushes.as_slice(), [Push::Config { to, .. }] if *to == b.address()));
    // Offline members (no request for 120 s) are skipped.
    c.post_network(at(now + 200_000), NWID, &json!({"name": "three"}));
    assert!(c.take_pushes(at(now + 200_000)).is_empty());
}

#[test]
fn authorizing_a_refused_member_pushes_its_config_at_once() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"name": "one"}));
    let a = member();
    assert!(matches!(
        request(&mut c, T0, &a),
        RequestAnswer::AccessDenied
    ));
    // Another change to the network owes the refused member nothing.
    c.post_network(at(T0 + 1_000), NWID, &json!({"name": "two"}));
    assert!(c.take_pushes(at(T0 + 1_000)).is_empty());
    // Authorized while it still asks (online): its config goes out now.
    authorize(&mut c, T0 + 2_000, a.address());
    let pushes = c.take_pushes(at(T0 + 2_000));
    assert!(
        matches!(pushes.as_slice(), [Push::Config { to, config, .. }]
            if *to == a.address() && config.issued_to == a.address()),
        "{pushes:?}"
    );
}

#[test]
fn deleting_a_network_revokes_every_member() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"private": false}));
    config(request(&mut c, T0, &member()));
    config(request(&mut c, T0, &other()));
    c.take_changes();
    let deleted = c.delete_network(at(T0 + 1), NWID).unwrap();
    assert_eq!(deleted["id"], json!("8e4df28b72123456"));
    assert_eq!(c.take_changes(), vec![StoreChange::NetworkDeleted(NWID)]);
    let pushes = c.take_pushes(at(T0 + 1));
    assert_eq!(pushes.len(), 2);
    assert!(c.network(NWID).is_none());
    assert!(c.delete_network(at(T0 + 1), NWID).is_none());
    assert!(matches!(
        request(&mut c, T0 + 5000, &member()),
        RequestAnswer::NotFound
    ));
}

#[test]
fn listings() {
    let mut c = controller();
    c.post_network(at(T0), NWID, &json!({"name": "a"}));
    c.post_network(at(T0), NetworkId(NWID.0 + 1), &json!({"name": "b"}));
    authorize(&mut c, T0, member().address());
    c.post_member(at(T0), NWID, other().address(), &json!({}));
    let list = c.unstable_network_list();
    assert_eq!(list["meta"], json!({"networkCount": 2}));
    assert_eq!(
        list["data"][0]["meta"],
        json!({"totalMemberCount": 2, "authorizedMemberCount": 1})
    );
    assert_eq!(list["data"][1]["name"], json!("b"));
    let members = c.unstable_member_list(NWID).unwrap();
    assert_eq!(
        members["meta"],
        json!({"totalCount": 2, "authorizedCount": 1})
    );
    assert_eq!(members["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        c.status(at(T0)),
        json!({"controller": true, "apiVersion": 4, "clock": T0, "databaseReady": true})
    );
}

#[test]
fn loading_checks_ids() {
    let mut c = controller();
    assert_eq!(c.load_network(json!([])), Err(LoadError::NotAnObject));
    assert_eq!(
        c.load_network(json!({"id": "8e4df28b72"})),
        Err(LoadError::BadNetworkId)
    );
    assert_eq!(
        c.load_member(json!({"id": "a77dd93248", "nwid": "8e4df28b72123456"})),
        Err(LoadError::UnknownNetwork(NWID))
    );
    let network = without(
        controller().post_network(at(T0), NWID, &json!({"name": "kept"})),
        &[],
    );
    assert_eq!(c.load_network(network.clone()), Ok(NWID));
    assert_eq!(c.network(NWID), Some(network));
    assert_eq!(
        c.load_member(json!({"id": "a77dd9324", "nwid": "8e4df28b72123456"})),
        Err(LoadError::BadMemberAddress)
    );
    assert_eq!(
        c.load_member(json!({"id": "a77dd93248", "nwid": "8e4df28b72123456", "x": 1})),
        Ok((NWID, member().address()))
    );
    // Loading is not a change.
    assert!(c.take_changes().is_empty());
}

#[test]
fn credential_window_comes_from_the_file_and_is_clamped() {
    let mut c = controller();
    c.load_network(
        json!({"id": "8e4df28b72123456", "private": false, "certificateTimeoutWindowSize": 100}),
    )
    .unwrap();
    let ours = config(request(&mut c, T0, &member()));
    assert_eq!(
        ours.credential_time_max_delta,
        CREDENTIAL_TIME_MAX_DELTA_MIN
    );
    let com = ours.com.unwrap();
    assert_eq!(
        com.qualifiers[0].max_delta,
        CREDENTIAL_TIME_MAX_DELTA_MIN as u64
    );
}

/// The summary kept up to date member by member equals one recomputed from the records.
fn assert_summary_in_step(c: &Controller) {
    for entry in c.networks.values() {
        assert_eq!(entry.summary, Summary::of(entry.members.iter()));
    }
}

#[test]
fn the_member_summary_follows_every_change_of_the_member_list() {
    let mut c = controller();
    c.post_network(
        at(T0),
        NWID,
        &json!({
            "v4AssignMode": {"zt": true},
            "routes": [{"target": "10.9.0.0/24"}],
            "ipAssignmentPools": [{"ipRangeStart": "10.9.0.1", "ipRangeEnd": "10.9.0.200"}],
        }),
    );
    let (m, o, t) = (member(), other(), third());
    for who in [&m, &o, &t] {
        authorize(&mut c, T0, who.address());
        config(request(&mut c, T0 + 10, who));
        assert_summary_in_step(&c);
    }
    assert_eq!(c.networks[&NWID].summary.allocated_ips.len(), 3);
    // Two members listing the same address, then one dropping it: still allocated.
    c.post_member(
        at(T0 + 20),
        NWID,
        o.address(),
        &json!({"ipAssignments": ["10.9.0.77"], "activeBridge": true}),
    );
    c.post_member(
        at(T0 + 20),
        NWID,
        t.address(),
        &json!({"ipAssignments": ["10.9.0.77"]}),
    );
    assert_summary_in_step(&c);
    assert_eq!(
        c.networks[&NWID].summary.active_bridges,
        BTreeSet::from([o.address()])
    );
    c.post_member(
        at(T0 + 30),
        NWID,
        t.address(),
        &json!({"ipAssignments": []}),
    );
    assert_summary_in_step(&c);
    let ip: std::net::IpAddr = "10.9.0.77".parse().unwrap();
    assert_eq!(c.networks[&NWID].summary.allocated_ips.get(&ip), Some(&1));
    // A new member does not get an address another one holds.
    c.delete_member(at(T0 + 40), NWID, o.address());
    assert_summary_in_step(&c);
    assert!(c.networks[&NWID].summary.active_bridges.is_empty());
    assert!(!c.networks[&NWID].summary.allocated_ips.contains_key(&ip));
    let mut loaded = controller();
    loaded
        .load_network(json!({"id": NWID.to_string()}))
        .unwrap();
    for address in c.networks[&NWID].members.keys() {
        loaded
            .load_member(Value::Object(c.networks[&NWID].members[address].clone()))
            .unwrap();
    }
    assert_summary_in_step(&loaded);
    assert_eq!(loaded.networks[&NWID].summary, c.networks[&NWID].summary);
}
