//! The Linux tap device behind one ZeroTier virtual network.
//!
//! A [`Tap`] is created through `/dev/net/tun` with `IFF_TAP | IFF_NO_PI`, so every read
//! yields one bare Ethernet frame and every write injects one. The device is normally not
//! persistent: the open file descriptor owns it, and dropping the [`Tap`] closes the
//! descriptor, which makes the kernel remove the interface. A container endpoint that its
//! runtime moves (Docker) has a persistent one instead ([`Tap::create_persistent`]), which
//! stays in the container while the agent restarts and is taken over afterwards.
//!
//! Taps are opened with `IFF_VNET_HDR` and TCP segmentation and checksum offloads
//! (`TUNSETOFFLOAD`) where the kernel allows: reads may then be TCP super-frames of up to
//! 64 KiB, which [`crate::offload`] cuts into MTU-sized frames before they reach the node,
//! and writes go through a [`Coalescer`] that merges a batch's in-order TCP segments into
//! one. Without offloads (the kernel refused, or `ZT_TAP_OFFLOADS=off`) every read and
//! write is one plain frame.
//!
//! The device's name follows ZeroTier One's Linux rule ([`interface_name`]), so tools and
//! scripts written for ZeroTier One find the same `zt...` interface.

// Creating a tap and setting its MAC, MTU and flags has no safe wrapper in std, tokio or
// socket2: it takes the TUNSETIFF/TUNSETPERSIST ioctls on the tun descriptor and the
// SIOCSIF*/SIOCGIFFLAGS ioctls on a socket. Those few `libc::ioctl` calls and tokio's
// `AsyncFd::register` (unsafe because it trusts the descriptor to stay open), each in its
// own block below with a SAFETY note, are the only unsafe code in this module; reads and
// writes go through `std::fs::File`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, MutexGuard};

use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::offload::{Coalescer, VnetHeader};

/// Longest interface name Linux accepts, without the terminating NUL (`IFNAMSIZ - 1`).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// How many names [`free_interface_name`] tries before giving up; ZeroTier One keeps
/// counting, but more than a handful of collisions means something else is wrong.
const MAX_NAME_TRIALS: u64 = 256;

/// The base32 alphabet ZeroTier One uses for interface names (RFC 4648, lower case).
const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The Linux interface name ZeroTier One 1.14 gives the tap of network `nwid` when no
/// earlier device map entry and no name collision intervene: `zt` followed by the base32
/// encoding of 40 bits folded out of the network ID.
pub fn interface_name(nwid: u64) -> String {
    interface_name_for_trial(nwid, 0)
}

/// The name ZeroTier One tries for network `nwid` after `trial` collisions with existing
/// interfaces: the folded 40-bit value is incremented once per collision.
pub fn interface_name_for_trial(nwid: u64, trial: u64) -> String {
    // Fold the 64-bit ID so both the controller part (high 40 bits) and the network number
    // (low 24 bits) influence the name, then keep the low 40 bits: exactly 8 base32 digits.
    let folded = (nwid ^ (nwid >> 24)).wrapping_add(trial) & 0xff_ffff_ffff;
    let mut name = String::with_capacity(10);
    name.push_str("zt");
    for digit in (0..8).rev() {
        let index = ((folded >> (digit * 5)) & 0x1f) as usize;
        name.push(char::from(BASE32_ALPHABET[index]));
    }
    name
}

/// The first of ZeroTier One's candidate names for `nwid` that no interface in the calling
/// thread's network namespace uses yet (checked, as ZeroTier One does, through
/// `/proc/sys/net/ipv4/conf/<name>`).
pub fn free_interface_name(nwid: u64) -> io::Result<String> {
    for trial in 0..MAX_NAME_TRIALS {
        let name = interface_name_for_trial(nwid, trial);
        let taken = std::path::Path::new("/proc/sys/net/ipv4/conf")
            .join(&name)
            .exists();
        if !taken {
            return Ok(name);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("all {MAX_NAME_TRIALS} interface names for network {nwid:016x} are taken"),
    ))
}

/// A tap device for one virtual network, readable and writable from tokio.
#[derive(Debug)]
pub struct Tap {
    device: AsyncFd<File>,
    /// An unbound datagram socket created in the tap's network namespace: interface ioctls
    /// (MTU, flags) act on the namespace of the socket they are issued on, so keeping this one
    /// lets [`Tap::set_mtu`] work from any thread, even when the tap was created by a thread
    /// that had entered another namespace.
    control: Socket,
    name: String,
    mac: [u8; 6],
    /// Whether reads and writes carry a `virtio_net_hdr` (`IFF_VNET_HDR`).
    vnet_header: bool,
    /// Frames written between two [`Tap::flush`]es, merged where they can be.
    coalescer: Mutex<Coalescer>,
}

impl Tap {
    /// Creates (or, if a persistent tap of that name is left over, takes over) the tap `name`
    /// in the calling thread's network namespace, gives it `mac` and `mtu`, and brings it up.
    /// The device goes away with the descriptor.
    ///
    /// Must be called within a tokio runtime with IO enabled.
    pub fn create(name: &str, mac: [u8; 6], mtu: u32) -> io::Result<Self> {
        Self::create_with(name, mac, mtu, false)
    }

    /// As [`Tap::create`], but the device is persistent (`TUNSETPERSIST`): it outlives the
    /// descriptor, so that an interface a runtime moved into a container stays there when
    /// the agent exits, to be taken over again ([`Tap::take_over`]). Call
    /// [`Tap::set_persistent`]`(false)` before dropping it to have it removed.
    pub fn create_persistent(name: &str, mac: [u8; 6], mtu: u32) -> io::Result<Self> {
        Self::create_with(name, mac, mtu, true)
    }

    fn create_with(name: &str, mac: [u8; 6], mtu: u32, persistent: bool) -> io::Result<Self> {
        let name_bytes = checked_interface_name(name)?;
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|error| annotate(error, "opening /dev/net/tun"))?;
        let vnet_header = attach_device(&device, name_bytes)?;
        // A non-persistent device disappears with its last descriptor; clear the flag in case
        // the name belonged to a persistent tap left behind by someone else.
        set_device_persistent(&device, persistent)?;

        let control = Socket::new(Domain::IPV4, Type::DGRAM, None)
            .map_err(|error| annotate(error, "creating the interface control socket"))?;
        let tap = Self::register(device, control, name, mac, vnet_header)?;
        tap.set_mac(mac)?;
        tap.set_mtu(mtu)?;
        tap.bring_up()?;
        Ok(tap)
    }

    /// Takes over the existing persistent tap `name` of the namespace `device` and `control`
    /// were opened in (`/dev/net/tun` binds a descriptor to the opener's namespace, so a tap
    /// in a container is reached by opening both from a thread inside it). Nothing about the
    /// interface is changed: whoever moved it has set its name, addresses and state; `mac`
    /// is what it is known to have. It stays persistent.
    ///
    /// Must be called within a tokio runtime with IO enabled.
    pub fn take_over(device: File, control: Socket, name: &str, mac: [u8; 6]) -> io::Result<Self> {
        let name_bytes = checked_interface_name(name)?;
        let vnet_header = attach_device(&device, name_bytes)?;
        Self::register(device, control, name, mac, vnet_header)
    }

    /// Sets or clears `TUNSETPERSIST`: a device that is not persistent is removed when its
    /// descriptor is closed, wherever it is.
    pub fn set_persistent(&self, persistent: bool) -> io::Result<()> {
        set_device_persistent(self.device.get_ref(), persistent)
    }

    fn register(
        device: File,
        control: Socket,
        name: &str,
        mac: [u8; 6],
        vnet_header: bool,
    ) -> io::Result<Self> {
        // Writes never wait (a full device drops the frame), so only readability matters.
        // SAFETY: the `File` owns its descriptor, keeps it open until it is dropped with the
        // `AsyncFd`, and always reports that same descriptor from `as_raw_fd`.
        let device = unsafe { AsyncFd::register_with_interest(device, Interest::READABLE) }?;
        Ok(Self {
            device,
            control,
            name: name.to_owned(),
            mac,
            vnet_header,
            coalescer: Mutex::new(Coalescer::default()),
        })
    }

    /// Whether every read starts with a `virtio_net_hdr` (see [`crate::offload::split_read`])
    /// and may be a TCP super-frame.
    pub fn has_vnet_header(&self) -> bool {
        self.vnet_header
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC address the interface was given.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Waits for and reads one Ethernet frame (destination MAC first, no packet-info
    /// prefix; with [`Tap::has_vnet_header`], after the 10-byte header). `buf` should hold
    /// at least MTU + 14 bytes (with offloads, [`crate::offload::MAX_OFFLOAD_FRAME`] and
    /// the header); the kernel truncates larger frames to fit.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.device.readable().await?;
            match ready.try_io(|device| device.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads one Ethernet frame if one is waiting, without waiting (`WouldBlock` if none):
    /// after [`Tap::recv`], drains what else queued up in the same wake-up.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // A `WouldBlock` here leaves tokio's readiness set; the next `recv` finds it stale,
        // reads `WouldBlock` through `try_io` and clears it.
        self.device.get_ref().read(buf)
    }

    /// Injects one Ethernet frame into the host's stack as if it had arrived on the wire.
    /// If the device cannot take it right now the frame is dropped, as a switch would, and
    /// this still returns `Ok`.
    ///
    /// With offloads a TCP segment may be held back to be merged with the next ones: call
    /// [`Tap::flush`] once a batch of frames has been sent.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if !self.vnet_header {
            return dropped_when_full(self.device.get_ref().write(frame));
        }
        let mut result = Ok(());
        self.coalescer().push(frame, &mut |header, frame| {
            let written = self.write_with_header(header, frame);
            if result.is_ok() {
                result = written;
            }
        });
        result
    }

    /// Writes whatever [`Tap::send`] held back.
    pub fn flush(&self) -> io::Result<()> {
        if !self.vnet_header {
            return Ok(());
        }
        let mut result = Ok(());
        self.coalescer().flush(&mut |header, frame| {
            result = self.write_with_header(header, frame);
        });
        result
    }

    fn coalescer(&self) -> MutexGuard<'_, Coalescer> {
        // Nothing can leave the coalescer inconsistent mid-way: a panic elsewhere while it
        // was held does not make it unusable.
        self.coalescer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_with_header(&self, header: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        let header = header.emit();
        let parts = [IoSlice::new(&header), IoSlice::new(frame)];
        dropped_when_full(self.device.get_ref().write_vectored(&parts))
    }

    /// Sets the interface MTU (the Ethernet payload size, without the 14-byte header).
    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        let mtu = libc::c_int::try_from(mtu).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("MTU {mtu} is out of range"),
            )
        })?;
        let mut request = InterfaceRequest::for_interface(&self.name)?;
        request.set_mtu(mtu);
        // SAFETY: `control` is an open socket and `request` a live, fully initialised buffer
        // at least as large as `struct ifreq`; SIOCSIFMTU only reads the name and MTU.
        let result = unsafe {
            libc::ioctl(
                self.control.as_raw_fd(),
                libc::SIOCSIFMTU as libc::Ioctl,
                request.as_mut_ptr(),
            )
        };
        check(result, "SIOCSIFMTU")
    }

    fn set_mac(&self, mac: [u8; 6]) -> io::Result<()> {
        let mut request = InterfaceRequest::for_interface(&self.name)?;
        request.set_hardware_address(mac);
        // SAFETY: as in `set_mtu`; SIOCSIFHWADDR only reads the name and the sockaddr.
        let result = unsafe {
            libc::ioctl(
                self.control.as_raw_fd(),
                libc::SIOCSIFHWADDR as libc::Ioctl,
                request.as_mut_ptr(),
            )
        };
        check(result, "SIOCSIFHWADDR")
    }

    fn bring_up(&self) -> io::Result<()> {
        let mut request = InterfaceRequest::for_interface(&self.name)?;
        // SAFETY: as in `set_mtu`; SIOCGIFFLAGS writes the 16-bit flags into the request.
        let result = unsafe {
            libc::ioctl(
                self.control.as_raw_fd(),
                libc::SIOCGIFFLAGS as libc::Ioctl,
                request.as_mut_ptr(),
            )
        };
        check(result, "SIOCGIFFLAGS")?;
        // IFF_UP and IFF_MULTICAST are 0x1 and 0x1000: both fit the 16-bit flags field.
        request.set_flags(request.flags() | (libc::IFF_UP | libc::IFF_MULTICAST) as libc::c_short);
        // SAFETY: as in `set_mtu`; SIOCSIFFLAGS only reads the name and flags.
        let result = unsafe {
            libc::ioctl(
                self.control.as_raw_fd(),
                libc::SIOCSIFFLAGS as libc::Ioctl,
                request.as_mut_ptr(),
            )
        };
        check(result, "SIOCSIFFLAGS")
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.device.get_ref().as_raw_fd()
    }
}

/// Our own `struct ifreq`: the name, then the union as plain bytes that are always
/// initialised, so filling it in needs no unsafe code. It is at least as large as the C
/// struct on every Linux target (checked below) and aligned like it, so the kernel never
/// reads or writes past it.
#[repr(C, align(8))]
struct InterfaceRequest {
    name: [u8; libc::IFNAMSIZ],
    union: [u8; 24],
}

const _: () = assert!(size_of::<InterfaceRequest>() >= size_of::<libc::ifreq>());

impl InterfaceRequest {
    fn new(name: [u8; libc::IFNAMSIZ]) -> Self {
        Self {
            name,
            union: [0; 24],
        }
    }

    fn for_interface(name: &str) -> io::Result<Self> {
        Ok(Self::new(checked_interface_name(name)?))
    }

    fn as_mut_ptr(&mut self) -> *mut Self {
        self
    }

    /// `ifr_flags`: a native-endian `short` at the start of the union.
    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.union[0], self.union[1]])
    }

    fn set_flags(&mut self, flags: libc::c_short) {
        self.union[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    /// `ifr_mtu`: a native-endian `int` at the start of the union.
    fn set_mtu(&mut self, mtu: libc::c_int) {
        self.union[..4].copy_from_slice(&mtu.to_ne_bytes());
    }

    /// `ifr_hwaddr`: a `struct sockaddr` whose family is ARPHRD_ETHER and whose data
    /// starts with the six MAC bytes.
    fn set_hardware_address(&mut self, mac: [u8; 6]) {
        self.union[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
        self.union[2..8].copy_from_slice(&mac);
    }
}

/// `name` as the NUL-padded buffer the kernel expects, if Linux would accept it.
fn checked_interface_name(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let acceptable = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|byte| byte == b'/' || byte == 0 || byte.is_ascii_whitespace());
    if !acceptable {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid Linux interface name"),
        ));
    }
    let mut buffer = [0u8; libc::IFNAMSIZ];
    buffer[..name.len()].copy_from_slice(name.as_bytes());
    Ok(buffer)
}

fn check(result: libc::c_int, operation: &str) -> io::Result<()> {
    if result < 0 {
        Err(annotate(io::Error::last_os_error(), operation))
    } else {
        Ok(())
    }
}

/// A write the device had no room for is a dropped frame, not an error.
fn dropped_when_full(written: io::Result<usize>) -> io::Result<()> {
    match written {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether taps get offloads: on unless `ZT_TAP_OFFLOADS` is `off` (or `0`), which keeps
/// plain frames for comparison and for kernels where offloads misbehave.
fn offloads_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| !matches!(std::env::var("ZT_TAP_OFFLOADS").as_deref(), Ok("off" | "0")))
}

/// The offloads asked of the kernel: checksums left partial, TCP segmentation for IPv4 and
/// IPv6 (with ECN). UDP segmentation is not asked: those frames would need splitting too.
const TAP_OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// `TUNSETIFF`: binds the tun descriptor `device` to the tap `name` (made if missing) of the
/// namespace the descriptor was opened in, without a packet-info prefix; with a
/// `virtio_net_hdr` and offloads where the kernel allows. Returns whether the header is on.
fn attach_device(device: &File, name: [u8; libc::IFNAMSIZ]) -> io::Result<bool> {
    // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR fit in the 16-bit flags field (0x0002 | 0x1000 |
    // 0x4000).
    let plain = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    if offloads_wanted() {
        let with_header = plain | libc::IFF_VNET_HDR as libc::c_short;
        match set_interface_flags(device, name, with_header) {
            Ok(()) => {
                // Without offloads the header still works (always plain frames), and the
                // writes can still carry merged segments.
                if let Err(error) = set_offloads(device, TAP_OFFLOADS) {
                    tracing::debug!("tap offloads refused, frames stay MTU-sized: {error}");
                }
                return Ok(true);
            }
            Err(error) => {
                tracing::debug!("tap without a virtio-net header: {error}");
            }
        }
    }
    set_interface_flags(device, name, plain)?;
    // A persistent tap keeps the offloads an earlier descriptor enabled; without the header
    // they would hand us super-frames we cannot tell apart.
    if let Err(error) = set_offloads(device, 0) {
        tracing::debug!("cannot clear the tap's offloads: {error}");
    }
    Ok(false)
}

/// `TUNSETOFFLOAD` with the `TUN_F_*` bits in `offloads`.
fn set_offloads(device: &File, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (the offload bits) and touches no
    // memory of ours.
    let result = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(offloads),
        )
    };
    check(result, "TUNSETOFFLOAD")
}

fn set_interface_flags(
    device: &File,
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
) -> io::Result<()> {
    let mut request = InterfaceRequest::new(name);
    request.set_flags(flags);
    // SAFETY: `device` is an open tun descriptor and `request` is a live, fully initialised
    // buffer at least as large as `struct ifreq`; TUNSETIFF reads the name and flags and
    // writes the chosen name back into it, nothing else.
    let result = unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETIFF, request.as_mut_ptr()) };
    check(result, "TUNSETIFF")
}

/// `TUNSETPERSIST` on a descriptor bound to a tap.
fn set_device_persistent(device: &File, persistent: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value (an integer, 0 = off) and touches no
    // memory of ours.
    let result = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            libc::TUNSETPERSIST,
            libc::c_ulong::from(persistent),
        )
    };
    check(result, "TUNSETPERSIST")
}

/// Keeps the error kind (callers match on it) and says which step failed.
fn annotate(error: io::Error, operation: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{operation}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_zerotier_one() {
        // 0x8056c2e21c123456 ^ (… >> 24) = 0x8056c242b4d2d4b7; its low 40 bits, 0x42b4d2d4b7,
        // in base32 (a–z, 2–7) are "mjfnbvsk".
        assert_eq!(interface_name(0x8056_c2e2_1c12_3456), "ztmjfnbvsk");
        assert_eq!(
            interface_name_for_trial(0x8056_c2e2_1c12_3456, 1),
            "ztmjfnbvsl"
        );
        assert_eq!(interface_name(0x0123_4567_89ab_cdef), "ztm2vo5ktg");
        // The fold cancels every bit of an all-ones ID, and the increment wraps at 40 bits.
        assert_eq!(interface_name(u64::MAX), "ztaaaaaaaa");
        assert_eq!(interface_name_for_trial(u64::MAX, 1), "ztaaaaaaab");
        assert_eq!(interface_name_for_trial(0, 0xff_ffff_ffff), "zt77777777");
        assert_eq!(interface_name_for_trial(0, 0x100_0000_0000), "ztaaaaaaaa");
    }

    #[test]
    fn names_fit_linux() {
        for nwid in [0, 1, u64::MAX, 0x8056_c2e2_1c12_3456] {
            let name = interface_name(nwid);
            assert_eq!(name.len(), 10);
            assert!(checked_interface_name(&name).is_ok());
        }
    }

    #[test]
    fn rejects_names_linux_would_not_take() {
        for name in ["", "sixteen-chars-xx", "a/b", "a b", ".", ".."] {
            assert!(checked_interface_name(name).is_err(), "{name:?}");
        }
        assert!(checked_interface_name("fifteen-chars-x").is_ok());
    }

    #[test]
    fn request_fields_land_where_the_kernel_reads_them() {
        let mut request = InterfaceRequest::for_interface("zt0").unwrap();
        assert_eq!(&request.name[..4], b"zt0\0");
        request.set_hardware_address([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(&request.union[2..8], &[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(u16::from_ne_bytes([request.union[0], request.union[1]]), 1);
        request.set_flags(0x1003);
        assert_eq!(request.flags(), 0x1003);
    }
}
