//! The CNI plugin's inputs: its environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_IFNAME`,
//! `CNI_NETNS`, `CNI_ARGS`, `CNI_PATH`) and the network config on stdin, read and validated
//! as every verb does before it calls the agent.
//!
//! Input: the environment as `NAME=VALUE` lines, a NUL byte, then stdin (without a NUL the
//! whole input is stdin, with an environment that names a container).
//!
//! Properties, beyond "never panics": an endpoint key built from valid variables is a valid
//! key; a config ADD accepts is one DEL reads without warnings.
#![no_main]

use cni_plugin::config::{echo_version, gc_valid_attachments, DelConf, NetConf, Request};
use cni_plugin::env::{endpoint_key, CniArgs, Environment};
use libfuzzer_sys::fuzz_target;

fn environment(text: &[u8]) -> Environment {
    let text = String::from_utf8_lossy(text);
    Environment::from_pairs(
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_string(), value.to_string())),
    )
}

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (environment(&data[..nul]), &data[nul + 1..]),
        None => (
            Environment::from_pairs([
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc123"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/var/run/netns/cni-1"),
            ]),
            data,
        ),
    };

    let _ = env.command();
    let _ = env.netns_if_any();
    let _ = env.cni_path();
    let container_id = env.container_id();
    let if_name = env.if_name();
    if let Ok(args) = env.cni_args() {
        let _ = args.pod();
        if let (Ok(container_id), Ok(if_name)) = (&container_id, &if_name) {
            // Whatever the runtime passes, a key is either refused or valid.
            if let Ok(key) = endpoint_key(&args, container_id, if_name) {
                assert!(
                    key.as_str()
                        .parse::<zt_agent::plugin_api::EndpointKey>()
                        .is_ok(),
                    "an endpoint key does not read back: {key}"
                );
            }
        }
    }
    if let Some(text) = env.var("CNI_ARGS") {
        let _ = CniArgs::parse(text);
    }

    let echoed = echo_version(stdin);
    assert!(!echoed.is_empty() && echoed.len() <= 32);
    let Ok(request) = Request::decode(stdin) else {
        return;
    };
    let _ = request.version();
    let _ = gc_valid_attachments(&request);
    let del = DelConf::parse(&request);
    if let Ok(conf) = NetConf::parse(&request) {
        let del = del.expect("DEL refuses a config ADD accepts");
        assert!(
            del.warnings.is_empty(),
            "DEL warns about a config ADD accepts: {:?}",
            del.warnings
        );
        assert_eq!(del.network, Some(conf.network));
        assert_eq!(del.agent_socket.as_ref(), Some(&conf.agent_socket));
        assert_eq!(del.ipam, conf.ipam);
    }
});
