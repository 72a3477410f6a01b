//! LZ4 payload compression (zt-vl1.md 6): a raw LZ4 block over packet bytes `[28..)`,
//! flagged by bit 0x80 of the verb byte. Compression happens before armoring and
//! decompression after dearmoring.

use super::packet::{field, Packet, MAX_PACKET_LEN, MAX_PAYLOAD_LEN, MIN_PACKET_LEN};
use super::verb::VERB_FLAG_COMPRESSED;

/// Payloads this long or shorter are not worth compressing (1.14's rule).
pub const MIN_COMPRESSIBLE_PAYLOAD: usize = 64;

/// Why a compressed packet could not be expanded. The packet is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    #[error("packet of {0} bytes is not between 28 and 10024 bytes")]
    PacketLength(usize),
    #[error("LZ4 block is malformed or expands beyond 9996 bytes")]
    Malformed,
    #[error("LZ4 block expands to nothing")]
    Empty,
}

/// Compresses the payload of a plaintext packet in place if that helps, as 1.14's
/// `Packet::compress`: only payloads over 64 bytes, only if the LZ4 block is strictly shorter.
/// Sets the verb's compression flag and returns `true` if it compressed; otherwise leaves the
/// packet as it was with the flag clear. A packet already flagged compressed is left alone
/// (1.14 would clear the flag there, corrupting it). `scratch` is reused between calls.
pub fn compress_packet(packet: &mut Vec<u8>, scratch: &mut Vec<u8>) -> bool {
    if packet.len() < MIN_PACKET_LEN {
        return false;
    }
    if packet[field::VERB] & VERB_FLAG_COMPRESSED != 0 {
        return false;
    }
    let payload = &packet[field::PAYLOAD];
    if payload.len() <= MIN_COMPRESSIBLE_PAYLOAD {
        return false;
    }
    scratch.clear();
    scratch.resize(lz4_flex::block::get_maximum_output_size(payload.len()), 0);
    let compressed_len = match lz4_flex::block::compress_into(payload, scratch) {
        Ok(n) if n > 0 && n < payload.len() => n,
        _ => return false,
    };
    packet.truncate(MIN_PACKET_LEN);
    packet.extend_from_slice(&scratch[..compressed_len]);
    packet[field::VERB] |= VERB_FLAG_COMPRESSED;
    true
}

/// Writes into `out` the packet with its payload decompressed and the compression flag
/// cleared, as 1.14's `Packet::uncompress`. A packet without the flag is copied unchanged; one
/// flagged compressed with an empty payload just loses the flag. The expansion is bounded at
/// 9996 bytes, and malformed input is an error, never a panic.
pub fn decompress_packet(packet: &[u8], out: &mut Vec<u8>) -> Result<(), DecompressError> {
    if !(MIN_PACKET_LEN..=MAX_PACKET_LEN).contains(&packet.len()) {
        return Err(DecompressError::PacketLength(packet.len()));
    }
    out.clear();
    let view = Packet::new_unchecked(packet);
    if !view.is_compressed() {
        out.extend_from_slice(packet);
        return Ok(());
    }
    out.extend_from_slice(&packet[..MIN_PACKET_LEN]);
    out[field::VERB] &= !VERB_FLAG_COMPRESSED;
    let block = view.payload();
    if block.is_empty() {
        return Ok(());
    }
    out.resize(MAX_PACKET_LEN, 0);
    let result = lz4_flex::block::decompress_into(block, &mut out[MIN_PACKET_LEN..]);
    match result {
        Ok(0) => {
            out.clear();
            Err(DecompressError::Empty)
        }
        Ok(n) if n <= MAX_PAYLOAD_LEN => {
            out.truncate(MIN_PACKET_LEN + n);
            Ok(())
        }
        _ => {
            out.clear();
            Err(DecompressError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_packet(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x11; 27];
        p.push(0x14);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn round_trip_and_thresholds() {
        let mut scratch = vec![];
        let payload = b"ZeroTier".repeat(25);
        let original = plain_packet(&payload);
        let mut p = original.clone();
        assert!(compress_packet(&mut p, &mut scratch));
        assert!(p.len() < original.len());
        assert_eq!(p[27], 0x94);
        let mut out = vec![];
        decompress_packet(&p, &mut out).unwrap();
        assert_eq!(out, original);

        // 64 bytes of payload: not attempted.
        let mut small = plain_packet(&[0u8; 64]);
        assert!(!compress_packet(&mut small, &mut scratch));
        assert_eq!(small, plain_packet(&[0u8; 64]));
        // Incompressible: left alone, flag clear.
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut n = plain_packet(&noise);
        assert!(!compress_packet(&mut n, &mut scratch));
        assert_eq!(n, plain_packet(&noise));
    }

    #[test]
    fn hostile_blocks() {
        let mut out = vec![];
        // A literal run that claims more bytes than there are.
        let mut p = plain_packet(&[0xf0, 0xff, 0xff, 0xff, 0x10]);
        p[27] |= 0x80;
        assert!(decompress_packet(&p, &mut out).is_err());
        // A match reaching before the start of the output.
        let mut p = plain_packet(&[0x1f, 0x41, 0xff, 0x00, 0xff, 0xff, 0x10]);
        p[27] |= 0x80;
        assert!(decompress_packet(&p, &mut out).is_err());
        // Expanding beyond 9996 bytes: one literal then a long run of matches.
        let mut bomb = vec![0x1f, 0x41, 0x01, 0x00];
        bomb.extend(std::iter::repeat_n(0xff, 60));
        bomb.extend_from_slice(&[0x00, 0x00]);
        let mut p = plain_packet(&bomb);
        p[27] |= 0x80;
        assert!(decompress_packet(&p, &mut out).is_err());
        // Flag with an empty payload: just cleared.
        let mut p = plain_packet(&[]);
        p[27] |= 0x80;
        decompress_packet(&p, &mut out).unwrap();
        assert_eq!(out, plain_packet(&[]));
    }
}
