//! Wire formats (zt-vl1.md sections 3, 5, 6 and 7).
//!
//! Two kinds of types live here, in the manner of smoltcp's `wire` module:
//!
//! - **Views** ([`Packet`], [`Fragment`]) wrap a buffer `T: AsRef<[u8]>` and read or write
//!   header fields in place. Getters are available on any `AsRef<[u8]>` buffer, setters on
//!   `AsMut<[u8]>`.
//! - **Reprs** ([`HelloRepr`], [`OkRepr`], [`ErrorRepr`], …) are owned, validated values of one
//!   verb's payload, with `parse(payload)`, `emit(&self, out)` and `buffer_len()`. A verb
//!   payload is the packet's bytes from offset 28 on (after the verb byte), already dearmored
//!   and decompressed.
//!
//! # The accessor contract
//!
//! `new_checked` (= `new_unchecked` + `check_len`) is the only gate: once it has accepted a
//! buffer, **no accessor or setter of that view panics**, whatever the bytes are. Without it,
//! accessors may panic on short buffers, so `new_unchecked` is for buffers the caller built
//! itself (emitting), never for received datagrams. Conversely `new_checked` must not be used
//! when emitting into a buffer that is still being sized.
//!
//! Every `parse` in this module and in [`crate::world`] returns an error instead of panicking
//! on any input (truncated, oversized, random), and never allocates more than a small multiple
//! of its input's length. Parsers follow ZeroTier One 1.14: what it rejects is an error here,
//! what it tolerates (missing optional trailing fields, trailing bytes it never reads) parses.
//! The few places where we are stricter than 1.14 are documented at the parser.

pub mod compress;
pub mod echo;
pub mod error;
pub mod fragment;
pub mod hello;
pub mod inet;
pub mod ok;
pub mod packet;
pub mod push_direct_paths;
pub mod reassembly;
pub mod rendezvous;
pub mod user_message;
pub mod verb;
pub mod whois;

pub use compress::{compress_packet, decompress_packet, DecompressError};
pub use echo::EchoRepr;
pub use error::ErrorRepr;
pub use fragment::{
    classify, is_fragment, needs_fragmentation, split, split_with, DatagramKind, Fragment,
    SplitError,
};
pub use hello::{HelloError, HelloRepr, MoonRecord, PlanetRef};
pub use inet::{emit_inet_address, inet_address_len, parse_inet_address, InetAddress};
pub use ok::{OkBody, OkError, OkHeader, OkHelloRepr, OkRepr};
pub use packet::{emit_header, Packet, SoftwareVersion};
pub use push_direct_paths::{PathAddress, PathRecord, PushDirectPathsRepr};
pub use reassembly::Reassembler;
pub use rendezvous::RendezvousRepr;
pub use user_message::UserMessageRepr;
pub use verb::{ErrorCode, Verb};
pub use whois::WhoisRepr;

/// Why bytes could not be read as a wire structure. Returned by the views' `check_len` and by
/// every parser that has no richer error of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the named field does.
    #[error("truncated: the buffer ends inside the {0}")]
    Truncated(&'static str),
    /// The buffer is longer than the format allows.
    #[error("too long: the {what} may be at most {max} bytes")]
    TooLong { what: &'static str, max: usize },
    /// An InetAddress type byte that 1.14 does not know (zt-vl1.md 7.1).
    #[error("unknown InetAddress type {0:#04x}")]
    InetAddressType(u8),
    /// A fragment header whose counters 1.14 would drop (zt-vl1.md 5.3).
    #[error("fragment {number} of {total} is out of range")]
    FragmentCounters { number: u8, total: u8 },
    /// A fragment view over a datagram whose byte 13 is not the 0xff indicator.
    #[error("not a fragment: byte 13 is not 0xff")]
    NotAFragment,
    /// HELLO or OK(HELLO) from a protocol older than [`packet::PROTO_VERSION_MIN`]; 1.14 drops
    /// these.
    #[error("protocol version {0} is older than the minimum 4")]
    ProtocolVersionTooOld(u8),
    /// A payload shorter than 1.14 will act on (e.g. a USER_MESSAGE without its type ID).
    #[error("the {0} is too short to be acted on")]
    TooShort(&'static str),
}

/// Bounds-checked reading over a byte slice: every `take` either yields exactly the bytes
/// asked for or a [`Error::Truncated`] naming the field, so parsers never index directly.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::Truncated(what));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Error> {
        self.take(n, what).map(|_| ())
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn address(&mut self, what: &'static str) -> Result<crate::Address, Error> {
        Ok(crate::Address::from_bytes(
            self.take(crate::address::ADDRESS_LEN, what)?,
        ))
    }
}
