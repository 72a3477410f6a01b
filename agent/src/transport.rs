//! The node's UDP sockets: one IPv4 socket on `0.0.0.0:<port>` and, where the host has IPv6,
//! one IPv6-only socket on `[::]:<port>` (ZeroTier One binds the same way).
//!
//! The driver sees them through [`Transport`], so tests can drive it over other transports.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 1 << 20;

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
