//! HELLO (0x01, zt-vl1.md 7.2 and 4.5).
//!
//! A HELLO is parsed in two phases, because its tail is encrypted with `cryptField` under the
//! key that the identity in its head lets the receiver compute:
//!
//! 1. [`HelloRepr::parse`] reads the clear fields up to the planet timestamp and says where the
//!    encrypted tail starts (a payload offset; add 28 for a packet offset).
//! 2. After dearmoring and `cryptField`-decrypting `packet[28 + offset..]`, the caller reads
//!    the moon list with [`HelloRepr::parse_moons`] and stores it in [`HelloRepr::moons`].
//!
//! Sending is the reverse: [`HelloRepr::emit`] writes everything in the clear, then the caller
//! encrypts from [`HelloRepr::tail_offset`] and armors with cipher 0.

use super::inet::InetAddress;
use super::packet::{SoftwareVersion, PROTO_VERSION_MIN};
use super::{Error, Reader};
use crate::identity::{Identity, IdentityError};

/// World type byte of a moon record (`World::TYPE_MOON`).
pub const MOON_RECORD_TYPE: u8 = 0x7f;
/// Bytes of one moon record: type (1), world ID (8), world timestamp (8).
pub const MOON_RECORD_LEN: usize = 17;

/// Why a HELLO could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    #[error(transparent)]
    Wire(#[from] Error),
    #[error("HELLO identity: {0}")]
    Identity(#[from] IdentityError),
}

/// The sender's planet, so the receiver can send a newer one back in OK(HELLO).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PlanetRef {
    pub id: u64,
    pub timestamp: u64,
}

/// One record of the moon list: a moon the sender orbits (with its timestamp) or wants
/// (timestamp 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MoonRecord {
    /// 0x7f for a moon; 1.14 skips records of any other type.
    pub world_type: u8,
    pub id: u64,
    pub timestamp: u64,
}

impl MoonRecord {
    pub fn moon(id: u64, timestamp: u64) -> Self {
        Self {
            world_type: MOON_RECORD_TYPE,
            id,
            timestamp,
        }
    }

    /// Whether 1.14 would use this record.
    pub fn is_moon(&self) -> bool {
        self.world_type == MOON_RECORD_TYPE
    }
}

/// A HELLO payload. Everything after the identity is optional on receipt (1.14 reads each part
/// only if bytes remain), hence the `Option`s; 1.14 always sends all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// 1.14 sends 12; below 4 the HELLO is rejected.
    pub protocol_version: u8,
    pub software_version: SoftwareVersion,
    /// The sender's clock in ms since the Unix epoch, echoed in OK(HELLO).
    pub timestamp: u64,
    /// The sender's identity (public part; a private part is accepted on receipt).
    pub identity: Identity,
    /// The physical address the HELLO was sent to (the receiver's address as the sender sees
    /// it), nil when relayed.
    pub physical_destination: Option<InetAddress>,
    pub planet: Option<PlanetRef>,
    /// The (decrypted) moon list. [`parse`](Self::parse) leaves it `None`; see the module docs.
    pub moons: Option<Vec<MoonRecord>>,
}

impl HelloRepr {
    /// Phase 1: reads the fields before the encrypted tail. Returns the HELLO (with `moons`
    /// unset) and, if bytes remain after them, the payload offset where the tail starts.
    pub fn parse(payload: &[u8]) -> Result<(Self, Option<usize>), HelloError> {
        let mut r = Reader::new(payload);
        let protocol_version = r.u8("HELLO protocol version")?;
        let software_version = SoftwareVersion {
            major: r.u8("HELLO major version")?,
            minor: r.u8("HELLO minor version")?,
            revision: r.u16("HELLO revision")?,
        };
        let timestamp = r.u64("HELLO timestamp")?;
        let (identity, used) = Identity::parse(r.rest())?;
        r.skip(used, "HELLO identity")?;
        if protocol_version < PROTO_VERSION_MIN {
            return Err(Error::ProtocolVersionTooOld(protocol_version).into());
        }

        let mut hello = Self {
            protocol_version,
            software_version,
            timestamp,
            identity,
            physical_destination: None,
            planet: None,
            moons: None,
        };
        if r.remaining() > 0 {
            let (address, used) = InetAddress::parse(r.rest())?;
            r.skip(used, "HELLO physical destination")?;
            hello.physical_destination = Some(address);
        }
        if r.remaining() >= 16 {
            let id = r.u64("HELLO planet ID")?;
            let timestamp = r.u64("HELLO planet timestamp")?;
            hello.planet = Some(PlanetRef { id, timestamp });
        }
        let tail = (r.remaining() > 0).then(|| r.position());
        Ok((hello, tail))
    }

    /// Phase 2: reads the moon list from the decrypted tail, as 1.14 does: fewer than 2 bytes
    /// means no list; a truncated moon record is an error; bytes after the list are ignored.
    pub fn parse_moons(tail: &[u8]) -> Result<Vec<MoonRecord>, Error> {
        let mut r = Reader::new(tail);
        let Ok(count) = r.u16("HELLO moon count") else {
            return Ok(Vec::new());
        };
        // Records are 17 bytes, so this vector never outgrows the input.
        let mut moons = Vec::new();
        for i in 0..count {
            let world_type = r.u8("HELLO moon record type")?;
            // 1.14 skips a non-moon record's 16 bytes without reading them, so only a
            // truncated non-moon record at the very end goes unnoticed.
            if world_type != MOON_RECORD_TYPE && r.remaining() < 16 && i + 1 == count {
                break;
            }
            let id = r.u64("HELLO moon record ID")?;
            let timestamp = r.u64("HELLO moon record timestamp")?;
            moons.push(MoonRecord {
                world_type,
                id,
                timestamp,
            });
        }
        Ok(moons)
    }

    /// Appends the payload, all in the clear. Optional fields are written in order up to the
    /// last one present; an absent field before a present one is written as nil / zero. A
    /// moon list longer than 65535 records is cut there.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.protocol_version);
        out.push(self.software_version.major);
        out.push(self.software_version.minor);
        out.extend_from_slice(&self.software_version.revision.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        self.identity.emit_public(out);
        if self.physical_destination.is_none() && self.planet.is_none() && self.moons.is_none() {
            return;
        }
        self.physical_destination
            .unwrap_or(InetAddress::Nil)
            .emit(out);
        if self.planet.is_none() && self.moons.is_none() {
            return;
        }
        let planet = self.planet.unwrap_or_default();
        out.extend_from_slice(&planet.id.to_be_bytes());
        out.extend_from_slice(&planet.timestamp.to_be_bytes());
        if let Some(moons) = &self.moons {
            let moons = &moons[..moons.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(moons.len() as u16).to_be_bytes());
            for moon in moons {
                out.push(moon.world_type);
                out.extend_from_slice(&moon.id.to_be_bytes());
                out.extend_from_slice(&moon.timestamp.to_be_bytes());
            }
        }
    }

    /// Length [`emit`](Self::emit) appends.
    pub fn buffer_len(&self) -> usize {
        let tail = self
            .moons
            .as_ref()
            .map_or(0, |m| 2 + m.len().min(0xffff) * MOON_RECORD_LEN);
        self.head_len() + tail
    }

    /// Payload offset where the `cryptField`-encrypted tail (the moon list) starts in what
    /// [`emit`](Self::emit) writes, or `None` if it writes no moon list. Add 28 for a packet
    /// offset.
    pub fn tail_offset(&self) -> Option<usize> {
        self.moons.as_ref().map(|_| self.head_len())
    }

    /// Bytes [`emit`](Self::emit) writes before the moon list.
    fn head_len(&self) -> usize {
        let fixed = 13 + crate::identity::IDENTITY_PUBLIC_BINARY_LEN;
        if self.physical_destination.is_none() && self.planet.is_none() && self.moons.is_none() {
            return fixed;
        }
        let address = self
            .physical_destination
            .unwrap_or(InetAddress::Nil)
            .buffer_len();
        if self.planet.is_none() && self.moons.is_none() {
            return fixed + address;
        }
        fixed + address + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moon_list_tolerance_matches_1_14() {
        // Fewer than two bytes: no list.
        assert_eq!(HelloRepr::parse_moons(&[]), Ok(vec![]));
        assert_eq!(HelloRepr::parse_moons(&[0]), Ok(vec![]));
        // One moon record, then ignored trailing bytes.
        let mut tail = hex::decode("00017f000000deadbeef010000000000000005").unwrap();
        tail.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(
            HelloRepr::parse_moons(&tail),
            Ok(vec![MoonRecord::moon(0xdeadbeef01, 5)])
        );
        // A truncated last record of another type goes unnoticed by 1.14; a moon one does not.
        assert_eq!(
            HelloRepr::parse_moons(&hex::decode("000101aabb").unwrap()),
            Ok(vec![])
        );
        assert!(HelloRepr::parse_moons(&hex::decode("00017faabb").unwrap()).is_err());
        // A truncated non-moon record that is not the last is an error.
        assert!(HelloRepr::parse_moons(&hex::decode("000201aabb").unwrap()).is_err());
    }
}
