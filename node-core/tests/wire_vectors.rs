//! Known answers from ZeroTier One 1.14.1 for the wire formats and worlds (zt-vl1.md A.2),
//! plus robustness checks: no parser panics on truncated, mutated or random input.

use std::net::SocketAddr;
use std::sync::OnceLock;

use node_core::crypto::c25519::KeyPair;
use node_core::crypto::{crypt_field, PeerKey};
use node_core::identity::Identity;
use node_core::time::Timestamp;
use node_core::wire::fragment::FRAGMENT_HEADER_LEN;
use node_core::wire::packet::{PROTO_VERSION, SOFTWARE_VERSION};
use node_core::wire::{
    compress_packet, decompress_packet, emit_header, is_fragment, split, EchoRepr, ErrorRepr,
    Fragment, HelloRepr, InetAddress, MoonRecord, OkBody, OkHelloRepr, OkRepr, Packet, PlanetRef,
    PushDirectPathsRepr, Reassembler, RendezvousRepr, UserMessageRepr, Verb, WhoisRepr,
};
use node_core::world::{
    default_planet, Root, World, WorldError, WorldKind, DEFAULT_PLANET, EARTH_WORLD_ID,
};
use node_core::Address;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha512};

const PACKET_VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/zt-vl1-packet-vectors.json"
));
const SELFTEST_VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/zt-vl1-selftest-vectors.json"
));

/// The HELLO a running 1.14.1 daemon (identity B) sent to its root (identity A), zt-vl1.md A.2
/// "Live capture".
const LIVE_HELLO: &str = "034d669e03217fa88e4df28b726d09ce149c0026817d3033c9f10a010c010e00\
                          01000001a20d8ef4ab6d09ce149c002b8777a181dffd9120095e3ac9c641c98b\
                          f81c4aeeb45c3fdde14d840c22d06702ca5fb8227a369afa11e437290b6d2912\
                          608bd9db239e46e64a8bab8cc27dc70004c00002029c39112233445566778800\
                          00018bcfe568004b7c";

fn harness() -> &'static serde_json::Map<String, Value> {
    static VECTORS: OnceLock<Value> = OnceLock::new();
    VECTORS
        .get_or_init(|| serde_json::from_str(PACKET_VECTORS).expect("packet vectors parse"))
        .get("harness")
        .and_then(Value::as_object)
        .expect("harness section")
}

fn text(name: &str) -> &'static str {
    harness()
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

fn bytes(name: &str) -> Vec<u8> {
    hex::decode(text(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn identity(name: &str) -> Identity {
    let all = serde_json::from_str::<Value>(PACKET_VECTORS).unwrap();
    all["identities"][name].as_str().unwrap().parse().unwrap()
}

/// Key pair 1 (`pub1`/`priv1`) or 2 of C25519 self-test vector 0.
fn selftest_key_pair(which: u8) -> KeyPair {
    let all = serde_json::from_str::<Value>(SELFTEST_VECTORS).unwrap();
    let vector = &all["C25519_TEST_VECTORS"][0];
    let key = |name: String| -> [u8; 64] {
        hex::decode(vector[&name].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    KeyPair {
        public: key(format!("pub{which}")),
        secret: key(format!("priv{which}")),
    }
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn k_ab() -> PeerKey {
    PeerKey::from_secret(bytes("K_AB").try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Fragmentation and reassembly

#[test]
fn frag_split_matches_cpp() {
    let full = bytes("FRAG.full_wire");
    let mut out = vec![];
    assert_eq!(split(&full, 100, &mut out), Ok(3));
    assert_eq!(
        out,
        [
            bytes("FRAG.head"),
            bytes("FRAG.fragment1"),
            bytes("FRAG.fragment2")
        ]
    );

    let f1 = Fragment::new_checked(&out[1][..]).unwrap();
    assert_eq!(f1.packet_id(), 0x3333333333333333);
    assert_eq!(f1.destination(), addr("6d09ce149c"));
    assert_eq!(
        (f1.fragment_number(), f1.total_fragments(), f1.hops()),
        (1, 3, 0)
    );
    assert_eq!(f1.payload().len(), 100 - FRAGMENT_HEADER_LEN);
    assert!(Packet::new_checked(&out[0][..]).unwrap().is_fragmented());
}

#[test]
fn frag_reassembles_in_every_order_with_duplicates() {
    let full = bytes("FRAG.full_wire");
    let pieces = [
        bytes("FRAG.head"),
        bytes("FRAG.fragment1"),
        bytes("FRAG.fragment2"),
    ];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        // Each piece twice in a row, and the first piece again before the last one.
        let mut sequence = vec![];
        for (i, &p) in order.iter().enumerate() {
            if i == 2 {
                sequence.push(order[0]);
            }
            sequence.extend([p, p]);
        }
        let mut r = Reassembler::new();
        let mut completed = vec![];
        for (step, &p) in sequence.iter().enumerate() {
            let datagram = &pieces[p];
            let result = if is_fragment(datagram) {
                r.handle_fragment(Timestamp(10), datagram)
            } else {
                r.handle_head(Timestamp(10), datagram)
            };
            if let Some(packet) = result {
                completed.push((step, packet));
            }
        }
        // Complete exactly when the last distinct piece first arrives (step 5 of 7).
        assert_eq!(completed.len(), 1, "order {order:?}");
        assert_eq!(completed[0].0, 5, "order {order:?}");
        assert_eq!(completed[0].1, full, "order {order:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// InetAddress

#[test]
fn inet_address_vectors() {
    for (name, expected) in [
        ("inet_192.0.2.1/9993", Some(sock("192.0.2.1:9993"))),
        ("inet_2001:db8::1/9993", Some(sock("[2001:db8::1]:9993"))),
        ("inet_nil", None),
    ] {
        let encoded = bytes(name);
        let (parsed, used) = InetAddress::parse(&encoded).unwrap();
        assert_eq!(
            (parsed.socket_addr(), used),
            (expected, encoded.len()),
            "{name}"
        );
        let mut out = vec![];
        InetAddress::from(expected).emit(&mut out);
        assert_eq!(out, encoded, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// HELLO and OK(HELLO)

/// The HELLO vector is A → B: destination B (6d09ce149c), source and identity A (8e4df28b72).
fn expected_hello() -> HelloRepr {
    HelloRepr {
        protocol_version: 12,
        software_version: SOFTWARE_VERSION,
        timestamp: 1_700_000_000_000,
        identity: identity("A").public_only(),
        physical_destination: Some(InetAddress::Ip(sock("192.0.2.1:9993"))),
        planet: Some(PlanetRef {
            id: EARTH_WORLD_ID,
            timestamp: 1_644_592_324_813,
        }),
        moons: Some(vec![MoonRecord::moon(0x000000deadbeef01, 0)]),
    }
}

#[test]
fn hello_parses_in_two_phases() {
    let plain = bytes("HELLO.plain");
    let crypt_start: usize = text("HELLO.crypt_start").parse().unwrap();
    let packet = Packet::new_checked(&plain[..]).unwrap();
    assert_eq!(packet.verb(), Verb::Hello);
    assert_eq!(packet.destination(), addr("6d09ce149c"));
    assert_eq!(packet.source(), addr("8e4df28b72"));

    let (mut hello, tail) = HelloRepr::parse(packet.payload()).unwrap();
    assert_eq!(tail, Some(crypt_start - 28));
    assert_eq!(hello.identity.address(), packet.source());
    assert_eq!(hello.moons, None);
    hello.moons = Some(HelloRepr::parse_moons(&plain[crypt_start..]).unwrap());
    assert_eq!(hello, expected_hello());

    // The armored wire form has the tail encrypted; phase 1 reads the same clear fields.
    let wire = bytes("HELLO.wire");
    let (head_only, tail) = HelloRepr::parse(&wire[28..]).unwrap();
    assert_eq!(tail, Some(crypt_start - 28));
    assert_eq!(
        head_only,
        HelloRepr {
            moons: None,
            ..expected_hello()
        }
    );
}

#[test]
fn hello_tail_decrypts_with_crypt_field() {
    let mut packet = bytes("HELLO.after_cryptField");
    let (_, tail) = HelloRepr::parse(&packet[28..]).unwrap();
    crypt_field(&k_ab(), &mut packet, 28 + tail.unwrap());
    assert_eq!(packet, bytes("HELLO.plain"));
}

#[test]
fn hello_emit_reproduces_plaintext() {
    let plain = bytes("HELLO.plain");
    let hello = expected_hello();
    let mut out = vec![];
    emit_header(
        &mut out,
        [1, 2, 3, 4, 5, 6, 7, 8],
        addr("6d09ce149c"),
        addr("8e4df28b72"),
        Verb::Hello,
    );
    hello.emit(&mut out);
    assert_eq!(hello.buffer_len(), out.len() - 28);
    assert_eq!(hello.tail_offset(), Some(135 - 28));
    // Bytes 19..27 (MAC) hold leftover harness buffer content in the vector; armor sets them.
    assert_eq!(out[..19], plain[..19]);
    assert_eq!(out[27..], plain[27..]);
}

#[test]
fn relayed_hello_has_nil_destination_and_no_moons() {
    let wire = bytes("HELLO2.wire");
    let (hello, tail) = HelloRepr::parse(&wire[28..]).unwrap();
    assert_eq!(hello.physical_destination, Some(InetAddress::Nil));
    assert_eq!(hello.planet, expected_hello().planet);
    assert_eq!(tail, Some(wire.len() - 2 - 28));
    let mut decrypted = wire.clone();
    crypt_field(&k_ab(), &mut decrypted, 28 + tail.unwrap());
    assert_eq!(
        HelloRepr::parse_moons(&decrypted[28 + tail.unwrap()..]),
        Ok(vec![])
    );
}

#[test]
fn live_capture_hello_fields() {
    let wire = hex::decode(LIVE_HELLO).unwrap();
    let packet = Packet::new_checked(&wire[..]).unwrap();
    assert_eq!(packet.cipher(), 0);
    assert_eq!(packet.flags(), 0);
    assert_eq!(packet.mac(), hex::decode("26817d3033c9f10a").unwrap()[..]);
    assert_eq!(packet.destination(), addr("8e4df28b72"));
    assert_eq!(packet.source(), addr("6d09ce149c"));
    assert_eq!(packet.verb(), Verb::Hello);

    let (hello, tail) = HelloRepr::parse(packet.payload()).unwrap();
    assert_eq!(hello.protocol_version, PROTO_VERSION);
    assert_eq!(hello.software_version, SOFTWARE_VERSION);
    assert_eq!(hello.timestamp, 0x000001a20d8ef4ab);
    // The daemon is identity B.
    assert_eq!(hello.identity, identity("B").public_only());
    assert_eq!(
        hello.physical_destination,
        Some(InetAddress::Ip(sock("192.0.2.2:39993")))
    );
    assert_eq!(
        hello.planet,
        Some(PlanetRef {
            id: 0x1122334455667788,
            timestamp: 0x18bcfe56800
        })
    );
    let tail = tail.unwrap();
    assert_eq!(wire.len() - 28 - tail, 2, "the encrypted moon count");
}

#[test]
fn ok_hello_parses_and_re_emits() {
    let plain = bytes("OKHELLO.plain");
    let packet = Packet::new_checked(&plain[..]).unwrap();
    assert_eq!(packet.verb(), Verb::Ok);
    let ok = OkRepr::parse(packet.payload()).unwrap();
    let expected = OkRepr {
        in_re_verb: Verb::Hello,
        in_re_packet_id: 0x0102030405060708,
        body: OkBody::Hello(OkHelloRepr {
            timestamp_echo: 1_700_000_000_000,
            protocol_version: 12,
            software_version: SOFTWARE_VERSION,
            physical_source: Some(InetAddress::Ip(sock("198.51.100.7:41234"))),
            world_updates: Some(vec![]),
        }),
    };
    assert_eq!(ok, expected);
    let mut out = vec![];
    ok.emit(&mut out);
    assert_eq!(out, packet.payload());
    assert_eq!(ok.buffer_len(), out.len());
    // The dearmored wire packet carries the same payload.
    assert_eq!(&bytes("OKHELLO.decrypted")[27..], &plain[27..]);
}

#[test]
fn ok_hello_carries_worlds() {
    let moon = World::parse(&bytes("MOON.serialized")).unwrap().0;
    let planet = World::parse(&bytes("PLANET.serialized")).unwrap().0;
    let area = OkHelloRepr::encode_worlds(&[planet.clone(), moon.clone()]);
    let ok = OkRepr {
        in_re_verb: Verb::Hello,
        in_re_packet_id: 7,
        body: OkBody::Hello(OkHelloRepr {
            timestamp_echo: 1,
            protocol_version: 12,
            software_version: SOFTWARE_VERSION,
            physical_source: Some(InetAddress::Nil),
            world_updates: Some(area),
        }),
    };
    let mut out = vec![];
    ok.emit(&mut out);
    let parsed = OkRepr::parse(&out).unwrap();
    assert_eq!(parsed, ok);
    let OkBody::Hello(hello) = parsed.body else {
        panic!("not OK(HELLO)")
    };
    assert_eq!(hello.worlds().unwrap(), [planet, moon.clone()]);

    // A null world (type 0) is skipped in the area, as 1.14 skips it, but is no World.
    let mut null = bytes("PLANET.serialized");
    null[0] = 0;
    assert_eq!(World::parse(&null), Err(WorldError::Null));
    let mut area = null;
    moon.emit(&mut area);
    let hello = OkHelloRepr {
        world_updates: Some(area),
        ..hello
    };
    assert_eq!(hello.worlds().unwrap(), [moon]);
    let mut bad = bytes("PLANET.serialized");
    bad[0] = 2;
    assert_eq!(World::parse(&bad), Err(WorldError::UnknownType(2)));
}

#[test]
fn ok_whois_and_echo() {
    let a = identity("A").public_only();
    let b = identity("B").public_only();
    let ok = OkRepr {
        in_re_verb: Verb::Whois,
        in_re_packet_id: 0x1122334455667788,
        body: OkBody::Whois(vec![a.clone(), b.clone()]),
    };
    let mut out = vec![];
    ok.emit(&mut out);
    assert_eq!(out.len(), 9 + 2 * 71);
    assert_eq!(&out[9..80], &bytes("A.serialized_public")[..]);
    assert_eq!(OkRepr::parse(&out).unwrap(), ok);
    // 1.14 reads only the first identity: trailing garbage after it is tolerated.
    let mut tolerated = out[..80].to_vec();
    tolerated.extend_from_slice(&[0xff; 10]);
    assert_eq!(
        OkRepr::parse(&tolerated).unwrap().body,
        OkBody::Whois(vec![a])
    );
    assert!(OkRepr::parse(&out[..79]).is_err());

    let echo = bytes("ECHO.plain");
    assert_eq!(EchoRepr::parse(&echo[28..]).payload, b"ping!");
    let ok_echo = OkRepr::parse(&hex::decode("080f0e0d0c0b0a090870696e6721").unwrap()).unwrap();
    assert_eq!(ok_echo.body, OkBody::Echo(b"ping!".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Other verbs and compression

#[test]
fn user_message_vector() {
    let plain = bytes("UM.plain");
    let packet = Packet::new_checked(&plain[..]).unwrap();
    assert_eq!(packet.verb(), Verb::UserMessage);
    let message = UserMessageRepr::parse(packet.payload()).unwrap();
    assert_eq!(message.type_id, 0x1234567890abcdef);
    assert_eq!(message.data, (0u8..37).collect::<Vec<_>>());
    let mut out = vec![];
    message.emit(&mut out);
    assert_eq!(out, packet.payload());
}

#[test]
fn cmp_vector_decompresses() {
    let compressed = bytes("CMP.compressed_plain");
    assert!(Packet::new_checked(&compressed[..])
        .unwrap()
        .is_compressed());
    let mut out = vec![];
    decompress_packet(&compressed, &mut out).unwrap();
    assert_eq!(out, bytes("CMP.plain"));
}

#[test]
fn our_compression_round_trips() {
    let plain = bytes("CMP.plain");
    let mut packet = plain.clone();
    let mut scratch = vec![];
    assert!(compress_packet(&mut packet, &mut scratch));
    assert!(packet.len() < plain.len());
    assert_eq!(packet[27], 0x94);
    let mut out = vec![];
    decompress_packet(&packet, &mut out).unwrap();
    assert_eq!(out, plain);
}

// ---------------------------------------------------------------------------------------------
// Worlds

fn vector_root() -> Root {
    Root {
        identity: identity("B").public_only(),
        stable_endpoints: vec![sock("192.0.2.1:9993")],
    }
}

#[test]
fn moon_and_planet_parse_and_re_emit() {
    for (name, kind, id) in [
        ("MOON.serialized", WorldKind::Moon, 0x0000006d09ce149c),
        ("PLANET.serialized", WorldKind::Planet, 0x1122334455667788),
    ] {
        let serialized = bytes(name);
        let (world, used) = World::parse(&serialized).unwrap();
        assert_eq!(used, serialized.len(), "{name}");
        assert_eq!(
            (world.kind, world.id, world.timestamp),
            (kind, id, 1_700_000_000_000)
        );
        assert_eq!(world.roots, [vector_root()], "{name}");
        assert_eq!(world.updates_must_be_signed_by, selftest_key_pair(1).public);
        let mut out = vec![];
        world.emit(&mut out);
        assert_eq!(out, serialized, "{name}");
        assert_eq!(world.buffer_len(), serialized.len());
        assert!(
            world.verify_signature(&selftest_key_pair(1).public),
            "{name}"
        );
        assert!(
            !world.verify_signature(&selftest_key_pair(2).public),
            "{name}"
        );
    }
    let moon = World::parse(&bytes("MOON.serialized")).unwrap().0;
    assert_eq!(moon.signing_message(), bytes("MOON.signed_message"));
}

#[test]
fn world_make_reproduces_cpp() {
    let key = selftest_key_pair(1);
    for (name, kind, id) in [
        ("MOON.serialized", WorldKind::Moon, 0x0000006d09ce149c),
        ("PLANET.serialized", WorldKind::Planet, 0x1122334455667788),
    ] {
        let world = World::make(
            kind,
            id,
            1_700_000_000_000,
            vec![vector_root()],
            &key,
            key.public,
        );
        let mut out = vec![];
        world.emit(&mut out);
        assert_eq!(hex::encode(&out), text(name), "{name}");
    }
}

#[test]
fn world_update_rules() {
    let key = selftest_key_pair(1);
    let other = selftest_key_pair(2);
    let installed = World::parse(&bytes("PLANET.serialized")).unwrap().0;
    let make = |ts: u64, signer: &KeyPair, next: [u8; 64]| {
        World::make(
            WorldKind::Planet,
            installed.id,
            ts,
            vec![vector_root()],
            signer,
            next,
        )
    };

    let update = make(1_700_000_000_001, &key, key.public);
    assert!(installed.should_be_replaced_by(&update));
    // Same timestamp, older, wrong signer, other ID, other type: refused.
    assert!(!installed.should_be_replaced_by(&make(1_700_000_000_000, &key, key.public)));
    assert!(!installed.should_be_replaced_by(&make(1_699_999_999_999, &key, key.public)));
    assert!(!installed.should_be_replaced_by(&make(1_700_000_000_001, &other, key.public)));
    let mut other_id = update.clone();
    other_id.id += 1;
    assert!(!installed.should_be_replaced_by(&other_id));
    let moon = World::make(
        WorldKind::Moon,
        installed.id,
        1_700_000_000_001,
        vec![],
        &key,
        key.public,
    );
    assert!(!installed.should_be_replaced_by(&moon));
    // Key rotation: an update naming a new key; the next one must be signed with it.
    let rotated = make(1_700_000_000_002, &key, other.public);
    assert!(installed.should_be_replaced_by(&rotated));
    assert!(rotated.should_be_replaced_by(&make(1_700_000_000_003, &other, other.public)));
    assert!(!rotated.should_be_replaced_by(&make(1_700_000_000_003, &key, key.public)));
    // An ID-0 world is replaced by anything, unsigned.
    let blank = World {
        id: 0,
        ..installed.clone()
    };
    assert!(blank.should_be_replaced_by(&other_id));
}

#[test]
fn default_planet_is_earth() {
    let planet = default_planet();
    assert_eq!(planet.kind, WorldKind::Planet);
    assert_eq!(planet.id, EARTH_WORLD_ID);
    assert_eq!(planet.timestamp, 1_644_592_324_813);
    assert_eq!(planet.roots.len(), 4);
    let message = planet.signing_message();
    assert_eq!(
        message.len(),
        text("DEFWORLD.signed_message_len")
            .parse::<usize>()
            .unwrap()
    );
    assert_eq!(
        hex::encode(Sha512::digest(&message)),
        text("DEFWORLD.sha512_of_signed_message")
    );
    assert!(planet.verify_signature(&planet.updates_must_be_signed_by));
    let mut out = vec![];
    planet.emit(&mut out);
    assert_eq!(out, DEFAULT_PLANET);
    assert_eq!(planet.buffer_len(), DEFAULT_PLANET.len());

    let expected_roots = [
        (
            "cafe9efeb9",
            [
                "104.194.8.134:9993",
                "[2605:9880:200:1200:30:571:e34:51]:9993",
            ],
        ),
        (
            "778cde7190",
            [
                "103.195.103.66:9993",
                "[2605:9880:400:c3:254:f2bc:a1f7:19]:9993",
            ],
        ),
        (
            "62f865ae71",
            ["50.7.252.138:9993", "[2001:49f0:d0db:2::2]:9993"],
        ),
        (
            "cafe04eba9",
            ["84.17.53.155:9993", "[2a02:6ea0:d405::9993]:9993"],
        ),
    ];
    for (root, (address, endpoints)) in planet.roots.iter().zip(expected_roots) {
        assert_eq!(root.identity.address(), addr(address));
        assert_eq!(root.stable_endpoints, endpoints.map(sock));
        assert!(root.identity.locally_validate(), "root {address}");
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// Runs every parser on `data`, as every kind of payload. Returns nothing: it must not panic.
fn parse_everything(data: &[u8]) {
    let _ = Packet::new_checked(data).map(|p| (p.verb(), p.payload().len(), p.hops()));
    let _ = Fragment::new_checked(data).map(|f| (f.check_counters(), f.payload().len()));
    let _ = InetAddress::parse(data);
    if let Ok((_, Some(tail))) = HelloRepr::parse(data) {
        let _ = HelloRepr::parse_moons(data.get(tail..).unwrap_or(&[]));
    }
    let _ = HelloRepr::parse_moons(data);
    if let Ok(OkRepr {
        body: OkBody::Hello(hello),
        ..
    }) = OkRepr::parse(data)
    {
        let _ = hello.worlds();
    }
    let _ = OkHelloRepr::parse(data);
    let _ = ErrorRepr::parse(data);
    let _ = WhoisRepr::parse(data);
    let _ = RendezvousRepr::parse(data);
    let _ = PushDirectPathsRepr::parse(data);
    let _ = UserMessageRepr::parse(data);
    let _ = EchoRepr::parse(data);
    let _ = World::parse(data);
    let mut out = vec![];
    let _ = decompress_packet(data, &mut out);
    let mut r = Reassembler::new();
    let _ = r.handle_head(Timestamp(0), data);
    let _ = r.handle_fragment(Timestamp(0), data);
}

fn all_vectors() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "HELLO.plain",
        "HELLO.after_cryptField",
        "HELLO.wire",
        "HELLO2.wire",
        "OKHELLO.plain",
        "OKHELLO.wire_c1",
        "ECHO.plain",
        "UM.plain",
        "CMP.plain",
        "CMP.compressed_plain",
        "FRAG.full_wire",
        "FRAG.head",
        "FRAG.fragment1",
        "FRAG.fragment2",
        "MOON.serialized",
        "PLANET.serialized",
        "inet_192.0.2.1/9993",
        "inet_2001:db8::1/9993",
        "A.serialized_public",
    ]
    .iter()
    .map(|name| bytes(name))
    .collect();
    v.push(hex::decode(LIVE_HELLO).unwrap());
    v.push(DEFAULT_PLANET.to_vec());
    // Payload-only forms, so verb parsers see the vectors at offset 0 too.
    let payloads: Vec<Vec<u8>> = v
        .iter()
        .filter(|p| p.len() > 28)
        .map(|p| p[28..].to_vec())
        .collect();
    v.extend(payloads);
    v
}

#[test]
fn truncations_never_panic_and_strict_parsers_reject_them() {
    for vector in all_vectors() {
        for cut in 0..=vector.len() {
            parse_everything(&vector[..cut]);
        }
    }
    // Formats with no optional tail reject every strict prefix.
    for name in ["MOON.serialized", "PLANET.serialized"] {
        let world = bytes(name);
        for cut in 0..world.len() {
            assert!(World::parse(&world[..cut]).is_err(), "{name} cut at {cut}");
        }
    }
    for cut in 0..DEFAULT_PLANET.len() {
        assert!(
            World::parse(&DEFAULT_PLANET[..cut]).is_err(),
            "planet cut at {cut}"
        );
    }
    for name in ["inet_192.0.2.1/9993", "inet_2001:db8::1/9993"] {
        let inet = bytes(name);
        for cut in 0..inet.len() {
            assert!(
                InetAddress::parse(&inet[..cut]).is_err(),
                "{name} cut at {cut}"
            );
        }
    }
    // HELLO: everything up to the end of the identity is required.
    let hello = bytes("HELLO.plain");
    for cut in 28..28 + 13 + 71 {
        assert!(
            HelloRepr::parse(&hello[28..cut]).is_err(),
            "HELLO cut at {cut}"
        );
    }
    // Then the InetAddress (7 bytes here) must be whole if started; the rest is optional.
    let identity_end = 28 + 13 + 71;
    assert!(HelloRepr::parse(&hello[28..identity_end]).is_ok());
    for cut in identity_end + 1..identity_end + 7 {
        assert!(
            HelloRepr::parse(&hello[28..cut]).is_err(),
            "HELLO cut at {cut}"
        );
    }
    for cut in identity_end + 7..hello.len() {
        assert!(
            HelloRepr::parse(&hello[28..cut]).is_ok(),
            "HELLO cut at {cut}"
        );
    }
    // A moon record cut short is an error.
    let tail = &hello[135..];
    for cut in 3..tail.len() {
        assert!(
            HelloRepr::parse_moons(&tail[..cut]).is_err(),
            "moon list cut at {cut}"
        );
    }
    // OK(HELLO): header and the version fields are required.
    let ok = bytes("OKHELLO.plain");
    for cut in 28..28 + 9 + 13 {
        assert!(
            OkRepr::parse(&ok[28..cut]).is_err(),
            "OK(HELLO) cut at {cut}"
        );
    }
    // Packet and fragment views refuse runts.
    let head = bytes("FRAG.head");
    for cut in 0..28 {
        assert!(Packet::new_checked(&head[..cut]).is_err());
    }
    let fragment = bytes("FRAG.fragment2");
    for cut in 0..=16 {
        assert!(Fragment::new_checked(&fragment[..cut]).is_err());
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x5a7e_11e5);
    let vectors = all_vectors();
    for _ in 0..4000 {
        // Random bytes of random length.
        let len = (rng.next_u32() % 400) as usize;
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        parse_everything(&data);

        // A vector with a few bytes overwritten: reaches deeper into the parsers.
        let mut mutated = vectors[(rng.next_u32() as usize) % vectors.len()].clone();
        if !mutated.is_empty() {
            for _ in 0..1 + rng.next_u32() % 4 {
                let at = (rng.next_u32() as usize) % mutated.len();
                mutated[at] = rng.next_u32() as u8;
            }
        }
        parse_everything(&mutated);
    }
}
