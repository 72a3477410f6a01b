//! The raw dictionary format of network configs and request metadata, on its own (the
//! netconfig target reads dictionaries only through the config on top of them).
//!
//! Properties, beyond "never panics": every entry read is written back by `add` (which
//! escapes) into a dictionary that reads as the same entries; lookups return the first entry
//! of a key; the typed getters answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::vl2::dictionary::{Dictionary, NETWORK_CONFIG_CAPACITY};

fuzz_target!(|bytes: &[u8]| {
    let dictionary = Dictionary::from_bytes(bytes, NETWORK_CONFIG_CAPACITY);
    assert!(dictionary.len() < NETWORK_CONFIG_CAPACITY);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = dictionary
        .iter()
        .map(|(key, value)| (key.to_vec(), value))
        .collect();
    for (key, _) in &entries {
        let first = entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        assert_eq!(
            dictionary.get(key),
            first,
            "a lookup is not the first entry"
        );
        let _ = (
            dictionary.u64(key),
            dictionary.i64(key),
            dictionary.bool(key),
        );
    }

    // Escaping at most doubles a value: this capacity always holds the rewrite.
    let mut rewritten = Dictionary::new(2 * bytes.len() + 2);
    for (key, value) in &entries {
        rewritten
            .add(key, value)
            .unwrap_or_else(|e| panic!("rewriting an entry: {e}"));
    }
    let reread = Dictionary::from_bytes(rewritten.as_bytes(), rewritten.capacity());
    let again: Vec<(Vec<u8>, Vec<u8>)> = reread
        .iter()
        .map(|(key, value)| (key.to_vec(), value))
        .collect();
    assert_eq!(again, entries, "rewritten entries read back differently");
});
