//! Worlds: planets and moons (zt-vl1.md section 8).
//!
//! A world is a signed list of roots. Its binary form (8.1) is what `<home>/planet`,
//! `moons.d/*.moon` and OK(HELLO) world updates hold; its signature (8.2) covers a variant of
//! that form, and an installed world accepts an update only if the update is newer and signed
//! by the key the installed world names (8.3).

use std::net::SocketAddr;

use crate::crypto::c25519::{self, KeyPair};
use crate::identity::{Identity, IdentityError, IDENTITY_PUBLIC_BINARY_LEN};
use crate::wire::inet::{emit_inet_address, inet_address_len, InetAddress};
use crate::wire::{Error, Reader};

/// Most roots 1.14 accepts in one world.
pub const MAX_ROOTS: usize = 4;
/// Most stable endpoints 1.14 accepts per root.
pub const MAX_STABLE_ENDPOINTS_PER_ROOT: usize = 32;
/// Largest serialized world 1.14 can hold.
pub const MAX_SERIALIZED_LEN: usize = 8480;
/// ID of the built-in planet, Earth.
pub const EARTH_WORLD_ID: u64 = 0x0000_0000_08ea_c90a;

/// Magic bytes framing the signing message (8.2).
const SIGNING_PREFIX: [u8; 8] = [0x7f; 8];
const SIGNING_SUFFIX: [u8; 8] = [0xf7; 8];

/// Why bytes are not a world 1.14 would accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    #[error(transparent)]
    Wire(#[from] Error),
    #[error("root identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("world type {0} is not planet (1) or moon (127)")]
    UnknownType(u8),
    /// Type 0, "no world": 1.14 reads it and then ignores it.
    #[error("null world (type 0)")]
    Null,
    #[error("{0} roots; at most 4 are allowed")]
    TooManyRoots(u8),
    #[error("{0} stable endpoints for one root; at most 32 are allowed")]
    TooManyEndpoints(u8),
    #[error("world of {0} bytes is longer than the 8480 bytes 1.14 can hold")]
    TooLong(usize),
}

/// A world's type byte. (Type 0, "null", exists in 1.14 only as "no world installed"; it is
/// [`WorldError::Null`] here, and "nothing installed" is the caller's `Option<World>`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorldKind {
    Planet = 1,
    Moon = 127,
}

/// Type byte of a null world.
const NULL_WORLD_TYPE: u8 = 0;

/// A root server: its identity and the physical addresses to reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub identity: Identity,
    /// Nil and reserved-type endpoints, which 1.14 keeps as nil addresses, are dropped on
    /// parsing; a world that contains any therefore does not re-emit (or verify) exactly.
    pub stable_endpoints: Vec<SocketAddr>,
}

/// A planet or moon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub kind: WorldKind,
    pub id: u64,
    /// Revision; ms since the epoch by convention. Updates must increase it.
    pub timestamp: u64,
    /// C25519 public key that must sign the next update.
    pub updates_must_be_signed_by: [u8; 64],
    pub signature: [u8; 96],
    pub roots: Vec<Root>,
}

impl World {
    /// Reads one world from the start of `bytes`; returns it and the bytes it used. Applies
    /// 1.14's limits (4 roots, 32 endpoints per root) and the 8480-byte size limit. A moon's
    /// trailing dictionary is skipped (1.14 ignores it and writes an empty one); unlike 1.14
    /// we require its bytes to be present.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WorldError> {
        match Self::parse_or_skip_null(bytes)? {
            (Some(world), used) => Ok((world, used)),
            (None, _) => Err(WorldError::Null),
        }
    }

    /// [`parse`](Self::parse), except that a null world (type 0) is read and skipped as 1.14
    /// does in an OK(HELLO) world-update area: `None` and its length.
    pub(crate) fn parse_or_skip_null(bytes: &[u8]) -> Result<(Option<Self>, usize), WorldError> {
        let mut r = Reader::new(bytes);
        let kind = match r.u8("world type")? {
            NULL_WORLD_TYPE => None,
            0x01 => Some(WorldKind::Planet),
            0x7f => Some(WorldKind::Moon),
            other => return Err(WorldError::UnknownType(other)),
        };
        let id = r.u64("world ID")?;
        let timestamp = r.u64("world timestamp")?;
        let updates_must_be_signed_by = r.array("world update key")?;
        let signature = r.array("world signature")?;
        let root_count = r.u8("world root count")?;
        if usize::from(root_count) > MAX_ROOTS {
            return Err(WorldError::TooManyRoots(root_count));
        }
        let mut roots = Vec::with_capacity(usize::from(root_count));
        for _ in 0..root_count {
            let (identity, used) = Identity::parse(r.rest())?;
            r.skip(used, "root identity")?;
            let endpoint_count = r.u8("root endpoint count")?;
            if usize::from(endpoint_count) > MAX_STABLE_ENDPOINTS_PER_ROOT {
                return Err(WorldError::TooManyEndpoints(endpoint_count));
            }
            let mut stable_endpoints = Vec::with_capacity(usize::from(endpoint_count));
            for _ in 0..endpoint_count {
                let (endpoint, used) = InetAddress::parse(r.rest())?;
                r.skip(used, "root endpoint")?;
                stable_endpoints.extend(endpoint.socket_addr());
            }
            roots.push(Root {
                identity,
                stable_endpoints,
            });
        }
        if kind == Some(WorldKind::Moon) {
            let dictionary_len = r.u16("moon dictionary length")?;
            r.skip(usize::from(dictionary_len), "moon dictionary")?;
        }
        let used = r.position();
        if used > MAX_SERIALIZED_LEN {
            return Err(WorldError::TooLong(used));
        }
        let Some(kind) = kind else {
            return Ok((None, used));
        };
        let world = Self {
            kind,
            id,
            timestamp,
            updates_must_be_signed_by,
            signature,
            roots,
        };
        Ok((Some(world), used))
    }

    /// Appends the binary form (8.1). Root identities are written public-only, moons get an
    /// empty dictionary, as 1.14 writes them.
    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_fields(out, true);
    }

    /// Length [`emit`](Self::emit) appends.
    pub fn buffer_len(&self) -> usize {
        let roots: usize = self
            .roots
            .iter()
            .take(usize::from(u8::MAX))
            .map(|root| {
                let endpoints = root.stable_endpoints.iter().take(usize::from(u8::MAX));
                IDENTITY_PUBLIC_BINARY_LEN
                    + 1
                    + endpoints.map(|e| inet_address_len(Some(e))).sum::<usize>()
            })
            .sum();
        let dictionary = if self.kind == WorldKind::Moon { 2 } else { 0 };
        1 + 8 + 8 + 64 + 96 + 1 + roots + dictionary
    }

    /// The message the signature covers (8.2): the binary form without the signature, with
    /// an empty moon dictionary, framed by eight 0x7f and eight 0xf7 bytes.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut message = SIGNING_PREFIX.to_vec();
        self.emit_fields(&mut message, false);
        message.extend_from_slice(&SIGNING_SUFFIX);
        message
    }

    /// Whether this world's signature was made by `key` (a 64-byte C25519 public key).
    pub fn verify_signature(&self, key: &[u8; 64]) -> bool {
        c25519::verify(key, &self.signing_message(), &self.signature)
    }

    /// A world signed with `signing`, as 1.14's `World::make` / mkworld / `idtool genmoon`.
    /// `updates_must_be_signed_by` names the key for the next update (it may be `signing`'s
    /// public key, or a new one to rotate keys).
    pub fn make(
        kind: WorldKind,
        id: u64,
        timestamp: u64,
        roots: Vec<Root>,
        signing: &KeyPair,
        updates_must_be_signed_by: [u8; 64],
    ) -> Self {
        let mut world = Self {
            kind,
            id,
            timestamp,
            updates_must_be_signed_by,
            signature: [0u8; 96],
            roots,
        };
        world.signature = c25519::sign(&signing.secret, &signing.public, &world.signing_message());
        world
    }

    /// 1.14's update rule (8.3): anything replaces a world with ID 0; otherwise only a world of
    /// the same type and ID with a strictly larger timestamp whose signature verifies against
    /// this world's `updates_must_be_signed_by`. (When nothing is installed at all, 1.14
    /// accepts any world unchecked; that case is the caller's `None`.)
    pub fn should_be_replaced_by(&self, candidate: &World) -> bool {
        if self.id == 0 {
            return true;
        }
        self.kind == candidate.kind
            && self.id == candidate.id
            && self.timestamp < candidate.timestamp
            && candidate.verify_signature(&self.updates_must_be_signed_by)
    }

    fn emit_fields(&self, out: &mut Vec<u8>, with_signature: bool) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.updates_must_be_signed_by);
        if with_signature {
            out.extend_from_slice(&self.signature);
        }
        // Counts are one byte; anything past 255 cannot be expressed and is left out (1.14
        // rejects more than 4 roots and 32 endpoints on reading anyway).
        let roots = &self.roots[..self.roots.len().min(usize::from(u8::MAX))];
        out.push(roots.len() as u8);
        for root in roots {
            root.identity.emit_public(out);
            let endpoints =
                &root.stable_endpoints[..root.stable_endpoints.len().min(usize::from(u8::MAX))];
            out.push(endpoints.len() as u8);
            for endpoint in endpoints {
                emit_inet_address(Some(*endpoint), out);
            }
        }
        if self.kind == WorldKind::Moon {
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// The built-in planet, Earth, as 1.14.1 ships it (`ZT_DEFAULT_WORLD`, zt-vl1.md 8.4):
/// ID 149604618, timestamp 1644592324813, four roots.
pub const DEFAULT_PLANET: [u8; 570] = [
    0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0xea, 0xc9, 0x0a, 0x00, 0x00, 0x01, 0x7e, 0xe9, 0x57, 0x60,
    0xcd, 0xb8, 0xb3, 0x88, 0xa4, 0x69, 0x22, 0x14, 0x91, 0xaa, 0x9a, 0xcd, 0x66, 0xcc, 0x76, 0x4c,
    0xde, 0xfd, 0x56, 0x03, 0x9f, 0x10, 0x67, 0xae, 0x15, 0xe6, 0x9c, 0x6f, 0xb4, 0x2d, 0x7b, 0x55,
    0x33, 0x0e, 0x3f, 0xda, 0xac, 0x52, 0x9c, 0x07, 0x92, 0xfd, 0x73, 0x40, 0xa6, 0xaa, 0x21, 0xab,
    0xa8, 0xa4, 0x89, 0xfd, 0xae, 0xa4, 0x4a, 0x39, 0xbf, 0x2d, 0x00, 0x65, 0x9a, 0xc9, 0xc8, 0x18,
    0xeb, 0x36, 0x00, 0x92, 0x76, 0x37, 0xef, 0x4d, 0x14, 0x04, 0xa4, 0x4d, 0x54, 0x46, 0x84, 0x85,
    0x13, 0x79, 0x75, 0x1f, 0xaa, 0x79, 0xb4, 0xc4, 0xea, 0x85, 0x04, 0x01, 0x75, 0xea, 0x06, 0x58,
    0x60, 0x48, 0x24, 0x02, 0xe1, 0xeb, 0x34, 0x20, 0x52, 0x00, 0x0e, 0x62, 0x90, 0x06, 0x1a, 0x9b,
    0xe0, 0xcd, 0x29, 0x3c, 0x8b, 0x55, 0xf1, 0xc3, 0xd2, 0x52, 0x48, 0x08, 0xaf, 0xc5, 0x49, 0x22,
    0x08, 0x0e, 0x35, 0x39, 0xa7, 0x5a, 0xdd, 0xc3, 0xce, 0xf0, 0xf6, 0xad, 0x26, 0x0d, 0x58, 0x82,
    0x93, 0xbb, 0x77, 0x86, 0xe7, 0x1e, 0xfa, 0x4b, 0x90, 0x57, 0xda, 0xd9, 0x86, 0x7a, 0xfe, 0x12,
    0xdd, 0x04, 0xca, 0xfe, 0x9e, 0xfe, 0xb9, 0x00, 0xcc, 0xde, 0xf7, 0x6b, 0xc7, 0xb9, 0x7d, 0xed,
    0x90, 0x4e, 0xab, 0xc5, 0xdf, 0x09, 0x88, 0x6d, 0x9c, 0x15, 0x14, 0xa6, 0x10, 0x03, 0x6c, 0xb9,
    0x13, 0x9c, 0xc2, 0x14, 0x00, 0x1a, 0x29, 0x58, 0x97, 0x8e, 0xfc, 0xec, 0x15, 0x71, 0x2d, 0xd3,
    0x94, 0x8c, 0x6e, 0x6b, 0x3a, 0x8e, 0x89, 0x3d, 0xf0, 0x1f, 0xf4, 0x93, 0xd1, 0xf8, 0xd9, 0x80,
    0x6a, 0x86, 0x0c, 0x54, 0x20, 0x57, 0x1b, 0xf0, 0x00, 0x02, 0x04, 0x68, 0xc2, 0x08, 0x86, 0x27,
    0x09, 0x06, 0x26, 0x05, 0x98, 0x80, 0x02, 0x00, 0x12, 0x00, 0x00, 0x30, 0x05, 0x71, 0x0e, 0x34,
    0x00, 0x51, 0x27, 0x09, 0x77, 0x8c, 0xde, 0x71, 0x90, 0x00, 0x3f, 0x66, 0x81, 0xa9, 0x9e, 0x5a,
    0xd1, 0x89, 0x5e, 0x9f, 0xba, 0x33, 0xe6, 0x21, 0x2d, 0x44, 0x54, 0xe1, 0x68, 0xbc, 0xec, 0x71,
    0x12, 0x10, 0x1b, 0xf0, 0x00, 0x95, 0x6e, 0xd8, 0xe9, 0x2e, 0x42, 0x89, 0x2c, 0xb6, 0xf2, 0xec,
    0x41, 0x08, 0x81, 0xa8, 0x4a, 0xb1, 0x9d, 0xa5, 0x0e, 0x12, 0x87, 0xba, 0x3d, 0x92, 0x6c, 0x3a,
    0x1f, 0x75, 0x5c, 0xcc, 0xf2, 0x99, 0xa1, 0x20, 0x70, 0x55, 0x00, 0x02, 0x04, 0x67, 0xc3, 0x67,
    0x42, 0x27, 0x09, 0x06, 0x26, 0x05, 0x98, 0x80, 0x04, 0x00, 0x00, 0xc3, 0x02, 0x54, 0xf2, 0xbc,
    0xa1, 0xf7, 0x00, 0x19, 0x27, 0x09, 0x62, 0xf8, 0x65, 0xae, 0x71, 0x00, 0xe2, 0x07, 0x6c, 0x57,
    0xde, 0x87, 0x0e, 0x62, 0x88, 0xd7, 0xd5, 0xe7, 0x40, 0x44, 0x08, 0xb1, 0x54, 0x5e, 0xfc, 0xa3,
    0x7d, 0x67, 0xf7, 0x7b, 0x87, 0xe9, 0xe5, 0x41, 0x68, 0xc2, 0x5d, 0x3e, 0xf1, 0xa9, 0xab, 0xf2,
    0x90, 0x5e, 0xa5, 0xe7, 0x85, 0xc0, 0x1d, 0xff, 0x23, 0x88, 0x7a, 0xd4, 0x23, 0x2d, 0x95, 0xc7,
    0xa8, 0xfd, 0x2c, 0x27, 0x11, 0x1a, 0x72, 0xbd, 0x15, 0x93, 0x22, 0xdc, 0x00, 0x02, 0x04, 0x32,
    0x07, 0xfc, 0x8a, 0x27, 0x09, 0x06, 0x20, 0x01, 0x49, 0xf0, 0xd0, 0xdb, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x27, 0x09, 0xca, 0xfe, 0x04, 0xeb, 0xa9, 0x00, 0x6c, 0x6a,
    0x9d, 0x1d, 0xea, 0x55, 0xc1, 0x61, 0x6b, 0xfe, 0x2a, 0x2b, 0x8f, 0x0f, 0xf9, 0xa8, 0xca, 0xca,
    0xf7, 0x03, 0x74, 0xfb, 0x1f, 0x39, 0xe3, 0xbe, 0xf8, 0x1c, 0xbf, 0xeb, 0xef, 0x17, 0xb7, 0x22,
    0x82, 0x68, 0xa0, 0xa2, 0xa2, 0x9d, 0x34, 0x88, 0xc7, 0x52, 0x56, 0x5c, 0x6c, 0x96, 0x5c, 0xbd,
    0x65, 0x06, 0xec, 0x24, 0x39, 0x7c, 0xc8, 0xa5, 0xd9, 0xd1, 0x52, 0x85, 0xa8, 0x7f, 0x00, 0x02,
    0x04, 0x54, 0x11, 0x35, 0x9b, 0x27, 0x09, 0x06, 0x2a, 0x02, 0x6e, 0xa0, 0xd4, 0x05, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99, 0x93, 0x27, 0x09,
];

/// The built-in planet, parsed (see [`DEFAULT_PLANET`]).
pub fn default_planet() -> World {
    match World::parse(&DEFAULT_PLANET) {
        Ok((world, _)) => world,
        // The bytes are a constant checked by the test suite; this cannot happen.
        Err(e) => unreachable!("the built-in planet does not parse: {e}"),
    }
}
