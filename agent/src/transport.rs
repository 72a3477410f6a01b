//! The node's UDP sockets: one IPv4 socket on `0.0.0.0:<port>` and, where the host has IPv6,
//! one IPv6-only socket on `[::]:<port>` (ZeroTier One binds the same way).
//!
//! The driver sees them through [`Transport`], so tests can drive it over other transports.
//!
//! Datagrams move in batches: [`UdpTransport`] takes up to [`BATCH`] waiting datagrams with
//! one `recvmmsg` into a [`RecvBatch`] the driver keeps, and sends a turn's datagrams with
//! `sendmmsg`, so a burst costs a few system calls and no allocation.

// `recvmmsg` and `sendmmsg` have no safe wrapper in the crates we use: the raw calls, each in
// its own block with a SAFETY note, are the only unsafe code in this module.
#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use node_core::node::Transmit;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 1 << 20;
/// Datagrams per `recvmmsg` / `sendmmsg` call.
pub const BATCH: usize = 32;
/// Room for one received datagram: more than the largest physical MTU ZeroTier uses
/// (10324); a longer datagram is truncated by the kernel and dropped here.
const RECV_SLOT: usize = 16_384;

/// Datagrams received in one call, in buffers kept from call to call.
pub struct RecvBatch {
    /// [`BATCH`] slots of [`RECV_SLOT`] bytes.
    data: Vec<u8>,
    lens: [usize; BATCH],
    from: [SocketAddr; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            data: vec![0; BATCH * RECV_SLOT],
            lens: [0; BATCH],
            from: [SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); BATCH],
            count: 0,
        }
    }

    /// The datagrams of the last receive, with their senders.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.count).map(|i| (self.from[i], &self.data[i * RECV_SLOT..][..self.lens[i]]))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn clear(&mut self) {
        self.count = 0;
    }

    /// The next free slot, to receive into; `None` when the batch is full.
    fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.count;
        (i < BATCH).then(|| &mut self.data[i * RECV_SLOT..][..RECV_SLOT])
    }

    /// Records the datagram just written into the next slot.
    fn commit(&mut self, len: usize, from: SocketAddr) {
        if self.count < BATCH {
            self.lens[self.count] = len.min(RECV_SLOT);
            self.from[self.count] = from;
            self.count += 1;
        }
    }
}

/// Datagrams in and out.
pub trait Transport: Send {
    /// Waits for the next datagram. Must be cancel-safe: the driver selects over it.
    fn recv<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a;

    /// Sends one datagram; `ttl` applies to this datagram only.
    fn send<'a>(
        &'a mut self,
        to: SocketAddr,
        data: &'a [u8],
        ttl: Option<u8>,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Waits for datagrams and puts those waiting (at least one) into `batch`, replacing
    /// what it held. Must be cancel-safe, as [`Transport::recv`]. By default, one at a time.
    fn recv_batch<'a>(
        &'a mut self,
        batch: &'a mut RecvBatch,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        async move {
            batch.clear();
            let Some(slot) = batch.next_slot() else {
                return Ok(());
            };
            let (len, from) = self.recv(slot).await?;
            batch.commit(len, from);
            Ok(())
        }
    }

    /// Sends every datagram of `datagrams`; a failed one is logged and skipped. By default,
    /// one at a time.
    fn send_batch<'a>(
        &'a mut self,
        datagrams: &'a [Transmit],
    ) -> impl Future<Output = ()> + Send + 'a {
        async move {
            for transmit in datagrams {
                if let Err(e) = self.send(transmit.to, &transmit.data, transmit.ttl).await {
                    tracing::debug!(to = %transmit.to, "UDP send failed: {e}");
                }
            }
        }
    }

    /// The addresses bound, for `/status`.
    fn local_addrs(&self) -> Vec<SocketAddr>;

    /// A small number naming the socket a path uses (`localSocket` in `/peer`).
    fn local_socket_id(&self, remote: SocketAddr) -> i64;
}

/// The real UDP sockets.
pub struct UdpTransport {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
}

impl UdpTransport {
    /// Binds `0.0.0.0:port` (required) and `[::]:port` (IPv6-only; skipped with a warning
    /// if the host has no IPv6). Port 0 picks a free port, shared by both sockets.
    pub fn bind(port: u16) -> io::Result<Self> {
        let v4 = bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        let port = v4.local_addr()?.port();
        let v6 = match bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!("no IPv6 socket on [::]:{port} ({e}); continuing with IPv4 only");
                None
            }
        };
        Ok(Self { v4, v6 })
    }

    /// The UDP port bound.
    pub fn port(&self) -> io::Result<u16> {
        Ok(self.v4.local_addr()?.port())
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Without this a v6 socket would also take IPv4 traffic, and the v4 bind collides.
        socket.set_only_v6(true)?;
    }
    // Bursts of HELLOs and relayed traffic: a larger buffer drops less. Best effort.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives from `socket` if a datagram is waiting; `WouldBlock` when readiness was stale.
fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let (len, from) = socket.try_recv_from(buf)?;
    Ok((len, unmap(from)))
}

/// Receives the datagrams waiting on `socket` into `batch` with one `recvmmsg`;
/// `WouldBlock` when none is.
fn try_recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
    batch.clear();
    // The headers point into `batch.data` and into `names`, both alive and unmoved for
    // the whole call; they are rebuilt on every call, so nothing holds a pointer after it.
    // SAFETY: all-zero bytes are a valid value of these plain C structs.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((slot, iovec), (header, name)) in batch
        .data
        .chunks_exact_mut(RECV_SLOT)
        .zip(iovecs.iter_mut())
        .zip(headers.iter_mut().zip(names.iter_mut()))
    {
        iovec.iov_base = slot.as_mut_ptr().cast();
        iovec.iov_len = slot.len();
        header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `headers` holds BATCH initialized headers whose buffers (iovecs into
    // `batch.data`, names into `names`) are valid for writes of the lengths given and
    // outlive the call; the kernel writes at most those lengths and the counts below.
    let received = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    for (header, name) in headers.iter().zip(names.iter()).take(received as usize) {
        let len = header.msg_len as usize;
        let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let from = socket_addr_of(name, header.msg_hdr.msg_namelen);
        // The slot is the next one either way; a datagram we cannot use leaves it empty.
        match from {
            Some(from) if !truncated => batch.commit(len, unmap(from)),
            _ => batch.commit(0, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        }
    }
    Ok(())
}

/// The address the kernel wrote into `name`, if IPv4 or IPv6.
fn socket_addr_of(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in; sockaddr_storage is
            // large and aligned enough for every socket address type.
            let sin =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends the datagrams `picked` (indices into `datagrams`) with one `sendmmsg`; how many
/// went, counted from the first. An error means the first could not be sent.
fn try_send_batch(
    socket: &UdpSocket,
    datagrams: &[Transmit],
    picked: &[usize],
) -> io::Result<usize> {
    let count = picked.len().min(BATCH);
    // Only the `count` entries the kernel reads are written: building all BATCH addresses
    // and zeroing all BATCH headers cost several kilobytes of memset per call, most of it
    // for a batch of one or two datagrams.
    let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; BATCH];
    let mut iovecs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
    let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
    for (i, &j) in picked.iter().take(count).enumerate() {
        let data = &datagrams[j].data;
        let name = names[i].write(SockAddr::from(datagrams[j].to));
        let (name_ptr, name_len) = (name.as_ptr(), name.len());
        // The kernel only reads through these pointers (sendmmsg).
        let iovec = iovecs[i].write(libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        });
        // SAFETY: all-zero bytes are a valid value of this plain C struct.
        let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        header.msg_hdr.msg_name = name_ptr.cast_mut().cast();
        header.msg_hdr.msg_namelen = name_len;
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
        headers[i].write(header);
    }
    // SAFETY: the first `count` headers are initialized (the loop above wrote one for each
    // picked datagram) and point at datagrams and addresses that live until the call
    // returns; sendmmsg reads only those `count` and writes only each one's msg_len.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr().cast::<libc::mmsghdr>(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Sends `picked` of `datagrams` on `socket`, waiting while its buffer is full; failed
/// datagrams are logged and skipped.
async fn send_picked(socket: &UdpSocket, datagrams: &[Transmit], picked: &[usize]) {
    let mut done = 0;
    while done < picked.len() {
        let rest = &picked[done..];
        let result = loop {
            if let Err(e) = socket.writable().await {
                break Err(e);
            }
            match socket.try_io(Interest::WRITABLE, || {
                try_send_batch(socket, datagrams, rest)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => done += 1,
            Ok(sent) => done += sent,
            Err(e) => {
                tracing::debug!(to = %datagrams[rest[0]].to, "UDP send failed: {e}");
                done += 1;
            }
        }
    }
}

/// An IPv4-mapped IPv6 source is reported as plain IPv4, so one peer has one path.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl Transport for UdpTransport {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        {
            loop {
                // Waiting for readiness and then reading without waiting keeps this
                // cancel-safe: nothing is consumed until a datagram is returned.
                let result = match &self.v6 {
                    Some(v6) => tokio::select! {
                        ready = self.v4.readable() => ready.and_then(|()| try_recv(&self.v4, buf)),
                        ready = v6.readable() => ready.and_then(|()| try_recv(v6, buf)),
                    },
                    None => self
                        .v4
                        .readable()
                        .await
                        .and_then(|()| try_recv(&self.v4, buf)),
                };
                match result {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        }
    }

    async fn send(&mut self, to: SocketAddr, data: &[u8], ttl: Option<u8>) -> io::Result<()> {
        {
            match to {
                SocketAddr::V4(_) => match ttl {
                    Some(ttl) => {
                        // Only this datagram gets the short TTL (the NAT-opening junk):
                        // the task that owns the node is the only sender, so nothing else
                        // can go out between the two set_ttl calls.
                        let previous = self.v4.ttl()?;
                        self.v4.set_ttl(u32::from(ttl))?;
                        let sent = self.v4.send_to(data, to).await;
                        self.v4.set_ttl(previous)?;
                        sent.map(drop)
                    }
                    None => self.v4.send_to(data, to).await.map(drop),
                },
                // ZeroTier One sets no hop limit for IPv6 either.
                SocketAddr::V6(_) => match &self.v6 {
                    Some(v6) => v6.send_to(data, to).await.map(drop),
                    None => Err(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "no IPv6 socket on this host",
                    )),
                },
            }
        }
    }

    async fn recv_batch(&mut self, batch: &mut RecvBatch) -> io::Result<()> {
        loop {
            // As in `recv`: readiness first, then a receive that does not wait.
            let result = match &self.v6 {
                Some(v6) => tokio::select! {
                    ready = self.v4.readable() => ready.and_then(|()| {
                        self.v4.try_io(Interest::READABLE, || try_recv_batch(&self.v4, batch))
                    }),
                    ready = v6.readable() => ready.and_then(|()| {
                        v6.try_io(Interest::READABLE, || try_recv_batch(v6, batch))
                    }),
                },
                None => self.v4.readable().await.and_then(|()| {
                    self.v4
                        .try_io(Interest::READABLE, || try_recv_batch(&self.v4, batch))
                }),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    async fn send_batch(&mut self, datagrams: &[Transmit]) {
        for chunk_start in (0..datagrams.len()).step_by(BATCH) {
            let chunk_end = (chunk_start + BATCH).min(datagrams.len());
            // Per socket family, the indices of this chunk's datagrams; a datagram with its
            // own TTL goes alone (`send` sets and restores the TTL around it).
            let mut v4 = [0usize; BATCH];
            let mut v6 = [0usize; BATCH];
            let (mut n4, mut n6) = (0, 0);
            for (i, transmit) in datagrams
                .iter()
                .enumerate()
                .take(chunk_end)
                .skip(chunk_start)
            {
                if transmit.ttl.is_some() {
                    if let Err(e) = self.send(transmit.to, &transmit.data, transmit.ttl).await {
                        tracing::debug!(to = %transmit.to, "UDP send failed: {e}");
                    }
                } else if transmit.to.is_ipv4() {
                    v4[n4] = i;
                    n4 += 1;
                } else {
                    v6[n6] = i;
                    n6 += 1;
                }
            }
            send_picked(&self.v4, datagrams, &v4[..n4]).await;
            if n6 > 0 {
                match &self.v6 {
                    Some(v6_socket) => send_picked(v6_socket, datagrams, &v6[..n6]).await,
                    None => tracing::debug!("{n6} datagrams for IPv6 dropped: no IPv6 socket"),
                }
            }
        }
    }

    fn local_addrs(&self) -> Vec<SocketAddr> {
        [Some(&self.v4), self.v6.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    fn local_socket_id(&self, remote: SocketAddr) -> i64 {
        if remote.is_ipv4() {
            1
        } else {
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_both_families_and_moves_datagrams() {
        let mut a = UdpTransport::bind(0).expect("bind a");
        let mut b = UdpTransport::bind(0).expect("bind b");
        let b_port = b.port().expect("port");
        let a_port = a.port().expect("port");
        assert!(a.local_addrs().iter().all(|addr| addr.port() == a_port));

        a.send(
            SocketAddr::from((Ipv4Addr::LOCALHOST, b_port)),
            b"hello",
            None,
        )
        .await
        .expect("send");
        let mut buf = [0u8; 64];
        let (len, from) = b.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..len], b"hello");
        assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, a_port)));

        // A short-TTL datagram still arrives on loopback and the TTL is restored after.
        let before = a.v4.ttl().expect("ttl");
        a.send(
            SocketAddr::from((Ipv4Addr::LOCALHOST, b_port)),
            b"junk",
            Some(2),
        )
        .await
        .expect("send");
        assert_eq!(a.v4.ttl().expect("ttl"), before);
        let (len, _) = b.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..len], b"junk");

        if a.v6.is_some() && b.v6.is_some() {
            let to = SocketAddr::from((Ipv6Addr::LOCALHOST, b_port));
            if a.send(to, b"six", None).await.is_ok() {
                let (len, from) = b.recv(&mut buf).await.expect("recv");
                assert_eq!(&buf[..len], b"six");
                assert!(from.is_ipv6());
            }
        }
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:9993".parse().unwrap();
        assert_eq!(
            unmap(mapped),
            "10.1.2.3:9993".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[fd00::1]:9993".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }
}
