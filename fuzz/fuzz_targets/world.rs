//! Worlds (planets and moons) as `<home>/planet`, `moons.d/*.moon` and OK(HELLO) carry them.
//!
//! Properties, beyond "never panics": a parsed world re-emits `buffer_len()` bytes that parse
//! to the same world and re-emit to the same bytes; when the input was already in the form
//! 1.14 writes (no moon dictionary, no nil or reserved endpoints, no root secrets), the
//! re-emitted bytes are exactly the input's prefix that was parsed. Signature checks over any
//! world answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::world::World;

fuzz_target!(|bytes: &[u8]| {
    let Ok((world, used)) = World::parse(bytes) else {
        return;
    };
    assert!(
        used <= bytes.len(),
        "parse used {used} of {} bytes",
        bytes.len()
    );
    let mut emitted = Vec::new();
    world.emit(&mut emitted);
    assert_eq!(
        emitted.len(),
        world.buffer_len(),
        "buffer_len disagrees with emit"
    );

    let (again, again_used) = World::parse(&emitted)
        .unwrap_or_else(|error| panic!("re-emitted world does not parse: {error}"));
    assert_eq!(again_used, emitted.len());
    assert_eq!(again, world, "re-emitted world parses differently");
    let mut emitted_again = Vec::new();
    again.emit(&mut emitted_again);
    assert_eq!(emitted_again, emitted, "re-emit is not stable");

    // Only three things are normalised on the way through; without them, bytes are kept.
    if emitted.len() != used {
        assert!(
            emitted.len() < used,
            "re-emit grew the world from {used} to {} bytes",
            emitted.len()
        );
    } else {
        assert_eq!(
            emitted,
            bytes[..used],
            "a canonical world does not re-emit as read"
        );
    }

    let _ = world.verify_signature(&world.updates_must_be_signed_by);
    let _ = world.signing_message();
    let _ = world.should_be_replaced_by(&again);
});
