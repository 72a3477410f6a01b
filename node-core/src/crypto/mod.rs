//! Cryptographic primitives as ZeroTier 1.x uses them (zt-vl1.md sections 1, 2 and 4).
