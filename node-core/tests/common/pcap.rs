//! A small reader for classic libpcap capture files, just enough to pull UDP datagrams out of
//! the ZeroTier One captures in `tests/data/`: no external pcap crate, and no panic on any
//! input (every length is checked before it is used).
//!
//! Supported: both byte orders, microsecond and nanosecond timestamps; link types Ethernet
//! (with up to two 802.1Q/802.1ad tags), raw IP, Linux cooked v1 (SLL) and v2 (SLL2); IPv4
//! and IPv6 (skipping the usual extension headers) carrying UDP. Not pcapng.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Classic pcap magic, as read little-endian from a file written on a little-endian host with
/// microsecond timestamps; the other three are the byte-swapped and nanosecond variants.
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Link types (`LINKTYPE_*` from tcpdump.org).
pub(crate) const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

const IP_PROTO_UDP: u8 = 0x11;
/// IPv6 extension headers with the generic `next header, length in 8-byte units - 1` layout.
const IPV6_HOP_BY_HOP: u8 = 0x00;
const IPV6_ROUTING: u8 = 0x2b;
const IPV6_FRAGMENT: u8 = 0x2c;
const IPV6_DESTINATION_OPTIONS: u8 = 0x3c;

const UDP_HEADER_LEN: usize = 8;

/// Why a capture file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PcapError {
    #[error("not a classic pcap file (magic {0:#010x}; pcapng is not supported)")]
    BadMagic(u32),
    #[error("the file ends inside the {0}")]
    Truncated(&'static str),
    #[error("link type {0} is not supported (Ethernet, raw IP, Linux cooked v1/v2 are)")]
    UnsupportedLinkType(u32),
    #[error("record {record}: {what}")]
    Record { record: usize, what: &'static str },
}

/// Why a record was not returned as a UDP datagram; such records are counted, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Skipped {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, …).
    NotIp,
    /// IP, but not UDP.
    NotUdp,
    /// A piece of an IP-fragmented datagram (not reassembled here).
    IpFragment,
}

/// One UDP datagram from the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UdpDatagram<'a> {
    /// 1-based record number, as Wireshark numbers frames.
    pub(crate) record: usize,
    /// Capture time, microseconds since the Unix epoch.
    pub(crate) time_micros: i64,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) payload: &'a [u8],
}

/// What [`Pcap::udp_datagrams`] found.
#[derive(Clone, Debug, Default)]
pub(crate) struct UdpRecords<'a> {
    pub(crate) datagrams: Vec<UdpDatagram<'a>>,
    /// Records that are not UDP datagrams, with their record numbers.
    pub(crate) skipped: Vec<(usize, Skipped)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteOrder {
    Little,
    Big,
}

/// A parsed classic pcap file over borrowed bytes.
#[derive(Clone, Debug)]
pub(crate) struct Pcap<'a> {
    order: ByteOrder,
    nanosecond_timestamps: bool,
    link_type: u32,
    records: &'a [u8],
}

impl<'a> Pcap<'a> {
    /// Reads the global header.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, PcapError> {
        let header = bytes
            .get(..GLOBAL_HEADER_LEN)
            .ok_or(PcapError::Truncated("global header"))?;
        let magic_le = u32::from_le_bytes(array4(&header[0..4]));
        let magic_be = u32::from_be_bytes(array4(&header[0..4]));
        let (order, nanosecond_timestamps) = match (magic_le, magic_be) {
            (MAGIC_MICROS, _) => (ByteOrder::Little, false),
            (MAGIC_NANOS, _) => (ByteOrder::Little, true),
            (_, MAGIC_MICROS) => (ByteOrder::Big, false),
            (_, MAGIC_NANOS) => (ByteOrder::Big, true),
            _ => return Err(PcapError::BadMagic(magic_be)),
        };
        let pcap = Self {
            order,
            nanosecond_timestamps,
            link_type: 0,
            records: &bytes[GLOBAL_HEADER_LEN..],
        };
        // The link type is the low 16 bits of the last header word (the upper bits may carry
        // FCS information in newer files).
        let link_type = pcap.u32(&header[20..24]) & 0xffff;
        match link_type {
            LINKTYPE_ETHERNET | LINKTYPE_RAW | LINKTYPE_LINUX_SLL | LINKTYPE_LINUX_SLL2 => {
                Ok(Self { link_type, ..pcap })
            }
            other => Err(PcapError::UnsupportedLinkType(other)),
        }
    }

    /// The file's link type (`LINKTYPE_*`).
    pub(crate) fn link_type(&self) -> u32 {
        self.link_type
    }

    /// Every UDP datagram in the file, in capture order; other records are listed as skipped.
    /// A record whose captured length is shorter than its IP or UDP lengths say is an error:
    /// the payload would be incomplete.
    pub(crate) fn udp_datagrams(&self) -> Result<UdpRecords<'a>, PcapError> {
        let mut out = UdpRecords::default();
        let mut rest = self.records;
        let mut record = 0;
        while !rest.is_empty() {
            record += 1;
            let header = rest
                .get(..RECORD_HEADER_LEN)
                .ok_or(PcapError::Truncated("record header"))?;
            let seconds = i64::from(self.u32(&header[0..4]));
            let fraction = i64::from(self.u32(&header[4..8]));
            let captured_len = self.u32(&header[8..12]) as usize;
            let frame = rest
                .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + captured_len)
                .ok_or(PcapError::Truncated("record data"))?;
            rest = &rest[RECORD_HEADER_LEN + captured_len..];
            let micros = if self.nanosecond_timestamps {
                fraction / 1000
            } else {
                fraction
            };
            let time_micros = seconds * 1_000_000 + micros;
            match self.udp_in_frame(frame) {
                Ok((source, destination, payload)) => out.datagrams.push(UdpDatagram {
                    record,
                    time_micros,
                    source,
                    destination,
                    payload,
                }),
                Err(FrameError::Skipped(reason)) => out.skipped.push((record, reason)),
                Err(FrameError::Malformed(what)) => {
                    return Err(PcapError::Record { record, what });
                }
            }
        }
        Ok(out)
    }

    fn u32(&self, bytes: &[u8]) -> u32 {
        match self.order {
            ByteOrder::Little => u32::from_le_bytes(array4(bytes)),
            ByteOrder::Big => u32::from_be_bytes(array4(bytes)),
        }
    }

    fn udp_in_frame(&self, frame: &'a [u8]) -> Result<UdpParts<'a>, FrameError> {
        let (ethertype, ip) = match self.link_type {
            LINKTYPE_ETHERNET => ethernet_payload(frame)?,
            LINKTYPE_LINUX_SLL => {
                // 16-byte header; the protocol (an EtherType) is its last two bytes.
                let ethertype = be16(frame, 14).ok_or(FrameError::Malformed("short SLL"))?;
                (ethertype, &frame[16..])
            }
            LINKTYPE_LINUX_SLL2 => {
                // 20-byte header; the protocol is its first two bytes.
                let ethertype = be16(frame, 0).ok_or(FrameError::Malformed("short SLL2"))?;
                let ip = frame.get(20..).ok_or(FrameError::Malformed("short SLL2"))?;
                (ethertype, ip)
            }
            _ => {
                let version = frame.first().ok_or(FrameError::Malformed("empty frame"))? >> 4;
                let ethertype = match version {
                    4 => ETHERTYPE_IPV4,
                    6 => ETHERTYPE_IPV6,
                    _ => return Err(FrameError::Skipped(Skipped::NotIp)),
                };
                (ethertype, frame)
            }
        };
        match ethertype {
            ETHERTYPE_IPV4 => ipv4_udp(ip),
            ETHERTYPE_IPV6 => ipv6_udp(ip),
            _ => Err(FrameError::Skipped(Skipped::NotIp)),
        }
    }
}

/// Source, destination, UDP payload.
type UdpParts<'a> = (SocketAddr, SocketAddr, &'a [u8]);

enum FrameError {
    Skipped(Skipped),
    Malformed(&'static str),
}

/// The EtherType and payload of an Ethernet II frame, looking through VLAN tags.
fn ethernet_payload(frame: &[u8]) -> Result<(u16, &[u8]), FrameError> {
    let mut offset = 12;
    for _ in 0..3 {
        let ethertype = be16(frame, offset).ok_or(FrameError::Malformed("short Ethernet"))?;
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            offset += 4;
            continue;
        }
        return Ok((ethertype, &frame[offset + 2..]));
    }
    Err(FrameError::Malformed("more than two VLAN tags"))
}

fn ipv4_udp(packet: &[u8]) -> Result<UdpParts<'_>, FrameError> {
    let first = *packet
        .first()
        .ok_or(FrameError::Malformed("empty IPv4 header"))?;
    if first >> 4 != 4 {
        return Err(FrameError::Malformed("IPv4 EtherType but version is not 4"));
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let header = packet
        .get(..header_len.max(20))
        .ok_or(FrameError::Malformed("truncated IPv4 header"))?;
    if header_len < 20 {
        return Err(FrameError::Malformed("IPv4 header length below 20"));
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    // Anything after the IP total length is link-layer padding.
    let packet = packet.get(..total_len).ok_or(FrameError::Malformed(
        "IPv4 total length beyond the captured bytes",
    ))?;
    let fragment_field = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = fragment_field & 0x2000 != 0;
    let fragment_offset = fragment_field & 0x1fff;
    if header[9] != IP_PROTO_UDP {
        return Err(FrameError::Skipped(Skipped::NotUdp));
    }
    if more_fragments || fragment_offset != 0 {
        return Err(FrameError::Skipped(Skipped::IpFragment));
    }
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let destination = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let udp = packet.get(header_len..).ok_or(FrameError::Malformed(
        "IPv4 total length shorter than its header",
    ))?;
    udp_parts(IpAddr::V4(source), IpAddr::V4(destination), udp)
}

fn ipv6_udp(packet: &[u8]) -> Result<UdpParts<'_>, FrameError> {
    let header = packet
        .get(..40)
        .ok_or(FrameError::Malformed("truncated IPv6 header"))?;
    if header[0] >> 4 != 6 {
        return Err(FrameError::Malformed("IPv6 EtherType but version is not 6"));
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut next_header = header[6];
    let source = Ipv6Addr::from(array16(&header[8..24]));
    let destination = Ipv6Addr::from(array16(&header[24..40]));
    // Jumbograms (payload length 0) do not occur on a 1500-byte LAN.
    let mut rest = packet
        .get(40..40 + payload_len)
        .ok_or(FrameError::Malformed(
            "IPv6 payload length beyond the captured bytes",
        ))?;
    loop {
        match next_header {
            IP_PROTO_UDP => break,
            IPV6_FRAGMENT => return Err(FrameError::Skipped(Skipped::IpFragment)),
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {
                let (&next, &len_units) = rest
                    .first()
                    .zip(rest.get(1))
                    .ok_or(FrameError::Malformed("truncated IPv6 extension header"))?;
                let len = (usize::from(len_units) + 1) * 8;
                rest = rest
                    .get(len..)
                    .ok_or(FrameError::Malformed("truncated IPv6 extension header"))?;
                next_header = next;
            }
            _ => return Err(FrameError::Skipped(Skipped::NotUdp)),
        }
    }
    udp_parts(IpAddr::V6(source), IpAddr::V6(destination), rest)
}

/// Splits a UDP header off `segment` (which ends where the IP payload ends).
fn udp_parts(
    source: IpAddr,
    destination: IpAddr,
    segment: &[u8],
) -> Result<UdpParts<'_>, FrameError> {
    let source_port = be16(segment, 0).ok_or(FrameError::Malformed("truncated UDP header"))?;
    let destination_port = be16(segment, 2).ok_or(FrameError::Malformed("truncated UDP header"))?;
    let udp_len =
        usize::from(be16(segment, 4).ok_or(FrameError::Malformed("truncated UDP header"))?);
    if udp_len < UDP_HEADER_LEN {
        return Err(FrameError::Malformed("UDP length below 8"));
    }
    let payload = segment
        .get(UDP_HEADER_LEN..udp_len)
        .ok_or(FrameError::Malformed("UDP length beyond the IP payload"))?;
    Ok((
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
        payload,
    ))
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    let pair = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

/// The first 4 bytes of a slice the caller has checked is at least that long.
fn array4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[..4]);
    out
}

fn array16(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian microsecond file with one Ethernet record holding `frame`.
    fn file(link_type: u32, frame: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        out.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        out.extend_from_slice(&[2, 0, 4, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&0x40000u32.to_le_bytes());
        out.extend_from_slice(&link_type.to_le_bytes());
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
        out
    }

    /// Ethernet + IPv4 + UDP 10.0.0.1:1 → 10.0.0.2:9993 with `payload`, then `padding` zeros.
    fn ethernet_ipv4_udp(payload: &[u8], padding: usize) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = 20 + 8 + payload.len();
        frame.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0]);
        frame.extend_from_slice(&[64, IP_PROTO_UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let udp_len = 8 + payload.len();
        frame.extend_from_slice(&[0, 1, 0x27, 0x09, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        frame.extend_from_slice(payload);
        frame.extend(std::iter::repeat_n(0, padding));
        frame
    }

    #[test]
    fn reads_padded_ethernet_udp() {
        let bytes = file(LINKTYPE_ETHERNET, &ethernet_ipv4_udp(&[1, 2, 3, 4], 14));
        let records = Pcap::parse(&bytes).unwrap().udp_datagrams().unwrap();
        assert_eq!(records.datagrams.len(), 1);
        let d = &records.datagrams[0];
        assert_eq!(d.payload, [1, 2, 3, 4]);
        assert_eq!(d.source, "10.0.0.1:1".parse().unwrap());
        assert_eq!(d.destination, "10.0.0.2:9993".parse().unwrap());
        assert_eq!((d.record, d.time_micros), (1, 7_000_009));
    }

    #[test]
    fn never_panics_on_cut_or_corrupted_files() {
        let bytes = file(LINKTYPE_ETHERNET, &ethernet_ipv4_udp(&[9; 40], 0));
        for cut in 0..bytes.len() {
            if let Ok(pcap) = Pcap::parse(&bytes[..cut]) {
                let _ = pcap.udp_datagrams();
            }
        }
        for i in GLOBAL_HEADER_LEN..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[i] ^= flip;
                if let Ok(pcap) = Pcap::parse(&corrupted) {
                    let _ = pcap.udp_datagrams();
                }
            }
        }
        assert!(matches!(Pcap::parse(&[0; 24]), Err(PcapError::BadMagic(0))));
        assert_eq!(
            Pcap::parse(&file(228, &[])).unwrap_err(),
            PcapError::UnsupportedLinkType(228)
        );
    }
}
