//! The controller API through the local API (issue 8, item 2): with the token, malformed
//! JSON, bodies that are not objects, fields of the wrong shape, unknown networks and
//! members, and hostile IDs in the path each get a JSON error that says what is wrong, and
//! leave the controller as it was: its networks and members (as the API lists them) and
//! every file under the home folder, contents included.

mod common_local_api;

use common_local_api::*;
use serde_json::Value;

const NETWORK: &str = "8e4df28b72000001";
const MEMBER: &str = "1122334455";

/// What the controller holds, as its API shows it: every network and every member record.
async fn controller_view(port: u16) -> Vec<String> {
    let mut view = Vec::new();
    let (status, list) = call(
        port,
        Carrier::Header(TOKEN),
        "GET",
        "/controller/network",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let list: Vec<String> = serde_json::from_str(&list).unwrap();
    for network in list {
        let path = format!("/controller/network/{network}");
        view.push(
            call(port, Carrier::Header(TOKEN), "GET", &path, b"")
                .await
                .1,
        );
        let (_, members) = call(
            port,
            Carrier::Header(TOKEN),
            "GET",
            &format!("{path}/member"),
            b"",
        )
        .await;
        let members: serde_json::Map<String, Value> = serde_json::from_str(&members).unwrap();
        for member in members.keys() {
            let member_path = format!("{path}/member/{member}");
            view.push(
                call(port, Carrier::Header(TOKEN), "GET", &member_path, b"")
                    .await
                    .1,
            );
        }
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_controller_requests_are_refused_and_change_nothing() {
    let home = TempDir::new("controller");
    let api = start(&home.0).await;
    let network_path = format!("/controller/network/{NETWORK}");
    let member_path = format!("{network_path}/member/{MEMBER}");
    for (path, body) in [
        (&network_path, r#"{"name":"kept","private":true}"#),
        (
            &member_path,
            r#"{"authorized":true,"ipAssignments":["10.0.0.5"]}"#,
        ),
    ] {
        let (status, answer) = call(
            api.port,
            Carrier::Header(TOKEN),
            "POST",
            path,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let other_network = "/controller/network/8e4df28b720000ff";
    let oversized = vec![b' '; zt_agent::api::MAX_BODY + 1];
    // (what, method, path, body, status, the message says)
    type Case<'a> = (&'a str, &'static str, String, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "bad JSON",
            "POST",
            network_path.clone(),
            b"{\"name\":".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "bad JSON, new network",
            "POST",
            other_network.into(),
            b"{".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "an array",
            "POST",
            other_network.into(),
            b"[]".to_vec(),
            400,
            "JSON object",
        ),
        (
            "a string",
            "POST",
            "/controller/network".into(),
            b"\"x\"".to_vec(),
            400,
            "JSON object",
        ),
        (
            "a number",
            "POST",
            network_path.clone(),
            b"5".to_vec(),
            400,
            "JSON object",
        ),
        (
            "null",
            "POST",
            member_path.clone(),
            b"null".to_vec(),
            400,
            "JSON object",
        ),
        (
            "not UTF-8",
            "POST",
            network_path.clone(),
            vec![0xff, b'{'],
            400,
            "invalid JSON",
        ),
        (
            "oversized",
            "POST",
            network_path.clone(),
            oversized,
            413,
            "body over",
        ),
        (
            "pools as a string",
            "POST",
            network_path.clone(),
            br#"{"ipAssignmentPools":"10.0.0.0/24"}"#.to_vec(),
            400,
            "ipAssignmentPools must be an array",
        ),
        (
            "routes as an object",
            "POST",
            network_path.clone(),
            br#"{"routes":{}}"#.to_vec(),
            400,
            "routes",
        ),
        (
            "rules as a number",
            "POST",
            network_path.clone(),
            br#"{"rules":1}"#.to_vec(),
            400,
            "rules",
        ),
        (
            "dns as a string",
            "POST",
            network_path.clone(),
            br#"{"dns":"10.0.0.1"}"#.to_vec(),
            400,
            "dns",
        ),
        (
            "private as a list",
            "POST",
            network_path.clone(),
            br#"{"private":[false]}"#.to_vec(),
            400,
            "private",
        ),
        (
            "name as an object",
            "POST",
            other_network.into(),
            br#"{"name":{}}"#.to_vec(),
            400,
            "name",
        ),
        (
            "v4AssignMode as a number",
            "POST",
            network_path.clone(),
            br#"{"v4AssignMode":1}"#.to_vec(),
            400,
            "v4AssignMode",
        ),
        (
            "mtu as a list",
            "POST",
            "/controller/network".into(),
            br#"{"mtu":[1]}"#.to_vec(),
            400,
            "mtu",
        ),
        (
            "authorized as a list",
            "POST",
            member_path.clone(),
            br#"{"authorized":[false]}"#.to_vec(),
            400,
            "authorized",
        ),
        (
            "ipAssignments as a string",
            "POST",
            member_path.clone(),
            br#"{"ipAssignments":"10.0.0.6"}"#.to_vec(),
            400,
            "ipAssignments must be an array",
        ),
        (
            "tags as an object",
            "POST",
            member_path.clone(),
            br#"{"tags":{}}"#.to_vec(),
            400,
            "tags",
        ),
        (
            "member of an unknown network",
            "POST",
            format!("{other_network}/member/{MEMBER}"),
            br#"{"authorized":true}"#.to_vec(),
            404,
            "no network",
        ),
        (
            "unknown network",
            "GET",
            other_network.into(),
            Vec::new(),
            404,
            "no network",
        ),
        (
            "delete an unknown network",
            "DELETE",
            other_network.into(),
            Vec::new(),
            404,
            "no network",
        ),
        (
            "delete an unknown member",
            "DELETE",
            format!("{network_path}/member/5544332211"),
            Vec::new(),
            404,
            "no member",
        ),
        (
            "legacy creation under another controller",
            "POST",
            "/controller/network/1122334455______".into(),
            b"{}".to_vec(),
            400,
            "networks are created under",
        ),
        (
            "short network ID",
            "POST",
            "/controller/network/8e4df28b7200001".into(),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "signed network ID",
            "POST",
            "/controller/network/+e4df28b72000001".into(),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "climbing network ID",
            "POST",
            "/controller/network/..%2f..%2f".into(),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "NUL in a network ID",
            "POST",
            "/controller/network/8e4df28b720000%00".into(),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "short member",
            "POST",
            format!("{network_path}/member/11223344"),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "signed member",
            "POST",
            format!("{network_path}/member/+122334455"),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "member's child",
            "POST",
            format!("{member_path}/x"),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "climbing path",
            "POST",
            format!("{network_path}/../8e4df28b720000ff"),
            b"{}".to_vec(),
            404,
            "no such endpoint",
        ),
        (
            "member list by POST",
            "POST",
            format!("{network_path}/member"),
            b"{}".to_vec(),
            405,
            "not allowed",
        ),
        (
            "status by DELETE",
            "DELETE",
            "/controller".into(),
            Vec::new(),
            405,
            "not allowed",
        ),
        (
            "network by PATCH",
            "PATCH",
            network_path.clone(),
            b"{}".to_vec(),
            405,
            "not allowed",
        ),
    ];
    let files = files_under(&api.home);
    let view = controller_view(api.port).await;
    assert_eq!(view.len(), 2, "{view:?}");
    for (what, method, path, body, status, says) in cases {
        let (got, answer) = call(api.port, Carrier::Header(TOKEN), method, &path, &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        let message = error_message(&answer);
        assert!(
            message.contains(says),
            "{what}: {message:?} does not say {says:?}"
        );
        assert_eq!(files_under(&api.home), files, "{what}: files changed");
        assert_eq!(
            controller_view(api.port).await,
            view,
            "{what}: records changed"
        );
    }
    // 1.14's lenient scalars still work: "authorized": "true" is a boolean to it.
    let (status, answer) = call(
        api.port,
        Carrier::Header(TOKEN),
        "POST",
        &member_path,
        br#"{"authorized":"false"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let member: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(member["authorized"], false);
}
