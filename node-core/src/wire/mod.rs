//! Wire formats (zt-vl1.md sections 3, 5, 6 and 7).
