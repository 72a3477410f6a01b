//! Worlds: planets and moons (zt-vl1.md section 8).
