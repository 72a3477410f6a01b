//! The "rich" network of the ZeroTier One 1.14.1 rules capture, rebuilt on our controller and
//! driven with real traffic between `zt-agent` processes in network namespaces the test makes.
//!
//! The network gets the capture's 23 rules (`controller-network-rich.json`, revision 2), its
//! capability 1 (accept TCP/UDP destination ports 8000-8100) and its tag 1000; members a and
//! b get the tags and capabilities of their capture member records (both tag 1000 = 7, only
//! a holds capability 1). The addresses are the test's own (10.213.98.0/24, inside the
//! namespaces); the TEE target of the rules, b's address in the capture, becomes our b's.
//! Managed IPv6 is off: the table is about IPv4.
//!
//! Each row of `tests/data/README.md`'s table for `zt-1.14.1-rules-tcp.pcap` is real traffic,
//! and its outcome is observed end to end (a TCP connect that completes and carries its bytes,
//! or times out with the listener never seeing it; pings answered or not):
//!
//! | traffic | expected | why |
//! |---|---|---|
//! | a pings b (IPv4), b pings a | delivered | tags equal (difference 0) and ICMP |
//! | a → b TCP 5202 | dropped | no global rule accepts a first SYN to 5202; a holds no capability for it |
//! | a → b TCP 8080 | delivered | a's capability 1 (ports 8000-8100) |
//! | b → a TCP 8081 | dropped | b holds no capability |
//! | a → b TCP 5201 | delivered | global rule: SYN to 22 or 5201 |
//!
//! Rows that are not in the table make each reason observable on its own, so that an
//! outcome cannot be right by accident: a → b TCP 8081 is delivered (the 8081 drop above is
//! b's missing capability, not the port), a → b TCP 8101 is dropped (the capability's range
//! ends at 8100), b → a TCP 5201 is delivered (b's SYNs do pass where a global rule accepts
//! them), UDP goes both ways (the last rule), and a third member c with tag 1000 = 9 cannot
//! exchange pings with a (tags differ by 2; ARP still passes, so only the ICMP rule decides).
//!
//! The TEE ("outbound TCP is copied, first 64 bytes, to b"): between a and b it never fires,
//! because b is the destination (a → b) or the sender (b → a); the capture holds no EXT_FRAME.
//! Observed here: while a sends TCP to b, no truncated copy of a's segments reaches b's tap.
//! To see the TEE fire at all, c (neither a nor b) opens a TCP connection to a (port 5201, a
//! global rule): c's segments and a's answers are both outbound TCP from a sender other than
//! b, so each is copied to b. b's inbound filter meets the TEE rule naming b in a set that
//! does not match (it starts "not inbound"), which makes b a TEE target and its verdict a
//! super-accept; super-accept skips EXT_FRAME's bridging checks, so b writes the copies to its
//! tap even though they are addressed to a's MAC. A capture on b's tap must therefore hold
//! frames from c's MAC to a's MAC (and back) carrying at most 64 bytes of IP packet, the data
//! segments cut short of their IP total length. Which ZeroTier verb carried them cannot be seen
//! (the underlay is encrypted), but nothing else would put c ↔ a traffic on b's tap.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use std::{fmt, fs};

use serde_json::{json, Value};
use zt_e2e::{
    generate_identity, make_planet, require_privileged, wait_until, Agent, Lan, Netns, TempDir,
    AGENT_PORT,
};

macro_rules! capture_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/capture-1.14.1/",
            $name
        )
    };
}

const NETWORK_RICH: &str = include_str!(capture_file!("controller-network-rich.json"));
const MEMBER_RICH_A: &str = include_str!(capture_file!("controller-member-rich-3346652ff6.json"));
const MEMBER_RICH_B: &str = include_str!(capture_file!("controller-member-rich-eab80561d6.json"));
/// b's address in the capture, the target of the rules' TEE.
const CAPTURE_ADDRESS_B: &str = "eab80561d6";
/// The rules' tag, and the value given to c so that its difference to a's and b's (7) is 2.
const TAG_ID: u64 = 1000;
const TAG_VALUE_C: u64 = 9;
/// The TEE rule copies this many bytes of each frame.
const TEE_LENGTH: usize = 64;

/// The managed network: `10.213.98.0/24`, only inside the test's namespaces.
const ZT_SUBNET_OCTET: u8 = 98;

const ROOT: usize = 0;
const MEMBER_A: usize = 1;
const MEMBER_B: usize = 2;
const MEMBER_C: usize = 3;
const NAMES: [&str; 4] = ["root", "member-a", "member-b", "member-c"];

/// How long a dropped connection attempt or ping is given before it counts as dropped; a
/// delivered one completes in well under a second once the peers know each other.
const DROP_WAIT: Duration = Duration::from_secs(4);
/// How long a delivered exchange may take.
const DELIVER_WAIT: Duration = Duration::from_secs(10);

const ETHERTYPE_IPV4: u16 = 0x0800;
const IP_PROTO_TCP: u8 = 0x06;

// ---------------------------------------------------------------------------------------------
// The network and its members, from the capture's controller JSON

fn parse_json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// The POST body creating the rich network on our controller, the TEE aimed at `tee_target`.
fn rich_network_body(tee_target: &str) -> Value {
    let rich = parse_json(NETWORK_RICH, "controller-network-rich.json");
    let mut rules = rich["rules"].clone();
    let rule_list = rules.as_array_mut().expect("the rich network's rules");
    assert_eq!(rule_list.len(), 23, "README: 23 rule entries");
    let mut tees = 0;
    for rule in rule_list.iter_mut().filter(|r| r["type"] == "ACTION_TEE") {
        assert_eq!(
            rule["address"], CAPTURE_ADDRESS_B,
            "the capture's TEE targets b"
        );
        assert_eq!(
            rule["length"], TEE_LENGTH,
            "the capture's TEE copies 64 bytes"
        );
        rule["address"] = Value::from(tee_target);
        tees += 1;
    }
    assert_eq!(tees, 1, "one TEE rule");
    json!({
        "name": "rich-e2e",
        "private": true,
        "rules": rules,
        "capabilities": rich["capabilities"],
        "tags": rich["tags"],
        "mtu": rich["mtu"],
        "multicastLimit": rich["multicastLimit"],
        "enableBroadcast": rich["enableBroadcast"],
        "v4AssignMode": {"zt": true},
        "v6AssignMode": {"zt": false, "rfc4193": false, "6plane": false},
        "ipAssignmentPools": [{
            "ipRangeStart": format!("10.213.{ZT_SUBNET_OCTET}.10"),
            "ipRangeEnd": format!("10.213.{ZT_SUBNET_OCTET}.250"),
        }],
        "routes": [{"target": format!("10.213.{ZT_SUBNET_OCTET}.0/24"), "via": null}],
    })
}

/// The member POST body: authorized, with the tags and capabilities of `record` (a capture
/// member record).
fn credentials_of(record: &Value) -> Value {
    json!({
        "authorized": true,
        "tags": record["tags"],
        "capabilities": record["capabilities"],
    })
}

// ---------------------------------------------------------------------------------------------
// Members as the test sees them

/// A member after it got its config: where its traffic comes from and goes to.
struct Member<'a> {
    name: &'static str,
    netns: &'a Netns,
    ip: Ipv4Addr,
    device: String,
    mac: [u8; 6],
}

impl fmt::Display for Member<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.ip)
    }
}

fn network_of(agent: &Agent<'_>, nwid: &str) -> Option<Value> {
    agent.api("GET", &format!("/network/{nwid}"), None).ok()
}

/// The network's IPv4 address in `10.213.98.0/24`, if assigned.
fn managed_ipv4(network: &Value) -> Option<Ipv4Addr> {
    network["assignedAddresses"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| ip.octets()[..3] == [10, 213, ZT_SUBNET_OCTET])
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    if digits.len() != 12 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (index, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(mac)
}

/// Waits until `agent` has the network's config and its address is on the tap.
fn configured<'a>(
    agent: &Agent<'a>,
    netns: &'a Netns,
    name: &'static str,
    nwid: &str,
) -> Member<'a> {
    let network = wait_until(Duration::from_secs(40), Duration::from_millis(500), || {
        network_of(agent, nwid).filter(|n| n["status"] == "OK" && managed_ipv4(n).is_some())
    })
    .unwrap_or_else(|| panic!("{name} never got its config: {:?}", network_of(agent, nwid)));
    let ip = managed_ipv4(&network).expect("checked above");
    let device = network["portDeviceName"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no portDeviceName in {network}"))
        .to_owned();
    let mac = network["mac"]
        .as_str()
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("{name}: no MAC in {network}"));
    let on_tap = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let shown = netns.run("ip", ["-j", "addr", "show", "dev", &device]);
        String::from_utf8_lossy(&shown.stdout)
            .contains(&format!("\"{ip}\""))
            .then_some(())
    });
    assert!(
        on_tap.is_some(),
        "{name}'s tap {device} does not carry {ip}"
    );
    println!("{name} on {device}: {ip}, MAC {}", network["mac"]);
    Member {
        name,
        netns,
        ip,
        device,
        mac,
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Dropped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped => "dropped",
        })
    }
}

/// A listener on `ip port` that accepts one connection and reads it to the end. Prints
/// "listening", then "no connection" (nothing came within `wait` seconds) or
/// "accepted <peer ip> <bytes read>".
const TCP_SERVER: &str = r#"
import socket, sys
ip, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(4)
s.settimeout(wait)
print('listening', flush=True)
try:
    c, peer = s.accept()
except socket.timeout:
    print('no connection', flush=True)
    sys.exit(0)
c.settimeout(wait)
n = 0
try:
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
except socket.timeout:
    pass
print('accepted', peer[0], n, flush=True)
c.close()
"#;

/// Connects to `ip port` within `wait` seconds, sends `size` bytes, half-closes and waits for
/// the server to close. Prints "connected", "timeout" or "error <errno> <message>".
const TCP_CLIENT: &str = r#"
import socket, sys
ip, port, wait, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
try:
    c = socket.create_connection((ip, port), timeout=wait)
except socket.timeout:
    print('timeout', flush=True)
    sys.exit(0)
except OSError as e:
    print('error', e.errno, e, flush=True)
    sys.exit(0)
c.settimeout(wait)
try:
    c.sendall(b'r' * size)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
except OSError as e:
    print('error', e.errno, e, flush=True)
    sys.exit(0)
print('connected', flush=True)
"#;

/// Receives datagrams on `ip port` until `count` arrived or none came for `wait` seconds.
/// Prints "listening", then "received <n>".
const UDP_SERVER: &str = r#"
import socket, sys
ip, port, wait, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
s.settimeout(wait)
print('listening', flush=True)
n = 0
try:
    while n < count:
        s.recvfrom(65536)
        n += 1
except socket.timeout:
    pass
print('received', n, flush=True)
"#;

/// Sends `count` datagrams to `ip port`, 100 ms apart.
const UDP_CLIENT: &str = r#"
import socket, sys, time
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b'u' * 100, (ip, port))
    time.sleep(0.1)
"#;

/// A python3 listener in `netns`, started and ready (it printed "listening").
struct Listener {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Listener {
    fn start(netns: &Netns, script: &str, args: &[String]) -> Listener {
        let mut child = netns
            .command("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start python3 in {}: {error}", netns.name()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        if line.trim() != "listening" {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let _ = child.wait();
            panic!(
                "the listener in {} did not start ({line:?}): {stderr}",
                netns.name()
            );
        }
        Listener { child, stdout }
    }

    /// Waits for the listener to end and returns its last line.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let _ = self.child.wait();
        let last = rest.lines().last().unwrap_or_default().trim().to_owned();
        if stderr.trim().is_empty() {
            last
        } else {
            format!("{last} (stderr: {})", stderr.trim())
        }
    }
}

/// A TCP connection from `from` to `to`:`port` carrying `size` bytes: Delivered when it
/// connects and the listener reads every byte from `from`'s address, Dropped when the connect
/// times out and the listener saw nothing, Err with both sides' words otherwise.
fn tcp_exchange(
    from: &Member<'_>,
    to: &Member<'_>,
    port: u16,
    size: usize,
    wait: Duration,
) -> Result<Outcome, String> {
    let seconds = wait.as_secs_f64();
    let listener = Listener::start(
        to.netns,
        TCP_SERVER,
        &[
            to.ip.to_string(),
            port.to_string(),
            format!("{}", seconds + 2.0),
        ],
    );
    let client = from.netns.run(
        "python3",
        [
            "-c",
            TCP_CLIENT,
            &to.ip.to_string(),
            &port.to_string(),
            &format!("{seconds}"),
            &size.to_string(),
        ],
    );
    let client_said = String::from_utf8_lossy(&client.stdout).trim().to_owned();
    let server_said = listener.finish();
    let accepted = format!("accepted {} {size}", from.ip);
    match (client_said.as_str(), server_said.as_str()) {
        ("connected", said) if said == accepted => Ok(Outcome::Delivered),
        ("timeout", "no connection") => Ok(Outcome::Dropped),
        _ => Err(format!(
            "client said {client_said:?} (stderr {:?}), listener said {server_said:?}",
            String::from_utf8_lossy(&client.stderr).trim()
        )),
    }
}

/// `count` UDP datagrams from `from` to `to`:`port`: Delivered when all arrive, Dropped when
/// none does.
fn udp_exchange(from: &Member<'_>, to: &Member<'_>, port: u16) -> Result<Outcome, String> {
    let count = 5;
    let listener = Listener::start(
        to.netns,
        UDP_SERVER,
        &[
            to.ip.to_string(),
            port.to_string(),
            format!("{}", DROP_WAIT.as_secs_f64()),
            count.to_string(),
        ],
    );
    let sent = from.netns.run(
        "python3",
        [
            "-c",
            UDP_CLIENT,
            &to.ip.to_string(),
            &port.to_string(),
            &count.to_string(),
        ],
    );
    if !sent.status.success() {
        return Err(format!(
            "UDP sender failed: {}",
            String::from_utf8_lossy(&sent.stderr).trim()
        ));
    }
    let server_said = listener.finish();
    if server_said == format!("received {count}") {
        Ok(Outcome::Delivered)
    } else if server_said == "received 0" {
        Ok(Outcome::Dropped)
    } else {
        Err(format!("listener said {server_said:?}"))
    }
}

/// `count` pings from `from` to `to`: Delivered when every one is answered, Dropped when none
/// is.
fn ping_exchange(from: &Member<'_>, to: &Member<'_>, count: u32) -> Result<Outcome, String> {
    let output = from.netns.run(
        "ping",
        [
            "-n",
            "-c",
            &count.to_string(),
            "-W",
            "2",
            "-i",
            "0.3",
            &to.ip.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let received = text
        .lines()
        .find(|line| line.contains("packets transmitted"))
        .and_then(|line| {
            line.split(',')
                .find(|part| part.contains("received"))?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        })
        .ok_or_else(|| format!("ping printed no summary: {text}"))?;
    match received {
        0 => Ok(Outcome::Dropped),
        n if n == count => Ok(Outcome::Delivered),
        n => Err(format!("{n} of {count} pings answered")),
    }
}

/// Pings until one is answered (ARP and the first credentials take a moment), then checks
/// that three more all are.
fn ping_until_delivered(from: &Member<'_>, to: &Member<'_>) -> Result<Outcome, String> {
    let answered = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        (ping_exchange(from, to, 1) == Ok(Outcome::Delivered)).then_some(())
    });
    if answered.is_none() {
        return Ok(Outcome::Dropped);
    }
    ping_exchange(from, to, 3)
}

// ---------------------------------------------------------------------------------------------
// Capturing a tap

/// One frame from a pcap: its length on the wire and the bytes captured.
struct CapturedFrame {
    wire_length: usize,
    data: Vec<u8>,
}

/// The IPv4 view of a captured Ethernet frame.
#[derive(Debug)]
struct Ipv4Frame {
    mac_dest: [u8; 6],
    mac_source: [u8; 6],
    source: Ipv4Addr,
    dest: Ipv4Addr,
    protocol: u8,
    /// The IP header's total length field.
    total_length: usize,
    /// How many bytes of IP packet the frame carried.
    carried: usize,
}

impl CapturedFrame {
    fn ipv4(&self) -> Option<Ipv4Frame> {
        let d = &self.data;
        if d.len() < 34 || u16::from_be_bytes([d[12], d[13]]) != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = &d[14..];
        if ip[0] >> 4 != 4 {
            return None;
        }
        let mut mac_dest = [0u8; 6];
        let mut mac_source = [0u8; 6];
        mac_dest.copy_from_slice(&d[0..6]);
        mac_source.copy_from_slice(&d[6..12]);
        Some(Ipv4Frame {
            mac_dest,
            mac_source,
            source: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dest: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            protocol: ip[9],
            total_length: usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            carried: self.wire_length.saturating_sub(14),
        })
    }
}

/// The frames of a pcap file (link type Ethernet), either byte order; a cut-off last record
/// is ignored.
fn parse_pcap(bytes: &[u8]) -> Vec<CapturedFrame> {
    let Some(magic) = bytes.get(0..4) else {
        return Vec::new();
    };
    let little_endian = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap: {magic:02x?}"),
    };
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        let value = if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        };
        usize::try_from(value).ok()
    };
    assert_eq!(word(20), Some(1), "the capture's link type is Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while let (Some(captured), Some(wire_length)) = (word(at + 8), word(at + 12)) {
        let Some(data) = bytes.get(at + 16..at + 16 + captured) else {
            break;
        };
        frames.push(CapturedFrame {
            wire_length,
            data: data.to_vec(),
        });
        at += 16 + captured;
    }
    frames
}

/// `tcpdump` on a tap, writing pcap to a pipe that a thread drains.
struct TapCapture {
    child: Child,
    reader: JoinHandle<Vec<u8>>,
    /// Read after the "listening" line; tcpdump's counters come at the end.
    stderr: BufReader<ChildStderr>,
    what: String,
}

impl TapCapture {
    fn start(member: &Member<'_>) -> TapCapture {
        let mut child = member
            .netns
            .command("tcpdump")
            // Immediate mode: otherwise libpcap hands frames over a ring block at a time
            // (when full or after about a second), and frames in a block still open when
            // tcpdump stops are lost.
            .args([
                "-i",
                &member.device,
                "-n",
                "--immediate-mode",
                "-U",
                "-s",
                "128",
                "-w",
                "-",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start tcpdump: {error}"));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut line = String::new();
        let _ = stderr.read_line(&mut line);
        assert!(
            line.contains("listening on"),
            "tcpdump on {}'s {} did not start: {line:?}",
            member.name,
            member.device
        );
        TapCapture {
            child,
            reader,
            stderr,
            what: format!("{}'s {}", member.name, member.device),
        }
    }

    /// Stops tcpdump (SIGTERM, so it writes what it holds) and returns the frames.
    fn finish(mut self) -> Vec<CapturedFrame> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let bytes = self.reader.join().expect("the pcap reader thread");
        let mut counters = String::new();
        let _ = self.stderr.read_to_string(&mut counters);
        let frames = parse_pcap(&bytes);
        println!(
            "tcpdump on {}: {} frames in the pcap; {}",
            self.what,
            frames.len(),
            counters.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        frames
    }
}

/// The IPv4 TCP frames from `from` to `to` in `frames`.
fn tcp_frames_between(
    frames: &[CapturedFrame],
    from: &Member<'_>,
    to: &Member<'_>,
) -> Vec<Ipv4Frame> {
    frames
        .iter()
        .filter_map(CapturedFrame::ipv4)
        .filter(|f| f.protocol == IP_PROTO_TCP && f.source == from.ip && f.dest == to.ip)
        .collect()
}

/// Checks that the frames from `from` to `to` on the TEE target's tap are TEE copies: some
/// are there, addressed MAC to MAC as the original, none carries more than the copy length,
/// and (`expect_cut`) some are data segments cut short of their IP length.
fn check_tee_copies(
    frames: &[CapturedFrame],
    from: &Member<'_>,
    to: &Member<'_>,
    target: &Member<'_>,
    expect_cut: bool,
) -> Result<usize, String> {
    let copies = tcp_frames_between(frames, from, to);
    if copies.is_empty() {
        return Err(format!(
            "no copy of {from} → {to} TCP reached {}'s tap ({} frames captured)",
            target.name,
            frames.len()
        ));
    }
    for copy in &copies {
        if copy.mac_source != from.mac || copy.mac_dest != to.mac {
            return Err(format!("a copy with the wrong MACs: {copy:?}"));
        }
        if copy.carried > TEE_LENGTH || copy.carried != copy.total_length.min(TEE_LENGTH) {
            return Err(format!(
                "a copy of {from} → {to} carries {} bytes of a {}-byte IP packet; the TEE \
                 copies the first {TEE_LENGTH}: {copy:?}",
                copy.carried, copy.total_length
            ));
        }
    }
    if expect_cut && !copies.iter().any(|c| c.total_length > TEE_LENGTH) {
        return Err(format!(
            "no copy of a {from} → {to} data segment (all {} were short packets)",
            copies.len()
        ));
    }
    Ok(copies.len())
}

// ---------------------------------------------------------------------------------------------
// The test

/// One observed row: what was sent, what the table (or the rules) expect, what happened.
struct Row {
    traffic: String,
    expected: Outcome,
    observed: Result<Outcome, String>,
    why: &'static str,
}

#[test]
fn rich_network_rules_decide_as_zerotier_one_did() {
    if !require_privileged() {
        return;
    }
    // The managed subnet must not be the LAN's own (a LAN picks 10.213.<n>.0/24 by pid).
    let lan = loop {
        let lan = Lan::new("rules", 4);
        if lan.subnet() != ZT_SUBNET_OCTET {
            break lan;
        }
    };
    let work = TempDir::new("rules");
    let homes: Vec<_> = NAMES.iter().map(|name| work.path().join(name)).collect();
    let mut addresses = Vec::new();
    for home in &homes {
        fs::create_dir_all(home).expect("create a home folder");
        addresses.push(generate_identity(home));
    }
    let planet = make_planet(
        work.path(),
        &homes[ROOT].join("identity.public"),
        &[format!("{}/{AGENT_PORT}", lan.ip(ROOT))],
    );
    for home in &homes {
        fs::copy(&planet, home.join("planet")).expect("copy the planet into a home");
    }
    let mut agents: Vec<Agent<'_>> = (0..NAMES.len())
        .map(|index| Agent::start(lan.host(index), &homes[index], AGENT_PORT))
        .collect();
    for (index, agent) in agents.iter_mut().enumerate() {
        let online = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
            if let Err(exited) = agent.check_running() {
                return Some(Err(exited));
            }
            agent.is_online().then_some(Ok(()))
        });
        match online {
            Some(Ok(())) => {}
            Some(Err(exited)) => panic!("{}: {exited}", NAMES[index]),
            None => panic!("{} never came ONLINE", NAMES[index]),
        }
    }
    let root = &agents[ROOT];

    // The rich network, its TEE aimed at our b.
    let created = root
        .api(
            "POST",
            "/controller/network",
            Some(&rich_network_body(&addresses[MEMBER_B])),
        )
        .expect("create the rich network");
    let nwid = created["id"].as_str().expect("network id").to_owned();
    let stored = root
        .api("GET", &format!("/controller/network/{nwid}"), None)
        .expect("GET the network");
    assert_eq!(
        stored["rules"].as_array().map(Vec::len),
        Some(23),
        "{stored}"
    );
    assert_eq!(stored["capabilities"][0]["id"], 1, "{stored}");
    assert_eq!(stored["tags"][0]["id"], TAG_ID, "{stored}");
    println!("network {nwid} created with the rich rules");

    // Members: a and b as in the capture, c with a tag 2 away from theirs.
    let member_records = [
        (
            MEMBER_A,
            credentials_of(&parse_json(MEMBER_RICH_A, "member a")),
        ),
        (
            MEMBER_B,
            credentials_of(&parse_json(MEMBER_RICH_B, "member b")),
        ),
        (
            MEMBER_C,
            json!({"authorized": true, "tags": [[TAG_ID, TAG_VALUE_C]], "capabilities": []}),
        ),
    ];
    for (index, body) in &member_records {
        let path = format!("/controller/network/{nwid}/member/{}", addresses[*index]);
        root.api("POST", &path, Some(body)).expect("authorize");
        let record = root.api("GET", &path, None).expect("GET the member");
        assert_eq!(record["authorized"], true, "{record}");
        assert_eq!(record["tags"], body["tags"], "{record}");
        assert_eq!(record["capabilities"], body["capabilities"], "{record}");
        println!(
            "{}: tags {}, capabilities {}",
            NAMES[*index], record["tags"], record["capabilities"]
        );
    }
    for index in [MEMBER_A, MEMBER_B, MEMBER_C] {
        agents[index].cli(&["join", &nwid]).expect("join");
    }
    let a = configured(&agents[MEMBER_A], lan.host(MEMBER_A), "a", &nwid);
    let b = configured(&agents[MEMBER_B], lan.host(MEMBER_B), "b", &nwid);
    let c = configured(&agents[MEMBER_C], lan.host(MEMBER_C), "c", &nwid);

    let mut rows: Vec<Row> = Vec::new();
    let mut record = |traffic: String,
                      expected: Outcome,
                      observed: Result<Outcome, String>,
                      why: &'static str| {
        let shown = match &observed {
            Ok(outcome) => outcome.to_string(),
            Err(odd) => format!("neither ({odd})"),
        };
        let verdict = if observed.as_ref() == Ok(&expected) {
            "ok"
        } else {
            "MISMATCH"
        };
        println!("{verdict}: {traffic}: expected {expected}, observed {shown} ({why})");
        rows.push(Row {
            traffic,
            expected,
            observed,
            why,
        });
    };
    use Outcome::{Delivered, Dropped};

    // Table: a pings b, and b's answers come back; b pings a too.
    record(
        format!("{a} pings {b}"),
        Delivered,
        ping_until_delivered(&a, &b),
        "tags equal (difference 0) and ICMP",
    );
    record(
        format!("{b} pings {a}"),
        Delivered,
        ping_until_delivered(&b, &a),
        "tags equal (difference 0) and ICMP",
    );

    // Table: a → b TCP 5201, with b's tap watched: b is the destination, so the TEE to b is
    // a no-op and no cut-short copy of a's segments may arrive next to the segments.
    let capture = TapCapture::start(&b);
    let outcome = tcp_exchange(&a, &b, 5201, 256 << 10, DELIVER_WAIT);
    // Let the last frames (and their copies) reach the tap before stopping.
    thread::sleep(Duration::from_secs(1));
    let frames = capture.finish();
    record(
        format!("{a} → {b} TCP 5201"),
        Delivered,
        outcome,
        "global rule: SYN to 22 or 5201",
    );
    let segments = tcp_frames_between(&frames, &a, &b);
    let cut: Vec<&Ipv4Frame> = segments
        .iter()
        .filter(|f| f.carried < f.total_length)
        .collect();
    record(
        format!(
            "TEE of {a} → {b} TCP to b itself ({} segments on b's tap)",
            segments.len()
        ),
        Dropped,
        if segments.is_empty() {
            Err("b's tap shows no segment from a at all".to_owned())
        } else if cut.is_empty() {
            Ok(Dropped)
        } else {
            Ok(Delivered)
        },
        "the TEE target is the destination: no copy",
    );
    if !cut.is_empty() {
        println!("cut-short frames from a on b's tap: {cut:?}");
    }

    // Table: a → b TCP 5202 and 8080, b → a TCP 8081.
    record(
        format!("{a} → {b} TCP 5202"),
        Dropped,
        tcp_exchange(&a, &b, 5202, 1000, DROP_WAIT),
        "no global rule accepts a first SYN to 5202; a holds no capability for it",
    );
    record(
        format!("{a} → {b} TCP 8080"),
        Delivered,
        tcp_exchange(&a, &b, 8080, 64 << 10, DELIVER_WAIT),
        "a's capability 1 (ports 8000-8100)",
    );
    record(
        format!("{b} → {a} TCP 8081"),
        Dropped,
        tcp_exchange(&b, &a, 8081, 1000, DROP_WAIT),
        "b holds no capability",
    );

    // Beyond the table: each reason on its own.
    record(
        format!("{a} → {b} TCP 8081"),
        Delivered,
        tcp_exchange(&a, &b, 8081, 1000, DELIVER_WAIT),
        "a's capability covers 8081: b → a 8081 is dropped for b's lack of it",
    );
    record(
        format!("{a} → {b} TCP 8101"),
        Dropped,
        tcp_exchange(&a, &b, 8101, 1000, DROP_WAIT),
        "a's capability ends at 8100",
    );
    record(
        format!("{b} → {a} TCP 5201"),
        Delivered,
        tcp_exchange(&b, &a, 5201, 1000, DELIVER_WAIT),
        "b's SYNs pass where a global rule accepts them",
    );
    record(
        format!("{a} → {b} UDP 5202"),
        Delivered,
        udp_exchange(&a, &b, 5202),
        "last rule: UDP",
    );
    record(
        format!("{b} → {a} UDP 8081"),
        Delivered,
        udp_exchange(&b, &a, 8081),
        "last rule: UDP, no capability needed",
    );

    // The TEE firing: c → a TCP, watched on b's tap.
    let capture = TapCapture::start(&b);
    let outcome = tcp_exchange(&c, &a, 5201, 256 << 10, DELIVER_WAIT);
    // Let the last frames (and their copies) reach the tap before stopping.
    thread::sleep(Duration::from_secs(1));
    let frames = capture.finish();
    record(
        format!("{c} → {a} TCP 5201"),
        Delivered,
        outcome,
        "global rule: SYN to 22 or 5201 (no tag involved)",
    );
    for (from, to) in [(&c, &a), (&a, &c)] {
        let copies = check_tee_copies(&frames, from, to, &b, from.name == "c");
        if let Ok(count) = &copies {
            println!("{count} TEE copies of {from} → {to} TCP on b's tap");
        }
        record(
            format!("TEE of {from} → {to} TCP to b"),
            Delivered,
            copies.map(|_| Delivered),
            "outbound TCP is copied (64 bytes) to b; b super-accepts the copies",
        );
    }

    // Tags that differ: ICMP between a (7) and c (9) has no rule, ARP still does.
    record(
        format!("{a} pings {c}"),
        Dropped,
        ping_exchange(&a, &c, 3),
        "tags 1000 differ by 2 > 0",
    );
    record(
        format!("{c} pings {a}"),
        Dropped,
        ping_exchange(&c, &a, 3),
        "tags 1000 differ by 2 > 0",
    );

    for (index, agent) in agents.iter_mut().enumerate() {
        if let Err(exited) = agent.check_running() {
            panic!("{}: {exited}", NAMES[index]);
        }
    }
    let mismatches: Vec<String> = rows
        .iter()
        .filter(|row| row.observed.as_ref() != Ok(&row.expected))
        .map(|row| {
            format!(
                "{}: expected {} ({}), observed {:?}",
                row.traffic, row.expected, row.why, row.observed
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "outcomes that differ from ZeroTier One 1.14.1's:\n{}",
        mismatches.join("\n")
    );
    println!("all {} rows as expected", rows.len());
}
