//! Tap offloads done in software: the `virtio_net_hdr` that prefixes every read and write of
//! a tap opened with `IFF_VNET_HDR`, segmentation of the TCP super-frames the kernel hands
//! over when TSO is on (software GSO), and coalescing of in-order TCP segments before they
//! are written to a tap (software GRO).
//!
//! Segmentation happens before a frame reaches the node, so what goes on the wire is always
//! ordinary MTU-sized Ethernet frames with valid checksums: any ZeroTier peer (ZeroTier One
//! included) receives what it would from a tap without offloads. Coalescing happens after
//! the node, so it never changes what is authenticated or filtered.
//!
//! Layout facts (linux/virtio_net.h): the legacy header is 10 bytes, `flags`, `gso_type`,
//! then `hdr_len`, `gso_size`, `csum_start`, `csum_offset` as 16-bit words in the tap's
//! vnet byte order, which is the host's own unless `TUNSETVNETLE/BE` says otherwise.

/// Bytes of the legacy `virtio_net_hdr` (`TUNSETVNETHDRSZ` is left at its default).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; the rest is to be added from `csum_start` to the end.
pub const FLAG_NEEDS_CSUM: u8 = 0x01;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the transport checksum has been checked already.
pub const FLAG_DATA_VALID: u8 = 0x02;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0x00;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 0x01;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 0x04;
/// `VIRTIO_NET_HDR_GSO_ECN`: the super-frame carries CWR; only its first segment keeps it.
pub const GSO_ECN: u8 = 0x80;

/// Largest frame a tap read or a coalesced write can hold: a 64 KiB IP packet and its
/// Ethernet header.
pub const MAX_OFFLOAD_FRAME: usize = ETHERNET_HEADER_LEN + 0xffff;

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const IP_PROTOCOL_TCP: u8 = 0x06;
const TCP_MIN_HEADER_LEN: usize = 20;
/// Offset of the TCP checksum in the TCP header.
const TCP_CHECKSUM_OFFSET: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// IPv4 "more fragments" flag and fragment offset: a fragment is never segmented or merged.
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;

/// The `virtio_net_hdr` of one tap read or write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    /// Bytes of Ethernet, IP and TCP headers (a hint: segmentation parses them itself).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHeader {
    /// The header at the start of a read; `None` if the read is shorter than one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..VNET_HDR_LEN)?;
        let word = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
        Some(Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    /// The header as written before a frame.
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut bytes = [0u8; VNET_HDR_LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        bytes
    }
}

/// Why a frame read from a tap could not be turned into plain frames (it is dropped).
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    #[error("checksum at {start} + {offset} lies outside the {len}-byte frame")]
    ChecksumOutsideFrame {
        start: usize,
        offset: usize,
        len: usize,
    },
    #[error("GSO type {0:#04x} is not one this tap enabled")]
    UnsupportedGso(u8),
    #[error("a GSO frame that is not Ethernet, IPv4 or IPv6 without extensions, and TCP")]
    NotTcp,
    #[error("a GSO frame with a segment size of 0")]
    ZeroSegmentSize,
    #[error("a {0}-byte segment does not fit a frame buffer")]
    SegmentTooLarge(usize),
}

// ---- Internet checksum -----------------------------------------------------------------------

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero) to the
/// ones'-complement sum `acc`, eight bytes at a time: a ones'-complement sum of 64-bit words
/// folds down to the same 16-bit sum.
fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let (sum, carry) = acc.overflowing_add(u64::from_be_bytes(bytes));
        acc = sum + u64::from(carry);
    }
    let mut rest = words.remainder().chunks_exact(2);
    for pair in &mut rest {
        let (sum, carry) = acc.overflowing_add(u64::from(u16::from_be_bytes([pair[0], pair[1]])));
        acc = sum + u64::from(carry);
    }
    if let [last] = rest.remainder() {
        let (sum, carry) = acc.overflowing_add(u64::from(*last) << 8);
        acc = sum + u64::from(carry);
    }
    acc
}

/// Folds a 64-bit ones'-complement sum to 16 bits (not complemented).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP/UDP pseudo-header sum of an IPv4 (`ip` = its header) or IPv6 packet for a
/// transport segment of `transport_len` bytes.
fn pseudo_header_sum(ip: &[u8], ipv4: bool, protocol: u8, transport_len: usize) -> u64 {
    if ipv4 {
        let acc = ones_sum(&ip[12..20], 0);
        ones_sum(&[0, protocol], acc) + transport_len as u64
    } else {
        let acc = ones_sum(&ip[8..40], 0);
        acc + u64::from(protocol) + transport_len as u64
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn write_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Writes the IPv4 header checksum of `header` (its whole length, options included).
fn set_ipv4_header_checksum(header: &mut [u8]) {
    write_u16(header, 10, 0);
    let sum = !fold(ones_sum(header, 0));
    write_u16(header, 10, sum);
}

/// Finishes a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the word at
/// `start + offset` holds the pseudo-header sum; the sum from `start` to the end of the
/// frame is added and the complement stored there.
pub fn complete_checksum(
    frame: &mut [u8],
    start: usize,
    offset: usize,
) -> Result<(), OffloadError> {
    let at = start.checked_add(offset).filter(|at| at + 2 <= frame.len());
    let Some(at) = at else {
        return Err(OffloadError::ChecksumOutsideFrame {
            start,
            offset,
            len: frame.len(),
        });
    };
    let mut checksum = !fold(ones_sum(&frame[start..], 0));
    // UDP (checksum at offset 6) sends a computed 0 as 0xffff: 0 means "no checksum".
    if offset == 6 && checksum == 0 {
        checksum = 0xffff;
    }
    write_u16(frame, at, checksum);
    Ok(())
}

// ---- Parsing an Ethernet / IP / TCP frame ----------------------------------------------------

/// Where the layers of an Ethernet + IPv4/IPv6 + TCP frame start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpLayout {
    ipv4: bool,
    /// Start of the TCP header.
    l4: usize,
    /// Start of the TCP payload (end of all headers).
    payload: usize,
}

const L3: usize = ETHERNET_HEADER_LEN;

impl TcpLayout {
    /// The layout of `frame` if it is Ethernet, then IPv4 (not a fragment) or IPv6 (TCP as
    /// the next header), then TCP with a sane data offset. Lengths are checked against the
    /// frame, not against the IP length fields.
    fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < L3 {
            return None;
        }
        let (ipv4, l4) = match read_u16(frame, 12) {
            ETHERTYPE_IPV4 => {
                let ip = frame.get(L3..L3 + IPV4_MIN_HEADER_LEN)?;
                let header_len = usize::from(ip[0] & 0x0f) * 4;
                if ip[0] >> 4 != 4
                    || header_len < IPV4_MIN_HEADER_LEN
                    || ip[9] != IP_PROTOCOL_TCP
                    || read_u16(ip, 6) & IPV4_FRAGMENT_MASK != 0
                {
                    return None;
                }
                (true, L3 + header_len)
            }
            ETHERTYPE_IPV6 => {
                let ip = frame.get(L3..L3 + IPV6_HEADER_LEN)?;
                if ip[0] >> 4 != 6 || ip[6] != IP_PROTOCOL_TCP {
                    return None;
                }
                (false, L3 + IPV6_HEADER_LEN)
            }
            _ => return None,
        };
        let tcp = frame.get(l4..l4 + TCP_MIN_HEADER_LEN)?;
        let tcp_header_len = usize::from(tcp[12] >> 4) * 4;
        if tcp_header_len < TCP_MIN_HEADER_LEN || l4 + tcp_header_len > frame.len() {
            return None;
        }
        Some(Self {
            ipv4,
            l4,
            payload: l4 + tcp_header_len,
        })
    }

    /// Sets the IP length field(s) for a frame of `frame_len` bytes, with a fresh IPv4
    /// header checksum.
    fn set_ip_length(&self, frame: &mut [u8], frame_len: usize) {
        if self.ipv4 {
            write_u16(frame, L3 + 2, (frame_len - L3) as u16);
            set_ipv4_header_checksum(&mut frame[L3..self.l4]);
        } else {
            write_u16(frame, L3 + 4, (frame_len - L3 - IPV6_HEADER_LEN) as u16);
        }
    }

    /// The pseudo-header sum of a frame of `frame_len` bytes.
    fn pseudo_sum(&self, frame: &[u8], frame_len: usize) -> u64 {
        pseudo_header_sum(
            &frame[L3..],
            self.ipv4,
            IP_PROTOCOL_TCP,
            frame_len - self.l4,
        )
    }

    /// Writes the full TCP checksum of `frame`.
    fn set_tcp_checksum(&self, frame: &mut [u8]) {
        let at = self.l4 + TCP_CHECKSUM_OFFSET;
        write_u16(frame, at, 0);
        let sum = ones_sum(&frame[self.l4..], self.pseudo_sum(frame, frame.len()));
        write_u16(frame, at, !fold(sum));
    }

    /// Whether the TCP checksum of `frame` (and the IPv4 header checksum) are right.
    fn checksums_valid(&self, frame: &[u8]) -> bool {
        if self.ipv4 && fold(ones_sum(&frame[L3..self.l4], 0)) != 0xffff {
            return false;
        }
        fold(ones_sum(
            &frame[self.l4..],
            self.pseudo_sum(frame, frame.len()),
        )) == 0xffff
    }

    /// Whether the IP length field says exactly `frame.len()` (no Ethernet padding, no
    /// truncation).
    fn ip_length_matches(&self, frame: &[u8]) -> bool {
        if self.ipv4 {
            usize::from(read_u16(frame, L3 + 2)) + L3 == frame.len()
        } else {
            usize::from(read_u16(frame, L3 + 4)) + L3 + IPV6_HEADER_LEN == frame.len()
        }
    }
}

// ---- Segmentation (frames read from a tap) ---------------------------------------------------

/// The MTU-sized TCP segments of one GSO super-frame read from a tap, written out one at a
/// time into frame buffers ([`Segments::write`]).
#[derive(Debug)]
pub struct Segments<'a> {
    frame: &'a [u8],
    layout: TcpLayout,
    segment_size: usize,
    count: usize,
    /// Whether the super-frame had CWR set with `GSO_ECN` (only the first segment keeps it).
    first_only_cwr: bool,
}

impl<'a> Segments<'a> {
    /// The segments of `frame` as its header describes them, each at most `max_frame_len`
    /// bytes long. The checksum the kernel left partial is recomputed for every segment.
    pub fn new(
        frame: &'a [u8],
        header: &VnetHeader,
        max_frame_len: usize,
    ) -> Result<Self, OffloadError> {
        let ipv4 = match header.gso_type & !GSO_ECN {
            GSO_TCPV4 => true,
            GSO_TCPV6 => false,
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        let layout = TcpLayout::parse(frame).ok_or(OffloadError::NotTcp)?;
        if layout.ipv4 != ipv4 {
            return Err(OffloadError::NotTcp);
        }
        let segment_size = usize::from(header.gso_size);
        if segment_size == 0 {
            return Err(OffloadError::ZeroSegmentSize);
        }
        let longest = (layout.payload + segment_size).min(frame.len());
        if longest > max_frame_len {
            return Err(OffloadError::SegmentTooLarge(longest));
        }
        let payload_len = frame.len() - layout.payload;
        Ok(Self {
            frame,
            layout,
            segment_size,
            count: payload_len.div_ceil(segment_size).max(1),
            first_only_cwr: header.gso_type & GSO_ECN != 0,
        })
    }

    /// How many segments there are.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes segment `index` (< [`Segments::len`]) into `out` and returns its length.
    /// `out` must hold the segment (at most the `max_frame_len` given to `new`).
    pub fn write(&self, index: usize, out: &mut [u8]) -> usize {
        let layout = self.layout;
        let headers = &self.frame[..layout.payload];
        let start = (layout.payload + index * self.segment_size).min(self.frame.len());
        let end = (start + self.segment_size).min(self.frame.len());
        let chunk = &self.frame[start..end];
        let len = headers.len() + chunk.len();
        let out = &mut out[..len];
        out[..headers.len()].copy_from_slice(headers);
        out[headers.len()..].copy_from_slice(chunk);

        if layout.ipv4 {
            // Consecutive IDs, as the kernel's own segmentation gives them.
            let id = read_u16(out, L3 + 4).wrapping_add(index as u16);
            write_u16(out, L3 + 4, id);
        }
        layout.set_ip_length(out, len);
        let seq = read_u32(out, layout.l4 + 4).wrapping_add((index * self.segment_size) as u32);
        out[layout.l4 + 4..layout.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let flags_at = layout.l4 + 13;
        if index + 1 < self.count {
            out[flags_at] &= !(TCP_FIN | TCP_PSH);
        }
        if index > 0 && (self.first_only_cwr || out[flags_at] & TCP_CWR != 0) {
            out[flags_at] &= !TCP_CWR;
        }
        layout.set_tcp_checksum(out);
        len
    }
}

/// What one read from an offloading tap holds.
#[derive(Debug)]
pub enum SplitRead<'a> {
    /// One ordinary frame (its checksum completed if the kernel left it partial).
    Frame(&'a [u8]),
    /// A super-frame to write out segment by segment.
    Segments(Segments<'a>),
}

/// What one read of `read` bytes (header first) holds. A partial checksum of a plain frame
/// is completed in place.
pub fn split_read(read: &mut [u8], max_frame_len: usize) -> Result<SplitRead<'_>, OffloadError> {
    let Some(header) = VnetHeader::parse(read) else {
        return Ok(SplitRead::Frame(&[]));
    };
    let frame = &mut read[VNET_HDR_LEN..];
    if header.gso_type == GSO_NONE {
        if header.flags & FLAG_NEEDS_CSUM != 0 {
            complete_checksum(
                frame,
                usize::from(header.csum_start),
                usize::from(header.csum_offset),
            )?;
        }
        return Ok(SplitRead::Frame(frame));
    }
    Ok(SplitRead::Segments(Segments::new(
        frame,
        &header,
        max_frame_len,
    )?))
}

// ---- Coalescing (frames written to a tap) ----------------------------------------------------

/// The TCP segment being grown, at the start of the coalescer's buffer.
#[derive(Clone, Copy, Debug)]
struct Pending {
    layout: TcpLayout,
    len: usize,
    /// Payload bytes of its first segment: every merged segment but the last has as many.
    segment_size: usize,
    segments: usize,
    next_seq: u32,
    /// No more may be merged (the last one was short or pushed).
    closed: bool,
}

/// Merges consecutive in-order TCP segments of one flow, written in one batch, into one
/// GSO frame, as the kernel's GRO would: the receiving stack then handles one large
/// packet instead of many. Anything else is written as it comes, in order.
///
/// Every segment merged had a valid checksum; the merged frame goes out with a partial
/// checksum (`NEEDS_CSUM`) that the kernel completes or, on local delivery, trusts.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// Allocated on first use, [`MAX_OFFLOAD_FRAME`] bytes.
    buf: Vec<u8>,
    pending: Option<Pending>,
}

impl Coalescer {
    /// Offers `frame` for the tap; `write` receives what is to be written now (header and
    /// frame, in tap order). A frame held back goes out with a later call or [`Coalescer::flush`].
    pub fn push(&mut self, frame: &[u8], write: &mut impl FnMut(&VnetHeader, &[u8])) {
        if self.try_merge(frame) {
            return;
        }
        self.flush(write);
        let Some(layout) = TcpLayout::parse(frame) else {
            write(&VnetHeader::default(), frame);
            return;
        };
        let flags = frame[layout.l4 + 13];
        let payload_len = frame.len() - layout.payload;
        let candidate = payload_len > 0
            && flags & !(TCP_ACK | TCP_PSH) == 0
            && flags & TCP_ACK != 0
            && layout.ip_length_matches(frame)
            && layout.checksums_valid(frame);
        if !candidate {
            write(&VnetHeader::default(), frame);
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; MAX_OFFLOAD_FRAME];
        }
        self.buf[..frame.len()].copy_from_slice(frame);
        self.pending = Some(Pending {
            layout,
            len: frame.len(),
            segment_size: payload_len,
            segments: 1,
            next_seq: read_u32(frame, layout.l4 + 4).wrapping_add(payload_len as u32),
            closed: flags & TCP_PSH != 0,
        });
    }

    /// Writes the frame being grown, if any.
    pub fn flush(&mut self, write: &mut impl FnMut(&VnetHeader, &[u8])) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let frame = &mut self.buf[..pending.len];
        if pending.segments == 1 {
            // Checked on the way in: the kernel need not check it again.
            let header = VnetHeader {
                flags: FLAG_DATA_VALID,
                ..VnetHeader::default()
            };
            write(&header, frame);
            return;
        }
        let layout = pending.layout;
        layout.set_ip_length(frame, pending.len);
        let partial = fold(layout.pseudo_sum(frame, pending.len));
        write_u16(frame, layout.l4 + TCP_CHECKSUM_OFFSET, partial);
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: if layout.ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: layout.payload as u16,
            gso_size: pending.segment_size as u16,
            csum_start: layout.l4 as u16,
            csum_offset: TCP_CHECKSUM_OFFSET as u16,
        };
        write(&header, frame);
    }

    /// Appends `frame`'s payload to the pending frame if it is the flow's next segment.
    fn try_merge(&mut self, frame: &[u8]) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            return false;
        };
        let layout = pending.layout;
        if pending.closed || frame.len() < layout.payload || TcpLayout::parse(frame) != Some(layout)
        {
            return false;
        }
        let payload_len = frame.len() - layout.payload;
        let flags = frame[layout.l4 + 13];
        let new_len = pending.len + payload_len;
        let head = &self.buf[..layout.payload];
        let same_flow = if layout.ipv4 {
            // Version to TOS, flags to protocol, addresses (length, ID, checksum may differ).
            head[L3..L3 + 2] == frame[L3..L3 + 2]
                && head[L3 + 6..L3 + 10] == frame[L3 + 6..L3 + 10]
                && head[L3 + 12..layout.l4] == frame[L3 + 12..layout.l4]
        } else {
            // Version, class, flow label; next header, hop limit, addresses.
            head[L3..L3 + 4] == frame[L3..L3 + 4]
                && head[L3 + 6..layout.l4] == frame[L3 + 6..layout.l4]
        };
        let l4 = layout.l4;
        let mergeable = same_flow
            && head[..L3] == frame[..L3]
            // Ports; then ack, data offset; then window; urgent pointer and options.
            && head[l4..l4 + 4] == frame[l4..l4 + 4]
            && head[l4 + 8..l4 + 13] == frame[l4 + 8..l4 + 13]
            && head[l4 + 14..l4 + 16] == frame[l4 + 14..l4 + 16]
            && head[l4 + 18..layout.payload] == frame[l4 + 18..layout.payload]
            && flags & !TCP_PSH == TCP_ACK
            && read_u32(frame, l4 + 4) == pending.next_seq
            && payload_len > 0
            && payload_len <= pending.segment_size
            && new_len <= self.buf.len()
            && new_len - L3 <= 0xffff
            && layout.ip_length_matches(frame)
            && layout.checksums_valid(frame);
        if !mergeable {
            return false;
        }
        self.buf[pending.len..new_len].copy_from_slice(&frame[layout.payload..]);
        self.buf[l4 + 13] |= flags & TCP_PSH;
        pending.len = new_len;
        pending.segments += 1;
        pending.next_seq = pending.next_seq.wrapping_add(payload_len as u32);
        pending.closed = flags & TCP_PSH != 0 || payload_len < pending.segment_size;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: [u8; 4] = [10, 1, 2, 3];
    const DST4: [u8; 4] = [10, 1, 2, 4];

    /// An Ethernet + IPv4/IPv6 + TCP frame with a correct checksum and `options` (a
    /// multiple of 4 bytes).
    fn tcp_frame(ipv4: bool, seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 14];
        frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let tcp_len = 20 + options.len() + payload.len();
        if ipv4 {
            frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = IP_PROTOCOL_TCP;
            ip[12..16].copy_from_slice(&SRC4);
            ip[16..20].copy_from_slice(&DST4);
            set_ipv4_header_checksum(&mut ip);
            frame.extend_from_slice(&ip);
        } else {
            frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = IP_PROTOCOL_TCP;
            ip[7] = 64;
            ip[8] = 0xfd;
            ip[23] = 1;
            ip[24] = 0xfd;
            ip[39] = 2;
            frame.extend_from_slice(&ip);
        }
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
        tcp[12] = (((20 + options.len()) / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
        frame.extend_from_slice(&tcp);
        frame.extend_from_slice(options);
        frame.extend_from_slice(payload);
        let layout = TcpLayout::parse(&frame).unwrap();
        layout.set_tcp_checksum(&mut frame);
        frame
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// Timestamps option padded with two NOPs, as Linux sends it.
    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    /// What the kernel hands over with TSO: the super-frame with a partial checksum.
    fn super_frame(ipv4: bool, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut frame = tcp_frame(ipv4, 1000, flags, &TIMESTAMPS, data);
        let layout = TcpLayout::parse(&frame).unwrap();
        let partial = fold(layout.pseudo_sum(&frame, frame.len()));
        write_u16(&mut frame, layout.l4 + 16, partial);
        frame
    }

    fn segment_all(frame: &[u8], header: &VnetHeader) -> Vec<Vec<u8>> {
        let segments = Segments::new(frame, header, 10_018).unwrap();
        (0..segments.len())
            .map(|i| {
                let mut out = vec![0u8; 10_018];
                let len = segments.write(i, &mut out);
                out.truncate(len);
                out
            })
            .collect()
    }

    #[test]
    fn header_round_trips() {
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 86,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(VnetHeader::parse(&header.emit()), Some(header));
        assert_eq!(VnetHeader::parse(&[0; 9]), None);
    }

    #[test]
    fn checksum_matches_a_known_ipv4_header() {
        // The classic example header (checksum 0xb861).
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        set_ipv4_header_checksum(&mut header);
        assert_eq!(read_u16(&header, 10), 0xb861);
        // Odd lengths pad the last byte.
        assert_eq!(fold(ones_sum(&[0x01, 0x02, 0x03], 0)), 0x0402);
    }

    #[test]
    fn segments_ipv4_with_options_seq_ids_flags_and_checksums() {
        let data = payload(10_000);
        let frame = super_frame(true, TCP_ACK | TCP_PSH | TCP_FIN, &data);
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 2748,
            csum_start: 34,
            csum_offset: 16,
        };
        let segments = segment_all(&frame, &header);
        assert_eq!(segments.len(), 4);
        let mut rebuilt = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let layout = TcpLayout::parse(segment).unwrap();
            assert_eq!(layout.payload, 14 + 20 + 32);
            assert!(layout.ip_length_matches(segment));
            assert!(layout.checksums_valid(segment), "segment {i}");
            assert_eq!(read_u16(segment, 18), 0x1234 + i as u16, "IPv4 ID");
            assert_eq!(read_u32(segment, 34 + 4), 1000 + (i * 2748) as u32);
            let flags = segment[34 + 13];
            if i == 3 {
                assert_eq!(flags, TCP_ACK | TCP_PSH | TCP_FIN);
                assert_eq!(segment.len() - layout.payload, 10_000 - 3 * 2748);
            } else {
                assert_eq!(flags, TCP_ACK);
                assert_eq!(segment.len() - layout.payload, 2748);
            }
            assert_eq!(segment[layout.l4 + 20..layout.payload], TIMESTAMPS);
            rebuilt.extend_from_slice(&segment[layout.payload..]);
        }
        assert_eq!(rebuilt, data);
    }

    #[test]
    fn segments_ipv6_and_keeps_cwr_on_the_first_only() {
        let data = payload(3000);
        let frame = super_frame(false, TCP_ACK | TCP_CWR, &data);
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            gso_size: 1000,
            ..VnetHeader::default()
        };
        let segments = segment_all(&frame, &header);
        assert_eq!(segments.len(), 3);
        for (i, segment) in segments.iter().enumerate() {
            let layout = TcpLayout::parse(segment).unwrap();
            assert!(!layout.ipv4);
            assert!(layout.ip_length_matches(segment));
            assert!(layout.checksums_valid(segment));
            let expected = if i == 0 { TCP_ACK | TCP_CWR } else { TCP_ACK };
            assert_eq!(segment[layout.l4 + 13], expected);
        }
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let frame = super_frame(true, TCP_ACK, &payload(100));
        let header = |gso_type, gso_size| VnetHeader {
            gso_type,
            gso_size,
            ..VnetHeader::default()
        };
        assert_eq!(
            Segments::new(&frame, &header(GSO_TCPV6, 50), 10_018).unwrap_err(),
            OffloadError::NotTcp
        );
        assert_eq!(
            Segments::new(&frame, &header(0x03, 50), 10_018).unwrap_err(),
            OffloadError::UnsupportedGso(0x03)
        );
        assert_eq!(
            Segments::new(&frame, &header(GSO_TCPV4, 0), 10_018).unwrap_err(),
            OffloadError::ZeroSegmentSize
        );
        assert!(Segments::new(&frame[..40], &header(GSO_TCPV4, 50), 10_018).is_err());
        // A payload-less super-frame is one segment.
        let bare = super_frame(true, TCP_ACK, &[]);
        assert_eq!(segment_all(&bare, &header(GSO_TCPV4, 50)).len(), 1);
    }

    #[test]
    fn split_read_completes_partial_udp_checksums_and_passes_others() {
        // An IPv4 UDP frame whose checksum holds only the pseudo-header sum.
        let mut frame = vec![0u8; 14 + 20 + 8 + 5];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame[14] = 0x45;
        frame[14 + 9] = 0x11;
        frame[14 + 12..14 + 16].copy_from_slice(&SRC4);
        frame[14 + 16..14 + 20].copy_from_slice(&DST4);
        frame[34 + 4..34 + 6].copy_from_slice(&13u16.to_be_bytes());
        frame[42..].copy_from_slice(b"hello");
        let pseudo = fold(pseudo_header_sum(&frame[14..], true, 0x11, 13));
        write_u16(&mut frame, 34 + 6, pseudo);
        let header = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHeader::default()
        };
        let mut read = header.emit().to_vec();
        read.extend_from_slice(&frame);
        let SplitRead::Frame(done) = split_read(&mut read, 10_018).unwrap() else {
            panic!("a plain frame");
        };
        assert_eq!(
            fold(ones_sum(
                &done[34..],
                pseudo_header_sum(&done[14..], true, 0x11, 13)
            )),
            0xffff
        );
        // A frame with no offload flags comes out untouched; a bad offset is an error.
        let mut read = VnetHeader::default().emit().to_vec();
        read.extend_from_slice(b"arp or anything");
        assert!(matches!(
            split_read(&mut read, 10_018),
            Ok(SplitRead::Frame(b"arp or anything"))
        ));
        let mut read = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            csum_start: 10,
            csum_offset: 6,
            ..VnetHeader::default()
        }
        .emit()
        .to_vec();
        read.extend_from_slice(&[0; 17]);
        assert!(split_read(&mut read, 10_018).is_err());
    }

    fn coalesce(frames: &[Vec<u8>]) -> Vec<(VnetHeader, Vec<u8>)> {
        let mut coalescer = Coalescer::default();
        let mut written = Vec::new();
        let mut write = |header: &VnetHeader, frame: &[u8]| written.push((*header, frame.to_vec()));
        for frame in frames {
            coalescer.push(frame, &mut write);
        }
        coalescer.flush(&mut write);
        written
    }

    /// Segments a written GSO frame the way the kernel would, to check it.
    fn resegment(header: &VnetHeader, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut frame = frame.to_vec();
        complete_checksum(
            &mut frame,
            header.csum_start.into(),
            header.csum_offset.into(),
        )
        .unwrap();
        let layout = TcpLayout::parse(&frame).unwrap();
        assert!(
            layout.checksums_valid(&frame),
            "the completed checksum is right"
        );
        segment_all(&frame, header)
    }

    #[test]
    fn coalesces_in_order_segments_of_one_flow() {
        for ipv4 in [true, false] {
            let data = payload(4 * 1400 + 300);
            let frames: Vec<Vec<u8>> = data
                .chunks(1400)
                .enumerate()
                .map(|(i, chunk)| {
                    let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                    tcp_frame(ipv4, 5000 + (i * 1400) as u32, flags, &TIMESTAMPS, chunk)
                })
                .collect();
            let written = coalesce(&frames);
            assert_eq!(written.len(), 1);
            let (header, merged) = &written[0];
            assert_eq!(header.flags, FLAG_NEEDS_CSUM);
            assert_eq!(header.gso_type, if ipv4 { GSO_TCPV4 } else { GSO_TCPV6 });
            assert_eq!(header.gso_size, 1400);
            let layout = TcpLayout::parse(merged).unwrap();
            assert_eq!(usize::from(header.hdr_len), layout.payload);
            assert!(layout.ip_length_matches(merged));
            assert_eq!(merged[layout.payload..], data[..]);
            assert_eq!(merged[layout.l4 + 13], TCP_ACK | TCP_PSH);
            // The kernel's view: the same segments as were merged.
            let again = resegment(header, merged);
            assert_eq!(again.len(), 5);
            for (original, rebuilt) in frames.iter().zip(&again) {
                let l = TcpLayout::parse(original).unwrap();
                assert_eq!(original[l.l4..], rebuilt[l.l4..]);
            }
        }
    }

    #[test]
    fn does_not_coalesce_gaps_other_flows_or_flags() {
        let a = tcp_frame(true, 0, TCP_ACK, &[], &payload(1000));
        let after_a = tcp_frame(true, 1000, TCP_ACK, &[], &payload(1000));
        let gap = tcp_frame(true, 3000, TCP_ACK, &[], &payload(1000));
        let fin = tcp_frame(true, 2000, TCP_ACK | TCP_FIN, &[], &payload(1000));
        let longer = tcp_frame(true, 1000, TCP_ACK, &[], &payload(1200));
        let mut other_flow = after_a.clone();
        other_flow[14 + 19] = 9; // another destination address
        let other_flow = {
            let mut f = other_flow;
            set_ipv4_header_checksum(&mut f[14..34]);
            TcpLayout::parse(&f).unwrap().set_tcp_checksum(&mut f);
            f
        };
        let mut corrupt = after_a.clone();
        corrupt[60] ^= 0xff;
        let udp_like = b"not ip at all, passes through".to_vec();
        for (second, why) in [
            (&gap, "gap"),
            (&fin, "FIN"),
            (&longer, "longer than the first"),
            (&other_flow, "other flow"),
            (&corrupt, "bad checksum"),
            (&udp_like, "not TCP"),
        ] {
            let written = coalesce(&[a.clone(), second.clone()]);
            assert_eq!(written.len(), 2, "{why}");
            assert_eq!(written[0].1, a, "{why}");
            assert_eq!(written[0].0.flags, FLAG_DATA_VALID, "{why}");
            assert_eq!(&written[1].1, second, "{why}: written untouched");
            assert_eq!(written[1].0.gso_type, GSO_NONE, "{why}");
        }
        // After a short segment nothing more is appended; order is kept.
        let short = tcp_frame(true, 1000, TCP_ACK, &[], &payload(10));
        let next = tcp_frame(true, 1010, TCP_ACK, &[], &payload(10));
        let written = coalesce(&[a.clone(), short, next.clone()]);
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].0.gso_size, 1000);
        assert_eq!(written[1].1, next);
        // A lone pure ACK is never held: written as it is.
        let ack = tcp_frame(true, 0, TCP_ACK, &[], &[]);
        let written = coalesce(std::slice::from_ref(&ack));
        assert_eq!(written, vec![(VnetHeader::default(), ack)]);
    }

    #[test]
    fn coalescing_stops_at_64k() {
        let frames: Vec<Vec<u8>> = (0..30)
            .map(|i| tcp_frame(true, i * 2800, TCP_ACK, &[], &payload(2800)))
            .collect();
        let written = coalesce(&frames);
        assert!(written.len() >= 2);
        let mut total = 0;
        for (header, frame) in &written {
            assert!(frame.len() - 14 <= 0xffff);
            let layout = TcpLayout::parse(frame).unwrap();
            total += frame.len() - layout.payload;
            if header.gso_type != GSO_NONE {
                assert_eq!(
                    resegment(header, frame).len(),
                    (frame.len() - 54).div_ceil(2800)
                );
            }
        }
        assert_eq!(total, 30 * 2800);
    }
}
