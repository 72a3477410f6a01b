//! The controller API's POST bodies (`/controller/network/<nwid>` and
//! `.../member/<address>`), applied to a controller as the local API does, then a config
//! request of the member, so that whatever a body stores is also read back by config
//! generation (rules, pools, routes, DNS, capabilities, tags).
//!
//! Input: up to 8 JSON bodies separated by NUL bytes (JSON holds none), posted in turn to
//! the network and to the member.
//!
//! Properties, beyond "never panics": a record the API returns, posted back, changes nothing
//! after one normalizing pass; a record loads back (as from `controller.d`) unchanged; a
//! config the controller signs reads back from its dictionary.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use node_core::controller::{Controller, RequestAnswer};
use node_core::time::Timestamp;
use node_core::vl2::config::NetworkConfig;
use node_core::vl2::NetworkId;
use node_core::Identity;
use serde_json::Value;

const MAX_BODIES: usize = 8;
const NOW: Timestamp = Timestamp(1_700_000_000_000);

/// The controller (with its secret) and the member, from the 1.14.1 capture.
fn identities() -> &'static (Identity, Identity) {
    static IDENTITIES: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDENTITIES.get_or_init(|| {
        let parse = |text: &str| text.trim().parse::<Identity>().expect("a capture identity");
        (
            parse(include_str!(
                "../../tests/data/capture-1.14.1/a.identity.secret"
            )),
            parse(include_str!(
                "../../tests/data/capture-1.14.1/b.identity.secret"
            )),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (controller_identity, member) = identities();
    let mut controller = Controller::new(controller_identity.clone(), 1);
    let network_id = NetworkId((controller.address().to_u64() << 24) | 0x00_0001);
    let address = member.address();

    for (index, body) in data.split(|&b| b == 0).take(MAX_BODIES).enumerate() {
        // An empty body is `{}`, as the API reads it.
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice(body) {
                Ok(body) => body,
                Err(_) => continue,
            }
        };
        if index % 2 == 0 {
            let first = controller.post_network(NOW, network_id, &body);
            let second = controller.post_network(NOW, network_id, &first);
            let third = controller.post_network(NOW, network_id, &second);
            assert_eq!(third, second, "a network record posted back changes");
        } else if let Some(first) = controller.post_member(NOW, network_id, address, &body) {
            let second = controller
                .post_member(NOW, network_id, address, &first)
                .expect("the network is there");
            let third = controller
                .post_member(NOW, network_id, address, &second)
                .expect("the network is there");
            assert_eq!(third, second, "a member record posted back changes");
        }
    }
    let _ = controller.take_changes();
    let _ = controller.take_pushes(NOW);

    // The records as the store writes and loads them.
    if let Some(network) = controller.network(network_id) {
        let mut loaded = Controller::new(controller_identity.clone(), 1);
        let loaded_id = loaded
            .load_network(network.clone())
            .expect("a network record loads");
        assert_eq!(loaded_id, network_id);
        assert_eq!(loaded.network(network_id), Some(network));
        if let Some(record) = controller.member(network_id, address) {
            loaded
                .load_member(record.clone())
                .expect("a member record loads");
            assert_eq!(loaded.member(network_id, address), Some(record));
        }
    }

    let public = member.public_only();
    if let RequestAnswer::Config(config) =
        controller.handle_request(NOW, network_id, &public, b"", None)
    {
        if let Ok(dictionary) = config.to_dictionary() {
            NetworkConfig::from_dictionary(&dictionary)
                .unwrap_or_else(|e| panic!("a config the controller signed does not read: {e}"));
        }
    }
});
