//! Time as the engine sees it: milliseconds, handed in by the caller.
//!
//! Nothing in `node-core` reads a clock. Every input carries `now`, so a simulator can run
//! thousands of nodes on a virtual clock and replay a run exactly.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in milliseconds. The agent uses milliseconds since the Unix epoch (as
/// ZeroTier does in HELLO timestamps); a simulator may start at any value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Timestamp {
    pub const ZERO: Self = Self(0);

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Time elapsed since `earlier`, saturating at zero when `earlier` is in the future.
    pub fn since(self, earlier: Self) -> Millis {
        Millis((self.0 - earlier.0).max(0))
    }
}

impl Millis {
    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }
}

impl Add<Millis> for Timestamp {
    type Output = Self;
    fn add(self, rhs: Millis) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<Millis> for Timestamp {
    fn add_assign(&mut self, rhs: Millis) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub<Millis> for Timestamp {
    type Output = Self;
    fn sub(self, rhs: Millis) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }
}

impl Sub for Timestamp {
    type Output = Millis;
    fn sub(self, rhs: Self) -> Millis {
        Millis(self.0 - rhs.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
