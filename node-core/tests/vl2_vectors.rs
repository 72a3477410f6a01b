//! VL2 known-answer vectors (tests/data/zt-vl2-vectors.json, generated from ZeroTier One
//! 1.14.1): every vector is parsed and re-emitted byte for byte, credentials are re-signed
//! (signing is deterministic) and verified, and every parser rejects truncations and
//! survives random input.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use node_core::vl2::config::{ConfigError, NetworkConfig, NetworkType, RequestMetadata};
use node_core::vl2::credentials::{
    public_key_hash, Capability, CertificateOfMembership, CertificateOfOwnership, CredentialType,
    Revocation, Tag, Thing,
};
use node_core::vl2::dictionary::{Dictionary, NETWORK_CONFIG_CAPACITY};
use node_core::vl2::network::{rfc4193_address, sixplane_address, Mac, MulticastGroup, NetworkId};
use node_core::vl2::rules::{self, Rule, RuleKind};
use node_core::vl2::{DecodeError, VerifyError};
use node_core::{Address, Identity};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/zt-vl2-vectors.json"
));

const NWID: NetworkId = NetworkId(0x8e4d_f28b_7212_3456);
const TS: i64 = 1_700_000_000_000;
const CTMD: u64 = 1_800_000;
const FUZZ_SEED: u64 = 0x5eed_0002;

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("vector file is JSON")
}

fn hex_vector(key: &str) -> Vec<u8> {
    let v = vectors();
    let s = v["hex"][key]
        .as_str()
        .unwrap_or_else(|| panic!("missing hex vector {key}"));
    hex::decode(s).expect("hex")
}

fn payload_example(prefix: &str) -> Vec<u8> {
    let v = vectors();
    let map = v["packet_payload_examples"].as_object().expect("object");
    let (_, s) = map
        .iter()
        .find(|(k, _)| k.starts_with(prefix))
        .unwrap_or_else(|| panic!("missing payload example {prefix}"));
    hex::decode(s.as_str().expect("string")).expect("hex")
}

fn text_lines() -> Vec<String> {
    vectors()["text"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

fn identity_from_text(prefix: &str) -> Identity {
    let line = text_lines()
        .into_iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("missing {prefix}"));
    let (_, id) = line.split_once(": ").expect("colon");
    Identity::from_str(id).expect("identity")
}

fn controller() -> Identity {
    identity_from_text("controller identity (secret)")
}

fn member() -> Identity {
    identity_from_text("member identity (secret)")
}

fn member_public() -> Identity {
    identity_from_text("member identity (public)")
}

/// Every strict prefix of `bytes` must be rejected by `parse`.
fn assert_truncations_rejected<T: core::fmt::Debug>(
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    for len in 0..bytes.len() {
        assert!(
            parse(&bytes[..len]).is_err(),
            "a {len}-byte prefix of a {}-byte structure parsed",
            bytes.len()
        );
    }
}

/// Random inputs (and random mutations of `seed`) never panic; returns how many parsed.
fn fuzz<T>(seed: &[u8], parse: impl Fn(&[u8]) -> Result<T, DecodeError>) -> usize {
    let mut rng = ChaCha20Rng::seed_from_u64(FUZZ_SEED);
    let mut parsed = 0;
    for i in 0..3000 {
        let input = if i % 2 == 0 || seed.is_empty() {
            let len = (rng.next_u32() % 300) as usize;
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            b
        } else {
            let mut b = seed.to_vec();
            for _ in 0..1 + rng.next_u32() % 4 {
                let at = rng.next_u32() as usize % b.len();
                b[at] = rng.next_u32() as u8;
            }
            b.truncate(rng.next_u32() as usize % (seed.len() + 1) + seed.len() / 2);
            b
        };
        if parse(&input).is_ok() {
            parsed += 1;
        }
    }
    parsed
}

// ---------------------------------------------------------------------------------------
// Dictionary
// ---------------------------------------------------------------------------------------

#[test]
fn dictionary_example_emits_and_reads_back() {
    let raw = hex_vector("dictionary example raw");
    let b_value = hex_vector("get(B)");
    let mut d = Dictionary::new(NETWORK_CONFIG_CAPACITY);
    d.add(b"a", b"hello").unwrap();
    d.add(b"B", &b_value).unwrap();
    d.add_u64(b"n", 0x1234).unwrap();
    d.add_i64(b"neg", -5).unwrap();
    d.add_bool(b"t", true).unwrap();
    assert_eq!(hex::encode(d.as_bytes()), hex::encode(&raw));

    let parsed = Dictionary::from_bytes(&raw, NETWORK_CONFIG_CAPACITY);
    assert_eq!(parsed.get(b"a"), Some(b"hello".to_vec()));
    assert_eq!(parsed.get(b"B"), Some(b_value.clone()));
    // "getUI(n)=1234 getI(neg)=5 getB(t)=1"
    assert_eq!(parsed.u64(b"n"), Some(0x1234));
    assert_eq!(parsed.i64(b"neg"), Some(5));
    assert_eq!(parsed.bool(b"t"), Some(true));
    assert_eq!(parsed.get(b"missing"), None);
    assert_eq!(parsed.get(b"ne"), None, "a key prefix is not a key");
    let keys: Vec<&[u8]> = parsed.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&b"a"[..], b"B", b"n", b"neg", b"t"]);
}

#[test]
fn dictionary_reading_quirks_match_1_14() {
    // Unknown escapes yield the byte, a value ends at CR, text after NUL is invisible,
    // an unescaped '=' inside a value is literal, the first duplicate wins.
    let d = Dictionary::from_bytes(b"k=a\\qb=c\\\rx=1\nk=2\ny=\x00z=3", 4096);
    assert_eq!(d.get(b"k"), Some(b"aqb=c".to_vec()));
    assert_eq!(d.get(b"x"), Some(b"1".to_vec()));
    assert_eq!(d.get(b"y"), Some(b"".to_vec()));
    assert_eq!(d.u64(b"y"), None, "empty integers read as absent");
    assert_eq!(d.get(b"z"), None);
    // Capacity C holds C-1 bytes.
    let d = Dictionary::from_bytes(b"k=0123456789", 6);
    assert_eq!(d.as_bytes(), b"k=012");
    let mut d = Dictionary::new(6);
    assert!(d.add(b"k", b"012").is_ok());
    assert!(d.add(b"j", b"").is_err());
}

#[test]
fn dictionary_round_trips_every_byte_and_survives_random_input() {
    let mut rng = ChaCha20Rng::seed_from_u64(FUZZ_SEED);
    for _ in 0..2000 {
        let mut d = Dictionary::new(NETWORK_CONFIG_CAPACITY);
        let mut entries = Vec::new();
        for i in 0..(rng.next_u32() % 8) {
            let mut value = vec![0u8; (rng.next_u32() % 40) as usize];
            rng.fill_bytes(&mut value);
            let key = format!("{:08x}", i ^ rng.next_u32());
            d.add(key.as_bytes(), &value).unwrap();
            entries.push((key, value));
        }
        assert!(!d.as_bytes().contains(&0));
        let back = Dictionary::from_bytes(d.as_bytes(), NETWORK_CONFIG_CAPACITY);
        for (key, _) in &entries {
            // The first entry of a key wins.
            let first = entries.iter().find(|(k, _)| k == key).unwrap();
            assert_eq!(back.get(key.as_bytes()).as_ref(), Some(&first.1));
        }
        let mut garbage = vec![0u8; (rng.next_u32() % 200) as usize];
        rng.fill_bytes(&mut garbage);
        let g = Dictionary::from_bytes(&garbage, 128);
        let _ = (g.get(b"a"), g.u64(b"nwid"), g.i64(b"x"), g.iter().count());
    }
}

// ---------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------

#[test]
fn member_public_key_hash() {
    assert_eq!(
        public_key_hash(&member()).to_vec(),
        hex_vector("member publicKeyHash SHA384(addr5||pub64)")
    );
}

#[test]
fn com_builds_signs_and_parses_byte_exact() {
    let mut com = CertificateOfMembership::new(TS as u64, CTMD, NWID, &member_public());
    let mut unsigned = Vec::new();
    com.emit(&mut unsigned);
    assert_eq!(
        hex::encode(&unsigned),
        hex::encode(hex_vector("COM unsigned serialized"))
    );
    assert_eq!(
        com.signing_input(),
        hex_vector("COM signing input (qualifier tuples, big-endian)")
    );
    com.sign(&controller()).unwrap();
    let signed = hex_vector("COM signed serialized");
    let mut out = Vec::new();
    com.emit(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&signed));
    assert_eq!(com.buffer_len(), signed.len());

    let (parsed, used) = CertificateOfMembership::parse(&signed).unwrap();
    assert_eq!(used, signed.len());
    assert_eq!(parsed, com);
    assert_eq!(parsed.network_id(), NWID);
    assert_eq!(parsed.issued_to(), member().address());
    assert_eq!(parsed.timestamp(), TS as u64);
    assert_eq!(parsed.verify(&controller()), Ok(()));
    assert!(matches!(
        parsed.verify(&member()),
        Err(VerifyError::WrongIdentity { .. })
    ));
    let mut tampered = parsed.clone();
    tampered.qualifiers[0].value += 1;
    assert_eq!(
        tampered.verify(&controller()),
        Err(VerifyError::BadSignature)
    );

    assert_truncations_rejected(&signed, CertificateOfMembership::parse);
    assert_truncations_rejected(&unsigned, CertificateOfMembership::parse);
    fuzz(&signed, CertificateOfMembership::parse);
}

#[test]
fn com_agreement_follows_max_delta_and_identity_hash() {
    // selftest testCertificate: ts 10000 ± 100 agrees with 10099, not with 10101.
    let a_id = member();
    let b_id = controller();
    let com = |ts: u64, who: &Identity| CertificateOfMembership::new(ts, 100, NetworkId(1), who);
    let ours = com(10_000, &a_id);
    assert!(ours.agrees_with(&com(10_099, &b_id), &b_id));
    assert!(com(10_099, &b_id).agrees_with(&ours, &a_id));
    assert!(!ours.agrees_with(&com(10_101, &b_id), &b_id));
    assert!(!com(10_101, &b_id).agrees_with(&ours, &a_id));
    // Their COM must be issued to their identity.
    assert!(!ours.agrees_with(&com(10_000, &a_id), &b_id));
    // Different network.
    let other = CertificateOfMembership::new(10_000, 100, NetworkId(2), &b_id);
    assert!(!ours.agrees_with(&other, &b_id));
    // No qualifiers on either side.
    let empty = CertificateOfMembership {
        qualifiers: vec![],
        signed_by: Address::NIL,
        signature: [0; 96],
    };
    assert!(!ours.agrees_with(&empty, &b_id));
    assert!(!empty.agrees_with(&ours, &a_id));
}

#[test]
fn tag_signs_and_parses_byte_exact() {
    let mut tag = Tag::new(NWID, TS, member().address(), 1000, 42);
    tag.sign(&controller()).unwrap();
    assert_eq!(tag.signing_input(), hex_vector("Tag signing input"));
    let wire = hex_vector("Tag serialized");
    let mut out = Vec::new();
    tag.emit(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&wire));
    assert_eq!(tag.buffer_len(), wire.len());
    let (parsed, used) = Tag::parse(&wire).unwrap();
    assert_eq!((parsed.clone(), used), (tag, wire.len()));
    assert_eq!(parsed.verify(&controller()), Ok(()));
    let mut forged = parsed.clone();
    forged.value = 43;
    assert_eq!(forged.verify(&controller()), Err(VerifyError::BadSignature));
    assert_truncations_rejected(&wire, Tag::parse);
    fuzz(&wire, Tag::parse);
}

#[test]
fn capability_signs_and_parses_byte_exact() {
    let rules = vec![
        Rule::new(RuleKind::Ethertype(0x0800)),
        Rule::new(RuleKind::IpDestPortRange { start: 22, end: 22 }).ored(),
        Rule::new(RuleKind::Accept),
    ];
    let mut cap = Capability::new(NWID, TS, 7, rules);
    assert_eq!(cap.signing_input(), hex_vector("Capability signing input"));
    cap.sign(&controller(), member().address()).unwrap();
    let wire = hex_vector("Capability serialized");
    let mut out = Vec::new();
    cap.emit(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&wire));
    assert_eq!(cap.buffer_len(), wire.len());
    let (parsed, used) = Capability::parse(&wire).unwrap();
    assert_eq!((parsed.clone(), used), (cap.clone(), wire.len()));
    let ctl = controller();
    assert_eq!(
        parsed.verify(|a| (a == ctl.address()).then_some(&ctl)),
        Ok(())
    );
    assert_eq!(
        parsed.verify(|_| None),
        Err(VerifyError::MissingIdentity(ctl.address()))
    );
    // The chain is full at its maximum length 1.
    assert!(cap
        .sign(&member(), Address::from_u64(0x0123456789))
        .is_err());
    assert_truncations_rejected(&wire, Capability::parse);
    fuzz(&wire, Capability::parse);
}

#[test]
fn coo_signs_and_parses_byte_exact() {
    let mut coo = CertificateOfOwnership::new(NWID, TS, member().address(), 1);
    coo.things.push(Thing::ipv4(Ipv4Addr::new(10, 147, 17, 5)));
    coo.things
        .push(Thing::ipv6(rfc4193_address(NWID, member().address())));
    coo.sign(&controller()).unwrap();
    assert_eq!(coo.signing_input(), hex_vector("COO signing input"));
    let wire = hex_vector("COO serialized");
    let mut out = Vec::new();
    coo.emit(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&wire));
    assert_eq!(coo.buffer_len(), wire.len());
    let (parsed, used) = CertificateOfOwnership::parse(&wire).unwrap();
    assert_eq!((parsed.clone(), used), (coo, wire.len()));
    assert_eq!(parsed.verify(&controller()), Ok(()));
    assert!(parsed.owns(&Thing::ipv4(Ipv4Addr::new(10, 147, 17, 5))));
    assert!(!parsed.owns(&Thing::ipv4(Ipv4Addr::new(10, 147, 17, 6))));
    assert!(!parsed.owns(&Thing::mac(Mac([10, 147, 17, 5, 0, 0]))));
    assert_truncations_rejected(&wire, CertificateOfOwnership::parse);
    fuzz(&wire, CertificateOfOwnership::parse);
}

#[test]
fn revocation_signs_and_parses_byte_exact() {
    let mut rev = Revocation::new(
        0x1122_3344,
        NWID,
        0,
        TS,
        1,
        member().address(),
        CredentialType::CertificateOfMembership,
    );
    rev.sign(&controller()).unwrap();
    assert_eq!(rev.signing_input(), hex_vector("Revocation signing input"));
    let wire = hex_vector("Revocation serialized");
    let mut out = Vec::new();
    rev.emit(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&wire));
    assert_eq!(rev.buffer_len(), wire.len());
    let (parsed, used) = Revocation::parse(&wire).unwrap();
    assert_eq!((parsed.clone(), used), (rev, wire.len()));
    assert_eq!(parsed.verify(&controller()), Ok(()));
    // A revocation signed by someone other than the controller does not verify.
    let mut rogue = parsed.clone();
    rogue.sign(&member()).unwrap();
    assert!(matches!(
        rogue.verify(&member()),
        Err(VerifyError::NotController { .. })
    ));
    assert_truncations_rejected(&wire, Revocation::parse);
    fuzz(&wire, Revocation::parse);
}

// ---------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------

fn expected_rules() -> Vec<Rule> {
    use node_core::vl2::rules::{Forward, IntegerRange, Ipv4Match, Ipv6Match, TagMatch};
    let fwd = |a: u64, length: u16| Forward {
        address: Address::from_u64(a),
        flags: 0,
        length,
    };
    vec![
        Rule::new(RuleKind::SourceZeroTierAddress(Address::from_u64(
            0x0123456789,
        ))),
        Rule::new(RuleKind::DestZeroTierAddress(Address::from_u64(
            0xaabbccddee,
        )))
        .negated(),
        Rule::new(RuleKind::VlanId(0x123)),
        Rule::new(RuleKind::VlanPcp(5)),
        Rule::new(RuleKind::VlanDei(1)),
        Rule::new(RuleKind::MacSource(Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55]))),
        Rule::new(RuleKind::MacDest(Mac::BROADCAST)),
        Rule::new(RuleKind::Ipv4Source(Ipv4Match {
            ip: Ipv4Addr::new(10, 0, 0, 0),
            prefix_bits: 8,
        })),
        Rule::new(RuleKind::Ipv4Dest(Ipv4Match {
            ip: Ipv4Addr::new(192, 168, 1, 1),
            prefix_bits: 32,
        })),
        Rule::new(RuleKind::Ipv6Source(Ipv6Match {
            ip: "fd00::".parse().unwrap(),
            prefix_bits: 8,
        })),
        Rule::new(RuleKind::Ipv6Dest(Ipv6Match {
            ip: "2001:db8::1".parse().unwrap(),
            prefix_bits: 128,
        })),
        Rule::new(RuleKind::IpTos {
            mask: 0xfc,
            start: 0x10,
            end: 0x20,
        }),
        Rule::new(RuleKind::IpProtocol(6)),
        Rule::new(RuleKind::Ethertype(0x86dd)),
        Rule::new(RuleKind::Icmp {
            icmp_type: 8,
            code: 0,
            flags: 1,
        }),
        Rule::new(RuleKind::IpSourcePortRange {
            start: 1024,
            end: 65535,
        }),
        Rule::new(RuleKind::IpDestPortRange { start: 80, end: 80 }).ored(),
        Rule::new(RuleKind::Characteristics(0x8000_0000_0000_0002)),
        Rule::new(RuleKind::FrameSizeRange {
            start: 64,
            end: 1500,
        }),
        Rule::new(RuleKind::Random(0x7fff_ffff)),
        Rule::new(RuleKind::TagsDifference(TagMatch { id: 1000, value: 3 })),
        Rule::new(RuleKind::TagSender(TagMatch {
            id: 1000,
            value: 42,
        })),
        Rule::new(RuleKind::IntegerRange(IntegerRange {
            start: 100,
            end: 150,
            index: 14,
            format: 0x0f,
        })),
        Rule::new(RuleKind::Tee(fwd(0xaabbccddee, 128))),
        Rule::new(RuleKind::Watch(fwd(0xaabbccddee, 0))),
        Rule::new(RuleKind::Redirect(fwd(0x1122334455, 0))),
        Rule::new(RuleKind::Priority),
        Rule::new(RuleKind::Break),
        Rule::new(RuleKind::Drop),
        Rule::new(RuleKind::Accept),
    ]
}

#[test]
fn rule_encodings_match_1_14() {
    let v = vectors();
    let hex_map = v["hex"].as_object().unwrap();
    let expected = expected_rules();
    let mut all = Vec::new();
    for (i, rule) in expected.iter().enumerate() {
        let prefix = format!("rule[{i}] ");
        let (_, wire) = hex_map
            .iter()
            .find(|(k, _)| k.starts_with(&prefix))
            .unwrap();
        let wire = hex::decode(wire.as_str().unwrap()).unwrap();
        let (parsed, used) = Rule::parse(&wire).unwrap();
        assert_eq!(parsed, *rule, "rule[{i}]");
        assert_eq!(used, wire.len());
        let mut out = Vec::new();
        rule.emit(&mut out);
        assert_eq!(hex::encode(&out), hex::encode(&wire), "rule[{i}]");
        assert_eq!(rule.buffer_len(), wire.len());
        assert_truncations_rejected(&wire, Rule::parse);
        all.extend_from_slice(&wire);
    }
    assert_eq!(expected.len(), 30);
    assert_eq!(rules::parse_rules(&all).unwrap(), expected);
    fuzz(&all, rules::parse_rules);
}

#[test]
fn rule_lengths_unknown_types_and_short_fields() {
    // An unknown type is skipped by its length and written back with an empty field.
    let (rule, used) = Rule::parse(&[0x3f, 0x02, 0xaa, 0xbb]).unwrap();
    assert_eq!((rule, used), (Rule::new(RuleKind::Unknown(0x3f)), 4));
    // A longer field than the layout is skipped; a shorter one is an error.
    let (rule, used) = Rule::parse(&[0x25, 0x03, 0x08, 0x00, 0xff]).unwrap();
    assert_eq!((rule, used), (Rule::new(RuleKind::Ethertype(0x0800)), 5));
    assert!(matches!(
        Rule::parse(&[0x25, 0x01, 0x08, 0x00]),
        Err(DecodeError::RuleFieldLength { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Addressing
// ---------------------------------------------------------------------------------------

fn parse_mac(s: &str) -> Mac {
    let mut m = [0u8; 6];
    for (b, part) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    Mac(m)
}

#[test]
fn mac_derivation_table() {
    let mut checked = 0;
    for line in text_lines() {
        let Some(rest) = line.strip_prefix("MAC(addr=") else {
            continue;
        };
        let addr: Address = rest[..10].parse().unwrap();
        let nwid: NetworkId = rest[16..32].parse().unwrap();
        let mac = parse_mac(&rest[36..53]);
        assert_eq!(Mac::from_address(addr, nwid), mac, "{line}");
        assert_eq!(mac.to_address(nwid), addr, "{line}");
        assert!(mac.is_member_mac(nwid));
        assert!(!mac.is_multicast());
        checked += 1;
    }
    assert_eq!(checked, 17);
    assert_eq!(NWID.controller(), Address::from_u64(0x8e4df28b72));
    assert_eq!(NWID.to_string(), "8e4df28b72123456");
}

#[test]
fn managed_ipv6_and_groups() {
    let mut checked = 0;
    for line in text_lines() {
        let Some(rest) = line.strip_prefix("rfc4193(nwid=") else {
            continue;
        };
        let nwid: NetworkId = rest[..16].parse().unwrap();
        let addr: Address = rest[22..32].parse().unwrap();
        let (_, values) = line.split_once(") = ").unwrap();
        let (rfc, six) = values.split_once(" ; 6plane = ").unwrap();
        let rfc: Ipv6Addr = rfc.trim_end_matches("/88").parse().unwrap();
        let six: Ipv6Addr = six.trim_end_matches("/40").parse().unwrap();
        assert_eq!(rfc4193_address(nwid, addr), rfc);
        assert_eq!(sixplane_address(nwid, addr), six);
        checked += 1;
    }
    assert_eq!(checked, 4);
    let arp = MulticastGroup::ipv4_arp(Ipv4Addr::new(10, 147, 17, 5));
    assert_eq!((arp.mac, arp.adi), (Mac::BROADCAST, 0x0a93_1105));
    let ndp = MulticastGroup::ipv6_solicited_node(
        "fd8e:4df2:8b72:1234:5699:93aa:bbcc:ddee".parse().unwrap(),
    );
    assert_eq!((ndp.mac, ndp.adi), (parse_mac("33:33:ff:cc:dd:ee"), 0));
}

// ---------------------------------------------------------------------------------------
// Network config
// ---------------------------------------------------------------------------------------

#[test]
fn network_config_vector_parses_and_round_trips() {
    let raw = hex_vector("network config dictionary raw");
    let config = NetworkConfig::from_bytes(&raw).unwrap();
    // "fromDictionary roundtrip: 1 nwid=8e4df28b72123456 ts=1700000000000 ctmd=1800000 r=3
    //  id=a77dd93248 f=6 ml=32 t=0 name=testnet mtu=2800 caps=1 tags=1 coos=1 spec=1
    //  routes=1 ips=2 rules=1 com=1"
    assert_eq!(config.network_id, NWID);
    assert_eq!(config.timestamp, TS);
    assert_eq!(config.credential_time_max_delta, CTMD as i64);
    assert_eq!(config.revision, 3);
    assert_eq!(config.issued_to, member().address());
    assert_eq!(config.flags, 6);
    assert_eq!(config.multicast_limit, 32);
    assert_eq!(config.network_type, NetworkType::Private);
    assert_eq!(config.name, "testnet");
    assert_eq!(config.mtu, 2800);
    assert_eq!(config.capabilities.len(), 1);
    assert_eq!(config.tags.len(), 1);
    assert_eq!(config.certificates_of_ownership.len(), 1);
    assert_eq!(config.specialists, [0x0000_0211_2233_4455]);
    assert!(config.permits_bridging(Address::from_u64(0x1122334455)));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.static_ips.len(), 2);
    assert_eq!(config.rules, [Rule::new(RuleKind::Accept)]);
    let com = config.com.as_ref().unwrap();
    assert_eq!(com.verify(&controller()), Ok(()));
    assert_eq!(config.tags[0].verify(&controller()), Ok(()));

    let mut out = Vec::new();
    config.certificates_of_ownership[0].emit(&mut out);
    assert_eq!(out, hex_vector("COO serialized"));
    let emitted = config.to_dictionary().unwrap();
    assert_eq!(hex::encode(emitted.as_bytes()), hex::encode(&raw));
}

#[test]
fn network_config_acceptance_rules() {
    // "minimal dict {v,nwid,id} fromDictionary -> 1 mtu=2800 type=0 ruleCount=0 ml=0 flags=0"
    let minimal = b"v=0000000000000007\nnwid=8e4df28b72123456\nid=a77dd93248";
    let config = NetworkConfig::from_bytes(minimal).unwrap();
    assert_eq!(config.mtu, 2800);
    assert_eq!(config.network_type, NetworkType::Private);
    assert!(config.rules.is_empty() && config.com.is_none());
    assert_eq!(
        (config.multicast_limit, config.flags, config.revision),
        (0, 0, 0)
    );
    // "dict without id -> 0", "dict with v=5 -> 0"
    assert_eq!(
        NetworkConfig::from_bytes(b"v=7\nnwid=8e4df28b72123456"),
        Err(ConfigError::MissingIssuedTo)
    );
    assert_eq!(
        NetworkConfig::from_bytes(b"v=5\nnwid=8e4df28b72123456\nid=a77dd93248"),
        Err(ConfigError::LegacyVersion(5))
    );
    assert_eq!(
        NetworkConfig::from_bytes(b"v=7\nid=a77dd93248"),
        Err(ConfigError::MissingNetworkId)
    );
    // MTU is clamped; a bad R blob rejects the config, a bad CAP blob is tolerated.
    let c = NetworkConfig::from_bytes(b"v=7\nnwid=1\nid=2\nmtu=10").unwrap();
    assert_eq!(c.mtu, 1280);
    assert!(NetworkConfig::from_bytes(b"v=7\nnwid=1\nid=2\nR=\\e").is_err());
    assert!(NetworkConfig::from_bytes(b"v=7\nnwid=1\nid=2\nC=").is_err());
    let c = NetworkConfig::from_bytes(b"v=7\nnwid=1\nid=2\nCAP=xyz").unwrap();
    assert!(c.capabilities.is_empty());
}

#[test]
fn network_config_truncations_and_random_input_never_panic() {
    let raw = hex_vector("network config dictionary raw");
    for len in 0..raw.len() {
        let _ = NetworkConfig::from_bytes(&raw[..len]);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(FUZZ_SEED);
    for _ in 0..3000 {
        let mut b = raw.clone();
        for _ in 0..1 + rng.next_u32() % 8 {
            let at = rng.next_u32() as usize % b.len();
            b[at] = rng.next_u32() as u8;
        }
        if let Ok(config) = NetworkConfig::from_bytes(&b) {
            let _ = config.to_dictionary();
        }
    }
}

#[test]
fn request_metadata_matches_1_14_1() {
    let expected = "v=0000000000000007\nvend=0000000000000001\npv=000000000000000c\nmajv=0000000000000001\nminv=000000000000000e\nrevv=0000000000000001\nmr=0000000000000400\nmc=0000000000000080\nmcr=0000000000000040\nmt=0000000000000080\nf=0000000000000000\nrevr=0000000000000001\no=linux/x86_64";
    let metadata = RequestMetadata::zerotier_1_14("linux/x86_64");
    let d = metadata.to_dictionary().unwrap();
    assert_eq!(std::str::from_utf8(d.as_bytes()).unwrap(), expected);
    assert_eq!(d.len(), 263);
    assert_eq!(RequestMetadata::from_dictionary(&d), metadata);
}

// ---------------------------------------------------------------------------------------
// Verbs
// ---------------------------------------------------------------------------------------

mod verbs {
    use super::*;
    use node_core::vl2::verbs::*;
    use node_core::wire::{ErrorCode, ErrorRepr, OkHeader, Verb};

    fn round_trip<T: PartialEq + core::fmt::Debug>(
        wire: &[u8],
        parse: impl Fn(&[u8]) -> Result<T, DecodeError>,
        emit: impl Fn(&T, &mut Vec<u8>),
        len: impl Fn(&T) -> usize,
    ) -> T {
        let repr = parse(wire).unwrap();
        let mut out = Vec::new();
        emit(&repr, &mut out);
        assert_eq!(hex::encode(&out), hex::encode(wire));
        assert_eq!(len(&repr), wire.len());
        repr
    }

    #[test]
    fn multicast_like() {
        let wire = payload_example("MULTICAST_LIKE");
        let like = round_trip(
            &wire,
            MulticastLikeRepr::parse,
            MulticastLikeRepr::emit,
            MulticastLikeRepr::buffer_len,
        );
        let member = Address::from_u64(0xa77dd93248);
        assert_eq!(
            like.likes,
            [
                (
                    NWID,
                    MulticastGroup::ipv4_arp(Ipv4Addr::new(10, 147, 17, 5))
                ),
                (NWID, MulticastGroup::BROADCAST),
                (
                    NWID,
                    MulticastGroup::ipv6_solicited_node(rfc4193_address(NWID, member))
                ),
            ]
        );
        // Any length that is not a whole number of tuples is an error.
        for len in 0..wire.len() {
            assert_eq!(
                MulticastLikeRepr::parse(&wire[..len]).is_ok(),
                len % 18 == 0
            );
        }
        fuzz(&wire, MulticastLikeRepr::parse);
    }

    #[test]
    fn multicast_gather_and_ok() {
        let wire = payload_example("MULTICAST_GATHER");
        let gather = round_trip(
            &wire,
            MulticastGatherRepr::parse,
            MulticastGatherRepr::emit,
            MulticastGatherRepr::buffer_len,
        );
        assert_eq!(gather.network_id, NWID);
        assert_eq!(gather.gather_limit, 33);
        assert_eq!(
            gather.group,
            MulticastGroup::ipv4_arp(Ipv4Addr::new(10, 147, 17, 5))
        );
        assert!(gather.com.is_none());
        assert_truncations_rejected(&wire, MulticastGatherRepr::parse);
        fuzz(&wire, MulticastGatherRepr::parse);

        // With our COM attached.
        let com = CertificateOfMembership::parse(&hex_vector("COM signed serialized"))
            .unwrap()
            .0;
        let with_com = MulticastGatherRepr {
            com: Some(com),
            ..gather
        };
        let mut out = Vec::new();
        with_com.emit(&mut out);
        assert_eq!(out[8], 0x01);
        assert_eq!(MulticastGatherRepr::parse(&out).unwrap(), with_com);

        let ok = payload_example("OK(MULTICAST_GATHER)");
        let (header, body) = OkHeader::parse(&ok).unwrap();
        assert_eq!(header.in_re_verb, Verb::MulticastGather);
        assert_eq!(header.in_re_packet_id, 0x1122334455667788);
        let repr = round_trip(
            body,
            OkMulticastGatherRepr::parse,
            OkMulticastGatherRepr::emit,
            OkMulticastGatherRepr::buffer_len,
        );
        assert_eq!(repr.total_known, 2);
        assert_eq!(
            repr.members,
            [
                Address::from_u64(0xa77dd93248),
                Address::from_u64(0x0123456789)
            ]
        );
        assert_truncations_rejected(body, OkMulticastGatherRepr::parse);
        fuzz(body, OkMulticastGatherRepr::parse);
    }

    #[test]
    fn multicast_frame_and_ok() {
        let wire = payload_example("MULTICAST_FRAME");
        let frame = round_trip(
            &wire,
            MulticastFrameRepr::parse,
            MulticastFrameRepr::emit,
            MulticastFrameRepr::buffer_len,
        );
        assert_eq!(frame.flags, 0, "0x02 is carried by gather_limit");
        assert_eq!(frame.gather_limit, Some(33));
        assert_eq!(frame.source, None);
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload.len(), 28);
        // Everything shorter than the header is an error; the Ethernet payload may be empty.
        let header_len = wire.len() - frame.payload.len();
        for len in 0..header_len {
            assert!(MulticastFrameRepr::parse(&wire[..len]).is_err());
        }
        fuzz(&wire, MulticastFrameRepr::parse);

        // A replicator copy: flags 0x0c with the source MAC.
        let replicated = MulticastFrameRepr {
            flags: MULTICAST_FRAME_FLAG_REPLICATE,
            gather_limit: None,
            source: Some(Mac::from_address(Address::from_u64(0xa77dd93248), NWID)),
            ..frame
        };
        let mut out = Vec::new();
        replicated.emit(&mut out);
        assert_eq!(out[8], 0x0c);
        assert_eq!(out.len(), replicated.buffer_len());
        assert_eq!(MulticastFrameRepr::parse(&out).unwrap(), replicated);

        let ok = OkMulticastFrameRepr {
            network_id: NWID,
            group: MulticastGroup::BROADCAST,
            flags: 0,
            com: None,
            gathered: Some(GatheredMembers {
                total_known: 7,
                members: vec![Address::from_u64(0x0123456789)],
            }),
        };
        let mut out = Vec::new();
        ok.emit(&mut out);
        assert_eq!(
            hex::encode(&out),
            "8e4df28b72123456ffffffffffff0000000002000000070001".to_owned() + "0123456789"
        );
        assert_eq!(OkMulticastFrameRepr::parse(&out).unwrap(), ok);
        assert_truncations_rejected(&out, OkMulticastFrameRepr::parse);
        fuzz(&out, OkMulticastFrameRepr::parse);
    }

    #[test]
    fn ext_frame_and_frame() {
        let wire = payload_example("EXT_FRAME header");
        let ext = round_trip(
            &wire,
            ExtFrameRepr::parse,
            ExtFrameRepr::emit,
            ExtFrameRepr::buffer_len,
        );
        assert_eq!(ext.flags, 0);
        assert_eq!(ext.to, Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(
            ext.from,
            Mac::from_address(Address::from_u64(0xa77dd93248), NWID)
        );
        assert_eq!(ext.ethertype, 0x0800);
        assert_eq!(ext.subtype(), ExtFrameSubtype::Normal);
        assert_truncations_rejected(&wire, ExtFrameRepr::parse);
        fuzz(&wire, ExtFrameRepr::parse);
        // WATCH-outbound copy: 0x16 = ACK + subtype 3.
        let watch = ExtFrameRepr {
            flags: 0x16,
            ..ext.clone()
        };
        assert!(watch.ack_requested());
        assert_eq!(watch.subtype(), ExtFrameSubtype::WatchOutbound);
        // Legacy COM attached.
        let com = CertificateOfMembership::parse(&hex_vector("COM signed serialized"))
            .unwrap()
            .0;
        let with_com = ExtFrameRepr {
            com: Some(com),
            payload: vec![0x45, 0],
            ..ext
        };
        let mut out = Vec::new();
        with_com.emit(&mut out);
        assert_eq!(out.len(), with_com.buffer_len());
        assert_eq!(ExtFrameRepr::parse(&out).unwrap(), with_com);
        assert_truncations_rejected(&out[..out.len() - 2], ExtFrameRepr::parse);

        let frame = FrameRepr {
            network_id: NWID,
            ethertype: 0x0800,
            payload: vec![0x45, 0x00, 0x00, 0x14],
        };
        let mut out = Vec::new();
        frame.emit(&mut out);
        assert_eq!(hex::encode(&out), "8e4df28b72123456080045000014");
        assert_eq!(FrameRepr::parse(&out).unwrap(), frame);
        assert_truncations_rejected(&out[..10], FrameRepr::parse);
        fuzz(&out, FrameRepr::parse);
    }

    #[test]
    fn network_credentials() {
        let wire = payload_example("NETWORK_CREDENTIALS (COM only)");
        let creds = round_trip(
            &wire,
            NetworkCredentialsRepr::parse,
            NetworkCredentialsRepr::emit,
            NetworkCredentialsRepr::buffer_len,
        );
        assert_eq!(creds.coms.len(), 1);
        assert_eq!(creds.coms[0].verify(&controller()), Ok(()));
        assert!(creds.capabilities.is_empty() && creds.tags.is_empty());
        fuzz(&wire, NetworkCredentialsRepr::parse);

        // Everything at once, including the revocation-only form of a controller deauth.
        let all = NetworkCredentialsRepr {
            coms: creds.coms.clone(),
            capabilities: vec![
                Capability::parse(&hex_vector("Capability serialized"))
                    .unwrap()
                    .0,
            ],
            tags: vec![Tag::parse(&hex_vector("Tag serialized")).unwrap().0],
            revocations: vec![
                Revocation::parse(&hex_vector("Revocation serialized"))
                    .unwrap()
                    .0,
            ],
            certificates_of_ownership: vec![
                CertificateOfOwnership::parse(&hex_vector("COO serialized"))
                    .unwrap()
                    .0,
            ],
        };
        let mut out = Vec::new();
        all.emit(&mut out);
        assert_eq!(out.len(), all.buffer_len());
        assert_eq!(NetworkCredentialsRepr::parse(&out).unwrap(), all);
        // Cutting inside a credential or a count is an error; cutting right before a count
        // (sections are optional on receipt) is not.
        let mut boundaries = vec![272, 273];
        let mut at = 273;
        for len in [151 + 2, 135 + 2, 152 + 2, 175 + 2] {
            at += len;
            boundaries.push(at);
        }
        for len in 1..out.len() {
            let ok = NetworkCredentialsRepr::parse(&out[..len]).is_ok();
            assert_eq!(ok, boundaries.contains(&len), "prefix {len}");
        }
        fuzz(&out, NetworkCredentialsRepr::parse);

        let revocation_only = NetworkCredentialsRepr {
            revocations: all.revocations.clone(),
            ..Default::default()
        };
        let mut out = Vec::new();
        revocation_only.emit(&mut out);
        assert_eq!(hex::encode(&out[..7]), "00000000000001");
    }

    #[test]
    fn network_config_request() {
        let metadata = RequestMetadata::zerotier_1_14("linux/x86_64")
            .to_dictionary()
            .unwrap();
        let request = NetworkConfigRequestRepr {
            network_id: NWID,
            metadata: metadata.as_bytes().to_vec(),
            have_revision: 3,
            have_timestamp: TS as u64,
        };
        let mut out = Vec::new();
        request.emit(&mut out);
        assert_eq!(out.len(), request.buffer_len());
        assert_eq!(
            &out[..10],
            &hex::decode("8e4df28b721234560107").unwrap()[..]
        );
        assert_eq!(NetworkConfigRequestRepr::parse(&out).unwrap(), request);
        // The network ID and the announced metadata are required.
        for len in (0..8).chain(11..10 + 263) {
            assert!(
                NetworkConfigRequestRepr::parse(&out[..len]).is_err(),
                "{len}"
            );
        }
        fuzz(&out, NetworkConfigRequestRepr::parse);
    }

    #[test]
    fn config_chunk_vector_signs_and_verifies() {
        let config = hex_vector("network config dictionary raw");
        let chunks =
            ConfigChunkRepr::split(NWID, &config, 0x0123_4567_89ab_cdef, &controller()).unwrap();
        assert_eq!(chunks.len(), 1);
        let chunk = &chunks[0];
        let signed = chunk.signed_portion();
        assert_eq!(signed.len(), 1528);
        assert_eq!(
            hex::encode(&signed[signed.len() - 17..]),
            hex::encode(hex_vector(
                "config chunk trailer (flags|updateId|totalLen|chunkIndex)"
            ))
        );
        let signature = hex_vector("config chunk signature (C25519 96 bytes)");
        assert_eq!(chunk.trailer.unwrap().signature.to_vec(), signature);
        assert_eq!(chunk.verify(&controller()), Ok(()));
        assert!(chunk.verify(&member()).is_err());

        let mut wire = Vec::new();
        chunk.emit(&mut wire);
        assert_eq!(wire.len(), 1528 + 3 + 96);
        assert_eq!(wire.len(), chunk.buffer_len());
        let parsed = ConfigChunkRepr::parse(&wire).unwrap();
        assert_eq!(&parsed, chunk);
        assert_eq!(
            NetworkConfig::from_bytes(&parsed.data).unwrap().network_id,
            NWID
        );
        // Truncations fail except exactly after the data (the legacy unsigned form).
        for len in 0..wire.len() {
            let ok = ConfigChunkRepr::parse(&wire[..len]);
            if len == 10 + config.len() {
                assert_eq!(ok.unwrap().trailer, None);
            } else {
                assert!(ok.is_err(), "prefix {len}");
            }
        }
        let mut tampered = wire.clone();
        tampered[20] ^= 1;
        let tampered = ConfigChunkRepr::parse(&tampered).unwrap();
        assert_eq!(
            tampered.verify(&controller()),
            Err(VerifyError::BadSignature)
        );
        fuzz(&wire, ConfigChunkRepr::parse);

        // A config larger than one chunk is split at 9740 bytes, all chunks signed.
        let big = vec![b'x'; 20_000];
        let chunks = ConfigChunkRepr::split(NWID, &big, 7, &controller()).unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.data.len()).collect::<Vec<_>>(),
            [9740, 9740, 520]
        );
        assert!(chunks.iter().all(|c| c.verify(&controller()).is_ok()));
        assert_eq!(chunks[2].trailer.unwrap().chunk_index, 19480);

        let ack = NetworkConfigAckRepr {
            network_id: NWID,
            update_id: 7,
        };
        let mut out = Vec::new();
        ack.emit(&mut out);
        assert_eq!(NetworkConfigAckRepr::parse(&out).unwrap(), ack);
        assert_truncations_rejected(&out, NetworkConfigAckRepr::parse);
    }

    #[test]
    fn vl2_errors() {
        for (prefix, verb, code) in [
            (
                "ERROR NEED_MEMBERSHIP",
                Verb::Frame,
                ErrorCode::NeedMembershipCertificate,
            ),
            (
                "ERROR NETWORK_ACCESS_DENIED",
                Verb::NetworkConfigRequest,
                ErrorCode::NetworkAccessDenied,
            ),
        ] {
            let wire = payload_example(prefix);
            let error = ErrorRepr::parse(&wire).unwrap();
            assert_eq!((error.in_re_verb, error.code), (verb, code));
            assert_eq!(error.in_re_packet_id, 0x0102030405060708);
            let payload = Vl2ErrorPayload::parse(error.code, &error.payload).unwrap();
            assert_eq!(payload, Vl2ErrorPayload::Network(NWID));
            let mut out = Vec::new();
            payload.emit(&mut out);
            assert_eq!(out, error.payload);
            assert_eq!(payload.buffer_len(), out.len());
            assert_truncations_rejected(&error.payload, |b| Vl2ErrorPayload::parse(code, b));
        }
        let unwanted = Vl2ErrorPayload::UnwantedMulticast {
            network_id: NWID,
            group: MulticastGroup::BROADCAST,
        };
        let mut out = Vec::new();
        unwanted.emit(&mut out);
        assert_eq!(
            Vl2ErrorPayload::parse(ErrorCode::UnwantedMulticast, &out).unwrap(),
            unwanted
        );
        assert_truncations_rejected(&out, |b| {
            Vl2ErrorPayload::parse(ErrorCode::UnwantedMulticast, b)
        });

        let auth = Vl2ErrorPayload::AuthenticationRequired {
            network_id: NWID,
            auth_info: Some(b"aV=0000000000000000\naU=https://x".to_vec()),
        };
        let mut out = Vec::new();
        auth.emit(&mut out);
        let code = ErrorCode::NetworkAuthenticationRequired;
        assert_eq!(Vl2ErrorPayload::parse(code, &out).unwrap(), auth);
        assert_eq!(
            Vl2ErrorPayload::parse(code, &out[..9]).unwrap(),
            Vl2ErrorPayload::AuthenticationRequired {
                network_id: NWID,
                auth_info: None
            }
        );
        assert!(Vl2ErrorPayload::parse(code, &out[..12]).is_err());
        assert!(Vl2ErrorPayload::parse(ErrorCode::IdentityCollision, &out).is_err());
        fuzz(&out, |b| Vl2ErrorPayload::parse(code, b));
    }
}
