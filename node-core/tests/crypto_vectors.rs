//! Known-answer tests for crypto, identities and packet armor against the vectors of
//! zt-vl1.md Appendix A (selftest.cpp and the 1.14.1 C++ harness).

use node_core::crypto::armor::{armor, crypt_field, dearmor, CipherSuite, DearmorError, PeerKey};
use node_core::crypto::c25519::{self, KeyPair};
use node_core::crypto::poly1305::poly1305;
use node_core::crypto::salsa::{Salsa20, Salsa2012};
use node_core::crypto::{kbkdf_hmac_sha384, sha512};
use node_core::identity::{IdentityError, IDENTITY_PUBLIC_BINARY_LEN};
use node_core::{Address, Identity};
use rand_core::SeedableRng;
use serde_json::Value;

const SELFTEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/zt-vl1-selftest-vectors.json"
));
const PACKETS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/zt-vl1-packet-vectors.json"
));

/// The live-capture HELLO of zt-vl1.md A.2 (sent by a real 1.14.1 daemon, identity B → A).
const LIVE_HELLO: &str = "034d669e03217fa88e4df28b726d09ce149c0026817d3033c9f10a010c010e00\
01000001a20d8ef4ab6d09ce149c002b8777a181dffd9120095e3ac9c641c98b\
f81c4aeeb45c3fdde14d840c22d06702ca5fb8227a369afa11e437290b6d2912\
608bd9db239e46e64a8bab8cc27dc70004c00002029c39112233445566778800\
00018bcfe568004b7c";

fn selftest() -> Value {
    serde_json::from_str(SELFTEST).expect("selftest vectors parse")
}

fn packets() -> Value {
    serde_json::from_str(PACKETS).expect("packet vectors parse")
}

fn hex_of(v: &Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector {key} missing"));
    hex::decode(s).unwrap_or_else(|e| panic!("vector {key}: {e}"))
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    v.try_into()
        .unwrap_or_else(|_| panic!("expected {N} bytes, got {}", v.len()))
}

fn harness() -> Value {
    packets()["harness"].clone()
}

fn identity(name: &str) -> Identity {
    packets()["identities"][name]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn k_ab() -> PeerKey {
    PeerKey::from_secret(arr(&hex_of(&harness(), "K_AB")))
}

// ---- Primitives (A.1) -----------------------------------------------------------------------

#[test]
fn salsa20_and_salsa2012_keystreams() {
    let v = selftest();
    for (prefix, rounds) in [("s20TV0", 20), ("s2012TV0", 12)] {
        let key: [u8; 32] = arr(&hex_of(&v, &format!("{prefix}Key")));
        let iv: [u8; 8] = arr(&hex_of(&v, &format!("{prefix}Iv")));
        let expected = hex_of(&v, &format!("{prefix}Ks"));
        assert_eq!(expected.len(), 64);
        let mut ks = [0u8; 64];
        let mut xored = [0u8; 64];
        if rounds == 20 {
            Salsa20::new(&key, &iv).keystream(&mut ks);
            Salsa20::new(&key, &iv).apply_keystream(&mut xored);
        } else {
            Salsa2012::new(&key, &iv).keystream(&mut ks);
            Salsa2012::new(&key, &iv).apply_keystream(&mut xored);
        }
        assert_eq!(ks[..], expected[..], "{prefix}");
        assert_eq!(xored[..], expected[..], "{prefix} apply");
    }
}

#[test]
fn poly1305_tags() {
    let v = selftest();
    for i in 0..2 {
        let key: [u8; 32] = arr(&hex_of(&v, &format!("poly1305TV{i}Key")));
        let msg = hex_of(&v, &format!("poly1305TV{i}Input"));
        assert_eq!(
            poly1305(&key, &msg)[..],
            hex_of(&v, &format!("poly1305TV{i}Tag"))[..]
        );
    }
}

#[test]
fn sha512_vector() {
    let v = selftest();
    assert_eq!(
        sha512(b"supercalifragilisticexpealidocious")[..],
        hex_of(&v, "sha512TV0Digest")[..]
    );
    assert_eq!(
        sha512(identity("B").public_key())[..],
        hex_of(&harness(), "B.sha512_pub")[..]
    );
}

#[test]
fn all_32_c25519_vectors() {
    let v = selftest();
    let vectors = v["C25519_TEST_VECTORS"].as_array().unwrap();
    assert_eq!(vectors.len(), 32);
    for (n, tv) in vectors.iter().enumerate() {
        let pub1: [u8; 64] = arr(&hex_of(tv, "pub1"));
        let priv1: [u8; 64] = arr(&hex_of(tv, "priv1"));
        let pub2: [u8; 64] = arr(&hex_of(tv, "pub2"));
        let priv2: [u8; 64] = arr(&hex_of(tv, "priv2"));
        let agreement = hex_of(tv, "agreement");
        let sig1 = hex_of(tv, "agreementSignedBy1");
        let sig2 = hex_of(tv, "agreementSignedBy2");

        assert_eq!(KeyPair::from_secret(&priv1).public, pub1, "vector {n} pub1");
        assert_eq!(KeyPair::from_secret(&priv2).public, pub2, "vector {n} pub2");
        assert_eq!(
            c25519::agree(&priv1, &pub2)[..],
            agreement[..],
            "vector {n} agree 1→2"
        );
        assert_eq!(
            c25519::agree(&priv2, &pub1)[..],
            agreement[..],
            "vector {n} agree 2→1"
        );
        assert_eq!(
            c25519::sign(&priv1, &pub1, &agreement)[..],
            sig1[..],
            "vector {n} sig1"
        );
        assert_eq!(
            c25519::sign(&priv2, &pub2, &agreement)[..],
            sig2[..],
            "vector {n} sig2"
        );
        assert!(
            c25519::verify(&pub1, &agreement, &sig1),
            "vector {n} verify sig1"
        );
        assert!(
            c25519::verify(&pub2, &agreement, &sig2),
            "vector {n} verify sig2"
        );

        // Wrong key, wrong message, wrong length, and a flipped byte in each part.
        assert!(!c25519::verify(&pub2, &agreement, &sig1));
        assert!(!c25519::verify(&pub1, &agreement[1..], &sig1));
        assert!(!c25519::verify(&pub1, &agreement, &sig1[..95]));
        let mut longer = sig1.clone();
        longer.push(0);
        assert!(!c25519::verify(&pub1, &agreement, &longer));
        for pos in [0, 31, 32, 63, 64, 95, n * 3] {
            let mut bad = sig1.clone();
            bad[pos] ^= 0x01;
            assert!(
                !c25519::verify(&pub1, &agreement, &bad),
                "vector {n} flipped byte {pos}"
            );
        }
    }
}

// ---- Identities (A.1, A.2) ------------------------------------------------------------------

#[test]
fn known_good_and_bad_identities() {
    let v = selftest();
    let good: Identity = v["KNOWN_GOOD_IDENTITY"].as_str().unwrap().parse().unwrap();
    let bad: Identity = v["KNOWN_BAD_IDENTITY"].as_str().unwrap().parse().unwrap();
    assert!(good.locally_validate());
    assert!(!bad.locally_validate());
    assert_eq!(good.address(), Address::from_u64(0x8e4df28b72));
    assert_eq!(bad.address(), Address::from_u64(0x9e4df28b72));
}

#[test]
fn memory_hard_digests() {
    let h = harness();
    for name in ["A", "B"] {
        let id = identity(name);
        assert_eq!(
            Identity::memory_hard_hash(id.public_key())[..],
            hex_of(&h, &format!("{name}.mhh_digest"))[..],
            "{name}"
        );
        assert!(id.locally_validate(), "{name}");
    }
}

#[test]
fn serialization_round_trips() {
    let h = harness();
    let a = identity("A");
    let public = hex_of(&h, "A.serialized_public");
    let secret = hex_of(&h, "A.serialized_secret");

    let mut out = Vec::new();
    a.emit_public(&mut out);
    assert_eq!(out, public);
    assert_eq!(out.len(), IDENTITY_PUBLIC_BINARY_LEN);
    let mut out = Vec::new();
    a.emit_with_secret(&mut out);
    assert_eq!(out, secret);

    let (parsed, used) = Identity::parse(&public).unwrap();
    assert_eq!((used, parsed.has_secret()), (71, false));
    assert_eq!(parsed, a);
    let (parsed, used) = Identity::parse(&secret).unwrap();
    assert_eq!((used, parsed.secret_key()), (135, a.secret_key()));

    // Text round trip, both forms.
    let text = packets()["identities"]["A"].as_str().unwrap().to_owned();
    assert_eq!(a.to_secret_string().unwrap(), text);
    let public_text = a.to_string();
    assert_eq!(public_text, text[..text.rfind(':').unwrap()]);
    let reparsed: Identity = public_text.parse().unwrap();
    assert_eq!(reparsed, a);
    assert!(!reparsed.has_secret());
    assert_eq!(reparsed.to_secret_string(), None);
    assert_eq!(a.public_only(), a);
    assert!(!a.public_only().has_secret());
    assert!(a.public_only().agree(&a).is_none());
    assert!(a.public_only().sign(b"x").is_none());

    assert!(matches!(
        Identity::parse(&public[..70]),
        Err(IdentityError::Truncated { .. })
    ));
}

#[test]
fn agreement_and_kbkdf() {
    let h = harness();
    let a = identity("A");
    let b = identity("B");
    let k_ab = a.agree(&b).unwrap();
    let k_ba = b.agree(&a).unwrap();
    assert_eq!(k_ab.secret()[..], hex_of(&h, "K_AB")[..]);
    assert_eq!(k_ba.secret(), k_ab.secret());
    let k: [u8; 48] = *k_ab.secret();
    assert_eq!(
        kbkdf_hmac_sha384(&k, b'0')[..],
        hex_of(&h, "KBKDF_K0_48")[..]
    );
    assert_eq!(
        kbkdf_hmac_sha384(&k, b'1')[..],
        hex_of(&h, "KBKDF_K1_48")[..]
    );
}

#[test]
fn sign_hello() {
    let h = harness();
    let a = identity("A");
    let sig = a.sign(b"hello").unwrap();
    assert_eq!(sig[..], hex_of(&h, "A.sign_hello")[..]);
    assert!(a.verify(b"hello", &sig));
    assert!(a.public_only().verify(b"hello", &sig));
    assert!(!a.verify(b"hellp", &sig));
    assert!(!identity("B").verify(b"hello", &sig));
    let mut bad = sig;
    bad[10] ^= 0x80;
    assert!(!a.verify(b"hello", &bad));
}

#[test]
fn generate_with_seeded_rng_is_valid_and_deterministic() {
    let start = std::time::Instant::now();
    let id = Identity::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(0x5eed));
    let elapsed = start.elapsed();
    eprintln!("Identity::generate took {elapsed:?}");
    assert!(id.has_secret());
    assert!(id.locally_validate());
    assert!(!id.address().is_reserved());
    let again = Identity::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(0x5eed));
    assert_eq!(again, id);
    assert_eq!(again.secret_key(), id.secret_key());
    // The secret text form round-trips and signs/agrees like the original.
    let reparsed: Identity = id.to_secret_string().unwrap().parse().unwrap();
    assert_eq!(reparsed.secret_key(), id.secret_key());
    let sig = reparsed.sign(b"msg").unwrap();
    assert!(id.verify(b"msg", &sig));
    let other = identity("A");
    assert_eq!(
        id.agree(&other).unwrap().secret(),
        other.agree(&id).unwrap().secret()
    );
    assert_eq!(
        Identity::from_secret_key(id.secret_key().unwrap()).unwrap(),
        id
    );
}

#[test]
fn generate_with_os_rng() {
    let id = Identity::generate(&mut rand_core::OsRng);
    assert!(id.locally_validate());
}

// ---- Packet armor (A.2) ---------------------------------------------------------------------

#[test]
fn hello_crypt_field_then_cipher0() {
    let h = harness();
    let inter = &packets()["intermediates"];
    let key = k_ab();
    let start = h["HELLO.crypt_start"]
        .as_str()
        .unwrap()
        .parse::<usize>()
        .unwrap();
    assert_eq!(start, 135);
    let plain = hex_of(&h, "HELLO.plain");
    let mut p = plain.clone();

    crypt_field(&key, &mut p, start);
    assert_eq!(p, hex_of(&h, "HELLO.after_cryptField"));
    let keystream: Vec<u8> = p[start..]
        .iter()
        .zip(&plain[start..])
        .map(|(a, b)| a ^ b)
        .collect();
    assert_eq!(keystream, hex_of(inter, "HELLO.cryptField_keystream"));

    armor(&mut p, &key, CipherSuite::Poly1305);
    let wire = hex_of(&h, "HELLO.wire");
    assert_eq!(p, wire);
    assert_eq!(p[19..27], hex_of(inter, "HELLO.poly1305_tag16")[..8]);

    let mut received = wire.clone();
    assert_eq!(dearmor(&mut received, &key), Ok(CipherSuite::Poly1305));
    assert_eq!(received, wire, "cipher 0 does not change the packet");
    crypt_field(&key, &mut received, start);
    assert_eq!(received[27..], plain[27..]);

    let mut hello2 = hex_of(&h, "HELLO2.wire");
    assert_eq!(dearmor(&mut hello2, &key), Ok(CipherSuite::Poly1305));
    // The other direction's key is the same K.
    let mut hello2 = hex_of(&h, "HELLO2.wire");
    let k_ba = identity("B").agree(&identity("A")).unwrap();
    assert_eq!(dearmor(&mut hello2, &k_ba), Ok(CipherSuite::Poly1305));
}

#[test]
fn live_capture_hello_dearmors() {
    let key = k_ab();
    let wire = hex::decode(LIVE_HELLO).unwrap();
    let mut p = wire.clone();
    assert_eq!(dearmor(&mut p, &key), Ok(CipherSuite::Poly1305));
    // The cryptField-encrypted tail is the 2-byte moon count, zero.
    let start = p.len() - 2;
    crypt_field(&key, &mut p, start);
    assert_eq!(p[start..], [0, 0]);
    let mut tampered = wire;
    tampered[40] ^= 1;
    assert_eq!(dearmor(&mut tampered, &key), Err(DearmorError::MacMismatch));
}

#[test]
fn ok_hello_cipher1() {
    let h = harness();
    let key = k_ab();
    let mut p = hex_of(&h, "OKHELLO.plain");
    armor(&mut p, &key, CipherSuite::Salsa2012Poly1305);
    let wire = hex_of(&h, "OKHELLO.wire_c1");
    assert_eq!(p, wire);
    assert_eq!(p[18], 0x88);
    let mut received = wire;
    assert_eq!(
        dearmor(&mut received, &key),
        Ok(CipherSuite::Salsa2012Poly1305)
    );
    assert_eq!(received, hex_of(&h, "OKHELLO.decrypted"));
}

#[test]
fn echo_cipher3() {
    let h = harness();
    let key = k_ab();
    let mut p = hex_of(&h, "ECHO.plain");
    armor(&mut p, &key, CipherSuite::AesGmacSiv);
    let wire = hex_of(&h, "ECHO.wire_c3");
    assert_eq!(p, wire);
    assert_eq!(p[18], 0x18);

    let mut received = wire.clone();
    assert_eq!(dearmor(&mut received, &key), Ok(CipherSuite::AesGmacSiv));
    assert_eq!(received, hex_of(&h, "ECHO.decrypted"));

    let mut hops1 = wire.clone();
    hops1[18] = 0x19;
    assert_eq!(dearmor(&mut hops1, &key), Ok(CipherSuite::AesGmacSiv));
    assert_eq!(hops1[27..], hex_of(&h, "ECHO.decrypted")[27..]);

    let mut flipped = wire.clone();
    flipped[30] ^= 0x01;
    assert_eq!(dearmor(&mut flipped, &key), Err(DearmorError::MacMismatch));
    let mut original = wire.clone();
    original[30] ^= 0x01;
    assert_eq!(
        flipped, original,
        "failed dearmor leaves the packet as received"
    );
}

#[test]
fn user_message_cipher3() {
    let h = harness();
    let key = k_ab();
    let plain = hex_of(&h, "UM.plain");
    let mut p = plain.clone();
    armor(&mut p, &key, CipherSuite::AesGmacSiv);
    let wire = hex_of(&h, "UM.wire_c3");
    assert_eq!(p, wire);
    let mut received = wire;
    assert_eq!(dearmor(&mut received, &key), Ok(CipherSuite::AesGmacSiv));
    assert_eq!(received[27..], plain[27..]);
    assert_eq!(received[8..18], plain[8..18]);
}

#[test]
fn compressed_user_message_cipher1() {
    let h = harness();
    let key = k_ab();
    let plain = hex_of(&h, "CMP.compressed_plain");
    let mut p = plain.clone();
    armor(&mut p, &key, CipherSuite::Salsa2012Poly1305);
    let wire = hex_of(&h, "CMP.wire_c1");
    assert_eq!(p, wire);
    let mut received = wire;
    assert_eq!(
        dearmor(&mut received, &key),
        Ok(CipherSuite::Salsa2012Poly1305)
    );
    assert_eq!(received[27..], plain[27..]);
}

#[test]
fn fragmented_packet_cipher1() {
    let h = harness();
    let key = k_ab();
    // Rebuild the 186-byte plaintext of A.2 "Fragmentation": USER_MESSAGE B←A, type ID
    // 1234567890abcdef, data byte i = 7·i mod 256, head flag 0x40 set before armor.
    let mut p = Vec::new();
    p.extend_from_slice(&[0x33; 8]);
    p.extend_from_slice(&identity("B").address().to_bytes());
    p.extend_from_slice(&identity("A").address().to_bytes());
    p.push(0x40);
    p.extend_from_slice(&[0; 8]);
    p.push(0x14);
    p.extend_from_slice(&0x1234_5678_90ab_cdef_u64.to_be_bytes());
    p.extend((0..150u32).map(|i| (7 * i % 256) as u8));
    assert_eq!(p.len(), 186);
    let plain = p.clone();

    armor(&mut p, &key, CipherSuite::Salsa2012Poly1305);
    let wire = hex_of(&h, "FRAG.full_wire");
    assert_eq!(p, wire);
    assert_eq!(p[18], 0xc8);
    assert_eq!(wire[..100], hex_of(&h, "FRAG.head")[..]);

    let mut received = wire;
    assert_eq!(
        dearmor(&mut received, &key),
        Ok(CipherSuite::Salsa2012Poly1305)
    );
    assert_eq!(received[27..], plain[27..]);
}

#[test]
fn dearmor_rejects_trusted_path_and_undefined_ciphers() {
    let key = k_ab();
    let mut wire = hex_of(&harness(), "ECHO.wire_c3");
    for cipher in [2u8, 4, 5, 6, 7] {
        wire[18] = cipher << 3;
        assert_eq!(
            dearmor(&mut wire, &key),
            Err(DearmorError::UnsupportedCipher(cipher))
        );
    }
    assert_eq!(dearmor(&mut wire[..27], &key), Err(DearmorError::TooShort));
    assert_eq!(dearmor(&mut [], &key), Err(DearmorError::TooShort));
}
