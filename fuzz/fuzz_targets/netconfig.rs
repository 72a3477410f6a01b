//! The network config dictionary as NETWORK_CONFIG chunks carry it, and the request metadata
//! dictionary of NETWORK_CONFIG_REQUEST.
//!
//! Properties, beyond "never panics": a config that reads writes out as a dictionary that
//! reads back; after one such pass (which normalises what 1.14 does not write back), reading
//! and writing change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::vl2::config::{NetworkConfig, RequestMetadata};
use node_core::vl2::dictionary::{Dictionary, METADATA_CAPACITY, NETWORK_CONFIG_CAPACITY};

fuzz_target!(|bytes: &[u8]| {
    let _ = RequestMetadata::from_dictionary(&Dictionary::from_bytes(bytes, METADATA_CAPACITY));

    let dictionary = Dictionary::from_bytes(bytes, NETWORK_CONFIG_CAPACITY);
    for (key, value) in dictionary.iter() {
        assert!(dictionary.contains(key), "iterated key not found");
        let _ = value;
    }
    let Ok(config) = NetworkConfig::from_dictionary(&dictionary) else {
        return;
    };
    let Ok(written) = config.to_dictionary() else {
        return;
    };
    // One pass normalises what 1.14 itself does not write back (lossy names, SSO versions
    // other than 0 and 1, which it reads but does not write); after that, nothing changes.
    let normalized = NetworkConfig::from_dictionary(&written)
        .unwrap_or_else(|e| panic!("a config we wrote does not read back: {e}"));
    let rewritten = normalized
        .to_dictionary()
        .unwrap_or_else(|e| panic!("a config we read back does not write: {e}"));
    let again = NetworkConfig::from_dictionary(&rewritten)
        .unwrap_or_else(|e| panic!("a normalized config does not read back: {e}"));
    assert_eq!(
        again, normalized,
        "a normalized config reads back differently"
    );
    let rewritten_again = again
        .to_dictionary()
        .unwrap_or_else(|e| panic!("a normalized config does not write: {e}"));
    assert_eq!(
        rewritten_again.as_bytes(),
        rewritten.as_bytes(),
        "writing a normalized config is not stable"
    );
});
