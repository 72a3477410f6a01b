//! Applying what a ZeroTier network config manages (MTU, assigned addresses, managed
//! routes) to the network's interface, and reading back what the OS has put on it
//! (multicast subscriptions, the IPv6 link-local address).
//!
//! Changes are made with iproute2's `ip` command. Every command is run as a child of the
//! calling thread, and `/proc` is read through `/proc/thread-self`, so all of this acts on the
//! calling thread's network namespace: a thread that has entered a container's namespace
//! configures the interface there.
//!
//! [`apply`] only ever removes what an earlier [`apply`] added: addresses and routes that
//! someone else (the kernel, an administrator) put on the interface are left alone, even when
//! the config asks for the same thing.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

/// An address with its prefix length, as ZeroTier assigns them (`10.147.17.5/24`).
pub type PrefixedAddr = (IpAddr, u8);

/// A route the network config asks for: `target` through the gateway `via`, or on-link
/// through the interface itself when `via` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ManagedRoute {
    /// The destination network. Host bits are ignored: `10.0.0.7/8` means `10.0.0.0/8`.
    pub target: PrefixedAddr,
    /// The gateway, or `None` for a route straight out of the interface.
    pub via: Option<IpAddr>,
}

/// What [`apply`] added to an interface and so may later take away again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Addresses this module added, as passed to [`apply`].
    pub addresses: Vec<PrefixedAddr>,
    /// Routes this module added, with their targets reduced to the network address.
    pub routes: Vec<ManagedRoute>,
}

/// One change [`apply`] could not make.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request itself was unusable; nothing was run.
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The `ip` binary could not be started (not installed, not in `PATH`).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// `ip` ran and refused; `stderr` is what it printed.
    #[error("`{command}` failed: {stderr}")]
    Refused { command: String, stderr: String },
}

/// [`apply`] could not make every change. The other changes were still made, and `applied`
/// records what this module now owns on the interface, so the next [`apply`] (given it as
/// `previous`) can retry or clean up.
#[derive(Debug)]
pub struct ApplyError {
    /// The interface being configured.
    pub ifname: String,
    /// What this module owns on the interface now; pass it as the next `previous`.
    pub applied: Applied,
    /// Every change that failed, in the order they were tried.
    pub failures: Vec<ChangeError>,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} change(s) to interface {} failed",
            self.failures.len(),
            self.ifname
        )?;
        match self.failures.first() {
            Some(first) => write!(f, ", the first: {first}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failures
            .first()
            .map(|first| first as &(dyn std::error::Error + 'static))
    }
}

impl From<ApplyError> for io::Error {
    fn from(error: ApplyError) -> Self {
        Self::other(error)
    }
}

/// Brings `ifname` in line with a network config: sets the MTU, adds the `addresses` and
/// `routes` that are missing, and removes those that `previous` (the result of the last call
/// for this interface) added and the config no longer lists.
///
/// IPv6 addresses are added without duplicate address detection so they are usable at once.
/// Routes are chosen as ZeroTier One does on Linux (see `routes_to_install`): one to an
/// assigned address's own subnet is skipped, since the kernel made it with the address, and a
/// default route is split in two halves. A wanted address or route that already exists
/// without us having added it is not an error; it is left out of the result, so a later call
/// never removes it.
///
/// Invalid input (an interface name Linux would refuse, a prefix longer than the address)
/// fails before anything is changed.
pub fn apply(
    ifname: &str,
    mtu: u32,
    addresses: &[PrefixedAddr],
    routes: &[ManagedRoute],
    previous: &Applied,
) -> Result<Applied, ApplyError> {
    let invalid = |reason: String| ApplyError {
        ifname: ifname.to_owned(),
        applied: previous.clone(),
        failures: vec![ChangeError::InvalidInput(reason)],
    };
    check_interface_name(ifname).map_err(invalid)?;
    for &(address, prefix) in addresses {
        check_prefix(address, prefix).map_err(invalid)?;
    }
    for route in routes {
        check_prefix(route.target.0, route.target.1).map_err(invalid)?;
    }

    let wanted_addresses: Vec<PrefixedAddr> = dedup(addresses.iter().copied());
    let wanted_routes = routes_to_install(&wanted_addresses, routes);
    let mut failures = Vec::new();
    let mut applied = Applied::default();

    // Stale routes go first: one of them may depend on an address that is about to go.
    for route in &previous.routes {
        if wanted_routes.contains(route) {
            continue;
        }
        if let Err(failure) = run_ip(&route_command("del", ifname, route), NO_SUCH_ROUTE) {
            failures.push(failure);
            applied.routes.push(*route);
        }
    }
    for address in &previous.addresses {
        if wanted_addresses.contains(address) {
            continue;
        }
        if let Err(failure) = run_ip(&address_command("del", ifname, *address), NO_SUCH_ADDRESS) {
            failures.push(failure);
            applied.addresses.push(*address);
        }
    }

    let mtu_command = args(["link", "set", "dev", ifname, "mtu", &mtu.to_string()]);
    if let Err(failure) = run_ip(&mtu_command, &[]) {
        failures.push(failure);
    }

    // Addresses before routes: a gateway is only reachable once an address puts its subnet
    // on the interface.
    for &address in &wanted_addresses {
        match run_ip(&address_command("add", ifname, address), ALREADY_THERE) {
            Ok(Outcome::Done) => applied.addresses.push(address),
            // Ours from an earlier call, or someone else's; only the former stays ours.
            Ok(Outcome::Tolerated) if previous.addresses.contains(&address) => {
                applied.addresses.push(address);
            }
            Ok(Outcome::Tolerated) => {}
            Err(failure) => failures.push(failure),
        }
    }
    for route in &wanted_routes {
        match run_ip(&route_command("add", ifname, route), ALREADY_THERE) {
            Ok(Outcome::Done) => applied.routes.push(*route),
            Ok(Outcome::Tolerated) if previous.routes.contains(route) => {
                applied.routes.push(*route)
            }
            Ok(Outcome::Tolerated) => {}
            Err(failure) => failures.push(failure),
        }
    }

    if failures.is_empty() {
        Ok(applied)
    } else {
        Err(ApplyError {
            ifname: ifname.to_owned(),
            applied,
            failures,
        })
    }
}

/// The multicast MAC addresses the OS has subscribed `ifname` to (from
/// `/proc/net/dev_mcast` of the calling thread's namespace), each listed once. These are the
/// groups ZeroTier One announces for the interface besides those derived from its addresses.
pub fn multicast_groups(ifname: &str) -> io::Result<Vec<[u8; 6]>> {
    let table = read_proc_net("dev_mcast")?;
    Ok(parse_dev_mcast(&table, ifname))
}

/// The IPv6 link-local address of `ifname` in the calling thread's namespace, if it has one
/// yet (the kernel adds it when the interface comes up). An address whose duplicate address
/// detection failed is skipped; one still being checked is returned.
pub fn ipv6_link_local(ifname: &str) -> io::Result<Option<Ipv6Addr>> {
    let table = read_proc_net("if_inet6")?;
    Ok(parse_if_inet6_link_local(&table, ifname))
}

// What `ip` prints when there is nothing to do: the kernel's extended-ack message where it
// gives one ("Error: ipv4: Address already assigned."), otherwise the errno's text
// ("RTNETLINK answers: File exists"). Matched without regard to case.
const ALREADY_THERE: &[&str] = &["file exists", "already assigned"];
const NO_SUCH_ROUTE: &[&str] = &["no such process"];
const NO_SUCH_ADDRESS: &[&str] = &["cannot assign requested address", "address not found"];

/// The routes `apply` installs for a config, as ZeroTier One 1.14 chooses them on Linux:
/// targets reduced to their network, duplicates dropped, and left out:
/// - a route to the subnet of an assigned address (same prefix): adding the address made it;
/// - a route via one of our own addresses: this host is that route's router.
///
/// A default route (`/0`) is installed as its two halves (`0.0.0.0/1` and `128.0.0.0/1`, or
/// `::/1` and `8000::/1`), which take precedence over the host's own default route without
/// replacing it. Whether the config may set such routes at all (ZeroTier One's
/// allowManaged/allowGlobal/allowDefault) is for the caller to decide.
fn routes_to_install(addresses: &[PrefixedAddr], routes: &[ManagedRoute]) -> Vec<ManagedRoute> {
    let installed = routes.iter().map(ManagedRoute::normalized).filter(|route| {
        let (target, prefix) = route.target;
        let implied_by_address = addresses.iter().any(|&(address, address_prefix)| {
            address_prefix == prefix && network_address(address, prefix) == target
        });
        let via_ourselves = route
            .via
            .is_some_and(|gateway| addresses.iter().any(|&(address, _)| address == gateway));
        !implied_by_address && !via_ourselves
    });
    let split = installed.flat_map(|route| {
        let halves = match route.target {
            (IpAddr::V4(_), 0) => [
                Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1)),
                Some((IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0)), 1)),
            ],
            (IpAddr::V6(_), 0) => [
                Some((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1)),
                Some((IpAddr::V6(Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0)), 1)),
            ],
            target => [Some(target), None],
        };
        halves
            .into_iter()
            .flatten()
            .map(move |target| ManagedRoute {
                target,
                via: route.via,
            })
    });
    dedup(split)
}

enum Outcome {
    Done,
    /// `ip` failed with one of the messages the caller listed as harmless.
    Tolerated,
}

fn run_ip(arguments: &[String], harmless: &[&str]) -> Result<Outcome, ChangeError> {
    let command = format!("ip {}", arguments.join(" "));
    let output = Command::new("ip")
        .args(arguments)
        .output()
        .map_err(|source| ChangeError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(Outcome::Done);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let lowercase = stderr.to_lowercase();
    if harmless.iter().any(|message| lowercase.contains(message)) {
        Ok(Outcome::Tolerated)
    } else {
        Err(ChangeError::Refused { command, stderr })
    }
}

fn args<const N: usize>(parts: [&str; N]) -> Vec<String> {
    parts.iter().map(|part| (*part).to_owned()).collect()
}

fn family_flag(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "-4"
    } else {
        "-6"
    }
}

fn address_command(verb: &str, ifname: &str, (address, prefix): PrefixedAddr) -> Vec<String> {
    let local = format!("{address}/{prefix}");
    let mut command = args([family_flag(address), "addr", verb, &local, "dev", ifname]);
    if verb == "add" {
        match address {
            // Fill in the subnet's broadcast address, as an address assigned by DHCP gets.
            IpAddr::V4(_) => command.extend(args(["broadcast", "+"])),
            // Usable at once: the virtual network's controller already made it unique.
            IpAddr::V6(_) => command.push("nodad".to_owned()),
        }
    }
    command
}

fn route_command(verb: &str, ifname: &str, route: &ManagedRoute) -> Vec<String> {
    let (target, prefix) = route.target;
    let destination = format!("{target}/{prefix}");
    let mut command = args([family_flag(target), "route", verb, &destination]);
    if let Some(gateway) = route.via {
        command.extend(args(["via", &gateway.to_string()]));
    }
    command.extend(args(["dev", ifname]));
    command
}

impl ManagedRoute {
    /// The same route with the target's host bits cleared, as the kernel stores it.
    fn normalized(&self) -> Self {
        let (address, prefix) = self.target;
        Self {
            target: (network_address(address, prefix), prefix),
            via: self.via,
        }
    }
}

impl fmt::Display for ManagedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target.0, self.target.1)?;
        match self.via {
            Some(gateway) => write!(f, " via {gateway}"),
            None => write!(f, " on-link"),
        }
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

fn check_prefix(address: IpAddr, prefix: u8) -> Result<(), String> {
    let longest = if address.is_ipv4() { 32 } else { 128 };
    if prefix > longest {
        Err(format!("prefix length {prefix} is too long for {address}"))
    } else {
        Ok(())
    }
}

fn check_interface_name(ifname: &str) -> Result<(), String> {
    // IFNAMSIZ - 1; no separators that iproute2 or sysfs would trip over.
    let acceptable = !ifname.is_empty()
        && ifname.len() <= 15
        && !ifname.starts_with('-')
        && !ifname
            .bytes()
            .any(|byte| byte == b'/' || byte.is_ascii_whitespace() || byte == 0);
    if acceptable {
        Ok(())
    } else {
        Err(format!("{ifname:?} is not a valid Linux interface name"))
    }
}

fn dedup<T: Copy + Eq + std::hash::Hash>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

/// Reads a table of the calling thread's network namespace. `/proc/net` follows the
/// process's main thread, which may sit in another namespace than the caller.
fn read_proc_net(table: &str) -> io::Result<String> {
    match std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            std::fs::read_to_string(format!("/proc/net/{table}"))
        }
        result => result,
    }
}

/// `/proc/net/dev_mcast` lines are `ifindex name users global-use hex-mac`.
fn parse_dev_mcast(table: &str, ifname: &str) -> Vec<[u8; 6]> {
    let groups = table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let name = fields.nth(1)?;
        let mac_hex = fields.nth(2)?;
        if name != ifname {
            return None;
        }
        let mut mac = [0u8; 6];
        hex::decode_to_slice(mac_hex, &mut mac).ok()?;
        Some(mac)
    });
    dedup(groups)
}

/// `/proc/net/if_inet6` lines are `hex-address ifindex prefix-len scope flags name`, every
/// number in hex.
fn parse_if_inet6_link_local(table: &str, ifname: &str) -> Option<Ipv6Addr> {
    const SCOPE_LINK: u8 = 0x20;
    const IFA_F_DADFAILED: u8 = 0x08;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [address_hex, _ifindex, _prefix, scope, flags, name] = fields.as_slice() else {
            return None;
        };
        let scope = u8::from_str_radix(scope, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if *name != ifname || scope != SCOPE_LINK || flags & IFA_F_DADFAILED != 0 {
            return None;
        }
        let mut octets = [0u8; 16];
        hex::decode_to_slice(address_hex, &mut octets).ok()?;
        Some(Ipv6Addr::from(octets))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mcast_lines_for_one_interface() {
        let table = "\
1    lo              1     0     333300000001
2    eth0            1     0     01005e000001
2    eth0            1     0     333300000001
5    zt0             1     0     333300000001
5    zt0             2     0     3333ff000001
5    zt0             1     0     333300000001
5    zt0             1     0     nothex
5    zt0
";
        assert_eq!(
            parse_dev_mcast(table, "zt0"),
            vec![[0x33, 0x33, 0, 0, 0, 1], [0x33, 0x33, 0xff, 0, 0, 1]]
        );
        assert!(parse_dev_mcast(table, "zt1").is_empty());
        assert!(parse_dev_mcast("", "zt0").is_empty());
    }

    #[test]
    fn link_local_from_if_inet6() {
        let table = "\
00000000000000000000000000000001 01 80 10 80       lo
fd002130240000000000000000000001 05 40 00 80      zt0
fe800000000000000000000000000099 05 40 20 08      zt0
fe80000000000000001324fffe000001 05 40 20 80      zt0
";
        assert_eq!(
            parse_if_inet6_link_local(table, "zt0"),
            Some("fe80::13:24ff:fe00:1".parse().unwrap())
        );
        assert_eq!(parse_if_inet6_link_local(table, "lo"), None);
        assert_eq!(parse_if_inet6_link_local("garbage\n\n", "zt0"), None);
    }

    #[test]
    fn route_targets_lose_host_bits() {
        let route = ManagedRoute {
            target: ("10.213.240.77".parse().unwrap(), 24),
            via: None,
        };
        assert_eq!(
            route.normalized().target,
            ("10.213.240.0".parse().unwrap(), 24)
        );
        let route = ManagedRoute {
            target: ("fd00:213:240::5".parse().unwrap(), 0),
            via: None,
        };
        assert_eq!(route.normalized().target, ("::".parse().unwrap(), 0));
        let host: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(network_address(host, 32), host);
    }

    #[test]
    fn commands_are_what_iproute2_expects() {
        let v6 = ("fd00:213:240::1".parse().unwrap(), 64);
        assert_eq!(
            address_command("add", "zt0", v6).join(" "),
            "-6 addr add fd00:213:240::1/64 dev zt0 nodad"
        );
        let v4 = ("10.213.240.1".parse().unwrap(), 24);
        assert_eq!(
            address_command("add", "zt0", v4).join(" "),
            "-4 addr add 10.213.240.1/24 dev zt0 broadcast +"
        );
        assert_eq!(
            address_command("del", "zt0", v4).join(" "),
            "-4 addr del 10.213.240.1/24 dev zt0"
        );
        let route = ManagedRoute {
            target: ("10.213.241.0".parse().unwrap(), 24),
            via: Some("10.213.240.254".parse().unwrap()),
        };
        assert_eq!(
            route_command("add", "zt0", &route).join(" "),
            "-4 route add 10.213.241.0/24 via 10.213.240.254 dev zt0"
        );
    }

    #[test]
    fn routes_follow_zerotier_one_on_linux() {
        let addresses = [
            ("10.213.240.1".parse().unwrap(), 24),
            ("fd00:213:240::1".parse().unwrap(), 64),
        ];
        let route = |target: &str, prefix, via: Option<&str>| ManagedRoute {
            target: (target.parse().unwrap(), prefix),
            via: via.map(|gateway| gateway.parse().unwrap()),
        };
        let installed = routes_to_install(
            &addresses,
            &[
                // Implied by the addresses.
                route("10.213.240.0", 24, None),
                route("fd00:213:240::", 64, None),
                // Via ourselves.
                route("10.213.243.0", 24, Some("10.213.240.1")),
                // Kept; a wider route around our own subnet is not implied.
                route("10.213.0.0", 16, None),
                route("10.213.241.7", 24, Some("10.213.240.254")),
                route("10.213.241.0", 24, Some("10.213.240.254")),
                // Split in halves.
                route("0.0.0.0", 0, Some("10.213.240.254")),
                route("::", 0, None),
            ],
        );
        assert_eq!(
            installed,
            vec![
                route("10.213.0.0", 16, None),
                route("10.213.241.0", 24, Some("10.213.240.254")),
                route("0.0.0.0", 1, Some("10.213.240.254")),
                route("128.0.0.0", 1, Some("10.213.240.254")),
                route("::", 1, None),
                route("8000::", 1, None),
            ]
        );
    }

    #[test]
    fn bad_input_changes_nothing() {
        let error = apply(
            "zt0",
            2800,
            &[("10.0.0.1".parse().unwrap(), 33)],
            &[],
            &Applied::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("prefix length 33"), "{error}");
        assert!(apply("no/slashes", 2800, &[], &[], &Applied::default()).is_err());
    }
}
