//! VL2, the virtual Ethernet layer (zt-vl2.md): network IDs and MACs, the Dictionary text
//! format, network configurations, credentials, rules and the VL2 verbs' payloads.
//!
//! These are codecs only: every `parse` returns an error instead of panicking on any input
//! (truncated, oversized, random), and every `emit` writes the exact bytes ZeroTier One 1.14
//! writes. Where a parser is stricter than 1.14 it says so. Policy (gating, rules evaluation,
//! credential bookkeeping) lives above this module.

pub mod config;
pub mod credentials;
pub mod dictionary;
pub mod filter;
pub mod network;
pub mod rules;
pub mod rules_json;
pub mod verbs;

pub use config::{ConfigError, NetworkConfig, RequestMetadata};
pub use credentials::{
    Capability, CertificateOfMembership, CertificateOfOwnership, CredentialType, Revocation, Tag,
};
pub use dictionary::Dictionary;
pub use network::{Mac, MulticastGroup, NetworkId};
pub use rules::{Rule, RuleKind};

use crate::wire;

/// Why bytes could not be read as a VL2 structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Truncation and the other generic wire errors.
    #[error(transparent)]
    Wire(#[from] wire::Error),
    /// A COM whose first byte is not the format byte 0x01.
    #[error("certificate of membership format byte {0:#04x} is not 0x01")]
    ComFormat(u8),
    /// A COM with more qualifiers than 1.14 accepts (8).
    #[error("certificate of membership has {0} qualifiers, at most 8 are accepted")]
    TooManyQualifiers(u16),
    /// COM qualifier IDs must not decrease.
    #[error("certificate of membership qualifier IDs are out of order")]
    QualifierOrder,
    /// A type-1 signature whose length field is not 96.
    #[error("signature length {0} is not 96")]
    SignatureLength(u16),
    /// A capability declaring more rules than 1.14 accepts (64).
    #[error("capability declares {0} rules, at most 64 are accepted")]
    TooManyCapabilityRules(u16),
    /// A capability's maximum custody chain length outside 1..=7.
    #[error("capability custody chain length {0} is outside 1..=7")]
    CustodyChainLength(u8),
    /// More custody entries than the capability's declared maximum.
    #[error("capability custody chain is longer than its declared maximum")]
    CustodyChainOverflow,
    /// A known rule type whose declared field length is shorter than its layout.
    #[error(
        "rule type {rule_type:#04x} declares a {declared}-byte field, its layout needs {needed}"
    )]
    RuleFieldLength {
        rule_type: u8,
        declared: u8,
        needed: u8,
    },
    /// A COO with more things than 1.14 reads correctly (16).
    #[error("certificate of ownership has {0} things, at most 16 are accepted")]
    TooManyThings(u16),
    /// A config chunk whose bounds do not fit its declared total.
    #[error("config chunk [{index}, {index}+{len}) does not fit the total length {total}")]
    ChunkBounds { index: u32, len: u16, total: u32 },
    /// A config chunk signature of a type other than 1.
    #[error("config chunk signature type {0} is not 1")]
    SignatureType(u8),
    /// An ERROR payload of a code this module does not know how to read.
    #[error("the {0} is malformed")]
    Malformed(&'static str),
}

/// Why a credential could not be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("the signing identity has no secret key")]
    NoSecretKey,
    /// Capabilities only: every custody slot is used.
    #[error("the capability's custody chain is full")]
    CustodyChainFull,
}

/// Why a credential's signature does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The credential names no signer.
    #[error("the credential is not signed")]
    Unsigned,
    /// The signer is not the network's controller (network ID >> 24).
    #[error("the credential is signed by {signed_by}, not by the controller {controller}")]
    NotController {
        signed_by: crate::Address,
        controller: crate::Address,
    },
    /// The identity handed in is not the one the credential names as signer.
    #[error("the verifying identity {given} is not the named signer {expected}")]
    WrongIdentity {
        given: crate::Address,
        expected: crate::Address,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Capabilities: the custody chain is not a chain.
    #[error("capability custody chain is broken at entry {0}")]
    BrokenCustodyChain(usize),
    /// Capabilities: an identity was needed for a custody entry but not handed in.
    #[error("no identity was given for custody signer {0}")]
    MissingIdentity(crate::Address),
}

/// `ZT_C25519_SIGNATURE_LEN`.
pub const SIGNATURE_LEN: usize = 96;

/// The signature-type byte of credentials and config chunks: C25519/Ed25519.
pub(crate) const SIGNATURE_TYPE_C25519: u8 = 0x01;

/// Marker framing the signing input of tags, capabilities, revocations and COOs.
pub(crate) const SIGNING_MARKER: [u8; 8] = [0x7f; 8];

pub(crate) use wire::Reader;

/// Reads a big-endian u32 (the VL1 reader has none).
pub(crate) fn read_u32(r: &mut Reader<'_>, what: &'static str) -> Result<u32, wire::Error> {
    Ok(u32::from_be_bytes(r.array(what)?))
}

/// Reads the `[1] type [2] length [..]` signature block shared by tags, capabilities,
/// revocations and COOs. Type 1 must carry 96 bytes; other types are skipped and read as an
/// all-zero signature, as 1.14 does.
pub(crate) fn read_signature_block(r: &mut Reader<'_>) -> Result<[u8; SIGNATURE_LEN], DecodeError> {
    if r.u8("signature type")? == SIGNATURE_TYPE_C25519 {
        let len = r.u16("signature length")?;
        if usize::from(len) != SIGNATURE_LEN {
            return Err(DecodeError::SignatureLength(len));
        }
        Ok(r.array("signature")?)
    } else {
        let len = r.u16("signature length")?;
        r.skip(usize::from(len), "signature")?;
        Ok([0; SIGNATURE_LEN])
    }
}

/// Writes a type-1 signature block.
pub(crate) fn write_signature_block(signature: &[u8; SIGNATURE_LEN], out: &mut Vec<u8>) {
    out.push(SIGNATURE_TYPE_C25519);
    out.extend_from_slice(&(SIGNATURE_LEN as u16).to_be_bytes());
    out.extend_from_slice(signature);
}

/// Skips the `[2] length [..]` block of additional fields that ends every credential.
pub(crate) fn skip_additional_fields(r: &mut Reader<'_>) -> Result<(), wire::Error> {
    let len = r.u16("additional fields length")?;
    r.skip(usize::from(len), "additional fields")
}
