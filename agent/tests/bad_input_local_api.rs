//! The local HTTP API (issue 8, items 2 and 4): every route, ZeroTier One's and the
//! controller's, needs the token; without it, or with a wrong one, the answer is 401 `{}`
//! and nothing reaches the node. With the token, malformed bodies, wrong types, oversized
//! bodies and bad IDs in the path are refused with a JSON error that says what is wrong,
//! and change nothing: the joined networks and the controller's files stay as they were.
//!
//! Which routes need the token (ZeroTier One 1.14, service/OneService.cpp, checked for
//! facts): all of them, read-only ones included, except `/health` and `/sso` (which this
//! agent does not serve) and the web UI under `/app`; `/metrics` also takes the metrics
//! token, which opens nothing else. This agent requires the token on every path, unknown
//! ones included (an unknown path without a token is 401, not 404).

mod common_local_api;

use common_local_api::*;
use serde_json::{json, Value};

/// Every route the local API serves, with a body that would change state where the route
/// takes one. (method, path, body)
fn routes() -> Vec<(&'static str, String, Vec<u8>)> {
    let network = JOINED;
    let member = "1122334455";
    let body = |v: Value| v.to_string().into_bytes();
    vec![
        ("GET", "/status".into(), Vec::new()),
        ("GET", "/peer".into(), Vec::new()),
        ("GET", "/peer/1122334455".into(), Vec::new()),
        ("POST", "/echo/1122334455".into(), b"ping".to_vec()),
        ("GET", "/metrics".into(), Vec::new()),
        ("GET", "/network".into(), Vec::new()),
        ("GET", format!("/network/{network}"), Vec::new()),
        ("POST", "/network/8056c2e21c0000aa".into(), body(json!({}))),
        ("PUT", "/network/8056c2e21c0000aa".into(), body(json!({}))),
        (
            "POST",
            format!("/network/{network}"),
            body(json!({"allowDNS": true})),
        ),
        ("DELETE", format!("/network/{network}"), Vec::new()),
        ("GET", "/controller".into(), Vec::new()),
        ("GET", "/controller/network".into(), Vec::new()),
        (
            "POST",
            "/controller/network".into(),
            body(json!({"name": "x"})),
        ),
        (
            "POST",
            "/controller/network/8e4df28b72______".into(),
            body(json!({})),
        ),
        (
            "GET",
            "/controller/network/8e4df28b72000001".into(),
            Vec::new(),
        ),
        (
            "POST",
            "/controller/network/8e4df28b72000001".into(),
            body(json!({"private": false})),
        ),
        (
            "DELETE",
            "/controller/network/8e4df28b72000001".into(),
            Vec::new(),
        ),
        (
            "GET",
            "/controller/network/8e4df28b72000001/member".into(),
            Vec::new(),
        ),
        (
            "GET",
            format!("/controller/network/8e4df28b72000001/member/{member}"),
            Vec::new(),
        ),
        (
            "POST",
            format!("/controller/network/8e4df28b72000001/member/{member}"),
            body(json!({"authorized": true})),
        ),
        (
            "DELETE",
            format!("/controller/network/8e4df28b72000001/member/{member}"),
            Vec::new(),
        ),
        ("GET", "/unstable/controller/network".into(), Vec::new()),
        (
            "GET",
            "/unstable/controller/network/8e4df28b72000001/member".into(),
            Vec::new(),
        ),
        ("GET", "/nothing".into(), Vec::new()),
        ("GET", "/health".into(), Vec::new()),
        ("GET", "/sso".into(), Vec::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token_and_refusals_change_nothing() {
    let home = TempDir::new("token");
    let api = start(&home.0).await;
    // A network and a member for the controller routes to find.
    let (status, _) = call(
        api.port,
        Carrier::Header(TOKEN),
        "POST",
        "/controller/network/8e4df28b72000001",
        br#"{"name":"kept"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        api.port,
        Carrier::Header(TOKEN),
        "POST",
        "/controller/network/8e4df28b72000001/member/1122334455",
        br#"{"authorized":false}"#,
    )
    .await;
    assert_eq!(status, 200);

    let files = files_under(&api.home);
    let networks = api.driven.networks();
    let requests = api.driven.requests();
    let carriers: [(&str, Carrier<'static>); 9] = [
        ("no token", Carrier::None),
        ("wrong token in X-ZT1-Auth", Carrier::Header("wrong")),
        ("empty token in X-ZT1-Auth", Carrier::Header("")),
        ("token prefix", Carrier::Header("sekrit0123456789abcdef")),
        (
            "token with more",
            Carrier::Header("sekrit0123456789abcdefghi"),
        ),
        ("wrong token in ?auth=", Carrier::Query("wrong")),
        ("empty ?auth=", Carrier::Query("")),
        ("wrong bearer", Carrier::Bearer("wrong")),
        // The metrics token opens /metrics only (checked below).
        ("metrics token", Carrier::Header(METRICS_TOKEN)),
    ];
    for (method, path, body) in routes() {
        for (what, carrier) in carriers {
            if path == "/metrics" && what == "metrics token" {
                continue;
            }
            let (status, answer) = call(api.port, carrier, method, &path, &body).await;
            assert_eq!(
                (status, answer.as_str()),
                (401, "{}"),
                "{method} {path} with {what}"
            );
        }
    }
    assert_eq!(
        api.driven.requests(),
        requests,
        "a refused request reached the node"
    );
    assert_eq!(api.driven.networks(), networks);
    assert_eq!(
        files_under(&api.home),
        files,
        "the controller's files changed"
    );

    // The right token, in each carrier ZeroTier One accepts, opens a read-only route.
    for carrier in [
        Carrier::Header(TOKEN),
        Carrier::Query(TOKEN),
        Carrier::Bearer(TOKEN),
    ] {
        let (status, _) = call(api.port, carrier, "GET", "/network", b"").await;
        assert_eq!(status, 200, "{carrier:?}");
    }
    let (status, _) = call(
        api.port,
        Carrier::Header(METRICS_TOKEN),
        "GET",
        "/metrics",
        b"",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_ids_are_refused_and_change_nothing() {
    let home = TempDir::new("bodies");
    let api = start(&home.0).await;
    let new_network = "/network/8056c2e21c0000bb";
    let joined = format!("/network/{JOINED}");
    let oversized = vec![b' '; zt_agent::api::MAX_BODY + 1];
    // (what, method, path, body, status, the message says)
    type Case<'a> = (&'a str, &'a str, String, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "bad JSON",
            "POST",
            new_network.into(),
            b"{\"allowManaged\":".to_vec(),
            400,
            "bad JSON",
        ),
        (
            "an array",
            "POST",
            new_network.into(),
            b"[]".to_vec(),
            400,
            "JSON object",
        ),
        (
            "a string",
            "POST",
            new_network.into(),
            b"\"join\"".to_vec(),
            400,
            "JSON object",
        ),
        (
            "a number",
            "POST",
            new_network.into(),
            b"5".to_vec(),
            400,
            "JSON object",
        ),
        (
            "null",
            "POST",
            new_network.into(),
            b"null".to_vec(),
            400,
            "JSON object",
        ),
        (
            "a setting as a string",
            "POST",
            new_network.into(),
            br#"{"allowManaged":"yes"}"#.to_vec(),
            400,
            "allowManaged must be true or false",
        ),
        (
            "a setting as a number",
            "PUT",
            joined.clone(),
            br#"{"allowDNS":1}"#.to_vec(),
            400,
            "allowDNS",
        ),
        (
            "a setting as null",
            "POST",
            joined.clone(),
            br#"{"allowGlobal":null}"#.to_vec(),
            400,
            "allowGlobal",
        ),
        (
            "a setting as an object",
            "POST",
            joined.clone(),
            br#"{"allowDefault":{}}"#.to_vec(),
            400,
            "allowDefault",
        ),
        (
            "oversized body",
            "POST",
            new_network.into(),
            oversized.clone(),
            413,
            "body over",
        ),
        (
            "oversized echo",
            "POST",
            "/echo/1122334455".into(),
            vec![0; 5000],
            413,
            "ECHO payload",
        ),
        (
            "short network ID",
            "POST",
            "/network/8056c2e21c00000".into(),
            b"{}".to_vec(),
            400,
            "not a network ID",
        ),
        (
            "long network ID",
            "POST",
            "/network/8056c2e21c0000011".into(),
            b"{}".to_vec(),
            400,
            "not a network ID",
        ),
        (
            "signed network ID",
            "POST",
            "/network/+056c2e21c000001".into(),
            b"{}".to_vec(),
            400,
            "not a network ID",
        ),
        (
            "network ID not hex",
            "DELETE",
            "/network/8056c2e21c00000g".into(),
            Vec::new(),
            400,
            "not a network ID",
        ),
        (
            "network ID climbing",
            "POST",
            "/network/..%2f..%2fetc".into(),
            b"{}".to_vec(),
            400,
            "not a network ID",
        ),
        (
            "network ID with NUL",
            "POST",
            "/network/8056c2e21c0000%00".into(),
            b"{}".to_vec(),
            400,
            "not a network ID",
        ),
        (
            "a network's child",
            "POST",
            format!("{joined}/x"),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "bad peer address",
            "GET",
            "/peer/11223344".into(),
            Vec::new(),
            400,
            "not a ZeroTier address",
        ),
        (
            "reserved peer address",
            "GET",
            "/peer/ff00000001".into(),
            Vec::new(),
            400,
            "not a ZeroTier address",
        ),
        (
            "signed peer address",
            "GET",
            "/peer/+122334455".into(),
            Vec::new(),
            400,
            "not a ZeroTier address",
        ),
        (
            "bad echo address",
            "POST",
            "/echo/../x".into(),
            Vec::new(),
            404,
            "no such endpoint",
        ),
        (
            "unknown path",
            "GET",
            "/moon".into(),
            Vec::new(),
            404,
            "no such endpoint",
        ),
        (
            "wrong method",
            "DELETE",
            "/status".into(),
            Vec::new(),
            405,
            "not allowed",
        ),
        (
            "wrong method on network",
            "PATCH",
            joined.clone(),
            b"{}".to_vec(),
            405,
            "not allowed",
        ),
    ];
    let files = files_under(&api.home);
    let networks = api.driven.networks();
    let requests = api.driven.requests();
    for (what, method, path, body, status, says) in cases {
        let method: &'static str = Box::leak(method.to_string().into_boxed_str());
        let (got, answer) = call(api.port, Carrier::Header(TOKEN), method, &path, &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        let message = error_message(&answer);
        assert!(
            message.contains(says),
            "{what}: {message:?} does not say {says:?}"
        );
        assert_eq!(api.driven.requests(), requests, "{what}: reached the node");
        assert_eq!(api.driven.networks(), networks, "{what}: networks changed");
        assert_eq!(files_under(&api.home), files, "{what}: files changed");
    }
    // ZeroTier One's CLI (`zerotier-cli set <nwid> allowManaged=1`) still works.
    let (status, _) = call(
        api.port,
        Carrier::Header(TOKEN),
        "POST",
        &joined,
        br#"{"allowManaged":true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(api.driven.networks()[JOINED], json!({"allowManaged": true}));
}
