//! Salsa20 (DJB's original: 32-byte key, 8-byte nonce, 64-bit little-endian block counter
//! starting at 0), generic over the round count.
//!
//! ZeroTier uses two round counts: 12 for packet armor and `cryptField` (zt-vl1 4.1, 4.5)
//! and 20 for the memory-hard identity hash (zt-vl1 1.3). Like the C++ implementation, each
//! call consumes whole 64-byte blocks: a call on a partial block discards the rest of that
//! block, and the next call starts at the next block. Armor depends on that: the Poly1305
//! one-time key is the first half of block 0 and the payload keystream starts at block 1.

/// Bytes per keystream block.
pub const BLOCK_LEN: usize = 64;

/// Salsa20 with 12 rounds, as used for packet armor.
pub type Salsa2012 = Salsa<12>;
/// Salsa20 with the full 20 rounds, as used by the memory-hard hash.
pub type Salsa20 = Salsa<20>;

/// "expand 32-byte k", the Salsa20 constants for a 256-bit key.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// A Salsa20 keystream with `ROUNDS` rounds (must be even).
#[derive(Clone)]
pub struct Salsa<const ROUNDS: usize> {
    /// The input block; words 8 and 9 are the block counter.
    state: [u32; 16],
}

impl<const ROUNDS: usize> Salsa<ROUNDS> {
    /// A keystream positioned at block 0.
    pub fn new(key: &[u8; 32], nonce: &[u8; 8]) -> Self {
        const { assert!(ROUNDS > 0 && ROUNDS % 2 == 0, "Salsa20 rounds must be even") };
        let k = |i: usize| u32::from_le_bytes([key[i], key[i + 1], key[i + 2], key[i + 3]]);
        let n = |i: usize| u32::from_le_bytes([nonce[i], nonce[i + 1], nonce[i + 2], nonce[i + 3]]);
        Self {
            state: [
                SIGMA[0],
                k(0),
                k(4),
                k(8),
                k(12),
                SIGMA[1],
                n(0),
                n(4),
                0,
                0,
                SIGMA[2],
                k(16),
                k(20),
                k(24),
                k(28),
                SIGMA[3],
            ],
        }
    }

    /// Positions the stream at the start of block `block` (byte `64 * block`).
    pub fn seek_block(&mut self, block: u64) {
        self.state[8] = block as u32;
        self.state[9] = (block >> 32) as u32;
    }

    /// The block the next call will start at.
    pub fn block_position(&self) -> u64 {
        u64::from(self.state[8]) | (u64::from(self.state[9]) << 32)
    }

    /// The next 64-byte keystream block; advances the counter by one.
    #[inline]
    pub fn next_block(&mut self) -> [u8; BLOCK_LEN] {
        let words = core_block::<ROUNDS>(&self.state);
        self.advance();
        let mut out = [0u8; BLOCK_LEN];
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// XORs `data` with the keystream from the current block on. A trailing partial block
    /// still consumes a whole block.
    pub fn apply_keystream(&mut self, data: &mut [u8]) {
        for chunk in data.chunks_mut(BLOCK_LEN) {
            let ks = self.next_block();
            for (d, k) in chunk.iter_mut().zip(ks) {
                *d ^= k;
            }
        }
    }

    /// Writes raw keystream into `out` (same block accounting as [`Self::apply_keystream`]).
    pub fn keystream(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(BLOCK_LEN) {
            let ks = self.next_block();
            chunk.copy_from_slice(&ks[..chunk.len()]);
        }
    }

    #[inline(always)]
    fn advance(&mut self) {
        let (lo, carry) = self.state[8].overflowing_add(1);
        self.state[8] = lo;
        self.state[9] = self.state[9].wrapping_add(u32::from(carry));
    }
}

/// The Salsa20 core: `ROUNDS` rounds over the input block, then the feed-forward addition.
#[inline(always)]
fn core_block<const ROUNDS: usize>(input: &[u32; 16]) -> [u32; 16] {
    #[inline(always)]
    fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[b] ^= x[a].wrapping_add(x[d]).rotate_left(7);
        x[c] ^= x[b].wrapping_add(x[a]).rotate_left(9);
        x[d] ^= x[c].wrapping_add(x[b]).rotate_left(13);
        x[a] ^= x[d].wrapping_add(x[c]).rotate_left(18);
    }

    let mut x = *input;
    for _ in 0..ROUNDS / 2 {
        // Column round.
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 5, 9, 13, 1);
        quarter(&mut x, 10, 14, 2, 6);
        quarter(&mut x, 15, 3, 7, 11);
        // Row round.
        quarter(&mut x, 0, 1, 2, 3);
        quarter(&mut x, 5, 6, 7, 4);
        quarter(&mut x, 10, 11, 8, 9);
        quarter(&mut x, 15, 12, 13, 14);
    }
    for (out, inp) in x.iter_mut().zip(input) {
        *out = out.wrapping_add(*inp);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_blocks_consume_whole_blocks_and_seek_matches() {
        let key = [7u8; 32];
        let nonce = [3u8; 8];
        let mut whole = [0u8; 192];
        Salsa2012::new(&key, &nonce).keystream(&mut whole);

        let mut s = Salsa2012::new(&key, &nonce);
        let mut first = [0u8; 10];
        s.keystream(&mut first);
        assert_eq!(first, whole[..10]);
        assert_eq!(s.block_position(), 1);
        let mut second = [0u8; 64];
        s.keystream(&mut second);
        assert_eq!(second, whole[64..128]);

        let mut s = Salsa2012::new(&key, &nonce);
        s.seek_block(2);
        assert_eq!(s.next_block(), whole[128..192]);
    }

    #[test]
    fn counter_carries_into_high_word() {
        let mut s = Salsa20::new(&[1; 32], &[2; 8]);
        s.seek_block(0xffff_ffff);
        s.next_block();
        assert_eq!(s.block_position(), 0x1_0000_0000);
    }
}
