//! Container namespace plumbing: moving an endpoint's interface into a container's network
//! namespace, renaming it, giving it its MAC, MTU, addresses and routes, and removing it.
//!
//! `setns(2)` changes the namespace of the calling *thread* only. Doing it on a tokio worker
//! thread would leave every task later scheduled there in the container's namespace, so all
//! of this runs on one dedicated OS thread owned by a [`NetnsWorker`]. Callers send it jobs
//! over a channel and await the reply; the thread runs them one at a time on a small
//! current-thread runtime of its own.
//!
//! A netlink socket belongs to the namespace it was created in, whatever the creating thread
//! does later. So for each job the thread enters the target namespace only long enough to open
//! its netlink socket, then returns to its own namespace (the agent's) before sending any
//! request. The thread is therefore never found in a container's namespace between jobs.
//!
//! Interfaces are moved out of the namespace the worker was started in: the agent creates
//! taps ([`crate::tap::Tap`]) in its own namespace and keeps their descriptors, which go on
//! carrying frames wherever the interface is moved.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::netconf::{ManagedRoute, PrefixedAddr};

/// `ENODEV`: the kernel's answer when a named or indexed interface does not exist.
const ERRNO_NO_SUCH_DEVICE: i32 = 19;
/// `EEXIST`: an address or route that is already there.
const ERRNO_EXISTS: i32 = 17;
/// `ESRCH`: a route to delete that is not there (any more).
const ERRNO_NO_SUCH_ROUTE: i32 = 3;
/// `EADDRNOTAVAIL`: an address to delete that is not there (any more).
const ERRNO_NO_SUCH_ADDRESS: i32 = 99;
/// The thread's own network namespace, as seen from that thread.
const OWN_NETNS_PATH: &str = "/proc/thread-self/ns/net";

/// A network namespace to work in.
#[derive(Clone, Debug)]
pub enum NetnsRef {
    /// A file that stands for the namespace: a bind mount such as `/var/run/netns/NAME`, or
    /// `/proc/PID/ns/net` of a process inside it. Opened anew for each job, so a deleted
    /// namespace or an exited process is noticed.
    Path(PathBuf),
    /// An open descriptor of the namespace (which keeps the namespace alive while held).
    Fd(Arc<OwnedFd>),
}

impl NetnsRef {
    /// The namespace bound at `path`.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// The namespace `ip netns add NAME` created (`/var/run/netns/NAME`).
    pub fn named(name: &str) -> Self {
        Self::Path(PathBuf::from("/var/run/netns").join(name))
    }

    /// The namespace the process `pid` is in (`/proc/PID/ns/net`).
    pub fn of_process(pid: u32) -> Self {
        Self::Path(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// The namespace `fd` refers to.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self::Fd(Arc::new(fd))
    }

    /// Opens the namespace, or says it is gone (`Ok(None)`).
    fn open(&self) -> Result<Option<OpenNetns<'_>>, PlumbingError> {
        match self {
            Self::Path(path) => match File::open(path) {
                Ok(file) => Ok(Some(OpenNetns::File(file))),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(PlumbingError::OpenNamespace {
                    netns: self.to_string(),
                    source,
                }),
            },
            Self::Fd(fd) => Ok(Some(OpenNetns::Borrowed(fd.as_fd()))),
        }
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Fd(fd) => write!(f, "fd {}", fd.as_raw_fd()),
        }
    }
}

/// A namespace opened for one job.
enum OpenNetns<'a> {
    File(File),
    Borrowed(BorrowedFd<'a>),
}

impl AsFd for OpenNetns<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::File(file) => file.as_fd(),
            Self::Borrowed(fd) => fd.as_fd(),
        }
    }
}

/// What an endpoint's interface should look like inside its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSpec {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// The MTU (Ethernet payload bytes).
    pub mtu: u32,
    /// Addresses with their prefix lengths. IPv6 ones are added without duplicate address
    /// detection, so they are usable at once.
    pub addresses: Vec<PrefixedAddr>,
    /// Routes out of the interface, through a gateway or on-link. Host bits in a target are
    /// ignored.
    pub routes: Vec<ManagedRoute>,
    /// A default route (`0.0.0.0/0` or `::/0`, by the gateway's family) through this gateway.
    /// A default route already present in the namespace is left as it is.
    pub default_route_via: Option<IpAddr>,
    /// Whether the interface is brought up (or, if false, down). Routes through a gateway
    /// need it up.
    pub up: bool,
}

/// A plumbing job that failed.
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// The request was unusable; nothing was changed.
    #[error("invalid plumbing request: {0}")]
    InvalidInput(String),
    /// The namespace no longer exists (its bind mount was removed, its process exited).
    #[error("network namespace {netns} does not exist")]
    NamespaceGone { netns: String },
    /// The namespace's file could not be opened for another reason.
    #[error("cannot open network namespace {netns}: {source}")]
    OpenNamespace {
        netns: String,
        #[source]
        source: io::Error,
    },
    /// `setns` into the namespace failed (not a network namespace, no permission).
    #[error("cannot enter network namespace {netns}: {source}")]
    EnterNamespace {
        netns: String,
        #[source]
        source: io::Error,
    },
    /// No netlink socket could be opened in the namespace.
    #[error("cannot open a netlink socket in network namespace {netns}: {source}")]
    Connect {
        netns: String,
        #[source]
        source: io::Error,
    },
    /// The interface is not in the namespace.
    #[error("no interface {ifname} in network namespace {netns}")]
    NoSuchLink { ifname: String, netns: String },
    /// The interface name asked for is already taken in the namespace.
    #[error("an interface named {ifname} already exists in network namespace {netns}")]
    NameTaken { ifname: String, netns: String },
    /// The kernel refused a netlink request.
    #[error("{operation} on interface {ifname} in network namespace {netns} failed: {source}")]
    Netlink {
        operation: String,
        ifname: String,
        netns: String,
        #[source]
        source: io::Error,
    },
    /// The worker thread could not return to its own namespace after entering another one;
    /// it stopped rather than do later jobs from the wrong place.
    #[error("the plumbing thread could not leave network namespace {netns}: {source}")]
    ReturnToOwnNamespace {
        netns: String,
        #[source]
        source: io::Error,
    },
    /// The worker thread has stopped.
    #[error("the network namespace plumbing thread has stopped")]
    WorkerGone,
}

/// The owner of the plumbing thread. Cloning shares the thread; it ends once every clone is
/// dropped and its last job is done.
#[derive(Clone, Debug)]
pub struct NetnsWorker {
    jobs: mpsc::UnboundedSender<Job>,
}

type Reply<T> = oneshot::Sender<Result<T, PlumbingError>>;

enum Job {
    MoveLink {
        ifname: String,
        netns: NetnsRef,
        new_name: String,
        reply: Reply<()>,
    },
    Configure {
        netns: NetnsRef,
        ifname: String,
        spec: LinkSpec,
        reply: Reply<()>,
    },
    DeleteLink {
        netns: NetnsRef,
        ifname: String,
        reply: Reply<bool>,
    },
    LinkExists {
        netns: NetnsRef,
        ifname: String,
        reply: Reply<bool>,
    },
    OpenTap {
        netns: NetnsRef,
        mac: [u8; 6],
        reply: Reply<Option<OpenedTap>>,
    },
}

/// A tap found in a namespace by its MAC, with what taking it over needs: a `/dev/net/tun`
/// descriptor and a control socket, both opened inside that namespace (see
/// [`crate::tap::Tap::take_over`]).
#[derive(Debug)]
pub struct OpenedTap {
    pub device: File,
    pub control: socket2::Socket,
    /// Its name there (the runtime may have renamed it).
    pub name: String,
}

impl NetnsWorker {
    /// Starts the plumbing thread. Its own namespace, from which [`NetnsWorker::move_link`]
    /// takes interfaces, is the calling thread's.
    pub fn start() -> io::Result<Self> {
        let own_netns = File::open(OWN_NETNS_PATH).map_err(|error| {
            io::Error::new(error.kind(), format!("opening {OWN_NETNS_PATH}: {error}"))
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let (jobs, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("zt-netns".to_owned())
            .spawn(move || {
                // A thread starts in its creator's namespace, but say so explicitly: the
                // thread that called `start` may have entered another one in between.
                if let Err(error) = setns(&own_netns, CloneFlags::CLONE_NEWNET) {
                    tracing::error!("plumbing thread cannot enter its namespace: {error}");
                    return;
                }
                let worker = Thread { own_netns };
                runtime.block_on(worker.run(queue));
            })?;
        Ok(Self { jobs })
    }

    /// Moves the interface `ifname` from the worker's own namespace into `netns` and renames
    /// it `new_name` there. The interface arrives down. Fails with
    /// [`PlumbingError::NameTaken`] (before moving anything) if `netns` already has an
    /// interface called `new_name`.
    pub async fn move_link(
        &self,
        ifname: &str,
        netns: NetnsRef,
        new_name: &str,
    ) -> Result<(), PlumbingError> {
        check_interface_name(ifname)?;
        check_interface_name(new_name)?;
        self.call(|reply| Job::MoveLink {
            ifname: ifname.to_owned(),
            netns,
            new_name: new_name.to_owned(),
            reply,
        })
        .await
    }

    /// Makes the interface `ifname` in `netns` what `spec` says: its MAC and MTU, up or down,
    /// and exactly the spec's addresses and routes. Addresses and routes already present
    /// count as done, so applying the same spec again is harmless. What an earlier spec had
    /// and this one lacks is removed:
    ///
    /// - addresses on the interface that are not in the spec, except IPv6 link-local ones
    ///   and those the kernel made by itself (SLAAC, privacy addresses: not permanent);
    /// - routes out of the interface in the main table that this worker could have added
    ///   (unicast, protocol static or boot, scope universe or link, through a gateway or
    ///   on-link) and that are neither among the spec's routes nor its default route.
    ///
    /// The kernel's own routes (protocol kernel, such as an address's subnet) and routes of
    /// other protocols (router advertisements, DHCP, routing daemons) are left alone, as is
    /// everything on other interfaces.
    pub async fn configure(
        &self,
        netns: NetnsRef,
        ifname: &str,
        spec: LinkSpec,
    ) -> Result<(), PlumbingError> {
        check_interface_name(ifname)?;
        check_spec(&spec)?;
        self.call(|reply| Job::Configure {
            netns,
            ifname: ifname.to_owned(),
            spec,
            reply,
        })
        .await
    }

    /// Deletes the interface `ifname` in `netns`. `Ok(false)` if there was nothing to delete:
    /// no such interface, or no such namespace any more (deleting a namespace deletes its
    /// interfaces, and a tap's device with them).
    pub async fn delete_link(&self, netns: NetnsRef, ifname: &str) -> Result<bool, PlumbingError> {
        check_interface_name(ifname)?;
        self.call(|reply| Job::DeleteLink {
            netns,
            ifname: ifname.to_owned(),
            reply,
        })
        .await
    }

    /// Whether `netns` has an interface named `ifname`; `Ok(false)` if the namespace itself
    /// is gone.
    pub async fn link_exists(&self, netns: NetnsRef, ifname: &str) -> Result<bool, PlumbingError> {
        check_interface_name(ifname)?;
        self.call(|reply| Job::LinkExists {
            netns,
            ifname: ifname.to_owned(),
            reply,
        })
        .await
    }

    /// Finds the interface whose MAC is `mac` in `netns` and opens what taking it over as a
    /// tap needs. `Ok(None)` when there is no such interface or the namespace is gone.
    pub async fn open_tap(
        &self,
        netns: NetnsRef,
        mac: [u8; 6],
    ) -> Result<Option<OpenedTap>, PlumbingError> {
        self.call(|reply| Job::OpenTap { netns, mac, reply }).await
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, PlumbingError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| PlumbingError::WorkerGone)?;
        answer.await.map_err(|_| PlumbingError::WorkerGone)?
    }
}

/// The state of the plumbing thread.
struct Thread {
    /// The namespace the thread returns to after opening a socket elsewhere.
    own_netns: File,
}

/// A netlink connection into one namespace, for one job.
struct Session {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    netns: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Thread {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let stop = match job {
                Job::MoveLink {
                    ifname,
                    netns,
                    new_name,
                    reply,
                } => answer(reply, self.move_link(&ifname, &netns, &new_name).await),
                Job::Configure {
                    netns,
                    ifname,
                    spec,
                    reply,
                } => answer(reply, self.configure(&netns, &ifname, &spec).await),
                Job::DeleteLink {
                    netns,
                    ifname,
                    reply,
                } => answer(reply, self.delete_link(&netns, &ifname).await),
                Job::LinkExists {
                    netns,
                    ifname,
                    reply,
                } => answer(reply, self.link_exists(&netns, &ifname).await),
                Job::OpenTap { netns, mac, reply } => {
                    answer(reply, self.open_tap(&netns, mac).await)
                }
            };
            if stop {
                tracing::error!("network namespace plumbing thread stopped");
                return;
            }
        }
    }

    /// A session in the thread's own namespace.
    fn own_session(&self) -> Result<Session, PlumbingError> {
        let netns = "of the agent".to_owned();
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| PlumbingError::Connect {
                netns: netns.clone(),
                source,
            })?;
        Ok(Session {
            handle,
            connection: tokio::spawn(connection),
            netns,
        })
    }

    /// A session in `netns`, or `None` if the namespace is gone.
    fn session_in(&self, netns: &NetnsRef) -> Result<Option<Session>, PlumbingError> {
        let Some(target) = netns.open()? else {
            return Ok(None);
        };
        let name = netns.to_string();
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|errno| {
            PlumbingError::EnterNamespace {
                netns: name.clone(),
                source: errno.into(),
            }
        })?;
        let connection = rtnetlink::new_connection();
        if let Err(errno) = setns(&self.own_netns, CloneFlags::CLONE_NEWNET) {
            return Err(PlumbingError::ReturnToOwnNamespace {
                netns: name,
                source: errno.into(),
            });
        }
        let (connection, handle, _) = connection.map_err(|source| PlumbingError::Connect {
            netns: name.clone(),
            source,
        })?;
        Ok(Some(Session {
            handle,
            connection: tokio::spawn(connection),
            netns: name,
        }))
    }

    async fn move_link(
        &self,
        ifname: &str,
        netns: &NetnsRef,
        new_name: &str,
    ) -> Result<(), PlumbingError> {
        let gone = || PlumbingError::NamespaceGone {
            netns: netns.to_string(),
        };
        let target = self.session_in(netns)?.ok_or_else(gone)?;
        if target.index_of(new_name).await?.is_some() {
            return Err(PlumbingError::NameTaken {
                ifname: new_name.to_owned(),
                netns: target.netns.clone(),
            });
        }
        let own = self.own_session()?;
        let index = own.existing_index_of(ifname).await?;
        let target_fd = netns.open()?.ok_or_else(gone)?;
        // One request moves and renames: the kernel renames after the move, so the new name
        // only has to be free in the target, and the interface is down then (a move takes it
        // down), as a rename requires.
        let message = LinkUnspec::new_with_index(index)
            .setns_by_fd(target_fd.as_fd().as_raw_fd())
            .name(new_name)
            .build();
        own.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|error| {
                own.failure(
                    format!("moving to network namespace {netns} as {new_name}"),
                    ifname,
                    error,
                )
            })
    }

    async fn configure(
        &self,
        netns: &NetnsRef,
        ifname: &str,
        spec: &LinkSpec,
    ) -> Result<(), PlumbingError> {
        let session = self
            .session_in(netns)?
            .ok_or_else(|| PlumbingError::NamespaceGone {
                netns: netns.to_string(),
            })?;
        let index = session.existing_index_of(ifname).await?;
        let link = session.handle.link();

        let mac_and_mtu = LinkUnspec::new_with_index(index)
            .address(spec.mac.to_vec())
            .mtu(spec.mtu)
            .build();
        link.set(mac_and_mtu)
            .execute()
            .await
            .map_err(|error| session.failure("setting MAC and MTU".to_owned(), ifname, error))?;
        let state = LinkUnspec::new_with_index(index);
        let state = if spec.up { state.up() } else { state.down() };
        link.set(state.build()).execute().await.map_err(|error| {
            let verb = if spec.up { "up" } else { "down" };
            session.failure(format!("bringing {verb}"), ifname, error)
        })?;

        let default_route = spec.default_route_via.map(|gateway| ManagedRoute {
            target: (unspecified_like(gateway), 0),
            via: Some(gateway),
        });
        let wanted_routes: HashSet<RouteKey> = spec
            .routes
            .iter()
            .chain(default_route.as_ref())
            .map(RouteKey::of)
            .collect();

        // Stale routes go first, so that none is in the way of a wanted one.
        for (key, route) in session.removable_routes(index, ifname).await? {
            if wanted_routes.contains(&key) {
                continue;
            }
            tolerate(
                session.handle.route().del(route).execute().await,
                ERRNO_NO_SUCH_ROUTE,
            )
            .map_err(|error| session.failure(format!("removing route {key}"), ifname, error))?;
        }

        // New addresses before removing stale ones where possible: when the last IPv4
        // address of an interface goes, the kernel drops every route through it. An address
        // whose prefix length changes is the exception, as the kernel would refuse it anew
        // while the old one is there.
        let (replaced, stale): (Vec<_>, Vec<_>) = session
            .removable_addresses(index, ifname)
            .await?
            .into_iter()
            .filter(|(address, prefix, _)| !spec.addresses.contains(&(*address, *prefix)))
            .partition(|(address, _, _)| spec.addresses.iter().any(|(a, _)| a == address));
        for (address, prefix, message) in replaced {
            session
                .delete_address(ifname, address, prefix, message)
                .await?;
        }
        // Addresses before routes: a gateway is reachable only once an address puts its
        // subnet on the interface.
        session
            .add_addresses(index, ifname, &spec.addresses)
            .await?;
        if !stale.is_empty() {
            for (address, prefix, message) in stale {
                session
                    .delete_address(ifname, address, prefix, message)
                    .await?;
            }
            // Removing an IPv4 primary address removes the secondaries of its subnet with
            // it (unless the interface promotes them), new ones included.
            session
                .add_addresses(index, ifname, &spec.addresses)
                .await?;
        }

        for route in spec.routes.iter().chain(default_route.as_ref()) {
            let message = route_message(index, route);
            tolerate(
                session.handle.route().add(message).execute().await,
                ERRNO_EXISTS,
            )
            .map_err(|error| session.failure(format!("adding route {route}"), ifname, error))?;
        }
        Ok(())
    }

    async fn delete_link(&self, netns: &NetnsRef, ifname: &str) -> Result<bool, PlumbingError> {
        let Some(session) = self.session_in(netns)? else {
            return Ok(false);
        };
        let Some(index) = session.index_of(ifname).await? else {
            return Ok(false);
        };
        match session.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            // Gone between the lookup and the deletion.
            Err(error) if errno_of(&error) == Some(ERRNO_NO_SUCH_DEVICE) => Ok(false),
            Err(error) => Err(session.failure("deleting".to_owned(), ifname, error)),
        }
    }

    async fn link_exists(&self, netns: &NetnsRef, ifname: &str) -> Result<bool, PlumbingError> {
        match self.session_in(netns)? {
            Some(session) => Ok(session.index_of(ifname).await?.is_some()),
            None => Ok(false),
        }
    }
}

impl Thread {
    async fn open_tap(
        &self,
        netns: &NetnsRef,
        mac: [u8; 6],
    ) -> Result<Option<OpenedTap>, PlumbingError> {
        let Some(session) = self.session_in(netns)? else {
            return Ok(None);
        };
        let Some(name) = session.name_with_mac(mac).await? else {
            return Ok(None);
        };
        let Some(target) = netns.open()? else {
            return Ok(None);
        };
        let netns_name = netns.to_string();
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|errno| {
            PlumbingError::EnterNamespace {
                netns: netns_name.clone(),
                source: errno.into(),
            }
        })?;
        // Both are bound to the namespace they are opened in: the descriptor finds the tap by
        // name there, the socket sets its flags there.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .and_then(|device| {
                let control =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                Ok((device, control))
            });
        if let Err(errno) = setns(&self.own_netns, CloneFlags::CLONE_NEWNET) {
            return Err(PlumbingError::ReturnToOwnNamespace {
                netns: netns_name,
                source: errno.into(),
            });
        }
        let (device, control) = opened.map_err(|source| PlumbingError::Netlink {
            operation: "opening /dev/net/tun for".to_owned(),
            ifname: name.clone(),
            netns: netns_name,
            source,
        })?;
        Ok(Some(OpenedTap {
            device,
            control,
            name,
        }))
    }
}

impl Session {
    /// The name of the interface whose MAC is `mac`, if there is one.
    async fn name_with_mac(&self, mac: [u8; 6]) -> Result<Option<String>, PlumbingError> {
        let mut links = self.handle.link().get().execute();
        loop {
            match links.try_next().await {
                Ok(Some(link)) => {
                    let mut name = None;
                    let mut matches = false;
                    for attribute in link.attributes {
                        match attribute {
                            LinkAttribute::IfName(n) => name = Some(n),
                            LinkAttribute::Address(a) => matches = a == mac,
                            _ => {}
                        }
                    }
                    if matches && name.is_some() {
                        return Ok(name);
                    }
                }
                Ok(None) => return Ok(None),
                Err(error) => {
                    return Err(self.failure("listing".to_owned(), &mac_text(mac), error))
                }
            }
        }
    }

    /// The index of interface `ifname`, or `None` if there is none by that name.
    async fn index_of(&self, ifname: &str) -> Result<Option<u32>, PlumbingError> {
        let mut answers = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_owned())
            .execute();
        match answers.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(error) if errno_of(&error) == Some(ERRNO_NO_SUCH_DEVICE) => Ok(None),
            Err(error) => Err(self.failure("looking up".to_owned(), ifname, error)),
        }
    }

    async fn existing_index_of(&self, ifname: &str) -> Result<u32, PlumbingError> {
        self.index_of(ifname)
            .await?
            .ok_or_else(|| PlumbingError::NoSuchLink {
                ifname: ifname.to_owned(),
                netns: self.netns.clone(),
            })
    }

    /// Adds `addresses` to interface `index`; those already there count as added.
    async fn add_addresses(
        &self,
        index: u32,
        ifname: &str,
        addresses: &[PrefixedAddr],
    ) -> Result<(), PlumbingError> {
        for &(address, prefix) in addresses {
            let mut request = self.handle.address().add(index, address, prefix);
            if address.is_ipv6() {
                // Usable at once: the controller already made the address unique.
                let message = request.message_mut();
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            tolerate(request.execute().await, ERRNO_EXISTS).map_err(|error| {
                self.failure(format!("adding address {address}/{prefix}"), ifname, error)
            })?;
        }
        Ok(())
    }

    /// Deletes the address `message` (from [`Session::removable_addresses`]) describes; one
    /// already gone counts as deleted.
    async fn delete_address(
        &self,
        ifname: &str,
        address: IpAddr,
        prefix: u8,
        message: AddressMessage,
    ) -> Result<(), PlumbingError> {
        tolerate(
            self.handle.address().del(message).execute().await,
            ERRNO_NO_SUCH_ADDRESS,
        )
        .map_err(|error| {
            self.failure(
                format!("removing address {address}/{prefix}"),
                ifname,
                error,
            )
        })
    }

    /// The addresses on interface `index` that [`Thread::configure`] may remove, each with
    /// its prefix length and a message that deletes it. Kept out: IPv6 link-local addresses
    /// and addresses the kernel made by itself (without the permanent flag).
    async fn removable_addresses(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<(IpAddr, u8, AddressMessage)>, PlumbingError> {
        let dump_failed = |error| self.failure("listing addresses".to_owned(), ifname, error);
        let mut answers = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut removable = Vec::new();
        while let Some(message) = answers.try_next().await.map_err(dump_failed)? {
            if let Some(address) = removable_address(&message, index) {
                removable.push((address, message.header.prefix_len, deletion_of(&message)));
            }
        }
        Ok(removable)
    }

    /// The routes out of interface `index` that [`Thread::configure`] may remove, each with
    /// what it is and a message that deletes it.
    async fn removable_routes(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<(RouteKey, RouteMessage)>, PlumbingError> {
        let mut removable = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            // Only the family set: other header fields would filter the dump on kernels
            // with strict checking, and differently on those without.
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            let mut answers = self.handle.route().get(request).execute();
            while let Some(route) = answers
                .try_next()
                .await
                .map_err(|error| self.failure("listing routes".to_owned(), ifname, error))?
            {
                if let Some(key) = RouteKey::of_removable(&route, index) {
                    removable.push((key, deletion_of_route(&route)));
                }
            }
        }
        Ok(removable)
    }

    fn failure(&self, operation: String, ifname: &str, error: rtnetlink::Error) -> PlumbingError {
        let source = match error {
            rtnetlink::Error::NetlinkError(message) => message.to_io(),
            other => io::Error::other(other.to_string()),
        };
        PlumbingError::Netlink {
            operation,
            ifname: ifname.to_owned(),
            netns: self.netns.clone(),
            source,
        }
    }
}

/// Sends `result` back; true if the thread must stop.
fn answer<T>(reply: Reply<T>, result: Result<T, PlumbingError>) -> bool {
    let stop = matches!(result, Err(PlumbingError::ReturnToOwnNamespace { .. }));
    // A caller that gave up waiting is no reason to stop.
    let _ = reply.send(result);
    stop
}

/// The positive errno of a netlink refusal.
fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// `result`, with a refusal for `errno` counted as success.
fn tolerate(result: Result<(), rtnetlink::Error>, errno: i32) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if errno_of(&error) == Some(errno) => Ok(()),
        other => other,
    }
}

/// A route as [`Thread::configure`] compares them: its target network and its gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RouteKey {
    /// The target with its host bits cleared, and the prefix length.
    target: (IpAddr, u8),
    via: Option<IpAddr>,
}

impl RouteKey {
    fn of(route: &ManagedRoute) -> Self {
        let (target, prefix) = route.target;
        Self {
            target: (network_address(target, prefix), prefix),
            via: route.via,
        }
    }

    /// What `route` is, if it is a route out of interface `index` of the kind
    /// [`route_message`] makes: a unicast route in the main table, protocol static (as
    /// added here) or boot (as `ip route add` and most tools add them), scope universe or
    /// link, through a gateway of its own family or on-link, with one next hop.
    fn of_removable(route: &RouteMessage, index: u32) -> Option<Self> {
        let header = &route.header;
        let ours = header.kind == RouteType::Unicast
            && matches!(header.protocol, RouteProtocol::Static | RouteProtocol::Boot)
            && matches!(header.scope, RouteScope::Universe | RouteScope::Link)
            && header.source_prefix_length == 0;
        if !ours {
            return None;
        }
        let unspecified = match header.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut table = u32::from(header.table);
        let mut output = None;
        let mut destination = unspecified;
        let mut via = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Table(id) => table = *id,
                RouteAttribute::Oif(oif) => output = Some(*oif),
                RouteAttribute::Destination(address) => {
                    destination = ip_of_route_address(address)?;
                }
                RouteAttribute::Gateway(address) => via = Some(ip_of_route_address(address)?),
                // Several next hops, a gateway of another family, a source-specific route,
                // an encapsulation: never made here.
                RouteAttribute::MultiPath(_)
                | RouteAttribute::Via(_)
                | RouteAttribute::Source(_)
                | RouteAttribute::Encap(_)
                | RouteAttribute::NhId(_) => return None,
                _ => {}
            }
        }
        let same_family = |address: IpAddr| address.is_ipv4() == unspecified.is_ipv4();
        if table != u32::from(RouteHeader::RT_TABLE_MAIN)
            || output != Some(index)
            || !same_family(destination)
            || via.is_some_and(|gateway| !same_family(gateway))
        {
            return None;
        }
        let prefix = header.destination_prefix_length;
        Some(Self {
            target: (network_address(destination, prefix), prefix),
            via,
        })
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (target, prefix) = self.target;
        write!(f, "{target}/{prefix}")?;
        match self.via {
            Some(gateway) => write!(f, " via {gateway}"),
            None => f.write_str(" on-link"),
        }
    }
}

fn ip_of_route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A request deleting exactly `route`: its header (which names table, protocol, scope and
/// type) and the attributes that tell it apart from its neighbours, without the state the
/// kernel reports with it (cache info, preference, expiry).
fn deletion_of_route(route: &RouteMessage) -> RouteMessage {
    let mut deletion = RouteMessage::default();
    deletion.header = route.header.clone();
    deletion.header.flags = Default::default();
    deletion.attributes = route
        .attributes
        .iter()
        .filter(|attribute| {
            matches!(
                attribute,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
            )
        })
        .cloned()
        .collect();
    deletion
}

/// The address `message` puts on interface `index`, if [`Thread::configure`] may remove it:
/// not IPv6 link-local (the kernel's, which IPv6 needs), and permanent (not one the kernel
/// made by itself from router advertisements, which would only come back).
fn removable_address(message: &AddressMessage, index: u32) -> Option<IpAddr> {
    if message.header.index != index {
        return None;
    }
    let mut local = None;
    let mut peer = None;
    let mut permanent = message.header.flags.contains(AddressHeaderFlags::Permanent);
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(address) => local = Some(*address),
            AddressAttribute::Address(address) => peer = Some(*address),
            // The full flags, when present, supersede the header's 8 bits.
            AddressAttribute::Flags(flags) => permanent = flags.contains(AddressFlags::Permanent),
            _ => {}
        }
    }
    // IPv4 reports the interface's own address as the local one; IPv6 only as the address.
    let address = local.or(peer)?;
    let link_local = match address {
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    };
    (permanent && !link_local).then_some(address)
}

/// A request deleting the address `message` describes.
fn deletion_of(message: &AddressMessage) -> AddressMessage {
    let mut deletion = AddressMessage::default();
    deletion.header = message.header.clone();
    deletion.header.flags = AddressHeaderFlags::empty();
    deletion.attributes = message
        .attributes
        .iter()
        .filter(|attribute| {
            matches!(
                attribute,
                AddressAttribute::Address(_)
                    | AddressAttribute::Local(_)
                    | AddressAttribute::Label(_)
            )
        })
        .cloned()
        .collect();
    deletion
}

fn route_message(index: u32, route: &ManagedRoute) -> RouteMessage {
    // As `ip route add PREFIX dev IF`, a route without a gateway is to hosts on the link.
    let scope = if route.via.is_none() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    let (target, prefix) = route.target;
    match network_address(target, prefix) {
        IpAddr::V4(network) => {
            let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(network, prefix)
                .output_interface(index)
                .scope(scope);
            match route.via {
                Some(IpAddr::V4(gateway)) => builder.gateway(gateway),
                _ => builder,
            }
            .build()
        }
        IpAddr::V6(network) => {
            let builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(network, prefix)
                .output_interface(index)
                .scope(scope);
            match route.via {
                Some(IpAddr::V6(gateway)) => builder.gateway(gateway),
                _ => builder,
            }
            .build()
        }
    }
}

fn unspecified_like(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn network_address(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn check_interface_name(ifname: &str) -> Result<(), PlumbingError> {
    // IFNAMSIZ - 1; no separators that iproute2 or sysfs would trip over.
    let acceptable = !ifname.is_empty()
        && ifname.len() <= crate::tap::MAX_INTERFACE_NAME_LEN
        && ifname != "."
        && ifname != ".."
        && !ifname
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte == 0 || byte.is_ascii_whitespace());
    if acceptable {
        Ok(())
    } else {
        Err(PlumbingError::InvalidInput(format!(
            "{ifname:?} is not a valid Linux interface name"
        )))
    }
}

fn check_spec(spec: &LinkSpec) -> Result<(), PlumbingError> {
    let invalid = |reason: String| Err(PlumbingError::InvalidInput(reason));
    if spec.mac[0] & 0x01 != 0 || spec.mac == [0; 6] {
        return invalid(format!(
            "{} is not a unicast MAC address",
            mac_text(spec.mac)
        ));
    }
    for &(address, prefix) in &spec.addresses {
        check_prefix(address, prefix)?;
    }
    for route in &spec.routes {
        check_prefix(route.target.0, route.target.1)?;
        if let Some(gateway) = route.via {
            if gateway.is_ipv4() != route.target.0.is_ipv4() {
                return invalid(format!("route {route} mixes address families"));
            }
        }
    }
    Ok(())
}

fn check_prefix(address: IpAddr, prefix: u8) -> Result<(), PlumbingError> {
    let longest = if address.is_ipv4() { 32 } else { 128 };
    if prefix > longest {
        Err(PlumbingError::InvalidInput(format!(
            "prefix length {prefix} is too long for {address}"
        )))
    } else {
        Ok(())
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_targets_lose_their_host_bits() {
        assert_eq!(
            network_address("10.213.230.77".parse().unwrap(), 24),
            "10.213.230.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_address("fd00:213:230::9".parse().unwrap(), 64),
            "fd00:213:230::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_address("10.1.2.3".parse().unwrap(), 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn specs_with_impossible_values_are_refused() {
        let good = LinkSpec {
            mac: [0x02, 0, 0, 0, 0, 1],
            mtu: 2800,
            ..LinkSpec::default()
        };
        assert!(check_spec(&good).is_ok());
        let multicast_mac = LinkSpec {
            mac: [0x33, 0x33, 0, 0, 0, 1],
            ..good.clone()
        };
        assert!(check_spec(&multicast_mac).is_err());
        let long_prefix = LinkSpec {
            addresses: vec![("10.0.0.1".parse().unwrap(), 33)],
            ..good.clone()
        };
        assert!(check_spec(&long_prefix).is_err());
        let mixed_route = LinkSpec {
            routes: vec![ManagedRoute {
                target: ("fd00::".parse().unwrap(), 64),
                via: Some("10.0.0.1".parse().unwrap()),
            }],
            ..good
        };
        assert!(check_spec(&mixed_route).is_err());
        for bad_name in ["", "a/b", "eth0:1", "0123456789abcdef", "has space"] {
            assert!(check_interface_name(bad_name).is_err(), "{bad_name:?}");
        }
        assert!(check_interface_name("eth0").is_ok());
    }

    #[test]
    fn namespaces_are_named_in_errors() {
        assert_eq!(NetnsRef::named("c1").to_string(), "/var/run/netns/c1");
        assert_eq!(NetnsRef::of_process(42).to_string(), "/proc/42/ns/net");
    }

    /// Whether a root-only test may run; panics when it may not but must (under CI, which
    /// runs as root and must not skip these silently).
    fn privileged(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: must run as root under CI"
        );
        println!("SKIPPED: needs root ({test})");
        false
    }

    /// A namespace made with `ip netns add` holding a veth pair `eth0`-`peer0`, both ends
    /// up; deleted, with everything in it, when dropped.
    struct TestNetns {
        name: String,
    }

    impl TestNetns {
        fn create() -> Self {
            use rand_core::RngCore;
            let name = format!("ztcv-{:08x}", rand_core::OsRng.next_u32());
            ip(&["netns", "add", &name]);
            let netns = Self { name };
            netns.ip(&[
                "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            ]);
            netns.ip(&["link", "set", "peer0", "up"]);
            netns
        }

        fn reference(&self) -> NetnsRef {
            NetnsRef::named(&self.name)
        }

        fn ip(&self, arguments: &[&str]) {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(arguments);
            ip(&all);
        }

        fn ip_json(&self, arguments: &[&str]) -> serde_json::Value {
            let output = std::process::Command::new("ip")
                .args(["-n", &self.name, "-j"])
                .args(arguments)
                .output()
                .expect("run ip");
            assert!(
                output.status.success(),
                "ip -n {} {arguments:?}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).expect("ip -j prints JSON")
        }

        /// `(address, prefix length)` of every address on `ifname`.
        fn addresses(&self, ifname: &str) -> Vec<(IpAddr, u64)> {
            let shown = self.ip_json(&["addr", "show", "dev", ifname]);
            shown[0]["addr_info"]
                .as_array()
                .expect("addr_info")
                .iter()
                .map(|info| {
                    let local = info["local"].as_str().expect("local");
                    (
                        local.parse().expect("an address"),
                        info["prefixlen"].as_u64().expect("prefixlen"),
                    )
                })
                .collect()
        }

        /// `destination protocol [via gateway]` of every route through `ifname` in the main
        /// table, both families.
        fn routes(&self, ifname: &str) -> Vec<String> {
            let mut routes = Vec::new();
            for family in ["-4", "-6"] {
                let shown = self.ip_json(&[family, "route", "show", "dev", ifname]);
                for route in shown.as_array().expect("routes") {
                    let mut text = format!(
                        "{} {}",
                        route["dst"].as_str().expect("dst"),
                        route["protocol"].as_str().unwrap_or("boot")
                    );
                    if let Some(gateway) = route["gateway"].as_str() {
                        text.push_str(&format!(" via {gateway}"));
                    }
                    routes.push(text);
                }
            }
            routes.sort();
            routes
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    fn ip(arguments: &[&str]) {
        let output = std::process::Command::new("ip")
            .args(arguments)
            .output()
            .expect("run ip");
        assert!(
            output.status.success(),
            "ip {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn route(target: &str, prefix: u8, via: Option<&str>) -> ManagedRoute {
        ManagedRoute {
            target: (target.parse().unwrap(), prefix),
            via: via.map(|gateway| gateway.parse().unwrap()),
        }
    }

    /// Root only; network safety: everything happens inside a namespace the test creates,
    /// on a veth pair made inside it.
    #[tokio::test]
    async fn configuring_again_removes_what_the_new_spec_no_longer_has() {
        if !privileged("configuring_again_removes_what_the_new_spec_no_longer_has") {
            return;
        }
        let container = TestNetns::create();
        // Not ours to touch: an address and a route on the other end of the pair.
        container.ip(&["addr", "add", "10.1.0.200/24", "dev", "peer0"]);
        container.ip(&["route", "add", "10.4.0.0/16", "dev", "peer0"]);
        let worker = NetnsWorker::start().expect("start the plumbing thread");
        let first = LinkSpec {
            mac: [0x02, 0x13, 0x23, 0x00, 0x00, 0x05],
            mtu: 2800,
            addresses: vec![
                ("10.1.0.5".parse().unwrap(), 24),
                ("fd00::5".parse().unwrap(), 64),
            ],
            routes: vec![
                route("10.2.0.0", 16, None),
                route("10.5.0.0", 16, Some("10.1.0.1")),
            ],
            default_route_via: Some("10.1.0.1".parse().unwrap()),
            up: true,
        };
        worker
            .configure(container.reference(), "eth0", first.clone())
            .await
            .expect("configure the first spec");
        let addresses = container.addresses("eth0");
        for expected in [("10.1.0.5", 24), ("fd00::5", 64)] {
            let expected = (expected.0.parse().unwrap(), expected.1);
            assert!(
                addresses.contains(&expected),
                "{expected:?} in {addresses:?}"
            );
        }
        let routes = container.routes("eth0");
        for expected in [
            "10.2.0.0/16 static",
            "10.5.0.0/16 static via 10.1.0.1",
            "default static via 10.1.0.1",
        ] {
            assert!(
                routes.iter().any(|r| r == expected),
                "{expected} in {routes:?}"
            );
        }

        let second = LinkSpec {
            addresses: vec![("10.1.0.6".parse().unwrap(), 24)],
            routes: vec![
                route("10.3.0.0", 16, None),
                // Same target, another gateway.
                route("10.5.0.0", 16, Some("10.1.0.2")),
            ],
            default_route_via: None,
            ..first
        };
        for attempt in ["once", "twice"] {
            worker
                .configure(container.reference(), "eth0", second.clone())
                .await
                .unwrap_or_else(|error| panic!("configure the second spec {attempt}: {error}"));
            let addresses = container.addresses("eth0");
            let (link_local, others): (Vec<_>, Vec<_>) =
                addresses.iter().copied().partition(|(address, prefix)| {
                    matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local()) && *prefix == 64
                });
            assert_eq!(
                others,
                vec![("10.1.0.6".parse::<IpAddr>().unwrap(), 24)],
                "{attempt}: only the new address besides link-local: {addresses:?}"
            );
            assert!(
                link_local.len() <= 1,
                "{attempt}: the kernel's link-local address at most: {addresses:?}"
            );
            let routes = container.routes("eth0");
            let mut expected = vec![
                "10.1.0.0/24 kernel".to_owned(),
                "10.3.0.0/16 static".to_owned(),
                "10.5.0.0/16 static via 10.1.0.2".to_owned(),
            ];
            if attempt == "twice" {
                expected.push("10.6.0.0/16 dhcp".to_owned());
            }
            let ipv6_routes: Vec<&String> = routes.iter().filter(|r| r.contains(':')).collect();
            assert!(
                ipv6_routes.iter().all(|r| r.starts_with("fe80::/64 ")),
                "{attempt}: no IPv6 route but link-local's: {routes:?}"
            );
            expected.extend(ipv6_routes.into_iter().cloned());
            expected.sort();
            assert_eq!(routes, expected, "{attempt}");
            // Another protocol's route (a DHCP client's) on eth0, which must stay.
            container.ip(&[
                "route",
                "replace",
                "10.6.0.0/16",
                "dev",
                "eth0",
                "proto",
                "dhcp",
            ]);
        }

        // The other end kept what it had.
        assert!(container
            .addresses("peer0")
            .contains(&("10.1.0.200".parse().unwrap(), 24)));
        assert!(container
            .routes("peer0")
            .contains(&"10.4.0.0/16 boot".to_owned()));
    }

    #[tokio::test]
    async fn a_namespace_path_that_does_not_exist_is_gone() {
        let worker = NetnsWorker::start().expect("start the plumbing thread");
        let nowhere = NetnsRef::path("/nonexistent/ztpl-netns");
        assert!(!worker.link_exists(nowhere.clone(), "eth0").await.unwrap());
        assert!(!worker.delete_link(nowhere.clone(), "eth0").await.unwrap());
        let error = worker
            .configure(
                nowhere,
                "eth0",
                LinkSpec {
                    mac: [0x02, 0, 0, 0, 0, 1],
                    mtu: 1500,
                    ..LinkSpec::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, PlumbingError::NamespaceGone { .. }),
            "{error}"
        );
    }
}
