//! OK (0x03, zt-vl1.md 7.3): the in-re verb and packet ID, then a body that depends on the
//! in-re verb. VL1 bodies are parsed here (HELLO, WHOIS, ECHO); others are kept as bytes for
//! VL2 to read.

use super::inet::InetAddress;
use super::packet::{SoftwareVersion, PROTO_VERSION_MIN};
use super::verb::Verb;
use super::{Error, Reader};
use crate::identity::{Identity, IdentityError};
use crate::world::{World, WorldError};

/// Length of the generic OK header: in-re verb (1) and in-re packet ID (8).
pub const OK_HEADER_LEN: usize = 9;

/// Why an OK could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OkError {
    #[error(transparent)]
    Wire(#[from] Error),
    #[error("OK(WHOIS) identity: {0}")]
    Identity(#[from] IdentityError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkRepr {
    /// The verb of the request, compared unmasked as 1.14 does.
    pub in_re_verb: Verb,
    /// The request's on-wire packet ID (1.14 drops OKs for IDs it did not send).
    pub in_re_packet_id: u64,
    pub body: OkBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OkBody {
    Hello(OkHelloRepr),
    /// The identities the responder knows, in request order (1.14 reads only the first).
    Whois(Vec<Identity>),
    /// An exact copy of the ECHO's payload.
    Echo(Vec<u8>),
    /// The body of an OK in re any other verb (VL2), unparsed.
    Other(Vec<u8>),
}

/// OK(HELLO): the responder's view of the requester, and world updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkHelloRepr {
    /// The HELLO's timestamp, echoed for round-trip time.
    pub timestamp_echo: u64,
    pub protocol_version: u8,
    pub software_version: SoftwareVersion,
    /// The physical address the HELLO arrived from (the requester's external address as the
    /// responder sees it). Optional on receipt.
    pub physical_source: Option<InetAddress>,
    /// The world-update area: zero or more serialized worlds (see [`OkHelloRepr::worlds`]).
    /// `None` when absent (optional on receipt); 1.14 always sends at least the length.
    pub world_updates: Option<Vec<u8>>,
}

/// The generic OK header alone. 1.14 checks the in-re packet ID against the IDs it sent
/// before reading the body; [`OkHeader::parse`] lets a receiver do the same and only then call
/// [`OkBody::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkHeader {
    pub in_re_verb: Verb,
    pub in_re_packet_id: u64,
}

impl OkHeader {
    /// Reads the header; returns it and the body after it.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), Error> {
        let mut r = Reader::new(payload);
        let in_re_verb = Verb::from(r.u8("OK in-re verb")?);
        let in_re_packet_id = r.u64("OK in-re packet ID")?;
        Ok((
            Self {
                in_re_verb,
                in_re_packet_id,
            },
            r.rest(),
        ))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.in_re_verb));
        out.extend_from_slice(&self.in_re_packet_id.to_be_bytes());
    }
}

impl OkBody {
    /// Reads the body of an OK in re `in_re_verb`.
    pub fn parse(in_re_verb: Verb, body: &[u8]) -> Result<Self, OkError> {
        Ok(match in_re_verb {
            Verb::Hello => Self::Hello(OkHelloRepr::parse(body)?),
            Verb::Whois => Self::Whois(parse_whois_identities(body)?),
            Verb::Echo => Self::Echo(body.to_vec()),
            _ => Self::Other(body.to_vec()),
        })
    }
}

impl OkRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, OkError> {
        let (header, body) = OkHeader::parse(payload)?;
        let body = OkBody::parse(header.in_re_verb, body)?;
        Ok(Self {
            in_re_verb: header.in_re_verb,
            in_re_packet_id: header.in_re_packet_id,
            body,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        OkHeader {
            in_re_verb: self.in_re_verb,
            in_re_packet_id: self.in_re_packet_id,
        }
        .emit(out);
        match &self.body {
            OkBody::Hello(hello) => hello.emit(out),
            OkBody::Whois(identities) => {
                for identity in identities {
                    identity.emit_public(out);
                }
            }
            OkBody::Echo(bytes) | OkBody::Other(bytes) => out.extend_from_slice(bytes),
        }
    }

    pub fn buffer_len(&self) -> usize {
        OK_HEADER_LEN
            + match &self.body {
                OkBody::Hello(hello) => hello.buffer_len(),
                OkBody::Whois(identities) => {
                    identities.len() * crate::identity::IDENTITY_PUBLIC_BINARY_LEN
                }
                OkBody::Echo(bytes) | OkBody::Other(bytes) => bytes.len(),
            }
    }
}

/// 1.14 requires the first identity to parse and never looks further; we read on while
/// identities parse and stop quietly at the first that does not.
fn parse_whois_identities(body: &[u8]) -> Result<Vec<Identity>, OkError> {
    let (first, mut pos) = Identity::parse(body)?;
    let mut identities = vec![first];
    while pos < body.len() {
        match Identity::parse(&body[pos..]) {
            Ok((identity, used)) if used > 0 => {
                identities.push(identity);
                pos += used;
            }
            _ => break,
        }
    }
    Ok(identities)
}

impl OkHelloRepr {
    /// Reads the body after the generic OK header. A responder protocol below 4 is rejected
    /// (1.14 ignores such OKs). Unlike 1.14, which leaves a truncated world area unread when
    /// the responder is not an upstream, a world area longer than the packet is an error.
    /// Bytes after the world area are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let timestamp_echo = r.u64("OK(HELLO) timestamp")?;
        let protocol_version = r.u8("OK(HELLO) protocol version")?;
        let software_version = SoftwareVersion {
            major: r.u8("OK(HELLO) major version")?,
            minor: r.u8("OK(HELLO) minor version")?,
            revision: r.u16("OK(HELLO) revision")?,
        };
        if protocol_version < PROTO_VERSION_MIN {
            return Err(Error::ProtocolVersionTooOld(protocol_version));
        }
        let mut ok = Self {
            timestamp_echo,
            protocol_version,
            software_version,
            physical_source: None,
            world_updates: None,
        };
        if r.remaining() > 0 {
            let (address, used) = InetAddress::parse(r.rest())?;
            r.skip(used, "OK(HELLO) physical source")?;
            ok.physical_source = Some(address);
        }
        if r.remaining() >= 2 {
            let len = r.u16("OK(HELLO) world update length")?;
            ok.world_updates = Some(
                r.take(usize::from(len), "OK(HELLO) world updates")?
                    .to_vec(),
            );
        }
        Ok(ok)
    }

    /// Appends the body. Absent optional fields before a present one are written as nil /
    /// empty; a world area over 65535 bytes cannot be expressed and is written empty.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_echo.to_be_bytes());
        out.push(self.protocol_version);
        out.push(self.software_version.major);
        out.push(self.software_version.minor);
        out.extend_from_slice(&self.software_version.revision.to_be_bytes());
        if self.physical_source.is_none() && self.world_updates.is_none() {
            return;
        }
        self.physical_source.unwrap_or(InetAddress::Nil).emit(out);
        if let Some(worlds) = &self.world_updates {
            let worlds = if worlds.len() > usize::from(u16::MAX) {
                &[][..]
            } else {
                worlds
            };
            out.extend_from_slice(&(worlds.len() as u16).to_be_bytes());
            out.extend_from_slice(worlds);
        }
    }

    pub fn buffer_len(&self) -> usize {
        let mut len = 13;
        if self.physical_source.is_some() || self.world_updates.is_some() {
            len += self
                .physical_source
                .unwrap_or(InetAddress::Nil)
                .buffer_len();
        }
        if let Some(worlds) = &self.world_updates {
            len += 2 + if worlds.len() > usize::from(u16::MAX) {
                0
            } else {
                worlds.len()
            };
        }
        len
    }

    /// Parses the world-update area: serialized worlds back to back. Null worlds (type 0) are
    /// skipped, as 1.14 skips them. An error in any world rejects the whole area (1.14 throws
    /// out of its loop there, having already applied the worlds before it).
    pub fn worlds(&self) -> Result<Vec<World>, WorldError> {
        let area = self.world_updates.as_deref().unwrap_or(&[]);
        let mut worlds = Vec::new();
        let mut pos = 0;
        while pos < area.len() {
            let (world, used) = World::parse_or_skip_null(&area[pos..])?;
            worlds.extend(world);
            pos += used;
        }
        Ok(worlds)
    }

    /// The world-update area for `worlds`, to put in [`OkHelloRepr::world_updates`].
    pub fn encode_worlds(worlds: &[World]) -> Vec<u8> {
        let mut area = Vec::new();
        for world in worlds {
            world.emit(&mut area);
        }
        area
    }
}
