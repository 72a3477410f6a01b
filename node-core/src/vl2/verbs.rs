//! Payloads of the VL2 verbs (zt-vl2.md 2): one `Repr` per verb with `parse`, `emit` and
//! `buffer_len`, in the manner of [`crate::wire`]. A payload is the packet's plaintext from
//! offset 28 (after the verb byte); OK and ERROR bodies start after the in-re verb and packet
//! ID (see [`crate::wire::OkHeader`] and [`crate::wire::ErrorRepr`]).
//!
//! As in 1.14, optional trailing fields may be absent and bytes after the last field 1.14
//! reads are ignored. Flag bits that announce optional fields (COM, gather limit, source MAC)
//! are derived from the fields: `parse` clears them from a repr's `flags` and `emit` sets
//! them from the fields, so a repr cannot announce a field it lacks.

use super::credentials::{
    Capability, CertificateOfMembership, CertificateOfOwnership, Revocation, Tag,
};
use super::dictionary::NETWORK_CONFIG_CAPACITY;
use super::network::{Mac, MulticastGroup, NetworkId, MULTICAST_GROUP_LEN};
use super::{
    read_u32, DecodeError, Reader, SignError, VerifyError, SIGNATURE_LEN, SIGNATURE_TYPE_C25519,
};
use crate::address::ADDRESS_LEN;
use crate::wire::{ErrorCode, Verb};
use crate::{Address, Identity};

fn read_mac(r: &mut Reader<'_>, what: &'static str) -> Result<Mac, DecodeError> {
    Ok(Mac(r.array(what)?))
}

fn read_group(r: &mut Reader<'_>) -> Result<MulticastGroup, DecodeError> {
    Ok(MulticastGroup {
        mac: read_mac(r, "multicast MAC")?,
        adi: read_u32(r, "multicast ADI")?,
    })
}

fn read_nwid(r: &mut Reader<'_>) -> Result<NetworkId, DecodeError> {
    Ok(NetworkId(r.u64("network ID")?))
}

fn com_len(com: Option<&CertificateOfMembership>) -> usize {
    com.map_or(0, CertificateOfMembership::buffer_len)
}

// ---------------------------------------------------------------------------------------
// FRAME and EXT_FRAME
// ---------------------------------------------------------------------------------------

/// FRAME (0x06): a frame from the sender's own port MAC to ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRepr {
    pub network_id: NetworkId,
    pub ethertype: u16,
    /// The Ethernet payload (after the 14-byte header). 1.14 ignores empty frames.
    pub payload: Vec<u8>,
}

/// A FRAME parsed in place: [`FrameRepr`] with the payload borrowed (the receive path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub network_id: NetworkId,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

impl<'a> FrameView<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        Ok(Self {
            network_id: read_nwid(&mut r)?,
            ethertype: r.u16("ethertype")?,
            payload: r.rest(),
        })
    }

    /// Writes the FRAME payload for these fields, as [`FrameRepr::emit`] does.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(self.payload);
    }
}

impl FrameRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let view = FrameView::parse(payload)?;
        Ok(Self {
            network_id: view.network_id,
            ethertype: view.ethertype,
            payload: view.payload.to_vec(),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn buffer_len(&self) -> usize {
        10 + self.payload.len()
    }
}

/// EXT_FRAME flag: a COM follows the flags (legacy; 1.14 parses but never sends it).
pub const EXT_FRAME_FLAG_COM: u8 = 0x01;
/// EXT_FRAME flag: the receiver answers OK(EXT_FRAME, nwid).
pub const EXT_FRAME_FLAG_ACK: u8 = 0x10;
/// EXT_FRAME flag bits holding the subtype (`subtype << 1`, as 1.14's code does).
pub const EXT_FRAME_SUBTYPE_MASK: u8 = 0x0e;

/// Why a frame copy was sent (EXT_FRAME subtype, bits 0x0e).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtFrameSubtype {
    Normal = 0,
    TeeOutbound = 1,
    RedirectOutbound = 2,
    WatchOutbound = 3,
    TeeInbound = 4,
    RedirectInbound = 5,
    WatchInbound = 6,
    Unused = 7,
}

/// EXT_FRAME (0x07): a frame with explicit MACs (bridged, or a rule's copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtFrameRepr {
    pub network_id: NetworkId,
    /// The other flag bits; bit 0x01 is derived from `com`.
    pub flags: u8,
    pub com: Option<CertificateOfMembership>,
    pub to: Mac,
    pub from: Mac,
    pub ethertype: u16,
    pub payload: Vec<u8>,
}

impl ExtFrameRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        let flags = r.u8("EXT_FRAME flags")?;
        let com = if flags & EXT_FRAME_FLAG_COM != 0 {
            Some(CertificateOfMembership::read(&mut r)?)
        } else {
            None
        };
        Ok(Self {
            network_id,
            flags: flags & !EXT_FRAME_FLAG_COM,
            com,
            to: read_mac(&mut r, "destination MAC")?,
            from: read_mac(&mut r, "source MAC")?,
            ethertype: r.u16("ethertype")?,
            payload: r.rest().to_vec(),
        })
    }

    pub fn ack_requested(&self) -> bool {
        self.flags & EXT_FRAME_FLAG_ACK != 0
    }

    pub fn subtype(&self) -> ExtFrameSubtype {
        match (self.flags & EXT_FRAME_SUBTYPE_MASK) >> 1 {
            0 => ExtFrameSubtype::Normal,
            1 => ExtFrameSubtype::TeeOutbound,
            2 => ExtFrameSubtype::RedirectOutbound,
            3 => ExtFrameSubtype::WatchOutbound,
            4 => ExtFrameSubtype::TeeInbound,
            5 => ExtFrameSubtype::RedirectInbound,
            6 => ExtFrameSubtype::WatchInbound,
            _ => ExtFrameSubtype::Unused,
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        let com_bit = if self.com.is_some() {
            EXT_FRAME_FLAG_COM
        } else {
            0
        };
        out.push((self.flags & !EXT_FRAME_FLAG_COM) | com_bit);
        if let Some(com) = &self.com {
            com.emit(out);
        }
        out.extend_from_slice(&self.to.0);
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn buffer_len(&self) -> usize {
        9 + com_len(self.com.as_ref()) + 14 + self.payload.len()
    }
}

// ---------------------------------------------------------------------------------------
// MULTICAST_LIKE, MULTICAST_GATHER
// ---------------------------------------------------------------------------------------

/// Bytes of one LIKE tuple.
const LIKE_LEN: usize = 8 + MULTICAST_GROUP_LEN;

/// MULTICAST_LIKE (0x09): subscriptions, as (network, group) tuples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MulticastLikeRepr {
    pub likes: Vec<(NetworkId, MulticastGroup)>,
}

impl MulticastLikeRepr {
    /// Reads tuples to the end; a partial tuple is an error (1.14 throws on it, after
    /// having acted on the tuples before it).
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut likes = Vec::with_capacity(payload.len() / LIKE_LEN);
        while r.remaining() > 0 {
            likes.push((read_nwid(&mut r)?, read_group(&mut r)?));
        }
        Ok(Self { likes })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        for (nwid, group) in &self.likes {
            out.extend_from_slice(&nwid.to_bytes());
            group.emit(out);
        }
    }

    pub fn buffer_len(&self) -> usize {
        self.likes.len() * LIKE_LEN
    }
}

/// MULTICAST_GATHER flag: a COM follows the gather limit.
pub const GATHER_FLAG_COM: u8 = 0x01;

/// MULTICAST_GATHER (0x0d): asks for up to `gather_limit` members of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastGatherRepr {
    pub network_id: NetworkId,
    /// The other flag bits; bit 0x01 is derived from `com`.
    pub flags: u8,
    pub group: MulticastGroup,
    pub gather_limit: u32,
    /// 1.14 discards a COM that does not parse and answers anyway; so do we (`None`).
    pub com: Option<CertificateOfMembership>,
}

impl MulticastGatherRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        let flags = r.u8("MULTICAST_GATHER flags")?;
        let group = read_group(&mut r)?;
        let gather_limit = read_u32(&mut r, "gather limit")?;
        let com = if flags & GATHER_FLAG_COM != 0 {
            CertificateOfMembership::parse(r.rest())
                .ok()
                .map(|(com, _)| com)
        } else {
            None
        };
        Ok(Self {
            network_id,
            flags: flags & !GATHER_FLAG_COM,
            group,
            gather_limit,
            com,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        let com_bit = if self.com.is_some() {
            GATHER_FLAG_COM
        } else {
            0
        };
        out.push((self.flags & !GATHER_FLAG_COM) | com_bit);
        self.group.emit(out);
        out.extend_from_slice(&self.gather_limit.to_be_bytes());
        if let Some(com) = &self.com {
            com.emit(out);
        }
    }

    pub fn buffer_len(&self) -> usize {
        8 + 1 + MULTICAST_GROUP_LEN + 4 + com_len(self.com.as_ref())
    }
}

/// Reads `[2] n ‖ [5 × n] addresses`.
fn read_addresses(r: &mut Reader<'_>) -> Result<Vec<Address>, DecodeError> {
    let count = r.u16("address count")?;
    let bytes = r.take(usize::from(count) * ADDRESS_LEN, "member addresses")?;
    Ok(bytes
        .chunks_exact(ADDRESS_LEN)
        .map(Address::from_bytes)
        .collect())
}

fn emit_addresses(addresses: &[Address], out: &mut Vec<u8>) {
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    for a in addresses {
        out.extend_from_slice(&a.to_bytes());
    }
}

/// The body of OK(MULTICAST_GATHER): members of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkMulticastGatherRepr {
    pub network_id: NetworkId,
    pub group: MulticastGroup,
    /// Members the responder knows in all (1.14 receivers ignore it).
    pub total_known: u32,
    /// At most 65535.
    pub members: Vec<Address>,
}

impl OkMulticastGatherRepr {
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        Ok(Self {
            network_id: read_nwid(&mut r)?,
            group: read_group(&mut r)?,
            total_known: read_u32(&mut r, "total known members")?,
            members: read_addresses(&mut r)?,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        self.group.emit(out);
        out.extend_from_slice(&self.total_known.to_be_bytes());
        emit_addresses(&self.members, out);
    }

    pub fn buffer_len(&self) -> usize {
        8 + MULTICAST_GROUP_LEN + 4 + 2 + self.members.len() * ADDRESS_LEN
    }
}

// ---------------------------------------------------------------------------------------
// MULTICAST_FRAME
// ---------------------------------------------------------------------------------------

/// MULTICAST_FRAME flags.
pub const MULTICAST_FRAME_FLAG_COM: u8 = 0x01;
pub const MULTICAST_FRAME_FLAG_GATHER_LIMIT: u8 = 0x02;
pub const MULTICAST_FRAME_FLAG_SOURCE_MAC: u8 = 0x04;
/// "Please replicate": sent to a multicast replicator.
pub const MULTICAST_FRAME_FLAG_REPLICATE: u8 = 0x08;

/// MULTICAST_FRAME (0x0e): a frame to a multicast group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastFrameRepr {
    pub network_id: NetworkId,
    /// The other flag bits (e.g. 0x08 replicate); 0x01, 0x02, 0x04 are derived from the
    /// optional fields.
    pub flags: u8,
    pub com: Option<CertificateOfMembership>,
    /// Members wanted back in an OK.
    pub gather_limit: Option<u32>,
    /// When absent the source is the sender's port MAC.
    pub source: Option<Mac>,
    pub group: MulticastGroup,
    pub ethertype: u16,
    pub payload: Vec<u8>,
}

impl MulticastFrameRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        let flags = r.u8("MULTICAST_FRAME flags")?;
        let com = if flags & MULTICAST_FRAME_FLAG_COM != 0 {
            Some(CertificateOfMembership::read(&mut r)?)
        } else {
            None
        };
        let gather_limit = if flags & MULTICAST_FRAME_FLAG_GATHER_LIMIT != 0 {
            Some(read_u32(&mut r, "gather limit")?)
        } else {
            None
        };
        let source = if flags & MULTICAST_FRAME_FLAG_SOURCE_MAC != 0 {
            Some(read_mac(&mut r, "source MAC")?)
        } else {
            None
        };
        Ok(Self {
            network_id,
            flags: flags
                & !(MULTICAST_FRAME_FLAG_COM
                    | MULTICAST_FRAME_FLAG_GATHER_LIMIT
                    | MULTICAST_FRAME_FLAG_SOURCE_MAC),
            com,
            gather_limit,
            source,
            group: read_group(&mut r)?,
            ethertype: r.u16("ethertype")?,
            payload: r.rest().to_vec(),
        })
    }

    pub fn replicate_requested(&self) -> bool {
        self.flags & MULTICAST_FRAME_FLAG_REPLICATE != 0
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        let mut flags = self.flags
            & !(MULTICAST_FRAME_FLAG_COM
                | MULTICAST_FRAME_FLAG_GATHER_LIMIT
                | MULTICAST_FRAME_FLAG_SOURCE_MAC);
        if self.com.is_some() {
            flags |= MULTICAST_FRAME_FLAG_COM;
        }
        if self.gather_limit.is_some() {
            flags |= MULTICAST_FRAME_FLAG_GATHER_LIMIT;
        }
        if self.source.is_some() {
            flags |= MULTICAST_FRAME_FLAG_SOURCE_MAC;
        }
        out.push(flags);
        if let Some(com) = &self.com {
            com.emit(out);
        }
        if let Some(limit) = self.gather_limit {
            out.extend_from_slice(&limit.to_be_bytes());
        }
        if let Some(source) = self.source {
            out.extend_from_slice(&source.0);
        }
        self.group.emit(out);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn buffer_len(&self) -> usize {
        9 + com_len(self.com.as_ref())
            + self.gather_limit.map_or(0, |_| 4)
            + self.source.map_or(0, |_| 6)
            + MULTICAST_GROUP_LEN
            + 2
            + self.payload.len()
    }
}

/// OK(MULTICAST_FRAME) flags.
pub const OK_MULTICAST_FRAME_FLAG_COM: u8 = 0x01;
pub const OK_MULTICAST_FRAME_FLAG_GATHERED: u8 = 0x02;

/// Members gathered in answer to a MULTICAST_FRAME's gather limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatheredMembers {
    pub total_known: u32,
    pub members: Vec<Address>,
}

/// The body of OK(MULTICAST_FRAME).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkMulticastFrameRepr {
    pub network_id: NetworkId,
    pub group: MulticastGroup,
    /// The other flag bits; 0x01 and 0x02 are derived from the optional fields.
    pub flags: u8,
    pub com: Option<CertificateOfMembership>,
    pub gathered: Option<GatheredMembers>,
}

impl OkMulticastFrameRepr {
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let network_id = read_nwid(&mut r)?;
        let group = read_group(&mut r)?;
        let flags = r.u8("OK(MULTICAST_FRAME) flags")?;
        let com = if flags & OK_MULTICAST_FRAME_FLAG_COM != 0 {
            Some(CertificateOfMembership::read(&mut r)?)
        } else {
            None
        };
        let gathered = if flags & OK_MULTICAST_FRAME_FLAG_GATHERED != 0 {
            Some(GatheredMembers {
                total_known: read_u32(&mut r, "total known members")?,
                members: read_addresses(&mut r)?,
            })
        } else {
            None
        };
        Ok(Self {
            network_id,
            group,
            flags: flags & !(OK_MULTICAST_FRAME_FLAG_COM | OK_MULTICAST_FRAME_FLAG_GATHERED),
            com,
            gathered,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        self.group.emit(out);
        let mut flags =
            self.flags & !(OK_MULTICAST_FRAME_FLAG_COM | OK_MULTICAST_FRAME_FLAG_GATHERED);
        if self.com.is_some() {
            flags |= OK_MULTICAST_FRAME_FLAG_COM;
        }
        if self.gathered.is_some() {
            flags |= OK_MULTICAST_FRAME_FLAG_GATHERED;
        }
        out.push(flags);
        if let Some(com) = &self.com {
            com.emit(out);
        }
        if let Some(g) = &self.gathered {
            out.extend_from_slice(&g.total_known.to_be_bytes());
            emit_addresses(&g.members, out);
        }
    }

    pub fn buffer_len(&self) -> usize {
        8 + MULTICAST_GROUP_LEN
            + 1
            + com_len(self.com.as_ref())
            + self
                .gathered
                .as_ref()
                .map_or(0, |g| 4 + 2 + g.members.len() * ADDRESS_LEN)
    }
}

// ---------------------------------------------------------------------------------------
// NETWORK_CREDENTIALS
// ---------------------------------------------------------------------------------------

/// NETWORK_CREDENTIALS (0x0a): COMs, then counted capabilities, tags, revocations, COOs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkCredentialsRepr {
    pub coms: Vec<CertificateOfMembership>,
    pub capabilities: Vec<Capability>,
    pub tags: Vec<Tag>,
    pub revocations: Vec<Revocation>,
    pub certificates_of_ownership: Vec<CertificateOfOwnership>,
}

impl NetworkCredentialsRepr {
    /// Reads what 1.14 reads: COMs up to a 0x00 byte (or the end), then each counted section
    /// if the payload has not ended before its count. A credential that does not parse is an
    /// error for the whole payload (1.14 stops at it, having applied the ones before).
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut out = Self::default();
        while r.remaining() > 0 && r.rest()[0] != 0 {
            out.coms.push(CertificateOfMembership::read(&mut r)?);
        }
        if r.remaining() == 0 {
            return Ok(out);
        }
        r.skip(1, "COM terminator")?;
        if r.remaining() == 0 {
            return Ok(out);
        }
        for _ in 0..r.u16("capability count")? {
            out.capabilities.push(Capability::read(&mut r)?);
        }
        if r.remaining() == 0 {
            return Ok(out);
        }
        for _ in 0..r.u16("tag count")? {
            out.tags.push(Tag::read(&mut r)?);
        }
        if r.remaining() == 0 {
            return Ok(out);
        }
        for _ in 0..r.u16("revocation count")? {
            out.revocations.push(Revocation::read(&mut r)?);
        }
        if r.remaining() == 0 {
            return Ok(out);
        }
        for _ in 0..r.u16("COO count")? {
            out.certificates_of_ownership
                .push(CertificateOfOwnership::read(&mut r)?);
        }
        Ok(out)
    }

    /// Writes all sections, as 1.14's `pushCredentials` does (counts even when zero).
    pub fn emit(&self, out: &mut Vec<u8>) {
        self.coms.iter().for_each(|c| c.emit(out));
        out.push(0);
        out.extend_from_slice(&(self.capabilities.len() as u16).to_be_bytes());
        self.capabilities.iter().for_each(|c| c.emit(out));
        out.extend_from_slice(&(self.tags.len() as u16).to_be_bytes());
        self.tags.iter().for_each(|t| t.emit(out));
        out.extend_from_slice(&(self.revocations.len() as u16).to_be_bytes());
        self.revocations.iter().for_each(|v| v.emit(out));
        out.extend_from_slice(&(self.certificates_of_ownership.len() as u16).to_be_bytes());
        self.certificates_of_ownership
            .iter()
            .for_each(|c| c.emit(out));
    }

    pub fn buffer_len(&self) -> usize {
        1 + 8
            + self
                .coms
                .iter()
                .map(CertificateOfMembership::buffer_len)
                .sum::<usize>()
            + self
                .capabilities
                .iter()
                .map(Capability::buffer_len)
                .sum::<usize>()
            + self.tags.iter().map(Tag::buffer_len).sum::<usize>()
            + self
                .revocations
                .iter()
                .map(Revocation::buffer_len)
                .sum::<usize>()
            + self
                .certificates_of_ownership
                .iter()
                .map(CertificateOfOwnership::buffer_len)
                .sum::<usize>()
    }
}

// ---------------------------------------------------------------------------------------
// NETWORK_CONFIG_REQUEST and config chunks
// ---------------------------------------------------------------------------------------

/// NETWORK_CONFIG_REQUEST (0x0b).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfigRequestRepr {
    pub network_id: NetworkId,
    /// The metadata dictionary's bytes (see [`super::config::RequestMetadata`]).
    pub metadata: Vec<u8>,
    /// Revision and timestamp of the config the requester has (0 if none); ignored by 1.14
    /// controllers and read as 0 when absent.
    pub have_revision: u64,
    pub have_timestamp: u64,
}

impl NetworkConfigRequestRepr {
    /// Reads the request. As 1.14's controller, a missing metadata length means no metadata
    /// and missing trailing revision/timestamp fields read as 0.
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        if r.remaining() < 2 {
            return Ok(Self {
                network_id,
                metadata: Vec::new(),
                have_revision: 0,
                have_timestamp: 0,
            });
        }
        let len = r.u16("metadata length")?;
        let metadata = r.take(usize::from(len), "metadata")?.to_vec();
        let (have_revision, have_timestamp) = if r.remaining() >= 16 {
            (r.u64("revision")?, r.u64("timestamp")?)
        } else {
            (0, 0)
        };
        Ok(Self {
            network_id,
            metadata,
            have_revision,
            have_timestamp,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&(self.metadata.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.metadata);
        out.extend_from_slice(&self.have_revision.to_be_bytes());
        out.extend_from_slice(&self.have_timestamp.to_be_bytes());
    }

    pub fn buffer_len(&self) -> usize {
        8 + 2 + self.metadata.len() + 16
    }
}

/// `ZT_PROTO_MAX_PACKET_LENGTH − (28 + 256)`: the largest chunk a controller sends.
pub const MAX_CONFIG_CHUNK_LEN: usize = 9740;
/// Config chunk flag: the receiver forwards the chunk to all members.
pub const CONFIG_CHUNK_FLAG_FAST_PROPAGATE: u8 = 0x01;

/// The signed trailer of a (non-legacy) config chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkTrailer {
    pub flags: u8,
    /// Random, non-zero, shared by all chunks of one config.
    pub update_id: u64,
    pub total_length: u32,
    /// Byte offset of this chunk in the assembled dictionary.
    pub chunk_index: u32,
    /// By the controller over the signed portion.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A config chunk: the body of OK(NETWORK_CONFIG_REQUEST) and the payload of
/// NETWORK_CONFIG (0x0c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChunkRepr {
    pub network_id: NetworkId,
    /// Bytes `[chunk_index, chunk_index + len)` of the serialized config dictionary.
    pub data: Vec<u8>,
    /// `None` for the legacy unsigned single-chunk form (accepted only from the controller).
    pub trailer: Option<ChunkTrailer>,
}

impl ConfigChunkRepr {
    /// Reads a chunk, rejecting what 1.14's `handleConfigChunk` rejects: a chunk beyond its
    /// total, a total of the dictionary capacity or more, a signature not of type 1/96 bytes.
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        let len = r.u16("chunk length")?;
        let data = r.take(usize::from(len), "chunk data")?.to_vec();
        if r.remaining() == 0 {
            return Ok(Self {
                network_id,
                data,
                trailer: None,
            });
        }
        let flags = r.u8("chunk flags")?;
        let update_id = r.u64("config update ID")?;
        let total_length = read_u32(&mut r, "config total length")?;
        let chunk_index = read_u32(&mut r, "chunk index")?;
        if u64::from(chunk_index) + u64::from(len) > u64::from(total_length)
            || total_length as usize >= NETWORK_CONFIG_CAPACITY
        {
            return Err(DecodeError::ChunkBounds {
                index: chunk_index,
                len,
                total: total_length,
            });
        }
        let signature_type = r.u8("chunk signature type")?;
        if signature_type != SIGNATURE_TYPE_C25519 {
            return Err(DecodeError::SignatureType(signature_type));
        }
        let signature_len = r.u16("chunk signature length")?;
        if usize::from(signature_len) != SIGNATURE_LEN {
            return Err(DecodeError::SignatureLength(signature_len));
        }
        let signature = r.array("chunk signature")?;
        Ok(Self {
            network_id,
            data,
            trailer: Some(ChunkTrailer {
                flags,
                update_id,
                total_length,
                chunk_index,
                signature,
            }),
        })
    }

    /// What the controller signs: everything up to the signature type.
    pub fn signed_portion(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.data.len() + 17);
        self.emit_signed_portion(&mut out);
        out
    }

    fn emit_signed_portion(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.data);
        if let Some(t) = &self.trailer {
            out.push(t.flags);
            out.extend_from_slice(&t.update_id.to_be_bytes());
            out.extend_from_slice(&t.total_length.to_be_bytes());
            out.extend_from_slice(&t.chunk_index.to_be_bytes());
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_signed_portion(out);
        if let Some(t) = &self.trailer {
            out.push(SIGNATURE_TYPE_C25519);
            out.extend_from_slice(&(SIGNATURE_LEN as u16).to_be_bytes());
            out.extend_from_slice(&t.signature);
        }
    }

    pub fn buffer_len(&self) -> usize {
        10 + self.data.len() + self.trailer.map_or(0, |_| 17 + 3 + SIGNATURE_LEN)
    }

    /// A signed chunk of `config` (the whole serialized dictionary) starting at `chunk_index`,
    /// at most [`MAX_CONFIG_CHUNK_LEN`] bytes.
    pub fn signed(
        network_id: NetworkId,
        config: &[u8],
        chunk_index: usize,
        update_id: u64,
        flags: u8,
        controller: &Identity,
    ) -> Result<Self, SignError> {
        let end = config.len().min(chunk_index + MAX_CONFIG_CHUNK_LEN);
        let start = chunk_index.min(end);
        let mut chunk = Self {
            network_id,
            data: config[start..end].to_vec(),
            trailer: Some(ChunkTrailer {
                flags,
                update_id,
                total_length: config.len() as u32,
                chunk_index: start as u32,
                signature: [0; SIGNATURE_LEN],
            }),
        };
        let signature = controller
            .sign(&chunk.signed_portion())
            .ok_or(SignError::NoSecretKey)?;
        if let Some(t) = chunk.trailer.as_mut() {
            t.signature = signature;
        }
        Ok(chunk)
    }

    /// Splits a serialized config into signed chunks as a 1.14 controller does.
    pub fn split(
        network_id: NetworkId,
        config: &[u8],
        update_id: u64,
        controller: &Identity,
    ) -> Result<Vec<Self>, SignError> {
        let mut chunks = Vec::new();
        let mut index = 0;
        loop {
            chunks.push(Self::signed(
                network_id, config, index, update_id, 0, controller,
            )?);
            index += MAX_CONFIG_CHUNK_LEN;
            if index >= config.len() {
                return Ok(chunks);
            }
        }
    }

    /// Checks the chunk's signature against the controller `controller` of its network.
    pub fn verify(&self, controller: &Identity) -> Result<(), VerifyError> {
        let Some(trailer) = &self.trailer else {
            return Err(VerifyError::Unsigned);
        };
        let expected = self.network_id.controller();
        if controller.address() != expected {
            return Err(VerifyError::WrongIdentity {
                given: controller.address(),
                expected,
            });
        }
        if controller.verify(&self.signed_portion(), &trailer.signature) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// The per-chunk ID 1.14 deduplicates with: the first 16 signature bytes folded into 8.
    pub fn chunk_id(&self) -> Option<[u8; 8]> {
        let trailer = self.trailer.as_ref()?;
        let mut id = [0u8; 8];
        for (i, b) in trailer.signature[..16].iter().enumerate() {
            id[i & 7] ^= b;
        }
        Some(id)
    }
}

/// The body of the OK a node sends after a NETWORK_CONFIG completed an update. 1.14 sends it
/// with in-re verb ECHO (0x08), not NETWORK_CONFIG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkConfigAckRepr {
    pub network_id: NetworkId,
    pub update_id: u64,
}

/// The in-re verb of [`NetworkConfigAckRepr`].
pub const NETWORK_CONFIG_ACK_IN_RE_VERB: Verb = Verb::Echo;

impl NetworkConfigAckRepr {
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        Ok(Self {
            network_id: read_nwid(&mut r)?,
            update_id: r.u64("config update ID")?,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.update_id.to_be_bytes());
    }

    pub fn buffer_len(&self) -> usize {
        16
    }
}

// ---------------------------------------------------------------------------------------
// VL2 ERROR payloads
// ---------------------------------------------------------------------------------------

/// The code-specific bytes of a VL2 ERROR (after the error code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vl2ErrorPayload {
    /// OBJ_NOT_FOUND, UNSUPPORTED_OPERATION, NEED_MEMBERSHIP_CERTIFICATE,
    /// NETWORK_ACCESS_DENIED_: the network ID.
    Network(NetworkId),
    /// UNWANTED_MULTICAST.
    UnwantedMulticast {
        network_id: NetworkId,
        group: MulticastGroup,
    },
    /// NETWORK_AUTHENTICATION_REQUIRED: the network ID and, if present, the AuthInfo
    /// dictionary's bytes.
    AuthenticationRequired {
        network_id: NetworkId,
        auth_info: Option<Vec<u8>>,
    },
}

impl Vl2ErrorPayload {
    /// Reads the payload of an ERROR with `code`. Codes that carry no VL2 payload are
    /// [`DecodeError::Malformed`].
    pub fn parse(code: ErrorCode, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let network_id = read_nwid(&mut r)?;
        match code {
            ErrorCode::ObjectNotFound
            | ErrorCode::UnsupportedOperation
            | ErrorCode::NeedMembershipCertificate
            | ErrorCode::NetworkAccessDenied => Ok(Self::Network(network_id)),
            ErrorCode::UnwantedMulticast => Ok(Self::UnwantedMulticast {
                network_id,
                group: read_group(&mut r)?,
            }),
            ErrorCode::NetworkAuthenticationRequired => {
                // 1.14 reads the dictionary only if its length field is present.
                let auth_info = if r.remaining() >= 2 {
                    let len = r.u16("AuthInfo length")?;
                    Some(r.take(usize::from(len), "AuthInfo dictionary")?.to_vec())
                } else {
                    None
                };
                Ok(Self::AuthenticationRequired {
                    network_id,
                    auth_info,
                })
            }
            _ => Err(DecodeError::Malformed("ERROR code without a VL2 payload")),
        }
    }

    pub fn network_id(&self) -> NetworkId {
        match self {
            Self::Network(nwid)
            | Self::UnwantedMulticast {
                network_id: nwid, ..
            }
            | Self::AuthenticationRequired {
                network_id: nwid, ..
            } => *nwid,
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id().to_bytes());
        match self {
            Self::Network(_) => {}
            Self::UnwantedMulticast { group, .. } => group.emit(out),
            Self::AuthenticationRequired { auth_info, .. } => {
                if let Some(info) = auth_info {
                    out.extend_from_slice(&(info.len() as u16).to_be_bytes());
                    out.extend_from_slice(info);
                }
            }
        }
    }

    pub fn buffer_len(&self) -> usize {
        8 + match self {
            Self::Network(_) => 0,
            Self::UnwantedMulticast { .. } => MULTICAST_GROUP_LEN,
            Self::AuthenticationRequired { auth_info, .. } => {
                auth_info.as_ref().map_or(0, |i| 2 + i.len())
            }
        }
    }
}
