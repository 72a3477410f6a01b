//! Verbs and ERROR codes (zt-vl1.md 7.0).

use core::fmt;

/// Declares a `u8`-valued enum that keeps values it does not know in an `Unknown` variant, so
/// converting from a byte never fails and converting back gives the same byte.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident {
            $( $(#[$variant_attr:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$variant_attr])* $variant ),+,
            /// A value 1.14 does not define.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant ),+,
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value ),+,
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

enum_with_unknown! {
    /// A packet verb: the low 5 bits of byte 27 (the top bit is the compression flag).
    ///
    /// Converting from a `u8` does not mask: OK and ERROR carry the in-re verb as a whole byte
    /// and 1.14 compares it unmasked. Use [`Verb::from_verb_byte`] for byte 27.
    pub enum Verb {
        Nop = 0x00,
        Hello = 0x01,
        Error = 0x02,
        Ok = 0x03,
        Whois = 0x04,
        Rendezvous = 0x05,
        Frame = 0x06,
        ExtFrame = 0x07,
        Echo = 0x08,
        MulticastLike = 0x09,
        NetworkCredentials = 0x0a,
        NetworkConfigRequest = 0x0b,
        NetworkConfig = 0x0c,
        MulticastGather = 0x0d,
        MulticastFrame = 0x0e,
        PushDirectPaths = 0x10,
        Ack = 0x12,
        QosMeasurement = 0x13,
        UserMessage = 0x14,
        RemoteTrace = 0x15,
        PathNegotiationRequest = 0x16,
    }
}

/// Bits of byte 27 that carry the verb; the rest are flags.
pub const VERB_MASK: u8 = 0x1f;

/// Byte-27 flag: the payload from offset 28 is an LZ4 block (zt-vl1.md 6).
pub const VERB_FLAG_COMPRESSED: u8 = 0x80;

impl Verb {
    /// The verb in a packet's byte 27, ignoring the compression flag and unused bits.
    pub fn from_verb_byte(byte: u8) -> Self {
        Self::from(byte & VERB_MASK)
    }

    /// Whether 1.14 handles this verb at VL1 (the rest belong to VL2 or multipath).
    pub fn is_vl1(self) -> bool {
        matches!(
            self,
            Self::Nop
                | Self::Hello
                | Self::Error
                | Self::Ok
                | Self::Whois
                | Self::Rendezvous
                | Self::Echo
                | Self::PushDirectPaths
                | Self::Ack
                | Self::QosMeasurement
                | Self::UserMessage
                | Self::RemoteTrace
                | Self::PathNegotiationRequest
        )
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Nop => "NOP",
            Self::Hello => "HELLO",
            Self::Error => "ERROR",
            Self::Ok => "OK",
            Self::Whois => "WHOIS",
            Self::Rendezvous => "RENDEZVOUS",
            Self::Frame => "FRAME",
            Self::ExtFrame => "EXT_FRAME",
            Self::Echo => "ECHO",
            Self::MulticastLike => "MULTICAST_LIKE",
            Self::NetworkCredentials => "NETWORK_CREDENTIALS",
            Self::NetworkConfigRequest => "NETWORK_CONFIG_REQUEST",
            Self::NetworkConfig => "NETWORK_CONFIG",
            Self::MulticastGather => "MULTICAST_GATHER",
            Self::MulticastFrame => "MULTICAST_FRAME",
            Self::PushDirectPaths => "PUSH_DIRECT_PATHS",
            Self::Ack => "ACK",
            Self::QosMeasurement => "QOS_MEASUREMENT",
            Self::UserMessage => "USER_MESSAGE",
            Self::RemoteTrace => "REMOTE_TRACE",
            Self::PathNegotiationRequest => "PATH_NEGOTIATION_REQUEST",
            Self::Unknown(v) => return write!(f, "verb {v:#04x}"),
        };
        f.write_str(name)
    }
}

enum_with_unknown! {
    /// An ERROR packet's code (byte 37; `Packet::ErrorCode` in 1.14).
    pub enum ErrorCode {
        /// Never sent.
        None = 0x00,
        InvalidRequest = 0x01,
        BadProtocolVersion = 0x02,
        /// Payload: the 8-byte network ID (from a controller).
        ObjectNotFound = 0x03,
        /// In-re HELLO: the address is already owned by another key. No payload.
        IdentityCollision = 0x04,
        /// Payload: the 8-byte network ID.
        UnsupportedOperation = 0x05,
        /// Payload: the 8-byte network ID.
        NeedMembershipCertificate = 0x06,
        /// Payload: the 8-byte network ID.
        NetworkAccessDenied = 0x07,
        /// Payload: network ID (8), MAC (6), ADI (4).
        UnwantedMulticast = 0x08,
        /// Payload: network ID (8), u16 length, Dictionary.
        NetworkAuthenticationRequired = 0x09,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_bytes_round_trip() {
        for b in 0..=u8::MAX {
            assert_eq!(u8::from(Verb::from(b)), b);
            assert_eq!(u8::from(ErrorCode::from(b)), b);
        }
        assert_eq!(Verb::from(0x0f), Verb::Unknown(0x0f));
        assert_eq!(Verb::from(0x11), Verb::Unknown(0x11));
        assert_eq!(Verb::from_verb_byte(0x94), Verb::UserMessage);
        assert_eq!(Verb::from(0x94), Verb::Unknown(0x94));
        assert_eq!(
            Verb::PathNegotiationRequest.to_string(),
            "PATH_NEGOTIATION_REQUEST"
        );
        assert_eq!(ErrorCode::from(4), ErrorCode::IdentityCollision);
    }
}
