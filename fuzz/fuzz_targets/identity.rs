//! Identities in both forms: text (`FromStr`, "address:0:public[:secret]") and binary
//! (`Identity::parse`), and signature verification over attacker bytes.
//!
//! Properties, beyond "never panics": a parsed binary identity re-emits exactly the bytes it
//! was read from (with its secret if it had one); a parsed text identity prints a text that
//! parses to the same identity and prints the same again, secret included. No property here
//! runs the memory-hard validation: it is deliberately slow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_core::identity::Identity;

fn check_binary(bytes: &[u8]) {
    let Ok((identity, used)) = Identity::parse(bytes) else {
        return;
    };
    assert!(
        used <= bytes.len(),
        "parse used {used} of {} bytes",
        bytes.len()
    );
    let mut emitted = Vec::new();
    if identity.has_secret() {
        identity.emit_with_secret(&mut emitted);
    } else {
        identity.emit_public(&mut emitted);
    }
    assert_eq!(
        emitted,
        bytes[..used],
        "binary identity does not re-emit as read"
    );
    let (again, again_used) = Identity::parse(&emitted)
        .unwrap_or_else(|error| panic!("re-emitted identity does not parse: {error}"));
    assert_eq!(again_used, emitted.len());
    assert_eq!(again, identity);
    assert_eq!(again.secret_key(), identity.secret_key());

    // Verification over any message and signature bytes answers, never panics.
    let (message, signature) = bytes.split_at(bytes.len() / 2);
    let _ = identity.verify(message, signature);
}

fn check_text(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(identity) = text.parse::<Identity>() else {
        return;
    };
    let public = identity.to_string();
    let reparsed: Identity = public
        .parse()
        .unwrap_or_else(|error| panic!("printed identity {public:?} does not parse: {error}"));
    assert_eq!(reparsed, identity);
    assert!(
        !reparsed.has_secret(),
        "the public text form carried a secret"
    );
    assert_eq!(reparsed.to_string(), public);

    match identity.to_secret_string() {
        Some(secret) => {
            assert!(identity.has_secret());
            let reparsed: Identity = secret
                .parse()
                .unwrap_or_else(|error| panic!("printed secret identity does not parse: {error}"));
            assert_eq!(reparsed, identity);
            assert_eq!(reparsed.secret_key(), identity.secret_key());
            assert_eq!(
                reparsed.to_secret_string().as_deref(),
                Some(secret.as_str())
            );
        }
        None => assert!(!identity.has_secret()),
    }
}

fuzz_target!(|bytes: &[u8]| {
    check_binary(bytes);
    check_text(bytes);
});
