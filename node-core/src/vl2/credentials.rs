//! Credentials (zt-vl2.md 4): certificates of membership, capabilities, tags, revocations and
//! certificates of ownership. Each has `parse` (returning the bytes used, since they travel
//! back to back), `emit`, `buffer_len`, its signing input, `sign` and `verify`.
//!
//! Signatures are ZeroTier C25519 signatures (96 bytes) by the network's controller,
//! `network ID >> 24`. Signing is deterministic, so signing the same content reproduces
//! 1.14's bytes exactly.

use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha384};

use super::network::{Mac, NetworkId};
use super::rules::{self, Rule, MAX_CAPABILITY_RULES};
use super::{
    read_signature_block, read_u32, skip_additional_fields, write_signature_block, DecodeError,
    Reader, SignError, VerifyError, SIGNATURE_LEN, SIGNING_MARKER,
};
use crate::address::ADDRESS_LEN;
use crate::{Address, Identity};

/// Credential type codes (`Credential::Type`), as carried in revocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialType {
    Null,
    CertificateOfMembership,
    Capability,
    Tag,
    CertificateOfOwnership,
    Revocation,
    /// A code 1.14 does not define (it rejects such revocations).
    Unknown(u8),
}

impl From<u8> for CredentialType {
    fn from(v: u8) -> Self {
        match v {
            0x00 => Self::Null,
            0x01 => Self::CertificateOfMembership,
            0x02 => Self::Capability,
            0x03 => Self::Tag,
            0x04 => Self::CertificateOfOwnership,
            0x06 => Self::Revocation,
            other => Self::Unknown(other),
        }
    }
}

impl From<CredentialType> for u8 {
    fn from(v: CredentialType) -> Self {
        match v {
            CredentialType::Null => 0x00,
            CredentialType::CertificateOfMembership => 0x01,
            CredentialType::Capability => 0x02,
            CredentialType::Tag => 0x03,
            CredentialType::CertificateOfOwnership => 0x04,
            CredentialType::Revocation => 0x06,
            CredentialType::Unknown(other) => other,
        }
    }
}

/// Checks what every controller-signed credential needs: a signer, that it is the network's
/// controller, that `signer` is that identity, and the signature.
fn verify_controller_signature(
    nwid: NetworkId,
    signed_by: Address,
    signer: &Identity,
    signing_input: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    if signed_by == Address::NIL {
        return Err(VerifyError::Unsigned);
    }
    let controller = nwid.controller();
    if signed_by != controller {
        return Err(VerifyError::NotController {
            signed_by,
            controller,
        });
    }
    verify_by(signed_by, signer, signing_input, signature)
}

fn verify_by(
    expected: Address,
    signer: &Identity,
    signing_input: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    if signer.address() != expected {
        return Err(VerifyError::WrongIdentity {
            given: signer.address(),
            expected,
        });
    }
    if signer.verify(signing_input, signature) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

fn sign_with(signer: &Identity, input: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignError> {
    signer.sign(input).ok_or(SignError::NoSecretKey)
}

// ---------------------------------------------------------------------------------------
// Certificate of membership
// ---------------------------------------------------------------------------------------

/// COM format byte.
const COM_FORMAT: u8 = 0x01;
/// `ZT_NETWORK_COM_MAX_QUALIFIERS`.
pub const COM_MAX_QUALIFIERS: usize = 8;
/// Bytes of one qualifier: id, value, max delta.
const COM_QUALIFIER_LEN: usize = 24;

/// Reserved qualifier IDs.
pub const COM_QUALIFIER_TIMESTAMP: u64 = 0;
pub const COM_QUALIFIER_NETWORK_ID: u64 = 1;
pub const COM_QUALIFIER_ISSUED_TO: u64 = 2;
/// IDs 3..=6 carry the four first 64-bit words of the member's public key hash.
pub const COM_QUALIFIER_IDENTITY_HASH: core::ops::RangeInclusive<u64> = 3..=6;

/// One `(id, value, maxDelta)` tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ComQualifier {
    pub id: u64,
    pub value: u64,
    pub max_delta: u64,
}

/// A certificate of membership (zt-vl2.md 4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateOfMembership {
    /// At most 8, IDs non-decreasing.
    pub qualifiers: Vec<ComQualifier>,
    /// Zero when unsigned; then no signature is carried.
    pub signed_by: Address,
    pub signature: [u8; SIGNATURE_LEN],
}

/// `SHA384(address(5) ‖ public key(64))`, whose first four words a COM binds.
pub fn public_key_hash(identity: &Identity) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(identity.address().to_bytes());
    h.update(identity.public_key());
    h.finalize().into()
}

fn identity_hash_words(identity: &Identity) -> [u64; 4] {
    let hash = public_key_hash(identity);
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(hash.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_be_bytes(b);
    }
    words
}

impl CertificateOfMembership {
    /// The seven qualifiers a 1.14 controller issues: timestamp (± `max_delta`), network ID
    /// (exact), issued-to address and the identity hash words (informational).
    pub fn new(timestamp: u64, max_delta: u64, nwid: NetworkId, issued_to: &Identity) -> Self {
        let mut qualifiers = vec![
            ComQualifier {
                id: COM_QUALIFIER_TIMESTAMP,
                value: timestamp,
                max_delta,
            },
            ComQualifier {
                id: COM_QUALIFIER_NETWORK_ID,
                value: nwid.0,
                max_delta: 0,
            },
            ComQualifier {
                id: COM_QUALIFIER_ISSUED_TO,
                value: issued_to.address().to_u64(),
                max_delta: u64::MAX,
            },
        ];
        for (id, word) in COM_QUALIFIER_IDENTITY_HASH.zip(identity_hash_words(issued_to)) {
            qualifiers.push(ComQualifier {
                id,
                value: word,
                max_delta: u64::MAX,
            });
        }
        Self {
            qualifiers,
            signed_by: Address::NIL,
            signature: [0; SIGNATURE_LEN],
        }
    }

    fn qualifier(&self, id: u64) -> Option<u64> {
        self.qualifiers.iter().find(|q| q.id == id).map(|q| q.value)
    }

    /// The timestamp qualifier's value (0 if absent).
    pub fn timestamp(&self) -> u64 {
        self.qualifier(COM_QUALIFIER_TIMESTAMP).unwrap_or(0)
    }

    /// The network ID qualifier's value (0 if absent).
    pub fn network_id(&self) -> NetworkId {
        NetworkId(self.qualifier(COM_QUALIFIER_NETWORK_ID).unwrap_or(0))
    }

    /// The member it was issued to (nil if absent).
    pub fn issued_to(&self) -> Address {
        Address::from_u64(self.qualifier(COM_QUALIFIER_ISSUED_TO).unwrap_or(0))
    }

    /// Reads a COM from the start of `bytes`; returns it and the bytes used.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let com = Self::read(&mut r)?;
        Ok((com, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let format = r.u8("COM format")?;
        if format != COM_FORMAT {
            return Err(DecodeError::ComFormat(format));
        }
        let count = r.u16("COM qualifier count")?;
        if usize::from(count) > COM_MAX_QUALIFIERS {
            return Err(DecodeError::TooManyQualifiers(count));
        }
        let mut qualifiers = Vec::with_capacity(usize::from(count));
        let mut last_id = 0;
        for _ in 0..count {
            let id = r.u64("COM qualifier ID")?;
            if id < last_id {
                return Err(DecodeError::QualifierOrder);
            }
            last_id = id;
            qualifiers.push(ComQualifier {
                id,
                value: r.u64("COM qualifier value")?,
                max_delta: r.u64("COM qualifier max delta")?,
            });
        }
        let signed_by = r.address("COM signer")?;
        let signature = if signed_by == Address::NIL {
            [0; SIGNATURE_LEN]
        } else {
            r.array("COM signature")?
        };
        Ok(Self {
            qualifiers,
            signed_by,
            signature,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(COM_FORMAT);
        out.extend_from_slice(&(self.qualifiers.len() as u16).to_be_bytes());
        self.emit_qualifiers(out);
        out.extend_from_slice(&self.signed_by.to_bytes());
        if self.signed_by != Address::NIL {
            out.extend_from_slice(&self.signature);
        }
    }

    pub fn buffer_len(&self) -> usize {
        3 + self.qualifiers.len() * COM_QUALIFIER_LEN
            + ADDRESS_LEN
            + if self.signed_by == Address::NIL {
                0
            } else {
                SIGNATURE_LEN
            }
    }

    fn emit_qualifiers(&self, out: &mut Vec<u8>) {
        for q in &self.qualifiers {
            out.extend_from_slice(&q.id.to_be_bytes());
            out.extend_from_slice(&q.value.to_be_bytes());
            out.extend_from_slice(&q.max_delta.to_be_bytes());
        }
    }

    /// What is signed: the qualifier tuples as 24-byte big-endian records.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.qualifiers.len() * COM_QUALIFIER_LEN);
        self.emit_qualifiers(&mut out);
        out
    }

    /// Signs with `signer` (the controller) and records it as signer.
    pub fn sign(&mut self, signer: &Identity) -> Result<(), SignError> {
        self.signature = sign_with(signer, &self.signing_input())?;
        self.signed_by = signer.address();
        Ok(())
    }

    /// 1.14's `verify`: signed by the controller of the network-ID qualifier, at most 8
    /// qualifiers, valid signature by `signer` (the identity of [`signed_by`](Self::signed_by)).
    pub fn verify(&self, signer: &Identity) -> Result<(), VerifyError> {
        verify_controller_signature(
            self.network_id(),
            self.signed_by,
            signer,
            &self.signing_input(),
            &self.signature,
        )
    }

    /// Whether a peer holding `theirs`, with identity `their_identity`, may talk to us holding
    /// `self` (1.14 `agreesWith`). Every qualifier of ours must be in theirs within our max
    /// delta; if ours binds identity hashes, theirs must carry the peer's actual hash. The
    /// signature of `theirs` is not checked here (it was on receipt).
    pub fn agrees_with(&self, theirs: &Self, their_identity: &Identity) -> bool {
        if self.qualifiers.is_empty() || theirs.qualifiers.is_empty() {
            return false;
        }
        // 1.14 indexes the other COM's qualifiers in a map, so for a repeated ID the last wins.
        let their_value = |id: u64| theirs.qualifiers.iter().rev().find(|q| q.id == id);
        let mut binds_identity = false;
        for ours in &self.qualifiers {
            if COM_QUALIFIER_IDENTITY_HASH.contains(&ours.id) {
                binds_identity = true;
            }
            let Some(theirs) = their_value(ours.id) else {
                return false;
            };
            if ours.value.abs_diff(theirs.value) > ours.max_delta {
                return false;
            }
        }
        if binds_identity {
            let words = identity_hash_words(their_identity);
            for (id, word) in COM_QUALIFIER_IDENTITY_HASH.zip(words) {
                match their_value(id) {
                    Some(q) if q.value == word => {}
                    _ => return false,
                }
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------
// Capability
// ---------------------------------------------------------------------------------------

/// `ZT_MAX_CAPABILITY_CUSTODY_CHAIN_LENGTH`.
pub const MAX_CUSTODY_CHAIN_LENGTH: u8 = 7;

/// One link of a capability's chain of custody: `from` handed it to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustodyEntry {
    pub to: Address,
    pub from: Address,
    pub signature: [u8; SIGNATURE_LEN],
}

/// A capability (zt-vl2.md 4.2): rules a member may apply, handed down a chain of custody
/// whose first link is signed by the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub network_id: NetworkId,
    pub timestamp: i64,
    pub id: u32,
    /// At most 64.
    pub rules: Vec<Rule>,
    /// 1..=7; 1.14 controllers issue 1 (non-transferable).
    pub max_custody_chain_length: u8,
    /// Non-zero `to` addresses, at most `max_custody_chain_length` of them.
    pub custody: Vec<CustodyEntry>,
}

impl Capability {
    /// A capability with an empty chain of custody of maximum length 1.
    pub fn new(network_id: NetworkId, timestamp: i64, id: u32, rules: Vec<Rule>) -> Self {
        Self {
            network_id,
            timestamp,
            id,
            rules,
            max_custody_chain_length: 1,
            custody: Vec::new(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let cap = Self::read(&mut r)?;
        Ok((cap, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let network_id = NetworkId(r.u64("capability network ID")?);
        let timestamp = r.u64("capability timestamp")? as i64;
        let id = read_u32(r, "capability ID")?;
        let rule_count = r.u16("capability rule count")?;
        if usize::from(rule_count) > MAX_CAPABILITY_RULES {
            return Err(DecodeError::TooManyCapabilityRules(rule_count));
        }
        let rules = rules::read_rules(r, usize::from(rule_count))?;
        let max_custody_chain_length = r.u8("capability custody chain length")?;
        if !(1..=MAX_CUSTODY_CHAIN_LENGTH).contains(&max_custody_chain_length) {
            return Err(DecodeError::CustodyChainLength(max_custody_chain_length));
        }
        let mut custody = Vec::new();
        loop {
            let to = r.address("custody recipient")?;
            if to == Address::NIL {
                break;
            }
            if custody.len() >= usize::from(max_custody_chain_length) {
                return Err(DecodeError::CustodyChainOverflow);
            }
            let from = r.address("custody sender")?;
            let signature = read_signature_block(r)?;
            custody.push(CustodyEntry {
                to,
                from,
                signature,
            });
        }
        skip_additional_fields(r)?;
        Ok(Self {
            network_id,
            timestamp,
            id,
            rules,
            max_custody_chain_length,
            custody,
        })
    }

    fn emit_common(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.rules.len() as u16).to_be_bytes());
        rules::emit_rules(&self.rules, out);
        out.push(self.max_custody_chain_length);
    }

    /// Writes the capability. As 1.14, only the first `max_custody_chain_length` (≤ 7)
    /// entries are written, then always the zero terminator.
    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_common(out);
        for entry in self.written_custody() {
            out.extend_from_slice(&entry.to.to_bytes());
            out.extend_from_slice(&entry.from.to_bytes());
            write_signature_block(&entry.signature, out);
        }
        out.extend_from_slice(&[0; ADDRESS_LEN]);
        out.extend_from_slice(&0u16.to_be_bytes());
    }

    fn written_custody(&self) -> impl Iterator<Item = &CustodyEntry> {
        let limit = self.max_custody_chain_length.min(MAX_CUSTODY_CHAIN_LENGTH);
        self.custody
            .iter()
            .take(usize::from(limit))
            .take_while(|e| e.to != Address::NIL)
    }

    pub fn buffer_len(&self) -> usize {
        8 + 8
            + 4
            + 2
            + rules::rules_len(&self.rules)
            + 1
            + self.written_custody().count() * (2 * ADDRESS_LEN + 3 + SIGNATURE_LEN)
            + ADDRESS_LEN
            + 2
    }

    /// What every custody entry signs: the capability without its chain, in 0x7f markers.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + rules::rules_len(&self.rules));
        out.extend_from_slice(&SIGNING_MARKER);
        self.emit_common(&mut out);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&SIGNING_MARKER);
        out
    }

    /// Adds a custody link from `from` (the current holder, or the controller first) to `to`.
    pub fn sign(&mut self, from: &Identity, to: Address) -> Result<(), SignError> {
        let limit = usize::from(self.max_custody_chain_length.min(MAX_CUSTODY_CHAIN_LENGTH));
        if self.custody.len() >= limit {
            return Err(SignError::CustodyChainFull);
        }
        let signature = sign_with(from, &self.signing_input())?;
        self.custody.push(CustodyEntry {
            to,
            from: from.address(),
            signature,
        });
        Ok(())
    }

    /// 1.14's `verify`: the first link must exist and come from the controller, each later
    /// link from the previous recipient, and every link's signature must verify with the
    /// identity `identity_of` returns for its `from`.
    pub fn verify<'a>(
        &self,
        identity_of: impl Fn(Address) -> Option<&'a Identity>,
    ) -> Result<(), VerifyError> {
        if !(1..=MAX_CUSTODY_CHAIN_LENGTH).contains(&self.max_custody_chain_length) {
            return Err(VerifyError::BrokenCustodyChain(0));
        }
        let input = self.signing_input();
        let controller = self.network_id.controller();
        for index in 0..usize::from(self.max_custody_chain_length) {
            let entry = self.custody.get(index).filter(|e| e.to != Address::NIL);
            let Some(entry) = entry else {
                if index == 0 {
                    return Err(VerifyError::Unsigned);
                }
                return Ok(());
            };
            if index == 0 {
                if entry.from != controller {
                    return Err(VerifyError::NotController {
                        signed_by: entry.from,
                        controller,
                    });
                }
            } else if entry.from == Address::NIL || entry.from != self.custody[index - 1].to {
                return Err(VerifyError::BrokenCustodyChain(index));
            }
            let signer = identity_of(entry.from).ok_or(VerifyError::MissingIdentity(entry.from))?;
            verify_by(entry.from, signer, &input, &entry.signature)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Tag
// ---------------------------------------------------------------------------------------

/// A tag (zt-vl2.md 4.3): a controller-assigned `id = value` pair for one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub network_id: NetworkId,
    pub timestamp: i64,
    pub id: u32,
    pub value: u32,
    pub issued_to: Address,
    pub signed_by: Address,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Serialized length of a tag with a type-1 signature.
pub const TAG_LEN: usize = 8 + 8 + 4 + 4 + 2 * ADDRESS_LEN + 3 + SIGNATURE_LEN + 2;

impl Tag {
    /// An unsigned tag.
    pub fn new(
        network_id: NetworkId,
        timestamp: i64,
        issued_to: Address,
        id: u32,
        value: u32,
    ) -> Self {
        Self {
            network_id,
            timestamp,
            id,
            value,
            issued_to,
            signed_by: Address::NIL,
            signature: [0; SIGNATURE_LEN],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let tag = Self::read(&mut r)?;
        Ok((tag, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let network_id = NetworkId(r.u64("tag network ID")?);
        let timestamp = r.u64("tag timestamp")? as i64;
        let id = read_u32(r, "tag ID")?;
        let value = read_u32(r, "tag value")?;
        let issued_to = r.address("tag issued-to")?;
        let signed_by = r.address("tag signer")?;
        let signature = read_signature_block(r)?;
        skip_additional_fields(r)?;
        Ok(Self {
            network_id,
            timestamp,
            id,
            value,
            issued_to,
            signed_by,
            signature,
        })
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.value.to_be_bytes());
        out.extend_from_slice(&self.issued_to.to_bytes());
        out.extend_from_slice(&self.signed_by.to_bytes());
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_body(out);
        write_signature_block(&self.signature, out);
        out.extend_from_slice(&0u16.to_be_bytes());
    }

    pub fn buffer_len(&self) -> usize {
        TAG_LEN
    }

    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(52);
        out.extend_from_slice(&SIGNING_MARKER);
        self.emit_body(&mut out);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&SIGNING_MARKER);
        out
    }

    /// Sets `signed_by` to the signer, then signs (the signer is part of the input).
    pub fn sign(&mut self, signer: &Identity) -> Result<(), SignError> {
        if !signer.has_secret() {
            return Err(SignError::NoSecretKey);
        }
        self.signed_by = signer.address();
        self.signature = sign_with(signer, &self.signing_input())?;
        Ok(())
    }

    pub fn verify(&self, signer: &Identity) -> Result<(), VerifyError> {
        verify_controller_signature(
            self.network_id,
            self.signed_by,
            signer,
            &self.signing_input(),
            &self.signature,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------

/// Revocation flag: receivers forward it to every member.
pub const REVOCATION_FLAG_FAST_PROPAGATE: u64 = 0x1;

/// A revocation (zt-vl2.md 4.4): credentials of `credential_type`/`credential_id` held by
/// `target` with timestamps up to `threshold` are no longer valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub id: u32,
    pub network_id: NetworkId,
    /// 0 for COMs.
    pub credential_id: u32,
    pub threshold: i64,
    pub flags: u64,
    pub target: Address,
    pub signed_by: Address,
    pub credential_type: CredentialType,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Serialized length of a revocation with a type-1 signature.
pub const REVOCATION_LEN: usize =
    4 + 4 + 8 + 4 + 4 + 8 + 8 + 2 * ADDRESS_LEN + 1 + 3 + SIGNATURE_LEN + 2;

impl Revocation {
    /// An unsigned revocation.
    pub fn new(
        id: u32,
        network_id: NetworkId,
        credential_id: u32,
        threshold: i64,
        flags: u64,
        target: Address,
        credential_type: CredentialType,
    ) -> Self {
        Self {
            id,
            network_id,
            credential_id,
            threshold,
            flags,
            target,
            signed_by: Address::NIL,
            credential_type,
            signature: [0; SIGNATURE_LEN],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let rev = Self::read(&mut r)?;
        Ok((rev, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.skip(4, "revocation reserved")?;
        let id = read_u32(r, "revocation ID")?;
        let network_id = NetworkId(r.u64("revocation network ID")?);
        r.skip(4, "revocation reserved")?;
        let credential_id = read_u32(r, "revoked credential ID")?;
        let threshold = r.u64("revocation threshold")? as i64;
        let flags = r.u64("revocation flags")?;
        let target = r.address("revocation target")?;
        let signed_by = r.address("revocation signer")?;
        let credential_type = CredentialType::from(r.u8("revoked credential type")?);
        let signature = read_signature_block(r)?;
        skip_additional_fields(r)?;
        Ok(Self {
            id,
            network_id,
            credential_id,
            threshold,
            flags,
            target,
            signed_by,
            credential_type,
            signature,
        })
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.credential_id.to_be_bytes());
        out.extend_from_slice(&self.threshold.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.target.to_bytes());
        out.extend_from_slice(&self.signed_by.to_bytes());
        out.push(u8::from(self.credential_type));
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_body(out);
        write_signature_block(&self.signature, out);
        out.extend_from_slice(&0u16.to_be_bytes());
    }

    pub fn buffer_len(&self) -> usize {
        REVOCATION_LEN
    }

    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(69);
        out.extend_from_slice(&SIGNING_MARKER);
        self.emit_body(&mut out);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&SIGNING_MARKER);
        out
    }

    pub fn sign(&mut self, signer: &Identity) -> Result<(), SignError> {
        if !signer.has_secret() {
            return Err(SignError::NoSecretKey);
        }
        self.signed_by = signer.address();
        self.signature = sign_with(signer, &self.signing_input())?;
        Ok(())
    }

    pub fn verify(&self, signer: &Identity) -> Result<(), VerifyError> {
        verify_controller_signature(
            self.network_id,
            self.signed_by,
            signer,
            &self.signing_input(),
            &self.signature,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Certificate of ownership
// ---------------------------------------------------------------------------------------

/// `ZT_CERTIFICATEOFOWNERSHIP_MAX_THINGS`.
pub const COO_MAX_THINGS: usize = 16;
/// Bytes of a thing's value field.
pub const COO_THING_VALUE_LEN: usize = 16;

/// Thing types.
pub const THING_MAC: u8 = 1;
pub const THING_IPV4: u8 = 2;
pub const THING_IPV6: u8 = 3;

/// One owned thing: a type and its value, left-aligned in 16 zero-padded bytes. Kept raw so
/// that the signed bytes survive a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Thing {
    pub thing_type: u8,
    pub value: [u8; COO_THING_VALUE_LEN],
}

impl Thing {
    fn padded(thing_type: u8, bytes: &[u8]) -> Self {
        let mut value = [0u8; COO_THING_VALUE_LEN];
        value[..bytes.len()].copy_from_slice(bytes);
        Self { thing_type, value }
    }

    pub fn mac(mac: Mac) -> Self {
        Self::padded(THING_MAC, &mac.0)
    }

    pub fn ipv4(ip: Ipv4Addr) -> Self {
        Self::padded(THING_IPV4, &ip.octets())
    }

    pub fn ipv6(ip: Ipv6Addr) -> Self {
        Self::padded(THING_IPV6, &ip.octets())
    }
}

/// A certificate of ownership (zt-vl2.md 4.5): IPs and MACs a member may use as source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateOfOwnership {
    pub network_id: NetworkId,
    pub timestamp: i64,
    pub flags: u64,
    pub id: u32,
    /// At most 16.
    pub things: Vec<Thing>,
    pub issued_to: Address,
    pub signed_by: Address,
    pub signature: [u8; SIGNATURE_LEN],
}

impl CertificateOfOwnership {
    /// An unsigned COO without things.
    pub fn new(network_id: NetworkId, timestamp: i64, issued_to: Address, id: u32) -> Self {
        Self {
            network_id,
            timestamp,
            flags: 0,
            id,
            things: Vec::new(),
            issued_to,
            signed_by: Address::NIL,
            signature: [0; SIGNATURE_LEN],
        }
    }

    /// Whether it lists `thing`: same type and the type's first 6/4/16 value bytes equal.
    pub fn owns(&self, thing: &Thing) -> bool {
        let compared = match thing.thing_type {
            THING_MAC => 6,
            THING_IPV4 => 4,
            _ => COO_THING_VALUE_LEN,
        };
        self.things.iter().any(|t| {
            t.thing_type == thing.thing_type && t.value[..compared] == thing.value[..compared]
        })
    }

    /// Reads a COO. Stricter than 1.14: more than 16 things is an error (1.14 reads only 16
    /// of them and then misreads the rest as the following fields).
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let coo = Self::read(&mut r)?;
        Ok((coo, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let network_id = NetworkId(r.u64("COO network ID")?);
        let timestamp = r.u64("COO timestamp")? as i64;
        let flags = r.u64("COO flags")?;
        let id = read_u32(r, "COO ID")?;
        let count = r.u16("COO thing count")?;
        if usize::from(count) > COO_MAX_THINGS {
            return Err(DecodeError::TooManyThings(count));
        }
        let mut things = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            things.push(Thing {
                thing_type: r.u8("COO thing type")?,
                value: r.array("COO thing value")?,
            });
        }
        let issued_to = r.address("COO issued-to")?;
        let signed_by = r.address("COO signer")?;
        let signature = read_signature_block(r)?;
        skip_additional_fields(r)?;
        Ok(Self {
            network_id,
            timestamp,
            flags,
            id,
            things,
            issued_to,
            signed_by,
            signature,
        })
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.to_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.things.len() as u16).to_be_bytes());
        for thing in &self.things {
            out.push(thing.thing_type);
            out.extend_from_slice(&thing.value);
        }
        out.extend_from_slice(&self.issued_to.to_bytes());
        out.extend_from_slice(&self.signed_by.to_bytes());
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_body(out);
        write_signature_block(&self.signature, out);
        out.extend_from_slice(&0u16.to_be_bytes());
    }

    pub fn buffer_len(&self) -> usize {
        8 + 8
            + 8
            + 4
            + 2
            + self.things.len() * (1 + COO_THING_VALUE_LEN)
            + 2 * ADDRESS_LEN
            + 3
            + SIGNATURE_LEN
            + 2
    }

    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buffer_len());
        out.extend_from_slice(&SIGNING_MARKER);
        self.emit_body(&mut out);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&SIGNING_MARKER);
        out
    }

    pub fn sign(&mut self, signer: &Identity) -> Result<(), SignError> {
        if !signer.has_secret() {
            return Err(SignError::NoSecretKey);
        }
        self.signed_by = signer.address();
        self.signature = sign_with(signer, &self.signing_input())?;
        Ok(())
    }

    pub fn verify(&self, signer: &Identity) -> Result<(), VerifyError> {
        verify_controller_signature(
            self.network_id,
            self.signed_by,
            signer,
            &self.signing_input(),
            &self.signature,
        )
    }
}
