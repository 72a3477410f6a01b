//! `node-core`: the ZeroTier 1.x protocol engine, wire-compatible with ZeroTier One 1.14.
//!
//! The crate is sans-IO: it opens no sockets, reads no clock and touches no files. Time,
//! randomness and storage come in from the caller, and the engine answers with effects.
//!
//! Layers, bottom up:
//! - [`crypto`]: Salsa20/12, Poly1305, C25519 (X25519 + Ed25519 as ZeroTier signs),
//!   AES-GMAC-SIV, the per-peer key and packet armor.
//! - [`identity`]: addresses, identities, their text and binary forms, the memory-hard hash.
//! - [`wire`]: typed views over packets and fragments, each verb's `Repr`, LZ4, reassembly.
//! - [`world`]: planets and moons: parse, verify, update rules, make and sign.
//! - [`vl2`]: virtual networks on the wire: network IDs, MACs, multicast groups, the
//!   Dictionary and network config, credentials (COM, capability, tag, revocation, COO),
//!   rules serialization and the VL2 verbs' `Repr`s.
//! - [`node`]: one identity's peers, paths, roots, relaying, and its joined networks (VL2:
//!   configs, membership gate, frames, multicast, rules), driven by `handle_*` calls and
//!   answering through `poll_*` calls.
//! - [`controller`]: the network controller's decisions (records, authorization, IP
//!   assignment, signed configs and credentials); storage and HTTP are the host's.
//! - [`sim`]: a deterministic network simulator (virtual clock, seeded loss, delay, NAT).
#![forbid(unsafe_code)]

pub mod address;
pub mod controller;
pub mod crypto;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod sim;
pub mod time;
pub mod vl2;
pub mod wire;
pub mod world;

pub use address::Address;
pub use identity::Identity;

pub use time::{Millis, Timestamp};
