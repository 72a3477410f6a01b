//! Identities (zt-vl1.md section 1).
