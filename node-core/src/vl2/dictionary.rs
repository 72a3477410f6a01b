//! The Dictionary text format (zt-vl2.md 3.1): `key=value` entries separated by LF, values
//! escaped so that they are binary-safe.
//!
//! The serialized form is what goes on the wire and what [`Dictionary`] stores. Lookups
//! follow 1.14's `Dictionary::get` byte for byte: the first entry whose key matches wins, a
//! value ends at the first unescaped CR, LF or NUL, and anything after a NUL is invisible.

use crate::Address;

/// `ZT_NETWORKCONFIG_DICT_CAPACITY` on x86-64 Linux; configs must be shorter than this.
pub const NETWORK_CONFIG_CAPACITY: usize = 484_520;
/// `ZT_NETWORKCONFIG_METADATA_DICT_CAPACITY`: request metadata.
pub const METADATA_CAPACITY: usize = 1024;
/// The capacity 1.14 reads the ERROR(NETWORK_AUTHENTICATION_REQUIRED) dictionary with.
pub const AUTH_INFO_CAPACITY: usize = 8192;
/// Per-network `*.local.conf` files.
pub const LOCAL_CONF_CAPACITY: usize = 4096;

/// The buffer 1.14's `getUI`/`getI` read an integer value into: 128 bytes with the NUL, so
/// only the first 127 value bytes count.
const INTEGER_VALUE_MAX: usize = 127;

const LF: u8 = 0x0a;
const CR: u8 = 0x0d;
const NUL: u8 = 0x00;
const ESCAPE: u8 = b'\\';

/// Adding an entry would make the dictionary longer than its capacity allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dictionary full: {needed} bytes needed, capacity allows {max}")]
pub struct DictionaryFull {
    pub needed: usize,
    pub max: usize,
}

/// A dictionary in its serialized form, with the capacity `C` of 1.14's `Dictionary<C>`: at
/// most `C - 1` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dictionary {
    bytes: Vec<u8>,
    capacity: usize,
}

impl Default for Dictionary {
    fn default() -> Self {
        Self::new(NETWORK_CONFIG_CAPACITY)
    }
}

impl Dictionary {
    /// An empty dictionary holding at most `capacity - 1` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Loads received bytes as 1.14's `load` does: the content ends at the first NUL and is
    /// cut to `capacity - 1` bytes. Never fails; malformed lines are simply never matched.
    pub fn from_bytes(bytes: &[u8], capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let end = bytes.iter().position(|&b| b == NUL).unwrap_or(bytes.len());
        let end = end.min(capacity - 1);
        Self {
            bytes: bytes[..end].to_vec(),
            capacity,
        }
    }

    /// The serialized form (no terminating NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value of the first entry named `key`, unescaped, or `None` if there is none.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unescape(v))
    }

    /// Whether an entry named `key` exists (even with an empty value).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries().any(|(k, _)| k == key)
    }

    /// An unsigned integer as 1.14's `getUI` reads it (`strtoull(value, 16)` over at most
    /// 127 bytes); `None` when the key is missing or its value is empty.
    pub fn u64(&self, key: &[u8]) -> Option<u64> {
        let value = self.get(key)?;
        if value.is_empty() {
            return None;
        }
        Some(strtoull_hex(&value[..value.len().min(INTEGER_VALUE_MAX)]))
    }

    /// A signed integer as 1.14's `getI` reads it (`strtoll(value, 16)`).
    pub fn i64(&self, key: &[u8]) -> Option<i64> {
        let value = self.get(key)?;
        if value.is_empty() {
            return None;
        }
        Some(strtoll_hex(&value[..value.len().min(INTEGER_VALUE_MAX)]))
    }

    /// A boolean as 1.14's `getB` reads it: true iff the value starts with `1`, `t` or `T`.
    /// A present but empty value reads as false.
    pub fn bool(&self, key: &[u8]) -> Option<bool> {
        let value = self.get(key)?;
        Some(matches!(value.first(), Some(b'1' | b't' | b'T')))
    }

    /// Every entry in order, values unescaped; duplicates included (only the first is what
    /// [`get`](Self::get) returns). Lines without `=` are not entries.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Vec<u8>)> + '_ {
        self.entries().map(|(k, v)| (k, unescape(v)))
    }

    /// Appends an entry, as 1.14's `add`: an existing entry of the same key is not replaced
    /// (and keeps winning lookups). The key must not contain `=`, CR, LF or NUL (not checked,
    /// as in 1.14). On a full dictionary nothing is added.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), DictionaryFull> {
        let separator = usize::from(!self.bytes.is_empty());
        let escaped_len: usize = value
            .iter()
            .map(|&b| 1 + usize::from(needs_escape(b)))
            .sum();
        let needed = self.bytes.len() + separator + key.len() + 1 + escaped_len;
        let max = self.capacity - 1;
        if needed > max {
            return Err(DictionaryFull { needed, max });
        }
        self.bytes.reserve(needed - self.bytes.len());
        if separator == 1 {
            self.bytes.push(LF);
        }
        self.bytes.extend_from_slice(key);
        self.bytes.push(b'=');
        for &b in value {
            match escape(b) {
                Some(code) => self.bytes.extend_from_slice(&[ESCAPE, code]),
                None => self.bytes.push(b),
            }
        }
        Ok(())
    }

    /// Replaces every entry named `key` with one new entry at the end.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), DictionaryFull> {
        let before = self.bytes.clone();
        self.remove(key);
        self.add(key, value).inspect_err(|_| self.bytes = before)
    }

    /// Removes every entry named `key`.
    pub fn remove(&mut self, key: &[u8]) {
        let kept: Vec<&[u8]> = self
            .bytes
            .split(|&b| b == LF)
            .filter(|line| split_entry(line).is_none_or(|(k, _)| k != key))
            .collect();
        self.bytes = kept.join(&LF);
    }

    /// An unsigned integer as exactly 16 lowercase hex digits.
    pub fn add_u64(&mut self, key: &[u8], value: u64) -> Result<(), DictionaryFull> {
        self.add(key, format!("{value:016x}").as_bytes())
    }

    /// A signed integer as 1.14 writes it: 16 hex digits of the absolute value. 1.14 loses
    /// the minus sign of negative values (zt-vl2.md 3.1) and so do we, for identical bytes.
    pub fn add_i64(&mut self, key: &[u8], value: i64) -> Result<(), DictionaryFull> {
        self.add(key, format!("{:016x}", value.unsigned_abs()).as_bytes())
    }

    /// `1` or `0`.
    pub fn add_bool(&mut self, key: &[u8], value: bool) -> Result<(), DictionaryFull> {
        self.add(key, if value { b"1" } else { b"0" })
    }

    /// An address as 10 hex digits.
    pub fn add_address(&mut self, key: &[u8], value: Address) -> Result<(), DictionaryFull> {
        self.add(key, value.to_string().as_bytes())
    }

    /// The raw (still escaped) entries, in 1.14's reading order. A line is split at its
    /// first `=`; lines without one never match a key.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.bytes
            .split(|&b| b == LF || b == CR)
            .filter_map(split_entry)
    }
}

fn split_entry(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = line.iter().position(|&b| b == b'=')?;
    Some((&line[..eq], &line[eq + 1..]))
}

fn needs_escape(b: u8) -> bool {
    escape(b).is_some()
}

/// The escape code written after `\` for a byte, if the byte needs one.
fn escape(b: u8) -> Option<u8> {
    match b {
        NUL => Some(b'0'),
        CR => Some(b'r'),
        LF => Some(b'n'),
        ESCAPE => Some(ESCAPE),
        b'=' => Some(b'e'),
        _ => None,
    }
}

/// Decodes an escaped value (already cut at the line end). A trailing lone `\` is dropped;
/// `\` before any byte other than r, n, 0, e yields that byte.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut escaped = false;
    for &b in raw {
        if escaped {
            escaped = false;
            out.push(match b {
                b'r' => CR,
                b'n' => LF,
                b'0' => NUL,
                b'e' => b'=',
                other => other,
            });
        } else if b == ESCAPE {
            escaped = true;
        } else {
            out.push(b);
        }
    }
    out
}

/// What C's `strtoull(s, NULL, 16)` returns: leading whitespace, an optional sign (minus
/// negates modulo 2^64), an optional `0x`, then hex digits up to the first other byte;
/// saturates at `u64::MAX` on overflow.
pub(crate) fn strtoull_hex(s: &[u8]) -> u64 {
    let (negative, digits) = sign_and_digits(s);
    let mut value: u64 = 0;
    for &c in digits {
        let Some(d) = hex_digit(c) else { break };
        match value
            .checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => return u64::MAX,
        }
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// What C's `strtoll(s, NULL, 16)` returns: as [`strtoull_hex`] but clamped to the i64 range.
pub(crate) fn strtoll_hex(s: &[u8]) -> i64 {
    let (negative, digits) = sign_and_digits(s);
    let mut magnitude: u128 = 0;
    for &c in digits {
        let Some(d) = hex_digit(c) else { break };
        magnitude = (magnitude * 16 + u128::from(d)).min(u128::from(u64::MAX) + 1);
    }
    if negative {
        if magnitude > i64::MAX as u128 + 1 {
            i64::MIN
        } else {
            (magnitude as i128).wrapping_neg() as i64
        }
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    }
}

fn sign_and_digits(s: &[u8]) -> (bool, &[u8]) {
    let start = s
        .iter()
        .position(|&c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(s.len());
    let mut rest = &s[start..];
    let mut negative = false;
    if let Some((&sign @ (b'+' | b'-'), tail)) = rest.split_first() {
        negative = sign == b'-';
        rest = tail;
    }
    if rest.len() > 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' && hex_digit(rest[2]).is_some()
    {
        rest = &rest[2..];
    }
    (negative, rest)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_like_c() {
        assert_eq!(strtoull_hex(b"  0x1f"), 0x1f);
        assert_eq!(strtoull_hex(b"1fz9"), 0x1f);
        assert_eq!(strtoull_hex(b"0xz"), 0);
        assert_eq!(strtoull_hex(b"-1"), u64::MAX);
        assert_eq!(strtoull_hex(b"fffffffffffffffff"), u64::MAX);
        assert_eq!(strtoll_hex(b"-5"), -5);
        assert_eq!(strtoll_hex(b"ffffffffffffffff"), i64::MAX);
        assert_eq!(strtoll_hex(b"-ffffffffffffffff"), i64::MIN);
    }

    #[test]
    fn first_duplicate_wins_and_set_replaces() {
        let mut d = Dictionary::new(64);
        d.add(b"k", b"1").unwrap();
        d.add(b"k", b"2").unwrap();
        assert_eq!(d.get(b"k"), Some(b"1".to_vec()));
        d.set(b"k", b"3").unwrap();
        assert_eq!(d.as_bytes(), b"k=3");
        assert!(d.add(b"long", &[b'x'; 64]).is_err());
        assert_eq!(d.as_bytes(), b"k=3");
    }
}
